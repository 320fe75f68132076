"""Evaluation: suites of gold cases, runs of a model over a suite, per-case results,
badcases sent back to the annotators, and promotion decisions.

A suite is immutable once created (its cases are the yardstick every run is read
against); a new version of it is a new suite row with the same name. A run keeps its
state in the database: progress, per-case results committed batch by batch, and at the
end its summary (metrics.md figures with standard errors) — a killed worker resumes
where the last batch committed. Whether a suite overlaps a model's training data is not
stored on the run: it depends on the lineage's snapshots, which may come later
(``EvalRun.training_overlap``).
"""

from django.conf import settings as django_settings
from django.db import models
from django.db.models import Q
from django.utils.functional import cached_property

from jobs.models import Job


class EvalSuite(models.Model):
    class Source(models.TextChoices):
        SNAPSHOT = "snapshot", "eval dataset snapshot"
        GOLD = "gold", "gold JSONL"
        SCENARIOS = "scenarios", "multi-turn regression scenarios"
        CONVERSATIONS = "conversations", "held-out conversations"
        DEMO = "demo", "demo domain held-out cases"

    project = models.ForeignKey("annotator.Project", on_delete=models.CASCADE, related_name="eval_suites")
    name = models.CharField(max_length=200)
    version = models.PositiveIntegerField(help_text="1, 2, 3 … per project and name.")
    description = models.TextField(blank=True)
    source = models.CharField(max_length=20, choices=Source.choices)
    source_detail = models.JSONField(default=dict, blank=True, help_text="Where the cases came from.")
    case_count = models.PositiveIntegerField(default=0)
    content_hash = models.CharField(
        max_length=64, help_text="sha256 of the cases: same hash, same yardstick."
    )
    stats = models.JSONField(
        default=dict, blank=True, help_text="Cases by category, turn depth, expected call."
    )
    created_by = models.ForeignKey(
        django_settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project", "name", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name", "version"], name="evalsuite_unique_version"),
        ]

    def __str__(self):
        return self.label

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"


class EvalCase(models.Model):
    """One input context (messages + tools) and the gold assistant turn that should follow."""

    suite = models.ForeignKey(EvalSuite, on_delete=models.CASCADE, related_name="cases")
    position = models.PositiveIntegerField()
    external_id = models.CharField(max_length=255)
    messages = models.JSONField(help_text="The context: OpenAI chat messages before the evaluated turn.")
    tools = models.JSONField(default=list, blank=True)
    expected = models.JSONField(
        help_text="Gold assistant message (may carry optional / acceptable per call)."
    )
    categories = models.JSONField(default=list, blank=True, help_text="Taxonomy category names.")
    turn_depth = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="User turns in the context."
    )
    metadata = models.JSONField(default=dict, blank=True)
    conversation = models.ForeignKey(
        "annotator.Conversation",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="eval_cases",
        help_text="The conversation the case was cut from.",
    )
    context_length = models.PositiveIntegerField(
        null=True, blank=True, help_text="How many messages of that conversation the context is."
    )

    class Meta:
        ordering = ["suite", "position"]
        constraints = [
            models.UniqueConstraint(fields=["suite", "position"], name="evalcase_unique_position"),
            models.UniqueConstraint(fields=["suite", "external_id"], name="evalcase_unique_external_id"),
        ]

    def __str__(self):
        return f"{self.suite} #{self.position} {self.external_id}"

    @property
    def expects_call(self) -> bool:
        return bool((self.expected or {}).get("tool_calls"))


class EvalSettings(models.Model):
    """Per-project evaluation settings: the default suite, automatic runs and the promotion gate."""

    project = models.OneToOneField(
        "annotator.Project", on_delete=models.CASCADE, related_name="eval_settings"
    )
    default_suite = models.ForeignKey(
        EvalSuite,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Used for automatic runs and as the promotion gate's suite.",
    )
    auto_eval_after_training = models.BooleanField(
        default=True, help_text="Run the default suite when a training job succeeds."
    )
    quality_margin = models.FloatField(
        default=0.02,
        help_text="Most response_quality a candidate may lose against production (0.02 = 2 points).",
    )
    perplexity_margin = models.FloatField(
        default=0.05, help_text="Most relative rise of general-text perplexity allowed (0.05 = +5%)."
    )
    require_significance = models.BooleanField(
        default=False, help_text="Also require McNemar p < 0.05 for the tool_call_accuracy gain."
    )
    max_new_tokens = models.PositiveIntegerField(default=256)
    batch_size = models.PositiveIntegerField(default=16)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "eval settings"

    def __str__(self):
        return f"eval settings of {self.project}"

    @classmethod
    def for_project(cls, project) -> "EvalSettings":
        obj, _ = cls.objects.get_or_create(project=project)
        return obj


class EvalRun(Job):
    class Source(models.TextChoices):
        LOCAL = "local", "local model (transformers)"
        ENDPOINT = "endpoint", "OpenAI-compatible endpoint"
        OUTPUTS = "outputs", "uploaded outputs"

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"
        CANCELLED = "cancelled"

    class Trigger(models.TextChoices):
        MANUAL = "manual"
        TRAINING = "training"
        API = "api"
        COMMAND = "command"

    project = models.ForeignKey("annotator.Project", on_delete=models.CASCADE, related_name="eval_runs")
    suite = models.ForeignKey(EvalSuite, on_delete=models.PROTECT, related_name="runs")
    model_version = models.ForeignKey(
        "annotator.ModelVersion", on_delete=models.PROTECT, related_name="eval_runs"
    )
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.LOCAL)
    settings = models.JSONField(
        default=dict,
        blank=True,
        help_text="Generation settings: max_new_tokens, batch_size, endpoint base_url …",
    )
    api_key = models.CharField(
        max_length=500, blank=True, help_text="Endpoint key; never shown, wiped at the end."
    )
    outputs_file = models.FileField(upload_to="eval/outputs/%Y/%m/", max_length=500, blank=True)
    trigger = models.CharField(max_length=10, choices=Trigger.choices, default=Trigger.MANUAL)
    note = models.TextField(blank=True)

    status = models.CharField(max_length=20, choices=State.choices, default=State.QUEUED)
    cases_total = models.PositiveIntegerField(default=0)
    cases_done = models.PositiveIntegerField(default=0)

    summary = models.JSONField(
        default=dict, blank=True, help_text="toolcalls.score.summarize() of the results."
    )
    perplexity = models.FloatField(null=True, blank=True, help_text="General-text perplexity (local runs).")
    stats = models.JSONField(default=dict, blank=True, help_text="Throughput: seconds, tokens, device.")

    created_by = models.ForeignKey(
        django_settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    SUCCESS = State.DONE

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["project", "status"], name="evalrun_project_status"),
            models.Index(fields=["model_version", "suite", "status"], name="evalrun_model_suite"),
        ]

    def __str__(self):
        return f"run {self.pk}: {self.model_version} on {self.suite}"

    @property
    def resume_hint(self) -> str:
        return "Run again continues after the cases already scored."

    def resume_problem(self) -> str:
        if self.source == self.Source.ENDPOINT and not self.api_key and self.settings.get("had_api_key"):
            return "The endpoint key was wiped when the run ended; start a new run."
        return super().resume_problem()

    def end_fields(self, reason: str) -> dict:
        """The endpoint key is wiped when the run ends, but kept while it may still run: waiting for the
        broker, or failed because its worker went silent."""
        return {} if reason in ("waiting", "stale") else {"api_key": ""}

    @property
    def progress(self) -> float:
        if self.status == self.State.DONE:
            return 1.0
        return min(1.0, self.cases_done / self.cases_total) if self.cases_total else 0.0

    def metric(self, name: str) -> dict | None:
        """{"n", "count", "value", "se"} of a headline metric, or None before the summary exists."""
        return (self.summary or {}).get(name)

    @cached_property
    def training_overlap(self) -> dict:
        """Cases of the suite in the training snapshots of the model's lineage, as they are now
        (not when the run finished): suites.overlap_of, cached per suite and lineage state."""
        from .suites import overlap_of

        return overlap_of(self.suite, self.model_version)

    @property
    def overlaps_training(self) -> bool:
        return bool(self.training_overlap.get("cases"))


class EvalResult(models.Model):
    """One case of one run: what the model said and how it scored (score_case, stored whole)."""

    run = models.ForeignKey(EvalRun, on_delete=models.CASCADE, related_name="results")
    case = models.ForeignKey(EvalCase, on_delete=models.CASCADE, related_name="results")
    output = models.TextField(blank=True, help_text="Raw model text, as scored.")
    stopped_at_limit = models.BooleanField(null=True, blank=True)
    new_tokens = models.PositiveIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(
        blank=True, help_text="Why no output came back (endpoint errors); scored as empty."
    )
    tool_call_accuracy = models.PositiveSmallIntegerField()
    tool_name_accuracy = models.PositiveSmallIntegerField(null=True, blank=True)
    tool_args_accuracy = models.PositiveSmallIntegerField(null=True, blank=True)
    response_quality = models.PositiveSmallIntegerField()
    defect_count = models.PositiveSmallIntegerField(default=0)
    score = models.JSONField(help_text="toolcalls.score.score_case() output.")

    class Meta:
        ordering = ["run", "case__position"]
        constraints = [models.UniqueConstraint(fields=["run", "case"], name="evalresult_unique_case")]
        indexes = [
            models.Index(fields=["run", "tool_call_accuracy", "response_quality"], name="evalresult_run_ok")
        ]

    def __str__(self):
        return f"result of case {self.case_id} in run {self.run_id}"

    @property
    def passed(self) -> bool:
        return bool(self.tool_call_accuracy and self.response_quality)

    @property
    def defects(self) -> list[str]:
        return [k for k, v in (self.score.get("defects") or {}).items() if v]


class EvalBadcase(models.Model):
    """A failed or regressed case sent to the annotator queue: the model's response, attached once."""

    class Reason(models.TextChoices):
        FAILED = "failed"
        REGRESSED = "regressed"

    run = models.ForeignKey(EvalRun, on_delete=models.CASCADE, related_name="badcases")
    case = models.ForeignKey(EvalCase, on_delete=models.CASCADE, related_name="badcases")
    response = models.ForeignKey(
        "annotator.ModelResponse", on_delete=models.CASCADE, related_name="eval_badcases"
    )
    reason = models.CharField(max_length=10, choices=Reason.choices, default=Reason.FAILED)
    baseline_run = models.ForeignKey(
        EvalRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(
        django_settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["run", "case"], name="evalbadcase_unique_case")]

    def __str__(self):
        return f"badcase from case {self.case_id} of run {self.run_id}"


class PromotionDecision(models.Model):
    """Every promote / reject decision, with the gate's conditions as they were read."""

    class Action(models.TextChoices):
        PROMOTE = "promote"
        REJECT = "reject"

    project = models.ForeignKey("annotator.Project", on_delete=models.CASCADE, related_name="promotions")
    model_version = models.ForeignKey(
        "annotator.ModelVersion", on_delete=models.CASCADE, related_name="promotions"
    )
    action = models.CharField(max_length=10, choices=Action.choices)
    previous_production = models.ForeignKey(
        "annotator.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    suite = models.ForeignKey(EvalSuite, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    run = models.ForeignKey(EvalRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    baseline_run = models.ForeignKey(
        EvalRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    conditions = models.JSONField(default=list, blank=True)
    note = models.TextField(blank=True)
    decided_by = models.ForeignKey(
        django_settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(action__in=["promote", "reject"]), name="promotion_action_known"
            ),
        ]

    def __str__(self):
        return f"{self.action} {self.model_version}"
