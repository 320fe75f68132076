"""The OpenAI chat format as clients send and log it today, read into the form the project stores.

Applied before validation, on a conversation's messages and on each response message:

* ``content`` as a list of parts: text (and refusal) parts are joined with a newline, every other
  part (image_url, input_audio, file, …) leaves a placeholder naming its type, e.g. ``[image_url]``;
  the original parts stay in the message under ``content_parts`` so nothing is lost;
* role ``developer`` is a system message;
* the legacy ``function_call`` on an assistant message becomes ``tool_calls`` with a generated id
  (``call_<message index>``), and the ``function`` message answering it a ``tool`` message with that
  ``tool_call_id`` (its ``name`` kept);
* tool-call ``arguments`` that are empty or only whitespace mean no arguments: ``"{}"``;
* a refusal with no content and no call becomes the content (``refusal`` kept).

Nothing else changes: a message that was already in the stored form is returned equal to itself,
so a file imported before hashes the same when imported again.

Conversations where the assistant speaks first, or with a system message after the start, are
kept as they are and noted (``structure_notes``); the importer puts every note in the
conversation's ``metadata["format_notes"]``.

Chat-completion log records, as proxies and gateways store them
(``{"request": {"model", "messages", "tools", …}, "response": {"id", "model", "choices": […]}}``),
become one import line: the request is the context, each choice a response under review.

Pure functions, no Django: the importer, the ingestion endpoint and the validators share them.
"""

from __future__ import annotations

import json

from .errors import FieldError

TEXT_PARTS = ("text", "input_text", "output_text")
PARTS_KEY = "content_parts"
PART_JOIN = "\n"


def _join_parts(parts: list, path: str) -> tuple[str | None, list[FieldError]]:
    texts, errors = [], []
    for j, part in enumerate(parts):
        where = f"{path}[{j}]"
        if not isinstance(part, dict):
            errors.append(FieldError(where, "a content part must be an object with a type"))
            continue
        kind = part.get("type")
        if kind in TEXT_PARTS:
            text = part.get("text")
            if not isinstance(text, str):
                errors.append(FieldError(f"{where}.text", "must be a string"))
            else:
                texts.append(text)
        elif kind == "refusal":
            text = part.get("refusal")
            if not isinstance(text, str):
                errors.append(FieldError(f"{where}.refusal", "must be a string"))
            else:
                texts.append(text)
        elif isinstance(kind, str) and kind.strip():
            texts.append(f"[{kind.strip()}]")
        else:
            errors.append(
                FieldError(
                    f"{where}.type", "must name the part (text, image_url, input_audio, file, refusal…)"
                )
            )
    if errors:
        return None, errors
    return (PART_JOIN.join(texts) if texts else None), []


def _fix_arguments(call):
    """`"arguments": ""` (or only whitespace) is a call without arguments."""
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        return call
    args = call["function"].get("arguments")
    if isinstance(args, str) and not args.strip():
        return {**call, "function": {**call["function"], "arguments": "{}"}}
    return call


def _normalise_one(msg: dict, where: str, index: int, legacy: dict, notes: list, errors: list) -> dict:
    """One message; `legacy` maps a function name to the id of its still unanswered legacy call."""
    m = dict(msg)  # keys are kept as sent: a line stored before hashes the same when imported again
    role = m.get("role")
    if role == "developer":
        m["role"] = role = "system"
        notes.append(f"developer message at {where} read as system")
    content = m.get("content")
    if isinstance(content, list):
        text, errs = _join_parts(content, f"{where}.content")
        errors.extend(errs)
        if not errs:
            m["content"], m[PARTS_KEY] = text, content
            notes.append(f"content parts at {where} joined as text")
    if role == "function":
        name = m.get("name")
        if not isinstance(name, str) or not name:
            errors.append(FieldError(f"{where}.name", "a function message needs the name of the function"))
        elif name not in legacy:
            errors.append(
                FieldError(
                    f"{where}.role", f"a function message must follow an assistant function_call of {name!r}"
                )
            )
        else:
            m["role"], m["tool_call_id"] = "tool", legacy.pop(name)
            notes.append(f"function message at {where} read as a tool result")
    if m.get("role") != "assistant":
        return m
    if m.get("function_call") is not None:
        fc = m.pop("function_call")
        if m.get("tool_calls"):
            errors.append(
                FieldError(f"{where}.function_call", "give either function_call or tool_calls, not both")
            )
        elif not isinstance(fc, dict) or not isinstance(fc.get("name"), str) or not fc["name"]:
            errors.append(FieldError(f"{where}.function_call", "must be an object with a name and arguments"))
        else:
            call_id = f"call_{index}"
            m["tool_calls"] = [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": fc["name"], "arguments": fc.get("arguments", "{}")},
                }
            ]
            legacy[fc["name"]] = call_id
            notes.append(f"legacy function_call at {where} read as tool_calls")
    if isinstance(m.get("tool_calls"), list):
        m["tool_calls"] = [_fix_arguments(c) for c in m["tool_calls"]]
    refusal = m.get("refusal")
    if m.get("content") is None and not m.get("tool_calls") and isinstance(refusal, str) and refusal.strip():
        m["content"] = refusal
        notes.append(f"refusal at {where} kept as the content")
    return m


def structure_notes(messages: list, path: str = "messages") -> list[str]:
    """What is unusual but accepted about the order of roles."""
    notes = []
    roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
    first = next((i for i, r in enumerate(roles) if r != "system"), None)
    if first is not None and roles[first] == "assistant":
        notes.append("assistant speaks first")
    if first is not None:
        notes.extend(
            f"system message at {path}[{i}]" for i, r in enumerate(roles) if i > first and r == "system"
        )
    return notes


def normalise_messages(messages, path: str = "messages") -> tuple[object, list[str], list[FieldError]]:
    """A transcript as sent -> (the transcript as stored, notes on what was read how, errors).

    The input is not changed. Anything that is not a list of objects is returned as is for the
    validator to report."""
    if not isinstance(messages, list):
        return messages, [], []
    out, notes, errors, legacy = [], [], [], {}
    for i, msg in enumerate(messages):
        out.append(
            _normalise_one(msg, f"{path}[{i}]", i, legacy, notes, errors) if isinstance(msg, dict) else msg
        )
    return out, notes + structure_notes(out, path), errors


def normalise_assistant_message(message, path: str = "message") -> tuple[object, list[str], list[FieldError]]:
    """One assistant message (a response under review, a gold answer, a correction)."""
    if not isinstance(message, dict):
        return message, [], []
    notes: list[str] = []
    errors: list[FieldError] = []
    out = _normalise_one({"role": "assistant", **message}, path, 0, {}, notes, errors)
    if "role" not in message:
        out.pop("role")
    return out, notes, errors


def stored_assistant_message(message: dict) -> dict:
    """A checked assistant message in the form the project stores a correction in: role, content, and
    tool calls with ids and JSON-string arguments (OpenAI's format), whatever shape the client sent."""
    out = {"role": "assistant", "content": message.get("content") or None}
    calls = []
    for i, call in enumerate(message.get("tool_calls") or []):
        fn = call["function"]
        args = fn.get("arguments", {})
        if not isinstance(args, str):
            args = json.dumps(args, ensure_ascii=False)
        calls.append(
            {
                "id": call.get("id") or f"call_{i}",
                "type": "function",
                "function": {"name": fn["name"], "arguments": args},
            }
        )
    if calls:
        out["tool_calls"] = calls
    return out


# ------------------------------------------------------------------------- chat-completion logs

LOG_KEYS = ("request", "response")
REQUEST_CONTEXT = ("messages", "tools", "functions", "model")  # the rest are generation settings
RESPONSE_FACTS = ("id", "created", "system_fingerprint", "service_tier", "usage")
LINE_KEYS = ("external_id", "split", "priority", "metadata")  # a log record may carry these as a line does


def is_chat_log(record) -> bool:
    """A logged request/response pair rather than a conversation line."""
    return isinstance(record, dict) and "messages" not in record and all(k in record for k in LOG_KEYS)


def line_from_chat_log(record: dict) -> tuple[dict | None, list[FieldError], list[tuple[str, str]]]:
    """A chat-completion log record -> (import line, errors, field map).

    The request's messages and tools are the conversation; each choice's message is a response
    (model: response.model, else request.model) to all of the request's messages. The external id
    is the record's own `external_id`, else the response id, else (left out) the content hash.
    A request without tools offered none: the line's tools are [], not the project's.
    The field map turns the line's field names back into the record's for error messages."""
    request, response = record["request"], record["response"]
    errors = []
    if not isinstance(request, dict):
        errors.append(FieldError("request", "must be an object (the chat-completion request)"))
    if not isinstance(response, dict):
        errors.append(FieldError("response", "must be an object (the chat-completion response)"))
    if errors:
        return None, errors, []
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices:
        return None, [FieldError("response.choices", "must be a non-empty list: nothing was answered")], []
    messages = request.get("messages")
    tools_key = "tools" if "tools" in request or "functions" not in request else "functions"
    tools = request.get(tools_key)
    if tools_key == "functions" and isinstance(tools, list):
        tools = [{"type": "function", "function": f} for f in tools]
    params = {k: v for k, v in request.items() if k not in REQUEST_CONTEXT}
    facts = {
        f"response_{k}" if k == "id" else k: response[k]
        for k in RESPONSE_FACTS
        if response.get(k) is not None
    }
    if request.get("model") and response.get("model") and request["model"] != response["model"]:
        facts["request_model"] = request["model"]  # an alias the gateway resolved
    responses = []
    for k, choice in enumerate(choices):
        where = f"response.choices[{k}]"
        if not isinstance(choice, dict):
            errors.append(FieldError(where, "must be an object"))
            continue
        if choice.get("message") is None:
            errors.append(
                FieldError(f"{where}.message", "is required (a streamed answer must be assembled first)")
            )
            continue
        settings = {**params, **facts, "choice_index": choice.get("index", k)}
        if choice.get("finish_reason") is not None:
            settings["finish_reason"] = choice["finish_reason"]
        responses.append(
            {
                "message": choice["message"],
                "context_length": len(messages) if isinstance(messages, list) and messages else 1,
                "generation": settings,
            }
        )
    if errors:
        return None, errors, []
    line = {k: record[k] for k in LINE_KEYS if k in record}
    # the request is the whole truth: a request without tools offered the model none
    line.update({"messages": messages, "responses": responses, "tools": [] if tools is None else tools})
    model = response.get("model") or request.get("model")
    if model is not None:
        line["model"] = model
    if "external_id" not in line and isinstance(response.get("id"), (str, int)) and response.get("id") != "":
        line["external_id"] = response["id"]
    extra = {k: v for k, v in record.items() if k not in LOG_KEYS + LINE_KEYS}
    if extra and isinstance(line.get("metadata", {}), dict):
        line["metadata"] = {**line.get("metadata", {}), "log": extra}
    model_field = "response.model" if response.get("model") else "request.model"
    field_map = [("messages", "request.messages"), ("tools", f"request.{tools_key}"), ("model", model_field)]
    for k in range(len(responses)):
        field_map += [(f"responses[{k}]", f"response.choices[{k}]"), (f"responses[{k}].model", model_field)]
    return line, [], field_map


def remap_field(field: str, field_map: list[tuple[str, str]]) -> str:
    """A field of a converted line named as in the original record (longest matching prefix)."""
    best = None
    for old, new in field_map:
        if field == old or (field.startswith(old) and field[len(old)] in ".["):
            if best is None or len(old) > len(best[0]):
                best = (old, new)
    return field if best is None else best[1] + field[len(best[0]) :]
