"""The six defects of ``response_quality`` (metrics.md, "Per-case metrics").

Choices where metrics.md leaves room (each has a test in tests/test_metrics.py or
tests/test_metrics_hardening.py):

* "Words" are whitespace-separated tokens, except that each CJK ideograph or kana
  counts as one word (Chinese/Japanese replies have no spaces).
* ``end_repetition`` reads the reply text as metrics.md defines it for this defect: the
  answer (stop token removed) with its well-formed tool-call blocks cut out, each block
  replaced by a line break so the words on either side stay apart. Malformed blocks stay
  in that text. Both the tail-run test and the gzip test (200+ characters of reply text)
  read it, so correct parallel calls, however many, never trip the gzip test.
* "The same call 3 or more times in a row" counts consecutive well-formed calls, text
  between them included; "identical" is ``values_equal`` (JSON equality, as matching).
* Any ``<|…|>`` token left in the answer once its stop token is removed is a
  ``template_leak``. ``</tool_response>`` counts like ``<tool_response>``.
"""

from __future__ import annotations

import gzip
import re

from .match import values_equal
from .parse import ParsedOutput

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

_TEMPLATE_TOKEN_RE = re.compile(r"<\|[A-Za-z0-9_.:\-]{1,64}\|>|<｜[^｜<>\s]{1,64}｜>")
_TOOL_RESPONSE_RE = re.compile(r"</?tool_response>")
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_WORD_RE = re.compile(f"[{_CJK}]|[^\\s{_CJK}]+")


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


def _reply_without_calls(a, spans):
    """The answer with its well-formed call blocks cut out (each leaves a line break)."""
    if not spans:
        return a
    pieces = []
    pos = 0
    for start, end in spans:
        pieces.append(a[pos:start])
        pos = end
    pieces.append(a[pos:])
    return "\n".join(pieces)


def _same_call_repeated(calls):
    """The same call (name and JSON-equal arguments) REPEAT_MIN_TIMES or more times in a row."""
    run = 1
    for prev, cur in zip(calls, calls[1:], strict=False):
        if cur.name == prev.name and values_equal(cur.arguments, prev.arguments):
            run += 1
            if run >= REPEAT_MIN_TIMES:
                return True
        else:
            run = 1
    return False


def _end_repetition(a, spans, calls, stopped_at_limit):
    if stopped_at_limit:
        return True
    if len(calls) >= REPEAT_MIN_TIMES and _same_call_repeated(calls):
        return True
    reply = _reply_without_calls(a, spans).strip()
    if not reply:
        return False
    if _ends_with_repeat(reply):
        return True
    return len(reply) >= GZIP_MIN_CHARS and _gzip_ratio(reply) > GZIP_MAX_RATIO


def _template_leak(a):
    return ("<|" in a or "<｜" in a) and _TEMPLATE_TOKEN_RE.search(a) is not None


def find_defects(
    parsed: ParsedOutput, answer: str, trailing: bool, spans, stopped_at_limit: bool | None
) -> dict:
    """{defect: 0 or 1} for one output, from ``scan_output``'s results."""
    made_call = parsed.n_call_blocks > 0
    return {
        "think_tags": int(not parsed.think_ok),
        "malformed_call": int(parsed.malformed),
        "too_short": int(not made_call and _too_short(parsed.reply_text)),
        "end_repetition": int(_end_repetition(answer, spans, parsed.calls, stopped_at_limit)),
        "fabricated_tool_result": int(
            trailing or ("tool_response>" in answer and _TOOL_RESPONSE_RE.search(answer) is not None)
        ),
        "template_leak": int(_template_leak(answer)),
    }
