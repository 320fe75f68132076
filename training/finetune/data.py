"""The rows a job trains on: its snapshot's columns for SFT and DPO, both orders of each human pair
for a judge (with the pairs kept back to calibrate and to evaluate it)."""

from ..judge.pairs import job_pairs, training_rows
from ..models import TrainingJob


def judge_data(job: TrainingJob):
    """A judge trains on both orders of each human pair; some pairs are kept back to calibrate it and
    some to evaluate it (training/judge/pairs.py job_pairs)."""
    from datasets import Dataset

    train, _calibration, held, source = job_pairs(job)
    rows = training_rows(train, reasons=bool(job.params.get("judge_reasons")), seed=job.params.get("seed", 0))
    return Dataset.from_list(rows), held, source


def train_dataset(job: TrainingJob):
    """The snapshot's rows, with only the columns its layout trains on."""
    from datasets import load_dataset

    ds = load_dataset("json", data_files=job.train_snapshot.file.path, split="train")
    keep = (
        {"messages", "tools"}
        if job.train_snapshot.layout == "trl_messages"
        else {"prompt", "completion", "tools"}
        if job.train_snapshot.layout == "trl_prompt_completion"
        else {"prompt", "chosen", "rejected", "tools"}
    )
    return ds.remove_columns([c for c in ds.column_names if c not in keep])
