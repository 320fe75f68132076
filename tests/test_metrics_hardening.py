"""metrics.md rules that hostile or unusual cases reach: dotted optional / acceptable paths,
cases without tools, end_repetition on parallel calls, and matching at scale and at depth.

Plain functions over plain data: no database.
"""

import json
import random
import time

import pytest

from toolcalls import match
from toolcalls.match import call_matches, expected_calls, match_calls, values_equal
from toolcalls.parse import ToolCall
from toolcalls.score import score_case

from .test_metrics import block, gold, only_defect

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}
SHIP = {
    "type": "function",
    "function": {
        "name": "ship",
        "parameters": {
            "type": "object",
            "properties": {
                "to": {
                    "type": "object",
                    "properties": {
                        "city": {"type": "string"},
                        "address": {
                            "type": "object",
                            "properties": {"street": {"type": "string"}, "zip": {"type": "string"}},
                        },
                    },
                },
                "weight": {"type": "number"},
            },
        },
    },
}
TOOLS = [WEATHER, SHIP]


def ship_gold(args, **rules):
    return gold(("ship", args, rules))


def ship_out(args):
    return block("ship", args)


def right(expected, args, tools=TOOLS):
    return score_case(expected, ship_out(args), tools)["tool_call_accuracy"] == 1


# ------------------------------------------------------------- dotted optional / acceptable

ADDRESS = {"street": "Main St 1", "zip": "10115"}
WANT = {"to": {"city": "Berlin", "address": ADDRESS}, "weight": 2}


def with_zip(value=..., street="Main St 1", city="Berlin"):
    address = {"street": street}
    if value is not ...:
        address["zip"] = value
    return {"to": {"city": city, "address": address}, "weight": 2}


def test_optional_path_at_depth_three_may_be_absent_and_must_be_right_when_present():
    g = ship_gold(WANT, optional=["to.address.zip"])
    assert right(g, with_zip("10115"))  # present and right
    assert right(g, with_zip())  # absent
    assert not right(g, with_zip("99999"))  # present and wrong
    assert not right(g, with_zip("10115", street="Other St 2"))  # a sibling is still exact
    assert not right(
        g, {"to": {"city": "Berlin", "address": {"zip": "10115"}}, "weight": 2}
    )  # missing sibling


def test_acceptable_path_at_depth_two_and_three():
    g = ship_gold(WANT, acceptable={"to.address.zip": ["10117"], "to.city": ["Berlin, DE"]})
    assert right(g, with_zip("10115"))  # the expected value
    assert right(g, with_zip("10117"))  # an alternative
    assert right(g, with_zip("10117", city="Berlin, DE"))  # alternatives at two depths at once
    assert not right(g, with_zip("10118"))
    assert not right(g, with_zip())  # acceptable, not optional: must be present


def test_optional_and_acceptable_path_together():
    g = ship_gold(WANT, optional=["to.address.zip"], acceptable={"to.address.zip": ["10117"]})
    assert right(g, with_zip()) and right(g, with_zip("10117")) and right(g, with_zip("10115"))
    assert not right(g, with_zip("10118"))


def test_optional_path_without_expected_value_accepts_any_value_valid_against_the_schema():
    want = {"to": {"city": "Berlin", "address": {"street": "Main St 1"}}, "weight": 2}
    g = ship_gold(want, optional=["to.address.zip"])
    assert right(g, with_zip()) and right(g, with_zip("anything"))
    assert not right(g, with_zip(10115))  # the schema says zip is a string
    assert right(g, with_zip(10115), tools=None)  # no schema at hand: any value
    assert right(g, with_zip(10115), tools=[])


def test_top_level_optional_without_expected_value_checks_the_schema():
    g = gold(("get_weather", {"city": "Paris"}, {"optional": ["unit"]}))
    assert (
        score_case(g, block("get_weather", {"city": "Paris", "unit": "f"}), TOOLS)["tool_call_accuracy"] == 1
    )
    assert (
        score_case(g, block("get_weather", {"city": "Paris", "unit": "k"}), TOOLS)["tool_call_accuracy"] == 0
    )
    assert score_case(g, block("get_weather", {"city": "Paris"}), TOOLS)["tool_call_accuracy"] == 1


def test_an_unusable_schema_accepts_the_optional_value():
    broken = {"type": "function", "function": {"name": "ship", "parameters": {"properties": 3}}}
    want = {"to": {"city": "Berlin", "address": {"street": "Main St 1"}}, "weight": 2}
    g = ship_gold(want, optional=["to.address.zip"])
    assert right(g, with_zip(5), tools=[broken])


def test_a_key_with_a_dot_in_its_name_is_a_top_level_key_first():
    g = gold(("f", {"a.b": 1, "a": {"b": 2}}, {"optional": ["a.b"]}))
    tools = [{"name": "f"}]
    assert score_case(g, block("f", {"a": {"b": 2}}), tools)["tool_call_accuracy"] == 1  # "a.b" absent
    assert score_case(g, block("f", {"a.b": 1, "a": {"b": 2}}), tools)["tool_call_accuracy"] == 1
    assert (
        score_case(g, block("f", {"a.b": 1, "a": {}}), tools)["tool_call_accuracy"] == 0
    )  # a.b is not nested
    g = gold(("f", {"x": 1}, {"acceptable": {"v.w": [1, 2]}, "optional": ["v.w"]}))
    assert score_case(g, block("f", {"x": 1, "v.w": 2}), tools)["tool_call_accuracy"] == 1  # top-level key
    assert score_case(g, block("f", {"x": 1, "v": {"w": 2}}), tools)["tool_call_accuracy"] == 1  # or a path
    assert score_case(g, block("f", {"x": 1, "v": {"w": 3}}), tools)["tool_call_accuracy"] == 0


def test_an_object_named_only_by_a_path():
    g = gold(("f", {"x": 1}, {"acceptable": {"opts.mode": ["fast", "slow"]}}))
    tools = [{"name": "f"}]
    assert score_case(g, block("f", {"x": 1, "opts": {"mode": "slow"}}), tools)["tool_call_accuracy"] == 1
    assert score_case(g, block("f", {"x": 1}), tools)["tool_call_accuracy"] == 0  # required: not optional
    assert (
        score_case(g, block("f", {"x": 1, "opts": {"mode": "slow", "y": 1}}), tools)["tool_call_accuracy"]
        == 0
    )
    g = gold(("f", {"x": 1}, {"acceptable": {"opts.mode": ["fast"]}, "optional": ["opts"]}))
    assert score_case(g, block("f", {"x": 1}), tools)["tool_call_accuracy"] == 1  # optional above it


# ----------------------------------------------------------------- no tools or an empty list


@pytest.mark.parametrize("tools", [None, []])
def test_without_tools_names_are_left_to_the_expected_calls(tools):
    g = gold(("lookup", {"q": "shoes"}), ("lookup", {"q": "bags"}))
    out = block("lookup", {"q": "bags"}) + "\n" + block("lookup", {"q": "shoes"})
    s = score_case(g, out, tools)
    assert s["tool_call_accuracy"] == 1 and s["response_quality"] == 1
    s = score_case(g, block("invented", {"q": "bags"}), tools)
    assert s["defects"]["malformed_call"] == 0 and s["tool_name_accuracy"] == 0
    s = score_case({"role": "assistant", "content": "Hello there, how can I help?"}, out, tools)
    assert s["false_call"] == 1 and s["defects"]["malformed_call"] == 0


def test_a_tools_list_with_tools_still_checks_names():
    s = score_case(gold(("lookup", {"q": "shoes"})), block("lookup", {"q": "shoes"}), TOOLS)
    assert s["defects"]["malformed_call"] == 1 and s["tool_call_accuracy"] == 0


# ------------------------------------------------------------------------- end_repetition


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
@pytest.mark.parametrize("sep", ["\n", "", "\n\n"])
def test_correct_parallel_calls_to_one_tool_are_not_repetition(n, sep):
    cities = ["San Francisco, CA", "New York, NY", "Chicago, IL", "London", "Paris", "Berlin"][:n]
    calls = [("get_weather", {"city": c, "unit": "c"}) for c in cities]
    out = sep.join(block(*c) for c in reversed(calls))
    for text in (out, "<think>\nSeveral cities.\n</think>\n\n" + out + "<|im_end|>"):
        s = score_case(gold(*calls), text, TOOLS)
        assert s["tool_call_accuracy"] == 1 and s["response_quality"] == 1, s["defects"]


def test_the_same_call_three_times_in_a_row_is_repetition_twice_is_not():
    call = block("get_weather", {"city": "Paris", "unit": "c"})
    twice = gold(*[("get_weather", {"city": "Paris", "unit": "c"})] * 2)
    assert score_case(twice, "\n".join([call] * 2), TOOLS)["response_quality"] == 1
    s = score_case(twice, "\n".join([call] * 3), TOOLS)
    assert only_defect(s, "end_repetition")
    # JSON-equal arguments in another key order and spacing are the same call
    same = '<tool_call>{"arguments": {"unit": "c", "city": " Paris"}, "name": "get_weather"}</tool_call>'
    assert score_case(twice, "\n".join([call, same, call]), TOOLS)["defects"]["end_repetition"] == 1


def test_three_calls_not_in_a_row_are_not_repetition():
    a = block("get_weather", {"city": "Paris"})
    b = block("get_weather", {"city": "Rome"})
    g = gold(("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"}))
    assert score_case(g, "\n".join([a, a, b, a]), TOOLS)["defects"]["end_repetition"] == 0


def test_reply_text_tail_repetition_beside_calls_is_repetition():
    call = block("get_weather", {"city": "Paris"})
    out = "Checking the weather now now now\n" + call
    s = score_case(gold(("get_weather", {"city": "Paris"})), out, TOOLS)
    assert s["tool_call_accuracy"] == 1 and only_defect(s, "end_repetition")


def test_long_repetitive_reply_text_is_repetition_but_not_its_call_blocks():
    body = " ".join(f"the item number {i % 7} is blue and in stock" for i in range(12)) + " - let me check."
    assert len(body) >= 200
    out = body + "\n" + block("get_weather", {"city": "Paris"})
    assert score_case(gold(("get_weather", {"city": "Paris"})), out, TOOLS)["defects"]["end_repetition"] == 1
    short = body[:150]
    out = (
        short + "\n" + "\n".join(block("get_weather", {"city": c}) for c in ("Paris", "Rome", "Oslo", "Bern"))
    )
    g = gold(*[("get_weather", {"city": c}) for c in ("Paris", "Rome", "Oslo", "Bern")])
    assert score_case(g, out, TOOLS)["defects"]["end_repetition"] == 0  # blocks do not count toward 200


def test_malformed_blocks_stay_in_the_reply_text():
    bad = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"</tool_call>'
    s = score_case(gold(("get_weather", {"city": "Paris"})), "\n".join([bad] * 6), TOOLS)
    assert s["defects"]["malformed_call"] == 1 and s["defects"]["end_repetition"] == 1


# ------------------------------------------------------------------- matching at scale / depth


def test_997_identical_calls_match_one_to_one():
    args = {"sku": "A-1", "qty": 2}
    g = {
        "role": "assistant",
        "tool_calls": [{"function": {"name": "f", "arguments": json.dumps(args)}}] * 997,
    }
    out = "\n".join(['<tool_call>{"name": "f", "arguments": {"qty": 2.0, "sku": "A-1"}}</tool_call>'] * 997)
    started = time.perf_counter()
    s = score_case(g, out, [{"name": "f"}])
    elapsed = time.perf_counter() - started
    assert s["calls_tp"] == 997 and s["tool_call_accuracy"] == 1 and s["tool_name_accuracy"] == 1
    assert s["defects"]["end_repetition"] == 1  # the same call 997 times in a row
    s = score_case(g, "\n".join(out.split("\n")[:996]), [{"name": "f"}])
    assert s["calls_tp"] == 996 and s["tool_call_accuracy"] == 0
    assert elapsed < 30  # a guard against a hang, not a timing test


def test_a_thousand_distinct_calls_in_any_order():
    expected = expected_calls(
        {"tool_calls": [{"function": {"name": "f", "arguments": json.dumps({"n": i})}} for i in range(1000)]}
    )
    calls = [ToolCall("f", {"n": float(i)}) for i in reversed(range(1000))]
    assert match_calls(calls, expected) == 1000
    calls[0] = ToolCall("f", {"n": "999"})  # a string is not a number
    assert match_calls(calls, expected) == 999


def _largest_matching(adj):
    """Brute force over every assignment (small inputs only)."""
    best = 0

    def grow(i, used, k):
        nonlocal best
        if k + len(adj) - i <= best:
            return
        if i == len(adj):
            best = k
            return
        for j in adj[i]:
            if j not in used:
                grow(i + 1, used | {j}, k + 1)
        grow(i + 1, used, k)

    grow(0, frozenset(), 0)
    return best


def _reference_matching(calls, expected):
    """Every pair compared, then the largest matching by brute force."""
    return _largest_matching([[j for j, e in enumerate(expected) if call_matches(c, e)] for c in calls])


def test_grouped_matching_equals_pairwise_matching():
    """Above the grouping threshold, match_calls must equal the plain definition."""
    rng = random.Random(3)
    values = [1, 1.0, " a", "a", True, None, [1], {"k": 1}]
    for _ in range(150):
        n_calls, n_exp = rng.randint(9, 11), rng.randint(8, 10)
        assert n_calls * n_exp > match._GROUP_ABOVE
        calls = [ToolCall(rng.choice("fg"), {"x": rng.choice(values)}) for _ in range(n_calls)]
        expected = []
        for _ in range(n_exp):
            e = {
                "name": rng.choice("fg"),
                "arguments": {"x": rng.choice(values)},
                "optional": [],
                "acceptable": {},
            }
            roll = rng.random()
            if roll < 0.2:
                e["optional"] = ["x"]
            elif roll < 0.4:
                e["acceptable"] = {"x": [rng.choice(values)]}
            expected.append(e)
        assert match_calls(calls, expected) == _reference_matching(calls, expected)


def test_capacitated_matching_equals_brute_force():
    rng = random.Random(5)
    for _ in range(400):
        n_left, n_right = rng.randint(1, 5), rng.randint(1, 5)
        left = [rng.randint(1, 2) for _ in range(n_left)]
        right = [rng.randint(1, 2) for _ in range(n_right)]
        adj = [[j for j in range(n_right) if rng.random() < 0.4] for _ in range(n_left)]
        calls = [ToolCall("f", {"i": i}) for i in range(n_left) for _ in range(left[i])]
        wanted = [(j, k) for j in range(n_right) for k in range(right[j])]
        exp = [{"name": "f", "arguments": {}, "optional": [], "acceptable": {}} for _ in wanted]
        expanded = [[q for q, (j, _) in enumerate(wanted) if j in adj[c.arguments["i"]]] for c in calls]
        best = _largest_matching(expanded)
        assert match._max_matching(adj, left, right) == best, (adj, left, right)
        assert match._max_flow(adj, left, right) == best
        assert len(exp) == sum(right)


def test_deeply_nested_values_compare_without_recursion():
    def nest(depth, leaf):
        v = leaf
        for i in range(depth):
            v = [v] if i % 2 else {"k": v}
        return v

    a, b = nest(30_000, " x"), nest(30_000, "x")
    assert values_equal(a, b) and not values_equal(a, nest(30_000, "y"))
    calls = [ToolCall("f", {"v": nest(2000, i)}) for i in range(9)]
    expected = [
        {"name": "f", "arguments": {"v": nest(2000, i)}, "optional": [], "acceptable": {}} for i in range(9)
    ]
    assert match_calls(calls, expected) == 9  # too deep to normalise or group: compared pairwise
    objects = {"k": 1}
    for _ in range(3000):
        objects = {"k": objects}
    rules = {"name": "f", "arguments": {"v": objects}, "optional": ["v" + ".k" * 3000], "acceptable": {}}
    assert call_matches(ToolCall("f", {"v": objects}), rules) in (True, False)  # never raises
    long_path = {"name": "f", "arguments": {"v": 1}, "optional": ["v" + ".k" * 100_000], "acceptable": {}}
    assert call_matches(ToolCall("f", {"v": 1}), long_path)  # a long rule path costs its length, once


def test_hostile_nesting_in_outputs_and_gold_never_raises_recursion_error():
    deep = "[" * 50_000 + "]" * 50_000
    s = score_case(
        gold(("get_weather", {"city": "Paris"})),
        f'<tool_call>{{"name": "get_weather", "arguments": {{"v": {deep}}}}}</tool_call>',
        TOOLS,
    )
    assert s["defects"]["malformed_call"] == 1
    hostile_gold = {"tool_calls": [{"function": {"name": "get_weather", "arguments": '{"v": ' + deep + "}"}}]}
    with pytest.raises(ValueError, match="nested too deeply"):
        score_case(hostile_gold, "hi", TOOLS)
