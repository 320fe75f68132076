"""The whole data loop on the offline demo model, through the product's own code paths.

    python manage.py demo_loop [--contexts 600] [--suite-cases 200]

1. the demo base model answers demo contexts (its real outputs become badcases);
2. two scripted annotators label them in the real queue (strict tool-call check against the known
   right answer; the right answer as the correction), a lead approves;
3. an SFT snapshot (approved corrections + approved good responses) and an SFT job (LoRA);
4. a DPO snapshot (correction chosen over the bad response) and a DPO job on top of the SFT model;
5. evaluation runs of base, SFT and DPO on a held-out suite (seen and unseen phrasings).
Prints the figures as one JSON line and keeps them in benchmarks/results/demo_loop.json.
"""

import json
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from annotator import assignment
from annotator.importers import assistant_message_from_raw
from annotator.labelling import submit_label
from annotator.models import (
    Conversation,
    Label,
    Membership,
    ModelResponse,
    Project,
    Role,
    Status,
    Task,
    TaxonomyCategory,
    content_hash,
)
from annotator.review import apply_review
from annotator.serializers import normalise_assistant_message
from annotator.taxonomy import seed_default_taxonomy
from evaluation.metrics import score_case
from training import demo_domain
from training.demo_model import build_demo_model, generate, load
from training.models import ModelVersion, TrainingJob

# failure -> default taxonomy category
CATEGORY_FOR = {
    "missed_call": "Tool not called", "false_call": "Unneeded tool call", "wrong_name": "Wrong tool",
    "wrong_args": "Wrong arguments", "fabricated_tool_result": "Fabricated tool result",
    "malformed_call": "Malformed tool call", "too_short": "Too short", "end_repetition": "Repetition",
    "think_tags": "Think-tag or format defect", "template_leak": "Think-tag or format defect",
}


def judge(expected: dict, raw: str, tools: list) -> tuple[bool, list[str]]:
    """What a careful annotator decides: reasonable only if strictly right and free of defects."""
    s = score_case(expected, raw, tools)
    failures = [d for d, v in s["defects"].items() if v]
    if s["false_call"]:
        failures.append("false_call")
    if s["missed_call"]:
        failures.append("missed_call")
    if s["tool_name_accuracy"] == 0:
        failures.append("wrong_name")
    elif s["tool_args_accuracy"] == 0 and "malformed_call" not in failures:
        failures.append("wrong_args")
    ok = s["tool_call_accuracy"] == 1 and s["response_quality"] == 1
    return ok, sorted({CATEGORY_FOR[f] for f in failures if f in CATEGORY_FOR}) or ([] if ok else ["Hallucinated fact"])


class Command(BaseCommand):
    help = "Run the demo data loop end to end (label -> SFT -> DPO -> evaluate) and report the figures."

    def add_arguments(self, parser):
        parser.add_argument("--contexts", type=int, default=600)
        parser.add_argument("--suite-cases", type=int, default=200)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--project", default="demo-loop")
        parser.add_argument("--sft-epochs", type=float, default=3.0)
        parser.add_argument("--dpo-epochs", type=float, default=1.0)
        parser.add_argument("--model-dir", default=None, help="an already built base model folder to use as is")

    def say(self, msg):
        self.stdout.write(f"[{time.strftime('%H:%M:%S')}] {msg}")

    def handle(self, *args, **o):
        from evaluation.models import EvalRun
        from evaluation.runner import create_run, run_eval
        from evaluation.suites import create_suite
        from training.datasets import build_snapshot, create_snapshot
        from training.trainer import create_job, run_job

        t0 = time.monotonic()
        if o["model_dir"]:
            model_dir = Path(o["model_dir"])
            if not (model_dir / "config.json").is_file():
                raise CommandError(f"{model_dir} holds no model (no config.json)")
        else:
            model_dir = Path(settings.MODEL_DIR) / "demo-base"
            build_demo_model(str(model_dir), seed=o["seed"], log=self.say)
        User = get_user_model()
        users = {}
        for name in ("loop-annotator-1", "loop-annotator-2", "loop-lead"):
            users[name], _ = User.objects.get_or_create(username=name)
        project, _ = Project.objects.get_or_create(slug=o["project"], defaults={
            "name": "Demo loop", "tools": demo_domain.TOOLS, "overlap": 2,
            "guidelines": "Scripted by `manage.py demo_loop`: annotators check each response strictly."})
        seed_default_taxonomy(project)
        for name, role in (("loop-annotator-1", Role.ANNOTATOR), ("loop-annotator-2", Role.ANNOTATOR),
                           ("loop-lead", Role.LEAD)):
            Membership.objects.get_or_create(user=users[name], project=project, defaults={"role": role})
        base, _ = ModelVersion.objects.update_or_create(project=project, name="demo-base", defaults={
            "path": str(model_dir), "origin": ModelVersion.Origin.BASE, "notes": "offline demo base model"})
        if TrainingJob.objects.filter(project=project).exists():
            raise CommandError(f"Project {project.slug!r} already ran the loop; pass --project with a new slug.")

        # 1. the base model answers demo contexts
        cases = demo_domain.eval_prompts(o["contexts"], seed=o["seed"] + 500)
        self.say(f"generating {len(cases)} base-model responses")
        model, tok = load(str(model_dir))
        outputs = generate(model, tok, [c["messages"] for c in cases], demo_domain.TOOLS, max_new_tokens=96)
        with transaction.atomic():
            for c, raw in zip(cases, outputs, strict=True):
                conv, _ = Conversation.objects.get_or_create(project=project, external_id=c["external_id"], defaults={
                    "messages": c["messages"], "tools": c["tools"], "content_hash": content_hash(c["messages"], c["tools"]),
                    "metadata": {**c["metadata"], "expected": c["expected"]}})
                ModelResponse.objects.get_or_create(conversation=conv, model_version=base,
                                                    context_length=len(c["messages"]), response_hash=content_hash(raw),
                                                    defaults={"raw_text": raw,
                                                              "message": assistant_message_from_raw(raw, c["tools"])})
        assignment.sync_tasks(project)

        # 2. scripted annotators in the real queue, then lead review
        cats = dict(TaxonomyCategory.objects.filter(project=project).values_list("name", "pk"))
        labelled = 0
        for name in ("loop-annotator-1", "loop-annotator-2"):
            while (slot := assignment.next_task(project, users[name], Task.Kind.LABEL)) is not None:
                task = Task.objects.select_related("response__conversation").get(pk=slot.task_id)
                conv = task.response.conversation
                expected = conv.metadata["expected"]
                ok, categories = judge(expected, task.response.raw_text, conv.tools)
                data = {"verdict": "reasonable" if ok else "unreasonable",
                        "categories": [cats[c] for c in categories if c in cats]}
                if not ok:
                    fixed = normalise_assistant_message(expected)
                    data["correction_content"] = fixed.get("content") or ""
                    data["correction_tool_calls"] = json.dumps(
                        [{"name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"])}
                         for c in fixed.get("tool_calls", [])])
                submit_label(task, users[name], data)
                labelled += 1
        for label in Label.objects.filter(project=project, status=Status.SUBMITTED):
            apply_review(users["loop-lead"], label, "approve")
        bad = Label.objects.filter(project=project, verdict="unreasonable").count()
        self.say(f"{labelled} labels, {bad} unreasonable, all approved")

        # 3. snapshots and jobs
        def snapshot(kind, filters):
            snap = create_snapshot(project, users["loop-lead"], {"kind": kind, "filters": filters}, start=False)
            snap = build_snapshot(snap.pk) or snap
            snap.refresh_from_db()
            if snap.status != "ready":
                raise CommandError(f"{kind} snapshot failed: {snap.message}")
            self.say(f"{snap.name}: {snap.row_count} rows")
            return snap

        sft_snap = snapshot("sft", {"include_reasonable": True, "splits": ["train"]})
        sft_job = create_job(project, None, stage="sft", base_version=base, train_snapshot=sft_snap,
                             preset="demo-tiny", overrides={"num_train_epochs": o["sft_epochs"]}, start=False)
        sft_job = run_job(sft_job.pk)
        self.say(f"SFT job {sft_job.pk}: {sft_job.status} {sft_job.message} {sft_job.timings}")
        if sft_job.result_version is None:
            raise CommandError("SFT produced no model")
        dpo_snap = snapshot("dpo", {"splits": ["train"]})
        dpo_job = create_job(project, None, stage="dpo", base_version=sft_job.result_version,
                             train_snapshot=dpo_snap, preset="demo-tiny",
                             overrides={"num_train_epochs": o["dpo_epochs"]}, start=False)
        dpo_job = run_job(dpo_job.pk)
        self.say(f"DPO job {dpo_job.pk}: {dpo_job.status} {dpo_job.message} {dpo_job.timings}")

        # 4. held-out evaluation: seen phrasings and phrasings never used in training
        figures = {}
        for split in ("seen", "unseen"):
            n = o["suite_cases"] if split == "seen" else max(50, o["suite_cases"] // 2)
            records = [(i + 1, {"id": c["external_id"], "messages": c["messages"], "tools": c["tools"],
                                "expected": c["expected"], "turn_depth": c["metadata"]["turn_depth"]})
                       for i, c in enumerate(demo_domain.eval_prompts(n, seed=o["seed"] + 9000, split=split))]
            suite, _ = create_suite(project, f"demo held-out ({split} phrasings)", records, source="gold")
            for label, version in (("base", base), ("sft", sft_job.result_version),
                                   ("dpo", dpo_job.result_version)):
                if version is None:
                    continue
                run = create_run(project, suite, version, start=False, note="demo_loop")
                run = run_eval(run.pk) or EvalRun.objects.get(pk=run.pk)
                s = run.summary
                figures[f"{split}_{label}"] = {
                    k: (s.get(k) or {}).get("value") for k in ("tool_call_accuracy", "tool_name_accuracy",
                                                                "tool_args_accuracy", "response_quality")}
                figures[f"{split}_{label}"]["n"] = suite.case_count
                self.say(f"{split} {label}: {figures[f'{split}_{label}']}")
        result = {"bench": "demo_loop", "contexts": len(cases), "labels": labelled, "unreasonable": bad,
                  "sft_rows": sft_snap.row_count, "dpo_rows": dpo_snap.row_count,
                  "sft_job": {"status": sft_job.status, **sft_job.timings},
                  "dpo_job": {"status": dpo_job.status, **dpo_job.timings},
                  "figures": figures, "minutes": round((time.monotonic() - t0) / 60, 1)}
        from benchmarks._common import report

        report("demo_loop", {k: v for k, v in result.items() if k != "bench"})
