"""What a spec selects: the source querysets (corrections, reasonable responses, preferences,
online pairs) under its filters, the votes behind an item (``statuses``: the work a snapshot
admits; resolve.py decides between annotators), and ``count_matching`` for the create form's
live count.

Filters are of two kinds. Item-level filters (project, split, model version) keep or drop an
item whole. Work-level filters (status, labelling date, categories) pick which pieces of work
an item is selected by; the votes that decide an item are all its work with an admitted
status, whatever its date or categories (a late second opinion still counts).
"""

from __future__ import annotations

import datetime as dt

from django.db.models import BooleanField, Case, Count, Exists, OuterRef, Q, Value, When
from django.utils import timezone

from annotator.models import (
    Correction,
    Label,
    Preference,
    Status,
    TaxonomyCategory,
)
from annotator.taxonomy import ROUTE_KINDS, fix_routes

from ..models import DatasetSnapshot, OnlinePair
from . import routing

Kind = DatasetSnapshot.Kind


def statuses(f: dict) -> list[str]:
    return [Status.APPROVED, Status.SUBMITTED] if f.get("include_submitted") else [Status.APPROVED]


def expand_categories(project_id: int, ids: list[int]) -> list[int]:
    """The chosen categories and all their descendants (picking "Tool use" takes its children)."""
    if not ids:
        return []
    children: dict[int | None, list[int]] = {}
    for pk, parent in TaxonomyCategory.objects.filter(project_id=project_id).values_list("pk", "parent_id"):
        children.setdefault(parent, []).append(pk)
    out, todo = set(), list(ids)
    while todo:
        pk = todo.pop()
        if pk not in out:
            out.add(pk)
            todo.extend(children.get(pk, ()))
    return sorted(out)


def _day_start(iso: str):
    return timezone.make_aware(dt.datetime.combine(dt.date.fromisoformat(iso), dt.time.min))


def _date_q(f: dict, field: str) -> Q:
    q = Q()
    if f.get("date_from"):
        q &= Q(**{f"{field}__gte": _day_start(f["date_from"])})
    if f.get("date_to"):
        q &= Q(**{f"{field}__lt": _day_start(f["date_to"]) + dt.timedelta(days=1)})
    return q


def label_work_q(project_id: int, f: dict, prefix: str = "", outer: str = "pk") -> Q:
    """The work-level filters of a label (or of a correction's label through `prefix`): labelling
    date and categories. Empty (``Q()``) when the spec sets neither."""
    q = _date_q(f, f"{prefix}created_at")
    if f["categories"]:
        through = Label.categories.through.objects.filter(
            label_id=OuterRef(outer), taxonomycategory_id__in=expand_categories(project_id, f["categories"])
        )
        q &= Exists(through)
    return q


def as_flag(q: Q):
    """`q` as a boolean column (True where a row passes it), to select from an item's votes."""
    return Case(When(q, then=Value(True)), default=Value(False), output_field=BooleanField())


def _label_scope(project_id: int, f: dict, prefix: str, outer: str) -> Q:
    """Labels (or corrections through `prefix`) of the project that pass the filters."""
    q = Q(
        **{
            f"{prefix}response__conversation__project_id": project_id,
            f"{prefix}status__in": statuses(f),
            f"{prefix}response__conversation__split__in": f["splits"],
        }
    )
    if f["model_versions"]:
        q &= Q(**{f"{prefix}response__model_version_id__in": f["model_versions"]})
    return q & label_work_q(project_id, f, prefix, outer)


def corrections_qs(project_id: int, f: dict, unreasonable_only: bool = False):
    qs = Correction.objects.filter(_label_scope(project_id, f, "label__", "label_id"))
    if unreasonable_only:
        qs = qs.filter(label__verdict=Label.Verdict.UNREASONABLE)
    return qs


def routed_q(project_id: int, kind: str, f: dict, outer: str = "pk") -> Q:
    """Labels (`outer`: the label id column) whose categories route their correction to `kind`
    (routing.py): one of their routed categories feeds it, or none of their categories has a route.
    Empty (``Q()``) unless the spec routes by taxonomy. For the live count only: the build routes by
    the row's categories, which are the gold decision's where a lead decided the item."""
    if routing.mode_of(kind, f) != routing.TAXONOMY:
        return Q()
    routes = fix_routes(project_id)
    through = Label.categories.through.objects.filter(label_id=OuterRef(outer))
    feeds = [pk for pk, route in routes.items() if route and kind in ROUTE_KINDS[route]]
    routed = [pk for pk, route in routes.items() if route]
    return Q(Exists(through.filter(taxonomycategory_id__in=feeds))) | ~Exists(
        through.filter(taxonomycategory_id__in=routed)
    )


def reasonable_qs(project_id: int, f: dict):
    # NOT EXISTS rather than a LEFT JOIN … IS NULL: PostgreSQL then walks the label ids in
    # order for each keyset chunk instead of anti-joining every label and sorting them.
    return Label.objects.filter(
        _label_scope(project_id, f, "", "pk"),
        ~Exists(Correction.objects.filter(label_id=OuterRef("pk"))),
        verdict=Label.Verdict.REASONABLE,
    )


def preferences_qs(project_id: int, f: dict):
    q = Q(
        response_a__conversation__project_id=project_id,
        status__in=statuses(f),
        response_a__conversation__split__in=f["splits"],
    )
    if f["model_versions"]:
        q &= Q(response_a__model_version_id__in=f["model_versions"]) | Q(
            response_b__model_version_id__in=f["model_versions"]
        )
    q &= _date_q(f, "created_at")
    if f["categories"]:
        cats = expand_categories(project_id, f["categories"])
        through = Label.categories.through.objects.filter(
            label__status__in=statuses(f), taxonomycategory_id__in=cats
        )
        q &= Exists(through.filter(label__response_id=OuterRef("response_a_id"))) | Exists(
            through.filter(label__response_id=OuterRef("response_b_id"))
        )
    return Preference.objects.filter(q)


def online_qs(project_id: int, f: dict):
    return OnlinePair.objects.filter(
        round__run__project_id=project_id,
        round_id__in=f.get("online_rounds") or [],
        conversation__split__in=f["splits"],
    )


def preference_work_q(f: dict) -> Q:
    """The work-level filter of a preference: its date. Empty when the spec sets none."""
    return _date_q(f, "created_at")


def sft_items_qs(project_id: int, f: dict, kind: str = Kind.SFT):
    """The labels an SFT / eval snapshot is selected by: those with a correction (routed to SFT when
    the spec routes by taxonomy), and approved reasonable ones when asked for (one item per response;
    per context for eval)."""
    has_correction = Exists(Correction.objects.filter(label_id=OuterRef("pk")))
    which = Q(has_correction) & routed_q(project_id, kind, f)
    if f.get("include_reasonable"):
        which |= Q(verdict=Label.Verdict.REASONABLE)
    return Label.objects.filter(_label_scope(project_id, f, "", "pk"), which)


def count_matching(project_id: int, kind: str, f: dict) -> dict:
    """What a spec would export, by source, for the live count on the create form.

    For SFT and eval `rows` is the number of items (one row each: a response, or a context for
    eval), an upper bound: an item whose annotators disagree with no lead decision and no
    majority is left out; `merged` is how many more records than items there are (work of 2+
    annotators on one item). For DPO "both bad" preferences count two pairs each when the
    context has a correction (an upper bound too: the build may skip or merge some).
    """
    parts, skipped = [], []
    merged = 0
    routed = routed_q(project_id, kind, f, "label_id")
    routed_words = f" routed to {kind.upper()}" if routed else ""
    if kind in (Kind.SFT, Kind.EVAL):
        n = corrections_qs(project_id, f).filter(routed).count()
        parts.append({"source": "correction", "label": "corrections" + routed_words, "count": n})
        if f.get("include_reasonable"):
            parts.append(
                {
                    "source": "reasonable",
                    "label": "reasonable responses",
                    "count": reasonable_qs(project_id, f).count(),
                }
            )
        item = (
            ("response_id",)
            if kind == Kind.SFT
            else ("response__conversation_id", "response__context_length")
        )
        rows = sft_items_qs(project_id, f, kind).values_list(*item).distinct().count()
        merged = max(0, sum(p["count"] for p in parts) - rows)
    else:
        rows = 0
        if "preferences" in f["sources"]:
            agg = preferences_qs(project_id, f).aggregate(
                ab=Count("pk", filter=Q(choice__in=["a", "b"])),
                both_bad=Count("pk", filter=Q(choice="both_bad")),
                tie=Count("pk", filter=Q(choice="tie")),
            )
            parts.append(
                {"source": "preference", "label": "preferences (winner over loser)", "count": agg["ab"]}
            )
            parts.append(
                {
                    "source": "both_bad",
                    "label": "“both bad” preferences (vs. a correction)",
                    "count": agg["both_bad"],
                }
            )
            if agg["tie"]:
                skipped.append({"label": "ties (skipped)", "count": agg["tie"]})
            rows += agg["ab"] + 2 * agg["both_bad"]
        if "corrections" in f["sources"]:
            n = corrections_qs(project_id, f, unreasonable_only=True).filter(routed).count()
            parts.append(
                {
                    "source": "correction",
                    "label": "corrections of unreasonable responses" + routed_words,
                    "count": n,
                }
            )
            rows += n
        if "online" in f["sources"]:
            n = online_qs(project_id, f).count()
            parts.append({"source": "online", "label": "pairs from online rounds", "count": n})
            rows += n
    return {
        "rows": rows,
        "parts": parts,
        "skipped": skipped,
        "records": sum(p["count"] for p in parts),
        "merged": merged,
    }
