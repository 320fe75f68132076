"""The queue: tasks (a response to label, or two to compare), slots (who holds one), skips and a lead's
gold decision (Adjudication)."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from simple_history.models import HistoricalRecords

from .core import Label, ModelResponse, Preference, Project, TaxonomyCategory


class Task(models.Model):
    """One unit of annotation work: label a response, or compare two responses to the same context."""

    class Kind(models.TextChoices):
        LABEL = "label"
        COMPARE = "compare"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="tasks")
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.LABEL)
    response = models.ForeignKey(ModelResponse, on_delete=models.CASCADE, related_name="tasks")
    response_b = models.ForeignKey(
        ModelResponse, null=True, blank=True, on_delete=models.CASCADE, related_name="tasks_as_b"
    )
    priority = models.IntegerField(default=0)
    completed = models.PositiveSmallIntegerField(default=0, help_text="Submitted slots so far.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["kind", "response", "response_b"], name="task_unique_item"),
            models.UniqueConstraint(
                fields=["kind", "response"],
                condition=Q(response_b__isnull=True),
                name="task_unique_label_item",
            ),
            models.CheckConstraint(
                condition=(Q(kind="label") & Q(response_b__isnull=True))
                | (Q(kind="compare") & Q(response_b__isnull=False)),
                name="task_kind_matches_items",
            ),
        ]

    def __str__(self):
        return f"{self.kind} task {self.pk}"


class Slot(models.Model):
    """One of a task's `overlap` places. The queue hands out slots; a taken slot is an expiring lock.

    Ordering columns are copied from the task so that the next free slot is one index scan.
    """

    class State(models.TextChoices):
        FREE = "free"
        LOCKED = "locked"
        DONE = "done"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="slots")
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="slots")
    index = models.PositiveSmallIntegerField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.FREE)
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="slots"
    )
    reserved_for = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="reserved_slots",
    )
    locked_until = models.DateTimeField(null=True, blank=True)
    priority = models.IntegerField(default=0)
    progress = models.PositiveSmallIntegerField(default=0)
    order_key = models.FloatField(default=0.0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["task", "index"], name="slot_unique_index"),
            models.UniqueConstraint(
                fields=["task", "annotator"],
                condition=Q(annotator__isnull=False),
                name="slot_one_per_annotator",
            ),
        ]
        indexes = [
            models.Index(
                fields=["project", "-priority", "-progress", "order_key", "id"],
                condition=Q(state="free", reserved_for__isnull=True),
                name="slot_free_queue",
            ),
            models.Index(
                fields=["reserved_for", "state"],
                condition=Q(reserved_for__isnull=False),
                name="slot_reserved",
            ),
            models.Index(
                fields=["project", "locked_until"], condition=Q(state="locked"), name="slot_locked_expiry"
            ),
            models.Index(fields=["annotator", "state"], name="slot_annotator_state"),
        ]

    def __str__(self):
        return f"slot {self.index} of task {self.task_id} ({self.state})"


class Skip(models.Model):
    """An annotator passed on a task: it goes to the back of their queue."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="skips")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="skips")
    skipped_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["task", "annotator"], name="skip_unique")]
        indexes = [models.Index(fields=["annotator", "skipped_at"], name="skip_annotator_time")]

    def __str__(self):
        return f"{self.annotator} skipped task {self.task_id}"


class Adjudication(models.Model):
    """A lead's final (gold) decision on an item annotators disagreed on."""

    task = models.OneToOneField(Task, on_delete=models.CASCADE, related_name="adjudication")
    lead = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="adjudications")
    verdict = models.CharField(max_length=20, choices=Label.Verdict.choices, blank=True)
    categories = models.ManyToManyField(TaxonomyCategory, blank=True, related_name="adjudications")
    choice = models.CharField(max_length=10, choices=Preference.Choice.choices, blank=True)
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords(m2m_fields=[categories])

    def __str__(self):
        return f"gold decision on task {self.task_id}"
