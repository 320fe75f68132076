"""Lead dashboards: the analytics as plain functions over one project and a set of filters.

Pages (dashboard_views.py), the REST API and the CSV downloads (dashboard_api.py) all call these
functions; nothing here knows about HTTP. Every aggregate runs in the database (GROUP BY, a
self-join for agreement contingency tables, Count(filter=...)) and comes back as a few hundred rows
at most; Python only rolls those up (days into weeks, children into parents) and computes the
statistics in agreement.py. The number of queries per dashboard does not depend on the data.

Roll-ups (rollups.py): the counts come from small pre-aggregated tables kept current on every
write (day x model version, with split x status as columns; per annotator; per category), so a
page reads a few thousand rows instead of grouping every label. Agreement reads its own roll-ups
(verdict units, per-category units, preference units and the disagreement-item index, per status set,
each unit filed under the day it was complete; annotator pairs also per day of their later label);
the cases and comparisons lists take their totals from the roll-ups where they hold them exactly. What still reads raw rows,
bounded by the filter: case totals under pair / disagreement / gold / annotator-and-category
filters, preference reviews, the time-per-item percentiles under a model filter, and the
overview / model pages filtered to one annotator (that annotator's labels, by index). agreement_core
computes the agreement figures from the labels: the reference the roll-ups are tested against.

Counting unit: a *label* (one annotator's judgement of one model response). A badcase is a label
with the verdict "unreasonable"; the badcase rate is badcase labels / labels. Labels carry their
project and model version (denormalised), so the main aggregates read one table. Drafts are never
counted; by default submitted and approved labels are (`status` filter).
"""

import bisect
import datetime as dt
import math
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import urlencode

from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connection
from django.db.models import Count, Exists, F, IntegerField, Max, Min, OuterRef, Q, Sum, Value
from django.db.models.functions import Least, TruncDate
from django.utils import timezone

from . import agreement as stats
from .models import (
    Adjudication,
    AgreementPair,
    AgreementPairDay,
    AnnotatorDay,
    AnnotatorPreferenceDay,
    AnnotatorSeconds,
    AnnotatorSecondsDay,
    CategoryDay,
    GoldDay,
    Label,
    LabelDay,
    Membership,
    ModelVersion,
    Preference,
    PreferenceDay,
    ResponseJudges,
    Review,
    ReviewDay,
    SkipDay,
    Split,
    Status,
    Task,
    TaxonomyCategory,
)
from .rollups import (
    NO_DAY,
    SPLIT_COLUMNS,
    AgreementCategory,
    AgreementItem,
    AgreementUnit,
    PreferenceUnit,
    status_mask,
)

LabelCategory = Label.categories.through
UNREASONABLE = Label.Verdict.UNREASONABLE
REASONABLE = Label.Verdict.REASONABLE
COUNTED_STATUSES = (Status.SUBMITTED, Status.APPROVED, Status.REJECTED)
DEFAULT_STATUSES = (Status.SUBMITTED, Status.APPROVED)
TIME_CAP_S = 1800  # time-per-item histogram: one-second bins up to 30 minutes, the rest in the last bin
MIN_PAIR_ITEMS = 10  # below this many shared items a kappa is shown but flagged as too few
DISAGREEMENT_ITEMS = 50
BOOTSTRAP_SAMPLES = 1000
MAX_ID = 2**63 - 1  # the largest primary key any backend stores; a bigger "id" names nothing
# a date filter outside these days is clamped to them: no label is older, and the day after the end
# still exists (0001-01-01 is the roll-ups' "no day"; 9999-12-31 has no next day)
EARLIEST_DAY = dt.date(1970, 1, 1)
LATEST_DAY = dt.date(2999, 12, 31)
MAX_BUCKETS = 400  # time-series rows: a longer span moves to the next larger bucket (day, week, month, year)
BUCKETS = ("day", "week", "month", "year")


def as_id(raw) -> int | None:
    """A query parameter as a primary key, or None when it cannot be one (not a number, < 1, too big)."""
    try:
        value = int(str(raw).strip())
    except (TypeError, ValueError):
        return None
    return value if 1 <= value <= MAX_ID else None


def _shown(raw, limit: int = 40) -> str:
    """A bad value echoed back in a message, cut short (it may be a megabyte of junk)."""
    text = str(raw)
    return text if len(text) <= limit else text[:limit] + "…"


# --- filters ------------------------------------------------------------------------------------


class FilterError(ValueError):
    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class Filters:
    """What a lead narrowed the dashboards to. Parsed from a query string, written back into links."""

    models: tuple[int, ...] = ()
    date_from: dt.date | None = None
    date_to: dt.date | None = None  # inclusive
    annotator: int | None = None
    split: str = ""
    statuses: tuple[str, ...] = DEFAULT_STATUSES
    bucket: str = "auto"  # day | week | month | year | auto (a span of more than MAX_BUCKETS moves up)
    category: int | None = None  # scope: badcases in this category's subtree (and drill-down in the tree)

    @classmethod
    def parse(cls, params: Mapping, strict: bool = False) -> "Filters":
        """From request.GET (or a dict). Bad values raise FilterError when strict, else are dropped."""
        errors: dict[str, str] = {}

        def many(name):
            values = params.getlist(name) if hasattr(params, "getlist") else [params.get(name)]
            return [p.strip() for v in values if v for p in str(v).split(",") if p.strip()]

        def one_int(name):
            raw = params.get(name)
            if raw in (None, ""):
                return None
            value = as_id(raw)
            if value is None:
                errors[name] = f"{_shown(raw)!r} is not an id."
            return value

        def one_date(name):
            raw = params.get(name)
            if not raw:
                return None
            try:
                day = dt.date.fromisoformat(str(raw))
            except ValueError:
                errors[name] = f"{_shown(raw)!r} is not a date (YYYY-MM-DD)."
                return None
            return min(max(day, EARLIEST_DAY), LATEST_DAY)

        models = []
        for raw in many("model"):
            value = as_id(raw)
            if value is None:
                errors["model"] = f"{_shown(raw)!r} is not a model version id."
            else:
                models.append(value)
        statuses = many("status")
        if statuses == ["all"]:
            statuses = list(COUNTED_STATUSES)
        bad = [s for s in statuses if s not in COUNTED_STATUSES]
        if bad:
            errors["status"] = f"{_shown(', '.join(bad))}: choose from {', '.join(COUNTED_STATUSES)} or all."
            statuses = [s for s in statuses if s in COUNTED_STATUSES]
        split = params.get("split") or ""
        if split and split not in Split.values:
            errors["split"] = f"{_shown(split)!r}: choose from {', '.join(Split.values)}."
            split = ""
        bucket = params.get("bucket") or "auto"
        if bucket not in (*BUCKETS, "auto"):
            errors["bucket"] = f"choose {', '.join(BUCKETS)} or auto."
            bucket = "auto"
        f = cls(
            models=tuple(sorted(set(models))),
            date_from=one_date("from"),
            date_to=one_date("to"),
            annotator=one_int("annotator"),
            split=split,
            statuses=tuple(s for s in COUNTED_STATUSES if s in statuses) or DEFAULT_STATUSES,
            bucket=bucket,
            category=one_int("category"),
        )
        if f.date_from and f.date_to and f.date_from > f.date_to:
            errors["to"] = "The end date is before the start date."
        if errors and strict:
            raise FilterError(errors)
        return f

    def params(self, **overrides) -> dict:
        """Query parameters that reproduce these filters (defaults left out), with overrides applied."""
        f = replace(self, **{k: v for k, v in overrides.items() if k in self.__dataclass_fields__})
        out = {}
        if f.models:
            out["model"] = ",".join(str(m) for m in f.models)
        if f.date_from:
            out["from"] = f.date_from.isoformat()
        if f.date_to:
            out["to"] = f.date_to.isoformat()
        if f.annotator:
            out["annotator"] = f.annotator
        if f.split:
            out["split"] = f.split
        if f.statuses != DEFAULT_STATUSES:
            out["status"] = ",".join(f.statuses)
        if f.bucket != "auto":
            out["bucket"] = f.bucket
        if f.category:
            out["category"] = f.category
        extra = {
            k: v for k, v in overrides.items() if k not in self.__dataclass_fields__ and v not in (None, "")
        }
        out.update(extra)
        return out

    def query(self, **overrides) -> str:
        return urlencode(self.params(**overrides))

    def key(self) -> str:
        return self.query() or "-"

    def describe(self) -> dict:
        return {
            "models": list(self.models),
            "from": self.date_from,
            "to": self.date_to,
            "annotator": self.annotator,
            "split": self.split or None,
            "statuses": list(self.statuses),
            "bucket": self.bucket,
            "category": self.category,
        }


def _day_start(day: dt.date) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time.min))


def _window(f: Filters, field: str) -> Q:
    """A timestamp inside the date filter's local days (what local_day files under those days)."""
    q = Q()
    if f.date_from:
        q &= Q(**{f"{field}__gte": _day_start(f.date_from)})
    if f.date_to:
        q &= Q(**{f"{field}__lt": _day_start(f.date_to + dt.timedelta(days=1))})
    return q


def label_q(project, f: Filters, prefix: str = "", annotator: bool = True) -> Q:
    """The Q selecting a project's counted labels under the filters; `prefix` reaches Label through a join."""
    q = Q(**{f"{prefix}project_id": project.pk, f"{prefix}status__in": f.statuses})
    if f.models:
        q &= Q(**{f"{prefix}model_version_id__in": f.models})
    q &= _window(f, f"{prefix}submitted_at")
    if f.annotator and annotator:
        q &= Q(**{f"{prefix}annotator_id": f.annotator})
    if f.split:
        q &= Q(**{f"{prefix}response__conversation__split": f.split})
    return q


def rollup_cells(f: Filters, statuses=None) -> list[str]:
    """The roll-up counter columns (split_status) the split and status filters select."""
    splits = [f.split] if f.split else list(Split.values)
    return [f"{sp}_{st}" for sp in splits for st in (statuses or f.statuses)]


def rollup_sum(cells: list[str], *prefixes: str):
    """SUM over the selected counter columns of one or more prefixes (n, bad, timed, ms ...)."""
    expr = None
    for prefix in prefixes:
        for c in cells:
            expr = F(f"{prefix}_{c}") if expr is None else expr + F(f"{prefix}_{c}")
    return Sum(expr)


def rollup_counted(qs, cells: list[str], prefix: str = "n"):
    """Leave out roll-up rows whose selected counters are all zero (decremented away or other cells)."""
    expr = None
    for c in cells:
        expr = F(f"{prefix}_{c}") if expr is None else expr + F(f"{prefix}_{c}")
    return qs.alias(_counted=expr).filter(_counted__gt=0)


def rollup_days(f: Filters, field: str = "day") -> Q:
    q = Q()
    if f.date_from:
        q &= Q(**{f"{field}__gte": f.date_from})
    if f.date_to:
        q &= Q(**{f"{field}__lte": f.date_to, f"{field}__gt": NO_DAY})
    return q


def _version(mv):
    return mv or None  # the roll-ups file "no model version" under 0


def _rollup_day(day):
    day = _as_date(day)
    return None if day == NO_DAY else day


def preference_q(project, f: Filters, prefix: str = "", annotator: bool = True) -> Q:
    q = Q(**{f"{prefix}response_a__conversation__project_id": project.pk, f"{prefix}status__in": f.statuses})
    if f.models:
        q &= Q(**{f"{prefix}response_a__model_version_id__in": f.models}) | Q(
            **{f"{prefix}response_b__model_version_id__in": f.models}
        )
    q &= _window(f, f"{prefix}submitted_at")
    if f.annotator and annotator:
        q &= Q(**{f"{prefix}annotator_id": f.annotator})
    if f.split:
        q &= Q(**{f"{prefix}response_a__conversation__split": f.split})
    return q


# --- shared lookups -----------------------------------------------------------------------------


@dataclass
class CategoryTree:
    """The project's taxonomy (all categories, retired ones included: old labels still carry them)."""

    nodes: dict[int, dict]
    children: dict[int | None, list[int]] = field(default_factory=dict)

    @classmethod
    def load(cls, project) -> "CategoryTree":
        rows = (
            TaxonomyCategory.objects.filter(project=project)
            .order_by("position", "name")
            .values(
                "id",
                "parent_id",
                "name",
                "description",
                "root_cause",
                "recommended_fix",
                "active",
                "position",
            )
        )
        nodes = {r["id"]: dict(r) for r in rows}
        children: dict[int | None, list[int]] = defaultdict(list)
        for r in nodes.values():
            parent = r["parent_id"] if r["parent_id"] in nodes else None
            children[parent].append(r["id"])
        tree = cls(nodes, dict(children))
        for node_id, depth in tree.walk():
            nodes[node_id]["depth"] = depth
        return tree

    def walk(self, root: int | None = None, depth: int = 0):
        """(id, depth) in display order, depth-first, below `root` (None: the whole tree)."""
        stack = [(c, depth) for c in reversed(self.children.get(root, []))]
        seen = set()
        while stack:
            node, d = stack.pop()
            if node in seen:  # a cycle in bad data must not hang the page
                continue
            seen.add(node)
            yield node, d
            stack.extend((c, d + 1) for c in reversed(self.children.get(node, [])))

    def subtree(self, node: int) -> list[int]:
        return [node, *(n for n, _ in self.walk(node))]

    def ancestors(self, node: int) -> list[int]:
        """Root first, the node itself excluded."""
        chain, seen = [], {node}
        parent = self.nodes[node]["parent_id"]
        while parent in self.nodes and parent not in seen:
            seen.add(parent)
            chain.append(parent)
            parent = self.nodes[parent]["parent_id"]
        return list(reversed(chain))

    def internal(self) -> list[int]:
        return [n for n in self.nodes if self.children.get(n)]

    def path(self, node: int) -> str:
        return " › ".join(self.nodes[n]["name"] for n in [*self.ancestors(node), node])


def model_versions(project) -> list[dict]:
    """The project's model versions, lineage-ordered (parents before children, then by creation)."""
    rows = list(
        ModelVersion.objects.filter(project=project)
        .order_by("created_at", "id")
        .values("id", "name", "parent_id", "origin", "stage", "created_at")
    )
    by_id = {r["id"]: r for r in rows}
    order, seen = [], set()

    def visit(r):
        if r["id"] in seen:
            return
        seen.add(r["id"])
        if r["parent_id"] in by_id:
            visit(by_id[r["parent_id"]])
        order.append(r)

    for r in rows:
        visit(r)
    return order


def filter_choices(project) -> dict:
    """What the filter bar offers: model versions, annotators (members), splits, statuses."""
    users = list(
        Membership.objects.filter(project=project)
        .select_related("user")
        .order_by("user__username")
        .values("user_id", "user__username", "role")
    )
    return {
        "models": [{"id": m["id"], "name": m["name"]} for m in model_versions(project)],
        "annotators": [{"id": u["user_id"], "name": u["user__username"], "role": u["role"]} for u in users],
        "splits": list(Split.values),
        "statuses": list(COUNTED_STATUSES),
    }


def _nested_aggregate(inner_qs, outer_select: str, group_by: str) -> list[tuple]:
    """Run `SELECT outer_select FROM (inner) sub GROUP BY group_by`: an aggregate over an aggregate."""
    sql, params = inner_qs.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {outer_select} FROM ({sql}) sub GROUP BY {group_by}", params)
        return cursor.fetchall()


def _rate(k, n):
    return k / n if n else None


def _wilson(k, n):
    ci = stats.wilson_interval(k, n)
    return (None, None) if ci is None else ci


def _week_start(day: dt.date) -> dt.date:
    return day - dt.timedelta(days=day.weekday())


def _as_date(value) -> dt.date | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, str):  # SQLite returns TruncDate as text in nested SQL
        return dt.date.fromisoformat(value[:10])
    return value


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
    """Per annotator: items, items with a recorded time, time spent, a one-second time histogram, first/last."""
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
    """Throughput, time per item, skips, review outcomes and agreement (with peers and with gold) per annotator."""
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


def agreement_core(project, f: Filters, categories: bool = True, items: int = 0, pairs: bool = True) -> dict:
    """Everything agreement needs, computed from the multiply-judged labels in one SQL statement: the
    reference the agreement roll-ups are checked against (the pages read the roll-ups).

    Only responses judged two or more times carry agreement: the judges roll-up (ResponseJudges)
    lists them, the statement keeps their filtered labels in a materialised CTE (a quarter of the
    labels at the benchmark's overlap, read by index) and computes from it, with UNION ALL:
      pair: (annotator a < annotator b, a's verdict, b's verdict) -> items both judged
      unit: (judges, unreasonable verdicts) -> units                 (verdict alpha)
      cat:  (category, judges, judges who chose it) -> units         (per-category alpha)
      item: the `items` responses with the most split judge pairs    (items driving disagreement)
    Verdicts travel as 1 (unreasonable) / 0. With an annotator filter, items are ones they judged.
    A date filter keeps what was completed inside it: units whose last label, and pairs whose later
    label, falls in the range (all their labels timed); each unit keeps all its labels.
    """
    # only responses with two or more counted labels can carry agreement: the judges roll-up finds them
    multi = ResponseJudges.objects.filter(project_id=project.pk, n__gte=2).values("response")
    undated = replace(f, date_from=None, date_to=None)
    base = Label.objects.filter(label_q(project, undated, annotator=False), response_id__in=multi).order_by()
    l_sql, l_params = base.values(
        "id", "response_id", "annotator_id", "verdict", "submitted_at"
    ).query.sql_with_params()
    mat = "MATERIALIZED " if connection.vendor == "postgresql" else ""
    through = connection.ops.quote_name(LabelCategory._meta.db_table)
    bounds = [
        (op, _day_start(day))
        for op, day in ((">=", f.date_from), ("<", f.date_to and f.date_to + dt.timedelta(days=1)))
        if day
    ]  # the completion time inside the filter's local days, as the roll-ups file it

    def completed(when: str, timed: str) -> tuple[str, list]:
        if not bounds:
            return "", []
        return "".join(f" AND {when} {op} %s" for op, _ in bounds) + f" AND {timed}", [t for _, t in bounds]

    unit_window, unit_params = completed("MAX(submitted_at)", "COUNT(submitted_at) = COUNT(*)")
    parts = [
        "SELECT 'unit', n, u, CAST(NULL AS BIGINT), CAST(NULL AS BIGINT), COUNT(*) FROM units GROUP BY n, u"
    ]
    params = [UNREASONABLE, *l_params, *unit_params]
    if pairs:
        pair_window, pair_params = completed(
            "CASE WHEN a.submitted_at > b.submitted_at THEN a.submitted_at ELSE b.submitted_at END",
            "a.submitted_at IS NOT NULL AND b.submitted_at IS NOT NULL",
        )
        parts.append(f"""SELECT 'pair', a.annotator_id, b.annotator_id, a.bad, b.bad, COUNT(*) FROM ml a
                JOIN ml b ON a.response_id = b.response_id AND a.annotator_id < b.annotator_id{pair_window}
                GROUP BY a.annotator_id, b.annotator_id, a.bad, b.bad""")
        params += pair_params
    if categories:
        parts.append(f"""SELECT 'cat', c.cat, units.n, c.k, CAST(NULL AS BIGINT), COUNT(*) FROM (
                SELECT t.taxonomycategory_id AS cat, ml.response_id, COUNT(*) AS k FROM {through} t
                JOIN ml ON ml.id = t.label_id GROUP BY t.taxonomycategory_id, ml.response_id) c
                JOIN units ON units.response_id = c.response_id GROUP BY c.cat, units.n, c.k""")
    if items:
        mine = (
            "AND response_id IN (SELECT response_id FROM ml WHERE annotator_id = %s)" if f.annotator else ""
        )
        parts.append(f"""SELECT 'item', response_id, n - u, u, CAST(NULL AS BIGINT), CAST(NULL AS BIGINT) FROM (
                SELECT response_id, n, u FROM units WHERE u > 0 AND u < n {mine}
                ORDER BY (n - u) * u DESC, last DESC, response_id LIMIT %s) top""")
        params += [f.annotator] if f.annotator else []
        params.append(items)
    sql = (
        f"WITH ml AS {mat}(SELECT x.id, x.response_id, x.annotator_id, "
        f"CASE WHEN x.verdict = %s THEN 1 ELSE 0 END AS bad, x.submitted_at FROM ({l_sql}) x), "
        f"units AS {mat}(SELECT response_id, COUNT(*) AS n, SUM(bad) AS u, MAX(submitted_at) AS last "
        f"FROM ml GROUP BY response_id HAVING COUNT(*) >= 2{unit_window}) "
        + " UNION ALL ".join(f"SELECT * FROM ({p}) q{i}" for i, p in enumerate(parts))
    )
    out = {"pairs": defaultdict(Counter), "units": [], "categories": defaultdict(Counter), "items": []}
    verdict = {1: UNREASONABLE, 0: REASONABLE}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for kind, c1, c2, c3, c4, n in cursor.fetchall():
            if kind == "pair":
                out["pairs"][(c1, c2)][(verdict[c3], verdict[c4])] = n
            elif kind == "unit":
                out["units"].append(({REASONABLE: c1 - c2, UNREASONABLE: c2}, n))
            elif kind == "cat":
                out["categories"][c1][(c2, c3)] = n
            else:
                out["items"].append((c1, c2, c3))
    out["items"].sort(key=lambda i: -(i[1] * i[2]))  # UNION ALL does not keep the subquery's order
    return out


def _split_sum(f: Filters):
    cols = [f"n_{f.split}"] if f.split else list(SPLIT_COLUMNS)
    expr = None
    for c in cols:
        expr = F(c) if expr is None else expr + F(c)
    return Sum(expr)


def agreement_rolled_up(project, f: Filters, items: int = 0) -> dict:
    """What agreement_core returns (without pairs: see verdict_pair_tables), from the agreement
    roll-ups (rollups.AgreementUnit, AgreementCategory, AgreementItem). Under a date filter: the units
    whose last label falls inside it. Three bounded queries: grouped rows and the top `items` of an index."""
    mask = status_mask(f.statuses)
    base = {"project_id": project.pk, "statuses": mask}
    if f.models:
        base["model_version__in"] = f.models
    days = rollup_days(f)
    out = {"pairs": defaultdict(Counter), "units": [], "categories": defaultdict(Counter), "items": []}
    for row in (
        AgreementUnit.objects.filter(days, **base)
        .values("judges", "bad")
        .annotate(n=_split_sum(f))
        .order_by("judges", "bad")
    ):
        if row["n"]:
            out["units"].append(
                ({REASONABLE: row["judges"] - row["bad"], UNREASONABLE: row["bad"]}, row["n"])
            )
    for row in (
        AgreementCategory.objects.filter(days, **base)
        .values("category", "judges", "chose")
        .annotate(n=_split_sum(f))
        .order_by()
    ):
        if row["n"]:
            out["categories"][row["category"]][(row["judges"], row["chose"])] = row["n"]
    if items:
        top = AgreementItem.objects.filter(_window(f, "last"), **base)
        if f.split:
            top = top.filter(split=f.split)
        if f.annotator:
            top = top.filter(
                Exists(
                    Label.objects.filter(
                        project_id=project.pk,
                        response_id=OuterRef("response"),
                        annotator_id=f.annotator,
                        status__in=f.statuses,
                    )
                )
            )
        out["items"] = [
            (r, n - u, u)
            for r, n, u in top.order_by(F("score").desc(), F("last").desc(), "response").values_list(
                "response", "judges", "bad"
            )[:items]
        ]
    return out


def preference_compositions(project, f: Filters, from_rollups: bool = True) -> list[tuple[dict, int]]:
    """Compositions of the (response a, response b) pairs compared two or more times: {choice: n}, units.
    From the preference-unit roll-up; under a date filter the pairs whose last comparison falls inside it.
    `from_rollups=False` computes the same from the preferences (the reference the roll-ups are checked against)."""
    choices = list(Preference.Choice.values)
    if from_rollups:
        rows = PreferenceUnit.objects.filter(
            rollup_days(f), project_id=project.pk, statuses=status_mask(f.statuses)
        )
        if f.models:
            rows = rows.filter(Q(model_a__in=f.models) | Q(model_b__in=f.models))
        cols = [f"c_{c}" for c in choices]
        return [
            (dict(zip(choices, [row[c] for c in cols], strict=True)), row["n"])
            for row in rows.values(*cols).annotate(n=_split_sum(f)).order_by(*cols)
            if row["n"]
        ]
    pref_units = (
        Preference.objects.filter(
            preference_q(project, replace(f, date_from=None, date_to=None), annotator=False)
        )
        .values("response_a_id", "response_b_id")
        .annotate(
            m=Count("id"),
            timed=Count("submitted_at"),
            last=Max("submitted_at"),
            **{f"c_{c}": Count("id", filter=Q(choice=c)) for c in choices},
        )
        .filter(m__gte=2)
    )
    if f.date_from or f.date_to:
        pref_units = pref_units.filter(_window(f, "last"), timed=F("m"))
    pref_units = pref_units.values(*[f"c_{c}" for c in choices]).order_by()
    cols = ", ".join(f"c_{c}" for c in choices)
    return [
        (dict(zip(choices, row[:-1], strict=True)), row[-1])
        for row in _nested_aggregate(pref_units, f"{cols}, COUNT(*)", cols)
    ]


def verdict_pair_tables(project, f: Filters) -> dict[tuple[int, int], Counter]:
    """{(annotator_a, annotator_b): {(verdict_a, verdict_b): items}} with a < b, over items both judged.

    From the pair roll-up (columns: split, both labels' statuses); under a date filter from its per-day
    twin, which files a pair under the day of the later of its two labels (the pairs completed in the range).
    """
    cells = [
        f"{sp}_{a}_{b}"
        for sp in ([f.split] if f.split else Split.values)
        for a in f.statuses
        for b in f.statuses
    ]
    if f.date_from or f.date_to:
        rows = AgreementPairDay.objects.filter(rollup_days(f), project_id=project.pk)
    else:
        rows = AgreementPair.objects.filter(project_id=project.pk)
    if f.models:
        rows = rows.filter(model_version__in=f.models)
    verdict = {True: UNREASONABLE, False: REASONABLE}
    out: dict[tuple[int, int], Counter] = defaultdict(Counter)
    for a, b, bad_a, bad_b, n in (
        rows.values_list("annotator_a", "annotator_b", "bad_a", "bad_b")
        .annotate(n=rollup_sum(cells, "n"))
        .filter(n__gt=0)
        .order_by()
    ):
        out[(a, b)][(verdict[bad_a], verdict[bad_b])] += n
    return out


def gold_tables(project, f: Filters) -> dict[int, Counter]:
    """{annotator: {(their verdict, the lead's gold verdict): items}} on adjudicated label tasks."""
    cells = rollup_cells(f)
    rows = GoldDay.objects.filter(rollup_days(f), project_id=project.pk)
    if f.models:
        rows = rows.filter(model_version__in=f.models)
    if f.annotator:
        rows = rows.filter(annotator=f.annotator)
    out: dict[int, Counter] = defaultdict(Counter)
    for row in rows.values("annotator", "verdict", "gold").annotate(n=rollup_sum(cells, "n")).order_by():
        if row["n"]:
            out[row["annotator"]][(row["verdict"], row["gold"])] += row["n"]
    return out


# --- 3. agreement -------------------------------------------------------------------------------


def agreement(project, f: Filters) -> dict:
    """Verdict agreement (pairwise Cohen's kappa, Krippendorff's alpha), per-category agreement on
    the multi-label taxonomy choices, agreement on pairwise choices, and the items driving disagreement."""
    tree = CategoryTree.load(project)
    core = agreement_rolled_up(project, f, items=DISAGREEMENT_ITEMS)
    core["pairs"] = verdict_pair_tables(project, f)

    compositions = core["units"]
    alpha = stats.alpha_nominal(compositions)
    units_by_size = Counter()
    for comp, n in compositions:
        units_by_size[sum(comp.values())] += n

    # per-category: for every category, units with m judges of which k chose it
    categories = []
    for node_id, depth in tree.walk():
        sizes = core["categories"].get(node_id, Counter())
        a = stats.alpha_nominal(stats.binary_compositions(sizes, units_by_size))
        chose = sum(units * k for (m, k), units in sizes.items())
        split_units = sum(units for (m, k), units in sizes.items() if 0 < k < m)
        categories.append(
            {
                "category": node_id,
                "name": tree.nodes[node_id]["name"],
                "path": tree.path(node_id),
                "depth": depth,
                "units": sum(sizes.values()),
                "choices": chose,
                "split_units": split_units,
                "alpha": a.alpha,
                "specific_agreement": stats.specific_agreement(sizes),
            }
        )

    # annotator pairs: Cohen's kappa per pair
    tables_by_pair = core["pairs"]
    names = dict(
        get_user_model()
        .objects.filter(pk__in={u for pair in tables_by_pair for u in pair})
        .values_list("pk", "username")
    )
    pairs = []
    for (a, b), table in tables_by_pair.items():
        if f.annotator and f.annotator not in (a, b):
            continue
        k = stats.cohen_kappa(table)
        disagree = sum(n for (va, vb), n in table.items() if va != vb)
        pairs.append(
            {
                "a": a,
                "a_name": names.get(a, str(a)),
                "b": b,
                "b_name": names.get(b, str(b)),
                "items": k.n,
                "agreement": k.observed,
                "expected": k.expected,
                "kappa": k.kappa,
                "disagreements": disagree,
                "few": k.n < MIN_PAIR_ITEMS,
            }
        )
    pairs.sort(key=lambda p: (p["kappa"] is None, p["kappa"] if p["kappa"] is not None else 0, -p["items"]))

    # pairwise choices: alpha over {a, b, tie, both_bad} on pairs compared by two or more annotators
    pref_comps = preference_compositions(project, f)
    pref_alpha = stats.alpha_nominal(pref_comps)
    # collapse to "which response is better" (a / b / neither) for a second, coarser view
    coarse = [({"a": c["a"], "b": c["b"], "neither": c["tie"] + c["both_bad"]}, n) for c, n in pref_comps]

    return {
        "filters": f.describe(),
        "completed_in_range": bool(
            f.date_from or f.date_to
        ),  # a date filter counts the units completed in it
        "verdict": {
            "alpha": alpha.alpha,
            "units": alpha.units,
            "values": alpha.values,
            "observed_disagreement": alpha.observed_disagreement,
            "expected_disagreement": alpha.expected_disagreement,
            "pairwise_agreement": pairwise_agreement(compositions),
            "units_by_judges": dict(sorted(units_by_size.items())),
        },
        "pairs": pairs,
        "min_pair_items": MIN_PAIR_ITEMS,
        "categories": categories,
        "preferences": {
            "alpha": pref_alpha.alpha,
            "units": pref_alpha.units,
            "pairwise_agreement": pairwise_agreement(pref_comps),
            "alpha_better": stats.alpha_nominal(coarse).alpha,
        },
        "items": disagreement_items(project, f, core["items"]),
    }


def pairwise_agreement(compositions) -> float | None:
    """Share of ordered pairs of judges, within a unit, that gave the same value."""
    same = total = 0
    for comp, n in compositions:
        m = sum(comp.values())
        same += n * sum(c * (c - 1) for c in comp.values())
        total += n * m * (m - 1)
    return same / total if total else None


def disagreement_items(project, f: Filters, top: list[tuple[int, int, int]]) -> list[dict]:
    """The split responses (response, reasonable, unreasonable) with who said what, gold and task."""
    ids = [t[0] for t in top]
    labels = defaultdict(list)
    fields = (
        "id",
        "response_id",
        "annotator__username",
        "verdict",
        "submitted_at",
        "model_version__name",
        "response__conversation_id",
        "response__conversation__external_id",
    )
    rows = list(
        Label.objects.filter(label_q(project, replace(f, annotator=None)), response_id__in=ids)
        .values_list(*fields)
        .order_by("annotator__username")
    )
    names = defaultdict(list)  # in the categories' own order, as label.categories.all() gives them
    for label_id, name in (
        LabelCategory.objects.filter(label_id__in=[r[0] for r in rows])
        .order_by("taxonomycategory__project", "taxonomycategory__position", "taxonomycategory__name")
        .values_list("label_id", "taxonomycategory__name")
    ):
        names[label_id].append(name)
    for row in rows:
        labels[row[1]].append(dict(zip(fields, row, strict=True)) | {"categories": names.get(row[0], [])})
    tasks = dict(
        Task.objects.filter(kind=Task.Kind.LABEL, response_id__in=ids).values_list("response_id", "pk")
    )
    gold = dict(
        Adjudication.objects.filter(task__response_id__in=ids, task__kind=Task.Kind.LABEL).values_list(
            "task__response_id", "verdict"
        )
    )
    out = []
    for response_id, r, u in top:
        group = labels.get(response_id, [])
        if not group:
            continue
        first = group[0]
        cats = Counter(name for lb in group for name in lb["categories"])
        out.append(
            {
                "response": response_id,
                "conversation": first["response__conversation_id"],
                "external_id": first["response__conversation__external_id"],
                "model_version": first["model_version__name"],
                "reasonable": r,
                "unreasonable": u,
                "last": max(lb["submitted_at"] for lb in group),
                "judgements": [
                    {
                        "annotator": lb["annotator__username"],
                        "verdict": lb["verdict"],
                        "categories": list(lb["categories"]),
                    }
                    for lb in group
                ],
                "categories": dict(cats.most_common()),
                "task": tasks.get(response_id),
                "gold": gold.get(response_id) or None,
            }
        )
    return out


# --- 4. model versions --------------------------------------------------------------------------


def model_comparison(project, f: Filters) -> dict:
    """Pairwise win rates from human preferences, Bradley-Terry ratings with bootstrap intervals,
    and each version's lineage with its badcase rate and evaluation results."""
    versions = model_versions(project)
    by_id = {v["id"]: v for v in versions}
    pf = replace(f, models=())  # every version takes part; the model filter picks what is highlighted
    cells = defaultdict(Counter)  # (a_version, b_version) -> choice counts, as stored (a/b order)
    left_chosen = decisive = 0
    if f.annotator:  # that annotator's preferences
        rows = (
            Preference.objects.filter(preference_q(project, pf))
            .values("response_a__model_version_id", "response_b__model_version_id", "choice", "left_side")
            .annotate(n=Count("id"))
            .order_by()
        )
    else:
        rows = [
            {
                "response_a__model_version_id": _version(r["model_a"]),
                "response_b__model_version_id": _version(r["model_b"]),
                "choice": r["choice"],
                "left_side": r["left_side"],
                "n": r["n"],
            }
            for r in PreferenceDay.objects.filter(rollup_days(f), project_id=project.pk)
            .values("model_a", "model_b", "choice", "left_side")
            .annotate(n=rollup_sum(rollup_cells(f), "n"))
            .order_by()
            if r["n"]
        ]
    for row in rows:
        a, b = row["response_a__model_version_id"], row["response_b__model_version_id"]
        cells[(a, b)][row["choice"]] += row["n"]
        if row["choice"] in ("a", "b"):
            decisive += row["n"]
            if row["choice"] == row["left_side"]:
                left_chosen += row["n"]

    ids = [v["id"] for v in versions]
    index = {mv: i for i, mv in enumerate(ids)}
    k = len(ids)
    wins = [[0.0] * k for _ in range(k)]
    ties = [[0.0] * k for _ in range(k)]
    both_bad = [[0] * k for _ in range(k)]
    same_version = 0
    for (a, b), c in cells.items():
        if a == b or a not in index or b not in index:
            same_version += sum(c.values())
            continue
        i, j = index[a], index[b]
        wins[i][j] += c["a"]
        wins[j][i] += c["b"]
        ties[i][j] += c["tie"] + c["both_bad"]
        ties[j][i] += c["tie"] + c["both_bad"]
        both_bad[i][j] += c["both_bad"]
        both_bad[j][i] += c["both_bad"]

    matrix = []
    for i, a in enumerate(ids):
        row = []
        for j, b in enumerate(ids):
            w, lo_, t = wins[i][j], wins[j][i], ties[i][j]
            n = w + lo_ + t
            ci = stats.wilson_interval(w + t / 2, n) if n else None
            row.append(
                {
                    "a": a,
                    "b": b,
                    "wins": int(w),
                    "losses": int(lo_),
                    "ties": int(t),
                    "both_bad": both_bad[i][j],
                    "comparisons": int(n),
                    "win_rate": _rate(w + t / 2, n),
                    "decisive_win_rate": _rate(w, w + lo_),
                    "low": ci[0] if ci else None,
                    "high": ci[1] if ci else None,
                }
                if i != j
                else None
            )
        matrix.append(row)

    strengths = (
        stats.bradley_terry_bootstrap(
            wins,
            [[ties[i][j] if j > i else 0 for j in range(k)] for i in range(k)],
            prior=1.0,
            samples=BOOTSTRAP_SAMPLES,
            seed=project.pk,
        )
        if k
        else []
    )
    ratings = []
    for s in strengths:
        v = versions[s.index]
        ratings.append(
            {
                "model_version": v["id"],
                "name": v["name"],
                "rating": s.rating,
                "low": s.low,
                "high": s.high,
                "beta": s.beta,
                "comparisons": int(s.comparisons),
            }
        )
    ratings.sort(key=lambda r: (r["rating"] is None, -(r["rating"] or 0)))

    # badcase rate per version (labels), for the lineage
    verdicts = defaultdict(Counter)
    label_cells = rollup_cells(f)
    day_rows = AnnotatorDay.objects.filter(annotator=f.annotator) if f.annotator else LabelDay.objects.all()
    for row in (
        day_rows.filter(rollup_days(f), project_id=project.pk)
        .values("model_version")
        .annotate(n=rollup_sum(label_cells, "n"), bad=rollup_sum(label_cells, "bad"))
        .order_by()
    ):
        verdicts[_version(row["model_version"])][UNREASONABLE] += row["bad"] or 0
        verdicts[_version(row["model_version"])][REASONABLE] += (row["n"] or 0) - (row["bad"] or 0)
    evals = eval_summaries(project, [v["id"] for v in versions])
    rating_by = {r["model_version"]: r for r in ratings}
    lineage = []
    for v in versions:
        n = sum(verdicts[v["id"]].values())
        bad = verdicts[v["id"]][UNREASONABLE]
        chain = []
        node, seen = v, set()
        while node is not None and node["id"] not in seen:
            seen.add(node["id"])
            chain.append(node["name"])
            node = by_id.get(node["parent_id"])
        parent = by_id.get(v["parent_id"])
        vs_parent = None
        if parent:
            cell = matrix[index[v["id"]]][index[parent["id"]]]
            vs_parent = cell if cell and cell["comparisons"] else None
        parent_n = sum(verdicts[parent["id"]].values()) if parent else 0
        parent_rate = _rate(verdicts[parent["id"]][UNREASONABLE], parent_n) if parent else None
        rate = _rate(bad, n)
        lineage.append(
            {
                "model_version": v["id"],
                "name": v["name"],
                "parent": parent["name"] if parent else None,
                "parent_id": v["parent_id"],
                "origin": v["origin"],
                "stage": v["stage"],
                "created_at": v["created_at"],
                "lineage": list(reversed(chain)),
                "depth": len(chain) - 1,
                "labels": n,
                "badcases": bad,
                "badcase_rate": rate,
                "badcase_change": None if rate is None or parent_rate is None else rate - parent_rate,
                "rating": rating_by.get(v["id"], {}).get("rating"),
                "win_rate_vs_parent": vs_parent["win_rate"] if vs_parent else None,
                "comparisons_vs_parent": vs_parent["comparisons"] if vs_parent else 0,
                "eval": evals["by_version"].get(v["id"]),
            }
        )
    comparisons = int(
        sum(wins[i][j] for i in range(k) for j in range(k))
        + sum(ties[i][j] for i in range(k) for j in range(i + 1, k))
    )
    return {
        "filters": f.describe(),
        "versions": [{"id": v["id"], "name": v["name"]} for v in versions],
        "matrix": matrix,
        "ratings": ratings,
        "comparisons": comparisons,
        "same_version_comparisons": same_version,
        "position": {
            "decisive": decisive,
            "left_chosen": left_chosen,
            "left_rate": _rate(left_chosen, decisive),
            "low": (stats.wilson_interval(left_chosen, decisive) or (None, None))[0],
            "high": (stats.wilson_interval(left_chosen, decisive) or (None, None))[1],
        },
        "lineage": lineage,
        "evaluation": {k: v for k, v in evals.items() if k != "by_version"},
        "highlight": list(f.models),
    }


def eval_summaries(project, version_ids: list[int]) -> dict:
    """Each version's latest finished evaluation on one shared suite (the yardstick), for the lineage.

    Runs on different suites are not comparable, so one suite is chosen: the one that evaluated
    the most of these versions (the newest such suite on a tie). {"available": False} while the
    evaluation app has no runs model; "runs" is empty until a run has finished.
    """
    from django.apps import apps
    from django.core.exceptions import FieldError

    try:
        run_model = apps.get_model("evaluation", "EvalRun")
        from toolcalls.score import HEADLINE_METRICS
    except (LookupError, ImportError):
        return {"available": False, "suite": None, "metrics": [], "by_version": {}, "runs": 0}
    try:
        runs = list(
            run_model.objects.filter(project=project, status="done", model_version_id__in=version_ids)
            .order_by("-finished_at", "-id")
            .values(
                "id",
                "model_version_id",
                "suite_id",
                "suite__name",
                "suite__version",
                "summary",
                "finished_at",
            )
        )
    except FieldError:  # the evaluation app changed shape: show the lineage without it, never a 500
        return {"available": False, "suite": None, "metrics": [], "by_version": {}, "runs": 0}
    latest: dict[tuple[int, int], dict] = {}
    for run in runs:
        latest.setdefault((run["model_version_id"], run["suite_id"]), run)
    coverage = Counter(suite for _, suite in latest)
    if not coverage:
        return {
            "available": True,
            "suite": None,
            "metrics": list(HEADLINE_METRICS),
            "by_version": {},
            "runs": 0,
        }
    suite = max(coverage, key=lambda s: (coverage[s], s))
    by_version = {}
    suite_name = None
    for (mv, s_id), run in latest.items():
        if s_id != suite:
            continue
        suite_name = f"{run['suite__name']} v{run['suite__version']}"
        summary = run["summary"] or {}
        by_version[mv] = {
            "run": run["id"],
            "finished_at": run["finished_at"],
            "n": summary.get("n"),
            "metrics": {
                m: {"value": (summary.get(m) or {}).get("value"), "se": (summary.get(m) or {}).get("se")}
                for m in HEADLINE_METRICS
            },
        }
    return {
        "available": True,
        "suite": suite_name,
        "suite_id": suite,
        "metrics": list(HEADLINE_METRICS),
        "by_version": by_version,
        "runs": len(runs),
        "other_suites": len(coverage) - 1,
    }


# --- drill-down lists ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseFilters:
    """Extra narrowing for the list of cases behind a chart bar or table cell."""

    verdict: str = ""
    category: int | None = None  # labels carrying a category in this subtree (direct=1: this exact one)
    direct: bool = False
    pair: tuple[int, int] | None = None  # items both annotators judged (shown: the first one's labels)
    disagree: bool = False  # with pair: only items where their verdicts differ; alone: split verdicts
    category_split: int | None = None  # items where judges split on choosing this category
    gold: str = ""  # "match" | "mismatch": against the lead's gold verdict

    @classmethod
    def parse(cls, params: Mapping) -> "CaseFilters":
        def as_int(v):
            return None if v in (None, "") else as_id(v)

        pair = None
        if params.get("pair"):
            parts = [as_int(p) for p in str(params["pair"]).split(",", 2)]
            if len(parts) == 2 and None not in parts:
                pair = (parts[0], parts[1])
        verdict = params.get("verdict") or ""
        return cls(
            verdict=verdict if verdict in Label.Verdict.values else "",
            category=as_int(params.get("category")),
            direct=params.get("direct") == "1",
            pair=pair,
            disagree=params.get("disagree") == "1",
            category_split=as_int(params.get("category_split")),
            gold=params.get("gold") if params.get("gold") in ("match", "mismatch") else "",
        )


def case_queryset(project, f: Filters, c: CaseFilters):
    """The labels behind a dashboard number: same filters, same counting, so the list length equals it."""
    qs = Label.objects.filter(label_q(project, f))
    if c.verdict:
        qs = qs.filter(verdict=c.verdict)
    if c.category:
        tree = CategoryTree.load(project) if not c.direct else None
        cats = (
            [c.category]
            if c.direct
            else (tree.subtree(c.category) if c.category in tree.nodes else [c.category])
        )
        qs = qs.filter(
            Exists(LabelCategory.objects.filter(label_id=OuterRef("pk"), taxonomycategory_id__in=cats))
        )
    if c.pair:
        a, b = c.pair
        other = Label.objects.filter(
            label_q(project, replace(f, annotator=None)), annotator_id=b, response_id=OuterRef("response_id")
        )
        if c.disagree:
            other = other.exclude(verdict=OuterRef("verdict"))
        qs = qs.filter(annotator_id=a).filter(Exists(other))
    elif c.disagree:
        peers = Label.objects.filter(
            label_q(project, replace(f, annotator=None)), response_id=OuterRef("response_id")
        )
        qs = qs.filter(Exists(peers.filter(verdict=REASONABLE)), Exists(peers.filter(verdict=UNREASONABLE)))
    if c.category_split:
        peers = Label.objects.filter(
            label_q(project, replace(f, annotator=None)), response_id=OuterRef("response_id")
        )
        has = LabelCategory.objects.filter(label_id=OuterRef("pk"), taxonomycategory_id=c.category_split)
        qs = qs.filter(Exists(peers.filter(Exists(has))), Exists(peers.exclude(Exists(has))))
    if c.gold:
        gold = Adjudication.objects.filter(
            task__kind=Task.Kind.LABEL,
            task__response_id=OuterRef("response_id"),
            verdict__in=Label.Verdict.values,
        )
        gold = (
            gold.filter(verdict=OuterRef("verdict"))
            if c.gold == "match"
            else gold.exclude(verdict=OuterRef("verdict"))
        )
        qs = qs.filter(Exists(gold))
    return qs


def case_count_rolled_up(project, f: Filters, c: CaseFilters) -> int | None:
    """The number of cases from the roll-ups when they hold it exactly (the plain filters, a verdict of
    unreasonable or none, a category with verdict unreasonable and no annotator); None otherwise."""
    if c.pair or c.disagree or c.category_split or c.gold or c.verdict not in ("", UNREASONABLE):
        return None
    cells = rollup_cells(f)
    if c.category:
        if c.verdict != UNREASONABLE or f.annotator:
            return None  # categories are counted on badcase labels, per day and model version only
        rows = CategoryDay.objects.filter(
            rollup_days(f), project_id=project.pk, category=c.category, under=not c.direct
        )
        prefix = "n"
    else:
        rows = AnnotatorDay.objects.filter(annotator=f.annotator) if f.annotator else LabelDay.objects.all()
        rows = rows.filter(rollup_days(f), project_id=project.pk)
        prefix = "bad" if c.verdict else "n"
    if f.models:
        rows = rows.filter(model_version__in=f.models)
    return rows.aggregate(n=rollup_sum(cells, prefix))["n"] or 0


def case_page(project, f: Filters, c: CaseFilters, page: int = 1, per_page: int = 50) -> dict:
    """One page of cases, newest first. The total comes from the roll-ups where they hold it (else a
    COUNT over the labels); the page's rows are found per status along the (project, status,
    submitted_at) index, at most page x per_page rows each, and ordered together."""
    qs = case_queryset(project, f, c)
    total = case_count_rolled_up(project, f, c)
    if total is None:
        total = qs.count()
    pages = max(1, math.ceil(total / per_page))
    page = min(max(1, page), pages)
    order = ("-submitted_at", "-id")
    candidates = []
    for status in f.statuses:
        candidates += (
            qs.filter(status=status).order_by(*order).values_list("pk", flat=True)[: page * per_page]
        )
    rows = list(
        Label.objects.filter(pk__in=candidates)
        .select_related("annotator", "model_version", "response__conversation")
        .prefetch_related("categories")
        .order_by(*order)[(page - 1) * per_page : page * per_page]
    )
    return {
        "total": total,
        "page": page,
        "pages": pages,
        "per_page": per_page,
        "rows": [case_row(label) for label in rows],
    }


def case_row(label) -> dict:
    conv = label.response.conversation
    return {
        "label": label.pk,
        "response": label.response_id,
        "conversation": conv.pk,
        "external_id": conv.external_id,
        "split": conv.split,
        "model_version": label.model_version.name if label.model_version else None,
        "annotator": label.annotator.username,
        "verdict": label.verdict,
        "status": label.status,
        "categories": [c.name for c in label.categories.all()],
        "note": label.note,
        "time_spent_s": round(label.time_spent_ms / 1000, 1),
        "submitted_at": label.submitted_at,
    }


def comparison_queryset(
    project, f: Filters, model_a: int | None = None, model_b: int | None = None, outcome: str = ""
):
    """Preferences behind a win-rate cell: model_a against model_b in either stored order.

    outcome is from model_a's side: win, loss or tie (tie includes both bad); empty: all.
    """
    qs = Preference.objects.filter(preference_q(project, replace(f, models=())))
    if model_a and model_b:
        forward = Q(response_a__model_version_id=model_a, response_b__model_version_id=model_b)
        backward = Q(response_a__model_version_id=model_b, response_b__model_version_id=model_a)
        if outcome == "win":
            qs = qs.filter((forward & Q(choice="a")) | (backward & Q(choice="b")))
        elif outcome == "loss":
            qs = qs.filter((forward & Q(choice="b")) | (backward & Q(choice="a")))
        elif outcome == "tie":
            qs = qs.filter((forward | backward) & Q(choice__in=["tie", "both_bad"]))
        else:
            qs = qs.filter(forward | backward)
    elif model_a:
        qs = qs.filter(Q(response_a__model_version_id=model_a) | Q(response_b__model_version_id=model_a))
    return qs


def comparison_count_rolled_up(
    project, f: Filters, model_a: int | None = None, model_b: int | None = None, outcome: str = ""
) -> int | None:
    """The number of comparisons comparison_queryset selects, from the choice roll-ups: per day, stored
    version pair and choice (PreferenceDay), or per annotator without the choice (AnnotatorPreferenceDay);
    None where they do not hold it (an annotator and an outcome)."""
    if f.annotator and outcome:
        return None
    rows = (
        AnnotatorPreferenceDay.objects.filter(annotator=f.annotator)
        if f.annotator
        else PreferenceDay.objects.all()
    )
    rows = rows.filter(rollup_days(f), project_id=project.pk)
    if model_a and model_b:
        forward, backward = Q(model_a=model_a, model_b=model_b), Q(model_a=model_b, model_b=model_a)
        won, lost = {"win": ("a", "b"), "loss": ("b", "a")}.get(outcome, (None, None))
        if won:
            rows = rows.filter((forward & Q(choice=won)) | (backward & Q(choice=lost)))
        elif outcome == "tie":
            rows = rows.filter(forward | backward, choice__in=["tie", "both_bad"])
        else:
            rows = rows.filter(forward | backward)
    elif model_a:
        rows = rows.filter(Q(model_a=model_a) | Q(model_b=model_a))
    return rows.aggregate(n=rollup_sum(rollup_cells(f), "n"))["n"] or 0


def comparison_page(project, f: Filters, model_a=None, model_b=None, outcome="", page=1, per_page=50) -> dict:
    """One page of the comparisons behind a win-rate cell, newest first; the total from the roll-ups where they hold it."""
    qs = comparison_queryset(project, f, model_a, model_b, outcome)
    total = comparison_count_rolled_up(project, f, model_a, model_b, outcome)
    if total is None:
        total = qs.count()
    pages = max(1, math.ceil(total / per_page))
    page = min(max(1, page), pages)
    rows = []
    # as on the cases page: the newest page x per_page of each status along its index, then one ordered page
    order = ("-submitted_at", "-id")
    candidates = []
    for st in f.statuses:
        candidates += qs.filter(status=st).order_by(*order).values_list("pk", flat=True)[: page * per_page]
    for p in (
        Preference.objects.filter(pk__in=candidates)
        .select_related(
            "annotator", "response_a__model_version", "response_b__model_version", "response_a__conversation"
        )
        .order_by(*order)[(page - 1) * per_page : page * per_page]
    ):
        ma, mb = p.response_a.model_version, p.response_b.model_version
        rows.append(
            {
                "preference": p.pk,
                "conversation": p.response_a.conversation_id,
                "external_id": p.response_a.conversation.external_id,
                "model_a": ma.name if ma else None,
                "model_b": mb.name if mb else None,
                "choice": p.choice,
                "winner": {"a": ma.name if ma else "A", "b": mb.name if mb else "B"}.get(p.choice),
                "reason": p.reason,
                "annotator": p.annotator.username,
                "status": p.status,
                "left_side": p.left_side,
                "submitted_at": p.submitted_at,
            }
        )
    return {"total": total, "page": page, "pages": pages, "per_page": per_page, "rows": rows}


# --- CSV tables ---------------------------------------------------------------------------------


def _pct(v):
    return "" if v is None else round(v, 6)


def tables(page: str, data: dict) -> dict[str, tuple[list[str], list[list]]]:
    """The data behind every chart of a page as flat tables: {name: (header, rows)} for CSV."""
    out = {}
    if page == "overview":
        models = data["models"]
        out["categories"] = (
            [
                "category_id",
                "path",
                "depth",
                "badcases",
                "share_of_badcases",
                "rate_of_labels",
                *[f"rate[{m['name']}]" for m in models],
                "root_cause",
                "recommended_fix",
            ],
            [
                [
                    c["category"],
                    c["path"],
                    c["depth"],
                    c["badcases"],
                    _pct(c["share_of_badcases"]),
                    _pct(c["rate"]),
                    *[_pct(c["by_model"][str(m["id"])]["rate"]) for m in models],
                    c["root_cause"],
                    c["recommended_fix"],
                ]
                for c in data["categories"]
                if c["in_scope"]
            ],
        )
        out["pareto"] = (
            ["category_id", "path", "badcases", "share", "cumulative", "root_cause", "recommended_fix"],
            [
                [
                    p["category"],
                    p["path"],
                    p["badcases"],
                    _pct(p["share"]),
                    _pct(p["cumulative"]),
                    p["root_cause"],
                    p["recommended_fix"],
                ]
                for p in data["pareto"]
            ],
        )
        out["by_model"] = (
            [
                "model_version_id",
                "model_version",
                "labels",
                "badcases",
                "rate",
                "rate_low_95",
                "rate_high_95",
                "parent",
                "change_vs_parent",
            ],
            [
                [
                    m["model_version"],
                    m["name"],
                    m["labels"],
                    m["badcases"],
                    _pct(m["rate"]),
                    _pct(m["rate_low"]),
                    _pct(m["rate_high"]),
                    m["parent"] or "",
                    _pct(m["change_vs_parent"]),
                ]
                for m in data["by_model"]
            ],
        )
        rows = []
        for r in data["over_time"]["rows"]:
            rows.append(
                [
                    r["start"].isoformat(),
                    r["end"].isoformat(),
                    "all",
                    r["labels"],
                    r["badcases"],
                    _pct(r["rate"]),
                ]
            )
            for m in models:
                cell = r["by_model"][str(m["id"])]
                rows.append(
                    [
                        r["start"].isoformat(),
                        r["end"].isoformat(),
                        m["name"],
                        cell["labels"],
                        cell["badcases"],
                        _pct(cell["rate"]),
                    ]
                )
        out["over_time"] = (
            ["bucket_start", "bucket_end", "model_version", "labels", "badcases", "rate"],
            rows,
        )
    elif page == "annotators":
        out["annotators"] = (
            [
                "annotator_id",
                "annotator",
                "labels",
                "comparisons",
                "items",
                "hours",
                "items_per_hour",
                "median_s",
                "p25_s",
                "p75_s",
                "p90_s",
                "skips",
                "skip_rate",
                "reviewed",
                "approved",
                "rejected",
                "approval_rate",
                "rejection_rate",
                "peer_items",
                "peer_agreement",
                "peer_kappa",
                "gold_items",
                "gold_agreement",
                "gold_kappa",
            ],
            [
                [
                    r["annotator"],
                    r["name"],
                    r["labels"],
                    r["comparisons"],
                    r["items"],
                    round(r["hours"], 4),
                    _pct(r["items_per_hour"]),
                    r["median_s"],
                    r["p25_s"],
                    r["p75_s"],
                    r["p90_s"],
                    r["skips"],
                    _pct(r["skip_rate"]),
                    r["reviewed"],
                    r["approved"],
                    r["rejected"],
                    _pct(r["approval_rate"]),
                    _pct(r["rejection_rate"]),
                    r["peer_items"],
                    _pct(r["peer_agreement"]),
                    _pct(r["peer_kappa"]),
                    r["gold_items"],
                    _pct(r["gold_agreement"]),
                    _pct(r["gold_kappa"]),
                ]
                for r in data["rows"]
            ],
        )
        out["time_per_item"] = (
            ["annotator", *data["time_bins"]],
            [[r["name"], *r["time_bins"]] for r in data["rows"]],
        )
    elif page == "agreement":
        out["pairs"] = (
            [
                "annotator_a",
                "annotator_b",
                "items",
                "agreement",
                "chance_agreement",
                "kappa",
                "disagreements",
            ],
            [
                [
                    p["a_name"],
                    p["b_name"],
                    p["items"],
                    _pct(p["agreement"]),
                    _pct(p["expected"]),
                    _pct(p["kappa"]),
                    p["disagreements"],
                ]
                for p in data["pairs"]
            ],
        )
        out["categories"] = (
            [
                "category_id",
                "path",
                "units_chosen_in",
                "choices",
                "split_units",
                "alpha",
                "specific_agreement",
            ],
            [
                [
                    c["category"],
                    c["path"],
                    c["units"],
                    c["choices"],
                    c["split_units"],
                    _pct(c["alpha"]),
                    _pct(c["specific_agreement"]),
                ]
                for c in data["categories"]
            ],
        )
        out["items"] = (
            [
                "response_id",
                "conversation",
                "model_version",
                "reasonable",
                "unreasonable",
                "gold",
                "judgements",
            ],
            [
                [
                    i["response"],
                    i["external_id"],
                    i["model_version"] or "",
                    i["reasonable"],
                    i["unreasonable"],
                    i["gold"] or "",
                    "; ".join(
                        f"{j['annotator']}={j['verdict']}"
                        + (f" [{', '.join(j['categories'])}]" if j["categories"] else "")
                        for j in i["judgements"]
                    ),
                ]
                for i in data["items"]
            ],
        )
        v, p = data["verdict"], data["preferences"]
        out["summary"] = (
            ["measure", "value", "units"],
            [
                ["verdict_alpha", _pct(v["alpha"]), v["units"]],
                ["verdict_pairwise_agreement", _pct(v["pairwise_agreement"]), v["units"]],
                ["choice_alpha", _pct(p["alpha"]), p["units"]],
                ["choice_alpha_better_only", _pct(p["alpha_better"]), p["units"]],
                ["choice_pairwise_agreement", _pct(p["pairwise_agreement"]), p["units"]],
            ],
        )
    elif page == "models":
        names = {v["id"]: v["name"] for v in data["versions"]}
        out["ratings"] = (
            [
                "model_version_id",
                "model_version",
                "rating",
                "low_95",
                "high_95",
                "log_strength",
                "comparisons",
            ],
            [
                [
                    r["model_version"],
                    r["name"],
                    _pct(r["rating"]),
                    _pct(r["low"]),
                    _pct(r["high"]),
                    _pct(r["beta"]),
                    r["comparisons"],
                ]
                for r in data["ratings"]
            ],
        )
        out["win_rates"] = (
            [
                "model",
                "opponent",
                "comparisons",
                "wins",
                "losses",
                "ties",
                "both_bad",
                "win_rate",
                "win_rate_low_95",
                "win_rate_high_95",
                "decisive_win_rate",
            ],
            [
                [
                    names[c["a"]],
                    names[c["b"]],
                    c["comparisons"],
                    c["wins"],
                    c["losses"],
                    c["ties"],
                    c["both_bad"],
                    _pct(c["win_rate"]),
                    _pct(c["low"]),
                    _pct(c["high"]),
                    _pct(c["decisive_win_rate"]),
                ]
                for row in data["matrix"]
                for c in row
                if c and c["comparisons"]
            ],
        )
        metrics = data["evaluation"].get("metrics") or []
        suite = data["evaluation"].get("suite") or ""

        def evals(r):
            ev = (r["eval"] or {}).get("metrics") or {}
            return [
                v
                for m in metrics
                for v in (_pct((ev.get(m) or {}).get("value")), _pct((ev.get(m) or {}).get("se")))
            ]

        out["lineage"] = (
            [
                "model_version_id",
                "model_version",
                "lineage",
                "origin",
                "stage",
                "labels",
                "badcases",
                "badcase_rate",
                "badcase_change_vs_parent",
                "rating",
                "win_rate_vs_parent",
                "comparisons_vs_parent",
                "eval_suite",
                *[f"{m}{x}" for m in metrics for x in ("", "_se")],
            ],
            [
                [
                    r["model_version"],
                    r["name"],
                    " > ".join(r["lineage"]),
                    r["origin"],
                    r["stage"],
                    r["labels"],
                    r["badcases"],
                    _pct(r["badcase_rate"]),
                    _pct(r["badcase_change"]),
                    _pct(r["rating"]),
                    _pct(r["win_rate_vs_parent"]),
                    r["comparisons_vs_parent"],
                    suite if r["eval"] else "",
                    *evals(r),
                ]
                for r in data["lineage"]
            ],
        )
    return out


PAGES = {"overview": overview, "annotators": annotators, "agreement": agreement, "models": model_comparison}


def cache_key(page: str, project, f: Filters) -> str:
    # the project's creation time keeps a re-created project (same id, e.g. in tests) off old entries
    return f"dash:v1:{project.pk}:{int(project.created_at.timestamp() * 1e6)}:{page}:{f.key()}"


def cache_seconds() -> int:
    from django.conf import settings

    return getattr(settings, "DASHBOARD_CACHE_SECONDS", 300)


def run_analytics(fn, *args):
    """Run a dashboard function; on PostgreSQL with room to hash and sort in memory and without JIT.

    The aggregates group up to a million rows: the default 4 MB work_mem spills them to disk, and
    JIT compilation costs more than it saves on queries this size. SET LOCAL lasts one transaction.
    """
    if connection.vendor != "postgresql":
        return fn(*args)
    from django.db import transaction

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL work_mem = '64MB'; SET LOCAL jit = off")
        return fn(*args)


def compute(page: str, project, f: Filters, fresh: bool = False) -> dict:
    """A dashboard's data, from a short-lived cache keyed by project, page and filters.

    DASHBOARD_CACHE_SECONDS (default 300; 0 turns it off) bounds how stale a number can be. The
    overview, annotator and model pages compute from the roll-ups in tens of milliseconds even cold;
    the cache still spares the agreement page, which reads the multiply-judged labels themselves
    (benchmarks/results/dashboards_1000000.json). `fresh` recomputes and refreshes the cache (the
    page's "recompute now" link). Every page shows when its numbers were computed.
    """
    ttl = cache_seconds()
    key = cache_key(page, project, f)
    if ttl and not fresh:
        hit = cache.get(key)
        if hit is not None:
            return hit
    data = run_analytics(PAGES[page], project, f)
    data["computed_at"] = timezone.now()
    if ttl:
        cache.set(key, data, ttl)
    return data
