"""Verdicts: a local judge (the log probability of completing "A" vs "B") or an external
OpenAI-compatible endpoint; judge_pairs asks in both orders and PairVerdict.verdict is the one rule
that turns the two answers into "x", "y" or "unsure"."""

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

# A verdict is decided only when each order, on its own, gives the same answer at least this much over
# even odds (P >= 0.5 + margin); otherwise the judge is unsure. A judge version may carry its own
# (metadata "decision_margin").
DEFAULT_MARGIN = 0.05
X, Y, UNSURE = "x", "y", "unsure"
MIRROR = {X: Y, Y: X, UNSURE: UNSURE}


@dataclass
class Verdict:
    prob_a: float  # P(the first-shown answer is better), this order only
    reason: str = ""


def decide(x_first: float, y_first: float, margin: float = DEFAULT_MARGIN) -> str:
    """The symmetric verdict on a pair {x, y} from its two single-order answers.

    x_first: P(x is better) asked with x shown as A; y_first: P(y is better) asked with y shown as A.
    x wins when the first order favours x and the second order favours x too (y_first low), each by at
    least the margin; y likewise; anything else is unsure. Exchanging the arguments exchanges the two
    conditions, so decide(b, a) is always the mirror of decide(a, b): the same pair asked the other
    way round can never get the opposite verdict.
    """
    if x_first > y_first and x_first >= 0.5 + margin and y_first <= 0.5 - margin:
        return X
    if y_first > x_first and y_first >= 0.5 + margin and x_first <= 0.5 - margin:
        return Y
    return UNSURE


@dataclass(frozen=True)
class PairVerdict:
    """What a judge said about one pair {x, y}, asked in both orders: the unordered evidence.

    x_first: P(x better) with x shown as A; y_first: P(y better) with y shown as A. The same pair
    judged as (y, x) is PairVerdict(y_first, x_first): swapped() — and every figure below either stays
    or mirrors under that swap."""

    x_first: float
    y_first: float
    reason: str = ""
    margin: float = DEFAULT_MARGIN

    @property
    def p_first(self) -> float:
        """P(x better) with x shown first (as A)."""
        return self.x_first

    @property
    def p_second(self) -> float:
        """P(x better) with x shown second (as B)."""
        return 1 - self.y_first

    @property
    def prob(self) -> float:
        """P(x is better), averaged over both orders (position bias cancels)."""
        return (self.x_first + 1 - self.y_first) / 2

    @property
    def verdict(self) -> str:
        """X, Y or UNSURE: see decide()."""
        return decide(self.x_first, self.y_first, self.margin)

    @property
    def flips(self) -> bool:
        """The two orders, each on its own, name different answers as the better one."""
        return (self.x_first > 0.5 and self.y_first > 0.5) or (self.x_first < 0.5 and self.y_first < 0.5)

    @property
    def consistent(self) -> bool:
        return not self.flips

    def swapped(self) -> PairVerdict:
        return PairVerdict(self.y_first, self.x_first, self.reason, self.margin)


def decision_margin(version) -> float:
    value = (version.metadata or {}).get("decision_margin")
    try:
        return DEFAULT_MARGIN if value is None else min(0.49, max(0.0, float(value)))
    except (TypeError, ValueError):
        return DEFAULT_MARGIN


class LocalJudge:
    """A causal LM (base + adapters) read as a judge: compare log P("A") with log P("B").

    The one place a local judge's probabilities are made: P(A) = sigmoid((log P("A") - log P("B")) / T)
    with the temperature T fitted for this judge version (metadata "judge_temperature", 1 if none; see
    calibration.py)."""

    def __init__(self, version, device: str = "auto", batch_size: int = 16, temperature: float | None = None):
        path, adapters = model_paths(version)
        meta = version.metadata or {}
        self.loaded = load_model(path, adapters, device=device)
        self.tokenizer = self.loaded.tokenizer
        self.batch_size = batch_size
        self.reasons = bool(meta.get("judge_reasons"))
        self.temperature = float(temperature or meta.get("judge_temperature") or 1.0)
        self.margin = decision_margin(version)
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

    def logit_gaps(self, prompts: list[list[dict]]) -> tuple[list[float], list[str]]:
        """log P("A") - log P("B") for each prompt (before the temperature), and the reasons."""
        reasons = self._reasons(prompts) if self.reasons else [""] * len(prompts)
        items = []
        for messages, reason in zip(prompts, reasons, strict=True):
            items.append(self._encode(messages, completion_text("A", reason)))
            items.append(self._encode(messages, completion_text("B", reason)))
        with threads_for(self.loaded):
            lp = self._logprobs(items)
        return [lp[2 * k] - lp[2 * k + 1] for k in range(len(reasons))], reasons

    def verdicts(self, prompts: list[list[dict]]) -> list[Verdict]:
        gaps, reasons = self.logit_gaps(prompts)
        return [
            Verdict(prob_a=sigmoid(gap / self.temperature), reason=reason)
            for gap, reason in zip(gaps, reasons, strict=True)
        ]


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-max(-50.0, min(50.0, z))))


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
        self.margin = decision_margin(version)
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
    """pairs: (context, tools, x, y). Each is judged in both orders; the result is about x.

    The two prompts of a pair are put to the judge in an order of their own (by their text), so the
    judge sees the very same batch whether it is asked about (x, y) or (y, x), and the result of one
    is exactly the swapped() result of the other."""
    prompts, x_at = [], []
    for context, tools, x, y in pairs:
        xy, yx = judge_prompt(context, tools, x, y), judge_prompt(context, tools, y, x)
        x_first_goes_first = xy[-1]["content"] <= yx[-1]["content"]
        prompts.extend([xy, yx] if x_first_goes_first else [yx, xy])
        x_at.append(0 if x_first_goes_first else 1)
    v = judge.verdicts(prompts) if prompts else []
    margin = getattr(judge, "margin", DEFAULT_MARGIN)
    out = []
    for k, at in enumerate(x_at):
        xv, yv = v[2 * k + at], v[2 * k + 1 - at]
        out.append(PairVerdict(x_first=xv.prob_a, y_first=yv.prob_a, reason=xv.reason, margin=margin))
    return out
