"""costline.jobs — nightly DuckDB jobs over the lake: student drift, routing shadow, lever cost report.

Importing this package is cheap (settings and errors only); the rest loads on first use.
See ``docs/jobs.md``.
"""

from __future__ import annotations

import re
from typing import Any

from costline.jobs.errors import JobBusyError, JobsError, MissingExtraError, NoDataError, TeacherError
from costline.jobs.settings import CostReportConfig, DriftConfig, JobsConfig, ShadowConfig, TeacherConfig
from costline.lazy import lazy_loader

__all__ = [
    "JobsConfig", "DriftConfig", "ShadowConfig", "CostReportConfig", "TeacherConfig",
    "JobsError", "JobBusyError", "NoDataError", "TeacherError", "MissingExtraError",
    "validate",
    # jobs
    "run_drift", "run_shadow", "run_cost_report", "build_cost_report", "CostReport",
    "assess_subtypes", "assess_inputs", "assess_tiers", "SubtypeScores",
    # running
    "nightly", "run_job", "NightlyService", "JobLock", "JOBS",
    # pieces
    "Regenerator", "Checkpoint", "AnswerRequest", "Scorer", "sample_requests",
    "JobStore", "jobs_views_sql", "open_jobs_lake",
]

_LAZY: dict[str, str] = {
    "run_drift": "drift", "assess_subtypes": "drift", "assess_inputs": "drift", "SubtypeScores": "drift",
    "run_shadow": "shadow", "assess_tiers": "shadow",
    "run_cost_report": "cost_report", "build_cost_report": "cost_report", "CostReport": "cost_report",
    "nightly": "scheduler", "run_job": "scheduler", "NightlyService": "scheduler", "JobLock": "scheduler",
    "JOBS": "scheduler",
    "Regenerator": "teacher", "Checkpoint": "teacher", "AnswerRequest": "teacher",
    "Scorer": "scoring", "sample_requests": "sampling",
    "JobStore": "store", "jobs_views_sql": "store", "open_jobs_lake": "store",
}

__getattr__, __dir__ = lazy_loader(__name__, _LAZY)


def validate(config: Any) -> None:
    """Check ``config.jobs``; raises :class:`~costline.errors.ConfigError` naming the key."""
    from costline.jobs.settings import METRICS
    from costline.validate import Section

    j = config.jobs
    d, s, t = j.drift, j.shadow, j.teacher
    metrics = METRICS
    metric_words = "must be exact, cosine or judge, or json (JSON answers compared field by field)"

    drift = Section("jobs.drift")
    drift.at_least("sample_size", d.sample_size, 1, "must be at least 1 (the article: 500-1,000)")
    drift.not_negative("min_per_subtype", d.min_per_subtype)
    drift.fraction("alpha", d.alpha, open_low=True, open_high=True, what="must be between 0 and 1")
    drift.at_least("bootstrap_resamples", d.bootstrap_resamples, 100)
    drift.at_least("min_n", d.min_n, 2, "must be at least 2 (a CI needs two scored items; the default is 30)")
    drift.one_of("default_metric", d.default_metric, metrics, metric_words)
    for k, v in d.metrics.items():
        Section("jobs.drift.metrics").one_of(k, v, metrics, metric_words)
    try:
        re.compile(d.answer_pattern or "")
    except re.error as exc:
        raise drift.error("answer_pattern", f"not a valid regex: {exc}") from None
    patterns = Section("jobs.drift.answer_patterns")
    for k, v in d.answer_patterns.items():
        try:
            rx = re.compile(v)
        except re.error as exc:
            raise patterns.error(k, f"not a valid regex: {exc}") from None
        patterns.need(rx.groups >= 1, k, f"{v!r} has no group: exact match compares the pattern's first group, so "
                      "put the part to compare in parentheses (e.g. '(?i)\\b(positive|negative|neutral)\\b')")
    drift.at_least("judge_max_tokens", d.judge_max_tokens, 1,
                   "must be at least 1 (output tokens of each judge reply; the default 256 leaves room for a judge "
                   "that explains before it scores)")
    drift.need(d.trend_runs >= 2 and d.min_trend_runs >= 3, "trend_runs",
               "trend_runs must be at least 2 and min_trend_runs at least 3")
    # gaps and scores are fractions (scores in [0, 1]): 15 (meant as 15 points) or nan would never flag
    for key, example in (("max_gap", "0.15 = 15 points"), ("max_gap_increase", "0.05 = 5 points"),
                         ("min_increase", "0.03 = 3 points")):
        drift.fraction(key, getattr(d, key), what=_fraction(example, getattr(d, key)))
    for k, v in d.thresholds.items():
        Section("jobs.drift.thresholds").fraction(k, v, what=_fraction("0.08 = 8 points", v))
    drift.fraction("psi_threshold", d.psi_threshold, open_low=True,
                   what="must be in (0, 1] (a population stability index: 0.2 = a significant shift, 0.1 a moderate "
                        f"one; not percent); got {d.psi_threshold}")
    drift.fraction("ks_min_statistic", d.ks_min_statistic,
                   what="must be in [0, 1] (a Kolmogorov-Smirnov statistic, a fraction: 0.1 = the two cumulative "
                        f"distributions 10 points apart at their widest; not percent); got {d.ks_min_statistic}")
    drift.not_negative("mmd_permutations", d.mmd_permutations, "must be 0 (the MMD test skipped) or more")
    shadow = Section("jobs.shadow")
    shadow.at_least("per_tier", s.per_tier, 1)
    shadow.fraction("match_threshold", s.match_threshold, what="must be between 0 and 1")
    shadow.fraction("min_rate", s.min_rate, what=_fraction("0.85 = 85 %; 0 = no floor", s.min_rate))
    shadow.fraction("drop", s.drop, what=_fraction("0.05 = 5 points", s.drop))
    shadow.fraction("alpha", s.alpha, open_low=True, open_high=True,
                    what=f"must be between 0 and 1, both excluded (a significance level such as 0.01); got {s.alpha}")
    shadow.not_negative("baseline_runs", s.baseline_runs, "must not be negative (the previous runs the baseline rate "
                        "is the mean of; the default is 7)")
    teacher = Section("jobs.teacher")
    teacher.at_least("concurrency", t.concurrency, 1)
    teacher.at_least("max_tokens", t.max_tokens, 1)
    teacher.not_negative("max_retries", t.max_retries, "must be 0 (no retries) or more")
    teacher.fraction("max_error_rate", t.max_error_rate, open_high=True)
    teacher.above_zero("timeout_s", t.timeout_s,
                       what=f"must be a finite number of seconds above 0 (one request's timeout); got {t.timeout_s}")
    teacher.above_zero("batch_timeout_s", t.batch_timeout_s,
                       what="must be a finite number of seconds above 0 (how long a message batch may take; the "
                            f"default is 93600, 26 hours); got {t.batch_timeout_s}")
    teacher.not_negative("poll_interval_s", t.poll_interval_s,
                         "must be a finite number of seconds, 0 or more (between polls of a message batch; 0 = poll "
                         f"again at once, for a local stand-in); got {t.poll_interval_s}")
    jobs = Section("jobs")
    jobs.above_zero("window_hours", j.window_hours)
    jobs.not_negative("retry_days", j.retry_days, "must be 0 (a failed window is not retried) or more")
    jobs.above_zero("poll_s", j.poll_s, what="must be a finite number of seconds above 0 (`costline jobs serve`'s "
                                             f"idle poll); got {j.poll_s}")
    Section("jobs.cost_report").above_zero("days_per_month", j.cost_report.days_per_month)


def _fraction(example: str, value: float) -> str:
    return f"must be in [0, 1] (a fraction: {example}); got {value}"
