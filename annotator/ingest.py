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
own new responses only, by the same rules: a label task each; compare tasks by
`assignment.context_pairs` (the one pairing rule); `overlap` slots per
task, ordered by the project's strategy. `sync_tasks` run afterwards finds nothing left to add
(tests/test_ingest.py checks it).

History. A project's ingestions of one UTC day are one ImportJob without a file, "API ingestion
<date> (UTC)": its counters add up every request's, and issue "line" N is the day's N-th record, so the
import pages and the CSV report show what came in and what was refused.
"""

from collections import defaultdict

import orjson
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from toolcalls.validate import FieldError

from .assignment import context_pairs, order_key_value
from .bulk import bulk_insert
from .importers import decode_line, parse_line
from .models import ImportIssue, ImportJob, ModelResponse, Project, Slot, Split, Task
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
    """Label and compare tasks, with their slots, for the responses `written` just stored (see the
    module's docstring).

    Pairs between older responses are left to `assignment.sync_tasks`, whose job they were; a pair with a
    new response in it cannot exist yet, so nothing here can collide with another writer. Responses of
    conversations created by this batch are all new: only known conversations are read back."""
    fresh = written.new_responses
    if not fresh:
        return {"label": 0, "compare": 0, "slots": 0}
    new = {r.pk for r in fresh}
    groups = defaultdict(list)  # (conversation, context length) -> [(response id, hash)]
    uncertainty = dict.fromkeys(new)
    known = {r.conversation_id for r in fresh} & written.existed
    if known:
        for pk, conversation_id, context_length, digest, score in ModelResponse.objects.filter(
            conversation_id__in=known
        ).values_list("pk", "conversation_id", "context_length", "response_hash", "uncertainty"):
            groups[(conversation_id, context_length)].append((pk, digest))
            uncertainty[pk] = score
    for r in fresh:
        if r.conversation_id not in known:
            groups[(r.conversation_id, r.context_length)].append((r.pk, r.response_hash))
    label, compare = [], []
    for (conversation_id, _), members in groups.items():
        members.sort()
        priority = written.priorities[conversation_id]
        label.extend(
            Task(project_id=project.pk, kind=Task.Kind.LABEL, response_id=pk, priority=priority)
            for pk, _ in members
            if pk in new
        )
        compare.extend(
            Task(
                project_id=project.pk,
                kind=Task.Kind.COMPARE,
                response_id=a,
                response_b_id=b,
                priority=priority,
            )
            for a, b in context_pairs(members)
            if a in new or b in new
        )
    tasks = bulk_insert(label + compare)
    overlap, strategy = project.overlap, project.setting("strategy")
    slots = [
        Slot(
            project_id=project.pk,
            task_id=task.pk,
            index=index,
            priority=task.priority,
            progress=0,
            order_key=order_key_value(strategy, task.pk, uncertainty[task.response_id]),
        )
        for task in tasks
        for index in range(overlap)
    ]
    bulk_insert(slots)
    return {"label": len(label), "compare": len(compare), "slots": len(slots)}


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
