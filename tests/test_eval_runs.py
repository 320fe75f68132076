"""Eval runs from uploaded outputs: per-case results equal score_case, the summary equals summarize;
a killed worker resumes, a duplicate delivery stops, cancel keeps what was done, a broker outage is
reported on the run; automatic runs after training."""

import io
import json
from types import SimpleNamespace
from unittest import mock

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from evaluation import runner
from evaluation.models import EvalResult, EvalRun, EvalSettings
from jobs import lifecycle
from toolcalls.score import score_case, summarize

from .test_eval_support import crafted_run, make_suite, model, outputs_file, right_output

pytestmark = pytest.mark.django_db


def test_an_outputs_run_stores_every_case_scored_exactly_like_score_case(project):
    suite = make_suite(project, 12)
    mv = model(project, "agent-v1")
    overrides = {
        5: "<think>let me check</think>\n" + right_output(suite.cases.get(position=5)) + " Done!",
        6: "<tool_call>{broken",
        7: "",
    }
    run = crafted_run(project, suite, mv, right={1, 2, 3, 4, 8}, overrides=overrides)
    results = {r.case.position: r for r in EvalResult.objects.filter(run=run).select_related("case")}
    assert len(results) == 12 and run.cases_done == 12
    scores, cats, depths = [], [], []
    for case in suite.cases.order_by("position"):
        r = results[case.position]
        expected = score_case(case.expected, r.output, case.tools, stopped_at_limit=None)
        assert r.score == json.loads(json.dumps(expected))
        assert (r.tool_call_accuracy, r.response_quality) == (
            expected["tool_call_accuracy"],
            expected["response_quality"],
        )
        scores.append(expected)
        cats.append(case.categories)
        depths.append(case.turn_depth)
    assert results[5].score["defects"]["fabricated_tool_result"] == 1  # text after the call
    assert (
        results[6].score["defects"]["malformed_call"] == 1 and results[7].score["defects"]["too_short"] == 1
    )
    want = json.loads(json.dumps(summarize(scores, cats, depths)))
    for key in (
        "tool_call_accuracy",
        "tool_name_accuracy",
        "tool_args_accuracy",
        "response_quality",
        "defects",
        "per_call",
        "by_category",
        "by_turn_depth",
        "false_call_rate",
        "missed_call_rate",
    ):
        assert run.summary[key] == want[key], key
    assert run.summary["tool_call_accuracy"]["count"] == 6  # 1-5 right (5's call is right), 6-12 wrong
    assert "12 cases scored" in run.message


def test_outputs_must_cover_every_case_exactly_once(project):
    suite = make_suite(project, 3)
    mv = model(project, "agent-v1")
    bad = b'{"id": "case-1", "output": "x"}\n{"id": "case-1", "output": "y"}\n{"id": "nope", "output": "z"}\n'
    from django.core.files.uploadedfile import SimpleUploadedFile

    with pytest.raises(ValidationError) as exc:
        runner.create_run(
            project, suite, mv, source="outputs", outputs=SimpleUploadedFile("o.jsonl", bad), start=False
        )
    text = " ".join(exc.value.message_dict["outputs"])
    assert "line 2" in text and "second output" in text and "'nope' is not a case" in text
    with pytest.raises(ValidationError) as exc:
        runner.create_run(
            project,
            suite,
            mv,
            source="outputs",
            outputs=SimpleUploadedFile("o.jsonl", b'{"id": "case-1", "output": "x"}\n'),
            start=False,
        )
    assert "2 case(s) have no output: case-2, case-3" in " ".join(exc.value.message_dict["outputs"])
    assert not EvalRun.objects.exists()


def test_a_local_run_needs_a_model_folder_and_settings_are_checked(project):
    suite = make_suite(project, 2)
    imported = model(project, "imported")
    with pytest.raises(ValidationError) as exc:
        runner.create_run(project, suite, imported, start=False)
    assert "no model folder" in str(exc.value)
    local = model(project, "local", path="/models/x")
    with pytest.raises(ValidationError) as exc:
        runner.create_run(project, suite, local, settings={"batch_size": 0, "device": "tpu"}, start=False)
    assert set(exc.value.message_dict) == {"batch_size", "device"}
    with pytest.raises(ValidationError) as exc:
        runner.create_run(
            project, suite, local, source="endpoint", settings={"base_url": "ftp://x"}, start=False
        )
    assert set(exc.value.message_dict) == {"base_url", "model"}


def test_a_killed_worker_resumes_after_the_last_committed_batch(project):
    suite = make_suite(project, 6)
    mv = model(project, "agent-v1")
    run = runner.create_run(
        project, suite, mv, source="outputs", outputs=outputs_file(suite, {1, 2, 3}), start=False
    )
    # first attempt: claims, commits two cases, dies (no heartbeat since)
    attempt = runner.Attempt(lifecycle.claim(EvalRun, run.pk))
    first_two = list(suite.cases.order_by("position")[:2])
    attempt.commit([runner.result_row(run.pk, c, right_output(c), None) for c in first_two])
    assert EvalRun.objects.get(pk=run.pk).cases_done == 2
    assert runner.run_eval(run.pk).status == "running"  # a duplicate delivery while it lives does nothing
    EvalRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timezone.timedelta(hours=1))
    # redelivery: a new attempt takes over and scores only the rest
    with mock.patch("evaluation.runner.result_row", wraps=runner.result_row) as rows:
        run = runner.run_eval(run.pk)
    assert rows.call_count == 4
    assert run.status == "done" and run.attempts == 2 and EvalResult.objects.filter(run=run).count() == 6
    # the old attempt wakes up: its token is stale, it writes nothing
    with pytest.raises(runner.RunConflict):
        attempt.commit([runner.result_row(run.pk, first_two[0], "late", None)])
    assert runner.run_eval(run.pk).status == "done"  # finished runs are left alone


def test_cancel_keeps_the_results_so_far(project):
    suite = make_suite(project, 4)
    mv = model(project, "agent-v1")
    queued = runner.create_run(
        project, suite, mv, source="outputs", outputs=outputs_file(suite, set()), start=False
    )
    lifecycle.cancel(queued)
    assert queued.status == "cancelled" and runner.run_eval(queued.pk).status == "cancelled"

    run = runner.create_run(
        project, suite, mv, source="outputs", outputs=outputs_file(suite, {1}), start=False
    )
    real_commit = runner.Attempt.commit

    def commit_then_cancel(self, rows):  # an admin presses Cancel once the first case is committed
        real_commit(self, rows[:1])
        lifecycle.cancel(EvalRun.objects.get(pk=run.pk))
        real_commit(self, rows[1:])

    with mock.patch.object(runner.Attempt, "commit", commit_then_cancel):
        run = runner.run_eval(run.pk)
    assert run.status == "cancelled" and "1 of 4" in run.message
    assert run.summary["partial"] and run.summary["n"] == 1
    lifecycle.resume(run)
    assert run.status == "queued" and not run.cancel_requested


def test_a_broker_outage_is_reported_on_the_run(project, django_capture_on_commit_callbacks):
    suite = make_suite(project, 2)
    mv = model(project, "agent-v1")
    with mock.patch("evaluation.tasks.run_eval.delay", side_effect=BrokerError("connection refused")):
        with django_capture_on_commit_callbacks(execute=True):
            run = runner.create_run(project, suite, mv, source="outputs", outputs=outputs_file(suite, set()))
    run.refresh_from_db()
    assert (
        run.status == "failed" and run.waiting_for_queue and "Could not reach the task queue" in run.message
    )


def _succeeded_job(project, version, evaluate_after, user=None):
    """A finished training job row, as the trainer hands it to its after-training subscribers."""

    return SimpleNamespace(pk=7, project=project, evaluate_after=evaluate_after, created_by=user)


def test_after_training_the_hook_queues_a_run_only_when_asked(
    project, members, django_capture_on_commit_callbacks
):
    from training import hooks

    assert runner.evaluate_after_training in hooks._after_training  # evaluation subscribed at start-up
    mv = model(project, "sft-1", origin="sft", path="/models/base", adapter_path="/models/sft-1")
    cfg = EvalSettings.for_project(project)
    cfg.auto_eval_after_training = False
    cfg.save()
    assert (
        hooks.version_trained(_succeeded_job(project, mv, evaluate_after=False), mv) == []
    )  # off, not asked
    assert hooks.version_trained(_succeeded_job(project, mv, evaluate_after=True), mv) == [
        "no evaluation run: the project has no eval suite yet"
    ]
    suite = make_suite(project, 2)
    cfg.default_suite = suite
    cfg.auto_eval_after_training = True  # the project setting alone is enough
    cfg.save()
    with mock.patch("evaluation.tasks.run_eval.delay") as delay:
        with django_capture_on_commit_callbacks(execute=True):
            lines = hooks.version_trained(_succeeded_job(project, mv, False, members["admin"]), mv)
    run = EvalRun.objects.get(model_version=mv)
    delay.assert_called_once_with(run.pk)
    assert lines == [f"evaluation run {run.pk} queued on suite {suite.name}"]
    assert run.trigger == "training" and run.suite == suite and run.source == "local"
    assert run.created_by == members["admin"] and "training job 7" in run.note


def test_a_failing_subscriber_is_logged_not_raised(project):
    from training import hooks

    def broken(job, version):
        raise RuntimeError("boom")

    hooks.on_version_trained(broken)
    try:
        assert (
            hooks.version_trained(SimpleNamespace(), None)[-1] == "could not run broken: RuntimeError: boom"
        )
    finally:
        hooks._after_training.remove(broken)


def test_management_commands_build_a_suite_and_score_an_outputs_file(project, tmp_path):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    from .test_eval_support import gold_record

    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps(gold_record(i)) + "\n" for i in range(1, 5)))
    out = io.StringIO()
    call_command("make_eval_suite", project.slug, "cli", "--gold", str(gold), "--default", stdout=out)
    assert "cli v1 created: 4 cases" in out.getvalue()
    suite = EvalSettings.for_project(project).default_suite
    model(project, "agent-v1")
    outputs = tmp_path / "outputs.jsonl"
    outputs.write_bytes(outputs_file(suite, {1, 2}).read())
    out = io.StringIO()
    call_command("run_eval", project.slug, "agent-v1", "--outputs", str(outputs), "--now", stdout=out)
    run = EvalRun.objects.get()
    assert (
        f"run {run.pk}: done" in out.getvalue()
        and '"count": 2' in out.getvalue()
        and run.trigger == "command"
    )
    with pytest.raises(CommandError, match="no model version"):
        call_command("run_eval", project.slug, "nope", "--now")
