"""Validation of OpenAI-format conversations, tool specs and assistant messages: calls checked
against the tools offered and their arguments against each tool's JSON schema.

Every check returns a list of FieldError with a JSON-path-like field, so the importer, the API,
the correction editor, eval suites and the dataset audit all report the same precise messages.
jsonschema only, no Django.
"""

import json
import re
from functools import lru_cache

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from jsonschema_specifications import REGISTRY as METASCHEMAS
from referencing.exceptions import Unresolvable

from .errors import FieldError
from .openai_format import normalise_assistant_message

# Deeper JSON is refused on import: the database's JSON encoder stops at 255 levels, jsonschema
# and json.dumps recurse per level, and no real conversation comes near it.
MAX_JSON_DEPTH = 100
MAX_JSON_CHARS = 1_000_000  # JSON typed into a form field; an import line is bounded by the importer

ROLES = ("system", "user", "assistant", "tool")
# a JSON string (skipped whole, escapes included) or one bracket
_STRING_OR_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def loads_bounded(text: str, max_depth: int = MAX_JSON_DEPTH, max_chars: int = MAX_JSON_CHARS):
    """json.loads for JSON text a person typed; too long or nested too deep raises JSONDecodeError.

    The depth is counted on the text before parsing: json.loads recurses once per level and dies
    with a RecursionError (a server error, not a message) at about a thousand, e.g. on "[" * 100_000.
    """
    if len(text) > max_chars:
        raise json.JSONDecodeError(f"longer than {max_chars:,} characters", text, max_chars)
    if text.count("[") + text.count("{") <= max_depth:  # cannot nest deeper than it has openers
        return json.loads(text)
    depth = 0
    for m in _STRING_OR_BRACKET.finditer(text):
        token = m.group()
        if token in "[{":
            depth += 1
            if depth > max_depth:
                raise json.JSONDecodeError(f"nested more than {max_depth} levels deep", text, m.start())
        elif token in "]}":
            depth -= 1
    return json.loads(text)


def tool_name(spec) -> str | None:
    if not isinstance(spec, dict):
        return None
    fn = spec.get("function", spec)
    name = fn.get("name") if isinstance(fn, dict) else None
    return name if isinstance(name, str) else None


def tool_parameters(tools, name: str):
    for spec in tools or []:
        if tool_name(spec) == name:
            fn = spec.get("function", spec)
            return fn.get("parameters") if isinstance(fn, dict) else None
    return None


def validate_tool_specs(tools, path: str = "tools") -> list[FieldError]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        return [FieldError(path, "must be a list of tool specs")]
    errors, seen = [], set()
    for i, spec in enumerate(tools):
        where = f"{path}[{i}]"
        if not isinstance(spec, dict):
            errors.append(FieldError(where, "must be an object"))
            continue
        fn = spec.get("function", spec)
        if not isinstance(fn, dict):
            errors.append(FieldError(f"{where}.function", "must be an object"))
            continue
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            errors.append(FieldError(f"{where}.function.name", "must be a non-empty string"))
            continue
        if name in seen:
            errors.append(FieldError(f"{where}.function.name", f"duplicate tool name {name!r}"))
        seen.add(name)
        params = fn.get("parameters")
        if params is not None:
            if not isinstance(params, dict):
                errors.append(FieldError(f"{where}.function.parameters", "must be a JSON schema object"))
            else:
                for sub, problem in _schema_problems(json.dumps(params, sort_keys=True)):
                    errors.append(
                        FieldError(f"{where}.function.parameters{sub}", f"invalid JSON schema: {problem}")
                    )
    return errors


JSON_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")
# Type names other dialects use (BFCL, Python, Java) and the JSON-schema type each one means.
TYPE_ALIASES = {
    "dict": "object",
    "hashmap": "object",
    "float": "number",
    "double": "number",
    "int": "integer",
    "long": "integer",
    "str": "string",
    "char": "string",
    "bool": "boolean",
    "list": "array",
    "tuple": "array",
    "arraylist": "array",
}
MAX_SCHEMA_PROBLEMS = 5  # per tool: enough to fix a file, short enough to read


def json_path(parts) -> str:
    """A jsonschema path (deque of keys and indexes) as the suffix of a field: `.properties.x[0]`."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def _type_problem(error) -> str | None:
    """A clear message for a `type` keyword naming something JSON schema does not know."""
    path = list(error.absolute_path)
    named = path[-1] == "type" if path else False
    in_list = len(path) >= 2 and path[-2] == "type" and isinstance(path[-1], int)
    if not (named or in_list) or error.validator not in ("anyOf", "enum"):
        return None
    if not isinstance(error.instance, str) or error.instance in JSON_TYPES:
        return None
    hint = TYPE_ALIASES.get(error.instance.lower())
    if error.instance.lower() in ("any", "anytype"):
        hint = 'leave out "type" to allow any value'
    elif hint:
        hint = f"{error.instance!r} means {hint!r}"
    return f"{error.instance!r} is not a JSON-schema type; use one of {', '.join(JSON_TYPES)}" + (
        f" ({hint})" if hint else ""
    )


# Keywords whose values _plainly_valid checks itself; a schema using any other goes to the metaschema.
_SCHEMA_TEXT = frozenset(("title", "description", "format", "$comment"))
_SCHEMA_NUMBER = frozenset(("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"))
_SCHEMA_COUNT = frozenset(
    ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties")
)
_SCHEMA_ANY = frozenset(("default", "examples", "const"))


def _plainly_valid(schema, depth: int = 0) -> bool:
    """True when the schema uses only the everyday keywords (type, properties, items, required, enum,
    bounds, text) with values that are obviously right: then it satisfies the metaschema, and the full
    check (milliseconds per schema, which files of ever-new tools such as BFCL's pay on every line) is
    skipped. False means "not sure", never "invalid": the metaschema decides."""
    if isinstance(schema, bool):
        return True
    if not isinstance(schema, dict) or depth > 32:
        return False
    for key, value in schema.items():
        if key == "type":
            types = value if isinstance(value, list) else [value]
            if not types or not all(isinstance(t, str) and t in JSON_TYPES for t in types):
                return False
        elif key == "properties":
            if not isinstance(value, dict) or not all(_plainly_valid(v, depth + 1) for v in value.values()):
                return False
        elif key in ("items", "additionalProperties"):
            if not _plainly_valid(value, depth + 1):
                return False
        elif key == "required":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                return False
            if len(set(value)) != len(value):
                return False
        elif key in ("enum", "examples"):
            if not isinstance(value, list):
                return False
        elif key in _SCHEMA_TEXT:
            if not isinstance(value, str):
                return False
        elif key in _SCHEMA_NUMBER:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return False
            if key == "multipleOf" and not value > 0:
                return False
        elif key in _SCHEMA_COUNT:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                return False
        elif key not in _SCHEMA_ANY:
            return False
    return True


@lru_cache(maxsize=1024)
def _schema_problems(schema_json: str) -> tuple[tuple[str, str], ...]:
    """(field suffix inside the schema, message) for each place the schema breaks the metaschema.

    Cached: checking a schema against the metaschema is slow and files repeat the same tools on every
    line. Each top-level failure is narrowed with best_match to the keyword that is wrong, so the
    field says where inside the schema (`.properties.height.type`), not only which schema."""
    schema = json.loads(schema_json)
    if _plainly_valid(schema):
        return ()
    meta = Draft202012Validator(Draft202012Validator.META_SCHEMA)
    try:
        found = sorted(meta.iter_errors(schema), key=lambda e: [str(p) for p in e.absolute_path])
    except RecursionError:
        return (("", "nested too deeply"),)
    problems = []
    for error in found[:MAX_SCHEMA_PROBLEMS]:
        # the type check first: best_match would pick one branch of anyOf (string or list of strings)
        message = _type_problem(error)
        if message is None:
            error = best_match([error])
            message = _type_problem(error) or error.message
        problems.append((json_path(error.absolute_path), message))
    return tuple(problems)


@lru_cache(maxsize=512)
def _validator(schema_json: str) -> Draft202012Validator:
    # The registry holds the metaschemas only: a "$ref" to a URL in an imported tool spec is
    # never fetched (jsonschema's default registry would download it).
    return Draft202012Validator(json.loads(schema_json), registry=METASCHEMAS)


def schema_errors(arguments: dict, parameters: dict | None, path: str) -> list[FieldError]:
    """Arguments checked against the tool's JSON schema."""
    if not parameters:
        return []
    validator = _validator(json.dumps(parameters, sort_keys=True))
    errors = []
    try:
        found = sorted(validator.iter_errors(arguments), key=lambda e: list(e.absolute_path))
    except (Unresolvable, RecursionError) as exc:
        return [FieldError(path, f"the tool's parameters schema cannot be applied: {exc}")]
    for err in found:
        errors.append(FieldError(f"{path}{json_path(err.absolute_path)}", err.message))
    return errors


def decode_arguments(raw):
    """Tool-call arguments arrive as a JSON string (OpenAI) or an object; return (dict|None, error)."""
    if isinstance(raw, dict):
        return raw, None
    if isinstance(raw, str):
        try:
            value = loads_bounded(raw)
        except json.JSONDecodeError as exc:
            return None, f"is not valid JSON ({exc.msg} at char {exc.pos})"
        if not isinstance(value, dict):
            return None, "must be a JSON object"
        return value, None
    return None, "must be a JSON object or a string holding one"


def validate_tool_calls(tool_calls, tools, path: str, check_schema: bool) -> list[FieldError]:
    if not isinstance(tool_calls, list):
        return [FieldError(path, "must be a list")]
    names = {tool_name(t) for t in tools or []}
    errors = []
    for j, call in enumerate(tool_calls):
        where = f"{path}[{j}]"
        if not isinstance(call, dict):
            errors.append(FieldError(where, "must be an object"))
            continue
        if call.get("id") is not None and not isinstance(call.get("id"), str):
            errors.append(FieldError(f"{where}.id", "must be a string"))
        fn = call.get("function")
        if not isinstance(fn, dict):
            errors.append(FieldError(f"{where}.function", "is required and must be an object"))
            continue
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            errors.append(FieldError(f"{where}.function.name", "must be a non-empty string"))
        elif tools is not None and name not in names:
            errors.append(FieldError(f"{where}.function.name", f"unknown tool {name!r} (not in tools)"))
        args, problem = decode_arguments(fn.get("arguments", {}))
        if problem:
            errors.append(FieldError(f"{where}.function.arguments", problem))
        elif check_schema and isinstance(name, str) and name in names:
            errors.extend(schema_errors(args, tool_parameters(tools, name), f"{where}.function.arguments"))
    return errors


def validate_assistant_message(
    message, tools, path: str = "message", check_schema: bool = False
) -> list[FieldError]:
    """An assistant message as OpenAI sends it today (content parts, legacy function_call, empty
    arguments) is read the way the importer stores it (toolcalls.openai_format), then checked."""
    if not isinstance(message, dict):
        return [FieldError(path, "must be an object")]
    message, _, errors = normalise_assistant_message(message, path)
    if errors:
        return errors
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        errors.append(FieldError(f"{path}.content", "must be a string or null"))
    calls = message.get("tool_calls")
    if calls is not None:
        errors.extend(validate_tool_calls(calls, tools, f"{path}.tool_calls", check_schema))
    if not (content.strip() if isinstance(content, str) else "") and not calls:
        errors.append(FieldError(path, "needs reply text or at least one tool call"))
    return errors


def validate_messages(messages, tools, path: str = "messages") -> list[FieldError]:
    """Roles, order and tool-call references of an OpenAI chat transcript."""
    if not isinstance(messages, list) or not messages:
        return [FieldError(path, "must be a non-empty list of messages")]
    errors = []
    open_calls: set[str] = set()
    for i, msg in enumerate(messages):
        where = f"{path}[{i}]"
        if not isinstance(msg, dict):
            errors.append(FieldError(where, "must be an object"))
            continue
        role = msg.get("role")
        if role not in ROLES:
            errors.append(FieldError(f"{where}.role", f"must be one of {', '.join(ROLES)} (got {role!r})"))
            continue
        content = msg.get("content")
        if content is not None and not isinstance(content, str):
            errors.append(FieldError(f"{where}.content", "must be a string or null"))
        if msg.get("name") is not None and not isinstance(msg["name"], str):
            errors.append(FieldError(f"{where}.name", "must be a string"))
        # A system message later on (an instruction injected mid-conversation) and an assistant that
        # speaks first (a greeting) are real transcripts: accepted here, flagged by the importer.
        if role == "user" and content is None:
            errors.append(FieldError(f"{where}.content", "a user message needs content"))
        if role == "assistant":
            calls = msg.get("tool_calls")
            if calls is not None:
                errors.extend(validate_tool_calls(calls, tools, f"{where}.tool_calls", check_schema=False))
                if isinstance(calls, list):
                    open_calls = {
                        c["id"]
                        for c in calls
                        if isinstance(c, dict) and isinstance(c.get("id"), str) and c["id"]
                    }
            if content is None and not calls:
                if msg.get("function_call") is not None:
                    errors.append(
                        FieldError(
                            f"{where}.function_call",
                            "the legacy function_call is read on import; here send tool_calls instead",
                        )
                    )
                else:
                    errors.append(FieldError(where, "an assistant message needs content or tool_calls"))
        if role == "tool":
            prev = messages[i - 1] if i else None
            if not isinstance(prev, dict) or prev.get("role") not in ("assistant", "tool"):
                errors.append(
                    FieldError(f"{where}.role", "a tool message must follow an assistant tool call")
                )
            call_id = msg.get("tool_call_id")
            if call_id is not None and not isinstance(call_id, str):
                errors.append(FieldError(f"{where}.tool_call_id", "must be a string"))
            elif call_id is not None and open_calls and call_id not in open_calls:
                errors.append(
                    FieldError(f"{where}.tool_call_id", f"{call_id!r} matches no preceding tool call")
                )
    return errors


def json_problem(value) -> FieldError | None:
    """The first place where a decoded JSON value nests deeper than MAX_JSON_DEPTH or holds a NUL
    character (PostgreSQL's text and jsonb cannot store U+0000), as a FieldError; else None."""
    stack = [(value, "", 1)]
    while stack:
        node, path, depth = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return FieldError(path, "contains a NUL character (\\u0000), which cannot be stored")
            continue
        if not isinstance(node, (dict, list)):
            continue
        if depth > MAX_JSON_DEPTH:
            return FieldError(path, f"is nested more than {MAX_JSON_DEPTH} levels deep")
        if isinstance(node, dict):
            for key, child in node.items():
                if "\x00" in key:
                    return FieldError(
                        path, f"key {key!r} has a NUL character (\\u0000), which cannot be stored"
                    )
                stack.append((child, f"{path}.{key}" if path else key, depth + 1))
        else:
            stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(node))
    return None
