"""Snapshot builds in a real Celery worker process, including a worker killed (SIGKILL) mid-build."""

import os
import signal

import pytest

from annotator.models import Conversation, Correction, Label, ModelResponse, content_hash
from training.models import DatasetSnapshot
from training.snapshots import build as snapshot_build
from training.snapshots import storage
from training.snapshots.build import create_snapshot
from training.tasks import build_snapshot

from .test_datasets_factories import SYSTEM, assistant, call, model_version
from .worker import celery_worker, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def seed(project, annotator, n):
    """n approved corrections, inserted in bulk."""
    mv = model_version(project)
    convs = Conversation.objects.bulk_create(
        [
            Conversation(
                project=project,
                external_id=f"w-{i}",
                tools=project.tools,
                split="train",
                messages=[SYSTEM, {"role": "user", "content": f"Is W-{i} in stock?"}],
                content_hash=content_hash(i),
            )
            for i in range(n)
        ]
    )
    responses = ModelResponse.objects.bulk_create(
        [
            ModelResponse(
                conversation=c,
                model_version=mv,
                context_length=2,
                raw_text="",
                message={"role": "assistant", "content": "Yes, it is."},
                response_hash=content_hash(c.pk),
            )
            for c in convs
        ]
    )
    labels = Label.objects.bulk_create(
        [
            Label(
                response=r,
                annotator=annotator,
                project=project,
                model_version=mv,
                verdict="unreasonable",
                status="approved",
            )
            for r in responses
        ]
    )
    Correction.objects.bulk_create(
        [
            Correction(label=lab, message=assistant(None, [call("check_inventory", {"sku": f"W-{i}"})]))
            for i, lab in enumerate(labels)
        ]
    )


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def test_a_worker_killed_mid_build_leaves_nothing_ready_and_the_redelivery_builds_it(project, members, media):
    seed(project, members["annotator"], 1500)
    victim = create_snapshot(project, members["admin"], {"kind": "sft"}, start=False)
    final = storage.media_path(storage.file_name_for(victim))

    # one source record per chunk: slow enough to be caught mid-stream
    with celery_worker(extra_env={"MEDIA_ROOT": str(media), "DATASET_EXPORT_CHUNK_SIZE": "1"}) as (
        queue,
        proc,
    ):
        build_snapshot.apply_async(args=[victim.pk], queue=queue)
        wait_for(
            lambda: DatasetSnapshot.objects.filter(pk=victim.pk, status="running", rows_done__gt=0).exists(),
            interval=0.05,
            what="the build to start writing",
            log_queue=queue,
        )
        os.kill(proc.pid, signal.SIGKILL)  # no cleanup of any kind
        proc.wait()
    victim.refresh_from_db()
    assert victim.status == "running" and 0 < victim.rows_done < 1500
    assert not victim.file and not victim.sha256 and not final.exists()
    assert list(final.parent.glob(f".{final.name}.*.tmp"))  # only the killed attempt's partial temp file

    with celery_worker(extra_env={"MEDIA_ROOT": str(media)}) as (queue, _proc):
        build_snapshot.apply_async(args=[victim.pk], queue=queue)  # the broker's redelivery
        wait_for(
            lambda: DatasetSnapshot.objects.get(pk=victim.pk).finished, what="the rebuild", log_queue=queue
        )
    victim.refresh_from_db()
    assert victim.status == "ready" and victim.row_count == 1500 and victim.attempts == 2, victim.message
    assert final.exists() and not list(final.parent.glob("*.tmp"))

    # the same spec built here, in one go, gives the same bytes
    reference = snapshot_build.build_snapshot(
        create_snapshot(project, members["admin"], {"kind": "sft"}, start=False).pk
    )
    assert reference.sha256 == victim.sha256
