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
from costline.config import Config, LakeConfig
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


# --- relative times count from the start of the hour: a re-run within the hour names the same run ---------

HOUR_CLOCK = dt.datetime(2026, 11, 8, 2, 17, 33, 250000, tzinfo=dt.UTC)


@pytest.mark.parametrize(("text", "expected"), [
    ("-24h", "2026-11-07T02:00:00"),    # 02:17:33.25 -> the hour 02:00, minus 24 h
    ("-7d", "2026-11-01T02:00:00"),
    ("-1.5h", "2026-11-08T00:30:00"),
    ("now", "2026-11-08T02:00:00"),      # as the default --until
    ("2026-11-08T02:30", "2026-11-08T02:30:00"),         # an explicit time is taken as it is
    ("2026-11-08T03:30:15+01:00", "2026-11-08T02:30:15"),
])
def test_relative_times_count_from_the_start_of_the_hour(text, expected):
    from costline.jobs.cli import _When

    assert _When(now=lambda: HOUR_CLOCK).convert(text, None, None).isoformat() == expected


@pytest.mark.parametrize(("job", "size"), [("drift", ["--sample", "40"]), ("shadow", ["--per-tier", "10"])])
def test_since_minus_24h_run_again_within_the_hour_resumes_the_same_run(tmp_path, monkeypatch, job, size):
    """`costline jobs drift --since -24h` (docs/jobs.md's example) twice in one hour: one run, the teacher paid once."""
    import types

    import costline.jobs.cli as jobs_cli
    import costline.jobs.teacher as teacher
    from lakes import demo_plans, lake_from_plans

    from costline.config import CaptureConfig

    lake_from_plans(demo_plans(days=2, per_day=300, stale_day=None, shift_day=None),  # 2026-11-01 .. 11-03
                    Config(lake=LakeConfig(path=tmp_path / "lake"), capture=CaptureConfig(message_content=True)))
    paid: list[dict] = []

    def create(**kw):
        paid.append(kw)
        return types.SimpleNamespace(content=[types.SimpleNamespace(type="text", text="ok")],
                                     usage=types.SimpleNamespace(input_tokens=10, output_tokens=2))

    monkeypatch.setattr(teacher, "anthropic_client",
                        lambda config, **kw: types.SimpleNamespace(messages=types.SimpleNamespace(create=create)))
    clock = {"now": dt.datetime(2026, 11, 3, 0, 17, 5, 123456, tzinfo=dt.UTC)}
    monkeypatch.setattr(jobs_cli.WHEN, "now", lambda: clock["now"], raising=False)
    for k, v in {"COSTLINE_JOBS_DRIFT_DEFAULT_METRIC": "exact", "COSTLINE_JOBS_DRIFT_MMD_PERMUTATIONS": "0",
                 "COSTLINE_JOBS_DRIFT_MIN_PER_SUBTYPE": "5"}.items():
        monkeypatch.setenv(k, v)

    def run() -> tuple[str, str]:
        res = _run(tmp_path, "jobs", job, "--since", "-24h", *size)
        assert res.exit_code == 0, res.output
        return res.output, [x for x in res.output.splitlines() if x.startswith(f"run {job}-")][-1]

    _, first = run()
    # 00:17 -> this hour 00:00 (the default --until); -24h -> 2026-11-02 00:00
    window = "(2026-11-02 00:00 to 2026-11-03 00:00 UTC)"
    run_id = first.split()[1]
    assert run_id.startswith(f"{job}-20261103T0000-") and first.startswith(f"run {run_id} {window}")
    paid_once = len(paid)
    assert paid_once > 0
    clock["now"] = dt.datetime(2026, 11, 3, 0, 59, 59, 999999, tzinfo=dt.UTC)  # the same hour, 43 minutes on
    output, again = run()
    assert again.startswith(f"run {run_id} {window}") and len(paid) == paid_once  # resumed: the teacher not paid again
    if job == "drift":
        assert "40 answers paid now" in first and paid_once == 40  # --sample 40: one teacher answer each
        assert f"run {run_id} already finished" in output
