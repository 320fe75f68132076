"""What a spec selects: the source querysets (corrections, reasonable responses, preferences,
online pairs) under its filters, and ``count_matching`` for the create form's live count.
"""

from __future__ import annotations

import datetime as dt

from django.db.models import Count, Exists, OuterRef, Q
from django.utils import timezone

from annotator.models import (
    Correction,
    Label,
    Preference,
    Status,
    TaxonomyCategory,
)

from ..models import DatasetSnapshot, OnlinePair

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
    q &= _date_q(f, f"{prefix}created_at")
    if f["categories"]:
        through = Label.categories.through.objects.filter(
            label_id=OuterRef(outer), taxonomycategory_id__in=expand_categories(project_id, f["categories"])
        )
        q &= Exists(through)
    return q


def corrections_qs(project_id: int, f: dict, unreasonable_only: bool = False):
    qs = Correction.objects.filter(_label_scope(project_id, f, "label__", "label_id"))
    if unreasonable_only:
        qs = qs.filter(label__verdict=Label.Verdict.UNREASONABLE)
    return qs


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


def count_matching(project_id: int, kind: str, f: dict) -> dict:
    """What a spec would export, by source, for the live count on the create form.

    `rows` is exact for SFT and eval; for DPO "both bad" preferences count two pairs each
    when the context has a correction (an upper bound: the build may skip some).
    """
    parts, skipped = [], []
    if kind in (Kind.SFT, Kind.EVAL):
        n = corrections_qs(project_id, f).count()
        parts.append({"source": "correction", "label": "corrections", "count": n})
        if f.get("include_reasonable"):
            parts.append(
                {
                    "source": "reasonable",
                    "label": "reasonable responses",
                    "count": reasonable_qs(project_id, f).count(),
                }
            )
        rows = sum(p["count"] for p in parts)
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
            n = corrections_qs(project_id, f, unreasonable_only=True).count()
            parts.append(
                {"source": "correction", "label": "corrections of unreasonable responses", "count": n}
            )
            rows += n
        if "online" in f["sources"]:
            n = online_qs(project_id, f).count()
            parts.append({"source": "online", "label": "pairs from online rounds", "count": n})
            rows += n
    return {"rows": rows, "parts": parts, "skipped": skipped, "records": sum(p["count"] for p in parts)}
