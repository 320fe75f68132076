"""Building eval suites, and checking a suite against a model's training data.

A suite is a versioned, immutable list of cases: an input context (messages + tools) and
the gold assistant turn that should follow, with taxonomy categories and turn depth.
Sources:

* ``suite_from_snapshot`` — a ready *eval* dataset snapshot (held-out conversations,
  approved corrections and approved reasonable responses; training/snapshots/);
* ``suite_from_gold_jsonl`` — one case per line:
  ``{"id", "messages", "tools"?, "expected", "categories"?, "turn_depth"?, "metadata"?}``
  (``expected`` tool calls may carry ``optional`` and ``acceptable``, see metrics.md; ``expected.facts``, a
  list of texts the right reply must state, gives the knowledge_accuracy metric);
* ``suite_from_bfcl`` — BFCL test records and their possible answers (toolcalls.bfcl);
* ``suite_from_scenarios`` — scripted multi-turn conversations, one per line
  ``{"id", "messages", "tools"?, "categories"?}``: every assistant turn becomes a case
  whose context is everything before it;
* ``suite_from_conversations`` — the same cut over the project's held-out conversations;
* ``suite_from_demo`` — the demo domain's held-out prompts (training/demo_domain.py).

Every source goes through ``create_suite``: cases are validated one by one (a suite must
be exact, so one bad case refuses the whole suite, every error with its line and field),
hashed, and stored as version N+1 of the name — unless they equal the latest version,
which is then returned unchanged.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from annotator.models import Conversation, Project, Split, canonical_json
from toolcalls import bfcl
from toolcalls.errors import FieldError
from toolcalls.jsonl import decode_line, read_jsonl_lines, storage_problem
from toolcalls.match import expected_calls
from toolcalls.validate import validate_assistant_message, validate_messages, validate_tool_specs
from training import demo_domain
from training.snapshots.layouts import display_row
from training.snapshots.rows import prompt_hash
from training.snapshots.storage import media_path, read_index

from .models import EvalCase, EvalSettings, EvalSuite

log = logging.getLogger(__name__)

MAX_CASES = getattr(settings, "EVAL_MAX_SUITE_CASES", 100_000)
MAX_ERRORS = 200
MAX_TURN_DEPTH = 32_767  # EvalCase.turn_depth, a PositiveSmallIntegerField
MAX_CONTEXT_LENGTH = 2**31 - 1  # EvalCase.context_length, a PositiveIntegerField


def default_suite(project) -> EvalSuite | None:
    """The suite a run uses when none is named: the project's default suite, else its newest."""
    return (
        EvalSettings.for_project(project).default_suite
        or EvalSuite.objects.filter(project=project).order_by("-created_at", "-id").first()
    )


@dataclass(frozen=True)
class CaseError:
    line: int  # 1-based line (or case number); 0 for the whole input
    field: str
    message: str

    def __str__(self):
        where = f"line {self.line}" if self.line else "input"
        return f"{where}: {self.field + ': ' if self.field else ''}{self.message}"


class SuiteError(ValueError):
    """The input could not become a suite; ``errors`` says where and why."""

    def __init__(self, errors: list[CaseError]):
        self.errors = errors[:MAX_ERRORS]
        more = f" (and {len(errors) - MAX_ERRORS} more)" if len(errors) > MAX_ERRORS else ""
        super().__init__("; ".join(str(e) for e in self.errors[:5]) + more)


# =============================================================================== cases


def turn_depth_of(messages: list) -> int:
    return sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "user")


def _as_tools(value, project_tools):
    """The case's tools, or the project's; raises ValueError for a string that holds no storable JSON."""
    if value is None or value == "":
        return project_tools or []
    if isinstance(value, str):  # TRL layouts keep tools as a JSON string
        tools, error = decode_line(value.encode("utf-8", "surrogatepass"), max_bytes=len(value) * 4 + 1)
        error = error or storage_problem(tools)
        if error:
            raise ValueError(error.message)
        return tools
    return value


def check_case(raw: dict, line: int, project_tools: list) -> tuple[dict | None, list[CaseError]]:
    """One case record -> the normalised case, or the errors that refuse it."""
    if not isinstance(raw, dict):
        return None, [CaseError(line, "", "each case must be a JSON object")]
    errors: list[CaseError] = []
    try:
        tools = _as_tools(raw.get("tools"), project_tools)
    except ValueError as exc:
        return None, [CaseError(line, "tools", f"is a string that does not hold JSON ({exc})")]
    errors += [CaseError(line, e.field, e.message) for e in validate_tool_specs(tools)]
    # No tools or an empty list: call names are not checked (metrics.md), the expected calls decide.
    names_from = tools if tools and not errors else None
    messages = raw.get("messages")
    errors += [CaseError(line, e.field, e.message) for e in validate_messages(messages, names_from)]
    if (
        isinstance(messages, list)
        and messages
        and isinstance(messages[-1], dict)
        and messages[-1].get("role") not in ("user", "tool")
    ):
        errors.append(
            CaseError(
                line,
                f"messages[{len(messages) - 1}].role",
                "the context must end with a user or tool message (the model answers next)",
            )
        )
    expected = raw.get("expected")
    if expected is None:
        errors.append(CaseError(line, "expected", "is required: the gold assistant message"))
    else:
        errors += [
            CaseError(line, e.field, e.message)
            for e in validate_assistant_message(expected, names_from, "expected")
        ]
        if isinstance(expected, dict) and expected.get("role", "assistant") != "assistant":
            errors.append(CaseError(line, "expected.role", "must be assistant"))
        try:
            expected_calls(expected)
        except ValueError as exc:
            errors.append(CaseError(line, "expected", str(exc)))
        facts = expected.get("facts") if isinstance(expected, dict) else None
        if facts is not None and (
            not isinstance(facts, list) or not all(isinstance(f, str) and f.strip() for f in facts)
        ):
            errors.append(
                CaseError(line, "expected.facts", "must be a list of texts the right answer states")
            )
    external_id = raw.get("id", raw.get("external_id"))
    if external_id is None:
        external_id = f"case-{line}"
    if (
        isinstance(external_id, bool)
        or not isinstance(external_id, (str, int))
        or not str(external_id).strip()
    ):
        errors.append(CaseError(line, "id", "must be a non-empty string or an integer"))
    elif len(str(external_id)) > 255:
        errors.append(CaseError(line, "id", "must be at most 255 characters"))
    categories = raw.get("categories") or []
    if isinstance(categories, str):
        categories = [categories]
    if not isinstance(categories, list) or not all(isinstance(c, str) and c.strip() for c in categories):
        errors.append(CaseError(line, "categories", "must be a list of category names"))
        categories = []
    metadata = raw.get("metadata") or {}
    if not isinstance(metadata, dict):
        errors.append(CaseError(line, "metadata", "must be an object"))
        metadata = {}
    depth = raw.get("turn_depth", metadata.get("turn_depth"))
    if depth is not None and not _whole(depth, MAX_TURN_DEPTH):
        errors.append(CaseError(line, "turn_depth", f"must be a whole number from 0 to {MAX_TURN_DEPTH:,}"))
    conversation_id = raw.get("conversation_id")
    if conversation_id is not None and not _whole(conversation_id, 2**63 - 1):
        errors.append(CaseError(line, "conversation_id", "must be a conversation id (a whole number)"))
    context_length = raw.get("context_length")
    if context_length is not None and not _whole(context_length, MAX_CONTEXT_LENGTH):
        errors.append(CaseError(line, "context_length", "must be a whole number of messages"))
    if errors:
        return None, errors
    return {
        "external_id": str(external_id).strip(),
        "messages": messages,
        "tools": tools,
        "expected": {**expected, "role": "assistant"},
        "categories": sorted({c.strip() for c in categories}),
        "turn_depth": depth if depth is not None else turn_depth_of(messages),
        "metadata": metadata,
        "conversation_id": conversation_id,
        "context_length": context_length,
    }, []


def _whole(value, most: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= most


def cases_hash(cases: list[dict]) -> str:
    h = hashlib.sha256()
    for c in cases:
        h.update(
            canonical_json(
                [c["external_id"], c["messages"], c["tools"], c["expected"], c["categories"], c["turn_depth"]]
            ).encode()
        )
        h.update(b"\n")
    return h.hexdigest()


def suite_stats(cases: list[dict]) -> dict:
    by_category = Counter(cat for c in cases for cat in (c["categories"] or ["(uncategorized)"]))
    by_depth = Counter(str(c["turn_depth"]) for c in cases if c["turn_depth"] is not None)
    return {
        "cases": len(cases),
        "expects_call": sum(1 for c in cases if (c["expected"].get("tool_calls"))),
        "parallel_calls": sum(1 for c in cases if len(c["expected"].get("tool_calls") or ()) > 1),
        "by_category": dict(sorted(by_category.items())),
        "by_turn_depth": dict(sorted(by_depth.items(), key=lambda kv: int(kv[0]))),
        "conversations": len({c["conversation_id"] for c in cases if c.get("conversation_id")}),
    }


def create_suite(
    project: Project,
    name: str,
    records,
    *,
    source: str,
    source_detail: dict | None = None,
    description: str = "",
    user=None,
) -> tuple[EvalSuite, bool]:
    """Validate every record and store the suite as the next version of `name`.

    ``records``: iterable of (line number, record dict). Returns (suite, created);
    ``created`` is False when the cases equal the latest version of that name.
    Raises SuiteError with every problem found.
    """
    name = (name or "").strip()
    errors: list[CaseError] = []
    if not name:
        errors.append(CaseError(0, "name", "is required"))
    elif len(name) > 200:
        errors.append(CaseError(0, "name", "must be at most 200 characters"))
    cases, seen = [], {}
    for line, raw in records:
        case, errs = check_case(raw, line, project.tools)
        errors += errs
        if case is None:
            continue
        if case["external_id"] in seen:
            errors.append(
                CaseError(line, "id", f"{case['external_id']!r} repeats line {seen[case['external_id']]}")
            )
            continue
        seen[case["external_id"]] = line
        cases.append(case)
        if len(cases) > MAX_CASES:
            errors.append(CaseError(line, "", f"a suite holds at most {MAX_CASES:,} cases"))
            break
        if len(errors) > MAX_ERRORS:
            break
    if not errors and not cases:
        errors.append(CaseError(0, "", "no cases: the input is empty"))
    if errors:
        raise SuiteError(errors)
    _attach_conversations(project, cases)
    if source not in EvalSuite.Source.values:  # cases handed over by code: gold cases, origin kept
        source_detail = {**(source_detail or {}), "origin": source}
        source = EvalSuite.Source.GOLD
    digest = cases_hash(cases)
    with transaction.atomic():
        Project.objects.select_for_update().filter(pk=project.pk).first()  # versions numbered one at a time
        latest = EvalSuite.objects.filter(project=project, name=name).order_by("-version").first()
        if latest is not None and latest.content_hash == digest:
            return latest, False
        suite = EvalSuite.objects.create(
            project=project,
            name=name,
            version=(latest.version + 1) if latest else 1,
            description=description,
            source=source,
            source_detail=source_detail or {},
            case_count=len(cases),
            content_hash=digest,
            stats=suite_stats(cases),
            created_by=user if getattr(user, "pk", None) else None,
        )
        EvalCase.objects.bulk_create(
            [
                EvalCase(
                    suite=suite,
                    position=i,
                    external_id=c["external_id"],
                    messages=c["messages"],
                    tools=c["tools"],
                    expected=c["expected"],
                    categories=c["categories"],
                    turn_depth=c["turn_depth"],
                    metadata=c["metadata"],
                    conversation_id=c.get("conversation_id"),
                    context_length=c.get("context_length"),
                )
                for i, c in enumerate(cases, 1)
            ],
            batch_size=500,
        )
    return suite, True


def _attach_conversations(project, cases):
    """Keep conversation links that point into this project; drop the rest."""
    ids = {c["conversation_id"] for c in cases if c.get("conversation_id")}
    valid = (
        set(Conversation.objects.filter(project=project, pk__in=ids).values_list("pk", flat=True))
        if ids
        else set()
    )
    for c in cases:
        if c.get("conversation_id") not in valid:
            c["conversation_id"] = None
            c["context_length"] = None


# ============================================================================= sources


def read_jsonl(fileobj, max_bytes: int | None = None) -> list[tuple[int, object]]:
    """[(line number, record)] of a JSONL upload; bad lines raise SuiteError listing every one.

    Each line is read on its own (toolcalls.jsonl): an oversize line is skipped unread, and a
    line that is not UTF-8, not strict JSON, nested too deeply, or holds what the database
    cannot store (NUL, a lone surrogate, an integer over 64 bits) is one error with its number.
    """
    max_bytes = max_bytes or settings.IMPORT_MAX_LINE_BYTES
    errors = []
    records = []
    for n, record in read_jsonl_lines(fileobj, max_bytes, storable=True):
        if isinstance(record, FieldError):
            errors.append(CaseError(n, record.field, record.message))
        else:
            records.append((n, record))
    if errors:
        raise SuiteError(errors)
    return records


def suite_from_gold_jsonl(project, name, fileobj, user=None, description="", file_name=""):
    records = read_jsonl(fileobj)
    return create_suite(
        project,
        name,
        records,
        source=EvalSuite.Source.GOLD,
        source_detail={"file": file_name},
        description=description,
        user=user,
    )


def suite_from_bfcl(project, name, fileobj, answers=None, user=None, description="", file_name=""):
    """BFCL test records, each answer in `answers` (the possible-answers file) as the gold turn
    (toolcalls.bfcl: irrelevance records expect no call; multi-turn records are refused)."""
    index, answer_errors = (
        bfcl.read_answers(answers, settings.IMPORT_MAX_LINE_BYTES) if answers is not None else (None, [])
    )
    errors = [
        CaseError(0, f"answers file line {n}" + (f" {e.field}" if e.field else ""), e.message)
        for n, e in answer_errors
    ]
    records = []
    for line, record in read_jsonl(fileobj):
        case, errs = bfcl.convert_record(record, index)
        errors += [CaseError(line, e.field, e.message) for e in errs]
        if case is not None:
            records.append((line, bfcl.suite_record(case)))
    if errors:
        raise SuiteError(errors)
    return create_suite(
        project,
        name,
        records,
        source=EvalSuite.Source.GOLD,
        source_detail={"file": file_name, "format": "bfcl"},
        description=description,
        user=user,
    )


def scenario_cases(record: dict, line: int) -> tuple[list[tuple[int, dict]], list[CaseError]]:
    """Every assistant turn of a scripted conversation as a case (context = what came before)."""
    if not isinstance(record, dict):
        return [], [CaseError(line, "", "each scenario must be a JSON object")]
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        return [], [CaseError(line, "messages", "must be a non-empty list of messages")]
    base = record.get("id", record.get("external_id", f"scenario-{line}"))
    turns = [
        i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "assistant" and i > 0
    ]
    if not turns:
        return [], [CaseError(line, "messages", "a scenario needs at least one assistant turn to evaluate")]
    out = []
    for k, i in enumerate(turns, 1):
        expected = {key: v for key, v in messages[i].items() if key != "role"}
        out.append(
            (
                line,
                {
                    "id": f"{base}#t{k}",
                    "messages": messages[:i],
                    "tools": record.get("tools"),
                    "expected": expected,
                    "categories": record.get("categories"),
                    "metadata": {
                        **(record.get("metadata") or {}),
                        "scenario": str(base),
                        "turn": k,
                        "turns": len(turns),
                    },
                },
            )
        )
    return out, []


def suite_from_scenarios(project, name, fileobj, user=None, description="", file_name=""):
    records, errors = [], []
    for line, record in read_jsonl(fileobj):
        cases, errs = scenario_cases(record, line)
        records += cases
        errors += errs
    if errors:
        raise SuiteError(errors)
    return create_suite(
        project,
        name,
        records,
        source=EvalSuite.Source.SCENARIOS,
        source_detail={"file": file_name},
        description=description,
        user=user,
    )


def suite_from_conversations(project, name, splits=(Split.EVAL, Split.HOLDOUT), user=None, description=""):
    """Every assistant turn of the project's held-out conversations, as imported."""
    records = []
    qs = Conversation.objects.filter(project=project, split__in=list(splits)).order_by("id")
    for conv in qs.iterator(chunk_size=500):
        cases, _ = scenario_cases(
            {
                "id": conv.external_id,
                "messages": conv.messages,
                "tools": conv.tools,
                "categories": conv.metadata.get("categories") if conv.metadata else None,
            },
            conv.pk,
        )
        for line, case in cases:
            case["conversation_id"] = conv.pk
            case["context_length"] = len(case["messages"])
            records.append((line, case))
    return create_suite(
        project,
        name,
        records,
        source=EvalSuite.Source.CONVERSATIONS,
        source_detail={"splits": list(splits)},
        description=description,
        user=user,
    )


def suite_from_demo(project, name, n=100, seed=0, split="seen", user=None, description=""):
    """Held-out cases of the synthetic sales domain (never in the demo model's training stream)."""
    records = []
    for i, case in enumerate(demo_domain.eval_prompts(n, seed=seed, split=split), 1):
        meta = case.get("metadata") or {}
        records.append(
            (
                i,
                {
                    "id": case["external_id"],
                    "messages": case["messages"],
                    "tools": case["tools"],
                    "expected": case["expected"],
                    "categories": [meta["scenario"]] if meta.get("scenario") else [],
                    "turn_depth": meta.get("turn_depth"),
                    "metadata": meta,
                },
            )
        )
    return create_suite(
        project,
        name,
        records,
        source=EvalSuite.Source.DEMO,
        source_detail={"n": n, "seed": seed, "split": split},
        description=description,
        user=user,
    )


def _snapshot_model():
    from django.apps import apps

    try:
        return apps.get_model("training", "DatasetSnapshot")
    except LookupError:
        return None


def eval_snapshots(project):
    Snapshot = _snapshot_model()
    if Snapshot is None:
        return []
    return list(Snapshot.objects.filter(project=project, kind="eval", status="ready").order_by("-id"))


def suite_from_snapshot(project, snapshot, name=None, user=None, description=""):
    """Cases from a ready eval snapshot; categories come from the labels behind each row."""
    if snapshot.project_id != project.pk or snapshot.kind != "eval" or snapshot.status != "ready":
        raise SuiteError([CaseError(0, "snapshot", "must be a ready eval snapshot of this project")])
    rows = []
    with open(media_path(snapshot.file.name), "rb") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                rows.append((n, json.loads(line)))
    correction_ids, label_ids = set(), set()
    for _, row in rows:
        kind, _, pk = str(row.get("source", "")).partition(":")
        if pk.isdigit():
            (correction_ids if kind == "correction" else label_ids).add(int(pk))
    categories = _source_categories(correction_ids, label_ids)
    ext_ids = {str(r.get("id", "")).rpartition("@")[0] for _, r in rows}
    conversations = dict(
        Conversation.objects.filter(project=project, external_id__in=ext_ids).values_list("external_id", "pk")
    )
    records = []
    for n, row in rows:
        ext, _, length = str(row.get("id", "")).rpartition("@")
        kind, _, pk = str(row.get("source", "")).partition(":")
        records.append(
            (
                n,
                {
                    "id": row.get("id") or f"row-{n}",
                    "messages": row.get("messages"),
                    "tools": row.get("tools"),
                    "expected": row.get("expected"),
                    "categories": categories.get((kind, int(pk))) if pk.isdigit() else [],
                    "metadata": {"source": row.get("source", ""), "snapshot": snapshot.name},
                    "conversation_id": conversations.get(ext),
                    "context_length": int(length) if length.isdigit() else None,
                },
            )
        )
    return create_suite(
        project,
        name or f"{snapshot.name} held-out",
        records,
        source=EvalSuite.Source.SNAPSHOT,
        source_detail={"snapshot_id": snapshot.pk, "snapshot": snapshot.name, "sha256": snapshot.sha256},
        description=description or snapshot.note,
        user=user,
    )


def _source_categories(correction_ids, label_ids) -> dict:
    from annotator.models import Correction, Label

    out: dict[tuple, list] = {}
    label_of = dict(Correction.objects.filter(pk__in=correction_ids).values_list("pk", "label_id"))
    names: dict[int, list] = {}
    through = Label.categories.through.objects.filter(label_id__in=set(label_of.values()) | set(label_ids))
    for label_id, name in through.values_list("label_id", "taxonomycategory__name"):
        names.setdefault(label_id, []).append(name)
    for cid, lid in label_of.items():
        out[("correction", cid)] = sorted(names.get(lid, []))
    for lid in label_ids:
        out[("reasonable", lid)] = sorted(names.get(lid, []))
    return out


# ============================================================================= overlap


def training_snapshot_ids(model_version) -> list[int]:
    """Dataset snapshots the model (or any ancestor) was trained on, as far as the database says.

    Read from ModelVersion.metadata (``train_snapshot_ids`` as the training app writes it, and
    a few spellings an import may use) and from the training jobs whose result is a version of
    this lineage.
    """
    ids: set[int] = set()
    lineage = model_version.lineage()
    for mv in lineage:
        meta = mv.metadata or {}
        for key in ("train_snapshot_ids", "snapshot_ids", "training_snapshot_ids"):
            value = meta.get(key)
            if isinstance(value, list):
                ids.update(int(v) for v in value if isinstance(v, int) or str(v).isdigit())
        for key in ("sft_snapshot_id", "dpo_snapshot_id", "train_snapshot_id", "snapshot_id"):
            value = meta.get(key)
            if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
                ids.add(int(value))
    ids.update(_job_snapshot_ids([mv.pk for mv in lineage]))
    return sorted(ids)


def _job_snapshot_ids(model_ids: list[int]) -> set[int]:
    """Training snapshots of the jobs whose result is one of these versions (a job's eval snapshot
    only measured it, so it does not count)."""
    from django.apps import apps

    try:
        Job = apps.get_model("training", "TrainingJob")
    except LookupError:
        return set()
    names = {f.name for f in Job._meta.get_fields()}
    if not {"result_version", "train_snapshot"} <= names:
        return set()
    return set(Job.objects.filter(result_version__in=model_ids).values_list("train_snapshot_id", flat=True))


OVERLAP_CACHE_SECONDS = 7 * 24 * 3600


def overlap_of(suite: EvalSuite, model_version) -> dict:
    """The training overlap of (suite, model version) as the database stands now.

    Every page, comparison, API answer and the promotion gate read it here, so a run created
    before a training snapshot of the lineage existed (or was ready) is flagged as soon as it
    is. The result is cached per pair under a key naming the suite's content and the
    lineage's training snapshots with their state and hash (snapshots are immutable once
    ready): a new snapshot, a new ancestor or a snapshot that became ready changes the key.
    A failed check is not cached: it says "not checked" and is tried again next time.
    """
    Snapshot = _snapshot_model()
    ids = training_snapshot_ids(model_version)
    state = (
        [
            [pk, status, sha, str(created)]
            for pk, status, sha, created in Snapshot.objects.filter(pk__in=ids)
            .order_by("pk")
            .values_list("pk", "status", "sha256", "created_at")
        ]
        if Snapshot is not None and ids
        else []
    )
    key_data = json.dumps([suite.pk, suite.content_hash, str(suite.created_at), ids, state])
    key = "eval:overlap:" + hashlib.sha256(key_data.encode()).hexdigest()
    found = cache.get(key)
    if found is not None:
        return found
    try:
        found = training_overlap(suite, model_version, snapshot_ids=ids)
    except Exception as exc:  # noqa: BLE001 - an unreadable training snapshot must not break a report
        log.warning("overlap check of %s on %s failed: %s", model_version, suite, exc)
        return {"checked": [], "snapshots": [], "cases": 0, "positions": [], "note": f"not checked: {exc}"}
    cache.set(key, found, OVERLAP_CACHE_SECONDS)
    return found


def with_overlap(runs):
    """Fill each run's ``training_overlap`` (one check per distinct suite and model version)."""
    done: dict[tuple[int, int], dict] = {}
    for run in runs:
        pair = (run.suite_id, run.model_version_id)
        if pair not in done:
            done[pair] = overlap_of(run.suite, run.model_version)
        run.__dict__["training_overlap"] = done[pair]
    return runs


def training_overlap(suite: EvalSuite, model_version, snapshot_ids: list[int] | None = None) -> dict:
    """Which cases of the suite the model saw in training (same conversation or same prompt).

    -> {"checked": [snapshot names], "snapshots": [{"id", "name", "cases"}], "cases": n,
        "positions": [first 50 case positions], "note": str}
    """
    Snapshot = _snapshot_model()
    ids = training_snapshot_ids(model_version) if snapshot_ids is None else snapshot_ids
    if Snapshot is None or not ids:
        return {
            "checked": [],
            "snapshots": [],
            "cases": 0,
            "positions": [],
            "note": "No training snapshots are recorded for this model or its ancestors.",
        }
    cases = list(suite.cases.values_list("position", "conversation_id", "messages"))
    case_prompts = [(pos, conv, prompt_hash(messages)) for pos, conv, messages in cases]
    hit_positions: set[int] = set()
    per_snapshot, checked = [], []
    for snap in Snapshot.objects.filter(pk__in=ids, status="ready").exclude(kind="eval").order_by("id"):
        conversations, prompts = _snapshot_keys(snap)
        checked.append(snap.name)
        hits = {
            pos for pos, conv, prompt in case_prompts if (conv and conv in conversations) or prompt in prompts
        }
        if hits:
            per_snapshot.append({"id": snap.pk, "name": snap.name, "cases": len(hits)})
        hit_positions |= hits
    missing = sorted(
        set(ids) - set(Snapshot.objects.filter(pk__in=ids, status="ready").values_list("pk", flat=True))
    )
    note = (
        f"Snapshots {', '.join(map(str, missing))} are not ready or were deleted: not checked."
        if missing
        else ""
    )
    return {
        "checked": checked,
        "snapshots": per_snapshot,
        "cases": len(hit_positions),
        "positions": sorted(hit_positions)[:50],
        "note": note,
    }


def _snapshot_keys(snapshot) -> tuple[set, set]:
    index = read_index(snapshot)
    if len(index):
        return {int(c) for c in index["conversation"]}, {int(p) for p in index["prompt"]}
    conversations, prompts = set(), set()
    try:
        with open(media_path(snapshot.file.name), "rb") as fh:
            for line in fh:
                if line.strip():
                    row = display_row(snapshot.layout, json.loads(line))
                    prompts.add(prompt_hash(row["context"]))
    except (OSError, ValueError, KeyError):
        pass
    return conversations, prompts
