from celery import shared_task

from config.queueing import send_on_commit

from .importers import run_import
from .models import ImportJob


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=5)
def import_conversations(self, job_id: int):
    """Import (or resume) one ImportJob; a redelivery after a killed worker resumes at the last batch."""
    job = run_import(job_id)
    return {"job": job.pk, "status": job.status}


def start_import(job: ImportJob):
    """Queue the import once the job row is committed; a broker outage is reported on the job."""
    send_on_commit(import_conversations, job.pk, lambda exc: ImportJob.objects.filter(pk=job.pk).update(
        status=ImportJob.State.FAILED,
        message=f"Could not reach the task queue ({exc}). Nothing was imported yet; the upload is kept and "
        "queued again once the queue is back (manage.py requeue_waiting).",
    ))


@shared_task
def ping_database(note: str) -> int:
    """Write a row from the worker: the smallest proof that broker, worker and database agree."""
    from django.contrib.auth import get_user_model

    from training.models import ModelVersion

    from .models import Project

    project, _ = Project.objects.get_or_create(slug="worker-ping", defaults={"name": "Worker ping"})
    mv = ModelVersion.objects.create(project=project, name=note, notes="written by a Celery worker")
    get_user_model()  # the app registry is ready in the worker
    return mv.pk
