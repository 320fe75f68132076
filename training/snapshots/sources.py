"""Reading source records into rows: the ``Source`` base (keyset chunks of ``values_list``
over id windows, a constant number of queries per chunk, fetched one chunk ahead by a thread
on PostgreSQL, planned as index nested loops) and the SFT / eval sources.

SFT      ``messages`` = the conversation up to the reviewed turn + the corrected assistant
         message (optionally also approved *reasonable* responses as they were).
eval     held-out cases: ``messages`` (the context) and the ``expected`` assistant message;
         rows are ``{"id": "<external id>@<context length>", "messages", "expected", "source":
         "correction:<id>" | "reasonable:<label id>", "tools"}`` (evaluation/suites.py reads them).

DPO pairs are in dpo_sources.py.
"""

from __future__ import annotations

import json
import queue
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import connection, connections, transaction
from django.db.models import BooleanField, Max
from django.db.models.expressions import RawSQL

from annotator.models import (
    Label,
    Status,
)

from .rows import Row, _loads, clean_message, response_output
from .selection import corrections_qs, reasonable_qs

if TYPE_CHECKING:
    from .build import Build


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
    if (
        connection.vendor != "postgresql"
        or connection.in_atomic_block
        or not getattr(settings, "DATASET_EXPORT_PREFETCH", True)
    ):
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
        """(chunk, look-ups) in keyset chunks over id windows:
        `pk > last AND pk <= last + window … LIMIT size`.

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
        qs = (
            self.queryset()
            .order_by("pk")
            .filter(pk__gt=lo_mark, pk__lte=hi_mark)
            .values_list(*self.columns())
        )
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
        for label_id, cat in (
            through.objects.filter(ids_in(_col(through, "label_id"), ids=label_ids))
            .values_list("label_id", "taxonomycategory_id")
            .order_by("label_id", "taxonomycategory_id")
        ):
            out.setdefault(label_id, []).append(cat)
        return out

    def live_labels(self, response_ids) -> dict[int, list[tuple[str, str]]]:
        out: dict[int, list] = {}
        for rid, verdict, status in (
            Label.objects.filter(
                ids_in(_col(Label, "response_id"), ids=response_ids),
                status__in=[Status.SUBMITTED, Status.APPROVED],
            )
            .exclude(verdict="")
            .values_list("response_id", "verdict", "status")
        ):
            out.setdefault(rid, []).append((verdict, status))
        return out


class LabelledSource(Source):
    """SFT/eval rows whose target is a correction (any verdict: the correction is the better answer)."""

    conversation_path = "label__response__conversation"
    fields = (
        "message",
        "label_id",
        "label__verdict",
        "label__response_id",
        "label__response__context_length",
        "label__response__model_version_id",
        "label__response__conversation_id",
        "label__response__conversation__external_id",
        "label__response__conversation__split",
    )
    name = "correction"

    def queryset(self):
        return corrections_qs(self.build.project.pk, self.f)

    def target(self, rec) -> dict:
        return clean_message({**_loads(rec[1]), "role": "assistant"})

    def lookups(self, chunk):
        return {
            "cats": self.label_categories([r[2] for r in chunk]),
            "live": self.live_labels([r[4] for r in chunk]),
        }

    def rows(self, chunk, aux):
        cats, live = aux["cats"], aux["live"]
        contexts = self.build.contexts
        out = []
        for rec in chunk:
            pk, _msg, label_id, verdict, response_id, length, mv, conv_id, ext, split = rec[:10]
            messages_text, tools_text = rec[-2:]
            out.append(
                Row(
                    source=self.name,
                    source_id=pk,
                    conversation_id=conv_id,
                    external_id=ext,
                    context_length=length,
                    split=split,
                    model_version_id=mv,
                    ctx=contexts.context(conv_id, length, messages_text),
                    toolset=contexts.tools(tools_text),
                    target=self.target(rec),
                    categories=cats.get(label_id, ()),
                    conflict=_label_conflict(verdict, live.get(response_id, [])),
                )
            )
        return out


class ReasonableSource(LabelledSource):
    """SFT/eval rows from approved "reasonable" responses without a correction: the response as it was."""

    conversation_path = "response__conversation"
    fields = (
        "response__message",
        "pk",
        "verdict",
        "response_id",
        "response__context_length",
        "response__model_version_id",
        "response__conversation_id",
        "response__conversation__external_id",
        "response__conversation__split",
        "response__raw_text",
    )
    name = "reasonable"

    def queryset(self):
        return reasonable_qs(self.build.project.pk, self.f)

    def target(self, rec) -> dict:
        return response_output(_loads(rec[1]), rec[10])
