"""Dashboard roll-ups: small pre-aggregated tables kept current in the transaction of every write.

The dashboards (dashboards.py) read these instead of grouping a million labels. Each label and
preference *contributes* a few counter increments to a few roll-up rows (its day, model version,
annotator, categories, reviews ...); a write is "contribution after minus contribution before",
applied as INSERT ... ON CONFLICT DO UPDATE SET c = c + excluded.c, so concurrent writers add to
the same rows without losing counts (the row lock orders them). `rebuild` recomputes everything
from scratch with the same contribution functions: `manage.py rebuild_rollups` after bulk loads
that bypass the ORM (COPY, queryset.update) and for repairs.

Hooks are Django signals on Label, its categories, Review, Adjudication, Preference, Skip,
Conversation (its split) and TaxonomyCategory (moving or deleting a category recounts the project's
category roll-up), so every path that writes through the ORM (pages, API, admin, demo loop, tests)
keeps the counts exact. Writes that bypass signals (bulk_insert/COPY, bulk_create, queryset.update)
need `rebuild_rollups` afterwards. Several writes to the same objects inside `batched()` (a label
and its categories, a review and its new status) are counted in one pass at its end. Days are local dates
in settings.TIME_ZONE; model version 0 stands for "none"; a counted label without a submission time
is filed under NO_DAY (never inside a date filter).
"""

import contextlib
import contextvars
import datetime as dt
from collections import Counter, defaultdict

from django.db import connection, models, transaction
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete, pre_save
from django.utils import timezone

from .models import (
    ROLLUP_STATUSES,
    Adjudication,
    AgreementPair,
    AgreementPairDay,
    AnnotatorDay,
    AnnotatorPreferenceDay,
    AnnotatorSeconds,
    AnnotatorSecondsDay,
    CategoryDay,
    Conversation,
    GoldDay,
    Label,
    LabelDay,
    ModelResponse,
    Preference,
    PreferenceDay,
    Project,
    ResponseJudges,
    Review,
    ReviewDay,
    Skip,
    SkipDay,
    Split,
    Task,
    TaxonomyCategory,
)

# --- agreement roll-ups -------------------------------------------------------------------------
#
# Agreement units are responses (verdicts) and (response a, response b) pairs (preferences); a unit's
# composition depends on which label statuses the page counts, so these roll-ups are keyed by the
# status set as a bit mask (submitted 1, approved 2, rejected 4; 1..7) and hold, per mask, what the
# agreement page groups: units by (judges, unreasonable verdicts), units by (category, judges, judges
# who chose it), preference units by their choice counts. Columns: the unit's split. A unit's labels
# fall on different days: it is filed under the local day of its last one (the day it was complete),
# NO_DAY when one of them has no submission time; a date filter counts the units completed inside it.
# Annotator pairs likewise, in AgreementPairDay, under the day of the later of the two labels.

SPLIT_COLUMNS = tuple(f"n_{s}" for s in Split.values)


def status_mask(statuses) -> int:
    return sum(1 << i for i, s in enumerate(ROLLUP_STATUSES) if s in statuses)


MASKS = range(1, 1 << len(ROLLUP_STATUSES))


def _split_counters(name):
    attrs = {c: models.IntegerField(default=0) for c in SPLIT_COLUMNS}
    attrs.update({"__module__": __name__, "Meta": type("Meta", (), {"abstract": True})})
    return type(name, (models.Model,), attrs)


class AgreementUnit(_split_counters("AgreementUnitCounters")):
    """Responses judged two or more times (among labels of the status mask) by (judges, unreasonable verdicts)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    statuses = models.SmallIntegerField()
    day = models.DateField()
    model_version = models.IntegerField()
    judges = models.IntegerField()
    bad = models.IntegerField()

    class Meta:
        app_label = "annotator"
        constraints = [models.UniqueConstraint(fields=["project", "statuses", "day", "model_version", "judges", "bad"],
                                               name="agreementunit_key")]


class AgreementCategory(_split_counters("AgreementCategoryCounters")):
    """Responses judged two or more times by (category, judges, judges who chose the category, k >= 1)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    statuses = models.SmallIntegerField()
    day = models.DateField()
    model_version = models.IntegerField()
    category = models.IntegerField()
    judges = models.IntegerField()
    chose = models.IntegerField()

    class Meta:
        app_label = "annotator"
        constraints = [models.UniqueConstraint(
            fields=["project", "statuses", "day", "model_version", "category", "judges", "chose"],
            name="agreementcategory_key")]


class PreferenceUnit(_split_counters("PreferenceUnitCounters")):
    """(response a, response b) pairs compared two or more times, by how many chose a, b, tie, both bad."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    statuses = models.SmallIntegerField()
    day = models.DateField()
    model_a = models.IntegerField()
    model_b = models.IntegerField()
    c_a = models.IntegerField()
    c_b = models.IntegerField()
    c_tie = models.IntegerField()
    c_both_bad = models.IntegerField()

    class Meta:
        app_label = "annotator"
        constraints = [models.UniqueConstraint(
            fields=["project", "statuses", "day", "model_a", "model_b", "c_a", "c_b", "c_tie", "c_both_bad"],
            name="preferenceunit_key")]


class AgreementItem(models.Model):
    """One row per split response (0 < unreasonable < judges) and status mask: the "items driving
    disagreement" list reads the top of the score index. Not a counter: a response's rows are
    recomputed whenever one of its labels changes (refresh_items) and by rebuild."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    response = models.IntegerField()
    statuses = models.SmallIntegerField()
    model_version = models.IntegerField()
    split = models.CharField(max_length=10)
    judges = models.IntegerField()
    bad = models.IntegerField()
    score = models.IntegerField()  # split judge pairs: (judges - bad) * bad
    last = models.DateTimeField(null=True)

    class Meta:
        app_label = "annotator"
        constraints = [models.UniqueConstraint(fields=["project", "response", "statuses"], name="agreementitem_key")]
        indexes = [models.Index("project", "statuses", models.F("score").desc(), models.F("last").desc(), "response",
                                name="agreementitem_top")]

    def __str__(self):
        return f"response {self.response}: {self.bad} of {self.judges} unreasonable"

LabelCategory = Label.categories.through
NO_DAY = dt.date(1, 1, 1)
TIME_CAP_S = 1800  # same bins as the annotators page: one second each, the rest in the last
UNREASONABLE = Label.Verdict.UNREASONABLE
ROLLUPS = [LabelDay, AnnotatorDay, CategoryDay, AnnotatorSeconds, AnnotatorSecondsDay, ReviewDay, GoldDay, SkipDay,
           PreferenceDay, AnnotatorPreferenceDay, ResponseJudges, AgreementPair, AgreementPairDay, AgreementUnit,
           AgreementCategory, PreferenceUnit]
KEYS = {
    LabelDay: ("project_id", "day", "model_version"),
    AnnotatorDay: ("project_id", "annotator", "day", "model_version"),
    CategoryDay: ("project_id", "day", "model_version", "category", "under"),
    AnnotatorSeconds: ("project_id", "annotator", "seconds"),
    AnnotatorSecondsDay: ("project_id", "day", "annotator", "seconds"),
    ReviewDay: ("project_id", "annotator", "day", "model_version"),
    PreferenceDay: ("project_id", "day", "model_a", "model_b", "choice", "left_side"),
    AnnotatorPreferenceDay: ("project_id", "annotator", "day", "model_a", "model_b"),
    ResponseJudges: ("project_id", "response"),
    GoldDay: ("project_id", "annotator", "day", "model_version", "verdict", "gold"),
    SkipDay: ("project_id", "annotator", "day", "model_version"),
    AgreementPair: ("project_id", "model_version", "annotator_a", "annotator_b", "bad_a", "bad_b"),
    AgreementPairDay: ("project_id", "day", "model_version", "annotator_a", "annotator_b", "bad_a", "bad_b"),
    AgreementUnit: ("project_id", "statuses", "day", "model_version", "judges", "bad"),
    AgreementCategory: ("project_id", "statuses", "day", "model_version", "category", "judges", "chose"),
    PreferenceUnit: ("project_id", "statuses", "day", "model_a", "model_b", "c_a", "c_b", "c_tie", "c_both_bad"),
}


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
            self.parents[project_id] = dict(TaxonomyCategory.objects.filter(project_id=project_id)
                                            .values_list("id", "parent_id"))
        parents = self.parents[project_id]
        out, node = [], category
        while node is not None and node not in out:
            out.append(node)
            node = parents.get(node)
        return out


LABEL_FIELDS = ("pk", "project_id", "annotator_id", "model_version_id", "status", "verdict", "submitted_at",
                "time_spent_ms", "response_id", "response__conversation__split")


def _label_rows(labels) -> list[tuple]:
    return list(labels.filter(status__in=ROLLUP_STATUSES).values_list(*LABEL_FIELDS).order_by())


def _chunks(ids, size=5000):
    ids = list(ids)
    for i in range(0, len(ids), size):
        yield ids[i:i + size]


def label_part(rows, tree: Tree) -> Counter:
    """The labels' own counts: day, annotator, time, categories, reviews, gold."""
    out: Counter = Counter()
    if not rows:
        return out
    bad_ids = [r[0] for r in rows if r[5] == UNREASONABLE]
    categories = defaultdict(list)
    for chunk in _chunks(bad_ids):
        for label_id, cat in LabelCategory.objects.filter(label_id__in=chunk).values_list(
                "label_id", "taxonomycategory_id"):
            categories[label_id].append(cat)
    reviews = defaultdict(list)
    for chunk in _chunks([r[0] for r in rows]):
        for label_id, decision, created in Review.objects.filter(label_id__in=chunk).values_list(
                "label_id", "decision", "created_at").order_by():
            reviews[label_id].append((decision, created))
    gold = {}
    for chunk in _chunks({r[8] for r in rows}):
        gold.update(Adjudication.objects.filter(task__kind=Task.Kind.LABEL, task__response_id__in=chunk,
                                                verdict__in=Label.Verdict.values)
                    .values_list("task__response_id", "verdict"))
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
            key, column = (project, mask, completed_day(r[6] for r in unit), unit[0][3] or 0), f"n_{unit[0][9]}"
            bad = sum(r[5] == UNREASONABLE for r in unit)
            out[AgreementUnit, (*key, len(unit), bad), column] += 1
            for cat, k in Counter(c for r in unit for c in categories.get(r[0], ())).items():
                out[AgreementCategory, (*key, cat, len(unit), k), column] += 1
        group.sort(key=lambda r: r[2])
        for i, a in enumerate(group):
            for b in group[i + 1:]:
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
                "label_id", "taxonomycategory_id"):
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
                out.append(AgreementItem(
                    project_id=unit[0][1], response=response, statuses=mask, model_version=unit[0][3] or 0,
                    split=unit[0][9], judges=len(unit), bad=bad, score=(len(unit) - bad) * bad,
                    last=None if None in times else max(times)))
    return out


def refresh_items(response_ids):
    """Recompute the disagreement rows of these responses from their labels as they are now."""
    for chunk in _chunks(sorted(set(response_ids))):
        AgreementItem.objects.filter(response__in=chunk).delete()
        AgreementItem.objects.bulk_create(item_rows(_label_rows(Label.objects.filter(response_id__in=chunk))),
                                          batch_size=2000)


PREFERENCE_CHOICES = tuple(Preference.Choice.values)


def preference_unit_part(prefs) -> Counter:
    """Preference units: the counted preferences of each (response a, response b) pair, per status mask."""
    out: Counter = Counter()
    groups = defaultdict(list)
    for row in prefs.filter(status__in=ROLLUP_STATUSES).values_list(
            "response_a_id", "response_b_id", "response_a__conversation__project_id", "response_a__model_version_id",
            "response_b__model_version_id", "choice", "status", "response_a__conversation__split",
            "submitted_at").order_by():
        groups[row[:2]].append(row)
    for group in groups.values():
        for mask in MASKS:
            unit = [r for r in group if mask >> ROLLUP_STATUSES.index(r[6]) & 1]
            if len(unit) < 2:
                continue
            counts = Counter(r[5] for r in unit)
            _, _, project, a, b, _, _, split, _ = unit[0]
            key = (project, mask, completed_day(r[8] for r in unit), a or 0, b or 0,
                   *(counts.get(c, 0) for c in PREFERENCE_CHOICES))
            out[PreferenceUnit, key, f"n_{split}"] += 1
    return out


def preference_part(prefs) -> Counter:
    out: Counter = Counter()
    for project, annotator, a, b, choice, left, status, submitted, ms, split in prefs.filter(
            status__in=ROLLUP_STATUSES).values_list(
            "response_a__conversation__project_id", "annotator_id", "response_a__model_version_id",
            "response_b__model_version_id", "choice", "left_side", "status", "submitted_at", "time_spent_ms",
            "response_a__conversation__split").order_by():
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
            "task__project_id", "annotator_id", "skipped_at", "task__response__model_version_id",
            "task__response__conversation__split").order_by():
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


def lock_units(units):
    """Serialise writers of the same agreement unit (a response; a preference pair by its first response):
    a unit's composition is not a sum over its labels, so "after minus before" must see the other
    writers' committed labels. Inside a transaction only (autocommit writes run unlocked)."""
    responses = sorted({pk for kind, pk in units if kind == "response" and pk is not None}
                       | {pk[0] for kind, pk in units if kind == "prefpair"})
    if responses and connection.in_atomic_block and connection.features.has_select_for_update:
        list(ModelResponse.objects.select_for_update(no_key=True).filter(pk__in=responses).order_by("pk")
             .values_list("pk", flat=True))


def apply(delta: Counter):
    """Add a {(model, key, column): n} delta to the roll-ups: one upsert per touched table, keys sorted."""
    rows: dict = defaultdict(lambda: defaultdict(Counter))
    for (model, key, column), n in delta.items():
        if n:
            rows[model][key][column] += n
    for model in ROLLUPS:  # a fixed table order and sorted keys: concurrent writers lock rows in one order
        if rows.get(model):
            _upsert(model, sorted(rows[model].items(), key=lambda kv: kv[0]))


def _counter_columns(model) -> list[str]:
    keys = {k.removesuffix("_id") for k in KEYS[model]} | {"id", "project"}
    return [f.column for f in model._meta.concrete_fields if f.name not in keys]


def _upsert(model, rows):
    qn = connection.ops.quote_name
    table = qn(model._meta.db_table)
    keys = list(KEYS[model])
    columns = _counter_columns(model)  # all of them: the columns' default is Django's, not the database's
    names = ", ".join(qn(c) for c in keys + columns)
    values = ", ".join(["(" + ", ".join(["%s"] * (len(keys) + len(columns))) + ")"] * len(rows))
    params = []
    for key, counts in rows:
        params += [*key, *(counts.get(c, 0) for c in columns)]
    touched = sorted({c for _, counts in rows for c in counts})
    updates = ", ".join(f"{qn(c)} = {table}.{qn(c)} + excluded.{qn(c)}" for c in touched)
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {table} ({names}) VALUES {values} "
                       f"ON CONFLICT ({', '.join(qn(k) for k in keys)}) DO UPDATE SET {updates}", params)


def diff(after: Counter, before: Counter) -> Counter:
    out = Counter(after)
    out.subtract(before)
    return out


# --- rebuild ------------------------------------------------------------------------------------

CHUNK = 20_000


@transaction.atomic
def rebuild(project: Project | None = None, categories_only: bool = False) -> dict:
    """Recompute a project's roll-ups (every project's when None) from its labels, preferences and skips.

    Labels are read in chunks of whole responses (a response's agreement pairs need all its labels).
    """
    projects = [project] if project is not None else list(Project.objects.all())
    written = Counter()
    for p in projects:
        for model in ([CategoryDay, AgreementCategory] if categories_only else ROLLUPS):
            model.objects.filter(project=p).delete()
        if not categories_only:
            AgreementItem.objects.filter(project=p).delete()
        items = []
        totals: Counter = Counter()
        tree = Tree()
        last = 0
        while True:
            upto = list(Label.objects.filter(project=p, response_id__gt=last).order_by("response_id")
                        .values_list("response_id", flat=True)[CHUNK - 1:CHUNK])
            labels = Label.objects.filter(project=p, response_id__gt=last)
            rows = _label_rows(labels.filter(response_id__lte=upto[0]) if upto else labels)
            part = label_part(rows, tree)
            if categories_only:
                part.update(response_part(rows))
                part = Counter({k: v for k, v in part.items() if k[0] in (CategoryDay, AgreementCategory)})
            else:
                part.update(response_part(rows))
                items += item_rows(rows)
            totals.update(part)
            if not upto:
                break
            last = upto[0]
        if not categories_only:
            totals.update(preference_part(Preference.objects.filter(response_a__conversation__project=p)))
            totals.update(skip_part(Skip.objects.filter(task__project=p)))
            totals.update(preference_unit_part(Preference.objects.filter(response_a__conversation__project=p)))
        for model, n in _insert(totals).items():
            written[model.__name__] += n
        AgreementItem.objects.bulk_create(items, batch_size=5000)
        if items:
            written["AgreementItem"] += len(items)
    return dict(written)


def _insert(totals: Counter) -> Counter:
    rows: dict = defaultdict(lambda: defaultdict(dict))
    for (model, key, column), n in totals.items():
        if n:
            rows[model][key][column] = n
    written = Counter()
    for model, by_key in rows.items():
        objs = [model(**dict(zip(KEYS[model], key, strict=True)), **counts) for key, counts in sorted(by_key.items())]
        model.objects.bulk_create(objs, batch_size=2000)
        written[model] = len(objs)
    return written


def snapshot(project: Project) -> dict:
    """Every roll-up row of a project with a non-zero counter, as {table: {key: {column: n}}} (for checks)."""
    out = {}
    for model in ROLLUPS:
        cols = _counter_columns(model)
        table = {}
        for row in model.objects.filter(project=project).values(*KEYS[model], *cols):
            counts = {c: row[c] for c in cols if row[c]}
            if counts:
                table[tuple(row[k] for k in KEYS[model])] = counts
        out[model.__name__] = table
    out["AgreementItem"] = set(AgreementItem.objects.filter(project=project).values_list(
        "response", "statuses", "model_version", "split", "judges", "bad", "score", "last"))
    return out


# --- signal handlers ----------------------------------------------------------------------------

def units_of(instance) -> set[tuple[str, int]]:
    """The units a write to this object can change."""
    if isinstance(instance, Label):
        return {("label", instance.pk), ("response", instance.response_id)}
    if isinstance(instance, Review):
        return {("label", instance.label_id)} if instance.label_id else set()
    if isinstance(instance, Adjudication):
        response = Task.objects.filter(pk=instance.task_id, kind=Task.Kind.LABEL).values("response_id")
        return {("label", pk) for pk in Label.objects.filter(response_id__in=response).values_list("pk", flat=True)}
    if isinstance(instance, Preference):
        pairs = {(instance.response_a_id, instance.response_b_id)}
        if instance.pk:  # a changed pair leaves its old unit too
            pairs |= set(Preference.objects.filter(pk=instance.pk).values_list("response_a_id", "response_b_id"))
        return {("preference", instance.pk)} | {("prefpair", pair) for pair in pairs if None not in pair}
    if isinstance(instance, Skip):
        return {("skip", instance.pk)}
    if isinstance(instance, Conversation):
        responses = list(ModelResponse.objects.filter(conversation_id=instance.pk).values_list("pk", flat=True))
        return ({("response", pk) for pk in responses}
                | {("label", pk) for pk in Label.objects.filter(response_id__in=responses).values_list("pk", flat=True)}
                | {("preference", pk) for pk in Preference.objects.filter(response_a_id__in=responses)
                   .values_list("pk", flat=True)}
                | {("prefpair", pair) for pair in Preference.objects.filter(response_a_id__in=responses)
                   .values_list("response_a_id", "response_b_id")}
                | {("skip", pk) for pk in Skip.objects.filter(task__response_id__in=responses)
                   .values_list("pk", flat=True)})
    return set()


class _Batch:
    """Writes inside `batched()`: each unit's counts before its first write, applied once at the end."""

    def __init__(self):
        self.before: Counter = Counter()
        self.units: set = set()

    def touch(self, units):
        """Before a write: remember the counts of the units not seen yet in this batch."""
        fresh = {u for u in units if u not in self.units and u[1] is not None}
        if fresh:
            lock_units(fresh)
            self.before.update(contributions(fresh))
            self.units |= fresh

    def written(self, units):
        """After a write: units first seen now are new objects (nothing to count before them)."""
        self.units |= {u for u in units if u[1] is not None}


_batch: contextvars.ContextVar[_Batch | None] = contextvars.ContextVar("rollup_batch", default=None)


@contextlib.contextmanager
def batched():
    """Apply the roll-up changes of several writes to the same objects once, at the end (inside a
    transaction): a label saved and then given its categories is counted in one pass instead of two."""
    if _batch.get() is not None:  # nested: the outer batch applies
        yield
        return
    batch = _Batch()
    token = _batch.set(batch)
    try:
        yield
    finally:
        _batch.reset(token)
    lock_units(batch.units)
    apply(diff(contributions(batch.units), batch.before))
    refresh_items(pk for kind, pk in batch.units if kind == "response")


def _pre_save(sender, instance, raw=False, **kwargs):
    if raw:
        return
    if isinstance(instance, Conversation):  # only a change of split moves counts
        old = Conversation.objects.filter(pk=instance.pk).values_list("split", flat=True).first()
        if old is None or old == instance.split:
            return
    units = units_of(instance)
    batch = _batch.get()
    if batch is not None:
        batch.touch(units)
        instance._rollup_batched = True
        return
    lock_units(units)
    instance._rollup_before = (units, contributions(units))


def _post_save(sender, instance, raw=False, **kwargs):
    if instance.__dict__.pop("_rollup_batched", False):
        _batch.get().written(units_of(instance))
        return
    saved = instance.__dict__.pop("_rollup_before", None)
    if saved is None:
        return
    units, before = saved
    units = units | units_of(instance)  # a new object has its id now
    lock_units(units)
    apply(diff(contributions(units), before))
    refresh_items(pk for kind, pk in units if kind == "response" and pk is not None)


def _deleting_project(origin) -> bool:
    """A project being deleted takes its roll-up rows with it (CASCADE): nothing to subtract."""
    return isinstance(origin, Project) or getattr(origin, "model", None) is Project


def _pre_delete(sender, instance, origin=None, **kwargs):
    """Remember the counts of the units this object touches, once per delete call.

    One delete can cascade to labels, their reviews and a gold decision; every post_delete below
    recomputes its own units and applies the change since the last one, so the order in which
    Django deletes them does not matter and nothing is subtracted twice.
    """
    if _deleting_project(origin):
        return
    batch = _batch.get()
    if batch is not None:  # counted with the batch's other writes, at its end
        batch.touch(units_of(instance))
        return
    holder = origin if origin is not None else instance
    applied = holder.__dict__.setdefault("_rollup_applied", {})
    units = units_of(instance)
    lock_units(units)
    for unit in units:
        if unit not in applied:
            applied[unit] = contributions([unit])
    instance._rollup_delete = (applied, units)


def _post_delete(sender, instance, **kwargs):
    saved = instance.__dict__.pop("_rollup_delete", None)
    if saved is None:
        return
    applied, units = saved
    delta: Counter = Counter()
    for unit in units:
        now = contributions([unit])
        delta.update(diff(now, applied[unit]))
        applied[unit] = now
    apply(delta)
    refresh_items(pk for kind, pk in units if kind == "response" and pk is not None)


def _categories_changed(sender, instance, action, reverse, pk_set, **kwargs):
    if action.startswith("pre_"):
        if reverse:  # category.labels.add(...): the labels are in pk_set (all of the category's on clear)
            ids = list(pk_set) if pk_set is not None else list(instance.labels.values_list("pk", flat=True))
        else:
            ids = [instance.pk]
        units = {("label", pk) for pk in ids}
        # a label's categories also count in its response's agreement unit
        units |= {("response", pk) for pk in Label.objects.filter(pk__in=ids).values_list("response_id", flat=True)}
        batch = _batch.get()
        if batch is not None:
            batch.touch(units)
            return
        lock_units(units)
        instance._rollup_m2m = (units, contributions(units))
    elif action.startswith("post_") and "_rollup_m2m" in instance.__dict__:
        units, before = instance.__dict__.pop("_rollup_m2m")
        apply(diff(contributions(units), before))


def _category_pre_save(sender, instance, raw=False, **kwargs):
    if instance.pk and not raw:
        old = TaxonomyCategory.objects.filter(pk=instance.pk).values_list("parent_id", flat=True).first()
        instance._rollup_moved = old != instance.parent_id


def _category_post_save(sender, instance, raw=False, **kwargs):
    # a new category has no labels yet; a moved one changes what its ancestors count "under"
    if instance.__dict__.pop("_rollup_moved", False):
        rebuild(instance.project, categories_only=True)


def _category_post_delete(sender, instance, origin=None, **kwargs):
    # deleting a category removes its label links without m2m signals: recount the project's categories
    if _deleting_project(origin) or (isinstance(origin, TaxonomyCategory) and origin.pk != instance.pk):
        return  # the project goes too, or this is a child of the deleted category (its parent recounts)
    project = Project.objects.filter(pk=instance.project_id).first()
    if project is not None:
        rebuild(project, categories_only=True)


for _model in (Label, Review, Adjudication, Preference, Skip, Conversation):
    _name = _model.__name__.lower()
    pre_save.connect(_pre_save, sender=_model, dispatch_uid=f"rollup_{_name}_pre_save")
    post_save.connect(_post_save, sender=_model, dispatch_uid=f"rollup_{_name}_post_save")
    if _model is not Conversation:  # a conversation's rows go with its labels, preferences and skips
        pre_delete.connect(_pre_delete, sender=_model, dispatch_uid=f"rollup_{_name}_pre_delete")
        post_delete.connect(_post_delete, sender=_model, dispatch_uid=f"rollup_{_name}_post_delete")
m2m_changed.connect(_categories_changed, sender=LabelCategory, dispatch_uid="rollup_label_categories")
pre_save.connect(_category_pre_save, sender=TaxonomyCategory, dispatch_uid="rollup_category_pre_save")
post_save.connect(_category_post_save, sender=TaxonomyCategory, dispatch_uid="rollup_category_post_save")
post_delete.connect(_category_post_delete, sender=TaxonomyCategory, dispatch_uid="rollup_category_post_delete")
