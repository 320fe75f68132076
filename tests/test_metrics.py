"""Unit tests for the toolcalls package (parse, match, defects, score) — one test per rule of metrics.md.

Plain functions over plain data: no database, no Django settings.
"""

import json
import math

import pytest

from toolcalls import defects
from toolcalls.defects import DEFECTS
from toolcalls.match import call_matches, expected_calls, match_calls, values_equal
from toolcalls.parse import ToolCall, parse_output, tool_names_of
from toolcalls.score import score_case, standard_error, summarize

TOOLS = [
    {"type": "function", "function": {"name": "search_products", "parameters": {}}},
    {"type": "function", "function": {"name": "check_inventory", "parameters": {}}},
    {"type": "function", "function": {"name": "place_order", "parameters": {}}},
]
NAMES = {"search_products", "check_inventory", "place_order"}
REPLY = "The blue running shoes are in stock in size 42, would you like to order them?"


def block(name, arguments, raw_args=False):
    args = arguments if raw_args else json.dumps(arguments)
    return f'<tool_call>\n{{"name": "{name}", "arguments": {args}}}\n</tool_call>'


def gold(*calls, **extra):
    """A gold assistant message; calls are (name, args) or (name, args, {extra})."""
    tool_calls = []
    for i, c in enumerate(calls):
        tc = {
            "id": f"call_{i}",
            "type": "function",
            "function": {"name": c[0], "arguments": json.dumps(c[1])},
        }
        if len(c) > 2:
            tc.update(c[2])
        tool_calls.append(tc)
    msg = {"role": "assistant", "content": extra.get("content", "")}
    if tool_calls:
        msg["tool_calls"] = tool_calls
    return msg


NO_CALL = {"role": "assistant", "content": REPLY}
INV = gold(("check_inventory", {"sku": "A-113"}))


def score(expected, output, **kw):
    return score_case(expected, output, TOOLS, **kw)


def only_defect(result, name):
    """The named defect is present, and it is the only one."""
    return {k for k, v in result["defects"].items() if v} == {name}


# ----------------------------------------------------------------- tool specs / gold


def test_tool_names_of_accepts_openai_and_bare_specs():
    assert tool_names_of(TOOLS) == NAMES
    assert tool_names_of([{"name": "a"}, {"type": "function", "function": {"name": "b"}}]) == {"a", "b"}
    assert tool_names_of([]) == set()
    assert tool_names_of(None) == set()


def test_expected_calls_decodes_argument_strings_and_keeps_extras():
    msg = gold(("check_inventory", {"sku": "A-1"}, {"optional": ["store"], "acceptable": {"sku": ["a-1"]}}))
    assert expected_calls(msg) == [
        {
            "name": "check_inventory",
            "arguments": {"sku": "A-1"},
            "optional": ["store"],
            "acceptable": {"sku": ["a-1"]},
        }
    ]


def test_expected_calls_plain_message_and_dict_arguments():
    assert expected_calls(NO_CALL) == []
    assert expected_calls(None) == []
    assert expected_calls({"role": "assistant", "content": "x", "tool_calls": []}) == []
    msg = {
        "role": "assistant",
        "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"a": 1}}}],
    }
    assert expected_calls(msg)[0]["arguments"] == {"a": 1}
    msg = {
        "role": "assistant",
        "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": ""}}],
    }
    assert expected_calls(msg)[0]["arguments"] == {}


def test_expected_calls_rejects_bad_gold():
    with pytest.raises(ValueError):
        expected_calls({"tool_calls": [{"function": {"name": "f", "arguments": "{not json"}}]})
    with pytest.raises(ValueError):
        expected_calls({"tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}]})
    with pytest.raises(ValueError):
        expected_calls({"tool_calls": [{"function": {"arguments": "{}"}}]})


# -------------------------------------------------------------------------- parsing


def test_parse_plain_reply():
    p = parse_output("  Hello there, how can I help?  ", NAMES)
    assert p.reply_text == "Hello there, how can I help?"
    assert p.calls == [] and not p.malformed and p.think_ok and p.n_call_blocks == 0
    assert p.reasoning == ""


def test_parse_think_then_call():
    out = "<think>\nneed stock\n</think>\n\n" + block("check_inventory", {"sku": "A-113"})
    p = parse_output(out, NAMES)
    assert p.reasoning == "need stock"
    assert p.calls == [ToolCall("check_inventory", {"sku": "A-113"})]
    assert p.reply_text == "" and p.think_ok and not p.malformed and p.n_call_blocks == 1
    assert p.answer.startswith("\n\n<tool_call>")


def test_only_text_after_last_think_close_is_answer():
    out = "<think>a</think>middle<think>b</think>final answer here"
    p = parse_output(out)
    assert p.answer == "final answer here"
    assert p.reply_text == "final answer here"
    assert p.think_ok  # two sequential blocks: balanced, not nested, in order


def test_calls_inside_reasoning_are_never_counted():
    out = "<think>maybe " + block("check_inventory", {"sku": "A-1"}) + "</think>Sure, which size do you need?"
    p = parse_output(out, NAMES)
    assert p.calls == [] and p.n_call_blocks == 0 and not p.malformed
    assert "tool_call" in p.reasoning
    r = score(NO_CALL, out)
    assert r["tool_call_accuracy"] == 1 and r["response_quality"] == 1


def test_defects_inside_reasoning_are_ignored():
    out = "<think><|im_start|>user <tool_response>x</tool_response> la la la la</think>" + REPLY
    r = score(NO_CALL, out)
    assert r["response_quality"] == 1


def test_unclosed_think_makes_rest_reasoning():
    out = "<think>I will call " + block("check_inventory", {"sku": "A-1"}) + " and then answer"
    p = parse_output(out, NAMES)
    assert not p.think_ok
    assert p.calls == [] and p.n_call_blocks == 0 and p.reply_text == ""
    assert p.reasoning.startswith("I will call")
    r = score(INV, out)
    assert r["defects"]["think_tags"] == 1
    assert r["tool_call_accuracy"] == 0 and r["missed_call"] == 1
    assert r["tool_name_accuracy"] is None
    assert r["response_quality"] == 0


def test_unclosed_think_after_closed_block():
    p = parse_output("<think>a</think>Answer text <think>more thoughts")
    assert not p.think_ok
    assert p.reply_text == "Answer text"
    assert "more thoughts" in p.reasoning and "a" in p.reasoning


def test_close_without_open_is_out_of_order_but_answer_follows_it():
    p = parse_output("some reasoning</think>" + REPLY)
    assert not p.think_ok
    assert p.reply_text == REPLY
    assert p.reasoning == "some reasoning"
    r = score(NO_CALL, "some reasoning</think>" + REPLY)
    assert only_defect(r, "think_tags")


def test_nested_think_is_a_defect():
    p = parse_output("<think>a<think>b</think>c</think>" + REPLY)
    assert not p.think_ok
    assert p.reply_text == REPLY


def test_empty_think_block_is_fine():
    p = parse_output("<think>\n\n</think>\n\n" + REPLY)
    assert p.think_ok and p.reasoning == "" and p.reply_text == REPLY


def test_parse_reply_text_is_text_outside_blocks():
    out = "Let me check that. " + block("check_inventory", {"sku": "A-1"})
    p = parse_output(out, NAMES)
    assert p.reply_text == "Let me check that."
    assert len(p.calls) == 1


def test_whitespace_and_newlines_around_json_are_free():
    out = '<tool_call>   \n\n {"name":"check_inventory","arguments":{"sku":"A-1"}} \n\t</tool_call>'
    assert parse_output(out, NAMES).calls == [ToolCall("check_inventory", {"sku": "A-1"})]
    out = '<tool_call>{"name":"check_inventory","arguments":{"sku":"A-1"}}</tool_call>'
    assert parse_output(out, NAMES).calls == [ToolCall("check_inventory", {"sku": "A-1"})]


def test_arguments_as_json_string_is_decoded_once():
    inner = json.dumps({"sku": "A-1"})
    out = block("check_inventory", json.dumps(inner), raw_args=True)
    p = parse_output(out, NAMES)
    assert p.calls == [ToolCall("check_inventory", {"sku": "A-1"})] and not p.malformed
    # decoded once only: a string holding a string holding an object is malformed
    out = block("check_inventory", json.dumps(json.dumps(inner)), raw_args=True)
    p = parse_output(out, NAMES)
    assert p.malformed and p.calls == []
    assert p.malformed_reasons == ["block 1: arguments string does not hold an object"]


@pytest.mark.parametrize(
    "body, reason",
    [
        ('{"name": "check_inventory", "arguments": {"sku": "A-1"}', "invalid JSON"),
        ("{'name': 'check_inventory', 'arguments': {}}", "invalid JSON"),
        ('{"name": "check_inventory", "arguments": {"n": NaN}}', "invalid JSON"),
        ('{"name": "check_inventory", "arguments": {}} trailing', "invalid JSON"),
        ("", "invalid JSON"),
        ('["check_inventory", {}]', "body is not a JSON object"),
        ('{"arguments": {}}', "missing name"),
        ('{"name": 3, "arguments": {}}', "name is not a string"),
        ('{"name": "check_inventory"}', "missing arguments"),
        ('{"name": "check_inventory", "arguments": [1]}', "arguments is not an object"),
        ('{"name": "check_inventory", "arguments": null}', "arguments is not an object"),
        ('{"name": "check_inventory", "arguments": "not json"}', "arguments string is not valid JSON"),
        ('{"name": "check_inventory", "arguments": "[1, 2]"}', "arguments string does not hold an object"),
        ('{"name": "refund_everything", "arguments": {}}', "unknown tool 'refund_everything'"),
    ],
)
def test_malformed_blocks(body, reason):
    p = parse_output(f"<tool_call>\n{body}\n</tool_call>", NAMES)
    assert p.malformed and p.calls == [] and p.n_call_blocks == 1
    assert p.malformed_reasons == [f"block 1: {reason}"]


def test_tool_names_none_skips_name_check():
    p = parse_output(block("anything", {}), None)
    assert p.calls == [ToolCall("anything", {})] and not p.malformed


def test_unclosed_tool_call_is_malformed_and_not_reply_text():
    out = "Checking now. <tool_call>\n" + '{"name": "check_inventory", "arguments": {"sku": "A-1"}}'
    p = parse_output(out, NAMES)
    assert p.malformed and p.calls == [] and p.n_call_blocks == 1
    assert p.malformed_reasons == ["block 1: unclosed <tool_call>"]
    assert p.reply_text == "Checking now."


def test_stray_close_tag_is_malformed():
    out = '{"name": "check_inventory", "arguments": {"sku": "A-1"}}\n</tool_call>'
    p = parse_output(out, NAMES)
    assert p.malformed and p.n_call_blocks == 1
    assert p.malformed_reasons == ["block 1: </tool_call> without <tool_call>"]


def test_open_tag_inside_open_block():
    out = "<tool_call>\n" + block("check_inventory", {"sku": "A-1"})
    p = parse_output(out, NAMES)
    assert p.malformed and p.n_call_blocks == 2
    assert p.malformed_reasons == ["block 1: unclosed <tool_call>"]
    assert p.calls == [ToolCall("check_inventory", {"sku": "A-1"})]


def test_block_numbers_in_reasons():
    out = (
        block("check_inventory", {"sku": "A-1"})
        + '\n<tool_call>\n{"name": "x", "arguments": 5}\n</tool_call>'
    )
    p = parse_output(out, NAMES)
    assert p.malformed_reasons == ["block 2: arguments is not an object"]
    assert p.calls == [ToolCall("check_inventory", {"sku": "A-1"})]


def test_empty_and_none_output():
    for out in ("", None, "   \n"):
        p = parse_output(out, NAMES)
        assert p.reply_text == "" and p.calls == [] and not p.malformed and p.think_ok


# ------------------------------------------------------------------------- equality


@pytest.mark.parametrize(
    "a, b, equal",
    [
        (3, 3.0, True),
        (3, 3, True),
        (0.1 + 0.2, 0.3, False),
        (3, "3", False),
        ("3", 3, False),
        (True, 1, False),
        (1, True, False),
        (False, 0, False),
        (True, True, True),
        (None, None, True),
        (None, "", False),
        (None, 0, False),
        ("A-113", " A-113\n", True),
        ("A-113", "a-113", False),
        ("New York", "new york", False),
        ("a b", "a  b", False),
        ("red-shoe", "red shoe", False),
        ([1, 2], [1, 2], True),
        ([1, 2], [2, 1], False),
        ([1, 2], [1, 2, 3], False),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}, True),
        ({"a": 1}, {"a": 1, "b": 2}, False),
        ({"a": {"b": [1, {"c": " x "}]}}, {"a": {"b": [1.0, {"c": "x"}]}}, True),
        ({"a": {"b": [1, {"c": "x"}]}}, {"a": {"b": [1, {"c": "X"}]}}, False),
        ({"a": [True]}, {"a": [1]}, False),
        ([], {}, False),
        ({}, {}, True),
        ("", "  ", True),
    ],
)
def test_values_equal(a, b, equal):
    assert values_equal(a, b) is equal
    assert values_equal(b, a) is equal


def test_values_equal_strips_strings_at_any_depth():
    assert values_equal({"items": [{"sku": "A-1 "}]}, {"items": [{"sku": "\tA-1"}]})


# ------------------------------------------------------------------------- matching


def exp1(args, **extra):
    return expected_calls(gold(("check_inventory", args, extra)))[0]


def test_call_matches_exact():
    assert call_matches(ToolCall("check_inventory", {"sku": "A-1"}), exp1({"sku": "A-1"}))
    assert not call_matches(ToolCall("search_products", {"sku": "A-1"}), exp1({"sku": "A-1"}))
    assert not call_matches(ToolCall("Check_Inventory", {"sku": "A-1"}), exp1({"sku": "A-1"}))


def test_call_matches_missing_or_extra_key_is_wrong():
    e = exp1({"sku": "A-1", "qty": 2})
    assert not call_matches(ToolCall("check_inventory", {"sku": "A-1"}), e)
    assert not call_matches(ToolCall("check_inventory", {"sku": "A-1", "qty": 2, "store": "x"}), e)
    assert call_matches(ToolCall("check_inventory", {"qty": 2.0, "sku": " A-1"}), e)


def test_call_matches_int_float_string_bool():
    e = exp1({"qty": 3, "gift": False})
    assert call_matches(ToolCall("check_inventory", {"qty": 3.0, "gift": False}), e)
    assert not call_matches(ToolCall("check_inventory", {"qty": "3", "gift": False}), e)
    assert not call_matches(ToolCall("check_inventory", {"qty": 3, "gift": 0}), e)


def test_call_matches_nested_and_list_order():
    e = exp1({"filters": {"color": "blue", "sizes": [41, 42]}})
    assert call_matches(ToolCall("check_inventory", {"filters": {"sizes": [41.0, 42], "color": "blue"}}), e)
    assert not call_matches(ToolCall("check_inventory", {"filters": {"sizes": [42, 41], "color": "blue"}}), e)
    assert not call_matches(ToolCall("check_inventory", {"filters": {"sizes": [41, 42], "color": "Blue"}}), e)


def test_optional_keys_may_be_absent_but_must_be_right_when_present():
    e = exp1({"sku": "A-1", "store": "berlin"}, optional=["store"])
    assert call_matches(ToolCall("check_inventory", {"sku": "A-1"}), e)
    assert call_matches(ToolCall("check_inventory", {"sku": "A-1", "store": "berlin"}), e)
    assert not call_matches(ToolCall("check_inventory", {"sku": "A-1", "store": "paris"}), e)
    assert not call_matches(ToolCall("check_inventory", {"store": "berlin"}), e)  # sku is required
    assert not call_matches(ToolCall("check_inventory", {"sku": "A-1", "other": 1}), e)


def test_optional_key_without_expected_value_accepts_any_value():
    e = exp1({"sku": "A-1"}, optional=["note"])
    assert call_matches(ToolCall("check_inventory", {"sku": "A-1"}), e)
    assert call_matches(ToolCall("check_inventory", {"sku": "A-1", "note": "anything"}), e)


def test_acceptable_values():
    e = exp1({"city": "New York"}, acceptable={"city": ["NYC", "New York City"]})
    for city in ("New York", "NYC", "New York City ", " NYC"):
        assert call_matches(ToolCall("check_inventory", {"city": city}), e), city
    assert not call_matches(ToolCall("check_inventory", {"city": "nyc"}), e)
    assert not call_matches(ToolCall("check_inventory", {}), e)


def test_acceptable_key_only_in_acceptable_is_required():
    e = exp1({}, acceptable={"qty": [1, 2]})
    assert call_matches(ToolCall("check_inventory", {"qty": 2.0}), e)
    assert not call_matches(ToolCall("check_inventory", {"qty": 3}), e)
    assert not call_matches(ToolCall("check_inventory", {}), e)


def test_acceptable_list_values():
    e = exp1({"tags": ["a", "b"]}, acceptable={"tags": [["b", "a"]]})
    assert call_matches(ToolCall("check_inventory", {"tags": ["a", "b"]}), e)
    assert call_matches(ToolCall("check_inventory", {"tags": ["b", "a"]}), e)
    assert not call_matches(ToolCall("check_inventory", {"tags": ["a"]}), e)


def test_match_calls_is_order_free_bipartite():
    exp = expected_calls(gold(("check_inventory", {"sku": "A-1"}), ("check_inventory", {"sku": "A-2"})))
    calls = [ToolCall("check_inventory", {"sku": "A-2"}), ToolCall("check_inventory", {"sku": "A-1"})]
    assert match_calls(calls, exp) == 2
    assert match_calls(calls[:1], exp) == 1
    assert match_calls([], exp) == 0
    assert match_calls(calls, []) == 0


def test_match_calls_duplicates_need_duplicates():
    exp = expected_calls(gold(("place_order", {"sku": "A-1"}), ("place_order", {"sku": "A-1"})))
    one = ToolCall("place_order", {"sku": "A-1"})
    assert match_calls([one], exp) == 1
    assert match_calls([one, one], exp) == 2
    assert match_calls([one, one, one], exp) == 2
    exp_single = exp[:1]
    assert match_calls([one, one], exp_single) == 1  # each expected call used once


def test_match_calls_finds_maximum_not_greedy():
    # call 0 matches both expected (via acceptable); call 1 only expected 0.
    exp = [
        {"name": "f", "arguments": {"x": 1}, "optional": [], "acceptable": {}},
        {"name": "f", "arguments": {"x": 2}, "optional": [], "acceptable": {"x": [1]}},
    ]
    calls = [ToolCall("f", {"x": 1}), ToolCall("f", {"x": 1})]
    assert match_calls(calls, exp) == 2


# ------------------------------------------------------------------- per-case scores


def test_correct_single_call():
    r = score(INV, "<think>stock?</think>\n" + block("check_inventory", {"sku": "A-113"}))
    assert r["tool_call_accuracy"] == 1
    assert r["tool_name_accuracy"] == 1 and r["tool_args_accuracy"] == 1
    assert r["response_quality"] == 1 and not any(r["defects"].values())
    assert r["expected_call"] and r["made_call"]
    assert r["false_call"] is None and r["missed_call"] == 0
    assert (r["calls_tp"], r["calls_predicted"], r["calls_expected"]) == (1, 1, 1)
    assert r["parsed"]["calls"] == [{"name": "check_inventory", "arguments": {"sku": "A-113"}}]
    assert r["parsed"]["reasoning"] == "stock?"
    assert set(r["defects"]) == set(DEFECTS)


def test_correct_no_call_reply():
    r = score(NO_CALL, REPLY)
    assert r["tool_call_accuracy"] == 1 and r["response_quality"] == 1
    assert r["tool_name_accuracy"] is None and r["tool_args_accuracy"] is None
    assert r["false_call"] == 0 and r["missed_call"] is None
    assert not r["expected_call"] and not r["made_call"]


def test_wrong_args_right_name():
    r = score(INV, block("check_inventory", {"sku": "A-114"}))
    assert r["tool_call_accuracy"] == 0
    assert r["tool_name_accuracy"] == 1 and r["tool_args_accuracy"] == 0
    assert r["name_right_args_right"] == 0 and r["calls_tp"] == 0 and r["calls_name_matched"] == 1
    assert r["response_quality"] == 1


def test_wrong_name():
    r = score(INV, block("search_products", {"sku": "A-113"}))
    assert r["tool_call_accuracy"] == 0
    assert r["tool_name_accuracy"] == 0 and r["tool_args_accuracy"] == 0
    assert r["name_right_args_right"] is None


def test_call_when_none_expected():
    r = score(NO_CALL, block("check_inventory", {"sku": "A-113"}))
    assert r["tool_call_accuracy"] == 0
    assert r["tool_name_accuracy"] == 0 and r["tool_args_accuracy"] == 0
    assert r["false_call"] == 1 and r["missed_call"] is None
    assert r["calls_predicted"] == 1 and r["calls_expected"] == 0


def test_missed_call():
    r = score(INV, REPLY)
    assert r["tool_call_accuracy"] == 0
    assert r["tool_name_accuracy"] is None and r["tool_args_accuracy"] is None
    assert r["missed_call"] == 1 and r["false_call"] is None
    assert r["response_quality"] == 1


def test_one_malformed_block_spoils_the_turn():
    out = block("check_inventory", {"sku": "A-113"}) + "\n<tool_call>\n{broken\n</tool_call>"
    r = score(INV, out)
    assert r["tool_call_accuracy"] == 0
    assert r["tool_name_accuracy"] == 0 and r["tool_args_accuracy"] == 0
    assert r["defects"]["malformed_call"] == 1 and r["response_quality"] == 0
    assert r["calls_tp"] == 0 and r["calls_predicted"] == 2
    assert r["parsed"]["malformed_reasons"] == ["block 2: invalid JSON"]


def test_malformed_call_when_none_expected():
    r = score(NO_CALL, "<tool_call>\n{broken\n</tool_call>")
    assert r["tool_call_accuracy"] == 0
    assert r["tool_name_accuracy"] == 0 and r["tool_args_accuracy"] == 0
    assert r["false_call"] == 1
    assert only_defect(r, "malformed_call")  # a call attempt is not "too short"


def test_unknown_tool_counts_as_a_call_wrong_on_name_and_args():
    r = score(INV, block("check_stock", {"sku": "A-113"}))
    assert r["made_call"] and r["missed_call"] == 0
    assert r["tool_call_accuracy"] == 0
    assert r["tool_name_accuracy"] == 0 and r["tool_args_accuracy"] == 0
    assert r["defects"]["malformed_call"] == 1
    assert r["parsed"]["calls"] == []


def test_no_tools_or_an_empty_list_leaves_names_to_the_expected_calls():
    for tools in ([], None):
        r = score_case(INV, block("check_inventory", {"sku": "A-113"}), tools)
        assert r["defects"]["malformed_call"] == 0 and r["tool_call_accuracy"] == 1
        r = score_case(INV, block("check_stock", {"sku": "A-113"}), tools)
        assert r["defects"]["malformed_call"] == 0 and r["tool_call_accuracy"] == 0
        assert r["tool_name_accuracy"] == 0 and r["parsed"]["calls"][0]["name"] == "check_stock"


def test_parallel_calls_any_order():
    g = gold(("check_inventory", {"sku": "A-1"}), ("search_products", {"query": "shoes"}))
    out = block("search_products", {"query": "shoes"}) + "\n" + block("check_inventory", {"sku": "A-1"})
    r = score(g, out)
    assert r["tool_call_accuracy"] == 1 and r["tool_name_accuracy"] == 1 and r["tool_args_accuracy"] == 1
    assert r["calls_tp"] == 2


def test_parallel_calls_missing_one():
    g = gold(("check_inventory", {"sku": "A-1"}), ("check_inventory", {"sku": "A-2"}))
    r = score(g, block("check_inventory", {"sku": "A-1"}))
    assert r["tool_call_accuracy"] == 0
    assert r["tool_name_accuracy"] == 0  # multiset {ci} != {ci, ci}
    assert r["tool_args_accuracy"] == 0
    assert (r["calls_tp"], r["calls_predicted"], r["calls_expected"]) == (1, 1, 2)


def test_parallel_calls_one_extra():
    r = score(INV, block("check_inventory", {"sku": "A-113"}) + block("check_inventory", {"sku": "A-113"}))
    assert r["tool_call_accuracy"] == 0 and r["tool_name_accuracy"] == 0
    assert (r["calls_tp"], r["calls_predicted"]) == (1, 2)


def test_duplicate_expected_calls_need_duplicate_model_calls():
    g = gold(("place_order", {"sku": "A-1"}), ("place_order", {"sku": "A-1"}))
    one = block("place_order", {"sku": "A-1"})
    assert score(g, one)["tool_call_accuracy"] == 0
    r = score(g, one + "\n" + one)
    assert r["tool_call_accuracy"] == 1 and r["tool_name_accuracy"] == 1


def test_parallel_names_right_args_swapped_wrong():
    g = gold(("check_inventory", {"sku": "A-1"}), ("search_products", {"query": "shoes"}))
    out = block("check_inventory", {"sku": "A-2"}) + block("search_products", {"query": "shoes"})
    r = score(g, out)
    assert r["tool_name_accuracy"] == 1 and r["tool_args_accuracy"] == 0
    assert r["calls_tp"] == 1 and r["calls_name_matched"] == 2


def test_argument_string_form_in_model_output_scores_right():
    out = block("check_inventory", json.dumps(json.dumps({"sku": "A-113"})), raw_args=True)
    assert score(INV, out)["tool_call_accuracy"] == 1


def test_gold_with_optional_and_acceptable():
    g = gold(
        (
            "search_products",
            {"query": "running shoes", "limit": 10},
            {"optional": ["limit"], "acceptable": {"query": ["running shoe"]}},
        )
    )
    assert score(g, block("search_products", {"query": "running shoe"}))["tool_call_accuracy"] == 1
    assert (
        score(g, block("search_products", {"query": "running shoes", "limit": 10.0}))["tool_call_accuracy"]
        == 1
    )
    assert (
        score(g, block("search_products", {"query": "running shoes", "limit": 5}))["tool_call_accuracy"] == 0
    )


def test_text_before_call_is_allowed():
    r = score(INV, "Let me check the stock for you.\n" + block("check_inventory", {"sku": "A-113"}))
    assert r["tool_call_accuracy"] == 1 and r["response_quality"] == 1


# -------------------------------------------------------------------------- defects


def test_too_short_by_chars_and_words():
    assert only_defect(score(NO_CALL, "OK."), "too_short")
    assert only_defect(score(NO_CALL, "Absolutely!!"), "too_short")  # 12 chars, 1 word
    assert only_defect(score(NO_CALL, "Yes, certainly"), "too_short")  # 2 words
    assert score(NO_CALL, "Yes, it is.")["defects"]["too_short"] == 0  # 11 chars, 3 words
    assert score(NO_CALL, "Yes it is")["defects"]["too_short"] == 1  # 9 chars


def test_empty_output_is_too_short_only():
    r = score(NO_CALL, "")
    assert only_defect(r, "too_short")
    assert r["tool_call_accuracy"] == 1  # no call expected, none made


def test_too_short_not_applied_to_call_answers():
    r = score(INV, block("check_inventory", {"sku": "A-113"}))
    assert r["defects"]["too_short"] == 0


def test_too_short_counts_cjk_characters_as_words():
    r = score(NO_CALL, "您好，这款跑鞋目前有库存，可以下单。")
    assert r["defects"]["too_short"] == 0
    assert score(NO_CALL, "好的。")["defects"]["too_short"] == 1


def test_too_short_answer_after_think():
    assert only_defect(score(NO_CALL, "<think>long long reasoning about it all</think>Sure."), "too_short")


def test_end_repetition_word_runs():
    assert only_defect(score(NO_CALL, "I can help with that order. thanks thanks thanks"), "end_repetition")
    out = "Here is your answer. " + "I am not sure. " * 3
    assert only_defect(score(NO_CALL, out), "end_repetition")
    # run cut mid-way by the token limit still ends with three copies of a rotation
    out = "Here is your answer. " + "I will check it. " * 4 + "I will"
    assert score(NO_CALL, out)["defects"]["end_repetition"] == 1
    # twice is not enough
    assert score(NO_CALL, "Here is your answer: thanks thanks")["defects"]["end_repetition"] == 0
    # a repeat in the middle is not at the end
    assert score(NO_CALL, "no no no, the blue shoes are in stock today")["defects"]["end_repetition"] == 0


def test_end_repetition_run_of_twenty_words_but_not_twenty_one():
    letters = "abcdefghijklmnopqrstu"
    run20 = " ".join(letters[:20]) + " "
    run21 = " ".join(letters[:21]) + " "
    assert len("Start. " + run21 * 3) < 200  # below the gzip test
    assert score(NO_CALL, "Start. " + run20 * 3)["defects"]["end_repetition"] == 1
    assert score(NO_CALL, "Start. " + run21 * 3)["defects"]["end_repetition"] == 0


def test_end_repetition_cjk():
    assert score(NO_CALL, "您好，这款跑鞋目前有库存。好的好的好的")["defects"]["end_repetition"] == 1


def test_end_repetition_gzip():
    # long, no 1-20 word run at the end, but highly compressible
    body = " ".join(f"the item number {i % 7} is blue and in stock" for i in range(40))
    out = body + " — let me know."
    r = score(NO_CALL, out)
    assert r["defects"]["end_repetition"] == 1
    # normal long prose passes
    prose = (
        "I checked our catalogue and the blue running shoes in size 42 are in stock at the "
        "Berlin store. They cost 89 euros and can be delivered by Friday if you order today. "
        "Would you like me to place the order for you now, or compare with similar models?"
    )
    assert len(prose) >= 200
    assert score(NO_CALL, prose)["response_quality"] == 1


def test_gzip_check_skips_short_answers():
    assert score(NO_CALL, "ab " * 60 + "end of it")["defects"]["end_repetition"] == 0  # 189 chars


def test_many_parallel_calls_are_not_repetition():
    skus = [f"A-{100 + i}" for i in range(6)]
    g = gold(*[("check_inventory", {"sku": s}) for s in skus])
    out = "\n".join(block("check_inventory", {"sku": s}) for s in skus)
    assert len(out) >= 200 and defects._gzip_ratio(out) > defects.GZIP_MAX_RATIO  # the old whole-answer test
    r = score(g, out)
    # metrics.md: gzip reads the reply text, the answer without its well-formed call blocks
    assert r["tool_call_accuracy"] == 1 and r["response_quality"] == 1


def test_looping_identical_calls_are_repetition():
    out = "\n".join([block("check_inventory", {"sku": "A-113"})] * 3)
    assert score(INV, out)["defects"]["end_repetition"] == 1


def test_stopped_at_limit():
    r = score(NO_CALL, REPLY, stopped_at_limit=True)
    assert only_defect(r, "end_repetition") and r["response_quality"] == 0
    assert score(NO_CALL, REPLY, stopped_at_limit=False)["response_quality"] == 1
    assert score(NO_CALL, REPLY, stopped_at_limit=None)["response_quality"] == 1


def test_fabricated_tool_response_tag():
    out = block("check_inventory", {"sku": "A-113"}) + '\n<tool_response>\n{"stock": 5}\n</tool_response>'
    r = score(INV, out)
    assert r["defects"]["fabricated_tool_result"] == 1
    assert r["tool_call_accuracy"] == 1  # the call itself is right
    assert r["response_quality"] == 0
    assert (
        score(NO_CALL, '<tool_response>{"stock": 5}</tool_response> It is in stock.')["defects"][
            "fabricated_tool_result"
        ]
        == 1
    )


def test_fabricated_reply_after_last_call():
    out = block("check_inventory", {"sku": "A-113"}) + "\nGood news: 5 pairs are in stock!"
    r = score(INV, out)
    assert only_defect(r, "fabricated_tool_result")
    assert r["parsed"]["reply_text"] == "Good news: 5 pairs are in stock!"


def test_whitespace_and_stop_token_after_last_call_are_fine():
    out = block("check_inventory", {"sku": "A-113"}) + "\n\n  <|im_end|>\n"
    r = score(INV, out)
    assert r["response_quality"] == 1


def test_text_between_calls_is_not_fabrication():
    out = block("check_inventory", {"sku": "A-1"}) + "\nand also\n" + block("check_inventory", {"sku": "A-2"})
    assert parse_output(out, NAMES).reply_text == "and also"
    assert score(INV, out)["defects"]["fabricated_tool_result"] == 0


def test_text_after_stray_close_tag_is_fabrication():
    out = '{"name": "check_inventory", "arguments": {}}</tool_call> It is in stock now.'
    r = score(INV, out)
    assert r["defects"]["fabricated_tool_result"] == 1 and r["defects"]["malformed_call"] == 1


def test_template_leak():
    r = score(NO_CALL, REPLY + "<|im_end|>\n<|im_start|>user\nthanks, buy it")
    assert r["defects"]["template_leak"] == 1 and r["response_quality"] == 0
    assert score(NO_CALL, "<|im_start|>assistant\n" + REPLY)["defects"]["template_leak"] == 1
    assert score(NO_CALL, REPLY + "<|endoftext|> and more text")["defects"]["template_leak"] == 1
    assert score(NO_CALL, REPLY + " <|vision_start|>")["defects"]["template_leak"] == 1


def test_single_stop_token_at_end_is_not_a_leak():
    for tok in ("<|im_end|>", "<|endoftext|>", "<|im_end|>\n\n"):
        r = score(NO_CALL, REPLY + tok)
        assert r["response_quality"] == 1, tok
        assert r["parsed"]["reply_text"] == REPLY
    # two end tokens: one is the stop token, the other leaked
    assert score(NO_CALL, REPLY + "<|im_end|><|im_end|>")["defects"]["template_leak"] == 1
    # the stop token is stripped before the other checks
    assert score(NO_CALL, "Sure.<|im_end|>")["defects"] == {**{d: 0 for d in DEFECTS}, "too_short": 1}


def test_response_quality_counts_each_defect():
    out = "<think>unfinished " + block("check_inventory", {})
    r = score(INV, out)
    assert r["defects"]["think_tags"] == 1
    assert r["defects"]["too_short"] == 1  # the answer is empty
    assert r["response_quality"] == 0


def test_non_string_output_rejected():
    with pytest.raises(TypeError):
        score(NO_CALL, 123)


# -------------------------------------------------------------------------- summary


def test_standard_error():
    assert standard_error(0.5, 100) == pytest.approx(0.05)
    assert standard_error(None, 10) is None
    assert standard_error(0.5, 0) is None
    assert standard_error(1.0, 10) == 0.0


def test_summary_of_nothing_reports_missing_not_zero():
    s = summarize([])
    assert s["n"] == 0
    for m in ("tool_call_accuracy", "tool_name_accuracy", "tool_args_accuracy", "response_quality"):
        assert s[m] == {"n": 0, "count": 0, "value": None, "se": None}
    for d in DEFECTS:
        assert s["defects"][d]["value"] is None
    assert s["false_call_rate"]["value"] is None and s["missed_call_rate"]["value"] is None
    pc = s["per_call"]
    assert pc["precision"] is None and pc["recall"] is None and pc["f1"] is None
    assert pc["args_accuracy_given_name"] is None


def test_summary_zero_denominators_when_no_calls_made():
    scores = [score(NO_CALL, REPLY), score(NO_CALL, "Another reply that is long enough.")]
    s = summarize(scores)
    assert s["tool_call_accuracy"]["value"] == 1.0 and s["tool_call_accuracy"]["n"] == 2
    assert s["tool_name_accuracy"] == {"n": 0, "count": 0, "value": None, "se": None}
    assert s["tool_args_accuracy"]["value"] is None
    assert s["missed_call_rate"]["value"] is None  # no call expected anywhere
    assert s["false_call_rate"]["value"] == 0.0
    assert s["per_call"]["precision"] is None and s["per_call"]["recall"] is None


def test_summary_rates_and_per_call():
    g2 = gold(("check_inventory", {"sku": "A-1"}), ("check_inventory", {"sku": "A-2"}))
    scores = [
        score(INV, block("check_inventory", {"sku": "A-113"})),  # all right
        score(INV, block("check_inventory", {"sku": "B"})),  # name right, args wrong
        score(INV, REPLY),  # missed
        score(NO_CALL, block("search_products", {"query": "x"})),  # false call
        score(g2, block("check_inventory", {"sku": "A-1"})),  # 1 of 2
        score(NO_CALL, "ok"),  # too short
    ]
    s = summarize(scores)
    assert s["n"] == 6
    tca = s["tool_call_accuracy"]
    assert (tca["n"], tca["count"]) == (6, 2)  # the right call and the short no-call reply
    assert tca["value"] == pytest.approx(2 / 6)
    assert tca["se"] == pytest.approx(math.sqrt((2 / 6) * (4 / 6) / 6))
    assert (s["tool_name_accuracy"]["n"], s["tool_name_accuracy"]["count"]) == (4, 2)
    assert (s["tool_args_accuracy"]["n"], s["tool_args_accuracy"]["count"]) == (4, 1)
    assert s["args_accuracy_given_name"]["value"] == pytest.approx(1 / 2)
    assert (s["response_quality"]["n"], s["response_quality"]["count"]) == (6, 5)
    assert s["defects"]["too_short"]["count"] == 1
    assert s["defects"]["too_short"]["value"] == pytest.approx(1 / 6)
    assert (s["false_call_rate"]["n"], s["false_call_rate"]["count"]) == (2, 1)
    assert (s["missed_call_rate"]["n"], s["missed_call_rate"]["count"]) == (4, 1)
    pc = s["per_call"]
    # predicted: 1+1+0+1+1+0 = 4; expected: 1+1+1+0+2+0 = 5; tp: 1+0+0+0+1 = 2
    assert (pc["tp"], pc["predicted"], pc["expected"]) == (2, 4, 5)
    assert pc["precision"] == pytest.approx(0.5)
    assert pc["recall"] == pytest.approx(0.4)
    assert pc["f1"] == pytest.approx(2 * 0.5 * 0.4 / 0.9)
    assert pc["name_matched"] == 3
    assert pc["args_accuracy_given_name"] == pytest.approx(2 / 3)
    json.dumps(s)  # JSON-serialisable


def test_summary_f1_zero_when_nothing_right():
    s = summarize([score(INV, block("check_inventory", {"sku": "B"}))])
    assert s["per_call"]["precision"] == 0.0 and s["per_call"]["f1"] == 0.0


def test_summary_breakdowns():
    scores = [
        score(INV, block("check_inventory", {"sku": "A-113"})),
        score(INV, REPLY),
        score(NO_CALL, REPLY),
    ]
    s = summarize(
        scores, categories=[["wrong_args"], ["missed_call", "wrong_args"], []], turn_depths=[1, 3, None]
    )
    bc = s["by_category"]
    assert set(bc) == {"wrong_args", "missed_call", "(uncategorized)"}
    assert bc["wrong_args"]["n"] == 2
    assert bc["wrong_args"]["tool_call_accuracy"]["value"] == 0.5
    assert bc["missed_call"]["tool_call_accuracy"]["value"] == 0.0
    assert bc["missed_call"]["tool_name_accuracy"]["value"] is None
    assert bc["(uncategorized)"]["response_quality"]["value"] == 1.0
    bd = s["by_turn_depth"]
    assert set(bd) == {1, 3}
    assert bd[1]["tool_args_accuracy"]["value"] == 1.0
    assert bd[3]["n"] == 1
    assert "by_category" not in summarize(scores)
    with pytest.raises(ValueError):
        summarize(scores, categories=[[]])


def test_summary_accepts_json_round_tripped_scores():
    scores = [json.loads(json.dumps(score(INV, block("check_inventory", {"sku": "A-113"}))))]
    assert summarize(scores)["tool_call_accuracy"]["value"] == 1.0


# ------------------------------------------------- fast paths read exactly like the plain definitions


@pytest.mark.parametrize(
    "tools",
    [
        TOOLS,
        [{"name": "check_inventory"}, {"type": "function", "function": {"name": "place_order"}}],
        [
            1,
            "x",
            None,
            {"function": "check_inventory"},
            {"function": {"name": 3}},
            {"name": ["check_inventory"]},
        ],
        [{"function": {"name": "check_inventory"}, "name": "place_order"}],
        [],
    ],
)
@pytest.mark.parametrize("called", ["check_inventory", "place_order", "search_products", "nope", "3"])
def test_score_case_knows_the_tool_names_that_tool_names_of_lists(tools, called):
    text = block(called, {"sku": "A-1"}) + "\n" + block("check_inventory", {"sku": "A-2"})
    s = score_case(gold(("check_inventory", {"sku": "A-1"})), text, tools)
    names = tool_names_of(tools) if tools else None  # no tools or an empty list: names unchecked
    assert s["parsed"]["malformed_reasons"] == parse_output(text, names).malformed_reasons


def test_tags_are_read_in_order_however_they_interleave():
    call = '{"name": "check_inventory", "arguments": {"sku": "A-1"}}'
    p = parse_output(
        f"</tool_call>a<tool_call>{call}<tool_call>{call}</tool_call>b</tool_call>c<tool_call>", NAMES
    )
    assert p.malformed_reasons == [
        "block 1: </tool_call> without <tool_call>",
        "block 2: unclosed <tool_call>",
        "block 4: </tool_call> without <tool_call>",
        "block 5: unclosed <tool_call>",
    ]
    assert [c.name for c in p.calls] == ["check_inventory"] and p.n_call_blocks == 5 and p.reply_text == "abc"


@pytest.mark.parametrize("args", ['{"a": 1} x', " ", "{'a': 1}", '{"a": NaN}', '{"a": 1', "[1] [2]"])
def test_gold_argument_errors_keep_json_own_messages(args):
    msg = {"tool_calls": [{"function": {"name": "f", "arguments": args}}]}
    try:
        want = json.JSONDecoder(
            parse_constant=lambda c: (_ for _ in ()).throw(ValueError(f"{c} is not JSON"))
        ).decode(args)
    except ValueError as exc:
        want = str(exc)
    if args.strip():
        with pytest.raises(ValueError) as got:
            expected_calls(msg)
        assert str(got.value) == f"tool_calls[1] arguments are not JSON: {want}"
        with pytest.raises(ValueError):
            score_case(msg, "", TOOLS)  # the cached decoding raises the same way, every time
        with pytest.raises(ValueError):
            score_case(msg, "", TOOLS)
    else:
        assert expected_calls(msg)[0]["arguments"] == {}
