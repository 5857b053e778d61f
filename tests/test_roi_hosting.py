"""`costline distill roi` prices the GPU from the ``[[pricing.hosting]]`` schedule in force now (replicas x
USD/hour, overlapping periods added up), ``[pricing] student_usd_per_hour`` only without one, and says which.
Expected costs by hand from the prices below."""

from __future__ import annotations

import dataclasses
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from distill_world import labelled_plans, world_config  # noqa: E402

from costline.config import HostingPeriod  # noqa: E402
from costline.sim.traffic import CallPlan  # noqa: E402

HAIKU = CallPlan("budget", "anthropic", "claude-haiku-4-5", input_tokens=1000, output_tokens=100)
PER_REQUEST = (1000 * 0.80 + 100 * 4.0) / 1e6  # Haiku 4.5: $0.80 in / $4 out per MTok
TEACHER = (1000 * 10.0 + 100 * 50.0) / 1e6 * 0.5  # the frontier teacher (Fable 5: $10 / $50), batch price
DISTILL = 2.0 * 3.0 + 100 * TEACHER  # 2 GPU hours at $3 + the 100-request sample's teacher answers
AMORTISED = DISTILL / 30.0  # redistilled every 30 days


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    from lakes import lake_from_plans

    tmp = tmp_path_factory.mktemp("roi_hosting")
    cfg = world_config(tmp, tenants=("*",), sample_size=100, train_gpu_hours=2.0, train_gpu_usd_per_hour=3.0,
                       redistill_every_days=30.0)
    plans = [dataclasses.replace(p, calls=(HAIKU,), lookup=None, served_by="budget", routed_tier="budget",
                                 success=True) for p in labelled_plans(300)]
    lake_from_plans(plans, cfg)
    return cfg


def roi(cfg, hosting, at: datetime):
    from costline.distill.roi import compute_roi

    cfg = cfg.replace(pricing={"hosting": tuple(hosting)})
    return compute_roi(cfg, since=datetime(2026, 11, 1), until=datetime(2026, 11, 2),
                       now=lambda: at.replace(tzinfo=UTC))


OLD = HostingPeriod(usd_per_hour=2.0, replicas=1, since="2026-10-01T00:00:00Z", until="2026-11-01T00:00:00Z")
NEW = HostingPeriod(usd_per_hour=1.5, replicas=3, since="2026-11-01T00:00:00Z")
EXTRA = HostingPeriod(usd_per_hour=0.5, replicas=1, since="2026-11-15T00:00:00Z", until="2026-12-01T00:00:00Z")


@pytest.mark.parametrize("hosting, at, per_hour, source", [
    # the review's case: 2 replicas at $4/h, open-ended -> $192/day (the old code priced 2.74 x 24 = $65.76)
    ([HostingPeriod(usd_per_hour=4.0, replicas=2)], datetime(2026, 11, 20), 8.0, "in force at 2026-11-20 00:00 UTC"),
    ([OLD, NEW, EXTRA], datetime(2026, 10, 15), 2.0, "in force at 2026-10-15 00:00 UTC: 1 x $2/h"),
    ([OLD, NEW, EXTRA], datetime(2026, 11, 10), 4.5, "in force at 2026-11-10 00:00 UTC: 3 x $1.5/h"),
    ([OLD, NEW, EXTRA], datetime(2026, 11, 20), 5.0, "3 x $1.5/h + 1 x $0.5/h"),  # overlapping periods add up
    ([OLD, NEW, EXTRA], datetime(2027, 3, 1), 4.5, "in force at 2027-03-01"),      # the open-ended one runs on
    ([OLD, NEW], datetime(2026, 9, 1), 2.0, "starting 2026-10-01 00:00 UTC"),     # none yet: the planned one
    ([OLD], datetime(2026, 12, 1), 2.0, "ended 2026-11-01 00:00 UTC"),            # none any more: the last one
])
def test_the_gpu_costs_the_hosting_schedules_rate_now(cfg, hosting, at, per_hour, source):
    r = roi(cfg, hosting, at)
    assert r.gpu_usd_per_hour == pytest.approx(per_hour)
    assert r.gpu_usd_per_day == pytest.approx(per_hour * 24)
    assert r.gpu_cost_source.startswith("[[pricing.hosting]]") and source in r.gpu_cost_source
    assert r.break_even_requests_per_day == pytest.approx((per_hour * 24 + AMORTISED) / PER_REQUEST)
    assert r.net_saving_usd_per_day == pytest.approx(300 * PER_REQUEST - per_hour * 24 - AMORTISED)


def test_without_a_hosting_schedule_the_flat_rate_is_used_and_said(cfg):
    r = roi(cfg, (), datetime(2026, 11, 20))
    assert r.gpu_usd_per_hour == pytest.approx(2.74) and r.gpu_usd_per_day == pytest.approx(2.74 * 24)
    assert r.gpu_cost_source.startswith("[pricing] student_usd_per_hour")
    assert "gpu_cost_source" in r.describe() and "student_usd_per_hour" in r.describe()


def test_the_command_line_prices_a_toml_hosting_schedule(cfg, tmp_path):
    from click.testing import CliRunner

    from costline.cli import _register_area_commands, cli

    toml = tmp_path / "costline.toml"
    toml.write_text(f"""
[lake]
path = "{cfg.lake.path}"
[distill]
tenants = ["*"]
task_types = ["classification"]
[[pricing.hosting]]
usd_per_hour = 4.0
replicas = 2
since = "2026-01-01T00:00:00Z"
""")
    _register_area_commands()
    r = CliRunner().invoke(cli, ["--config", str(toml), "distill", "roi", "--since", "2026-11-01", "--until",
                                 "2026-11-02", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["gpu_usd_per_day"] == pytest.approx(192.0) and doc["gpu_usd_per_hour"] == pytest.approx(8.0)
    assert doc["gpu_cost_source"].startswith("[[pricing.hosting]] in force at ")
    assert doc["gpu_cost_source"].endswith("2 x $4/h")
