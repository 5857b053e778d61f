"""The `[alerts]` section of costline's config (see :mod:`costline.config`).

Plain frozen dataclasses with defaults, nothing else: :mod:`costline.config`
imports this module, so it must stay import-light.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AlertsConfig"]


@dataclass(frozen=True)
class AlertsConfig:
    """Settings of costline.alerts (filled in by its issue)."""
