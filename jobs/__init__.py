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
    from costline.errors import ConfigError

    j = config.jobs
    d, s, t = j.drift, j.shadow, j.teacher

    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise ConfigError(key, what)

    need(d.sample_size >= 1, "[jobs.drift] sample_size", "must be at least 1 (the article: 500-1,000)")
    need(d.min_per_subtype >= 0, "[jobs.drift] min_per_subtype", "must not be negative")
    need(0 < d.alpha < 1, "[jobs.drift] alpha", "must be between 0 and 1")
    need(d.bootstrap_resamples >= 100, "[jobs.drift] bootstrap_resamples", "must be at least 100")
    need(d.default_metric in ("exact", "cosine", "judge"), "[jobs.drift] default_metric",
         "must be exact, cosine or judge")
    for k, v in d.metrics.items():
        need(v in ("exact", "cosine", "judge"), f"[jobs.drift.metrics] {k}", "must be exact, cosine or judge")
    try:
        re.compile(d.answer_pattern or "")
    except re.error as exc:
        raise ConfigError("[jobs.drift] answer_pattern", f"not a valid regex: {exc}") from None
    need(d.trend_runs >= 2 and d.min_trend_runs >= 3, "[jobs.drift] trend_runs",
         "trend_runs must be at least 2 and min_trend_runs at least 3")
    need(s.per_tier >= 1, "[jobs.shadow] per_tier", "must be at least 1")
    need(0 <= s.match_threshold <= 1, "[jobs.shadow] match_threshold", "must be between 0 and 1")
    need(t.concurrency >= 1, "[jobs.teacher] concurrency", "must be at least 1")
    need(t.max_tokens >= 1, "[jobs.teacher] max_tokens", "must be at least 1")
    need(0 <= t.max_error_rate < 1, "[jobs.teacher] max_error_rate", "must be in [0, 1)")
    need(j.window_hours > 0, "[jobs] window_hours", "must be above 0")
    need(j.cost_report.days_per_month > 0, "[jobs.cost_report] days_per_month", "must be above 0")
