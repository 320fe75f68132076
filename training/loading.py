"""Load a ModelVersion as a ready model: a base folder plus the LoRA adapters of its lineage.

A version with `path` and no adapter is a full model (a base, or merged weights). A version
with `adapter_path` applies on top of what its parent resolves to (or on its own `path`
when that is set). So base -> SFT (adapter) -> DPO (adapter trained on the merged SFT model)
loads as: base weights, merge the SFT adapter, merge the DPO adapter.
"""

from pathlib import Path

from .models import ModelVersion


class ModelNotFound(Exception):
    pass


def resolve(version: ModelVersion) -> tuple[str, list[str]]:
    """(base model folder, adapter folders to apply in order)."""
    adapters: list[str] = []
    node, seen = version, set()
    while node is not None and node.pk not in seen:
        seen.add(node.pk)
        if node.adapter_path:
            adapters.append(node.adapter_path)
            if node.path:
                return node.path, list(reversed(adapters))
        elif node.path:
            return node.path, list(reversed(adapters))
        node = node.parent
    raise ModelNotFound(f"Model version {version.name!r} has no base model folder in its lineage.")


def check_folders(version: ModelVersion) -> list[str]:
    """Human-readable problems with the folders a version needs (empty list when loadable)."""
    try:
        base, adapters = resolve(version)
    except ModelNotFound as exc:
        return [str(exc)]
    problems = []
    if not (Path(base) / "config.json").is_file():
        problems.append(f"The base model folder {base} is missing or has no config.json.")
    for adapter in adapters:
        if not (Path(adapter) / "adapter_config.json").is_file():
            problems.append(f"The adapter folder {adapter} is missing or has no adapter_config.json.")
    return problems


def device_name() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(version: ModelVersion, device: str | None = None):
    """(model, tokenizer) in eval mode, adapters merged, on `device` (cuda when available)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    problems = check_folders(version)
    if problems:
        raise ModelNotFound(" ".join(problems))
    base, adapters = resolve(version)
    device = device or device_name()
    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    for adapter in adapters:
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.to(device)
    model.eval()
    return model, tokenizer
