"""An admin's first actions in real Chromium: the new-job form's defaults are consistent for every stage
and launch unchanged, and the live job page follows the job without a reload."""

import re

import pytest
from django.utils.timezone import now
from playwright.sync_api import expect

from annotator.models import ModelVersion, Role
from training.forms import default_preset
from training.models import Checkpoint, TrainingJob

from ..test_training import base, dpo_snapshot, sft_snapshot, tiny_model  # noqa: F401  fixtures
from .conftest import login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def trained(project, base, sft_snapshot, dpo_snapshot, tmp_path_factory):  # noqa: F811
    """A tiny base model with its folder, ready SFT and DPO snapshots, an SFT version on top of the base
    (its adapter folder present) and a newer version whose folder is not on this machine."""
    adapter = tmp_path_factory.mktemp("adapters") / "sft"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    sft_model = ModelVersion.objects.create(
        project=project, name="tiny-sft", parent=base, adapter_path=str(adapter), origin="sft"
    )
    ModelVersion.objects.create(project=project, name="ghost", path="/nowhere/model", origin="base")
    return {"base": base, "sft": sft_snapshot, "dpo": dpo_snapshot, "sft_model": sft_model}


def selected(page, name):
    return page.eval_on_selector(f"#job-form select[name={name}]", "s => s.value")


def test_the_new_job_form_defaults_follow_the_stage_and_launch_unchanged(
    browser, live_server, insecure_cookies, project, members, trained, shot
):
    page, dialogs = login(browser, live_server, "admin", "pw-admin")
    page.goto(f"{live_server.url}/p/{project.slug}/training/new/")
    assert page.is_checked("#job-form input[name=stage][value=sft]")
    assert selected(page, "base_version") == str(trained["base"].pk)
    assert selected(page, "train_snapshot") == str(trained["sft"].pk)
    assert selected(page, "preset") == default_preset()  # demo-tiny on a machine without CUDA
    assert page.locator("nav.subnav").is_visible()
    shot(page, "first-actions-job-form")

    page.check("#job-form input[name=stage][value=dpo]")
    assert selected(page, "base_version") == str(trained["sft_model"].pk)
    assert selected(page, "train_snapshot") == str(trained["dpo"].pk)
    sft_option = page.locator(f"#job-form select[name=train_snapshot] option[value='{trained['sft'].pk}']")
    assert sft_option.evaluate("o => o.hidden")  # an SFT snapshot cannot train DPO
    page.check("#job-form input[name=stage][value=judge]")
    assert selected(page, "base_version") == str(trained["base"].pk)
    assert selected(page, "train_snapshot") == str(trained["dpo"].pk)
    page.check("#job-form input[name=stage][value=sft]")
    assert selected(page, "base_version") == str(trained["base"].pk)
    assert selected(page, "train_snapshot") == str(trained["sft"].pk)

    page.fill("#job-form input[name=name]", "first try")
    page.click("#job-form button.primary")
    page.wait_for_url(re.compile(r"/training/\d+/$"))
    job = TrainingJob.objects.get(name="first try")
    assert (job.stage, job.base_version_id, job.train_snapshot_id) == (
        "sft",
        trained["base"].pk,
        trained["sft"].pk,
    )
    expect(page.locator("#job-outcome")).to_have_text("Queued: waiting for a worker on the training queue.")
    assert page.locator("ul.flash").count() == 0  # no "queued" banner left to go stale
    assert not dialogs
    page.context.close()  # its page polls a queued job; stop it before the database goes


def test_the_live_job_page_updates_every_panel_without_a_reload(
    browser, live_server, insecure_cookies, project, members, trained, shot
):
    job = TrainingJob.objects.create(
        project=project,
        name="live",
        stage="sft",
        base_version=trained["base"],
        train_snapshot=trained["sft"],
        params={"save_steps": 10},
    )
    page, _ = login(browser, live_server, "admin", "pw-admin")
    page.goto(f"{live_server.url}/p/{project.slug}/training/{job.pk}/")
    page.evaluate("window.__notReloaded = true")
    expect(page.locator("#job-checkpoints")).to_contain_text("No checkpoint yet")
    expect(page.locator("#job-attempts")).to_have_text("0")
    expect(page.locator("#job-outcome")).to_contain_text("Queued")

    TrainingJob.objects.filter(pk=job.pk).update(
        status="running",
        device="cpu",
        worker="host-1:4242",
        attempts=1,
        step=10,
        max_steps=20,
        heartbeat_at=now(),
        started_at=now(),
        log_tail="[12:00:00] checkpoint 10: healthy\n",
    )
    Checkpoint.objects.create(
        job=job, step=10, path="/tmp/checkpoint-10", healthy=True, guard={"quality": 0.9}
    )
    expect(page.locator("#job-checkpoints")).to_contain_text("healthy", timeout=8000)
    expect(page.locator("#job-checkpoints")).not_to_contain_text("No checkpoint yet")
    expect(page.locator("#job-device")).to_have_text("cpu")
    expect(page.locator("#job-worker")).to_have_text("host-1:4242")
    expect(page.locator("#job-attempts")).to_have_text("1")
    expect(page.locator("#job-status")).not_to_contain_text("Queued")
    expect(page.locator("#job-step")).to_have_text("step 10 of 20")
    shot(page, "first-actions-job-running")

    result = ModelVersion.objects.create(
        project=project, name="tiny-sft-2", parent=trained["base"], adapter_path="/x", origin="sft"
    )
    TrainingJob.objects.filter(pk=job.pk).update(
        status="succeeded",
        step=20,
        result_version=result,
        message="Done: tiny-sft-2 registered.",
        finished_at=now(),
    )
    expect(page.locator("#job-outcome")).to_have_text("Finished: the job succeeded.", timeout=8000)
    expect(page.locator("#chart-note")).to_have_text("Finished: the job succeeded.", timeout=8000)
    expect(page.locator("#job-result")).to_contain_text("tiny-sft-2")
    next_dpo = page.locator("#next-dpo")
    expect(next_dpo).to_have_text("Train DPO on this model →")
    assert next_dpo.get_attribute("href").endswith(f"?stage=dpo&base={result.pk}")
    assert page.locator("#next-eval").get_attribute("href").endswith(f"?model_version={result.pk}")
    assert page.evaluate("window.__notReloaded") is True  # all of it without a reload
    assert page.locator("#job-status[hx-trigger]").count() == 0  # polling stopped
    shot(page, "first-actions-job-succeeded")
    page.set_viewport_size({"width": 1024, "height": 768})
    shot(page, "first-actions-job-succeeded-1024")

    lead, _ = login(browser, live_server, "lead", "pw-lead")
    lead.goto(f"{live_server.url}/p/{project.slug}/training/{job.pk}/")
    assert lead.locator("#next-dpo").count() == 0
    lead.goto(f"{live_server.url}/p/{project.slug}/training/judges/")
    assert lead.get_by_role("link", name="Train a judge", exact=True).count() == 0
    page.goto(f"{live_server.url}/p/{project.slug}/training/judges/")
    assert page.get_by_role("link", name="Train a judge", exact=True).count() == 1
    assert members[Role.LEAD].username == "lead"
    lead.context.close()
    page.context.close()


def test_the_online_run_page_redraws_its_rounds_chart_and_set_up_without_a_reload(
    browser, live_server, insecure_cookies, project, members
):
    from training.models import OnlineRound, OnlineRun

    from ..test_eval_support import crafted_run, make_suite

    suite = make_suite(project, n=8)
    start = ModelVersion.objects.create(project=project, name="start", origin="sft")
    before, after = (
        crafted_run(project, suite, start, {1, 2}),
        crafted_run(project, suite, start, {1, 2, 3, 4}),
    )
    run = OnlineRun.objects.create(
        project=project, name="live", start_version=start, eval_suite=suite, rounds=1, status="queued"
    )
    page, _ = login(browser, live_server, "admin", "pw-admin")
    page.goto(f"{live_server.url}/p/{project.slug}/training/online/{run.pk}/")
    page.evaluate("window.__notReloaded = true")
    points = "() => Chart.getChart(document.getElementById('rounds-chart')).data.datasets[0].data.length"
    assert page.evaluate(points) == 0
    OnlineRun.objects.filter(pk=run.pk).update(
        status="running", attempts=1, worker="host:5", heartbeat_at=now()
    )
    OnlineRound.objects.create(
        run=run,
        number=1,
        policy=start,
        status="done",
        baseline_run=before,
        eval_run=after,
        gate={"passed": True},
    )
    page.wait_for_function(f"({points})() === 2", timeout=10000)
    expect(page.locator("#online-worker")).to_have_text("host:5")
    expect(page.locator("#online-attempts")).to_have_text("1")
    accuracy = "() => Chart.getChart(document.getElementById('rounds-chart')).data.datasets[0].data[1].y"
    assert page.evaluate(accuracy) == 0.5  # round 1: 4 of 8 right
    assert page.evaluate("window.__notReloaded") is True
    page.context.close()


# --- the job chart: only this job's series, each on an axis named after it -------------------------------

CHART = "Chart.getChart(document.getElementById('loss-chart'))"
# each drawn series' label -> the title of the axis it is drawn on; the x axis' bounds; the legend's entries
CHART_FACTS = f"""() => {{
  const c = {CHART};
  if (!c) return null;
  const on = {{}};
  const title = (s) => s.options.title.text;
  c.data.datasets.forEach((d, i) => {{
    if (c.isDatasetVisible(i)) on[d.label] = title(c.scales[d.yAxisID]);
  }});
  const axes = Object.values(c.scales).filter((s) => s.axis === "y" && s._isVisible()).map(title);
  return {{ on, axes, legend: c.legend.legendItems.map((i) => i.text), xMax: c.scales.x.max,
    accuracyMax: c.scales.yAccuracy.max, tension: c.data.datasets.map((d) => d.tension),
    points: c.data.datasets.map((d) => d.pointStyle), points_n: c.data.datasets.map((d) => d.data.length) }};
}}"""


def test_a_queued_job_says_no_steps_yet_then_charts_sft_with_the_learning_rate_on_its_own_axis(
    browser, live_server, insecure_cookies, project, members, trained, shot
):
    from training.models import MetricPoint

    job = TrainingJob.objects.create(
        project=project,
        name="chart",
        stage="sft",
        base_version=trained["base"],
        train_snapshot=trained["sft"],
        params={"save_steps": 10},
    )
    page, _ = login(browser, live_server, "admin", "pw-admin")
    page.goto(f"{live_server.url}/p/{project.slug}/training/{job.pk}/")
    page.evaluate("window.__notReloaded = true")
    expect(page.locator("#chart-empty")).to_have_text("No steps logged yet.")
    expect(page.locator("#chart-box")).to_be_hidden()
    expect(page.locator("#job-log-empty")).to_have_text("No log yet.")
    assert page.locator("pre.log").count() == 0  # no empty dark box
    assert page.evaluate(f"() => {CHART} === undefined")  # no empty 0-1 chart

    TrainingJob.objects.filter(pk=job.pk).update(status="running", step=6, max_steps=15, heartbeat_at=now())
    for step in (2, 4, 6):
        MetricPoint.objects.create(
            job=job, step=step, values={"loss": 1 / step, "learning_rate": 3e-3 * (1 - step / 15)}
        )
    page.wait_for_function(f"() => {CHART} && {CHART}.data.datasets[0].data.length === 3", timeout=10000)
    expect(page.locator("#chart-empty")).to_be_hidden()
    facts = page.evaluate(CHART_FACTS)
    assert facts["on"] == {"loss": "loss / margin", "learning rate": "learning rate"}
    assert facts["legend"] == ["loss", "learning rate"]  # no struck-through DPO entries
    assert sorted(facts["axes"]) == ["learning rate", "loss / margin"]  # no "accuracy" axis on an SFT job
    assert facts["xMax"] == 15  # the job's max_steps, not a rounded-up 16
    assert set(facts["tension"]) == {0} and len(set(facts["points"])) == 4  # straight; shapes, not colours
    shot(page, "first-actions-chart-sft-running")

    TrainingJob.objects.filter(pk=job.pk).update(status="succeeded", step=15, finished_at=now())
    MetricPoint.objects.create(job=job, step=15, values={"loss": 0.05, "learning_rate": 0.0})
    expect(page.locator("#chart-note")).to_have_text("Finished: the job succeeded.", timeout=8000)
    assert page.evaluate(CHART_FACTS)["points_n"][0] == 4
    assert page.evaluate("window.__notReloaded") is True
    page.context.close()


def test_a_dpo_chart_keeps_reward_accuracy_of_one_inside_its_own_axis(
    browser, live_server, insecure_cookies, project, members, trained, shot
):
    from evaluation.models import EvalRun
    from evaluation.suites import suite_from_demo
    from training.models import MetricPoint

    result = ModelVersion.objects.create(
        project=project, name="tiny-dpo", parent=trained["sft_model"], adapter_path="/x", origin="dpo"
    )
    job = TrainingJob.objects.create(
        project=project,
        name="dpo chart",
        stage="dpo",
        base_version=trained["sft_model"],
        train_snapshot=trained["dpo"],
        params={"save_steps": 10},
        status="succeeded",
        step=15,
        max_steps=15,
        finished_at=now(),
        result_version=result,
    )
    suite, _ = suite_from_demo(project, "demo", n=3)
    run = EvalRun.objects.create(project=project, suite=suite, model_version=result, status="running")
    for step in (2, 4, 6, 8, 10, 12, 14, 15):
        MetricPoint.objects.create(
            job=job,
            step=step,
            values={
                "loss": 0.7 / step,
                "rewards/margins": step / 3,
                "rewards/accuracies": 1.0 if step > 4 else 0.5,
                "learning_rate": 2e-3 * (1 - step / 15),
            },
        )
    page, _ = login(browser, live_server, "admin", "pw-admin")
    page.goto(f"{live_server.url}/p/{project.slug}/training/{job.pk}/")
    page.wait_for_function(f"() => {CHART} && {CHART}.data.datasets[2].data.length === 8", timeout=10000)
    facts = page.evaluate(CHART_FACTS)
    assert facts["on"] == {
        "loss": "loss / margin",
        "reward margin (DPO)": "loss / margin",
        "reward accuracy (DPO)": "reward accuracy",
        "learning rate": "learning rate",
    }
    assert facts["legend"] == ["loss", "reward margin (DPO)", "reward accuracy (DPO)", "learning rate"]
    assert facts["accuracyMax"] > 1  # a line at 1.0 is drawn whole, below the chart's edge
    assert facts["xMax"] == 15
    # the automatic evaluation of the DPO model is running: the page leads there, not to a second run
    expect(page.locator("#next-steps a.primary")).to_have_text("See its evaluation →")
    assert page.get_attribute("#next-eval-run", "href").endswith(f"/eval/runs/{run.pk}/")
    expect(page.locator("#next-eval")).to_have_text("Evaluate on another suite")
    assert page.locator("#next-dpo").count() == 0
    shot(page, "first-actions-chart-dpo")
    page.context.close()


def test_the_hyper_parameter_boxes_show_the_chosen_presets_values(
    browser, live_server, insecure_cookies, project, members, trained, shot
):
    from training.finetune.params import PRESETS

    page, _ = login(browser, live_server, "admin", "pw-admin")
    page.goto(f"{live_server.url}/p/{project.slug}/training/new/")
    shot(page, "first-actions-job-form-placeholders")

    def placeholder(name):
        return page.get_attribute(f"#job-form input[name={name}]", "placeholder")

    other = next(p for p in PRESETS if p != default_preset())
    assert placeholder("learning_rate") == f"{PRESETS[default_preset()]['sft']['learning_rate']:g}"
    assert placeholder("beta") == "DPO only"
    page.select_option("#job-form select[name=preset]", other)
    assert placeholder("learning_rate") == f"{PRESETS[other]['sft']['learning_rate']:g}"
    page.check("#job-form input[name=stage][value=dpo]")
    assert placeholder("learning_rate") == f"{PRESETS[other]['dpo']['learning_rate']:g}"
    assert placeholder("beta") == f"{PRESETS[other]['dpo']['beta']:g}"
    assert page.input_value("#job-form input[name=learning_rate]") == ""  # still the preset's
    page.context.close()
