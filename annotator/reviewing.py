"""Lead pages: the review queue, disagreements with gold decisions, assigning items to annotators."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from . import assignment, hints, review
from .dashboards.filters import rollup_sum
from .models import (
    Label,
    LabelDay,
    Membership,
    Preference,
    PreferenceDay,
    Role,
    Slot,
    Split,
    Status,
    Task,
    TaxonomyCategory,
)
from .policy import project_for


def awaiting_review(rollup, project) -> int:
    """How many labels (LabelDay) or comparisons (PreferenceDay) wait for review: the day roll-ups count
    them by status in every write, so this is a sum over a few thousand rows, not a COUNT over a million."""
    cells = [f"{split}_{Status.SUBMITTED}" for split in Split.values]
    return rollup.objects.filter(project=project).aggregate(n=rollup_sum(cells, "n"))["n"] or 0


@login_required
def review_queue(request, slug):
    project = project_for(request.user, slug, Role.LEAD)
    what = request.GET.get("what", "labels")
    if what == "preferences":
        qs = (
            Preference.objects.filter(status=Status.SUBMITTED, response_a__conversation__project=project)
            .select_related(
                "annotator",
                "response_a__conversation",
                "response_a__model_version",
                "response_b__model_version",
            )
            .order_by("submitted_at", "id")
        )
        rollup = PreferenceDay
    else:
        qs = (
            Label.objects.filter(status=Status.SUBMITTED, project=project)
            .select_related("annotator", "response__conversation", "response__model_version", "correction")
            .prefetch_related("categories")
            .order_by("submitted_at", "id")
        )
        rollup = LabelDay
    paginator = Paginator(qs, 10)
    paginator.count = awaiting_review(rollup, project)  # instead of Paginator's COUNT(*)
    page = paginator.get_page(request.GET.get("page"))
    return render(request, "annotator/review_queue.html", {"project": project, "page": page, "what": what})


@login_required
@require_POST
def review_action(request, slug, what, pk):
    project = project_for(request.user, slug, Role.LEAD)
    if what == "label":
        target = get_object_or_404(Label, pk=pk, project=project)
    else:
        target = get_object_or_404(Preference, pk=pk, response_a__conversation__project=project)
    try:
        review.apply_review(
            request.user, target, request.POST.get("decision", ""), request.POST.get("comment", "")
        )
        error = None
    except ValidationError as exc:
        error = " ".join(sum(exc.message_dict.values(), []))
    target.refresh_from_db()
    if request.headers.get("HX-Request"):
        return render(
            request,
            "annotator/_review_result.html",
            {"target": target, "error": error, "what": what, "project": project},
            status=400 if error else 200,
        )
    if error:
        messages.error(request, error)
    return redirect(request.META.get("HTTP_REFERER") or f"/p/{slug}/review/")


def _label_conflicts(project):
    """Responses whose submitted or approved labels disagree on the verdict, with no gold decision yet."""
    return (
        Label.objects.filter(project=project, status__in=[Status.SUBMITTED, Status.APPROVED])
        .values("response_id")
        .annotate(
            good=Count("id", filter=Q(verdict=Label.Verdict.REASONABLE)),
            bad=Count("id", filter=Q(verdict=Label.Verdict.UNREASONABLE)),
        )
        .filter(good__gt=0, bad__gt=0)
    )


def _preference_conflicts(project):
    return (
        Preference.objects.filter(
            response_a__conversation__project=project, status__in=[Status.SUBMITTED, Status.APPROVED]
        )
        .values("response_a_id", "response_b_id")
        .annotate(kinds=Count("choice", distinct=True))
        .filter(kinds__gt=1)
    )


@login_required
def disagreements(request, slug):
    project = project_for(request.user, slug, Role.LEAD)
    label_rows = list(_label_conflicts(project)[:200])
    tasks = {
        t.response_id: t
        for t in Task.objects.filter(
            kind=Task.Kind.LABEL, response_id__in=[r["response_id"] for r in label_rows]
        ).select_related("response__conversation", "response__model_version", "adjudication")
    }
    labels_by_response: dict[int, list] = {}
    for label in (
        Label.objects.filter(response_id__in=tasks.keys(), status__in=[Status.SUBMITTED, Status.APPROVED])
        .select_related("annotator", "correction")
        .prefetch_related("categories")
    ):
        labels_by_response.setdefault(label.response_id, []).append(label)
    items = [
        {"task": tasks[r["response_id"]], "labels": labels_by_response.get(r["response_id"], [])}
        for r in label_rows
        if r["response_id"] in tasks
    ]
    open_items = [i for i in items if not hasattr(i["task"], "adjudication")]
    decided = [i for i in items if hasattr(i["task"], "adjudication")]
    pref_rows = list(_preference_conflicts(project)[:100])
    pairs = []
    for row in pref_rows:
        task = (
            Task.objects.filter(
                kind=Task.Kind.COMPARE, response_id=row["response_a_id"], response_b_id=row["response_b_id"]
            )
            .select_related("adjudication")
            .first()
        )
        prefs = list(
            Preference.objects.filter(
                response_a_id=row["response_a_id"],
                response_b_id=row["response_b_id"],
                status__in=[Status.SUBMITTED, Status.APPROVED],
            ).select_related("annotator")
        )
        if task:
            pairs.append({"task": task, "prefs": prefs})
    verdicts = hints.verdict_suggestions(project, [i["task"].response_id for i in open_items])
    for item in open_items:
        item["suggestion"] = verdicts.get(item["task"].response_id)
    suggestions = hints.pair_suggestions(
        project, [(p["task"].response_id, p["task"].response_b_id) for p in pairs]
    )
    for p in pairs:
        p["suggestion"] = suggestions.get((p["task"].response_id, p["task"].response_b_id))
    categories = TaxonomyCategory.objects.filter(project=project, active=True, parent__isnull=False)
    return render(
        request,
        "annotator/disagreements.html",
        {
            "project": project,
            "open_items": open_items,
            "decided": decided,
            "pairs": pairs,
            "categories": categories,
        },
    )


@login_required
@require_POST
def adjudicate(request, slug, task_id):
    project = project_for(request.user, slug, Role.LEAD)
    task = get_object_or_404(Task, project=project, pk=task_id)
    try:
        review.adjudicate(
            request.user,
            task,
            verdict=request.POST.get("verdict", ""),
            choice=request.POST.get("choice", ""),
            categories=request.POST.getlist("categories"),
            note=request.POST.get("note", ""),
        )
    except ValidationError as exc:
        messages.error(request, " ".join(sum(exc.message_dict.values(), [])))
        return redirect("annotator:disagreements", slug=slug)
    messages.success(request, f"Gold decision recorded for item {task.pk}.")
    return redirect("annotator:disagreements", slug=slug)


@login_required
def assign(request, slug):
    project = project_for(request.user, slug, Role.LEAD)
    annotators = Membership.objects.filter(project=project).select_related("user").order_by("user__username")
    if request.method == "POST":
        member = annotators.filter(user__username=request.POST.get("annotator")).first()
        kind = request.POST.get("kind") or Task.Kind.LABEL
        ids = request.POST.get("external_ids", "").replace(",", "\n").splitlines()
        try:
            n = assignment.assign(
                project, member.user if member else None, kind, ids, request.POST.get("count")
            )
        except ValidationError as exc:
            messages.error(request, " ".join(sum(exc.message_dict.values(), [])))
        else:
            messages.success(
                request, f"{n} {kind} item{'s' if n != 1 else ''} reserved for {member.user.username}."
            )
            return redirect("annotator:assign", slug=slug)
    reserved = (
        Slot.objects.filter(project=project, reserved_for__isnull=False, state=Slot.State.FREE)
        .values("reserved_for__username")
        .annotate(n=Count("id"))
        .order_by("reserved_for__username")
    )
    return render(
        request, "annotator/assign.html", {"project": project, "annotators": annotators, "reserved": reserved}
    )
