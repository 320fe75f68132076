"""REST API of the pairwise judge: judges with their evaluations, suggestions.

Leads and admins read; admins launch online runs; leads may ask a judge to go over the open
comparisons. Annotators see none of it (a judge's verdict would unblind them)."""

from django.db.models import Q
from kombu.exceptions import OperationalError as BrokerError
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from annotator.models import Role
from annotator.policy import projects_with_role

from .models import (
    JudgeEvaluation,
    JudgeSuggestion,
    JudgeVerdictSuggestion,
    ModelVersion,
)


class JudgeEvaluationSerializer(serializers.ModelSerializer):
    class Meta:
        model = JudgeEvaluation
        fields = [
            "id",
            "judge",
            "job",
            "source",
            "pairs",
            "decision_margin",
            "temperature",
            "decided",
            "coverage",
            "decided_accuracy",
            "symmetric_accuracy",
            "symmetric_accuracy_se",
            "averaged_ece",
            "averaged_brier",
            "accuracy",
            "accuracy_se",
            "single_order_accuracy",
            "position_bias_rate",
            "first_position_rate",
            "ece",
            "brier",
            "human_agreement",
            "human_pairs",
            "details",
            "created_at",
        ]


class JudgeSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    latest_evaluation = serializers.SerializerMethodField()
    api_key_set = serializers.SerializerMethodField(
        help_text="Whether the judge's endpoint has a key (never shown)."
    )

    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "project",
            "name",
            "origin",
            "parent",
            "adapter_path",
            "metadata",
            "api_key_set",
            "created_at",
            "latest_evaluation",
        ]

    def get_api_key_set(self, obj) -> bool:
        return bool(obj.api_key)

    def get_latest_evaluation(self, obj) -> dict | None:
        ev = max(obj.judge_evaluations.all(), key=lambda e: e.pk, default=None)
        return JudgeEvaluationSerializer(ev).data if ev else None


def judge_filter() -> Q:
    return Q(origin=ModelVersion.Origin.JUDGE) | Q(origin=ModelVersion.Origin.EXTERNAL, metadata__judge=True)


class JudgeViewSet(viewsets.ReadOnlyModelViewSet):
    """Trained judges (and external judge endpoints) with their latest evaluation."""

    serializer_class = JudgeSerializer
    filterset_fields = {"project__slug": ["exact"]}

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return ModelVersion.objects.none()
        return (
            ModelVersion.objects.filter(
                judge_filter(), project__in=projects_with_role(self.request.user, Role.LEAD).values("pk")
            )
            .select_related("project")
            .prefetch_related("judge_evaluations")
            .order_by("-id")
        )

    @action(detail=True, methods=["post"])
    def suggest(self, request, pk=None):
        """Queue this judge over the project's comparisons that it has not judged yet."""
        from .tasks import suggest_with_judge

        judge = self.get_object()
        try:
            suggest_with_judge.delay(judge.project_id, judge.pk)
        except BrokerError as exc:
            return Response(
                {"detail": f"Could not reach the task queue ({exc}); nothing was queued."},
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
            )
        return Response({"detail": "queued"}, status=status.HTTP_202_ACCEPTED)


class JudgeSuggestionSerializer(serializers.ModelSerializer):
    confidence = serializers.FloatField(read_only=True)

    class Meta:
        model = JudgeSuggestion
        fields = [
            "id",
            "project",
            "judge",
            "response_a",
            "response_b",
            "prob_a",
            "verdict",
            "confidence",
            "position_consistent",
            "reason",
            "human_choice",
            "disagrees",
            "created_at",
        ]


class JudgeSuggestionViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = JudgeSuggestionSerializer
    filterset_fields = {"project__slug": ["exact"], "judge": ["exact"], "disagrees": ["exact"]}

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return JudgeSuggestion.objects.none()
        return JudgeSuggestion.objects.filter(
            project__in=projects_with_role(self.request.user, Role.LEAD).values("pk")
        ).order_by("-id")


class JudgeVerdictSuggestionSerializer(serializers.ModelSerializer):
    class Meta:
        model = JudgeVerdictSuggestion
        fields = [
            "id",
            "project",
            "judge",
            "response",
            "reference",
            "prob_better",
            "suggested",
            "position_consistent",
            "reason",
            "human_verdict",
            "disagrees",
            "created_at",
        ]


class JudgeVerdictSuggestionViewSet(viewsets.ReadOnlyModelViewSet):
    """The judge's suggestions on single responses (labelling tasks), judged against a known good answer."""

    serializer_class = JudgeVerdictSuggestionSerializer
    filterset_fields = {
        "project__slug": ["exact"],
        "judge": ["exact"],
        "disagrees": ["exact"],
        "response": ["exact"],
    }

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return JudgeVerdictSuggestion.objects.none()
        return JudgeVerdictSuggestion.objects.filter(
            project__in=projects_with_role(self.request.user, Role.LEAD).values("pk")
        ).order_by("-id")
