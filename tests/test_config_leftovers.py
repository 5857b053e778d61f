"""Keys an earlier review found the loader still let through: each bad value is refused when the config loads, in
the file and as a ``COSTLINE_*`` variable (which wins over the file), with an error naming the key; the values
that mean something still load."""

from __future__ import annotations

from pathlib import Path

import pytest

from costline.config import load_config
from costline.errors import ConfigError


def load(tmp_path: Path, toml: str = "", env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    path = tmp_path / "costline.toml"
    path.write_text(toml, encoding="utf-8")
    return load_config(path, env=env or {})


def refused(tmp_path: Path, toml: str = "", env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, toml, env)
    return str(info.value)


# (section, key, a bad value as TOML writes it, the same as an environment variable's text, what the error says)
BAD = [
    # the processor's Kafka consumer: kafka-python refuses a heartbeat interval not below the session timeout
    ("processor", "session_timeout_ms", "0", "0", "above 0"),
    ("processor", "session_timeout_ms", "-5", "-5", "above 0"),
    ("processor", "heartbeat_interval_ms", "0", "0", "above 0"),
    ("processor", "heartbeat_interval_ms", "-1", "-1", "above 0"),
    ("processor", "heartbeat_interval_ms", "10000", "10000", "must be below [processor] session_timeout_ms (10000)"),
    ("processor", "heartbeat_interval_ms", "60000", "60000", "must be below [processor] session_timeout_ms (10000)"),
    # content capture: every message cut to nothing (or a negative slice: all but the last character)
    ("capture", "max_chars", "-1", "-1", "at least 1"),
    ("capture", "max_chars", "0", "0", "at least 1"),
    # the alert rules' counts: 0 or -1 judges (or, for dlq_growing, fires) with no data at all
    ("alerts.cache_hit_rate_drop", "min_lookups", "-1", "-1", "at least 1"),
    ("alerts.cache_hit_rate_drop", "min_lookups_7d", "-1", "-1", "at least 1"),
    ("alerts.rejected_attempts_rise", "min_attempts", "-1", "-1", "at least 1"),
    ("alerts.rejected_attempts_rise", "min_attempts_7d", "-1", "-1", "at least 1"),
    ("alerts.cost_per_success_rise", "min_successes", "-1", "-1", "at least 1"),
    ("alerts.cost_per_success_rise", "min_successes_7d", "-1", "-1", "at least 1"),
    ("alerts.student_drift", "min_n", "-1", "-1", "at least 1"),
    ("alerts.routing_tier_match_drop", "min_n", "-1", "-1", "at least 1"),
    ("alerts.routing_tier_match_drop", "baseline_runs", "-1", "-1", "at least 1"),
    ("alerts.dlq_growing", "min_new", "-1", "-1", "at least 1"),
    ("alerts.dlq_growing", "min_new", "0", "0", "at least 1"),
    # closed sets: a misspelt severity is no "critical"; a misspelt label merges every tenant into one group
    ("alerts.pipeline_silent", "severity", '"Critical"', "Critical", "must be one of info, warning, critical"),
    ("alerts.cache_hit_rate_drop", "severity", '"page"', "page", "must be one of info, warning, critical"),
    ("alerts", "group_by", '["rule", "tennant"]', "rule,tennant", "'tennant'"),
    # serving: an entry that never expires by accident, loop settings that train or promote on nothing, stand-in
    # numbers that make no sense, retries and token limits no API takes
    ("serving.cache", "ttl_s", "inf", "inf", "finite"),
    ("serving.router.loop", "min_labels", "-1", "-1", "at least 1"),
    ("serving.router.loop", "min_per_tier", "0", "0", "at least 1"),
    ("serving.router.loop", "eval_days", "nan", "nan", "above 0 days"),
    ("serving.router.loop", "train_days", "inf", "inf", "finite"),
    ("serving.router.loop", "gate", "1.5", "1.5", "must be in (0, 1]"),
    ("serving.router.loop", "gate", "0.0", "0", "must be in (0, 1]"),
    ("serving.router.loop", "min_moved", "-1", "-1", "at least 0"),
    ("serving.router.loop", "judge_limit", "-1", "-1", "0 (never call a model) or more"),
    ("serving.router.loop", "keep", "-1", "-1", "0 (keep no earlier policy) or more"),
    ("serving.standin", "latency_scale", "-1.0", "-1", "must not be negative"),
    ("serving.standin", "latency_scale", "nan", "nan", "must not be negative"),
    ("serving.standin", "min_cache_tokens", "-1", "-1", "at least 0"),
    ("serving.standin", "cache_ttl_s", "inf", "inf", "finite"),
    ("serving.standin", "retry_after_ms", "-1", "-1", "at least 0"),
    ("serving.standin", "batch_delay_s", "-1.0", "-1", "must not be negative"),
    ("serving.backends", "max_retries", "-1", "-1", "from 0 to 10"),
    ("serving.backends", "max_retries", "100", "100", "from 0 to 10"),
    ("serving.backends", "max_tokens", "0", "0", "from 1 to 1000000"),
    ("serving.backends", "max_tokens", "-1", "-1", "from 1 to 1000000"),
    ("serving.backends", "max_tokens", "10000000", "10000000", "from 1 to 1000000"),
]


# (section, key) -> a value that means something, as TOML and as an environment variable's text (the boundary
# next to the bad values, where there is one)
GOOD = {
    ("processor", "session_timeout_ms"): ("6000", "6000"),  # the tests' consumers: 6000 / 1000
    ("processor", "heartbeat_interval_ms"): ("9999", "9999"),
    ("capture", "max_chars"): ("1", "1"),
    ("alerts.cache_hit_rate_drop", "min_lookups"): ("1", "1"),
    ("alerts.cache_hit_rate_drop", "min_lookups_7d"): ("1", "1"),
    ("alerts.rejected_attempts_rise", "min_attempts"): ("1", "1"),
    ("alerts.rejected_attempts_rise", "min_attempts_7d"): ("1", "1"),
    ("alerts.cost_per_success_rise", "min_successes"): ("1", "1"),
    ("alerts.cost_per_success_rise", "min_successes_7d"): ("1", "1"),
    ("alerts.student_drift", "min_n"): ("1", "1"),
    ("alerts.routing_tier_match_drop", "min_n"): ("1", "1"),
    ("alerts.routing_tier_match_drop", "baseline_runs"): ("1", "1"),
    ("alerts.dlq_growing", "min_new"): ("1", "1"),
    ("alerts.pipeline_silent", "severity"): ('"warning"', "warning"),
    ("alerts.cache_hit_rate_drop", "severity"): ('"info"', "info"),
    ("alerts", "group_by"): ('["rule", "tenant", "tier", "subtype"]', "rule,tenant,tier,subtype"),
    ("serving.cache", "ttl_s"): ("0", "0"),
    ("serving.router.loop", "min_labels"): ("1", "1"),
    ("serving.router.loop", "min_per_tier"): ("1", "1"),
    ("serving.router.loop", "eval_days"): ("0.5", "0.5"),
    ("serving.router.loop", "train_days"): ("30", "30"),
    ("serving.router.loop", "gate"): ("1.0", "1"),
    ("serving.router.loop", "min_moved"): ("0", "0"),
    ("serving.router.loop", "judge_limit"): ("0", "0"),
    ("serving.router.loop", "keep"): ("0", "0"),
    ("serving.standin", "latency_scale"): ("0.0", "0"),
    ("serving.standin", "min_cache_tokens"): ("0", "0"),
    ("serving.standin", "cache_ttl_s"): ("1", "1"),
    ("serving.standin", "retry_after_ms"): ("0", "0"),
    ("serving.standin", "batch_delay_s"): ("0", "0"),
    ("serving.backends", "max_retries"): ("10", "10"),
    ("serving.backends", "max_tokens"): ("1000000", "1000000"),
}


def env_name(section: str, key: str) -> str:
    return "COSTLINE_" + f"{section}.{key}".replace(".", "_").upper()


@pytest.mark.parametrize(("section", "key", "toml", "text", "needle"), BAD)
def test_a_bad_value_in_the_file_is_refused_naming_the_key(tmp_path: Path, section: str, key: str, toml: str,
                                                           text: str, needle: str) -> None:
    message = refused(tmp_path, f"[{section}]\n{key} = {toml}\n")
    assert f"[{section}] {key}:" in message
    assert needle in message
    good, _ = GOOD[(section, key)]
    load(tmp_path, f"[{section}]\n{key} = {good}\n")  # the value next to it still loads


@pytest.mark.parametrize(("section", "key", "toml", "text", "needle"), BAD)
def test_a_bad_value_in_the_environment_is_refused_and_wins_over_the_file(
        tmp_path: Path, section: str, key: str, toml: str, text: str, needle: str) -> None:
    good_toml, good_text = GOOD[(section, key)]
    var = env_name(section, key)
    message = refused(tmp_path, f"[{section}]\n{key} = {good_toml}\n", {var: text})  # the file is fine
    assert f"[{section}] {key}:" in message
    assert needle in message
    load(tmp_path, f"[{section}]\n{key} = {toml}\n", {var: good_text})  # ...and a good variable wins over a bad file


def test_heartbeat_and_session_timeout_are_checked_together(tmp_path: Path) -> None:
    # a heartbeat above the default session timeout loads once the session timeout is raised over it
    cfg = load(tmp_path, "[processor]\nsession_timeout_ms = 45000\nheartbeat_interval_ms = 15000\n")
    assert (cfg.processor.session_timeout_ms, cfg.processor.heartbeat_interval_ms) == (45000, 15000)
    message = refused(tmp_path, "[processor]\nheartbeat_interval_ms = 3000\n",
                      {"COSTLINE_PROCESSOR_SESSION_TIMEOUT_MS": "3000"})
    assert "[processor] heartbeat_interval_ms: must be below [processor] session_timeout_ms (3000)" in message
