"""Versions side by side across suites on the evaluation page, and the knowledge metric (gold `facts`)."""

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from evaluation import runner
from evaluation.models import EvalRun
from evaluation.suites import create_suite
from toolcalls.score import score_case, summarize

from .test_eval_support import crafted_run, make_suite, model

pytestmark = pytest.mark.django_db

NEW = "You can return any item within 60 days of delivery."
OLD = "You can return any item within 30 days of delivery."


def policy_suite(project, n=4):
    records = [
        (
            i,
            {
                "id": f"policy-{i}",
                "messages": [{"role": "user", "content": f"What is your returns policy? ({i})"}],
                "expected": {"role": "assistant", "content": NEW, "facts": ["60 days"]},
            },
        )
        for i in range(1, n + 1)
    ]
    return create_suite(project, "policy knowledge", records, source="gold")[0]


def answered(project, suite, mv, right: int):
    from django.core.files.uploadedfile import SimpleUploadedFile

    lines = [
        json.dumps({"id": c.external_id, "output": NEW if c.position <= right else OLD})
        for c in suite.cases.order_by("position")
    ]
    run = runner.create_run(
        project,
        suite,
        mv,
        source=EvalRun.Source.OUTPUTS,
        outputs=SimpleUploadedFile("o.jsonl", ("\n".join(lines) + "\n").encode()),
        start=False,
    )
    run = runner.run_eval(run.pk)
    assert run.status == EvalRun.State.DONE, run.message
    return run


def test_knowledge_accuracy_counts_only_cases_with_facts():
    expected = {"role": "assistant", "content": NEW, "facts": ["60 days", "full refund"]}
    right = score_case(expected, "Returns: 60  days, for a full refund.", None)  # whitespace is free
    half = score_case(expected, "Returns: 60 days.", None)
    plain = score_case({"role": "assistant", "content": "Hi"}, "Hello there, how can I help?", None)
    assert (right["facts_right"], half["facts_right"], plain["facts_right"]) == (1, 0, None)
    # the answer is still right on tool use: knowledge is a figure of its own
    assert half["tool_call_accuracy"] == 1
    summary = summarize([right, half, plain])
    assert summary["knowledge_accuracy"] == {"n": 2, "count": 1, "value": 0.5, "se": 0.3535533905932738}
    assert summarize([plain])["knowledge_accuracy"]["value"] is None  # no facts: missing, never 0
    # whole words, case free: "160 days" does not state "60 days"
    assert score_case(expected, "Returns within 160 days, a full refund.", None)["facts_right"] == 0
    assert score_case(expected, "Returns within 60 Days, a Full Refund.", None)["facts_right"] == 1


def test_facts_must_be_a_list_of_texts(project):
    from evaluation.suites import SuiteError

    bad = {
        "id": "x",
        "messages": [{"role": "user", "content": "Returns?"}],
        "expected": {"role": "assistant", "content": NEW, "facts": "60 days"},
    }
    with pytest.raises(SuiteError) as err:
        create_suite(project, "bad", [(3, bad)], source="gold")
    assert "line 3" in str(err.value) and "expected.facts" in str(err.value)


def test_home_shows_every_version_on_every_suite_with_knowledge(project, members, client):
    tools_suite = make_suite(project, 8, name="unseen phrasings")
    knowledge = policy_suite(project)
    base = model(project, "base", origin="base")
    sft = model(project, "sft", parent=base, origin="sft")
    crafted_run(project, tools_suite, base, {1, 2})
    crafted_run(project, tools_suite, sft, {1, 2, 3, 5, 6})
    answered(project, knowledge, base, 0)
    answered(project, knowledge, sft, 3)
    client.force_login(members["lead"])
    html = client.get(f"/p/{project.slug}/eval/").content.decode()
    assert 'id="suite-matrix"' in html
    matrix = html[html.index('id="suite-matrix"') : html.index("</table>", html.index('id="suite-matrix"'))]
    assert "unseen phrasings" in matrix and "policy knowledge" in matrix
    assert "knowledge 0.0%" in matrix and "knowledge 75.0%" in matrix
    assert "62.5%" in matrix  # sft, 5 of 8 on the tool suite
    # the run's own report shows the figure too
    run = EvalRun.objects.get(suite=knowledge, model_version=sft)
    report = client.get(f"/p/{project.slug}/eval/runs/{run.pk}/").content.decode()
    assert "knowledge_accuracy" in report and "3 of 4 cases" in report


def test_the_matrix_costs_the_same_queries_for_more_versions(project):
    from evaluation.comparison import suite_matrix

    suites = [make_suite(project, 4, name=f"suite {k}") for k in range(3)]

    def add_versions(names):
        for name in names:
            mv = model(project, name)
            for s in suites:
                crafted_run(project, s, mv, {1})

    add_versions(["v1", "v2"])
    with CaptureQueriesContext(connection) as few:
        assert len(suite_matrix(project).rows) == 2
    add_versions(["v3", "v4", "v5", "v6"])
    with CaptureQueriesContext(connection) as more:
        matrix = suite_matrix(project)
    assert [mv.name for mv, _ in matrix.rows] == ["v1", "v2", "v3", "v4", "v5", "v6"]
    assert all(
        c is not None and c.tool_call_accuracy["value"] == 0.25 for _, cells in matrix.rows for c in cells
    )
    assert len(more.captured_queries) == len(few.captured_queries) == 4
