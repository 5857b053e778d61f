"""costline.dashboards — see the issues for what lands here."""

from __future__ import annotations

__all__: list[str] = []
