"""costline.timeutil: the one UTC helper; expected values written out by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from costline.timeutil import utc_aware, utc_naive, utc_now, utc_now_naive

PARIS_WINTER = timezone(timedelta(hours=1))


@pytest.mark.parametrize(("given", "naive", "aware"), [
    (datetime(2026, 11, 8, 2, 0), datetime(2026, 11, 8, 2, 0), datetime(2026, 11, 8, 2, 0, tzinfo=UTC)),
    (datetime(2026, 11, 8, 2, 0, tzinfo=UTC), datetime(2026, 11, 8, 2, 0), datetime(2026, 11, 8, 2, 0, tzinfo=UTC)),
    (datetime(2026, 11, 8, 3, 30, tzinfo=PARIS_WINTER), datetime(2026, 11, 8, 2, 30),
     datetime(2026, 11, 8, 2, 30, tzinfo=UTC)),
])
def test_conversions(given: datetime, naive: datetime, aware: datetime) -> None:
    assert utc_naive(given) == naive and utc_naive(given).tzinfo is None
    assert utc_aware(given) == aware and utc_aware(given).utcoffset() == timedelta(0)


def test_now_helpers_are_utc() -> None:
    assert utc_now().utcoffset() == timedelta(0)
    assert utc_now_naive().tzinfo is None
    assert abs(utc_now().replace(tzinfo=None) - utc_now_naive()) < timedelta(minutes=5)
