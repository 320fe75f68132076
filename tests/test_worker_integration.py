"""A real Celery worker process: consumes from the configured broker (Redis in CI), writes to the test DB."""

import pytest
from django.core.files.base import ContentFile

from annotator.models import Conversation, ImportJob, ModelVersion
from annotator.tasks import import_conversations, ping_database

from .conftest import conversation_record, jsonl
from .worker import celery_worker, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_worker_consumes_a_task_and_writes_to_the_database(project):
    with celery_worker() as (queue, _proc):
        ping_database.apply_async(args=["hello-from-test"], queue=queue)
        row = wait_for(
            lambda: ModelVersion.objects.filter(name="hello-from-test").first(),
            what="the worker's row",
            log_queue=queue,
        )
        assert row.notes == "written by a Celery worker"

        data = jsonl([conversation_record(i) for i in range(50)] + ["{broken"])
        job = ImportJob(project=project, original_name="w.jsonl", size_bytes=len(data))
        job.file.save("w.jsonl", ContentFile(data), save=False)
        job.save()
        import_conversations.apply_async(args=[job.pk], queue=queue)
        wait_for(lambda: ImportJob.objects.get(pk=job.pk).finished, what="the import", log_queue=queue)
    job.refresh_from_db()
    assert job.status == "done" and job.conversations_created == 50 and job.error_count == 1
    assert Conversation.objects.filter(project=project).count() == 50
