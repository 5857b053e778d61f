"""Expected aggregates computed straight from traffic plans, independently of the processor.

Prices are written out here from the article's table rather than taken from
costline.pricing, so a pricing bug cannot cancel itself out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta

from costline.sim.traffic import CallPlan, RequestPlan

# USD per token (input, output), the article's June 2026 table.
PRICES = {
    "claude-haiku-4-5-20251001": (0.80e-6, 4e-6),
    "claude-sonnet-4-6": (3e-6, 15e-6),
    "claude-opus-4-8": (5e-6, 25e-6),
    "claude-fable-5": (10e-6, 50e-6),
}
STUDENT_USD_PER_HOUR = 2.74


def call_cost(c: CallPlan) -> float:
    if c.provider == "vllm":
        return 0.0
    inp, out = PRICES[c.model]
    uncached = c.input_tokens - c.cache_read_tokens - c.cache_creation_tokens
    return uncached * inp + c.cache_read_tokens * inp * 0.1 + c.cache_creation_tokens * inp * 1.25 + c.output_tokens * out


def hour(ts: datetime) -> datetime:
    return ts.replace(minute=0, second=0, microsecond=0, tzinfo=None)


def call_ends(p: RequestPlan) -> list[datetime]:
    """When each planned call span ends (as costline.sim.demo.replay_one records them)."""
    at, out = p.start + timedelta(milliseconds=2), []
    for c in p.calls:
        at += timedelta(milliseconds=c.duration_ms)
        out.append(at)
    return out


def tier_hourly(plans: Iterable[RequestPlan], student_usd_per_hour: float = STUDENT_USD_PER_HOUR) -> dict:
    """{(window_start, tier): (requests, successes, cost_usd)}; windows by request end time.

    Hosting (docs/sql.md): ``student_usd_per_hour`` for every hour from the hour of the first student
    call to the hour of the newest span (these plans have no silence longer than hosting_open_gap_hours);
    each hour's cost shared equally by the requests of that hour
    that made a student call (answered or escalated away); an hour nobody shared is a student row with
    0 requests.
    """
    plans = list(plans)
    sharers = defaultdict(int)
    student_call_ends = [e for p in plans for c, e in zip(p.calls, call_ends(p)) if c.provider == "vllm"]
    for p in plans:
        if any(c.provider == "vllm" for c in p.calls):
            sharers[hour(p.end)] += 1
    out: dict = defaultdict(lambda: [0, 0, 0.0])
    for p in plans:
        key = (hour(p.end), p.served_by)
        row = out[key]
        row[0] += 1
        row[1] += int(p.success)
        row[2] += sum(call_cost(c) for c in p.calls)
        if any(c.provider == "vllm" for c in p.calls):
            row[2] += student_usd_per_hour / sharers[hour(p.end)]
    if student_call_ends and student_usd_per_hour > 0:
        h, last = hour(min(student_call_ends)), hour(max(p.end for p in plans))
        while h <= last:
            if not sharers.get(h):
                out[(h, "student")][2] += student_usd_per_hour
            h += timedelta(hours=1)
    return {k: tuple(v) for k, v in out.items()}


def cache_hourly(plans: Iterable[RequestPlan]) -> dict:
    """{(window_start, tenant): (lookups, hits)}; windows by lookup end time."""
    out: dict = defaultdict(lambda: [0, 0])
    for p in plans:
        if p.lookup is not None:
            row = out[(hour(p.lookup_end), p.tenant)]
            row[0] += 1
            row[1] += int(p.lookup.hit)
    return {k: tuple(v) for k, v in out.items()}


HOUR_US = 3_600_000_000


def add_hosting(out: dict, answered: Iterable[tuple[int, str, bool, float, bool]], student_call_ends_us: Iterable[int],
                last_end_us: int, rate: float) -> None:
    """Add the rows of ``answered`` (end µs, tier, ok, call cost, shares hosting) and the student's hosting
    to ``out`` (``{(hour index, tier): [requests, successes, cost]}``), by the rules in docs/sql.md:
    ``rate`` every hour from the first student call's hour to the newest span's hour (no silence longer
    than hosting_open_gap_hours in these lakes); shared equally
    by the hour's requests that made a student call without an explicit price; an hour nobody
    shared is a student row with 0 requests."""
    answered = list(answered)
    sharers: dict[int, int] = defaultdict(int)
    for ts, _tier, _ok, _cost, shares in answered:
        if shares:
            sharers[ts // HOUR_US] += 1
    for ts, tier, ok, cost, shares in answered:
        acc = out[(ts // HOUR_US, tier)]
        acc[0] += 1
        acc[1] += int(ok)
        acc[2] += cost + (rate / sharers[ts // HOUR_US] if shares else 0.0)
    ends = list(student_call_ends_us)
    if ends and rate > 0:
        for h in range(min(ends) // HOUR_US, last_end_us // HOUR_US + 1):
            if not sharers.get(h):
                out[(h, "student")][2] += rate
