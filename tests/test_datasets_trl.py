"""Exported snapshots load with `datasets` and go through TRL's SFT and DPO data preparation.

No hub: a byte-level BPE tokenizer is trained here on a few strings and wrapped with a
small Qwen-style chat template; the model is a 1-layer Qwen3 built from a config. One
optimisation step each proves the tokenised rows are usable, not just accepted.
"""

import json
import os

import pytest

from training.snapshots import storage
from training.snapshots.build import build_snapshot, create_snapshot

from .test_datasets_factories import (
    assistant,
    call,
    label,
    order_dialogue,
    preference,
    response,
    stock_question,
)

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
pytestmark = pytest.mark.django_db

CHAT_TEMPLATE = (
    "{%- if messages[0].role == 'system' or tools %}<|im_start|>system\n"
    "{%- if messages[0].role == 'system' %}{{ messages[0].content }}{% endif %}"
    "{%- if tools %}\n# Tools{% for t in tools %}\n"
    "{{ (t.function if t.function is defined else t).name }}{% endfor %}"
    "{%- endif %}<|im_end|>\n{%- endif %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'user' %}<|im_start|>user\n{{ m.content }}<|im_end|>\n"
    "{%- elif m.role == 'assistant' %}<|im_start|>assistant\n{% generation %}"
    "{{- m.content if m.content else '' }}"
    "{%- for c in (m.tool_calls or []) %}<tool_call>\n"
    '{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments }}}\n</tool_call>{% endfor %}'
    "<|im_end|>{% endgeneration %}\n"
    "{%- elif m.role == 'tool' %}<|im_start|>user\n"
    "<tool_response>\n{{ m.content }}\n</tool_response><|im_end|>\n"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken(t, special=True) for t in specials])
    tok.add_tokens(
        [
            AddedToken(t, special=False)
            for t in ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")
        ]
    )
    texts = [
        "Is A-1 in stock? check_inventory create_order sku quantity arguments name",
        "You are the sales assistant of Northwind Home. Great, order 2 please.",
    ] * 20
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=specials,
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHAT_TEMPLATE
    )


def tiny_model(tokenizer):
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return Qwen3ForCausalLM(config)


@pytest.fixture
def exported(project, members, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    ann, ann2 = members["annotator"], members["annotator2"]
    for i in range(3):
        c = stock_question(project, i)
        a = response(c, raw="Yes, it is in stock and ships today.")
        b = response(
            c,
            raw=f'<tool_call>{{"name": "check_inventory", "arguments": {{"sku": "A-{i}"}}}}</tool_call>',
            model="agent-v2",
        )
        label(a, ann, correction=assistant(None, [call("check_inventory", {"sku": f"A-{i}"})]))
        preference(a, b, ann2, "b")
        o = order_dialogue(project, i)
        label(
            response(o, raw="Done! Your order is placed."),
            ann,
            correction=assistant("Placing it now.", [call("create_order", {"sku": f"B-{i}", "quantity": 2})]),
        )

    def export(kind, layout):
        snap = build_snapshot(
            create_snapshot(project, members["admin"], {"kind": kind, "layout": layout}, start=False).pk
        )
        assert snap.status == "ready", snap.message
        return str(storage.media_path(snap.file.name)), snap

    return export


def training_args(cls, tmp_path, **extra):
    return cls(
        output_dir=str(tmp_path / "out"),
        max_steps=1,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        bf16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        max_length=512,
        dataloader_num_workers=0,
        **extra,
    )


def test_sft_snapshots_load_and_train_with_sft_trainer(exported, tokenizer, tmp_path):
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    path, snap = exported("sft", "trl_messages")
    data = load_dataset("json", data_files=path, split="train")
    assert data.num_rows == snap.row_count == 6 and set(data.column_names) == {"messages", "tools"}
    assert (
        isinstance(data[0]["tools"], str)
        and json.loads(data[0]["tools"])[0]["function"]["name"] == "check_inventory"
    )
    trainer = SFTTrainer(
        model=tiny_model(tokenizer),
        args=training_args(SFTConfig, tmp_path, assistant_only_loss=True),
        train_dataset=data,
        processing_class=tokenizer,
    )
    row = trainer.train_dataset[1]  # the multi-turn order dialogue with its corrected reply
    trained = tokenizer.decode([t for t in row["labels"] if t != -100])
    assert '"create_order", "arguments": {"sku": "B-0", "quantity": 2}' in trained
    assert "Yes, B-0 is in stock" in trained  # earlier assistant turns of `messages` are trained too
    assert trainer.train().training_loss > 0

    path, _ = exported("sft", "trl_prompt_completion")
    data = load_dataset("json", data_files=path, split="train")
    trainer = SFTTrainer(
        model=tiny_model(tokenizer),
        args=training_args(SFTConfig, tmp_path),
        train_dataset=data,
        processing_class=tokenizer,
    )
    row = trainer.train_dataset[1]
    completion = tokenizer.decode([t for t in row["labels"] if t != -100])
    assert completion.startswith("Placing it now.<tool_call>") and "Yes, B-0" not in completion
    assert trainer.train().training_loss > 0


def test_dpo_snapshots_load_and_train_with_dpo_trainer(exported, tokenizer, tmp_path):
    from datasets import load_dataset
    from trl import DPOConfig, DPOTrainer

    path, snap = exported("dpo", "trl_preference")
    data = load_dataset("json", data_files=path, split="train")
    assert data.num_rows == snap.row_count == 9
    assert set(data.column_names) == {"prompt", "chosen", "rejected", "tools"}
    trainer = DPOTrainer(
        model=tiny_model(tokenizer),
        ref_model=tiny_model(tokenizer),
        args=training_args(DPOConfig, tmp_path, beta=0.1),
        train_dataset=data,
        processing_class=tokenizer,
    )
    first = trainer.train_dataset[0]  # preference: the tool call beat the guessed answer
    assert '"check_inventory", "arguments": {"sku": "A-0"}' in tokenizer.decode(first["chosen_ids"])
    assert tokenizer.decode(first["rejected_ids"]).startswith("Yes, it is in stock")
    assert "Is A-0 in stock?" in tokenizer.decode(first["prompt_ids"])
    assert trainer.train().training_loss > 0


def test_other_layouts_load_as_datasets(exported):
    from datasets import load_dataset

    for kind, layout, columns in (
        ("sft", "openai_chat", {"messages", "tools"}),
        ("dpo", "openai_preference", {"input", "preferred_output", "non_preferred_output"}),
        ("dpo", "llamafactory", {"conversations", "chosen", "rejected", "system", "tools"}),
        ("sft", "trl_prompt_completion", {"prompt", "completion", "tools"}),
    ):
        path, snap = exported(kind, layout)
        data = load_dataset("json", data_files=path, split="train")
        assert data.num_rows == snap.row_count and set(data.column_names) == columns, layout
