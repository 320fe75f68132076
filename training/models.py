from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from annotator.models import ModelVersion
from jobs.models import Job


class DatasetSnapshot(Job):
    """An immutable, content-hashed JSONL export (SFT, DPO or eval) built by a Celery worker.

    The row is created `queued` with its filter spec and audit settings; the build
    (training/snapshots/build.py) streams rows into a temp file, audits them, and only then
    renames the file into place and turns the row `ready` in one transaction. Once ready
    nothing about it changes (save() refuses); delete it and build another instead.
    """

    class Kind(models.TextChoices):
        SFT = "sft", "SFT"
        DPO = "dpo", "DPO"
        EVAL = "eval", "eval"

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        READY = "ready"
        FAILED = "failed"
        CANCELLED = "cancelled"

    class Failure(models.TextChoices):
        NONE = "", "none"
        NO_ROWS = "no_rows", "no rows"
        AUDIT = "audit_blocked", "blocked by the audit"
        ERROR = "error", "error"
        QUEUE = "queue_unavailable", "task queue unavailable"
        GAVE_UP = "gave_up", "gave up after repeated worker deaths"

    project = models.ForeignKey(
        "annotator.Project", on_delete=models.CASCADE, related_name="dataset_snapshots"
    )
    kind = models.CharField(max_length=10, choices=Kind.choices)
    version = models.PositiveIntegerField(help_text="1, 2, 3 … per project and kind.")
    layout = models.CharField(max_length=40, help_text="Row format, e.g. trl_messages or openai_preference.")
    note = models.TextField(blank=True)
    filters = models.JSONField(
        default=dict, help_text="Normalised filter spec (see training/snapshots/spec.py)."
    )
    audit_config = models.JSONField(default=dict, help_text="Mode per audit check and its thresholds.")

    status = models.CharField(max_length=20, choices=State.choices, default=State.QUEUED)
    failure = models.CharField(max_length=20, choices=Failure.choices, blank=True, default="")
    phase = models.CharField(max_length=40, blank=True, help_text="What the running build is doing.")
    rows_total = models.PositiveIntegerField(default=0, help_text="Source records to read (known at start).")
    rows_done = models.PositiveIntegerField(default=0)
    row_count = models.PositiveIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True)
    file = models.FileField(max_length=500, blank=True)
    size_bytes = models.BigIntegerField(default=0)
    stats = models.JSONField(default=dict, blank=True)
    audit = models.JSONField(default=dict, blank=True)

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="dataset_snapshots",
    )

    SUCCESS = State.READY

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "kind", "version"], name="snapshot_unique_version"),
        ]
        indexes = [models.Index(fields=["project", "kind", "status"], name="snapshot_project_kind")]

    def __str__(self):
        return f"{self.project.slug if self.project_id else '?'} {self.name}"

    def save(self, *args, **kwargs):
        if self.pk and DatasetSnapshot.objects.filter(pk=self.pk, status=self.State.READY).exists():
            raise ValidationError("A ready dataset snapshot is immutable; build a new one instead.")
        super().save(*args, **kwargs)

    @property
    def name(self) -> str:
        return f"{self.kind}-v{self.version}"

    @property
    def progress(self) -> float:
        if self.status == self.State.READY:
            return 1.0
        return min(1.0, self.rows_done / self.rows_total) if self.rows_total else 0.0

    @property
    def resume_hint(self) -> str:
        return "Build again starts it over; nothing partial was kept."

    def end_fields(self, reason: str) -> dict:
        failure = {
            "waiting": self.Failure.QUEUE,
            "gave_up": self.Failure.GAVE_UP,
            "stale": self.Failure.ERROR,
        }
        return {"phase": "", "failure": failure.get(reason, self.Failure.NONE)}

    def requeue_fields(self) -> dict:
        return {"failure": self.Failure.NONE, "phase": "", "rows_done": 0, "audit": {}, "stats": {}}

    @property
    def download_name(self) -> str:
        return f"{self.project.slug}-{self.name}.jsonl"


class TrainingJob(Job):
    """One fine-tuning run (SFT or DPO, LoRA) executed by a worker on the `training` queue.

    All state lives here so a page, the API and a restarted worker agree on what happened.
    """

    class Stage(models.TextChoices):
        SFT = "sft", "SFT (corrections)"
        DPO = "dpo", "DPO (preferences)"
        JUDGE = "judge", "pairwise judge (preferences)"

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"
        STOPPED_BY_GUARD = "stopped_by_guard", "stopped by guard"

    project = models.ForeignKey("annotator.Project", on_delete=models.CASCADE, related_name="training_jobs")
    name = models.CharField(max_length=200)
    stage = models.CharField(max_length=10, choices=Stage.choices)
    base_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="training_jobs")
    train_snapshot = models.ForeignKey(
        DatasetSnapshot, on_delete=models.PROTECT, related_name="training_jobs"
    )
    eval_snapshot = models.ForeignKey(
        DatasetSnapshot, null=True, blank=True, on_delete=models.PROTECT, related_name="eval_for_jobs"
    )
    allow_raw_base = models.BooleanField(
        default=False, help_text="DPO straight on a base model (not advised)."
    )
    params = models.JSONField(
        default=dict, help_text="Hyper-parameters, preset applied (see training/finetune/params.py)."
    )
    guard = models.JSONField(default=dict, help_text="Brain-damage guard limits.")
    merge_weights = models.BooleanField(default=False, help_text="Also save merged full weights.")
    evaluate_after = models.BooleanField(default=False)

    status = models.CharField(max_length=20, choices=State.choices, default=State.QUEUED)
    step = models.PositiveIntegerField(default=0)
    max_steps = models.PositiveIntegerField(default=0)
    device = models.CharField(max_length=100, blank=True)
    guard_report = models.JSONField(
        default=dict, blank=True, help_text="Which check tripped, when, with what values."
    )
    timings = models.JSONField(default=dict, blank=True)
    output_dir = models.CharField(max_length=1000, blank=True)
    result_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="made_by_jobs"
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["project", "status"], name="trainingjob_project_status"),
            models.Index(fields=["status", "heartbeat_at"], name="trainingjob_heartbeat"),
        ]

    def __str__(self):
        return f"{self.stage} job {self.pk} ({self.status})"

    @property
    def progress(self) -> float:
        if self.status == self.State.SUCCEEDED:
            return 1.0
        return min(1.0, self.step / self.max_steps) if self.max_steps else 0.0

    @property
    def timings_text(self) -> str:
        """The timings in words: "loaded in 0.5 s · 22 steps in 9.9 s (0.45 s a step, 17.7 rows/s) · …"."""
        t = self.timings or {}
        parts = []
        if t.get("load_s") is not None:
            parts.append(f"loaded in {t['load_s']:.1f} s")
        if t.get("train_s") is not None:
            rate = []
            if t.get("s_per_step") is not None:
                rate.append(f"{t['s_per_step']:.2f} s a step")
            if t.get("samples_per_s"):
                rate.append(f"{t['samples_per_s']:.1f} rows/s")
            steps = f"{t['steps']} steps" if t.get("steps") is not None else "trained"
            parts.append(f"{steps} in {t['train_s']:.1f} s" + (f" ({', '.join(rate)})" if rate else ""))
        if (t.get("processes") or 1) > 1:
            parts.append(f"{t['processes']} processes")
        if t.get("total_s") is not None:
            parts.append(f"{t['total_s']:.1f} s in all")
        known = {"load_s", "train_s", "steps", "s_per_step", "samples_per_s", "processes", "total_s"}
        parts += [f"{k} {v}" for k, v in t.items() if k not in known]
        return " · ".join(parts)

    @property
    def resume_hint(self) -> str:
        last = self.checkpoints.order_by("-step").first()
        return (
            f"Resume continues from the checkpoint at step {last.step}."
            if last
            else "No checkpoint was saved."
        )


class MetricPoint(models.Model):
    """What the trainer logged at one step: loss, learning rate, grad norm, eval loss, DPO rewards…"""

    job = models.ForeignKey(TrainingJob, on_delete=models.CASCADE, related_name="metrics")
    step = models.PositiveIntegerField()
    epoch = models.FloatField(null=True, blank=True)
    values = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["job", "step", "id"]
        indexes = [models.Index(fields=["job", "step"], name="metricpoint_job_step")]

    def __str__(self):
        return f"job {self.job_id} step {self.step}"


class Checkpoint(models.Model):
    job = models.ForeignKey(TrainingJob, on_delete=models.CASCADE, related_name="checkpoints")
    step = models.PositiveIntegerField()
    path = models.CharField(max_length=1000)
    healthy = models.BooleanField(null=True, help_text="Passed the guard at this step (None: not checked).")
    guard = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["job", "step"]
        constraints = [models.UniqueConstraint(fields=["job", "step"], name="checkpoint_unique_step")]

    def __str__(self):
        return f"checkpoint {self.step} of job {self.job_id}"


# --- the pairwise judge and online DPO (training/judge/, training/online.py) ----------------


def judges_of(project):
    """Trained judges, and external endpoints registered as judges (metadata {"judge": true})."""
    return ModelVersion.objects.filter(
        Q(origin=ModelVersion.Origin.JUDGE) | Q(origin=ModelVersion.Origin.EXTERNAL, metadata__judge=True),
        project=project,
    ).order_by("-id")


class JudgeEvaluation(models.Model):
    """How well a judge agrees with held-out human preferences, next to the human ceiling."""

    judge = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="judge_evaluations")
    job = models.ForeignKey(
        TrainingJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="judge_evaluations"
    )
    source = models.CharField(max_length=200, help_text="Which held-out pairs were judged.")
    pairs = models.PositiveIntegerField(default=0)
    # The symmetric judge (both orders; training/judge/judges.py decide()): what leads and rankers get.
    decision_margin = models.FloatField(
        null=True, blank=True, help_text="Each order must give the same side P >= 0.5 + this margin."
    )
    temperature = models.FloatField(
        null=True, blank=True, help_text="The temperature the judge's probabilities were scaled by."
    )
    decided = models.PositiveIntegerField(
        null=True, blank=True, help_text="Pairs with a verdict; the others are unsure."
    )
    coverage = models.FloatField(null=True, blank=True, help_text="Share of the pairs decided.")
    decided_accuracy = models.FloatField(
        null=True, blank=True, help_text="Symmetric verdict vs the human winner, on the decided pairs."
    )
    symmetric_accuracy = models.FloatField(
        null=True, blank=True, help_text="Symmetric verdict vs the human winner, an unsure pair as half."
    )
    symmetric_accuracy_se = models.FloatField(null=True, blank=True)
    averaged_ece = models.FloatField(
        null=True, blank=True, help_text="Expected calibration error of the order-averaged probability."
    )
    averaged_brier = models.FloatField(
        null=True, blank=True, help_text="Brier score of the order-averaged probability."
    )
    accuracy = models.FloatField(
        null=True, blank=True, help_text="Forced choice: the order-averaged probability vs the human winner."
    )
    accuracy_se = models.FloatField(null=True, blank=True)
    single_order_accuracy = models.FloatField(
        null=True, blank=True, help_text="Each order counted on its own."
    )
    position_bias_rate = models.FloatField(
        null=True,
        blank=True,
        help_text="Flip rate: share of pairs whose two single-order verdicts name different answers.",
    )
    first_position_rate = models.FloatField(
        null=True, blank=True, help_text="How often it picks the first slot."
    )
    ece = models.FloatField(
        null=True, blank=True, help_text="Expected calibration error of the single-order probabilities."
    )
    brier = models.FloatField(
        null=True, blank=True, help_text="Brier score of the single-order probabilities."
    )
    human_agreement = models.FloatField(
        null=True, blank=True, help_text="Annotator-vs-annotator agreement on the same pairs (the ceiling)."
    )
    human_pairs = models.PositiveIntegerField(default=0)
    details = models.JSONField(default=dict, blank=True, help_text="Reliability bins and per-pair verdicts.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        return f"evaluation of judge {self.judge_id}"


class JudgeSuggestion(models.Model):
    """The judge's verdict on one pair of responses, shown to leads and used to order the queue."""

    project = models.ForeignKey(
        "annotator.Project", on_delete=models.CASCADE, related_name="judge_suggestions"
    )
    judge = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="suggestions")
    response_a = models.ForeignKey("annotator.ModelResponse", on_delete=models.CASCADE, related_name="+")
    response_b = models.ForeignKey("annotator.ModelResponse", on_delete=models.CASCADE, related_name="+")

    class Verdict(models.TextChoices):
        A = "a", "A is better"
        B = "b", "B is better"
        UNSURE = "", "unsure"

    prob_a = models.FloatField(help_text="P(A is better), averaged over both orders.")
    verdict = models.CharField(
        max_length=1,
        choices=Verdict.choices,
        blank=True,
        help_text="The judge's verdict (both orders agreeing beyond its margin), or unsure.",
    )
    position_consistent = models.BooleanField(default=True)
    reason = models.TextField(blank=True)
    human_choice = models.CharField(
        max_length=10, blank=True, help_text="Majority human choice when it was made."
    )
    disagrees = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["judge", "response_a", "response_b"], name="judgesuggestion_unique_pair"
            )
        ]
        indexes = [models.Index(fields=["project", "response_a", "response_b"], name="judgesuggestion_pair")]

    def __str__(self):
        return (
            f"judge {self.judge_id} on responses {self.response_a_id}/{self.response_b_id}: "
            f"{self.verdict or 'unsure'}"
        )

    @property
    def confidence(self) -> float:
        return max(self.prob_a, 1 - self.prob_a)


class JudgeVerdictSuggestion(models.Model):
    """The judge's view of one response on a labelling task: compared with a known good answer in the same
    context (a response the humans' majority found reasonable there), shown to leads and used to order the
    queue."""

    class Suggested(models.TextChoices):
        REASONABLE = "reasonable"
        UNREASONABLE = "unreasonable"
        UNSURE = "", "unsure"

    project = models.ForeignKey("annotator.Project", on_delete=models.CASCADE, related_name="judge_verdicts")
    judge = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="verdict_suggestions")
    response = models.ForeignKey("annotator.ModelResponse", on_delete=models.CASCADE, related_name="+")
    reference = models.ForeignKey("annotator.ModelResponse", on_delete=models.CASCADE, related_name="+")
    prob_better = models.FloatField(
        help_text="P(the response is at least as good as the reference), both orders averaged."
    )
    position_consistent = models.BooleanField(default=True)
    reason = models.TextField(blank=True)
    suggested = models.CharField(max_length=20, choices=Suggested.choices, blank=True)
    human_verdict = models.CharField(
        max_length=20, blank=True, help_text="Majority human verdict when it was made."
    )
    disagrees = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["judge", "response"], name="judgeverdict_unique_response")
        ]
        indexes = [models.Index(fields=["project", "response"], name="judgeverdict_response")]

    def __str__(self):
        return f"judge {self.judge_id} on response {self.response_id}: {self.suggested or 'unsure'}"


class OnlineRun(Job):
    """Rounds of online DPO: sample from the policy, rank, build a DPO snapshot, train, evaluate, gate."""

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        STOPPED_BY_GATE = "stopped_by_gate", "stopped by the gate"
        FAILED = "failed"
        CANCELLED = "cancelled"

    class Ranker(models.TextChoices):
        CHECKER = "checker", "strict tool-call checker (needs a known answer)"
        JUDGE = "judge", "pairwise judge"

    project = models.ForeignKey("annotator.Project", on_delete=models.CASCADE, related_name="online_runs")
    name = models.CharField(max_length=200)
    start_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="online_runs")
    ranker = models.CharField(max_length=10, choices=Ranker.choices, default=Ranker.CHECKER)
    judge = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="online_runs_judged"
    )
    eval_suite = models.ForeignKey(
        "evaluation.EvalSuite", null=True, blank=True, on_delete=models.PROTECT, related_name="online_runs"
    )
    rounds = models.PositiveSmallIntegerField(default=2)
    options = models.JSONField(default=dict, help_text="samples_per_prompt, temperature, max_prompts, …")
    params = models.JSONField(default=dict, help_text="DPO hyper-parameters for every round.")

    status = models.CharField(max_length=20, choices=State.choices, default=State.QUEUED)
    phase = models.CharField(max_length=200, blank=True)
    result_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["project", "status"], name="onlinerun_project_status")]

    def __str__(self):
        return f"online run {self.pk} ({self.status})"

    @property
    def resume_hint(self) -> str:
        return "Resume continues with the unfinished round."

    def end_fields(self, reason: str) -> dict:
        return {"phase": ""}

    @property
    def progress(self) -> float:
        if self.status == self.State.SUCCEEDED:
            return 1.0
        done = self.round_set.filter(status=OnlineRound.State.DONE).count()
        return min(1.0, done / self.rounds) if self.rounds else 0.0


class OnlineRound(models.Model):
    class State(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    run = models.ForeignKey(OnlineRun, on_delete=models.CASCADE, related_name="round_set")
    number = models.PositiveSmallIntegerField()
    policy = models.ForeignKey(
        ModelVersion,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The model that generated this round's samples.",
    )
    status = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    phase = models.CharField(max_length=200, blank=True)
    prompts = models.PositiveIntegerField(default=0)
    samples = models.PositiveIntegerField(default=0)
    pairs = models.PositiveIntegerField(default=0)
    stats = models.JSONField(default=dict, blank=True, help_text="Sample accuracy, ties skipped, …")
    snapshot = models.ForeignKey(
        DatasetSnapshot, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    job = models.ForeignKey(TrainingJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    eval_run = models.ForeignKey(
        "evaluation.EvalRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    baseline_run = models.ForeignKey(
        "evaluation.EvalRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    gate = models.JSONField(default=dict, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "number"]
        constraints = [models.UniqueConstraint(fields=["run", "number"], name="onlineround_unique_number")]

    def __str__(self):
        return f"round {self.number} of online run {self.run_id}"


class OnlinePair(models.Model):
    """A chosen/rejected pair an online round built from the policy's own samples."""

    round = models.ForeignKey(OnlineRound, on_delete=models.CASCADE, related_name="pair_set")
    conversation = models.ForeignKey("annotator.Conversation", on_delete=models.CASCADE, related_name="+")
    context_length = models.PositiveIntegerField()
    chosen = models.ForeignKey(
        "annotator.ModelResponse",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        help_text="Empty when the known answer was chosen.",
    )
    chosen_message = models.JSONField(help_text="The chosen assistant message.")
    rejected = models.ForeignKey("annotator.ModelResponse", on_delete=models.CASCADE, related_name="+")
    chosen_score = models.FloatField()
    rejected_score = models.FloatField()
    ranker = models.CharField(max_length=20)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["round", "conversation", "context_length"], name="onlinepair_one_per_prompt"
            )
        ]

    def __str__(self):
        return f"pair {self.pk} of round {self.round_id}"
