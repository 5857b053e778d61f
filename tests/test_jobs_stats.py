"""The jobs' statistics, table-driven with seeded RNGs (no lake, no HTTP)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from costline.jobs.sampling import allocate
from costline.jobs.stats import (
    bootstrap_mean_ci,
    ks_test,
    mann_whitney_greater,
    mmd_permutation_test,
    proportion_drop_p,
    psi,
    trend,
    wilson_ci,
)


@pytest.mark.parametrize("mean, sd, n", [(0.0, 1.0, 200), (0.05, 0.1, 125), (0.9, 0.05, 500)])
def test_bootstrap_ci_covers_the_mean_and_shrinks_with_n(mean, sd, n):
    rng = np.random.default_rng(1)
    x = rng.normal(mean, sd, n)
    lo, hi = bootstrap_mean_ci(x, resamples=1000, rng=np.random.default_rng(2))
    assert lo < x.mean() < hi
    half = 1.96 * sd / math.sqrt(n)
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.2)


def test_bootstrap_ci_degenerate_cases():
    assert math.isnan(bootstrap_mean_ci([])[0])
    assert bootstrap_mean_ci([0.3, 0.3, 0.3]) == (0.3, 0.3)


@pytest.mark.parametrize("shift, significant", [(0.0, False), (0.05, True), (-0.05, False)])
def test_mann_whitney_one_sided(shift, significant):
    rng = np.random.default_rng(3)
    base = rng.normal(0.1, 0.05, 150)
    cur = rng.normal(0.1 + shift, 0.05, 150)
    assert (mann_whitney_greater(cur, base) < 0.01) is significant


@pytest.mark.parametrize("slope, up, down", [(0.01, True, False), (0.0, False, False), (-0.01, False, True)])
def test_trend_theil_sen_and_mann_kendall(slope, up, down):
    rng = np.random.default_rng(4)
    y = 0.1 + slope * np.arange(14) + rng.normal(0, 0.002, 14)
    t = trend(y)
    assert t.slope == pytest.approx(slope, abs=0.002)
    assert (t.p_increasing < 0.01) is up
    assert (t.p_decreasing < 0.01) is down


def test_trend_short_or_flat_series_is_not_significant():
    assert trend([0.1, 0.2]).p_increasing == 1.0
    assert trend([0.1] * 10).p_increasing == 1.0


@pytest.mark.parametrize("expected, actual, low, high", [
    ({"a": 50, "b": 50}, {"a": 50, "b": 50}, 0.0, 1e-9),
    ({"a": 50, "b": 50}, {"a": 60, "b": 40}, 0.01, 0.1),
    ({"a": 50, "b": 50}, {"a": 25, "b": 25, "new": 50}, 2.0, 10.0),  # a subtype the student never saw
])
def test_psi(expected, actual, low, high):
    assert low <= psi(expected, actual) <= high


def test_ks_on_lengths():
    rng = np.random.default_rng(5)
    a = rng.normal(100, 10, 300)
    stat, p = ks_test(a, rng.normal(100, 10, 300))
    assert p > 0.01
    stat, p = ks_test(a, rng.normal(130, 10, 300))
    assert stat > 0.5 and p < 1e-6


@pytest.mark.parametrize("offset, drifted", [(0.0, False), (1.5, True)])
def test_mmd_permutation(offset, drifted):
    rng = np.random.default_rng(6)
    x = rng.normal(0, 1, (120, 8))
    y = rng.normal(0, 1, (120, 8))
    y[:, 0] += offset
    mmd, p = mmd_permutation_test(x, y, permutations=200, rng=np.random.default_rng(7))
    assert (p < 0.01) is drifted
    assert mmd >= -1e-9 or not drifted


@pytest.mark.parametrize("hits, n, bh, bn, low_p", [(85, 100, 95, 100, True), (95, 100, 95, 100, False),
                                                    (99, 100, 90, 100, False)])
def test_proportion_drop(hits, n, bh, bn, low_p):
    assert (proportion_drop_p(hits, n, bh, bn) < 0.05) is low_p


def test_wilson_ci():
    lo, hi = wilson_ci(90, 100)
    assert lo < 0.9 < hi and hi - lo < 0.13
    assert wilson_ci(0, 10)[0] == 0.0


@pytest.mark.parametrize("counts, total, floor, expected", [
    ({"a": 1000, "b": 100, "c": 5}, 500, 30, {"a": 426, "b": 69, "c": 5}),
    ({"a": 10, "b": 10}, 500, 30, {"a": 10, "b": 10}),
    ({"a": 333, "b": 333, "c": 334}, 100, 0, {"a": 33, "b": 33, "c": 34}),
    ({"a": 100, "b": 100, "c": 100}, 10, 30, {"a": 4, "b": 3, "c": 3}),
])
def test_stratified_allocation(counts, total, floor, expected):
    got = allocate(counts, total, floor)
    assert got == expected
    assert sum(got.values()) == min(total, sum(counts.values()))
