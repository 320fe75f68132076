"""General-text perplexity: the one measure of "brain damage" (metrics.md, "Guarding against a
damaged model").

The training guard (perplexity of each checkpoint over that of the job's starting model) and
the promotion gate (an eval run's perplexity against the production version's) both call
``perplexity(model, tokenizer)`` over the same fixed ``GENERAL_TEXTS``: a ratio the guard
accepted means the same thing at the gate. There is deliberately no way to pass other texts.
"""

from __future__ import annotations

import hashlib
import math

# Plain English prose with no shop, tools or chat template in it. A fine-tune that damages the
# model's general language shows up as a rise of perplexity here before anywhere else.
GENERAL_TEXTS = (
    "The river runs slowly through the valley, past old stone bridges and quiet farms.",
    "In the morning the market opens early, and the first customers arrive before seven.",
    "She wrote the letter twice, because the first version said too much and the second too little.",
    "Most of the city was rebuilt after the fire, but a few narrow streets still follow the old plan.",
    "Rain is expected later today, with clearer skies and cooler air arriving tomorrow night.",
    "A good recipe lists its ingredients in the order they are used and says how long each step takes.",
    "The committee met on Tuesday to discuss the budget, and most members agreed to delay the vote.",
    "Children learn to read at different speeds, and patience matters more than any single method.",
    "The train was late again, so he walked the last two miles and arrived just as the doors closed.",
    "Water boils at a lower temperature high in the mountains, which is why cooking takes longer there.",
    "Thank you for your message. I will reply in more detail once I have read the report.",
    "The museum keeps its oldest maps in a dark room, where the light cannot fade the ink.",
)


def _fingerprint(texts) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


# Stored with each measured eval run: perplexities are comparable only over the same texts, so
# runs measured before a change of GENERAL_TEXTS are not compared with runs after it.
TEXTS_FINGERPRINT = _fingerprint(GENERAL_TEXTS)

_MAX_MEAN_NLL = 50.0  # exp() of a diverged model's loss would overflow


def perplexity(model, tokenizer, batch_size: int = 8) -> float | None:
    """exp(mean token negative log-likelihood) of ``model`` over GENERAL_TEXTS.

    ``model`` is any causal LM, a PEFT-wrapped one under training included; it runs on its own
    device, in whatever mode the caller left it (eval for a stable number). Texts are
    right-padded in batches: real tokens never attend to pads, so the number does not depend on
    the batch size. None when no text has two tokens.
    """
    import torch

    device = model.device
    max_positions = getattr(model.config, "max_position_embeddings", None)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0  # pads are masked out
    total_nll, total_tokens = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(GENERAL_TEXTS), batch_size):
            chunk = [
                tokenizer(t, add_special_tokens=False)["input_ids"]
                for t in GENERAL_TEXTS[start : start + batch_size]
            ]
            if max_positions:
                chunk = [ids[:max_positions] for ids in chunk]
            chunk = [ids for ids in chunk if len(ids) >= 2]
            if not chunk:
                continue
            width = max(len(ids) for ids in chunk)
            input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, ids in enumerate(chunk):
                input_ids[r, : len(ids)] = torch.tensor(ids)
                attention[r, : len(ids)] = 1
            logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            target = input_ids[:, 1:].to(device)
            mask = attention[:, 1:].to(device).bool()
            nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
            total_nll += float(nll[mask].sum())
            total_tokens += int(mask.sum())
    if not total_tokens:
        return None
    return math.exp(min(_MAX_MEAN_NLL, total_nll / total_tokens))
