"""The drift job's "gap grew over the baseline" and trend rules at small n.

A subtype under ``[jobs.drift] min_n`` is too few to judge by any rule, and the baseline comparison is
an exact test where the normal approximation of Mann-Whitney U is not sound: Fisher's for 0/1 gaps, the
exact or permutation distribution of U for a small baseline. Expected p-values are counted by hand
(hypergeometric tails with ``math.comb``, label assignments enumerated with ``itertools``).
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
from scipy.stats import binom

from costline.jobs.drift import SubtypeScores, assess_subtypes
from costline.jobs.settings import DriftConfig

CFG = DriftConfig()  # alpha 0.01, min_n 30, min_increase 0.03
#: The CI rule out of the way (a tolerated gap of 1.0 is never exceeded): only the baseline and trend rules judge.
NO_CI = dataclasses.replace(CFG, thresholds={"s": 1.0})


def binary(wrong: int, n: int) -> SubtypeScores:
    """``wrong`` of ``n`` exact-match items wrong against a teacher that is always right: gaps 1 and 0."""
    return SubtypeScores.of([0.0] * wrong + [1.0] * (n - wrong), 1.0)


def assess(cur: SubtypeScores, base: SubtypeScores | None = None, cfg: DriftConfig = NO_CI, history=None):
    return assess_subtypes({"s": cur}, cfg, baseline={"s": base} if base is not None else None,
                           history=history, rng=np.random.default_rng(0))[0]


def hypergeom_tail(k: int, n: int, kb: int, nb: int) -> float:
    """P(at least ``k`` of the ``k + kb`` wrong items fall among tonight's ``n`` of ``n + nb``): Fisher's
    one-sided p."""
    total, wrong = n + nb, k + kb
    return sum(math.comb(wrong, j) * math.comb(total - wrong, n - j)
               for j in range(k, min(wrong, n) + 1)) / math.comb(total, n)


@pytest.mark.parametrize("wrong, n, base_wrong, base_n", [
    (1, 3, 0, 30),    # the review's case: the asymptotic p was 0.0011, flagged
    (1, 5, 0, 30),
    (1, 3, 2, 500),
    (3, 10, 0, 30),
])
def test_under_min_n_the_baseline_rule_never_flags_and_its_p_is_exact(wrong, n, base_wrong, base_n):
    a = assess(binary(wrong, n), binary(base_wrong, base_n), cfg=CFG)
    assert not a.flagged
    assert f"too few to judge: {n} scored items, under [jobs.drift] min_n 30" in a.reason
    assert a.mwu_p == pytest.approx(hypergeom_tail(wrong, n, base_wrong, base_n), rel=1e-9)


@pytest.mark.parametrize("wrong, flagged", [
    (6, False),  # p = C(30,6)/C(60,6) = 0.0119 > 0.01 (the asymptotic test said 0.0054 and flagged it)
    (7, True),   # p = C(30,7)/C(60,7) = 0.0053
])
def test_from_min_n_0_1_gaps_get_fishers_exact_p(wrong, flagged):
    a = assess(binary(wrong, 30), binary(0, 30))
    p = math.comb(30, wrong) / math.comb(60, wrong)
    assert a.mwu_p == pytest.approx(p, rel=1e-9)
    assert a.flagged is flagged
    assert ("Fisher exact" in a.reason) is flagged


@pytest.mark.parametrize("n", [3, 5, 10])
def test_with_nothing_changed_the_false_alarm_rate_stays_under_alpha(n):
    """Exactly, over every outcome: tonight n items, the baseline 30, both missing 5 % (the review measured
    3.5 % at n = 3 and 5.6 % at n = 5 with the asymptotic test, nominal 1 %)."""
    p_wrong, base_n = 0.05, 30
    rate = 0.0
    for k in range(n + 1):
        for kb in range(base_n + 1):
            weight = binom.pmf(k, n, p_wrong) * binom.pmf(kb, base_n, p_wrong)
            if weight > 1e-12 and assess(binary(k, n), binary(kb, base_n), cfg=CFG).flagged:
                rate += weight
    assert rate <= CFG.alpha


def test_under_min_n_the_trend_rule_never_flags_and_from_min_n_it_still_does():
    # five runs rising 0.1 a run: Kendall tau 1, exact one-sided p = 1/5! = 0.0083 < 0.01, a rise of 0.4
    history = {"s": [0.0, 0.1, 0.2, 0.3]}
    few = assess(binary(2, 5), history=history)  # tonight's gap 0.4 from 5 items
    assert few.trend_p == pytest.approx(1 / math.factorial(5))
    assert not few.flagged and "too few to judge" in few.reason
    enough = assess(binary(12, 30), history=history)  # the same gap from 30 items
    assert enough.trend_p == pytest.approx(1 / math.factorial(5))
    assert enough.flagged and "rising" in enough.reason and "too few" not in enough.reason


def exact_u_tail(cur: list[float], base: list[float]) -> float:
    """P(U >= observed) over every assignment of the pooled values to the two groups (ties count a half)."""
    def u(a, b):
        return sum((x > y) + 0.5 * (x == y) for x in a for y in b)

    pooled = cur + base
    observed = u(cur, base)
    hits = total = 0
    for idx in itertools.combinations(range(len(pooled)), len(base)):
        chosen = set(idx)
        b = [pooled[i] for i in idx]
        a = [pooled[i] for i in range(len(pooled)) if i not in chosen]
        hits += u(a, b) >= observed - 1e-9
        total += 1
    return hits / total


def test_a_small_baseline_with_continuous_gaps_gets_the_exact_distribution_of_u():
    cur = list(0.30 + 0.01 * np.arange(30))  # 30 distinct gaps, all above the baseline's 5
    base = [0.01, 0.02, 0.03, 0.04, 0.05]
    a = assess(SubtypeScores.of(1.0 - np.array(cur), 1.0), SubtypeScores.of(1.0 - np.array(base), 1.0))
    assert a.mwu_p == pytest.approx(1 / math.comb(35, 5), rel=1e-6)  # the asymptotic test said ~2e-4
    assert a.flagged and "Mann-Whitney exact" in a.reason


def test_a_small_baseline_with_tied_gaps_gets_the_permutation_distribution_of_u():
    # judge-like gaps with ties; C(33, 3) = 5,456 assignments: scipy enumerates them all
    cur = [0.0] * 14 + [0.25] * 9 + [0.5] * 7
    base = [0.0, 0.0, 0.25]
    a = assess(SubtypeScores.of(1.0 - np.array(cur), 1.0), SubtypeScores.of(1.0 - np.array(base), 1.0))
    assert a.mwu_p == pytest.approx(exact_u_tail(cur, base), rel=1e-9)
