"""The OpenAI-compatible endpoint client, against a stub chat server on 127.0.0.1 started here."""

import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest import mock

import pytest

from evaluation import runner
from evaluation.models import EvalResult
from inference.client import ChatClient, EndpointError, chat_url, message_to_text
from toolcalls.score import score_case

from .conftest import TOOLS
from .test_eval_support import make_suite, model

LOOPBACK = ["127.0.0.1"]  # the stub servers below listen on loopback, which a client must be told to allow


class StubChat:
    """Answers POST /v1/chat/completions with whatever `answer(body)` returns: (status, payload)."""

    def __init__(self, answer):
        self.answer = answer
        self.requests = []

    @contextmanager
    def serve(self):
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                status, payload = stub.answer(body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/v1"
        finally:
            server.shutdown()
            server.server_close()


def completion(message, finish="stop", tokens=7):
    return 200, {
        "id": "x",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 20, "completion_tokens": tokens},
    }


def call(name, arguments):
    return {"id": "call_1", "type": "function", "function": {"name": name, "arguments": arguments}}


@pytest.fixture(autouse=True)
def no_backoff_sleep():
    with mock.patch("inference.client.time.sleep"):
        yield


def test_messages_become_the_raw_text_the_metrics_read():
    names = {"check_inventory", "create_order"}
    good = message_to_text(
        {"role": "assistant", "content": None, "tool_calls": [call("check_inventory", '{"sku": "A-1"}')]}
    )
    assert good == '<tool_call>\n{"name": "check_inventory", "arguments": {"sku": "A-1"}}\n</tool_call>'
    expected = {"role": "assistant", "tool_calls": [call("check_inventory", '{"sku": "A-1"}')]}
    assert score_case(expected, good, TOOLS)["tool_call_accuracy"] == 1
    broken = message_to_text({"role": "assistant", "tool_calls": [call("check_inventory", '{"sku": "A-1"')]})
    assert score_case(expected, broken, TOOLS)["defects"]["malformed_call"] == 1  # invalid JSON stays invalid
    thought = message_to_text(
        {"role": "assistant", "content": "It is in stock.", "reasoning_content": "check"}
    )
    assert thought == "<think>\ncheck\n</think>\n\nIt is in stock."
    two = message_to_text(
        {
            "role": "assistant",
            "tool_calls": [call("check_inventory", {"sku": "A-1"}), call("create_order", "")],
        }
    )
    assert two.count("<tool_call>") == 2 and '"arguments": {}' in two and names


def test_chat_url():
    assert chat_url("http://gpu:8000/v1/") == "http://gpu:8000/v1/chat/completions"
    assert chat_url("https://x/v1/chat/completions") == "https://x/v1/chat/completions"
    with pytest.raises(ValueError):
        chat_url("gpu:8000")


def test_complete_sends_a_greedy_request_with_tools_and_reads_the_finish_reason():
    stub = StubChat(
        lambda body: completion({"role": "assistant", "content": "word " * 50}, finish="length", tokens=64)
    )
    with stub.serve() as url:
        out = ChatClient(url, "qwen3-8b-sft", api_key="sekret", allowed_hosts=LOOPBACK).complete(
            [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "tool_calls": [call("check_inventory", {"sku": "A-1"})]},
                {"role": "tool", "tool_call_id": "call_1", "content": "{}"},
            ],
            TOOLS,
            max_tokens=64,
        )
    req = stub.requests[0]
    assert req["path"] == "/v1/chat/completions" and req["headers"]["Authorization"] == "Bearer sekret"
    body = req["body"]
    assert body["model"] == "qwen3-8b-sft" and body["temperature"] == 0 and body["max_tokens"] == 64
    assert body["tools"] == TOOLS
    assert body["messages"][1]["tool_calls"][0]["function"]["arguments"] == '{"sku": "A-1"}'  # JSON string
    assert out.stopped_at_limit is True and out.new_tokens == 64 and out.text.startswith("word word")


def test_retries_server_errors_but_not_client_errors():
    answers = iter(
        [(503, {"error": {"message": "overloaded"}}), completion({"role": "assistant", "content": "ok!"})]
    )
    stub = StubChat(lambda body: next(answers))
    with stub.serve() as url:
        assert (
            ChatClient(url, "m", allowed_hosts=LOOPBACK)
            .complete([{"role": "user", "content": "Hi"}], None)
            .text
            == "ok!"
        )
    assert len(stub.requests) == 2

    stub = StubChat(lambda body: (400, {"error": {"message": "model 'm' does not exist"}}))
    with stub.serve() as url:
        with pytest.raises(EndpointError, match="HTTP 400: model 'm' does not exist"):
            ChatClient(url, "m", allowed_hosts=LOOPBACK).complete([{"role": "user", "content": "Hi"}], None)
    assert len(stub.requests) == 1


@pytest.mark.django_db
def test_an_endpoint_run_scores_what_the_endpoint_said(project):
    suite = make_suite(project, 6)

    def answer(body):
        text = body["messages"][-1]["content"]
        if "A-3" in text:
            return 500, {"error": "boom"}
        if "A-" in text:
            sku = text.split()[1]
            return completion(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [call("check_inventory", json.dumps({"sku": sku}))],
                },
                "tool_calls",
            )
        return completion({"role": "assistant", "content": "Hello! How can I help you today?"})

    stub = StubChat(answer)
    mv = model(project, "served", origin="external")
    with stub.serve() as url:
        run = runner.create_run(
            project,
            suite,
            mv,
            source="endpoint",
            start=False,
            api_key="k",
            settings={"base_url": url, "model": "served", "concurrency": 3},
        )
        run = runner.run_eval(run.pk)
    assert run.status == "done", run.message
    assert run.api_key == ""  # wiped at the end
    results = {r.case.external_id: r for r in EvalResult.objects.filter(run=run).select_related("case")}
    assert len(results) == 6
    assert results["case-3"].error.startswith("HTTP 500") and results["case-3"].output == ""
    assert results["case-1"].tool_call_accuracy == 1 and results["case-4"].tool_call_accuracy == 1
    assert run.summary["errors"] == 1 and run.summary["tool_call_accuracy"]["count"] == 5
    assert "1 case(s) had no output" in run.message


@pytest.mark.django_db
def test_an_endpoint_that_fails_everything_fails_the_run(project):
    suite = make_suite(project, 3)
    stub = StubChat(lambda body: (502, {"error": "bad gateway"}))
    with stub.serve() as url:
        run = runner.create_run(
            project,
            suite,
            model(project, "down"),
            source="endpoint",
            start=False,
            settings={"base_url": url, "model": "down"},
        )
        run = runner.run_eval(run.pk)
    assert run.status == "failed" and "failed every request" in run.message
    assert not EvalResult.objects.filter(run=run).exists()
