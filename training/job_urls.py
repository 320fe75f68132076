from django.urls import path

from . import job_views

app_name = "training-jobs"

urlpatterns = [
    path("p/<slug:slug>/training/", job_views.job_list, name="list"),
    path("p/<slug:slug>/training/new/", job_views.job_create, name="create"),
    path("p/<slug:slug>/training/<int:pk>/", job_views.job_detail, name="detail"),
    path("p/<slug:slug>/training/<int:pk>/cancel/", job_views.job_cancel, name="cancel"),
    path("p/<slug:slug>/training/<int:pk>/resume/", job_views.job_resume, name="resume"),
]
