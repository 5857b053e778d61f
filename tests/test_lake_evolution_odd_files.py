"""A lake months old: files of older costline versions beside new ones, and odd files (a crashed or
interrupted write, a file or folder an operator copied in by hand). Real Parquet written here with
pyarrow; the expected figures are computed by hand, never with costline's SQL."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from costline.config import Config, LakeConfig, PricingConfig
from costline.errors import LakeError
from costline.lake import SCHEMAS, Lake, Manifest, open_lake, write_views_db

D1, D2, D3 = dt.date(2026, 3, 1), dt.date(2026, 3, 2), dt.date(2026, 3, 3)

#: The tables' columns as costline 8e540ae (the first lake) wrote them: no data_quality, response_id,
#: instrumentation (added by f512da2), nor lookups.reject_reason (7562a50).
OLD = {
    "requests": SCHEMAS["requests"].remove(SCHEMAS["requests"].get_field_index("data_quality")),
    "calls": pa.schema([f for f in SCHEMAS["calls"] if f.name not in ("response_id", "instrumentation",
                                                                      "data_quality")]),
}


def _at(day: dt.date, hour: int) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, 5)


def _write(path: Path, table: str, rows: list[dict], schema: pa.Schema | None = None) -> Path:
    schema = schema or SCHEMAS[table]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pydict({f.name: [r.get(f.name) for r in rows] for f in schema}, schema=schema),
                   path)
    return path


def _request_and_call(n: int, day: dt.date, cost: float, *, offset: int) -> tuple[dict, dict]:
    trace = f"{n:032x}"
    t = _at(day, 10)
    request = dict(request_id=f"R{n}", trace_id=trace, span_id=f"{n:015x}a", ts=t, tenant="acme", tier="mid",
                   routed_tier="mid", cache_hit=False, attempts=1, escalations=0, success=True,
                   kafka_partition=0, kafka_offset=offset)
    call = dict(span_id=f"{n:015x}b", trace_id=trace, parent_span_id=f"{n:015x}a", request_id=f"R{n}", ts=t,
                operation="chat", provider="anthropic", model="claude-sonnet-4-6", tier="mid", input_tokens=100 * n,
                output_tokens=10 * n, cache_read_tokens=0, cache_creation_tokens=0, batch=False,
                finish_reasons=["stop"], cost_usd=cost, pricing_status="priced", kafka_partition=0,
                kafka_offset=offset)
    return request, call


def _batch(lake: Path, day: dt.date, n: int, cost: float, *, old: bool = False) -> None:
    """Request n and its call as one committed batch (offset n), in the old or the current schema."""
    request, call = _request_and_call(n, day, cost, offset=n)
    name = f"p000-{n:012d}-{n:012d}." + ("parquet" if old else "otlp_spans.parquet")
    for table, row in (("requests", request), ("calls", call)):
        _write(lake / table / f"date={day}" / name, table, [row], OLD[table] if old else None)


def _commit_through(lake: Path, last: int) -> None:
    mdir = lake / "_offsets" / "otlp_spans" / "p000"
    mdir.mkdir(parents=True, exist_ok=True)
    (mdir / f"{last:012d}.json").write_text(Manifest("otlp_spans", 0, 0, last, ()).to_json())


#: request -> (day, cost of its one call), the lake's good rows
GOOD = {1: (D1, 0.25), 2: (D1, 0.5), 3: (D2, 1.0), 4: (D3, 2.0)}


def _mixed_lake(lake: Path) -> None:
    """Requests 1 and 3 in files of the first costline, 2 and 4 in current ones."""
    for n, (day, cost) in GOOD.items():
        _batch(lake, day, n, cost, old=n in (1, 3))
    _commit_through(lake, 4)


@pytest.fixture
def cfg(tmp_path) -> Config:
    return Config(lake=LakeConfig(path=tmp_path / "lake"), pricing=PricingConfig(student_usd_per_hour=0.0))


def _figures(con) -> dict:
    return {
        "requests": con.execute("SELECT request_id, cost_usd, input_tokens FROM requests ORDER BY 1").fetchall(),
        "by_day": con.execute("SELECT CAST(window_start AS DATE), sum(cost_usd), sum(requests) FROM tier_hourly "
                              "GROUP BY 1 ORDER BY 1").fetchall(),
    }


def _expected() -> dict:
    by_day: dict[dt.date, list[float]] = {}
    for day, cost in GOOD.values():
        by_day.setdefault(day, []).append(cost)
    return {
        "requests": [(f"R{n}", pytest.approx(cost), 100 * n) for n, (_, cost) in sorted(GOOD.items())],
        "by_day": [(day, pytest.approx(sum(c)), len(c)) for day, c in sorted(by_day.items())],
    }


def test_old_and_new_schema_files_give_the_hand_computed_figures(cfg: Config) -> None:
    _mixed_lake(cfg.lake.path)
    con = open_lake(cfg)
    assert _figures(con) == _expected()
    # columns the old files lack read as NULL there, set where the new files have them
    rows = con.execute("SELECT request_id, data_quality IS NULL FROM requests_raw ORDER BY 1").fetchall()
    assert rows == [("R1", True), ("R2", True), ("R3", True), ("R4", True)]


def _bad_files(lake: Path) -> dict[Path, bytes]:
    """A zero-byte file (crash before the first write), one cut short (crash or interrupted copy),
    one whose footer is garbage behind intact magic bytes."""
    good = (lake / "calls" / f"date={D1}" / "p000-000000000002-000000000002.otlp_spans.parquet").read_bytes()
    files = {
        lake / "requests" / f"date={D1}" / "p001-000000000001-000000000001.otlp_spans.parquet": b"",
        lake / "calls" / f"date={D2}" / "p001-000000000002-000000000002.otlp_spans.parquet": good[: len(good) // 2],
        lake / "calls" / f"date={D3}" / "copied-by-hand.parquet": b"PAR1" + b"\x07" * 64 + (40).to_bytes(4, "little")
        + b"PAR1",
    }
    for path, data in files.items():
        path.write_bytes(data)
    return files


def test_one_unreadable_file_does_not_stop_every_query(cfg: Config, caplog) -> None:
    lake = cfg.lake.path
    _mixed_lake(lake)
    bad = _bad_files(lake)
    with caplog.at_level(logging.WARNING, logger="costline.lake"):
        con = open_lake(cfg)
        assert _figures(con) == _expected()
    for path, data in bad.items():
        assert not path.exists()
        kept = path.with_name(path.name + ".unreadable")
        assert kept.read_bytes() == data, "the bad file is set aside, not deleted"
        assert str(path) in caplog.text
    assert "unreadable" in caplog.text


def test_costline_sql_and_the_duckdb_file_over_a_lake_with_bad_files(cfg: Config, tmp_path, caplog) -> None:
    from costline.cli import _register_area_commands, cli

    lake = cfg.lake.path
    _mixed_lake(lake)
    _bad_files(lake)
    (tmp_path / "costline.toml").write_text(f'[lake]\npath = "{lake}"\n[pricing]\nstudent_usd_per_hour = 0.0\n')
    _register_area_commands()
    res = CliRunner().invoke(cli, ["--config", str(tmp_path / "costline.toml"), "sql", "--format", "json",
                                   "SELECT count(*) AS n, sum(cost_usd) AS usd FROM requests"],
                             env={"COSTLINE_CONFIG": ""}, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == [{"n": 4, "usd": pytest.approx(3.75)}]
    assert "set aside" in caplog.text  # the CLI logs warnings to stderr
    import duckdb

    _bad_files(lake)  # again, after the first open set them aside
    con = duckdb.connect(str(write_views_db(cfg)))
    con.execute("SET TimeZone = 'UTC'")
    assert _figures(con) == _expected()


def test_the_dashboards_charts_over_a_lake_with_a_bad_file(cfg: Config) -> None:
    from costline.dashboards.build import query_charts

    _mixed_lake(cfg.lake.path)
    _bad_files(cfg.lake.path)
    charts = query_charts(open_lake(cfg), cfg)
    assert charts and not [(c.chart, c.message) for c in charts if c.status == "error"]


def test_a_folder_that_is_no_day_partition_does_not_stop_the_views(cfg: Config, caplog) -> None:
    lake = cfg.lake.path
    _mixed_lake(lake)
    n5, _ = _request_and_call(5, D1, 9.0, offset=5)
    odd = [_write(lake / "requests" / "backup" / "old.parquet", "requests", [n5]),
           _write(lake / "requests" / f"date={D1}.bak" / "old.parquet", "requests", [n5])]
    with caplog.at_level(logging.WARNING, logger="costline.lake"):
        con = open_lake(cfg)
        assert _figures(con) == _expected()
    for path in odd:
        assert path.with_name(path.name + ".misplaced").is_file() and not path.exists()
        assert str(path) in caplog.text


def test_a_hand_copied_file_with_other_column_types(cfg: Config, caplog) -> None:
    """Types the views read alike (int32 tokens, nanosecond times) are read; a column the views cannot
    use (tokens as text, a time zone) is set aside instead of failing every view or shifting hours."""
    lake = cfg.lake.path
    _mixed_lake(lake)
    day = lake / "calls" / f"date={D2}"
    _, c5 = _request_and_call(5, D2, 4.0, offset=5)
    widened = pa.schema([pa.field(f.name, pa.int32() if f.name == "input_tokens" else
                                  pa.timestamp("ns") if f.name == "ts" else f.type) for f in SCHEMAS["calls"]])
    _write(day / "widened.parquet", "calls", [c5], widened)
    _, c6 = _request_and_call(6, D2, 8.0, offset=6)
    text = pa.schema([pa.field(f.name, pa.string() if f.name == "input_tokens" else f.type)
                      for f in SCHEMAS["calls"]])
    _write(day / "text-tokens.parquet", "calls", [{**c6, "input_tokens": "600"}], text)
    _, c7 = _request_and_call(7, D2, 16.0, offset=7)
    zoned = pa.schema([pa.field(f.name, pa.timestamp("us", tz="UTC") if f.name == "ts" else f.type)
                       for f in SCHEMAS["calls"]])
    _write(day / "zoned.parquet", "calls", [c7], zoned)
    with caplog.at_level(logging.WARNING, logger="costline.lake"):
        con = open_lake(cfg)
        calls = con.execute("SELECT request_id, cost_usd, input_tokens, ts, standalone FROM calls "
                            "ORDER BY input_tokens").fetchall()
    # R5's call has no request row: a standalone call under its own span id
    expected = [(f"R{n}", pytest.approx(c), 100 * n, _at(d, 10), False) for n, (d, c) in sorted(GOOD.items())]
    assert calls == expected + [(f"{5:015x}b", pytest.approx(4.0), 500, _at(D2, 10), True)]
    assert (day / "text-tokens.parquet.unreadable").is_file() and (day / "zoned.parquet.unreadable").is_file()
    assert "input_tokens" in caplog.text and "time zone" in caplog.text


def test_compaction_keeps_every_column_and_row_and_skips_a_bad_file(cfg: Config, caplog) -> None:
    lake = cfg.lake.path
    _mixed_lake(lake)
    for n, day in ((5, D1), (6, D2), (7, D3)):  # a second file on each day, with data_quality set
        request, call = _request_and_call(n, day, 0.125 * n, offset=n)
        name = f"p000-{n:012d}-{n:012d}.otlp_spans.parquet"
        _write(lake / "requests" / f"date={day}" / name, "requests", [{**request, "data_quality": f"q{n}"}])
        _write(lake / "calls" / f"date={day}" / name, "calls", [{**call, "response_id": f"id{n}"}])
    _commit_through(lake, 9)
    bad = lake / "calls" / f"date={D2}" / "p000-000000000008-000000000008.otlp_spans.parquet"
    bad.write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="costline.lake"):
        done = Lake(lake).compact(before=dt.date(2026, 3, 4))
    files = {D1: 3, D2: 2, D3: 2}  # requests 1, 2, 5 / 3, 6 (8 set aside) / 4, 7
    assert sorted((t, d, f) for t, d, f, _ in done) == sorted(
        (t, str(d), files[d]) for t in ("calls", "requests") for d in (D1, D2, D3))
    assert bad.with_name(bad.name + ".unreadable").is_file() and str(bad) in caplog.text
    for table in ("requests", "calls"):
        for day in (D1, D2, D3):
            assert [p.name[:2] for p in (lake / table / f"date={day}").glob("*.parquet")] == ["c-"]
    con = open_lake(cfg)
    rows = con.execute("SELECT request_id, data_quality FROM requests_raw ORDER BY 1").fetchall()
    assert rows == [("R1", None), ("R2", None), ("R3", None), ("R4", None), ("R5", "q5"), ("R6", "q6"),
                    ("R7", "q7")]
    calls = con.execute("SELECT request_id, response_id, cost_usd FROM calls ORDER BY 1").fetchall()
    costs = {**{n: c for n, (_, c) in GOOD.items()}, 5: 0.625, 6: 0.75, 7: 0.875}
    assert calls == [(f"R{n}", f"id{n}" if n >= 5 else None, pytest.approx(costs[n])) for n in sorted(costs)]


def test_compaction_of_a_day_duckdb_cannot_merge_still_compacts_the_others(cfg: Config) -> None:
    """A file whose footer parses but whose data does not: that day is reported, the others merged."""
    lake = cfg.lake.path
    _mixed_lake(lake)
    for n, day in ((5, D1), (6, D2)):
        request, call = _request_and_call(n, day, 1.0, offset=n)
        name = f"p000-{n:012d}-{n:012d}.otlp_spans.parquet"
        _write(lake / "requests" / f"date={day}" / name, "requests", [request])
    _commit_through(lake, 9)
    target = lake / "requests" / f"date={D1}" / "p000-000000000005-000000000005.otlp_spans.parquet"
    data = bytearray(target.read_bytes())
    footer = int.from_bytes(data[-8:-4], "little")
    for i in range(4, len(data) - 8 - footer):  # garble the column chunks, keep the footer
        data[i] = 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(LakeError, match=r"date=2026-03-01"):
        Lake(lake).compact(before=dt.date(2026, 3, 4))
    assert [p.name[:2] for p in (lake / "requests" / f"date={D2}").glob("*.parquet")] == ["c-"]
    assert len(list((lake / "requests" / f"date={D1}").glob("p000-*.parquet"))) == 3, "left as it was"
