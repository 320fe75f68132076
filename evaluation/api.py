"""REST API of the evaluation app: suites, runs and their results, comparisons, promotion, settings.

Leads read everything of their projects; launching runs, building suites, sending badcases
to the queue, changing settings and promoting need the admin role (403 otherwise).
"""

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import ProtectedError, Q
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import exceptions, mixins, parsers, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from annotator.api_base import ProjectScopedViewSet
from annotator.models import ModelVersion, Role, Split
from annotator.policy import can_run_pipeline, can_see_pipeline, projects_with_role
from annotator.serializers import MAX_KEY, ProjectSlugField, SameProjectMixin, ScopedRelatedField
from config.rest import BoundedJSONParser, load_json
from jobs import lifecycle
from toolcalls.defects import DEFECTS
from toolcalls.score import HEADLINE_METRICS

from . import comparison, loop, promotion, runner, suites
from .models import EvalCase, EvalResult, EvalRun, EvalSettings, EvalSuite, PromotionDecision


def _raise(exc: ValidationError):
    raise serializers.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)


def _suite_errors(exc: suites.SuiteError) -> Response:
    """Every refused case with its line (1-based; 0 = the whole input), field and message."""
    return Response(
        {
            "detail": "the suite was not created",
            "errors": [{"line": e.line, "field": e.field, "message": e.message} for e in exc.errors],
        },
        status=400,
    )


# ============================================================================== suites


class EvalSuiteSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    label = serializers.CharField(read_only=True)

    class Meta:
        model = EvalSuite
        fields = [
            "id",
            "project",
            "name",
            "version",
            "label",
            "description",
            "source",
            "source_detail",
            "case_count",
            "content_hash",
            "stats",
            "created_at",
        ]
        read_only_fields = fields


class SuiteCreateSerializer(serializers.Serializer):
    project = ProjectSlugField()
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    source = serializers.ChoiceField(
        choices=["gold", "scenarios", "bfcl", "snapshot", "conversations", "demo"]
    )
    file = serializers.FileField(required=False, help_text="JSONL for gold, scenarios or BFCL (multipart).")
    answers_file = serializers.FileField(required=False, help_text="BFCL possible answers (multipart).")
    cases = serializers.ListField(
        child=serializers.DictField(),
        required=False,
        help_text="Gold cases inline (JSON body), instead of a file.",
    )
    scenarios = serializers.ListField(child=serializers.DictField(), required=False)
    snapshot = serializers.IntegerField(required=False)
    splits = serializers.ListField(child=serializers.ChoiceField(choices=Split.values), required=False)
    demo_cases = serializers.IntegerField(required=False, min_value=1, max_value=5000, default=100)
    demo_seed = serializers.IntegerField(required=False, default=0, min_value=0, max_value=2**32 - 1)
    demo_split = serializers.ChoiceField(choices=["seen", "unseen"], required=False, default="seen")


class EvalCaseSerializer(serializers.ModelSerializer):
    expects_call = serializers.BooleanField(read_only=True)

    class Meta:
        model = EvalCase
        fields = [
            "id",
            "position",
            "external_id",
            "messages",
            "tools",
            "expected",
            "categories",
            "turn_depth",
            "metadata",
            "conversation",
            "context_length",
            "expects_call",
        ]
        read_only_fields = fields


class EvalSuiteViewSet(ProjectScopedViewSet):
    """Versioned, immutable suites. POST builds the next version (or returns the latest, unchanged,
    with 200 when the cases are the same); a suite that has runs cannot be deleted."""

    base_queryset = EvalSuite.objects.select_related("project")
    read_role = Role.LEAD
    filterset_fields = {"project__slug": ["exact"], "name": ["exact"], "source": ["exact"]}
    parser_classes = [BoundedJSONParser, parsers.MultiPartParser, parsers.FormParser]
    http_method_names = ["get", "post", "delete", "head", "options"]

    def get_serializer_class(self):
        return SuiteCreateSerializer if self.action == "create" else EvalSuiteSerializer

    @extend_schema(
        request=SuiteCreateSerializer, responses={201: EvalSuiteSerializer, 200: EvalSuiteSerializer}
    )
    def create(self, request, *args, **kwargs):
        ser = SuiteCreateSerializer(data=request.data, context={"request": request})
        ser.is_valid(raise_exception=True)
        d = ser.validated_data
        project = d["project"]
        self.check_write(project)
        kw = {"user": request.user, "description": d.get("description", "")}
        try:
            if d["source"] == "gold":
                if d.get("file"):
                    suite, created = suites.suite_from_gold_jsonl(
                        project, d["name"], d["file"], file_name=d["file"].name, **kw
                    )
                else:
                    records = list(enumerate(d.get("cases") or [], 1))
                    suite, created = suites.create_suite(project, d["name"], records, source="gold", **kw)
            elif d["source"] == "scenarios":
                if d.get("file"):
                    suite, created = suites.suite_from_scenarios(
                        project, d["name"], d["file"], file_name=d["file"].name, **kw
                    )
                else:
                    records, errors = [], []
                    for i, rec in enumerate(d.get("scenarios") or [], 1):
                        cases, errs = suites.scenario_cases(rec, i)
                        records += cases
                        errors += errs
                    if errors:
                        raise suites.SuiteError(errors)
                    suite, created = suites.create_suite(
                        project, d["name"], records, source="scenarios", **kw
                    )
            elif d["source"] == "bfcl":
                if not d.get("file"):
                    raise serializers.ValidationError({"file": "upload the BFCL test records (JSONL)"})
                suite, created = suites.suite_from_bfcl(
                    project, d["name"], d["file"], d.get("answers_file"), file_name=d["file"].name, **kw
                )
            elif d["source"] == "snapshot":
                snap = next((s for s in suites.eval_snapshots(project) if s.pk == d.get("snapshot")), None)
                if snap is None:
                    raise serializers.ValidationError(
                        {"snapshot": "not a ready eval snapshot of this project"}
                    )
                suite, created = suites.suite_from_snapshot(project, snap, d["name"], **kw)
            elif d["source"] == "conversations":
                suite, created = suites.suite_from_conversations(
                    project, d["name"], splits=d.get("splits") or (Split.EVAL, Split.HOLDOUT), **kw
                )
            else:
                suite, created = suites.suite_from_demo(
                    project, d["name"], n=d["demo_cases"], seed=d["demo_seed"], split=d["demo_split"], **kw
                )
        except suites.SuiteError as exc:
            return _suite_errors(exc)
        return Response(EvalSuiteSerializer(suite).data, status=status.HTTP_201_CREATED if created else 200)

    def perform_destroy(self, instance):
        self.check_write(instance.project)
        try:
            instance.delete()
        except ProtectedError:
            raise exceptions.ValidationError({"suite": "this suite has runs; delete them first"}) from None

    @extend_schema(responses=EvalCaseSerializer(many=True))
    @action(detail=True, methods=["get"])
    def cases(self, request, pk=None):
        suite = self.get_object()
        page = self.paginate_queryset(suite.cases.order_by("-id"))
        return self.get_paginated_response(EvalCaseSerializer(page, many=True).data)


# ================================================================================ runs


class EvalRunListSerializer(serializers.ListSerializer):
    def to_representation(self, data):
        runs = list(data.all() if hasattr(data, "all") else data)
        return super().to_representation(suites.with_overlap(runs))  # one check per suite and model


class EvalRunSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    suite_label = serializers.CharField(source="suite.label", read_only=True)
    model_version_name = serializers.CharField(source="model_version.name", read_only=True)
    progress = serializers.FloatField(read_only=True)
    overlap = serializers.JSONField(
        source="training_overlap",
        read_only=True,
        help_text="Cases of the suite in the model lineage's training snapshots, now.",
    )
    overlaps_training = serializers.BooleanField(read_only=True)
    headline = serializers.SerializerMethodField()

    class Meta:
        model = EvalRun
        fields = [
            "id",
            "project",
            "suite",
            "suite_label",
            "model_version",
            "model_version_name",
            "source",
            "settings",
            "trigger",
            "note",
            "status",
            "message",
            "cases_total",
            "cases_done",
            "progress",
            "cancel_requested",
            "attempts",
            "headline",
            "summary",
            "overlap",
            "overlaps_training",
            "perplexity",
            "stats",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields
        list_serializer_class = EvalRunListSerializer

    def get_headline(self, obj) -> dict:
        """The four headline metrics: {name: {"n", "count", "value", "se"}} (empty until done)."""
        return {m: obj.summary[m] for m in HEADLINE_METRICS if obj.summary and m in obj.summary}


class RunCreateSerializer(SameProjectMixin, serializers.Serializer):
    project = ProjectSlugField()
    suite = ScopedRelatedField("project", queryset=EvalSuite.objects.all())
    model_version = ScopedRelatedField("project", queryset=ModelVersion.objects.all())
    source = serializers.ChoiceField(choices=EvalRun.Source.choices, default=EvalRun.Source.LOCAL)
    settings = serializers.DictField(
        required=False,
        default=dict,
        help_text="max_new_tokens, batch_size, device, chat_template_kwargs; for "
        "endpoints base_url, model, concurrency, timeout.",
    )
    api_key = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        write_only=True,
        max_length=500,
        style={"input_type": "password"},
        help_text="Endpoint key, sent as a Bearer token; write-only, wiped when the run ends.",
    )
    outputs = serializers.FileField(required=False, help_text="Outputs JSONL (multipart) for source=outputs.")
    note = serializers.CharField(required=False, allow_blank=True, default="")


class EvalResultSerializer(serializers.ModelSerializer):
    case_id = serializers.IntegerField(source="case.id", read_only=True)
    external_id = serializers.CharField(source="case.external_id", read_only=True)
    position = serializers.IntegerField(source="case.position", read_only=True)
    categories = serializers.JSONField(source="case.categories", read_only=True)
    turn_depth = serializers.IntegerField(source="case.turn_depth", read_only=True)
    defects = serializers.SerializerMethodField()
    parsed = serializers.SerializerMethodField()

    class Meta:
        model = EvalResult
        fields = [
            "id",
            "case_id",
            "external_id",
            "position",
            "categories",
            "turn_depth",
            "output",
            "stopped_at_limit",
            "new_tokens",
            "latency_ms",
            "error",
            *HEADLINE_METRICS,
            "defects",
            "parsed",
        ]
        read_only_fields = fields

    def get_defects(self, obj) -> dict:
        return obj.score.get("defects") or {}

    def get_parsed(self, obj) -> dict:
        return obj.score.get("parsed") or {}


class LoopSerializer(serializers.Serializer):
    scope = serializers.ChoiceField(choices=list(loop.SCOPES), default="failed")
    baseline = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=MAX_KEY)
    split = serializers.ChoiceField(choices=Split.values, required=False, allow_null=True)
    priority = serializers.IntegerField(
        required=False, default=loop.DEFAULT_PRIORITY, min_value=-(2**31), max_value=2**31 - 1
    )


class EvalRunViewSet(ProjectScopedViewSet):
    """Eval runs. POST queues one on the `eval` queue (admin); GET polls progress and the summary."""

    base_queryset = EvalRun.objects.select_related("project", "suite", "model_version")
    read_role = Role.LEAD
    filterset_fields = {
        "project__slug": ["exact"],
        "suite": ["exact"],
        "model_version": ["exact"],
        "status": ["exact"],
        "source": ["exact"],
    }
    parser_classes = [BoundedJSONParser, parsers.MultiPartParser, parsers.FormParser]
    http_method_names = ["get", "post", "head", "options"]

    def get_serializer_class(self):
        return RunCreateSerializer if self.action == "create" else EvalRunSerializer

    @extend_schema(request=RunCreateSerializer, responses={201: EvalRunSerializer})
    def create(self, request, *args, **kwargs):
        ser = RunCreateSerializer(data=request.data, context={"request": request})
        ser.is_valid(raise_exception=True)
        d = ser.validated_data
        self.check_write(d["project"])
        settings = d.get("settings") or {}
        if isinstance(request.data.get("settings"), str):  # multipart sends the dict as JSON text
            try:
                settings = load_json(request.data["settings"] or "{}")
            except exceptions.ParseError as exc:
                raise serializers.ValidationError({"settings": str(exc.detail)}) from None
            if not isinstance(settings, dict):
                raise serializers.ValidationError({"settings": "must be a JSON object"})
        try:
            run = runner.create_run(
                d["project"],
                d["suite"],
                d["model_version"],
                source=d["source"],
                settings=settings,
                user=request.user,
                outputs=d.get("outputs"),
                api_key=d.get("api_key", ""),
                trigger=EvalRun.Trigger.API,
                note=d.get("note", ""),
            )
        except ValidationError as exc:
            _raise(exc)
        return Response(EvalRunSerializer(run).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        parameters=[
            OpenApiParameter("show", str, enum=["all", "failed", "passed", "wrong_call", "defect"]),
            OpenApiParameter("defect", str, enum=list(DEFECTS)),
        ],
        responses=EvalResultSerializer(many=True),
    )
    @action(detail=True, methods=["get"])
    def results(self, request, pk=None):
        run = self.get_object()
        qs = EvalResult.objects.filter(run=run).select_related("case")
        show = request.query_params.get("show", "all")
        if show == "failed":
            qs = qs.filter(Q(tool_call_accuracy=0) | Q(response_quality=0))
        elif show == "passed":
            qs = qs.filter(tool_call_accuracy=1, response_quality=1)
        elif show == "wrong_call":
            qs = qs.filter(tool_call_accuracy=0)
        elif show == "defect":
            qs = qs.filter(response_quality=0)
        defect = request.query_params.get("defect")
        if defect in DEFECTS:
            qs = qs.filter(**{f"score__defects__{defect}": 1})
        page = self.paginate_queryset(qs.order_by("-id"))
        return self.get_paginated_response(EvalResultSerializer(page, many=True).data)

    def _admin_run(self):
        run = self.get_object()
        self.check_write(run.project)
        return run

    @extend_schema(request=None, responses=EvalRunSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        run = self._admin_run()
        lifecycle.cancel(run)
        return Response(EvalRunSerializer(run).data)

    @extend_schema(request=None, responses=EvalRunSerializer)
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        run = self._admin_run()
        try:
            lifecycle.resume(run)
        except ValidationError as exc:
            _raise(exc)
        return Response(EvalRunSerializer(run).data)

    @extend_schema(
        request=LoopSerializer,
        responses=inline_serializer(
            "LoopResult",
            {
                "sent": serializers.IntegerField(),
                "already": serializers.IntegerField(),
                "responses": serializers.IntegerField(),
                "label_tasks": serializers.IntegerField(),
                "compare_tasks": serializers.IntegerField(),
            },
        ),
    )
    @action(detail=True, methods=["post"], url_path="send-to-queue")
    def send_to_queue(self, request, pk=None):
        """Close the loop: the run's failed (or regressed) cases become badcases in the annotator queue,
        once."""
        run = self._admin_run()
        ser = LoopSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        d = ser.validated_data
        baseline = None
        if d.get("baseline"):
            baseline = EvalRun.objects.filter(project=run.project, pk=d["baseline"]).first()
            if baseline is None:
                raise serializers.ValidationError({"baseline": "no such run in this project"})
        try:
            with transaction.atomic():
                out = loop.send_to_queue(
                    run,
                    request.user,
                    scope=d["scope"],
                    baseline=baseline,
                    split=d.get("split"),
                    priority=d["priority"],
                )
        except ValidationError as exc:
            _raise(exc)
        return Response(out)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "runs",
                str,
                description="Run ids, comma-separated; the first (or the lineage root) is the baseline",
                required=True,
            ),
            OpenApiParameter("order", str, enum=["lineage", "given"]),
        ],
        responses=OpenApiTypes.OBJECT,
    )
    @action(detail=False, methods=["get"])
    def compare(self, request):
        """Per-metric deltas with McNemar tests and flipped cases, for runs on the same suite."""
        raw = request.query_params.get("runs", "")
        ids = [int(x) for x in raw.replace(" ", "").split(",") if x.isdigit()]
        runs = list(self.get_queryset().filter(pk__in=ids))
        if len(runs) != len(set(ids)):
            raise exceptions.NotFound("one of the runs does not exist or is not visible to you")
        runs.sort(key=lambda r: ids.index(r.pk))
        try:
            result = comparison.compare_runs(runs, keep_order=request.query_params.get("order") == "given")
        except comparison.ComparisonError as exc:
            raise serializers.ValidationError({"runs": str(exc)}) from None
        return Response(result.as_dict())


# =========================================================================== promotion


class PromotionDecisionSerializer(serializers.ModelSerializer):
    model_version_name = serializers.CharField(source="model_version.name", read_only=True)
    decided_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = PromotionDecision
        fields = [
            "id",
            "project",
            "model_version",
            "model_version_name",
            "action",
            "previous_production",
            "suite",
            "run",
            "baseline_run",
            "conditions",
            "note",
            "decided_by",
            "created_at",
        ]
        read_only_fields = fields


class DecisionRequestSerializer(SameProjectMixin, serializers.Serializer):
    project_field = "model_version"
    model_version = ScopedRelatedField("project", queryset=ModelVersion.objects.all())
    suite = ScopedRelatedField("project", queryset=EvalSuite.objects.all(), required=False, allow_null=True)
    note = serializers.CharField(required=False, allow_blank=True, default="")


class PromotionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """The promotion gate: `check` explains each condition; `promote` / `reject` decide (admin)."""

    serializer_class = PromotionDecisionSerializer
    filterset_fields = {"project__slug": ["exact"], "model_version": ["exact"], "action": ["exact"]}

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return PromotionDecision.objects.none()
        return PromotionDecision.objects.filter(
            project__in=projects_with_role(self.request.user, Role.LEAD).values("pk")
        ).select_related("model_version", "decided_by")

    def _request(self, allowed, role):
        ser = DecisionRequestSerializer(
            data=self.request.data if self.request.method == "POST" else self.request.query_params,
            context={"request": self.request},
        )
        ser.is_valid(raise_exception=True)
        d = ser.validated_data
        mv, suite = d["model_version"], d.get("suite")
        if not allowed(self.request.user, mv.project):
            raise exceptions.PermissionDenied(f"This needs the {role} role in project {mv.project.slug!r}.")
        return mv, suite, d.get("note", "")

    @extend_schema(
        parameters=[OpenApiParameter("model_version", int, required=True), OpenApiParameter("suite", int)],
        responses=OpenApiTypes.OBJECT,
    )
    @action(detail=False, methods=["get"])
    def check(self, request):
        mv, suite, _ = self._request(can_see_pipeline, Role.LEAD)
        return Response(promotion.check_gate(mv, suite).as_dict())

    @extend_schema(
        request=DecisionRequestSerializer,
        responses={201: PromotionDecisionSerializer, 409: OpenApiTypes.OBJECT},
    )
    @action(detail=False, methods=["post"])
    def promote(self, request):
        mv, suite, note = self._request(can_run_pipeline, Role.ADMIN)
        try:
            decision = promotion.promote(mv, request.user, suite, note)
        except promotion.GateFailed as exc:
            return Response(
                {"detail": "the promotion gate failed", **exc.gate.as_dict()}, status=status.HTTP_409_CONFLICT
            )
        return Response(PromotionDecisionSerializer(decision).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=DecisionRequestSerializer, responses={201: PromotionDecisionSerializer})
    @action(detail=False, methods=["post"])
    def reject(self, request):
        mv, suite, note = self._request(can_run_pipeline, Role.ADMIN)
        try:
            decision = promotion.reject(mv, request.user, suite, note)
        except ValidationError as exc:
            _raise(exc)
        return Response(PromotionDecisionSerializer(decision).data, status=status.HTTP_201_CREATED)


# ============================================================================ settings


class EvalSettingsSerializer(SameProjectMixin, serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    default_suite = ScopedRelatedField(
        "project", queryset=EvalSuite.objects.all(), allow_null=True, required=False
    )

    class Meta:
        model = EvalSettings
        fields = [
            "project",
            "default_suite",
            "auto_eval_after_training",
            "quality_margin",
            "perplexity_margin",
            "require_significance",
            "max_new_tokens",
            "batch_size",
            "updated_at",
        ]
        read_only_fields = ["project", "updated_at"]

    def validate(self, attrs):
        for key, hi in (("quality_margin", 1), ("perplexity_margin", 10)):
            if key in attrs and not 0 <= attrs[key] <= hi:
                raise serializers.ValidationError({key: f"a fraction from 0 to {hi}"})
        return attrs


class EvalSettingsViewSet(mixins.RetrieveModelMixin, mixins.UpdateModelMixin, viewsets.GenericViewSet):
    """Per-project evaluation settings, addressed by project slug: leads read, admins change."""

    serializer_class = EvalSettingsSerializer
    lookup_field = "project__slug"
    lookup_url_kwarg = "slug"

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return EvalSettings.objects.none()
        return EvalSettings.objects.filter(
            project__in=projects_with_role(self.request.user, Role.LEAD).values("pk")
        ).select_related("project")

    def get_object(self):
        from annotator.models import Project

        slug = self.kwargs["slug"]
        project = projects_with_role(self.request.user, Role.LEAD).filter(slug=slug).first()
        if project is None:
            if Project.objects.filter(slug=slug, memberships__user=self.request.user).exists():
                raise exceptions.PermissionDenied("Evaluation settings need the lead role.")
            raise exceptions.NotFound()
        return EvalSettings.for_project(project)

    def perform_update(self, serializer):
        if not can_run_pipeline(self.request.user, serializer.instance.project):
            raise exceptions.PermissionDenied("Changing evaluation settings needs the admin role.")
        serializer.save()
