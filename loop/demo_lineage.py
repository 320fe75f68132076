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
from loop import demo_suites
from training.finetune.request import create_job
from training.models import DatasetSnapshot, TrainingJob
from training.snapshots.build import build_snapshot, create_snapshot
from training.snapshots.rows import prompt_hash

DEMO_BASE = "demo-base"
PRESET = "demo-tiny"
# the demo lineage trains with the preset as it is (the same recipe as `make demo-loop`)
DPO_OVERRIDES: dict = {}
MARK = "demo_lineage"
SUITE_CASES = {"unseen": 100, "seen": 100, "multiturn": 90, "knowledge": 40}
SUITE_SEED = 9000  # never the seeds of the demo conversations (seed + 1000) nor of the model's training
SNAPSHOTS = {
    "sft": {
        "kind": "sft",
        "filters": {"include_reasonable": True, "splits": ["train"], "routing": "taxonomy"},
        "note": "demo: knowledge corrections (routed to SFT by their category) and approved good answers",
    },
    "dpo": {
        "kind": "dpo",
        "filters": {"splits": ["train"], "routing": "taxonomy"},
        "note": "demo: tool-behaviour corrections over the bad answers (routed to DPO), approved comparisons",
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


def ensure_suites(project: Project, user) -> dict[str, EvalSuite]:
    """The held-out demo suites (loop.demo_suites: unseen and seen phrasings, multi-turn dialogues, policy
    knowledge), the unseen one as the project's default (automatic runs and the promotion gate use it):
    synthetic cases the demo model never trained on, none with the prompt of a project conversation (so
    no snapshot of the project can leak into them). Made once; a later seed keeps them."""
    suites = {}
    taken = None
    for kind, n in SUITE_CASES.items():
        name = demo_suites.SUITES[kind]
        suite = EvalSuite.objects.filter(project=project, name=name).order_by("-version").first()
        if suite is None:
            if taken is None:
                project_prompts = Conversation.objects.filter(project=project).values_list(
                    "messages", flat=True
                )
                taken = {prompt_hash(m) for m in project_prompts}
            cases = []
            for c in demo_suites.suite_cases(kind, 2 * n, SUITE_SEED):
                digest = prompt_hash(c["messages"])
                if digest not in taken and len(cases) < n:
                    taken.add(digest)  # nor one prompt twice
                    cases.append(c)
            suite, _ = create_suite(
                project,
                name,
                demo_suites.records(cases),
                source=EvalSuite.Source.DEMO,
                source_detail={"seed": SUITE_SEED, "kind": kind, "without": "the project's prompts"},
                description="Synthetic sales-agent cases the demo model and the project's data never saw.",
                user=user,
            )
        suites[kind] = suite
    cfg = EvalSettings.for_project(project)
    if cfg.default_suite_id is None:
        cfg.default_suite = suites["unseen"]
        cfg.save(update_fields=["default_suite", "updated_at"])
    return suites


def other_suites(project: Project) -> list[EvalSuite]:
    """The demo suites beside the default one (newest version of each)."""
    default_id = EvalSettings.for_project(project).default_suite_id
    out = []
    for name in demo_suites.SUITES.values():
        suite = EvalSuite.objects.filter(project=project, name=name).order_by("-version").first()
        if suite is not None and suite.pk != default_id:
            out.append(suite)
    return out


def _evaluate_on_the_other_suites(version, user, note) -> list[int]:
    return [
        create_run(version.project, s, version, user=user, trigger=EvalRun.Trigger.TRAINING, note=note).pk
        for s in other_suites(version.project)
    ]


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


def queue_lineage(project: Project, user, base: ModelVersion, snapshots: dict, suites: dict) -> dict:
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
        runs = [
            create_run(
                project,
                suite,
                base,
                user=user,
                trigger=EvalRun.Trigger.MANUAL,
                note="demo lineage: the base model, before any fine-tuning",
            )
            for suite in suites.values()
        ]
        run = runs[0]
        base.metadata = {
            **(base.metadata or {}),
            MARK: {"sft_job": sft.pk, "dpo_snapshot": snapshots["dpo"].pk, "base_eval_run": run.pk},
        }
        base.save(update_fields=["metadata"])
    return {"sft_job": sft.pk, "base_eval_run": run.pk}


def continue_lineage(job, version) -> str | None:
    """Subscribed to training.hooks: when the demo lineage's SFT job has trained `version`, queue the DPO
    job on it (once) and its runs on the demo suites beside the default one (the project's "evaluate after
    training" runs the default); when its DPO job has, those runs for the DPO model. Any other job:
    nothing."""
    stage = getattr(job, "stage", None)
    if stage == TrainingJob.Stage.DPO:
        return _after_dpo(job, version)
    if stage != TrainingJob.Stage.SFT:  # a judge (or a stand-in in tests)
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
        runs = _evaluate_on_the_other_suites(version, job.created_by, "demo lineage: the SFT model")
        base.metadata = {**base.metadata, MARK: {**mark, "dpo_job": dpo.pk}}
        base.save(update_fields=["metadata"])
    return f"demo lineage: DPO job {dpo.pk} queued on {version.name}; eval runs {', '.join(map(str, runs))}"


def _after_dpo(job, version) -> str | None:
    """The lineage's DPO model on the demo suites beside the default one (once: the mark records it)."""
    with transaction.atomic():
        sft = ModelVersion.objects.filter(pk=job.base_version_id).values_list("parent_id", flat=True).first()
        base = ModelVersion.objects.select_for_update().filter(pk=sft).first() if sft else None
        mark = ((base.metadata or {}).get(MARK) if base else None) or {}
        if mark.get("dpo_job") != job.pk or mark.get("dpo_runs"):
            return None
        runs = _evaluate_on_the_other_suites(version, job.created_by, "demo lineage: the DPO model")
        base.metadata = {**base.metadata, MARK: {**mark, "dpo_runs": runs}}
        base.save(update_fields=["metadata"])
    return f"demo lineage: eval runs {', '.join(map(str, runs))} of {version.name} on the other demo suites"
