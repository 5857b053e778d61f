"""costline.validate.Section: the settings checks every area shares, each error naming its key."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from costline.errors import ConfigError
from costline.validate import Section

S = Section("area.sub")


@pytest.mark.parametrize(("check", "message"), [
    (lambda: S.at_least("n", 0, 1), "[area.sub] n: must be at least 1"),
    (lambda: S.at_least("n", 99, 100, "must be at least 100 (say why)"), "[area.sub] n: must be at least 100 (say why)"),
    (lambda: S.above_zero("t", 0), "[area.sub] t: must be above 0"),
    (lambda: S.above_zero("t", math.nan, unit="seconds"), "[area.sub] t: must be above 0 seconds"),
    (lambda: S.not_negative("x", -0.5), "[area.sub] x: must not be negative"),
    (lambda: S.not_negative("x", math.nan), "[area.sub] x: must not be negative"),
    (lambda: S.fraction("f", 1.5), "[area.sub] f: must be in [0, 1]"),
    (lambda: S.fraction("f", 1.0, open_high=True), "[area.sub] f: must be in [0, 1)"),
    (lambda: S.fraction("f", 0.0, open_low=True), "[area.sub] f: must be in (0, 1]"),
    (lambda: S.fraction("f", -0.1, what="must be between 0 and 1"), "[area.sub] f: must be between 0 and 1"),
    (lambda: S.one_of("mode", "c", ("a", "b")), "[area.sub] mode: must be one of a, b; got 'c'"),
    (lambda: S.port("port", 70000), "[area.sub] port: must be a TCP port (1-65535); got 70000"),
    (lambda: S.need(False, "k", "say what to do"), "[area.sub] k: say what to do"),
    (lambda: Section("", source="costline.toml").at_least("top", 0, 1), "top: must be at least 1"),
])
def test_a_failed_check_names_the_key_and_the_rule(check: Callable[[], None], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        check()
    assert f"{err.value.key}: {err.value.problem}" == message


def test_the_source_is_the_config_file() -> None:
    with pytest.raises(ConfigError, match=r"^costline.toml: \[kafka\] partitions: must be at least 1$"):
        Section("kafka", source="costline.toml").at_least("partitions", 0, 1)


@pytest.mark.parametrize("check", [
    lambda: S.at_least("n", 1, 1), lambda: S.above_zero("t", 1e-9), lambda: S.not_negative("x", 0),
    lambda: S.fraction("f", 0), lambda: S.fraction("f", 1), lambda: S.fraction("f", 0.5, open_low=True, open_high=True),
    lambda: S.one_of("mode", "a", ("a", "b")), lambda: S.port("port", 1), lambda: S.port("port", 65535),
])
def test_a_value_on_the_edge_of_the_rule_passes(check: Callable[[], None]) -> None:
    assert check() is None  # a ConfigError fails the test
