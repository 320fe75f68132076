from django.urls import path

from . import views

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
]
