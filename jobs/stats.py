"""The statistics of the nightly jobs: pure functions of arrays (numpy, scipy), seeded RNGs.

* :func:`bootstrap_mean_ci` — percentile bootstrap CI of a mean (vectorised resamples);
* :func:`mann_whitney_greater` / :func:`shift_greater` — one-sided: are this run's gaps larger than the
  baseline's? Sound at small n: Fisher's exact test for two-valued (0/1) gaps, exact or permutation
  Mann-Whitney U when a sample is small, the asymptotic one only when both are large;
* :func:`trend` — Theil-Sen slope with a one-sided Mann-Kendall (Kendall tau) p-value;
* :func:`psi` — population stability index between two category mixes;
* :func:`ks_test` — two-sample Kolmogorov-Smirnov (query lengths);
* :func:`mmd_permutation_test` — squared MMD (RBF kernel, median heuristic) with a permutation p-value;
* :func:`proportion_drop_p` — one-sided pooled two-proportion z-test;
* :func:`wilson_ci` — Wilson score interval of a proportion.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "bootstrap_mean_ci",
    "mann_whitney_greater",
    "ShiftTest",
    "shift_greater",
    "Trend",
    "trend",
    "psi",
    "ks_test",
    "mmd_permutation_test",
    "proportion_drop_p",
    "wilson_ci",
]


def bootstrap_mean_ci(
    values: Sequence[float] | np.ndarray,
    *,
    resamples: int = 1000,
    level: float = 0.95,
    rng: np.random.Generator | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (NaN, NaN for fewer than two values:
    resampling one value gives that value, an interval of width 0 that no decision may rest on)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        return math.nan, math.nan
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    rng = rng or np.random.default_rng(0)
    # Resample in chunks so memory stays ~8 MB whatever the sample size.
    chunk = max(1, min(resamples, 1_000_000 // x.size))
    means = np.empty(resamples)
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        idx = rng.integers(0, x.size, size=(stop - start, x.size))
        means[start:stop] = x[idx].mean(axis=1)
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return float(lo), float(hi)


#: Below this many items on either side the U statistic's normal approximation is not trusted: the exact
#: (no ties) or permutation (ties) null distribution is used instead.
EXACT_BELOW = 30
#: Monte Carlo permutations where the exact enumeration would be larger (p resolution 1e-4).
PERMUTATIONS = 9999


@dataclass(frozen=True)
class ShiftTest:
    """A one-sided p-value that one sample tends to be larger than another, and the test that gave it."""

    p: float
    method: str


def shift_greater(current: Sequence[float], baseline: Sequence[float], *,
                  rng: np.random.Generator | None = None) -> ShiftTest:
    """One-sided test that ``current`` tends to be larger than ``baseline`` (p NaN without data).

    * two distinct values in all (0/1 exact-match gaps): Fisher's exact test on the 2x2 table, which is
      the exact permutation distribution of U on such data (any n);
    * otherwise Mann-Whitney U: its exact null distribution without ties, or a permutation one
      (:data:`PERMUTATIONS`, seeded; exact enumeration when smaller) with ties, when either sample has
      fewer than :data:`EXACT_BELOW` items; the tie-corrected normal approximation when both have more.
    """
    from scipy.stats import PermutationMethod, fisher_exact, mannwhitneyu

    a = np.asarray(current, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        return ShiftTest(math.nan, "none")
    values = np.unique(np.r_[a, b])
    if values.size == 1:
        return ShiftTest(1.0, "none")
    if values.size == 2:
        hi = values[1]
        table = [[int(np.sum(a == hi)), int(np.sum(a != hi))], [int(np.sum(b == hi)), int(np.sum(b != hi))]]
        return ShiftTest(float(fisher_exact(table, alternative="greater").pvalue), "Fisher exact")
    if min(a.size, b.size) >= EXACT_BELOW:
        return ShiftTest(float(mannwhitneyu(a, b, alternative="greater", method="asymptotic").pvalue),
                         "Mann-Whitney")
    if values.size == a.size + b.size:  # no ties: the exact distribution of U
        return ShiftTest(float(mannwhitneyu(a, b, alternative="greater", method="exact").pvalue),
                         "Mann-Whitney exact")
    method = PermutationMethod(n_resamples=PERMUTATIONS, rng=rng if rng is not None else np.random.default_rng(0))
    return ShiftTest(float(mannwhitneyu(a, b, alternative="greater", method=method).pvalue),
                     "Mann-Whitney permutation")


def mann_whitney_greater(current: Sequence[float], baseline: Sequence[float]) -> float:
    """One-sided p-value that ``current`` tends to be larger than ``baseline`` (NaN without data):
    :func:`shift_greater`'s."""
    return shift_greater(current, baseline).p


@dataclass(frozen=True)
class Trend:
    """A Theil-Sen slope per step and the one-sided p-value that the series increases."""

    slope: float
    p_increasing: float
    p_decreasing: float
    n: int


def trend(y: Sequence[float], x: Sequence[float] | None = None) -> Trend:
    """Theil-Sen slope of ``y`` over ``x`` (default 0..n-1) with Mann-Kendall p-values."""
    from scipy.stats import kendalltau, theilslopes

    yy = np.asarray(y, dtype=np.float64)
    xx = np.arange(yy.size, dtype=np.float64) if x is None else np.asarray(x, dtype=np.float64)
    keep = np.isfinite(yy) & np.isfinite(xx)
    yy, xx = yy[keep], xx[keep]
    if yy.size < 3 or np.all(yy == yy[0]):
        return Trend(0.0, 1.0, 1.0, int(yy.size))
    slope = float(theilslopes(yy, xx).slope)
    up = float(kendalltau(xx, yy, alternative="greater").pvalue)
    down = float(kendalltau(xx, yy, alternative="less").pvalue)
    return Trend(slope, up if math.isfinite(up) else 1.0, down if math.isfinite(down) else 1.0, int(yy.size))


def psi(expected: Mapping[str, float], actual: Mapping[str, float], *, eps: float = 1e-4) -> float:
    """Population stability index between two mixes (counts or shares) over the union of categories.

    A category missing on one side gets share ``eps``; 0.1-0.2 is a moderate shift, > 0.2 a large one.
    """
    keys = sorted(set(expected) | set(actual))
    if not keys:
        return 0.0
    e = np.array([max(float(expected.get(k, 0.0)), 0.0) for k in keys])
    a = np.array([max(float(actual.get(k, 0.0)), 0.0) for k in keys])
    if e.sum() <= 0 or a.sum() <= 0:
        return math.nan
    e = np.maximum(e / e.sum(), eps)
    a = np.maximum(a / a.sum(), eps)
    return float(np.sum((a - e) * np.log(a / e)))


def ks_test(current: Sequence[float], reference: Sequence[float]) -> tuple[float, float]:
    """(KS statistic, two-sided p-value); (NaN, NaN) without data."""
    from scipy.stats import ks_2samp

    a = np.asarray(current, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        return math.nan, math.nan
    res = ks_2samp(a, b)
    return float(res.statistic), float(res.pvalue)


def mmd_permutation_test(
    x: np.ndarray,
    y: np.ndarray,
    *,
    permutations: int = 200,
    rng: np.random.Generator | None = None,
    max_points: int = 1000,
) -> tuple[float, float]:
    """Squared MMD between samples ``x`` (n, d) and ``y`` (m, d) and its permutation p-value.

    RBF kernel with the median-distance bandwidth; each sample is subsampled to ``max_points``.
    All permutations are evaluated at once as quadratic forms ``w K w'``.
    """
    rng = rng or np.random.default_rng(0)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(x) < 2 or len(y) < 2:
        return math.nan, math.nan
    if len(x) > max_points:
        x = x[rng.choice(len(x), max_points, replace=False)]
    if len(y) > max_points:
        y = y[rng.choice(len(y), max_points, replace=False)]
    z = np.vstack([x, y])
    sq = np.sum(z * z, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * z @ z.T, 0.0)
    off = d2[np.triu_indices(len(z), k=1)]
    bandwidth = float(np.median(off)) if off.size else 1.0
    if bandwidth <= 0:
        bandwidth = float(off.mean()) if off.size and off.mean() > 0 else 1.0
    k = np.exp(-d2 / bandwidth)
    n, m = len(x), len(y)

    def weights(is_x: np.ndarray) -> np.ndarray:
        return np.where(is_x, 1.0 / n, -1.0 / m)

    labels = np.r_[np.ones(n, bool), np.zeros(m, bool)]
    w0 = weights(labels)
    observed = float(w0 @ k @ w0)
    if permutations <= 0:
        return observed, math.nan
    perms = np.stack([rng.permutation(labels) for _ in range(permutations)])
    w = weights(perms)
    stats = np.einsum("ij,ij->i", w @ k, w)
    p = (1 + int(np.sum(stats >= observed - 1e-12))) / (permutations + 1)
    return observed, float(p)


def proportion_drop_p(hits: int, n: int, base_hits: int, base_n: int) -> float:
    """One-sided p-value that the proportion ``hits/n`` is lower than ``base_hits/base_n``."""
    from scipy.stats import norm

    if n <= 0 or base_n <= 0:
        return math.nan
    p1, p0 = hits / n, base_hits / base_n
    pooled = (hits + base_hits) / (n + base_n)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n + 1 / base_n))
    if se == 0:
        return 1.0 if p1 >= p0 else 0.0
    return float(norm.sf((p0 - p1) / se))


def wilson_ci(hits: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of ``hits / n`` (NaN, NaN when n is 0)."""
    from scipy.stats import norm

    if n <= 0:
        return math.nan, math.nan
    z = float(norm.ppf(0.5 + level / 2))
    p = hits / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
