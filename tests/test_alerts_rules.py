"""The rules are pure: table-driven over hand-written snapshots, no lake."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from costline.alerts.rules import (
    Condition,
    Rule,
    Snapshot,
    closed_window,
    evaluate,
    fingerprint,
    rules_from_config,
    two_proportion_p_value,
)
from costline.alerts.settings import (
    AlertsConfig,
    CacheHitRateDropSettings,
    CostPerSuccessRiseSettings,
    DlqGrowingSettings,
    PipelineSilentSettings,
    RoutingTierMatchDropSettings,
    StudentDriftSettings,
)

NOW = datetime(2026, 11, 7, 11, 1, tzinfo=UTC)  # judges the 10:00-11:00 window (settle 30 s)
W = datetime(2026, 11, 7, 10, 0)


def test_closed_window_waits_for_settle() -> None:
    assert closed_window(NOW, 30) == W
    assert closed_window(datetime(2026, 11, 7, 11, 0, 10, tzinfo=UTC), 30) == W - timedelta(hours=1)


def cache_row(rate: float, avg: float, lookups: int = 200, lookups_7d: int = 5000, **kw: object) -> dict:
    return {"window_start": kw.get("window_start", W), "tenant": kw.get("tenant", "acme"), "hit_rate": rate,
            "avg_7d": avg, "lookups": lookups, "hits": round(rate * lookups), "lookups_7d": lookups_7d}


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (cache_row(0.30, 0.45), Condition.BREACH),            # 15 points under, lots of data
        (cache_row(0.35, 0.45), Condition.BREACH),            # exactly 10 points
        (cache_row(0.37, 0.45), Condition.BAND),              # 8 points: inside the hysteresis band
        (cache_row(0.41, 0.45), Condition.OK),                # 4 points: within 5, resolves
        (cache_row(0.50, 0.45), Condition.OK),                # above the average
        (cache_row(0.20, 0.45, lookups=20), Condition.BAND),  # a quiet hour: too few lookups
        (cache_row(0.20, 0.45, lookups_7d=100), Condition.BAND),  # no real baseline yet
        (cache_row(0.33, 0.45, lookups=52), Condition.BAND),  # 12 points on 52 lookups: not significant
    ],
)
def test_cache_hit_rate_drop(row: dict, expected: Condition) -> None:
    rule = Rule("cache_hit_rate_drop", CacheHitRateDropSettings(), settle_s=30)
    (obs,) = evaluate(rule, Snapshot(cache=[row]), NOW)
    assert obs.condition is expected
    assert obs.labels == {"tenant": "acme"}
    assert "cache_hit_rate_7d" in obs.query and "'acme'" in obs.query
    assert obs.figures["7-day average"] == f"{row['avg_7d']:.1%}"


def test_cache_rule_only_judges_the_closed_window_and_skips_without_data() -> None:
    rule = Rule("cache_hit_rate_drop", CacheHitRateDropSettings(), settle_s=30)
    old = cache_row(0.1, 0.45, window_start=W - timedelta(hours=1))
    no_history = dict(cache_row(0.1, 0.45), avg_7d=None)
    assert evaluate(rule, Snapshot(cache=[old, no_history]), NOW) == []
    assert evaluate(rule, Snapshot(), NOW) is None  # source unavailable: skipped


def test_two_proportion_p_value() -> None:
    assert two_proportion_p_value(60, 200, 2250, 5000) < 1e-4
    assert two_proportion_p_value(90, 200, 2250, 5000) > 0.4
    assert two_proportion_p_value(0, 0, 10, 10) == 1.0


def tier_row(tier: str, cost: float, succ: int, cost_7d: float, succ_7d: int) -> dict:
    return {"window_start": W, "tier": tier, "requests": succ, "successes": succ, "cost_usd": cost,
            "successes_7d": succ_7d, "cost_usd_7d": cost_7d}


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (tier_row("mid", 1.30, 100, 100.0, 10000), Condition.BREACH),  # +30%
        (tier_row("mid", 1.20, 100, 100.0, 10000), Condition.BAND),    # +20%: between 10 and 25
        (tier_row("mid", 1.05, 100, 100.0, 10000), Condition.OK),
        (tier_row("mid", 0.50, 10, 100.0, 10000), Condition.BAND),     # +400% but only 10 successes
    ],
)
def test_cost_per_success_rise(row: dict, expected: Condition) -> None:
    rule = Rule("cost_per_success_rise", CostPerSuccessRiseSettings(), settle_s=30)
    (obs,) = evaluate(rule, Snapshot(tiers=[row]), NOW)
    assert obs.condition is expected and obs.labels == {"tier": "mid"}


def test_cost_rule_ignores_the_cache_tier() -> None:
    rule = Rule("cost_per_success_rise", CostPerSuccessRiseSettings(), settle_s=30)
    assert evaluate(rule, Snapshot(tiers=[tier_row("cache", 9.0, 100, 1.0, 10000)]), NOW) == []


def eval_run(gap: float, lo: float, hi: float, *, n: int = 800, days_ago: int = 0, threshold: float | None = 0.05) -> dict:
    return {"run_id": f"r{days_ago}", "finished_at": W - timedelta(days=days_ago), "subtype": "intent", "gap": gap,
            "gap_ci_low": lo, "gap_ci_high": hi, "threshold": threshold, "n": n}


@pytest.mark.parametrize(
    ("runs", "expected"),
    [
        ([eval_run(0.09, 0.07, 0.11)], Condition.BREACH),            # CI wholly above the tolerated gap
        ([eval_run(0.06, 0.03, 0.09)], Condition.BAND),              # CI straddles it
        ([eval_run(0.02, 0.00, 0.04)], Condition.OK),
        ([eval_run(0.02, 0.0, 0.04), eval_run(0.09, 0.07, 0.11, days_ago=1)], Condition.OK),  # latest wins
        ([eval_run(0.09, 0.07, 0.11, threshold=None)], Condition.BREACH),  # default max_gap 0.05
        ([eval_run(0.09, 0.07, 0.11, n=30)], Condition.BREACH),      # n = min_n (30, the drift job's) is enough
        # the latest run too small (n < min_n 30) to judge: no fresh evidence, the state is kept (band);
        # never the verdict of an older run, whichever way it went
        ([eval_run(0.09, 0.07, 0.11, n=29)], Condition.BAND),
        ([eval_run(0.09, 0.07, 0.11, n=20), eval_run(0.02, 0.0, 0.04, days_ago=1)], Condition.BAND),
        ([eval_run(0.0, -0.01, 0.01, n=20), eval_run(0.20, 0.15, 0.25, n=150, days_ago=6)], Condition.BAND),
        ([eval_run(0.0, -0.01, 0.01, n=20, days_ago=d) for d in range(0, 6)]
         + [eval_run(0.20, 0.15, 0.25, n=150, days_ago=6)], Condition.BAND),
    ],
)
def test_student_drift(runs: list[dict], expected: Condition) -> None:
    (obs,) = evaluate(Rule("student_drift", StudentDriftSettings()), Snapshot(eval_runs=runs), NOW)
    assert obs.condition is expected and obs.labels == {"subtype": "intent"}
    assert obs.window == "eval run r0 finished 2026-11-07 10:00 UTC"  # always the latest run
    too_few = runs[0]["n"] < 30
    assert ("too few to judge" in obs.summary) is too_few
    assert obs.figures["queries evaluated"] == (f"{runs[0]['n']} (too few to judge: min_n 30)" if too_few
                                                else runs[0]["n"])


def test_student_drift_judges_the_latest_run_through_the_state_machine(tmp_path) -> None:
    import json

    from costline.alerts.engine import FIRING, RESOLVED, AlertEngine
    from costline.alerts.store import AlertStore

    rule = Rule("student_drift", StudentDriftSettings())
    big_breach = eval_run(0.20, 0.15, 0.25, n=150, days_ago=6)
    small = [eval_run(0.0, -0.01, 0.01, n=20, days_ago=d) for d in (5, 4, 3, 2, 1)]  # under min_n 30

    def night(engine: AlertEngine, runs: list[dict], days_ago: int) -> tuple[str, list[str], str]:
        at = NOW - timedelta(days=days_ago)
        res = engine.apply({"student_drift": evaluate(rule, Snapshot(eval_runs=runs), at)}, now=at)
        (row,) = engine.store.query("SELECT state, observation FROM alerts")
        return row["state"], [to for _fp, _frm, to in res.transitions], json.loads(row["observation"])["window"]

    # fired on a big run, then five small runs: still firing (no fresh evidence), quoting the latest run
    # (not the six-day-old one); a big clean run resolves it
    engine = AlertEngine(AlertStore(tmp_path / "a.sqlite"), AlertsConfig(), targets=("console",))
    assert night(engine, [big_breach], 6) == (FIRING, [FIRING], "eval run r6 finished 2026-11-01 10:00 UTC")
    assert night(engine, [big_breach, *small], 1) == (FIRING, [], "eval run r1 finished 2026-11-06 10:00 UTC")
    assert night(engine, [big_breach, *small, eval_run(0.0, -0.01, 0.01)], 0) == (
        RESOLVED, [RESOLVED], "eval run r0 finished 2026-11-07 10:00 UTC")
    # first evaluated (a new state file) when the latest run is small: nothing fires on the old big run, and a
    # series that never breached keeps no row (the state holds what fired, not every series ever seen)
    engine = AlertEngine(AlertStore(tmp_path / "b.sqlite"), AlertsConfig(), targets=("console",))
    at = NOW - timedelta(days=1)
    observations = evaluate(rule, Snapshot(eval_runs=[big_breach, *small]), at)
    assert observations and all(o.condition != "breach" for o in observations)
    assert observations[-1].window == "eval run r1 finished 2026-11-06 10:00 UTC"
    assert engine.apply({"student_drift": observations}, now=at).transitions == []
    assert engine.store.query("SELECT state FROM alerts") == []


def shadow(rate: float, days_ago: int, tier: str = "budget", n: int = 500) -> dict:
    return {"run_id": f"s{days_ago}", "finished_at": W - timedelta(days=days_ago), "tier": tier,
            "tier_match_rate": rate, "n": n}


@pytest.mark.parametrize(
    ("latest", "expected"),
    [(0.86, Condition.BREACH), (0.91, Condition.BAND), (0.94, Condition.OK), (0.80, Condition.BREACH)],
)
def test_routing_tier_match_drop(latest: float, expected: Condition) -> None:
    runs = [shadow(latest, 0)] + [shadow(0.95, d) for d in range(1, 8)]
    (obs,) = evaluate(Rule("routing_tier_match_drop", RoutingTierMatchDropSettings()), Snapshot(shadow_runs=runs), NOW)
    assert obs.condition is expected  # baseline 0.95 - 5 points = 0.90; resolves from 0.92


@pytest.mark.parametrize(
    ("runs", "expected", "fires_under"),
    [
        # the newest run is small: no fresh evidence (state kept), never the older big run's breach; the baseline
        # is the 7 big runs before it: (0.70 + 6 x 0.95) / 7 - 5 points
        ([shadow(0.95, 0, n=80), shadow(0.70, 1)] + [shadow(0.95, d) for d in range(2, 9)], Condition.BAND,
         (0.70 + 6 * 0.95) / 7 - 0.05),
        ([shadow(0.70, 0, n=100)] + [shadow(0.95, d) for d in range(1, 8)], Condition.BREACH, 0.90),  # n = min_n
        # small runs make no baseline: 0.50 twice at n=20 leave the 0.95 runs' (fires under 0.90)
        ([shadow(0.91, 0), shadow(0.50, 1, n=20), shadow(0.50, 2, n=20)] + [shadow(0.95, d) for d in range(3, 10)],
         Condition.BAND, 0.90),
    ],
)
def test_routing_tier_match_drop_judges_the_latest_run(runs: list, expected: Condition, fires_under: float) -> None:
    (obs,) = evaluate(Rule("routing_tier_match_drop", RoutingTierMatchDropSettings()), Snapshot(shadow_runs=runs), NOW)
    assert (obs.condition, obs.window.split()[2]) == (expected, "s0")  # the latest run, whatever its size
    assert obs.threshold == pytest.approx(fires_under)


def test_job_rules_skip_when_their_view_is_missing() -> None:
    assert evaluate(Rule("student_drift", StudentDriftSettings()), Snapshot(), NOW) is None
    assert evaluate(Rule("routing_tier_match_drop", RoutingTierMatchDropSettings()), Snapshot(), NOW) is None


@pytest.mark.parametrize(
    ("last", "known", "expected"),
    [(NOW - timedelta(minutes=20), True, Condition.BREACH), (NOW - timedelta(minutes=2), True, Condition.OK)],
)
def test_pipeline_silent(last: datetime, known: bool, expected: Condition) -> None:
    snap = Snapshot(last_span_at=last.replace(tzinfo=None), spans_known=known)
    (obs,) = evaluate(Rule("pipeline_silent", PipelineSilentSettings()), snap, NOW)
    assert obs.condition is expected and obs.labels == {}


def test_pipeline_silent_needs_a_readable_non_empty_lake() -> None:
    rule = Rule("pipeline_silent", PipelineSilentSettings())
    assert evaluate(rule, Snapshot(spans_known=False), NOW) is None
    assert evaluate(rule, Snapshot(spans_known=True, last_span_at=None), NOW) == []


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        ([(NOW - timedelta(minutes=20), 5), (NOW - timedelta(minutes=5), 5), (NOW, 7)], Condition.BREACH),
        ([(NOW - timedelta(minutes=20), 5), (NOW, 5)], Condition.OK),
        ([(NOW - timedelta(minutes=40), 1), (NOW - timedelta(minutes=20), 5), (NOW, 5)], Condition.OK),
    ],
)
def test_dlq_growing(samples: list, expected: Condition) -> None:
    (obs,) = evaluate(Rule("dlq_growing", DlqGrowingSettings()), Snapshot(dlq_samples=samples), NOW)
    assert obs.condition is expected


def test_rules_from_config_and_fingerprints() -> None:
    cfg = AlertsConfig(dlq_growing=DlqGrowingSettings(enabled=False))
    names = [r.name for r in rules_from_config(cfg)]
    assert "dlq_growing" not in names and "cache_hit_rate_drop" in names
    assert fingerprint("r", {"a": "1", "b": "2"}) == fingerprint("r", {"b": "2", "a": "1"})
    assert fingerprint("r", {"a": "1"}) != fingerprint("q", {"a": "1"})
