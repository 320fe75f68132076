"""Eval runs: creating one, and the worker's job of running it.

Reading order:

* ``create_run`` — validate the request (suite, model version, source and settings),
  store the queued run, send it to the ``eval`` queue once committed. Pages, API, the
  management command and training jobs (``request_eval``) all call it.
* ``run_eval`` — the worker: claim the run (jobs.lifecycle: a fresh token per attempt), produce outputs
  for the cases that have no result yet — batched greedy generation of a local model, an
  OpenAI-compatible endpoint, or an uploaded outputs file — score each with
  ``toolcalls.score.score_case`` and commit the batch's results together with the progress. A
  killed worker's redelivery resumes after the last committed batch; a duplicate delivery
  while its worker lives does nothing. At the end: the summary (toolcalls.score.summarize, ± SE,
  breakdowns) and the general-text perplexity (local runs). The training-overlap flag is
  read when shown (EvalRun.training_overlap), never frozen at the end of the run.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import InterfaceError, OperationalError, transaction

from annotator.model_lineage import ModelNotFound, model_paths
from inference import generation
from inference.client import ChatClient, EndpointError, check_base_url, message_to_text
from inference.loading import LoadedModel, load_model, pick_device
from inference.perplexity import TEXTS_FINGERPRINT, perplexity
from jobs import lifecycle
from toolcalls.score import score_case, summarize

from .models import EvalCase, EvalResult, EvalRun, EvalSettings, EvalSuite
from .suites import CaseError, SuiteError, default_suite, read_jsonl

log = logging.getLogger(__name__)

LIMITS = {"max_new_tokens": (1, 32768), "batch_size": (1, 1024), "concurrency": (1, 64), "timeout": (1, 3600)}


# ============================================================================== create


def clean_settings(source: str, data: dict, defaults: EvalSettings) -> dict:
    """Normalised run settings; ValidationError keyed by field."""
    errors = {}
    data = data or {}

    def given(key, default):
        value = data.get(key)
        return default if value is None or value == "" else value

    out = {"max_new_tokens": given("max_new_tokens", defaults.max_new_tokens)}
    if source == EvalRun.Source.LOCAL:
        out["batch_size"] = given("batch_size", defaults.batch_size)
        device = data.get("device") or "auto"
        out["device"] = device.strip() if isinstance(device, str) else ""
        if out["device"] not in ("auto", "cpu", "cuda") and not out["device"].startswith("cuda:"):
            errors["device"] = "auto, cpu, cuda or cuda:N"
        kwargs = data.get("chat_template_kwargs") or {}
        if isinstance(kwargs, str):
            try:
                kwargs = json.loads(kwargs) if kwargs.strip() else {}
            except ValueError:
                errors["chat_template_kwargs"] = "must be a JSON object"
        if not isinstance(kwargs, dict):
            errors["chat_template_kwargs"] = "must be a JSON object"
        out["chat_template_kwargs"] = kwargs if isinstance(kwargs, dict) else {}
        out["perplexity"] = data.get("perplexity", True) not in (False, "false", "0", 0)
    elif source == EvalRun.Source.ENDPOINT:
        out["base_url"] = str(data.get("base_url") or "").strip()
        try:
            check_base_url(
                out["base_url"], settings.MODEL_ENDPOINT_ALLOWED_HOSTS
            )  # the outbound rule: no metadata, link-local or unlisted private hosts
        except ValueError as exc:
            errors["base_url"] = str(exc)
        out["model"] = str(data.get("model") or "").strip()
        if not out["model"]:
            errors["model"] = "the model name the endpoint serves"
        out["concurrency"] = given("concurrency", 4)
        out["timeout"] = given("timeout", 120)
    for key, (lo, hi) in LIMITS.items():
        if key in out:
            try:
                value = int(out[key])
                if isinstance(out[key], bool) or not lo <= value <= hi:
                    raise ValueError
                out[key] = value
            except (TypeError, ValueError):
                errors[key] = f"a whole number from {lo} to {hi}"
    if errors:
        raise ValidationError(errors)
    return out


def parse_outputs(suite: EvalSuite, fileobj) -> dict[str, dict]:
    """An uploaded outputs JSONL -> {case external_id: {"output", "stopped_at_limit", …}}.

    Each line: {"id": case id, "output": raw model text} or {"id", "message": assistant
    message}; optional "stopped_at_limit" (bool) or "finish_reason", "new_tokens",
    "latency_ms". Every case of the suite needs exactly one output: a missing output would
    silently change the denominator, so it refuses the file (SuiteError with every problem).
    """
    wanted = set(suite.cases.values_list("external_id", flat=True))
    errors: list[CaseError] = []
    out: dict[str, dict] = {}
    for line, rec in read_jsonl(fileobj):
        if not isinstance(rec, dict):
            errors.append(CaseError(line, "", "each line must be a JSON object"))
            continue
        cid = rec.get("id", rec.get("external_id", rec.get("case")))
        cid = str(cid) if isinstance(cid, (str, int)) and not isinstance(cid, bool) else None
        if cid is None:
            errors.append(CaseError(line, "id", "is required: the case id in the suite"))
            continue
        if cid not in wanted:
            errors.append(CaseError(line, "id", f"{cid!r} is not a case of {suite.label}"))
            continue
        if cid in out:
            errors.append(CaseError(line, "id", f"{cid!r} has a second output (line {out[cid]['line']})"))
            continue
        if "output" in rec:
            text = rec["output"]
            if not isinstance(text, str):
                errors.append(CaseError(line, "output", "must be a string (raw model text)"))
                continue
        elif isinstance(rec.get("message"), dict):
            text = message_to_text(rec["message"])
        else:
            errors.append(
                CaseError(line, "output", 'needs "output" (raw text) or "message" (assistant message)')
            )
            continue
        stopped = rec.get("stopped_at_limit")
        if stopped is None and rec.get("finish_reason") is not None:
            stopped = rec["finish_reason"] == "length"
        if stopped is not None and not isinstance(stopped, bool):
            errors.append(CaseError(line, "stopped_at_limit", "must be true or false"))
            continue
        out[cid] = {
            "line": line,
            "output": text,
            "stopped_at_limit": stopped,
            "new_tokens": rec.get("new_tokens") if isinstance(rec.get("new_tokens"), int) else None,
            "latency_ms": rec.get("latency_ms") if isinstance(rec.get("latency_ms"), int) else None,
        }
    missing = sorted(wanted - set(out))
    if missing and not errors:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        errors.append(CaseError(0, "id", f"{len(missing)} case(s) have no output: {shown}"))
    if errors:
        raise SuiteError(errors)
    return out


def create_run(
    project,
    suite: EvalSuite,
    model_version,
    *,
    source: str = EvalRun.Source.LOCAL,
    settings: dict | None = None,
    user=None,
    outputs=None,
    outputs_name: str = "",
    api_key: str = "",
    trigger: str = EvalRun.Trigger.MANUAL,
    note: str = "",
    start: bool = True,
) -> EvalRun:
    """Validate and queue a run. ``outputs``: an uploaded file (source "outputs")."""
    errors = {}
    if suite.project_id != project.pk:
        errors["suite"] = "belongs to another project"
    if model_version.project_id != project.pk:
        errors["model_version"] = "belongs to another project"
    if source not in EvalRun.Source.values:
        errors["source"] = f"one of {', '.join(EvalRun.Source.values)}"
    if errors:
        raise ValidationError(errors)
    clean = clean_settings(source, settings or {}, EvalSettings.for_project(project))
    if source == EvalRun.Source.LOCAL:
        try:
            model_paths(model_version)
        except ModelNotFound:
            raise ValidationError(
                {
                    "model_version": f"{model_version.name} has no model folder (path) to load, "
                    "itself or in its lineage; use an endpoint or upload its "
                    "outputs instead"
                }
            ) from None
    if source == EvalRun.Source.OUTPUTS:
        if outputs is None:
            raise ValidationError({"outputs": "upload a JSONL file with one output per case"})
        try:
            parse_outputs(suite, outputs)
        except SuiteError as exc:
            raise ValidationError({"outputs": [str(e) for e in exc.errors]}) from None
        outputs.seek(0)
        clean["outputs_name"] = (outputs_name or getattr(outputs, "name", "") or "outputs.jsonl")[:200]
    if source == EvalRun.Source.ENDPOINT:
        clean["had_api_key"] = bool(api_key)
    with transaction.atomic():
        run = EvalRun(
            project=project,
            suite=suite,
            model_version=model_version,
            source=source,
            settings=clean,
            created_by=user if getattr(user, "pk", None) else None,
            trigger=trigger,
            note=note,
            cases_total=suite.case_count,
            api_key=api_key if source == EvalRun.Source.ENDPOINT else "",
        )
        if outputs is not None and source == EvalRun.Source.OUTPUTS:
            run.outputs_file.save(Path(clean["outputs_name"]).name or "outputs.jsonl", outputs, save=False)
        run.save()
        if start:
            lifecycle.enqueue(run)
    return run


def evaluate_after_training(job, version) -> str | None:
    """Subscribed to training.hooks: a local run of the project's default suite (or its newest)
    for a freshly trained version, when the job asked for one or the project's
    `auto_eval_after_training` setting is on. Returns the line for the job's log."""
    cfg = EvalSettings.for_project(version.project)
    if not (job.evaluate_after or cfg.auto_eval_after_training):
        return None
    run = request_eval(version, user=job.created_by, note=f"automatic run after training job {job.pk}")
    if run is None:
        return "no evaluation run: the project has no eval suite yet"
    return f"evaluation run {run.pk} queued on suite {run.suite.name}"


def request_eval(
    model_version,
    suite: EvalSuite | None = None,
    *,
    trigger=EvalRun.Trigger.TRAINING,
    note: str = "",
    user=None,
) -> EvalRun | None:
    """A local run of `suite` (default: the project's default suite, else its newest) for a model
    version. None when the project has no suite."""
    project = model_version.project
    suite = suite or default_suite(project)
    if suite is None:
        return None
    return create_run(
        project,
        suite,
        model_version,
        source=EvalRun.Source.LOCAL,
        user=user,
        trigger=trigger,
        note=note or f"automatic run after training {model_version.name}",
    )


# ================================================================================= run


class RunCancelled(Exception):
    pass


class RunConflict(Exception):
    """Another attempt took the run over (its worker looked dead)."""


def result_row(
    run_id: int,
    case: EvalCase,
    text: str,
    stopped: bool | None,
    new_tokens=None,
    latency_ms=None,
    error: str = "",
) -> EvalResult:
    score = score_case(case.expected, text, case.tools, stopped_at_limit=stopped)
    return EvalResult(
        run_id=run_id,
        case=case,
        output=text,
        stopped_at_limit=stopped,
        new_tokens=new_tokens,
        latency_ms=latency_ms,
        error=error,
        tool_call_accuracy=score["tool_call_accuracy"],
        tool_name_accuracy=score["tool_name_accuracy"],
        tool_args_accuracy=score["tool_args_accuracy"],
        response_quality=score["response_quality"],
        defect_count=sum(score["defects"].values()),
        score=score,
    )


class Attempt:
    """One worker's attempt at a run it claimed: commits batches, notices a cancel or a takeover."""

    def __init__(self, run: EvalRun):
        self.run = run
        self.generated_tokens = 0
        self.generation_seconds = 0.0

    def commit(self, rows: list[EvalResult]):
        """The batch's results and the progress, in one transaction (only while the run is still ours)."""
        with transaction.atomic():
            EvalResult.objects.bulk_create(rows, ignore_conflicts=True, batch_size=500)
            self.check(cases_done=EvalResult.objects.filter(run_id=self.run.pk).count())

    def check(self, **progress):
        if not lifecycle.heartbeat(self.run, **progress):
            raise RunCancelled() if self.run.cancel_requested else RunConflict()


def _cancelled(run: EvalRun):
    """Finish a cancelled run; the cases scored so far stay, with a summary marked partial."""
    done = EvalResult.objects.filter(run_id=run.pk).count()
    if not done:
        lifecycle.finish(run, EvalRun.State.CANCELLED, "Cancelled before any case was scored.")
        return
    summary = {**summary_of(run), "partial": True}
    lifecycle.finish(
        run,
        EvalRun.State.CANCELLED,
        f"Cancelled after {done} of {run.suite.case_count} cases; the results so far are kept.",
        summary=summary,
        cases_done=done,
    )


def pending_cases(run: EvalRun):
    done = EvalResult.objects.filter(run_id=run.pk).values("case_id")
    return list(EvalCase.objects.filter(suite_id=run.suite_id).exclude(pk__in=done).order_by("position"))


def run_eval(run_id: int) -> EvalRun | None:
    """Run (or resume) one eval run. Safe to call twice: a finished run, or one a live worker owns,
    is left alone."""
    run = lifecycle.claim(EvalRun, run_id)
    if run is None:
        return EvalRun.objects.filter(pk=run_id).first()
    attempt = Attempt(run)
    started = time.monotonic()
    try:
        with lifecycle.attempt(run, beat_every=30):  # loading a model and a batch can outlast the timeout
            cases = pending_cases(run)
            if run.source == EvalRun.Source.LOCAL:
                _run_local(attempt, cases)
            elif run.source == EvalRun.Source.ENDPOINT:
                _run_endpoint(attempt, cases)
            else:
                _run_outputs(attempt, cases)
            attempt.check()
            _finalise(attempt, time.monotonic() - started)
    except RunConflict:
        log.info("run %s was taken over by another attempt", run_id)
    except RunCancelled:
        _cancelled(run)
    except (OperationalError, InterfaceError):
        raise  # the database went away: Celery retries, the next attempt resumes
    except (ValueError, OSError, EndpointError, SuiteError, ImportError) as exc:
        lifecycle.finish(run, EvalRun.State.FAILED, f"{exc}")
    except Exception as exc:  # noqa: BLE001 - whatever broke, the run says so instead of hanging "running"
        log.exception("eval run %s failed", run_id)
        lifecycle.finish(run, EvalRun.State.FAILED, f"{type(exc).__name__}: {exc}")
    return EvalRun.objects.filter(pk=run_id).first()


_MODEL_CACHE: dict = {}


def _load(run: EvalRun) -> LoadedModel:
    """The run's model, kept loaded between runs of the same folders in this worker process."""
    base, adapters = model_paths(run.model_version)
    device = pick_device(run.settings.get("device", "auto"))
    stamp = tuple(_mtime(p) for p in (base, *adapters))
    key = (base, tuple(adapters), device, stamp)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE.clear()
        _MODEL_CACHE[key] = load_model(base, adapters, device)
    return _MODEL_CACHE[key]


def _mtime(path: str) -> float:
    try:
        return max((p.stat().st_mtime for p in Path(path).iterdir()), default=0.0) if path else 0.0
    except OSError:
        return 0.0


def _run_local(attempt: Attempt, cases: list[EvalCase]):
    run = attempt.run
    s = run.settings
    EvalRun.objects.filter(pk=run.pk).update(message="Loading the model…")
    loaded = _load(run)
    EvalRun.objects.filter(pk=run.pk).update(message=f"Generating on {loaded.device} ({loaded.label}).")
    max_new, batch_size = s.get("max_new_tokens", 256), s.get("batch_size", 16)
    prompts = [generation.encode(loaded, c.messages, c.tools, s.get("chat_template_kwargs")) for c in cases]
    run.stats = {**(run.stats or {}), "device": loaded.device, "model": loaded.label, "params": loaded.params}
    with generation.threads_for(loaded):
        for batch in generation.plan_batches([len(p) for p in prompts], batch_size):
            attempt.check()
            rows, runnable = [], []
            for i in batch:
                problem = generation.too_long(loaded, prompts[i], max_new)
                if problem:
                    rows.append(result_row(run.pk, cases[i], "", None, 0, None, problem))
                else:
                    runnable.append(i)
            if runnable:
                t0 = time.monotonic()
                outs = generation.generate_batch(loaded, [prompts[i] for i in runnable], max_new)
                elapsed = time.monotonic() - t0
                attempt.generation_seconds += elapsed
                per_case_ms = int(1000 * elapsed / len(runnable))
                for i, g in zip(runnable, outs, strict=True):
                    attempt.generated_tokens += g.new_tokens
                    rows.append(
                        result_row(run.pk, cases[i], g.text, g.stopped_at_limit, g.new_tokens, per_case_ms)
                    )
            attempt.commit(rows)
    if s.get("perplexity", True):
        EvalRun.objects.filter(pk=run.pk).update(message="Measuring general-text perplexity…")
        with generation.threads_for(loaded):
            ppl = perplexity(loaded.model, loaded.tokenizer)
        run.stats["perplexity_texts"] = TEXTS_FINGERPRINT
        EvalRun.objects.filter(pk=run.pk).update(perplexity=ppl)


def _run_endpoint(attempt: Attempt, cases: list[EvalCase]):
    run = attempt.run
    s = run.settings
    client = ChatClient(
        s["base_url"],
        s["model"],
        api_key=run.api_key,
        timeout=s.get("timeout", 120),
        allowed_hosts=settings.MODEL_ENDPOINT_ALLOWED_HOSTS,
    )
    concurrency = s.get("concurrency", 4)
    chunk = max(8, concurrency * 4)
    failures = 0
    run.stats = {**(run.stats or {}), "endpoint": client.url}
    for start in range(0, len(cases), chunk):
        attempt.check()
        part = cases[start : start + chunk]
        t0 = time.monotonic()
        outs = client.complete_many(
            [(c.messages, c.tools) for c in part], s.get("max_new_tokens", 256), concurrency
        )
        attempt.generation_seconds += time.monotonic() - t0
        rows = []
        for c, o in zip(part, outs, strict=True):
            failures += bool(o.error)
            attempt.generated_tokens += o.new_tokens or 0
            rows.append(
                result_row(run.pk, c, o.text, o.stopped_at_limit, o.new_tokens, o.latency_ms, o.error)
            )
        if failures and failures == start + len(part) and start == 0:
            # nothing at all came back from the first chunk: the endpoint is down, not the model wrong
            raise EndpointError(f"the endpoint failed every request of the first batch: {outs[0].error}")
        attempt.commit(rows)


def _run_outputs(attempt: Attempt, cases: list[EvalCase]):
    run = attempt.run
    with run.outputs_file.open("rb") as fh:
        outputs = parse_outputs(run.suite, fh)
    for start in range(0, len(cases), 1000):
        attempt.check()
        rows = []
        for c in cases[start : start + 1000]:
            o = outputs[c.external_id]
            rows.append(
                result_row(run.pk, c, o["output"], o["stopped_at_limit"], o["new_tokens"], o["latency_ms"])
            )
        attempt.commit(rows)


def summary_of(run: EvalRun) -> dict:
    """metrics.summarize over the run's stored results, plus what the report needs beside it."""
    rows = list(
        EvalResult.objects.filter(run_id=run.pk)
        .order_by("case__position")
        .values_list(
            "score", "case__categories", "case__turn_depth", "case__metadata", "error", "stopped_at_limit"
        )
    )
    scores = [r[0] for r in rows]
    summary = summarize(scores, [r[1] or [] for r in rows], [r[2] for r in rows])
    splits = [(r[3] or {}).get("split") for r in rows]
    if len({s for s in splits if s}) > 1:  # e.g. seen vs unseen phrasings
        summary["by_split"] = summarize(scores, [[s] if s else [] for s in splits])["by_category"]
    summary["errors"] = sum(1 for r in rows if r[4])
    summary["stopped_at_limit"] = sum(1 for r in rows if r[5])
    summary["cases"] = len(rows)
    return summary


def _finalise(attempt: Attempt, seconds: float):
    run = attempt.run
    summary = summary_of(run)
    stats = {
        **(run.stats or {}),
        "seconds": round(seconds, 3),
        "generation_seconds": round(attempt.generation_seconds, 3),
        "new_tokens": attempt.generated_tokens,
    }
    if attempt.generation_seconds:
        stats["tokens_per_s"] = round(attempt.generated_tokens / attempt.generation_seconds, 1)
    n = summary["n"]
    m = summary["tool_call_accuracy"]
    text = (
        f"{n} cases scored; tool_call_accuracy {100 * m['value']:.1f}% ± {100 * m['se']:.1f}"
        if n
        else "no cases"
    )
    if summary["errors"]:
        text += f"; {summary['errors']} case(s) had no output (scored as empty)"
    if not lifecycle.finish(run, EvalRun.State.DONE, text + ".", summary=summary, stats=stats, cases_done=n):
        raise RunConflict()
