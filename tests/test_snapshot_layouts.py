"""Layout fidelity: LLaMA-Factory rows follow its sharegpt rules and keep everything the source
says, OpenAI chat rows weight only the reviewed turn, and the round-trip audit check catches a
layout that loses something (and passes every layout on clean data)."""

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from training.snapshots import build as snapshot_build
from training.snapshots import layouts, roundtrip, storage
from training.snapshots.build import build_snapshot, create_snapshot
from training.snapshots.rows import ToolSet

from .test_datasets_factories import SYSTEM, assistant, call, conversation, label, response

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def lines(snapshot):
    return [json.loads(x) for x in Path(storage.media_path(snapshot.file.name)).read_text().splitlines()]


def build(project, user, kind, layout, **data):
    snap = create_snapshot(project, user, {"kind": kind, "layout": layout, **data}, start=False)
    return build_snapshot(snap.pk)


def check(report, key):
    return next(c for c in report["checks"] if c["key"] == key)


RESULT_B = json.dumps({"sku": "B-1", "in_stock": 7})
RESULT_C = json.dumps({"sku": "C-1", "in_stock": 0})


def parallel_dialogue(project, ext="p-1", split="train"):
    """Reply text beside two parallel calls, their two results, a plain reply, a new request."""
    return conversation(
        project,
        ext,
        [
            SYSTEM,
            {"role": "user", "content": "Do you have B-1 and C-1?"},
            assistant(
                "Let me check both.",
                [
                    call("check_inventory", {"sku": "B-1"}, "call_1"),
                    call("check_inventory", {"sku": "C-1"}, "call_2"),
                ],
            ),
            {"role": "tool", "tool_call_id": "call_1", "content": RESULT_B},
            {"role": "tool", "tool_call_id": "call_2", "content": RESULT_C},
            assistant("B-1 is in stock (7 units); C-1 is sold out."),
            {"role": "user", "content": "Order 2 of B-1, then."},
        ],
        split,
    )


FIX = assistant("Placing the order now.", [call("create_order", {"sku": "B-1", "quantity": 2})])


@pytest.fixture
def agent_world(project, members):
    """Corrections on the parallel-call dialogue: one with text beside the call, one without."""
    conv = parallel_dialogue(project)
    label(response(conv, raw="Done! Your order is placed."), members["annotator"], correction=FIX)
    other = parallel_dialogue(project, "p-2")
    label(
        response(other, raw="Sure, anything else?"),
        members["annotator"],
        correction=assistant(None, [call("create_order", {"sku": "B-1", "quantity": 2})]),
    )
    held_out = parallel_dialogue(project, "e-1", split="eval")
    label(response(held_out, raw="Done! Your order is placed."), members["annotator"], correction=FIX)
    return project


def sharegpt_problems(row: dict) -> list[str]:
    """LLaMA-Factory's sharegpt ranking rules (data/README.md, "Sharegpt Format"), restated here:
    human/observation at odd positions, gpt/function_call at even ones, an odd number of turns,
    chosen and rejected one gpt or function_call turn each."""
    found = []
    for position, turn in enumerate(row["conversations"], 1):
        want = ("human", "observation") if position % 2 else ("gpt", "function_call")
        if turn["from"] not in want:
            found.append(f"turn {position} is {turn['from']}")
    if len(row["conversations"]) % 2 == 0:
        found.append("even number of turns")
    found += [side for side in ("chosen", "rejected") if row[side]["from"] not in ("gpt", "function_call")]
    return found


def test_llamafactory_rows_follow_its_rules_and_keep_text_calls_and_every_result(agent_world, members):
    snap = build(agent_world, members["admin"], "dpo", "llamafactory", filters={"sources": ["corrections"]})
    assert snap.status == "ready", snap.message
    rows = lines(snap)
    assert len(rows) == 2 and [sharegpt_problems(r) for r in rows] == [[], []]
    first = rows[0]
    assert first["system"] == SYSTEM["content"]
    assert first["conversations"] == [
        {"from": "human", "value": "Do you have B-1 and C-1?"},
        {
            "from": "function_call",
            "value": "Let me check both.<tool_call>"
            + json.dumps(
                [
                    {"name": "check_inventory", "arguments": {"sku": "B-1"}},
                    {"name": "check_inventory", "arguments": {"sku": "C-1"}},
                ]
            )
            + "</tool_call>",
        },
        # one observation (the alternation allows no other), one <tool_response> block per result
        {"from": "observation", "value": RESULT_B + "\n</tool_response>\n<tool_response>\n" + RESULT_C},
        {"from": "gpt", "value": "B-1 is in stock (7 units); C-1 is sold out."},
        {"from": "human", "value": "Order 2 of B-1, then."},
    ]
    call_json = json.dumps({"name": "create_order", "arguments": {"sku": "B-1", "quantity": 2}})
    assert first["chosen"] == {
        "from": "function_call",
        "value": f"Placing the order now.<tool_call>{call_json}</tool_call>",
    }
    assert first["rejected"] == {"from": "gpt", "value": "Done! Your order is placed."}
    # the same call without reply text is the bare JSON of the documented example: the rows differ
    assert rows[1]["chosen"] == {"from": "function_call", "value": call_json}
    # as LLaMA-Factory's qwen template renders the observation slot: two result blocks, in order
    rendered = "<tool_response>\n" + first["conversations"][2]["value"] + "\n</tool_response>"
    assert re.findall(r"<tool_response>\n(.*?)\n</tool_response>", rendered) == [RESULT_B, RESULT_C]
    # read back (preview, round trip): every message, the two results as two tool messages
    back = layouts.display_row("llamafactory", first)
    assert [m["role"] for m in back["context"]] == [
        "system",
        "user",
        "assistant",
        "tool",
        "tool",
        "assistant",
        "user",
    ]
    assert (
        back["context"][2]["content"] == "Let me check both." and len(back["context"][2]["tool_calls"]) == 2
    )
    assert back["target"]["content"] == "Placing the order now."
    assert check(snap.audit, "layout_roundtrip")["outcome"] == "pass"


def test_rows_llamafactory_cannot_hold_are_reported(project, members):
    tricky = [
        (
            "u-1",
            [
                SYSTEM,
                {"role": "user", "content": "Hi there."},
                {"role": "user", "content": "Is A-5 in stock?"},
            ],
        ),
        (
            "s-1",
            [
                {"role": "user", "content": "Is A-6 in stock?"},
                {"role": "system", "content": "Answer in French."},
                {"role": "user", "content": "Please."},
            ],
        ),
    ]
    for ext, messages in tricky:
        label(
            response(conversation(project, ext, messages), raw="It is in stock."),
            members["annotator"],
            correction=assistant(None, [call("check_inventory", {"sku": "A-5"})]),
        )
    blocked = build(project, members["admin"], "dpo", "llamafactory")
    assert blocked.status == "failed" and blocked.failure == "audit_blocked"
    found = check(blocked.audit, "layout_roundtrip")
    assert found["count"] == 2
    details = [e["detail"] for e in found["examples"]]
    assert details[0] == "context: 3 messages read back as 2 (system user user → system user)"
    assert details[1].startswith("context: 3 messages read back as 1 (user system user → user)")
    warned = build(
        project, members["admin"], "dpo", "llamafactory", audit={"checks": {"layout_roundtrip": "warn"}}
    )
    assert warned.status == "ready" and check(warned.audit, "layout_roundtrip")["count"] == 2
    # the same rows lose nothing in a TRL layout
    trl = build(project, members["admin"], "dpo", "trl_preference")
    assert trl.status == "ready" and check(trl.audit, "layout_roundtrip")["outcome"] == "pass"


def test_openai_chat_weights_only_the_reviewed_turn(agent_world, members):
    snap = build(agent_world, members["admin"], "sft", "openai_chat")
    row = lines(snap)[0]
    weights = [(m["role"], m.get("weight")) for m in row["messages"]]
    assert weights == [
        ("system", None),
        ("user", None),
        ("assistant", 0),
        ("tool", None),
        ("tool", None),
        ("assistant", 0),
        ("user", None),
        ("assistant", 1),
    ]
    assert isinstance(row["tools"], list)
    assert "weight" not in json.dumps(storage.preview(snap)[0])  # the preview shows plain messages
    plain = lines(build(agent_world, members["admin"], "sft", "trl_messages"))[0]
    assert "weight" not in json.dumps(plain)  # the shared context was not touched


@pytest.mark.parametrize(
    ("kind", "layout"),
    [
        ("sft", "trl_messages"),
        ("sft", "trl_prompt_completion"),
        ("sft", "openai_chat"),
        ("dpo", "trl_preference"),
        ("dpo", "openai_preference"),
        ("dpo", "llamafactory"),
        ("eval", "eval_cases"),
    ],
)
def test_every_layout_reads_back_without_loss(agent_world, members, kind, layout):
    snap = build(agent_world, members["admin"], kind, layout)
    assert snap.status == "ready", snap.message
    assert check(snap.audit, "layout_roundtrip") | {"examples": []} == {
        **check(snap.audit, "layout_roundtrip"),
        "count": 0,
        "outcome": "pass",
        "examples": [],
    }


def _drop_reply_text_beside_calls(formatter):
    """LLaMA-Factory rows as they were written before: the reply text beside a call dropped."""

    def lossy(row):
        data = json.loads(formatter(row))
        value = data["chosen"]["value"]
        if "<tool_call>" in value:
            data["chosen"]["value"] = value[value.index("<tool_call>") + 11 : -len("</tool_call>")]
        return json.dumps(data)

    return lossy


def _merge_tool_results(formatter):
    """messages rows with parallel tool results merged into one tool message."""

    def lossy(row):
        data = json.loads(formatter(row))
        out = []
        for m in data["messages"]:
            if out and m["role"] == out[-1]["role"] == "tool":
                out[-1] = {**out[-1], "content": out[-1]["content"] + "\n" + m["content"]}
            else:
                out.append(m)
        data["messages"] = out
        return json.dumps(data)

    return lossy


def test_the_round_trip_check_blocks_a_layout_that_loses_something(agent_world, members, monkeypatch):
    real = snapshot_build.FORMATTERS
    monkeypatch.setattr(
        snapshot_build,
        "FORMATTERS",
        {
            **real,
            "llamafactory": _drop_reply_text_beside_calls(real["llamafactory"]),
            "trl_messages": _merge_tool_results(real["trl_messages"]),
        },
    )
    lf = build(agent_world, members["admin"], "dpo", "llamafactory", filters={"sources": ["corrections"]})
    assert lf.status == "failed" and lf.failure == "audit_blocked"
    found = check(lf.audit, "layout_roundtrip")
    assert found["count"] == 1 and found["examples"][0]["row"] == 1
    assert found["examples"][0]["detail"] == (
        "target message 1 (assistant): text 'Placing the order now.' read back as ''"
    )
    assert found["examples"][0]["external_id"] == "p-1"
    sft = build(agent_world, members["admin"], "sft", "trl_messages")
    assert sft.status == "failed" and "Row loses something in its layout" in sft.message
    assert check(sft.audit, "layout_roundtrip")["examples"][0]["detail"] == (
        "context: 7 messages read back as 6 "
        "(system user assistant tool tool assistant user → system user assistant tool assistant user)"
    )
    assert not list(Path(storage.media_path("datasets")).rglob("*.jsonl"))  # nothing was written


def _row(context, target, rejected=None, tools=()):
    return SimpleNamespace(context=context, target=target, rejected=rejected, tools=list(tools))


TOOLS = [{"type": "function", "function": {"name": "create_order", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        (
            lambda d: d["messages"][-1]["tool_calls"][0]["function"].update(arguments='{"quantity": 2.0}'),
            """target message 1 (assistant): call 1 (create_order) arguments '{"quantity":2}' read back as """
            """'{"quantity":2.0}'""",
        ),
        (
            lambda d: d["messages"][-1]["tool_calls"][0]["function"].update(arguments='{"quantity": "2"}'),
            """target message 1 (assistant): call 1 (create_order) arguments '{"quantity":2}' read back as """
            """'{"quantity":"2"}'""",
        ),
        (
            lambda d: d["messages"][-1]["tool_calls"].append(d["messages"][-1]["tool_calls"][0]),
            "target message 1 (assistant): 1 tool call read back as 2",
        ),
        (
            lambda d: d["messages"][0].update(role="system"),
            "context message 1 (user): read back as role 'system'",
        ),
        (lambda d: d.update(tools="[]"), "tools: the tools list read back differs from the row's tools"),
        (
            lambda d: d.pop("messages"),
            "the written row cannot be read back as trl_messages: KeyError: 'messages'",
        ),
    ],
)
def test_row_losses_names_what_was_lost(change, detail):
    target = assistant(None, [call("create_order", {"quantity": 2})])
    row = _row([{"role": "user", "content": "Two, please."}], target, tools=TOOLS)
    data = json.loads(json.dumps({"messages": [*row.context, target], "tools": ToolSet(TOOLS).json}))
    assert roundtrip.row_losses("trl_messages", json.dumps(data), row) == []
    assert roundtrip.row_losses("trl_messages", json.dumps(data, indent=1), row) == []  # spacing is no loss
    change(data)
    assert roundtrip.row_losses("trl_messages", json.dumps(data), row) == [detail]


def test_llamafactory_rules_are_checked_row_by_row():
    good = {
        "conversations": [{"from": "human", "value": "Two, please."}],
        "chosen": {
            "from": "function_call",
            "value": '{"name": "create_order", "arguments": {"quantity": 2}}',
        },
        "rejected": {"from": "gpt", "value": "Done."},
    }
    assert roundtrip.lf_rule_problems(good) == []
    two_in_a_row = {**good, "conversations": [*good["conversations"], {"from": "human", "value": "Now!"}]}
    assert roundtrip.lf_rule_problems(two_in_a_row) == [
        "LLaMA-Factory skips this row: turn 2 is 'human' where its rules need gpt or function_call "
        "(human/observation and gpt/function_call must alternate)",
        "LLaMA-Factory skips this row: 2 turns before the answers (a ranking row needs an odd number, "
        "ending on human or observation)",
    ]
    bad_call = {**good, "chosen": {"from": "function_call", "value": "Sure.<tool_call>{oops</tool_call>"}}
    row = _row(
        [{"role": "user", "content": "Two, please."}],
        assistant("Sure.", [call("create_order", {"quantity": 2})]),
        assistant("Done."),
    )
    assert roundtrip.row_losses(
        "llamafactory", json.dumps({**bad_call, "system": "", "tools": "[]"}), row
    ) == [
        "the written row cannot be read back as llamafactory: JSONDecodeError: Expecting property name "
        "enclosed in double quotes: line 1 column 2 (char 1)"
    ]
    fine = {
        **good,
        "chosen": {
            "from": "function_call",
            "value": "Sure.<tool_call>" + good["chosen"]["value"] + "</tool_call>",
        },
    }
    assert roundtrip.row_losses("llamafactory", json.dumps({**fine, "system": "", "tools": "[]"}), row) == []
    assert roundtrip.lf_rule_problems({**good, "rejected": {"from": "human", "value": "x"}}) == [
        "LLaMA-Factory refuses this row: rejected is not a gpt or function_call turn"
    ]


def test_the_check_reads_every_row_up_to_a_limit_then_a_fixed_sample():
    picked = [n for n in range(1, roundtrip.FULL_ROWS + 10 * roundtrip.STRIDE + 1) if roundtrip.sampled(n)]
    assert picked[: roundtrip.FULL_ROWS] == list(range(1, roundtrip.FULL_ROWS + 1))
    assert picked[roundtrip.FULL_ROWS :] == [
        n
        for n in range(roundtrip.FULL_ROWS + 1, roundtrip.FULL_ROWS + 10 * roundtrip.STRIDE + 1)
        if n % roundtrip.STRIDE == 0
    ]
