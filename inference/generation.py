"""Batched greedy generation with transformers, for eval runs of a local model.

    loaded = inference.loading.load_model("var/models/demo-base")    # or a base + adapter chain
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

from dataclasses import dataclass

from .loading import LoadedModel

SMALL_MODEL_PARAMS = 50_000_000  # below this, one CPU thread is faster than several


@dataclass
class Generation:
    text: str
    new_tokens: int
    stopped_at_limit: bool
    error: str = ""


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


def encode(
    loaded: LoadedModel, messages: list, tools: list | None, template_kwargs: dict | None = None
) -> list[int]:
    text = loaded.tokenizer.apply_chat_template(
        clean_context(messages),
        tools=tools or None,
        add_generation_prompt=True,
        tokenize=False,
        **(template_kwargs or {}),
    )
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
        input_ids[r, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        attention[r, width - len(p) :] = 1
    with torch.inference_mode():
        output = loaded.model.generate(
            input_ids=input_ids.to(loaded.device),
            attention_mask=attention.to(loaded.device),
            do_sample=False,
            num_beams=1,
            max_new_tokens=max_new_tokens,
            eos_token_id=loaded.stop_ids or None,
            pad_token_id=pad_id,
            temperature=None,
            top_p=None,
            top_k=None,
        )
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
    return [order[i : i + batch_size] for i in range(0, len(order), max(1, batch_size))]


def too_long(loaded: LoadedModel, prompt: list[int], max_new_tokens: int) -> str:
    if loaded.max_positions and len(prompt) + max_new_tokens > loaded.max_positions:
        return (
            f"the prompt is {len(prompt)} tokens; with {max_new_tokens} new tokens it exceeds the model's "
            f"{loaded.max_positions} positions"
        )
    return ""


def generate(
    loaded: LoadedModel,
    items: list[tuple[list, list]],
    max_new_tokens: int = 256,
    batch_size: int = 16,
    template_kwargs: dict | None = None,
) -> list[Generation]:
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
                for i, g in zip(
                    runnable,
                    generate_batch(loaded, [prompts[i] for i in runnable], max_new_tokens),
                    strict=True,
                ):
                    results[i] = g
    return results
