"""POST /api/projects/<slug>/ingest/: batches from a running agent (annotator/ingest.py, ingest_api.py)."""

import io
import json
import threading
from types import SimpleNamespace

import pytest
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotator import assignment, ingest, store
from annotator.importers import run_import
from annotator.ingest_api import IngestJSONParser
from annotator.models import Conversation, ImportIssue, ImportJob, ModelResponse, Slot, Task
from config.rest import RequestTooLarge

from .conftest import TOOLS, conversation_record, jsonl

pytestmark = pytest.mark.django_db

URL = "/api/projects/sales/ingest/"
CONFLICT = "'c-1' already exists with different messages or tools"


@pytest.fixture(autouse=True)
def fresh_throttle_counts():
    cache.clear()  # the throttle counts per user id, and ids come back between tests
    yield
    cache.clear()


def token_client(user=None, key=None) -> APIClient:
    client = APIClient()
    if user is not None:
        key = Token.objects.get_or_create(user=user)[0].key
    if key is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


@pytest.fixture
def admin_api(members):
    return token_client(members["admin"])


def post(client, body, **extra):
    return client.post(URL, data=json.dumps(body), content_type="application/json", **extra)


def statuses(response) -> list:
    return [(r["index"], r["status"]) for r in response.json()["results"]]


def test_mix_of_created_duplicate_and_rejected_records_with_their_errors(admin_api):
    body = {
        "records": [
            conversation_record(1),
            {"external_id": "x", "messages": [{"role": "robot", "content": "hi"}]},
            conversation_record(2),
            conversation_record(1),  # the same record again in one batch
            "not an object",
            {"messages": []},
        ]
    }
    response = post(admin_api, body)
    assert response.status_code == 200, response.content
    data = response.json()
    assert (data["created"], data["duplicates"], data["rejected"], data["responses_created"]) == (2, 1, 3, 2)
    assert statuses(response) == [
        (0, "created"),
        (1, "rejected"),
        (2, "created"),
        (3, "duplicate"),
        (4, "rejected"),
        (5, "rejected"),
    ]
    results = data["results"]
    c1 = Conversation.objects.get(external_id="c-1")
    assert results[0] == {
        "index": 0,
        "status": "created",
        "external_id": "c-1",
        "conversation_id": c1.pk,
        "responses_created": 1,
        "errors": [],
    }
    assert results[3]["conversation_id"] == c1.pk and results[3]["responses_created"] == 0
    assert results[1]["conversation_id"] is None and results[1]["external_id"] is None
    assert [e["field"] for e in results[1]["errors"]] == ["messages[0].role"]
    assert "must be one of" in results[1]["errors"][0]["message"]
    assert results[4]["errors"] == [{"field": "", "message": "each line must be a JSON object"}]
    assert results[5]["errors"][0]["field"] == "messages"
    assert "non-empty list" in results[5]["errors"][0]["message"]
    assert Conversation.objects.count() == 2 and ModelResponse.objects.count() == 2


def test_resending_the_same_batch_creates_nothing(admin_api):
    body = {"records": [conversation_record(i) for i in range(3)]}
    first = post(admin_api, body).json()
    again = post(admin_api, body)
    assert again.status_code == 200
    data = again.json()
    assert (data["created"], data["duplicates"], data["rejected"], data["responses_created"]) == (0, 3, 0, 0)
    assert [r["conversation_id"] for r in data["results"]] == [r["conversation_id"] for r in first["results"]]
    assert Conversation.objects.count() == 3 and ModelResponse.objects.count() == 3
    assert Task.objects.count() == 3  # no second set of tasks


def test_records_without_an_external_id_are_known_by_their_content(admin_api):
    record = conversation_record(5)
    del record["external_id"]
    first = post(admin_api, [record]).json()["results"][0]
    second = post(admin_api, [record]).json()["results"][0]
    assert first["status"] == "created" and second["status"] == "duplicate"
    assert first["external_id"] == second["external_id"] and len(first["external_id"]) == 32
    assert Conversation.objects.count() == 1


def test_same_external_id_with_other_content_is_a_conflict(admin_api):
    post(admin_api, {"records": [conversation_record(1)]})
    changed = conversation_record(1)
    changed["messages"][1]["content"] = "something else entirely"
    response = post(admin_api, {"records": [changed, conversation_record(2)]})
    assert response.status_code == 200
    assert statuses(response) == [(0, "rejected"), (1, "created")]
    assert response.json()["results"][0]["errors"] == [{"field": "external_id", "message": CONFLICT}]
    assert Conversation.objects.get(external_id="c-1").messages[1]["content"] == "Is A-1 in stock?"
    alone = post(admin_api, {"records": [changed]})
    assert alone.status_code == 400  # every record rejected
    assert alone.json()["rejected"] == 1 and alone.json()["results"][0]["errors"][0]["message"] == CONFLICT


def test_a_known_conversation_gets_a_new_models_response_and_a_compare_task(admin_api, project):
    project.overlap = 2
    project.save()
    post(admin_api, [conversation_record(1)])
    newer = conversation_record(1, responses=[{"model": "agent-v2", "raw": "It is in stock, 12 units left."}])
    response = post(admin_api, [newer])
    result = response.json()["results"][0]
    assert (result["status"], result["responses_created"]) == ("duplicate", 1)
    assert response.json()["tasks_created"] == {"label": 1, "compare": 1}
    assert Task.objects.filter(kind=Task.Kind.COMPARE).count() == 1
    assert Slot.objects.count() == 3 * 2
    # the queue the file import builds would have held exactly these tasks and slots
    assert assignment.sync_tasks(project) == {"label": 0, "compare": 0, "slots": 0}


def test_tasks_match_what_sync_tasks_builds(admin_api, project):
    """Random order keys, overlap 3, three models answering one context (two of them alike), an already
    synced conversation: ingestion's own queueing leaves sync_tasks nothing to do."""
    project.overlap = 3
    project.label_settings = {**project.label_settings, "strategy": "random"}
    project.save()
    post(admin_api, [conversation_record(1)])
    assert assignment.sync_tasks(project) == {"label": 0, "compare": 0, "slots": 0}
    same = {"model": "agent-v2", "raw": "Same words."}
    record = conversation_record(
        1,
        responses=[
            same,
            {"model": "agent-v3", "raw": "Same words."},
            {"model": "agent-v4", "raw": "Other words."},
            {"model": "agent-v5", "raw": "Yet other words."},
        ],
    )
    post(admin_api, [record, conversation_record(2), conversation_record(3, priority=5)])
    assert assignment.sync_tasks(project) == {"label": 0, "compare": 0, "slots": 0}
    assert Task.objects.filter(kind=Task.Kind.COMPARE).count() == 3  # at most 3 pairs per context
    slot = Slot.objects.filter(task__response__conversation__external_id="c-3").get(index=0)
    assert slot.priority == 5


def test_roles_tokens_and_anonymous(members):
    body = {"records": [conversation_record(1)]}
    assert post(token_client(members["outsider"]), body).status_code == 404
    assert post(token_client(members["annotator"]), body).status_code == 403
    assert post(token_client(members["lead"]), body).status_code == 403
    assert post(APIClient(), body).status_code == 401
    assert post(token_client(key="0" * 40), body).status_code == 401
    nowhere = token_client(members["admin"]).post(
        "/api/projects/no-such/ingest/", data=json.dumps(body), content_type="application/json"
    )
    assert nowhere.status_code == 404
    assert Conversation.objects.count() == 0
    assert post(token_client(members["admin"]), body).status_code == 200


def test_a_batch_over_the_limit_is_refused_whole(admin_api, settings):
    settings.INGEST_MAX_RECORDS = 3
    response = post(admin_api, {"records": [conversation_record(i) for i in range(4)]})
    assert response.status_code == 413
    assert "4 records, over the limit of 3" in response.json()["detail"]
    settings.INGEST_MAX_BODY_BYTES = 500
    response = post(admin_api, {"records": [conversation_record(1)]})
    assert response.status_code == 413
    assert "over the limit of 500 bytes" in response.json()["detail"]
    assert Conversation.objects.count() == 0


def test_a_body_without_a_declared_length_is_cut_at_the_limit(settings):
    """Chunked bodies carry no Content-Length: the parser reads one byte past the limit, no more."""
    settings.INGEST_MAX_BODY_BYTES = 100
    body = io.BytesIO(json.dumps([conversation_record(1)]).encode())
    with pytest.raises(RequestTooLarge, match="over the limit of 100 bytes"):
        IngestJSONParser().parse(body, parser_context={"request": SimpleNamespace(META={})})
    assert body.tell() == 101


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"{not json", "JSON parse error"),
        (b'{"records": [1, 2', "JSON parse error"),
        (b'{"records": NaN}', "JSON parse error"),
        (b"\xff\xfe", "JSON parse error"),
        (b"42", "must be a JSON object"),
        (b'"records"', "must be a JSON object"),
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
    ],
)
def test_a_body_that_is_no_json_batch_is_a_400(admin_api, raw, fragment):
    response = admin_api.post(URL, data=raw, content_type="application/json")
    assert response.status_code == 400
    assert fragment in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({}, "records", "required"),
        ({"records": {}}, "records", "Must be a list"),
        ({"records": []}, "records", "at least one"),
        ([], "records", "at least one"),
        ({"records": [conversation_record(1)], "split": "test"}, "split", "Choose one of"),
        ({"record": [conversation_record(1)]}, "record", "Unknown field"),
    ],
)
def test_a_body_that_is_no_batch_names_the_field(admin_api, body, field, fragment):
    response = post(admin_api, body)
    assert response.status_code == 400
    assert fragment in response.json()[field][0]


def test_other_content_types_are_refused(admin_api):
    response = admin_api.post(URL, data="records", content_type="text/plain")
    assert response.status_code == 415
    assert Conversation.objects.count() == 0


def test_deep_nesting_oversize_and_nul_are_per_record_errors_as_in_the_file_import(admin_api, settings):
    settings.IMPORT_MAX_LINE_BYTES = 2000
    deep = conversation_record(1)
    nested = "leaf"
    for _ in range(150):
        nested = {"n": nested}
    deep["metadata"] = nested
    big = conversation_record(2)
    big["metadata"] = {"blob": "x" * 3000}
    nul = conversation_record(3)
    nul["messages"][1]["content"] = "bad \x00 byte"
    response = post(admin_api, [deep, big, nul, conversation_record(4)])
    assert response.status_code == 200
    assert statuses(response) == [(0, "rejected"), (1, "rejected"), (2, "rejected"), (3, "created")]
    errors = [r["errors"] for r in response.json()["results"][:3]]
    assert errors[0][0]["message"] == "is nested more than 100 levels deep"
    assert errors[0][0]["field"].startswith("metadata.n.n.")
    assert errors[1] == [
        {
            "field": "",
            "message": f"line is {len(json.dumps(big, separators=(',', ':'))):,} "
            "bytes, over the limit of 2,000",
        }
    ]
    assert errors[2] == [
        {
            "field": "messages[1].content",
            "message": "contains a NUL character (\\u0000), which cannot be stored",
        }
    ]
    assert list(Conversation.objects.values_list("external_id", flat=True)) == ["c-4"]


def test_a_record_with_many_errors_shows_the_first_50_and_a_count(admin_api):
    record = {"messages": [{"role": "robot", "content": "hi"} for _ in range(60)]}
    response = post(admin_api, [record])
    assert response.status_code == 400
    errors = response.json()["results"][0]["errors"]
    assert len(errors) == 51 and errors[49]["field"] == "messages[49].role"
    assert errors[50] == {"field": "", "message": "… and 10 more"}


def test_throttle_answers_429_with_retry_after(admin_api, settings):
    settings.INGEST_RATE = "2/min"
    body = {"records": [conversation_record(1)]}
    assert post(admin_api, body).status_code == 200
    assert post(admin_api, body).status_code == 200
    refused = post(admin_api, body)
    assert refused.status_code == 429
    assert 0 < int(refused["Retry-After"]) <= 60
    settings.INGEST_RATE = ""  # no limit
    assert post(admin_api, body).status_code == 200


def test_throttle_counts_per_user(members, settings):
    settings.INGEST_RATE = "1/min"
    body = {"records": [conversation_record(1)]}
    assert post(token_client(members["admin"]), body).status_code == 200
    assert post(token_client(members["admin"]), body).status_code == 429
    assert post(token_client(members["annotator"]), body).status_code == 403  # its own count, then policy


def test_chat_completion_log_records(admin_api, project):
    """The shape an agent logs around the OpenAI client: {"request": kwargs, "response": model_dump()}."""
    log = {
        "request": {
            "model": "agent-v3",
            "messages": [{"role": "user", "content": "Is A-113 in stock?"}],
            "tools": TOOLS,
            "temperature": 0.2,
        },
        "response": {
            "id": "chatcmpl-42",
            "object": "chat.completion",
            "model": "agent-v3-2025-01",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "check_inventory", "arguments": '{"sku": "A-113"}'},
                            }
                        ],
                    },
                }
            ],
        },
    }
    broken = {"request": {"model": "agent-v3", "messages": []}, "response": {"choices": []}}
    response = post(admin_api, {"records": [log, broken]})
    assert response.status_code == 200
    results = response.json()["results"]
    assert (results[0]["status"], results[0]["external_id"], results[0]["responses_created"]) == (
        "created",
        "chatcmpl-42",
        1,
    )
    assert results[1]["status"] == "rejected"
    assert results[1]["errors"][0]["field"] == "response.choices"
    stored = ModelResponse.objects.get()
    assert stored.model_version.name == "agent-v3-2025-01"
    assert stored.message["tool_calls"][0]["function"]["name"] == "check_inventory"
    assert stored.context_length == 1
    assert post(admin_api, [log]).json()["results"][0]["status"] == "duplicate"


def test_split_of_the_batch_and_of_a_record(admin_api):
    post(
        admin_api,
        {"records": [conversation_record(1), conversation_record(2, split="holdout")], "split": "eval"},
    )
    assert dict(Conversation.objects.values_list("external_id", "split")) == {"c-1": "eval", "c-2": "holdout"}


def test_the_days_ingestions_are_one_entry_of_the_import_history(admin_api, members):
    post(admin_api, [conversation_record(1), {"messages": "no"}])
    post(admin_api, [{"oops": 1}, conversation_record(1), conversation_record(2)])
    job = ImportJob.objects.get()
    assert job.original_name.startswith("API ingestion ") and job.status == "done" and not job.file
    assert job.created_by == members["admin"]
    assert (job.lines_read, job.conversations_created, job.duplicates, job.error_count) == (5, 2, 1, 2)
    assert list(ImportIssue.objects.filter(job=job).values_list("line", "field")) == [
        (2, "messages"),
        (3, "messages"),
    ]
    # the admin sees it where file imports show
    listed = admin_api.get("/api/imports/?project__slug=sales").json()["results"]
    assert [j["id"] for j in listed] == [job.pk]
    page = Client()
    page.force_login(members["admin"])
    html = page.get(f"/p/sales/imports/{job.pk}/").content.decode()
    assert job.original_name in html and "messages" in html


def test_a_failure_mid_write_leaves_nothing_behind(admin_api, monkeypatch):
    def broken(project, written):
        raise RuntimeError("database went away")

    monkeypatch.setattr(ingest, "queue_new_responses", broken)
    with pytest.raises(RuntimeError):
        post(admin_api, [conversation_record(1), conversation_record(2)])
    assert Conversation.objects.count() == 0 and ModelResponse.objects.count() == 0
    assert ImportJob.objects.count() == 0


def queries_for(client, records) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = post(client, {"records": records})
    assert response.status_code == 200, response.content
    return len(ctx.captured_queries)


def test_queries_per_batch_stay_bounded(admin_api, project):
    project.overlap = 2
    project.save()
    small = queries_for(admin_api, [conversation_record(i) for i in range(5)])
    large = queries_for(admin_api, [conversation_record(i) for i in range(100, 150)])
    assert large <= small + 2, (small, large)  # SQLite's bulk_create may split a large insert
    assert large < 40
    mixed = [conversation_record(i) for i in range(100, 125)] + [
        conversation_record(i) for i in range(200, 225)
    ]
    mixed.append({"messages": "bad"})
    assert queries_for(admin_api, mixed) < 40


def test_schema_documents_the_endpoint(admin_api):
    schema = admin_api.get("/api/schema/?format=json").json()
    operation = schema["paths"]["/api/projects/{slug}/ingest/"]["post"]
    assert {"200", "400", "401", "403", "404", "413", "429"} <= set(operation["responses"])
    body = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert "records" in schema["components"]["schemas"][body]["properties"]


@pytest.mark.django_db(transaction=True)
def test_writers_into_one_project_take_turns(members, project):
    """An ingestion waits while another writer holds the project (here: a transaction that then stores
    c-1 itself); it sees that writer's rows afterwards instead of failing on the unique external id."""
    if connection.vendor != "postgresql":
        pytest.skip("the lock is PostgreSQL's; SQLite runs one writer at a time")
    client = token_client(members["admin"])
    answer = {}

    def send():
        try:
            answer["response"] = post(client, [conversation_record(1)])
        finally:
            connection.close()

    ((_, parsed),) = ingest.check_records([conversation_record(1)], project, "train")[0]
    with transaction.atomic():
        store.lock_project_writes(project)
        thread = threading.Thread(target=send)
        thread.start()
        thread.join(1.5)
        assert thread.is_alive(), "the ingestion did not wait for the other writer"
        Conversation.objects.create(
            project=project,
            external_id="c-1",
            messages=parsed.messages,
            tools=parsed.tools,
            content_hash=parsed.content_hash,
        )
    thread.join(30)
    assert answer["response"].status_code == 200
    assert statuses(answer["response"]) == [(0, "duplicate")]
    assert Conversation.objects.count() == 1


def openai_dump(call_id: str, name: str, arguments: str, content=None) -> dict:
    """An assistant message as openai-python's ChatCompletionMessage.model_dump() writes it."""
    return {
        "content": content,
        "refusal": None,
        "role": "assistant",
        "annotations": [],
        "audio": None,
        "function_call": None,
        "tool_calls": [
            {"id": call_id, "function": {"arguments": arguments, "name": name}, "type": "function"}
        ],
    }


def test_the_readme_examples_go_in(admin_api):
    """README "Sending conversations from a running agent": the curl record, and a record built from the
    OpenAI client's objects (`completion.model_dump()`, earlier turns dumped into the messages)."""
    curl_record = {
        "external_id": "session-8812",
        "model": "agent-v3",
        "messages": [
            {"role": "user", "content": "Is A-113 in stock?"},
            {"role": "assistant", "content": "Yes, 12 units."},
        ],
    }
    request = {
        "model": "agent-v3",
        "messages": [
            {"role": "system", "content": "You are a sales assistant."},
            {"role": "user", "content": "Is A-113 in stock? If so order 2."},
            openai_dump("call_a", "check_inventory", '{"sku":"A-113"}'),
            {"role": "tool", "tool_call_id": "call_a", "content": '{"in_stock": 12}'},
        ],
        "tools": TOOLS,
        "temperature": 0.2,
    }
    completion = {
        "id": "chatcmpl-BxQ1",
        "choices": [
            {
                "finish_reason": "tool_calls",
                "index": 0,
                "logprobs": None,
                "message": openai_dump("call_b", "create_order", '{"sku":"A-113","quantity":2}'),
            }
        ],
        "created": 1750000000,
        "model": "agent-v3-2025-06",
        "object": "chat.completion",
        "service_tier": "default",
        "system_fingerprint": "fp_1",
        "usage": {
            "completion_tokens": 18,
            "prompt_tokens": 80,
            "total_tokens": 98,
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        },
    }
    record = {"request": request, "response": completion, "metadata": {"session": "s-1"}}
    response = post(admin_api, {"records": [curl_record, record]})
    assert response.status_code == 200, response.content
    assert statuses(response) == [(0, "created"), (1, "created")], response.json()["results"]
    stored = ModelResponse.objects.get(conversation__external_id="chatcmpl-BxQ1")
    assert stored.context_length == 4
    assert stored.message["tool_calls"][0]["function"]["name"] == "create_order"
    assert ModelResponse.objects.get(conversation__external_id="session-8812").message["content"] == (
        "Yes, 12 units."
    )


def test_file_import_and_ingestion_share_one_write_path(admin_api, project):
    """What came in through the API is a duplicate (or a conflict) for a file import, and back."""
    post(admin_api, [conversation_record(1)])
    changed = conversation_record(1)
    changed["messages"][1]["content"] = "something else entirely"
    data = jsonl([conversation_record(1), changed, conversation_record(2)])
    job = ImportJob(project=project, original_name="in.jsonl", size_bytes=len(data))
    job.file.save("in.jsonl", ContentFile(data), save=False)
    job.save()
    job = run_import(job.pk)
    assert (job.conversations_created, job.duplicates, job.error_count) == (1, 1, 1)
    assert list(job.issues.values_list("line", "field", "message")) == [(2, "external_id", CONFLICT)]
    again = post(admin_api, [conversation_record(2)])
    assert statuses(again) == [(0, "duplicate")]
    assert assignment.sync_tasks(project) == {"label": 0, "compare": 0, "slots": 0}


def test_many_new_model_names_cost_a_constant_number_of_queries(admin_api, project):
    from annotator.models import ModelVersion

    def records(start, names):
        return [
            conversation_record(
                i,
                responses=[{"model": f"m-{i}-{k}", "raw": f"Answer number {k} here."} for k in range(names)],
            )
            for i in range(start, start + 4)
        ]

    few = queries_for(admin_api, records(0, 2))
    many = queries_for(admin_api, records(100, 40))
    assert ModelVersion.objects.filter(project=project, name__startswith="m-").count() == 4 * 2 + 4 * 40
    assert ModelVersion.history.filter(name="m-100-39").exists()  # created with its history row
    assert many <= few + 10, (few, many)  # not one per new model name (SQLite splits big inserts)
