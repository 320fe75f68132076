"""Server time and queries of the annotator workspace and the lead's review stream at 1M items (PostgreSQL).

    python benchmarks/page_load.py [--conversations 1000000] [--runs 60] [--database NAME] [--no-approve]

1. The project of benchmarks/seed_scale.py (1M conversations, 2M responses, 1M labels, 200k
   preferences, 3M tasks, 6M slots), reused when that size is already seeded (then migrated), seeded
   otherwise.
2. Each page is requested `--runs` times (after one warm-up request) through Django's test Client,
   in-process, DEBUG=0 (server time: middleware, routing, permission checks, queries, templates; no
   network, no browser), as a logged-in member:
   - label / compare task page: GET next (it picks and locks a slot: the queue query) -> the 302 to
     the task page -> GET the task page; timed together, one of the 50 annotators per run, the lock
     released after each run (untimed) so every run picks afresh;
   - the review stream (a lead): its first item, narrowed to one annotator, to disagreements, to a
     category (a top-level one: its whole subtree); J (the next item: GET ?at=<next>, the htmx partial,
     walking the stream); A (approve -> the next item after it, `after=`, the htmx partial: this writes
     --runs approvals; --no-approve leaves it out);
   - the history page of the annotator with the most labels, and the project home (an annotator).
   p50/p95/p99/max in ms, queries per request (max), and each page's slowest query. A page over the
   500 ms p95 target gets its slowest query's EXPLAIN (ANALYZE, BUFFERS) in the result.
3. Locks taken by the run are released at the end (a later load_run checks that none is left expired).

Prints one JSON line and writes benchmarks/results/page_load_<N>.json.
"""

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import seed_scale  # noqa: E402
from benchmarks._common import report  # noqa: E402

TARGET_P95_MS = 500


def percentile(values, q):
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


class Page:
    """One endpoint's timings and queries."""

    def __init__(self, name):
        self.name = name
        self.times, self.queries = [], []
        self.slowest = (0.0, "")  # (ms, sql) of the slowest query seen

    def add(self, ms, captured):
        self.times.append(ms)
        self.queries.append(len(captured))
        for q in captured:
            t = float(q.get("time") or 0) * 1000
            if t > self.slowest[0]:
                self.slowest = (t, q["sql"])

    def figures(self) -> dict:
        t = self.times
        return {
            "p50_ms": round(statistics.median(t), 1),
            "p95_ms": round(percentile(t, 0.95), 1),
            "p99_ms": round(percentile(t, 0.99), 1),
            "max_ms": round(max(t), 1),
            "queries": max(self.queries),
            "runs": len(t),
            "slowest_query_ms": round(self.slowest[0], 1),
        }


def timed(page: Page, fn):
    """Run fn() (one or more requests) once, timed, with its queries counted."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        t = time.perf_counter()
        result = fn()
        ms = (time.perf_counter() - t) * 1000
    page.add(ms, ctx.captured_queries)
    return result


def ok(response, *codes):
    codes = codes or (200,)
    assert response.status_code in codes, (response.status_code, response.content[:300])
    return response


def explain(sql: str) -> list[str]:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
        return [row[0] for row in cur.fetchall()]


def scale_project(n: int, database: str | None, log):
    """seed_scale's project of size n: reused (migrated; roll-ups built only where missing) or seeded."""
    from benchmarks._common import setup_django

    url = seed_scale.database_url(database or seed_scale.default_database(n))
    try:
        setup_django(url, migrate=False)
        project = seed_scale.find_seeded(n)
    except Exception:  # noqa: BLE001 - no database or no tables yet
        project = None
    if project is None:
        from django.db import connections

        connections.close_all()  # seeding drops and re-creates the database
        return seed_scale.ensure(n, database, reuse=False, log=log)
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    return project, {
        "reused_database": True,
        "rebuild_rollups_s": seed_scale.rebuild_rollups(project, only_if_missing=True),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--database", default=None)
    parser.add_argument("--no-approve", action="store_true", help="do not measure A (it writes approvals)")
    args = parser.parse_args()
    os.environ["DEBUG"] = "0"
    os.environ.setdefault("SECRET_KEY", "page-load-bench")
    os.environ["SECURE_SSL_REDIRECT"] = "0"
    os.environ["SECURE_COOKIES"] = "0"
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731 - stdout is the JSON line
    project, seeded = scale_project(args.conversations, args.database, log)

    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.db.models import Count
    from django.test import Client
    from django.test.utils import setup_test_environment

    from annotator.models import Label, Role, Slot, Status, TaxonomyCategory
    from annotator.review import version

    setup_test_environment()
    settings.ALLOWED_HOSTS = ["*"]
    assert not settings.DEBUG
    User = get_user_model()
    slug = project.slug
    prefix = f"/p/{slug}"
    members = User.objects.filter(memberships__project=project).order_by("username")
    annotators = list(members.filter(memberships__role=Role.ANNOTATOR))
    lead = members.filter(memberships__role=Role.LEAD)[0]
    busiest_id, busiest_labels = (
        Label.objects.filter(project=project)
        .values_list("annotator_id")
        .annotate(n=Count("id"))
        .order_by("-n")
        .first()
    )
    busiest = User.objects.get(pk=busiest_id)
    category = TaxonomyCategory.objects.filter(project=project, parent__isnull=True).order_by("position")[0]
    clients = {}

    def client(user):
        if user.pk not in clients:
            clients[user.pk] = Client()
            clients[user.pk].force_login(user)
        return clients[user.pk]

    def release(user):
        Slot.objects.filter(project=project, annotator=user, state=Slot.State.LOCKED).update(
            state=Slot.State.FREE, annotator=None, locked_until=None
        )

    def task_page(kind):
        query = "?kind=compare" if kind == "compare" else ""
        state = {"i": 0}

        def run():
            user = annotators[state["i"] % len(annotators)]
            state["i"] += 1
            c = client(user)
            to = ok(c.get(f"{prefix}/next/{query}"), 302)["Location"]
            assert "/tasks/" in to, to
            ok(c.get(to))
            return user

        return run

    lead_client = client(lead)
    hx = {"HTTP_HX_REQUEST": "true"}
    stream = f"{prefix}/review/"
    walk = {"at": None}

    def stream_next():  # J: the next item after the one on screen, as the htmx partial
        url = walk["at"] or stream
        r = ok(lead_client.get(url, **hx))
        walk["at"] = r.context["next_url"] or None
        return r

    pages = {
        "label_task_page": task_page("label"),
        "compare_task_page": task_page("compare"),
        "review_stream_first": lambda: ok(lead_client.get(stream)),
        "review_stream_annotator": lambda: ok(lead_client.get(stream, {"annotator": busiest.username})),
        "review_stream_disagreement": lambda: ok(lead_client.get(stream, {"disagreement": "1"})),
        "review_stream_category": lambda: ok(lead_client.get(stream, {"category": category.pk})),
        "review_stream_next_j": stream_next,
        "history_busiest_annotator": lambda: ok(client(busiest).get(f"{prefix}/history/")),
        "project_home_annotator": lambda: ok(client(annotators[0]).get(f"{prefix}/")),
    }
    results, objects = {}, {}
    load_before = [round(x, 2) for x in os.getloadavg()]
    try:
        for name, fn in pages.items():
            warm = fn()  # warms the connection, PostgreSQL's buffers and the template cache
            if isinstance(warm, User):
                release(warm)
            page = objects[name] = Page(name)
            for _ in range(args.runs):
                out = timed(page, fn)
                if isinstance(out, User):
                    release(out)
            results[name] = page.figures()
            log(f"{name}: {results[name]}")
        if not args.no_approve:
            name = "review_stream_approve_next_a"
            page = objects[name] = Page(name)
            item = ok(lead_client.get(stream)).context["item"]  # on screen (untimed: the lead has it)
            for i in range(args.runs + 1):  # the first approval warms up, untimed
                data = {"decision": "approve", "comment": "", "seen": version(item), "stream": "1"}
                url = f"{prefix}/review/label/{item.pk}/"
                post = lambda url=url, data=data: ok(lead_client.post(url, data, **hx))  # noqa: E731
                r = timed(page, post) if i else post()
                assert Label.objects.get(pk=item.pk).status == Status.APPROVED, item.pk
                item = r.context["item"]
            results[name] = page.figures()
            log(f"{name}: {results[name]}")
    finally:
        for user in annotators:
            release(user)

    over = {}
    for name, fig in results.items():
        if fig["p95_ms"] > TARGET_P95_MS:
            ms, sql = objects[name].slowest
            over[name] = {"p95_ms": fig["p95_ms"], "slowest_query_ms": round(ms, 1), "sql": sql}
            try:
                over[name]["explain_analyze"] = explain(sql)
            except Exception as exc:  # noqa: BLE001 - the figure stands without its plan
                over[name]["explain_analyze"] = [f"EXPLAIN failed: {exc}"]
    with connection.cursor() as cur:
        cur.execute("SELECT pg_database_size(current_database())")
        size_gb = round(cur.fetchone()[0] / 2**30, 2)
    report(
        f"page_load_{args.conversations}",
        {
            "database": f"PostgreSQL {connection.pg_version // 10000}, {size_gb} GB",
            "rows": seed_scale.counts(project),
            "reused_database": seeded["reused_database"],
            "seed_s": seeded.get("seed_s"),
            "how": "Django test Client in-process, DEBUG=0, locmem cache: server time, no network",
            "history_annotator_labels": busiest_labels,
            "category_filter": f"{category.name} (top level, with its subtree)",
            "pages": results,
            "target_p95_ms": TARGET_P95_MS,
            "over_target": over,
            "load_avg_1_5_15_before": load_before,
            "load_avg_1_5_15_after": [round(x, 2) for x in os.getloadavg()],
        },
    )


if __name__ == "__main__":
    main()
