"""The lever stacking table against figures computed by hand on a four-request lake."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest

from costline.config import Config, HostingPeriod, LakeConfig, PricingConfig
from costline.jobs.cost_report import build_cost_report, run_cost_report
from costline.jobs.store import open_jobs_lake
from costline.lake import Lake
from costline.processors.buffer import rows_to_tables
from costline.processors.records import CallRow, RequestRow

DAY = dt.datetime(2026, 11, 7)


def us(t):
    return int(t.replace(tzinfo=dt.timezone.utc).timestamp() * 1_000_000)


def req(rid, hour, tier, task, hit=False):
    t = DAY + dt.timedelta(hours=hour)
    return RequestRow(rid, f"t-{rid}", f"s-{rid}", us(t), "acme", task, "x", tier, tier, hit, 1, 0, True, None, 5.0,
                      None, None, 0, 0)


def call(rid, hour, tier, provider, model, inp, out, cost, read=0):
    t = DAY + dt.timedelta(hours=hour)
    status = "student" if tier == "student" else "priced"
    return CallRow(f"c-{rid}", f"t-{rid}", f"s-{rid}", rid, us(t), "chat", provider, model, model, tier, inp, out,
                   read, 0, False, ["stop"], None, cost, status, "2026-06", 5.0, None, None, 0, 0)


@pytest.fixture
def cfg(tmp_path):
    # the GPU is booked for the whole day (a dated schedule): idle hours cost too
    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"), pricing=PricingConfig(hosting=(
        HostingPeriod(2.74, since="2026-11-07T00:00:00Z", until="2026-11-08T00:00:00Z"),)))
    rows_r = [req("R1", 1, "budget", "faq"), req("R2", 2, "student", "cls"), req("R3", 3, "cache", "faq", hit=True),
              req("R4", 4, "frontier", "faq")]
    rows_c = [call("R1", 1, "budget", "anthropic", "claude-haiku-4-5", 1000, 100, 0.0012),
              call("R2", 2, "student", "vllm", "costline-student", 2000, 50, 0.0),
              call("R4", 4, "frontier", "anthropic", "claude-fable-5", 500, 100, 0.0082, read=200)]
    Lake(cfg.lake.path).init().commit_batch("otlp_spans", 0, 0, 6, {
        "requests": rows_to_tables("requests", rows_r), "calls": rows_to_tables("calls", rows_c)})
    return cfg


def test_stacking_table_matches_hand_computed_figures(cfg):
    # baseline: R1 (1000*10 + 100*50)/1e6 = .015, R2 (2000*10 + 50*50)/1e6 = .0225,
    #           R4 (300*10 + 200*10*.1 + 100*50)/1e6 = .0082, R3 (hit) = faq average (.015 + .0082)/2 = .0116
    # routing:  R1 .0012, R2 at Haiku (2000*.8 + 50*4)/1e6 = .0018, R4 .0082, R3 = (.0012 + .0082)/2 = .0047
    # cache:    R3 costs nothing;  student: API .0012 + .0082 + GPU 2.74 * 24
    con = open_jobs_lake(cfg)
    try:
        rep = build_cost_report(con, cfg, since=DAY, until=DAY + dt.timedelta(days=1))
    finally:
        con.close()
    got = {s.stage: s for s in rep.stages}
    assert got["baseline"].daily_cost_usd == pytest.approx(0.0573)
    assert got["routing"].daily_cost_usd == pytest.approx(0.0159)
    assert got["cache"].daily_cost_usd == pytest.approx(0.0112)
    assert got["student"].daily_cost_usd == pytest.approx(0.0094 + 65.76)
    assert got["routing"].monthly_cost_usd == pytest.approx(0.0159 * 30)
    assert got["baseline"].cumulative_saving is None
    assert got["routing"].cumulative_saving == pytest.approx(1 - 0.0159 / 0.0573)
    assert got["cache"].cumulative_saving == pytest.approx(1 - 0.0112 / 0.0573)
    assert rep.break_even_requests_per_day == pytest.approx(65.76 / 0.0018)
    assert (rep.requests, rep.cache_hits, rep.student_requests) == (4, 1, 1)
    md = rep.to_markdown()
    assert md.startswith("| stage |") and "+ cache" in md and "36,533" in md
    assert json.loads(rep.to_json())["stages"][1]["stage"] == "routing"
    assert "cumulative saving" in rep.to_text()


def test_two_day_range_halves_the_daily_cost_and_is_stored_as_views(cfg):
    rep = run_cost_report(cfg, since=DAY, until=DAY + dt.timedelta(days=2),
                          now=lambda: dt.datetime(2026, 11, 9, 2, tzinfo=dt.UTC))
    assert rep.days == 2
    assert rep.stages[1].daily_cost_usd == pytest.approx(0.0159 / 2)
    con = open_jobs_lake(cfg)
    try:
        rows = con.execute("SELECT stage, daily_cost_usd, monthly_cost_usd, cumulative_saving FROM cost_report "
                           "ORDER BY step").fetchall()
        days = con.execute("SELECT day, stage, cost_usd FROM cost_report_days WHERE stage = 'routing'").fetchall()
    finally:
        con.close()
    assert [r[0] for r in rows] == ["baseline", "routing", "cache", "student"]
    assert days == [(dt.date(2026, 11, 7), "routing", pytest.approx(0.0159))]


def test_the_simplest_schedule_covers_the_first_student_call_to_the_newest_span(cfg):
    """``student_usd_per_hour`` alone: one GPU from the hour of the first student call (02:00) to the end of
    the hour of the lake's newest span (04:xx): 3 hours, whatever the report's range."""
    flat = Config(lake=cfg.lake, pricing=PricingConfig(student_usd_per_hour=2.74))
    con = open_jobs_lake(flat)
    try:
        rep = build_cost_report(con, flat, since=DAY, until=DAY + dt.timedelta(days=1))
    finally:
        con.close()
    assert rep.hosting_usd == pytest.approx(3 * 2.74)
    assert {s.stage: s for s in rep.stages}["student"].total_cost_usd == pytest.approx(0.0094 + 3 * 2.74)


def test_the_baseline_prices_cache_reads_at_the_models_own_read_price(cfg):
    # claude-fable-5 with its own cache-read price ($2.50 / MTok instead of 0.1 x $10):
    # baseline R4 (300*10 + 200*2.5 + 100*50)/1e6 = .0085, R3 (hit) = (.015 + .0085)/2 = .01175,
    # R1 .015, R2 .0225: .05775 in all
    models = tuple(dataclasses.replace(m, cache_read_per_mtok=2.5) if m.model == "claude-fable-5" else m
                   for m in cfg.pricing.models)
    cfg = cfg.replace(pricing=dataclasses.replace(cfg.pricing, models=models))
    con = open_jobs_lake(cfg)
    try:
        rep = build_cost_report(con, cfg, since=DAY, until=DAY + dt.timedelta(days=1))
    finally:
        con.close()
    assert {s.stage: s for s in rep.stages}["baseline"].daily_cost_usd == pytest.approx(0.05775)
