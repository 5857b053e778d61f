"""The OTLP/HTTP receiver in front of production: bearer tokens, TLS, protocol limits, bounded
workers and bytes, and a per-trace split that never multiplies a request's bytes on Kafka."""

from __future__ import annotations

import gzip
import http.client
import os
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector_rig import RecordingForwarder
from costline.collectors import OtlpReceiver
from costline.collectors.forwarder import KafkaForwarder
from costline.config import CollectorConfig, load_config
from costline.errors import ConfigError
from costline.netsec import InsecureBindError

PROTO = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}


def make_request(traces: int, spans_per_trace: int = 1, resource_bytes: int = 20, span_bytes: int = 0):
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "app"
    big = rs.resource.attributes.add()
    big.key, big.value.string_value = "padding", "r" * resource_bytes
    ss = rs.scope_spans.add()
    ss.scope.name = "test"
    n = 0
    for t in range(traces):
        for _ in range(spans_per_trace):
            n += 1
            s = ss.spans.add()
            s.name = f"s{n}"
            s.trace_id = (t + 1).to_bytes(16, "big")
            s.span_id = n.to_bytes(8, "big")
            if span_bytes:
                a = s.attributes.add()
                a.key, a.value.string_value = "blob", "s" * span_bytes
    return req


def span_ids(messages) -> list[bytes]:
    out = []
    for _, value in messages:
        r = ExportTraceServiceRequest.FromString(value)
        out += [s.span_id for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]
    return out


@pytest.fixture
def receiver():
    started = []

    def start(forwarder=None, host="127.0.0.1", **cfg):
        fwd = forwarder or RecordingForwarder()
        r = OtlpReceiver(CollectorConfig(**cfg), fwd, host=host, port=0)
        r.start()
        started.append(r)
        return r, fwd

    yield start
    for r in started:
        r.shutdown()


def post(port, body, headers, *, context=None, host="127.0.0.1"):
    if context is not None:
        conn = http.client.HTTPSConnection(host, port, timeout=10, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("POST", "/v1/traces", body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def raw_exchange(port: int, head: bytes, body: bytes = b"", *, wait_s: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as s:
        s.sendall(head + body)
        chunks = []
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
        except TimeoutError:
            pass
        return b"".join(chunks)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


# -- authentication and TLS ----------------------------------------------------------------------
def test_bearer_token_is_required_when_configured(receiver, tmp_path) -> None:
    body = make_request(1).SerializeToString()
    r, fwd = receiver(bearer_token="s3cret-token-0123456789")
    status, headers, _ = post(r.port, body, PROTO)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert post(r.port, body, {**PROTO, "Authorization": "Bearer wrong"})[0] == 401
    assert post(r.port, body, {**PROTO, "Authorization": "Basic s3cret-token-0123456789"})[0] == 401
    assert post(r.port, body, {**PROTO, "Authorization": "Bearer s3cret-token-0123456789"})[0] == 200
    assert len(fwd.messages) == 1
    tokens = tmp_path / "tokens"
    tokens.write_text("# one a line\nfirst-token\n")
    r2, _ = receiver(bearer_token_file=tokens)
    assert post(r2.port, body, {**PROTO, "Authorization": "Bearer first-token"})[0] == 200
    tokens.write_text("second-token\n")  # rotated without a restart
    os.utime(tokens, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))  # a new mtime even on coarse clocks
    assert post(r2.port, body, {**PROTO, "Authorization": "Bearer first-token"})[0] == 401
    assert post(r2.port, body, {**PROTO, "Authorization": "Bearer second-token"})[0] == 200


def test_non_loopback_without_a_token_refuses_to_start() -> None:
    r = OtlpReceiver(CollectorConfig(), RecordingForwarder(), host="0.0.0.0", port=0)
    with pytest.raises(InsecureBindError, match="bearer_token"):
        r.bind()
    ok = OtlpReceiver(CollectorConfig(bearer_token="t" * 20), RecordingForwarder(), host="0.0.0.0", port=0)
    ok.bind()
    ok.shutdown()


def self_signed(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def test_tls_serves_https_with_the_configured_certificate(receiver, tmp_path) -> None:
    cert, key = self_signed(tmp_path)
    r, fwd = receiver(tls_cert_file=cert, tls_key_file=key)
    assert r.endpoint.startswith("https://")
    ctx = ssl.create_default_context(cafile=str(cert))
    assert post(r.port, make_request(1).SerializeToString(), PROTO, context=ctx)[0] == 200
    assert len(fwd.messages) == 1
    with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
        post(r.port, make_request(1).SerializeToString(), PROTO)  # plain HTTP to the TLS port
    with pytest.raises(ConfigError):
        load_config(env={"COSTLINE_COLLECTOR_TLS_CERT_FILE": str(cert)})


# -- protocol -------------------------------------------------------------------------------------
@pytest.mark.parametrize("lengths", [["-1"], ["abc"], ["+5"], ["5", "6"], ["0x10"], ["5, 6"]])
def test_bad_content_length_is_400(receiver, lengths) -> None:
    r, _ = receiver()
    head = b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
    head += b"".join(f"Content-Length: {v}\r\n".encode() for v in lengths) + b"\r\n"
    assert status_of(raw_exchange(r.port, head, b"hello")) == 400


def test_a_short_body_is_400_after_the_read_timeout(receiver) -> None:
    r, _ = receiver(read_timeout_s=0.3)
    head = b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: 100\r\n\r\n"
    answer = raw_exchange(r.port, head, b"0123456789")
    assert status_of(answer) == 400 and b"shorter than Content-Length" in answer


def test_oversized_headers_are_431(receiver) -> None:
    r, _ = receiver(max_header_bytes=1024)
    status, _, _ = post(r.port, b"", {**PROTO, "X-Big": "x" * 4000})
    assert status == 431


@pytest.mark.parametrize("body", [
    b'{"resourceSpans": 5}',
    b'{"resourceSpans": [{"scopeSpans": 5}]}',
    b'{"resourceSpans": [{"scopeSpans": [{"spans": 5}]}]}',
    b'{"resourceSpans": [{"resource": 5}]}',
    b'[1, 2]',
    b'"text"',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"resourceSpans": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
])
def test_badly_typed_or_deep_json_is_400(receiver, body) -> None:
    r, fwd = receiver()
    assert post(r.port, body, JSON)[0] == 400
    assert post(r.port, gzip.compress(body), {**JSON, "Content-Encoding": "gzip"})[0] == 400
    assert fwd.messages == []


# -- resources ------------------------------------------------------------------------------------
def test_the_split_does_not_multiply_the_resource_into_every_message(receiver) -> None:
    # a 200 kB resource shared by 4,000 one-span traces: ~1 MB on the wire, 800 MB split per trace
    req = make_request(4000, resource_bytes=200_000)
    body = req.SerializeToString()
    r, fwd = receiver(max_message_bytes=1_000_000)
    status, _, _ = post(r.port, body, PROTO)
    assert status == 200
    on_kafka = sum(len(k) + len(v) for k, v in fwd.messages)
    assert on_kafka <= 3 * len(body)
    assert max(len(v) for _, v in fwd.messages) <= 1_000_000
    assert sorted(span_ids(fwd.messages)) == sorted(s.span_id for s in req.resource_spans[0].scope_spans[0].spans)


def test_one_trace_bigger_than_a_kafka_message_is_split_not_refused(receiver) -> None:
    req = make_request(1, spans_per_trace=60, span_bytes=50_000)  # one 3 MB trace
    r, fwd = receiver(max_message_bytes=1_000_000)
    assert post(r.port, req.SerializeToString(), PROTO)[0] == 200
    assert len(fwd.messages) >= 3 and max(len(v) for _, v in fwd.messages) <= 1_000_000
    assert {k for k, _ in fwd.messages} == {(1).to_bytes(16, "big").hex()}
    assert len(span_ids(fwd.messages)) == 60


def test_small_traces_keep_one_message_per_trace(receiver) -> None:
    req = make_request(5, spans_per_trace=3)
    r, fwd = receiver()
    assert post(r.port, req.SerializeToString(), PROTO)[0] == 200
    assert sorted(k for k, _ in fwd.messages) == [(t + 1).to_bytes(16, "big").hex() for t in range(5)]


def test_workers_are_bounded_and_the_overflow_gets_503_with_retry_after(receiver) -> None:
    """Requests whose head is in hold a worker (here: bodies still owed) or a queue place; past both, 503. Idle
    connections hold neither (they wait for their head in the gatherer)."""
    r, _ = receiver(max_workers=1, max_pending=1, idle_timeout_s=5)
    head = b"POST /v1/traces HTTP/1.1\r\nContent-Type: application/x-protobuf\r\nContent-Length: 100\r\n\r\n"
    idle = [socket.create_connection(("127.0.0.1", r.port)) for _ in range(5)]
    held = [socket.create_connection(("127.0.0.1", r.port)) for _ in range(2)]  # a worker and the queue
    try:
        for s in held:
            s.sendall(head)
        time.sleep(0.2)
        answer = raw_exchange(r.port, head, b"x" * 100, wait_s=3)
        assert status_of(answer) == 503 and b"Retry-After: 1" in answer  # [collector] retry_after_s
    finally:
        for s in held + idle:
            s.close()
    assert threading.active_count() < 100


def test_bytes_in_flight_are_bounded_with_503(receiver) -> None:
    hold = threading.Event()
    fwd = RecordingForwarder(hold)
    body = make_request(1, span_bytes=700_000).SerializeToString()
    r, _ = receiver(fwd, max_body_bytes=1_000_000, max_inflight_bytes=1_200_000)
    first = threading.Thread(target=post, args=(r.port, body, PROTO))
    first.start()
    assert fwd.entered.wait(5)
    try:
        status, headers, _ = post(r.port, body, PROTO)
        assert status == 503 and headers["Retry-After"] == "1"  # [collector] retry_after_s
    finally:
        hold.set()
        first.join()
    assert post(r.port, body, PROTO)[0] == 200


RSS_SERVER = r"""
import sys
from costline.collectors import OtlpReceiver
from costline.config import CollectorConfig

class Fwd:
    def forward(self, m): return []
    def close(self): pass

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

r = OtlpReceiver(CollectorConfig(), Fwd(), host="127.0.0.1", port=0)
print(r.start(), hwm(), flush=True)
sys.stdin.readline()
print(hwm(), flush=True)
"""


def test_a_200_mb_body_is_refused_at_the_limit_with_bounded_memory() -> None:
    proc = subprocess.Popen([sys.executable, "-c", RSS_SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        port, before = map(int, proc.stdout.readline().split())
        size = 200 * 1024 * 1024
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"POST /v1/traces HTTP/1.1\r\nContent-Type: application/x-protobuf\r\n"
                      + f"Content-Length: {size}\r\n\r\n".encode())
            chunk = b"\0" * (1 << 20)
            sent = 0
            try:
                while sent < size:
                    s.sendall(chunk)
                    sent += len(chunk)
            except OSError:
                pass  # the receiver answered and closed
            answer = s.recv(65536)
        assert status_of(answer) == 413
        assert sent < size  # refused before the body was read
        proc.stdin.write("\n")
        proc.stdin.flush()
        after = int(proc.stdout.readline())
        assert after - before < 32 * 1024 * 1024
    finally:
        proc.kill()
        proc.wait()


# -- on a real broker ------------------------------------------------------------------------------
@pytest.mark.kafka
def test_amplification_request_is_bounded_on_kafka(kafka_topics) -> None:
    from kafka import KafkaConsumer

    req = make_request(2000, resource_bytes=200_000)
    body = req.SerializeToString()
    fwd = KafkaForwarder(kafka_topics, produce_timeout_s=20)
    r = OtlpReceiver(CollectorConfig(), fwd, host="127.0.0.1", port=0)
    r.start()
    try:
        status, _, answer = post(r.port, body, PROTO)
    finally:
        r.shutdown()
    assert status == 200
    consumer = KafkaConsumer(kafka_topics.topic, bootstrap_servers=kafka_topics.bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=3000)
    got = [m for m in consumer]
    consumer.close()
    on_kafka = sum(len(m.value) + len(m.key or b"") for m in got)
    assert on_kafka <= 3 * len(body)  # per-trace copies would be 2,000 × 200 kB = 400 MB
    assert len(span_ids([(m.key, m.value) for m in got])) == 2000
