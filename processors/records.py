"""Span → lake row: pure functions of single spans (no broker, no clock, no I/O).

:func:`flatten_span` turns one OTLP span into a :class:`RequestRow`,
:class:`CallRow` or :class:`LookupRow` (or None: ignored). It reads attributes
straight off the upb protobuf objects (no ``json_format``) so decode + flatten
stays well above 100k spans/s per core. Field order equals the lake schemas
(:mod:`costline.lake`); timestamps are integer microseconds since the epoch (UTC).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, NamedTuple

from costline import contract as c
from costline.config import ModelPrice, PricingConfig
from costline.otlp import OtlpDecodeError
from costline.pricing import PricingTable

__all__ = [
    "RequestRow",
    "CallRow",
    "LookupRow",
    "Row",
    "flatten_span",
    "MemoPricingTable",
    "flatten_request",
    "anyvalue_to_python",
    "attributes_dict",
    "KIND_REQUEST",
    "KIND_CALL",
    "KIND_LOOKUP",
]

_new = tuple.__new__  # builds a NamedTuple row without its Python-level __new__
_ZERO16 = bytes(16)
_ZERO8 = bytes(8)

KIND_REQUEST = "requests"
KIND_CALL = "calls"
KIND_LOOKUP = "lookups"


class RequestRow(NamedTuple):
    request_id: str
    trace_id: str
    span_id: str
    ts: int
    tenant: str | None
    task_type: str | None
    subtype: str | None
    tier: str | None
    routed_tier: str | None
    cache_hit: bool
    attempts: int | None
    escalations: int | None
    success: bool | None
    error_type: str | None
    duration_ms: float
    input_messages: str | None
    output_messages: str | None
    kafka_partition: int
    kafka_offset: int


class CallRow(NamedTuple):
    span_id: str
    trace_id: str
    parent_span_id: str | None
    request_id: str | None
    ts: int
    operation: str | None
    provider: str | None
    model: str | None
    response_model: str | None
    tier: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_creation_tokens: int
    batch: bool
    finish_reasons: list[str] | None
    error_type: str | None
    cost_usd: float | None
    pricing_status: str
    pricing_version: str
    duration_ms: float
    input_messages: str | None
    output_messages: str | None
    kafka_partition: int
    kafka_offset: int


class LookupRow(NamedTuple):
    span_id: str
    trace_id: str
    parent_span_id: str | None
    request_id: str | None
    ts: int
    tenant: str | None
    namespace: str | None
    hit: bool | None
    similarity: float | None
    duration_ms: float
    kafka_partition: int
    kafka_offset: int


Row = RequestRow | CallRow | LookupRow

class MemoPricingTable(PricingTable):
    """A :class:`PricingTable` whose model lookups are memoized (the hot path prices every call).

    Pricing itself is :meth:`PricingTable.price_call`, unchanged; only the
    registry lookup (which may run a regex per call) and the tier a
    ``(provider, model, explicit tier)`` maps to are cached, per instance.
    """

    _MAX_MEMO = 10_000

    def __init__(self, config: PricingConfig | None = None) -> None:
        super().__init__(config)
        self._memo: dict[str, ModelPrice | None] = {}
        self._tier_memo: dict[tuple[str | None, str | None, str | None], str] = {}

    def lookup(self, model: str | None) -> ModelPrice | None:
        if not model:
            return None
        try:
            return self._memo[model]
        except KeyError:
            found = super().lookup(model)
            if len(self._memo) < self._MAX_MEMO:
                self._memo[model] = found
            return found

    def tier_of(self, provider: str | None, model: str | None, explicit_tier: str | None = None) -> str:
        # A pure function of its arguments and the (fixed) config: memoized like lookup.
        key = (provider, model, explicit_tier)
        try:
            return self._tier_memo[key]
        except KeyError:
            tier = super().tier_of(provider, model, explicit_tier)
            if len(self._tier_memo) < self._MAX_MEMO:
                self._tier_memo[key] = tier
            return tier


# --- AnyValue access ------------------------------------------------------------------


def anyvalue_to_python(v: Any) -> Any:
    """An OTLP ``AnyValue`` as a plain Python value (None when unset)."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [anyvalue_to_python(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: anyvalue_to_python(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind)


def attributes_dict(attributes: Any) -> dict[str, Any]:
    """``{key: python value}`` of a repeated ``KeyValue`` (for tests and debugging)."""
    return {kv.key: anyvalue_to_python(kv.value) for kv in attributes}


def _str(v: Any) -> str | None:
    if v is None:
        return None
    s = v.string_value  # "" when unset or another type: then look closer
    return s if s else _str_slow(v)


def _str_slow(v: Any) -> str | None:
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind is None:
        return None
    value = anyvalue_to_python(v)
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _int(v: Any) -> int | None:
    if v is None:
        return None
    i = v.int_value  # 0 when unset or another type: then look closer
    return i if i else _int_slow(v)


def _int_slow(v: Any) -> int | None:
    kind = v.WhichOneof("value")
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        return int(v.double_value)
    if kind == "string_value":
        try:
            return int(float(v.string_value))
        except ValueError:
            return None
    if kind == "bool_value":
        return int(v.bool_value)
    return None


def _float(v: Any) -> float | None:
    if v is None:
        return None
    kind = v.WhichOneof("value")
    if kind == "double_value":
        return v.double_value
    if kind == "int_value":
        return float(v.int_value)
    if kind == "string_value":
        try:
            return float(v.string_value)
        except ValueError:
            return None
    return None


_TRUE_WORDS = frozenset({"true", "1", "yes"})


def _bool(v: Any) -> bool | None:
    if v is None:
        return None
    kind = v.WhichOneof("value")
    if kind == "bool_value":
        return v.bool_value
    if kind == "string_value":
        return v.string_value.strip().lower() in _TRUE_WORDS
    if kind == "int_value":
        return v.int_value != 0
    return None


def _str_list(v: Any) -> list[str] | None:
    if v is None:
        return None
    kind = v.WhichOneof("value")
    if kind == "array_value":
        # Fast path: an array of non-empty strings (what instrumentations send).
        out = [x.string_value for x in v.array_value.values]
        if all(out):
            return out
        return [str(x) for x in anyvalue_to_python(v) if x is not None]
    if kind == "string_value":
        return [v.string_value]
    return None


# --- flattening ----------------------------------------------------------------------


def flatten_span(
    span: Any,
    pricing: PricingTable,
    kafka_partition: int = -1,
    kafka_offset: int = -1,
) -> Row | None:
    """One OTLP span → its lake row, or None when costline has no row for it.

    Raises :class:`~costline.otlp.OtlpDecodeError` for malformed ids (the message is dead-lettered).
    """
    tid = span.trace_id
    sid = span.span_id
    parent = span.parent_span_id
    if len(tid) != 16 or len(sid) != 8 or tid == _ZERO16 or sid == _ZERO8 or (parent and len(parent) != 8):
        raise OtlpDecodeError(f"span {span.name!r} has an invalid trace_id, span_id or parent_span_id "
                              "(need 16 / 8 / 8 non-zero bytes)")
    name = span.name
    attrs = {kv.key: kv.value for kv in span.attributes}
    end_ns = span.end_time_unix_nano
    ts = end_ns // 1000
    duration_ms = (end_ns - span.start_time_unix_nano) / 1e6
    get = attrs.get
    if name == c.SPAN_REQUEST:
        span_id = sid.hex()
        tier = _str(get(c.COSTLINE_TIER))
        hit = _bool(get(c.COSTLINE_CACHE_HIT))
        return _new(RequestRow, (
            _str(get(c.COSTLINE_REQUEST_ID)) or span_id,
            tid.hex(),
            span_id,
            ts,
            _str(get(c.COSTLINE_TENANT)),
            _str(get(c.COSTLINE_TASK_TYPE)),
            _str(get(c.COSTLINE_SUBTYPE)),
            tier,
            _str(get(c.COSTLINE_ROUTED_TIER)),
            hit if hit is not None else tier == c.TIER_CACHE,
            _int(get(c.COSTLINE_ATTEMPTS)),
            _int(get(c.COSTLINE_ESCALATIONS)),
            _bool(get(c.COSTLINE_SUCCESS)),
            _str(get(c.ERROR_TYPE)),
            duration_ms,
            _str(get(c.GEN_AI_INPUT_MESSAGES)),
            _str(get(c.GEN_AI_OUTPUT_MESSAGES)),
            kafka_partition,
            kafka_offset,
        ))
    if name == c.SPAN_CACHE_LOOKUP:
        return _new(LookupRow, (
            sid.hex(),
            tid.hex(),
            parent.hex() if parent else None,
            _str(get(c.COSTLINE_REQUEST_ID)),
            ts,
            _str(get(c.COSTLINE_TENANT)),
            _str(get(c.COSTLINE_CACHE_NAMESPACE)),
            _bool(get(c.COSTLINE_CACHE_HIT)),
            _float(get(c.COSTLINE_CACHE_SIMILARITY)),
            duration_ms,
            kafka_partition,
            kafka_offset,
        ))
    op = get(c.GEN_AI_OPERATION_NAME)
    model_v = get(c.GEN_AI_REQUEST_MODEL)
    if op is None and model_v is None:
        return None
    model = _str(model_v)
    response_model = _str(get(c.GEN_AI_RESPONSE_MODEL))
    provider = _str(get(c.GEN_AI_PROVIDER_NAME)) or _str(get(c.GEN_AI_SYSTEM))
    input_tokens = _int(get(c.GEN_AI_USAGE_INPUT_TOKENS)) or 0
    output_tokens = _int(get(c.GEN_AI_USAGE_OUTPUT_TOKENS)) or 0
    read = _int(get(c.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS)) or 0
    write = _int(get(c.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS)) or 0
    batch = bool(_bool(get(c.COSTLINE_BATCH)))
    price = pricing.price_call(
        model=model,
        provider=provider,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=read,
        cache_creation_tokens=write,
        batch=batch,
        explicit_cost_usd=_float(get(c.COSTLINE_COST_USD)),
        explicit_tier=_str(get(c.COSTLINE_TIER)),
        response_model=response_model,
    )
    return _new(CallRow, (
        sid.hex(),
        tid.hex(),
        parent.hex() if parent else None,
        _str(get(c.COSTLINE_REQUEST_ID)),
        ts,
        _str(op),
        provider,
        model,
        response_model,
        price.tier,
        input_tokens,
        output_tokens,
        read,
        write,
        batch,
        _str_list(get(c.GEN_AI_RESPONSE_FINISH_REASONS)),
        _str(get(c.ERROR_TYPE)),
        price.cost_usd,
        price.status,
        pricing.version,
        duration_ms,
        _str(get(c.GEN_AI_INPUT_MESSAGES)),
        _str(get(c.GEN_AI_OUTPUT_MESSAGES)),
        kafka_partition,
        kafka_offset,
    ))


def flatten_request(
    request: Any,
    pricing: PricingTable,
    kafka_partition: int = -1,
    kafka_offset: int = -1,
) -> Iterator[Row | None]:
    """Every span of an ``ExportTraceServiceRequest`` flattened (None for ignored spans)."""
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                yield flatten_span(span, pricing, kafka_partition, kafka_offset)
