"""Fixtures of the tests that talk to the Slack stand-in: a manual clock, and the stand-in reading it.

Import them into a test module (``from slack_fixtures import clock, slack  # noqa: F401``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from costline.alerts.testing import ManualClock
from costline.sim.slack_standin import SlackStandIn


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def slack(clock: ManualClock) -> Iterator[SlackStandIn]:
    with SlackStandIn(now=clock.epoch) as standin:
        yield standin
