"""Dataset snapshots: rows match their sources, filters, layouts, determinism, the build's failure modes."""

import datetime as dt
import json
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from jobs import lifecycle
from training.models import DatasetSnapshot
from training.snapshots import build as snapshot_build
from training.snapshots import dpo_sources, layouts, storage
from training.snapshots.build import Build, build_snapshot, create_snapshot
from training.snapshots.selection import count_matching
from training.snapshots.spec import clean_spec

from .test_datasets_factories import (
    SYSTEM,
    assistant,
    call,
    category,
    label,
    order_dialogue,
    preference,
    response,
    stock_question,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


# The corrections here are tool-behaviour fixes ("Tool not called", "Wrong arguments"), which the
# default taxonomy routes to DPO only. These tests are about rows, layouts, filters and the build
# itself, so their SFT snapshots take every correction; routing is tests/test_fix_routing.py's.
EVERY_CORRECTION = {"routing": "all"}


def build(project, user, kind="sft", **data):
    if kind == "sft":
        data["filters"] = {**EVERY_CORRECTION, **data.get("filters", {})}
    snapshot = create_snapshot(project, user, {"kind": kind, **data}, start=False)
    return build_snapshot(snapshot.pk)


def lines(snapshot):
    return [
        json.loads(line) for line in Path(storage.media_path(snapshot.file.name)).read_text().splitlines()
    ]


CHECK_A1 = call("check_inventory", {"sku": "A-1"})
ORDER_B2 = call("create_order", {"sku": "B-2", "quantity": 2})


@pytest.fixture
def world(project, members):
    """A small labelled project: two corrections, one reasonable answer, one A/B preference."""
    ann, ann2 = members["annotator"], members["annotator2"]
    c1 = stock_question(project, 1)
    r1 = response(c1, raw="Yes, it is in stock and ships today.")
    l1 = label(r1, ann, categories=["Tool not called"], correction=assistant(None, [CHECK_A1]))
    c2 = order_dialogue(project, 2)
    r2 = response(
        c2,
        raw='<tool_call>{"name": "create_order", "arguments": {"sku": "B-2", "quantity": "2"}}</tool_call>',
    )
    l2 = label(r2, ann2, categories=["Wrong arguments"], correction=assistant(None, [ORDER_B2]))
    c3 = stock_question(project, 3)
    r3 = response(
        c3,
        message=assistant("Let me check that for you right away.", [call("check_inventory", {"sku": "A-3"})]),
    )
    l3 = label(r3, ann, verdict="reasonable", categories=[])
    c4 = stock_question(project, 4)
    r4a = response(c4, raw="It is in stock.", model="agent-v1")
    r4b = response(
        c4,
        raw='<tool_call>{"name": "check_inventory", "arguments": {"sku": "A-4"}}</tool_call>',
        model="agent-v2",
    )
    p4 = preference(r4a, r4b, ann, "b")
    return {
        "c1": c1,
        "r1": r1,
        "l1": l1,
        "c2": c2,
        "r2": r2,
        "l2": l2,
        "c3": c3,
        "r3": r3,
        "l3": l3,
        "c4": c4,
        "r4a": r4a,
        "r4b": r4b,
        "p4": p4,
    }


# ----------------------------------------------------------------------------- SFT rows


def test_the_default_sft_layout_trains_only_the_reviewed_turn(world, members, project):
    snap = build(project, members["admin"])
    assert snap.layout == "trl_prompt_completion"
    row = lines(snap)[0]
    assert row["prompt"] == [SYSTEM, {"role": "user", "content": "Is A-1 in stock?"}]
    assert row["completion"] == [{"role": "assistant", "content": None, "tool_calls": [CHECK_A1]}]


def test_sft_rows_are_the_context_plus_the_correction_exactly(world, members, project):
    snap = build(project, members["admin"], layout="trl_messages")
    assert snap.status == "ready", snap.message
    rows = lines(snap)
    assert len(rows) == snap.row_count == 2
    assert rows[0]["messages"] == [
        SYSTEM,
        {"role": "user", "content": "Is A-1 in stock?"},
        {"role": "assistant", "content": None, "tool_calls": [CHECK_A1]},
    ]
    assert set(rows[0]) == {"messages", "tools"} and isinstance(rows[0]["tools"], str)
    # the reviewed turn is the 6th message: the context is the five before it, tool turns included
    c2 = world["c2"].messages
    assert rows[1]["messages"][:-1] == [
        c2[0],
        c2[1],
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [call("check_inventory", {"sku": "B-2"}, "call_1")],
        },
        {"role": "tool", "content": c2[3]["content"], "tool_call_id": "call_1"},
        c2[4],
        c2[5],
    ]
    assert rows[1]["messages"][-1] == {"role": "assistant", "content": None, "tool_calls": [ORDER_B2]}
    # arguments are JSON strings, tools a JSON string: Arrow-safe
    assert isinstance(rows[1]["messages"][-1]["tool_calls"][0]["function"]["arguments"], str)
    assert json.loads(rows[0]["tools"]) == project.tools
    assert snap.sha256 and len(snap.sha256) == 64
    assert snap.stats["rows_by_source"] == {"correction": 2}
    assert snap.stats["rows_by_category"] == {"Tool not called": 1, "Wrong arguments": 1}
    assert snap.stats["tool_call_share"] == 1.0
    assert snap.audit["blocked"] is False
    assert (snap.version, snap.name, snap.progress) == (1, "sft-v1", 1.0)


def test_reasonable_responses_are_an_optional_positive_example(world, members, project):
    snap = build(project, members["admin"], layout="trl_messages", filters={"include_reasonable": True})
    rows = lines(snap)
    assert len(rows) == 3
    assert rows[2]["messages"][-1] == {
        "role": "assistant",
        "content": "Let me check that for you right away.",
        "tool_calls": [call("check_inventory", {"sku": "A-3"})],
    }
    assert snap.stats["rows_by_source"] == {"correction": 2, "reasonable": 1}
    assert snap.stats["rows_by_category"]["(no category)"] == 1


def test_only_approved_work_unless_submitted_is_asked_for(world, members, project):
    c = stock_question(project, 9)
    label(
        response(c, raw="Sure thing."),
        members["annotator"],
        status="submitted",
        correction=assistant(None, [call("check_inventory", {"sku": "A-9"})]),
    )
    label(
        response(c, raw="Nope, all gone."),
        members["annotator"],
        status="draft",
        correction=assistant(None, [call("check_inventory", {"sku": "A-9"})]),
    )
    assert build(project, members["admin"]).row_count == 2
    assert build(project, members["admin"], filters={"include_submitted": True}).row_count == 3


def test_filters_by_category_with_children_model_version_date_and_split(world, members, project):
    admin = members["admin"]
    from .test_datasets_factories import category

    tool_use = category(project, "Tool use")  # the parent of both categories used in `world`
    assert build(project, admin, filters={"categories": [tool_use.pk]}).row_count == 2
    wrong_args = category(project, "Wrong arguments")
    snap = build(project, admin, layout="trl_messages", filters={"categories": [wrong_args.pk]})
    assert [r["messages"][-1]["tool_calls"][0]["function"]["name"] for r in lines(snap)] == ["create_order"]
    mv2 = world["r4b"].model_version
    assert (
        build(project, admin, filters={"model_versions": [mv2.pk]}).status == "failed"
    )  # no corrections from v2
    # labelled dates: l1 last month, l2 today
    from annotator.models import Label

    Label.objects.filter(pk=world["l1"].pk).update(created_at=timezone.now() - dt.timedelta(days=40))
    today = timezone.localdate().isoformat()
    snap = build(project, admin, filters={"date_from": today, "date_to": today})
    assert snap.row_count == 1 and lines(snap)[0]["completion"][-1]["tool_calls"] == [ORDER_B2]
    # split: an eval-split correction is not in a train snapshot unless asked for
    label(
        response(stock_question(project, 7, split="holdout"), raw="Yes."),
        members["annotator"],
        correction=assistant(None, [call("check_inventory", {"sku": "A-7"})]),
    )
    assert build(project, admin).row_count == 2
    assert build(project, admin, filters={"splits": ["train", "holdout"]}).row_count == 3


def test_live_count_matches_what_the_build_writes(world, members, project):
    # routed by the taxonomy (the default), both tool fixes go to DPO: only the reasonable answer stays
    for routing, parts in (("all", [2, 1]), ("taxonomy", [0, 1])):
        filters = {"include_reasonable": True, "routing": routing}
        count = count_matching(
            project.pk, "sft", clean_spec(project, {"kind": "sft", "filters": filters})["filters"]
        )
        assert count["rows"] == sum(parts) and [p["count"] for p in count["parts"]] == parts
        assert build(project, members["admin"], filters=filters).row_count == count["rows"]
    dpo = clean_spec(project, {"kind": "dpo"})
    assert count_matching(project.pk, "dpo", dpo["filters"])["rows"] == 3  # 1 preference + 2 corrections


# ----------------------------------------------------------------------------- DPO rows


def test_dpo_pairs_from_preferences_and_corrections(world, members, project):
    snap = build(project, members["admin"], kind="dpo")
    assert snap.status == "ready", snap.message
    rows = lines(snap)
    assert len(rows) == 3
    pref = rows[0]  # preferences first, then corrections, each in id order
    assert pref["prompt"] == [SYSTEM, {"role": "user", "content": "Is A-4 in stock?"}]
    assert pref["chosen"] == [
        {"role": "assistant", "content": None, "tool_calls": [call("check_inventory", {"sku": "A-4"})]}
    ]
    assert pref["rejected"] == [{"role": "assistant", "content": "It is in stock."}]
    assert json.loads(pref["tools"]) == project.tools  # (PostgreSQL's jsonb may reorder the keys)
    fix = rows[2]
    assert fix["chosen"] == [{"role": "assistant", "content": None, "tool_calls": [ORDER_B2]}]
    assert fix["rejected"] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [call("create_order", {"sku": "B-2", "quantity": "2"})],
        }
    ]
    assert snap.stats["rows_by_source"] == {"correction": 2, "preference": 1}
    assert snap.stats["rejected_tool_call_share"] == pytest.approx(1 / 3, abs=1e-3)


def test_ties_are_skipped_and_both_bad_is_paired_against_a_correction(project, members):
    ann, ann2 = members["annotator"], members["annotator2"]
    c = stock_question(project, 5)
    a = response(c, raw="In stock!", model="agent-v1")
    b = response(c, raw="Out of stock, sorry about that.", model="agent-v2")
    fix = assistant(None, [call("check_inventory", {"sku": "A-5"})])
    label(a, ann, correction=fix)  # a correction in the same context
    preference(a, b, ann, "both_bad")
    # a tie on another pair (a tie by a second annotator on the same pair would be a disagreement)
    preference(a, response(c, raw="Maybe, let me look.", model="agent-v3"), ann2, "tie")
    d = stock_question(project, 6)
    preference(
        response(d, raw="Yes."), response(d, raw="No.", model="agent-v2"), ann, "both_bad"
    )  # no correction

    snap = build(project, members["admin"], kind="dpo")
    rows = lines(snap)
    # both_bad: correction over b (correction over a comes from the corrections source, once)
    assert [
        (r["chosen"][0]["tool_calls"][0]["function"]["arguments"], r["rejected"][0]["content"]) for r in rows
    ] == [('{"sku": "A-5"}', "Out of stock, sorry about that."), ('{"sku": "A-5"}', "In stock!")]
    assert snap.stats["rows_by_source"] == {"both_bad": 1, "correction": 1}
    assert snap.stats["skipped"] == {
        "both_bad_pair_already_from_correction": 1,
        "both_bad_without_correction": 1,
        "tie": 1,
    }
    only_prefs = build(project, members["admin"], kind="dpo", filters={"sources": ["preferences"]})
    assert only_prefs.row_count == 2  # now the pair against `a` comes from the both-bad preference


def test_both_bad_never_doubles_a_pair_the_corrections_already_teach(project, members):
    """Two annotators mark a pair "both bad" and each corrected both answers alike (the demo's overlap
    of two): each answer is paired with the correction once, not a second time by the preference; where
    the other row is not written (the taxonomy routes that correction to SFT, a filter leaves it out),
    the "both bad" row still teaches the pair."""
    ann, ann2 = members["annotator"], members["annotator2"]
    c = stock_question(project, 5)
    a = response(c, raw="In stock!", model="agent-v1")
    b = response(c, raw="Out of stock, sorry about that.", model="agent-v2")
    fix = assistant(None, [call("check_inventory", {"sku": "A-5"})])
    label(a, ann, correction=fix)
    label(b, ann2, correction=fix)
    preference(a, b, ann, "both_bad")

    snap = build(project, members["admin"], kind="dpo")
    rejected = sorted(r["rejected"][0]["content"] for r in lines(snap))
    assert rejected == ["In stock!", "Out of stock, sorry about that."]  # each once
    assert snap.stats["rows_by_source"] == {"both_bad": 1, "correction": 1}
    assert snap.stats["skipped"] == {
        "both_bad_pair_already_from_correction": 1,
        "correction_pair_already_from_both_bad": 1,
    }
    duplicates = next(c for c in snap.audit["checks"] if c["key"] == "exact_duplicate")
    assert duplicates["count"] == 0

    # only agent-v1's corrections: b's is not written, and the preference's row is the one for b
    agent_v1 = a.model_version_id
    snap = build(project, members["admin"], kind="dpo", filters={"model_versions": [agent_v1]})
    assert sorted(r["rejected"][0]["content"] for r in lines(snap)) == rejected

    # b's label names a fact error, which the taxonomy fixes with SFT: its correction is not in a DPO
    # snapshot, so the "both bad" preference is what pairs b with the context's correction
    b.labels.get().categories.set([category(project, "Hallucinated fact")])
    snap = build(project, members["admin"], kind="dpo")
    assert sorted(r["rejected"][0]["content"] for r in lines(snap)) == rejected
    assert snap.stats["rows_by_source"] == {"both_bad": 1, "correction": 1}
    assert snap.stats["skipped"] == {"both_bad_pair_already_from_correction": 1}


def test_a_malformed_rejected_response_is_exported_verbatim(project, members):
    c = stock_question(project, 8)
    raw = '<tool_call>{"name": "check_inventory", "arguments": {"sku": "A-8"</tool_call>'
    bad = response(c, raw=raw)
    assert bad.message.get("malformed")
    label(bad, members["annotator"], correction=assistant(None, [call("check_inventory", {"sku": "A-8"})]))
    rows = lines(build(project, members["admin"], kind="dpo"))
    assert rows[0]["rejected"] == [{"role": "assistant", "content": raw}]


def test_dpo_layouts_openai_and_llamafactory(world, members, project):
    openai = lines(build(project, members["admin"], kind="dpo", layout="openai_preference"))[2]
    assert openai["input"]["messages"][-1] == {"role": "user", "content": "Great, order 2 please."}
    assert openai["input"]["tools"] == project.tools
    assert openai["preferred_output"] == [{"role": "assistant", "content": None, "tool_calls": [ORDER_B2]}]
    assert (
        openai["non_preferred_output"][0]["tool_calls"][0]["function"]["arguments"]
        == '{"sku": "B-2", "quantity": "2"}'
    )

    snap = build(project, members["admin"], kind="dpo", layout="llamafactory")
    lf = lines(snap)[2]
    assert lf["system"] == SYSTEM["content"]
    assert [t["from"] for t in lf["conversations"]] == [
        "human",
        "function_call",
        "observation",
        "gpt",
        "human",
    ]
    assert json.loads(lf["conversations"][1]["value"]) == {
        "name": "check_inventory",
        "arguments": {"sku": "B-2"},
    }
    assert lf["chosen"] == {
        "from": "function_call",
        "value": json.dumps({"name": "create_order", "arguments": {"sku": "B-2", "quantity": 2}}),
    }
    assert json.loads(lf["tools"])[0]["name"] == "check_inventory"  # function specs, unwrapped
    info = json.loads(layouts.llamafactory_dataset_info(snap))
    assert next(iter(info.values()))["ranking"] is True
    # the preview reads every layout back as chat
    preview = storage.preview(snap)
    assert preview[2]["target"]["tool_calls"][0]["function"]["name"] == "create_order"
    assert preview[2]["source"] == "correction" and preview[2]["row"] == 3


def test_sft_layouts_prompt_completion_and_openai_chat(world, members, project):
    pc = lines(build(project, members["admin"], layout="trl_prompt_completion"))[0]
    assert {**pc, "tools": json.loads(pc["tools"])} == {
        "prompt": [SYSTEM, {"role": "user", "content": "Is A-1 in stock?"}],
        "completion": [{"role": "assistant", "content": None, "tool_calls": [CHECK_A1]}],
        "tools": project.tools,
    }
    oa = lines(build(project, members["admin"], layout="openai_chat"))[0]
    assert oa["tools"] == project.tools and oa["messages"][-1]["tool_calls"] == [CHECK_A1]


def test_eval_snapshots_take_held_out_items_only(project, members):
    fix = assistant(None, [call("check_inventory", {"sku": "A-1"})])
    label(
        response(stock_question(project, 1, split="eval"), raw="Yes."), members["annotator"], correction=fix
    )
    label(response(stock_question(project, 2), raw="Yes."), members["annotator"], correction=fix)
    snap = build(project, members["admin"], kind="eval")
    assert snap.status == "ready"
    (row,) = lines(snap)
    assert row["id"] == "c-1@2" and row["expected"]["tool_calls"] == [fix["tool_calls"][0]]
    assert row["messages"][-1]["content"] == "Is A-1 in stock?"
    with pytest.raises(ValidationError) as err:
        clean_spec(project, {"kind": "eval", "filters": {"splits": ["train"]}})
    assert "filters.splits" in err.value.message_dict


# -------------------------------------------------------------------- determinism, states


def test_same_spec_over_unchanged_data_gives_the_same_hash(world, members, project):
    first = build(project, members["admin"], kind="dpo")
    second = build(project, members["admin"], kind="dpo")
    assert (first.version, second.version) == (1, 2)
    assert first.sha256 == second.sha256
    assert (
        Path(storage.media_path(first.file.name)).read_bytes()
        == Path(storage.media_path(second.file.name)).read_bytes()
    )
    label(
        response(stock_question(project, 11), raw="Yes."),
        members["annotator"],
        correction=assistant(None, [call("check_inventory", {"sku": "A-11"})]),
    )
    assert build(project, members["admin"], kind="dpo").sha256 != first.sha256


def test_a_ready_snapshot_is_immutable(world, members, project):
    snap = build(project, members["admin"])
    snap.note = "changed"
    with pytest.raises(ValidationError):
        snap.save()


def test_a_filter_matching_nothing_fails_clearly_and_writes_nothing(project, members, media):
    snap = build(project, members["admin"], kind="dpo")
    assert snap.status == "failed" and snap.failure == "no_rows"
    assert snap.message.startswith("No rows: nothing matches these filters (approved work only; split train")
    assert not snap.file and snap.row_count == 0 and not snap.sha256
    assert not any(Path(media).rglob("*.jsonl")) and not any(Path(media).rglob("*.tmp"))


def test_only_ties_say_why_there_are_no_rows(project, members):
    c = stock_question(project, 1)
    preference(
        response(c, raw="Yes."), response(c, raw="No.", model="agent-v2"), members["annotator"], "both_bad"
    )
    snap = build(project, members["admin"], kind="dpo", filters={"sources": ["preferences"]})
    assert snap.failure == "no_rows"
    assert (
        snap.message == "No rows: 1 source record matched but none made a row "
        "(1 “both bad” with no correction in that context to prefer)."
    )


def test_clean_spec_errors_name_the_field(project):
    with pytest.raises(ValidationError) as err:
        clean_spec(
            project,
            {
                "kind": "dpo",
                "layout": "alpaca",
                "filters": {
                    "categories": [999999],
                    "date_from": "2026-13-01",
                    "sources": ["vibes"],
                    "colour": "red",
                },
                "audit": {"checks": {"leakage": "maybe", "nope": "warn"}, "max_tokens": 0},
            },
        )
    errors = err.value.message_dict
    assert set(errors) == {
        "layout",
        "filters",
        "filters.categories",
        "filters.date_from",
        "filters.sources",
        "audit.checks.leakage",
        "audit.checks.nope",
        "audit.max_tokens",
    }
    assert errors["filters.categories"] == ["no category with id 999999 in this project"]
    with pytest.raises(ValidationError) as err:
        clean_spec(project, {"kind": "kto"})
    assert "kind" in err.value.message_dict
    spec = clean_spec(project, {"kind": "sft"})
    assert spec["layout"] == "trl_prompt_completion" and spec["filters"]["splits"] == ["train"]
    assert spec["audit_config"]["checks"]["leakage"] == "block"


# ----------------------------------------------------------------------- kill and retry


class WorkerKilled(BaseException):
    """Stands in for SIGKILL: not an Exception, so nothing in the build catches it."""


def test_a_build_killed_mid_stream_leaves_nothing_ready_and_the_rerun_is_identical(
    world, members, project, media, settings, monkeypatch
):
    clean = build(project, members["admin"], kind="dpo")
    settings.DATASET_EXPORT_CHUNK_SIZE = 1
    snap = create_snapshot(project, members["admin"], {"kind": "dpo"}, start=False)
    real_beat = Build.beat
    seen = []

    def dying_beat(self, force=False, **fields):
        real_beat(self, force=True, **fields)
        if fields.get("rows_done") == 2:
            seen.append(self.tmp)
            raise WorkerKilled()

    monkeypatch.setattr(Build, "beat", dying_beat)
    with pytest.raises(WorkerKilled):
        build_snapshot(snap.pk)
    snap.refresh_from_db()
    assert snap.status == "running" and not snap.file and not snap.sha256
    assert seen[0].exists()  # the killed attempt's partial temp file is all there is
    assert not storage.media_path(storage.file_name_for(snap)).exists()

    monkeypatch.setattr(Build, "beat", real_beat)
    rebuilt = build_snapshot(snap.pk)  # what the redelivered task does
    assert rebuilt.status == "ready" and rebuilt.attempts == 2
    assert rebuilt.sha256 == clean.sha256
    assert not seen[0].exists() and not list(Path(media).rglob("*.tmp"))
    # and a further redelivery of a finished build changes nothing
    again = build_snapshot(snap.pk)
    assert (again.attempts, again.sha256, again.finished_at) == (
        rebuilt.attempts,
        rebuilt.sha256,
        rebuilt.finished_at,
    )


def test_a_superseded_attempt_cannot_finish(world, members, project, monkeypatch):
    snap = create_snapshot(project, members["admin"], {"kind": "sft"}, start=False)
    real_write = Build.write

    def write_then_lose_ownership(self):
        result = real_write(self)
        DatasetSnapshot.objects.filter(pk=self.snapshot.pk).update(run_token="someone-else")
        return result

    monkeypatch.setattr(Build, "write", write_then_lose_ownership)
    build_snapshot(snap.pk)
    snap.refresh_from_db()
    assert snap.status == "running" and snap.run_token == "someone-else" and not snap.file
    assert not storage.media_path(storage.file_name_for(snap)).exists()


def test_deleting_a_snapshot_mid_build_stops_the_build_and_leaves_no_file(
    world, members, project, media, settings, monkeypatch
):
    settings.DATASET_EXPORT_CHUNK_SIZE = 1
    snap = create_snapshot(project, members["admin"], {"kind": "dpo"}, start=False)
    real_rows = dpo_sources.PreferenceSource.rows

    def rows_then_deleted(self, chunk, aux):
        DatasetSnapshot.objects.filter(pk=snap.pk).delete()  # an admin deletes it meanwhile
        return real_rows(self, chunk, aux)

    monkeypatch.setattr(dpo_sources.PreferenceSource, "rows", rows_then_deleted)
    assert build_snapshot(snap.pk) is None
    assert not list(Path(media).rglob("*.jsonl")) and not list(Path(media).rglob("*.tmp"))


def test_repeated_worker_deaths_give_up_with_a_message(world, members, project):
    snap = create_snapshot(
        project, members["admin"], {"kind": "sft", "filters": EVERY_CORRECTION}, start=False
    )
    DatasetSnapshot.objects.filter(pk=snap.pk).update(status="running", attempts=lifecycle.MAX_ATTEMPTS)
    snap = build_snapshot(snap.pk)
    assert (
        snap.status == "failed" and snap.failure == "gave_up" and "Gave up after 3 attempts" in snap.message
    )
    lifecycle.resume(snap)  # "Build again"
    assert snap.status == "queued" and snap.failure == ""
    assert build_snapshot(snap.pk).status == "ready"


def test_an_unexpected_error_fails_the_snapshot_and_removes_the_temp_file(
    world, members, project, media, monkeypatch
):
    snap = create_snapshot(
        project, members["admin"], {"kind": "sft", "filters": EVERY_CORRECTION}, start=False
    )
    monkeypatch.setattr(
        snapshot_build, "FORMATTERS", {**snapshot_build.FORMATTERS, "trl_prompt_completion": lambda r: 1 / 0}
    )
    snap = build_snapshot(snap.pk)
    assert snap.status == "failed" and snap.failure == "error" and "ZeroDivisionError" in snap.message
    assert not list(Path(media).rglob("*.tmp"))


def test_deleting_a_snapshot_removes_its_files(world, members, project, django_capture_on_commit_callbacks):
    snap = build(project, members["admin"])
    path = storage.media_path(snap.file.name)
    assert path.exists() and storage.index_path(path).exists()
    with django_capture_on_commit_callbacks(execute=True):
        snap.delete()
    assert not path.exists() and not storage.index_path(path).exists()


def test_broker_outage_is_reported_on_the_snapshot(
    world, members, project, monkeypatch, django_capture_on_commit_callbacks
):
    from kombu.exceptions import OperationalError

    from training import tasks

    def down(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(tasks.build_snapshot, "delay", down)
    with django_capture_on_commit_callbacks(execute=True):
        snap = create_snapshot(project, members["admin"], {"kind": "sft"})
    snap.refresh_from_db()
    assert snap.status == "failed" and snap.failure == "queue_unavailable" and snap.waiting_for_queue
    assert "Could not reach the task queue" in snap.message


# ------------------------------------------------------------------------------ queries


def test_queries_per_build_do_not_grow_with_rows(project, members, settings):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    settings.DATASET_EXPORT_CHUNK_SIZE = 1000

    def add_items(start, n):
        for i in range(start, start + n):
            c = stock_question(project, 100 + i)
            a = response(c, raw="Yes, in stock.")
            b = response(c, raw="Out of stock today.", model="agent-v2")
            label(  # routed to both SFT and DPO: every build below routes its corrections
                a,
                members["annotator"],
                categories=["Tool not called", "Hallucinated fact"],
                correction=assistant(None, [call("check_inventory", {"sku": f"A-{100 + i}"})]),
            )
            preference(a, b, members["annotator2"], "b" if i % 2 else "both_bad")

    def queries_per_build():
        counts = {}
        for kind in ("sft", "dpo"):
            snap = create_snapshot(project, members["admin"], {"kind": kind}, start=False)
            with CaptureQueriesContext(connection) as ctx:
                snap = build_snapshot(snap.pk)
            assert snap.status == "ready", snap.message
            counts[kind] = (len(ctx.captured_queries), snap.row_count)
        return counts

    add_items(0, 30)
    small = queries_per_build()
    add_items(30, 60)
    large = queries_per_build()
    for kind in ("sft", "dpo"):
        assert large[kind][1] >= 3 * small[kind][1] >= 30, (small, large)
        # a constant: the gold check, the items' votes per chunk (resolve.py), the bundle's few reads
        assert large[kind][0] == small[kind][0] <= 50, (kind, small, large)
