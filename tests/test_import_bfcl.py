"""BFCL records and possible answers read into conversations and gold calls (toolcalls.bfcl, issue #16).

Fixtures: tests/data/import_formats/bfcl_test.jsonl and bfcl_answers.jsonl (see test_import_formats.py);
the import and suite upload of the same files end to end are in test_import_formats.py.
"""

import json

import pytest

from annotator.importers import parse_line
from toolcalls import bfcl
from toolcalls.match import call_matches, expected_calls
from toolcalls.parse import ToolCall
from toolcalls.validate import validate_tool_specs

from .test_import_formats import bfcl_answers, lines_of


def test_bfcl_types_become_json_schema_types_at_every_depth():
    errors = []
    records = {r["id"]: r for r in lines_of("bfcl_test.jsonl")}
    tools = bfcl.convert_functions(records["simple_java_1"]["function"], errors)
    params = tools[0]["function"]["parameters"]
    assert errors == []
    assert (
        tools[0]["type"] == "function"
        and tools[0]["function"]["name"] == "SQLCompletionAnalyzer.makeProposalsFromObject"
    )
    assert params["type"] == "object"
    assert params["properties"]["object"]["type"] == "string"
    assert params["properties"]["useShortName"]["type"] == "boolean"
    assert params["properties"]["params"]["type"] == "object"
    assert params["properties"]["params"]["properties"] == {
        "limit": {"type": "integer"},
        "schemaFilter": {"type": "string"},
    }
    assert params["properties"]["names"] == {
        "type": "array",
        "items": {"type": "string"},
        "description": "Names.",
    }
    coords = bfcl.convert_functions(records["simple_3"]["function"], errors)[0]["function"]["parameters"]
    assert coords["properties"]["coord1"]["type"] == "array" and coords["properties"]["coord1"]["items"] == {
        "type": "number"
    }
    anything = bfcl.convert_functions(records["simple_4"]["function"], errors)[0]["function"]["parameters"]
    assert anything["properties"]["data"] == {"description": "The training data for the model."}
    assert errors == []
    assert validate_tool_specs(tools) == []
    # the input is left as it was
    assert records["simple_java_1"]["function"][0]["parameters"]["type"] == "dict"


def test_bfcl_answers_become_expected_calls_with_optional_and_acceptable():
    records = {r["id"]: r for r in lines_of("bfcl_test.jsonl")}
    answers = bfcl_answers()
    case, errors = bfcl.convert_record(records["simple_6"], answers)
    assert errors == []
    (call,) = case.expected["tool_calls"]
    assert call["function"]["name"] == "hotel.book"
    assert json.loads(call["function"]["arguments"]) == {
        "stay": {"city": "Paris", "zip": "75001", "nights": 2, "check_in": "2024-05-10"},
        "breakfast": False,
    }
    assert call["optional"] == ["stay.zip", "breakfast"]
    assert call["acceptable"] == {"stay.check_in": ["2024-05-10", "05/10/2024"]}
    # "" alone: the argument must be left out, so it is neither in the arguments nor optional
    case, _ = bfcl.convert_record(records["simple_7"], answers)
    (call,) = case.expected["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == {"company": "AAPL"}
    assert "optional" not in call and call["acceptable"] == {"company": ["AAPL", "Apple", "Apple Inc."]}
    # parallel: one expected call per answer entry, in order
    case, _ = bfcl.convert_record(records["parallel_0"], answers)
    assert [json.loads(c["function"]["arguments"]) for c in case.expected["tool_calls"]] == [
        {"artist": "Taylor Swift", "duration": 20},
        {"artist": "Maroon 5", "duration": 15},
    ]


def model_call(name, **arguments):
    return ToolCall(name=name, arguments=arguments)


def test_converted_gold_scores_the_way_bfcl_means_it():
    records = {r["id"]: r for r in lines_of("bfcl_test.jsonl")}
    case, _ = bfcl.convert_record(records["simple_6"], bfcl_answers())
    (gold,) = expected_calls(case.expected)
    stay = {"city": "Paris", "nights": 2, "check_in": "05/10/2024"}
    assert call_matches(
        model_call("hotel.book", stay=stay), gold, case.tools
    )  # zip and breakfast may be omitted
    assert call_matches(
        model_call("hotel.book", stay={**stay, "zip": "75001"}, breakfast=False), gold, case.tools
    )
    assert not call_matches(model_call("hotel.book", stay={**stay, "zip": "75002"}), gold, case.tools)
    assert not call_matches(model_call("hotel.book", stay=stay, breakfast=True), gold, case.tools)
    assert not call_matches(model_call("hotel.book", stay={**stay, "nights": 3}), gold, case.tools)
    case, _ = bfcl.convert_record(records["simple_7"], bfcl_answers())
    (gold,) = expected_calls(case.expected)
    assert call_matches(model_call("get_stock_price", company="Apple"), gold, case.tools)
    assert not call_matches(
        model_call("get_stock_price", company="AAPL", exchange="NASDAQ"), gold, case.tools
    )


def test_irrelevance_expects_no_call_and_needs_no_answer():
    records = {r["id"]: r for r in lines_of("bfcl_test.jsonl")}
    case, errors = bfcl.convert_record(records["irrelevance_0"], None)
    assert errors == [] and "tool_calls" not in case.expected and case.expected["content"]
    assert expected_calls(case.expected) == []
    # live_irrelevance keeps its whole single turn (user, assistant, user)
    case, _ = bfcl.convert_record(records["live_irrelevance_0-0-0"], {})
    assert [m["role"] for m in case.messages] == ["user", "assistant", "user"]


@pytest.mark.parametrize(
    ("bfcl_id", "field", "fragment"),
    [
        ("multi_turn_base_0", "function", "need BFCL's executable environment"),
        ("live_relevance_0-0-0", "id", "live_relevance records are not supported"),
        ("simple_8", "id", "no possible answer for 'simple_8'"),
        (
            "simple_9",
            'ground_truth[0]["math.pow"]',
            "'math.pow' is not one of the record's functions (answers file line",
        ),
        ("simple_10", "function[0].parameters.properties.precision.type", "'decimal' is not a type BFCL"),
    ],
)
def test_bfcl_lines_that_cannot_become_cases_say_why(bfcl_id, field, fragment):
    record = next(r for r in lines_of("bfcl_test.jsonl") if r["id"] == bfcl_id)
    case, errors = bfcl.convert_record(record, bfcl_answers())
    assert case is None
    assert any(e.field == field and fragment in e.message for e in errors), errors


def test_multi_turn_question_with_functions_is_refused_by_its_turns():
    record = {
        "id": "multi_turn_base_1",
        "question": [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]],
        "function": [{"name": "ls", "parameters": {"type": "dict", "properties": {}}}],
    }
    _, errors = bfcl.convert_record(record, {"multi_turn_base_1": (1, [["ls()"]])})
    assert ("question", "multi-turn BFCL records (2 turns) are not supported") == (
        errors[0].field,
        errors[0].message.split(":")[0],
    )


def test_answers_file_errors_carry_their_line():
    lines = [
        b'{"id": "simple_0", "ground_truth": [{"f": {"a": [1]}}]}',
        b"{broken",
        b'{"id": "simple_0", "ground_truth": []}',
        b'{"ground_truth": []}',
        b"",
        b'["x"]',
        b'{"id": "simple_7", "ground_truth": [{"f": {"a": ["nul \\u0000 here"]}}]}',
        b'{"id": "simple_8", "ground_truth": [{"f": {"a": [NaN]}}]}',
    ]
    answers, errors = bfcl.read_answers(lines)
    assert list(answers) == ["simple_0"]
    assert [(n, e.field) for n, e in errors] == [
        (2, ""),
        (3, "id"),
        (4, "id"),
        (6, ""),
        (7, "ground_truth[0].f.a[0]"),
        (8, ""),
    ]
    assert "repeats line 1" in errors[1][1].message
    assert "NUL" in errors[4][1].message and "NaN" in errors[5][1].message


def test_parse_line_maps_bfcl_fields_back_to_the_record():
    record = {
        "id": "simple_99",
        "question": [[{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}]],
        "function": [{"name": "f", "parameters": {"type": "dict", "properties": {"a": {"type": "integer"}}}}],
    }
    answers = {"simple_99": (4, [{"f": {"a": [1]}}])}
    _, errors = parse_line(record, [], "train", answers=answers)
    assert [e.field for e in errors] == ["question[0][1].role"]
    _, errors = parse_line(record, [], "train", dialect="openai")
    assert [(e.field, e.message) for e in errors] == [
        ("messages", "is required (this looks like a BFCL record: choose the BFCL format)")
    ]
    _, errors = parse_line({"messages": [{"role": "user", "content": "x"}]}, [], "train", dialect="bfcl")
    assert [e.field for e in errors] == ["id"]


def test_a_function_name_that_is_not_text_is_a_line_error_not_a_crash():
    from toolcalls import bfcl

    record = {
        "id": "simple_0",
        "question": [[{"role": "user", "content": "5 factorial?"}]],
        "function": [{"name": ["math.fact"], "parameters": {"type": "dict", "properties": {}}}],
    }
    answers = {"simple_0": (1, [{"math.fact": {"n": [5]}}])}
    case, errors = bfcl.convert_record(record, answers)
    assert case is None and errors
    assert any("not one of the record's functions" in e.message or "name" in e.field for e in errors)
