"""Fixes routed by taxonomy: which corrections an SFT or a DPO snapshot takes.

A snapshot's ``filters.routing`` (spec.py) is ``"taxonomy"`` (the default for new snapshots) or
``"all"`` (every correction, as before routing; a snapshot made before routing existed has no key
and builds as "all").

Under "taxonomy" each correction row goes where its categories' fix routes say
(``annotator.taxonomy.fix_routes``: a category's own route, else its parent's):

* the categories that have a route decide, together: a correction goes to SFT when one of them
  routes to SFT (or both), to DPO when one routes to DPO (or both); Hallucinated fact + Wrong tool
  feeds both snapshots, each failure its own fix. Categories whose route is "none" add nothing: a
  correction whose categories are all "none" is in neither snapshot;
* a correction none of whose categories has a route (a category the project added and never
  routed), or with no category at all (e.g. the correction of a response judged reasonable), goes
  both ways, as before routing: the taxonomy says nothing against it, and the page counts it
  apart so a lead sees what is not routed yet.

The categories are the row's: the lead's gold decision's when there is one, else those of the label
whose correction made the row (resolve.py), looked up per chunk with the votes. Only correction
rows are routed: DPO pairs decided by pairwise preferences (winner over loser, "both bad" against
the context's correction) and pairs of online rounds go to DPO as before, reasonable responses to
SFT as before, and eval snapshots take every held-out correction.

The build counts every correction row it routes by reason, with the categories behind it, for the
snapshot's stats (``stats["routing"]``) and a sentence on the snapshot page.
"""

from __future__ import annotations

from collections import Counter

from annotator.models import TaxonomyCategory
from annotator.taxonomy import ROUTE_KINDS, fix_routes
from config.text import counted

from ..models import DatasetSnapshot

Kind = DatasetSnapshot.Kind

TAXONOMY, ALL = "taxonomy", "all"
MODES = (TAXONOMY, ALL)
ROUTED_KINDS = (Kind.SFT, Kind.DPO)
BOTH_KINDS = frozenset(ROUTED_KINDS)
ROUTED_SOURCES = frozenset({"correction"})  # rows whose target is a correction (SFT) or its pair (DPO)

# why a correction went where it went: its categories' routes (sft, dpo, both, none), or none of
# its categories has a route (unrouted), or it has no category (uncategorised)
SFT, DPO, BOTH, NONE = "sft", "dpo", "both", "none"
UNROUTED, UNCATEGORISED = "unrouted", "uncategorised"
REASONS = (SFT, DPO, BOTH, UNROUTED, UNCATEGORISED, NONE)
KIND_NAMES = {Kind.SFT: "SFT", Kind.DPO: "DPO"}


def mode_of(kind: str, filters: dict) -> str | None:
    """The snapshot's routing, or None where nothing is routed (eval; a DPO without corrections)."""
    if kind not in ROUTED_KINDS:
        return None
    if kind == Kind.DPO and "corrections" not in filters.get("sources", ()):
        return None
    return filters.get("routing") or ALL


def route_of(categories, routes: dict[int, str]) -> tuple[str, frozenset]:
    """(reason, the kinds it feeds) of a correction with these categories (see the module docstring)."""
    if not categories:
        return UNCATEGORISED, BOTH_KINDS
    kinds: frozenset = frozenset()
    routed = False
    for c in categories:
        route = routes.get(c, "")
        if route:
            routed = True
            kinds |= ROUTE_KINDS[route]
    if not routed:
        return UNROUTED, BOTH_KINDS
    if kinds == BOTH_KINDS:
        return BOTH, kinds
    return (next(iter(kinds)) if kinds else NONE), kinds


class Router:
    """One build's routing: keeps the correction rows its categories route to the snapshot's kind."""

    def __init__(self, project_id: int, kind: str, filters: dict):
        self.kind = kind
        self.mode = mode_of(kind, filters)
        self.active = self.mode == TAXONOMY
        self.routes = fix_routes(project_id) if self.active else {}
        self.project_id = project_id
        self.seen: Counter = Counter()  # corrections per set of categories
        self._memo: dict[tuple, tuple[str, bool]] = {}  # set of categories -> (reason, kept here)

    def keep(self, rows: list) -> list:
        """The rows this snapshot takes (no database work)."""
        if not self.active:
            return rows
        out = []
        memo, seen, kind = self._memo, self.seen, self.kind
        for row in rows:
            if row.source not in ROUTED_SOURCES:
                out.append(row)
                continue
            cats = tuple(row.categories or ())
            decided = memo.get(cats)
            if decided is None:
                reason, kinds = route_of(cats, self.routes)
                decided = memo[cats] = (reason, kind in kinds)
            seen[cats] += 1
            if decided[1]:
                out.append(row)
        return out

    @property
    def left_out(self) -> int:
        return sum(n for cats, n in self.seen.items() if not self._memo[cats][1])

    def stats(self) -> dict | None:
        """For stats["routing"]: how many corrections went where and why, with their categories."""
        if self.mode is None:
            return None
        if not self.active:
            return {
                "mode": ALL,
                "summary": "Every correction, whatever its categories' fix route (routing: all).",
            }
        names = dict(TaxonomyCategory.objects.filter(project_id=self.project_id).values_list("pk", "name"))
        counts: Counter = Counter()
        by_category: dict[str, Counter] = {r: Counter() for r in REASONS}
        for cats, n in self.seen.items():
            reason = self._memo[cats][0]
            counts[reason] += n
            for c in cats:
                by_category[reason][c] += n
        by_reason = {}
        for reason in REASONS:
            if not counts[reason]:
                continue
            cats = sorted(
                ((names.get(c, f"#{c}"), k) for c, k in by_category[reason].items()),
                key=lambda kv: (-kv[1], kv[0]),
            )
            by_reason[reason] = {
                "count": counts[reason],
                "in_snapshot": self.kind in _kinds(reason),
                "categories": dict(cats),
            }
        total = sum(counts.values())
        kept = sum(v["count"] for v in by_reason.values() if v["in_snapshot"])
        return {
            "mode": TAXONOMY,
            "corrections": total,
            "kept": kept,
            "left_out": total - kept,
            "by_reason": by_reason,
            "summary": summary(self.kind, by_reason),
        }


def _kinds(reason: str) -> frozenset:
    if reason in (BOTH, UNROUTED, UNCATEGORISED):
        return BOTH_KINDS
    return frozenset() if reason == NONE else frozenset({reason})


MAX_NAMED = 6  # categories named per reason; the rest are "…"


def _names(categories: dict) -> str:
    items = list(categories.items())
    text = ", ".join(f"{name} {n:,}" for name, n in items[:MAX_NAMED])
    return f" ({text}{', …' if len(items) > MAX_NAMED else ''})" if items else ""


def summary(kind: str, by_reason: dict) -> str:
    """The routing in words, for the snapshot page, e.g. "312 corrections → SFT: their categories' fix
    is SFT (Hallucinated fact 200, Business flow error 112); 140 → DPO, not in this snapshot …"."""
    if not by_reason:
        return "No corrections to route."
    here = KIND_NAMES[kind]
    other = KIND_NAMES[next(k for k in ROUTED_KINDS if k != kind)]
    both = "SFT and DPO"
    parts = []
    for reason in (kind, BOTH, UNROUTED, UNCATEGORISED, other.lower(), NONE):
        entry = by_reason.get(reason)
        if not entry:
            continue
        n, cats = entry["count"], _names(entry["categories"])
        lead = counted(n, "correction") if not parts else f"{n:,}"
        if reason == kind:
            parts.append(f"{lead} → {here} because their categories' fix is {here}{cats}")
        elif reason == BOTH:
            parts.append(f"{lead} → {both} because their categories route to both{cats}")
        elif reason == UNROUTED:
            parts.append(f"{lead} → {both}: their categories have no fix route yet{cats}")
        elif reason == UNCATEGORISED:
            parts.append(f"{lead} → {both}: no category to route them by")
        elif reason == NONE:
            parts.append(f"{lead} left out: their categories' fix is neither SFT nor DPO{cats}")
        else:
            parts.append(f"{lead} → {other} only, not in this snapshot{cats}")
    return "; ".join(parts) + "."
