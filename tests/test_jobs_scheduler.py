"""Running the jobs: job_runs records, no overlap, failed windows retried with their reason, the schedule."""

from __future__ import annotations

import datetime as dt

import pytest

from costline.config import Config, LakeConfig
from costline.jobs.errors import JobBusyError, JobsError, NoDataError
from costline.jobs.scheduler import JobLock, NightlyService, nightly, parse_schedule, run_job
from costline.jobs.store import JobStore, open_jobs_lake

U = dt.datetime(2026, 11, 8, 2, 0)


@pytest.fixture
def cfg(tmp_path):
    return Config(lake=LakeConfig(path=tmp_path / "lake"))


def runs(cfg):
    con = open_jobs_lake(cfg)
    try:
        cur = con.execute("SELECT job, window_until, status, attempt, rows, cost_usd, error, retry_of, result_id "
                          "FROM job_runs ORDER BY started_at, job")
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]
    finally:
        con.close()


def ok(config, since, until):
    return "res-1", 3, 0.25


def test_a_run_is_recorded_with_rows_and_cost(cfg):
    o = run_job(cfg, "drift", since=U - dt.timedelta(days=1), until=U, runner=ok, now=lambda: U)
    assert o.status == "succeeded"
    (r,) = runs(cfg)
    assert (r["status"], r["rows"], r["cost_usd"], r["result_id"], r["attempt"]) == ("succeeded", 3, 0.25, "res-1", 1)


def test_two_runs_of_one_job_never_overlap(cfg):
    store = JobStore(cfg.lake.path).init()
    with JobLock(store, "drift"):
        with pytest.raises(JobBusyError):
            JobLock(store, "drift").acquire()
        o = run_job(cfg, "drift", since=U - dt.timedelta(days=1), until=U, runner=ok, now=lambda: U)
        assert o.status == "skipped" and "busy" in o.error
        assert run_job(cfg, "shadow", since=U - dt.timedelta(days=1), until=U, runner=ok).status == "succeeded"
    assert run_job(cfg, "drift", since=U - dt.timedelta(days=1), until=U, runner=ok).status == "succeeded"


def test_a_failed_window_is_retried_next_time_and_says_why(cfg):
    calls = []

    def flaky(config, since, until):
        calls.append(until)
        if len(calls) == 1:
            raise RuntimeError("teacher API down")
        return "r", 1, 0.0

    runners = {"drift": flaky, "shadow": ok, "cost-report": ok}
    first = nightly(cfg, until=U, runners=runners, now=lambda: U)
    assert [o.status for o in first] == ["failed", "succeeded", "succeeded"]
    assert "RuntimeError: teacher API down" in first[0].error
    second = nightly(cfg, until=U + dt.timedelta(days=1), runners=runners, now=lambda: U + dt.timedelta(days=1))
    assert [(o.job, o.until, o.status, o.attempt) for o in second][:2] == [
        ("drift", U, "succeeded", 2), ("drift", U + dt.timedelta(days=1), "succeeded", 1)]
    rec = [r for r in runs(cfg) if r["job"] == "drift" and r["window_until"] == U]
    assert [r["status"] for r in rec] == ["failed", "succeeded"]
    assert rec[1]["retry_of"] == "drift@20261108T0200#1"
    third = nightly(cfg, until=U + dt.timedelta(days=2), runners=runners)
    assert [o.until for o in third] == [U + dt.timedelta(days=2)] * 3  # nothing left to retry


def test_no_data_is_skipped_not_retried(cfg):
    def empty(config, since, until):
        raise NoDataError("no captured content")

    out = nightly(cfg, until=U, runners={"drift": empty, "shadow": ok, "cost-report": ok}, jobs=("drift",))
    assert out[0].status == "skipped" and "no captured content" in out[0].error
    again = nightly(cfg, until=U + dt.timedelta(days=1), runners={"drift": empty}, jobs=("drift",))
    assert len(again) == 1


def test_schedule_and_service_tick(cfg):
    assert parse_schedule(["14:30", "02:00"]) == [dt.time(2, 0), dt.time(14, 30)]
    with pytest.raises(JobsError, match="HH:MM"):
        parse_schedule(["2am"])
    now = [dt.datetime(2026, 11, 8, 1, 0)]
    seen = []

    def rec(config, since, until):
        seen.append(until)
        return "r", 1, 0.0

    svc = NightlyService(cfg, runners={"drift": rec, "shadow": rec, "cost-report": rec}, now=lambda: now[0],
                         notify=False)
    assert svc.next_due(now[0]) == dt.datetime(2026, 11, 8, 2, 0)
    assert svc.tick() != [] and seen == [dt.datetime(2026, 11, 7, 2, 0)] * 3  # catches up on the missed 02:00
    assert svc.tick() == []
    now[0] = dt.datetime(2026, 11, 8, 2, 0, 5)
    assert len(svc.tick()) == 3 and seen[-1] == dt.datetime(2026, 11, 8, 2, 0)
    assert svc.tick() == []
