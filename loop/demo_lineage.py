"""The demo's model lineage: demo-base registered with its folder, SFT and DPO snapshots of the reviewed
history, a held-out eval suite, and the jobs that train SFT then DPO and evaluate base, SFT and DPO in the
background once the worker runs.

seed_demo queues the SFT job and the base model's eval run: ordinary jobs, shown with their progress on the
Training and Evaluation pages. When that SFT job succeeds, `continue_lineage` (subscribed to
training.hooks in loop.apps) queues the DPO job on its result; the project's "evaluate after training"
setting queues the SFT and DPO eval runs (evaluation.runner.evaluate_after_training). The lineage is marked
on demo-base's metadata ("demo_lineage": the ids of its jobs and snapshots), so only that SFT job continues
it, never a user's own, and a second seed queues nothing.
"""

from pathlib import Path

from django.conf import settings
from django.db import transaction

from annotator.models import Conversation, ModelVersion, Project
from evaluation.models import EvalRun, EvalSettings, EvalSuite
from evaluation.runner import create_run
from evaluation.suites import create_suite
from training import demo_domain
from training.finetune.request import create_job
from training.models import DatasetSnapshot, TrainingJob
from training.snapshots.build import build_snapshot, create_snapshot
from training.snapshots.rows import prompt_hash

DEMO_BASE = "demo-base"
PRESET = "demo-tiny"
# the preset's DPO rate (5e-3) damages the SFT model on a set this small about half the time (the guard
# stops it and no DPO model is left to evaluate); 1e-3 trains the whole epoch with clean answers
DPO_OVERRIDES = {"learning_rate": 1e-3}
MARK = "demo_lineage"
SUITE_NAME = "demo held-out (seen phrasings)"
SUITE_CASES = 100
SUITE_SEED = 9000  # never the seeds of the demo conversations (seed + 1000) nor of the model's training
SNAPSHOTS = {
    "sft": {
        "kind": "sft",
        "filters": {"include_reasonable": True, "splits": ["train"]},
        "note": "demo: approved corrections and approved good answers",
    },
    "dpo": {
        "kind": "dpo",
        "filters": {"splits": ["train"]},
        "note": "demo: corrections over the bad answers, and approved comparisons",
    },
}


def model_folder() -> Path:
    return Path(settings.MODEL_DIR) / DEMO_BASE


def register_base(project: Project) -> ModelVersion | None:
    """demo-base with its folder (origin: base model) when the demo model is built. The import made a row
    for demo-base's responses without a folder; this gives it one (and a moved folder its new place)."""
    folder = model_folder()
    if not (folder / "config.json").is_file():
        return ModelVersion.objects.filter(project=project, name=DEMO_BASE).first()
    path = str(folder.resolve())
    version, created = ModelVersion.objects.get_or_create(
        project=project,
        name=DEMO_BASE,
        defaults={"path": path, "origin": ModelVersion.Origin.BASE, "notes": "offline demo base model"},
    )
    if not created and (version.path != path or version.origin != ModelVersion.Origin.BASE):
        version.path, version.origin = path, ModelVersion.Origin.BASE
        version.notes = version.notes or "offline demo base model"
        version.save(update_fields=["path", "origin", "notes"])
    return version


def ensure_suite(project: Project, user) -> EvalSuite:
    """The held-out demo suite, as the project's default (automatic runs and the promotion gate use it):
    synthetic cases the demo model never trained on, none with the prompt of a project conversation (so
    no snapshot of the project can leak into it). Made once; a later seed keeps it."""
    suite = EvalSuite.objects.filter(project=project, name=SUITE_NAME).order_by("-version").first()
    if suite is None:
        project_prompts = Conversation.objects.filter(project=project).values_list("messages", flat=True)
        taken = {prompt_hash(m) for m in project_prompts}
        cases = []
        for c in demo_domain.eval_prompts(2 * SUITE_CASES, seed=SUITE_SEED, split="seen"):
            digest = prompt_hash(c["messages"])
            if digest not in taken and len(cases) < SUITE_CASES:
                taken.add(digest)  # nor one prompt twice
                cases.append(c)
        records = [
            (
                i,
                {
                    "id": c["external_id"],
                    "messages": c["messages"],
                    "tools": c["tools"],
                    "expected": c["expected"],
                    "categories": [c["metadata"]["scenario"]] if c["metadata"].get("scenario") else [],
                    "turn_depth": c["metadata"].get("turn_depth"),
                    "metadata": c["metadata"],
                },
            )
            for i, c in enumerate(cases, 1)
        ]
        suite, _ = create_suite(
            project,
            SUITE_NAME,
            records,
            source=EvalSuite.Source.DEMO,
            source_detail={"seed": SUITE_SEED, "split": "seen", "without": "the project's prompts"},
            description="Synthetic sales-agent cases the demo model and the project's datasets never saw.",
            user=user,
        )
    cfg = EvalSettings.for_project(project)
    if cfg.default_suite_id is None:
        cfg.default_suite = suite
        cfg.save(update_fields=["default_suite", "updated_at"])
    return suite


def ensure_snapshots(project: Project, user) -> dict[str, DatasetSnapshot]:
    """An SFT and a DPO snapshot of the approved history, built now unless the project has one of that kind
    (its newest, ready or not: a second seed builds nothing)."""
    out = {}
    for stage, spec in SNAPSHOTS.items():
        snap = DatasetSnapshot.objects.filter(project=project, kind=spec["kind"]).order_by("-version").first()
        if snap is None:
            snap = create_snapshot(project, user, spec, start=False)
            build_snapshot(snap.pk)
            snap.refresh_from_db()
        out[stage] = snap
    return out


def queue_lineage(project: Project, user, base: ModelVersion, snapshots: dict, suite: EvalSuite) -> dict:
    """Queue the SFT job from demo-base and the base model's eval run, once (the mark says it was done).
    Returns their ids, or {"already": True}, or {"not_ready": [snapshot names]}."""
    with transaction.atomic():
        base = ModelVersion.objects.select_for_update().get(pk=base.pk)
        if (base.metadata or {}).get(MARK):
            return {"already": True}
        not_ready = [s.name for s in snapshots.values() if s.status != DatasetSnapshot.State.READY]
        if not_ready:
            return {"not_ready": not_ready}
        sft = create_job(
            project,
            user,
            stage=TrainingJob.Stage.SFT,
            base_version=base,
            train_snapshot=snapshots["sft"],
            preset=PRESET,
            evaluate_after=True,
            name=f"Demo lineage: SFT from {base.name} on {snapshots['sft'].name}",
        )
        run = create_run(
            project,
            suite,
            base,
            user=user,
            trigger=EvalRun.Trigger.MANUAL,
            note="demo lineage: the base model, before any fine-tuning",
        )
        base.metadata = {
            **(base.metadata or {}),
            MARK: {"sft_job": sft.pk, "dpo_snapshot": snapshots["dpo"].pk, "base_eval_run": run.pk},
        }
        base.save(update_fields=["metadata"])
    return {"sft_job": sft.pk, "base_eval_run": run.pk}


def continue_lineage(job, version) -> str | None:
    """Subscribed to training.hooks: when the demo lineage's SFT job has trained `version`, queue the DPO
    job on it (once). Any other job: nothing."""
    if getattr(job, "stage", None) != TrainingJob.Stage.SFT:  # a judge, a DPO job (or a stand-in in tests)
        return None
    with transaction.atomic():
        base = ModelVersion.objects.select_for_update().filter(pk=job.base_version_id).first()
        mark = ((base.metadata or {}).get(MARK) if base else None) or {}
        if mark.get("sft_job") != job.pk or mark.get("dpo_job"):
            return None
        # the mark is metadata an admin can write: only a snapshot of the job's own project
        snapshot = DatasetSnapshot.objects.filter(pk=mark.get("dpo_snapshot"), project=job.project_id).first()
        if snapshot is None:
            return "demo lineage: its DPO snapshot is gone; no DPO job"
        dpo = create_job(
            job.project,
            job.created_by,
            stage=TrainingJob.Stage.DPO,
            base_version=version,
            train_snapshot=snapshot,
            preset=PRESET,
            overrides=DPO_OVERRIDES,
            evaluate_after=True,
            name=f"Demo lineage: DPO from {version.name} on {snapshot.name}",
        )
        base.metadata = {**base.metadata, MARK: {**mark, "dpo_job": dpo.pk}}
        base.save(update_fields=["metadata"])
    return f"demo lineage: DPO job {dpo.pk} queued on {version.name}"
