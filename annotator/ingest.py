"""Ingestion: a running agent sends its conversations in batches (POST /api/projects/<slug>/ingest/,
see ingest_api.py) instead of a JSONL file.

A batch holds the records a JSONL import line holds. Each record goes through the file import's own
checks — `importers.decode_line` on the record's compact JSON (size limit, nesting, NUL characters),
then `importers.parse_line` in the OpenAI dialect — so it gets the same messages. The good ones go
through the one write path (`store.write_parsed`: idempotent by external id or content hash, a changed
conversation under a known id is a conflict). One request is one transaction: conversations,
responses, their annotation tasks and the project's ingestion history commit together or not at all.

Annotation tasks. The file import ends with `assignment.sync_tasks(project)`, which walks the whole
project (every response without a label task, every context with two or more responses, every task
without its slots): its cost grows with the project, not with the batch (benchmarks/ingest_bench.py
measures it), which a steady stream of small batches cannot afford. Ingestion builds the tasks of its
own new responses only, by the same rules (`assignment.queue_responses`, beside sync_tasks: a label task
each, compare tasks by the one pairing rule, `overlap` slots per task in the project's order).
`sync_tasks` run afterwards finds nothing left to add (tests/test_ingest.py checks it).

History. A project's ingestions of one UTC day are one ImportJob without a file, "API ingestion
<date> (UTC)": its counters add up every request's, and issue "line" N is the day's N-th record, so the
import pages and the CSV report show what came in and what was refused.
"""

import orjson
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from toolcalls.validate import FieldError

from .assignment import queue_responses
from .importers import decode_line, parse_line
from .models import ImportIssue, ImportJob, Project, Split
from .store import ModelVersionIds, WriteResult, lock_project_writes, write_parsed

# A running agent speaks OpenAI chat: conversation lines and chat-completion log records. BFCL test
# records need their possible-answers file: they come in as file imports.
DIALECT = ImportJob.Dialect.OPENAI
MAX_ERRORS_PER_RECORD = 50  # a record with more gets the first 50 and a count of the rest
HISTORY_NAME = "API ingestion {day} (UTC)"
HISTORY_MESSAGE = (
    "Records sent to POST /api/projects/{slug}/ingest/ on {day} (UTC). Line N of the rejected lines is "
    "the day's N-th record, in order of arrival."
)


def check_records(records: list, project: Project, default_split: str):
    """Each record through the file import's checks: ([(index, ParsedLine)], {index: [FieldError]})."""
    max_bytes = settings.IMPORT_MAX_LINE_BYTES
    good, rejected = [], {}
    for index, record in enumerate(records):
        try:
            raw = orjson.dumps(record)
        except (orjson.JSONEncodeError, TypeError) as exc:
            rejected[index] = [FieldError("", f"cannot be written as JSON: {exc}")]
            continue
        decoded, error = decode_line(raw, max_bytes)
        if error:
            rejected[index] = [error]
            continue
        parsed, errors = parse_line(decoded, project.tools, default_split, dialect=DIALECT)
        if errors:
            rejected[index] = errors
        else:
            good.append((index, parsed))
    return good, rejected


def ingest(project: Project, records: list, user=None, default_split: str = Split.TRAIN, body_bytes: int = 0):
    """Check and store one batch; returns the per-record results and the totals (see ingest_api)."""
    good, rejected = check_records(records, project, default_split)
    external_ids = {index: parsed.external_id for index, parsed in good}
    with transaction.atomic():
        lock_project_writes(project)  # also orders the day's history row among concurrent requests
        written = write_parsed(project, good, ModelVersionIds(project))
        for index, error in written.conflicts:
            rejected[index] = [error]
        queued = queue_new_responses(project, written)
        job = record_history(project, user, len(records), body_bytes, default_split, written, rejected)
    results = []
    for index in range(len(records)):
        result = {"index": index, "status": "rejected", "external_id": external_ids.get(index)}
        if index in rejected:
            result.update(conversation_id=None, responses_created=0, errors=shown_errors(rejected[index]))
        else:
            outcome = written.outcomes[index]
            result.update(
                status=outcome.status,
                conversation_id=outcome.conversation_id,
                responses_created=outcome.responses_created,
                errors=[],
            )
        results.append(result)
    return {
        "results": results,
        "created": written.created,
        "duplicates": written.duplicates,
        "rejected": len(rejected),
        "responses_created": written.responses,
        "tasks_created": {"label": queued["label"], "compare": queued["compare"]},
        "import_id": job.pk,
    }


def shown_errors(errors: list[FieldError]) -> list[dict]:
    shown = [e.as_dict() for e in errors[:MAX_ERRORS_PER_RECORD]]
    if len(errors) > MAX_ERRORS_PER_RECORD:
        shown.append({"field": "", "message": f"… and {len(errors) - MAX_ERRORS_PER_RECORD} more"})
    return shown


def queue_new_responses(project: Project, written: WriteResult) -> dict:
    """Label and compare tasks, with their slots, for the responses `written` just stored: the queue's own
    rule for new responses (assignment.queue_responses)."""
    return queue_responses(project, written.new_responses, written.existed, written.priorities)


def record_history(
    project, user, count: int, body_bytes: int, split: str, written, rejected: dict
) -> ImportJob:
    """Add this request to the project's ingestion history of the day (inside the request's transaction)."""
    now = timezone.now()
    day = now.date().isoformat()
    name = HISTORY_NAME.format(day=day)
    job = (
        ImportJob.objects.select_for_update()
        .filter(project=project, file="", original_name=name)
        .only("pk", "lines_read", "error_count")
        .first()
    )
    if job is None:
        job = ImportJob.objects.create(
            project=project,
            created_by=user,
            file="",
            original_name=name,
            default_split=split,
            dialect=DIALECT,
            status=ImportJob.State.DONE,
            message=HISTORY_MESSAGE.format(slug=project.slug, day=day),
            started_at=now,
            finished_at=now,
        )
    issues = [
        ImportIssue(job_id=job.pk, line=job.lines_read + index + 1, field=e.field[:300], message=e.message)
        for index in sorted(rejected)
        for e in rejected[index][:MAX_ERRORS_PER_RECORD]
    ]
    room = max(0, settings.IMPORT_MAX_STORED_ERRORS - job.error_count)
    if issues and room:
        ImportIssue.objects.bulk_create(issues[:room])
    ImportJob.objects.filter(pk=job.pk).update(
        lines_read=F("lines_read") + count,
        size_bytes=F("size_bytes") + body_bytes,
        committed_offset=F("committed_offset") + body_bytes,
        conversations_created=F("conversations_created") + written.created,
        responses_created=F("responses_created") + written.responses,
        duplicates=F("duplicates") + written.duplicates,
        error_count=F("error_count") + len(rejected),
        finished_at=now,
    )
    return job
