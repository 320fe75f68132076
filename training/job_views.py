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
    project = project_for(request.user, slug, Role.ADMIN)
    versions = ModelVersion.objects.filter(project=project).order_by("name")
    snapshots = DatasetSnapshot.objects.filter(project=project, status=DatasetSnapshot.State.READY).order_by(
        "-id"
    )
    errors, form = {}, request.POST if request.method == "POST" else request.GET  # ?stage=judge preselects
    if request.method == "POST":
        stage = form.get("stage", "sft")
        try:
            job = create_job(
                project,
                request.user,
                stage=stage,
                base_version=versions.filter(pk=form.get("base_version") or 0).first()
                or _missing("base_version"),
                train_snapshot=snapshots.filter(pk=form.get("train_snapshot") or 0).first()
                or _missing("train_snapshot"),
                eval_snapshot=snapshots.filter(pk=form.get("eval_snapshot") or 0).first(),
                preset=form.get("preset", "lora-r8"),
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
        else:
            messages.success(request, f"Job {job.pk} queued on the training queue.")
            return redirect("training-jobs:detail", slug=slug, pk=job.pk)
    return render(
        request,
        "training/job_form.html",
        {
            "project": project,
            "versions": versions,
            "snapshots": snapshots,
            "errors": errors,
            "form": form,
            "presets": PRESETS,
            "guard": DEFAULT_GUARD,
            "judge_guard": JUDGE_GUARD,
            "override_fields": OVERRIDE_FIELDS,
        },
        status=422 if errors else 200,
    )


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
    template = (
        "training/_job_status.html" if request.headers.get("HX-Request") else "training/job_detail.html"
    )
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
    lifecycle.cancel(job)
    messages.info(request, "Cancel requested: the job stops at its next step and keeps its last checkpoint.")
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
    else:
        messages.success(request, "Queued again: it continues from its last checkpoint.")
    return redirect("training-jobs:detail", slug=slug, pk=pk)
