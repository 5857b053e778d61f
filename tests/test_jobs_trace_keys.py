"""The jobs' item tables are keyed like the requests they judge: ``(trace_id, request_id)``.

Two apps may use one request id (OpenLLMetry apps that set their own ids, two tenants counting from 0):
the drift and shadow jobs sample both, so ``eval_items`` / ``shadow_items`` carry each row's ``trace_id``,
and a join back to ``requests`` on both keys finds exactly one request per result row. A lake an older
costline wrote (item files without the column) still reads, ``trace_id`` NULL, locally and in table mode.

Hand-made lakes through the real commit path (``tests/test_jobs_open_world.py``'s helpers), the real
anthropic SDK over an httpx MockTransport. Every expected value is written out by hand below.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from costline.config import CaptureConfig, Config
from tests.test_jobs_open_world import T0, T1, anthropic_mock, commit, last_word, make_lake, req_rows, tuned

# Trace ids as req_rows makes them: the 32-hex-digit number of the row (its index + offset).
ACME_DUP, GLOBEX_DUP = f"{0:032x}", f"{1000:032x}"

#: What a costline before trace_id wrote (the item schemas without it), written out here, not derived.
OLD_EVAL_ITEMS = pa.schema([
    ("run_id", pa.string()), ("request_id", pa.string()), ("ts", pa.timestamp("us")), ("subtype", pa.string()),
    ("task_type", pa.string()), ("metric", pa.string()), ("query", pa.string()),
    ("student_answer", pa.string()), ("teacher_answer", pa.string()),
    ("student_score", pa.float64()), ("teacher_score", pa.float64()), ("query_chars", pa.int64()),
])
OLD_SHADOW_ITEMS = pa.schema([
    ("run_id", pa.string()), ("request_id", pa.string()), ("tier", pa.string()), ("next_tier", pa.string()),
    ("subtype", pa.string()), ("metric", pa.string()), ("score", pa.float64()), ("match", pa.bool_()),
])


def shared_id_rows() -> list:
    """Per tier (student for drift, budget for shadow): ``req-dup`` in an acme trace and in a globex trace,
    and two requests with ids of their own: 4 requests, 3 distinct request ids."""
    rows = []
    for tier, base in (("student", 0), ("budget", 5000)):
        rows += req_rows(0, rid="req-dup", tier=tier, tenant="acme", query="q acme #0 positive", answer="positive",
                         off=base)
        rows += req_rows(0, rid="req-dup", tier=tier, tenant="globex", query="q globex #0 negative",
                         answer="negative", off=base + 1000)
        rows += req_rows(1, rid=f"req-{tier}-1", tier=tier, query="q acme #1 positive", answer="positive", off=base)
        rows += req_rows(2, rid=f"req-{tier}-2", tier=tier, query="q acme #2 positive", answer="positive", off=base)
    return rows


def small(cfg: Config) -> Config:
    return tuned(cfg, drift={"min_per_subtype": 1}, shadow={"tiers": ("budget",)})


def run_both(cfg: Config) -> tuple[str, str]:
    from costline.jobs.drift import run_drift
    from costline.jobs.shadow import run_shadow

    d = run_drift(cfg, since=T0, until=T1, client=anthropic_mock(last_word))
    s = run_shadow(cfg, since=T0, until=T1, client=anthropic_mock(last_word))
    return d.run_id, s.run_id


def query(cfg: Config, sql: str, **params) -> list[tuple]:
    from costline.jobs.store import open_jobs_lake

    con = open_jobs_lake(cfg)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def check_trace_keys(cfg: Config, drift_run: str, shadow_run: str) -> None:
    for table, run, tier, own in (("eval_items", drift_run, "student", "req-student"),
                                  ("shadow_items", shadow_run, "budget", "req-budget")):
        # the two req-dup rows are told apart by their traces (acme's 0 and globex's 1000, plus the tier's offset)
        base = 0 if tier == "student" else 5000
        dup = sorted(query(cfg, f"SELECT request_id, trace_id FROM {table} WHERE run_id = $r AND request_id = "
                                "'req-dup'", r=run))
        assert dup == [("req-dup", f"{base:032x}"), ("req-dup", f"{base + 1000:032x}")], table
        # back to the requests on both keys: one request per result row (4 rows, 4 requests, the tenant each)
        joined = sorted(query(cfg, f"""
            SELECT i.request_id, i.trace_id, count(r.request_id) AS n, any_value(r.tenant) AS tenant
            FROM {table} i LEFT JOIN requests r ON r.trace_id = i.trace_id AND r.request_id = i.request_id
            WHERE i.run_id = $r GROUP BY ALL""", r=run))
        assert joined == sorted([
            ("req-dup", f"{base:032x}", 1, "acme"), ("req-dup", f"{base + 1000:032x}", 1, "globex"),
            (f"{own}-1", f"{base + 1:032x}", 1, "acme"), (f"{own}-2", f"{base + 2:032x}", 1, "acme")]), table
        # the request id alone fans out: req-dup is 4 requests in the lake (2 traces x 2 tiers), so its 2 rows
        # give 2 x 4 = 8, plus 1 + 1 for the others: 10 rows, not 4
        fanned = query(cfg, f"SELECT count(*) FROM {table} i JOIN requests r USING (request_id) WHERE i.run_id = $r",
                       r=run)
        assert fanned == [(10,)], table


def test_two_requests_with_one_id_are_two_result_rows_joining_back_one_request_each(tmp_path: Path) -> None:
    cfg = small(make_lake(tmp_path / "lake", shared_id_rows()))
    drift_run, shadow_run = run_both(cfg)
    check_trace_keys(cfg, drift_run, shadow_run)


def _write_old(path: Path, schema: pa.Schema, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


OLD_EVAL_ROW = {"run_id": "drift-old", "request_id": "req-old", "ts": dt.datetime(2026, 11, 1), "subtype": "intent",
                "metric": "exact", "query": "q old", "student_score": 1.0, "teacher_score": 1.0, "query_chars": 5}
OLD_SHADOW_ROW = {"run_id": "shadow-old", "request_id": "req-old", "tier": "budget", "next_tier": "mid",
                  "subtype": "intent", "metric": "exact", "score": 1.0, "match": True}


def test_a_local_lake_an_older_costline_wrote_reads_trace_id_as_null(tmp_path: Path) -> None:
    """The item folders hold only files without trace_id (their zero-row schema files too): the views read
    the column as NULL; the next runs' rows carry it beside the old ones."""
    cfg = small(make_lake(tmp_path / "lake", shared_id_rows()))
    jobs = tmp_path / "lake" / "jobs"
    _write_old(jobs / "eval_items" / "_empty.parquet", OLD_EVAL_ITEMS, [])
    _write_old(jobs / "eval_items" / "drift-old.parquet", OLD_EVAL_ITEMS, [OLD_EVAL_ROW])
    _write_old(jobs / "shadow_items" / "_empty.parquet", OLD_SHADOW_ITEMS, [])
    _write_old(jobs / "shadow_items" / "shadow-old.parquet", OLD_SHADOW_ITEMS, [OLD_SHADOW_ROW])
    assert query(cfg, "SELECT run_id, request_id, trace_id, query FROM eval_items") == [
        ("drift-old", "req-old", None, "q old")]
    assert query(cfg, "SELECT run_id, request_id, trace_id, match FROM shadow_items") == [
        ("shadow-old", "req-old", None, True)]
    drift_run, shadow_run = run_both(cfg)
    check_trace_keys(cfg, drift_run, shadow_run)
    assert query(cfg, "SELECT count(*), count(trace_id) FROM eval_items") == [(5, 4)]  # the old row: NULL
    assert query(cfg, "SELECT count(*), count(trace_id) FROM shadow_items") == [(5, 4)]


@pytest.mark.objstore
def test_table_mode_adds_trace_id_to_result_tables_an_older_costline_made(objstore, tmp_path: Path) -> None:
    pytest.importorskip("pyiceberg")
    from costline.tablelake import ResultTables, TableLake
    from tests.tablelake_helpers import table_lake_config

    lc = table_lake_config(objstore, tmp_path)
    commit(TableLake(lc).init(), shared_id_rows())
    cfg = small(Config(lake=lc, capture=CaptureConfig(message_content=True)))
    # the result tables as an older costline made them: no trace_id column
    ResultTables(lc).write("eval_items", "drift-old", pa.Table.from_pylist([OLD_EVAL_ROW], schema=OLD_EVAL_ITEMS))
    ResultTables(lc).write("shadow_items", "shadow-old",
                           pa.Table.from_pylist([OLD_SHADOW_ROW], schema=OLD_SHADOW_ITEMS))
    assert query(cfg, "SELECT run_id, request_id, trace_id FROM eval_items") == [("drift-old", "req-old", None)]
    assert query(cfg, "SELECT run_id, request_id, trace_id FROM shadow_items") == [("shadow-old", "req-old", None)]
    drift_run, shadow_run = run_both(cfg)
    check_trace_keys(cfg, drift_run, shadow_run)
    assert query(cfg, "SELECT count(*), count(trace_id) FROM eval_items") == [(5, 4)]
    assert query(cfg, "SELECT count(*), count(trace_id) FROM shadow_items") == [(5, 4)]
    from costline.lake import open_lake, raw_source

    con = open_lake(cfg)  # the sampler read the Iceberg tables' datasets, by the name the lake gave them
    try:
        src = raw_source(con, "requests")
        assert src is not None and "requests_iceberg" in src.sql and not src.date_partitioned
    finally:
        con.close()


# -- the sampler reads the rows the lake names for each <table>_raw view ----------------------------------------

def test_the_lake_names_each_raw_views_source_and_the_sampler_reads_it(tmp_path: Path) -> None:
    from costline.jobs.sampling import candidates_sql, sample_requests
    from costline.lake import open_lake, raw_source

    cfg = small(make_lake(tmp_path / "lake", shared_id_rows()))
    con = open_lake(cfg)
    try:
        for table in ("requests", "calls", "lookups"):
            src = raw_source(con, table)
            assert src is not None and src.date_partitioned, table
            assert src.sql.startswith("read_parquet(") and f"{tmp_path / 'lake' / table}/" in src.sql, table
        sql = candidates_sql(con=con)
        assert raw_source(con, "requests").sql in sql and "date >= CAST($since AS DATE)" in sql
        # 4 student requests, the two req-dup ones by their traces
        got = sample_requests(con, tier="student", since=T0, until=T1, size=10)
        assert sorted((s.request_id, s.trace_id) for s in got) == [
            ("req-dup", ACME_DUP), ("req-dup", GLOBEX_DUP), ("req-student-1", f"{1:032x}"),
            ("req-student-2", f"{2:032x}")]
        # a requests_raw made again by hand is no view the lake named: the sampler reads the view itself
        con.execute("CREATE TABLE requests_raw_copy AS SELECT * FROM requests_raw")
        con.execute("CREATE OR REPLACE VIEW requests_raw AS SELECT * FROM requests_raw_copy")
        assert raw_source(con, "requests") is None
        sql = candidates_sql(con=con)
        assert "FROM requests_raw\n" in sql and raw_source(con, "calls").sql in sql
        again = sample_requests(con, tier="student", since=T0, until=T1, size=10)
        assert sorted((s.request_id, s.trace_id) for s in again) == sorted((s.request_id, s.trace_id) for s in got)
    finally:
        con.close()
    assert raw_source(__import__("duckdb").connect(), "requests") is None  # no lake views at all
