"""Ingestion API throughput on PostgreSQL: POST /api/projects/<slug>/ingest/ with batches of 1,000 records.

    python benchmarks/ingest_bench.py [--batches 20] [--batch-size 1000] [--existing 100000]
                                      [--small-requests 100] [--database-url postgres://...]

1. A fresh dedicated database (`badcase_ingest_bench` next to BENCH_DATABASE_URL's server), and a project
   that already holds --existing conversations, two model responses each, with their queue (label and
   compare tasks, overlap 2), seeded with benchmarks/seed_scale.py's COPY seeder: ingestion lands in a
   project of production size, not an empty one.
2. Records as an agent sends them (~1 KB each, every one carrying its tools): 70 % conversation lines
   with a raw Qwen-style response, 30 % chat-completion log records `{"request", "response"}` as the
   OpenAI client's `model_dump()` writes them.
3. Posts --batches batches of --batch-size new records through the real endpoint (Django's test client
   in this process: middleware, token authentication, throttle, parser, view, service, database; no
   socket), with DEBUG=0 and the rate limit off. Per batch: wall time, and the queries of one batch.
   Then the same batches again (all duplicates), and --small-requests requests of 10 records each.
4. Checks: every record created once, a label task with its slots per new response, and
   `assignment.sync_tasks()` afterwards finds nothing to add (the ingestion's own queueing built the same
   queue); its time is the per-request cost ingestion avoids by not calling it.

Prints one JSON line and writes benchmarks/results/ingest.json. Exit status 1 on a failed check.
"""

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import seed_scale  # noqa: E402
from benchmarks._common import DEFAULT_BENCH_DB, report, setup_django  # noqa: E402

DEFAULT_DB = DEFAULT_BENCH_DB.rsplit("/", 1)[0] + "/badcase_ingest_bench"
TOOLS = seed_scale.TOOLS
SYSTEM = (
    "You are the sales assistant of Northwind Home. Use the tools; never guess their results. "
    "Be brief and friendly."
)


def conversation_line(i: int, rng: random.Random) -> dict:
    sku = f"{rng.choice('ABCDEFGH')}-{rng.randint(100, 999)}"
    qty = rng.randint(1, 9)
    return {
        "external_id": f"ingest-{i}",
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Hi, could you check whether {sku} is available? I need {qty}."},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "check_inventory", "arguments": json.dumps({"sku": sku})},
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
        "tools": TOOLS,
        "metadata": {"source": "agent", "session": rng.randint(1, 10**9)},
        "responses": [
            {
                "model": "agent-v5",
                "raw": "<think>The user confirmed.</think>\n<tool_call>\n"
                + json.dumps({"name": "create_order", "arguments": {"sku": sku, "quantity": qty}})
                + "\n</tool_call>",
            }
        ],
    }


def chat_log(i: int, rng: random.Random) -> dict:
    """What `{"request": kwargs, "response": completion.model_dump()}` holds for one agent turn."""
    sku = f"{rng.choice('ABCDEFGH')}-{rng.randint(100, 999)}"
    return {
        "request": {
            "model": "agent-v5",
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"Do you still have {sku}? Order #{rng.randint(1000, 9999)}."},
            ],
            "tools": TOOLS,
            "temperature": 0.2,
        },
        "response": {
            "id": f"chatcmpl-ingest-{i}",
            "object": "chat.completion",
            "created": 1_750_000_000 + i,
            "model": "agent-v5",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "refusal": None,
                        "tool_calls": [
                            {
                                "id": f"call_{i}",
                                "type": "function",
                                "function": {
                                    "name": "check_inventory",
                                    "arguments": json.dumps({"sku": sku}),
                                },
                            }
                        ],
                    },
                }
            ],
            "usage": {"prompt_tokens": 412, "completion_tokens": 23, "total_tokens": 435},
        },
    }


def records(start: int, n: int, seed: int = 1) -> list[dict]:
    rng = random.Random(seed + start)
    return [chat_log(i, rng) if i % 10 < 3 else conversation_line(i, rng) for i in range(start, start + n)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--existing", type=int, default=100_000, help="conversations already in the project")
    parser.add_argument("--small-requests", type=int, default=100, help="requests of 10 records each")
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    os.environ.update(
        {
            "DEBUG": "0",
            "SECRET_KEY": "bench",
            "ALLOWED_HOSTS": "testserver,127.0.0.1,localhost",
            "SECURE_SSL_REDIRECT": "0",
            "SECURE_HSTS_SECONDS": "0",
            "SECURE_COOKIES": "0",
            "LOG_LEVEL": "WARNING",
            "INGEST_RATE": "",  # measure the endpoint, not the rate limit
        }
    )
    url = setup_django(args.database_url or DEFAULT_DB, fresh=True)

    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from rest_framework.authtoken.models import Token

    from annotator.assignment import sync_tasks
    from annotator.models import Conversation, Membership, ModelResponse, Role, Slot, Task

    assert settings.INGEST_MAX_RECORDS >= args.batch_size, "raise INGEST_MAX_RECORDS for this batch size"
    t0 = time.perf_counter()
    project, _ = seed_scale.seed(
        args.existing,
        responses_per_conversation=2,
        labels=0,
        preferences=0,
        overlap=2,
        slug="ingest-bench",
        name="Ingest bench",
        annotators=5,
        leads=0,
        username_prefix="ib-",
        external_prefix="seed-",
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    seed_s = time.perf_counter() - t0
    admin = get_user_model().objects.create_user("ingest-admin")
    Membership.objects.create(user=admin, project=project, role=Role.ADMIN)
    client = Client(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=admin).key}")
    path = f"/api/projects/{project.slug}/ingest/"

    def send(batch: list[dict]) -> tuple[float, dict, int]:
        body = json.dumps({"records": batch})
        start = time.perf_counter()
        response = client.post(path, data=body, content_type="application/json")
        elapsed = time.perf_counter() - start
        if response.status_code != 200:
            raise SystemExit(f"batch refused: {response.status_code} {response.content[:500]!r}")
        return elapsed, response.json(), len(body)

    before = {"conversations": Conversation.objects.filter(project=project).count()}
    before["responses"] = ModelResponse.objects.filter(conversation__project=project).count()
    before["tasks"] = Task.objects.filter(project=project).count()
    batches = [records(b * args.batch_size, args.batch_size) for b in range(args.batches)]
    send(records(10**8, 20))  # warm up: connections, model version, first-request imports
    warm = 20

    times, body_bytes, created = [], [], 0
    for batch in batches:
        elapsed, data, size = send(batch)
        times.append(elapsed)
        body_bytes.append(size)
        created += data["created"]
        assert data["rejected"] == 0, data["results"][:3]
    with CaptureQueriesContext(connection) as ctx:
        send(records(2 * 10**8, args.batch_size))
    queries_per_batch = len(ctx.captured_queries)
    extra = args.batch_size

    dup_times = []
    for batch in batches[: min(5, len(batches))]:
        elapsed, data, _ = send(batch)
        dup_times.append(elapsed)
        assert data["duplicates"] == len(batch) and data["created"] == 0

    small_times = []
    for k in range(args.small_requests):
        elapsed, data, _ = send(records(3 * 10**8 + 10 * k, 10))
        small_times.append(elapsed)
    small = 10 * args.small_requests

    total = args.batches * args.batch_size
    new = total + warm + extra + small
    after_conversations = Conversation.objects.filter(project=project).count()
    after_responses = ModelResponse.objects.filter(conversation__project=project).count()
    t = time.perf_counter()
    left = sync_tasks(project)
    sync_ms = 1000 * (time.perf_counter() - t)
    new_responses = after_responses - before["responses"]
    ingested = Task.objects.filter(project=project).exclude(
        response__conversation__external_id__startswith="seed-"
    )
    checks = {
        "every_record_created_once": after_conversations - before["conversations"] == new,
        "created_as_reported": created == total,
        "one_response_each": new_responses == new,
        "label_task_per_new_response": ingested.filter(kind=Task.Kind.LABEL).count() == new_responses,
        "slots_per_task": Slot.objects.filter(task__in=ingested).count() == 2 * ingested.count(),
        "sync_tasks_finds_nothing": left == {"label": 0, "compare": 0, "slots": 0},
    }
    seconds = sum(times)
    figures = report(
        "ingest",
        {
            "database": connection.vendor,
            "database_url": url.split("@")[-1],
            "client": "django.test.Client in process (full middleware, token auth, parser, view; no socket)",
            "existing_conversations": args.existing,
            "existing_responses": before["responses"],
            "batches": args.batches,
            "batch_size": args.batch_size,
            "avg_record_bytes": round(statistics.mean(body_bytes) / args.batch_size),
            "records_per_s": round(total / seconds),
            "batch_ms": {
                "p50": round(1000 * percentile(times, 0.5), 1),
                "p95": round(1000 * percentile(times, 0.95), 1),
                "max": round(1000 * max(times), 1),
            },
            "queries_per_batch": queries_per_batch,
            "resend_all_duplicates_batch_ms_p50": round(1000 * percentile(dup_times, 0.5), 1),
            "small_request_records": 10,
            "small_request_ms": {
                "p50": round(1000 * percentile(small_times, 0.5), 1),
                "p95": round(1000 * percentile(small_times, 0.95), 1),
            },
            "sync_tasks_noop_ms_after": round(sync_ms, 1),
            "seed_s": round(seed_s, 1),
            "load_avg_1m_at_end": round(os.getloadavg()[0], 1),  # other work sharing the machine
            "checks": checks,
        },
    )
    if not all(figures["checks"].values()):
        raise SystemExit(f"failed checks: {[k for k, ok in figures['checks'].items() if not ok]}")


if __name__ == "__main__":
    main()
