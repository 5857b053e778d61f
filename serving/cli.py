"""The ``costline`` commands of costline.serving (collected by :mod:`costline.cli`)."""

from __future__ import annotations

from costline.serving.cache.cli import cache
from costline.serving.gateway.keys_cli import keys
from costline.serving.gateway.serve_cli import serve, standin
from costline.serving.routing.cli import route

__all__ = ["commands"]

commands = [cache, keys, route, serve, standin]
