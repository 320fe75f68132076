"""4. Model versions compared: badcase rates, categories, pairwise preferences and evaluation results."""

from collections import Counter, defaultdict
from dataclasses import replace

from django.db.models import Count

from .. import agreement as stats
from ..models import (
    AnnotatorDay,
    LabelDay,
    Preference,
    PreferenceDay,
)
from .filters import (
    BOOTSTRAP_SAMPLES,
    REASONABLE,
    UNREASONABLE,
    Filters,
    _version,
    preference_q,
    rollup_cells,
    rollup_days,
    rollup_sum,
)
from .lookups import _rate, model_versions

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
