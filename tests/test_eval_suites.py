"""Eval suites: gold JSONL, scenarios, held-out conversations, eval snapshots, the demo domain;
versioning; every bad case reported; the training-overlap flag."""

import io
import json

import pytest

from annotator.models import Conversation, Split, content_hash
from evaluation import suites
from evaluation.models import EvalCase, EvalSuite
from training.models import DatasetSnapshot

from .test_eval_support import gold_record, jsonl_file, make_suite, model

pytestmark = pytest.mark.django_db


def test_gold_jsonl_becomes_a_suite_with_categories_depth_and_project_tools(project):
    records = [gold_record(1), gold_record(2, call=False), gold_record(3, turn_depth=7)]
    suite, created = suites.suite_from_gold_jsonl(project, "gold", jsonl_file(records), file_name="g.jsonl")
    assert created and suite.version == 1 and suite.case_count == 3 and suite.source == "gold"
    cases = list(suite.cases.order_by("position"))
    assert [c.external_id for c in cases] == ["case-1", "case-2", "case-3"]
    assert cases[0].tools == project.tools  # tools default to the project's
    assert cases[0].categories == ["Tool not called"] and cases[1].categories == ["Greeting"]
    assert cases[0].turn_depth == 1 and cases[2].turn_depth == 7  # counted, or as given
    assert suite.stats["expects_call"] == 2 and suite.stats["by_category"] == {
        "Greeting": 1,
        "Tool not called": 2,
    }


def test_optional_and_acceptable_arguments_are_kept_for_the_metrics(project):
    rec = gold_record(1)
    rec["expected"]["tool_calls"][0]["optional"] = ["warehouse"]
    rec["expected"]["tool_calls"][0]["acceptable"] = {"sku": ["A-1", "a-1"]}
    suite, _ = suites.create_suite(project, "opt", [(1, rec)], source="gold")
    assert suite.cases.get().expected["tool_calls"][0]["acceptable"] == {"sku": ["A-1", "a-1"]}


def test_every_bad_case_is_reported_with_its_line_and_nothing_is_created(project):
    ends_with_assistant = gold_record(3)
    ends_with_assistant["messages"].append({"role": "assistant", "content": "Let me see."})
    unknown_tool = gold_record(4)
    unknown_tool["expected"]["tool_calls"][0]["function"]["name"] = "teleport"
    records = [
        gold_record(1),
        "{not json",
        {"id": "x", "messages": [{"role": "user", "content": "hi"}]},
        ends_with_assistant,
        unknown_tool,
        gold_record(1),
    ]
    with pytest.raises(suites.SuiteError) as exc:
        suites.suite_from_gold_jsonl(project, "bad", jsonl_file(records))
    assert [(e.line, e.field) for e in exc.value.errors] == [(2, "")]  # JSON errors first: nothing is parsed

    records[1] = gold_record(2)
    with pytest.raises(suites.SuiteError) as exc:
        suites.suite_from_gold_jsonl(project, "bad", jsonl_file(records))
    found = {(e.line, e.field) for e in exc.value.errors}
    assert (3, "expected") in found
    assert (4, "messages[2].role") in found
    assert any(e.line == 5 and "teleport" in e.message for e in exc.value.errors)
    assert (6, "id") in found  # case-1 twice
    assert not EvalSuite.objects.exists() and not EvalCase.objects.exists()


def test_same_name_makes_a_new_version_only_when_the_cases_change(project, admin_user):
    first = make_suite(project, 5, name="reg")
    again, created = suites.create_suite(
        project, "reg", [(i, gold_record(i, call=(i % 4 != 0))) for i in range(1, 6)], source="gold"
    )
    assert not created and again.pk == first.pk
    changed, created = suites.create_suite(
        project, "reg", [(i, gold_record(i)) for i in range(1, 7)], source="gold", user=admin_user
    )
    assert created and changed.version == 2 and changed.case_count == 6
    assert first.cases.count() == 5  # the old version is untouched: runs on it stay readable


def test_scenarios_make_one_case_per_assistant_turn(project):
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "check_inventory", "arguments": '{"sku": "A-1"}'},
    }
    scenario = {
        "id": "s1",
        "categories": ["Business flow error"],
        "messages": [
            {"role": "system", "content": "Sell."},
            {"role": "user", "content": "Is A-1 in stock?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": '{"in_stock": 3}'},
            {"role": "assistant", "content": "Yes, 3 units are in stock."},
            {"role": "user", "content": "Order two, I am C-1."},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c2",
                        "type": "function",
                        "function": {"name": "create_order", "arguments": '{"sku": "A-1", "quantity": 2}'},
                    }
                ],
            },
        ],
    }
    suite, _ = suites.suite_from_scenarios(project, "multi-turn", jsonl_file([scenario]))
    cases = list(suite.cases.order_by("position"))
    assert [c.external_id for c in cases] == ["s1#t1", "s1#t2", "s1#t3"]
    assert [len(c.messages) for c in cases] == [2, 4, 6]
    assert [c.turn_depth for c in cases] == [1, 1, 2]
    assert cases[1].expected["content"] == "Yes, 3 units are in stock." and cases[2].expected["tool_calls"]
    assert cases[2].metadata["turn"] == 3 and cases[2].categories == ["Business flow error"]


def test_held_out_conversations_keep_a_link_to_their_conversation(project):
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello, how can I help?"}]
    conv = Conversation.objects.create(
        project=project,
        external_id="h-1",
        messages=msgs,
        tools=project.tools,
        content_hash=content_hash(msgs, project.tools),
        split=Split.HOLDOUT,
    )
    Conversation.objects.create(
        project=project,
        external_id="t-1",
        messages=msgs,
        tools=project.tools,
        content_hash="x",
        split=Split.TRAIN,
    )
    suite, _ = suites.suite_from_conversations(project, "held-out")
    case = suite.cases.get()
    assert case.conversation_id == conv.pk and case.context_length == 1 and case.external_id == "h-1#t1"


def test_demo_domain_suite(project):
    suite, _ = suites.suite_from_demo(project, "demo", n=12, seed=3)
    assert suite.case_count == 12 and suite.source == "demo"
    case = suite.cases.order_by("position").first()
    assert case.categories and case.turn_depth >= 1 and case.metadata["split"] == "seen"


def _snapshot(project, kind, rows, tmp_path, settings, version=1):
    settings.MEDIA_ROOT = str(tmp_path)
    name = f"datasets/{project.slug}/{kind}-v{version}.jsonl"
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    layout = {"eval": "eval_cases", "sft": "trl_messages"}[kind]
    return DatasetSnapshot.objects.create(
        project=project,
        kind=kind,
        version=version,
        layout=layout,
        status=DatasetSnapshot.State.READY,
        file=name,
        row_count=len(rows),
    )


def test_suite_from_an_eval_snapshot(project, tmp_path, settings):
    msgs = [{"role": "user", "content": "Is A-9 in stock?"}]
    conv = Conversation.objects.create(
        project=project,
        external_id="conv-9",
        messages=msgs,
        tools=project.tools,
        content_hash=content_hash(msgs, project.tools),
        split=Split.EVAL,
    )
    expected = gold_record(9)["expected"]
    snap = _snapshot(
        project,
        "eval",
        [
            {
                "id": "conv-9@1",
                "messages": msgs,
                "tools": json.dumps(project.tools),
                "expected": expected,
                "source": "reasonable:999",
            }
        ],
        tmp_path,
        settings,
    )
    suite, _ = suites.suite_from_snapshot(project, snap)
    case = suite.cases.get()
    assert suite.name == "eval-v1 held-out" and suite.source_detail["snapshot_id"] == snap.pk
    assert case.conversation_id == conv.pk and case.context_length == 1 and case.tools == project.tools


def test_overlap_with_the_models_training_snapshots_is_found(project, tmp_path, settings):
    suite = make_suite(project, 4)
    leaked = suite.cases.get(position=2)
    sft = _snapshot(
        project, "sft", [{"messages": [*leaked.messages, leaked.expected], "tools": "[]"}], tmp_path, settings
    )
    base = model(project, "base")
    assert suites.training_overlap(suite, base)["cases"] == 0
    tuned = model(project, "sft-1", parent=base, metadata={"train_snapshot_ids": [sft.pk]})
    dpo = model(project, "dpo-1", parent=tuned)  # trained on top: it saw the SFT data too
    for mv in (tuned, dpo):
        found = suites.training_overlap(suite, mv)
        assert found["cases"] == 1 and found["positions"] == [2]
        assert found["snapshots"] == [{"id": sft.pk, "name": "sft-v1", "cases": 1}]
    # a version made by a training job, with nothing in its metadata: the job says what it trained on
    from training.models import TrainingJob

    by_job = model(project, "sft-2", parent=base)
    TrainingJob.objects.create(
        project=project, name="j", stage="sft", base_version=base, train_snapshot=sft, result_version=by_job
    )
    assert suites.training_overlap(suite, by_job)["cases"] == 1
    assert suites.training_overlap(suite, base)["cases"] == 0  # the job trained a child, not the base


# ------------------------------------------------------------------ hostile gold files


def _raw(record) -> bytes:
    return json.dumps(record).encode()


def test_every_hostile_line_of_a_gold_file_is_one_error_with_its_line(project, settings):
    settings.IMPORT_MAX_LINE_BYTES = 20_000
    good = _raw(gold_record(1))
    lines = [
        good,
        b"[" * 5000 + b"]" * 5000,  # deeper than the parser's recursion
        _raw(gold_record(3, metadata={"n": json.loads("[" * 150 + "]" * 150)})),
        good[:-1] + b', "n": ' + b"9" * 5000 + b"}",  # over Python's integer digit limit
        good[:-1] + b', "n": 1e999}',
        good[:-1] + b', "n": 18446744073709551616}',  # beyond 64 bits: the JSON encoder refuses it
        good.replace(b"You sell things.", b"You sell \xff things."),
        good.replace(b"You sell things.", b"You sell \\ud800 things."),
        good.replace(b"You sell things.", b"You sell \\u0000 things."),
        _raw(gold_record(10, metadata={"pad": "x" * 30_000})),
        _raw(gold_record(11)),
    ]
    data = io.BytesIO(b"\n".join(lines) + b"\n")
    with pytest.raises(suites.SuiteError) as exc:
        suites.suite_from_gold_jsonl(project, "hostile", data)
    errors = exc.value.errors
    assert [e.line for e in errors] == list(range(2, 11))  # one error per bad line, none for 1 and 11
    said = {e.line: f"{e.field} {e.message}" for e in errors}
    assert "nested more than 100 levels" in said[2] and "nested more than 100 levels" in said[3]
    assert "too many digits" in said[4] and "too large" in said[5] and "64 bits" in said[6]
    assert "UTF-8" in said[7] and "surrogate" in said[8] and "NUL" in said[9]
    assert "over the limit of 20,000" in said[10]
    assert said[8].startswith("messages[0].content")
    assert not EvalSuite.objects.exists()


def test_case_fields_the_database_cannot_hold_are_errors_not_crashes(project):
    deep_tools = gold_record(1, tools="[" * 5000 + "]" * 5000)
    records = [
        deep_tools,
        gold_record(2, turn_depth=10**6),
        gold_record(3, conversation_id="abc"),
        gold_record(4, conversation_id={"id": 1}),
        gold_record(5, context_length=-1),
    ]
    with pytest.raises(suites.SuiteError) as exc:
        suites.create_suite(project, "bad", list(enumerate(records, 1)), source="gold")
    assert [(e.line, e.field) for e in exc.value.errors] == [
        (1, "tools"),
        (2, "turn_depth"),
        (3, "conversation_id"),
        (4, "conversation_id"),
        (5, "context_length"),
    ]


def test_a_case_with_an_empty_tools_list_leaves_names_to_the_expected_calls(project):
    rec = gold_record(1, tools=[])
    rec["expected"]["tool_calls"][0]["function"]["name"] = "lookup_anything"
    suite, created = suites.create_suite(project, "no-tools", [(1, rec)], source="gold")
    case = suite.cases.get()
    assert (
        created
        and case.tools == []
        and case.expected["tool_calls"][0]["function"]["name"] == "lookup_anything"
    )
    unknown = gold_record(2)  # the project's tools apply: an unknown name is still refused
    unknown["expected"]["tool_calls"][0]["function"]["name"] = "lookup_anything"
    with pytest.raises(suites.SuiteError, match="lookup_anything"):
        suites.create_suite(project, "tools", [(1, unknown)], source="gold")


def test_dotted_optional_and_acceptable_names_are_kept(project):
    rec = gold_record(1)
    call = rec["expected"]["tool_calls"][0]
    call["function"]["arguments"] = json.dumps({"sku": "A-1", "filters": {"size": 42}})
    call["optional"] = ["filters.color"]
    call["acceptable"] = {"filters.size": [42, "42"]}
    suite, _ = suites.create_suite(project, "dotted", [(1, rec)], source="gold")
    kept = suite.cases.get().expected["tool_calls"][0]
    assert kept["optional"] == ["filters.color"] and kept["acceptable"] == {"filters.size": [42, "42"]}
