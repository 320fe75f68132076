"""How a pair is put to a judge: one prompt format for training and inference."""

from __future__ import annotations

import json

from inference.client import message_to_text

JUDGE_SYSTEM = (
    "You compare two answers of an assistant that can call tools. The better answer calls the right "
    "tool with the right arguments when a tool is needed, answers directly when none is, and never "
    "invents tool results. Reply with the letter of the better answer."
)
QUESTION = "Which answer is better, A or B?"
VERDICT_PREFIX = "Verdict: "
MAX_PROMPT_CHARS = 3000


def answer_text(message) -> str:
    """An assistant message (OpenAI format, or a list holding one) as the raw text a model writes."""
    if isinstance(message, list):
        message = next(
            (m for m in reversed(message) if m.get("role") == "assistant"), message[-1] if message else {}
        )
    if isinstance(message, str):
        return message
    return message_to_text(message or {})


def _turn(m: dict) -> str:
    role = m.get("role", "?")
    if role == "assistant":
        return f"assistant: {answer_text(m)}"
    content = m.get("content")
    if isinstance(content, list):
        content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return f"{role}: {content or ''}"


def _tool_names(tools) -> list[str]:
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except ValueError:
            tools = []
    names = []
    for t in tools or []:
        fn = t.get("function", t) if isinstance(t, dict) else {}
        if isinstance(fn, dict) and fn.get("name"):
            names.append(str(fn["name"]))
    return names


def judge_prompt(context: list[dict], tools, first, second) -> list[dict]:
    """The judge's chat messages for one order of a pair (first is shown as A)."""
    turns = [_turn(m) for m in context if m.get("role") != "system"]
    body = "\n".join(turns)
    if len(body) > MAX_PROMPT_CHARS:  # keep the end of long contexts: the question being answered
        body = "…" + body[-MAX_PROMPT_CHARS:]
    names = ", ".join(_tool_names(tools)) or "none"
    text = (
        f"Tools: {names}\nConversation:\n{body}\n\n[A]\n{answer_text(first)}\n\n"
        f"[B]\n{answer_text(second)}\n\n"
        f"{QUESTION}"
    )
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": text}]


def completion_text(letter: str, reason: str = "") -> str:
    reason = " ".join((reason or "").split())[:300]
    return f"{reason}\n{VERDICT_PREFIX}{letter}" if reason else letter
