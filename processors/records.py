"""Span → lake row: pure functions of single spans (no broker, no clock, no I/O).

:func:`flatten_span` turns one OTLP span into a :class:`RequestRow`,
:class:`CallRow` or :class:`LookupRow` (or None: ignored). It reads attributes
straight off the upb protobuf objects (no ``json_format``) so decode + flatten
stays well above 100k spans/s per core. Field order equals the lake schemas
(:mod:`costline.lake`); timestamps are integer microseconds since the epoch (UTC).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any, Final, NamedTuple

from costline import contract as c
from costline.config import ModelPrice, PricingConfig
from costline.otlp import OtlpDecodeError
from costline.pricing import PRICED, PricingTable

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


#: Largest token count one call may report; more is a broken counter, not a call (1e8 tokens).
MAX_TOKENS: Final = 100_000_000
#: Largest count of attempts / escalations a request may report.
MAX_ATTEMPTS: Final = 10_000
#: Largest explicit price one call may carry (USD).
MAX_CALL_USD: Final = 100_000.0
#: Span times outside [2000-01-01, 2100-01-01) UTC are not times (a zero end time is 1970).
MIN_TIME_NS: Final = 946_684_800_000_000_000
MAX_TIME_NS: Final = 4_102_444_800_000_000_000
#: Longest plausible span (ms): a week.
MAX_DURATION_MS: Final = 7 * 86_400_000.0


def _count(v: Any, key: str, bad: list[str], limit: int = MAX_TOKENS) -> int | None:
    """A non-negative whole count within ``limit``; else None with ``key:reason`` appended to ``bad``."""
    if v is None:
        return None
    i = v.int_value  # 0 when unset or another type: then look closer
    if 0 < i <= limit:
        return i
    return _count_slow(v, key, bad, limit)


def _count_slow(v: Any, key: str, bad: list[str], limit: int) -> int | None:
    kind = v.WhichOneof("value")
    if kind == "int_value":
        value: float = v.int_value
    elif kind == "double_value":
        value = v.double_value
    elif kind == "string_value":
        try:
            value = float(v.string_value)
        except ValueError:
            bad.append(f"{key}:not_a_number")
            return None
    elif kind is None:
        return None
    else:
        bad.append(f"{key}:not_a_number")
        return None
    if value != value or value in (_INF, -_INF):
        bad.append(f"{key}:not_finite")
        return None
    if value < 0:
        bad.append(f"{key}:negative")
        return None
    if value > limit:
        bad.append(f"{key}:out_of_range")
        return None
    return int(value)


_INF = float("inf")


def _first(get: Any, keys: tuple[str, ...]) -> tuple[Any, str]:
    """The first present attribute of ``keys`` (its AnyValue and key); ``(None, keys[0])`` when none is."""
    for key in keys:
        v = get(key)
        if v is not None:
            return v, key
    return None, keys[0]


def _float(v: Any) -> float | None:
    """A finite number (NaN and infinities are None)."""
    if v is None:
        return None
    kind = v.WhichOneof("value")
    if kind == "double_value":
        f = v.double_value
    elif kind == "int_value":
        return float(v.int_value)
    elif kind == "string_value":
        try:
            f = float(v.string_value)
        except ValueError:
            return None
    else:
        return None
    return f if f == f and f not in (_INF, -_INF) else None


def _usd(v: Any, bad: list[str]) -> float | None:
    """An explicit price: finite, not negative, not absurd; else None and a flag."""
    if v is None:
        return None
    f = _float(v)
    if f is None:
        bad.append(f"{c.COSTLINE_COST_USD}:not_finite" if v.WhichOneof("value") in ("double_value", "string_value")
                   else f"{c.COSTLINE_COST_USD}:not_a_number")
        return None
    if f < 0:
        bad.append(f"{c.COSTLINE_COST_USD}:negative")
        return None
    if f > MAX_CALL_USD:
        bad.append(f"{c.COSTLINE_COST_USD}:out_of_range")
        return None
    return f


def _times(span: Any, bad: list[str]) -> tuple[int | None, float | None]:
    """``(ts in µs, duration in ms)`` of a span: its end time, else its start time when the end is not a time."""
    end_ns = span.end_time_unix_nano
    start_ns = span.start_time_unix_nano
    end_ok = MIN_TIME_NS <= end_ns < MAX_TIME_NS
    start_ok = MIN_TIME_NS <= start_ns < MAX_TIME_NS
    if end_ok and start_ok:
        duration_ms = (end_ns - start_ns) / 1e6
        if 0 <= duration_ms <= MAX_DURATION_MS:
            return end_ns // 1000, duration_ms
        bad.append("duration_ms:out_of_range")
        return end_ns // 1000, None
    if end_ok:
        bad.append("start_time:out_of_range")
        return end_ns // 1000, None
    if start_ok:
        bad.append("end_time:out_of_range")
        return start_ns // 1000, None
    bad.append("ts:out_of_range")
    return None, None


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


#: Attribute spellings read for each usage figure, first present wins (see docs/telemetry.md for
#: which instrumentation spells what). Counts follow the GenAI conventions: input includes cached.
INPUT_TOKEN_KEYS: Final = (c.GEN_AI_USAGE_INPUT_TOKENS, "gen_ai.usage.prompt_tokens", "llm.usage.prompt_tokens")
OUTPUT_TOKEN_KEYS: Final = (c.GEN_AI_USAGE_OUTPUT_TOKENS, "gen_ai.usage.completion_tokens",
                            "llm.usage.completion_tokens")
CACHE_READ_KEYS: Final = (c.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, "gen_ai.usage.cache_read_input_tokens",
                          "ai.usage.inputTokenDetails.cacheReadTokens", "ai.usage.cachedInputTokens")
CACHE_CREATION_KEYS: Final = (c.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, "gen_ai.usage.cache_write.input_tokens",
                              "gen_ai.usage.cache_creation_input_tokens", "ai.usage.inputTokenDetails.cacheWriteTokens")
_IN0, _OUT0, _READ0, _WRITE0 = INPUT_TOKEN_KEYS[0], OUTPUT_TOKEN_KEYS[0], CACHE_READ_KEYS[0], CACHE_CREATION_KEYS[0]
#: Scopes whose Anthropic ``input_tokens`` is the API's own (cache reads and writes NOT included).
_INPUT_EXCLUDES_CACHE_SCOPES: Final = ("openlit", "@traceloop/instrumentation-anthropic")  # OpenLLMetry JS


#: ``gen_ai.operation.name`` values of the GenAI conventions that are no model call: an agent created or
#: run (its span may carry the model and the usage of all its calls), a tool executed.
NOT_CALL_OPERATIONS: Final = frozenset({"create_agent", "invoke_agent", "execute_tool",
                                        "agent_step"})  # the Vercel AI SDK's step of an agent's run
#: The Vercel AI SDK's legacy telemetry (scope ``ai``): ``gen_ai.system`` is the provider and its API
#: (``anthropic.messages``, ``openai.chat``), no ``gen_ai.operation.name``; its calls are named
#: ``ai.<function>.doGenerate`` / ``.doStream`` (``.doEmbed``: embeddings).
_AI_SDK_SCOPE: Final = "ai"
_AI_SDK_OPERATIONS: Final = ((".doGenerate", c.OPERATION_CHAT), (".doStream", c.OPERATION_CHAT),
                             (".doEmbed", "embeddings"))
#: OpenInference (Arize Phoenix's conventions, ``openinference-instrumentation-*``): a span whose
#: ``openinference.span.kind`` is LLM or EMBEDDING is a model call (the operation it is recorded as);
#: its counts are ``llm.token_count.*`` (prompt includes the cached tokens, as in the GenAI conventions).
OI_SPAN_KIND: Final = "openinference.span.kind"
OI_PROVIDER: Final = "llm.provider"
OI_SYSTEM: Final = "llm.system"
OI_PROMPT_TOKENS: Final = "llm.token_count.prompt"
OI_COMPLETION_TOKENS: Final = "llm.token_count.completion"
OI_CACHE_READ_TOKENS: Final = "llm.token_count.prompt_details.cache_read"
OI_CACHE_WRITE_TOKENS: Final = "llm.token_count.prompt_details.cache_write"
OI_FINISH_REASON: Final = "llm.finish_reason"
#: Langfuse's usage attribute (see _langfuse_usage): bad values are named after it and its keys.
LF_USAGE: Final = "langfuse.observation.usage_details"
_ALL_INPUT_KEYS: Final = (*INPUT_TOKEN_KEYS, OI_PROMPT_TOKENS, LF_USAGE,
                          *(f"{LF_USAGE}.{k}" for k in ("prompt_tokens", "input_tokens", "input")))
_ALL_OUTPUT_KEYS: Final = (*OUTPUT_TOKEN_KEYS, OI_COMPLETION_TOKENS, LF_USAGE,
                           *(f"{LF_USAGE}.{k}" for k in ("completion_tokens", "output_tokens", "output")))
_ALL_READ_KEYS: Final = (*CACHE_READ_KEYS, OI_CACHE_READ_TOKENS, LF_USAGE,
                         *(f"{LF_USAGE}.{k}" for k in ("cached_tokens", "cache_read_input_tokens", "input_cache_read")))
_ALL_WRITE_KEYS: Final = (*CACHE_CREATION_KEYS, OI_CACHE_WRITE_TOKENS, LF_USAGE,
                          *(f"{LF_USAGE}.{k}" for k in ("cache_write_tokens", "cache_creation_input_tokens",
                                                             "input_cache_creation")))
_OI_OPERATIONS: Final = {"LLM": c.OPERATION_CHAT, "EMBEDDING": "embeddings"}
_OI_MODEL_KEYS: Final = ("llm.request.model_name", "llm.model_name", "embedding.model_name")
_OI_RESPONSE_MODEL_KEYS: Final = ("llm.response.model_name", "llm.model_name", "embedding.model_name")
#: LLM spans that are no model call: Anthropic's count_tokens (free, nothing generated).
_OI_NOT_CALLS: Final = ("count_tokens",)
#: Logfire's LLM integrations (scopes ``logfire.anthropic``, ``logfire.openai``): a streamed call is a span
#: for the request (no usage) and, once the stream ends, a log (``logfire.span_type`` = ``log``, often in
#: another trace) with the usage: the log is the call.
_LOGFIRE_SCOPES: Final = ("logfire.",)
_LOGFIRE_SPAN_TYPE: Final = "logfire.span_type"
#: ``Status.code`` of a failed span (OTLP's STATUS_CODE_ERROR).
_STATUS_ERROR: Final = 2
#: ``error.type`` when a span failed and says no more (the GenAI conventions' fallback value).
ERROR_TYPE_OTHER: Final = "_OTHER"


#: LiteLLM's OpenTelemetry callback (scope ``litellm``, SDK and proxy) writes no cache attribute: the
#: counts are only in ``metadata.usage_object``, the repr of its usage dict (``{'prompt_tokens': 486,
#: ..., 'cache_creation_input_tokens': 0, 'cache_read_input_tokens': 480}``; OpenAI's reads as
#: ``'prompt_tokens_details': {'cached_tokens': 480, ...}``), read with a bounded pattern, never evaluated.
_LITELLM_USAGE: Final = "metadata.usage_object"
_LITELLM_COUNT = re.compile(r"['\"](cache_read_input_tokens|cache_creation_input_tokens|cached_tokens|"
                            r"cache_creation_tokens)['\"]\s*:\s*(\d{1,12})\b")


def _litellm_cache(text: str, bad: list[str]) -> tuple[int | None, int | None]:
    found: dict[str, int] = {}
    for key, value in _LITELLM_COUNT.findall(text[:8192]):
        found.setdefault(key, int(value))
    read = found.get("cache_read_input_tokens", found.get("cached_tokens"))
    write = found.get("cache_creation_input_tokens", found.get("cache_creation_tokens"))
    for key, n in (("cache_read", read), ("cache_creation", write)):
        if n is not None and n > MAX_TOKENS:
            bad.append(f"{_LITELLM_USAGE}.{key}:out_of_range")
    return (read if read is None or read <= MAX_TOKENS else None,
            write if write is None or write <= MAX_TOKENS else None)


#: Langfuse's SDK (v3+, OpenTelemetry-native): a ``generation`` (or ``embedding``) observation is a model
#: call; its model is ``langfuse.observation.model.name`` (no provider), its usage the JSON object
#: ``langfuse.observation.usage_details`` in one of three shapes: OpenAI's (``prompt_tokens``, cached
#: included, ``prompt_tokens_details.cached_tokens``), Anthropic's (``input_tokens`` WITHOUT the cache,
#: ``cache_read_input_tokens``, ``cache_creation_input_tokens``) or Langfuse's own usage types
#: (``input`` without the cache, ``input_cache_read``, ``input_cache_creation``, ``output``).
LF_TYPE: Final = "langfuse.observation.type"
LF_MODEL: Final = "langfuse.observation.model.name"
_LF_OPERATIONS: Final = {"generation": c.OPERATION_CHAT, "embedding": "embeddings"}
_LF_MAX_USAGE_CHARS: Final = 65_536


def _langfuse_usage(v: Any, bad: list[str]) -> tuple[int | None, int | None, int | None, int | None]:
    """(input with the cache, output, cache read, cache write) of a Langfuse usage_details value."""
    text = _str(v) if v is not None else None
    if not text:
        return None, None, None, None
    try:
        usage = json.loads(text) if len(text) <= _LF_MAX_USAGE_CHARS else None
    except (ValueError, RecursionError):  # not JSON, or nested past Python's recursion limit
        usage = None
    if not isinstance(usage, dict):
        bad.append(f"{LF_USAGE}:not_an_object")
        return None, None, None, None

    def num(obj: Any, key: str) -> int | None:
        x = obj.get(key) if isinstance(obj, dict) else None
        if x is None:
            return None
        if isinstance(x, bool) or not isinstance(x, (int, float)) or x != x or not 0 <= x <= MAX_TOKENS:
            bad.append(f"{LF_USAGE}.{key}:out_of_range")
            return None
        return int(x)

    details = usage.get("prompt_tokens_details")
    if "prompt_tokens" in usage:  # OpenAI's: prompt_tokens includes the cached tokens
        read, write = num(details, "cached_tokens"), num(details, "cache_write_tokens")
        return num(usage, "prompt_tokens"), num(usage, "completion_tokens"), read, write
    if "input_tokens" in usage:  # Anthropic's: input_tokens excludes the cache
        fresh, keys = num(usage, "input_tokens"), ("cache_read_input_tokens", "cache_creation_input_tokens")
    else:  # Langfuse's usage types
        fresh, keys = num(usage, "input"), ("input_cache_read", "input_cache_creation")
    read, write = num(usage, keys[0]), num(usage, keys[1])
    total = None if fresh is None else fresh + (read or 0) + (write or 0)
    return total, num(usage, "output_tokens" if "input_tokens" in usage else "output"), read, write


def _first_str(get: Any, keys: tuple[str, ...]) -> str | None:
    for key in keys:
        s = _str(get(key))
        if s:
            return s
    return None


def _exception_type(span: Any) -> str:
    """The ``exception.type`` of a failed span's last exception event, else ``_OTHER``."""
    for event in reversed(span.events):
        if event.name == "exception":
            for kv in event.attributes:
                if kv.key == "exception.type":
                    t = _str(kv.value)
                    if t:
                        return t[:200]
    return ERROR_TYPE_OTHER


def _quality(bad: list[str]) -> str | None:
    return ",".join(bad) if bad else None


def flatten_span(
    span: Any,
    pricing: PricingTable,
    kafka_partition: int = -1,
    kafka_offset: int = -1,
    scope: str | None = None,
) -> Row | None:
    """One OTLP span → its lake row, or None when costline has no row for it.

    ``scope`` is the name of the instrumentation scope the span came in (``ScopeSpans.scope.name``).
    Values out of range (NaN, infinities, negative or absurd counts and prices, times that are
    not times) are nulled and named in the row's ``data_quality``; they never raise.
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
    bad: list[str] = []
    ts, duration_ms = _times(span, bad)
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
            _count(get(c.COSTLINE_ATTEMPTS), c.COSTLINE_ATTEMPTS, bad, MAX_ATTEMPTS),
            _count(get(c.COSTLINE_ESCALATIONS), c.COSTLINE_ESCALATIONS, bad, MAX_ATTEMPTS),
            _bool(get(c.COSTLINE_SUCCESS)),
            _str(get(c.ERROR_TYPE)),
            duration_ms,
            _str(get(c.GEN_AI_INPUT_MESSAGES)),
            _str(get(c.GEN_AI_OUTPUT_MESSAGES)),
            kafka_partition,
            kafka_offset,
            _quality(bad),
        ))
    if name == c.SPAN_CACHE_LOOKUP:
        sim_v = get(c.COSTLINE_CACHE_SIMILARITY)
        similarity = _float(sim_v)
        if similarity is None and sim_v is not None and sim_v.WhichOneof("value") is not None:
            bad.append(f"{c.COSTLINE_CACHE_SIMILARITY}:not_finite")
        return _new(LookupRow, (
            sid.hex(),
            tid.hex(),
            parent.hex() if parent else None,
            _str(get(c.COSTLINE_REQUEST_ID)),
            ts,
            _str(get(c.COSTLINE_TENANT)),
            _str(get(c.COSTLINE_CACHE_NAMESPACE)),
            _bool(get(c.COSTLINE_CACHE_HIT)),
            similarity,
            duration_ms,
            kafka_partition,
            kafka_offset,
            _quality(bad),
            _str(get(c.COSTLINE_CACHE_REJECT_REASON)),
        ))
    op_v = get(c.GEN_AI_OPERATION_NAME)
    model_v = get(c.GEN_AI_REQUEST_MODEL)
    #: for spans that carry counts only when the API reported usage: the data_quality names of missing ones
    unreported: tuple[str, ...] = ()
    genai = op_v is not None or model_v is not None  # the GenAI conventions' spelling (else OpenInference's, Langfuse's)
    if genai:
        op = _str(op_v)
        if op in NOT_CALL_OPERATIONS:
            return None  # an agent's run or a tool's: its usage (if any) is its model calls', counted on them
        model = _str(model_v)
        response_model = _str(get(c.GEN_AI_RESPONSE_MODEL))
        provider = _str(get(c.GEN_AI_PROVIDER_NAME)) or _str(get(c.GEN_AI_SYSTEM))
        # the first spelling is what costline and the current conventions write: look further only without it
        v = get(_IN0)
        input_tokens = _count(v, _IN0, bad) if v is not None else _count(*_first(get, INPUT_TOKEN_KEYS), bad)
        v = get(_OUT0)
        output_tokens = _count(v, _OUT0, bad) if v is not None else _count(*_first(get, OUTPUT_TOKEN_KEYS), bad)
        v = get(_READ0)
        read = _count(v, _READ0, bad) if v is not None else _count(*_first(get, CACHE_READ_KEYS), bad)
        v = get(_WRITE0)
        write = _count(v, _WRITE0, bad) if v is not None else _count(*_first(get, CACHE_CREATION_KEYS), bad)
        finish_reasons = _str_list(get(c.GEN_AI_RESPONSE_FINISH_REASONS))
        if read is None and write is None and (v := get(_LITELLM_USAGE)) is not None:
            read, write = _litellm_cache(_str(v) or "", bad)  # its cache counts are only in there
        if input_tokens is None and output_tokens is None and read is None and write is None:
            # no usage at all (OpenLLMetry JS on a streamed OpenAI call): unknown, never $0
            unreported = (f"{_IN0}:missing", f"{_OUT0}:missing")
    elif (lf_v := get(LF_TYPE)) is not None:
        op = _LF_OPERATIONS.get(_str(lf_v) or "")
        if op is None:
            return None  # a Langfuse span, event, agent, tool...: no model call
        unreported = (f"{LF_USAGE}:missing",)
        model = response_model = _str(get(LF_MODEL))
        provider = None  # Langfuse does not say; the model prices the call
        input_tokens, output_tokens, read, write = _langfuse_usage(get(LF_USAGE), bad)
        finish_reasons = None
    else:
        kind_v = get(OI_SPAN_KIND)
        op = _OI_OPERATIONS.get(_str(kind_v) or "") if kind_v is not None else None
        if op is None or name.endswith(_OI_NOT_CALLS):
            return None  # not an OpenInference model call (a chain, tool, agent... or a free token count)
        unreported = (f"{OI_PROMPT_TOKENS}:missing", f"{OI_COMPLETION_TOKENS}:missing")
        model, response_model = _first_str(get, _OI_MODEL_KEYS), _first_str(get, _OI_RESPONSE_MODEL_KEYS)
        provider = _str(get(OI_PROVIDER)) or _str(get(OI_SYSTEM))
        input_tokens = _count(get(OI_PROMPT_TOKENS), OI_PROMPT_TOKENS, bad)
        output_tokens = _count(get(OI_COMPLETION_TOKENS), OI_COMPLETION_TOKENS, bad)
        read = _count(get(OI_CACHE_READ_TOKENS), OI_CACHE_READ_TOKENS, bad)
        write = _count(get(OI_CACHE_WRITE_TOKENS), OI_CACHE_WRITE_TOKENS, bad)
        finish_reasons = _str_list(get(OI_FINISH_REASON))
    if genai and scope == _AI_SDK_SCOPE:
        if provider:
            provider = provider.split(".", 1)[0]  # "anthropic.messages" -> "anthropic"
        if op is None:
            op = next((o for suffix, o in _AI_SDK_OPERATIONS if name.endswith(suffix)), None)
    if provider is not None:
        provider = provider.strip().lower()  # older OpenLLMetry spells it "Anthropic"
    if (scope is not None and input_tokens is not None and provider == c.PROVIDER_ANTHROPIC
            and scope.startswith(_INPUT_EXCLUDES_CACHE_SCOPES)):
        input_tokens += (read or 0) + (write or 0)
    error_type = _str(get(c.ERROR_TYPE))
    if error_type is None and span.status.code == _STATUS_ERROR:
        error_type = _exception_type(span)  # an instrumentation that says "failed" only by the span's status
    if (input_tokens is None and output_tokens is None and error_type is None and scope is not None
            and scope.startswith(_LOGFIRE_SCOPES) and _str(get(_LOGFIRE_SPAN_TYPE)) == "span"):
        return None  # Logfire's streamed call: its usage is on the "streaming response" log, the call
    batch = bool(_bool(get(c.COSTLINE_BATCH)))
    explicit = _usd(get(c.COSTLINE_COST_USD), bad)
    price = pricing.price_call(
        model=model,
        provider=provider,
        input_tokens=input_tokens or 0,
        output_tokens=output_tokens or 0,
        cache_read_tokens=read or 0,
        cache_creation_tokens=write or 0,
        batch=batch,
        explicit_cost_usd=explicit,
        explicit_tier=_str(get(c.COSTLINE_TIER)),
        response_model=response_model,
    )
    cost, status = price.cost_usd, price.status
    if bad and status == PRICED and any(f.startswith(_USAGE_PREFIX) for f in bad):
        cost, status = None, INVALID_USAGE  # a price from a count that was dropped would be made up
    if _bool(get(c.COSTLINE_USAGE_INCOMPLETE)):
        # a stream that broke or was closed early (usage so far: a lower bound), or an OpenAI stream
        # without include_usage (no counts at all: unpriced, never $0)
        bad.append(f"{c.COSTLINE_USAGE_INCOMPLETE}:true")
        if input_tokens is None and output_tokens is None and explicit is None:
            cost, status = None, INCOMPLETE_USAGE
            bad.extend((f"{_IN0}:missing", f"{_OUT0}:missing"))
    elif (unreported and status == PRICED and input_tokens is None and output_tokens is None
          and error_type is None and not bad):
        # a call that answered without any usage (an OpenAI stream without include_usage, to OpenInference
        # and Langfuse, which write counts only when the API reported them) has unknown usage, never $0
        cost, status = None, INCOMPLETE_USAGE
        bad.extend(unreported)
    return _new(CallRow, (
        sid.hex(),
        tid.hex(),
        parent.hex() if parent else None,
        _str(get(c.COSTLINE_REQUEST_ID)),
        ts,
        op,
        provider,
        model,
        response_model,
        price.tier,
        input_tokens if input_tokens is not None else (None if bad and _dropped(bad, _ALL_INPUT_KEYS) else 0),
        output_tokens if output_tokens is not None else (None if bad and _dropped(bad, _ALL_OUTPUT_KEYS) else 0),
        read if read is not None else (None if bad and _dropped(bad, _ALL_READ_KEYS) else 0),
        write if write is not None else (None if bad and _dropped(bad, _ALL_WRITE_KEYS) else 0),
        batch,
        finish_reasons,
        error_type,
        cost,
        status,
        pricing.version,
        duration_ms,
        _str(get(c.GEN_AI_INPUT_MESSAGES)),
        _str(get(c.GEN_AI_OUTPUT_MESSAGES)),
        kafka_partition,
        kafka_offset,
        _str(get(c.GEN_AI_RESPONSE_ID)),
        scope or None,
        _quality(bad),
    ))


#: ``pricing_status`` of a call whose token counts were dropped as invalid: not priced (cost NULL).
INVALID_USAGE: Final = "invalid_usage"
#: ``pricing_status`` of a call whose instrumentation says it has no usage to report
#: (``costline.usage.incomplete`` without token counts): not priced (cost NULL), never $0.
INCOMPLETE_USAGE: Final = "incomplete_usage"
_USAGE_PREFIX: Final = ("gen_ai.usage.", "llm.usage.", "llm.token_count.", "ai.usage.", LF_USAGE)


def _dropped(bad: list[str], keys: tuple[str, ...]) -> bool:
    return any(f.split(":", 1)[0] in keys for f in bad)


def flatten_request(
    request: Any,
    pricing: PricingTable,
    kafka_partition: int = -1,
    kafka_offset: int = -1,
) -> Iterator[Row | None]:
    """Every span of an ``ExportTraceServiceRequest`` flattened (None for ignored spans)."""
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            scope = ss.scope.name or None
            for span in ss.spans:
                yield flatten_span(span, pricing, kafka_partition, kafka_offset, scope)
