"""Saving drafts and submitting labels and preferences: the rules pages and API share."""

import hashlib
import json

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from config.db import retry_on_conflict
from toolcalls.openai_format import stored_assistant_message
from toolcalls.validate import FieldError, loads_bounded, validate_assistant_message

from . import assignment
from .models import Correction, Label, Preference, Slot, Status, Task, TaxonomyCategory
from .rollups.signals import batched


def parse_correction(
    content: str, tool_calls_text: str, tools, original: dict | None = None
) -> tuple[dict | None, list[FieldError]]:
    """The correction editor's two fields -> an assistant message, or the errors to show beside them.

    `tool_calls_text` is a JSON list of {"name", "arguments"} (or OpenAI tool_call objects); empty means none.
    `original`: the response under review. The editor starts from it, and an editor left as it was is no
    correction (None, no errors), even where the response itself breaks the tools' schemas.
    """
    content = (content or "").strip()
    text = (tool_calls_text or "").strip()
    calls = []
    if text:
        try:
            raw = loads_bounded(text)  # not json.loads: "[" * 100_000 would be a RecursionError
        except json.JSONDecodeError as exc:
            return None, [
                FieldError(
                    "correction_tool_calls",
                    f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
                )
            ]
        if isinstance(raw, dict):
            raw = [raw]
        if not isinstance(raw, list):
            return None, [FieldError("correction_tool_calls", "must be a list of calls")]
        for item in raw:
            fn = item.get("function", item) if isinstance(item, dict) else item
            calls.append({"type": "function", "function": fn if isinstance(fn, dict) else {}})
    if not content and not calls:
        return None, []
    message = {"role": "assistant", "content": content or None}
    if calls:
        message["tool_calls"] = calls
    if original is not None and same_message(message, original):
        return None, []
    errors = validate_assistant_message(message, tools, "correction", check_schema=True)
    if errors:
        return None, errors
    return stored_assistant_message(message), []


# --- whose task it is ------------------------------------------------------------------------


def work_of(task: Task, user) -> Label | Preference | None:
    """The annotator's label (label task) or preference (compare task) on this task, if any."""
    if task.kind == Task.Kind.LABEL:
        return Label.objects.filter(response_id=task.response_id, annotator=user).first()
    return Preference.objects.filter(
        response_a_id=task.response_id, response_b_id=task.response_b_id, annotator=user
    ).first()


def work_state(task: Task, user) -> tuple[str, Label | Preference | None]:
    """Where the annotator stands with a task, and their work on it. One of:
    editable (the queue handed it to them: they hold its lock), reserved (a lead reserved one of its free
    slots for them), fix (a lead sent their work back), submitted (waiting for a lead's review: still theirs
    to change), done (approved: final), none (not theirs)."""
    work = work_of(task, user)
    if work is not None and work.status == Status.REJECTED:
        return "fix", work
    if work is not None and work.status == Status.SUBMITTED:
        return "submitted", work
    if work is not None and work.status == Status.APPROVED:
        return "done", work
    slot = assignment.handed_slot(task, user)
    if slot is None:
        return "none", work
    return {Slot.State.LOCKED: "editable", Slot.State.FREE: "reserved"}.get(slot.state, "done"), work


APPROVED_IS_FINAL = "This item was approved and is final."
SUBMIT_TO_CHANGE = "You submitted this item: to change it, submit it again (drafts are not saved over it)."


def _check_may_edit(task: Task, user, submitting: bool = False) -> tuple[str, Label | Preference | None]:
    """The one rule for drafts and submits: only a task the queue handed the annotator (or a lead reserved for
    them, or sent back to them) is theirs to write, and their own submitted work until a lead reviews it
    (changed by submitting again: a draft never overwrites what a lead may be reviewing). A submit may also
    fill a still-free slot when their lock lapsed: their draft proves the queue handed it to them
    (claim_for_submit refuses it if the slot is gone)."""
    mode, work = work_state(task, user)
    if mode == "done":
        final = work is not None and work.status == Status.APPROVED
        raise assignment.QueueError(APPROVED_IS_FINAL if final else assignment.ALREADY_SUBMITTED)
    if mode == "submitted" and not submitting:
        raise assignment.QueueError(SUBMIT_TO_CHANGE)
    if mode == "none" and not (submitting and work is not None):
        raise assignment.NotHanded(assignment.NOT_HANDED)
    return mode, work


def label_editor(task: Task, work: Label | None) -> dict:
    """What the labelling editor starts from: the saved draft, else the submitted correction, else the
    response itself (unchanged is not a correction). Tool calls as the editor's JSON text."""
    draft = (work.draft if work else {}) or {}
    correction = Correction.objects.filter(label=work).first() if work is not None and work.pk else None
    message = correction.message if correction else task.response.message
    calls = editor_calls(message)
    return {
        "content": draft["content"] if "content" in draft else (message.get("content") or ""),
        "tool_calls": draft["tool_calls"]
        if "tool_calls" in draft
        else (json.dumps(calls, indent=2, ensure_ascii=False) if calls else ""),
        "saved_at": draft.get("saved_at", ""),
    }


def shown_left(task: Task, user, work: Preference | None) -> str:
    """Which response ("a" or "b") this annotator sees on the left: the side recorded with their choice, else
    a fixed coin flip per annotator and item (so position never favours one model)."""
    if work is not None and work.choice:
        return work.left_side
    return "b" if int(hashlib.sha256(f"{user.pk}:{task.pk}".encode()).hexdigest(), 16) % 2 == 1 else "a"


# --- drafts ----------------------------------------------------------------------------------


def save_draft(task: Task, user, data: dict) -> Label | Preference:
    """Autosave of a label or a comparison, whichever the task is."""
    return (save_label_draft if task.kind == Task.Kind.LABEL else save_preference_draft)(task, user, data)


def draft_saved_at(work: Label | Preference) -> str:
    if isinstance(work, Label):
        return (work.draft or {}).get("saved_at", "")
    return work.updated_at.isoformat()


def save_label_draft(task: Task, user, data: dict) -> Label:
    """Autosave: whatever the annotator has typed so far, valid or not, on a task that is theirs to edit."""
    _check_may_edit(task, user)
    return _write_label_draft(task, user, data)


def _write_label_draft(task: Task, user, data: dict) -> Label:
    label, _ = Label.objects.get_or_create(response=task.response, annotator=user)
    if label.status in (Status.SUBMITTED, Status.APPROVED):  # never touches submitted work
        return label
    label.verdict = data.get("verdict") if data.get("verdict") in Label.Verdict.values else label.verdict
    label.note = _text(data.get("note"), label.note)
    label.draft = {
        "content": _text(data.get("correction_content"), ""),
        "tool_calls": _text(data.get("correction_tool_calls"), "", limit=50000),
        "saved_at": timezone.now().isoformat(),
    }
    label.time_spent_ms = max(label.time_spent_ms, time_spent_ms(data.get("time_spent_ms")))
    label.save()
    label.categories.set(category_ids(task.project_id, data.get("categories")))
    return label


def save_preference_draft(task: Task, user, data: dict) -> Preference:
    """Autosave of a comparison: the choice, reason and sides so far, on a task that is theirs to edit."""
    _check_may_edit(task, user)
    return _write_preference_draft(task, user, data)


def _write_preference_draft(task: Task, user, data: dict) -> Preference:
    pref, _ = Preference.objects.get_or_create(
        annotator=user, response_a=task.response, response_b=task.response_b
    )
    if pref.status in (Status.DRAFT, Status.REJECTED):
        choice, left = data.get("choice"), data.get("left_side")
        pref.choice = choice if choice in Preference.Choice.values else pref.choice
        pref.reason = _text(data.get("reason"), pref.reason)
        pref.left_side = left if left in ("a", "b") else pref.left_side
        pref.time_spent_ms = max(pref.time_spent_ms, time_spent_ms(data.get("time_spent_ms")))
        pref.save()
    return pref


# --- submitting --------------------------------------------------------------------------------


def submit(task: Task, user, data: dict) -> Label | Preference:
    """Submit a label or a comparison, whichever the task is."""
    return (submit_label if task.kind == Task.Kind.LABEL else submit_preference)(task, user, data)


@retry_on_conflict
def submit_label(task: Task, user, data: dict) -> Label:
    """Validate and submit; fills this annotator's slot (or replaces their sent-back or not yet reviewed
    submission). Raises ValidationError (field -> messages) or QueueError. data["expected_status"], when
    given, is the status the work had when the annotator opened it: a change since is refused (409)."""
    # Who may submit is checked once, under the row locks of the transaction below (claim_for_submit,
    # _refuse_final); the up-front check runs only before keeping a refused submission as a draft.
    errors: dict[str, list[str]] = {}
    verdict = data.get("verdict")
    if verdict not in Label.Verdict.values:
        errors["verdict"] = ["Choose reasonable or unreasonable."]
    try:
        chosen = category_ids(task.project_id, data.get("categories"), strict=True)
    except ValidationError as exc:
        errors.update(exc.message_dict)
        chosen = []
    if verdict == Label.Verdict.UNREASONABLE and not chosen:
        errors.setdefault("categories", []).append("An unreasonable response needs at least one category.")
    spent = 0
    try:
        spent = time_spent_ms(data.get("time_spent_ms"), strict=True)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    expected = _expected_status(data, errors)
    correction, problems = parse_correction(
        data.get("correction_content"),
        data.get("correction_tool_calls"),
        task.response.conversation.tools,
        original=task.response.message,  # the editor starts from it: unchanged is not a correction
    )
    for p in problems:
        errors.setdefault(p.field, []).append(p.message)
    if errors:
        _check_may_edit(task, user, submitting=True)
        _write_label_draft(task, user, data)  # nothing typed is lost
        raise ValidationError(errors)
    with transaction.atomic(), batched():  # the label, its categories: one roll-up pass
        label = Label.objects.select_for_update().filter(response=task.response, annotator=user).first()
        _refuse_final(label, expected)
        filled = _filled(label)
        slot = None if filled else assignment.claim_for_submit(task, user, lapsed_ok=label is not None)
        label = label or Label(response=task.response, annotator=user)
        label.verdict, label.note, label.draft = verdict, _text(data.get("note"), ""), {}
        label.status, label.submitted_at = Status.SUBMITTED, timezone.now()
        label.time_spent_ms = max(label.time_spent_ms, spent)
        label.save()
        label.categories.set(chosen)
        if correction:
            Correction.objects.update_or_create(label=label, defaults={"message": correction})
        else:
            Correction.objects.filter(label=label).delete()
        if slot is not None:
            assignment.complete(slot, user)
    return label


@retry_on_conflict
def submit_preference(task: Task, user, data: dict) -> Preference:
    """Validate and submit a comparison, as submit_label does a label. Raises ValidationError or
    QueueError."""
    choice = data.get("choice")
    reason = _text(data.get("reason"), "").strip()
    errors = {}
    if choice not in Preference.Choice.values:
        errors["choice"] = ["Choose A, B, tie or both bad."]
    if task.project.setting("require_preference_reason") and not reason:
        errors["reason"] = ["This project asks for a reason with every choice."]
    spent = 0
    try:
        spent = time_spent_ms(data.get("time_spent_ms"), strict=True)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    left = data.get("left_side") if data.get("left_side") in ("a", "b") else "a"
    expected = _expected_status(data, errors)
    if errors:
        _check_may_edit(task, user, submitting=True)
        _write_preference_draft(task, user, data)  # nothing typed is lost
        raise ValidationError(errors)
    with transaction.atomic(), batched():
        pref = (
            Preference.objects.select_for_update()
            .filter(annotator=user, response_a=task.response, response_b=task.response_b)
            .first()
        )
        _refuse_final(pref, expected)
        filled = _filled(pref)
        slot = None if filled else assignment.claim_for_submit(task, user, lapsed_ok=pref is not None)
        pref = pref or Preference(annotator=user, response_a=task.response, response_b=task.response_b)
        pref.choice, pref.reason, pref.left_side = choice, reason, left
        pref.status, pref.submitted_at = Status.SUBMITTED, timezone.now()
        pref.time_spent_ms = max(pref.time_spent_ms, spent)
        pref.save()
        if slot is not None:
            assignment.complete(slot, user)
    return pref


def _expected_status(data: dict, errors: dict) -> str | None:
    """The status the annotator's work had when their page (or API client) loaded it, if they say."""
    value = data.get("expected_status")
    if value is None or value == "":
        return None
    if value not in Status.values:
        errors["expected_status"] = [f"Choose one of {', '.join(Status.values)}."]
        return None
    return value


def _filled(work: Label | Preference | None) -> bool:
    """Work that already filled its slot: a fix of sent-back work, or a change to submitted work."""
    return work is not None and work.status in (Status.REJECTED, Status.SUBMITTED)


def _refuse_final(work: Label | Preference | None, expected: str | None = None):
    """Under the row lock, so a lead's review and the annotator's change never cross: approved work is
    final; and a submit from a page that showed the work in another state (a second tab submitted it, a
    lead sent it back meanwhile) is refused instead of saved over what the annotator has not seen."""
    status = work.status if work is not None else Status.DRAFT
    if status == Status.APPROVED:
        raise assignment.QueueError(APPROVED_IS_FINAL)
    if expected is None or expected == status:
        return
    if status == Status.SUBMITTED:
        raise assignment.QueueError(
            f"{assignment.ALREADY_SUBMITTED} (in another tab?) Open it from your history to change it."
        )
    if status == Status.REJECTED:
        raise assignment.QueueError(
            "A lead sent this item back while you were changing it: read their comment, then submit again."
        )
    raise assignment.QueueError(f"This item changed since you opened it (it is now {status}): reload it.")


def editor_calls(message: dict | None) -> list[dict]:
    """An assistant message's tool calls as the correction editor shows them: {"name", "arguments"},
    arguments decoded from their JSON string (left as text when it is not JSON)."""
    calls = []
    for call in (message or {}).get("tool_calls") or []:
        fn = call.get("function", {})
        args = fn.get("arguments", {})
        if isinstance(args, str):
            try:
                args = loads_bounded(args)  # may be typed text: "[" * 100_000 must not recurse
            except json.JSONDecodeError:
                pass
        calls.append({"name": fn.get("name"), "arguments": args})
    return calls


def _comparable(message: dict) -> tuple:
    calls = tuple(json.dumps([c["name"], c["arguments"]], sort_keys=True) for c in editor_calls(message))
    return ((message or {}).get("content") or "").strip(), calls


def same_message(a: dict, b: dict) -> bool:
    return _comparable(a) == _comparable(b)


MAX_TIME_SPENT_MS = 24 * 3600 * 1000  # a tab left open overnight is not a day's work
MAX_CATEGORIES = 500
MAX_ID = 2**63 - 1  # a bigint primary key; anything larger is no id (and SQLite cannot even compare it)


def time_spent_ms(value, strict: bool = False) -> int:
    """Milliseconds spent on a task, clamped to 0 … 24 h. Missing is 0; anything else that is not a whole
    number is a ValidationError on `time_spent_ms` when strict (a submit), 0 otherwise (an autosave)."""
    if value is None or value == "":
        return 0
    try:
        if isinstance(value, bool):
            raise TypeError
        return max(0, min(int(value), MAX_TIME_SPENT_MS))
    except (TypeError, ValueError, OverflowError):
        if strict:
            raise ValidationError(
                {"time_spent_ms": [f"{value!r} is not a whole number of milliseconds."]}
            ) from None
        return 0


def category_ids(project_id: int, raw, strict: bool = False) -> list[int]:
    """The active categories of the project among the ids a form or client sent (strings or numbers).
    strict (a submit, a gold decision): anything else is a ValidationError on `categories`; an autosave
    drops it."""
    if raw is None or raw == "":
        raw = []
    elif isinstance(raw, (str, int)):
        raw = [raw]
    elif not isinstance(raw, (list, tuple)):
        if strict:
            raise ValidationError({"categories": ["Send a list of category ids."]})
        raw = []
    if strict and len(raw) > MAX_CATEGORIES:
        raise ValidationError({"categories": [f"At most {MAX_CATEGORIES} categories."]})
    ids, bad = [], []
    for value in raw[:MAX_CATEGORIES]:
        try:
            number = 0 if isinstance(value, bool | float) else int(value)
        except (TypeError, ValueError):
            number = 0
        if 1 <= number <= MAX_ID:
            ids.append(number)
        else:
            bad.append(value)
    if strict and bad:
        raise ValidationError({"categories": [f"{v!r} is not a category id." for v in bad[:5]]})
    valid = set(
        TaxonomyCategory.objects.filter(project_id=project_id, active=True, pk__in=ids).values_list(
            "pk", flat=True
        )
    )
    if strict and set(ids) - valid:
        raise ValidationError({"categories": ["Some categories are not active categories of this project."]})
    return [i for i in ids if i in valid]


def _text(value, default: str, limit: int = 20000) -> str:
    """A free-text field as sent, cut to `limit` characters; missing keeps `default`."""
    return default if value is None else str(value)[:limit]
