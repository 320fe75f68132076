"""The promotion gate: each condition, one production version per project, the page says which failed."""

import pytest

from annotator.models import ModelVersion
from evaluation import promotion
from evaluation.models import EvalSettings, PromotionDecision

from .test_eval_overlap import sft_snapshot
from .test_eval_support import crafted_run, make_suite, model

pytestmark = pytest.mark.django_db


@pytest.fixture
def suite(project):
    s = make_suite(project, 20)
    cfg = EvalSettings.for_project(project)
    cfg.default_suite = s
    cfg.save()
    return s


def conditions(gate):
    return {c.key: c.status for c in gate.conditions}


def test_first_promotion_needs_only_a_finished_run(project, suite, members):
    v1 = model(project, "v1")
    gate = promotion.check_gate(v1)
    assert not gate.ok and conditions(gate) == {"candidate_run": "fail"}
    crafted_run(project, suite, v1, set(range(1, 11)))
    decision = promotion.promote(v1, members["admin"], note="first")
    v1.refresh_from_db()
    assert v1.stage == "production" and decision.action == "promote" and decision.previous_production is None


def test_a_better_candidate_replaces_production_and_only_one_stays(project, suite, members):
    v1, v2 = model(project, "v1"), model(project, "v2")
    crafted_run(project, suite, v1, set(range(1, 11)), perplexity=10.0)
    promotion.promote(v1)
    crafted_run(project, suite, v2, set(range(1, 15)), perplexity=10.2)
    gate = promotion.check_gate(v2)
    assert gate.ok, gate.failed
    assert conditions(gate) == {
        "candidate_run": "pass",
        "overlap": "unknown",
        "tool_call_accuracy": "pass",
        "response_quality": "pass",
        "perplexity": "pass",
    }
    decision = promotion.promote(v2, members["admin"])
    assert decision.previous_production == v1 and decision.baseline_run.model_version == v1
    assert list(ModelVersion.objects.filter(project=project, stage="production")) == [v2]
    assert ModelVersion.objects.get(pk=v1.pk).stage == "candidate"


def test_each_failing_condition_is_named(project, suite):
    prod, worse, noisy, dumb = (model(project, n) for n in ("prod", "worse", "noisy", "dumb"))
    crafted_run(project, suite, prod, set(range(1, 11)), perplexity=10.0)
    promotion.promote(prod)
    # worse on tool calls
    crafted_run(project, suite, worse, set(range(1, 9)), perplexity=10.0)
    gate = promotion.check_gate(worse)
    assert conditions(gate)["tool_call_accuracy"] == "fail" and "40.0% vs 50.0%" in gate.failed[0].detail
    with pytest.raises(promotion.GateFailed):
        promotion.promote(worse)
    # better on tool calls, but 3 replies end in a repeated phrase: quality -15 points, margin 2
    crafted_run(
        project,
        suite,
        noisy,
        set(range(1, 13)),
        perplexity=10.0,
        overrides={p: "Hello! How can I help you today? today? today? today?" for p in (4, 8, 12)},
    )
    assert conditions(promotion.check_gate(noisy)) == {
        "candidate_run": "pass",
        "overlap": "unknown",
        "tool_call_accuracy": "pass",
        "response_quality": "fail",
        "perplexity": "pass",
    }
    # better on both, but general-text perplexity up 30% (margin 5%)
    crafted_run(project, suite, dumb, set(range(1, 13)), perplexity=13.0)
    gate = promotion.check_gate(dumb)
    assert [c.key for c in gate.failed] == ["perplexity"] and "×1.300" in gate.failed[0].detail
    assert ModelVersion.objects.get(pk=prod.pk).stage == "production"


def test_production_must_be_evaluated_on_the_same_suite(project, suite):
    prod, cand = model(project, "prod"), model(project, "cand")
    other = make_suite(project, 5, name="other")
    crafted_run(project, other, prod, {1})
    ModelVersion.objects.filter(pk=prod.pk).update(stage="production")
    crafted_run(project, suite, cand, {1, 2})
    gate = promotion.check_gate(cand)
    assert (
        conditions(gate)["production_run"] == "fail" and "prod has no finished run" in gate.failed[0].detail
    )


def test_unknown_perplexity_does_not_block_but_significance_can(project, suite):
    prod, cand = model(project, "prod"), model(project, "cand")
    crafted_run(project, suite, prod, set(range(1, 11)))
    promotion.promote(prod)
    crafted_run(project, suite, cand, set(range(1, 12)))  # +1 case: real but tiny
    gate = promotion.check_gate(cand)
    assert gate.ok and conditions(gate)["perplexity"] == "unknown"
    cfg = EvalSettings.for_project(project)
    cfg.require_significance = True
    cfg.save()
    gate = promotion.check_gate(cand)
    assert [c.key for c in gate.failed] == ["significance"] and "p = 1" in gate.failed[0].detail


def test_a_suite_in_the_training_data_cannot_judge(project, suite, tmp_path, settings):
    cand = model(project, "cand")
    crafted_run(project, suite, cand, set(range(1, 11)))
    snap = sft_snapshot(project, list(suite.cases.filter(position__in=[1, 2, 3])), tmp_path, settings)
    cand.metadata = {"train_snapshot_ids": [snap.pk]}  # trained after the run: the gate still sees it
    cand.save()
    gate = promotion.check_gate(cand)
    assert [c.key for c in gate.failed] == ["overlap"] and "sft-v1" in gate.failed[0].detail


def test_reject_and_the_production_version_cannot_be_rejected(project, suite, members):
    v1, v2 = model(project, "v1"), model(project, "v2")
    crafted_run(project, suite, v1, {1})
    promotion.promote(v1)
    with pytest.raises(Exception, match="cannot be rejected"):
        promotion.reject(v1)
    decision = promotion.reject(v2, members["admin"], note="SFT brain damage")
    assert ModelVersion.objects.get(pk=v2.pk).stage == "rejected" and decision.note == "SFT brain damage"
    assert PromotionDecision.objects.filter(project=project).count() == 2


def test_gate_page_says_which_condition_failed_and_only_admins_decide(project, suite, members, client):
    prod, cand = model(project, "prod"), model(project, "cand")
    crafted_run(project, suite, prod, set(range(1, 11)))
    promotion.promote(prod)
    crafted_run(project, suite, cand, set(range(1, 9)))
    client.force_login(members["lead"])
    page = client.get(f"/p/{project.slug}/eval/models/{cand.pk}/").content.decode()
    assert "cannot be promoted" in page and "Beats production on tool_call_accuracy" in page
    assert 'data-condition="tool_call_accuracy" data-status="fail"' in page
    assert client.post(f"/p/{project.slug}/eval/models/{cand.pk}/", {"action": "promote"}).status_code == 403
    client.force_login(members["admin"])
    res = client.post(
        f"/p/{project.slug}/eval/models/{cand.pk}/", {"action": "promote", "suite": suite.pk}, follow=True
    )
    assert "Not promoted: Beats production on tool_call_accuracy" in res.content.decode()
    assert ModelVersion.objects.get(pk=cand.pk).stage == "candidate"


def test_promotion_api(project, suite, members, api):
    v1 = model(project, "v1")
    res = api(members["admin"]).post("/api/promotions/promote/", {"model_version": v1.pk}, format="json")
    assert res.status_code == 409 and res.json()["conditions"][0]["key"] == "candidate_run"
    crafted_run(project, suite, v1, {1})
    check = api(members["lead"]).get(f"/api/promotions/check/?model_version={v1.pk}")
    assert check.status_code == 200 and check.json()["ok"]
    assert (
        api(members["lead"])
        .post("/api/promotions/promote/", {"model_version": v1.pk}, format="json")
        .status_code
        == 403
    )
    assert (
        api(members["admin"])
        .post("/api/promotions/promote/", {"model_version": v1.pk}, format="json")
        .status_code
        == 201
    )
    assert api(members["lead"]).get("/api/promotions/").json()["results"][0]["action"] == "promote"
