"""Temperature scaling of a local judge: one number T, fitted on pairs the judge was not trained on and
never on the pairs it is measured on, so that its order-averaged probability means what it says.

LocalJudge makes every probability as sigmoid(gap / T), gap = log P("A") - log P("B"); T is kept in
the judge version's metadata ("judge_temperature"). Scaling is monotone: no single-order verdict
changes, only how sure the judge is, and so which pairs clear the decision margin.
"""

from __future__ import annotations

import math

from .judges import LocalJudge, sigmoid
from .prompt import judge_prompt

# Temperatures tried, log-spaced from 1/4 to 4: a judge off by more than 4x is not mended by one number,
# and a slice of a few dozen pairs, all judged right, would otherwise push T towards 0 (certainty).
GRID = [4.0 ** (k / 100 - 1) for k in range(201)]


def averaged_probs(gaps: list[tuple[float, float]], temperature: float) -> list[float]:
    """The order-averaged P(human winner better) of each pair. gaps: (gap with the winner shown first,
    gap with the loser shown first)."""
    return [(sigmoid(w / temperature) + 1 - sigmoid(v / temperature)) / 2 for w, v in gaps]


def averaged_brier(gaps: list[tuple[float, float]], temperature: float) -> float:
    return sum((1 - p) ** 2 for p in averaged_probs(gaps, temperature)) / len(gaps)


def averaged_nll(gaps: list[tuple[float, float]], temperature: float) -> float:
    return -sum(math.log(max(p, 1e-12)) for p in averaged_probs(gaps, temperature)) / len(gaps)


def fit_temperature(gaps: list[tuple[float, float]]) -> float:
    """The T of GRID with the least Brier score of the order-averaged probability. Brier, not the log
    likelihood: the slices are small and the human labels slip now and then, and one mislabelled pair
    the judge gets confidently "wrong" dominates a log likelihood (it would make every verdict timid)
    but costs a Brier score at most 1/n."""
    return min(GRID, key=lambda t: averaged_brier(gaps, t))


def calibrate(version, judge: LocalJudge, pairs: list[dict]) -> dict:
    """Fit the temperature of a local judge on human pairs (chosen = the human winner) and keep it in
    the version's metadata; the judge object uses it from now on. Returns what was stored."""
    prompts = []
    for p in pairs:
        prompts.append(judge_prompt(p["context"], p["tools"], p["chosen"], p["rejected"]))
        prompts.append(judge_prompt(p["context"], p["tools"], p["rejected"], p["chosen"]))
    raw, _ = judge.logit_gaps(prompts)
    gaps = [(raw[2 * k], raw[2 * k + 1]) for k in range(len(pairs))]
    temperature = fit_temperature(gaps)
    fitted = {
        "judge_temperature": round(temperature, 4),
        "judge_calibration": {
            "pairs": len(pairs),
            "brier_before": round(averaged_brier(gaps, 1.0), 4),
            "brier_after": round(averaged_brier(gaps, temperature), 4),
        },
    }
    version.metadata = {**(version.metadata or {}), **fitted}
    version.save(update_fields=["metadata"])
    judge.temperature = temperature
    return fitted
