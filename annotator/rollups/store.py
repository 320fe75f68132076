"""Applying contributions to the roll-up tables (one upsert per table), rebuilding them from scratch,
and snapshots for checks."""

from collections import Counter, defaultdict

from django.db import connection, transaction

from ..models import (
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
    ModelResponse,
    Preference,
    PreferenceDay,
    PreferenceUnit,
    Project,
    ResponseJudges,
    ReviewDay,
    Skip,
    SkipDay,
)
from .contributions import (
    Tree,
    _label_rows,
    item_rows,
    label_part,
    preference_part,
    preference_unit_part,
    response_part,
    skip_part,
)

ROLLUPS = [
    LabelDay,
    AnnotatorDay,
    CategoryDay,
    AnnotatorSeconds,
    AnnotatorSecondsDay,
    ReviewDay,
    GoldDay,
    SkipDay,
    PreferenceDay,
    AnnotatorPreferenceDay,
    ResponseJudges,
    AgreementPair,
    AgreementPairDay,
    AgreementUnit,
    AgreementCategory,
    PreferenceUnit,
]
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
    PreferenceUnit: (
        "project_id",
        "statuses",
        "day",
        "model_a",
        "model_b",
        "c_a",
        "c_b",
        "c_tie",
        "c_both_bad",
    ),
}


def lock_units(units):
    """Serialise writers of the same agreement unit (a response; a preference pair by its first response):
    a unit's composition is not a sum over its labels, so "after minus before" must see the other
    writers' committed labels. Inside a transaction only (autocommit writes run unlocked)."""
    responses = sorted(
        {pk for kind, pk in units if kind == "response" and pk is not None}
        | {pk[0] for kind, pk in units if kind == "prefpair"}
    )
    if responses and connection.in_atomic_block and connection.features.has_select_for_update:
        list(
            ModelResponse.objects.select_for_update(no_key=True)
            .filter(pk__in=responses)
            .order_by("pk")
            .values_list("pk", flat=True)
        )


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
        cursor.execute(
            f"INSERT INTO {table} ({names}) VALUES {values} "
            f"ON CONFLICT ({', '.join(qn(k) for k in keys)}) DO UPDATE SET {updates}",
            params,
        )


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
        for model in [CategoryDay, AgreementCategory] if categories_only else ROLLUPS:
            model.objects.filter(project=p).delete()
        if not categories_only:
            AgreementItem.objects.filter(project=p).delete()
        items = []
        totals: Counter = Counter()
        tree = Tree()
        last = 0
        while True:
            upto = list(
                Label.objects.filter(project=p, response_id__gt=last)
                .order_by("response_id")
                .values_list("response_id", flat=True)[CHUNK - 1 : CHUNK]
            )
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
            totals.update(
                preference_unit_part(Preference.objects.filter(response_a__conversation__project=p))
            )
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
        objs = [
            model(**dict(zip(KEYS[model], key, strict=True)), **counts)
            for key, counts in sorted(by_key.items())
        ]
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
    out["AgreementItem"] = set(
        AgreementItem.objects.filter(project=project).values_list(
            "response", "statuses", "model_version", "split", "judges", "bad", "score", "last"
        )
    )
    return out
