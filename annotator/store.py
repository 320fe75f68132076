"""The one write path for parsed conversations and their model responses.

The file import (importers.Importer) and the ingestion API (ingest.py) both call `write_parsed`
inside their own transaction, so one set of rules holds for both:

- a conversation is known by (project, external_id). A record whose external id is already known with
  the same content hash (messages + tools) is a duplicate; with different content it is a conflict, an
  error on `external_id`, never an overwrite. A second record with the same external id in one batch
  counts the same way against the first;
- a duplicate's responses are still added (a new model's answer to a known conversation);
- a response is stored once per (conversation, model version, context length, response hash);
- writers into one project take turns (on PostgreSQL an advisory lock held to the end of the
  transaction), so two imports, or an import and an ingestion, sending one external id at the same
  time cannot both insert it: the unique constraint would otherwise fail the later one's whole batch.
"""

from dataclasses import dataclass, field

from django.db import IntegrityError, connection, transaction
from simple_history.utils import bulk_create_with_history

from toolcalls.validate import FieldError

from .bulk import bulk_insert
from .models import Conversation, ModelResponse, ModelVersion, Project

# first key of pg_advisory_xact_lock(int, int): "writes into project <second key>"
PROJECT_WRITE_LOCK = 0x42435721


@dataclass
class Outcome:
    """What became of one record of a batch."""

    status: str  # created | duplicate | conflict
    conversation_id: int | None = None
    responses_created: int = 0


@dataclass
class WriteResult:
    created: int = 0
    responses: int = 0
    duplicates: int = 0
    conflicts: list[tuple[int, FieldError]] = field(default_factory=list)  # (key, error)
    outcomes: dict[int, Outcome] = field(default_factory=dict)  # key -> outcome
    new_responses: list[ModelResponse] = field(default_factory=list)  # written now, ids ascending
    priorities: dict[int, int] = field(default_factory=dict)  # conversation id -> priority (kept ones)
    existed: set[int] = field(default_factory=set)  # ids of the batch's conversations stored before it


class ModelVersionIds:
    """A project's model version ids by name; a name seen for the first time is created (origin
    "imported"). One query per batch of names not seen before, whatever the batch size."""

    def __init__(self, project: Project):
        self.project = project
        self._ids: dict[str, int] = {}

    def load(self, names) -> None:
        missing = set(names) - self._ids.keys()
        if not missing:
            return
        self._ids.update(
            ModelVersion.objects.filter(project=self.project, name__in=missing).values_list("name", "pk")
        )
        new = sorted(missing - self._ids.keys())
        if not new:
            return
        try:
            with transaction.atomic():  # a savepoint: another writer may add one of these names meanwhile
                bulk_create_with_history(
                    [ModelVersion(project=self.project, name=name) for name in new], ModelVersion
                )
        except IntegrityError:
            for name in new:
                ModelVersion.objects.get_or_create(project=self.project, name=name)
        self._ids.update(
            ModelVersion.objects.filter(project=self.project, name__in=new).values_list("name", "pk")
        )

    def __getitem__(self, name: str) -> int:
        if name not in self._ids:
            self.load([name])
        return self._ids[name]


def lock_project_writes(project: Project) -> None:
    """Wait for any other import or ingestion writing into this project, until this transaction ends."""
    if not connection.in_atomic_block:
        raise RuntimeError("conversations are written inside a transaction")
    if connection.vendor == "postgresql":  # SQLite runs one writer at a time anyway
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [PROJECT_WRITE_LOCK, project.pk % 2**31])


def write_parsed(project: Project, batch: list, model_ids: ModelVersionIds) -> WriteResult:
    """Store a batch of (key, ParsedLine) — key: the file's line number, or the record's index in a
    request — inside the caller's transaction. Returns the counts, each key's outcome and the conflicts."""
    result = WriteResult()
    if not batch:
        return result
    lock_project_writes(project)
    known = {
        external_id: (pk, digest, priority)
        for external_id, pk, digest, priority in Conversation.objects.filter(
            project=project, external_id__in={p.external_id for _, p in batch}
        ).values_list("external_id", "id", "content_hash", "priority")
    }
    hashes = {external_id: digest for external_id, (_, digest, _) in known.items()}
    new_rows, keep = [], []
    for key, p in batch:
        digest = hashes.get(p.external_id)
        if digest is None:
            hashes[p.external_id] = p.content_hash
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
            result.outcomes[key] = Outcome("created")
        elif digest != p.content_hash:
            error = FieldError(
                "external_id", f"{p.external_id!r} already exists with different messages or tools"
            )
            result.conflicts.append((key, error))
            result.outcomes[key] = Outcome("conflict")
            continue
        else:
            result.duplicates += 1
            result.outcomes[key] = Outcome("duplicate")
        keep.append((key, p))
    conversation_ids = {external_id: pk for external_id, (pk, _, _) in known.items()}
    result.priorities = {pk: priority for pk, _, priority in known.values()}
    result.existed = set(result.priorities)
    for conv in bulk_insert(new_rows):
        conversation_ids[conv.external_id] = conv.pk
        result.priorities[conv.pk] = conv.priority
    result.created = len(new_rows)
    for key, p in keep:
        result.outcomes[key].conversation_id = conversation_ids[p.external_id]
    _write_responses(keep, conversation_ids, model_ids, result)
    return result


def _write_responses(keep, conversation_ids: dict, model_ids: ModelVersionIds, result: WriteResult):
    model_ids.load({r["model"] for _, p in keep for r in p.responses})
    wanted = []
    for key, p in keep:
        for r in p.responses:
            wanted.append(
                (
                    key,
                    ModelResponse(
                        conversation_id=conversation_ids[p.external_id],
                        model_version_id=model_ids[r["model"]],
                        context_length=r["context_length"],
                        raw_text=r["raw_text"],
                        message=r["message"],
                        generation_settings=r["settings"],
                        response_hash=r["hash"],
                    ),
                )
            )
    if not wanted:
        return
    # Only conversations that existed before this batch can hold responses already.
    asked = {w.conversation_id for _, w in wanted} & result.existed
    have = (
        set(
            ModelResponse.objects.filter(conversation_id__in=asked).values_list(
                "conversation_id", "model_version_id", "context_length", "response_hash"
            )
        )
        if asked
        else set()
    )
    fresh = []
    for key, w in wanted:
        identity = (w.conversation_id, w.model_version_id, w.context_length, w.response_hash)
        if identity not in have:
            have.add(identity)
            fresh.append(w)
            result.outcomes[key].responses_created += 1
    bulk_insert(fresh)
    result.responses = len(fresh)
    result.new_responses = fresh
