"""Reading OTLP attribute values: fast on what instrumentations send, never raising on what they should not.

Every reader takes an ``AnyValue`` straight off the upb protobuf objects (or None when the attribute
is absent) and returns a plain Python value or None. Readers of numbers append ``key:reason`` to a
``bad`` list when a value is present but unusable (NaN, infinite, negative, out of range, not a
number): the caller nulls the field and names it in the row's ``data_quality``.

The fast paths read the expected member (``string_value``, ``int_value``) first and look closer
only when it is empty: decode + flatten stays well above 100k spans/s per core.
"""

from __future__ import annotations

import json
from typing import Any, Final

from costline import contract as c

__all__ = [
    "anyvalue_to_python",
    "attributes_dict",
    "str_of",
    "first_str",
    "str_list_of",
    "bool_of",
    "float_of",
    "count_of",
    "first_present",
    "usd_of",
    "span_times",
    "exception_type",
    "MAX_TOKENS",
    "MAX_ATTEMPTS",
    "MAX_CALL_USD",
    "ERROR_TYPE_OTHER",
]

#: Largest token count one call may report; more is a broken counter, not a call (1e8 tokens).
MAX_TOKENS: Final = c.MAX_TOKENS
#: Largest count of attempts / escalations a request may report.
MAX_ATTEMPTS: Final = 10_000
#: Largest explicit price one call may carry (USD).
MAX_CALL_USD: Final = 100_000.0
#: Span times outside [2000-01-01, 2100-01-01) UTC are not times (a zero end time is 1970).
MIN_TIME_NS: Final = 946_684_800_000_000_000
MAX_TIME_NS: Final = 4_102_444_800_000_000_000
#: Longest plausible span (ms): a week.
MAX_DURATION_MS: Final = 7 * 86_400_000.0
#: ``error.type`` when a span failed and says no more (the GenAI conventions' fallback value).
ERROR_TYPE_OTHER: Final = "_OTHER"

_INF = float("inf")
_TRUE_WORDS = frozenset({"true", "1", "yes"})


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


def str_of(v: Any) -> str | None:
    """A string; other values as their JSON (an array of strings as ``["a","b"]``); None when unset."""
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


def first_str(get: Any, keys: tuple[str, ...]) -> str | None:
    """The first non-empty string among the attributes ``keys`` (``get`` is the span's ``attrs.get``)."""
    for key in keys:
        s = str_of(get(key))
        if s:
            return s
    return None


#: Longest string read as a JSON array of strings by :func:`str_list_of`.
_MAX_JSON_LIST_CHARS: Final = 4096


def str_list_of(v: Any) -> list[str] | None:
    """An array of strings; a single string as a one-element list, or as the list it spells in JSON
    (Microsoft Agent Framework writes ``gen_ai.response.finish_reasons`` as ``'["stop"]'``); None for
    anything else."""
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
        s = v.string_value
        if s.startswith("[") and len(s) <= _MAX_JSON_LIST_CHARS:
            try:
                items = json.loads(s)
            except (ValueError, RecursionError):
                items = None
            if isinstance(items, list) and all(isinstance(x, str) for x in items):
                return items
        return [s]
    return None


def bool_of(v: Any) -> bool | None:
    """A boolean, also spelled as a string (``true``, ``1``, ``yes``) or an int; None otherwise."""
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


def float_of(v: Any) -> float | None:
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


def count_of(v: Any, key: str, bad: list[str], limit: int = MAX_TOKENS) -> int | None:
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
    if value != int(value):  # 1000.6 tokens: a sender's arithmetic, not a count (1000.0 is one)
        bad.append(f"{key}:not_whole")
        return None
    return int(value)


def first_present(get: Any, keys: tuple[str, ...]) -> tuple[Any, str]:
    """The first present attribute of ``keys`` (its AnyValue and key); ``(None, keys[0])`` when none is."""
    for key in keys:
        v = get(key)
        if v is not None:
            return v, key
    return None, keys[0]


def usd_of(v: Any, bad: list[str]) -> float | None:
    """An explicit price (``costline.cost_usd``): finite, not negative, not absurd; else None and a flag."""
    if v is None:
        return None
    f = float_of(v)
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


def span_times(span: Any, bad: list[str]) -> tuple[int | None, float | None]:
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


def exception_type(span: Any) -> str:
    """The ``exception.type`` of a failed span's last exception event, else ``_OTHER``."""
    for event in reversed(span.events):
        if event.name == "exception":
            for kv in event.attributes:
                if kv.key == "exception.type":
                    t = str_of(kv.value)
                    if t:
                        return t[:200]
    return ERROR_TYPE_OTHER
