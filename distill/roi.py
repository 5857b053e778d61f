"""`costline distill roi`: is a student worth it for this traffic, GPU cost included?

From the lake: the student-eligible traffic (requests of ``[distill] task_types`` in the window, not
served by the student) and what the API charged for it. Costs of the student: the GPU it runs on
around the clock, at the hosting schedule's rate (:func:`_gpu_hourly`: the ``[[pricing.hosting]]``
periods in force now, replicas x ``usd_per_hour``, overlapping ones added up; ``[pricing]
student_usd_per_hour`` only when there are none; ``Roi.gpu_cost_source`` says which) and each
distillation (fine-tuning GPU hours at ``train_gpu_usd_per_hour`` plus the teacher's answers to
``sample_size`` requests: the teacher model's own price, batch price when ``[distill] batch``, for the
traffic's mean tokens per call), repeated every ``redistill_every_days``. Break-even requests/day =
(daily GPU cost + amortised distillation cost) / API cost per request; payback = one distillation's
cost / (daily API cost avoided - daily GPU cost).

After a run, ``costline distill roi --run ID`` prices it with what it actually cost: the teacher's
paid answers (``teacher_manifest.json``, the same costs its spans carry) and the training time.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Callable

__all__ = ["Roi", "compute_roi"]


@dataclass(frozen=True)
class Roi:
    days: float
    requests: int
    requests_per_day: float
    api_cost_usd: float
    api_cost_per_request: float
    gpu_usd_per_hour: float
    gpu_usd_per_day: float
    #: Where the GPU's hourly cost came from: the ``[[pricing.hosting]]`` periods used, or
    #: ``[pricing] student_usd_per_hour``.
    gpu_cost_source: str
    distill_cost_usd: float
    teacher_cost_usd: float
    training_cost_usd: float
    amortised_distill_usd_per_day: float
    break_even_requests_per_day: float
    net_saving_usd_per_day: float
    payback_days: float

    def describe(self) -> str:
        lines = [f"{k:32s} {v:,.4f}" if isinstance(v, float) else f"{k:32s} {v}" for k, v in asdict(self).items()]
        verdict = ("worth it" if self.net_saving_usd_per_day > 0 else
                   "NOT worth it: the GPU costs more than the API calls it replaces")
        return "\n".join(lines + [f"verdict: {verdict}"])


def _teacher_estimate(config: Any, sample: int, calls: int, tokens_in: int, tokens_out: int) -> float | None:
    """``sample`` answers of the teacher model (``[distill] teacher_model`` / ``teacher_tier``) at its own
    price (batch price when ``[distill] batch``), each with the traffic's mean tokens per call; None when
    the teacher model is unknown or unpriced."""
    from costline.errors import CostlineError
    from costline.jobs.drift import teacher_model
    from costline.pricing import PricingTable

    cfg = config.distill
    if sample <= 0 or calls <= 0:
        return 0.0 if sample <= 0 else None
    try:
        model = cfg.teacher_model or teacher_model(config, cfg.teacher_tier)
    except CostlineError:
        return None
    price = PricingTable(config.pricing).price_call(
        model=model, provider="anthropic", input_tokens=round(tokens_in * sample / calls),
        output_tokens=round(tokens_out * sample / calls), batch=cfg.batch)
    return None if price.cost_usd is None else float(price.cost_usd)


def _gpu_hourly(pricing: Any, at: datetime) -> tuple[float, str]:
    """The student's GPU cost per hour at ``at`` (naive UTC) and where it came from.

    With ``[[pricing.hosting]]`` periods (:func:`costline.pricing.hosting_schedule`, the views' reader): the
    periods in force at ``at`` (overlapping ones add up); when none is, the next one to start (the hosting
    planned), else the last to end. Without any: ``[pricing] student_usd_per_hour``.
    """
    from costline.pricing import hosting_schedule

    if not pricing.hosting:
        return float(pricing.student_usd_per_hour), "[pricing] student_usd_per_hour (no [[pricing.hosting]])"
    periods = list(zip(pricing.hosting, hosting_schedule(pricing)))

    def live(t: datetime) -> list[tuple[Any, float]]:
        return [(p, rate) for p, (since, until, rate) in periods
                if (since is None or since <= t) and (until is None or t < until)]

    when = f"in force at {at:%Y-%m-%d %H:%M} UTC"
    used = live(at)
    if not used:
        starts = [since for _, (since, _, _) in periods if since is not None and since > at]
        ends = [until for _, (_, until, _) in periods if until is not None and until <= at]
        if starts:
            t = min(starts)
            when = f"starting {t:%Y-%m-%d %H:%M} UTC (none in force at {at:%Y-%m-%d %H:%M} UTC)"
        else:
            t = max(ends) - timedelta(microseconds=1)
            when = f"ended {max(ends):%Y-%m-%d %H:%M} UTC (none in force at {at:%Y-%m-%d %H:%M} UTC)"
        used = live(t)
    what = " + ".join(f"{p.replicas} x ${p.usd_per_hour:g}/h" for p, _ in used)
    return float(sum(rate for _, rate in used)), f"[[pricing.hosting]] {when}: {what}"


def compute_roi(config: Any, *, since: datetime | None = None, until: datetime | None = None,
                teacher_cost_usd: float | None = None, train_gpu_hours: float | None = None,
                now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> Roi:
    """Break-even and payback for ``[distill] task_types`` over ``[since, until)``; see the module docstring.
    :class:`~costline.lake.NoLake` when ``[lake] path`` holds no lake (nothing is created there)."""
    from costline.timeutil import utc_naive
    from costline.lake import open_lake

    cfg = config.distill
    until = utc_naive(until or now())
    defaulted = since is None
    since = utc_naive(since) if since else until - timedelta(days=cfg.window_days)
    con = open_lake(config, create=False, views=("requests",))  # no lake is an error, not a verdict from zero traffic
    try:
        if defaulted:  # a lake younger than the default window: per day over the days it has, not the window's
            (first,) = con.execute("SELECT min(ts) FROM requests WHERE ts < $u", {"u": until}).fetchone()
            if first is not None and first > since:
                since = first
        n, cost, calls, tok_in, tok_out = con.execute(
            "SELECT count(*), coalesce(sum(call_cost_usd), 0), coalesce(sum(calls), 0), "
            "coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0) FROM requests WHERE ts >= $s "
            "AND ts < $u AND NOT standalone AND coalesce(tier, '') <> 'student' AND task_type IN (SELECT unnest($tt))",
            {"s": since, "u": until, "tt": list(cfg.task_types)}).fetchone()
    finally:
        con.close()
    days = max((until - since).total_seconds() / 86400.0, 1e-9)
    n, cost = int(n), float(cost)
    per_req = cost / n if n else 0.0
    if teacher_cost_usd is None:  # the teacher answers a sample once
        teacher_cost_usd = _teacher_estimate(config, min(cfg.sample_size, n), int(calls), int(tok_in), int(tok_out))
        if teacher_cost_usd is None:  # no priced teacher model: what the traffic paid, at the batch price
            teacher_cost_usd = min(cfg.sample_size, n) * per_req * config.pricing.batch_multiplier
    hours = cfg.train_gpu_hours if train_gpu_hours is None else train_gpu_hours
    training = hours * cfg.train_gpu_usd_per_hour
    distill = training + teacher_cost_usd
    gpu_hour, gpu_source = _gpu_hourly(config.pricing, utc_naive(now()))
    gpu_day = gpu_hour * 24.0
    amort = distill / cfg.redistill_every_days
    rpd = n / days
    break_even = (gpu_day + amort) / per_req if per_req > 0 else math.inf
    daily_margin = rpd * per_req - gpu_day
    payback = distill / daily_margin if daily_margin > 0 else math.inf
    return Roi(days=days, requests=n, requests_per_day=rpd, api_cost_usd=cost, api_cost_per_request=per_req,
               gpu_usd_per_hour=gpu_hour, gpu_usd_per_day=gpu_day, gpu_cost_source=gpu_source,
               distill_cost_usd=distill, teacher_cost_usd=teacher_cost_usd, training_cost_usd=training,
               amortised_distill_usd_per_day=amort, break_even_requests_per_day=break_even,
               net_saving_usd_per_day=daily_margin - amort, payback_days=payback)
