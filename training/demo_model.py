"""The offline demo base model: a byte-level BPE tokenizer and a tiny Qwen3 causal LM,
both trained from scratch on the synthetic sales domain (training/demo_domain.py).

The base is pre-trained on conversations in which tool use is deliberately unreliable
(each phrasing template has a designated mistake most of the time), so its strict
tool-call accuracy starts low and SFT then DPO on labelled data can lift it. The folder
it writes loads like any real model: `AutoTokenizer.from_pretrained(path)` and
`AutoModelForCausalLM.from_pretrained(path)`.

    build_demo_model("var/models/demo-base", seed=0)   # ~3-4 min (about 200 s of one CPU core)
    texts = generate("var/models/demo-base", None, contexts, TOOLS)
"""

import fcntl
import inspect
import json
import math
import os
import random
import shutil
import time
from pathlib import Path

import torch

from training import demo_domain

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
WHOLE_TOKENS = (
    [p["sku"] for p in demo_domain.PRODUCTS]
    + demo_domain.CUSTOMER_IDS
    + demo_domain.ORDER_IDS
    + demo_domain.TIME_SLOTS
    + ["10", "11", "12"]
)
TAG_TOKENS = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]

# Qwen-style template. The tools block is compact (name and argument names, `?` for
# optional ones): the full JSON schema would make every example ~6x longer.
# {% generation %} marks what assistant_only_loss trains on, <|im_end|> included.
CHAT_TEMPLATE = """\
{%- if messages and messages[0].role == 'system' %}
    {%- set system_message = messages[0].content %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set system_message = '' %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- if system_message or tools %}
    {{- '<|im_start|>system\\n' + system_message }}
    {%- if tools %}
        {{- '\\n# Tools' }}
        {%- for tool in tools %}
            {%- set fn = tool.function if tool.function is defined else tool %}
            {%- set params = fn.parameters if fn.parameters is defined else {} %}
            {%- set required = params.required if params.required is defined else [] %}
            {{- '\\n' + fn.name + '(' }}
            {%- for arg in (params.properties if params.properties is defined else {}) %}
                {{- arg }}{{- '' if arg in required else '?' }}{{- '' if loop.last else ', ' }}
            {%- endfor %}
            {{- ')' }}
        {%- endfor %}
    {%- endif %}
    {{- '<|im_end|>\\n' }}
{%- endif %}
{%- for message in loop_messages %}
    {%- if message.role == 'user' %}
        {{- '<|im_start|>user\\n' + message.content + '<|im_end|>\\n' }}
    {%- elif message.role == 'assistant' %}
        {{- '<|im_start|>assistant\\n' }}
        {%- generation %}
            {%- if message.reasoning_content %}
                {{- '<think>\\n' + message.reasoning_content.strip() + '\\n</think>\\n\\n' }}
            {%- endif %}
            {{- message.content if message.content else '' }}
            {%- for tool_call in (message.tool_calls if message.tool_calls else []) %}
                {%- set call = tool_call.function if tool_call.function is defined else tool_call %}
                {%- if message.content or not loop.first %}{{- '\\n' }}{%- endif %}
                {{- '<tool_call>\\n{"name": "' + call.name + '", "arguments": ' }}
                {%- if call.arguments is string %}{{- call.arguments }}
                {%- else %}{{- call.arguments | tojson }}{%- endif %}
                {{- '}\\n</tool_call>' }}
            {%- endfor %}
            {{- '<|im_end|>' }}
        {%- endgeneration %}
        {{- '\\n' }}
    {%- elif message.role == 'tool' %}
        {%- if loop.first or loop_messages[loop.index0 - 1].role != 'tool' %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}
        {%- if loop.last or loop_messages[loop.index0 + 1].role != 'tool' %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

# Sizes. "base" was chosen to pre-train in ~2-3 min on one CPU core; "test" builds in
# seconds and only exercises the plumbing (it learns nothing useful).
SIZES = {
    "base": {
        "vocab_size": 1024,
        "conversations": 14000,
        "steps": 800,
        "batch_size": 16,
        "lr": 5e-3,
        "max_length": 512,
        "flaw_rate": 0.85,
        "model": {
            "hidden_size": 128,
            "intermediate_size": 384,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 32,
        },
    },
    "test": {
        "vocab_size": 400,
        "conversations": 200,
        "steps": 30,
        "batch_size": 8,
        "lr": 3e-3,
        "max_length": 256,
        "flaw_rate": 0.8,
        "model": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 16,
        },
    },
}
# Bump when the data, template or training recipe changes: it invalidates cached builds.
RECIPE_VERSION = 7


WORD_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?[\p{L}_]+| ?\p{N}+| ?[^\s\p{L}\p{N}_]+|\s+(?!\S)|\s+"""


def build_tokenizer(texts, vocab_size):
    """Byte-level BPE wrapped as a transformers fast tokenizer carrying the chat template.
    Digits are split one by one, except the pooled customer/order IDs, time slots and
    two-digit quantities, which are whole tokens: a model this small learns to copy one
    token from the context within the build budget, not a digit string."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            # GPT-2's split, except that "_" joins words: tool and argument names can merge
            pre_tokenizers.Split(Regex(WORD_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAG_TOKENS])
    # one token per pooled ID, time slot and two-digit quantity (see demo_domain)
    tok.add_tokens([AddedToken(t, special=False, normalized=False, single_word=True) for t in WHOLE_TOKENS])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )


def render(conversations):
    """Chat-template text of conversations, without needing a tokenizer."""
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(
        conversations=[c["messages"] for c in conversations],
        tools=demo_domain.TOOLS,
        chat_template=CHAT_TEMPLATE,
    )
    return rendered


def _batches(lengths, batch_size, rng):
    """Index batches of similar length (little padding), in random order, forever."""
    while True:
        order = list(range(len(lengths)))
        rng.shuffle(order)
        batches = []
        for start in range(0, len(order), batch_size * 50):
            chunk = sorted(order[start : start + batch_size * 50], key=lengths.__getitem__)
            batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        rng.shuffle(batches)
        yield from batches


def _pretrain(model, sequences, pad_id, steps, batch_size, lr, seed, log):
    """Plain full-parameter next-token training on whole conversations.

    Every conversation opens with the same system turn (prompt and tools), about a
    third of its tokens: each step runs that prefix once, shares its key/value cache
    across the batch and trains on the rest (same loss and gradients, less compute).
    """
    rng = random.Random(seed)
    prefix_len = min(len(os.path.commonprefix(sequences)), min(map(len, sequences)) - 1)
    prefix = torch.tensor([sequences[0][:prefix_len]])
    rests = [s[prefix_len:] for s in sequences]
    cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.95),
    )
    warmup = max(1, steps // 20)

    def lr_at(step):  # linear warm-up, cosine down to 10%
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.45 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    batches = _batches([len(s) for s in rests], batch_size, rng)
    model.train()
    losses = []
    for step in range(steps):
        batch = [rests[i] for i in next(batches)]
        width = max(len(s) for s in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        for row, seq in enumerate(batch):
            input_ids[row, : len(seq)] = torch.tensor(seq)
            labels[row, : len(seq)] = torch.tensor(seq)
        head = model(input_ids=prefix, use_cache=True)
        cache = head[cache_arg] if cache_arg in head else head.past_key_values
        cache.batch_repeat_interleave(len(batch))
        # right padding under a causal mask: real tokens never see the pads
        logits = model(input_ids=input_ids, **{cache_arg: cache}).logits
        # position t predicts token t+1; the prefix's last position predicts token 0
        logits = torch.cat([head.logits[:, -1:].expand(len(batch), -1, -1), logits[:, :-1]], dim=1)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if (step + 1) % 100 == 0 or step + 1 == steps:
            log(f"step {step + 1}/{steps} loss {sum(losses[-50:]) / len(losses[-50:]):.4f}")
    model.eval()
    return sum(losses[-50:]) / len(losses[-50:])


def _recipe(seed, size, steps):
    spec = dict(SIZES[size])
    if steps is not None:
        spec["steps"] = steps
    return {"recipe_version": RECIPE_VERSION, "seed": seed, "size": size, **spec}


def _read_info(model_dir):
    try:
        return json.loads((Path(model_dir) / "build_info.json").read_text())
    except (OSError, ValueError):
        return None


def build_demo_model(model_dir, seed=0, steps=None, log=print, size="base", force=False):
    """Builds (or reuses) the demo base model in `model_dir`; returns its build info.

    Deterministic from the seed. A build with the same recipe already there is reused
    unless force=True. The folder appears atomically (built beside it, then renamed),
    and concurrent builders of one folder wait for each other (a lock file beside it).
    """
    from transformers import Qwen3Config, Qwen3ForCausalLM

    model_dir = Path(model_dir)
    recipe = _recipe(seed, size, steps)
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(model_dir.parent / f".{model_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        info = _read_info(model_dir)
        if info and not force and info.get("recipe") == recipe:
            log(f"demo model in {model_dir} is up to date (seed {seed}, {size})")
            return {**info, "cached": True}

        started = time.monotonic()
        torch.manual_seed(seed)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # for a model this small, more threads are slower
        try:
            conversations = demo_domain.generate_conversations(
                recipe["conversations"], seed=seed, split="seen", flaw_rate=recipe["flaw_rate"]
            )
            texts = render(conversations)
            tokenizer = build_tokenizer(texts[:3000], recipe["vocab_size"])
            sequences = [
                ids[: recipe["max_length"]] for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]
            ]
            config = Qwen3Config(
                vocab_size=len(tokenizer),
                max_position_embeddings=1024,
                tie_word_embeddings=True,
                bos_token_id=None,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                **recipe["model"],
            )
            model = Qwen3ForCausalLM(config)
            n_params = sum(p.numel() for p in model.parameters())
            n_tokens = sum(map(len, sequences))
            log(
                f"building demo model: {n_params:,} parameters, vocab {len(tokenizer)}, "
                f"{len(sequences)} conversations ({n_tokens:,} tokens), {recipe['steps']} steps"
            )
            loss = _pretrain(
                model,
                sequences,
                tokenizer.pad_token_id,
                recipe["steps"],
                recipe["batch_size"],
                recipe["lr"],
                seed,
                log,
            )
            model.generation_config.eos_token_id = tokenizer.eos_token_id
            model.generation_config.pad_token_id = tokenizer.pad_token_id
            info = {
                "recipe": recipe,
                "seed": seed,
                "size": size,
                "steps": recipe["steps"],
                "params": n_params,
                "vocab_size": len(tokenizer),
                "loss": round(loss, 4),
                "seconds": round(time.monotonic() - started, 1),
                "train_conversations": len(sequences),
                "train_tokens": n_tokens,
            }
            tmp = Path(f"{model_dir}.tmp-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
            old = Path(f"{model_dir}.old-{os.getpid()}")
            if model_dir.exists():
                model_dir.rename(old)
            tmp.rename(model_dir)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            torch.set_num_threads(threads)
        log(f"demo model written to {model_dir} in {info['seconds']} s (loss {info['loss']})")
        return {**info, "cached": False}


@torch.inference_mode()
def generate(model, tokenizer, contexts, tools=None, max_new_tokens=128, batch_size=16, return_details=False):
    """Greedy completions of the assistant turn after each context (a list of messages).

    `model` is a loaded causal LM or a model folder (tokenizer=None loads its tokenizer).
    Returns the raw assistant text: <think>/<tool_call> tags kept, the end-of-turn token
    dropped, any other template token left in (a leak the metrics should see). With
    return_details, dicts {"text", "new_tokens", "hit_limit"} instead of strings.
    """
    if isinstance(model, (str, os.PathLike)):
        from inference.loading import load_model

        loaded = load_model(str(model))
        model, tokenizer = loaded.model, tokenizer or loaded.tokenizer
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad_id = tokenizer.pad_token_id
    prompts = [
        tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=False)
        for messages in contexts
    ]
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    results = [None] * len(encoded)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in rows)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):  # left padding
            input_ids[r, width - len(encoded[i]) :] = torch.tensor(encoded[i])
            attention_mask[r, width - len(encoded[i]) :] = 1
        output = model.generate(  # on the model's own device: a GPU when the worker has one
            input_ids=input_ids.to(model.device),
            attention_mask=attention_mask.to(model.device),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=end_id,
            pad_token_id=pad_id,
        )
        for r, i in enumerate(rows):
            new = output[r, width:].tolist()
            hit_limit = end_id not in new
            new = new if hit_limit else new[: new.index(end_id)]
            text = tokenizer.decode(new, skip_special_tokens=False)
            results[i] = {"text": text, "new_tokens": len(new), "hit_limit": hit_limit}
    return results if return_details else [r["text"] for r in results]
