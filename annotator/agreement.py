"""Agreement and ranking statistics for the lead dashboards, as plain functions over small summaries.

The database does the heavy part (GROUP BY into contingency tables and unit compositions, see
dashboards.py); these functions turn those summaries into the statistics:

- `cohen_kappa(table)`: two raters, one contingency table {(a_value, b_value): count}.
- `alpha_nominal(compositions)`: Krippendorff's alpha, nominal metric, any number of raters and
  missing values, from unit compositions (how many raters gave each value in a unit).
  `krippendorff_alpha_nominal(rows)` takes the textbook raters-by-units matrix with None as missing.
- `bradley_terry(wins)` and `bradley_terry_bootstrap(...)`: strengths from a pairwise wins matrix,
  with percentile-bootstrap confidence intervals (resampling individual comparisons).
- `wilson_interval(k, n)`: a binomial proportion's 95% interval.

Tested against scikit-learn, the `krippendorff` package, `choix`/SciPy and published worked examples
(tests/test_agreement.py).
"""

import math
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054


# --- proportions ------------------------------------------------------------------------------


def wilson_interval(k: float, n: float, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval for k successes in n trials (None without trials)."""
    if n <= 0:
        return None
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def ratio(k: float, n: float) -> float | None:
    return k / n if n else None


# --- Cohen's kappa ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kappa:
    n: int  # items both raters judged
    observed: float | None  # share of items with the same value
    expected: float | None  # agreement expected by chance from each rater's own marginals
    kappa: float | None  # None when undefined (chance agreement is 1: both raters used one value only)


def cohen_kappa(table: Mapping[tuple[Hashable, Hashable], float]) -> Kappa:
    """Cohen's kappa from a contingency table {(rater_a_value, rater_b_value): count}."""
    n = sum(table.values())
    if n <= 0:
        return Kappa(0, None, None, None)
    a_marg: Counter = Counter()
    b_marg: Counter = Counter()
    agree = 0.0
    for (a, b), count in table.items():
        a_marg[a] += count
        b_marg[b] += count
        if a == b:
            agree += count
    p_o = agree / n
    p_e = sum(a_marg[v] * b_marg[v] for v in a_marg) / (n * n)
    kappa = None if math.isclose(p_e, 1.0) else (p_o - p_e) / (1 - p_e)
    return Kappa(int(n), p_o, p_e, kappa)


def cohen_kappa_from_pairs(pairs: Iterable[tuple[Hashable, Hashable]]) -> Kappa:
    return cohen_kappa(Counter(pairs))


# --- Krippendorff's alpha (nominal) -------------------------------------------------------------


@dataclass(frozen=True)
class Alpha:
    units: int  # units with at least two values (the only ones that carry agreement information)
    values: int  # pairable values n.. (values in those units)
    observed_disagreement: float | None
    expected_disagreement: float | None
    alpha: float | None  # None when undefined: fewer than two pairable values, or only one value used


def alpha_nominal(compositions: Iterable[tuple[Mapping[Hashable, int], int]]) -> Alpha:
    """Krippendorff's alpha for nominal data from unit compositions.

    Each item is (composition, weight): composition maps a value to how many raters gave it in a
    unit; weight says how many units share that exact composition (the database groups them).
    Units with fewer than two values are not pairable and are ignored, which is exactly how alpha
    handles missing values. Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability":
        o_ck = sum_u n_uc * n_uk / (m_u - 1),  D_o = sum_{c != k} o_ck / n,
        D_e  = sum_{c != k} n_c * n_k / (n (n - 1)),  alpha = 1 - D_o / D_e.
    """
    n_total = 0
    units = 0
    disagree_o = 0.0
    value_totals: Counter = Counter()
    for composition, weight in compositions:
        counts = [c for c in composition.values() if c > 0]
        m = sum(counts)
        if m < 2 or weight <= 0:
            continue
        units += weight
        n_total += m * weight
        # sum over ordered pairs c != k of n_uc n_uk = m^2 - sum_c n_uc^2
        disagree_o += weight * (m * m - sum(c * c for c in counts)) / (m - 1)
        for value, c in composition.items():
            if c > 0:
                value_totals[value] += c * weight
    if n_total < 2:
        return Alpha(units, n_total, None, None, None)
    d_o = disagree_o / n_total
    d_e = (n_total * n_total - sum(c * c for c in value_totals.values())) / (n_total * (n_total - 1))
    alpha = None if d_e == 0 else 1 - d_o / d_e
    return Alpha(units, n_total, d_o, d_e, alpha)


def krippendorff_alpha_nominal(rows: Sequence[Sequence[Hashable | None]]) -> Alpha:
    """Alpha from a raters-by-units matrix (one row per rater, None = missing)."""
    n_units = max((len(r) for r in rows), default=0)
    compositions = []
    for u in range(n_units):
        values = Counter(r[u] for r in rows if u < len(r) and r[u] is not None and r[u] == r[u])  # NaN-safe
        compositions.append((values, 1))
    return alpha_nominal(compositions)


def binary_compositions(by_size: Mapping[tuple[int, int], int], units_by_size: Mapping[int, int]):
    """Compositions for a yes/no attribute (e.g. "chose category C") per unit.

    by_size[(m, k)] = units with m raters of which k said yes (k >= 1);
    units_by_size[m] = all units with m raters. Units where nobody said yes are the remainder.
    """
    seen: Counter = Counter()
    for (m, k), units in by_size.items():
        seen[m] += units
        yield {True: k, False: m - k}, units
    for m, units in units_by_size.items():
        rest = units - seen[m]
        if rest > 0:
            yield {True: 0, False: m}, rest


def specific_agreement(by_size: Mapping[tuple[int, int], int]) -> float | None:
    """Positive specific agreement for a yes/no attribute: of the rater pairs in which at least one
    said yes, the share where both did (2a / (2a + b + c) generalised to m raters per unit)."""
    both = either_one = 0
    for (m, k), units in by_size.items():
        both += units * k * (k - 1)  # ordered pairs, both yes
        either_one += units * 2 * k * (m - k)  # ordered pairs, exactly one yes
    return both / (both + either_one) if both + either_one else None


# --- Bradley-Terry ------------------------------------------------------------------------------

ELO_SCALE = 400 / math.log(10)


def _connected_components(n: np.ndarray) -> list[list[int]]:
    k = n.shape[0]
    seen, components = set(), []
    for start in range(k):
        if start in seen:
            continue
        stack, comp = [start], []
        seen.add(start)
        while stack:
            i = stack.pop()
            comp.append(i)
            for j in range(k):
                if j not in seen and (n[i, j] > 0 or n[j, i] > 0):
                    seen.add(j)
                    stack.append(j)
        components.append(sorted(comp))
    return components


def _fit(wins: np.ndarray, max_iter: int = 100, tol: float = 1e-10) -> np.ndarray:
    """Maximum-likelihood log-strengths for a batch of wins matrices (B, K, K), centred to mean 0.

    Damped Newton on the concave log-likelihood sum_ij w_ij log sigmoid(b_i - b_j), with b_0 fixed
    at 0 during the solve. Quadratic convergence: a dozen iterations for a well-posed problem.
    """
    batch, k, _ = wins.shape
    beta = np.zeros((batch, k))
    if k < 2:
        return beta
    games = wins + np.swapaxes(wins, 1, 2)
    won = wins.sum(axis=2)
    eye = np.eye(k - 1)
    for _ in range(max_iter):
        diff = beta[:, :, None] - beta[:, None, :]
        p = 1 / (1 + np.exp(-diff))
        grad = won - (games * p).sum(axis=2)
        w = games * p * (1 - p)
        # Hessian of the log-likelihood: H_ii = -sum_j w_ij, H_ij = w_ij
        hess = w - np.eye(k)[None] * w.sum(axis=2)[:, :, None]
        step = np.linalg.solve(-hess[:, 1:, 1:] + 1e-12 * eye, grad[:, 1:, None])[:, :, 0]
        step = np.clip(step, -2.0, 2.0)  # damping: logistic likelihoods are flat far from the optimum
        beta[:, 1:] += step
        if np.max(np.abs(step)) < tol:
            break
    return beta - beta.mean(axis=1, keepdims=True)


@dataclass(frozen=True)
class Strength:
    index: int
    beta: float | None  # log-strength, centred so the compared versions average 0
    rating: float | None  # 1000 + 400 log10(strength): the familiar Elo-like scale
    low: float | None  # 95% percentile-bootstrap interval on the rating scale
    high: float | None
    comparisons: float  # comparisons this version took part in


def bradley_terry(wins: Sequence[Sequence[float]], prior: float = 0.0) -> list[float | None]:
    """Log-strengths (natural log, centred to mean 0 over the fitted set) from wins[i][j] = times i beat j.

    Ties count as half a win each way (callers add them so). `prior` adds that many virtual ties to
    every pair that has at least one comparison, which keeps estimates finite when a version won or
    lost all its comparisons. Versions outside the largest connected comparison graph get None:
    nothing relates their strength to the others.
    """
    w = np.asarray(wins, dtype=float)
    k = w.shape[0]
    n = w + w.T
    comps = _connected_components(n)
    main = max(comps, key=len) if comps else []
    if len(main) < 2:
        return [None] * k
    sub = w[np.ix_(main, main)].copy()
    compared = (sub + sub.T) > 0
    sub += np.where(compared, prior / 2, 0.0)
    beta = _fit(sub[None])[0]
    out: list[float | None] = [None] * k
    for pos, i in enumerate(main):
        out[i] = float(beta[pos])
    return out


def bradley_terry_bootstrap(
    wins: Sequence[Sequence[float]],
    ties: Sequence[Sequence[float]] | None = None,
    prior: float = 1.0,
    samples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> list[Strength]:
    """Strengths with percentile-bootstrap intervals.

    wins[i][j]: decisive comparisons i won against j; ties[i][j] (symmetric, or only one triangle
    filled): ties between them (each counts half a win to both). Every bootstrap sample redraws the
    same number of comparisons with replacement (a multinomial over the outcome cells), refits,
    and recentres; the seed is fixed so a page shows the same interval on every load.
    """
    w = np.asarray(wins, dtype=float)
    k = w.shape[0]
    t = np.zeros_like(w) if ties is None else np.asarray(ties, dtype=float)
    t = np.triu(t + t.T - np.diag(np.diag(t)), 1)  # one cell per unordered pair
    games = w + w.T + t + t.T
    comps = _connected_components(games)
    main = max(comps, key=len) if comps else []
    point = bradley_terry(w + (t + t.T) / 2, prior=prior)
    played = games.sum(axis=1) - np.diag(games)
    if len(main) < 2:
        return [Strength(i, None, None, None, None, float(played[i])) for i in range(k)]
    sub_w, sub_t = w[np.ix_(main, main)], t[np.ix_(main, main)]
    m = len(main)
    # outcome cells: (i beat j) for all ordered pairs, (i tied j) for i < j
    cells = [("w", i, j) for i in range(m) for j in range(m) if i != j and sub_w[i, j] > 0]
    cells += [("t", i, j) for i in range(m) for j in range(i + 1, m) if sub_t[i, j] > 0]
    counts = np.array([sub_w[i, j] if kind == "w" else sub_t[i, j] for kind, i, j in cells])
    total = counts.sum()
    compared = (sub_w + sub_w.T + sub_t + sub_t.T) > 0
    low = high = [None] * m
    if samples > 0 and total > 0:
        rng = np.random.default_rng(seed)
        draws = rng.multinomial(int(round(total)), counts / total, size=samples)  # (B, cells)
        batch = np.zeros((samples, m, m))
        for c, (kind, i, j) in enumerate(cells):
            if kind == "w":
                batch[:, i, j] += draws[:, c]
            else:
                batch[:, i, j] += draws[:, c] / 2
                batch[:, j, i] += draws[:, c] / 2
        batch += np.where(compared, prior / 2, 0.0)[None]
        betas = _fit(batch)
        tail = (1 - level) / 2 * 100
        low = list(np.percentile(betas, tail, axis=0))
        high = list(np.percentile(betas, 100 - tail, axis=0))
    out = [Strength(i, None, None, None, None, float(played[i])) for i in range(k)]
    for pos, i in enumerate(main):
        b = point[i]
        out[i] = Strength(
            i,
            b,
            _rating(b),
            _rating(low[pos]) if low[pos] is not None else None,
            _rating(high[pos]) if high[pos] is not None else None,
            float(played[i]),
        )
    return out


def _rating(beta: float | None) -> float | None:
    return None if beta is None else 1000 + ELO_SCALE * float(beta)


def expected_win_probability(beta_i: float, beta_j: float) -> float:
    return 1 / (1 + math.exp(beta_j - beta_i))
