"""The same LoRA SFT run through the job system and as a bare TRL script: wall-time ratio.

    python benchmarks/training_overhead.py [--model var/models/demo-base] [--steps 60] [--repeats 2]

Both runs use the same model folder, rows, hyper-parameters and TRL trainer
(training.finetune.build.build_trainer). The job run adds what the product adds: metric points and
heartbeats in the database every step, cancel checks, checkpoints every `save_steps` with the
brain-damage guard (perplexity + response quality).
Target: job train time / bare train time <= 1.05.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._common import ROOT, report, setup_django  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(ROOT / "var" / "models" / "demo-base"))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--save-steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    setup_django(args.database_url)
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from benchmarks._training_fixtures import bench_project
    from training.demo_model import build_demo_model
    from training.finetune.build import build_trainer, load_for_training
    from training.finetune.data import train_dataset
    from training.finetune.params import clean_params
    from training.finetune.request import create_job
    from training.finetune.run import run_job
    from training.models import TrainingJob

    if not (Path(args.model) / "config.json").exists():
        build_demo_model(args.model, seed=0)
    slug = f"train-bench-{int(time.time())}"
    project, base, snap = bench_project(slug, args.model)
    overrides = {"max_steps": args.steps, "save_steps": args.save_steps, "logging_steps": 5}

    def bare_run(i):
        job = TrainingJob(
            project=project,
            stage="sft",
            base_version=base,
            train_snapshot=snap,
            params=clean_params("sft", "demo-tiny", overrides)[0],
            output_dir=str(ROOT / "var" / "bench" / f"bare-{i}"),
        )
        torch.set_num_threads(1)
        model, tok = load_for_training(job, "cpu")
        t = build_trainer(job, model, tok, train_dataset(job), "cpu")
        start = time.perf_counter()
        t.train()
        return time.perf_counter() - start

    def job_run():
        job = create_job(
            project,
            None,
            stage="sft",
            base_version=base,
            train_snapshot=snap,
            preset="demo-tiny",
            overrides=overrides,
            start=False,
        )
        start = time.perf_counter()
        job = run_job(job.pk)
        total = time.perf_counter() - start
        assert job.status == "succeeded", job.message
        return job.timings["train_s"], total, job

    bare, jobs, totals = [], [], []
    for i in range(args.repeats):  # alternate, so drift in machine load hits both alike
        bare.append(bare_run(i))
        train_s, total, job = job_run()
        jobs.append(train_s)
        totals.append(total)
    bare_s, job_s = min(bare), min(jobs)
    report(
        "training_overhead",
        {
            "model": args.model,
            "params": job.params,
            "steps": args.steps,
            "save_steps": args.save_steps,
            "bare_train_ms": round(1000 * bare_s),
            "job_train_ms": round(1000 * job_s),
            "job_total_ms_incl_load_and_baseline_guard": round(1000 * min(totals)),
            "ratio": round(job_s / bare_s, 3),
            "all_bare_ms": [round(1000 * b) for b in bare],
            "all_job_ms": [round(1000 * j) for j in jobs],
            "device": "cpu",
            "threads": 1,
        },
    )


if __name__ == "__main__":
    main()
