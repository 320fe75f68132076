"""Load a local causal LM: a base model folder with its LoRA adapters merged in order.

    loaded = load_model("var/models/demo-base")                  # a full model
    loaded = load_model(base, [sft_adapter, dpo_adapter])        # base + adapter chain
    loaded.model, loaded.tokenizer, loaded.device

The one loader of the project: eval runs, the judge, online rounds, the demo loop and training
jobs all load here, on the device ``pick_device`` chooses. A model is always a folder loaded
with ``from_pretrained(path)``, never a hub download. Which folders make up a ModelVersion is
the app's business (annotator/model_lineage.py); this module knows nothing of Django.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    device: str
    params: int
    stop_ids: list[int]  # end-of-turn ids: <|im_end|> and the model's EOS ids
    max_positions: int | None
    label: str  # "base + job-3/adapter", for logs and run stats


def pick_device(requested: str = "auto") -> str:
    """``requested`` as given ("cpu", "cuda", "cuda:1"), or for "auto" cuda when this machine has it."""
    import torch

    if requested and requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(
    base_path: str,
    adapter_paths: list[str] | str | None = None,
    device: str = "auto",
    dtype=None,
) -> LoadedModel:
    """A local causal LM with its adapters merged, in eval mode on ``device``, its tokenizer padding
    on the left (a causal LM continues from the right edge).

    ``dtype``: None loads float32 on a CPU and the checkpoint's own dtype on a GPU (what inference
    wants); a training job passes its own (bf16 on a GPU that has it, else float32).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if isinstance(adapter_paths, str):
        adapter_paths = [adapter_paths] if adapter_paths else []
    adapters = list(adapter_paths or [])
    if not base_path:
        raise ValueError("this model version has no model folder (path) to load")
    if not Path(base_path).is_dir():
        raise ValueError(f"model folder {base_path} does not exist on this worker")
    for adapter in adapters:
        if not Path(adapter).is_dir():
            raise ValueError(f"adapter folder {adapter} does not exist on this worker")
    device = pick_device(device)
    tokenizer = AutoTokenizer.from_pretrained(base_path, local_files_only=True)
    if tokenizer.chat_template is None:
        raise ValueError(f"the tokenizer in {base_path} has no chat template")
    tokenizer.padding_side = "left"
    if dtype is None:
        dtype = torch.float32 if device == "cpu" else "auto"
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype, local_files_only=True)
    if adapters:
        from peft import PeftModel

        for adapter in adapters:  # merged: plain forward passes afterwards, faster and identical
            model = PeftModel.from_pretrained(model, adapter, is_trainable=False).merge_and_unload()
    model.to(device)
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    stop_ids = set()
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(end, int) and end != tokenizer.unk_token_id and end is not None and end >= 0:
        stop_ids.add(end)
    for source in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(source, int):
            stop_ids.add(source)
        elif isinstance(source, (list, tuple)):
            stop_ids.update(i for i in source if isinstance(i, int))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    label = " + ".join([Path(base_path).name] + [Path(a).parent.name + "/" + Path(a).name for a in adapters])
    return LoadedModel(
        model,
        tokenizer,
        device,
        params,
        sorted(stop_ids),
        getattr(model.config, "max_position_embeddings", None),
        label,
    )
