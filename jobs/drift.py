"""`costline jobs drift`: is the student still as good as the teacher, subtype by subtype?

1. sample student-served requests with captured content from the window, stratified by subtype
   (:mod:`costline.jobs.sampling`);
2. regenerate the teacher's answers (frontier by default) through the ``anthropic`` SDK, synchronously
   or with ``batch=True`` through the Message Batches API, resumably (:mod:`costline.jobs.teacher`);
3. score student against teacher with the subtype's metric (:mod:`costline.jobs.scoring`);
4. judge each subtype (:func:`assess_subtypes`) and the input mix (:func:`assess_inputs`);
5. write ``eval_items`` and ``eval_runs`` (:mod:`costline.jobs.store`).

Per item the *gap* is ``teacher_score - student_score``; a subtype's gap is its mean, with a
percentile-bootstrap CI at level ``1 - 2 * alpha / subtypes`` (so that "its low end is above the
threshold" is a one-sided test at ``alpha / subtypes``, as the other two).

A subtype with fewer than ``min_n`` scored items is "too few to judge" (said in its ``reason``) and
never flagged by any rule: a percentile bootstrap of a handful of items is far too narrow, and one
wrong answer of three moves its gap by a third. From ``min_n`` on it is **flagged** when

* its CI lies wholly above its threshold (``[jobs.drift.thresholds]``, else the baseline gap +
  ``max_gap_increase``, else ``max_gap``), or
* it grew significantly since the baseline run: one-sided p < alpha / subtypes
  (:func:`costline.jobs.stats.shift_greater`: Fisher's exact test for 0/1 gaps, else Mann-Whitney U,
  exact or permutation when the baseline has few items) and an increase of at least ``min_increase``, or
* it trends upward over the last ``trend_runs`` runs: Mann-Kendall p < alpha / subtypes and a
  Theil-Sen rise over those runs of at least ``min_increase``.

The p-values are reported (``mwu_p``, ``trend_p``) under ``min_n`` as well.

Input drift against the baseline run's sample (PSI on the subtype mix, KS on query length, MMD on
query embeddings) is reported per run (``input_drift``, ``input_reason``) without flagging subtypes.

A teacher answer that is no reference (:func:`costline.jobs.teacher.unusable_reason`: not a message,
a refusal, cut, empty) is paid for but left out of scoring and counted (``DriftResult.unusable``);
when those and the requests that got no answer are more than ``[jobs.teacher] max_error_rate`` of
the sample, the run fails with :class:`TeacherError` (retried later; the retryable kinds are asked
again) instead of judging the student on what is left. A run with nothing scored writes nothing.

A judge reply (``metric = "judge"``) with no score :func:`~costline.jobs.scoring.parse_judge_score` can read
leaves its item out of scoring; those replies are counted (:class:`JudgeReplies`, ``DriftResult.judge``, a
warning, and a note in the subtype's ``reason``), and when they are more than ``max_error_rate`` of the run's
judge replies the run fails (:class:`TeacherError`) with one of them and what to change (the rubric,
``judge_max_tokens``): the items a judge finds wrong are the ones it explains at length, so dropping them
quietly would read as a smaller gap.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from costline.config import Config
from costline.jobs.errors import JobsError, NoDataError, TeacherError
from costline.jobs.settings import DriftConfig
from costline.jobs.stats import bootstrap_mean_ci, ks_test, mmd_permutation_test, psi, shift_greater, trend
from costline.timeutil import utc_naive as _utc

__all__ = [
    "SubtypeScores",
    "SubtypeAssessment",
    "InputDrift",
    "DriftResult",
    "assess_subtypes",
    "assess_inputs",
    "run_drift",
    "teacher_model",
    "drift_run_id",
    "screen_unusable",
    "JudgeReplies",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SubtypeScores:
    """One subtype's per-item scores in one run."""

    student: np.ndarray
    teacher: np.ndarray

    @property
    def gaps(self) -> np.ndarray:
        return np.asarray(self.teacher, dtype=np.float64) - np.asarray(self.student, dtype=np.float64)

    @classmethod
    def of(cls, student: Sequence[float], teacher: Sequence[float] | float = 1.0) -> "SubtypeScores":
        s = np.asarray(student, dtype=np.float64)
        t = np.full_like(s, float(teacher)) if np.isscalar(teacher) else np.asarray(teacher, dtype=np.float64)
        keep = np.isfinite(s) & np.isfinite(t)
        return cls(s[keep], t[keep])


@dataclass(frozen=True)
class SubtypeAssessment:
    subtype: str
    n: int
    student_score: float
    teacher_score: float
    gap: float
    gap_ci_low: float
    gap_ci_high: float
    threshold: float
    baseline_gap: float | None
    mwu_p: float | None
    trend_slope: float | None
    trend_p: float | None
    trend_runs: int
    flagged: bool
    reason: str


def ci_level(cfg: DriftConfig, subtypes: int) -> float:
    """The gap CI's level: two-sided ``1 - 2 * alpha / subtypes`` (Bonferroni, as the other two tests)."""
    return 1.0 - 2.0 * cfg.alpha / max(int(subtypes), 1)


def _resamples(cfg: DriftConfig, level: float) -> int:
    """Enough bootstrap resamples for the CI's tails: at least 20 resampled means beyond each end."""
    tail = (1.0 - level) / 2.0
    return int(min(max(cfg.bootstrap_resamples, math.ceil(20.0 / tail)), 400_000))


def _pct(level: float) -> str:
    return f"{100.0 * level:.3g}%"


def _threshold(subtype: str, baseline_gap: float | None, cfg: DriftConfig) -> float:
    if subtype in cfg.thresholds:
        return float(cfg.thresholds[subtype])
    if baseline_gap is not None:
        return baseline_gap + cfg.max_gap_increase
    return cfg.max_gap


def assess_subtypes(
    current: Mapping[str, SubtypeScores],
    cfg: DriftConfig,
    *,
    baseline: Mapping[str, SubtypeScores] | None = None,
    history: Mapping[str, Sequence[float]] | None = None,
    rng: np.random.Generator | None = None,
) -> list[SubtypeAssessment]:
    """Judge each subtype of a run. ``history[subtype]``: the gaps of the previous runs, oldest first."""
    rng = rng or np.random.default_rng(0)
    baseline = baseline or {}
    history = history or {}
    subtypes = sorted(k for k, v in current.items() if len(v.student))
    alpha = cfg.alpha / max(len(subtypes), 1)  # Bonferroni over the run's subtypes
    level = ci_level(cfg, len(subtypes))  # the CI rule at the same alpha / subtypes, one-sided
    resamples = _resamples(cfg, level)
    out = []
    for sub in subtypes:
        sc = current[sub]
        d = sc.gaps
        gap = float(d.mean())
        lo, hi = bootstrap_mean_ci(d, resamples=resamples, level=level, rng=rng)
        base = baseline.get(sub)
        base_gap = float(base.gaps.mean()) if base is not None and len(base.student) else None
        thr = _threshold(sub, base_gap, cfg)
        reasons = []
        notes = []
        judged = len(d) >= cfg.min_n  # under min_n no rule flags it: too few to judge
        if not judged:
            notes.append(f"too few to judge: {len(d)} scored items, under [jobs.drift] min_n {cfg.min_n}")
        elif lo > thr:
            reasons.append(f"gap {gap:.3f} ({_pct(level)} CI {lo:.3f}-{hi:.3f}) is over its threshold {thr:.3f}")
        mwu_p = None
        if base_gap is not None:
            shift = shift_greater(d, base.gaps)  # type: ignore[union-attr]
            mwu_p = shift.p
            if judged and mwu_p < alpha and gap - base_gap >= cfg.min_increase:
                reasons.append(f"gap grew {gap - base_gap:+.3f} over the baseline's {base_gap:.3f} "
                               f"({shift.method} p={mwu_p:.2g})")
        series = [float(g) for g in history.get(sub, ())][-(cfg.trend_runs - 1):] + [gap] if cfg.trend_runs > 1 else [gap]
        slope = tp = None
        if len(series) >= cfg.min_trend_runs:
            t = trend(series)
            slope, tp = t.slope, t.p_increasing
            rise = slope * (len(series) - 1)
            if judged and tp < alpha and rise >= cfg.min_increase:
                reasons.append(f"gap rising {slope:+.4f} per run over {len(series)} runs (Mann-Kendall p={tp:.2g})")
        out.append(SubtypeAssessment(
            subtype=sub, n=int(len(d)), student_score=float(sc.student.mean()), teacher_score=float(sc.teacher.mean()),
            gap=gap, gap_ci_low=lo, gap_ci_high=hi, threshold=thr, baseline_gap=base_gap, mwu_p=mwu_p,
            trend_slope=slope, trend_p=tp, trend_runs=len(series), flagged=bool(reasons),
            reason="; ".join(reasons + notes)))
    return out


@dataclass(frozen=True)
class InputDrift:
    psi: float | None = None
    length_ks: float | None = None
    length_ks_p: float | None = None
    mmd: float | None = None
    mmd_p: float | None = None
    drifted: bool = False
    reason: str = ""


def _names(subtypes: Sequence[str]) -> str:
    """Subtype names from spans (``costline.subtype``: anything a sender wrote) as the input-drift reason lists them:
    each by its label (:func:`costline.alerts.rules.label_value`, as the ``student_drift`` alert labels a subtype;
    JSON-quoted too when it holds ``, ``, so it reads as one name), so a name with an ESC sequence, a carriage
    return, a bidi override or a line separator is written quoted with escapes (``"faq\\u001b[2K\\r..."``) and can
    rewrite neither the terminal ``costline jobs drift`` prints it on nor the text the lake keeps
    (``eval_runs.input_reason``)."""
    from costline.alerts.rules import label_value, visible_json

    return ", ".join(visible_json(s) if ", " in s else label_value(s) for s in map(str, subtypes))


def assess_inputs(
    subtypes: Sequence[str],
    lengths: Sequence[float],
    reference_subtypes: Sequence[str],
    reference_lengths: Sequence[float],
    cfg: DriftConfig,
    *,
    embeddings: np.ndarray | None = None,
    reference_embeddings: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
) -> InputDrift:
    """Input drift of a run's sample against the reference (baseline) sample."""
    if not reference_subtypes:
        return InputDrift()
    rng = rng or np.random.default_rng(0)
    mix_now: dict[str, int] = {}
    for s in subtypes:
        mix_now[s] = mix_now.get(s, 0) + 1
    mix_ref: dict[str, int] = {}
    for s in reference_subtypes:
        mix_ref[s] = mix_ref.get(s, 0) + 1
    p = psi(mix_ref, mix_now)
    ks, ks_p = ks_test(lengths, reference_lengths)
    mmd = mmd_p = None
    if embeddings is not None and reference_embeddings is not None and cfg.mmd_permutations > 0:
        mmd, mmd_p = mmd_permutation_test(embeddings, reference_embeddings, permutations=cfg.mmd_permutations,
                                          rng=rng)
    reasons = []
    new = sorted(set(mix_now) - set(mix_ref))
    if p > cfg.psi_threshold:
        reasons.append(f"subtype mix PSI {p:.3f} > {cfg.psi_threshold}" + (f" (new: {_names(new)})" if new else ""))
    if math.isfinite(ks_p) and ks_p < cfg.alpha and ks >= cfg.ks_min_statistic:
        reasons.append(f"query length KS {ks:.3f} (p={ks_p:.2g})")
    if mmd_p is not None and math.isfinite(mmd_p) and mmd_p < cfg.alpha:
        reasons.append(f"query embeddings MMD² {mmd:.4f} (permutation p={mmd_p:.2g})")
    return InputDrift(p, ks, ks_p, mmd, mmd_p, bool(reasons), "; ".join(reasons))


# --- the job -------------------------------------------------------------------------------------


#: Characters of a judge reply an error or warning quotes.
_SHOWN_REPLY = 200


@dataclass
class JudgeReplies:
    """The LLM judge's replies of one run: how many were asked for, and those with no score the job can read
    (:func:`~costline.jobs.scoring.parse_judge_score`), whose items are left out of scoring."""

    #: ``[jobs.drift] judge_max_tokens`` the replies were asked with.
    max_tokens: int = 256
    asked: int = 0
    #: Replies with no readable score (and requests that got no reply), per subtype.
    unreadable: dict[str, int] = field(default_factory=dict)
    #: Of those, the replies cut at ``max_tokens``.
    cut: int = 0
    #: The first unreadable reply (None: every unreadable one got no reply at all).
    example: str | None = None

    @property
    def unreadable_total(self) -> int:
        return sum(self.unreadable.values())

    def add(self, subtype: str | None, answer: Any, score: float) -> None:
        """Count one reply (``answer``: a :class:`~costline.jobs.teacher.Answer`, None when none came back)."""
        self.asked += 1
        if math.isfinite(score):
            return
        key = str(subtype)
        self.unreadable[key] = self.unreadable.get(key, 0) + 1
        if answer is not None:
            if answer.stop_reason == "max_tokens" or (answer.output_tokens or 0) >= self.max_tokens:
                self.cut += 1
            if self.example is None:
                self.example = answer.text or ""

    def shown_example(self) -> str:
        """The first unreadable reply, bounded and escaped (JSON-quoted, every character that does not print as
        its escape): what the judge wrote, safe on a terminal and in the lake."""
        from costline.alerts.rules import visible_json

        if self.example is None:
            return "(no reply came back)"
        text = self.example
        return visible_json(text[:_SHOWN_REPLY]) + (f" (first {_SHOWN_REPLY} of {len(text)} characters)"
                                                     if len(text) > _SHOWN_REPLY else "")

    def describe(self) -> str:
        """``"3 of 80 judge replies held no score the job can read (2 cut at ...); one of them: '...'"``."""
        cut = (f"; {self.cut} of them cut at [jobs.drift] judge_max_tokens {self.max_tokens}" if self.cut else "")
        return (f"{self.unreadable_total} of {self.asked} judge replies held no score the job can read{cut}; "
                f"one of them: {self.shown_example()}")

    def advice(self) -> str:
        """What to change: the rubric (the judge must end with a score), or the room it has to write it."""
        raise_it = (f"raise [jobs.drift] judge_max_tokens (now {self.max_tokens}): replies were cut before their "
                    "score, or " if self.cut else "")
        return (f"{raise_it}change [jobs.drift] judge_rubric so the judge ends its reply with 'score: N' (N from 1 "
                "to 5); asking again unchanged gets the same replies")


@dataclass
class DriftResult:
    run_id: str
    since: datetime
    until: datetime
    assessments: list[SubtypeAssessment]
    inputs: InputDrift
    n: int
    cost_usd: float
    sent: int = 0
    resumed: int = 0
    already_done: bool = False
    rows: list[dict[str, Any]] = field(default_factory=list)
    #: Teacher answers paid for but left out of scoring, by kind (:data:`costline.jobs.teacher.UNUSABLE`;
    #: as distill's ``unusable``): no reference to score the student against.
    unusable: dict[str, int] = field(default_factory=dict)
    #: The LLM judge's replies (``metric = "judge"``), with those that held no readable score; None: no judge.
    judge: JudgeReplies | None = None

    @property
    def flagged(self) -> list[str]:
        return [a.subtype for a in self.assessments if a.flagged]


def teacher_model(config: Config, tier: str | None = None) -> str:
    """The model of ``tier`` (default ``[jobs.drift] teacher_tier``): ``teacher_model`` or the pricing table."""
    tier = tier or config.jobs.drift.teacher_tier
    if tier == config.jobs.drift.teacher_tier and config.jobs.drift.teacher_model:
        return config.jobs.drift.teacher_model
    override = config.serving.backends.tier_models.get(tier)
    if override:
        return override
    for m in config.pricing.models:
        if m.tier == tier:
            return m.model
    raise JobsError(f"no model for tier {tier!r}: add one to [[pricing.models]] or set [jobs.drift] teacher_model")


def drift_run_id(kind: str, until: datetime, params: Mapping[str, Any]) -> str:
    """Deterministic run id: the same window and parameters resume the same run."""
    h = hashlib.blake2b(json.dumps(dict(params), sort_keys=True, default=str).encode(), digest_size=4).hexdigest()
    return f"{kind}-{until:%Y%m%dT%H%M}-{h}"


def screen_unusable(what: str, run_id: str, unusable: Mapping[str, int], *, asked: int, missing: int,
                    max_error_rate: float, cost_usd: float, max_tokens: str = "[jobs.teacher] max_tokens") -> None:
    """Warn about the answers paid for but left out (each kind with what it means), and fail the run
    (:class:`TeacherError`, retried later) when they and the ``missing`` ones (no answer) are more than
    ``max_error_rate`` of the ``asked``: what is left would be judged on a remainder that may not be like
    the sample (the drift and shadow jobs share this)."""
    from costline.jobs.teacher import RETRYABLE, describe_unusable

    bad = sum(unusable.values())
    if not bad:
        return
    kinds = describe_unusable(unusable, max_tokens=max_tokens)
    if bad + missing > max_error_rate * asked:
        again = [why for why, n in unusable.items() if n and why in RETRYABLE]
        raise TeacherError(
            f"{what} {run_id}: {bad} of {asked} answers are unusable" + (f" and {missing} got none" if missing else "")
            + f", more than [jobs.teacher] max_error_rate {max_error_rate:g} of the sample, so nothing was judged: "
            f"{kinds}. ${cost_usd:.4f} paid so far is kept in the run's checkpoint; run it again to resume"
            + (f" (the {' and '.join(again)} answers are asked again)" if again else ""))
    log.warning("%s %s: %d answers left out of scoring: %s", what, run_id, bad, kinds)


def screen_judge(run_id: str, replies: JudgeReplies, *, scored: int, sampled: int, usable: int,
                 max_error_rate: float, cost_usd: float) -> None:
    """Fail the run (:class:`TeacherError`, nothing written) when more than ``max_error_rate`` of the judge's
    replies held no readable score, or nothing at all was scored because of them; else warn about the ones left
    out. The message quotes one reply and says what to change: asking the same judge the same way again reads
    the same replies."""
    bad = replies.unreadable_total
    if not bad:
        return
    over = bad > max_error_rate * replies.asked
    if over or not scored:
        head = (f"drift {run_id}: none of the {sampled} sampled requests could be scored ({usable} had a usable "
                "teacher answer): " if not scored else f"drift {run_id}: ")
        why = (f"That is more than [jobs.teacher] max_error_rate {max_error_rate:g} of its replies, so nothing was "
               "judged" if over else "Nothing was judged")
        raise TeacherError(
            f"{head}the judge's replies could not be read: {replies.describe()}. {why} (${cost_usd:.4f} paid so "
            f"far, kept in the run's checkpoint). To fix it, {replies.advice()}.")
    log.warning("drift %s: %s; their items are left out of scoring", run_id, replies.describe())


def _with_judge_note(a: SubtypeAssessment, replies: JudgeReplies) -> SubtypeAssessment:
    """``a`` with a note in its reason when judge replies of its subtype held no readable score."""
    n = replies.unreadable.get(a.subtype, 0)
    if not n:
        return a
    note = f"judge replies without a readable score: {n} (their items are left out)"
    return dataclasses.replace(a, reason="; ".join(r for r in (a.reason, note) if r))


def _previous_runs(con: Any, run_id: str) -> list[dict[str, Any]]:
    cur = con.execute("SELECT run_id, finished_at, subtype, gap FROM eval_runs WHERE run_id <> $r "
                      "ORDER BY finished_at", {"r": run_id})
    return [dict(zip([c[0] for c in cur.description], row)) for row in cur.fetchall()]


def run_drift(
    config: Config,
    *,
    since: datetime,
    until: datetime,
    seed: int = 0,
    sample_size: int | None = None,
    batch: bool = False,
    run_id: str | None = None,
    rerun: bool = False,
    client: Any = None,
    student: Any = None,
    embedder: Any = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    sleep: Callable[[float], None] | None = None,
    show_progress: bool = False,
    on_answer: Callable[[Any], None] | None = None,
) -> DriftResult:
    """Run the drift evaluation over ``[since, until)``; see the module docstring.

    ``client`` is an ``anthropic.Anthropic`` (default: :func:`~costline.jobs.teacher.anthropic_client`),
    ``student`` an ``openai.OpenAI`` used when ``[jobs.drift] regenerate_student`` is on, ``embedder``
    anything with ``encode(texts)`` (default: MiniLM, loaded only when a cosine metric or MMD needs it).
    """
    from costline.jobs import validate
    from costline.jobs.sampling import sample_requests
    from costline.jobs.scoring import ScoreRequest, Scorer, metric_for
    from costline.jobs.store import job_store, open_jobs_lake
    from costline.jobs.teacher import (
        UNUSABLE,
        AnswerRequest,
        Checkpoint,
        Regenerator,
        anthropic_client,
        retryable,
        student_client,
        unusable_reason,
    )
    from costline.pricing import PricingTable

    validate(config)
    cfg = config.jobs.drift
    tcfg = config.jobs.teacher
    since, until = _utc(since), _utc(until)
    size = sample_size or cfg.sample_size
    model = teacher_model(config)
    run_id = run_id or drift_run_id("drift", until, {"since": since, "size": size, "seed": seed, "model": model,
                                                     "regen": cfg.regenerate_student})
    store = job_store(config).init()
    started = _utc(now())
    con = open_jobs_lake(config)
    try:
        if store.exists("eval_runs", run_id) and not rerun:
            rows = [dict(zip([c[0] for c in d.description], r)) for d in [con.execute(
                "SELECT * FROM eval_runs WHERE run_id = $r ORDER BY subtype", {"r": run_id})] for r in d.fetchall()]
            log.info("drift run %s already finished: nothing to do", run_id)
            return DriftResult(run_id, since, until, [], InputDrift(), sum(int(r["n"]) for r in rows),
                               float(rows[0]["job_cost_usd"] or 0.0) if rows else 0.0, already_done=True, rows=rows)
        sample = sample_requests(con, lake_path=config.lake.path, tier="student", since=since, until=until,
                                 size=size, seed=seed,
                                 min_per_subtype=cfg.min_per_subtype)
        if not sample:
            raise NoDataError(
                f"no successful student-served requests with captured content between {since:%Y-%m-%d %H:%M} "
                f"and {until:%Y-%m-%d %H:%M} UTC: turn on content capture ([capture] message_content = true)")
        previous = _previous_runs(con, run_id)
        baseline_id = cfg.baseline_run or (previous[0]["run_id"] if previous else None)
        base_items = []
        if baseline_id:
            cur = con.execute("SELECT subtype, student_score, teacher_score, query, query_chars FROM eval_items "
                              "WHERE run_id = $r", {"r": baseline_id})
            base_items = cur.fetchall()
    finally:
        con.close()

    pricing = PricingTable(config.pricing)
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=len(sample) * (2 if cfg.regenerate_student else 1), unit="answer", desc=f"drift {run_id}",
                   leave=False)
    with Checkpoint(store.checkpoints / f"{run_id}.sqlite") as ckpt:
        ckpt.set_meta("run_id", run_id)
        client = client if client is not None else anthropic_client(config)
        kw: dict[str, Any] = {"progress": bar.update if bar else None, "on_answer": on_answer}
        if sleep is not None:
            kw["sleep"] = sleep
        regen = Regenerator(client, ckpt, pricing=pricing, concurrency=tcfg.concurrency, batch=batch,
                            poll_interval_s=tcfg.poll_interval_s, batch_timeout_s=tcfg.batch_timeout_s,
                            max_error_rate=tcfg.max_error_rate, redo=retryable, **kw)
        treqs = [AnswerRequest(s.request_id, model, s.messages, system=s.system, max_tokens=tcfg.max_tokens)
                 for s in sample]
        tres = regen.run(treqs)
        # by position: a request id is the app's, and two requests (tenants, retries) may share one
        student_answers: list[str | None] = [s.answer for s in sample]
        sent, resumed = tres.sent, tres.resumed
        if cfg.regenerate_student:
            sclient = student if student is not None else student_client(config)
            sreg = Regenerator(sclient, ckpt, api="openai", concurrency=tcfg.concurrency,
                               max_error_rate=tcfg.max_error_rate, **{k: v for k, v in kw.items() if k != "sleep"})
            smodel = config.serving.backends.student_model
            sreqs = [AnswerRequest(s.request_id, smodel, s.messages, system=s.system, max_tokens=tcfg.max_tokens,
                                   purpose="student") for s in sample]
            sres = sreg.run(sreqs)
            student_answers = [sres.answers[r.key].text if r.key in sres.answers else None for r in sreqs]
        if bar is not None:
            bar.close()
        # score
        items, kept = [], []
        unusable = dict.fromkeys(UNUSABLE, 0)
        for s, r, student_answer in zip(sample, treqs, student_answers):
            if r.key not in tres.answers or student_answer is None:
                continue
            ta = tres.answers[r.key]
            why = unusable_reason(ta, r.max_tokens)
            if why:  # paid for, but scoring against it would read as a gap the student does not have
                unusable[why] += 1
                continue
            metric = metric_for(s.subtype, s.task_type, cfg.metrics, cfg.default_metric)
            items.append(ScoreRequest(s.request_id, metric, s.query, student_answer, ta.text, subtype=s.subtype,
                                      task_type=s.task_type))
            kept.append(s)
        screen_unusable("drift", run_id, unusable, asked=len(treqs),
                        missing=sum(r.key not in tres.answers for r in treqs),
                        max_error_rate=tcfg.max_error_rate, cost_usd=ckpt.cost_usd())
        replies = JudgeReplies(max_tokens=cfg.judge_max_tokens)

        def judge(pairs: Sequence[ScoreRequest]) -> list[tuple[float, float]]:
            from costline.jobs.scoring import judge_prompt, parse_judge_score

            reqs = []
            for p in pairs:
                for who, text in (("s", p.answer), ("t", p.reference)):
                    reqs.append(AnswerRequest.of(p.key, model, judge_prompt(cfg.judge_rubric, p.query, text),
                                                 max_tokens=cfg.judge_max_tokens, purpose=f"judge-{who}"))
            jr = regen.run(reqs)
            got = []
            for i, r in enumerate(reqs):
                answer = jr.answers.get(r.key)
                score = parse_judge_score(answer.text) if answer is not None else math.nan
                replies.add(pairs[i // 2].subtype, answer, score)
                got.append(score)
            return [(got[2 * i], got[2 * i + 1]) for i in range(len(pairs))]

        need_embed = any(i.metric == "cosine" for i in items) or cfg.mmd_permutations > 0
        emb = embedder
        scorer = Scorer(answer_pattern=cfg.answer_pattern, answer_patterns=cfg.answer_patterns, embedder=emb,
                        judge=judge, cosine_checks=cfg.cosine_checks)
        scores = scorer.score(items)
        job_cost = ckpt.cost_usd()
    screen_judge(run_id, replies, scored=sum(math.isfinite(a) and math.isfinite(b) for a, b in scores),
                 sampled=len(sample), usable=len(items), max_error_rate=tcfg.max_error_rate, cost_usd=job_cost)

    # assess
    per: dict[str, tuple[list[float], list[float]]] = {}
    for s, (ss, ts) in zip(kept, scores):
        per.setdefault(s.subtype, ([], []))
        per[s.subtype][0].append(ss)
        per[s.subtype][1].append(ts)
    current = {k: SubtypeScores.of(v[0], v[1]) for k, v in per.items()}
    baseline: dict[str, SubtypeScores] = {}
    if base_items:
        bper: dict[str, tuple[list[float], list[float]]] = {}
        for sub, ss, ts, *_ in base_items:
            bper.setdefault(sub, ([], []))
            bper[sub][0].append(ss)
            bper[sub][1].append(ts)
        baseline = {k: SubtypeScores.of(v[0], v[1]) for k, v in bper.items()}
    history: dict[str, list[float]] = {}
    for r in previous:
        if r["gap"] is not None:
            history.setdefault(r["subtype"], []).append(float(r["gap"]))
    seed_rng = np.random.default_rng(int(hashlib.blake2b(run_id.encode(), digest_size=4).hexdigest(), 16))
    assessments = assess_subtypes(current, cfg, baseline=baseline, history=history, rng=seed_rng)
    assessments = [_with_judge_note(a, replies) for a in assessments]
    if not assessments:  # nothing scored (every judge score unreadable, ...): no empty eval_runs, retried later
        raise TeacherError(f"drift {run_id}: none of the {len(sample)} sampled requests could be scored "
                           f"({len(items)} had a usable teacher answer; ${job_cost:.4f} paid so far, kept in the "
                           "run's checkpoint): run it again to resume")
    embeddings = ref_embeddings = None
    if base_items and need_embed and cfg.mmd_permutations > 0:
        try:
            embeddings = scorer.embed([s.query for s in kept])
            ref_embeddings = scorer.embed([b[3] or "" for b in base_items])
        except ImportError as exc:
            log.warning("input drift MMD skipped: %s", exc)
    inputs = assess_inputs([s.subtype for s in kept], [len(s.query) for s in kept],
                           [b[0] for b in base_items], [b[4] for b in base_items], cfg,
                           embeddings=embeddings, reference_embeddings=ref_embeddings, rng=seed_rng)
    finished = _utc(now())
    item_rows = [{
        "run_id": run_id, "request_id": s.request_id, "trace_id": s.trace_id, "ts": s.ts, "subtype": s.subtype,
        "task_type": s.task_type,
        "metric": it.metric, "query": s.query, "student_answer": it.answer, "teacher_answer": it.reference,
        "student_score": sc[0], "teacher_score": sc[1], "query_chars": len(s.query), "tenant": s.tenant,
    } for s, it, sc in zip(kept, items, scores)]
    task_of = {s.subtype: s.task_type for s in kept}
    metric_of = {s.subtype: it.metric for s, it in zip(kept, items)}
    run_rows = [{
        "run_id": run_id, "started_at": started, "finished_at": finished, "since": since, "until": until,
        "subtype": a.subtype, "task_type": task_of.get(a.subtype), "metric": metric_of.get(a.subtype), "n": a.n,
        "student_score": a.student_score, "teacher_score": a.teacher_score, "gap": a.gap,
        "gap_ci_low": a.gap_ci_low, "gap_ci_high": a.gap_ci_high, "threshold": a.threshold,
        "baseline_run_id": baseline_id if a.baseline_gap is not None else None, "baseline_gap": a.baseline_gap,
        "mwu_p": a.mwu_p, "trend_slope": a.trend_slope, "trend_p": a.trend_p, "trend_runs": a.trend_runs,
        "flagged": a.flagged, "reason": a.reason, "input_psi": inputs.psi, "length_ks": inputs.length_ks,
        "length_ks_p": inputs.length_ks_p, "mmd": inputs.mmd, "mmd_p": inputs.mmd_p,
        "input_drift": inputs.drifted, "input_reason": inputs.reason, "teacher_model": model, "batch": batch,
        "job_cost_usd": job_cost, "seed": seed,
    } for a in assessments]
    store.write("eval_items", run_id, item_rows)
    store.write("eval_runs", run_id, run_rows)  # last: a run is visible once its items are
    return DriftResult(run_id, since, until, assessments, inputs, len(kept), job_cost, sent=sent, resumed=resumed,
                       rows=run_rows, unusable=unusable, judge=replies if replies.asked else None)
