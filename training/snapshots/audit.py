"""The data audit every dataset snapshot passes before it may become ready.

Each check counts the rows it flags and keeps a few examples. Each is configured per
snapshot to `block` (the snapshot fails and says why), `warn` (reported, the snapshot
still becomes ready) or `off`. Row checks run while rows stream to disk
(`Auditor.check_row`); duplicates and train/eval leakage need every row and run at the
end over the compact per-row index (`Auditor.end_checks`).

What is checked is the *target*: the corrected or approved assistant message of an SFT
row, the chosen message of a DPO pair, the expected message of an eval case. The
rejected side of a pair is supposed to be bad; only "chosen identical to rejected"
looks at it.
"""

from __future__ import annotations

from dataclasses import dataclass

from config.text import counted
from toolcalls.parse import parse_output
from toolcalls.validate import decode_arguments, schema_errors, tool_parameters

from . import roundtrip

BLOCK, WARN, OFF = "block", "warn", "off"
MODES = (BLOCK, WARN, OFF)
MAX_EXAMPLES = 5


@dataclass(frozen=True)
class Check:
    key: str
    title: str
    description: str
    default: str
    kinds: tuple[str, ...] = ("sft", "dpo", "eval")


CHECKS = [
    Check(
        "invalid_tool_json",
        "Tool-call JSON invalid",
        "A tool call's arguments are not a JSON object, or the text holds a malformed <tool_call> block.",
        BLOCK,
    ),
    Check(
        "unknown_tool",
        "Tool not in tools",
        "A tool call names a tool missing from the row's tools list.",
        BLOCK,
    ),
    Check(
        "schema_violation",
        "Arguments break the tool's schema",
        "A tool call's arguments do not validate against the tool's JSON schema.",
        BLOCK,
    ),
    Check(
        "think_tags",
        "Unbalanced <think> tags",
        "<think> / </think> unbalanced, nested or out of order in the target.",
        BLOCK,
    ),
    Check("empty_target", "Empty target", "The target has neither reply text nor a tool call.", BLOCK),
    Check(
        "short_target",
        "Too-short target",
        "The target has no tool call and its reply is shorter than the minimum characters.",
        WARN,
    ),
    Check(
        "exact_duplicate",
        "Exact duplicates",
        "The row teaches exactly what an earlier row does: the same bytes, or for an eval case the same "
        "prompt, expected answer and tools whatever its case id and source.",
        WARN,
    ),
    Check(
        "normalised_duplicate",
        "Normalised duplicates",
        "The row equals an earlier row once lower-cased with whitespace removed (exact duplicates are "
        "not counted again).",
        WARN,
    ),
    Check(
        "chosen_equals_rejected",
        "Chosen identical to rejected",
        "The pair's chosen and rejected messages say the same thing (arguments compared as JSON).",
        BLOCK,
        ("dpo",),
    ),
    Check(
        "pair_context_mismatch",
        "Pair answers different contexts",
        "A preference whose two responses answer different contexts; it produces no row.",
        BLOCK,
        ("dpo",),
    ),
    Check(
        "leakage",
        "Train/eval leakage",
        "The row's conversation, or a conversation with the same normalised prompt, is in an eval snapshot "
        "(for a train snapshot) or in a train snapshot (for an eval snapshot) of this project.",
        BLOCK,
    ),
    Check(
        "label_conflict",
        "Unresolved label conflicts",
        "Items annotators disagree on (opposite verdicts, opposite or mirrored preferences, different "
        "expected answers for one eval case) with no lead decision and no majority. Each item makes one "
        "row (resolve.py), so such an item is left out of the file and counted here; set to block to "
        "require a lead decision first.",
        WARN,
    ),
    Check(
        "too_long",
        "Longer than max tokens",
        "Prompt plus target is longer than the configured maximum number of tokens.",
        WARN,
    ),
    Check(
        "layout_roundtrip",
        "Row loses something in its layout",
        "The written row, read back as chat messages, differs from its source: reply text, a tool call or "
        "its arguments, a tool result, their count or order, or the tools list (LLaMA-Factory rows are also "
        f"checked against its sharegpt rules). Every row up to {roundtrip.FULL_ROWS:,} is read back, then "
        f"every {roundtrip.STRIDE}th.",
        BLOCK,
    ),
]
CHECKS_BY_KEY = {c.key: c for c in CHECKS}
ROW_LEVEL = (
    "invalid_tool_json",
    "unknown_tool",
    "schema_violation",
    "think_tags",
    "empty_target",
    "short_target",
    "chosen_equals_rejected",
    "label_conflict",
    "too_long",
    "layout_roundtrip",
)


def checks_for(kind: str) -> list[Check]:
    return [c for c in CHECKS if kind in c.kinds]


def default_modes(kind: str) -> dict[str, str]:
    return {c.key: c.default for c in checks_for(kind)}


# ------------------------------------------------------------------ message checks


_SIMPLE_TYPES = {"string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,)}
_ANNOTATIONS = {"description", "title", "examples"}


def _compile_simple(schema) -> callable | None:
    """A fast validity test for the everyday tool schema (an object of typed primitive
    properties, `required`, `additionalProperties`, `enum`), or None when the schema uses
    anything else. It only ever answers "valid" when jsonschema would too; every other
    case goes to jsonschema, which also words the error."""
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return None
    if set(schema) - {"type", "properties", "required", "additionalProperties"} - _ANNOTATIONS:
        return None
    props = schema.get("properties", {})
    required = schema.get("required", [])
    extra = schema.get("additionalProperties", True)
    if not isinstance(props, dict) or not isinstance(required, list) or not isinstance(extra, bool):
        return None
    checks = {}
    for key, sub in props.items():
        if not isinstance(sub, dict) or set(sub) - {"type", "enum"} - _ANNOTATIONS:
            return None
        types = _SIMPLE_TYPES.get(sub.get("type"))
        if types is None or ("enum" in sub and not isinstance(sub["enum"], list)):
            return None
        checks[key] = (types, sub.get("enum"))

    def valid(args: dict) -> bool:
        for key in required:
            if key not in args:
                return False
        for key, value in args.items():
            check = checks.get(key)
            if check is None:
                if not extra:
                    return False
                continue
            types, enum = check
            if type(value) not in types or (enum is not None and value not in enum):
                return False  # bool is not int here: `type`, not isinstance
        return True

    return valid


_fast_cache: dict[int, dict] = {}


def _fast_checkers(tools: list) -> dict:
    """Fast validity tests per tool name, cached per tools list object (one per distinct tools JSON)."""
    hit = _fast_cache.get(id(tools))
    if hit is None or hit["tools"] is not tools:
        if len(_fast_cache) > 256:
            _fast_cache.clear()
        names = {}
        for spec in tools or ():
            fn = spec.get("function", spec) if isinstance(spec, dict) else None
            if isinstance(fn, dict) and isinstance(fn.get("name"), str):
                names[fn["name"]] = _compile_simple(fn.get("parameters") or {"type": "object"})
        hit = _fast_cache[id(tools)] = {"tools": tools, "names": names}
    return hit["names"]


def message_problems(message: dict, tools: list, tool_names: set[str]) -> list[tuple[str, str]]:
    """(check key, detail) for every tool-call and tag problem of one assistant message."""
    problems = []
    for j, call in enumerate(message.get("tool_calls") or (), 1):
        fn = call.get("function") or {}
        name = fn.get("name")
        label = f"call {j} ({name})"
        args, why = decode_arguments(fn.get("arguments", {}))
        if why:
            problems.append(("invalid_tool_json", f"{label}: arguments {why}"))
        if name not in tool_names:
            problems.append(("unknown_tool", f"{label}: {name!r} is not in the row's tools"))
        elif args is not None:
            fast = _fast_checkers(tools).get(name)
            if fast is not None and fast(args):
                continue
            errors = schema_errors(args, tool_parameters(tools, name), "arguments")
            if errors:
                e = errors[0]
                more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
                problems.append(("schema_violation", f"{label}: {e.field}: {e.message}{more}"))
    content = message.get("content") or ""
    if "think>" in content or "tool_call>" in content:
        parsed = parse_output(content, tool_names)
        if not parsed.think_ok:
            problems.append(("think_tags", "unbalanced, nested or out-of-order <think> tags in the text"))
        if parsed.malformed:
            problems.append(
                ("invalid_tool_json", "tool call written in the text: " + "; ".join(parsed.malformed_reasons))
            )
    return problems


def target_length_problem(message: dict, min_chars: int) -> tuple[str, str] | None:
    if message.get("tool_calls"):
        return None
    text = (message.get("content") or "").strip()
    if not text:
        return ("empty_target", "no reply text and no tool call")
    if len(text) < min_chars:
        return ("short_target", f"reply is {counted(len(text), 'character')} (minimum {min_chars}): {text!r}")
    return None


def semantic_form(message: dict):
    """What a message says, for comparing chosen with rejected: text stripped, arguments decoded."""
    calls = []
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        args, _ = decode_arguments(fn.get("arguments", {}))
        calls.append((fn.get("name"), args if args is not None else fn.get("arguments")))
    return ((message.get("content") or "").strip(), repr(calls))


def same_message(a: dict, b: dict) -> bool:
    """Do two assistant messages say the same thing? Cheap tests first: most pairs differ in text or calls."""
    if (a.get("content") or "").strip() != (b.get("content") or "").strip():
        return False
    calls_a, calls_b = a.get("tool_calls") or (), b.get("tool_calls") or ()
    if len(calls_a) != len(calls_b):
        return False
    return semantic_form(a) == semantic_form(b)


# ------------------------------------------------------------------------- auditor


class Auditor:
    """Collects findings for one build and turns them into the stored report."""

    def __init__(self, kind: str, config: dict):
        self.kind = kind
        self.modes = {key: mode for key, mode in config["checks"].items() if key in CHECKS_BY_KEY}
        self.min_chars = config["min_target_chars"]
        self.max_tokens = config["max_tokens"]
        self.counts = {c.key: 0 for c in checks_for(kind)}
        self.examples: dict[str, list[dict]] = {c.key: [] for c in checks_for(kind)}
        self.active = {k for k, m in self.modes.items() if m != OFF}
        # one row per item: what was merged and left out (resolve.Tally.stats), set by the build
        self.resolution: dict | None = None

    def on(self, key: str) -> bool:
        return key in self.active

    def flag(self, key: str, detail: str, row: int | None = None, **where):
        """Record one finding. `row` is the 1-based line in the file (None: no row was written)."""
        if key not in self.active:
            return
        self.counts[key] += 1
        examples = self.examples[key]
        if len(examples) < MAX_EXAMPLES:
            examples.append({"row": row, "detail": detail, **where})

    def check_row(self, row_no: int, row, tokens: int, where: dict):
        """Row-level checks on one built row (see rows.Row)."""
        target = row.target
        if (
            self.on("invalid_tool_json")
            or self.on("unknown_tool")
            or self.on("schema_violation")
            or self.on("think_tags")
        ):
            seen = set()
            for key, detail in message_problems(target, row.tools, row.tool_names):
                if key not in seen:  # one finding per check per row; the first detail is the example
                    seen.add(key)
                    self.flag(key, detail, row_no, **where)
        problem = target_length_problem(target, self.min_chars)
        if problem:
            self.flag(problem[0], problem[1], row_no, **where)
        if (
            row.rejected is not None
            and self.on("chosen_equals_rejected")
            and same_message(target, row.rejected)
        ):
            self.flag("chosen_equals_rejected", "chosen and rejected say the same thing", row_no, **where)
        if row.conflict:
            self.flag("label_conflict", row.conflict, row_no, **where)
        if tokens > self.max_tokens:
            self.flag("too_long", f"about {tokens:,} tokens (maximum {self.max_tokens:,})", row_no, **where)

    def check_written(self, row_no: int, row, layout: str, text: str):
        """The round-trip check on one written line (`text`, without its newline), sampled rows only."""
        if "layout_roundtrip" in self.active and roundtrip.sampled(row_no):
            problems = roundtrip.row_losses(layout, text, row)
            if problems:
                self.flag("layout_roundtrip", "; ".join(problems), row_no, **row.where())

    @property
    def blocking(self) -> list[str]:
        return [k for k, n in self.counts.items() if n and self.modes.get(k) == BLOCK]

    def report(self, rows: int, token_counter: str) -> dict:
        checks = []
        for check in checks_for(self.kind):
            mode = self.modes.get(check.key, check.default)
            n = self.counts[check.key]
            checks.append(
                {
                    "key": check.key,
                    "title": check.title,
                    "description": check.description,
                    "mode": mode,
                    "count": n if mode != OFF else None,
                    "outcome": "off"
                    if mode == OFF
                    else ("pass" if not n else ("blocked" if mode == BLOCK else "warning")),
                    "examples": self.examples[check.key],
                }
            )
        return {
            "rows": rows,
            "blocked": bool(self.blocking),
            "blocking": self.blocking,
            "checks": checks,
            "min_target_chars": self.min_chars,
            "max_tokens": self.max_tokens,
            "token_counter": token_counter,
            "resolution": self.resolution,
        }

    def blocked_message(self) -> str:
        parts = [f"{self.counts[k]:,} × {CHECKS_BY_KEY[k].title}" for k in self.blocking]
        return (
            "Blocked by the audit: "
            + "; ".join(parts)
            + ". Fix the source data, or set those checks to warn."
        )
