"""A small client for OpenAI-compatible chat endpoints (vLLM, TGI, llama.cpp server, …).

    client = ChatClient("http://gpu-1:8000/v1", model="qwen3-8b-sft", allowed_hosts=["gpu-1"])
    completion = client.complete(messages, tools, max_tokens=256)
    completion.text            # the answer as Qwen-style raw text, for the metrics

The endpoint answers with an assistant *message* (content, tool_calls, maybe
reasoning); the metrics read raw model text. ``message_to_text`` writes the message the
way a Qwen model writes it, keeping every defect visible: arguments that are not valid
JSON stay invalid (a malformed call), reasoning goes inside ``<think>``, a server without
a tool parser leaves ``<tool_call>`` text in content, which is scored as is.
``finish_reason == "length"`` means generation stopped at the token limit.

Standard library only; retries on 429/5xx and connection errors with backoff. Every request
goes through ``inference.endpoints``: the host must pass the outbound rule (no metadata, link-local
or unlisted private addresses; MODEL_ENDPOINT_ALLOWED_HOSTS) when it is resolved at connect time,
a redirect is an error (never followed), and a remote error body is kept only as a short excerpt.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

from inference.endpoints import EndpointRefused, check_endpoint_url, excerpt, post

RETRY_STATUSES = {408, 409, 425, 429, 500, 502, 503, 504}
ERROR_EXCERPT_CHARS = 200  # of a remote error body: what a run page or judge report may show


class EndpointError(Exception):
    """The endpoint refused or failed a request (after retries)."""


@dataclass
class Completion:
    text: str
    stopped_at_limit: bool | None
    new_tokens: int | None
    latency_ms: int
    error: str = ""


def chat_url(base_url: str) -> str:
    """``http://host:8000/v1`` -> ``http://host:8000/v1/chat/completions`` (a full URL is kept)."""
    base = (base_url or "").strip().rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{base_url!r} is not an http(s) URL")
    if base.endswith("/chat/completions"):
        return base
    return base + "/chat/completions"


def check_base_url(base_url: str, allowed_hosts: Iterable[str] = ()) -> str:
    """The base URL, stripped, when the server may call it (inference/endpoints.py); ValueError saying
    why not. The app passes settings.MODEL_ENDPOINT_ALLOWED_HOSTS; none means public addresses only."""
    try:
        chat_url(base_url)
    except ValueError:
        raise ValueError("an http(s) URL such as http://gpu-1:8000/v1") from None
    return check_endpoint_url(base_url, allowed_hosts)


def _arguments_text(args) -> str:
    if args is None or (isinstance(args, str) and not args.strip()):
        return "{}"
    if isinstance(args, str):
        return args.strip()  # kept verbatim: invalid JSON stays invalid
    return json.dumps(args, ensure_ascii=False)


def message_to_text(message: dict) -> str:
    """An OpenAI assistant message as the raw text a Qwen model would have written."""
    parts = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning.strip():
        parts.append(f"<think>\n{reasoning.strip()}\n</think>\n\n")
    content = message.get("content")
    if isinstance(content, list):  # content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if content:
        parts.append(content)
    for i, call in enumerate(message.get("tool_calls") or ()):
        fn = (call or {}).get("function") or {}
        name = json.dumps(fn.get("name") if isinstance(fn.get("name"), str) else "", ensure_ascii=False)
        sep = "\n" if (content or i) else ""
        parts.append(
            f'{sep}<tool_call>\n{{"name": {name}, "arguments": {_arguments_text(fn.get("arguments"))}}}\n'
            "</tool_call>"
        )
    return "".join(parts)


def request_messages(messages: list) -> list:
    """Messages with only the keys the chat API knows; tool-call arguments as JSON strings."""
    out = []
    for m in messages:
        msg = {"role": m.get("role"), "content": m.get("content")}
        if m.get("role") == "assistant" and m.get("tool_calls"):
            msg["tool_calls"] = [
                {
                    "id": c.get("id") or f"call_{k}",
                    "type": "function",
                    "function": {
                        "name": (c.get("function") or {}).get("name"),
                        "arguments": _arguments_text((c.get("function") or {}).get("arguments")),
                    },
                }
                for k, c in enumerate(m["tool_calls"])
            ]
        if m.get("role") == "tool":
            if m.get("tool_call_id"):
                msg["tool_call_id"] = m["tool_call_id"]
            if m.get("name"):
                msg["name"] = m["name"]
        out.append(msg)
    return out


class ChatClient:
    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str = "",
        timeout: float = 120.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        extra_body: dict | None = None,
        allowed_hosts: Iterable[str] = (),
    ):
        self.url = chat_url(base_url)
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.extra_body = extra_body or {}
        self.allowed_hosts = list(allowed_hosts)

    def __repr__(self):  # never the key
        return (
            f"ChatClient({self.url!r}, model={self.model!r}, api_key={'set' if self.api_key else 'not set'})"
        )

    def _post(self, body: dict) -> dict:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                answer = post(self.url, data, headers, allowed_hosts=self.allowed_hosts, timeout=self.timeout)
            except EndpointRefused as exc:
                raise EndpointError(f"refused to call {self.url}: {exc}") from None
            except OSError as exc:  # connection refused or reset, timeout, TLS failure
                last = f"cannot reach {self.url}: {excerpt(str(exc) or type(exc).__name__)}"
                continue
            if 300 <= answer.status < 400:
                raise EndpointError(
                    f"HTTP {answer.status}: the endpoint redirects (not followed); "
                    "give the final URL as the base URL"
                )
            if answer.status >= 400:
                last = f"HTTP {answer.status}: {_error_detail(answer.body, answer.reason)}"
                if answer.status not in RETRY_STATUSES:
                    raise EndpointError(last)
                continue
            try:
                return json.loads(answer.body.decode("utf-8"))
            except ValueError as exc:
                raise EndpointError(f"the endpoint did not answer JSON: {exc}") from None
        raise EndpointError(f"{last} (after {self.max_retries + 1} attempts)")

    def complete(self, messages: list, tools: list | None, max_tokens: int = 256) -> Completion:
        body = {
            "model": self.model,
            "messages": request_messages(messages),
            "max_tokens": max_tokens,
            "temperature": 0,
            **self.extra_body,
        }
        if tools:
            body["tools"] = tools
        started = time.monotonic()
        data = self._post(body)
        latency = int(1000 * (time.monotonic() - started))
        try:
            choice = data["choices"][0]
            message = choice.get("message") or {}
        except (KeyError, IndexError, TypeError):
            raise EndpointError(
                f"unexpected answer (no choices[0].message): {excerpt(str(data), ERROR_EXCERPT_CHARS)}"
            ) from None
        finish = choice.get("finish_reason")
        usage = data.get("usage") or {}
        return Completion(
            text=message_to_text(message),
            stopped_at_limit=None if finish is None else finish == "length",
            new_tokens=usage.get("completion_tokens")
            if isinstance(usage.get("completion_tokens"), int)
            else None,
            latency_ms=latency,
        )

    def complete_many(
        self, items: list[tuple[list, list]], max_tokens: int = 256, concurrency: int = 4
    ) -> list[Completion]:
        """Several requests in flight at once; a failed case becomes an empty completion with its error."""

        def one(item):
            try:
                return self.complete(item[0], item[1], max_tokens)
            except EndpointError as exc:
                return Completion("", None, None, 0, str(exc))

        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            return list(pool.map(one, items))


def _error_detail(body: bytes, reason: str) -> str:
    """The message of an error answer, as a short excerpt: the body may be any internal service's reply."""
    text = body.decode("utf-8", "replace")
    try:
        err = json.loads(text).get("error")
        if isinstance(err, dict):
            text = str(err.get("message") or err)
        elif err:
            text = str(err)
    except (ValueError, AttributeError):
        pass
    return excerpt(text, ERROR_EXCERPT_CHARS) or excerpt(reason, ERROR_EXCERPT_CHARS)
