"""REST API of online DPO runs: admins launch, cancel and resume them; leads read them."""

from django.core.exceptions import ValidationError
from rest_framework import exceptions, mixins, serializers, viewsets

from annotator.api_base import JobActionsMixin
from annotator.models import ModelVersion, Project, Role
from annotator.policy import can_run_pipeline, projects_with_role
from annotator.serializers import SameProjectMixin, ScopedRelatedField
from evaluation.models import EvalSuite
from training.finetune.params import PRESETS
from training.models import OnlineRound, OnlineRun

from . import online


class OnlineRoundSerializer(serializers.ModelSerializer):
    result_version = serializers.SerializerMethodField()

    class Meta:
        model = OnlineRound
        fields = [
            "number",
            "policy",
            "status",
            "phase",
            "prompts",
            "samples",
            "pairs",
            "stats",
            "snapshot",
            "job",
            "result_version",
            "eval_run",
            "baseline_run",
            "gate",
            "started_at",
            "finished_at",
        ]

    def get_result_version(self, obj) -> int | None:
        return obj.job.result_version_id if obj.job_id else None


class OnlineRunSerializer(SameProjectMixin, serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", queryset=Project.objects.all())
    start_version = ScopedRelatedField("project", queryset=ModelVersion.objects.all())
    judge = ScopedRelatedField(
        "project", queryset=ModelVersion.objects.all(), required=False, allow_null=True
    )
    eval_suite = ScopedRelatedField("project", queryset=EvalSuite.objects.all())
    preset = serializers.ChoiceField(choices=list(PRESETS), write_only=True, default="lora-r8")
    overrides = serializers.DictField(
        write_only=True,
        required=False,
        default=dict,
        help_text="DPO hyper-parameters that differ from the preset.",
    )
    progress = serializers.FloatField(read_only=True)
    rounds_done = OnlineRoundSerializer(source="round_set", many=True, read_only=True)

    class Meta:
        model = OnlineRun
        fields = [
            "id",
            "project",
            "name",
            "start_version",
            "ranker",
            "judge",
            "eval_suite",
            "rounds",
            "options",
            "preset",
            "overrides",
            "params",
            "status",
            "phase",
            "message",
            "progress",
            "log_tail",
            "result_version",
            "attempts",
            "worker",
            "rounds_done",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = [
            "params",
            "status",
            "phase",
            "message",
            "log_tail",
            "result_version",
            "attempts",
            "worker",
            "created_at",
            "started_at",
            "finished_at",
        ]
        extra_kwargs = {"name": {"required": False}, "options": {"required": False}}

    def create(self, data):
        request = self.context["request"]
        project = data["project"]
        if not can_run_pipeline(request.user, project):
            raise exceptions.PermissionDenied("Launching online DPO needs the admin role in this project.")
        try:
            return online.create_run(
                project,
                request.user,
                start_version=data["start_version"],
                ranker=data.get("ranker", "checker"),
                judge=data.get("judge"),
                eval_suite=data.get("eval_suite"),
                rounds=data.get("rounds", 2),
                options=data.get("options") or {},
                preset=data.get("preset", "lora-r8"),
                overrides=data.get("overrides"),
                name=data.get("name", ""),
            )
        except ValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from exc


class OnlineRunViewSet(
    JobActionsMixin,
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = OnlineRunSerializer
    cancel_job = staticmethod(online.request_cancel)
    filterset_fields = {"project__slug": ["exact"], "status": ["exact"]}

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return OnlineRun.objects.none()
        return (
            OnlineRun.objects.filter(
                project__in=projects_with_role(self.request.user, Role.LEAD).values("pk")
            )
            .select_related("project")
            .prefetch_related("round_set__job")
        )
