"""Run a TrainingJob: TRL's SFTTrainer or DPOTrainer with a PEFT LoRA adapter.

Read top to bottom: presets and validation, readiness checks, the brain-damage guard, the
callback that writes metric points and checkpoints to the database (its heartbeat is where a
cancel is noticed), and `run_job`, which ties them together. Claim, heartbeat, log, cancel,
reap and resume are jobs.lifecycle's, as for every other job kind.
Nothing here assumes a CPU: on a CUDA host the same code trains on the GPU.
"""

import json
import math
import os
import time
from pathlib import Path

from django.conf import settings
from django.db import transaction

from annotator.model_lineage import check_folders, model_paths
from annotator.models import ModelVersion
from inference.loading import load_model, pick_device
from inference.perplexity import perplexity
from jobs import lifecycle
from toolcalls.score import score_case

from . import hooks
from .models import Checkpoint, DatasetSnapshot, MetricPoint, TrainingJob

# --- presets and parameters -----------------------------------------------------------------

COMMON = {
    "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": "all-linear",
    "num_train_epochs": 1.0, "max_steps": 0, "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 4, "max_length": 2048, "logging_steps": 5, "save_steps": 50,
    "warmup_ratio": 0.03, "seed": 42,
}
PRESETS = {
    # A real model (e.g. an 8B agent model) on a GPU: rank 8 is usually enough when the base knows the domain.
    "lora-r8": {
        "sft": {**COMMON, "learning_rate": 2e-4},
        "dpo": {**COMMON, "learning_rate": 5e-6, "beta": 0.1, "loss_type": ["sigmoid"]},
        "judge": {**COMMON, "learning_rate": 1e-4, "num_train_epochs": 2.0, "judge_reasons": False},
    },
    # The offline demo model (a few hundred thousand parameters) on a CPU core.
    "demo-tiny": {
        "sft": {**COMMON, "learning_rate": 3e-3, "num_train_epochs": 2.0, "per_device_train_batch_size": 8,
                "gradient_accumulation_steps": 1, "max_length": 512, "logging_steps": 2, "save_steps": 10,
                "warmup_ratio": 0.0, "lora_dropout": 0.0},
        "dpo": {**COMMON, "learning_rate": 5e-3, "num_train_epochs": 1.0, "per_device_train_batch_size": 8,
                "gradient_accumulation_steps": 1, "max_length": 512, "logging_steps": 2, "save_steps": 10,
                "warmup_ratio": 0.0, "lora_dropout": 0.0, "beta": 0.1, "loss_type": ["sigmoid", "sft"]},
        "judge": {**COMMON, "learning_rate": 2e-3, "num_train_epochs": 4.0, "per_device_train_batch_size": 8,
                  "gradient_accumulation_steps": 1, "max_length": 1024, "logging_steps": 2, "save_steps": 20,
                  "warmup_ratio": 0.0, "lora_dropout": 0.0, "judge_reasons": False},
    },
}
DEFAULT_GUARD = {"max_perplexity_ratio": 1.3, "max_quality_drop": 0.10, "prompts": 8, "max_new_tokens": 64}
# A judge is never used as the agent: its guard only stops a run that diverges outright (its worth is
# measured on held-out human pairs instead), so the agent-answer quality check is off for it.
JUDGE_GUARD = {**DEFAULT_GUARD, "max_perplexity_ratio": 50.0, "max_quality_drop": 1.0}

# name -> (type, minimum, maximum)
PARAM_SPEC = {
    "lora_r": (int, 1, 256), "lora_alpha": (int, 1, 1024), "lora_dropout": (float, 0.0, 0.9),
    "learning_rate": (float, 1e-8, 10.0), "num_train_epochs": (float, 0.01, 100.0), "max_steps": (int, 0, 10**7),
    "per_device_train_batch_size": (int, 1, 4096), "gradient_accumulation_steps": (int, 1, 4096),
    "max_length": (int, 16, 131072), "logging_steps": (int, 1, 10**6), "save_steps": (int, 1, 10**7),
    "warmup_ratio": (float, 0.0, 0.5), "seed": (int, 0, 2**31 - 1), "beta": (float, 1e-4, 100.0),
}
LOSS_TYPES = {"sigmoid", "ipo", "hinge", "robust", "bco_pair", "sppo_hard", "nca_pair", "apo_zero", "apo_down", "sft"}
SFT_LAYOUTS = {"trl_messages", "trl_prompt_completion"}
DPO_LAYOUTS = {"trl_preference"}
# what each stage trains on: (snapshot kind, layouts)
STAGE_DATA = {"sft": ("sft", SFT_LAYOUTS), "dpo": ("dpo", DPO_LAYOUTS), "judge": ("dpo", DPO_LAYOUTS)}


def default_params(stage: str, preset: str = "lora-r8") -> dict:
    return json.loads(json.dumps(PRESETS[preset][stage]))


def clean_params(stage: str, preset: str, overrides: dict) -> tuple[dict, dict]:
    """Preset + overrides, each checked. Returns (params, errors by field)."""
    if preset not in PRESETS:
        return {}, {"preset": f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}"}
    if stage not in PRESETS[preset]:
        return {}, {"stage": f"unknown stage {stage!r}; one of {', '.join(PRESETS[preset])}"}
    params, errors = default_params(stage, preset), {}
    for name, raw in (overrides or {}).items():
        if raw in (None, ""):
            continue
        if name == "target_modules":
            value = raw if raw == "all-linear" else [s.strip() for s in str(raw).split(",") if s.strip()] \
                if isinstance(raw, str) else raw
            if not value or (isinstance(value, list) and not all(isinstance(v, str) for v in value)):
                errors[name] = "all-linear, or a comma-separated list of module names"
            else:
                params[name] = value
            continue
        if name == "judge_reasons":
            if stage != "judge":
                errors[name] = "only judge jobs write reasons"
            else:
                params[name] = raw in (True, "true", "on", "1", 1)
            continue
        if name == "loss_type":
            value = [s.strip() for s in raw.split(",")] if isinstance(raw, str) else raw
            if stage != "dpo":
                errors[name] = "only DPO jobs have a loss type"
            elif not isinstance(value, list) or not value or set(value) - LOSS_TYPES:
                errors[name] = f"one or more of {', '.join(sorted(LOSS_TYPES))}"
            else:
                params[name] = value
            continue
        if name not in PARAM_SPEC:
            errors[name] = "unknown hyper-parameter"
            continue
        kind, low, high = PARAM_SPEC[name]
        try:
            value = kind(raw)
        except (TypeError, ValueError):
            errors[name] = f"must be {'an integer' if kind is int else 'a number'}"
            continue
        if not (low <= value <= high) or (kind is float and not math.isfinite(value)):
            errors[name] = f"must be between {low:g} and {high:g}"
            continue
        if name == "beta" and stage != "dpo":
            errors[name] = "only DPO jobs have a beta"
            continue
        params[name] = value
    return params, errors


def readiness_problems(job: TrainingJob) -> list[str]:
    """Why this job cannot start, in words an admin can act on (empty when it can)."""
    problems = check_folders(job.base_version)
    snap = job.train_snapshot
    if snap.status != DatasetSnapshot.State.READY:
        problems.append(f"The training snapshot {snap.name} is {snap.status}, not ready.")
    expected, layouts = STAGE_DATA.get(job.stage, STAGE_DATA["sft"])
    if snap.kind != expected:
        what = "judge" if job.stage == TrainingJob.Stage.JUDGE else job.stage.upper()
        problems.append(f"A {what} job needs a {expected} snapshot (pairs of preferred and rejected answers)"
                        if job.stage == TrainingJob.Stage.JUDGE else
                        f"A {what} job needs a {expected} snapshot; {snap.name} is {snap.kind}.")
    if snap.layout not in layouts:
        problems.append(f"Snapshot layout {snap.layout!r} is not trainable here; use {' or '.join(sorted(layouts))}.")
    if snap.status == DatasetSnapshot.State.READY and not (snap.file and Path(snap.file.path).is_file()):
        problems.append(f"The file of snapshot {snap.name} is missing.")
    if job.eval_snapshot_id and job.eval_snapshot.status != DatasetSnapshot.State.READY:
        problems.append(f"The evaluation snapshot {job.eval_snapshot.name} is not ready.")
    if job.stage == TrainingJob.Stage.JUDGE and job.eval_snapshot_id and job.eval_snapshot.kind != "dpo":
        problems.append(f"A judge is evaluated on held-out preference pairs: {job.eval_snapshot.name} is "
                        f"{job.eval_snapshot.kind}, choose a DPO snapshot of eval/holdout items or none "
                        f"(then {int(100 * 0.2)}% of the pairs are held out).")
    if snap.project_id != job.project_id or job.base_version.project_id != job.project_id:
        problems.append("The base model and the snapshot must belong to this project.")
    problems.extend(order_problems(job.stage, job.base_version, job.allow_raw_base))
    return problems


def order_problems(stage: str, base: ModelVersion, allow_raw_base: bool) -> list[str]:
    """SFT first, DPO second: DPO cannot repair what SFT broke, and does little on an untuned base."""
    if stage != TrainingJob.Stage.DPO or allow_raw_base:
        return []
    if not any(v.origin == ModelVersion.Origin.SFT for v in base.lineage()):
        return [f"{base.name} has no SFT stage in its lineage. Run SFT first (DPO aligns behaviour but cannot "
                "repair what SFT did not teach), or tick 'allow a raw base' to go ahead anyway."]
    return []


# --- the brain-damage guard -----------------------------------------------------------------

class Guard:
    """Perplexity on the fixed general texts (inference.perplexity, the same the promotion gate reads)
    relative to the job's starting model, and response quality (metrics.md) on fixed prompts. A check
    that crosses a limit stops the job."""

    def __init__(self, tokenizer, prompts: list[dict], limits: dict):
        self.tokenizer, self.prompts = tokenizer, prompts
        self.limits = {**DEFAULT_GUARD, **(limits or {})}
        self.base_ppl = self.base_quality = None

    def _quality(self, model) -> tuple[float, list[str]]:
        from .demo_model import generate

        if not self.prompts:
            return 1.0, []
        by_tools: dict[str, list[int]] = {}
        for i, p in enumerate(self.prompts):
            by_tools.setdefault(json.dumps(p.get("tools") or [], sort_keys=True), []).append(i)
        outs: list[dict] = [{}] * len(self.prompts)
        for tools_json, idx in by_tools.items():
            got = generate(model, self.tokenizer, [self.prompts[i]["messages"] for i in idx],
                           tools=json.loads(tools_json) or None, max_new_tokens=int(self.limits["max_new_tokens"]),
                           batch_size=8, return_details=True)
            for i, o in zip(idx, got, strict=True):
                outs[i] = o
        scores = [score_case({"role": "assistant", "content": "-"}, o["text"], p.get("tools") or [],
                             stopped_at_limit=o["hit_limit"])["response_quality"]
                  for o, p in zip(outs, self.prompts, strict=True)]
        return sum(scores) / len(scores), [o["text"] for o in outs[:3]]

    def measure(self, model) -> dict:
        was_training = model.training
        model.eval()
        try:
            ppl = perplexity(model, self.tokenizer)
            quality, samples = self._quality(model)
        finally:
            model.train(was_training)
        return {"perplexity": round(ppl, 4), "quality": round(quality, 4), "samples": samples}

    def baseline(self, model) -> dict:
        with model.disable_adapter():
            m = self.measure(model)
        self.base_ppl, self.base_quality = m["perplexity"], m["quality"]
        return m

    def check(self, model, step: int) -> dict:
        m = self.measure(model)
        ratio = m["perplexity"] / self.base_ppl if self.base_ppl else 1.0
        drop = (self.base_quality or 0.0) - m["quality"]
        tripped = []
        if ratio > self.limits["max_perplexity_ratio"]:
            tripped.append(f"perplexity ratio {ratio:.2f} > {self.limits['max_perplexity_ratio']}")
        if drop > self.limits["max_quality_drop"]:
            tripped.append(f"response quality fell {100 * drop:.0f} points (limit {100 * self.limits['max_quality_drop']:.0f})")
        return {**m, "step": step, "perplexity_ratio": round(ratio, 4), "quality_drop": round(drop, 4),
                "base_perplexity": self.base_ppl, "base_quality": self.base_quality, "tripped": tripped,
                "ok": not tripped}


def guard_prompts(job: TrainingJob, n: int) -> list[dict]:
    """Fixed prompts for the quality check: the eval snapshot's, else the first rows of the training set."""
    snap = job.eval_snapshot or job.train_snapshot
    prompts = []
    with open(snap.file.path, encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if "prompt" in row:
                messages = row["prompt"]
            elif "messages" in row:
                msgs = row["messages"]
                cut = max((i for i, m in enumerate(msgs) if m.get("role") == "assistant"), default=len(msgs))
                messages = msgs[:cut]
            else:
                messages = row.get("input", {}).get("messages") or []
            tools = row.get("tools")
            tools = json.loads(tools) if isinstance(tools, str) else tools
            if messages:
                prompts.append({"messages": messages, "tools": tools or []})
            if len(prompts) >= n:
                break
    return prompts


# --- the callback ---------------------------------------------------------------------------

def _numbers(logs: dict) -> dict:
    return {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float)) and math.isfinite(float(v))}


def make_callback(job: TrainingJob, guard: Guard):
    from transformers import TrainerCallback

    class JobCallback(TrainerCallback):
        """Metric points, heartbeat and cancel checks every step; guard check at every checkpoint."""

        def __init__(self):
            self.cancelled = False
            self.tripped: dict | None = None
            self._beat = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            lifecycle.heartbeat(job, max_steps=state.max_steps, step=state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            values = _numbers(logs)
            if not values:
                return
            MetricPoint.objects.create(job=job, step=state.global_step, epoch=state.epoch, values=values)
            shown = ", ".join(f"{k} {v:.4g}" for k, v in values.items() if k in (
                "loss", "learning_rate", "grad_norm", "eval_loss", "rewards/margins", "rewards/accuracies"))
            if shown:
                lifecycle.log(job, f"step {state.global_step}: {shown}")

        def on_step_end(self, args, state, control, **kwargs):
            now = time.monotonic()
            if now - self._beat < 1.0:
                return
            self._beat = now
            if not lifecycle.heartbeat(job, step=state.global_step):  # cancelled, or taken over
                self.cancelled = True
                control.should_training_stop = True
                control.should_save = job.cancel_requested  # keep the last checkpoint (it is still ours)
                lifecycle.log(job, f"cancel requested: stopping at step {state.global_step}")

        def on_save(self, args, state, control, model=None, **kwargs):
            step = state.global_step
            path = str(Path(args.output_dir) / f"checkpoint-{step}")
            result = guard.check(model, step)
            lifecycle.heartbeat(job)
            Checkpoint.objects.update_or_create(job=job, step=step, defaults={
                "path": path, "healthy": result["ok"], "guard": result})
            lifecycle.log(job, f"checkpoint {step}: perplexity x{result['perplexity_ratio']:.2f}, "
                               f"quality {100 * result['quality']:.0f}% — {'healthy' if result['ok'] else 'TRIPPED'}")
            if not result["ok"] and self.tripped is None:
                self.tripped = result
                control.should_training_stop = True

    return JobCallback()


# --- running a job --------------------------------------------------------------------------

def _load_for_training(job: TrainingJob, device: str):
    """The job's starting model, earlier stages merged (this job trains a fresh adapter on top). Not in
    the checkpoint's own dtype as for inference: bf16 on a GPU that has it (half the memory of float32;
    build_trainer trains in bf16 there), float32 anywhere else (fp16 weights train unstably)."""
    import torch

    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    loaded = load_model(*model_paths(job.base_version), device=device, dtype=dtype)
    return loaded.model, loaded.tokenizer


def _judge_data(job: TrainingJob):
    """A judge trains on both orders of each human pair; some pairs are kept back to evaluate it."""
    from datasets import Dataset

    from . import judging

    pairs = judging.read_pairs(job.train_snapshot.file.path)
    if job.eval_snapshot_id:
        train, held = pairs, judging.read_pairs(job.eval_snapshot.file.path)
        source = f"held-out pairs of snapshot {job.eval_snapshot.name}"
    else:
        train, held = judging.split_pairs(pairs)
        source = f"{int(100 * judging.HELD_OUT_SHARE)}% of the pairs of {job.train_snapshot.name}, by context"
    rows = judging.training_rows(train, reasons=bool(job.params.get("judge_reasons")))
    return Dataset.from_list(rows), held, source


def _dataset(job: TrainingJob):
    from datasets import load_dataset

    ds = load_dataset("json", data_files=job.train_snapshot.file.path, split="train")
    keep = {"messages", "tools"} if job.train_snapshot.layout == "trl_messages" else \
        {"prompt", "completion", "tools"} if job.train_snapshot.layout == "trl_prompt_completion" else \
        {"prompt", "chosen", "rejected", "tools"}
    return ds.remove_columns([c for c in ds.column_names if c not in keep])


def build_trainer(job: TrainingJob, model, tokenizer, dataset, device: str, callbacks=()):
    """The TRL trainer for this job (also used by benchmarks/training_overhead.py for the bare run)."""
    import torch
    from peft import LoraConfig

    p = job.params
    peft_config = LoraConfig(r=p["lora_r"], lora_alpha=p["lora_alpha"], lora_dropout=p["lora_dropout"],
                             target_modules=p["target_modules"], task_type="CAUSAL_LM")
    bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    common = dict(
        output_dir=job.output_dir, learning_rate=p["learning_rate"], num_train_epochs=p["num_train_epochs"],
        max_steps=p["max_steps"] or -1, per_device_train_batch_size=p["per_device_train_batch_size"],
        gradient_accumulation_steps=p["gradient_accumulation_steps"], logging_steps=p["logging_steps"],
        save_strategy="steps", save_steps=p["save_steps"], warmup_steps=p["warmup_ratio"], seed=p["seed"],
        max_length=p["max_length"], report_to="none", bf16=bf16, gradient_checkpointing=False,
        use_cpu=device == "cpu", disable_tqdm=True, dataloader_num_workers=0,
    )
    if job.stage == TrainingJob.Stage.JUDGE:
        from trl import SFTConfig, SFTTrainer

        args = SFTConfig(**common, completion_only_loss=True)
        return SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                          peft_config=peft_config, callbacks=list(callbacks))
    if job.stage == TrainingJob.Stage.SFT:
        from trl import SFTConfig, SFTTrainer

        layout = job.train_snapshot.layout
        args = SFTConfig(**common, assistant_only_loss=layout == "trl_messages",
                         completion_only_loss=True if layout == "trl_prompt_completion" else None)
        return SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                          peft_config=peft_config, callbacks=list(callbacks))
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(**common, beta=p["beta"], loss_type=p["loss_type"])
    return DPOTrainer(model=model, ref_model=None, args=args, train_dataset=dataset, processing_class=tokenizer,
                      peft_config=peft_config, callbacks=list(callbacks))


def _register(job: TrainingJob, adapter_dir: str, note: str) -> ModelVersion:
    name = f"{job.base_version.name}+{job.stage}-job{job.pk}"
    version, _ = ModelVersion.objects.update_or_create(project=job.project, name=name, defaults={
        "adapter_path": adapter_dir, "parent": job.base_version,
        "origin": {TrainingJob.Stage.SFT: ModelVersion.Origin.SFT, TrainingJob.Stage.DPO: ModelVersion.Origin.DPO,
                   TrainingJob.Stage.JUDGE: ModelVersion.Origin.JUDGE}[job.stage],
        "notes": note, "created_by": job.created_by,
        "metadata": {"training_job": job.pk, "train_snapshot_ids": [job.train_snapshot_id],
                     "snapshot_sha256": job.train_snapshot.sha256, "params": job.params,
                     **({"judge_reasons": bool(job.params.get("judge_reasons"))}
                        if job.stage == TrainingJob.Stage.JUDGE else {})},
    })
    return version


def run_job(job_id: int) -> TrainingJob | None:
    job = lifecycle.claim(TrainingJob, job_id)
    if job is None:
        return None  # finished, cancelled, or owned by a live worker
    started = time.monotonic()
    try:
        with lifecycle.attempt(job, beat_every=30):  # loading and guard checks take longer than a step
            _run(job, started)
    except Exception as exc:  # noqa: BLE001 - any failure is recorded on the job, with its reason
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower():
            reason = (f"Out of memory on {job.device or 'the device'}: lower per_device_train_batch_size or "
                      f"max_length, or raise gradient_accumulation_steps. ({exc})")
        else:
            reason = f"{type(exc).__name__}: {exc}"
        lifecycle.log(job, "failed: " + reason)
        lifecycle.finish(job, TrainingJob.State.FAILED, f"{reason} {job.resume_hint}")
    job.refresh_from_db()
    return job


def _run(job: TrainingJob, started: float) -> None:
    import torch

    problems = readiness_problems(job)
    if problems:
        lifecycle.finish(job, TrainingJob.State.FAILED, " ".join(problems))
        return
    device = pick_device()
    torch.set_num_threads(max(1, int(os.environ.get("TRAINING_THREADS", "1"))) if device == "cpu" else torch.get_num_threads())
    out = Path(settings.MEDIA_ROOT) / "training" / f"job-{job.pk}"
    out.mkdir(parents=True, exist_ok=True)
    lifecycle.heartbeat(job, device=f"{device}" + (f" ({torch.cuda.get_device_name(0)})" if device == "cuda" else ""),
                        output_dir=str(out))
    lifecycle.log(job, f"attempt {job.attempts} on {job.worker}, device {job.device}")
    t0 = time.monotonic()
    model, tokenizer = _load_for_training(job, device)
    held, held_source = [], ""
    if job.stage == TrainingJob.Stage.JUDGE:
        dataset, held, held_source = _judge_data(job)
    else:
        dataset = _dataset(job)
    guard = Guard(tokenizer, guard_prompts(job, int({**DEFAULT_GUARD, **job.guard}["prompts"])), job.guard)
    callback = make_callback(job, guard)
    trainer = build_trainer(job, model, tokenizer, dataset, device, callbacks=[callback])
    base = guard.baseline(trainer.model)
    lifecycle.heartbeat(job, guard_report={"baseline": base})
    lifecycle.log(job, f"loaded in {time.monotonic() - t0:.1f}s; {len(dataset)} rows; baseline perplexity "
                       f"{base['perplexity']:.2f}, quality {100 * base['quality']:.0f}%")
    last = job.checkpoints.order_by("-step").first()
    resume_from = last.path if last and Path(last.path).is_dir() else None
    if resume_from:
        lifecycle.log(job, f"resuming from checkpoint {last.step}")
    t1 = time.monotonic()
    trainer.train(resume_from_checkpoint=resume_from)
    train_seconds = time.monotonic() - t1
    timings = {"load_s": round(t1 - t0, 2), "train_s": round(train_seconds, 2),
               "steps": trainer.state.global_step,
               "s_per_step": round(train_seconds / max(1, trainer.state.global_step - (last.step if resume_from else 0)), 4)}

    if callback.tripped is None and not callback.cancelled:
        final = guard.check(trainer.model, trainer.state.global_step)
        if not final["ok"]:
            callback.tripped = final
    if callback.tripped is not None:
        healthy = job.checkpoints.filter(healthy=True).order_by("-step").first()
        report = {"baseline": base, "tripped": callback.tripped}
        if healthy is None:
            lifecycle.finish(job, TrainingJob.State.STOPPED_BY_GUARD,
                             f"Stopped by the guard at step {callback.tripped['step']}: {'; '.join(callback.tripped['tripped'])}. "
                             "No checkpoint was healthy, so no model was registered.", guard_report=report, timings=timings)
            return
        version = _register(job, healthy.path, f"Last healthy checkpoint (step {healthy.step}) of job {job.pk}, "
                                                 "kept when the guard stopped it.")
        lifecycle.finish(job, TrainingJob.State.STOPPED_BY_GUARD,
                         f"Stopped by the guard at step {callback.tripped['step']}: {'; '.join(callback.tripped['tripped'])}. "
                         f"The healthy checkpoint of step {healthy.step} is the result.",
                         guard_report=report, timings=timings, result_version=version)
        return
    if callback.cancelled:
        lifecycle.finish(job, TrainingJob.State.CANCELLED,
                         f"Cancelled at step {trainer.state.global_step}; the checkpoint there is kept and Resume continues from it.",
                         timings=timings)
        return
    adapter_dir = out / "adapter"
    trainer.save_model(str(adapter_dir))
    note = f"{job.get_stage_display()} job {job.pk} on snapshot {job.train_snapshot.name}, {trainer.state.global_step} steps."
    version = _register(job, str(adapter_dir), note)
    if job.merge_weights:
        merged = out / "merged"
        trainer.model.merge_and_unload().save_pretrained(str(merged))
        tokenizer.save_pretrained(str(merged))
        version.metadata = {**version.metadata, "merged_path": str(merged)}
        version.save(update_fields=["metadata"])
    timings["total_s"] = round(time.monotonic() - started, 2)
    lifecycle.finish(job, TrainingJob.State.SUCCEEDED, f"Done: {version.name} registered.", timings=timings,
                     result_version=version, step=trainer.state.global_step,
                     guard_report={"baseline": base, "final": final})
    lifecycle.log(job, f"succeeded in {timings['total_s']}s")
    if job.stage == TrainingJob.Stage.JUDGE:
        _evaluate_judge(job, version, held, held_source)
        return
    for line in hooks.version_trained(job, version):
        lifecycle.log(job, line)


def _evaluate_judge(job: TrainingJob, version: ModelVersion, held: list[dict], source: str) -> None:
    """The judge's report: agreement with the held-out human pairs (never trained on), position bias,
    calibration, and the human ceiling. A failure here is logged; the trained judge stays."""
    if not held:
        lifecycle.log(job, "no held-out pairs: the judge was not evaluated (build a DPO snapshot of eval items)")
        return
    try:
        from . import judging

        ev = judging.evaluate(version, held, job=job, source=source)
        ceiling = "n/a" if ev.human_agreement is None else f"{100 * ev.human_agreement:.0f}%"
        lifecycle.log(job, f"judge on {ev.pairs} held-out pairs: accuracy {100 * ev.accuracy:.1f}% ± "
                           f"{100 * ev.accuracy_se:.1f}, position flips {100 * ev.position_bias_rate:.0f}%, "
                           f"human agreement {ceiling}")
    except Exception as exc:  # noqa: BLE001 - reported on the job; the judge itself is fine
        lifecycle.log(job, f"could not evaluate the judge: {type(exc).__name__}: {exc}")


def create_job(project, user, *, stage, base_version, train_snapshot, eval_snapshot=None, preset="lora-r8",
               overrides=None, allow_raw_base=False, merge_weights=False, evaluate_after=False, guard=None,
               name="", start=True) -> TrainingJob:
    """Validate and create a job (pages and API both call this). Raises ValidationError with fields."""
    from django.core.exceptions import ValidationError

    params, errors = clean_params(stage, preset, overrides or {})
    if stage not in TrainingJob.Stage.values:
        errors["stage"] = "sft, dpo or judge"
    guard_cfg = {**(JUDGE_GUARD if stage == TrainingJob.Stage.JUDGE else DEFAULT_GUARD), **(guard or {})}
    for key in ("max_perplexity_ratio", "max_quality_drop"):
        try:
            guard_cfg[key] = float(guard_cfg[key])
        except (TypeError, ValueError):
            errors[f"guard.{key}"] = "must be a number"
    if not errors:
        job = TrainingJob(project=project, stage=stage, base_version=base_version, train_snapshot=train_snapshot,
                          eval_snapshot=eval_snapshot, allow_raw_base=allow_raw_base, params=params, guard=guard_cfg,
                          merge_weights=merge_weights, evaluate_after=evaluate_after, created_by=user,
                          name=name or f"{stage.upper()} on {train_snapshot.name} from {base_version.name}")
        problems = readiness_problems(job)
        if problems:
            errors["__all__"] = problems
    if errors:
        raise ValidationError({k: v if isinstance(v, list) else [v] for k, v in errors.items()})
    with transaction.atomic():
        job.save()
        if start:
            lifecycle.enqueue(job)
    return job
