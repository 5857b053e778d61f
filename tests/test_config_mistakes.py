"""An operator's plausible config mistakes: each gives a ConfigError naming the key (or file) and what to
do, when the config loads, never a traceback and never a value silently accepted that misbehaves later."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from costline.config import load_config
from costline.errors import ConfigError


def write(tmp_path: Path, data: str | bytes) -> Path:
    path = tmp_path / "costline.toml"
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


# (what the operator wrote, the environment, what the error must say)
MISTAKES = [
    # the file itself
    (b'# caf\xe9 (saved as Latin-1)\n[kafka]\nport = 19092\n', {}, "not UTF-8"),
    (b'[kafka]\ntopic = "\xff"\n', {}, "line 2"),
    # an empty path is the current directory: the lake would be written wherever the command runs
    ("", {"COSTLINE_LAKE_PATH": ""}, "COSTLINE_LAKE_PATH: must not be empty"),
    ('[lake]\npath = ""\n', {}, "[lake] path: must not be empty"),
    ('[dashboard]\nout = ""\n', {}, "[dashboard] out: must not be empty"),
    # the cache's keys too, not first when a cache is built
    ('[serving.cache]\nthreshold = 1.5\n', {}, "[serving.cache] threshold: must be a cosine similarity in (0, 1]"),
    ("", {"COSTLINE_SERVING_CACHE_REPLICATION_TOPIC": "bad topic!"}, "[serving.cache] replication_topic"),
    # an area's keys are checked when the config loads (`costline config`, `jobs serve` at start),
    # not in the nightly job at 02:00
    ("[jobs.drift]\nalpha = 1.5\n", {}, "[jobs.drift] alpha: must be between 0 and 1"),
    ("", {"COSTLINE_JOBS_WINDOW_HOURS": "0"}, "[jobs] window_hours: must be above 0"),
    ('[jobs.drift.metrics]\nfaq = "bleu"\n', {}, "[jobs.drift.metrics] faq: must be exact, cosine or judge"),
    ("[jobs.teacher]\nconcurrency = 0\n", {}, "[jobs.teacher] concurrency: must be at least 1"),
    ("[distill]\neval_fraction = 0.5\n", {}, "[distill] eval_fraction: must be between 0.10 and 0.15"),
    # alerts: rates are fractions (0.10 = 10 points); 10 would never fire
    ("[alerts.cache_hit_rate_drop]\ndrop = 10\n", {}, "[alerts.cache_hit_rate_drop] drop: must be in [0, 1] (a fraction"),
    ("[alerts.routing_tier_match_drop]\nmin_rate = 85\n", {}, "[alerts.routing_tier_match_drop] min_rate"),
    ("[alerts.student_drift]\nmax_gap = 5\n", {}, "[alerts.student_drift] max_gap"),
    ("[alerts]\ninterval_s = 0\n", {}, "[alerts] interval_s: must be above 0"),
    ("", {"COSTLINE_ALERTS_REPEAT_INTERVAL_S": "-1"}, "[alerts] repeat_interval_s: must be above 0"),
    ('[alerts.pipeline_silent]\ninhibits = ["cache_hit_rate_dorp"]\n', {},
     "[alerts.pipeline_silent] inhibits: 'cache_hit_rate_dorp' is no rule"),
    ('[alerts.slack]\nbase_url = "slack.com/api"\n', {}, "[alerts.slack] base_url: must be an http(s) URL"),
    ("[alerts.slack]\ntimeout_s = 0\n", {}, "[alerts.slack] timeout_s: must be above 0"),
    # dashboard
    ("[dashboard]\nport = 80500\n", {}, "[dashboard] port: must be a TCP port"),
    ("[dashboard]\ncache_alert_band = 10\n", {}, "[dashboard] cache_alert_band: must be in (0, 1] (a fraction"),
    ("", {"COSTLINE_DASHBOARD_REFRESH_S": "0"}, "[dashboard] refresh_s: must be above 0"),
    # serving's listeners
    ("[serving.gateway]\nport = 87870\n", {}, "[serving.gateway] port: must be a TCP port"),
    ("", {"COSTLINE_SERVING_STANDIN_PORT": "-1"}, "[serving.standin] port: must be a TCP port"),
    ('[serving.backends]\nembeddings_base_url = "api.openai.com/v1"\n', {},
     "[serving.backends] embeddings_base_url: must be an http(s) URL"),
    ("[serving.gateway]\nconversations_max = 0\n", {}, "[serving.gateway] conversations_max: must be at least 1"),
]


@pytest.mark.parametrize(("toml", "env", "needle"), MISTAKES, ids=[m[2][:60] for m in MISTAKES])
def test_a_mistake_is_refused_naming_the_key(tmp_path: Path, toml: str | bytes, env: dict[str, str],
                                             needle: str) -> None:
    path = write(tmp_path, toml)
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env)
    assert needle in str(info.value)


def test_an_area_error_names_the_file_it_came_from(tmp_path: Path) -> None:
    path = write(tmp_path, "[jobs.drift]\nalpha = 1.5\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.source == str(path)


def test_the_file_is_named_once_in_a_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[kafka]\nport = \n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert message.count(str(path)) == 1 and "line 2" in message


def test_a_directory_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path, env={})


def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[kafka]\n")
    path.chmod(0)
    if os.geteuid() == 0 or os.access(path, os.R_OK):  # root reads any mode: a file the kernel will not read
        path = Path("/proc/self/mem")  # reading it from offset 0 is EIO, for root too
    with pytest.raises(ConfigError, match="cannot read it"):
        load_config(path, env={})


@pytest.mark.parametrize("name", [".", "nope.toml"])
def test_the_cli_says_what_is_wrong_with_the_file(tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from costline.cli import main

    monkeypatch.delenv("COSTLINE_CONFIG", raising=False)
    with pytest.raises(SystemExit) as info:
        main(["--config", str(tmp_path / name), "config"])
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / name}: ")


# (the command line an operator typed, the flag the usage error must name): exit 2, never a traceback
BAD_FLAGS = [
    (["lake", "compact", "--every", "-1"], "--every"),
    (["jobs", "runs", "--limit", "-5"], "--limit"),
    (["alerts", "history", "--limit", "0"], "--limit"),
    (["alerts", "run", "--interval", "0"], "--interval"),
    (["alerts", "test-notify", "--timeout", "-1"], "--timeout"),
    (["alerts", "slack-standin", "--port", "70000"], "--port"),
    (["collect", "--port", "70000"], "--port"),
    (["dashboard", "--serve", "--port", "70000"], "--port"),
    (["distill", "serve", "--port", "-1"], "--port"),
    (["route", "eval", "--min-adequacy", "2"], "--min-adequacy"),
    (["route", "eval", "--gate", "95"], "--gate"),
    (["demo", "--days", "0"], "--days"),
    (["demo", "--per-day", "-1"], "--per-day"),
    (["process", "--until-idle", "-1"], "--until-idle"),
]


@pytest.mark.parametrize(("argv", "flag"), BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_a_bad_flag_value_is_a_usage_error(tmp_path: Path, argv: list[str], flag: str,
                                           capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from costline.cli import main

    monkeypatch.setenv("COSTLINE_LAKE_PATH", str(tmp_path / "lake"))
    monkeypatch.delenv("COSTLINE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert f"Invalid value for '{flag}'" in err


def test_process_without_a_broker_says_to_start_one(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from kafka.errors import KafkaTimeoutError

    from costline.cli import main
    from costline.processors import processor

    def unreachable(*_args: object, **_kwargs: object) -> None:
        raise KafkaTimeoutError("Unable to bootstrap from 127.0.0.1:9")

    monkeypatch.setattr(processor.Processor, "run", unreachable)
    monkeypatch.setenv("COSTLINE_LAKE_PATH", str(tmp_path / "lake"))
    monkeypatch.setenv("COSTLINE_KAFKA_PORT", "9")
    monkeypatch.delenv("COSTLINE_CONFIG", raising=False)
    with pytest.raises(SystemExit) as info:
        main(["process", "--until-idle", "1"])
    err = capsys.readouterr().err
    assert info.value.code == 1 and "cannot reach Kafka at 127.0.0.1:9" in err and "costline kafka up" in err


@pytest.mark.parametrize("var", ["COSTLINE_KAFKA_SSL_CHECK_HOSTNAME", "COSTLINE_SERVING_GATEWAY_REQUIRE_AUTH"])
def test_an_empty_boolean_variable_is_an_error_not_false(var) -> None:
    """`COSTLINE_..._REQUIRE_AUTH=` (a variable left empty by a deploy template) must not turn a security check
    off: an empty value is neither true nor false."""
    with pytest.raises(ConfigError) as err:
        load_config(None, env={var: ""})
    assert var in str(err.value) and "true or false" in str(err.value)
    assert load_config(None, env={var: "false"}) is not None  # a value said in words still works
