"""OtlpReceiver status codes and bodies, with a fake forwarder (no Kafka)."""

from __future__ import annotations

import gzip
import http.client
import json
import time

import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from costline.config import CollectorConfig
from costline.otlp import decode_protobuf
from costline.collectors import KafkaUnavailable, OtlpReceiver, ReceiverError

TRACE_A = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
TRACE_B = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")


class FakeForwarder:
    def __init__(self, fail: Exception | None = None, refuse: set[str] = frozenset()):
        self.fail = fail
        self.refuse = refuse
        self.batches: list[list[tuple[str, bytes]]] = []
        self.closed = False

    def forward(self, messages):
        if self.fail:
            raise self.fail
        self.batches.append(list(messages))
        return [(k, "too big") for k, _ in messages if k in self.refuse]

    def close(self):
        self.closed = True


def request(*spans) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "app"
    ss = rs.scope_spans.add()
    for name, trace_id, span_id in spans:
        s = ss.spans.add()
        s.name, s.trace_id, s.span_id = name, trace_id, span_id
    return req


GOOD = request(("a1", TRACE_A, b"\x01" * 8), ("a2", TRACE_A, b"\x02" * 8), ("b1", TRACE_B, b"\x03" * 8))


@pytest.fixture
def serve():
    started = []

    def start(forwarder=None, **cfg):
        fwd = forwarder or FakeForwarder()
        receiver = OtlpReceiver(CollectorConfig(**cfg), fwd, host="127.0.0.1", port=0)
        port = receiver.start()
        started.append(receiver)
        return port, fwd

    yield start
    for r in started:
        r.shutdown()


def post(port, body, headers, path="/v1/traces", method="POST"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


PROTO = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}


def test_protobuf_request_is_forwarded_one_message_per_trace(serve):
    port, fwd = serve()
    status, headers, body = post(port, GOOD.SerializeToString(), PROTO)
    assert status == 200 and headers["Content-Type"] == "application/x-protobuf"
    resp = ExportTraceServiceResponse.FromString(body)
    assert not resp.HasField("partial_success")
    (batch,) = fwd.batches
    assert sorted(k for k, _ in batch) == sorted([TRACE_A.hex(), TRACE_B.hex()])
    for key, value in batch:
        spans = [s for rs in decode_protobuf(value).resource_spans for ss in rs.scope_spans for s in ss.spans]
        assert {s.trace_id.hex() for s in spans} == {key}
    assert {k: len(decode_protobuf(v).resource_spans[0].scope_spans[0].spans) for k, v in batch} == {
        TRACE_A.hex(): 2, TRACE_B.hex(): 1}


def test_gzip_protobuf_is_accepted(serve):
    port, fwd = serve()
    status, _, _ = post(port, gzip.compress(GOOD.SerializeToString()), {**PROTO, "Content-Encoding": "gzip"})
    assert status == 200 and len(fwd.batches[0]) == 2


def json_doc(*spans):
    return {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name",
                                                             "value": {"stringValue": "js-app"}}]},
                               "scopeSpans": [{"scope": {"name": "x"}, "spans": [
                                   {"traceId": t, "spanId": s, "name": n, "kind": 3,
                                    "startTimeUnixNano": "1700000000000000000",
                                    "endTimeUnixNano": "1700000000500000000"} for n, t, s in spans]}]}]}


def _with_link(doc, link):
    """``doc`` with ``link`` on its last span (the span named "bad")."""
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"][-1]["links"] = [link]
    return doc


def test_json_with_hex_ids_is_accepted_and_answered_in_json(serve):
    port, fwd = serve()
    doc = json_doc(("chat m", TRACE_A.hex(), "0102030405060708"))
    status, headers, body = post(port, json.dumps(doc).encode(), JSON)
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {}
    ((key, value),) = fwd.batches[0]
    span = decode_protobuf(value).resource_spans[0].scope_spans[0].spans[0]
    assert key == TRACE_A.hex() and span.span_id.hex() == "0102030405060708" and span.name == "chat m"


@pytest.mark.parametrize(
    "body, headers",
    [
        pytest.param(request(("ok", TRACE_A, b"\x01" * 8), ("bad", bytes(16), b"\x02" * 8)).SerializeToString(),
                     PROTO, id="protobuf-zero-trace-id"),
        pytest.param(request(("ok", TRACE_A, b"\x01" * 8), ("bad", TRACE_A, b"\x02" * 3)).SerializeToString(),
                     PROTO, id="protobuf-short-span-id"),
        pytest.param(json.dumps(json_doc(("ok", TRACE_A.hex(), "0102030405060708"),
                                         ("bad", "not-hex", "0102030405060709"))).encode(),
                     JSON, id="json-non-hex-trace-id"),
        *(pytest.param(json.dumps(_with_link(json_doc(("ok", TRACE_A.hex(), "0102030405060708"),
                                                      ("bad", TRACE_A.hex(), "0102030405060709")), link)).encode(),
                       JSON, id=f"json-link-{name}")
          for name, link in (("short-trace-id", {"traceId": "abc", "spanId": "0102030405060708"}),
                             ("non-hex-trace-id", {"traceId": "zz" * 16, "spanId": "0102030405060708"}),
                             # unpadded base64: not the exact form MessageToJson writes (that one is read)
                             ("unpadded-base64-span-id", {"traceId": TRACE_A.hex(), "spanId": "AQIDBAUGBwg"}))),
    ],
)
def test_invalid_spans_are_dropped_with_partial_success(serve, body, headers):
    port, fwd = serve()
    status, _, raw = post(port, body, headers)
    assert status == 200
    if headers is JSON:
        doc = json.loads(raw)["partialSuccess"]
        rejected, message = int(doc["rejectedSpans"]), doc["errorMessage"]
    else:
        ps = ExportTraceServiceResponse.FromString(raw).partial_success
        rejected, message = ps.rejected_spans, ps.error_message
    assert rejected == 1 and "'bad'" in message
    ((key, value),) = fwd.batches[0]
    assert [s.name for s in decode_protobuf(value).resource_spans[0].scope_spans[0].spans] == ["ok"]


def test_traces_refused_by_kafka_count_as_rejected(serve):
    port, _ = serve(FakeForwarder(refuse={TRACE_A.hex()}))
    status, _, raw = post(port, GOOD.SerializeToString(), PROTO)
    assert status == 200
    assert ExportTraceServiceResponse.FromString(raw).partial_success.rejected_spans == 2


@pytest.mark.parametrize(
    "body, headers, path, method, want",
    [
        pytest.param(b"\xff\xff\xff", PROTO, "/v1/traces", "POST", 400, id="garbage-protobuf"),
        pytest.param(b"{not json", JSON, "/v1/traces", "POST", 400, id="garbage-json"),
        pytest.param(b"\x1f\x8b broken", {**PROTO, "Content-Encoding": "gzip"}, "/v1/traces", "POST", 400,
                     id="broken-gzip"),
        pytest.param(b"x", {"Content-Type": "text/plain"}, "/v1/traces", "POST", 415, id="text-plain"),
        pytest.param(b"x", {**PROTO, "Content-Encoding": "br"}, "/v1/traces", "POST", 415, id="brotli"),
        pytest.param(b"x", PROTO, "/v1/metrics", "POST", 404, id="other-path"),
        pytest.param(None, PROTO, "/v1/traces", "GET", 405, id="get"),
    ],
)
def test_error_status_codes_carry_a_status_body(serve, body, headers, path, method, want):
    port, fwd = serve()
    status, resp_headers, raw = post(port, body, headers, path=path, method=method)
    assert status == want
    if resp_headers["Content-Type"] == "application/json":
        assert json.loads(raw)["message"]
    else:
        assert status_pb2.Status.FromString(raw).message
    assert fwd.batches == []


def test_413_when_content_length_is_over_the_limit(serve):
    port, fwd = serve(max_body_bytes=2048)
    status, _, raw = post(port, b"\x00" * 4096, PROTO)
    assert status == 413 and "2048" in status_pb2.Status.FromString(raw).message
    assert fwd.batches == []


def test_413_when_gzip_expands_over_the_limit(serve):
    port, fwd = serve(max_body_bytes=2048)
    bomb = gzip.compress(b"\x00" * 1_000_000)
    assert len(bomb) < 2048
    status, _, _ = post(port, bomb, {**PROTO, "Content-Encoding": "gzip"})
    assert status == 413 and fwd.batches == []


# -- Transfer-Encoding: chunked (OpenTelemetry JS's OTLP exporters stream their bodies) -----------------
def chunked(body: bytes, sizes=(7, 100, 1 << 20), ext: bytes = b"", trailers: bytes = b"") -> bytes:
    out, i = [], 0
    for n in sizes:
        piece = body[i:i + n]
        if not piece:
            break
        out.append(b"%x%s\r\n%s\r\n" % (len(piece), ext, piece))
        i += n
    assert i >= len(body)
    return b"".join(out) + b"0\r\n" + trailers + b"\r\n"


def raw_exchange(port: int, data: bytes, *, read_all: bool = True) -> bytes:
    """Send raw bytes on one connection; everything the server answers until it closes (or 5 s)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR) if read_all else None
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
        return got


def head(headers: dict[str, str]) -> bytes:
    lines = [b"POST /v1/traces HTTP/1.1", b"Host: x"] + [f"{k}: {v}".encode() for k, v in headers.items()]
    return b"\r\n".join(lines) + b"\r\n\r\n"


BODY = GOOD.SerializeToString()
CHUNKED_PROTO = {**PROTO, "Transfer-Encoding": "chunked"}


@pytest.mark.parametrize("body", [
    pytest.param(chunked(BODY), id="three-chunks"),
    pytest.param(chunked(BODY, sizes=(1,) * len(BODY)), id="one-byte-chunks"),
    pytest.param(chunked(BODY, ext=b";name=value"), id="chunk-extensions"),
    pytest.param(chunked(BODY, trailers=b"X-Checksum: abc\r\n"), id="trailers"),
])
def test_a_chunked_body_is_accepted_and_the_connection_kept(serve, body):
    port, fwd = serve()
    # two requests on one connection: the first read exactly to its end
    answer = raw_exchange(port, head(CHUNKED_PROTO) + body + head({**PROTO, "Content-Length": str(len(BODY))}) + BODY)
    assert answer.count(b"HTTP/1.1 200") == 2, answer[:300]
    assert len(fwd.batches) == 2 and sorted(k for k, _ in fwd.batches[0]) == sorted([TRACE_A.hex(), TRACE_B.hex()])


def test_a_gzipped_chunked_body_is_accepted(serve):
    port, fwd = serve()
    answer = raw_exchange(port, head({**CHUNKED_PROTO, "Content-Encoding": "gzip"}) + chunked(gzip.compress(BODY)))
    assert answer.startswith(b"HTTP/1.1 200") and len(fwd.batches) == 1


@pytest.mark.parametrize("headers, body, status, words", [
    pytest.param(CHUNKED_PROTO, chunked(b"\x00" * 4096, sizes=(1024,) * 4), 413, b"2048", id="over-the-limit"),
    pytest.param(CHUNKED_PROTO, b"zz\r\nab\r\n0\r\n\r\n", 400, b"chunk size", id="bad-size"),
    pytest.param(CHUNKED_PROTO, b"a\r\nabc", 400, b"cut short", id="cut-short"),
    pytest.param(CHUNKED_PROTO, b"3\r\nabcXY\r\n0\r\n\r\n", 400, b"cut short", id="chunk-longer-than-its-size"),
    pytest.param(CHUNKED_PROTO, b"1" * 2000 + b"\r\n", 400, b"longer than", id="endless-size-line"),
    pytest.param({**CHUNKED_PROTO, "Content-Length": "10"}, chunked(BODY), 400, b"both", id="smuggling-te-and-cl"),
    pytest.param({**PROTO, "Transfer-Encoding": "gzip, chunked"}, chunked(BODY), 501, b"gzip", id="other-coding"),
    pytest.param(CHUNKED_PROTO, b"1\r\nx\r\n" * 100_001 + b"0\r\n\r\n", 400, b"more than 100000 chunks",
                 id="too-many-chunks"),
])
def test_a_bad_chunked_body_is_refused_and_the_connection_closed(serve, headers, body, status, words):
    port, fwd = serve(max_body_bytes=2048 if status == 413 else 200_000)
    answer = raw_exchange(port, head(headers) + body + head({**PROTO, "Content-Length": str(len(BODY))}) + BODY)
    assert answer.startswith(b"HTTP/1.1 %d" % status), answer[:200]
    assert words in answer
    assert answer.count(b"HTTP/1.1") == 1  # closed: the next request is never read as part of this one
    assert fwd.batches == []


# -- slow senders: a body that trickles holds a worker and bytes in flight for body_timeout_s at most -----
@pytest.fixture
def receiver():
    started = []

    def start(**cfg):
        r = OtlpReceiver(CollectorConfig(**cfg), FakeForwarder(), host="127.0.0.1", port=0)
        r.start()
        started.append(r)
        return r

    yield start
    for r in started:
        r.shutdown()


def test_bodies_announced_but_not_sent_do_not_take_the_bytes_in_flight(receiver):
    # a chunked body used to hold max_body_bytes from its head on, and a Content-Length one all it announced:
    # two connections that send a head and nothing more held the whole budget, so everyone got 503
    import socket

    r = receiver(max_body_bytes=1 << 20, max_inflight_bytes=2 << 20)
    heads = [head(CHUNKED_PROTO), head({**PROTO, "Content-Length": str(1 << 20)})]
    socks = [socket.create_connection(("127.0.0.1", r.port)) for _ in heads]
    try:
        for sock, h in zip(socks, heads):
            sock.sendall(h)
        time.sleep(0.3)
        status, _, _ = post(r.port, BODY, PROTO)
        assert status == 200 and r.budget.used <= 2 * 64 * 1024
    finally:
        for sock in socks:
            sock.close()


def _rest_of_answer(sock, answer: bytes) -> bytes:
    """``answer`` read on until its head and ``Content-Length`` bytes of body are in (or the socket closes)."""
    sock.settimeout(2)
    try:
        while b"\r\n\r\n" not in answer and (more := sock.recv(65536)):
            answer += more
        head_, _, body = answer.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head_.split(b"\r\n")[1:]
                       if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length and (more := sock.recv(65536)):
            body += more
            answer += more
    except OSError:
        pass
    return answer


@pytest.mark.parametrize("headers, piece", [
    pytest.param(CHUNKED_PROTO, b"1\r\nx\r\n", id="chunked"),
    pytest.param({**PROTO, "Content-Length": str(1 << 20)}, b"x", id="content-length"),
])
def test_a_trickled_body_is_408_after_body_timeout_s_and_its_bytes_given_back(receiver, headers, piece):
    import socket

    r = receiver(read_timeout_s=2, body_timeout_s=0.5)
    with socket.create_connection(("127.0.0.1", r.port), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(head(headers))
        answer = b""
        try:
            while not answer and time.monotonic() - started < 3:
                sock.sendall(piece)  # a piece every 50 ms: each read well within read_timeout_s
                sock.settimeout(0.05)
                try:
                    answer = sock.recv(65536)
                except TimeoutError:
                    pass
        except OSError:  # the receiver closed: what it answered is waiting
            sock.settimeout(1)
            answer = sock.recv(65536)
        took = time.monotonic() - started
        answer = _rest_of_answer(sock, answer)  # its head and body may come in two reads
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert 0.45 <= took < 2
    assert status_pb2.Status.FromString(answer.split(b"\r\n\r\n", 1)[1]).code == 4  # DEADLINE_EXCEEDED
    deadline = time.monotonic() + 2
    while r.budget.used and time.monotonic() < deadline:
        time.sleep(0.01)
    assert r.budget.used == 0
    assert post(r.port, BODY, PROTO)[0] == 200


def test_503_with_retry_after_when_kafka_is_unavailable(serve):
    port, _ = serve(FakeForwarder(fail=KafkaUnavailable("k:9092", "timeout", retry_after=7)))
    status, headers, raw = post(port, GOOD.SerializeToString(), PROTO)
    assert status == 503 and headers["Retry-After"] == "7"
    assert status_pb2.Status.FromString(raw).code == 14  # UNAVAILABLE


def test_empty_request_is_ok(serve):
    port, fwd = serve()
    status, _, _ = post(port, b"", PROTO)
    assert status == 200 and fwd.batches == [[]]


def test_port_in_use_raises_receiver_error_and_shutdown_closes_forwarder(serve):
    port, _ = serve()
    fwd = FakeForwarder()
    other = OtlpReceiver(CollectorConfig(), fwd, host="127.0.0.1", port=port)
    with pytest.raises(ReceiverError, match="--port"):
        other.start()
    other.shutdown()
    assert fwd.closed
