"""The brain-damage guard: perplexity and response quality checked against the starting model."""

import json

from inference.perplexity import perplexity
from toolcalls.score import score_case

from ..models import TrainingJob
from .params import DEFAULT_GUARD


class Guard:
    """Perplexity on the fixed general texts (inference.perplexity, the same the promotion gate reads)
    relative to the job's starting model, and response quality (metrics.md) on fixed prompts. A check
    that crosses a limit stops the job."""

    def __init__(self, tokenizer, prompts: list[dict], limits: dict):
        self.tokenizer, self.prompts = tokenizer, prompts
        self.limits = {**DEFAULT_GUARD, **(limits or {})}
        self.base_ppl = self.base_quality = None

    def _quality(self, model) -> tuple[float, list[str]]:
        from ..demo_model import generate  # lazy: demo_model imports torch at module level

        if not self.prompts:
            return 1.0, []
        by_tools: dict[str, list[int]] = {}
        for i, p in enumerate(self.prompts):
            by_tools.setdefault(json.dumps(p.get("tools") or [], sort_keys=True), []).append(i)
        outs: list[dict] = [{}] * len(self.prompts)
        for tools_json, idx in by_tools.items():
            got = generate(
                model,
                self.tokenizer,
                [self.prompts[i]["messages"] for i in idx],
                tools=json.loads(tools_json) or None,
                max_new_tokens=int(self.limits["max_new_tokens"]),
                batch_size=8,
                return_details=True,
            )
            for i, o in zip(idx, got, strict=True):
                outs[i] = o
        scores = [
            score_case(
                {"role": "assistant", "content": "-"},
                o["text"],
                p.get("tools") or [],
                stopped_at_limit=o["hit_limit"],
            )["response_quality"]
            for o, p in zip(outs, self.prompts, strict=True)
        ]
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
            tripped.append(
                f"response quality fell {100 * drop:.0f} points "
                f"(limit {100 * self.limits['max_quality_drop']:.0f})"
            )
        return {
            **m,
            "step": step,
            "perplexity_ratio": round(ratio, 4),
            "quality_drop": round(drop, 4),
            "base_perplexity": self.base_ppl,
            "base_quality": self.base_quality,
            "tripped": tripped,
            "ok": not tripped,
        }


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
