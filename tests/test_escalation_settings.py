"""``[serving.escalation]`` is checked when the config loads: a ``student_next`` that is no API tier (``"student"``
looped, the student paid again and again; a misspelt ``"Mid"`` silently ended every student escalation) is refused
naming the key and the tiers allowed, as are a ``min_confidence`` outside [0, 1] and a negative
``max_escalations``."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from costline.config import Config, load_config
from costline.errors import ConfigError
from costline.serving.errors import RoutingError
from costline.serving.registry import ModelRegistry
from costline.serving.settings import EscalationConfig


def _load(tmp_path: Path, text: str) -> Config:
    f = tmp_path / "costline.toml"
    f.write_text(text)
    return load_config(f, env={})


@pytest.mark.parametrize("value", ["student", "Mid", "nonsense", "", "cache"])
def test_a_student_next_that_is_no_api_tier_is_refused_at_load(tmp_path, value) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, f'[serving.escalation]\nstudent_next = "{value}"\n')
    msg = str(err.value)
    assert "[serving.escalation] student_next" in msg and "budget, mid, upper, frontier" in msg
    assert repr(value) in msg


@pytest.mark.parametrize("value, ladder", [
    ("budget", ["student", "budget", "mid", "upper"]),
    ("mid", ["student", "mid", "upper", "frontier"]),
    ("frontier", ["student", "frontier"]),
])
def test_an_api_tier_is_where_a_rejected_student_answer_goes(tmp_path, value, ladder) -> None:
    cfg = _load(tmp_path, f'[serving.escalation]\nstudent_next = "{value}"\nmax_escalations = 3\n')
    assert ModelRegistry.from_config(cfg).ladder("student", 3) == ladder


def test_a_registry_built_in_code_refuses_a_looping_student_next() -> None:
    registry = ModelRegistry.from_config(Config())
    tiers = {t.name: t for t in registry}
    with pytest.raises(RoutingError, match="student_next"):
        ModelRegistry(tiers, student_next="student")


def test_an_api_tier_the_registry_lacks_is_passed_over_as_the_ladder_passes_over_it(tmp_path, caplog) -> None:
    """Only budget and upper priced: mid (the default student_next) is passed over for upper, as budget's own
    ladder goes to upper; with nothing above it, the student is not escalated. Either way a warning says so."""
    priced = ('[[pricing.models]]\nmodel = "claude-haiku-4-5"\ntier = "budget"\ninput_per_mtok = 1.0\n'
              'output_per_mtok = 5.0\n[[pricing.models]]\nmodel = "claude-opus-4-8"\ntier = "upper"\n'
              'input_per_mtok = 5.0\noutput_per_mtok = 25.0\n')
    with caplog.at_level(logging.WARNING, logger="costline.serving.registry"):
        registry = ModelRegistry.from_config(_load(tmp_path, priced))
    assert registry.ladder("student", 3) == ["student", "upper"] and registry.ladder("budget", 3) == ["budget", "upper"]
    assert "student_next = 'mid'" in caplog.text and "'upper'" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="costline.serving.registry"):
        registry = ModelRegistry.from_config(_load(tmp_path, priced.replace('tier = "upper"', 'tier = "budget"')))
    assert registry.ladder("student", 3) == ["student"] and "not escalated" in caplog.text


@pytest.mark.parametrize("toml, key", [
    ("min_confidence = 1.5", "min_confidence"),
    ("min_confidence = -0.1", "min_confidence"),
    ("min_confidence = nan", "min_confidence"),
    ("max_escalations = -1", "max_escalations"),
])
def test_escalation_numbers_out_of_range_are_refused(tmp_path, toml, key) -> None:
    with pytest.raises(ConfigError, match=rf"\[serving.escalation\] {key}"):
        _load(tmp_path, f"[serving.escalation]\n{toml}\n")


def test_the_defaults_and_a_programmatic_config_pass() -> None:
    assert EscalationConfig().student_next == "mid"
    with pytest.raises(ConfigError):
        dataclasses.replace(EscalationConfig(), student_next="student")
