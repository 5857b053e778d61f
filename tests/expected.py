"""Expected aggregates computed straight from traffic plans, independently of the processor.

Prices are written out here from the article's table rather than taken from
costline.pricing, so a pricing bug cannot cancel itself out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime

from costline.traffic import CallPlan, RequestPlan

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


def tier_hourly(plans: Iterable[RequestPlan], student_usd_per_hour: float = STUDENT_USD_PER_HOUR) -> dict:
    """{(window_start, tier): (requests, successes, cost_usd)}; windows by request end time."""
    plans = list(plans)
    students = defaultdict(int)
    for p in plans:
        if p.served_by == "student":
            students[hour(p.end)] += 1
    out: dict = defaultdict(lambda: [0, 0, 0.0])
    for p in plans:
        key = (hour(p.end), p.served_by)
        row = out[key]
        row[0] += 1
        row[1] += int(p.success)
        row[2] += sum(call_cost(c) for c in p.calls)
        if p.served_by == "student":
            row[2] += student_usd_per_hour / students[hour(p.end)]
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
