"""The Parquet copy of a snapshot's JSONL: one fixed Arrow schema per layout, written in row groups
as the JSONL streams by (memory stays at one row group, whatever the snapshot's size).

A fixed schema, not one inferred from the rows: inference (what ``datasets`` does with JSON)
looks at the first rows only and would give two snapshots of one layout different columns.
Free-form JSON objects (the OpenAI layouts' ``tools`` list of JSON schemas) are stored as JSON
text: Arrow would merge differently-shaped tool schemas into one struct padded with nulls, which
is why the TRL layouts already write ``tools`` as a JSON string (see layouts.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

ROW_GROUP = 32_768  # rows per row group: ~30 MB of Arrow data for 1 KB rows
BATCH = 4_096  # rows held as Python objects at a time (ROW_GROUP is a multiple)

_S = pa.string()
CALL = pa.struct([("id", _S), ("type", _S), ("function", pa.struct([("name", _S), ("arguments", _S)]))])
_MESSAGE_FIELDS = [
    ("role", _S),
    ("content", _S),
    ("tool_calls", pa.list_(CALL)),
    ("tool_call_id", _S),
    ("name", _S),
]
MESSAGE = pa.struct(_MESSAGE_FIELDS)
WEIGHTED_MESSAGE = pa.struct([*_MESSAGE_FIELDS, ("weight", pa.int64())])
MESSAGES = pa.list_(MESSAGE)
TURN = pa.struct([("from", _S), ("value", _S)])

SCHEMAS = {
    "trl_messages": pa.schema([("messages", MESSAGES), ("tools", _S)]),
    "trl_prompt_completion": pa.schema([("prompt", MESSAGES), ("completion", MESSAGES), ("tools", _S)]),
    "openai_chat": pa.schema([("messages", pa.list_(WEIGHTED_MESSAGE)), ("tools", _S)]),
    "trl_preference": pa.schema(
        [("prompt", MESSAGES), ("chosen", MESSAGES), ("rejected", MESSAGES), ("tools", _S)]
    ),
    "openai_preference": pa.schema(
        [
            ("input", pa.struct([("messages", MESSAGES), ("tools", _S)])),
            ("preferred_output", MESSAGES),
            ("non_preferred_output", MESSAGES),
        ]
    ),
    "llamafactory": pa.schema(
        [
            ("conversations", pa.list_(TURN)),
            ("chosen", TURN),
            ("rejected", TURN),
            ("system", _S),
            ("tools", _S),
        ]
    ),
    "eval_cases": pa.schema(
        [("id", _S), ("messages", MESSAGES), ("expected", MESSAGE), ("source", _S), ("tools", _S)]
    ),
}

# the columns (path from the row) stored as JSON text in Parquet while the JSONL has JSON values
JSON_TEXT_COLUMNS = {"openai_chat": (("tools",),), "openai_preference": (("input", "tools"),)}


class ParquetError(Exception):
    """A row that does not fit its layout's schema (says which row and where)."""


def _key_checker(arrow_type):
    """A function value -> path of the first key the schema has no column for (None: all known).
    ``from_pylist`` would drop such a key silently."""
    if pa.types.is_struct(arrow_type):
        fields = {f.name: _key_checker(f.type) for f in arrow_type}
        names = frozenset(fields)
        nested = [(name, check) for name, check in fields.items() if check is not None]

        def check_struct(value):
            if not isinstance(value, dict):
                return None  # a wrong type is Arrow's to report
            extra = value.keys() - names
            if extra:
                return (min(extra),)
            for name, check in nested:
                sub = value.get(name)
                if sub is not None:
                    found = check(sub)
                    if found:
                        return (name, *found)
            return None

        return check_struct
    if pa.types.is_list(arrow_type):
        item = _key_checker(arrow_type.value_type)
        if item is None:
            return None

        def check_list(value):
            if isinstance(value, list):
                for i, sub in enumerate(value):
                    found = item(sub)
                    if found:
                        return (i, *found)
            return None

        return check_list
    return None


def _path(parts) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")


def _as_json_text(row: dict, path: tuple, seen: dict):
    """The value at `path` as JSON text (json.dumps's spacing, as the TRL layouts' tools column);
    rows repeat a few tools lists, so each distinct one is encoded once."""
    *parents, last = path
    holder = row
    for key in parents:
        holder = holder.get(key) if isinstance(holder, dict) else None
    if isinstance(holder, dict) and last in holder and not isinstance(holder[last], str):
        key = orjson.dumps(holder[last])
        text = seen.get(key)
        if text is None:
            if len(seen) > 256:
                seen.clear()
            text = seen[key] = json.dumps(holder[last], ensure_ascii=False)
        holder[last] = text


def _loads(line: bytes):
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line)  # what orjson refuses and json reads (integers past 64 bits)


def write_parquet(jsonl: Path, out: Path, layout: str) -> dict:
    """Write the Parquet copy of `jsonl` to `out`. Returns {"rows", "num_bytes"} (num_bytes: the
    Arrow data's size, what the Hugging Face card calls a split's num_bytes)."""
    schema = SCHEMAS[layout]
    check = _key_checker(pa.struct(list(schema)))
    json_text = JSON_TEXT_COLUMNS.get(layout, ())
    rows, num_bytes, pending, batches, seen = 0, 0, [], [], {}

    def convert():
        """The pending rows (Python objects, ~10x their JSON size) as one compact Arrow batch."""
        try:
            batches.append(pa.RecordBatch.from_pylist(pending, schema=schema))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
            raise ParquetError(_first_bad_row(pending, schema, rows - len(pending), exc)) from exc
        pending.clear()

    def flush(writer):
        nonlocal num_bytes
        table = pa.Table.from_batches(batches, schema=schema)
        num_bytes += table.nbytes
        writer.write_table(table, row_group_size=ROW_GROUP)
        batches.clear()

    with open(jsonl, "rb") as fh, pq.ParquetWriter(out, schema, compression="zstd") as writer:
        for line in fh:
            rows += 1
            try:
                row = _loads(line)
            except ValueError as exc:
                raise ParquetError(f"row {rows}: not JSON ({exc})") from exc
            if not isinstance(row, dict):
                raise ParquetError(f"row {rows}: not a JSON object")
            for path in json_text:
                _as_json_text(row, path, seen)
            extra = check(row)
            if extra:
                raise ParquetError(f"row {rows}: {_path(extra)} is not a column of the {layout} layout")
            pending.append(row)
            if len(pending) == BATCH:
                convert()
                if rows % ROW_GROUP == 0:
                    flush(writer)
        if pending:
            convert()
        if batches:
            flush(writer)
    return {"rows": rows, "num_bytes": num_bytes}


def _first_bad_row(batch: list[dict], schema: pa.Schema, before: int, exc: Exception) -> str:
    for i, row in enumerate(batch, before + 1):
        try:
            pa.Table.from_pylist([row], schema=schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as row_exc:
            return f"row {i}: {row_exc}"
    return f"rows {before + 1}–{before + len(batch)}: {exc}"


def features_yaml(schema: pa.Schema) -> list:
    """The schema as the `dataset_info.features` list of a Hugging Face dataset card."""
    return [_feature(field.name, field.type) for field in schema]


def _feature(name: str, arrow_type) -> dict:
    if pa.types.is_struct(arrow_type):
        return {"name": name, "struct": [_feature(f.name, f.type) for f in arrow_type]}
    if pa.types.is_list(arrow_type) and pa.types.is_struct(arrow_type.value_type):
        return {"name": name, "list": [_feature(f.name, f.type) for f in arrow_type.value_type]}
    if pa.types.is_string(arrow_type):
        return {"name": name, "dtype": "string"}
    if pa.types.is_int64(arrow_type):
        return {"name": name, "dtype": "int64"}
    raise ValueError(f"no dataset-card form for {arrow_type}")  # a schema above uses a new type
