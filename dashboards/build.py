"""Lake → one self-contained HTML page: run each chart's SQL through DuckDB, embed rows, JS and SQL.

The page needs no network: Plotly's JavaScript comes from the ``plotly`` Python
package (``plotly.offline.get_plotlyjs()``) and is inlined with this package's
``dashboard.js`` and the rows of every chart (JSON). Each chart is queried on
its own: a view that does not exist yet (the nightly jobs' and alerts' views)
or an empty lake gives that chart a "no data yet" note, a failing query an
error note, and the rest of the page is drawn regardless.
"""

from __future__ import annotations

import datetime as dt
import decimal
import html
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from costline.config import Config
from costline.dashboards.charts import CHARTS, UNDATED_COUNT_SQL, Chart, chart_sql, marks_sql, raw_sql, since_sql
from costline.dashboards.errors import ChartSqlError, DashboardError
from costline.fsutil import atomic_write

if TYPE_CHECKING:  # pragma: no cover
    import duckdb

__all__ = ["ChartData", "bounded_sql", "window_start", "query_chart", "query_charts", "query_marks", "render_html", "build_dashboard", "build_page",
           "STATUS_OK", "STATUS_EMPTY", "STATUS_MISSING", "STATUS_ERROR"]

STATUS_OK = "ok"
#: The query ran and returned no rows.
STATUS_EMPTY = "empty"
#: A view or table the query reads does not exist (yet).
STATUS_MISSING = "missing"
#: The query failed otherwise (or returned unexpected columns).
STATUS_ERROR = "error"

_MISSING_NAME = re.compile(r"(?:Table|View|Table Function) with name (\S+) does not exist", re.I)


@dataclass(frozen=True)
class ChartData:
    """A chart's SQL and what it returned (or why it returned nothing)."""

    chart: Chart
    sql: str
    status: str
    columns: tuple[str, ...] = ()
    rows: tuple[tuple[Any, ...], ...] = ()
    message: str = ""
    #: A chart that draws at most ``options["max_facets"]`` facets: how many facets its query found in the
    #: window (only the top ``max_facets`` of them are in :attr:`rows`); None for the other charts.
    facets_total: int | None = None
    #: A chart with ``options["undated_sql"]`` (the cost charts): the lake's requests in no day (``ts`` NULL: a
    #: span time the processor could not use), which every chart leaves out, as ``{"requests": n, "cost_usd":
    #: finite USD}``; None for the other charts, or when they could not be counted.
    undated: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK


def _cell(value: Any) -> Any:
    """A DuckDB value as JSON: timestamps as ISO text (UTC, no zone), decimals as floats, NaN as null."""
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None).isoformat(timespec="seconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        value = float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_cell(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _cell(v) for k, v in value.items()}
    return str(value)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def bounded_sql(chart: Chart, config: Config, now: Callable[[], dt.datetime] | None = None) -> str:
    """The SQL the page runs for ``chart``: its own (:func:`~costline.dashboards.charts.chart_sql`), kept to the
    dashboard's window (``[dashboard] days``) where it does not keep to it itself, and, for a chart that draws at
    most ``options["max_facets"]`` facets, only the rows of the facets with the largest sum of ``options["rank"]``
    in the window, with their count (``facets_total``). Tables (the alerts) are not windowed: an alert still
    firing is shown however long ago it fired."""
    sql = chart_sql(chart, config, now)
    raw = raw_sql(chart)
    body = sql.strip().rstrip(";").strip()
    x = _ident(chart.x)
    if chart.kind != "table" and "{{since}}" not in raw and "{{lookups_since}}" not in raw:
        body = (f"SELECT * FROM (\n{body}\n) AS chart\n"
                f"WHERE chart.{x} >= {since_sql(config, now)}\nORDER BY ALL")
    o = chart.options
    if o.get("max_facets") and o.get("facet") and o.get("rank"):
        f, rank, top = _ident(o["facet"]), _ident(o["rank"]), int(o["max_facets"])
        body = (f"WITH chart AS (\n{body}\n), facets AS (\n"
                f"  SELECT {f} AS facet, count(*) OVER () AS facets_total,\n"
                f"         row_number() OVER (ORDER BY sum({rank}) DESC NULLS LAST, {f} NULLS FIRST) AS facet_rank\n"
                f"  FROM chart GROUP BY {f}\n)\n"
                f"SELECT chart.*, facets.facets_total\n"
                f"FROM chart JOIN facets ON chart.{f} IS NOT DISTINCT FROM facets.facet\n"
                f"WHERE facets.facet_rank <= {top}\nORDER BY chart.{f} NULLS FIRST, chart.{x}")
    return body + ";\n"


def query_chart(con: "duckdb.DuckDBPyConnection", chart: Chart, config: Config,
                now: Callable[[], dt.datetime] | None = None) -> ChartData:
    """Run one chart's SQL (:func:`bounded_sql`); never raises for what the lake holds (status says what
    happened). ``now``: the build's clock, for the window."""
    import duckdb

    try:
        sql = bounded_sql(chart, config, now)
    except ChartSqlError as exc:
        return ChartData(chart, "", STATUS_ERROR, message=str(exc))
    facets_total: int | None = None
    try:
        cur = con.execute(sql)
        columns = tuple(d[0] for d in cur.description or ())
        rows = tuple(tuple(_cell(v) for v in row) for row in cur.fetchall())
        if chart.options.get("max_facets") and columns and columns[-1] == "facets_total":
            facets_total = int(rows[0][-1]) if rows else 0
            columns, rows = columns[:-1], tuple(row[:-1] for row in rows)
    except duckdb.CatalogException as exc:
        m = _MISSING_NAME.search(str(exc))
        what = f"the {m.group(1)} view" if m else "a view it reads"
        return ChartData(chart, sql, STATUS_MISSING,
                         message=f"No data yet: {what} is not in the lake yet; it comes from {chart.source}.")
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return ChartData(chart, sql, STATUS_ERROR, message=f"This chart's query failed: {first}")
    missing = [c for c in chart.columns if c not in columns]
    if missing:
        return ChartData(chart, sql, STATUS_ERROR, columns, (),
                         message=f"This chart's query returned no column {', '.join(missing)} "
                                 f"(it returned {', '.join(columns) or 'none'}): fix {chart.sql_file}.")
    undated = _undated(con) if chart.options.get("undated_sql") else None
    if not rows:
        message = f"No data yet: nothing from {chart.source} in the lake so far."
        if undated and undated["requests"]:
            message = (f"No dated data yet: {undated_text(undated)}. List them with: costline sql --max-rows 0 "
                       f"\"{chart.options['undated_sql']}\"")
        return ChartData(chart, sql, STATUS_EMPTY, columns, (), message=message, undated=undated)
    return ChartData(chart, sql, STATUS_OK, columns, rows, facets_total=facets_total, undated=undated)


def _undated(con: "duckdb.DuckDBPyConnection") -> dict[str, Any] | None:
    """The lake's requests with no usable time (:data:`~costline.dashboards.charts.UNDATED_COUNT_SQL`), or None
    when they cannot be counted (the chart itself is drawn regardless)."""
    import duckdb

    try:
        row = con.execute(UNDATED_COUNT_SQL).fetchone()
    except duckdb.Error:
        return None
    return {"requests": int(row[0] or 0), "cost_usd": _cell(row[1]) or 0.0} if row else None


def undated_text(undated: Mapping[str, Any]) -> str:
    """What :attr:`ChartData.undated` counts, in words (the page's note says the same)."""
    n = int(undated["requests"])
    return (f"{n} request{'' if n == 1 else 's'} costing ${float(undated['cost_usd']):,.4f} "
            f"{'is' if n == 1 else 'are'} in no day, left out of every chart: a span time the processor could not "
            f"use (a client clock more than [processor] span_time_max_ahead_s ahead of Kafka, a day by default, "
            f"or before 2000) is NULL, named ts: in data_quality")


def query_charts(con: "duckdb.DuckDBPyConnection", config: Config,
                 charts: Sequence[Chart] = CHARTS, now: Callable[[], dt.datetime] | None = None) -> list[ChartData]:
    """Run every chart's SQL on ``con`` (a connection with the lake's views); ``now``: the build's clock."""
    return [query_chart(con, chart, config, now) for chart in charts]


def window_start(con: "duckdb.DuckDBPyConnection", config: Config,
                 now: Callable[[], dt.datetime] | None = None) -> str | None:
    """The first day of the dashboard's window (ISO), or None when it cannot be told (no lake views)."""
    import duckdb

    try:
        row = con.execute(f"SELECT CAST({since_sql(config, now)} AS DATE)").fetchone()
    except duckdb.Error:
        return None
    return row[0].isoformat() if row and row[0] is not None else None


def query_marks(con: "duckdb.DuckDBPyConnection", charts: Sequence[Chart] = CHARTS) -> dict[str, list[dict[str, Any]]]:
    """Rows of the marks the charts name (``options["marks"]``); none when their view is missing."""
    import duckdb

    out: dict[str, list[dict[str, Any]]] = {}
    for name in dict.fromkeys(c.options.get("marks") for c in charts if c.options.get("marks")):
        try:
            cur = con.execute(marks_sql(name))
            cols = [d[0] for d in cur.description or ()]
            out[name] = [{c: _cell(v) for c, v in zip(cols, row)} for row in cur.fetchall()]
        except duckdb.Error:
            out[name] = []
    return out


def _asset(name: str) -> str:
    return resources.files("costline.dashboards").joinpath(name).read_text(encoding="utf-8")


def _plotly_js() -> str:
    try:
        from plotly.offline import get_plotlyjs
    except ImportError as exc:  # pragma: no cover - plotly is a dependency of costline
        raise DashboardError("the dashboard embeds Plotly's JavaScript from the plotly package, which is not "
                             "installed: pip install 'plotly>=5'") from exc
    return get_plotlyjs()


def _script_json(data: Any) -> str:
    """JSON safe inside a ``<script>`` element."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _section(data: ChartData) -> str:
    c = data.chart
    esc = html.escape
    note = "" if data.ok else esc(data.message)
    return f"""
<section class="chart" id="chart-{esc(c.name)}" data-chart="{esc(c.name)}" data-status="{esc(data.status)}">
  <h2>{esc(c.title)}</h2>
  <p class="desc">{esc(c.description)}</p>
  <div class="plot" id="plot-{esc(c.name)}"></div>
  <p class="more" id="more-{esc(c.name)}" hidden></p>
  <p class="caveat" id="caveat-{esc(c.name)}" hidden></p>
  <p class="nodata" id="nodata-{esc(c.name)}"{"" if note else " hidden"}>{note}</p>
  <details class="sql">
    <summary>SQL <span class="file">dashboards/{esc(c.sql_file)}</span>
      <button type="button" class="copy" data-copy="sql-{esc(c.name)}">Copy SQL</button></summary>
    <pre><code id="sql-{esc(c.name)}">{esc(data.sql)}</code></pre>
  </details>
</section>"""


def render_html(
    results: Sequence[ChartData],
    *,
    built_at: dt.datetime,
    lake: str,
    title: str = "costline",
    refresh_s: float | None = None,
    marks: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    window_days: int | None = None,
    window_since: str | None = None,
) -> str:
    """The whole page as one string (Plotly, dashboard.js, CSS and data inlined). ``window_days`` /
    ``window_since``: the window its queries kept to (``[dashboard] days``, its first day), which the page opens on."""
    if built_at.tzinfo is not None:
        built_at = built_at.astimezone(dt.UTC)
    payload = {
        "built_at": built_at.replace(tzinfo=None).isoformat(timespec="seconds"),
        "window": {"days": window_days, "since": window_since},
        "lake": lake,
        "refresh_s": refresh_s,
        "marks": {k: [dict(r) for r in v] for k, v in (marks or {}).items()},
        "charts": [
            {"name": r.chart.name, "title": r.chart.title, "kind": r.chart.kind, "x": r.chart.x,
             "options": r.chart.options, "status": r.status, "message": r.message,
             "columns": list(r.columns), "rows": [list(row) for row in r.rows], "facets_total": r.facets_total,
             "undated": r.undated}
            for r in results
        ],
    }
    page = _asset("page.html")
    esc = html.escape
    replacements = {
        "TITLE": esc(title),
        "BUILT_AT": esc(payload["built_at"]),
        "LAKE": esc(lake),
        "REFRESH": esc(f"auto-refresh every {refresh_s:g} s" if refresh_s else ""),
        "WINDOW": esc(f"queries keep to the {window_days} days since {window_since} ([dashboard] days)"
                      if window_days and window_since else ""),
        "SECTIONS": "".join(_section(r) for r in results),
        "DATA": _script_json(payload),
        "DASHBOARD_JS": _asset("dashboard.js"),
        "PLOTLY_JS": _plotly_js(),
    }
    # One pass, so nothing inserted (Plotly's bundle, the SQL) is ever scanned for placeholders.
    return re.sub(r"<!--@([A-Z_]+)@-->", lambda m: replacements[m.group(1)], page)


def _page_views(config: Config, now: Callable[[], dt.datetime]) -> frozenset[str]:
    """The lake's views the page's queries name (the charts', their marks', the window's, the undated count)."""
    from costline.lake import views_in

    sqls = [UNDATED_COUNT_SQL, since_sql(config, now)]
    for chart in CHARTS:
        try:
            sqls.append(bounded_sql(chart, config, now))
        except ChartSqlError:  # the chart's note says so; it runs nothing
            pass
        if chart.options.get("marks"):
            try:
                sqls.append(marks_sql(chart.options["marks"]))
            except ChartSqlError:  # query_marks draws none
                pass
    return frozenset().union(*map(views_in, sqls))


def build_page(config: Config, *, con: "duckdb.DuckDBPyConnection | None" = None,
               now: Callable[[], dt.datetime] | None = None, refresh_s: float | None = None) -> str:
    """Query ``config``'s lake (or ``con``, a connection with the lake's views) and render the page."""
    from costline.lake import open_lake

    now = now or (lambda: dt.datetime.now(dt.UTC))
    own = con is None
    connection = open_lake(config, views=_page_views(config, now)) if con is None else con
    try:
        results = query_charts(connection, config, now=now)
        marks = query_marks(connection)
        since = window_start(connection, config, now)
    finally:
        if own:
            connection.close()
    return render_html(results, built_at=now(), lake=str(Path(config.lake.path).resolve()),
                       title=config.dashboard.title, refresh_s=refresh_s, marks=marks,
                       window_days=int(config.dashboard.days), window_since=since)


def build_dashboard(config: Config, out: Path | str | None = None, *,
                    con: "duckdb.DuckDBPyConnection | None" = None,
                    now: Callable[[], dt.datetime] | None = None) -> Path:
    """Write the dashboard of ``config``'s lake to ``out`` (default ``[dashboard] out``); returns the path.

    The file is written atomically (temporary file + rename), so a browser or
    ``--serve`` never reads half a page.
    """
    path = Path(out if out is not None else config.dashboard.out)
    text = build_page(config, con=con, now=now)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise DashboardError(f"cannot write the dashboard to {path}: {exc}: choose another --out") from exc
    return path
