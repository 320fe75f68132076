"""Celery tasks of the loop: an online DPO run goes on the `training` queue (CELERY_TASK_ROUTES)."""

from celery import shared_task

from jobs import registry
from training.models import OnlineRun

from .online import run_online as run


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True)
def run_online(self, run_id: int):
    """Run an online DPO run (all its rounds). A duplicate delivery is a no-op."""
    result = run(run_id)
    return {"online_run": run_id, "status": result.status if result else "not claimed"}


registry.register("online_runs", OnlineRun, run_online)
