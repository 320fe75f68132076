"""JSONL import throughput and memory on PostgreSQL.

    python benchmarks/import_bench.py [--lines 100000] [--database-url postgres://...]

Generates N conversations of about 1 KB (system prompt, user turn, a tool call, its result,
a reply, plus one raw Qwen-style model response), imports them with the production importer
(validation, parsing, batched transactions) into a fresh project, and reports lines/s and
the process's peak RSS. Run it with --lines 1000000 to check that memory stays flat.
"""

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._common import DEFAULT_BENCH_DB, ROOT, peak_rss_mb, report, setup_django  # noqa: E402

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


def generate(path: Path, n: int, seed: int = 1):
    rng = random.Random(seed)
    with path.open("w") as out:
        for i in range(n):
            sku = f"{rng.choice('ABCDEFGH')}-{rng.randint(100, 999)}"
            qty = rng.randint(1, 9)
            record = {
                "external_id": f"bench-{i}",
                "messages": [
                    {
                        "role": "system",
                        "content": "You are the sales assistant of Northwind Home. Use the tools; "
                        "never guess their results. Be brief and friendly.",
                    },
                    {
                        "role": "user",
                        "content": f"Hi, could you check whether {sku} is available? I need {qty}.",
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
                        "content": json.dumps({"sku": sku, "in_stock": rng.randint(0, 80)}),
                    },
                    {"role": "assistant", "content": f"Yes, {sku} is in stock. Shall I order {qty} for you?"},
                    {"role": "user", "content": "Yes please, go ahead and place the order right now."},
                ],
                "metadata": {"source": "bench", "session": rng.randint(1, 10**9)},
                "responses": [
                    {
                        "model": "agent-v1",
                        "raw": "<think>The user confirmed.</think>\n<tool_call>\n"
                        + json.dumps({"name": "create_order", "arguments": {"sku": sku, "quantity": qty}})
                        + "\n</tool_call>",
                    }
                ],
            }
            out.write(json.dumps(record) + "\n")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    url = setup_django(
        args.database_url or DEFAULT_BENCH_DB.rsplit("/", 1)[0] + "/badcase_import_bench", fresh=True
    )

    from django.core.files import File
    from django.db import connection

    from annotator.importers import run_import
    from annotator.models import ImportJob, Project

    data = ROOT / "var" / "bench" / f"import-{args.lines}.jsonl"
    data.parent.mkdir(parents=True, exist_ok=True)
    if not data.exists():
        generate(data, args.lines)
    size = data.stat().st_size
    slug = f"import-bench-{int(time.time())}"
    project = Project.objects.create(name=slug, slug=slug, tools=TOOLS)
    job = ImportJob(project=project, original_name=data.name, size_bytes=size)
    with data.open("rb") as fh:
        job.file.save(data.name, File(fh), save=False)
    job.save()
    from annotator import assignment

    queue_s = []
    real_sync = assignment.sync_tasks

    def timed_sync(project):  # the import also queues the new responses for annotation: timed apart
        t = time.perf_counter()
        made = real_sync(project)
        queue_s.append(time.perf_counter() - t)
        return made

    assignment.sync_tasks = timed_sync
    rss_before = peak_rss_mb()
    start = time.perf_counter()
    job = run_import(job.pk)
    seconds = time.perf_counter() - start
    import_only = seconds - sum(queue_s)
    assert job.status == "done" and job.conversations_created == args.lines, job.message
    report(
        f"import_{args.lines}",
        {
            "database": connection.vendor,
            "database_url": url.split("@")[-1],
            "lines": args.lines,
            "avg_line_bytes": round(size / args.lines),
            "seconds": round(seconds, 1),
            "lines_per_s": round(args.lines / import_only),
            "import_ms": round(1000 * import_only),
            "queue_build_ms": round(1000 * sum(queue_s)),
            "lines_per_s_incl_queue_build": round(args.lines / seconds),
            "peak_rss_mb": round(peak_rss_mb()),
            "rss_before_import_mb": round(rss_before),
            "batch_size": 1000,
        },
    )


if __name__ == "__main__":
    main()
