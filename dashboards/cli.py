"""``costline dashboard``: write the offline HTML dashboard, or serve it on localhost."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from costline.cli import pass_config
from costline.config import Config
from costline.dashboards.charts import CHARTS

__all__ = ["commands", "dashboard", "announce_dashboard"]


def announce_dashboard(config: Config, out: Path | str | None = None,
                       echo: Callable[[str], None] = click.echo) -> Path:
    """Write the dashboard and print its path and the ``--serve`` command (the end of ``costline demo``)."""
    from costline.dashboards.build import build_dashboard

    path = build_dashboard(config, out)
    conf = f" --config {config.source}" if config.source else ""
    lake = "" if config.source else f"COSTLINE_LAKE_PATH={config.lake.path} "
    echo(f"dashboard: {path.resolve()}")
    echo(f"  open it in a browser, or serve it with a refresh: {lake}costline{conf} dashboard --serve")
    return path


def _check_refresh(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """``--refresh``: a finite number of seconds, at least 1, as ``[dashboard] refresh_s`` must be."""
    from costline.dashboards.settings import refresh_problem

    problem = None if value is None else refresh_problem(value)
    if problem is not None:
        raise click.BadParameter(problem, ctx=ctx, param=param)
    return value


@click.command("dashboard")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="HTML file to write (default: [dashboard] out, costline-dashboard.html).")
@click.option("--serve", is_flag=True, help="Serve the page on localhost, rebuilt from the lake as it fills.")
@click.option("--host", default=None, help="--serve: address to listen on (default: [dashboard] host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="--serve: port (default: [dashboard] port, 8050).")
@click.option("--refresh", "refresh_s", type=float, default=None, callback=_check_refresh,
              help="--serve: seconds between reloads, at least 1 (default: [dashboard] refresh_s, 60).")
@click.option("--sql", "sql_chart", type=click.Choice([c.name for c in CHARTS]), default=None,
              help="Print one chart's SQL, ready for `costline sql` or duckdb, and exit (e.g. traffic_mix).")
@pass_config
def dashboard(config: Config, out: Path | None, serve: bool, host: str | None, port: int | None,
              refresh_s: float | None, sql_chart: str | None) -> None:
    """Render the lake as one self-contained HTML dashboard (works offline).

    Charts: cost per successful request per tier, cache hit rate per tenant
    with its 7-day average and alert band, traffic mix, student vs teacher,
    tier-match rate, the savings waterfall and alerts; each with its SQL.

    \b
    Example:
        costline dashboard --out costline-dashboard.html
        costline dashboard --serve --port 8050
        costline dashboard --sql cache_hit_rate | duckdb costline-lake/costline.duckdb
    """
    if sql_chart is not None:
        from costline.dashboards.charts import chart_by_name, chart_sql

        click.echo(chart_sql(chart_by_name(sql_chart), config), nl=False)
        return
    from costline.lake import require_lake

    require_lake(config)  # a mistyped [lake] path is an error, not a page of empty charts (nor a lake made up)
    if not serve:
        from costline.dashboards.build import build_dashboard

        path = build_dashboard(config, out)
        click.echo(f"wrote {path.resolve()}")
        return
    from costline.dashboards.serve import DashboardServer

    server = DashboardServer(config, host=host, port=port, refresh_s=refresh_s)
    click.echo(f"serving the dashboard of {Path(config.lake.path).resolve()} at {server.url} "
               f"(rebuilt every {server.refresh_s:g} s; Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped")
    finally:
        server.shutdown()


commands = [dashboard]
