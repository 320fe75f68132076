"""One lifecycle for every job kind (jobs/): imports, snapshot builds, training jobs, online runs and eval
runs are claimed, beat, cancelled, reaped, resumed and re-sent after a broker outage the same way."""

import datetime as dt
import subprocess
from unittest import mock

import pytest
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from annotator.importers import run_import
from annotator.models import ImportJob
from evaluation import runner
from evaluation.models import EvalRun
from evaluation.suites import create_suite
from jobs import lifecycle, registry
from jobs.models import CANCELLED, FAILED, QUEUED, RUNNING
from loop import online
from training import demo_domain
from training.finetune.run import run_job
from training.models import DatasetSnapshot, OnlineRun, TrainingJob
from training.snapshots.build import build_snapshot, create_snapshot

from .conftest import conversation_record, jsonl
from .test_eval_support import make_suite, model, outputs_file
from .test_training import base, sft_snapshot, tiny_model  # noqa: F401 - fixtures
from .test_training import job as training_job

pytestmark = pytest.mark.django_db

KINDS = {
    "imports": ImportJob,
    "snapshots": DatasetSnapshot,
    "training_jobs": TrainingJob,
    "online_runs": OnlineRun,
    "eval_runs": EvalRun,
}
WORKERS = {
    "imports": run_import,
    "snapshots": build_snapshot,
    "training_jobs": run_job,
    "online_runs": online.run_online,
    "eval_runs": runner.run_eval,
}


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def queued(kind: str, project, request):
    """A queued row of the kind that its worker can really run."""
    if kind == "imports":
        data = jsonl(conversation_record(i) for i in range(3))
        job = ImportJob(project=project, original_name="three.jsonl", size_bytes=len(data))
        job.file.save("three.jsonl", ContentFile(data), save=False)
        job.save()
        return job
    if kind == "snapshots":
        return create_snapshot(project, None, {"kind": "sft"}, start=False)
    if kind == "eval_runs":
        suite = make_suite(project, 3)
        agent = model(project, f"agent-{EvalRun.objects.count()}")
        return runner.create_run(
            project, suite, agent, source="outputs", outputs=outputs_file(suite, {1}), start=False
        )
    tiny = request.getfixturevalue("base")
    if kind == "training_jobs":
        return training_job(project, tiny, request.getfixturevalue("sft_snapshot"))
    cases = demo_domain.eval_prompts(2, seed=77)
    suite, _ = create_suite(
        project,
        "held-out",
        [
            (
                i + 1,
                {
                    "id": c["external_id"],
                    "messages": c["messages"],
                    "tools": c["tools"],
                    "expected": c["expected"],
                },
            )
            for i, c in enumerate(cases)
        ],
        source="gold",
    )
    return online.create_run(
        project,
        None,
        start_version=tiny,
        eval_suite=suite,
        rounds=1,
        options={"samples_per_prompt": 2, "max_prompts": 2, "max_new_tokens": 8},
        preset="demo-tiny",
        overrides={"max_steps": 2},
        start=False,
    )


def silent_for(job, seconds: float) -> None:
    type(job).objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - dt.timedelta(seconds=seconds))


@pytest.fixture(params=list(KINDS))
def kind(request):
    return request.param


def test_every_kind_is_registered_with_its_task():
    assert {k.name: k.model for k in registry.kinds()} == KINDS
    for k in registry.kinds():
        assert registry.kind_of(k.model()).task is k.task and callable(k.task.delay)


def test_claim_heartbeat_cancel_and_the_worker_stops(kind, project, request, monkeypatch):
    model = KINDS[kind]
    row = queued(kind, project, request)
    job = lifecycle.claim(model, row.pk)
    assert (job.status, job.attempts, job.worker) == (RUNNING, 1, lifecycle.worker_name())
    assert job.run_token and job.heartbeat_at
    assert lifecycle.claim(model, row.pk) is None  # a duplicate delivery while the worker lives
    assert lifecycle.heartbeat(job)
    lifecycle.cancel(row)
    assert row.status == RUNNING and row.cancel_requested  # a running job is asked, not stopped
    assert not lifecycle.heartbeat(job) and job.cancel_requested  # its worker learns it at the next beat
    lifecycle.log(job, "stopping")
    assert lifecycle.finish(job, CANCELLED, "Cancelled.")
    assert model.objects.get(pk=row.pk).log_tail.endswith("stopping\n")

    # The kind's real worker: cancelled at its first heartbeat, it stops and says so.
    row = queued(kind, project, request)
    real_heartbeat = lifecycle.heartbeat
    cancelled = []

    def cancel_at_first_beat(job_, **fields):
        if type(job_) is model and job_.pk == row.pk and not cancelled:
            cancelled.append(job_.run_token)
            lifecycle.cancel(model.objects.get(pk=row.pk))
        return real_heartbeat(job_, **fields)

    monkeypatch.setattr(lifecycle, "heartbeat", cancel_at_first_beat)
    WORKERS[kind](row.pk)
    row.refresh_from_db()
    assert cancelled and row.status == CANCELLED and row.finished_at, (row.status, row.message)
    assert row.attempts == 1 and "ancel" in row.message


def test_a_killed_workers_row_is_reaped_after_the_timeout_and_resumed(
    kind, project, request, settings, django_capture_on_commit_callbacks
):
    model, task = KINDS[kind], registry.kind_of(KINDS[kind]()).task
    row = queued(kind, project, request)
    dead = lifecycle.claim(model, row.pk)  # its worker is killed right after: no more heartbeats
    silent_for(row, settings.JOB_HEARTBEAT_TIMEOUT_S - 10)
    assert lifecycle.reap_stale(model) == 0  # one timeout for every kind, online runs included
    silent_for(row, settings.JOB_HEARTBEAT_TIMEOUT_S + 1)
    assert lifecycle.reap_stale(model, project=project) == 1
    row.refresh_from_db()
    assert row.status == FAILED and "stopped responding" in row.message and row.resumable
    assert lifecycle.reap_stale(model) == 0  # reaped once

    with mock.patch.object(task, "delay") as delay, django_capture_on_commit_callbacks(execute=True):
        lifecycle.resume(row)
    delay.assert_called_once_with(row.pk)  # resume always sends the task
    assert row.status == QUEUED and not row.finished_at and not row.run_token
    with pytest.raises(ValidationError):
        lifecycle.resume(row)  # queued already: nothing to resume
    again = lifecycle.claim(model, row.pk)
    assert again.attempts == 2 and again.run_token != dead.run_token
    assert not lifecycle.heartbeat(dead) and not lifecycle.finish(dead, FAILED, "late")  # the old attempt
    assert model.objects.get(pk=row.pk).status == RUNNING


def test_broker_down_the_row_waits_and_requeue_waiting_sends_it(
    kind, project, request, monkeypatch, django_capture_on_commit_callbacks
):
    model, task = KINDS[kind], registry.kind_of(KINDS[kind]()).task
    row = queued(kind, project, request)
    with (
        mock.patch.object(task, "delay", side_effect=BrokerError("connection refused")),
        django_capture_on_commit_callbacks(execute=True),
    ):
        lifecycle.enqueue(row)
    row.refresh_from_db()
    assert row.status == FAILED and row.waiting_for_queue and row.finished_at
    assert row.message.startswith(lifecycle.QUEUE_UNAVAILABLE) and "connection refused" in row.message

    monkeypatch.setattr(lifecycle, "broker_reachable", lambda: False)
    assert lifecycle.requeue_waiting() == {"broker": "unavailable"}
    assert model.objects.get(pk=row.pk).waiting_for_queue  # untouched while it is still down

    monkeypatch.setattr(lifecycle, "broker_reachable", lambda: True)
    nothing = dict.fromkeys(KINDS, 0)
    with mock.patch.object(task, "delay") as delay, django_capture_on_commit_callbacks(execute=True):
        assert lifecycle.requeue_waiting() == {**nothing, kind: 1}
    delay.assert_called_once_with(row.pk)
    row.refresh_from_db()
    assert row.status == QUEUED and not row.waiting_for_queue and not row.finished_at
    assert lifecycle.requeue_waiting() == nothing  # once only
    assert lifecycle.claim(model, row.pk).attempts == 1


def test_cancelling_a_queued_or_waiting_job_is_at_once_and_resume_queues_it(
    kind, project, request, django_capture_on_commit_callbacks
):
    model, task = KINDS[kind], registry.kind_of(KINDS[kind]()).task
    row = queued(kind, project, request)
    lifecycle.cancel(row)
    assert row.status == CANCELLED and row.message == "Cancelled before it started."
    assert lifecycle.claim(model, row.pk) is None  # its task, delivered later, does nothing
    with mock.patch.object(task, "delay") as delay, django_capture_on_commit_callbacks(execute=True):
        lifecycle.resume(row)
    delay.assert_called_once_with(row.pk)
    assert row.status == QUEUED and not row.cancel_requested

    model.objects.filter(pk=row.pk).update(status=FAILED, waiting_for_queue=True)
    lifecycle.cancel(row)  # a job waiting for the broker is not sent once it is back
    assert row.status == CANCELLED and not row.waiting_for_queue


def test_a_job_that_succeeded_is_left_alone(kind, project, request):
    model = KINDS[kind]
    row = queued(kind, project, request)
    job = lifecycle.claim(model, row.pk)
    assert lifecycle.finish(job, model.SUCCESS, "Done.")  # "done", "ready" or "succeeded", as the kind says
    row.refresh_from_db()
    assert row.status == model.SUCCESS and row.finished and not row.resumable
    assert lifecycle.claim(model, row.pk) is None  # a late redelivery does nothing
    with pytest.raises(ValidationError):
        lifecycle.resume(row)
    lifecycle.cancel(row)
    assert row.status == model.SUCCESS and not row.cancel_requested
    assert lifecycle.reap_stale(model) == 0


def test_a_redelivery_takes_over_only_from_a_worker_that_is_gone(project):
    row = queued("imports", project, None)
    first = lifecycle.claim(ImportJob, row.pk)
    assert lifecycle.claim(ImportJob, row.pk) is None  # alive: this process, beating
    gone = subprocess.Popen(["true"])
    gone.wait()
    ImportJob.objects.filter(pk=row.pk).update(
        worker=f"{lifecycle.worker_name().rsplit(':', 1)[0]}:{gone.pid}"
    )
    second = lifecycle.claim(ImportJob, row.pk)  # its process on this host has exited: no need to wait
    assert second.attempts == 2 and second.run_token != first.run_token

    with pytest.raises(SystemExit), lifecycle.attempt(second):
        raise SystemExit  # the attempt ended without its last write (e.g. the database went away)
    third = lifecycle.claim(ImportJob, row.pk)  # the task's retry in this process takes over at once
    assert third.attempts == 3

    silent_for(row, 3600)
    assert lifecycle.claim(ImportJob, row.pk) is None  # a third death: it gives up instead
    row.refresh_from_db()
    assert row.status == FAILED and row.message.startswith(f"Gave up after {lifecycle.MAX_ATTEMPTS} attempts")


def test_the_sweeps_are_beat_tasks_and_a_command(settings, project, capsys):
    from config.celery import app

    app.loader.import_default_modules()
    tasks = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {"jobs.tasks.reap_stale_jobs", "jobs.tasks.requeue_waiting_jobs"} <= tasks <= set(app.tasks)
    row = queued("imports", project, None)
    lifecycle.claim(ImportJob, row.pk)
    silent_for(row, settings.JOB_HEARTBEAT_TIMEOUT_S + 1)
    assert app.tasks["jobs.tasks.reap_stale_jobs"].apply().get() == {**dict.fromkeys(KINDS, 0), "imports": 1}
    with mock.patch.object(lifecycle, "broker_reachable", return_value=False):
        call_command("requeue_waiting")
    assert capsys.readouterr().out.strip() == '{"broker": "unavailable"}'
