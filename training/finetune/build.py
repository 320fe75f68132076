"""The job's starting model and the TRL trainer that trains a LoRA adapter on it."""

import importlib.util

from annotator.model_lineage import model_paths
from inference.loading import load_model

from ..models import TrainingJob
from .group import local_rank


def quantized(job: TrainingJob, device: str) -> bool:
    """Load the frozen base in 4 bits (QLoRA): asked for by the job, on CUDA, with bitsandbytes importable
    (imported here, on a training host, never when the app loads)."""
    if not (job.params.get("load_in_4bit") and device.startswith("cuda")):
        return False
    if importlib.util.find_spec("bitsandbytes") is None:
        return False
    try:
        import bitsandbytes  # noqa: F401
    except Exception:  # noqa: BLE001 - installed but unusable here (its CUDA libraries): train in bf16
        return False
    return True


def load_for_training(job: TrainingJob, device: str):
    """The job's starting model, earlier stages merged (this job trains a fresh adapter on top). Not in
    the checkpoint's own dtype as for inference: bf16 on a GPU that has it (half the memory of float32;
    build_trainer trains in bf16 there), float32 anywhere else (fp16 weights train unstably); in 4 bits
    when `quantized` (the adapters train in bf16 on top)."""
    import torch

    dtype = torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    if quantized(job, device):
        return _load_4bit(job, dtype)
    loaded = load_model(*model_paths(job.base_version), device=device, dtype=dtype)
    return loaded.model, loaded.tokenizer


def _load_4bit(job: TrainingJob, dtype):
    """QLoRA's loading: NF4 weights with double quantisation, computing in `dtype`, placed on this rank's
    GPU as they load (inference.loading moves a loaded model, which a 4-bit one refuses); earlier stages'
    adapters are merged into it as load_model does. bitsandbytes is imported here only."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    base, adapters = model_paths(job.base_version)
    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
    )
    model = AutoModelForCausalLM.from_pretrained(
        base, quantization_config=config, dtype=dtype, device_map={"": local_rank()}, local_files_only=True
    )
    for adapter in adapters or []:
        model = PeftModel.from_pretrained(model, adapter, is_trainable=False).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def build_trainer(job: TrainingJob, model, tokenizer, dataset, device: str, callbacks=()):
    """The TRL trainer for this job (also used by benchmarks/training_overhead.py for the bare run)."""
    import torch
    from peft import LoraConfig

    p = job.params
    peft_config = LoraConfig(
        r=p["lora_r"],
        lora_alpha=p["lora_alpha"],
        lora_dropout=p["lora_dropout"],
        target_modules=p["target_modules"],
        task_type="CAUSAL_LM",
    )
    cuda = device.startswith("cuda")
    bf16 = cuda and torch.cuda.is_bf16_supported()
    checkpointing = cuda and bool(p.get("gradient_checkpointing"))
    distributed = int(p.get("num_processes", 1)) > 1
    common = dict(
        output_dir=job.output_dir,
        learning_rate=p["learning_rate"],
        num_train_epochs=p["num_train_epochs"],
        max_steps=p["max_steps"] or -1,
        per_device_train_batch_size=p["per_device_train_batch_size"],
        gradient_accumulation_steps=p["gradient_accumulation_steps"],
        logging_steps=p["logging_steps"],
        save_strategy="steps",
        save_steps=p["save_steps"],
        warmup_steps=p["warmup_ratio"],
        seed=p["seed"],
        max_length=p["max_length"],
        report_to="none",
        bf16=bf16,
        gradient_checkpointing=checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
        use_cpu=device == "cpu",
        disable_tqdm=True,
        dataloader_num_workers=0,
        # Several processes (torchrun's environment): gloo on a CPU, nccl on GPUs; a LoRA adapter uses
        # every trainable parameter at each step, so DDP need not search for unused ones.
        **(
            {"ddp_backend": "nccl" if cuda else "gloo", "ddp_find_unused_parameters": False}
            if distributed
            else {}
        ),
    )
    if job.stage == TrainingJob.Stage.JUDGE:
        from trl import SFTConfig, SFTTrainer

        # rows come pair by pair, both orders side by side (judge/pairs.py training_rows): read in that
        # order, every batch holds both orders of its pairs, so what a slot alone would teach cancels
        args = SFTConfig(**common, completion_only_loss=True, train_sampling_strategy="sequential")
        return SFTTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=list(callbacks),
        )
    if job.stage == TrainingJob.Stage.SFT:
        from trl import SFTConfig, SFTTrainer

        layout = job.train_snapshot.layout
        args = SFTConfig(
            **common,
            assistant_only_loss=layout == "trl_messages",
            completion_only_loss=True if layout == "trl_prompt_completion" else None,
        )
        return SFTTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=list(callbacks),
        )
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(**common, beta=p["beta"], loss_type=p["loss_type"])
    return DPOTrainer(
        model=model,
        ref_model=None,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=list(callbacks),
    )
