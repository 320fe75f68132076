from celery import shared_task

from jobs import registry

from .importers import run_import
from .models import ImportJob


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=5)
def import_conversations(self, job_id: int):
    """Import (or resume) one ImportJob; a redelivery after a killed worker resumes at the last batch."""
    job = run_import(job_id)
    return {"job": job.pk, "status": job.status}


registry.register("imports", ImportJob, import_conversations)


@shared_task
def ping_database(note: str) -> int:
    """Write a row from the worker: the smallest proof that broker, worker and database agree."""
    from django.contrib.auth import get_user_model

    from .models import ModelVersion, Project

    project, _ = Project.objects.get_or_create(slug="worker-ping", defaults={"name": "Worker ping"})
    mv = ModelVersion.objects.create(project=project, name=note, notes="written by a Celery worker")
    get_user_model()  # the app registry is ready in the worker
    return mv.pk
