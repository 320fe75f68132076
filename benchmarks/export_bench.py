"""Dataset-snapshot export throughput and memory on PostgreSQL, against a raw COPY ceiling.

    python benchmarks/export_bench.py [--responses 1000000] [--database-url postgres://...] [--reseed]

Seeds N labelled model responses (COPY through annotator.bulk.bulk_insert): N/2 multi-turn
conversations (~1 KB of messages each), two responses per conversation from two model
versions, one approved label per response (the first unreasonable with a category and a
correction, the second reasonable) and one approved A/B preference per conversation. So:

* SFT (corrections + approved reasonable responses): N rows;
* DPO (preferences + corrections vs. the original response): N rows.

Each export is the production build (``training.snapshots.build.build_snapshot``: keyset chunks,
row building, the full audit, sha256, row index, fsync, rename, ready) run in this process;
a thread samples the process RSS every 0.1 s to show whether memory stays flat. The
ceiling is ``COPY (SELECT …) TO STDOUT`` of exactly the columns the exporter reads (the
same SQL Django generates, without the keyset LIMITs), drained as fast as possible.
The seeded data is kept between runs (same N: no reseed) in its own database,
badcase_export_bench next to BENCH_DATABASE_URL (--reseed drops and re-creates it).
"""

import argparse
import json
import os
import random
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._common import DEFAULT_BENCH_DB, ROOT, report, setup_django  # noqa: E402

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "check_inventory",
            "description": "Units in stock for a SKU.",
            "parameters": {"type": "object", "properties": {"sku": {"type": "string"}}, "required": ["sku"]},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "create_order",
            "description": "Place an order.",
            "parameters": {
                "type": "object",
                "properties": {"sku": {"type": "string"}, "quantity": {"type": "integer"}},
                "required": ["sku", "quantity"],
            },
        },
    },
]


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class RssSampler:
    """Samples the RSS while a block runs: start, peak, and the curve at progress points."""

    def __init__(self, interval: float = 0.1):
        self.interval, self.samples, self._stop = interval, [], threading.Event()

    def __enter__(self):
        self.start = rss_mb()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.samples.append(rss_mb())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()
        self.samples.append(rss_mb())

    def summary(self) -> dict:
        s = self.samples
        at = {f"rss_at_{p}pct_mb": round(s[min(len(s) - 1, len(s) * p // 100)]) for p in (10, 50, 90)}
        return {"rss_start_mb": round(self.start), "peak_rss_mb": round(max(s)), **at}


def seed(n_responses: int, slug: str):
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from annotator.bulk import bulk_insert
    from annotator.models import (
        Conversation,
        Correction,
        Label,
        ModelResponse,
        ModelVersion,
        Preference,
        Project,
        content_hash,
    )
    from annotator.taxonomy import seed_default_taxonomy

    rng = random.Random(5)
    project = Project.objects.create(name=slug, slug=slug, tools=TOOLS)
    seed_default_taxonomy(project)
    category = project.categories.get(name="Wrong arguments").pk
    v1 = ModelVersion.objects.create(project=project, name="agent-v1")
    v2 = ModelVersion.objects.create(project=project, name="agent-v2")
    user, _ = get_user_model().objects.get_or_create(username="bench-annotator")
    through = Label.categories.through
    batch = 5000
    started = time.perf_counter()
    for start in range(0, n_responses // 2, batch):
        with transaction.atomic():
            convs, contexts = [], []
            for i in range(start, min(start + batch, n_responses // 2)):
                sku, qty = f"{rng.choice('ABCDEFGH')}-{rng.randint(100, 999)}", rng.randint(1, 9)
                messages = [
                    {
                        "role": "system",
                        "content": "You are the sales assistant of Northwind Home. Use the tools; "
                        "never guess their results. Be brief and friendly.",
                    },
                    {
                        "role": "user",
                        "content": f"Hi, could you check whether {sku} is available? I need {qty}. "
                        f"(session {i})",
                    },
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "call_1",
                                "type": "function",
                                "function": {
                                    "name": "check_inventory",
                                    "arguments": json.dumps({"sku": sku}),
                                },
                            }
                        ],
                    },
                    {
                        "role": "tool",
                        "tool_call_id": "call_1",
                        "content": json.dumps({"sku": sku, "in_stock": rng.randint(10, 80)}),
                    },
                    {"role": "assistant", "content": f"Yes, {sku} is in stock. Shall I order {qty} for you?"},
                    {"role": "user", "content": "Yes please, go ahead and place the order right now."},
                ]
                convs.append(
                    Conversation(
                        project=project,
                        external_id=f"bench-{i}",
                        messages=messages,
                        tools=TOOLS,
                        content_hash=content_hash(i),
                        split="train",
                    )
                )
                contexts.append((sku, qty))
            bulk_insert(convs)
            responses = []
            for conv, (sku, qty) in zip(convs, contexts, strict=True):
                bad = {
                    "role": "assistant",
                    "content": f"Done! I ordered {qty} of {sku.lower()} for you.",
                    "tool_calls": [
                        {
                            "id": "call_0",
                            "type": "function",
                            "function": {
                                "name": "create_order",
                                "arguments": json.dumps({"sku": sku.lower(), "quantity": qty}),
                            },
                        }
                    ],
                }
                good = {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_0",
                            "type": "function",
                            "function": {
                                "name": "create_order",
                                "arguments": json.dumps({"sku": sku, "quantity": qty}),
                            },
                        }
                    ],
                }
                responses.append(
                    ModelResponse(
                        conversation=conv,
                        model_version=v1,
                        context_length=6,
                        message=bad,
                        response_hash=content_hash(conv.pk, 1),
                    )
                )
                responses.append(
                    ModelResponse(
                        conversation=conv,
                        model_version=v2,
                        context_length=6,
                        message=good,
                        response_hash=content_hash(conv.pk, 2),
                    )
                )
            bulk_insert(responses)
            labels = [
                Label(
                    response=r,
                    annotator=user,
                    project=project,
                    model_version_id=r.model_version_id,
                    verdict="unreasonable" if k % 2 == 0 else "reasonable",
                    status="approved",
                )
                for k, r in enumerate(responses)
            ]
            bulk_insert(labels)
            bulk_insert([through(label_id=lab.pk, taxonomycategory_id=category) for lab in labels[::2]])
            bulk_insert(
                [
                    Correction(label=lab, message=good_r.message)  # the correction is v2's right call
                    for lab, good_r in zip(labels[::2], responses[1::2], strict=True)
                ]
            )
            bulk_insert(
                [
                    Preference(
                        response_a=responses[k],
                        response_b=responses[k + 1],
                        annotator=user,
                        choice="b",
                        status="approved",
                    )
                    for k in range(0, len(responses), 2)
                ]
            )
        done = min(start + batch, n_responses // 2) * 2
        if done % 100_000 == 0 or done == n_responses:
            print(f"  seeded {done:,} labelled responses ({time.perf_counter() - started:.0f} s)", flush=True)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return project, time.perf_counter() - started


def copy_ceiling(sources) -> tuple[int, float, int]:
    """(rows, seconds, bytes) for COPY (SELECT …) TO STDOUT of what the sources read."""
    from django.db import connection

    rows = nbytes = 0
    started = time.perf_counter()
    with connection.cursor() as cursor:
        for source in sources:
            qs = source.queryset().order_by("pk").values_list(*source.columns())
            sql, params = qs.query.sql_with_params()
            with cursor.cursor.copy(f"COPY ({sql}) TO STDOUT", params) as copy:
                for block in copy:
                    nbytes += len(block)
                    rows += bytes(block).count(b"\n")
    return rows, time.perf_counter() - started, nbytes


def export(project, user, kind, filters):
    from training.snapshots.build import build_snapshot, create_snapshot
    from training.snapshots.storage import media_path

    snapshot = create_snapshot(project, user, {"kind": kind, "filters": filters}, start=False)
    with RssSampler() as rss:
        started, cpu = time.perf_counter(), time.process_time()
        snapshot = build_snapshot(snapshot.pk)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert snapshot.status == "ready", snapshot.message
    size = media_path(snapshot.file.name).stat().st_size
    result = {
        "rows": snapshot.row_count,
        "seconds": round(seconds, 1),
        "rows_per_s": round(snapshot.row_count / seconds),
        "process_cpu_seconds": round(cpu, 1),
        "file_mb": round(size / 2**20),
        "sha256": snapshot.sha256,
        **rss.summary(),
        "audit_warnings": {
            c["key"]: c["count"] for c in snapshot.audit["checks"] if c["outcome"] == "warning"
        },
    }
    snapshot.delete()  # the files go once the deletion commits (autocommit here)
    return result, snapshot


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--responses", type=int, default=1_000_000, help="labelled responses to seed (even)")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--reseed", action="store_true", help="drop the bench database and seed again")
    parser.add_argument("--seed-only", action="store_true", help="seed (if needed) and stop")
    args = parser.parse_args()
    os.environ.setdefault("MEDIA_ROOT", str(ROOT / "var" / "bench" / "media"))
    os.environ.setdefault("DEBUG", "0")  # DEBUG keeps every query in memory
    os.environ.setdefault("SECRET_KEY", "export-bench")
    # its own database next to BENCH_DATABASE_URL: seeding 1M responses takes minutes, so it is kept
    default = (os.environ.get("BENCH_DATABASE_URL") or DEFAULT_BENCH_DB).rsplit("/", 1)[
        0
    ] + "/badcase_export_bench"
    url = setup_django(args.database_url or default, fresh=args.reseed)

    from django.contrib.auth import get_user_model
    from django.db import connection

    from annotator.models import Project
    from training.snapshots.build import Build, chunk_size, plan_sources
    from training.snapshots.spec import clean_spec

    slug = f"export-bench-{args.responses}"
    project = Project.objects.filter(slug=slug).first()
    seed_seconds = None
    if project is None:
        print(f"seeding {args.responses:,} labelled responses into {url.split('@')[-1]} …", flush=True)
        project, seed_seconds = seed(args.responses, slug)
    if args.seed_only:
        return
    user = get_user_model().objects.get(username="bench-annotator")

    figures = {
        "database": connection.vendor,
        "database_url": url.split("@")[-1],
        "labelled_responses": args.responses,
        "chunk_size": chunk_size(),
        "load_average_at_start": round(os.getloadavg()[0], 2),
    }
    if seed_seconds is not None:
        figures["seed_seconds"] = round(seed_seconds)
    for kind, filters in (("sft", {"include_reasonable": True}), ("dpo", {})):
        spec = clean_spec(project, {"kind": kind, "filters": filters})
        build = Build.__new__(Build)  # only what plan_sources and the sources read
        build.project, build.kind, build.filters = project, kind, spec["filters"]
        sources = plan_sources(build)
        copy_rows, copy_seconds, copy_bytes = copy_ceiling(sources)
        result, _ = export(project, user, kind, filters)
        figures[kind] = {
            **result,
            "copy_rows": copy_rows,
            "copy_seconds": round(copy_seconds, 1),
            "copy_rows_per_s": round(copy_rows / copy_seconds),
            "copy_mb": round(copy_bytes / 2**20),
            "share_of_copy_rate": round(result["rows_per_s"] / (copy_rows / copy_seconds), 3),
        }
        print(
            f"  {kind}: {result['rows_per_s']:,} rows/s vs COPY {copy_rows / copy_seconds:,.0f} rows/s; "
            f"peak RSS {result['peak_rss_mb']} MB",
            flush=True,
        )
    figures["load_average_at_end"] = round(os.getloadavg()[0], 2)  # 2-core machine shared with other work
    report(f"export_{args.responses}", figures)


if __name__ == "__main__":
    main()
