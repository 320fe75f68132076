"""Order robustness of the pairwise judge: single-order vs symmetric judging on held-out human pairs.

    python benchmarks/judge_order.py [--contexts 1000] [--epochs 4] [--model-dir var/models/demo-base]

Through the product's own code, as demo_loop's judge_stage does it, on the demo base model
(MODEL_DIR/demo-base, built once if missing): the base model answers demo contexts, and the known
right answer is registered as a second model's answer (judge_stage's second answer comes from the SFT
model, right on most contexts; training it takes minutes this benchmark does not need, and two samples
of the base model are mostly the same answer); two scripted annotators compare each pair in the real
comparison queue (human_score, each slipping on 10% of pairs); a lead approves; a DPO snapshot of the
preferences (one row per pair: a 1-1 split is left out, so its labels slip less than one annotator
does, and a judge can beat the annotators' agreement); a judge job (stage "judge", both orders of every
pair) on 70% of the contexts, its temperature fitted on 10%, its evaluation on the other 20%, beside
the annotators' agreement on the same pairs.

Reported: single-order judging (each order on its own: accuracy, ECE; it always answers) and the
symmetric judge (training/judge/judges.py decide(): flip rate between the orders, coverage, accuracy on
decided pairs, accuracy with an unsure pair counted half, ECE and Brier of the order-averaged
probability), the human ceiling and the issue's targets. Rates are fractions, times in ms.
"""

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._common import report, setup_django  # noqa: E402

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/badcase_judge_order"


def _recipe(model_dir: Path):
    try:
        info = json.loads((model_dir / "build_info.json").read_text())
    except (OSError, ValueError):
        return None
    recipe = {k: info["recipe"].get(k) for k in ("recipe_version", "seed", "size")}
    return {**recipe, "params": info.get("params")}


def say(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--contexts", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--human-error", type=float, default=0.1)
    parser.add_argument("--epochs", type=float, default=None, help="judge epochs (default: the preset's)")
    parser.add_argument(
        "--model-dir", default=None, help="an already built base model folder to use as is (default: build)"
    )
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    setup_django(args.database_url or os.environ.get("BENCH_DATABASE_URL") or DEFAULT_DB, fresh=True)

    from django.conf import settings
    from django.contrib.auth import get_user_model

    from annotator import assignment
    from annotator.importers import assistant_message_from_raw
    from annotator.labelling import submit_preference
    from annotator.models import (
        Conversation,
        Membership,
        ModelResponse,
        ModelVersion,
        Preference,
        Project,
        Role,
        Status,
        Task,
        content_hash,
    )
    from annotator.review import apply_review
    from inference.client import message_to_text
    from inference.generation import generate
    from inference.loading import load_model
    from loop.demo_history import human_score
    from training import demo_domain
    from training.demo_model import build_demo_model
    from training.finetune.request import create_job
    from training.finetune.run import run_job
    from training.judge.judges import UNSURE, PairVerdict, X
    from training.judge.report import human_agreement
    from training.models import JudgeEvaluation
    from training.snapshots.build import build_snapshot, create_snapshot

    timings = {}
    t0 = time.perf_counter()
    if args.model_dir:
        model_dir = Path(args.model_dir).resolve()
        built = {"cached": True}
    else:
        model_dir = Path(settings.MODEL_DIR) / "demo-base"
        built = build_demo_model(str(model_dir), seed=args.seed, log=say)
    timings["model_ms"] = round(1000 * (time.perf_counter() - t0))

    users = {n: get_user_model().objects.create(username=n) for n in ("ann-1", "ann-2", "lead")}
    project = Project.objects.create(
        name="judge order", slug="judge-order", tools=demo_domain.TOOLS, overlap=2
    )
    for name, role in (("ann-1", Role.ANNOTATOR), ("ann-2", Role.ANNOTATOR), ("lead", Role.LEAD)):
        Membership.objects.create(user=users[name], project=project, role=role)
    base = ModelVersion.objects.create(project=project, name="demo-base", path=str(model_dir), origin="base")

    # per context: the base model's answer, and the known right answer as a second model's ("reference")
    t = time.perf_counter()
    reference = ModelVersion.objects.create(project=project, name="reference", origin="external")
    cases = demo_domain.eval_prompts(args.contexts, seed=args.seed + 500)
    answers = generate(
        load_model(str(model_dir)), [(c["messages"], c["tools"]) for c in cases], max_new_tokens=96
    )
    for c, g in zip(cases, answers, strict=True):
        conv = Conversation.objects.create(
            project=project,
            external_id=c["external_id"],
            messages=c["messages"],
            tools=c["tools"],
            content_hash=content_hash(c["messages"], c["tools"]),
            metadata={**c["metadata"], "expected": c["expected"]},
            split="train",
        )
        right = message_to_text(c["expected"])
        for version, raw in ((base, g.text), (reference, right)):
            if version is reference and raw == g.text:
                continue  # the same answer twice makes no pair
            ModelResponse.objects.create(
                conversation=conv,
                model_version=version,
                context_length=len(c["messages"]),
                response_hash=content_hash(raw),
                raw_text=raw,
                message=assistant_message_from_raw(raw, c["tools"]),
            )
    assignment.sync_tasks(project)
    say(f"{len(cases)} contexts answered")
    timings["sample_ms"] = round(1000 * (time.perf_counter() - t))

    # scripted annotators in the real comparison queue (as demo_loop's judge_stage), a lead approves
    t = time.perf_counter()
    votes = 0
    for name in ("ann-1", "ann-2"):
        while (slot := assignment.next_task(project, users[name], Task.Kind.COMPARE)) is not None:
            task = Task.objects.select_related("response__conversation", "response_b").get(pk=slot.task_id)
            conv = task.response.conversation
            expected = conv.metadata["expected"]
            sa = human_score(expected, task.response.raw_text, conv.tools)
            sb = human_score(expected, task.response_b.raw_text, conv.tools)
            choice = "a" if sa > sb else "b" if sb > sa else ("tie" if sa >= 4 else "both_bad")
            noise = int(hashlib.sha256(f"{name}:{task.pk}".encode()).hexdigest()[:8], 16) / 2**32
            if choice in ("a", "b") and noise < args.human_error:
                choice = "b" if choice == "a" else "a"  # a human slip
            submit_preference(task, users[name], {"choice": choice, "left_side": "a"})
            votes += 1
    for pref in Preference.objects.filter(response_a__conversation__project=project, status=Status.SUBMITTED):
        apply_review(users["lead"], pref, "approve")
    ceiling, pairs_with_two = human_agreement(project)
    snap = create_snapshot(
        project,
        users["lead"],
        {
            "kind": "dpo",
            "filters": {"sources": ["preferences"], "splits": ["train"]},
            "audit": {"checks": {"label_conflict": "warn"}},  # the annotators' slips stay in
            "note": "human comparisons for the judge",
        },
        start=False,
    )
    snap = build_snapshot(snap.pk) or snap
    snap.refresh_from_db()
    assert snap.status == "ready", snap.message
    timings["annotate_ms"] = round(1000 * (time.perf_counter() - t))
    say(f"{votes} comparisons, {snap.row_count} pairs in the snapshot; training the judge")

    # the judge job: trains on both orders of 80% of the pairs, evaluated on the rest
    t = time.perf_counter()
    overrides = {} if args.epochs is None else {"num_train_epochs": args.epochs}
    job = create_job(
        project,
        None,
        stage="judge",
        base_version=base,
        train_snapshot=snap,
        preset="demo-tiny",
        overrides=overrides,
        start=False,
    )
    job = run_job(job.pk)
    assert job.result_version is not None, job.message
    ev = JudgeEvaluation.objects.get(job=job)
    timings["judge_job_ms"] = round(1000 * job.timings.get("total_s", 0))
    timings["judge_total_ms"] = round(1000 * (time.perf_counter() - t))
    timings["total_ms"] = round(1000 * (time.perf_counter() - t0))

    unsure = ev.pairs - ev.decided
    # the same held-out verdicts under other margins (the evaluation keeps both orders of each pair)
    sweep = []
    for margin in (0.0, 0.05, 0.1, 0.2, 0.3):
        said = [
            PairVerdict(x_first=e["p_first"], y_first=1 - e["p_second"], margin=margin).verdict
            for e in ev.details["examples"]
        ]
        decided = sum(1 for v in said if v != UNSURE)
        sweep.append(
            {
                "margin": margin,
                "coverage": decided / len(said),
                "decided_accuracy": said.count(X) / decided if decided else None,
                "accuracy_unsure_half": (said.count(X) + 0.5 * said.count(UNSURE)) / len(said),
            }
        )
    target_accuracy = None if ceiling is None else ceiling - 0.02
    report(
        "judge_order",
        {
            "model": str(model_dir),
            "model_cached": bool(built.get("cached")),
            "model_recipe": _recipe(model_dir),
            "contexts": len(cases),
            "comparisons": votes,
            "snapshot_pairs": snap.row_count,
            "held_out_pairs": ev.pairs,
            "judge_params": {k: job.params[k] for k in ("learning_rate", "num_train_epochs", "lora_r")},
            "train_steps": job.timings.get("steps"),
            "train_ms_per_step": round(1000 * job.timings.get("s_per_step", 0)),
            "human_agreement": ceiling,
            "human_pairs": pairs_with_two,
            "single_order": {
                "accuracy": ev.single_order_accuracy,
                "coverage": 1.0,
                "ece": ev.ece,
                "brier": ev.brier,
                "first_position_rate": ev.first_position_rate,
            },
            "symmetric": {
                "decision_margin": ev.decision_margin,
                "temperature": ev.temperature,
                "flip_rate": ev.position_bias_rate,
                "coverage": ev.coverage,
                "unsure": unsure,
                "decided_accuracy": ev.decided_accuracy,
                "accuracy_unsure_half": ev.symmetric_accuracy,
                "accuracy_unsure_half_se": ev.symmetric_accuracy_se,
                "accuracy_unsure_wrong": (ev.decided_accuracy or 0) * ev.coverage,
                "forced_choice_accuracy": ev.accuracy,
                "ece": ev.averaged_ece,
                "brier": ev.averaged_brier,
            },
            "margin_sweep": sweep,
            "targets": {
                "accuracy_at_least": target_accuracy,
                "accuracy_met": None if target_accuracy is None else ev.symmetric_accuracy >= target_accuracy,
                "flip_rate_at_most": 0.10,
                "flip_rate_met": ev.position_bias_rate <= 0.10,
                "ece_at_most": 0.05,
                "ece_met": ev.averaged_ece <= 0.05,
            },
            "timings": timings,
            "device": "cpu",
            "threads": int(os.environ.get("TRAINING_THREADS", "1")),
        },
    )


if __name__ == "__main__":
    main()
