from django.urls import path

from . import views

app_name = "loop"

urlpatterns = [
    path("p/<slug:slug>/training/online/", views.online_list, name="online-list"),
    path("p/<slug:slug>/training/online/new/", views.online_create, name="online-create"),
    path("p/<slug:slug>/training/online/<int:pk>/", views.online_detail, name="online-detail"),
    path("p/<slug:slug>/training/online/<int:pk>/cancel/", views.online_cancel, name="online-cancel"),
    path("p/<slug:slug>/training/online/<int:pk>/resume/", views.online_resume, name="online-resume"),
]
