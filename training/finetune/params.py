"""Presets and hyper-parameters of a training job, each override checked.

`num_processes` > 1 trains one job data-parallel over that many processes (one per GPU on a GPU host,
gloo processes on a CPU): training/finetune/group.py. The per-device batch is kept, so a step sees
per_device_train_batch_size x gradient_accumulation_steps x num_processes rows, and an epoch has
num_processes times fewer steps than on one process.
"""

import json
import math
import os

COMMON = {
    "lora_r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.05,
    "target_modules": "all-linear",
    "num_train_epochs": 1.0,
    "max_steps": 0,
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 4,
    "max_length": 2048,
    "logging_steps": 5,
    "save_steps": 50,
    "warmup_ratio": 0.03,
    "seed": 42,
    "num_processes": 1,
    # Both apply on CUDA only (a CPU trains in float32, without either).
    "gradient_checkpointing": False,
    "load_in_4bit": False,
}
# A real model (e.g. an 8B agent model) on a GPU: bf16 (build.py, where the GPU has it), gradient
# checkpointing, and the frozen base loaded in 4 bits (QLoRA) when bitsandbytes is installed.
GPU = {**COMMON, "gradient_checkpointing": True, "load_in_4bit": True}
PRESETS = {
    # Rank 8 is usually enough when the base knows the domain.
    "lora-r8": {
        "sft": {**GPU, "learning_rate": 2e-4},
        "dpo": {**GPU, "learning_rate": 5e-6, "beta": 0.1, "loss_type": ["sigmoid"]},
        "judge": {**GPU, "learning_rate": 1e-4, "num_train_epochs": 2.0, "judge_reasons": False},
    },
    # The offline demo model (a few hundred thousand parameters) on a CPU core.
    "demo-tiny": {
        "sft": {
            **COMMON,
            "learning_rate": 3e-3,
            "num_train_epochs": 2.0,
            "per_device_train_batch_size": 8,
            "gradient_accumulation_steps": 1,
            "max_length": 512,
            "logging_steps": 2,
            "save_steps": 10,
            "warmup_ratio": 0.0,
            "lora_dropout": 0.0,
        },
        "dpo": {
            **COMMON,
            "learning_rate": 2e-3,
            "num_train_epochs": 1.0,
            "per_device_train_batch_size": 8,
            "gradient_accumulation_steps": 1,
            "max_length": 512,
            "logging_steps": 2,
            "save_steps": 10,
            "warmup_ratio": 0.0,
            "lora_dropout": 0.0,
            # beta 0.5 keeps the policy near its SFT model: at 0.1 (and lr 5e-3) the demo's DPO garbled the
            # replies that follow tool results (multi-turn response_quality 0.95 -> 0.75)
            "beta": 0.5,
            "loss_type": ["sigmoid", "sft"],
        },
        "judge": {
            **COMMON,
            "learning_rate": 5e-3,  # with 2e-3, 4 epochs left the demo judge flipping on a quarter of pairs
            "num_train_epochs": 4.0,
            "per_device_train_batch_size": 8,
            "gradient_accumulation_steps": 1,
            "max_length": 1024,
            "logging_steps": 2,
            "save_steps": 20,
            "warmup_ratio": 0.0,
            "lora_dropout": 0.0,
            "judge_reasons": False,
        },
    },
}
# Response quality is the mean over the guard's prompts: with 8, one reply in eight (12.5 points) was
# already past the 10-point limit, so a single odd sample stopped a healthy job (the demo's first SFT
# did, at step 10 of 22). With 20 a step is 5 points: it takes three damaged replies to stop a job.
DEFAULT_GUARD = {"max_perplexity_ratio": 1.3, "max_quality_drop": 0.10, "prompts": 20, "max_new_tokens": 64}
# A judge is never used as the agent: its guard only stops a run that diverges outright (its worth is
# measured on held-out human pairs instead), so the agent-answer quality check is off for it.
JUDGE_GUARD = {**DEFAULT_GUARD, "max_perplexity_ratio": 50.0, "max_quality_drop": 1.0}

# name -> (type, minimum, maximum)
PARAM_SPEC = {
    "lora_r": (int, 1, 256),
    "lora_alpha": (int, 1, 1024),
    "lora_dropout": (float, 0.0, 0.9),
    "learning_rate": (float, 1e-8, 10.0),
    "num_train_epochs": (float, 0.01, 100.0),
    "max_steps": (int, 0, 10**7),
    "per_device_train_batch_size": (int, 1, 4096),
    "gradient_accumulation_steps": (int, 1, 4096),
    "max_length": (int, 16, 131072),
    "logging_steps": (int, 1, 10**6),
    "save_steps": (int, 1, 10**7),
    "warmup_ratio": (float, 0.0, 0.5),
    "seed": (int, 0, 2**31 - 1),
    "beta": (float, 1e-4, 100.0),
}
BOOLEAN_PARAMS = {"gradient_checkpointing", "load_in_4bit"}
LOSS_TYPES = {
    "sigmoid",
    "ipo",
    "hinge",
    "robust",
    "bco_pair",
    "sppo_hard",
    "nca_pair",
    "apo_zero",
    "apo_down",
    "sft",
}
SFT_LAYOUTS = {"trl_messages", "trl_prompt_completion"}
DPO_LAYOUTS = {"trl_preference"}
# what each stage trains on: (snapshot kind, layouts)
STAGE_DATA = {"sft": ("sft", SFT_LAYOUTS), "dpo": ("dpo", DPO_LAYOUTS), "judge": ("dpo", DPO_LAYOUTS)}


def max_processes() -> int:
    """The most processes one job may ask for: TRAINING_MAX_PROCESSES (the GPUs of a training host; on a
    CPU, gloo processes), 8 when unset. The worker that runs the job checks its own GPUs again."""
    try:
        return max(1, int(os.environ.get("TRAINING_MAX_PROCESSES", "8")))
    except ValueError:
        return 8


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
            value = (
                raw
                if raw == "all-linear"
                else [s.strip() for s in str(raw).split(",") if s.strip()]
                if isinstance(raw, str)
                else raw
            )
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
        if name in BOOLEAN_PARAMS:
            if raw not in (True, False, "true", "false", "on", "off", "1", "0", 1, 0):
                errors[name] = "true or false"
            else:
                params[name] = raw in (True, "true", "on", "1", 1)
            continue
        if name == "num_processes":
            limit = max_processes()
            value = (
                raw
                if isinstance(raw, int) and not isinstance(raw, bool)
                else int(raw.strip())
                if isinstance(raw, str) and raw.strip().isascii() and raw.strip().isdigit()
                else None
            )
            if value is None:
                errors[name] = f"a whole number of processes, 1 to {limit}"
            elif not 1 <= value <= limit:
                errors[name] = (
                    f"must be between 1 and {limit} (TRAINING_MAX_PROCESSES: the GPUs of a training host)"
                )
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
