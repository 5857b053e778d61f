"""UTC helpers: the one place costline turns datetimes into the lake's form and back.

The lake (Parquet ``TIMESTAMP`` columns, DuckDB's ``now()`` comparisons) stores time as **naive
UTC**; APIs and ``now=`` callables may hand over aware datetimes. Everything goes through these:

* :func:`utc_naive` — any datetime → naive UTC (a naive one is taken as UTC already);
* :func:`utc_aware` — any datetime → aware UTC (a naive one is taken as UTC);
* :func:`utc_now` / :func:`utc_now_naive` — the default ``now=`` callables.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["utc_aware", "utc_naive", "utc_now", "utc_now_naive"]


def utc_naive(ts: datetime) -> datetime:
    """``ts`` as naive UTC (how the lake stores time); a naive ``ts`` is returned as it is."""
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo else ts


def utc_aware(ts: datetime) -> datetime:
    """``ts`` as an aware UTC datetime; a naive ``ts`` is taken as UTC."""
    return ts.astimezone(UTC) if ts.tzinfo else ts.replace(tzinfo=UTC)


def utc_now() -> datetime:
    """The current time, aware UTC (a default ``now=`` callable)."""
    return datetime.now(UTC)


def utc_now_naive() -> datetime:
    """The current time, naive UTC (a default ``now=`` callable for code that compares with the lake)."""
    return datetime.now(UTC).replace(tzinfo=None)
