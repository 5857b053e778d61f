"""The DuckDB views over the lake: their SQL lives in ``costline/lake/views/<name>.sql``.

:func:`views_sql` reads those files in dependency order and fills in the few ``{placeholders}``
(the files of each table, the hosting schedule); docs/sql.md explains the rules they implement.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Final

from costline.config import Config, PricingConfig
from costline.fsutil import atomic_path
from costline.lazy import import_optional
from costline.sqlutil import sql_str
from costline.lake._files import check_glob_free, read_table_sql
from costline.lake._lake import Lake, NoLake, lake_exists
from costline.lake._oddfiles import set_aside_odd_files
from costline.lake._schema import ONE_ROW_PER_SPAN, TABLES

if TYPE_CHECKING:  # pragma: no cover
    import duckdb

__all__ = ["COSTLINE_SCOPE", "VIEW_FILES", "VIEW_PROVIDERS", "RawSource", "create_views", "name_raw_sources",
           "open_lake", "provided_views", "raw_source", "require_lake", "view_file_sql", "views_in", "views_sql",
           "write_views_db"]

#: The instrumentation scope of costline's own call spans (preferred when two spans report one call).
COSTLINE_SCOPE: Final = "costline.collectors"

#: The view files after the ``<table>_raw`` views (``raw.sql``, once per table) and the links of calls
#: and lookups to their requests (``links.sql``, twice), in the order they are created (each reads
#: only views made before it).
VIEW_FILES: Final = (
    "call_links", "call_content", "hosting_schedule", "student_hosting_hourly",
    "requests", "calls", "lookups", "tier_hourly", "cache_hourly", "cache_hit_rate_7d", "rejections_hourly",
)

log = logging.getLogger("costline.lake")

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def view_file_sql(name: str, **fields: str) -> str:
    """``views/<name>.sql`` with its ``{placeholders}`` filled in from ``fields`` (each one must be)."""
    text = resources.files("costline.lake").joinpath("views", f"{name}.sql").read_text(encoding="utf-8")

    def fill(m: re.Match[str]) -> str:
        if m.group(1) not in fields:
            raise KeyError(f"views/{name}.sql needs {{{m.group(1)}}}")
        return fields[m.group(1)]

    return _PLACEHOLDER.sub(fill, text).strip() + "\n"


def _ts_sql(ts: datetime | None) -> str:
    return "NULL::TIMESTAMP" if ts is None else f"TIMESTAMP '{ts.isoformat(sep=' ')}'"


def _schedule_sql(schedule: Sequence[tuple[datetime | None, datetime | None, float]]) -> str:
    if not schedule:
        return "SELECT NULL::TIMESTAMP AS since, NULL::TIMESTAMP AS until, 0.0::DOUBLE AS usd_per_hour WHERE false"
    rows = ", ".join(f"({_ts_sql(a)}, {_ts_sql(b)}, {float(r)!r}::DOUBLE)" for a, b, r in schedule)
    return f"SELECT * FROM (VALUES {rows}) s(since, until, usd_per_hour)"


def views_sql(
    lake_path: Path | str,
    *,
    student_usd_per_hour: float | None = None,
    hosting: Sequence[tuple[datetime | None, datetime | None, float]] | None = None,
    open_gap_hours: int = PricingConfig.hosting_open_gap_hours,
) -> list[str]:
    """The ``CREATE VIEW`` statements over a lake (absolute paths, hosting schedule embedded).

    ``hosting`` is :func:`costline.pricing.hosting_schedule`'s ``[(since, until, USD/hour)]``; without
    it, ``student_usd_per_hour`` is one open period (the simplest schedule). An open ``since`` bills the
    runs of student calls, bridging silences of at most ``open_gap_hours`` (``[pricing]
    hosting_open_gap_hours``). docs/sql.md has the rules.
    """
    if int(open_gap_hours) < 1:
        raise ValueError(f"open_gap_hours must be at least 1; got {open_gap_hours!r}")
    if hosting is None:
        rate = float(student_usd_per_hour or 0.0)
        hosting = [(None, None, rate)] if rate > 0 else []
    stmts = [view_file_sql("raw", table=table, source=read_table_sql(lake_path, table),
                           one_row_per_span=ONE_ROW_PER_SPAN) for table in TABLES]
    stmts += [view_file_sql("links", view="call_links_all", source="calls_raw"),
              view_file_sql("links", view="lookup_links", source="lookups_raw")]
    fields = {"costline_scope": COSTLINE_SCOPE, "schedule": _schedule_sql(hosting),
              "open_gap_hours": str(int(open_gap_hours))}
    for name in VIEW_FILES:
        if name == "call_links":  # twice: without the content (the calls view's) and with it (the requests view's)
            stmts += [view_file_sql(name, view="call_links", without_content=" EXCLUDE (input_messages, output_messages)",
                                    **fields),
                      view_file_sql(name, view="call_links_content", without_content="", **fields)]
        else:
            stmts.append(view_file_sql(name, **fields))
    return stmts


#: Views other package areas keep over their own files in the lake: "module:function", where the
#: function takes the lake path and returns SQL (one string or a list). Imported when views are
#: created, so the core never imports an area at start-up; an area that is not installed is skipped.
VIEW_PROVIDERS: Final = (
    "costline.alerts.view:alerts_view_sql",
    "costline.jobs.store:jobs_views_sql",
    "costline.distill.store:distill_views_sql",
)


#: Why a provider's first write to a lake fails where the lake is only read: a read-only mount, a full disk or
#: quota, no permission.
_CANNOT_WRITE: Final = frozenset({errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM})


def _write_refused(exc: BaseException) -> OSError | None:
    """The OSError of :data:`_CANNOT_WRITE` behind ``exc`` (itself or a cause), or None."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in _CANNOT_WRITE:
            return cur
        cur = cur.__cause__ or cur.__context__
    return None


def provided_views(lake_path: Path | str) -> list[str]:
    """The :data:`VIEW_PROVIDERS`' statements over ``lake_path`` (areas not installed left out).

    A provider writes its zero-row schema files the first time: where the lake cannot be written (read-only,
    full), one that fails for that is left out with a warning, so the lake's own views (and the other areas')
    still answer; ``costline.alerts`` defines its views over an empty table itself then."""
    out: list[str] = []
    for spec in VIEW_PROVIDERS:
        module_name, _, func = spec.partition(":")
        module = import_optional(module_name)
        if module is None:  # the area is not installed
            continue
        try:
            sql = getattr(module, func)(lake_path)
        except Exception as exc:
            refused = _write_refused(exc)
            if refused is None:
                raise
            log.warning("the views of %s are left out: their schema files cannot be written to the lake at %s (%s); "
                        "run `costline lake views` once with write access to the lake to create them", module_name, lake_path, refused)
            continue
        out.extend([sql] if isinstance(sql, str) else sql)
    return out


@dataclass(frozen=True)
class RawSource:
    """The rows behind a connection's ``<table>_raw`` view, before its one-row-per-span rule: the ``{source}``
    ``views/raw.sql`` was filled with."""

    #: A ``FROM`` item on that connection: the local files' ``read_parquet(...)``, or table mode's dataset.
    sql: str
    #: It has the local lake's hive ``date`` column, which a filter on ``date`` prunes files by.
    date_partitioned: bool


def name_raw_sources(con: "duckdb.DuckDBPyConnection", sources: dict[str, RawSource]) -> None:
    """Record on each ``<table>_raw`` view (its DuckDB comment) the rows it reads, for :func:`raw_source`.
    Called right after the views are made: a view made again loses the comment, so none outlives its view."""
    for table, src in sources.items():
        if table not in TABLES:
            raise ValueError(f"no {table}_raw view: the lake's tables are {', '.join(TABLES)}")
        doc = json.dumps({"source": src.sql, "date_partitioned": src.date_partitioned})
        con.execute(f"COMMENT ON VIEW {table}_raw IS {sql_str(doc)}")


def raw_source(con: "duckdb.DuckDBPyConnection", table: str) -> RawSource | None:
    """The rows behind ``con``'s ``<table>_raw`` view as :func:`create_views` made it (either ``[lake] mode``);
    None when the connection has no such view or it was made otherwise (by hand, an older costline)."""
    row = con.execute("SELECT comment FROM duckdb_views() WHERE view_name = $v", {"v": f"{table}_raw"}).fetchone()
    try:
        doc = json.loads(row[0]) if row and row[0] else None
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("source"), str):
        return None
    return RawSource(doc["source"], bool(doc.get("date_partitioned")))


def require_lake(config: Config) -> None:
    """Raise :class:`NoLake` unless ``config``'s ``[lake] path`` holds a lake (local mode; table mode's
    tables live in the catalog). For the commands that only read: a mistyped path must not answer
    "0 rows" from an empty lake created on the spot."""
    if config.lake.mode != "table" and not lake_exists(config.lake.path):
        raise NoLake(config.lake.path)


#: What a statement's text holds besides its code: string literals and quoted names (kept whole, so that a ``--`` in
#: one starts no comment) and comments (dropped: they name views the statement does not read).
_SQL_PARTS = re.compile(r"--[^\n]*|/\*.*?\*/|\$\$.*?\$\$|[eE]'(?:[^'\\]|\\.)*'|'[^']*'|\"[^\"]*\"", re.DOTALL)
#: A word of lower-cased code, or ``as <word>`` as one: a name given (a column's, an alias, a type), never one read.
_WORD = re.compile(r'(?:as\s+"?)?[a-z_][a-z0-9_$]*')
#: ``create [or replace] [temp] view <name>`` in lower-cased code: a view a statement makes (a provider's one string
#: may make two).
_CREATE_VIEW = re.compile(r'create\s+(?:or\s+replace\s+)?(?:temp(?:orary)?\s+)?view\s+(?:if\s+not\s+exists\s+)?"?'
                          r'([a-z_][a-z0-9_$]*)')
#: Words of a query that lists the catalog (``SHOW TABLES``, ``information_schema.tables``...): it sees every view.
_CATALOG_WORDS: Final = frozenset({"show", "describe", "information_schema", "duckdb_views", "duckdb_tables",
                                   "duckdb_columns", "duckdb_dependencies", "pg_catalog", "sqlite_master", "pragma"})


def _code(sql: str) -> str:
    """``sql`` without its comments, lower-cased (DuckDB's names are case-insensitive)."""
    return _SQL_PARTS.sub(lambda m: m.group() if m.group()[0] in "'\"" else " ", sql).lower()


def _words(code: str) -> set[str]:
    """The words of ``code`` (:func:`_code`) that may name a view it reads: every one but the names it gives
    (``as requests``: a column). Those in strings and quoted names count: a view named and not read costs some
    time, one read and missed fails the statement."""
    return set(_WORD.findall(code))


def _made(code: str) -> tuple[str, ...]:
    """The views ``code`` (:func:`_code`) makes."""
    return tuple(m.group(1) for m in _CREATE_VIEW.finditer(code)
                 if m.start() == 0 or not (code[m.start() - 1].isalnum() or code[m.start() - 1] in "_$"))


@dataclass(frozen=True)
class _Statement:
    sql: str
    #: The views it makes.
    names: tuple[str, ...]
    #: The statements before it that make a view it names (what it may read: a view is bound when it is made, so it
    #: reads only views made before it).
    reads: frozenset[int]


def _statements(stmts: Sequence[str]) -> list[_Statement]:
    """``stmts`` (in the order they run) with the views each makes and the earlier statements it reads."""
    out: list[_Statement] = []
    made: dict[str, int] = {}  # view -> the statement that made it last
    for i, sql in enumerate(stmts):
        code = _code(sql)
        names = _made(code)
        out.append(_Statement(sql, names, frozenset(made[w] for w in _words(code) if w in made)))
        made.update(dict.fromkeys(names, i))
    return out


def _wanted(views: Iterable[str] | None) -> frozenset[str] | None:
    if views is None:
        return None
    if isinstance(views, str):
        raise TypeError(f"views takes view names, not one string: views=[{views!r}]")
    return frozenset(v.lower() for v in views)


def _needed(stmts: Sequence[str], wanted: frozenset[str],
            always: Iterable[int]) -> tuple[frozenset[int], frozenset[str]]:
    """Of ``stmts`` (in the order they run), those that make the views ``wanted`` and the ``always`` ones, with every
    statement they read, transitively: (their indices, the views they make). ``ValueError`` for a name none makes."""
    scanned = _statements(stmts)
    made = {n: i for i, s in enumerate(scanned) for n in s.names}
    unknown = sorted(wanted - made.keys())
    if unknown:
        raise ValueError(f"the lake has no view {', '.join(unknown)}: its views are {', '.join(sorted(made))}")
    keep: set[int] = set()
    todo = [*(made[n] for n in wanted), *always]
    while todo:
        i = todo.pop()
        if i not in keep:
            keep.add(i)
            todo.extend(scanned[i].reads)
    return frozenset(keep), frozenset(n for i in keep for n in scanned[i].names)


def views_in(sql: str) -> frozenset[str]:
    """The lake's own views (:func:`views_sql`'s) that ``sql`` names outside its comments, for
    ``open_lake(config, views=views_in(sql))``; every one for a query that lists the catalog (``SHOW TABLES``,
    ``information_schema``, ``duckdb_views()``...). A word that is a view's name counts wherever it is (a column read,
    a string) but after ``AS`` (a name given): a view too many costs some time, one too few fails the query. The other
    areas' views (:data:`VIEW_PROVIDERS`) are made whatever the selection."""
    names, words = _core_view_names(), _words(_code(sql))
    return names if words & _CATALOG_WORDS or any(w.startswith("pg_") for w in words) else names & words


@functools.cache  # a constant of the package's view files (~1 ms to read and scan: once, not once a query)
def _core_view_names() -> frozenset[str]:
    return frozenset(n for stmt in views_sql("/") for n in _made(_code(stmt)))


def create_views(con: "duckdb.DuckDBPyConnection", config: Config, *, create: bool = True,
                 views: Iterable[str] | None = None) -> None:
    """Create the views of ``config``'s lake on a DuckDB connection, initialising the lake (its zero-row
    schema files brought up to date).

    ``create=False`` (what the commands that only read pass): no lake at ``[lake] path`` is
    :class:`NoLake` and nothing is written, instead of an empty lake made up on the spot.

    ``views``: only those views (names, e.g. :func:`views_in` of a query) and every view they read, transitively
    (a view's SQL names the views it reads), made in the usual order; binding the stacked views is most of the
    time an open takes (``requests`` alone: about half of it). The other areas' views (:data:`VIEW_PROVIDERS`,
    over their own files) are always made; ``ValueError`` names the lake's views for a name none is. None: every
    view (what an analyst's session and ``costline lake views`` get). ``[lake] mode = "table"`` makes every view."""
    wanted = _wanted(views)
    if config.lake.mode == "table":  # Iceberg tables on object storage (docs/scale.md)
        from costline.tablelake import create_table_views

        return create_table_views(con, config)
    check_glob_free(config.lake.path)
    if not create:
        require_lake(config)
    Lake(config.lake.path).init()
    set_aside_odd_files(config.lake.path)  # one unreadable file would fail every query over its table
    from costline.pricing import hosting_schedule

    core = views_sql(config.lake.path, hosting=hosting_schedule(config.pricing),
                     open_gap_hours=config.pricing.hosting_open_gap_hours)
    provided = provided_views(config.lake.path)
    if wanted is None:
        keep, made = range(len(core)), frozenset(f"{t}_raw" for t in TABLES)
    else:  # the other areas' views are always made (with the lake views they read, should one read any)
        keep, made = _needed([*core, *provided], wanted, always=range(len(core), len(core) + len(provided)))
    for i, stmt in enumerate(core):
        if i in keep:
            con.execute(stmt)
    name_raw_sources(con, {t: RawSource(read_table_sql(config.lake.path, t), True) for t in TABLES
                           if f"{t}_raw" in made})
    for stmt in provided:
        con.execute(stmt)


def open_lake(config: Config, *, create: bool = True,
              views: Iterable[str] | None = None) -> "duckdb.DuckDBPyConnection":
    """An in-memory DuckDB connection with the lake's views. ``create=False``: no lake at ``[lake] path``
    is :class:`NoLake`, nothing created; ``views``: only those and the views they read (see :func:`create_views`).

    The connection keeps the Parquet footers it read (``parquet_metadata_cache``): every view is bound when it is
    created, and each binding of a view over the ``<table>_raw`` views read every file's footer again (seventeen
    views: ~5 s to open a lake of 1,200 small files, ~3 s with the cache). DuckDB checks a cached footer against the
    file's modification time, and the lake's files are only ever replaced by a rename (compaction's new files, a
    forget's rewrite), so a long-lived connection reads a changed file afresh."""
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET parquet_metadata_cache = true")
        create_views(con, config, create=create, views=views)
    except BaseException:
        con.close()
        raise
    return con


def write_views_db(config: Config, *, create: bool = True) -> Path:
    """Write ``<lake>/costline.duckdb`` holding only the views (they read the files live). ``create=False``:
    no lake at ``[lake] path`` is :class:`NoLake`, nothing written."""
    import duckdb

    path = Path(config.lake.path) / "costline.duckdb"
    check_glob_free(config.lake.path)  # before init: no stray folder named like a glob
    if not create:
        require_lake(config)
    Lake(config.lake.path).init()
    with atomic_path(path) as tmp:
        tmp.unlink(missing_ok=True)  # a stale one from a crashed write would be opened, not replaced
        con = duckdb.connect(str(tmp))
        try:
            create_views(con, config, create=create)
            con.execute("CHECKPOINT")
        finally:
            con.close()
    return path
