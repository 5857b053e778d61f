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
    ("serving.router.loop", "min_moved", "0", "0", "at least 1"),
    ("serving.router.loop", "judge_limit", "-1", "-1", "0 (never call a model) or more"),
    ("serving.router.loop", "keep", "0", "0", "at least 1"),
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
    # distillation: a warm-up longer than the run (or NaN steps), a query length or checkpoint count under what
    # means anything (the Trainer reads 0 or less as "keep them all"), a seed numpy refuses only once training has
    # begun (after the teacher was paid), an ROI that costs a run infinitely, a teacher tier no API has, a marker
    # found at every answer's end (every final answer empty)
    ("distill", "warmup_ratio", "nan", "nan", "must be in [0, 1)"),
    ("distill", "warmup_ratio", "inf", "inf", "must be in [0, 1)"),
    ("distill", "warmup_ratio", "-1.0", "-1", "must be in [0, 1)"),
    ("distill", "warmup_ratio", "1.0", "1", "must be in [0, 1)"),
    ("distill", "min_query_chars", "-1", "-1", "0 (keep every query) or more"),
    ("distill", "max_tokens", "-1", "-1", "from 1 to 1000000"),
    ("distill", "max_tokens", "0", "0", "from 1 to 1000000"),
    ("distill", "save_total_limit", "-1", "-1", "at least 1"),
    ("distill", "save_total_limit", "0", "0", "at least 1"),
    ("distill", "seed", "-1", "-1", "from 0 to 4294967295"),
    ("distill", "seed", "4294967296", "4294967296", "from 0 to 4294967295"),
    ("distill", "train_gpu_hours", "inf", "inf", "finite"),
    ("distill", "train_gpu_usd_per_hour", "inf", "inf", "finite"),
    ("distill", "train_gpu_usd_per_hour", "nan", "nan", "must not be negative"),
    ("distill", "train_gpu_usd_per_hour", "-1.0", "-1", "must not be negative"),
    ("distill", "teacher_tier", '"frontierr"', "frontierr", "one of budget, mid, upper, frontier"),
    ("distill", "teacher_tier", '"student"', "student", "one of budget, mid, upper, frontier"),
    ("distill", "final_answer_marker", '" "', " ", "the text the teacher writes before its final answer"),
    # routing: a negative length is no length; names the router looks up when it is built (then first refused)
    ("serving.router.rules", "short_query_chars", "-1", "-1", "0 (no query counts as short) or more"),
    ("serving.router.rules", "default_tier", '"platinum"', "platinum", "one of student, budget, mid, upper, frontier"),
    ("serving.router.rules", "default_tier", '"cache"', "cache", "one of student, budget, mid, upper, frontier"),
    ("serving.router", "policy", '"rulez"', "rulez", "must be one of rules, learned; got 'rulez'"),
    ("serving.router", "featurizer", '"tfidf"', "tfidf", "must be one of minilm, hashing; got 'tfidf'"),
    # the cache's replication queue: 0 or less is an unbounded queue.Queue (checked with replication off too)
    ("serving.cache", "replication_queue_size", "0", "0", "at least 1"),
    ("serving.cache", "replication_queue_size", "-1", "-1", "at least 1"),
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
    ("serving.router.loop", "min_moved"): ("1", "1"),
    ("serving.router.loop", "judge_limit"): ("0", "0"),
    ("serving.router.loop", "keep"): ("1", "1"),
    ("serving.standin", "latency_scale"): ("0.0", "0"),
    ("serving.standin", "min_cache_tokens"): ("0", "0"),
    ("serving.standin", "cache_ttl_s"): ("1", "1"),
    ("serving.standin", "retry_after_ms"): ("0", "0"),
    ("serving.standin", "batch_delay_s"): ("0", "0"),
    ("serving.backends", "max_retries"): ("10", "10"),
    ("serving.backends", "max_tokens"): ("1000000", "1000000"),
    ("distill", "warmup_ratio"): ("0.0", "0"),
    ("distill", "min_query_chars"): ("0", "0"),
    ("distill", "max_tokens"): ("1", "1"),
    ("distill", "save_total_limit"): ("1", "1"),
    ("distill", "seed"): ("4294967295", "4294967295"),
    ("distill", "train_gpu_hours"): ("0.0", "0"),
    ("distill", "train_gpu_usd_per_hour"): ("0.0", "0"),
    ("distill", "teacher_tier"): ('"budget"', "budget"),
    ("distill", "final_answer_marker"): ('"Answer:"', "Answer:"),
    ("serving.router.rules", "short_query_chars"): ("0", "0"),
    ("serving.router.rules", "default_tier"): ('"student"', "student"),
    ("serving.router", "policy"): ('"learned"', "learned"),
    ("serving.router", "featurizer"): ('"hashing"', "hashing"),
    ("serving.cache", "replication_queue_size"): ("1", "1"),
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
