"""The `[dashboard]` section of costline's config (see :mod:`costline.config`).

Plain frozen dataclasses with defaults, nothing else: :mod:`costline.config`
imports this module, so it must stay import-light.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DashboardConfig"]


@dataclass(frozen=True)
class DashboardConfig:
    """Settings of costline.dashboards (filled in by its issue)."""
