"""Run a TrainingJob, top to bottom: readiness, load, guard baseline, train (the callback records
metric points and checkpoints), then register the adapter, or the last healthy checkpoint when the
guard stopped the run, and hand the new version to whatever hooks into "trained".

A job with num_processes > 1 is trained by a group of processes the worker starts and supervises
(group.py); each rank runs `_train` (train_rank), and rank 0 alone writes."""

import os
import time
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from annotator.model_lineage import model_paths
from annotator.models import ModelVersion
from inference.loading import load_model, pick_device
from jobs import lifecycle

from .. import hooks
from ..judge.report import evaluate
from ..models import TrainingJob
from .build import build_trainer, load_for_training, quantized
from .callback import make_callback
from .data import judge_data, train_dataset
from .group import is_main, local_rank, pids, processes_problem, run_group
from .guard import Guard, guard_prompts
from .params import DEFAULT_GUARD
from .request import readiness_problems


def run_job(job_id: int) -> TrainingJob | None:
    job = lifecycle.claim(TrainingJob, job_id)
    if job is None:
        return None  # finished, cancelled, or owned by a live worker
    started = time.monotonic()
    try:
        with lifecycle.attempt(job, beat_every=30):  # loading and guard checks take longer than a step
            _run(job, started)
    except Exception as exc:  # noqa: BLE001 - any failure is recorded on the job, with its reason
        _fail(job, exc)
    job.refresh_from_db()
    return job


def train_rank(job_id: int, token: str) -> int:
    """One rank of a job of several processes (worker_main): the training of `_train`, rank 0 writing for
    every rank. Returns the process's exit code."""
    job = TrainingJob.objects.filter(pk=job_id, run_token=token, status=TrainingJob.State.RUNNING).first()
    if job is None:
        return 1  # no longer this attempt's job: the worker stops the group
    started = time.monotonic() - (timezone.now() - job.started_at).total_seconds()
    try:
        _train(job, started)
    except Exception as exc:
        if is_main():
            _fail(job, exc)
        raise  # torchrun ends the other ranks
    return 0


def _fail(job: TrainingJob, exc: Exception) -> None:
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower():
        reason = (
            f"Out of memory on {job.device or 'the device'}: lower per_device_train_batch_size or "
            f"max_length, or raise gradient_accumulation_steps. ({exc})"
        )
    else:
        reason = f"{type(exc).__name__}: {exc}"
    lifecycle.log(job, "failed: " + reason)
    lifecycle.finish(job, TrainingJob.State.FAILED, f"{reason} {job.resume_hint}")


def processes(job: TrainingJob) -> int:
    return int(job.params.get("num_processes") or 1)


def _output_dir(job: TrainingJob) -> Path:
    return Path(settings.MEDIA_ROOT) / "training" / f"job-{job.pk}"


def _run(job: TrainingJob, started: float) -> None:
    problems = readiness_problems(job)
    if problems:
        lifecycle.finish(job, TrainingJob.State.FAILED, " ".join(problems))
        return
    n = processes(job)
    if n == 1:
        _train(job, started)
        return
    problem = processes_problem(n, pick_device())
    if problem:
        lifecycle.finish(job, TrainingJob.State.FAILED, problem)
        return
    out = _output_dir(job)
    out.mkdir(parents=True, exist_ok=True)
    lifecycle.heartbeat(job, output_dir=str(out))
    lifecycle.log(job, f"attempt {job.attempts} on {job.worker}: starting {n} training processes")
    run_group(job, n)


def _train(job: TrainingJob, started: float) -> None:
    """Train the job in this process: alone, or as one rank of several (rank 0 writes)."""
    import torch

    main, n = is_main(), processes(job)
    device = pick_device()
    if device == "cuda" and n > 1:
        torch.cuda.set_device(local_rank())  # one GPU per rank; "cuda" means this rank's from here on
    torch.set_num_threads(
        max(1, int(os.environ.get("TRAINING_THREADS", "1"))) if device == "cpu" else torch.get_num_threads()
    )
    out = _output_dir(job)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        name = f" ({torch.cuda.get_device_name(0)})" if device == "cuda" else ""
        group = f" x{n} ({'nccl' if device == 'cuda' else 'gloo'})" if n > 1 else ""
        lifecycle.heartbeat(job, device=f"{device}{group}{name}"[:100], output_dir=str(out))
        if n == 1:
            lifecycle.log(job, f"attempt {job.attempts} on {job.worker}, device {job.device}")
    t0 = time.monotonic()
    model, tokenizer = load_for_training(job, device)
    held, held_source = [], ""
    if job.stage == TrainingJob.Stage.JUDGE:
        dataset, held, held_source = judge_data(job)
    else:
        dataset = train_dataset(job)
    guard = (
        Guard(tokenizer, guard_prompts(job, int({**DEFAULT_GUARD, **job.guard}["prompts"])), job.guard)
        if main
        else None
    )
    callback = make_callback(job, guard)
    trainer = build_trainer(job, model, tokenizer, dataset, device, callbacks=[callback])
    ranks = pids() if n > 1 else []
    last = job.checkpoints.order_by("-step").first()  # read by every rank before any of them trains
    resume_from = last.path if last and Path(last.path).is_dir() else None
    if main:
        base = guard.baseline(trainer.model)
        lifecycle.heartbeat(job, guard_report={"baseline": base})
        lifecycle.log(
            job,
            f"loaded in {time.monotonic() - t0:.1f}s; {len(dataset)} rows; baseline perplexity "
            f"{base['perplexity']:.2f}, quality {100 * base['quality']:.0f}%"
            + (f"; {n} processes, pids {', '.join(map(str, ranks))}" if ranks else "")
            + ("; base in 4 bits (QLoRA)" if quantized(job, device) else ""),
        )
        if resume_from:
            lifecycle.log(job, f"resuming from checkpoint {last.step}")
    t1 = time.monotonic()
    trainer.train(resume_from_checkpoint=resume_from)
    train_seconds = time.monotonic() - t1
    if not main:
        return
    p = job.params
    steps_now = trainer.state.global_step - (last.step if resume_from else 0)
    rows_per_step = p["per_device_train_batch_size"] * p["gradient_accumulation_steps"] * n
    timings = {
        "load_s": round(t1 - t0, 2),
        "train_s": round(train_seconds, 2),
        "steps": trainer.state.global_step,
        "s_per_step": round(train_seconds / max(1, steps_now), 4),
        "processes": n,
        "samples_per_s": round(steps_now * rows_per_step / train_seconds, 2) if train_seconds > 0 else None,
    }

    if callback.tripped is None and not callback.cancelled:
        final = guard.check(trainer.model, trainer.state.global_step)
        if not final["ok"]:
            callback.tripped = final
    if callback.tripped is not None:
        healthy = job.checkpoints.filter(healthy=True).order_by("-step").first()
        report = {"baseline": base, "tripped": callback.tripped}
        if healthy is None:
            lifecycle.finish(
                job,
                TrainingJob.State.STOPPED_BY_GUARD,
                f"Stopped by the guard at step {callback.tripped['step']}: "
                f"{'; '.join(callback.tripped['tripped'])}. "
                "No checkpoint was healthy, so no model was registered.",
                guard_report=report,
                timings=timings,
            )
            return
        version = _register(
            job,
            healthy.path,
            f"Last healthy checkpoint (step {healthy.step}) of job {job.pk}, kept when the guard stopped it.",
        )
        lifecycle.finish(
            job,
            TrainingJob.State.STOPPED_BY_GUARD,
            f"Stopped by the guard at step {callback.tripped['step']}: "
            f"{'; '.join(callback.tripped['tripped'])}. "
            f"The healthy checkpoint of step {healthy.step} is the result.",
            guard_report=report,
            timings=timings,
            result_version=version,
        )
        return
    if callback.cancelled:
        lifecycle.finish(
            job,
            TrainingJob.State.CANCELLED,
            f"Cancelled at step {trainer.state.global_step}; the checkpoint there is kept "
            "and Resume continues from it.",
            timings=timings,
        )
        return
    adapter_dir = out / "adapter"
    trainer.save_model(str(adapter_dir))
    note = (
        f"{job.get_stage_display()} job {job.pk} on snapshot {job.train_snapshot.name}, "
        f"{trainer.state.global_step} steps."
    )
    version = _register(job, str(adapter_dir), note)
    if job.merge_weights:
        merged = out / "merged"
        if quantized(job, device):  # merge into the bf16 base, not its 4-bit copy (on the CPU: no room)
            full = load_model(*model_paths(version), device="cpu", dtype=torch.bfloat16).model
            full.save_pretrained(str(merged))
        else:
            trainer.model.merge_and_unload().save_pretrained(str(merged))
        tokenizer.save_pretrained(str(merged))
        version.metadata = {**version.metadata, "merged_path": str(merged)}
        version.save(update_fields=["metadata"])
    timings["total_s"] = round(time.monotonic() - started, 2)
    lifecycle.finish(
        job,
        TrainingJob.State.SUCCEEDED,
        f"Done: {version.name} registered.",
        timings=timings,
        result_version=version,
        step=trainer.state.global_step,
        guard_report={"baseline": base, "final": final},
    )
    lifecycle.log(job, f"succeeded in {timings['total_s']}s")
    if job.stage == TrainingJob.Stage.JUDGE:
        _evaluate_judge(job, version, held, held_source)
        return
    for line in hooks.version_trained(job, version):
        lifecycle.log(job, line)


def _register(job: TrainingJob, adapter_dir: str, note: str) -> ModelVersion:
    name = f"{job.base_version.name}+{job.stage}-job{job.pk}"
    version, _ = ModelVersion.objects.update_or_create(
        project=job.project,
        name=name,
        defaults={
            "adapter_path": adapter_dir,
            "parent": job.base_version,
            "origin": {
                TrainingJob.Stage.SFT: ModelVersion.Origin.SFT,
                TrainingJob.Stage.DPO: ModelVersion.Origin.DPO,
                TrainingJob.Stage.JUDGE: ModelVersion.Origin.JUDGE,
            }[job.stage],
            "notes": note,
            "created_by": job.created_by,
            "metadata": {
                "training_job": job.pk,
                "train_snapshot_ids": [job.train_snapshot_id],
                "snapshot_sha256": job.train_snapshot.sha256,
                "params": job.params,
                **(
                    {"judge_reasons": bool(job.params.get("judge_reasons"))}
                    if job.stage == TrainingJob.Stage.JUDGE
                    else {}
                ),
            },
        },
    )
    return version


def _evaluate_judge(job: TrainingJob, version: ModelVersion, held: list[dict], source: str) -> None:
    """The judge's report: agreement with the held-out human pairs (never trained on), position bias,
    calibration, and the human ceiling. A failure here is logged; the trained judge stays."""
    if not held:
        lifecycle.log(
            job, "no held-out pairs: the judge was not evaluated (build a DPO snapshot of eval items)"
        )
        return
    try:
        ev = evaluate(version, held, job=job, source=source)
        ceiling = "n/a" if ev.human_agreement is None else f"{100 * ev.human_agreement:.0f}%"
        lifecycle.log(
            job,
            f"judge on {ev.pairs} held-out pairs: accuracy {100 * ev.accuracy:.1f}% ± "
            f"{100 * ev.accuracy_se:.1f}, position flips {100 * ev.position_bias_rate:.0f}%, "
            f"human agreement {ceiling}",
        )
    except Exception as exc:  # noqa: BLE001 - reported on the job; the judge itself is fine
        lifecycle.log(job, f"could not evaluate the judge: {type(exc).__name__}: {exc}")
