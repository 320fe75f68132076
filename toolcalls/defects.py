"""The six defects of ``response_quality`` (metrics.md, "Per-case metrics").

Choices where metrics.md leaves room (each has a test in tests/test_metrics.py):

* "Words" are whitespace-separated tokens, except that each CJK ideograph or kana
  counts as one word (Chinese/Japanese replies have no spaces).
* The gzip test of ``end_repetition`` reads the whole answer, as metrics.md says,
  well-formed tool-call blocks included. Known consequence: three or more correct
  parallel calls to one tool compress about 2.5x and are flagged; setting
  ``GZIP_INCLUDES_VALID_CALLS`` to False leaves valid blocks out of that test, for
  teams that choose to depart from the definition.
* Any ``<|…|>`` token left in the answer once its stop token is removed is a
  ``template_leak``. ``</tool_response>`` counts like ``<tool_response>``.
"""

from __future__ import annotations

import gzip
import re

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
GZIP_INCLUDES_VALID_CALLS = True

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


def find_defects(
    parsed: ParsedOutput, answer: str, trailing: bool, spans, stopped_at_limit: bool | None
) -> dict:
    """{defect: 0 or 1} for one output, from ``scan_output``'s results."""
    made_call = parsed.n_call_blocks > 0
    return {
        "think_tags": int(not parsed.think_ok),
        "malformed_call": int(parsed.malformed),
        "too_short": int(not made_call and _too_short(parsed.reply_text)),
        "end_repetition": int(_end_repetition(answer, spans, stopped_at_limit)),
        "fabricated_tool_result": int(
            trailing or ("tool_response>" in answer and _TOOL_RESPONSE_RE.search(answer) is not None)
        ),
        "template_leak": int(_template_leak(answer)),
    }
