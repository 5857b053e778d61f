"""The scheduler reads its own runs without building the lake's views over every span file (job_runs_lake)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from costline.config import Config, LakeConfig
from costline.jobs.store import job_runs_lake, job_store


def test_job_runs_lake_holds_the_jobs_views_and_not_the_span_views(tmp_path: Path) -> None:
    config = Config(lake=LakeConfig(path=tmp_path / "lake"))
    job_store(config).init().write("job_runs", "drift@20261101T0200#1.0", [{
        "run_id": "drift@20261101T0200#1", "job": "drift", "window_since": datetime(2026, 10, 31, 2),
        "window_until": datetime(2026, 11, 1, 2), "status": "succeeded", "attempt": 1,
        "updated_at": datetime(2026, 11, 1, 2, 5)}])
    con = job_runs_lake(config)
    try:
        views = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        assert {"job_runs", "eval_runs", "shadow_runs"} <= views
        assert not {"requests", "calls", "lookups"} & views  # the span files are never read for the runs
        assert con.execute("SELECT job, status, window_until FROM job_runs").fetchall() == [
            ("drift", "succeeded", datetime(2026, 11, 1, 2))]
    finally:
        con.close()
