"""The score_outputs command: JSONL in, one JSON line per case plus a summary out.

Tested through score_jsonl, the plain function behind the command, and through the command
itself for what it writes and its exit status; no database is needed.
"""

import io
import json

from django.core.management import CommandError, call_command

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


# ------------------------------------------------------------------ hostile lines, one error each

PARALLEL_997 = {
    "tools": TOOLS,
    "expected": {"role": "assistant", "tool_calls": [EXPECTED_CALL["tool_calls"][0]] * 997},
    "output": "\n".join([CALL] * 997),
}


def hostile_lines():
    """(line bytes, what its error says, or None when the line must be scored)."""
    return [
        (line().encode(), None),
        (b"[" * 5000 + b"]" * 5000, "nested more than 100 levels deep"),
        (line(extra=json.loads("[" * 150 + "]" * 150)).encode(), "nested more than 100 levels deep"),
        (line(turn_depth=1).encode()[:-1] + b', "n": ' + b"7" * 5000 + b"}", "too many digits"),
        (line().encode()[:-1] + b', "x": 1e999}', "number 1e999 is too large"),
        (line(output="caf\u00e9").encode().replace(b"caf\\u00e9", b"caf\xe9"), "not valid UTF-8"),
        (b'{"tools": [], "expected": {}, "output": "\xff\xfe"}', "not valid UTF-8"),
        (line(output="x", categories=["\ud800"]).encode(), None),  # scored: escaped when written
        (json.dumps(PARALLEL_997).encode(), None),
        (
            line(expected={"tool_calls": [{"function": {"name": "f", "arguments": "[" * 3000}}]}).encode(),
            "JSON",
        ),
        (line().encode()[:-1] + b', "n": NaN}', "NaN is not JSON"),
        (line(expected=NO_CALL, output="Fine, it is in stock now.").encode(), None),
    ]


def test_every_hostile_line_is_one_error_naming_its_line_and_the_rest_are_scored():
    cases = hostile_lines()
    data = io.BytesIO(b"\n".join(raw for raw, _ in cases) + b"\n")
    rows, summary, errors = score_jsonl(data)
    bad = {n: want for n, (_, want) in enumerate(cases, 1) if want}
    assert [e["line"] for e in errors] == sorted(bad)  # one error per bad line, in order
    for e in errors:
        assert bad[e["line"]] in e["error"], e
    assert [r["line"] for r in rows] == [n for n, (_, want) in enumerate(cases, 1) if not want]
    parallel = next(r for r in rows if r["calls_expected"] == 997)
    assert parallel["tool_call_accuracy"] == 1 and parallel["calls_tp"] == 997
    assert summary["n"] == len(rows) and "\ud800" in summary["by_category"]


def test_the_same_lines_as_text_lines_give_the_same_errors():
    cases = [raw for raw, _ in hostile_lines()]
    from_bytes = score_jsonl(io.BytesIO(b"\n".join(cases)))[2]
    from_list = score_jsonl(cases)[2]
    assert from_bytes == from_list


class CountingReader(io.BytesIO):
    """A binary file that remembers the largest piece it handed out."""

    largest = 0

    def readline(self, size=-1):
        chunk = super().readline(size)
        self.largest = max(self.largest, len(chunk))
        return chunk


def test_oversize_lines_are_reported_and_skipped_without_being_read_whole():
    big = line(output="x" * 5_000_000)
    data = CountingReader(("\n".join([line(), big, line()]) + "\n").encode())
    rows, _, errors = score_jsonl(data, max_line_bytes=10_000)
    assert [r["line"] for r in rows] == [1, 3]
    assert errors == [{"line": 2, "error": f"line is {len(big) + 1:,} bytes, over the limit of 10,000"}]
    assert data.largest <= 1 << 20  # read past in pieces, never held whole


def run_command(tmp_path, lines, *options):
    path = tmp_path / "cases.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("score_outputs", str(path), *options, stdout=out, stderr=err)
        status = 0
    except CommandError as exc:
        status, err = 1, io.StringIO(err.getvalue() + str(exc))
    return status, out.getvalue().splitlines(), err.getvalue()


def test_command_writes_lone_surrogates_escaped_and_counts_lines(tmp_path):
    status, out, err = run_command(
        tmp_path, [line(categories=["caf\u00e9", "\ud800"]).encode(), b"{oops", b"\xff"], "--summary-only"
    )
    assert status == 0
    summary = json.loads(out[-1])
    assert summary["lines_scored"] == 1 and summary["lines_rejected"] == 2
    assert {"caf\u00e9", "\ud800"} <= set(summary["by_category"])
    assert "café" in out[-1]  # UTF-8 as is, only the surrogate escaped
    assert [json.loads(e)["line"] for e in err.splitlines()] == [2, 3]


def test_command_exit_status(tmp_path):
    assert run_command(tmp_path, [line().encode(), b"{oops"])[0] == 0
    assert run_command(tmp_path, [line().encode(), b"{oops"], "--strict")[0] == 1
    status, out, err = run_command(tmp_path, [b"{oops", b"[1]"])
    assert status == 1 and "no line could be scored" in err
    assert json.loads(out[-1])["lines_rejected"] == 2
    status, _, err = run_command(tmp_path, [line(output="y" * 3000).encode()], "--max-line-bytes", "1000")
    assert status == 1 and "over the limit of 1,000" in err
    assert run_command(tmp_path, [line().encode()], "--max-line-bytes", "0")[0] == 1


def test_stdin_is_read_line_by_line(monkeypatch):
    raw = b"\n".join([line().encode(), b"\xff", line().encode()]) + b"\n"
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8"))
    out, err = io.StringIO(), io.StringIO()
    call_command("score_outputs", "-", "--summary-only", stdout=out, stderr=err)
    assert json.loads(out.getvalue())["lines_scored"] == 2
    assert json.loads(err.getvalue())["line"] == 2
