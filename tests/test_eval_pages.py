"""Evaluation pages and API: who sees and does what, and what the report shows."""

import json

import pytest
import yaml
from django.core.files.uploadedfile import SimpleUploadedFile
from openapi_spec_validator import validate

from evaluation.models import EvalRun, EvalSettings, EvalSuite

from .test_eval_support import crafted_run, gold_record, make_suite, model, outputs_file

pytestmark = pytest.mark.django_db


@pytest.fixture
def finished(project):
    suite = make_suite(project, 12)
    base = model(project, "base", origin="base")
    sft = model(project, "sft", parent=base, origin="sft")
    run_base = crafted_run(project, suite, base, {1, 2, 3})
    run_sft = crafted_run(project, suite, sft, {1, 2, 3, 5, 6, 7, 9}, overrides={10: "OK."})
    return suite, run_base, run_sft


def test_roles(project, members, client, finished):
    suite, run_base, _ = finished
    base = f"/p/{project.slug}/eval/"
    client.force_login(members["annotator"])
    assert client.get(base).status_code == 403
    assert client.get(f"{base}runs/{run_base.pk}/").status_code == 403
    client.force_login(members["outsider"])
    assert client.get(base).status_code == 404
    client.force_login(members["lead"])
    for url in (
        base,
        f"{base}runs/{run_base.pk}/",
        f"{base}suites/{suite.pk}/",
        f"{base}runs/{run_base.pk}/cases/",
    ):
        assert client.get(url).status_code == 200, url
    for url in (f"{base}runs/new/", f"{base}suites/new/", f"{base}settings/"):
        assert client.get(url).status_code == 403, url
    assert client.post(f"{base}runs/{run_base.pk}/send-to-queue/", {"scope": "failed"}).status_code == 403


def test_report_shows_metrics_with_errors_defects_breakdowns_worst_cases_and_lineage(
    project, members, client, finished
):
    suite, run_base, run_sft = finished
    client.force_login(members["lead"])
    html = client.get(f"/p/{project.slug}/eval/runs/{run_sft.pk}/").content.decode()
    assert "tool_call_accuracy" in html and '58.3% <span class="se">± 14.2</span>' in html  # 7/12
    assert 'id="defects"' in html and "too_short" in html
    assert 'id="by-category"' in html and "Tool not called" in html and 'id="by-depth"' in html
    assert 'id="worst"' in html and "case-4" in html
    assert 'id="lineage"' in html and 'id="lineage-data"' in html and "vendor/chart-4.6.1.umd.min.js" in html
    assert "Send to the annotator queue" not in html  # leads read; admins act
    client.force_login(members["admin"])
    assert (
        "Send to the annotator queue"
        in client.get(f"/p/{project.slug}/eval/runs/{run_sft.pk}/").content.decode()
    )


def test_case_page_shows_expected_and_actual_side_by_side(project, members, client, finished):
    _, _, run_sft = finished
    case = run_sft.suite.cases.get(position=11)
    client.force_login(members["lead"])
    html = client.get(f"/p/{project.slug}/eval/runs/{run_sft.pk}/cases/{case.pk}/").content.decode()
    assert "expected</span> gold turn" in html and "actual</span> sft" in html
    assert "a-wrong" in html and "A-11" in html  # the model's argument and the gold one
    assert "✗ wrong" in html and 'rel="next"' in html
    assert 'id="call-diff"' in html and "&quot;A-11&quot;" in html and "&quot;a-wrong&quot;" in html


def test_filters_and_export(project, members, client, finished):
    _, _, run_sft = finished
    client.force_login(members["lead"])
    url = f"/p/{project.slug}/eval/runs/{run_sft.pk}/cases/"
    assert "5 cases" in client.get(url + "?show=failed").content.decode()
    assert "1 case" in client.get(url + "?show=all&defect=too_short").content.decode()
    assert "3 cases" in client.get(url + "?show=all&category=Greeting").content.decode()
    lines = b"".join(client.get(f"/p/{project.slug}/eval/runs/{run_sft.pk}/results.jsonl").streaming_content)
    rows = [json.loads(x) for x in lines.decode().splitlines()]
    assert len(rows) == 13 and rows[-1]["summary"]["n"] == 12 and rows[0]["tool_call_accuracy"] == 1


def test_compare_page(project, members, client, finished):
    _, run_base, run_sft = finished
    client.force_login(members["lead"])
    html = client.get(
        f"/p/{project.slug}/eval/compare/?runs={run_sft.pk}&runs={run_base.pk}"
    ).content.decode()
    assert "Baseline: <strong>base</strong>" in html and "+33.3 pts" in html
    assert (
        "4 fixed, 0 broken" in html
        and "McNemar p = 0.125 (exact; 4 fixed, 0 broken)" in html
        and "within noise" in html
    )
    secondary = html.split('id="compare-secondary"')[1].split("</table>")[0]
    missed = secondary.split("<code>missed_call_rate</code>")[1].split("</tr>")[0]
    assert '<span class="delta-down">▲ +11.1 pts' in missed  # more missed calls is bad news, drawn as such
    html = client.get(f"/p/{project.slug}/eval/compare/?runs={run_sft.pk}").content.decode()
    assert "Cannot compare" in html


def test_compare_with_nothing_picked_opens_the_newest_run_against_its_lineage(project, members, client):
    client.force_login(members["lead"])
    url = f"/p/{project.slug}/eval/compare/"
    html = client.get(url).content.decode()  # no run yet: a way forward, not an error
    assert 'id="compare-empty"' in html and "Cannot compare" not in html
    suite, other_suite = make_suite(project, 12), make_suite(project, 12, name="other")
    base = model(project, "base", origin="base")
    sft = model(project, "sft", parent=base, origin="sft")
    dpo = model(project, "dpo", parent=sft, origin="dpo")
    side = model(project, "side", origin="base")
    run_base = crafted_run(project, suite, base, {1, 2, 3})
    assert 'id="compare-empty"' in client.get(url).content.decode()  # one run: still nothing to compare
    run_side = crafted_run(project, suite, side, {1})
    assert client.get(url)["Location"] == f"{url}?runs={run_side.pk}&runs={run_base.pk}"  # no lineage
    crafted_run(project, suite, sft, {1, 2})  # an older SFT run: the newest one is taken
    run_sft = crafted_run(project, suite, sft, {1, 2, 3, 5})
    run_dpo = crafted_run(project, suite, dpo, {1, 2, 3, 5, 6})
    crafted_run(project, other_suite, dpo, {1})  # newer, but not on the default suite
    EvalSettings.objects.update_or_create(project=project, defaults={"default_suite": suite})
    res = client.get(url)
    assert res["Location"] == f"{url}?runs={run_dpo.pk}&runs={run_base.pk}&runs={run_sft.pk}"
    html = client.get(res["Location"]).content.decode()
    assert "Baseline: <strong>base</strong>" in html and "runs in lineage order" in html


def test_compare_with_nothing_picked_fits_a_long_lineage_in_one_comparison(project, members, client):
    from evaluation.comparison import MAX_COMPARED_RUNS

    suite = make_suite(project, 4)
    EvalSettings.objects.update_or_create(project=project, defaults={"default_suite": suite})
    parent, runs = None, []
    for i in range(MAX_COMPARED_RUNS + 3):  # base, SFT, DPO and online rounds, each evaluated
        parent = model(project, f"v{i}", parent=parent, origin="base" if parent is None else "dpo")
        runs.append(crafted_run(project, suite, parent, {1, 2}))
    client.force_login(members["lead"])
    res = client.get(f"/p/{project.slug}/eval/compare/")
    picked = [int(p) for p in res["Location"].split("?")[1].replace("runs=", "").split("&")]
    assert len(picked) == MAX_COMPARED_RUNS
    assert picked[:2] == [runs[-1].pk, runs[0].pk]  # the newest, the base, then the nearest ancestors
    assert picked[2:] == [r.pk for r in runs[-MAX_COMPARED_RUNS + 1 : -1]]
    assert client.get(res["Location"]).status_code == 200


def test_progress_fragment_reloads_the_page_when_the_run_ends(project, members, client, finished):
    _, run_base, _ = finished
    client.force_login(members["lead"])
    res = client.get(f"/p/{project.slug}/eval/runs/{run_base.pk}/?part=progress", HTTP_HX_REQUEST="true")
    assert res["HX-Refresh"] == "true"


def test_admin_builds_a_suite_and_starts_runs_from_the_pages(project, members, client):
    client.force_login(members["admin"])
    bad = SimpleUploadedFile("g.jsonl", (json.dumps(gold_record(1)) + "\n{oops\n").encode())
    html = client.post(
        f"/p/{project.slug}/eval/suites/new/", {"name": "gold", "source": "gold", "file": bad}
    ).content.decode()
    assert "The suite was not created" in html and "invalid JSON" in html
    good = SimpleUploadedFile(
        "g.jsonl", "".join(json.dumps(gold_record(i)) + "\n" for i in range(1, 4)).encode()
    )
    res = client.post(f"/p/{project.slug}/eval/suites/new/", {"name": "gold", "source": "gold", "file": good})
    suite = EvalSuite.objects.get(name="gold")
    assert res.status_code == 302 and res["Location"].endswith(f"/eval/suites/{suite.pk}/")
    mv = model(project, "agent-v1")
    res = client.post(
        f"/p/{project.slug}/eval/runs/new/",
        {"suite": suite.pk, "model_version": mv.pk, "source": "outputs", "outputs": outputs_file(suite, {1})},
    )
    run = EvalRun.objects.get()
    assert res.status_code == 302 and run.status == "queued" and run.created_by == members["admin"]
    html = client.post(
        f"/p/{project.slug}/eval/runs/new/", {"suite": suite.pk, "model_version": mv.pk, "source": "local"}
    ).content.decode()
    assert "no model folder" in html
    res = client.post(
        f"/p/{project.slug}/eval/settings/",
        {
            "default_suite": suite.pk,
            "quality_margin": 3,  # points
            "perplexity_margin": 0.1,
            "max_new_tokens": 128,
            "batch_size": 8,
            "auto_eval_after_training": "on",
        },
    )
    cfg = EvalSettings.for_project(project)
    assert res.status_code == 302 and cfg.default_suite == suite and cfg.auto_eval_after_training
    assert cfg.quality_margin == pytest.approx(0.03)  # stored as a fraction, as the API gives it
    page = client.get(f"/p/{project.slug}/eval/settings/").content.decode()
    assert 'name="quality_margin" value="3.0"' in page and "Quality margin (points)" in page
    html = client.post(
        f"/p/{project.slug}/eval/settings/", {"default_suite": suite.pk, "quality_margin": 300}
    ).content.decode()
    assert "less than or equal to 100" in html and EvalSettings.for_project(project).quality_margin == (
        pytest.approx(0.03)
    )


def test_admin_sends_failures_to_the_queue_from_the_report(project, members, client, finished):
    _, _, run_sft = finished
    client.force_login(members["admin"])
    url = f"/p/{project.slug}/eval/runs/{run_sft.pk}/send-to-queue/"
    html = client.post(url, {"scope": "failed", "priority": 10}, follow=True).content.decode()
    assert "5 badcases sent to the annotator queue" in html
    html = client.post(url, {"scope": "failed", "priority": 10}, follow=True).content.decode()
    assert "Nothing new to send: 5 cases were sent before" in html


def test_api_suites_runs_results_settings(project, members, api):
    admin, lead = api(members["admin"]), api(members["lead"])
    body = {
        "project": project.slug,
        "name": "inline",
        "source": "gold",
        "cases": [gold_record(1), gold_record(2)],
    }
    assert lead.post("/api/eval-suites/", body, format="json").status_code == 403
    res = admin.post("/api/eval-suites/", body, format="json")
    assert res.status_code == 201 and res.json()["case_count"] == 2 and res.json()["version"] == 1
    assert admin.post("/api/eval-suites/", body, format="json").status_code == 200  # unchanged: same suite
    bad = admin.post("/api/eval-suites/", {**body, "cases": [{"id": "x"}]}, format="json")
    assert bad.status_code == 400 and bad.json()["errors"][0]["line"] == 1
    suite_id = res.json()["id"]
    assert [
        s["id"] for s in lead.get(f"/api/eval-suites/?project__slug={project.slug}").json()["results"]
    ] == [suite_id]
    assert api(members["annotator"]).get("/api/eval-suites/").json()["results"] == []
    assert len(lead.get(f"/api/eval-suites/{suite_id}/cases/").json()["results"]) == 2

    mv = model(project, "agent-v1")
    suite = EvalSuite.objects.get(pk=suite_id)
    res = admin.post(
        "/api/eval-runs/",
        {
            "project": project.slug,
            "suite": suite_id,
            "model_version": mv.pk,
            "source": "outputs",
            "outputs": outputs_file(suite, {1}),
        },
        format="multipart",
    )
    assert res.status_code == 201, res.content
    run_id = res.json()["id"]
    from evaluation import runner

    runner.run_eval(run_id)
    run = lead.get(f"/api/eval-runs/{run_id}/").json()
    assert run["status"] == "done" and run["headline"]["tool_call_accuracy"]["count"] == 1
    assert "api_key" not in run
    failed = lead.get(f"/api/eval-runs/{run_id}/results/?show=failed").json()["results"]
    assert [r["external_id"] for r in failed] == ["case-2"] and failed[0]["parsed"]["calls"]
    assert lead.post(f"/api/eval-runs/{run_id}/cancel/").status_code == 403

    assert lead.get(f"/api/eval-settings/{project.slug}/").json()["quality_margin"] == 0.02
    assert (
        lead.patch(f"/api/eval-settings/{project.slug}/", {"quality_margin": 0.05}, format="json").status_code
        == 403
    )
    res = admin.patch(
        f"/api/eval-settings/{project.slug}/",
        {"quality_margin": 0.05, "default_suite": suite_id},
        format="json",
    )
    assert res.status_code == 200 and res.json()["default_suite"] == suite_id
    assert (
        admin.patch(f"/api/eval-settings/{project.slug}/", {"quality_margin": 3}, format="json").status_code
        == 400
    )
    assert api(members["annotator"]).get(f"/api/eval-settings/{project.slug}/").status_code == 403


def test_openapi_schema_covers_the_evaluation_api(client, make_user):
    client.force_login(make_user("reader"))
    schema = yaml.safe_load(client.get("/api/schema/").content)
    validate(schema)
    for path in (
        "/api/eval-suites/",
        "/api/eval-runs/",
        "/api/eval-runs/{id}/results/",
        "/api/eval-runs/{id}/send-to-queue/",
        "/api/eval-runs/compare/",
        "/api/promotions/check/",
        "/api/promotions/promote/",
        "/api/eval-settings/{slug}/",
    ):
        assert path in schema["paths"], path


def test_django_admin_pages(client, finished, django_user_model):
    _, run_base, _ = finished
    client.force_login(django_user_model.objects.create_superuser("root", "r@x.org", "pw-root-123"))
    for name in (
        "evalsuite",
        "evalcase",
        "evalrun",
        "evalresult",
        "evalbadcase",
        "evalsettings",
        "promotiondecision",
    ):
        assert client.get(f"/admin/evaluation/{name}/").status_code == 200, name
    html = client.get(f"/admin/evaluation/evalrun/{run_base.pk}/change/").content.decode()
    assert "api_key" not in html


def test_call_diff_reads_parallel_optional_and_unexpected_calls():
    from evaluation.views import call_diff

    expected = {
        "role": "assistant",
        "tool_calls": [
            {"function": {"name": "check_inventory", "arguments": {"sku": "A-1"}}},
            {
                "function": {"name": "create_order", "arguments": {"sku": "A-1", "quantity": 2}},
                "optional": ["note"],
                "acceptable": {"quantity": [2, 3]},
            },
        ],
    }
    calls = [
        {"name": "create_order", "arguments": {"sku": "A-1", "quantity": 3.0}},
        {"name": "check_inventory", "arguments": {"sku": "a-1"}},
        {"name": "create_order", "arguments": {"sku": "B-2"}},
    ]
    rows = call_diff(expected, calls)
    inv, order, extra = rows
    assert inv["name"] == "check_inventory" and [a["ok"] for a in inv["args"]] == [False]
    assert [(a["key"], a["ok"]) for a in order["args"]] == [
        ("sku", True),
        ("quantity", True),
    ]  # 3.0 is acceptable
    assert extra["unexpected"] and extra["args"][0]["have"] == '"B-2"'
    missing = call_diff(expected, [])
    assert not missing[0]["found"] and missing[0]["args"][0]["have"] == "(missing)"


def test_call_diff_judges_dotted_optional_and_acceptable_paths_like_the_scorer():
    from evaluation.views import call_diff
    from toolcalls.score import score_case

    expected = {
        "role": "assistant",
        "tool_calls": [
            {
                "function": {
                    "name": "ship",
                    "arguments": {"address": {"city": "Paris", "zip": "75001"}, "speed": "fast"},
                },
                "optional": ["address.zip"],
                "acceptable": {"address.city": ["Paris", "paris"], "speed": ["fast", "express"]},
            }
        ],
    }
    good = {"name": "ship", "arguments": {"address": {"city": "paris"}, "speed": "express"}}
    bad = {"name": "ship", "arguments": {"address": {"city": "Lyon", "zip": "75001"}, "speed": "fast"}}
    for call, right in ((good, True), (bad, False)):
        output = f"<tool_call>{json.dumps(call)}</tool_call>"
        assert score_case(expected, output, None)["tool_call_accuracy"] == int(right)
        rows = call_diff(expected, [call])
        assert [a["key"] for a in rows[0]["args"]] == ["address", "speed"]  # no "address.city" row
        assert rows[0]["args"][0]["ok"] is right and rows[0]["args"][1]["ok"] is True


def test_a_perfect_score_gets_an_honest_interval(project, members, client):
    suite = make_suite(project, 12)
    run = crafted_run(project, suite, model(project, "perfect", origin="base"), set(range(1, 13)))
    client.force_login(members["lead"])
    html = client.get(f"/p/{project.slug}/eval/runs/{run.pk}/").content.decode()
    # Wilson's interval for 12 of 12 (not "100.0%–100.0%", which value ± 1.96 se gives)
    assert "12 of 12 cases · 95% CI 75.8%–100.0%" in html
