"""Exceptions of costline.dashboards::

    CostlineError
     └── DashboardError        the dashboard cannot be built, written or served
          └── ChartSqlError    a chart's SQL file is missing or names an unknown parameter
"""

from __future__ import annotations

from costline.errors import CostlineError

__all__ = ["DashboardError", "ChartSqlError"]


class DashboardError(CostlineError):
    """The dashboard cannot be built, written or served; the message says what to do."""


class ChartSqlError(DashboardError):
    """A chart's ``.sql`` file is missing or uses a ``{{parameter}}`` the dashboard does not know."""
