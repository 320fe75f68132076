"""The judge and online DPO pages in real Chromium: charts draw, model text stays inert, leads see the
judge's verdict on a comparison and a blind annotator does not."""

import pytest

from annotator.assignment import next_task, sync_tasks
from annotator.models import Role, Task
from training.models import (
    JudgeEvaluation,
    JudgeSuggestion,
    JudgeVerdictSuggestion,
    ModelVersion,
    OnlineRound,
    OnlineRun,
)

from ..test_datasets_factories import conversation, response
from ..test_eval_support import crafted_run, make_suite
from .conftest import login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
XSS = '<img src=x onerror="alert(1)"><script>alert(2)</script>'


@pytest.fixture
def judged(project, members):
    base = ModelVersion.objects.create(project=project, name="base", origin="base")
    sft = ModelVersion.objects.create(project=project, name="sft-1", origin="sft", parent=base)
    judge = ModelVersion.objects.create(project=project, name="judge-1", origin="judge", parent=sft)
    bins = [
        {
            "low": 0.5 + k / 20,
            "high": 0.55 + k / 20,
            "count": 5 if k % 3 == 0 else 0,
            "confidence": 0.52 + k / 20,
            "accuracy": min(1.0, 0.45 + k / 15),
        }
        for k in range(10)
    ]
    JudgeEvaluation.objects.create(
        judge=judge,
        source="20% held out",
        pairs=40,
        decision_margin=0.05,
        decided=34,
        coverage=0.85,
        decided_accuracy=0.794,
        symmetric_accuracy=0.75,
        symmetric_accuracy_se=0.068,
        averaged_ece=0.04,
        averaged_brier=0.16,
        accuracy=0.77,
        accuracy_se=0.066,
        single_order_accuracy=0.71,
        position_bias_rate=0.15,
        first_position_rate=0.56,
        ece=0.07,
        brier=0.18,
        human_agreement=0.83,
        human_pairs=37,
        details={"bins": bins},
    )
    conv = conversation(project, "pair-1", [{"role": "user", "content": "Is A-1 in stock? " + XSS}])
    a = response(conv, raw='<tool_call>{"name": "check_inventory", "arguments": {"sku": "A-1"}}</tool_call>')
    b = response(conv, raw="Yes! " + XSS)
    JudgeSuggestion.objects.create(
        project=project,
        judge=judge,
        response_a=a,
        response_b=b,
        prob_a=0.82,
        verdict="a",
        reason="calls the tool " + XSS,
        human_choice="b",
        disagrees=True,
    )
    JudgeVerdictSuggestion.objects.create(
        project=project,
        judge=judge,
        response=b,
        reference=a,
        prob_better=0.12,
        suggested="unreasonable",
        reason="no tool call " + XSS,
        human_verdict="reasonable",
        disagrees=True,
    )
    sync_tasks(project)
    suite = make_suite(project, n=8)
    runs = [crafted_run(project, suite, v, right) for v, right in ((sft, {1, 2, 3}), (base, {1, 2, 3, 5, 6}))]
    run = OnlineRun.objects.create(
        project=project,
        name="online " + XSS,
        start_version=sft,
        eval_suite=suite,
        rounds=1,
        status="succeeded",
        options={"samples_per_prompt": 4},
        params={"learning_rate": 0.002},
        message="1 round passed the gate",
        log_tail="round 1: " + XSS,
    )
    OnlineRound.objects.create(
        run=run,
        number=1,
        policy=sft,
        status="done",
        prompts=8,
        samples=32,
        pairs=6,
        baseline_run=runs[0],
        eval_run=runs[1],
        stats={"sample_accuracy": 0.4},
        gate={
            "passed": True,
            "candidate": {"acc": 0.625},
            "baseline": {"acc": 0.375},
            "conditions": [{"key": "tool_call_accuracy", "ok": True, "detail": XSS}],
        },
    )
    return {"judge": judge, "run": run, "task": Task.objects.get(project=project, kind="compare")}


@pytest.mark.parametrize("width", [1400, 1024])
def test_judge_and_online_pages_draw_their_charts_and_keep_text_inert(
    browser, live_server, insecure_cookies, members, project, judged, shot, width
):
    page, dialogs = login(browser, live_server, "lead", "pw-lead")
    page.set_viewport_size({"width": width, "height": 950})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{live_server.url}/p/{project.slug}/training/judges/")
    page.wait_for_function(
        "() => window.Chart && Chart.getChart(document.getElementById('calibration-chart'))"
    )
    assert page.locator("#judges").inner_text().count("0.750 ± 0.068") == 1
    assert "0.830" in page.locator("#judges").inner_text()
    assert "Decided 34 of 40 pairs (0.850)" in page.locator("#judges").inner_text()  # unsure: counted
    disputed = page.locator("#disputed-responses").inner_text()
    assert "Unreasonable" in disputed and "0.12" in disputed and XSS in disputed  # shown as text, not run
    shot(page, f"judges-{width}")
    page.goto(f"{live_server.url}/p/{project.slug}/training/online/{judged['run'].pk}/")
    page.wait_for_function("() => Chart.getChart(document.getElementById('rounds-chart'))")
    points = page.evaluate(
        "() => Chart.getChart(document.getElementById('rounds-chart')).data.datasets[0].data"
    )
    assert [p["x"] for p in points] == [0, 1] and [round(p["y"], 3) for p in points] == [0.375, 0.625]
    assert XSS in page.locator("#rounds").inner_text()  # shown as text, not run
    shot(page, f"online-run-{width}")
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1")
    assert page.locator("img[src=x]").count() == 0
    assert dialogs == [] and errors == []
    page.context.close()


def test_a_lead_sees_the_judge_on_a_comparison_and_a_blind_annotator_does_not(
    browser, live_server, insecure_cookies, members, project, judged, shot
):
    task = judged["task"]
    lead, dialogs = login(browser, live_server, "lead", "pw-lead")
    lead.goto(f"{live_server.url}/p/{project.slug}/disagreements/")
    next_task(project, members[Role.ANNOTATOR], "compare")  # the annotator holds the pair
    ann, ann_dialogs = login(browser, live_server, "annotator", "pw-annotator")
    ann.goto(f"{live_server.url}/p/{project.slug}/tasks/{task.pk}/")
    ann.wait_for_selector("#task-form")
    assert ann.locator(".judge-hint").count() == 0 and "judge" not in ann.content().lower()
    shot(ann, "compare-annotator-blind")
    assert dialogs == [] and ann_dialogs == []
    lead.context.close()
    ann.context.close()
