"""3. Agreement: verdict and per-category agreement, agreement on pairwise choices, the items driving
disagreement; read from the agreement roll-ups, or computed from the labels (agreement_core: the
reference the roll-ups are checked against)."""

import datetime as dt
from collections import Counter, defaultdict
from dataclasses import replace

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Count, Exists, F, Max, OuterRef, Q, Sum

from .. import agreement as stats
from ..models import (
    SPLIT_COLUMNS,
    Adjudication,
    AgreementCategory,
    AgreementItem,
    AgreementPair,
    AgreementPairDay,
    AgreementUnit,
    GoldDay,
    Label,
    Preference,
    PreferenceUnit,
    ResponseJudges,
    Split,
    Task,
    status_mask,
)
from .filters import (
    DISAGREEMENT_ITEMS,
    MIN_PAIR_ITEMS,
    REASONABLE,
    UNREASONABLE,
    Filters,
    LabelCategory,
    _day_start,
    _window,
    label_q,
    preference_q,
    rollup_cells,
    rollup_days,
    rollup_sum,
)
from .lookups import CategoryTree, _nested_aggregate


def agreement_core(project, f: Filters, categories: bool = True, items: int = 0, pairs: bool = True) -> dict:
    """Everything agreement needs, computed from the multiply-judged labels in one SQL statement: the
    reference the agreement roll-ups are checked against (the pages read the roll-ups).

    Only responses judged two or more times carry agreement: the judges roll-up (ResponseJudges)
    lists them, the statement keeps their filtered labels in a materialised CTE (a quarter of the
    labels at the benchmark's overlap, read by index) and computes from it, with UNION ALL:
      pair: (annotator a < annotator b, a's verdict, b's verdict) -> items both judged
      unit: (judges, unreasonable verdicts) -> units                 (verdict alpha)
      cat:  (category, judges, judges who chose it) -> units         (per-category alpha)
      item: the `items` responses with the most split judge pairs    (items driving disagreement)
    Verdicts travel as 1 (unreasonable) / 0. With an annotator filter, items are ones they judged.
    A date filter keeps what was completed inside it: units whose last label, and pairs whose later
    label, falls in the range (all their labels timed); each unit keeps all its labels.
    """
    # only responses with two or more counted labels can carry agreement: the judges roll-up finds them
    multi = ResponseJudges.objects.filter(project_id=project.pk, n__gte=2).values("response")
    undated = replace(f, date_from=None, date_to=None)
    base = Label.objects.filter(label_q(project, undated, annotator=False), response_id__in=multi).order_by()
    l_sql, l_params = base.values(
        "id", "response_id", "annotator_id", "verdict", "submitted_at"
    ).query.sql_with_params()
    mat = "MATERIALIZED " if connection.vendor == "postgresql" else ""
    through = connection.ops.quote_name(LabelCategory._meta.db_table)
    bounds = [
        (op, _day_start(day))
        for op, day in ((">=", f.date_from), ("<", f.date_to and f.date_to + dt.timedelta(days=1)))
        if day
    ]  # the completion time inside the filter's local days, as the roll-ups file it

    def completed(when: str, timed: str) -> tuple[str, list]:
        if not bounds:
            return "", []
        return "".join(f" AND {when} {op} %s" for op, _ in bounds) + f" AND {timed}", [t for _, t in bounds]

    unit_window, unit_params = completed("MAX(submitted_at)", "COUNT(submitted_at) = COUNT(*)")
    parts = [
        "SELECT 'unit', n, u, CAST(NULL AS BIGINT), CAST(NULL AS BIGINT), COUNT(*) FROM units GROUP BY n, u"
    ]
    params = [UNREASONABLE, *l_params, *unit_params]
    if pairs:
        pair_window, pair_params = completed(
            "CASE WHEN a.submitted_at > b.submitted_at THEN a.submitted_at ELSE b.submitted_at END",
            "a.submitted_at IS NOT NULL AND b.submitted_at IS NOT NULL",
        )
        parts.append(f"""SELECT 'pair', a.annotator_id, b.annotator_id, a.bad, b.bad, COUNT(*) FROM ml a
                JOIN ml b ON a.response_id = b.response_id AND a.annotator_id < b.annotator_id{pair_window}
                GROUP BY a.annotator_id, b.annotator_id, a.bad, b.bad""")
        params += pair_params
    if categories:
        parts.append(f"""SELECT 'cat', c.cat, units.n, c.k, CAST(NULL AS BIGINT), COUNT(*) FROM (
                SELECT t.taxonomycategory_id AS cat, ml.response_id, COUNT(*) AS k FROM {through} t
                JOIN ml ON ml.id = t.label_id GROUP BY t.taxonomycategory_id, ml.response_id) c
                JOIN units ON units.response_id = c.response_id GROUP BY c.cat, units.n, c.k""")
    if items:
        mine = (
            "AND response_id IN (SELECT response_id FROM ml WHERE annotator_id = %s)" if f.annotator else ""
        )
        parts.append(f"""SELECT 'item', response_id, n - u, u,
                CAST(NULL AS BIGINT), CAST(NULL AS BIGINT) FROM (
                SELECT response_id, n, u FROM units WHERE u > 0 AND u < n {mine}
                ORDER BY (n - u) * u DESC, last DESC, response_id LIMIT %s) top""")
        params += [f.annotator] if f.annotator else []
        params.append(items)
    sql = (
        f"WITH ml AS {mat}(SELECT x.id, x.response_id, x.annotator_id, "
        f"CASE WHEN x.verdict = %s THEN 1 ELSE 0 END AS bad, x.submitted_at FROM ({l_sql}) x), "
        f"units AS {mat}(SELECT response_id, COUNT(*) AS n, SUM(bad) AS u, MAX(submitted_at) AS last "
        f"FROM ml GROUP BY response_id HAVING COUNT(*) >= 2{unit_window}) "
        + " UNION ALL ".join(f"SELECT * FROM ({p}) q{i}" for i, p in enumerate(parts))
    )
    out = {"pairs": defaultdict(Counter), "units": [], "categories": defaultdict(Counter), "items": []}
    verdict = {1: UNREASONABLE, 0: REASONABLE}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for kind, c1, c2, c3, c4, n in cursor.fetchall():
            if kind == "pair":
                out["pairs"][(c1, c2)][(verdict[c3], verdict[c4])] = n
            elif kind == "unit":
                out["units"].append(({REASONABLE: c1 - c2, UNREASONABLE: c2}, n))
            elif kind == "cat":
                out["categories"][c1][(c2, c3)] = n
            else:
                out["items"].append((c1, c2, c3))
    out["items"].sort(key=lambda i: -(i[1] * i[2]))  # UNION ALL does not keep the subquery's order
    return out


def _split_sum(f: Filters):
    cols = [f"n_{f.split}"] if f.split else list(SPLIT_COLUMNS)
    expr = None
    for c in cols:
        expr = F(c) if expr is None else expr + F(c)
    return Sum(expr)


def agreement_rolled_up(project, f: Filters, items: int = 0) -> dict:
    """What agreement_core returns (without pairs: see verdict_pair_tables), from the agreement
    roll-ups (rollups.AgreementUnit, AgreementCategory, AgreementItem). Under a date filter: the units
    whose last label falls inside it. Three bounded queries: grouped rows and the top `items` of an index."""
    mask = status_mask(f.statuses)
    base = {"project_id": project.pk, "statuses": mask}
    if f.models:
        base["model_version__in"] = f.models
    days = rollup_days(f)
    out = {"pairs": defaultdict(Counter), "units": [], "categories": defaultdict(Counter), "items": []}
    for row in (
        AgreementUnit.objects.filter(days, **base)
        .values("judges", "bad")
        .annotate(n=_split_sum(f))
        .order_by("judges", "bad")
    ):
        if row["n"]:
            out["units"].append(
                ({REASONABLE: row["judges"] - row["bad"], UNREASONABLE: row["bad"]}, row["n"])
            )
    for row in (
        AgreementCategory.objects.filter(days, **base)
        .values("category", "judges", "chose")
        .annotate(n=_split_sum(f))
        .order_by()
    ):
        if row["n"]:
            out["categories"][row["category"]][(row["judges"], row["chose"])] = row["n"]
    if items:
        top = AgreementItem.objects.filter(_window(f, "last"), **base)
        if f.split:
            top = top.filter(split=f.split)
        if f.annotator:
            top = top.filter(
                Exists(
                    Label.objects.filter(
                        project_id=project.pk,
                        response_id=OuterRef("response"),
                        annotator_id=f.annotator,
                        status__in=f.statuses,
                    )
                )
            )
        out["items"] = [
            (r, n - u, u)
            for r, n, u in top.order_by(F("score").desc(), F("last").desc(), "response").values_list(
                "response", "judges", "bad"
            )[:items]
        ]
    return out


def preference_compositions(project, f: Filters, from_rollups: bool = True) -> list[tuple[dict, int]]:
    """Compositions of the (response a, response b) pairs compared two or more times: {choice: n}, units.
    From the preference-unit roll-up; under a date filter the pairs whose last comparison falls inside it.
    `from_rollups=False` computes the same from the preferences (the reference the roll-ups are checked
    against)."""
    choices = list(Preference.Choice.values)
    if from_rollups:
        rows = PreferenceUnit.objects.filter(
            rollup_days(f), project_id=project.pk, statuses=status_mask(f.statuses)
        )
        if f.models:
            rows = rows.filter(Q(model_a__in=f.models) | Q(model_b__in=f.models))
        cols = [f"c_{c}" for c in choices]
        return [
            (dict(zip(choices, [row[c] for c in cols], strict=True)), row["n"])
            for row in rows.values(*cols).annotate(n=_split_sum(f)).order_by(*cols)
            if row["n"]
        ]
    pref_units = (
        Preference.objects.filter(
            preference_q(project, replace(f, date_from=None, date_to=None), annotator=False)
        )
        .values("response_a_id", "response_b_id")
        .annotate(
            m=Count("id"),
            timed=Count("submitted_at"),
            last=Max("submitted_at"),
            **{f"c_{c}": Count("id", filter=Q(choice=c)) for c in choices},
        )
        .filter(m__gte=2)
    )
    if f.date_from or f.date_to:
        pref_units = pref_units.filter(_window(f, "last"), timed=F("m"))
    pref_units = pref_units.values(*[f"c_{c}" for c in choices]).order_by()
    cols = ", ".join(f"c_{c}" for c in choices)
    return [
        (dict(zip(choices, row[:-1], strict=True)), row[-1])
        for row in _nested_aggregate(pref_units, f"{cols}, COUNT(*)", cols)
    ]


def verdict_pair_tables(project, f: Filters) -> dict[tuple[int, int], Counter]:
    """{(annotator_a, annotator_b): {(verdict_a, verdict_b): items}} with a < b, over items both judged.

    From the pair roll-up (columns: split, both labels' statuses); under a date filter from its per-day
    twin, which files a pair under the day of the later of its two labels (the pairs completed in the range).
    """
    cells = [
        f"{sp}_{a}_{b}"
        for sp in ([f.split] if f.split else Split.values)
        for a in f.statuses
        for b in f.statuses
    ]
    if f.date_from or f.date_to:
        rows = AgreementPairDay.objects.filter(rollup_days(f), project_id=project.pk)
    else:
        rows = AgreementPair.objects.filter(project_id=project.pk)
    if f.models:
        rows = rows.filter(model_version__in=f.models)
    verdict = {True: UNREASONABLE, False: REASONABLE}
    out: dict[tuple[int, int], Counter] = defaultdict(Counter)
    for a, b, bad_a, bad_b, n in (
        rows.values_list("annotator_a", "annotator_b", "bad_a", "bad_b")
        .annotate(n=rollup_sum(cells, "n"))
        .filter(n__gt=0)
        .order_by()
    ):
        out[(a, b)][(verdict[bad_a], verdict[bad_b])] += n
    return out


def gold_tables(project, f: Filters) -> dict[int, Counter]:
    """{annotator: {(their verdict, the lead's gold verdict): items}} on adjudicated label tasks."""
    cells = rollup_cells(f)
    rows = GoldDay.objects.filter(rollup_days(f), project_id=project.pk)
    if f.models:
        rows = rows.filter(model_version__in=f.models)
    if f.annotator:
        rows = rows.filter(annotator=f.annotator)
    out: dict[int, Counter] = defaultdict(Counter)
    for row in rows.values("annotator", "verdict", "gold").annotate(n=rollup_sum(cells, "n")).order_by():
        if row["n"]:
            out[row["annotator"]][(row["verdict"], row["gold"])] += row["n"]
    return out


# --- 3. agreement -------------------------------------------------------------------------------


def agreement(project, f: Filters) -> dict:
    """Verdict agreement (pairwise Cohen's kappa, Krippendorff's alpha), per-category agreement on
    the multi-label taxonomy choices, agreement on pairwise choices, and the items driving disagreement."""
    tree = CategoryTree.load(project)
    core = agreement_rolled_up(project, f, items=DISAGREEMENT_ITEMS)
    core["pairs"] = verdict_pair_tables(project, f)

    compositions = core["units"]
    alpha = stats.alpha_nominal(compositions)
    units_by_size = Counter()
    for comp, n in compositions:
        units_by_size[sum(comp.values())] += n

    # per-category: for every category, units with m judges of which k chose it
    categories = []
    for node_id, depth in tree.walk():
        sizes = core["categories"].get(node_id, Counter())
        a = stats.alpha_nominal(stats.binary_compositions(sizes, units_by_size))
        chose = sum(units * k for (m, k), units in sizes.items())
        split_units = sum(units for (m, k), units in sizes.items() if 0 < k < m)
        categories.append(
            {
                "category": node_id,
                "name": tree.nodes[node_id]["name"],
                "path": tree.path(node_id),
                "depth": depth,
                # the roll-up counts the categories annotators chose, not their ancestors: a parent's
                # row is about the parent itself (annotators pick subcategories, which carry agreement)
                "has_children": bool(tree.children.get(node_id)),
                "units": sum(sizes.values()),
                "choices": chose,
                "split_units": split_units,
                "alpha": a.alpha,
                "specific_agreement": stats.specific_agreement(sizes),
            }
        )

    # annotator pairs: Cohen's kappa per pair
    tables_by_pair = core["pairs"]
    names = dict(
        get_user_model()
        .objects.filter(pk__in={u for pair in tables_by_pair for u in pair})
        .values_list("pk", "username")
    )
    pairs = []
    for (a, b), table in tables_by_pair.items():
        if f.annotator and f.annotator not in (a, b):
            continue
        k = stats.cohen_kappa(table)
        disagree = sum(n for (va, vb), n in table.items() if va != vb)
        pairs.append(
            {
                "a": a,
                "a_name": names.get(a, str(a)),
                "b": b,
                "b_name": names.get(b, str(b)),
                "items": k.n,
                "agreement": k.observed,
                "expected": k.expected,
                "kappa": k.kappa,
                "disagreements": disagree,
                "few": k.n < MIN_PAIR_ITEMS,
            }
        )
    pairs.sort(key=lambda p: (p["kappa"] is None, p["kappa"] if p["kappa"] is not None else 0, -p["items"]))

    # pairwise choices: alpha over {a, b, tie, both_bad} on pairs compared by two or more annotators
    pref_comps = preference_compositions(project, f)
    pref_alpha = stats.alpha_nominal(pref_comps)
    # collapse to "which response is better" (a / b / neither) for a second, coarser view
    coarse = [({"a": c["a"], "b": c["b"], "neither": c["tie"] + c["both_bad"]}, n) for c, n in pref_comps]

    return {
        "filters": f.describe(),
        "completed_in_range": bool(
            f.date_from or f.date_to
        ),  # a date filter counts the units completed in it
        "verdict": {
            "alpha": alpha.alpha,
            "units": alpha.units,
            "values": alpha.values,
            "observed_disagreement": alpha.observed_disagreement,
            "expected_disagreement": alpha.expected_disagreement,
            "pairwise_agreement": pairwise_agreement(compositions),
            "units_by_judges": dict(sorted(units_by_size.items())),
        },
        "pairs": pairs,
        "min_pair_items": MIN_PAIR_ITEMS,
        "categories": categories,
        "preferences": {
            "alpha": pref_alpha.alpha,
            "units": pref_alpha.units,
            # both over the same pairs compared twice or more: the first on all four choices, the
            # second on "which is better" (a tie against a "both bad" agrees there)
            "pairwise_agreement": pairwise_agreement(pref_comps),
            "alpha_better": stats.alpha_nominal(coarse).alpha,
            "pairwise_agreement_better": pairwise_agreement(coarse),
        },
        "items": disagreement_items(project, f, core["items"]),
    }


def pairwise_agreement(compositions) -> float | None:
    """Share of ordered pairs of judges, within a unit, that gave the same value."""
    same = total = 0
    for comp, n in compositions:
        m = sum(comp.values())
        same += n * sum(c * (c - 1) for c in comp.values())
        total += n * m * (m - 1)
    return same / total if total else None


def disagreement_items(project, f: Filters, top: list[tuple[int, int, int]]) -> list[dict]:
    """The split responses (response, reasonable, unreasonable) with who said what, gold and task."""
    ids = [t[0] for t in top]
    labels = defaultdict(list)
    fields = (
        "id",
        "response_id",
        "annotator__username",
        "verdict",
        "submitted_at",
        "model_version__name",
        "response__conversation_id",
        "response__conversation__external_id",
    )
    rows = list(
        Label.objects.filter(label_q(project, replace(f, annotator=None)), response_id__in=ids)
        .values_list(*fields)
        .order_by("annotator__username")
    )
    names = defaultdict(list)  # in the categories' own order, as label.categories.all() gives them
    for label_id, name in (
        LabelCategory.objects.filter(label_id__in=[r[0] for r in rows])
        .order_by("taxonomycategory__project", "taxonomycategory__position", "taxonomycategory__name")
        .values_list("label_id", "taxonomycategory__name")
    ):
        names[label_id].append(name)
    for row in rows:
        labels[row[1]].append(dict(zip(fields, row, strict=True)) | {"categories": names.get(row[0], [])})
    tasks = dict(
        Task.objects.filter(kind=Task.Kind.LABEL, response_id__in=ids).values_list("response_id", "pk")
    )
    gold = dict(
        Adjudication.objects.filter(task__response_id__in=ids, task__kind=Task.Kind.LABEL).values_list(
            "task__response_id", "verdict"
        )
    )
    out = []
    for response_id, r, u in top:
        group = labels.get(response_id, [])
        if not group:
            continue
        first = group[0]
        cats = Counter(name for lb in group for name in lb["categories"])
        out.append(
            {
                "response": response_id,
                "conversation": first["response__conversation_id"],
                "external_id": first["response__conversation__external_id"],
                "model_version": first["model_version__name"],
                "reasonable": r,
                "unreasonable": u,
                "last": max(lb["submitted_at"] for lb in group),
                "judgements": [
                    {
                        "annotator": lb["annotator__username"],
                        "verdict": lb["verdict"],
                        "categories": list(lb["categories"]),
                    }
                    for lb in group
                ],
                "categories": dict(cats.most_common()),
                "task": tasks.get(response_id),
                "gold": gold.get(response_id) or None,
            }
        )
    return out
