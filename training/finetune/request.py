"""A job request: why a job cannot start yet (readiness), and validating and creating one."""

from pathlib import Path

from django.core.exceptions import ValidationError
from django.db import transaction

from annotator.model_lineage import check_folders
from annotator.models import ModelVersion
from jobs import lifecycle

from ..models import DatasetSnapshot, TrainingJob
from .params import DEFAULT_GUARD, JUDGE_GUARD, STAGE_DATA, clean_params


def readiness_problems(job: TrainingJob) -> list[str]:
    """Why this job cannot start, in words an admin can act on (empty when it can)."""
    problems = check_folders(job.base_version)
    snap = job.train_snapshot
    if snap.status != DatasetSnapshot.State.READY:
        problems.append(f"The training snapshot {snap.name} is {snap.status}, not ready.")
    expected, layouts = STAGE_DATA.get(job.stage, STAGE_DATA["sft"])
    if snap.kind != expected:
        what = "judge" if job.stage == TrainingJob.Stage.JUDGE else job.stage.upper()
        problems.append(
            f"A {what} job needs a {expected} snapshot (pairs of preferred and rejected answers)"
            if job.stage == TrainingJob.Stage.JUDGE
            else f"A {what} job needs a {expected} snapshot; {snap.name} is {snap.kind}."
        )
    if snap.layout not in layouts:
        problems.append(
            f"Snapshot layout {snap.layout!r} is not trainable here; use {' or '.join(sorted(layouts))}."
        )
    if snap.status == DatasetSnapshot.State.READY and not (snap.file and Path(snap.file.path).is_file()):
        problems.append(f"The file of snapshot {snap.name} is missing.")
    if job.eval_snapshot_id and job.eval_snapshot.status != DatasetSnapshot.State.READY:
        problems.append(f"The evaluation snapshot {job.eval_snapshot.name} is not ready.")
    if job.stage == TrainingJob.Stage.JUDGE and job.eval_snapshot_id and job.eval_snapshot.kind != "dpo":
        problems.append(
            f"A judge is evaluated on held-out preference pairs: {job.eval_snapshot.name} is "
            f"{job.eval_snapshot.kind}, choose a DPO snapshot of eval/holdout items or none "
            f"(then {int(100 * 0.2)}% of the pairs are held out)."
        )
    if snap.project_id != job.project_id or job.base_version.project_id != job.project_id:
        problems.append("The base model and the snapshot must belong to this project.")
    problems.extend(order_problems(job.stage, job.base_version, job.allow_raw_base))
    return problems


def order_problems(stage: str, base: ModelVersion, allow_raw_base: bool) -> list[str]:
    """SFT first, DPO second: DPO cannot repair what SFT broke, and does little on an untuned base."""
    if stage != TrainingJob.Stage.DPO or allow_raw_base:
        return []
    if not any(v.origin == ModelVersion.Origin.SFT for v in base.lineage()):
        return [
            f"{base.name} has no SFT stage in its lineage. Run SFT first (DPO aligns behaviour but cannot "
            "repair what SFT did not teach), or tick 'allow a raw base' to go ahead anyway."
        ]
    return []


def create_job(
    project,
    user,
    *,
    stage,
    base_version,
    train_snapshot,
    eval_snapshot=None,
    preset="lora-r8",
    overrides=None,
    allow_raw_base=False,
    merge_weights=False,
    evaluate_after=False,
    guard=None,
    name="",
    start=True,
) -> TrainingJob:
    """Validate and create a job (pages and API both call this). Raises ValidationError with fields."""
    params, errors = clean_params(stage, preset, overrides or {})
    if stage not in TrainingJob.Stage.values:
        errors["stage"] = "sft, dpo or judge"
    if guard is not None and not isinstance(guard, dict):
        errors["guard"] = 'must be an object such as {"max_perplexity_ratio": 1.5}'
        guard = None
    guard_cfg = {**(JUDGE_GUARD if stage == TrainingJob.Stage.JUDGE else DEFAULT_GUARD), **(guard or {})}
    for key in ("max_perplexity_ratio", "max_quality_drop"):
        try:
            guard_cfg[key] = float(guard_cfg[key])
        except (TypeError, ValueError):
            errors[f"guard.{key}"] = "must be a number"
    if not errors:
        job = TrainingJob(
            project=project,
            stage=stage,
            base_version=base_version,
            train_snapshot=train_snapshot,
            eval_snapshot=eval_snapshot,
            allow_raw_base=allow_raw_base,
            params=params,
            guard=guard_cfg,
            merge_weights=merge_weights,
            evaluate_after=evaluate_after,
            created_by=user,
            name=name or f"{stage.upper()} on {train_snapshot.name} from {base_version.name}",
        )
        problems = readiness_problems(job)
        if problems:
            errors["__all__"] = problems
    if errors:
        raise ValidationError({k: v if isinstance(v, list) else [v] for k, v in errors.items()})
    with transaction.atomic():
        job.save()
        if start:
            lifecycle.enqueue(job)
    return job
