"""The annotation objects: projects, model versions, members, conversations and their responses, the
taxonomy, labels, corrections, preferences, reviews, and import jobs."""

import hashlib

import orjson
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from simple_history.models import HistoricalRecords

from jobs.models import Job
from toolcalls.validate import validate_assistant_message, validate_tool_specs


def canonical_json(value) -> str:
    """Sorted keys, no spaces, UTF-8 as is: the text content hashes are taken over."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def content_hash(*parts) -> str:
    return hashlib.sha256(canonical_json(list(parts)).encode()).hexdigest()


def default_label_settings() -> dict:
    return {
        "lock_ttl_minutes": 30,
        "strategy": "sequential",  # sequential | random | uncertain
        "blind": True,  # annotators do not see others' labels
        "require_preference_reason": False,
    }


STRATEGIES = ("sequential", "random", "uncertain")  # the queue orders (annotator/assignment.py)
LABEL_SETTING_RULES = {
    # key: (type, check, what it must be)
    "lock_ttl_minutes": (int, lambda v: 1 <= v <= 24 * 60, "a whole number of minutes from 1 to 1440"),
    "strategy": (str, lambda v: v in STRATEGIES, "sequential, random or uncertain"),
    "blind": (bool, lambda v: True, "true or false"),
    "require_preference_reason": (bool, lambda v: True, "true or false"),
}


def label_settings_errors(value) -> dict[str, str]:
    """{key: message} for a label_settings object the queue could not run with (API, admin, forms)."""
    if not isinstance(value, dict):
        return {"label_settings": "must be an object"}
    errors = {}
    for key, given in value.items():
        if key not in LABEL_SETTING_RULES:
            errors[key] = f"unknown setting (known: {', '.join(LABEL_SETTING_RULES)})"
            continue
        kind, check, what = LABEL_SETTING_RULES[key]
        if type(given) is not kind or not check(given):  # type(): a bool is not a number of minutes
            errors[key] = f"must be {what}"
    return errors


class Role(models.TextChoices):
    ANNOTATOR = "annotator"
    LEAD = "lead"
    ADMIN = "admin"


ROLE_RANK = {Role.ANNOTATOR: 1, Role.LEAD: 2, Role.ADMIN: 3}


class Project(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    guidelines = models.TextField(blank=True, help_text="Markdown, shown to annotators.")
    tools = models.JSONField(default=list, blank=True, help_text="The agent's tool specs (OpenAI format).")
    overlap = models.PositiveSmallIntegerField(default=1, help_text="Distinct annotators per item.")
    label_settings = models.JSONField(default=default_label_settings, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership", related_name="projects")
    history = HistoricalRecords()

    class Meta:
        ordering = ["name"]
        constraints = [models.CheckConstraint(condition=Q(overlap__gte=1), name="project_overlap_positive")]

    def __str__(self):
        return self.name

    def clean(self):
        errors = validate_tool_specs(self.tools)
        if errors:
            raise ValidationError({"tools": [f"{e.field}: {e.message}" for e in errors]})
        setting_errors = label_settings_errors(self.label_settings)
        if setting_errors:
            raise ValidationError({"label_settings": [f"{k}: {m}" for k, m in setting_errors.items()]})

    def setting(self, key):
        return {**default_label_settings(), **(self.label_settings or {})}[key]


class ModelVersion(models.Model):
    """A model the agent can run: a local base folder, or a base plus a LoRA adapter."""

    class Origin(models.TextChoices):
        BASE = "base", "base model"
        SFT = "sft", "SFT fine-tune"
        DPO = "dpo", "DPO fine-tune"
        IMPORTED = "imported", "imported responses only"
        EXTERNAL = "external", "external endpoint"
        JUDGE = "judge", "pairwise judge"

    class Stage(models.TextChoices):
        CANDIDATE = "candidate"
        PRODUCTION = "production"
        REJECTED = "rejected"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="model_versions")
    name = models.CharField(max_length=200)
    path = models.CharField(
        max_length=1000, blank=True, help_text="Local folder loadable with from_pretrained()."
    )
    adapter_path = models.CharField(max_length=1000, blank=True, help_text="PEFT adapter folder, if any.")
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    origin = models.CharField(max_length=20, choices=Origin.choices, default=Origin.IMPORTED)
    stage = models.CharField(max_length=20, choices=Stage.choices, default=Stage.CANDIDATE)
    notes = models.TextField(blank=True, help_text="How it was made.")
    metadata = models.JSONField(default=dict, blank=True)
    # write-only: never serialised, shown, logged or kept in history; never inside metadata, which every
    # member reads (serializers and admin take an "api_key" given there into this field)
    api_key = models.CharField(max_length=500, blank=True, help_text="Endpoint key, sent as a Bearer token.")
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    # the table keeps the name it had while the class lived in training
    history = HistoricalRecords(table_name="training_historicalmodelversion", excluded_fields=["api_key"])

    class Meta:
        db_table = "training_modelversion"
        ordering = ["project", "name"]
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="modelversion_unique_name")]

    def __str__(self):
        return self.name

    def lineage(self) -> list["ModelVersion"]:
        """This version and its ancestors, base first."""
        chain, seen, node = [], set(), self
        while node is not None and node.pk not in seen:
            seen.add(node.pk)
            chain.append(node)
            node = node.parent
        return list(reversed(chain))


class Membership(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.ANNOTATOR)
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "project"], name="membership_unique")]

    def __str__(self):
        return f"{self.user} in {self.project} as {self.role}"


class Split(models.TextChoices):
    TRAIN = "train"
    EVAL = "eval"
    HOLDOUT = "holdout"


class Conversation(models.Model):
    """One agent conversation in OpenAI chat format, as imported."""

    # no index of its own: the unique (project, external_id) and the indexes below start with it
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="conversations", db_index=False
    )
    external_id = models.CharField(max_length=255)
    messages = models.JSONField()
    tools = models.JSONField(default=list, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    content_hash = models.CharField(max_length=64)
    split = models.CharField(max_length=10, choices=Split.choices, default=Split.TRAIN)
    priority = models.IntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "external_id"], name="conversation_unique_external_id"
            ),
        ]
        indexes = [
            models.Index(fields=["project", "content_hash"], name="conv_project_hash"),
            models.Index(fields=["project", "split", "id"], name="conv_project_split"),
            models.Index(fields=["project", "-priority", "id"], name="conv_project_priority"),
        ]

    def __str__(self):
        return f"{self.project.slug}/{self.external_id}"


class ModelResponse(models.Model):
    """What a model version said after the first `context_length` messages of a conversation."""

    # neither key has an index of its own: response_unique_per_context and response_model_created
    # start with them
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="responses", db_index=False
    )
    model_version = models.ForeignKey(
        "ModelVersion",
        null=True,
        blank=True,
        on_delete=models.RESTRICT,
        related_name="responses",
        db_index=False,
    )
    context_length = models.PositiveIntegerField(
        help_text="How many messages of the conversation it answers."
    )
    raw_text = models.TextField(blank=True)
    message = models.JSONField(help_text="Parsed assistant message: content, tool_calls, reasoning.")
    generation_settings = models.JSONField(default=dict, blank=True)
    response_hash = models.CharField(max_length=64)
    uncertainty = models.FloatField(null=True, blank=True, help_text="Stored score for most-uncertain-first.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "model_version", "context_length", "response_hash"],
                name="response_unique_per_context",
            ),
        ]
        indexes = [models.Index(fields=["model_version", "created_at"], name="response_model_created")]

    def __str__(self):
        return f"response {self.pk} to {self.conversation_id}"

    @property
    def context(self) -> list:
        return self.conversation.messages[: self.context_length]

    @property
    def message_as_list(self) -> list:
        return [self.message]


class TaxonomyCategory(models.Model):
    class FixRoute(models.TextChoices):
        """Which training data a category's corrections feed (training/snapshots/routing.py reads it)."""

        INHERIT = "", "as its parent (a top-level category: not routed)"
        SFT = "sft", "SFT: the correction as a training example"
        DPO = "dpo", "DPO: the correction over the model's output"
        BOTH = "both", "both SFT and DPO"
        NONE = "none", "neither (fixed outside the training data)"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="categories")
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children"
    )
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    root_cause = models.TextField(blank=True)
    recommended_fix = models.TextField(blank=True)
    fix_route = models.CharField(
        max_length=4,
        choices=FixRoute.choices,
        blank=True,
        default=FixRoute.INHERIT,
        help_text="Which snapshots a correction in this category feeds when routed by the taxonomy. "
        "Empty: the parent's route.",
    )
    active = models.BooleanField(default=True)
    position = models.PositiveIntegerField(default=0)
    history = HistoricalRecords()

    class Meta:
        ordering = ["project", "position", "name"]
        verbose_name_plural = "taxonomy categories"
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="category_unique_name")]

    def __str__(self):
        return self.name

    def clean(self):
        if self.parent_id and self.parent.project_id != self.project_id:
            raise ValidationError({"parent": "The parent category belongs to another project."})
        node, seen = self.parent, {self.pk}
        while node is not None:
            if node.pk in seen:
                raise ValidationError({"parent": "A category cannot be its own ancestor."})
            seen.add(node.pk)
            node = node.parent


class Status(models.TextChoices):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    APPROVED = "approved"
    REJECTED = "rejected"


class Label(models.Model):
    class Verdict(models.TextChoices):
        REASONABLE = "reasonable"
        UNREASONABLE = "unreasonable"

    # response, annotator and project have no index of their own: the unique constraint and the indexes
    # start with them
    response = models.ForeignKey(
        ModelResponse, on_delete=models.CASCADE, related_name="labels", db_index=False
    )
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="labels", db_index=False
    )
    # Copied from the response on save (they never change) so dashboards aggregate one table.
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="labels", editable=False, db_index=False
    )
    model_version = models.ForeignKey(
        "ModelVersion",
        null=True,
        blank=True,
        on_delete=models.RESTRICT,
        related_name="labels",
        editable=False,
    )
    verdict = models.CharField(max_length=20, choices=Verdict.choices, blank=True)
    categories = models.ManyToManyField(TaxonomyCategory, blank=True, related_name="labels")
    note = models.TextField(blank=True)
    time_spent_ms = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    draft = models.JSONField(
        default=dict, blank=True, help_text="Unsubmitted editor state (correction text)."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    history = HistoricalRecords(m2m_fields=[categories], excluded_fields=["draft"])

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["response", "annotator"], name="label_unique_per_annotator")
        ]
        indexes = [
            models.Index(fields=["annotator", "status"], name="label_annotator_status"),
            # the annotator's history page: their work, newest first
            models.Index(fields=["annotator", "-submitted_at"], name="label_annotator_submitted"),
            models.Index(fields=["status", "submitted_at"], name="label_status_submitted"),
            models.Index(fields=["project", "status", "submitted_at"], name="label_project_status_time"),
            models.Index(fields=["project", "model_version", "verdict"], name="label_project_model"),
        ]

    def __str__(self):
        return f"label {self.pk} ({self.verdict or 'no verdict'}, {self.status})"

    def save(self, *args, **kwargs):
        if self.project_id is None or (self.model_version_id is None and self.response_id):
            project_id, model_version_id = (
                ModelResponse.objects.filter(pk=self.response_id)
                .values_list("conversation__project_id", "model_version_id")
                .get()
            )
            self.project_id, self.model_version_id = project_id, model_version_id
        super().save(*args, **kwargs)

    def clean(self):
        if self.status != Status.DRAFT and not self.verdict:
            raise ValidationError({"verdict": "A submitted label needs a verdict."})


class Correction(models.Model):
    """The assistant message the annotator says the model should have produced."""

    label = models.OneToOneField(Label, on_delete=models.CASCADE, related_name="correction")
    message = models.JSONField(help_text="Assistant message: content and/or tool_calls (OpenAI format).")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords()

    def __str__(self):
        return f"correction for label {self.label_id}"

    @property
    def message_as_list(self) -> list:
        return [self.message]

    def clean(self):
        tools = self.label.response.conversation.tools or self.label.response.conversation.project.tools
        errors = validate_assistant_message(self.message, tools, check_schema=True)
        if errors:
            raise ValidationError({"message": [f"{e.field}: {e.message}" for e in errors]})


class Preference(models.Model):
    class Choice(models.TextChoices):
        A = "a", "A is better"
        B = "b", "B is better"
        TIE = "tie", "tie"
        BOTH_BAD = "both_bad", "both bad"

    response_a = models.ForeignKey(ModelResponse, on_delete=models.CASCADE, related_name="preferences_as_a")
    response_b = models.ForeignKey(ModelResponse, on_delete=models.CASCADE, related_name="preferences_as_b")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="preferences"
    )
    choice = models.CharField(max_length=10, choices=Choice.choices, blank=True)
    reason = models.TextField(blank=True)
    left_side = models.CharField(
        max_length=1, choices=[("a", "A shown left"), ("b", "B shown left")], default="a"
    )
    time_spent_ms = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(response_a=models.F("response_b")), name="preference_distinct_pair"
            ),
            models.UniqueConstraint(
                fields=["annotator", "response_a", "response_b"], name="preference_unique_per_annotator"
            ),
        ]
        indexes = [
            models.Index(fields=["annotator", "status"], name="pref_annotator_status"),
            models.Index(fields=["annotator", "-submitted_at"], name="pref_annotator_submitted"),
            # newest first per status: the review queue and the comparisons list walk it
            models.Index(fields=["status", "submitted_at", "id"], name="pref_status_submitted"),
        ]

    def __str__(self):
        return f"preference {self.pk} ({self.choice or 'open'})"

    def clean(self):
        a, b = self.response_a, self.response_b
        if a.pk == b.pk:
            raise ValidationError({"response_b": "A preference needs two different responses."})
        if a.conversation_id != b.conversation_id or a.context_length != b.context_length:
            raise ValidationError({"response_b": "Both responses must answer the same context."})
        if self.status != Status.DRAFT and not self.choice:
            raise ValidationError({"choice": "A submitted preference needs a choice."})


class Review(models.Model):
    class Decision(models.TextChoices):
        APPROVE = "approve"
        REJECT = "reject"

    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="reviews")
    label = models.ForeignKey(Label, null=True, blank=True, on_delete=models.CASCADE, related_name="reviews")
    preference = models.ForeignKey(
        Preference, null=True, blank=True, on_delete=models.CASCADE, related_name="reviews"
    )
    decision = models.CharField(max_length=10, choices=Decision.choices)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(label__isnull=False) & Q(preference__isnull=True))
                | (Q(label__isnull=True) & Q(preference__isnull=False)),
                name="review_exactly_one_target",
            ),
        ]

    def __str__(self):
        return f"{self.decision} by {self.reviewer}"


class ImportJob(Job):
    class Dialect(models.TextChoices):
        AUTO = "auto", "auto (each line's shape decides)"
        OPENAI = "openai", "OpenAI chat (conversations and chat-completion logs)"
        BFCL = "bfcl", "BFCL (test records + possible answers)"

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"
        CANCELLED = "cancelled"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="imports")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    file = models.FileField(upload_to="imports/%Y/%m/")
    original_name = models.CharField(max_length=255)
    default_split = models.CharField(max_length=10, choices=Split.choices, default=Split.TRAIN)
    # How lines are read (importers.parse_line): auto tells conversation lines, chat-completion log
    # records and BFCL test records apart per line; BFCL lines take their gold from answers_file.
    dialect = models.CharField(max_length=10, choices=Dialect.choices, default=Dialect.AUTO)
    answers_file = models.FileField(upload_to="imports/%Y/%m/", blank=True)
    status = models.CharField(max_length=20, choices=State.choices, default=State.QUEUED)
    size_bytes = models.BigIntegerField(default=0)
    # Everything below is committed together with each batch, so a killed worker resumes exactly.
    committed_offset = models.BigIntegerField(default=0)
    lines_read = models.PositiveIntegerField(default=0)
    conversations_created = models.PositiveIntegerField(default=0)
    responses_created = models.PositiveIntegerField(default=0)
    duplicates = models.PositiveIntegerField(default=0)
    error_count = models.PositiveIntegerField(default=0)

    SUCCESS = State.DONE

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        return f"import {self.pk} of {self.original_name}"

    @property
    def progress(self) -> float:
        if self.status == self.State.DONE:
            return 1.0
        return min(1.0, self.committed_offset / self.size_bytes) if self.size_bytes else 0.0

    @property
    def resume_hint(self) -> str:
        return f"Resume continues after line {self.lines_read:,}." if self.lines_read else ""


class ImportIssue(models.Model):
    """One rejected line of an import, with where and why."""

    job = models.ForeignKey(ImportJob, on_delete=models.CASCADE, related_name="issues")
    line = models.PositiveIntegerField()
    field = models.CharField(max_length=300, blank=True)
    message = models.TextField()

    class Meta:
        ordering = ["job", "line", "id"]
        indexes = [models.Index(fields=["job", "line"], name="importissue_job_line")]

    def __str__(self):
        return f"line {self.line}: {self.field} {self.message}"
