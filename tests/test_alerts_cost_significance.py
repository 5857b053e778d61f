"""cost_per_success_rise pages on a rise its requests' spread explains no more: a significance test beside the +25 %.

The rule used to fire on any window at least 25 % over the 7-day level with 20 successes. Cost per request is
spread wide on real traffic (a few long answers among 20), so a quiet tier paged on noise (the demo replay paged
the budget tier three times at +26–32 %). Now it also needs a one-sided test of the rise at p < 0.01 (the delta
method on cost per success as a ratio of two sums; tier_hourly carries the sums of squares it needs).

Real parts: rows committed to a lake in tmp_path, the AlertSource's SQL over the real views, the rule. Expected
p-values are computed here from the per-request arrays with numpy and scipy, not from costline's sums.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm

from costline.alerts.rules import Condition, Rule, evaluate, ratio_rise_p_value
from costline.alerts.settings import AlertsConfig, CostPerSuccessRiseSettings
from costline.alerts.source import AlertSource
from costline.config import Config, LakeConfig, PricingConfig
from costline.lake import Lake
from costline.processors.buffer import rows_to_tables
from costline.processors.records import CallRow, RequestRow

H = datetime(2026, 11, 8, 10)  # the hour judged
NOW = (H + timedelta(hours=1, minutes=1)).replace(tzinfo=UTC)
DEFAULTS = CostPerSuccessRiseSettings()  # rise 25 %, min_successes 20 / 100, p < 0.01


def reference_p(cost_now, ok_now, cost_base, ok_base) -> float:
    """The delta-method test written from the per-request arrays: R = Σx/Σs, Var(R) = s²(x − R·s) / (n · mean(s)²)."""
    def ratio_and_var(x, s):
        x, s = np.asarray(x, float), np.asarray(s, float)
        r = x.sum() / s.sum()
        return r, np.var(x - r * s, ddof=1) / (len(x) * s.mean() ** 2)

    (r1, v1), (r2, v2) = ratio_and_var(cost_now, ok_now), ratio_and_var(cost_base, ok_base)
    return float(norm.sf((r1 - r2) / np.sqrt(v1 + v2)))


def us(t: datetime) -> int:
    return int(t.replace(tzinfo=UTC).timestamp() * 1_000_000)


def lake(path: Path, requests: list[tuple[datetime, float, bool]]) -> Config:
    """A lake of budget-tier requests, one call each: (time, call cost, success)."""
    reqs, calls = [], []
    for i, (t, cost, ok) in enumerate(requests):
        rid = f"r{i}"
        reqs.append(RequestRow(rid, f"t{i}", f"s{i}", us(t), "acme", "faq", None, "budget", "budget", False, 1, 0, ok,
                               None if ok else "timeout", 5.0, None, None, 0, i))
        calls.append(CallRow(f"c{i}", f"t{i}", f"s{i}", rid, us(t), "chat", "anthropic", "claude-haiku-4-5",
                             "claude-haiku-4-5", "budget", 100, 10, 0, 0, False, ["end_turn"],
                             None if ok else "timeout", cost, "priced", "v", 5.0, None, None, 0, i))
    cfg = Config(lake=LakeConfig(path=path), pricing=PricingConfig(student_usd_per_hour=0.0),
                 alerts=AlertsConfig(cost_per_success_rise=DEFAULTS))
    Lake(path).init().commit_batch("otlp_spans", 0, 0, len(reqs), {
        "requests": rows_to_tables("requests", reqs), "calls": rows_to_tables("calls", calls)})
    return cfg


def spread_out(values: list[float], start: datetime, hours: int) -> list[tuple[datetime, float, bool]]:
    """Successful requests with these costs, spread over ``hours`` hours from ``start``."""
    step = timedelta(hours=hours) / len(values)
    return [(start + i * step, v, True) for i, v in enumerate(values)]


# baseline: 150 successes over the 6 hours before, mean $0.010; the hour: 20 successes and 2 failures
WIDE_BASE = [0.001, 0.019] * 75              # mean 0.010, sd 0.009
WIDE_HOUR = [0.004, 0.022] * 10              # mean 0.013: +30 %, as wide
TIGHT_BASE = [0.0099, 0.0101] * 75           # mean 0.010
TIGHT_HOUR = [0.0128, 0.0132] * 10           # mean 0.013: +30 %, tight
FAILED = [0.002, 0.002]                      # two failed requests in the hour, their cost counts


@pytest.mark.parametrize("base, hour, condition", [
    (WIDE_BASE, WIDE_HOUR, Condition.BAND),    # +32 %, within the spread: no page (it paged before)
    (TIGHT_BASE, TIGHT_HOUR, Condition.BREACH),  # +32 %, far outside it: pages
])
def test_a_rise_pages_only_when_the_requests_spread_does_not_explain_it(tmp_path, base, hour, condition) -> None:
    rows = spread_out(base, H - timedelta(hours=6), 6) + spread_out(hour, H, 1)
    rows += [(H + timedelta(minutes=30 + i), c, False) for i, c in enumerate(FAILED)]
    cfg = lake(tmp_path / "lake", rows)
    snap = AlertSource(cfg).snapshot(NOW, ["cost_per_success_rise"])
    (obs,) = evaluate(Rule("cost_per_success_rise", DEFAULTS), snap, NOW)
    cost_per_success = (sum(hour) + sum(FAILED)) / len(hour)
    assert obs.value == pytest.approx(cost_per_success)
    assert obs.value / (sum(base) / len(base)) - 1 >= 0.25  # the rise alone would page
    p = reference_p(hour + FAILED, [1] * len(hour) + [0] * len(FAILED), base, [1] * len(base))
    assert (p < 0.01) is (condition is Condition.BREACH)
    assert obs.figures["p-value"] == f"{p:.2g} (fires under 0.01)"
    assert obs.condition is condition


@pytest.mark.parametrize("x_now, s_now, x_base, s_base", [
    ([0.004, 0.022] * 10, [1] * 20, [0.001, 0.019] * 75, [1] * 150),
    ([0.01, 0.03, 0.02, 0.0, 0.05], [1, 1, 0, 1, 1], [0.01, 0.012, 0.02, 0.011] * 30, [1, 1, 1, 0] * 30),
    ([0.5, 0.1, 0.1], [1, 0, 1], [0.2, 0.2, 0.3, 0.1], [1, 1, 1, 1]),
])
def test_the_p_value_from_sums_is_the_one_from_the_requests(x_now, s_now, x_base, s_base) -> None:
    def sums(x, s):
        x, s = np.asarray(x, float), np.asarray(s, float)
        return {"n": len(x), "cost": x.sum(), "successes": s.sum(), "cost_sq": (x * x).sum(),
                "success_cost": (x * s).sum()}

    assert ratio_rise_p_value(sums(x_now, s_now), sums(x_base, s_base)) == pytest.approx(
        reference_p(x_now, s_now, x_base, s_base), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("now, base, expected", [
    ({"n": 1, "cost": 1.0, "successes": 1, "cost_sq": 1.0, "success_cost": 1.0},
     {"n": 5, "cost": 1.0, "successes": 5, "cost_sq": 0.2, "success_cost": 1.0}, None),  # one request: no spread
    ({"cost": 1.0, "successes": 1}, {"n": 5, "cost": 1.0, "successes": 5, "cost_sq": 0.2, "success_cost": 1.0},
     None),  # a row of an older source: no sums
    ({"n": 4, "cost": 4.0, "successes": 0, "cost_sq": 4.0, "success_cost": 0.0},
     {"n": 5, "cost": 1.0, "successes": 5, "cost_sq": 0.2, "success_cost": 1.0}, None),  # no success
    ({"n": 3, "cost": 3.0, "successes": 3, "cost_sq": 3.0, "success_cost": 3.0},
     {"n": 3, "cost": 1.5, "successes": 3, "cost_sq": 0.75, "success_cost": 1.5}, 0.0),  # no spread, a rise: sure
    ({"n": 3, "cost": 1.5, "successes": 3, "cost_sq": 0.75, "success_cost": 1.5},
     {"n": 3, "cost": 3.0, "successes": 3, "cost_sq": 3.0, "success_cost": 3.0}, 1.0),  # no spread, a fall
    ({"n": 3, "cost": float("nan"), "successes": 3, "cost_sq": 3.0, "success_cost": 3.0},
     {"n": 3, "cost": 1.5, "successes": 3, "cost_sq": 0.75, "success_cost": 1.5}, None),
])
def test_edge_cases_of_the_test(now, base, expected) -> None:
    assert ratio_rise_p_value(now, base) == expected
