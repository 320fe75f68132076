"""Lead dashboards: every number on hand-built data, every drill-down link reproducing its number,
filters, permissions, API and CSV, constant query counts, the cache."""

import csv
import datetime as dt
import io
import itertools
import re
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from django.utils import timezone

from annotator import agreement as ag
from annotator.dashboards.agreement import agreement
from annotator.dashboards.annotators import annotators
from annotator.dashboards.filters import COUNTED_STATUSES, DEFAULT_STATUSES, FilterError, Filters
from annotator.dashboards.lists import CaseFilters, case_count_rolled_up, case_page, case_queryset
from annotator.dashboards.overview import overview
from annotator.dashboards.pages import PAGES as DASHBOARD_PAGES
from annotator.dashboards.pages import cache_key, compute
from annotator.dashboards.tables import tables
from annotator.dashboards.versions import model_comparison
from annotator.models import (
    Adjudication,
    Conversation,
    Label,
    Membership,
    ModelResponse,
    ModelVersion,
    Preference,
    Review,
    Role,
    Skip,
    Task,
    TaxonomyCategory,
    content_hash,
)
from annotator.rollups import store

krippendorff = pytest.importorskip("krippendorff")
sklearn_metrics = pytest.importorskip("sklearn.metrics")

U, R = "unreasonable", "reasonable"
DAY1 = dt.date(2026, 3, 2)  # a Monday
DAY2 = dt.date(2026, 3, 3)
DAY3 = dt.date(2026, 3, 9)  # the next Monday


@pytest.fixture(autouse=True)
def no_dashboard_cache(settings):
    settings.DASHBOARD_CACHE_SECONDS = 0


def at(day, hour=12):
    return timezone.make_aware(dt.datetime.combine(day, dt.time(hour)))


SEQ = itertools.count(1)


class Builder:
    def __init__(self, project):
        self.project = project

    def version(self, name, parent=None, origin="imported"):
        return ModelVersion.objects.create(project=self.project, name=name, parent=parent, origin=origin)

    def conversation(self, split="train"):
        n = next(SEQ)
        msgs = [{"role": "user", "content": f"Is A-{n} in stock?"}]
        return Conversation.objects.create(
            project=self.project,
            external_id=f"d-{n}",
            messages=msgs,
            content_hash=content_hash(msgs, n),
            split=split,
        )

    def response(self, mv, conv=None, split="train"):
        conv = conv or self.conversation(split)
        n = next(SEQ)
        msg = {"role": "assistant", "content": f"Reply {n}"}
        return ModelResponse.objects.create(
            conversation=conv,
            model_version=mv,
            context_length=1,
            message=msg,
            response_hash=content_hash(msg, n),
        )

    def label(self, response, user, verdict, cats=(), status="submitted", day=DAY1, seconds=30, note=""):
        label = Label.objects.create(
            response=response,
            annotator=user,
            verdict=verdict,
            status=status,
            time_spent_ms=seconds * 1000,
            note=note,
            submitted_at=None if status == "draft" else at(day),
        )
        label.categories.set(cats)
        return label

    def prefer(self, a, b, user, choice, left="a", status="submitted", day=DAY1, seconds=0):
        return Preference.objects.create(
            response_a=a,
            response_b=b,
            annotator=user,
            choice=choice,
            left_side=left,
            status=status,
            submitted_at=at(day),
            time_spent_ms=seconds * 1000,
        )


def cat(project, name):
    return TaxonomyCategory.objects.get(project=project, name=name)


# --- the badcase overview -----------------------------------------------------------------------


@pytest.fixture
def overview_world(project, members, make_user):
    b = Builder(project)
    v1 = b.version("v1")
    v2 = b.version("v2", parent=v1, origin="sft")
    a1, a2 = members[Role.ANNOTATOR], members["annotator2"]
    tn, wa, rep = cat(project, "Tool not called"), cat(project, "Wrong arguments"), cat(project, "Repetition")
    labels = {
        "L1": b.label(b.response(v1), a1, U, [tn, wa], day=DAY1),
        "L2": b.label(b.response(v1), a1, U, [tn], day=DAY1),
        "L3": b.label(b.response(v1, split="eval"), a1, U, [rep], day=DAY2),
        "L4": b.label(b.response(v1), a2, R, day=DAY2),
        "L5": b.label(b.response(v2), a1, U, [wa], day=DAY3),
        "L6": b.label(b.response(v2), a1, R, day=DAY3),
        "L7": b.label(b.response(v2), a1, R, day=DAY3),
        "L8": b.label(b.response(v2), a1, R, status="rejected", day=DAY3),
        "L9": b.label(b.response(v2), a1, U, [rep], status="draft"),
    }
    return {
        "v1": v1,
        "v2": v2,
        "a1": a1,
        "a2": a2,
        "tn": tn,
        "wa": wa,
        "rep": rep,
        "labels": labels,
        "tool_use": cat(project, "Tool use"),
        "format": cat(project, "Format"),
    }


def by_name(rows, key="name"):
    return {r[key]: r for r in rows}


def test_overview_counts_rates_tree_and_pareto(project, overview_world):
    w = overview_world
    data = overview(project, Filters())
    assert data["totals"]["labels"] == 7  # the rejected label and the draft are not counted by default
    assert data["totals"]["badcases"] == 4
    assert data["totals"]["rate"] == pytest.approx(4 / 7)
    lo, hi = ag.wilson_interval(4, 7)
    assert (data["totals"]["rate_low"], data["totals"]["rate_high"]) == (pytest.approx(lo), pytest.approx(hi))

    models = by_name(data["by_model"])
    assert (models["v1"]["labels"], models["v1"]["badcases"]) == (4, 3)
    assert (models["v2"]["labels"], models["v2"]["badcases"]) == (3, 1)
    assert models["v2"]["parent"] == "v1"
    assert models["v2"]["change_vs_parent"] == pytest.approx(1 / 3 - 3 / 4)

    cats = by_name(data["categories"])
    # L1 carries two Tool-use children: the parent counts it once
    assert cats["Tool use"]["badcases"] == 3
    assert cats["Tool not called"]["badcases"] == 2 and cats["Wrong arguments"]["badcases"] == 2
    assert cats["Format"]["badcases"] == 1 and cats["Repetition"]["badcases"] == 1
    assert cats["Content"]["badcases"] == 0
    assert cats["Tool use"]["share_of_badcases"] == pytest.approx(3 / 4)
    assert cats["Tool use"]["rate"] == pytest.approx(3 / 7)
    assert cats["Tool use"]["by_model"][str(w["v1"].pk)] == {"badcases": 2, "rate": pytest.approx(2 / 4)}
    assert cats["Wrong arguments"]["by_model"][str(w["v2"].pk)]["rate"] == pytest.approx(1 / 3)
    assert [c["name"] for c in data["drill"]["rows"]][:2] == [
        "Tool use",
        "Format",
    ]  # top level, biggest first

    pareto = data["pareto"]
    assert [(p["name"], p["badcases"]) for p in pareto] == [
        ("Tool not called", 2),
        ("Wrong arguments", 2),
        ("Repetition", 1),
    ]
    assert [p["cumulative"] for p in pareto] == [pytest.approx(0.4), pytest.approx(0.8), pytest.approx(1.0)]
    assert pareto[0]["root_cause"]  # the taxonomy's root cause and fix travel with the bar


def test_overview_over_time_by_day_and_week(project, overview_world):
    w = overview_world
    days = overview(project, Filters(bucket="day"))["over_time"]
    assert days["bucket"] == "day"
    rows = {r["start"]: r for r in days["rows"]}
    assert len(rows) == 8  # DAY1..DAY3 with empty days filled in
    assert (rows[DAY1]["labels"], rows[DAY1]["badcases"]) == (2, 2)
    assert (rows[DAY2]["labels"], rows[DAY2]["badcases"]) == (2, 1)
    assert rows[DAY1 + dt.timedelta(days=3)]["labels"] == 0
    assert rows[DAY3]["by_model"][str(w["v2"].pk)] == {
        "labels": 3,
        "badcases": 1,
        "rate": pytest.approx(1 / 3),
    }
    weeks = overview(project, Filters(bucket="week"))["over_time"]["rows"]
    assert [(r["start"], r["end"], r["labels"], r["badcases"]) for r in weeks] == [
        (DAY1, DAY1 + dt.timedelta(days=6), 4, 3),
        (DAY3, DAY3 + dt.timedelta(days=6), 3, 1),
    ]
    assert overview(project, Filters())["over_time"]["bucket"] == "day"  # short span: auto picks days


def test_overview_category_scope_drills_down(project, overview_world):
    w = overview_world
    data = overview(project, Filters(category=w["tool_use"].pk))
    assert data["totals"]["labels"] == 7  # the denominator stays all labels
    assert data["totals"]["badcases"] == 3  # L1, L2, L5
    assert by_name(data["by_model"])["v1"]["badcases"] == 2
    drill = [c["name"] for c in data["drill"]["rows"]]
    assert drill[:2] == [
        "Tool not called",
        "Wrong arguments",
    ]  # the children of the scoped node, biggest first
    assert set(drill) == {c.name for c in w["tool_use"].children.all()}
    assert {p["name"] for p in data["pareto"]} == {"Tool not called", "Wrong arguments"}
    assert data["drill"]["path"] == "Tool use"


@pytest.mark.parametrize(
    "filters, labels, badcases",
    [
        ({"model": "v2"}, 3, 1),
        ({"from": DAY3.isoformat()}, 3, 1),
        ({"to": DAY2.isoformat()}, 4, 3),
        ({"annotator": "a2"}, 1, 0),
        ({"split": "eval"}, 1, 1),
        ({"status": "all"}, 8, 4),
        ({"status": "rejected"}, 1, 0),
    ],
)
def test_overview_filters(project, overview_world, filters, labels, badcases):
    w = overview_world
    ids = {"v2": w["v2"].pk, "a2": w["a2"].pk}
    params = {k: str(ids.get(v, v)) for k, v in filters.items()}
    data = overview(project, Filters.parse(params, strict=True))
    assert (data["totals"]["labels"], data["totals"]["badcases"]) == (labels, badcases)


def test_filter_parsing_round_trip_and_errors():
    f = Filters.parse(
        {
            "model": "3,1",
            "from": "2026-01-02",
            "to": "2026-02-01",
            "annotator": "7",
            "split": "eval",
            "status": "approved,rejected",
            "bucket": "week",
            "category": "9",
        },
        strict=True,
    )
    assert f.models == (1, 3) and f.statuses == ("approved", "rejected")
    assert Filters.parse(parse_qs(f.query()) and {k: v[0] for k, v in parse_qs(f.query()).items()}) == f
    with pytest.raises(FilterError) as exc:
        Filters.parse(
            {
                "model": "x",
                "from": "yesterday",
                "status": "draft",
                "split": "nope",
                "from_": "",
                "to": "2020-01-01",
            },
            strict=True,
        )
    assert set(exc.value.errors) >= {"model", "from", "status", "split"}
    assert Filters.parse({"status": "draft"}).statuses == DEFAULT_STATUSES  # lenient: dropped


# --- every chart element leads to the cases behind it -------------------------------------------


def _total(client, href):
    response = client.get(href)
    assert response.status_code == 200, href
    return response.context["result"]["total"]


def test_every_overview_link_lists_exactly_the_counted_cases(client, project, members, overview_world):
    client.force_login(members[Role.LEAD])
    for query in (
        "",
        f"?category={overview_world['tool_use'].pk}",
        f"?model={overview_world['v1'].pk}&bucket=week",
        f"?from={DAY2}&to={DAY3}",
    ):
        response = client.get(f"/p/{project.slug}/dashboards/{query}")
        assert response.status_code == 200
        checked = 0
        for chart in response.context["charts"]:
            series = chart["datasets"][:1] if chart["kind"] in ("pareto",) else chart["datasets"]
            for ds in series:
                for i, href in enumerate(ds["hrefs"]):
                    data = response.context["data"]
                    if chart["id"] == "by-model":
                        expected = data["by_model"][i]["badcases"]
                    elif chart["id"] == "over-time":
                        row = data["over_time"]["rows"][i]
                        key = (
                            None
                            if ds["label"] == "all versions"
                            else next(str(m["id"]) for m in data["models"] if m["name"] == ds["label"])
                        )
                        expected = row["badcases"] if key is None else row["by_model"][key]["badcases"]
                    else:
                        expected = ds["data"][i]
                    assert _total(client, href) == expected, (chart["id"], ds["label"], i, href)
                    checked += 1
        for row in response.context["cross"]:
            assert _total(client, row["href"]) == row["badcases"]
            for cell in row["cells"]:
                assert _total(client, cell["href"]) == cell["badcases"]
                checked += 1
        assert checked > 10


def test_cases_page_lists_labels_with_context(client, project, members, overview_world):
    w = overview_world
    client.force_login(members[Role.LEAD])
    response = client.get(
        f"/p/{project.slug}/dashboards/cases/?category={w['tool_use'].pk}&verdict=unreasonable"
    )
    assert response.context["result"]["total"] == 3
    html = response.content.decode()
    assert "Tool not called" in html and "category “Tool use” (or a subcategory)" in html
    assert f"/p/{project.slug}/conversations/" in html
    direct = client.get(
        f"/p/{project.slug}/dashboards/cases/?category={w['wa'].pk}&direct=1&verdict=unreasonable"
    )
    assert direct.context["result"]["total"] == 2


def test_case_totals_from_rollups_equal_the_label_count_and_pages_keep_their_order(project, overview_world):
    """The cases page takes its total from the roll-ups where they hold it: it must equal the COUNT
    over the labels; its rows (found per status) must be the newest-first slice of the same labels."""
    w = overview_world
    users = set(Label.objects.filter(project=project).values_list("annotator_id", flat=True))
    filters = [
        Filters(),
        Filters(statuses=COUNTED_STATUSES),
        Filters(split="eval"),
        Filters(models=(w["v2"].pk,)),
        Filters(date_from=DAY2),
        Filters(date_to=DAY2),
        Filters(statuses=("rejected",)),
    ] + [Filters(annotator=u) for u in users]
    cats = [(w["tool_use"].pk, False), (w["wa"].pk, True), (w["wa"].pk, False)]
    served = 0
    for f in filters:
        cases = [CaseFilters(), CaseFilters(verdict=U), CaseFilters(verdict=R)]
        cases += [CaseFilters(verdict=U, category=c, direct=direct) for c, direct in cats]
        cases += [CaseFilters(category=c) for c, _ in cats]
        for c in cases:
            raw = case_queryset(project, f, c)
            rolled = case_count_rolled_up(project, f, c)
            assert rolled in (None, raw.count()), (f, c)
            served += rolled is not None
            for per_page in (1, 2, 50):
                want = list(raw.order_by("-submitted_at", "-id").values_list("pk", flat=True))
                for page in range(1, -(-len(want) // per_page) + 1):
                    got = [r["label"] for r in case_page(project, f, c, page, per_page)["rows"]]
                    if want:
                        assert got == want[(page - 1) * per_page : page * per_page], (f, c, page, per_page)
    assert served > 30


# --- annotators and agreement -------------------------------------------------------------------

VERDICTS = {  # annotator -> verdict per response r1..r6 (None: did not judge it)
    "a1": [U, U, R, R, U, R],
    "a2": [U, R, R, R, U, None],
    "a3": [U, None, R, U, R, R],
}
CATEGORY_CHOICES = {
    ("a1", 0): ["Tool not called"],
    ("a2", 0): ["Tool not called", "Wrong arguments"],
    ("a3", 0): ["Tool not called"],
    ("a1", 1): ["Wrong arguments"],
    ("a1", 4): ["Repetition"],
    ("a2", 4): ["Repetition"],
    ("a3", 3): ["Tool not called"],
}
CHOICES = [  # (a's version, annotators' choices) for five compared pairs
    ("v1", {"a1": "a", "a2": "a", "a3": "b"}),
    ("v2", {"a1": "tie", "a2": "tie"}),
    ("v1", {"a1": "b"}),
    ("v2", {"a1": "both_bad"}),
    ("v1", {"a2": "a"}),
]


@pytest.fixture
def team_world(project, members, make_user):
    b = Builder(project)
    v1 = b.version("v1")
    v2 = b.version("v2", parent=v1, origin="dpo")
    lead = members[Role.LEAD]
    users = {"a1": members[Role.ANNOTATOR], "a2": members["annotator2"], "a3": make_user("a3")}
    Membership.objects.create(user=users["a3"], project=project, role=Role.ANNOTATOR)
    responses = [b.response(v1) for _ in range(6)]
    labels = {}
    for who, verdicts in VERDICTS.items():
        for i, verdict in enumerate(verdicts):
            if verdict is None:
                continue
            cats = [cat(project, n) for n in CATEGORY_CHOICES.get((who, i), [])]
            seconds = 10 * (i + 1) if who == "a1" else 45
            labels[(who, i)] = b.label(responses[i], users[who], verdict, cats, seconds=seconds)
    # gold decisions on r2 and r4
    for i, gold in ((1, R), (3, U)):
        task = Task.objects.create(project=project, kind="label", response=responses[i])
        Adjudication.objects.create(task=task, lead=lead, verdict=gold)
    # a1 skipped two tasks; reviews: two approvals and one rejection of a1's work
    for i in (0, 2):
        task = Task.objects.get_or_create(project=project, kind="label", response=responses[i])[0]
        Skip.objects.create(task=task, annotator=users["a1"])
    for i, decision in ((0, "approve"), (2, "approve"), (4, "reject")):
        Review.objects.create(reviewer=lead, label=labels[("a1", i)], decision=decision, comment="why")
    pairs = []
    for a_version, choices in CHOICES:
        conv = b.conversation()
        first = b.response(v1 if a_version == "v1" else v2, conv)
        second = b.response(v2 if a_version == "v1" else v1, conv)
        pairs.append((first, second))
        for who, choice in choices.items():
            b.prefer(first, second, users[who], choice)
    return {"users": users, "responses": responses, "labels": labels, "v1": v1, "v2": v2, "pairs": pairs}


def _matrix(users, rows):
    return [[np.nan if v is None else v for v in rows[u]] for u in users]


def test_agreement_matches_independent_implementations(project, team_world):
    data = agreement(project, Filters())
    coded = {u: [None if v is None else int(v == U) for v in vs] for u, vs in VERDICTS.items()}
    expected = krippendorff.alpha(
        reliability_data=np.array(_matrix(["a1", "a2", "a3"], coded), dtype=float),
        level_of_measurement="nominal",
    )
    assert data["verdict"]["alpha"] == pytest.approx(expected)
    assert data["verdict"]["units"] == 6 and data["verdict"]["values"] == 16
    assert data["verdict"]["units_by_judges"] == {2: 2, 3: 4}

    names = {u.pk: k for k, u in team_world["users"].items()}
    pairs = {(names[p["a"]], names[p["b"]]): p for p in data["pairs"]}
    for (x, y), p in pairs.items():
        shared = [i for i in range(6) if VERDICTS[x][i] and VERDICTS[y][i]]
        theirs = sklearn_metrics.cohen_kappa_score(
            [VERDICTS[x][i] for i in shared], [VERDICTS[y][i] for i in shared]
        )
        assert p["items"] == len(shared)
        assert p["kappa"] == pytest.approx(theirs)
        assert p["disagreements"] == sum(VERDICTS[x][i] != VERDICTS[y][i] for i in shared)
    assert len(pairs) == 3

    # per category: "chose it" yes/no on every judged item, missing where the annotator did not judge
    cats = by_name(data["categories"])
    for name in ("Tool not called", "Wrong arguments", "Repetition"):
        rows = {
            u: [
                None if VERDICTS[u][i] is None else int(name in CATEGORY_CHOICES.get((u, i), []))
                for i in range(6)
            ]
            for u in VERDICTS
        }
        theirs = krippendorff.alpha(
            reliability_data=np.array(_matrix(["a1", "a2", "a3"], rows), dtype=float),
            level_of_measurement="nominal",
        )
        assert cats[name]["alpha"] == pytest.approx(theirs), name
    assert cats["Repetition"]["split_units"] == 1 and cats["Tool not called"]["split_units"] == 1
    assert cats["Wrong arguments"]["split_units"] == 2

    # pairwise choices: only pairs compared by two or more annotators count
    choice_rows = {u: [c.get(u) for _, c in CHOICES] for u in ("a1", "a2", "a3")}
    codes = {"a": 0, "b": 1, "tie": 2, "both_bad": 3}
    numeric = {u: [None if v is None else codes[v] for v in vs] for u, vs in choice_rows.items()}
    theirs = krippendorff.alpha(
        reliability_data=np.array(_matrix(["a1", "a2", "a3"], numeric), dtype=float),
        level_of_measurement="nominal",
    )
    assert data["preferences"]["alpha"] == pytest.approx(theirs)
    assert data["preferences"]["units"] == 2

    # the item with the most split judges comes first, with who said what
    items = data["items"]
    assert {i["response"] for i in items} == {team_world["responses"][i].pk for i in (1, 3, 4)}
    top = items[0]
    assert (top["reasonable"], top["unreasonable"]) in {(1, 2), (2, 1)}
    assert len(top["judgements"]) == 3


def test_annotator_throughput_time_skips_reviews_and_agreement(project, team_world):
    data = annotators(project, Filters())
    rows = {r["name"]: r for r in data["rows"]}
    a1 = rows["annotator"]
    assert (a1["labels"], a1["comparisons"], a1["items"]) == (6, 4, 10)
    # a1's labels took 10..60 s (210 s); comparisons recorded no time and are not in the rate
    assert a1["items_per_hour"] == pytest.approx(6 / (210 / 3600))
    assert (a1["p25_s"], a1["median_s"], a1["p75_s"], a1["p90_s"]) == (20, 30, 50, 60)
    assert a1["time_bins"][:4] == [1, 1, 3, 1]  # under 15 s, 15-30 s, 30-60 s, 1-2 min
    assert a1["skips"] == 2 and a1["skip_rate"] == pytest.approx(2 / 12)
    assert (a1["reviewed"], a1["approved"], a1["rejected"]) == (3, 2, 1)
    assert a1["rejection_rate"] == pytest.approx(1 / 3)

    # agreement with peers: every (a1, other) pair on shared items, pooled
    mine, theirs = [], []
    for other in ("a2", "a3"):
        for i in range(6):
            if VERDICTS["a1"][i] and VERDICTS[other][i]:
                mine.append(VERDICTS["a1"][i])
                theirs.append(VERDICTS[other][i])
    assert a1["peer_items"] == len(mine) == 10
    assert a1["peer_kappa"] == pytest.approx(sklearn_metrics.cohen_kappa_score(mine, theirs))
    # with gold: r2 gold R (a1 said U), r4 gold U (a1 said R)
    assert a1["gold_items"] == 2 and a1["gold_agreement"] == 0
    assert rows["annotator2"]["gold_agreement"] == pytest.approx(0.5)
    assert rows["a3"]["gold_items"] == 1 and rows["a3"]["gold_agreement"] == 1


def test_model_versions_win_rates_ratings_and_lineage(project, team_world):
    data = model_comparison(project, Filters())
    idx = {v["name"]: i for i, v in enumerate(data["versions"])}
    cell = data["matrix"][idx["v1"]][idx["v2"]]
    assert (cell["wins"], cell["losses"], cell["ties"], cell["both_bad"], cell["comparisons"]) == (
        3,
        2,
        3,
        1,
        8,
    )
    assert cell["win_rate"] == pytest.approx((3 + 1.5) / 8)
    assert cell["decisive_win_rate"] == pytest.approx(3 / 5)
    back = data["matrix"][idx["v2"]][idx["v1"]]
    assert back["win_rate"] == pytest.approx(1 - cell["win_rate"])
    assert data["matrix"][idx["v1"]][idx["v1"]] is None
    assert data["comparisons"] == 8
    # Bradley-Terry with one virtual tie per pair: strengths 3+1.5+0.5 vs 2+1.5+0.5
    ratings = {r["name"]: r for r in data["ratings"]}
    assert ratings["v1"]["rating"] - ratings["v2"]["rating"] == pytest.approx(ag.ELO_SCALE * np.log(5 / 4))
    assert ratings["v1"]["low"] < ratings["v1"]["rating"] < ratings["v1"]["high"]
    # position: every pair shown with A on the left; A chosen in 3 of 5 decisive choices
    assert (data["position"]["decisive"], data["position"]["left_chosen"]) == (5, 3)
    lineage = {r["name"]: r for r in data["lineage"]}
    assert lineage["v2"]["lineage"] == ["v1", "v2"] and lineage["v2"]["parent"] == "v1"
    assert lineage["v2"]["win_rate_vs_parent"] == pytest.approx(1 - (3 + 1.5) / 8)
    assert lineage["v1"]["badcase_rate"] == pytest.approx(7 / 16)
    assert lineage["v2"]["labels"] == 0 and lineage["v2"]["badcase_change"] is None
    assert lineage["v1"]["eval"] is None
    assert data["evaluation"]["suite"] is None  # no finished evaluation: the page says so


def test_lineage_shows_each_versions_latest_evaluation_on_the_shared_suite(
    client, project, members, team_world
):
    from django.apps import apps

    try:
        run_model = apps.get_model("evaluation", "EvalRun")
        suite_model = apps.get_model("evaluation", "EvalSuite")
    except LookupError:
        pytest.skip("the evaluation app has no runs yet")
    w = team_world
    suite = suite_model.objects.create(
        project=project, name="held-out", version=1, source="gold", content_hash="x"
    )
    other = suite_model.objects.create(
        project=project, name="scratch", version=1, source="gold", content_hash="y"
    )

    def summary(value):
        return {
            "n": 200,
            **{
                m: {"n": 200, "count": int(200 * value), "value": value, "se": 0.03}
                for m in (
                    "tool_call_accuracy",
                    "tool_name_accuracy",
                    "tool_args_accuracy",
                    "response_quality",
                )
            },
        }

    def run(mv, s, value, days_ago):
        return run_model.objects.create(
            project=project,
            suite=s,
            model_version=mv,
            status="done",
            summary=summary(value),
            finished_at=timezone.now() - dt.timedelta(days=days_ago),
        )

    run(w["v1"], suite, 0.40, 5)
    run(w["v1"], suite, 0.45, 1)  # the latest run on the yardstick wins
    run(w["v2"], suite, 0.70, 1)
    run(w["v2"], other, 0.99, 0)  # another suite: not comparable, not shown
    data = model_comparison(project, Filters())
    assert data["evaluation"]["suite"] == "held-out v1"
    lineage = {r["name"]: r for r in data["lineage"]}
    assert lineage["v1"]["eval"]["metrics"]["tool_call_accuracy"]["value"] == 0.45
    assert lineage["v2"]["eval"]["metrics"]["tool_call_accuracy"] == {"value": 0.70, "se": 0.03}
    client.force_login(members[Role.LEAD])
    response = client.get(f"/p/{project.slug}/dashboards/models/")
    html = response.content.decode()
    assert "no evaluation run has finished" not in html, html[html.find("No evaluation yet") - 300 :][:600]
    assert "70.0%" in html and "held-out v1" in html
    assert any(c["id"] == "eval-lineage" for c in response.context["charts"])
    header, rows = tables("models", data)["lineage"]
    assert "tool_call_accuracy" in header and rows[1][header.index("tool_call_accuracy")] == pytest.approx(
        0.7
    )


def test_comparison_links_list_the_counted_preferences(client, project, members, team_world):
    client.force_login(members[Role.LEAD])
    response = client.get(f"/p/{project.slug}/dashboards/models/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "No evaluation yet" in html
    for version, cells in response.context["win_matrix"]:
        for cell in cells:
            if cell and cell["href"]:
                listed = client.get(cell["href"])
                assert listed.context["result"]["total"] == cell["comparisons"]
                for outcome, key in (("win", "wins"), ("loss", "losses"), ("tie", "ties")):
                    sub = client.get(cell["href"] + f"&outcome={outcome}")
                    assert sub.context["result"]["total"] == cell[key], (version["name"], outcome)


def test_agreement_and_annotator_links(client, project, members, team_world):
    client.force_login(members[Role.LEAD])
    page = client.get(f"/p/{project.slug}/dashboards/agreement/")
    for p in page.context["pair_rows"]:
        assert _total(client, p["all_href"]) == p["items"]
        assert _total(client, p["href"]) == p["disagreements"]
    for c in page.context["cat_rows"]:
        if c["split_units"]:
            listed = client.get(c["href"]).context["result"]
            assert len({r["response"] for r in listed["rows"]}) == c["split_units"]
    people = client.get(f"/p/{project.slug}/dashboards/annotators/")
    for r in people.context["table"]:
        assert _total(client, r["href"]) == r["labels"]
        gold_misses = r["gold_items"] - round((r["gold_agreement"] or 0) * r["gold_items"])
        assert _total(client, r["gold_href"]) == gold_misses


# --- pages, API, CSV, permissions ---------------------------------------------------------------

PAGES = ["", "annotators/", "agreement/", "models/", "cases/", "comparisons/"]
API = ["overview/", "annotators/", "agreement/", "models/", "cases/", "comparisons/"]


@pytest.mark.parametrize("page", PAGES)
def test_pages_are_for_leads_and_admins(client, project, members, page):
    url = f"/p/{project.slug}/dashboards/{page}"
    assert client.get(url).status_code == 302  # to the login page
    for who, status in ((Role.ANNOTATOR, 403), ("outsider", 404), (Role.LEAD, 200), (Role.ADMIN, 200)):
        client.force_login(members[who])
        assert client.get(url).status_code == status, who


@pytest.mark.parametrize("endpoint", API)
def test_api_is_for_leads_and_admins(api, project, members, endpoint):
    url = f"/api/projects/{project.slug}/dashboards/{endpoint}"
    assert api().get(url).status_code in (401, 403)
    assert api(members[Role.ANNOTATOR]).get(url).status_code == 403
    assert api(members["outsider"]).get(url).status_code == 404
    assert api(members[Role.LEAD]).get(url).status_code == 200


def test_empty_project_pages_render_their_empty_states(client, project, members):
    client.force_login(members[Role.LEAD])
    texts = {
        "": "No labels match these filters",
        "annotators/": "No submitted work",
        "agreement/": "No two annotators have judged the same item",
        "models/": "No evaluation yet",
        "cases/": "No labels match",
        "comparisons/": "No comparisons match",
    }
    for page, text in texts.items():
        response = client.get(f"/p/{project.slug}/dashboards/{page}")
        assert response.status_code == 200
        assert text in response.content.decode(), page


def test_api_returns_the_same_numbers_and_rejects_bad_filters(api, project, members, overview_world):
    client = api(members[Role.LEAD])
    body = client.get(f"/api/projects/{project.slug}/dashboards/overview/").json()
    assert body["totals"]["labels"] == 7 and body["totals"]["badcases"] == 4
    assert body["filters"]["statuses"] == ["submitted", "approved"]
    bad = client.get(f"/api/projects/{project.slug}/dashboards/overview/?from=soon&model=x")
    assert bad.status_code == 400 and set(bad.json()) == {"from", "model"}
    cases = client.get(f"/api/projects/{project.slug}/dashboards/cases/?verdict=unreasonable").json()
    assert cases["total"] == 4 and {r["verdict"] for r in cases["rows"]} == {"unreasonable"}


def test_page_shows_ignored_filters(client, project, members, overview_world):
    client.force_login(members[Role.LEAD])
    response = client.get(f"/p/{project.slug}/dashboards/?from=soon")
    assert response.status_code == 200
    assert "Ignored filter" in response.content.decode()
    assert response.context["data"]["totals"]["labels"] == 7


def _csv(response):
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


@pytest.mark.parametrize("page", list(DASHBOARD_PAGES))
def test_every_table_downloads_as_csv(client, project, members, team_world, page):
    client.force_login(members[Role.LEAD])
    data = compute(page, project, Filters())
    for table, (header, rows) in tables(page, data).items():
        got = _csv(client.get(f"/api/projects/{project.slug}/dashboards/{page}/{table}.csv"))
        assert got[0] == header
        assert len(got) == len(rows) + 1, table
    assert client.get(f"/api/projects/{project.slug}/dashboards/{page}/nope.csv").status_code == 404


def test_page_csv_links_resolve(client, project, members, overview_world):
    client.force_login(members[Role.LEAD])
    html = client.get(f"/p/{project.slug}/dashboards/?bucket=week").content.decode()
    links = set(re.findall(r'href="([^"]+\.csv[^"]*)"', html))
    assert len(links) == 4
    for href in links:
        rows = _csv(client.get(href.replace("&amp;", "&")))
        assert len(rows) > 1
    over_time = _csv(
        client.get(f"/api/projects/{project.slug}/dashboards/overview/over_time.csv?bucket=week")
    )
    assert over_time[1] == [
        DAY1.isoformat(),
        (DAY1 + dt.timedelta(days=6)).isoformat(),
        "all",
        "4",
        "3",
        "0.75",
    ]


def test_cases_and_comparisons_csv(client, project, members, team_world):
    client.force_login(members[Role.LEAD])
    rows = _csv(client.get(f"/api/projects/{project.slug}/dashboards/cases.csv?verdict=unreasonable"))
    assert rows[0][:3] == ["label_id", "response_id", "conversation_id"]
    assert len(rows) - 1 == Label.objects.filter(project=project, verdict=U).count()
    v1 = team_world["v1"].pk
    prefs = _csv(client.get(f"/api/projects/{project.slug}/dashboards/comparisons.csv?model_a={v1}"))
    assert len(prefs) - 1 == Preference.objects.count()


def test_nav_link_for_leads_only(client, project, members):
    client.force_login(members[Role.LEAD])
    assert f"/p/{project.slug}/dashboards/" in client.get(f"/p/{project.slug}/").content.decode()
    client.force_login(members[Role.ANNOTATOR])
    assert f"/p/{project.slug}/dashboards/" not in client.get(f"/p/{project.slug}/").content.decode()


# --- constant query counts, cache ---------------------------------------------------------------


def _grow(project, members, make_user, scale):
    """More of everything: annotators, versions, labels, categories on them, preferences, skips, gold."""
    b = Builder(project)
    versions = [b.version(f"grow-{scale}-{i}") for i in range(3)]
    people = [make_user(f"g{scale}-{i}") for i in range(4)]
    for p in people:
        Membership.objects.create(user=p, project=project, role=Role.ANNOTATOR)
    leaves = list(TaxonomyCategory.objects.filter(project=project, parent__isnull=False))
    for i in range(6 * scale):
        conv = b.conversation(split=["train", "eval"][i % 2])
        first, second = b.response(versions[i % 3], conv), b.response(versions[(i + 1) % 3], conv)
        for j, p in enumerate(people[: 2 + i % 3]):
            bad = (i + j) % 3 == 0
            b.label(
                first,
                p,
                U if bad else R,
                leaves[(i + j) % len(leaves) : (i + j) % len(leaves) + 1] if bad else [],
                day=DAY1 + dt.timedelta(days=i % 9),
                status=["submitted", "approved"][j % 2],
            )
            b.prefer(first, second, p, ["a", "b", "tie"][(i + j) % 3])
        task = Task.objects.create(project=project, kind="label", response=first)
        Skip.objects.create(task=task, annotator=people[-1])
        if i % 2:
            Adjudication.objects.create(task=task, lead=members[Role.LEAD], verdict=U)


@pytest.mark.parametrize("page", PAGES[:4])
def test_queries_per_page_do_not_grow_with_data(
    client, project, members, make_user, overview_world, page, django_assert_max_num_queries
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.force_login(members[Role.LEAD])
    url = f"/p/{project.slug}/dashboards/{page}"
    counts = []
    for scale in (1, 4):
        _grow(project, members, make_user, scale)
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(url).status_code == 200
        counts.append(len(ctx.captured_queries))
    assert counts[0] == counts[1], counts
    with django_assert_max_num_queries(20):
        client.get(url + "?bucket=week")


def test_api_queries_are_constant(
    api, project, members, make_user, overview_world, django_assert_max_num_queries
):
    client = api(members[Role.LEAD])
    _grow(project, members, make_user, 5)
    for endpoint in ("overview", "annotators", "agreement", "models"):
        with django_assert_max_num_queries(18):
            assert client.get(f"/api/projects/{project.slug}/dashboards/{endpoint}/").status_code == 200


def test_short_lived_cache_and_recompute(
    client, project, members, overview_world, settings, django_assert_max_num_queries
):
    from django.core.cache import cache

    settings.DASHBOARD_CACHE_SECONDS = 60
    key = cache_key("overview", project, Filters())
    cache.delete(key)  # only this entry: in CI the cache is the Redis database the broker uses too
    client.force_login(members[Role.LEAD])
    url = f"/p/{project.slug}/dashboards/"
    try:
        assert client.get(url).context["data"]["totals"]["labels"] == 7
        b = Builder(project)
        b.label(b.response(overview_world["v1"]), overview_world["a2"], U)
        with django_assert_max_num_queries(8):  # served from the cache: permissions and the filter bar only
            assert client.get(url).context["data"]["totals"]["labels"] == 7
        assert client.get(url + "?fresh=1").context["data"]["totals"]["labels"] == 8
        assert client.get(url).context["data"]["totals"]["labels"] == 8  # the recompute refreshed the cache
        assert "recompute now" in client.get(url).content.decode()
    finally:
        cache.delete(key)


def test_page_links_carry_filters(client, project, members, overview_world):
    w = overview_world
    client.force_login(members[Role.LEAD])
    response = client.get(f"/p/{project.slug}/dashboards/?model={w['v1'].pk}&split=eval&status=all")
    href = response.context["charts"][0]["datasets"][0]["hrefs"][0]
    params = parse_qs(urlsplit(href).query)
    assert params["model"] == [str(w["v1"].pk)] and params["split"] == ["eval"]
    assert params["status"] == ["submitted,approved,rejected"] and params["verdict"] == ["unreasonable"]


def test_headline_counts_have_thousands_separators(client, project, members):
    """1,200 labels read "1,200", not "1200" (bulk rows, then the roll-ups rebuilt as after a bulk load)."""
    mv = ModelVersion.objects.create(project=project, name="bulk")
    user = members[Role.ANNOTATOR]
    convs = Conversation.objects.bulk_create(
        [
            Conversation(
                project=project,
                external_id=f"k-{i}",
                messages=[{"role": "user", "content": str(i)}],
                content_hash=content_hash(i),
            )
            for i in range(1200)
        ]
    )
    responses = ModelResponse.objects.bulk_create(
        [
            ModelResponse(
                conversation=c,
                model_version=mv,
                context_length=1,
                message={"role": "assistant", "content": "x"},
                response_hash=content_hash(c.pk),
            )
            for c in convs
        ]
    )
    Label.objects.bulk_create(
        [
            Label(
                response=r,
                annotator=user,
                project=project,
                model_version=mv,
                verdict=R,
                status="submitted",
                submitted_at=at(DAY1),
            )
            for r in responses
        ]
    )
    store.rebuild(project)
    client.force_login(members[Role.LEAD])
    page = client.get(f"/p/{project.slug}/dashboards/").content.decode()
    assert "<dt>Labels</dt><dd>1,200</dd>" in page


# --- what each number is of (issue #17's screenshot review) ---------------------------------------


def _between(html, start, end="</table>"):
    i = html.index(start)
    return html[i : html.index(end, i)]


def test_review_decisions_count_re_reviews_and_the_page_says_so(client, project, members):
    """A label rejected, fixed and approved is one item and two review decisions: the column says
    "Review decisions", not "Reviewed", and its hint explains why it can exceed Items."""
    b = Builder(project)
    mv = b.version("v1")
    a1, lead = members[Role.ANNOTATOR], members[Role.LEAD]
    label = b.label(b.response(mv), a1, U, [cat(project, "Wrong tool")], status="approved")
    for decision in ("reject", "approve"):  # rejected, then re-reviewed after the fix
        Review.objects.create(reviewer=lead, label=label, decision=decision, comment="")
    row = by_name(annotators(project, Filters())["rows"])["annotator"]
    assert (row["items"], row["reviewed"], row["approved"], row["rejected"]) == (1, 2, 1, 1)
    assert row["rejection_rate"] == pytest.approx(0.5)

    client.force_login(lead)
    response = client.get(f"/p/{project.slug}/dashboards/annotators/")
    table = _between(response.content.decode(), 'id="table-annotators"')
    assert ">Review decisions</th>" in table and ">Reviewed</th>" not in table
    assert "re-review after a rejection included" in table and "can exceed Items" in table
    rates = next(c for c in response.context["charts"] if c["id"] == "rates")
    assert rates["datasets"][1]["label"] == "rejection rate (of review decisions)"


def test_category_and_pareto_shares_name_their_denominators(client, project, members, overview_world):
    """The category table's % is of badcase labels (4 here), the Pareto's of category filings (5: L1
    is filed under two categories); the page names both, and each set of shares adds up accordingly."""
    data = overview(project, Filters())
    assert data["totals"]["all_badcases"] == 4 and data["pareto_filings"] == 5
    cats = by_name(data["categories"])
    pareto = by_name(data["pareto"])
    assert cats["Tool not called"]["share_of_badcases"] == pytest.approx(2 / 4)
    assert pareto["Tool not called"]["share"] == pytest.approx(2 / 5)
    assert sum(p["share"] for p in data["pareto"]) == pytest.approx(1)
    assert data["pareto"][-1]["cumulative"] == pytest.approx(1)

    client.force_login(members[Role.LEAD])
    response = client.get(f"/p/{project.slug}/dashboards/")
    html = response.content.decode()
    categories = _between(html, 'id="table-categories"')
    assert ">% of badcase labels</th>" in categories and "share of all 4 badcase labels" in categories
    assert re.search(
        r"Tool not called</td>\s*<td class=\"num\"><a [^>]*>2</a></td>\s*<td class=\"num\">50\.0%", categories
    )
    pareto_table = _between(html, 'id="table-pareto"')
    assert "% of filings</th>" in pareto_table and ">Share</th>" not in pareto_table
    assert "of the 5 category filings, not of the 4 badcase labels" in pareto_table
    assert re.search(
        r">Tool not called</td>\s*<td class=\"num\"><a [^>]*>2</a></td>\s*<td class=\"num\">40\.0%",
        pareto_table,
    )
    chart = next(c for c in response.context["charts"] if c["id"] == "pareto")
    assert chart["datasets"][1]["label"] == "cumulative % of filings"


def test_agreement_page_says_a_parent_row_is_about_the_parent_itself(client, project, members, team_world):
    """Annotators file items under subcategories; the agreement roll-up counts the chosen categories,
    so a parent's row shows "—" and points to its subcategories instead of a bare 0."""
    client.force_login(members[Role.LEAD])
    response = client.get(f"/p/{project.slug}/dashboards/agreement/")
    html = response.content.decode()
    tool_use = cat(project, "Tool use")
    rows = {c["name"]: c for c in response.context["cat_rows"]}
    assert rows["Tool use"]["has_children"] and rows["Tool use"]["units"] == 0
    assert not rows["Tool not called"]["has_children"] and rows["Tool not called"]["units"] == 2
    parent = re.search(rf'<tr class="[^"]*" data-category="{tool_use.pk}">.*?</tr>', html, re.S).group(0)
    assert "— filed under its subcategories, below" in parent and "parent-row" in parent
    assert '<td class="num">0</td>' not in parent
    assert "counts only items filed under the parent itself" in html
    leaf = re.search(
        rf'<tr class="[^"]*" data-category="{cat(project, "Tool not called").pk}">.*?</tr>', html, re.S
    ).group(0)
    assert '<td class="num">2</td>' in leaf


def test_choice_agreement_alphas_and_shares_are_over_the_same_pairs(client, project, members, make_user):
    """A tie against a "both bad" disagrees on the four choices and agrees on "which is better":
    alpha 1.000 next to 50% of judge pairs agreeing is right when the page says which is which.
    Both alphas match the krippendorff package; both shares are over the same compared pairs."""
    b = Builder(project)
    v1, v2 = b.version("v1"), b.version("v2")
    a1, a2 = members[Role.ANNOTATOR], members["annotator2"]
    votes = [("tie", "both_bad"), ("a", "a"), ("b", "b")]
    for first, second in votes:
        conv = b.conversation()
        x, y = b.response(v1, conv), b.response(v2, conv)
        b.prefer(x, y, a1, first)
        b.prefer(x, y, a2, second)
    p = agreement(project, Filters())["preferences"]
    codes = {"a": 0, "b": 1, "tie": 2, "both_bad": 3}
    four = np.array([[codes[v[0]] for v in votes], [codes[v[1]] for v in votes]], dtype=float)
    better = np.array([[min(codes[v[i]], 2) for v in votes] for i in (0, 1)], dtype=float)
    assert p["units"] == 3
    assert p["alpha"] == pytest.approx(
        krippendorff.alpha(reliability_data=four, level_of_measurement="nominal")
    )
    assert p["alpha_better"] == pytest.approx(
        krippendorff.alpha(reliability_data=better, level_of_measurement="nominal")
    )
    assert p["alpha_better"] == pytest.approx(1) and p["alpha"] < 1
    assert p["pairwise_agreement"] == pytest.approx(2 / 3)  # 2 of the 3 pairs' judges agree
    assert p["pairwise_agreement_better"] == pytest.approx(1)

    client.force_login(members[Role.LEAD])
    html = client.get(f"/p/{project.slug}/dashboards/agreement/").content.decode()
    kpis = _between(html, 'class="stats dash-kpis"', "</dl>")
    assert "same pairs; ties and both-bad as “neither”: 100.0% of judge pairs agree" in kpis
    assert "<dd>66.7%</dd>" in kpis and "giving the same of A/B/tie/both bad" in kpis
    header, rows = tables("agreement", agreement(project, Filters()))["summary"]
    summary = {r[0]: r[1] for r in rows}
    assert summary["choice_pairwise_agreement_better_only"] == pytest.approx(1)


def test_comparisons_list_shows_choices_in_words(client, project, members):
    b = Builder(project)
    v1, v2 = b.version("v1"), b.version("v2")
    conv = b.conversation()
    x, y = b.response(v1, conv), b.response(v2, conv)
    b.prefer(x, y, members[Role.ANNOTATOR], "both_bad")
    b.prefer(x, y, members["annotator2"], "tie")
    client.force_login(members[Role.LEAD])
    html = client.get(f"/p/{project.slug}/dashboards/comparisons/").content.decode()
    table = _between(html, 'id="table-comparisons"')
    assert "<td>both bad</td>" in table and "<td>tie</td>" in table
    assert "both_bad" not in table
    ties = client.get(
        f"/p/{project.slug}/dashboards/comparisons/?model_a={v1.pk}&model_b={v2.pk}&outcome=tie"
    ).content.decode()
    assert "ties and “both bad” for" in ties and ">ties and both bad</a>" in ties
