"""Celery tasks of the training app. Snapshot builds run on the `exports` queue (see CELERY_TASK_ROUTES)."""

from celery import shared_task
from django.db import InterfaceError, OperationalError

from annotator.models import ModelVersion, Project
from jobs import registry

from .finetune.run import run_job
from .judge.pairs import read_pairs
from .judge.report import evaluate
from .judge.suggestions import suggest
from .models import DatasetSnapshot, TrainingJob
from .snapshots import build as snapshot_build
from .snapshots.bundle import make_bundle_quietly


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=3,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=10,
    retry_jitter=True,
)
def build_snapshot(self, snapshot_id: int):
    """Build one dataset snapshot. A redelivery (worker killed) or a retry takes the build over
    from scratch; a finished snapshot is left alone. Once ready, the same worker makes the download
    bundle (Parquet copy, card, manifest): the snapshot is usable before it, and a download makes it
    if this step failed."""
    snapshot = snapshot_build.build_snapshot(snapshot_id)
    make_bundle_quietly(snapshot)
    return {"snapshot": snapshot_id, "status": snapshot.status if snapshot else "deleted"}


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True)
def run_training(self, job_id: int):
    """Run one training job on the `training` queue (GPU hosts consume it). A job with num_processes > 1
    is a torchrun group this task starts and supervises (finetune/group.py). A duplicate delivery is a
    no-op."""
    job = run_job(job_id)
    return {"job": job_id, "status": job.status if job else "not claimed"}


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True)
def suggest_with_judge(self, project_id: int, judge_id: int):
    """Judge the project's comparison tasks that have no suggestion from this judge yet."""
    return suggest(
        Project.objects.get(pk=project_id), ModelVersion.objects.get(pk=judge_id, project_id=project_id)
    )


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True)
def evaluate_judge(self, judge_id: int, snapshot_id: int):
    """Measure a judge (trained or external) on the human pairs of a DPO snapshot."""
    judge = ModelVersion.objects.get(pk=judge_id)
    snap = DatasetSnapshot.objects.get(
        pk=snapshot_id, project_id=judge.project_id, status="ready", kind="dpo"
    )
    ev = evaluate(judge, read_pairs(snap.file.path), source=f"pairs of snapshot {snap.name}")
    return {"judge": judge_id, "evaluation": ev.pk, "accuracy": ev.accuracy}


registry.register("snapshots", DatasetSnapshot, build_snapshot)
registry.register("training_jobs", TrainingJob, run_training)
