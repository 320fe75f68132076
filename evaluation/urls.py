from django.urls import path

from . import views

app_name = "evaluation"

urlpatterns = [
    path("p/<slug:slug>/eval/", views.eval_home, name="home"),
    path("p/<slug:slug>/eval/settings/", views.settings_view, name="settings"),
    path("p/<slug:slug>/eval/suites/new/", views.suite_create, name="suite-create"),
    path("p/<slug:slug>/eval/suites/<int:pk>/", views.suite_detail, name="suite-detail"),
    path("p/<slug:slug>/eval/runs/new/", views.run_create, name="run-create"),
    path("p/<slug:slug>/eval/runs/<int:pk>/", views.run_detail, name="run-detail"),
    path("p/<slug:slug>/eval/runs/<int:pk>/cases/", views.run_results, name="run-results"),
    path("p/<slug:slug>/eval/runs/<int:pk>/cases/<int:case_pk>/", views.result_detail, name="result-detail"),
    path("p/<slug:slug>/eval/runs/<int:pk>/cancel/", views.run_cancel, name="run-cancel"),
    path("p/<slug:slug>/eval/runs/<int:pk>/retry/", views.run_retry, name="run-retry"),
    path("p/<slug:slug>/eval/runs/<int:pk>/send-to-queue/", views.run_loop, name="run-loop"),
    path("p/<slug:slug>/eval/runs/<int:pk>/results.jsonl", views.run_export, name="run-export"),
    path("p/<slug:slug>/eval/compare/", views.compare, name="compare"),
    path("p/<slug:slug>/eval/models/<int:pk>/", views.model_gate, name="model-gate"),
]
