"""An open hosting period bills the runs of student calls, not every hour since the first one.

``student_usd_per_hour`` alone (or a ``[[pricing.hosting]]`` period without ``since``) says what the
student's GPU costs an hour, not when it ran: costline reads that off the student calls. Hours with
student calls and the idle hours between two of them at most ``[pricing] hosting_open_gap_hours`` apart
are billed (nights and weekends are idle hours of a running GPU); a longer silence is not, so one call
stamped years early by a wrong clock bills its own hour instead of ~60,000. Expected figures are counted
by hand from the rows each test writes.
"""

from __future__ import annotations

import datetime as dt

import pytest

from costline.config import Config, ConfigError, HostingPeriod, LakeConfig, PricingConfig, load_config
from costline.jobs.cost_report import build_cost_report
from costline.jobs.store import open_jobs_lake
from costline.lake import Lake, open_lake
from costline.processors.buffer import rows_to_tables
from costline.processors.records import CallRow, RequestRow

H = dt.datetime(2026, 11, 9, 10, 0)  # a Monday
MIN = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)


def us(t: dt.datetime) -> int:
    return int(t.replace(tzinfo=dt.UTC).timestamp() * 1_000_000)


def student_request(n: int, t: dt.datetime) -> list:
    """One request the student answered at ``t`` (its call a minute earlier, hosting-priced)."""
    rid = f"r{n}"
    return [RequestRow(rid, f"t{n}", rid, us(t), "acme", "faq", "x", "student", "student", False, 1, 0, True,
                       None, 5.0, None, None, 0, 0),
            CallRow(f"c{n}", f"t{n}", rid, None, us(t - MIN), "chat", "vllm", "costline-student", "costline-student",
                    "student", 10, 10, 0, 0, False, ["stop"], None, 0.0, "student", "test", 100.0, None, None, 0, 0,
                    None, None, None)]


def budget_request(n: int, t: dt.datetime) -> list:
    rid = f"b{n}"
    return [RequestRow(rid, f"tb{n}", rid, us(t), "acme", "faq", "x", "budget", "budget", False, 1, 0, True,
                       None, 5.0, None, None, 0, 0),
            CallRow(f"bc{n}", f"tb{n}", rid, None, us(t - MIN), "chat", "anthropic", "claude-haiku-4-5",
                    "claude-haiku-4-5", "budget", 10, 10, 0, 0, False, ["stop"], None, 0.01, "priced", "test", 100.0,
                    None, None, 0, 0, None, None, None)]


def make_config(tmp_path, **pricing) -> Config:
    return Config(lake=LakeConfig(path=tmp_path / "lake"), pricing=PricingConfig(**{"student_usd_per_hour": 1.0,
                                                                                      **pricing}))


def commit(cfg: Config, rows: list) -> None:
    """One more batch of ``rows``, at the offset after the lake's last (the lake refuses offsets it committed)."""
    reqs = [r for r in rows if isinstance(r, RequestRow)]
    calls = [r for r in rows if isinstance(r, CallRow)]
    lake = Lake(cfg.lake.path).init()
    last = lake.last_manifest("otlp_spans", 0)
    offset = 0 if last is None else last.last_offset + 1
    lake.commit_batch("otlp_spans", 0, offset, offset, {
        t: rows_to_tables(t, rs) for t, rs in (("requests", reqs), ("calls", calls)) if rs})


def hosting(cfg: Config) -> dict[dt.datetime, float]:
    con = open_lake(cfg)
    try:
        return dict(con.execute("SELECT window_start, hosting_usd FROM student_hosting_hourly ORDER BY 1").fetchall())
    finally:
        con.close()


def test_one_call_stamped_years_early_bills_its_own_hour_not_every_hour_since(tmp_path):
    cfg = make_config(tmp_path)
    wrong_clock = dt.datetime(2020, 3, 1, 8, 30)
    rows = student_request(0, wrong_clock)
    for i in range(3):  # the student's real traffic: 10:xx, 11:xx, 12:xx
        rows += student_request(i + 1, H + i * HOUR + 5 * MIN)
    commit(cfg, rows)
    got = hosting(cfg)
    assert sum(got.values()) == pytest.approx(4.0)  # 08:00 in 2020 + 10:00, 11:00, 12:00 now
    assert sorted(got) == [dt.datetime(2020, 3, 1, 8), H, H + HOUR, H + 2 * HOUR]


@pytest.mark.parametrize(("gap_hours", "billed"), [
    # calls Friday 17:xx and Monday 09:xx (64 h apart); the lake ends with Monday 09:xx
    (168, 65),  # a week bridges the weekend: Friday 17:00 .. Monday 09:00, 65 hours
    (64, 65),  # exactly the gap: still one run
    (63, 2),  # one hour short: two runs of one hour each
    (1, 2),
])
def test_a_silence_is_billed_when_it_is_no_longer_than_the_gap(tmp_path, gap_hours, billed):
    cfg = make_config(tmp_path, hosting_open_gap_hours=gap_hours)
    friday = dt.datetime(2026, 11, 6, 17, 20)
    commit(cfg, student_request(1, friday) + student_request(2, friday + 64 * HOUR))
    got = hosting(cfg)
    assert len(got) == billed and sum(got.values()) == pytest.approx(billed * 1.0)


def test_idle_hours_after_the_last_student_call_are_billed_up_to_the_lake_end_within_the_gap(tmp_path):
    """Budget traffic goes on after the student's last call: the GPU is taken to run (idle) until the lake's
    end when that is within the gap, and not at all past a longer silence."""
    cfg = make_config(tmp_path, hosting_open_gap_hours=24)
    rows = student_request(1, H + 5 * MIN) + budget_request(1, H + 20 * HOUR + 5 * MIN)
    commit(cfg, rows)
    assert sum(hosting(cfg).values()) == pytest.approx(21.0)  # 10:00 .. 06:00 next day, the lake's end hour
    commit(cfg, budget_request(2, H + 30 * HOUR + 5 * MIN))  # the lake now ends 30 h after the student's call
    assert sum(hosting(cfg).values()) == pytest.approx(1.0)


def test_a_schedule_with_an_explicit_since_is_billed_whole(tmp_path):
    """A dated start is the operator's word: every hour from it to the lake's end, silences included."""
    since = (H - 2 * DAY).isoformat() + "Z"
    cfg = make_config(tmp_path, hosting=(HostingPeriod(2.0, since=since),), hosting_open_gap_hours=1)
    commit(cfg, student_request(1, H + 5 * MIN))
    got = hosting(cfg)
    assert len(got) == 49 and sum(got.values()) == pytest.approx(98.0)


def test_an_open_since_with_a_dated_until_bills_the_runs_before_until(tmp_path):
    until = (H + 30 * MIN).isoformat() + "Z"
    cfg = make_config(tmp_path, hosting=(HostingPeriod(4.0, until=until),), hosting_open_gap_hours=6)
    rows = student_request(1, dt.datetime(2020, 1, 1, 0, 10))  # a wrong clock: its own hour only
    rows += student_request(2, H - 3 * HOUR + 5 * MIN) + student_request(3, H + 3 * HOUR)
    commit(cfg, rows)
    got = hosting(cfg)
    # 2020 00:00 (one hour) + 07:00 .. 10:30 (3.5 hours, cut by until) = 4.5 hours at $4
    assert sum(got.values()) == pytest.approx(4.5 * 4.0)
    assert got[H] == pytest.approx(2.0)


def test_a_student_call_from_the_future_bills_nothing_and_leaves_the_real_tail(tmp_path):
    """A span dated 2031 ends the lake at the current hour; the student's real call, 3 days before it, is more than
    the 48-hour gap away, so it bills its own hour only, and the 2031 call bills nothing."""
    cfg = make_config(tmp_path, hosting_open_gap_hours=48)
    current_hour = dt.datetime.now(dt.UTC).replace(tzinfo=None, minute=0, second=0, microsecond=0)
    real = current_hour - 3 * DAY
    rows = student_request(1, real + 5 * MIN) + budget_request(1, real + 2 * HOUR + 5 * MIN)
    rows += student_request(9, dt.datetime(2031, 1, 1, 12))
    commit(cfg, rows)
    got = hosting(cfg)
    assert sorted(got) == [real]
    assert got[real] == pytest.approx(1.0)


def test_the_cost_report_and_tier_hourly_agree_with_the_runs(tmp_path):
    cfg = make_config(tmp_path, hosting_open_gap_hours=24)
    rows = student_request(0, dt.datetime(2021, 6, 1, 3, 30))
    rows += student_request(1, H + 5 * MIN) + student_request(2, H + 3 * HOUR + 5 * MIN)
    commit(cfg, rows)
    con = open_jobs_lake(cfg)
    try:
        rep = build_cost_report(con, cfg, since=dt.datetime(2020, 1, 1), until=H + DAY)
        tiers = con.execute("SELECT sum(cost_usd) FROM tier_hourly WHERE tier = 'student'").fetchone()[0]
    finally:
        con.close()
    assert rep.hosting_usd == pytest.approx(5.0)  # 2021 03:00, then 10:00 .. 13:00
    assert tiers == pytest.approx(5.0)


@pytest.mark.parametrize("bad", ["0", "-3", "\"a week\""])
def test_the_gap_setting_is_checked_on_load(tmp_path, bad):
    path = tmp_path / "costline.toml"
    path.write_text(f"[pricing]\nhosting_open_gap_hours = {bad}\n")
    with pytest.raises(ConfigError, match="hosting_open_gap_hours"):
        load_config(path, env={})
