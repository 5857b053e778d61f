"""Erasure and content retention: a tenant's rows removed (:func:`forget`), prompts and answers set to NULL past a
retention (:func:`redact`).

Both rewrite committed files the way compaction does (:mod:`costline.lake._compaction`), under the same lake-wide
maintenance lock (:meth:`Lake._maintenance_lock <costline.lake.Lake._maintenance_lock>`), so that a compaction and
a forget at once neither put back a removed row nor keep one twice:

* only files an offset manifest committed (:func:`~costline.lake._compaction.committed_offsets_by_topic`, read
  when the operation starts) are rewritten; a batch the processor commits meanwhile is left alone and, when it
  holds rows of the tenants, reported as not covered (:attr:`ForgetReport.not_covered`: run the forget again);
* a file's new content is written under a hidden name (``.<name>.<pid>-<thread>.tmp``, never read by the views),
  fsynced and renamed over the file it replaces (:func:`costline.fsutil.atomic_path`): the views see the old file
  or the new one, never both nor neither; a file left with no row is removed. A rewrite killed half-way leaves its
  hidden file, which the next compaction, forget or redact deletes once its writer is gone;
* a file DuckDB cannot read is set aside as compaction sets it aside (``<name>.unreadable``,
  :mod:`costline.lake._oddfiles`): :class:`ErasureIncomplete` then names it, since the rows it holds were not
  erased;
* a full disk stops the operation with what to do; what was rewritten until then stays rewritten.

The rows a forget removes are the ``tenant`` rows of the processor's tables (``requests``, ``calls``,
``lookups``) and of the alerts' exported files (``alerts/episodes``, ``alerts/history``: see
:data:`ALERT_FILES`). The content :func:`redact` sets to NULL is :data:`CONTENT_COLUMNS`. Table mode
(:meth:`costline.tablelake.TableLake.forget` / ``redact``) returns the same reports.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pyarrow.parquet as pq

from costline.errors import LakeError
from costline.fsutil import atomic_path, fsync_dir
from costline.lake._compaction import (
    _compactable,
    _disk_full,
    _remove_stale_tmps,
    committed_offsets_by_topic,
)
from costline.lake._files import EMPTY_FILE
from costline.lake._oddfiles import UNREADABLE, file_problem, set_aside, set_aside_files
from costline.lake._schema import TABLES
from costline.sqlutil import sql_str
from costline.timeutil import utc_aware, utc_now

if TYPE_CHECKING:  # pragma: no cover
    import duckdb

    from costline.lake._lake import Lake

__all__ = [
    "ALERT_FILES", "CONTENT_COLUMNS", "DayRows", "ErasureIncomplete", "ForgetReport", "NotCovered", "RedactReport",
    "TableTotal", "forget", "redact", "redact_cutoff", "tenant_list", "totals",
]

log = logging.getLogger("costline.lake")

#: Per table, the columns holding what was asked and answered (only with content capture on): the prompts and
#: answers of requests and calls. ``lookups`` holds no text of the query (its namespace, similarity, verdict and
#: ``reject_reason`` code only); ``route_reason`` quotes the router's rule (a configured keyword), never the query.
CONTENT_COLUMNS: Final[Mapping[str, tuple[str, ...]]] = {
    "requests": ("input_messages", "output_messages"),
    "calls": ("input_messages", "output_messages"),
    "lookups": (),
}

#: The alerts' exported files under the lake (``costline.alerts.view``): view name -> (folder, time column). They
#: hold a ``tenant`` column (an alert's label) and no prompt nor answer.
ALERT_FILES: Final[Mapping[str, tuple[str, str]]] = {
    "alerts": ("alerts/episodes", "fired_at"),
    "alerts_history": ("alerts/history", "ts"),
}


@dataclass(frozen=True)
class DayRows:
    """Rows removed (forget) or redacted (redact) in one table's day; with ``dry_run``, those that would be."""

    table: str
    day: str  # YYYY-MM-DD ("1970-01-01": rows without a usable time; "no time" for an alert without one)
    rows: int


@dataclass(frozen=True)
class TableTotal:
    """One table's part of a report: rows, how many days, how many files rewritten (or removed, left empty)."""

    table: str
    rows: int
    days: int
    files: int


@dataclass(frozen=True)
class NotCovered:
    """A data file a forget did not rewrite although it holds rows of the tenants: committed after the forget
    started (a batch the processor was writing), or never committed (recovery deletes it). In table mode: the
    table (its rows committed after the forget's snapshot)."""

    path: Path | str
    rows: int


def totals(tables: Iterable[str], days: Iterable[DayRows], files: Mapping[str, int]) -> tuple[TableTotal, ...]:
    """Per table of ``tables``, its rows and days (from ``days``) and files (``files``)."""
    days = list(days)
    return tuple(TableTotal(t, sum(d.rows for d in days if d.table == t), sum(1 for d in days if d.table == t),
                            files.get(t, 0)) for t in tables)


@dataclass(frozen=True)
class ForgetReport:
    """What :func:`forget` removed (with ``dry_run``: would remove)."""

    tenants: tuple[str, ...]
    before: date | None
    dry_run: bool
    #: Per table and day, the rows removed.
    days: tuple[DayRows, ...]
    #: Per table (every table forget looks at, in order), rows, days and files rewritten.
    tables: tuple[TableTotal, ...]
    #: Files holding rows of the tenants that were not rewritten (see :class:`NotCovered`).
    not_covered: tuple[NotCovered, ...] = ()
    #: Files it could not read, set aside now (dry run: that it would set aside).
    set_aside: tuple[Path, ...] = ()
    #: Files set aside before (``*.unreadable`` / ``*.misplaced``): what they hold was not looked at.
    left_aside: tuple[Path, ...] = ()
    #: Lines said after the report (table mode: what older snapshots still hold).
    notes: tuple[str, ...] = ()

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)

    @property
    def complete(self) -> bool:
        """True when no file that may hold the tenants' rows was left unread (set aside, now or before)."""
        return not self.set_aside and not self.left_aside

    def lines(self) -> list[str]:
        """The report as the CLI prints it."""
        verb = "would remove" if self.dry_run else "removed"
        who = ", ".join(repr(t) for t in self.tenants)
        when = f" before {self.before.isoformat()}" if self.before else ""
        out = [f"{d.table} {d.day}: {d.rows:,} rows would go" for d in self.days] if self.dry_run else []
        for t in self.tables:
            files = f", {t.files} file(s) {'to rewrite' if self.dry_run else 'rewritten'}" if t.files else ""
            out.append(f"{t.table}: {verb} {t.rows:,} rows of {t.days} day(s){files}")
        out.append(f"{verb} {self.rows:,} rows of tenant(s) {who}{when}")
        for n in self.not_covered:
            out.append(f"not covered: {n.path} holds {n.rows:,} rows of these tenants and was committed after this "
                       "forget started (a batch being written): run the forget again")
        for p in self.set_aside:
            out.append(f"{'would set aside' if self.dry_run else 'set aside'} (unreadable, not erased): {p}")
        for p in self.left_aside:
            out.append(f"set aside earlier, not looked at: {p}")
        return out + list(self.notes)


@dataclass(frozen=True)
class RedactReport:
    """What :func:`redact` set to NULL (with ``dry_run``: would)."""

    older_than_days: int
    #: Days before this date were redacted.
    cutoff: date
    dry_run: bool
    days: tuple[DayRows, ...]
    tables: tuple[TableTotal, ...]
    set_aside: tuple[Path, ...] = ()
    #: Lines said after the report (table mode: what older snapshots still hold).
    notes: tuple[str, ...] = ()

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)

    def lines(self) -> list[str]:
        verb = "would redact" if self.dry_run else "redacted"
        out = [f"{d.table} {d.day}: {d.rows:,} rows' content would be set to NULL" for d in self.days] \
            if self.dry_run else []
        for t in self.tables:
            files = f", {t.files} file(s) {'to rewrite' if self.dry_run else 'rewritten'}" if t.files else ""
            out.append(f"{t.table}: {verb} {t.rows:,} rows of {t.days} day(s){files}")
        out.append(f"{verb} the prompts and answers of {self.rows:,} rows in the days before "
                   f"{self.cutoff.isoformat()} (content kept {self.older_than_days} day(s))")
        for p in self.set_aside:
            out.append(f"{'would set aside' if self.dry_run else 'set aside'} (unreadable, not redacted): {p}")
        return out + list(self.notes)


class ErasureIncomplete(LakeError):
    """A forget or redact did all it could, but a file that may hold the rows it was asked to change could not be
    read (set aside, now or before): :attr:`report` tells what was done, the message what to do."""

    def __init__(self, message: str, report: ForgetReport | RedactReport) -> None:
        super().__init__(message)
        self.report = report


# -- the rewriting of one file ------------------------------------------------------------------------------
@dataclass
class _Pass:
    """One forget's or redact's state: the connection, what it found and did."""

    lake: "Lake"
    con: "duckdb.DuckDBPyConnection"
    dry_run: bool
    days: list[DayRows] = field(default_factory=list)
    files: dict[str, int] = field(default_factory=dict)
    aside: list[Path] = field(default_factory=list)

    def unreadable(self, path: Path, why: str, what: str) -> None:
        """``path`` cannot be read: set it aside (dry run: note that it would be)."""
        if self.dry_run:
            self.aside.append(path)
            return
        self.aside.append(set_aside(
            path, UNREADABLE, why, f"restore it from where it came from, rename it back to {path.name} and run "
            f"{what} again; or delete it (its rows with it) if it is the leftover of a crashed write"))

    def rewrite(self, table: str, path: Path, keep_sql: str, *, remove_if_empty: bool) -> None:
        """Write ``keep_sql`` (a SELECT over ``path``) in place of ``path``; remove ``path`` instead when it keeps
        no row and ``remove_if_empty``."""
        import duckdb

        self.files[table] = self.files.get(table, 0) + 1
        if self.dry_run:
            return
        try:
            if remove_if_empty and self.con.execute(f"SELECT count(*) FROM ({keep_sql})").fetchone()[0] == 0:
                path.unlink()
                fsync_dir(path.parent)
                return
            with atomic_path(path) as tmp:
                self.con.execute(f"COPY ({keep_sql}) TO {sql_str(tmp)} (FORMAT parquet, COMPRESSION zstd)")
        except (duckdb.Error, OSError) as exc:
            if _disk_full(exc):
                raise LakeError(f"ran out of disk space rewriting {path} (No space left on device): that file was "
                                "left as it was, the files rewritten before it stay rewritten. Free disk space on "
                                f"{self.lake.path}'s filesystem and run it again (what is done is not redone)") from None
            raise LakeError(f"cannot rewrite {path} ({str(exc).splitlines()[0]}): it was left as it was; fix the "
                            "cause (permissions, the disk) and run it again") from exc


def _source(path: Path) -> str:
    return f"read_parquet({sql_str(path)}, hive_partitioning = false)"


def _schema_names(path: Path) -> list[str] | None:
    """The columns of ``path``; None when it is gone meanwhile or its footer cannot be read."""
    try:
        return pq.read_schema(path).names
    except Exception:  # noqa: BLE001 - FileNotFoundError, or one of the several kinds pyarrow raises
        return None


def _count_by_day(p: _Pass, path: Path, where: str, day_sql: str | None, what: str) -> dict[str, int] | None:
    """Rows of ``path`` matching ``where`` per day (``day_sql`` an expression; None: one day, key ""); None when
    ``path`` could not be read (it is set aside)."""
    import duckdb

    group = day_sql or "''"
    try:
        found = p.con.execute(f"SELECT {group} AS day, count(*) FROM {_source(path)} WHERE {where} "
                              "GROUP BY ALL").fetchall()
    except duckdb.Error as exc:
        if not path.exists():  # gone meanwhile: nothing of it to change
            return {}
        p.unreadable(path, f"DuckDB cannot read it ({str(exc).splitlines()[0]})", what)
        return None
    return {str(day): int(n) for day, n in found}


def _require(lake: "Lake") -> None:
    """:class:`~costline.lake.NoLake` unless ``lake.path`` holds a lake (a mistyped path must not answer "0 rows
    removed")."""
    from costline.lake._lake import NoLake, lake_exists

    if not lake_exists(lake.path):
        raise NoLake(lake.path)


# -- forget -------------------------------------------------------------------------------------------------
def tenant_list(tenants: Iterable[str]) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(tenants))
    if not names:
        raise LakeError("forget needs at least one tenant: name each one (--tenant acme)")
    bad = [t for t in names if not isinstance(t, str) or not t.strip()]
    if bad:
        raise LakeError(f"tenant {bad[0]!r} is no tenant name: name the tenant as its rows hold it (--tenant acme); "
                        "rows without a tenant are never forgotten")
    return names


def _complete_staged_batches(lake: "Lake") -> None:
    """Rename into place what committed batches still have staged (a writer that stopped between its manifest and
    its renames), as recovery would: such files hold committed rows recovery would put back after the forget."""
    root = lake.path / "_offsets"
    if not root.is_dir():
        return
    for pdir in sorted(root.glob("*/p[0-9]*")):
        if pdir.is_dir() and pdir.name[1:].isdigit():
            topic, partition = pdir.parent.name, int(pdir.name[1:])
            with lake._partition_lock(topic, partition):  # a running processor's commits hold it too
                lake._complete_committed(topic, partition)


def forget(lake: "Lake", tenants: Iterable[str], *, before: date | None = None,
           dry_run: bool = False) -> ForgetReport:
    """Remove every row of ``tenants`` (exact tenant names) from the lake; return what was removed.

    Every day of ``requests``, ``calls`` and ``lookups`` (today's, still open, included; with ``before``, only the
    days before it, ``date=1970-01-01`` — rows without a usable time — counting as before any date) and the alerts'
    exported files (:data:`ALERT_FILES`; with ``before``, the rows whose time is before it). Rows whose tenant is
    NULL are never touched. Only files the offset manifests committed when it started are rewritten; a file
    committed since that holds rows of the tenants is in :attr:`ForgetReport.not_covered`. Safe while the processor
    runs; it holds the maintenance lock (a compaction waits for it, and it for a compaction).

    Raises :class:`ErasureIncomplete` (after doing the rest) when a file it could not read was set aside, or one
    set aside earlier is still there: the tenants' rows it may hold were not erased. ``dry_run``: nothing is
    changed, nothing raised; the report tells what would go."""
    import duckdb

    names = tenant_list(tenants)
    _require(lake)
    with lake._maintenance_lock():
        if not dry_run:
            _complete_staged_batches(lake)
        started = time.time()
        committed = committed_offsets_by_topic(lake)
        con = duckdb.connect()
        try:
            p = _Pass(lake, con, dry_run)
            in_list = ", ".join(sql_str(t) for t in names)
            matches = f"tenant IN ({in_list})"
            seen: set[Path] = set()
            for table in TABLES:
                for day_dir in sorted(lake.table_dir(table).glob("date=*")):
                    if not dry_run:
                        _remove_stale_tmps(day_dir, started)
                    day = day_dir.name.removeprefix("date=")
                    if before is not None and day >= before.isoformat():
                        continue
                    rows = 0
                    for f in sorted(day_dir.glob("*.parquet")):
                        if f.name == EMPTY_FILE or not _compactable(f, committed):
                            continue
                        seen.add(f)
                        rows += _forget_file(p, table, f, matches)
                    if rows:
                        p.days.append(DayRows(table, day, rows))
            for view, (folder, time_col) in ALERT_FILES.items():
                _forget_alerts(p, view, lake.path / folder, time_col, matches, before)
            not_covered = _not_covered(lake, con, seen, matches, before)
        finally:
            con.close()
        left = tuple(x for x in set_aside_files(lake.path) if x not in p.aside)
        report = ForgetReport(names, before, dry_run, tuple(p.days), totals((*TABLES, *ALERT_FILES), p.days, p.files),
                              not_covered, tuple(p.aside), left)
    if not dry_run and not report.complete:
        unread = [*report.set_aside, *report.left_aside]
        raise ErasureIncomplete(
            f"forget removed {report.rows:,} rows, but {len(unread)} file(s) it could not read may hold rows of "
            f"{', '.join(repr(t) for t in names)}: {', '.join(str(x) for x in unread)}. Restore each one (rename it "
            "back to its .parquet name once repaired) and run the forget again, or delete it with its rows", report)
    return report


def _forget_file(p: _Pass, table: str, path: Path, matches: str) -> int:
    """Rows of the tenants removed from one data file (0: none there, or it was set aside)."""
    why = file_problem(path, table)
    if why is not None:
        p.unreadable(path, why, "the forget")
        return 0
    cols = _schema_names(path)
    if cols is None or "tenant" not in cols:  # gone meanwhile, or written before calls had a tenant: none to remove
        return 0
    found = _count_by_day(p, path, matches, None, "the forget")
    rows = sum((found or {}).values())
    if rows:
        p.rewrite(table, path, f"SELECT * FROM {_source(path)} WHERE NOT coalesce({matches}, false)",
                  remove_if_empty=True)
    return rows


def _forget_alerts(p: _Pass, view: str, folder: Path, time_col: str, matches: str, before: date | None) -> None:
    """The tenants' rows removed from the alerts' exported files in ``folder`` (the next export of ``costline
    alerts run`` writes them again from its state file: see docs/sql.md)."""
    where = matches if before is None else f"{matches} AND {time_col} < DATE {sql_str(before.isoformat())}"
    day_sql = f"coalesce(strftime(CAST({time_col} AS DATE), '%Y-%m-%d'), 'no time')"
    per_day: dict[str, int] = {}
    for f in sorted(folder.glob("*.parquet")) if folder.is_dir() else []:
        if f.name == EMPTY_FILE:
            continue
        why = file_problem(f, "requests", footer=False)  # whole Parquet file? (its columns are the alerts')
        cols = _schema_names(f) if why is None else None
        if why is not None or cols is None:
            if f.exists():
                p.unreadable(f, why or "its footer cannot be read", "the forget")
            continue
        if "tenant" not in cols or time_col not in cols:
            continue
        found = _count_by_day(p, f, where, day_sql, "the forget")
        if not found:
            continue
        for day, n in found.items():
            per_day[day] = per_day.get(day, 0) + n
        p.rewrite(view, f, f"SELECT * FROM {_source(f)} WHERE NOT coalesce({where}, false)", remove_if_empty=False)
    p.days.extend(DayRows(view, day, n) for day, n in sorted(per_day.items()))


def _not_covered(lake: "Lake", con: "duckdb.DuckDBPyConnection", seen: set[Path], matches: str,
                 before: date | None) -> tuple[NotCovered, ...]:
    """Data files not rewritten (committed after the forget started, or never) that hold rows of the tenants."""
    import duckdb

    out: list[NotCovered] = []
    for table in TABLES:
        for f in sorted(lake.table_dir(table).glob("date=*/*.parquet")):
            day = f.parent.name.removeprefix("date=")
            if f in seen or f.name == EMPTY_FILE or (before is not None and day >= before.isoformat()):
                continue
            cols = _schema_names(f)
            if cols is None or "tenant" not in cols:
                continue
            try:
                n = con.execute(f"SELECT count(*) FROM {_source(f)} WHERE {matches}").fetchone()[0]
            except duckdb.Error:  # being replaced, or unreadable: the views set the latter aside
                continue
            if n:
                out.append(NotCovered(f, int(n)))
    return tuple(out)


def redact_cutoff(older_than_days: int, now: Callable[[], datetime]) -> date:
    """The first day :func:`redact` keeps the content of: ``(now() - older_than_days).date()`` (UTC); a
    :class:`LakeError` unless ``older_than_days`` is a whole number of days, at least 1."""
    if isinstance(older_than_days, bool) or not isinstance(older_than_days, int) or older_than_days < 1:
        raise LakeError(f"the content retention must be a whole number of days, at least 1; got {older_than_days!r} "
                        "([lake] content_retention_days: 0 keeps the content forever, so nothing is redacted)")
    return (utc_aware(now()) - timedelta(days=older_than_days)).date()


# -- redact -------------------------------------------------------------------------------------------------
def redact(lake: "Lake", older_than_days: int, *, now: Callable[[], datetime] = utc_now,
           dry_run: bool = False) -> RedactReport:
    """Set :data:`CONTENT_COLUMNS` to NULL in every committed file of every day older than ``older_than_days`` days
    before ``now()`` (a day before ``(now - older_than_days).date()``: every row of it is older than that; so never
    an open day). ``date=1970-01-01`` (rows without a usable time) is always older. Every other column (tokens,
    cost, success, tenant, ts...) is kept as it was. Idempotent: a file whose content is NULL already is not
    rewritten. It holds the maintenance lock, as compaction does.

    Raises :class:`ErasureIncomplete` (after doing the rest) when a file it could not read was set aside."""
    import duckdb

    cutoff = redact_cutoff(older_than_days, now)
    _require(lake)
    with lake._maintenance_lock():
        started = time.time()
        committed = committed_offsets_by_topic(lake)
        con = duckdb.connect()
        try:
            p = _Pass(lake, con, dry_run)
            for table in TABLES:
                if not CONTENT_COLUMNS[table]:
                    continue
                for day_dir in sorted(lake.table_dir(table).glob("date=*")):
                    if not dry_run:
                        _remove_stale_tmps(day_dir, started)
                    day = day_dir.name.removeprefix("date=")
                    if day >= cutoff.isoformat():
                        continue
                    rows = 0
                    for f in sorted(day_dir.glob("*.parquet")):
                        if f.name != EMPTY_FILE and _compactable(f, committed):
                            rows += _redact_file(p, table, f)
                    if rows:
                        p.days.append(DayRows(table, day, rows))
        finally:
            con.close()
        tables = tuple(t for t in TABLES if CONTENT_COLUMNS[t])
        report = RedactReport(older_than_days, cutoff, dry_run, tuple(p.days), totals(tables, p.days, p.files),
                              tuple(p.aside))
    if not dry_run and report.set_aside:
        raise ErasureIncomplete(
            f"redact set the content of {report.rows:,} rows to NULL, but could not read "
            f"{', '.join(str(x) for x in report.set_aside)} (set aside): its prompts and answers were not redacted. "
            "Restore it (rename it back to its .parquet name once repaired) and redact again, or delete it", report)
    return report


def _redact_file(p: _Pass, table: str, path: Path) -> int:
    """Rows of one data file whose content was set to NULL (0: none held any, or it was set aside)."""
    why = file_problem(path, table)
    if why is not None:
        p.unreadable(path, why, "the redact")
        return 0
    cols = _schema_names(path)
    content = [c for c in CONTENT_COLUMNS[table] if cols is not None and c in cols]
    if not content:
        return 0
    found = _count_by_day(p, path, " OR ".join(f"{c} IS NOT NULL" for c in content), None, "the redact")
    rows = sum((found or {}).values())
    if rows:
        nulls = ", ".join(f"NULL::VARCHAR AS {c}" for c in content)
        p.rewrite(table, path, f"SELECT * REPLACE ({nulls}) FROM {_source(path)}", remove_if_empty=False)
    return rows
