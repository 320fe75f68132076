"""A realistic project at scale on PostgreSQL, written with COPY: the data every load and fault figure
runs on.

    python benchmarks/seed_scale.py [--conversations 1000000] [--database badcase_scale] [--reuse]

For N conversations (defaults for N = 1,000,000):

* N conversations (~0.7 KB of sales-agent messages each: system, user, tool call, tool result,
  reply, user), spread over 90 days, 90 % train / 5 % eval / 5 % holdout, 1 % with priority 1;
* 2 N model responses: two model versions per conversation out of four (agent-v1 … agent-v4; the
  later ones make fewer mistakes), each a parsed Qwen-style `<tool_call>` plus its raw text;
* the queue as `assignment.sync_tasks` builds it: a label task per response, a compare task per
  conversation (its two responses), `overlap` = 2 slots per task;
* N labels: the first N / 2 label tasks are done by two distinct annotators each (verdicts agree
  ~90 %, unreasonable ones carry one or two taxonomy leaves, a third of those a correction;
  60 % approved, 40 % awaiting review);
* N / 5 preferences: the first N / 10 compare tasks are done by two annotators each;
* the default taxonomy, 50 annotators, 5 leads and an admin (unusable passwords: load runs log
  them in by creating their sessions).

The rows are generated in Python from templates and streamed with `COPY … FROM STDIN` (text
format), ids taken from each table's own sequence first (as annotator/bulk.py does); foreign-key
triggers are off for the seeding session (`session_replication_role = replica`: the rows are
consistent by construction, and the checks at the end count what was written). Then VACUUM
ANALYZE and, when the dashboards' roll-up command exists, `manage.py rebuild_rollups`.

`--reuse` keeps the database when it already holds this size. Other benchmarks call `seed()`
(queue_bench.py: one response per conversation, no labels).
"""

import argparse
import hashlib
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._common import DEFAULT_BENCH_DB, report, setup_django  # noqa: E402

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
# Placeholders replaced per row (the quantity sentinels are integers so the raw output parses).
SKU, QTY, STOCK = "@SKU@", 777001, 777002
SCALE_SLUG = "scale-{n}"
OVERLAP = 2
MODEL_VERSIONS = ["agent-v1", "agent-v2", "agent-v3", "agent-v4"]
MISTAKE_RATE = [0.6, 0.45, 0.3, 0.2]  # per model version: later versions are better
COPY_ROWS = 100_000  # rows per COPY statement (one transaction each)
DAYS = 90


def copy_text(value: str) -> str:
    """A value in PostgreSQL's COPY text format."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def mix(*parts: int) -> float:
    """A fixed pseudo-random number in [0, 1) for the parts (a hash, no RNG state: any row can be
    recomputed)."""
    x = 0x9E3779B9
    for p in parts:  # a murmur3-style finaliser per part, so neighbouring inputs do not correlate
        x = (x ^ p) * 0x85EBCA6B & 0xFFFFFFFF
        x = (x ^ (x >> 13)) * 0xC2B2AE35 & 0xFFFFFFFF
        x ^= x >> 16
    return x / 4294967296


def templates(tools=TOOLS) -> dict:
    """COPY-ready texts with the placeholders in them: the conversation, a right and a wrong response."""
    from annotator.importers import assistant_message_from_raw

    messages = [
        {
            "role": "system",
            "content": "You are the sales assistant of Northwind Home. Use the tools; "
            "never guess their results. Be brief and friendly.",
        },
        {"role": "user", "content": f"Hi, could you check whether {SKU} is available? I need {QTY}."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "check_inventory", "arguments": json.dumps({"sku": SKU})},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": json.dumps({"sku": SKU, "in_stock": STOCK})},
        {"role": "assistant", "content": f"Yes, {SKU} is in stock. Shall I order {QTY} for you?"},
        {"role": "user", "content": "Yes please, go ahead and place the order right now."},
    ]
    right = (
        "<think>The user confirmed.</think>\n<tool_call>\n"
        + json.dumps({"name": "create_order", "arguments": {"sku": SKU, "quantity": QTY}})
        + "\n</tool_call>"
    )
    # The classic badcase: the SKU retyped in lower case and a made-up confirmation.
    wrong = (
        "<think>Order it.</think>\nDone! Your order is placed.\n<tool_call>\n"
        + json.dumps({"name": "create_order", "arguments": {"sku": SKU.lower(), "quantity": QTY}})
        + "\n</tool_call>"
    )
    out = {"messages": copy_text(json.dumps(messages)), "tools": copy_text(json.dumps(tools))}
    for name, raw in (("right", right), ("wrong", wrong)):
        message = assistant_message_from_raw(raw, tools)
        assert message.get("tool_calls") and not message.get("malformed"), message
        out[f"{name}_raw"], out[f"{name}_message"] = copy_text(raw), copy_text(json.dumps(message))
    out["correction"] = copy_text(json.dumps(assistant_message_from_raw(right, tools)))
    return out


def fill(text: str, g: int) -> str:
    sku = f"{chr(65 + g % 8)}-{100 + g * 7 % 900}"
    return (
        text.replace(SKU, sku)
        .replace(SKU.lower(), sku.lower())
        .replace(str(QTY), str(1 + g % 9))
        .replace(str(STOCK), str(g * 13 % 81))
    )


class Seeder:
    """Streams one project's rows into PostgreSQL with COPY. All ids are reserved up front, so every row
    (a slot's task, a label's response and annotator) is computed from its index alone."""

    def __init__(
        self,
        *,
        n: int,
        responses_per_conversation: int,
        labels: int,
        preferences: int,
        overlap: int,
        slug: str,
        name: str,
        annotators: int,
        leads: int,
        username_prefix: str,
        external_prefix: str,
        taxonomy: dict | None,
        model_versions: list[str],
        compare_tasks: bool,
        log=print,
    ):
        assert responses_per_conversation in (1, 2)
        assert labels <= n * responses_per_conversation * overlap and overlap <= annotators
        self.n, self.rpc, self.overlap = n, responses_per_conversation, overlap
        self.compare = compare_tasks and responses_per_conversation == 2
        self.done_label_tasks = labels // overlap
        self.done_compare_tasks = (preferences // overlap) if self.compare else 0
        self.slug, self.name, self.log = slug, name, log
        self.annotators, self.leads, self.username_prefix = annotators, leads, username_prefix
        self.external_prefix, self.taxonomy, self.model_version_names = (
            external_prefix,
            taxonomy,
            model_versions,
        )
        self.now = datetime.now(UTC).replace(microsecond=0)
        self.timings = {}

    # --- helpers -------------------------------------------------------------------------
    def reserve(self, cur, table: str, count: int) -> int:
        """The first of `count` consecutive ids taken from the table's own sequence."""
        cur.execute("SELECT pg_get_serial_sequence(%s, 'id')", [table])
        seq = cur.fetchone()[0]
        cur.execute("SELECT nextval(%s)", [seq])
        first = cur.fetchone()[0]
        if count > 1:
            cur.execute("SELECT setval(%s, %s)", [seq, first + count - 1])
        return first

    def copy(self, table: str, columns: list[str], rows, total: int):
        from django.db import connection, transaction

        started = time.perf_counter()
        written, block = 0, []
        cols = ", ".join(columns)
        while True:
            with transaction.atomic(), connection.cursor() as cur:
                cur.execute(
                    "SET LOCAL session_replication_role = replica"
                )  # no FK triggers (see the docstring)
                with cur.cursor.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
                    for line in rows:
                        block.append(line)
                        written += 1
                        if len(block) >= 2000:
                            copy.write("".join(block))
                            block = []
                        if written % COPY_ROWS == 0:
                            break
                    if block:
                        copy.write("".join(block))
                        block = []
            if written % COPY_ROWS or written == total:
                break
            self.log(f"  {table}: {written:,}/{total:,} ({time.perf_counter() - started:.0f} s)")
        assert written == total, (table, written, total)
        self.timings[table] = round(time.perf_counter() - started, 1)
        self.log(f"  {table}: {written:,} rows in {self.timings[table]} s")

    def at(self, g: int) -> datetime:
        """When conversation g arrived: evenly over the last DAYS days, oldest first."""
        return self.now - timedelta(seconds=(self.n - g) * DAYS * 86400 // max(1, self.n))

    def version_of(self, g: int, k: int) -> int:
        return (g + k) % len(self.model_version_ids)

    def is_wrong(self, g: int, k: int) -> bool:
        return mix(g, k, 11) < MISTAKE_RATE[self.version_of(g, k) % len(MISTAKE_RATE)]

    def annotator_of(self, task_id: int, index: int) -> int:
        return self.annotator_ids[
            (task_id * 7 + index) % len(self.annotator_ids)
        ]  # distinct per task (overlap <= A)

    # --- the project ---------------------------------------------------------------------
    def setup(self):
        from django.contrib.auth import get_user_model

        from annotator.models import Membership, ModelVersion, Project, Role, TaxonomyCategory
        from annotator.taxonomy import seed_default_taxonomy

        User = get_user_model()
        self.project = Project.objects.create(
            name=self.name,
            slug=self.slug,
            tools=TOOLS,
            overlap=self.overlap,
            guidelines="Label whether the agent's last step was reasonable.",
        )
        self.model_version_ids = [
            ModelVersion.objects.create(project=self.project, name=name).pk
            for name in self.model_version_names
        ]
        if self.taxonomy is None:
            seed_default_taxonomy(self.project)
        else:
            position = 0
            for parent_name, children in self.taxonomy.items():
                parent = TaxonomyCategory.objects.create(
                    project=self.project, name=parent_name, position=position
                )
                for child in children:
                    position += 1
                    TaxonomyCategory.objects.create(
                        project=self.project,
                        parent=parent,
                        name=child,
                        position=position,
                        description=f"{child} in a tool-calling step.",
                        root_cause="Under-specified tool description.",
                        recommended_fix="Add examples to the tool spec.",
                    )
        self.leaves = list(
            TaxonomyCategory.objects.filter(project=self.project, parent__isnull=False)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        people = [
            (f"{self.username_prefix}annotator-{i:03d}", Role.ANNOTATOR) for i in range(self.annotators)
        ]
        people += [(f"{self.username_prefix}lead-{i}", Role.LEAD) for i in range(self.leads)]
        people += [(f"{self.username_prefix}admin", Role.ADMIN)] if self.leads else []
        users = [User(username=name) for name, _ in people]
        for u in users:
            u.set_unusable_password()
        users = User.objects.bulk_create(users)
        Membership.objects.bulk_create(
            [
                Membership(user=u, project=self.project, role=role)
                for u, (_, role) in zip(users, people, strict=True)
            ]
        )
        self.annotator_ids = [
            u.pk for u, (_, role) in zip(users, people, strict=True) if role == Role.ANNOTATOR
        ]
        self.lead_ids = [u.pk for u, (_, role) in zip(users, people, strict=True) if role == Role.LEAD]

    def run(self) -> dict:
        from django.db import connection

        started = time.perf_counter()
        self.setup()
        n, rpc, ov, p = self.n, self.rpc, self.overlap, self.project.pk
        n_resp = n * rpc
        n_tasks = n_resp + (n if self.compare else 0)
        lt, ct = self.done_label_tasks, self.done_compare_tasks
        with connection.cursor() as cur:
            cur.execute("SET synchronous_commit = off")
            c0 = self.reserve(cur, "annotator_conversation", n)
            r0 = self.reserve(cur, "annotator_modelresponse", n_resp)
            t0 = self.reserve(cur, "annotator_task", n_tasks)
            s0 = self.reserve(cur, "annotator_slot", n_tasks * ov)
            l0 = self.reserve(cur, "annotator_label", lt * ov) if lt else 0
            f0 = self.reserve(cur, "annotator_preference", ct * ov) if ct else 0
        tpl = templates()

        def stamp(dt: datetime) -> str:
            return dt.isoformat()

        def conversations():
            for g in range(n):
                split = "train" if mix(g, 1) < 0.9 else ("eval" if mix(g, 2) < 0.5 else "holdout")
                prio = 1 if mix(g, 3) < 0.01 else 0
                h = hashlib.sha256(f"{self.slug}:{g}".encode()).hexdigest()
                yield (
                    f"{c0 + g}\t{p}\t{self.external_prefix}{g}\t{fill(tpl['messages'], g)}\t{tpl['tools']}\t"
                    f'{{"source": "seed-scale", "session": {g}}}\t{h}\t{split}\t{prio}\t{stamp(self.at(g))}\n'
                )

        def responses():
            for g in range(n):
                for k in range(rpc):
                    kind = "wrong" if self.is_wrong(g, k) else "right"
                    h = hashlib.sha256(f"{self.slug}:{g}:{k}".encode()).hexdigest()
                    yield (
                        f"{r0 + g * rpc + k}\t{c0 + g}\t{self.model_version_ids[self.version_of(g, k)]}\t6\t"
                        f"{fill(tpl[kind + '_raw'], g)}\t{fill(tpl[kind + '_message'], g)}\t{{}}\t{h}\t"
                        f"{mix(g, k, 5):.6f}\t{stamp(self.at(g))}\n"
                    )

        def priority(g):
            return 1 if mix(g, 3) < 0.01 else 0

        def tasks():
            for j in range(n_resp):  # label tasks, in response order
                g = j // rpc
                done = ov if j < lt else 0
                yield f"{t0 + j}\t{p}\tlabel\t{r0 + j}\t\\N\t{priority(g)}\t{done}\t{stamp(self.at(g))}\n"
            if self.compare:
                for g in range(n):
                    done = ov if g < ct else 0
                    yield (
                        f"{t0 + n_resp + g}\t{p}\tcompare\t"
                        f"{r0 + g * rpc}\t{r0 + g * rpc + 1}\t{priority(g)}\t"
                        f"{done}\t{stamp(self.at(g))}\n"
                    )

        def slots():
            for j in range(n_tasks):
                task_id = t0 + j
                g = j // rpc if j < n_resp else j - n_resp
                done = j < lt if j < n_resp else (j - n_resp) < ct
                when = stamp(self.at(g) + timedelta(hours=6)) if done else stamp(self.now)
                for i in range(ov):
                    annotator = self.annotator_of(task_id, i) if done else "\\N"
                    yield (
                        f"{s0 + j * ov + i}\t{p}\t{task_id}\t{i}\t{'done' if done else 'free'}\t"
                        f"{annotator}\t\\N\t"
                        f"\\N\t{priority(g)}\t{ov if done else 0}\t{float(task_id)}\t{when}\n"
                    )

        def verdict(j: int, i: int) -> bool:
            """True: unreasonable. Annotators agree with the truth 95 % of the time each."""
            g, k = divmod(j, rpc)
            wrong = self.is_wrong(g, k)
            return (not wrong) if mix(j, i, 7) < 0.05 else wrong

        def labels():
            for j in range(lt):
                g, k = divmod(j, rpc)
                for i in range(ov):
                    bad = verdict(j, i)
                    status = "approved" if mix(j, i, 8) < 0.6 else "submitted"
                    when = stamp(self.at(g) + timedelta(hours=6, minutes=i * 10))
                    note = "SKU retyped; order confirmed before the tool ran" if bad else ""
                    yield (
                        f"{l0 + j * ov + i}\t{r0 + j}\t{self.annotator_of(t0 + j, i)}\t{p}\t"
                        f"{self.model_version_ids[self.version_of(g, k)]}\t"
                        f"{'unreasonable' if bad else 'reasonable'}\t{note}\t"
                        f"{int(5000 + 80000 * mix(j, i, 9))}\t"
                        f"{status}\t{{}}\t{when}\t{when}\t{when}\n"
                    )

        def label_categories():
            for j in range(lt):
                for i in range(ov):
                    if verdict(j, i):
                        first = self.leaves[j % len(self.leaves)]
                        yield f"{l0 + j * ov + i}\t{first}\n"
                        if mix(j, i, 10) < 0.25:
                            second = self.leaves[(j + 3) % len(self.leaves)]
                            if second != first:
                                yield f"{l0 + j * ov + i}\t{second}\n"

        def corrections():
            for j in range(lt):
                g = j // rpc
                for i in range(ov):
                    if verdict(j, i) and mix(j, i, 12) < 1 / 3:
                        when = stamp(self.at(g) + timedelta(hours=6))
                        yield f"{l0 + j * ov + i}\t{fill(tpl['correction'], g)}\t{when}\t{when}\n"

        def preferences():
            for g in range(ct):
                for i in range(ov):
                    wa, wb = self.is_wrong(g, 0), self.is_wrong(g, 1)
                    r = mix(g, i, 13)
                    if wa == wb:
                        choice = ("tie" if not wa else "both_bad") if r < 0.6 else ("a" if r < 0.8 else "b")
                    else:
                        choice = ("b" if wa else "a") if r < 0.9 else ("a" if wa else "b")
                    status = "approved" if mix(g, i, 14) < 0.6 else "submitted"
                    when = stamp(self.at(g) + timedelta(hours=7, minutes=i * 10))
                    yield (
                        f"{f0 + g * ov + i}\t{r0 + g * rpc}\t{r0 + g * rpc + 1}\t"
                        f"{self.annotator_of(t0 + n_resp + g, i)}\t"
                        f"{choice}\t\t{'a' if mix(g, i, 15) < 0.5 else 'b'}\t"
                        f"{int(4000 + 60000 * mix(g, i, 16))}\t"
                        f"{status}\t{when}\t{when}\t{when}\n"
                    )

        self.log(
            f"seeding {self.slug}: {n:,} conversations, {n_resp:,} responses, {n_tasks:,} tasks, "
            f"{n_tasks * ov:,} slots, {lt * ov:,} labels, {ct * ov:,} preferences"
        )
        self.copy(
            "annotator_conversation",
            [
                "id",
                "project_id",
                "external_id",
                "messages",
                "tools",
                "metadata",
                "content_hash",
                "split",
                "priority",
                "created_at",
            ],
            conversations(),
            n,
        )
        self.copy(
            "annotator_modelresponse",
            [
                "id",
                "conversation_id",
                "model_version_id",
                "context_length",
                "raw_text",
                "message",
                "generation_settings",
                "response_hash",
                "uncertainty",
                "created_at",
            ],
            responses(),
            n_resp,
        )
        self.copy(
            "annotator_task",
            [
                "id",
                "project_id",
                "kind",
                "response_id",
                "response_b_id",
                "priority",
                "completed",
                "created_at",
            ],
            tasks(),
            n_tasks,
        )
        self.copy(
            "annotator_slot",
            [
                "id",
                "project_id",
                "task_id",
                "index",
                "state",
                "annotator_id",
                "reserved_for_id",
                "locked_until",
                "priority",
                "progress",
                "order_key",
                "updated_at",
            ],
            slots(),
            n_tasks * ov,
        )
        if lt:
            self.copy(
                "annotator_label",
                [
                    "id",
                    "response_id",
                    "annotator_id",
                    "project_id",
                    "model_version_id",
                    "verdict",
                    "note",
                    "time_spent_ms",
                    "status",
                    "draft",
                    "created_at",
                    "updated_at",
                    "submitted_at",
                ],
                labels(),
                lt * ov,
            )
            n_cat = sum(1 for _ in label_categories())
            self.copy(
                "annotator_label_categories", ["label_id", "taxonomycategory_id"], label_categories(), n_cat
            )
            n_cor = sum(1 for _ in corrections())
            self.copy(
                "annotator_correction",
                ["label_id", "message", "created_at", "updated_at"],
                corrections(),
                n_cor,
            )
        if ct:
            self.copy(
                "annotator_preference",
                [
                    "id",
                    "response_a_id",
                    "response_b_id",
                    "annotator_id",
                    "choice",
                    "reason",
                    "left_side",
                    "time_spent_ms",
                    "status",
                    "created_at",
                    "updated_at",
                    "submitted_at",
                ],
                preferences(),
                ct * ov,
            )
        self.timings["rows_s"] = round(time.perf_counter() - started, 1)

        t = time.perf_counter()
        with connection.cursor() as cur:
            for table in (
                "annotator_conversation",
                "annotator_modelresponse",
                "annotator_task",
                "annotator_slot",
                "annotator_label",
                "annotator_label_categories",
                "annotator_correction",
                "annotator_preference",
            ):
                cur.execute(f"VACUUM (ANALYZE) {table}")
        self.timings["vacuum_analyze_s"] = round(time.perf_counter() - t, 1)
        self.timings["total_s"] = round(time.perf_counter() - started, 1)
        return self.timings


def seed(
    n: int,
    *,
    responses_per_conversation: int = 2,
    labels: int | None = None,
    preferences: int | None = None,
    overlap: int = OVERLAP,
    slug: str | None = None,
    name: str | None = None,
    annotators: int = 50,
    leads: int = 5,
    username_prefix: str = "scale-",
    external_prefix: str = "s-",
    taxonomy: dict | None = None,
    model_versions: list[str] | None = None,
    compare_tasks: bool = True,
    log=print,
):
    """Seed one project into the current (PostgreSQL) database. Returns (project, timings)."""
    seeder = Seeder(
        n=n,
        responses_per_conversation=responses_per_conversation,
        labels=n if labels is None else labels,
        preferences=n // 5 if preferences is None else preferences,
        overlap=overlap,
        slug=slug or SCALE_SLUG.format(n=n),
        name=name or f"Scale {n:,}",
        annotators=annotators,
        leads=leads,
        username_prefix=username_prefix,
        external_prefix=external_prefix,
        taxonomy=taxonomy,
        model_versions=model_versions or MODEL_VERSIONS,
        compare_tasks=compare_tasks,
        log=log,
    )
    timings = seeder.run()
    return seeder.project, timings


def counts(project) -> dict:
    from django.db import connection

    queries = {
        "conversations": "SELECT count(*) FROM annotator_conversation WHERE project_id = %(p)s",
        "responses": "SELECT count(*) FROM annotator_modelresponse r JOIN annotator_conversation c "
        "ON c.id = r.conversation_id WHERE c.project_id = %(p)s",
        "tasks": "SELECT count(*) FROM annotator_task WHERE project_id = %(p)s",
        "slots": "SELECT count(*) FROM annotator_slot WHERE project_id = %(p)s",
        "labels": "SELECT count(*) FROM annotator_label WHERE project_id = %(p)s",
        "preferences": "SELECT count(*) FROM annotator_preference f JOIN annotator_modelresponse r "
        "ON r.id = f.response_a_id JOIN annotator_conversation c ON c.id = r.conversation_id "
        "WHERE c.project_id = %(p)s",
        "corrections": "SELECT count(*) FROM annotator_correction x JOIN annotator_label l "
        "ON l.id = x.label_id WHERE l.project_id = %(p)s",
    }
    out = {}
    with connection.cursor() as cur:
        for name, sql in queries.items():
            cur.execute(sql, {"p": project.pk})
            out[name] = cur.fetchone()[0]
    return out


def find_seeded(n: int):
    """The scale project of this size when it is complete (conversations and labels as seeded; load runs add
    labels), else None."""
    from annotator.models import Conversation, Label, Project

    project = Project.objects.filter(slug=SCALE_SLUG.format(n=n)).first()
    if (
        project
        and Conversation.objects.filter(project=project).count() == n
        and Label.objects.filter(project=project).count() >= n
    ):
        return project
    return None


def rebuild_rollups(project, only_if_missing: bool = False) -> float | None:
    """Seconds `manage.py rebuild_rollups` took (the dashboards read roll-up tables the COPY bypassed), or
    None where the command does not exist, or (only_if_missing) the project's roll-ups are already there."""
    from django.core.management import call_command, get_commands

    if "rebuild_rollups" not in get_commands():
        return None
    if only_if_missing:
        try:
            from annotator.models import LabelDay

            if LabelDay.objects.filter(project=project).exists():
                return None
        except Exception:  # noqa: BLE001 - another roll-up layout: rebuild to be safe
            pass
    started = time.perf_counter()
    call_command("rebuild_rollups", project=project.slug)
    return round(time.perf_counter() - started, 1)


def database_url(name: str) -> str:
    base = (os.environ.get("BENCH_DATABASE_URL") or DEFAULT_BENCH_DB).rsplit("/", 1)[0]
    return f"{base}/{name}"


def default_database(n: int) -> str:
    """badcase_scale for the million-row project, badcase_scale_<N> for other sizes (so they never wipe
    it)."""
    return "badcase_scale" if n == 1_000_000 else f"badcase_scale_{n}"


def ensure(n: int, database: str | None = None, reuse: bool = True, log=print) -> tuple[object, dict]:
    """Django set up on the scale database with the project of size n: reused when complete, else seeded
    fresh."""
    from django.db import connections

    url = database_url(database or default_database(n))
    setup_django(url, migrate=False)
    project = None
    if reuse:
        try:
            project = find_seeded(n)
        except Exception:  # no tables yet
            project = None
        connections.close_all()
    figures = {"database_url": url.split("@")[-1], "conversations": n, "reused_database": project is not None}
    if project is None:
        setup_django(url, fresh=True)
        project, timings = seed(n, log=log)
        figures["seed_s"] = timings
        figures["rebuild_rollups_s"] = rebuild_rollups(project)
    else:
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        # Roll-ups are derived data and new roll-up tables may have come with the migrations: rebuild them.
        figures["rebuild_rollups_s"] = rebuild_rollups(project)
    return project, figures


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=1_000_000)
    parser.add_argument(
        "--database",
        default=None,
        help="database name (default badcase_scale, or badcase_scale_<N> for other sizes)",
    )
    parser.add_argument("--reuse", action="store_true", help="skip seeding if this size is already there")
    args = parser.parse_args()
    os.environ.setdefault("DEBUG", "0")  # DEBUG keeps every query in memory
    os.environ.setdefault("SECRET_KEY", "seed-scale")
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731 - stdout is the JSON line
    started = time.perf_counter()
    project, figures = ensure(args.conversations, args.database, reuse=args.reuse, log=log)
    from django.db import connection

    figures["rows"] = counts(project)
    with connection.cursor() as cur:
        cur.execute("SELECT pg_database_size(current_database())")
        figures["database_gb"] = round(cur.fetchone()[0] / 2**30, 2)
    figures["wall_s"] = round(time.perf_counter() - started, 1)
    figures["method"] = (
        "COPY FROM STDIN (text format) from Python generators, ids reserved from each table's "
        "sequence, FK triggers off while seeding, then VACUUM ANALYZE"
    )
    figures["load_average_at_end"] = round(os.getloadavg()[0], 2)
    report("seed_scale", figures)


if __name__ == "__main__":
    main()
