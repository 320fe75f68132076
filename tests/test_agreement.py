"""Agreement statistics and Bradley-Terry against independent implementations and published examples.

scikit-learn (Cohen's kappa), the `krippendorff` package (alpha), choix and SciPy (Bradley-Terry)
are test-only dependencies (the `dev` extra); the app's own code uses none of them.
"""

import math
import random

import numpy as np
import pytest

from annotator import agreement as ag

krippendorff = pytest.importorskip("krippendorff")
sklearn_metrics = pytest.importorskip("sklearn.metrics")
choix = pytest.importorskip("choix")
scipy_optimize = pytest.importorskip("scipy.optimize")


# --- Cohen's kappa ------------------------------------------------------------------------------


def test_kappa_textbook_example():
    # 50 proposals, two readers: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no -> p_o 0.7, p_e 0.5, kappa 0.4
    k = ag.cohen_kappa({("y", "y"): 20, ("y", "n"): 5, ("n", "y"): 10, ("n", "n"): 15})
    assert k.n == 50
    assert k.observed == pytest.approx(0.7)
    assert k.expected == pytest.approx(0.5)
    assert k.kappa == pytest.approx(0.4)


@pytest.mark.parametrize("seed", range(8))
def test_kappa_matches_scikit_learn(seed):
    rng = random.Random(seed)
    values = ["reasonable", "unreasonable", "tie"][: rng.choice([2, 3])]
    a = [rng.choice(values) for _ in range(rng.randint(5, 300))]
    b = [x if rng.random() < rng.random() else rng.choice(values) for x in a]
    expected = sklearn_metrics.cohen_kappa_score(a, b)
    got = ag.cohen_kappa_from_pairs(zip(a, b, strict=True))
    if math.isnan(expected):
        assert got.kappa is None
    else:
        assert got.kappa == pytest.approx(expected, abs=1e-12)


def test_kappa_undefined_when_both_raters_use_one_value():
    k = ag.cohen_kappa({("bad", "bad"): 7})
    assert k.observed == 1.0 and k.kappa is None
    assert ag.cohen_kappa({}).kappa is None


def test_kappa_perfect_and_systematic_disagreement():
    assert ag.cohen_kappa({("a", "a"): 5, ("b", "b"): 5}).kappa == pytest.approx(1.0)
    assert ag.cohen_kappa({("a", "b"): 5, ("b", "a"): 5}).kappa == pytest.approx(-1.0)


# --- Krippendorff's alpha -----------------------------------------------------------------------

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", the worked example with four
# observers, twelve units and missing values: nominal alpha = 0.743.
KRIPPENDORFF_2011 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


def _package_alpha(rows):
    data = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)
    return krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")


def test_alpha_published_example_with_missing_values():
    a = ag.krippendorff_alpha_nominal(KRIPPENDORFF_2011)
    assert round(a.alpha, 3) == 0.743
    assert a.units == 11  # unit 12 has a single value: not pairable
    assert a.values == 40
    assert a.alpha == pytest.approx(_package_alpha(KRIPPENDORFF_2011), abs=1e-12)


@pytest.mark.parametrize("seed", range(12))
def test_alpha_matches_krippendorff_package_with_missing_data(seed):
    rng = random.Random(seed)
    n_raters, n_units = rng.randint(2, 7), rng.randint(3, 60)
    k = rng.randint(2, 4)
    truth = [rng.randrange(k) for _ in range(n_units)]
    rows = []
    for _ in range(n_raters):
        skill = rng.uniform(0.3, 0.95)
        rows.append(
            [
                None if rng.random() < 0.35 else (t if rng.random() < skill else rng.randrange(k))
                for t in truth
            ]
        )
    ours = ag.krippendorff_alpha_nominal(rows)
    try:
        theirs = _package_alpha(rows)
    except ValueError:  # the package refuses data with a single value; alpha is undefined there
        assert ours.alpha is None
        return
    assert ours.alpha == pytest.approx(theirs, abs=1e-10)


def test_alpha_from_compositions_equals_matrix_form():
    # the dashboards feed compositions grouped by the database; weights must mean "this many units"
    direct = ag.krippendorff_alpha_nominal(KRIPPENDORFF_2011)
    comps = {}
    for u in range(12):
        values = tuple(sorted(v for v in (r[u] for r in KRIPPENDORFF_2011) if v is not None))
        comps[values] = comps.get(values, 0) + 1
    grouped = [({v: values.count(v) for v in set(values)}, n) for values, n in comps.items()]
    assert ag.alpha_nominal(grouped).alpha == pytest.approx(direct.alpha)


def test_alpha_edge_cases():
    assert ag.alpha_nominal([]).alpha is None
    assert ag.alpha_nominal([({"a": 1}, 10)]).alpha is None  # nothing pairable
    assert ag.alpha_nominal([({"a": 2}, 3)]).alpha is None  # one value only: no expected disagreement
    assert ag.alpha_nominal([({"a": 2}, 3), ({"b": 2}, 3)]).alpha == pytest.approx(1.0)


def test_binary_compositions_per_category_match_package():
    # 3 raters, 6 units, "chose category C" yes/no, with one unit where a rater is missing
    rows = [[1, 1, 0, 0, 1, None], [1, 0, 0, 0, 1, 0], [1, 1, 0, 1, 0, 0]]
    by_size, units_by_size = {}, {}
    for u in range(6):
        vals = [r[u] for r in rows if r[u] is not None]
        m, k = len(vals), sum(vals)
        units_by_size[m] = units_by_size.get(m, 0) + 1
        if k:
            by_size[(m, k)] = by_size.get((m, k), 0) + 1
    ours = ag.alpha_nominal(ag.binary_compositions(by_size, units_by_size)).alpha
    assert ours == pytest.approx(_package_alpha(rows), abs=1e-12)
    # specific (positive) agreement: ordered pairs both-yes / pairs with at least one yes
    both = 3 * 2 + 2 + 2  # unit 0: 3 yes (6 ordered pairs); unit 1: 2 of 3 (2); unit 4: 2 of 3 (2)
    one = 2 * 2 * 1 + 2 * 2 * 1 + 2 * 1 * 2  # units 1, 4: 2 yes x 1 no; unit 3: 1 yes x 2 no
    assert ag.specific_agreement(by_size) == pytest.approx(both / (both + one))


# --- Wilson interval ----------------------------------------------------------------------------


def test_wilson_interval_known_values():
    lo, hi = ag.wilson_interval(5, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.2366, 0.7634)
    lo, hi = ag.wilson_interval(0, 10)
    assert lo == 0 and round(hi, 4) == 0.2775
    assert ag.wilson_interval(0, 0) is None


# --- Bradley-Terry ------------------------------------------------------------------------------


def _wins(k, comparisons):
    w = np.zeros((k, k))
    for a, b in comparisons:
        w[a, b] += 1
    return w


def test_bradley_terry_two_players_closed_form():
    # with two players the MLE is log(w_ab / w_ba)
    beta = ag.bradley_terry([[0, 30], [10, 0]])
    assert beta[0] - beta[1] == pytest.approx(math.log(3))
    assert beta[0] + beta[1] == pytest.approx(0)


@pytest.mark.parametrize("seed", range(5))
def test_bradley_terry_matches_choix(seed):
    np.random.seed(seed)
    k = 5
    params = choix.generate_params(k, 1.5)
    data = choix.generate_pairwise(params, 400)
    theirs = choix.ilsr_pairwise(k, data, alpha=0.0)
    ours = ag.bradley_terry(_wins(k, data))
    assert np.allclose(ours, theirs - theirs.mean(), atol=1e-6)


def test_bradley_terry_with_ties_matches_choix_on_doubled_data():
    # a tie counts half a win each way; doubling every comparison makes that whole without changing the MLE
    rng = random.Random(3)
    k = 4
    outcomes = []
    for _ in range(300):
        a, b = rng.sample(range(k), 2)
        r = rng.random()
        outcomes.append((a, b, "tie" if r < 0.2 else "a" if r < 0.2 + 0.8 * (a + 1) / (a + b + 2) else "b"))
    wins = np.zeros((k, k))
    ties = np.zeros((k, k))
    doubled = []
    for a, b, o in outcomes:
        if o == "a":
            wins[a, b] += 1
            doubled += [(a, b), (a, b)]
        elif o == "b":
            wins[b, a] += 1
            doubled += [(b, a), (b, a)]
        else:
            ties[min(a, b), max(a, b)] += 1
            doubled += [(a, b), (b, a)]
    theirs = choix.opt_pairwise(k, doubled, alpha=0.0)
    point = ag.bradley_terry(wins + (ties + ties.T) / 2)
    assert np.allclose(point, theirs - theirs.mean(), atol=1e-5)
    boot = ag.bradley_terry_bootstrap(wins, ties, prior=0.0, samples=200, seed=1)
    assert [s.beta for s in boot] == pytest.approx(list(point))


def test_bradley_terry_prior_matches_scipy_penalised_likelihood():
    # a version that won everything: the plain MLE is infinite; one virtual tie per pair keeps it finite
    wins = np.array([[0, 8, 5], [0, 0, 3], [0, 2, 0]], dtype=float)
    ours = np.array(ag.bradley_terry(wins, prior=1.0))
    compared = (wins + wins.T) > 0
    w = wins + np.where(compared, 0.5, 0)

    def nll(b):
        d = b[:, None] - b[None, :]
        return -(w * -np.logaddexp(0, -d)).sum()

    res = scipy_optimize.minimize(nll, np.zeros(3), method="BFGS", tol=1e-12)
    theirs = res.x - res.x.mean()
    assert np.allclose(ours, theirs, atol=1e-5)
    assert all(math.isfinite(b) for b in ours) and ours[0] > ours[1] > ours[2]


def test_bradley_terry_disconnected_versions_get_no_strength():
    wins = np.zeros((4, 4))
    wins[0, 1], wins[1, 0], wins[1, 2], wins[2, 1] = 5, 3, 4, 4  # 0-1-2 connected, 3 never compared
    beta = ag.bradley_terry(wins, prior=1.0)
    assert beta[3] is None and None not in beta[:3]
    boot = ag.bradley_terry_bootstrap(wins, prior=1.0, samples=50)
    assert boot[3].rating is None and boot[3].comparisons == 0


def test_bootstrap_interval_contains_estimate_is_deterministic_and_shrinks_with_data():
    np.random.seed(11)
    params = np.array([0.0, 0.5, 1.0])
    few = _wins(3, choix.generate_pairwise(params, 60))
    many = few * 20
    a = ag.bradley_terry_bootstrap(few, prior=1.0, samples=400, seed=5)
    b = ag.bradley_terry_bootstrap(few, prior=1.0, samples=400, seed=5)
    assert [(s.low, s.high) for s in a] == [(s.low, s.high) for s in b]
    for s in a:
        assert s.low <= s.rating <= s.high
    wide = np.mean([s.high - s.low for s in a])
    narrow = np.mean(
        [s.high - s.low for s in ag.bradley_terry_bootstrap(many, prior=1.0, samples=400, seed=5)]
    )
    assert narrow < wide / 3  # 20x the data: about sqrt(20) ~ 4.5x narrower
    assert ag.expected_win_probability(1.0, 1.0) == 0.5


def test_rating_scale_is_elo_like():
    # +400 rating points = 10:1 odds
    beta = ag.bradley_terry([[0, 100], [10, 0]])
    r = [1000 + ag.ELO_SCALE * b for b in beta]
    assert r[0] - r[1] == pytest.approx(400)
