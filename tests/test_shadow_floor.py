"""The shadow job's floor rule: a tier is flagged only when its tier-match rate is *significantly* under
``[jobs.shadow] min_rate`` (the exact Clopper-Pearson upper bound at one-sided 1 - alpha below it), and
never from fewer than ``MIN_N`` (30) scored requests. Bounds from scipy's beta quantiles, chances of a
flag summed exactly over scipy's binomial distribution."""

from __future__ import annotations

import dataclasses

import pytest
from scipy.stats import beta, binom

from costline.jobs.settings import ShadowConfig

CFG = ShadowConfig()  # min_rate 0.85, alpha 0.01, drop 0.05


def assess(hits: int, n: int, cfg: ShadowConfig = CFG, history=None):
    from costline.jobs.shadow import assess_tiers

    return assess_tiers({"mid": (hits, n)}, cfg, history={"mid": history} if history else None)[0]


def upper(hits: int, n: int, alpha: float = 0.01) -> float:
    """Clopper-Pearson one-sided upper bound: the 1 - alpha quantile of Beta(hits + 1, n - hits)."""
    return 1.0 if hits == n else float(beta.ppf(1 - alpha, hits + 1, n - hits))


@pytest.mark.parametrize("hits, n", [
    (4, 5),      # 80 % of 5: a bare rate under the floor, too few to judge
    (8, 10),
    (0, 10),     # even none of 10: under 30 scored requests no rule judges
    (24, 30),    # 80 % of 30: its upper bound (93 %) is over the floor
    (120, 150),  # 80 % of 150: upper bound 86 %, still over 85 %
])
def test_a_rate_under_the_floor_by_chance_is_not_flagged(hits, n):
    a = assess(hits, n)
    assert a.rate < CFG.min_rate and not a.flagged
    assert ("too few to judge" in a.reason) is (n < 30)
    if n >= 30:
        assert upper(hits, n) > CFG.min_rate


@pytest.mark.parametrize("hits, n", [(100, 150), (18, 30)])
def test_a_rate_significantly_under_the_floor_is_flagged_naming_its_upper_bound(hits, n):
    a = assess(hits, n)
    bound = upper(hits, n)
    assert bound < CFG.min_rate and a.flagged
    assert f"upper bound {bound:.1%}" in a.reason and "under the floor 85%" in a.reason


@pytest.mark.parametrize("n", [5, 10, 30, 150])
def test_a_tier_exactly_at_the_floor_is_flagged_at_most_alpha_of_nights(n):
    """The review: a tier matching 90 % of the time was flagged on 41 % of nights at n = 5, 26 % at n = 10,
    2.6 % at n = 150; one exactly at the floor was flagged on about half of them."""
    for p in (0.90, CFG.min_rate):
        chance = sum(binom.pmf(k, n, p) for k in range(n + 1) if assess(k, n).flagged)
        assert chance <= CFG.alpha, (p, chance)
    if n == 150:  # and it still finds a tier well under the floor
        assert sum(binom.pmf(k, n, 0.70) for k in range(n + 1) if assess(k, n).flagged) > 0.95


def test_under_30_the_drop_rule_does_not_judge_either():
    history = [(95, 100)] * 7
    few = assess(2, 10, cfg=dataclasses.replace(CFG, min_rate=0.0), history=history)
    assert not few.flagged and "too few to judge" in few.reason
    enough = assess(20, 30, cfg=dataclasses.replace(CFG, min_rate=0.0), history=history)
    assert enough.flagged and "fell" in enough.reason
