"""Pages of the pairwise judge (reports, suggestions) and of online DPO runs."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import Count, Q
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST
from kombu.exceptions import OperationalError as BrokerError

from annotator.models import Role
from annotator.policy import has_role, project_for
from inference.endpoints import check_endpoint_url
from jobs import lifecycle

from . import online
from .models import (
    DatasetSnapshot,
    JudgeEvaluation,
    JudgeSuggestion,
    JudgeVerdictSuggestion,
    ModelVersion,
    OnlineRun,
)
from .tasks import evaluate_judge, suggest_with_judge

ONLINE_OPTION_FIELDS = ["samples_per_prompt", "temperature", "max_prompts", "max_new_tokens", "seed",
                        "quality_margin"]
DPO_FIELDS = ["learning_rate", "num_train_epochs", "max_steps", "beta", "lora_r"]


def _judges(project):
    """Trained judges, and external endpoints registered as judges (metadata {"judge": true})."""
    return ModelVersion.objects.filter(Q(origin=ModelVersion.Origin.JUDGE) | Q(
        origin=ModelVersion.Origin.EXTERNAL, metadata__judge=True), project=project).order_by("-id")


@login_required
def judges(request, slug):
    project = project_for(request.user, slug, Role.LEAD)
    judges = list(_judges(project).select_related("parent"))
    latest = {}  # each judge's newest evaluation, in one query
    for ev in JudgeEvaluation.objects.filter(judge__in=judges).select_related("job").order_by("-id"):
        latest.setdefault(ev.judge_id, ev)

    def counts(model):  # {judge: (suggestions, disputed)}, one grouped query per kind
        return {r["judge"]: (r["n"], r["d"]) for r in model.objects.filter(project=project).values("judge")
                .annotate(n=Count("id"), d=Count("id", filter=Q(disagrees=True))).order_by()}

    pairs, single = counts(JudgeSuggestion), counts(JudgeVerdictSuggestion)
    rows = []
    for judge in judges:
        (n, d), (vn, vd) = pairs.get(judge.pk, (0, 0)), single.get(judge.pk, (0, 0))
        rows.append({"judge": judge, "ev": latest.get(judge.pk), "suggestions": n, "disagree": d,
                     "verdicts": vn, "verdicts_disagree": vd})
    disputed = (JudgeSuggestion.objects.filter(project=project, disagrees=True)
                .select_related("judge", "response_a__conversation", "response_b").order_by("-id")[:50])
    disputed_verdicts = (JudgeVerdictSuggestion.objects.filter(project=project, disagrees=True)
                         .select_related("judge", "response__conversation").order_by("-id")[:50])
    chart = [{"judge": r["judge"].name, "bins": r["ev"].details.get("bins", [])} for r in rows if r["ev"]]
    return render(request, "training/judges.html", {
        "project": project, "rows": rows, "disputed": disputed, "disputed_verdicts": disputed_verdicts, "chart": chart,
        "can_run": has_role(request.user, project, Role.LEAD), "is_admin": has_role(request.user, project, Role.ADMIN),
        "pair_snapshots": DatasetSnapshot.objects.filter(project=project, kind="dpo", status="ready").order_by("-id")})


def _queue(request, task, *args, done: str) -> None:
    try:
        task.delay(*args)
    except BrokerError as exc:
        messages.error(request, f"Could not reach the task queue ({exc}); nothing was queued. Try again later.")
    else:
        messages.success(request, done)


@login_required
@require_POST
def judge_evaluate(request, slug, pk):
    """Measure a judge on the human pairs of a DPO snapshot (e.g. one built from eval/holdout items)."""
    project = project_for(request.user, slug, Role.LEAD)
    judge = get_object_or_404(_judges(project), pk=pk)
    snap = DatasetSnapshot.objects.filter(project=project, kind="dpo", status="ready",
                                          pk=request.POST.get("snapshot") or 0).first()
    if snap is None:
        messages.error(request, "Choose a ready DPO snapshot of human preferences to measure the judge on.")
    else:
        _queue(request, evaluate_judge, judge.pk, snap.pk,
               done=f"{judge.name} is judging the pairs of {snap.name}; the report appears here when it is done.")
    return redirect("training-jobs:judges", slug=slug)


@login_required
@require_POST
def judge_external(request, slug):
    """Register an OpenAI-compatible endpoint as a judge (admins)."""
    project = project_for(request.user, slug, Role.ADMIN)
    name, url, model = (request.POST.get(k, "").strip() for k in ("name", "base_url", "model"))
    problems = []
    if not name:
        problems.append("a name")
    if not url.startswith(("http://", "https://")):
        problems.append("a base URL starting with http:// or https://")
    else:
        try:
            check_endpoint_url(url, settings.MODEL_ENDPOINT_ALLOWED_HOSTS)
        except ValueError as exc:
            problems.append(f"a base URL the server may call ({exc})")
    if ModelVersion.objects.filter(project=project, name=name).exists():
        problems.append(f"a name not yet used ({name!r} is taken)")
    if problems:
        messages.error(request, "The external judge needs " + ", ".join(problems) + ".")
    else:
        ModelVersion.objects.create(project=project, name=name, origin=ModelVersion.Origin.EXTERNAL,
                                    created_by=request.user, notes="external pairwise judge",
                                    metadata={"judge": True, "base_url": url, "model": model or name})
        messages.success(request, f"{name} registered as a judge; measure it on held-out pairs before trusting it.")
    return redirect("training-jobs:judges", slug=slug)


@login_required
@require_POST
def judge_suggest(request, slug, pk):
    project = project_for(request.user, slug, Role.LEAD)
    judge = get_object_or_404(_judges(project), pk=pk)
    _queue(request, suggest_with_judge, project.pk, judge.pk,
           done=f"{judge.name} is judging the open comparisons and responses; disputed ones move up the queue.")
    return redirect("training-jobs:judges", slug=slug)


@login_required
def online_list(request, slug):
    project = project_for(request.user, slug, Role.LEAD)
    lifecycle.reap_stale(OnlineRun, project=project)
    runs = OnlineRun.objects.filter(project=project).select_related("start_version", "result_version", "eval_suite")
    return render(request, "training/online_list.html", {
        "project": project, "runs": runs[:100], "is_admin": has_role(request.user, project, Role.ADMIN)})


@login_required
def online_create(request, slug):
    from evaluation.models import EvalSuite

    project = project_for(request.user, slug, Role.ADMIN)
    versions = ModelVersion.objects.filter(project=project).exclude(
        origin__in=[ModelVersion.Origin.JUDGE, ModelVersion.Origin.IMPORTED]).order_by("name")
    judge_choices = _judges(project)
    suites = EvalSuite.objects.filter(project=project).order_by("name", "-version")
    errors, form = {}, request.POST if request.method == "POST" else {}

    def chosen(qs, field):  # a posted id that is not a number (or too big to be a key) chooses nothing
        raw = form.get(field) or ""
        return qs.filter(pk=int(raw)).first() if raw.isascii() and raw.isdigit() and len(raw) <= 18 else None

    if request.method == "POST" and len(form.get("name", "")) > OnlineRun._meta.get_field("name").max_length:
        errors = {"name": [f"at most {OnlineRun._meta.get_field('name').max_length} characters"]}
    elif request.method == "POST":
        try:
            run = online.create_run(
                project, request.user, start_version=chosen(versions, "start_version"),
                ranker=form.get("ranker", "checker"), judge=chosen(judge_choices, "judge"),
                eval_suite=chosen(suites, "eval_suite"), rounds=form.get("rounds") or 2,
                options={f: form.get(f) for f in ONLINE_OPTION_FIELDS if form.get(f)} | {
                    "use_reference": form.get("use_reference") == "on"},
                preset=form.get("preset", "lora-r8"), overrides={f: form.get(f) for f in DPO_FIELDS if form.get(f)},
                name=form.get("name", ""))
        except ValidationError as exc:
            errors = {k.split(".")[-1]: v for k, v in exc.message_dict.items()}
        else:
            messages.success(request, f"Online run {run.pk} queued on the training queue.")
            return redirect("training-jobs:online-detail", slug=slug, pk=run.pk)
    return render(request, "training/online_form.html", {
        "project": project, "versions": versions, "judges": judge_choices, "suites": suites, "errors": errors,
        "form": form, "defaults": online.DEFAULT_OPTIONS, "option_fields": ONLINE_OPTION_FIELDS,
        "dpo_fields": DPO_FIELDS}, status=422 if errors else 200)


@login_required
def online_detail(request, slug, pk):
    project = project_for(request.user, slug, Role.LEAD)
    lifecycle.reap_stale(OnlineRun, project=project)
    run = get_object_or_404(OnlineRun.objects.select_related("start_version", "judge", "eval_suite", "result_version"),
                            project=project, pk=pk)
    rounds = run.round_set.select_related("policy", "snapshot", "job__result_version", "eval_run", "baseline_run")
    template = "training/_online_status.html" if request.headers.get("HX-Request") else "training/online_detail.html"
    return render(request, template, {
        "project": project, "run": run, "rounds": rounds, "figures": online.lineage_figures(run),
        "is_admin": has_role(request.user, project, Role.ADMIN)})


@login_required
@require_POST
def online_cancel(request, slug, pk):
    project = project_for(request.user, slug, Role.ADMIN)
    run = get_object_or_404(OnlineRun, project=project, pk=pk)
    online.request_cancel(run)
    messages.info(request, "Cancel requested: the run stops after its current phase (a training job at its next step).")
    return redirect("training-jobs:online-detail", slug=slug, pk=pk)


@login_required
@require_POST
def online_resume(request, slug, pk):
    project = project_for(request.user, slug, Role.ADMIN)
    run = get_object_or_404(OnlineRun, project=project, pk=pk)
    try:
        lifecycle.resume(run)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, "Queued again: it continues with its unfinished round.")
    return redirect("training-jobs:online-detail", slug=slug, pk=pk)
