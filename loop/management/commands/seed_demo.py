"""Demo data: users, a sales-agent project, conversations with real badcases, through the real importer;
then three weeks of history and a model lineage, so that every page has something to show.

Responses come from the offline demo base model when it has been built (what the model
really said); otherwise from a scripted unreliable agent whose mistakes are the ones the
demo model is pre-trained to make. With the model built, demo-base is registered with its folder.

History (loop/demo_history.py): scripted annotators (maria, tomas, li) label and compare through the
real queue, the lead reviews and records gold decisions, all moved back in time. Lineage
(loop/demo_lineage.py): SFT and DPO snapshots, a held-out eval suite, and with the model built an SFT job
and a base-model eval run queued for the worker; the DPO job and the other eval runs follow on their own.

Idempotent: running it again changes nothing and queues nothing.
"""

import json
import random
import time

from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.core.management.base import BaseCommand
from django.db import transaction

from annotator.importers import run_import
from annotator.models import ImportJob, Membership, Project, Role
from annotator.taxonomy import seed_default_taxonomy
from inference.generation import generate
from inference.loading import load_model
from loop import demo_history, demo_lineage
from training import demo_domain

DEMO_USERS = [
    # username, password, role, staff
    ("admin", "badcase-admin", Role.ADMIN, True),
    ("lead", "badcase-lead", Role.LEAD, False),
    ("annotator", "badcase-annotator", Role.ANNOTATOR, False),
    ("annotator2", "badcase-annotator2", Role.ANNOTATOR, False),
]

GUIDELINES = """# Labelling the Northwind sales agent

The agent answers shoppers and **must use its tools** for anything live: stock, prices, orders, callbacks.

1. **Verdict** — *reasonable* only if a careful human agent would have said exactly this.
2. **Categories** — pick every failure you see. A missing tool call is *Tool not called*;
   a guessed stock level is also *Hallucinated fact*.
3. **Correction** — write what the agent should have said. For tool calls, give the exact
   arguments: SKUs are case-sensitive (`A-113`, not `a113`), quantities are integers.
4. **Pairs** — pick the better response and say why in one line. *Both bad* is allowed.

Keyboard: `Y`/`N` verdict, a category's number (`12` = `1` then `2`; `/` filters the list), `A`/`B`/`T`/`X` \
in comparisons, `Ctrl+Enter` submit, `S` skip, `?` for all keys. *History* reopens what you submitted \
until a lead reviews it.
"""


def scripted_response(case: dict, rng: random.Random) -> tuple[str, str]:
    """(raw model text, what went wrong) for one context, in the unreliable agent's ways."""
    expected = case["expected"]
    calls = expected.get("tool_calls") or []
    roll = rng.random()
    if calls:
        fn = calls[0]["function"]
        args = json.loads(fn["arguments"])
        if roll < 0.35:
            return "\n".join(
                demo_domain.call_text(c["function"]["name"], json.loads(c["function"]["arguments"]))
                for c in calls
            ), "correct"
        if roll < 0.6:
            return "Yes, that is in stock and ready to ship today. Anything else?", "no_call"
        if roll < 0.85:
            for kind, key in (
                ("sku_lower", "sku"),
                ("qty_str", "quantity"),
                ("oid_digits", "order_id"),
                ("time_only", "time"),
                ("query_lower", "query"),
                ("cid_missing", "customer_id"),
            ):
                if key in args:
                    try:
                        return demo_domain.call_text(
                            fn["name"], demo_domain._corrupt(kind, args)
                        ), "wrong_args"
                    except (KeyError, IndexError, ValueError):
                        continue
            return demo_domain.call_text(fn["name"], {}), "wrong_args"
        return (
            demo_domain.call_text(fn["name"], args)
            + '\n<tool_response>\n{"in_stock": 12}\n</tool_response>\nGood news: 12 units are in stock.'
        ), "fabricated"
    if roll < 0.5:
        return expected.get("content") or "", "correct"
    if roll < 0.8:
        return demo_domain.call_text("search_product", {"query": "policy"}), "false_call"
    return "OK.", "too_short"


def demo_records(n: int, seed: int, model_responses=None) -> list[dict]:
    rng = random.Random(seed)
    cases = demo_domain.eval_prompts(n, seed=seed + 1000)
    records = []
    for i, case in enumerate(cases):
        responses = []
        if model_responses is not None:
            responses.append(
                {
                    "model": model_responses["name"],
                    "raw": model_responses["outputs"][i],
                    "generation": model_responses["settings"],
                }
            )
        else:
            raw, _what = scripted_response(case, rng)
            responses.append({"model": "sales-agent-v0 (scripted)", "raw": raw})
        if i % 3 == 0:  # a second opinion on the same context, for pairwise comparison
            # one that differs from the first: the same text twice is no comparison, and two items that
            # teach the same row are what the dataset audit flags as exact duplicates
            retry = random.Random(f"{seed}-{i}")  # retries draw apart: the rest of the demo stays as it was
            for attempt in range(8):
                raw2, _ = scripted_response(case, rng if attempt == 0 else retry)
                if raw2 != responses[0]["raw"]:
                    responses.append({"model": "sales-agent-v1 (scripted)", "raw": raw2})
                    break
        records.append(
            {
                # the agent's own chat ids (the cases come from the demo world's held-out stream; an
                # "eval-…" id on a project conversation would read as an evaluation case)
                "external_id": f"chat-{seed}-{i + 1:04d}",
                "messages": case["messages"],
                "tools": case["tools"],
                "metadata": {**case["metadata"], "expected": case["expected"]},
                "split": "eval" if i % 10 == 0 else "train",
                # calls and policy answers first: the demo's tool and knowledge fixes both get labelled
                "priority": 1 if case["metadata"].get("expects_call") or case["expected"].get("facts") else 0,
                "responses": responses,
            }
        )
    return records


class Command(BaseCommand):
    help = "Create demo users and a demo sales-agent project with a few hundred badcases (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--conversations", type=int, default=300)
        parser.add_argument("--seed", type=int, default=7)
        parser.add_argument("--scripted", action="store_true", help="do not use the demo model even if built")
        parser.add_argument("--no-history", action="store_true", help="import only: no scripted history")
        parser.add_argument(
            "--no-lineage", action="store_true", help="no snapshots, eval suite or training jobs"
        )

    def handle(self, *args, **opts):
        users = self.ensure_users()
        project = self.ensure_project(users)
        if project.conversations.exists():
            self.stdout.write(f"demo project '{project.slug}' already has data; nothing to import")
        else:
            model_responses = (
                None if opts["scripted"] else self.model_responses(opts["conversations"], opts["seed"])
            )
            records = demo_records(opts["conversations"], opts["seed"], model_responses)
            data = ("\n".join(json.dumps(r) for r in records) + "\n").encode()
            job = ImportJob(
                project=project, original_name="demo.jsonl", size_bytes=len(data), created_by=users["admin"]
            )
            job.file.save("demo.jsonl", ContentFile(data), save=False)
            job.save()
            started = time.perf_counter()
            job = run_import(job.pk)
            self.stdout.write(f"imported: {job.message} ({time.perf_counter() - started:.1f} s)")
        base = demo_lineage.register_base(project)
        if base is not None and base.path:
            self.stdout.write(f"model version {base.name}: base model in {base.path}")
        if not opts["no_history"]:
            self.seed_history(project, users, opts["seed"])
        if not opts["no_lineage"]:
            self.seed_lineage(project, users["admin"], base)
        for username, password, role, _ in DEMO_USERS:
            self.stdout.write(f"  login {username:<11} password {password:<20} ({role})")

    def seed_history(self, project, users, seed):
        if demo_history.has_history(project):
            self.stdout.write("history: already seeded")
            return
        started = time.perf_counter()
        counts = demo_history.seed_history(project, users["lead"], newcomer=users["annotator"], seed=seed)
        self.stdout.write(
            f"history: {counts['labels']} labels and {counts['comparisons']} comparisons by "
            f"{', '.join(demo_history.SCRIPTED_NAMES)} over {demo_history.DAYS} days, {counts['reviews']} "
            f"reviews, {counts['gold']} gold decisions; {counts['newcomer_labels']} labels by annotator "
            f"({time.perf_counter() - started:.1f} s)"
        )

    def seed_lineage(self, project, admin, base):
        started = time.perf_counter()
        suites = demo_lineage.ensure_suites(project, admin)
        snapshots = demo_lineage.ensure_snapshots(project, admin)
        for snap in snapshots.values():
            self.stdout.write(f"snapshot {snap.name}: {snap.status} — {snap.message}")
        if base is None or not base.path:
            self.stdout.write("demo model not built: no training lineage")
            return
        queued = demo_lineage.queue_lineage(project, admin, base, snapshots, suites)
        if queued.get("already"):
            self.stdout.write("lineage: already queued")
        elif queued.get("not_ready"):
            self.stdout.write(f"no training lineage: snapshot {', '.join(queued['not_ready'])} is not ready")
        else:
            self.stdout.write(
                f"queued for the worker: SFT job {queued['sft_job']} from {base.name} and eval run "
                f"{queued['base_eval_run']} of it on {suites['unseen'].name} (and on the other demo "
                "suites); DPO and the other eval runs follow "
                f"({time.perf_counter() - started:.1f} s)"
            )

    def ensure_users(self) -> dict:
        User = get_user_model()
        users = {}
        for username, password, _role, staff in DEMO_USERS:
            user, created = User.objects.get_or_create(
                username=username, defaults={"is_staff": staff, "is_superuser": staff}
            )
            if created:
                user.set_password(password)
                user.save()
            users[username] = user
        return users

    @transaction.atomic
    def ensure_project(self, users) -> Project:
        project, created = Project.objects.get_or_create(
            slug="sales-agent",
            defaults={
                "name": "Northwind sales agent",
                "guidelines": GUIDELINES,
                "tools": demo_domain.TOOLS,
                "overlap": 2,
            },
        )
        if created:
            seed_default_taxonomy(project)
        for username, _pw, role, _ in DEMO_USERS:
            Membership.objects.get_or_create(user=users[username], project=project, defaults={"role": role})
        return project

    def model_responses(self, n: int, seed: int):
        """The demo base model's own greedy outputs for the demo contexts, if the model is built."""
        model_dir = demo_lineage.model_folder()
        if not (model_dir / "config.json").exists():
            self.stdout.write("demo model not built: using the scripted agent's responses")
            return None
        cases = demo_domain.eval_prompts(n, seed=seed + 1000)
        self.stdout.write(f"generating {n} responses with the demo model in {model_dir} ...")
        started = time.perf_counter()
        loaded = load_model(str(model_dir))
        # the evaluation runner's generation (one CPU thread for a tiny model: several are far slower)
        outputs = [g.text for g in generate(loaded, [(c["messages"], demo_domain.TOOLS) for c in cases], 128)]
        self.stdout.write(f"generated in {time.perf_counter() - started:.1f} s")
        return {"name": "demo-base", "outputs": outputs, "settings": {"decoding": "greedy"}}
