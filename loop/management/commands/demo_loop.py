"""The whole data loop on the offline demo model, through the product's own code paths.

    python manage.py demo_loop [--contexts 600] [--suite-cases 200]

1. the demo base model answers demo contexts (its real outputs become badcases);
2. two scripted annotators label them in the real queue (strict tool-call check and the new policy's facts
   against the known right answer; the right answer as the correction), a lead approves;
3. snapshots routed by the taxonomy's fixes: SFT gets the knowledge corrections (outdated policy) and the
   approved good responses, DPO the tool-behaviour corrections (chosen = correction, rejected = the base's
   output); an SFT job (LoRA) on the base, a DPO job on the SFT model;
4. the SFT model answers the same contexts; two scripted annotators (each wrong on ~10% of pairs) compare
   its answer with the base model's in the real comparison queue; a pairwise judge is trained on those
   preferences and evaluated on held-out pairs next to the annotators' agreement;
5. four held-out suites, checked disjoint from everything trained on: seen phrasings, unseen phrasings
   (held-out combinations of phrase parts), whole unseen dialogues turn by turn, and policy knowledge;
6. online DPO from the DPO model: its own samples ranked by the strict checker, a DPO snapshot and job
   per round, an evaluation run and the gate after each (stops at the first failed gate);
7. evaluation runs of base, SFT, DPO and online DPO on every suite.
Prints the figures as one JSON line and keeps them in benchmarks/results/demo_loop.json.
"""

import argparse
import hashlib
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from annotator import assignment
from annotator.importers import assistant_message_from_raw
from annotator.labelling import submit_label, submit_preference
from annotator.model_lineage import model_paths
from annotator.models import (
    Conversation,
    Label,
    Membership,
    ModelResponse,
    ModelVersion,
    Preference,
    Project,
    Role,
    Status,
    Task,
    TaxonomyCategory,
    content_hash,
)
from annotator.review import apply_review
from annotator.taxonomy import seed_default_taxonomy
from evaluation.models import EvalRun
from evaluation.promotion import latest_run
from evaluation.runner import create_run, run_eval
from evaluation.suites import create_suite
from inference.generation import generate as generate_batched
from inference.generation import threads_for
from inference.loading import load_model
from loop import demo_suites, online
from loop.demo_history import correction_fields, human_score, judge
from training import demo_domain
from training.demo_model import SIZES, build_demo_model, generate
from training.finetune.request import create_job
from training.finetune.run import run_job
from training.judge.report import human_agreement
from training.judge.suggestions import suggest
from training.models import JudgeEvaluation, TrainingJob
from training.snapshots.build import build_snapshot, create_snapshot

# Snapshot requests follow the taxonomy's fix routes (knowledge -> SFT, tool behaviour -> DPO); said
# explicitly, though it is the default.
ROUTED = {"routing": "taxonomy"}
HEADLINE = ("tool_call_accuracy", "tool_name_accuracy", "tool_args_accuracy", "response_quality")


def _targets(f: dict) -> dict:
    """The issue's targets on the demo, each with its measured gap (points of 0-1 rates) and whether it
    holds."""

    def v(key, metric="tool_call_accuracy"):
        return (f.get(key) or {}).get(metric)

    checks = {
        "unseen: DPO >= base + 0.25": (v("unseen_dpo"), v("unseen_base"), 0.25),
        "unseen: DPO >= SFT + 0.10": (v("unseen_dpo"), v("unseen_sft"), 0.10),
        "knowledge: SFT >= base + 0.40": (
            v("knowledge_sft", "knowledge_accuracy"),
            v("knowledge_base", "knowledge_accuracy"),
            0.40,
        ),
        "unseen: SFT within 0.03 of base": (v("unseen_sft"), v("unseen_base"), None),
        "unseen response_quality: DPO >= base - 0.02": (
            v("unseen_dpo", "response_quality"),
            v("unseen_base", "response_quality"),
            -0.02,
        ),
        "multi-turn: DPO >= base - 0.02": (v("multiturn_dpo"), v("multiturn_base"), -0.02),
        "multi-turn response_quality: DPO >= base - 0.02": (
            v("multiturn_dpo", "response_quality"),
            v("multiturn_base", "response_quality"),
            -0.02,
        ),
        "unseen: online round >= DPO + 0.03": (v("unseen_online"), v("unseen_dpo"), 0.03),
    }
    out = {}
    for name, (a, b, need) in checks.items():
        if a is None or b is None:
            out[name] = {"gap": None, "met": None}
            continue
        gap = round(a - b, 4)
        out[name] = {"gap": gap, "met": abs(gap) <= 0.03 if need is None else gap >= need - 1e-9}
    return out


def _last_round_model(online_run):
    if online_run is None:
        return None
    last = online_run.round_set.select_related("job__result_version").order_by("-number").first()
    return last.job.result_version if last and last.job else None


def _by_context(run) -> dict:
    """tool_call_accuracy by the case's context: a failure context of the base, a clean request, a reply."""
    groups = (run.summary or {}).get("by_category") or {}
    return {
        k.removeprefix("context: "): {"n": g["n"], "acc": g["tool_call_accuracy"]["value"]}
        for k, g in sorted(groups.items())
        if k.startswith("context: ")
    }


class Command(BaseCommand):
    help = "Run the demo data loop end to end (label -> SFT -> DPO -> evaluate) and report the figures."

    def add_arguments(self, parser):
        parser.add_argument("--contexts", type=int, default=600)
        parser.add_argument("--suite-cases", type=int, default=200)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--project", default="demo-loop")
        parser.add_argument("--sft-epochs", type=float, default=3.0)
        parser.add_argument("--dpo-epochs", type=float, default=1.0)
        parser.add_argument("--dpo-lr", type=float, default=None, help="default: the demo-tiny preset's")
        parser.add_argument("--dpo-beta", type=float, default=None, help="default: the demo-tiny preset's")
        parser.add_argument(
            "--model-dir", default=None, help="an already built base model folder to use as is"
        )
        parser.add_argument(
            "--online-rounds", type=int, default=1, help="online DPO rounds after DPO (0: none)"
        )
        parser.add_argument("--samples", type=int, default=4, help="samples per prompt in each online round")
        parser.add_argument("--online-lr", type=float, default=1e-3)
        parser.add_argument("--online-epochs", type=float, default=2.0)
        parser.add_argument(
            "--judge",
            action=argparse.BooleanOptionalAction,
            default=False,
            help="also train and evaluate a pairwise judge on scripted human comparisons (slow on a CPU; the "
            "judge's figures: benchmarks/judge_order.py)",
        )
        parser.add_argument(
            "--human-error",
            type=float,
            default=0.1,
            help="how often a scripted annotator picks the wrong answer of a pair",
        )

    def say(self, msg):
        self.stdout.write(f"[{time.strftime('%H:%M:%S')}] {msg}")

    def handle(self, *args, **o):
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
        project, _ = Project.objects.get_or_create(
            slug=o["project"],
            defaults={
                "name": "Demo loop",
                "tools": demo_domain.TOOLS,
                "overlap": 2,
                "guidelines": "Scripted by `manage.py demo_loop`: annotators check each response strictly.",
            },
        )
        seed_default_taxonomy(project)
        for name, role in (
            ("loop-annotator-1", Role.ANNOTATOR),
            ("loop-annotator-2", Role.ANNOTATOR),
            ("loop-lead", Role.LEAD),
        ):
            Membership.objects.get_or_create(user=users[name], project=project, defaults={"role": role})
        base, _ = ModelVersion.objects.update_or_create(
            project=project,
            name="demo-base",
            defaults={
                "path": str(model_dir),
                "origin": ModelVersion.Origin.BASE,
                "notes": "offline demo base model",
            },
        )
        if TrainingJob.objects.filter(project=project).exists():
            raise CommandError(
                f"Project {project.slug!r} already ran the loop; pass --project with a new slug."
            )

        # 1. the base model answers demo contexts
        cases = demo_domain.eval_prompts(o["contexts"], seed=o["seed"] + 500)
        self.say(f"generating {len(cases)} base-model responses")
        loaded = load_model(str(model_dir))
        model, tok = loaded.model, loaded.tokenizer
        with threads_for(loaded):  # one thread for a tiny model: more are far slower
            outputs = generate(
                model, tok, [c["messages"] for c in cases], demo_domain.TOOLS, max_new_tokens=96
            )
        with transaction.atomic():
            for c, raw in zip(cases, outputs, strict=True):
                conv, _ = Conversation.objects.get_or_create(
                    project=project,
                    external_id=c["external_id"],
                    defaults={
                        "messages": c["messages"],
                        "tools": c["tools"],
                        "content_hash": content_hash(c["messages"], c["tools"]),
                        "metadata": {**c["metadata"], "expected": c["expected"]},
                    },
                )
                ModelResponse.objects.get_or_create(
                    conversation=conv,
                    model_version=base,
                    context_length=len(c["messages"]),
                    response_hash=content_hash(raw),
                    defaults={"raw_text": raw, "message": assistant_message_from_raw(raw, c["tools"])},
                )
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
                data = {
                    "verdict": "reasonable" if ok else "unreasonable",
                    "categories": [cats[c] for c in categories if c in cats],
                }
                if not ok:
                    data.update(correction_fields(expected))
                submit_label(task, users[name], data)
                labelled += 1
        for label in Label.objects.filter(project=project, status=Status.SUBMITTED):
            apply_review(users["loop-lead"], label, "approve")
        bad = Label.objects.filter(project=project, verdict="unreasonable").count()
        self.say(f"{labelled} labels, {bad} unreasonable, all approved")

        # 3. snapshots routed by the taxonomy's fixes: knowledge corrections (+ the base's good answers) to
        # SFT, tool-behaviour corrections to DPO (chosen = the correction, rejected = the base's output)
        def snapshot(kind, filters):
            snap = create_snapshot(
                project, users["loop-lead"], {"kind": kind, "filters": {**filters, **ROUTED}}, start=False
            )
            snap = build_snapshot(snap.pk) or snap
            snap.refresh_from_db()
            if snap.status != "ready":
                raise CommandError(f"{kind} snapshot failed: {snap.message}")
            self.say(f"{snap.name}: {snap.row_count} rows")
            return snap

        sft_snap = snapshot("sft", {"include_reasonable": True, "splits": ["train"]})
        sft_job = self.train(project, "sft", base, sft_snap, {"num_train_epochs": o["sft_epochs"]})
        dpo_snap = snapshot("dpo", {"splits": ["train"]})
        dpo_job = self.train(
            project,
            "dpo",
            sft_job.result_version,
            dpo_snap,
            {"num_train_epochs": o["dpo_epochs"], "learning_rate": o["dpo_lr"], "beta": o["dpo_beta"]},
        )

        # 5. human comparisons of two base answers per context, and a pairwise judge trained on them
        judge_figures = (
            self.judge_stage(project, users, base, dpo_job.result_version, cases, model, tok, o)
            if o["judge"]
            else None
        )

        # 6. held-out suites: seen phrasings, unseen phrasings (held-out combinations), whole unseen
        # dialogues turn by turn, and the new policy's facts
        pretraining = demo_domain.generate_conversations(
            SIZES["base"]["conversations"], seed=o["seed"], flaw_rate=SIZES["base"]["flaw_rate"]
        )
        trained_on = pretraining + [{"messages": c["messages"]} for c in cases]
        n = o["suite_cases"]
        sizes = {"unseen": n, "seen": n, "multiturn": n, "knowledge": n // 2}
        suite_cases = {kind: demo_suites.suite_cases(kind, sizes[kind], o["seed"] + 9000) for kind in sizes}
        disjoint = {kind: demo_domain.disjointness(trained_on, c) for kind, c in suite_cases.items()}
        self.say(f"held-out suites against everything trained on: {disjoint}")
        suites = {
            kind: create_suite(project, demo_suites.SUITES[kind], demo_suites.records(c), source="gold")[0]
            for kind, c in suite_cases.items()
        }

        # 7. online DPO from the DPO model: its own samples ranked by the strict checker, gated on seen
        online_run, online_rounds = None, []
        if o["online_rounds"] and dpo_job.result_version:
            online_run, online_rounds = self.online_stage(project, users, dpo_job.result_version, suites, o)

        # 8. every version on every suite
        versions = {
            "base": base,
            "sft": sft_job.result_version,
            "dpo": dpo_job.result_version,
            # the last round's model, kept by its gate or not: the figures say what the round did
            "online": _last_round_model(online_run),
        }
        figures, by_context = {}, {}
        for kind, suite in suites.items():
            for label, version in versions.items():
                if version is None:
                    continue
                run = latest_run(version, suite)
                if run is None:
                    run = create_run(project, suite, version, start=False, note="demo_loop")
                    run = run_eval(run.pk) or EvalRun.objects.get(pk=run.pk)
                s = run.summary
                figures[f"{kind}_{label}"] = {
                    k: (s.get(k) or {}).get("value") for k in (*HEADLINE, "knowledge_accuracy")
                }
                figures[f"{kind}_{label}"]["n"] = suite.case_count
                by_context[f"{kind}_{label}"] = _by_context(run)
                self.say(f"{kind} {label}: {figures[f'{kind}_{label}']}")
        result = {
            "contexts": len(cases),
            "labels": labelled,
            "unreasonable": bad,
            "sft_rows": sft_snap.row_count,
            "dpo_rows": dpo_snap.row_count,
            "routing": {
                "sft": (sft_snap.stats or {}).get("routing"),
                "dpo": (dpo_snap.stats or {}).get("routing"),
            },
            "sft_job": {"status": sft_job.status, **sft_job.timings},
            "dpo_job": {"status": dpo_job.status, **dpo_job.timings},
            **figures,
            "by_context": by_context,
            "disjointness": disjoint,
            "judge": judge_figures,
            "online_rounds": online_rounds,
            "online_status": online_run.status if online_run else None,
            "online_kept": bool(online_run and online_run.result_version_id != dpo_job.result_version_id),
            "minutes": round((time.monotonic() - t0) / 60, 1),
        }
        result["targets"] = _targets(figures)
        from benchmarks._common import report

        report("demo_loop", result)

    def train(self, project, stage, base_version, snap, overrides):
        job = create_job(
            project,
            None,
            stage=stage,
            base_version=base_version,
            train_snapshot=snap,
            preset="demo-tiny",
            overrides=overrides,
            start=False,
        )
        job = run_job(job.pk)
        self.say(f"{stage.upper()} job {job.pk}: {job.status} {job.message} {job.timings}")
        if job.result_version is None:
            raise CommandError(f"{stage.upper()} produced no model")
        return job

    def online_stage(self, project, users, start_version, suites, o):
        run = online.create_run(
            project,
            users["loop-lead"],
            start_version=start_version,
            ranker="checker",
            eval_suite=suites["seen"],
            rounds=o["online_rounds"],
            options={"samples_per_prompt": o["samples"], "max_prompts": o["contexts"], "temperature": 1.0},
            preset="demo-tiny",
            overrides={
                "learning_rate": o["online_lr"],
                "num_train_epochs": o["online_epochs"],
                "beta": o["dpo_beta"],
            },
            start=False,
        )
        self.say(f"online DPO run {run.pk}: {o['online_rounds']} round(s) from {start_version.name}")
        run = online.run_online(run.pk)
        self.say(f"online run: {run.status} — {run.message}")
        rounds = []
        for r in run.round_set.select_related("job"):
            rounds.append(
                {
                    "round": r.number,
                    "pairs": r.pairs,
                    "prompts": r.prompts,
                    "sample_accuracy": r.stats.get("sample_accuracy"),
                    "reference_chosen": r.stats.get("reference_chosen"),
                    "tool_call_accuracy": (r.gate.get("candidate") or {}).get("acc"),
                    "policy_accuracy": (r.gate.get("baseline") or {}).get("acc"),
                    "gate_passed": r.gate.get("passed"),
                    "job_status": r.job.status if r.job else None,
                    "seconds": r.gate.get("seconds"),
                }
            )
            self.say(f"round {r.number}: {rounds[-1]}")
        return run, rounds

    def judge_stage(self, project, users, base, candidate, cases, model, tok, o):
        """The candidate's answer (the DPO model: the SFT model answers almost as the base does) beside the
        base model's, compared by two scripted annotators in the real queue; a judge trained on the approved
        preferences and measured on held-out pairs."""
        # the candidate answers the same contexts: base vs candidate, as in a model review
        path, adapters = model_paths(candidate)
        loaded = load_model(path, adapters)
        outs = generate_batched(loaded, [(c["messages"], c["tools"]) for c in cases], max_new_tokens=96)
        added = 0
        for c, g in zip(cases, outs, strict=True):
            conv = Conversation.objects.get(project=project, external_id=c["external_id"])
            _, created = ModelResponse.objects.get_or_create(
                conversation=conv,
                model_version=candidate,
                context_length=len(c["messages"]),
                response_hash=content_hash(g.text),
                defaults={"raw_text": g.text, "message": assistant_message_from_raw(g.text, c["tools"])},
            )
            added += created
        assignment.sync_tasks(project)
        votes = 0
        for name in ("loop-annotator-1", "loop-annotator-2"):
            while (slot := assignment.next_task(project, users[name], Task.Kind.COMPARE)) is not None:
                task = Task.objects.select_related("response__conversation", "response_b").get(
                    pk=slot.task_id
                )
                conv = task.response.conversation
                expected = conv.metadata["expected"]
                sa = human_score(expected, task.response.raw_text, conv.tools)
                sb = human_score(expected, task.response_b.raw_text, conv.tools)
                choice = "a" if sa > sb else "b" if sb > sa else ("tie" if sa >= 4 else "both_bad")
                noise = int(hashlib.sha256(f"{name}:{task.pk}".encode()).hexdigest()[:8], 16) / 2**32
                if choice in ("a", "b") and noise < o["human_error"]:
                    choice = "b" if choice == "a" else "a"  # a human slip
                submit_preference(task, users[name], {"choice": choice, "left_side": "a"})
                votes += 1
        for pref in Preference.objects.filter(
            response_a__conversation__project=project, status=Status.SUBMITTED
        ):
            apply_review(users["loop-lead"], pref, "approve")
        ceiling, pairs_with_two = human_agreement(project)
        self.say(
            f"{added} candidate answers, {votes} comparisons; annotators agree on {ceiling} of "
            f"{pairs_with_two} pairs"
        )
        snap = create_snapshot(
            project,
            users["loop-lead"],
            {
                "kind": "dpo",
                "filters": {"sources": ["preferences"], "splits": ["train"]},
                "audit": {
                    "checks": {"label_conflict": "warn"}
                },  # the annotators' slips stay in, as in real data
                "note": "human comparisons for the judge",
            },
            start=False,
        )
        snap = build_snapshot(snap.pk) or snap
        snap.refresh_from_db()
        if snap.status != "ready":
            self.say(f"judge snapshot failed: {snap.message}")
            return {"error": snap.message}
        job = create_job(
            project,
            None,
            stage="judge",
            base_version=candidate,
            train_snapshot=snap,
            preset="demo-tiny",
            start=False,
        )
        job = run_job(job.pk)
        self.say(f"judge job {job.pk}: {job.status} {job.message} {job.timings}")
        ev = JudgeEvaluation.objects.filter(job=job).first()
        if ev is None:
            return {"job_status": job.status, "message": job.message}
        assisted = suggest(project, job.result_version)  # what leads see on the comparison queue
        self.say(f"judge suggestions: {assisted}")
        return {
            "job_status": job.status,
            "train_rows": snap.row_count,
            "held_out_pairs": ev.pairs,
            "accuracy": ev.symmetric_accuracy,  # the symmetric verdict, an unsure pair counting half
            "accuracy_se": ev.symmetric_accuracy_se,
            "decision_margin": ev.decision_margin,
            "coverage": ev.coverage,
            "unsure": ev.pairs - ev.decided,
            "decided_accuracy": ev.decided_accuracy,
            "flip_rate": ev.position_bias_rate,
            "ece": ev.averaged_ece,
            "brier": ev.averaged_brier,
            "temperature": ev.temperature,
            "forced_choice_accuracy": ev.accuracy,
            "single_order_accuracy": ev.single_order_accuracy,
            "single_order_ece": ev.ece,
            "first_position_rate": ev.first_position_rate,
            "human_agreement": ev.human_agreement,
            "human_pairs": ev.human_pairs,
            "comparisons": votes,
            "suggestions": assisted,
            "seconds": job.timings.get("total_s"),
        }
