"""The periodic sweeps over every job kind (CELERY_BEAT_SCHEDULE runs them)."""

from celery import shared_task

from . import lifecycle


@shared_task
def reap_stale_jobs() -> dict:
    """Fail the running jobs whose worker stopped sending heartbeats (they can be resumed)."""
    return lifecycle.reap_all()


@shared_task
def requeue_waiting_jobs() -> dict:
    """Queue again the jobs a broker outage left waiting."""
    return lifecycle.requeue_waiting()
