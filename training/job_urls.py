from django.urls import path

from . import job_views, judge_views

app_name = "training-jobs"

urlpatterns = [
    path("p/<slug:slug>/training/", job_views.job_list, name="list"),
    path("p/<slug:slug>/training/new/", job_views.job_create, name="create"),
    path("p/<slug:slug>/training/<int:pk>/", job_views.job_detail, name="detail"),
    path("p/<slug:slug>/training/<int:pk>/cancel/", job_views.job_cancel, name="cancel"),
    path("p/<slug:slug>/training/<int:pk>/resume/", job_views.job_resume, name="resume"),
    path("p/<slug:slug>/training/judges/", judge_views.judges, name="judges"),
    path("p/<slug:slug>/training/judges/<int:pk>/suggest/", judge_views.judge_suggest, name="judge-suggest"),
    path(
        "p/<slug:slug>/training/judges/<int:pk>/evaluate/", judge_views.judge_evaluate, name="judge-evaluate"
    ),
    path("p/<slug:slug>/training/judges/external/", judge_views.judge_external, name="judge-external"),
]
