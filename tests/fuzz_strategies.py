"""Hostile-input generators and the properties they must satisfy, shared by tests/test_fuzz.py
(a few hundred examples, in the suite) and benchmarks/fuzz_run.py (tens of thousands).

Records start from a valid import line and are then mutated at random paths, so most examples
reach deep into validation instead of failing at the first check; raw outputs are built from the
tags and fragments the metrics parser reacts to.
"""

import base64
import copy
import json

import orjson
from hypothesis import strategies as st

from annotator.importers import decode_line, parse_line
from toolcalls.defects import DEFECTS
from toolcalls.match import expected_calls
from toolcalls.parse import parse_output
from toolcalls.score import HEADLINE_METRICS, score_case
from toolcalls.validate import FieldError

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "check_inventory",
            "description": "Stock for a SKU",
            "parameters": {"type": "object", "properties": {"sku": {"type": "string"}}, "required": ["sku"]},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "create_order",
            "parameters": {
                "type": "object",
                "properties": {"sku": {"type": "string"}, "quantity": {"type": "integer", "minimum": 1}},
                "required": ["sku"],
            },
        },
    },
]
TOOL_NAMES = {"check_inventory", "create_order"}
KEYS = [
    "role",
    "content",
    "tool_calls",
    "function",
    "name",
    "arguments",
    "id",
    "tool_call_id",
    "type",
    "parameters",
    "model",
    "raw",
    "message",
    "context_length",
    "generation",
    "split",
    "priority",
    "external_id",
    "metadata",
    "responses",
    "messages",
    "tools",
    "$ref",
    "properties",
    "required",
]
TOP_LEVEL = {"external_id", "id", "messages", "tools", "metadata", "split", "priority", "model", "responses"}
TRICKY = [
    "",
    " ",
    "\x00",
    "\u0000x",
    "\ufeff",
    "\u202e",
    "<script>alert(1)</script>",
    "'\"`",
    "\\",
    "\n",
    "train",
    "holdout",
    "eval",
    "assistant",
    "user",
    "tool",
    "system",
    "check_inventory",
    "A" * 300,
    "重复",
    "\U0001f600",
    "NaN",
    "-0",
    "1e400",
]

text = st.one_of(st.text(max_size=24), st.sampled_from(TRICKY))
clean_text = st.one_of(
    st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=24),
    st.sampled_from([t for t in TRICKY if "\x00" not in t]),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    text,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), inner, max_size=4),
    ),
    max_leaves=12,
)


def deep(depth: int, leaf=None):
    value = leaf if leaf is not None else {}
    for i in range(depth):
        value = [value] if i % 2 else {"a": value}
    return value


FRAGMENTS = [
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|im_start|>",
    "<｜end▁of▁sentence｜>",
    "\n",
    " ",
    "ok ",
    "yes yes yes ",
    '{"name": "check_inventory", "arguments": {"sku": "A-1"}}',
    '{"name": "create_order", "arguments": "{\\"sku\\": \\"A-1\\", \\"quantity\\": 2}"}',
    '{"name": "create_order", "arguments": {"sku": "A-1", "quantity": 2.0}}',
    '{"name": "unknown_tool", "arguments": {}}',
    '{"name": 7, "arguments": {}}',
    '{"name": ""}',
    '{"name": "check_inventory", "arguments": NaN}',
    '{"name": "check_inventory", "arguments": "[1]"}',
    "[" * 3000,
    "{" * 50,
    '{"a": ' * 2000,
    "\ud800",
    "\udfff",
    "\x00",
    "重复重复重复",
    "I will check that for you. ",
]
raw_outputs = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=12)), max_size=14).map("".join)
# what an import line can carry (UTF-8 has no lone surrogates)
storable_outputs = st.lists(
    st.one_of(st.sampled_from([f for f in FRAGMENTS if f.isprintable() or f == "\n"]), clean_text),
    max_size=14,
).map("".join)


@st.composite
def valid_records(draw):
    """A line the importer accepts, in any of its shapes (raw or message responses, implied response)."""
    n = draw(st.integers(0, 1000))
    messages = [{"role": "user", "content": draw(clean_text) or f"Is A-{n} in stock?"}]
    if draw(st.booleans()):
        messages.insert(0, {"role": "system", "content": "You are a sales assistant."})
    if draw(st.booleans()):
        messages += [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "check_inventory", "arguments": json.dumps({"sku": f"A-{n}"})},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": draw(clean_text) or "12 in stock"},
        ]
    record = {
        "external_id": f"fz-{n}-{draw(st.integers(0, 10**6))}",
        "messages": messages,
        "tools": copy.deepcopy(TOOLS),
    }
    shape = draw(st.sampled_from(["raw", "message", "implied", "none"]))
    if shape == "raw":
        record["responses"] = [
            {"model": draw(st.sampled_from(["agent-v1", "agent-v2"])), "raw": draw(storable_outputs)}
        ]
    elif shape == "message":
        record["responses"] = [
            {
                "model": "agent-v1",
                "message": {"role": "assistant", "content": draw(clean_text).strip() or "Let me look."},
            }
        ]
    elif shape == "implied":
        record["messages"].append(
            {"role": "assistant", "content": draw(clean_text).strip() or "It is in stock."}
        )
        record["model"] = "agent-v3"
    for key in draw(st.lists(st.sampled_from(["split", "priority", "metadata"]), unique=True, max_size=3)):
        record[key] = {
            "split": draw(st.sampled_from(["train", "eval", "holdout"])),
            "priority": draw(st.integers(-5, 5)),
            "metadata": {"source": draw(clean_text)},
        }[key]
    return record


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


def _parent(record, path):
    node = record
    for step in path[:-1]:
        node = node[step]
    return node


@st.composite
def mutated_records(draw):
    """A valid record with one to three random edits: replace a value, drop a key, add a key, nest deep."""
    record = copy.deepcopy(draw(valid_records()))  # edited in place below
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(record) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _parent(record, path)
        action = draw(st.sampled_from(["replace", "replace", "drop", "add", "deep"]))
        if action == "drop":
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(KEYS))] = copy.deepcopy(draw(json_values))
        elif action == "deep":
            parent[path[-1]] = deep(draw(st.integers(90, 300)), draw(scalars))
        else:
            parent[path[-1]] = copy.deepcopy(draw(json_values))
    return record


garbage_lines = st.one_of(
    st.binary(max_size=40),
    st.sampled_from(
        [
            b"{",
            b"[1, 2]",
            b'"just a string"',
            b"null",
            b"{}",
            b'{"messages": NaN}',
            b"\xff\xfe{}",
            b'{"messages": [{"role": "user", "content": "\\ud800"}]}',
            b"9" * 40,
            b"[" * 2000 + b"]" * 2000,
            b'{"a": 1, "a": 2}',
            b"   ",
            b"\t",
        ]
    ),
)


def encode_record(record) -> bytes:
    return json.dumps(record).encode()  # a lone surrogate becomes "\\ud800", which the importer must reject


# ----------------------------------------------------------------------------- properties


def check_line(raw: bytes, max_bytes: int = 1_000_000):
    """decode_line + parse_line on one line: never raises; errors are FieldErrors with a field that names
    the part of the line at fault; a line either parses or has at least one error, never both."""
    record, err = decode_line(raw, max_bytes)
    if err is not None:
        assert record is None and isinstance(err, FieldError) and err.message
        return None, [err]
    parsed, errors = parse_line(record, TOOLS, "train")
    assert (parsed is None) == bool(errors), (parsed, errors)
    for e in errors:
        assert (
            isinstance(e, FieldError)
            and isinstance(e.field, str)
            and isinstance(e.message, str)
            and e.message
        )
        head = e.field.split(".")[0].split("[")[0]
        assert e.field == "" or head in TOP_LEVEL or head in (record if isinstance(record, dict) else {}), e
    if parsed is not None:
        assert parsed.messages and parsed.external_id and len(parsed.external_id) <= 255
        assert -(2**31) <= parsed.priority < 2**31
        for r in parsed.responses:
            assert r["message"]["role"] == "assistant" and 0 < len(r["model"]) <= 200
            orjson.dumps(r["message"])  # storable
        orjson.dumps([parsed.messages, parsed.tools, parsed.metadata])
    return parsed, errors


def check_parse_output(output: str, tool_names):
    p = parse_output(output, tool_names)
    assert isinstance(p.reply_text, str) and isinstance(p.reasoning, str)
    assert p.malformed == bool(p.malformed_reasons)
    assert p.n_call_blocks >= len(p.calls)
    for c in p.calls:
        assert isinstance(c.name, str) and c.name and isinstance(c.arguments, dict)
        assert tool_names is None or c.name in tool_names
    return p


def check_score_case(expected, output: str, tools, stopped):
    try:
        expected_calls(expected)
        gold_ok = True
    except ValueError:
        gold_ok = False
    try:
        s = score_case(expected, output, tools, stopped)
    except ValueError:
        assert not gold_ok, "score_case raised ValueError on a well-formed gold message"
        return None
    assert gold_ok, "score_case accepted a gold message expected_calls rejects"
    for m in HEADLINE_METRICS:
        assert s[m] in (0, 1, None), (m, s[m])
    assert s["tool_call_accuracy"] in (0, 1) and s["response_quality"] in (0, 1)
    assert set(s["defects"]) == set(DEFECTS) and all(v in (0, 1) for v in s["defects"].values())
    assert s["response_quality"] == int(not any(s["defects"].values()))
    assert 0 <= s["calls_tp"] <= min(s["calls_predicted"], s["calls_expected"])
    assert (s["tool_name_accuracy"] is None) == (not s["made_call"])
    json.dumps(s)  # stored as JSON
    return s


gold_messages = st.one_of(
    st.none(),
    st.just({"role": "assistant", "content": "It is in stock."}),
    st.builds(
        lambda sku, q: {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "type": "function",
                    "function": {
                        "name": "create_order",
                        "arguments": json.dumps({"sku": sku, "quantity": q}),
                    },
                }
            ],
        },
        text,
        st.integers(-2, 5),
    ),
    st.builds(
        lambda sku: {
            "role": "assistant",
            "tool_calls": [
                {"function": {"name": "check_inventory", "arguments": {"sku": sku}}, "optional": ["sku"]}
            ],
        },
        text,
    ),
    json_values,
)
tool_lists = st.one_of(st.none(), st.just(TOOLS), st.lists(json_values, max_size=3))
tool_name_sets = st.one_of(st.none(), st.just(TOOL_NAMES), st.sets(text, max_size=3))


# ------------------------------------------------------------------ hostile API input (test_fuzz.py)

# JSON text no serializer should have to survive: the parser or a field must refuse it with a 4xx
HOSTILE_JSON = [
    "1e999",
    "-1e999",
    "NaN",
    "Infinity",
    "-Infinity",
    "99999999999999999999",
    "-99999999999999999999",
    "18446744073709551616",
    "1e20",
    "1.5",
    "-1",
    "0",
    "true",
    "null",
    "[]",
    "{}",
    '"\\ud800"',
    '"\\udfff x"',
    '"\\u0000"',
    '"99999999999999999999"',
    '"1e999"',
    '"abc"',
    '""',
    "[1e999]",
    '{"a": NaN}',
    "[null]",
    "[[1]]",
    '{"role": "assistant", "content": "\\ud800"}',
    '"' + "x" * 5000 + '"',
]
hostile_json_values = st.one_of(
    st.sampled_from(HOSTILE_JSON),
    json_values.map(json.dumps),
    st.integers(95, 3000).map(lambda n: "[" * n + "]" * n),
    st.integers(95, 3000).map(lambda n: '{"a": ' * n + "1" + "}" * n),
)
hostile_whole_bodies = st.one_of(
    st.sampled_from(
        ["", "[", "{", "[]", '"x"', "1e999", "NaN", "[" * 100_000 + "]" * 100_000, "\ufeff{}", "{,}"]
    ),
    st.text(max_size=20),
)


@st.composite
def hostile_bodies(draw, base: dict, extra_keys=()) -> str:
    """JSON text for a route: its valid payload `base` with one to three fields (or made-up keys) replaced
    by hostile values, or now and then no payload at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(hostile_whole_bodies)
    fields = {key: json.dumps(value) for key, value in base.items()}
    for key in draw(st.lists(st.sampled_from([*base, *extra_keys]), min_size=1, max_size=3, unique=True)):
        fields[key] = draw(hostile_json_values)
    return "{" + ", ".join(f"{json.dumps(key)}: {value}" for key, value in fields.items()) + "}"


# query values for list filters (a test client cannot send a lone surrogate in a URL)
hostile_query_values = st.one_of(
    st.sampled_from(
        [
            "99999999999999999999",
            "-99999999999999999999",
            "1e999",
            "NaN",
            "inf",
            "-1",
            "0",
            "1.5",
            "",
            " ",
            "abc",
            "2024-13-45",
            "2024-01-01T00:00:00+17:34",
            "1,2",
            "true",
            "None",
            "\x00",
            "9" * 400,
            "%ff",
            "[1]",
        ]
    ),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=12),
)
hostile_cursors = st.one_of(
    st.builds(
        lambda p, o, r: base64.b64encode(f"p={p}&o={o}&r={r}".encode("utf-8", "surrogatepass")).decode(),
        st.one_of(hostile_query_values, st.text(max_size=8)),
        st.sampled_from(["0", "1", "-1", "9" * 30, "x"]),
        st.sampled_from(["0", "1", "x"]),
    ),
    st.binary(max_size=30).map(lambda b: base64.b64encode(b).decode()),
    hostile_query_values,
)
