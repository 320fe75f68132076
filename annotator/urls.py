from django.urls import path

from . import reviewing, taxonomy_views, views, workspace
from .dashboards import views as dashboard_views

app_name = "annotator"

urlpatterns = [
    path("", views.project_list, name="project-list"),
    path("p/<slug:slug>/", views.project_home, name="project-home"),
    path("p/<slug:slug>/imports/new/", views.import_create, name="import-create"),
    path("p/<slug:slug>/imports/<int:pk>/", views.import_detail, name="import-detail"),
    path("p/<slug:slug>/imports/<int:pk>/report.csv", views.import_report, name="import-report"),
    path("p/<slug:slug>/imports/<int:pk>/cancel/", views.import_cancel, name="import-cancel"),
    path("p/<slug:slug>/conversations/", views.conversation_list, name="conversation-list"),
    path("p/<slug:slug>/conversations/<int:pk>/", views.conversation_detail, name="conversation-detail"),
    path("p/<slug:slug>/taxonomy/", taxonomy_views.taxonomy_page, name="taxonomy"),
    path("p/<slug:slug>/taxonomy/new/", taxonomy_views.category_create, name="taxonomy-create"),
    path("p/<slug:slug>/taxonomy/<int:pk>/edit/", taxonomy_views.category_edit, name="taxonomy-edit"),
    path("p/<slug:slug>/taxonomy/<int:pk>/route/", taxonomy_views.category_route, name="taxonomy-route"),
    path("p/<slug:slug>/taxonomy/<int:pk>/active/", taxonomy_views.category_active, name="taxonomy-active"),
    path("p/<slug:slug>/next/", workspace.next_item, name="next"),
    path("p/<slug:slug>/history/", workspace.history, name="history"),
    path("p/<slug:slug>/tasks/<int:task_id>/", workspace.task_page, name="task"),
    path("p/<slug:slug>/tasks/<int:task_id>/submit/", workspace.task_submit, name="task-submit"),
    path("p/<slug:slug>/tasks/<int:task_id>/draft/", workspace.task_draft, name="task-draft"),
    path("p/<slug:slug>/tasks/<int:task_id>/skip/", workspace.task_skip, name="task-skip"),
    path("p/<slug:slug>/tasks/<int:task_id>/heartbeat/", workspace.task_heartbeat, name="task-heartbeat"),
    path(
        "p/<slug:slug>/tasks/<int:task_id>/check-correction/",
        workspace.check_correction,
        name="check-correction",
    ),
    path("p/<slug:slug>/review/", reviewing.review_queue, name="review"),
    path("p/<slug:slug>/review/bulk-approve/", reviewing.review_bulk, name="review-bulk"),
    path("p/<slug:slug>/review/<str:what>/<int:pk>/", reviewing.review_action, name="review-action"),
    path("p/<slug:slug>/disagreements/", reviewing.disagreements, name="disagreements"),
    path("p/<slug:slug>/disagreements/<int:task_id>/", reviewing.adjudicate, name="adjudicate"),
    path("p/<slug:slug>/assign/", reviewing.assign, name="assign"),
    path("p/<slug:slug>/dashboards/", dashboard_views.overview, name="dash-overview"),
    path("p/<slug:slug>/dashboards/annotators/", dashboard_views.annotators, name="dash-annotators"),
    path("p/<slug:slug>/dashboards/agreement/", dashboard_views.agreement, name="dash-agreement"),
    path("p/<slug:slug>/dashboards/models/", dashboard_views.models, name="dash-models"),
    path("p/<slug:slug>/dashboards/cases/", dashboard_views.cases, name="dash-cases"),
    path("p/<slug:slug>/dashboards/comparisons/", dashboard_views.comparisons, name="dash-comparisons"),
]
