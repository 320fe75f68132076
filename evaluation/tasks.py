"""Celery tasks of the evaluation app; CELERY_TASK_ROUTES sends them to the `eval` queue."""

import logging

from celery import shared_task
from django.db import InterfaceError, OperationalError

from jobs import registry

from .models import EvalRun

log = logging.getLogger(__name__)


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=3,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=10,
    retry_jitter=True,
)
def run_eval(self, run_id: int):
    """Run (or resume) one eval run. A redelivery after a killed worker resumes after the last
    committed batch; a finished run is left alone."""
    from .runner import run_eval as run

    result = run(run_id)
    return {"run": run_id, "status": result.status if result else "deleted"}


registry.register("eval_runs", EvalRun, run_eval)
