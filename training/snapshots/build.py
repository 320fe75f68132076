"""Dataset snapshots: the filter spec, the row builders, the streaming export and its stats.

Reading order:

* ``clean_spec`` — the request (kind, layout, filters, audit settings) checked and
  normalised; every error names its field. Used by the form, the API and tests.
* ``count_matching`` — what a spec would read, for the create form's live count.
* ``create_snapshot`` — the queued row, the build sent to a worker (jobs.lifecycle: enqueue;
  "Build again" is jobs.lifecycle.resume).
* ``build_snapshot`` — the worker's job: claim the row (jobs.lifecycle), stream rows from the database
  (keyset chunks of ``values_list``, a constant number of queries per chunk) through the
  row builders, the audit (training/audit.py) and the layout into a temp file beside the
  final one; fsync; end checks over the per-row index; then ``os.replace`` into place and
  mark the row ready in the same transaction as its stats.

Rows
----
SFT      ``messages`` = the conversation up to the reviewed turn + the corrected assistant
         message (optionally also approved *reasonable* responses as they were).
DPO      TRL's conversational preference format: ``prompt`` (messages), ``chosen`` and
         ``rejected`` (one assistant message each). Pairs come from pairwise preferences
         (winner over loser; ties skipped; *both bad* → the context's correction over each
         response) and from corrections (the correction over the response it corrects).
eval     held-out cases: ``messages`` (the context) and the ``expected`` assistant message.

Tool-call ``arguments`` are always JSON strings, and for TRL layouts ``tools`` is a JSON
string too: Arrow would otherwise merge differently-shaped dicts into one struct padded
with nulls (a tool would grow its neighbours' parameters).

eval rows are ``{"id": "<external id>@<context length>", "messages", "expected", "source":
"correction:<id>" | "reasonable:<label id>", "tools"}`` (evaluation/suites.py reads them).

Determinism: rows come in source-id order and are serialised the same way every time, so
the same spec over unchanged data gives the same bytes and the same sha256. The row
index beside each file (``*.rows.bin``, INDEX_DTYPE) keeps, per row, its source,
conversation, prompt hash (stable: the leakage check compares it across snapshots),
duplicate hashes (valid within one build only) and token counts.

Speed (benchmarks/export_bench.py): chunks are id windows planned as index nested loops,
fetched one chunk ahead by a thread on PostgreSQL; each context is walked once; the cyclic
GC is paused during the stream (it costs more than the work with this many objects).
"""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
import json
import logging
import os
import queue
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import InterfaceError, OperationalError, connection, connections, transaction
from django.db.models import BooleanField, Count, Exists, Max, OuterRef, Q
from django.db.models.expressions import RawSQL
from django.utils import timezone

from annotator.models import (
    Correction,
    Label,
    ModelResponse,
    ModelVersion,
    Preference,
    Project,
    Split,
    Status,
    TaxonomyCategory,
)
from jobs import lifecycle

from . import audit as audit_mod
from .models import DatasetSnapshot

log = logging.getLogger(__name__)

Kind = DatasetSnapshot.Kind
State = DatasetSnapshot.State
Failure = DatasetSnapshot.Failure

LAYOUTS = {
    Kind.SFT: {
        "trl_messages": "OpenAI chat messages + tools as a JSON string (TRL SFTTrainer)",
        "trl_prompt_completion": "prompt / completion messages (TRL SFTTrainer, loss on the corrected turn only)",
        "openai_chat": "OpenAI chat fine-tuning (messages + tools as a list)",
    },
    Kind.DPO: {
        "trl_preference": "prompt / chosen / rejected messages (TRL DPOTrainer)",
        "openai_preference": "OpenAI preference fine-tuning (input / preferred_output / non_preferred_output)",
        "llamafactory": "LLaMA-Factory ShareGPT ranking (conversations / chosen / rejected / system / tools)",
    },
    Kind.EVAL: {
        "eval_cases": "messages (context) + expected assistant message + tools",
    },
}
DEFAULT_LAYOUT = {Kind.SFT: "trl_messages", Kind.DPO: "trl_preference", Kind.EVAL: "eval_cases"}
DPO_SOURCES = ("preferences", "corrections")  # the default; "online" (pairs of online DPO rounds) on request
ALL_DPO_SOURCES = (*DPO_SOURCES, "online")
TRAIN_KINDS = (Kind.SFT, Kind.DPO)
EVAL_SPLITS = (Split.EVAL, Split.HOLDOUT)

SOURCE_CODES = {"correction": 1, "reasonable": 2, "preference": 3, "both_bad": 4, "online": 5}
SOURCE_NAMES = {v: k for k, v in SOURCE_CODES.items()}
_DUMPS = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_SCAN = json.JSONDecoder().scan_once


def _loads(text: str):
    """json.loads for database JSON text, minus the whitespace regexes json.loads runs per call
    (four calls a row add up); anything unusual goes through json.loads itself."""
    try:
        value, end = _SCAN(text, 0)
    except (StopIteration, ValueError, TypeError):
        return json.loads(text)
    return value if end == len(text) else json.loads(text)
INDEX_DTYPE = np.dtype([
    ("conversation", "<i8"), ("source_id", "<i8"), ("prompt", "<u8"), ("exact", "<u8"), ("normalised", "<u8"),
    ("prompt_tokens", "<u4"), ("target_tokens", "<u4"), ("rejected_tokens", "<u4"), ("source", "u1"),
])


def chunk_size() -> int:
    """Source records per query (and per progress update)."""
    return getattr(settings, "DATASET_EXPORT_CHUNK_SIZE", None) or int(os.environ.get("DATASET_EXPORT_CHUNK_SIZE", 2000))


# =============================================================================== spec


def _as_bool(value, field, errors) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "on", "1", 1):
        return True
    if value in ("false", "off", "0", 0, "", None):
        return False
    errors[field] = "must be true or false"
    return False


def _as_ids(value, field, errors, allowed: set[int], what: str) -> list[int]:
    if value in (None, ""):
        return []
    if not isinstance(value, (list, tuple)):
        errors[field] = "must be a list of ids"
        return []
    ids = []
    for v in value:
        try:
            ids.append(int(v))
        except (TypeError, ValueError):
            errors[field] = f"{v!r} is not an id"
            return []
    unknown = sorted(set(ids) - allowed)
    if unknown:
        errors[field] = f"no {what} with id {', '.join(map(str, unknown))} in this project"
        return []
    return sorted(set(ids))


def _as_date(value, field, errors) -> str | None:
    if value in (None, ""):
        return None
    if isinstance(value, dt.date):
        return value.isoformat()
    try:
        return dt.date.fromisoformat(str(value)).isoformat()
    except ValueError:
        errors[field] = f"{value!r} is not a date (YYYY-MM-DD)"
        return None


def _as_int(value, field, errors, default: int, minimum: int) -> int:
    if value in (None, ""):
        return default
    try:
        n = int(value)
    except (TypeError, ValueError):
        errors[field] = "must be a whole number"
        return default
    if isinstance(value, bool) or n < minimum:
        errors[field] = f"must be at least {minimum}"
        return default
    return n


def clean_spec(project: Project, data: dict) -> dict:
    """Validate and normalise a snapshot request.

    ``data``: kind, layout, note, filters {include_submitted, splits, categories,
    model_versions, date_from, date_to, include_reasonable, sources}, audit {checks
    {key: block|warn|off}, min_target_chars, max_tokens, tokenizer}. Unknown keys are
    refused (a typo must not silently widen a dataset). Raises ValidationError whose keys
    are the fields ("filters.categories", "audit.checks.leakage" …).
    """
    errors: dict[str, str] = {}
    if not isinstance(data, dict):
        raise ValidationError({"non_field_errors": "must be an object"})
    unknown = set(data) - {"kind", "layout", "note", "filters", "audit"}
    if unknown:
        errors["non_field_errors"] = f"unknown field(s): {', '.join(sorted(unknown))}"
    kind = data.get("kind")
    if kind not in Kind.values:
        raise ValidationError({"kind": f"must be one of {', '.join(Kind.values)} (got {kind!r})"})
    layout = data.get("layout") or DEFAULT_LAYOUT[kind]
    if layout not in LAYOUTS[kind]:
        errors["layout"] = f"for {kind} snapshots one of {', '.join(LAYOUTS[kind])} (got {layout!r})"
    note = data.get("note") or ""
    if not isinstance(note, str):
        errors["note"] = "must be text"

    raw = data.get("filters") or {}
    if not isinstance(raw, dict):
        raise ValidationError({"filters": "must be an object"})
    known = {"include_submitted", "splits", "categories", "model_versions", "date_from", "date_to",
             "include_reasonable", "sources", "online_rounds"}
    if set(raw) - known:
        errors["filters"] = f"unknown filter(s): {', '.join(sorted(set(raw) - known))}"
    f = {"include_submitted": _as_bool(raw.get("include_submitted", False), "filters.include_submitted", errors)}
    default_splits = list(EVAL_SPLITS) if kind == Kind.EVAL else [Split.TRAIN]
    splits = raw.get("splits") or default_splits
    if isinstance(splits, str):
        splits = [splits]
    if not isinstance(splits, (list, tuple)) or set(splits) - set(Split.values):
        errors["filters.splits"] = f"must be a list of {', '.join(Split.values)}"
        splits = default_splits
    elif kind == Kind.EVAL and set(splits) - set(EVAL_SPLITS):
        errors["filters.splits"] = "an eval snapshot takes held-out items only: eval and/or holdout"
    f["splits"] = sorted(set(splits))
    categories = dict(TaxonomyCategory.objects.filter(project=project).values_list("pk", "parent_id"))
    f["categories"] = _as_ids(raw.get("categories"), "filters.categories", errors, set(categories), "category")
    versions = set(ModelVersion.objects.filter(project=project).values_list("pk", flat=True))
    f["model_versions"] = _as_ids(raw.get("model_versions"), "filters.model_versions", errors, versions,
                                  "model version")
    f["date_from"] = _as_date(raw.get("date_from"), "filters.date_from", errors)
    f["date_to"] = _as_date(raw.get("date_to"), "filters.date_to", errors)
    if f["date_from"] and f["date_to"] and f["date_from"] > f["date_to"]:
        errors["filters.date_to"] = "must not be before date_from"
    if kind == Kind.DPO:
        sources = raw.get("sources") or list(DPO_SOURCES)
        if isinstance(sources, str):
            sources = [sources]
        if not isinstance(sources, (list, tuple)) or not sources or set(sources) - set(ALL_DPO_SOURCES):
            errors["filters.sources"] = f"must be a non-empty list of {', '.join(ALL_DPO_SOURCES)}"
            sources = list(DPO_SOURCES)
        f["sources"] = [s for s in ALL_DPO_SOURCES if s in sources]
        if "online" in f["sources"]:
            from .models import OnlineRound

            rounds = set(OnlineRound.objects.filter(run__project=project).values_list("pk", flat=True))
            f["online_rounds"] = _as_ids(raw.get("online_rounds"), "filters.online_rounds", errors, rounds,
                                         "online round")
            if not f["online_rounds"] and "filters.online_rounds" not in errors:
                errors["filters.online_rounds"] = "pairs from online rounds need the round ids"
        elif raw.get("online_rounds"):
            errors["filters.online_rounds"] = "only with the source online"
    else:
        f["include_reasonable"] = _as_bool(raw.get("include_reasonable", False), "filters.include_reasonable",
                                           errors)

    raw_audit = data.get("audit") or {}
    if not isinstance(raw_audit, dict):
        raise ValidationError({"audit": "must be an object"})
    if set(raw_audit) - {"checks", "min_target_chars", "max_tokens", "tokenizer"}:
        errors["audit"] = "unknown setting(s): " + ", ".join(
            sorted(set(raw_audit) - {"checks", "min_target_chars", "max_tokens", "tokenizer"}))
    modes = audit_mod.default_modes(kind)
    raw_checks = raw_audit.get("checks") or {}
    if not isinstance(raw_checks, dict):
        errors["audit.checks"] = "must be an object: {check: block|warn|off}"
        raw_checks = {}
    for key, mode in raw_checks.items():
        if key not in modes:
            errors[f"audit.checks.{key}"] = f"no such check for {kind} snapshots; checks: {', '.join(modes)}"
        elif mode not in audit_mod.MODES:
            errors[f"audit.checks.{key}"] = f"must be one of {', '.join(audit_mod.MODES)}"
        else:
            modes[key] = mode
    tokenizer = raw_audit.get("tokenizer")
    if tokenizer in ("", None):
        tokenizer = None
    else:
        mv = ModelVersion.objects.filter(project=project, pk=tokenizer if str(tokenizer).isdigit() else None).first()
        if mv is None:
            errors["audit.tokenizer"] = f"no model version with id {tokenizer!r} in this project"
        elif not mv.path:
            errors["audit.tokenizer"] = f"model version {mv.name!r} has no local folder to load a tokenizer from"
        tokenizer = mv.pk if mv else None
    audit_config = {
        "checks": modes,
        "min_target_chars": _as_int(raw_audit.get("min_target_chars"), "audit.min_target_chars", errors, 10, 0),
        "max_tokens": _as_int(raw_audit.get("max_tokens"), "audit.max_tokens", errors, 4096, 1),
        "tokenizer": tokenizer,
    }
    if errors:
        raise ValidationError(errors)
    return {"kind": kind, "layout": layout, "note": note.strip(), "filters": f, "audit_config": audit_config}


def statuses(f: dict) -> list[str]:
    return [Status.APPROVED, Status.SUBMITTED] if f.get("include_submitted") else [Status.APPROVED]


def expand_categories(project_id: int, ids: list[int]) -> list[int]:
    """The chosen categories and all their descendants (picking "Tool use" takes its children)."""
    if not ids:
        return []
    children: dict[int | None, list[int]] = {}
    for pk, parent in TaxonomyCategory.objects.filter(project_id=project_id).values_list("pk", "parent_id"):
        children.setdefault(parent, []).append(pk)
    out, todo = set(), list(ids)
    while todo:
        pk = todo.pop()
        if pk not in out:
            out.add(pk)
            todo.extend(children.get(pk, ()))
    return sorted(out)


def _day_start(iso: str):
    return timezone.make_aware(dt.datetime.combine(dt.date.fromisoformat(iso), dt.time.min))


def _date_q(f: dict, field: str) -> Q:
    q = Q()
    if f.get("date_from"):
        q &= Q(**{f"{field}__gte": _day_start(f["date_from"])})
    if f.get("date_to"):
        q &= Q(**{f"{field}__lt": _day_start(f["date_to"]) + dt.timedelta(days=1)})
    return q


def describe_filters(kind: str, f: dict, names: dict | None = None) -> list[str]:
    """The filter spec in words, for pages and "no rows" messages."""
    names = names or {}
    parts = ["approved and submitted work" if f.get("include_submitted") else "approved work only",
             "split " + " + ".join(f.get("splits", []))]
    if f.get("categories"):
        parts.append("categories: " + ", ".join(names.get(("cat", c), f"#{c}") for c in f["categories"]))
    if f.get("model_versions"):
        parts.append("model versions: " + ", ".join(names.get(("mv", m), f"#{m}") for m in f["model_versions"]))
    if f.get("date_from") or f.get("date_to"):
        parts.append(f"labelled {f.get('date_from') or '…'} to {f.get('date_to') or '…'}")
    if kind == Kind.DPO:
        parts.append("pairs from " + " and ".join(f.get("sources", [])))
        if f.get("online_rounds"):
            parts.append("online rounds " + ", ".join(f"#{r}" for r in f["online_rounds"]))
    elif f.get("include_reasonable"):
        parts.append("plus approved reasonable responses")
    return parts


def filter_names(project_id: int) -> dict:
    names = {("cat", pk): n for pk, n in TaxonomyCategory.objects.filter(project_id=project_id).values_list("pk", "name")}
    names.update({("mv", pk): n for pk, n in ModelVersion.objects.filter(project_id=project_id).values_list("pk", "name")})
    return names


# ======================================================================= source queries


def _label_scope(project_id: int, f: dict, prefix: str, outer: str) -> Q:
    """Labels (or corrections through `prefix`) of the project that pass the filters."""
    q = Q(**{f"{prefix}response__conversation__project_id": project_id, f"{prefix}status__in": statuses(f),
             f"{prefix}response__conversation__split__in": f["splits"]})
    if f["model_versions"]:
        q &= Q(**{f"{prefix}response__model_version_id__in": f["model_versions"]})
    q &= _date_q(f, f"{prefix}created_at")
    if f["categories"]:
        through = Label.categories.through.objects.filter(
            label_id=OuterRef(outer), taxonomycategory_id__in=expand_categories(project_id, f["categories"]))
        q &= Exists(through)
    return q


def corrections_qs(project_id: int, f: dict, unreasonable_only: bool = False):
    qs = Correction.objects.filter(_label_scope(project_id, f, "label__", "label_id"))
    if unreasonable_only:
        qs = qs.filter(label__verdict=Label.Verdict.UNREASONABLE)
    return qs


def reasonable_qs(project_id: int, f: dict):
    # NOT EXISTS rather than a LEFT JOIN … IS NULL: PostgreSQL then walks the label ids in
    # order for each keyset chunk instead of anti-joining every label and sorting them.
    return Label.objects.filter(_label_scope(project_id, f, "", "pk"), ~Exists(
        Correction.objects.filter(label_id=OuterRef("pk"))), verdict=Label.Verdict.REASONABLE)


def preferences_qs(project_id: int, f: dict):
    q = Q(response_a__conversation__project_id=project_id, status__in=statuses(f),
          response_a__conversation__split__in=f["splits"])
    if f["model_versions"]:
        q &= Q(response_a__model_version_id__in=f["model_versions"]) | Q(
            response_b__model_version_id__in=f["model_versions"])
    q &= _date_q(f, "created_at")
    if f["categories"]:
        cats = expand_categories(project_id, f["categories"])
        through = Label.categories.through.objects.filter(label__status__in=statuses(f), taxonomycategory_id__in=cats)
        q &= Exists(through.filter(label__response_id=OuterRef("response_a_id"))) | Exists(
            through.filter(label__response_id=OuterRef("response_b_id")))
    return Preference.objects.filter(q)


def online_qs(project_id: int, f: dict):
    from .models import OnlinePair

    return OnlinePair.objects.filter(round__run__project_id=project_id, round_id__in=f.get("online_rounds") or [],
                                     conversation__split__in=f["splits"])


def count_matching(project_id: int, kind: str, f: dict) -> dict:
    """What a spec would export, by source, for the live count on the create form.

    `rows` is exact for SFT and eval; for DPO "both bad" preferences count two pairs each
    when the context has a correction (an upper bound: the build may skip some).
    """
    parts, skipped = [], []
    if kind in (Kind.SFT, Kind.EVAL):
        n = corrections_qs(project_id, f).count()
        parts.append({"source": "correction", "label": "corrections", "count": n})
        if f.get("include_reasonable"):
            parts.append({"source": "reasonable", "label": "reasonable responses",
                          "count": reasonable_qs(project_id, f).count()})
        rows = sum(p["count"] for p in parts)
    else:
        rows = 0
        if "preferences" in f["sources"]:
            agg = preferences_qs(project_id, f).aggregate(
                ab=Count("pk", filter=Q(choice__in=["a", "b"])),
                both_bad=Count("pk", filter=Q(choice="both_bad")),
                tie=Count("pk", filter=Q(choice="tie")),
            )
            parts.append({"source": "preference", "label": "preferences (winner over loser)", "count": agg["ab"]})
            parts.append({"source": "both_bad", "label": "“both bad” preferences (vs. a correction)",
                          "count": agg["both_bad"]})
            if agg["tie"]:
                skipped.append({"label": "ties (skipped)", "count": agg["tie"]})
            rows += agg["ab"] + 2 * agg["both_bad"]
        if "corrections" in f["sources"]:
            n = corrections_qs(project_id, f, unreasonable_only=True).count()
            parts.append({"source": "correction", "label": "corrections of unreasonable responses", "count": n})
            rows += n
        if "online" in f["sources"]:
            n = online_qs(project_id, f).count()
            parts.append({"source": "online", "label": "pairs from online rounds", "count": n})
            rows += n
    return {"rows": rows, "parts": parts, "skipped": skipped, "records": sum(p["count"] for p in parts)}


# ============================================================================ messages


def _arguments_string(args) -> str:
    return args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)


def clean_message(m: dict) -> dict:
    """An OpenAI chat message with only the standard keys; tool-call arguments as JSON strings."""
    role = m.get("role")
    out = {"role": role, "content": m.get("content")}
    if role == "assistant":
        calls = m.get("tool_calls")
        if calls:
            out["tool_calls"] = [
                {"id": c.get("id") or f"call_{i}", "type": "function",
                 "function": {"name": (c.get("function") or {}).get("name"),
                              "arguments": _arguments_string((c.get("function") or {}).get("arguments", {}))}}
                for i, c in enumerate(calls) if isinstance(c, dict)
            ]
    elif role == "tool":
        if m.get("tool_call_id") is not None:
            out["tool_call_id"] = m["tool_call_id"]
        if m.get("name"):
            out["name"] = m["name"]
    return out


def response_output(message: dict, raw_text: str) -> dict:
    """A model response as the assistant message it really was.

    A response with a malformed tool call is kept verbatim (its raw text as content):
    its parsed form would hide the very defect a DPO pair should teach against.
    Reasoning is not exported (templates drop it from history anyway).
    """
    if message.get("malformed") and raw_text:
        return {"role": "assistant", "content": raw_text.strip()}
    return clean_message({**message, "role": "assistant"})


_WHITESPACE = b" \t\n\r\x0b\x0c"


def normalised(text: str) -> bytes:
    """Lower-cased UTF-8 with all whitespace removed: what "normalised" means for duplicates and prompts.

    Applied to JSON text too (where a newline is the escape `\\n`), so `{"sku": "A-1"}` and
    `{"sku":"A-1"}` arguments, or "Is A-1 in  stock?" and "is a-1 in\\nstock?", normalise alike.
    """
    return (text.lower().encode("utf-8").replace(b"\\n", b"").replace(b"\\t", b"").replace(b"\\r", b"")
            .translate(None, _WHITESPACE))


def _h64(data: bytes) -> int:
    """A stable 64-bit hash (stored in row indexes and compared across builds)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def _fast64(data: bytes) -> int:
    """Python's 64-bit SipHash: stable within one process only. Duplicate checks compare
    rows of the same build, so it is enough there, and 5x cheaper than blake2b."""
    return hash(data) & 0xFFFF_FFFF_FFFF_FFFF


def prompt_hash(messages) -> int:
    """Hash of the normalised dialogue without its system prompt (a re-import with a new
    system prompt is the same item): what the row index stores and the leakage check compares."""
    return digest_context(messages)[1]


def digest_context(messages: list) -> tuple[list[dict], int, str]:
    """(cleaned messages, prompt hash, text for token counting) in one pass over the messages:
    the same as [clean_message(m) …], prompt_hash(…) and " ".join(message_text(m) …), which
    would each walk every message and every call again (this runs once per row)."""
    context, hash_parts, text_parts = [], [], []
    add_hash, add_text, add_message = hash_parts.extend, text_parts.append, context.append
    for m in messages:
        if not isinstance(m, dict):
            continue
        role, content = m.get("role"), m.get("content")
        out = {"role": role, "content": content}
        text = content or ""
        if role != "system":
            add_hash((role or "", text))
        if role == "assistant":
            calls = m.get("tool_calls")
            if calls:
                cleaned = []
                for i, c in enumerate(calls):
                    if not isinstance(c, dict):
                        continue
                    fn = c.get("function") or {}
                    name, args = fn.get("name"), _arguments_string(fn.get("arguments", {}))
                    cleaned.append({"id": c.get("id") or f"call_{i}", "type": "function",
                                    "function": {"name": name, "arguments": args}})
                    text += f" {name} {args}"
                    add_hash((f"{name}{args}",))
                out["tool_calls"] = cleaned
        elif role == "tool":
            if m.get("tool_call_id") is not None:
                out["tool_call_id"] = m["tool_call_id"]
            if m.get("name"):
                out["name"] = m["name"]
        add_message(out)
        add_text(text)
    # plain text (not JSON): lower-cased, whitespace removed, no escapes to undo
    key = "\x00".join(hash_parts).lower().encode("utf-8").translate(None, _WHITESPACE)
    return context, _h64(key), " ".join(text_parts)


def message_text(m: dict) -> str:
    text = m.get("content") or ""
    for c in m.get("tool_calls") or ():
        fn = c.get("function") or {}
        text += f" {fn.get('name')} {fn.get('arguments')}"
    return text


# ============================================================================== tokens


class TokenCounter:
    """Token counts for stats and the too-long check: the project's tokenizer when one is
    chosen, otherwise an estimate (about 4 characters a token; 1 per CJK-like character)."""

    PER_MESSAGE = 4  # <|im_start|>role\n … <|im_end|>\n

    def __init__(self, tokenizer_path: str | None = None):
        self.tokenizer = None
        self.label = "estimate (~4 characters per token)"
        if tokenizer_path:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path, local_files_only=True)
            self.label = f"tokenizer at {tokenizer_path}"

    def count_many(self, texts: list[str]) -> list[int]:
        if self.tokenizer is not None:
            return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        return [(len(t) + 3) // 4 if t.isascii() else len(t.encode("utf-8")) // 3 for t in texts]


# ================================================================================= rows


class Row:
    """One exported example before layout, with where it came from."""

    __slots__ = ("source", "source_id", "conversation_id", "external_id", "context_length", "split",
                 "model_version_id", "ctx", "toolset", "target", "rejected", "categories", "conflict")

    def __init__(self, source, source_id, conversation_id, external_id, context_length, split, model_version_id,
                 ctx, toolset, target, rejected=None, categories=(), conflict=None):
        self.source, self.source_id, self.conversation_id = source, source_id, conversation_id
        self.external_id, self.context_length, self.split = external_id, context_length, split
        self.model_version_id, self.ctx, self.toolset, self.target = model_version_id, ctx, toolset, target
        self.rejected, self.categories, self.conflict = rejected, categories, conflict

    @property
    def context(self) -> list[dict]:
        return self.ctx[0]

    @property
    def tools(self) -> list:
        return self.toolset.tools

    @property
    def tool_names(self) -> frozenset:
        return self.toolset.names

    def where(self) -> dict:
        return {"source": self.source, "source_id": self.source_id, "conversation_id": self.conversation_id,
                "external_id": self.external_id}


class ToolSet:
    """One distinct tools list and its encodings, computed once per build (rows share them)."""

    __slots__ = ("tools", "json", "names", "as_string", "as_list", "as_llamafactory")

    def __init__(self, tools: list):
        self.tools = tools
        self.json = json.dumps(tools, ensure_ascii=False)  # the `tools` column of TRL layouts
        names = set()
        for t in tools:
            fn = t.get("function", t) if isinstance(t, dict) else None
            if isinstance(fn, dict) and isinstance(fn.get("name"), str):
                names.add(fn["name"])
        self.names = frozenset(names)
        # Each row's line ends with `"tools": …`; escaping the same JSON string a million
        # times would cost more than everything else in the row.
        self.as_string = _DUMPS(self.json)
        self.as_list = _DUMPS(tools)
        functions = [t.get("function", t) if isinstance(t, dict) and t.get("type") == "function" else t for t in tools]
        self.as_llamafactory = _DUMPS(json.dumps(functions, ensure_ascii=False))


class Contexts:
    """Per-build caches: parsed tools by their JSON text, cleaned contexts by (conversation, length)."""

    MAX = 512  # contexts repeat within a few rows (several labels of one response), rarely further apart

    def __init__(self, project_tools: list):
        self.project_tools = project_tools
        self._tools: dict[str, tuple] = {}
        self._contexts: dict[tuple, tuple] = {}

    def tools(self, tools_text: str | None) -> ToolSet:
        hit = self._tools.get(tools_text)
        if hit is None:
            tools = json.loads(tools_text) if tools_text else []
            hit = ToolSet(tools or self.project_tools or [])
            if len(self._tools) > 64:
                self._tools.clear()
            self._tools[tools_text] = hit
        return hit

    def context(self, conversation_id: int, length: int, messages_text: str) -> tuple:
        """-> (cleaned context messages, prompt hash, text for token counting)."""
        key = (conversation_id, length)
        hit = self._contexts.get(key)
        if hit is None:
            hit = digest_context(_loads(messages_text)[:length])
            if len(self._contexts) >= self.MAX:
                self._contexts.clear()
            self._contexts[key] = hit
        return hit


def _label_conflict(own: str, live: list[tuple[str, str]]) -> str | None:
    """Is the verdict behind this row contested? `live`: (verdict, status) of the response's
    submitted and approved labels. Approved labels are the lead's decision."""
    verdicts = {v for v, _ in live}
    if len(verdicts) < 2:
        return None
    approved = {v for v, s in live if s == Status.APPROVED}
    if len(approved) == 1:
        (decided,) = approved
        return None if own == decided else f"overruled: a lead approved a {decided!r} label on this response"
    if len(approved) > 1:
        return "a lead approved both a reasonable and an unreasonable label on this response"
    return "annotators disagree (reasonable vs unreasonable) and no lead has decided"


def _preference_conflict(winner: int, live: list[tuple[int, str]]) -> str | None:
    """`live`: (winning response id, status) of the pair's submitted/approved A-or-B preferences."""
    winners = {w for w, _ in live}
    if len(winners) < 2:
        return None
    approved = {w for w, s in live if s == Status.APPROVED}
    if len(approved) == 1:
        return None if winner in approved else "overruled: a lead approved the opposite preference on this pair"
    if len(approved) > 1:
        return "a lead approved opposite preferences on this pair"
    return "annotators prefer opposite responses of this pair and no lead has decided"


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


def prefetched(stream, *args, depth: int = 2):
    """`stream(*args)`, run one or two chunks ahead in a thread with its own connection.

    PostgreSQL then executes the next chunk's queries on another core while this thread
    turns the current chunk into rows. Only in autocommit on PostgreSQL: inside a
    transaction (tests, callers holding one) another connection could not see its rows,
    so the stream runs inline.
    """
    if (connection.vendor != "postgresql" or connection.in_atomic_block
            or not getattr(settings, "DATASET_EXPORT_PREFETCH", True)):
        yield from stream(*args)
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def run():
        try:
            for item in stream(*args):
                if not put(item):
                    return
            put(done)
        except BaseException as exc:  # handed to the consumer, which raises it
            put(_Failed(exc))
        finally:
            connections.close_all()  # this thread's connection only

    worker = threading.Thread(target=run, name="snapshot-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield item
    finally:
        stop.set()
        worker.join(timeout=10)


@contextmanager
def index_lookups():
    """Plan the chunk's queries as index nested loops (PostgreSQL).

    Every join of a chunk query follows a foreign key to a primary key from at most a
    window of driving rows; left to itself the planner sometimes hashes a whole table
    (a parallel sequential scan of every label, per chunk: quadratic over an export).
    SET LOCAL lasts until the end of this short transaction only.
    """
    if connection.vendor != "postgresql":
        yield
        return
    with transaction.atomic(), connection.cursor() as cursor:
        for setting in ("enable_hashjoin", "enable_mergejoin"):
            cursor.execute(f"SET LOCAL {setting} = off")
        cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        yield


def _col(model, column: str) -> str:
    qn = connection.ops.quote_name
    return f"{qn(model._meta.db_table)}.{qn(column)}"


def ids_in(*columns: str, ids) -> RawSQL:
    """`column = ANY(%s)` with the chunk's ids as one array parameter (`IN (%s, %s, …)` with
    2,000 placeholders costs Django more to compile than PostgreSQL to run). Several
    columns are OR-ed. SQLite reads the ids from a JSON array."""
    ids = sorted(ids)
    if connection.vendor == "postgresql":
        cond, param = "{} = ANY(%s)", ids
    else:
        cond, param = "{} IN (SELECT value FROM json_each(%s))", json.dumps(ids)
    sql = " OR ".join(cond.format(c) for c in columns)
    return RawSQL(f"({sql})", [param] * len(columns), output_field=BooleanField())


class Source:
    """One kind of source record, read in keyset chunks of `values_list` rows."""

    name = ""
    fields: tuple[str, ...] = ()

    def __init__(self, build: Build):
        self.build = build
        self.f = build.filters

    def queryset(self):
        raise NotImplementedError

    def count(self) -> int:
        return self.queryset().count()

    def stream(self, size: int):
        """(chunk, look-ups) in keyset chunks over id windows: `pk > last AND pk <= last + window … LIMIT size`.

        The upper bound keeps every chunk small and cheap to plan; the window grows where
        the project's rows are sparse among other projects' ids and shrinks back where
        they are dense. Rows created after the build started (ids above today's maximum)
        are not read. The query is compiled once and run through the DB-API cursor: rows
        arrive as plain tuples, JSON columns as text (parsed where needed, once).
        """
        sql, params, lo, hi = self.chunk_sql(size)
        top = self.queryset().model.objects.aggregate(top=Max("pk"))["top"] or 0
        last, window = 0, size
        while last < top:
            params[lo], params[hi] = last, last + window
            with index_lookups(), connection.cursor() as cursor:
                cursor.execute(sql, params)
                chunk = cursor.fetchall()
                aux = self.lookups(chunk) if chunk else {}
            if len(chunk) == size:
                last = chunk[-1][0]
                window = max(size, window // 2)
            else:
                last += window
                if len(chunk) < size // 2:
                    window = min(window * 2, size * 256)
            if chunk:
                yield chunk, aux

    def columns(self) -> tuple[str, ...]:
        """What a record holds, in order: the id, `fields`, the conversation's messages and tools."""
        p = self.conversation_path
        return ("pk", *self.fields, f"{p}__messages", f"{p}__tools")

    def chunk_sql(self, size: int) -> tuple[str, list, int, int]:
        """The chunk query's SQL and parameters, with the positions of the window bounds."""
        lo_mark, hi_mark = -(2**62) + 11, -(2**62) + 13  # never ids
        qs = self.queryset().order_by("pk").filter(pk__gt=lo_mark, pk__lte=hi_mark).values_list(*self.columns())
        sql, params = qs[:size].query.sql_with_params()
        params = list(params)
        return sql, params, params.index(lo_mark), params.index(hi_mark)

    conversation_path = ""

    def lookups(self, chunk) -> dict:
        """The chunk's look-ups in other tables (database work only: may run in the prefetch thread)."""
        return {}

    def rows(self, chunk, aux: dict) -> list[Row]:
        """The chunk's rows (no database work)."""
        raise NotImplementedError


    # shared per-chunk look-ups -------------------------------------------------------
    def label_categories(self, label_ids) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        through = Label.categories.through
        for label_id, cat in through.objects.filter(ids_in(_col(through, "label_id"), ids=label_ids)).values_list(
                "label_id", "taxonomycategory_id").order_by("label_id", "taxonomycategory_id"):
            out.setdefault(label_id, []).append(cat)
        return out

    def live_labels(self, response_ids) -> dict[int, list[tuple[str, str]]]:
        out: dict[int, list] = {}
        for rid, verdict, status in Label.objects.filter(
                ids_in(_col(Label, "response_id"), ids=response_ids),
                status__in=[Status.SUBMITTED, Status.APPROVED]).exclude(
                verdict="").values_list("response_id", "verdict", "status"):
            out.setdefault(rid, []).append((verdict, status))
        return out


class LabelledSource(Source):
    """SFT/eval rows whose target is a correction (any verdict: the correction is the better answer)."""

    conversation_path = "label__response__conversation"
    fields = ("message", "label_id", "label__verdict", "label__response_id", "label__response__context_length",
              "label__response__model_version_id", "label__response__conversation_id",
              "label__response__conversation__external_id", "label__response__conversation__split")
    name = "correction"

    def queryset(self):
        return corrections_qs(self.build.project.pk, self.f)

    def target(self, rec) -> dict:
        return clean_message({**_loads(rec[1]), "role": "assistant"})

    def lookups(self, chunk):
        return {"cats": self.label_categories([r[2] for r in chunk]),
                "live": self.live_labels([r[4] for r in chunk])}

    def rows(self, chunk, aux):
        cats, live = aux["cats"], aux["live"]
        contexts = self.build.contexts
        out = []
        for rec in chunk:
            pk, _msg, label_id, verdict, response_id, length, mv, conv_id, ext, split = rec[:10]
            messages_text, tools_text = rec[-2:]
            out.append(Row(
                source=self.name, source_id=pk, conversation_id=conv_id, external_id=ext, context_length=length,
                split=split, model_version_id=mv, ctx=contexts.context(conv_id, length, messages_text),
                toolset=contexts.tools(tools_text), target=self.target(rec),
                categories=cats.get(label_id, ()), conflict=_label_conflict(verdict, live.get(response_id, [])),
            ))
        return out


class ReasonableSource(LabelledSource):
    """SFT/eval rows from approved "reasonable" responses without a correction: the response as it was."""

    conversation_path = "response__conversation"
    fields = ("response__message", "pk", "verdict", "response_id", "response__context_length",
              "response__model_version_id", "response__conversation_id", "response__conversation__external_id",
              "response__conversation__split", "response__raw_text")
    name = "reasonable"

    def queryset(self):
        return reasonable_qs(self.build.project.pk, self.f)

    def target(self, rec) -> dict:
        return response_output(_loads(rec[1]), rec[10])


class CorrectionPairSource(Source):
    """DPO: a correction (chosen) over the unreasonable response it corrects (rejected)."""

    conversation_path = "label__response__conversation"
    fields = ("message", "label_id", "label__verdict", "label__response_id", "label__response__context_length",
              "label__response__model_version_id", "label__response__conversation_id",
              "label__response__conversation__external_id", "label__response__conversation__split",
              "label__response__message", "label__response__raw_text")
    name = "correction"

    def queryset(self):
        return corrections_qs(self.build.project.pk, self.f, unreasonable_only=True)

    def lookups(self, chunk):
        return {"cats": self.label_categories([r[2] for r in chunk]),
                "live": self.live_labels([r[4] for r in chunk])}

    def rows(self, chunk, aux):
        cats, live = aux["cats"], aux["live"]
        out = []
        for rec in chunk:
            (pk, msg, label_id, verdict, response_id, length, mv, conv_id, ext, split, resp_msg, raw,
             messages_text, tools_text) = rec
            out.append(Row(
                source=self.name, source_id=pk, conversation_id=conv_id, external_id=ext, context_length=length,
                split=split, model_version_id=mv, ctx=self.build.contexts.context(conv_id, length, messages_text),
                toolset=self.build.contexts.tools(tools_text),
                target=clean_message({**_loads(msg), "role": "assistant"}),
                rejected=response_output(_loads(resp_msg), raw), categories=cats.get(label_id, ()),
                conflict=_label_conflict(verdict, live.get(response_id, [])),
            ))
        return out


class PreferenceSource(Source):
    """DPO: winner over loser; "both bad" → the context's correction over each response; ties skipped."""

    conversation_path = "response_a__conversation"
    fields = ("choice", "response_a_id", "response_b_id", "response_a__context_length",
              "response_b__context_length", "response_a__conversation_id", "response_b__conversation_id",
              "response_a__message", "response_a__raw_text", "response_b__message", "response_b__raw_text",
              "response_a__model_version_id", "response_b__model_version_id",
              "response_a__conversation__external_id", "response_a__conversation__split")
    name = "preference"

    def queryset(self):
        return preferences_qs(self.build.project.pk, self.f).filter(choice__in=["a", "b", "both_bad"])

    def corrections_for(self, contexts: set[tuple[int, int]]) -> dict[tuple, tuple]:
        """The best correction per (conversation, context length): approved first, then the earliest."""
        if not contexts:
            return {}
        best: dict[tuple, tuple] = {}
        rank = {Status.APPROVED: 0, Status.SUBMITTED: 1}
        qs = Correction.objects.filter(
            ids_in(_col(ModelResponse, "conversation_id"), ids={c for c, _ in contexts}),
            label__status__in=statuses(self.f),
        ).values_list("pk", "message", "label__status", "label__verdict", "label__response_id",
                      "label__response__conversation_id", "label__response__context_length")
        for pk, msg, status, verdict, rid, conv, length in qs:
            key = (conv, length)
            if key in contexts:
                candidate = (rank[status], pk, msg, rid, verdict)
                if key not in best or candidate[:2] < best[key][:2]:
                    best[key] = candidate
        return best

    def live_preferences(self, response_ids) -> dict[frozenset, list[tuple[int, str]]]:
        out: dict[frozenset, list] = {}
        for a, b, choice, status in Preference.objects.filter(
                ids_in(_col(Preference, "response_a_id"), _col(Preference, "response_b_id"), ids=response_ids),
                status__in=[Status.SUBMITTED, Status.APPROVED], choice__in=["a", "b"]).values_list(
                "response_a_id", "response_b_id", "choice", "status"):
            out.setdefault(frozenset((a, b)), []).append((a if choice == "a" else b, status))
        return out

    def response_categories(self, response_ids) -> dict[int, set[int]]:
        out: dict[int, set] = {}
        for rid, cat in Label.categories.through.objects.filter(
                ids_in(_col(Label, "response_id"), ids=response_ids), label__status__in=statuses(self.f)).values_list(
                "label__response_id", "taxonomycategory_id"):
            out.setdefault(rid, set()).add(cat)
        return out

    @staticmethod
    def same_context(rec) -> bool:
        return rec[4] == rec[5] and rec[6] == rec[7]  # context length and conversation of a and b

    def lookups(self, chunk):
        good = [r for r in chunk if self.same_context(r)]
        ids = {r[2] for r in good} | {r[3] for r in good}
        return {
            "live": self.live_preferences(ids) if any(r[1] != "both_bad" for r in good) else {},
            "corrections": self.corrections_for({(r[6], r[4]) for r in good if r[1] == "both_bad"}),
            "cats": self.response_categories(ids),
        }

    def rows(self, chunk, aux):
        build = self.build
        good = []
        for rec in chunk:
            if not self.same_context(rec):
                (pk, _choice, a, b, len_a, len_b, conv_a, conv_b, *_rest) = rec
                build.skipped["context_mismatch"] += 1
                build.auditor.flag("pair_context_mismatch",
                                   f"response {a} answers {len_a} messages of conversation {conv_a}, "
                                   f"response {b} answers {len_b} of conversation {conv_b}",
                                   None, source="preference", source_id=pk, conversation_id=conv_a,
                                   external_id=rec[14])
                continue
            good.append(rec)
        live, corrections, cats = aux["live"], aux["corrections"], aux["cats"]
        skip_own = "corrections" in self.f["sources"]
        out = []
        for rec in good:
            (pk, choice, a, b, length, _lb, conv_id, _cb, msg_a, raw_a, msg_b, raw_b, mv_a, mv_b, ext, split,
             messages_text, tools_text) = rec
            common = dict(conversation_id=conv_id, external_id=ext, context_length=length, split=split,
                          ctx=build.contexts.context(conv_id, length, messages_text),
                          toolset=build.contexts.tools(tools_text))
            out_a, out_b = response_output(_loads(msg_a), raw_a), response_output(_loads(msg_b), raw_b)
            if choice in ("a", "b"):
                win, lose = (a, b) if choice == "a" else (b, a)
                chosen, rejected = (out_a, out_b) if choice == "a" else (out_b, out_a)
                out.append(Row(source="preference", source_id=pk, model_version_id=mv_b if lose == b else mv_a,
                               target=chosen, rejected=rejected, categories=sorted(cats.get(lose, ())),
                               conflict=_preference_conflict(win, live.get(frozenset((a, b)), [])), **common))
                continue
            best = corrections.get((conv_id, length))
            if best is None:
                build.skipped["both_bad_without_correction"] += 1
                continue
            _rank, _cpk, cmsg, corrected_rid, verdict = best
            chosen = clean_message({**cmsg, "role": "assistant"})
            for rid, rejected, mv in ((a, out_a, mv_a), (b, out_b, mv_b)):
                if skip_own and rid == corrected_rid and verdict == Label.Verdict.UNREASONABLE:
                    build.skipped["both_bad_pair_already_from_correction"] += 1
                    continue  # the corrections source emits exactly this pair
                out.append(Row(source="both_bad", source_id=pk, model_version_id=mv, target=chosen,
                               rejected=rejected, categories=sorted(cats.get(rid, ())), **common))
        return out


class OnlinePairSource(Source):
    """DPO: pairs an online round ranked from the policy's own samples (training/online.py)."""

    conversation_path = "conversation"
    fields = ("chosen_message", "rejected_id", "context_length", "rejected__model_version_id", "conversation_id",
              "conversation__external_id", "conversation__split", "rejected__message", "rejected__raw_text")
    name = "online"

    def queryset(self):
        return online_qs(self.build.project.pk, self.f)

    def rows(self, chunk, aux):
        out = []
        for rec in chunk:
            (pk, chosen, _rid, length, mv, conv_id, ext, split, resp_msg, raw, messages_text, tools_text) = rec
            out.append(Row(
                source=self.name, source_id=pk, conversation_id=conv_id, external_id=ext, context_length=length,
                split=split, model_version_id=mv, ctx=self.build.contexts.context(conv_id, length, messages_text),
                toolset=self.build.contexts.tools(tools_text),
                target=clean_message({**_loads(chosen), "role": "assistant"}),
                rejected=response_output(_loads(resp_msg), raw)))
        return out


def plan_sources(build: Build) -> list[Source]:
    f = build.filters
    if build.kind == Kind.DPO:
        sources = []
        if "online" in f["sources"]:
            sources.append(OnlinePairSource(build))
        if "preferences" in f["sources"]:
            sources.append(PreferenceSource(build))
        if "corrections" in f["sources"]:
            sources.append(CorrectionPairSource(build))
        return sources
    sources = [LabelledSource(build)]
    if f.get("include_reasonable"):
        sources.append(ReasonableSource(build))
    return sources


# ============================================================================= layouts


def _lf_calls_value(message: dict) -> str:
    calls = []
    for c in message.get("tool_calls") or ():
        fn = c["function"]
        try:
            args = json.loads(fn["arguments"])
        except (TypeError, ValueError):
            args = fn["arguments"]
        calls.append({"name": fn["name"], "arguments": args})
    return json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False)


def _lf_turn(message: dict) -> dict:
    role = message["role"]
    if role == "assistant":
        if message.get("tool_calls"):
            return {"from": "function_call", "value": _lf_calls_value(message)}
        return {"from": "gpt", "value": message.get("content") or ""}
    if role == "tool":
        return {"from": "observation", "value": message.get("content") or ""}
    return {"from": "human", "value": message.get("content") or ""}


def _llamafactory(row: Row) -> dict:
    system = ""
    turns: list[dict] = []
    for m in row.context:
        if m["role"] == "system":
            system = m.get("content") or ""
            continue
        turn = _lf_turn(m)
        if turns and turns[-1]["from"] == turn["from"] and turn["from"] in ("human", "observation", "gpt"):
            turns[-1] = {"from": turn["from"], "value": turns[-1]["value"] + "\n" + turn["value"]}
        else:
            turns.append(turn)
    return {"conversations": turns, "chosen": _lf_turn(row.target), "rejected": _lf_turn(row.rejected),
            "system": system}


def _with_tools(row_dict: dict, tools_encoded: str) -> str:
    """The row's JSON text with `"tools": …` appended from the pre-encoded tools."""
    return _DUMPS(row_dict)[:-1] + ',"tools":' + tools_encoded + "}"


# layout -> row -> one JSON line (without the newline)
FORMATTERS = {
    "trl_messages": lambda r: _with_tools({"messages": [*r.context, r.target]}, r.toolset.as_string),
    "trl_prompt_completion": lambda r: _with_tools({"prompt": r.context, "completion": [r.target]},
                                                   r.toolset.as_string),
    "openai_chat": lambda r: _with_tools({"messages": [*r.context, r.target]}, r.toolset.as_list),
    "trl_preference": lambda r: _with_tools({"prompt": r.context, "chosen": [r.target], "rejected": [r.rejected]},
                                            r.toolset.as_string),
    "openai_preference": lambda r: _DUMPS({"input": {"messages": r.context, "tools": r.tools},
                                           "preferred_output": [r.target], "non_preferred_output": [r.rejected]}),
    "llamafactory": lambda r: _with_tools(_llamafactory(r), r.toolset.as_llamafactory),
    "eval_cases": lambda r: _with_tools({"id": f"{r.external_id}@{r.context_length}", "messages": r.context,
                                         "expected": r.target, "source": f"{r.source}:{r.source_id}"},
                                        r.toolset.as_string),
}


def _from_lf_turn(turn: dict) -> dict:
    if turn.get("from") == "function_call":
        calls = json.loads(turn["value"])
        calls = calls if isinstance(calls, list) else [calls]
        return {"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "function": {"name": c.get("name"), "arguments": c.get("arguments")}} for c in calls]}
    role = {"gpt": "assistant", "observation": "tool", "human": "user"}.get(turn.get("from"), "user")
    return {"role": role, "content": turn.get("value")}


def display_row(layout: str, data: dict) -> dict:
    """A stored row back as {context, target, rejected?} messages, for the preview."""
    if layout in ("trl_messages", "openai_chat"):
        return {"context": data["messages"][:-1], "target": data["messages"][-1]}
    if layout == "trl_prompt_completion":
        return {"context": data["prompt"], "target": data["completion"][0]}
    if layout == "trl_preference":
        return {"context": data["prompt"], "target": data["chosen"][0], "rejected": data["rejected"][0]}
    if layout == "openai_preference":
        return {"context": data["input"]["messages"], "target": data["preferred_output"][0],
                "rejected": data["non_preferred_output"][0]}
    if layout == "llamafactory":
        context = [{"role": "system", "content": data["system"]}] if data.get("system") else []
        context += [_from_lf_turn(t) for t in data["conversations"]]
        return {"context": context, "target": _from_lf_turn(data["chosen"]),
                "rejected": _from_lf_turn(data["rejected"])}
    return {"context": data["messages"], "target": data["expected"]}


def llamafactory_dataset_info(snapshot: DatasetSnapshot) -> str:
    """The dataset_info.json entry LLaMA-Factory needs for a llamafactory-layout snapshot."""
    entry = {snapshot.download_name.removesuffix(".jsonl"): {
        "file_name": snapshot.download_name, "formatting": "sharegpt", "ranking": True,
        "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected", "system": "system",
                    "tools": "tools"},
    }}
    return json.dumps(entry, indent=2)


# =============================================================================== files


def media_path(name: str) -> Path:
    return Path(settings.MEDIA_ROOT) / name


def file_name_for(snapshot: DatasetSnapshot) -> str:
    return f"datasets/{snapshot.project.slug}/{snapshot.pk}-{snapshot.kind}-v{snapshot.version}.jsonl"


def index_path(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(".jsonl") + ".rows.bin")


def _temp_paths(final: Path, token: str) -> tuple[Path, Path]:
    return final.with_name(f".{final.name}.{token}.tmp"), final.with_name(f".{index_path(final).name}.{token}.tmp")


def _remove_temps(final: Path):
    for pattern in (f".{final.name}.*.tmp", f".{index_path(final).name}.*.tmp"):
        for p in final.parent.glob(pattern):
            p.unlink(missing_ok=True)


def remove_files(snapshot: DatasetSnapshot):
    """The snapshot's file, its row index and any temp file of a build in flight."""
    final = media_path(snapshot.file.name) if snapshot.file else None
    if snapshot.project_id and snapshot.pk:
        try:
            final = final or media_path(file_name_for(snapshot))
        except Project.DoesNotExist:
            pass
    if final is None:
        return
    final.unlink(missing_ok=True)
    index_path(final).unlink(missing_ok=True)
    if final.parent.exists():
        _remove_temps(final)


def _map_index(path: Path) -> np.ndarray:
    """The row index, memory-mapped: a column read touches only that column's bytes."""
    if not path.exists() or path.stat().st_size == 0:
        return np.zeros(0, INDEX_DTYPE)
    return np.memmap(path, dtype=INDEX_DTYPE, mode="r")


def read_index(snapshot: DatasetSnapshot) -> np.ndarray:
    """A ready snapshot's row index (see INDEX_DTYPE), memory-mapped."""
    return _map_index(index_path(media_path(snapshot.file.name)))


def _fsync_dir(path: Path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ============================================================================ the build


class Superseded(Exception):
    """Another attempt owns the snapshot now, or it was deleted: stop quietly."""


class BuildCancelled(Exception):
    pass


class Build:
    """One attempt at building one snapshot (claimed: its run token names the attempt's temp files)."""

    def __init__(self, snapshot: DatasetSnapshot):
        self.snapshot = snapshot
        self.token = snapshot.run_token
        self.project = snapshot.project
        self.kind = snapshot.kind
        self.layout = snapshot.layout
        self.filters = snapshot.filters
        self.config = snapshot.audit_config
        self.auditor = audit_mod.Auditor(self.kind, self.config)
        self.contexts = Contexts(self.project.tools)
        self.skipped: Counter = Counter()
        self.final = media_path(file_name_for(snapshot))
        self.tmp, self.tmp_index = _temp_paths(self.final, self.token)
        self._last_beat = 0.0

    # -- progress ------------------------------------------------------------------------
    def beat(self, force: bool = False, **fields):
        now = time.monotonic()
        if not force and now - self._last_beat < 0.5:
            return
        self._last_beat = now
        if not lifecycle.heartbeat(self.snapshot, **fields):
            raise BuildCancelled() if self.snapshot.cancel_requested else Superseded()

    # -- token counter -------------------------------------------------------------------
    def token_counter(self) -> TokenCounter:
        mv_id = self.config.get("tokenizer")
        if not mv_id:
            return TokenCounter()
        mv = ModelVersion.objects.filter(pk=mv_id).first()
        if mv is None or not mv.path:
            raise BuildError("The model version chosen for token counting is gone or has no folder.")
        try:
            return TokenCounter(mv.path)
        except (OSError, ValueError) as exc:
            raise BuildError(f"Could not load the tokenizer of {mv.name!r} from {mv.path}: {exc}") from exc

    # -- the stream ----------------------------------------------------------------------
    def write(self) -> dict:
        """Stream every row into the temp file and the row index; return the counts for the stats."""
        sources = plan_sources(self)
        total = sum(s.count() for s in sources)
        self.beat(force=True, rows_total=total, phase="writing rows")
        self.counter = self.token_counter()
        self.sha = hashlib.sha256()
        self.n = 0
        self.tally = {"by_source": Counter(), "by_split": Counter(), "by_model_version": Counter(),
                      "by_category": Counter(), "uncategorised": 0, "with_tool_calls": 0,
                      "rejected_with_tool_calls": 0}
        done = 0
        self.final.parent.mkdir(parents=True, exist_ok=True)
        # The stream makes millions of short-lived, acyclic objects while the caches hold
        # many long-lived ones: the cyclic GC would spend more time scanning those than the
        # export spends working (measured: about 3x slower). Refcounting frees everything
        # here; the young generations are still collected every 50,000 records.
        collected = 0
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            with open(self.tmp, "wb") as out, open(self.tmp_index, "wb") as idx:
                for source in sources:
                    for chunk, aux in prefetched(source.stream, chunk_size()):
                        rows = source.rows(chunk, aux)
                        if rows:
                            self._write_rows(rows, out, idx)
                        done += len(chunk)
                        self.beat(rows_done=done)
                        if done - collected >= 50_000:  # the few cycles Django leaves per query
                            gc.collect(1)
                            collected = done
                out.flush()
                os.fsync(out.fileno())
                idx.flush()
                os.fsync(idx.fileno())
        finally:
            if gc_was_enabled:
                gc.enable()
        return {"rows": self.n, "records": done, "sha256": self.sha.hexdigest(), "token_counter": self.counter.label,
                **self.tally}

    def _write_rows(self, rows: list[Row], out, idx):
        counter, auditor, tally = self.counter, self.auditor, self.tally
        per = TokenCounter.PER_MESSAGE
        prompt_tokens = self._prompt_tokens(rows, counter)
        target_tokens = [per + t for t in counter.count_many([message_text(r.target) for r in rows])]
        if self.kind == Kind.DPO:
            rejected_tokens = [per + t for t in counter.count_many([message_text(r.rejected) for r in rows])]
        else:
            rejected_tokens = [0] * len(rows)
        fmt = FORMATTERS[self.layout]
        exact_on = auditor.on("exact_duplicate") or auditor.on("normalised_duplicate")
        norm_on = auditor.on("normalised_duplicate")
        by_source, by_split, by_mv, by_cat = (tally["by_source"], tally["by_split"], tally["by_model_version"],
                                              tally["by_category"])
        records = []
        for row, pt, tt, rt in zip(rows, prompt_tokens, target_tokens, rejected_tokens, strict=True):
            self.n += 1
            auditor.check_row(self.n, row, pt + max(tt, rt), row.where())
            text = fmt(row)
            line = text.encode("utf-8") + b"\n"
            out.write(line)
            self.sha.update(line)
            records.append((row.conversation_id, row.source_id, row.ctx[1], _fast64(line) if exact_on else 0,
                            _fast64(normalised(text)) if norm_on else 0, pt, tt, rt, SOURCE_CODES[row.source]))
            by_source[row.source] += 1
            by_split[row.split] += 1
            by_mv[row.model_version_id] += 1
            if row.categories:
                for c in row.categories:
                    by_cat[c] += 1
            else:
                tally["uncategorised"] += 1
            if row.target.get("tool_calls"):
                tally["with_tool_calls"] += 1
            if row.rejected is not None and row.rejected.get("tool_calls"):
                tally["rejected_with_tool_calls"] += 1
        np.array(records, dtype=INDEX_DTYPE).tofile(idx)

    def _prompt_tokens(self, rows: list[Row], counter: TokenCounter) -> list[int]:
        """Prompt tokens per row: tools block + messages, counted once per distinct context."""
        texts, keys, order = [], {}, []
        for row in rows:
            key = (id(row.ctx), id(row.toolset))
            if key not in keys:
                keys[key] = len(texts)
                texts.append(row.toolset.json + " " + row.ctx[2] if row.tools else row.ctx[2])
            order.append(keys[key])
        counts = counter.count_many(texts)
        return [counts[i] + TokenCounter.PER_MESSAGE * len(rows[k].context) for k, i in enumerate(order)]

    # -- checks over the whole file -----------------------------------------------------
    def end_checks(self, index: np.ndarray) -> list[int]:
        """Duplicates and leakage, over the row index. Returns the other-side snapshot ids checked."""
        auditor = self.auditor
        exact_dup = np.zeros(len(index), dtype=bool)
        if auditor.on("exact_duplicate") or auditor.on("normalised_duplicate"):
            exact_dup, exact_first = _duplicates(index["exact"])
            if auditor.on("exact_duplicate"):
                self._flag_rows("exact_duplicate", index, np.nonzero(exact_dup)[0],
                                lambda i: f"same bytes as row {exact_first[i] + 1}")
            if auditor.on("normalised_duplicate"):
                norm_dup, norm_first = _duplicates(index["normalised"])
                hits = np.nonzero(norm_dup & ~exact_dup)[0]
                self._flag_rows("normalised_duplicate", index, hits,
                                lambda i: f"same as row {norm_first[i] + 1} after normalising")
        checked: list[int] = []
        if auditor.on("leakage"):
            checked = self.leakage(index)
        return checked

    def leakage(self, index: np.ndarray, exclude: tuple[int, ...] = ()) -> list[int]:
        """Flag rows whose conversation or normalised prompt is on the other side (eval vs train)."""
        other_kinds = [Kind.EVAL] if self.kind in TRAIN_KINDS else list(TRAIN_KINDS)
        others = list(DatasetSnapshot.objects.filter(project=self.project, kind__in=other_kinds, status=State.READY)
                      .exclude(pk__in=exclude).exclude(pk=self.snapshot.pk).only("pk", "kind", "version", "file"))
        if not others or not len(index):
            return [o.pk for o in others]
        leaks = np.zeros(len(index), dtype=bool)
        found_in: dict[int, str] = {}
        for other in others:
            o = read_index(other)
            hit = np.isin(index["conversation"], np.unique(o["conversation"])) | np.isin(
                index["prompt"], np.unique(o["prompt"]))
            del o
            for i in np.nonzero(hit & ~leaks)[0][: audit_mod.MAX_EXAMPLES]:
                found_in[int(i)] = other.name
            leaks |= hit
        self._flag_rows("leakage", index, np.nonzero(leaks)[0],
                        lambda i: f"this conversation or the same prompt is in {found_in.get(int(i), 'another snapshot')}")
        return [o.pk for o in others]

    def _flag_rows(self, key: str, index: np.ndarray, rows: np.ndarray, detail):
        if not len(rows):
            return
        sample = [int(i) for i in rows[: audit_mod.MAX_EXAMPLES]]
        ext = dict(self.project.conversations.filter(pk__in=[int(index["conversation"][i]) for i in sample])
                   .values_list("pk", "external_id"))
        for i in sample:
            conv = int(index["conversation"][i])
            self.auditor.flag(key, detail(i), i + 1, source=SOURCE_NAMES[int(index["source"][i])],
                              source_id=int(index["source_id"][i]), conversation_id=conv,
                              external_id=ext.get(conv, ""))
        self.auditor.counts[key] += len(rows) - len(sample)

    # -- stats ---------------------------------------------------------------------------
    def stats(self, result: dict, index: np.ndarray) -> dict:
        rows = result["rows"]
        cat_names = dict(TaxonomyCategory.objects.filter(project=self.project).values_list("pk", "name"))
        mv_names = dict(ModelVersion.objects.filter(project=self.project).values_list("pk", "name"))
        categories = sorted(((cat_names.get(c, f"#{c}"), n) for c, n in result["by_category"].items()),
                            key=lambda kv: (-kv[1], kv[0]))
        if result["uncategorised"]:
            categories.append(("(no category)", result["uncategorised"]))
        stats = {
            "rows": rows,
            "source_records": result["records"],
            "rows_by_source": dict(sorted(result["by_source"].items())),
            "rows_by_split": dict(sorted(result["by_split"].items())),
            "rows_by_model_version": dict(sorted(
                ((mv_names.get(k, "(none)") if k else "(none)", v) for k, v in result["by_model_version"].items()),
                key=lambda kv: -kv[1])),
            "rows_by_category": dict(categories),
            "skipped": dict(sorted(self.skipped.items())),
            "tool_call_share": round(result["with_tool_calls"] / rows, 4) if rows else None,
            "token_counter": result["token_counter"],
            "prompt_tokens": _token_stats(index["prompt_tokens"]),
            "target_tokens": _token_stats(index["target_tokens"]),
            "token_histogram": _histogram(index["prompt_tokens"].astype(np.int64) + index["target_tokens"]),
        }
        if self.kind == Kind.DPO:
            stats["rejected_tokens"] = _token_stats(index["rejected_tokens"])
            stats["rejected_tool_call_share"] = round(result["rejected_with_tool_calls"] / rows, 4) if rows else None
        return stats


class BuildError(Exception):
    """A problem the admin can fix (a missing tokenizer folder …): the snapshot fails with this message."""


def _duplicates(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(is a repeat of an earlier row, index of the first such row) for every row."""
    n = len(values)
    if n == 0:
        return np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64)
    order = np.argsort(values, kind="stable")
    s = values[order]
    start = np.ones(n, dtype=bool)
    start[1:] = s[1:] != s[:-1]
    group_first = order[np.maximum.accumulate(np.where(start, np.arange(n), 0))]
    dup = np.zeros(n, dtype=bool)
    dup[order] = ~start
    first = np.empty(n, dtype=np.int64)
    first[order] = group_first
    return dup, first


def _token_stats(values: np.ndarray) -> dict | None:
    if not len(values):
        return None
    v = values.astype(np.int64)
    p50, p90, p99 = (int(x) for x in np.percentile(v, [50, 90, 99], method="nearest"))
    return {"min": int(v.min()), "p50": p50, "p90": p90, "p99": p99, "max": int(v.max()), "mean": round(float(v.mean()), 1)}


def _histogram(values: np.ndarray) -> dict | None:
    if not len(values):
        return None
    edges = [0, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]
    top = int(values.max())
    while edges[-1] <= top:
        edges.append(edges[-1] * 2)
    counts, _ = np.histogram(values, bins=edges)
    while len(counts) > 1 and counts[-1] == 0:
        counts, edges = counts[:-1], edges[:-1]
    return {"edges": [int(e) for e in edges[: len(counts) + 1]], "counts": [int(c) for c in counts]}


def _fail(build: Build, failure: str, message: str, **extra) -> None:
    lifecycle.finish(build.snapshot, State.FAILED, message, failure=failure, **extra)


def _no_rows_message(build: Build, result: dict) -> str:
    if result["records"]:
        why = ", ".join(f"{n:,} {k.replace('_', ' ')}" for k, n in sorted(build.skipped.items()))
        return (f"No rows: {result['records']:,} source records matched but none made a row"
                + (f" ({why})." if why else "."))
    words = "; ".join(describe_filters(build.kind, build.filters, filter_names(build.project.pk)))
    return f"No rows: nothing matches these filters ({words}). Nothing was written."


def build_snapshot(snapshot_id: int) -> DatasetSnapshot | None:
    """Build one snapshot. Safe to run twice (a finished snapshot is left alone) and after a
    killed attempt (the new attempt takes over, removes the old temp files, starts again)."""
    snap = lifecycle.claim(DatasetSnapshot, snapshot_id)
    if snap is None:
        return _reload(snapshot_id)
    build = Build(snap)
    _remove_temps_except(build)
    with lifecycle.attempt(snap):
        try:
            build.beat(force=True, phase="starting", rows_done=0)
            result = build.write()
            build.beat(force=True, phase="auditing")
            index = _map_index(build.tmp_index)
            if result["rows"] == 0:
                _cleanup(build)
                _fail(build, Failure.NO_ROWS, _no_rows_message(build, result),
                      audit=build.auditor.report(0, result["token_counter"]),
                      stats={"rows": 0, "source_records": result["records"], "skipped": dict(build.skipped)})
                return _reload(snapshot_id)
            checked = build.end_checks(index)
            stats = build.stats(result, index)
            del index
            if build.auditor.blocking:
                _cleanup(build)
                _fail(build, Failure.AUDIT, build.auditor.blocked_message(),
                      audit=build.auditor.report(result["rows"], result["token_counter"]), stats=stats,
                      rows_done=result["records"])
                return _reload(snapshot_id)
            build.beat(force=True, phase="finalising")
            _finalise(build, result, stats, checked)
        except Superseded:
            _cleanup(build)
            log.info("snapshot %s: attempt %s superseded or deleted", snapshot_id, build.token)
        except BuildCancelled:
            _cleanup(build)
            lifecycle.finish(snap, State.CANCELLED, "Cancelled; nothing was written.")
        except (OperationalError, InterfaceError):
            _cleanup(build)
            raise  # the task retries; the next attempt takes over
        except BuildError as exc:
            _cleanup(build)
            _fail(build, Failure.ERROR, str(exc))
        except Exception as exc:
            _cleanup(build)
            log.exception("snapshot %s failed", snapshot_id)
            _fail(build, Failure.ERROR, f"The build failed: {type(exc).__name__}: {exc}")
    return _reload(snapshot_id)


def _reload(pk: int) -> DatasetSnapshot | None:
    return DatasetSnapshot.objects.select_related("project").filter(pk=pk).first()


def _cleanup(build: Build):
    build.tmp.unlink(missing_ok=True)
    build.tmp_index.unlink(missing_ok=True)


def _remove_temps_except(build: Build):
    """Temp files of earlier, killed attempts of this snapshot."""
    if build.final.parent.exists():
        _remove_temps(build.final)


def _finalise(build: Build, result: dict, stats: dict, checked: list[int]):
    snap = build.snapshot
    with transaction.atomic():
        # One finalisation per project at a time: an eval and a train snapshot finishing
        # together must see each other for the leakage check.
        Project.objects.select_for_update().filter(pk=build.project.pk).first()
        if not DatasetSnapshot.objects.select_for_update().filter(
                pk=snap.pk, run_token=build.token, status=State.RUNNING).exists():
            raise Superseded()
        if build.auditor.on("leakage"):
            index = _map_index(build.tmp_index)
            build.leakage(index, exclude=tuple(checked))  # snapshots that became ready during the build
            if build.auditor.blocking:
                _cleanup(build)
                _fail(build, Failure.AUDIT, build.auditor.blocked_message(),
                      audit=build.auditor.report(result["rows"], result["token_counter"]), stats=stats)
                return
        os.replace(build.tmp_index, index_path(build.final))
        os.replace(build.tmp, build.final)
        _fsync_dir(build.final.parent)
        report = build.auditor.report(result["rows"], result["token_counter"])
        warnings = [c for c in report["checks"] if c["outcome"] == "warning"]
        message = f"{result['rows']:,} rows written"
        if warnings:
            message += "; audit warnings: " + ", ".join(f"{c['count']:,} × {c['title']}" for c in warnings)
        lifecycle.finish(snap, State.READY, message + ".", file=file_name_for(snap), sha256=result["sha256"],
                         row_count=result["rows"], size_bytes=build.final.stat().st_size, stats=stats, audit=report,
                         rows_done=result["records"])


# ====================================================================== create / retry


def _next_version(project: Project, kind: str) -> int:
    last = DatasetSnapshot.objects.filter(project=project, kind=kind).order_by("-version").values_list(
        "version", flat=True).first()
    return (last or 0) + 1


def create_snapshot(project: Project, user, data: dict, start: bool = True) -> DatasetSnapshot:
    """Validate the request, create the queued snapshot and send its build to a worker (on commit)."""
    return save_snapshot(project, user, clean_spec(project, data), start)


def save_snapshot(project: Project, user, spec: dict, start: bool = True) -> DatasetSnapshot:
    """Create the queued snapshot from a spec returned by clean_spec."""
    with transaction.atomic():
        Project.objects.select_for_update().filter(pk=project.pk).first()  # versions are numbered one at a time
        snapshot = DatasetSnapshot.objects.create(
            project=project, kind=spec["kind"], version=_next_version(project, spec["kind"]), layout=spec["layout"],
            note=spec["note"], filters=spec["filters"], audit_config=spec["audit_config"], created_by=user,
        )
        if start:
            lifecycle.enqueue(snapshot)
    return snapshot


def preview(snapshot: DatasetSnapshot, n: int = 20) -> list[dict]:
    """The first n rows of a ready snapshot as {row, source, …, context, target, rejected}."""
    if snapshot.status != State.READY or not snapshot.file:
        return []
    index = read_index(snapshot)[:n]
    rows = []
    with open(media_path(snapshot.file.name), "rb") as fh:
        for i, line in enumerate(fh):
            if i >= n:
                break
            item = {"row": i + 1, **display_row(snapshot.layout, json.loads(line))}
            if i < len(index):
                item.update(source=SOURCE_NAMES.get(int(index["source"][i]), "?"),
                            source_id=int(index["source_id"][i]), conversation_id=int(index["conversation"][i]),
                            prompt_tokens=int(index["prompt_tokens"][i]), target_tokens=int(index["target_tokens"][i]))
            rows.append(item)
    return rows
