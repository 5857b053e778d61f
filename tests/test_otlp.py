"""OTLP codec shared by collectors and processors."""

from __future__ import annotations

import json

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from costline.otlp import (
    OtlpDecodeError,
    decode_json,
    decode_protobuf,
    decode_request,
    span_count,
    split_by_trace,
)

T1, T2 = "0af7651916cd43dd8448eb211c80319c", "1bf7651916cd43dd8448eb211c80319d"
S1, S2, S3 = "b7ad6b7169203331", "c7ad6b7169203332", "d7ad6b7169203333"


def json_request(spans: list[dict]) -> bytes:
    return json.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "app"}}]},
                    "scopeSpans": [{"scope": {"name": "test"}, "spans": spans}],
                }
            ]
        }
    ).encode()


def span(trace: str, sid: str, name: str = "chat m", parent: str = "") -> dict:
    return {
        "traceId": trace,
        "spanId": sid,
        "parentSpanId": parent,
        "name": name,
        "kind": 3,
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": 1700000001000000000,
        "attributes": [
            {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "12"}},
            {"key": "costline.cache.hit", "value": {"boolValue": True}},
        ],
        "unknownFutureField": 1,
    }


def test_json_with_hex_ids_and_string_int64() -> None:
    req = decode_json(json_request([span(T1, S1)]))
    s = req.resource_spans[0].scope_spans[0].spans[0]
    assert s.trace_id.hex() == T1 and s.span_id.hex() == S1
    assert s.start_time_unix_nano == 1700000000000000000
    assert s.attributes[0].value.int_value == 12
    assert s.attributes[1].value.bool_value is True


def test_protobuf_round_trip_and_sniffing() -> None:
    req = decode_json(json_request([span(T1, S1)]))
    body = req.SerializeToString()
    assert decode_protobuf(body) == req
    assert decode_request(body) == req  # sniffed as protobuf
    assert decode_request(json_request([span(T1, S1)])) == req  # sniffed as JSON
    assert decode_request(body, "application/x-protobuf; charset=binary") == req


@pytest.mark.parametrize(
    ("body", "content_type", "needle"),
    [
        (b"\xff\xfe garbage", "application/x-protobuf", "not an OTLP protobuf"),
        (b"{not json", "application/json", "not valid JSON"),
        (b"[1, 2]", "application/json", "must be an object"),
        (json_request([span("zz", S1)]), None, "is not hex"),
        (json_request([span(T1, "")]), None, "invalid span_id"),
        (json_request([span("00" * 16, S1)]), None, "invalid trace_id"),
        (b'{"resourceSpans": 3}', None, "must be an array"),
    ],
)
def test_bad_payloads_raise_a_clear_error(body: bytes, content_type: str | None, needle: str) -> None:
    with pytest.raises(OtlpDecodeError, match=needle):
        decode_request(body, content_type)


def test_truncated_protobuf_is_rejected() -> None:
    body = decode_json(json_request([span(T1, S1)])).SerializeToString()
    with pytest.raises(OtlpDecodeError):
        decode_protobuf(body[: len(body) // 2])


def test_split_by_trace_keeps_resource_and_every_span() -> None:
    req = decode_json(json_request([span(T1, S1), span(T2, S2), span(T1, S3, parent=S1)]))
    parts = dict(split_by_trace(req))
    assert set(parts) == {T1, T2}
    assert span_count(parts[T1]) == 2 and span_count(parts[T2]) == 1
    for part in parts.values():
        rs = part.resource_spans[0]
        assert rs.resource.attributes[0].value.string_value == "app"
        assert rs.scope_spans[0].scope.name == "test"
    assert isinstance(parts[T1], ExportTraceServiceRequest)
