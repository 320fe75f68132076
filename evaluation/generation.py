"""Batched greedy generation with transformers, for eval runs of a local model.

    loaded = load_model("var/models/demo-base")                    # or a base + PEFT adapter
    outs = generate(loaded, [(messages, tools), ...], max_new_tokens=256, batch_size=16)
    outs[0].text, outs[0].stopped_at_limit

The same code path serves the tiny demo model on a CPU and a real model folder
(e.g. Qwen3-8B) on a GPU: ``from_pretrained(path)``, never a hub download.

How a batch is generated: prompts are rendered with the tokenizer's chat template (each
case with its own tools), sorted by length so a batch pads little, left-padded (a causal
LM continues from the right edge), and decoded greedily up to ``max_new_tokens``. Output
stops at the end-of-turn token (``<|im_end|>`` and the model's EOS ids); that token is
dropped from the text, everything else — ``<think>``, ``<tool_call>``, a leaked template
token — is kept for the metrics to judge. A row that never produced a stop token
"stopped at the limit", which metrics.md counts as ``end_repetition``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

# A fixed general-text set for the perplexity check: plain English prose with no shop,
# tools or chat template in it. A fine-tune that damages the model's general language
# ("brain damage") shows up as a rise of perplexity here before anywhere else.
GENERAL_TEXTS = [
    "The river runs slowly through the valley, past old stone bridges and quiet farms.",
    "In the morning the market opens early, and the first customers arrive before seven.",
    "She wrote the letter twice, because the first version said too much and the second too little.",
    "Most of the city was rebuilt after the fire, but a few narrow streets still follow the old plan.",
    "Rain is expected later today, with clearer skies and cooler air arriving tomorrow night.",
    "A good recipe lists its ingredients in the order they are used and says how long each step takes.",
    "The committee met on Tuesday to discuss the budget, and most members agreed to delay the vote.",
    "Children learn to read at different speeds, and patience matters more than any single method.",
    "The train was late again, so he walked the last two miles and arrived just as the doors closed.",
    "Water boils at a lower temperature high in the mountains, which is why cooking takes longer there.",
    "Thank you for your message. I will reply in more detail once I have read the report.",
    "The museum keeps its oldest maps in a dark room, where the light cannot fade the ink.",
]
SMALL_MODEL_PARAMS = 50_000_000  # below this, one CPU thread is faster than several


@dataclass
class Generation:
    text: str
    new_tokens: int
    stopped_at_limit: bool
    error: str = ""


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    device: str
    params: int
    stop_ids: list[int]
    max_positions: int | None
    label: str


def resolve_path(path: str) -> str:
    """Model folders are absolute or relative to MODEL_DIR (then to the working directory)."""
    if not path:
        return ""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return str(p)
    from django.conf import settings

    candidate = Path(settings.MODEL_DIR) / p
    return str(candidate) if candidate.exists() else str(p)


def model_paths(model_version) -> tuple[str, list[str]]:
    """(base folder, adapter folders to merge in order) of a ModelVersion, by the training app's
    rule (training/loading.py): base -> SFT adapter -> DPO adapter trained on the merged SFT model.
    Raises ValueError when no ancestor has a base folder."""
    from training.loading import ModelNotFound, resolve

    try:
        base, adapters = resolve(model_version)
    except ModelNotFound as exc:
        raise ValueError(str(exc)) from None
    return resolve_path(base), [resolve_path(a) for a in adapters]


def pick_device(requested: str = "auto") -> str:
    import torch

    if requested and requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(path: str, adapters: list[str] | str | None = None, device: str = "auto") -> LoadedModel:
    """A local causal LM, with its LoRA adapters merged in order, ready for greedy generation."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    adapters = [adapters] if isinstance(adapters, str) and adapters else list(adapters or [])
    if not path:
        raise ValueError("this model version has no model folder (path) to load")
    if not Path(path).is_dir():
        raise ValueError(f"model folder {path} does not exist on this worker")
    for adapter in adapters:
        if not Path(adapter).is_dir():
            raise ValueError(f"adapter folder {adapter} does not exist on this worker")
    device = pick_device(device)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.chat_template is None:
        raise ValueError(f"the tokenizer in {path} has no chat template")
    tokenizer.padding_side = "left"
    dtype = torch.float32 if device == "cpu" else "auto"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
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
    label = " + ".join([Path(path).name] + [Path(a).parent.name + "/" + Path(a).name for a in adapters])
    return LoadedModel(model, tokenizer, device, params, sorted(stop_ids),
                       getattr(model.config, "max_position_embeddings", None), label)


class threads_for:
    """One CPU thread for tiny models (several threads make them ~8x slower), restored after."""

    def __init__(self, loaded: LoadedModel):
        self.loaded = loaded
        self.saved = None

    def __enter__(self):
        import torch

        if self.loaded.device == "cpu" and self.loaded.params < SMALL_MODEL_PARAMS:
            self.saved = torch.get_num_threads()
            torch.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        import torch

        if self.saved is not None:
            torch.set_num_threads(self.saved)


def clean_context(messages: list) -> list:
    """Messages as a chat template expects them: standard keys, tool-call arguments as objects
    (Qwen's template writes them with tojson; a string would be quoted twice)."""
    import json

    out = []
    for m in messages:
        msg = {"role": m.get("role"), "content": m.get("content") or ""}
        if m.get("tool_calls"):
            calls = []
            for c in m["tool_calls"]:
                fn = dict(c.get("function") or {})
                args = fn.get("arguments")
                if isinstance(args, str):
                    try:
                        fn["arguments"] = json.loads(args) if args.strip() else {}
                    except ValueError:
                        pass
                calls.append({"type": "function", "id": c.get("id"), "function": fn})
            msg["tool_calls"] = calls
        for key in ("tool_call_id", "name", "reasoning_content"):
            if m.get(key):
                msg[key] = m[key]
        out.append(msg)
    return out


def encode(loaded: LoadedModel, messages: list, tools: list | None, template_kwargs: dict | None = None) -> list[int]:
    text = loaded.tokenizer.apply_chat_template(
        clean_context(messages), tools=tools or None, add_generation_prompt=True, tokenize=False,
        **(template_kwargs or {}))
    return loaded.tokenizer(text, add_special_tokens=False)["input_ids"]


def generate_batch(loaded: LoadedModel, prompts: list[list[int]], max_new_tokens: int) -> list[Generation]:
    """Greedy continuations of already-encoded prompts, as one left-padded batch."""
    import torch

    tok = loaded.tokenizer
    pad_id = tok.pad_token_id
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(prompts), width), dtype=torch.long)
    for r, p in enumerate(prompts):
        input_ids[r, width - len(p):] = torch.tensor(p, dtype=torch.long)
        attention[r, width - len(p):] = 1
    with torch.inference_mode():
        output = loaded.model.generate(
            input_ids=input_ids.to(loaded.device), attention_mask=attention.to(loaded.device),
            do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
            eos_token_id=loaded.stop_ids or None, pad_token_id=pad_id,
            temperature=None, top_p=None, top_k=None)
    stops = set(loaded.stop_ids)
    results = []
    for r in range(len(prompts)):
        new = output[r, width:].tolist()
        cut = next((i for i, t in enumerate(new) if t in stops), None)
        if cut is None:
            # no stop token: the row ran to the limit (trailing pads only appear after a stop)
            results.append(Generation(tok.decode(new, skip_special_tokens=False), len(new), True))
        else:
            results.append(Generation(tok.decode(new[:cut], skip_special_tokens=False), cut, False))
    return results


def plan_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar prompt length (least padding)."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), max(1, batch_size))]


def too_long(loaded: LoadedModel, prompt: list[int], max_new_tokens: int) -> str:
    if loaded.max_positions and len(prompt) + max_new_tokens > loaded.max_positions:
        return (f"the prompt is {len(prompt)} tokens; with {max_new_tokens} new tokens it exceeds the model's "
                f"{loaded.max_positions} positions")
    return ""


def generate(loaded: LoadedModel, items: list[tuple[list, list]], max_new_tokens: int = 256,
             batch_size: int = 16, template_kwargs: dict | None = None) -> list[Generation]:
    """Greedy outputs for (messages, tools) pairs, in the order given."""
    prompts = [encode(loaded, messages, tools, template_kwargs) for messages, tools in items]
    results: list[Generation | None] = [None] * len(items)
    with threads_for(loaded):
        for batch in plan_batches([len(p) for p in prompts], batch_size):
            runnable = []
            for i in batch:
                problem = too_long(loaded, prompts[i], max_new_tokens)
                if problem:
                    results[i] = Generation("", 0, False, problem)
                else:
                    runnable.append(i)
            if runnable:
                for i, g in zip(runnable, generate_batch(loaded, [prompts[i] for i in runnable], max_new_tokens),
                                strict=True):
                    results[i] = g
    return results


def perplexity(loaded: LoadedModel, texts: list[str] | None = None, batch_size: int = 8) -> float | None:
    """exp(mean token negative log-likelihood) over the general-text set."""
    import math

    import torch

    texts = [t for t in (texts or GENERAL_TEXTS) if t and t.strip()]
    tok = loaded.tokenizer
    total_nll, total_tokens = 0.0, 0
    with threads_for(loaded), torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            chunk = [tok(t, add_special_tokens=False)["input_ids"] for t in texts[start:start + batch_size]]
            if loaded.max_positions:
                chunk = [ids[:loaded.max_positions] for ids in chunk]
            chunk = [ids for ids in chunk if len(ids) >= 2]
            if not chunk:
                continue
            width = max(len(ids) for ids in chunk)
            input_ids = torch.full((len(chunk), width), tok.pad_token_id, dtype=torch.long)
            attention = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, ids in enumerate(chunk):  # right padding: real tokens never attend to pads
                input_ids[r, :len(ids)] = torch.tensor(ids)
                attention[r, :len(ids)] = 1
            logits = loaded.model(input_ids=input_ids.to(loaded.device),
                                  attention_mask=attention.to(loaded.device)).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            target = input_ids[:, 1:].to(loaded.device)
            mask = attention[:, 1:].to(loaded.device).bool()
            nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
            total_nll += float(nll[mask].sum())
            total_tokens += int(mask.sum())
    if not total_tokens:
        return None
    return math.exp(total_nll / total_tokens)


def texts_fingerprint(texts: list[str] | None) -> str:
    """Perplexities are comparable only over the same texts."""
    h = hashlib.sha256()
    for t in texts or GENERAL_TEXTS:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]
