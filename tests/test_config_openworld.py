"""Config values from the open world that used to load wrong, or end in a traceback.

* a mistyped ``[[pricing.models]] tier`` (the tier vanished from the registry, calls filed under a made-up tier);
* ``[serving.backends] student_base_url`` / ``anthropic_base_url`` without a scheme (every call failed to connect
  and the student's requests escalated, quietly, to a paid tier);
* a ``COSTLINE_*`` variable set but empty (a compose / k8s template with an unset secret) cleared the file's key;
* a bad value set by a variable was blamed on the config file;
* durations and times past what ``datetime`` / ``time.sleep`` hold: OverflowError tracebacks;
* a file saved as UTF-8 with a BOM was "not valid TOML".

The expected bounds are worked out by hand: 100 years = 100 x 365.25 days = 36525 days = 876600 hours
= 3155760000 seconds; SQLite's INTEGER is 64-bit signed (ids 1 .. 2**63 - 1 = 9223372036854775807).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from costline.config import load_config
from costline.errors import ConfigError

BOM = b"\xef\xbb\xbf"

HAIKU = 'model = "claude-haiku-4-5"\ninput_per_mtok = 0.8\noutput_per_mtok = 4.0\n'
SONNET = 'model = "claude-sonnet-4-6"\ninput_per_mtok = 3.0\noutput_per_mtok = 15.0\n'
SLACK = '[alerts.slack]\ntoken = "xoxb-1111-2222-abcdefabcdef"\nchannel = "#llm-costs"\n'

# (config text, environment, what the error must say); the file is "costline.toml"
REFUSED = [
    pytest.param(f'[[pricing.models]]\n{HAIKU}tier = "budgett"\n', {},
                 "costline.toml: [[pricing.models]] #1 tier: must be one of student, budget, mid, upper, frontier; "
                 "got 'budgett'", id="tier-typo"),
    pytest.param(f'[[pricing.models]]\n{HAIKU}tier = "budget"\n[[pricing.models]]\n{SONNET}tier = "Mid"\n', {},
                 "[[pricing.models]] #2 tier: must be one of student, budget, mid, upper, frontier; got 'Mid'",
                 id="tier-case"),
    pytest.param('[serving.backends]\nstudent_base_url = "127.0.0.1:8000/v1"\n', {},
                 "[serving.backends] student_base_url: must be an http(s) URL with a host", id="student-no-scheme"),
    pytest.param('[serving.backends]\nstudent_base_url = "http:///v1"\n', {},
                 "[serving.backends] student_base_url: must be an http(s) URL with a host", id="student-no-host"),
    pytest.param('[serving.backends]\nstudent_base_url = "http://127.0.0.1:80a/v1"\n', {},
                 "[serving.backends] student_base_url: must be an http(s) URL with a host", id="student-bad-port"),
    # a tier's own URL is held to the same: "https:///v1" or "http://host:80a" failed every request it routed there
    pytest.param('[serving.tiers.budget]\napi = "openai"\nbase_url = "https:///v1"\nmodel = "m"\n', {},
                 "[serving.tiers.budget] base_url: must be an http(s) URL with a host", id="tier-no-host"),
    pytest.param('[serving.tiers.mid]\napi = "openai"\nbase_url = "http://10.0.0.5:80a/v1"\nmodel = "m"\n', {},
                 "[serving.tiers.mid] base_url: must be an http(s) URL with a host", id="tier-bad-port"),
    pytest.param('[serving.backends]\nanthropic_base_url = "api.anthropic.com"\n', {},
                 "[serving.backends] anthropic_base_url: must be an http(s) URL with a host", id="anthropic-no-scheme"),
    pytest.param("", {"COSTLINE_SERVING_BACKENDS_STUDENT_BASE_URL": "localhost:8000/v1"},
                 "environment: COSTLINE_SERVING_BACKENDS_STUDENT_BASE_URL sets [serving.backends] student_base_url: "
                 "must be an http(s) URL", id="student-url-env"),
    # an empty variable clears nothing
    pytest.param(SLACK, {"COSTLINE_ALERTS_SLACK_TOKEN": ""},
                 "environment: COSTLINE_ALERTS_SLACK_TOKEN: is set but empty: unset it to keep the file's value",
                 id="empty-slack-token"),
    pytest.param('[collector]\nbearer_token = "collector-secret-0123456789"\n', {"COSTLINE_COLLECTOR_BEARER_TOKEN": ""},
                 "environment: COSTLINE_COLLECTOR_BEARER_TOKEN: is set but empty", id="empty-bearer-token"),
    pytest.param("", {"COSTLINE_PRICING_STUDENT_PROVIDERS": ""},
                 "environment: COSTLINE_PRICING_STUDENT_PROVIDERS: is set but empty: unset it to keep the file's "
                 "value (or the default); an empty list is written []", id="empty-list"),
    pytest.param("", {"COSTLINE_PRICING_STUDENT_PROVIDERS": "  "},
                 "environment: COSTLINE_PRICING_STUDENT_PROVIDERS: is set but blank (only whitespace)",
                 id="blank-list"),
    pytest.param(SLACK, {"COSTLINE_ALERTS_SLACK_TOKEN": " \t"},
                 "environment: COSTLINE_ALERTS_SLACK_TOKEN: is set but blank (only whitespace)", id="blank-token"),
    pytest.param("", {"COSTLINE_ALERTS_STATE_PATH": ""},
                 "environment: COSTLINE_ALERTS_STATE_PATH: is set but empty", id="empty-optional-path"),
    pytest.param("", {"COSTLINE_LAKE_CATALOG_URI": ""},
                 "environment: COSTLINE_LAKE_CATALOG_URI: is set but empty", id="empty-optional-str"),
    # a bad value from a variable names the variable, not the file
    pytest.param("[serving.cache]\nthreshold = 0.93\n", {"COSTLINE_SERVING_CACHE_THRESHOLD": "95"},
                 "environment: COSTLINE_SERVING_CACHE_THRESHOLD sets [serving.cache] threshold: ", id="env-threshold"),
    pytest.param("[kafka]\nport = 9092\n", {"COSTLINE_KAFKA_PORT": "70000"},
                 "environment: COSTLINE_KAFKA_PORT sets [kafka] port: must be a TCP port (1-65535); got 70000",
                 id="env-port"),
    pytest.param("", {"COSTLINE_ALERTS_CACHE_HIT_RATE_DROP_DROP": "10"},
                 "environment: COSTLINE_ALERTS_CACHE_HIT_RATE_DROP_DROP sets [alerts.cache_hit_rate_drop] drop: ",
                 id="env-area-check"),
    pytest.param("", {"COSTLINE_SERVING_BACKENDS_MAX_RETRIES": "100"},
                 "environment: COSTLINE_SERVING_BACKENDS_MAX_RETRIES sets [serving.backends] max_retries: ",
                 id="env-section-check"),
    # durations and times that overflowed datetime / sleep
    pytest.param("", {"COSTLINE_DISTILL_WINDOW_DAYS": "1000000"},
                 "environment: COSTLINE_DISTILL_WINDOW_DAYS sets [distill] window_days: must be at most 36525 days "
                 "(100 years)", id="window-days"),
    pytest.param("[jobs]\nwindow_hours = 1e8\n", {},
                 "costline.toml: [jobs] window_hours: must be at most 876600 hours (100 years)", id="window-hours"),
    pytest.param("", {"COSTLINE_ALERTS_INTERVAL_S": "1e10"},
                 "environment: COSTLINE_ALERTS_INTERVAL_S sets [alerts] interval_s: must be at most 3155760000 seconds",
                 id="interval-s"),
    pytest.param("[processor]\nsession_timeout_ms = 4000000000000\n", {},
                 "[processor] session_timeout_ms: must be at most 3155760000000 milliseconds", id="ms"),
    pytest.param('[[pricing.hosting]]\nusd_per_hour = 2.74\nsince = "0001-01-01T00:00:00+01:00"\n', {},
                 "[[pricing.hosting]] #1 since: is out of range once taken to UTC", id="hosting-since-year-0"),
    pytest.param('[[pricing.hosting]]\nusd_per_hour = 2.74\nuntil = "9999-12-31T23:00:00-05:00"\n', {},
                 "[[pricing.hosting]] #1 until: is out of range once taken to UTC", id="hosting-until-year-10000"),
]


@pytest.mark.parametrize(("toml", "env", "needle"), REFUSED)
def test_refused_naming_the_key_or_variable(tmp_path: Path, toml: str, env: dict[str, str], needle: str) -> None:
    path = tmp_path / "costline.toml"
    path.write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env)
    assert needle.replace("costline.toml", str(path)) in str(info.value)


# (config text, environment, section.key, value): each saved with a BOM, and each at the edge of a check above
LOADS = [
    pytest.param('[lake]\npath = "costline-lake"\n', {}, "lake.path", Path("costline-lake"), id="bom"),
    pytest.param(f'[[pricing.models]]\n{HAIKU}tier = "student"\nprovider = "vllm"\n', {}, "pricing.models",
                 "student", id="tier-student"),
    pytest.param('[serving.backends]\nstudent_base_url = "http://[::1]:8000/v1"\n', {},
                 "serving.backends.student_base_url", "http://[::1]:8000/v1", id="ipv6-url"),
    pytest.param("", {"COSTLINE_SERVING_BACKENDS_ANTHROPIC_BASE_URL": "https://llm-proxy.internal"},
                 "serving.backends.anthropic_base_url", "https://llm-proxy.internal", id="anthropic-url"),
    pytest.param("", {"COSTLINE_COLLECTOR_GRPC_PORT": ""}, "collector.grpc_port", None, id="grpc-port-empty-is-off"),
    pytest.param("", {"COSTLINE_PRICING_STUDENT_PROVIDERS": "[]"}, "pricing.student_providers", (), id="empty-json"),
    pytest.param("[distill]\nwindow_days = 36525\n", {}, "distill.window_days", 36525.0, id="100-years"),
    pytest.param("", {"COSTLINE_SERVING_CACHE_TTL_S": "3155760000"}, "serving.cache.ttl_s", 3155760000.0,
                 id="100-years-s"),
]


@pytest.mark.parametrize(("toml", "env", "key", "want"), LOADS)
def test_a_bom_file_loads_and_the_edges_pass(tmp_path: Path, toml: str, env: dict[str, str], key: str,
                                             want: object) -> None:
    path = tmp_path / "costline.toml"
    path.write_bytes(BOM + toml.encode("utf-8"))
    got: object = load_config(path, env=env)
    for part in key.split("."):
        got = getattr(got, part)
    if key == "pricing.models":
        got = [m.tier for m in got]  # type: ignore[attr-defined]
        want = [want]
    assert got == want


# -- the command line -------------------------------------------------------------------------------------------
CLI = [
    pytest.param(["jobs", "cost-report", "--since", "-1000000d"], {},
                 "'-1000000d' is out of range: go back at most 36525d (100 years)", id="since-days"),
    pytest.param(["jobs", "cost-report", "--since", "-nand"], {},
                 "'-nand' is not a number of hours or days", id="since-nan"),
    # a double sign is no time back: "--5d" read as 5 days *ahead*, a window that ends before it starts
    pytest.param(["jobs", "cost-report", "--since", "--5d"], {},
                 "'--5d' is not a number of hours or days back", id="since-double-minus"),
    pytest.param(["distill", "roi", "--since", "-+24h"], {},
                 "'-+24h' is not a number of hours or days back", id="since-minus-plus"),
    pytest.param(["distill", "roi", "--since", "-infh"], {},
                 "'-infh' is out of range: go back at most 876600h (100 years)", id="since-inf"),
    pytest.param(["jobs", "drift", "--since", "0001-01-01T00:00:00+01:00"], {},
                 "is out of range once taken to UTC", id="since-year-0"),
    pytest.param(["distill", "roi", "--until", "9999-12-31T23:30:00-01:00"], {},
                 "is out of range once taken to UTC", id="until-year-10000"),
    pytest.param(["distill", "roi"], {"COSTLINE_DISTILL_WINDOW_DAYS": "1000000"},
                 "COSTLINE_DISTILL_WINDOW_DAYS sets [distill] window_days: must be at most 36525 days", id="window-days"),
    pytest.param(["jobs", "cost-report"], {"COSTLINE_JOBS_WINDOW_HOURS": "1e8"},
                 "COSTLINE_JOBS_WINDOW_HOURS sets [jobs] window_hours: must be at most 876600 hours", id="window-hours"),
    pytest.param(["alerts", "run"], {"COSTLINE_ALERTS_INTERVAL_S": "1e10"},
                 "COSTLINE_ALERTS_INTERVAL_S sets [alerts] interval_s: must be at most 3155760000 seconds",
                 id="alerts-interval"),
    pytest.param(["alerts", "silence", "cache_hit_rate_drop", "--for", "3000000d", "--reason", "maintenance"], {},
                 "'3000000d' is too long: at most 36525d (100 years)", id="silence-for"),
    pytest.param(["alerts", "silence", "*", "--for", "36526d", "--reason", "maintenance"], {},
                 "'36526d' is too long: at most 36525d (100 years)", id="silence-for-edge"),
    pytest.param(["alerts", "unsilence", "99999999999999999999999"], {},
                 "99999999999999999999999 is not in the range 1<=x<=9223372036854775807", id="unsilence-huge"),
    pytest.param(["alerts", "test-notify", "--timeout", "1"], {"COSTLINE_ALERTS_SLACK_TOKEN": ""},
                 "error: environment: COSTLINE_ALERTS_SLACK_TOKEN: is set but empty", id="test-notify-empty-token"),
]


@pytest.mark.parametrize(("argv", "env", "needle"), CLI)
def test_cli_refuses_with_a_message_not_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str], argv: list[str],
                                                    env: dict[str, str], needle: str) -> None:
    from costline.cli import main

    (tmp_path / "costline.toml").write_text(
        f'[lake]\npath = "{tmp_path / "lake"}"\n[alerts]\nstate_path = "{tmp_path / "state.sqlite"}"\n{SLACK}',
        encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # ./costline.toml
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for var in [v for v in os.environ if v.startswith("COSTLINE_")]:
        monkeypatch.delenv(var)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    with pytest.raises(SystemExit) as info:
        main(argv)
    out = capsys.readouterr()
    assert info.value.code == 2, out
    assert needle in " ".join((out.out + out.err).split()), out  # click wraps long lines
    assert "Traceback" not in out.err
