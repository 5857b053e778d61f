"""A low-volume tier is still watched by ``rejected_attempts_rise`` and ``cost_per_success_rise``.

A tier with 2 calls an hour never reaches ``min_attempts`` (30) or ``min_successes`` (20) in one hour, so it was
never judged (BAND forever, even at 100 % turned down or +400 % cost per success). A closed hour under the
minimum is now pooled with the hours just before it (at most ``POOL_HOURS`` = 24 in all) until the minimum is
reached, judged against the 7 days before less the pooled hours, and the message says "over the last K hours".
A tier with enough volume in the hour is judged exactly as before.

Every expected figure is written by hand from the rows below (sums of the hours named; p-values with scipy's
normal distribution), never with costline's SQL or rules. Table-driven at rule level, then through a real lake
(AlertSource: TIERS_SQL / REJECTIONS_SQL), live and frozen.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from scipy.stats import norm

from costline.alerts.rules import Condition, Rule, Snapshot, evaluate
from costline.alerts.settings import AlertsConfig, CostPerSuccessRiseSettings, RejectedAttemptsRiseSettings
from costline.alerts.source import AlertSource
from costline.config import Config, LakeConfig, PricingConfig
from costline.lake import Lake
from costline.processors.buffer import rows_to_tables
from costline.processors.records import CallRow, RequestRow

H = datetime(2026, 11, 8, 10)  # the closed hour judged
NOW = (H + timedelta(hours=1, minutes=1)).replace(tzinfo=UTC)
REJ = Rule("rejected_attempts_rise", RejectedAttemptsRiseSettings())  # min 30 calls, 200 in the week, +10 points
COST = Rule("cost_per_success_rise", CostPerSuccessRiseSettings())  # min 20 successes, 100 in the week, +25 %


def hours_back(k: int) -> datetime:
    return H - timedelta(hours=k)


def rej_row(attempts: int, rejected: int, attempts_7d: int, rejected_7d: int,
            recent: dict[int, tuple[int, int]] | None) -> dict:
    """A REJECTIONS_SQL row; ``recent``: hours back -> (attempts, rejected) of the hours before the closed one."""
    row = {"window_start": H, "tier": "upper", "attempts": attempts, "rejected": rejected, "problems": "schema 2",
           "attempts_7d": attempts_7d, "rejected_7d": rejected_7d}
    if recent is not None:
        row["recent"] = [{"window_start": hours_back(k), "attempts": a, "rejected": r,
                          "problems": f"schema {r}" if r else None} for k, (a, r) in sorted(recent.items())]
    return row


def tier_row(successes: int, cost: float, successes_7d: int, cost_7d: float,
             recent: dict[int, tuple[int, float]] | None) -> dict:
    """A TIERS_SQL row; ``recent``: hours back -> (successes, cost) of the hours before the closed one."""
    row = {"window_start": H, "tier": "upper", "requests": successes, "successes": successes, "cost_usd": cost,
           "successes_7d": successes_7d, "cost_usd_7d": cost_7d, "ignored": 0, "ignored_7d": 0}
    if recent is not None:
        row["recent"] = [{"window_start": hours_back(k), "successes": s, "cost_usd": c}
                         for k, (s, c) in sorted(recent.items())]
    return row


def every(first: int, last: int, value: tuple) -> dict[int, tuple]:
    return {k: value for k in range(first, last + 1)}


def pooled_window(hours: int) -> str:
    start = hours_back(hours - 1)  # the hours end with the closed one, at 11:00 on 2026-11-08
    return f"{start:%Y-%m-%d %H:%M}–" + ("11:00 UTC" if start.day == 8 else "2026-11-08 11:00 UTC")


def z_p(rej1: int, n1: int, rej2: int, n2: int) -> float:
    """One-sided p that the accepted share of sample 1 is lower than sample 2's (pooled two-proportion z-test)."""
    a1, a2 = (n1 - rej1) / n1, (n2 - rej2) / n2
    pooled = (n1 - rej1 + n2 - rej2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return float(norm.cdf((a1 - a2) / se))


# (case, row, expected value, expected baseline share, condition, hours pooled (1: not pooled))
REJECTION_CASES = [
    # the reviewer's tier: 2 calls an hour, the closed hour and the 14 before all turned down (30 of 30 over 15
    # hours); the week had 336 calls, 28 turned down (those 14 hours): baseline 308 calls, 0 turned down
    ("2 an hour, all turned down", rej_row(2, 2, 336, 28, every(1, 23, (2, 0)) | every(1, 14, (2, 2))),
     1.0, 0.0, Condition.BREACH, 15),
    # the same tier back to normal: 0 of 30 over 15 hours vs 17 of 308 (5.5 %): OK
    ("2 an hour, none turned down", rej_row(2, 0, 336, 17, every(1, 23, (2, 0))),
     0.0, 17 / 308, Condition.OK, 15),
    # hours with no calls are no rows: 10 + (hour -1 empty) + 10 + 10 = 30 calls over the last 4 hours, all
    # turned down; week 2000 calls / 120 turned down less the 20/20 pooled -> 1980 / 100
    ("gaps between hours", rej_row(10, 10, 2000, 120, {2: (10, 10), 3: (10, 10), 5: (10, 0)}),
     1.0, 100 / 1980, Condition.BREACH, 4),
    # pooled counts keep the significance test: 7 of 30 over 6 hours vs 500 of 5000 (p ~ 0.008 < 0.01): BREACH
    ("pooled and significant", rej_row(5, 2, 5025, 505, every(1, 5, (5, 1))),
     7 / 30, 0.1, Condition.BREACH, 6),
    # ... 6 of 30 vs 500 of 5000 is +10 points but p ~ 0.03: BAND
    ("pooled, not significant", rej_row(5, 1, 5025, 505, every(1, 5, (5, 1))),
     6 / 30, 0.1, Condition.BAND, 6),
    # 1 call an hour: 24 hours hold 24 calls, under 30: not judged, the closed hour's own figures as before
    ("24 hours are too few", rej_row(1, 1, 168, 23, every(1, 23, (1, 1))),
     1.0, 23 / 168, Condition.BAND, 1),
    # no row of recent hours (a hand-written or older row): as before
    ("no recent hours", rej_row(2, 2, 336, 0, None), 1.0, 0.0, Condition.BAND, 1),
    # the pooled hours are the whole week: no baseline left, as before (the hour alone, BAND)
    ("pool is the whole week", rej_row(2, 2, 28, 0, every(1, 14, (2, 0))), 1.0, 0.0, Condition.BAND, 1),
    # a busy tier: the hour alone, exactly as before, whatever the hours before it hold
    ("busy tier unchanged", rej_row(100, 30, 5000, 500, every(1, 23, (100, 100))),
     0.3, 0.1, Condition.BREACH, 1),
]


@pytest.mark.parametrize(("row", "value", "base", "cond", "hours"),
                         [c[1:] for c in REJECTION_CASES], ids=[c[0] for c in REJECTION_CASES])
def test_rejections_of_a_quiet_tier_are_pooled(row: dict, value: float, base: float, cond: Condition,
                                                hours: int) -> None:
    (obs,) = evaluate(REJ, Snapshot(rejections=[row]), NOW)
    assert obs.value == pytest.approx(value)
    assert obs.threshold == pytest.approx(base + 0.10)
    assert obs.condition is cond
    if hours > 1:
        assert obs.summary.startswith(f"over the last {hours} hours")
        assert obs.window == pooled_window(hours)
        assert f"TIMESTAMP '{hours_back(hours - 1):%Y-%m-%d %H:%M:%S}'" in obs.query
    else:
        assert "over the last" not in obs.summary and obs.window == "2026-11-08 10:00–11:00 UTC"
        assert obs.figures["turned down"] == f"{row['rejected']} of {row['attempts']} ({value:.1%})"


def test_the_pooled_test_is_the_z_test_on_the_pooled_counts() -> None:
    (obs,) = evaluate(REJ, Snapshot(rejections=[rej_row(5, 2, 5025, 505, every(1, 5, (5, 1)))]), NOW)
    assert obs.figures["turned down"] == "7 of 30 (23.3%)" and obs.figures["attempts (7 days)"] == 5000
    assert obs.figures["p-value"] == f"{z_p(7, 30, 500, 5000):.2g}"
    assert obs.figures["why (last 6 hours)"] == "schema 7"  # the hour's 'schema 2' + five hours' 'schema 1'


# (case, row, expected cost per success, expected 7-day level, condition, hours pooled)
COST_CASES = [
    # the reviewer's tier: 2 successes an hour at $0.05 each for the last 10 hours (20 successes, $1.00), the
    # week before at $0.01: 336 successes / $4.08 with the 9 pooled hours (18, $0.90) -> 318 / $3.18 = $0.01
    ("2 an hour at 5x", tier_row(2, 0.10, 336, 4.08, every(1, 23, (2, 0.02)) | every(1, 9, (2, 0.10))),
     0.05, 0.01, Condition.BREACH, 10),
    # back to normal: $0.20 / 20 = $0.01 vs 318 / $3.18: OK
    ("2 an hour, normal", tier_row(2, 0.02, 336, 3.36, every(1, 23, (2, 0.02))), 0.01, 0.01, Condition.OK, 10),
    # an hour whose cost is not a number is no hour: hours -2..-10 pooled, 11 hours in all
    ("a NaN hour is skipped", tier_row(2, 0.10, 336, 4.08, every(2, 10, (2, 0.10)) | {1: (2, float("nan"))}),
     0.05, 0.01, Condition.BREACH, 11),
    # 0.5 successes an hour: 1 + 11 over 24 hours, under 20: not judged, the hour's own figures
    ("24 hours are too few", tier_row(1, 0.05, 84, 0.84, every(1, 11, (1, 0.01))), 0.05, 0.01, Condition.BAND, 1),
    ("no recent hours", tier_row(2, 0.10, 336, 3.36, None), 0.05, 0.01, Condition.BAND, 1),
    # a busy tier: $1.50 / 100 vs $10 / 1000 (+50 %), exactly as before
    ("busy tier unchanged", tier_row(100, 1.5, 1000, 10.0, every(1, 23, (100, 100.0))),
     0.015, 0.01, Condition.BREACH, 1),
]


@pytest.mark.parametrize(("row", "value", "base", "cond", "hours"),
                         [c[1:] for c in COST_CASES], ids=[c[0] for c in COST_CASES])
def test_cost_of_a_quiet_tier_is_pooled(row: dict, value: float, base: float, cond: Condition, hours: int) -> None:
    (obs,) = evaluate(COST, Snapshot(tiers=[row]), NOW)
    assert obs.value == pytest.approx(value)
    assert obs.threshold == pytest.approx(base * 1.25)
    assert obs.condition is cond
    if hours > 1:
        assert obs.summary.startswith(f"over the last {hours} hours")
        assert obs.window == pooled_window(hours)
        assert obs.figures["pooled"].startswith(f"last {hours} hours")
    else:
        assert "over the last" not in obs.summary and "pooled" not in obs.figures
        assert obs.figures["successes"] == row["successes"]


# --- through a real lake ---------------------------------------------------------------------------------------


def _us(t: datetime) -> int:
    return int(t.replace(tzinfo=UTC).timestamp() * 1_000_000)


def _commit(path: Path, requests: list, calls: list) -> Config:
    cfg = Config(lake=LakeConfig(path=path), pricing=PricingConfig(student_usd_per_hour=0.0), alerts=AlertsConfig())
    Lake(path).init().commit_batch("otlp_spans", 0, 0, len(requests) + len(calls), {
        "requests": rows_to_tables("requests", requests), "calls": rows_to_tables("calls", calls)})
    return cfg


def quiet_lake(path: Path, *, turned_down_hours: int = 0, dear_hours: int = 0) -> Config:
    """Tier ``upper``: 2 requests an hour (one call each) for the 168 hours before H and H itself. Each call costs
    $0.01, $0.05 in the last ``dear_hours`` hours (H and those before it); the answers of the last
    ``turned_down_hours`` hours are all turned down ('upper:output_format', the request then answered by ``mid``)."""
    requests, calls = [], []
    for back in range(0, 169):
        hour = hours_back(back)
        for k in range(2):
            n = len(requests)
            rid, tid, t = f"r{n}", f"t{n}", hour + timedelta(minutes=10 + 20 * k)
            turned_down = back < turned_down_hours
            requests.append(RequestRow(rid, tid, f"s{rid}", _us(t), "acme", "faq", "x",
                                       "mid" if turned_down else "upper", "upper", False, 2 if turned_down else 1,
                                       1 if turned_down else 0, True, None, 5.0, None, None, 0, n, None,
                                       "upper:output_format" if turned_down else None))
            tiers = ["upper", "mid"] if turned_down else ["upper"]
            for j, tier in enumerate(tiers):
                cost = (0.05 if back < dear_hours else 0.01) if tier == "upper" else 0.0
                calls.append(CallRow(f"c{n}-{j}", tid, f"c{n}{j}", rid, _us(t), "chat", "anthropic", "m", "m", tier,
                                     100, 10, 0, 0, False, ["stop"], None, cost, "priced", "v", 5.0, None, None, 0,
                                     n))
    return _commit(path, requests, calls)


def _snapshot(cfg: Config, rule: str, frozen: bool) -> Snapshot:
    source = AlertSource(cfg)
    if frozen:
        with source.frozen():
            return source.snapshot(NOW, [rule])
    return source.snapshot(NOW, [rule])


@pytest.mark.parametrize("frozen", [False, True])
def test_a_quiet_tier_turned_down_every_time_fires_from_the_lake(tmp_path: Path, frozen: bool) -> None:
    cfg = quiet_lake(tmp_path / "lake", turned_down_hours=15)
    upper = {o.labels["tier"]: o for o in evaluate(REJ, _snapshot(cfg, REJ.name, frozen), NOW)}["upper"]
    # 15 hours x 2 calls, all turned down, vs the 154 hours before them: 308 calls, none turned down
    assert upper.condition is Condition.BREACH
    assert upper.value == pytest.approx(1.0) and upper.threshold == pytest.approx(0.10)
    assert upper.figures["turned down"] == "30 of 30 (100.0%)" and upper.figures["attempts (7 days)"] == 308
    assert upper.summary.startswith("over the last 15 hours") and "output_format 30" in upper.summary
    assert upper.window == "2026-11-07 20:00–2026-11-08 11:00 UTC"


@pytest.mark.parametrize("frozen", [False, True])
def test_a_quiet_tier_whose_calls_cost_5x_fires_from_the_lake(tmp_path: Path, frozen: bool) -> None:
    cfg = quiet_lake(tmp_path / "lake", dear_hours=10)
    upper = {o.labels["tier"]: o for o in evaluate(COST, _snapshot(cfg, COST.name, frozen), NOW)}["upper"]
    # the last 10 hours: 20 successes, $1.00 -> $0.05; the 159 hours before them (H-168..H-10): 318 at $0.01
    assert upper.condition is Condition.BREACH
    assert upper.value == pytest.approx(0.05) and upper.threshold == pytest.approx(0.01 * 1.25)
    assert upper.figures["successes"] == 20 and upper.figures["successes (7 days)"] == 318
    assert upper.summary.startswith("over the last 10 hours") and upper.window == "2026-11-08 01:00–11:00 UTC"
