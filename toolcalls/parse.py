"""Tool-calling metrics, exactly as defined in metrics.md.

Pure functions over plain data (OpenAI-format messages, tool specs and raw model
text); standard library only, no Django, so the same code scores an eval run in a
Celery task, a management command and a unit test.

Reading order: ``parse_output`` (text -> reasoning / reply / calls / malformed),
``values_equal`` and ``call_matches`` (one call against one expected call),
``match_calls`` (parallel calls, bipartite matching), ``score_case`` (one case: the
four headline metrics and the six defects), ``summarize`` (rates with standard
errors, per-call precision/recall/F1, breakdowns).

Choices where metrics.md leaves room (each has a test):

* Text before an unclosed ``<think>`` stays answer; everything after it is
  reasoning. ``</think>`` with no ``<think>`` before it is a ``think_tags`` defect,
  but the answer is still what follows the last ``</think>``.
* A stray ``</tool_call>`` (no opener) is a malformed block and counts as an
  attempted call; a ``<tool_call>`` opened while another is open closes the first
  one as unclosed (malformed).
* A call to a tool missing from the case's tools list is malformed and is not
  listed in ``ParsedOutput.calls``.
* "Words" are whitespace-separated tokens, except that each CJK ideograph or kana
  counts as one word (Chinese/Japanese replies have no spaces).
* The gzip test of ``end_repetition`` reads the whole answer, as metrics.md says,
  well-formed tool-call blocks included. Known consequence: three or more correct
  parallel calls to one tool compress about 2.5x and are flagged; the flag
  ``GZIP_INCLUDES_VALID_CALLS = True`` leaves valid blocks out of that test, for
  teams that choose to depart from the definition.
* One end-of-turn token (``<|im_end|>``, ``<|endoftext|>``, ``<|eot_id|>`` …) at
  the very end is removed before every other check; any other ``<|…|>`` token in
  the answer is a ``template_leak``. ``</tool_response>`` counts like
  ``<tool_response>``.
* Optional argument listed with neither an expected value nor acceptable values:
  any value is accepted when present. Acceptable values are added to the expected
  value, not replacing it.
* Per-call precision counts every attempted block (malformed ones too) as
  predicted; a malformed turn has no true positives.
"""

from __future__ import annotations

import functools
import gzip
import json
import math
import re
from dataclasses import dataclass

__all__ = [
    "ToolCall",
    "ParsedOutput",
    "parse_output",
    "tool_names_of",
    "expected_calls",
    "values_equal",
    "call_matches",
    "match_calls",
    "score_case",
    "summarize",
    "standard_error",
    "HEADLINE_METRICS",
    "DEFECTS",
]

HEADLINE_METRICS = (
    "tool_call_accuracy",
    "tool_name_accuracy",
    "tool_args_accuracy",
    "response_quality",
)
DEFECTS = (
    "think_tags",
    "malformed_call",
    "too_short",
    "end_repetition",
    "fabricated_tool_result",
    "template_leak",
)

TOO_SHORT_CHARS = 10
TOO_SHORT_WORDS = 3
REPEAT_MAX_RUN = 20
REPEAT_MIN_TIMES = 3
GZIP_MIN_CHARS = 200
GZIP_MAX_RATIO = 2.4
GZIP_INCLUDES_VALID_CALLS = True

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
_THINK_CLOSE = "</think>"
_TC_OPEN = "<tool_call>"
_TC_CLOSE = "</tool_call>"
_TC_OPEN_LEN = len(_TC_OPEN)
_TC_CLOSE_LEN = len(_TC_CLOSE)

_THINK_RE = re.compile(r"</?think>")
_TEMPLATE_TOKEN_RE = re.compile(r"<\|[A-Za-z0-9_.:\-]{1,64}\|>|<｜[^｜<>\s]{1,64}｜>")
_TOOL_RESPONSE_RE = re.compile(r"</?tool_response>")
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_WORD_RE = re.compile(f"[{_CJK}]|[^\\s{_CJK}]+")


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


# --------------------------------------------------------------------------- parse


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


_SCAN = _DECODER.scan_once
_WS = json.decoder.WHITESPACE.match


def _loads(text):
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
        obj = _loads(body)
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
            args = _loads(args)
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


def _parse(text, tool_names):
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
    return _parse(text, tool_names)[0]


class _ToolNames:
    """``name in _ToolNames(tools)`` == ``name in tool_names_of(tools)``, without building the set.

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


# ------------------------------------------------------------------------ defects


def _tail_words(s, k):
    """The last k words of s (or all of them)."""
    if s.isascii():
        parts = s.rsplit(None, k)
        return parts[1:] if len(parts) > k else parts
    return _WORD_RE.findall(s)[-k:]


def _too_short(reply):
    if len(reply) < TOO_SHORT_CHARS:
        return True
    if reply.isascii():
        return len(reply.split(None, TOO_SHORT_WORDS - 1)) < TOO_SHORT_WORDS
    return len(_WORD_RE.findall(reply)) < TOO_SHORT_WORDS


def _ends_with_repeat(a):
    if a.isascii():
        # A run repeated 3 times puts the last word in the text 3 times: most answers (a call
        # block, a reply ending "…for you?") fail this at once, without splitting 60 words.
        last = a.rsplit(None, 1)
        if not last or a.count(last[-1]) < REPEAT_MIN_TIMES:
            return False
    w = _tail_words(a, REPEAT_MAX_RUN * REPEAT_MIN_TIMES)
    n = len(w)
    if n < REPEAT_MIN_TIMES:
        return False
    last = w[-1]
    for k in range(1, min(REPEAT_MAX_RUN, n // REPEAT_MIN_TIMES) + 1):
        if w[-1 - k] != last or w[-1 - 2 * k] != last:
            continue
        run = w[-k:]
        if all(w[n - (i + 1) * k : n - i * k] == run for i in range(1, REPEAT_MIN_TIMES)):
            return True
    return False


def _gzip_ratio(s):
    b = s.encode("utf-8", "surrogatepass")  # a lone surrogate (from JSON "\\ud800") must not crash scoring
    return len(b) / len(gzip.compress(b, compresslevel=9, mtime=0))


def _end_repetition(a, spans, stopped_at_limit):
    if stopped_at_limit:
        return True
    if _ends_with_repeat(a):
        return True
    if len(a) < GZIP_MIN_CHARS:
        return False
    if spans and not GZIP_INCLUDES_VALID_CALLS:
        pieces = []
        pos = 0
        for s, e in spans:
            pieces.append(a[pos:s])
            pos = e
        pieces.append(a[pos:])
        a = "".join(pieces)
        if len(a) < GZIP_MIN_CHARS:
            return False
    return _gzip_ratio(a) > GZIP_MAX_RATIO


def _template_leak(a):
    return ("<|" in a or "<｜" in a) and _TEMPLATE_TOKEN_RE.search(a) is not None


# ----------------------------------------------------------------------- matching


@functools.lru_cache(maxsize=4096)
def _loads_args(text):
    """Gold argument strings repeat across the cases of a suite and the runs scoring it:
    decoded once. Only score_case uses it and never mutates or returns the result."""
    return _loads(text)


def expected_calls(expected_message: dict | None) -> list[dict]:
    """Expected calls of a gold assistant message (OpenAI format).

    Returns [{"name", "arguments" (dict), "optional" (list), "acceptable" (dict)}].
    Raises ValueError on a malformed gold message.
    """
    return _expected_calls(expected_message, _loads)


def _expected_calls(expected_message, loads):
    if not expected_message:
        return []
    if not isinstance(expected_message, dict):
        raise ValueError("expected message is not an object")
    tcs = expected_message.get("tool_calls")
    if not tcs:
        fc = expected_message.get("function_call")  # legacy single call
        if not fc:
            return []
        tcs = [{"function": fc}]
    if not isinstance(tcs, list):
        raise ValueError("tool_calls is not a list")
    out = []
    for i, tc in enumerate(tcs, 1):
        if not isinstance(tc, dict):
            raise ValueError(f"tool_calls[{i}] is not an object")
        fn = tc.get("function")
        if not isinstance(fn, dict):
            fn = tc
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"tool_calls[{i}] has no name")
        args = fn.get("arguments", {})
        if args is None:
            args = {}
        if isinstance(args, str):
            if not args.strip():
                args = {}
            else:
                try:
                    args = loads(args)
                except ValueError as exc:
                    raise ValueError(f"tool_calls[{i}] arguments are not JSON: {exc}") from None
        if not isinstance(args, dict):
            raise ValueError(f"tool_calls[{i}] arguments are not an object")
        optional = tc.get("optional") or fn.get("optional") or []
        acceptable = tc.get("acceptable") or fn.get("acceptable") or {}
        if optional and (not isinstance(optional, list) or not all(isinstance(k, str) for k in optional)):
            raise ValueError(f"tool_calls[{i}] optional is not a list of names")
        if acceptable:
            if not isinstance(acceptable, dict):
                raise ValueError(f"tool_calls[{i}] acceptable is not an object")
            acceptable = {k: v if isinstance(v, list) else [v] for k, v in acceptable.items()}
        out.append({"name": name, "arguments": args, "optional": optional, "acceptable": acceptable})
    return out


def values_equal(a, b) -> bool:
    """JSON equality: dict order ignored, list order kept, 3 == 3.0, booleans are
    not numbers, strings are not numbers, strings compared after strip()."""
    if isinstance(a, str):
        return isinstance(b, str) and a.strip() == b.strip()
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)):
        return isinstance(b, (int, float)) and a == b
    if a is None:
        return b is None
    if isinstance(a, dict):
        if not isinstance(b, dict) or len(a) != len(b):
            return False
        for k, v in a.items():
            if k not in b or not values_equal(v, b[k]):
                return False
        return True
    if isinstance(a, (list, tuple)):
        if not isinstance(b, (list, tuple)) or len(a) != len(b):
            return False
        for x, y in zip(a, b, strict=True):
            if not values_equal(x, y):
                return False
        return True
    return False


def call_matches(call: ToolCall, expected: dict) -> bool:
    """One model call against one expected call (from ``expected_calls``)."""
    if call.name != expected["name"]:
        return False
    got = call.arguments
    want = expected["arguments"]
    optional = expected.get("optional") or ()
    acceptable = expected.get("acceptable") or {}
    if not optional and not acceptable:  # the plain OpenAI case
        if len(got) != len(want):
            return False
        for k, v in want.items():
            if k not in got or not values_equal(got[k], v):
                return False
        return True
    for k in want:
        if k not in got and k not in optional:
            return False
    for k in acceptable:
        if k not in got and k not in optional:
            return False
    for k, v in got.items():
        alts = acceptable.get(k)
        if k in want:
            if values_equal(v, want[k]):
                continue
            if alts is None:
                return False
        elif alts is None:
            if k in optional:
                continue  # optional, no value given by the case: any value
            return False  # extra key
        if not any(values_equal(v, x) for x in alts):
            return False
    return True


def _max_matching(adj, n_right):
    """Kuhn's augmenting paths; adj[i] lists the right nodes left node i may take."""
    owner = [-1] * n_right

    def augment(i, seen):
        for j in adj[i]:
            if not seen[j]:
                seen[j] = True
                if owner[j] < 0 or augment(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    size = 0
    for i in range(len(adj)):
        if adj[i] and augment(i, [False] * n_right):
            size += 1
    return size


def match_calls(calls: list[ToolCall], expected: list[dict]) -> int:
    """Size of a maximum bipartite matching between model calls and expected
    calls (each expected call used at most once)."""
    if not calls or not expected:
        return 0
    if len(calls) == 1 and len(expected) == 1:
        return int(call_matches(calls[0], expected[0]))
    adj = [[j for j, e in enumerate(expected) if call_matches(c, e)] for c in calls]
    return _max_matching(adj, len(expected))


def _names_matched(names, exp_names):
    """Size of the multiset intersection of two name lists."""
    if len(names) == 1 and len(exp_names) == 1:
        return int(names[0] == exp_names[0])
    rest = list(exp_names)
    k = 0
    for n in names:
        if n in rest:
            rest.remove(n)
            k += 1
    return k


# ----------------------------------------------------------------------- scoring


def score_case(
    expected_message: dict | None,
    output: str,
    tools: list[dict] | None,
    stopped_at_limit: bool | None = None,
) -> dict:
    """Score one model output against one gold assistant message.

    ``tools`` is the case's list of OpenAI tool specs (``None``: names are not
    checked). ``stopped_at_limit`` is True when generation hit the token limit,
    None when unknown.
    """
    exp = _expected_calls(expected_message, _loads_args) if expected_message else []
    p, a, trailing, spans = _parse(output, _ToolNames(tools or ()) if tools is not None else None)

    calls = p.calls
    malformed = p.malformed
    n_exp = len(exp)
    expected_call = n_exp > 0
    made_call = p.n_call_blocks > 0

    if malformed:
        tp = 0
        name_matched = 0
        names_right = False
    elif calls and exp:
        tp = match_calls(calls, exp)
        call_names = [c.name for c in calls]
        exp_names = [e["name"] for e in exp]
        name_matched = _names_matched(call_names, exp_names)
        names_right = len(calls) == n_exp and name_matched == n_exp
    else:
        tp = 0
        name_matched = 0
        names_right = not calls and not exp
    all_right = not malformed and len(calls) == n_exp and tp == n_exp

    if expected_call:
        tool_call_accuracy = int(all_right)
    else:
        tool_call_accuracy = int(not made_call)
    if made_call:
        tool_name_accuracy = int(names_right)
        tool_args_accuracy = int(all_right)
    else:
        tool_name_accuracy = None
        tool_args_accuracy = None

    defects = {
        "think_tags": int(not p.think_ok),
        "malformed_call": int(malformed),
        "too_short": int(not made_call and _too_short(p.reply_text)),
        "end_repetition": int(_end_repetition(a, spans, stopped_at_limit)),
        "fabricated_tool_result": int(
            trailing or ("tool_response>" in a and _TOOL_RESPONSE_RE.search(a) is not None)
        ),
        "template_leak": int(_template_leak(a)),
    }
    response_quality = int(not any(defects.values()))

    return {
        "tool_call_accuracy": tool_call_accuracy,
        "tool_name_accuracy": tool_name_accuracy,
        "tool_args_accuracy": tool_args_accuracy,
        "response_quality": response_quality,
        "defects": defects,
        "expected_call": expected_call,
        "made_call": made_call,
        "false_call": None if expected_call else int(made_call),
        "missed_call": int(not made_call) if expected_call else None,
        "calls_tp": tp,
        "calls_predicted": p.n_call_blocks,
        "calls_expected": n_exp,
        "calls_name_matched": name_matched,
        "name_right_args_right": (None if not tool_name_accuracy else tool_args_accuracy),
        "parsed": {
            "reasoning": p.reasoning,
            "reply_text": p.reply_text,
            "calls": [{"name": c.name, "arguments": c.arguments} for c in calls],
            "malformed_reasons": p.malformed_reasons,
        },
    }


# ----------------------------------------------------------------------- summary


def standard_error(p: float | None, n: int) -> float | None:
    """sqrt(p(1-p)/n); None when p is None or n is 0."""
    if p is None or not n:
        return None
    return math.sqrt(p * (1.0 - p) / n)


def _rate(values):
    n = 0
    k = 0
    for v in values:
        if v is not None:
            n += 1
            k += v
    p = k / n if n else None
    return {"n": n, "count": k, "value": p, "se": standard_error(p, n)}


def _ratio(num, den):
    return num / den if den else None


def _headline(scores):
    out = {"n": len(scores)}
    for m in HEADLINE_METRICS:
        out[m] = _rate(s.get(m) for s in scores)
    return out


def summarize(
    case_scores: list[dict],
    categories: list[list[str]] | None = None,
    turn_depths: list[int | None] | None = None,
) -> dict:
    """Aggregate ``score_case`` results.

    Every rate is {"n", "count", "value", "se"}; value and se are None when n is 0.
    ``categories[i]`` (list of str) and ``turn_depths[i]`` (int or None) describe
    case i and give the ``by_category`` / ``by_turn_depth`` breakdowns; a case
    with no category is grouped under "(uncategorized)", one with no depth is
    left out of ``by_turn_depth``.
    """
    scores = list(case_scores)
    n = len(scores)
    out = _headline(scores)
    out["defects"] = {d: _rate((s.get("defects") or {}).get(d) for s in scores) for d in DEFECTS}
    out["false_call_rate"] = _rate(s.get("false_call") for s in scores)
    out["missed_call_rate"] = _rate(s.get("missed_call") for s in scores)
    out["args_accuracy_given_name"] = _rate(s.get("name_right_args_right") for s in scores)

    tp = sum(s.get("calls_tp", 0) for s in scores)
    pred = sum(s.get("calls_predicted", 0) for s in scores)
    gold = sum(s.get("calls_expected", 0) for s in scores)
    named = sum(s.get("calls_name_matched", 0) for s in scores)
    precision = _ratio(tp, pred)
    recall = _ratio(tp, gold)
    if precision is None or recall is None:
        f1 = None
    elif precision + recall == 0:
        f1 = 0.0
    else:
        f1 = 2 * precision * recall / (precision + recall)
    out["per_call"] = {
        "tp": tp,
        "predicted": pred,
        "expected": gold,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "name_matched": named,
        "args_accuracy_given_name": _ratio(tp, named),
    }

    if categories is not None:
        if len(categories) != n:
            raise ValueError("categories must have one entry per case")
        groups = {}
        for s, cats in zip(scores, categories, strict=True):
            for c in set(cats or ()) or ("(uncategorized)",):
                groups.setdefault(c, []).append(s)
        out["by_category"] = {c: _headline(g) for c, g in sorted(groups.items())}
    if turn_depths is not None:
        if len(turn_depths) != n:
            raise ValueError("turn_depths must have one entry per case")
        groups = {}
        for s, d in zip(scores, turn_depths, strict=True):
            if d is not None:
                groups.setdefault(d, []).append(s)
        out["by_turn_depth"] = {d: _headline(g) for d, g in sorted(groups.items())}
    return out
