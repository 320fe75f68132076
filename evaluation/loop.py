"""Close the loop: a run's failed or regressed cases go to the annotator queue as new badcases.

Each case becomes (or reuses) a Conversation holding its context, and the model's output
is attached as a ModelResponse of the run's model version; ``assignment.sync_tasks`` then
makes the labelling (and, where another model's response to the same context exists,
comparison) tasks. The next round of labels starts from the eval.

Exactly once: an EvalBadcase row per (run, case) is the record that a case was sent, the
run row is locked while sending, and ModelResponse's own uniqueness (conversation, model,
context, text) means a second run with the same output attaches nothing new.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q

from annotator.assignment import sync_tasks
from annotator.importers import assistant_message_from_raw
from annotator.models import Conversation, ModelResponse, Split, content_hash

from .models import EvalBadcase, EvalResult, EvalRun

SCOPES = {
    "failed": "failed cases (wrong tool call or a response-quality defect)",
    "tool_call": "cases with a wrong tool call only",
    "regressed": "regressions: passed in the baseline run, failed in this one",
}
DEFAULT_PRIORITY = 10


def failing(qs, scope: str):
    if scope == "tool_call":
        return qs.filter(tool_call_accuracy=0)
    return qs.filter(Q(tool_call_accuracy=0) | Q(response_quality=0))


def candidates(run: EvalRun, scope: str = "failed", baseline: EvalRun | None = None):
    """The results the action would send (already-sent cases included)."""
    if scope not in SCOPES:
        raise ValidationError({"scope": f"one of {', '.join(SCOPES)}"})
    qs = EvalResult.objects.filter(run=run)
    if scope == "regressed":
        if baseline is None:
            raise ValidationError({"baseline": "pick the run to compare against"})
        if baseline.suite_id != run.suite_id or baseline.pk == run.pk:
            raise ValidationError({"baseline": "must be another run on the same suite"})
        if baseline.status != EvalRun.State.DONE:
            raise ValidationError({"baseline": "has not finished"})
        passed_before = EvalResult.objects.filter(run=baseline, tool_call_accuracy=1, response_quality=1)
        qs = failing(qs, "failed").filter(case_id__in=passed_before.values("case_id"))
    else:
        qs = failing(qs, scope)
    return qs.select_related("case").order_by("case__position")


def _conversation_for(run: EvalRun, case, split: str | None, priority: int) -> tuple[Conversation, int]:
    """(conversation, context length) the response answers: the case's source conversation when its
    context is that conversation's prefix, else one made (or found) for the case."""
    project = run.project
    if case.conversation_id and case.context_length:
        conv = Conversation.objects.filter(pk=case.conversation_id, project=project).first()
        if conv is not None and len(conv.messages) >= case.context_length:
            return conv, case.context_length
    tools = case.tools or []
    digest = content_hash(case.messages, tools)
    conv = Conversation.objects.filter(project=project, content_hash=digest).order_by("id").first()
    if conv is not None and conv.messages == case.messages:
        return conv, len(case.messages)
    external_id = f"eval:{case.external_id}"[:255]
    taken = Conversation.objects.filter(project=project, external_id=external_id).exists()
    if taken:
        external_id = f"eval:{case.external_id}"[:246] + f":{digest[:8]}"
    conv = Conversation.objects.create(
        project=project,
        external_id=external_id,
        messages=case.messages,
        tools=tools,
        content_hash=digest,
        split=split or Split.EVAL,
        priority=priority,
        metadata={
            "source": "eval",
            "eval_suite": run.suite.label,
            "eval_case": case.external_id,
            "categories": case.categories,
            "turn_depth": case.turn_depth,
            "expected": case.expected,
        },
    )
    return conv, len(case.messages)


def send_to_queue(
    run: EvalRun,
    user=None,
    scope: str = "failed",
    baseline: EvalRun | None = None,
    split: str | None = None,
    priority: int = DEFAULT_PRIORITY,
    limit: int | None = None,
) -> dict:
    """Send the run's failing (or regressed) cases to the annotator queue, each exactly once.

    -> {"sent": n new badcases, "already": n sent before, "responses": n new responses,
        "label_tasks": n, "compare_tasks": n}
    """
    if run.status != EvalRun.State.DONE:
        raise ValidationError({"run": "only a finished run's cases can be sent"})
    if split is not None and split not in Split.values:
        raise ValidationError({"split": f"one of {', '.join(Split.values)}"})
    reason = EvalBadcase.Reason.REGRESSED if scope == "regressed" else EvalBadcase.Reason.FAILED
    sent = already = new_responses = 0
    with transaction.atomic():
        EvalRun.objects.select_for_update().filter(pk=run.pk).first()  # one sender per run at a time
        done_cases = set(EvalBadcase.objects.filter(run=run).values_list("case_id", flat=True))
        rows = list(candidates(run, scope, baseline))
        for result in rows:
            if result.case_id in done_cases:
                already += 1
                continue
            if limit is not None and sent >= limit:
                break
            case = result.case
            conv, length = _conversation_for(run, case, split, priority)
            raw = result.output
            response, created = ModelResponse.objects.get_or_create(
                conversation=conv,
                model_version=run.model_version,
                context_length=length,
                response_hash=content_hash(raw),
                defaults={
                    "raw_text": raw,
                    "message": assistant_message_from_raw(raw, case.tools or []),
                    "generation_settings": {
                        "eval_run": run.pk,
                        "source": run.source,
                        **{
                            k: v
                            for k, v in (run.settings or {}).items()
                            if k in ("max_new_tokens", "model", "base_url")
                        },
                    },
                },
            )
            new_responses += created
            EvalBadcase.objects.create(
                run=run,
                case=case,
                response=response,
                reason=reason,
                baseline_run=baseline if scope == "regressed" else None,
                created_by=user if getattr(user, "pk", None) else None,
            )
            sent += 1
    made = sync_tasks(run.project) if sent else {"label": 0, "compare": 0}
    return {
        "sent": sent,
        "already": already,
        "responses": new_responses,
        "label_tasks": made.get("label", 0),
        "compare_tasks": made.get("compare", 0),
    }
