"""One bad span costs the processor only that span (no broker: the real Processor.handle with a DLQ stand-in).

A Kafka message holds spans of many requests (and, behind a shared OTel Collector, of many tenants). Before these
fixes one value in one span dead-lettered the whole message:

* a providerMetadata count too large for a float (OverflowError in ``provider_metadata_attributes``), or anything
  else a span raised while flattening (``flatten_into`` set aside only ``OtlpDecodeError``);
* an OTLP/JSON span protobuf cannot hold (an ``intValue`` past int64, a negative time, a wrong type) or a lone
  surrogate (OpenTelemetry JS cuts a value through an emoji): one ``ParseDict`` over the whole document.

Now such a span is set aside alone and dead-lettered alone; its neighbours land. Usage counts with a fraction in
Langfuse's and MLflow's usage objects are flagged ``not_whole`` (they were cut to a whole number silently).
Figures are by hand from the per-million prices set here.
"""

from __future__ import annotations

import json
import logging

import pytest

from costline import contract as c
from costline.config import Config, LakeConfig, ModelPrice, PricingConfig
from costline.lake import open_lake
from costline.otlp import ExportTraceServiceRequest
from costline.processors import decode as decode_module
from costline.processors.decode import decode_message, flatten_into
from costline.processors.records import CallRow, MemoPricingTable, flatten_span
from costline.processors.spellings import provider_metadata_attributes
from costline.sim.synth import export_request, span

from processor_rig import claimed_processor, flushed_tenants as _tenants

T0 = 1_780_000_000 * 10**9  # ns
TEST_MODEL = "test-model-x"
#: USD per million tokens, set here
IN_PER_MTOK, OUT_PER_MTOK = 2.0, 8.0
PRICING = PricingConfig(models=(ModelPrice(TEST_MODEL, "budget", input_per_mtok=IN_PER_MTOK,
                                           output_per_mtok=OUT_PER_MTOK),))
HUGE = int("9" * 400)  # past a double's range: float() raises OverflowError


def _request(n: int, tenant: str):
    return span(c.SPAN_REQUEST, trace_id=bytes([n]) * 16, span_id=bytes([n, 1]) * 4, start_ns=T0,
                end_ns=T0 + 10**9, attributes={c.COSTLINE_TENANT: tenant, c.COSTLINE_TIER: "cache",
                                               c.COSTLINE_SUCCESS: True, c.COSTLINE_CACHE_HIT: True})


def _ai_sdk_call(metadata: str):
    """A Vercel AI SDK call span of 1,000 in + 100 out, its providerMetadata as given."""
    return span("ai.generateText.doGenerate", trace_id=b"\x09" * 16, span_id=b"\x09\x01" * 4, start_ns=T0,
                end_ns=T0 + 10**9, attributes={
                    "gen_ai.system": "anthropic.messages", "gen_ai.request.model": TEST_MODEL,
                    "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 100,
                    "ai.response.providerMetadata": metadata})


# --- 1. a count past a double in providerMetadata --------------------------------------------------------------

@pytest.mark.parametrize("count, flag", [(HUGE, "out_of_range"), (-HUGE, "negative"), (2**64, "out_of_range")],
                         ids=["400-digits", "minus-400-digits", "2^64"])
def test_provider_metadata_integer_past_int64_is_flagged_not_raised(count, flag):
    bad: list[str] = []
    meta = json.dumps({"anthropic": {"usage": {"cache_creation_input_tokens": count, "service_tier": "standard"}}})
    out = provider_metadata_attributes(meta, lambda key: False, bad)
    assert bad == [f"{c.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS}:{flag}"]
    assert c.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS not in out
    assert out[c.ANTHROPIC_RESPONSE_SERVICE_TIER].string_value == "standard"  # the rest still read


def test_a_call_with_a_huge_provider_metadata_count_lands_unpriced_and_flagged():
    meta = '{"anthropic":{"usage":{"cache_creation_input_tokens":' + "9" * 400 + "}}}"
    row = flatten_span(_ai_sdk_call(meta), MemoPricingTable(PRICING), scope="ai")
    assert isinstance(row, CallRow)
    assert (row.input_tokens, row.output_tokens, row.cache_creation_tokens) == (1000, 100, None)
    assert row.cost_usd is None and row.pricing_status == "invalid_usage"  # never priced from a dropped count
    assert f"{c.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS}:out_of_range" in row.data_quality


def test_the_same_call_with_a_sane_count_is_priced():
    """The control: no cache write reported (0), 1,000 in x $2/M + 100 out x $8/M = $0.002 + $0.0008."""
    meta = '{"anthropic":{"usage":{"cache_creation_input_tokens":0}}}'
    row = flatten_span(_ai_sdk_call(meta), MemoPricingTable(PRICING), scope="ai")
    assert row.cost_usd == pytest.approx(0.0028, abs=1e-12) and row.pricing_status == "priced"


# --- 1. any exception while flattening one span sets aside that span only ----------------------------------------

def _boom_on(monkeypatch, name: str) -> None:
    """Make flattening raise for spans named ``name``, as an input no check foresaw would."""
    real = decode_module.flatten_span

    def flatten(s, *args, **kwargs):
        if s.name == name:
            raise ArithmeticError("an input no check foresaw")
        return real(s, *args, **kwargs)

    monkeypatch.setattr(decode_module, "flatten_span", flatten)


def test_flatten_into_sets_aside_a_span_that_raises_and_logs_it(monkeypatch, caplog):
    _boom_on(monkeypatch, "boom")
    boom = span("boom", trace_id=b"\x05" * 16, span_id=b"\x05\x01" * 4, start_ns=T0, end_ns=T0 + 1)
    req = export_request([_request(1, "t1"), boom, _request(2, "t2")])
    requests, calls, lookups, unpriced, invalid = [], [], [], [], []
    with caplog.at_level(logging.WARNING, logger="costline.processors.decode"):
        spans, ignored = flatten_into(req, MemoPricingTable(PRICING), 0, 7, requests, calls, lookups, unpriced,
                                      invalid)
    assert (spans, ignored) == (3, 0)
    assert [r.tenant for r in requests] == ["t1", "t2"]
    assert [s.name for _rs, _ss, s, _why in invalid] == ["boom"]
    assert "ArithmeticError: an input no check foresaw" in invalid[0][3]
    assert any("ArithmeticError" in r.getMessage() and "boom" in r.getMessage() for r in caplog.records)


def test_flatten_into_without_invalid_still_raises_and_keeps_nothing(monkeypatch):
    _boom_on(monkeypatch, "boom")
    boom = span("boom", trace_id=b"\x05" * 16, span_id=b"\x05\x01" * 4, start_ns=T0, end_ns=T0 + 1)
    requests: list = []
    with pytest.raises(ArithmeticError):
        flatten_into(export_request([_request(1, "t1"), boom]), MemoPricingTable(PRICING), 0, 0, requests, [], [],
                     [])
    assert requests == []


# --- the processor: what lands, what is dead-lettered ----------------------------------------------------------

@pytest.fixture
def proc(tmp_path):
    yield claimed_processor(Config(lake=LakeConfig(path=tmp_path / "lake"), pricing=PRICING))


def test_processor_dead_letters_only_the_span_that_raised(proc, monkeypatch):
    _boom_on(monkeypatch, "boom")
    boom = span("boom", trace_id=b"\x05" * 16, span_id=b"\x05\x01" * 4, start_ns=T0, end_ns=T0 + 1)
    proc.handle(0, 0, b"k", export_request([_request(1, "t1"), boom, _request(2, "t2")]).SerializeToString(),
                [], 0.0)
    assert _tenants(proc) == ["t1", "t2"]
    ((headers, value),) = proc.dlq.sent
    assert headers[c.HEADER_CONTENT_TYPE] == c.CONTENT_TYPE_PROTOBUF.encode()
    assert headers[c.HEADER_DLQ_REASON].startswith(b"1 of the message's 3 spans left out")
    assert b"ArithmeticError" in headers[c.HEADER_DLQ_REASON]
    left = [s for rs in ExportTraceServiceRequest.FromString(value).resource_spans for ss in rs.scope_spans
            for s in ss.spans]
    assert [s.name for s in left] == ["boom"]
    assert (proc.stats.spans, proc.stats.invalid_spans, proc.stats.dlq) == (3, 1, 1)


def test_processor_keeps_a_protobuf_message_with_a_huge_provider_metadata_count(proc):
    """The reviewer's message: two tenants' requests and an AI SDK call whose cache-write count is 400 digits."""
    meta = '{"anthropic":{"usage":{"cache_creation_input_tokens":' + "9" * 400 + "}}}"
    req = export_request([_request(1, "t1"), _request(2, "t2"), _ai_sdk_call(meta)])
    proc.handle(0, 0, None, req.SerializeToString(), [], 0.0)
    assert _tenants(proc) == ["t1", "t2"]
    assert proc.dlq.sent == []
    con = open_lake(proc.config)
    try:
        assert con.execute("SELECT pricing_status, cost_usd FROM calls_raw").fetchall() == [("invalid_usage", None)]
    finally:
        con.close()


def test_a_protobuf_message_under_an_unknown_content_type_keeps_its_valid_spans(proc):
    """Its ids are checked span by span as under any other content type (it was refused whole for one bad id)."""
    zero_id = span(c.SPAN_REQUEST, trace_id=b"\x05" * 16, span_id=bytes(8), start_ns=T0, end_ns=T0 + 1)
    value = export_request([_request(1, "t1"), zero_id, _request(2, "t2")]).SerializeToString()
    proc.handle(0, 0, b"k", value, [("content-type", b"application/octet-stream")], 0.0)
    assert _tenants(proc) == ["t1", "t2"]
    ((headers, dead),) = proc.dlq.sent
    assert [s.span_id for rs in ExportTraceServiceRequest.FromString(dead).resource_spans for ss in rs.scope_spans
            for s in ss.spans] == [bytes(8)]


# --- 3. OTLP/JSON: one span protobuf cannot hold, or a lone surrogate ---------------------------------------------

def _json_span(n: int, tenant: str, **extra) -> dict:
    s = {"traceId": f"{n:02x}" * 16, "spanId": f"{n:02x}" * 7 + "01", "name": c.SPAN_REQUEST,
         "startTimeUnixNano": str(T0), "endTimeUnixNano": str(T0 + 10**9),
         "attributes": [{"key": c.COSTLINE_TENANT, "value": {"stringValue": tenant}},
                        {"key": c.COSTLINE_TIER, "value": {"stringValue": "cache"}},
                        {"key": c.COSTLINE_SUCCESS, "value": {"boolValue": True}}]}
    s.update(extra)
    return s


def _json_message(spans: list[dict]) -> bytes:
    return json.dumps({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "js-app"}}]},
        "scopeSpans": [{"scope": {"name": "js"}, "spans": spans}]}]}).encode()


JSON_HEADERS = [("content-type", b"application/json")]


def test_a_lone_surrogate_is_read_as_u_fffd_and_nothing_is_dead_lettered(proc):
    proc.handle(0, 0, None, _json_message([_json_span(3, "t3"), _json_span(4, "t4"), _json_span(5, "t5 \ud83d")]),
                JSON_HEADERS, 0.0)
    assert _tenants(proc) == ["t3", "t4", "t5 \ufffd"]
    assert proc.dlq.sent == []


@pytest.mark.parametrize("headers", [JSON_HEADERS, None], ids=["content-type", "sniffed"])
@pytest.mark.parametrize("bad", [
    {"startTimeUnixNano": "-1"},
    {"endTimeUnixNano": str(2**64)},
    {"attributes": [{"key": "gen_ai.usage.input_tokens", "value": {"intValue": 1e30}}]},
    {"attributes": [{"key": "gen_ai.usage.input_tokens", "value": {"intValue": 1.5}}]},
    {"attributes": [{"key": c.COSTLINE_TENANT, "value": {"stringValue": 5}}]},
    {"attributes": [{"key": "x", "value": {"arrayValue": {"values": [{"stringValue": "stop"}, 7]}}}]},
], ids=["negative-time", "time-2^64", "intValue-1e30", "intValue-1.5", "stringValue-5", "array-item-7"])
def test_an_unparsable_json_span_is_dead_lettered_alone_and_its_neighbours_land(proc, bad, headers):
    value = _json_message([_json_span(3, "t3"), _json_span(6, "t6", **bad), _json_span(4, "t4")])
    proc.handle(0, 0, b"k", value, headers, 0.0)
    assert _tenants(proc) == ["t3", "t4"]
    ((dlq_headers, dead),) = proc.dlq.sent
    assert dlq_headers[c.HEADER_CONTENT_TYPE] == b"application/json"
    assert dlq_headers[c.HEADER_DLQ_REASON].startswith(b"1 of the message's 3 spans left out (the others are in the lake)")
    doc = json.loads(dead)  # the span as it came, under its own resource and scope
    (rs,) = doc["resourceSpans"]
    assert rs["resource"]["attributes"][0]["value"]["stringValue"] == "js-app"
    (ss,) = rs["scopeSpans"]
    assert ss["scope"] == {"name": "js"}
    assert ss["spans"] == [_json_span(6, "t6", **bad)]
    assert (proc.stats.spans, proc.stats.invalid_spans, proc.stats.dlq) == (3, 1, 1)


def test_a_json_message_of_nothing_but_unparsable_spans_is_dead_lettered_whole(proc):
    value = _json_message([_json_span(6, "t6", startTimeUnixNano="-1"), _json_span(7, "t7", endTimeUnixNano="-5")])
    proc.handle(0, 0, b"k", value, JSON_HEADERS, 0.0)
    assert _tenants(proc) == []
    ((headers, dead),) = proc.dlq.sent
    assert dead == value and headers[c.HEADER_CONTENT_TYPE] == b"application/json"


def test_unparsable_and_bad_id_spans_of_one_json_message_each_go_to_the_dlq(proc):
    value = _json_message([_json_span(3, "t3"), _json_span(6, "t6", startTimeUnixNano="-1"),
                           _json_span(8, "t8", traceId="zz" * 16), _json_span(4, "t4")])
    proc.handle(0, 0, b"k", value, JSON_HEADERS, 0.0)
    assert _tenants(proc) == ["t3", "t4"]
    by_type = {h[c.HEADER_CONTENT_TYPE]: (h, v) for h, v in proc.dlq.sent}
    assert len(proc.dlq.sent) == 2
    as_json = json.loads(by_type[b"application/json"][1])
    assert [s["spanId"] for s in as_json["resourceSpans"][0]["scopeSpans"][0]["spans"]] == ["06" * 7 + "01"]
    as_proto = ExportTraceServiceRequest.FromString(by_type[c.CONTENT_TYPE_PROTOBUF.encode()][1])
    assert [s.span_id for rs in as_proto.resource_spans for ss in rs.scope_spans for s in ss.spans] == [
        bytes.fromhex("08" * 7 + "01")]
    for headers, _ in proc.dlq.sent:
        assert headers[c.HEADER_DLQ_REASON].startswith(b"1 of the message's 4 spans left out")
    assert (proc.stats.spans, proc.stats.invalid_spans, proc.stats.dlq) == (4, 2, 2)


def test_decode_message_without_a_dropped_list_refuses_what_it_would_leave_out():
    """Callers that cannot dead-letter a span (benchmarks, tools) are told, never handed a message short a span."""
    from costline.otlp import OtlpDecodeError

    value = _json_message([_json_span(3, "t3"), _json_span(6, "t6", startTimeUnixNano="-1")])
    with pytest.raises(OtlpDecodeError, match="t6|Failed to parse"):
        decode_message(value, JSON_HEADERS)
    dropped: list = []
    req = decode_message(value, JSON_HEADERS, dropped=dropped)
    assert [s.name for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans] == [c.SPAN_REQUEST]
    assert [d.dropped for d in dropped] == [1]


# --- 4. Langfuse's and MLflow's counts with a fraction ---------------------------------------------------------

_LF = {"langfuse.observation.type": "generation", "langfuse.observation.model.name": TEST_MODEL}


@pytest.mark.parametrize("usage, want", [
    # 1,000 in x $2/M + 5 out x $8/M = $0.002 + $0.00004
    ('{"input": 1000.0, "output": 5}', (1000, 5, "priced", 0.00204, None)),
    ('{"input": 1000.6, "output": 5}', (None, 5, "invalid_usage", None,
                                        "langfuse.observation.usage_details.input:not_whole")),
    ('{"prompt_tokens": 1000, "completion_tokens": 4.5}', (1000, None, "invalid_usage", None,
                                                           "langfuse.observation.usage_details.completion_tokens:not_whole")),
])
def test_langfuse_counts_with_a_fraction_are_flagged_not_whole(usage, want):
    row = flatten_span(span("OpenAI-generation", trace_id=b"\x01" * 16, span_id=b"\x02" * 8, start_ns=T0,
                            end_ns=T0 + 10**6, attributes={**_LF, "langfuse.observation.usage_details": usage}),
                       MemoPricingTable(PRICING))
    assert isinstance(row, CallRow)
    got = (row.input_tokens, row.output_tokens, row.pricing_status, row.cost_usd, row.data_quality)
    assert got[:3] == want[:3] and got[4] == want[4]
    assert got[3] == (None if want[3] is None else pytest.approx(want[3], abs=1e-12))


@pytest.mark.parametrize("usage, want", [
    # 12 in x $2/M + 3 out x $8/M = $0.000024 + $0.000024
    ('{"input_tokens": 12.0, "output_tokens": 3}', (12, 3, 0.000048, None)),
    ('{"input_tokens": 12.5, "output_tokens": 3}', (None, 3, None, "mlflow.chat.tokenUsage.input_tokens:not_whole")),
    ('{"input_tokens": 12, "output_tokens": 3, "cache_read_input_tokens": 0.25}',
     (12, 3, None, "mlflow.chat.tokenUsage.cache_read_input_tokens:not_whole")),
])
def test_mlflow_counts_with_a_fraction_are_flagged_not_whole(usage, want):
    row = flatten_span(span("Messages.create", trace_id=b"\x01" * 16, span_id=b"\x02" * 8, start_ns=T0,
                            end_ns=T0 + 10**6, attributes={
                                "mlflow.spanType": '"CHAT_MODEL"', "mlflow.llm.model": f'"{TEST_MODEL}"',
                                "mlflow.llm.provider": '"anthropic"', "mlflow.message.format": '"anthropic"',
                                "mlflow.chat.tokenUsage": usage}),
                       MemoPricingTable(PRICING), scope="mlflow.tracing.provider")
    assert isinstance(row, CallRow)
    assert (row.input_tokens, row.output_tokens, row.data_quality) == (want[0], want[1], want[3])
    assert row.cost_usd == (None if want[2] is None else pytest.approx(want[2], abs=1e-12))
