"""Verdicts: a local judge (the log probability of completing "A" vs "B") or an external
OpenAI-compatible endpoint, and judge_pairs, which asks in both orders."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from django.conf import settings

from annotator.model_lineage import model_paths
from annotator.models import ModelVersion
from inference.client import ChatClient
from inference.generation import generate, threads_for
from inference.loading import load_model

from .prompt import VERDICT_PREFIX, completion_text, judge_prompt


@dataclass
class Verdict:
    prob_a: float  # P(the first-shown answer is better), this order only
    reason: str = ""


@dataclass
class PairVerdict:
    """Both orders of one pair. p_first: P(x better) with x shown as A; p_second: with x shown as B."""

    p_first: float
    p_second: float
    reason: str = ""

    @property
    def prob(self) -> float:
        """P(x is better), averaged over both orders (position bias cancels)."""
        return (self.p_first + self.p_second) / 2

    @property
    def consistent(self) -> bool:
        """The same answer wins whichever slot it is shown in."""
        return (self.p_first >= 0.5) == (self.p_second >= 0.5)


class LocalJudge:
    """A causal LM (base + adapters) read as a judge: compare log P("A") with log P("B")."""

    def __init__(self, version, device: str = "auto", batch_size: int = 16):
        path, adapters = model_paths(version)
        self.loaded = load_model(path, adapters, device=device)
        self.tokenizer = self.loaded.tokenizer
        self.batch_size = batch_size
        self.reasons = bool((version.metadata or {}).get("judge_reasons"))
        self.name = version.name

    def _encode(self, messages: list[dict], completion: str) -> tuple[list[int], list[int]]:
        tok = self.tokenizer
        prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        full = tok.apply_chat_template(
            messages + [{"role": "assistant", "content": completion}], tokenize=False
        )
        suffix = full[len(prompt) :] if full.startswith(prompt) else completion
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        c_ids = tok(suffix, add_special_tokens=False)["input_ids"]
        limit = (self.loaded.max_positions or 4096) - len(c_ids)
        return p_ids[-limit:], c_ids

    def _logprobs(self, items: list[tuple[list[int], list[int]]]) -> list[float]:
        """Sum of log P(completion tokens | prompt) for each (prompt ids, completion ids)."""
        import torch

        model = self.loaded.model
        pad = self.tokenizer.pad_token_id or 0
        out: list[float] = [0.0] * len(items)
        order = sorted(range(len(items)), key=lambda i: len(items[i][0]) + len(items[i][1]))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                width = max(len(items[i][0]) + len(items[i][1]) for i in rows)
                ids = torch.full((len(rows), width), pad, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for r, i in enumerate(rows):
                    seq = items[i][0] + items[i][1]
                    ids[r, : len(seq)] = torch.tensor(seq)
                    mask[r, : len(seq)] = 1
                logits = model(
                    input_ids=ids.to(model.device), attention_mask=mask.to(model.device)
                ).logits.float()
                logp = torch.log_softmax(logits, dim=-1)
                for r, i in enumerate(rows):
                    p_len, c_len = len(items[i][0]), len(items[i][1])
                    targets = torch.tensor(items[i][1], device=logp.device)
                    positions = torch.arange(p_len - 1, p_len - 1 + c_len, device=logp.device)
                    out[i] = float(logp[r, positions, targets].sum())
        return out

    def _reasons(self, prompts: list[list[dict]]) -> list[str]:
        gens = generate(
            self.loaded, [(m, None) for m in prompts], max_new_tokens=96, batch_size=self.batch_size
        )
        return [" ".join(g.text.split(VERDICT_PREFIX)[0].split())[:300] for g in gens]

    def verdicts(self, prompts: list[list[dict]]) -> list[Verdict]:
        reasons = self._reasons(prompts) if self.reasons else [""] * len(prompts)
        items = []
        for messages, reason in zip(prompts, reasons, strict=True):
            items.append(self._encode(messages, completion_text("A", reason)))
            items.append(self._encode(messages, completion_text("B", reason)))
        with threads_for(self.loaded):
            lp = self._logprobs(items)
        out = []
        for k, reason in enumerate(reasons):
            a, b = lp[2 * k], lp[2 * k + 1]
            out.append(Verdict(prob_a=1 / (1 + math.exp(max(-50.0, min(50.0, b - a)))), reason=reason))
        return out


class EndpointJudge:
    """A judge behind an OpenAI-compatible chat endpoint: the last A or B of its reply is the verdict."""

    def __init__(self, version, client=None):
        meta = version.metadata or {}
        if client is None:
            if not meta.get("base_url"):
                raise ValueError(f"{version.name} has no endpoint: set metadata.base_url (and model)")
            client = ChatClient(
                meta["base_url"],
                meta.get("model") or version.name,
                api_key=version.api_key,
                allowed_hosts=settings.MODEL_ENDPOINT_ALLOWED_HOSTS,
            )
        self.client = client
        self.name = version.name

    def verdicts(self, prompts: list[list[dict]]) -> list[Verdict]:
        done = self.client.complete_many([(m, None) for m in prompts], max_tokens=128)
        out = []
        for c in done:
            letters = re.findall(r"\b([AB])\b", c.text or "")
            letter = letters[-1] if letters else None
            reason = (
                (c.text or "").split(VERDICT_PREFIX)[0].strip()[:300]
                if letter
                else (c.error or c.text or "")[:300]
            )
            out.append(
                Verdict(prob_a=0.5 if letter is None else (1.0 if letter == "A" else 0.0), reason=reason)
            )
        return out


def load_judge(version, device: str = "auto"):
    if version.origin == ModelVersion.Origin.EXTERNAL or (version.metadata or {}).get("base_url"):
        return EndpointJudge(version)
    return LocalJudge(version, device=device)


def judge_pairs(judge, pairs: list[tuple[list, list, object, object]]) -> list[PairVerdict]:
    """pairs: (context, tools, x, y). Each is judged in both orders; the result is about x."""
    prompts = []
    for context, tools, x, y in pairs:
        prompts.append(judge_prompt(context, tools, x, y))
        prompts.append(judge_prompt(context, tools, y, x))
    v = judge.verdicts(prompts) if prompts else []
    return [
        PairVerdict(p_first=v[2 * k].prob_a, p_second=1 - v[2 * k + 1].prob_a, reason=v[2 * k].reason)
        for k in range(len(pairs))
    ]
