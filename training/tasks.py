"""Celery tasks of the training app. Snapshot builds run on the `exports` queue (see CELERY_TASK_ROUTES)."""

from celery import shared_task
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from config.queueing import send_on_commit

from .models import DatasetSnapshot


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=3,
             autoretry_for=(OperationalError, InterfaceError), retry_backoff=10, retry_jitter=True)
def build_snapshot(self, snapshot_id: int):
    """Build one dataset snapshot. A redelivery (worker killed) or a retry takes the build over
    from scratch; a finished snapshot is left alone."""
    from .datasets import build_snapshot as build

    snapshot = build(snapshot_id)
    return {"snapshot": snapshot_id, "status": snapshot.status if snapshot else "deleted"}


def start_build(snapshot: DatasetSnapshot):
    """Queue the build once the snapshot row is committed; a broker outage is reported on the snapshot."""
    send_on_commit(build_snapshot, snapshot.pk, lambda exc: DatasetSnapshot.objects.filter(
        pk=snapshot.pk, status=DatasetSnapshot.State.QUEUED).update(
        status=DatasetSnapshot.State.FAILED, failure=DatasetSnapshot.Failure.QUEUE,
        finished_at=timezone.now(),
        message=f"Could not reach the task queue ({exc}). Nothing was built; use “Build again” once the "
        "queue is back.",
    ))


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True)
def run_training(self, job_id: int):
    """Run one training job on the `training` queue (GPU hosts consume it). A duplicate delivery is a no-op."""
    from .trainer import run_job

    job = run_job(job_id)
    return {"job": job_id, "status": job.status if job else "not claimed"}


@shared_task
def reap_stale_training_jobs():
    """Periodic (celery beat): fail running jobs whose worker stopped sending heartbeats."""
    from .online import reap_stale
    from .trainer import reap_stale_jobs

    return {"training_jobs": reap_stale_jobs(), "online_runs": reap_stale()}


def start_training(job):
    """Queue the job once its row is committed; a broker outage is reported on the job."""
    from .models import TrainingJob

    send_on_commit(run_training, job.pk, lambda exc: TrainingJob.objects.filter(
        pk=job.pk, status=TrainingJob.State.QUEUED).update(
        status=TrainingJob.State.FAILED, finished_at=timezone.now(),
        message=f"Could not reach the task queue ({exc}). Nothing ran; press Resume or create the job "
        "again once the queue is back."))


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True)
def run_online(self, run_id: int):
    """Run an online DPO run (all its rounds) on the `training` queue. A duplicate delivery is a no-op."""
    from .online import run_online as run

    result = run(run_id)
    return {"online_run": run_id, "status": result.status if result else "not claimed"}


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True)
def suggest_with_judge(self, project_id: int, judge_id: int):
    """Judge the project's comparison tasks that have no suggestion from this judge yet."""
    from annotator.models import Project

    from .judging import suggest
    from .models import ModelVersion

    return suggest(Project.objects.get(pk=project_id), ModelVersion.objects.get(pk=judge_id, project_id=project_id))


def start_online(run):
    from .models import OnlineRun

    send_on_commit(run_online, run.pk, lambda exc: OnlineRun.objects.filter(
        pk=run.pk, status=OnlineRun.State.QUEUED).update(
        status=OnlineRun.State.FAILED, finished_at=timezone.now(),
        message=f"Could not reach the task queue ({exc}). Nothing ran; press Resume once the queue is back."))


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True)
def evaluate_judge(self, judge_id: int, snapshot_id: int):
    """Measure a judge (trained or external) on the human pairs of a DPO snapshot."""
    from .judging import evaluate, read_pairs
    from .models import DatasetSnapshot, ModelVersion

    judge = ModelVersion.objects.get(pk=judge_id)
    snap = DatasetSnapshot.objects.get(pk=snapshot_id, project_id=judge.project_id, status="ready", kind="dpo")
    ev = evaluate(judge, read_pairs(snap.file.path), source=f"pairs of snapshot {snap.name}")
    return {"judge": judge_id, "evaluation": ev.pk, "accuracy": ev.accuracy}
