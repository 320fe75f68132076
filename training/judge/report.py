"""The judge's evaluation against held-out human pairs, beside the human ceiling."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from annotator.models import Preference, Status

from ..models import JudgeEvaluation
from .judges import PairVerdict, judge_pairs, load_judge
from .prompt import answer_text


@dataclass
class Report:
    pairs: int = 0
    accuracy: float | None = None
    accuracy_se: float | None = None
    single_order_accuracy: float | None = None
    position_bias_rate: float | None = None
    first_position_rate: float | None = None
    ece: float | None = None
    brier: float | None = None
    bins: list = field(default_factory=list)


def score_verdicts(verdicts: list[PairVerdict], bins: int = 10) -> Report:
    """Judge figures where x (the argument judged) is the human winner of every pair.

    accuracy: the order-averaged P(winner) > 0.5 (a 0.5 tie counts half), with its binomial SE;
    single_order_accuracy: each order's verdict on its own (2n verdicts);
    position_bias_rate: share of pairs whose verdict flips when A and B swap;
    first_position_rate: share of the 2n verdicts that pick the first slot;
    ece / brier: calibration of the 2n single-order probabilities (10 equal-width confidence bins).
    """
    n = len(verdicts)
    if n == 0:
        return Report()
    hits = sum(1.0 if v.prob > 0.5 else 0.5 if v.prob == 0.5 else 0.0 for v in verdicts)
    acc = hits / n
    singles = [(v.p_first, True) for v in verdicts] + [(v.p_second, False) for v in verdicts]
    single_acc = sum(1 for p, _ in singles if p > 0.5) / (2 * n)
    flips = sum(1 for v in verdicts if not v.consistent) / n
    # the first slot is picked when x shown first wins (p_first >= .5) or when y shown first wins
    # (p_second < .5)
    first = sum((1 if v.p_first >= 0.5 else 0) + (1 if v.p_second < 0.5 else 0) for v in verdicts) / (2 * n)
    table = [[0, 0.0, 0.0] for _ in range(bins)]  # count, sum of confidence, correct
    brier = 0.0
    for p, _ in singles:
        conf = max(p, 1 - p)
        correct = 1.0 if p > 0.5 else 0.0 if p < 0.5 else 0.5
        k = min(bins - 1, int((conf - 0.5) * 2 * bins)) if conf >= 0.5 else 0
        table[k][0] += 1
        table[k][1] += conf
        table[k][2] += correct
        brier += (1 - p) ** 2
    total = 2 * n
    ece = sum(abs(c[2] / c[0] - c[1] / c[0]) * c[0] / total for c in table if c[0])
    bin_rows = [
        {
            "low": round(0.5 + k / (2 * bins), 3),
            "high": round(0.5 + (k + 1) / (2 * bins), 3),
            "count": c[0],
            "confidence": round(c[1] / c[0], 4) if c[0] else None,
            "accuracy": round(c[2] / c[0], 4) if c[0] else None,
        }
        for k, c in enumerate(table)
    ]
    return Report(
        pairs=n,
        accuracy=acc,
        accuracy_se=math.sqrt(acc * (1 - acc) / n),
        single_order_accuracy=single_acc,
        position_bias_rate=flips,
        first_position_rate=first,
        ece=ece,
        brier=brier / total,
        bins=bin_rows,
    )


def human_agreement(project) -> tuple[float | None, int]:
    """Annotator-vs-annotator agreement on the winner of the same pair (ties and "both bad" left out):
    over every pair with two or more such votes, the share of agreeing annotator pairs."""
    votes: dict[frozenset, list[int]] = {}
    for a, b, choice in (
        Preference.objects.filter(
            response_a__conversation__project=project,
            status__in=[Status.SUBMITTED, Status.APPROVED],
            choice__in=["a", "b"],
        )
        .values_list("response_a_id", "response_b_id", "choice")
        .iterator()
    ):
        votes.setdefault(frozenset((a, b)), []).append(a if choice == "a" else b)
    agree = total = items = 0
    for winners in votes.values():
        if len(winners) < 2:
            continue
        items += 1
        counts = Counter(winners)
        k = len(winners)
        total += k * (k - 1) // 2
        agree += sum(c * (c - 1) // 2 for c in counts.values())
    return (agree / total if total else None), items


def evaluate(judge_version, pairs: list[dict], *, job=None, source: str = "", judge=None):
    """Judge held-out human pairs (chosen = the human winner) and store a JudgeEvaluation."""
    judge = judge or load_judge(judge_version)
    verdicts = judge_pairs(judge, [(p["context"], p["tools"], p["chosen"], p["rejected"]) for p in pairs])
    rep = score_verdicts(verdicts)
    ceiling, human_items = human_agreement(judge_version.project)
    examples = [
        {
            "context": (p["context"][-1].get("content") or "")[:200] if p["context"] else "",
            "winner": answer_text(p["chosen"])[:300],
            "loser": answer_text(p["rejected"])[:300],
            "p_first": round(v.p_first, 4),
            "p_second": round(v.p_second, 4),
            "reason": v.reason,
        }
        for p, v in list(zip(pairs, verdicts, strict=True))[:200]
    ]
    return JudgeEvaluation.objects.create(
        judge=judge_version,
        job=job,
        source=source,
        pairs=rep.pairs,
        accuracy=rep.accuracy,
        accuracy_se=rep.accuracy_se,
        single_order_accuracy=rep.single_order_accuracy,
        position_bias_rate=rep.position_bias_rate,
        first_position_rate=rep.first_position_rate,
        ece=rep.ece,
        brier=rep.brier,
        human_agreement=ceiling,
        human_pairs=human_items,
        details={"bins": rep.bins, "examples": examples},
    )
