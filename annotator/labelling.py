"""Saving drafts and submitting labels and preferences: the rules pages and API share."""

import json

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from config.db import retry_on_conflict

from . import assignment, rollups
from .models import Correction, Label, Preference, Status, Task, TaxonomyCategory
from .validation import FieldError, validate_assistant_message


def parse_correction(content: str, tool_calls_text: str, tools) -> tuple[dict | None, list[FieldError]]:
    """The correction editor's two fields -> an assistant message, or the errors to show beside them.

    `tool_calls_text` is a JSON list of {"name", "arguments"} (or OpenAI tool_call objects); empty means none.
    """
    content = (content or "").strip()
    text = (tool_calls_text or "").strip()
    calls = []
    if text:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            return None, [FieldError("tool_calls", f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})")]
        if isinstance(raw, dict):
            raw = [raw]
        if not isinstance(raw, list):
            return None, [FieldError("tool_calls", "must be a list of calls")]
        for item in raw:
            fn = item.get("function", item) if isinstance(item, dict) else item
            calls.append({"type": "function", "function": fn if isinstance(fn, dict) else {}})
    if not content and not calls:
        return None, []
    message = {"role": "assistant", "content": content or None}
    if calls:
        message["tool_calls"] = calls
    errors = validate_assistant_message(message, tools, "correction", check_schema=True)
    if errors:
        return None, errors
    from .serializers import normalise_assistant_message

    return normalise_assistant_message(message), []


def save_label_draft(task: Task, user, data: dict) -> Label:
    """Autosave: whatever the annotator has typed so far, valid or not. Never touches submitted work."""
    label, _ = Label.objects.get_or_create(response=task.response, annotator=user)
    if label.status in (Status.SUBMITTED, Status.APPROVED):
        return label
    label.verdict = data.get("verdict") if data.get("verdict") in Label.Verdict.values else label.verdict
    label.note = data.get("note", label.note)[:20000]
    label.draft = {"content": data.get("correction_content", "")[:20000],
                   "tool_calls": data.get("correction_tool_calls", "")[:50000],
                   "saved_at": timezone.now().isoformat()}
    label.time_spent_ms = max(label.time_spent_ms, _int(data.get("time_spent_ms")))
    label.save()
    ids = _category_ids(task, data.get("categories", []))
    label.categories.set(ids)
    return label


@retry_on_conflict
def submit_label(task: Task, user, data: dict) -> Label:
    """Validate and submit; fills this annotator's slot. Raises ValidationError (field -> messages) or QueueError."""
    errors: dict[str, list[str]] = {}
    verdict = data.get("verdict")
    if verdict not in Label.Verdict.values:
        errors["verdict"] = ["Choose reasonable or unreasonable."]
    try:
        category_ids = _category_ids(task, data.get("categories", []), strict=True)
    except ValidationError as exc:
        errors.update(exc.message_dict)
        category_ids = []
    if verdict == Label.Verdict.UNREASONABLE and not category_ids:
        errors.setdefault("categories", []).append("An unreasonable response needs at least one category.")
    correction, problems = parse_correction(data.get("correction_content", ""), data.get("correction_tool_calls", ""),
                                            task.response.conversation.tools)
    for p in problems:
        errors.setdefault(p.field, []).append(p.message)
    if errors:
        save_label_draft(task, user, data)  # nothing typed is lost
        raise ValidationError(errors)
    if correction and same_message(correction, task.response.message):
        correction = None  # the editor starts from the response itself: unchanged is not a correction
    with transaction.atomic(), rollups.batched():  # the label, its categories: one roll-up pass
        label = Label.objects.select_for_update().filter(response=task.response, annotator=user).first()
        resubmission = label is not None and label.status == Status.REJECTED
        if label is not None and label.status == Status.APPROVED:
            raise assignment.QueueError("This label was approved and is final.")
        slot = None if resubmission else assignment.claim_for_submit(task, user)
        label = label or Label(response=task.response, annotator=user)
        label.verdict, label.note, label.draft = verdict, data.get("note", "")[:20000], {}
        label.status, label.submitted_at = Status.SUBMITTED, timezone.now()
        label.time_spent_ms = max(label.time_spent_ms, _int(data.get("time_spent_ms")))
        label.save()
        label.categories.set(category_ids)
        if correction:
            Correction.objects.update_or_create(label=label, defaults={"message": correction})
        else:
            Correction.objects.filter(label=label).delete()
        if slot is not None:
            assignment.complete(slot, user)
    return label


@retry_on_conflict
def submit_preference(task: Task, user, data: dict) -> Preference:
    choice = data.get("choice")
    reason = (data.get("reason") or "").strip()
    errors = {}
    if choice not in Preference.Choice.values:
        errors["choice"] = ["Choose A, B, tie or both bad."]
    if task.project.setting("require_preference_reason") and not reason:
        errors["reason"] = ["This project asks for a reason with every choice."]
    left = data.get("left_side") if data.get("left_side") in ("a", "b") else "a"
    if errors:
        Preference.objects.update_or_create(
            annotator=user, response_a=task.response, response_b=task.response_b,
            defaults={"reason": reason, "left_side": left, "choice": choice if choice in Preference.Choice.values else ""},
        )
        raise ValidationError(errors)
    with transaction.atomic(), rollups.batched():
        pref = Preference.objects.select_for_update().filter(
            annotator=user, response_a=task.response, response_b=task.response_b).first()
        resubmission = pref is not None and pref.status == Status.REJECTED
        if pref is not None and pref.status == Status.APPROVED:
            raise assignment.QueueError("This comparison was approved and is final.")
        slot = None if resubmission else assignment.claim_for_submit(task, user)
        pref = pref or Preference(annotator=user, response_a=task.response, response_b=task.response_b)
        pref.choice, pref.reason, pref.left_side = choice, reason, left
        pref.status, pref.submitted_at = Status.SUBMITTED, timezone.now()
        pref.time_spent_ms = max(pref.time_spent_ms, _int(data.get("time_spent_ms")))
        pref.save()
        if slot is not None:
            assignment.complete(slot, user)
    return pref


def editor_calls(message: dict | None) -> list[dict]:
    """An assistant message's tool calls as the correction editor shows them: {"name", "arguments"},
    arguments decoded from their JSON string (left as text when it is not JSON)."""
    calls = []
    for call in (message or {}).get("tool_calls") or []:
        fn = call.get("function", {})
        args = fn.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                pass
        calls.append({"name": fn.get("name"), "arguments": args})
    return calls


def _comparable(message: dict) -> tuple:
    calls = tuple(json.dumps([c["name"], c["arguments"]], sort_keys=True) for c in editor_calls(message))
    return ((message or {}).get("content") or "").strip(), calls


def same_message(a: dict, b: dict) -> bool:
    return _comparable(a) == _comparable(b)


def _int(value) -> int:
    try:
        return max(0, min(int(value), 24 * 3600 * 1000))
    except (TypeError, ValueError):
        return 0


def _category_ids(task: Task, raw, strict: bool = False) -> list[int]:
    ids = []
    for value in raw or []:
        try:
            ids.append(int(value))
        except (TypeError, ValueError):
            if strict:
                raise ValidationError({"categories": [f"{value!r} is not a category id."]}) from None
    valid = set(TaxonomyCategory.objects.filter(project_id=task.project_id, active=True, pk__in=ids)
                .values_list("pk", flat=True))
    if strict and set(ids) - valid:
        raise ValidationError({"categories": ["Some categories are not active categories of this project."]})
    return [i for i in ids if i in valid]
