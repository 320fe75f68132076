"""Export formats: one JSON line per row for each layout, the row read back as chat messages
(the preview and the round-trip audit), and LLaMA-Factory's dataset_info.json entry.

Tool-call ``arguments`` are always JSON strings, and for TRL layouts ``tools`` is a JSON
string too: Arrow would otherwise merge differently-shaped dicts into one struct padded
with nulls (a tool would grow its neighbours' parameters).

What each SFT layout trains on (the reviewed turn is the row's target; the assistant turns
before it are context, as the model or the import wrote them, not reviewed):

* ``trl_prompt_completion``: TRL's SFTTrainer computes the loss on ``completion`` only (its
  ``completion_only_loss`` is on by default for prompt/completion data): the reviewed turn.
* ``openai_chat``: OpenAI's chat fine-tuning format; context assistant messages carry
  ``"weight": 0`` and the reviewed turn ``"weight": 1``, so only the reviewed turn is trained.
* ``trl_messages``: one ``messages`` list. With ``assistant_only_loss`` TRL trains on *every*
  assistant turn, the unreviewed context turns included; without it, on the whole text.

LLaMA-Factory (``llamafactory``, sharegpt ranking rows), following its data/README.md
"Sharegpt Format" and src/llamafactory/data/converter.py + formatter.py
(github.com/hiyouga/LLaMA-Factory, read at commit ff6d4d1):

* roles ``human`` / ``gpt`` / ``function_call`` / ``observation``; the first system message
  goes to the ``system`` column and the tools (function specs) to ``tools``;
* human and observation turns sit at odd positions (1st, 3rd, …), gpt and function_call at
  even ones; a ranking row has an odd number of turns and ``chosen`` / ``rejected`` are one
  gpt or function_call turn each (SharegptDatasetConverter skips any other row);
* a function_call value is the call as JSON, ``{"name": …, "arguments": {…}}``, or a JSON list
  of such objects for parallel calls (FunctionFormatter's ``_parse_functions``). Reply text
  beside the calls is kept by writing ``text<tool_call>JSON</tool_call>``: FunctionFormatter
  parses the block between the template's ``tool_call_words`` (``<tool_call>`` /
  ``</tool_call>`` for every template that does not override them, template.py
  ``register_template``) and puts the rest of the text before the rendered calls;
* parallel tool results cannot be consecutive observation turns (the alternation forbids
  it), so they are one observation whose value joins the results with
  ``\n</tool_response>\n<tool_response>\n``, exactly as LLaMA-Factory's own
  OpenAIDatasetConverter does: a Qwen-style observation slot then renders one
  ``<tool_response>`` block per result, in order;
* what sharegpt has no place for is not invented: tool-call ids and tool-message names
  (results follow their calls by order), a system message after the first turn (dropped),
  consecutive user or consecutive plain assistant messages (joined with a newline), two
  assistant turns in a row otherwise (written as they are; LLaMA-Factory would skip the row).
  The round-trip audit check (roundtrip.py) reports every such row.
"""

from __future__ import annotations

import json
import re

from ..models import DatasetSnapshot
from .rows import _DUMPS, Row, _loads

Kind = DatasetSnapshot.Kind


LAYOUTS = {
    Kind.SFT: {
        "trl_messages": (
            "messages + tools as a JSON string (TRL SFTTrainer). With assistant_only_loss it trains on "
            "every assistant turn, the unreviewed context turns too"
        ),
        "trl_prompt_completion": (
            "prompt / completion messages + tools (TRL SFTTrainer trains on the completion only: the "
            "reviewed turn)"
        ),
        "openai_chat": (
            "OpenAI chat fine-tuning (messages + tools as a list); context assistant turns weight 0, the "
            "reviewed turn weight 1"
        ),
    },
    Kind.DPO: {
        "trl_preference": "prompt / chosen / rejected messages (TRL DPOTrainer)",
        "openai_preference": (
            "OpenAI preference fine-tuning (input / preferred_output / non_preferred_output)"
        ),
        "llamafactory": (
            "LLaMA-Factory sharegpt ranking (conversations / chosen / rejected / system / tools); text "
            "beside tool calls kept, parallel results as separate <tool_response> blocks"
        ),
    },
    Kind.EVAL: {
        "eval_cases": "messages (context) + expected assistant message + tools",
    },
}


DEFAULT_LAYOUT = {Kind.SFT: "trl_prompt_completion", Kind.DPO: "trl_preference", Kind.EVAL: "eval_cases"}


# ----------------------------------------------------------------------------- LLaMA-Factory

LF_CALL_OPEN, LF_CALL_CLOSE = "<tool_call>", "</tool_call>"
LF_RESULTS_SEPARATOR = "\n</tool_response>\n<tool_response>\n"  # converter.py, OpenAIDatasetConverter
LF_ODD, LF_EVEN = ("human", "observation"), ("gpt", "function_call")  # 1st, 3rd … / 2nd, 4th … turns
_ARGUMENTS = json.JSONEncoder(ensure_ascii=False).encode  # json.dumps(…, ensure_ascii=False), made once
_LF_CALL_BLOCK = re.compile(re.escape(LF_CALL_OPEN) + "(.*?)" + re.escape(LF_CALL_CLOSE), re.DOTALL)


def _lf_calls_json(message: dict) -> str:
    calls = []
    for c in message["tool_calls"]:
        fn = c.get("function") or {}
        args = fn.get("arguments")
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                pass  # kept as a JSON string: the round-trip check reports it
        calls.append({"name": fn.get("name"), "arguments": args})
    return json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False)


def _lf_turn(message: dict) -> dict:
    role, text = message.get("role"), message.get("content") or ""
    if role == "assistant":
        if message.get("tool_calls"):
            calls = _lf_calls_json(message)
            return {
                "from": "function_call",
                "value": f"{text}{LF_CALL_OPEN}{calls}{LF_CALL_CLOSE}" if text else calls,
            }
        return {"from": "gpt", "value": text}
    if role == "tool":
        return {"from": "observation", "value": text}
    return {"from": "human", "value": text}


def _llamafactory(row: Row) -> dict:
    system, turns = "", []
    for i, m in enumerate(row.context):
        if m.get("role") == "system":
            if i == 0:
                system = m.get("content") or ""
            continue
        turn = _lf_turn(m)
        last = turns[-1]["from"] if turns else None
        if last == turn["from"] == "observation":
            turns[-1] = {"from": last, "value": turns[-1]["value"] + LF_RESULTS_SEPARATOR + turn["value"]}
        elif last == turn["from"] and last in ("human", "gpt"):
            turns[-1] = {"from": last, "value": turns[-1]["value"] + "\n" + turn["value"]}
        else:
            turns.append(turn)
    return {
        "conversations": turns,
        "chosen": _lf_turn(row.target),
        "rejected": _lf_turn(row.rejected),
        "system": system,
    }


def lf_calls(value: str) -> tuple[str, list[dict]]:
    """A function_call value read the way LLaMA-Factory's FunctionFormatter reads it: (reply text,
    calls as OpenAI tool calls with JSON-string arguments). Raises ValueError / KeyError / TypeError
    on a value it would refuse."""
    block = _LF_CALL_BLOCK.search(value) if LF_CALL_OPEN in value else None
    text, body = (value.replace(block.group(0), ""), block.group(1)) if block else ("", value)
    calls = _loads(body)
    calls = calls if isinstance(calls, list) else [calls]
    return text, [
        {"type": "function", "function": {"name": c["name"], "arguments": _ARGUMENTS(c["arguments"])}}
        for c in calls
    ]


def _from_lf_turn(turn: dict) -> list[dict]:
    """One sharegpt turn as chat messages (an observation holding several results is several)."""
    source, value = turn.get("from"), turn.get("value")
    if source == "function_call":
        text, calls = lf_calls(value)
        return [{"role": "assistant", "content": text or None, "tool_calls": calls}]
    if source == "observation":
        return [{"role": "tool", "content": part} for part in value.split(LF_RESULTS_SEPARATOR)]
    return [{"role": "assistant" if source == "gpt" else "user", "content": value}]


# ----------------------------------------------------------------------------------- OpenAI


def _weighted(messages: list[dict], weight: int) -> list[dict]:
    """Assistant messages with OpenAI's per-message `weight` (the cached context is not mutated)."""
    return [{**m, "weight": weight} if m.get("role") == "assistant" else m for m in messages]


def _unweighted(messages: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k != "weight"} if "weight" in m else m for m in messages]


def _with_tools(row_dict: dict, tools_encoded: str) -> str:
    """The row's JSON text with `"tools": …` appended from the pre-encoded tools."""
    return _DUMPS(row_dict)[:-1] + ',"tools":' + tools_encoded + "}"


# layout -> row -> one JSON line (without the newline)
FORMATTERS = {
    "trl_messages": lambda r: _with_tools({"messages": [*r.context, r.target]}, r.toolset.as_string),
    "trl_prompt_completion": lambda r: _with_tools(
        {"prompt": r.context, "completion": [r.target]}, r.toolset.as_string
    ),
    "openai_chat": lambda r: _with_tools(
        {"messages": [*_weighted(r.context, 0), *_weighted([r.target], 1)]}, r.toolset.as_list
    ),
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


def display_row(layout: str, data: dict) -> dict:
    """A stored row back as {context, target, rejected?} chat messages (the preview, eval suites and
    the round-trip check). Raises KeyError / ValueError / TypeError on a row its layout cannot read."""
    if layout == "trl_messages":
        return {"context": data["messages"][:-1], "target": data["messages"][-1]}
    if layout == "openai_chat":
        messages = _unweighted(data["messages"])
        return {"context": messages[:-1], "target": messages[-1]}
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
        for turn in data["conversations"]:
            context += _from_lf_turn(turn)
        return {
            "context": context,
            "target": _from_lf_turn(data["chosen"])[0],
            "rejected": _from_lf_turn(data["rejected"])[0],
        }
    return {"context": data["messages"], "target": data["expected"]}


def stored_tools(layout: str, data: dict) -> list:
    """The row's tools list as written (function specs, unwrapped, for LLaMA-Factory)."""
    if layout == "openai_preference":
        return data["input"]["tools"]
    tools = data.get("tools")
    return json.loads(tools) if isinstance(tools, str) else tools


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
