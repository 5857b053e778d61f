"""The ``costline`` commands of costline.serving (collected by :mod:`costline.cli`)."""

from __future__ import annotations

from costline.serving.cache_cli import cache
from costline.serving.keys_cli import keys
from costline.serving.route_cli import route
from costline.serving.serve_cli import serve, standin

__all__ = ["commands"]

commands = [cache, keys, route, serve, standin]
