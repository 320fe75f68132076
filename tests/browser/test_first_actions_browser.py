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
    assert lead.get_by_role("link", name="Train a judge").count() == 0
    page.goto(f"{live_server.url}/p/{project.slug}/training/judges/")
    assert page.get_by_role("link", name="Train a judge").count() == 1
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
