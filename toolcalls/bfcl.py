"""The Berkeley Function-Calling Leaderboard (BFCL) dialect, read into the project's cases.

A BFCL test record (one JSON object per line, even where the file is named .json)::

    {"id": "simple_0", "question": [[{"role": "user", "content": "…"}]],
     "function": [{"name": "math.factorial", "description": "…",
                   "parameters": {"type": "dict", "properties": {…}, "required": […]}}]}

and its possible-answer record, in a second file::

    {"id": "simple_0", "ground_truth": [{"math.factorial": {"number": [5], "unit": ["", "x"]}}]}

become an OpenAI conversation (the question's messages), OpenAI tool specs (BFCL's type names
mapped to JSON schema: dict -> object, float -> number, tuple -> array, any -> no type constraint,
Java/JavaScript names and case variants too) and the expected assistant message: one tool call per
answer entry, each argument set to its first possible value, ``acceptable`` listing every possible
value when there are several, ``optional`` naming the arguments whose possible values include
``""`` (BFCL's "may be omitted", metrics.md). A parameter whose only possible value is ``""`` must
be left out: it is in neither the arguments nor ``optional``, so a model that sends it is wrong, as
in BFCL. Possible values nested in a dict become nested arguments with dotted paths
(``address.zip``); inside a list of dicts only the first choice of each field is kept.

Which lines need an answer: categories whose name ends in ``irrelevance`` (irrelevance,
live_irrelevance) expect no call, with or without an answer record. Every other line needs one;
a line without it is refused with a per-line error. Refused as unsupported, each with its reason:
multi-turn records (several turns, or ``involved_classes`` instead of ``function``: their answers
are call sequences checked by executing BFCL's simulated APIs), ``relevance`` records (any call is
right: no gold call to store), and answers that are not lists of calls (memory, web search).

Pure functions, no Django: the importer and the eval-suite upload share them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from .errors import FieldError
from .jsonl import DEFAULT_MAX_LINE_BYTES, read_jsonl_lines

# BFCL's type names (Python, Java, JavaScript flavours) -> JSON-schema type; None: any value.
TYPES = {
    "dict": "object",
    "object": "object",
    "hashmap": "object",
    "hashtable": "object",
    "map": "object",
    "float": "number",
    "double": "number",
    "number": "number",
    "integer": "integer",
    "int": "integer",
    "long": "integer",
    "short": "integer",
    "byte": "integer",
    "bigint": "integer",
    "string": "string",
    "str": "string",
    "char": "string",
    "boolean": "boolean",
    "bool": "boolean",
    "array": "array",
    "list": "array",
    "tuple": "array",
    "arraylist": "array",
    "set": "array",
    "queue": "array",
    "stack": "array",
    "null": "null",
    "any": None,
}
SUB_SCHEMAS = ("items", "additionalProperties", "not", "contains")
SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
NO_CALL_SUFFIX = "irrelevance"
NO_CALL_TEXT = "None of the available functions fits this request, so no function is called."
MAX_ANSWER_LINES = 200_000


@dataclass
class BfclCase:
    id: str
    category: str
    messages: list
    tools: list
    expected: dict  # the gold assistant message (no tool_calls: no call expected)
    notes: list = field(default_factory=list)
    field_map: list = field(default_factory=list)  # converted field -> field of the BFCL record


def is_bfcl_record(record) -> bool:
    return isinstance(record, dict) and "messages" not in record and "question" in record


def category_of(bfcl_id: str) -> str:
    """`simple_python_12` -> simple_python, `live_simple_0-0-0` -> live_simple, `multiple_3` -> multiple."""
    m = re.match(r"^(.*?)_\d", bfcl_id)
    return m.group(1) if m else bfcl_id


def expects_no_call(category: str) -> bool:
    return category.endswith(NO_CALL_SUFFIX)


# ---------------------------------------------------------------------------------- schemas


def convert_schema(schema, path: str, errors: list[FieldError]):
    """A BFCL parameter schema -> JSON schema (a new object; the input is not changed)."""
    if not isinstance(schema, dict):
        return schema  # the schema validator reports it with its path
    out = dict(schema)
    if "type" in schema:
        kind = schema["type"]
        names = kind if isinstance(kind, list) else [kind]
        mapped = []
        for j, name in enumerate(names):
            where = f"{path}.type" + (f"[{j}]" if isinstance(kind, list) else "")
            if not isinstance(name, str) or name.strip().lower() not in TYPES:
                errors.append(
                    FieldError(
                        where,
                        f"{name!r} is not a type BFCL or JSON schema knows (use a JSON-schema type, "
                        "or one of BFCL's: dict, float, tuple, any, String, Boolean, HashMap, ArrayList…)",
                    )
                )
                continue
            mapped.append(TYPES[name.strip().lower()])
        if None in mapped or not mapped:
            out.pop("type")  # "any": no constraint
        else:
            unique = list(dict.fromkeys(mapped))
            out["type"] = unique if isinstance(kind, list) and len(unique) > 1 else unique[0]
    if isinstance(schema.get("required"), bool):
        out.pop("required")  # BFCL marks some properties "required": true; JSON schema lists names
    if isinstance(schema.get("properties"), dict):
        out["properties"] = {
            name: convert_schema(sub, f"{path}.properties.{name}", errors)
            for name, sub in schema["properties"].items()
        }
    if isinstance(schema.get("items"), list):  # tuple items, old style
        out.pop("items")
        out["prefixItems"] = schema["items"]
    for key in SUB_SCHEMAS:
        if isinstance(out.get(key), dict):
            out[key] = convert_schema(out[key], f"{path}.{key}", errors)
    for key in SCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [convert_schema(s, f"{path}.{key}[{j}]", errors) for j, s in enumerate(out[key])]
    return out


def convert_functions(functions, errors: list[FieldError]) -> list:
    """BFCL's `function` list -> OpenAI tool specs."""
    if isinstance(functions, dict):
        functions = [functions]
    if not isinstance(functions, list) or not functions:
        errors.append(FieldError("function", "must be a non-empty list of function descriptions"))
        return []
    tools = []
    for i, fn in enumerate(functions):
        if not isinstance(fn, dict):
            errors.append(FieldError(f"function[{i}]", "must be an object"))
            continue
        spec = {k: v for k, v in fn.items() if k != "parameters"}
        if "parameters" in fn:
            spec["parameters"] = convert_schema(fn["parameters"], f"function[{i}].parameters", errors)
        tools.append({"type": "function", "function": spec})
    return tools


# ---------------------------------------------------------------------------------- answers


def _is_nested(value) -> bool:
    """BFCL writes the possible values inside a dict argument as a dict of lists of values."""
    return isinstance(value, dict) and bool(value) and all(isinstance(v, list) for v in value.values())


def _first_choice(value):
    """A nested possible-answer dict (or a list of them) with each field set to its first value."""
    if _is_nested(value):
        out = {}
        for key, options in value.items():
            real = [o for o in options if o != ""]
            if real:
                out[key] = _first_choice(real[0])
        return out
    if isinstance(value, list) and value and all(_is_nested(v) for v in value):
        return [_first_choice(v) for v in value]
    return value


class _Gold:
    """Arguments, optional paths and acceptable values of one expected call, built from possible answers."""

    def __init__(self):
        self.optional: list[str] = []
        self.acceptable: dict[str, list] = {}
        self.notes: list[str] = []

    def arguments(self, params: dict, path: str, prefix: str, errors: list[FieldError]) -> dict:
        out = {}
        for name, options in params.items():
            where, dotted = f"{path}.{name}", f"{prefix}{name}"
            if not isinstance(options, list) or not options:
                errors.append(FieldError(where, "must be a non-empty list of possible values"))
                continue
            real = [o for o in options if o != ""]
            if not real:
                continue  # only "": the argument must be left out
            if len(real) < len(options):
                self.optional.append(dotted)
            first = real[0]
            if _is_nested(first):
                if len(real) == 1:
                    out[name] = self.arguments(first, where, f"{dotted}.", errors)
                    continue
                self.notes.append(f"{dotted}: several dicts possible; nested alternatives use first values")
                out[name] = _first_choice(first)
                self.acceptable[dotted] = [_first_choice(o) for o in real]
                continue
            if isinstance(first, list) and first and all(_is_nested(v) for v in first):
                self.notes.append(f"{dotted}: a list of dicts; each field takes its first possible value")
            out[name] = _first_choice(first)
            if len(real) > 1:
                self.acceptable[dotted] = [_first_choice(o) for o in real]
        return out


def _call_field(k: int, name: str) -> str:
    return f"ground_truth[{k}]" + (f"[{json.dumps(name)}]" if "." in name else f".{name}")


def expected_message(ground_truth, notes: list) -> tuple[dict | None, list[FieldError]]:
    """BFCL's ground_truth list -> the expected assistant message (tool calls with optional/acceptable)."""
    if not isinstance(ground_truth, list) or not ground_truth:
        return None, [FieldError("ground_truth", "must be a non-empty list of calls")]
    if all(isinstance(g, list) for g in ground_truth):
        return None, [
            FieldError("ground_truth", "per-turn call sequences (multi-turn BFCL) are not supported")
        ]
    calls, errors = [], []
    for k, entry in enumerate(ground_truth):
        if not isinstance(entry, dict) or len(entry) != 1:
            errors.append(
                FieldError(
                    f"ground_truth[{k}]", "must be an object with one function name (BFCL's call form)"
                )
            )
            continue
        ((name, params),) = entry.items()
        where = _call_field(k, name)
        if not isinstance(params, dict):
            errors.append(FieldError(where, "must be an object of parameter -> possible values"))
            continue
        gold = _Gold()
        arguments = gold.arguments(params, where, "", errors)
        call = {
            "id": f"call_{k}",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)},
        }
        if gold.optional:
            call["optional"] = gold.optional
        if gold.acceptable:
            call["acceptable"] = gold.acceptable
        notes.extend(f"{name}: {n}" for n in gold.notes)
        calls.append(call)
    if errors:
        return None, errors
    return {"role": "assistant", "content": None, "tool_calls": calls}, []


def read_answers(
    source, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
) -> tuple[dict, list[tuple[int, FieldError]]]:
    """A possible-answers file (binary file or iterable of lines) -> ({id: (line, ground_truth)}, errors).

    Read line by line as every uploaded JSONL is (toolcalls.jsonl, values the database cannot
    store refused too: the answers end up stored). Errors carry the answers file's line number;
    an id given twice is an error."""
    answers, errors = {}, []
    for n, item in read_jsonl_lines(source, max_line_bytes, storable=True):
        if n > MAX_ANSWER_LINES:
            errors.append((n, FieldError("", f"an answers file holds at most {MAX_ANSWER_LINES:,} lines")))
            break
        if isinstance(item, FieldError):
            errors.append((n, item))
        elif not isinstance(item, dict):
            errors.append((n, FieldError("", "each line must be a JSON object")))
        elif not isinstance(item.get("id"), str) or not item["id"]:
            errors.append((n, FieldError("id", "must be a non-empty string")))
        elif "ground_truth" not in item:
            errors.append((n, FieldError("ground_truth", "is required")))
        elif item["id"] in answers:
            errors.append((n, FieldError("id", f"{item['id']!r} repeats line {answers[item['id']][0]}")))
        else:
            answers[item["id"]] = (n, item["ground_truth"])
    return answers, errors


# ---------------------------------------------------------------------------------- records


def _question(question, errors: list[FieldError]) -> tuple[list, list]:
    """BFCL's question (a list of turns, each a list of messages, or a flat list) -> (messages, field map)."""
    if not isinstance(question, list) or not question:
        errors.append(FieldError("question", "must be a non-empty list of turns (each a list of messages)"))
        return [], []
    if all(isinstance(t, dict) for t in question):
        return list(question), [(f"messages[{j}]", f"question[{j}]") for j in range(len(question))]
    if not all(isinstance(t, list) for t in question):
        errors.append(FieldError("question", "must be a list of turns or a list of messages, not a mix"))
        return [], []
    if len(question) > 1:
        errors.append(
            FieldError(
                "question",
                f"multi-turn BFCL records ({len(question)} turns) are not supported: their answers are "
                "call sequences checked by running BFCL's simulated APIs",
            )
        )
        return [], []
    return list(question[0]), [(f"messages[{j}]", f"question[0][{j}]") for j in range(len(question[0]))]


def convert_record(record, answers: dict | None) -> tuple[BfclCase | None, list[FieldError]]:
    """One BFCL test record (+ its answer from `read_answers`) -> a case, or the errors that refuse it."""
    if not isinstance(record, dict):
        return None, [FieldError("", "each line must be a JSON object")]
    errors: list[FieldError] = []
    bfcl_id = record.get("id")
    if not isinstance(bfcl_id, str) or not bfcl_id.strip():
        return None, [FieldError("id", "is required: a BFCL record has id, question and function")]
    category = category_of(bfcl_id)
    if "question" not in record:
        return None, [FieldError("question", "is required: a BFCL record has id, question and function")]
    if "function" not in record:
        what = (
            "multi-turn and agentic BFCL records (involved_classes) " if "involved_classes" in record else ""
        )
        return None, [
            FieldError(
                "function",
                f"is required; {what}are not supported: they need BFCL's executable environment"
                if what
                else "is required: a BFCL record has id, question and function",
            )
        ]
    if category.endswith("relevance") and not expects_no_call(category):
        return None, [
            FieldError(
                "id", f"{category} records are not supported: any call counts there, so there is no gold call"
            )
        ]
    messages, field_map = _question(record["question"], errors)
    tools = convert_functions(record["function"], errors)
    field_map += [(f"tools[{i}].function", f"function[{i}]") for i in range(len(tools))]
    notes: list[str] = []
    if expects_no_call(category):
        expected = {"role": "assistant", "content": NO_CALL_TEXT}  # an answer record, if any, is not read
    elif answers is None:
        errors.append(
            FieldError("id", f"{category} records need their possible answer: give the answers file")
        )
    elif bfcl_id not in answers:
        errors.append(FieldError("id", f"no possible answer for {bfcl_id!r} in the answers file"))
    else:
        line, ground_truth = answers[bfcl_id]
        expected, errs = expected_message(ground_truth, notes)
        names = {t["function"].get("name") for t in tools if isinstance(t["function"].get("name"), str)}
        for k, call in enumerate((expected or {}).get("tool_calls", [])):
            name = call["function"]["name"]
            if name not in names:
                errs.append(
                    FieldError(_call_field(k, name), f"{name!r} is not one of the record's functions")
                )
        errors += [FieldError(e.field, f"{e.message} (answers file line {line})") for e in errs]
    if errors:
        return None, errors
    return BfclCase(bfcl_id, category, messages, tools, expected, notes, field_map), []


def conversation_line(record, answers: dict | None) -> tuple[dict | None, list[FieldError], list]:
    """A BFCL record -> an import line (gold answer and BFCL id in the metadata), errors, field map."""
    case, errors = convert_record(record, answers)
    if case is None:
        return None, errors, []
    metadata = {
        "bfcl_id": case.id,
        "bfcl_category": case.category,
        "expected": case.expected,
        "expects_call": bool(case.expected.get("tool_calls")),
    }
    if case.notes:
        metadata["format_notes"] = case.notes
    line = {"external_id": case.id, "messages": case.messages, "tools": case.tools, "metadata": metadata}
    return line, [], case.field_map


def suite_record(case: BfclCase) -> dict:
    """A converted case in the eval suites' gold form (evaluation.suites.check_case)."""
    metadata = {"bfcl_id": case.id, "bfcl_category": case.category}
    if case.notes:
        metadata["format_notes"] = case.notes
    return {
        "id": case.id,
        "messages": case.messages,
        "tools": case.tools,
        "expected": case.expected,
        "categories": [case.category],
        "metadata": metadata,
    }
