"""Every SFT and DPO layout loads with `datasets` and goes through TRL's SFTTrainer / DPOTrainer
for one step, with one row's tokens checked: tool calls rendered as <tool_call> blocks, every tool
result present, and the loss only where the layout says.

No hub: a byte-level BPE tokenizer is trained here on a few strings and wrapped with a
small Qwen-style chat template; the model is a 1-layer Qwen3 built from a config. One
optimisation step each proves the tokenised rows are usable, not just accepted.

The rows that matter come from a dialogue with reply text beside two parallel calls and their
two results (tests/test_snapshot_layouts.py); the OpenAI and LLaMA-Factory layouts are not TRL's
own formats, so their rows are mapped to TRL's columns the way a user would (the Parquet copy of
the bundle for the OpenAI layout, whose free-form tools list is JSON text there).
"""

import json
import os
import tarfile

import pytest

from training.snapshots import layouts, storage
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
from .test_snapshot_layouts import FIX, RESULT_B, RESULT_C, parallel_dialogue

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
    label(response(parallel_dialogue(project), raw="Done! Your order is placed."), ann, correction=FIX)

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


# what the test chat template renders for the parallel dialogue
PARALLEL_CALLS = (
    '<tool_call>\n{"name": "check_inventory", "arguments": {"sku": "B-1"}}\n</tool_call>'
    '<tool_call>\n{"name": "check_inventory", "arguments": {"sku": "C-1"}}\n</tool_call>'
)
RESULTS = [f"<tool_response>\n{RESULT_B}\n</tool_response>", f"<tool_response>\n{RESULT_C}\n</tool_response>"]
REVIEWED = (
    "Placing the order now.<tool_call>\n"
    '{"name": "create_order", "arguments": {"sku": "B-1", "quantity": 2}}\n</tool_call><|im_end|>'
)


def parallel_index(rows, text_of) -> int:
    """Where the parallel-dialogue row is (found by content: row order is the sources' business)."""
    (index,) = [i for i, row in enumerate(rows) if "Order 2 of B-1, then." in text_of(row)]
    return index


def decoded(tokenizer, ids) -> str:
    return tokenizer.decode(ids, skip_special_tokens=False)


def check_rendering(text: str):
    assert "Let me check both." + PARALLEL_CALLS in text  # reply text beside both calls
    assert all(r in text for r in RESULTS) and text.index(RESULTS[0]) < text.index(RESULTS[1])


def sft_row(tokenizer, trainer, index):
    row = trainer.train_dataset[index]
    whole = decoded(tokenizer, row["input_ids"])
    trained = decoded(tokenizer, [t for t in row["labels"] if t != -100])
    return whole, trained


def test_trl_messages_trains_every_assistant_turn_with_assistant_only_loss(exported, tokenizer, tmp_path):
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    path, snap = exported("sft", "trl_messages")
    data = load_dataset("json", data_files=path, split="train")
    assert data.num_rows == snap.row_count and set(data.column_names) == {"messages", "tools"}
    assert (
        isinstance(data[0]["tools"], str)
        and json.loads(data[0]["tools"])[0]["function"]["name"] == "check_inventory"
    )
    index = parallel_index(data, lambda r: json.dumps(r["messages"]))
    trainer = SFTTrainer(
        model=tiny_model(tokenizer),
        args=training_args(SFTConfig, tmp_path, assistant_only_loss=True),
        train_dataset=data,
        processing_class=tokenizer,
    )
    whole, trained = sft_row(tokenizer, trainer, index)
    check_rendering(whole)
    assert trained.endswith(REVIEWED)
    # the context's assistant turns (not reviewed) are trained too: what the layout's text says
    assert "Let me check both." in trained and "C-1 is sold out.<|im_end|>" in trained
    assert "Do you have B-1" not in trained and RESULT_B not in trained
    assert trainer.train().training_loss > 0


def test_trl_prompt_completion_trains_only_the_reviewed_turn(exported, tokenizer, tmp_path):
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    path, snap = exported("sft", "trl_prompt_completion")
    data = load_dataset("json", data_files=path, split="train")
    assert data.num_rows == snap.row_count and set(data.column_names) == {"prompt", "completion", "tools"}
    index = parallel_index(data, lambda r: json.dumps(r["prompt"]))
    trainer = SFTTrainer(  # no loss option given: TRL turns completion_only_loss on for this data
        model=tiny_model(tokenizer),
        args=training_args(SFTConfig, tmp_path),
        train_dataset=data,
        processing_class=tokenizer,
    )
    assert trainer.completion_only_loss is True
    whole, trained = sft_row(tokenizer, trainer, index)
    check_rendering(whole)
    assert trained == REVIEWED  # exactly the completion, nothing of the context
    start = whole.rindex("<|im_start|>assistant\n") + len("<|im_start|>assistant\n")
    assert whole[start:].rstrip("\n") == REVIEWED and "Order 2 of B-1, then." in whole[:start]
    assert trainer.train().training_loss > 0


def test_openai_chat_rows_render_in_sft_trainer_with_the_reviewed_turn_weighted(
    exported, tokenizer, tmp_path
):
    """TRL does not read OpenAI's per-message `weight` (OpenAI's trainer does): the rows are valid chat
    data for it, and the one weighted message is the reviewed turn."""
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    path, snap = exported("sft", "openai_chat")
    data = load_dataset("json", data_files=path, split="train")
    index = parallel_index(data, lambda r: json.dumps(r["messages"]))
    messages = data[index]["messages"]
    assert [(m["role"], m["weight"]) for m in messages if m["role"] == "assistant"] == [
        ("assistant", 0),
        ("assistant", 0),
        ("assistant", 1),
    ]
    assert messages[-1]["content"] == "Placing the order now." and messages[-1]["weight"] == 1
    trainer = SFTTrainer(
        model=tiny_model(tokenizer),
        args=training_args(SFTConfig, tmp_path, assistant_only_loss=True),
        train_dataset=data,
        processing_class=tokenizer,
    )
    whole, trained = sft_row(tokenizer, trainer, index)
    check_rendering(whole)
    assert trained.endswith(REVIEWED)
    assert trainer.train().training_loss > 0


def dpo_check(tokenizer, trainer, index):
    row = trainer.train_dataset[index]
    prompt = decoded(tokenizer, row["prompt_ids"])
    check_rendering(prompt)
    assert prompt.endswith("Order 2 of B-1, then.<|im_end|><|im_start|>assistant\n")
    # the loss is on the two answers only: exactly the reviewed turn and the original response
    assert decoded(tokenizer, row["chosen_ids"]).rstrip("\n") == REVIEWED
    assert decoded(tokenizer, row["rejected_ids"]).rstrip("\n") == "Done! Your order is placed.<|im_end|>"
    assert trainer.train().training_loss > 0


def dpo_trainer(tokenizer, tmp_path, data):
    from trl import DPOConfig, DPOTrainer

    return DPOTrainer(
        model=tiny_model(tokenizer),
        ref_model=tiny_model(tokenizer),
        args=training_args(DPOConfig, tmp_path, beta=0.1),
        train_dataset=data,
        processing_class=tokenizer,
    )


def test_trl_preference_rows_train_with_dpo_trainer(exported, tokenizer, tmp_path):
    from datasets import load_dataset

    path, snap = exported("dpo", "trl_preference")
    data = load_dataset("json", data_files=path, split="train")
    assert data.num_rows == snap.row_count
    assert set(data.column_names) == {"prompt", "chosen", "rejected", "tools"}
    trainer = dpo_trainer(tokenizer, tmp_path, data)
    stock = next(
        r
        for r in trainer.train_dataset
        if b"Is A-0 in stock?" in decoded(tokenizer, r["prompt_ids"]).encode()
    )
    assert '"check_inventory", "arguments": {"sku": "A-0"}' in decoded(tokenizer, stock["chosen_ids"])
    dpo_check(tokenizer, trainer, parallel_index(data, lambda r: json.dumps(r["prompt"])))


def test_openai_preference_and_llamafactory_rows_train_with_dpo_trainer(exported, tokenizer, tmp_path):
    from datasets import Dataset, load_dataset

    from training.snapshots.bundle import ensure_bundle, read_info

    _, snap = exported("dpo", "openai_preference")
    ensure_bundle(snap)  # what the exports worker does once the snapshot is ready
    folder = tmp_path / "bundle"
    with tarfile.open(storage.bundle_path(storage.media_path(snap.file.name))) as tar:
        tar.extractall(folder, filter="data")
    name = read_info(snap)["members"][0]
    data = load_dataset(
        "parquet",
        data_files=str(folder / name / f"{name}.parquet"),
        split="train",
        cache_dir=str(tmp_path / "hf"),
    ).map(
        lambda r: {
            "prompt": r["input"]["messages"],
            "chosen": r["preferred_output"],
            "rejected": r["non_preferred_output"],
            "tools": r["input"]["tools"],  # JSON text in the Parquet copy
        },
        remove_columns=["input", "preferred_output", "non_preferred_output"],
    )
    dpo_check(
        tokenizer,
        dpo_trainer(tokenizer, tmp_path, data),
        parallel_index(data, lambda r: json.dumps(r["prompt"])),
    )

    path, _ = exported("dpo", "llamafactory")
    rows = [json.loads(line) for line in open(path)]
    pairs = []
    for row in rows:  # LLaMA-Factory's sharegpt rows read back as chat (layouts.display_row)
        back = layouts.display_row("llamafactory", row)
        pairs.append(
            {
                "prompt": back["context"],
                "chosen": [back["target"]],
                "rejected": [back["rejected"]],
                "tools": json.dumps(layouts.stored_tools("llamafactory", row)),
            }
        )
    data = Dataset.from_list(pairs)
    dpo_check(
        tokenizer,
        dpo_trainer(tokenizer, tmp_path, data),
        parallel_index(data, lambda r: json.dumps(r["prompt"])),
    )


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
