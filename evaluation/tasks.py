"""Celery tasks of the evaluation app; CELERY_TASK_ROUTES sends them to the `eval` queue."""

import logging

from celery import shared_task
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from config.queueing import send_on_commit

from .models import EvalRun

log = logging.getLogger(__name__)


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=3,
             autoretry_for=(OperationalError, InterfaceError), retry_backoff=10, retry_jitter=True)
def run_eval(self, run_id: int):
    """Run (or resume) one eval run. A redelivery after a killed worker resumes after the last
    committed batch; a finished run is left alone."""
    from .runner import run_eval as run

    result = run(run_id)
    return {"run": run_id, "status": result.status if result else "deleted"}


def start_run(run: EvalRun):
    """Queue the run once its row is committed; a broker outage is reported on the run."""
    send_on_commit(run_eval, run.pk, lambda exc: EvalRun.objects.filter(
        pk=run.pk, status=EvalRun.State.QUEUED).update(
        status=EvalRun.State.FAILED, finished_at=timezone.now(),
        message=f"Could not reach the task queue ({exc}). Nothing was run; use “Run again” once the "
        "queue is back.",
    ))


def request_eval_after_training(model_version_id: int, note: str = ""):
    """For training jobs: queue the project's default suite on a freshly trained model version.

    Returns the EvalRun, or None when automatic runs are off or the project has no suite.
    Never raises for a bad setup: a training job that succeeded must stay succeeded.
    """
    from django.core.exceptions import ValidationError

    from training.models import ModelVersion

    from .runner import request_eval

    mv = ModelVersion.objects.select_related("project").filter(pk=model_version_id).first()
    if mv is None:
        return None
    try:
        return request_eval(mv, trigger=EvalRun.Trigger.TRAINING, note=note)
    except ValidationError as exc:
        log.warning("no automatic eval for %s: %s", mv, exc)
        return None
