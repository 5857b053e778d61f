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
    from costline.validate import Section

    j = config.jobs
    d, s, t = j.drift, j.shadow, j.teacher
    metrics, metric_words = ("exact", "cosine", "judge"), "must be exact, cosine or judge"

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
    drift.need(d.trend_runs >= 2 and d.min_trend_runs >= 3, "trend_runs",
               "trend_runs must be at least 2 and min_trend_runs at least 3")
    Section("jobs.shadow").at_least("per_tier", s.per_tier, 1)
    Section("jobs.shadow").fraction("match_threshold", s.match_threshold, what="must be between 0 and 1")
    Section("jobs.teacher").at_least("concurrency", t.concurrency, 1)
    Section("jobs.teacher").at_least("max_tokens", t.max_tokens, 1)
    Section("jobs.teacher").fraction("max_error_rate", t.max_error_rate, open_high=True)
    Section("jobs").above_zero("window_hours", j.window_hours)
    Section("jobs.cost_report").above_zero("days_per_month", j.cost_report.days_per_month)
