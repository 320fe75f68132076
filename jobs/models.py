"""The columns every worker job keeps: an import, a snapshot build, a training job, an online run and an
eval run each inherit `Job`, so jobs.lifecycle can queue, claim, beat, log, cancel, reap and resume any of
them the same way.

Each kind keeps its own `status` choices (and words for success: "done", "ready", "succeeded", named by
its `SUCCESS`); the lifecycle itself only ever writes the four values below, which every kind has.
"""

import datetime as dt

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

QUEUED = "queued"
RUNNING = "running"
FAILED = "failed"
CANCELLED = "cancelled"


def heartbeat_timeout() -> dt.timedelta:
    """How long a running job's worker may stay silent before it counts as gone (one setting, every kind)."""
    return dt.timedelta(seconds=settings.JOB_HEARTBEAT_TIMEOUT_S)


def silent(now: dt.datetime) -> Q:
    """Running rows whose worker has not been heard from within the timeout."""
    return Q(status=RUNNING) & (Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=now - heartbeat_timeout()))


class Job(models.Model):
    SUCCESS = "succeeded"  # the kind's status for "finished well"

    status = models.CharField(max_length=20, default=QUEUED)
    message = models.TextField(blank=True)
    waiting_for_queue = models.BooleanField(
        default=False,
        help_text="Its task could not be sent (the broker was down): sent again once it is back.",
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    worker = models.CharField(
        max_length=200, blank=True, help_text="host:pid of the process that claimed it last."
    )
    run_token = models.CharField(max_length=32, blank=True, help_text="The worker attempt that owns the job.")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    log_tail = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    @property
    def finished(self) -> bool:
        return self.status not in (QUEUED, RUNNING)

    @property
    def stalled(self) -> bool:
        """Running, but its worker has been silent for longer than JOB_HEARTBEAT_TIMEOUT_S."""
        beat = self.heartbeat_at
        return self.status == RUNNING and (beat is None or timezone.now() - beat > heartbeat_timeout())

    def resume_problem(self) -> str:
        """Why the job cannot be queued again ("" when it can): only a failed, cancelled or stalled one
        can."""
        if self.status in (FAILED, CANCELLED) or self.stalled:
            return ""
        state = self.status.replace("_", " ")
        return f"Only a failed, cancelled or stalled job can be queued again; this one's status is {state}."

    @property
    def resumable(self) -> bool:
        return not self.resume_problem()

    @property
    def resume_hint(self) -> str:
        """What Resume does for this kind, added to the message of a job whose worker went silent."""
        return ""

    def end_fields(self, reason: str) -> dict:
        """The kind's own columns written when the job ends (reason: "finished" by its worker, whose own
        columns win; "waiting" for the broker, "gave_up", "stale" or "cancelled" by the lifecycle)."""
        return {}

    def requeue_fields(self) -> dict:
        """The kind's own columns reset when the job is queued again."""
        return {}
