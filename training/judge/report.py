"""The judge's evaluation against held-out human pairs, beside the human ceiling."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from annotator.models import Preference, Status

from ..models import JudgeEvaluation
from .calibration import calibrate
from .judges import UNSURE, LocalJudge, PairVerdict, X, Y, judge_pairs, load_judge
from .pairs import job_pairs
from .prompt import answer_text


@dataclass
class Report:
    pairs: int = 0
    margin: float | None = None
    # the symmetric judge (both orders, PairVerdict.verdict): what suggestions and rankings use
    decided: int = 0
    coverage: float | None = None
    decided_accuracy: float | None = None
    decided_accuracy_se: float | None = None
    symmetric_accuracy: float | None = None
    symmetric_accuracy_se: float | None = None
    averaged_ece: float | None = None
    averaged_brier: float | None = None
    # forced choice on the averaged probability, and each order on its own
    accuracy: float | None = None
    accuracy_se: float | None = None
    single_order_accuracy: float | None = None
    position_bias_rate: float | None = None
    first_position_rate: float | None = None
    ece: float | None = None
    brier: float | None = None
    bins: list = field(default_factory=list)
    single_order_bins: list = field(default_factory=list)


def calibration(probs: list[float], bins: int = 10) -> tuple[float, float, list[dict]]:
    """(ECE, Brier, reliability bins) of probabilities that the right answer wins: each verdict's
    confidence is max(p, 1 - p), right when p > 0.5 (a 0.5 counts half); 10 equal-width bins over 0.5-1."""
    table = [[0, 0.0, 0.0] for _ in range(bins)]  # count, sum of confidence, correct
    brier = 0.0
    for p in probs:
        conf = max(p, 1 - p)
        correct = 1.0 if p > 0.5 else 0.0 if p < 0.5 else 0.5
        k = min(bins - 1, int((conf - 0.5) * 2 * bins))
        table[k][0] += 1
        table[k][1] += conf
        table[k][2] += correct
        brier += (1 - p) ** 2
    total = len(probs)
    ece = sum(abs(c[2] - c[1]) / total for c in table if c[0])
    rows = [
        {
            "low": round(0.5 + k / (2 * bins), 3),
            "high": round(0.5 + (k + 1) / (2 * bins), 3),
            "count": c[0],
            "confidence": round(c[1] / c[0], 4) if c[0] else None,
            "accuracy": round(c[2] / c[0], 4) if c[0] else None,
        }
        for k, c in enumerate(table)
    ]
    return ece, brier / total, rows


def _mean_se(scores: list[float]) -> tuple[float, float]:
    n = len(scores)
    mean = sum(scores) / n
    return mean, math.sqrt(sum((s - mean) ** 2 for s in scores) / n / n)


def score_verdicts(verdicts: list[PairVerdict], bins: int = 10) -> Report:
    """Judge figures where x (the argument judged) is the human winner of every pair.

    The symmetric judge (PairVerdict.verdict, what the product uses): coverage is the share of pairs
    it decides, decided_accuracy its accuracy on those, symmetric_accuracy counts an unsure pair as
    half right (the expected score of a coin toss, so that saying "unsure" neither pays nor costs
    against guessing), with its standard error; averaged_ece / averaged_brier calibrate the
    order-averaged P(x better) over the n pairs.
    accuracy: forced choice, the averaged P(x better) > 0.5 (a 0.5 tie counts half), binomial SE;
    single_order_accuracy: each order's verdict on its own (2n verdicts);
    position_bias_rate (the flip rate): share of pairs whose two single-order verdicts name different
    answers; first_position_rate: share of the 2n verdicts that pick the first slot;
    ece / brier: calibration of the 2n single-order probabilities.
    """
    n = len(verdicts)
    if n == 0:
        return Report()
    margin = verdicts[0].margin
    said = [v.verdict for v in verdicts]
    decided = sum(1 for s in said if s != UNSURE)
    right = sum(1 for s in said if s == X)
    symmetric, symmetric_se = _mean_se([1.0 if s == X else 0.0 if s == Y else 0.5 for s in said])
    decided_acc = right / decided if decided else None
    hits = sum(1.0 if v.prob > 0.5 else 0.5 if v.prob == 0.5 else 0.0 for v in verdicts)
    acc = hits / n
    singles = [v.p_first for v in verdicts] + [v.p_second for v in verdicts]
    single_acc = sum(1 for p in singles if p > 0.5) / (2 * n)
    flips = sum(1 for v in verdicts if v.flips) / n
    # the first slot is picked when x shown first wins (p_first > .5) or when y shown first wins
    # (p_second < .5)
    first = sum((1 if v.p_first > 0.5 else 0) + (1 if v.p_second < 0.5 else 0) for v in verdicts) / (2 * n)
    ece, brier, single_bins = calibration(singles, bins)
    averaged_ece, averaged_brier, averaged_bins = calibration([v.prob for v in verdicts], bins)
    return Report(
        pairs=n,
        margin=margin,
        decided=decided,
        coverage=decided / n,
        decided_accuracy=decided_acc,
        decided_accuracy_se=math.sqrt(decided_acc * (1 - decided_acc) / decided) if decided else None,
        symmetric_accuracy=symmetric,
        symmetric_accuracy_se=symmetric_se,
        averaged_ece=averaged_ece,
        averaged_brier=averaged_brier,
        accuracy=acc,
        accuracy_se=math.sqrt(acc * (1 - acc) / n),
        single_order_accuracy=single_acc,
        position_bias_rate=flips,
        first_position_rate=first,
        ece=ece,
        brier=brier,
        bins=averaged_bins,
        single_order_bins=single_bins,
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
    """Judge held-out human pairs (chosen = the human winner) and store a JudgeEvaluation.

    A local judge fresh from its job (job given, no temperature yet) is first calibrated on the job's
    calibration slice (pairs.job_pairs; never the pairs measured here), so the figures are those of the
    judge as it will be used."""
    judge = judge or load_judge(judge_version)
    fresh = "judge_temperature" not in (judge_version.metadata or {})
    if job is not None and fresh and isinstance(judge, LocalJudge):
        calibration = job_pairs(job)[1]
        if calibration:
            calibrate(judge_version, judge, calibration)
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
            "verdict": {X: "right", Y: "wrong", UNSURE: "unsure"}[v.verdict],
            "reason": v.reason,
        }
        for p, v in list(zip(pairs, verdicts, strict=True))[:200]
    ]
    return JudgeEvaluation.objects.create(
        judge=judge_version,
        job=job,
        source=source,
        pairs=rep.pairs,
        decision_margin=rep.margin,
        temperature=getattr(judge, "temperature", None),
        decided=rep.decided,
        coverage=rep.coverage,
        decided_accuracy=rep.decided_accuracy,
        symmetric_accuracy=rep.symmetric_accuracy,
        symmetric_accuracy_se=rep.symmetric_accuracy_se,
        averaged_ece=rep.averaged_ece,
        averaged_brier=rep.averaged_brier,
        accuracy=rep.accuracy,
        accuracy_se=rep.accuracy_se,
        single_order_accuracy=rep.single_order_accuracy,
        position_bias_rate=rep.position_bias_rate,
        first_position_rate=rep.first_position_rate,
        ece=rep.ece,
        brier=rep.brier,
        human_agreement=ceiling,
        human_pairs=human_items,
        details={"bins": rep.bins, "single_order_bins": rep.single_order_bins, "examples": examples},
    )
