"""The `[jobs]` section of costline's config (see :mod:`costline.config`).

Plain frozen dataclasses with defaults, nothing else: :mod:`costline.config`
imports this module, so it must stay import-light. :func:`costline.jobs.validate`
checks the values when a job starts (errors name the key).

```toml
[jobs]
schedule = ["02:00"]          # UTC times of day for `costline jobs serve`

[jobs.drift]
sample_size = 500
max_gap = 0.15
cosine_checks = true          # cosine scores 0 for a contradicting edit ("does not want" / "wants")

[jobs.drift.thresholds]       # per-subtype tolerated gap, overrides the default rule
sentiment = 0.08

[jobs.drift.metrics]          # task type or subtype -> exact | json | cosine | judge
classification = "exact"
extraction = "json"

[jobs.drift.answer_patterns]  # task type or subtype -> regex; exact match compares its group
sentiment = '(?i)^\\W*(?:sentiment\\W*)?(positive|negative|neutral)\\b'
```
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["JobsConfig", "DriftConfig", "ShadowConfig", "CostReportConfig", "TeacherConfig", "METRICS"]

#: The metrics a subtype can be scored with (:mod:`costline.jobs.scoring`), for ``[jobs.drift] metrics`` and
#: ``default_metric``.
METRICS: tuple[str, ...] = ("exact", "json", "cosine", "judge")


@dataclass(frozen=True)
class TeacherConfig:
    """``[jobs.teacher]``: how the jobs regenerate answers through the Anthropic SDK."""

    #: Anthropic API base URL; None = ``[serving.backends] anthropic_base_url`` (else the SDK default).
    base_url: str | None = None
    #: Environment variable holding the API key; None = ``[serving.backends] anthropic_api_key_env``.
    api_key_env: str | None = None
    #: Concurrent synchronous requests.
    concurrency: int = 8
    max_tokens: int = 1024
    #: The SDK's own retries (429/529/5xx/connection errors) per request.
    max_retries: int = 3
    timeout_s: float = 120.0
    #: Batch mode: seconds between polls of a message batch, and how long to wait at most.
    poll_interval_s: float = 30.0
    batch_timeout_s: float = 26 * 3600.0
    #: A run fails (and is retried next time, resuming) when more than this share of its requests errored.
    max_error_rate: float = 0.05


@dataclass(frozen=True)
class DriftConfig:
    """``[jobs.drift]``: the student-vs-teacher evaluation."""

    #: Requests sampled per run, stratified by subtype (the article: 500-1,000).
    sample_size: int = 500
    #: Every subtype present gets at least this many (when it has them).
    min_per_subtype: int = 30
    #: Tier whose model regenerates the reference answer.
    teacher_tier: str = "frontier"
    #: Model id; empty = the first ``[[pricing.models]]`` entry of ``teacher_tier``.
    teacher_model: str = ""
    #: task type or subtype -> "exact" | "json" | "cosine" | "judge" (subtype wins); others: ``default_metric``.
    metrics: dict[str, str] = field(default_factory=lambda: {"classification": "exact", "extraction": "json"})
    default_metric: str = "cosine"
    #: ``cosine`` scores 0 for two answers, one an edit of the other, that the semantic cache's verifier finds
    #: contradicting (another number, date, a negation …: "does not want a refund" / "wants a refund", cosine 0.91);
    #: false = the plain cosine. Needs the serving extra (without it: the plain cosine and a warning). docs/jobs.md,
    #: "Contradiction checks", has what it catches and its false alarms, measured.
    cosine_checks: bool = True
    #: Exact match compares the first group of this regex when it matches both answers (e.g. a label). The
    #: default is the demo stand-in's answer marker (``[ref:0123abcd]``): it matches no real model's answer.
    answer_pattern: str = r"\[ref:([0-9a-f]{8})\]"
    #: task type or subtype -> a regex with one group, used by exact match instead of ``answer_pattern``
    #: (subtype wins), e.g. ``sentiment = '(?i)^\W*(?:sentiment\W*)?(positive|negative|neutral)\b'``.
    answer_patterns: dict[str, str] = field(default_factory=dict)
    #: Largest tolerated teacher-student gap for a subtype without a baseline...
    max_gap: float = 0.15
    #: ...and, with one, the baseline's gap plus this.
    max_gap_increase: float = 0.05
    #: Per-subtype tolerated gap (wins over both rules above).
    thresholds: dict[str, float] = field(default_factory=dict)
    #: "Grew significantly" needs p < alpha (Bonferroni over the run's subtypes) and at least this increase;
    #: the gap CI is two-sided at 1 - 2 * alpha / subtypes, so its rule is a one-sided test at the same level.
    alpha: float = 0.01
    min_increase: float = 0.03
    #: Trend over this many runs (Theil-Sen slope, Mann-Kendall p-value); needs min_trend_runs.
    trend_runs: int = 14
    min_trend_runs: int = 5
    #: No rule (CI, vs baseline, trend) flags a subtype under this many scored items: it is "too few to
    #: judge" (a percentile bootstrap of a handful of items is far too narrow: docs/jobs.md has the figures).
    min_n: int = 30
    #: At least this many; raised as the CI level needs (20 resampled means beyond each end).
    bootstrap_resamples: int = 1000
    #: The run the vs-baseline shift test and the input-drift tests compare with; empty = the oldest run.
    baseline_run: str = ""
    #: Input drift: PSI on the subtype mix over this, KS statistic over this (and p < alpha).
    psi_threshold: float = 0.2
    ks_min_statistic: float = 0.1
    #: MMD permutation test on query embeddings (needs the serving extra); 0 = skipped.
    mmd_permutations: int = 200
    #: Rubric of the optional LLM judge (``metric = "judge"``); scores are 1-5, mapped to 0-1.
    judge_rubric: str = (
        "Score the ANSWER to the QUESTION from 1 (useless or wrong) to 5 (correct, complete, concise). "
        "Reply with 'score: N' and nothing else."
    )
    #: Output tokens of each judge reply: room for a judge that explains before it scores (a reply cut before
    #: its score is unreadable, and too many of those fail the run).
    judge_max_tokens: int = 256
    #: Regenerate the student's answer from ``student_base_url`` instead of using the captured one.
    regenerate_student: bool = False


@dataclass(frozen=True)
class ShadowConfig:
    """``[jobs.shadow]``: routing shadow evaluation."""

    #: Requests per tier per run.
    per_tier: int = 150
    #: Tiers shadowed (each re-run on the next tier up).
    tiers: tuple[str, ...] = ("budget", "mid", "upper")
    #: An answer "matches" when its score against the next tier's answer reaches this.
    match_threshold: float = 0.8
    #: Flag when the rate is under this floor...
    min_rate: float = 0.85
    #: ...or this far under the mean of the previous runs and significantly so (p < alpha).
    drop: float = 0.05
    alpha: float = 0.01
    baseline_runs: int = 7
    #: Regenerate the cheaper answer too instead of using the captured one.
    regenerate_cheap: bool = False


@dataclass(frozen=True)
class CostReportConfig:
    """``[jobs.cost_report]``: the lever stacking table."""

    #: Days a month has in the table (the article: x30).
    days_per_month: float = 30.0
    #: Tier whose model prices the baseline; and the tier the student replaced.
    baseline_tier: str = "frontier"
    student_replaces_tier: str = "budget"


@dataclass(frozen=True)
class JobsConfig:
    """Settings of costline.jobs: nightly drift, shadow and cost-report jobs."""

    #: UTC times of day ("HH:MM") at which `costline jobs serve` runs the nightly jobs.
    schedule: tuple[str, ...] = ("02:00",)
    #: Length of the window each nightly run looks back over, in hours.
    window_hours: float = 24.0
    #: A failed nightly window is retried on later runs for this many days.
    retry_days: int = 3
    #: Idle poll of `costline jobs serve`, in seconds.
    poll_s: float = 30.0
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    shadow: ShadowConfig = field(default_factory=ShadowConfig)
    cost_report: CostReportConfig = field(default_factory=CostReportConfig)


#: This area's config section, found by costline.areas: [jobs] in costline.toml and
#: COSTLINE_JOBS_* variables fill it, `config.jobs` reads it.
SECTION = "jobs"
SETTINGS = JobsConfig
