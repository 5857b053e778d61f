"""`costline jobs ...` commands, the public surface, and the demo's nightly runs against the stand-in."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import costline.jobs as jobs_pkg
from costline.cli import _register_area_commands, cli
from costline.config import CaptureConfig, Config, LakeConfig
from costline.errors import ConfigError

sys.path.insert(0, str(Path(__file__).parent))


def _run(tmp_path, *args):
    _register_area_commands()
    env = {"COSTLINE_LAKE_PATH": str(tmp_path / "lake"), "COSTLINE_CONFIG": ""}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


@pytest.mark.parametrize("cmd", ["drift", "shadow", "cost-report", "nightly", "serve", "runs"])
def test_every_command_has_an_example(tmp_path, cmd):
    res = _run(tmp_path, "jobs", cmd, "--help")
    assert res.exit_code == 0 and "Example:" in res.output


def test_public_surface_is_lazy_and_complete():
    import subprocess

    # importing the package loads settings and errors only; the jobs load on first use
    heavy = ("duckdb", "numpy", "scipy", "pyarrow", "anthropic", "openai", "costline.jobs.drift")
    code = f"import sys, costline.jobs; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    # a lazy name is the object its module defines (every name resolves: tests/test_public_surface.py)
    from costline.jobs import drift

    assert jobs_pkg.run_drift is drift.run_drift and "run_drift" in dir(jobs_pkg)


def test_validate_names_the_key(tmp_path):
    import dataclasses

    cfg = Config()
    bad = cfg.replace(jobs=dataclasses.replace(cfg.jobs, drift=dataclasses.replace(cfg.jobs.drift,
                                                                                   metrics={"faq": "bleu"})))
    with pytest.raises(ConfigError, match=r"\[jobs.drift.metrics\] faq"):
        jobs_pkg.validate(bad)


def test_config_file_sets_jobs_keys(tmp_path):
    from costline.config import load_config

    f = tmp_path / "c.toml"
    f.write_text('[jobs]\nschedule = ["03:30"]\n[jobs.drift]\nsample_size = 800\n[jobs.drift.thresholds]\n'
                 'sentiment = 0.08\n')
    cfg = load_config(f, env={})
    assert cfg.jobs.schedule == ("03:30",) and cfg.jobs.drift.sample_size == 800
    assert cfg.jobs.drift.thresholds == {"sentiment": 0.08}


def test_cost_report_command_on_a_demo_lake(tmp_path):
    from lakes import demo_plans, lake_from_plans

    lake_from_plans(demo_plans(days=2, per_day=200, stale_day=None, shift_day=None),
                    Config(lake=LakeConfig(path=tmp_path / "lake")))
    res = _run(tmp_path, "jobs", "cost-report", "--since", "2026-11-01", "--until", "2026-11-03", "--format", "json")
    doc = json.loads(res.output)
    assert [s["stage"] for s in doc["stages"]] == ["baseline", "routing", "cache", "student"]
    assert doc["stages"][1]["cumulative_saving"] > 0.5
    res = _run(tmp_path, "jobs", "runs")
    assert res.exit_code == 0


def test_demo_nights_flag_the_student_drift_on_the_day_it_starts(tmp_path):
    from lakes import demo_plans, lake_from_plans

    from costline.sim.nightly_demo import run_nightly_demo

    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"), capture=CaptureConfig(message_content=True))
    lake_from_plans(demo_plans(days=3, per_day=300, stale_day=None, shift_day=2), cfg)
    lines: list[str] = []
    outs = run_nightly_demo(cfg, start=dt.datetime(2026, 11, 1), days=3, echo=lines.append)
    assert all(o.status == "succeeded" for o in outs), outs
    nights = [ln for ln in lines if ln.startswith("night after")]
    assert len(nights) == 3
    assert "FLAGGED" not in nights[0] and "FLAGGED" not in nights[1]
    assert "FLAGGED on sarcasm" in nights[2]
    assert any("cumulative saving" in ln for ln in lines)
    assert any("none twice: True" in ln for ln in lines)
