"""A bounded load run at scale: 50 annotators and 5 leads against gunicorn, then an integrity check in SQL.

    python benchmarks/load_run.py [--conversations 1000000] [--seconds 60] [--warmup 5] [--annotators 50]
                                  [--leads 5] [--workers 4] [--compare-share 0.2] [--database NAME]

1. The project of benchmarks/seed_scale.py (1M conversations, 2M responses, 1M labels, 200k
   preferences, 3M tasks, 6M slots), reused when that size is already seeded, seeded otherwise.
2. A private redis-server on a free loopback port (`--save "" --appendonly no`) as the Django cache
   (and broker URL), as in production, and gunicorn with `--workers` sync workers on loopback, DEBUG=0,
   run from a `git archive HEAD` snapshot (benchmarks/queue_bench.py explains why).
3. For `--seconds` (after `--warmup`), with no think time:
   - each annotator loops: GET next → GET the task page → POST submit (the page's CSRF token), a
     labelling task (verdict, categories, a corrected tool call now and then) or, `--compare-share`
     of the time, a pairwise comparison (choice, the page's left/right);
   - each lead opens the dashboard pages in turn (overview, annotators, agreement, models, cases,
     comparisons) and the review queue, one page a second. The dashboards share Redis-cached
     aggregates (DASHBOARD_CACHE_SECONDS): the first visit of a page computes it, cold.
   Every request's client latency and the server's app/db/cpu Server-Timing are kept per endpoint.
4. Integrity in SQL afterwards: no task over its overlap, slots and task counters agree, no
   annotator twice on a task, no duplicate label per (annotator, response) nor preference per
   (annotator, pair), every done slot has its submitted work and the reverse, no orphaned or expired
   lock, at most one lock per annotator and kind, and as many new labels / preferences as submits
   answered 302.

Prints one JSON line and writes benchmarks/results/load_run_<N>.json. Exit status 1 on any error or
failed check.
"""

import argparse
import asyncio
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import queue_bench as qb  # noqa: E402
from benchmarks import seed_scale  # noqa: E402
from benchmarks._common import ROOT, report  # noqa: E402

OUT_VAR = Path(os.environ.get("QUEUE_BENCH_VAR") or ROOT / "var" / "bench")
DASHBOARDS = [
    "dashboards/",
    "dashboards/annotators/",
    "dashboards/agreement/",
    "dashboards/models/",
    "dashboards/cases/",
    "dashboards/comparisons/",
    "review/",
]
LEFT_SIDE_RE = re.compile(rb'name="left_side" value="([ab])"')


def sessions(project, prefix: str, count: int) -> list[str]:
    """Fresh database sessions for the project's users whose name starts with prefix (what auth.login()
    stores)."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
    from django.contrib.sessions.backends.db import SessionStore

    users = list(
        get_user_model()
        .objects.filter(memberships__project=project, username__startswith=prefix)
        .order_by("username")[:count]
    )
    assert len(users) == count, f"{len(users)} users named {prefix}*, {count} asked for"
    keys = []
    for user in users:
        s = SessionStore()
        s[SESSION_KEY] = str(user.pk)
        s[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        s[HASH_SESSION_KEY] = user.get_session_auth_hash()
        s.create()
        keys.append(s.session_key)
    return keys


class PrivateRedis:
    """A throwaway redis-server on a free loopback port (never the shared one)."""

    def __init__(self, port: int | None = None):
        self.port = port or qb.free_port()
        self.dir = tempfile.mkdtemp(prefix="badcase-redis-")
        self.proc = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                if redis.Redis(port=self.port, socket_connect_timeout=0.5).ping():
                    return self
            except redis.exceptions.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()  # its pid only: the process we started
            self.proc.wait()
        self.proc = None

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


async def request(method, port, path, cookies, body=b"", content_type="", timeout=150.0):
    """qb.http, but a connection the server drops (a worker killed by gunicorn's timeout) or a request that
    outlives `timeout` is an answer with status 0, counted as an error instead of ending the run."""
    started = time.perf_counter()
    try:
        return await asyncio.wait_for(qb.http(method, port, path, cookies, body, content_type), timeout)
    except (TimeoutError, OSError, IndexError, ValueError) as exc:
        return 0, {}, f"no answer: {type(exc).__name__}".encode(), 1000 * (time.perf_counter() - started)


class LoadRun:
    def __init__(self, port, slug, annotators, leads, leaves, seconds, warmup, compare_share, seed=11):
        self.port, self.slug, self.annotators, self.leads, self.leaves = port, slug, annotators, leads, leaves
        self.seconds, self.warmup, self.compare_share, self.seed = seconds, warmup, compare_share, seed
        self.samples: dict[str, list] = {}
        self.errors: list[str] = []
        self.empty_queue = 0
        self.submitted = {"label": 0, "compare": 0}  # every submit answered 302, warm-up included

    def record(self, endpoint, started, ms, headers, ok, what):
        if started < self.t_measure:
            return
        if not ok:
            self.errors.append(f"{endpoint}: {what}")
            return
        timing = qb._server_ms(headers)
        if timing[0] is None:
            self.errors.append(f"{endpoint}: no Server-Timing header")
            return
        self.samples.setdefault(endpoint, []).append((ms, *timing))

    def label_form(self, rng, token):
        fields = {
            "csrfmiddlewaretoken": token,
            "time_spent_ms": str(rng.randint(3000, 90000)),
            "note": "",
            "correction_content": "",
            "correction_tool_calls": "",
            "verdict": "reasonable",
        }
        extra = []
        roll = rng.random()
        if roll >= 0.65:
            fields.update(verdict="unreasonable", note="load-run note")
            extra.append(("categories", str(rng.choice(self.leaves))))
            if roll >= 0.9:
                quantity = rng.randint(1, 9)
                fields["correction_tool_calls"] = (
                    f'[{{"name": "create_order", "arguments": {{"sku": "A-100", "quantity": {quantity}}}}}]'
                )
        return list(fields.items()) + extra

    async def annotator(self, i: int, key: str):
        cookies = {"sessionid": key}
        rng = random.Random(self.seed * 1000 + i)
        await asyncio.sleep(i * 0.02)
        while time.perf_counter() < self.t_end:
            kind = "compare" if rng.random() < self.compare_share else "label"
            next_path = f"/p/{self.slug}/next/" + ("?kind=compare" if kind == "compare" else "")
            started = time.perf_counter()
            status, headers, body, ms = await request("GET", self.port, next_path, cookies)
            qb._update_cookies(cookies, headers)
            location = (headers.get("location") or [""])[0]
            m = qb.TASK_RE.search(location.split("?")[0])
            if status == 200 and not m:
                self.empty_queue += 1
                await asyncio.sleep(0.5)
                continue
            self.record(
                f"next_{kind}",
                started,
                ms,
                headers,
                status == 302 and m is not None,
                f"{status} {location!r}",
            )
            if not m:
                await asyncio.sleep(0.05)
                continue
            task_path = f"/p/{self.slug}/tasks/{m.group(1)}/"
            started = time.perf_counter()
            status, headers, body, ms = await request("GET", self.port, task_path, cookies)
            qb._update_cookies(cookies, headers)
            token = qb.CSRF_RE.search(body)
            ok = status == 200 and token is not None and b'id="task-form"' in body
            self.record(f"{kind}_page", started, ms, headers, ok, f"{task_path} {status}")
            if not ok:
                continue
            if kind == "label":
                form = self.label_form(rng, token.group(1).decode())
            else:
                side = LEFT_SIDE_RE.search(body)
                form = [
                    ("csrfmiddlewaretoken", token.group(1).decode()),
                    ("left_side", side.group(1).decode() if side else "a"),
                    ("choice", rng.choice(["a", "a", "b", "b", "tie", "both_bad"])),
                    ("reason", ""),
                    ("time_spent_ms", str(rng.randint(3000, 60000))),
                ]
            started = time.perf_counter()
            status, headers, body, ms = await request(
                "POST",
                self.port,
                task_path + "submit/",
                cookies,
                urlencode(form).encode(),
                "application/x-www-form-urlencoded",
            )
            qb._update_cookies(cookies, headers)
            location = (headers.get("location") or [""])[0]
            ok = status == 302 and location.startswith(f"/p/{self.slug}/next/")
            if ok:
                self.submitted[kind] += 1
            self.record(
                f"submit_{kind}",
                started,
                ms,
                headers,
                ok,
                f"{task_path} {status} {location!r} {body[:200]!r}",
            )

    async def lead(self, i: int, key: str):
        cookies = {"sessionid": key}
        await asyncio.sleep(0.5 + i * 0.3)
        k = i
        while time.perf_counter() < self.t_end:
            page = DASHBOARDS[k % len(DASHBOARDS)]
            k += 1
            started = time.perf_counter()
            status, headers, body, ms = await request("GET", self.port, f"/p/{self.slug}/{page}", cookies)
            qb._update_cookies(cookies, headers)
            name = "review" if page == "review/" else "dash_" + (page.split("/")[1] or "overview")
            self.record(
                name, started, ms, headers, status == 200, f"{status} after {ms / 1000:.0f} s {body[:60]!r}"
            )
            await asyncio.sleep(1.0)

    async def run(self):
        self.t_measure = time.perf_counter() + self.warmup
        self.t_end = self.t_measure + self.seconds
        await asyncio.gather(
            *(self.annotator(i, k) for i, k in enumerate(self.annotators)),
            *(self.lead(i, k) for i, k in enumerate(self.leads)),
        )
        self.elapsed = time.perf_counter() - self.t_measure


# --- integrity ---------------------------------------------------------------------------------

CHECKS = {
    "tasks_over_overlap": """SELECT count(*) FROM annotator_task t
        LEFT JOIN (SELECT task_id, count(*) FILTER (
        WHERE state = 'done') AS done FROM annotator_slot WHERE project_id = %(p)s GROUP BY task_id) s
        ON s.task_id = t.id
        WHERE t.project_id = %(p)s AND (t.completed > %(o)s OR coalesce(s.done, 0) > %(o)s)""",
    "task_completed_mismatch": """SELECT count(*) FROM annotator_task t
        LEFT JOIN (SELECT task_id, count(*) FILTER (
        WHERE state = 'done') AS done FROM annotator_slot WHERE project_id = %(p)s GROUP BY task_id) s
        ON s.task_id = t.id
        WHERE t.project_id = %(p)s AND t.completed <> coalesce(s.done, 0)""",
    "tasks_without_overlap_slots": """SELECT count(*) FROM annotator_task t
        LEFT JOIN (SELECT task_id, count(*) AS n
        FROM annotator_slot WHERE project_id = %(p)s GROUP BY task_id) s ON s.task_id = t.id
        WHERE t.project_id = %(p)s AND coalesce(s.n, 0) <> %(o)s""",
    "annotator_twice_on_a_task": """SELECT count(*) FROM (SELECT task_id, annotator_id FROM annotator_slot
        WHERE project_id = %(p)s AND annotator_id IS NOT NULL GROUP BY 1, 2 HAVING count(*) > 1) x""",
    "duplicate_labels": """SELECT count(*) FROM (SELECT 1 FROM annotator_label WHERE project_id = %(p)s
        GROUP BY response_id, annotator_id HAVING count(*) > 1) x""",
    "duplicate_preferences": """SELECT count(*) FROM (SELECT 1 FROM annotator_preference f
        JOIN annotator_task t
        ON t.kind = 'compare' AND t.response_id = f.response_a_id AND t.response_b_id = f.response_b_id
        WHERE t.project_id = %(p)s GROUP BY f.annotator_id, f.response_a_id, f.response_b_id
        HAVING count(*) > 1) x""",
    "done_label_slots_without_label": """SELECT count(*) FROM annotator_slot s
        JOIN annotator_task t ON t.id = s.task_id
        WHERE s.project_id = %(p)s AND t.kind = 'label' AND s.state = 'done' AND NOT EXISTS (SELECT 1 FROM
        annotator_label l WHERE l.response_id = t.response_id AND l.annotator_id = s.annotator_id
        AND l.status <> 'draft')""",
    "labels_without_done_slot": """SELECT count(*) FROM annotator_label l
        JOIN annotator_task t ON t.kind = 'label'
        AND t.response_id = l.response_id WHERE l.project_id = %(p)s AND l.status <> 'draft' AND NOT EXISTS (
        SELECT 1 FROM annotator_slot s WHERE s.task_id = t.id AND s.annotator_id = l.annotator_id
        AND s.state = 'done')""",
    "done_compare_slots_without_preference": """SELECT count(*) FROM annotator_slot s JOIN annotator_task t
        ON t.id = s.task_id WHERE s.project_id = %(p)s AND t.kind = 'compare' AND s.state = 'done'
        AND NOT EXISTS (
        SELECT 1 FROM annotator_preference f WHERE f.response_a_id = t.response_id
        AND f.response_b_id = t.response_b_id
        AND f.annotator_id = s.annotator_id AND f.status <> 'draft')""",
    "preferences_without_done_slot": """SELECT count(*) FROM annotator_preference f JOIN annotator_task t
        ON t.kind = 'compare' AND t.response_id = f.response_a_id AND t.response_b_id = f.response_b_id
        WHERE t.project_id = %(p)s AND f.status <> 'draft' AND NOT EXISTS (SELECT 1 FROM annotator_slot s
        WHERE s.task_id = t.id AND s.annotator_id = f.annotator_id AND s.state = 'done')""",
    "expired_locks_held": """SELECT count(*) FROM annotator_slot WHERE project_id = %(p)s AND state = 'locked'
        AND locked_until < now()""",
    "malformed_slots": """SELECT count(*) FROM annotator_slot WHERE project_id = %(p)s AND (
        (state = 'locked' AND (annotator_id IS NULL OR locked_until IS NULL))
        OR (state = 'free' AND (annotator_id IS NOT NULL OR locked_until IS NOT NULL))
        OR (state = 'done' AND annotator_id IS NULL))""",
    "annotators_with_several_locks_per_kind": """SELECT count(*) FROM (SELECT s.annotator_id, t.kind
        FROM annotator_slot s
        JOIN annotator_task t ON t.id = s.task_id WHERE s.project_id = %(p)s AND s.state = 'locked'
        GROUP BY 1, 2 HAVING count(*) > 1) x""",
}


def totals(project) -> dict:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM annotator_label WHERE project_id = %s AND status <> 'draft'", [project.pk]
        )
        labels = cur.fetchone()[0]
        cur.execute(
            """SELECT count(*) FROM annotator_preference f JOIN annotator_task t ON t.kind = 'compare'
            AND t.response_id = f.response_a_id AND t.response_b_id = f.response_b_id
            WHERE t.project_id = %s AND f.status <> 'draft'""",
            [project.pk],
        )
        prefs = cur.fetchone()[0]
        cur.execute(
            "SELECT state, count(*) FROM annotator_slot WHERE project_id = %s GROUP BY 1", [project.pk]
        )
        slots = dict(cur.fetchall())
    return {"labels": labels, "preferences": prefs, "slots": slots}


def rollup_checks(project) -> dict:
    """The dashboard roll-ups written under load against the rows they count (each figure: the difference,
    0 = exact)."""
    from django.db.models import Sum

    from annotator.dashboards.filters import rollup_sum
    from annotator.models import (
        PAIR_CELLS,
        ROLLUP_CELLS,
        ROLLUP_STATUSES,
        AgreementPair,
        AgreementPairDay,
        AnnotatorSeconds,
        AnnotatorSecondsDay,
        Label,
        LabelDay,
        Preference,
        ResponseJudges,
    )

    def total(model, prefix, cells=ROLLUP_CELLS):
        return model.objects.filter(project=project).aggregate(t=rollup_sum(list(cells), prefix))["t"] or 0

    labels = Label.objects.filter(project=project, status__in=ROLLUP_STATUSES)
    prefs = Preference.objects.filter(response_a__conversation__project=project, status__in=ROLLUP_STATUSES)
    counted = labels.count()
    return {
        "rollup_label_days_vs_labels": total(LabelDay, "n") - counted,
        "rollup_judges_vs_labels": (
            ResponseJudges.objects.filter(project=project).aggregate(t=Sum("n"))["t"] or 0
        )
        - counted,
        "rollup_seconds_vs_timed_labels": total(AnnotatorSeconds, "n")
        - labels.filter(time_spent_ms__gt=0).count(),
        "rollup_seconds_vs_timed_comparisons": total(AnnotatorSeconds, "p")
        - prefs.filter(time_spent_ms__gt=0).count(),
        "rollup_seconds_days_vs_all_time": (total(AnnotatorSecondsDay, "n") + total(AnnotatorSecondsDay, "p"))
        - (total(AnnotatorSeconds, "n") + total(AnnotatorSeconds, "p")),
        "rollup_pair_days_vs_all_time": total(AgreementPairDay, "n", PAIR_CELLS)
        - total(AgreementPair, "n", PAIR_CELLS),
    }


def integrity(project, before: dict, submitted: dict) -> dict:
    from django.db import connection

    out = {}
    with connection.cursor() as cur:
        cur.execute("SET work_mem = '256MB'")
        for name, sql in CHECKS.items():
            cur.execute(sql, {"p": project.pk, "o": project.overlap})
            out[name] = cur.fetchone()[0]
    rollup = rollup_checks(project)
    out.update(rollup)
    after = totals(project)
    out["new_labels"] = after["labels"] - before["labels"]
    out["new_preferences"] = after["preferences"] - before["preferences"]
    out["label_submits_302"], out["compare_submits_302"] = submitted["label"], submitted["compare"]
    out["slots_after"] = after["slots"]
    out["ok"] = (
        not any(out[k] for k in CHECKS)
        and not any(rollup.values())
        and out["new_labels"] == submitted["label"]
        and out["new_preferences"] == submitted["compare"]
    )
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--conversations", type=int, default=1_000_000)
    parser.add_argument("--database", default=None)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--annotators", type=int, default=50)
    parser.add_argument("--leads", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers")
    parser.add_argument("--compare-share", type=float, default=0.2)
    parser.add_argument("--code", choices=["head", "here"], default="head")
    parser.add_argument("--commit", default="HEAD")
    args = parser.parse_args()
    if args.code == "head":
        argv = [a for a in sys.argv[1:] if not a.startswith(("--code=", "--commit="))]
        for flag in ("--code", "--commit"):
            if flag in argv:
                i = argv.index(flag)
                del argv[i : i + 2]
        sys.exit(qb.run_from_snapshot(argv, args.commit, script="load_run.py"))

    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    url = seed_scale.database_url(args.database or seed_scale.default_database(args.conversations))
    redis = PrivateRedis().start()
    os.environ.update(qb.bench_env(url))
    os.environ["REDIS_URL"] = (
        redis.url
    )  # before Django reads its settings: cache and broker on the private Redis
    proc = None
    try:
        project, seeded = seed_scale.ensure(args.conversations, args.database, reuse=True, log=log)
        from django.db import connections

        from annotator.models import TaxonomyCategory

        annotator_keys = sessions(project, "scale-annotator-", args.annotators)
        lead_keys = sessions(project, "scale-lead-", args.leads)
        leaves = list(
            TaxonomyCategory.objects.filter(project=project, parent__isnull=False).values_list(
                "pk", flat=True
            )
        )
        before = totals(project)
        connections.close_all()
        proc, port = qb.start_server(url, args.workers, OUT_VAR / f"load-gunicorn-{args.conversations}.log")
        log(
            f"load: {args.annotators} annotators + {args.leads} leads, "
            f"{args.warmup:g} s warm-up + {args.seconds:g} s"
        )
        load = LoadRun(
            port,
            project.slug,
            annotator_keys,
            lead_keys,
            leaves,
            args.seconds,
            args.warmup,
            args.compare_share,
        )
        marks = {}

        async def go():
            async def at_measure():
                await asyncio.sleep(load.warmup)
                marks["start"] = (os.times(), qb.group_cpu_s(proc.pid), qb.machine_cpu(), qb.loadavg())

            timer = asyncio.create_task(at_measure())
            await load.run()
            await timer
            marks["end"] = (os.times(), qb.group_cpu_s(proc.pid), qb.machine_cpu(), qb.loadavg())

        asyncio.run(go())
    finally:
        if proc is not None:
            qb.stop_server(proc)
        redis.close()
    from django.db import connection

    with (
        connection.cursor() as cur
    ):  # queries of killed gunicorn workers still running on this (private) database
        cur.execute("""SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity
                       WHERE datname = current_database()
                       AND pid <> pg_backend_pid() AND state = 'active'""")
        orphaned_queries = cur.fetchone()[0]
    log("integrity check …")
    checks = integrity(project, before, load.submitted)
    (c0, s0, m0, la0), (c1, s1, m1, la1) = marks["start"], marks["end"]
    requests = sum(len(v) for v in load.samples.values()) + len(load.errors)
    busy, total = m1[0] - m0[0], m1[1] - m0[1]
    submits = sum(len(load.samples.get(k, [])) for k in ("submit_label", "submit_compare"))
    figures = {
        "database": "postgresql",
        **seeded,
        "annotators": args.annotators,
        "leads": args.leads,
        "compare_share": args.compare_share,
        "server": "gunicorn (benchmarks.queue_bench:application = config.wsgi + db timing), "
        f"{args.workers} sync workers, loopback, DEBUG=0; private redis-server as cache",
        "seconds": args.seconds,
        "warmup_s": args.warmup,
        "requests": requests,
        "requests_per_s": round(requests / load.elapsed, 1),
        "submits_per_s": round(submits / load.elapsed, 1),
        "errors": len(load.errors),
        "error_examples": load.errors[:5],
        "empty_queue_pages": load.empty_queue,
        "endpoints": {name: qb.summarise(samples) for name, samples in sorted(load.samples.items())},
        "cpu": {
            "machine_busy_pct": round(100 * busy / total, 1) if total else None,
            "gunicorn_cpu_s": round(s1 - s0, 1),
            "client_cpu_s": round((c1.user - c0.user) + (c1.system - c0.system), 1),
            "loadavg_start": la0,
            "loadavg_end": la1,
        },
        "orphaned_queries_cancelled_after_the_run": orphaned_queries,
        "integrity": checks,
        "commit": os.environ.get("QUEUE_BENCH_COMMIT") or "working tree",
        "notes": "client_ms: connect to last byte on loopback (includes waiting for a free gunicorn worker); "
        "server_ms: the app's own Server-Timing. Annotators have no think time. Dashboard pages share "
        "Redis-cached aggregates, so their p50 is a cache hit and the cold computations show in p95/max.",
    }
    name = f"load_run_{args.conversations}"
    report(name, figures)
    results = os.environ.get("QUEUE_BENCH_RESULTS")
    if results:  # running in the snapshot: keep the result in the real tree too
        Path(results, f"{name}.json").write_text(
            (ROOT / "benchmarks" / "results" / f"{name}.json").read_text()
        )
    if load.errors or not checks["ok"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
