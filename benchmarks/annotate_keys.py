"""Keystrokes and seconds for an annotator to label 10 items and compare 5 pairs, scripted in a real browser.

    python benchmarks/annotate_keys.py [--labels 10] [--compares 5] [--conversations 60] [--keep]

1. A private SQLite database and var folder under a temp dir: `migrate`, `seed_demo --scripted
   --conversations N`, then `runserver 127.0.0.1:<free port> --noreload --insecure` with DEBUG=0 (the
   production settings, plain http; --insecure only serves the static files).
2. Debian's Chromium (/usr/bin/chromium, the browser tests' launch arguments) driven by Playwright at
   1400x900 logs in as annotator/badcase-annotator, opens the demo project and starts labelling.
3. Each item is decided with the keyboard only, the way a trained annotator works, by a rule applied to
   what the page shows (the right answer lives in server-side metadata only):
   - label: the response under review has a tool call -> Y; it has none -> N and the number shown
     beside "Tool not called" (or "Malformed tool call" where the page reports malformed output),
     typed digit by digit; then Ctrl+Enter;
   - compare: the side with a tool call wins (A or B), both -> T (tie), neither -> X (both bad);
     then Ctrl+Enter.
   The script waits for the next item to be interactive (its DOMContentLoaded: workspace.js, at the end
   of the body, has bound the keys) before the next key. No think time: the figures are the
   interface's cost, not an annotator's reading time.
4. Counted: keystrokes (a chord such as Ctrl+Enter is one), keys (Ctrl+Enter is two), mouse clicks
   (the script makes none; a trusted pointerdown listener in every page confirms it), total and
   per-item seconds, and p50/p95 of submit -> next item interactive (measured by the script, and the
   browser's own navigation timing of the new page: start of the POST to domContentLoadedEventEnd).
   The database is checked afterwards: exactly that many new labels / preferences by the annotator.
"""

import argparse
import math
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._common import ROOT, report  # noqa: E402
from tests.browser.conftest import ARGS, CHROMIUM  # noqa: E402 - the browser tests' launch arguments

SLUG = "sales-agent"
USER, PASSWORD = "annotator", "badcase-annotator"
VIEWPORT = {"width": 1400, "height": 900}
# Every page counts the trusted pointer presses it sees (a click made by the script would be one).
CLICK_COUNTER = """
window.__clicks = 0;
window.addEventListener("pointerdown", (e) => { if (e.isTrusted) window.__clicks += 1; }, true);
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values, q):
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


class Server:
    """migrate + seed_demo + runserver on a private SQLite database."""

    def __init__(self, conversations: int, keep: bool = False):
        self.dir = Path(tempfile.mkdtemp(prefix="badcase-keys-"))
        self.keep = keep
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = self.dir / "db.sqlite3"
        self.conversations = conversations
        self.proc = None
        self.env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{self.db}",
            "VAR_DIR": str(self.dir / "var"),
            "DEBUG": "0",
            "SECRET_KEY": "annotate-keys-bench",
            "SECURE_COOKIES": "0",
            "SECURE_SSL_REDIRECT": "0",
            "SECURE_HSTS_SECONDS": "0",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
        }
        self.env.pop("REDIS_URL", None)
        self.env.pop("CELERY_BROKER_URL", None)

    def manage(self, *args):
        subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def __enter__(self):
        t = time.perf_counter()
        self.manage("migrate", "--noinput", "-v0")
        self.manage("seed_demo", "--scripted", "--conversations", str(self.conversations))
        self.setup_s = round(time.perf_counter() - t, 1)
        self.log = open(self.dir / "runserver.log", "w")  # noqa: SIM115 - closed in __exit__
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{self.port}", "--noreload", "--insecure"],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/accounts/login/", timeout=2).read()
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"runserver did not start: see {self.dir / 'runserver.log'}") from None
                time.sleep(0.3)
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def work_done(self) -> dict:
        """The annotator's labels and preferences that are not drafts."""
        with sqlite3.connect(self.db) as conn:
            uid = conn.execute("SELECT id FROM auth_user WHERE username = ?", [USER]).fetchone()[0]
            labels = conn.execute(
                "SELECT count(*) FROM annotator_label WHERE annotator_id = ? AND status != 'draft'", [uid]
            ).fetchone()[0]
            unreasonable = conn.execute(
                "SELECT count(*) FROM annotator_label l WHERE annotator_id = ? AND status != 'draft' "
                "AND verdict = 'unreasonable' AND EXISTS (SELECT 1 FROM annotator_label_categories c "
                "WHERE c.label_id = l.id)",
                [uid],
            ).fetchone()[0]
            prefs = conn.execute(
                "SELECT count(*) FROM annotator_preference WHERE annotator_id = ? AND status != 'draft'",
                [uid],
            ).fetchone()[0]
        return {"labels": labels, "unreasonable_with_category": unreasonable, "preferences": prefs}


class Keyboard:
    """Every key press goes through here and is counted."""

    def __init__(self, page):
        self.page = page
        self.keystrokes = 0
        self.keys = 0
        self.sequence = []

    def press(self, key: str):
        self.page.keyboard.press(key)
        self.keystrokes += 1
        self.keys += len(key.split("+"))
        self.sequence.append(key)


def category_number(page, name: str) -> str:
    """The number the page shows beside a category (as the annotator reads it off the list)."""
    for li in page.locator("#cat-tree li:not(.group)").all():
        if li.locator(".cat-name").inner_text().strip() == name:
            return li.locator("kbd.num").inner_text().strip()
    raise AssertionError(f"category {name!r} not on the page")


def decide_label(page) -> list[str]:
    item = page.locator(".under-review[data-focus]")
    if item.locator(".toolcall").count():
        return ["y"]
    malformed = item.locator("p.error", has_text="Malformed output").count()
    number = category_number(page, "Malformed tool call" if malformed else "Tool not called")
    return ["n", *number]  # "12" is typed as "1", "2"


def decide_compare(page) -> list[str]:
    left = page.locator(".under-review[data-side=left] .toolcall").count() > 0
    right = page.locator(".under-review[data-side=right] .toolcall").count() > 0
    return ["t" if left and right else "a" if left else "b" if right else "x"]


def run_items(page, kb: Keyboard, kind: str, count: int) -> dict:
    """Decide `count` items of one kind; the page must be on the first one."""
    decide = decide_label if kind == "label" else decide_compare
    start_strokes, start_keys = kb.keystrokes, kb.keys
    waits, nav_ms, clicks, choices = [], [], 0, []
    started = time.perf_counter()
    for _ in range(count):
        task_url = page.url
        assert "/tasks/" in task_url, f"not on a task page: {task_url}"
        assert page.locator(f"#task-form[data-kind={kind}][data-mode=editable]").count() == 1, task_url
        keys = decide(page)
        choices.append("".join(keys))
        for key in keys:
            kb.press(key)
        clicks += page.evaluate("window.__clicks")
        with page.expect_navigation(wait_until="domcontentloaded", timeout=30_000):
            t = time.perf_counter()
            kb.press("Control+Enter")
        waits.append((time.perf_counter() - t) * 1000)
        assert page.url != task_url, "submit stayed on the same item"
        nav_ms.append(page.evaluate("performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd"))
    total = time.perf_counter() - started
    clicks += page.evaluate("window.__clicks")
    strokes, keys = kb.keystrokes - start_strokes, kb.keys - start_keys
    return {
        "items": count,
        "keystrokes": strokes,
        "keys": keys,
        "keystrokes_per_item": round(strokes / count, 2),
        "keys_per_item": round(keys / count, 2),
        "mouse_clicks": clicks,
        "total_s": round(total, 2),
        "per_item_s": round(total / count, 2),
        "submit_to_next_interactive_ms": {
            "p50": round(statistics.median(waits), 1),
            "p95": round(percentile(waits, 0.95), 1),
            "max": round(max(waits), 1),
        },
        "browser_navigation_dcl_ms": {
            "p50": round(statistics.median(nav_ms), 1),
            "p95": round(percentile(nav_ms, 0.95), 1),
        },
        "decisions": choices,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=int, default=10)
    parser.add_argument("--compares", type=int, default=5)
    parser.add_argument("--conversations", type=int, default=60)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (database, server log)")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        sys.exit("Debian's chromium is required: apt-get install -y chromium (make browser-deps)")
    from playwright.sync_api import sync_playwright

    with Server(args.conversations, keep=args.keep) as server, sync_playwright() as p:
        before = server.work_done()
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(viewport=VIEWPORT)
        context.add_init_script(CLICK_COUNTER)
        page = context.new_page()
        dialogs = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(f"{server.url}/accounts/login/")
        page.fill("input[name=username]", USER)
        page.fill("input[name=password]", PASSWORD)
        page.keyboard.press("Enter")  # the log-in is not counted: it happens once a day
        page.wait_for_url(f"{server.url}/")
        kb = Keyboard(page)
        page.goto(f"{server.url}/p/{SLUG}/")
        # "Start labelling" and "Compare pairs" are followed as links (setup, not counted)
        page.goto(server.url + page.locator("#start-labelling").get_attribute("href"))
        label = run_items(page, kb, "label", args.labels)
        page.goto(f"{server.url}/p/{SLUG}/")
        page.goto(server.url + page.locator("#start-comparing").get_attribute("href"))
        compare = run_items(page, kb, "compare", args.compares)
        after = server.work_done()
        browser.close()

    saved = {k: after[k] - before[k] for k in after}
    said_no = sum(d.startswith("n") for d in label["decisions"])
    assert saved == {
        "labels": args.labels,
        "unreasonable_with_category": said_no,
        "preferences": args.compares,
    }, saved
    assert not dialogs, dialogs
    report(
        "annotate_keys",
        {
            "label": label,
            "compare": compare,
            "saved": saved,
            "setup": {
                "database": "sqlite",
                "server": "manage.py runserver --noreload (DEBUG=0), same machine",
                "seed": f"seed_demo --scripted --conversations {args.conversations}",
                "seed_s": server.setup_s,
                "browser": "Debian chromium, headless, Playwright, 1400x900",
                "think_time": "none: script time only",
            },
            "rules": {
                "label": "tool call -> Y; none -> N + number of 'Tool not called' "
                "('Malformed tool call' when malformed); Ctrl+Enter",
                "compare": "side with a tool call -> A/B, both -> T, neither -> X; Ctrl+Enter",
                "keystrokes": "a chord (Ctrl+Enter) is one keystroke and two keys",
            },
            "load_avg_1m": round(os.getloadavg()[0], 2),
        },
    )


if __name__ == "__main__":
    main()
