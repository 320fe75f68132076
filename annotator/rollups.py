"""Dashboard roll-ups: small pre-aggregated tables kept current in the transaction of every write.

The dashboards (dashboards.py) read these instead of grouping a million labels. Each label and
preference *contributes* a few counter increments to a few roll-up rows (its day, model version,
annotator, categories, reviews ...); a write is "contribution after minus contribution before",
applied as INSERT ... ON CONFLICT DO UPDATE SET c = c + excluded.c, so concurrent writers add to
the same rows without losing counts (the row lock orders them). `rebuild` recomputes everything
from scratch with the same contribution functions: `manage.py rebuild_rollups` after bulk loads
that bypass the ORM (COPY, queryset.update) and for repairs.

Hooks are Django signals on Label, its categories, Review, Preference, Conversation (split) and
TaxonomyCategory (tree changes rebuild the project's category roll-up), so every path that writes
through the ORM (pages, API, admin, demo loop, tests) keeps the counts exact. Days are local dates
in settings.TIME_ZONE; model version 0 stands for "none"; a counted label without a submission time
is filed under NO_DAY (never inside a date filter).
"""

import datetime as dt
from collections import Counter, defaultdict

from django.db import connection, transaction
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete, pre_save
from django.utils import timezone

from .models import (
    ROLLUP_STATUSES,
    AnnotatorDay,
    AnnotatorPreferenceDay,
    AnnotatorSeconds,
    CategoryDay,
    Conversation,
    Label,
    LabelDay,
    Preference,
    PreferenceDay,
    Project,
    ResponseJudges,
    Review,
    ReviewDay,
    TaxonomyCategory,
)

LabelCategory = Label.categories.through
NO_DAY = dt.date(1, 1, 1)
TIME_CAP_S = 1800  # same bins as the annotators page: one second each, the rest in the last
UNREASONABLE = Label.Verdict.UNREASONABLE
ROLLUPS = [LabelDay, AnnotatorDay, CategoryDay, AnnotatorSeconds, ReviewDay, PreferenceDay, AnnotatorPreferenceDay,
           ResponseJudges]
KEYS = {
    LabelDay: ("project_id", "day", "model_version"),
    AnnotatorDay: ("project_id", "annotator", "day", "model_version"),
    CategoryDay: ("project_id", "day", "model_version", "category", "under"),
    AnnotatorSeconds: ("project_id", "annotator", "seconds"),
    ReviewDay: ("project_id", "annotator", "day", "model_version"),
    PreferenceDay: ("project_id", "day", "model_a", "model_b", "choice", "left_side"),
    AnnotatorPreferenceDay: ("project_id", "annotator", "day", "model_a", "model_b"),
    ResponseJudges: ("project_id", "response"),
}


def local_day(value) -> dt.date:
    if value is None:
        return NO_DAY
    return timezone.localtime(value, timezone.get_default_timezone()).date()


# --- contributions ------------------------------------------------------------------------------

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


def label_contributions(labels, tree: Tree | None = None, with_reviews: bool = True) -> Counter:
    """{(roll-up model, key, column): increment} of the labels in a queryset, as they are now.

    with_reviews=False leaves out the review counts (a deleted review subtracts its own).
    """
    tree = tree or Tree()
    out: Counter = Counter()
    rows = list(labels.filter(status__in=ROLLUP_STATUSES).values_list(
        "pk", "project_id", "annotator_id", "model_version_id", "status", "verdict", "submitted_at", "time_spent_ms",
        "response_id", "response__conversation__split").order_by())
    if not rows:
        return out
    ids = [r[0] for r in rows]
    bad_ids = [r[0] for r in rows if r[5] == UNREASONABLE]
    categories = defaultdict(list)
    for i in range(0, len(bad_ids), 5000):
        for label_id, cat in LabelCategory.objects.filter(label_id__in=bad_ids[i:i + 5000]).values_list(
                "label_id", "taxonomycategory_id"):
            categories[label_id].append(cat)
    reviews = defaultdict(list)
    for i in range(0, len(ids) if with_reviews else 0, 5000):
        for label_id, decision, created in Review.objects.filter(label_id__in=ids[i:i + 5000]).values_list(
                "label_id", "decision", "created_at").order_by():
            reviews[label_id].append((decision, created))
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
            out[AnnotatorSeconds, (project, annotator, min(ms // 1000, TIME_CAP_S)), f"n_{cell}"] += 1
        if bad:
            under = set()
            for cat in set(categories.get(pk, ())):
                out[CategoryDay, (project, day, mv, cat, False), f"n_{cell}"] += 1
                under.update(tree.chain(project, cat))
            for node in under:
                out[CategoryDay, (project, day, mv, node, True), f"n_{cell}"] += 1
        for decision, created in reviews.get(pk, ()):
            out[ReviewDay, (project, annotator, local_day(created), mv), f"{decision}_{cell}"] += 1
        out[ResponseJudges, (project, response), "n"] += 1
    return out


def preference_contributions(prefs) -> Counter:
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
            out[AnnotatorSeconds, (project, annotator, min(ms // 1000, TIME_CAP_S)), f"p_{cell}"] += 1
    return out


def contributions(label_ids=(), preference_ids=(), with_reviews: bool = True) -> Counter:
    out: Counter = Counter()
    if label_ids:
        out.update(label_contributions(Label.objects.filter(pk__in=list(label_ids)), with_reviews=with_reviews))
    if preference_ids:
        out.update(preference_contributions(Preference.objects.filter(pk__in=list(preference_ids))))
    return out


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
    """Recompute a project's roll-ups (every project's when None) from the labels and preferences."""
    projects = [project] if project is not None else list(Project.objects.all())
    written = Counter()
    for p in projects:
        models = [CategoryDay] if categories_only else ROLLUPS
        for model in models:
            model.objects.filter(project=p).delete()
        totals: Counter = Counter()
        tree = Tree()
        last = 0
        while True:
            ids = list(Label.objects.filter(project=p, pk__gt=last).order_by("pk").values_list("pk", flat=True)[:CHUNK])
            if not ids:
                break
            part = label_contributions(Label.objects.filter(project=p, pk__gte=ids[0], pk__lte=ids[-1]), tree)
            totals.update({k: v for k, v in part.items() if not categories_only or k[0] is CategoryDay})
            last = ids[-1]
        if not categories_only:
            totals.update(preference_contributions(Preference.objects.filter(response_a__conversation__project=p)))
        for model, n in _insert(totals).items():
            written[model.__name__] += n
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
    return out


# --- signal handlers ----------------------------------------------------------------------------

def _deleting_project(origin) -> bool:
    """A project being deleted takes its roll-up rows with it (CASCADE): nothing to subtract."""
    if isinstance(origin, Project):
        return True
    return getattr(origin, "model", None) is Project


def _label_pre_save(sender, instance, raw=False, **kwargs):
    instance._rollup_before = contributions([instance.pk]) if instance.pk and not raw else Counter()


def _label_post_save(sender, instance, raw=False, **kwargs):
    if raw:
        return
    apply(diff(contributions([instance.pk]), getattr(instance, "_rollup_before", Counter())))
    instance._rollup_before = Counter()


def _label_pre_delete(sender, instance, origin=None, **kwargs):
    # the label's reviews are deleted with it (CASCADE) and each subtracts its own counts
    instance._rollup_before = Counter() if _deleting_project(origin) else contributions([instance.pk],
                                                                                        with_reviews=False)


def _label_post_delete(sender, instance, **kwargs):
    apply(diff(Counter(), getattr(instance, "_rollup_before", Counter())))


def _categories_changed(sender, instance, action, reverse, pk_set, **kwargs):
    if action.startswith("pre_"):
        if reverse:  # category.labels.add(...): the labels are in pk_set (all of the category's on clear)
            ids = list(pk_set) if pk_set is not None else list(instance.labels.values_list("pk", flat=True))
        else:
            ids = [instance.pk]
        instance._rollup_m2m = (ids, contributions(ids))
    elif action.startswith("post_") and hasattr(instance, "_rollup_m2m"):
        ids, before = instance._rollup_m2m
        del instance._rollup_m2m
        apply(diff(contributions(ids), before))


def _review_pre_save(sender, instance, raw=False, **kwargs):
    if instance.label_id and not raw:
        instance._rollup_before = contributions([instance.label_id])


def _review_post_save(sender, instance, raw=False, **kwargs):
    if instance.label_id and not raw and hasattr(instance, "_rollup_before"):
        apply(diff(contributions([instance.label_id]), instance._rollup_before))
        del instance._rollup_before


def _review_pre_delete(sender, instance, origin=None, **kwargs):
    # only this review's own counts (the label's handler leaves reviews out when the label goes too)
    if instance.label_id and not _deleting_project(origin):
        label = Label.objects.filter(pk=instance.label_id, status__in=ROLLUP_STATUSES).values_list(
            "project_id", "annotator_id", "model_version_id", "status", "response__conversation__split").first()
        if label:
            project, annotator, mv, status, split = label
            instance._rollup_own = Counter({(ReviewDay, (project, annotator, local_day(instance.created_at), mv or 0),
                                             f"{instance.decision}_{split}_{status}"): 1})


def _review_post_delete(sender, instance, **kwargs):
    own = getattr(instance, "_rollup_own", None)
    if own:
        apply(diff(Counter(), own))


def _preference_pre_save(sender, instance, raw=False, **kwargs):
    instance._rollup_before = contributions(preference_ids=[instance.pk]) if instance.pk and not raw else Counter()


def _preference_post_save(sender, instance, raw=False, **kwargs):
    if raw:
        return
    apply(diff(contributions(preference_ids=[instance.pk]), getattr(instance, "_rollup_before", Counter())))
    instance._rollup_before = Counter()


def _preference_pre_delete(sender, instance, origin=None, **kwargs):
    instance._rollup_before = Counter() if _deleting_project(origin) else contributions(preference_ids=[instance.pk])


def _preference_post_delete(sender, instance, **kwargs):
    apply(diff(Counter(), getattr(instance, "_rollup_before", Counter())))


def _conversation_items(conv_id):
    labels = list(Label.objects.filter(response__conversation_id=conv_id).values_list("pk", flat=True))
    prefs = list(Preference.objects.filter(response_a__conversation_id=conv_id).values_list("pk", flat=True))
    return labels, prefs


def _conversation_pre_save(sender, instance, raw=False, **kwargs):
    """The split is a filter the roll-ups keep: moving a conversation moves its labels' counts."""
    if not instance.pk or raw:
        return
    old = Conversation.objects.filter(pk=instance.pk).values_list("split", flat=True).first()
    if old is not None and old != instance.split:
        labels, prefs = _conversation_items(instance.pk)
        instance._rollup_before = (labels, prefs, contributions(labels, prefs))


def _conversation_post_save(sender, instance, raw=False, **kwargs):
    if hasattr(instance, "_rollup_before"):
        labels, prefs, before = instance._rollup_before
        del instance._rollup_before
        apply(diff(contributions(labels, prefs), before))


def _category_pre_save(sender, instance, raw=False, **kwargs):
    if instance.pk and not raw:
        old = TaxonomyCategory.objects.filter(pk=instance.pk).values_list("parent_id", flat=True).first()
        instance._rollup_moved = old != instance.parent_id


def _category_post_save(sender, instance, raw=False, **kwargs):
    # a new category has no labels yet; a moved one changes what its ancestors count "under"
    if getattr(instance, "_rollup_moved", False):
        rebuild(instance.project, categories_only=True)
    instance._rollup_moved = False


def _category_post_delete(sender, instance, origin=None, **kwargs):
    # deleting a category removes its label links without m2m signals: recount the project's categories
    if not _deleting_project(origin) and Project.objects.filter(pk=instance.project_id).exists():
        if not (isinstance(origin, TaxonomyCategory) and origin.pk != instance.pk):  # once per delete call
            rebuild(Project.objects.get(pk=instance.project_id), categories_only=True)


pre_save.connect(_label_pre_save, sender=Label, dispatch_uid="rollup_label_pre_save")
post_save.connect(_label_post_save, sender=Label, dispatch_uid="rollup_label_post_save")
pre_delete.connect(_label_pre_delete, sender=Label, dispatch_uid="rollup_label_pre_delete")
post_delete.connect(_label_post_delete, sender=Label, dispatch_uid="rollup_label_post_delete")
m2m_changed.connect(_categories_changed, sender=LabelCategory, dispatch_uid="rollup_label_categories")
pre_save.connect(_review_pre_save, sender=Review, dispatch_uid="rollup_review_pre_save")
post_save.connect(_review_post_save, sender=Review, dispatch_uid="rollup_review_post_save")
pre_delete.connect(_review_pre_delete, sender=Review, dispatch_uid="rollup_review_pre_delete")
post_delete.connect(_review_post_delete, sender=Review, dispatch_uid="rollup_review_post_delete")
pre_save.connect(_preference_pre_save, sender=Preference, dispatch_uid="rollup_preference_pre_save")
post_save.connect(_preference_post_save, sender=Preference, dispatch_uid="rollup_preference_post_save")
pre_delete.connect(_preference_pre_delete, sender=Preference, dispatch_uid="rollup_preference_pre_delete")
post_delete.connect(_preference_post_delete, sender=Preference, dispatch_uid="rollup_preference_post_delete")
pre_save.connect(_conversation_pre_save, sender=Conversation, dispatch_uid="rollup_conversation_pre_save")
post_save.connect(_conversation_post_save, sender=Conversation, dispatch_uid="rollup_conversation_post_save")
pre_save.connect(_category_pre_save, sender=TaxonomyCategory, dispatch_uid="rollup_category_pre_save")
post_save.connect(_category_post_save, sender=TaxonomyCategory, dispatch_uid="rollup_category_post_save")
post_delete.connect(_category_post_delete, sender=TaxonomyCategory, dispatch_uid="rollup_category_post_delete")
