"""``cost_per_success_rise`` on a lake with a self-hosted student: the GPU's hourly cost is fixed, so its
share per request follows the hour's volume, not routing or quality. The rule compares what the calls
cost per success; the hosting is left out (it is in every other cost figure).

Expected figures are written by hand from the rows below (a mid call costs what its row says; the
student's hour costs $2.74), not computed with costline's pricing or SQL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from costline.alerts.rules import Condition, Rule, evaluate
from costline.alerts.settings import AlertsConfig, CostPerSuccessRiseSettings
from costline.alerts.source import AlertSource
from costline.config import Config, LakeConfig, PricingConfig
from costline.lake import Lake, open_lake
from costline.processors.buffer import rows_to_tables
from costline.processors.records import CallRow, RequestRow

JUDGED = datetime(2026, 11, 8, 2)  # a night hour
NOW = (JUDGED + timedelta(hours=1, minutes=1)).replace(tzinfo=UTC)
DEFAULTS = CostPerSuccessRiseSettings()  # min 20 successes in the hour, 100 in the week before
GPU_USD_PER_HOUR = 2.74
MID_USD = 0.01


def us(t: datetime) -> int:
    return int(t.replace(tzinfo=UTC).timestamp() * 1_000_000)


class Rows:
    def __init__(self) -> None:
        self.requests: list[RequestRow] = []
        self.calls: list[CallRow] = []

    def _call(self, rid: str, tid: str, t: datetime, tier: str, model: str, provider: str, cost: float,
              status: str, error: str | None) -> None:
        n = len(self.calls)
        self.calls.append(CallRow(f"c{n}", tid, f"s{rid}", rid, us(t), "chat", provider, model, model, tier, 100, 10,
                                  0, 0, False, ["stop"], error, cost, status, "v", 5.0, None, None, 0, n))

    def request(self, t: datetime, tier: str, *, escalated_from_student: bool = False, mid_usd: float = MID_USD
                ) -> None:
        n = len(self.requests)
        rid, tid = f"r{n}", f"t{n}"
        self.requests.append(RequestRow(rid, tid, f"s{rid}", us(t), "acme", "faq", "x", tier, tier, False, 1,
                                        1 if escalated_from_student else 0, True, None, 5.0, None, None, 0, n))
        if tier == "student" or escalated_from_student:
            self._call(rid, tid, t, "student", "acme-student", "vllm", 0.0, "student",
                       "QualityGateFailed" if escalated_from_student else None)
        if tier == "mid":
            self._call(rid, tid, t, "mid", "claude-sonnet-4-6", "anthropic", mid_usd, "priced", None)

    def commit(self, path: Path) -> Config:
        cfg = Config(lake=LakeConfig(path=path), pricing=PricingConfig(student_usd_per_hour=GPU_USD_PER_HOUR),
                     alerts=AlertsConfig(cost_per_success_rise=DEFAULTS))
        Lake(path).init().commit_batch("otlp_spans", 0, 0, len(self.requests) + len(self.calls), {
            "requests": rows_to_tables("requests", self.requests), "calls": rows_to_tables("calls", self.calls)})
        return cfg


def diurnal_week(rows: Rows, *, night_escalations: int = 0) -> None:
    """Seven days before the judged hour and the judged hour itself: the student answers 200 requests an
    hour by day (08-19 UTC) and 20 at night; mid answers 30 an hour, of which ``night_escalations`` at
    night came to it after the student's answer failed the gate."""
    start = JUDGED - timedelta(days=7)
    for h in range(7 * 24 + 1):
        hour = start + timedelta(hours=h)
        day = 8 <= hour.hour < 20
        for i in range(200 if day else 20):
            rows.request(hour + timedelta(seconds=10 + i), "student")
        for i in range(30):
            rows.request(hour + timedelta(seconds=1000 + i), "mid",
                         escalated_from_student=not day and i < night_escalations)


def observations(cfg: Config) -> dict[str, object]:
    snap = AlertSource(cfg).snapshot(NOW, ["cost_per_success_rise"])
    return {o.labels["tier"]: o for o in evaluate(Rule("cost_per_success_rise", DEFAULTS), snap, NOW)}


def test_a_quiet_night_hour_of_the_student_is_no_cost_rise(tmp_path: Path) -> None:
    rows = Rows()
    diurnal_week(rows)
    cfg = rows.commit(tmp_path / "lake")
    # The premise, from the lake's own figures: at night the GPU hour is shared by 20 requests instead of 200,
    # so hosting per student success is 10x the day's (what made this rule fire every night).
    con = open_lake(cfg)
    night, = con.execute("SELECT cost_per_success FROM tier_hourly WHERE tier = 'student' AND window_start = ?",
                         [JUDGED]).fetchone()
    assert night == pytest.approx(GPU_USD_PER_HOUR / 20)
    obs = observations(cfg)
    assert "student" not in obs  # its calls cost nothing per token: nothing for this rule to compare
    assert obs["mid"].condition is Condition.OK
    assert obs["mid"].value == pytest.approx(MID_USD)


def test_escalations_from_the_student_do_not_carry_its_hosting_into_the_mid_tiers_figure(tmp_path: Path) -> None:
    rows = Rows()
    diurnal_week(rows, night_escalations=10)
    obs = observations(rows.commit(tmp_path / "lake"))
    # 30 mid successes at $0.01 each; the 10 escalated ones also made a student call, which costs no tokens
    assert obs["mid"].value == pytest.approx(MID_USD)
    assert obs["mid"].condition is Condition.OK


def test_a_real_rise_in_what_the_calls_cost_still_fires(tmp_path: Path) -> None:
    rows = Rows()
    diurnal_week(rows)
    for i in range(30):  # the judged hour's mid calls cost twice as much (e.g. longer answers)
        rows.request(JUDGED + timedelta(seconds=2000 + i), "mid", mid_usd=2 * MID_USD)
    obs = observations(rows.commit(tmp_path / "lake"))
    # hour: 30 x 0.01 + 30 x 0.02 over 60 successes = 0.015; week: 0.01
    assert obs["mid"].value == pytest.approx(0.015)
    assert obs["mid"].threshold == pytest.approx(MID_USD * 1.25)
    assert obs["mid"].condition is Condition.BREACH
