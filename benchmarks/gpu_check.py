"""A prepared GPU check: the product's training recipe at a real model's shape, with nothing downloaded.

    python benchmarks/gpu_check.py [--steps 30] [--batch 8] [--max-length 512] [--tiny]

Builds a model with Qwen3-0.6B's architecture from its configuration (random weights: speed and memory,
not quality), the demo tokenizer (its ids use the first thousand rows of the 151,936-row embedding), and
runs on one GPU, in bf16 with gradient checkpointing and LoRA r=8 as the GPU presets do:
  1. SFT (TRL SFTTrainer, prompt/completion rows of the demo sales domain), `--steps` steps;
  2. DPO (TRL DPOTrainer, chosen = the right answer, rejected = a corrupted one), `--steps` steps;
  3. batched greedy generation of 64 prompts, 128 new tokens each.
Prints tokens/s for each, the peak GPU memory and an MFU estimate as one JSON line, and writes
benchmarks/results/gpu_check.json. Never part of the tests. `--tiny` runs a 2-layer model on the CPU to
check the script itself (its figures mean nothing).

MFU: LoRA training with frozen weights costs about 4·N FLOPs per token (forward 2·N, backward through the
activations 2·N; the adapters' own gradients are negligible), plus attention's 12·L·d·T per token;
generation about 2·N per token. Peak: 989 TFLOP/s dense bf16 (H100/H200 SXM) unless --peak-tflops says.
"""

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

QWEN3_0_6B = {  # the published configuration's shape
    "hidden_size": 1024,
    "intermediate_size": 3072,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 151936,
    "max_position_embeddings": 40960,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
}
TINY = {**QWEN3_0_6B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "head_dim": 16}


def rows(n: int, seed: int = 0):
    """SFT and DPO rows from the demo domain: the context, the right next turn, and a corrupted one."""
    from training import demo_domain

    rng = random.Random(seed)
    sft, dpo = [], []
    for case in demo_domain.eval_prompts(n, seed=seed):
        expected = case["expected"]
        right = {"role": "assistant", "content": expected.get("content") or ""}
        if expected.get("tool_calls"):
            right["tool_calls"] = expected["tool_calls"]
        wrong = {"role": "assistant", "content": rng.choice(["OK.", "Yes, that is in stock.", "Let me see."])}
        sft.append({"prompt": case["messages"], "completion": [right], "tools": json.dumps(case["tools"])})
        dpo.append(
            {
                "prompt": case["messages"],
                "chosen": [right],
                "rejected": [wrong],
                "tools": json.dumps(case["tools"]),
            }
        )
    return sft, dpo


def tokenizer():
    from training import demo_domain
    from training.demo_model import build_tokenizer, render

    texts = render(demo_domain.generate_conversations(400, seed=1))
    return build_tokenizer(texts, vocab_size=1024)


def train(stage, model, tok, data, o, device):
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    gpu = device == "cuda"
    common = {
        "output_dir": str(Path(o.out) / stage),
        "max_steps": o.steps,
        "per_device_train_batch_size": o.batch,
        "learning_rate": 2e-4 if stage == "sft" else 5e-6,
        "logging_steps": max(1, o.steps // 5),
        "save_strategy": "no",
        "report_to": "none",
        "bf16": gpu,
        "gradient_checkpointing": gpu,
        "use_cpu": not gpu,
        "max_length": o.max_length,
        "dataloader_num_workers": 0,
    }
    lora = LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    dataset = Dataset.from_list(data)
    if stage == "sft":
        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(**common, completion_only_loss=True),
            train_dataset=dataset,
            processing_class=tok,
            peft_config=lora,
        )
    else:
        trainer = DPOTrainer(
            model=model,
            args=DPOConfig(**common, beta=0.1, loss_type=["sigmoid"]),
            train_dataset=dataset,
            processing_class=tok,
            peft_config=lora,
        )
    tokens = 0
    loader = trainer.get_train_dataloader()
    for i, batch in enumerate(loader):  # the tokens the steps will see (padding excluded)
        if i >= o.steps:
            break
        for key in ("attention_mask", "chosen_attention_mask", "rejected_attention_mask"):
            if key in batch:
                tokens += int(batch[key].sum())
        if "attention_mask" not in batch and "completion_attention_mask" in batch:
            tokens += int(batch["completion_attention_mask"].sum() + batch["prompt_attention_mask"].sum())
    sync(device)
    t0 = time.perf_counter()
    trainer.train()
    sync(device)
    seconds = time.perf_counter() - t0
    merged = trainer.model.merge_and_unload() if hasattr(trainer.model, "merge_and_unload") else trainer.model
    return merged, {"steps": o.steps, "tokens": tokens, "seconds": round(seconds, 2)}


def sync(device):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def generate(model, tok, prompts, device, new_tokens=128):
    import torch

    tok.padding_side = "left"
    texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    enc = tok(texts, return_tensors="pt", padding=True).to(device)
    model.eval()
    sync(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(
            **enc,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
        )
    sync(device)
    seconds = time.perf_counter() - t0
    produced = int((out[:, enc["input_ids"].shape[1] :] != tok.pad_token_id).sum())
    return {"prompts": len(prompts), "new_tokens": produced, "seconds": round(seconds, 2)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--out", default="var/gpu_check")
    parser.add_argument(
        "--tiny", action="store_true", help="a 2-layer model on the CPU: checks the script only"
    )
    o = parser.parse_args()

    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    device = "cuda" if torch.cuda.is_available() and not o.tiny else "cpu"
    if device == "cpu" and not o.tiny:
        sys.exit("no GPU here: run with --tiny to check the script on the CPU")
    torch.manual_seed(0)
    shape = TINY if o.tiny else QWEN3_0_6B
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    tok = tokenizer()
    sft_rows, dpo_rows = rows(max(64, o.steps * o.batch))

    def fresh():
        model = Qwen3ForCausalLM(
            Qwen3Config(**shape, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        )
        return model.to(device=device, dtype=dtype)

    model = fresh()
    params = sum(p.numel() for p in model.parameters())
    non_embedding = params - shape["vocab_size"] * shape["hidden_size"]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model, sft = train("sft", model, tok, sft_rows, o, device)
    model, dpo = train("dpo", model, tok, dpo_rows, o, device)
    gen = generate(model, tok, [r["prompt"] for r in sft_rows[:64]], device)

    layers, width = shape["num_hidden_layers"], shape["hidden_size"]

    def train_flops_per_token(context):
        return 4 * non_embedding + 4 * shape["vocab_size"] * width + 12 * layers * width * context

    def rate(figures, per_token):
        tps = figures["tokens" if "tokens" in figures else "new_tokens"] / max(figures["seconds"], 1e-9)
        return round(tps, 1), round(tps * per_token / (o.peak_tflops * 1e12), 4)

    sft["tokens_per_s"], sft["mfu"] = rate(sft, train_flops_per_token(o.max_length // 2))
    dpo["tokens_per_s"], dpo["mfu"] = rate(dpo, train_flops_per_token(o.max_length // 2))
    # DPO also runs the reference forward (adapters off): 2 more N per token
    dpo["mfu"] = round(
        dpo["mfu"]
        * (train_flops_per_token(o.max_length // 2) + 2 * non_embedding)
        / train_flops_per_token(o.max_length // 2),
        4,
    )
    gen["tokens_per_s"], gen["mfu"] = rate(gen, 2 * non_embedding + 2 * shape["vocab_size"] * width)
    figures = {
        "model": "Qwen3-0.6B shape, random weights" if not o.tiny else "2-layer check model (--tiny)",
        "parameters": params,
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "dtype": str(dtype).replace("torch.", ""),
        "gradient_checkpointing": device == "cuda",
        "lora_r": 8,
        "batch": o.batch,
        "max_length": o.max_length,
        "sft": sft,
        "dpo": dpo,
        "generation": gen,
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None,
        "peak_tflops_assumed": o.peak_tflops,
        "torch": torch.__version__,
    }
    from benchmarks._common import report

    report("gpu_check" if not o.tiny else "gpu_check_tiny", figures)


if __name__ == "__main__":
    main()
