import json

import pytest
from django.core.files.base import ContentFile

from annotator import importers
from annotator.importers import run_import
from annotator.models import Conversation, ImportIssue, ImportJob, ModelResponse

from .conftest import TOOLS, conversation_record, jsonl

pytestmark = pytest.mark.django_db


def make_job(project, data: bytes, name="in.jsonl") -> ImportJob:
    job = ImportJob(project=project, original_name=name, size_bytes=len(data))
    job.file.save(name, ContentFile(data), save=False)
    job.save()
    return job


def issues_of(job):
    return [(i.line, i.field, i.message) for i in ImportIssue.objects.filter(job=job).order_by("line", "id")]


def test_good_lines_import_with_parsed_qwen_responses(project):
    job = run_import(make_job(project, jsonl(conversation_record(i) for i in range(5))).pk)
    assert job.status == "done"
    assert (job.lines_read, job.conversations_created, job.responses_created, job.error_count) == (5, 5, 5, 0)
    response = ModelResponse.objects.get(conversation__external_id="c-3")
    call = response.message["tool_calls"][0]["function"]
    assert call["name"] == "check_inventory"
    assert json.loads(call["arguments"]) == {"sku": "A-3"}
    assert response.model_version.name == "agent-v1"
    assert response.context_length == 2


def test_reimport_of_the_same_file_creates_nothing(project):
    data = jsonl(conversation_record(i) for i in range(4))
    run_import(make_job(project, data).pk)
    again = run_import(make_job(project, data).pk)
    assert again.status == "done"
    assert (again.conversations_created, again.responses_created, again.duplicates) == (0, 0, 4)
    assert Conversation.objects.count() == 4 and ModelResponse.objects.count() == 4


def test_reimport_adds_new_model_responses_to_known_conversations(project):
    run_import(make_job(project, jsonl([conversation_record(1)])).pk)
    newer = conversation_record(1, responses=[{"model": "agent-v2", "raw": "It is in stock, 12 units left."}])
    job = run_import(make_job(project, jsonl([newer])).pk)
    assert (job.conversations_created, job.responses_created, job.duplicates) == (0, 1, 1)


def test_same_external_id_with_other_content_is_rejected(project):
    run_import(make_job(project, jsonl([conversation_record(1)])).pk)
    changed = conversation_record(1)
    changed["messages"][1]["content"] = "something else"
    job = run_import(make_job(project, jsonl([changed, conversation_record(2)])).pk)
    assert job.error_count == 1 and job.conversations_created == 1
    assert issues_of(job) == [(1, "external_id", "'c-1' already exists with different messages or tools")]


BAD_LINES = [
    ("{not json", "", "invalid JSON"),
    ('["a list"]', "", "each line must be a JSON object"),
    (json.dumps({"messages": [{"role": "robot", "content": "hi"}]}), "messages[0].role", "must be one of"),
    (json.dumps({"messages": []}), "messages", "non-empty list"),
    (json.dumps({"external_id": "x"}), "messages", "is required"),
    (
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"type": "function", "function": {"name": "launch_rocket", "arguments": "{}"}}
                        ],
                    },
                ],
                "tools": TOOLS,
            }
        ),
        "messages[1].tool_calls[0].function.name",
        "unknown tool 'launch_rocket'",
    ),
    (
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "type": "function",
                                "function": {"name": "check_inventory", "arguments": "[1, 2]"},
                            }
                        ],
                    },
                ],
                "tools": TOOLS,
            }
        ),
        "messages[1].tool_calls[0].function.arguments",
        "must be a JSON object",
    ),
    (
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"type": "function", "function": {"name": "check_inventory", "arguments": "{bad"}}
                        ],
                    },
                ],
                "tools": TOOLS,
            }
        ),
        "messages[1].tool_calls[0].function.arguments",
        "is not valid JSON",
    ),
    (
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "function", "name": "f", "content": "1"},
                ]
            }
        ),
        "messages[1].role",
        "must follow an assistant function_call of 'f'",
    ),
    (
        json.dumps({"messages": [{"role": "user", "content": [{"type": "text", "text": 3}]}]}),
        "messages[0].content[0].text",
        "must be a string",
    ),
    (
        json.dumps({"messages": [{"role": "user", "content": "hi"}], "split": "test"}),
        "split",
        "must be one of",
    ),
    (
        json.dumps({"messages": [{"role": "user", "content": "hi"}], "priority": "high"}),
        "priority",
        "integer",
    ),
    (
        json.dumps(
            {
                "messages": [{"role": "user", "content": "hi"}],
                "responses": [{"model": "m", "context_length": 5, "raw": "x"}],
            }
        ),
        "responses[0].context_length",
        "from 1 to 1",
    ),
    (
        json.dumps({"messages": [{"role": "user", "content": "hi"}], "responses": [{"model": "m"}]}),
        "responses[0]",
        'needs "message"',
    ),
    (
        json.dumps({"messages": [{"role": "user", "content": "hi"}], "tools": [{"function": {"name": 3}}]}),
        "tools[0].function.name",
        "non-empty string",
    ),
]


@pytest.mark.parametrize(("line", "field", "fragment"), BAD_LINES)
def test_each_bad_line_is_reported_with_line_and_field(project, line, field, fragment):
    data = jsonl([conversation_record(1), line, conversation_record(2)])
    job = run_import(make_job(project, data).pk)
    assert job.status == "done"
    assert job.conversations_created == 2  # nothing valid is lost
    found = issues_of(job)
    assert found, "the bad line must be reported"
    assert all(line_no == 2 for line_no, _, _ in found)
    assert any(f == field and fragment in msg for _, f, msg in found), found


def test_non_utf8_and_oversize_lines_are_reported(project, settings):
    settings.IMPORT_MAX_LINE_BYTES = 2000
    big = json.dumps(conversation_record(9, metadata={"pad": "x" * 5000})).encode()
    data = (
        jsonl([conversation_record(1)])
        + b'{"messages": "\xff\xfe"}\n'
        + big
        + b"\n"
        + jsonl([conversation_record(2)])
    )
    job = run_import(make_job(project, data).pk)
    found = issues_of(job)
    assert (2, "", "not valid UTF-8 (byte 14: b'\\xff')") in found
    assert any(line == 3 and "over the limit of 2,000" in msg for line, _, msg in found)
    assert job.conversations_created == 2 and job.lines_read == 4


def test_empty_file_fails_with_a_clear_message(project):
    job = run_import(make_job(project, b"").pk)
    assert job.status == "failed" and job.message == "The file is empty: no lines to import."


def test_file_of_only_bad_lines_fails_and_reports_every_line(project):
    job = run_import(make_job(project, b"nope\n{}\n[1]\n").pk)
    assert job.status == "failed"
    assert job.message == "No valid lines: all 3 lines were rejected."
    assert {line for line, _, _ in issues_of(job)} == {1, 2, 3}
    assert Conversation.objects.count() == 0


def test_last_assistant_turn_becomes_the_response(project):
    record = {
        "external_id": "log-1",
        "model": "prod-agent",
        "tools": TOOLS,
        "messages": [
            {"role": "user", "content": "Order two A-1"},
            {"role": "assistant", "content": "Done! Your order #123 is placed."},
        ],
    }
    run_import(make_job(project, jsonl([record])).pk)
    response = ModelResponse.objects.get()
    assert response.context_length == 1 and response.model_version.name == "prod-agent"
    assert response.message["content"] == "Done! Your order #123 is placed."


def test_malformed_raw_output_is_kept_as_a_badcase(project):
    raw = '<tool_call>{"name": "check_inventory", "arguments": {"sku": "A-1"}'  # unclosed
    record = conversation_record(1, responses=[{"model": "m", "raw": raw}])
    job = run_import(make_job(project, jsonl([record])).pk)
    assert job.error_count == 0
    response = ModelResponse.objects.get()
    assert response.raw_text == raw and response.message["malformed"]
    assert "tool_calls" not in response.message


def test_killed_import_resumes_from_last_committed_batch(project, settings, monkeypatch):
    settings.IMPORT_BATCH_SIZE = 3
    data = jsonl([conversation_record(i) for i in range(10)] + ["{bad"])
    job = make_job(project, data)
    original = importers.Importer._write
    calls = {"n": 0}

    def dying_write(self, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise SystemExit("worker killed")  # mid-batch: this batch's transaction is rolled back
        return original(self, batch)

    monkeypatch.setattr(importers.Importer, "_write", dying_write)
    with pytest.raises(SystemExit):
        run_import(job.pk)
    job.refresh_from_db()
    assert job.status == "running" and job.lines_read == 6 and Conversation.objects.count() == 6
    monkeypatch.setattr(importers.Importer, "_write", original)
    job = run_import(job.pk)  # the redelivered task
    assert job.status == "done"
    assert Conversation.objects.count() == 10 and job.conversations_created == 10
    assert job.duplicates == 0 and job.error_count == 1 and job.attempts == 2


def test_cancel_keeps_committed_batches(project, settings):
    settings.IMPORT_BATCH_SIZE = 2
    job = make_job(project, jsonl(conversation_record(i) for i in range(6)))
    ImportJob.objects.filter(pk=job.pk).update(cancel_requested=True)
    job = run_import(job.pk)
    assert job.status == "cancelled" and Conversation.objects.count() == 0


def test_finished_job_is_not_run_twice(project):
    job = run_import(make_job(project, jsonl([conversation_record(1)])).pk)
    again = run_import(job.pk)
    assert again.attempts == 1 and Conversation.objects.count() == 1


def test_an_unexpected_fault_fails_the_job_with_a_message_instead_of_leaving_it_running(
    project, tmp_path, monkeypatch, settings
):
    from annotator import importers
    from annotator.models import ImportJob

    settings.MEDIA_ROOT = tmp_path

    def broken(*args, **kwargs):
        raise TypeError("unhashable type: 'list'")

    monkeypatch.setattr(importers, "parse_line", broken)
    from django.core.files.base import ContentFile

    job = ImportJob.objects.create(project=project, original_name="x.jsonl")
    job.file.save("x.jsonl", ContentFile(b'{"messages": [{"role": "user", "content": "hi"}]}\n'))
    job = importers.run_import(job.pk)
    job.refresh_from_db()
    assert job.status == ImportJob.State.FAILED
    assert "unexpected error" in job.message and "TypeError" in job.message
