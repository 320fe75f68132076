"""Fault injection with real processes: killed worker processes, a lost Redis, a restarted PostgreSQL.

    python benchmarks/faults.py [--only export_kill,import_kill,redis_outage,postgres_restart]

Everything runs on private infrastructure so nobody else's work is touched: a redis-server of its
own on a free loopback port (the broker and the cache), the database badcase_faults next to
BENCH_DATABASE_URL, and for the PostgreSQL restart a throwaway cluster (initdb as the `postgres`
user into a temporary folder, port 5491, socket in that folder). The web side is gunicorn
(benchmarks/queue_bench.py's `start_server`), the workers are `celery -A config worker` processes
with the prefork pool, as in production. The project is benchmarks/seed_scale.py's, small.

* export_kill / import_kill: SIGKILL the pool process running a snapshot build / a JSONL import
  (the OOM killer's way). Nothing is re-sent by hand: acks_late + reject_on_worker_lost put the
  message back and the worker's next pool process takes it over. Checked: the snapshot is never
  `ready` with a partial file and ends ready with the bytes of an uninterrupted build; the import's
  committed rows match its recorded offset at the kill and end with every line exactly once.
* redis_outage: Redis killed while 5 annotators work through gunicorn and a lead opens dashboards:
  every request must succeed; an import, a snapshot build and a training job created meanwhile fail
  with the reason on their row; Redis restarted (empty); `manage.py requeue_waiting` queues them
  again and the worker, which kept running through the outage, finishes the import and the build.
* postgres_restart: `pg_ctl restart -m fast` under gunicorn (persistent connections, DB_CONN_MAX_AGE
  600) and a worker: the requests after it must all succeed (CONN_HEALTH_CHECKS), and an import
  queued after it must finish, with no process restarted.

The killed training job (reaped by heartbeat, resumed to the end) is tests/test_faults.py, on the
tiny test model. Prints one JSON line and writes benchmarks/results/faults.json.
"""

import argparse
import asyncio
import json
import os
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
from benchmarks._common import ROOT, report, setup_django  # noqa: E402
from benchmarks.load_run import PrivateRedis, sessions  # noqa: E402

VAR = ROOT / "var" / "bench" / "faults"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
# The seeded annotators disagree on ~10 % of items; those conflicts block an SFT build by default (warn here).
SFT_SPEC = {
    "kind": "sft",
    "filters": {"include_reasonable": True},
    "audit": {"checks": {"label_conflict": "warn"}},
}
SCENARIOS = ["export_kill", "import_kill", "redis_outage", "postgres_restart"]


def log(line: str):
    print(line, file=sys.stderr, flush=True)


def wait_for(predicate, timeout=120.0, interval=0.1, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}")


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


class Worker:
    """`celery -A config worker` (prefork, one pool process) on the given queues."""

    def __init__(self, queues: str, env: dict, name: str):
        self.log = VAR / f"worker-{name}.log"
        self.out = open(self.log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-Q",
                queues,
                "-c",
                "1",
                "--pool=prefork",
                "--without-gossip",
                "--without-mingle",
                "--loglevel=INFO",
                "-n",
                f"faults-{name}@%h",
            ],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=self.out,
            stderr=subprocess.STDOUT,
        )

    def pool_process(self) -> int:
        return wait_for(lambda: (children(self.proc.pid) or [None])[0], what="the pool process")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()


# --- the scenarios -------------------------------------------------------------------------------


def upload(project, lines: int, offset: int = 0):
    from django.core.files.base import ContentFile

    from annotator.models import ImportJob

    records = []
    for i in range(offset, offset + lines):
        records.append(
            json.dumps(
                {
                    "external_id": f"fault-{i}",
                    "tools": seed_scale.TOOLS,
                    "messages": [
                        {"role": "system", "content": "You are a sales assistant."},
                        {"role": "user", "content": f"Is B-{i} in stock?"},
                    ],
                    "responses": [
                        {
                            "model": "agent-v1",
                            "raw": '<tool_call>{"name": "check_inventory", "arguments": '
                            f'{{"sku": "B-{i}"}}}}</tool_call>',
                        }
                    ],
                }
            )
        )
    data = ("\n".join(records) + "\n").encode()
    job = ImportJob(project=project, original_name=f"fault-{offset}.jsonl", size_bytes=len(data))
    job.file.save(job.original_name, ContentFile(data), save=False)
    job.save()
    return job, data


def export_kill(project, admin, env) -> dict:
    from jobs import lifecycle
    from training.models import DatasetSnapshot
    from training.snapshots.build import build_snapshot, create_snapshot
    from training.snapshots.storage import file_name_for, media_path

    spec = SFT_SPEC
    worker = Worker("exports", {**env, "DATASET_EXPORT_CHUNK_SIZE": "1"}, "export")
    try:
        snapshot = create_snapshot(project, admin, spec, start=False)
        final = media_path(file_name_for(snapshot))
        lifecycle.enqueue(snapshot)  # autocommit: sent at once
        wait_for(
            lambda: DatasetSnapshot.objects.filter(
                pk=snapshot.pk, status="running", rows_done__gt=0
            ).exists(),
            interval=0.05,
            what="the build to write rows",
        )
        victim = worker.pool_process()
        os.kill(victim, 9)
        at_kill = DatasetSnapshot.objects.get(pk=snapshot.pk)
        partial = {
            "status": at_kill.status,
            "rows_done": at_kill.rows_done,
            "rows_total": at_kill.rows_total,
            "final_file_exists": final.exists(),
        }
        wait_for(
            lambda: DatasetSnapshot.objects.get(pk=snapshot.pk).finished, timeout=300, what="the rebuild"
        )
    finally:
        worker.stop()
    snapshot.refresh_from_db()
    reference = build_snapshot(create_snapshot(project, admin, spec, start=False).pk)
    ok = (
        partial["status"] == "running"
        and not partial["final_file_exists"]
        and snapshot.status == "ready"
        and snapshot.attempts == 2
        and snapshot.row_count == reference.row_count
        and snapshot.sha256 == reference.sha256
        and not list(final.parent.glob("*.tmp"))
    )
    return {
        "ok": ok,
        "killed": "pool process (SIGKILL) mid-stream; redelivered by the broker, not by hand",
        "at_kill": partial,
        "final": {
            "status": snapshot.status,
            "attempts": snapshot.attempts,
            "rows": snapshot.row_count,
            "same_sha256_as_uninterrupted_build": snapshot.sha256 == reference.sha256,
        },
    }


def import_kill(project, env) -> dict:
    from django.db import connection, transaction

    from annotator.models import Conversation, ImportJob, ModelResponse
    from jobs import lifecycle

    n = 3000
    before = Conversation.objects.filter(project=project).count()
    worker = Worker("default", {**env, "IMPORT_BATCH_SIZE": "10"}, "import")
    try:
        job, data = upload(project, n)
        lifecycle.enqueue(job)
        wait_for(
            lambda: ImportJob.objects.filter(pk=job.pk, conversations_created__gt=0).exists(),
            interval=0.02,
            what="a committed batch",
        )
        os.kill(worker.pool_process(), 9)
        # The job row and the rows in one snapshot: the redelivered attempt may already be importing on.
        with transaction.atomic():
            with connection.cursor() as cur:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            at = ImportJob.objects.get(pk=job.pk)
            rows_now = Conversation.objects.filter(project=project).count() - before
        at_kill = {
            "status": at.status,
            "conversations_created": at.conversations_created,
            "lines_read": at.lines_read,
            "rows_in_database": rows_now,
            "offset_on_a_line_boundary": data[: at.committed_offset].count(b"\n") == at.lines_read,
        }
        wait_for(lambda: ImportJob.objects.get(pk=job.pk).finished, timeout=300, what="the resumed import")
    finally:
        worker.stop()
    job.refresh_from_db()
    ids = Conversation.objects.filter(project=project, external_id__startswith="fault-")
    final = {
        "status": job.status,
        "attempts": job.attempts,
        "conversations_created": job.conversations_created,
        "rows": ids.count(),
        "distinct_external_ids": ids.values("external_id").distinct().count(),
        "responses": ModelResponse.objects.filter(conversation__in=ids).count(),
        "duplicates": job.duplicates,
    }
    consistent_at_kill = (
        at_kill["rows_in_database"] == at_kill["conversations_created"]
        and at_kill["offset_on_a_line_boundary"]
        and at_kill["status"] != "done"
    )
    ok = (
        consistent_at_kill
        and final["status"] == "done"
        and final["rows"] == final["distinct_external_ids"] == n
        and final["responses"] == n
        and final["conversations_created"] == n
        and job.attempts >= 2
    )
    return {
        "ok": ok,
        "killed": "pool process (SIGKILL) mid-file; redelivered by the broker",
        "lines": n,
        "at_kill": at_kill,
        "final": final,
    }


async def annotate(port, slug, key, rounds: int, errors: list, leaves: list[int]):
    cookies = {"sessionid": key}
    done = 0
    for _ in range(rounds):
        status, headers, _, _ = await qb.http("GET", port, f"/p/{slug}/next/", cookies)
        qb._update_cookies(cookies, headers)
        m = qb.TASK_RE.search((headers.get("location") or [""])[0])
        if status != 302 or not m:
            errors.append(f"next {status}")
            continue
        path = f"/p/{slug}/tasks/{m.group(1)}/"
        status, headers, body, _ = await qb.http("GET", port, path, cookies)
        qb._update_cookies(cookies, headers)
        token = qb.CSRF_RE.search(body)
        if status != 200 or not token:
            errors.append(f"page {status}")
            continue
        form = [
            ("csrfmiddlewaretoken", token.group(1).decode()),
            ("verdict", "unreasonable"),
            ("categories", str(leaves[0])),
            ("time_spent_ms", "5000"),
        ]
        status, headers, body, _ = await qb.http(
            "POST",
            port,
            path + "submit/",
            cookies,
            urlencode(form).encode(),
            "application/x-www-form-urlencoded",
        )
        qb._update_cookies(cookies, headers)
        if status != 302:
            errors.append(f"submit {status} {body[:200]!r}")
            continue
        done += 1
    return done


async def open_pages(port, slug, key, pages, errors):
    ok = 0
    for page in pages:
        status, _, _, _ = await qb.http("GET", port, f"/p/{slug}/{page}", {"sessionid": key})
        if status == 200:
            ok += 1
        else:
            errors.append(f"{page} {status}")
    return ok


def traffic(port, project, annotator_keys, lead_key, leaves, rounds=4) -> dict:
    errors: list[str] = []

    async def go():
        return await asyncio.gather(
            *(annotate(port, project.slug, k, rounds, errors, leaves) for k in annotator_keys),
            open_pages(
                port,
                project.slug,
                lead_key,
                ["dashboards/", "dashboards/annotators/", "dashboards/models/"],
                errors,
            ),
        )

    started = time.perf_counter()
    *submits, pages = asyncio.run(go())
    return {
        "submits_ok": sum(submits),
        "dashboard_pages_ok": pages,
        "errors": len(errors),
        "error_examples": errors[:3],
        "seconds": round(time.perf_counter() - started, 1),
    }


def redis_outage(project, admin, redis: PrivateRedis, url: str, env: dict) -> dict:
    from django.db import connections

    from annotator.models import ImportJob, ModelVersion, TaxonomyCategory
    from jobs import lifecycle
    from training.models import DatasetSnapshot, TrainingJob
    from training.snapshots.build import create_snapshot

    keys = sessions(project, "scale-annotator-", 5)
    lead = sessions(project, "scale-lead-", 1)[0]
    leaves = list(
        TaxonomyCategory.objects.filter(project=project, parent__isnull=False).values_list("pk", flat=True)
    )
    connections.close_all()
    worker = Worker("default,exports", env, "redis")
    server, port = qb.start_server(url, 2, VAR / "gunicorn-redis.log")
    out = {}
    try:
        out["before"] = traffic(port, project, keys, lead, leaves, rounds=2)
        redis.stop()
        out["during"] = traffic(port, project, keys, lead, leaves)
        t0 = time.perf_counter()
        imp, _ = upload(project, 50, offset=100_000)
        lifecycle.enqueue(imp)
        snapshot = create_snapshot(project, admin, SFT_SPEC)
        base = ModelVersion.objects.get(project=project, name="agent-v1")
        ready = DatasetSnapshot.objects.filter(
            project=project, status="ready"
        ).first() or DatasetSnapshot.objects.create(
            project=project, kind="sft", version=999, layout="trl_messages", status="ready", sha256="0" * 64
        )
        tj = TrainingJob.objects.create(
            project=project,
            name="created during the outage",
            stage="sft",
            base_version=base,
            train_snapshot=ready,
        )
        lifecycle.enqueue(tj)
        out["job_submission_s"] = round(time.perf_counter() - t0, 1)
        rows = [
            ImportJob.objects.get(pk=imp.pk),
            DatasetSnapshot.objects.get(pk=snapshot.pk),
            TrainingJob.objects.get(pk=tj.pk),
        ]
        out["rows_during"] = {
            type(r).__name__: {"status": r.status, "message": r.message[:120]} for r in rows
        }
        recorded = all(r.status == "failed" and r.waiting_for_queue for r in rows)
        redis.start()
        connections.close_all()
        sweep = subprocess.run(
            [sys.executable, "manage.py", "requeue_waiting"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            timeout=120,
        )
        out["requeue_waiting"] = sweep.stdout.strip() or sweep.stderr[-300:]
        wait_for(
            lambda: (
                ImportJob.objects.get(pk=imp.pk).finished
                and DatasetSnapshot.objects.get(pk=snapshot.pk).finished
            ),
            timeout=300,
            what="the re-queued jobs",
        )
        imp.refresh_from_db()
        snapshot.refresh_from_db()
        tj.refresh_from_db()
        out["after"] = {
            "import": [imp.status, imp.conversations_created],
            "snapshot": [snapshot.status, snapshot.row_count],
            "training_job": tj.status + " (waiting on the training queue: no GPU worker in this run)",
        }
        out["traffic_after"] = traffic(port, project, keys, lead, leaves, rounds=2)
        out["worker_restarted"] = False
        out["ok"] = (
            out["during"]["errors"] == 0
            and out["traffic_after"]["errors"] == 0
            and recorded
            and imp.status == "done"
            and imp.conversations_created == 50
            and snapshot.status == "ready"
            and tj.status == "queued"
            and worker.proc.poll() is None
        )
        TrainingJob.objects.filter(pk=tj.pk).delete()
    finally:
        qb.stop_server(server)
        worker.stop()
    return out


def _pg(cmd: list[str]):
    return subprocess.run(
        ["su", "postgres", "-c", " ".join(cmd)],
        check=True,
        capture_output=True,
        text=True,
        cwd="/tmp",
        timeout=120,
    )


def postgres_restart() -> dict:
    """In a child process: Django must be set up on the private cluster, not the shared one."""
    tmp = Path(tempfile.mkdtemp(prefix="badcase-pg-"))
    shutil.chown(tmp, "postgres", "postgres")
    datadir, port = tmp / "data", 5491
    pg_ctl = f"{PG_BIN}/pg_ctl -D {datadir} -l {tmp}/pg.log -w"
    try:
        _pg([f"{PG_BIN}/initdb", "-D", str(datadir), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
        _pg([pg_ctl, "-o", f"'-p {port} -k {tmp} -c listen_addresses=127.0.0.1'", "start"])
        env = {"FAULTS_PG_PORT": str(port), "FAULTS_CHILD": "postgres_restart", "FAULTS_PG_CTL": pg_ctl}
        child = subprocess.run(
            [sys.executable, __file__, "--only", "postgres_restart", "--code", "here"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=580,
        )
        sys.stderr.write(child.stderr[-3000:])
        line = [x for x in child.stdout.splitlines() if x.startswith("{")]
        return json.loads(line[-1]) if line else {"ok": False, "error": child.stderr[-800:]}
    finally:
        subprocess.run(
            ["su", "postgres", "-c", f"{pg_ctl} stop -m immediate"], capture_output=True, cwd="/tmp"
        )
        shutil.rmtree(tmp, ignore_errors=True)


def postgres_restart_child() -> dict:
    from django.db import connections

    url = f"postgres://postgres@127.0.0.1:{os.environ['FAULTS_PG_PORT']}/badcase_faults"
    os.environ.update(qb.bench_env(url))
    setup_django(url, fresh=True)
    project, _ = seed_scale.seed(300, log=lambda *a: None)
    from annotator.models import ImportJob, TaxonomyCategory
    from jobs import lifecycle

    keys = sessions(project, "scale-annotator-", 5)
    lead = sessions(project, "scale-lead-", 1)[0]
    leaves = list(
        TaxonomyCategory.objects.filter(project=project, parent__isnull=False).values_list("pk", flat=True)
    )
    connections.close_all()
    env = {**qb.bench_env(url), "MEDIA_ROOT": os.environ["MEDIA_ROOT"]}
    worker = Worker("default", env, "pg")
    server, port = qb.start_server(url, 2, VAR / "gunicorn-pg.log")
    out = {}
    try:
        out["before"] = traffic(port, project, keys, lead, leaves, rounds=2)
        job, _ = upload(project, 20, offset=200_000)
        lifecycle.enqueue(job)
        wait_for(lambda: ImportJob.objects.get(pk=job.pk).finished, what="the import before the restart")
        connections.close_all()
        t0 = time.perf_counter()
        subprocess.run(
            ["su", "postgres", "-c", f"{os.environ['FAULTS_PG_CTL']} restart -m fast"],
            check=True,
            capture_output=True,
            cwd="/tmp",
            timeout=120,
        )
        out["restart_s"] = round(time.perf_counter() - t0, 1)
        out["after"] = traffic(port, project, keys, lead, leaves, rounds=4)
        job2, _ = upload(project, 20, offset=300_000)
        lifecycle.enqueue(job2)
        wait_for(lambda: ImportJob.objects.get(pk=job2.pk).finished, what="the import after the restart")
        job2.refresh_from_db()
        out["import_after_restart"] = [job2.status, job2.conversations_created]
        out["processes_restarted"] = (
            0 if (server.poll() is None and worker.proc.poll() is None) else "some died"
        )
        out["ok"] = (
            out["after"]["errors"] == 0
            and job2.status == "done"
            and job2.conversations_created == 20
            and out["processes_restarted"] == 0
        )
    finally:
        qb.stop_server(server)
        worker.stop()
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument(
        "--code",
        choices=["head", "here"],
        default="head",
        help="head: run on a `git archive` snapshot of --commit (default); here: this tree as it is",
    )
    parser.add_argument("--commit", default="HEAD")
    args = parser.parse_args()
    if args.code == "head" and not os.environ.get("FAULTS_CHILD"):
        argv = [a for a in sys.argv[1:] if not a.startswith(("--code=", "--commit="))]
        for flag in ("--code", "--commit"):
            if flag in argv:
                i = argv.index(flag)
                del argv[i : i + 2]
        sys.exit(qb.run_from_snapshot(argv, args.commit, script="faults.py"))
    wanted = [s for s in args.only.split(",") if s]
    VAR.mkdir(parents=True, exist_ok=True)
    media = VAR / "media"
    os.environ.setdefault("MEDIA_ROOT", str(media))
    os.environ.setdefault("SECRET_KEY", qb.SECRET_KEY)

    if os.environ.get("FAULTS_CHILD") == "postgres_restart":
        print(json.dumps(postgres_restart_child()))
        return

    redis = PrivateRedis().start()
    url = seed_scale.database_url("badcase_faults")
    os.environ.update(qb.bench_env(url))
    os.environ["REDIS_URL"] = redis.url
    env = {**qb.bench_env(url), "REDIS_URL": redis.url, "MEDIA_ROOT": os.environ["MEDIA_ROOT"]}
    results, started = {}, time.perf_counter()
    try:
        setup_django(url, fresh=True)
        from django.contrib.auth import get_user_model

        project, _ = seed_scale.seed(2000, log=lambda *a: None)
        admin = get_user_model().objects.get(username="scale-admin")
        for name in wanted:
            log(f"fault: {name} …")
            t0 = time.perf_counter()
            try:
                if name == "export_kill":
                    results[name] = export_kill(project, admin, env)
                elif name == "import_kill":
                    results[name] = import_kill(project, env)
                elif name == "redis_outage":
                    results[name] = redis_outage(project, admin, redis, url, env)
                elif name == "postgres_restart":
                    results[name] = postgres_restart()
            except Exception as exc:  # noqa: BLE001 - a scenario that breaks is a result too
                results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            results[name]["seconds"] = round(time.perf_counter() - t0, 1)
            log(f"  {name}: {'survived' if results[name].get('ok') else 'FAILED'}")
    finally:
        redis.close()
    survived = [n for n, r in results.items() if r.get("ok")]
    report(
        "faults",
        {
            "faults_injected": len(results),
            "faults_survived": len(survived),
            "zero_loss": len(survived) == len(results),
            "scenarios": results,
            "also_in_the_test_suite": "tests/test_faults.py (import and training SIGKILL, Redis down) and "
            "tests/test_datasets_worker.py (snapshot build SIGKILL), marked integration",
            "wall_s": round(time.perf_counter() - started, 1),
        },
    )
    results_dir = os.environ.get("QUEUE_BENCH_RESULTS")
    if results_dir:  # running in the snapshot: keep the result in the real tree too
        Path(results_dir, "faults.json").write_text(
            (ROOT / "benchmarks" / "results" / "faults.json").read_text()
        )
    if len(survived) != len(results):
        sys.exit(1)


if __name__ == "__main__":
    main()
