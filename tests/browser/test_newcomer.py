"""A newcomer's first hour in real Chromium, right after `seed_demo`: as admin, an SFT job launched with the
form's defaults succeeds while its page follows it, then a DPO job on top from the job page's link, then an
evaluation run of the result from its link — touching no field but the job names. The jobs run as the
training and eval workers run them (the same functions their Celery tasks call), in a thread beside the
live server; the page is never reloaded by the test."""

import io
import re
import threading
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection
from playwright.sync_api import expect

from annotator.models import ModelVersion, Project
from evaluation.models import EvalRun, EvalSettings
from evaluation.runner import run_eval
from training.finetune.run import run_job
from training.models import DatasetSnapshot, TrainingJob

from ..test_training import tiny_model  # noqa: F401  fixture
from .conftest import login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def demo(settings, tiny_model, tmp_path):  # noqa: F811
    """What `make demo` leaves: the demo model folder under MODEL_DIR and the seeded project."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "demo-base").symlink_to(Path(tiny_model), target_is_directory=True)
    settings.MODEL_DIR = models
    out = io.StringIO()
    call_command("seed_demo", conversations=40, stdout=out)
    project = Project.objects.get(slug="sales-agent")
    # a short answer per case keeps the suite's evaluation quick on the tiny model (a project setting,
    # not a form field: the forms below stay untouched)
    EvalSettings.objects.filter(project=project).update(max_new_tokens=16)
    return project, out.getvalue()


def work(fn, pk) -> threading.Thread:
    """Run a queued job as its worker would, beside the live server."""

    def target():
        try:
            fn(pk)
        finally:
            connection.close()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def launch(page, name: str) -> int:
    page.fill("#job-form input[name=name]", name)
    page.click("#job-form button.primary")
    page.wait_for_url(re.compile(r"/training/\d+/$"))
    return int(page.url.rstrip("/").rsplit("/", 1)[-1])


def test_an_admin_trains_sft_then_dpo_then_evaluates_with_the_defaults(
    browser, live_server, insecure_cookies, demo, shot
):
    project, seeded = demo
    base = ModelVersion.objects.get(project=project, name="demo-base")
    assert base.path and Path(base.path, "config.json").is_file(), seeded
    page, dialogs = login(browser, live_server, "admin", "badcase-admin")
    page.set_viewport_size({"width": 1400, "height": 900})

    # SFT with the form's defaults
    page.goto(f"{live_server.url}/p/{project.slug}/training/new/")
    shot(page, "newcomer-job-form")
    sft_pk = launch(page, "my first sft")
    sft = TrainingJob.objects.get(pk=sft_pk)
    assert (sft.stage, sft.base_version_id) == ("sft", base.pk)
    assert sft.train_snapshot.kind == DatasetSnapshot.Kind.SFT
    worker = work(run_job, sft_pk)
    expect(page.locator("#job-outcome")).to_have_text("Finished: the job succeeded.", timeout=180_000)
    worker.join(60)
    shot(page, "newcomer-sft-succeeded")

    # DPO on top, from the job page's link
    page.click("#next-dpo")
    page.wait_for_url(re.compile(r"/training/new/\?stage=dpo"))
    assert page.is_checked("#job-form input[name=stage][value=dpo]")
    dpo_pk = launch(page, "my first dpo")
    dpo = TrainingJob.objects.get(pk=dpo_pk)
    sft.refresh_from_db()
    assert (dpo.stage, dpo.base_version_id) == ("dpo", sft.result_version_id)
    assert dpo.train_snapshot.kind == DatasetSnapshot.Kind.DPO
    worker = work(run_job, dpo_pk)
    expect(page.locator("#job-outcome")).to_have_text("Finished: the job succeeded.", timeout=180_000)
    worker.join(60)
    dpo.refresh_from_db()

    # an evaluation run of the DPO model, from its link
    page.click("#next-eval")
    page.wait_for_url(re.compile(r"/runs/new/\?model_version="))
    shot(page, "newcomer-eval-form")
    page.click("main form button.primary")
    page.wait_for_url(re.compile(r"/runs/\d+/$"))
    run = EvalRun.objects.get(model_version=dpo.result_version, trigger=EvalRun.Trigger.MANUAL)
    worker = work(run_eval, run.pk)
    expect(page.locator("#run-outcome")).to_have_text("Finished: the run is complete.", timeout=180_000)
    worker.join(60)
    run.refresh_from_db()
    assert run.status == "done" and run.cases_done == run.cases_total > 0
    expect(page.locator("#defects")).to_be_visible(timeout=30_000)  # the report, once the run is done
    shot(page, "newcomer-eval-report")
    page.set_viewport_size({"width": 1024, "height": 768})
    shot(page, "newcomer-eval-report-1024")
    assert not dialogs
    page.context.close()
