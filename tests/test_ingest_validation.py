"""Flatten-time validation: hostile values are nulled and named in ``data_quality``, never raised (issue 9 §5)."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

from costline import contract as c
from costline.lake import SCHEMAS
from costline.processors.buffer import PartitionBuffer, rows_to_batch
from costline.processors.decode import decode_message, flatten_message
from costline.processors.records import INVALID_USAGE, CallRow, LookupRow, MemoPricingTable, RequestRow, flatten_span
from costline.sim.synth import export_request, span

TID = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
SID = bytes.fromhex("b7ad6b7169203331")
T0 = 1_780_000_000_000_000_000  # ns, 2026-05-28
PRICING = MemoPricingTable()
HAIKU = {c.GEN_AI_OPERATION_NAME: "chat", c.GEN_AI_REQUEST_MODEL: "claude-haiku-4-5", c.GEN_AI_PROVIDER_NAME: "anthropic"}
IN, OUT = c.GEN_AI_USAGE_INPUT_TOKENS, c.GEN_AI_USAGE_OUTPUT_TOKENS


def _call(attrs, start=T0, end=T0 + 250_000_000):
    return flatten_span(span("chat", trace_id=TID, span_id=SID, start_ns=start, end_ns=end,
                             attributes={**HAIKU, **attrs}), PRICING)


# (attributes, field, expected value, expected flag or None)
CALL_CASES = [
    ({IN: float("nan"), OUT: 5}, "input_tokens", None, f"{IN}:not_finite"),
    ({IN: float("inf"), OUT: 5}, "input_tokens", None, f"{IN}:not_finite"),
    ({IN: float("-inf"), OUT: 5}, "input_tokens", None, f"{IN}:not_finite"),
    ({IN: "1e30", OUT: 5}, "input_tokens", None, f"{IN}:out_of_range"),
    ({IN: "lots", OUT: 5}, "input_tokens", None, f"{IN}:not_a_number"),
    ({IN: -10, OUT: 5}, "input_tokens", None, f"{IN}:negative"),
    ({IN: 10, OUT: 2**62}, "output_tokens", None, f"{OUT}:out_of_range"),
    ({IN: 10, OUT: "7"}, "output_tokens", 7, None),  # stringly but sane: kept
    ({IN: 10.0, OUT: 7}, "input_tokens", 10, None),
    ({IN: 1000.6, OUT: 7}, "input_tokens", None, f"{IN}:not_whole"),  # not cut to 1000
    ({IN: 10, OUT: "99.9"}, "output_tokens", None, f"{OUT}:not_whole"),
    ({IN: 10, OUT: 99.9}, "cost_usd", None, f"{OUT}:not_whole"),  # unpriced: a price from a dropped count is made up
    ({IN: 10, c.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: float("nan")}, "cache_read_tokens", None,
     f"{c.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS}:not_finite"),
    ({IN: 10, c.COSTLINE_COST_USD: float("nan")}, "cost_usd", pytest.approx(10 * 0.8e-6),
     f"{c.COSTLINE_COST_USD}:not_finite"),  # the bad price is dropped: the table prices the call
    ({IN: 10, c.COSTLINE_COST_USD: -0.5}, "cost_usd", pytest.approx(10 * 0.8e-6), f"{c.COSTLINE_COST_USD}:negative"),
    ({IN: 10, c.COSTLINE_COST_USD: "1e30"}, "cost_usd", pytest.approx(10 * 0.8e-6),
     f"{c.COSTLINE_COST_USD}:out_of_range"),
    ({IN: 10, c.COSTLINE_COST_USD: 0.25}, "cost_usd", 0.25, None),
]


@pytest.mark.parametrize("attrs, field, expected, flag", CALL_CASES)
def test_call_values_are_validated(attrs, field, expected, flag):
    row = _call(attrs)
    assert isinstance(row, CallRow)
    assert getattr(row, field) == expected
    if flag is None:
        assert row.data_quality is None
    else:
        assert flag in row.data_quality.split(",")


def test_a_call_whose_token_count_was_dropped_is_not_priced_from_the_rest():
    row = _call({IN: float("nan"), OUT: 100})
    assert (row.cost_usd, row.pricing_status, row.output_tokens) == (None, INVALID_USAGE, 100)


# (start ns, end ns, expected ts µs, expected duration ms, flag)
TIME_CASES = [
    (T0, T0 + 10**9, (T0 + 10**9) // 1000, 1000.0, None),
    (T0, 0, T0 // 1000, None, "end_time:out_of_range"),  # zero end: the start time, not 1970
    (0, T0, T0 // 1000, None, "start_time:out_of_range"),
    (T0, 2**63 - 1, T0 // 1000, None, "end_time:out_of_range"),
    (T0 + 10**9, T0, T0 // 1000, None, "duration_ms:out_of_range"),  # ends before it starts
    (0, 0, None, None, "ts:out_of_range"),
]


@pytest.mark.parametrize("start, end, ts, duration, flag", TIME_CASES)
def test_times_are_validated(start, end, ts, duration, flag):
    for name, attrs in ((c.SPAN_REQUEST, {}), (c.SPAN_CACHE_LOOKUP, {}), ("chat", {**HAIKU, IN: 1, OUT: 1})):
        row = flatten_span(span(name, trace_id=TID, span_id=SID, start_ns=start, end_ns=end, attributes=attrs),
                           PRICING)
        assert (row.ts, row.duration_ms) == (ts, duration)
        assert row.data_quality == flag


@pytest.mark.parametrize("attrs, field, flag", [
    ({c.COSTLINE_ATTEMPTS: float("nan")}, "attempts", f"{c.COSTLINE_ATTEMPTS}:not_finite"),
    ({c.COSTLINE_ATTEMPTS: -1}, "attempts", f"{c.COSTLINE_ATTEMPTS}:negative"),
    ({c.COSTLINE_ESCALATIONS: "1e30"}, "escalations", f"{c.COSTLINE_ESCALATIONS}:out_of_range"),
])
def test_request_counts_are_validated(attrs, field, flag):
    row = flatten_span(span(c.SPAN_REQUEST, trace_id=TID, span_id=SID, start_ns=T0, end_ns=T0 + 1000,
                            attributes=attrs), PRICING)
    assert isinstance(row, RequestRow)
    assert getattr(row, field) is None and row.data_quality == flag


def test_lookup_similarity_nan_is_dropped():
    row = flatten_span(span(c.SPAN_CACHE_LOOKUP, trace_id=TID, span_id=SID, start_ns=T0, end_ns=T0 + 1000,
                            attributes={c.COSTLINE_CACHE_SIMILARITY: float("nan"), c.COSTLINE_CACHE_HIT: True}),
                       PRICING)
    assert isinstance(row, LookupRow)
    assert row.similarity is None and row.hit is True
    assert row.data_quality == f"{c.COSTLINE_CACHE_SIMILARITY}:not_finite"


def test_hostile_rows_convert_to_arrow_and_commit_with_their_flags():
    """The flagged rows go through the buffer (Arrow conversion, date split) like any other."""
    hostile = [
        span("chat", trace_id=TID, span_id=bytes([i + 1]) * 8, start_ns=T0, end_ns=end,
             attributes={**HAIKU, IN: value, c.COSTLINE_COST_USD: cost})
        for i, (value, cost, end) in enumerate([(float("nan"), float("nan"), T0 + 5), ("1e30", -1.0, 0),
                                                (math.inf, 0.01, 0), (12, 0.01, T0 + 5)])
    ]
    hostile.append(span(c.SPAN_REQUEST, trace_id=TID, span_id=b"\x09" * 8, start_ns=0, end_ns=0))
    out = flatten_message(decode_message(export_request(hostile).SerializeToString()), PRICING)
    assert len(out.rows) == 5
    buf = PartitionBuffer(0)
    buf.add(0, out.rows, out.spans, now=0.0)
    tables = buf.tables()
    calls = pa.concat_tables(tables["calls"].values())
    assert calls.schema.equals(SCHEMAS["calls"])
    assert sorted(calls.column("input_tokens").to_pylist(), key=str) == [12, None, None, None]
    assert sum(1 for q in calls.column("data_quality").to_pylist() if q) == 3
    assert list(tables["requests"]) == ["1970-01-01"]  # no time at all: kept, flagged, filed with the schema files
    assert rows_to_batch("requests", [r for r in out.rows if isinstance(r, RequestRow)]).column(
        "data_quality").to_pylist() == ["ts:out_of_range"]


@pytest.mark.parametrize(("attrs", "tokens", "cost", "status"), [
    # an OpenAI stream without include_usage: no counts at all -> unpriced, never $0
    ({c.COSTLINE_USAGE_INCOMPLETE: True}, (None, None), None, "incomplete_usage"),
    # a stream cut short: the usage so far is priced (a lower bound) and flagged
    ({c.COSTLINE_USAGE_INCOMPLETE: True, IN: 1000, OUT: 100}, (1000, 100), (1000 * 0.80 + 100 * 4.0) / 1e6, "priced"),
    # the answer's count but no input count (a server sent one no count could be, 2**64, left out): the prompt's
    # price is unknown -> unpriced, not priced as a free prompt ($0.004 of output alone)
    ({c.COSTLINE_USAGE_INCOMPLETE: True, OUT: 1000}, (None, 1000), None, "incomplete_usage"),
    # complete usage: as before
    ({IN: 1000, OUT: 100}, (1000, 100), (1000 * 0.80 + 100 * 4.0) / 1e6, "priced"),
])
def test_incomplete_usage_is_flagged_and_never_priced_as_zero(attrs, tokens, cost, status):
    row = flatten_span(span("chat", trace_id=TID, span_id=SID, start_ns=T0, end_ns=T0 + 1000,
                            attributes={**HAIKU, **attrs}), PRICING)
    assert isinstance(row, CallRow)
    assert (row.input_tokens, row.output_tokens) == tokens
    assert row.pricing_status == status
    assert row.cost_usd == (pytest.approx(cost) if cost is not None else None)
    assert (c.COSTLINE_USAGE_INCOMPLETE in (row.data_quality or "")) == (c.COSTLINE_USAGE_INCOMPLETE in attrs)
