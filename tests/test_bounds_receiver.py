"""Hostile or buggy OTLP senders at the receiver: bounded work, nothing valid lost beside a bad span.

Real OTLP protobuf / JSON bytes, a real ``OtlpReceiver`` over HTTP (a recording forwarder stands in for
Kafka: what it is given is what Kafka would get). Expected values are written by hand.
"""

from __future__ import annotations

import gzip
import http.client
import json
import zlib

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from test_collectors_receiver import FakeForwarder

from costline.collectors import OtlpReceiver
from costline.collectors.receiver import decode_export
from costline.config import CollectorConfig

PROTO = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}


class Forwarder(FakeForwarder):
    """test_collectors_receiver's forwarder, read back as one list of messages and as span names."""

    @property
    def messages(self) -> list[tuple[str, bytes]]:
        return [m for batch in self.batches for m in batch]

    def span_names(self) -> list[str]:
        return sorted(s.name for _, v in self.messages
                      for rs in ExportTraceServiceRequest.FromString(v).resource_spans
                      for ss in rs.scope_spans for s in ss.spans)


@pytest.fixture
def receiver():
    started = []

    def start(**cfg):
        fwd = Forwarder()
        r = OtlpReceiver(CollectorConfig(**cfg), fwd, host="127.0.0.1", port=0)
        port = r.start()
        started.append(r)
        return port, fwd

    yield start
    for r in started:
        r.shutdown()


def post(port, body, headers):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/v1/traces", body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def request(*names: str) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    for i, name in enumerate(names, 1):
        s = ss.spans.add()
        s.name, s.trace_id, s.span_id = name, bytes([i]) * 16, bytes([i]) * 8
    return req


# --- invalid spans are dropped in linear time ------------------------------------------------------
def _tiny_spans(n: int, *, first_half_invalid: bool) -> bytes:
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    for i in range(1, n + 1):
        s = ss.spans.add()
        s.span_id = i.to_bytes(8, "big")
        s.trace_id = b"\x01" * 15 if (first_half_invalid and i <= n // 2) else i.to_bytes(16, "big")
    return req.SerializeToString()


def test_dropping_many_invalid_spans_keeps_the_valid_ones_in_order():
    """Half the spans with a 15-byte trace id: they are cut off at once after a stable sort, not deleted one by one
    (quadratic: 320k spans took 5.2 s against 0.9-1.2 s now, measured in process; no timing is asserted here, the
    machine is shared). What is kept: every valid span, in its order."""
    n = 3_000
    req, rejected, why = decode_export(_tiny_spans(n, first_half_invalid=True), False)
    assert rejected == n // 2
    kept = req.resource_spans[0].scope_spans[0].spans
    assert len(kept) == n // 2
    assert [int.from_bytes(s.span_id, "big") for s in kept] == list(range(n // 2 + 1, n + 1))
    assert "invalid trace_id" in why


def test_invalid_spans_among_valid_ones_over_http(receiver):
    req = request("ok1", "bad", "ok2", "bad2", "ok3")
    ss = req.resource_spans[0].scope_spans[0]
    ss.spans[1].span_id = b"\x00" * 8
    ss.spans[3].trace_id = b"\x07" * 3
    port, fwd = receiver()
    status, body = post(port, req.SerializeToString(), PROTO)
    assert status == 200
    resp = ExportTraceServiceResponse.FromString(body)
    assert resp.partial_success.rejected_spans == 2
    assert fwd.span_names() == ["ok1", "ok2", "ok3"]


# --- gzip: every member read, bombs stopped at the limit ---------------------------------------------
def test_multi_member_gzip_loses_no_span(receiver):
    # RFC 1952: a gzip file is one or more members (`cat a.gz b.gz`); Go's gzip reader (the Collector's)
    # reads them all. Two halves of one serialized request (protobuf concatenation is a merge).
    a, b = request("first"), request("x", "second")
    del b.resource_spans[0].scope_spans[0].spans[0]
    body = gzip.compress(a.SerializeToString()) + gzip.compress(b.SerializeToString())
    port, fwd = receiver()
    status, resp = post(port, body, {**PROTO, "Content-Encoding": "gzip"})
    assert status == 200
    assert ExportTraceServiceResponse.FromString(resp).partial_success.rejected_spans == 0
    assert fwd.span_names() == ["first", "second"]


def test_a_body_of_many_gzip_members_is_refused_at_once(receiver):
    """20-byte empty members to 4 MiB cost seconds of a core each (the rest copied per member): past 64, a 400."""
    from costline.collectors.receiver import MAX_GZIP_MEMBERS

    port, fwd = receiver()
    ok = b"".join([gzip.compress(b"", mtime=0)] * (MAX_GZIP_MEMBERS - 1) + [gzip.compress(request("a").SerializeToString())])
    status, _ = post(port, ok, {**PROTO, "Content-Encoding": "gzip"})
    assert (status, fwd.span_names()) == (200, ["a"])
    status, body = post(port, gzip.compress(b"", mtime=0) * 200_000, {**PROTO, "Content-Encoding": "gzip"})
    assert status == 400 and b"gzip members" in body  # refused after 65 members, not read to the 200,000th


def test_bytes_after_the_last_gzip_member_are_refused(receiver):
    port, fwd = receiver()
    body = gzip.compress(request("a").SerializeToString()) + b"not gzip at all"
    status, _ = post(port, body, {**PROTO, "Content-Encoding": "gzip"})
    assert status == 400
    assert fwd.messages == []


def _bomb(nbytes: int) -> bytes:
    """gzip of ``nbytes`` zeros, made in pieces (never holds them)."""
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = b"\x00" * (1 << 20)
    out = [c.compress(chunk) for _ in range(nbytes >> 20)]
    out.append(c.flush())
    return b"".join(out)


def test_gzip_bomb_in_many_members_stays_under_the_limit(receiver):
    # 1 GB of zeros in ~1 MB (each member 64 MiB → ~64 kB), over a 1 MiB decompressed limit: 413,
    # without inflating past the limit.
    member = _bomb(64 << 20)
    body = member * 16
    assert len(body) < 2 << 20
    port, fwd = receiver(max_body_bytes=1 << 20, max_inflight_bytes=4 << 20)
    status, _ = post(port, body, {**PROTO, "Content-Encoding": "gzip"})
    assert status == 413
    # the limit holds summed over members too: 3 members of 400 kB each, 1.2 MB in all
    small = gzip.compress(b"\x00" * 400_000)
    status, _ = post(port, small * 3, {**PROTO, "Content-Encoding": "gzip"})
    assert status == 413
    assert fwd.messages == []


@pytest.mark.parametrize("encoding", ["br", "compress", "gzip, gzip"])  # deflate and zstd: test_receiver_openworld.py
def test_other_content_encodings_are_refused(receiver, encoding):
    port, fwd = receiver()
    status, _ = post(port, zlib.compress(request("a").SerializeToString()), {**PROTO, "Content-Encoding": encoding})
    assert status == 415
    assert fwd.messages == []


# --- OTLP/JSON: one span's bad value refuses that span, not the export -------------------------------
def _json_doc(bad: dict) -> dict:
    span = {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331", "name": "bad",
            "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000001000000000"}
    span.update(bad)
    good = {"traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": "00f067aa0ba902b7", "name": "good",
            "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000001000000000",
            "attributes": [{"key": "n", "value": {"intValue": "42"}}]}
    return {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "s"}}]},
                               "scopeSpans": [{"scope": {"name": "js"}, "spans": [span, good]}]}]}


@pytest.mark.parametrize("bad", [
    {"startTimeUnixNano": "-5"},
    {"startTimeUnixNano": 18446744073709551617},        # 2^64 + 1
    {"endTimeUnixNano": "18446744073709551616"},
    {"startTimeUnixNano": 1.5},
    # OpenTelemetry JS writes any integral JS number as intValue: 1e20 does not fit int64
    {"attributes": [{"key": "bytes", "value": {"intValue": 100000000000000000000}}]},
    {"attributes": [{"key": "n", "value": {"intValue": "9223372036854775808"}}]},
    {"events": [{"name": "e", "timeUnixNano": "-1"}]},
    {"droppedAttributesCount": -1},
], ids=["start-negative", "start-2^64+1", "end-2^64", "start-fraction", "int-1e20", "int-2^63", "event-negative",
        "dropped-negative"])
def test_one_span_with_an_unrepresentable_value_costs_only_that_span(receiver, bad):
    port, fwd = receiver()
    status, body = post(port, json.dumps(_json_doc(bad)).encode(), JSON)
    assert status == 200
    resp = json.loads(body)
    assert resp["partialSuccess"]["rejectedSpans"] == "1"
    assert "'bad'" in resp["partialSuccess"]["errorMessage"]
    assert fwd.span_names() == ["good"]


@pytest.mark.parametrize("value, expected", [
    ({"startTimeUnixNano": 1700000000000000000}, 1700000000000000000),    # number instead of string
    ({"startTimeUnixNano": "1e18"}, 10**18),                              # proto3 JSON: exponents allowed
    ({"startTimeUnixNano": 1.7e18}, 1700000000000000000),                 # an integral float
])
def test_json_time_spellings_the_proto3_mapping_accepts(receiver, value, expected):
    port, fwd = receiver()
    status, body = post(port, json.dumps(_json_doc(value)).encode(), JSON)
    assert status == 200
    assert "partialSuccess" not in json.loads(body) or not json.loads(body)["partialSuccess"].get("rejectedSpans")
    spans = {s.name: s for _, v in fwd.messages for rs in ExportTraceServiceRequest.FromString(v).resource_spans
             for ss in rs.scope_spans for s in ss.spans}
    assert spans["bad"].start_time_unix_nano == expected


def test_json_value_spellings(receiver):
    port, fwd = receiver()
    doc = _json_doc({"kind": "SPAN_KIND_CLIENT", "unknownField": {"x": [1]},
                     "attributes": [{"key": "i", "value": {"intValue": 7}},
                                    {"key": "nan", "value": {"doubleValue": "NaN"}},
                                    {"key": "inf", "value": {"doubleValue": "-Infinity"}}]})
    status, body = post(port, json.dumps(doc).encode(), JSON)
    assert status == 200
    spans = {s.name: s for _, v in fwd.messages for rs in ExportTraceServiceRequest.FromString(v).resource_spans
             for ss in rs.scope_spans for s in ss.spans}
    bad = spans["bad"]
    assert bad.kind == 3
    attrs = {kv.key: kv.value for kv in bad.attributes}
    assert attrs["i"].int_value == 7
    assert attrs["nan"].double_value != attrs["nan"].double_value
    assert attrs["inf"].double_value == float("-inf")


@pytest.mark.parametrize("body", [b"[]", b'"resourceSpans"', b"null", b'{"resourceSpans": 5}'])
def test_json_that_is_no_request_object_is_400(receiver, body):
    port, fwd = receiver()
    status, _ = post(port, body, JSON)
    assert status == 400
    assert fwd.messages == []
