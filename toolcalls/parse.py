"""Parse a raw model output (metrics.md, "Parsing a model output").

``parse_output`` splits Qwen-style text into reasoning, reply text and tool calls and says
which blocks are malformed. Standard library only, no Django: the importer, the scorer, the
dataset audit and the training guard all read model text with this one parser.

Choices where metrics.md leaves room (each has a test in tests/test_metrics.py):

* Text before an unclosed ``<think>`` stays answer; everything after it is
  reasoning. ``</think>`` with no ``<think>`` before it is a ``think_tags`` defect,
  but the answer is still what follows the last ``</think>``.
* A stray ``</tool_call>`` (no opener) is a malformed block and counts as an
  attempted call; a ``<tool_call>`` opened while another is open closes the first
  one as unclosed (malformed).
* A call to a tool missing from the case's tools list is malformed and is not
  listed in ``ParsedOutput.calls``. ``tool_names=None`` skips that check; callers pass None
  when the case has no tools or an empty list (metrics.md: then the expected calls decide),
  see ``score_case`` and ``name_check``.
* One end-of-turn token (``<|im_end|>``, ``<|endoftext|>``, ``<|eot_id|>`` …) at
  the very end is the stop token: it is removed before every other check.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

# End-of-turn tokens: exactly one of these at the very end is the stop token.
END_OF_TURN_TOKENS = (
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|end|>",
    "<｜end▁of▁sentence｜>",
)

_THINK_OPEN = "<think>"
_TC_OPEN = "<tool_call>"
_TC_CLOSE = "</tool_call>"
_TC_OPEN_LEN = len(_TC_OPEN)
_TC_CLOSE_LEN = len(_TC_CLOSE)

_THINK_RE = re.compile(r"</?think>")


@dataclass(slots=True)
class ToolCall:
    name: str
    arguments: dict


@dataclass(slots=True)
class ParsedOutput:
    reasoning: str  # reasoning text (think blocks, or after an unclosed <think>)
    reply_text: str  # answer text outside <tool_call> blocks, stripped
    calls: list[ToolCall]  # well-formed calls to known tools, in order
    malformed: bool  # any malformed block, unclosed/stray tag or unknown tool
    malformed_reasons: list[str]  # e.g. "block 2: arguments is not an object"
    think_ok: bool  # False when think tags are unbalanced, nested or out of order
    answer: str  # the answer part (after the last </think>), raw
    n_call_blocks: int  # <tool_call> blocks attempted, malformed ones included


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


_SCAN = _DECODER.scan_once
_WS = json.decoder.WHITESPACE.match


def strict_loads(text):
    """Strict JSON: json.loads without NaN / Infinity; nesting too deep to parse is not JSON either.

    JSONDecoder.decode's own steps, inlined (this runs once or twice per scored case); on
    any failure decode() itself runs, so errors and their messages are json's.
    """
    try:
        obj, end = _SCAN(text, _WS(text, 0).end())
        if _WS(text, end).end() == len(text):
            return obj
    except (StopIteration, ValueError, RecursionError):
        pass
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _parse_block(body, tool_names):
    """Return (ToolCall, None) or (None, reason)."""
    try:
        obj = strict_loads(body)
    except ValueError:
        return None, "invalid JSON"
    if type(obj) is not dict:
        return None, "body is not a JSON object"
    if "name" not in obj:
        return None, "missing name"
    name = obj["name"]
    if type(name) is not str:
        return None, "name is not a string"
    if not name:
        return None, "empty name"
    if "arguments" not in obj:
        return None, "missing arguments"
    args = obj["arguments"]
    if type(args) is str:
        try:
            args = strict_loads(args)
        except ValueError:
            return None, "arguments string is not valid JSON"
        if type(args) is not dict:
            return None, "arguments string does not hold an object"
    elif type(args) is not dict:
        return None, "arguments is not an object"
    if tool_names is not None and name not in tool_names:
        return None, f"unknown tool {name!r}"
    return ToolCall(name, args), None


def _strip_stop_token(answer):
    a = answer.rstrip()
    if a.endswith("|>") or a.endswith("｜>"):
        for tok in END_OF_TURN_TOKENS:
            if a.endswith(tok):
                return a[: -len(tok)]
    return a


def _split_think(text):
    """-> (answer, reasoning, think_ok)."""
    if "think>" not in text:
        return text, "", True
    depth = 0
    ok = True
    last_close = -1
    for m in _THINK_RE.finditer(text):
        if m.group() == _THINK_OPEN:
            if depth:
                ok = False  # nested
            depth += 1
        else:
            if depth == 0:
                ok = False  # closed before opened
            else:
                depth -= 1
            last_close = m.end()
    if depth:
        ok = False  # unclosed
    start = last_close if last_close >= 0 else 0
    head = text[:start]
    opened = text.find(_THINK_OPEN, start)
    if opened >= 0:  # necessarily never closed: the rest is reasoning
        ok = False
        answer = text[start:opened]
        tail = text[opened + len(_THINK_OPEN) :].strip()
    else:
        answer = text[start:]
        tail = ""
    if head:
        head = _THINK_RE.sub("", head).strip()
    reasoning = head + "\n" + tail if head and tail else head or tail
    return answer, reasoning, ok


def _scan_calls(a, tool_names):
    """Scan the (stop-token-stripped) answer for tool-call blocks.

    -> (reply_text, calls, reasons, n_blocks, fabricated_after_call, valid_spans)
    """
    if "tool_call>" not in a:
        return a.strip(), [], [], 0, False, None
    reply_parts = []
    calls = []
    reasons = []
    valid_spans = []
    n = 0
    pos = 0
    open_tag_start = -1  # start of the open <tool_call> tag, -1 when none is open
    body_start = 0
    seen_close = False
    trailing = False  # reply text after the last </tool_call>
    # The tags in order, found with str.find (the two tags cannot overlap, so this visits
    # exactly what a regex scan for </?tool_call> would, a little faster).
    next_open = a.find(_TC_OPEN)
    next_close = a.find(_TC_CLOSE)
    while next_open >= 0 or next_close >= 0:
        if next_close < 0 or 0 <= next_open < next_close:
            start = next_open
            end = start + _TC_OPEN_LEN
            next_open = a.find(_TC_OPEN, end)
            if open_tag_start >= 0:
                n += 1
                reasons.append(f"block {n}: unclosed <tool_call>")
            else:
                part = a[pos:start]
                reply_parts.append(part)
                if seen_close and not trailing and not part.isspace() and part:
                    trailing = True
            open_tag_start = start
            body_start = end
        else:
            start = next_close
            end = start + _TC_CLOSE_LEN
            next_close = a.find(_TC_CLOSE, end)
            n += 1
            if open_tag_start < 0:
                reasons.append(f"block {n}: </tool_call> without <tool_call>")
                part = a[pos:start]
                reply_parts.append(part)
            else:
                call, why = _parse_block(a[body_start:start], tool_names)
                if call is None:
                    reasons.append(f"block {n}: {why}")
                else:
                    calls.append(call)
                    valid_spans.append((open_tag_start, end))
                open_tag_start = -1
            pos = end
            seen_close = True
            trailing = False
    if open_tag_start >= 0:
        n += 1
        reasons.append(f"block {n}: unclosed <tool_call>")
    else:
        part = a[pos:]
        reply_parts.append(part)
        if seen_close and part and not part.isspace():
            trailing = True
    reply = "".join(reply_parts).strip()
    return reply, calls, reasons, n, trailing, valid_spans


def scan_output(text, tool_names):
    """parse_output plus what the defect checks read: (parsed, answer without its stop token,
    reply text after the last call, spans of the well-formed call blocks in that answer)."""
    if text is None:
        text = ""
    elif not isinstance(text, str):
        raise TypeError("output must be a string")
    answer, reasoning, think_ok = _split_think(text)
    a = _strip_stop_token(answer)
    reply, calls, reasons, n, trailing, spans = _scan_calls(a, tool_names)
    parsed = ParsedOutput(reasoning, reply, calls, bool(reasons), reasons, think_ok, answer, n)
    return parsed, a, trailing, spans


def parse_output(text: str, tool_names: set[str] | None = None) -> ParsedOutput:
    """Split a raw model output into reasoning, reply text and tool calls.

    ``tool_names`` is the set of tools the case offers; ``None`` skips the
    unknown-tool check.
    """
    return scan_output(text, tool_names)[0]


class ToolNames:
    """``name in ToolNames(tools)`` == ``name in tool_names_of(tools)``, without building the set.

    score_case needs the names only when the output has a call block, and then one or two
    lookups: scanning the specs (a handful) is cheaper than making a set for every case.
    """

    __slots__ = ("tools",)

    def __init__(self, tools):
        self.tools = tools

    def __contains__(self, name):
        for t in self.tools:
            if isinstance(t, dict):
                f = t.get("function")
                n = f.get("name") if isinstance(f, dict) else t.get("name")
                if n == name and isinstance(n, str):
                    return True
        return False


def name_check(tools) -> ToolNames | None:
    """What ``scan_output`` checks call names against for a case's tools: None (no check) when
    the case has no tools or an empty list, as metrics.md says."""
    return ToolNames(tools) if tools else None


def tool_names_of(tools: list[dict] | None) -> set[str]:
    """Names from OpenAI tool specs ({"type": "function", "function": {...}}) or
    bare {"name": ...} specs."""
    names = set()
    for t in tools or ():
        if not isinstance(t, dict):
            continue
        f = t.get("function")
        name = f.get("name") if isinstance(f, dict) else t.get("name")
        if isinstance(name, str):
            names.add(name)
    return names
