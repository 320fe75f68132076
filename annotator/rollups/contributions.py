"""What each label, response, preference and skip contributes to the roll-ups: {(table, key, column): n}."""

import datetime as dt
from collections import Counter, defaultdict

from django.db import models
from django.utils import timezone

from ..models import (
    MASKS,
    ROLLUP_STATUSES,
    Adjudication,
    AgreementCategory,
    AgreementItem,
    AgreementPair,
    AgreementPairDay,
    AgreementUnit,
    AnnotatorDay,
    AnnotatorPreferenceDay,
    AnnotatorSeconds,
    AnnotatorSecondsDay,
    CategoryDay,
    GoldDay,
    Label,
    LabelDay,
    Preference,
    PreferenceDay,
    PreferenceUnit,
    ResponseJudges,
    Review,
    ReviewDay,
    Skip,
    SkipDay,
    Task,
    TaxonomyCategory,
)

LabelCategory = Label.categories.through
NO_DAY = dt.date(1, 1, 1)
TIME_CAP_S = 1800  # same bins as the annotators page: one second each, the rest in the last
UNREASONABLE = Label.Verdict.UNREASONABLE


def local_day(value) -> dt.date:
    if value is None:
        return NO_DAY
    return timezone.localtime(value, timezone.get_default_timezone()).date()


def completed_day(times) -> dt.date:
    """The local day a unit of several judgements was complete: its last one's (NO_DAY if one has no time)."""
    times = list(times)
    return NO_DAY if not times or None in times else local_day(max(times))


# --- contributions ------------------------------------------------------------------------------
#
# A *unit* is what one write can change: ("label", id) its own counts (day, annotator, categories,
# reviews, gold), ("response", id) the agreement pairs and judge count of a response's labels,
# ("preference", id) and ("skip", id). A handler recomputes the units a write touches, before and after.


class Tree:
    """Per project: each category with itself and its ancestors (what it counts "under")."""

    def __init__(self):
        self.parents: dict[int, dict[int, int | None]] = {}

    def chain(self, project_id: int, category: int) -> list[int]:
        if project_id not in self.parents:
            self.parents[project_id] = dict(
                TaxonomyCategory.objects.filter(project_id=project_id).values_list("id", "parent_id")
            )
        parents = self.parents[project_id]
        out, node = [], category
        while node is not None and node not in out:
            out.append(node)
            node = parents.get(node)
        return out


LABEL_FIELDS = (
    "pk",
    "project_id",
    "annotator_id",
    "model_version_id",
    "status",
    "verdict",
    "submitted_at",
    "time_spent_ms",
    "response_id",
    "response__conversation__split",
)


def _label_rows(labels) -> list[tuple]:
    return list(labels.filter(status__in=ROLLUP_STATUSES).values_list(*LABEL_FIELDS).order_by())


def _chunks(ids, size=5000):
    ids = list(ids)
    for i in range(0, len(ids), size):
        yield ids[i : i + size]


def label_part(rows, tree: Tree) -> Counter:
    """The labels' own counts: day, annotator, time, categories, reviews, gold."""
    out: Counter = Counter()
    if not rows:
        return out
    bad_ids = [r[0] for r in rows if r[5] == UNREASONABLE]
    categories = defaultdict(list)
    for chunk in _chunks(bad_ids):
        for label_id, cat in LabelCategory.objects.filter(label_id__in=chunk).values_list(
            "label_id", "taxonomycategory_id"
        ):
            categories[label_id].append(cat)
    reviews = defaultdict(list)
    for chunk in _chunks([r[0] for r in rows]):
        for label_id, decision, created in (
            Review.objects.filter(label_id__in=chunk)
            .values_list("label_id", "decision", "created_at")
            .order_by()
        ):
            reviews[label_id].append((decision, created))
    gold = {}
    for chunk in _chunks({r[8] for r in rows}):
        gold.update(
            Adjudication.objects.filter(
                task__kind=Task.Kind.LABEL, task__response_id__in=chunk, verdict__in=Label.Verdict.values
            ).values_list("task__response_id", "verdict")
        )
    for pk, project, annotator, mv, status, verdict, submitted, ms, response, split in rows:
        cell, mv, day, bad = f"{split}_{status}", mv or 0, local_day(submitted), int(verdict == UNREASONABLE)
        out[LabelDay, (project, day, mv), f"n_{cell}"] += 1
        out[LabelDay, (project, day, mv), f"bad_{cell}"] += bad
        key = (project, annotator, day, mv)
        out[AnnotatorDay, key, f"n_{cell}"] += 1
        out[AnnotatorDay, key, f"bad_{cell}"] += bad
        if ms:
            out[AnnotatorDay, key, f"timed_{cell}"] += 1
            out[AnnotatorDay, key, f"ms_{cell}"] += ms
            sec = min(ms // 1000, TIME_CAP_S)
            out[AnnotatorSeconds, (project, annotator, sec), f"n_{cell}"] += 1
            out[AnnotatorSecondsDay, (project, day, annotator, sec), f"n_{cell}"] += 1
        if bad:
            under = set()
            for cat in set(categories.get(pk, ())):
                out[CategoryDay, (project, day, mv, cat, False), f"n_{cell}"] += 1
                under.update(tree.chain(project, cat))
            for node in under:
                out[CategoryDay, (project, day, mv, node, True), f"n_{cell}"] += 1
        for decision, created in reviews.get(pk, ()):
            out[ReviewDay, (project, annotator, local_day(created), mv), f"{decision}_{cell}"] += 1
        if response in gold:
            out[GoldDay, (project, annotator, day, mv, verdict, gold[response]), f"n_{cell}"] += 1
    return out


def response_part(rows) -> Counter:
    """Judges per response and the annotator pairs that judged the same response; `rows` hold every
    counted label of the responses."""
    out: Counter = Counter()
    by_response = defaultdict(list)
    for row in rows:
        by_response[row[8]].append(row)
    categories = _categories_of([r[0] for g in by_response.values() if len(g) >= 2 for r in g])
    for response, group in by_response.items():
        project = group[0][1]
        out[ResponseJudges, (project, response), "n"] += len(group)
        if len(group) < 2:
            continue
        for mask, unit in _units(group):
            key, column = (
                (project, mask, completed_day(r[6] for r in unit), unit[0][3] or 0),
                f"n_{unit[0][9]}",
            )
            bad = sum(r[5] == UNREASONABLE for r in unit)
            out[AgreementUnit, (*key, len(unit), bad), column] += 1
            for cat, k in Counter(c for r in unit for c in categories.get(r[0], ())).items():
                out[AgreementCategory, (*key, cat, len(unit), k), column] += 1
        group.sort(key=lambda r: r[2])
        for i, a in enumerate(group):
            for b in group[i + 1 :]:
                if a[2] == b[2]:
                    continue
                key = (a[3] or 0, a[2], b[2], a[5] == UNREASONABLE, b[5] == UNREASONABLE)
                column = f"n_{a[9]}_{a[4]}_{b[4]}"
                out[AgreementPair, (project, *key), column] += 1
                out[AgreementPairDay, (project, completed_day((a[6], b[6])), *key), column] += 1
    return out


def _units(group):
    """(status mask, the group's labels with a status in it) for every mask with two or more of them."""
    for mask in MASKS:
        unit = [r for r in group if mask >> ROLLUP_STATUSES.index(r[4]) & 1]
        if len(unit) >= 2:
            yield mask, unit


def _categories_of(label_ids) -> dict[int, list[int]]:
    out = defaultdict(list)
    for chunk in _chunks(label_ids):
        for label_id, cat in LabelCategory.objects.filter(label_id__in=chunk).values_list(
            "label_id", "taxonomycategory_id"
        ):
            out[label_id].append(cat)
    return out


def item_rows(rows) -> list["AgreementItem"]:
    """The split responses among `rows` (every counted label of the responses), per status mask."""
    by_response = defaultdict(list)
    for row in rows:
        by_response[row[8]].append(row)
    out = []
    for response, group in by_response.items():
        for mask, unit in _units(group):
            bad = sum(r[5] == UNREASONABLE for r in unit)
            if 0 < bad < len(unit):
                times = [r[6] for r in unit]
                out.append(
                    AgreementItem(
                        project_id=unit[0][1],
                        response=response,
                        statuses=mask,
                        model_version=unit[0][3] or 0,
                        split=unit[0][9],
                        judges=len(unit),
                        bad=bad,
                        score=(len(unit) - bad) * bad,
                        last=None if None in times else max(times),
                    )
                )
    return out


def refresh_items(response_ids):
    """Recompute the disagreement rows of these responses from their labels as they are now."""
    for chunk in _chunks(sorted(set(response_ids))):
        AgreementItem.objects.filter(response__in=chunk).delete()
        AgreementItem.objects.bulk_create(
            item_rows(_label_rows(Label.objects.filter(response_id__in=chunk))), batch_size=2000
        )


PREFERENCE_CHOICES = tuple(Preference.Choice.values)


def preference_unit_part(prefs) -> Counter:
    """Preference units: the counted preferences of each (response a, response b) pair, per status mask."""
    out: Counter = Counter()
    groups = defaultdict(list)
    for row in (
        prefs.filter(status__in=ROLLUP_STATUSES)
        .values_list(
            "response_a_id",
            "response_b_id",
            "response_a__conversation__project_id",
            "response_a__model_version_id",
            "response_b__model_version_id",
            "choice",
            "status",
            "response_a__conversation__split",
            "submitted_at",
        )
        .order_by()
    ):
        groups[row[:2]].append(row)
    for group in groups.values():
        for mask in MASKS:
            unit = [r for r in group if mask >> ROLLUP_STATUSES.index(r[6]) & 1]
            if len(unit) < 2:
                continue
            counts = Counter(r[5] for r in unit)
            _, _, project, a, b, _, _, split, _ = unit[0]
            key = (
                project,
                mask,
                completed_day(r[8] for r in unit),
                a or 0,
                b or 0,
                *(counts.get(c, 0) for c in PREFERENCE_CHOICES),
            )
            out[PreferenceUnit, key, f"n_{split}"] += 1
    return out


def preference_part(prefs) -> Counter:
    out: Counter = Counter()
    for project, annotator, a, b, choice, left, status, submitted, ms, split in (
        prefs.filter(status__in=ROLLUP_STATUSES)
        .values_list(
            "response_a__conversation__project_id",
            "annotator_id",
            "response_a__model_version_id",
            "response_b__model_version_id",
            "choice",
            "left_side",
            "status",
            "submitted_at",
            "time_spent_ms",
            "response_a__conversation__split",
        )
        .order_by()
    ):
        cell, a, b, day = f"{split}_{status}", a or 0, b or 0, local_day(submitted)
        out[PreferenceDay, (project, day, a, b, choice, left), f"n_{cell}"] += 1
        key = (project, annotator, day, a, b)
        out[AnnotatorPreferenceDay, key, f"n_{cell}"] += 1
        if ms:
            out[AnnotatorPreferenceDay, key, f"timed_{cell}"] += 1
            out[AnnotatorPreferenceDay, key, f"ms_{cell}"] += ms
            sec = min(ms // 1000, TIME_CAP_S)
            out[AnnotatorSeconds, (project, annotator, sec), f"p_{cell}"] += 1
            out[AnnotatorSecondsDay, (project, day, annotator, sec), f"p_{cell}"] += 1
    return out


def skip_part(skips) -> Counter:
    out: Counter = Counter()
    for project, annotator, when, mv, split in skips.values_list(
        "task__project_id",
        "annotator_id",
        "skipped_at",
        "task__response__model_version_id",
        "task__response__conversation__split",
    ).order_by():
        out[SkipDay, (project, annotator, local_day(when), mv or 0), f"n_{split}"] += 1
    return out


def contributions(units) -> Counter:
    """The roll-up counts of a set of units as the database holds them now."""
    ids = defaultdict(set)
    for kind, pk in units:
        if pk is not None:
            ids[kind].add(pk)
    out: Counter = Counter()
    for chunk in _chunks(ids["label"]):
        out.update(label_part(_label_rows(Label.objects.filter(pk__in=chunk)), Tree()))
    for chunk in _chunks(ids["response"]):
        out.update(response_part(_label_rows(Label.objects.filter(response_id__in=chunk))))
    for chunk in _chunks(ids["preference"]):
        out.update(preference_part(Preference.objects.filter(pk__in=chunk)))
    for chunk in _chunks(ids["skip"]):
        out.update(skip_part(Skip.objects.filter(pk__in=chunk)))
    for chunk in _chunks(sorted(ids["prefpair"]), 500):
        q = models.Q()
        for a, b in chunk:
            q |= models.Q(response_a_id=a, response_b_id=b)
        out.update(preference_unit_part(Preference.objects.filter(q)))
    return out
