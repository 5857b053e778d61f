"""The `[jobs]` section of costline's config (see :mod:`costline.config`).

Plain frozen dataclasses with defaults, nothing else: :mod:`costline.config`
imports this module, so it must stay import-light.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["JobsConfig"]


@dataclass(frozen=True)
class JobsConfig:
    """Settings of costline.jobs (filled in by its issue)."""
