"""The dashboard chart "rejected near-misses per namespace and reason" on a real lake (Parquet files
committed by the lake's own path, DuckDB views). The expected counts are written out by hand from
the lookups below, not computed with the chart's SQL."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from costline.config import Config, LakeConfig
from costline.dashboards import build_dashboard, chart_by_name, query_chart
from costline.dashboards.build import STATUS_EMPTY, STATUS_OK
from costline.lake import LOOKUPS_SCHEMA, Lake, open_lake

D1 = datetime(2026, 11, 3, 9)
D2 = datetime(2026, 11, 4, 15)

# (ts, namespace, hit, reject_reason) — what the verified cache's lookup spans said.
LOOKUPS = [
    (D1, "billing", False, "number,negation"),
    (D1 + timedelta(minutes=1), "billing", False, "number"),
    (D1 + timedelta(minutes=2), "billing", True, "date"),            # a hit after turning a nearer one down
    (D1 + timedelta(minutes=3), "billing", False, "number,similarity"),  # the 2nd candidate: under the floor
    (D1 + timedelta(minutes=4), "billing", True, None),              # plain hit: nothing rejected
    (D1 + timedelta(minutes=5), "billing", False, "similarity"),     # plain miss: no near-miss
    (D1 + timedelta(minutes=6), "travel", False, "entity,entity,scope"),
    (D1 + timedelta(minutes=7), None, False, "negation"),            # the default namespace
    (D2, "billing", False, "negation"),
    (D2 + timedelta(minutes=1), "travel", False, "entity"),
    (D2 + timedelta(minutes=2), "travel", False, "admission"),
    (D2 + timedelta(minutes=3), "travel", True, None),
]

# Counted by hand from LOOKUPS: (day, namespace, reason) -> rejected candidates.
EXPECTED = {
    ("2026-11-03", "(default)", "negation"): 1,
    ("2026-11-03", "billing", "date"): 1,
    ("2026-11-03", "billing", "negation"): 1,
    ("2026-11-03", "billing", "number"): 3,
    ("2026-11-03", "travel", "entity"): 2,
    ("2026-11-03", "travel", "scope"): 1,
    ("2026-11-04", "billing", "negation"): 1,
    ("2026-11-04", "travel", "admission"): 1,
    ("2026-11-04", "travel", "entity"): 1,
}


def write_lookups(lake_path: Path, lookups: list[tuple[datetime, str | None, bool, str | None]], *,
                  partition: int = 0) -> None:
    cols: dict[str, list] = {f.name: [] for f in LOOKUPS_SCHEMA}
    for i, (ts, ns, hit, reason) in enumerate(lookups):
        row = {"span_id": f"L{i:04d}", "trace_id": f"{i:032x}", "ts": ts, "tenant": "acme", "namespace": ns,
               "hit": hit, "similarity": 0.95, "duration_ms": 3.0, "kafka_partition": partition, "kafka_offset": i,
               "reject_reason": reason}
        for name in cols:
            cols[name].append(row.get(name))
    table = pa.table(cols, schema=LOOKUPS_SCHEMA)
    days: dict[str, pa.Table] = {}
    for day in sorted({ts.date() for ts, *_ in lookups}):
        keep = [ts.date() == day for ts, *_ in lookups]
        days[day.isoformat()] = table.filter(pa.array(keep))
    Lake(lake_path).init().commit_batch("otlp_spans", partition, 0, len(lookups) - 1, {"lookups": days})


@pytest.fixture()
def config(tmp_path: Path) -> Config:
    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"))
    write_lookups(cfg.lake.path, LOOKUPS)
    return cfg


def test_rejections_are_counted_per_day_namespace_and_reason(config: Config) -> None:
    chart = chart_by_name("cache_rejections")
    con = open_lake(config)
    try:
        result = query_chart(con, chart, config)
    finally:
        con.close()
    assert result.status == STATUS_OK, result.message
    i = {c: n for n, c in enumerate(result.columns)}
    got = {(str(r[i["day"]]), r[i["namespace"]], r[i["reason"]]): r[i["rejected"]] for r in result.rows}
    assert got == EXPECTED
    assert {r[i["series"]] for r in result.rows} >= {"billing · number", "travel · entity"}
    assert len(result.rows) == len(EXPECTED)  # one row per (day, namespace, reason)


def test_a_lake_without_rejections_says_no_data_yet(tmp_path: Path) -> None:
    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"))
    write_lookups(cfg.lake.path, [(D1, "billing", True, None), (D1, "billing", False, "similarity")])
    con = open_lake(cfg)
    try:
        result = query_chart(con, chart_by_name("cache_rejections"), cfg)
    finally:
        con.close()
    assert result.status == STATUS_EMPTY and result.message.startswith("No data yet")
    assert "reject_reason" in result.message


def test_the_page_carries_the_chart_and_its_sql(config: Config, tmp_path: Path) -> None:
    page = build_dashboard(config, tmp_path / "d.html", now=lambda: D2).read_text(encoding="utf-8")
    assert 'id="plot-cache_rejections"' in page and "Rejected near-misses per namespace and reason" in page
    assert "string_split(reject_reason" in page
