"""Reading JSONL files line by line, where any line may be hostile.

Every reader of an uploaded JSONL file (the score_outputs command, eval suites and outputs)
goes through ``read_jsonl_lines``: one result per line, a record or a FieldError saying what is
wrong with that line, so one bad line never stops the file and never becomes a traceback.

* a line longer than ``max_bytes`` is skipped in bounded pieces, never held whole;
* bytes are decoded line by line: invalid UTF-8 is that line's error, with the byte offset;
* strict JSON: no NaN / Infinity, no number too large for a float (``1e999``), no integer over
  Python's digit limit, nothing nested deeper than ``MAX_JSON_DEPTH`` (the parser's own
  recursion never escapes);
* ``storage_problem`` adds what the database cannot store (NUL, a lone surrogate such as
  ``"\\ud800"``, an integer beyond 64 bits) for readers that store what they read;
* ``dumps_line`` writes a record back as one JSON line that any UTF-8 stream accepts.

Standard library only; FieldError and the depth limit come from the rest of the layer.
"""

from __future__ import annotations

import io
import json
import math
import re

from .errors import FieldError
from .validate import MAX_JSON_DEPTH, json_problem

DEFAULT_MAX_LINE_BYTES = 10_000_000
SKIP_CHUNK = 1 << 20  # an oversize line is read past in pieces of this size
INT_RANGE = (-(2**63), 2**64 - 1)  # what the database's JSON encoder (orjson) writes


class _Refused(ValueError):
    pass


def _reject_constant(name):
    raise _Refused(f"{name} is not JSON")


def _finite_float(text):
    value = float(text)
    if math.isinf(value):
        raise _Refused(f"number {text[:40]} is too large")
    return value


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def iter_lines(fh, start_line: int = 0, max_bytes: int = DEFAULT_MAX_LINE_BYTES):
    """Yield (line_no, bytes consumed, raw line without its end, or None when over max_bytes)
    from a binary file, without ever holding an oversize line whole."""
    line_no = start_line
    while True:
        chunk = fh.readline(max_bytes + 1)
        if not chunk:
            return
        if isinstance(chunk, str):  # a text file handed over by mistake: measured in its bytes
            chunk = chunk.encode("utf-8", "surrogatepass")
        consumed = len(chunk)
        line_no += 1
        if len(chunk) > max_bytes and not chunk.endswith(b"\n"):
            while chunk and not chunk.endswith(b"\n"):
                chunk = fh.readline(SKIP_CHUNK)
                if isinstance(chunk, str):
                    chunk = chunk.encode("utf-8", "surrogatepass")
                consumed += len(chunk)
            yield line_no, consumed, None
            continue
        yield line_no, consumed, chunk.rstrip(b"\r\n")


def _too_deep(value, max_depth: int) -> str | None:
    """The path of the first container nested deeper than max_depth, else None."""
    stack = [(value, "", 1)]
    while stack:
        node, path, depth = stack.pop()
        if isinstance(node, dict):
            if depth > max_depth:
                return path
            stack.extend((v, f"{path}.{k}" if path else k, depth + 1) for k, v in node.items())
        elif isinstance(node, list):
            if depth > max_depth:
                return path
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(node))
    return None


def decode_line(raw: bytes, max_bytes: int = DEFAULT_MAX_LINE_BYTES, max_depth: int = MAX_JSON_DEPTH):
    """One line's bytes -> (record, None) or (None, FieldError)."""
    if len(raw) > max_bytes:
        return None, FieldError("", f"line is {len(raw):,} bytes, over the limit of {max_bytes:,}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, FieldError("", f"not valid UTF-8 (byte {exc.start}: {raw[exc.start : exc.start + 1]!r})")
    try:
        record = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        return None, FieldError("", f"invalid JSON: {exc.msg} at column {exc.colno}")
    except _Refused as exc:
        return None, FieldError("", f"invalid JSON: {exc}")
    except ValueError:  # int() refusing a number of thousands of digits
        return None, FieldError("", "invalid JSON: a number has too many digits")
    except RecursionError:
        return None, FieldError("", f"nested more than {max_depth} levels deep")
    # Cheap test first: only a line with many brackets is walked.
    if raw.count(b"{") + raw.count(b"[") > max_depth:
        where = _too_deep(record, max_depth)
        if where is not None:
            where = where if len(where) <= 60 else where[:60] + "…"
            return None, FieldError(where, f"is nested more than {max_depth} levels deep")
    return record, None


def read_jsonl_lines(source, max_bytes: int = DEFAULT_MAX_LINE_BYTES, storable: bool = False):
    """Yield (line_no, record or FieldError) for every non-blank line of a JSONL source.

    ``source`` is a binary file (read in bounded pieces; a text stream is read through its
    ``buffer``) or an iterable of lines, str or bytes. Line numbers count from 1. With
    ``storable``, a record the database could not store (``storage_problem``) is an error too.
    """
    if isinstance(source, io.TextIOBase) and hasattr(source, "buffer"):
        source = source.buffer
    if hasattr(source, "readline") and not isinstance(source, io.TextIOBase):
        lines = ((n, raw, size) for n, size, raw in iter_lines(source, 0, max_bytes))
    else:
        lines = ((n, raw, len(raw)) for n, raw in enumerate(_as_bytes(source), 1))
    for line_no, raw, size in lines:
        if raw is None or len(raw) > max_bytes:
            yield line_no, FieldError("", f"line is {size:,} bytes, over the limit of {max_bytes:,}")
            continue
        if not raw.strip():
            continue
        record, error = decode_line(raw, max_bytes)
        if error is None and storable:
            error = storage_problem(record, raw)
        yield line_no, error if error is not None else record


def _as_bytes(lines):
    for line in lines:
        if isinstance(line, str):
            line = line.encode(
                "utf-8", "surrogatepass"
            )  # a text stream's lone surrogate fails in decode_line
        yield line.rstrip(b"\r\n")


# Only a line whose text holds these can carry a lone surrogate or a huge integer.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_LONG_DIGITS = re.compile(rb"\d{19}")


def storage_problem(record, raw: bytes | None = None) -> FieldError | None:
    """What the database cannot store in a decoded record: a NUL character or nesting deeper
    than MAX_JSON_DEPTH (``json_problem``), a lone surrogate, an integer beyond 64 bits.
    With the line's bytes, records that cannot hold such values are not walked."""
    if raw is None or b"\\u0000" in raw or raw.count(b"{") + raw.count(b"[") > MAX_JSON_DEPTH:
        problem = json_problem(record)
        if problem:
            return problem
    if raw is not None and not _SURROGATE_ESCAPE.search(raw) and not _LONG_DIGITS.search(raw):
        return None
    lo, hi = INT_RANGE
    stack = [(record, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if not _encodable(node):
                return FieldError(path, "contains a lone surrogate (such as \\ud800), which is not text")
        elif isinstance(node, bool):
            continue
        elif isinstance(node, int):
            if not lo <= node <= hi:
                return FieldError(path, "is an integer too large to store (over 64 bits)")
        elif isinstance(node, dict):
            for k, v in node.items():
                where = f"{path}.{k}" if path else k
                if not _encodable(k):
                    return FieldError(path, "has a key with a lone surrogate (such as \\ud800)")
                stack.append((v, where))
        elif isinstance(node, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(node))
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def dumps_line(value) -> str:
    """One JSON line, UTF-8 as is; a lone surrogate (it can only sit inside a JSON string) is
    written as its JSON escape ``\\ud800`` instead of breaking the stream."""
    text = json.dumps(value, ensure_ascii=False)
    if _encodable(text):
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
