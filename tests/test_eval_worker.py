"""An eval run end to end through a real Celery worker process on the tiny demo model."""

import os

import pytest

from evaluation import runner, suites
from evaluation.models import EvalResult, EvalRun
from evaluation.tasks import run_eval
from toolcalls.score import score_case, summarize

from .test_eval_support import model
from .worker import celery_worker, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_a_worker_generates_scores_and_summarises_a_run(project, tmp_path):
    from training.demo_model import build_demo_model

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    build_demo_model(tmp_path / "tiny", seed=0, size="test", steps=20, log=lambda *a: None)
    suite, _ = suites.suite_from_demo(project, "demo", n=16, seed=5)
    mv = model(project, "demo-base", path=str(tmp_path / "tiny"), origin="base")
    run = runner.create_run(project, suite, mv, settings={"max_new_tokens": 32, "batch_size": 8}, start=False)

    with celery_worker() as (queue, _proc):
        run_eval.apply_async(args=[run.pk], queue=queue)
        wait_for(
            lambda: EvalRun.objects.get(pk=run.pk).finished, timeout=120, what="the eval run", log_queue=queue
        )

    run.refresh_from_db()
    assert run.status == "done", run.message
    assert run.cases_done == 16 and run.attempts == 1 and run.perplexity > 1
    assert run.stats["device"] in ("cpu", "cuda") and run.stats["new_tokens"] > 0
    results = list(EvalResult.objects.filter(run=run).select_related("case").order_by("case__position"))
    assert [r.case.position for r in results] == list(range(1, 17))
    scores = []
    for r in results:
        want = score_case(r.case.expected, r.output, r.case.tools, stopped_at_limit=r.stopped_at_limit)
        assert r.tool_call_accuracy == want["tool_call_accuracy"]
        assert r.score["defects"] == want["defects"] and r.score["parsed"]["calls"] == want["parsed"]["calls"]
        assert r.stopped_at_limit == (r.new_tokens == 32)
        scores.append(want)
    expected = summarize(scores, [r.case.categories for r in results], [r.case.turn_depth for r in results])
    for metric in ("tool_call_accuracy", "tool_name_accuracy", "tool_args_accuracy", "response_quality"):
        assert run.summary[metric]["count"] == expected[metric]["count"]
        assert run.summary[metric]["n"] == expected[metric]["n"]
    assert set(run.summary["by_category"]) == set(expected["by_category"])
    assert run.summary["defects"]["end_repetition"]["count"] == expected["defects"]["end_repetition"]["count"]
