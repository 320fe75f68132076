"""The audit finds each seeded defect, blocks or warns as configured, and says why."""

import pytest

from annotator.models import Adjudication, Correction, Preference, Task
from training.snapshots.build import build_snapshot, create_snapshot

from .test_datasets_factories import (
    SYSTEM,
    assistant,
    call,
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


def build(project, user, kind="sft", **data):
    return build_snapshot(create_snapshot(project, user, {"kind": kind, **data}, start=False).pk)


def check(snapshot, key):
    return next(c for c in snapshot.audit["checks"] if c["key"] == key)


def good_row(project, members, i=1):
    """One clean correction, so that a defect is never the only row."""
    label(
        response(stock_question(project, i), raw="Yes, it is."),
        members["annotator"],
        correction=assistant(None, [call("check_inventory", {"sku": f"A-{i}"})]),
    )


def raw_correction(resp, user, message, verdict="unreasonable"):
    """A correction saved without the API's validation: what old or imported data can hold."""
    lab = label(resp, user, verdict=verdict)
    Correction.objects.create(label=lab, message=message)
    return lab


def seed_invalid_json(project, members):
    raw_correction(
        response(stock_question(project, 2), raw="Yes."),
        members["annotator"],
        assistant(
            None,
            [
                {
                    "id": "c",
                    "type": "function",
                    "function": {"name": "check_inventory", "arguments": '{"sku": "A-2"'},
                }
            ],
        ),
    )


def seed_unknown_tool(project, members):
    raw_correction(
        response(stock_question(project, 2), raw="Yes."),
        members["annotator"],
        assistant(None, [call("refund_order", {"order_id": "9"})]),
    )


def seed_schema(project, members):
    raw_correction(
        response(stock_question(project, 2), raw="Yes."),
        members["annotator"],
        assistant(None, [call("create_order", {"sku": "A-2", "quantity": "two"})]),
    )


def seed_think(project, members):
    raw_correction(
        response(stock_question(project, 2), raw="Yes."),
        members["annotator"],
        assistant("<think>The user wants stock. I will answer that it is in stock."),
    )


def seed_empty(project, members):
    label(
        response(stock_question(project, 2), message=assistant("")),
        members["annotator"],
        verdict="reasonable",
    )


def seed_short(project, members):
    raw_correction(response(stock_question(project, 2), raw="Yes."), members["annotator"], assistant("Sure."))


def seed_exact_duplicate(project, members):
    # two responses to one context corrected alike: two items, one training example twice
    # (two annotators on the *same* response are one item and make one row)
    c = stock_question(project, 2)
    fix = assistant(None, [call("check_inventory", {"sku": "A-2"})])
    label(response(c, raw="Yes."), members["annotator"], correction=fix)
    label(response(c, raw="Yes!", model="agent-v2"), members["annotator2"], correction=fix)


def seed_normalised_duplicate(project, members):
    c = stock_question(project, 2)
    label(
        response(c, raw="Yes."),
        members["annotator"],
        correction=assistant("Let me check the stock of A-2 for you."),
    )
    label(
        response(c, raw="Yes!", model="agent-v2"),
        members["annotator2"],
        correction=assistant("let me check  the stock of A-2\nfor you."),
    )


def seed_chosen_equals_rejected(project, members):
    msg = assistant("It is in stock, would you like to order?")
    r = response(stock_question(project, 2), message=msg)
    raw_correction(r, members["annotator"], msg)


def seed_conflict(project, members):
    r = response(stock_question(project, 2), raw="Yes, in stock.")
    label(
        r,
        members["annotator"],
        status="submitted",
        correction=assistant(None, [call("check_inventory", {"sku": "A-2"})]),
    )
    label(r, members["annotator2"], verdict="reasonable", status="submitted")


def seed_too_long(project, members):
    raw_correction(
        response(stock_question(project, 2), raw="Yes."),
        members["annotator"],
        assistant("We have it. " * 400),
    )


def seed_mismatched_pair(project, members):
    a = response(stock_question(project, 2), raw="Yes.")
    b = response(stock_question(project, 3), raw="No.", model="agent-v2")
    Preference.objects.create(
        response_a=a, response_b=b, annotator=members["annotator"], choice="a", status="approved"
    )  # bypasses clean(): legacy data


CASES = [
    # key, kind, seed, extra spec, expected count, detail fragment
    ("invalid_tool_json", "sft", seed_invalid_json, {}, 1, "arguments is not valid JSON"),
    ("unknown_tool", "sft", seed_unknown_tool, {}, 1, "'refund_order' is not in the row's tools"),
    ("schema_violation", "sft", seed_schema, {}, 1, "arguments.quantity: 'two' is not of type 'integer'"),
    ("think_tags", "sft", seed_think, {}, 1, "<think> tags"),
    ("empty_target", "sft", seed_empty, {"filters": {"include_reasonable": True}}, 1, "no reply text"),
    ("short_target", "sft", seed_short, {}, 1, "reply is 5 characters (minimum 10)"),
    ("exact_duplicate", "sft", seed_exact_duplicate, {}, 1, "same bytes as row 2"),
    ("normalised_duplicate", "sft", seed_normalised_duplicate, {}, 1, "same as row 2 after normalising"),
    ("chosen_equals_rejected", "dpo", seed_chosen_equals_rejected, {}, 1, "say the same thing"),
    (
        "label_conflict",
        "sft",
        seed_conflict,
        {"filters": {"include_submitted": True}},
        1,
        "(1 reasonable, 1 unreasonable), no lead decision and no majority: left out",
    ),
    ("too_long", "sft", seed_too_long, {"audit": {"max_tokens": 600}}, 1, "(maximum 600)"),
    ("pair_context_mismatch", "dpo", seed_mismatched_pair, {}, 1, "answers 2 messages of conversation"),
]


@pytest.mark.parametrize(("key", "kind", "seed", "spec", "count", "detail"), CASES, ids=[c[0] for c in CASES])
def test_each_seeded_defect_is_found_and_blocks(project, members, key, kind, seed, spec, count, detail):
    good_row(project, members)
    seed(project, members)
    audit = {**spec.get("audit", {}), "checks": {key: "block"}}
    snap = build(project, members["admin"], kind, filters=spec.get("filters", {}), audit=audit)
    assert snap.status == "failed" and snap.failure == "audit_blocked", (snap.status, snap.message)
    found = check(snap, key)
    assert found["count"] == count and found["outcome"] == "blocked"
    assert detail in found["examples"][0]["detail"], found["examples"]
    assert snap.message.startswith("Blocked by the audit: ") and found["title"] in snap.message
    assert not snap.file and snap.audit["blocking"] == [key]
    # every other check passed: each seed trips exactly its own check
    assert [c["key"] for c in snap.audit["checks"] if c["count"]] == [key]

    warned = build(
        project,
        members["admin"],
        kind,
        filters=spec.get("filters", {}),
        audit={**audit, "checks": {key: "warn"}},
    )
    assert warned.status == "ready", warned.message
    assert check(warned, key)["outcome"] == "warning" and check(warned, key)["count"] == count
    assert "audit warnings" in warned.message
    off = build(
        project,
        members["admin"],
        kind,
        filters=spec.get("filters", {}),
        audit={**audit, "checks": {key: "off"}},
    )
    assert off.status == "ready" and check(off, key)["count"] is None


def test_examples_point_at_the_row_and_its_source(project, members):
    good_row(project, members)
    seed_unknown_tool(project, members)
    snap = build(project, members["admin"])
    (example,) = check(snap, "unknown_tool")["examples"]
    assert example["row"] == 2 and example["source"] == "correction" and example["external_id"] == "c-2"


def test_a_lead_decision_resolves_a_label_conflict(project, members):
    r = response(stock_question(project, 2), raw="Yes, in stock.")
    fix = assistant(None, [call("check_inventory", {"sku": "A-2"})])
    label(r, members["annotator"], status="approved", correction=fix)
    label(r, members["annotator2"], verdict="reasonable", status="rejected")  # a rejected label has no vote
    snap = build(project, members["admin"], filters={"include_submitted": True})
    assert snap.status == "ready" and check(snap, "label_conflict")["count"] == 0
    # an approved opposite verdict: 1 against 1 with no lead decision, so the item is left out
    label(r, members["lead"], verdict="reasonable", status="approved")
    snap = build(project, members["admin"], audit={"checks": {"label_conflict": "block"}})
    assert snap.failure == "no_rows" and "1 left out: no majority" in snap.message
    (example,) = check(snap, "label_conflict")["examples"]
    assert example["row"] is None and example["detail"] == (
        f"2 labels on response {r.pk} (1 reasonable, 1 unreasonable), "
        "no lead decision and no majority: left out"
    )
    # the lead's gold decision settles it
    task = Task.objects.create(project=project, kind=Task.Kind.LABEL, response=r)
    Adjudication.objects.create(task=task, lead=members["lead"], verdict="unreasonable")
    snap = build(project, members["admin"], audit={"checks": {"label_conflict": "block"}})
    assert snap.status == "ready" and check(snap, "label_conflict")["count"] == 0
    assert snap.stats["resolution"]["merged_by"] == {"gold": 1, "majority": 0}


def test_opposite_preferences_without_a_lead_decision_conflict(project, members):
    c = stock_question(project, 2)
    a, b = response(c, raw="Yes."), response(c, raw="No.", model="agent-v2")
    preference(a, b, members["annotator"], "a", status="submitted")
    preference(a, b, members["annotator2"], "b", status="submitted")
    snap = build(project, members["admin"], "dpo", filters={"include_submitted": True})
    assert snap.failure == "no_rows" and check(snap, "label_conflict")["count"] == 1  # one pair, not two rows
    assert snap.stats["resolution"]["excluded"] == {"mirrored_pair_unresolved": 1}
    preference(a, b, members["lead"], "b", status="approved")  # a third opinion: 2 against 1 for b
    snap = build(project, members["admin"], "dpo", filters={"include_submitted": True})
    assert snap.status == "ready" and snap.row_count == 1 and check(snap, "label_conflict")["count"] == 0
    assert snap.stats["resolution"]["merged_by"] == {"gold": 0, "majority": 1}


def test_train_eval_leakage_by_id_and_by_normalised_prompt(project, members):
    fix = assistant(None, [call("check_inventory", {"sku": "A-1"})])
    held = stock_question(project, 1, split="eval")
    label(response(held, raw="Yes."), members["annotator"], correction=fix)
    eval_snap = build(project, members["admin"], "eval")
    assert eval_snap.status == "ready"
    # the same dialogue re-imported into train with another system prompt, other case and spacing
    copy = conversation(
        project,
        "copy-of-c-1",
        [
            {**SYSTEM, "content": "You are a helpful shop assistant."},
            {"role": "user", "content": "is  A-1 in STOCK?"},
        ],
    )
    label(response(copy, raw="Yes."), members["annotator"], correction=fix)
    good_row(project, members, 5)
    snap = build(project, members["admin"], filters={"splits": ["train", "eval"]})
    assert snap.failure == "audit_blocked"
    leak = check(snap, "leakage")
    assert leak["count"] == 2  # the eval conversation itself (by id) and its copy (by prompt)
    assert {e["external_id"] for e in leak["examples"]} == {"c-1", "copy-of-c-1"}
    assert "eval-v1" in leak["examples"][0]["detail"]
    # the other way round: an eval snapshot over items already trained on
    train = build(
        project, members["admin"], audit={"checks": {"leakage": "off"}}, filters={"splits": ["train"]}
    )
    assert train.status == "ready"
    again = build(project, members["admin"], "eval")
    assert again.failure == "audit_blocked" and check(again, "leakage")["count"] == 1
