"""Time edges of the jobs: a cost-report range on a half hour, nights `jobs serve` missed while down, cron in a zone
with daylight saving time, and the command line's log timestamps. Expected values by hand (and zoneinfo)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from costline.config import Config, HostingPeriod, LakeConfig, PricingConfig
from costline.jobs.cost_report import build_cost_report
from costline.jobs.scheduler import NightlyService, nightly
from costline.jobs.settings import JobsConfig
from costline.jobs.store import open_jobs_lake
from costline.lake import Lake

REPO = Path(__file__).resolve().parents[1]


# --- 1. the cost report's hosting on a range that does not start or end on a whole hour -------------------------

def _hosting_report(tmp_path, periods, since, until):
    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"), pricing=PricingConfig(hosting=periods))
    Lake(cfg.lake.path).init()
    con = open_jobs_lake(cfg)
    try:
        return build_cost_report(con, cfg, since=since, until=until)
    finally:
        con.close()


IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
KOLKATA_DAY = (HostingPeriod(1.0, since="2026-11-01T00:00:00+05:30", until="2026-11-02T00:00:00+05:30"),)


@pytest.mark.parametrize("periods, since, until, total, per_day, hosted_days", [
    # a Kolkata operator's local day, hosted exactly over it at $1/h: 18:30 UTC to 18:30 UTC, 24 h = $24,
    # 5.5 h of it on Oct 31 (UTC) and 18.5 h on Nov 1
    (KOLKATA_DAY, dt.datetime(2026, 11, 1, tzinfo=IST), dt.datetime(2026, 11, 2, tzinfo=IST),
     24.0, {dt.date(2026, 10, 31): 5.5, dt.date(2026, 11, 1): 18.5}, 1.0),
    # a range inside the hosting, both ends at a quarter: 20:15 to 06:45 UTC = 10.5 h
    # (3.75 h on Oct 31, 6.75 h on Nov 1)
    (KOLKATA_DAY, dt.datetime(2026, 10, 31, 20, 15), dt.datetime(2026, 11, 1, 6, 45),
     10.5, {dt.date(2026, 10, 31): 3.75, dt.date(2026, 11, 1): 6.75}, 10.5 / 24),
    # the rate changes inside the range's only hour: $2/h to 10:20, $3/h after; [10:10, 10:40) is
    # 10 min at $2 + 20 min at $3 = 1/3 + 1 = $4/3, 0.5 hosted hours
    ((HostingPeriod(2.0, since="2026-11-01T00:00:00Z", until="2026-11-01T10:20:00Z"),
      HostingPeriod(3.0, since="2026-11-01T10:20:00Z", until="2026-11-01T12:00:00Z")),
     dt.datetime(2026, 11, 1, 10, 10), dt.datetime(2026, 11, 1, 10, 40),
     4 / 3, {dt.date(2026, 11, 1): 4 / 3}, 0.5 / 24),
])
def test_hosting_counts_the_part_of_an_hour_inside_the_range(tmp_path, periods, since, until, total, per_day,
                                                             hosted_days):
    rep = _hosting_report(tmp_path, periods, since, until)
    assert rep.hosting_usd == pytest.approx(total)
    days = {d["day"]: d["cost_usd"] for d in rep.per_day if d["stage"] == "student"}
    assert days == pytest.approx(per_day)
    assert rep.hosted_days == pytest.approx(hosted_days)


# --- 2. `jobs serve` back after being down: every missed night of the last retry_days, oldest first ------------

def _recorder(seen):
    def rec(config, since, until):
        seen.append((since, until))
        return "r", 1, 0.0
    return {"drift": rec, "shadow": rec, "cost-report": rec}


def D(day, hour=2):  # noqa: N802 - a due time, November 2026 (naive UTC)
    return dt.datetime(2026, 11, day, hour, 0)


@pytest.mark.parametrize("back_at, caught_up", [
    # down Fri 03:00 .. Mon 03:00: Sat, Sun and Mon's 02:00, oldest first
    (D(9, 3), [D(7), D(8), D(9)]),
    # down for six nights: only those of the last retry_days (3) before Thu 02:00 (Mon, Tue, Wed) and Thu
    (D(12, 3), [D(9), D(10), D(11), D(12)]),
])
def test_a_restarted_service_runs_the_nights_it_missed(tmp_path, caplog, back_at, caught_up):
    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"), jobs=JobsConfig(retry_days=3))
    Lake(cfg.lake.path).init()
    seen: list = []
    clock = [dt.datetime(2026, 11, 6, 2, 0, 5)]
    # a fresh lake: the first tick runs Fri 02:00 only (no back runs of the days before anything was recorded)
    assert NightlyService(cfg, runners=_recorder(seen), now=lambda: clock[0], notify=False).tick()
    assert sorted({u for _, u in seen}) == [D(6)]
    seen.clear()
    clock[0] = back_at  # a new process, as after a reboot
    svc = NightlyService(cfg, runners=_recorder(seen), now=lambda: clock[0], notify=False)
    with caplog.at_level(logging.WARNING, logger="costline.jobs.scheduler"):
        svc.tick()
    untils = list(dict.fromkeys(u for _, u in seen))
    assert untils == caught_up
    assert all(until - since == dt.timedelta(hours=24) for since, until in seen)
    assert "catching up on" in caplog.text and f"{caught_up[0]:%Y-%m-%d %H:%M}" in caplog.text
    seen.clear()
    clock[0] = back_at + dt.timedelta(minutes=30)
    assert svc.tick() == [] and seen == []  # nothing twice


@pytest.mark.parametrize("schedule, hours, back_at, runs", [
    # nightly 02:00 for a week, then moved to 03:00: the 03:00 window is 23 h of the one 02:00 evaluated: none run
    (("03:00",), 24, D(6, 3), []),
    # a second time of day with 12 h windows: 02:00 -> 14:00 on the 6th was never evaluated, the rest were
    (("02:00", "14:00"), 12, D(6, 14), [(D(6, 2), D(6, 14))]),
])
def test_a_changed_schedule_does_not_run_evaluated_nights_again(tmp_path, schedule, hours, back_at, runs):
    """Each run pays the teacher: a night whose window a recorded run covers (more than half) is not caught up under
    the new schedule's times (before: 3 to 4 windows a job, 23 or 24 h of each evaluated already)."""
    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"), jobs=JobsConfig(retry_days=3))
    Lake(cfg.lake.path).init()
    seen: list = []
    for day in range(1, 7):  # 02:00 every night, 24 h windows, Nov 1 .. Nov 6
        clock = dt.datetime(2026, 11, day, 2, 0, 5)
        NightlyService(cfg, runners=_recorder(seen), now=lambda clock=clock: clock, notify=False).tick()
    assert sorted({u for _, u in seen}) == [D(d) for d in range(1, 7)]
    seen.clear()
    moved = cfg.replace(jobs=JobsConfig(retry_days=3, schedule=schedule, window_hours=hours))
    NightlyService(moved, runners=_recorder(seen), now=lambda: back_at, notify=False).tick()
    assert sorted(set(seen)) == runs


# --- 3. `jobs nightly` from cron in a zone with daylight saving time: windows tile ------------------------------

LA = ZoneInfo("America/Los_Angeles")


def _cron_fire(day: dt.date, zone: ZoneInfo) -> dt.datetime:
    """When cron (in ``zone``) starts ``0 2 * * *`` on ``day``, in UTC: 02:00 local, or 03:00 where the clocks
    skipped 02:00 (cronie runs a job of a skipped hour right after the change)."""
    local = dt.datetime(day.year, day.month, day.day, 2, 0, 5, tzinfo=zone)
    if local.astimezone(dt.UTC).astimezone(zone).replace(tzinfo=None) != local.replace(tzinfo=None):
        local = local.replace(hour=3)
    return local.astimezone(dt.UTC)


@pytest.mark.parametrize("first", [dt.date(2026, 3, 6), dt.date(2026, 10, 30)])  # spring forward / fall back
def test_consecutive_cron_runs_in_a_dst_zone_tile(tmp_path, first):
    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"))
    Lake(cfg.lake.path).init()
    seen: list = []
    days = [first + dt.timedelta(days=i) for i in range(5)]
    fires = [_cron_fire(d, LA) for d in days]
    assert {b - a for a, b in zip(fires, fires[1:])} - {dt.timedelta(hours=24)}  # 23 h or 25 h apart once: DST
    for at in fires:
        nightly(cfg, runners=_recorder(seen), jobs=("drift",), now=lambda at=at: at)
    # by hand: each run at 02:00 LA (09:00 or 10:00 UTC) ends its window at that day's schedule time, 02:00 UTC
    assert [u for _, u in seen] == [dt.datetime(d.year, d.month, d.day, 2, 0) for d in days]
    assert all(b[0] == a[1] for a, b in zip(seen, seen[1:]))  # no gap, no overlap


def test_the_documented_cron_lines_run_cron_in_utc():
    from costline.cli import cli, _register_area_commands

    _register_area_commands()
    help_text = CliRunner().invoke(cli, ["jobs", "nightly", "--help"]).output
    docs = (REPO / "docs" / "jobs.md").read_text()
    for text in (help_text, docs):
        assert "0 2 * * *  costline jobs nightly" in text
        assert "CRON_TZ=UTC" in text
        assert text.index("CRON_TZ=UTC") < text.index("0 2 * * *  costline jobs nightly")


# --- 4. the command line's log lines are stamped in UTC, whatever TZ says ---------------------------------------

_LOG_PROBE = """
import logging, time
from costline.cli import cli
cli.main(args=["-v", "config"], prog_name="costline", standalone_mode=False)
record = logging.LogRecord("costline.jobs", logging.WARNING, "probe.py", 1, "catching up", None, None)
record.created, record.msecs = {created!r}, 250.0
print("LINE", logging.getLogger().handlers[0].format(record))
print("GLOBAL", logging.Formatter.converter is time.localtime)
"""


def test_log_lines_are_stamped_in_utc_with_a_z(tmp_path):
    created = dt.datetime(2026, 11, 1, 2, 0, 0, 250000, tzinfo=dt.UTC).timestamp()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COSTLINE_") or k == "COSTLINE_REQUIRE_EXTRAS"}
    env.update(TZ="Asia/Kolkata", HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", _LOG_PROBE.format(created=created)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if line.startswith(("LINE ", "GLOBAL ")))
    # 02:00 UTC, which is 07:30 in Kolkata
    assert lines["LINE"] == "2026-11-01T02:00:00.250Z WARNING costline.jobs: catching up"
    assert lines["GLOBAL"] == "True"  # logging's own default clock left alone
