"""The annotator's workspace pages: next task, labelling, comparing, drafts, heartbeat, live validation.

Views stay thin: queue rules live in assignment.py, submission rules in labelling.py; the REST endpoints
for the same actions (annotator/queue_api.py) call the same functions.
"""

import json
from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import CharField, Count, Value
from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.timesince import timesince
from django.views.decorators.http import require_POST

from . import assignment, hints, labelling, taxonomy
from .dashboards.filters import rollup_sum
from .models import (
    AnnotatorDay,
    AnnotatorPreferenceDay,
    Label,
    Preference,
    Review,
    Role,
    Slot,
    Split,
    Status,
    Task,
)
from .policy import has_role, project_for


def _task(request, slug, task_id):
    project = project_for(request.user, slug, Role.ANNOTATOR)
    task = get_object_or_404(
        Task.objects.select_related(
            "response__conversation", "response__model_version", "response_b__model_version"
        ),
        project=project,
        pk=task_id,
    )
    return project, task


def _kind(request) -> str:
    return Task.Kind.COMPARE if request.GET.get("kind") == "compare" else Task.Kind.LABEL


@login_required
def next_item(request, slug):
    project = project_for(request.user, slug, Role.ANNOTATOR)
    kind = _kind(request)
    slot = assignment.next_task(project, request.user, kind)
    if slot is None:
        return render(request, "annotator/queue_empty.html", {"project": project, "kind": kind})
    return redirect("annotator:task", slug=slug, task_id=slot.task_id)


RECENT_MESSAGES = 4


def submitted_ago(when) -> str:
    """When work was submitted, in words: "just now" under a minute (timesince would say "0 minutes"),
    else "5 minutes ago", "1 hour, 5 minutes ago"."""
    if when is None:
        return ""
    if timezone.now() - when < timedelta(minutes=1):
        return "just now"
    return f"{timesince(when)} ago"


def split_context(context: list) -> tuple[list, list]:
    """The context as (earlier, recent): recent is the turn the response answers (from the last user
    message, at most RECENT_MESSAGES), shown in full above the response; earlier starts collapsed, so the
    response under review is on screen when the page opens."""
    users = [i for i, m in enumerate(context) if isinstance(m, dict) and m.get("role") == "user"]
    start = users[-1] if users else max(0, len(context) - 2)
    start = max(start, len(context) - RECENT_MESSAGES)
    if start <= 1:  # one hidden message is not worth a click
        start = 0
    return context[:start], context[start:]


COUNTED = (Status.SUBMITTED, Status.APPROVED, Status.REJECTED)  # the statuses the roll-ups count


def work_counts(project, user) -> dict:
    """Per kind (label, compare): the annotator's work by status (submitted, approved, rejected), read from
    the day roll-ups (AnnotatorDay, AnnotatorPreferenceDay) that every write keeps current: a sum over the
    annotator's few hundred day rows, where counting their labels reads tens of thousands of rows at 1M
    items (the label and preference rows are spread over the heap; preferences join to their project)."""
    out = {}
    for kind, rollup in ((Task.Kind.LABEL, AnnotatorDay), (Task.Kind.COMPARE, AnnotatorPreferenceDay)):
        sums = rollup.objects.filter(project=project, annotator=user.pk).aggregate(
            **{status: rollup_sum([f"{split}_{status}" for split in Split.values], "n") for status in COUNTED}
        )
        out[kind] = {status: sums[status] or 0 for status in COUNTED}
    return out


def progress(project, user, current: str | None = None, counts: dict | None = None) -> dict:
    """Per kind (label, compare): the annotator's submitted work (done: submitted or approved; sent back:
    to fix) and what is left for them: the item they hold and what the queue still has (counted up to
    QUEUE_COUNT_CAP). `current`: the kind of the item on screen while it is still to do ("n of N").
    `counts`: work_counts(project, user) when the caller has it already."""
    counts = counts or work_counts(project, user)
    held = dict(
        Slot.objects.filter(project=project, annotator=user, state=Slot.State.LOCKED)
        .values_list("task__kind")
        .annotate(n=Count("id"))
        .order_by()
    )
    out = {}
    for kind, by_status in counts.items():
        done = by_status[Status.SUBMITTED] + by_status[Status.APPROVED]
        sent_back = by_status[Status.REJECTED]
        queued = assignment.queue_size_by_kind(project, user, kind)
        left = queued + held.get(kind, 0)
        total = done + sent_back + left
        out[kind] = {
            "done": done,
            "sent_back": sent_back,
            "left": left,
            "capped": queued >= assignment.QUEUE_COUNT_CAP,
            "total": total,
            "position": done + 1 if kind == current else None,
        }
    return out


def _arguments_text(key, value) -> str:
    body = json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n  ")
    return f"  {json.dumps(key, ensure_ascii=False)}: {body}"


def _call_view(call: dict | None, other: dict | None) -> dict:
    """One tool call as the compare page shows it: its name, and its arguments one row per argument, each
    row marked where the call on the other side differs (another value, or no such argument)."""
    if call is None:
        return {}
    args, theirs = call["arguments"], (other or {}).get("arguments")
    if isinstance(args, dict):
        theirs = theirs if isinstance(theirs, dict) else {}
        rows = [
            {
                "text": _arguments_text(k, v),
                "differs": other is not None and (k not in theirs or theirs[k] != v),
            }
            for k, v in args.items()
        ]
        missing = [k for k in theirs if k not in args] if other is not None else []
    else:
        text = args if isinstance(args, str) else json.dumps(args, indent=2, ensure_ascii=False)
        rows, missing = [{"text": text, "differs": other is not None and args != theirs}], []
    return {  # a call with none opposite is marked as a whole (only_here), not argument by argument
        "name": call["name"],
        "name_differs": other is not None and other["name"] != call["name"],
        "only_here": other is None,
        "object": isinstance(args, dict),
        "rows": rows,
        "missing": missing,
    }


def compare_calls(left: dict, right: dict) -> tuple[list, list]:
    """The tool calls of two responses, paired by position, with what differs between them marked per
    argument (templates escape every row: model text never becomes markup)."""
    a, b = labelling.editor_calls(left), labelling.editor_calls(right)
    n = max(len(a), len(b))
    a, b = a + [None] * (n - len(a)), b + [None] * (n - len(b))
    return (
        [_call_view(x, y) for x, y in zip(a, b, strict=True) if x is not None],
        [_call_view(y, x) for x, y in zip(a, b, strict=True) if y is not None],
    )


@login_required
def task_page(request, slug, task_id, errors=None, status=200, form=None):
    project, task = _task(request, slug, task_id)
    mode, work = labelling.work_state(task, request.user)
    if mode in ("none", "reserved"):  # next hands out reserved items first
        messages.info(request, "That item is not assigned to you; here is your next one.")
        return redirect(
            reverse("annotator:next", args=[slug]) + ("?kind=compare" if task.kind == "compare" else "")
        )
    response = task.response
    earlier, recent = split_context(response.conversation.messages[: response.context_length])
    reviews = []
    if work is not None and work.pk:
        reviews = Review.objects.filter(
            **({"label": work} if task.kind == "label" else {"preference": work})
        )[:3]
    ctx = {
        "project": project,
        "task": task,
        "mode": mode,
        "work": work,
        "errors": errors or {},
        "earlier_messages": earlier,
        "context_messages": recent,
        "tools": response.conversation.tools,
        "reviews": reviews,
        "progress": progress(project, request.user, task.kind if mode == "editable" else None),
        "expected_status": work.status if work is not None else Status.DRAFT,
        "submitted_ago": submitted_ago(work.submitted_at if work is not None else None),
        "slot": Slot.objects.filter(task=task, annotator=request.user).first(),
        "lead": has_role(request.user, project, Role.LEAD),
    }
    if task.kind == Task.Kind.LABEL:
        editor = labelling.label_editor(task, work)
        pristine = labelling.label_editor(task, None)  # the response itself: not a correction
        ctx.update(
            {
                "response": response,
                "categories": taxonomy.category_rows(project),
                "chosen": set(work.categories.values_list("pk", flat=True)) if work and work.pk else set(),
                "verdict": (form or {}).get("verdict") or (work.verdict if work else ""),
                "note": (form or {}).get("note", work.note if work else ""),
                "correction_content": (form or {}).get("correction_content", editor["content"]),
                "correction_tool_calls": (form or {}).get("correction_tool_calls", editor["tool_calls"]),
                "draft_saved_at": editor["saved_at"],
            }
        )
        ctx["correction_open"] = any("correction" in k for k in ctx["errors"]) or (
            ctx["correction_content"],
            ctx["correction_tool_calls"],
        ) != (pristine["content"], pristine["tool_calls"])
        if form is not None:
            ctx["chosen"] = {int(c) for c in form.getlist("categories") if c.isdigit()}
        if ctx["lead"] or not project.setting("blind"):  # never shown to annotators in blind mode
            ctx["verdict_hint"] = hints.verdict_suggestions(project, [response.pk]).get(response.pk)
        template = "annotator/label.html"
    else:
        # Left/right is randomised per annotator and item, and recorded with the choice.
        flip = labelling.shown_left(task, request.user, work) == "b"
        a, b = task.response, task.response_b
        left, right = (b, a) if flip else (a, b)
        left_calls, right_calls = compare_calls(left.message, right.message)
        ctx.update(
            {
                "left": left,
                "right": right,
                "left_calls": left_calls,
                "right_calls": right_calls,
                "left_side": "b" if flip else "a",
                "left_key": "b" if flip else "a",
                "right_key": "a" if flip else "b",
                "choice": (form or {}).get("choice") or (work.choice if work else ""),
                "reason": (form or {}).get("reason", work.reason if work else ""),
                "reason_required": project.setting("require_preference_reason"),
            }
        )
        if ctx["lead"] or not project.setting("blind"):  # never shown to annotators in blind mode
            s = hints.pair_suggestions(project, [(a.pk, b.pk)]).get((a.pk, b.pk))
            if s is not None:
                left_prob = 1 - s.prob_a if flip else s.prob_a
                ctx["suggestion"] = {  # the judge's own verdict, "" when it is unsure
                    "side": {"a": "right" if flip else "left", "b": "left" if flip else "right"}.get(
                        s.verdict, ""
                    ),
                    "left_prob": left_prob,
                    "confidence": max(left_prob, 1 - left_prob),
                    "judge": s.judge.name,
                    "reason": s.reason,
                    "consistent": s.position_consistent,
                }
        template = "annotator/compare.html"
    return render(request, template, ctx, status=status)


def _form_data(request) -> dict:
    """The labelling or comparing form as the submit and draft services take it."""
    post = request.POST
    data = {
        key: post.get(key, "")
        for key in (
            "verdict",
            "note",
            "correction_content",
            "correction_tool_calls",
            "choice",
            "reason",
            "left_side",
            "expected_status",
        )
    }
    return {**data, "categories": post.getlist("categories"), "time_spent_ms": post.get("time_spent_ms")}


def _next_url(slug, task) -> str:
    return reverse("annotator:next", args=[slug]) + (
        "?kind=compare" if task.kind == Task.Kind.COMPARE else ""
    )


@login_required
def task_submit(request, slug, task_id):
    if request.method != "POST":  # a reload of the page a refused submit rendered: show the task again
        _task(request, slug, task_id)
        return redirect("annotator:task", slug=slug, task_id=task_id)
    project, task = _task(request, slug, task_id)
    try:
        labelling.submit(task, request.user, _form_data(request))
    except ValidationError as exc:
        errors = {("general" if k == "__all__" else k): v for k, v in exc.message_dict.items()}
        return task_page(request, slug, task_id, errors=errors, status=422, form=request.POST)
    except assignment.QueueError as exc:
        messages.error(request, str(exc))
        if labelling.work_state(task, request.user)[0] in ("none", "reserved"):
            return redirect(_next_url(slug, task))
        return task_page(
            request, slug, task_id, errors={"general": [str(exc)]}, status=409, form=request.POST
        )
    if request.POST.get("expected_status") == Status.SUBMITTED:  # a change to submitted work, from history
        messages.success(request, "Your changes are saved.")
        return redirect("annotator:history", slug=slug)
    messages.success(request, "Submitted.")
    return redirect(_next_url(slug, task))


@login_required
@require_POST
def task_draft(request, slug, task_id):
    """Autosave (the page posts the whole form a moment after each change)."""
    project, task = _task(request, slug, task_id)
    try:
        work = labelling.save_draft(task, request.user, _form_data(request))
    except assignment.QueueError as exc:
        return JsonResponse({"saved": False, "error": str(exc)}, status=409)
    return JsonResponse({"saved": True, "saved_at": labelling.draft_saved_at(work)})


@login_required
@require_POST
def task_skip(request, slug, task_id):
    project, task = _task(request, slug, task_id)
    try:
        assignment.skip(task, request.user)
    except assignment.QueueError as exc:
        messages.error(request, str(exc))
    return redirect(_next_url(slug, task))


@login_required
@require_POST
def task_heartbeat(request, slug, task_id):
    project, task = _task(request, slug, task_id)
    if assignment.heartbeat(task, request.user):
        return HttpResponse(status=204)
    return JsonResponse({"error": assignment.LOCK_LOST}, status=409)


@login_required
@require_POST
def check_correction(request, slug, task_id):
    """Live validation of the correction editor against the tools' JSON schemas (htmx fragment)."""
    project, task = _task(request, slug, task_id)
    content = request.POST.get("correction_content", "")
    calls = request.POST.get("correction_tool_calls", "")
    message, problems = labelling.parse_correction(
        content, calls, task.response.conversation.tools, original=task.response.message
    )
    if message is None and not problems and (content.strip() or calls.strip()):
        problems = None  # the response itself, unchanged: no correction, nothing to check
    return render(request, "annotator/_correction_errors.html", {"problems": problems})


HISTORY_PAGE = 25


@login_required
def history(request, slug):
    """The annotator's submitted labels and comparisons, newest first: each reopens its task, to change
    it while no lead has reviewed it, to fix it when sent back, to read it when approved."""
    project = project_for(request.user, slug, Role.ANNOTATOR)
    what = request.GET.get("what") if request.GET.get("what") in ("label", "compare") else ""
    status = request.GET.get("status") if request.GET.get("status") in Status.values[1:] else ""
    kinds = {
        "label": Label.objects.filter(project=project, annotator=request.user),
        "compare": Preference.objects.filter(
            annotator=request.user, response_a__conversation__project=project
        ),
    }
    parts = []
    for kind, qs in kinds.items():
        if what and kind != what:
            continue
        qs = qs.filter(status=status) if status else qs.exclude(status=Status.DRAFT)
        parts.append(
            qs.annotate(kind=Value(kind, output_field=CharField())).values_list("kind", "pk", "submitted_at")
        )
    counts = work_counts(project, request.user)
    # the roll-ups' count instead of a COUNT(*) over every row of the annotator's
    count = sum(
        n
        for kind, by_status in counts.items()
        if not what or kind == what
        for st, n in by_status.items()
        if not status or st == status
    )
    paginator = Paginator(NewestFirst(parts, count), HISTORY_PAGE)
    page = paginator.get_page(request.GET.get("page"))
    items = _history_items(list(page.object_list))
    return render(
        request,
        "annotator/history.html",
        {
            "project": project,
            "page": page,
            "items": items,
            "what": what,
            "status": status,
            "statuses": Status.values[1:],
            "progress": progress(project, request.user, counts=counts),
        },
    )


class NewestFirst:
    """Rows of several querysets of (kind, pk, submitted_at), newest first, as the paginator slices them:
    each queryset gives its own newest rows (walking its (annotator, submitted_at) index) and the page is
    merged here. A UNION sorted by the database reads every row of the annotator's before the first 25."""

    def __init__(self, querysets, count: int):
        self.querysets, self.count = querysets, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, window: slice) -> list[tuple]:
        rows = [row for qs in self.querysets for row in qs.order_by("-submitted_at", "-pk")[: window.stop]]
        rows.sort(key=lambda r: (r[2] is not None, r[2] or timezone.now(), r[1]), reverse=True)
        return rows[window]


def _history_items(rows: list[tuple]) -> list[dict]:
    """The page's rows as objects, with their task (to reopen) and their latest review."""
    label_ids = [pk for kind, pk, _ in rows if kind == "label"]
    pref_ids = [pk for kind, pk, _ in rows if kind == "compare"]
    labels = Label.objects.select_related("response__conversation", "response__model_version")
    labels = labels.prefetch_related("categories")
    labels = labels.in_bulk(label_ids)
    prefs = Preference.objects.select_related("response_a__conversation").in_bulk(pref_ids)
    label_tasks = dict(
        Task.objects.filter(
            kind=Task.Kind.LABEL, response_id__in=[x.response_id for x in labels.values()]
        ).values_list("response_id", "pk")
    )
    pair_tasks = {
        (a, b): pk
        for a, b, pk in Task.objects.filter(
            kind=Task.Kind.COMPARE, response_id__in=[x.response_a_id for x in prefs.values()]
        ).values_list("response_id", "response_b_id", "pk")
    }
    latest = {}
    reviews = Review.objects.select_related("reviewer").order_by("created_at", "pk")
    for review in reviews.filter(label_id__in=label_ids):
        latest["label", review.label_id] = review
    for review in reviews.filter(preference_id__in=pref_ids):
        latest["compare", review.preference_id] = review
    items = []
    for kind, pk, _ in rows:
        work = labels.get(pk) if kind == "label" else prefs.get(pk)
        if work is None:  # deleted since the page was counted
            continue
        model = None  # a comparison's two models stay hidden, as on its blind compare page
        if kind == "label":
            conversation, task_id = work.response.conversation, label_tasks.get(work.response_id)
            model = work.response.model_version  # tells apart two responses of one conversation
        else:
            conversation = work.response_a.conversation
            task_id = pair_tasks.get((work.response_a_id, work.response_b_id))
            if work.choice in ("a", "b"):  # as the annotator saw it: sides, not the task's a and b
                work.shown_choice = "left" if work.choice == work.left_side else "right"
            else:
                work.shown_choice = work.get_choice_display()
        items.append(
            {
                "kind": kind,
                "work": work,
                "conversation": conversation,
                "model": model,
                "task_id": task_id,
                "review": latest.get((kind, pk)),
            }
        )
    return items
