"""Hypothesis strategies and settings shared by the fuzz tests (tests/test_fuzz_*.py).

Fixed budget, no deadline, derandomized: the same examples on every CI run, in seconds.
"""

from __future__ import annotations

import gzip
import json

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from costline import contract as c

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

ATTRIBUTE_KEYS = [
    c.GEN_AI_OPERATION_NAME, c.GEN_AI_PROVIDER_NAME, c.GEN_AI_SYSTEM, c.GEN_AI_REQUEST_MODEL,
    c.GEN_AI_RESPONSE_MODEL, c.GEN_AI_RESPONSE_ID, c.GEN_AI_RESPONSE_FINISH_REASONS, c.GEN_AI_REQUEST_MAX_TOKENS,
    c.GEN_AI_USAGE_INPUT_TOKENS, c.GEN_AI_USAGE_OUTPUT_TOKENS, c.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
    c.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, c.ERROR_TYPE, c.COSTLINE_TIER, c.COSTLINE_REQUEST_ID,
    c.COSTLINE_COST_USD, c.COSTLINE_BATCH, c.COSTLINE_CACHE_HIT, c.COSTLINE_CACHE_SIMILARITY,
    c.COSTLINE_CACHE_NAMESPACE, c.COSTLINE_TENANT, c.COSTLINE_TASK_TYPE, c.COSTLINE_SUBTYPE,
    c.COSTLINE_ROUTED_TIER, c.COSTLINE_ATTEMPTS, c.COSTLINE_ESCALATIONS, c.COSTLINE_SUCCESS, "service.name",
]
NAMES = [c.SPAN_REQUEST, c.SPAN_CACHE_LOOKUP, "chat claude-haiku-4-5", "chat", "other", ""]

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
ids = st.one_of(st.binary(min_size=0, max_size=20), st.binary(min_size=16, max_size=16), st.binary(min_size=8, max_size=8))


def _set_any(av, value) -> None:  # type: ignore[no-untyped-def]
    if isinstance(value, bool):
        av.bool_value = value
    elif isinstance(value, int):
        av.int_value = max(min(value, 2**63 - 1), -(2**63))
    elif isinstance(value, float):
        av.double_value = value
    elif isinstance(value, str):
        av.string_value = value
    elif isinstance(value, bytes):
        av.bytes_value = value
    elif isinstance(value, list):
        av.array_value.SetInParent()
        for v in value:
            _set_any(av.array_value.values.add(), v)


attr_values = st.one_of(scalars.filter(lambda v: v is not None), st.binary(max_size=8),
                        st.lists(st.one_of(st.integers(-5, 5), st.text(max_size=5)), max_size=3))


@st.composite
def otlp_requests(draw) -> ExportTraceServiceRequest:  # type: ignore[no-untyped-def]
    """Structurally valid requests whose ids, names, attributes and times are anything."""
    req = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(0, 2))):
        rs = req.resource_spans.add()
        for key, value in draw(st.dictionaries(st.sampled_from(ATTRIBUTE_KEYS), attr_values, max_size=3)).items():
            kv = rs.resource.attributes.add()
            kv.key = key
            _set_any(kv.value, value)
        for _ in range(draw(st.integers(0, 2))):
            ss = rs.scope_spans.add()
            ss.scope.name = draw(st.text(max_size=10))
            for _ in range(draw(st.integers(0, 4))):
                span = ss.spans.add()
                span.trace_id = draw(ids)
                span.span_id = draw(ids)
                span.parent_span_id = draw(st.one_of(st.just(b""), ids))
                span.name = draw(st.sampled_from(NAMES))
                span.start_time_unix_nano = draw(st.integers(0, 2**64 - 1))
                span.end_time_unix_nano = draw(st.integers(0, 2**64 - 1))
                span.status.code = draw(st.integers(0, 2))
                for key, value in draw(st.dictionaries(st.sampled_from(ATTRIBUTE_KEYS), attr_values,
                                                       max_size=8)).items():
                    kv = span.attributes.add()
                    kv.key = key
                    _set_any(kv.value, value)
    return req


json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(
        ["resourceSpans", "scopeSpans", "spans", "resource", "attributes", "key", "value", "stringValue",
         "intValue", "traceId", "spanId", "name", "startTimeUnixNano", "x"]), inner, max_size=4)), max_leaves=20)


def json_bodies() -> st.SearchStrategy[bytes]:
    """OTLP-looking JSON with any types in any place, plus hex ids that may or may not be valid."""
    return json_values.map(lambda v: json.dumps(v).encode())


def request_bodies() -> st.SearchStrategy[tuple[str, bytes, bool]]:
    """(content type, body, gzip?) for POST /v1/traces."""
    proto = otlp_requests().map(lambda r: r.SerializeToString())
    mutated = st.tuples(otlp_requests().map(lambda r: r.SerializeToString()), st.integers(0, 200),
                        st.binary(min_size=1, max_size=4)).map(lambda t: t[0][: t[1]] + t[2] + t[0][t[1]:])
    return st.one_of(
        st.tuples(st.just("application/x-protobuf"), st.one_of(proto, mutated, st.binary(max_size=300)), st.booleans()),
        st.tuples(st.just("application/json"), st.one_of(json_bodies(), st.binary(max_size=100)), st.booleans()),
    )


def maybe_gzip(body: bytes, on: bool) -> bytes:
    return gzip.compress(body) if on else body
