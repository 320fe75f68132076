"""Lead dashboard pages. The numbers come from the modules beside this one; this module only turns
them into chart specs (read by static/js/dashboards.js) and drill-down links, and renders the templates."""

from collections import defaultdict

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.urls import reverse

from ..models import Role
from ..policy import has_role, project_for, role_in
from .filters import BOOTSTRAP_SAMPLES, FilterError, Filters, as_id
from .lists import CaseFilters, case_page, comparison_page
from .lookups import filter_choices, model_versions
from .pages import cache_seconds, compute

MATRIX_MAX = 15  # annotators in the kappa matrix; more would not be readable at 1,024 px
PAIR_ROWS = 60  # annotator pairs listed on the page (all of them are in the CSV)
TABS = [
    ("overview", "Badcases"),
    ("annotators", "Annotators"),
    ("agreement", "Agreement"),
    ("models", "Model versions"),
    ("cases", "Cases"),  # the labels behind a number (every chart and table links here, filtered)
    ("comparisons", "Comparisons"),  # the preferences behind a win rate
]


def _filters(request):
    try:
        return Filters.parse(request.GET, strict=True), {}
    except FilterError as exc:
        return Filters.parse(request.GET), exc.errors


class Links:
    """Drill-down URLs that carry the page's filters."""

    def __init__(self, project, f: Filters):
        self.f = f
        self.cases_url = reverse("annotator:dash-cases", args=[project.slug])
        self.comparisons_url = reverse("annotator:dash-comparisons", args=[project.slug])
        self.base = {name: reverse(f"annotator:dash-{name}", args=[project.slug]) for name, _ in TABS}
        self.csv_base = f"/api/projects/{project.slug}/dashboards"

    def cases(self, **overrides) -> str:
        return f"{self.cases_url}?{self.f.query(**overrides)}"

    def comparisons(self, **params) -> str:
        return f"{self.comparisons_url}?{self.f.query(models=(), category=None, **params)}".rstrip("?")

    def bucket(self, row) -> dict:
        """A time bucket's dates, clipped to the filter's range so the list matches the bucket's count."""
        start, end = row["start"], row["end"]
        if self.f.date_from and self.f.date_from > start:
            start = self.f.date_from
        if self.f.date_to and self.f.date_to < end:
            end = self.f.date_to
        return {"date_from": start, "date_to": end}

    def page(self, name, **overrides) -> str:
        q = self.f.query(**overrides)
        return f"{self.base[name]}?{q}" if q else self.base[name]

    def csv(self, page, table) -> str:
        q = self.f.query()
        return f"{self.csv_base}/{page}/{table}.csv" + (f"?{q}" if q else "")


PCT_KEYS = {
    "rate",
    "rate_low",
    "rate_high",
    "share",
    "cumulative",
    "share_of_badcases",
    "change_vs_parent",
    "agreement",
    "expected",
    "skip_rate",
    "approval_rate",
    "rejection_rate",
    "peer_agreement",
    "gold_agreement",
    "specific_agreement",
    "pairwise_agreement",
    "pairwise_agreement_better",
    "win_rate",
    "decisive_win_rate",
    "low",
    "high",
    "left_rate",
    "badcase_rate",
    "badcase_change",
    "win_rate_vs_parent",
    "value",
    "se",
}


def add_percent_strings(obj, skip=("rating", "ratings")):
    """Give every fraction a display twin: rate -> rate_pct "42.3%" (templates have no such filter)."""
    if isinstance(obj, dict):
        for key in list(obj):
            value = obj[key]
            if key in skip:
                continue
            if key in PCT_KEYS and (value is None or isinstance(value, (int, float))):
                obj[f"{key}_pct"] = "—" if value is None else f"{100 * value:.1f}%"
            else:
                add_percent_strings(value, skip)
    elif isinstance(obj, list):
        for item in obj:
            add_percent_strings(item, skip)
    return obj


def _render(request, slug, page, template, build):
    project = project_for(request.user, slug, Role.LEAD)
    f, errors = _filters(request)
    data = add_percent_strings(compute(page, project, f, fresh=request.GET.get("fresh") == "1"))
    links = Links(project, f)
    extra = build(data, links, f)
    choices = filter_choices(project)
    return render(
        request,
        template,
        {
            "project": project,
            "data": data,
            "f": f,
            "errors": errors,
            "links": links,
            "choices": choices,
            "tab": page,
            "tabs": [(name, title, links.page(name)) for name, title in TABS],
            "is_lead": True,
            "is_admin": has_role(request.user, project, Role.ADMIN),
            "role": role_in(request.user, project),
            "refresh_url": links.page(page, fresh="1"),
            "cache_minutes": round(cache_seconds() / 60, 1),
            **extra,
        },
    )


def _pct(v):
    return None if v is None else round(100 * v, 2)


# --- badcase overview ---------------------------------------------------------------------------


@login_required
def overview(request, slug):
    return _render(request, slug, "overview", "annotator/dash_overview.html", _overview_charts)


def _overview_charts(data, links, f):
    bad = {"verdict": "unreasonable"}
    drill = data["drill"]["rows"]
    charts = [
        {
            "id": "by-category",
            "kind": "hbar",
            "percent": False,
            "valueSuffix": "",
            "title": "Badcases by category"
            + (f" in {data['drill']['path']}" if data["drill"]["path"] else ""),
            "labels": [c["name"] for c in drill],
            "datasets": [
                {
                    "label": "badcase labels",
                    "data": [c["badcases"] for c in drill],
                    "hrefs": [links.cases(category=c["category"], **bad) for c in drill],
                }
            ],
            "xTitle": "badcase labels",
        }
    ]
    pareto = data["pareto"][:25]
    charts.append(
        {
            "id": "pareto",
            "kind": "pareto",
            "title": "Root causes, biggest first (Pareto)",
            "labels": [p["name"] for p in pareto],
            "datasets": [
                {
                    "label": "badcase labels",
                    "data": [p["badcases"] for p in pareto],
                    "hrefs": [links.cases(category=p["category"], direct="1", **bad) for p in pareto],
                },
                {
                    "label": "cumulative % of filings",
                    "data": [_pct(p["cumulative"]) for p in pareto],
                    "hrefs": [links.cases(category=p["category"], direct="1", **bad) for p in pareto],
                },
            ],
            "yTitle": "badcase labels (bars)",
            "y2Title": "cumulative % of filings (line)",
            # slanted category names need room below the bars
            "height": 300 if len(pareto) <= 5 else 380,
        }
    )
    models = data["by_model"]
    charts.append(
        {
            "id": "by-model",
            "kind": "bar",
            "percent": True,
            "title": "Badcase rate by model version"
            + (f" ({data['totals']['scope']})" if data["totals"]["scope"] else ""),
            "labels": [m["name"] for m in models],
            "datasets": [
                {
                    "label": "badcase rate",
                    "data": [_pct(m["rate"]) for m in models],
                    "errors": [[_pct(m["rate_low"]), _pct(m["rate_high"])] for m in models],
                    "hrefs": [
                        links.cases(models=(m["model_version"],) if m["model_version"] else (), **bad)
                        for m in models
                    ],
                }
            ],
            "yTitle": "% of labels that are badcases (95% CI)",
        }
    )
    rows = data["over_time"]["rows"]
    series = [
        {
            "label": "all versions",
            "data": [_pct(r["rate"]) for r in rows],
            "hrefs": [links.cases(**links.bucket(r), **bad) for r in rows],
            "bold": True,
        }
    ]
    for m in data["models"]:
        key = str(m["id"])
        series.append(
            {
                "label": m["name"],
                "data": [_pct(r["by_model"][key]["rate"]) for r in rows],
                "hrefs": [
                    links.cases(**links.bucket(r), models=(m["id"],) if m["id"] else (), **bad) for r in rows
                ],
            }
        )
    charts.append(
        {
            "id": "over-time",
            "kind": "line",
            "percent": True,
            "title": f"Badcase rate per {data['over_time']['bucket']}",
            "labels": [r["start"].isoformat() for r in rows],
            "datasets": series,
            "yTitle": "% of labels that are badcases",
        }
    )
    # category x version cross-table: rates per version of the categories in scope
    in_scope = [
        c for c in data["categories"] if c["in_scope"] and (c["badcases"] or c["category"] == f.category)
    ]
    cross = []
    for c in in_scope:
        cells = []
        for m in data["models"]:
            cell = c["by_model"][str(m["id"])]
            cells.append(
                {
                    **cell,
                    "href": links.cases(category=c["category"], models=(m["id"],) if m["id"] else (), **bad),
                }
            )
        cross.append(
            {
                **c,
                "cells": cells,
                "href": links.cases(category=c["category"], **bad),
                "drill": links.page("overview", category=c["category"]) if c["has_children"] else None,
            }
        )
    max_rate = max((cell["rate"] or 0 for row in cross for cell in row["cells"]), default=0) or 1
    for row in cross:
        for cell in row["cells"]:
            cell["heat"] = round((cell["rate"] or 0) / max_rate, 3)
    for m in models:
        m["href"] = links.cases(models=(m["model_version"],) if m["model_version"] else (), **bad)
    for p in data["pareto"]:
        p["href"] = links.cases(category=p["category"], direct="1", **bad)
    return {
        "charts": charts,
        "cross": cross,
        "csv": {t: links.csv("overview", t) for t in ("categories", "pareto", "by_model", "over_time")},
        "time_links": [
            {
                "row": r,
                "href": links.cases(**links.bucket(r), **bad),
                "cells": [
                    {
                        **r["by_model"][str(m["id"])],
                        "href": links.cases(**links.bucket(r), models=(m["id"],) if m["id"] else (), **bad),
                    }
                    for m in data["models"]
                ],
            }
            for r in rows
        ],
        "scope_up": (
            links.page("overview", category=data["drill"]["parent"]) if data["drill"]["node"] else None
        ),
        "scope_top": links.page("overview", category=None),
        "all_badcases_href": links.cases(**bad),
    }


# --- annotators ---------------------------------------------------------------------------------


@login_required
def annotators(request, slug):
    return _render(request, slug, "annotators", "annotator/dash_annotators.html", _annotator_charts)


def _annotator_charts(data, links, f):
    rows = data["rows"]
    names = [r["name"] for r in rows]
    own = [links.cases(annotator=r["annotator"]) for r in rows]
    charts = [
        {
            "id": "throughput",
            "kind": "hbar",
            "title": "Items per hour of labelling time",
            "labels": names,
            "datasets": [
                {
                    "label": "items per hour",
                    "data": [
                        None if r["items_per_hour"] is None else round(r["items_per_hour"], 1) for r in rows
                    ],
                    "hrefs": own,
                }
            ],
            "xTitle": "items per hour (labels and comparisons)",
        },
        {
            "id": "time-per-item",
            "kind": "range",
            "title": "Time per item: middle half (bar) and median (marker)",
            "labels": names,
            "datasets": [
                {
                    "label": "25th–75th percentile",
                    "data": [[r["p25_s"], r["p75_s"]] if r["p25_s"] is not None else None for r in rows],
                    "hrefs": own,
                },
                {"label": "median", "data": [r["median_s"] for r in rows], "hrefs": own},
            ],
            "xTitle": "seconds per item",
        },
        {
            "id": "rates",
            "kind": "hbar",
            "percent": True,
            "title": "Skip rate and rejection rate",
            "labels": names,
            "datasets": [
                {"label": "skip rate", "data": [_pct(r["skip_rate"]) for r in rows], "hrefs": own},
                {
                    "label": "rejection rate (of review decisions)",
                    "data": [_pct(r["rejection_rate"]) for r in rows],
                    "hrefs": [links.cases(annotator=r["annotator"], statuses=("rejected",)) for r in rows],
                },
            ],
            "xTitle": "%",
        },
        {
            "id": "agreement",
            "kind": "hbar",
            "title": "Agreement on verdicts (Cohen's kappa)",
            "min": -1,
            "max": 1,
            "labels": names,
            "datasets": [
                {
                    "label": "with other annotators",
                    "data": [None if r["peer_kappa"] is None else round(r["peer_kappa"], 3) for r in rows],
                    "hrefs": [links.cases(annotator=r["annotator"], disagree="1") for r in rows],
                },
                {
                    "label": "with lead gold decisions",
                    "data": [None if r["gold_kappa"] is None else round(r["gold_kappa"], 3) for r in rows],
                    "hrefs": [links.cases(annotator=r["annotator"], gold="mismatch") for r in rows],
                },
            ],
            "xTitle": "kappa (1 = perfect, 0 = chance)",
        },
    ]
    for chart in charts:
        bars = 1 if chart["kind"] == "range" else len(chart["datasets"])
        chart["height"] = max(220, 20 * len(rows) * bars + 90)
        chart["csv"] = links.csv(
            "annotators", "time_per_item" if chart["id"] == "time-per-item" else "annotators"
        )
    peak = max((n for r in rows for n in r["time_bins"]), default=0) or 1
    time_rows = [
        {
            "name": r["name"],
            "href": links.cases(annotator=r["annotator"]),
            "cells": [{"n": n, "heat": round(n / peak, 3)} for n in r["time_bins"]],
        }
        for r in rows
    ]
    table = [
        {
            **r,
            "href": links.cases(annotator=r["annotator"]),
            "rejected_href": links.cases(annotator=r["annotator"], statuses=("rejected",)),
            "disagree_href": links.cases(annotator=r["annotator"], disagree="1"),
            "gold_href": links.cases(annotator=r["annotator"], gold="mismatch"),
        }
        for r in rows
    ]
    return {
        "charts": charts,
        "table": table,
        "time_rows": time_rows,
        "csv_annotators": links.csv("annotators", "annotators"),
        "csv_time": links.csv("annotators", "time_per_item"),
    }


# --- agreement ----------------------------------------------------------------------------------


@login_required
def agreement(request, slug):
    return _render(request, slug, "agreement", "annotator/dash_agreement.html", _agreement_charts)


def _agreement_charts(data, links, f):
    cats = [c for c in data["categories"] if c["units"]]
    cats.sort(key=lambda c: (c["alpha"] is None, c["alpha"] if c["alpha"] is not None else 0))
    shown = cats[:25]
    charts = [
        {
            "id": "category-alpha",
            "kind": "hbar",
            "title": "Agreement per category (Krippendorff's alpha, lowest first)",
            "min": -1,
            "max": 1,
            "labels": [c["name"] for c in shown],
            "datasets": [
                {
                    "label": "alpha",
                    "data": [None if c["alpha"] is None else round(c["alpha"], 3) for c in shown],
                    "hrefs": [links.cases(category_split=c["category"]) for c in shown],
                }
            ],
            "xTitle": "alpha (1 = perfect, 0 = chance)",
            "height": max(220, 26 * len(shown) + 80),
        }
    ]
    pairs = data["pairs"]
    # the matrix shows the annotators with the most shared items; the table below has every pair
    shared = defaultdict(int)
    names = {}
    for p in pairs:
        shared[p["a"]] += p["items"]
        shared[p["b"]] += p["items"]
        names[p["a"]], names[p["b"]] = p["a_name"], p["b_name"]
    annotator_ids = sorted(sorted(shared, key=lambda i: -shared[i])[:MATRIX_MAX], key=lambda i: names[i])
    by_pair = {(p["a"], p["b"]): p for p in pairs}
    matrix = []
    for a in annotator_ids:
        cells = []
        for b in annotator_ids:
            p = by_pair.get((a, b)) or by_pair.get((b, a))
            if a == b or not p:
                cells.append(None)
                continue
            first, second = (a, b)
            cells.append(
                {
                    **p,
                    "href": links.cases(pair=f"{first},{second}", disagree="1"),
                    "heat": None
                    if p["kappa"] is None
                    else round(max(0.0, min(1.0, (p["kappa"] + 1) / 2)), 3),
                }
            )
        matrix.append({"id": a, "name": names[a], "cells": cells})
    # the weakest pairs with enough shared items first; the CSV has every pair
    ranked = sorted(pairs, key=lambda p: (p["few"], p["kappa"] is None, p["kappa"] or 0, -p["items"]))
    pair_rows = [
        {
            **p,
            "href": links.cases(pair=f"{p['a']},{p['b']}", disagree="1"),
            "all_href": links.cases(pair=f"{p['a']},{p['b']}"),
        }
        for p in ranked[:PAIR_ROWS]
    ]
    cat_rows = [{**c, "href": links.cases(category_split=c["category"])} for c in data["categories"]]
    return {
        "charts": charts,
        "matrix": matrix,
        "pair_rows": pair_rows,
        "cat_rows": cat_rows,
        "pairs_hidden": max(0, len(pairs) - PAIR_ROWS),
        "no_category_data": "" if shown else "No category was chosen on a multiply-judged item yet.",
        "csv": {t: links.csv("agreement", t) for t in ("pairs", "categories", "items", "summary")},
        "matrix_names": [names[a] for a in annotator_ids],
        "matrix_cut": len(shared) > MATRIX_MAX,
        "matrix_max": MATRIX_MAX,
        "disagree_href": links.cases(disagree="1"),
    }


# --- model versions -----------------------------------------------------------------------------


@login_required
def models(request, slug):
    return _render(request, slug, "models", "annotator/dash_models.html", _model_charts)


def _model_charts(data, links, f):
    ratings = [r for r in data["ratings"] if r["rating"] is not None]
    charts = [
        {
            "id": "ratings",
            "kind": "range",
            "title": "Bradley–Terry rating with 95% bootstrap interval",
            "labels": [r["name"] for r in ratings],
            "datasets": [
                {
                    "label": "95% interval",
                    "data": [
                        [round(r["low"], 1), round(r["high"], 1)] if r["low"] is not None else None
                        for r in ratings
                    ],
                    "hrefs": [links.comparisons(model_a=r["model_version"]) for r in ratings],
                },
                {
                    "label": "rating",
                    "data": [round(r["rating"], 1) for r in ratings],
                    "hrefs": [links.comparisons(model_a=r["model_version"]) for r in ratings],
                },
            ],
            "xTitle": "rating (1000 = average of the compared versions; +100 ≈ 64% expected win rate)",
            "height": max(200, 40 * len(ratings) + 80),
        }
    ]
    names = {v["id"]: v["name"] for v in data["versions"]}
    matrix = []
    for row in data["matrix"]:
        cells = []
        for cell in row:
            if cell and cell["comparisons"]:
                cells.append(
                    {
                        **cell,
                        "href": links.comparisons(model_a=cell["a"], model_b=cell["b"]),
                        "heat": round(cell["win_rate"], 3),
                    }
                )
            else:
                cells.append(cell if cell is None else {**cell, "href": None})
        matrix.append(cells)
    metrics = data["evaluation"].get("metrics") or []
    lineage = []
    for r in data["lineage"]:
        ev = r["eval"] or {}
        cells = add_percent_strings(
            [
                {
                    "value": (ev.get("metrics") or {}).get(m, {}).get("value"),
                    "se": (ev.get("metrics") or {}).get(m, {}).get("se"),
                }
                for m in metrics
            ]
        )
        lineage.append(
            {
                **r,
                "href": links.cases(models=(r["model_version"],)),
                "eval_cells": cells,
                "vs_parent_href": links.comparisons(model_a=r["model_version"], model_b=r["parent_id"])
                if r["parent_id"]
                else None,
            }
        )
    for r in data["ratings"]:
        r["href"] = links.comparisons(model_a=r["model_version"])
    evaluated = [r for r in lineage if r["eval"]]
    eval_chart = None
    if evaluated:
        eval_chart = {
            "id": "eval-lineage",
            "kind": "line",
            "percent": True,
            "max": 100,
            "title": f"Evaluation along the lineage ({data['evaluation']['suite']})",
            "labels": [r["name"] for r in evaluated],
            "datasets": [
                {
                    "label": m.replace("_", " "),
                    "data": [_pct(c["value"]) for c in (r["eval_cells"][i] for r in evaluated)],
                    "hrefs": [links.cases(models=(r["model_version"],)) for r in evaluated],
                }
                for i, m in enumerate(metrics)
            ],
            "yTitle": "% of eval cases",
            "height": 300,
        }
        charts.append(eval_chart)
    return {
        "charts": charts,
        "win_matrix": list(zip(data["versions"], matrix, strict=True)),
        "names": names,
        "lineage_rows": lineage,
        "eval_chart": eval_chart,
        "eval_headers": [m.replace("_", " ") for m in metrics],
        "bootstrap": BOOTSTRAP_SAMPLES,
        "no_ratings": "" if ratings else "No pairwise preferences between different versions yet.",
        "csv": {t: links.csv("models", t) for t in ("ratings", "win_rates", "lineage")},
    }


# --- drill-down lists ---------------------------------------------------------------------------


def _page_number(request) -> int:
    try:
        return int(request.GET.get("page", 1))
    except ValueError:
        return 1


@login_required
def cases(request, slug):
    project = project_for(request.user, slug, Role.LEAD)
    f, errors = _filters(request)
    c = CaseFilters.parse(request.GET)
    result = add_percent_strings(case_page(project, f, c, _page_number(request)))
    links = Links(project, f)
    params = {k: v for k, v in request.GET.items() if k != "page"}
    return render(
        request,
        "annotator/dash_cases.html",
        {
            "project": project,
            "f": f,
            "c": c,
            "errors": errors,
            "result": result,
            "links": links,
            "choices": filter_choices(project),
            "is_lead": True,
            "tab": "cases",
            "params": params,
            "describe": _describe_cases(project, f, c),
            "hidden": [
                (k, v)
                for k, v in params.items()
                if k in ("verdict", "direct", "pair", "disagree", "category_split", "gold")
            ],
            "csv_url": f"/api/projects/{project.slug}/dashboards/cases.csv?{request.GET.urlencode()}".rstrip(
                "?"
            ),
            "is_admin": has_role(request.user, project, Role.ADMIN),
            "role": role_in(request.user, project),
            "tabs": [(name, title, links.page(name)) for name, title in TABS],
        },
    )


def _describe_cases(project, f, c) -> list[str]:
    """Plain words for what the list holds, so a lead knows which number it reproduces."""
    from django.contrib.auth import get_user_model

    from ..models import ModelVersion, TaxonomyCategory

    words = []
    if c.verdict:
        words.append(f"verdict {c.verdict}")
    if c.category or c.category_split:
        cat = TaxonomyCategory.objects.filter(project=project, pk=c.category or c.category_split).first()
        name = cat.name if cat else "?"
        if c.category_split:
            words.append(f"judges split on “{name}”")
        else:
            words.append(f"category “{name}”" + (" (exactly)" if c.direct else " (or a subcategory)"))
    if f.models:
        words.append(
            "model "
            + ", ".join(
                ModelVersion.objects.filter(project=project, pk__in=f.models).values_list("name", flat=True)
            )
        )
    users = get_user_model().objects
    if f.annotator:
        words.append(f"by {users.filter(pk=f.annotator).values_list('username', flat=True).first()}")
    if c.pair:
        a, b = (users.filter(pk=p).values_list("username", flat=True).first() for p in c.pair)
        words.append(f"{a}'s labels on items {b} also judged" + (", verdicts differ" if c.disagree else ""))
    elif c.disagree:
        words.append("items where judges' verdicts split")
    if c.gold:
        words.append(f"gold verdict {'agrees' if c.gold == 'match' else 'differs'}")
    if f.date_from or f.date_to:
        words.append(f"submitted {f.date_from or '…'} to {f.date_to or '…'}")
    if f.split:
        words.append(f"split {f.split}")
    words.append("status " + " or ".join(f.statuses))
    return words


@login_required
def comparisons(request, slug):
    project = project_for(request.user, slug, Role.LEAD)
    f, errors = _filters(request)

    model_a, model_b = as_id(request.GET.get("model_a")), as_id(request.GET.get("model_b"))
    outcome = request.GET.get("outcome") if request.GET.get("outcome") in ("win", "loss", "tie") else ""
    result = comparison_page(project, f, model_a, model_b, outcome, _page_number(request))
    links = Links(project, f)
    names = {m["id"]: m["name"] for m in model_versions(project)}
    params = {k: v for k, v in request.GET.items() if k != "page"}
    return render(
        request,
        "annotator/dash_comparisons.html",
        {
            "project": project,
            "f": f,
            "errors": errors,
            "result": result,
            "links": links,
            "params": params,
            "model_a": names.get(model_a),
            "model_b": names.get(model_b),
            "outcome": outcome,
            "is_lead": True,
            "model_a_id": model_a,
            "model_b_id": model_b,
            "hidden": [(k, v) for k, v in params.items() if k in ("model_a", "model_b", "outcome")],
            "csv_url": (
                f"/api/projects/{project.slug}/dashboards/comparisons.csv?{request.GET.urlencode()}"
            ).rstrip("?"),
            "is_admin": has_role(request.user, project, Role.ADMIN),
            "tab": "comparisons",
            "role": role_in(request.user, project),
            "tabs": [(name, title, links.page(name)) for name, title in TABS],
        },
    )
