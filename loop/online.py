"""Online DPO: rounds of sample → rank → snapshot → train → evaluate → gate.

Each round samples several answers per training prompt from the current policy, ranks them
(with the strict tool-call checker where the right answer is known, or with a pairwise judge),
stores the best/worst pair of each prompt (OnlinePair, linked to the sampled ModelResponses),
exports those pairs as an audited DPO snapshot like any other, trains a DPO job on the
policy, evaluates the new version on the run's suite and keeps it only if the promotion-style
gate passes (better tool_call_accuracy, response_quality within the margin). The run stops
at the first failed gate; its result is the last version that passed.

All state is in the database (OnlineRun, OnlineRound): a worker killed mid-round is resumed
from the round's last finished phase — a ready snapshot, a finished job or a finished eval
run is reused, never redone.
"""

from __future__ import annotations

import time

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from annotator.importers import assistant_message_from_raw
from annotator.model_lineage import check_folders, model_paths
from annotator.models import (
    Conversation,
    Correction,
    Label,
    ModelResponse,
    ModelVersion,
    Split,
    Status,
    content_hash,
)
from evaluation import runner
from evaluation.models import EvalRun, EvalSettings
from evaluation.promotion import latest_run
from inference.generation import encode, plan_batches, threads_for
from inference.loading import load_model
from jobs import lifecycle
from toolcalls.score import score_case
from training.finetune.params import clean_params
from training.finetune.request import create_job
from training.finetune.run import run_job
from training.judge.judges import UNSURE, X, Y, judge_pairs, load_judge
from training.models import DatasetSnapshot, OnlinePair, OnlineRound, OnlineRun, TrainingJob
from training.snapshots.build import build_snapshot, create_snapshot

DEFAULT_OPTIONS = {
    "samples_per_prompt": 4,
    "temperature": 1.0,
    "max_prompts": 300,
    "max_new_tokens": 96,
    "use_reference": True,
    "seed": 0,
    "quality_margin": None,
}
OPTION_SPEC = {
    "samples_per_prompt": (int, 2, 16),
    "temperature": (float, 0.05, 2.0),
    "max_prompts": (int, 1, 100_000),
    "max_new_tokens": (int, 8, 4096),
    "seed": (int, 0, 2**31 - 1),
}


class Cancelled(Exception):
    pass


class GuardStopped(Exception):
    """The round's training job was stopped by the brain-damage guard with no healthy checkpoint."""


# --- creating a run -------------------------------------------------------------------------


def clean_options(raw: dict) -> tuple[dict, dict]:
    opts, errors = dict(DEFAULT_OPTIONS), {}
    for name, value in (raw or {}).items():
        if value in (None, ""):
            continue
        if name == "use_reference":
            opts[name] = value in (True, "true", "on", "1", 1)
            continue
        if name == "quality_margin":
            try:
                opts[name] = float(value)
                if not 0 <= opts[name] <= 1:
                    raise ValueError
            except (TypeError, ValueError):
                errors[f"options.{name}"] = "a share between 0 and 1"
            continue
        if name not in OPTION_SPEC:
            errors[f"options.{name}"] = "unknown option"
            continue
        kind, low, high = OPTION_SPEC[name]
        try:
            v = kind(value)
        except (TypeError, ValueError):
            errors[f"options.{name}"] = f"must be {'an integer' if kind is int else 'a number'}"
            continue
        if not low <= v <= high:
            errors[f"options.{name}"] = f"must be between {low:g} and {high:g}"
            continue
        opts[name] = v
    return opts, errors


def create_run(
    project,
    user,
    *,
    start_version,
    ranker="checker",
    judge=None,
    eval_suite=None,
    rounds=2,
    options=None,
    preset="lora-r8",
    overrides=None,
    name="",
    start=True,
) -> OnlineRun:
    """Validate and create an online DPO run (pages and API). Raises ValidationError keyed by field."""
    errors: dict = {}
    params, perrors = clean_params("dpo", preset, overrides or {})
    errors.update({f"params.{k}" if k not in ("preset",) else k: v for k, v in perrors.items()})
    opts, oerrors = clean_options(options or {})
    errors.update(oerrors)
    if start_version is None or start_version.project_id != project.pk:
        errors["start_version"] = "choose a model version of this project"
    elif start_version.origin in (ModelVersion.Origin.JUDGE, ModelVersion.Origin.IMPORTED):
        errors["start_version"] = f"{start_version.name} is not a policy model that can generate"
    if ranker not in OnlineRun.Ranker.values:
        errors["ranker"] = f"one of {', '.join(OnlineRun.Ranker.values)}"
    elif ranker == OnlineRun.Ranker.JUDGE:
        if judge is None:
            errors["judge"] = "ranking with a judge needs a judge model"
        elif judge.project_id != project.pk or judge.origin not in (
            ModelVersion.Origin.JUDGE,
            ModelVersion.Origin.EXTERNAL,
        ):
            errors["judge"] = "choose a trained judge (or an external judge endpoint) of this project"
    if eval_suite is None or eval_suite.project_id != project.pk:
        errors["eval_suite"] = "each round is evaluated and gated on a suite: choose one of this project"
    try:
        rounds = int(rounds)
        if not 1 <= rounds <= 20:
            raise ValueError
    except (TypeError, ValueError):
        errors["rounds"] = "between 1 and 20"
    if not errors and start_version is not None:
        problems = check_folders(start_version)
        if problems:
            errors["start_version"] = " ".join(problems)
    if errors:
        raise ValidationError({k: v if isinstance(v, list) else [v] for k, v in errors.items()})
    with transaction.atomic():
        run = OnlineRun.objects.create(
            project=project,
            start_version=start_version,
            ranker=ranker,
            judge=judge if ranker == OnlineRun.Ranker.JUDGE else None,
            eval_suite=eval_suite,
            rounds=rounds,
            options=opts,
            params={**params, "preset": preset},
            created_by=user,
            name=name or f"Online DPO from {start_version.name} ({rounds} rounds, {ranker})",
        )
        if start:
            lifecycle.enqueue(run)
    return run


# --- lifecycle (jobs.lifecycle) ---------------------------------------------------------------


def _beat(run: OnlineRun, **fields) -> None:
    """Record the run's progress; stop (Cancelled) once it was cancelled or another attempt owns it."""
    if not lifecycle.heartbeat(run, **fields):
        raise Cancelled()


def request_cancel(run: OnlineRun) -> None:
    """Queued: cancelled at once. Running: stops after the current phase; a training job in flight
    is asked to stop at its next step (its checkpoint is kept)."""
    lifecycle.cancel(run)
    if run.cancel_requested:
        for job in TrainingJob.objects.filter(
            pk__in=run.round_set.exclude(job=None).values("job"),
            status__in=[TrainingJob.State.QUEUED, TrainingJob.State.RUNNING],
        ):
            lifecycle.cancel(job)


# --- prompts, sampling and ranking ----------------------------------------------------------


def prompts_for(run: OnlineRun) -> list[dict]:
    """Training contexts of the project, with their known right answer where there is one:
    the approved correction, else an approved "reasonable" response. Deterministic order; the
    work is bounded by max_prompts (each query reads at most that many rows), not by the
    project's size."""
    project = run.project
    limit = int(run.options.get("max_prompts") or DEFAULT_OPTIONS["max_prompts"])
    expected: dict[tuple[int, int], dict] = {}
    for conv, length, msg in (
        Label.objects.filter(
            project=project,
            status=Status.APPROVED,
            verdict=Label.Verdict.REASONABLE,
            response__conversation__split=Split.TRAIN,
        )
        .values_list("response__conversation_id", "response__context_length", "response__message")
        .order_by("id")[:limit]
    ):
        expected.setdefault((conv, length), msg)
    for conv, length, msg in (
        Correction.objects.filter(
            label__project=project,
            label__status=Status.APPROVED,
            label__response__conversation__split=Split.TRAIN,
        )
        .values_list("label__response__conversation_id", "label__response__context_length", "message")
        .order_by("id")[:limit]
    ):
        expected[(conv, length)] = msg  # a correction is the better answer
    if run.ranker == OnlineRun.Ranker.JUDGE:
        keys = list(
            ModelResponse.objects.filter(conversation__project=project, conversation__split=Split.TRAIN)
            .values_list("conversation_id", "context_length")
            .order_by("conversation_id", "context_length")
            .distinct()[:limit]
        )
    else:
        keys = sorted(expected)[:limit]
    convs = {
        c.pk: c
        for c in Conversation.objects.filter(pk__in={k[0] for k in keys}).only("pk", "messages", "tools")
    }
    return [
        {
            "conversation_id": c,
            "context_length": n,
            "messages": convs[c].messages[:n],
            "tools": convs[c].tools or project.tools,
            "expected": expected.get((c, n)),
        }
        for c, n in keys
    ]


def sample(
    version: ModelVersion,
    prompts: list[dict],
    k: int,
    temperature: float,
    max_new_tokens: int,
    seed: int,
    batch_size: int = 16,
    beat=None,
) -> list[list[str]]:
    """k sampled answers per prompt from the policy (base + adapters, on the worker's device)."""
    import torch

    path, adapters = model_paths(version)
    loaded = load_model(path, adapters)
    tok = loaded.tokenizer
    encoded = [encode(loaded, p["messages"], p["tools"]) for p in prompts]
    out: list[list[str]] = [[] for _ in prompts]
    stops = set(loaded.stop_ids)
    torch.manual_seed(seed)
    with threads_for(loaded), torch.inference_mode():
        for batch in plan_batches([len(e) for e in encoded], max(1, batch_size // k) or 1):
            width = max(len(encoded[i]) for i in batch)
            ids = torch.full((len(batch), width), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, i in enumerate(batch):
                ids[r, width - len(encoded[i]) :] = torch.tensor(encoded[i])
                mask[r, width - len(encoded[i]) :] = 1
            gen = loaded.model.generate(
                input_ids=ids.to(loaded.device),
                attention_mask=mask.to(loaded.device),
                do_sample=True,
                temperature=temperature,
                top_p=1.0,
                top_k=0,
                num_return_sequences=k,
                max_new_tokens=max_new_tokens,
                eos_token_id=loaded.stop_ids or None,
                pad_token_id=tok.pad_token_id,
            )
            for r, i in enumerate(batch):
                for j in range(k):
                    new = gen[r * k + j, width:].tolist()
                    cut = next((n for n, t in enumerate(new) if t in stops), len(new))
                    out[i].append(tok.decode(new[:cut], skip_special_tokens=False))
            if beat:
                beat()
    return out


def checker_score(expected: dict, raw: str, tools: list) -> float:
    """2 for a strictly right and clean answer, 1 for right but with a defect or clean but wrong, 0 for
    both."""
    s = score_case(expected, raw, tools)
    return float((s["tool_call_accuracy"] or 0) + (s["response_quality"] or 0))


def rank_with_checker(prompt: dict, samples: list[str]) -> list[float]:
    return [checker_score(prompt["expected"], s, prompt["tools"]) for s in samples]


def rank_with_judge(judge, prompt: dict, samples: list[str]) -> list[float]:
    """Round robin on the judge's symmetric verdicts (both orders): a win scores 1, an unsure pair
    half to each, so a sample is never ranked on an order the judge happened to see it in."""
    n = len(samples)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    verdicts = judge_pairs(
        judge, [(prompt["messages"], prompt["tools"], samples[i], samples[j]) for i, j in pairs]
    )
    scores = [0.0] * n
    for (i, j), v in zip(pairs, verdicts, strict=True):
        won = {X: 1.0, Y: 0.0, UNSURE: 0.5}[v.verdict]
        scores[i] += won
        scores[j] += 1 - won
    return scores


def clean_answer(raw: str, tools: list) -> bool:
    """No response-quality defect (metrics.md): no malformed call, no template leak, no broken tags…"""
    return score_case({"role": "assistant", "content": "-"}, raw, tools)["response_quality"] == 1


def choose_pair(
    prompt: dict, samples: list[str], scores: list[float], eligible: list[bool], use_reference: bool
):
    """(chosen index or None for the known answer, rejected index, chosen score, rejected score) or None.

    Only an eligible sample can be chosen (with the checker: strictly right and clean; with a judge:
    clean), so a round never teaches a malformed answer; the worst sample is rejected."""
    worst = min(range(len(samples)), key=lambda i: (scores[i], i))
    good = [i for i in range(len(samples)) if eligible[i]]
    if good:
        best = max(good, key=lambda i: (scores[i], -i))
        if scores[best] > scores[worst] and samples[best] != samples[worst]:
            return best, worst, scores[best], scores[worst]
        return None  # every sample is as good as the worst: nothing to learn here
    if use_reference and prompt.get("expected"):
        return (
            None,
            worst,
            2.0,
            scores[worst],
        )  # no sample is good enough: the known answer over the worst one
    return None


def _sample_and_rank(run: OnlineRun, rnd: OnlineRound, judge=None) -> None:
    opts = {**DEFAULT_OPTIONS, **run.options}
    prompts = prompts_for(run)
    if not prompts:
        raise ValueError(
            "No training prompts to sample: the project needs approved labels on train-split "
            "conversations (with corrections or reasonable responses when ranking with the checker)."
        )
    _beat(
        run,
        phase=f"round {rnd.number}: sampling {opts['samples_per_prompt']} answers for {len(prompts)} prompts",
    )
    samples = sample(
        rnd.policy,
        prompts,
        opts["samples_per_prompt"],
        opts["temperature"],
        opts["max_new_tokens"],
        seed=opts["seed"] * 1000 + rnd.number,
        beat=lambda: _beat(run),
    )
    _beat(run, phase=f"round {rnd.number}: ranking with the {run.get_ranker_display()}")
    pairs, right, total, skipped, reference = [], 0, 0, 0, 0
    for prompt, outs in zip(prompts, samples, strict=True):
        if run.ranker == OnlineRun.Ranker.JUDGE:
            scores = rank_with_judge(judge, prompt, outs)
            eligible = [clean_answer(o, prompt["tools"]) for o in outs]
        else:
            scores = rank_with_checker(prompt, outs)
            eligible = [s >= 2 for s in scores]
            right += sum(eligible)
            total += len(scores)
        picked = choose_pair(prompt, outs, scores, eligible, opts["use_reference"])
        if picked is None:
            skipped += 1
            continue
        reference += picked[0] is None
        pairs.append((prompt, outs, picked))
    with transaction.atomic():
        OnlinePair.objects.filter(round=rnd).delete()  # a resumed round samples again from scratch
        rows = []
        settings = {
            "online_run": run.pk,
            "round": rnd.number,
            "do_sample": True,
            "temperature": opts["temperature"],
        }

        def stored(prompt, text):
            resp, _ = ModelResponse.objects.get_or_create(
                conversation_id=prompt["conversation_id"],
                model_version=rnd.policy,
                context_length=prompt["context_length"],
                response_hash=content_hash(text),
                defaults={
                    "raw_text": text,
                    "message": assistant_message_from_raw(text, prompt["tools"]),
                    "generation_settings": settings,
                },
            )
            return resp

        for prompt, outs, (ci, ri, cs, rs) in pairs:
            rejected = stored(prompt, outs[ri])
            chosen = stored(prompt, outs[ci]) if ci is not None else None
            rows.append(
                OnlinePair(
                    round=rnd,
                    conversation_id=prompt["conversation_id"],
                    context_length=prompt["context_length"],
                    chosen=chosen,
                    chosen_message=chosen.message if chosen else prompt["expected"],
                    rejected=rejected,
                    chosen_score=cs,
                    rejected_score=rs,
                    ranker="reference" if ci is None else run.ranker,
                )
            )
        OnlinePair.objects.bulk_create(rows)
        stats = {"prompts": len(prompts), "skipped_ties": skipped, "reference_chosen": reference}
        if total:
            stats["sample_accuracy"] = round(right / total, 4)
        OnlineRound.objects.filter(pk=rnd.pk).update(
            prompts=len(prompts),
            samples=sum(len(s) for s in samples),
            pairs=len(rows),
            stats=stats,
            phase="ranked",
        )
    rnd.refresh_from_db()
    lifecycle.log(
        run,
        f"round {rnd.number}: {rnd.samples} samples, {rnd.pairs} pairs ({skipped} prompts tied"
        + (f", sample accuracy {100 * stats['sample_accuracy']:.0f}%" if total else "")
        + ")",
    )


def _snapshot(run: OnlineRun, rnd: OnlineRound):
    snap = rnd.snapshot
    if snap is None or snap.status == DatasetSnapshot.State.FAILED:
        snap = create_snapshot(
            run.project,
            run.created_by,
            {
                "kind": "dpo",
                "filters": {"sources": ["online"], "online_rounds": [rnd.pk]},
                "note": f"Online DPO run {run.pk}, round {rnd.number}: {rnd.pairs} pairs "
                f"from {rnd.policy.name}'s own samples, ranked by the {run.get_ranker_display()}.",
            },
            start=False,
        )
        OnlineRound.objects.filter(pk=rnd.pk).update(snapshot=snap, phase="snapshot")
    if snap.status != DatasetSnapshot.State.READY:
        _beat(run, phase=f"round {rnd.number}: building snapshot {snap.name}")
        build_snapshot(snap.pk)
        snap.refresh_from_db()
    if snap.status != DatasetSnapshot.State.READY:
        raise ValueError(f"snapshot {snap.name} failed: {snap.message}")
    lifecycle.log(run, f"round {rnd.number}: snapshot {snap.name} ready, {snap.row_count} rows")
    return snap


def _train(run: OnlineRun, rnd: OnlineRound, snap) -> ModelVersion:
    job = rnd.job
    if job is None:
        params = dict(run.params)
        preset = params.pop("preset", "lora-r8")
        job = create_job(
            run.project,
            run.created_by,
            stage="dpo",
            base_version=rnd.policy,
            train_snapshot=snap,
            preset=preset,
            overrides=params,
            allow_raw_base=True,
            name=f"Online run {run.pk} round {rnd.number}: DPO on {snap.name}",
            start=False,
        )
        OnlineRound.objects.filter(pk=rnd.pk).update(job=job, phase="training")
    elif job.status in (TrainingJob.State.FAILED, TrainingJob.State.CANCELLED):
        lifecycle.resume(job)  # queued (and sent), but run here if no training worker took it first
    _beat(run, phase=f"round {rnd.number}: training job {job.pk}")
    job.refresh_from_db()
    if job.status == TrainingJob.State.QUEUED:
        job = run_job(job.pk) or job
    _beat(run)
    job.refresh_from_db()
    while not job.finished:  # a training worker runs it: wait for it
        time.sleep(5)
        _beat(run)
        job.refresh_from_db()
    if job.result_version is None and job.status == TrainingJob.State.STOPPED_BY_GUARD:
        raise GuardStopped(job.message)
    if job.result_version is None:
        raise ValueError(f"training job {job.pk} ended {job.status}: {job.message}")
    lifecycle.log(run, f"round {rnd.number}: job {job.pk} {job.status}, {job.result_version.name}")
    return job.result_version


def _evaluate(run: OnlineRun, version: ModelVersion, existing=None):
    found = (
        existing
        if existing is not None and existing.status == EvalRun.State.DONE
        else latest_run(version, run.eval_suite)
    )
    if found is not None:
        return found
    ev = (
        existing
        if existing is not None and not existing.finished
        else runner.create_run(run.project, run.eval_suite, version, start=False, note=f"online run {run.pk}")
    )
    _beat(run, phase=f"evaluating {version.name} on {run.eval_suite.label}")
    ev = runner.run_eval(ev.pk) or EvalRun.objects.get(pk=ev.pk)
    if ev.status != EvalRun.State.DONE:
        raise ValueError(f"evaluation run {ev.pk} of {version.name} ended {ev.status}: {ev.message}")
    return ev


def gate(candidate_run, baseline_run, margin: float) -> dict:
    """Promotion-style gate between two runs on the same suite."""

    def value(r, key):
        return ((r.summary or {}).get(key) or {}).get("value")

    c_acc, b_acc = value(candidate_run, "tool_call_accuracy"), value(baseline_run, "tool_call_accuracy")
    c_q, b_q = value(candidate_run, "response_quality"), value(baseline_run, "response_quality")
    conditions = []
    ok_acc = c_acc is not None and b_acc is not None and c_acc > b_acc
    conditions.append(
        {"key": "tool_call_accuracy", "ok": ok_acc, "detail": f"{c_acc} vs {b_acc} (must be higher)"}
    )
    ok_q = c_q is not None and b_q is not None and c_q >= b_q - margin - 1e-12
    conditions.append(
        {
            "key": "response_quality",
            "ok": ok_q,
            "detail": f"{c_q} vs {b_q} (may drop at most {100 * margin:.1f} points)",
        }
    )
    return {
        "passed": ok_acc and ok_q,
        "conditions": conditions,
        "candidate": {"acc": c_acc, "quality": c_q},
        "baseline": {"acc": b_acc, "quality": b_q},
    }


# --- running --------------------------------------------------------------------------------


def run_online(run_id: int) -> OnlineRun | None:
    run = lifecycle.claim(OnlineRun, run_id)
    if run is None:
        return None
    try:
        with lifecycle.attempt(run, beat_every=30):  # beats through sampling, training and evaluation
            _run(run)
    except Cancelled:
        lifecycle.finish(
            run,
            OnlineRun.State.CANCELLED,
            f"Cancelled during {run.phase or 'the run'}; Resume continues with the unfinished round.",
        )
    except Exception as exc:  # noqa: BLE001 - recorded on the run, with its reason
        OnlineRound.objects.filter(run=run, status=OnlineRound.State.RUNNING).update(
            status=OnlineRound.State.FAILED
        )
        lifecycle.log(run, f"failed: {type(exc).__name__}: {exc}")
        lifecycle.finish(run, OnlineRun.State.FAILED, f"{type(exc).__name__}: {exc}. {run.resume_hint}")
    run.refresh_from_db()
    return run


def _run(run: OnlineRun) -> None:
    margin = run.options.get("quality_margin")
    if margin is None:
        margin = EvalSettings.for_project(run.project).quality_margin
    judge = None
    if run.ranker == OnlineRun.Ranker.JUDGE:
        judge = load_judge(run.judge)
    policy = run.start_version
    for done in run.round_set.filter(status=OnlineRound.State.DONE).order_by("number"):
        if done.gate.get("passed") and done.job and done.job.result_version:
            policy = done.job.result_version
    baseline = _evaluate(run, policy)
    lifecycle.log(
        run,
        f"policy {policy.name}: tool_call_accuracy "
        f"{(baseline.summary.get('tool_call_accuracy') or {}).get('value')} on {run.eval_suite.label}",
    )
    for number in range(1, run.rounds + 1):
        rnd, _ = OnlineRound.objects.get_or_create(run=run, number=number, defaults={"policy": policy})
        if rnd.status == OnlineRound.State.DONE:
            continue
        _beat(run)
        started = time.monotonic()
        OnlineRound.objects.filter(pk=rnd.pk).update(
            status=OnlineRound.State.RUNNING,
            policy=policy,
            started_at=rnd.started_at or timezone.now(),
            baseline_run=baseline,
        )
        rnd.refresh_from_db()
        if rnd.phase in ("", "sampling") or rnd.pairs == 0:
            OnlineRound.objects.filter(pk=rnd.pk).update(phase="sampling")
            _sample_and_rank(run, rnd, judge)
            rnd.refresh_from_db()
        if rnd.pairs == 0:
            _finish_round(
                rnd,
                {
                    "passed": False,
                    "conditions": [{"key": "pairs", "ok": False, "detail": "no pair: every prompt tied"}],
                },
            )
            lifecycle.finish(
                run,
                OnlineRun.State.STOPPED_BY_GATE,
                f"Round {number} found no pair to learn from; {policy.name} is the result.",
                result_version=policy,
            )
            return
        _beat(run)
        snap = _snapshot(run, rnd)
        _beat(run)
        try:
            version = _train(run, rnd, snap)
        except GuardStopped as exc:
            _finish_round(
                rnd,
                {
                    "passed": False,
                    "conditions": [{"key": "guard", "ok": False, "detail": str(exc)}],
                    "seconds": round(time.monotonic() - started, 1),
                },
            )
            lifecycle.finish(
                run,
                OnlineRun.State.STOPPED_BY_GATE,
                f"Round {number}'s training was stopped by the guard with no "
                f"healthy checkpoint; {policy.name} is the result.",
                result_version=policy,
            )
            return
        ev = _evaluate(run, version, rnd.eval_run)
        OnlineRound.objects.filter(pk=rnd.pk).update(eval_run=ev)
        result = gate(ev, baseline, margin)
        result["seconds"] = round(time.monotonic() - started, 1)
        _finish_round(rnd, result)
        acc = result["candidate"]["acc"]
        lifecycle.log(
            run,
            f"round {number}: {version.name} tool_call_accuracy {acc} vs {result['baseline']['acc']} — "
            f"gate {'passed' if result['passed'] else 'FAILED'}",
        )
        if not result["passed"]:
            failed = "; ".join(c["key"] + ": " + c["detail"] for c in result["conditions"] if not c["ok"])
            lifecycle.finish(
                run,
                OnlineRun.State.STOPPED_BY_GATE,
                f"Round {number} did not pass the gate ({failed}); {policy.name} is the result.",
                result_version=policy,
            )
            return
        policy, baseline = version, ev
    lifecycle.finish(
        run,
        OnlineRun.State.SUCCEEDED,
        f"{run.rounds} round(s) passed the gate; {policy.name} is the result.",
        result_version=policy,
    )


def _finish_round(rnd: OnlineRound, result: dict) -> None:
    OnlineRound.objects.filter(pk=rnd.pk).update(
        status=OnlineRound.State.DONE, gate=result, phase="done", finished_at=timezone.now()
    )


def lineage_figures(run: OnlineRun) -> list[dict]:
    """tool_call_accuracy and response_quality per round (round 0: the starting policy), for the chart."""
    rows = []
    rounds = list(run.round_set.select_related("eval_run", "baseline_run", "policy", "job__result_version"))
    if rounds and rounds[0].baseline_run:
        s = rounds[0].baseline_run.summary or {}
        rows.append(
            {
                "round": 0,
                "version": rounds[0].policy.name,
                "tool_call_accuracy": (s.get("tool_call_accuracy") or {}).get("value"),
                "response_quality": (s.get("response_quality") or {}).get("value"),
                "passed": None,
            }
        )
    for r in rounds:
        if r.eval_run is None:
            continue
        s = r.eval_run.summary or {}
        rows.append(
            {
                "round": r.number,
                "version": r.job.result_version.name if r.job and r.job.result_version else "",
                "tool_call_accuracy": (s.get("tool_call_accuracy") or {}).get("value"),
                "response_quality": (s.get("response_quality") or {}).get("value"),
                "passed": r.gate.get("passed"),
            }
        )
    return rows
