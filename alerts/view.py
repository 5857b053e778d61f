"""The ``alerts`` and ``alerts_history`` DuckDB views: alert state exported to Parquet in the lake.

``costline alerts run`` rewrites, atomically, after every evaluation that changed a state:

* ``<lake>/alerts/episodes/episodes.parquet`` — view ``alerts``: one row per firing
  episode (``fired_at``, ``resolved_at``, ``state`` firing/resolved, rule, labels, figures);
* ``<lake>/alerts/history/history.parquet`` — view ``alerts_history``: every state change.

Each folder also holds a zero-row ``_empty.parquet`` so the views work before any alert.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

from costline.alerts.store import AlertStore
from costline.fsutil import atomic_write, file_lock
from costline.sqlutil import sql_str

__all__ = ["ALERTS_SCHEMA", "EXPORT_LOCK", "HISTORY_SCHEMA", "RESULT_NAMES", "alerts_view_sql", "export_history",
           "export_lock", "ensure_alerts_dir"]

_TS: Final = pa.timestamp("us")  # naive UTC, like the lake
_COMMON: Final = [
    ("rule", pa.string()), ("fingerprint", pa.string()), ("labels", pa.string()),  # labels: a JSON object
    ("tenant", pa.string()), ("tier", pa.string()), ("subtype", pa.string()), ("severity", pa.string()),
]
ALERTS_SCHEMA: Final = pa.schema([
    ("fired_at", _TS), ("resolved_at", _TS), ("state", pa.string()), *_COMMON,
    ("value", pa.float64()), ("threshold", pa.float64()), ("summary", pa.string()),
    ("resolved_summary", pa.string()), ("muted", pa.string()),
])
HISTORY_SCHEMA: Final = pa.schema([
    ("ts", _TS), *_COMMON, ("from_state", pa.string()), ("to_state", pa.string()),
    ("value", pa.float64()), ("threshold", pa.float64()), ("summary", pa.string()), ("muted", pa.string()),
])
_DIRS: Final = {"episodes": ALERTS_SCHEMA, "history": HISTORY_SCHEMA}
_EMPTY: Final = "_empty.parquet"
#: The lock file (in ``<lake>/alerts``) of :func:`export_lock`.
EXPORT_LOCK: Final = ".export.lock"


def _write(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as fh:
        pq.write_table(table, fh)


@contextlib.contextmanager
def export_lock(lake_path: Path | str, *, read_only: bool = False) -> Iterator[None]:
    """An exclusive ``flock`` on ``<lake>/alerts/.export.lock`` for the ``with`` block: :func:`export_history`
    holds it while it replaces the exported files, ``costline lake forget`` while it rewrites them. DuckDB reads a
    Parquet file by its name more than once in one query: one replaced (renamed over) meanwhile reads as corrupt, and
    the forget would set it aside. ``read_only`` (a dry run): a shared lock where the lock file is there, else
    none. The ``alerts`` folder must be there."""
    path = Path(lake_path) / "alerts" / EXPORT_LOCK
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(file_lock(path, shared=read_only))
        except OSError:
            if not read_only:
                raise
        yield


def ensure_alerts_dir(lake_path: Path | str) -> Path:
    """``<lake>/alerts/{episodes,history}`` with zero-row schema files."""
    root = Path(lake_path) / "alerts"
    for name, schema in _DIRS.items():
        if not (root / name / _EMPTY).exists():
            _write(schema.empty_table(), root / name / _EMPTY)
    return root


def alerts_view_sql(lake_path: Path | str) -> str:
    """``CREATE OR REPLACE VIEW alerts ...; CREATE OR REPLACE VIEW alerts_history ...`` (two statements,
    one string: ``con.execute`` runs both). Creates the zero-row schema files when missing.

    Reading needs no write: where they cannot be written (a read-only lake, a full disk, a file in the way),
    a view whose folder holds no Parquet file reads an empty table of its schema instead (logged)."""
    import errno

    root = Path(lake_path) / "alerts"
    try:
        ensure_alerts_dir(lake_path)
    except OSError as exc:
        quiet = exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM)  # a reader's lake: expected
        logging.getLogger(__name__).log(
            logging.DEBUG if quiet else logging.WARNING,
            "cannot write the alerts views' schema files under %s (%s): the views read what is there, or "
            "no alert", root, exc)
    root = root.resolve()
    duck = {pa.timestamp("us"): "TIMESTAMP", pa.string(): "VARCHAR", pa.float64(): "DOUBLE"}

    def source(name: str) -> str:
        try:
            found = any((root / name).glob("*.parquet"))
        except OSError:
            found = False
        if found:
            return f"read_parquet({sql_str(root / name / '*.parquet')}, union_by_name = true)"
        cols = ", ".join(f'NULL::{duck[f.type]} AS "{f.name}"' for f in _DIRS[name])
        return f"(SELECT {cols} WHERE false)"

    return (f"CREATE OR REPLACE VIEW alerts AS SELECT * FROM {source('episodes')};\n"
            f"CREATE OR REPLACE VIEW alerts_history AS SELECT * FROM {source('history')}")


def _ts(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)


#: Per Iceberg result table of ``[lake] mode = "table"`` (:class:`costline.tablelake.ResultTables`), the name
#: :func:`export_history` writes its rows under.
RESULT_NAMES: Final = {"alerts": "episodes", "alerts_history": "history"}

#: How many times :func:`export_history` writes when forgets keep erasing rows while it writes.
_EXPORT_TRIES: Final = 3


def export_history(store: AlertStore, lake_path: Any) -> Path:
    """Rewrite both Parquet files from the state file; returns ``<lake>/alerts``.

    ``lake_path`` is the lake's folder, or the :class:`~costline.config.Config`: then ``[lake] mode =
    "table"`` rewrites the Iceberg result tables ``alerts`` and ``alerts_history`` instead.

    A ``costline lake forget`` that erases rows from the state file while this writes (after it read the history)
    makes it write again from what is left (:data:`~costline.alerts.store.ERASURES`), so the rows the forget
    removed from the files are not put back."""
    for _ in range(_EXPORT_TRIES):
        erasures = store.erasures()  # before the history: a forget committed in between makes it write again
        out = _export(store.query("SELECT * FROM history ORDER BY id"), lake_path)
        if store.erasures() == erasures:
            return out
    logging.getLogger(__name__).warning(
        "alerts export: forgets erased rows from the alert state file %s while it was exported, %d times: the "
        "exported history may hold rows of a forgotten tenant until the next export", store.path, _EXPORT_TRIES)
    return out


def _export(rows: list[Any], lake_path: Any) -> Path:
    """:func:`export_history` of the history ``rows``."""
    hist: dict[str, list[Any]] = {f.name: [] for f in HISTORY_SCHEMA}
    eps: list[dict[str, Any]] = []
    open_eps: dict[str, dict[str, Any]] = {}
    for r in rows:
        labels = json.loads(r["labels"] or "{}")
        common = {"rule": r["rule"], "fingerprint": r["fingerprint"], "labels": r["labels"],
                  "tenant": labels.get("tenant"), "tier": labels.get("tier"), "subtype": labels.get("subtype"),
                  "severity": r["severity"]}
        rec = dict(common, ts=_ts(r["at"]), from_state=r["from_state"], to_state=r["to_state"], value=r["value"],
                   threshold=r["threshold"], summary=r["summary"], muted=r["muted"])
        for k in hist:
            hist[k].append(rec[k])
        if r["to_state"] == "firing":
            ep = dict(common, fired_at=_ts(r["at"]), resolved_at=None, state="firing", value=r["value"],
                      threshold=r["threshold"], summary=r["summary"], resolved_summary=None, muted=r["muted"])
            eps.append(ep)
            open_eps[r["fingerprint"]] = ep
        elif r["from_state"] == "firing" and r["fingerprint"] in open_eps:
            ep = open_eps.pop(r["fingerprint"])
            ep.update(resolved_at=_ts(r["at"]), state="resolved", resolved_summary=r["summary"])
    if hasattr(lake_path, "lake"):  # a Config
        from costline.jobs.store import result_sink

        sink = result_sink(lake_path)
        if sink is not None:
            sink.write("alerts_history", RESULT_NAMES["alerts_history"], pa.table(hist, schema=HISTORY_SCHEMA))
            sink.write("alerts", RESULT_NAMES["alerts"], pa.Table.from_pylist(eps, schema=ALERTS_SCHEMA))
            return Path(lake_path.lake.path) / "alerts"
        lake_path = lake_path.lake.path
    root = ensure_alerts_dir(lake_path)
    with export_lock(lake_path):
        _write(pa.table(hist, schema=HISTORY_SCHEMA), root / "history" / "history.parquet")
        _write(pa.Table.from_pylist(eps, schema=ALERTS_SCHEMA), root / "episodes" / "episodes.parquet")
    return root
