"""Comparing runs on the same suite: deltas, a paired significance test, flipped cases, lineage.

Two runs on one suite score the *same* cases, so per-case correctness is paired data.
McNemar's test reads only the discordant cases: ``b`` (right in the baseline, wrong in
the other run: broken) and ``c`` (wrong, then right: fixed). With few discordant cases
(b + c < 25) the exact two-sided binomial test is used; above, the chi-square with
continuity correction (both are reported). A delta is called real only when p < 0.05:
at n = 100 a rate's standard error is about 5 points, and a 2-point move means nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from annotator.models import ModelVersion
from toolcalls.defects import DEFECTS
from toolcalls.score import HEADLINE_METRICS

from .models import EvalResult, EvalRun, EvalSuite

ALPHA = 0.05
EXACT_BELOW = 25  # discordant pairs; the usual rule of thumb for McNemar's exact test
EXACT_MAX_N = 20000  # above this, the binomial sum is slow and the chi-square is exact enough
METRIC_COLUMNS = {m: m for m in HEADLINE_METRICS}
MAX_COMPARED_RUNS = 20  # each run's per-case results are read; more would not fit a table anyway
LOWER_IS_BETTER = frozenset({"false_call_rate", "missed_call_rate"})


class ComparisonError(ValueError):
    pass


def binomial_two_sided(k: int, n: int) -> float:
    """Exact two-sided p of k or fewer successes in n fair coin flips (k <= n/2 mirrored)."""
    if n == 0:
        return 1.0
    k = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return min(1.0, 2 * tail / 2**n)


def chi2_continuity(b: int, c: int) -> tuple[float, float]:
    """McNemar's chi-square with Edwards' continuity correction, 1 degree of freedom: (statistic, p)."""
    n = b + c
    if n == 0:
        return 0.0, 1.0
    stat = max(0.0, abs(b - c) - 1.0) ** 2 / n
    return stat, math.erfc(math.sqrt(stat / 2.0))


def mcnemar(b: int, c: int) -> dict:
    """b: right in the baseline only; c: right in the other run only."""
    n = b + c
    stat, p_chi2 = chi2_continuity(b, c)
    p_exact = binomial_two_sided(min(b, c), n) if n <= EXACT_MAX_N else None
    method = "exact" if n < EXACT_BELOW and p_exact is not None else "chi2_cc"
    p = p_exact if method == "exact" else p_chi2
    return {
        "b": b,
        "c": c,
        "n": n,
        "statistic": stat,
        "p_exact": p_exact,
        "p_chi2": p_chi2,
        "p_value": p,
        "method": method,
        "significant": n > 0 and p < ALPHA,
    }


@dataclass
class Delta:
    run: EvalRun
    value: float | None
    se: float | None
    n: int
    delta: float | None = None
    test: dict | None = None


@dataclass
class MetricRow:
    name: str
    cells: list[Delta] = field(default_factory=list)
    lower_is_better: bool = False  # a rate of mistakes: a fall is the good news


@dataclass
class Flip:
    run: EvalRun
    metric: str
    fixed: list = field(default_factory=list)  # [(case_id, position, external_id, categories)]
    broken: list = field(default_factory=list)


@dataclass
class Comparison:
    suite: object
    runs: list[EvalRun]
    metrics: list[MetricRow]
    defects: list[MetricRow]
    secondary: list[MetricRow]
    flips: list[Flip]
    lineage_ordered: bool

    @property
    def baseline(self) -> EvalRun:
        return self.runs[0]

    def as_dict(self) -> dict:
        def cell(d: Delta):
            return {"run": d.run.pk, "value": d.value, "se": d.se, "n": d.n, "delta": d.delta, "test": d.test}

        def rows(items):
            return [{"metric": r.name, "runs": [cell(d) for d in r.cells]} for r in items]

        return {
            "suite": {"id": self.suite.pk, "name": self.suite.name, "version": self.suite.version},
            "runs": [
                {
                    "id": r.pk,
                    "model_version": r.model_version.name,
                    "model_version_id": r.model_version_id,
                    "origin": r.model_version.origin,
                    "status": r.status,
                    "overlaps_training": r.overlaps_training,
                }
                for r in self.runs
            ],
            "baseline": self.baseline.pk,
            "lineage_ordered": self.lineage_ordered,
            "metrics": rows(self.metrics),
            "defects": rows(self.defects),
            "secondary": rows(self.secondary),
            "flips": [
                {
                    "run": f.run.pk,
                    "metric": f.metric,
                    "fixed": [{"case": c[0], "position": c[1], "id": c[2]} for c in f.fixed],
                    "broken": [{"case": c[0], "position": c[1], "id": c[2]} for c in f.broken],
                }
                for f in self.flips
            ],
        }


def order_by_lineage(runs: list[EvalRun]) -> tuple[list[EvalRun], bool]:
    """Runs in lineage order (base → SFT → DPO) when their models form one chain; else as given."""
    depth = {}
    for r in runs:
        chain = [mv.pk for mv in r.model_version.lineage()]
        depth[r.pk] = (len(chain), chain)
    longest = max((d[1] for d in depth.values()), key=len)
    if all(r.model_version_id in longest for r in runs):
        return sorted(runs, key=lambda r: (longest.index(r.model_version_id), r.pk)), True
    return runs, False


def default_runs(project) -> list[int]:
    """What the compare page shows when no run is picked: on the project's default suite (else the suite
    with the newest finished run), the newest finished run and, for each model before it in its lineage
    (base → SFT → DPO → …), that model's newest finished run on the same suite; in a lineage longer than
    a comparison holds, the base and the nearest ancestors. With no lineage behind it, the newest
    finished run of another model instead. Fewer than two runs: nothing to compare ([])."""
    done = EvalRun.objects.filter(project=project, status=EvalRun.State.DONE)
    settings = getattr(project, "eval_settings", None)
    newest = None
    if settings is not None and settings.default_suite_id:
        newest = done.filter(suite_id=settings.default_suite_id).select_related("model_version").first()
    if newest is None:
        newest = done.select_related("model_version").order_by("-finished_at", "-id").first()
    if newest is None:
        return []
    on_suite = done.filter(suite_id=newest.suite_id).order_by("-id")
    ancestors = [mv.pk for mv in newest.model_version.lineage() if mv.pk != newest.model_version_id]
    latest: dict[int, int] = {}
    for pk, version in on_suite.filter(model_version_id__in=ancestors).values_list("pk", "model_version_id"):
        latest.setdefault(version, pk)  # newest first
    behind = [latest[v] for v in ancestors if v in latest]  # base first
    if len(behind) > MAX_COMPARED_RUNS - 1:
        behind = behind[:1] + behind[-(MAX_COMPARED_RUNS - 2) :]
    picked = [newest.pk, *behind]
    if len(picked) == 1:
        others = on_suite.exclude(model_version_id=newest.model_version_id)
        other = others.values_list("pk", flat=True).first()
        if other:
            picked.append(other)
    return picked if len(picked) > 1 else []


def _paired(run_ids: list[int]) -> dict[int, dict[int, tuple]]:
    """{run id: {case id: (tca, tna, taa, rq, defects)}}."""
    out: dict[int, dict[int, tuple]] = {rid: {} for rid in run_ids}
    for rid, cid, tca, tna, taa, rq, score in EvalResult.objects.filter(run_id__in=run_ids).values_list(
        "run_id",
        "case_id",
        "tool_call_accuracy",
        "tool_name_accuracy",
        "tool_args_accuracy",
        "response_quality",
        "score",
    ):
        out[rid][cid] = (tca, tna, taa, rq, score.get("defects") or {})
    return out


def _test(base: dict, other: dict, pick) -> dict:
    b = c = n = 0
    for cid, brow in base.items():
        orow = other.get(cid)
        if orow is None:
            continue
        x, y = pick(brow), pick(orow)
        if x is None or y is None:
            continue
        n += 1
        if x and not y:
            b += 1
        elif y and not x:
            c += 1
    return {**mcnemar(b, c), "n_paired": n}


def compare_runs(runs: list[EvalRun], keep_order: bool = False) -> Comparison:
    """Runs on the same suite, the first (or the lineage's root) as the baseline."""
    runs = list(runs)
    if len(runs) < 2:
        raise ComparisonError("pick at least two runs to compare")
    if len({r.suite_id for r in runs}) > 1:
        raise ComparisonError("runs must be on the same suite (same cases) to be compared")
    not_done = [r.pk for r in runs if r.status != EvalRun.State.DONE]
    if not_done:
        raise ComparisonError(f"run(s) {', '.join(map(str, not_done))} have not finished")
    lineage_ordered = False
    if not keep_order:
        runs, lineage_ordered = order_by_lineage(runs)
    data = _paired([r.pk for r in runs])
    base = runs[0]

    def metric_rows(names, getter, picker):
        out = []
        for name in names:
            row = MetricRow(name)
            base_cell = None
            for r in runs:
                rate = getter(r, name) or {}
                cell = Delta(r, rate.get("value"), rate.get("se"), rate.get("n", 0))
                if base_cell is None:
                    base_cell = cell
                else:
                    if cell.value is not None and base_cell.value is not None:
                        cell.delta = cell.value - base_cell.value
                    if picker is not None:
                        cell.test = _test(data[base.pk], data[r.pk], picker(name))
                row.cells.append(cell)
            out.append(row)
        return out

    headline_index = {m: i for i, m in enumerate(HEADLINE_METRICS)}
    metrics = metric_rows(
        HEADLINE_METRICS, lambda r, m: r.summary.get(m), lambda m: lambda row, i=headline_index[m]: row[i]
    )
    defects = metric_rows(
        DEFECTS,
        lambda r, d: (r.summary.get("defects") or {}).get(d),
        lambda d: lambda row, d=d: row[4].get(d),
    )
    secondary = metric_rows(
        ("false_call_rate", "missed_call_rate", "args_accuracy_given_name"),
        lambda r, m: r.summary.get(m),
        None,
    )
    for row in secondary:
        row.lower_is_better = row.name in LOWER_IS_BETTER
    flips = []
    for r in runs[1:]:
        for metric in ("tool_call_accuracy", "response_quality"):
            i = headline_index[metric]
            flip = Flip(r, metric)
            for cid, brow in data[base.pk].items():
                orow = data[r.pk].get(cid)
                if orow is None:
                    continue
                if brow[i] and not orow[i]:
                    flip.broken.append(cid)
                elif orow[i] and not brow[i]:
                    flip.fixed.append(cid)
            flips.append(flip)
    _describe_cases(flips)
    return Comparison(base.suite, runs, metrics, defects, secondary, flips, lineage_ordered)


def _describe_cases(flips: list[Flip]):
    from .models import EvalCase

    ids = {cid for f in flips for cid in f.fixed + f.broken}
    info = {
        pk: (pk, pos, ext, cats)
        for pk, pos, ext, cats in EvalCase.objects.filter(pk__in=ids).values_list(
            "pk", "position", "external_id", "categories"
        )
    }
    for f in flips:
        f.fixed = sorted((info[c] for c in f.fixed), key=lambda t: t[1])
        f.broken = sorted((info[c] for c in f.broken), key=lambda t: t[1])


def lineage_runs(model_version, suite) -> list[tuple[object, EvalRun | None]]:
    """(model version, its latest finished run on the suite) for the version and every ancestor, base
    first."""
    chain = model_version.lineage()
    latest = {}
    for run in (
        EvalRun.objects.filter(
            suite=suite, status=EvalRun.State.DONE, model_version__in=[mv.pk for mv in chain]
        )
        .select_related("model_version")
        .order_by("model_version_id", "-finished_at", "-id")
    ):
        latest.setdefault(run.model_version_id, run)
    return [(mv, latest.get(mv.pk)) for mv in chain]


def chart_series(runs: list[EvalRun], labels: list[str] | None = None) -> dict:
    """Chart.js-ready data: one dataset per headline metric, value and ± SE per run (null when missing)."""
    return {
        "labels": labels or [f"{r.model_version.name} (run {r.pk})" for r in runs],
        "metrics": [
            {
                "name": m,
                "values": [(r.summary.get(m) or {}).get("value") if r else None for r in runs],
                "se": [(r.summary.get(m) or {}).get("se") if r else None for r in runs],
            }
            for m in HEADLINE_METRICS
        ],
    }


@dataclass
class ModelRow:
    model_version: object
    run: EvalRun | None  # the figures shown: on the table's suite, else the version's latest on another suite
    same_suite: bool  # run is on the table's suite (comparable with the other rows)
    pending: EvalRun | None = None  # its newest unfinished or failed run, when it has no finished one


def model_table(project, default_suite=None) -> tuple[object, list[ModelRow]]:
    """Every model version of the project with the figures to show beside it.

    The table reads one suite, so its rows compare like with like: the default suite, else the
    suite most versions were run on (ties: the most runs, then the newest). A version with no
    finished run there shows its latest finished run on another suite, marked as such; "not
    run" is only said of a version that has no finished run at all.
    """
    versions = list(ModelVersion.objects.filter(project=project).select_related("parent").order_by("name"))
    done = list(
        EvalRun.objects.filter(project=project, status=EvalRun.State.DONE)
        .order_by("-finished_at", "-id")
        .values_list("pk", "model_version_id", "suite_id")
    )
    suite = default_suite
    if suite is None and done:
        per_suite: dict[int, tuple[set, int]] = {}
        for _, mv_id, suite_id in done:
            versions_run, n = per_suite.get(suite_id, (set(), 0))
            versions_run.add(mv_id)
            per_suite[suite_id] = (versions_run, n + 1)
        best = max(per_suite, key=lambda sid: (len(per_suite[sid][0]), per_suite[sid][1], sid))
        suite = EvalSuite.objects.get(pk=best)
    chosen: dict[int, tuple[int, bool]] = {}
    for pk, mv_id, suite_id in done:  # newest first
        same = suite is not None and suite_id == suite.pk
        if mv_id not in chosen or (same and not chosen[mv_id][1]):
            chosen[mv_id] = (pk, same)
    runs = {
        r.pk: r
        for r in EvalRun.objects.filter(pk__in=[pk for pk, _ in chosen.values()]).select_related(
            "suite", "model_version"
        )
    }
    pending = {}
    if len(chosen) < len(versions):
        for r in (
            EvalRun.objects.filter(project=project)
            .exclude(model_version__in=list(chosen))
            .select_related("suite", "model_version")
            .order_by("-id")
        ):
            pending.setdefault(r.model_version_id, r)
    rows = []
    for mv in versions:
        pk, same = chosen.get(mv.pk, (None, False))
        rows.append(ModelRow(mv, runs.get(pk), same, pending.get(mv.pk)))
    return suite, rows


@dataclass
class MatrixCell:
    run_id: int
    tool_call_accuracy: dict
    response_quality: dict
    knowledge_accuracy: dict | None


@dataclass
class SuiteMatrix:
    suites: list  # EvalSuite, newest first
    rows: list[tuple[object, list[MatrixCell | None]]]  # (ModelVersion, one cell per suite)


def suite_matrix(project, max_suites: int = 6, max_versions: int = 12) -> SuiteMatrix:
    """Versions side by side on several suites (e.g. seen / unseen phrasings, multi-turn, knowledge): the
    newest suites with finished runs, the versions most recently run on them, each cell the latest
    finished run. A fixed number of queries, whatever the number of runs."""
    done = list(
        EvalRun.objects.filter(project=project, status=EvalRun.State.DONE)
        .order_by("-id")
        .values_list("pk", "model_version_id", "suite_id")[:2000]
    )
    suite_ids: list[int] = []
    for _, _, sid in done:
        if sid not in suite_ids and len(suite_ids) < max_suites:
            suite_ids.append(sid)
    latest: dict[tuple[int, int], int] = {}
    version_ids: list[int] = []
    for pk, mv_id, sid in done:
        if sid in suite_ids:
            latest.setdefault((mv_id, sid), pk)
            if mv_id not in version_ids and len(version_ids) < max_versions:
                version_ids.append(mv_id)
    if not suite_ids or len({sid for _, sid in latest}) < 2:
        return SuiteMatrix([], [])  # one suite: the model table above already says it all
    summaries = {
        pk: s or {}
        for pk, s in EvalRun.objects.filter(pk__in=list(latest.values())).values_list("pk", "summary")
    }
    suites = sorted(EvalSuite.objects.filter(pk__in=suite_ids), key=lambda s: s.name)
    versions = sorted(ModelVersion.objects.filter(pk__in=version_ids), key=lambda v: (v.created_at, v.pk))

    def cell(mv, suite):
        pk = latest.get((mv.pk, suite.pk))
        if pk is None:
            return None
        s = summaries.get(pk, {})
        knowledge = s.get("knowledge_accuracy") or {}
        return MatrixCell(
            pk,
            s.get("tool_call_accuracy") or {},
            s.get("response_quality") or {},
            knowledge if knowledge.get("n") else None,
        )

    return SuiteMatrix(suites, [(mv, [cell(mv, s) for s in suites]) for mv in versions])
