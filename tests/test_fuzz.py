"""Property-based fuzzing of the JSONL importer and the model-output parser / metrics.

Bounded for CI (a few hundred examples in all); benchmarks/fuzz_run.py runs the same properties
with tens of thousands. What must hold for any input: no exception escapes; every bad line is
reported with its line number and a field; a rejected line stores nothing.
"""

import itertools

import pytest
from django.core.files.base import ContentFile
from django.db import transaction
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from annotator.importers import parse_line, run_import
from annotator.models import Conversation, ImportIssue, ImportJob, ModelResponse, Project

from .fuzz_strategies import (
    TOOLS,
    check_line,
    check_parse_output,
    check_score_case,
    encode_record,
    garbage_lines,
    gold_messages,
    hostile_bodies,
    hostile_cursors,
    hostile_query_values,
    mutated_records,
    raw_outputs,
    tool_lists,
    tool_name_sets,
    valid_records,
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(mutated_records())
def test_any_mutated_line_is_parsed_or_reported(record):
    check_line(encode_record(record))


@FAST
@given(valid_records())
def test_valid_lines_are_accepted(record):
    parsed, errors = check_line(encode_record(record))
    assert errors == [] and parsed is not None


@FAST
@given(garbage_lines)
def test_garbage_bytes_are_reported_not_raised(raw):
    check_line(raw)


@FAST
@given(raw_outputs, tool_name_sets)
def test_parse_output_never_raises(output, tool_names):
    check_parse_output(output, tool_names)


@FAST
@given(gold_messages, raw_outputs, tool_lists, st.sampled_from([None, True, False]))
def test_score_case_never_raises_on_outputs(expected, output, tools, stopped):
    check_score_case(expected, output, tools, stopped)


# --------------------------------------------------------------- whole imports, in the database

_slugs = itertools.count()

file_lines = st.lists(
    st.one_of(valid_records().map(encode_record), mutated_records().map(encode_record), garbage_lines),
    min_size=1,
    max_size=8,
)


def check_import(lines: list[bytes], max_line_bytes: int = 4000):
    """Import `lines` into a fresh project; each non-blank line is either stored whole or reported."""
    project = Project.objects.create(name="fuzz", slug=f"fuzz-{next(_slugs)}", tools=TOOLS)
    data = b"\n".join(lines) + b"\n"
    job = ImportJob(project=project, original_name="fuzz.jsonl", size_bytes=len(data))
    job.file.save("fuzz.jsonl", ContentFile(data), save=False)
    job.save()
    run_import(job.pk)
    job.refresh_from_db()
    assert job.status in ("done", "failed"), job.message

    reported = {}
    for issue in ImportIssue.objects.filter(job=job):
        assert issue.message
        reported.setdefault(issue.line, []).append(issue.field)
    accepted, seen_ids = {}, {}
    for n, raw in enumerate(data.split(b"\n")[:-1], start=1):
        if not raw.strip():
            assert n not in reported
            continue
        parsed, errors = check_line(raw.rstrip(b"\r"), max_line_bytes)
        if (
            parsed is not None
            and seen_ids.get(parsed.external_id, parsed.content_hash) != parsed.content_hash
        ):
            errors = ["conflict"]  # same external_id, other content, earlier in the file
        if errors:
            assert n in reported, f"bad line {n} was not reported"
        else:
            assert n not in reported, f"good line {n} reported: {reported[n]}"
            seen_ids[parsed.external_id] = parsed.content_hash
            accepted[n] = parsed
    assert job.lines_read == data.count(b"\n")
    assert job.error_count == len(reported)
    convs = dict(Conversation.objects.filter(project=project).values_list("external_id", "content_hash"))
    assert convs == {p.external_id: p.content_hash for p in accepted.values()}  # nothing from a rejected line
    wanted = {
        (p.external_id, r["model"], r["context_length"], r["hash"])
        for p in accepted.values()
        for r in p.responses
    }
    stored = set(
        ModelResponse.objects.filter(conversation__project=project).values_list(
            "conversation__external_id", "model_version__name", "context_length", "response_hash"
        )
    )
    assert stored == wanted


@pytest.mark.django_db
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(lines=file_lines)
def test_import_of_hostile_files_stores_good_lines_and_reports_bad_ones(lines, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    settings.IMPORT_MAX_LINE_BYTES = 4000
    check_import(lines)


@pytest.mark.django_db
def test_regressions_found_by_fuzzing(settings, tmp_path):
    """Each line once crashed the importer (TypeError, RecursionError, a database error on PostgreSQL)."""
    settings.MEDIA_ROOT = tmp_path
    base = {"messages": [{"role": "user", "content": "hi"}]}
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "function": {"name": "check_inventory"}}],
    }
    cases = {
        "split": {**base, "split": []},
        "messages[1].tool_calls[0].id": {
            "messages": [
                base["messages"][0],
                {**call, "tool_calls": [{"id": [1], "function": {"name": "check_inventory"}}]},
            ]
        },
        "messages[2].tool_call_id": {
            "messages": [
                base["messages"][0],
                call,
                {"role": "tool", "tool_call_id": {"x": 1}, "content": "r"},
            ]
        },
        "priority": {**base, "priority": 2**40},
        "model": {**base, "model": {"a": 1}, "responses": [{"raw": "hello there friend"}]},
        "responses[0].model": {**base, "responses": [{"model": "m" * 201, "raw": "hello there friend"}]},
        "messages[0].content": {"messages": [{"role": "user", "content": "nul \x00 byte"}]},
        "metadata": {**base, "metadata": {"k\x00": 1}},
        "responses[0].message.content": {
            **base,
            "responses": [{"message": {"role": "assistant", "content": True}}],
        },
    }
    deep = {"type": "object"}
    for _ in range(150):
        deep = {"not": deep}
    cases["tools[0]"] = {**base, "tools": [{"name": "t", "parameters": deep}]}
    for field, record in cases.items():
        parsed, errors = check_line(encode_record(record), 10**6)
        assert parsed is None and any(e.field.startswith(field) for e in errors), (field, errors)
    lines = [encode_record(conversation) for conversation in cases.values()]
    lines.append(encode_record({"external_id": "fine", **base}))
    check_import(lines, 10**6)
    assert Conversation.objects.filter(external_id="fine").count() == 1


def test_parse_line_keeps_a_non_string_metadata_model_out_of_the_model_name():
    parsed, errors = parse_line(
        {
            "messages": [{"role": "user", "content": "hi"}],
            "metadata": {"model": ["x"]},
            "responses": [{"raw": "hello there friend"}],
        },
        [],
        "train",
    )
    assert errors == [] and parsed.responses[0]["model"] == "unknown"


def test_metrics_survive_deep_json_and_lone_surrogates():
    check_parse_output("<tool_call>" + "[" * 5000 + "</tool_call>", {"check_inventory"})
    s = check_score_case(None, "word\ud800 " * 80, None, None)
    assert s["defects"]["end_repetition"] == 1


# ------------------------------------------------------------------ the REST API: never a 500


@pytest.fixture
def api_writes(project, other_project, members):
    """Every write route of the REST API with a valid payload to mutate (labels, corrections and preferences
    are written through the queue endpoints, fuzzed with the queue)."""
    from annotator.models import Label, Membership, ModelVersion, Role, Status, TaxonomyCategory
    from evaluation.models import EvalSuite
    from training.models import DatasetSnapshot

    from .conftest import make_conversation

    Membership.objects.get_or_create(user=members[Role.ADMIN], project=other_project, role=Role.ANNOTATOR)
    conv, (r1, r2) = make_conversation(project, 500, n_responses=2)
    mv = ModelVersion.objects.get(project=project, name="agent-v1")
    cat = TaxonomyCategory.objects.filter(project=project).first()
    label, _ = Label.objects.get_or_create(
        response=r1,
        annotator=members[Role.ADMIN],
        defaults={"verdict": "unreasonable", "status": Status.SUBMITTED},
    )
    snap = DatasetSnapshot.objects.create(
        project=project, kind="sft", version=1, layout="trl_messages", status=DatasetSnapshot.State.READY
    )
    suite = EvalSuite.objects.create(project=project, name="gold", version=1, source="gold", content_hash="h")
    membership = Membership.objects.get(user=members[Role.ANNOTATOR], project=project)
    message = {"role": "assistant", "content": "Let me check that for you."}
    writes = [
        ("post", "/api/reviews/", {"label": label.pk, "decision": "approve"}),
        (
            "post",
            "/api/conversations/",
            {
                "project": "sales",
                "messages": [{"role": "user", "content": "hi"}],
                "priority": 1,
                "metadata": {},
            },
        ),
        (
            "post",
            "/api/responses/",
            {
                "conversation": conv.pk,
                "model_version": mv.pk,
                "context_length": 1,
                "raw_text": "An answer.",
                "uncertainty": 0.5,
            },
        ),
        ("post", "/api/categories/", {"project": "sales", "name": "fuzzed", "parent": cat.pk, "position": 1}),
        ("post", "/api/model-versions/", {"project": "sales", "name": "fuzzed", "parent": mv.pk}),
        ("post", "/api/memberships/", {"project": "sales", "user": "outsider", "role": "lead"}),
        ("post", "/api/datasets/", {"project": "sales", "kind": "sft", "filters": {"categories": [cat.pk]}}),
        ("post", "/api/datasets/count/", {"project": "sales", "kind": "sft", "filters": {}}),
        (
            "post",
            "/api/training-jobs/",
            {
                "project": "sales",
                "stage": "sft",
                "base_version": mv.pk,
                "train_snapshot": snap.pk,
                "overrides": {"lr": 0.001},
            },
        ),
        (
            "post",
            "/api/online-runs/",
            {"project": "sales", "start_version": mv.pk, "eval_suite": suite.pk, "rounds": 1},
        ),
        (
            "post",
            "/api/eval-runs/",
            {
                "project": "sales",
                "suite": suite.pk,
                "model_version": mv.pk,
                "settings": {"max_new_tokens": 8},
            },
        ),
        (
            "post",
            "/api/eval-suites/",
            {
                "project": "sales",
                "name": "fz",
                "source": "gold",
                "cases": [{"messages": [{"role": "user", "content": "hi"}], "expected": message}],
            },
        ),
        ("post", "/api/promotions/promote/", {"model_version": mv.pk, "suite": suite.pk}),
        ("post", "/api/promotions/reject/", {"model_version": mv.pk, "suite": suite.pk}),
        ("patch", "/api/projects/sales/", {"overlap": 2, "label_settings": {"blind": True}, "tools": TOOLS}),
        ("patch", f"/api/conversations/{conv.pk}/", {"priority": 2, "metadata": {"k": 1}}),
        ("patch", f"/api/responses/{r1.pk}/", {"raw_text": "x", "context_length": 1}),
        ("patch", f"/api/categories/{cat.pk}/", {"parent": None, "position": 3}),
        ("patch", f"/api/model-versions/{mv.pk}/", {"parent": None, "notes": "n"}),
        ("patch", f"/api/memberships/{membership.pk}/", {"role": "annotator"}),
        (
            "patch",
            "/api/eval-settings/sales/",
            {"default_suite": suite.pk, "quality_margin": 0.1},
        ),
        ("post", "/api/auth/token/", {"username": "admin", "password": "pw-admin"}),
    ]
    return writes


@pytest.mark.django_db
@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_hostile_json_to_any_write_route_is_never_a_server_error(
    api, members, api_writes, data, django_capture_on_commit_callbacks
):
    from annotator.models import Role

    method, path, base = data.draw(st.sampled_from(api_writes))
    body = data.draw(hostile_bodies(base, extra_keys=("project", "id", "annotator", "status")))
    client = api() if "auth" in path else api(members[Role.ADMIN])
    # each request its own transaction, as in production (autocommit): a refused value cannot leave the
    # test's transaction aborted for the next example
    with django_capture_on_commit_callbacks(execute=False), transaction.atomic():
        response = getattr(client, method)(
            path, body.encode("utf-8", "surrogatepass"), content_type="application/json"
        )
    event(f"{path.split('/')[2]} {response.status_code}")
    assert response.status_code < 500, (method, path, body[:200], response.content[:300])


def list_filters() -> list[tuple[str, str]]:
    from studio.urls import router

    out = []
    for prefix, viewset, _ in router.registry:
        fields = getattr(viewset, "filterset_fields", None) or {}
        for name, lookups in fields.items() if isinstance(fields, dict) else ((f, ["exact"]) for f in fields):
            out += [(prefix, name if lookup == "exact" else f"{name}__{lookup}") for lookup in lookups]
        out.append((prefix, "cursor"))
        out.append((prefix, "ordering"))
        out.append((prefix, "page_size"))
    return out


@pytest.mark.django_db
@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_hostile_list_filters_and_cursors_are_never_a_server_error(api, members, api_writes, data):
    from annotator.models import Role

    route, param = data.draw(st.sampled_from(list_filters()))
    value = data.draw(hostile_cursors if param == "cursor" else hostile_query_values)
    with transaction.atomic():  # each request its own transaction, as in production (autocommit)
        response = api(members[Role.ADMIN]).get(f"/api/{route}/", {param: value})
    event(f"{response.status_code}")
    assert response.status_code < 500, (route, param, value, response.content[:300])
