"""The ``costline`` commands of costline.sim (collected by :mod:`costline.cli` through :mod:`costline.areas`)."""

from __future__ import annotations

from costline.sim.demo import commands

__all__ = ["commands"]
