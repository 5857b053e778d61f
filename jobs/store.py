"""Where the jobs' results live: Parquet files under ``<lake>/jobs/``, DuckDB views over them.

Layout::

    <lake>/jobs/eval_runs/<run_id>.parquet        one row per (drift run, subtype)
    <lake>/jobs/eval_items/<run_id>.parquet       one row per evaluated request
    <lake>/jobs/shadow_runs/<run_id>.parquet      one row per (shadow run, tier)
    <lake>/jobs/shadow_items/<run_id>.parquet
    <lake>/jobs/cost_reports/<report_id>.parquet  one row per stage of a cost report
    <lake>/jobs/cost_report_days/<report_id>.parquet   per day and stage
    <lake>/jobs/job_runs/<run_id>.<n>.parquet     each state change of a run (the view keeps the last)
    <lake>/jobs/route_promotions/<event>.parquet  routing policy promotions and rollbacks (costline route)
    <lake>/jobs/route_retrains/<retrain>.parquet  the nightly routing candidate's verdict, one row per gated
                                                  tier (what the routing_tier_match_drop alert reports)
    <lake>/jobs/<table>/_empty.parquet            zero-row schema file: the views work before any run
    <lake>/jobs/checkpoints/<run_id>.sqlite       resumable teacher answers of a run
    <lake>/jobs/locks/<job>.lock                  one run of a job at a time

Every file is written under a temporary name (``.*.tmp``, never matched by the
views' ``*.parquet`` globs), fsynced and renamed into place: a reader sees a
run's results completely or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from costline.errors import LakeError
from costline.fsutil import atomic_write
from costline.sqlutil import sql_str
from costline.timeutil import utc_naive  # noqa: F401  (re-exported: older imports of jobs.store.utc_naive)

if TYPE_CHECKING:  # pragma: no cover
    import duckdb

    from costline.config import Config

__all__ = ["JobStore", "JOB_SCHEMAS", "JOB_VIEWS", "jobs_views_sql", "job_runs_lake", "open_jobs_lake", "job_store", "result_sink",
           "ResultSink", "result_view_sql"]

_TS: Final = pa.timestamp("us")

JOB_SCHEMAS: Final[Mapping[str, pa.Schema]] = {
    "eval_runs": pa.schema([
        ("run_id", pa.string()), ("started_at", _TS), ("finished_at", _TS),
        ("since", _TS), ("until", _TS), ("subtype", pa.string()), ("task_type", pa.string()),
        ("metric", pa.string()), ("n", pa.int64()),
        ("student_score", pa.float64()), ("teacher_score", pa.float64()),
        ("gap", pa.float64()), ("gap_ci_low", pa.float64()), ("gap_ci_high", pa.float64()),
        ("threshold", pa.float64()), ("baseline_run_id", pa.string()), ("baseline_gap", pa.float64()),
        ("mwu_p", pa.float64()), ("trend_slope", pa.float64()), ("trend_p", pa.float64()),
        ("trend_runs", pa.int64()), ("flagged", pa.bool_()), ("reason", pa.string()),
        ("input_psi", pa.float64()), ("length_ks", pa.float64()), ("length_ks_p", pa.float64()),
        ("mmd", pa.float64()), ("mmd_p", pa.float64()), ("input_drift", pa.bool_()),
        ("input_reason", pa.string()), ("teacher_model", pa.string()), ("batch", pa.bool_()),
        ("job_cost_usd", pa.float64()), ("seed", pa.int64()),
    ]),
    # eval_items / shadow_items: one row per sampled request, keyed like the requests view by
    # (trace_id, request_id) (a request id is the app's: two apps, or retries, may reuse one), with the
    # tenant its request spans name (NULL: none, or not one), which `costline lake forget` removes them by.
    # Files written before trace_id or tenant existed read them as NULL (forget then goes by the request).
    "eval_items": pa.schema([
        ("run_id", pa.string()), ("request_id", pa.string()), ("trace_id", pa.string()), ("ts", _TS),
        ("subtype", pa.string()), ("task_type", pa.string()), ("metric", pa.string()), ("query", pa.string()),
        ("student_answer", pa.string()), ("teacher_answer", pa.string()),
        ("student_score", pa.float64()), ("teacher_score", pa.float64()), ("query_chars", pa.int64()),
        ("tenant", pa.string()),
    ]),
    "shadow_runs": pa.schema([
        ("run_id", pa.string()), ("started_at", _TS), ("finished_at", _TS), ("since", _TS), ("until", _TS),
        ("tier", pa.string()), ("next_tier", pa.string()), ("n", pa.int64()), ("matches", pa.int64()),
        ("tier_match_rate", pa.float64()), ("rate_ci_low", pa.float64()), ("rate_ci_high", pa.float64()),
        ("baseline_rate", pa.float64()), ("drop_p", pa.float64()), ("trend_slope", pa.float64()),
        ("trend_p", pa.float64()), ("flagged", pa.bool_()), ("reason", pa.string()),
        ("job_cost_usd", pa.float64()), ("seed", pa.int64()),
        # the tier's slices (costline.jobs.shadow.SliceAssessment.as_dict) as a JSON list; NULL in files
        # written before slices were judged
        ("slices", pa.string()),
    ]),
    "shadow_items": pa.schema([
        ("run_id", pa.string()), ("request_id", pa.string()), ("trace_id", pa.string()), ("tier", pa.string()),
        ("next_tier", pa.string()), ("subtype", pa.string()), ("metric", pa.string()), ("score", pa.float64()),
        ("match", pa.bool_()), ("task_type", pa.string()),  # task_type: NULL in older files
        ("tenant", pa.string()),
    ]),
    "cost_reports": pa.schema([
        ("report_id", pa.string()), ("generated_at", _TS), ("since", _TS), ("until", _TS), ("days", pa.float64()),
        ("step", pa.int64()), ("stage", pa.string()), ("what", pa.string()), ("requests", pa.int64()),
        ("total_cost_usd", pa.float64()), ("daily_cost_usd", pa.float64()), ("monthly_cost_usd", pa.float64()),
        ("cumulative_saving", pa.float64()), ("student_requests_per_day", pa.float64()),
        ("break_even_requests_per_day", pa.float64()),
    ]),
    # requests .. hosting_usd: the lake's figures of the day the report was computed from (the same on each stage's
    # row), which the savings waterfall checks before it shows the stored day; NULL in files written before they were
    # stored: such a day is computed from the lake instead
    "cost_report_days": pa.schema([
        ("report_id", pa.string()), ("generated_at", _TS), ("day", pa.date32()), ("step", pa.int64()),
        ("stage", pa.string()), ("cost_usd", pa.float64()), ("requests", pa.int64()), ("cache_hits", pa.int64()),
        ("calls", pa.int64()), ("call_cost_usd", pa.float64()), ("hosting_usd", pa.float64()),
    ]),
    "route_promotions": pa.schema([
        ("event_id", pa.string()), ("ts", _TS), ("action", pa.string()), ("policy_path", pa.string()),
        ("policy_sha256", pa.string()), ("parent_sha256", pa.string()), ("passed", pa.bool_()),
        ("note", pa.string()),
    ]),
    # One row per (nightly retrain, tier the gate judged); a retrain that moved nothing or was
    # skipped has one row with tier NULL. Written by costline.serving.routing.loop, read by the alerts.
    "route_retrains": pa.schema([
        ("retrain_id", pa.string()), ("evaluated_at", _TS), ("window_since", _TS), ("window_until", _TS),
        ("status", pa.string()), ("trigger", pa.string()), ("candidate", pa.string()),
        ("candidate_sha256", pa.string()), ("incumbent", pa.string()), ("labels", pa.int64()),
        ("passed", pa.bool_()), ("failing", pa.string()), ("promoted", pa.bool_()), ("moved_down", pa.int64()),
        ("moved_up", pa.int64()), ("gate", pa.float64()), ("tier", pa.string()), ("tier_moved", pa.int64()),
        ("tier_judged", pa.int64()), ("tier_adequate", pa.int64()), ("ci_low", pa.float64()),
        ("ci_high", pa.float64()), ("tier_passed", pa.bool_()), ("reason", pa.string()),
        ("judge_cost_usd", pa.float64()),
    ]),
    "job_runs": pa.schema([
        ("run_id", pa.string()), ("job", pa.string()), ("window_since", _TS), ("window_until", _TS),
        ("started_at", _TS), ("finished_at", _TS), ("status", pa.string()), ("rows", pa.int64()),
        ("cost_usd", pa.float64()), ("error", pa.string()), ("attempt", pa.int64()),
        ("retry_of", pa.string()), ("result_id", pa.string()), ("updated_at", _TS),
    ]),
}

#: The views :func:`jobs_views_sql` creates.
JOB_VIEWS: Final = ("eval_runs", "eval_items", "shadow_runs", "shadow_items", "cost_reports", "cost_report",
                    "cost_report_days", "job_runs", "route_promotions", "route_retrains")

_EMPTY: Final = "_empty.parquet"


class ResultSink(Protocol):
    """Where results go instead of ``<lake>/jobs/<table>/<name>.parquet`` (``[lake] mode = "table"``:
    :class:`costline.tablelake.ResultTables`). ``write`` replaces the rows of ``name``."""

    def write(self, table: str, name: str, arrow: pa.Table) -> str: ...

    def exists(self, table: str, name: str) -> bool: ...


class JobStore:
    """The ``<lake>/jobs`` folder: atomic result files, checkpoints, locks; with a ``sink``, the
    result rows go there instead (checkpoints and locks stay in the folder)."""

    def __init__(self, lake_path: Path | str, *, sink: ResultSink | None = None) -> None:
        self.root = Path(lake_path) / "jobs"
        self.sink = sink

    def table_dir(self, table: str) -> Path:
        return self.root / table

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    def init(self) -> "JobStore":
        """Create the folders and a zero-row schema file per table. Idempotent."""
        try:
            for table, schema in JOB_SCHEMAS.items():
                d = self.table_dir(table)
                d.mkdir(parents=True, exist_ok=True)
                if not (d / _EMPTY).exists():
                    self._write(d / _EMPTY, schema.empty_table())
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            self.locks.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LakeError(f"cannot initialise {self.root}: {exc}: check the lake path and permissions") from exc
        return self

    def write(self, table: str, name: str, rows: Sequence[Mapping[str, Any]]) -> Path:
        """Write ``rows`` as ``<table>/<name>.parquet`` atomically (replacing a file of that name)."""
        schema = JOB_SCHEMAS[table]
        cols = {f.name: [r.get(f.name) for r in rows] for f in schema}
        arrow = pa.Table.from_pydict(cols, schema=schema)
        if self.sink is not None:
            return Path(self.sink.write(table, name, arrow))
        d = self.table_dir(table)
        d.mkdir(parents=True, exist_ok=True)
        final = d / f"{name}.parquet"
        try:
            self._write(final, arrow)
        except OSError as exc:
            raise LakeError(f"cannot write {final}: {exc}") from exc
        return final

    @staticmethod
    def _write(final: Path, arrow: pa.Table) -> None:
        with atomic_write(final) as fh:
            pq.write_table(arrow, fh, compression="zstd")

    def exists(self, table: str, name: str) -> bool:
        if self.sink is not None:
            return self.sink.exists(table, name)
        return (self.table_dir(table) / f"{name}.parquet").exists()


def result_sink(config: "Config") -> ResultSink | None:
    """The Iceberg result tables in ``[lake] mode = "table"`` (same catalog as the spans); None: local files."""
    if config.lake.mode != "table":
        return None
    from costline.tablelake import ResultTables

    return ResultTables(config.lake)


def job_store(config: "Config") -> JobStore:
    """The jobs' store for ``[lake] mode``: the local files, or the Iceberg result tables (table mode)."""
    return JobStore(config.lake.path, sink=result_sink(config))


_SQL_TYPES: Final = {pa.string(): "VARCHAR", pa.int64(): "BIGINT", pa.float64(): "DOUBLE", pa.bool_(): "BOOLEAN",
                     _TS: "TIMESTAMP", pa.date32(): "DATE"}


def _schema_sql(schema: pa.Schema) -> str:
    """A zero-row ``SELECT`` with ``schema``'s columns and types: the shape a view keeps whatever its files hold."""
    cols = ", ".join(f'NULL::{_SQL_TYPES[f.type]} AS "{f.name}"' for f in schema)
    return f"SELECT {cols} WHERE false"


def result_view_sql(table: str, schema: pa.Schema, folder: Path) -> str:
    """``CREATE VIEW <table>`` over the Parquet files of ``folder`` with ``schema``'s columns, in its order, whatever
    the files hold: a file written before a column existed reads it as NULL (the files are unioned by name with a
    zero-row relation of the schema, which leads). The jobs' and distillation's result views."""
    glob = sql_str(str(folder / "*.parquet"))
    return (f"CREATE OR REPLACE VIEW {table} AS {_schema_sql(schema)} UNION ALL BY NAME "
            f"SELECT * FROM read_parquet({glob}, union_by_name = true)")


def jobs_views_sql(lake_path: Path | str) -> list[str]:
    """``CREATE VIEW`` statements for the jobs' results (creates the zero-row schema files once).

    Each view has the current schema's columns whatever its files hold: a file written before a column
    existed (``eval_items.trace_id``...) reads it as NULL (the files are unioned by name with a zero-row
    relation of the schema, which leads, so the columns keep the schema's order).

    For :func:`costline.lake.create_views`: ``for s in jobs_views_sql(path): con.execute(s)``.
    """
    store = JobStore(Path(lake_path).resolve()).init()
    stmts = []
    for table, schema in JOB_SCHEMAS.items():
        if table == "job_runs":
            glob = sql_str(str(store.table_dir(table) / "*.parquet"))
            stmts.append("CREATE OR REPLACE VIEW job_runs AS SELECT * EXCLUDE (filename) FROM ("
                         f"{_schema_sql(schema.append(pa.field('filename', pa.string())))} UNION ALL BY NAME "
                         f"SELECT * FROM read_parquet({glob}, union_by_name = true, filename = true)) "
                         "QUALIFY row_number() OVER (PARTITION BY run_id ORDER BY updated_at DESC, filename DESC) = 1")
        else:
            stmts.append(result_view_sql(table, schema, store.table_dir(table)))
    stmts.append("CREATE OR REPLACE VIEW cost_report AS SELECT * FROM cost_reports "
                 "WHERE report_id = (SELECT arg_max(report_id, generated_at) FROM cost_reports) ORDER BY step")
    return stmts


def job_runs_lake(config: "Config") -> "duckdb.DuckDBPyConnection":
    """A connection with the jobs' views only (``job_runs``...), for the scheduler's reads of its own runs: a local
    lake's views over every file of requests, calls and lookups are not built (:func:`open_jobs_lake` builds them:
    ~0.2 s on an empty lake, seconds on one of thousands of files, several times a tick). In table mode the runs are
    in the catalog's result tables: :func:`open_jobs_lake`."""
    if config.lake.mode == "table":
        return open_jobs_lake(config)
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        for stmt in jobs_views_sql(config.lake.path):
            con.execute(stmt)
    except BaseException:
        con.close()
        raise
    return con


def open_jobs_lake(config: "Config") -> "duckdb.DuckDBPyConnection":
    """:func:`costline.lake.open_lake` plus the jobs' views (until the lake creates them itself)."""
    from costline.lake import open_lake

    con = open_lake(config)
    names = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    if not set(JOB_VIEWS) <= names:
        for stmt in jobs_views_sql(config.lake.path):
            con.execute(stmt)
    return con


