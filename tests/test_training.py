"""Training jobs on the tiny test model: SFT then DPO, the guard, resume, cancel, and a real worker."""

import json

import pytest
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile

from annotator.model_lineage import model_paths
from annotator.models import ModelVersion
from inference.loading import load_model
from jobs import lifecycle
from training import demo_domain
from training.demo_model import build_demo_model, generate
from training.finetune import run as finetune_run
from training.finetune.params import clean_params
from training.finetune.request import create_job
from training.finetune.run import run_job
from training.models import DatasetSnapshot, MetricPoint, TrainingJob

from .worker import celery_worker, wait_for


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny"
    build_demo_model(str(path), seed=0, size="test", log=lambda *a: None)
    return str(path)


@pytest.fixture
def base(project, tiny_model):
    return ModelVersion.objects.create(project=project, name="tiny-base", path=tiny_model, origin="base")


def snapshot(project, kind, layout, rows):
    version = DatasetSnapshot.objects.filter(project=project, kind=kind).count() + 1
    snap = DatasetSnapshot(
        project=project,
        kind=kind,
        version=version,
        layout=layout,
        status="ready",
        row_count=len(rows),
        sha256="0" * 64,
    )
    snap.file.save(
        f"{kind}-{version}.jsonl", ContentFile("\n".join(json.dumps(r) for r in rows) + "\n"), save=False
    )
    snap.save()
    return snap


@pytest.fixture
def sft_snapshot(project):
    rows = [
        {"messages": c["messages"], "tools": json.dumps(c["tools"])}
        for c in demo_domain.generate_conversations(32, seed=3)
    ]
    return snapshot(project, "sft", "trl_messages", rows)


@pytest.fixture
def dpo_snapshot(project):
    cases = demo_domain.eval_prompts(24, seed=5)
    rows = [
        {
            "prompt": c["messages"],
            "chosen": [c["expected"]],
            "rejected": [{"role": "assistant", "content": "Sure, it is in stock."}],
            "tools": json.dumps(c["tools"]),
        }
        for c in cases
    ]
    return snapshot(project, "dpo", "trl_preference", rows)


def job(project, base, snap, stage="sft", **overrides):
    return create_job(
        project,
        None,
        stage=stage,
        base_version=base,
        train_snapshot=snap,
        preset="demo-tiny",
        overrides={"max_steps": 4, "save_steps": 2, **overrides},
        start=False,
    )


@pytest.mark.django_db
class TestValidation:
    def test_bad_hyper_parameters_are_named(self):
        params, errors = clean_params(
            "sft", "demo-tiny", {"learning_rate": "fast", "lora_r": 0, "beta": 0.1, "warp": 1}
        )
        assert errors == {
            "learning_rate": "must be a number",
            "lora_r": "must be between 1 and 256",
            "beta": "only DPO jobs have a beta",
            "warp": "unknown hyper-parameter",
        }
        assert clean_params("sft", "nope", {})[1] == {
            "preset": "unknown preset 'nope'; choose one of lora-r8, demo-tiny"
        }

    def test_missing_model_folder_and_unready_snapshot(self, project, sft_snapshot):
        ghost = ModelVersion.objects.create(
            project=project, name="ghost", path="/nonexistent/model", origin="base"
        )
        DatasetSnapshot.objects.filter(pk=sft_snapshot.pk).update(status="running")
        sft_snapshot.refresh_from_db()
        with pytest.raises(ValidationError) as exc:
            job(project, ghost, sft_snapshot)
        problems = " ".join(exc.value.message_dict["__all__"])
        assert "/nonexistent/model is missing" in problems and "is running, not ready" in problems

    def test_dpo_needs_an_sft_stage_unless_allowed(self, project, base, dpo_snapshot, sft_snapshot):
        with pytest.raises(ValidationError) as exc:
            job(project, base, dpo_snapshot, stage="dpo")
        assert "Run SFT first" in exc.value.message_dict["__all__"][0]
        assert create_job(
            project,
            None,
            stage="dpo",
            base_version=base,
            train_snapshot=dpo_snapshot,
            preset="demo-tiny",
            allow_raw_base=True,
            start=False,
        ).pk
        with pytest.raises(ValidationError) as exc:
            job(
                project,
                base,
                sft_snapshot,
                stage="dpo",
            )
        assert any("needs a dpo snapshot" in p for p in exc.value.message_dict["__all__"])


@pytest.mark.django_db
def test_sft_then_dpo_register_a_lineage_that_loads_and_generates(project, base, sft_snapshot, dpo_snapshot):
    sft = run_job(job(project, base, sft_snapshot).pk)
    assert sft.status == TrainingJob.State.SUCCEEDED, sft.message
    assert MetricPoint.objects.filter(job=sft, values__has_key="loss").count() >= 2
    assert list(sft.checkpoints.values_list("step", "healthy")) == [(2, True), (4, True)]
    assert sft.result_version.parent == base and sft.result_version.origin == "sft"

    dpo = run_job(job(project, sft.result_version, dpo_snapshot, stage="dpo").pk)
    assert dpo.status == TrainingJob.State.SUCCEEDED, dpo.message
    points = MetricPoint.objects.filter(job=dpo, values__has_key="rewards/margins")
    assert points.exists() and "rewards/accuracies" in points.first().values
    version = dpo.result_version
    assert [v.name for v in version.lineage()] == ["tiny-base", sft.result_version.name, version.name]
    loaded = load_model(*model_paths(version))
    outs = generate(
        loaded.model,
        loaded.tokenizer,
        [demo_domain.eval_prompts(1, seed=9)[0]["messages"]],
        demo_domain.TOOLS,
        max_new_tokens=8,
    )
    assert isinstance(outs[0], str)


@pytest.mark.django_db
def test_destructive_learning_rate_trips_the_guard_and_keeps_the_healthy_checkpoint(
    project, base, sft_snapshot
):
    bad = run_job(
        job(project, base, sft_snapshot, learning_rate=1.0, warmup_ratio=0.5, max_steps=8, save_steps=1).pk
    )
    assert bad.status == TrainingJob.State.STOPPED_BY_GUARD
    assert bad.guard_report["tripped"]["step"] == 2
    assert "perplexity ratio" in bad.guard_report["tripped"]["tripped"][0]
    assert list(bad.checkpoints.values_list("step", "healthy")) == [(1, True), (2, False)]
    assert bad.result_version.adapter_path.endswith("checkpoint-1")
    assert "healthy checkpoint of step 1 is the result" in bad.message


@pytest.mark.django_db
def test_a_crashed_job_resumes_from_its_checkpoint(project, base, sft_snapshot, monkeypatch):
    original = finetune_run.make_callback

    def crashing(job_, guard):
        cb = original(job_, guard)
        real = cb.on_save

        def on_save(args, state, control, **kw):
            real(args, state, control, **kw)
            if state.global_step == 2:
                raise RuntimeError("worker lost power")

        cb.on_save = on_save
        return cb

    monkeypatch.setattr(finetune_run, "make_callback", crashing)
    first = run_job(job(project, base, sft_snapshot, max_steps=4).pk)
    assert (
        first.status == TrainingJob.State.FAILED
        and "Resume continues from the checkpoint at step 2" in first.message
    )
    assert first.resumable
    monkeypatch.setattr(finetune_run, "make_callback", original)
    lifecycle.resume(first)
    again = run_job(first.pk)
    assert again.status == TrainingJob.State.SUCCEEDED, again.message
    assert again.attempts == 2 and again.step == 4
    assert "resuming from checkpoint 2" in again.log_tail
    steps_logged_second_time = [p.step for p in MetricPoint.objects.filter(job=again, values__has_key="loss")]
    assert 4 in steps_logged_second_time


@pytest.mark.django_db
def test_duplicate_delivery_runs_a_job_once(project, base, sft_snapshot):
    j = job(project, base, sft_snapshot)
    assert lifecycle.claim(TrainingJob, j.pk) is not None
    assert lifecycle.claim(TrainingJob, j.pk) is None  # the second delivery finds it taken


@pytest.mark.django_db
def test_redelivery_takes_over_a_silent_workers_job(project, base, sft_snapshot):
    from django.utils import timezone

    j = job(project, base, sft_snapshot)
    first = lifecycle.claim(TrainingJob, j.pk)
    assert first.attempts == 1
    TrainingJob.objects.filter(pk=j.pk).update(heartbeat_at=timezone.now() - timezone.timedelta(hours=1))
    again = lifecycle.claim(TrainingJob, j.pk)  # the broker redelivers the killed worker's task
    assert again is not None and again.attempts == 2 and again.run_token != first.run_token
    assert not lifecycle.heartbeat(first, step=99)  # the old attempt, should it wake up, writes nothing
    assert TrainingJob.objects.get(pk=j.pk).step == 0
    TrainingJob.objects.filter(pk=j.pk).update(
        heartbeat_at=timezone.now() - timezone.timedelta(hours=1), cancel_requested=True
    )
    assert lifecycle.claim(TrainingJob, j.pk) is None  # a job someone cancelled is not taken over


@pytest.mark.django_db
def test_stale_running_job_is_reaped_as_failed(project, base, sft_snapshot, settings):
    from django.utils import timezone

    j = job(project, base, sft_snapshot)
    TrainingJob.objects.filter(pk=j.pk).update(
        status="running",
        heartbeat_at=timezone.now() - timezone.timedelta(hours=1),
        worker="gpu-7:123",
        run_token="t",
    )
    assert lifecycle.reap_stale(TrainingJob) == 1
    j.refresh_from_db()
    assert j.status == "failed" and "stopped responding" in j.message


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_real_worker_trains_and_cancel_stops_at_the_next_step(project, base, sft_snapshot):
    from training.tasks import run_training

    done = job(project, base, sft_snapshot, max_steps=4)
    long = job(project, base, sft_snapshot, max_steps=400, save_steps=50, logging_steps=1)
    with celery_worker() as (queue, _proc):
        run_training.apply_async(args=[done.pk], queue=queue)
        wait_for(
            lambda: TrainingJob.objects.get(pk=done.pk).finished,
            timeout=180,
            what="the SFT job",
            log_queue=queue,
        )
        run_training.apply_async(args=[long.pk], queue=queue)
        wait_for(
            lambda: TrainingJob.objects.get(pk=long.pk).step >= 3,
            timeout=180,
            what="training to start",
            log_queue=queue,
        )
        lifecycle.cancel(TrainingJob.objects.get(pk=long.pk))
        wait_for(
            lambda: TrainingJob.objects.get(pk=long.pk).finished,
            timeout=120,
            what="the cancel",
            log_queue=queue,
        )
    done.refresh_from_db()
    long.refresh_from_db()
    assert done.status == "succeeded" and done.result_version is not None
    assert long.status == "cancelled" and long.step < 400
    assert long.checkpoints.filter(step=long.step).exists()  # the last step is kept as a checkpoint
    assert long.resumable


def test_every_periodic_sweep_names_a_registered_task(settings):
    from config.celery import app

    app.loader.import_default_modules()

    assert settings.CELERY_BEAT_SCHEDULE
    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        assert entry["task"] in app.tasks, entry["task"]
