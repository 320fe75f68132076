"""The bundle's words: manifest.json (machine-readable provenance) and the dataset card README.md,
whose YAML header is the one the Hugging Face hub reads (configs / data_files, dataset_info with
features and splits, size_categories, task_categories, license).

The YAML is written here, not by a library: block style, every string a JSON string (JSON's
escapes are YAML's double-quoted escapes), so any YAML parser reads back exactly these values.
"""

from __future__ import annotations

import json
import re

from config.text import counted

from ...models import DatasetSnapshot
from ..layouts import LAYOUTS
from ..spec import describe_filters, filter_names
from .parquet import JSON_TEXT_COLUMNS, SCHEMAS, features_yaml

FORMAT = "badcase-studio-snapshot/1"

# what each layout trains on, for the card (layouts.py's docstring has the reasons)
TRAINS_ON = {
    "trl_messages": "every assistant turn with TRL's assistant_only_loss (the unreviewed context turns "
    "too); the whole text without it",
    "trl_prompt_completion": "the completion only (TRL SFTTrainer's completion_only_loss): the reviewed turn",
    "openai_chat": "assistant messages with weight 1 only: the reviewed turn (context turns have weight 0)",
    "trl_preference": "chosen against rejected after the shared prompt (TRL DPOTrainer)",
    "openai_preference": "preferred_output against non_preferred_output (OpenAI preference fine-tuning)",
    "llamafactory": "chosen against rejected after the conversation (LLaMA-Factory, stage dpo)",
    "eval_cases": "nothing: evaluation cases (context + the expected assistant message)",
}

_SIZES = [
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
]


def size_category(rows: int) -> str:
    return next((label for limit, label in _SIZES if rows < limit), "100M<n<1B")


def split_name(snapshot: DatasetSnapshot) -> str:
    return "test" if snapshot.kind == DatasetSnapshot.Kind.EVAL else "train"


def _when(value) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def manifest(snapshot: DatasetSnapshot, files: list[dict]) -> dict:
    """Everything the bundle claims, for a program to check: spec, counts, audit, file hashes."""
    stats = snapshot.stats or {}
    audit = snapshot.audit or {}
    return {
        "format": FORMAT,
        "project": {"slug": snapshot.project.slug, "name": snapshot.project.name},
        "snapshot": {
            "id": snapshot.pk,
            "name": snapshot.name,
            "kind": snapshot.kind,
            "version": snapshot.version,
            "layout": snapshot.layout,
            "layout_description": LAYOUTS.get(snapshot.kind, {}).get(snapshot.layout, ""),
            "trains_on": TRAINS_ON.get(snapshot.layout, ""),
            "note": snapshot.note,
            "rows": snapshot.row_count,
            "sha256": snapshot.sha256,
            "created_at": _when(snapshot.created_at),
            "created_by": snapshot.created_by.username if snapshot.created_by_id else None,
            "finished_at": _when(snapshot.finished_at),
        },
        "filters": snapshot.filters,
        "filters_in_words": describe_filters(
            snapshot.kind, snapshot.filters, filter_names(snapshot.project_id)
        ),
        "audit_config": snapshot.audit_config,
        "counts": {
            key: stats.get(key)
            for key in (
                "rows",
                "source_records",
                "rows_by_source",
                "rows_by_split",
                "rows_by_category",
                "rows_by_model_version",
                "skipped",
                "routing",
                "tool_call_share",
                "rejected_tool_call_share",
            )
            if key in stats
        },
        "audit": {
            "blocked": audit.get("blocked", False),
            "token_counter": audit.get("token_counter"),
            "checks": [
                {k: c.get(k) for k in ("key", "title", "mode", "count", "outcome")}
                for c in audit.get("checks", [])
            ],
        },
        "files": files,
    }


# ------------------------------------------------------------------------------------ YAML


def _yaml(value, indent: int = 0) -> list[str]:
    pad = " " * indent
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{key}:")
                lines += _yaml(item, indent + 2 if isinstance(item, dict) else indent)
            else:
                lines.append(f"{pad}{key}: {_scalar(item)}")
        return lines
    lines = []
    for item in value:
        sub = (
            _yaml(item, indent + 2)
            if isinstance(item, (dict, list)) and item
            else [f"{pad}  {_scalar(item)}"]
        )
        lines.append(f"{pad}- {sub[0].lstrip()}")
        lines += sub[1:]
    return lines


def _scalar(value) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (dict, list)):
        return "{}" if isinstance(value, dict) else "[]"
    # ASCII with \u escapes: YAML's double-quoted scalars read them back exactly, while raw C1 controls
    # (U+0080-U+009F, U+0085 as a line break) or DEL would break or change what a YAML parser reads
    return json.dumps(str(value), ensure_ascii=True)


def card_header(snapshot: DatasetSnapshot, parquet_name: str, parquet: dict, parquet_bytes: int) -> dict:
    split = split_name(snapshot)
    return {
        "license": "unknown",
        "pretty_name": f"{snapshot.project.name} {snapshot.name}",
        "task_categories": ["text-generation"],
        "tags": ["badcase-studio", snapshot.kind, snapshot.layout, "tool-calling"],
        "size_categories": [size_category(snapshot.row_count)],
        "configs": [{"config_name": "default", "data_files": [{"split": split, "path": parquet_name}]}],
        "dataset_info": {
            "features": features_yaml(SCHEMAS[snapshot.layout]),
            "splits": [{"name": split, "num_bytes": parquet["num_bytes"], "num_examples": parquet["rows"]}],
            "download_size": parquet_bytes,
            "dataset_size": parquet["num_bytes"],
        },
    }


# ------------------------------------------------------------------------------- the card


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+!|~])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def _md(text) -> str:
    """Free text (names, notes, model versions: untrusted) in Markdown as plain text: every character
    Markdown reads as markup escaped (no link, image, HTML tag or emphasis can be made), line breaks and
    control characters folded into one space."""
    return _MD_SPECIAL.sub(r"\\\1", _CONTROL.sub(" ", str(text)))


def _table(head: tuple, rows: list[tuple]) -> list[str]:
    def cell(v):
        return _md(v)

    return [
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
        *("| " + " | ".join(cell(v) for v in row) + " |" for row in rows),
    ]


def _counts(title: str, counts: dict | None) -> list[str]:
    if not counts:
        return []
    return [f"**{title}**", "", *_table(("", "rows"), list(counts.items())), ""]


def dataset_card(snapshot: DatasetSnapshot, header: dict, files: list[dict]) -> str:
    m = manifest(snapshot, files)
    s, split = m["snapshot"], split_name(snapshot)
    jsonl, parquet = files[0]["path"], files[1]["path"]
    json_text = [".".join(p) for p in JSON_TEXT_COLUMNS.get(snapshot.layout, ())]
    lines = [
        "---",
        *_yaml(header),
        "---",
        "",
        f"# {_md(snapshot.project.name)}: {snapshot.get_kind_display()} snapshot {snapshot.name}",
        "",
        f"Exported by Badcase Studio from the reviewed work of project `{snapshot.project.slug}`: "
        f"{counted(snapshot.row_count, 'row')} in the `{snapshot.layout}` layout. "
        "Set the license in the header before publishing it.",
        "",
        "## Files",
        "",
        *_table(
            ("file", "rows", "bytes", "sha256"),
            [(f"`{f['path']}`", f.get("rows", ""), f"{f['bytes']:,}", f"`{f['sha256']}`") for f in files],
        ),
        "",
        f"`{parquet}` holds the same rows as `{jsonl}` with a fixed schema (the `configs` above point "
        "the hub at it)"
        + (f"; `{', '.join(json_text)}` is JSON text there, a list in the JSONL." if json_text else "."),
        "",
        "## Layout",
        "",
        f"`{snapshot.layout}`: {_md(s['layout_description'])}.",
        "",
        f"Trains on: {s['trains_on']}.",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        f'rows = load_dataset("parquet", data_files="{parquet}", split="{split}")',
        f'# or: load_dataset("json", data_files="{jsonl}", split="train")',
        "```",
        "",
    ]
    if snapshot.layout == "llamafactory":
        lines += [
            "For LLaMA-Factory, point `dataset_dir` at this folder: `dataset_info.json` describes "
            f"`{jsonl}` (sharegpt, ranking).",
            "",
        ]
    lines += [
        "## Provenance",
        "",
        f"- Project: {_md(snapshot.project.name)} (`{snapshot.project.slug}`)",
        f"- Snapshot: {snapshot.name} (id {snapshot.pk}), kind {snapshot.kind}, version {snapshot.version}, "
        f"layout `{snapshot.layout}`",
        f"- Created {s['created_at']} by {s['created_by'] or 'unknown'}; built {s['finished_at']}",
        f"- Content hash of `{jsonl}`: sha256 `{snapshot.sha256}`",
    ]
    if snapshot.note:
        lines.append(f"- Note: {_md(snapshot.note)}")
    lines.append("- Filters: " + _md("; ".join(m["filters_in_words"])))
    routing = m["counts"].get("routing") or {}
    if routing.get("mode") == "taxonomy":
        lines.append("- Fixes routed by taxonomy: " + _md(routing["summary"]))
    lines += [
        "",
        "## Label counts",
        "",
        *_counts("By source", m["counts"].get("rows_by_source")),
        *_counts("By split", m["counts"].get("rows_by_split")),
        *_counts("By category", m["counts"].get("rows_by_category")),
        *_counts("By model version", m["counts"].get("rows_by_model_version")),
        "## Audit",
        "",
        *_table(
            ("check", "mode", "rows flagged", "outcome"),
            [
                (c["title"], c["mode"], "—" if c["count"] is None else f"{c['count']:,}", c["outcome"])
                for c in m["audit"]["checks"]
            ],
        ),
        "",
        "`manifest.json` has all of this for programs: the filters as given, the audit settings, the "
        "counts and each file's sha256.",
        "",
    ]
    return "\n".join(lines)
