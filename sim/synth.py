"""Synthetic OTLP traces that follow the telemetry contract (tests, benchmarks, demos).

:func:`span` builds one protobuf span from plain attributes; :func:`export_request`
wraps spans in an ``ExportTraceServiceRequest`` (one trace per request, like the
Collector's ``partition_traces_by_id``); :func:`synthetic_traffic` makes a seeded
mix of student / API / cache-hit / escalated requests plus standalone calls.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from costline import contract as c

__all__ = ["span", "export_request", "set_anyvalue", "SyntheticTrace", "synthetic_traffic"]


def set_anyvalue(target: AnyValue, value: Any) -> None:
    """Fill an OTLP ``AnyValue`` from a Python value."""
    if isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        target.int_value = value
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, bytes):
        target.bytes_value = value
    elif isinstance(value, (list, tuple)):
        for item in value:
            set_anyvalue(target.array_value.values.add(), item)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            kv = target.kvlist_value.values.add()
            kv.key = k
            set_anyvalue(kv.value, v)
    else:
        raise TypeError(f"unsupported attribute value {value!r}")


def span(
    name: str,
    *,
    trace_id: bytes,
    span_id: bytes,
    parent_span_id: bytes = b"",
    start_ns: int,
    end_ns: int,
    attributes: Mapping[str, Any] | None = None,
) -> Span:
    s = Span(name=name, trace_id=trace_id, span_id=span_id, parent_span_id=parent_span_id,
             start_time_unix_nano=start_ns, end_time_unix_nano=end_ns)
    for k, v in (attributes or {}).items():
        if v is None:
            continue
        kv = s.attributes.add()
        kv.key = k
        set_anyvalue(kv.value, v)
    return s


def export_request(spans: list[Span], service: str = "costline-test") -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key = "service.name"
    kv.value.string_value = service
    ss = rs.scope_spans.add()
    ss.scope.name = "costline"
    ss.spans.extend(spans)
    return req


@dataclass(frozen=True)
class SyntheticTrace:
    trace_id: str  # 32 hex: the Kafka key
    request: ExportTraceServiceRequest


_MODELS = {
    c.TIER_BUDGET: "claude-haiku-4-5",
    c.TIER_MID: "claude-sonnet-4-6-20260101",
    c.TIER_UPPER: "claude-opus-4-8",
    c.TIER_FRONTIER: "claude-fable-5",
}


def _call(rng: random.Random, trace_id: bytes, parent: bytes, request_id: str | None, t_ns: int,
          tier: str, *, error: str | None = None) -> Span:
    if tier == c.TIER_STUDENT:
        provider, model = c.PROVIDER_VLLM, "student-qwen-7b"
    elif tier == "unknown":
        provider, model = c.PROVIDER_OPENAI, "gpt-mystery-1"
    else:
        provider, model = c.PROVIDER_ANTHROPIC, _MODELS[tier]
    inp = rng.randint(50, 4000)
    read = rng.choice([0, 0, rng.randint(0, inp // 2)])
    write = rng.choice([0, 0, rng.randint(0, (inp - read) // 2)])
    attrs: dict[str, Any] = {
        c.GEN_AI_OPERATION_NAME: c.OPERATION_CHAT,
        c.GEN_AI_REQUEST_MODEL: model,
        c.GEN_AI_RESPONSE_MODEL: model,
        c.GEN_AI_USAGE_INPUT_TOKENS: inp,
        c.GEN_AI_USAGE_OUTPUT_TOKENS: rng.randint(1, 1500),
        c.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: read or None,
        c.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: write or None,
        c.GEN_AI_RESPONSE_FINISH_REASONS: ["stop"],
        c.COSTLINE_REQUEST_ID: request_id,
        c.COSTLINE_BATCH: True if rng.random() < 0.1 else None,
        c.ERROR_TYPE: error,
    }
    if rng.random() < 0.5:
        attrs[c.GEN_AI_PROVIDER_NAME] = provider
    else:
        attrs[c.GEN_AI_SYSTEM] = provider
    return span(f"chat {model}", trace_id=trace_id, span_id=rng.randbytes(8) or b"\1" * 8, parent_span_id=parent,
                start_ns=t_ns, end_ns=t_ns + rng.randint(10_000_000, 900_000_000), attributes=attrs)


def synthetic_traffic(
    n: int,
    *,
    seed: int = 0,
    start_ns: int = 1_780_000_000 * 10**9,
    spread_s: float = 3 * 86_400,
    tenants: tuple[str, ...] = ("acme", "globex", "initech"),
) -> Iterator[SyntheticTrace]:
    """``n`` traces: requests served by cache, student, an API tier (some escalated), plus
    standalone calls (no request span) and a few unknown-model calls."""
    rng = random.Random(seed)
    for i in range(n):
        trace_id = rng.randbytes(16)
        t = start_ns + int(rng.random() * spread_s * 1e9)
        kind = rng.random()
        if kind < 0.05:  # standalone call from another GenAI instrumentation
            tier = rng.choice([c.TIER_BUDGET, c.TIER_MID, c.TIER_STUDENT, "unknown"])
            yield SyntheticTrace(trace_id.hex(), export_request(
                [_call(rng, trace_id, b"", None, t, tier, error="timeout" if rng.random() < 0.2 else None)]))
            continue
        req_span_id = rng.randbytes(8)
        request_id = f"req-{seed}-{i}"
        tenant = rng.choice(tenants)
        carry_id = rng.random() < 0.7  # else: linked through the parent span id
        rid = request_id if carry_id else None
        spans: list[Span] = []
        hit = rng.random() < 0.3
        spans.append(span(c.SPAN_CACHE_LOOKUP, trace_id=trace_id, span_id=rng.randbytes(8),
                          parent_span_id=req_span_id, start_ns=t, end_ns=t + 2_000_000,
                          attributes={c.COSTLINE_CACHE_HIT: hit, c.COSTLINE_CACHE_SIMILARITY: rng.random(),
                                      c.COSTLINE_CACHE_NAMESPACE: "default", c.COSTLINE_REQUEST_ID: rid,
                                      c.COSTLINE_TENANT: tenant if rng.random() < 0.5 else None}))
        attempts, escalations, success = 1, 0, True
        routed = rng.choice([c.TIER_STUDENT, c.TIER_BUDGET, c.TIER_MID, c.TIER_UPPER, c.TIER_FRONTIER])
        if hit:
            tier = c.TIER_CACHE
        else:
            tier = routed
            if rng.random() < 0.15:  # a failed attempt, escalated one tier up
                spans.append(_call(rng, trace_id, req_span_id, rid, t, tier, error="quality_gate"))
                order = [c.TIER_STUDENT, *c.API_TIERS]
                tier = order[min(order.index(tier) + 1, len(order) - 1)]
                attempts, escalations = 2, 1
            if rng.random() < 0.02:
                tier = "unknown"
            err = "overloaded" if rng.random() < 0.05 else None
            success = err is None
            spans.append(_call(rng, trace_id, req_span_id, rid, t + 1000, tier, error=err))
            if tier == "unknown":
                tier = c.TIER_MID  # recorded tier of the answer; the model just is not priced
        end = t + rng.randint(1_000_000_000, 3_000_000_000)
        spans.append(span(c.SPAN_REQUEST, trace_id=trace_id, span_id=req_span_id, start_ns=t - 1000, end_ns=end,
                          attributes={c.COSTLINE_REQUEST_ID: request_id, c.COSTLINE_TENANT: tenant,
                                      c.COSTLINE_TASK_TYPE: rng.choice(["qa", "summarize"]),
                                      c.COSTLINE_SUBTYPE: "general", c.COSTLINE_TIER: tier,
                                      c.COSTLINE_ROUTED_TIER: routed, c.COSTLINE_ATTEMPTS: attempts,
                                      c.COSTLINE_ESCALATIONS: escalations, c.COSTLINE_SUCCESS: success,
                                      c.GEN_AI_INPUT_MESSAGES: '[{"role":"user","content":"q"}]'
                                      if tier == c.TIER_STUDENT else None}))
        rng.shuffle(spans)
        yield SyntheticTrace(trace_id.hex(), export_request(spans))
