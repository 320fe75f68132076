"""Batched greedy generation on the tiny demo model: same outputs as one at a time, stop at the
end-of-turn token or report the limit, base + LoRA adapter loading, general-text perplexity."""

import math
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from annotator.model_lineage import ModelNotFound, model_paths  # noqa: E402
from evaluation import runner, suites  # noqa: E402
from evaluation.models import EvalResult  # noqa: E402
from inference import generation  # noqa: E402
from inference.loading import load_model  # noqa: E402
from inference.perplexity import GENERAL_TEXTS, TEXTS_FINGERPRINT, perplexity  # noqa: E402
from toolcalls.score import score_case  # noqa: E402
from training import demo_domain  # noqa: E402

from .test_eval_support import model  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from training.demo_model import build_demo_model

    path = tmp_path_factory.mktemp("models") / "tiny"
    build_demo_model(path, seed=0, size="test", steps=20, log=lambda *a: None)
    return str(path)


@pytest.fixture(scope="module")
def loaded(tiny_model):
    return load_model(tiny_model, device="cpu")


def items(n=10, seed=1):
    return [(c["messages"], c["tools"]) for c in demo_domain.eval_prompts(n, seed=seed)]


def test_batched_generation_equals_one_at_a_time(loaded):
    batch = generation.generate(loaded, items(), max_new_tokens=24, batch_size=10)
    single = generation.generate(loaded, items(), max_new_tokens=24, batch_size=1)
    assert [g.text for g in batch] == [g.text for g in single]
    for g in batch:
        assert "<|im_end|>" not in g.text and "<|endoftext|>" not in g.text  # the stop token is not output
        assert g.stopped_at_limit == (g.new_tokens == 24)  # a stop token within the limit is cut off


def test_stopping_at_the_limit_is_reported(loaded):
    outs = generation.generate(loaded, items(3), max_new_tokens=2, batch_size=3)
    for g in outs:
        assert g.new_tokens <= 2
        assert g.stopped_at_limit == (g.new_tokens == 2)


def test_a_base_plus_lora_adapter_loads_and_a_zero_adapter_changes_nothing(tiny_model, loaded, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    peft_model = get_peft_model(
        base, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")
    )  # B starts at zero
    peft_model.save_pretrained(tmp_path / "adapter")
    with_adapter = load_model(tiny_model, str(tmp_path / "adapter"), device="cpu")
    assert "adapter" in with_adapter.label
    a = generation.generate(with_adapter, items(4), max_new_tokens=16)
    b = generation.generate(loaded, items(4), max_new_tokens=16)
    assert [g.text for g in a] == [g.text for g in b]


def test_general_text_perplexity(loaded):
    ppl = perplexity(loaded.model, loaded.tokenizer)
    assert math.isfinite(ppl) and ppl > 1
    assert perplexity(loaded.model, loaded.tokenizer) == pytest.approx(ppl)
    assert perplexity(loaded.model, loaded.tokenizer, batch_size=1) == pytest.approx(
        ppl, rel=1e-4
    )  # pads never count
    assert len(GENERAL_TEXTS) >= 8 and len(TEXTS_FINGERPRINT) == 16


def test_model_paths_take_the_base_from_an_ancestor(project, tiny_model):
    base = model(project, "base", path=tiny_model, origin="base")
    sft = model(project, "sft", parent=base, adapter_path="/adapters/sft", origin="sft")
    dpo = model(project, "dpo", parent=sft, adapter_path="/adapters/dpo", origin="dpo")
    assert model_paths(dpo) == (tiny_model, ["/adapters/sft", "/adapters/dpo"])
    with pytest.raises(ModelNotFound, match="no base model folder"):
        model_paths(model(project, "imported"))


@pytest.mark.django_db
def test_a_local_run_in_process(project, tiny_model):
    suite, _ = suites.suite_from_demo(project, "demo", n=10, seed=2)
    mv = model(project, "demo-base", path=tiny_model, origin="base")
    run = runner.create_run(
        project, suite, mv, settings={"max_new_tokens": 24, "batch_size": 4, "device": "cpu"}, start=False
    )
    run = runner.run_eval(run.pk)
    assert run.status == "done", run.message
    assert run.summary["n"] == 10 and run.perplexity and run.stats["device"] == "cpu"
    assert run.stats["perplexity_texts"] == TEXTS_FINGERPRINT
    for r in EvalResult.objects.filter(run=run).select_related("case"):
        want = score_case(r.case.expected, r.output, r.case.tools, stopped_at_limit=r.stopped_at_limit)
        assert r.tool_call_accuracy == want["tool_call_accuracy"] and r.score["defects"] == want["defects"]
        assert r.new_tokens is not None and r.stopped_at_limit is not None
