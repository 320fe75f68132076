"""The job's starting model and the TRL trainer that trains a LoRA adapter on it."""

from annotator.model_lineage import model_paths
from inference.loading import load_model

from ..models import TrainingJob


def load_for_training(job: TrainingJob, device: str):
    """The job's starting model, earlier stages merged (this job trains a fresh adapter on top). Not in
    the checkpoint's own dtype as for inference: bf16 on a GPU that has it (half the memory of float32;
    build_trainer trains in bf16 there), float32 anywhere else (fp16 weights train unstably)."""
    import torch

    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    loaded = load_model(*model_paths(job.base_version), device=device, dtype=dtype)
    return loaded.model, loaded.tokenizer


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
    bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
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
        gradient_checkpointing=False,
        use_cpu=device == "cpu",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    if job.stage == TrainingJob.Stage.JUDGE:
        from trl import SFTConfig, SFTTrainer

        args = SFTConfig(**common, completion_only_loss=True)
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
