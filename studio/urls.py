from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from annotator import api as annotator_api
from annotator import ingest_api
from config import login_throttle
from config.health import healthz
from evaluation import api as evaluation_api
from loop import api as loop_api
from training import api as training_api
from training import job_api as training_job_api
from training import judge_api

router = DefaultRouter()
router.register("projects", annotator_api.ProjectViewSet, basename="project")
router.register("memberships", annotator_api.MembershipViewSet, basename="membership")
router.register("model-versions", annotator_api.ModelVersionViewSet, basename="modelversion")
router.register("conversations", annotator_api.ConversationViewSet, basename="conversation")
router.register("responses", annotator_api.ModelResponseViewSet, basename="response")
router.register("categories", annotator_api.TaxonomyCategoryViewSet, basename="category")
router.register("labels", annotator_api.LabelViewSet, basename="label")
router.register("corrections", annotator_api.CorrectionViewSet, basename="correction")
router.register("preferences", annotator_api.PreferenceViewSet, basename="preference")
router.register("reviews", annotator_api.ReviewViewSet, basename="review")
router.register("imports", annotator_api.ImportJobViewSet, basename="import")
router.register("eval-suites", evaluation_api.EvalSuiteViewSet, basename="evalsuite")
router.register("eval-runs", evaluation_api.EvalRunViewSet, basename="evalrun")
router.register("promotions", evaluation_api.PromotionViewSet, basename="promotion")
router.register("eval-settings", evaluation_api.EvalSettingsViewSet, basename="evalsettings")
router.register("datasets", training_api.DatasetSnapshotViewSet, basename="datasetsnapshot")
router.register("training-jobs", training_job_api.TrainingJobViewSet, basename="trainingjob")
router.register("judges", judge_api.JudgeViewSet, basename="judge")
router.register("judge-suggestions", judge_api.JudgeSuggestionViewSet, basename="judgesuggestion")
router.register("judge-verdicts", judge_api.JudgeVerdictSuggestionViewSet, basename="judgeverdict")
router.register("online-runs", loop_api.OnlineRunViewSet, basename="onlinerun")

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/login/", login_throttle.admin_login_view),
    path("admin/", admin.site.urls),
    path("accounts/login/", login_throttle.login_view, name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/auth/token/", login_throttle.obtain_auth_token, name="api-token"),
    path("api/", include(router.urls)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("", include("annotator.urls")),
    path("", include("evaluation.urls")),
    path("", include("training.urls")),
    path("", include("training.job_urls")),
    path("", include("loop.urls")),
    path("api/projects/<slug:slug>/dashboards/", include("annotator.dashboards.api")),
    path("api/projects/<slug:slug>/queue/", include("annotator.queue_api")),
    path("api/projects/<slug:slug>/ingest/", ingest_api.IngestView.as_view(), name="api-ingest"),
]

# Error answers: JSON under /api/, styled pages elsewhere (config/errors.py, annotator/views.py).
handler403 = "annotator.views.permission_denied"
handler404 = "annotator.views.page_not_found"
handler500 = "config.errors.server_error"
