"""Comparing runs: McNemar's test against hand-worked values, known flips on crafted runs,
lineage order, the API."""

import math

import pytest

from evaluation import comparison
from evaluation.comparison import binomial_two_sided, chi2_continuity, compare_runs, mcnemar

from .test_eval_support import crafted_run, make_suite, model


def test_mcnemar_exact_and_chi_square_match_hand_worked_values():
    # b = 1, c = 9: n = 10 discordant pairs. Exact two-sided binomial:
    # P = 2 * (C(10,0) + C(10,1)) / 2^10 = 2 * 11 / 1024 = 0.021484375
    r = mcnemar(1, 9)
    assert r["p_exact"] == pytest.approx(22 / 1024, abs=1e-15)
    assert r["method"] == "exact" and r["p_value"] == r["p_exact"] and r["significant"]
    # chi-square with continuity correction: (|1 - 9| - 1)^2 / 10 = 4.9; 1 d.o.f. tail
    # P(chi2_1 > 4.9) = 2 * (1 - Phi(sqrt(4.9))) = 0.026857...  (tables: 0.0269)
    assert r["statistic"] == pytest.approx(4.9)
    assert r["p_chi2"] == pytest.approx(0.0268566955, abs=1e-8)
    # b = 3, c = 5: P = 2 * (1 + 8 + 28 + 56) / 256 = 186 / 256 = 0.7265625: noise
    assert mcnemar(3, 5)["p_value"] == pytest.approx(186 / 256) and not mcnemar(3, 5)["significant"]
    # no discordant pairs: nothing to test
    assert mcnemar(0, 0) == {**mcnemar(0, 0), "p_value": 1.0, "significant": False}
    # large counts use the chi-square: b = 20, c = 40 -> (20 - 1)^2 / 60
    big = mcnemar(20, 40)
    assert big["method"] == "chi2_cc" and big["statistic"] == pytest.approx(361 / 60)
    assert big["p_value"] == pytest.approx(math.erfc(math.sqrt(361 / 120)))


def test_binomial_and_chi_square_agree_for_large_samples():
    p_exact = binomial_two_sided(470, 1000)
    _, p_chi = chi2_continuity(470, 530)
    assert p_exact == pytest.approx(p_chi, rel=0.05)
    assert binomial_two_sided(5, 10) == 1.0


@pytest.mark.django_db
def test_crafted_runs_known_flips_deltas_and_p_value(project):
    suite = make_suite(project, 30)
    base = model(project, "base", origin="base")
    sft = model(project, "sft", parent=base, origin="sft")
    base_right = set(range(1, 11)) | {29}  # 11 of 30
    sft_right = set(range(1, 11)) | set(range(11, 19))  # 18 of 30: 8 fixed (11-18), 1 broken (29)
    run_sft = crafted_run(project, suite, sft, sft_right)
    run_base = crafted_run(project, suite, base, base_right)
    cmp = compare_runs([run_sft, run_base])  # given out of order: the lineage puts base first
    assert cmp.lineage_ordered and [r.pk for r in cmp.runs] == [run_base.pk, run_sft.pk]
    tca = next(m for m in cmp.metrics if m.name == "tool_call_accuracy")
    base_cell, sft_cell = tca.cells
    assert base_cell.value == pytest.approx(11 / 30) and sft_cell.value == pytest.approx(18 / 30)
    assert sft_cell.delta == pytest.approx(7 / 30)
    # b = 1 broken, c = 8 fixed, n = 9: P = 2 * (C(9,0) + C(9,1)) / 2^9 = 20 / 512
    assert (sft_cell.test["b"], sft_cell.test["c"], sft_cell.test["n_paired"]) == (1, 8, 30)
    assert sft_cell.test["p_value"] == pytest.approx(20 / 512) and sft_cell.test["significant"]
    flip = next(f for f in cmp.flips if f.metric == "tool_call_accuracy")
    assert [c[1] for c in flip.fixed] == list(range(11, 19)) and [c[1] for c in flip.broken] == [29]
    data = cmp.as_dict()
    assert data["baseline"] == run_base.pk and len(data["flips"][0]["fixed"]) == 8


@pytest.mark.django_db
def test_runs_on_different_suites_or_unfinished_runs_are_refused(project):
    mv = model(project, "m")
    a = crafted_run(project, make_suite(project, 4, name="a"), mv, {1})
    b = crafted_run(project, make_suite(project, 4, name="b"), mv, {1})
    with pytest.raises(comparison.ComparisonError, match="same suite"):
        compare_runs([a, b])
    with pytest.raises(comparison.ComparisonError, match="at least two"):
        compare_runs([a])


@pytest.mark.django_db
def test_lineage_runs_and_chart_series(project):
    suite = make_suite(project, 8)
    base = model(project, "base", origin="base")
    sft = model(project, "sft", parent=base, origin="sft")
    dpo = model(project, "dpo", parent=sft, origin="dpo")
    crafted_run(project, suite, base, {1, 2})
    crafted_run(project, suite, dpo, {1, 2, 3, 4, 5, 6})
    chain = comparison.lineage_runs(dpo, suite)
    assert [mv.name for mv, _ in chain] == ["base", "sft", "dpo"] and chain[1][1] is None
    chart = comparison.chart_series([r for _, r in chain], [mv.name for mv, _ in chain])
    tca = chart["metrics"][0]
    assert tca["name"] == "tool_call_accuracy" and tca["values"] == [0.25, None, 0.75]


@pytest.mark.django_db
def test_compare_api(project, members, api):
    suite = make_suite(project, 10)
    a = crafted_run(project, suite, model(project, "a"), {1, 2, 3})
    b = crafted_run(project, suite, model(project, "b"), {1, 2, 3, 4, 5})
    res = api(members["lead"]).get(f"/api/eval-runs/compare/?runs={a.pk},{b.pk}&order=given")
    assert res.status_code == 200, res.content
    body = res.json()
    assert body["baseline"] == a.pk and body["metrics"][0]["runs"][1]["test"]["c"] == 2
    assert api(members["annotator"]).get(f"/api/eval-runs/compare/?runs={a.pk},{b.pk}").status_code == 404
    assert api(members["lead"]).get(f"/api/eval-runs/compare/?runs={a.pk}").status_code == 400
