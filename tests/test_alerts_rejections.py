"""The rejected_attempts_rise alert: a tier whose answers are turned down (quality gates, broken schemas, API errors)
clearly more often in the last hour than over the 7 days before. Table-driven over hand-written rows, then over a
real lake through AlertSource (its rejections_hourly view and REJECTIONS_SQL), live and frozen."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from costline.alerts.rules import Condition, Rule, Snapshot, evaluate
from costline.alerts.settings import AlertsConfig, RejectedAttemptsRiseSettings
from costline.alerts.source import AlertSource
from costline.config import Config, LakeConfig, PricingConfig
from costline.lake import Lake, open_lake
from costline.processors.buffer import rows_to_tables
from costline.processors.records import CallRow, RequestRow

H = datetime(2026, 11, 8, 10)  # the hour judged
NOW = (H + timedelta(hours=1, minutes=1)).replace(tzinfo=UTC)
RULE = Rule("rejected_attempts_rise", RejectedAttemptsRiseSettings(), settle_s=30)


def row(attempts: int, rejected: int, attempts_7d: int, rejected_7d: int, tier: str = "student") -> dict:
    return {"window_start": H, "tier": tier, "attempts": attempts, "rejected": rejected, "problems": "validator 9",
            "attempts_7d": attempts_7d, "rejected_7d": rejected_7d}


@pytest.mark.parametrize(("r", "expected"), [
    (row(100, 30, 5000, 500), Condition.BREACH),  # 30% vs 10%: +20 points, p tiny
    (row(100, 17, 5000, 500), Condition.BAND),    # +7 points: between resolve (5) and fire (10)
    (row(100, 12, 5000, 500), Condition.OK),      # +2 points
    (row(100, 5, 5000, 500), Condition.OK),       # fewer than usual
    (row(10, 8, 5000, 500), Condition.BAND),      # 80% but only 10 attempts: too little to judge
    (row(100, 30, 100, 10), Condition.BAND),      # a baseline of 100 attempts is no baseline
    (row(30, 6, 5000, 500), Condition.BAND),      # +10 points on 30 attempts: not significant (p ~ 0.03)
    (row(30, 7, 5000, 500), Condition.BREACH),    # +13.3 points on 30: significant (p ~ 0.008)
])
def test_rejected_attempts_rise(r: dict, expected: Condition) -> None:
    (obs,) = evaluate(RULE, Snapshot(rejections=[r]), NOW)
    assert obs.condition is expected and obs.labels == {"tier": "student"}
    assert obs.value == pytest.approx(r["rejected"] / r["attempts"])


def test_only_the_closed_hour_is_judged_and_no_rows_skip_the_rule() -> None:
    earlier = {**row(100, 90, 5000, 500), "window_start": H - timedelta(hours=1)}
    assert evaluate(RULE, Snapshot(rejections=[earlier]), NOW) == []
    assert evaluate(RULE, Snapshot(rejections=[row(0, 0, 5000, 500)]), NOW) == []  # no attempts this hour
    assert evaluate(RULE, Snapshot(), NOW) is None  # the view could not be read: the rule is skipped


def test_the_message_says_why() -> None:
    (obs,) = evaluate(RULE, Snapshot(rejections=[{**row(100, 30, 5000, 500), "problems": "output_format 21, "
                                                                                         "validator 9"}]), NOW)
    assert "output_format 21, validator 9" in obs.summary and "30.0%" in obs.summary and "10.0%" in obs.summary
    assert "contains(',' || rejected_attempts, ',student:')" in obs.query


@pytest.mark.parametrize("tier", ["budget", "b_dget", "50%"])
def test_the_dig_in_query_selects_the_tiers_own_attempts_only(tier: str) -> None:
    """The message's query runs as shown and selects the requests with an attempt of that tier: not one of a tier
    whose name contains it ("eu-budget"), nor one a LIKE wildcard in the name would match ("b_dget" / "budget")."""
    import duckdb

    (obs,) = evaluate(RULE, Snapshot(rejections=[row(100, 30, 5000, 500, tier=tier)]), NOW)
    con = duckdb.connect()
    con.execute("CREATE TABLE requests (request_id VARCHAR, ts TIMESTAMP, routed_tier VARCHAR, tier VARCHAR, "
                "rejected_attempts VARCHAR, task_type VARCHAR, tenant VARCHAR)")
    at = H + timedelta(minutes=5)
    attempts = {"a": f"{tier}:validator", "b": f"student:validator,{tier}:low_confidence", "c": "eu-budget:validator",
                "d": "budget:validator", "e": "b_dget:validator", "f": "500:validator", "g": None}
    con.executemany("INSERT INTO requests VALUES (?, ?, 'x', 'x', ?, 'faq', 'acme')",
                    [(k, at, v) for k, v in attempts.items()])
    want = {k for k, v in attempts.items() if v and tier in [a.split(":")[0] for a in v.split(",")]}
    assert {r[0] for r in con.execute(obs.query).fetchall()} == want


def _us(t: datetime) -> int:
    return int(t.replace(tzinfo=UTC).timestamp() * 1_000_000)


def _request(i: int, t: datetime, rejected: str | None) -> list:
    """One request routed to the student: a student call (turned down when ``rejected``), then a mid call if so."""
    rid = f"r{i}"
    rows = [RequestRow(rid, f"t{i}", f"s{i}", _us(t), "acme", "faq", "x", "mid" if rejected else "student",
                       "student", False, 2 if rejected else 1, 1 if rejected else 0, True, None, 5.0, None, None, 0, i,
                       None, rejected)]
    tiers = ["student", "mid"] if rejected else ["student"]
    for j, tier in enumerate(tiers):
        rows.append(CallRow(f"c{i}-{j}", f"t{i}", f"c{i}{j}", rid, _us(t), "chat", "vllm" if tier == "student" else
                            "anthropic", "m", "m", tier, 100, 10, 0, 0, False, ["stop"], None, 0.001, "priced", "v",
                            5.0, None, None, 0, i))
    return rows


@pytest.fixture
def lake(tmp_path: Path) -> Config:
    """A week of the student turned down 1 time in 10, then an hour of 1 in 2 (half of them broken schemas)."""
    rows: list = []
    i = 0
    for hour in range(1, 101):
        for k in range(10):
            i += 1
            rows += _request(i, H - timedelta(hours=hour, minutes=-k), "student:validator" if k == 0 else None)
    for k in range(60):
        i += 1
        rows += _request(i, H + timedelta(minutes=k), ("student:output_format" if k % 4 == 0 else
                                                       "student:validator") if k % 2 == 0 else None)
    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"), pricing=PricingConfig(student_usd_per_hour=0.0),
                 alerts=AlertsConfig())
    reqs = [r for r in rows if isinstance(r, RequestRow)]
    calls = [r for r in rows if isinstance(r, CallRow)]
    Lake(cfg.lake.path).init().commit_batch("otlp_spans", 0, 0, len(rows), {
        "requests": rows_to_tables("requests", reqs), "calls": rows_to_tables("calls", calls)})
    return cfg


def test_the_view_counts_attempts_and_rejections_per_hour_and_tier(lake: Config) -> None:
    got = open_lake(lake).execute("SELECT tier, attempts, rejected, problems FROM rejections_hourly "
                                  "WHERE window_start = $w ORDER BY tier", {"w": H}).fetchall()
    # 60 requests: 60 student calls, 30 of them turned down (each then a mid call)
    assert got == [("mid", 30, 0, None), ("student", 60, 30, "output_format 15, validator 15")]


@pytest.mark.parametrize("frozen", [False, True])
def test_a_student_turned_down_far_more_than_its_week_fires(lake: Config, frozen: bool) -> None:
    source = AlertSource(lake)
    if frozen:
        with source.frozen():
            snap = source.snapshot(NOW, ["rejected_attempts_rise"])
    else:
        snap = source.snapshot(NOW, ["rejected_attempts_rise"])
    observations = {o.labels["tier"]: o for o in evaluate(RULE, snap, NOW)}
    student = observations["student"]
    assert student.condition is Condition.BREACH
    assert student.value == pytest.approx(0.5) and student.threshold == pytest.approx(0.1 + 0.1)
    # mid answered every time (and its week of 100 calls is too short a baseline to judge anyway)
    assert observations["mid"].value == 0.0 and observations["mid"].condition is not Condition.BREACH
