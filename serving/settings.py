"""The `[serving]` section of costline's config (see :mod:`costline.config`).

Plain frozen dataclasses with defaults, nothing else: :mod:`costline.config`
imports this module, so it must stay import-light.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ServingConfig"]


@dataclass(frozen=True)
class ServingConfig:
    """Settings of costline.serving (filled in by its issue)."""
