"""Evaluation pages. Leads read reports and comparisons; admins launch runs, build suites, send
badcases to the queue and promote or reject model versions. Rules live in runner / suites /
loop / comparison / promotion; these views only gather and render."""

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from annotator.agreement import wilson_interval
from annotator.models import ModelVersion, Role
from annotator.policy import can_run_pipeline, has_role, project_for, role_in
from config.text import counted
from jobs import lifecycle
from toolcalls.defects import DEFECTS
from toolcalls.match import call_matches, expected_calls
from toolcalls.parse import ToolCall
from toolcalls.score import HEADLINE_METRICS

from . import comparison, loop, promotion, runner, suites
from .forms import DecisionForm, LoopForm, RunForm, SettingsForm, SuiteForm, run_initial
from .models import EvalBadcase, EvalResult, EvalRun, EvalSettings, EvalSuite, PromotionDecision

METRIC_HELP = {
    "tool_call_accuracy": "Strict: a call exactly when expected, with exactly the right name and arguments; "
    "no call when none was expected. Every case counts.",
    "tool_name_accuracy": "Among cases where the model called a tool: the called names are right.",
    "tool_args_accuracy": "Among cases where the model called a tool: names and arguments all right.",
    "response_quality": "Free of every format defect below.",
    "knowledge_accuracy": "Among cases whose gold answer lists facts (e.g. the current policy's terms): the "
    "reply states every one of them, as whole words, whitespace and case free.",
}
DEFECT_HELP = {
    "think_tags": "<think> tags unbalanced, nested or out of order",
    "malformed_call": "bad JSON, missing fields, unclosed tag or unknown tool",
    "too_short": "no call and a reply under 10 characters or 3 words",
    "end_repetition": "ends by repeating itself, compresses too well, or hit the token limit",
    "fabricated_tool_result": "wrote a <tool_response> or kept talking after its call",
    "template_leak": "chat-template tokens in the answer",
}


def _ctx(request, project, **extra):
    return {
        "project": project,
        "role": role_in(request.user, project),
        "is_admin": has_role(request.user, project, Role.ADMIN),
        "is_lead": has_role(request.user, project, Role.LEAD),
        **extra,
    }


def _rate_row(name, rate):
    rate = rate or {}
    value, se = rate.get("value"), rate.get("se")
    n = rate.get("n", 0)
    # Wilson's interval, as the dashboards give: it stays honest at 0 % and 100 % (value ± 1.96 se would
    # claim "100.0 %–100.0 %" from 40 cases)
    interval = None if value is None else wilson_interval(rate.get("count", value * n), n)
    lo, hi = interval or (None, None)
    return {
        "name": name,
        "help": METRIC_HELP.get(name, DEFECT_HELP.get(name, "")),
        "value": value,
        "se": se,
        "n": n,
        "count": rate.get("count", 0),
        "lo": lo,
        "hi": hi,
    }


def _breakdown(groups: dict | None) -> list[dict]:
    rows = []
    for key, g in (groups or {}).items():
        rows.append(
            {"key": key, "n": g.get("n", 0), "metrics": [_rate_row(m, g.get(m)) for m in HEADLINE_METRICS]}
        )
    return rows


# ================================================================================ home


@login_required
def eval_home(request, slug):
    project = project_for(request.user, slug, Role.LEAD)
    cfg = EvalSettings.for_project(project)
    runs = EvalRun.objects.filter(project=project).select_related("suite", "model_version").order_by("-id")
    page = Paginator(runs, 30).get_page(request.GET.get("page"))
    suite_list = (
        EvalSuite.objects.filter(project=project).annotate(n_runs=Count("runs")).order_by("name", "-version")
    )
    table_suite, models = comparison.model_table(project, cfg.default_suite)
    matrix = comparison.suite_matrix(project)
    suites.with_overlap([*page.object_list, *(row.run for row in models if row.run)])
    decisions = PromotionDecision.objects.filter(project=project).select_related(
        "model_version", "decided_by", "previous_production"
    )[:8]
    return render(
        request,
        "evaluation/home.html",
        _ctx(
            request,
            project,
            page=page,
            suites=suite_list,
            models=models,
            table_suite=table_suite,
            matrix=matrix,
            cfg=cfg,
            decisions=decisions,
            tab="home",
        ),
    )


# ============================================================================== suites


@login_required
def suite_create(request, slug):
    project = project_for(request.user, slug, Role.ADMIN)
    snapshots = suites.eval_snapshots(project)
    form = SuiteForm(request.POST or None, request.FILES or None, snapshots=snapshots)
    errors = []
    if request.method == "POST" and form.is_valid():
        d = form.cleaned_data
        kwargs = {"user": request.user, "description": d["description"]}
        try:
            if d["source"] == "gold":
                suite, created = suites.suite_from_gold_jsonl(
                    project, d["name"], d["file"], file_name=d["file"].name, **kwargs
                )
            elif d["source"] == "scenarios":
                suite, created = suites.suite_from_scenarios(
                    project, d["name"], d["file"], file_name=d["file"].name, **kwargs
                )
            elif d["source"] == "bfcl":
                suite, created = suites.suite_from_bfcl(
                    project, d["name"], d["file"], d["answers_file"], file_name=d["file"].name, **kwargs
                )
            elif d["source"] == "snapshot":
                snap = next((s for s in snapshots if s.pk == d["snapshot"]), None)
                if snap is None:
                    raise suites.SuiteError([suites.CaseError(0, "snapshot", "not a ready eval snapshot")])
                suite, created = suites.suite_from_snapshot(project, snap, d["name"], **kwargs)
            elif d["source"] == "conversations":
                suite, created = suites.suite_from_conversations(project, d["name"], **kwargs)
            else:
                suite, created = suites.suite_from_demo(
                    project,
                    d["name"],
                    n=d["demo_cases"] or 100,
                    seed=d["demo_seed"] or 0,
                    split=d["demo_split"] or "seen",
                    **kwargs,
                )
        except suites.SuiteError as exc:
            errors = exc.errors
        else:
            if created:
                messages.success(request, f"Suite {suite.label} created with {suite.case_count} cases.")
            else:
                messages.info(
                    request, f"Nothing changed since {suite.label}: the same cases. No new version made."
                )
            return redirect("evaluation:suite-detail", slug=slug, pk=suite.pk)
    return render(
        request,
        "evaluation/suite_form.html",
        _ctx(request, project, form=form, errors=errors, snapshots=snapshots, tab="new-suite"),
    )


@login_required
def suite_detail(request, slug, pk):
    project = project_for(request.user, slug, Role.LEAD)
    suite = get_object_or_404(EvalSuite, project=project, pk=pk)
    cases = suite.cases.only("id", "position", "external_id", "categories", "turn_depth", "expected")
    category = request.GET.get("category")
    if category:
        cases = (
            cases.filter(categories__contains=[category])
            if _json_contains_ok()
            else cases.filter(
                pk__in=[c.pk for c in suite.cases.only("id", "categories") if category in c.categories]
            )
        )
    page = Paginator(cases.order_by("position"), 50).get_page(request.GET.get("page"))
    runs = suites.with_overlap(list(suite.runs.select_related("suite", "model_version").order_by("-id")[:50]))
    versions = EvalSuite.objects.filter(project=project, name=suite.name).order_by("-version")
    return render(
        request,
        "evaluation/suite_detail.html",
        _ctx(request, project, suite=suite, page=page, runs=runs, versions=versions, category=category),
    )


def _json_contains_ok() -> bool:
    from django.db import connection

    return connection.vendor == "postgresql"


# ================================================================================ runs


@login_required
def run_create(request, slug):
    project = project_for(request.user, slug, Role.ADMIN)
    initial = run_initial(project, request.GET)
    form = RunForm(request.POST or None, request.FILES or None, project=project, initial=initial)
    if request.method == "POST" and form.is_valid():
        d = form.cleaned_data
        try:
            run = runner.create_run(
                project,
                d["suite"],
                d["model_version"],
                source=d["source"],
                settings=form.run_settings(),
                user=request.user,
                outputs=d.get("outputs"),
                api_key=d.get("api_key") or "",
                note=d.get("note") or "",
            )
        except ValidationError as exc:
            for field, errs in exc.message_dict.items():
                target = {
                    "outputs": "outputs",
                    "model": "endpoint_model",
                    "base_url": "base_url",
                    "model_version": "model_version",
                    "suite": "suite",
                }.get(field)
                for e in errs:
                    form.add_error(target if target in form.fields else None, e)
        else:
            return redirect("evaluation:run-detail", slug=slug, pk=run.pk)  # its page shows it live
    return render(request, "evaluation/run_form.html", _ctx(request, project, form=form, tab="new-run"))


def _run(request, slug, pk, role=Role.LEAD):
    project = project_for(request.user, slug, role)
    run = get_object_or_404(
        EvalRun.objects.select_related("suite", "model_version", "created_by"), project=project, pk=pk
    )
    return project, run


def worst_results(run, n=20):
    return (
        EvalResult.objects.filter(run=run)
        .filter(Q(tool_call_accuracy=0) | Q(response_quality=0))
        .select_related("case")
        .order_by("tool_call_accuracy", "response_quality", "-defect_count", "case__position")[:n]
    )


@login_required
def run_detail(request, slug, pk):
    project, run = _run(request, slug, pk)
    if request.headers.get("HX-Request") and request.GET.get("part") == "progress":
        # the progress card, with the run-details card swapped in out of band
        response = render(request, "evaluation/_run_progress.html", _ctx(request, project, run=run, oob=True))
        if run.finished:
            response["HX-Refresh"] = "true"  # the report appears with the whole page
        return response
    s = run.summary or {}
    headline = [_rate_row(m, s.get(m)) for m in HEADLINE_METRICS] if s else []
    if (s.get("knowledge_accuracy") or {}).get("n"):  # a suite whose gold answers carry facts
        headline.append(_rate_row("knowledge_accuracy", s["knowledge_accuracy"]))
    defects = [_rate_row(d, (s.get("defects") or {}).get(d)) for d in DEFECTS] if s else []
    secondary = (
        [_rate_row(m, s.get(m)) for m in ("false_call_rate", "missed_call_rate", "args_accuracy_given_name")]
        if s
        else []
    )
    by_category, by_depth, by_split = (
        _breakdown(s.get("by_category")),
        _breakdown(s.get("by_turn_depth")),
        _breakdown(s.get("by_split")),
    )
    lineage = comparison.lineage_runs(run.model_version, run.suite)
    suites.with_overlap([run, *(r for _, r in lineage if r)])
    lineage_chart = comparison.chart_series([r for _, r in lineage], [mv.name for mv, _ in lineage])
    others = (
        EvalRun.objects.filter(suite=run.suite, status=EvalRun.State.DONE)
        .exclude(pk=run.pk)
        .select_related("model_version")
        .order_by("-id")[:20]
    )
    badcases = EvalBadcase.objects.filter(run=run).count()
    breakdown_chart = {
        "labels": [str(r["key"]) for r in by_category],
        "values": [r["metrics"][0]["value"] for r in by_category],
        "se": [r["metrics"][0]["se"] for r in by_category],
    }
    return render(
        request,
        "evaluation/run_detail.html",
        _ctx(
            request,
            project,
            run=run,
            s=s,
            headline=headline,
            defects=defects,
            secondary=secondary,
            per_call=s.get("per_call") or {},
            by_category=by_category,
            by_depth=by_depth,
            by_split=by_split,
            worst=worst_results(run) if run.status in (EvalRun.State.DONE, EvalRun.State.CANCELLED) else [],
            lineage=lineage,
            lineage_chart=lineage_chart,
            breakdown_chart=breakdown_chart,
            others=others,
            loop_form=LoopForm(run=run),
            badcases=badcases,
            loop_preview=_loop_preview(run),
            can_retry=run.resumable,
            lineage_ids=[r.pk for _, r in lineage if r],
            charts=True,
        ),
    )


def _loop_preview(run):
    if run.status != EvalRun.State.DONE:
        return None
    failing = loop.failing(EvalResult.objects.filter(run=run), "failed")
    sent = EvalBadcase.objects.filter(run=run).values("case_id")
    return {"failing": failing.count(), "unsent": failing.exclude(case_id__in=sent).count()}


FILTERS = {
    "all": ("all cases", Q()),
    "failed": ("failed (call or quality)", Q(tool_call_accuracy=0) | Q(response_quality=0)),
    "wrong_call": ("wrong tool call", Q(tool_call_accuracy=0)),
    "defect": ("any defect", Q(response_quality=0)),
    "passed": ("passed", Q(tool_call_accuracy=1, response_quality=1)),
    "errors": ("no output (errors)", ~Q(error="")),
}


@login_required
def run_results(request, slug, pk):
    project, run = _run(request, slug, pk)
    which = request.GET.get("show", "failed")
    if which not in FILTERS:
        which = "failed"
    qs = EvalResult.objects.filter(run=run).filter(FILTERS[which][1]).select_related("case")
    defect = request.GET.get("defect")
    if defect in DEFECTS:
        qs = qs.filter(**{f"score__defects__{defect}": 1})
    category = request.GET.get("category")
    depth = request.GET.get("depth")
    if depth and depth.isdecimal():  # not isdigit: int("²") fails
        qs = qs.filter(case__turn_depth=int(depth))
    results = qs.order_by("case__position")
    if category:
        ids = (
            [r.pk for r in results.only("id", "case__categories") if category in (r.case.categories or [])]
            if category != "(uncategorized)"
            else [r.pk for r in results.only("id", "case__categories") if not r.case.categories]
        )
        results = EvalResult.objects.filter(pk__in=ids).select_related("case").order_by("case__position")
    page = Paginator(results, 50).get_page(request.GET.get("page"))
    return render(
        request,
        "evaluation/run_results.html",
        _ctx(
            request,
            project,
            run=run,
            page=page,
            which=which,
            filters=FILTERS,
            defect=defect,
            defects=DEFECTS,
            category=category,
            depth=depth,
        ),
    )


_ABSENT = object()


def _top_key(name: str, want: dict, have: dict) -> str:
    """The argument a gold rule name sits under: itself when some side has that exact key, else the first
    part of a dotted path (metrics.md: optional / acceptable may name paths into nested objects)."""
    return name if name in want or name in have or "." not in name else name.split(".", 1)[0]


def _argument_ok(e: dict, key: str, want, have) -> bool:
    """One argument judged by the scorer's own rule: the call restricted to this key and its gold rules."""

    def mine(name):
        return name == key or name.startswith(key + ".")

    sub = {
        "name": e["name"],
        "arguments": {} if want is _ABSENT else {key: want},
        "optional": [n for n in e.get("optional") or () if mine(n)],
        "acceptable": {n: v for n, v in (e.get("acceptable") or {}).items() if mine(n)},
    }
    return call_matches(ToolCall(e["name"], {} if have is _ABSENT else {key: have}), sub)


def call_diff(expected_message: dict, calls: list[dict]) -> list[dict]:
    """Expected calls beside the model's, argument by argument, for reading a failure.

    Display only: pairs calls by name in order; the verdict itself is score_case's (bipartite).
    """
    try:
        wanted = expected_calls(expected_message)
    except ValueError:
        return []
    used, rows = set(), []
    for e in wanted:
        j = next((i for i, c in enumerate(calls) if i not in used and c.get("name") == e["name"]), None)
        got = calls[j] if j is not None else None
        if j is not None:
            used.add(j)
        have_args = (got or {}).get("arguments") or {}
        keys = list(e["arguments"])
        ruled = [_top_key(n, e["arguments"], have_args) for n in e.get("acceptable") or {}]
        for k in ruled + list(have_args):
            if k not in keys:
                keys.append(k)
        args = []
        for k in keys:
            want, have = e["arguments"].get(k, _ABSENT), have_args.get(k, _ABSENT)
            alts = (e.get("acceptable") or {}).get(k) or []
            ok = _argument_ok(e, k, want, have)
            args.append(
                {
                    "key": k,
                    "want": "—" if want is _ABSENT else json.dumps(want, ensure_ascii=False),
                    "have": "(missing)" if have is _ABSENT else json.dumps(have, ensure_ascii=False),
                    "alts": [json.dumps(a, ensure_ascii=False) for a in alts],
                    "ok": ok and got is not None,
                }
            )
        rows.append({"name": e["name"], "found": got is not None, "args": args})
    for i, c in enumerate(calls):
        if i not in used:
            rows.append(
                {
                    "name": c.get("name"),
                    "found": True,
                    "unexpected": True,
                    "args": [
                        {
                            "key": k,
                            "want": "—",
                            "have": json.dumps(v, ensure_ascii=False),
                            "alts": [],
                            "ok": False,
                        }
                        for k, v in (c.get("arguments") or {}).items()
                    ],
                }
            )
    return rows


@login_required
def result_detail(request, slug, pk, case_pk):
    project, run = _run(request, slug, pk)
    result = get_object_or_404(EvalResult.objects.select_related("case"), run=run, case_id=case_pk)
    case = result.case
    from annotator.importers import assistant_message_from_raw

    actual = assistant_message_from_raw(result.output, case.tools or [])
    others = (
        EvalResult.objects.filter(case=case)
        .exclude(run=run)
        .select_related("run__model_version")
        .order_by("-run_id")[:20]
    )
    neighbours = list(
        EvalResult.objects.filter(run=run)
        .filter(FILTERS["failed"][1])
        .order_by("case__position")
        .values_list("case_id", flat=True)
    )
    prev_id = next_id = None
    if case.pk in neighbours:
        i = neighbours.index(case.pk)
        prev_id = neighbours[i - 1] if i > 0 else None
        next_id = neighbours[i + 1] if i + 1 < len(neighbours) else None
    badcase = EvalBadcase.objects.filter(run=run, case=case).select_related("response__conversation").first()
    return render(
        request,
        "evaluation/result_detail.html",
        _ctx(
            request,
            project,
            run=run,
            result=result,
            case=case,
            actual=actual,
            others=others,
            prev_id=prev_id,
            next_id=next_id,
            badcase=badcase,
            diff=call_diff(case.expected, (result.score.get("parsed") or {}).get("calls") or []),
            metrics=[(m, getattr(result, m)) for m in HEADLINE_METRICS],
            defect_flags=[(d, (result.score.get("defects") or {}).get(d), DEFECT_HELP[d]) for d in DEFECTS],
        ),
    )


@login_required
@require_POST
def run_cancel(request, slug, pk):
    _, run = _run(request, slug, pk, Role.ADMIN)
    lifecycle.cancel(run)
    messages.info(
        request, "Cancel requested: the worker stops after its current batch; results so far are kept."
    )
    return redirect("evaluation:run-detail", slug=slug, pk=pk)


@login_required
@require_POST
def run_retry(request, slug, pk):
    _, run = _run(request, slug, pk, Role.ADMIN)
    try:
        lifecycle.resume(run)
    except ValidationError as exc:
        messages.error(request, "; ".join(exc.messages))
    else:
        messages.success(request, "Queued again; cases already scored are kept.")
    return redirect("evaluation:run-detail", slug=slug, pk=pk)


@login_required
@require_POST
def run_loop(request, slug, pk):
    project, run = _run(request, slug, pk, Role.ADMIN)
    form = LoopForm(request.POST, run=run)
    if not form.is_valid():
        messages.error(request, "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items()))
        return redirect("evaluation:run-detail", slug=slug, pk=pk)
    d = form.cleaned_data
    try:
        out = loop.send_to_queue(
            run,
            request.user,
            scope=d["scope"],
            baseline=d.get("baseline"),
            split=d.get("split") or None,
            priority=d["priority"],
        )
    except ValidationError as exc:
        messages.error(request, "; ".join(exc.messages))
    else:
        if out["sent"]:
            messages.success(
                request,
                f"{counted(out['sent'], 'badcase')} sent to the annotator queue "
                f"({out['label_tasks']} labelling and {out['compare_tasks']} comparison tasks); "
                f"{out['already']} {'was' if out['already'] == 1 else 'were'} already there.",
            )
        else:
            sent_before = "was" if out["already"] == 1 else "were"
            messages.info(
                request, f"Nothing new to send: {counted(out['already'], 'case')} {sent_before} sent before."
            )
    return redirect("evaluation:run-detail", slug=slug, pk=pk)


@login_required
def run_export(request, slug, pk):
    _, run = _run(request, slug, pk)

    def lines():
        qs = EvalResult.objects.filter(run=run).select_related("case").order_by("case__position")
        for r in qs.iterator(chunk_size=1000):
            s = r.score
            row = {
                "id": r.case.external_id,
                "output": r.output,
                "stopped_at_limit": r.stopped_at_limit,
                **{m: s.get(m) for m in HEADLINE_METRICS},
                **(s.get("defects") or {}),
                "categories": r.case.categories,
                "turn_depth": r.case.turn_depth,
                "calls": (s.get("parsed") or {}).get("calls"),
                "error": r.error or None,
            }
            yield json.dumps(row, ensure_ascii=False) + "\n"
        yield json.dumps({"summary": run.summary}, ensure_ascii=False) + "\n"

    response = StreamingHttpResponse(lines(), content_type="application/x-ndjson")
    response["Content-Disposition"] = f'attachment; filename="eval-run-{run.pk}.jsonl"'
    return response


# =========================================================================== compare


MAX_COMPARED_RUNS = comparison.MAX_COMPARED_RUNS


@login_required
def compare(request, slug):
    project = project_for(request.user, slug, Role.LEAD)
    ids, bad = [], []
    for raw in filter(None, request.GET.getlist("runs")):
        run_id = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else None  # < 2**63: a key
        if not run_id:
            bad.append(raw if len(raw) <= 20 else raw[:20] + "…")
        elif run_id not in ids:
            ids.append(run_id)
    if bad or len(ids) > MAX_COMPARED_RUNS:
        error = (
            f"not a run id: {', '.join(map(repr, bad[:5]))}"
            if bad
            else f"compare at most {MAX_COMPARED_RUNS} runs at a time"
        )
        return render(
            request,
            "evaluation/compare.html",
            _ctx(request, project, cmp=None, error=error, chart=None, ids=[], candidates=[], charts=True),
            status=400,
        )
    if not ids:  # nothing picked: the newest run on the default suite against its lineage, if there is one
        picked = comparison.default_runs(project)
        if picked:
            query = "&".join(f"runs={pk}" for pk in picked)
            return redirect(f"{reverse('evaluation:compare', args=[project.slug])}?{query}")
        return render(
            request,
            "evaluation/compare.html",
            _ctx(request, project, cmp=None, error=None, chart=None, ids=[], candidates=[], charts=True),
        )
    runs = list(EvalRun.objects.filter(project=project, pk__in=ids).select_related("suite", "model_version"))
    runs.sort(key=lambda r: ids.index(r.pk))
    suites.with_overlap(runs)
    error, result = None, None
    if len(ids) != len(runs):
        raise Http404("no such run in this project")
    try:
        result = comparison.compare_runs(runs, keep_order=request.GET.get("order") == "given")
    except comparison.ComparisonError as exc:
        error = str(exc)
    chart = comparison.chart_series(result.runs) if result else None
    candidates = []
    if runs:
        candidates = (
            EvalRun.objects.filter(suite=runs[0].suite, status=EvalRun.State.DONE)
            .select_related("model_version")
            .order_by("-id")[:50]
        )
    return render(
        request,
        "evaluation/compare.html",
        _ctx(
            request,
            project,
            cmp=result,
            error=error,
            chart=chart,
            ids=ids,
            candidates=candidates,
            charts=True,
        ),
    )


# ========================================================================= promotion


@login_required
def model_gate(request, slug, pk):
    project = project_for(request.user, slug, Role.LEAD)
    mv = get_object_or_404(ModelVersion, project=project, pk=pk)
    form = DecisionForm(
        request.POST or None,
        project=project,
        initial={"suite": request.GET.get("suite") or EvalSettings.for_project(project).default_suite_id},
    )
    suite = None
    if request.method == "POST":
        if not can_run_pipeline(request.user, project):
            raise PermissionDenied("Promoting and rejecting need the admin role.")
        if form.is_valid():
            suite = form.cleaned_data["suite"]
            action = request.POST.get("action")
            try:
                if action == "promote":
                    promotion.promote(mv, request.user, suite, form.cleaned_data["note"])
                    messages.success(request, f"{mv.name} is now the production version.")
                elif action == "reject":
                    promotion.reject(mv, request.user, suite, form.cleaned_data["note"])
                    messages.info(request, f"{mv.name} is marked rejected.")
            except promotion.GateFailed as exc:
                messages.error(
                    request, "Not promoted: " + "; ".join(f"{c.label} — {c.detail}" for c in exc.gate.failed)
                )
            except ValidationError as exc:
                messages.error(request, "; ".join(exc.messages))
            url = reverse("evaluation:model-gate", args=[slug, pk])
            return redirect(f"{url}?suite={suite.pk}" if suite else url)
    else:
        sid = request.GET.get("suite")
        if sid and sid.isdecimal():  # not isdigit: int("²") fails
            suite = EvalSuite.objects.filter(project=project, pk=int(sid)).first()
    mv.refresh_from_db()
    gate = promotion.check_gate(mv, suite)
    lineage = comparison.lineage_runs(mv, gate.suite) if gate.suite else []
    suites.with_overlap([r for _, r in lineage if r])
    chart = (
        comparison.chart_series([r for _, r in lineage], [m.name for m, _ in lineage]) if lineage else None
    )
    decisions = PromotionDecision.objects.filter(model_version=mv).select_related("decided_by")[:20]
    compare_ids = [r.pk for r in (gate.production_run, gate.candidate_run) if r]
    return render(
        request,
        "evaluation/model_gate.html",
        _ctx(
            request,
            project,
            mv=mv,
            gate=gate,
            form=form,
            lineage=lineage,
            chart=chart,
            decisions=decisions,
            compare_ids=compare_ids,
            lineage_ids=[r.pk for _, r in lineage if r],
            charts=True,
        ),
    )


@login_required
def settings_view(request, slug):
    project = project_for(request.user, slug, Role.ADMIN)
    cfg = EvalSettings.for_project(project)
    form = SettingsForm(request.POST or None, instance=cfg)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, "Evaluation settings saved.")
        return redirect("evaluation:home", slug=slug)
    return render(request, "evaluation/settings.html", _ctx(request, project, form=form, tab="settings"))
