"""The two Django-free layers under the apps: ``toolcalls`` and ``inference`` import without Django
configured, and the training guard and the promotion gate measure perplexity with one function
over one text set."""

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evaluation import runner
from inference import perplexity as perplexity_module
from training.finetune import guard as finetune_guard

ROOT = Path(__file__).resolve().parent.parent
APPS = ("django", "rest_framework", "config", "annotator", "training", "evaluation", "loop", "jobs")

PROBE = """
import json, sys
import toolcalls.parse, toolcalls.validate, toolcalls.match, toolcalls.defects, toolcalls.score
import inference.loading, inference.generation, inference.perplexity
from toolcalls.score import score_case
score = score_case(
    {"role": "assistant", "content": "Hello there, how can I help?"}, "Hello there, how can I help?", []
)
loaded = sorted({name.split(".")[0] for name in sys.modules})
print(json.dumps({"modules": loaded, "quality": score["response_quality"]}))
"""


def test_toolcalls_and_inference_import_without_django():
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["quality"] == 1
    assert not set(APPS) & set(report["modules"])


def test_guard_and_gate_measure_perplexity_with_one_function_over_one_text_set():
    # the guard (training) and the eval run the gate reads (evaluation) call the very same function
    assert finetune_guard.perplexity is perplexity_module.perplexity
    assert runner.perplexity is perplexity_module.perplexity
    # which takes no texts: there is no second set to pass
    assert "texts" not in inspect.signature(perplexity_module.perplexity).parameters
    # and neither app keeps a text set of its own
    for module in (finetune_guard, runner):
        assert not [name for name in vars(module) if "TEXT" in name and name != "TEXTS_FINGERPRINT"]
    assert runner.TEXTS_FINGERPRINT == perplexity_module.TEXTS_FINGERPRINT


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from training.demo_model import build_demo_model

    path = tmp_path_factory.mktemp("models") / "tiny"
    build_demo_model(path, seed=0, size="test", steps=2, log=lambda *a: None)
    return str(path)


def test_the_guard_reads_the_perplexity_the_gate_reads(tiny_model):
    from inference.loading import load_model

    loaded = load_model(tiny_model, device="cpu")
    guard = finetune_guard.Guard(loaded.tokenizer, prompts=[], limits={})
    measured = guard.measure(loaded.model)["perplexity"]
    assert measured == round(perplexity_module.perplexity(loaded.model, loaded.tokenizer), 4)
