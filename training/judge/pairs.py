"""Human preference pairs from a DPO snapshot, stable held-out and calibration splits, and the judge's
training rows (each pair in both orders, so that neither slot is ever the answer by itself)."""

from __future__ import annotations

import hashlib
import json
import random

from .prompt import completion_text, judge_prompt

HELD_OUT_SHARE = 0.2
# Of the training pairs, this share (by context) is kept back to fit the judge's temperature, when that
# makes at least MIN_CALIBRATION_PAIRS pairs; with fewer, every pair trains and no temperature is fitted.
CALIBRATION_SHARE = 0.1
MIN_CALIBRATION_PAIRS = 30


def _held_out(row: dict, share: float, salt: str = "") -> bool:
    key = salt.encode() + json.dumps(row.get("prompt"), sort_keys=True, ensure_ascii=False).encode()
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


def split_pairs(
    pairs: list[dict], share: float = HELD_OUT_SHARE, salt: str = ""
) -> tuple[list[dict], list[dict]]:
    """A stable split by context: the same prompt is never on both sides."""
    train, held = [], []
    for p in pairs:
        (held if _held_out({"prompt": p["context"]}, share, salt) else train).append(p)
    return train, held


def job_pairs(job) -> tuple[list[dict], list[dict], list[dict], str]:
    """A judge job's pairs: (train, calibration, held out, where the held-out pairs come from). The held
    out pairs are the eval snapshot's, else a share of the training snapshot's contexts; the calibration
    slice is a share of the remaining contexts (see CALIBRATION_SHARE). Deterministic: the job's
    training and its evaluation read the same split."""
    pairs = read_pairs(job.train_snapshot.file.path)
    if job.eval_snapshot_id:
        train, held = pairs, read_pairs(job.eval_snapshot.file.path)
        source = f"held-out pairs of snapshot {job.eval_snapshot.name}"
    else:
        train, held = split_pairs(pairs)
        source = f"{int(100 * HELD_OUT_SHARE)}% of the pairs of {job.train_snapshot.name}, by context"
    kept, calibration = split_pairs(train, CALIBRATION_SHARE, salt="calibration")
    if len(calibration) < MIN_CALIBRATION_PAIRS:
        return train, [], held, source
    return kept, calibration, held, source


def training_rows(pairs: list[dict], reasons: bool = False, seed: int = 0) -> list[dict]:
    """Prompt/completion rows for TRL's SFTTrainer: each pair in both orders, side by side, the pairs in
    a seeded random order. The judge's trainer reads them in this order (build.py), so each batch holds
    both orders of its pairs and a preference for a slot or a letter gains nothing within a batch:
    only reading the answers does (trained with shuffled rows instead, the demo judge's verdict
    flipped with the order on half of the held-out pairs)."""
    pairs = list(pairs)
    random.Random(seed).shuffle(pairs)
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
