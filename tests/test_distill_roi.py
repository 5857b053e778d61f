"""`costline distill roi`: break-even requests/day and payback from the lake's traffic, hand-computed."""

from __future__ import annotations

import dataclasses
import math
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from distill_world import labelled_plans, world_config  # noqa: E402

from costline.lake import open_lake  # noqa: E402
from costline.sim.traffic import CallPlan  # noqa: E402

HAIKU = CallPlan("budget", "anthropic", "claude-haiku-4-5", input_tokens=1000, output_tokens=100)
PER_REQUEST = (1000 * 0.80 + 100 * 4.0) / 1e6  # Haiku 4.5: $0.80 in / $4 out per MTok
TEACHER = (1000 * 10.0 + 100 * 50.0) / 1e6 * 0.5  # the frontier teacher (Fable 5: $10 / $50), batch price


def lake(tmp_path, n, **distill):
    from lakes import lake_from_plans

    cfg = world_config(tmp_path, tenants=("*",), **distill)
    plans = [dataclasses.replace(p, calls=(HAIKU,), lookup=None, served_by="budget", routed_tier="budget",
                                 success=True) for p in labelled_plans(n)]
    other = [dataclasses.replace(p, task_type="coding", calls=(HAIKU,), lookup=None, served_by="budget")
             for p in labelled_plans(7, seed=11)]
    lake_from_plans(plans + other, cfg)
    return cfg


def test_roi_break_even_and_payback(tmp_path):
    from costline.distill.roi import compute_roi

    cfg = lake(tmp_path, 300, sample_size=100, train_gpu_hours=2.0, train_gpu_usd_per_hour=3.0,
               redistill_every_days=30.0)
    r = compute_roi(cfg, since=datetime(2026, 11, 1), until=datetime(2026, 11, 2))
    assert r.requests == 300 and r.days == pytest.approx(1.0)
    assert r.api_cost_per_request == pytest.approx(PER_REQUEST)
    teacher = 100 * TEACHER  # the sample, once, at the teacher's batch price
    distill = 2.0 * 3.0 + teacher
    gpu_day = 2.74 * 24
    assert r.distill_cost_usd == pytest.approx(distill)
    assert r.break_even_requests_per_day == pytest.approx((gpu_day + distill / 30.0) / PER_REQUEST)
    # 300 requests/day at $0.0012 never pay for a $65.76/day GPU
    assert r.net_saving_usd_per_day < 0 and math.isinf(r.payback_days)
    assert "NOT worth it" in r.describe()


def test_roi_pays_back_when_the_gpu_is_cheap_enough(tmp_path):
    from costline.distill.roi import compute_roi

    cfg = lake(tmp_path, 300, sample_size=300, train_gpu_hours=1.0, train_gpu_usd_per_hour=2.0)
    cfg = cfg.replace(pricing={"student_usd_per_hour": 0.01})
    r = compute_roi(cfg, since=datetime(2026, 11, 1), until=datetime(2026, 11, 2))
    margin = 300 * PER_REQUEST - 0.01 * 24
    distill = 2.0 + 300 * TEACHER
    assert r.payback_days == pytest.approx(distill / margin)
    assert r.net_saving_usd_per_day == pytest.approx(margin - distill / 30.0)


def test_roi_and_export_from_the_command_line_with_a_toml_config(tmp_path):
    import json

    from click.testing import CliRunner

    from costline.cli import _register_area_commands, cli

    lake(tmp_path, 100)
    toml = tmp_path / "costline.toml"
    toml.write_text(f"""
[lake]
path = "{tmp_path / 'lake'}"
[capture]
message_content = true
[distill]
tenants = ["*"]
task_types = ["classification"]
near_duplicate_threshold = 0.0
eval_fraction = 0.1
[distill.thresholds]
sentiment = 0.02
""")
    _register_area_commands()
    runner = CliRunner()
    r = runner.invoke(cli, ["--config", str(toml), "distill", "roi", "--since", "2026-11-01", "--until",
                            "2026-11-02", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["requests"] == 100 and doc["api_cost_per_request"] == pytest.approx(PER_REQUEST)
    r = runner.invoke(cli, ["--config", str(toml), "distill", "export", "--since", "2026-11-01", "--until",
                            "2026-11-02", "--run", "cli"])
    assert r.exit_code == 0, r.output
    assert "run cli:" in r.output and "sentiment" in r.output and "topic" in r.output
    r = runner.invoke(cli, ["--config", str(toml), "distill", "runs"])
    assert r.output.strip() == "cli  exported"
    # a run's actual teacher cost replaces the estimate
    (tmp_path / "lake" / "distill" / "cli" / "teacher_manifest.json").write_text('{"cost_usd": 1.5}')
    r = runner.invoke(cli, ["--config", str(toml), "distill", "roi", "--since", "2026-11-01", "--until",
                            "2026-11-02", "--json", "--run", "cli"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["teacher_cost_usd"] == 1.5 and doc["distill_cost_usd"] == pytest.approx(1.5 + 2.0 * 2.74)
    r = runner.invoke(cli, ["--config", str(toml), "distill", "gate", "--run", "cli"])
    assert r.exit_code != 0 and "costline distill eval --run cli" in str(r.exception)


def test_roi_over_the_default_window_counts_per_day_over_the_days_the_lake_has(tmp_path):
    """A lake one day old read with the default 30-day window: 300 requests are 300 a day, not 10 (the window's
    29 empty days before the first request are not traffic that stopped); an explicit --since keeps its window."""
    from costline.distill.roi import compute_roi

    cfg = lake(tmp_path, 300, window_days=30)
    with open_lake(cfg) as con:
        first, last = con.execute("SELECT min(ts), max(ts) FROM requests").fetchone()
    until = last + timedelta(microseconds=1)
    r = compute_roi(cfg, until=until)
    assert r.requests == 300
    assert r.days == pytest.approx((until - first).total_seconds() / 86400)
    assert r.requests_per_day == pytest.approx(300 / r.days)
    explicit = compute_roi(cfg, since=until - timedelta(days=30), until=until)
    assert explicit.days == pytest.approx(30.0) and explicit.requests_per_day == pytest.approx(10.0)
