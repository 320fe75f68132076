"""Pages of online DPO runs: sample from the policy, rank, train, evaluate, gate, round after round."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from annotator.models import ModelVersion, Role
from annotator.policy import has_role, project_for
from evaluation.forms import default_suite
from evaluation.models import EvalSuite
from jobs import lifecycle
from training.forms import JobChoices, default_preset
from training.models import OnlineRun, judges_of

from . import online

ONLINE_OPTION_FIELDS = [
    "samples_per_prompt",
    "temperature",
    "max_prompts",
    "max_new_tokens",
    "seed",
    "quality_margin",
]
DPO_FIELDS = ["learning_rate", "num_train_epochs", "max_steps", "beta", "lora_r"]


@login_required
def online_list(request, slug):
    project = project_for(request.user, slug, Role.LEAD)
    lifecycle.reap_stale(OnlineRun, project=project)
    runs = OnlineRun.objects.filter(project=project).select_related(
        "start_version", "result_version", "eval_suite"
    )
    runs = list(runs[:100])
    missing = []  # with no run yet: what a first run still lacks, as the new-run form would find it
    if not runs:
        initial = _initial(project)
        if not initial["start_version"]:
            missing.append("a model to start from whose folders are on this machine (register a base model)")
        if not initial["eval_suite"]:
            missing.append("an evaluation suite to gate each round on (create one under Evaluation)")
    return render(
        request,
        "loop/online_list.html",
        {
            "project": project,
            "runs": runs,
            "missing": missing,
            "is_admin": has_role(request.user, project, Role.ADMIN),
        },
    )


@login_required
def online_create(request, slug):
    project = project_for(request.user, slug, Role.ADMIN)
    versions = (
        ModelVersion.objects.filter(project=project)
        .exclude(origin__in=[ModelVersion.Origin.JUDGE, ModelVersion.Origin.IMPORTED])
        .order_by("name")
    )
    judges = judges_of(project)
    suites = EvalSuite.objects.filter(project=project).order_by("name", "-version")
    errors, form = {}, request.POST if request.method == "POST" else _initial(project)

    def chosen(qs, field):  # a posted id that is not a number (or too big to be a key) chooses nothing
        raw = form.get(field) or ""
        return qs.filter(pk=int(raw)).first() if raw.isascii() and raw.isdigit() and len(raw) <= 18 else None

    margin = _points(form.get("quality_margin")) if request.method == "POST" else None
    if request.method == "POST" and len(form.get("name", "")) > OnlineRun._meta.get_field("name").max_length:
        errors = {"name": [f"at most {OnlineRun._meta.get_field('name').max_length} characters"]}
    elif request.method == "POST" and margin is False:
        errors = {"quality_margin": ["points from 0 to 100 (2 means quality may drop at most 2 points)"]}
    elif request.method == "POST":
        try:
            run = online.create_run(
                project,
                request.user,
                start_version=chosen(versions, "start_version"),
                ranker=form.get("ranker", "checker"),
                judge=chosen(judges, "judge"),
                eval_suite=chosen(suites, "eval_suite"),
                rounds=form.get("rounds") or 2,
                options={f: form.get(f) for f in ONLINE_OPTION_FIELDS if form.get(f)}
                | {"use_reference": form.get("use_reference") == "on"}
                | ({"quality_margin": margin} if margin is not None else {}),
                preset=form.get("preset") or default_preset(),
                overrides={f: form.get(f) for f in DPO_FIELDS if form.get(f)},
                name=form.get("name", ""),
            )
        except ValidationError as exc:
            errors = {k.split(".")[-1]: v for k, v in exc.message_dict.items()}
        else:  # no flash: the run's page says live what it is doing
            return redirect("loop:online-detail", slug=slug, pk=run.pk)
    return render(
        request,
        "loop/online_form.html",
        {
            "project": project,
            "versions": versions,
            "judges": judges,
            "suites": suites,
            "errors": errors,
            "form": form,
            "defaults": online.DEFAULT_OPTIONS,
            "option_fields": ONLINE_OPTION_FIELDS,
            "dpo_fields": DPO_FIELDS,
        },
        status=422 if errors else 200,
    )


def _points(raw) -> float | None | bool:
    """The form's quality margin, typed in points as on the evaluation settings, as the fraction of 1 the
    run stores (and the API takes); None when left blank (the project's setting), False when not 0–100."""
    if raw in (None, ""):
        return None
    try:
        value = float(raw)
    except ValueError:
        return False
    return value / 100 if 0 <= value <= 100 else False


def _initial(project) -> dict:
    """What the new-run form pre-selects so that Launch works at once: the newest loadable version with an
    SFT stage (else a base model), the checker, the default suite and the preset for this machine."""
    choices = JobChoices(project)
    start = choices.start_version("dpo") or choices.start_version("sft")
    suite = default_suite(project)
    return {
        "start_version": str(start.pk) if start else "",
        "ranker": "checker",
        "eval_suite": str(suite.pk) if suite else "",
        "preset": default_preset(),
        "use_reference": "on",
    }


@login_required
def online_detail(request, slug, pk):
    project = project_for(request.user, slug, Role.LEAD)
    lifecycle.reap_stale(OnlineRun, project=project)
    run = get_object_or_404(
        OnlineRun.objects.select_related("start_version", "judge", "eval_suite", "result_version"),
        project=project,
        pk=pk,
    )
    rounds = run.round_set.select_related(
        "policy", "snapshot", "job__result_version", "eval_run", "baseline_run"
    )
    # the page polls _online_live: the status and rounds, with set-up and figures swapped in out of band
    template = "loop/_online_live.html" if request.headers.get("HX-Request") else "loop/online_detail.html"
    return render(
        request,
        template,
        {
            "project": project,
            "run": run,
            "rounds": rounds,
            "figures": online.lineage_figures(run),
            "is_admin": has_role(request.user, project, Role.ADMIN),
        },
    )


@login_required
@require_POST
def online_cancel(request, slug, pk):
    project = project_for(request.user, slug, Role.ADMIN)
    run = get_object_or_404(OnlineRun, project=project, pk=pk)
    online.request_cancel(run)  # the live status card says "cancel requested" until the run stops
    return redirect("loop:online-detail", slug=slug, pk=pk)


@login_required
@require_POST
def online_resume(request, slug, pk):
    project = project_for(request.user, slug, Role.ADMIN)
    run = get_object_or_404(OnlineRun, project=project, pk=pk)
    try:
        lifecycle.resume(run)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect("loop:online-detail", slug=slug, pk=pk)
