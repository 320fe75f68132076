"""Lead dashboards on PostgreSQL: server time per page and queries per page at 1M labels.

    python benchmarks/dashboard_bench.py [--labels 1000000] [--runs 15] [--reseed]
    python benchmarks/dashboard_bench.py --seed-only --labels 800 --database-url sqlite:////tmp/dashvar/db.sqlite3

Seeds (once; --reseed to redo) a project with N labels across 50 taxonomy categories and 5 model
versions in one lineage (base > sft-1 > dpo-1 > sft-2 > dpo-2), 40 annotators, a tenth of the items
judged by three annotators (agreement), pairwise preferences between versions, reviews, skips and
lead gold decisions; the data is drawn from a model with known badcase rates and strengths, so the
pages show real structure. Then it requests every dashboard page and its API as a logged-in lead
through Django's test client (server time: URL routing, permission checks, queries, statistics,
template rendering; no network) and reports p50/p95 and the number of queries per page, cold
(dashboard cache off: every request computes its page from the roll-ups) and warm (the short-lived
dashboard cache on). The seed writes with COPY, past the ORM signals that keep the roll-ups
current, so the roll-ups are built after it with `rebuild_rollups` (timed; --rebuild to redo).
"""

import argparse
import datetime as dt
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._common import report, setup_django  # noqa: E402

SLUG = "dash-bench"
VERSIONS = [
    ("base", "base", 0.58),
    ("sft-1", "sft", 0.44),
    ("dpo-1", "dpo", 0.33),
    ("sft-2", "sft", 0.29),
    ("dpo-2", "dpo", 0.21),
]  # name, origin, badcase rate
STRENGTH = {
    "base": 0.0,
    "sft-1": 0.45,
    "dpo-1": 0.9,
    "sft-2": 1.0,
    "dpo-2": 1.35,
}  # Bradley-Terry log-strengths


def taxonomy(n_categories: int):
    """(root, [children]) names; the default taxonomy first, padded with numbered variants."""
    from annotator.taxonomy import DEFAULT_TAXONOMY

    roots = [(name, [c[0] for c in children]) for name, _, _, _, children in DEFAULT_TAXONOMY]
    roots += [
        ("Retrieval", ["Wrong product", "Stale catalogue", "Ignored filter"]),
        ("Dialogue", ["Lost context", "Repeated question", "No confirmation"]),
    ]
    n_roots = max(1, min(len(roots), round(n_categories / 10)))
    per_child = max(1, (n_categories - n_roots) // n_roots)
    out = []
    for i, (root, children) in enumerate(roots[:n_roots]):
        kids = list(children)
        k = 2
        while len(kids) < per_child:
            kids.append(f"{children[len(kids) % len(children)]} ({k})")
            k += 1
        extra = n_categories - n_roots - per_child * n_roots if i == n_roots - 1 else 0
        while extra > 0:
            kids.append(f"{root} other {extra}")
            extra -= 1
        out.append((root, kids[:per_child] + kids[per_child:]))
    return out


def seed(
    slug: str = SLUG,
    labels: int = 1_000_000,
    annotators: int = 40,
    categories: int = 50,
    days: int = 180,
    multi_share: float = 0.1,
    preferences: int | None = None,
    lead_password: str | None = None,
    rng_seed: int = 7,
    batch: int = 20_000,
    quiet: bool = False,
):
    """Create the project and its data with bulk COPY inserts; returns the project."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.db import transaction
    from django.utils import timezone

    from annotator.bulk import bulk_insert
    from annotator.models import (
        Adjudication,
        Conversation,
        Label,
        Membership,
        ModelResponse,
        ModelVersion,
        Preference,
        Project,
        Review,
        Role,
        Skip,
        Task,
        TaxonomyCategory,
        content_hash,
    )

    rng = random.Random(rng_seed)
    User = get_user_model()
    LabelCategory = Label.categories.through
    now = timezone.now().replace(microsecond=0)
    start = now - dt.timedelta(days=days)
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))

    with transaction.atomic():
        project = Project.objects.create(name=f"Dashboard bench ({labels:,} labels)", slug=slug, overlap=1)
        lead = User.objects.create(
            username=f"{slug}-lead", password=make_password(lead_password) if lead_password else "!"
        )
        Membership.objects.create(user=lead, project=project, role=Role.LEAD)
        people = User.objects.bulk_create(
            [User(username=f"{slug}-a{i:02d}", password="!") for i in range(annotators)]
        )
        Membership.objects.bulk_create(
            [Membership(user=u, project=project, role=Role.ANNOTATOR) for u in people]
        )
        leaves = []
        for pos, (root, kids) in enumerate(taxonomy(categories)):
            parent = TaxonomyCategory.objects.create(
                project=project, name=root, position=pos, description=f"{root} failures."
            )
            for cpos, kid in enumerate(kids):
                leaves.append(
                    TaxonomyCategory.objects.create(
                        project=project,
                        parent=parent,
                        name=kid,
                        position=cpos,
                        description=f"{kid}.",
                        root_cause=f"Why '{kid}' happens (seeded).",
                        recommended_fix=f"How to fix '{kid}' (seeded).",
                    )
                )
        versions, parent = [], None
        for name, origin, _ in VERSIONS:
            parent = ModelVersion.objects.create(project=project, name=name, origin=origin, parent=parent)
            versions.append(parent)
    rate = {v.pk: r for v, (_, _, r) in zip(versions, VERSIONS, strict=True)}
    # each version is in use from its release day on; later versions get more traffic
    release = {
        v.pk: start + dt.timedelta(days=days * i / (len(versions) + 1)) for i, v in enumerate(versions)
    }
    # category popularity: Zipf, reshuffled a little per version (fixes move the Pareto)
    weights = {
        v.pk: [1 / (r + 1) ** (1.1 + 0.05 * i) for r in range(len(leaves))] for i, v in enumerate(versions)
    }
    for i, v in enumerate(versions):
        w = weights[v.pk]
        for _ in range(i * 3):
            a, b = rng.randrange(len(w)), rng.randrange(len(w))
            w[a], w[b] = w[b], w[a]
    skill = {u.pk: rng.uniform(0.82, 0.97) for u in people}
    speed = {u.pk: rng.uniform(25, 70) for u in people}  # median seconds per item
    statuses = ["submitted"] * 65 + ["approved"] * 30 + ["rejected"] * 5

    # units: one response each; a tenth get three judges
    n_multi = max(0, (labels - round(labels / (1 + 2 * multi_share))) // 2)
    units = labels - 2 * n_multi  # exactly `labels` labels: n_multi units with 3 judges, the rest with 1
    n_pairs = preferences if preferences is not None else max(300, labels // 25)
    say(
        f"seeding {units:,} responses, {labels:,} labels ({n_multi:,} items with 3 judges), "
        f"{n_pairs:,} preferences"
    )
    made = 0
    conv_i = 0
    pair_pool = []  # (response_a, response_b) in the same conversation and context
    multi_tasks = []
    t0 = time.time()
    while made < units:
        size = min(batch, units - made)
        with transaction.atomic():
            convs, responses, unit_meta = [], [], []
            for _ in range(0, size, 2):
                conv_i += 1
                msgs = [{"role": "user", "content": f"Is item {conv_i} in stock?"}]
                convs.append(
                    Conversation(
                        project=project,
                        external_id=f"b-{conv_i}",
                        messages=msgs,
                        tools=[],
                        content_hash=content_hash(msgs, []),
                        split=rng.choice(["train"] * 8 + ["eval", "holdout"]),
                    )
                )
            bulk_insert(convs)
            for u in range(size):
                conv = convs[u // 2]
                when = start + dt.timedelta(seconds=rng.uniform(0, days * 86400))
                live = [v for v in versions if release[v.pk] <= when] or versions[:1]
                mv = rng.choice(live[-3:])
                if u % 2 == 1 and responses[-1].model_version_id == mv.pk:  # compare two different versions
                    others = [v for v in live if v.pk != mv.pk] or [versions[1]]
                    mv = rng.choice(others[-3:])
                msg = {"role": "assistant", "content": f"Let me check item {conv.external_id} ({u})."}
                responses.append(
                    ModelResponse(
                        conversation=conv,
                        model_version=mv,
                        context_length=1,
                        message=msg,
                        response_hash=content_hash(msg, u),
                        raw_text="",
                    )
                )
                unit_meta.append(when)
            bulk_insert(responses)
            for u in range(0, size - 1, 2):
                pair_pool.append((responses[u], responses[u + 1]))
            label_objs, cat_rows = [], []
            for u, resp in enumerate(responses):
                judges = 3 if (made + u) < n_multi else 1
                truth_bad = rng.random() < rate[resp.model_version_id]
                truth_cats = rng.choices(
                    leaves, weights=weights[resp.model_version_id], k=1 + (rng.random() < 0.3)
                )
                for who in rng.sample(people, judges):
                    correct = rng.random() < skill[who.pk]
                    bad = truth_bad if correct else not truth_bad
                    submitted = unit_meta[u] + dt.timedelta(minutes=rng.uniform(0, 600))
                    label = Label(
                        response=resp,
                        annotator=who,
                        project=project,
                        model_version_id=resp.model_version_id,
                        verdict="unreasonable" if bad else "reasonable",
                        time_spent_ms=int(1000 * rng.lognormvariate(math.log(speed[who.pk]), 0.6)),
                        status=rng.choice(statuses),
                        submitted_at=min(submitted, now),
                    )
                    label_objs.append(label)
                    if bad:
                        cats = (
                            {c.pk for c in truth_cats}
                            if truth_bad and rng.random() < 0.8
                            else {rng.choices(leaves, weights=weights[resp.model_version_id])[0].pk}
                        )
                        cat_rows.append((label, cats))
                if judges > 1:
                    multi_tasks.append(resp)
            bulk_insert(label_objs)
            bulk_insert(
                [
                    LabelCategory(label_id=label.pk, taxonomycategory_id=c)
                    for label, cats in cat_rows
                    for c in cats
                ]
            )
            bulk_insert(
                [
                    Review(
                        reviewer=lead,
                        label_id=lb.pk,
                        decision="approve" if lb.status == "approved" else "reject",
                        comment="" if lb.status == "approved" else "Seeded: see guideline 3.",
                    )
                    for lb in label_objs
                    if lb.status in ("approved", "rejected")
                ]
            )
        made += size
        say(f"  {made:,}/{units:,} responses ({time.time() - t0:.0f} s)")

    with transaction.atomic():
        tasks = bulk_insert(
            [Task(project=project, kind="label", response=r, completed=3) for r in multi_tasks]
        )
        # lead gold decisions on a sample of the multi-judged items
        gold = rng.sample(tasks, min(len(tasks), max(1, len(tasks) // 8)))
        bulk_insert(
            [
                Adjudication(
                    task=t,
                    lead=lead,
                    verdict=rng.choice(["reasonable", "unreasonable"])
                    if rng.random() < 0.2
                    else (
                        "unreasonable" if rng.random() < rate[t.response.model_version_id] else "reasonable"
                    ),
                )
                for t in gold
            ]
        )
        skip_pairs = {
            (rng.randrange(len(tasks)), rng.randrange(len(people)))
            for _ in range(min(len(tasks), labels // 50))
        }
        bulk_insert([Skip(task=tasks[t], annotator=people[a]) for t, a in skip_pairs])
        # preferences: between the two versions' responses in a conversation; a fifth judged three times
        prefs, taken = [], set()
        names = {v.pk: v.name for v in versions}
        compare_tasks = []
        for a, b in rng.sample(pair_pool, min(len(pair_pool), n_pairs)):
            judges = 3 if rng.random() < 0.2 else 1
            compare_tasks.append(
                Task(project=project, kind="compare", response=a, response_b=b, completed=judges)
            )
            gap = STRENGTH[names[a.model_version_id]] - STRENGTH[names[b.model_version_id]]
            p_a = 1 / (1 + math.exp(-gap))
            for who in rng.sample(people, judges):
                if (who.pk, a.pk, b.pk) in taken:
                    continue
                taken.add((who.pk, a.pk, b.pk))
                r = rng.random()
                choice = (
                    "tie" if r < 0.08 else "both_bad" if r < 0.14 else ("a" if rng.random() < p_a else "b")
                )
                left = rng.choice("ab")
                if choice in "ab" and rng.random() < 0.04:  # a little position bias
                    choice = left
                prefs.append(
                    Preference(
                        response_a=a,
                        response_b=b,
                        annotator=who,
                        choice=choice,
                        left_side=left,
                        reason="seeded",
                        time_spent_ms=int(1000 * rng.lognormvariate(math.log(speed[who.pk] * 1.5), 0.5)),
                        status=rng.choice(statuses),
                        submitted_at=start + dt.timedelta(seconds=rng.uniform(0, days * 86400)),
                    )
                )
        bulk_insert(compare_tasks)
        for i in range(0, len(prefs), batch):
            bulk_insert(prefs[i : i + batch])
    say(f"seeded in {time.time() - t0:.0f} s")
    return project


def _percentile(values, q):
    values = sorted(values)
    if not values:
        return None
    k = (len(values) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def measure(client, url, runs):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    times, queries = [], []
    for _ in range(runs):
        with CaptureQueriesContext(connection) as ctx:
            t = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - t) * 1000)
        assert response.status_code == 200, (url, response.status_code, response.content[:300])
        queries.append(len(ctx.captured_queries))
    return {
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(_percentile(times, 0.95), 1),
        "max_ms": round(max(times), 1),
        "queries": max(queries),
        "runs": runs,
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--labels", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--reseed", action="store_true")
    parser.add_argument(
        "--seed-only", action="store_true", help="seed (e.g. a scratch SQLite for screenshots) and stop"
    )
    parser.add_argument(
        "--rebuild", action="store_true", help="rebuild the roll-ups even when they are there"
    )
    parser.add_argument("--lead-password", default="bench-lead")
    args = parser.parse_args()
    setup_django(args.database_url)

    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment

    from annotator.models import Label, LabelDay, Project
    from annotator.rollups import store

    slug = SLUG if args.labels == 1_000_000 else f"{SLUG}-{args.labels}"
    project = Project.objects.filter(slug=slug).first()
    if project and (args.reseed or Label.objects.filter(project=project).count() != args.labels):
        project.delete()
        project = None
    if project is None:
        project = seed(slug, labels=args.labels, lead_password=args.lead_password)
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("VACUUM ANALYZE")
    rebuild_s = None
    if args.rebuild or not LabelDay.objects.filter(project=project).exists():
        t = time.perf_counter()
        call_command("rebuild_rollups", "--project", slug)
        rebuild_s = round(time.perf_counter() - t, 1)
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("VACUUM ANALYZE")
    if args.seed_only:
        print(f"seeded project {slug!r}; log in as {slug}-lead / {args.lead_password}")
        return

    setup_test_environment()
    settings.ALLOWED_HOSTS = ["*"]
    settings.DEBUG = False
    from django.contrib.auth import get_user_model

    lead = get_user_model().objects.get(username=f"{slug}-lead")
    client = Client()
    client.force_login(lead)
    mv = project.model_versions.order_by("created_at").last()
    first = project.model_versions.order_by("created_at").first()
    cat = project.categories.filter(parent__isnull=True).order_by("position").first()
    annotator = get_user_model().objects.get(username=f"{slug}-a00")
    base = f"/p/{slug}/dashboards"
    api = f"/api/projects/{slug}/dashboards"
    day = dt.date.today()
    pages = {
        "overview": f"{base}/",
        "overview_filtered": f"{base}/?model={mv.pk}&from={day - dt.timedelta(days=60)}&category={cat.pk}",
        "overview_one_annotator": f"{base}/?annotator={annotator.pk}",  # reads that annotator's labels
        "annotators": f"{base}/annotators/",
        "annotators_last_60_days": f"{base}/annotators/?from={day - dt.timedelta(days=60)}",
        "agreement": f"{base}/agreement/",
        "agreement_last_60_days": f"{base}/agreement/?from={day - dt.timedelta(days=60)}",
        "models": f"{base}/models/",
        "cases": f"{base}/cases/?category={cat.pk}&verdict=unreasonable",
        "comparisons": f"{base}/comparisons/",
        "comparisons_one_pair_wins": f"{base}/comparisons/?model_a={mv.pk}&model_b={first.pk}&outcome=win",
        "review_queue": f"/p/{slug}/review/",
        "api_overview": f"{api}/overview/",
        "api_agreement": f"{api}/agreement/",
        "csv_categories": f"{api}/overview/categories.csv",
    }
    load = os.getloadavg()
    figures = {
        "database": connection.vendor,
        "labels": Label.objects.filter(project=project).count(),
        "categories": project.categories.count(),
        "model_versions": project.model_versions.count(),
        "rollup_rows": {m.__name__: m.objects.filter(project=project).count() for m in store.ROLLUPS},
        "rebuild_rollups_s": rebuild_s,
        "load_avg_1_5_15_before": [round(x, 2) for x in load],
    }
    settings.DASHBOARD_CACHE_SECONDS = 0  # cold: no cached page is read or written
    cold = {}
    for name, url in pages.items():
        client.get(url)  # first request warms the connection and PostgreSQL's buffers, not a cache
        cold[name] = measure(client, url, args.runs)
        print(name, "cold", cold[name], file=sys.stderr, flush=True)
    settings.DASHBOARD_CACHE_SECONDS = 300  # the default: the first request below fills the entry
    warm = {}
    for name, url in pages.items():
        if name in ("cases", "csv_categories", "comparisons", "comparisons_one_pair_wins", "review_queue"):
            continue
        client.get(url)
        warm[name] = measure(client, url, args.runs)
        print(name, "warm", warm[name], file=sys.stderr, flush=True)
    figures.update(
        {
            "cold": cold,
            "warm": warm,
            "target_p95_ms": 300,
            "load_avg_1_5_15_after": [round(x, 2) for x in os.getloadavg()],
        }
    )
    report(f"dashboards_{args.labels}", figures)


if __name__ == "__main__":
    main()
