"""Lead pages: the review queue, disagreements with gold decisions, assigning items to annotators."""

from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, F, Q
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from . import assignment, hints, review, taxonomy
from .dashboards.filters import as_id, rollup_sum
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
from .workspace import split_context


def awaiting_review(rollup, project) -> int:
    """How many labels (LabelDay) or comparisons (PreferenceDay) wait for review: the day roll-ups count
    them by status in every write, so this is a sum over a few thousand rows, not a COUNT over a million."""
    cells = [f"{split}_{Status.SUBMITTED}" for split in Split.values]
    return rollup.objects.filter(project=project).aggregate(n=rollup_sum(cells, "n"))["n"] or 0


# --- the review stream -------------------------------------------------------------------------------
#
# One item at a time, oldest submission first, narrowed by review.QueueFilters. Moving through it is a
# keyset walk on (submitted_at, id) of the indexed queue (never an OFFSET), so "next" costs the same on
# the first item as on the ten-thousandth.

COUNT_CAP = (
    review.BULK_LIMIT
)  # a narrowed list is counted up to here ("1000+" beyond): a count walks the list
LIST_PAGE = 25
DETAIL = {
    "labels": ("annotator", "response__conversation", "response__model_version", "correction"),
    "preferences": (
        "annotator",
        "response_a__conversation",
        "response_a__model_version",
        "response_b__model_version",
    ),
}
NEWEST_FIRST = (F("submitted_at").desc(nulls_first=True), "-id")


def _with_detail(qs, what):
    qs = qs.select_related(*DETAIL[what])
    return qs.prefetch_related("categories") if what == "labels" else qs


def _after(qs, anchor):
    """The first row of `qs` after `anchor` in (submitted_at, id) order, rows without a time last.

    Each query is a range on label_project_status_time (submitted_at >= t), so the walk starts at the
    anchor instead of skipping every row before it (an OR with the untimed rows would lose the range)."""
    t = anchor.submitted_at
    if t is not None:
        row = qs.filter(submitted_at__gte=t).filter(Q(submitted_at__gt=t) | Q(pk__gt=anchor.pk)).first()
        return row if row is not None else qs.filter(submitted_at__isnull=True).first()
    return qs.filter(submitted_at__isnull=True, pk__gt=anchor.pk).first()


def _before(qs, anchor):
    """The last row of `qs` before `anchor` (the index walked backwards from the anchor)."""
    t, newest = anchor.submitted_at, qs.order_by(*NEWEST_FIRST)
    if t is not None:
        return newest.filter(submitted_at__lte=t).filter(Q(submitted_at__lt=t) | Q(pk__lt=anchor.pk)).first()
    row = newest.filter(submitted_at__isnull=True, pk__lt=anchor.pk).first()
    return row if row is not None else newest.filter(submitted_at__isnull=False).first()


def _count_before(qs, anchor) -> int:
    """How many rows of `qs` come before `anchor`, counted up to COUNT_CAP."""
    t = anchor.submitted_at
    if t is not None:
        earlier = qs.filter(submitted_at__lte=t).filter(Q(submitted_at__lt=t) | Q(pk__lt=anchor.pk))
        return earlier[:COUNT_CAP].count()
    timed = qs.filter(submitted_at__isnull=False)[:COUNT_CAP].count()
    return timed + qs.filter(submitted_at__isnull=True, pk__lt=anchor.pk)[:COUNT_CAP].count()


def _stream_url(project, f, **extra) -> str:
    query = urlencode({**f.params(), **{k: v for k, v in extra.items() if v not in (None, "")}})
    return reverse("annotator:review", args=[project.slug]) + (f"?{query}" if query else "")


def _count(project, f, qs) -> tuple[int, bool]:
    """(how many wait in the list, whether that is a lower bound)."""
    if not f.narrowed:
        return awaiting_review(PreferenceDay if f.what == "preferences" else LabelDay, project), False
    n = qs[: COUNT_CAP + 1].count()
    return min(n, COUNT_CAP), n > COUNT_CAP


def _anchor(project, f, pk):
    """The queue row `pk` stands for (reviewed or not, but of this project), for its place in the order."""
    if pk is None:
        return None
    if f.what == "preferences":
        rows = Preference.objects.filter(response_a__conversation__project=project)
    else:
        rows = Label.objects.filter(project=project)
    return rows.filter(pk=pk).only("pk", "submitted_at").first()


def _others(item, what) -> list:
    """The other judgements of the same response (pair), so the lead sees who agreed and who did not."""
    if what == "preferences":
        return list(
            Preference.objects.filter(
                response_a_id=item.response_a_id,
                response_b_id=item.response_b_id,
                status__in=[Status.SUBMITTED, Status.APPROVED, Status.REJECTED],
            )
            .exclude(pk=item.pk)
            .select_related("annotator")
        )
    return list(
        Label.objects.filter(
            response_id=item.response_id, status__in=[Status.SUBMITTED, Status.APPROVED, Status.REJECTED]
        )
        .exclude(pk=item.pk)
        .select_related("annotator")
        .prefetch_related("categories")
    )


def _stream_context(project, f, at=None, after=None) -> dict:
    """The item to show (`at`, else the one after `after`, else the oldest), its neighbours, its place."""
    qs = review.review_queue(project, f)
    detailed = _with_detail(qs, f.what)
    item = None
    anchor = _anchor(project, f, at if at is not None else after)
    if anchor is not None:
        if at is not None:
            item = detailed.filter(pk=anchor.pk).first()
        if item is None:  # reviewed meanwhile (or just now): the next one, else the one before
            item = _after(detailed, anchor) or _before(detailed, anchor)
    if item is None:
        item = detailed.first()
    total, capped = _count(project, f, qs)
    ctx = {"item": item, "total": total, "capped": capped, "what_one": f.what[:-1], "filters": f}
    if item is None:
        return ctx
    before = _count_before(qs, item)
    ids = qs.values_list("pk", flat=True)
    prev_id, next_id = _before(ids, item), _after(ids, item)
    ctx.update(
        position=min(before + 1, COUNT_CAP),
        position_capped=before >= COUNT_CAP,
        prev_url=_stream_url(project, f, at=prev_id) if prev_id else "",
        next_url=_stream_url(project, f, at=next_id) if next_id else "",
        here_url=_stream_url(project, f, at=item.pk),
        others=_others(item, f.what),
        stream_params=f.params(),
    )
    return ctx


def _asked(response) -> str:
    """The user's last message before the response, as one short line (for list rows)."""
    for message in reversed(response.context):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            text = " ".join(str(content or "").split())
            return text if len(text) <= 160 else text[:159] + "…"
    return ""


def _rows(items, what) -> list:
    for item in items:
        item.asked = _asked(item.response if what == "labels" else item.response_a)
    return items


def _filter_options(project, f) -> dict:
    return {
        "annotators": list(
            Membership.objects.filter(project=project)
            .select_related("user")
            .order_by("user__username")
            .values_list("user__username", flat=True)
        ),
        "category_options": taxonomy.category_rows(project) if f.what == "labels" else [],
        "verdicts": Label.Verdict.choices if f.what == "labels" else Preference.Choice.choices,
        "bulk_limit": review.BULK_LIMIT,
        "list_url": _stream_url(project, f, view="list"),
        "stream_url": _stream_url(project, f),
        "bulk_url": reverse("annotator:review-bulk", args=[project.slug]) + "?" + urlencode(f.params()),
    }


def _bad_filters(request, project, exc):
    """A filter the page cannot apply: say which and why (400), with the filter bar to fix it."""
    f = review.QueueFilters()
    ctx = {"project": project, "filters": f, "what": f.what, "view": "stream", "bad": True}
    ctx.update(_filter_options(project, f), filter_errors=exc.message_dict)
    return render(request, "annotator/review_queue.html", ctx, status=400)


@login_required
def review_queue(request, slug):
    """The lead's review stream (one item at a time, with keys) or, with view=list, a compact list."""
    project = project_for(request.user, slug, Role.LEAD)
    try:
        f = review.QueueFilters.parse(project, request.GET)
    except ValidationError as exc:
        return _bad_filters(request, project, exc)
    at = as_id(request.GET.get("at")) if request.GET.get("at") else None
    view = "list" if request.GET.get("view") == "list" else "stream"
    ctx = {"project": project, "filters": f, "what": f.what, "view": view, **_filter_options(project, f)}
    if view == "list":
        qs = _with_detail(review.review_queue(project, f), f.what)
        total, capped = _count(project, f, qs)
        paginator = Paginator(qs, LIST_PAGE)
        paginator.count = total  # the roll-ups' sum (or a capped count) instead of Paginator's COUNT(*)
        page = paginator.get_page(request.GET.get("page"))
        _rows(page.object_list, f.what)
        ctx.update(page=page, total=total, capped=capped, what_one=f.what[:-1])
        ctx["page_query"] = urlencode({**f.params(), "view": "list"})
    else:
        ctx.update(_stream_context(project, f, at=at))
    if (
        view == "stream"
        and request.headers.get("HX-Request")
        and not request.headers.get("HX-History-Restore-Request")
    ):
        return render(request, "annotator/_review_item.html", ctx)
    return render(request, "annotator/review_queue.html", ctx)


@login_required
@require_POST
def review_action(request, slug, what, pk):
    project = project_for(request.user, slug, Role.LEAD)
    if what == "label":
        target = get_object_or_404(Label, pk=pk, project=project)
    elif what == "preference":
        target = get_object_or_404(Preference, pk=pk, response_a__conversation__project=project)
    else:
        raise Http404("Review a label or a preference.")
    stream = bool(request.POST.get("stream"))
    f = review.QueueFilters(what=f"{what}s")
    if stream:
        try:
            f = review.QueueFilters.parse(project, request.POST)
        except ValidationError:
            pass  # the filters only choose what comes next; the review itself stands
    decision, comment = request.POST.get("decision", ""), request.POST.get("comment", "")
    try:
        review.apply_review(request.user, target, decision, comment, seen=request.POST.get("seen"))
        error, status = None, 200
    except ValidationError as exc:
        error = " ".join(sum(exc.message_dict.values(), []))
        status = getattr(exc, "status_code", 400)
    target.refresh_from_db()
    hx = bool(request.headers.get("HX-Request"))
    if hx and status == 409:  # what is on screen is out of date: show the item again, as it is now
        messages.warning(request, error)
        response = HttpResponse(status=204)
        if stream:
            response["HX-Location"] = _stream_url(project, f, at=target.pk)
        else:
            response["HX-Refresh"] = "true"
        return response
    if stream and hx and error:  # the form again, with the message under the comment and the text kept
        response = render(
            request,
            "annotator/_review_form.html",
            {
                "project": project,
                "target": target,
                "what": what,
                "error": error,
                "comment": comment,
                "stream": True,
                "stream_params": f.params(),
            },
            status=status,
        )
        response["HX-Retarget"] = f"#review-form-{what}-{target.pk}"
        response["HX-Reswap"] = "outerHTML"
        return response
    if stream and hx:  # the next item of the same list, in place
        ctx = {
            "project": project,
            "filters": f,
            "what": f.what,
            "view": "stream",
            **_filter_options(project, f),
        }
        ctx.update(_stream_context(project, f, after=target.pk))
        ctx["done"] = {"what": what, "pk": target.pk, "status": target.status}
        response = render(request, "annotator/_review_item.html", ctx)
        item = ctx.get("item")
        response["HX-Push-Url"] = _stream_url(project, f, at=item.pk if item else None)
        return response
    if hx:
        return render(
            request,
            "annotator/_review_result.html",
            {"target": target, "error": error, "what": what, "project": project, "comment": comment},
            status=status,
        )
    if error:
        messages.error(request, error)
        return redirect(_stream_url(project, f, at=target.pk))
    messages.success(request, f"{what.capitalize()} {target.pk} {target.status}.")
    return redirect(_stream_url(project, f, at=target.pk))


@login_required
def review_bulk(request, slug):
    """Approve a whole filtered list: a GET shows the list to confirm, the POST approves exactly that list
    (review.approve_many refuses if it changed meanwhile)."""
    project = project_for(request.user, slug, Role.LEAD)
    params = request.POST if request.method == "POST" else request.GET
    try:
        f = review.QueueFilters.parse(project, params)
    except ValidationError as exc:
        return _bad_filters(request, project, exc)
    error, status = None, 200
    if request.method == "POST":
        try:
            n = review.approve_many(
                request.user, project, f, request.POST.get("ids", ""), seen=request.POST.get("seen")
            )
        except review.ListChanged as exc:
            error, status = " ".join(sum(exc.message_dict.values(), [])), 409
        except ValidationError as exc:
            error, status = " ".join(sum(exc.message_dict.values(), [])), 400
        else:
            messages.success(request, f"Approved {n} {f.what[:-1] if n == 1 else f.what}.")
            return redirect(_stream_url(project, f))
    items = list(_with_detail(review.review_queue(project, f), f.what)[: review.BULK_LIMIT + 1])
    too_many = len(items) > review.BULK_LIMIT
    items = _rows(items[: review.BULK_LIMIT], f.what)
    return render(
        request,
        "annotator/review_bulk.html",
        {
            "project": project,
            "filters": f,
            "what": f.what,
            "what_one": f.what[:-1],
            "items": items,
            "too_many": too_many,
            "ids": ",".join(str(i.pk) for i in items),
            "seen": review.list_version((i.pk, i.submitted_at) for i in items),
            "error": error,
            "stream_url": _stream_url(project, f),
            "bulk_limit": review.BULK_LIMIT,
            "describe": _describe(f),
        },
        status=status,
    )


def _describe(f) -> list[str]:
    """The filters in words, for the confirmation."""
    out = []
    if f.annotator:
        out.append(f"by {f.annotator}")
    if f.category:
        name = TaxonomyCategory.objects.filter(pk=f.category).values_list("name", flat=True).first()
        out.append(f"in category {name} (or below)")
    if f.verdict:
        out.append(f"{'verdict' if f.what == 'labels' else 'choice'} {f.verdict}")
    if f.disagreement:
        out.append("where annotators disagree")
    return out


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


GOLD_REFUSED = "gold_refused"  # session key: the gold decision the server refused, shown at its item


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
    pair_keys = [(r["response_a_id"], r["response_b_id"]) for r in pref_rows]
    a_ids = {a for a, _ in pair_keys}
    pair_tasks = {
        (t.response_id, t.response_b_id): t
        for t in Task.objects.filter(kind=Task.Kind.COMPARE, response_id__in=a_ids).select_related(
            "adjudication", "response__conversation", "response__model_version", "response_b__model_version"
        )
    }
    prefs_by_pair: dict[tuple[int, int], list] = {}
    for pref in Preference.objects.filter(
        response_a_id__in=a_ids, status__in=[Status.SUBMITTED, Status.APPROVED]
    ).select_related("annotator"):
        prefs_by_pair.setdefault((pref.response_a_id, pref.response_b_id), []).append(pref)
    pairs = [
        {"task": pair_tasks[key], "prefs": prefs_by_pair.get(key, [])}
        for key in pair_keys
        if key in pair_tasks
    ]
    verdicts = hints.verdict_suggestions(project, [i["task"].response_id for i in open_items])
    for item in open_items:
        item["suggestion"] = verdicts.get(item["task"].response_id)
    suggestions = hints.pair_suggestions(
        project, [(p["task"].response_id, p["task"].response_b_id) for p in pairs]
    )
    for p in pairs:
        p["suggestion"] = suggestions.get((p["task"].response_id, p["task"].response_b_id))
    for item in open_items:  # which annotators chose each category: shown beside it in the gold picker
        picked: dict[int, list[str]] = {}
        for label in item["labels"]:
            for c in label.categories.all():
                picked.setdefault(c.pk, []).append(label.annotator.username)
        item["picked"] = {pk: ", ".join(names) for pk, names in picked.items()}
    # what the response answers, above it: the last user turn in full, the earlier messages collapsed
    for entry in open_items + pairs:
        entry["earlier"], entry["recent"] = split_context(entry["task"].response.context)
    # a refused decision (POST, then redirect here): its message and what was typed, beside its form
    refused = request.session.pop(GOLD_REFUSED, None)
    if refused:
        for entry in open_items + pairs:
            if entry["task"].pk == refused.get("task"):
                entry["refused"] = refused
    return render(
        request,
        "annotator/disagreements.html",
        {
            "project": project,
            "open_items": open_items,
            "decided": decided,
            "pairs": pairs,
            "category_groups": category_groups(project),
            "pair_choices": Preference.Choice.choices,  # no choice is pre-set: the lead picks one
        },
    )


def category_groups(project) -> list[dict]:
    """The active categories under their top-level group, for a grouped checkbox list:
    [{"group": category, "rows": [{"cat", "depth", "label"}]}]; a top-level category without children is
    its own only row."""
    groups: list[dict] = []
    for row in taxonomy.category_rows(project):
        if row["depth"] == 0:
            groups.append({"group": row["cat"], "rows": [] if not row["leaf"] else [row]})
        else:
            groups[-1]["rows"].append(row)
    return groups


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
        # said beside the item's own form (the disagreements page reads it once), with what was typed
        request.session[GOLD_REFUSED] = {
            "task": task.pk,
            "errors": {k: " ".join(v) for k, v in exc.message_dict.items()},
            "note": request.POST.get("note", "")[:2000],
            # what was picked stays picked (only ids of this project's categories are kept: they are
            # rendered against the page's own list)
            "verdict": request.POST.get("verdict", "")[:20],
            "choice": request.POST.get("choice", "")[:20],
            "categories": [
                c for c in request.POST.getlist("categories")[:200] if c.isascii() and c.isdigit()
            ],
        }
        return redirect(reverse("annotator:disagreements", args=[slug]) + f"#item-{task.pk}")
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
