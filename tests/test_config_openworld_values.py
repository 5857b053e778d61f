"""Numbers from outside the code (a config file, an environment variable) that load and then misbehave: a timeout
of 0, -1, nan or inf, a tolerance written in percent, a Slack webhook pasted with a space, a list given as JSON.
Each is refused when the config loads, naming the key (or variable) and what to do; the values that mean
something (a 0 that is documented) still load."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from costline.config import load_config
from costline.errors import ConfigError
from costline.validate import Section

WEBHOOK = "https://hooks.slack.com/services/T0AAAA/B0BBBB/s3cr3tWebhookTokenXYZ123"


def load(tmp_path: Path, toml: str = "", env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    path = tmp_path / "costline.toml"
    path.write_text(toml, encoding="utf-8")
    return load_config(path, env=env or {})


def refused(tmp_path: Path, toml: str = "", env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, toml, env)
    return str(info.value)


# -- the shared checks: infinity is no number of seconds, bytes or dollars ------------------------------------
@pytest.mark.parametrize("check", [
    lambda s: s.above_zero("t", math.inf, unit="seconds"),
    lambda s: s.not_negative("x", math.inf),
    lambda s: s.at_least("n", math.inf, 1),
    lambda s: s.above_zero("t", math.nan),
    lambda s: s.not_negative("x", math.nan),
])
def test_the_shared_checks_refuse_nan_and_infinity(check) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as info:
        check(Section("area"))
    assert info.value.key.startswith("[area] ")


def test_infinity_is_named_in_the_message_and_a_key_may_opt_in() -> None:
    with pytest.raises(ConfigError, match=r"\[area\] t: must be above 0 seconds, and a finite number; got inf$"):
        Section("area").above_zero("t", math.inf, unit="seconds")
    Section("area").above_zero("t", math.inf, allow_inf=True)
    Section("area").not_negative("x", math.inf, allow_inf=True)


def test_inf_is_refused_for_keys_checked_with_the_shared_checks(tmp_path: Path) -> None:
    assert "[collector] idle_timeout_s" in refused(tmp_path, "[collector]\nidle_timeout_s = inf\n")
    assert "[pricing] batch_multiplier" in refused(tmp_path, "[pricing]\nbatch_multiplier = inf\n")
    assert "[alerts.outbox] claim_s" in refused(tmp_path, "[alerts.outbox]\nclaim_s = inf\n")


# -- timeouts and intervals -------------------------------------------------------------------------------
BAD_SECONDS = ["0", "-1", "nan", "inf"]


@pytest.mark.parametrize("value", BAD_SECONDS)
@pytest.mark.parametrize(("var", "key"), [
    ("COSTLINE_COLLECTOR_PRODUCE_TIMEOUT_S", "[collector] produce_timeout_s"),
    ("COSTLINE_KAFKA_START_TIMEOUT_S", "[kafka] start_timeout_s"),
    ("COSTLINE_LAKE_OUTAGE_RETRY_S", "[lake] outage_retry_s"),  # local mode too: not first when the lake moves
    ("COSTLINE_JOBS_TEACHER_TIMEOUT_S", "[jobs.teacher] timeout_s"),
    ("COSTLINE_JOBS_TEACHER_BATCH_TIMEOUT_S", "[jobs.teacher] batch_timeout_s"),
    ("COSTLINE_JOBS_POLL_S", "[jobs] poll_s"),
    ("COSTLINE_SERVING_CACHE_REPLICATION_SNAPSHOT_MAX_AGE_S", "[serving.cache] replication_snapshot_max_age_s"),
])
def test_a_duration_must_be_a_finite_number_above_zero(tmp_path: Path, var: str, key: str, value: str) -> None:
    message = refused(tmp_path, env={var: value})
    assert key in message and "finite number of seconds above 0" in message


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
@pytest.mark.parametrize(("var", "key"), [
    ("COSTLINE_JOBS_TEACHER_POLL_INTERVAL_S", "[jobs.teacher] poll_interval_s"),
    ("COSTLINE_SERVING_CACHE_REPLICATION_SNAPSHOT_INTERVAL_S", "[serving.cache] replication_snapshot_interval_s"),
    ("COSTLINE_SERVING_CACHE_EMBED_BATCH_WAIT_MS", "[serving.cache] embed_batch_wait_ms"),
])
def test_a_duration_where_zero_means_something_refuses_negative_nan_and_inf(tmp_path: Path, var: str, key: str,
                                                                               value: str) -> None:
    assert key in refused(tmp_path, env={var: value})


def test_the_documented_zeros_still_load(tmp_path: Path) -> None:
    cfg = load(tmp_path, "[jobs.teacher]\npoll_interval_s = 0.0\n[serving.cache]\nembed_batch_wait_ms = 0.0\n"
                         "replication_snapshot_interval_s = 0\n")
    assert cfg.jobs.teacher.poll_interval_s == 0.0  # poll again at once (a local stand-in)
    assert cfg.serving.cache.embed_batch_wait_ms == 0.0  # batch only what is already queued
    assert cfg.serving.cache.replication_snapshot_interval_s == 0  # a snapshot only at shutdown


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "1.5"])
def test_min_adequacy_is_a_probability(tmp_path: Path, value: str) -> None:
    assert "[serving.router] min_adequacy: must be in (0, 1]" in refused(
        tmp_path, env={"COSTLINE_SERVING_ROUTER_MIN_ADEQUACY": value})


def test_the_defaults_load(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    assert cfg.collector.produce_timeout_s == 3.0 and cfg.jobs.drift.max_gap == 0.15


# -- drift and shadow tolerances are fractions ----------------------------------------------------------------
@pytest.mark.parametrize(("toml", "needle"), [
    ("[jobs.drift]\nmax_gap = 15\n", "[jobs.drift] max_gap: must be in [0, 1] (a fraction: 0.15 = 15 points); got 15"),
    ("[jobs.drift]\nmax_gap = nan\n", "[jobs.drift] max_gap: must be in [0, 1]"),
    ("[jobs.drift]\nmax_gap = -0.1\n", "[jobs.drift] max_gap: must be in [0, 1]"),
    ("[jobs.drift.thresholds]\nsentiment = 8\n", "[jobs.drift.thresholds] sentiment: must be in [0, 1] (a fraction"),
    ("[jobs.drift.thresholds]\nsentiment = nan\n", "[jobs.drift.thresholds] sentiment"),
    ("[jobs.drift]\nmax_gap_increase = 5\n", "[jobs.drift] max_gap_increase: must be in [0, 1]"),
    ("[jobs.drift]\nmin_increase = inf\n", "[jobs.drift] min_increase: must be in [0, 1]"),
    ("[jobs.drift]\npsi_threshold = 20\n", "[jobs.drift] psi_threshold: must be in (0, 1]"),
    ("[jobs.drift]\npsi_threshold = 0\n", "[jobs.drift] psi_threshold"),
    ("[jobs.drift]\nks_min_statistic = 10\n", "[jobs.drift] ks_min_statistic: must be in [0, 1]"),
    ("[jobs.shadow]\nmin_rate = 85\n", "[jobs.shadow] min_rate: must be in [0, 1] (a fraction"),
    ("[jobs.shadow]\ndrop = 5\n", "[jobs.shadow] drop: must be in [0, 1] (a fraction: 0.05 = 5 points)"),
    ("[jobs.shadow]\ndrop = nan\n", "[jobs.shadow] drop"),
    ("[jobs.shadow]\nalpha = 0\n", "[jobs.shadow] alpha: must be between 0 and 1, both excluded"),
    ("[jobs.shadow]\nalpha = 1\n", "[jobs.shadow] alpha"),
    ("[jobs.shadow]\nalpha = nan\n", "[jobs.shadow] alpha"),
    ("[alerts.cost_per_success_rise]\nrise_pct = -5\n", "[alerts.cost_per_success_rise] rise_pct: must be a finite "
                                                         "percentage, not negative (25 = 25 %"),
    ("[alerts.cost_per_success_rise]\nrise_pct = nan\n", "[alerts.cost_per_success_rise] rise_pct"),
    ("[alerts.cost_per_success_rise]\nresolve_pct = inf\n", "[alerts.cost_per_success_rise] resolve_pct"),
    ("[alerts.cost_per_success_rise]\nresolve_pct = -1\n", "[alerts.cost_per_success_rise] resolve_pct"),
])
def test_a_tolerance_in_the_wrong_unit_or_nan_is_refused(tmp_path: Path, toml: str, needle: str) -> None:
    assert needle in refused(tmp_path, toml)


@pytest.mark.parametrize("toml", ["[jobs.drift]\nmax_gap = 15\n", "[jobs.drift.thresholds]\nsentiment = 8\n",
                                  "[jobs.drift]\nmax_gap = nan\n"])
def test_a_tolerance_never_loads_to_hide_a_real_drift(tmp_path: Path, toml: str) -> None:
    """The reviewer's case: a student wrong on half the sample (gap 0.5, by hand) was never flagged with these."""
    from costline.jobs.drift import SubtypeScores, assess_subtypes

    try:
        cfg = load(tmp_path, toml)
    except ConfigError:
        return  # refused on load, naming the key: the fix
    [a] = assess_subtypes({"sentiment": SubtypeScores.of([1.0] * 100 + [0.0] * 100, 1.0)}, cfg.jobs.drift)
    assert a.flagged, f"loaded, and a gap of {a.gap:.2f} went unflagged at threshold {a.threshold}"


def test_edge_values_of_the_tolerances_load(tmp_path: Path) -> None:
    cfg = load(tmp_path, "[jobs.drift]\nmax_gap = 0\nmin_increase = 0\nks_min_statistic = 1\npsi_threshold = 1\n"
                         "[jobs.shadow]\nmin_rate = 0\ndrop = 1\nalpha = 0.5\n"
                         "[alerts.cost_per_success_rise]\nrise_pct = 0\nresolve_pct = 0\n")
    assert cfg.jobs.shadow.min_rate == 0 and cfg.alerts.cost_per_success_rise.rise_pct == 0


# -- the Slack webhook URL: checked on load, never shown whole ------------------------------------------------
@pytest.mark.parametrize("url", [" " + WEBHOOK, WEBHOOK + "\n", "hooks.slack.com/services/T0AAAA/B0BBBB/s3cr3tWebhook",
                                 WEBHOOK.replace("/B0BBBB", " /B0BBBB"), "https:///services/T0AAAA/B0BBBB/s3cr3t"])
def test_a_bad_webhook_url_is_refused_on_load_masked(tmp_path: Path, url: str) -> None:
    for env in ({"COSTLINE_ALERTS_SLACK_WEBHOOK_URL": url}, {}):
        toml = "" if env else f"[alerts.slack]\nwebhook_url = {json.dumps(url)}\n"
        message = refused(tmp_path, toml, env)
        assert "[alerts.slack] webhook_url" in message
        assert "s3cr3t" not in message and url.strip()[:-4] not in message
        assert "(masked)" in message


def test_a_good_webhook_url_loads(tmp_path: Path) -> None:
    cfg = load(tmp_path, env={"COSTLINE_ALERTS_SLACK_WEBHOOK_URL": WEBHOOK})
    assert cfg.alerts.slack.webhook_url == WEBHOOK
    assert load(tmp_path, env={"COSTLINE_ALERTS_SLACK_WEBHOOK_URL": "http://127.0.0.1:8765/hook"}).alerts.slack


def test_the_webhook_notifier_never_puts_the_url_in_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from costline.alerts import notify
    from costline.alerts.errors import NotifierError
    from costline.alerts.notify import SlackWebhookNotifier

    with pytest.raises(NotifierError) as info:
        SlackWebhookNotifier(" " + WEBHOOK, client=object())
    assert "s3cr3t" not in str(info.value) and "****Z123" in str(info.value)

    class Failing:
        def send(self, **_: object) -> None:
            raise ValueError(f"cannot post to {WEBHOOK}: URL can't contain control characters. "
                             f"'{WEBHOOK.split('.com', 1)[1]}'")

    class Message:
        op, payload = "post", {}

    monkeypatch.setattr(notify, "slack_payload", lambda payload: ("text", None))
    result = SlackWebhookNotifier(WEBHOOK, client=Failing()).send(Message())  # type: ignore[arg-type]
    assert not result.ok and result.error and result.error.startswith("ValueError: cannot post to ****Z123")
    assert "s3cr3t" not in result.error and "T0AAAA" not in result.error


# -- lists from the environment: comma-separated or JSON -------------------------------------------------------
ORIGINS = "COSTLINE_SERVING_GATEWAY_ALLOWED_ORIGINS"


@pytest.mark.parametrize(("value", "expected"), [
    ('["https://a.com","https://b.com"]', ("https://a.com", "https://b.com")),
    (' [ "https://a.com", "https://b.com,x" ] ', ("https://a.com", "https://b.com,x")),
    ("[]", ()),
    ("https://a.com, https://b.com", ("https://a.com", "https://b.com")),  # the comma form still works
])
def test_an_env_list_may_be_json(tmp_path: Path, value: str, expected: tuple[str, ...]) -> None:
    assert load(tmp_path, env={ORIGINS: value}).serving.gateway.allowed_origins == expected


def test_an_ipv6_address_in_brackets_is_still_a_comma_list(tmp_path: Path) -> None:
    hosts = load(tmp_path, env={"COSTLINE_DASHBOARD_ALLOWED_HOSTS": "[fd00::1],costline.internal"}).dashboard
    assert hosts.allowed_hosts == ("[fd00::1]", "costline.internal")


@pytest.mark.parametrize(("value", "needle"), [
    ("[https://a.com, https://b.com]", "not valid JSON"),
    ('["https://a.com", 1]', "item 2 is a number: quote it"),
    ("['https://a.com']", "double quotes"),
])
def test_a_bad_json_env_list_names_the_variable(tmp_path: Path, value: str, needle: str) -> None:
    message = refused(tmp_path, env={ORIGINS: value})
    assert f"{ORIGINS}: " in message and needle in message
