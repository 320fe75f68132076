"""Streaming JSONL import of conversations and model responses.

One line = one conversation:

    {"external_id": "c-1", "messages": [...OpenAI chat...], "tools": [...], "metadata": {...},
     "split": "train", "priority": 0,
     "responses": [{"model": "agent-v3", "context_length": 3,
                    "message": {"role": "assistant", "content": ..., "tool_calls": [...]}}
                   | {"model": "agent-v3", "raw": "<think>..</think><tool_call>{...}</tool_call>"}]}

Without "responses", a conversation whose last message is from the assistant treats that
last turn as the model's response to what came before (model from "model" or
metadata.model). Lines are validated one by one; good lines are written in batches, each
batch in one transaction together with the job's progress and the bad lines' issues, so a
killed worker resumes at the last committed byte and nothing is half-written.
"""

import json
from dataclasses import dataclass, field

import orjson
from django.conf import settings
from django.db import transaction
from django.db.models import F

from config.db import TableStats
from jobs import lifecycle
from toolcalls.parse import parse_output, tool_names_of
from toolcalls.validate import (
    MAX_JSON_DEPTH,
    FieldError,
    json_problem,
    validate_assistant_message,
    validate_messages,
    validate_tool_specs,
)

from .bulk import bulk_insert
from .models import Conversation, ImportIssue, ImportJob, ModelResponse, Project, Split, content_hash

SPLITS = set(Split.values)
UNKNOWN_MODEL = "unknown"
MODEL_NAME_MAX = 200  # ModelVersion.name
PRIORITY_RANGE = (-(2**31), 2**31 - 1)  # Conversation.priority, an IntegerField


@dataclass
class ParsedLine:
    external_id: str
    messages: list
    tools: list
    metadata: dict
    split: str
    priority: int
    content_hash: str
    responses: list = field(default_factory=list)  # dicts: model, context_length, raw_text, message, settings


def assistant_message_from_raw(raw: str, tools: list) -> dict:
    """A Qwen-style raw output parsed per metrics.md into an OpenAI assistant message."""
    parsed = parse_output(raw, tool_names_of(tools) if tools else None)
    message = {"role": "assistant", "content": parsed.reply_text or None}
    if parsed.calls:
        message["tool_calls"] = [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)},
            }
            for i, c in enumerate(parsed.calls)
        ]
    if parsed.reasoning:
        message["reasoning"] = parsed.reasoning
    if parsed.malformed:
        message["malformed"] = parsed.malformed_reasons
    return message


def _parse_response(item, i: int, messages: list, tools: list, default_model: str):
    where = f"responses[{i}]"
    if not isinstance(item, dict):
        return None, [FieldError(where, "must be an object")]
    errors = []
    model = item.get("model", default_model)
    if not isinstance(model, str) or not model.strip():
        errors.append(FieldError(f"{where}.model", "must be a non-empty string"))
    elif len(model.strip()) > MODEL_NAME_MAX:
        errors.append(FieldError(f"{where}.model", f"must be at most {MODEL_NAME_MAX} characters"))
    context_length = item.get("context_length", len(messages))
    if (
        not isinstance(context_length, int)
        or isinstance(context_length, bool)
        or not 1 <= context_length <= len(messages)
    ):
        errors.append(FieldError(f"{where}.context_length", f"must be an integer from 1 to {len(messages)}"))
    raw, message = item.get("raw"), item.get("message")
    if raw is None and message is None:
        errors.append(FieldError(where, 'needs "message" (OpenAI assistant message) or "raw" (model text)'))
    if raw is not None and not isinstance(raw, str):
        errors.append(FieldError(f"{where}.raw", "must be a string"))
    if message is not None:
        errors.extend(validate_assistant_message(message, tools, f"{where}.message"))
        if isinstance(message, dict) and message.get("role", "assistant") != "assistant":
            errors.append(FieldError(f"{where}.message.role", "must be assistant"))
    settings_ = item.get("generation", {})
    if not isinstance(settings_, dict):
        errors.append(FieldError(f"{where}.generation", "must be an object"))
    if errors:
        return None, errors
    if message is None:
        message = assistant_message_from_raw(raw, tools)
    else:
        message = {**message, "role": "assistant"}
    return {
        "model": model.strip(),
        "context_length": context_length,
        "raw_text": raw or "",
        "message": message,
        "settings": settings_,
        "hash": content_hash(raw if raw is not None else message),
    }, []


def parse_line(data, project_tools: list, default_split: str) -> tuple[ParsedLine | None, list[FieldError]]:
    """Validate one decoded JSONL record; return the parsed line or every error found."""
    if not isinstance(data, dict):
        return None, [FieldError("", "each line must be a JSON object")]
    errors: list[FieldError] = []
    tools = data.get("tools", project_tools)
    tool_errors = validate_tool_specs(tools)
    errors.extend(tool_errors)
    messages = data.get("messages")
    if "messages" not in data:
        errors.append(FieldError("messages", "is required"))
    else:
        errors.extend(validate_messages(messages, None if tool_errors else tools))
    metadata = data.get("metadata", {})
    if not isinstance(metadata, dict):
        errors.append(FieldError("metadata", "must be an object"))
    split = data.get("split", default_split)
    if not isinstance(split, str) or split not in SPLITS:
        errors.append(
            FieldError("split", f"must be one of {', '.join(sorted(SPLITS))} (got {_short_repr(split)})")
        )
    priority = data.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool):
        errors.append(FieldError("priority", "must be an integer"))
    elif not PRIORITY_RANGE[0] <= priority <= PRIORITY_RANGE[1]:
        errors.append(FieldError("priority", f"must be from {PRIORITY_RANGE[0]:,} to {PRIORITY_RANGE[1]:,}"))
    model = data.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        errors.append(FieldError("model", "must be a non-empty string"))
    external_id = data.get("external_id", data.get("id"))
    if external_id is not None and (not isinstance(external_id, (str, int)) or isinstance(external_id, bool)):
        errors.append(FieldError("external_id", "must be a string or an integer"))
    elif external_id is not None and not 0 < len(str(external_id)) <= 255:
        errors.append(FieldError("external_id", "must be 1 to 255 characters"))
    if errors:
        return None, errors

    meta_model = metadata.get("model")
    default_model = model or (
        meta_model if isinstance(meta_model, str) and meta_model.strip() else UNKNOWN_MODEL
    )
    raw_responses = data.get("responses")
    conv_messages = messages
    if raw_responses is None and messages[-1].get("role") == "assistant" and len(messages) > 1:
        raw_responses = [
            {"model": default_model, "message": messages[-1], "context_length": len(messages) - 1}
        ]
    if raw_responses is None:
        raw_responses = []
    if not isinstance(raw_responses, list):
        return None, [FieldError("responses", "must be a list")]
    responses = []
    for i, item in enumerate(raw_responses):
        parsed, errs = _parse_response(item, i, conv_messages, tools, default_model)
        errors.extend(errs)
        if parsed:
            responses.append(parsed)
    if errors:
        return None, errors
    digest = content_hash(conv_messages, tools)
    return ParsedLine(
        external_id=str(external_id) if external_id is not None else digest[:32],
        messages=conv_messages,
        tools=tools,
        metadata=metadata,
        split=split,
        priority=priority,
        content_hash=digest,
        responses=responses,
    ), []


def decode_line(raw: bytes, max_bytes: int):
    """bytes -> (record, None) or (None, FieldError)."""
    if len(raw) > max_bytes:
        return None, FieldError("", f"line is {len(raw):,} bytes, over the limit of {max_bytes:,}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, FieldError("", f"not valid UTF-8 (byte {exc.start}: {raw[exc.start : exc.start + 1]!r})")
    try:
        record = orjson.loads(text)
    except orjson.JSONDecodeError as exc:  # also: NaN/Infinity, integers over 64 bits, nesting over 1024
        return None, FieldError("", f"invalid JSON: {exc.msg} at column {exc.colno}")
    # Cheap tests first: only a line with many brackets or an escaped NUL is walked.
    if b"\\u0000" in raw or raw.count(b"{") + raw.count(b"[") > MAX_JSON_DEPTH:
        problem = json_problem(record)
        if problem:
            return None, problem
    return record, None


def _short_repr(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def iter_lines(fh, start_line: int, max_bytes: int):
    """Yield (line_no, bytes_consumed, raw_line_or_None_if_oversize) without loading an oversize line."""
    line_no = start_line
    while True:
        chunk = fh.readline(max_bytes + 1)
        if not chunk:
            return
        consumed = len(chunk)
        if len(chunk) > max_bytes and not chunk.endswith(b"\n"):
            # Oversize: skip to the end of this line in bounded pieces.
            while chunk and not chunk.endswith(b"\n"):
                chunk = fh.readline(1 << 20)
                consumed += len(chunk)
            line_no += 1
            yield line_no, consumed, None
            continue
        line_no += 1
        yield line_no, consumed, chunk.rstrip(b"\r\n")


class ImportCancelled(Exception):
    pass


class ImportConflict(Exception):
    """Another attempt owns the job now (it took over from a worker that looked dead)."""


class Importer:
    """Runs one ImportJob from its last committed offset to the end of the file."""

    def __init__(self, job: ImportJob, batch_size: int | None = None):
        self.job = job
        self.project: Project = job.project
        self.batch_size = batch_size or settings.IMPORT_BATCH_SIZE
        self.max_bytes = settings.IMPORT_MAX_LINE_BYTES
        self.max_issues = settings.IMPORT_MAX_STORED_ERRORS
        self._models: dict[str, int] = {}
        self.stats = TableStats(Conversation, ModelResponse)  # fresh row estimates as the tables grow

    def model_version_id(self, name: str) -> int:
        from .models import ModelVersion

        if name not in self._models:
            mv, _ = ModelVersion.objects.get_or_create(project=self.project, name=name)
            self._models[name] = mv.pk
        return self._models[name]

    def run(self) -> ImportJob:
        job = self.job
        batch: list[tuple[int, ParsedLine]] = []
        issues: list[ImportIssue] = []
        offset, lines = job.committed_offset, job.lines_read
        start_offset = offset
        with job.file.open("rb") as fh:
            fh.seek(offset)
            for line_no, consumed, raw in iter_lines(fh, lines, self.max_bytes):
                offset += consumed
                lines = line_no
                if raw is None:
                    issues.append(
                        self._issue(
                            line_no, FieldError("", f"line is over the limit of {self.max_bytes:,} bytes")
                        )
                    )
                elif raw.strip():
                    record, err = decode_line(raw, self.max_bytes)
                    if err:
                        issues.append(self._issue(line_no, err))
                    else:
                        parsed, errors = parse_line(record, self.project.tools, job.default_split)
                        if errors:
                            issues.extend(self._issue(line_no, e) for e in errors)
                        else:
                            batch.append((line_no, parsed))
                if len(batch) >= self.batch_size or len(issues) >= self.batch_size:
                    self._commit(batch, issues, start_offset, offset, lines)
                    start_offset, batch, issues = offset, [], []
        self._commit(batch, issues, start_offset, offset, lines)
        return self.job

    def _issue(self, line_no: int, err: FieldError) -> ImportIssue:
        return ImportIssue(job_id=self.job.pk, line=line_no, field=err.field[:300], message=err.message)

    def _commit(self, batch, issues, start_offset: int, end_offset: int, lines: int):
        with transaction.atomic():
            locked = (
                ImportJob.objects.select_for_update()
                .only("committed_offset", "error_count")
                .get(pk=self.job.pk)
            )
            if locked.committed_offset != start_offset:
                raise ImportConflict(f"job {self.job.pk} was advanced by another run")
            if not lifecycle.heartbeat(self.job):
                if self.job.cancel_requested:
                    raise ImportCancelled()
                raise ImportConflict(f"job {self.job.pk} is owned by another run")
            created, responses, duplicates, conflict_issues = self._write(batch)
            issues = issues + conflict_issues
            error_lines = len({i.line for i in issues})
            room = max(0, self.max_issues - locked.error_count)
            ImportIssue.objects.bulk_create(issues[:room])
            ImportJob.objects.filter(pk=self.job.pk).update(
                committed_offset=end_offset,
                lines_read=lines,
                conversations_created=F("conversations_created") + created,
                responses_created=F("responses_created") + responses,
                duplicates=F("duplicates") + duplicates,
                error_count=F("error_count") + error_lines,
            )
        self.stats.grew(created + responses)
        self.job.refresh_from_db()

    def _write(self, batch):
        if not batch:
            return 0, 0, 0, []
        project = self.project
        ids = [p.external_id for _, p in batch]
        existing = dict(
            Conversation.objects.filter(project=project, external_id__in=ids).values_list("external_id", "id")
        )
        existing_hash = (
            dict(
                Conversation.objects.filter(project=project, external_id__in=ids).values_list(
                    "external_id", "content_hash"
                )
            )
            if existing
            else {}
        )
        new_rows, seen, conflicts, duplicates = [], {}, [], 0
        keep: list[tuple[int, ParsedLine]] = []
        for line_no, p in batch:
            known_hash = existing_hash.get(p.external_id) or seen.get(p.external_id)
            if known_hash is not None:
                if known_hash != p.content_hash:
                    conflicts.append(
                        self._issue(
                            line_no,
                            FieldError(
                                "external_id",
                                f"{p.external_id!r} already exists with different messages or tools",
                            ),
                        )
                    )
                    continue
                duplicates += 1
            else:
                seen[p.external_id] = p.content_hash
                new_rows.append(
                    Conversation(
                        project=project,
                        external_id=p.external_id,
                        messages=p.messages,
                        tools=p.tools,
                        metadata=p.metadata,
                        content_hash=p.content_hash,
                        split=p.split,
                        priority=p.priority,
                    )
                )
            keep.append((line_no, p))
        for conv in bulk_insert(new_rows):
            existing[conv.external_id] = conv.pk
        created_responses = self._write_responses(keep, existing)
        return len(new_rows), created_responses, duplicates, conflicts

    def _write_responses(self, keep, conv_ids: dict) -> int:
        wanted = []
        for _, p in keep:
            for r in p.responses:
                wanted.append(
                    ModelResponse(
                        conversation_id=conv_ids[p.external_id],
                        model_version_id=self.model_version_id(r["model"]),
                        context_length=r["context_length"],
                        raw_text=r["raw_text"],
                        message=r["message"],
                        generation_settings=r["settings"],
                        response_hash=r["hash"],
                    )
                )
        if not wanted:
            return 0
        have = set(
            ModelResponse.objects.filter(conversation_id__in={w.conversation_id for w in wanted}).values_list(
                "conversation_id", "model_version_id", "context_length", "response_hash"
            )
        )
        fresh, keys = [], set()
        for w in wanted:
            key = (w.conversation_id, w.model_version_id, w.context_length, w.response_hash)
            if key not in have and key not in keys:
                keys.add(key)
                fresh.append(w)
        bulk_insert(fresh)
        return len(fresh)


def run_import(job_id: int) -> ImportJob:
    """Run (or resume) an import job. Safe to call twice: a finished job, or one another live worker
    owns, is left alone."""
    job = lifecycle.claim(ImportJob, job_id)
    if job is None:
        return ImportJob.objects.get(pk=job_id)
    try:
        with lifecycle.attempt(job):
            Importer(job).run()
    except ImportCancelled:
        lifecycle.finish(
            job, ImportJob.State.CANCELLED, "Cancelled; lines before the cancel point were kept."
        )
        return job
    except ImportConflict:
        return ImportJob.objects.get(pk=job_id)  # the other attempt owns the job now
    except (OSError, ValueError) as exc:
        lifecycle.finish(job, ImportJob.State.FAILED, f"Could not read the file: {exc}")
        return job
    job.refresh_from_db()
    if job.lines_read == 0:
        lifecycle.finish(job, ImportJob.State.FAILED, "The file is empty: no lines to import.")
    elif job.conversations_created == 0 and job.duplicates == 0 and job.responses_created == 0:
        lifecycle.finish(
            job, ImportJob.State.FAILED, f"No valid lines: all {job.error_count:,} lines were rejected."
        )
    else:
        parts = [
            f"{job.conversations_created:,} conversations and {job.responses_created:,} responses imported"
        ]
        if job.duplicates:
            parts.append(f"{job.duplicates:,} already present")
        if job.error_count:
            parts.append(f"{job.error_count:,} lines rejected")
        from .assignment import sync_tasks

        made = sync_tasks(job.project)
        if made["label"] or made["compare"]:
            parts.append(f"{made['label']:,} labelling and {made['compare']:,} comparison tasks queued")
        lifecycle.finish(job, ImportJob.State.DONE, "; ".join(parts) + ".")
    return job
