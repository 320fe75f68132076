"""REST API for training jobs: list, create, cancel, resume, and the metric stream for live charts."""

from django.core.exceptions import ValidationError
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from annotator.api_base import JobActionsMixin
from annotator.models import ModelVersion, Project, Role
from annotator.policy import can_run_pipeline, projects_with_role
from annotator.serializers import SameProjectMixin, ScopedRelatedField
from jobs import lifecycle

from .finetune.params import PRESETS
from .finetune.request import create_job
from .models import Checkpoint, DatasetSnapshot, MetricPoint, TrainingJob


class CheckpointSerializer(serializers.ModelSerializer):
    class Meta:
        model = Checkpoint
        fields = ["step", "path", "healthy", "guard", "created_at"]


class TrainingJobSerializer(SameProjectMixin, serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", queryset=Project.objects.all())
    base_version = ScopedRelatedField("project", queryset=ModelVersion.objects.all())
    train_snapshot = ScopedRelatedField("project", queryset=DatasetSnapshot.objects.all())
    eval_snapshot = ScopedRelatedField(
        "project", queryset=DatasetSnapshot.objects.all(), required=False, allow_null=True
    )
    preset = serializers.ChoiceField(choices=list(PRESETS), write_only=True, default="lora-r8")
    overrides = serializers.DictField(
        write_only=True,
        required=False,
        default=dict,
        help_text="Hyper-parameters that differ from the preset.",
    )
    progress = serializers.FloatField(read_only=True)
    checkpoints = CheckpointSerializer(many=True, read_only=True)

    class Meta:
        model = TrainingJob
        fields = [
            "id",
            "project",
            "name",
            "stage",
            "base_version",
            "train_snapshot",
            "eval_snapshot",
            "preset",
            "overrides",
            "allow_raw_base",
            "merge_weights",
            "evaluate_after",
            "guard",
            "params",
            "status",
            "message",
            "progress",
            "step",
            "max_steps",
            "device",
            "worker",
            "attempts",
            "guard_report",
            "timings",
            "result_version",
            "log_tail",
            "checkpoints",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = [
            "params",
            "status",
            "message",
            "step",
            "max_steps",
            "device",
            "worker",
            "attempts",
            "guard_report",
            "timings",
            "result_version",
            "log_tail",
            "created_at",
            "started_at",
            "finished_at",
        ]

    def create(self, data):
        request = self.context["request"]
        project = data["project"]
        if not can_run_pipeline(request.user, project):
            raise exceptions.PermissionDenied("Launching training needs the admin role in this project.")
        try:
            return create_job(
                project,
                request.user,
                stage=data["stage"],
                base_version=data["base_version"],
                train_snapshot=data["train_snapshot"],
                eval_snapshot=data.get("eval_snapshot"),
                preset=data.get("preset", "lora-r8"),
                overrides=data.get("overrides"),
                allow_raw_base=data.get("allow_raw_base", False),
                merge_weights=data.get("merge_weights", False),
                evaluate_after=data.get("evaluate_after", False),
                guard=data.get("guard"),
                name=data.get("name", ""),
            )
        except ValidationError as exc:
            raise serializers.ValidationError(
                {("non_field_errors" if k == "__all__" else k): v for k, v in exc.message_dict.items()}
            ) from exc


class MetricPointSerializer(serializers.ModelSerializer):
    class Meta:
        model = MetricPoint
        fields = ["step", "epoch", "values"]


class TrainingJobViewSet(
    JobActionsMixin,
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Admins launch; leads and admins watch. Annotators do not see training."""

    serializer_class = TrainingJobSerializer
    filterset_fields = {"project__slug": ["exact"], "status": ["exact"], "stage": ["exact"]}

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return TrainingJob.objects.none()
        return (
            TrainingJob.objects.filter(
                project__in=projects_with_role(self.request.user, Role.LEAD).values("pk")
            )
            .select_related("project")
            .prefetch_related("checkpoints")
        )

    def list(self, request, *args, **kwargs):
        lifecycle.reap_stale(TrainingJob)
        return super().list(request, *args, **kwargs)

    @extend_schema(
        parameters=[OpenApiParameter("after", int, description="only steps after this one")],
        responses=MetricPointSerializer(many=True),
    )
    @action(detail=True, methods=["get"])
    def metrics(self, request, pk=None):
        job = self.get_object()
        try:
            after = int(request.query_params.get("after", -1))
        except ValueError:
            raise serializers.ValidationError({"after": "must be an integer step"}) from None
        points = job.metrics.filter(step__gt=after).order_by("step", "id")[:5000]
        return Response(
            {
                "status": job.status,
                "step": job.step,
                "max_steps": job.max_steps,
                "progress": job.progress,
                "message": job.message,
                "points": MetricPointSerializer(points, many=True).data,
                "checkpoints": CheckpointSerializer(job.checkpoints.all(), many=True).data,
            }
        )
