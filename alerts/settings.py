"""The `[alerts]` section of costline's config (see :mod:`costline.config`).

Plain frozen dataclasses with defaults, nothing else: :mod:`costline.config`
imports this module, so it must stay import-light. Durations are seconds
(``*_s``); rates are fractions (0.10 = 10 points).

```toml
[alerts]
repeat_interval_s = 14400
group_by = ["rule"]

[alerts.slack]
token = "xoxb-..."          # or COSTLINE_ALERTS_SLACK_TOKEN; or webhook_url
channel = "#llm-costs"

[alerts.cache_hit_rate_drop]
baseline = "hour_of_day"    # or "rolling"
drop = 0.10
resolve_within = 0.05
min_lookups = 50
```
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = [
    "AlertsConfig",
    "SlackConfig",
    "OutboxConfig",
    "RuleSettings",
    "CacheHitRateDropSettings",
    "CostPerSuccessRiseSettings",
    "RejectedAttemptsRiseSettings",
    "StudentDriftSettings",
    "RoutingTierMatchDropSettings",
    "PipelineSilentSettings",
    "DlqGrowingSettings",
    "LakeUnreadableSettings",
    "CACHE_BASELINES",
    "SEVERITIES",
    "ALERT_LABELS",
    "RULE_LABELS",
    "validate",
]


@dataclass(frozen=True)
class SlackConfig:
    #: Bot token (``xoxb-...``, scope ``chat:write``; ``channels:history`` for the duplicate check).
    token: str | None = None
    #: Channel id or name the bot posts to (the bot must be a member).
    channel: str | None = None
    #: Incoming-webhook URL, used when no token is set (no threads, no updates).
    webhook_url: str | None = None
    #: Slack Web API base URL (point it at `costline alerts slack-standin` for local runs).
    base_url: str = "https://slack.com/api/"
    timeout_s: float = 10.0
    #: Before re-sending a message whose earlier attempt may have reached Slack, look for it in
    #: the channel (conversations.history / .replies, by its metadata): no duplicates.
    dedup_check: bool = True
    #: Pages (200 messages each) the duplicate check reads at most; past them it gives up, logs a
    #: warning and posts (a possible duplicate). 10 = the 2,000 messages around the attempt.
    dedup_max_pages: int = 10


@dataclass(frozen=True)
class OutboxConfig:
    #: First retry delay; doubles per attempt up to backoff_max_s. A 429's Retry-After is used instead when it is a
    #: finite number of seconds, clamped to [1, backoff_max_s] (an absurd one cannot hold every alert for days).
    backoff_initial_s: float = 5.0
    backoff_max_s: float = 300.0
    #: Sent rows older than this are pruned from the outbox.
    keep_sent_s: float = 7 * 86400.0
    #: A deliverer claims a row for this long: no other process sends it meanwhile; a claimer that died
    #: mid-send is taken over after it (checking Slack first). Must outlast a send and its duplicate check.
    claim_s: float = 120.0


@dataclass(frozen=True)
class RuleSettings:
    enabled: bool = True
    #: The condition must hold this long (pending) before the alert fires.
    for_s: float = 0.0
    severity: str = "warning"
    #: A firing alert with no observation for this long (its series vanished) resolves.
    no_data_resolve_s: float = 3 * 3600.0


#: ``[alerts.cache_hit_rate_drop] baseline``: what the hour's hit rate is compared with.
CACHE_BASELINES = ("hour_of_day", "rolling")

#: A rule's ``severity`` (the engine treats "critical" as the most severe of a group; "info" is the test message's).
SEVERITIES = ("info", "warning", "critical")

#: ``[alerts] group_by``: the labels an alert can carry ("rule" = its rule's name).
ALERT_LABELS = ("rule", "tenant", "tier", "subtype")

#: The label keys each rule's alerts carry (what ``costline alerts silence --label`` can match); the rules
#: without labels have one alert each.
RULE_LABELS: dict[str, tuple[str, ...]] = {
    "cache_hit_rate_drop": ("tenant",),
    "cost_per_success_rise": ("tier",),
    "rejected_attempts_rise": ("tier",),
    "student_drift": ("subtype",),
    "routing_tier_match_drop": ("tier", "subtype", "task_type"),  # subtype / task_type: a slice's alert
    "pipeline_silent": (),
    "dlq_growing": (),
    "lake_unreadable": (),
}

#: The rules' counts: lookups, attempts, successes, queries, runs or messages an observation needs.
_COUNT_KEYS = ("min_lookups", "min_lookups_7d", "min_attempts", "min_attempts_7d", "min_successes",
               "min_successes_7d", "min_n", "min_new", "baseline_runs")


@dataclass(frozen=True)
class CacheHitRateDropSettings(RuleSettings):
    #: "hour_of_day": the same hour of day over the 7 days before (``cache_hit_rate_7d.avg_7d_hour``), so a
    #: tenant whose nights are quieter and hit less is judged against its nights, not paged every night;
    #: "rolling": all 168 hours before, lookups-weighted (``avg_7d``: dominated by the busy hours).
    baseline: str = "hour_of_day"
    #: Fire when the last hour's hit rate is this far (fraction) under its 7-day average...
    drop: float = 0.10
    #: ...and resolve only once it is back within this distance (hysteresis).
    resolve_within: float = 0.05
    #: Lookups the hour needs before it can fire (a quiet hour pages nobody).
    min_lookups: int = 50
    #: Lookups the baseline needs (those of the 7 same hours, or of all 168 hours with "rolling").
    min_lookups_7d: int = 200
    #: One-sided two-proportion z-test (hour vs 7 days): fire only when p < this.
    max_p_value: float = 0.01


@dataclass(frozen=True)
class RejectedAttemptsRiseSettings(RuleSettings):
    #: Fire when the share of a tier's answers turned down in the last hour (a quality gate, a broken schema, an
    #: API error after the SDK's retries) is this far (fraction) over its 7-day share...
    rise: float = 0.10
    #: ...and resolve only once it is back within this distance.
    resolve_within: float = 0.05
    #: Attempts the hour needs before it can fire, and the 7 days before they are a baseline.
    min_attempts: int = 30
    min_attempts_7d: int = 200
    #: One-sided two-proportion z-test (hour vs 7 days): fire only when p < this.
    max_p_value: float = 0.01


@dataclass(frozen=True)
class CostPerSuccessRiseSettings(RuleSettings):
    #: Fire when a tier's cost per success in the last hour is this many percent over its 7-day level...
    rise_pct: float = 25.0
    #: ...resolve when it is back under this many percent over it.
    resolve_pct: float = 10.0
    #: Successful requests the hour needs before it can fire.
    min_successes: int = 20
    min_successes_7d: int = 100
    #: One-sided test that the window's cost per success is over the 7-day level (delta method on the ratio of the
    #: two sums, each request's call cost and success as the sample): fire only when p < this.
    max_p_value: float = 0.01
    #: Tiers not watched (the cache costs nothing).
    exclude_tiers: tuple[str, ...] = ("cache",)


@dataclass(frozen=True)
class StudentDriftSettings(RuleSettings):
    #: Used when an eval run carries no threshold of its own: the largest tolerated teacher-student gap.
    max_gap: float = 0.05
    #: A subtype's latest run with fewer evaluated queries is too few to judge: the alert keeps its state. The
    #: default is the drift job's own guard (``[jobs.drift] min_n``, 30): the job splits ``sample_size`` across
    #: subtypes, so a larger minimum would leave the smaller subtypes unable to ever page. Keep the two equal
    #: when you change one (a value set here is used as it is).
    min_n: int = 30
    no_data_resolve_s: float = 3 * 86400.0


@dataclass(frozen=True)
class RoutingTierMatchDropSettings(RuleSettings):
    #: Fire when a tier's latest tier-match rate is this far under the mean of its previous runs...
    drop: float = 0.05
    #: ...or under this floor.
    min_rate: float = 0.85
    resolve_within: float = 0.02
    #: How many earlier runs make the baseline.
    baseline_runs: int = 7
    min_n: int = 100
    no_data_resolve_s: float = 3 * 86400.0


@dataclass(frozen=True)
class PipelineSilentSettings(RuleSettings):
    #: Fire when the newest span in the lake is older than this.
    silent_s: float = 900.0
    severity: str = "critical"
    #: Rules muted while this one fires (their figures are meaningless without data).
    inhibits: tuple[str, ...] = ("cache_hit_rate_drop", "cost_per_success_rise")


@dataclass(frozen=True)
class DlqGrowingSettings(RuleSettings):
    #: Fire when the dead-letter topic gained at least this many messages...
    min_new: int = 1
    #: ...within this window.
    window_s: float = 900.0


@dataclass(frozen=True)
class LakeUnreadableSettings(RuleSettings):
    """Fires while a query the rules need fails (a corrupt Parquet file, an unreadable folder):
    those rules are skipped meanwhile, so this one says why nothing else fires."""

    severity: str = "critical"


@dataclass(frozen=True)
class AlertsConfig:
    """Settings of costline.alerts."""

    enabled: bool = True
    #: SQLite state file (alerts, silences, outbox); default ``<lake>/_alerts/state.sqlite``.
    state_path: Path | None = None
    #: How often `costline alerts run` evaluates and delivers.
    interval_s: float = 60.0
    #: An hourly window is evaluated this long after it closes (late spans land first).
    settle_s: float = 30.0
    #: Alerts sharing these labels ("rule" = the rule's name) make one Slack thread.
    group_by: tuple[str, ...] = ("rule",)
    #: A still-firing group is reminded of in its thread this often.
    repeat_interval_s: float = 4 * 3600.0
    #: Post a resolved message (and update the original one).
    send_resolved: bool = True
    #: Print every notification to the log / console (always, also with Slack configured).
    console: bool = True
    slack: SlackConfig = field(default_factory=SlackConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    cache_hit_rate_drop: CacheHitRateDropSettings = field(default_factory=CacheHitRateDropSettings)
    cost_per_success_rise: CostPerSuccessRiseSettings = field(default_factory=CostPerSuccessRiseSettings)
    rejected_attempts_rise: RejectedAttemptsRiseSettings = field(default_factory=RejectedAttemptsRiseSettings)
    student_drift: StudentDriftSettings = field(default_factory=StudentDriftSettings)
    routing_tier_match_drop: RoutingTierMatchDropSettings = field(default_factory=RoutingTierMatchDropSettings)
    pipeline_silent: PipelineSilentSettings = field(default_factory=PipelineSilentSettings)
    dlq_growing: DlqGrowingSettings = field(default_factory=DlqGrowingSettings)
    lake_unreadable: LakeUnreadableSettings = field(default_factory=LakeUnreadableSettings)


def validate(config: Any) -> None:
    """Check ``config.alerts`` when the config loads; raises :class:`~costline.errors.ConfigError` naming the key.

    Rates are fractions: ``drop = 10`` (meant as 10 points) would never fire, so it is refused here.
    """
    from costline.validate import Section, is_http_url

    a = config.alerts
    s = Section("alerts")
    for key in ("interval_s", "repeat_interval_s"):
        s.above_zero(key, getattr(a, key), unit="seconds")
    s.not_negative("settle_s", a.settle_s)
    s = Section("alerts.slack")
    s.need(is_http_url(a.slack.base_url), "base_url",
           f"must be an http(s) URL such as https://slack.com/api/; got {a.slack.base_url!r}")
    if a.slack.webhook_url:
        _check_webhook_url(s, a.slack.webhook_url)
    s.above_zero("timeout_s", a.slack.timeout_s, unit="seconds")
    s.at_least("dedup_max_pages", a.slack.dedup_max_pages, 1,
               "must be at least 1 (pages of 200 messages the duplicate check reads; "
               "turn the check off with dedup_check = false instead)")
    s = Section("alerts.outbox")
    s.above_zero("backoff_initial_s", a.outbox.backoff_initial_s, unit="seconds")
    s.at_least("backoff_max_s", a.outbox.backoff_max_s, a.outbox.backoff_initial_s,
               "must be at least backoff_initial_s")
    s.not_negative("keep_sent_s", a.outbox.keep_sent_s)
    s.at_least("claim_s", a.outbox.claim_s, 3 * a.slack.timeout_s,
               f"must outlast a Slack send and its duplicate check: at least 3 x [alerts.slack] timeout_s "
               f"({3 * a.slack.timeout_s:g}); raise claim_s or lower timeout_s")
    s = Section("alerts")
    for label in a.group_by:
        s.one_of("group_by", label, ALERT_LABELS,
                 f"must list alert labels, each one of {', '.join(ALERT_LABELS)} (\"rule\" = the rule's name); "
                 f"got {label!r}")
    rules = [f.name for f in fields(a) if isinstance(getattr(a, f.name), RuleSettings)]
    fraction = "must be in [0, 1] (a fraction: 0.10 = 10 points)"
    for name in rules:
        rule, s = getattr(a, name), Section(f"alerts.{name}")
        s.not_negative("for_s", rule.for_s)
        s.one_of("severity", rule.severity, SEVERITIES)
        for key in _COUNT_KEYS:  # how much data an observation needs before it is judged
            if hasattr(rule, key):
                s.at_least(key, getattr(rule, key), 1, f"must be at least 1 (a count of what the rule needs before it "
                           f"judges; see docs/alerts.md for the defaults); got {getattr(rule, key)}")
        s.above_zero("no_data_resolve_s", rule.no_data_resolve_s, unit="seconds")
        for key in ("drop", "rise", "resolve_within", "max_gap", "min_rate", "max_p_value"):
            if hasattr(rule, key):
                s.fraction(key, getattr(rule, key), what=fraction)
        for key in ("rise_pct", "resolve_pct"):  # percent, unlike the fractions above: 25 = +25 %
            if hasattr(rule, key):
                s.not_negative(key, getattr(rule, key),
                               f"must be a finite percentage, not negative (25 = 25 % over the 7-day level); "
                               f"got {getattr(rule, key)}")
        for key in ("silent_s", "window_s"):
            if hasattr(rule, key):
                s.above_zero(key, getattr(rule, key), unit="seconds")
        if hasattr(rule, "baseline"):
            s.need(rule.baseline in CACHE_BASELINES, "baseline",
                   f"must be \"hour_of_day\" (the same hour of day over the 7 days before: the default) or "
                   f"\"rolling\" (all 168 hours before); got {rule.baseline!r}")
        for target in getattr(rule, "inhibits", ()):
            s.need(target in rules, "inhibits", f"{target!r} is no rule: use {', '.join(rules)}")


def _check_webhook_url(s: Any, url: str) -> None:
    """``[alerts.slack] webhook_url`` is an http(s) URL as Slack gives it; an error shows it masked, never whole
    (the URL is the secret: whoever has it can post to the channel)."""
    from urllib.parse import urlsplit

    from costline.netsec import mask_secret

    shown = f"got {mask_secret(url)!r} (masked)"
    s.need(url == url.strip(), "webhook_url",
           f"starts or ends with a space or line break (pasted?): remove it; {shown}")
    s.need(not any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url), "webhook_url",
           f"contains a space or control character: paste the URL Slack shows, in one piece; {shown}")
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        parts, host = None, None
    s.need(parts is not None and parts.scheme in ("http", "https") and bool(host), "webhook_url",
           f"must be an http(s) URL such as https://hooks.slack.com/services/T.../B.../...; {shown}")


#: This area's config section, found by costline.areas: [alerts] in costline.toml and
#: COSTLINE_ALERTS_* variables fill it, `config.alerts` reads it.
SECTION = "alerts"
SETTINGS = AlertsConfig
