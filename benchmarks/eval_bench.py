"""Evaluation throughput: strict metric scoring on one core, and batched vs one-at-a-time generation.

    python benchmarks/eval_bench.py [--cases 100000] [--gen-cases 64] [--model DIR] [--device cpu]

Scoring: `toolcalls.score.score_case` over a realistic mix of outputs against demo-domain
gold turns (right calls, wrong arguments, missed and false calls, malformed JSON, parallel
calls, fabricated tool results, reasoning, long and repetitive replies), single process and
single thread, timed in process CPU time (the one-core figure on a shared machine) and wall time;
then `summarize` with category and turn-depth breakdowns. Target: 50,000 cases/s.

Generation: `inference.generation.generate` (left-padded, greedy, stop at <|im_end|>) on the
tiny demo model — `--model` (default: MODEL_DIR/demo-base when built, else a "test"-size model
built into a temp folder) — batch 16 vs batch 1 over the same held-out prompts; reports
cases/s, new tokens/s, the ratio, and how many outputs are identical between the two.
"""

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from benchmarks._common import ROOT, peak_rss_mb, report  # noqa: E402


def call_text(name, args):
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": args}) + "\n</tool_call>"


def output_variants(expected: dict, rng: random.Random) -> str:
    """One plausible model output for a gold turn, drawn from the failure modes we see."""
    calls = [
        (c["function"]["name"], json.loads(c["function"]["arguments"]))
        for c in expected.get("tool_calls") or []
    ]
    roll = rng.random()
    if calls:
        right = "\n".join(call_text(n, a) for n, a in calls)
        if roll < 0.45:
            return right
        if roll < 0.55:
            return "<think>\nThe customer wants live data, so I call the tool.\n</think>\n\n" + right
        if roll < 0.65:
            name, args = calls[0]
            bad = {k: (v.lower() if isinstance(v, str) else str(v)) for k, v in args.items()}
            return call_text(name, bad)
        if roll < 0.75:
            return "Yes, that is in stock and ready to ship today. Anything else I can do for you?"
        if roll < 0.82:
            return right[:-4]  # unclosed tag
        if roll < 0.9:
            return (
                right
                + '\n<tool_response>\n{"in_stock": 12}\n</tool_response>\nGood news: 12 units are in stock.'
            )
        return '<tool_call>\n{"name": "check_inventory", "arguments": {"sku": "A-1",}}\n</tool_call>'
    reply = expected.get("content") or ""
    if roll < 0.6:
        return reply
    if roll < 0.75:
        return call_text("search_product", {"query": "policy"})
    if roll < 0.85:
        return "OK."
    if roll < 0.95:
        return reply + " " + " ".join(["Thank you!"] * 6)
    return reply + " <|im_start|>assistant"


def bench_scoring(n_cases: int, repeats: int = 3) -> dict:
    from toolcalls.score import score_case, summarize
    from training import demo_domain

    rng = random.Random(7)
    base = demo_domain.eval_prompts(2000, seed=11) + demo_domain.eval_prompts(500, seed=11, split="unseen")
    cases = []
    for i in range(n_cases):
        c = base[i % len(base)]
        cases.append(
            (
                c["expected"],
                output_variants(c["expected"], rng),
                c["tools"],
                [c["metadata"]["scenario"]],
                c["metadata"]["turn_depth"],
            )
        )
    # The machine may be shared: CPU time of this (single-threaded) process is the one-core
    # figure; wall time is reported beside it. Best of `repeats`.
    best_cpu = best_wall = None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        scores = [score_case(exp, out, tools) for exp, out, tools, _, _ in cases]
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        best_cpu = cpu if best_cpu is None else min(best_cpu, cpu)
        best_wall = wall if best_wall is None else min(best_wall, wall)
    cpu = time.process_time()
    summary = summarize(scores, [c[3] for c in cases], [c[4] for c in cases])
    summarize_cpu = time.process_time() - cpu
    return {
        "scoring_cases": n_cases,
        "scoring_cases_per_cpu_s": round(n_cases / best_cpu),
        "scoring_cases_per_wall_s": round(n_cases / best_wall),
        "scoring_us_per_case_cpu": round(1e6 * best_cpu / n_cases, 2),
        "summarize_cpu_s": round(summarize_cpu, 3),
        "mix_tool_call_accuracy": round(summary["tool_call_accuracy"]["value"], 4),
        "mix_response_quality": round(summary["response_quality"]["value"], 4),
        "scoring_target_met": n_cases / best_cpu >= 50_000,
    }


def bench_generation(
    model_dir: str | None, n_cases: int, max_new_tokens: int, batch_size: int, device: str
) -> dict:
    import torch

    from inference import generation
    from inference.loading import load_model
    from training import demo_domain

    built = None
    if not model_dir:
        default = ROOT / "var" / "models" / "demo-base"
        if (default / "config.json").exists():
            model_dir = str(default)
        else:
            from training.demo_model import build_demo_model

            built = tempfile.mkdtemp(prefix="eval-bench-")
            model_dir = str(Path(built) / "tiny")
            build_demo_model(model_dir, seed=0, size="test", log=lambda *a: None)
    loaded = load_model(model_dir, device=device)
    items = [(c["messages"], c["tools"]) for c in demo_domain.eval_prompts(n_cases, seed=3)]
    generation.generate(loaded, items[:2], max_new_tokens=8, batch_size=2)  # warm-up

    def timed(bs):
        wall, cpu = time.perf_counter(), time.process_time()
        outs = generation.generate(loaded, items, max_new_tokens=max_new_tokens, batch_size=bs)
        return time.perf_counter() - wall, time.process_time() - cpu, outs

    batched_s, batched_cpu, batched = timed(batch_size)
    single_s, single_cpu, single = timed(1)
    tokens = sum(g.new_tokens for g in batched)
    return {
        "gen_model": str(Path(model_dir).name) + (" (test size, built for the bench)" if built else ""),
        "gen_params": loaded.params,
        "gen_device": loaded.device,
        "gen_threads": 1
        if loaded.device == "cpu" and loaded.params < generation.SMALL_MODEL_PARAMS
        else torch.get_num_threads(),
        "gen_cases": n_cases,
        "gen_max_new_tokens": max_new_tokens,
        "gen_batch_size": batch_size,
        "gen_new_tokens": tokens,
        "gen_stopped_at_limit": sum(g.stopped_at_limit for g in batched),
        "batched_cases_per_s": round(n_cases / batched_s, 2),
        "single_cases_per_s": round(n_cases / single_s, 2),
        "batched_tokens_per_s": round(tokens / batched_s, 1),
        "single_tokens_per_s": round(sum(g.new_tokens for g in single) / single_s, 1),
        "batched_vs_single_ratio": round(single_s / batched_s, 2),
        "batched_vs_single_ratio_cpu": round(single_cpu / batched_cpu, 2),
        "identical_outputs": sum(a.text == b.text for a, b in zip(batched, single, strict=True)),
    }


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--gen-cases", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--name", default="eval")
    args = parser.parse_args()

    import django

    django.setup()
    figures = bench_scoring(args.cases)
    figures.update(
        bench_generation(args.model, args.gen_cases, args.max_new_tokens, args.batch_size, args.device)
    )
    figures["peak_rss_mb"] = round(peak_rss_mb())
    report(args.name, figures)


if __name__ == "__main__":
    main()
