"""One row per item: deciding between annotators who worked on the same thing.

An *item* is what one row stands for:

* SFT: a model response (same response, same context). With overlap 2 it has two labels, and
  maybe two corrections; it still makes one row.
* eval: a context (conversation + how many of its messages are answered): a case id
  (``<external id>@<context length>``) must be unique, so the responses of one context are one
  item.
* DPO: a corrected response (the correction over the response), and an unordered pair of
  responses to one context (preferences, whichever way round the pair was shown).

The votes on an item are all its work whose status the snapshot admits (``selection.statuses``:
approved work, plus submitted work when asked), whatever its date or categories: a filter
picks which items a snapshot is about, never which side of a disagreement wins.

Decision, in order:

1. the lead's gold decision (``Adjudication`` on the item's task: the verdict of a label task,
   the choice of a compare task), when there is one;
2. else the majority: the value more than half of the votes give (a single vote is its own
   majority; agreeing votes are a unanimous majority);
3. else the item is left out, counted by reason: ``no_majority``, or
   ``mirrored_pair_unresolved`` when the votes on a pair name each response as the winner.

Which correction text a row uses (SFT, eval, correction pairs), among the admitted corrections
whose label agrees with the decided verdict:

a. the gold lead's own correction, when the lead who decided the item also corrected it;
b. else the text more than half of those corrections agree on (compared as messages: reply
   text stripped, tool-call arguments as JSON; the lowest id among the agreeing ones);
c. else the most recently edited one (then the highest id): the latest word on the item.

A decided-unreasonable item with no agreeing correction is left out (``no_correction``); a
decided-reasonable one is the response as it was when reasonable responses are included, and
is otherwise left out (``decided_reasonable``: someone's correction was outvoted). The row's
categories are the gold decision's when there is one, else those of the chosen label.

eval: each response of a context is decided as above; when the context's responses lead to
different expected answers, the answer more than half of them lead to wins, else the context
is left out (``expected_answers_differ``).

DPO pairs: the votes on the pair {x, y} are its admitted preferences (x, y, tie or both bad)
and, when corrections are a source too, each admitted correction of x that says what y says
(a vote for y over x; and the other way round). Such a correction makes no row of its own:
the pair's row already says it, or the pair's decision overruled it.

Streaming (build.py): sources still stream their records in id order, a chunk at a time; each
chunk looks up the votes of its items (a constant number of queries per chunk), and an item's
row is written by one record only, its *owner* (the lowest id among the item's selected
records, in source order), so the output does not depend on where chunks end.
"""

from __future__ import annotations

from array import array
from collections import Counter
from typing import NamedTuple

import numpy as np

from config.text import counted

from .audit import semantic_form

GOLD, MAJORITY = "gold", "majority"
REASONABLE, UNREASONABLE = "reasonable", "unreasonable"  # annotator.models.Label.Verdict

REASONS = {
    "no_majority": "annotators disagree, with no lead decision and no majority",
    "mirrored_pair_unresolved": "opposite preferences on one pair, with no lead decision and no majority",
    "expected_answers_differ": "the responses of one context lead to different expected answers",
    "no_correction": "judged unreasonable, but no agreeing correction to use",
    "decided_reasonable": "judged reasonable (reasonable responses are not in this snapshot)",
}
SHORT = {
    "no_majority": "no majority",
    "mirrored_pair_unresolved": "mirrored pair unresolved",
    "expected_answers_differ": "different expected answers",
    "no_correction": "no agreeing correction",
    "decided_reasonable": "judged reasonable",
}
CONFLICTS = ("no_majority", "mirrored_pair_unresolved", "expected_answers_differ")


def majority(votes: list):
    """The value more than half of `votes` give, or None."""
    if not votes:
        return None
    value, n = Counter(votes).most_common(1)[0]
    return value if 2 * n > len(votes) else None


def decide(votes: list, gold) -> tuple[object, str]:
    """(decided value, how: gold | majority), or (None, "no_majority")."""
    if gold:
        return gold, GOLD
    value = majority(votes)
    return (value, MAJORITY) if value is not None else (None, "no_majority")


def choose_correction(cands: list[tuple], lead_id) -> tuple:
    """One of `cands`, each (correction id, annotator id, edited at, message), by rules a, b, c."""
    if len(cands) == 1:
        return cands[0]
    if lead_id is not None:
        own = [c for c in cands if c[1] == lead_id]
        if own:
            return min(own, key=lambda c: c[0])
    groups: dict = {}
    for c in cands:
        groups.setdefault(semantic_form(c[3]), []).append(c)
    best = max(groups.values(), key=len)
    if 2 * len(best) > len(cands):
        return min(best, key=lambda c: c[0])
    return max(cands, key=lambda c: (c[2], c[0]))


class LabelVote(NamedTuple):
    """One admitted label of an item, as the per-chunk look-up reads it."""

    label_id: int
    verdict: str
    annotator_id: int
    correction_id: int | None
    selected: bool  # passes the snapshot's work-level filters (date, categories)
    response_id: int
    model_version_id: int | None


class Gold(NamedTuple):
    """A lead's gold decision: a verdict (label task) or the winning response id / tie / both_bad."""

    value: object
    lead_id: int
    categories: tuple


class Outcome(NamedTuple):
    """What an item makes: a row from a correction or a reasonable response, or nothing (source "")."""

    source: str  # "correction" | "reasonable" | ""
    source_id: int  # the correction id, or the label id of a reasonable row
    label_id: int
    response_id: int
    how: str  # gold | majority; for no row the reason ("" when there is nothing to count)
    votes: int
    detail: str = ""


def describe_verdicts(labels: list[LabelVote]) -> str:
    counts = Counter(v.verdict for v in labels)
    said = ", ".join(f"{n} {verdict}" for verdict, n in sorted(counts.items()))
    return (
        f"{counted(len(labels), 'label')} on response {labels[0].response_id} ({said}), "
        "no lead decision and no majority"
    )


def resolve_response(
    labels: list[LabelVote],
    gold: Gold | None,
    texts: dict,
    allow_reasonable: bool,
    pairs_only: bool = False,
    skip=frozenset(),
) -> Outcome:
    """Decide one response from its labels (see the module docstring).

    `texts`: correction id -> (message, edited at) of every candidate; `pairs_only`: a DPO correction pair
    (only an unreasonable decision makes one); `skip`: corrections already used by a pair.
    """
    rid, n = labels[0].response_id, len(labels)
    verdict, how = decide([v.verdict for v in labels], gold.value if gold else None)
    if verdict is None:
        return Outcome("", 0, 0, rid, how, n, describe_verdicts(labels))
    if pairs_only and verdict != UNREASONABLE:
        return _nothing_or(labels, skip, rid, "decided_reasonable", n)
    agreeing = [v for v in labels if v.verdict == verdict]
    cands = [
        (v.correction_id, v.annotator_id, texts[v.correction_id][1], texts[v.correction_id][0])
        for v in agreeing
        if v.correction_id and v.correction_id not in skip
    ]
    if cands:
        cid = choose_correction(cands, gold.lead_id if gold else None)[0]
        label_id = next(v.label_id for v in agreeing if v.correction_id == cid)
        return Outcome("correction", cid, label_id, rid, how, n)
    if verdict == UNREASONABLE:
        return _nothing_or(labels, skip, rid, "no_correction", n)
    if allow_reasonable:
        label_id = min(v.label_id for v in (agreeing or labels))
        return Outcome("reasonable", label_id, label_id, rid, how, n)
    return _nothing_or(labels, skip, rid, "decided_reasonable", n)


def _nothing_or(labels, skip, rid, reason, n) -> Outcome:
    """No row: nothing to count when the item's corrections all went into preference pairs."""
    used = skip and any(v.correction_id in skip for v in labels)
    return Outcome("", 0, 0, rid, "" if used else reason, n)


def resolve_context(
    by_response: dict, golds: dict, texts: dict, allow_reasonable: bool, target_of
) -> Outcome:
    """Decide one eval context from its responses' labels: one expected answer, or none.

    `by_response`: response id -> its labels; `target_of(outcome)` -> the target message.
    """
    outcomes = [
        resolve_response(by_response[r], golds.get(r), texts, allow_reasonable) for r in sorted(by_response)
    ]
    n = sum(o.votes for o in outcomes)
    made = [o for o in outcomes if o.source]
    if not made:
        reasons = [o for o in outcomes if o.how in CONFLICTS] or [o for o in outcomes if o.how] or outcomes
        return reasons[0]._replace(votes=n)
    if len(made) > 1:
        groups: dict = {}
        for o in made:
            groups.setdefault(semantic_form(target_of(o)), []).append(o)
        best = max(groups.values(), key=len)
        if 2 * len(best) <= len(made):
            detail = f"{len(made)} responses to this context lead to {len(groups)} different expected answers"
            return Outcome("", 0, 0, made[0].response_id, "expected_answers_differ", n, detail)
        made = best
    chosen = made[0]
    how = GOLD if any(golds.get(o.response_id) for o in made) else chosen.how
    return chosen._replace(how=how, votes=n)


class Tally:
    """What merging did in one build: items decided, merged (by gold / majority), left out by
    reason (a conflict left out is also an audit finding), and the corrections absorbed by
    preference pairs."""

    def __init__(self, auditor, worked: str = "labelled"):
        self.auditor = auditor
        self.worked = worked  # "labelled" (SFT, eval) or "judged" (DPO)
        self.items = 0
        self.merged: Counter = Counter()
        self.excluded: Counter = Counter()
        self.absorbed = array("q")  # 8 bytes per correction id, not a Python set of them
        self._absorbed_sorted = np.zeros(0, dtype=np.int64)

    def row(self, votes: int, how: str):
        """An item that made its row(s) from `votes` pieces of work."""
        self.items += 1
        if votes > 1:
            self.merged[how] += 1

    def no_row(self):
        """An item decided without a row (a tie)."""
        self.items += 1

    def left_out(self, reason: str, detail: str, **where):
        """An item left out; a conflict nobody resolved is flagged by the audit (with no row)."""
        self.items += 1
        self.excluded[reason] += 1
        if reason in CONFLICTS:
            self.auditor.flag("label_conflict", f"{detail}: left out", None, **where)

    def absorb(self, correction_ids):
        """Corrections that voted on a preference pair: the correction source writes no row for them."""
        self.absorbed.extend(correction_ids)

    def absorbed_among(self, ids) -> set[int]:
        """Which of `ids` a preference pair absorbed."""
        if not len(self.absorbed):
            return set()
        if len(self._absorbed_sorted) != len(self.absorbed):
            self._absorbed_sorted = np.sort(np.frombuffer(self.absorbed, dtype=np.int64))
        wanted = np.fromiter(ids, dtype=np.int64)
        return set(wanted[np.isin(wanted, self._absorbed_sorted)].tolist())

    def stats(self, records: int) -> dict:
        return {
            "items": self.items,
            "rows_before_merge": records,
            "merged": sum(self.merged.values()),
            "merged_by": {GOLD: self.merged[GOLD], MAJORITY: self.merged[MAJORITY]},
            "excluded": dict(sorted(self.excluded.items())),
            "summary": self.summary(),
        }

    def summary(self) -> str:
        """In words, for the snapshot page."""
        merged = sum(self.merged.values())
        parts = []
        if merged:
            parts.append(
                f"{merged:,} item{'s' if merged != 1 else ''} {self.worked} by 2+ annotators merged into "
                f"one row each (gold {self.merged[GOLD]:,}, majority {self.merged[MAJORITY]:,})"
            )
        left = sum(self.excluded.values())
        if left:
            reasons = sorted(self.excluded.items())
            if len(reasons) == 1:
                parts.append(f"{left:,} left out: {SHORT.get(reasons[0][0], reasons[0][0])}")
            else:
                why = ", ".join(f"{SHORT.get(k, k)} {n:,}" for k, n in reasons)
                parts.append(f"{left:,} left out ({why})")
        if not parts:
            return "Every item had one annotator's work: nothing to merge or leave out."
        return "; ".join(parts) + "."
