"""Drill-down lists: the labels behind a number (cases) and the preferences behind a cell (comparisons)."""

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from django.db.models import Exists, OuterRef, Q

from ..models import (
    Adjudication,
    AnnotatorDay,
    AnnotatorPreferenceDay,
    CategoryDay,
    Label,
    LabelDay,
    Preference,
    PreferenceDay,
    Task,
)
from .filters import (
    REASONABLE,
    UNREASONABLE,
    Filters,
    LabelCategory,
    as_id,
    label_q,
    preference_q,
    rollup_cells,
    rollup_days,
    rollup_sum,
)
from .lookups import CategoryTree

# --- drill-down lists ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseFilters:
    """Extra narrowing for the list of cases behind a chart bar or table cell."""

    verdict: str = ""
    category: int | None = None  # labels carrying a category in this subtree (direct=1: this exact one)
    direct: bool = False
    pair: tuple[int, int] | None = None  # items both annotators judged (shown: the first one's labels)
    disagree: bool = False  # with pair: only items where their verdicts differ; alone: split verdicts
    category_split: int | None = None  # items where judges split on choosing this category
    gold: str = ""  # "match" | "mismatch": against the lead's gold verdict

    @classmethod
    def parse(cls, params: Mapping) -> "CaseFilters":
        def as_int(v):
            return None if v in (None, "") else as_id(v)

        pair = None
        if params.get("pair"):
            parts = [as_int(p) for p in str(params["pair"]).split(",", 2)]
            if len(parts) == 2 and None not in parts:
                pair = (parts[0], parts[1])
        verdict = params.get("verdict") or ""
        return cls(
            verdict=verdict if verdict in Label.Verdict.values else "",
            category=as_int(params.get("category")),
            direct=params.get("direct") == "1",
            pair=pair,
            disagree=params.get("disagree") == "1",
            category_split=as_int(params.get("category_split")),
            gold=params.get("gold") if params.get("gold") in ("match", "mismatch") else "",
        )


def case_queryset(project, f: Filters, c: CaseFilters):
    """The labels behind a dashboard number: same filters, same counting, so the list length equals it."""
    qs = Label.objects.filter(label_q(project, f))
    if c.verdict:
        qs = qs.filter(verdict=c.verdict)
    if c.category:
        tree = CategoryTree.load(project) if not c.direct else None
        cats = (
            [c.category]
            if c.direct
            else (tree.subtree(c.category) if c.category in tree.nodes else [c.category])
        )
        qs = qs.filter(
            Exists(LabelCategory.objects.filter(label_id=OuterRef("pk"), taxonomycategory_id__in=cats))
        )
    if c.pair:
        a, b = c.pair
        other = Label.objects.filter(
            label_q(project, replace(f, annotator=None)), annotator_id=b, response_id=OuterRef("response_id")
        )
        if c.disagree:
            other = other.exclude(verdict=OuterRef("verdict"))
        qs = qs.filter(annotator_id=a).filter(Exists(other))
    elif c.disagree:
        peers = Label.objects.filter(
            label_q(project, replace(f, annotator=None)), response_id=OuterRef("response_id")
        )
        qs = qs.filter(Exists(peers.filter(verdict=REASONABLE)), Exists(peers.filter(verdict=UNREASONABLE)))
    if c.category_split:
        peers = Label.objects.filter(
            label_q(project, replace(f, annotator=None)), response_id=OuterRef("response_id")
        )
        has = LabelCategory.objects.filter(label_id=OuterRef("pk"), taxonomycategory_id=c.category_split)
        qs = qs.filter(Exists(peers.filter(Exists(has))), Exists(peers.exclude(Exists(has))))
    if c.gold:
        gold = Adjudication.objects.filter(
            task__kind=Task.Kind.LABEL,
            task__response_id=OuterRef("response_id"),
            verdict__in=Label.Verdict.values,
        )
        gold = (
            gold.filter(verdict=OuterRef("verdict"))
            if c.gold == "match"
            else gold.exclude(verdict=OuterRef("verdict"))
        )
        qs = qs.filter(Exists(gold))
    return qs


def case_count_rolled_up(project, f: Filters, c: CaseFilters) -> int | None:
    """The number of cases from the roll-ups when they hold it exactly (the plain filters, a verdict of
    unreasonable or none, a category with verdict unreasonable and no annotator); None otherwise."""
    if c.pair or c.disagree or c.category_split or c.gold or c.verdict not in ("", UNREASONABLE):
        return None
    cells = rollup_cells(f)
    if c.category:
        if c.verdict != UNREASONABLE or f.annotator:
            return None  # categories are counted on badcase labels, per day and model version only
        rows = CategoryDay.objects.filter(
            rollup_days(f), project_id=project.pk, category=c.category, under=not c.direct
        )
        prefix = "n"
    else:
        rows = AnnotatorDay.objects.filter(annotator=f.annotator) if f.annotator else LabelDay.objects.all()
        rows = rows.filter(rollup_days(f), project_id=project.pk)
        prefix = "bad" if c.verdict else "n"
    if f.models:
        rows = rows.filter(model_version__in=f.models)
    return rows.aggregate(n=rollup_sum(cells, prefix))["n"] or 0


def case_page(project, f: Filters, c: CaseFilters, page: int = 1, per_page: int = 50) -> dict:
    """One page of cases, newest first. The total comes from the roll-ups where they hold it (else a
    COUNT over the labels); the page's rows are found per status along the (project, status,
    submitted_at) index, at most page x per_page rows each, and ordered together."""
    qs = case_queryset(project, f, c)
    total = case_count_rolled_up(project, f, c)
    if total is None:
        total = qs.count()
    pages = max(1, math.ceil(total / per_page))
    page = min(max(1, page), pages)
    order = ("-submitted_at", "-id")
    candidates = []
    for status in f.statuses:
        candidates += (
            qs.filter(status=status).order_by(*order).values_list("pk", flat=True)[: page * per_page]
        )
    rows = list(
        Label.objects.filter(pk__in=candidates)
        .select_related("annotator", "model_version", "response__conversation")
        .prefetch_related("categories")
        .order_by(*order)[(page - 1) * per_page : page * per_page]
    )
    return {
        "total": total,
        "page": page,
        "pages": pages,
        "per_page": per_page,
        "rows": [case_row(label) for label in rows],
    }


def case_row(label) -> dict:
    conv = label.response.conversation
    return {
        "label": label.pk,
        "response": label.response_id,
        "conversation": conv.pk,
        "external_id": conv.external_id,
        "split": conv.split,
        "model_version": label.model_version.name if label.model_version else None,
        "annotator": label.annotator.username,
        "verdict": label.verdict,
        "status": label.status,
        "categories": [c.name for c in label.categories.all()],
        "note": label.note,
        "time_spent_s": round(label.time_spent_ms / 1000, 1),
        "submitted_at": label.submitted_at,
    }


def comparison_queryset(
    project, f: Filters, model_a: int | None = None, model_b: int | None = None, outcome: str = ""
):
    """Preferences behind a win-rate cell: model_a against model_b in either stored order.

    outcome is from model_a's side: win, loss or tie (tie includes both bad); empty: all.
    """
    qs = Preference.objects.filter(preference_q(project, replace(f, models=())))
    if model_a and model_b:
        forward = Q(response_a__model_version_id=model_a, response_b__model_version_id=model_b)
        backward = Q(response_a__model_version_id=model_b, response_b__model_version_id=model_a)
        if outcome == "win":
            qs = qs.filter((forward & Q(choice="a")) | (backward & Q(choice="b")))
        elif outcome == "loss":
            qs = qs.filter((forward & Q(choice="b")) | (backward & Q(choice="a")))
        elif outcome == "tie":
            qs = qs.filter((forward | backward) & Q(choice__in=["tie", "both_bad"]))
        else:
            qs = qs.filter(forward | backward)
    elif model_a:
        qs = qs.filter(Q(response_a__model_version_id=model_a) | Q(response_b__model_version_id=model_a))
    return qs


def comparison_count_rolled_up(
    project, f: Filters, model_a: int | None = None, model_b: int | None = None, outcome: str = ""
) -> int | None:
    """The number of comparisons comparison_queryset selects, from the choice roll-ups: per day, stored
    version pair and choice (PreferenceDay), or per annotator without the choice (AnnotatorPreferenceDay);
    None where they do not hold it (an annotator and an outcome)."""
    if f.annotator and outcome:
        return None
    rows = (
        AnnotatorPreferenceDay.objects.filter(annotator=f.annotator)
        if f.annotator
        else PreferenceDay.objects.all()
    )
    rows = rows.filter(rollup_days(f), project_id=project.pk)
    if model_a and model_b:
        forward, backward = Q(model_a=model_a, model_b=model_b), Q(model_a=model_b, model_b=model_a)
        won, lost = {"win": ("a", "b"), "loss": ("b", "a")}.get(outcome, (None, None))
        if won:
            rows = rows.filter((forward & Q(choice=won)) | (backward & Q(choice=lost)))
        elif outcome == "tie":
            rows = rows.filter(forward | backward, choice__in=["tie", "both_bad"])
        else:
            rows = rows.filter(forward | backward)
    elif model_a:
        rows = rows.filter(Q(model_a=model_a) | Q(model_b=model_a))
    return rows.aggregate(n=rollup_sum(rollup_cells(f), "n"))["n"] or 0


def comparison_page(project, f: Filters, model_a=None, model_b=None, outcome="", page=1, per_page=50) -> dict:
    """One page of the comparisons behind a win-rate cell, newest first; the total from the roll-ups
    where they hold it."""
    qs = comparison_queryset(project, f, model_a, model_b, outcome)
    total = comparison_count_rolled_up(project, f, model_a, model_b, outcome)
    if total is None:
        total = qs.count()
    pages = max(1, math.ceil(total / per_page))
    page = min(max(1, page), pages)
    rows = []
    # as on the cases page: the newest page x per_page of each status along its index, then one ordered page
    order = ("-submitted_at", "-id")
    candidates = []
    for st in f.statuses:
        candidates += qs.filter(status=st).order_by(*order).values_list("pk", flat=True)[: page * per_page]
    for p in (
        Preference.objects.filter(pk__in=candidates)
        .select_related(
            "annotator", "response_a__model_version", "response_b__model_version", "response_a__conversation"
        )
        .order_by(*order)[(page - 1) * per_page : page * per_page]
    ):
        ma, mb = p.response_a.model_version, p.response_b.model_version
        rows.append(
            {
                "preference": p.pk,
                "conversation": p.response_a.conversation_id,
                "external_id": p.response_a.conversation.external_id,
                "model_a": ma.name if ma else None,
                "model_b": mb.name if mb else None,
                "choice": p.choice,
                "choice_display": p.get_choice_display(),  # "both bad", "tie": the app's words
                "winner": {"a": ma.name if ma else "A", "b": mb.name if mb else "B"}.get(p.choice),
                "reason": p.reason,
                "annotator": p.annotator.username,
                "status": p.status,
                "left_side": p.left_side,
                "submitted_at": p.submitted_at,
            }
        )
    return {"total": total, "page": page, "pages": pages, "per_page": per_page, "rows": rows}
