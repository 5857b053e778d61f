"""Span → lake row: pure functions of single spans (no broker, no clock, no I/O).

:func:`flatten_span` turns one OTLP span into a :class:`RequestRow`,
:class:`CallRow` or :class:`LookupRow` (or None: ignored). It reads attributes
straight off the upb protobuf objects (no ``json_format``) so decode + flatten
stays well above 100k spans/s per core: :mod:`~costline.processors.attributes` reads
one value, :mod:`~costline.processors.spellings` reads what a model-call span says
in whichever instrumentation's spelling; this module prices the call and builds the row.
Field order equals the lake schemas (:mod:`costline.lake`); timestamps are integer microseconds since the epoch (UTC).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any, Final, NamedTuple

import orjson

from costline import contract as c
from costline.config import ModelPrice, PricingConfig
from costline.otlp import OtlpDecodeError
from costline.pricing import BATCH, PRICED, UNKNOWN_MODEL, PricingTable, endpoint_scope, service_tier_effect
from costline.processors.attributes import (
    MAX_ATTEMPTS,
    MAX_TOKENS,
    anyvalue_to_python,
    attributes_dict,
    bool_of,
    count_of,
    exception_type,
    float_of,
    span_times,
    str_of,
    usd_of,
)
from costline.processors.content import flattened_messages, loads_strict, strict_json
from costline.processors.spellings import (
    AI_SDK_PROVIDER_METADATA,
    ALL_INPUT_KEYS,
    ALL_OUTPUT_KEYS,
    ALL_READ_KEYS,
    ALL_WRITE_KEYS,
    INCOMPLETE_STREAM_ERROR,
    STREAM_ENDED_EARLY,
    USAGE_PREFIXES,
    mlflow_flavor,
    provider_metadata_attributes,
    read_call,
)

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
    "INCOMPLETE_USAGE",
    "INVALID_USAGE",
    "MAX_TOKENS",
    "TS_OUT_OF_WINDOW",
    "null_times_outside",
    "null_times_past_days",
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
    #: What flattening dropped from this span (``field:reason``, comma-separated); None: nothing.
    data_quality: str | None = None
    #: The attempts whose answer was not accepted, ``tier:problem`` comma-separated (``costline.rejected_attempts``).
    rejected_attempts: str | None = None
    #: The ``service.name`` of the resource that sent the span (the app or service; cut at 128 characters).
    service_name: str | None = None
    #: Why the router picked ``routed_tier`` (``costline.route.reason``, cut at 256 characters).
    route_reason: str | None = None
    #: How sure the routing policy was, 0–1 (``costline.route.confidence``; out of range or not a number: NULL, and
    #: named in ``data_quality``).
    route_confidence: float | None = None
    #: The response id the gateway's answer gave its client (``costline.response.id``): an app's own span of the call
    #: with that ``gen_ai.response.id`` is the app's view of this request (the ``call_links`` view).
    response_id: str | None = None


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
    #: ``gen_ai.response.id``: with the provider, the identity of the call across instrumentations.
    response_id: str | None = None
    #: The instrumentation scope that reported the span (``costline.collectors``, ``com.anthropic.sdk.python``, …).
    instrumentation: str | None = None
    data_quality: str | None = None
    #: Of ``cache_creation_tokens``, those written with a one-hour lifetime (priced at the 1-hour write price).
    cache_creation_1h_tokens: int | None = None
    #: Web searches the model's server tool made (priced per search on top of the tokens).
    web_search_requests: int | None = None
    #: Whether the call ran in Anthropic's fast mode (priced at the model's ``fast_multiplier``).
    fast: bool | None = None
    #: The service tier the provider says served the call ("flex", "priority", "batch", "default", ...).
    service_tier: str | None = None
    #: Where Anthropic says it ran the call ("us": US-only inference, priced at the US multiplier; "global").
    inference_geo: str | None = None
    #: The call span's own ``costline.tenant``: who a call with no request span was made for (the gateway's
    #: embeddings calls); a call inside a request belongs to the request's tenant (the ``calls`` view).
    tenant: str | None = None
    #: The kind of a cloud's endpoint that ran a Claude call ("global", or "regional": priced at the regional
    #: multiplier), as its model id or URL says (:func:`costline.pricing.endpoint_scope`); None: not said.
    endpoint_scope: str | None = None
    #: The ``service.name`` of the resource that sent the span (the app or service; cut at 128 characters).
    service_name: str | None = None


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
    data_quality: str | None = None
    #: Why the cache's verification stage turned candidates down (``costline.cache.reject_reason``).
    reject_reason: str | None = None
    #: The ``service.name`` of the resource that sent the span (the app or service; cut at 128 characters).
    service_name: str | None = None


Row = RequestRow | CallRow | LookupRow

#: ``data_quality`` flag of a span whose time lies outside the processor's window around its Kafka record's
#: timestamp (``[processor] span_time_max_age_days`` / ``span_time_max_ahead_s``): ``ts`` is NULL, the row kept.
TS_OUT_OF_WINDOW: Final = "ts:out_of_window"
#: Where each row type holds ``ts`` and ``data_quality`` (rows are tuples in schema order).
_TS_AT: Final = {cls: cls._fields.index("ts") for cls in (RequestRow, CallRow, LookupRow)}
_QUALITY_AT: Final = {cls: cls._fields.index("data_quality") for cls in (RequestRow, CallRow, LookupRow)}


def null_times_outside(rows: list[Row], start: int, lo_us: int, hi_us: int) -> int:
    """Rows ``rows[start:]`` (one table's) whose ``ts`` lies outside ``[lo_us, hi_us]`` replaced, in place, by
    the same row with ``ts`` NULL and :data:`TS_OUT_OF_WINDOW` added to its ``data_quality``; returns how many.
    The span's own time is not kept (no column holds it): its Kafka record (``kafka_partition`` /
    ``kafka_offset``) does, while the topic's retention keeps it. ``duration_ms`` is kept."""
    end = len(rows)
    if start >= end:
        return 0
    cls = type(rows[start])
    at, dq = _TS_AT[cls], _QUALITY_AT[cls]
    nulled = 0
    for i in range(start, end):
        ts = rows[i][at]
        if ts is not None and not lo_us <= ts <= hi_us:
            rows[i] = _out_of_window(cls, rows[i], at, dq)
            nulled += 1
    return nulled


def _out_of_window(cls: type, row: Row, at: int, dq: int) -> Row:
    """``row`` with ``ts`` NULL and :data:`TS_OUT_OF_WINDOW` added to its ``data_quality``."""
    values = list(row)
    values[at] = None
    values[dq] = f"{values[dq]},{TS_OUT_OF_WINDOW}" if values[dq] else TS_OUT_OF_WINDOW
    return _new(cls, values)


_US_PER_DAY: Final = 86_400_000_000


def null_times_past_days(rows: list[Row], start: int, days: set[int], max_days: int) -> int:
    """Rows ``rows[start:]`` (one table's) whose ``ts`` falls on a UTC day (days since the epoch) not in ``days``
    while ``days`` already holds ``max_days`` replaced, in place, as :func:`null_times_outside` does (``ts`` NULL,
    :data:`TS_OUT_OF_WINDOW`); the days of the others are added to ``days``. Returns how many were nulled. Event
    times are never before 1970 (the decoder keeps 2000..2100), so ``ts // day`` is the day ``date=`` files it
    under."""
    end = len(rows)
    if start >= end:
        return 0
    cls = type(rows[start])
    at, dq = _TS_AT[cls], _QUALITY_AT[cls]
    nulled = 0
    for i in range(start, end):
        ts = rows[i][at]
        if ts is None:
            continue
        day = ts // _US_PER_DAY
        if day in days:
            continue
        if len(days) < max_days:
            days.add(day)
            continue
        rows[i] = _out_of_window(cls, rows[i], at, dq)
        nulled += 1
    return nulled


class MemoPricingTable(PricingTable):
    """A :class:`PricingTable` whose model lookups are memoized (the hot path prices every call).

    Pricing itself is :meth:`PricingTable.price_call`, unchanged; only the
    registry lookup (which may run a regex per call) and the tier a
    ``(provider, model, explicit tier)`` maps to are cached, per instance.
    """

    _MAX_MEMO = 10_000
    #: Longest model id (and provider, tier) memoized: the memo holds its keys for the processor's life, and
    #: a sender's made-up ids can be as long as a Kafka message (10,000 of 500 kB ones held 5 GB). Real
    #: ids are far shorter; a longer one is looked up each time, as a model without the memo would be.
    _MAX_MEMO_KEY_CHARS = 256

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
            if len(self._memo) < self._MAX_MEMO and len(model) <= self._MAX_MEMO_KEY_CHARS:
                self._memo[model] = found
            return found

    def tier_of(self, provider: str | None, model: str | None, explicit_tier: str | None = None) -> str:
        # A pure function of its arguments and the (fixed) config: memoized like lookup.
        key = (provider, model, explicit_tier)
        try:
            return self._tier_memo[key]
        except KeyError:
            tier = super().tier_of(provider, model, explicit_tier)
            if (len(self._tier_memo) < self._MAX_MEMO
                    and len(provider or "") + len(model or "") + len(explicit_tier or "") <= self._MAX_MEMO_KEY_CHARS):
                self._tier_memo[key] = tier
            return tier


# --- flattening ----------------------------------------------------------------------

#: ``Status.code`` of a failed span (OTLP's STATUS_CODE_ERROR).
_STATUS_ERROR: Final = 2


def _cut(text: str | None, limit: int) -> str | None:
    return text[:limit] if text is not None and len(text) > limit else text


def _confidence(value: Any, bad: list[str]) -> float | None:
    """``costline.route.confidence``: a number from 0 to 1, else None (named in ``bad`` when it was set)."""
    number = float_of(value)
    if number is not None and 0.0 <= number <= 1.0:
        return number
    if value is not None and value.WhichOneof("value") is not None:
        bad.append(f"{c.COSTLINE_ROUTE_CONFIDENCE}:out_of_range")
    return None


def _quality(bad: list[str]) -> str | None:
    return ",".join(bad) if bad else None


def flatten_span(
    span: Any,
    pricing: PricingTable,
    kafka_partition: int = -1,
    kafka_offset: int = -1,
    scope: str | None = None,
    service: str | None = None,
) -> Row | None:
    """One OTLP span → its lake row, or None when costline has no row for it.

    ``scope`` is the name of the instrumentation scope the span came in (``ScopeSpans.scope.name``), ``service``
    its resource's ``service.name`` (:func:`service_name`).
    Values out of range (NaN, infinities, negative or absurd counts and prices, times that are
    not times) are nulled and named in the row's ``data_quality``; they never raise.
    Raises :class:`~costline.otlp.OtlpDecodeError` for malformed ids (the processor leaves that span out and
    dead-letters it).
    """
    tid = span.trace_id
    sid = span.span_id
    parent = span.parent_span_id
    if len(tid) != 16 or len(sid) != 8 or tid == _ZERO16 or sid == _ZERO8 or (parent and len(parent) != 8):
        raise OtlpDecodeError(f"span {span.name!r} has an invalid trace_id, span_id or parent_span_id "
                              "(need 16 / 8 / 8 non-zero bytes)")
    name = span.name
    attrs = {kv.key: kv.value for kv in span.attributes}
    bad: list[str] = []
    ts, duration_ms = span_times(span, bad)
    if (meta := attrs.get(AI_SDK_PROVIDER_METADATA)) is not None:  # the Vercel AI SDK's: figures only it holds
        attrs.update(provider_metadata_attributes(str_of(meta), attrs.__contains__, bad))
    get = attrs.get
    if name == c.SPAN_REQUEST:
        span_id = sid.hex()
        tier = str_of(get(c.COSTLINE_TIER))
        hit = bool_of(get(c.COSTLINE_CACHE_HIT))
        confidence = _confidence(get(c.COSTLINE_ROUTE_CONFIDENCE), bad)  # before _quality reads ``bad``
        return _new(RequestRow, (
            str_of(get(c.COSTLINE_REQUEST_ID)) or span_id,
            tid.hex(),
            span_id,
            ts,
            str_of(get(c.COSTLINE_TENANT)),
            str_of(get(c.COSTLINE_TASK_TYPE)),
            str_of(get(c.COSTLINE_SUBTYPE)),
            tier,
            str_of(get(c.COSTLINE_ROUTED_TIER)),
            hit if hit is not None else tier == c.TIER_CACHE,
            count_of(get(c.COSTLINE_ATTEMPTS), c.COSTLINE_ATTEMPTS, bad, MAX_ATTEMPTS),
            count_of(get(c.COSTLINE_ESCALATIONS), c.COSTLINE_ESCALATIONS, bad, MAX_ATTEMPTS),
            bool_of(get(c.COSTLINE_SUCCESS)),
            str_of(get(c.ERROR_TYPE)),
            duration_ms,
            *messages(attrs, bad),
            kafka_partition,
            kafka_offset,
            _quality(bad),
            str_of(get(c.COSTLINE_REJECTED_ATTEMPTS)),
            service,
            _cut(str_of(get(c.COSTLINE_ROUTE_REASON)), 256),
            confidence,
            str_of(get(c.COSTLINE_RESPONSE_ID)),
        ))
    if name == c.SPAN_CACHE_LOOKUP:
        sim_v = get(c.COSTLINE_CACHE_SIMILARITY)
        similarity = float_of(sim_v)
        if similarity is None and sim_v is not None and sim_v.WhichOneof("value") is not None:
            bad.append(f"{c.COSTLINE_CACHE_SIMILARITY}:not_finite")
        return _new(LookupRow, (
            sid.hex(),
            tid.hex(),
            parent.hex() if parent else None,
            str_of(get(c.COSTLINE_REQUEST_ID)),
            ts,
            str_of(get(c.COSTLINE_TENANT)),
            str_of(get(c.COSTLINE_CACHE_NAMESPACE)),
            bool_of(get(c.COSTLINE_CACHE_HIT)),
            similarity,
            duration_ms,
            kafka_partition,
            kafka_offset,
            _quality(bad),
            str_of(get(c.COSTLINE_CACHE_REJECT_REASON)),
            service,
        ))
    error_type = str_of(get(c.ERROR_TYPE))
    if error_type is None and span.status.code == _STATUS_ERROR:
        error_type = exception_type(span)  # an instrumentation that says "failed" only by the span's status
    call = read_call(name, get, scope, error_type is not None, bad)
    if call is None:
        return None  # no model call: an agent's or a tool's span, a chain, an app's own span...
    if error_type is None and STREAM_ENDED_EARLY in bad:
        # a stream that ended before the model's final event, reported by an instrumentation that ends it as
        # complete (OpenLLMetry's Anthropic): failed, as costline's own wrapper says of such a stream
        error_type = INCOMPLETE_STREAM_ERROR
    (op, provider, model, response_model, input_tokens, output_tokens, read, write,
     finish_reasons, unreported, response_id, write_1h, searches) = call
    served_tier = _served_tier(get)
    batch = bool(bool_of(get(c.COSTLINE_BATCH))) or service_tier_effect(provider, served_tier) == BATCH
    fast = str_of(get(c.ANTHROPIC_RESPONSE_SPEED)) == "fast"
    geo = _short(str_of(get(c.ANTHROPIC_RESPONSE_INFERENCE_GEO)))
    endpoint = str_of(get(c.COSTLINE_ENDPOINT_SCOPE))
    if endpoint not in _ENDPOINTS:  # said by costline's wrapper, else read off the model id or the URL
        endpoint = endpoint_scope(model, str_of(get(c.SERVER_ADDRESS)), str_of(get(c.URL_FULL)) or str_of(
            get(c.URL_PATH))) or endpoint_scope(response_model)  # OpenLLMetry's Bedrock spans: the profile here
    explicit = usd_of(get(c.COSTLINE_COST_USD), bad)
    price = pricing.price_call(
        model=model,
        provider=provider,
        input_tokens=input_tokens or 0,
        output_tokens=output_tokens or 0,
        cache_read_tokens=read or 0,
        cache_creation_tokens=write or 0,
        cache_creation_1h_tokens=write_1h or 0,
        web_search_requests=searches or 0,
        batch=batch,
        fast=fast,
        service_tier=served_tier,
        inference_geo=geo,
        endpoint=endpoint,
        explicit_cost_usd=explicit,
        explicit_tier=str_of(get(c.COSTLINE_TIER)),
        response_model=response_model,
    )
    cost, status = price.cost_usd, price.status
    if (cost is None and status == UNKNOWN_MODEL and error_type is not None and explicit is None
            and not input_tokens and not output_tokens and not read and not write):
        cost = 0.0  # a failed call that counted no tokens cost nothing, whatever the model (still named unknown)
    if bad and status == PRICED and any(f.startswith(USAGE_PREFIXES) for f in bad):
        cost, status = None, INVALID_USAGE  # a price from a count that was dropped would be made up
    cut = error_type == INCOMPLETE_STREAM_ERROR and STREAM_ENDED_EARLY in bad
    if cut or bool_of(get(c.COSTLINE_USAGE_INCOMPLETE)):
        # a stream that broke or was closed early (usage so far: a lower bound), or an OpenAI stream
        # without include_usage (no counts at all: unpriced, never $0)
        if not cut:
            bad.append(f"{c.COSTLINE_USAGE_INCOMPLETE}:true")
        # no input count (none sent, or one no count could be, left out by the app): the prompt's price is unknown,
        # never that of a free prompt — unpriced, as a call without any usage is
        if input_tokens is None and explicit is None:
            cost, status = None, INCOMPLETE_USAGE
            bad.extend(f"{key}:missing" for key, n in ((c.GEN_AI_USAGE_INPUT_TOKENS, input_tokens),
                                                       (c.GEN_AI_USAGE_OUTPUT_TOKENS, output_tokens)) if n is None)
    elif (unreported and status == PRICED and error_type is None and not bad
          and (input_tokens is None or (output_tokens is None and op != _EMBEDDINGS))):
        # a call that answered without any usage (an OpenAI stream without include_usage, to OpenInference
        # and Langfuse, which write counts only when the API reported them), or with its answer's count but not
        # its input's, or its input's but not its answer's, has unknown usage: never $0, never priced as a free
        # prompt or a free answer
        cost, status = None, INCOMPLETE_USAGE
        bad.extend(unreported)
    return _new(CallRow, (
        sid.hex(),
        tid.hex(),
        parent.hex() if parent else None,
        str_of(get(c.COSTLINE_REQUEST_ID)),
        ts,
        op,
        provider,
        model,
        response_model,
        price.tier,
        input_tokens if input_tokens is not None else (None if bad and _dropped(bad, ALL_INPUT_KEYS) else 0),
        output_tokens if output_tokens is not None else (None if bad and _dropped(bad, ALL_OUTPUT_KEYS) else 0),
        read if read is not None else (None if bad and _dropped(bad, ALL_READ_KEYS) else 0),
        write if write is not None else (None if bad and _dropped(bad, ALL_WRITE_KEYS) else 0),
        batch,
        finish_reasons,
        error_type,
        cost,
        status,
        pricing.version,
        duration_ms,
        # an embedding's input is no conversation and its output no answer: only the conventions' own attributes
        *messages(attrs, bad, flattened=op != _EMBEDDINGS),
        kafka_partition,
        kafka_offset,
        response_id,
        # MLflow's flavors share one scope and two may report one call: the flavor tells them apart
        mlflow_flavor(get) or scope or None,
        _quality(bad),
        min(write_1h, write) if write_1h is not None and write is not None else (0 if write is not None else None),
        searches or 0,
        fast,
        served_tier,
        geo,
        str_of(get(c.COSTLINE_TENANT)),
        endpoint,
        service,
    ))


#: Where a span says the tier that served its call, first found wins: OpenAI's (the GenAI conventions; what
#: ``opentelemetry-instrumentation-openai-v2``, OpenLLMetry and OpenLIT write), its older spelling (LiteLLM's, for
#: every provider) and Anthropic's (the anthropic SDK's native spans). What a tier does to the price depends on the
#: provider too (:func:`costline.pricing.service_tier_effect`).
_SERVICE_TIER_KEYS: Final = (c.OPENAI_RESPONSE_SERVICE_TIER, c.GEN_AI_OPENAI_RESPONSE_SERVICE_TIER,
                             c.ANTHROPIC_RESPONSE_SERVICE_TIER)
#: The kinds of a cloud's endpoint a span may say it called (anything else is read as unsaid).
_ENDPOINTS: Final = frozenset({c.ENDPOINT_GLOBAL, c.ENDPOINT_REGIONAL})
#: Longest service tier or inference geography kept (the names are short; a sender's made-up ones are cut).
MAX_TIER_NAME_CHARS: Final = 32


_EMBEDDINGS: Final = "embeddings"

#: ``data_quality`` flag of a span whose captured content could not be read: the content is left out, the call
#: kept.
CONTENT_UNREADABLE: Final = "content:unreadable"


def _readable(doc: str | None, key: str, role: str, bad: list[str] | None) -> str | None:
    """``doc`` (a conventions content attribute) as JSON every DuckDB JSON function reads, so one span's content can
    never fail an analyst's query over them all. Strict JSON is kept as sent (orjson, as strict as DuckDB: the fast
    path). A value that is no JSON (cut short by the sender's attribute length limit, or a plain text) is kept as
    one text part of a ``role`` message and flagged ``key:not_json`` (``key:too_deep``: nested past what Python's
    parsers check, valid or not); JSON with a lone surrogate's escape (a JavaScript sender's cut emoji) is written
    again with it as U+FFFD. An empty value is none."""
    if doc is None or not doc.strip():
        return None
    try:
        orjson.loads(doc)
        return doc
    except orjson.JSONDecodeError:
        pass
    try:
        value = json.loads(doc)  # reads what orjson refuses and JSON allows: a lone surrogate's escape, NaN
    except (ValueError, RecursionError) as exc:  # RecursionError: nested past what either parser can check
        if bad is not None:
            bad.append(f"{key}:{'too_deep' if isinstance(exc, RecursionError) else 'not_json'}")
        return strict_json([{"role": role, "parts": [{"type": "text", "content": doc}]}])
    try:
        return strict_json(value)
    except (ValueError, RecursionError):  # NaN, which DuckDB reads too: kept as sent
        return doc


def messages(attrs: Mapping[str, Any], bad: list[str] | None = None, *,
             flattened: bool = True) -> tuple[str | None, str | None]:
    """A span's captured ``(input, output)`` messages: ``gen_ai.input.messages`` / ``gen_ai.output.messages``
    (:func:`_readable`), else (``flattened``) as OpenInference, older OpenLLMetry, Langfuse, MLflow or the AI SDK's
    older spans spell them (:mod:`~costline.processors.content`; a side it cannot read is None, noted in ``bad``).
    The input has the system prompt first when it was recorded apart (:func:`input_messages`)."""
    get = attrs.get
    given = _readable(str_of(get(c.GEN_AI_INPUT_MESSAGES)), c.GEN_AI_INPUT_MESSAGES, "user", bad)
    answered = _readable(str_of(get(c.GEN_AI_OUTPUT_MESSAGES)), c.GEN_AI_OUTPUT_MESSAGES, "assistant", bad)
    if flattened and (given is None or answered is None):
        flat = flattened_messages(attrs)
        if flat.unreadable and bad is not None:
            bad.append(CONTENT_UNREADABLE)
        given = given if given is not None else flat.input
        answered = answered if answered is not None else flat.output
    return _with_system(given, get), answered


def output_messages(attrs: Mapping[str, Any], bad: list[str] | None = None) -> str | None:
    """A span's captured answer (:func:`messages`)."""
    return messages(attrs, bad)[1]


def input_messages(attrs: Mapping[str, Any], bad: list[str] | None = None) -> str | None:
    """A span's captured input messages (:func:`messages`) with its system prompt when recorded apart
    (``gen_ai.system_instructions``) put first as a ``system`` message, as costline's own spans carry it, so the
    nightly jobs and analysts see one conversation."""
    return messages(attrs, bad)[0]


def _with_system(doc: str | None, get: Any) -> str | None:
    """``doc`` with ``gen_ai.system_instructions`` spliced first as a ``system`` message. The messages' text is kept
    as sent (spliced, not re-written); left as sent when they already have a system message, are not a JSON list,
    or the instructions are no text."""
    system = str_of(get(c.GEN_AI_SYSTEM_INSTRUCTIONS))
    if not system:
        return doc
    try:
        items = json.loads(doc) if doc else []
    except (ValueError, RecursionError):  # RecursionError: JSON nested past the parser's depth
        return doc
    if not isinstance(items, list) or any(isinstance(m, dict) and m.get("role") == "system" for m in items):
        return doc
    try:
        parts = loads_strict(system)
    except (ValueError, RecursionError):
        parts = system  # plain text
    if isinstance(parts, str):
        parts = [parts]
    if not isinstance(parts, list) or not parts:
        return doc
    parts = [{"type": "text", "content": p} if isinstance(p, str) else p for p in parts]
    try:  # a lone surrogate (a cut emoji's half) as U+FFFD, as in the messages
        head = strict_json({"role": "system", "parts": parts})
    except (ValueError, RecursionError):  # parts nested deeper than json.dumps walks: the messages as sent
        return doc
    if not items:
        return f"[{head}]"
    return f"[{head},{doc.lstrip()[1:]}"  # the messages' own text after their list's "["


def _short(value: str | None) -> str | None:
    return value[:MAX_TIER_NAME_CHARS] if value else None


def _served_tier(get: Any) -> str | None:
    for key in _SERVICE_TIER_KEYS:
        tier = _short(str_of(get(key)))
        if tier:
            return tier
    return None


#: ``pricing_status`` of a call whose token counts were dropped as invalid: not priced (cost NULL).
INVALID_USAGE: Final = "invalid_usage"
#: ``pricing_status`` of a call whose instrumentation says it has no usage to report
#: (``costline.usage.incomplete`` without token counts): not priced (cost NULL), never $0.
INCOMPLETE_USAGE: Final = "incomplete_usage"


def _dropped(bad: list[str], keys: tuple[str, ...]) -> bool:
    return any(f.split(":", 1)[0] in keys for f in bad)


#: Longest ``service.name`` kept (a sender inventing names must not grow the lake's dictionaries without bound).
MAX_SERVICE_NAME_CHARS: Final = 128


def service_name(resource: Any) -> str | None:
    """A resource's ``service.name`` (the OTel SDK's default, ``unknown_service:<process>``, included), cut at
    :data:`MAX_SERVICE_NAME_CHARS`; None when it has none."""
    for kv in resource.attributes:
        if kv.key == c.SERVICE_NAME:
            name = str_of(kv.value)
            return name[:MAX_SERVICE_NAME_CHARS] if name else None
    return None


def flatten_request(
    request: Any,
    pricing: PricingTable,
    kafka_partition: int = -1,
    kafka_offset: int = -1,
) -> Iterator[Row | None]:
    """Every span of an ``ExportTraceServiceRequest`` flattened (None for ignored spans)."""
    for rs in request.resource_spans:
        service = service_name(rs.resource)
        for ss in rs.scope_spans:
            scope = ss.scope.name or None
            for span in ss.spans:
                yield flatten_span(span, pricing, kafka_partition, kafka_offset, scope, service)
