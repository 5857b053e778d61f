"""``distill_runs`` / ``distill_items``: the eval results in the lake, as the jobs' results are;
``distill_exports``: the exports started unattended (re-distillation when the drift job flags a
subtype), which the ``student_drift`` alert names.

Files ``<lake>/distill_results/<table>/<run_id>.parquet`` (atomic, one per run, a re-eval
replaces it) and :func:`distill_views_sql` — the same shape as
:func:`costline.jobs.store.jobs_views_sql`, for :data:`costline.lake.VIEW_PROVIDERS`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

from costline.fsutil import atomic_write

if TYPE_CHECKING:
    import duckdb

__all__ = ["DISTILL_SCHEMAS", "DISTILL_VIEWS", "write_rows", "distill_views_sql", "open_distill_lake"]

_TS = pa.timestamp("us")

DISTILL_SCHEMAS: Final[dict[str, pa.Schema]] = {
    "distill_runs": pa.schema([
        ("run_id", pa.string()), ("finished_at", _TS), ("task_type", pa.string()), ("subtype", pa.string()),
        ("metric", pa.string()), ("n", pa.int64()), ("student_score", pa.float64()),
        ("teacher_score", pa.float64()), ("gap", pa.float64()), ("gap_ci_low", pa.float64()),
        ("gap_ci_high", pa.float64()), ("threshold", pa.float64()), ("passed", pa.bool_()), ("reason", pa.string()),
        ("base_model", pa.string()), ("adapter_path", pa.string()), ("train_examples", pa.int64()),
        ("final_loss", pa.float64()), ("train_seconds", pa.float64()), ("teacher_cost_usd", pa.float64()),
    ]),
    "distill_items": pa.schema([
        ("run_id", pa.string()), ("item_id", pa.string()), ("request_id", pa.string()), ("task_type", pa.string()),
        ("subtype", pa.string()), ("metric", pa.string()), ("query", pa.string()), ("student_answer", pa.string()),
        ("teacher_answer", pa.string()), ("student_score", pa.float64()), ("teacher_score", pa.float64()),
        ("gap", pa.float64()), ("content_hash", pa.string()),
        # the export's item's tenant (`costline lake forget` removes the row with the tenant's); NULL in files
        # written before it was kept: forget then goes by request_id
        ("tenant", pa.string()),
    ]),
    "distill_exports": pa.schema([
        ("run_id", pa.string()), ("exported_at", _TS), ("trigger", pa.string()), ("drift_run_id", pa.string()),
        ("task_type", pa.string()), ("subtype", pa.string()), ("train", pa.int64()), ("eval", pa.int64()),
        ("window_since", _TS), ("window_until", _TS),
    ]),
}
DISTILL_VIEWS: Final = tuple(DISTILL_SCHEMAS)
_EMPTY: Final = "_empty.parquet"


def _dir(lake_path: Path | str, table: str) -> Path:
    return Path(lake_path) / "distill_results" / table


def _write(final: Path, table: pa.Table) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(final) as fh:
        pq.write_table(table, fh, compression="zstd")


def _init(lake_path: Path | str) -> None:
    for table, schema in DISTILL_SCHEMAS.items():
        empty = _dir(lake_path, table) / _EMPTY
        if not empty.exists():
            _write(empty, schema.empty_table())


def write_rows(lake_path: Any, table: str, name: str, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``rows`` as ``<table>/<name>.parquet`` atomically (replacing a file of that name).

    ``lake_path`` is the lake's folder, or the :class:`~costline.config.Config`: then ``[lake] mode
    = "table"`` writes the rows to the Iceberg result table instead (:func:`costline.jobs.store.result_sink`)."""
    schema = DISTILL_SCHEMAS[table]
    arrow = pa.Table.from_pydict({f.name: [r.get(f.name) for r in rows] for f in schema}, schema=schema)
    if hasattr(lake_path, "lake"):  # a Config
        from costline.jobs.store import result_sink

        sink = result_sink(lake_path)
        if sink is not None:
            return Path(sink.write(table, name, arrow))
        lake_path = lake_path.lake.path
    _init(lake_path)
    final = _dir(lake_path, table) / f"{name}.parquet"
    _write(final, arrow)
    return final


def distill_views_sql(lake_path: Path | str) -> list[str]:
    """``CREATE VIEW`` statements for :data:`DISTILL_VIEWS` (creates empty schema files once). Each view has the
    current schema's columns whatever its files hold (as the jobs' views: a file written before a column existed,
    ``distill_items.tenant``, reads it as NULL)."""
    from costline.jobs.store import result_view_sql

    lake_path = Path(lake_path).resolve()
    _init(lake_path)
    return [result_view_sql(table, schema, _dir(lake_path, table)) for table, schema in DISTILL_SCHEMAS.items()]


def open_distill_lake(config: Any) -> "duckdb.DuckDBPyConnection":
    """:func:`costline.lake.open_lake`, which has the distillation views (registered in
    :data:`costline.lake.VIEW_PROVIDERS`); adds them itself should a lake build lack them. :class:`~costline.lake.NoLake`
    when ``[lake] path`` holds no lake (nothing is created there)."""
    from costline.lake import open_lake

    con = open_lake(config, create=False)  # reads only: no lake is an error, none made up on the spot
    names = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    if not set(DISTILL_VIEWS) <= names:
        for stmt in distill_views_sql(config.lake.path):
            con.execute(stmt)
    return con
