"""One exported row before layout: its messages cleaned, hashed and token-counted.

``Row`` is what every source yields and every layout formats; ``ToolSet`` and ``Contexts``
are the per-build caches that let rows share the work of encoding tools and cleaning a
context. ``prompt_hash`` is stable across builds (the leakage check and evaluation/suites.py
compare it); ``_fast64`` is valid within one process only (duplicate checks of one build).
"""

from __future__ import annotations

import hashlib
import json

import orjson

_JSON_DUMPS = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _DUMPS(value) -> str:  # noqa: N802 (a function standing where an encoder's bound method stood)
    """Compact JSON text, UTF-8 unescaped: orjson (several times faster, the same text for what a
    database hands back), else the standard encoder for what orjson refuses (an integer beyond 64
    bits, a lone surrogate SQLite kept)."""
    try:
        return orjson.dumps(value).decode()
    except (orjson.JSONEncodeError, TypeError):
        return _JSON_DUMPS(value)


def _loads(text: str):
    """json.loads for database JSON text, through orjson (this runs several times a row); what orjson
    refuses (an integer beyond 64 bits, nesting past its limit) goes through json.loads itself."""
    try:
        return orjson.loads(text)
    except (orjson.JSONDecodeError, TypeError):
        return json.loads(text)


def _arguments_string(args) -> str:
    return args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)


def clean_message(m: dict) -> dict:
    """An OpenAI chat message with only the standard keys; tool-call arguments as JSON strings."""
    role = m.get("role")
    out = {"role": role, "content": m.get("content")}
    if role == "assistant":
        calls = m.get("tool_calls")
        if calls:
            out["tool_calls"] = [
                {
                    "id": c.get("id") or f"call_{i}",
                    "type": "function",
                    "function": {
                        "name": (c.get("function") or {}).get("name"),
                        "arguments": _arguments_string((c.get("function") or {}).get("arguments", {})),
                    },
                }
                for i, c in enumerate(calls)
                if isinstance(c, dict)
            ]
    elif role == "tool":
        if m.get("tool_call_id") is not None:
            out["tool_call_id"] = m["tool_call_id"]
        if m.get("name"):
            out["name"] = m["name"]
    return out


def response_output(message: dict, raw_text: str) -> dict:
    """A model response as the assistant message it really was.

    A response with a malformed tool call is kept verbatim (its raw text as content):
    its parsed form would hide the very defect a DPO pair should teach against.
    Reasoning is not exported (templates drop it from history anyway).
    """
    if message.get("malformed") and raw_text:
        return {"role": "assistant", "content": raw_text.strip()}
    return clean_message({**message, "role": "assistant"})


_WHITESPACE = b" \t\n\r\x0b\x0c"


def normalised(text: str) -> bytes:
    """Lower-cased UTF-8 with all whitespace removed: what "normalised" means for duplicates and prompts.

    Applied to JSON text too (where a newline is the escape `\\n`), so `{"sku": "A-1"}` and
    `{"sku":"A-1"}` arguments, or "Is A-1 in  stock?" and "is a-1 in\\nstock?", normalise alike.
    """
    return (
        text.lower()
        .encode("utf-8")
        .replace(b"\\n", b"")
        .replace(b"\\t", b"")
        .replace(b"\\r", b"")
        .translate(None, _WHITESPACE)
    )


def _h64(data: bytes) -> int:
    """A stable 64-bit hash (stored in row indexes and compared across builds)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def _fast64(data: bytes) -> int:
    """Python's 64-bit SipHash: stable within one process only. Duplicate checks compare
    rows of the same build, so it is enough there, and 5x cheaper than blake2b."""
    return hash(data) & 0xFFFF_FFFF_FFFF_FFFF


def prompt_hash(messages) -> int:
    """Hash of the normalised dialogue without its system prompt (a re-import with a new
    system prompt is the same item): what the row index stores and the leakage check compares."""
    return digest_context(messages)[1]


def digest_context(messages: list) -> tuple[list[dict], int, str]:
    """(cleaned messages, prompt hash, text for token counting) in one pass over the messages:
    the same as [clean_message(m) …], prompt_hash(…) and " ".join(message_text(m) …), which
    would each walk every message and every call again (this runs once per row)."""
    context, hash_parts, text_parts = [], [], []
    add_hash, add_text, add_message = hash_parts.extend, text_parts.append, context.append
    for m in messages:
        if not isinstance(m, dict):
            continue
        role, content = m.get("role"), m.get("content")
        out = {"role": role, "content": content}
        text = content or ""
        if role != "system":
            add_hash((role or "", text))
        if role == "assistant":
            calls = m.get("tool_calls")
            if calls:
                cleaned = []
                for i, c in enumerate(calls):
                    if not isinstance(c, dict):
                        continue
                    fn = c.get("function") or {}
                    name, args = fn.get("name"), _arguments_string(fn.get("arguments", {}))
                    cleaned.append(
                        {
                            "id": c.get("id") or f"call_{i}",
                            "type": "function",
                            "function": {"name": name, "arguments": args},
                        }
                    )
                    text += f" {name} {args}"
                    add_hash((f"{name}{args}",))
                out["tool_calls"] = cleaned
        elif role == "tool":
            if m.get("tool_call_id") is not None:
                out["tool_call_id"] = m["tool_call_id"]
            if m.get("name"):
                out["name"] = m["name"]
        add_message(out)
        add_text(text)
    # plain text (not JSON): lower-cased, whitespace removed, no escapes to undo
    key = "\x00".join(hash_parts).lower().encode("utf-8").translate(None, _WHITESPACE)
    return context, _h64(key), " ".join(text_parts)


def message_text(m: dict) -> str:
    text = m.get("content") or ""
    for c in m.get("tool_calls") or ():
        fn = c.get("function") or {}
        text += f" {fn.get('name')} {fn.get('arguments')}"
    return text


class TokenCounter:
    """Token counts for stats and the too-long check: the project's tokenizer when one is
    chosen, otherwise an estimate (about 4 characters a token; 1 per CJK-like character)."""

    PER_MESSAGE = 4  # <|im_start|>role\n … <|im_end|>\n

    def __init__(self, tokenizer_path: str | None = None):
        self.tokenizer = None
        self.label = "estimate (~4 characters per token)"
        if tokenizer_path:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path, local_files_only=True)
            self.label = f"tokenizer at {tokenizer_path}"

    def count_many(self, texts: list[str]) -> list[int]:
        if self.tokenizer is not None:
            return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        return [(len(t) + 3) // 4 if t.isascii() else len(t.encode("utf-8")) // 3 for t in texts]


class Row:
    """One exported example before layout, with where it came from."""

    __slots__ = (
        "source",
        "source_id",
        "conversation_id",
        "external_id",
        "context_length",
        "split",
        "model_version_id",
        "ctx",
        "toolset",
        "target",
        "rejected",
        "categories",
        "conflict",
    )

    def __init__(
        self,
        source,
        source_id,
        conversation_id,
        external_id,
        context_length,
        split,
        model_version_id,
        ctx,
        toolset,
        target,
        rejected=None,
        categories=(),
        conflict=None,
    ):
        self.source, self.source_id, self.conversation_id = source, source_id, conversation_id
        self.external_id, self.context_length, self.split = external_id, context_length, split
        self.model_version_id, self.ctx, self.toolset, self.target = model_version_id, ctx, toolset, target
        self.rejected, self.categories, self.conflict = rejected, categories, conflict

    @property
    def context(self) -> list[dict]:
        return self.ctx[0]

    @property
    def tools(self) -> list:
        return self.toolset.tools

    @property
    def tool_names(self) -> frozenset:
        return self.toolset.names

    def where(self) -> dict:
        return {
            "source": self.source,
            "source_id": self.source_id,
            "conversation_id": self.conversation_id,
            "external_id": self.external_id,
        }


class ToolSet:
    """One distinct tools list and its encodings, computed once per build (rows share them)."""

    __slots__ = ("tools", "json", "names", "as_string", "as_list", "as_llamafactory")

    def __init__(self, tools: list):
        self.tools = tools
        self.json = json.dumps(tools, ensure_ascii=False)  # the `tools` column of TRL layouts
        names = set()
        for t in tools:
            fn = t.get("function", t) if isinstance(t, dict) else None
            if isinstance(fn, dict) and isinstance(fn.get("name"), str):
                names.add(fn["name"])
        self.names = frozenset(names)
        # Each row's line ends with `"tools": …`; escaping the same JSON string a million
        # times would cost more than everything else in the row.
        self.as_string = _DUMPS(self.json)
        self.as_list = _DUMPS(tools)
        functions = [
            t.get("function", t) if isinstance(t, dict) and t.get("type") == "function" else t for t in tools
        ]
        self.as_llamafactory = _DUMPS(json.dumps(functions, ensure_ascii=False))


class Contexts:
    """Per-build caches: parsed tools by their JSON text, cleaned contexts by (conversation, length)."""

    MAX = 512  # contexts repeat within a few rows (several labels of one response), rarely further apart

    def __init__(self, project_tools: list):
        self.project_tools = project_tools
        self._tools: dict[str, tuple] = {}
        self._contexts: dict[tuple, tuple] = {}

    def tools(self, tools_text: str | None) -> ToolSet:
        hit = self._tools.get(tools_text)
        if hit is None:
            tools = json.loads(tools_text) if tools_text else []
            hit = ToolSet(tools or self.project_tools or [])
            if len(self._tools) > 64:
                self._tools.clear()
            self._tools[tools_text] = hit
        return hit

    def context(self, conversation_id: int, length: int, messages_text: str) -> tuple:
        """-> (cleaned context messages, prompt hash, text for token counting)."""
        key = (conversation_id, length)
        hit = self._contexts.get(key)
        if hit is None:
            hit = digest_context(_loads(messages_text)[:length])
            if len(self._contexts) >= self.MAX:
                self._contexts.clear()
            self._contexts[key] = hit
        return hit
