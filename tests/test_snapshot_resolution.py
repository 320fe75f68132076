"""One row per item (training/snapshots/resolve.py): work of several annotators on one item is merged
(gold decision, else majority) or left out with a counted reason, in SFT, eval and DPO snapshots."""

import datetime as dt
import json
from pathlib import Path

import pytest
from django.utils import timezone

from annotator.models import Adjudication, Correction, Membership, Role, Task
from evaluation.suites import suite_from_snapshot
from training.snapshots import storage
from training.snapshots.build import build_snapshot, create_snapshot
from training.snapshots.selection import count_matching
from training.snapshots.spec import clean_spec

from .test_datasets_factories import (
    assistant,
    call,
    category,
    conversation,
    label,
    preference,
    response,
    stock_question,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def team(project, members, make_user):
    """Three annotators and a lead."""
    third = make_user("annotator3")
    Membership.objects.create(user=third, project=project, role=Role.ANNOTATOR)
    return {"a1": members["annotator"], "a2": members["annotator2"], "a3": third, "lead": members["lead"]}


def build(project, user, kind="sft", **data):
    if kind == "sft":
        data.setdefault("layout", "trl_messages")  # these tests read the whole conversation of a row
    return build_snapshot(create_snapshot(project, user, {"kind": kind, **data}, start=False).pk)


def lines(snapshot):
    return [json.loads(x) for x in Path(storage.media_path(snapshot.file.name)).read_text().splitlines()]


def check(snapshot, key):
    return next(c for c in snapshot.audit["checks"] if c["key"] == key)


def fix(sku, text=None):
    return assistant(text, [call("check_inventory", {"sku": sku})])


def gold(project, lead, resp, verdict="", choice="", response_b=None, categories=()):
    kind = Task.Kind.COMPARE if response_b else Task.Kind.LABEL
    task = Task.objects.create(project=project, kind=kind, response=resp, response_b=response_b)
    adj = Adjudication.objects.create(task=task, lead=lead, verdict=verdict, choice=choice)
    adj.categories.set(categories)
    return adj


def calls_of(message):
    return [
        (c["function"]["name"], json.loads(c["function"]["arguments"])) for c in message.get("tool_calls", [])
    ]


# --------------------------------------------------------------------------------- SFT


def test_two_annotators_agreeing_make_one_row(project, members, team):
    r = response(stock_question(project, 1), raw="Yes, it is in stock.")
    label(r, team["a1"], correction=fix("A-1"))
    label(r, team["a2"], correction=fix("A-1"))
    snap = build(project, members["admin"])
    assert snap.status == "ready", snap.message
    (row,) = lines(snap)
    assert calls_of(row["messages"][-1]) == [("check_inventory", {"sku": "A-1"})]
    res = snap.stats["resolution"]
    assert (res["items"], res["rows_before_merge"], res["merged"], res["excluded"]) == (1, 2, 1, {})
    assert res["merged_by"] == {"gold": 0, "majority": 1}
    assert res["summary"] == (
        "1 item labelled by 2+ annotators merged into one row each (gold 0, majority 1)."
    )
    assert snap.audit["resolution"] == res  # the audit report says it too
    assert check(snap, "exact_duplicate")["count"] == 0


def test_the_page_and_the_live_count_say_what_is_merged(project, members, team, client):
    r = response(stock_question(project, 1), raw="Yes, it is in stock.")
    label(r, team["a1"], correction=fix("A-1"))
    label(r, team["a2"], correction=fix("A-1"))
    d = response(stock_question(project, 2), raw="Yes, it is in stock.")
    label(d, team["a1"], correction=fix("A-2"))
    label(d, team["a2"], verdict="reasonable")
    label(response(stock_question(project, 3), raw="Yes."), team["a1"], correction=fix("A-3"))
    count = count_matching(project.pk, "sft", clean_spec(project, {"kind": "sft"})["filters"])
    assert (count["rows"], count["records"], count["merged"]) == (3, 4, 1)  # at most 3 rows
    snap = build(project, members["admin"])
    assert snap.row_count == 2
    client.force_login(members["lead"])
    page = client.get(f"/p/{project.slug}/datasets/{snap.pk}/").content.decode()
    assert (
        "One row per item: 1 item labelled by 2+ annotators merged into one row each (gold 0, majority 1); "
        "1 left out: no majority."
    ) in page
    audit = client.get(f"/p/{project.slug}/datasets/{snap.pk}/audit/").content.decode()
    assert "1 left out: no majority." in audit and "no lead decision and no majority: left out" in audit


def test_disagreement_without_gold_is_left_out_and_counted(project, members, team):
    r = response(stock_question(project, 1), raw="Yes, it is in stock.")
    label(r, team["a1"], correction=fix("A-1"))
    label(r, team["a2"], verdict="reasonable")
    other = response(stock_question(project, 2), raw="Yes.")
    label(other, team["a1"], correction=fix("A-2"))
    for kind in ("sft", "dpo"):
        snap = build(project, members["admin"], kind)
        assert snap.status == "ready", snap.message
        assert [r_["messages" if kind == "sft" else "prompt"][1]["content"] for r_ in lines(snap)] == [
            "Is A-2 in stock?"
        ]
        assert snap.stats["resolution"]["excluded"] == {"no_majority": 1}
        assert snap.stats["resolution"]["summary"] == "1 left out: no majority."
        conflict = check(snap, "label_conflict")
        assert conflict["count"] == 1 and conflict["outcome"] == "warning"  # left out, so only a warning
        assert conflict["examples"][0]["row"] is None and conflict["examples"][0]["external_id"] == "c-1"
    # a lead may insist on a decision before any export
    blocked = build(project, members["admin"], audit={"checks": {"label_conflict": "block"}})
    assert blocked.failure == "audit_blocked" and "Unresolved label conflicts" in blocked.message


def test_gold_decides_a_disagreement_verdict_and_categories(project, members, team):
    r = response(stock_question(project, 1), raw="Yes, it is in stock.")
    label(r, team["a1"], categories=["Tool not called"], correction=fix("A-1"))
    label(r, team["a2"], verdict="reasonable")
    adj = gold(
        project, team["lead"], r, verdict="unreasonable", categories=[category(project, "Hallucinated fact")]
    )
    snap = build(project, members["admin"])
    (row,) = lines(snap)
    assert calls_of(row["messages"][-1]) == [("check_inventory", {"sku": "A-1"})]
    assert snap.stats["rows_by_category"] == {"Hallucinated fact": 1}  # the gold decision's categories
    assert snap.stats["resolution"]["merged_by"] == {"gold": 1, "majority": 0}
    # the lead decides the other way: the response was fine as it was
    Adjudication.objects.filter(pk=adj.pk).update(verdict="reasonable")
    snap = build(project, members["admin"], filters={"include_reasonable": True})
    (row,) = lines(snap)
    assert row["messages"][-1] == {"role": "assistant", "content": "Yes, it is in stock."}
    assert snap.stats["rows_by_source"] == {"reasonable": 1}
    # without reasonable responses the outvoted correction is left out, and says why
    snap = build(project, members["admin"])
    assert snap.failure == "no_rows" and "left out: decided reasonable" in snap.message
    assert snap.stats["resolution"]["excluded"] == {"decided_reasonable": 1}


def test_gold_on_a_single_label_overrules_it(project, members, team):
    r = response(stock_question(project, 1), raw="Yes, it is in stock.")
    label(r, team["a1"], correction=fix("A-1"))
    gold(project, team["lead"], r, verdict="reasonable")
    keep = response(stock_question(project, 2), raw="Yes.")
    label(keep, team["a1"], correction=fix("A-2"))
    snap = build(project, members["admin"])
    assert [r_["messages"][1]["content"] for r_ in lines(snap)] == ["Is A-2 in stock?"]
    assert snap.stats["resolution"]["excluded"] == {"decided_reasonable": 1}


def test_three_annotators_two_to_one_take_the_majority(project, members, team):
    r = response(stock_question(project, 1), raw="Yes, it is in stock.")
    label(r, team["a1"], correction=fix("A-1"))
    label(r, team["a2"], correction=fix("A-1", "Let me check."))  # same call, other words
    label(r, team["a3"], verdict="reasonable")
    snap = build(project, members["admin"])
    (row,) = lines(snap)
    assert row["messages"][-1]["tool_calls"]
    assert snap.stats["resolution"]["merged_by"] == {"gold": 0, "majority": 1}
    # the two corrections differ and neither has a majority: the most recently edited one wins
    first, second = Correction.objects.order_by("pk")
    Correction.objects.filter(pk=first.pk).update(updated_at=timezone.now() + dt.timedelta(hours=1))
    assert lines(build(project, members["admin"]))[0]["messages"][-1]["content"] is None
    Correction.objects.filter(pk=second.pk).update(updated_at=timezone.now() + dt.timedelta(hours=2))
    assert lines(build(project, members["admin"]))[0]["messages"][-1]["content"] == "Let me check."


def test_the_correction_most_annotators_wrote_wins_unless_the_deciding_lead_wrote_one(project, members, team):
    r = response(stock_question(project, 1), raw="Yes, it is in stock.")
    label(r, team["a1"], correction=fix("A-1"))
    label(r, team["a2"], correction=assistant(None, [call("check_inventory", {"sku": "A-1"}, "call_9")]))
    label(r, team["a3"], correction=fix("A-1", "One moment, checking."))
    Correction.objects.filter(label__annotator=team["a3"]).update(
        updated_at=timezone.now() + dt.timedelta(days=1)
    )
    (row,) = lines(build(project, members["admin"]))
    assert row["messages"][-1]["content"] is None  # 2 of 3 say the same (ids aside), though not the latest
    # the lead corrected it too and decided the item: the lead's own text is the gold
    label(
        r,
        team["lead"],
        correction=assistant("A-1: let me look that up.", [call("check_inventory", {"sku": "A-1"})]),
    )
    gold(project, team["lead"], r, verdict="unreasonable")
    (row,) = lines(build(project, members["admin"]))
    assert row["messages"][-1]["content"] == "A-1: let me look that up."


def test_only_admitted_work_votes(project, members, team):
    r = response(stock_question(project, 1), raw="Yes, it is in stock.")
    label(r, team["a1"], correction=fix("A-1"))
    label(r, team["a2"], verdict="reasonable", status="submitted")
    label(r, team["a3"], verdict="reasonable", status="rejected")
    snap = build(project, members["admin"])  # approved work only: one vote
    assert snap.row_count == 1 and snap.stats["resolution"]["merged"] == 0
    snap = build(project, members["admin"], filters={"include_submitted": True})  # now 1 against 1
    assert snap.failure == "no_rows" and snap.stats["resolution"]["excluded"] == {"no_majority": 1}


def test_a_date_filter_selects_items_but_every_admitted_label_votes(project, members, team):
    r = response(stock_question(project, 1), raw="Yes, it is in stock.")
    label(r, team["a1"], correction=fix("A-1"), created_at=timezone.now() - dt.timedelta(days=30))
    label(r, team["a2"], verdict="reasonable")  # today
    today = timezone.localdate().isoformat()
    snap = build(project, members["admin"], filters={"date_from": today, "include_reasonable": True})
    assert snap.failure == "no_rows" and snap.stats["resolution"]["excluded"] == {"no_majority": 1}


def test_the_output_does_not_depend_on_chunk_boundaries(project, members, team, settings):
    for i in range(6):
        r = response(stock_question(project, i), raw="Yes, it is in stock.")
        label(r, team["a1"], correction=fix(f"A-{i}"))
        label(r, team["a2"], correction=fix(f"A-{i}", "Checking.") if i % 2 else fix(f"A-{i}"))
        if i % 3 == 0:
            label(r, team["a3"], verdict="reasonable")
    whole = build(project, members["admin"], filters={"include_reasonable": True})
    settings.DATASET_EXPORT_CHUNK_SIZE = 1
    chunked = build(project, members["admin"], filters={"include_reasonable": True})
    assert whole.sha256 == chunked.sha256 and whole.row_count == chunked.row_count == 6


# -------------------------------------------------------------------------------- eval


def test_eval_ids_are_unique_and_the_snapshot_imports_as_a_suite(project, members, team):
    expected = {}
    for i in range(4):
        r = response(stock_question(project, 100 + i, split="eval"), raw="Yes, it is in stock.")
        label(r, team["a1"], correction=fix(f"A-{100 + i}"))
        label(r, team["a2"], correction=fix(f"A-{100 + i}"))
        expected[f"c-{100 + i}@2"] = f"A-{100 + i}"
    # two responses to one context, corrected alike by two annotators: one case
    c = stock_question(project, 200, split="holdout")
    label(response(c, raw="Yes."), team["a1"], correction=fix("A-200"))
    label(response(c, raw="No.", model="agent-v2"), team["a2"], correction=fix("A-200"))
    expected["c-200@2"] = "A-200"
    # two responses whose corrections disagree: no expected answer, the case is left out
    d = stock_question(project, 201, split="eval")
    label(response(d, raw="Yes."), team["a1"], correction=fix("A-201"))
    label(response(d, raw="No.", model="agent-v2"), team["a2"], correction=fix("B-201"))

    count = count_matching(project.pk, "eval", clean_spec(project, {"kind": "eval"})["filters"])
    assert (count["rows"], count["records"]) == (6, 12)  # one case per context, at most
    snap = build(project, members["admin"], "eval")
    assert snap.status == "ready", snap.message
    rows = lines(snap)
    ids = [row["id"] for row in rows]
    assert len(ids) == len(set(ids)) == 5
    assert {row["id"]: calls_of(row["expected"])[0][1]["sku"] for row in rows} == expected
    assert snap.stats["resolution"]["excluded"] == {"expected_answers_differ": 1}
    assert check(snap, "label_conflict")["count"] == 1
    suite, created = suite_from_snapshot(project, snap)
    assert created and suite.case_count == 5
    assert sorted(suite.cases.values_list("external_id", flat=True)) == sorted(ids)


def test_eval_duplicates_are_found_whatever_the_case_id_and_source(project, members, team):
    messages = [{"role": "user", "content": "Is A-7 in stock?"}]
    for ext in ("first", "second"):  # one question imported twice under two ids
        c = conversation(project, ext, messages, split="eval")
        label(response(c, raw="Yes."), team["a1"], correction=fix("A-7"))
    snap = build(project, members["admin"], "eval")
    dup = check(snap, "exact_duplicate")
    assert dup["count"] == 1 and dup["examples"][0]["detail"] == "same prompt and expected answer as row 1"


# --------------------------------------------------------------------------------- DPO


def pair(project, i=1):
    c = stock_question(project, i)
    a = response(c, raw="It is in stock.", model="agent-v1")
    b = response(
        c,
        raw=f'<tool_call>{{"name": "check_inventory", "arguments": {{"sku": "A-{i}"}}}}</tool_call>',
        model="agent-v2",
    )
    return a, b


def chosen_and_rejected(snapshot):
    out = []
    for row in lines(snapshot):
        out.append(
            tuple(
                "call" if m[0].get("tool_calls") else m[0]["content"]
                for m in (row["chosen"], row["rejected"])
            )
        )
    return out


def test_mirrored_preferences_are_left_out_resolved_by_gold_or_by_majority(project, members, team):
    a, b = pair(project)
    preference(a, b, team["a1"], "a")
    preference(b, a, team["a2"], "a")  # shown the other way round: b over a
    keep_a, keep_b = pair(project, 2)
    preference(keep_a, keep_b, team["a1"], "b")
    snap = build(project, members["admin"], "dpo")
    assert chosen_and_rejected(snap) == [("call", "It is in stock.")]  # only the other pair
    assert snap.stats["resolution"]["excluded"] == {"mirrored_pair_unresolved": 1}
    example = check(snap, "label_conflict")["examples"][0]
    assert "response " in example["detail"] and example["detail"].endswith(
        "no lead decision and no majority: left out"
    )

    preference(a, b, team["a3"], "b")  # 2 against 1 for b
    snap = build(project, members["admin"], "dpo")
    assert chosen_and_rejected(snap) == [("call", "It is in stock.")] * 2
    assert snap.stats["resolution"]["merged_by"] == {"gold": 0, "majority": 1}

    gold(project, team["lead"], a, choice="a", response_b=b)  # the lead overrules the majority
    snap = build(project, members["admin"], "dpo")
    assert chosen_and_rejected(snap) == [("It is in stock.", "call"), ("call", "It is in stock.")]
    assert snap.stats["resolution"]["merged_by"] == {"gold": 1, "majority": 0}
    assert check(snap, "label_conflict")["count"] == 0


def test_a_correction_saying_what_the_other_response_says_is_a_vote_on_the_pair(project, members, team):
    a, b = pair(project)
    label(a, team["a2"], correction=fix("A-1"))  # says what b says: b over a
    preference(a, b, team["a1"], "b")  # agrees: one pair, one row
    snap = build(project, members["admin"], "dpo")
    assert chosen_and_rejected(snap) == [("call", "It is in stock.")]
    assert snap.stats["rows_by_source"] == {"preference": 1}
    assert snap.stats["resolution"] == {
        **snap.stats["resolution"],
        "items": 1,
        "rows_before_merge": 2,
        "merged_by": {"gold": 0, "majority": 1},
    }


def test_a_correction_mirrored_against_a_preference(project, members, team):
    a, b = pair(project)
    label(a, team["a2"], correction=fix("A-1"))  # b over a, from a correction
    preference(a, b, team["a1"], "a")  # a over b
    snap = build(project, members["admin"], "dpo")
    assert snap.failure == "no_rows"  # neither the preference's pair nor the correction's
    assert snap.stats["resolution"]["excluded"] == {"mirrored_pair_unresolved": 1}
    assert "a correction says response" in check(snap, "label_conflict")["examples"][0]["detail"]

    adj = gold(project, team["lead"], a, choice="b", response_b=b)
    snap = build(project, members["admin"], "dpo")
    assert chosen_and_rejected(snap) == [("call", "It is in stock.")]
    Adjudication.objects.filter(pk=adj.pk).update(choice="a")
    snap = build(project, members["admin"], "dpo")
    assert chosen_and_rejected(snap) == [("It is in stock.", "call")]  # the correction's pair is overruled
    assert snap.stats["rows_by_source"] == {"preference": 1}


def test_two_corrections_of_one_response_make_one_pair(project, members, team):
    c = stock_question(project, 1)
    r = response(c, raw="It is in stock.")
    label(r, team["a1"], correction=fix("A-1"))
    label(r, team["a2"], correction=fix("A-1", "Checking."))
    label(r, team["a3"], correction=fix("A-1"))
    snap = build(project, members["admin"], "dpo")
    (row,) = lines(snap)
    assert row["chosen"][0]["content"] is None and snap.stats["resolution"]["merged_by"]["majority"] == 1


def test_ties_and_both_bad_are_votes_too(project, members, team):
    a, b = pair(project)
    preference(a, b, team["a1"], "tie")
    preference(a, b, team["a2"], "tie")
    preference(a, b, team["a3"], "b")
    keep_a, keep_b = pair(project, 2)
    preference(keep_a, keep_b, team["a1"], "b")
    # "both bad" from two annotators: the context's correction over each response, once
    bad_a, bad_b = pair(project, 3)
    label(
        response(bad_a.conversation, raw="Let me see.", model="agent-v3"), team["a3"], correction=fix("A-3")
    )
    preference(bad_a, bad_b, team["a1"], "both_bad")
    preference(bad_b, bad_a, team["a2"], "both_bad")
    snap = build(project, members["admin"], "dpo", filters={"sources": ["preferences"]})
    assert snap.stats["skipped"] == {"tie": 1}
    assert snap.stats["rows_by_source"] == {"both_bad": 2, "preference": 1}
    # three pairs decided; the tie makes no row, so only the both-bad pair counts as merged
    assert snap.stats["resolution"]["items"] == 3
    assert snap.stats["resolution"]["merged_by"] == {"gold": 0, "majority": 1}


# ------------------------------------------------------------------------------ queries


def overlap_items(project, team, start, n):
    """Items labelled by three annotators (some decided by the lead) and pairs compared by two."""
    for i in range(start, start + n):
        split = "eval" if i % 4 == 0 else "train"
        a, b = pair(project, i) if split == "train" else (None, None)
        if a is None:
            a = response(stock_question(project, i, split=split), raw="It is in stock.")
        label(a, team["a1"], correction=fix(f"A-{i}"))
        label(a, team["a2"], correction=fix(f"A-{i}", "Checking."))
        label(a, team["a3"], verdict="reasonable" if i % 5 == 0 else "unreasonable")
        if i % 3 == 0:
            gold(project, team["lead"], a, verdict="unreasonable")
        if b is not None:
            preference(a, b, team["a1"], "b")
            preference(b, a, team["a2"], "b" if i % 2 else "a")


def test_queries_do_not_grow_with_items(project, members, team, settings):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    settings.DATASET_EXPORT_CHUNK_SIZE = 1000
    counts = []
    for start in (300, 320):  # 20 items, then 40
        overlap_items(project, team, start, 20)
        per_kind = {}
        for kind in ("sft", "dpo", "eval"):
            snap = create_snapshot(project, members["admin"], {"kind": kind}, start=False)
            with CaptureQueriesContext(connection) as queries:
                snap = build_snapshot(snap.pk)
            assert snap.status == "ready" and snap.row_count >= 5, snap.message
            per_kind[kind] = len(queries)
        counts.append(per_kind)
    assert counts[0] == counts[1] and max(counts[1].values()) <= 60, counts
