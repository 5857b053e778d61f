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
  hidden file, which the next compaction, forget or redact deletes once its writer is gone (in a table's day folder;
  in a folder of results, :data:`ALERT_FILES` / :data:`ITEM_FILES`, which only a forget visits: the next forget);
* a file DuckDB cannot read is set aside as compaction sets it aside (``<name>.unreadable``,
  :mod:`costline.lake._oddfiles`): :class:`ErasureIncomplete` then names it, since the rows it holds were not
  erased;
* a full disk stops the operation with what to do; what was rewritten until then stays rewritten.

The rows a forget removes are the ``tenant`` rows of the processor's tables (``requests``, ``calls``,
``lookups``), of the alerts' exported files (``alerts/episodes``, ``alerts/history``: see
:data:`ALERT_FILES`) and of the nightly jobs' and distillation's per-request results (:data:`ITEM_FILES`; a row that
names no tenant goes with the request it was sampled from), and the calls and lookups the views give the tenant
although their own row names none (an SDK instrumentation's span inside a costline request, a calls file of an older
costline) with the second spans of those calls the views leave out (:func:`find_tenant_keys`). The content
:func:`redact` sets to NULL is :data:`CONTENT_COLUMNS`. Table mode (:meth:`costline.tablelake.TableLake.forget` /
``redact``) returns the same reports.
"""

from __future__ import annotations

import json
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
    RESULT_TMP_MIN_AGE_S,
    _STAGED_RESULT,
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
    "ALERT_FILES", "CONTENT_COLUMNS", "EXPORT_FILES", "ITEMS_LEFT", "ITEM_FILES", "ITEM_OWNERS", "KEYS_TABLE",
    "DayRows", "ErasureIncomplete", "ForgetReport", "ItemsLeft", "NotCovered", "RedactReport", "TableTotal",
    "find_tenant_keys", "forget", "redact", "redact_cutoff", "tenant_list", "totals",
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

#: The per-request results of the nightly jobs (``costline.jobs.store``) and of the distillation's evaluation
#: (``costline.distill.store``) under the lake: view name -> folder of ``<run_id>.parquet`` files. One row per
#: sampled request: its prompt and the answers (``eval_items``, ``distill_items``: ``query``, ``student_answer``,
#: ``teacher_answer``) or the shadow job's verdict on it (``shadow_items``), keyed by the request's ``(trace_id,
#: request_id)`` (``distill_items`` and older files: ``request_id`` only), with its ``tenant`` (files written before
#: they had one: found through the request). The runs' figures (``eval_runs``, ``shadow_runs``, ``distill_runs``)
#: are aggregates of no request's content: a forget leaves them as they are.
ITEM_FILES: Final[Mapping[str, str]] = {
    "eval_items": "jobs/eval_items",
    "shadow_items": "jobs/shadow_items",
    "distill_items": "distill_results/distill_items",
}

#: Where a distillation export's items are (``costline.distill.runs``, under the default ``[distill] root``):
#: JSON lines each naming its ``tenant``. A forget never rewrites them (the manifest's hashes prove which items the
#: student was trained and judged on): it names those holding items of the tenants.
EXPORT_FILES: Final = "distill/*/dataset/*.jsonl"


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


@dataclass(frozen=True)
class ItemsLeft:
    """A file of per-request results (:data:`ITEM_FILES`) or of a distillation export (:data:`EXPORT_FILES`) whose
    ``rows`` a forget left although they may be, or are, the tenants'; ``why`` is one of :data:`ITEMS_LEFT`."""

    path: Path
    rows: int
    why: str


#: What an :class:`ItemsLeft` line tells the operator to do.
_DELETE_FILE: Final = "Delete the file (one run's items; its figures stay) if it may hold these tenants' prompts"
#: ... where the forget that removes the tenants' spans of those requests is the last one able to tell.
_SAID_ONCE: Final = ("; only the forget that removes these tenants' spans of those requests says so (a later one no "
                     "longer sees them)")

#: Why :class:`ItemsLeft` rows were left -> the line :meth:`ForgetReport.lines` says (``{path}``, ``{rows}``).
ITEMS_LEFT: Final[Mapping[str, str]] = {
    "shared": "left: {rows:,} rows of {path} name no tenant and their request is these tenants' and another's "
              "(or no tenant's) too: whose they are cannot be told. " + _DELETE_FILE + _SAID_ONCE,
    "named": "left: {rows:,} rows of {path} name another tenant, but their request has spans of these tenants "
             "too (a span written after the job ran, or a job of an older costline): whose they are cannot be told. "
             + _DELETE_FILE + _SAID_ONCE,
    "named_id": "left: {rows:,} rows of {path} name another tenant and keep no trace id, and a request of their "
                "request id has spans of these tenants: their request (a span written after the job ran, or a job of "
                "an older costline) or another trace's that used the same request id, which cannot be told apart. "
                + _DELETE_FILE + _SAID_ONCE,
    "unlinked": "not reachable: {rows:,} rows of {path} name no tenant and their request is no longer in the lake "
                "(a file written before items named their tenant, its request forgotten since): whose they are "
                "cannot be told. " + _DELETE_FILE,
    "export": "not rewritten: {path} (a distillation export) holds {rows:,} items of these tenants, and its "
              "student was trained or judged on them: delete that run's folder (and any student trained on it) to "
              "erase them",
}


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
    #: Call rows left: a second span of a call (the views count one span per call) with no tenant of its own nor
    #: a request of its own, in a trace that holds the tenants' rows and another tenant's (or no tenant's) too,
    #: and no call near it (its parent or child, or beside it under the same parent) that tells whose it is:
    #: whose call it is cannot be told (:func:`find_tenant_keys`).
    shared: int = 0
    #: The first few traces those rows are in (local mode), for the operator to look at.
    shared_traces: tuple[str, ...] = ()
    #: Per-request results and distillation exports left holding rows that may be, or are, the tenants'.
    items_left: tuple[ItemsLeft, ...] = ()
    #: Staged files a writer whose process is gone here left in a folder of results, kept for being written under
    #: :data:`~costline.lake._compaction.RESULT_TMP_MIN_AGE_S` before the forget started (they may be a job's on
    #: another host): they may hold the tenants' rows, and the next forget deletes them.
    staged_left: tuple[Path, ...] = ()

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
        if self.shared:
            more = ", ..." if self.shared > len(self.shared_traces) else ""
            traces = f" (traces {', '.join(self.shared_traces)}{more})" if self.shared_traces else ""
            out.append(f"left: {self.shared:,} rows of traces shared with other tenants{traces}: calls: each a second "
                       "span of a call, with no tenant nor request of its own and no call beside it that is only "
                       "these tenants', in a trace holding these tenants' rows and others': whose it is cannot be "
                       "told, so it is kept. Its prompt goes with `costline lake redact` ([lake] "
                       "content_retention_days); an SDK's spans made under costline's setup_tracing "
                       "(RequestStampingProcessor) name their request and go with it (docs/sql.md, \"Erasure and "
                       "retention\")")
        for n in self.not_covered:
            out.append(f"not covered: {n.path} holds {n.rows:,} rows of these tenants and was committed after this "
                       "forget started (a batch being written): run the forget again")
        out.extend(ITEMS_LEFT[i.why].format(rows=i.rows, path=i.path) for i in self.items_left)
        for p in self.staged_left:
            out.append(f"not covered: {p} is a staged file a killed forget, job or alert export may have left (its "
                       "process is gone here), written under ten minutes ago: it may hold these tenants' rows, and "
                       "it is kept that long in case a writer on another host is still at it: run the forget again "
                       "in ten minutes")
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
    return f"read_parquet({sql_str(path)}, hive_partitioning = false) f"


def _schema_names(path: Path) -> list[str] | None:
    """The columns of ``path``; None when it is gone meanwhile or its footer cannot be read."""
    try:
        return pq.read_schema(path).names
    except Exception:  # noqa: BLE001 - FileNotFoundError, or one of the several kinds pyarrow raises
        return None


def _count_by_day(p: _Pass, path: Path, where: str, day_sql: str | None, what: str,
                  source: str | None = None) -> dict[str, int] | None:
    """Rows of ``path`` (``source``: the ``FROM`` items reading it, alias ``f``) matching ``where`` per day
    (``day_sql`` an expression; None: one day, key ""); None when ``path`` could not be read (it is set aside)."""
    import duckdb

    group = day_sql or "''"
    try:
        found = p.con.execute(f"SELECT {group} AS day, count(*) FROM {source or _source(path)} WHERE {where} "
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


# -- the calls and lookups the views give the tenants -----------------------------------------------------------
#: The temporary table :func:`find_tenant_keys` fills: ``(tbl, trace_id, span_id, day, shared)``, one row per span
#: of ``calls`` / ``lookups`` to forget (``shared``: one left, see :attr:`ForgetReport.shared`).
KEYS_TABLE: Final = "forget_keys"

#: The tables whose rows may belong to a tenant their own row does not name (the views link them to a request; a
#: gateway's request span is the app request's part when an app records its own requests and calls the gateway).
_KEYED: Final = ("calls", "lookups", "requests")

#: The path the views are made over before each table's rows are put in (:func:`find_tenant_keys`).
_NO_PATH: Final = Path("/costline-forget")


def _tenant_keys_sql(in_list: str) -> list[str]:
    """The statements filling :data:`KEYS_TABLE` for the tenants ``in_list`` (SQL literals) from the lake's views.

    * ``calls`` and ``lookups`` view rows whose tenant is theirs: the call's own, or that of the request it belongs
      to (an SDK instrumentation's span names none; a calls file of an older costline has no tenant column);
    * the call spans the calls view leaves out as a second span of a call it keeps (views/call_links.sql: an SDK's
      span inside a framework's or costline's, an app's span of a call the gateway answered, one call reported in
      two traces), without a tenant of their own: when the request their span links to is theirs; linked to none,
      when every kept call they are inside or around (parent or child span) is theirs, or, with no such call, every
      kept call beside them (the same parent span, at the same time) and of their response id (in their trace),
      or, with none of those or in a trace with a response id owned outside it (the views may count any span of
      it as that one: by its own response id or by one of a span it wraps; neither rule decides there), when every
      owner of their trace is theirs — its requests, its calls in the view, and the requests (a gateway's answer
      id) and calls of other traces that carry a response id of one of its calls, at that time. Where some of
      those are theirs and some another tenant's (or no tenant's), the span is ``shared``: left and counted,
      rather than guessed. So is one, linked or not, whose own response id another tenant (or none) owns: a kept
      call of it (any trace), or a gateway request that gave it as its answer's id at that time (the views may
      count the span as that one);
    * a gateway's request that is a part of an app's request of theirs (views/call_links.sql: the app recorded its
      request with costline's recorder and called the gateway inside it), whatever tenant the gateway's key named:
      its request span (``requests``, it holds the prompt) and its cache lookups; its calls have the app request's
      tenant in the calls view already, and such a gateway request owns the app's span of its answer as the app's
      tenant."""
    def theirs(column: str) -> str:
        return f"coalesce({column} IN ({in_list}), false)"

    def started(alias: str = "") -> str:
        return f"{alias}ts - to_microseconds(CAST(coalesce({alias}duration_ms, 0) * 1000 AS BIGINT))"

    return [
        # the calls view's links once (each use of a view computes it again): the calls, and the app spans of a
        # gateway request's answer that make that request a part of the app's (parts: no calls; their tenant, the
        # app request's, owns the gateway's request)
        f"""CREATE OR REPLACE TEMP TABLE forget_links AS
            SELECT trace_id, span_id, parent_span_id, coalesce(request_tenant, tenant) AS tenant, response_id, ts,
                   {started()} AS started, part_trace_id, part_span_id, part_answer FROM call_links""",
        """CREATE OR REPLACE TEMP TABLE forget_calls AS
            SELECT * EXCLUDE (part_trace_id, part_span_id, part_answer) FROM forget_links
            WHERE NOT coalesce(part_answer, false)""",
        """CREATE OR REPLACE TEMP TABLE forget_parts AS
            SELECT DISTINCT part_trace_id AS trace_id, part_span_id AS span_id, tenant FROM forget_links
            WHERE part_span_id IS NOT NULL""",
        f"""CREATE OR REPLACE TEMP TABLE {KEYS_TABLE} AS
WITH dropped AS (
  SELECT a.trace_id, a.span_id, a.parent_span_id, a.linked_span_id, a.request_tenant, CAST(a.date AS VARCHAR) AS day,
         a.response_id, a.ts, {started("a.")} AS started
  FROM call_links_all a ANTI JOIN forget_calls k ON k.trace_id = a.trace_id AND k.span_id = a.span_id
  WHERE a.tenant IS NULL
), spans AS (
  SELECT trace_id, response_id, ts, {started()} AS started FROM calls_raw
  WHERE response_id IS NOT NULL AND trace_id IN (SELECT trace_id FROM dropped)
), outside AS (
  -- the owners of a response id of a trace's spans outside it, at that time: the gateway's request that gave it
  -- as its answer's id, the kept calls of other traces that carry it
  SELECT s.trace_id, s.response_id, CASE WHEN p.span_id IS NULL THEN q.tenant ELSE p.tenant END AS tenant
  FROM spans s JOIN requests_raw q ON q.response_id = s.response_id
  LEFT JOIN forget_parts p ON p.trace_id = q.trace_id AND p.span_id = q.span_id
  WHERE coalesce(s.started <= q.ts + INTERVAL 1 MINUTE
                 AND {started("q.")} <= s.ts + INTERVAL 1 MINUTE, TRUE)
  UNION ALL
  SELECT s.trace_id, s.response_id, c.tenant FROM spans s JOIN forget_calls c ON c.response_id = s.response_id
   AND c.trace_id <> s.trace_id
  WHERE coalesce(s.started <= c.ts AND c.started <= s.ts, TRUE)
), foreign_id AS (
  -- the left-out spans whose own response id another tenant (or none) owns: a kept call of it (any trace; the
  -- views may count the span as that call), the gateway's request that gave it (the outside owners): never theirs
  SELECT d.trace_id, d.span_id FROM dropped d JOIN forget_calls c ON c.response_id = d.response_id
  WHERE NOT {theirs("c.tenant")}
  UNION
  SELECT d.trace_id, d.span_id FROM dropped d JOIN outside o ON o.trace_id = d.trace_id
   AND o.response_id = d.response_id
  WHERE NOT {theirs("o.tenant")}
), owners AS (
  SELECT trace_id, tenant FROM requests_raw
  WHERE trace_id IN (SELECT trace_id FROM dropped WHERE linked_span_id IS NULL)
  UNION ALL
  SELECT trace_id, tenant FROM forget_calls
  WHERE trace_id IN (SELECT trace_id FROM dropped WHERE linked_span_id IS NULL)
  UNION ALL
  SELECT trace_id, tenant FROM outside
), traces AS (
  SELECT trace_id, bool_and({theirs("tenant")}) AS all_theirs, bool_or({theirs("tenant")}) AS some_theirs
  FROM owners GROUP BY trace_id
), near AS (
  -- the kept calls a left-out span is inside or around (an SDK's span inside costline's call span): whose it is
  -- (a span with no response id of its own: not in a trace with a response id owned outside it, as for beside
  -- below; one with its own is vetoed by foreign_id when another tenant owns it)
  SELECT d.trace_id, d.span_id, bool_and({theirs("c.tenant")}) AS all_theirs,
         bool_or({theirs("c.tenant")}) AS some_theirs
  FROM dropped d JOIN forget_calls c ON c.trace_id = d.trace_id
   AND (c.span_id = d.parent_span_id OR c.parent_span_id = d.span_id)
  WHERE d.linked_span_id IS NULL
    AND (d.response_id IS NOT NULL OR NOT EXISTS (SELECT 1 FROM outside o WHERE o.trace_id = d.trace_id))
  GROUP BY ALL
), beside AS (
  -- with none of those: the kept calls beside it, under the same parent span at the same time (an SDK's span
  -- beside costline's call span under a span of the app, the same call): a span sits in one request, as its
  -- parent does, so they are whose it is; with the kept calls of its response id in the trace (the views' one
  -- call: the one it may be the second span of, wherever it is), so that one of another tenant keeps it. No span
  -- of a trace with a response id owned outside it is decided here (the views may count a span as that one, by
  -- its own response id or by that of a span it wraps, which may have no response id of its own): the trace's
  -- owners, those outside included, are
  SELECT d.trace_id, d.span_id, bool_and({theirs("c.tenant")}) AS all_theirs,
         bool_or({theirs("c.tenant")}) AS some_theirs
  FROM dropped d JOIN forget_calls c ON c.trace_id = d.trace_id AND c.span_id <> d.span_id
   AND ((c.parent_span_id = d.parent_span_id AND c.started <= d.ts AND d.started <= c.ts)
        OR c.response_id = d.response_id)
  WHERE d.linked_span_id IS NULL
    AND NOT EXISTS (SELECT 1 FROM outside o WHERE o.trace_id = d.trace_id)
  GROUP BY ALL
  HAVING bool_or(c.parent_span_id = d.parent_span_id AND c.started <= d.ts AND d.started <= c.ts)
)
SELECT 'calls' AS tbl, trace_id, span_id, NULL::VARCHAR AS day, false AS shared FROM forget_calls
WHERE tenant IN ({in_list})
UNION ALL
SELECT 'lookups', trace_id, span_id, NULL, false FROM lookups WHERE tenant IN ({in_list})
UNION ALL
SELECT 'requests', trace_id, span_id, NULL, false FROM forget_parts WHERE tenant IN ({in_list})
UNION ALL
SELECT 'lookups', l.trace_id, l.span_id, NULL, false FROM lookup_links l
JOIN forget_parts p ON p.trace_id = l.trace_id AND p.span_id = l.linked_span_id WHERE p.tenant IN ({in_list})
UNION ALL
SELECT 'calls', d.trace_id, d.span_id, d.day,
       NOT (coalesce(d.request_tenant IN ({in_list}), false)
            OR coalesce(n.all_theirs, b.all_theirs, t.all_theirs, false))
       OR f.span_id IS NOT NULL
FROM dropped d LEFT JOIN foreign_id f ON f.trace_id = d.trace_id AND f.span_id = d.span_id
  LEFT JOIN near n ON n.trace_id = d.trace_id AND n.span_id = d.span_id
  LEFT JOIN beside b ON b.trace_id = d.trace_id AND b.span_id = d.span_id
  LEFT JOIN traces t ON t.trace_id = d.trace_id
WHERE d.request_tenant IN ({in_list})
   OR (d.linked_span_id IS NULL AND coalesce(n.some_theirs, b.some_theirs, t.some_theirs, false))""",
        "DROP TABLE forget_calls", "DROP TABLE forget_links",  # forget_parts: kept for _item_owners
    ]


def find_tenant_keys(con: "duckdb.DuckDBPyConnection", tenants: tuple[str, ...], sources: Mapping[str, str], *,
                     before: date | None = None) -> int:
    """Fill the temporary table :data:`KEYS_TABLE` on ``con`` with the ``calls`` and ``lookups`` spans to forget
    (see :func:`_tenant_keys_sql`): the lake's views made over ``sources`` (per table, a ``FROM`` item on ``con``
    giving its rows with a ``date`` column), every day of them. Returns how many call rows are left as
    ``shared`` (of the days before ``before`` only, when given). Pricing plays no part in what links a call to its
    request, nor in which span of a call the views keep: the views are made without it."""
    import duckdb

    from costline.lake._files import read_table_sql
    from costline.lake._views import views_sql

    stmts = views_sql(_NO_PATH)
    for table in TABLES:
        stmts = [s.replace(read_table_sql(_NO_PATH, table), sources[table]) for s in stmts]
    in_list = ", ".join(sql_str(t) for t in tenants)
    try:
        for stmt in [*stmts, *_tenant_keys_sql(in_list)]:
            con.execute(stmt)
        day = "" if before is None else f" AND day < {sql_str(before.isoformat())}"
        return int(con.execute(f"SELECT count(*) FROM {KEYS_TABLE} WHERE shared{day}").fetchall()[0][0])
    except duckdb.Error as exc:
        raise LakeError(f"cannot read the calls and lookups to find the tenants' rows ({str(exc).splitlines()[0]}): "
                        "nothing was changed; run `costline lake compact` (it sets an unreadable file aside) and "
                        "run it again") from exc


def _local_keys(lake: "Lake", con: "duckdb.DuckDBPyConnection", tenants: tuple[str, ...],
                before: date | None) -> int:
    """:func:`find_tenant_keys` over the data files of ``lake`` the views could read now (the others are set aside
    by the forget, which then says so), each table's current schema under them (a column newer than every file
    reads as NULL)."""
    from costline.lake._schema import SCHEMAS

    sources = {}
    for table in TABLES:
        files = [f for f in sorted(lake.table_dir(table).glob("date=*/*.parquet")) if file_problem(f, table) is None]
        if con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = $v",
                       {"v": f"forget_{table}_schema"}).fetchall() == [(0,)]:
            con.register(f"forget_{table}_schema", SCHEMAS[table].empty_table())
        schema = f"SELECT *, NULL::DATE AS date FROM forget_{table}_schema"
        if files:
            listed = ", ".join(sql_str(f) for f in files)
            sources[table] = (f"(SELECT * FROM read_parquet([{listed}], hive_partitioning = true, union_by_name = "
                              f"true, hive_types = {{'date': DATE}}) UNION ALL BY NAME {schema})")
        else:
            sources[table] = f"({schema})"
    return find_tenant_keys(con, tenants, sources, before=before)


def _shared_traces(con: "duckdb.DuckDBPyConnection", before: date | None, limit: int = 5) -> tuple[str, ...]:
    """The first ``limit`` traces (by id) of the call rows :data:`KEYS_TABLE` leaves as shared."""
    day = "" if before is None else f" AND day < {sql_str(before.isoformat())}"
    return tuple(r[0] for r in con.execute(f"SELECT DISTINCT trace_id FROM {KEYS_TABLE} WHERE shared{day} "
                                           f"ORDER BY trace_id LIMIT {int(limit)}").fetchall())


def _unlocked_note(locked: bool) -> tuple[str, ...]:
    """The report's note when a dry run read without the maintenance lock (``locked`` False)."""
    return () if locked else (
        "note: the lake cannot be written and has no maintenance lock file, so this dry run read it without the "
        "lock: a compaction running meanwhile (elsewhere, with write access) may have changed what it counted",)


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
           dry_run: bool = False, alert_state: Path | str | None = None) -> ForgetReport:
    """Remove every row of ``tenants`` (exact tenant names) from the lake; return what was removed.

    Every day of ``requests``, ``calls`` and ``lookups`` (today's, still open, included; with ``before``, only the
    days before it, ``date=1970-01-01`` — rows without a usable time — counting as before any date) and the alerts'
    exported files (:data:`ALERT_FILES`; with ``before``, the rows whose time is before it). A row goes when its
    ``tenant`` is one of them, or, in ``calls`` and ``lookups``, when it is one the views give them
    (:func:`find_tenant_keys`, over every day: its own row names no tenant, the request it belongs to does) or a
    second span of such a call; the other rows whose tenant is NULL are kept (those whose trace another tenant
    shares are counted in :attr:`ForgetReport.shared`). Only files the offset manifests committed when it started
    are rewritten; a file committed since that holds rows of the tenants is in :attr:`ForgetReport.not_covered`.
    Safe while the processor runs; it holds the maintenance lock (a compaction waits for it, and it for a
    compaction; a dry run on a lake it cannot write reads without it, and says so).

    Raises :class:`ErasureIncomplete` (after doing the rest) when a file it could not read was set aside, or one
    set aside earlier is still there: the tenants' rows it may hold were not erased. ``dry_run``: nothing is
    changed, nothing raised; the report tells what would go.

    The tenants are erased from the alert state files too, ``<lake>/_alerts/state.sqlite`` and ``alert_state``
    (``[alerts] state_path``), those that exist (:func:`costline.alerts.erasure.forget_tenants`: its notes say
    what went; :class:`ErasureIncomplete` when one cannot be changed)."""
    import duckdb

    from costline.alerts.erasure import forget_in_states, state_failure, with_states
    from costline.alerts.store import default_state_path

    names = tenant_list(tenants)
    _require(lake)
    with lake._maintenance_lock(read_only=dry_run) as locked:
        if not dry_run:
            _complete_staged_batches(lake)
        started = time.time()
        committed = committed_offsets_by_topic(lake)
        con = duckdb.connect()
        try:
            p = _Pass(lake, con, dry_run)
            in_list = ", ".join(sql_str(t) for t in names)
            matches = f"tenant IN ({in_list})"
            shared = _local_keys(lake, con, names, before)
            shared_traces = _shared_traces(con, before)
            staged_left: list[Path] = []
            if not dry_run:  # a killed forget's (or job's) staged results file: it may hold the prompts it erased
                for folder in (*ITEM_FILES.values(), *(folder for folder, _ in ALERT_FILES.values())):
                    staged_left += _remove_stale_tmps(lake.path / folder, started, _STAGED_RESULT,
                                                      min_age_s=RESULT_TMP_MIN_AGE_S)
            items = {view: _result_files(lake.path / folder) for view, folder in ITEM_FILES.items()}
            if any(items.values()):  # the requests items name, before the forget rewrites them
                _item_owners(con, in_list)
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
            states = forget_in_states([default_state_path(lake.path), *([alert_state] if alert_state else [])], names,
                                      before=before, dry_run=dry_run)  # first: see _forget_alerts
            _forget_alerts(p, names, before)
            left = [x for view, files in items.items() for x in _forget_items(p, view, files, in_list, before)]
            left += _export_items(lake.path, names)
            not_covered = _not_covered(lake, con, seen, names, matches, before)
        finally:
            con.close()
        aside = tuple(x for x in set_aside_files(lake.path) if x not in p.aside)
        report = ForgetReport(names, before, dry_run, tuple(p.days),
                              totals((*TABLES, *ALERT_FILES, *ITEM_FILES), p.days, p.files), not_covered,
                              tuple(p.aside), aside, _unlocked_note(locked), shared, shared_traces, tuple(left),
                              tuple(sorted(staged_left)))
        report = with_states(report, states)
    if not dry_run and not report.complete:
        unread = [*report.set_aside, *report.left_aside]
        raise ErasureIncomplete(
            f"forget removed {report.rows:,} rows, but {len(unread)} file(s) it could not read may hold rows of "
            f"{', '.join(repr(t) for t in names)}: {', '.join(str(x) for x in unread)}. Restore each one (rename it "
            "back to its .parquet name once repaired) and run the forget again, or delete it with its rows", report)
    if failure := state_failure(report, states):
        raise ErasureIncomplete(failure, report)
    return report


def _forget_file(p: _Pass, table: str, path: Path, matches: str) -> int:
    """Rows of the tenants removed from one data file (0: none there, or it was set aside): those whose ``tenant``
    ``matches`` and those of :data:`KEYS_TABLE` (a file written before calls had a tenant: those only)."""
    why = file_problem(path, table)
    if why is not None:
        p.unreadable(path, why, "the forget")
        return 0
    cols = _schema_names(path)
    where = None if cols is None else _row_matches(table, cols, matches)
    if where is None:  # gone meanwhile, or nothing in it can be the tenants'
        return 0
    found = _count_by_day(p, path, where, None, "the forget")
    rows = sum((found or {}).values())
    if rows:
        p.rewrite(table, path, f"SELECT * FROM {_source(path)} WHERE NOT ({where})", remove_if_empty=True)
    return rows


def _row_matches(table: str, cols: list[str], matches: str) -> str | None:
    """A condition (never NULL) on a file of ``table`` with columns ``cols`` that holds for the rows to forget: its
    ``tenant`` ``matches``, or its span is one of :data:`KEYS_TABLE`'s; None when the file has neither column."""
    parts = [f"coalesce({matches}, false)"] if "tenant" in cols else []
    if table in _KEYED and {"trace_id", "span_id"} <= set(cols):
        parts.append(f"EXISTS (SELECT 1 FROM {KEYS_TABLE} k WHERE k.tbl = {sql_str(table)} AND NOT k.shared "
                     "AND k.trace_id = f.trace_id AND k.span_id = f.span_id)")
    return " OR ".join(parts) or None


def _result_files(folder: Path) -> list[Path]:
    """The Parquet files of a folder of results (its zero-row schema file left out)."""
    return sorted(f for f in folder.glob("*.parquet") if f.name != EMPTY_FILE) if folder.is_dir() else []


def _result_columns(p: _Pass, path: Path) -> list[str] | None:
    """The columns of a results file (not a table of the lake: only its Parquet framing and footer are checked);
    None when it is gone meanwhile or cannot be read (then it is set aside)."""
    why = file_problem(path, "requests", footer=False)
    cols = _schema_names(path) if why is None else None
    if cols is None and path.exists():
        p.unreadable(path, why or "its footer cannot be read", "the forget")
    return cols


def _day(time_sql: str) -> str:
    return f"coalesce(strftime(CAST({time_sql} AS DATE), '%Y-%m-%d'), 'no time')"


def _forget_result_file(p: _Pass, view: str, path: Path, where: str, day_sql: str, per_day: dict[str, int],
                        joins: str = "") -> bool:
    """Remove the rows of one results file (alias ``f``, with ``joins`` after it) that match ``where`` (never
    NULL), counted per day into ``per_day``; the file's row order kept. False when it could not be read."""
    found = _count_by_day(p, path, where, day_sql, "the forget", _source(path) + joins)
    if found is None:
        return False
    for day, n in found.items():
        per_day[day] = per_day.get(day, 0) + n
    if found:
        rows = f"read_parquet({sql_str(path)}, hive_partitioning = false, file_row_number = true) f{joins}"
        p.rewrite(view, path, f"SELECT f.* EXCLUDE (file_row_number) FROM {rows} WHERE NOT ({where}) "
                  "ORDER BY f.file_row_number", remove_if_empty=False)
    return True


def _forget_alerts(p: _Pass, names: tuple[str, ...], before: date | None) -> None:
    """The tenants' rows removed from the alerts' exported files (:data:`ALERT_FILES`), which hold an alert's
    ``tenant`` label (:func:`~costline.alerts.erasure.export_labels`). Run after the forget erased them from the alert
    state files (:func:`costline.alerts.erasure.forget_in_states`): an export that read a state file before that
    writes again (:func:`costline.alerts.view.export_history`), one that reads it after finds them gone. Under the
    alerts' export lock (:func:`costline.alerts.view.export_lock`): no export replaces a file while it is read."""
    import contextlib

    from costline.alerts.erasure import export_labels
    from costline.alerts.view import export_lock

    if not (p.lake.path / "alerts").is_dir():
        return
    matches = f"tenant IN ({', '.join(sql_str(t) for t in export_labels(names))})"
    with contextlib.ExitStack() as held:  # an export of `alerts run` replacing a file meanwhile would read as corrupt
        try:
            held.enter_context(export_lock(p.lake.path, read_only=p.dry_run))
        except OSError as exc:
            raise LakeError(f"cannot take the alerts' export lock {p.lake.path / 'alerts'} ({exc}): check the lake's "
                            "permissions (forget rewrites the alerts' exported files)") from exc
        for view, (folder, time_col) in ALERT_FILES.items():
            where = matches if before is None else f"{matches} AND {time_col} < DATE {sql_str(before.isoformat())}"
            per_day: dict[str, int] = {}
            for f in _result_files(p.lake.path / folder):
                cols = _result_columns(p, f)
                if cols is not None and "tenant" in cols and time_col in cols:
                    _forget_result_file(p, view, f, f"coalesce({where}, false)", _day(time_col), per_day)
            p.days.extend(DayRows(view, day, n) for day, n in sorted(per_day.items()))


# -- the jobs' and distillation's per-request results --------------------------------------------------------
#: The temporary table :func:`_item_owners` fills, per request key: one row (``whole``) telling whether every
#: request span of it is the tenants' (``all_theirs``), some is (``some_theirs``), and its earliest ``ts``; and one
#: per tenant its spans name (not ``whole``, ``tenant`` set) with that tenant's earliest ``ts``. The keys: each
#: ``(trace_id, request_id)``, and each ``request_id`` with ``trace_id`` NULL (every request of that id, for an item
#: that keeps no ``trace_id``).
ITEM_OWNERS: Final = "forget_item_owners"


def _item_owners(con: "duckdb.DuckDBPyConnection", in_list: str) -> None:
    """Fill :data:`ITEM_OWNERS` from the ``requests_raw`` view on ``con`` (made by :func:`_local_keys`): a gateway
    request that is a part of an app's request (``forget_parts``) is the app request's tenant's, so its items,
    which name the gateway key's tenant (the jobs sample the raw spans), are named as left."""
    import duckdb

    theirs = f"coalesce(tenant IN ({in_list}), false)"
    try:
        con.execute(f"""CREATE OR REPLACE TEMP TABLE {ITEM_OWNERS} AS
            SELECT trace_id, request_id, tenant, grouping(tenant) = 1 AS whole, bool_and({theirs}) AS all_theirs,
                   bool_or({theirs}) AS some_theirs, min(ts) AS ts
            FROM (SELECT r.trace_id, r.request_id, coalesce(p.tenant, r.tenant) AS tenant, r.ts FROM requests_raw r
                  LEFT JOIN forget_parts p ON p.trace_id = r.trace_id AND p.span_id = r.span_id)
            WHERE request_id IS NOT NULL
            GROUP BY GROUPING SETS ((trace_id, request_id), (trace_id, request_id, tenant), (request_id),
                                    (request_id, tenant))
            HAVING (grouping(trace_id) = 1 OR trace_id IS NOT NULL) AND (grouping(tenant) = 1 OR tenant IS NOT NULL)""")
    except duckdb.Error as exc:
        raise LakeError(f"cannot read the requests to find the tenants' job items ({str(exc).splitlines()[0]}): "
                        "nothing was changed; run `costline lake compact` (it sets an unreadable file aside) and "
                        "run it again") from exc


def _forget_items(p: _Pass, view: str, files: list[Path], in_list: str, before: date | None) -> list[ItemsLeft]:
    """The tenants' rows removed from one kind of per-request results (:data:`ITEM_FILES`): a row whose
    ``tenant`` is theirs, and one that names none (an older file has no such column) whose request — its
    ``(trace_id, request_id)``, or every request of its ``request_id`` when it keeps no ``trace_id`` — is
    theirs, every span of it (:data:`ITEM_OWNERS`). A row that names another tenant is that tenant's: never
    removed. With ``before``: those whose time is before it, the row's ``ts`` (the request's, ``eval_items``) else
    its request's (of the row's tenant's requests of that key, when it names one); a row whose time is unknown
    counts as before any date, as ``date=1970-01-01`` does. Returns the files left holding rows whose request has
    spans of the tenants: naming no tenant, their request also another's (``shared``) or no longer in the lake
    (``unlinked``); naming another tenant (``named``), or, keeping no ``trace_id``, a request of their request id
    has (``named_id``: theirs, or another trace's that used the same id)."""
    import duckdb

    per_day: dict[str, int] = {}
    left: list[ItemsLeft] = []
    for f in files:
        cols = _result_columns(p, f)
        if cols is None or not ({"tenant", "request_id"} & set(cols)):
            continue
        tenant, trace, request = (f"f.{c}" if c in cols else "NULL::VARCHAR" for c in ("tenant", "trace_id",
                                                                                       "request_id"))
        key = f"ON {{k}}.request_id = {request} AND {{k}}.trace_id IS NOT DISTINCT FROM {trace}"
        joins = (f" LEFT JOIN {ITEM_OWNERS} k {key.format(k='k')} AND k.whole"
                 f" LEFT JOIN {ITEM_OWNERS} kt {key.format(k='kt')} AND NOT kt.whole AND kt.tenant = {tenant}")
        request_ts = f"CASE WHEN {tenant} IS NULL THEN k.ts ELSE kt.ts END"
        time_sql = f"coalesce(f.ts, {request_ts})" if "ts" in cols else request_ts
        when = "true" if before is None else f"coalesce({time_sql} < DATE {sql_str(before.isoformat())}, true)"
        unowned = f"{when} AND {tenant} IS NULL"
        gone = (f"{when} AND (coalesce({tenant} IN ({in_list}), false) "
                f"OR ({tenant} IS NULL AND coalesce(k.all_theirs, false)))")
        if not _forget_result_file(p, view, f, gone, _day(time_sql), per_day, joins):
            continue
        other = f"{when} AND NOT coalesce({tenant} IN ({in_list}), true) AND k.some_theirs"
        try:
            shared, unlinked, named, named_id = p.con.execute(
                f"SELECT count(*) FILTER (WHERE {unowned} AND k.some_theirs AND NOT k.all_theirs), "
                f"count(*) FILTER (WHERE {unowned} AND k.request_id IS NULL), "
                f"count(*) FILTER (WHERE {other} AND {trace} IS NOT NULL), "
                f"count(*) FILTER (WHERE {other} AND {trace} IS NULL) "
                f"FROM {_source(f)}{joins}").fetchone()
        except duckdb.Error:  # rewritten or removed meanwhile: what it holds is counted again next time
            continue
        left += [ItemsLeft(f, int(n), why) for why, n in (("shared", shared), ("unlinked", unlinked),
                                                          ("named", named), ("named_id", named_id)) if n]
    p.days.extend(DayRows(view, day, n) for day, n in sorted(per_day.items()))
    return left


def _export_items(lake_path: Path, tenants: tuple[str, ...]) -> list[ItemsLeft]:
    """The distillation exports under ``lake_path`` (:data:`EXPORT_FILES`) holding items of ``tenants``: named,
    never rewritten."""
    out = []
    for f in sorted(lake_path.glob(EXPORT_FILES)):
        n = 0
        try:
            with f.open(encoding="utf-8") as fh:
                for line in fh:
                    try:
                        row = json.loads(line)
                    except ValueError:
                        continue
                    n += isinstance(row, dict) and row.get("tenant") in tenants
        except (OSError, UnicodeDecodeError):  # unreadable: nothing of it can be said
            continue
        if n:
            out.append(ItemsLeft(f, n, "export"))
    return out


def _not_covered(lake: "Lake", con: "duckdb.DuckDBPyConnection", seen: set[Path], names: tuple[str, ...],
                 matches: str, before: date | None) -> tuple[NotCovered, ...]:
    """Data files not rewritten (committed after the forget started, or never) that hold rows of the tenants: the
    tenants' calls and lookups found again first, over the files there now (the new ones' included)."""
    import duckdb

    late = [(table, f) for table in TABLES for f in sorted(lake.table_dir(table).glob("date=*/*.parquet"))
            if f not in seen and f.name != EMPTY_FILE
            and (before is None or f.parent.name.removeprefix("date=") < before.isoformat())]
    if not late:
        return ()
    _local_keys(lake, con, names, before)
    out: list[NotCovered] = []
    for table, f in late:
        cols = _schema_names(f)
        where = None if cols is None else _row_matches(table, cols, matches)
        if where is None:
            continue
        try:
            n = con.execute(f"SELECT count(*) FROM {_source(f)} WHERE {where}").fetchone()[0]
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
    with lake._maintenance_lock(read_only=dry_run) as locked:
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
                              tuple(p.aside), _unlocked_note(locked))
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
