"""One lifecycle for every worker job: imports, snapshot builds, training jobs, online runs, eval runs.

A job is a row (jobs.models.Job) and the Celery task its kind registered (jobs.registry), which takes the
row's pk. Read top to bottom:

enqueue          send the task once the row is committed. If the broker cannot be reached the row is
                 failed and `waiting_for_queue`; requeue_waiting() sends it again once the broker is back.
claim            the worker takes the row: a new run token, attempts + 1, its name, a heartbeat. A queued
                 row is taken; a running one only when its worker is gone (silent for
                 JOB_HEARTBEAT_TIMEOUT_S, or a process of this host that has exited), so a duplicate
                 delivery does nothing and a killed worker's redelivery continues from what the row kept.
heartbeat        the owner is alive (and its progress); False when it must stop: cancelled, or another
                 attempt owns the row now. The worker runs inside `attempt`, which can also beat from
                 a thread through calls that cannot.
log, finish      the owner's log lines, and its last write.
cancel           a queued (or waiting) job is cancelled at once; a running one stops at its next heartbeat.
reap_stale       running rows whose worker went silent are failed; they can be resumed.
resume           a failed, cancelled or stalled job is queued again and its task sent.
requeue_waiting  every kind's rows that wait for the broker, queued again.
"""

import logging
import os
import socket
import threading
import uuid
from contextlib import contextmanager

from celery import current_app
from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from . import registry
from .models import CANCELLED, FAILED, QUEUED, RUNNING, Job, silent

logger = logging.getLogger(__name__)

QUEUE_UNAVAILABLE = "Could not reach the task queue"  # how the message of a job waiting for the broker begins
MAX_ATTEMPTS = 3  # a silent worker's job is taken over until it has had this many attempts, then it gives up
LOG_TAIL_CHARS = 8000
_ended: set[str] = set()  # run tokens of this process's attempts that stopped without their last write


def _end(rows, job: Job, status: str, message: str, reason: str, **fields) -> int:
    """End the job in `rows` (a queryset that pins the state it is ended from) with the kind's own columns."""
    return rows.update(
        status=status, message=message, finished_at=timezone.now(), **{**job.end_fields(reason), **fields}
    )


def _remember(job: Job, fields: dict) -> None:
    for name, value in fields.items():
        if not hasattr(value, "resolve_expression"):
            setattr(job, name, value)


# --- queueing ---------------------------------------------------------------------------------


def enqueue(job: Job) -> None:
    """Send the job's task when the current transaction commits (at once outside one). If the broker cannot
    be reached, the row says so (failed, waiting_for_queue) and requeue_waiting() sends it again later."""
    task = registry.kind_of(job).task
    model, pk = type(job), job.pk

    def send():
        try:
            task.delay(pk)
        except BrokerError as exc:
            logger.warning("%s(%s) not queued: %s", task.name, pk, exc)
            _end(
                model.objects.filter(pk=pk, status=QUEUED),
                job,
                FAILED,
                f"{QUEUE_UNAVAILABLE} ({exc}). Nothing has run yet; "
                "it is queued again once the queue is back.",
                "waiting",
                waiting_for_queue=True,
            )

    transaction.on_commit(send)


def broker_reachable() -> bool:
    try:
        with current_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=2)
        return True
    except Exception:  # noqa: BLE001 - any failure means: not now
        return False


def _requeue(job: Job, rows, message: str) -> bool:
    """Put the row back to queued (if `rows` still holds it) and send its task on commit."""
    with transaction.atomic():
        if not rows.update(
            status=QUEUED,
            finished_at=None,
            cancel_requested=False,
            waiting_for_queue=False,
            run_token="",
            message=message,
            **job.requeue_fields(),
        ):
            return False
        enqueue(job)
    return True


def resume(job: Job) -> None:
    """Queue a failed, cancelled or stalled job again and send its task. Its worker continues from what the
    row kept (a checkpoint, the last committed batch, the unfinished round). Raises ValidationError when the
    job cannot be resumed."""
    problem = job.resume_problem()
    resumable = Q(status__in=[FAILED, CANCELLED]) | silent(timezone.now())
    if problem or not _requeue(job, type(job).objects.filter(resumable, pk=job.pk), "Queued again."):
        raise ValidationError({"status": problem or "It changed meanwhile: reload the page."})
    job.refresh_from_db()


def requeue_waiting() -> dict:
    """Send again every job whose task could not be sent because the broker was unreachable. Returns
    counts per kind, or {"broker": "unavailable"} (nothing touched) while it still is."""
    if not broker_reachable():
        return {"broker": "unavailable"}
    counts = {}
    for kind in registry.kinds():
        waiting = kind.model.objects.filter(status=FAILED, waiting_for_queue=True)
        counts[kind.name] = sum(  # conditional updates: two sweeps at once queue a row once
            _requeue(
                job,
                waiting.filter(pk=job.pk),
                "Queued again: the task queue was unavailable when it was created.",
            )
            for job in waiting.order_by("pk")
        )
    if any(counts.values()):
        logger.info("re-queued after a broker outage: %s", counts)
    return counts


# --- the worker's side ------------------------------------------------------------------------


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _exited(worker: str) -> bool:
    """The row's worker was a process of this host that no longer exists (killed, out of memory)."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists, as another user's process
        return False
    return False


def claim(model: type[Job], pk: int) -> Job | None:
    """Take the job for this process; None when there is nothing to do (finished, cancelled, gone, or
    owned by a live worker). A row taken over from a dead worker after MAX_ATTEMPTS attempts is failed
    instead: the work keeps killing its worker."""
    job = (
        model.objects.filter(pk=pk)
        .only("status", "run_token", "worker", "heartbeat_at", "attempts", "cancel_requested")
        .first()
    )
    if job is None or job.status not in (QUEUED, RUNNING):
        return None
    owned = model.objects.filter(pk=pk, status=job.status, run_token=job.run_token)
    if job.status == RUNNING:
        gone = job.stalled or job.run_token in _ended or _exited(job.worker)
        if job.cancel_requested or not gone:
            return None
        if job.attempts >= MAX_ATTEMPTS:
            _end(
                owned,
                job,
                FAILED,
                f"Gave up after {job.attempts} attempts: the worker stopped each time "
                "(out of memory or killed?). Check the worker's log, then resume.",
                "gave_up",
            )
            return None
    now = timezone.now()
    if not owned.update(
        status=RUNNING,
        run_token=uuid.uuid4().hex,
        attempts=F("attempts") + 1,
        worker=worker_name(),
        heartbeat_at=now,
        started_at=now,
        message="",
        waiting_for_queue=False,
    ):
        return None  # another delivery took it first
    _ended.discard(job.run_token)
    return model.objects.get(pk=pk)


def heartbeat(job: Job, **fields) -> bool:
    """The owner is alive; `fields` (its progress) are written with the beat. False when the worker must
    stop: the job was cancelled (job.cancel_requested is then True; the progress is still written) or
    another attempt owns it now (or it is gone)."""
    now = timezone.now()
    owned = type(job).objects.filter(pk=job.pk, run_token=job.run_token, status=RUNNING)
    if owned.filter(cancel_requested=False).update(heartbeat_at=now, **fields):
        _remember(job, {"heartbeat_at": now, **fields})
        return True
    if owned.update(heartbeat_at=now, **fields):
        _remember(job, {"heartbeat_at": now, "cancel_requested": True, **fields})
    return False


@contextmanager
def attempt(job: Job, beat_every: float | None = None):
    """The worker's hold on a job it claimed. With `beat_every`, a thread beats the heartbeat that often
    while the block runs, so a long call that cannot beat itself (loading a model, a guard check, a training
    job run in this process) never looks like a dead worker. An exception escaping the block (the database
    went away, the process is shutting down) ends the attempt: a retry or redelivery in this process then
    takes the job over at once instead of waiting out the heartbeat timeout."""
    stop = threading.Event()
    thread = None
    if beat_every:
        thread = threading.Thread(
            target=_beat,
            args=(type(job), job.pk, job.run_token, stop, beat_every),
            daemon=True,
            name=f"heartbeat-{type(job).__name__}-{job.pk}",
        )
        thread.start()
    try:
        yield job
    except BaseException:
        _ended.add(job.run_token)
        raise
    finally:
        stop.set()
        if thread is not None:
            thread.join(timeout=5)


def _beat(model: type[Job], pk: int, token: str, stop: threading.Event, every: float) -> None:
    try:
        while not stop.wait(every):
            try:
                model.objects.filter(pk=pk, run_token=token, status=RUNNING).update(
                    heartbeat_at=timezone.now()
                )
            except DatabaseError as exc:  # the next beat may get through; the reaper decides, not this thread
                logger.warning("heartbeat of %s %s failed: %s", model.__name__, pk, exc)
    finally:
        connection.close()


def log(job: Job, line: str) -> None:
    """Append a timestamped line to the job's log (its last LOG_TAIL_CHARS characters are kept)."""
    job.log_tail = (job.log_tail + f"[{timezone.localtime():%H:%M:%S}] {line}\n")[-LOG_TAIL_CHARS:]
    type(job).objects.filter(pk=job.pk, run_token=job.run_token).update(log_tail=job.log_tail)


def finish(job: Job, status: str, message: str, **fields) -> bool:
    """The owner's last write: the final status, its message and e.g. results. False (nothing written)
    when another attempt owns the job now."""
    now = timezone.now()
    fields = {**job.end_fields("finished"), **fields}
    if (
        not type(job)
        .objects.filter(pk=job.pk, run_token=job.run_token)
        .update(status=status, message=message, finished_at=now, **fields)
    ):
        return False
    _remember(job, {"status": status, "message": message, "finished_at": now, **fields})
    return True


# --- people and sweeps ------------------------------------------------------------------------


def cancel(job: Job) -> None:
    """A queued job (or one waiting for the broker) is cancelled at once; a running one is asked to stop
    at its next heartbeat, keeping what it did so far."""
    model = type(job)
    waiting = Q(status=QUEUED) | Q(status=FAILED, waiting_for_queue=True)
    if not _end(
        model.objects.filter(waiting, pk=job.pk),
        job,
        CANCELLED,
        "Cancelled before it started.",
        "cancelled",
        waiting_for_queue=False,
    ):
        model.objects.filter(pk=job.pk, status=RUNNING).update(cancel_requested=True)
    job.refresh_from_db()


def reap_stale(model: type[Job], **filters) -> int:
    """Fail the running jobs of a kind whose worker went silent for JOB_HEARTBEAT_TIMEOUT_S; they can be
    resumed. `filters` narrow the rows (project=…). Returns how many were reaped."""
    reaped = 0
    for job in model.objects.filter(silent(timezone.now()), **filters):
        since = f"since {timezone.localtime(job.heartbeat_at):%H:%M:%S}" if job.heartbeat_at else "at all"
        reaped += _end(
            model.objects.filter(pk=job.pk, status=RUNNING, run_token=job.run_token),
            job,
            FAILED,
            (
                f"The worker {job.worker or ''} stopped responding: no heartbeat {since}. {job.resume_hint}"
            ).strip(),
            "stale",
        )
    return reaped


def reap_all() -> dict:
    """reap_stale over every kind: {kind name: reaped}."""
    return {kind.name: reap_stale(kind.model) for kind in registry.kinds()}
