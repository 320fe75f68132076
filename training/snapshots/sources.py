"""Reading source records into rows: the ``Source`` base (keyset chunks of ``values_list``
over id windows, a constant number of queries per chunk, fetched one chunk ahead by a thread
on PostgreSQL, planned as index nested loops) and the SFT / eval sources.

SFT      ``messages`` = the conversation up to the reviewed turn + the corrected assistant
         message (optionally also approved *reasonable* responses as they were).
eval     held-out cases: ``messages`` (the context) and the ``expected`` assistant message;
         rows are ``{"id": "<external id>@<context length>", "messages", "expected", "source":
         "correction:<id>" | "reasonable:<label id>", "tools"}`` (evaluation/suites.py reads them).

One row per item (resolve.py): each chunk looks up the admitted labels of its items
(``label_votes``), their gold decisions (``label_gold``) and, for items with more than one
label, the candidates' texts (``vote_details``); the item's owner record writes its row.

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
from django.db.models import BooleanField, Max, Value
from django.db.models.expressions import RawSQL

from annotator.models import (
    Adjudication,
    Correction,
    Label,
    ModelResponse,
    Task,
)

from ..models import DatasetSnapshot
from .resolve import MAJORITY, REASONABLE, Gold, LabelVote, Outcome, resolve_context, resolve_response
from .rows import Row, _loads, clean_message, response_output
from .selection import as_flag, corrections_qs, label_work_q, reasonable_qs, statuses

if TYPE_CHECKING:
    from .build import Build


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

    # one row per item: the votes of a chunk's items ----------------------------------
    def label_votes(self, ids, by_context: bool = False) -> dict:
        """The admitted labels of the items with these ids (see resolve.py): response id ->
        [LabelVote], or with `by_context` (eval) the labels of these conversations' responses,
        (conversation id, context length) -> [LabelVote]. `selected`: passes the work-level filters."""
        f = self.f
        column = _col(ModelResponse, "conversation_id") if by_context else _col(Label, "response_id")
        qs = Label.objects.filter(ids_in(column, ids=ids), status__in=statuses(f)).exclude(verdict="")
        if by_context and f["model_versions"]:
            qs = qs.filter(model_version_id__in=f["model_versions"])
        work = label_work_q(self.build.project.pk, f)
        qs = qs.annotate(selected=as_flag(work) if work else Value(True, output_field=BooleanField()))
        fields = [
            "pk",
            "verdict",
            "annotator_id",
            "correction__id",
            "selected",
            "response_id",
            "model_version_id",
        ]
        out: dict = {}
        if by_context:
            for *vote, conv, length in qs.order_by().values_list(
                *fields, "response__conversation_id", "response__context_length"
            ):
                out.setdefault((conv, length), []).append(LabelVote(*vote))
        else:
            for vote in qs.order_by().values_list(*fields):
                out.setdefault(vote[5], []).append(LabelVote(*vote))
        return out

    def label_gold(self, response_ids) -> dict[int, Gold]:
        """The leads' gold verdicts on these responses' label tasks."""
        if not self.build.has_gold or not response_ids:
            return {}
        rows = list(
            Adjudication.objects.filter(
                ids_in(_col(Task, "response_id"), ids=response_ids), task__kind=Task.Kind.LABEL
            )
            .exclude(verdict="")
            .values_list("pk", "task__response_id", "verdict", "lead_id")
        )
        cats = self.gold_categories([r[0] for r in rows])
        return {rid: Gold(verdict, lead, cats.get(pk, ())) for pk, rid, verdict, lead in rows}

    def gold_categories(self, adjudication_ids) -> dict[int, tuple]:
        if not adjudication_ids:
            return {}
        out: dict[int, list] = {}
        for adj, cat in (
            Adjudication.categories.through.objects.filter(adjudication_id__in=adjudication_ids)
            .values_list("adjudication_id", "taxonomycategory_id")
            .order_by("adjudication_id", "taxonomycategory_id")
        ):
            out.setdefault(adj, []).append(cat)
        return {k: tuple(v) for k, v in out.items()}

    def vote_details(self, votes: dict, outputs: bool) -> dict:
        """Gold decisions, label categories and, for the items with more than one label (or a
        gold decision), their corrections' (message, edited at) and (`outputs`) their responses."""
        gold = {}
        if self.build.has_gold:
            gold = self.label_gold({v.response_id for vs in votes.values() for v in vs})
        contested = [
            vs for vs in votes.values() if len(vs) > 1 or (gold and any(v.response_id in gold for v in vs))
        ]
        texts, outs = {}, {}
        cids = {v.correction_id for vs in contested for v in vs if v.correction_id}
        if cids:
            texts = {
                pk: (msg, at)
                for pk, msg, at in Correction.objects.filter(
                    ids_in(_col(Correction, "id"), ids=cids)
                ).values_list("pk", "message", "updated_at")
            }
        if outputs and contested:
            rids = {v.response_id for vs in contested for v in vs}
            outs = {
                pk: response_output(msg, raw)
                for pk, msg, raw in ModelResponse.objects.filter(
                    ids_in(_col(ModelResponse, "id"), ids=rids)
                ).values_list("pk", "message", "raw_text")
            }
        cats = self.label_categories({v.label_id for vs in votes.values() for v in vs})
        return {"votes": votes, "gold": gold, "texts": texts, "outputs": outs, "cats": cats}


Kind = DatasetSnapshot.Kind


class LabelledSource(Source):
    """SFT/eval rows whose target is a correction (any verdict: the correction is the better answer).

    Together with ReasonableSource: one row per item (a response; a context for eval), written
    by the item's owner, the first of its selected records in stream order (corrections by id,
    then reasonable labels by id).
    """

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

    @property
    def by_context(self) -> bool:
        return self.build.kind == Kind.EVAL

    def lookups(self, chunk):
        ids = {r[7] for r in chunk} if self.by_context else {r[4] for r in chunk}
        return self.vote_details(
            self.label_votes(ids, self.by_context), bool(self.f.get("include_reasonable"))
        )

    def owner(self, votes: list[LabelVote]) -> tuple[str, int] | None:
        """(source name, record id) of the record that writes the item's row."""
        cids = [v.correction_id for v in votes if v.selected and v.correction_id]
        if cids:
            return ("correction", min(cids))
        if self.f.get("include_reasonable"):
            lids = [v.label_id for v in votes if v.selected and v.verdict == REASONABLE]
            if lids:
                return ("reasonable", min(lids))
        return None

    def rows(self, chunk, aux):
        votes, gold, cats = aux["votes"], aux["gold"], aux["cats"]
        contexts, build, name = self.build.contexts, self.build, self.name
        by_context = self.by_context
        allow_reasonable = bool(self.f.get("include_reasonable"))
        out = []
        for rec in chunk:
            pk, _msg, label_id, _verdict, response_id, length, mv, conv_id, ext, split = rec[:10]
            item = votes.get((conv_id, length) if by_context else response_id) or ()
            if (not item or (len(item) == 1 and item[0].label_id == label_id)) and response_id not in gold:
                # one label, the record's own: the record is the item
                build.resolved.row(1, MAJORITY)
                out.append(
                    Row(
                        source=name,
                        source_id=pk,
                        conversation_id=conv_id,
                        external_id=ext,
                        context_length=length,
                        split=split,
                        model_version_id=mv,
                        ctx=contexts.context(conv_id, length, rec[-2]),
                        toolset=contexts.tools(rec[-1]),
                        target=self.target(rec),
                        categories=cats.get(label_id, ()),
                    )
                )
                continue
            if self.owner(item) != (name, pk):
                continue  # another record of this item writes its row
            outcome = self.resolve(item, aux, allow_reasonable)
            if not outcome.source:
                build.resolved.left_out(
                    outcome.how,
                    outcome.detail,
                    source=name,
                    source_id=pk,
                    conversation_id=conv_id,
                    external_id=ext,
                )
                continue
            build.resolved.row(outcome.votes, outcome.how)
            g = gold.get(outcome.response_id)
            out.append(
                Row(
                    source=outcome.source,
                    source_id=outcome.source_id,
                    conversation_id=conv_id,
                    external_id=ext,
                    context_length=length,
                    split=split,
                    model_version_id=next(
                        v.model_version_id for v in item if v.response_id == outcome.response_id
                    ),
                    ctx=contexts.context(conv_id, length, rec[-2]),
                    toolset=contexts.tools(rec[-1]),
                    target=self.outcome_target(outcome, aux),
                    categories=g.categories if g else cats.get(outcome.label_id, ()),
                )
            )
        return out

    def resolve(self, item: list[LabelVote], aux: dict, allow_reasonable: bool) -> Outcome:
        gold, texts = aux["gold"], aux["texts"]
        if not self.by_context:
            return resolve_response(item, gold.get(item[0].response_id), texts, allow_reasonable)
        by_response: dict[int, list] = {}
        for v in item:
            by_response.setdefault(v.response_id, []).append(v)
        return resolve_context(
            by_response, gold, texts, allow_reasonable, lambda o: self.outcome_target(o, aux)
        )

    @staticmethod
    def outcome_target(outcome: Outcome, aux: dict) -> dict:
        if outcome.source == "correction":
            return clean_message({**aux["texts"][outcome.source_id][0], "role": "assistant"})
        return aux["outputs"][outcome.response_id]


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
