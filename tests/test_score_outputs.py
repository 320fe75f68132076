"""The score_outputs command: JSONL in, one JSON line per case plus a summary out.

Tested through score_jsonl, the plain function behind the command, so no database
or Django settings are needed.
"""

import json

from evaluation.management.commands.score_outputs import score_jsonl
from toolcalls.defects import DEFECTS
from toolcalls.score import HEADLINE_METRICS

TOOLS = [{"type": "function", "function": {"name": "check_inventory", "parameters": {}}}]
CALL = '<tool_call>\n{"name": "check_inventory", "arguments": {"sku": "A-1"}}\n</tool_call>'
EXPECTED_CALL = {
    "role": "assistant",
    "content": "",
    "tool_calls": [
        {
            "id": "c1",
            "type": "function",
            "function": {"name": "check_inventory", "arguments": '{"sku": "A-1"}'},
        }
    ],
}
NO_CALL = {"role": "assistant", "content": "It is in stock."}


def line(**case):
    base = {"tools": TOOLS, "expected": EXPECTED_CALL, "output": CALL}
    base.update(case)
    return json.dumps(base)


def test_rows_carry_every_metric_and_defect_by_name():
    rows, summary, errors = score_jsonl([line(), line(output="Sorry, I cannot check that now.")])
    assert errors == []
    assert [r["line"] for r in rows] == [1, 2]
    for r in rows:
        assert set(HEADLINE_METRICS) | set(DEFECTS) <= set(r)
    assert rows[0]["tool_call_accuracy"] == 1 and rows[0]["tool_name_accuracy"] == 1
    assert rows[1]["tool_call_accuracy"] == 0 and rows[1]["tool_name_accuracy"] is None
    assert rows[1]["missed_call"] == 1
    assert summary["n"] == 2 and summary["tool_call_accuracy"]["value"] == 0.5
    json.dumps(rows), json.dumps(summary)


def test_optional_fields_feed_breakdowns_and_defects():
    rows, summary, errors = score_jsonl(
        [
            line(categories=["wrong_args"], turn_depth=2, stopped_at_limit=True),
            line(expected=NO_CALL, output="It is in stock, five pairs left.", turn_depth=1),
        ]
    )
    assert errors == []
    assert rows[0]["end_repetition"] == 1 and rows[0]["response_quality"] == 0
    assert rows[1]["response_quality"] == 1 and rows[1]["false_call"] == 0
    assert set(summary["by_category"]) == {"wrong_args", "(uncategorized)"}
    assert set(summary["by_turn_depth"]) == {1, 2}


def test_gold_optional_and_acceptable_beside_function():
    exp = json.loads(json.dumps(EXPECTED_CALL))
    exp["tool_calls"][0]["acceptable"] = {"sku": ["a-1"]}
    out = '<tool_call>{"name": "check_inventory", "arguments": {"sku": "a-1"}}</tool_call>'
    rows, _, errors = score_jsonl([line(expected=exp, output=out)])
    assert errors == [] and rows[0]["tool_call_accuracy"] == 1


def test_bad_lines_are_reported_and_skipped():
    lines = [
        line(),
        "{not json",
        "",  # blank lines are skipped silently
        json.dumps({"tools": TOOLS, "output": CALL}),
        line(output=5),
        line(tools="check_inventory"),
        line(expected={"tool_calls": [{"function": {"name": "f", "arguments": "{bad"}}]}),
        line(turn_depth="2"),
        line(stopped_at_limit="yes"),
        "[1, 2]",
        line(expected=NO_CALL, output="Fine, it is in stock now."),
    ]
    rows, summary, errors = score_jsonl(lines)
    assert [r["line"] for r in rows] == [1, 11]
    assert [e["line"] for e in errors] == [2, 4, 5, 6, 7, 8, 9, 10]
    assert all(e["error"] for e in errors)
    assert "missing 'expected'" in errors[1]["error"]
    assert summary["n"] == 2


def test_empty_input():
    rows, summary, errors = score_jsonl([])
    assert rows == [] and errors == []
    assert summary["n"] == 0 and summary["tool_call_accuracy"]["value"] is None
