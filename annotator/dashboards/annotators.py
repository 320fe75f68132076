"""2. Annotators: throughput, time per item, badcase rate, agreement with the others and with gold."""

import bisect
import math
from collections import Counter, defaultdict
from dataclasses import replace

from django.contrib.auth import get_user_model
from django.db.models import Count, F, IntegerField, Max, Min, Q, Sum, Value
from django.db.models.functions import Least

from .. import agreement as stats
from ..models import (
    AnnotatorDay,
    AnnotatorPreferenceDay,
    AnnotatorSeconds,
    AnnotatorSecondsDay,
    Label,
    Preference,
    Review,
    ReviewDay,
    SkipDay,
    Split,
)
from .agreement import gold_tables, verdict_pair_tables
from .filters import (
    COUNTED_STATUSES,
    MIN_PAIR_ITEMS,
    TIME_CAP_S,
    Filters,
    _rollup_day,
    _window,
    label_q,
    preference_q,
    rollup_cells,
    rollup_counted,
    rollup_days,
    rollup_sum,
)
from .lookups import _rate

# --- 2. annotators ------------------------------------------------------------------------------


def _percentile(hist: Counter, q: float) -> float | None:
    """q-quantile (0..1) of values given as {value: count} (one-second bins; nearest-rank)."""
    n = sum(hist.values())
    if not n:
        return None
    rank = max(1, math.ceil(q * n))
    seen = 0
    for value in sorted(hist):
        seen += hist[value]
        if seen >= rank:
            return float(value)
    return float(max(hist))


TIME_BINS = [
    (0, 15, "under 15 s"),
    (15, 30, "15–30 s"),
    (30, 60, "30–60 s"),
    (60, 120, "1–2 min"),
    (120, 300, "2–5 min"),
    (300, 600, "5–10 min"),
    (600, None, "10 min or more"),
]


def _work_stats(qs, time_field="time_spent_ms") -> dict[int, dict]:
    """Per annotator: items, items with a recorded time, time spent, a one-second time histogram,
    first/last."""
    seconds = Least(F(time_field) / 1000, Value(TIME_CAP_S), output_field=IntegerField())
    out: dict[int, dict] = {}
    for row in (
        qs.annotate(sec=seconds)
        .values("annotator_id", "sec")
        .annotate(n=Count("id"), ms=Sum(time_field), first=Min("submitted_at"), last=Max("submitted_at"))
        .order_by()
    ):
        s = out.setdefault(
            row["annotator_id"],
            {"items": 0, "timed": 0, "ms": 0, "hist": Counter(), "first": None, "last": None},
        )
        s["items"] += row["n"]
        s["ms"] += row["ms"] or 0
        if row["ms"]:
            s["timed"] += row["n"]
            s["hist"][row["sec"]] += row["n"]
        s["first"] = min(filter(None, [s["first"], row["first"]]), default=None)
        s["last"] = max(filter(None, [s["last"], row["last"]]), default=None)
    return out


def _rolled_up_work(qs, f: Filters) -> dict[int, dict]:
    """Per annotator from a per-annotator day roll-up: items, timed items, time spent, first and last day."""
    cells = rollup_cells(f)
    out = {}
    for row in (
        rollup_counted(qs.filter(rollup_days(f)), cells)
        .values("annotator")
        .annotate(
            n=rollup_sum(cells, "n"),
            timed=rollup_sum(cells, "timed"),
            ms=rollup_sum(cells, "ms"),
            first=Min("day"),
            last=Max("day"),
        )
        .order_by()
    ):
        out[row["annotator"]] = {
            "items": row["n"],
            "timed": row["timed"],
            "ms": row["ms"],
            "hist": Counter(),
            "first": _rollup_day(row["first"]),
            "last": _rollup_day(row["last"]),
        }
    return out


def _time_histograms(project, f: Filters) -> dict[int, Counter]:
    """Per annotator: {seconds: items} over labels and comparisons with a recorded time.

    From the seconds roll-up, or its per-day twin under a date filter. Neither has a model version:
    under a model filter the histogram is read from the filtered labels and preferences themselves.
    """
    out: dict[int, Counter] = defaultdict(Counter)
    if f.models:
        for qs in (
            Label.objects.filter(label_q(project, f)),
            Preference.objects.filter(preference_q(project, f)),
        ):
            for uid, s in _work_stats(qs).items():
                out[uid].update(s["hist"])
        return out
    cells = rollup_cells(f)
    if f.date_from or f.date_to:
        qs = AnnotatorSecondsDay.objects.filter(rollup_days(f), project_id=project.pk)
    else:
        qs = AnnotatorSeconds.objects.filter(project_id=project.pk)
    if f.annotator:
        qs = qs.filter(annotator=f.annotator)
    # tuples, and only the non-empty groups: at a million labels a date range returns ~10k groups
    for annotator, seconds, k in (
        qs.values_list("annotator", "seconds")
        .annotate(k=rollup_sum(cells, "n", "p"))
        .filter(k__gt=0)
        .order_by()
    ):
        out[annotator][seconds] += k
    return out


def annotators(project, f: Filters) -> dict:
    """Throughput, time per item, skips, review outcomes and agreement (with peers and with gold) per
    annotator."""
    mine = Q(project_id=project.pk) & (Q(annotator=f.annotator) if f.annotator else Q())
    labels = _rolled_up_work(
        AnnotatorDay.objects.filter(mine, Q(model_version__in=f.models) if f.models else Q()), f
    )
    prefs = _rolled_up_work(
        AnnotatorPreferenceDay.objects.filter(
            mine, Q(model_a__in=f.models) | Q(model_b__in=f.models) if f.models else Q()
        ),
        f,
    )
    hists = _time_histograms(project, f)

    by_version = Q(model_version__in=f.models) if f.models else Q()
    skips = {
        row["annotator"]: row["n"]
        for row in (
            SkipDay.objects.filter(mine, by_version, rollup_days(f))
            .values("annotator")
            .annotate(n=rollup_sum([f.split] if f.split else list(Split.values), "n"))
            .order_by()
        )
        if row["n"]
    }

    # Review decisions on the annotator's work (every decision counts, also ones later revised)
    reviews = defaultdict(Counter)
    splits = rollup_cells(f, statuses=COUNTED_STATUSES)
    for row in (
        ReviewDay.objects.filter(mine, rollup_days(f), by_version)
        .values("annotator")
        .annotate(approve=rollup_sum(splits, "approve"), reject=rollup_sum(splits, "reject"))
        .order_by()
    ):
        reviews[row["annotator"]]["approve"] += row["approve"] or 0
        reviews[row["annotator"]]["reject"] += row["reject"] or 0
    pref_reviews = Review.objects.filter(
        _window(f, "created_at"),
        Q(preference__isnull=False),
        preference_q(
            project, replace(f, statuses=COUNTED_STATUSES, date_from=None, date_to=None), "preference__"
        ),
    )
    for row in pref_reviews.values("preference__annotator_id", "decision").annotate(n=Count("id")).order_by():
        reviews[row["preference__annotator_id"]][row["decision"]] += row["n"]

    pair_tables = verdict_pair_tables(project, replace(f, annotator=None))
    with_others = defaultdict(Counter)
    for (a, b), table in pair_tables.items():
        for (va, vb), n in table.items():
            with_others[a][(va, vb)] += n
            with_others[b][(vb, va)] += n
    gold = gold_tables(project, f)

    reviews = {uid: rv for uid, rv in reviews.items() if rv["approve"] or rv["reject"]}
    ids = set(labels) | set(prefs) | set(skips) | set(reviews) | set(gold)
    if f.annotator:
        ids &= {f.annotator}
    users = dict(get_user_model().objects.filter(pk__in=ids).values_list("pk", "username"))
    rows = []
    overall_hist: Counter = Counter()
    for uid in sorted(ids, key=lambda i: users.get(i, "")):
        lab, pre = labels.get(uid), prefs.get(uid)
        parts = [s for s in (lab, pre) if s]
        items = sum(s["items"] for s in parts)
        timed = sum(s["timed"] for s in parts)
        ms = sum(s["ms"] for s in parts)
        hist = hists.get(uid, Counter())
        overall_hist.update(hist)
        n_skips = skips.get(uid, 0)
        rv = reviews.get(uid, Counter())
        reviewed = rv["approve"] + rv["reject"]
        peers = stats.cohen_kappa(with_others.get(uid, {}))
        g = stats.cohen_kappa(gold.get(uid, {}))
        rows.append(
            {
                "annotator": uid,
                "name": users.get(uid, f"user {uid}"),
                "labels": lab["items"] if lab else 0,
                "comparisons": pre["items"] if pre else 0,
                "items": items,
                "hours": ms / 3_600_000,
                "items_per_hour": timed / (ms / 3_600_000) if ms else None,
                "median_s": _percentile(hist, 0.5),
                "p25_s": _percentile(hist, 0.25),
                "p75_s": _percentile(hist, 0.75),
                "p90_s": _percentile(hist, 0.9),
                "time_bins": _bin(hist),
                "skips": n_skips,
                "skip_rate": _rate(n_skips, n_skips + items),
                "reviewed": reviewed,
                "approved": rv["approve"],
                "rejected": rv["reject"],
                "approval_rate": _rate(rv["approve"], reviewed),
                "rejection_rate": _rate(rv["reject"], reviewed),
                "peer_items": peers.n,
                "peer_agreement": peers.observed,
                "peer_kappa": peers.kappa,
                "gold_items": g.n,
                "gold_agreement": g.observed,
                "gold_kappa": g.kappa,
                "first": min(filter(None, [s["first"] for s in parts]), default=None),
                "last": max(filter(None, [s["last"] for s in parts]), default=None),
            }
        )
    return {
        "filters": f.describe(),
        "rows": rows,
        "time_bins": [label for _, _, label in TIME_BINS],
        "team": {
            "items": sum(r["items"] for r in rows),
            "median_s": _percentile(overall_hist, 0.5),
            "time_bins": _bin(overall_hist),
        },
        "min_pair_items": MIN_PAIR_ITEMS,
    }


TIME_BIN_STARTS = [lo for lo, _, _ in TIME_BINS]


def _bin(hist: Counter) -> list[int]:
    """Items per TIME_BINS band (a band holds lo <= seconds < hi)."""
    out = [0] * len(TIME_BINS)
    for sec, n in hist.items():
        out[max(0, bisect.bisect_right(TIME_BIN_STARTS, sec) - 1)] += n
    return out
