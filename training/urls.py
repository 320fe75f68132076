from django.urls import path

from . import views

app_name = "training"

urlpatterns = [
    path("p/<slug:slug>/datasets/", views.snapshot_list, name="dataset-list"),
    path("p/<slug:slug>/datasets/new/", views.snapshot_create, name="dataset-create"),
    path("p/<slug:slug>/datasets/count/", views.snapshot_count, name="dataset-count"),
    path("p/<slug:slug>/datasets/<int:pk>/", views.snapshot_detail, name="dataset-detail"),
    path("p/<slug:slug>/datasets/<int:pk>/audit/", views.snapshot_audit, name="dataset-audit"),
    path("p/<slug:slug>/datasets/<int:pk>/download/", views.snapshot_file, name="dataset-download"),
    path("p/<slug:slug>/datasets/<int:pk>/bundle/", views.snapshot_bundle, name="dataset-bundle"),
    path("p/<slug:slug>/datasets/<int:pk>/delete/", views.snapshot_delete, name="dataset-delete"),
    path("p/<slug:slug>/datasets/<int:pk>/retry/", views.snapshot_retry, name="dataset-retry"),
]
