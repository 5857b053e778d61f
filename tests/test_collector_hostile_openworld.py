"""Hostile OTLP/HTTP senders seen in the open: a tiny gzip body of millions of empty spans (memory per request,
uncounted by the in-flight budget), over real HTTP to a real receiver."""

from __future__ import annotations

import gzip
import http.client
import json
import threading

import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector_rig import RecordingForwarder as Forwarder
from costline.collectors import OtlpReceiver
from costline.otlp import wire_span_count as count_spans
from costline.config import CollectorConfig, load_config
from costline.errors import ConfigError

PROTO = {"Content-Type": "application/x-protobuf"}
PROTO_GZ = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def receiver():
    started = []

    def start(forwarder=None, **cfg):
        fwd = forwarder or Forwarder()
        r = OtlpReceiver(CollectorConfig(**cfg), fwd, host="127.0.0.1", port=0)
        r.start()
        started.append(r)
        return r, fwd

    yield start
    for r in started:
        r.shutdown()


def post(port, body, headers, timeout=10):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/v1/traces", body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def empty_spans(n: int) -> bytes:
    """The reviewer's body, written by hand on the wire: one resource, one scope, ``n`` empty spans (2 bytes each:
    field 2, wire type 2 → 0x12, length 0)."""
    spans = b"\x12\x00" * n
    scope = b"\x12" + _varint(len(spans)) + spans
    return b"\x0a" + _varint(len(scope)) + scope


def spans_request(n: int, attr_bytes: int = 0) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    for i in range(1, n + 1):
        s = ss.spans.add()
        s.name = f"s{i}"
        s.trace_id = i.to_bytes(16, "big")
        s.span_id = i.to_bytes(8, "big")
        if attr_bytes:
            a = s.attributes.add()
            a.key, a.value.string_value = "blob", "x" * attr_bytes
    return req


def message(body: bytes) -> str:
    return status_pb2.Status.FromString(body).message


# -- the wire-level count ----------------------------------------------------------------------------
@pytest.mark.parametrize("body, cap, expected", [
    (b"", 10, 0),
    (empty_spans(0), 10, 0),
    (empty_spans(7), 10, 7),
    (empty_spans(10), 10, 10),
    (empty_spans(1_000_000), 10, 11),  # stops one past the cap
    (empty_spans(3) + empty_spans(4), 100, 7),  # two resource_spans
    (b"\x0a\x05\x12\x03\x12\x01", 10, 0),  # cut short: the parser's to refuse
])
def test_count_spans_on_the_wire(body, cap, expected) -> None:
    assert count_spans(body, cap) == expected


def test_count_spans_matches_what_protobuf_writes() -> None:
    req = spans_request(5, attr_bytes=300)  # 5 spans, by construction
    ss = req.resource_spans.add()
    ss.resource.attributes.add().key = "k"
    ss.scope_spans.add().scope.name = "none here"
    ss.scope_spans.add().spans.add().name = "sixth"
    assert count_spans(req.SerializeToString(), 1000) == 6


# -- the span cap ----------------------------------------------------------------------------------
def test_gzip_body_of_empty_spans_over_the_default_cap_is_413(receiver) -> None:
    body = gzip.compress(empty_spans(100_001))  # ~200 KB out of ~1 KB; 100,000 is the default cap
    assert len(body) < 4096
    r, fwd = receiver()
    status, _, answer = post(r.port, body, PROTO_GZ)
    assert status == 413 and "max_spans_per_request" in message(answer)
    assert fwd.messages == [] and not fwd.entered.is_set()
    assert r.budget.used == 0


def test_span_cap_is_a_setting_and_a_request_at_it_passes(receiver) -> None:
    r, fwd = receiver(max_spans_per_request=3)
    assert post(r.port, spans_request(3).SerializeToString(), PROTO)[0] == 200
    status, _, answer = post(r.port, gzip.compress(spans_request(4).SerializeToString()), PROTO_GZ)
    assert status == 413 and "max_spans_per_request" in message(answer)
    assert len(fwd.messages) == 3  # one message per trace, of the first request only


def test_json_over_the_span_cap_is_413(receiver) -> None:
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [{} for _ in range(5)]}]}]}
    r, fwd = receiver(max_spans_per_request=4)
    status, _, answer = post(r.port, json.dumps(doc).encode(), JSON)
    assert status == 413 and "max_spans_per_request" in json.loads(answer)["message"]
    assert fwd.messages == []


@pytest.mark.parametrize("value", [0, -1])
def test_span_cap_is_validated(value) -> None:
    with pytest.raises(ConfigError, match="max_spans_per_request"):
        load_config(env={"COSTLINE_COLLECTOR_MAX_SPANS_PER_REQUEST": str(value)})


# -- the in-flight budget counts the request decompressed and parsed -------------------------------------
def test_request_alone_over_the_budget_once_parsed_is_413(receiver) -> None:
    # 10,000 empty spans: 20 KB on the wire, ~100 bytes gzip'd, 10,000 × 384 = 3.84 MB parsed > 1 MiB budget
    r, fwd = receiver(max_body_bytes=1 << 20, max_inflight_bytes=1 << 20)
    status, _, answer = post(r.port, gzip.compress(empty_spans(10_000)), PROTO_GZ)
    assert status == 413 and "max_inflight_bytes" in message(answer)
    assert fwd.messages == [] and r.budget.used == 0


def test_decompressed_bytes_are_held_so_a_second_bomb_waits_with_503(receiver) -> None:
    hold = threading.Event()
    fwd = Forwarder(hold)
    r, _ = receiver(fwd, max_body_bytes=1_000_000, max_inflight_bytes=1_200_000)
    first = threading.Thread(target=post, args=(r.port, spans_request(1, attr_bytes=700_000).SerializeToString(), PROTO))
    first.start()
    assert fwd.entered.wait(5)  # holds ~700 KB
    try:
        # ~1 KB gzip'd, 600 KB decompressed: does not fit beside the first (the old receiver counted ~1 KB and
        # took it; its forwarder then blocked)
        bomb = gzip.compress(spans_request(1, attr_bytes=600_000).SerializeToString())
        assert len(bomb) < 10_000
        status, headers, _ = post(r.port, bomb, PROTO_GZ, timeout=5)
        assert status == 503 and headers["Retry-After"] == "1"
    finally:
        hold.set()
        first.join()
    assert r.budget.used == 0
    assert post(r.port, bomb, PROTO_GZ)[0] == 200
    assert r.budget.used == 0


# -- OTLP/gRPC: the same count before decoding -------------------------------------------------------------
def test_grpc_message_over_the_span_cap_is_resource_exhausted() -> None:
    import grpc
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub

    from costline.collectors import OtlpGrpcReceiver

    fwd = Forwarder()
    receiver = OtlpGrpcReceiver(CollectorConfig(max_spans_per_request=3), fwd, host="127.0.0.1", port=0)
    channel = grpc.insecure_channel(f"127.0.0.1:{receiver.start()}")
    try:
        stub = TraceServiceStub(channel)
        stub.Export(spans_request(3), timeout=10)  # at the cap: taken
        with pytest.raises(grpc.RpcError) as err:
            stub.Export(spans_request(4), timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_spans_per_request" in err.value.details()
        assert len(fwd.messages) == 3 and receiver.budget.used == 0
    finally:
        channel.close()
        receiver.shutdown()
