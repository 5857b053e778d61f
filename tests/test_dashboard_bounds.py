"""The dashboard keeps to a window of history ([dashboard] days) and embeds only the tenant panels it draws, so a
rebuild (every refresh_s with --serve) stays bounded however long the lake's history and however many tenants."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from figures_lake import query_lake

import costline.dashboards as dashboards
from costline.config import Config, LakeConfig
from costline.dashboards import build_dashboard, query_chart
from costline.dashboards.build import STATUS_OK
from costline.dashboards.charts import CACHE_MAX_TENANTS
from costline.dashboards.settings import DashboardConfig
from costline.lake import Lake, open_lake
from costline.processors.buffer import rows_to_tables
from costline.processors.records import LookupRow, RequestRow


def _us(t: dt.datetime) -> int:
    return int(t.replace(tzinfo=dt.UTC).timestamp() * 1_000_000)


def _request(span: str, t: dt.datetime) -> RequestRow:
    return RequestRow(span, f"t-{span}", span, _us(t), "acme", "faq", "x", "mid", "mid", False, 1, 0, True, None,
                      5.0, None, None, 0, 0, None, None, "app")


def _lookup(span: str, t: dt.datetime, tenant: str, hit: bool) -> LookupRow:
    return LookupRow(span, f"tl-{span}", None, None, _us(t), tenant, None, hit, 0.95, 1.0, 0, 0, None, None, None)


def _lake(tmp_path, requests=(), lookups=(), days: int = 35) -> Config:
    config = Config(lake=LakeConfig(path=tmp_path / "lake"), dashboard=DashboardConfig(days=days))
    tables = {"requests": rows_to_tables("requests", list(requests)), "lookups": rows_to_tables("lookups", list(lookups))}
    Lake(config.lake.path).init().commit_batch("otlp_spans", 0, 0, 0, {k: v for k, v in tables.items()
                                                                         if (requests if k == "requests" else lookups)})
    return config


def _days(config: Config, name: str, now: dt.datetime) -> list[str]:
    con = open_lake(config)
    try:
        result = query_chart(con, dashboards.chart_by_name(name), config, now=lambda: now)
    finally:
        con.close()
    assert result.status == STATUS_OK, result.message
    i = result.columns.index(result.chart.x)
    return sorted({str(row[i])[:10] for row in result.rows})


# Requests on these days (10:00 UTC); with days = 10 the window is the 10 days up to the newest day with data or,
# when that is later than the build day, up to the build day (a span stamped in the future moves nothing).
DAYS = ("2000-01-01", "2026-10-01", "2026-10-28", "2026-10-29", "2026-11-06", "2026-11-07", "2099-06-01")


@pytest.mark.parametrize("now, first", [
    # built the day after the newest real data: 10 days back from the build day (2026-11-08) is 2026-10-30
    (dt.datetime(2026, 11, 8, 1, tzinfo=dt.UTC), "2026-10-30"),
    # built on 2026-11-07: from 2026-10-29 (10 days including that one)
    (dt.datetime(2026, 11, 7, 23, tzinfo=dt.UTC), "2026-10-29"),
])
@pytest.mark.parametrize("name", ["spend_per_app", "cost_per_success", "traffic_mix"])
def test_cost_charts_keep_to_the_configured_window(tmp_path, name, now, first):
    config = _lake(tmp_path, [_request(f"r{i}", dt.datetime.fromisoformat(d).replace(hour=10))
                              for i, d in enumerate(DAYS)], days=10)
    want = [d for d in DAYS if d >= first]  # the 2099 span is after the build day: kept, the page counts it
    assert _days(config, name, now) == want


def test_a_lake_whose_data_ends_before_the_build_day_shows_its_last_window(tmp_path):
    config = _lake(tmp_path, [_request(f"r{i}", dt.datetime.fromisoformat(d).replace(hour=10))
                              for i, d in enumerate(DAYS[:-1])], days=10)
    # built months later: the window is the 10 days up to the newest day with data (2026-11-07)
    assert _days(config, "spend_per_app", dt.datetime(2027, 3, 1, tzinfo=dt.UTC)) == [
        "2026-10-29", "2026-11-06", "2026-11-07"]


def test_the_page_embeds_only_the_tenant_panels_it_draws_and_counts_the_rest(tmp_path):
    """25 tenants, tenant k with k + 1 lookups an hour on 2026-11-06: the top 20 by lookups (t05..t24) are
    embedded, 25 counted; lookups before the window (2026-09-01) are not."""
    rows = []
    for k in range(25):
        for h in range(3):
            for j in range(k + 1):
                rows.append(_lookup(f"l{k}-{h}-{j}", dt.datetime(2026, 11, 6, h, j), f"t{k:02d}", j % 2 == 0))
    rows += [_lookup(f"old{k}", dt.datetime(2026, 9, 1, 10), f"t{k:02d}", True) for k in range(25)]
    rows.append(_lookup("older-tenant", dt.datetime(2026, 9, 1, 10), "gone", True))
    config = _lake(tmp_path, lookups=rows, days=35)
    now = dt.datetime(2026, 11, 7, 12, tzinfo=dt.UTC)
    con = open_lake(config)
    try:
        result = query_chart(con, dashboards.chart_by_name("cache_hit_rate"), config, now=lambda: now)
    finally:
        con.close()
    assert result.status == STATUS_OK, result.message
    i = {c: n for n, c in enumerate(result.columns)}
    assert {row[i["tenant"]] for row in result.rows} == {f"t{k:02d}" for k in range(25 - CACHE_MAX_TENANTS, 25)}
    assert {str(row[i["window_start"]])[:10] for row in result.rows} == {"2026-11-06"}
    assert result.facets_total == 25  # "gone" looked up only before the window
    page = build_dashboard(config, tmp_path / "d.html", now=lambda: now).read_text(encoding="utf-8")
    data = json.loads(re.search(r'<script type="application/json" id="costline-data">(.*?)</script>', page,
                                re.S).group(1))
    chart = next(c for c in data["charts"] if c["name"] == "cache_hit_rate")
    assert chart["facets_total"] == 25 and len({r[chart["columns"].index("tenant")] for r in chart["rows"]}) == 20
    assert data["window"] == {"days": 35, "since": "2026-10-03"}
    assert query_lake(config, "SELECT count(DISTINCT tenant) FROM lookups")[0][0] == 26  # all of them in the lake


@pytest.mark.parametrize("value", ["0", "-3", "100000"])
def test_window_days_is_checked_when_the_config_loads(tmp_path, value):
    from costline.config import load_config
    from costline.errors import ConfigError

    toml = tmp_path / "c.toml"
    toml.write_text(f"[dashboard]\ndays = {value}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[dashboard\] days: must be a whole number of days from 1 to"):
        load_config(toml, env={})


def test_window_days_is_read_from_the_config_and_the_environment(tmp_path):
    from costline.config import load_config

    toml = tmp_path / "c.toml"
    toml.write_text("[dashboard]\ndays = 10\n", encoding="utf-8")
    assert load_config(toml, env={}).dashboard.days == 10
    assert load_config(toml, env={"COSTLINE_DASHBOARD_DAYS": "14"}).dashboard.days == 14
    assert DashboardConfig().days == 35
