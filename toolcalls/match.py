"""Match model calls against expected calls (metrics.md, "Matching one call against an
expected call"): JSON value equality, optional and acceptable arguments, and parallel calls
as a bipartite matching.

Choices where metrics.md leaves room (each has a test in tests/test_metrics.py):

* Optional argument listed with neither an expected value nor acceptable values:
  any value is accepted when present. Acceptable values are added to the expected
  value, not replacing it.
"""

from __future__ import annotations

import functools

from .parse import ToolCall, strict_loads


@functools.lru_cache(maxsize=4096)
def _loads_args(text):
    """Gold argument strings repeat across the cases of a suite and the runs scoring it:
    decoded once. Only expected_calls_cached uses it; its callers never mutate the result."""
    return strict_loads(text)


def expected_calls(expected_message: dict | None) -> list[dict]:
    """Expected calls of a gold assistant message (OpenAI format).

    Returns [{"name", "arguments" (dict), "optional" (list), "acceptable" (dict)}].
    Raises ValueError on a malformed gold message.
    """
    return _expected_calls(expected_message, strict_loads)


def expected_calls_cached(expected_message: dict | None) -> list[dict]:
    """``expected_calls`` with the argument strings decoded once per process, for score_case:
    the result shares its argument dicts with other calls and must not be mutated."""
    return _expected_calls(expected_message, _loads_args)


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


def names_matched(names, exp_names):
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
