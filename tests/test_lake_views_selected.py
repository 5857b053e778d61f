"""open_lake(views=...): only the views named and those they read, as the full open makes them; views_in(sql)."""

from __future__ import annotations

import re
from typing import Any

import pytest

import costline.lake._views as lake_views
from costline.config import Config, LakeConfig
from costline.lake import create_views, open_lake, raw_source, views_in

#: The lake's own views, in the order they are made (docs/sql.md, costline/lake/views/), written out by hand.
CORE = ("requests_raw", "calls_raw", "lookups_raw", "call_links_all", "lookup_links", "call_links",
        "call_links_content", "call_content", "hosting_schedule", "student_hosting_hourly", "requests", "calls",
        "lookups", "tier_hourly", "cache_hourly", "cache_hit_rate_7d", "rejections_hourly")


@pytest.fixture
def cfg(tmp_path: Any) -> Config:
    return Config(lake=LakeConfig(path=tmp_path / "lake"))


def _views(con: Any) -> set[str]:
    return {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}


def _shape(con: Any, name: str) -> list[tuple[str, str]]:
    assert con.execute(f"SELECT * FROM {name} LIMIT 0").fetchall() == []
    return [(r[0], r[1]) for r in con.execute(f"DESCRIBE SELECT * FROM {name}").fetchall()]


class _Recorder:
    """A connection that notes the views each statement makes, in order."""

    def __init__(self, con: Any) -> None:
        self.con, self.made = con, []

    def execute(self, sql: str, *args: Any) -> Any:
        self.made += [m.lower() for m in re.findall(r"CREATE OR REPLACE VIEW (\w+)", sql)]
        return self.con.execute(sql, *args)


def test_each_view_alone_answers_with_the_columns_of_the_full_open(cfg: Config) -> None:
    full = open_lake(cfg)
    try:
        names = sorted(_views(full))
        shapes = {name: _shape(full, name) for name in names}
    finally:
        full.close()
    assert set(CORE) < set(names)  # and the other areas' views (alerts, job_runs, ...)
    for name in names:
        con = open_lake(cfg, views=[name])
        try:
            assert _shape(con, name) == shapes[name], name
        finally:
            con.close()


@pytest.mark.parametrize(("name", "expected"), [
    # read off costline/lake/views/*.sql by hand: each view's FROM / JOIN, transitively
    ("hosting_schedule", {"hosting_schedule"}),
    ("requests_raw", {"requests_raw"}),
    ("lookups", {"lookups", "lookup_links", "lookups_raw", "requests_raw"}),
    ("cache_hit_rate_7d", {"cache_hit_rate_7d", "cache_hourly", "lookups", "lookup_links", "lookups_raw",
                           "requests_raw"}),
    # call_links.sql's comments name the requests and calls views and call_content: none is read
    ("calls", {"calls", "call_links", "call_content", "call_links_all", "calls_raw", "requests_raw"}),
    ("requests", {"requests", "call_links_content", "call_links_all", "student_hosting_hourly", "hosting_schedule",
                  "requests_raw", "calls_raw"}),
    ("tier_hourly", {"tier_hourly", "requests", "call_links_content", "call_links_all", "student_hosting_hourly",
                     "hosting_schedule", "requests_raw", "calls_raw"}),
])
def test_a_view_brings_only_the_views_it_reads(cfg: Config, name: str, expected: set[str]) -> None:
    full = open_lake(cfg)
    try:
        others = _views(full) - set(CORE)
    finally:
        full.close()
    con = open_lake(cfg, views=[name])
    try:
        made = _views(con)
    finally:
        con.close()
    assert made & set(CORE) == expected
    assert others <= made  # the other areas' views (over their own files) are always made


def test_the_views_are_made_in_the_order_of_the_full_open(cfg: Config) -> None:
    import duckdb

    every, some = _Recorder(duckdb.connect()), _Recorder(duckdb.connect())
    create_views(every, cfg)
    create_views(some, cfg, views=("rejections_hourly", "lookups"))
    assert every.made[:len(CORE)] == list(CORE)
    assert some.made == [v for v in every.made if v in some.made]
    assert "cache_hourly" not in some.made and "tier_hourly" not in some.made


def test_a_view_of_another_area_brings_the_lake_views_it_reads(cfg: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lake_views, "provided_views", lambda _path: [
        "CREATE OR REPLACE VIEW tenant_spend AS  -- not over calls\n"
        "SELECT tenant, sum(cost_usd) AS calls FROM requests GROUP BY ALL"])
    con = open_lake(cfg, views=["lookups"])
    try:
        assert con.execute("SELECT * FROM tenant_spend").fetchall() == []
        made = _views(con)
    finally:
        con.close()
    assert {"lookups", "requests", "tenant_spend"} <= made
    assert "calls" not in made


def test_only_the_raw_views_made_are_named(cfg: Config) -> None:
    con = open_lake(cfg, views=["lookups"])
    try:
        assert raw_source(con, "lookups") is not None and raw_source(con, "requests") is not None
        assert raw_source(con, "calls") is None
    finally:
        con.close()


def test_an_unknown_view_is_an_error_naming_the_lake_views(cfg: Config) -> None:
    with pytest.raises(ValueError, match=r"no view reqests: its views are .*\brequests\b.*\btier_hourly\b"):
        open_lake(cfg, views=["requests", "reqests"])
    with pytest.raises(TypeError, match=r"views=\['requests'\]"):
        open_lake(cfg, views="requests")


def test_no_view_named_makes_only_the_other_areas_views(cfg: Config) -> None:
    con = open_lake(cfg, views=())
    try:
        made = _views(con)
    finally:
        con.close()
    assert "job_runs" in made and not made & set(CORE)


@pytest.mark.parametrize(("sql", "expected"), [
    ("SELECT * FROM requests", {"requests"}),
    ("select tenant from Requests_Raw", {"requests_raw"}),
    ('SELECT * FROM "calls"', {"calls"}),
    ("SELECT * FROM call_links_content", {"call_links_content"}),
    ("SELECT * FROM requestsx JOIN xcalls USING (id)", set()),
    ("-- requests\nSELECT * FROM calls /* lookups,\n tier_hourly */", {"calls"}),
    ("SELECT '--' AS marker, * FROM calls", {"calls"}),
    ("SELECT count(*) AS requests, sum(cost_usd) AS \"lookups\" FROM calls", {"calls"}),
    ("SELECT * FROM tier_hourly AS t JOIN cache_hourly AS c USING (window_start)", {"tier_hourly", "cache_hourly"}),
    ("SELECT * FROM query_table('lookups')", {"lookups"}),  # a name in a string counts (one too many is harmless)
    ("SELECT * FROM job_runs", set()),  # another area's: made whatever the selection
    ("SHOW TABLES", set(CORE)),
    ("SELECT table_name FROM information_schema.tables", set(CORE)),
    ("DESCRIBE", set(CORE)),  # a bare DESCRIBE lists every table
    ("SELECT count(*) FROM pg_views", set(CORE)),
    ("SELECT $$a -- b$$, count(*) FROM calls", {"calls"}),  # a dollar-quoted string's "--" starts no comment
    ("SELECT e'it\\'s -- x', count(*) FROM calls", {"calls"}),  # nor an escape string's
])
def test_views_in(sql: str, expected: set[str]) -> None:
    assert views_in(sql) == expected


def test_a_query_runs_on_the_views_it_names(cfg: Config) -> None:
    sql = "SELECT count(*) FROM calls c JOIN requests r ON r.request_id = c.request_id"
    con = open_lake(cfg, views=views_in(sql))
    try:
        assert con.execute(sql).fetchall() == [(0,)]
    finally:
        con.close()
