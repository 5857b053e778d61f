"""Alerts on bad figures: NaN / NULL figures are ignored and said so; an unreadable lake is an alert (issue 9 §5)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from costline.alerts.notify import InMemoryNotifier
from costline.alerts.rules import Condition, Rule, Snapshot, evaluate
from costline.alerts.service import AlertService
from costline.alerts.settings import AlertsConfig, CostPerSuccessRiseSettings
from costline.alerts.source import AlertSource
from costline.alerts.testing import ManualClock
from costline.config import Config, LakeConfig, PricingConfig
from costline.lake import Lake
from costline.processors.buffer import rows_to_tables
from costline.processors.records import CallRow, RequestRow

H = datetime(2026, 11, 8, 10)  # the hour judged
NOW = (H + timedelta(hours=1, minutes=1)).replace(tzinfo=UTC)
LOOSE = CostPerSuccessRiseSettings(min_successes=1, min_successes_7d=1)


def us(t: datetime) -> int:
    return int(t.replace(tzinfo=UTC).timestamp() * 1_000_000)


def mid_request(i: int, t: datetime, cost: float) -> list:
    rid = f"r{i}"
    return [RequestRow(rid, f"t{i}", f"s{i}", us(t), "acme", "faq", "x", "mid", "mid", False, 1, 0, True, None, 5.0,
                       None, None, 0, i),
            CallRow(f"c{i}", f"t{i}", f"s{i}", rid, us(t), "chat", "anthropic", "claude-sonnet-4-6",
                    "claude-sonnet-4-6", "mid", 100, 10, 0, 0, False, ["stop"], None, cost, "priced", "v", 5.0,
                    None, None, 0, i)]


def lake_with(path: Path, rows: list) -> Config:
    cfg = Config(lake=LakeConfig(path=path), pricing=PricingConfig(student_usd_per_hour=0.0),
                 alerts=AlertsConfig(cost_per_success_rise=LOOSE))
    reqs = [r for r in rows if isinstance(r, RequestRow)]
    calls = [r for r in rows if isinstance(r, CallRow)]
    Lake(path).init().commit_batch("otlp_spans", 0, 0, len(rows), {
        "requests": rows_to_tables("requests", reqs), "calls": rows_to_tables("calls", calls)})
    return cfg


def test_a_nan_cost_in_the_week_is_ignored_and_said_so(tmp_path, caplog):
    """A lake written before validation holds a NaN cost: the week's level is computed without it."""
    rows: list = []
    for d in range(1, 4):  # three earlier hours at $0.01 per success
        rows += mid_request(d, H - timedelta(hours=d), 0.01)
    rows += mid_request(10, H - timedelta(hours=5), float("nan"))  # the poisoned hour
    rows += mid_request(20, H + timedelta(minutes=5), 0.03)  # this hour: x3
    cfg = lake_with(tmp_path / "lake", rows)
    snap = AlertSource(cfg).snapshot(NOW, ["cost_per_success_rise"])
    with caplog.at_level(logging.WARNING, logger="costline.alerts.rules"):
        (obs,) = evaluate(Rule("cost_per_success_rise", LOOSE), snap, NOW)
    assert obs.condition is Condition.BREACH
    assert obs.value == pytest.approx(0.03) and obs.threshold == pytest.approx(0.01 * 1.25)
    assert obs.figures["ignored (NaN/NULL cost)"] == "1 hourly figure(s)"
    assert "ignored 1 hourly cost figure(s) that were NaN/NULL" in caplog.text


@pytest.mark.parametrize("row", [
    {"cost_usd": float("nan"), "cost_usd_7d": 1.0},
    {"cost_usd": 1.0, "cost_usd_7d": float("inf")},
])
def test_non_finite_tier_figures_are_skipped_with_a_log_line(row, caplog):
    w = H.replace(tzinfo=None)
    snap = Snapshot(tiers=[{"window_start": w, "tier": "mid", "requests": 50, "successes": 50,
                            "successes_7d": 500, **row}])
    with caplog.at_level(logging.WARNING, logger="costline.alerts.rules"):
        assert evaluate(Rule("cost_per_success_rise", LOOSE), snap, NOW) == []
    assert "NaN figures" in caplog.text and "ignored" in caplog.text


def test_nan_hit_rates_are_skipped_with_a_log_line(caplog):
    from costline.alerts.settings import CacheHitRateDropSettings

    snap = Snapshot(cache=[{"window_start": H, "tenant": "acme", "hit_rate": float("nan"), "avg_7d": 0.5,
                            "lookups": 100, "hits": 0, "lookups_7d": 1000}])
    with caplog.at_level(logging.WARNING, logger="costline.alerts.rules"):
        assert evaluate(Rule("cache_hit_rate_drop", CacheHitRateDropSettings()), snap, NOW) == []
    assert "NaN/NULL hit rate" in caplog.text


def test_a_corrupt_parquet_file_is_set_aside_and_raises_lake_unreadable(tmp_path):
    rows = mid_request(1, H, 0.01)
    cfg = lake_with(tmp_path / "lake", rows)
    cfg = Config(lake=cfg.lake, pricing=cfg.pricing,
                 alerts=AlertsConfig(state_path=tmp_path / "state.sqlite", cost_per_success_rise=LOOSE))
    bad = tmp_path / "lake" / "requests" / f"date={H.date().isoformat()}" / "p001-000000000000-000000000009.parquet"
    bad.write_bytes(b"PAR1 this is not a parquet file PAR1")
    memory = InMemoryNotifier("slack")
    service = AlertService(cfg, now=ManualClock(NOW), notifiers={"slack": memory})
    try:
        report = service.tick()
    finally:
        service.shutdown()
    (obs,) = report.observations["lake_unreadable"]
    assert obs.condition is Condition.BREACH
    assert "p001-000000000000-000000000009.parquet.unreadable" in obs.summary  # names the file to repair
    assert "set aside" in obs.summary
    assert not bad.exists()  # set aside, byte for byte, so the other files stay readable
    aside = bad.with_name(bad.name + ".unreadable")
    assert aside.read_bytes() == b"PAR1 this is not a parquet file PAR1"
    assert report.observations["cost_per_success_rise"] is not None  # the rules read the good files
    # (and pipeline_silent can read again: the lake's one good span ended over 15 minutes before NOW)
    assert sorted(m.payload["title"].split()[2] for m in memory.sent()) == ["lake_unreadable", "pipeline_silent"]

    service = AlertService(cfg, now=ManualClock(NOW + timedelta(minutes=2)), notifiers={"slack": memory})
    try:
        report = service.tick()
    finally:
        service.shutdown()
    assert report.observations["lake_unreadable"][0].condition is Condition.BREACH  # until someone sees to it

    aside.unlink()  # dealt with: resolves
    service = AlertService(cfg, now=ManualClock(NOW + timedelta(minutes=5)), notifiers={"slack": memory})
    try:
        report = service.tick()
    finally:
        service.shutdown()
    assert report.observations["lake_unreadable"][0].condition is Condition.OK
