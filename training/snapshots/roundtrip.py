"""The round-trip audit check: each written row read back as chat messages and compared with the
row it was made from, so a layout that loses something (reply text beside a call, a tool result,
a call's arguments, a turn) fails the build instead of shipping.

``row_losses(layout, text, row)`` reads the written JSON line back with the layout's reader
(``layouts.display_row``, the same one the preview uses) and compares, message by message:
role, reply text, each call's name and arguments (as JSON values: ``{"a": 1}`` written as
``{"a":1}`` is the same, ``1`` and ``1.0`` or ``"1"`` are not), their count and order, and the
row's tools (function specs; LLaMA-Factory stores them unwrapped). Tool-call ids and tool
names are not compared: LLaMA-Factory's sharegpt rows have no place for them and results
follow their calls by order. A LLaMA-Factory row is also checked against the sharegpt rules
its loader applies (see layouts.py): a row it would skip is a lost row. An OpenAI chat row's
assistant messages must carry weight 0 (context) and 1 (the reviewed turn).

Cost: a JSON parse and a comparison per checked row. Measured on 1.1–1.4 KB rows (a 6-message
tool-use dialogue, 2 shared cores under load): 10–30 µs a row for the TRL and OpenAI layouts,
about 70 µs for LLaMA-Factory (its turns are rebuilt into messages), against 15–65 µs to
format the row. So ``sampled`` picks the rows: every row up to ``FULL_ROWS``, then every
``STRIDE``-th (59,500 rows of a million: a few seconds added to a build of one to three minutes).
"""

from __future__ import annotations

import json

import orjson

from config.text import counted

from .layouts import LF_EVEN, LF_ODD, display_row, stored_tools

FULL_ROWS = 10_000
STRIDE = 20


def sampled(row_no: int) -> bool:
    """Is the row (1-based) one the check reads back? Deterministic: the same rows every build."""
    return row_no <= FULL_ROWS or row_no % STRIDE == 0


def _args_key(args) -> str:
    """Arguments as comparable JSON text: decoded when they are JSON, as written otherwise."""
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return "raw:" + args
    return json.dumps(args, ensure_ascii=False, separators=(",", ":"))


def _form(message) -> tuple:
    """What a message says: role, reply text, calls (name, arguments)."""
    if not isinstance(message, dict):
        return (repr(message), "", ())
    calls = tuple(
        ((c.get("function") or {}).get("name"), _args_key((c.get("function") or {}).get("arguments")))
        if isinstance(c, dict)
        else (repr(c), "")
        for c in message.get("tool_calls") or ()
    )
    return (message.get("role"), message.get("content") or "", calls)


def _same_args(a, b) -> bool:
    return a == b or _args_key(a) == _args_key(b)


def _same(a, b) -> bool:
    """Cheap tests first: a TRL row reads back as the very dicts it was written from; a LLaMA-Factory
    row has no call ids and re-serialised arguments (usually the same text)."""
    if a == b:
        return True
    if not isinstance(a, dict) or not isinstance(b, dict):
        return False
    if a.get("role") != b.get("role") or (a.get("content") or "") != (b.get("content") or ""):
        return False
    calls_a, calls_b = a.get("tool_calls") or (), b.get("tool_calls") or ()
    if len(calls_a) != len(calls_b):
        return False
    for ca, cb in zip(calls_a, calls_b, strict=True):
        fa = (ca.get("function") or {}) if isinstance(ca, dict) else {}
        fb = (cb.get("function") or {}) if isinstance(cb, dict) else {}
        if (
            not fa
            or fa.get("name") != fb.get("name")
            or not _same_args(fa.get("arguments"), fb.get("arguments"))
        ):
            return False
    return True


def _roles(messages: list) -> str:
    return " ".join(str(m.get("role")) if isinstance(m, dict) else "?" for m in messages)


def _differs(part: str, expected: list, got: list) -> str | None:
    """The first difference between two message lists, in words, or None."""
    if len(expected) != len(got):
        return (
            f"{part}: {counted(len(expected), 'message')} read back as {len(got)} "
            f"({_roles(expected)} → {_roles(got)})"
        )
    for i, (a, b) in enumerate(zip(expected, got, strict=True), 1):
        if _same(a, b):
            continue
        fa, fb = _form(a), _form(b)
        if fa == fb:
            continue
        where = f"{part} message {i} ({fa[0]})"
        if fa[0] != fb[0]:
            return f"{where}: read back as role {fb[0]!r}"
        if fa[1] != fb[1]:
            return f"{where}: text {_clip(fa[1])} read back as {_clip(fb[1])}"
        if len(fa[2]) != len(fb[2]):
            return f"{where}: {counted(len(fa[2]), 'tool call')} read back as {len(fb[2])}"
        for j, (ca, cb) in enumerate(zip(fa[2], fb[2], strict=True), 1):
            if ca[0] != cb[0]:
                return f"{where}: call {j} name {ca[0]!r} read back as {cb[0]!r}"
            if ca[1] != cb[1]:
                return f"{where}: call {j} ({ca[0]}) arguments {_clip(ca[1])} read back as {_clip(cb[1])}"
    return None


def _clip(text: str, n: int = 60) -> str:
    return repr(text if len(text) <= n else text[: n - 1] + "…")


def _function_specs(tools) -> list:
    if not isinstance(tools, list):
        return [tools]
    return [t["function"] if isinstance(t, dict) and t.get("type") == "function" else t for t in tools]


def lf_rule_problems(data: dict) -> list[str]:
    """Why LLaMA-Factory's sharegpt loader would skip or refuse this ranking row (empty: it loads).
    A function_call value it cannot parse is the reader's to find (layouts.lf_calls raises)."""
    turns = data.get("conversations")
    if not isinstance(turns, list):
        return ["LLaMA-Factory skips this row: conversations is not a list"]
    problems = []
    for i, turn in enumerate(turns):
        allowed = LF_ODD if i % 2 == 0 else LF_EVEN
        if not isinstance(turn, dict) or turn.get("from") not in allowed:
            who = turn.get("from") if isinstance(turn, dict) else turn
            problems.append(
                f"LLaMA-Factory skips this row: turn {i + 1} is {who!r} where its rules need "
                f"{' or '.join(allowed)} (human/observation and gpt/function_call must alternate)"
            )
            break
    if len(turns) % 2 == 0:
        problems.append(
            f"LLaMA-Factory skips this row: {counted(len(turns), 'turn')} before the answers "
            "(a ranking row needs an odd number, ending on human or observation)"
        )
    for side in ("chosen", "rejected"):
        turn = data.get(side)
        if not isinstance(turn, dict) or turn.get("from") not in LF_EVEN:
            problems.append(f"LLaMA-Factory refuses this row: {side} is not a gpt or function_call turn")
    return problems


def _weight_problems(data: dict) -> list[str]:
    messages = data.get("messages") or []
    for i, m in enumerate(messages, 1):
        if not isinstance(m, dict) or m.get("role") != "assistant":
            continue
        want = 1 if i == len(messages) else 0
        if m.get("weight") != want:
            what = "the reviewed turn" if want else "a context assistant turn"
            return [f"message {i} is {what} but has weight {m.get('weight')!r} (want {want})"]
    return []


class _ToolsSeen:
    """The tools check once per distinct (tools text, row tools): rows share a few tools lists."""

    def __init__(self):
        self.last = None

    def same(self, layout: str, data: dict, row) -> bool:
        written = data["input"]["tools"] if layout == "openai_preference" else data.get("tools")
        if written == row.tools:  # the OpenAI layouts write the list itself
            return True
        last = self.last
        if isinstance(written, str) and last and last[0] == written and last[1] is row.tools:
            return last[2]
        same = _function_specs(stored_tools(layout, data)) == _function_specs(row.tools)
        self.last = (written, row.tools, same)
        return same


_tools_seen = _ToolsSeen()


def _loads(text: str):
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)  # what orjson refuses and json reads (integers past 64 bits)


def row_losses(layout: str, text: str, row) -> list[str]:
    """What the written line `text` loses of `row` (rows.Row), in words; empty when nothing."""
    try:
        data = _loads(text)
        back = display_row(layout, data)
        same_tools = _tools_seen.same(layout, data, row)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        return [f"the written row cannot be read back as {layout}: {type(exc).__name__}: {exc}"]
    problems = lf_rule_problems(data) if layout == "llamafactory" else []
    if layout == "openai_chat":
        problems += _weight_problems(data)
    context = row.context
    if (
        layout == "llamafactory"
        and context
        and context[0].get("role") == "system"
        and not context[0].get("content")
    ):
        context = context[1:]  # an empty system prompt and none are the same row there
    for part, expected, got in (
        ("context", context, back["context"]),
        ("target", [row.target], [back["target"]]),
        (
            "rejected",
            [row.rejected] if row.rejected is not None else [],
            [back["rejected"]] if "rejected" in back else [],
        ),
    ):
        problem = _differs(part, expected, got)
        if problem:
            problems.append(problem)
    if not same_tools:
        problems.append("tools: the tools list read back differs from the row's tools")
    return problems
