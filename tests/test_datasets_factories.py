"""Factories shared by the dataset-snapshot tests (no tests here): conversations, responses, labels,
corrections, preferences."""

import json

from annotator.importers import assistant_message_from_raw
from annotator.models import (
    Conversation,
    Correction,
    Label,
    ModelResponse,
    ModelVersion,
    Preference,
    TaxonomyCategory,
    content_hash,
)

SYSTEM = {"role": "system", "content": "You are the sales assistant of Northwind Home."}


def call(name, args, call_id="call_0"):
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


def assistant(content=None, calls=()):
    msg = {"role": "assistant", "content": content}
    if calls:
        msg["tool_calls"] = list(calls)
    return msg


def conversation(project, ext, messages, split="train", tools=None):
    tools = project.tools if tools is None else tools
    return Conversation.objects.create(
        project=project,
        external_id=ext,
        messages=messages,
        tools=tools,
        content_hash=content_hash(messages, tools),
        split=split,
    )


def model_version(project, name="agent-v1"):
    return ModelVersion.objects.get_or_create(project=project, name=name)[0]


def response(conv, message=None, raw=None, model="agent-v1", context_length=None):
    if message is None:
        message = assistant_message_from_raw(raw, conv.tools)
    return ModelResponse.objects.create(
        conversation=conv,
        model_version=model_version(conv.project, model),
        context_length=len(conv.messages) if context_length is None else context_length,
        raw_text=raw or "",
        message=message,
        response_hash=content_hash(raw or message),
    )


def category(project, name):
    return TaxonomyCategory.objects.get(project=project, name=name)


def label(
    resp, user, verdict="unreasonable", status="approved", categories=(), correction=None, created_at=None
):
    lab = Label.objects.create(response=resp, annotator=user, verdict=verdict, status=status)
    if categories:
        lab.categories.set(
            [category(resp.conversation.project, c) if isinstance(c, str) else c for c in categories]
        )
    if correction is not None:
        Correction.objects.create(label=lab, message=correction)
    if created_at is not None:
        Label.objects.filter(pk=lab.pk).update(created_at=created_at)
    return lab


def preference(a, b, user, choice, status="approved"):
    return Preference.objects.create(response_a=a, response_b=b, annotator=user, choice=choice, status=status)


def stock_question(project, i, split="train", sku=None):
    """A one-turn stock question; the right answer calls check_inventory."""
    sku = sku or f"A-{i}"
    return conversation(
        project, f"c-{i}", [SYSTEM, {"role": "user", "content": f"Is {sku} in stock?"}], split
    )


def order_dialogue(project, i, split="train"):
    """A multi-turn dialogue ending with the user confirming an order of 2."""
    sku = f"B-{i}"
    messages = [
        SYSTEM,
        {"role": "user", "content": f"Do you have {sku}?"},
        assistant(None, [call("check_inventory", {"sku": sku}, "call_1")]),
        {"role": "tool", "tool_call_id": "call_1", "content": json.dumps({"sku": sku, "in_stock": 7})},
        assistant(f"Yes, {sku} is in stock (7 units)."),
        {"role": "user", "content": "Great, order 2 please."},
    ]
    return conversation(project, f"o-{i}", messages, split)
