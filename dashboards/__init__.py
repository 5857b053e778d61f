"""costline.dashboards: the offline HTML dashboard over the lake (``costline dashboard``).

* :data:`CHARTS` / :class:`Chart` — the charts, one ``.sql`` file each in this package;
* :func:`build_dashboard` — lake → one self-contained HTML file (Plotly inlined, no network);
* :func:`query_charts` / :func:`render_html` — the two halves of a build;
* :class:`DashboardServer` — ``costline dashboard --serve`` (localhost, rebuilt as the lake fills);
* :func:`announce_dashboard` — write it and print where (the end of ``costline demo``).

Importing this package has no side effects and imports nothing heavy:
:mod:`costline.config` imports :mod:`costline.dashboards.settings`, so the
public names below are loaded on first use.
"""

from __future__ import annotations

from costline.lazy import lazy_loader

__all__ = [
    "CHARTS",
    "Chart",
    "ChartData",
    "ChartSqlError",
    "DashboardConfig",
    "DashboardError",
    "DashboardServer",
    "announce_dashboard",
    "build_dashboard",
    "build_page",
    "chart_by_name",
    "chart_sql",
    "query_chart",
    "query_charts",
    "render_html",
]

_WHERE = {
    "CHARTS": "charts", "Chart": "charts", "chart_by_name": "charts", "chart_sql": "charts",
    "ChartData": "build", "build_dashboard": "build", "build_page": "build", "query_chart": "build",
    "query_charts": "build", "render_html": "build",
    "ChartSqlError": "errors", "DashboardError": "errors",
    "DashboardConfig": "settings",
    "DashboardServer": "serve",
    "announce_dashboard": "cli",
}

__getattr__, __dir__ = lazy_loader(__name__, _WHERE)
