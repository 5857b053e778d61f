"""[[pricing.hosting]]: the student's dated hosting schedule, validated on load with errors naming the key."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from costline.config import HostingPeriod, PricingConfig, load_config
from costline.errors import ConfigError
from costline.pricing import hosting_schedule


def _load(tmp_path: Path, text: str):
    path = tmp_path / "costline.toml"
    path.write_text(text)
    return load_config(path, env={})


def test_schedule_is_loaded_and_priced_per_replica(tmp_path):
    cfg = _load(tmp_path, '[[pricing.hosting]]\nusd_per_hour = 2.5\nreplicas = 2\nsince = "2026-11-01T01:00:00+01:00"\n'
                          'until = "2026-12-01T00:00:00Z"\n\n[[pricing.hosting]]\nusd_per_hour = 1.0\n'
                          'since = "2026-12-01T00:00:00Z"\n')
    assert cfg.pricing.hosting == (HostingPeriod(2.5, 2, "2026-11-01T01:00:00+01:00", "2026-12-01T00:00:00Z"),
                                   HostingPeriod(1.0, 1, "2026-12-01T00:00:00Z", None))
    assert hosting_schedule(cfg.pricing) == [(datetime(2026, 11, 1), datetime(2026, 12, 1), 5.0),
                                             (datetime(2026, 12, 1), None, 1.0)]


def test_without_a_schedule_the_flat_rate_is_one_open_period():
    assert hosting_schedule(PricingConfig(student_usd_per_hour=2.74)) == [(None, None, 2.74)]
    assert hosting_schedule(PricingConfig(student_usd_per_hour=0.0)) == []


@pytest.mark.parametrize("body, key", [
    ('usd_per_hour = -1.0', "[[pricing.hosting]] #1 usd_per_hour"),
    ('usd_per_hour = 1.0\nreplicas = 0', "[[pricing.hosting]] #1 replicas"),
    ('usd_per_hour = 1.0\nsince = "yesterday"', "[[pricing.hosting]] #1 since"),
    ('usd_per_hour = 1.0\nsince = "2026-11-02T00:00:00Z"\nuntil = "2026-11-01T00:00:00Z"',
     "[[pricing.hosting]] #1 until"),
])
def test_bad_periods_name_the_key(tmp_path, body, key):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, f"[[pricing.hosting]]\n{body}\n")
    assert key in str(err.value)
