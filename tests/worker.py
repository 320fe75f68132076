"""Start a real Celery worker process against the test database, on a private queue."""

import os
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def test_database_url() -> str:
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    return f"postgres://{auth}@{s.get('HOST') or 'localhost'}:{s.get('PORT') or 5432}/{s['NAME']}"


@contextmanager
def celery_worker(queues: str | None = None, extra_env: dict | None = None):
    """Yield (queue_name, process). The worker consumes only its own queue unless told otherwise."""
    queue = queues or f"itest-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "DATABASE_URL": test_database_url(),
        "CELERY_TASK_ALWAYS_EAGER": "0",
        **(extra_env or {}),
    }
    log = ROOT / "var" / f"worker-{queue}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-Q",
                queue,
                "--pool=solo",
                "--without-gossip",
                "--without-mingle",
                "--loglevel=INFO",
                "-n",
                f"{queue}@%h",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        # Publish only once the worker consumes: a message sent while it still starts has been seen to
        # go unanswered on a loaded machine (the task never reached the worker's log).
        wait_for(
            lambda: proc.poll() is not None or " ready." in log.read_text(),
            timeout=60,
            interval=0.1,
            what=f"worker {queue} to start",
            log_queue=queue,
        )
        yield queue, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(
    predicate,
    timeout: float = 90,
    interval: float = 0.25,
    what: str = "condition",
    log_queue: str | None = None,
):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    tail = ""
    if log_queue:
        path = ROOT / "var" / f"worker-{log_queue}.log"
        tail = path.read_text()[-3000:] if path.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")
