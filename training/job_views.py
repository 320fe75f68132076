"""Training pages: the job list, the launch form, and the live job page."""

from datetime import timedelta
from pathlib import PurePath

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from annotator.models import ModelVersion, Role
from annotator.policy import has_role, project_for
from jobs import lifecycle

from .finetune.params import DEFAULT_GUARD, JUDGE_GUARD, PRESETS
from .finetune.request import create_job
from .forms import STAGES, JobChoices, as_pk, default_preset, preset_placeholders
from .models import DatasetSnapshot, TrainingJob

OVERRIDE_FIELDS = [
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "target_modules",
    "save_steps",
    "beta",
    "loss_type",
    "num_processes",
]


@login_required
def job_list(request, slug):
    project = project_for(request.user, slug, Role.LEAD)
    lifecycle.reap_stale(TrainingJob, project=project)
    jobs = TrainingJob.objects.filter(project=project).select_related(
        "base_version", "train_snapshot", "result_version"
    )[:100]
    return render(
        request,
        "training/job_list.html",
        {"project": project, "jobs": jobs, "is_admin": has_role(request.user, project, Role.ADMIN)},
    )


@login_required
def job_create(request, slug):
    stage = (request.POST if request.method == "POST" else request.GET).get("stage")
    project = project_for(
        request.user, slug, Role.ADMIN, action="train a judge" if stage == "judge" else "launch training jobs"
    )
    choices = JobChoices(project, base=request.GET.get("base"))
    versions = ModelVersion.objects.filter(project=project)
    snapshots = DatasetSnapshot.objects.filter(project=project, status=DatasetSnapshot.State.READY)
    errors = {}
    if request.method == "POST":
        form = request.POST
        try:
            job = create_job(
                project,
                request.user,
                stage=form.get("stage", "sft"),
                base_version=_chosen(versions, form.get("base_version")) or _missing("base_version"),
                train_snapshot=_chosen(snapshots, form.get("train_snapshot")) or _missing("train_snapshot"),
                eval_snapshot=_chosen(snapshots, form.get("eval_snapshot")),
                preset=form.get("preset") or default_preset(),
                overrides={f: form.get(f) for f in OVERRIDE_FIELDS if form.get(f)},
                allow_raw_base=form.get("allow_raw_base") == "on",
                merge_weights=form.get("merge_weights") == "on",
                evaluate_after=form.get("evaluate_after") == "on",
                name=form.get("name", ""),
                guard=_guard_overrides(form),
            )
        except ValidationError as exc:
            errors = {("general" if k == "__all__" else k): v for k, v in exc.message_dict.items()}
        except ValueError:
            errors = {"max_quality_drop_points": ["must be a number"]}
        else:  # no flash: the job page says live what the job is doing
            return redirect("training-jobs:detail", slug=slug, pk=job.pk)
    else:
        form = choices.initial(request.GET)
    placeholders = preset_placeholders(OVERRIDE_FIELDS)
    preset = form.get("preset") if form.get("preset") in placeholders else default_preset()
    stage = form.get("stage") if form.get("stage") in STAGES else TrainingJob.Stage.SFT
    return render(
        request,
        "training/job_form.html",
        {
            "project": project,
            "choices": choices,
            "stage_defaults": choices.all_defaults(),
            "errors": errors,
            "form": form,
            "presets": PRESETS,
            "default_preset": default_preset(),
            "guard": DEFAULT_GUARD,
            "judge_guard": JUDGE_GUARD,
            "override_fields": OVERRIDE_FIELDS,
            "placeholders": placeholders,  # every preset's, for the script
            "placeholder": placeholders[preset][stage],  # the chosen preset's for the chosen stage
        },
        status=422 if errors else 200,
    )


def _chosen(queryset, raw):
    """The row a posted id names, or None (also for an id that is not a number)."""
    pk = as_pk(raw)
    return queryset.filter(pk=pk).first() if pk is not None else None


def _guard_overrides(form) -> dict:
    """Only the limits the admin typed: create_job fills the rest with the stage's defaults
    (a judge's guard differs from an agent's)."""
    guard = {}
    if form.get("max_perplexity_ratio"):
        guard["max_perplexity_ratio"] = form.get("max_perplexity_ratio")
    if form.get("max_quality_drop_points"):
        guard["max_quality_drop"] = float(form.get("max_quality_drop_points")) / 100
    return guard


def _missing(field):
    raise ValidationError({field: ["Choose one."]})


@login_required
def job_detail(request, slug, pk):
    project = project_for(request.user, slug, Role.LEAD)
    lifecycle.reap_stale(TrainingJob, project=project)
    job = get_object_or_404(
        TrainingJob.objects.select_related(
            "base_version", "train_snapshot", "eval_snapshot", "result_version"
        ),
        project=project,
        pk=pk,
    )
    # the page polls _job_live: the status card, with every other live panel swapped in out of band
    template = "training/_job_live.html" if request.headers.get("HX-Request") else "training/job_detail.html"
    checkpoints = list(job.checkpoints.all())
    for c in checkpoints:  # the table shows the folder's name; the full path is its title
        c.folder = PurePath(c.path).name or c.path
    # only a trained agent model has an evaluation to show or to wait for (the page polls: no query else)
    trained = job.status == TrainingJob.State.SUCCEEDED and job.stage != TrainingJob.Stage.JUDGE
    suite = _default_suite(project) if trained else None
    see_eval = _evaluation_of(job, suite)
    return render(
        request,
        template,
        {
            "project": project,
            "job": job,
            "checkpoints": checkpoints,
            "is_admin": has_role(request.user, project, Role.ADMIN),
            "lineage": job.base_version.lineage(),
            "params": sorted(job.params.items()),
            "has_points": job.metrics.exists(),
            "guard_limits": guard_limits(job.guard),
            "see_eval": see_eval,
            "awaiting_eval": see_eval is None and _evaluation_due(job, project, suite),
        },
    )


def points(fraction) -> str:
    """A fraction of response quality in points: 0.1 -> "10", 0.025 -> "2.5"."""
    return f"{round(float(fraction) * 100, 2):g}"


def guard_limits(guard: dict) -> str:
    """The guard's limits in words, quality in points as the new-job form takes it."""
    parts = []
    if guard.get("max_perplexity_ratio") is not None:
        parts.append(f"perplexity may rise at most × {guard['max_perplexity_ratio']:g}")
    drop = guard.get("max_quality_drop")
    if drop is not None:
        parts.append("no quality limit" if drop >= 1 else f"quality may drop at most {points(drop)} points")
    return "; ".join(parts)


# The evaluation that follows training (evaluation.runner.evaluate_after_training) is read through the
# reverse relations of its models: training sits below evaluation and imports none of it.
EVAL_LIVE = ("queued", "running", "done")
EVAL_GRACE = timedelta(seconds=60)


def _default_suite(project):
    """The suite an automatic run uses: the project's default suite, else its newest."""
    settings = getattr(project, "eval_settings", None)
    if settings is not None and settings.default_suite_id:
        return settings.default_suite
    suites = getattr(project, "eval_suites", None)
    return suites.order_by("-created_at", "-id").first() if suites is not None else None


def _evaluation_of(job, suite):
    """The newest queued, running or finished run of the job's model on the default suite: there is no
    need to start another one ("See its evaluation" instead of "Evaluate this model")."""
    version = job.result_version  # `suite` is None unless the job trained an agent model
    if suite is None or version is None or not hasattr(version, "eval_runs"):
        return None
    return (
        version.eval_runs.filter(suite=suite, status__in=EVAL_LIVE)
        .select_related("suite")
        .order_by("-id")
        .first()
    )


def _evaluation_due(job, project, suite) -> bool:
    """The job has just succeeded and its automatic evaluation is about to be queued (the worker queues it
    right after marking the job done): the status card keeps polling for a minute to show its link."""
    if suite is None or job.finished_at is None or timezone.now() - job.finished_at > EVAL_GRACE:
        return False  # `suite` is None unless the job trained an agent model
    settings = getattr(project, "eval_settings", None)
    auto = settings.auto_eval_after_training if settings is not None else True  # the setting's default
    return job.evaluate_after or auto


@login_required
@require_POST
def job_cancel(request, slug, pk):
    project = project_for(request.user, slug, Role.ADMIN)
    job = get_object_or_404(TrainingJob, project=project, pk=pk)
    lifecycle.cancel(job)  # the live status card says "cancel requested" until the job stops
    return redirect("training-jobs:detail", slug=slug, pk=pk)


@login_required
@require_POST
def job_resume(request, slug, pk):
    project = project_for(request.user, slug, Role.ADMIN)
    job = get_object_or_404(TrainingJob, project=project, pk=pk)
    try:
        lifecycle.resume(job)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect("training-jobs:detail", slug=slug, pk=pk)
