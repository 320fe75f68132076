"""Human preference pairs from a DPO snapshot, a stable held-out split, and the judge's training
rows (each pair in both orders, so position bias can be measured)."""

from __future__ import annotations

import hashlib
import json

from .prompt import completion_text, judge_prompt

HELD_OUT_SHARE = 0.2


def _held_out(row: dict, share: float) -> bool:
    key = json.dumps(row.get("prompt"), sort_keys=True, ensure_ascii=False).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "big") / 2**32 < share


def read_pairs(path: str) -> list[dict]:
    """DPO snapshot rows (trl_preference layout) as pairs: context, tools, chosen, rejected."""
    pairs = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            tools = row.get("tools")
            pairs.append(
                {
                    "context": row["prompt"],
                    "tools": json.loads(tools) if isinstance(tools, str) else tools,
                    "chosen": row["chosen"],
                    "rejected": row["rejected"],
                    "row": row,
                    "reason": row.get("reason") or "",
                }
            )
    return pairs


def split_pairs(pairs: list[dict], share: float = HELD_OUT_SHARE) -> tuple[list[dict], list[dict]]:
    """A stable split by context: the same prompt is never on both sides."""
    train, held = [], []
    for p in pairs:
        (held if _held_out({"prompt": p["context"]}, share) else train).append(p)
    return train, held


def training_rows(pairs: list[dict], reasons: bool = False) -> list[dict]:
    """Prompt/completion rows for TRL's SFTTrainer: each pair in both orders."""
    rows = []
    for p in pairs:
        reason = p.get("reason", "") if reasons else ""
        rows.append(
            {
                "prompt": judge_prompt(p["context"], p["tools"], p["chosen"], p["rejected"]),
                "completion": [{"role": "assistant", "content": completion_text("A", reason)}],
            }
        )
        rows.append(
            {
                "prompt": judge_prompt(p["context"], p["tools"], p["rejected"], p["chosen"]),
                "completion": [{"role": "assistant", "content": completion_text("B", reason)}],
            }
        )
    return rows
