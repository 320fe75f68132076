"""The build: create the queued snapshot, then (on a worker) stream its rows into a file.

* ``create_snapshot`` — the queued row, the build sent to a worker (jobs.lifecycle: enqueue;
  "Build again" is jobs.lifecycle.resume).
* ``build_snapshot`` — the worker's job: claim the row (jobs.lifecycle), stream rows from the
  database through the sources (sources.py, dpo_sources.py), the audit (audit.py) and the
  layout (layouts.py) into a temp file beside the final one; fsync; end checks over the
  per-row index; then ``os.replace`` into place and mark the row ready in the same
  transaction as its stats.

Determinism: rows come in source-id order and are serialised the same way every time, so
the same spec over unchanged data gives the same bytes and the same sha256.

One row per item (resolve.py): work of several annotators on one item is merged into one row
(gold decision, else majority) or left out with a counted reason; ``Build.resolved`` counts it
for the stats and the audit report (``resolution``) and flags the conflicts it left out.

Fixes routed by taxonomy (routing.py): under ``filters.routing`` "taxonomy" an SFT snapshot takes
the corrections whose categories' fix route is SFT (or both), a DPO snapshot those routed to DPO;
``Build.router`` drops the others as the rows stream by and counts them, by reason and category,
for ``stats["routing"]``.

Speed (benchmarks/export_bench.py): each context is walked once; the cyclic GC is paused
during the stream (it costs more than the work with this many objects).
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import time
from collections import Counter

import numpy as np
from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction

from annotator.models import (
    Adjudication,
    ModelVersion,
    Project,
    TaxonomyCategory,
)
from config.text import counted
from jobs import lifecycle

from ..models import DatasetSnapshot
from . import audit as audit_mod
from .dpo_sources import SKIP_REASONS, CorrectionPairSource, OnlinePairSource, PreferenceSource
from .layouts import FORMATTERS
from .resolve import Tally
from .routing import Router
from .rows import _DUMPS, Contexts, Row, TokenCounter, _fast64, message_text, normalised
from .sources import LabelledSource, ReasonableSource, Source, prefetched
from .spec import clean_spec, describe_filters, filter_names
from .storage import (
    INDEX_DTYPE,
    SOURCE_CODES,
    SOURCE_NAMES,
    _fsync_dir,
    _map_index,
    _remove_temps,
    _temp_paths,
    file_name_for,
    index_path,
    media_path,
    read_index,
)

log = logging.getLogger(__name__)

Kind = DatasetSnapshot.Kind
State = DatasetSnapshot.State
Failure = DatasetSnapshot.Failure


TRAIN_KINDS = (Kind.SFT, Kind.DPO)


def chunk_size() -> int:
    """Source records per query (and per progress update)."""
    return getattr(settings, "DATASET_EXPORT_CHUNK_SIZE", None) or int(
        os.environ.get("DATASET_EXPORT_CHUNK_SIZE", 2000)
    )


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
        self.both_bad_pairs: set[int] = set()  # what the "both bad" rows taught (DPO), see once()
        self.resolved = Tally(self.auditor, "judged" if self.kind == Kind.DPO else "labelled")
        self.router = Router(self.project.pk, self.kind, self.filters)
        self.has_gold = Adjudication.objects.filter(task__project_id=self.project.pk).exists()
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
        self.tally = {
            "by_source": Counter(),
            "by_split": Counter(),
            "by_model_version": Counter(),
            "by_category": Counter(),
            "uncategorised": 0,
            "with_tool_calls": 0,
            "rejected_with_tool_calls": 0,
        }
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
                        rows = self.once(self.router.keep(source.rows(chunk, aux)))
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
        self.auditor.resolution = self.resolved.stats(done)
        return {
            "rows": self.n,
            "records": done,
            "sha256": self.sha.hexdigest(),
            "token_counter": self.counter.label,
            **self.tally,
        }

    def once(self, rows: list[Row]) -> list[Row]:
        """DPO: a correction row is not written when a "both bad" row (the preferences come first) has
        already paired the same answer with the same correction in the same context: two annotators who
        each corrected both answers of a pair they found both bad taught the pair twice. Only the bytes
        are compared, so nothing that no other row teaches is dropped."""
        if self.kind != Kind.DPO or not rows:
            return rows
        seen = self.both_bad_pairs
        out = []
        for row in rows:
            # a correction is keyed only when some "both bad" row was written (they all come first)
            if row.source == "both_bad" or (row.source == "correction" and seen):
                key = _fast64(
                    f"{row.conversation_id}:{row.context_length}:{_DUMPS(row.target)}:{_DUMPS(row.rejected)}".encode()
                )
                if row.source == "both_bad":
                    seen.add(key)
                elif key in seen:
                    self.skipped["correction_pair_already_from_both_bad"] += 1
                    continue
            out.append(row)
        return out

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
        # an eval line also names its case id and source: duplicates compare what it teaches
        content = _eval_content if self.kind == Kind.EVAL else None
        by_source, by_split, by_mv, by_cat = (
            tally["by_source"],
            tally["by_split"],
            tally["by_model_version"],
            tally["by_category"],
        )
        records, lines = [], []
        for row, pt, tt, rt in zip(rows, prompt_tokens, target_tokens, rejected_tokens, strict=True):
            self.n += 1
            auditor.check_row(self.n, row, pt + max(tt, rt), row.where())
            text = fmt(row)
            auditor.check_written(self.n, row, self.layout, text)
            line = text.encode("utf-8") + b"\n"
            lines.append(line)
            if content is not None and exact_on:
                text = content(row)
                line = text.encode("utf-8")
            records.append(
                (
                    row.conversation_id,
                    row.source_id,
                    row.ctx[1],
                    _fast64(line) if exact_on else 0,
                    _fast64(normalised(text)) if norm_on else 0,
                    pt,
                    tt,
                    rt,
                    SOURCE_CODES[row.source],
                )
            )
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
        block = b"".join(lines)  # one write and one hash update per chunk, not per row
        out.write(block)
        self.sha.update(block)
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
                same = "same bytes as row"
                if self.kind == Kind.EVAL:
                    same = "same prompt and expected answer as row"
                self._flag_rows(
                    "exact_duplicate",
                    index,
                    np.nonzero(exact_dup)[0],
                    lambda i: f"{same} {exact_first[i] + 1}",
                )
            if auditor.on("normalised_duplicate"):
                norm_dup, norm_first = _duplicates(index["normalised"])
                hits = np.nonzero(norm_dup & ~exact_dup)[0]
                self._flag_rows(
                    "normalised_duplicate",
                    index,
                    hits,
                    lambda i: f"same as row {norm_first[i] + 1} after normalising",
                )
        checked: list[int] = []
        if auditor.on("leakage"):
            checked = self.leakage(index)
        return checked

    def leakage(self, index: np.ndarray, exclude: tuple[int, ...] = ()) -> list[int]:
        """Flag rows whose conversation or normalised prompt is on the other side (eval vs train)."""
        other_kinds = [Kind.EVAL] if self.kind in TRAIN_KINDS else list(TRAIN_KINDS)
        others = list(
            DatasetSnapshot.objects.filter(project=self.project, kind__in=other_kinds, status=State.READY)
            .exclude(pk__in=exclude)
            .exclude(pk=self.snapshot.pk)
            .only("pk", "kind", "version", "file")
        )
        if not others or not len(index):
            return [o.pk for o in others]
        leaks = np.zeros(len(index), dtype=bool)
        found_in: dict[int, str] = {}
        for other in others:
            o = read_index(other)
            hit = np.isin(index["conversation"], np.unique(o["conversation"])) | np.isin(
                index["prompt"], np.unique(o["prompt"])
            )
            del o
            for i in np.nonzero(hit & ~leaks)[0][: audit_mod.MAX_EXAMPLES]:
                found_in[int(i)] = other.name
            leaks |= hit
        self._flag_rows(
            "leakage",
            index,
            np.nonzero(leaks)[0],
            lambda i: (
                f"this conversation or the same prompt is in {found_in.get(int(i), 'another snapshot')}"
            ),
        )
        return [o.pk for o in others]

    def _flag_rows(self, key: str, index: np.ndarray, rows: np.ndarray, detail):
        if not len(rows):
            return
        sample = [int(i) for i in rows[: audit_mod.MAX_EXAMPLES]]
        ext = dict(
            self.project.conversations.filter(
                pk__in=[int(index["conversation"][i]) for i in sample]
            ).values_list("pk", "external_id")
        )
        for i in sample:
            conv = int(index["conversation"][i])
            self.auditor.flag(
                key,
                detail(i),
                i + 1,
                source=SOURCE_NAMES[int(index["source"][i])],
                source_id=int(index["source_id"][i]),
                conversation_id=conv,
                external_id=ext.get(conv, ""),
            )
        self.auditor.counts[key] += len(rows) - len(sample)

    # -- stats ---------------------------------------------------------------------------
    def stats(self, result: dict, index: np.ndarray) -> dict:
        rows = result["rows"]
        cat_names = dict(TaxonomyCategory.objects.filter(project=self.project).values_list("pk", "name"))
        mv_names = dict(ModelVersion.objects.filter(project=self.project).values_list("pk", "name"))
        categories = sorted(
            ((cat_names.get(c, f"#{c}"), n) for c, n in result["by_category"].items()),
            key=lambda kv: (-kv[1], kv[0]),
        )
        if result["uncategorised"]:
            categories.append(("(no category)", result["uncategorised"]))
        stats = {
            "rows": rows,
            "source_records": result["records"],
            "rows_by_source": dict(sorted(result["by_source"].items())),
            "rows_by_split": dict(sorted(result["by_split"].items())),
            "rows_by_model_version": dict(
                sorted(
                    (
                        (mv_names.get(k, "(none)") if k else "(none)", v)
                        for k, v in result["by_model_version"].items()
                    ),
                    key=lambda kv: -kv[1],
                )
            ),
            "rows_by_category": dict(categories),
            "skipped": dict(sorted(self.skipped.items())),
            "resolution": self.auditor.resolution,
            "tool_call_share": round(result["with_tool_calls"] / rows, 4) if rows else None,
            "token_counter": result["token_counter"],
            "prompt_tokens": _token_stats(index["prompt_tokens"]),
            "target_tokens": _token_stats(index["target_tokens"]),
            "token_histogram": _histogram(index["prompt_tokens"].astype(np.int64) + index["target_tokens"]),
        }
        routing = self.router.stats()
        if routing:
            stats["routing"] = routing
        if self.kind == Kind.DPO:
            stats["rejected_tokens"] = _token_stats(index["rejected_tokens"])
            stats["rejected_tool_call_share"] = (
                round(result["rejected_with_tool_calls"] / rows, 4) if rows else None
            )
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
    return {
        "min": int(v.min()),
        "p50": p50,
        "p90": p90,
        "p99": p99,
        "max": int(v.max()),
        "mean": round(float(v.mean()), 1),
    }


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


def _eval_content(row: Row) -> str:
    """What an eval row teaches (context, expected answer, tools), without its case id and source."""
    return _DUMPS([row.context, row.target]) + row.toolset.as_string


def _no_rows_message(build: Build, result: dict) -> str:
    if result["records"]:
        reasons = {**build.skipped, **{f"left out: {r}": n for r, n in build.resolved.excluded.items()}}
        if build.router.left_out:
            reasons["routed elsewhere by their categories' fix (routing: taxonomy)"] = build.router.left_out
        why = ", ".join(
            f"{n:,} {SKIP_REASONS.get(k, k.replace('_', ' '))}" for k, n in sorted(reasons.items())
        )
        return f"No rows: {counted(result['records'], 'source record')} matched but none made a row" + (
            f" ({why})." if why else "."
        )
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
                _fail(
                    build,
                    Failure.NO_ROWS,
                    _no_rows_message(build, result),
                    audit=build.auditor.report(0, result["token_counter"]),
                    stats={
                        "rows": 0,
                        "source_records": result["records"],
                        "skipped": dict(build.skipped),
                        "resolution": build.auditor.resolution,
                        **({"routing": build.router.stats()} if build.router.mode else {}),
                    },
                )
                return _reload(snapshot_id)
            checked = build.end_checks(index)
            stats = build.stats(result, index)
            del index
            if build.auditor.blocking:
                _cleanup(build)
                _fail(
                    build,
                    Failure.AUDIT,
                    build.auditor.blocked_message(),
                    audit=build.auditor.report(result["rows"], result["token_counter"]),
                    stats=stats,
                    rows_done=result["records"],
                )
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
        if (
            not DatasetSnapshot.objects.select_for_update()
            .filter(pk=snap.pk, run_token=build.token, status=State.RUNNING)
            .exists()
        ):
            raise Superseded()
        if build.auditor.on("leakage"):
            index = _map_index(build.tmp_index)
            build.leakage(index, exclude=tuple(checked))  # snapshots that became ready during the build
            if build.auditor.blocking:
                _cleanup(build)
                _fail(
                    build,
                    Failure.AUDIT,
                    build.auditor.blocked_message(),
                    audit=build.auditor.report(result["rows"], result["token_counter"]),
                    stats=stats,
                )
                return
        os.replace(build.tmp_index, index_path(build.final))
        os.replace(build.tmp, build.final)
        _fsync_dir(build.final.parent)
        report = build.auditor.report(result["rows"], result["token_counter"])
        warnings = [c for c in report["checks"] if c["outcome"] == "warning"]
        message = f"{counted(result['rows'], 'row')} written"
        if warnings:
            message += "; audit warnings: " + ", ".join(f"{c['count']:,} × {c['title']}" for c in warnings)
        lifecycle.finish(
            snap,
            State.READY,
            message + ".",
            file=file_name_for(snap),
            sha256=result["sha256"],
            row_count=result["rows"],
            size_bytes=build.final.stat().st_size,
            stats=stats,
            audit=report,
            rows_done=result["records"],
        )


# ====================================================================== create / retry


def _next_version(project: Project, kind: str) -> int:
    last = (
        DatasetSnapshot.objects.filter(project=project, kind=kind)
        .order_by("-version")
        .values_list("version", flat=True)
        .first()
    )
    return (last or 0) + 1


def create_snapshot(project: Project, user, data: dict, start: bool = True) -> DatasetSnapshot:
    """Validate the request, create the queued snapshot and send its build to a worker (on commit)."""
    return save_snapshot(project, user, clean_spec(project, data), start)


def save_snapshot(project: Project, user, spec: dict, start: bool = True) -> DatasetSnapshot:
    """Create the queued snapshot from a spec returned by clean_spec."""
    with transaction.atomic():
        Project.objects.select_for_update().filter(
            pk=project.pk
        ).first()  # versions are numbered one at a time
        snapshot = DatasetSnapshot.objects.create(
            project=project,
            kind=spec["kind"],
            version=_next_version(project, spec["kind"]),
            layout=spec["layout"],
            note=spec["note"],
            filters=spec["filters"],
            audit_config=spec["audit_config"],
            created_by=user,
        )
        if start:
            lifecycle.enqueue(snapshot)
    return snapshot
