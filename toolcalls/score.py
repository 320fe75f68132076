"""Score one case and summarize a run (metrics.md, "Per-case metrics" and "Also report").

Pure functions over plain data (OpenAI-format messages, tool specs and raw model text);
no Django, so the same code scores an eval run in a Celery task, a management command, the
training guard and a unit test.

Reading order: ``toolcalls.parse`` (text -> reasoning / reply / calls / malformed),
``toolcalls.match`` (one call against one expected call, parallel calls), then here
``score_case`` (one case: the four headline metrics and the six defects of
``toolcalls.defects``) and ``summarize`` (rates with standard errors, per-call
precision/recall/F1, breakdowns).

Choices where metrics.md leaves room (tested in tests/test_metrics.py and
tests/test_metrics_hardening.py): per-call precision counts every attempted block (malformed
ones too) as predicted; a malformed turn has no true positives. No input makes score_case
recurse without bound: a call body nested too deeply to decode is malformed, gold arguments
nested too deeply to decode raise ValueError (the case is an error), and decoded values of
any depth compare without recursion (toolcalls.match).
"""

from __future__ import annotations

import math
import re

from .defects import DEFECTS, find_defects
from .match import expected_calls_cached, match_calls, names_matched
from .parse import name_check, scan_output

HEADLINE_METRICS = (
    "tool_call_accuracy",
    "tool_name_accuracy",
    "tool_args_accuracy",
    "response_quality",
)


def score_case(
    expected_message: dict | None,
    output: str,
    tools: list[dict] | None,
    stopped_at_limit: bool | None = None,
) -> dict:
    """Score one model output against one gold assistant message.

    ``tools`` is the case's list of OpenAI tool specs (``None`` or ``[]``: names are not
    checked, the expected calls decide). ``stopped_at_limit`` is True when generation hit
    the token limit, None when unknown.
    """
    exp = expected_calls_cached(expected_message) if expected_message else []
    p, a, trailing, spans = scan_output(output, name_check(tools))

    calls = p.calls
    malformed = p.malformed
    n_exp = len(exp)
    expected_call = n_exp > 0
    made_call = p.n_call_blocks > 0

    if malformed:
        tp = 0
        name_matched = 0
        names_right = False
    elif calls and exp:
        tp = match_calls(calls, exp, tools)
        call_names = [c.name for c in calls]
        exp_names = [e["name"] for e in exp]
        name_matched = names_matched(call_names, exp_names)
        names_right = len(calls) == n_exp and name_matched == n_exp
    else:
        tp = 0
        name_matched = 0
        names_right = not calls and not exp
    all_right = not malformed and len(calls) == n_exp and tp == n_exp

    if expected_call:
        tool_call_accuracy = int(all_right)
    else:
        tool_call_accuracy = int(not made_call)
    if made_call:
        tool_name_accuracy = int(names_right)
        tool_args_accuracy = int(all_right)
    else:
        tool_name_accuracy = None
        tool_args_accuracy = None

    defects = find_defects(p, a, trailing, spans, stopped_at_limit)
    response_quality = int(not any(defects.values()))
    facts = (expected_message or {}).get("facts") or []
    # a gold answer's `facts` (domain knowledge it must state, e.g. a policy's terms): all in the reply
    facts_right = int(all(_states(p.reply_text, f) for f in facts)) if facts else None

    return {
        "tool_call_accuracy": tool_call_accuracy,
        "tool_name_accuracy": tool_name_accuracy,
        "tool_args_accuracy": tool_args_accuracy,
        "response_quality": response_quality,
        "facts_right": facts_right,
        "defects": defects,
        "expected_call": expected_call,
        "made_call": made_call,
        "false_call": None if expected_call else int(made_call),
        "missed_call": int(not made_call) if expected_call else None,
        "calls_tp": tp,
        "calls_predicted": p.n_call_blocks,
        "calls_expected": n_exp,
        "calls_name_matched": name_matched,
        "name_right_args_right": (None if not tool_name_accuracy else tool_args_accuracy),
        "parsed": {
            "reasoning": p.reasoning,
            "reply_text": p.reply_text,
            "calls": [{"name": c.name, "arguments": c.arguments} for c in calls],
            "malformed_reasons": p.malformed_reasons,
        },
    }


def _states(reply: str, fact: str) -> bool:
    """The reply states the fact as whole words ("60 days" is not in "160 days"); whitespace and case free."""
    text = " ".join((reply or "").split()).casefold()
    words = " ".join(fact.split()).casefold()
    return re.search(r"(?<!\w)" + re.escape(words) + r"(?!\w)", text) is not None


def standard_error(p: float | None, n: int) -> float | None:
    """sqrt(p(1-p)/n); None when p is None or n is 0."""
    if p is None or not n:
        return None
    return math.sqrt(p * (1.0 - p) / n)


def _rate(values):
    n = 0
    k = 0
    for v in values:
        if v is not None:
            n += 1
            k += v
    p = k / n if n else None
    return {"n": n, "count": k, "value": p, "se": standard_error(p, n)}


def _ratio(num, den):
    return num / den if den else None


def _headline(scores):
    out = {"n": len(scores)}
    for m in HEADLINE_METRICS:
        out[m] = _rate(s.get(m) for s in scores)
    return out


def summarize(
    case_scores: list[dict],
    categories: list[list[str]] | None = None,
    turn_depths: list[int | None] | None = None,
) -> dict:
    """Aggregate ``score_case`` results.

    Every rate is {"n", "count", "value", "se"}; value and se are None when n is 0.
    ``categories[i]`` (list of str) and ``turn_depths[i]`` (int or None) describe
    case i and give the ``by_category`` / ``by_turn_depth`` breakdowns; a case
    with no category is grouped under "(uncategorized)", one with no depth is
    left out of ``by_turn_depth``.
    """
    scores = list(case_scores)
    n = len(scores)
    out = _headline(scores)
    out["defects"] = {d: _rate((s.get("defects") or {}).get(d) for s in scores) for d in DEFECTS}
    out["false_call_rate"] = _rate(s.get("false_call") for s in scores)
    out["missed_call_rate"] = _rate(s.get("missed_call") for s in scores)
    out["args_accuracy_given_name"] = _rate(s.get("name_right_args_right") for s in scores)
    out["knowledge_accuracy"] = _rate(s.get("facts_right") for s in scores)  # cases with gold facts only

    tp = sum(s.get("calls_tp", 0) for s in scores)
    pred = sum(s.get("calls_predicted", 0) for s in scores)
    gold = sum(s.get("calls_expected", 0) for s in scores)
    named = sum(s.get("calls_name_matched", 0) for s in scores)
    precision = _ratio(tp, pred)
    recall = _ratio(tp, gold)
    if precision is None or recall is None:
        f1 = None
    elif precision + recall == 0:
        f1 = 0.0
    else:
        f1 = 2 * precision * recall / (precision + recall)
    out["per_call"] = {
        "tp": tp,
        "predicted": pred,
        "expected": gold,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "name_matched": named,
        "args_accuracy_given_name": _ratio(tp, named),
    }

    if categories is not None:
        if len(categories) != n:
            raise ValueError("categories must have one entry per case")
        groups = {}
        for s, cats in zip(scores, categories, strict=True):
            for c in set(cats or ()) or ("(uncategorized)",):
                groups.setdefault(c, []).append(s)
        out["by_category"] = {c: _headline(g) for c, g in sorted(groups.items())}
    if turn_depths is not None:
        if len(turn_depths) != n:
            raise ValueError("turn_depths must have one entry per case")
        groups = {}
        for s, d in zip(scores, turn_depths, strict=True):
            if d is not None:
                groups.setdefault(d, []).append(s)
        out["by_turn_depth"] = {d: _headline(g) for d, g in sorted(groups.items())}
    return out
