"""Import of today's OpenAI chat format, chat-completion log records and BFCL files (issue #16).

Fixtures under tests/data/import_formats/ are written in each real shape:
openai_today.jsonl (content parts, developer role, assistant first, mid-conversation system, legacy
function_call / function, empty arguments, refusal parts, two bad part lines), chat_logs.jsonl
(gateway records with one and two choices, an error record, legacy functions, an unknown tool) and
bfcl_test.jsonl + bfcl_answers.jsonl (simple, multiple, parallel, parallel_multiple, irrelevance, live,
Java types, and lines refused on purpose: multi-turn, relevance, no answer, an answer naming an unknown
function, an unknown type name).
"""

import json
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError

from annotator.importers import parse_line, run_import
from annotator.models import Conversation, ImportIssue, ImportJob, ModelResponse, Role
from evaluation import suites
from toolcalls import bfcl
from toolcalls.match import expected_calls
from toolcalls.openai_format import line_from_chat_log, normalise_assistant_message, normalise_messages
from toolcalls.validate import validate_assistant_message, validate_messages, validate_tool_specs

DATA = Path(__file__).parent / "data" / "import_formats"


def lines_of(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def bfcl_answers():
    answers, errors = bfcl.read_answers((DATA / "bfcl_answers.jsonl").read_bytes().splitlines())
    assert errors == []
    return answers


def make_job(project, name: str, dialect="auto", answers: str | None = None) -> ImportJob:
    data = (DATA / name).read_bytes()
    job = ImportJob(project=project, original_name=name, size_bytes=len(data), dialect=dialect)
    job.file.save(name, ContentFile(data), save=False)
    if answers:
        job.answers_file.save(answers, ContentFile((DATA / answers).read_bytes()), save=False)
    job.save()
    return job


def issues_of(job) -> list[tuple[int, str, str]]:
    return [(i.line, i.field, i.message) for i in ImportIssue.objects.filter(job=job).order_by("line", "id")]


def test_content_parts_are_joined_with_placeholders_and_kept_whole():
    parts = [
        {"type": "text", "text": "Is this the jacket?"},
        {"type": "image_url", "image_url": {"url": "https://cdn.example.com/j.jpg"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {"type": "file", "file": {"file_id": "file-1"}},
        {"type": "text", "text": "Size M."},
    ]
    messages = [{"role": "user", "content": parts}]
    out, notes, errors = normalise_messages(messages)
    assert errors == []
    assert out[0]["content"] == "Is this the jacket?\n[image_url]\n[input_audio]\n[file]\nSize M."
    assert out[0]["content_parts"] == parts
    assert messages[0]["content"] is parts  # the input is not changed
    assert notes == ["content parts at messages[0] joined as text"]
    assert validate_messages(out, None) == []


@pytest.mark.parametrize(
    ("content", "field", "fragment"),
    [
        ([{"type": "text", "text": "a"}, "b"], "messages[1].content[1]", "must be an object"),
        ([{"type": "text", "text": 4}], "messages[1].content[0].text", "must be a string"),
        ([{"type": "refusal", "refusal": None}], "messages[1].content[0].refusal", "must be a string"),
        ([{"text": "no type"}], "messages[1].content[0].type", "must name the part"),
    ],
)
def test_a_bad_content_part_is_an_error_at_its_path(content, field, fragment):
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": content}]
    _, _, errors = normalise_messages(messages)
    assert [e.field for e in errors] == [field]
    assert fragment in errors[0].message


def test_developer_role_assistant_first_and_late_system_are_accepted_and_noted():
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Hours?"},
        {"role": "system", "content": "User is a gold member."},
        {"role": "user", "content": "On Sunday."},
    ]
    out, notes, errors = normalise_messages(messages)
    assert errors == [] and validate_messages(out, None) == []
    assert out[0]["role"] == "system"
    assert notes == [
        "developer message at messages[0] read as system",
        "assistant speaks first",
        "system message at messages[3]",
    ]
    # a leading run of system messages is the normal shape: nothing to note
    assert (
        normalise_messages([{"role": "system", "content": "a"}, {"role": "system", "content": "b"}])[1] == []
    )


def test_legacy_function_call_and_function_message_become_tool_call_and_tool_result():
    messages = lines_of("openai_today.jsonl")[4]["messages"]
    out, notes, errors = normalise_messages(messages)
    assert errors == []
    assert "function_call" not in out[1]
    assert out[1]["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
        }
    ]
    assert out[2] == {
        "role": "tool",
        "name": "get_weather",
        "tool_call_id": "call_1",
        "content": '{"temp_c": -3, "sky": "snow"}',
    }
    assert validate_messages(out, lines_of("openai_today.jsonl")[4]["tools"]) == []
    assert notes[:2] == [
        "legacy function_call at messages[1] read as tool_calls",
        "function message at messages[2] read as a tool result",
    ]


def test_legacy_calls_that_cannot_be_read_are_errors():
    both = {
        "role": "assistant",
        "function_call": {"name": "f", "arguments": "{}"},
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }
    _, _, errors = normalise_messages([{"role": "user", "content": "x"}, both])
    assert [(e.field, e.message) for e in errors] == [
        ("messages[1].function_call", "give either function_call or tool_calls, not both")
    ]
    orphan = [{"role": "user", "content": "x"}, {"role": "function", "name": "f", "content": "1"}]
    assert [e.field for e in normalise_messages(orphan)[2]] == ["messages[1].role"]
    # a function message answers the call of its own name only, and only once
    twice = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}},
        {"role": "function", "name": "f", "content": "1"},
        {"role": "function", "name": "f", "content": "2"},
    ]
    assert [e.field for e in normalise_messages(twice)[2]] == ["messages[3].role"]
    # without the importer, the validator names the legacy field instead of "needs content"
    raw = [{"role": "user", "content": "x"}, {"role": "assistant", "function_call": {"name": "f"}}]
    assert [e.field for e in validate_messages(raw, None)] == ["messages[1].function_call"]


def test_empty_arguments_mean_no_arguments():
    message = {
        "role": "assistant",
        "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "list_deals", "arguments": "  "}}
        ],
    }
    out, _, errors = normalise_assistant_message(message)
    assert errors == [] and out["tool_calls"][0]["function"]["arguments"] == "{}"
    tools = [{"type": "function", "function": {"name": "list_deals", "parameters": {"type": "object"}}}]
    assert validate_assistant_message(message, tools, check_schema=True) == []


def test_assistant_message_validation_reads_content_parts_first():
    message = {
        "role": "assistant",
        "content": [{"type": "text", "text": "It is "}, {"type": "text", "text": "in stock."}],
    }
    assert validate_assistant_message(message, []) == []
    bad = {"role": "assistant", "content": [{"type": "text", "text": ["x"]}]}
    assert [(e.field, e.message) for e in validate_assistant_message(bad, [], "correction")] == [
        ("correction.content[0].text", "must be a string")
    ]
    refusal = {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't help with that."}]}
    out, _, _ = normalise_assistant_message(refusal)
    assert out["content"] == "I can't help with that."


def test_an_already_stored_message_is_returned_unchanged():
    """Lines imported before this change must hash the same when imported again."""
    messages = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u", "name": None},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "a", "content": "1"},
    ]
    assert normalise_messages(messages) == (messages, [], [])


# ------------------------------------------------------------------------------- schema paths


def tool_with(parameters):
    return [{"type": "function", "function": {"name": "measure", "parameters": parameters}}]


def test_schema_error_names_the_place_inside_the_schema():
    params = {"type": "object", "properties": {"weight": {"type": "number"}, "height": {"type": "dict"}}}
    errors = validate_tool_specs(tool_with(params))
    assert [e.field for e in errors] == ["tools[0].function.parameters.properties.height.type"]
    assert errors[0].message == (
        "invalid JSON schema: 'dict' is not a JSON-schema type; use one of object, array, string, number, "
        "integer, boolean, null ('dict' means 'object')"
    )


def test_schema_errors_in_lists_and_other_keywords_have_their_paths():
    params = {
        "type": "object",
        "properties": {"a": {"type": ["string", "flot"]}, "b": {"type": "array", "items": {"type": "any"}}},
        "required": "a",
    }
    found = {e.field: e.message for e in validate_tool_specs(tool_with(params))}
    assert set(found) == {
        "tools[0].function.parameters.properties.a.type[1]",
        "tools[0].function.parameters.properties.b.items.type",
        "tools[0].function.parameters.required",
    }
    assert "'flot' is not a JSON-schema type" in found["tools[0].function.parameters.properties.a.type[1]"]
    assert 'leave out "type"' in found["tools[0].function.parameters.properties.b.items.type"]
    assert "'a' is not of type 'array'" in found["tools[0].function.parameters.required"]
    # a property that is itself named "type" is a name, not the keyword
    ok = {"type": "object", "properties": {"type": {"type": "string", "enum": ["plus", "black"]}}}
    assert validate_tool_specs(tool_with(ok)) == []


# ------------------------------------------------------------------------------- chat logs


def test_chat_log_record_becomes_a_conversation_with_one_response_per_choice():
    record = lines_of("chat_logs.jsonl")[1]
    line, errors, _ = line_from_chat_log(record)
    assert errors == []
    assert line["external_id"] == "chatcmpl-Z9y8" and line["model"] == "gpt-4o-2024-08-06"
    assert line["tools"] == []  # the request offered no tools
    assert [r["message"]["content"] for r in line["responses"]] == [
        "We're sorry your parcel is late - it is on its way.",
        "Apologies for the delay; your parcel will reach you soon.",
    ]
    settings = line["responses"][1]["generation"]
    assert settings["temperature"] == 1.0 and settings["n"] == 2 and settings["choice_index"] == 1
    assert settings["finish_reason"] == "stop" and settings["request_model"] == "gpt-4o"
    assert settings["usage"]["total_tokens"] == 50


def test_chat_log_without_response_id_is_keyed_by_content():
    record = lines_of("chat_logs.jsonl")[3]
    parsed, errors = parse_line(record, [], "train")
    assert errors == []
    assert len(parsed.external_id) == 32 and parsed.external_id == parsed.content_hash[:32]
    assert parsed.tools[0]["function"]["name"] == "convert_currency"  # legacy "functions" read as tools
    (response,) = parsed.responses
    assert response["message"]["tool_calls"][0]["function"]["name"] == "convert_currency"
    assert response["settings"]["finish_reason"] == "function_call"


# ---------------------------------------------------------------------- end to end, stored


needs_db = pytest.mark.django_db


@needs_db
def test_openai_file_imports_end_to_end(project):
    job = run_import(make_job(project, "openai_today.jsonl").pk)
    assert job.status == "done"
    assert (job.lines_read, job.conversations_created, job.error_count) == (8, 6, 2)
    assert issues_of(job) == [
        (7, "messages[2].content[1]", "a content part must be an object with a type"),
        (8, "messages[3].content[1].text", "must be a string"),
    ]
    parts = Conversation.objects.get(external_id="parts-1")
    assert (
        parts.messages[1]["content"]
        == "Is this jacket the one from your catalogue?\n[image_url]\nI want it in size M."
    )
    assert parts.messages[1]["content_parts"][1]["image_url"]["url"].endswith("jacket-83.jpg")
    assert parts.messages[0]["content"] == "You are the support agent of Northwind Outfitters."
    response = ModelResponse.objects.get(conversation=parts)
    assert response.message["content"] == "Yes, that is the Ridge Shell jacket.\n Size M is in stock."
    assert response.context_length == 2 and response.model_version.name == "support-gpt-4o"
    assert "content parts at messages[2] joined as text" in parts.metadata["format_notes"]

    developer = Conversation.objects.get(external_id="developer-1")
    assert developer.messages[0]["role"] == "system"
    assert developer.metadata["format_notes"] == ["developer message at messages[0] read as system"]
    assert Conversation.objects.get(external_id="greeting-1").metadata["format_notes"] == [
        "assistant speaks first"
    ]
    assert Conversation.objects.get(external_id="midsystem-1").metadata["format_notes"] == [
        "system message at messages[4]"
    ]
    legacy = Conversation.objects.get(external_id="legacy-1")
    assert [m["role"] for m in legacy.messages] == ["user", "assistant", "tool", "assistant"]
    assert legacy.messages[2]["tool_call_id"] == legacy.messages[1]["tool_calls"][0]["id"] == "call_1"

    deals = {
        r.model_version.name: r.message
        for r in ModelResponse.objects.filter(conversation__external_id="emptyargs-1")
    }
    assert deals["deals-agent"]["tool_calls"][0]["function"]["arguments"] == "{}"
    assert deals["deals-agent-b"]["content"] == "I cannot browse deals right now."
    notes = Conversation.objects.get(external_id="emptyargs-1").metadata["format_notes"]
    assert notes == ["content parts at responses[1].message joined as text"]

    again = run_import(make_job(project, "openai_today.jsonl").pk)
    assert (again.conversations_created, again.responses_created, again.duplicates) == (0, 0, 6)


@needs_db
def test_chat_log_file_imports_end_to_end(project):
    job = run_import(make_job(project, "chat_logs.jsonl").pk)
    assert (job.lines_read, job.conversations_created, job.responses_created, job.error_count) == (5, 3, 4, 2)
    assert issues_of(job) == [
        (3, "response.choices", "must be a non-empty list: nothing was answered"),
        (
            5,
            "response.choices[0].message.tool_calls[0].function.name",
            "unknown tool 'transcribe' (not in tools)",
        ),
    ]
    bank = Conversation.objects.get(external_id="chatcmpl-A1b2C3d4")
    assert [m["role"] for m in bank.messages] == ["system", "user"]
    assert bank.tools[0]["function"]["name"] == "freeze_card"
    assert bank.metadata["log"] == {"latency_ms": 812, "user": "cust-1029"}
    (response,) = bank.responses.all()
    assert response.context_length == 2 and response.model_version.name == "gpt-4o-mini-2024-07-18"
    assert response.generation_settings["max_tokens"] == 512
    assert response.generation_settings["response_id"] == "chatcmpl-A1b2C3d4"
    apology = Conversation.objects.get(external_id="chatcmpl-Z9y8")
    assert apology.responses.count() == 2 and apology.tools == []


@needs_db
@pytest.mark.parametrize("dialect", ["bfcl", "auto"])
def test_bfcl_file_imports_with_gold_in_metadata(project, dialect):
    job = run_import(make_job(project, "bfcl_test.jsonl", dialect=dialect, answers="bfcl_answers.jsonl").pk)
    assert job.status == "done"
    assert (job.lines_read, job.conversations_created, job.responses_created, job.error_count) == (
        27,
        22,
        0,
        5,
    )
    assert {line for line, _, _ in issues_of(job)} == {23, 24, 25, 26, 27}
    hotel = Conversation.objects.get(external_id="simple_6")
    assert hotel.metadata["bfcl_id"] == "simple_6" and hotel.metadata["bfcl_category"] == "simple"
    assert hotel.metadata["expected"]["tool_calls"][0]["optional"] == ["stay.zip", "breakfast"]
    assert hotel.tools[0]["function"]["parameters"]["properties"]["stay"]["type"] == "object"
    assert hotel.messages == [
        {
            "role": "user",
            "content": "Book a hotel room in Paris, postcode 75001, for 2 nights from 2024-05-10.",
        }
    ]
    irrelevant = Conversation.objects.get(external_id="irrelevance_1")
    assert irrelevant.metadata["expects_call"] is False
    live = Conversation.objects.get(external_id="live_simple_0-0-0")
    assert [m["role"] for m in live.messages] == ["system", "user"]
    again = run_import(make_job(project, "bfcl_test.jsonl", dialect=dialect, answers="bfcl_answers.jsonl").pk)
    assert (again.conversations_created, again.duplicates) == (0, 22)


@needs_db
def test_bfcl_lines_without_answers_file_are_refused_except_irrelevance(project):
    job = run_import(make_job(project, "bfcl_test.jsonl", dialect="bfcl").pk)
    assert job.conversations_created == 3  # irrelevance_0, irrelevance_1, live_irrelevance_0-0-0
    simple = [m for line, f, m in issues_of(job) if line == 1]
    assert simple == ["simple records need their possible answer: give the answers file"]


@needs_db
def test_bfcl_file_read_as_openai_is_refused_line_by_line_with_a_hint(project):
    job = run_import(make_job(project, "bfcl_test.jsonl", dialect="openai", answers=None).pk)
    assert job.status == "failed" and job.conversations_created == 0
    assert all("choose the BFCL format" in m for _, f, m in issues_of(job) if f == "messages")


@needs_db
def test_a_broken_answers_file_fails_the_job_before_anything_is_written(project):
    job = make_job(project, "bfcl_test.jsonl", dialect="bfcl")
    job.answers_file.save("a.jsonl", ContentFile(b'{"id": "simple_0", "ground_truth": []}\n{oops\n'))
    job = run_import(job.pk)
    assert job.status == "failed" and Conversation.objects.count() == 0
    assert "the possible-answers file is not valid: line 2: invalid JSON" in job.message


@needs_db
def test_import_command_reads_bfcl_with_answers(project, capsys):
    call_command(
        "import_conversations",
        project.slug,
        str(DATA / "bfcl_test.jsonl"),
        "--dialect",
        "bfcl",
        "--answers",
        str(DATA / "bfcl_answers.jsonl"),
    )
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (out["conversations"], out["rejected_lines"]) == (22, 5)
    bad = DATA.parent / "import_formats" / "chat_logs.jsonl"  # not an answers file: its lines have no id
    with pytest.raises(CommandError, match="line 1: id: must be a non-empty string"):
        call_command(
            "import_conversations", project.slug, str(DATA / "bfcl_test.jsonl"), "--answers", str(bad)
        )


def upload(name):
    return SimpleUploadedFile(name, (DATA / name).read_bytes())


@needs_db
def test_upload_page_takes_the_format_and_answers(
    client, members, project, django_capture_on_commit_callbacks
):
    client.force_login(members[Role.ADMIN])
    url = f"/p/{project.slug}/imports/new/"
    page = client.get(url)
    assert b"Possible answers" in page.content and b"BFCL" in page.content
    bad = client.post(
        url,
        {
            "file": upload("bfcl_test.jsonl"),
            "answers_file": upload("chat_logs.jsonl"),
            "dialect": "bfcl",
            "default_split": "train",
        },
    )
    assert bad.status_code == 200 and b"line 1: id: must be a non-empty string" in bad.content
    assert not ImportJob.objects.exists()
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(
            url,
            {
                "file": upload("bfcl_test.jsonl"),
                "answers_file": upload("bfcl_answers.jsonl"),
                "dialect": "bfcl",
                "default_split": "eval",
            },
        )
    job = ImportJob.objects.get()
    assert response.status_code == 302 and job.dialect == "bfcl" and job.answers_file
    job = run_import(job.pk)
    assert job.conversations_created == 22
    assert Conversation.objects.filter(split="eval").count() == 22
    assert b"BFCL" in client.get(f"/p/{project.slug}/imports/{job.pk}/").content


@needs_db
def test_import_api_takes_the_format_and_answers(api, members, project, django_capture_on_commit_callbacks):
    client = api(members[Role.ADMIN])
    bad = client.post(
        "/api/imports/",
        {
            "project": project.slug,
            "file": upload("bfcl_test.jsonl"),
            "answers_file": upload("bfcl_answers.jsonl"),
            "dialect": "openai",
        },
        format="multipart",
    )
    assert bad.status_code == 400 and "answers_file" in bad.json()
    wrong = client.post(
        "/api/imports/",
        {"project": project.slug, "file": upload("bfcl_test.jsonl"), "dialect": "yaml"},
        format="multipart",
    )
    assert wrong.status_code == 400 and "dialect" in wrong.json()
    with django_capture_on_commit_callbacks(execute=False):
        made = client.post(
            "/api/imports/",
            {
                "project": project.slug,
                "file": upload("bfcl_test.jsonl"),
                "answers_file": upload("bfcl_answers.jsonl"),
                "dialect": "bfcl",
            },
            format="multipart",
        )
    assert made.status_code == 201 and made.json()["dialect"] == "bfcl"
    assert "answers_file" not in made.json()
    job = run_import(made.json()["id"])
    assert job.conversations_created == 22


@needs_db
def test_bfcl_suite_has_the_gold_as_expected_turns(project, members):
    with (
        (DATA / "bfcl_test.jsonl").open("rb") as test_file,
        (DATA / "bfcl_answers.jsonl").open("rb") as answers,
    ):
        with pytest.raises(suites.SuiteError) as refused:
            suites.suite_from_bfcl(project, "bfcl", test_file, answers)
    assert {e.line for e in refused.value.errors} == {23, 24, 25, 26, 27}
    good = [line for line in (DATA / "bfcl_test.jsonl").read_bytes().splitlines()[:22]]
    with (DATA / "bfcl_answers.jsonl").open("rb") as answers:
        suite, created = suites.suite_from_bfcl(project, "bfcl", good, answers, file_name="bfcl_test.jsonl")
    assert created and suite.case_count == 22
    assert suite.source_detail["format"] == "bfcl"
    case = suite.cases.get(external_id="parallel_multiple_0")
    assert case.categories == ["parallel_multiple"]
    assert [c["name"] for c in expected_calls(case.expected)] == [
        "math_toolkit.sum_of_multiples",
        "math_toolkit.product_of_primes",
    ]
    assert suite.stats["expects_call"] == 19 and suite.stats["parallel_calls"] == 4


# ---------------------------------------------------------------- the REST API reads the same shapes


def test_api_conversation_and_response_store_todays_openai_shapes(db):
    from django.contrib.auth import get_user_model
    from rest_framework.test import APIClient

    from annotator.models import Conversation, Membership, ModelResponse, ModelVersion, Project, Role

    admin = get_user_model().objects.create_user("api-admin", password="pw")
    project = Project.objects.create(slug="api-shapes", name="API shapes")
    Membership.objects.create(user=admin, project=project, role=Role.ADMIN)
    client = APIClient()
    client.force_authenticate(admin)
    body = {
        "project": project.slug,
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Stock of"}, {"type": "text", "text": "A-1?"}],
            },
        ],
        "tools": [],
    }
    r = client.post("/api/conversations/", body, format="json")
    assert r.status_code == 201, r.json()
    conv = Conversation.objects.get(pk=r.json()["id"])
    assert conv.messages[0]["role"] == "system"
    assert conv.messages[1]["content"] == "Stock of\nA-1?"
    assert conv.metadata["format_notes"]

    mv = ModelVersion.objects.create(project=project, name="agent-v1")
    r = client.post(
        "/api/responses/",
        {
            "conversation": conv.pk,
            "model_version": mv.pk,
            "context_length": 2,
            "message": {"role": "assistant", "content": [{"type": "text", "text": "Checking that now."}]},
        },
        format="json",
    )
    assert r.status_code == 201, r.json()
    assert ModelResponse.objects.get(pk=r.json()["id"]).message["content"] == "Checking that now."

    bad = {**body, "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}
    r = client.post("/api/conversations/", bad, format="json")
    assert r.status_code == 400
    assert "messages[0].content[0].text" in str(r.json())


def test_a_message_name_must_be_text():
    from toolcalls.validate import validate_messages

    messages = [
        {"role": "user", "content": "Stock of A-1?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "function": {"name": "inv"}}]},
        {"role": "tool", "tool_call_id": "c1", "name": 5, "content": "7 units"},
    ]
    errors = validate_messages(messages, None)
    assert [(e.field, e.message) for e in errors] == [("messages[2].name", "must be a string")]
