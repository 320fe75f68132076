"""Streaming JSONL import of conversations and model responses.

One line = one conversation:

    {"external_id": "c-1", "messages": [...OpenAI chat...], "tools": [...], "metadata": {...},
     "split": "train", "priority": 0,
     "responses": [{"model": "agent-v3", "context_length": 3,
                    "message": {"role": "assistant", "content": ..., "tool_calls": [...]}}
                   | {"model": "agent-v3", "raw": "<think>..</think><tool_call>{...}</tool_call>"}]}

Messages are read as OpenAI sends them today (content parts, developer role, legacy
function_call; toolcalls.openai_format) and what was read how is noted in
metadata["format_notes"]. A line may also be a chat-completion log record ({"request", "response"})
or a BFCL test record (toolcalls.bfcl, gold from the job's possible-answers file): see parse_line.

Without "responses", a conversation whose last message is from the assistant treats that
last turn as the model's response to what came before (model from "model" or
metadata.model). Lines are validated one by one; good lines are written in batches, each
batch in one transaction together with the job's progress and the bad lines' issues, so a
killed worker resumes at the last committed byte and nothing is half-written.
"""

import json
import logging
from dataclasses import dataclass, field

import orjson
from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import F

from config.db import TableStats
from config.text import counted
from jobs import lifecycle
from toolcalls import bfcl
from toolcalls.jsonl import iter_lines
from toolcalls.openai_format import (
    is_chat_log,
    line_from_chat_log,
    normalise_assistant_message,
    normalise_messages,
    remap_field,
)
from toolcalls.parse import parse_output, tool_names_of
from toolcalls.validate import (
    MAX_JSON_DEPTH,
    FieldError,
    json_problem,
    validate_assistant_message,
    validate_messages,
    validate_tool_specs,
)

from .models import Conversation, ImportIssue, ImportJob, ModelResponse, Project, Split, content_hash
from .store import ModelVersionIds, write_parsed

log = logging.getLogger(__name__)
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
    message, notes, message_errors = normalise_assistant_message(message, f"{where}.message")
    errors.extend(message_errors)
    if raw is None and message is None:
        errors.append(FieldError(where, 'needs "message" (OpenAI assistant message) or "raw" (model text)'))
    if raw is not None and not isinstance(raw, str):
        errors.append(FieldError(f"{where}.raw", "must be a string"))
    if message is not None and not message_errors:
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
        "notes": notes,
    }, []


def parse_line(
    data, project_tools: list, default_split: str, *, dialect: str = "auto", answers: dict | None = None
) -> tuple[ParsedLine | None, list[FieldError]]:
    """Validate one decoded JSONL record; return the parsed line or every error found.

    The record is a conversation line, a chat-completion log record (toolcalls.openai_format), or
    a BFCL test record (toolcalls.bfcl; `answers` from bfcl.read_answers). Dialect "auto" tells
    them apart per line, "openai" reads no BFCL, "bfcl" reads only BFCL. Errors name the fields of
    the record as given (`request.messages[2].content`, `function[0].parameters…`)."""
    field_map: list = []
    errors: list[FieldError] = []
    if dialect == "bfcl" or (dialect == "auto" and bfcl.is_bfcl_record(data)):
        data, errors, field_map = bfcl.conversation_line(data, answers)
    elif is_chat_log(data):
        data, errors, field_map = line_from_chat_log(data)
    if not errors:
        parsed, errors = _parse_conversation(data, project_tools, default_split)
        if parsed is not None:
            return parsed, []
    return None, [FieldError(remap_field(e.field, field_map), e.message) for e in errors]


def _parse_conversation(data, project_tools: list, default_split: str) -> tuple[ParsedLine | None, list]:
    if not isinstance(data, dict):
        return None, [FieldError("", "each line must be a JSON object")]
    errors: list[FieldError] = []
    tools = data.get("tools", project_tools)
    tool_errors = validate_tool_specs(tools)
    errors.extend(tool_errors)
    messages, notes, message_errors = normalise_messages(data.get("messages"))
    if "messages" not in data:
        hint = " (this looks like a BFCL record: choose the BFCL format)" if bfcl.is_bfcl_record(data) else ""
        errors.append(FieldError("messages", "is required" + hint))
    elif message_errors:
        errors.extend(message_errors)
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
    for r in responses:
        notes += r.pop("notes")
    if notes:
        known = metadata.get("format_notes")
        known = known if isinstance(known, list) else []
        metadata = {**metadata, "format_notes": known + [n for n in notes if n not in known]}
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


def answers_error_text(errors) -> str:
    """The first problems of a possible-answers file, as one line for a form, the API or a job."""
    shown = "; ".join(
        f"line {line}: {err.field + ': ' if err.field else ''}{err.message}" for line, err in errors[:3]
    )
    return shown + (f" (and {len(errors) - 3:,} more)" if len(errors) > 3 else "")


def answers_upload_error(upload, dialect: str) -> str | None:
    """What is wrong with a possible-answers file handed in with an import (form, API, command), or None.
    The upload is read through once and rewound."""
    if dialect == "openai":
        return "possible answers are read only for BFCL lines: choose the BFCL or auto format"
    _, errors = bfcl.read_answers(upload, settings.IMPORT_MAX_LINE_BYTES)
    upload.seek(0)
    return answers_error_text(errors) if errors else None


def read_answers_file(fh, max_bytes: int) -> dict:
    """A BFCL possible-answers file -> {id: (line, ground_truth)}; ValueError names its bad lines."""
    answers, errors = bfcl.read_answers(fh, max_bytes)
    if errors:
        raise ValueError(f"the possible-answers file is not valid: {answers_error_text(errors)}")
    return answers


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
        self.model_ids = ModelVersionIds(self.project)  # kept across batches
        self.stats = TableStats(Conversation, ModelResponse)  # fresh row estimates as the tables grow

    def run(self) -> ImportJob:
        job = self.job
        batch: list[tuple[int, ParsedLine]] = []
        issues: list[ImportIssue] = []
        offset, lines = job.committed_offset, job.lines_read
        start_offset = offset
        answers = None
        if job.answers_file:
            with job.answers_file.open("rb") as fh:
                answers = read_answers_file(fh, self.max_bytes)
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
                        parsed, errors = parse_line(
                            record,
                            self.project.tools,
                            job.default_split,
                            dialect=job.dialect,
                            answers=answers,
                        )
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
        """The shared write path (store.write_parsed); conflicts become this job's issues."""
        result = write_parsed(self.project, batch, self.model_ids)
        conflicts = [self._issue(line_no, err) for line_no, err in result.conflicts]
        return result.created, result.responses, result.duplicates, conflicts


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
    except DatabaseError:
        raise  # the database went away: the task's retry or a redelivery resumes at the last batch
    except Exception as exc:  # noqa: BLE001 - a fault of ours must end the job, not leave it "running"
        log.exception("import %s stopped", job_id)
        job.refresh_from_db()
        lifecycle.finish(
            job,
            ImportJob.State.FAILED,
            f"The import stopped on an unexpected error after line {job.lines_read:,} "
            f"({type(exc).__name__}: {str(exc)[:200]}); the lines before it were kept.",
        )
        return job
    job.refresh_from_db()
    if job.lines_read == 0:
        lifecycle.finish(job, ImportJob.State.FAILED, "The file is empty: no lines to import.")
    elif job.conversations_created == 0 and job.duplicates == 0 and job.responses_created == 0:
        lifecycle.finish(
            job,
            ImportJob.State.FAILED,
            "No valid lines: the only line was rejected."
            if job.error_count == 1
            else f"No valid lines: all {job.error_count:,} lines were rejected.",
        )
    else:
        parts = [
            f"{counted(job.conversations_created, 'conversation')} and "
            f"{counted(job.responses_created, 'response')} imported"
        ]
        if job.duplicates:
            parts.append(f"{job.duplicates:,} already present")
        if job.error_count:
            parts.append(f"{counted(job.error_count, 'line')} rejected")
        from .assignment import sync_tasks

        made = sync_tasks(job.project)
        if made["label"] or made["compare"]:
            parts.append(
                f"{counted(made['label'], 'labelling task')} and "
                f"{counted(made['compare'], 'comparison task')} queued"
            )
        lifecycle.finish(job, ImportJob.State.DONE, "; ".join(parts) + ".")
    return job
