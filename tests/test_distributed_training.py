"""A training job over several processes (training/finetune/group.py): two gloo ranks on the CPU train
the tiny model like one process does, rank 0 alone writes, and a cancel ends every process."""

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from jobs import lifecycle
from training import demo_domain
from training.finetune import run as finetune_run
from training.finetune.params import clean_params
from training.finetune.request import create_job
from training.finetune.run import run_job
from training.models import MetricPoint, TrainingJob

from .test_training import base, snapshot, tiny_model  # noqa: F401 - fixtures
from .worker import test_database_url as database_url
from .worker import wait_for

CHEAP_GUARD = {"prompts": 2, "max_new_tokens": 8}  # the guard still runs at every checkpoint, briefly


def test_num_processes_is_checked_with_a_clear_field_error(monkeypatch):
    monkeypatch.setenv("TRAINING_MAX_PROCESSES", "4")
    assert clean_params("sft", "demo-tiny", {"num_processes": "2"}) == (
        {**clean_params("sft", "demo-tiny", {})[0], "num_processes": 2},
        {},
    )
    for raw, error in [
        (0, "must be between 1 and 4 (TRAINING_MAX_PROCESSES: the GPUs of a training host)"),
        (5, "must be between 1 and 4 (TRAINING_MAX_PROCESSES: the GPUs of a training host)"),
        ("two", "a whole number of processes, 1 to 4"),
        (1.5, "a whole number of processes, 1 to 4"),
        (True, "a whole number of processes, 1 to 4"),
    ]:
        assert clean_params("sft", "demo-tiny", {"num_processes": raw})[1] == {"num_processes": error}


def test_gpu_presets_ask_for_checkpointing_and_4_bits_and_the_demo_preset_for_neither():
    gpu, demo = clean_params("sft", "lora-r8", {})[0], clean_params("sft", "demo-tiny", {})[0]
    assert (gpu["lora_r"], gpu["gradient_checkpointing"], gpu["load_in_4bit"]) == (8, True, True)
    assert (demo["gradient_checkpointing"], demo["load_in_4bit"], demo["num_processes"]) == (False, False, 1)
    assert clean_params("sft", "lora-r8", {"load_in_4bit": "maybe"})[1] == {"load_in_4bit": "true or false"}


@pytest.mark.django_db
def test_a_job_asking_for_more_gpus_than_the_worker_has_fails_before_starting_any(
    project,
    base,  # noqa: F811
    sft_rows,
    monkeypatch,
):
    monkeypatch.setattr(finetune_run, "pick_device", lambda *a: "cuda")  # a GPU host with none visible
    monkeypatch.setattr(finetune_run, "run_group", lambda *a: pytest.fail("no group may start"))
    job = run_job(new_job(project, base, sft_rows, num_processes=2).pk)
    assert job.status == "failed"
    assert job.message.startswith("num_processes is 2, but this worker sees 0 GPUs (one process per GPU)")


# --- real process groups ----------------------------------------------------------------------


@pytest.fixture
def media(settings, tmp_path, monkeypatch):
    """A media folder of this test's own (job output folders are named by pk), also for the ranks, which
    reach the test database through DATABASE_URL."""
    settings.MEDIA_ROOT = tmp_path / "media"
    monkeypatch.setenv("MEDIA_ROOT", str(settings.MEDIA_ROOT))
    monkeypatch.setenv("DATABASE_URL", database_url())
    return settings.MEDIA_ROOT


@pytest.fixture
def sft_rows(project, media):
    rows = [
        {"messages": c["messages"], "tools": json.dumps(c["tools"])}
        for c in demo_domain.generate_conversations(32, seed=3)
    ]
    return snapshot(project, "sft", "trl_messages", rows)


def new_job(project, base, snap, **overrides):  # noqa: F811 - base is the fixture's value
    return create_job(
        project,
        None,
        stage="sft",
        base_version=base,
        train_snapshot=snap,
        preset="demo-tiny",
        overrides={"logging_steps": 1, **overrides},
        guard=CHEAP_GUARD,
        start=False,
    )


def losses(job) -> dict[int, float]:
    points = MetricPoint.objects.filter(job=job, values__has_key="loss").order_by("step")
    return {p.step: p.values["loss"] for p in points}


@pytest.mark.integration
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.django_db(transaction=True)
def test_two_processes_train_like_one_stop_together_on_cancel_and_resume(project, base, sft_rows):  # noqa: F811
    # The per-device batch is kept: two ranks of 4 rows see per step the 8 rows one process of 8 sees,
    # in the same order (the sampler's seed), with no dropout: the losses match step for step.
    same = {"max_steps": 12, "save_steps": 2}
    one = run_job(new_job(project, base, sft_rows, per_device_train_batch_size=8, **same).pk)
    assert one.status == TrainingJob.State.SUCCEEDED, one.message
    job = new_job(project, base, sft_rows, per_device_train_batch_size=4, num_processes=2, **same)

    worker = threading.Thread(target=run_job, args=[job.pk], daemon=True)  # the test is the training worker
    worker.start()
    started = wait_for(
        lambda: next((ln for ln in log_lines(job) if "processes, pids" in ln), None),
        timeout=120,
        what="the ranks to start",
    )
    pids = [int(p) for p in started.rsplit("pids ", 1)[1].split(";")[0].split(", ")]
    assert len(pids) == 2 and all(alive(p) for p in pids)
    lifecycle.cancel(TrainingJob.objects.get(pk=job.pk))  # rank 0 reads it at its first heartbeat
    worker.join(timeout=90)
    job.refresh_from_db()
    assert job.status == "cancelled" and "stopping at step" in job.log_tail, job.message + job.log_tail
    assert not any(alive(p) for p in pids)  # both ranks are gone
    kept = job.step
    assert 0 < kept < 12 and job.checkpoints.filter(step=kept).exists() and job.resumable

    lifecycle.resume(job)  # a new group continues from the kept checkpoint
    job = run_job(job.pk)
    assert job.status == "succeeded" and job.step == 12 and job.attempts == 2, job.message + job.log_tail
    assert f"resuming from checkpoint {kept}" in job.log_tail and "x2 (gloo)" in job.device
    # rank 0 alone wrote: one metric row per step, one checkpoint per saved step, on disk as in the rows
    steps = list(MetricPoint.objects.filter(job=job, values__has_key="loss").values_list("step", flat=True))
    assert sorted(steps) == list(range(1, 13))
    saved = list(job.checkpoints.order_by("step").values_list("step", flat=True))
    assert saved == sorted({*range(2, 13, 2), kept})
    assert sorted(int(p.name.split("-")[1]) for p in Path(job.output_dir).glob("checkpoint-*")) == saved
    assert losses(job) == pytest.approx(losses(one), rel=1e-4)


@pytest.mark.integration
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_process_of_the_group_dies_with_its_parent(tmp_path):
    """The launcher dies with the worker, each rank with the launcher: SIGKILL a parent, its child goes."""
    pid_file = tmp_path / "child.pid"
    child = (
        "import os, time; from training.finetune.worker_main import die_with_parent; "
        f"die_with_parent(os.getppid()); open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    )
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {child!r}]); "
            "time.sleep(60)",
        ],
        cwd=Path(__file__).resolve().parent.parent,
    )
    pid = int(wait_for(lambda: pid_file.exists() and pid_file.read_text(), timeout=30, what="the child"))
    assert alive(pid)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    wait_for(lambda: not alive(pid), timeout=10, what="the child to die with its parent")


def log_lines(job) -> list[str]:
    return TrainingJob.objects.get(pk=job.pk).log_tail.splitlines()


def alive(pid: int) -> bool:
    """A process with this pid runs (a zombie has ended: only its exit status is left)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False
