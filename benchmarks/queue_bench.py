"""Annotation queue under load: next task, labelling page and submit, through the real web server.

    python benchmarks/queue_bench.py [--items 1000000] [--annotators 50] [--seconds 60] [--warmup 5]
                                     [--workers 3] [--flows queue,full] [--reuse] [--database-url postgres://...]

It runs on a `git archive HEAD` snapshot under var/bench/ (so half-saved edits in the working tree
cannot break the server mid-run; `--code here` runs the tree as it is) and:

1. Seeds a project on a dedicated PostgreSQL database, one per size (`badcase_queue_bench_<N>`,
   re-created unless --reuse finds that size already seeded) with benchmarks/seed_scale.py's COPY
   seeder: N conversations, one model response each, one label task each and `overlap` = 2 slots per
   task (rows shaped as the importer writes them); then checks that `assignment.sync_tasks()` finds
   nothing left to create. Adds a small taxonomy and 50 annotator users (unusable passwords) with real
   database sessions, stored exactly as `django.contrib.auth.login` does (`Client.force_login` style),
   so the server accepts them.
2. Starts gunicorn (sync workers, loopback only) on that database with DEBUG=0, SECRET_KEY=bench,
   SECURE_COOKIES=0, serving Django's WSGI app through `application` below, which adds a
   `db;dur=` Server-Timing entry (time inside cursor.execute) next to the app's own `app;dur=`.
3. Runs bounded loads, one after the other on the same server, with no think time:
   - `queue`: every annotator loops GET /p/<slug>/next/ (302, the queue pick) and POST …/submit/;
   - `full`: GET next, GET /p/<slug>/tasks/<id>/ (the labelling page), POST submit with the page's
     CSRF token (what a browser does).
   Only requests started after the warm-up count. Per request: client latency (connect to last
   byte) and the server's `app;dur` and `db;dur`; per flow: requests/s, errors, CPU accounting.
4. Checks integrity (no task over its overlap, no annotator twice on one task, submitted labels ==
   done slots, task.completed == done slots), EXPLAIN ANALYZEs the queries next_task() and the
   labelling page's queue count run, and writes benchmarks/results/queue_<N>.json (full plans in
   var/bench/queue_explain_<N>.txt, gunicorn's log in var/bench/queue-gunicorn-<N>.log).

The client is a minimal asyncio HTTP/1.1 client (gunicorn's sync workers close every connection),
so nothing beyond the project's own dependencies is needed. Exit status 1 on any error or failed check.
"""

import argparse
import asyncio
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import seed_scale  # noqa: E402
from benchmarks._common import DEFAULT_BENCH_DB, ROOT, report, setup_django  # noqa: E402

DEFAULT_DB = (
    DEFAULT_BENCH_DB.rsplit("/", 1)[0] + "/badcase_queue_bench_{items}"
)  # one per size, so --reuse works
SECRET_KEY = "bench"
OVERLAP = 2
SLUG_PREFIX = "queue-bench-"
OUT_VAR = Path(
    os.environ.get("QUEUE_BENCH_VAR") or ROOT / "var" / "bench"
)  # logs and full plans (not committed)

TAXONOMY = {
    "Tool choice": ["Wrong tool", "Missing tool call", "Unneeded tool call"],
    "Arguments": ["Wrong argument value", "Missing argument", "Hallucinated argument"],
    "Reply": ["Ignored tool result", "Unconfirmed action"],
}


def bench_env(url: str) -> dict:
    """The environment both this process and gunicorn run with (session hashes need the same key)."""
    return {
        "DATABASE_URL": url,
        "DEBUG": "0",
        "SECRET_KEY": SECRET_KEY,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_COOKIES": "0",
        "SECURE_SSL_REDIRECT": "0",
        "SECURE_HSTS_SECONDS": "0",  # plain HTTP on loopback
        "LOG_LEVEL": "WARNING",
        "DB_CONN_MAX_AGE": "600",
    }


# --- seeding ---------------------------------------------------------------------------------


def seed(n: int, annotators: int):
    """N conversations with one response each, a label task each with OVERLAP slots, no labels yet
    (benchmarks/seed_scale.py writes them with COPY); then `assignment.sync_tasks()` must find nothing to
    add."""
    from annotator.assignment import sync_tasks

    project, t = seed_scale.seed(
        n,
        responses_per_conversation=1,
        labels=0,
        preferences=0,
        overlap=OVERLAP,
        slug=f"{SLUG_PREFIX}{n}",
        name=f"Queue bench {n:,}",
        annotators=annotators,
        leads=0,
        username_prefix="qb-",
        external_prefix="q-",
        taxonomy=TAXONOMY,
        model_versions=["agent-v1"],
        compare_tasks=False,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    timings = {"seed_rows_s": t["rows_s"], "vacuum_analyze_s": t["vacuum_analyze_s"]}
    # The app's own idea of the queue must agree with what was seeded (order_key = task id: sequential).
    t0 = time.perf_counter()
    created = sync_tasks(project)
    timings["sync_tasks_noop_s"] = round(time.perf_counter() - t0, 1)
    assert created == {"label": 0, "compare": 0, "slots": 0}, (
        f"seeded rows disagree with sync_tasks: {created}"
    )
    timings["seed_total_s"] = round(t["total_s"] + timings["sync_tasks_noop_s"], 1)
    return project, timings


def find_seeded(n: int):
    from annotator.models import Project, Slot, Task

    project = Project.objects.filter(slug=f"{SLUG_PREFIX}{n}").first()
    if (
        project
        and Task.objects.filter(project=project).count() == n
        and Slot.objects.filter(project=project).count() == n * OVERLAP
    ):
        return project
    return None


def annotator_sessions(project, count: int) -> list[str]:
    """Fresh database sessions for the project's annotators, exactly what auth.login() stores."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
    from django.contrib.sessions.backends.db import SessionStore

    users = list(
        get_user_model()
        .objects.filter(memberships__project=project, username__startswith="qb-annotator-")
        .order_by("username")[:count]
    )
    assert len(users) == count, f"{len(users)} annotators seeded, {count} asked for"
    keys = []
    for user in users:
        s = SessionStore()
        s[SESSION_KEY] = str(user.pk)
        s[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        s[HASH_SESSION_KEY] = user.get_session_auth_hash()
        s.create()
        keys.append(s.session_key)
    return keys


# --- the server --------------------------------------------------------------------------------

_django_app = None


def application(environ, start_response):
    """gunicorn entry point `benchmarks.queue_bench:application`: Django's own WSGI app, plus a second
    `Server-Timing: db;dur=<ms>;desc=<queries>, cpu;dur=<ms>` header: the time spent in cursor.execute (the
    queries, the COMMIT and the round trips) and the worker's own CPU time for the request, so the load can
    tell database time from Python time and from waiting for a core on a busy machine."""
    global _django_app
    if _django_app is None:
        from config.wsgi import application as django_app

        _django_app = django_app
    from django.db import connection

    spent = [0.0, 0]
    cpu_start = (
        time.process_time()
    )  # a sync worker runs one request at a time: the process's CPU is this request's

    def timer(execute, sql, params, many, context):
        t = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            spent[0] += time.perf_counter() - t
            spent[1] += 1

    def timed_start_response(status, headers, exc_info=None):  # called once the view and middleware are done
        cpu = 1000 * (time.process_time() - cpu_start)
        headers = [
            *headers,
            ("Server-Timing", f"db;dur={1000 * spent[0]:.1f};desc={spent[1]}, cpu;dur={cpu:.1f}"),
        ]
        return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

    with connection.execute_wrapper(timer):
        return _django_app(environ, timed_start_response)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(url: str, workers: int, log: Path, db_timing: bool = True):
    port = free_port()
    env = {**os.environ, **bench_env(url)}
    log.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "benchmarks.queue_bench:application" if db_timing else "config.wsgi",
            "-w",
            str(workers),
            "-b",
            f"127.0.0.1:{port}",
            "--backlog",
            "2048",
            "--timeout",
            "120",
            "--error-logfile",
            str(log),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode}; see {log}")
        try:
            status, _, _, _ = asyncio.run(http("GET", port, "/accounts/login/", {}))
            if status == 200:
                return proc, port
            if status >= 500:
                stop_server(proc)
                raise RuntimeError(f"the server answers {status} (a broken commit?); see {log}")
        except OSError:
            pass
        time.sleep(0.3)
    stop_server(proc)
    raise RuntimeError(f"gunicorn did not answer within 60 s; see {log}")


def group_cpu_s(pgid: int) -> float:
    """User + system CPU seconds of the live processes in a process group (the gunicorn master and
    workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after "(comm)": state ppid pgrp … utime(11) stime(12)
            total += int(fields[11]) + int(fields[12])
    return total / tick


def stop_server(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # our own process group (start_new_session)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# --- the load ----------------------------------------------------------------------------------


async def http(method: str, port: int, path: str, cookies: dict, body: bytes = b"", content_type: str = ""):
    """One HTTP/1.1 request on a fresh loopback connection -> (status, headers, body, client ms)."""
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = [
            f"{method} {path} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Connection: close",
            "User-Agent: queue-bench",
        ]
        if cookies:
            head.append("Cookie: " + "; ".join(f"{k}={v}" for k, v in cookies.items()))
        if body or method == "POST":
            head += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()
        raw = await reader.read()  # gunicorn's sync workers close the connection after each response
    finally:
        writer.close()
    ms = 1000 * (time.perf_counter() - start)
    header_blob, _, payload = raw.partition(b"\r\n\r\n")
    lines = header_blob.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return status, headers, payload, ms


def _update_cookies(cookies: dict, headers: dict):
    for raw in headers.get("set-cookie", []):
        pair, _, attrs = raw.partition(";")
        name, _, value = pair.strip().partition("=")
        attrs = attrs.lower()
        if "max-age=0" in attrs or "expires=thu, 01 jan 1970" in attrs:
            cookies.pop(name, None)
        else:
            cookies[name] = value.strip('"') if not value.startswith('"') else value


def _server_ms(headers: dict) -> tuple[float | None, float | None, int | None, float | None]:
    """(app ms, db ms, queries, worker CPU ms) from the Server-Timing headers."""
    app = db = queries = cpu = None
    for value in headers.get("server-timing", []):
        if m := re.search(r"app;dur=([0-9.]+)", value):
            app = float(m.group(1))
        if m := re.search(r"db;dur=([0-9.]+);desc=(\d+)", value):
            db, queries = float(m.group(1)), int(m.group(2))
        if m := re.search(r"cpu;dur=([0-9.]+)", value):
            cpu = float(m.group(1))
    return app, db, queries, cpu


CSRF_RE = re.compile(rb'name="csrfmiddlewaretoken" value="([^"]+)"')
TASK_RE = re.compile(r"/tasks/(\d+)/$")


class Load:
    """`flow` full: next -> labelling page -> submit (what a browser does).
    `flow` queue: next -> submit, no page (the queue and the submission path alone; the CSRF token comes
    from the csrftoken cookie, fetched once per annotator before the clock starts)."""

    def __init__(
        self,
        port: int,
        slug: str,
        sessions: list[str],
        leaves: list[int],
        seconds: float,
        warmup: float,
        flow: str = "full",
        seed: int = 7,
    ):
        self.port, self.slug, self.sessions, self.leaves = port, slug, sessions, leaves
        self.seconds, self.warmup, self.flow, self.seed = seconds, warmup, flow, seed
        self.samples = {"next": [], "page": [], "submit": []}  # (client, server, db ms, queries, cpu ms)
        self.errors: list[str] = []
        self.empty_queue = 0

    def _record(self, kind, started, client_ms, timing, ok, what):
        if started < self.t_measure:
            return
        if not ok:
            self.errors.append(what)
            return
        if timing[0] is None:
            self.errors.append(f"{kind}: no Server-Timing header")
            return
        self.samples[kind].append((client_ms, *timing))

    def form(self, rng, token: str, task_id: int) -> list[tuple[str, str]]:
        """70 % reasonable; 30 % unreasonable with a category and a note, a third of those with a corrected
        tool call."""
        fields = {
            "csrfmiddlewaretoken": token,
            "time_spent_ms": str(rng.randint(3000, 90000)),
            "note": "",
            "correction_content": "",
            "correction_tool_calls": "",
            "verdict": "reasonable",
        }
        roll = rng.random()
        extra = []
        if roll >= 0.7:
            fields.update(verdict="unreasonable", note=f"bench note on item {task_id}")
            extra.append(("categories", str(rng.choice(self.leaves))))
            if roll >= 0.9:  # validated against the tool's JSON schema on submit
                fields["correction_tool_calls"] = json.dumps(
                    [{"name": "create_order", "arguments": {"sku": "A-100", "quantity": rng.randint(1, 9)}}]
                )
        return list(fields.items()) + extra

    async def annotator(self, i: int, session_key: str):
        cookies = {"sessionid": session_key}
        rng = random.Random(self.seed * 1000 + i)
        next_path = f"/p/{self.slug}/next/"
        if self.flow == "queue":
            status, headers, _, _ = await http("GET", self.port, "/accounts/login/", cookies)
            _update_cookies(cookies, headers)
            assert status == 200 and "csrftoken" in cookies, (status, headers)
        await asyncio.sleep(i * 0.01)  # do not open 50 connections in the same millisecond
        while time.perf_counter() < self.t_end:
            started = time.perf_counter()
            status, headers, body, ms = await http("GET", self.port, next_path, cookies)
            _update_cookies(cookies, headers)
            location = (headers.get("location") or [""])[0]
            m = TASK_RE.search(location)
            if status == 200 and not m:
                self.empty_queue += 1  # the queue-empty page: nothing left for this annotator
                return
            self._record(
                "next",
                started,
                ms,
                _server_ms(headers),
                status == 302 and m is not None,
                f"next: {status} {location!r}",
            )
            if not m:
                await asyncio.sleep(0.05)
                continue
            task_id = int(m.group(1))
            task_path = f"/p/{self.slug}/tasks/{task_id}/"
            if time.perf_counter() >= self.t_end:
                break
            if self.flow == "full":
                started = time.perf_counter()
                status, headers, body, ms = await http("GET", self.port, task_path, cookies)
                _update_cookies(cookies, headers)
                match = CSRF_RE.search(body)
                ok = status == 200 and match is not None and b'id="task-form"' in body
                self._record("page", started, ms, _server_ms(headers), ok, f"page {task_id}: {status}")
                if not ok:
                    continue
                token = match.group(1).decode()
                if time.perf_counter() >= self.t_end:
                    break
            else:
                token = cookies["csrftoken"]
            started = time.perf_counter()
            status, headers, body, ms = await http(
                "POST",
                self.port,
                task_path + "submit/",
                cookies,
                urlencode(self.form(rng, token, task_id)).encode(),
                "application/x-www-form-urlencoded",
            )
            _update_cookies(cookies, headers)
            location = (headers.get("location") or [""])[0]
            ok = status == 302 and location.startswith(next_path)
            self._record(
                "submit",
                started,
                ms,
                _server_ms(headers),
                ok,
                f"submit {task_id}: {status} {location!r} {body[:300]!r}",
            )

    async def run(self):
        self.t_measure = time.perf_counter() + self.warmup
        self.t_end = self.t_measure + self.seconds
        await asyncio.gather(*(self.annotator(i, key) for i, key in enumerate(self.sessions)))
        self.elapsed = time.perf_counter() - self.t_measure
        self.requests = sum(len(v) for v in self.samples.values()) + len(self.errors)


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = values[3] + values[4]
    return (sum(values) - idle) / tick, sum(values) / tick


def run_measured(load: Load, server_pgid: int) -> dict:
    """Run one flow and summarise it, with the CPU used in the measured window (after the warm-up)."""
    marks = {}

    async def sample(name):
        marks[name] = (os.times(), group_cpu_s(server_pgid), machine_cpu(), loadavg())

    async def go():
        async def at_measure():
            await asyncio.sleep(load.warmup)
            await sample("start")

        timer = asyncio.create_task(at_measure())
        await load.run()
        await timer
        await sample("end")

    asyncio.run(go())
    (c0, s0, m0, la0), (c1, s1, m1, la1) = marks["start"], marks["end"]
    wall = load.elapsed
    busy, total = m1[0] - m0[0], m1[1] - m0[1]
    server_cpu = s1 - s0
    client_cpu = (c1.user - c0.user) + (c1.system - c0.system)
    return {
        "flow": load.flow,
        "requests": load.requests,
        "requests_per_s": round(load.requests / wall, 1),
        "submits_per_s": round(len(load.samples["submit"]) / wall, 1),
        "errors": len(load.errors),
        "error_examples": load.errors[:5],
        "annotators_with_empty_queue": load.empty_queue,
        "next_task": summarise(load.samples["next"]),
        "label_page": summarise(load.samples["page"]) if load.flow == "full" else None,
        "submit": summarise(load.samples["submit"]),
        "cpu": {
            "machine_busy_pct": round(100 * busy / total, 1) if total else None,
            "gunicorn_cpu_s": round(server_cpu, 1),
            "client_cpu_s": round(client_cpu, 1),
            "other_cpu_s": round(
                busy - server_cpu - client_cpu, 1
            ),  # PostgreSQL (ours and others') + other work
            "server_cpu_ms_per_request": round(1000 * server_cpu / max(1, load.requests), 1),
            "loadavg_start": la0,
            "loadavg_end": la1,
        },
    }


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = max(0, min(len(values) - 1, int(round(q / 100 * len(values) + 0.5)) - 1))  # nearest rank
    return round(values[k], 1)


def summarise(samples) -> dict:
    def dist(values):
        return {
            "p50": pct(values, 50),
            "p95": pct(values, 95),
            "p99": pct(values, 99),
            "max": round(max(values), 1) if values else None,
        }

    out = {
        "count": len(samples),
        "server_ms": dist([s[1] for s in samples]),
        "client_ms": dist([s[0] for s in samples]),
    }
    db = [s[2] for s in samples if s[2] is not None]
    if db:
        out["db_ms"] = dist(db)  # inside cursor.execute: queries, COMMIT, round trips (benchmarks wrapper)
        out["queries_p50"] = pct([s[3] for s in samples], 50)
        out["worker_cpu_ms"] = dist(
            [s[4] for s in samples]
        )  # Python CPU in the gunicorn worker (no waits, no DB)
    return out


# --- checks -------------------------------------------------------------------------------------


def integrity(project) -> dict:
    from django.db import connection

    per_task = """SELECT count(*) FROM annotator_task t LEFT JOIN (
            SELECT task_id, count(*) AS n, count(*) FILTER (WHERE state = 'done') AS done
            FROM annotator_slot WHERE project_id = %(p)s GROUP BY task_id) s ON s.task_id = t.id
        WHERE t.project_id = %(p)s AND """
    checks = {
        "tasks_over_overlap": per_task + "(t.completed > %(o)s OR coalesce(s.done, 0) > %(o)s)",
        "tasks_without_overlap_slots": per_task + "coalesce(s.n, 0) <> %(o)s",
        "task_completed_mismatch": per_task + "t.completed <> coalesce(s.done, 0)",
        "annotator_twice_on_a_task": """SELECT count(*) FROM (SELECT task_id, annotator_id FROM annotator_slot
            WHERE project_id = %(p)s AND annotator_id IS NOT NULL GROUP BY 1, 2 HAVING count(*) > 1) x""",
        "labels_without_done_slot": """SELECT count(*) FROM annotator_label l JOIN annotator_task t
            ON t.response_id = l.response_id AND t.kind = 'label' WHERE t.project_id = %(p)s
            AND l.status = 'submitted'
            AND NOT EXISTS (SELECT 1 FROM annotator_slot s WHERE s.task_id = t.id
                            AND s.annotator_id = l.annotator_id AND s.state = 'done')""",
        "done_slots_without_label": """SELECT count(*) FROM annotator_slot s
            JOIN annotator_task t ON t.id = s.task_id
            WHERE s.project_id = %(p)s AND s.state = 'done' AND NOT EXISTS (SELECT 1 FROM annotator_label l
            WHERE l.response_id = t.response_id AND l.annotator_id = s.annotator_id
            AND l.status = 'submitted')""",
    }
    out = {}
    with connection.cursor() as cur:
        for name, sql in checks.items():
            cur.execute(sql, {"p": project.pk, "o": project.overlap})
            out[name] = cur.fetchone()[0]
        cur.execute(
            """SELECT count(*) FROM annotator_label l JOIN annotator_task t ON t.response_id = l.response_id
                       WHERE t.project_id = %s AND l.status = 'submitted'""",
            [project.pk],
        )
        out["submitted_labels"] = cur.fetchone()[0]
        cur.execute(
            "SELECT count(*) FROM annotator_slot WHERE project_id = %s AND state = 'done'", [project.pk]
        )
        out["done_slots"] = cur.fetchone()[0]
        cur.execute(
            "SELECT count(*) FROM annotator_slot WHERE project_id = %s AND state = 'locked'", [project.pk]
        )
        out["locked_slots"] = cur.fetchone()[0]
    out["ok"] = out["submitted_labels"] == out["done_slots"] and not any(out[k] for k in checks)
    return out


def _query_kind(sql: str) -> str:
    up = sql.upper()
    if up.startswith("UPDATE") and '"LOCKED_UNTIL" <' in up:
        return "release_expired (UPDATE)"
    if up.startswith("UPDATE"):
        return "_lock (UPDATE of the picked slot)"
    if "COUNT(" in up:
        return "queue_size_by_kind (labelling page count)"
    if "SKIP LOCKED" in up and '"RESERVED_FOR_ID" = ' in up:
        return "next_task 1: reserved slots"
    if "SKIP LOCKED" in up and "SKIPPED_AT" in up:
        return "next_task 3: skipped tasks"
    if "SKIP LOCKED" in up:
        return "next_task 2: free pool pick"
    if '"LOCKED_UNTIL" >=' in up:
        return "current_slot (held lock)"
    return "other"


def explain(project, out_path: Path) -> list[dict]:
    """EXPLAIN ANALYZE every SELECT that next_task() and the labelling page's queue count run, in a
    rolled-back transaction."""
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction
    from django.db.models import Count
    from django.test.utils import CaptureQueriesContext

    from annotator import assignment
    from annotator.models import Slot, Task

    # The busiest annotator (most done slots), so the NOT EXISTS filters have rows to look at.
    user = (
        get_user_model()
        .objects.filter(memberships__project=project, username__startswith="qb-annotator-")
        .order_by("-id")
        .first()
    )
    busiest = (
        Slot.objects.filter(project=project, state=Slot.State.DONE)
        .values("annotator")
        .annotate(n=Count("id"))
        .order_by("-n")
        .first()
    )
    if busiest:
        user = get_user_model().objects.get(pk=busiest["annotator"])
    # Release any lock this user still holds, so next_task() runs the full pick, not the reload shortcut.
    Slot.objects.filter(project=project, annotator=user, state=Slot.State.LOCKED).update(
        state=Slot.State.FREE, annotator=None, locked_until=None
    )
    queries = []
    with CaptureQueriesContext(connection) as ctx:
        try:
            with transaction.atomic():
                slot = assignment.next_task(project, user, Task.Kind.LABEL)
                assert slot is not None
                assignment.queue_size_by_kind(project, user, Task.Kind.LABEL)
                raise RuntimeError("rollback")
        except RuntimeError:
            pass
    for q in ctx.captured_queries:
        sql = q["sql"]
        if sql.lstrip().upper().startswith(("SELECT", "UPDATE")) and "annotator_slot" in sql:
            queries.append(sql)
    findings, text = [], []
    for sql in queries:
        with transaction.atomic(), connection.cursor() as cur:
            cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
            plan = [row[0] for row in cur.fetchall()]
            transaction.set_rollback(True)
        exec_ms = next(
            (float(re.search(r"([0-9.]+) ms", p).group(1)) for p in plan if p.startswith("Execution Time")),
            None,
        )
        kind = _query_kind(sql)
        findings.append(
            {
                "query": sql[:160] + ("…" if len(sql) > 160 else ""),
                "what": kind,
                "execution_ms": exec_ms,
                "uses_slot_free_queue": any("slot_free_queue" in p for p in plan),
                "top_node": plan[0].strip()[:120],
            }
        )
        text.append(f"-- {kind}: {exec_ms} ms\n{sql}\n\n" + "\n".join(plan) + "\n")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("\n\n".join(text))
    return findings


# --- main ----------------------------------------------------------------------------------------


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_from_snapshot(argv: list[str], commit: str = "HEAD", script: str = "queue_bench.py"):
    """Re-run a benchmark script inside `git archive <commit>` under var/bench/, so that uncommitted edits
    others are making in the working tree (a half-written model file) cannot break the server
    mid-benchmark. The benchmarks' own files come from the working tree."""
    sha = subprocess.run(
        ["git", "rev-parse", "--verify", f"{commit}^{{commit}}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    src = ROOT / "var" / "bench" / f"src-{sha[:12]}"
    if not (src / "manage.py").exists():
        src.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", sha], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    (src / "benchmarks").mkdir(exist_ok=True)
    for path in Path(__file__).parent.glob("*.py"):
        (src / "benchmarks" / path.name).write_bytes(path.read_bytes())
    env = {
        **os.environ,
        "QUEUE_BENCH_RESULTS": str(ROOT / "benchmarks" / "results"),
        "QUEUE_BENCH_VAR": str(OUT_VAR),
        "QUEUE_BENCH_COMMIT": sha,
    }
    print(f"running on a snapshot of HEAD {sha[:12]} in {src}", file=sys.stderr, flush=True)
    return subprocess.run(
        [sys.executable, str(src / "benchmarks" / script), "--code", "here", *argv], env=env, cwd=src
    ).returncode  # cwd too: Celery's app puts the cwd on sys.path


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--annotators", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--workers", type=int, default=3, help="gunicorn sync workers (the machine is small)")
    parser.add_argument("--database-url", default=None)
    parser.add_argument(
        "--flows",
        default="queue,full",
        help="comma-separated, run in order on one server: queue (next -> submit) and full "
        "(next -> labelling page -> submit)",
    )
    parser.add_argument(
        "--no-db-timing",
        action="store_true",
        help="serve config.wsgi itself, without the db;dur Server-Timing wrapper",
    )
    parser.add_argument(
        "--reuse", action="store_true", help="keep the database if this size is already seeded"
    )
    parser.add_argument(
        "--code",
        choices=["head", "here"],
        default="head",
        help="head: run on a `git archive` snapshot of --commit (default); here: this tree as it is",
    )
    parser.add_argument("--commit", default="HEAD", help="the commit to snapshot (default HEAD)")
    args = parser.parse_args()
    if args.code == "head":
        argv = [a for a in sys.argv[1:] if not a.startswith(("--code=", "--commit="))]
        for flag in ("--code", "--commit"):
            if flag in argv:
                i = argv.index(flag)
                del argv[i : i + 2]
        sys.exit(run_from_snapshot(argv, args.commit))

    url = (args.database_url or os.environ.get("BENCH_DATABASE_URL_QUEUE") or DEFAULT_DB).format(
        items=args.items
    )
    os.environ.update(bench_env(url))
    setup_django(url, migrate=False)  # only to find out whether it can be reused
    from django.db import connections

    project, timings = None, {"reused_database": False}
    try:
        from annotator.models import Project  # noqa: F401

        project = find_seeded(args.items) if args.reuse else None
    except Exception:
        project = None
    connections.close_all()
    if project is None:
        setup_django(url, fresh=True)
        t0 = time.perf_counter()
        print(f"seeding {args.items:,} items …", file=sys.stderr, flush=True)
        project, seed_t = seed(args.items, max(args.annotators, 50))
        timings.update(seed_t)
        print(f"seeded in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    else:
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        timings["reused_database"] = True
    sessions = annotator_sessions(project, args.annotators)
    connections.close_all()

    from annotator.models import Slot, TaxonomyCategory

    leaves = list(
        TaxonomyCategory.objects.filter(project=project, parent__isnull=False).values_list("pk", flat=True)
    )
    connections.close_all()
    log = OUT_VAR / f"queue-gunicorn-{args.items}.log"
    flows = {}
    proc, port = start_server(url, args.workers, log, db_timing=not args.no_db_timing)
    try:
        for flow in args.flows.split(","):
            print(
                f"load: {flow} flow, {args.annotators} annotators, "
                f"{args.warmup:g} s warm-up + {args.seconds:g} s",
                file=sys.stderr,
                flush=True,
            )
            load = Load(port, project.slug, sessions, leaves, args.seconds, args.warmup, flow=flow)
            flows[flow] = run_measured(load, proc.pid)
    finally:
        stop_server(proc)

    print("integrity check and EXPLAIN ANALYZE …", file=sys.stderr, flush=True)
    integ = integrity(project)
    findings = explain(project, OUT_VAR / f"queue_explain_{args.items}.txt")
    main_flow = flows.get("full") or next(iter(flows.values()))
    figures = {
        "database": "postgresql",
        "database_url": url.split("@")[-1],
        "items": args.items,
        "overlap": OVERLAP,
        "annotators": args.annotators,
        "server": f"gunicorn config.wsgi{'' if args.no_db_timing else ' (wrapped to time queries)'}, "
        f"{args.workers} sync workers, loopback, DEBUG=0, no think time",
        "seconds": args.seconds,
        "warmup_s": args.warmup,
        # The brief's figures: the full browser loop (next -> labelling page -> submit).
        **{k: main_flow[k] for k in ("requests_per_s", "errors", "next_task", "label_page", "submit")},
        "flows": flows,
        "free_slots_after": Slot.objects.filter(project=project, state=Slot.State.FREE).count(),
        "integrity": integ,
        "explain_next_task": findings,
        **timings,
        "notes": "server_ms = Server-Timing app;dur (the whole Django stack from the first middleware); "
        "client_ms = connect to last byte on loopback, so it includes waiting for a free gunicorn worker. "
        "Client, gunicorn and PostgreSQL share the machine's cores with other work: see each flow's cpu "
        "figures (server_cpu_ms_per_request far below server_ms p50 = waiting for a core).",
    }
    figures["commit"] = os.environ.get("QUEUE_BENCH_COMMIT") or "working tree"
    report(f"queue_{args.items}", figures)
    results = os.environ.get("QUEUE_BENCH_RESULTS")
    if results:  # running in the snapshot: keep the result in the real tree too
        name = f"queue_{args.items}.json"
        Path(results, name).write_text((ROOT / "benchmarks" / "results" / name).read_text())
    if any(f["errors"] for f in flows.values()) or not integ["ok"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
