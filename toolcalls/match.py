"""Match model calls against expected calls (metrics.md, "Matching one call against an
expected call"): JSON value equality, optional and acceptable arguments, and parallel calls
as a bipartite matching.

Choices where metrics.md leaves room (each has a test in tests/test_metrics.py or
tests/test_metrics_hardening.py):

* Optional argument listed with neither an expected value nor acceptable values: any value
  is accepted when present, unless the tool's JSON schema is at hand (``tools``) and the value
  breaks the schema of that property. Acceptable values are added to the expected value, not
  replacing it.
* A name in ``optional`` / ``acceptable`` is a top-level key when the expected or the model's
  arguments have a key of exactly that name, or when it holds no dot; otherwise it is a dotted
  path through nested objects (``"address.zip"``). Paths go through objects only, never into
  list items. A key named only in ``acceptable`` (at any depth) must be present unless it, or
  an object above it, is optional.
* Values are compared without recursion, so any depth compares; a gold rule path nested so
  deep that Python's stack runs out makes that call unmatched, never an exception.
* Parallel calls: identical calls are grouped and matched with their counts (a maximum flow,
  Dinic's algorithm, iterative), so a thousand identical calls cost one comparison, and plain
  expected calls are looked up by a normalised form of their arguments instead of compared
  with every model call.
"""

from __future__ import annotations

import functools
import json
from collections import Counter

from .parse import ToolCall, strict_loads
from .validate import schema_errors, tool_parameters


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
            if not isinstance(acceptable, dict) or not all(isinstance(k, str) for k in acceptable):
                raise ValueError(f"tool_calls[{i}] acceptable is not an object")
            acceptable = {k: v if isinstance(v, list) else [v] for k, v in acceptable.items()}
        out.append({"name": name, "arguments": args, "optional": optional, "acceptable": acceptable})
    return out


# ------------------------------------------------------------------------ value equality


def _scalars_equal(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)):
        return isinstance(b, (int, float)) and a == b
    if a is None:
        return b is None
    return False


def values_equal(a, b) -> bool:
    """JSON equality: dict order ignored, list order kept, 3 == 3.0, booleans are
    not numbers, strings are not numbers, strings compared after strip().

    Containers are walked with an explicit stack: no depth is too deep to compare."""
    if isinstance(a, str):
        return isinstance(b, str) and a.strip() == b.strip()
    if not isinstance(a, (dict, list, tuple)):
        return _scalars_equal(a, b)
    stack = [(a, b)]
    pop, push = stack.pop, stack.append
    while stack:
        a, b = pop()
        if isinstance(a, str):
            if not (isinstance(b, str) and a.strip() == b.strip()):
                return False
        elif isinstance(a, dict):
            if not isinstance(b, dict) or len(a) != len(b):
                return False
            for k, v in a.items():
                if k not in b:
                    return False
                push((v, b[k]))
        elif isinstance(a, (list, tuple)):
            if not isinstance(b, (list, tuple)) or len(a) != len(b):
                return False
            stack.extend(zip(a, b, strict=True))
        elif not _scalars_equal(a, b):
            return False
    return True


# --------------------------------------------------------------------- one call, one gold


def call_matches(call: ToolCall, expected: dict, tools: list | None = None) -> bool:
    """One model call against one expected call (from ``expected_calls``).

    ``tools`` (the case's tool specs, optional) lets an optional argument with no expected
    value be checked against its tool's JSON schema."""
    if call.name != expected["name"]:
        return False
    got = call.arguments
    want = expected["arguments"]
    optional = expected.get("optional")
    acceptable = expected.get("acceptable")
    if not optional and not acceptable:  # the plain OpenAI case
        if len(got) != len(want):
            return False
        for k, v in want.items():
            if k not in got or not values_equal(got[k], v):
                return False
        return True
    try:
        return _GoldRules(call, expected, tools).object_matches(got, want, ())
    except RecursionError:  # a rule path thousands of objects deep: unmatched, documented above
        return False


class _Rule:
    """One key of the gold arguments named by optional / acceptable, with the keys below it."""

    __slots__ = ("children", "optional", "alts", "required")

    def __init__(self):
        self.children: dict[str, _Rule] = {}
        self.optional = False
        self.alts = None  # acceptable values, when the case gives some
        self.required = False  # named by acceptable with nothing optional on the way: must be present


class _GoldRules:
    """The optional / acceptable names of one expected call as a tree of keys (built in time
    linear in the names, however long a path), applied to one model call."""

    __slots__ = ("call", "tools", "root", "_params")

    def __init__(self, call, expected, tools):
        want, got = expected["arguments"], call.arguments
        self.call = call
        self.tools = tools
        self._params = None
        self.root = _Rule()

        def node(name):
            keys = [name] if name in want or name in got or "." not in name else name.split(".")
            rule, path = self.root, []
            for k in keys:
                rule = rule.children.setdefault(k, _Rule())
                path.append(rule)
            return path

        for name in expected.get("optional") or ():
            node(name)[-1].optional = True
        for name, alts in (expected.get("acceptable") or {}).items():
            path = node(name)
            path[-1].alts = alts
            if not any(r.optional for r in path):
                for r in path:
                    r.required = True

    def object_matches(self, got: dict, want: dict, path: tuple, rule: _Rule | None = None) -> bool:
        children = (rule or self.root).children
        for k in want:
            if k not in got and not (k in children and children[k].optional):
                return False
        for k, child in children.items():
            if child.required and k not in got:
                return False
        for k, v in got.items():
            child = children.get(k)
            if child is None:
                if k in want and values_equal(v, want[k]):
                    continue
                return False  # wrong value or extra key
            alts = child.alts
            if k in want:
                w = want[k]
                if child.children and isinstance(v, dict) and isinstance(w, dict):
                    if self.object_matches(v, w, path + (k,), child):
                        continue
                elif values_equal(v, w):
                    continue
            elif alts is None:
                if child.optional:
                    if self.schema_allows(path + (k,)):
                        continue
                    return False
                if child.children and isinstance(v, dict):  # an object named only by deeper rules
                    if self.object_matches(v, {}, path + (k,), child):
                        continue
                return False
            if alts is None or not any(values_equal(v, x) for x in alts):
                return False
        return True

    def schema_allows(self, p) -> bool:
        """Is the model's value at path p valid against the tool's schema (when there is one)?"""
        if not self.tools:
            return True
        if self._params is None:
            params = tool_parameters(self.tools, self.call.name)
            self._params = params if isinstance(params, dict) else {}
        if not self._params:
            return True
        try:
            errors = schema_errors(self.call.arguments, self._params, "")
        except Exception:  # noqa: BLE001 - an unusable schema says nothing about the value
            return True
        # schema_errors names a place as .key.key[0]: errors at p or inside its value reject it
        field = "".join(f".{k}" for k in p)
        return not any(e.field == field or e.field.startswith((field + ".", field + "[")) for e in errors)


# --------------------------------------------------------------------------- parallel calls

_GROUP_ABOVE = 64  # pairs of (model call, expected call) above which identical calls are grouped


def _max_matching(adj, left_cap, right_cap) -> int:
    """Maximum matching in a bipartite graph whose nodes have capacities.

    ``adj[i]`` lists the right nodes left node i may take; left node i can be used
    ``left_cap[i]`` times and right node j ``right_cap[j]`` times. A greedy pass first (it is
    already maximum for almost every turn); otherwise Dinic's maximum flow from a source
    through the left and right nodes to a sink, with an explicit stack instead of recursion.
    """
    left_rest = list(left_cap)
    right_rest = list(right_cap)
    size = 0
    for i, js in enumerate(adj):
        for j in js:
            if not left_rest[i]:
                break
            take = min(left_rest[i], right_rest[j])
            if take:
                left_rest[i] -= take
                right_rest[j] -= take
                size += take
    reachable = {j for js in adj for j in js}
    bound = min(
        sum(c for c, js in zip(left_cap, adj, strict=True) if js), sum(right_cap[j] for j in reachable)
    )
    if size == bound:
        return size
    return _max_flow(adj, left_cap, right_cap)


def _max_flow(adj, left_cap, right_cap) -> int:
    n_left = len(adj)
    source = n_left + len(right_cap)
    sink = source + 1
    head = [[] for _ in range(sink + 1)]
    to, cap = [], []

    def edge(u, v, c):  # edge e and its reverse e ^ 1
        head[u].append(len(to))
        to.append(v)
        cap.append(c)
        head[v].append(len(to))
        to.append(u)
        cap.append(0)

    for i, js in enumerate(adj):
        if js:
            edge(source, i, left_cap[i])
            for j in js:
                edge(i, n_left + j, left_cap[i])
    for j, c in enumerate(right_cap):
        edge(n_left + j, sink, c)

    flow = 0
    while True:
        level = [-1] * (sink + 1)
        level[source] = 0
        queue = [source]
        for u in queue:  # breadth-first levels over edges with room left
            for e in head[u]:
                if cap[e] > 0 and level[to[e]] < 0:
                    level[to[e]] = level[u] + 1
                    queue.append(to[e])
        if level[sink] < 0:
            return flow
        nxt = [0] * (sink + 1)  # per node: the first of its edges not yet found useless
        path: list[int] = []
        u = source
        while True:
            if u == sink:
                push = min(cap[e] for e in path)
                for e in path:
                    cap[e] -= push
                    cap[e ^ 1] += push
                flow += push
                path.clear()
                u = source
                continue
            edges = head[u]
            k = nxt[u]
            while k < len(edges) and not (cap[edges[k]] > 0 and level[to[edges[k]]] == level[u] + 1):
                k += 1
            nxt[u] = k
            if k < len(edges):
                path.append(edges[k])
                u = to[edges[k]]
            elif u == source:
                break
            else:  # dead end in this phase: step back
                level[u] = -1
                u = to[path.pop() ^ 1]
                nxt[u] += 1


def _groups(items, key):
    """[(first item, count)] of items with equal keys; an item with no key stands alone."""
    index: dict = {}
    out: list[list] = []
    for item in items:
        try:
            k = key(item)
        except (TypeError, ValueError, RecursionError):
            k = object()
        j = index.get(k)
        if j is None:
            index[k] = len(out)
            out.append([item, 1])
        else:
            out[j][1] += 1
    return out


def _call_key(call):
    return call.name, json.dumps(call.arguments, sort_keys=True)


def _expected_key(e):
    return json.dumps([e["name"], e["arguments"], e["optional"], e["acceptable"]], sort_keys=True)


_NORM_MAX_DEPTH = 64


class _TooDeep(Exception):
    pass


def _norm(v, depth=0):
    """A hashable form of a JSON value with ``_norm(a) == _norm(b)`` exactly when
    ``values_equal(a, b)``: the index that finds plain expected calls without comparing pairs."""
    if isinstance(v, str):
        return v.strip()
    if isinstance(v, bool):
        return ("b", v)  # True == 1 in Python, never in JSON
    if isinstance(v, (int, float)) or v is None:
        return v  # 3 == 3.0, with equal hashes
    if depth >= _NORM_MAX_DEPTH:
        raise _TooDeep
    if isinstance(v, dict):
        return ("d", frozenset((k, _norm(x, depth + 1)) for k, x in v.items()))
    if isinstance(v, (list, tuple)):
        return ("l", tuple(_norm(x, depth + 1) for x in v))
    return object()  # equal to nothing, as values_equal says


def _plain_key(name, arguments):
    try:
        return name, _norm(arguments)
    except _TooDeep:
        return None


def match_calls(calls: list[ToolCall], expected: list[dict], tools: list | None = None) -> int:
    """Size of a maximum bipartite matching between model calls and expected
    calls (each expected call used at most once)."""
    if not calls or not expected:
        return 0
    if len(calls) == 1 and len(expected) == 1:
        return int(call_matches(calls[0], expected[0], tools))
    if len(calls) * len(expected) <= _GROUP_ABOVE:
        adj = [[j for j, e in enumerate(expected) if call_matches(c, e, tools)] for c in calls]
        return _max_matching(adj, [1] * len(calls), [1] * len(expected))
    # Many calls. Identical calls behave identically: each distinct model call meets each
    # distinct expected call once, and the groups are matched with their counts. A plain
    # expected call (no optional / acceptable) matches exactly the calls JSON-equal to it, so it
    # is found by its normalised form; the other expected calls of the same name are compared.
    call_groups = _groups(calls, _call_key)
    exp_groups = _groups(expected, _expected_key)
    plain: dict = {}  # (name, normalised arguments) -> expected groups
    compared: dict[str, list[int]] = {}  # name -> expected groups compared call by call
    for j, (e, _) in enumerate(exp_groups):
        key = None if e["optional"] or e["acceptable"] else _plain_key(e["name"], e["arguments"])
        if key is None:
            compared.setdefault(e["name"], []).append(j)
        else:
            plain.setdefault(key, []).append(j)
    adj = []
    for c, _ in call_groups:
        key = _plain_key(c.name, c.arguments) if plain else None
        if key is None and plain:  # too deep to normalise: compare it with every expected call
            js = [j for j, (e, _) in enumerate(exp_groups) if call_matches(c, e, tools)]
        else:
            js = list(plain.get(key, ())) if key is not None else []
            js += [j for j in compared.get(c.name, ()) if call_matches(c, exp_groups[j][0], tools)]
        adj.append(js)
    return _max_matching(adj, [n for _, n in call_groups], [n for _, n in exp_groups])


def names_matched(names, exp_names):
    """Size of the multiset intersection of two name lists."""
    if len(names) == 1 and len(exp_names) == 1:
        return int(names[0] == exp_names[0])
    if len(names) * len(exp_names) > _GROUP_ABOVE:
        return sum((Counter(names) & Counter(exp_names)).values())
    rest = list(exp_names)
    k = 0
    for n in names:
        if n in rest:
            rest.remove(n)
            k += 1
    return k
