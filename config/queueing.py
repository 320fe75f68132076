"""Handing a job's row to a Celery worker: once the row is committed, never silently, and again
once the broker is back.

A job whose task could not be sent (the broker was down) is marked failed on its row with a
message that starts with QUEUE_UNAVAILABLE, so the page says why nothing runs. `requeue_waiting()`
(`manage.py requeue_waiting`, or the `config.queueing.requeue_waiting_jobs` task on a beat
schedule) puts those rows back to `queued` and sends their tasks again: no upload, snapshot,
training job or eval run is lost to an outage.
"""

import logging

from celery import shared_task
from django.db import transaction
from kombu.exceptions import OperationalError as BrokerError

log = logging.getLogger(__name__)

QUEUE_UNAVAILABLE = "Could not reach the task queue"  # how every start_* helper's broker-error message begins


def send_on_commit(task, pk: int, on_broker_error) -> None:
    """Queue `task(pk)` when the current transaction commits. If the broker cannot be reached,
    `on_broker_error(exc)` records that on the row, so the user sees why nothing runs."""

    def send():
        try:
            task.delay(pk)
        except BrokerError as exc:
            log.warning("%s(%s) not queued: %s", task.name, pk, exc)
            on_broker_error(exc)

    transaction.on_commit(send)


def broker_reachable() -> bool:
    from config.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=2)
        return True
    except Exception:  # noqa: BLE001 - any failure means: not now
        return False


def _waiting_kinds():
    """(name, model, rows that failed for want of a broker, fields that put one back in the queue, start)."""
    from django.db.models import Q

    from annotator.models import ImportJob
    from annotator.tasks import start_import
    from evaluation.models import EvalRun
    from evaluation.tasks import start_run
    from training.models import DatasetSnapshot, TrainingJob
    from training.tasks import start_build, start_training

    lost = Q(status="failed", message__startswith=QUEUE_UNAVAILABLE)
    return [
        ("imports", ImportJob, lost, {"status": "queued", "finished_at": None}, start_import),
        ("snapshots", DatasetSnapshot, Q(status="failed", failure=DatasetSnapshot.Failure.QUEUE),
         {"status": "queued", "failure": "", "finished_at": None}, start_build),
        ("training_jobs", TrainingJob, lost, {"status": "queued", "finished_at": None}, start_training),
        ("eval_runs", EvalRun, lost, {"status": "queued", "finished_at": None}, start_run),
    ]


def requeue_waiting() -> dict:
    """Send again every job that failed only because the broker was unreachable. Returns counts per
    kind, or {"broker": "unavailable"} (nothing touched) while it still is."""
    if not broker_reachable():
        return {"broker": "unavailable"}
    counts = {}
    for name, model, lost, reset, start in _waiting_kinds():
        counts[name] = 0
        for pk in model.objects.filter(lost).order_by("pk").values_list("pk", flat=True):
            with transaction.atomic():
                # Conditional update: two sweeps at once queue a row once.
                if model.objects.filter(lost, pk=pk).update(
                        **reset, message="Queued again: the task queue was unavailable when it was created."):
                    start(model.objects.get(pk=pk))  # sends on commit; a new outage is recorded again
                    counts[name] += 1
    if any(counts.values()):
        log.info("re-queued after a broker outage: %s", counts)
    return counts


@shared_task
def requeue_waiting_jobs() -> dict:
    """Periodic (celery beat, e.g. every minute): re-queue jobs a broker outage left waiting."""
    return requeue_waiting()
