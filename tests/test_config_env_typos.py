"""A COSTLINE_* variable that looks like a config key but names none is not silently ignored: loading the config
logs a warning naming it and the closest real key (and says so when it names a table, which has no env form)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from costline.config import load_config

WARN = [
    # (variable, value, what the warning says)
    ("COSTLINE_SERVING_CACHE_TRESHOLD", "0.9",
     "COSTLINE_SERVING_CACHE_TRESHOLD names no config key and is ignored: did you mean "
     "COSTLINE_SERVING_CACHE_THRESHOLD ([serving.cache] threshold)?"),
    ("COSTLINE_SERVING__CACHE__TRESHOLD", "0.9",  # pydantic-settings' '__' and a typo
     "did you mean COSTLINE_SERVING_CACHE_THRESHOLD ([serving.cache] threshold)?"),
    ("COSTLINE_SERVING__CACHE__THRESHOLD", "0.9",
     "COSTLINE_SERVING__CACHE__THRESHOLD is ignored: costline joins section, table and key with a single '_': "
     "set COSTLINE_SERVING_CACHE_THRESHOLD ([serving.cache] threshold)"),
    ("COSTLINE_KAFKA__PORT", "19092", "set COSTLINE_KAFKA_PORT ([kafka] port)"),
    ("COSTLINE_KAFKAPORT", "19092", "did you mean COSTLINE_KAFKA_PORT ([kafka] port)?"),
    ("COSTLINE_LAKE_PTAH", "/data/lake", "did you mean COSTLINE_LAKE_PATH ([lake] path)?"),
    ("COSTLINE_PROCESSOR_BATCH_MAX_BYTE", "1048576",
     "did you mean COSTLINE_PROCESSOR_BATCH_MAX_BYTES ([processor] batch_max_bytes)?"),
    ("COSTLINE_ALERTS_SLACK_TOKN", "xoxb-1", "did you mean COSTLINE_ALERTS_SLACK_TOKEN ([alerts.slack] token)?"),
    ("costline_lake_path", "/data/lake",
     "costline_lake_path is ignored: environment variables are case-sensitive and costline reads "
     "COSTLINE_LAKE_PATH ([lake] path)"),
    ("COSTLINE_SERVING_NO_SUCH_THING_AT_ALL_ANYWHERE", "1", "COSTLINE_SERVING_NO_SUCH_THING_AT_ALL_ANYWHERE names no "
     "config key and is ignored"),
    # tables have no environment form
    ("COSTLINE_PRICING_MODELS", "claude-x", "COSTLINE_PRICING_MODELS is ignored: [pricing] models is an array of "
     "tables ([[pricing.models]]), which has no environment form; set it in the config file"),
    ("COSTLINE_PRICING_HOSTING", "2.74", "[pricing] hosting is an array of tables ([[pricing.hosting]])"),
    ("COSTLINE_SERVING_CACHE_NAMESPACE_THRESHOLDS", "acme=0.9", "COSTLINE_SERVING_CACHE_NAMESPACE_THRESHOLDS is "
     "ignored: [serving.cache] namespace_thresholds is a table of key = value, which has no environment form"),
    ("COSTLINE_SERVING__CACHE__NAMESPACE_THRESHOLDS", "acme=0.9", "[serving.cache] namespace_thresholds is a table"),
    ("COSTLINE_SERVING_CACHE", "on", "COSTLINE_SERVING_CACHE is ignored: [serving.cache] is a table, which has no "
     "environment form; set its keys one by one (e.g. COSTLINE_SERVING_CACHE_"),
    ("COSTLINE_KAFKA", "localhost:9092", "[kafka] is a table"),
]

QUIET = [
    # real keys
    ("COSTLINE_SERVING_CACHE_THRESHOLD", "0.9"),
    ("COSTLINE_KAFKA_PORT", "19092"),
    ("COSTLINE_PROCESSOR_BATCH_MAX_BYTES", "1048576"),
    ("COSTLINE_SERVING_TIERS_MID_API", "openai"),
    # COSTLINE_* names the codebase reads that are no config keys
    ("COSTLINE_CONFIG", ""),
    ("COSTLINE_REQUIRE_EXTRAS", "0"),
    ("COSTLINE_CHROMIUM", "/usr/bin/chromium"),
    ("COSTLINE_PYTHON", "/usr/bin/python3"),
    ("COSTLINE_STUDENT_API_KEY", "sk-v"),  # [serving.backends] student_api_key_env's default
    # not shaped like a key at all: another tool's variable, left alone
    ("COSTLINE_BUILD_ID", "42"),
    ("COSTLINE_", "x"),
    ("NOT_COSTLINE_KAFKA_PROT", "1"),
]


def _warnings(caplog: pytest.LogCaptureFixture, env: dict[str, str], path: Path | None = None) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="costline.config"):
        load_config(path, env=env)
    return [r.getMessage() for r in caplog.records if r.name == "costline.config"]


@pytest.mark.parametrize(("name", "value", "says"), WARN, ids=[w[0] for w in WARN])
def test_a_misspelled_or_table_variable_is_warned_about(caplog: pytest.LogCaptureFixture, name: str, value: str,
                                                        says: str) -> None:
    got = _warnings(caplog, {name: value})
    assert len(got) == 1 and says in got[0], got
    assert name in got[0]


@pytest.mark.parametrize(("name", "value"), QUIET, ids=[q[0] or "empty" for q in QUIET])
def test_keys_and_other_costline_variables_are_not_warned_about(caplog: pytest.LogCaptureFixture, name: str,
                                                                value: str) -> None:
    assert _warnings(caplog, {name: value}) == []


def test_a_variable_an_env_key_names_is_not_warned_about(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    """`*_env` keys name variables (API keys, the replication secret): those are read, not typos."""
    toml = tmp_path / "costline.toml"
    toml.write_text('[serving.cache]\nreplication_topic = "costline_cache"\n'
                    'replication_secret_env = "COSTLINE_SERVING_CACHE_SECRET"\n')
    env = {"COSTLINE_SERVING_CACHE_SECRET": "s3cret"}
    assert _warnings(caplog, env, toml) == []
    assert len(_warnings(caplog, env)) == 1  # without the key naming it, it looks like a typo


def test_each_variable_gets_its_own_warning_and_the_value_is_still_the_default(
        caplog: pytest.LogCaptureFixture) -> None:
    env = {"COSTLINE_SERVING_CACHE_TRESHOLD": "0.5", "COSTLINE_KAFKA_PROT": "1", "COSTLINE_LAKE_PATH": "/x"}
    got = _warnings(caplog, env)
    assert [g.split()[0] for g in got] == ["COSTLINE_KAFKA_PROT", "COSTLINE_SERVING_CACHE_TRESHOLD"]
    cfg = load_config(None, env=env)
    assert cfg.kafka.port == 9092 and str(cfg.lake.path) == "/x"


def test_the_warning_reaches_the_operator_on_stderr(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("COSTLINE_")}
    env.update({"COSTLINE_CONFIG": "", "COSTLINE_LAKE_PTAH": str(tmp_path)})
    res = subprocess.run([sys.executable, "-m", "costline", "config"], env=env, capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "COSTLINE_LAKE_PTAH names no config key and is ignored: did you mean COSTLINE_LAKE_PATH ([lake] path)?" \
        in res.stderr
    assert "PTAH" not in res.stdout
