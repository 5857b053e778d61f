"""`costline jobs shadow`: is routing still right?

For each tier below frontier (``[jobs.shadow] tiers``) a sample of the requests it served,
stratified by subtype, is re-run on the next tier up; the cheaper answer counts as adequate
when it *matches* the stronger one (the drift job's metrics, score >= ``match_threshold``; a subtype the
drift job scores with an LLM judge is compared by ``cosine`` here: the judge scores quality, not agreement).

Per tier: the **tier-match rate** with a Wilson 95% CI, compared with the pooled previous
``baseline_runs`` runs (one-sided two-proportion z-test) and trended (Theil-Sen, Mann-Kendall).
A tier with fewer than :data:`MIN_N` (30) scored requests is "too few to judge" (said in its
``reason``) and never flagged. From :data:`MIN_N` on it is flagged when

* its rate is *significantly* under ``min_rate``: the exact (Clopper-Pearson) upper bound of the rate
  at one-sided level 1 - alpha is below the floor (a bare rate under it is noise at small n: a tier
  matching 90 % of the time shows under 85 % on 26 % of 10-item nights), or
* it is at least ``drop`` under the baseline with p < alpha, or
* it is falling by at least ``drop`` over the trend window with p < alpha.

Each tier is also judged **per slice** (its requests of one subtype, of one task type), so one kind of request
that fails while the rest match is not averaged away: a slice with at least :data:`MIN_N` scored requests is
flagged when its exact upper bound is under ``min_rate`` at level ``alpha / k``, ``k`` the tier's judged slices
(Bonferroni: more slices do not mean more false alarms); it flags its tier and is named in
``TierAssessment.slices`` and the reason. A slice under :data:`MIN_N` is not judged (a note says so).

A regenerated answer (the next tier's, and with ``regenerate_cheap`` the tier's own) that is no
answer to compare with (:func:`costline.jobs.teacher.unusable_reason`: not a message, a refusal, cut,
empty) is left out and counted (``ShadowResult.unusable``), with the same rule as the drift job
(:func:`costline.jobs.drift.screen_unusable`): past ``[jobs.teacher] max_error_rate`` of the sample
the run fails and is retried. A run with nothing scored writes nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from costline import contract
from costline.config import Config
from costline.jobs.errors import NoDataError, TeacherError
from costline.jobs.settings import ShadowConfig
from costline.jobs.stats import proportion_drop_p, trend, wilson_ci
from costline.timeutil import utc_naive as _utc

__all__ = ["TierAssessment", "SliceAssessment", "ShadowResult", "assess_tiers", "run_shadow", "next_tier", "MIN_N"]

log = logging.getLogger(__name__)

#: A tier is judged from this many scored requests (``[jobs.shadow] per_tier`` is 150 by default); under it
#: no rule flags it: "too few to judge".
MIN_N = 30


def rate_upper_bound(hits: int, n: int, alpha: float) -> float:
    """The exact (Clopper-Pearson) one-sided ``1 - alpha`` upper bound of the rate ``hits / n``."""
    from scipy.stats import binomtest

    return float(binomtest(hits, n).proportion_ci(confidence_level=1.0 - 2.0 * alpha, method="exact").high)


def next_tier(tier: str) -> str | None:
    """The API tier above ``tier`` (the student's is mid, as the router escalates it)."""
    if tier == contract.TIER_STUDENT:
        return contract.TIER_MID
    tiers = contract.API_TIERS
    return tiers[tiers.index(tier) + 1] if tier in tiers and tier != tiers[-1] else None


#: The slice kinds a tier is judged by, in this order (each is a column of ``shadow_items``).
SLICE_KINDS = ("subtype", "task_type")


@dataclass(frozen=True)
class SliceAssessment:
    """One slice of a tier: its requests of one ``kind`` (:data:`SLICE_KINDS`) value ``name``."""

    kind: str
    name: str
    n: int
    matches: int
    rate: float
    #: The exact one-sided upper bound at the slice's Bonferroni level; None when not judged (n < MIN_N).
    upper: float | None
    #: The one-sided level the bound is at: ``alpha / k`` (k: the tier's judged slices); None when not judged.
    alpha: float | None
    flagged: bool
    reason: str

    @property
    def judged(self) -> bool:
        return self.upper is not None

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "n": self.n, "matches": self.matches, "rate": self.rate,
                "upper": self.upper, "alpha": self.alpha, "flagged": self.flagged, "reason": self.reason}


def assess_slices(counts: Mapping[tuple[str, str], tuple[int, int]], cfg: ShadowConfig) -> list[SliceAssessment]:
    """``counts[(kind, name)] = (matches, n)`` of one tier → its slices, judged by the floor rule at
    ``alpha / k`` (k: slices with at least :data:`MIN_N` scored requests); the rest are noted, never flagged."""
    items = sorted(((k, str(v)), (int(h), int(m))) for (k, v), (h, m) in counts.items() if m > 0)
    k = sum(m >= MIN_N for _, (_, m) in items)
    level = cfg.alpha / k if k else None
    out = []
    for (kind, name), (hits, n) in items:
        label = f"{kind} {name}"
        if n < MIN_N or level is None:
            out.append(SliceAssessment(kind, name, n, hits, hits / n, None, None, False,
                                       f"{label}: {hits}/{n} matched, too few to judge (under the {MIN_N} a "
                                       "slice needs)"))
            continue
        upper = rate_upper_bound(hits, n, level)
        flagged = upper < cfg.min_rate
        how = "under" if flagged else "not under"
        out.append(SliceAssessment(kind, name, n, hits, hits / n, upper, level, flagged,
                                   f"{label}: {hits}/{n} matched (upper bound {upper:.1%} at one-sided level "
                                   f"{level:.2g}) {how} the floor {cfg.min_rate:.0%}"))
    return out


@dataclass(frozen=True)
class TierAssessment:
    tier: str
    n: int
    matches: int
    rate: float
    ci_low: float
    ci_high: float
    baseline_rate: float | None
    drop_p: float | None
    trend_slope: float | None
    trend_p: float | None
    flagged: bool
    reason: str
    #: The tier's slices (:func:`assess_slices`); a flagged one flags the tier.
    slices: tuple[SliceAssessment, ...] = ()

    @property
    def flagged_slices(self) -> list[SliceAssessment]:
        return [s for s in self.slices if s.flagged]


def assess_tiers(
    current: Mapping[str, tuple[int, int]],
    cfg: ShadowConfig,
    *,
    history: Mapping[str, Sequence[tuple[int, int]]] | None = None,
    slices: Mapping[str, Mapping[tuple[str, str], tuple[int, int]]] | None = None,
) -> list[TierAssessment]:
    """``current[tier] = (matches, n)``; ``history[tier]``: previous runs' (matches, n), oldest first;
    ``slices[tier][(kind, name)] = (matches, n)``: the tier's slices (:func:`assess_slices`)."""
    history = history or {}
    slices = slices or {}
    out = []
    for tier in sorted(current):
        hits, n = current[tier]
        if n <= 0:
            continue
        rate = hits / n
        lo, hi = wilson_ci(hits, n)
        prev = list(history.get(tier, ()))
        base = prev[-cfg.baseline_runs:] if cfg.baseline_runs > 0 else []
        base_rate = drop_p = None
        reasons = []
        judged = n >= MIN_N
        notes = [] if judged else [f"too few to judge: {n} scored requests, under the {MIN_N} a tier needs"]
        if judged and rate < cfg.min_rate:
            upper = rate_upper_bound(hits, n, cfg.alpha)
            if upper < cfg.min_rate:
                reasons.append(f"tier-match rate {rate:.1%} (one-sided {100 * (1 - cfg.alpha):.3g}% upper bound "
                               f"{upper:.1%}) is under the floor {cfg.min_rate:.0%}")
        if base:
            bh, bn = sum(h for h, _ in base), sum(m for _, m in base)
            if bn > 0:
                base_rate = bh / bn
                drop_p = proportion_drop_p(hits, n, bh, bn)
                if judged and base_rate - rate >= cfg.drop and drop_p < cfg.alpha:
                    reasons.append(f"tier-match rate fell {base_rate - rate:.1%} from {base_rate:.1%} over the "
                                   f"previous {len(base)} runs (p={drop_p:.2g})")
        series = [h / m for h, m in prev if m > 0][-(cfg.baseline_runs):] + [rate]
        slope = tp = None
        if len(series) >= 5:
            t = trend(series)
            slope, tp = t.slope, t.p_decreasing
            if judged and tp < cfg.alpha and -slope * (len(series) - 1) >= cfg.drop:
                reasons.append(f"tier-match rate falling {slope:+.2%} per run over {len(series)} runs (p={tp:.2g})")
        parts = assess_slices(slices.get(tier, {}), cfg)
        reasons += [p.reason for p in parts if p.flagged]
        unjudged = [p for p in parts if not p.judged]
        if unjudged:
            notes.append(f"{len(unjudged)} slice{'' if len(unjudged) == 1 else 's'} under {MIN_N} scored requests "
                         f"not judged ({', '.join(f'{p.kind} {p.name}: {p.n}' for p in unjudged[:10])}"
                         f"{', ...' if len(unjudged) > 10 else ''})")
        out.append(TierAssessment(tier, n, hits, rate, lo, hi, base_rate, drop_p, slope, tp, bool(reasons),
                                  "; ".join(reasons + notes), tuple(parts)))
    return out


@dataclass
class ShadowResult:
    run_id: str
    assessments: list[TierAssessment]
    cost_usd: float
    sent: int = 0
    already_done: bool = False
    rows: list[dict[str, Any]] = field(default_factory=list)
    #: Regenerated answers paid for but left out of scoring, by kind (:data:`costline.jobs.teacher.UNUSABLE`).
    unusable: dict[str, int] = field(default_factory=dict)

    @property
    def flagged(self) -> list[str]:
        return [a.tier for a in self.assessments if a.flagged]


def run_shadow(
    config: Config,
    *,
    since: datetime,
    until: datetime,
    seed: int = 0,
    per_tier: int | None = None,
    batch: bool = False,
    run_id: str | None = None,
    rerun: bool = False,
    client: Any = None,
    embedder: Any = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    sleep: Callable[[float], None] | None = None,
    show_progress: bool = False,
) -> ShadowResult:
    """Run the shadow evaluation over ``[since, until)``; see the module docstring."""
    from costline.jobs import validate
    from costline.jobs.drift import drift_run_id, screen_unusable, teacher_model
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
        unusable_reason,
    )
    from costline.pricing import PricingTable

    validate(config)
    cfg = config.jobs.shadow
    dcfg = config.jobs.drift
    tcfg = config.jobs.teacher
    since, until = _utc(since), _utc(until)
    size = per_tier or cfg.per_tier
    run_id = run_id or drift_run_id("shadow", until, {"since": since, "size": size, "seed": seed,
                                                      "tiers": cfg.tiers, "regen": cfg.regenerate_cheap})
    store = job_store(config).init()
    started = _utc(now())
    con = open_jobs_lake(config)
    try:
        if store.exists("shadow_runs", run_id) and not rerun:
            cur = con.execute("SELECT * FROM shadow_runs WHERE run_id = $r ORDER BY tier", {"r": run_id})
            rows = [dict(zip([c[0] for c in cur.description], r)) for r in cur.fetchall()]
            return ShadowResult(run_id, [], float(rows[0]["job_cost_usd"] or 0.0) if rows else 0.0,
                                already_done=True, rows=rows)
        samples = {}
        for tier in cfg.tiers:
            up = next_tier(tier)
            if up is None:
                continue
            samples[tier] = sample_requests(con, lake_path=config.lake.path, tier=tier, since=since, until=until,
                                            size=size, seed=seed,
                                            min_per_subtype=min(dcfg.min_per_subtype, size))
        cur = con.execute("SELECT tier, matches, n FROM shadow_runs WHERE run_id <> $r ORDER BY finished_at",
                          {"r": run_id})
        history: dict[str, list[tuple[int, int]]] = {}
        for tier, m, n in cur.fetchall():
            history.setdefault(tier, []).append((int(m), int(n)))
    finally:
        con.close()
    if not any(samples.values()):
        raise NoDataError(f"no successful requests with captured content served by {', '.join(cfg.tiers)} between "
                          f"{since:%Y-%m-%d %H:%M} and {until:%Y-%m-%d %H:%M} UTC: turn on content capture")
    reqs: list[AnswerRequest] = []
    pairs: list[tuple[str, Any, AnswerRequest, AnswerRequest | None]] = []
    for tier, sample in samples.items():
        up = next_tier(tier)
        assert up is not None
        up_model, own_model = teacher_model(config, up), teacher_model(config, tier)
        for s in sample:
            ref = AnswerRequest(s.request_id, up_model, s.messages, system=s.system, max_tokens=tcfg.max_tokens,
                                purpose=f"shadow-{up}")
            own = (AnswerRequest(s.request_id, own_model, s.messages, system=s.system, max_tokens=tcfg.max_tokens,
                                 purpose=f"shadow-{tier}") if cfg.regenerate_cheap else None)
            reqs += [ref] + ([own] if own else [])
            pairs.append((tier, s, ref, own))
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=len(reqs), unit="answer", desc=f"shadow {run_id}", leave=False)
    with Checkpoint(store.checkpoints / f"{run_id}.sqlite") as ckpt:
        client = client if client is not None else anthropic_client(config)
        kw: dict[str, Any] = {"progress": bar.update if bar else None}
        if sleep is not None:
            kw["sleep"] = sleep
        regen = Regenerator(client, ckpt, pricing=PricingTable(config.pricing), concurrency=tcfg.concurrency,
                            batch=batch, poll_interval_s=tcfg.poll_interval_s, batch_timeout_s=tcfg.batch_timeout_s,
                            max_error_rate=tcfg.max_error_rate, redo=retryable, **kw)
        res = regen.run(reqs)
        job_cost = ckpt.cost_usd()
    if bar is not None:
        bar.close()
    items, meta = [], []
    unusable = dict.fromkeys(UNUSABLE, 0)
    for tier, s, ref, own in pairs:
        if ref.key not in res.answers or (own is not None and own.key not in res.answers):
            continue
        # the same screen as drift's: an empty, cut or refused answer is no answer to compare with
        whys = [unusable_reason(res.answers[r.key], r.max_tokens) for r in (ref, own) if r is not None]
        why = next((w for w in whys if w), None)
        if why:
            unusable[why] += 1
            continue
        answer = res.answers[own.key].text if own is not None else s.answer
        metric = metric_for(s.subtype, s.task_type, dcfg.metrics, dcfg.default_metric)
        if metric == "judge":
            # a judge scores quality, not agreement, and a judged subtype's answers are free text: two adequate
            # answers agree in meaning, not word for word, so they are compared by cosine (exact match would
            # call every paraphrase a miss and fail the tier)
            metric = "cosine"
        items.append(ScoreRequest(s.request_id, metric, s.query, answer, res.answers[ref.key].text,
                                  subtype=s.subtype, task_type=s.task_type))
        meta.append((tier, s))
    screen_unusable("shadow", run_id, unusable, asked=len(pairs),
                    missing=sum(ref.key not in res.answers or (own is not None and own.key not in res.answers)
                                for _, _, ref, own in pairs),
                    max_error_rate=tcfg.max_error_rate, cost_usd=job_cost)
    scores = Scorer(answer_pattern=dcfg.answer_pattern, answer_patterns=dcfg.answer_patterns,
                    embedder=embedder, cosine_checks=dcfg.cosine_checks).score(items)
    counts: dict[str, list[int]] = {}
    slice_counts: dict[str, dict[tuple[str, str], list[int]]] = {}
    item_rows = []
    for (tier, s), it, (score, _) in zip(meta, items, scores):
        match = bool(score >= cfg.match_threshold)
        c = counts.setdefault(tier, [0, 0])
        c[0] += int(match)
        c[1] += 1
        for kind in SLICE_KINDS:
            value = getattr(s, kind, None)
            if value is not None and str(value) != "":
                sc = slice_counts.setdefault(tier, {}).setdefault((kind, str(value)), [0, 0])
                sc[0] += int(match)
                sc[1] += 1
        item_rows.append({"run_id": run_id, "request_id": s.request_id, "trace_id": s.trace_id, "tier": tier,
                          "next_tier": next_tier(tier), "subtype": s.subtype, "task_type": s.task_type,
                          "metric": it.metric, "score": score, "match": match, "tenant": s.tenant})
    assessments = assess_tiers({t: (c[0], c[1]) for t, c in counts.items()}, cfg, history=history,
                               slices={t: {k: (v[0], v[1]) for k, v in sc.items()} for t, sc in slice_counts.items()})
    if not assessments:  # no empty shadow_runs: the window is retried
        raise TeacherError(f"shadow {run_id}: none of the {len(pairs)} sampled requests could be scored "
                           f"(${job_cost:.4f} paid so far, kept in the run's checkpoint): run it again to resume")
    finished = _utc(now())
    rows = [{
        "run_id": run_id, "started_at": started, "finished_at": finished, "since": since, "until": until,
        "tier": a.tier, "next_tier": next_tier(a.tier), "n": a.n, "matches": a.matches, "tier_match_rate": a.rate,
        "rate_ci_low": a.ci_low, "rate_ci_high": a.ci_high, "baseline_rate": a.baseline_rate, "drop_p": a.drop_p,
        "trend_slope": a.trend_slope, "trend_p": a.trend_p, "flagged": a.flagged, "reason": a.reason,
        "slices": json.dumps([p.as_dict() for p in a.slices], separators=(",", ":")),
        "job_cost_usd": job_cost, "seed": seed,
    } for a in assessments]
    store.write("shadow_items", run_id, item_rows)
    store.write("shadow_runs", run_id, rows)
    return ShadowResult(run_id, assessments, job_cost, sent=res.sent, rows=rows, unusable=unusable)

