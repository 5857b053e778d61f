"""Each dashboard chart's SQL against a lake filled from the demo traffic, and the page it builds (no browser)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import re

import duckdb
import pytest
from lakes import demo_lake, demo_plans

import costline.dashboards as dashboards
from costline.config import Config, LakeConfig, ModelPrice, PricingConfig
from costline.dashboards import CHARTS, Chart, ChartSqlError, build_dashboard, chart_sql, query_chart, query_charts
from costline.dashboards.build import STATUS_EMPTY, STATUS_ERROR, STATUS_MISSING, STATUS_OK, render_html
from costline.dashboards.charts import KINDS, raw_sql
from costline.lake import open_lake

FROM_LAKE = ("cost_per_success", "spend_per_app", "cache_hit_rate", "traffic_mix", "savings_waterfall",
             "rejected_attempts")
# Views that exist from the start (zero-row files) but that only the nightly jobs / the alert
# service fill: the demo lake has none of their rows.
FROM_LATER_ISSUES = ("student_vs_teacher", "tier_match_rate")
FROM_ALERTS = ("alerts",)
# The demo traffic records no candidate the verified cache turned down: its lake has none of these
# rows (tests/test_dashboard_cache_rejections.py fills them).
FROM_VERIFIED_CACHE = ("cache_rejections",)
VIEW_OF = {"student_vs_teacher": "eval_runs", "tier_match_rate": "shadow_runs", "alerts": "alerts"}
NOW = dt.datetime(2026, 11, 9, 8, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def lake_config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    return demo_lake(tmp_path_factory.mktemp("demo") / "lake")


@pytest.fixture(scope="module")
def con(lake_config: Config):
    c = open_lake(lake_config)
    yield c
    c.close()


def test_public_surface():
    assert sorted(dashboards.__all__) == dashboards.__all__  # each name resolves: tests/test_public_surface.py
    assert dashboards.chart_by_name(dashboards.CHARTS[0].name) is dashboards.CHARTS[0]
    assert issubclass(dashboards.DashboardError, __import__("costline.errors").errors.CostlineError)


def test_every_chart_has_its_sql_file_and_a_known_renderer():
    assert {c.name for c in CHARTS} == set(FROM_LAKE + FROM_LATER_ISSUES + FROM_ALERTS + FROM_VERIFIED_CACHE)
    for chart in CHARTS:
        assert chart.kind in KINDS
        assert chart.x in chart.columns
        assert raw_sql(chart).strip()
        assert "{{" not in chart_sql(chart, Config())


@pytest.mark.parametrize("name", FROM_LAKE)
def test_chart_sql_runs_on_the_demo_lake_with_the_expected_columns(con, lake_config, name):
    chart = dashboards.chart_by_name(name)
    rows = con.execute(chart_sql(chart, lake_config))
    columns = [d[0] for d in rows.description]
    data = rows.fetchall()
    assert set(chart.columns) <= set(columns)
    assert data, f"{name} returned no rows on the demo lake"
    result = query_chart(con, chart, lake_config)
    assert result.status == STATUS_OK and len(result.rows) == len(data)


@pytest.mark.parametrize("name", FROM_LATER_ISSUES + FROM_ALERTS + FROM_VERIFIED_CACHE)
def test_charts_of_views_with_no_rows_yet_say_no_data_yet(con, lake_config, name):
    result = query_chart(con, dashboards.chart_by_name(name), lake_config)
    assert result.status == STATUS_EMPTY
    assert result.message.startswith("No data yet")


@pytest.mark.parametrize("name", FROM_LATER_ISSUES + FROM_ALERTS)
def test_charts_of_views_missing_from_the_lake_say_no_data_yet(lake_config, name):
    c = open_lake(lake_config)
    try:
        c.execute(f"DROP VIEW {VIEW_OF[name]}")  # e.g. a lake read without costline.jobs installed
        result = query_chart(c, dashboards.chart_by_name(name), lake_config)
    finally:
        c.close()
    assert result.status == STATUS_MISSING
    assert result.message.startswith("No data yet")
    assert result.sql  # still shown, so an analyst sees what it will read


# USD per million tokens (input, output), written out here from the article's price list; Anthropic
# bills prompt-cache reads at 0.1x and writes at 1.25x the input price.
HAND_PRICES = {"claude-haiku-4-5": (0.80, 4.0), "claude-sonnet-4-6": (3.0, 15.0),
               "claude-opus-4-8": (5.0, 25.0), "claude-fable-5": (10.0, 50.0)}


def test_cost_per_success_equals_the_plans_priced_by_hand(con, lake_config):
    """Per day and answering API tier: what the plans' calls cost (failed attempts and escalations
    included) over the requests that succeeded. Groups with a student attempt carry a share of the
    GPU hosting and are left to the figures tests; every API-tier group without one is checked."""
    cost: dict[tuple[str, str], float] = {}
    successes: dict[tuple[str, str], int] = {}
    hosted: set[tuple[str, str]] = set()
    for plan in demo_plans():
        if plan.served_by == "cache":
            continue
        key = (plan.start.date().isoformat(), plan.served_by)
        for call in plan.calls:
            if call.tier == "student":
                hosted.add(key)
                continue
            inp, out = HAND_PRICES[re.sub(r"-\d{8}$", "", call.model)]  # a dated snapshot: its model's price
            fresh = call.input_tokens - call.cache_read_tokens - call.cache_creation_tokens
            cost[key] = cost.get(key, 0.0) + (fresh * inp + call.cache_read_tokens * inp * 0.1
                                              + call.cache_creation_tokens * inp * 1.25
                                              + call.output_tokens * out) / 1e6
        successes[key] = successes.get(key, 0) + int(plan.success)
    got = {(r[0], r[1]): r[2] for r in query_chart(con, dashboards.chart_by_name("cost_per_success"), lake_config).rows}
    assert set(got) == set(successes)
    checked = [k for k in successes if k not in hosted]
    assert {t for _, t in checked} >= {"budget", "upper"} and len(checked) >= 16  # 23 in this traffic
    for key in checked:
        assert got[key] == pytest.approx(cost.get(key, 0.0) / successes[key], rel=1e-9), key
def test_waterfall_levels_fall_through_routing_and_cache_and_end_at_what_was_paid(con, lake_config):
    rows = query_chart(con, dashboards.chart_by_name("savings_waterfall"), lake_config).rows
    levels: dict[str, float] = {}
    for _day, _step, stage, cost in rows:
        levels[stage] = levels.get(stage, 0.0) + cost
    assert list(levels) == ["baseline", "routing", "cache", "student"]
    assert levels["baseline"] > levels["routing"] > levels["cache"] > 0
    paid = con.execute("SELECT sum(cost_usd) FROM tier_hourly").fetchone()[0]  # idle GPU hours included
    assert levels["student"] == pytest.approx(paid)
    # baseline: the calls alone, priced at Fable 5's $10/$50, are part of it
    frontier = con.execute("SELECT sum(input_tokens * 10.0 + output_tokens * 50.0) / 1e6 FROM calls").fetchone()[0]
    assert levels["baseline"] > frontier


def test_cache_band_is_ten_points_under_the_average_and_follows_the_config(con, lake_config):
    rows = query_chart(con, dashboards.chart_by_name("cache_hit_rate"), lake_config)
    i = {c: n for n, c in enumerate(rows.columns)}
    with_avg = [r for r in rows.rows if r[i["avg_7d"]] is not None]
    assert with_avg and all(r[i["alert_below"]] == pytest.approx(r[i["avg_7d"]] - 0.10) for r in with_avg)
    wide = lake_config.replace(dashboard={"cache_alert_band": 0.25})
    assert "baseline - 0.25" in chart_sql(dashboards.chart_by_name("cache_hit_rate"), wide)


def test_cache_band_follows_the_alerts_baseline(con, lake_config):
    # the dashed line and the red dots are what the alert judges: the same hour of day's 7-day average by
    # default, all hours' with [alerts.cache_hit_rate_drop] baseline = "rolling"
    chart = dashboards.chart_by_name("cache_hit_rate")
    assert "avg_7d_hour AS baseline" in chart_sql(chart, lake_config)
    alerts = lake_config.alerts
    rolling = lake_config.replace(alerts=dataclasses.replace(
        alerts, cache_hit_rate_drop=dataclasses.replace(alerts.cache_hit_rate_drop, baseline="rolling")))
    assert "avg_7d AS baseline" in chart_sql(chart, rolling)
    for config, column in ((lake_config, "avg_7d_hour"), (rolling, "avg_7d")):
        rows = query_chart(con, chart, config)
        i = {c: n for n, c in enumerate(rows.columns)}
        got = {(r[i["window_start"]], r[i["tenant"]]): r[i["avg_7d"]] for r in rows.rows}
        want = dict(((w, t), a) for w, t, a in con.execute(
            f"SELECT strftime(window_start, '%Y-%m-%dT%H:%M:%S'), tenant, {column} FROM cache_hit_rate_7d").fetchall())
        assert got == want


def test_waterfall_prices_come_from_the_pricing_table():
    models = (ModelPrice("big", "frontier", input_per_mtok=20.0, output_per_mtok=80.0),
              ModelPrice("small", "budget", input_per_mtok=1.0, output_per_mtok=2.0))
    sql = chart_sql(dashboards.chart_by_name("savings_waterfall"), Config(pricing=PricingConfig(models=models)))
    assert "* 20.0" in sql and "* 80.0" in sql and "* 1.0" in sql and "big" in sql
    no_frontier = Config(pricing=PricingConfig(models=models[1:]))
    with pytest.raises(ChartSqlError, match="no 'frontier' model"):
        chart_sql(dashboards.chart_by_name("savings_waterfall"), no_frontier)


def test_an_empty_lake_gives_every_chart_a_note_and_a_whole_page(tmp_path):
    config = Config(lake=LakeConfig(path=tmp_path / "empty"))
    con = open_lake(config)
    results = query_charts(con, config)
    con.close()
    assert {r.chart.name: r.status for r in results} == {
        n: STATUS_EMPTY for n in (*FROM_LAKE, *FROM_LATER_ISSUES, *FROM_ALERTS, *FROM_VERIFIED_CACHE)}
    assert all(r.message.startswith("No data yet") for r in results)
    path = build_dashboard(config, tmp_path / "out" / "d.html", now=lambda: NOW)
    page = path.read_text(encoding="utf-8")
    assert page.count('class="nodata"') == len(CHARTS)
    assert "built <span id=\"built-at\">2026-11-09T08:00:00</span>" in page


def test_a_failing_or_misshapen_query_is_an_error_note_not_an_exception(con, lake_config, tmp_path):
    ghost = Chart("no_such_chart", "t", "d", "lines", x="day", columns=("day",))
    assert query_chart(con, ghost, lake_config).status == STATUS_ERROR  # its .sql file is missing
    con.execute("CREATE OR REPLACE TEMP VIEW eval_runs AS SELECT 1 AS finished_at")
    try:
        bad = query_chart(con, dashboards.chart_by_name("student_vs_teacher"), lake_config)
    finally:
        con.execute("DROP VIEW eval_runs")
    assert bad.status == STATUS_ERROR and "query failed" in bad.message
    assert "query failed" in render_html([bad], built_at=NOW, lake="x")


def test_the_page_is_self_contained_and_shows_each_charts_sql(con, lake_config, tmp_path):
    path = build_dashboard(lake_config, tmp_path / "d.html", con=con, now=lambda: NOW)
    page = path.read_text(encoding="utf-8")
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page), "the page must load nothing"
    assert "Plotly" in page and page.count("<script") == 3
    for chart in CHARTS:
        sql = chart_sql(chart, lake_config)
        first = sql.splitlines()[0]
        assert html.escape(first) in page
        assert f'id="plot-{chart.name}"' in page and f'data-copy="sql-{chart.name}"' in page
    assert not list(tmp_path.glob(".*.tmp"))


def test_sql_shown_runs_as_is_in_a_fresh_duckdb(lake_config, tmp_path):
    """What an analyst copies runs in the plain duckdb CLI over `costline lake views`."""
    from costline.lake import write_views_db

    db = write_views_db(lake_config)
    fresh = duckdb.connect(str(db), read_only=True)
    try:
        for name in FROM_LAKE:
            assert fresh.execute(chart_sql(dashboards.chart_by_name(name), lake_config)).fetchall()
    finally:
        fresh.close()


def test_waterfall_reads_the_latest_cost_report_once_one_was_run(tmp_path):
    from costline.jobs.cost_report import run_cost_report

    config = demo_lake(tmp_path / "lake", days=2, per_day=150)
    start = dt.datetime(2026, 11, 1)
    run_cost_report(config, since=start, until=start + dt.timedelta(days=2), now=lambda: NOW)
    con = open_lake(config)
    try:
        report = con.execute("SELECT day, step, stage, cost_usd FROM cost_report_days ORDER BY day, step").fetchall()
        rows = query_chart(con, dashboards.chart_by_name("savings_waterfall"), config).rows
    finally:
        con.close()
    assert report and len(rows) == len(report)
    for (rday, step, stage, cost), (day, step2, stage2, cost2) in zip(report, rows):
        assert (str(rday), step, stage) == (str(day), step2, stage2)
        assert cost2 == pytest.approx(cost)


def test_waterfall_before_a_report_is_the_reports_computation_over_the_lakes_days(tmp_path):
    """Until a report is stored, the chart computes what `costline jobs cost-report` would over the lake's whole
    days: the same stages, day by day, to the cent (hosting of idle hours included)."""
    from costline.jobs.cost_report import build_cost_report

    config = demo_lake(tmp_path / "lake", days=2, per_day=150)
    con = open_lake(config)
    try:
        rows = query_chart(con, dashboards.chart_by_name("savings_waterfall"), config).rows
        first, last = con.execute("SELECT min(ts)::DATE, max(ts)::DATE FROM requests").fetchone()
        since = dt.datetime.combine(first, dt.time())
        report = build_cost_report(con, config, since=since,
                                   until=dt.datetime.combine(last, dt.time()) + dt.timedelta(days=1))
    finally:
        con.close()
    want = [(str(d["day"]), d["step"], d["stage"], d["cost_usd"]) for d in report.per_day]
    assert [(str(day), step, stage) for day, step, stage, _ in rows] == [w[:3] for w in want]
    assert [cost for *_, cost in rows] == pytest.approx([w[3] for w in want], abs=1e-9)


def test_waterfall_baseline_bills_cached_tokens_at_the_frontier_models_cache_prices(tmp_path):
    """One budget call of 10,000 input tokens, 8,000 of them cache reads and 1,000 cache writes, and 200 output: on
    the frontier model ($10 in, $50 out) it would cost 1,000 x 10 + 8,000 x 1 + 1,000 x 12.5 + 200 x 50 per million,
    not 10,000 x 10 + 200 x 50 (reads at 0.1 x, writes at 1.25 x the input)."""
    from costline.lake import Lake
    from costline.processors.buffer import rows_to_tables
    from costline.processors.records import CallRow, RequestRow

    config = Config(lake=LakeConfig(path=tmp_path / "lake"), pricing=PricingConfig(
        models=(ModelPrice("small", "budget", input_per_mtok=1.0, output_per_mtok=5.0),
                ModelPrice("big", "frontier", input_per_mtok=10.0, output_per_mtok=50.0)),
        student_usd_per_hour=0.0, student_providers=()))
    ts = int(dt.datetime(2026, 11, 7, 1, tzinfo=dt.UTC).timestamp() * 1_000_000)
    paid = (1000 * 1.0 + 8000 * 0.1 + 1000 * 1.25 + 200 * 5.0) / 1e6
    request = RequestRow("R1", "t1", "s1", ts, "acme", "faq", "x", "budget", "budget", False, 1, 0, True, None, 5.0,
                         None, None, 0, 0)
    call = CallRow("c1", "t1", "s1", "R1", ts, "chat", "anthropic", "small", "small", "budget", 10_000, 200, 8000,
                   1000, False, ["stop"], None, paid, "priced", "v", 5.0, None, None, 0, 1)
    Lake(config.lake.path).init().commit_batch("otlp_spans", 0, 0, 1, {
        "requests": rows_to_tables("requests", [request]), "calls": rows_to_tables("calls", [call])})
    con = open_lake(config)
    try:
        rows = query_chart(con, dashboards.chart_by_name("savings_waterfall"), config).rows
    finally:
        con.close()
    assert [(stage, cost) for _day, _step, stage, cost in rows] == [
        ("baseline", pytest.approx((10_000 + 8000 + 12_500 + 10_000) / 1e6)), ("routing", pytest.approx(paid)),
        ("cache", pytest.approx(paid)), ("student", pytest.approx(paid))]


def test_rejected_attempts_count_every_paid_answer_that_was_not_used(con, lake_config):
    """The chart's total per (tier, problem) is the plans' calls that did not serve the request: each failed with an
    API error, or was escalated away from (the validator), or was the last answer of a failed request."""
    from collections import Counter

    expected: Counter = Counter()
    for plan in demo_plans():
        for i, call in enumerate(plan.calls):
            if call.error_type or i < len(plan.calls) - 1 or not plan.success:
                expected[(call.tier, call.error_type or "validator")] += 1
    result = query_chart(con, dashboards.chart_by_name("rejected_attempts"), lake_config)
    i = {c: n for n, c in enumerate(result.columns)}
    got: Counter = Counter()
    for row in result.rows:
        got[(row[i["tier"]], row[i["problem"]])] += row[i["rejected"]]
    assert got == expected and sum(expected.values()) > 0


# --- hand-made rows through the processor's commit path: spend per app, unpriced calls, NaN/inf costs ---------

HAND_MODELS = (ModelPrice("claude-haiku-4-5", "budget", input_per_mtok=1.0, output_per_mtok=5.0),
               ModelPrice("claude-sonnet-4-6", "mid", input_per_mtok=3.0, output_per_mtok=15.0),
               ModelPrice("claude-fable-5", "frontier", input_per_mtok=10.0, output_per_mtok=50.0))
DAY = dt.datetime(2026, 11, 7)


def _us(t: dt.datetime) -> int:
    return int(t.replace(tzinfo=dt.UTC).timestamp() * 1_000_000)


def _request(span: str, t: dt.datetime, tier: str, service: str):
    from costline.processors.records import RequestRow

    return RequestRow(span, f"t-{span}", span, _us(t), "acme", "faq", "x", tier, tier, False, 1, 0, True, None, 5.0,
                      None, None, 0, 0, None, None, service)


def _call(span: str, parent: str, t: dt.datetime, *, tier: str = "mid", model: str = "claude-sonnet-4-6",
          cost: float | None = 0.01, status: str = "priced", provider: str = "anthropic"):
    from costline.processors.records import CallRow

    return CallRow(span, f"t-{parent}", parent, None, _us(t), "chat", provider, model, model, tier, 1000, 100, 0, 0,
                   False, ["stop"], None, cost, status, "test", 100.0, None, None, 0, 0, None, None, None)


def _hand_lake(tmp_path, requests, calls, **pricing) -> Config:
    from costline.lake import Lake
    from costline.processors.buffer import rows_to_tables

    config = Config(lake=LakeConfig(path=tmp_path / "lake"),
                    pricing=PricingConfig(models=HAND_MODELS, **{"student_usd_per_hour": 0.0, **pricing}))
    Lake(config.lake.path).init().commit_batch("otlp_spans", 0, 0, 0, {
        "requests": rows_to_tables("requests", list(requests)), "calls": rows_to_tables("calls", list(calls))})
    return config


def _chart_records(config: Config, name: str) -> list[dict]:
    con = open_lake(config)
    try:
        result = query_chart(con, dashboards.chart_by_name(name), config, now=lambda: NOW)
    finally:
        con.close()
    assert result.status == STATUS_OK, result.message
    return [dict(zip(result.columns, row)) for row in result.rows]


def test_spend_per_app_bars_add_up_to_the_days_bill_idle_student_hosting_included(tmp_path):
    """One GPU at $2.00/h scheduled for all of 2026-11-07; two chat-app requests on the student at 10:00 and 10:01,
    one search-app request on Sonnet ($0.01) at 10:02. By hand: hour 10's $2.00 is shared by the two student
    requests (chat-app $2.00); the other 23 hours no request shared: 23 x $2.00 = $46.00 idle; the day's bill is
    24 x $2.00 + $0.01 = $48.01, what tier_hourly (and so the cost report) says it cost."""
    from costline.config import HostingPeriod

    requests, calls = [], []
    for i, (app, tier) in enumerate([("chat-app", "student"), ("chat-app", "student"), ("search-app", "mid")]):
        t = DAY.replace(hour=10, minute=i)
        requests.append(_request(f"r{i}", t, tier, app))
        calls.append(_call(f"c{i}", f"r{i}", t, tier=tier, model="costline-student" if tier == "student" else
                           "claude-sonnet-4-6", provider="vllm" if tier == "student" else "anthropic",
                           cost=0.0 if tier == "student" else 0.01, status="student" if tier == "student" else "priced"))
    config = _hand_lake(tmp_path, requests, calls,
                        hosting=(HostingPeriod(2.0, 1, "2026-11-07T00:00:00Z", "2026-11-08T00:00:00Z"),))
    spend = {r["service"]: r["cost_usd"] for r in _chart_records(config, "spend_per_app")}
    assert spend == {"chat-app": pytest.approx(2.00), "search-app": pytest.approx(0.01),
                     "(idle student hosting)": pytest.approx(46.00)}
    assert sum(spend.values()) == pytest.approx(48.01)
    per_tier = {r["tier"]: r for r in _chart_records(config, "cost_per_success")}
    assert per_tier["student"]["cost_usd"] == pytest.approx(48.00)
    assert per_tier["student"]["cost_per_success"] == pytest.approx(24.00)  # $48.00 over its 2 successes
    assert per_tier["mid"]["cost_per_success"] == pytest.approx(0.01)


def test_unpriced_calls_are_counted_beside_the_spend_they_leave_out(tmp_path):
    """Three Sonnet requests a day at $0.02; on the second day the app's model is one the pricing table does not
    know (cost NULL, 'unknown_model'): that day's $0 is a lower bound of 3 unpriced calls, on both cost charts."""
    requests, calls = [], []
    for d in range(2):
        for i in range(3):
            t = DAY + dt.timedelta(days=d, minutes=i)
            sid = f"r{d}-{i}"
            requests.append(_request(sid, t, "mid", "support-bot"))
            calls.append(_call(f"c{sid}", sid, t, cost=0.02) if d == 0 else
                         _call(f"c{sid}", sid, t, model="claude-sonnet-5", cost=None, status="unknown_model"))
    config = _hand_lake(tmp_path, requests, calls)
    for name, key in (("spend_per_app", "service"), ("cost_per_success", "tier")):
        got = [(r["day"], r[key], r["cost_usd"], r["unpriced_calls"], r["bad_costs"]) for r in _chart_records(config, name)]
        label = "support-bot" if key == "service" else "mid"
        assert got == [("2026-11-07", label, pytest.approx(0.06), 0, 0), ("2026-11-08", label, 0.0, 3, 0)], name


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_nan_or_infinite_call_cost_is_left_out_and_counted_not_the_whole_day(tmp_path, bad):
    """Three requests of one $0.01 call, and one of two calls: $0.02 and one whose cost is NaN (or inf). By hand,
    as the cost report sums (finite costs only): $0.03 + $0.02 = $0.05 over 4 successes = $0.0125, 1 cost left
    out."""
    t = DAY.replace(hour=10)
    requests = [_request(f"r{i}", t, "mid", "app") for i in range(4)]
    calls = [_call(f"c{i}", f"r{i}", t, cost=0.01) for i in range(3)]
    calls += [_call("c3a", "r3", t, cost=0.02), _call("c3b", "r3", t + dt.timedelta(seconds=1), cost=bad)]
    config = _hand_lake(tmp_path, requests, calls)
    [spend] = _chart_records(config, "spend_per_app")
    assert (spend["cost_usd"], spend["requests"], spend["bad_costs"]) == (pytest.approx(0.05), 4, 1)
    [tier] = _chart_records(config, "cost_per_success")
    assert (tier["cost_per_success"], tier["cost_usd"], tier["bad_costs"]) == (pytest.approx(0.0125),
                                                                              pytest.approx(0.05), 1)
