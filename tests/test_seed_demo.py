"""`manage.py seed_demo`: the demo opens full — demo-base with its folder, three weeks of scripted history
(labels, reviews, gold decisions, comparisons), SFT and DPO snapshots, and the demo lineage queued for the
worker; room left for the newcomer flows; a second run adds nothing."""

import json
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db.models import Count, Q
from django.utils import timezone

from annotator import assignment
from annotator.models import (
    Adjudication,
    Conversation,
    Label,
    ModelResponse,
    ModelVersion,
    Preference,
    Project,
    Review,
    Status,
    Task,
)
from annotator.models.rollup_days import AnnotatorDay
from evaluation.models import EvalRun, EvalSettings, EvalSuite
from loop import demo_history, demo_lineage, demo_suites
from training import hooks
from training.finetune.params import default_params
from training.models import DatasetSnapshot, TrainingJob
from training.snapshots.rows import prompt_hash

CONVERSATIONS = 60


@pytest.fixture(scope="module")
def built_model_dir(tmp_path_factory):
    """A MODEL_DIR holding a (very) small demo-base build."""
    from training.demo_model import build_demo_model

    model_dir = tmp_path_factory.mktemp("models")
    build_demo_model(model_dir / "demo-base", seed=0, steps=2, size="test", log=lambda *_: None)
    return model_dir


def seed(**opts):
    call_command(
        "seed_demo", conversations=CONVERSATIONS, scripted=True, stdout=open("/dev/null", "w"), **opts
    )


def counts(project) -> dict:
    return {
        "labels": Label.objects.filter(project=project).count(),
        "preferences": Preference.objects.count(),
        "reviews": Review.objects.count(),
        "gold": Adjudication.objects.count(),
        "snapshots": DatasetSnapshot.objects.count(),
        "suites": EvalSuite.objects.count(),
        "jobs": TrainingJob.objects.count(),
        "runs": EvalRun.objects.count(),
        "versions": ModelVersion.objects.count(),
    }


def open_label_disagreements(project) -> int:
    """Items whose counted labels disagree on the verdict and that have no gold decision (the lead's list)."""
    rows = (
        Label.objects.filter(project=project, status__in=[Status.SUBMITTED, Status.APPROVED])
        .values("response_id")
        .annotate(
            good=Count("id", filter=Q(verdict=Label.Verdict.REASONABLE)),
            bad=Count("id", filter=Q(verdict=Label.Verdict.UNREASONABLE)),
        )
        .filter(good__gt=0, bad__gt=0)
    )
    decided = set(
        Adjudication.objects.filter(task__kind=Task.Kind.LABEL).values_list("task__response_id", flat=True)
    )
    return sum(1 for r in rows if r["response_id"] not in decided)


@pytest.mark.django_db
def test_demo_opens_full_and_a_second_seed_adds_nothing(settings, built_model_dir):
    settings.MODEL_DIR = built_model_dir
    seed()
    project = Project.objects.get(slug="sales-agent")
    User = get_user_model()
    annotator, lead = User.objects.get(username="annotator"), User.objects.get(username="lead")

    # demo-base is a base model with its folder: training and local evaluation can load it
    base = ModelVersion.objects.get(project=project, name="demo-base")
    assert base.origin == ModelVersion.Origin.BASE
    assert base.path == str((built_model_dir / "demo-base").resolve())

    # a second response on a context always says something else (no comparison of a text with itself,
    # no two items teaching the same dataset row)
    responses = ModelResponse.objects.filter(conversation__project=project).order_by()
    pairs = responses.values("conversation_id", "raw_text")
    assert pairs.annotate(n=Count("id")).filter(n__gt=1).count() == 0
    assert pairs.values("conversation_id").annotate(n=Count("id")).filter(n=2).count() >= CONVERSATIONS // 4

    # the scripted annotators' three weeks, through the queue: overlap 2, every status, each their own pace
    scripted = Label.objects.filter(project=project, annotator__username__in=demo_history.SCRIPTED_NAMES)
    assert scripted.count() >= CONVERSATIONS // 2
    assert set(scripted.values_list("status", flat=True)) >= {Status.APPROVED, Status.SUBMITTED}
    assert {u for u in scripted.values_list("annotator__username", flat=True)} == set(
        demo_history.SCRIPTED_NAMES
    )
    now = timezone.now()
    times = sorted(scripted.values_list("submitted_at", flat=True))
    assert times[0] < now - timedelta(days=10) and times[-1] < now
    assert sum(t.weekday() < 5 for t in times) >= 0.9 * len(times), "scripted annotators work on weekdays"
    assert Task.objects.filter(project=project, kind=Task.Kind.LABEL, completed=2).exists()
    speeds = {
        name: sum(scripted.filter(annotator__username=name).values_list("time_spent_ms", flat=True))
        / scripted.filter(annotator__username=name).count()
        for name in ("maria", "tomas")
    }
    assert speeds["maria"] < speeds["tomas"]
    for label in scripted.select_related("correction")[:50]:
        assert label.created_at <= label.submitted_at
        if label.verdict == Label.Verdict.UNREASONABLE:
            assert label.categories.exists()
    # the lead: approvals, rejections with a comment, after the work they review; gold decisions
    reviews = Review.objects.filter(reviewer=lead).select_related("label", "preference")
    assert reviews.filter(decision="approve").count() > reviews.filter(decision="reject").count() > 0
    assert all(r.comment for r in reviews.filter(decision="reject"))
    for r in reviews:
        assert r.created_at >= (r.label or r.preference).created_at
    assert Adjudication.objects.filter(task__project=project, lead=lead).exists()
    # comparisons on the contexts with two responses, with reasons
    prefs = Preference.objects.filter(response_a__conversation__project=project)
    assert prefs.filter(status=Status.APPROVED).exists()
    assert all(p.reason for p in prefs)
    # dashboards read the roll-ups: rebuilt from the back-dated rows
    maria_days = AnnotatorDay.objects.filter(project=project, annotator=User.objects.get(username="maria").pk)
    assert maria_days.values("day").distinct().count() >= 3

    # room for the newcomer flows: a queue for `annotator`, their own submitted labels to reopen, a review
    # stream and open disagreements for the lead
    assert assignment.queue_size_by_kind(project, annotator, Task.Kind.LABEL) >= 10
    assert assignment.queue_size_by_kind(project, annotator, Task.Kind.COMPARE) >= 1
    mine = Label.objects.filter(project=project, annotator=annotator)
    assert mine.count() == demo_history.NEWCOMER_LABELS
    assert all(lab.status == Status.SUBMITTED and not lab.reviews.exists() for lab in mine)
    assert all(lab.submitted_at > now - timedelta(hours=3) for lab in mine)
    stream = Label.objects.filter(project=project, status=Status.SUBMITTED).exclude(annotator=annotator)
    assert stream.count() >= 3
    assert open_label_disagreements(project) >= 1
    assert not Label.objects.filter(annotator__username="annotator2").exists()

    # datasets, the held-out suite as the default, and the lineage queued: SFT from demo-base, base eval run
    snaps = {s.kind: s for s in DatasetSnapshot.objects.filter(project=project)}
    assert {k: s.status for k, s in snaps.items()} == {"sft": "ready", "dpo": "ready"}
    assert snaps["sft"].row_count > 0 and snaps["dpo"].row_count > 0
    suite = EvalSettings.for_project(project).default_suite
    assert suite.name == demo_suites.SUITES["unseen"]
    assert suite.case_count == demo_lineage.SUITE_CASES["unseen"]
    others = {s.name: s.case_count for s in demo_lineage.other_suites(project)}
    assert others == {
        demo_suites.SUITES[k]: demo_lineage.SUITE_CASES[k] for k in ("seen", "multiturn", "knowledge")
    }
    project_prompts = {
        prompt_hash(m)
        for m in Conversation.objects.filter(project=project).values_list("messages", flat=True)
    }
    suite_prompts = {prompt_hash(m) for m in suite.cases.values_list("messages", flat=True)}
    assert len(suite_prompts) == suite.case_count and not suite_prompts & project_prompts  # held out
    job = TrainingJob.objects.get(project=project)
    assert (job.stage, job.status, job.base_version, job.train_snapshot) == (
        "sft",
        "queued",
        base,
        snaps["sft"],
    )
    assert job.params == default_params("sft", demo_lineage.PRESET)
    assert job.evaluate_after
    runs = EvalRun.objects.filter(project=project).order_by("pk")
    assert {r.suite.name for r in runs} == set(demo_suites.SUITES.values())  # the base on every demo suite
    run = runs[0]
    assert (run.model_version, run.suite, run.status, run.source) == (base, suite, "queued", "local")
    base.refresh_from_db()
    assert base.metadata[demo_lineage.MARK] == {
        "sft_job": job.pk,
        "dpo_snapshot": snaps["dpo"].pk,
        "base_eval_run": run.pk,
    }

    before = counts(project)
    seed()
    assert counts(project) == before


@pytest.mark.django_db
def test_the_lineage_sft_job_queues_its_dpo_job_once(settings, built_model_dir, tmp_path):
    settings.MODEL_DIR = built_model_dir
    seed()
    project = Project.objects.get(slug="sales-agent")
    base = ModelVersion.objects.get(project=project, name="demo-base")
    sft_job = TrainingJob.objects.get(project=project)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    sft_version = ModelVersion.objects.create(
        project=project,
        name=f"demo-base+sft-job{sft_job.pk}",
        parent=base,
        adapter_path=str(adapter),
        origin=ModelVersion.Origin.SFT,
    )
    # a user's own SFT job from demo-base continues nothing
    user_job = TrainingJob.objects.create(
        project=project,
        name="mine",
        stage="sft",
        base_version=base,
        train_snapshot=sft_job.train_snapshot,
        params=sft_job.params,
    )
    assert demo_lineage.continue_lineage(user_job, sft_version) is None

    lines = hooks.version_trained(sft_job, sft_version)  # what the worker calls when the job succeeds
    dpo = TrainingJob.objects.get(project=project, stage="dpo")
    assert any(
        line.startswith(f"demo lineage: DPO job {dpo.pk} queued on {sft_version.name}") for line in lines
    )
    assert any("evaluation run" in line for line in lines)  # evaluate after training: the SFT model
    assert (dpo.base_version, dpo.train_snapshot.kind, dpo.status) == (sft_version, "dpo", "queued")
    assert dpo.params == {**default_params("dpo", demo_lineage.PRESET), **demo_lineage.DPO_OVERRIDES}
    # the default suite (evaluate after training) and the three other demo suites
    assert EvalRun.objects.filter(model_version=sft_version).count() == 4
    base.refresh_from_db()
    assert base.metadata[demo_lineage.MARK]["dpo_job"] == dpo.pk

    # the DPO model: on the other demo suites once (the default one is its evaluate-after run)
    dpo_version = ModelVersion.objects.create(
        project=project, name="demo-dpo", parent=sft_version, adapter_path=str(adapter), origin="dpo"
    )
    line = demo_lineage.continue_lineage(dpo, dpo_version)
    assert line and EvalRun.objects.filter(model_version=dpo_version).count() == 3
    assert demo_lineage.continue_lineage(dpo, dpo_version) is None

    assert demo_lineage.continue_lineage(sft_job, sft_version) is None  # once
    assert TrainingJob.objects.filter(stage="dpo").count() == 1


@pytest.mark.django_db
def test_without_the_model_the_history_is_seeded_and_a_later_build_gets_its_folder(
    settings, tmp_path, built_model_dir
):
    settings.MODEL_DIR = tmp_path / "no-models"
    seed()
    project = Project.objects.get(slug="sales-agent")
    assert demo_history.has_history(project)
    assert not TrainingJob.objects.exists() and not EvalRun.objects.exists()
    # a demo-base row the import made without a folder (as older seeds left it)
    ModelVersion.objects.create(project=project, name="demo-base", origin=ModelVersion.Origin.IMPORTED)
    labels = Label.objects.count()

    settings.MODEL_DIR = built_model_dir  # the model is built now: the next seed finishes the job
    seed()
    base = ModelVersion.objects.get(project=project, name="demo-base")
    assert (base.origin, base.path) == ("base", str((built_model_dir / "demo-base").resolve()))
    assert Label.objects.count() == labels
    assert TrainingJob.objects.filter(base_version=base, stage="sft").count() == 1
