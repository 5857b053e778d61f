"""The `[dashboard]` section of costline's config (see :mod:`costline.config`).

Plain frozen dataclasses with defaults, nothing else: :mod:`costline.config`
imports this module, so it must stay import-light.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DashboardConfig", "validate", "MAX_DAYS", "MIN_REFRESH_S", "refresh_problem"]

#: The longest window ``[dashboard] days`` may ask for (ten years).
MAX_DAYS = 3660
#: The shortest refresh ``--serve`` takes (``[dashboard] refresh_s``, ``--refresh``): each one rebuilds the page
#: from the lake, and the page reloads itself that often.
MIN_REFRESH_S = 1.0


def refresh_problem(value: Any) -> str | None:
    """What is wrong with ``value`` as a refresh interval in seconds (None: nothing): it must be a finite number of
    at least :data:`MIN_REFRESH_S` (NaN, infinity or 1e-9 would be accepted by ``> 0`` checks, then break every
    page: its JSON has no NaN or infinity). The same check for the config, ``--refresh`` and ``DashboardServer``."""
    import math

    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return f"must be a number of seconds; got {value!r}"
    if isinstance(value, bool) or not math.isfinite(seconds) or seconds < MIN_REFRESH_S:
        return f"must be above 0 seconds: a finite number, at least {MIN_REFRESH_S:g} (e.g. 60); got {value!r}"
    return None


@dataclass(frozen=True)
class DashboardConfig:
    """Settings of ``costline dashboard`` (:mod:`costline.dashboards`)."""

    #: The HTML file ``costline dashboard`` writes (``--out`` wins).
    out: Path = Path("costline-dashboard.html")
    #: Where ``costline dashboard --serve`` listens (loopback only by default).
    host: str = "127.0.0.1"
    port: int = 8050
    #: Host names (the Host header, without port) the server answers besides localhost, 127.0.0.1
    #: and [::1]; anything else gets 421 (DNS rebinding). Needed to listen beyond loopback.
    allowed_hosts: tuple[str, ...] = ()
    #: ``--serve``: the page reloads itself, and the server rebuilds it from the lake, this often.
    refresh_s: float = 60.0
    #: The band drawn under each tenant's 7-day cache hit rate: the article's alert fires
    #: when the hourly hit rate falls more than this (0.10 = 10 points) under its average.
    cache_alert_band: float = 0.10
    #: Hours with fewer lookups than this are drawn but never marked as under the band (too few to tell).
    cache_alert_min_lookups: int = 5
    #: The window the page shows: the last ``days`` days up to the newest data (never past the day it is built).
    #: Its queries read only that much history (the cache hit-rate chart 7 days more, for its baseline), and
    #: the page opens on it; a rebuild stays as quick as the window is short, however long the lake's history.
    days: int = 35
    #: Shown in the page's title bar and heading.
    title: str = "costline"
    # -- --serve's limits (costline.netsec.PooledHTTPServer, as the collector's and the gateway's) ----------
    #: Connections answered at once (worker threads), and accepted ones waiting for a worker beyond
    #: those; past both a connection is answered 503 with Retry-After at once (no thread is started).
    max_workers: int = 8
    max_pending: int = 16
    #: Seconds a connection may sit idle before its request is in; then it is closed.
    idle_timeout_s: float = 15.0
    #: Request header bytes at most (431 past it).
    max_header_bytes: int = 32 * 1024


def validate(config: Any) -> None:
    """Check ``config.dashboard`` when the config loads; raises :class:`~costline.errors.ConfigError` naming the key."""
    from costline.validate import Section

    d, s = config.dashboard, Section("dashboard")
    s.need(0 <= d.port <= 65535, "port", f"must be a TCP port (1-65535, or 0 for any free one); got {d.port}")
    problem = refresh_problem(d.refresh_s)
    s.need(problem is None, "refresh_s", problem or "")
    s.fraction("cache_alert_band", d.cache_alert_band, open_low=True,
               what="must be in (0, 1] (a fraction: 0.10 = 10 points)")
    s.not_negative("cache_alert_min_lookups", d.cache_alert_min_lookups)
    s.need(isinstance(d.days, int) and not isinstance(d.days, bool) and 1 <= d.days <= MAX_DAYS, "days",
           f"must be a whole number of days from 1 to {MAX_DAYS} (the window the page shows, e.g. 35); "
           f"got {d.days!r}")
    from costline.netsec import validate_limits

    validate_limits("dashboard", d)


#: This area's config section, found by costline.areas: [dashboard] in costline.toml and
#: COSTLINE_DASHBOARD_* variables fill it, `config.dashboard` reads it.
SECTION = "dashboard"
SETTINGS = DashboardConfig
