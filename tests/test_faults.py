"""Faults: a worker SIGKILLed mid-import and mid-training, and Redis lost while people work.

The snapshot build killed mid-stream is tests/test_datasets_worker.py. A PostgreSQL restart needs
a throwaway cluster and is in benchmarks/faults.py (results in benchmarks/results/faults.json).
"""

import os
import shutil
import signal
import time

import pytest
from django.core.files.base import ContentFile
from django.db import transaction

from annotator import assignment
from annotator.models import Conversation, ImportJob, Label, ModelResponse, ModelVersion, Task
from annotator.tasks import import_conversations
from jobs import lifecycle
from training.models import DatasetSnapshot, TrainingJob
from training.snapshots.build import create_snapshot
from training.tasks import run_training

from .conftest import conversation_record, jsonl, make_conversation
from .test_training import base, sft_snapshot, tiny_model  # noqa: F401 - fixtures
from .test_training import job as training_job
from .worker import celery_worker, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def upload(project, data: bytes, name="big.jsonl") -> ImportJob:
    job = ImportJob(project=project, original_name=name, size_bytes=len(data))
    job.file.save(name, ContentFile(data), save=False)
    job.save()
    return job


def test_an_import_killed_mid_way_keeps_what_its_offset_says_and_resumes_without_loss_or_duplicates(
    project, media
):
    n = 3000
    data = jsonl([conversation_record(i) for i in range(n)])
    job = upload(project, data)
    env = {"MEDIA_ROOT": str(media), "IMPORT_BATCH_SIZE": "10"}  # many small batches: caught mid-file
    with celery_worker(extra_env=env) as (queue, proc):
        import_conversations.apply_async(args=[job.pk], queue=queue)
        wait_for(
            lambda: ImportJob.objects.filter(pk=job.pk, conversations_created__gt=0).exists(),
            interval=0.02,
            what="the first committed batch",
            log_queue=queue,
        )
        os.kill(proc.pid, signal.SIGKILL)  # no cleanup of any kind
        proc.wait()
    job.refresh_from_db()
    assert job.status == "running" and 0 < job.conversations_created < n  # not done, not failed: resumable
    # What is in the database is exactly what the job recorded, up to a line boundary of the file.
    assert Conversation.objects.filter(project=project).count() == job.conversations_created == job.lines_read
    assert ModelResponse.objects.filter(conversation__project=project).count() == job.responses_created
    assert (
        data[: job.committed_offset].count(b"\n") == job.lines_read
        and data[job.committed_offset - 1 : job.committed_offset] == b"\n"
    )

    with celery_worker(extra_env=env) as (queue, _proc):
        import_conversations.apply_async(args=[job.pk], queue=queue)  # the broker's redelivery
        wait_for(
            lambda: ImportJob.objects.get(pk=job.pk).finished, what="the resumed import", log_queue=queue
        )
    job.refresh_from_db()
    assert job.status == "done" and job.attempts == 2, job.message
    assert job.conversations_created == n and job.duplicates == 0 and job.error_count == 0
    conversations = Conversation.objects.filter(project=project)
    assert conversations.count() == n and conversations.values("external_id").distinct().count() == n
    assert ModelResponse.objects.filter(conversation__project=project).count() == n
    assert Task.objects.filter(project=project, kind="label").count() == n  # queued once each


def test_a_training_worker_killed_is_reaped_as_failed_and_resumes_to_the_end(
    project,
    base,  # noqa: F811 - the fixture imported above
    sft_snapshot,  # noqa: F811
    settings,
):
    j = training_job(project, base, sft_snapshot, max_steps=30, save_steps=4, logging_steps=1)
    with celery_worker() as (queue, proc):
        run_training.apply_async(args=[j.pk], queue=queue)

        def past_a_checkpoint():
            job = TrainingJob.objects.get(pk=j.pk)
            last = job.checkpoints.order_by("-step").first()
            return last is not None and job.step > last.step

        wait_for(
            past_a_checkpoint, timeout=300, interval=0.1, what="training past a checkpoint", log_queue=queue
        )
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    j.refresh_from_db()
    assert j.status == "running" and 0 < j.step < 30  # nobody has noticed yet
    killed_at = j.step

    settings.JOB_HEARTBEAT_TIMEOUT_S = 1
    time.sleep(1.5)
    assert lifecycle.reap_stale(TrainingJob) == 1
    j.refresh_from_db()
    assert j.status == "failed" and "stopped responding" in j.message and j.resumable
    last = j.checkpoints.order_by("-step").first().step
    assert f"Resume continues from the checkpoint at step {last}" in j.message and last <= killed_at

    lifecycle.resume(j)  # also sent to the training queue; this test's worker listens on its own
    with celery_worker() as (queue, _proc):
        run_training.apply_async(args=[j.pk], queue=queue)
        wait_for(
            lambda: TrainingJob.objects.get(pk=j.pk).finished,
            timeout=400,
            what="the resumed job",
            log_queue=queue,
        )
    j.refresh_from_db()
    assert j.status == "succeeded" and j.step == 30 and j.attempts == 2, j.message
    assert f"resuming from checkpoint {last}" in j.log_tail
    steps = list(j.checkpoints.values_list("step", flat=True))
    assert len(steps) == len(set(steps)) and max(steps) == 30
    assert ModelVersion.objects.filter(made_by_jobs=j).count() == 1  # registered once


# --- Redis lost -------------------------------------------------------------------------------


@pytest.fixture
def private_redis(settings):
    """A redis-server of our own on a free port (never the shared one) as the cache and the broker."""
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed")
    from benchmarks.load_run import PrivateRedis
    from config.celery import app

    redis = PrivateRedis().start()
    settings.CACHES = {
        "default": {
            "BACKEND": "config.cache.ResilientRedisCache",
            "LOCATION": redis.url,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 2},
        }
    }
    settings.DASHBOARD_CACHE_SECONDS = 300
    old_broker = app.conf.broker_url

    def use_broker(url):
        app.conf.broker_url = url
        app._pool = None  # the connection pools are per URL: drop the old ones
        app.amqp._producer_pool = None

    use_broker(redis.url)
    try:
        yield redis
    finally:
        use_broker(old_broker)
        redis.close()


def queue_lengths(redis, *queues) -> dict:
    import redis as redis_py

    client = redis_py.Redis(port=redis.port)
    return {q: client.llen(q) for q in queues}


def test_with_redis_down_annotation_goes_on_jobs_say_why_and_are_queued_again_once_it_is_back(
    project, members, media, client, private_redis
):
    project.overlap = 2
    project.save()
    for i in range(3):
        make_conversation(project, i, n_responses=2)
    assignment.sync_tasks(project)
    annotator, lead, admin = members["annotator"], members["lead"], members["admin"]
    client.force_login(lead)
    assert client.get("/p/sales/dashboards/").status_code == 200  # computed and cached in Redis

    private_redis.stop()
    # Annotation keeps working: next task, the page, submit.
    client.force_login(annotator)
    task_url = client.get("/p/sales/next/")["Location"]
    assert client.get(task_url).status_code == 200
    assert (
        client.post(task_url + "submit/", {"verdict": "reasonable", "time_spent_ms": "4000"}).status_code
        == 302
    )
    assert Label.objects.filter(annotator=annotator, status="submitted").count() == 1
    assert client.get("/p/sales/next/").status_code == 302
    # Leads' dashboards are computed without the cache; /healthz says what is wrong.
    client.force_login(lead)
    for page in ("", "annotators/", "agreement/"):
        assert client.get(f"/p/sales/dashboards/{page}").status_code == 200
    health = client.get("/healthz")
    assert health.status_code == 503 and health.json()["checks"]["broker"]["ok"] is False

    # Job submissions fail with the reason on their row, quickly.
    started = time.monotonic()
    with transaction.atomic():
        imp = upload(project, jsonl([conversation_record(100 + i) for i in range(20)]), "late.jsonl")
        lifecycle.enqueue(imp)
    snapshot = create_snapshot(project, admin, {"kind": "sft", "filters": {"include_reasonable": True}})
    mv = ModelVersion.objects.create(project=project, name="base-for-outage", origin="base")
    ready = DatasetSnapshot.objects.create(
        project=project, kind="sft", version=99, layout="trl_messages", status="ready", sha256="0" * 64
    )
    with transaction.atomic():
        tj = TrainingJob.objects.create(
            project=project, name="during the outage", stage="sft", base_version=mv, train_snapshot=ready
        )
        lifecycle.enqueue(tj)
    assert time.monotonic() - started < 30
    for row in (imp, snapshot, tj):
        row.refresh_from_db()
        assert row.status == "failed" and row.waiting_for_queue, (row, row.message)
        assert row.message.startswith(lifecycle.QUEUE_UNAVAILABLE), row.message
    assert snapshot.get_failure_display() == "task queue unavailable"
    assert lifecycle.requeue_waiting() == {"broker": "unavailable"}  # nothing touched while it is still down

    private_redis.start()  # same port, empty: whatever was in it is gone
    nothing = {"imports": 0, "snapshots": 0, "training_jobs": 0, "online_runs": 0, "eval_runs": 0}
    assert lifecycle.requeue_waiting() == {**nothing, "imports": 1, "snapshots": 1, "training_jobs": 1}
    for row in (imp, snapshot, tj):
        row.refresh_from_db()
        assert row.status == "queued", (row, row.message)
    assert queue_lengths(private_redis, "default", "exports", "training") == {
        "default": 1,
        "exports": 1,
        "training": 1,
    }
    assert lifecycle.requeue_waiting() == nothing  # once only

    env = {"MEDIA_ROOT": str(media), "CELERY_BROKER_URL": private_redis.url, "REDIS_URL": private_redis.url}
    with celery_worker(queues="default,exports", extra_env=env) as (queue, _proc):
        wait_for(
            lambda: (
                ImportJob.objects.get(pk=imp.pk).finished
                and DatasetSnapshot.objects.get(pk=snapshot.pk).finished
            ),
            what="the re-queued import and build",
            log_queue=queue,
        )
    imp.refresh_from_db()
    snapshot.refresh_from_db()
    assert imp.status == "done" and imp.conversations_created == 20, imp.message
    assert snapshot.failure != DatasetSnapshot.Failure.QUEUE and snapshot.attempts == 1, snapshot.message
