"""1. The badcase overview: labels and badcases by model version and category, and over time."""

import datetime as dt
from collections import Counter, defaultdict

from django.db import connection
from django.db.models import Count, Exists, F, OuterRef, Q
from django.db.models.functions import TruncDate
from django.utils import timezone

from ..models import (
    CategoryDay,
    Label,
    LabelDay,
)
from .filters import (
    BUCKETS,
    MAX_BUCKETS,
    UNREASONABLE,
    Filters,
    LabelCategory,
    _as_date,
    _rollup_day,
    _version,
    label_q,
    rollup_cells,
    rollup_counted,
    rollup_days,
    rollup_sum,
)
from .lookups import CategoryTree, _rate, _week_start, _wilson, model_versions

# --- 1. badcase overview ------------------------------------------------------------------------


def overview(project, f: Filters) -> dict:
    """Badcase counts and rates by taxonomy category (tree), root cause (Pareto), model version and time."""
    tree = CategoryTree.load(project)
    versions = model_versions(project)
    names = {v["id"]: v["name"] for v in versions}
    scope = tree.subtree(f.category) if f.category in tree.nodes else None

    cube = _overview_cube(project, f, scope)

    # category counts: direct assignments per (category, version), then distinct labels per subtree
    direct, subtree_counts = (
        _category_counts(project, f, tree) if f.annotator else _category_counts_rolled_up(project, f)
    )

    labels_by_version = Counter()
    bad_by_version = Counter()
    all_bad = 0
    days = defaultdict(lambda: {"labels": Counter(), "bad": Counter()})
    for row in cube:
        mv = row["model_version_id"]
        labels_by_version[mv] += row["labels"]
        bad_by_version[mv] += row["bad"]
        all_bad += row["all_bad"]
        day = _as_date(row["day"])
        if day is not None:
            days[day]["labels"][mv] += row["labels"]
            days[day]["bad"][mv] += row["bad"]
    total_labels = sum(labels_by_version.values())
    total_bad = sum(bad_by_version.values())
    lo, hi = _wilson(total_bad, total_labels)
    totals = {
        "labels": total_labels,
        "badcases": total_bad,
        "rate": _rate(total_bad, total_labels),
        "rate_low": lo,
        "rate_high": hi,
        "all_badcases": all_bad,
        "scope": tree.path(f.category) if scope else None,
    }

    present = [v for v in versions if labels_by_version.get(v["id"])]
    if labels_by_version.get(None):
        present.append({"id": None, "name": "(no model version)", "parent_id": None})
    rates = {v["id"]: _rate(bad_by_version[v["id"]], labels_by_version[v["id"]]) for v in present}
    by_model = []
    for v in present:
        n, k = labels_by_version[v["id"]], bad_by_version[v["id"]]
        lo, hi = _wilson(k, n)
        parent_rate = rates.get(v.get("parent_id")) if v.get("parent_id") in rates else None
        by_model.append(
            {
                "model_version": v["id"],
                "name": v["name"],
                "labels": n,
                "badcases": k,
                "rate": _rate(k, n),
                "rate_low": lo,
                "rate_high": hi,
                "parent": names.get(v.get("parent_id")),
                "change_vs_parent": None
                if parent_rate is None or rates[v["id"]] is None
                else rates[v["id"]] - parent_rate,
            }
        )

    categories = []
    for node_id, depth in tree.walk():
        node = tree.nodes[node_id]
        counts = subtree_counts.get(node_id) if tree.children.get(node_id) else direct.get(node_id)
        counts = counts or Counter()
        n = sum(counts.values())
        categories.append(
            {
                "category": node_id,
                "name": node["name"],
                "path": tree.path(node_id),
                "depth": depth,
                "parent": node["parent_id"],
                "has_children": bool(tree.children.get(node_id)),
                "active": node["active"],
                "root_cause": node["root_cause"],
                "recommended_fix": node["recommended_fix"],
                "badcases": n,
                "direct": sum(direct.get(node_id, Counter()).values()),
                "share_of_badcases": _rate(n, all_bad),
                "rate": _rate(n, total_labels),
                "by_model": {
                    str(v["id"]): {
                        "badcases": counts.get(v["id"], 0),
                        "rate": _rate(counts.get(v["id"], 0), labels_by_version[v["id"]]),
                    }
                    for v in present
                },
                "in_scope": scope is None or node_id in scope,
            }
        )

    # drill-down: the chart shows the scoped node's children (the top level when unscoped)
    level = tree.children.get(f.category if scope else None, [])
    cat_index = {c["category"]: c for c in categories}
    drill = sorted((cat_index[c] for c in level), key=lambda c: -c["badcases"])

    # Pareto of root causes: direct assignments (they do not overlap), in scope, biggest first
    pareto_rows = [c for c in categories if c["direct"] and c["in_scope"]]
    pareto_rows.sort(key=lambda c: (-c["direct"], c["name"]))
    assignments = sum(c["direct"] for c in pareto_rows)
    running = 0
    pareto = []
    for c in pareto_rows:
        running += c["direct"]
        pareto.append(
            {
                "category": c["category"],
                "name": c["name"],
                "path": c["path"],
                "badcases": c["direct"],
                "share": _rate(c["direct"], assignments),
                "cumulative": _rate(running, assignments),
                "root_cause": c["root_cause"],
                "recommended_fix": c["recommended_fix"],
            }
        )

    return {
        "filters": f.describe(),
        "totals": totals,
        "by_model": by_model,
        "categories": categories,
        "drill": {
            "node": f.category if scope else None,
            "path": tree.path(f.category) if scope else None,
            "parent": tree.nodes[f.category]["parent_id"] if scope else None,
            "rows": drill,
        },
        "pareto": pareto,
        # the Pareto's shares are of these filings (a label with two categories is filed twice), the
        # category table's "% of badcase labels" of totals.all_badcases: different denominators
        "pareto_filings": assignments,
        "over_time": _over_time(days, present, f, floor=timezone.localdate(project.created_at)),
        "models": [{"id": v["id"], "name": v["name"]} for v in present],
    }


def _overview_cube(project, f: Filters, scope: list[int] | None) -> list[dict]:
    """Labels, badcases (in the category scope) and all badcases per (model version, day).

    From the day roll-up; filtered to one annotator, from that annotator's labels.
    """
    if f.annotator:
        bad_q = Q(verdict=UNREASONABLE)
        if scope:
            bad_q &= Q(
                Exists(LabelCategory.objects.filter(label_id=OuterRef("pk"), taxonomycategory_id__in=scope))
            )
        return list(
            Label.objects.filter(label_q(project, f))
            .annotate(day=TruncDate("submitted_at"))
            .values("model_version_id", "day")
            .annotate(
                labels=Count("id"),
                bad=Count("id", filter=bad_q),
                all_bad=Count("id", filter=Q(verdict=UNREASONABLE)),
            )
            .order_by()
        )
    cells = rollup_cells(f)
    where = Q(project_id=project.pk) & rollup_days(f)
    if f.models:
        where &= Q(model_version__in=f.models)
    rows = (
        rollup_counted(LabelDay.objects.filter(where), cells)
        .values("model_version", "day")
        .annotate(labels=rollup_sum(cells, "n"), all_bad=rollup_sum(cells, "bad"))
        .order_by()
    )
    bad = None
    if scope:  # badcases with a category anywhere in the scoped subtree: the node's "under" count
        bad = {
            (r["model_version"], r["day"]): r["n"]
            for r in CategoryDay.objects.filter(where, category=scope[0], under=True)
            .values("model_version", "day")
            .annotate(n=rollup_sum(cells, "n"))
            .order_by()
        }
    return [
        {
            "model_version_id": _version(r["model_version"]),
            "day": _rollup_day(r["day"]),
            "labels": r["labels"],
            "all_bad": r["all_bad"],
            "bad": r["all_bad"] if bad is None else bad.get((r["model_version"], r["day"]), 0),
        }
        for r in rows
    ]


def _category_counts_rolled_up(project, f: Filters) -> tuple[dict[int, Counter], dict[int, Counter]]:
    """As _category_counts, from the category roll-up (no annotator filter)."""
    cells = rollup_cells(f)
    where = Q(project_id=project.pk) & rollup_days(f)
    if f.models:
        where &= Q(model_version__in=f.models)
    direct: dict[int, Counter] = defaultdict(Counter)
    subtree: dict[int, Counter] = defaultdict(Counter)
    for r in (
        CategoryDay.objects.filter(where)
        .values("category", "under", "model_version")
        .annotate(n=rollup_sum(cells, "n"))
        .order_by()
    ):
        if r["n"]:
            (subtree if r["under"] else direct)[r["category"]][_version(r["model_version"])] += r["n"]
    return direct, subtree


def _category_counts(
    project, f: Filters, tree: CategoryTree
) -> tuple[dict[int, Counter], dict[int, Counter]]:
    """Badcase labels per (category, version), in one statement over the badcase label-category rows.

    direct:  labels carrying the category itself (what the Pareto chart counts);
    subtree: distinct labels carrying a category anywhere under an internal node, so a label tagged
             with two siblings counts once for their parent. One UNION ALL branch per level of
             internal nodes maps each category to its ancestor at that level with a CASE.
    """
    rows = (
        LabelCategory.objects.filter(label_q(project, f, "label__"), label__verdict=UNREASONABLE)
        .annotate(cat=F("taxonomycategory_id"), mv=F("label__model_version_id"))
        .values("label_id", "cat", "mv")
        .order_by()
    )
    sql, params = rows.query.sql_with_params()
    params = list(params)
    parts = ["SELECT 0, cat, mv, COUNT(*) FROM bl GROUP BY cat, mv"]
    by_depth = defaultdict(dict)  # depth -> {internal node: [categories in its subtree]}
    for node in tree.internal():
        by_depth[tree.nodes[node]["depth"]][node] = tree.subtree(node)
    for _depth, groups in sorted(by_depth.items()):
        whens = " ".join(
            f"WHEN cat IN ({', '.join(['%s'] * len(members))}) THEN %s" for members in groups.values()
        )
        for node, members in groups.items():
            params += [*members, node]
        parts.append(
            f"SELECT 1, node, mv, COUNT(*) FROM (SELECT DISTINCT label_id, CASE {whens} END AS node, mv "
            f"FROM bl) s WHERE node IS NOT NULL GROUP BY node, mv"
        )
    mat = "MATERIALIZED " if connection.vendor == "postgresql" else ""
    direct: dict[int, Counter] = defaultdict(Counter)
    subtree: dict[int, Counter] = defaultdict(Counter)
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH bl AS {mat}({sql}) "
            + " UNION ALL ".join(f"SELECT * FROM ({p}) q{i}" for i, p in enumerate(parts)),
            params,
        )
        for kind, node, mv, n in cursor.fetchall():
            (subtree if kind else direct)[node][mv] += n
    return direct, subtree


def _bucket_start(day: dt.date, bucket: str) -> dt.date:
    if bucket == "week":
        return _week_start(day)
    if bucket == "month":
        return day.replace(day=1)
    if bucket == "year":
        return day.replace(month=1, day=1)
    return day


def _next_bucket(start: dt.date, bucket: str) -> dt.date:
    if bucket == "month":
        return (start + dt.timedelta(days=31)).replace(day=1)
    if bucket == "year":
        return start.replace(year=start.year + 1)
    return start + dt.timedelta(days=7 if bucket == "week" else 1)


def _bucket_count(first: dt.date, last: dt.date, bucket: str) -> int:
    if bucket == "month":
        return (last.year - first.year) * 12 + last.month - first.month + 1
    if bucket == "year":
        return last.year - first.year + 1
    return ((_bucket_start(last, bucket) - _bucket_start(first, bucket)).days) // (
        7 if bucket == "week" else 1
    ) + 1


def _over_time(days: dict, present: list[dict], f: Filters, floor: dt.date | None = None) -> dict:
    """Labels and badcases per time bucket, empty buckets filled in across the filter's range.

    The range is padded out to the date filter but never before `floor` (the project's first day) nor
    after today, and a span of more than MAX_BUCKETS buckets moves to the next larger bucket, so an
    open range such as 0001-01-01..9999-12-31 costs what the data spans, not ten thousand years of days.
    """
    if not days:
        return {"bucket": "day" if f.bucket == "auto" else f.bucket, "rows": []}
    first, last = min(days), max(days)
    if f.date_from:
        first = min(first, max(f.date_from, min(floor or first, first)))
    if f.date_to:
        last = max(last, min(f.date_to, timezone.localdate()))
    bucket = f.bucket if f.bucket != "auto" else ("week" if (last - first).days > 62 else "day")
    for larger in BUCKETS[BUCKETS.index(bucket) :]:
        bucket = larger
        if _bucket_count(first, last, bucket) <= MAX_BUCKETS:
            break
    buckets: dict[dt.date, dict] = {}
    if (
        _bucket_count(first, last, bucket) <= MAX_BUCKETS
    ):  # else (centuries of years): only the years with data
        cursor = _bucket_start(first, bucket)
        while cursor <= last:
            buckets[cursor] = {"labels": Counter(), "bad": Counter()}
            cursor = _next_bucket(cursor, bucket)
    for day in sorted(days):
        c = days[day]
        cell = buckets.setdefault(_bucket_start(day, bucket), {"labels": Counter(), "bad": Counter()})
        cell["labels"].update(c["labels"])
        cell["bad"].update(c["bad"])
    rows = []
    for start_day, c in buckets.items():
        end_day = _next_bucket(start_day, bucket) - dt.timedelta(days=1)
        n, k = sum(c["labels"].values()), sum(c["bad"].values())
        rows.append(
            {
                "start": start_day,
                "end": end_day,
                "labels": n,
                "badcases": k,
                "rate": _rate(k, n),
                "by_model": {
                    str(v["id"]): {
                        "labels": c["labels"].get(v["id"], 0),
                        "badcases": c["bad"].get(v["id"], 0),
                        "rate": _rate(c["bad"].get(v["id"], 0), c["labels"].get(v["id"], 0)),
                    }
                    for v in present
                },
            }
        )
    return {"bucket": bucket, "rows": rows}
