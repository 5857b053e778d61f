"""What third-party instrumentations send, cut where they cut it: one span's flaw must not cost the figures of the others.

Expected figures are computed here by hand from the default price table's Haiku prices (USD 0.80 / 4.00
per million input / output tokens), never with costline's pricing code.
"""

from __future__ import annotations

import http.client
import json

import pytest

from test_collectors_receiver import FakeForwarder

from costline.collectors.receiver import OtlpReceiver, decode_export, pack_traces
from costline.config import CollectorConfig
from costline.otlp import OtlpDecodeError
from costline.processors.decode import decode_message, flatten_message
from costline.processors.records import CallRow, MemoPricingTable

HAIKU_IN, HAIKU_OUT = 0.80, 4.0

#: What OpenTelemetry JS (sdk-trace-base 2.12.1, otlp-transformer 0.223.1, its JsonTraceSerializer) sends
#: for two calls, with ``spanLimits.attributeValueLengthLimit: 25``: the second call's prompt
#: ``"Thanks for the refund!! \u{1F600} a lot"`` is cut by UTF-16 code units through the emoji, and its
#: JSON keeps the half: ``\ud83d`` (its protobuf serializer writes U+FFFD instead).
JS_OTLP_JSON_WITH_A_CUT_EMOJI = (
    b'{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"unknown_service:'
    b'node"}},{"key":"telemetry.sdk.language","value":{"stringValue":"nodejs"}},{"key":"telemetry.sdk.name",'
    b'"value":{"stringValue":"opentelemetry"}},{"key":"telemetry.sdk.version","value":{"stringValue":"2.12.1"}}],'
    b'"droppedAttributesCount":0},"scopeSpans":[{"scope":{"name":"@traceloop/instrumentation-anthropic"},"spans":['
    b'{"traceId":"9fcf1965ac8fb96e5acf1ad3aded28b7","spanId":"a917166984417f2e","name":"anthropic.chat","kind":1,'
    b'"startTimeUnixNano":"1796198039744000000","endTimeUnixNano":"1796198039744534225","attributes":['
    b'{"key":"gen_ai.operation.name","value":{"stringValue":"chat"}},'
    b'{"key":"gen_ai.request.model","value":{"stringValue":"claude-haiku-4-5"}},'
    b'{"key":"gen_ai.provider.name","value":{"stringValue":"anthropic"}},'
    b'{"key":"gen_ai.usage.input_tokens","value":{"intValue":100}},'
    b'{"key":"gen_ai.usage.output_tokens","value":{"intValue":10}},'
    b'{"key":"gen_ai.input.messages","value":{"stringValue":"plain"}}],"droppedAttributesCount":0,"events":[],'
    b'"droppedEventsCount":0,"status":{"code":0},"links":[],"droppedLinksCount":0,"flags":257},'
    b'{"traceId":"c9c21c14c8f1584ae82d55d2ab6ea717","spanId":"e7dec821243b80dc","name":"anthropic.chat","kind":1,'
    b'"startTimeUnixNano":"1796198039746000000","endTimeUnixNano":"1796198039746076243","attributes":['
    b'{"key":"gen_ai.operation.name","value":{"stringValue":"chat"}},'
    b'{"key":"gen_ai.request.model","value":{"stringValue":"claude-haiku-4-5"}},'
    b'{"key":"gen_ai.provider.name","value":{"stringValue":"anthropic"}},'
    b'{"key":"gen_ai.usage.input_tokens","value":{"intValue":200}},'
    b'{"key":"gen_ai.usage.output_tokens","value":{"intValue":20}},'
    b'{"key":"gen_ai.input.messages","value":{"stringValue":"Thanks for the refund!! \\ud83d"}}],'
    b'"droppedAttributesCount":0,"events":[],"droppedEventsCount":0,"status":{"code":0},"links":[],'
    b'"droppedLinksCount":0,"flags":257}]}]}]}'
)


def _calls(messages) -> list[CallRow]:
    pricing = MemoPricingTable()
    return sorted((row for _key, value in messages for row in flatten_message(decode_message(value), pricing).rows),
                  key=lambda r: r.input_tokens)


def test_a_prompt_cut_through_an_emoji_in_otlp_json_costs_no_call():
    req, rejected, _why = decode_export(JS_OTLP_JSON_WITH_A_CUT_EMOJI, True)
    assert rejected == 0
    messages, refused, _ = pack_traces(req, 1 << 20)
    assert refused == 0
    calls = _calls(messages)
    assert [(c.input_tokens, c.output_tokens) for c in calls] == [(100, 10), (200, 20)]
    assert [c.cost_usd for c in calls] == [pytest.approx((100 * HAIKU_IN + 10 * HAIKU_OUT) / 1e6),
                                           pytest.approx((200 * HAIKU_IN + 20 * HAIKU_OUT) / 1e6)]
    # the half emoji reads as the replacement character, as OpenTelemetry JS's protobuf encoding writes it; the
    # prompt, a plain text here, is one user text (JSON, as every content value in the lake is)
    assert json.loads(calls[1].input_messages) == [
        {"role": "user", "parts": [{"type": "text", "content": "Thanks for the refund!! \ufffd"}]}]


def _post(export: bytes, content_type: str) -> tuple[int, bytes, list[tuple[str, bytes]]]:
    """``export`` POSTed to a real OtlpReceiver → (status, answer, what it forwarded)."""
    fwd = FakeForwarder()
    r = OtlpReceiver(CollectorConfig(), fwd, host="127.0.0.1", port=0)
    r.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", r.port, timeout=10)
        conn.request("POST", "/v1/traces", body=export, headers={"Content-Type": content_type})
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
    finally:
        r.shutdown()
    return resp.status, body, [m for batch in fwd.batches for m in batch]


def test_the_http_receiver_accepts_otlp_json_with_a_cut_emoji():
    status, body, forwarded = _post(JS_OTLP_JSON_WITH_A_CUT_EMOJI, "application/json")
    assert status == 200, body
    assert b"rejected" not in body.lower()
    assert [(c.input_tokens, c.output_tokens) for c in _calls(forwarded)] == [(100, 10), (200, 20)]


def _byte_cut_protobuf() -> bytes:
    """The same two calls as OTLP protobuf from a sender that cuts strings at a byte limit (Go's ``s[:n]``, a C++
    or Rust app): the second prompt ends in the first 3 bytes of the 4-byte emoji, which is not UTF-8."""
    req, _, _ = decode_export(JS_OTLP_JSON_WITH_A_CUT_EMOJI, True)
    body = req.SerializeToString()
    assert body.count("\ufffd".encode()) == 1
    return body.replace("\ufffd".encode(), "\U0001F600".encode()[:3])  # same length: the wire stays whole


def test_a_prompt_cut_at_a_byte_limit_in_otlp_protobuf_costs_no_call():
    """A Kafka message as an OTel Collector forwards it (the Collector does not check UTF-8): protobuf refuses a
    string that is not UTF-8, which would dead-letter both calls; it is read with the cut bytes as U+FFFD."""
    body = _byte_cut_protobuf()
    calls = _calls([("key", body)])
    assert [(c.input_tokens, c.output_tokens) for c in calls] == [(100, 10), (200, 20)]
    assert [c.cost_usd for c in calls] == [pytest.approx((100 * HAIKU_IN + 10 * HAIKU_OUT) / 1e6),
                                           pytest.approx((200 * HAIKU_IN + 20 * HAIKU_OUT) / 1e6)]
    assert json.loads(calls[1].input_messages) == [
        {"role": "user", "parts": [{"type": "text", "content": "Thanks for the refund!! \ufffd"}]}]
    with pytest.raises(OtlpDecodeError, match="not an OTLP protobuf"):  # a corrupt wire is still refused
        decode_message(body[:-5])


def test_the_http_receiver_accepts_otlp_protobuf_with_a_byte_cut_prompt():
    status, body, forwarded = _post(_byte_cut_protobuf(), "application/x-protobuf")
    assert status == 200, body
    assert [(c.input_tokens, c.output_tokens) for c in _calls(forwarded)] == [(100, 10), (200, 20)]
