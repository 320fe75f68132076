"""The annotator's workspace pages: next task, labelling, comparing, drafts, heartbeat, live validation.

Views stay thin: queue rules live in assignment.py, submission rules in labelling.py; the REST endpoints
for the same actions (annotator/queue_api.py) call the same functions.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from . import assignment, hints, labelling
from .models import Review, Role, Slot, Task, TaxonomyCategory
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


def _category_tree(project):
    cats = list(TaxonomyCategory.objects.filter(project=project, active=True).order_by("position", "name"))
    children: dict[int | None, list] = {}
    for c in cats:
        children.setdefault(c.parent_id, []).append(c)
    rows = []

    def walk(parent, depth):
        for c in children.get(parent, []):
            rows.append({"cat": c, "depth": depth, "leaf": c.pk not in children})
            walk(c.pk, depth + 1)

    walk(None, 0)
    return rows


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
    context_messages = response.conversation.messages[: response.context_length]
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
        "context_messages": context_messages,
        "tools": response.conversation.tools,
        "reviews": reviews,
        "queue_left": assignment.queue_size_by_kind(project, request.user, task.kind),
        "slot": Slot.objects.filter(task=task, annotator=request.user).first(),
        "lead": has_role(request.user, project, Role.LEAD),
    }
    if task.kind == Task.Kind.LABEL:
        editor = labelling.label_editor(task, work)
        ctx.update(
            {
                "response": response,
                "categories": _category_tree(project),
                "chosen": set(work.categories.values_list("pk", flat=True)) if work and work.pk else set(),
                "verdict": (form or {}).get("verdict") or (work.verdict if work else ""),
                "note": (form or {}).get("note", work.note if work else ""),
                "correction_content": (form or {}).get("correction_content", editor["content"]),
                "correction_tool_calls": (form or {}).get("correction_tool_calls", editor["tool_calls"]),
                "draft_saved_at": editor["saved_at"],
            }
        )
        if form is not None:
            ctx["chosen"] = {int(c) for c in form.getlist("categories") if c.isdigit()}
        if ctx["lead"] or not project.setting("blind"):  # never shown to annotators in blind mode
            ctx["verdict_hint"] = hints.verdict_suggestions(project, [response.pk]).get(response.pk)
        template = "annotator/label.html"
    else:
        # Left/right is randomised per annotator and item, and recorded with the choice.
        flip = labelling.shown_left(task, request.user, work) == "b"
        a, b = task.response, task.response_b
        ctx.update(
            {
                "left": b if flip else a,
                "right": a if flip else b,
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
                ctx["suggestion"] = {
                    "side": "left" if left_prob >= 0.5 else "right",
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
        )
    }
    return {**data, "categories": post.getlist("categories"), "time_spent_ms": post.get("time_spent_ms")}


def _next_url(slug, task) -> str:
    return reverse("annotator:next", args=[slug]) + (
        "?kind=compare" if task.kind == Task.Kind.COMPARE else ""
    )


@login_required
@require_POST
def task_submit(request, slug, task_id):
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
    _, problems = labelling.parse_correction(
        request.POST.get("correction_content", ""),
        request.POST.get("correction_tool_calls", ""),
        task.response.conversation.tools,
    )
    return render(request, "annotator/_correction_errors.html", {"problems": problems})
