"""Export formats: one JSON line per row for each layout, the row read back for the preview,
and LLaMA-Factory's dataset_info.json entry.

Tool-call ``arguments`` are always JSON strings, and for TRL layouts ``tools`` is a JSON
string too: Arrow would otherwise merge differently-shaped dicts into one struct padded
with nulls (a tool would grow its neighbours' parameters).
"""

from __future__ import annotations

import json

from ..models import DatasetSnapshot
from .rows import _DUMPS, Row

Kind = DatasetSnapshot.Kind


LAYOUTS = {
    Kind.SFT: {
        "trl_messages": "OpenAI chat messages + tools as a JSON string (TRL SFTTrainer)",
        "trl_prompt_completion": (
            "prompt / completion messages (TRL SFTTrainer, loss on the corrected turn only)"
        ),
        "openai_chat": "OpenAI chat fine-tuning (messages + tools as a list)",
    },
    Kind.DPO: {
        "trl_preference": "prompt / chosen / rejected messages (TRL DPOTrainer)",
        "openai_preference": (
            "OpenAI preference fine-tuning (input / preferred_output / non_preferred_output)"
        ),
        "llamafactory": "LLaMA-Factory ShareGPT ranking (conversations / chosen / rejected / system / tools)",
    },
    Kind.EVAL: {
        "eval_cases": "messages (context) + expected assistant message + tools",
    },
}


DEFAULT_LAYOUT = {Kind.SFT: "trl_messages", Kind.DPO: "trl_preference", Kind.EVAL: "eval_cases"}


def _lf_calls_value(message: dict) -> str:
    calls = []
    for c in message.get("tool_calls") or ():
        fn = c["function"]
        try:
            args = json.loads(fn["arguments"])
        except (TypeError, ValueError):
            args = fn["arguments"]
        calls.append({"name": fn["name"], "arguments": args})
    return json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False)


def _lf_turn(message: dict) -> dict:
    role = message["role"]
    if role == "assistant":
        if message.get("tool_calls"):
            return {"from": "function_call", "value": _lf_calls_value(message)}
        return {"from": "gpt", "value": message.get("content") or ""}
    if role == "tool":
        return {"from": "observation", "value": message.get("content") or ""}
    return {"from": "human", "value": message.get("content") or ""}


def _llamafactory(row: Row) -> dict:
    system = ""
    turns: list[dict] = []
    for m in row.context:
        if m["role"] == "system":
            system = m.get("content") or ""
            continue
        turn = _lf_turn(m)
        if turns and turns[-1]["from"] == turn["from"] and turn["from"] in ("human", "observation", "gpt"):
            turns[-1] = {"from": turn["from"], "value": turns[-1]["value"] + "\n" + turn["value"]}
        else:
            turns.append(turn)
    return {
        "conversations": turns,
        "chosen": _lf_turn(row.target),
        "rejected": _lf_turn(row.rejected),
        "system": system,
    }


def _with_tools(row_dict: dict, tools_encoded: str) -> str:
    """The row's JSON text with `"tools": …` appended from the pre-encoded tools."""
    return _DUMPS(row_dict)[:-1] + ',"tools":' + tools_encoded + "}"


# layout -> row -> one JSON line (without the newline)
FORMATTERS = {
    "trl_messages": lambda r: _with_tools({"messages": [*r.context, r.target]}, r.toolset.as_string),
    "trl_prompt_completion": lambda r: _with_tools(
        {"prompt": r.context, "completion": [r.target]}, r.toolset.as_string
    ),
    "openai_chat": lambda r: _with_tools({"messages": [*r.context, r.target]}, r.toolset.as_list),
    "trl_preference": lambda r: _with_tools(
        {"prompt": r.context, "chosen": [r.target], "rejected": [r.rejected]}, r.toolset.as_string
    ),
    "openai_preference": lambda r: _DUMPS(
        {
            "input": {"messages": r.context, "tools": r.tools},
            "preferred_output": [r.target],
            "non_preferred_output": [r.rejected],
        }
    ),
    "llamafactory": lambda r: _with_tools(_llamafactory(r), r.toolset.as_llamafactory),
    "eval_cases": lambda r: _with_tools(
        {
            "id": f"{r.external_id}@{r.context_length}",
            "messages": r.context,
            "expected": r.target,
            "source": f"{r.source}:{r.source_id}",
        },
        r.toolset.as_string,
    ),
}


def _from_lf_turn(turn: dict) -> dict:
    if turn.get("from") == "function_call":
        calls = json.loads(turn["value"])
        calls = calls if isinstance(calls, list) else [calls]
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"type": "function", "function": {"name": c.get("name"), "arguments": c.get("arguments")}}
                for c in calls
            ],
        }
    role = {"gpt": "assistant", "observation": "tool", "human": "user"}.get(turn.get("from"), "user")
    return {"role": role, "content": turn.get("value")}


def display_row(layout: str, data: dict) -> dict:
    """A stored row back as {context, target, rejected?} messages, for the preview."""
    if layout in ("trl_messages", "openai_chat"):
        return {"context": data["messages"][:-1], "target": data["messages"][-1]}
    if layout == "trl_prompt_completion":
        return {"context": data["prompt"], "target": data["completion"][0]}
    if layout == "trl_preference":
        return {"context": data["prompt"], "target": data["chosen"][0], "rejected": data["rejected"][0]}
    if layout == "openai_preference":
        return {
            "context": data["input"]["messages"],
            "target": data["preferred_output"][0],
            "rejected": data["non_preferred_output"][0],
        }
    if layout == "llamafactory":
        context = [{"role": "system", "content": data["system"]}] if data.get("system") else []
        context += [_from_lf_turn(t) for t in data["conversations"]]
        return {
            "context": context,
            "target": _from_lf_turn(data["chosen"]),
            "rejected": _from_lf_turn(data["rejected"]),
        }
    return {"context": data["messages"], "target": data["expected"]}


def llamafactory_dataset_info(snapshot: DatasetSnapshot) -> str:
    """The dataset_info.json entry LLaMA-Factory needs for a llamafactory-layout snapshot."""
    entry = {
        snapshot.download_name.removesuffix(".jsonl"): {
            "file_name": snapshot.download_name,
            "formatting": "sharegpt",
            "ranking": True,
            "columns": {
                "messages": "conversations",
                "chosen": "chosen",
                "rejected": "rejected",
                "system": "system",
                "tools": "tools",
            },
        }
    }
    return json.dumps(entry, indent=2)
