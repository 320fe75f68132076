"""Training pages: the job list, the launch form, and the live job page."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from annotator.models import ModelVersion, Role
from annotator.policy import has_role, project_for
from jobs import lifecycle

from .finetune.params import DEFAULT_GUARD, JUDGE_GUARD, PRESETS
from .finetune.request import create_job
from .forms import JobChoices, as_pk, default_preset
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
    return render(
        request,
        template,
        {
            "project": project,
            "job": job,
            "checkpoints": job.checkpoints.all(),
            "is_admin": has_role(request.user, project, Role.ADMIN),
            "lineage": job.base_version.lineage(),
            "params": sorted(job.params.items()),
        },
    )


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
