"""A built-in, deterministic sample of LLM traffic over simulated days.

Each :class:`RequestPlan` says what one application request did: which tenant
asked what kind of question, whether the semantic cache answered, which model
calls were made (with token counts, errors and escalations) and whether the
application accepted the answer. Plans are plain data: :mod:`costline.demo`
replays them through the real telemetry path (recorder → Kafka → processor →
lake) and the tests compute the expected aggregates from the same plans,
independently of the processor.

Two incidents can be injected, as the article warns:

* **stale cache** — a tenant's policy document changes on ``stale_day`` without
  invalidation (hits continue, serving stale answers) and is invalidated late,
  ``stale_hours`` hours later: that tenant's hit rate then falls far under its
  7-day average until the cache refills;
* **student shift** — from ``shift_day`` on, a new subtype reaches the student
  and more of its answers are rejected.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from costline import contract

__all__ = ["CallPlan", "LookupPlan", "RequestPlan", "TrafficSpec", "sample_traffic", "TIER_MODELS"]

#: Model and provider per tier, as the default pricing table knows them.
TIER_MODELS: dict[str, tuple[str, str]] = {
    contract.TIER_BUDGET: ("anthropic", "claude-haiku-4-5-20251001"),
    contract.TIER_MID: ("anthropic", "claude-sonnet-4-6"),
    contract.TIER_UPPER: ("anthropic", "claude-opus-4-8"),
    contract.TIER_FRONTIER: ("anthropic", "claude-fable-5"),
    contract.TIER_STUDENT: ("vllm", "costline-student-lora"),
}
_NEXT_TIER = {
    contract.TIER_STUDENT: contract.TIER_MID,
    contract.TIER_BUDGET: contract.TIER_MID,
    contract.TIER_MID: contract.TIER_UPPER,
    contract.TIER_UPPER: contract.TIER_FRONTIER,
}


@dataclass(frozen=True, slots=True)
class CallPlan:
    tier: str
    provider: str
    model: str
    input_tokens: int  # includes cache_read + cache_creation (GenAI conventions)
    output_tokens: int
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    error_type: str | None = None
    duration_ms: int = 500


@dataclass(frozen=True, slots=True)
class LookupPlan:
    hit: bool
    similarity: float
    namespace: str


@dataclass(frozen=True, slots=True)
class RequestPlan:
    request_id: str
    start: datetime
    tenant: str
    task_type: str
    subtype: str
    routed_tier: str
    served_by: str
    success: bool
    lookup: LookupPlan | None
    calls: tuple[CallPlan, ...]
    query: str
    answer: str

    @property
    def lookup_end(self) -> datetime:
        """When the cache lookup span ends (it starts with the request)."""
        return self.start + timedelta(milliseconds=1)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(milliseconds=5 + sum(c.duration_ms for c in self.calls))


@dataclass(frozen=True)
class TrafficSpec:
    days: int = 8
    requests_per_day: int = 3000
    start: datetime = datetime(2026, 11, 1, tzinfo=UTC)
    seed: int = 7
    tenants: tuple[str, ...] = ("acme", "globex", "initech")
    #: Day (0-based) on which acme's policy document changes without invalidation; None: no incident.
    stale_day: int | None = 6
    stale_hours: int = 10
    #: Hours after the late invalidation until the cache has refilled.
    refill_hours: int = 12
    #: Day from which the student gets a shifted slice of traffic; None: no incident.
    shift_day: int | None = 7
    base_hit_rate: float = 0.45
    mix: dict[str, float] = field(
        default_factory=lambda: {
            "faq": 0.50,
            "classification": 0.20,
            "extraction": 0.08,
            "coding": 0.10,
            "analysis": 0.07,
            "complex_reasoning": 0.05,
        }
    )


_SUBTYPES = {
    "faq": ("billing", "password", "shipping", "refunds"),
    "classification": ("sentiment", "intent", "urgency"),
    "extraction": ("invoice", "address"),
    "coding": ("python", "sql"),
    "analysis": ("churn", "pricing"),
    "complex_reasoning": ("contract", "strategy"),
}
_QUESTIONS = {
    "faq": "How do I {x}? I tried the settings page but could not find where to {x}.",
    "classification": "Classify the {x} of: 'my order arrived late and the box was damaged'",
    "extraction": "Extract the {x} fields from the attached document as JSON.",
    "coding": "Write a function that handles {x} input and explain the edge cases it covers in detail.",
    "analysis": "Analyse last quarter's {x} numbers across regions and tell me what changed and why it matters.",
    "complex_reasoning": "Given the {x} terms below, reason step by step about the risks and what we should do.",
}


def _route(task_type: str, query: str) -> str:
    """The article's heuristic router, with the student gated for classification."""
    if task_type == "classification":
        return contract.TIER_STUDENT
    if len(query) < 200 and task_type in ("faq", "extraction"):
        return contract.TIER_BUDGET
    if task_type == "coding" or "explain" in query.lower():
        return contract.TIER_MID
    if task_type in ("complex_reasoning", "analysis"):
        return contract.TIER_UPPER
    return contract.TIER_FRONTIER


def sample_traffic(spec: TrafficSpec | None = None) -> Iterator[RequestPlan]:
    """Yield the plans of ``spec.days`` simulated days, in time order, deterministically."""
    spec = spec or TrafficSpec()
    rng = random.Random(spec.seed)
    kinds = list(spec.mix)
    weights = [spec.mix[k] for k in kinds]
    total = spec.days * spec.requests_per_day
    step = timedelta(days=spec.days) / total
    for i in range(total):
        # Traffic is evenly spread with jitter, so every hourly window has lookups.
        start = spec.start + step * i + timedelta(milliseconds=rng.randrange(0, max(int(step.total_seconds() * 500), 1)))
        day = (start - spec.start).days
        hour_of_run = int((start - spec.start).total_seconds() // 3600)
        tenant = spec.tenants[rng.randrange(len(spec.tenants))]
        task_type = rng.choices(kinds, weights)[0]
        subtype = rng.choice(_SUBTYPES[task_type])
        shifted = spec.shift_day is not None and day >= spec.shift_day and task_type == "classification"
        if shifted and rng.random() < 0.5:
            subtype = "sarcasm"  # a slice the student was never trained on
        query = _QUESTIONS[task_type].format(x=subtype)
        routed = _route(task_type, query)
        request_id = hashlib.blake2b(f"{spec.seed}-{i}".encode(), digest_size=8).hexdigest()

        lookup = None
        if task_type == "faq":
            rate = spec.base_hit_rate
            if spec.stale_day is not None and tenant == "acme":
                invalidated_at = spec.stale_day * 24 + spec.stale_hours
                since = hour_of_run - invalidated_at
                if 0 <= since < spec.refill_hours:
                    # Emptied by the late invalidation, the cache refills over the next hours.
                    rate = spec.base_hit_rate * max(since - spec.refill_hours // 2, 0) / (spec.refill_hours / 2)
            hit = rng.random() < rate
            similarity = round(rng.uniform(0.93, 0.995) if hit else rng.uniform(0.55, 0.92), 4)
            lookup = LookupPlan(hit, similarity, tenant)
            if hit:
                yield RequestPlan(request_id, start, tenant, task_type, subtype, routed, contract.TIER_CACHE,
                                  rng.random() > 0.01, lookup, (), query, f"(cached) answer about {subtype}")
                continue

        calls: list[CallPlan] = []
        tier = routed
        success = False
        for attempt in range(3):
            provider, model = TIER_MODELS[tier]
            prompt = len(query) // 4 + rng.randrange(200, 900)
            cache_read = rng.randrange(0, prompt // 2) if provider == "anthropic" and rng.random() < 0.3 else 0
            cache_write = rng.randrange(0, 200) if provider == "anthropic" and rng.random() < 0.05 else 0
            output = rng.randrange(20, 80) if task_type == "classification" else rng.randrange(150, 700)
            error = "OverloadedError" if provider == "anthropic" and rng.random() < 0.01 else None
            calls.append(CallPlan(tier, provider, model, prompt + cache_read + cache_write,
                                  0 if error else output, cache_read, cache_write, error,
                                  duration_ms=rng.randrange(80, 400) if tier in ("budget", "student") else rng.randrange(600, 3000)))
            if error:
                continue  # retried on the same tier
            fail_rate = 0.06
            if tier == contract.TIER_STUDENT:
                fail_rate = 0.35 if subtype == "sarcasm" else 0.04
            if rng.random() < fail_rate and tier in _NEXT_TIER and attempt < 2:
                tier = _NEXT_TIER[tier]  # validator rejected the answer: escalate
                continue
            success = rng.random() > 0.02
            break
        served = calls[-1].tier if calls else routed
        yield RequestPlan(request_id, start, tenant, task_type, subtype, routed, served, success, lookup,
                          tuple(calls), query, f"answer about {subtype} from {served}")
