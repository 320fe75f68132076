"""Dashboard roll-ups: after every kind of write the incremental tables equal a rebuild from scratch,
and the dashboard numbers read from them equal a count over the labels themselves."""

import datetime as dt
import threading
from collections import Counter
from dataclasses import replace

import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from annotator import assignment
from annotator.dashboards.agreement import (
    agreement,
    agreement_core,
    agreement_rolled_up,
    gold_tables,
    preference_compositions,
    verdict_pair_tables,
)
from annotator.dashboards.annotators import _time_histograms, annotators
from annotator.dashboards.filters import COUNTED_STATUSES, DEFAULT_STATUSES, TIME_CAP_S, Filters
from annotator.dashboards.lists import comparison_count_rolled_up, comparison_page, comparison_queryset
from annotator.dashboards.overview import overview
from annotator.dashboards.pages import PAGES
from annotator.dashboards.versions import model_comparison
from annotator.importers import run_import
from annotator.labelling import submit_label, submit_preference
from annotator.models import (
    Adjudication,
    AgreementItem,
    ImportJob,
    Label,
    LabelDay,
    Preference,
    Role,
    Skip,
    Slot,
    Status,
    Task,
    TaxonomyCategory,
)
from annotator.review import apply_review
from annotator.rollups import store

from .conftest import conversation_record, jsonl, make_conversation
from .test_dashboards import DAY1, DAY2, DAY3, Builder, R, U, cat

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_dashboard_cache(settings):
    settings.DASHBOARD_CACHE_SECONDS = 0


def assert_rebuild_matches(project):
    incremental = store.snapshot(project)
    store.rebuild(project)
    assert store.snapshot(project) == incremental


def from_scratch(project, f: Filters) -> dict:
    """The overview's headline numbers counted straight from the labels (no roll-up, no dashboard code)."""
    labels = [
        lb
        for lb in Label.objects.filter(project=project)
        .select_related("response__conversation")
        .prefetch_related("categories")
        if lb.status in f.statuses
        and (not f.models or lb.model_version_id in f.models)
        and (not f.split or lb.response.conversation.split == f.split)
        and (not f.date_from or timezone.localdate(lb.submitted_at) >= f.date_from)
        and (not f.date_to or timezone.localdate(lb.submitted_at) <= f.date_to)
        and (not f.annotator or lb.annotator_id == f.annotator)
    ]
    by_model = Counter(lb.model_version_id for lb in labels)
    bad = Counter(lb.model_version_id for lb in labels if lb.verdict == U)
    direct = Counter(c.pk for lb in labels if lb.verdict == U for c in lb.categories.all())
    per_annotator = Counter(lb.annotator_id for lb in labels)
    return {
        "labels": len(labels),
        "bad": sum(bad.values()),
        "by_model": dict(by_model),
        "bad_by_model": dict(bad),
        "direct": dict(direct),
        "per_annotator": dict(per_annotator),
        "ids": [lb.pk for lb in labels],
    }


def assert_dashboards_match(project):
    for f in (
        Filters(),
        Filters(statuses=COUNTED_STATUSES),
        Filters(split="eval"),
        Filters(date_from=DAY2, date_to=DAY3),
        Filters(statuses=(Status.REJECTED,)),
    ):
        want = from_scratch(project, f)
        data = overview(project, f)
        assert data["totals"]["labels"] == want["labels"], f
        assert data["totals"]["all_badcases"] == want["bad"], f
        assert {m["model_version"]: m["labels"] for m in data["by_model"]} == want["by_model"], f
        assert {m["model_version"]: m["badcases"] for m in data["by_model"] if m["badcases"]} == want[
            "bad_by_model"
        ], f
        assert {c["category"]: c["direct"] for c in data["categories"] if c["direct"]} == want["direct"], f
        rows = annotators(project, f)["rows"]
        assert {r["annotator"]: r["labels"] for r in rows if r["labels"]} == want["per_annotator"], f
        # the pair roll-ups against the pairs computed from the labels; the time histograms against the labels
        assert verdict_pair_tables(project, f) == agreement_core(project, f, categories=False)["pairs"], f
        assert_agreement_matches(project, f)
        assert {u: dict(h) for u, h in _time_histograms(project, f).items() if h} == seconds_from_scratch(
            project, f
        ), f
        assert_comparison_counts_match(project, f)
        gold = Counter()
        for lb in Label.objects.filter(pk__in=want["ids"]):
            adj = Adjudication.objects.filter(
                task__kind="label", task__response_id=lb.response_id, verdict__in=[U, R]
            ).first()
            if adj:
                gold[(lb.annotator_id, lb.verdict, adj.verdict)] += 1
        assert {
            (a, v, g): n for a, t in gold_tables(project, f).items() for (v, g), n in t.items()
        } == gold, f
        lineage = {
            r["model_version"]: (r["labels"], r["badcases"]) for r in model_comparison(project, f)["lineage"]
        }
        for mv, n in want["by_model"].items():
            assert lineage[mv] == (n, want["bad_by_model"].get(mv, 0)), f


def assert_comparison_counts_match(project, f: Filters):
    """The comparisons list's total from the roll-ups equals a COUNT over the preferences, for every
    version pair and outcome (and for one annotator, where the roll-ups hold it)."""
    versions = list(project.model_versions.values_list("pk", flat=True))
    annotators = list(
        Preference.objects.filter(response_a__conversation__project=project)
        .values_list("annotator_id", flat=True)
        .distinct()
    )
    for g in (f, *(replace(f, annotator=a) for a in annotators)):
        cases = [(None, None, "")] + [(a, None, "") for a in versions]
        cases += [(a, b, o) for a in versions for b in versions if a != b for o in ("", "win", "loss", "tie")]
        for a, b, outcome in cases:
            rolled = comparison_count_rolled_up(project, g, a, b, outcome)
            if rolled is None:
                assert g.annotator and outcome
                continue
            assert rolled == comparison_queryset(project, g, a, b, outcome).count(), (g, a, b, outcome)
    # the page: the same rows, in the same order, as slicing the newest-first queryset
    want = list(comparison_queryset(project, f).order_by("-submitted_at", "-id").values_list("pk", flat=True))
    got = [
        r["preference"]
        for page in range(1, len(want) + 1)
        for r in comparison_page(project, f, page=page, per_page=1)["rows"]
    ]
    assert got == want, f


def seconds_from_scratch(project, f: Filters) -> dict:
    """{annotator: {whole seconds (capped): items}} over the filtered labels and comparisons with a time."""
    out: dict = {}

    def keep(item, model_versions, split):
        day = timezone.localdate(item.submitted_at) if item.submitted_at else None
        return (
            item.status in f.statuses
            and item.time_spent_ms
            and (not f.split or split == f.split)
            and (not f.models or set(model_versions) & set(f.models))
            and (not (f.date_from or f.date_to) or day is not None)
            and (not f.date_from or day >= f.date_from)
            and (not f.date_to or day <= f.date_to)
            and (not f.annotator or item.annotator_id == f.annotator)
        )

    items = [
        (lb, [lb.model_version_id], lb.response.conversation.split)
        for lb in Label.objects.filter(project=project).select_related("response__conversation")
    ]
    items += [
        (p, [p.response_a.model_version_id, p.response_b.model_version_id], p.response_a.conversation.split)
        for p in Preference.objects.filter(response_a__conversation__project=project).select_related(
            "response_a__conversation", "response_b"
        )
    ]
    for item, versions, split in items:
        if keep(item, versions, split):
            sec = min(item.time_spent_ms // 1000, TIME_CAP_S)
            out.setdefault(item.annotator_id, Counter())[sec] += 1
    return {u: dict(h) for u, h in out.items()}


def assert_agreement_matches(project, f: Filters):
    """The agreement roll-ups (units, categories, disagreement items, preference units) against the
    same figures computed from the labels and preferences (agreement_core, the raw GROUP BY)."""
    for g in (f, replace(f, annotator=None)) + tuple(
        replace(f, annotator=a)
        for a in Label.objects.filter(project=project).values_list("annotator_id", flat=True).distinct()
    ):
        raw = agreement_core(project, g, categories=True, items=50, pairs=False)
        rolled = agreement_rolled_up(project, g, items=50)
        assert sorted(rolled["units"], key=repr) == sorted(raw["units"], key=repr), g
        assert rolled["categories"] == raw["categories"], g
        assert rolled["items"] == raw["items"], g
    assert sorted(preference_compositions(project, f), key=repr) == sorted(
        preference_compositions(project, f, from_rollups=False), key=repr
    ), f


@pytest.fixture
def world(project, members):
    b = Builder(project)
    v1 = b.version("v1")
    v2 = b.version("v2", parent=v1)
    a1, a2, lead = members[Role.ANNOTATOR], members["annotator2"], members[Role.LEAD]
    tn, wa, rep = cat(project, "Tool not called"), cat(project, "Wrong arguments"), cat(project, "Repetition")
    labels = [
        b.label(b.response(v1), a1, U, [tn, wa], day=DAY1),
        b.label(b.response(v1), a1, U, [tn], day=DAY1, seconds=0),
        b.label(b.response(v1, split="eval"), a1, U, [rep], day=DAY2, seconds=2000),
        b.label(b.response(v1), a2, R, day=DAY2),
        b.label(b.response(v2), a1, U, [wa], day=DAY3),
        b.label(b.response(v2), a2, R, status="rejected", day=DAY3),
        b.label(b.response(v2), a1, U, [rep], status="draft"),
    ]
    shared = b.response(v2)
    labels += [b.label(shared, a1, U, [tn], day=DAY3), b.label(shared, a2, R, day=DAY3)]
    conv = b.conversation()
    prefs = [
        b.prefer(b.response(v1, conv), b.response(v2, conv), a1, "b", seconds=40),
        b.prefer(b.response(v2, conv), b.response(v1, conv), a2, "tie", day=DAY2),
    ]
    return {
        "b": b,
        "v1": v1,
        "v2": v2,
        "a1": a1,
        "a2": a2,
        "lead": lead,
        "tn": tn,
        "wa": wa,
        "rep": rep,
        "labels": labels,
        "prefs": prefs,
    }


def test_creates_are_counted_and_rebuild_agrees(project, world):
    assert_rebuild_matches(project)
    assert_dashboards_match(project)
    day = LabelDay.objects.get(project=project, day=DAY1, model_version=world["v1"].pk)
    assert (day.n_train_submitted, day.bad_train_submitted) == (2, 2)


def test_edits_verdicts_categories_and_statuses(project, world):
    w = world
    first, second, third = w["labels"][:3]
    first.verdict = R  # verdict changed
    first.save()
    second.categories.add(w["wa"])  # categories changed, one at a time
    second.categories.remove(w["tn"])
    third.categories.clear()
    w["rep"].labels.add(w["labels"][4])  # through the reverse relation
    w["labels"][6].status, w["labels"][6].submitted_at = Status.SUBMITTED, timezone.now()  # a draft submitted
    w["labels"][6].save()
    w["labels"][3].submitted_at = timezone.make_aware(
        dt.datetime.combine(DAY3, dt.time(9))
    )  # re-submitted later
    w["labels"][3].save()
    conv = w["labels"][3].response.conversation
    conv.split = "holdout"  # the split moves the counts
    conv.save()
    w["prefs"][0].choice = "a"
    w["prefs"][0].save()
    assert_rebuild_matches(project)
    assert_dashboards_match(project)


def test_reviews_approve_reject_and_resubmit(project, world):
    w = world
    label = w["labels"][0]
    apply_review(w["lead"], label, "reject", "Wrong category.")
    apply_review(w["lead"], w["labels"][1], "approve")
    apply_review(w["lead"], w["prefs"][0], "approve")
    assert_rebuild_matches(project)
    assert_dashboards_match(project)
    rows = {r["annotator"]: r for r in annotators(project, Filters())["rows"]}
    assert (rows[w["a1"].pk]["approved"], rows[w["a1"].pk]["rejected"]) == (
        2,
        1,
    )  # the preference's review too
    label.refresh_from_db()
    label.status = Status.SUBMITTED  # the annotator fixes it
    label.save()
    label.reviews.first().delete()  # and a review is withdrawn
    assert_rebuild_matches(project)
    assert_dashboards_match(project)


def test_gold_decisions_and_skips(project, world):
    w = world
    shared = w["labels"][7].response
    task = Task.objects.create(project=project, kind="label", response=shared)
    adj = Adjudication.objects.create(task=task, lead=w["lead"], verdict=U)
    Skip.objects.create(task=task, annotator=w["a2"])
    assert_rebuild_matches(project)
    assert_dashboards_match(project)
    adj.verdict = R  # the lead changes their mind
    adj.save()
    Slot.objects.create(
        project=project,
        task=task,
        index=0,
        state=Slot.State.LOCKED,
        annotator=w["a2"],
        locked_until=timezone.now() + dt.timedelta(minutes=5),
    )  # the queue hands it to a2 again
    assignment.skip(task, w["a2"])  # skipped again: a new time
    other = Task.objects.create(project=project, kind="label", response=w["labels"][0].response)
    Skip.objects.create(task=other, annotator=w["a1"])
    assert_rebuild_matches(project)
    assert_dashboards_match(project)
    rows = {r["annotator"]: r for r in annotators(project, Filters())["rows"]}
    assert rows[w["a2"].pk]["skips"] == 1 and rows[w["a1"].pk]["gold_items"] == 1
    adj.delete()
    other.delete()  # its skip goes with it
    assert_rebuild_matches(project)
    assert_dashboards_match(project)


def test_deletes(project, world):
    w = world
    w["labels"][0].delete()
    w["labels"][4].response.delete()  # cascades to the label
    w["labels"][2].response.conversation.delete()
    w["prefs"][1].delete()
    apply_review(w["lead"], w["labels"][1], "approve")
    w["labels"][1].delete()  # with its review
    assert_rebuild_matches(project)
    assert_dashboards_match(project)


def test_taxonomy_changes_recount_categories(project, world):
    w = world
    w["wa"].parent = TaxonomyCategory.objects.get(project=project, name="Format")  # moved to another parent
    w["wa"].save()
    assert_rebuild_matches(project)
    data = overview(project, Filters(category=w["wa"].parent_id))
    assert data["totals"]["badcases"] == len(
        {
            lb.pk
            for lb in Label.objects.filter(
                project=project,
                status__in=DEFAULT_STATUSES,
                verdict=U,
                categories__in=[w["wa"], *w["wa"].parent.children.all(), w["wa"].parent],
            )
        }
    )
    w["tn"].delete()  # its label links go without m2m signals
    assert_rebuild_matches(project)
    assert_dashboards_match(project)


def test_submit_paths_and_imports(project, members):
    project.overlap = 2
    project.save()
    for i in range(2):
        make_conversation(project, i, n_responses=2)
    assignment.sync_tasks(project)
    leaf = TaxonomyCategory.objects.filter(project=project, parent__isnull=False).first()
    for user in (members[Role.ANNOTATOR], members["annotator2"]):
        for kind in ("label", "compare", "label"):
            slot = assignment.next_task(project, user, kind)
            if slot is None:
                continue
            if kind == "label":
                submit_label(slot.task, user, {"verdict": "unreasonable", "categories": [leaf.pk]})
            else:
                submit_preference(slot.task, user, {"choice": "a"})
    label = Label.objects.filter(project=project).first()
    apply_review(members[Role.LEAD], label, "reject", "Try again.")
    task = Task.objects.get(kind="label", response=label.response)
    submit_label(task, label.annotator, {"verdict": "reasonable"})  # the resubmission changes the verdict
    job = ImportJob(project=project, original_name="in.jsonl")
    data = jsonl(conversation_record(i) for i in range(10, 14))
    job.file.save("in.jsonl", ContentFile(data), save=False)
    job.size_bytes = len(data)
    job.save()
    run_import(job.pk)  # conversations and responses only: nothing to count until they are labelled
    assert Label.objects.filter(project=project, status=Status.SUBMITTED).count() >= 3
    assert Preference.objects.filter(status=Status.SUBMITTED).exists()
    assert_rebuild_matches(project)
    assert_dashboards_match(project)


def test_a_submit_counts_its_label_and_categories_in_one_pass(project, members):
    """submit_label saves the label, then its categories: the roll-ups read its counts once, after both
    writes (rollups.signals.batched), not around each write, and still equal a rebuild."""
    from django.test.utils import CaptureQueriesContext

    for i in range(2):
        make_conversation(project, i, n_responses=1)
    assignment.sync_tasks(project)
    leaf = TaxonomyCategory.objects.filter(project=project, parent__isnull=False).first()
    user = members[Role.ANNOTATOR]
    slot = assignment.next_task(project, user, "label")
    with CaptureQueriesContext(connection) as ctx:
        submit_label(
            slot.task, user, {"verdict": "unreasonable", "categories": [leaf.pk], "time_spent_ms": 4000}
        )
    reads = [q["sql"] for q in ctx.captured_queries if 'FROM "annotator_review"' in q["sql"]]
    assert len(reads) == 1  # a new label: nothing to read before it, once after (unbatched: three times)
    upserts = [
        q["sql"] for q in ctx.captured_queries if q["sql"].startswith('INSERT INTO "annotator_categoryday"')
    ]
    assert len(upserts) == 1
    assert_rebuild_matches(project)
    assert_dashboards_match(project)


def test_rebuild_command_repairs_bulk_loads(project, world):
    before = store.snapshot(project)
    LabelDay.objects.filter(project=project).delete()  # e.g. rows written by COPY, or a lost table
    Label.objects.filter(pk=world["labels"][0].pk).update(verdict=R)  # a queryset update bypasses the signals
    call_command("rebuild_rollups", "--project", project.slug, stdout=open("/dev/null", "w"))
    after = store.snapshot(project)
    assert after != before and after["LabelDay"]
    assert_dashboards_match(project)


def test_deleting_a_project_takes_its_rollups(project, world):
    project.delete()
    assert not LabelDay.objects.exists()


@pytest.mark.parametrize("page", ["overview", "annotators", "models", "agreement"])
def test_queries_per_page_are_constant(project, world, page, django_assert_num_queries):
    w = world
    fn = PAGES[page]
    from django.test.utils import CaptureQueriesContext

    filters = (Filters(), Filters(date_from=DAY1, date_to=DAY3))  # with a date range too
    small = []
    for f in filters:
        with CaptureQueriesContext(connection) as ctx:
            fn(project, f)
        small.append(len(ctx.captured_queries))
    for i in range(8):  # more labels, days, categories, reviews and versions
        v = w["b"].version(f"more-{i}")
        r = w["b"].response(v)
        lb = w["b"].label(r, w["a2"], U, [w["rep"], w["wa"]], day=DAY1 + dt.timedelta(days=i))
        w["b"].label(r, w["a1"], R, day=DAY1 + dt.timedelta(days=i))
        apply_review(w["lead"], lb, "approve")
    for f, n in zip(filters, small, strict=True):
        with django_assert_num_queries(n):
            fn(project, f)


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_lose_no_counts(project, members):
    """Many transactions adding to the same roll-up row at once (PostgreSQL: row locks order them)."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite serialises writers; the race needs PostgreSQL")
    from django.db import close_old_connections, transaction

    key = (project.pk, DAY1, 0)
    threads, errors = [], []

    def add():
        try:
            for _ in range(10):
                with transaction.atomic():
                    store.apply(Counter({(LabelDay, key, "n_train_submitted"): 1}))
        except Exception as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)
        finally:
            close_old_connections()
            connection.close()

    for _ in range(20):
        threads.append(threading.Thread(target=add))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert LabelDay.objects.get(project=project, day=DAY1, model_version=0).n_train_submitted == 200


def test_agreement_rollups_follow_every_write(project, world):
    """Units, per-category units, disagreement items and preference units: incremental == rebuild ==
    computed from the labels, through creates, verdict / status / category edits and deletes."""
    w, b = world, world["b"]
    a1, a2, lead = w["a1"], w["a2"], w["lead"]

    def check():
        for f in (
            Filters(),
            Filters(statuses=COUNTED_STATUSES),
            Filters(split="eval"),
            Filters(models=(w["v1"].pk,)),
            Filters(statuses=(Status.REJECTED, Status.APPROVED)),
            Filters(date_from=DAY2),
            Filters(date_to=DAY2),
            Filters(date_from=DAY2, date_to=DAY2),
            Filters(date_from=DAY3, statuses=COUNTED_STATUSES),
        ):
            assert_agreement_matches(project, f)
            assert verdict_pair_tables(project, f) == agreement_core(project, f, categories=False)["pairs"], f
        assert_rebuild_matches(project)
        assert_agreement_matches(project, Filters())

    r3 = b.response(w["v1"], split="eval")
    x = b.label(r3, a1, U, [w["tn"], w["wa"]], day=DAY1)
    y = b.label(r3, a2, R, day=DAY2)
    z = b.label(r3, lead, U, [w["tn"]], status="approved", day=DAY3)
    r4 = b.response(w["v2"])
    b.label(r4, a1, R, day=DAY1)
    b.label(r4, a2, R, status="rejected", day=DAY1)
    conv = b.conversation()
    ra, rb = b.response(w["v1"], conv), b.response(w["v2"], conv)
    p1 = b.prefer(ra, rb, a1, "a")
    b.prefer(ra, rb, a2, "b")
    b.prefer(ra, rb, lead, "tie", status="approved")
    check()
    assert AgreementItem.objects.filter(project=project, response=r3.pk).exists()
    y.verdict = U
    y.save()  # r3 no longer split
    check()
    z.status = "rejected"
    z.save()
    x.categories.remove(w["wa"])
    w["rep"].labels.add(y)
    check()
    p1.choice = "b"
    p1.save()
    check()
    x.delete()
    p1.delete()
    check()
    assert agreement(project, Filters())["completed_in_range"] is False
    assert agreement(project, Filters(date_from=DAY1))["completed_in_range"] is True


def test_a_date_range_counts_the_agreement_completed_inside_it(project, world):
    """Written out by hand: an item judged on DAY1 and again on DAY3 was complete on DAY3, so a range
    holding DAY3 counts it with both judgements, a range ending before DAY3 does not count it at all."""
    w, b = world, world["b"]
    a1, a2, lead = w["a1"], w["a2"], w["lead"]
    late = b.response(w["v1"])
    b.label(late, a1, U, [w["tn"]], day=DAY1)
    b.label(late, lead, R, day=DAY3)
    conv = b.conversation()
    ra, rb = b.response(w["v1"], conv), b.response(w["v2"], conv)
    b.prefer(ra, rb, a1, "a", day=DAY1)
    b.prefer(ra, rb, lead, "b", day=DAY3)

    def units(f):
        return sorted(((c[R], c[U]), n) for c, n in agreement_rolled_up(project, f)["units"])

    def pairs(f):
        return {k: dict(v) for k, v in verdict_pair_tables(project, f).items()}

    # the world's other shared response (a1 unreasonable, a2 reasonable) was complete on DAY3 too
    assert units(Filters(date_from=DAY3)) == [((1, 1), 2)]
    assert units(Filters(date_to=DAY2)) == []
    assert units(Filters(date_from=DAY2, date_to=DAY2)) == []

    def pair(x, vx, y, vy):
        return ((x.pk, y.pk), {(vx, vy): 1}) if x.pk < y.pk else ((y.pk, x.pk), {(vy, vx): 1})

    assert pairs(Filters(date_from=DAY3)) == dict([pair(a1, U, a2, R), pair(a1, U, lead, R)])
    assert pairs(Filters(date_to=DAY2)) == {}
    cats = agreement_rolled_up(project, Filters(date_from=DAY3))["categories"]
    assert dict(cats[w["tn"].pk]) == {(2, 1): 2}  # both units: one of two judges chose "Tool not called"
    assert preference_compositions(project, Filters(date_from=DAY3)) == [
        ({"a": 1, "b": 1, "tie": 0, "both_bad": 0}, 1)
    ]
    assert preference_compositions(project, Filters(date_to=DAY2)) == []
    items = agreement_rolled_up(project, Filters(date_from=DAY3), items=10)["items"]
    assert {r for r, _, _ in items} == {late.pk, w["labels"][-1].response_id}
    assert agreement_rolled_up(project, Filters(date_to=DAY2), items=10)["items"] == []
    page = agreement(project, Filters(date_from=DAY3))
    assert page["verdict"]["units"] == 2 and page["preferences"]["units"] == 1
