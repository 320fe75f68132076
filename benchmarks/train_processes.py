"""Training throughput of one job in 1 and in 2 processes (distributed data parallel, gloo on the CPU).

    python benchmarks/train_processes.py [--model var/models/demo-base] [--samples 320]

Each run is a real training job (demo-tiny preset, LoRA SFT) through run_job, as a worker runs it; a
2-process job is a torchrun group the job starts (training/finetune/group.py). Every run trains on the
same number of rows:
  1 process,  per-device batch 8              (the demo preset)
  2 processes, per-device batch 4: global 8   (the same steps, split over two ranks)
  2 processes, per-device batch 8: global 16  (what num_processes=2 does to the preset: half the steps)
Reported: train time (the training loop on rank 0, from the job's timings: the one checkpoint and a
brief guard check included, process start and model loading not), wall time of the whole job (with
process start, loading and the guard's baseline), rows/s over the training loop, and the 1-minute load
average of the machine before and after (other work on a 2-core machine changes these figures a lot).
The model is MODEL_DIR/demo-base when it is built, else the test-size demo model (built under var/bench).
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._common import ROOT, report, setup_django  # noqa: E402

# The guard's check runs on rank 0 alone while the others wait: kept brief, so the figures are training's.
GUARD = {"prompts": 2, "max_new_tokens": 16}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None, help="a model folder (default: MODEL_DIR/demo-base)")
    parser.add_argument("--samples", type=int, default=320, help="rows each run trains on")
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    bench = ROOT / "var" / "bench"
    # Outputs of its own (job folders are named by pk: never over the demo's), a fallback model folder
    # the jobs may load; the ranks see the same through the environment, and DATABASE_URL.
    os.environ["MEDIA_ROOT"] = str(bench / "media")
    os.environ["MODEL_EXTRA_DIRS"] = ",".join(filter(None, [os.environ.get("MODEL_EXTRA_DIRS"), str(bench)]))
    setup_django(args.database_url)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRAINING_THREADS", "1")
    from django.conf import settings

    from benchmarks._training_fixtures import bench_project
    from training.demo_model import build_demo_model
    from training.finetune.request import create_job
    from training.finetune.run import run_job

    model = args.model or str(Path(settings.MODEL_DIR) / "demo-base")
    if not (Path(model) / "config.json").exists():
        model = str(bench / "demo-test-size")
        build_demo_model(model, seed=0, size="test", log=lambda *a: None)
    slug = f"train-processes-{int(time.time())}"
    project, base, snap = bench_project(slug, model)

    def run(processes: int, per_device: int) -> dict:
        steps = args.samples // (processes * per_device)
        job = create_job(
            project,
            None,
            stage="sft",
            base_version=base,
            train_snapshot=snap,
            preset="demo-tiny",
            overrides={
                "num_processes": processes,
                "per_device_train_batch_size": per_device,
                "max_steps": steps,
                "save_steps": steps,  # one checkpoint (and guard check) at the end, as every run
                "logging_steps": 5,
            },
            guard=GUARD,
            start=False,
        )
        start = time.perf_counter()
        job = run_job(job.pk)
        wall = time.perf_counter() - start
        assert job.status == "succeeded", job.message + job.log_tail
        t = job.timings
        return {
            "processes": processes,
            "per_device_batch": per_device,
            "global_batch": processes * per_device,
            "steps": steps,
            "rows": steps * processes * per_device,
            "train_ms": round(1000 * t["train_s"]),
            "job_wall_ms": round(1000 * wall),
            "rows_per_s": t["samples_per_s"],
            "device": job.device,
        }

    load_before = os.getloadavg()[0]
    runs = [run(1, 8), run(2, 4), run(2, 8)]
    load_after = os.getloadavg()[0]
    one = runs[0]["rows_per_s"]
    report(
        "train_processes",
        {
            "model": model,
            "preset": "demo-tiny",
            "threads_per_process": int(os.environ["TRAINING_THREADS"]),
            "runs": runs,
            "speedup_2x4_vs_1x8": round(runs[1]["rows_per_s"] / one, 3),
            "speedup_2x8_vs_1x8": round(runs[2]["rows_per_s"] / one, 3),
            "load_avg_1m_before": round(load_before, 2),
            "load_avg_1m_after": round(load_after, 2),
            "cpus": os.cpu_count(),
        },
    )


if __name__ == "__main__":
    main()
