"""OtlpGrpcReceiver: OTLP/gRPC status codes with a fake forwarder (a raw TraceServiceStub), the real
OpenTelemetry Python gRPC exporter through Kafka into the lake, TLS, config and ``costline collect``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from conftest import free_port
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import (
    TraceServiceStub,
    add_TraceServiceServicer_to_server,
)
from test_collectors_receiver import GOOD, TRACE_A, TRACE_B, FakeForwarder, request
from test_security_collector import RecordingForwarder, self_signed

from costline.collectors import KafkaForwarder, KafkaUnavailable, OtlpGrpcReceiver, ReceiverError
from costline.collectors.receiver_grpc import RETRY_INFO_KEY, STATUS_DETAILS_KEY, TRACE_SERVICE
from costline.config import Config, CollectorConfig, load_config
from costline.errors import ConfigError
from costline.netsec import InsecureBindError
from costline.otlp import decode_protobuf

Code = grpc.StatusCode
TOKEN = "grpc-test-token-0123456789"


@pytest.fixture
def serve():
    started = []

    def start(forwarder=None, **cfg):
        fwd = forwarder if forwarder is not None else FakeForwarder()
        receiver = OtlpGrpcReceiver(CollectorConfig(**cfg), fwd, host="127.0.0.1", port=0)
        channel = grpc.insecure_channel(f"127.0.0.1:{receiver.start()}")
        started.append((receiver, channel))
        stub = TraceServiceStub(channel)
        stub.channel = channel  # for raw calls
        return stub, fwd

    yield start
    for receiver, channel in started:
        channel.close()
        receiver.shutdown()


def export(stub_or_call, req, metadata=(), compression=None):
    """(code, response or None, details, trailing metadata as a dict)."""
    call = stub_or_call.Export if isinstance(stub_or_call, TraceServiceStub) else stub_or_call
    try:
        resp, rpc = call.with_call(req, metadata=metadata, compression=compression, timeout=10)
        return Code.OK, resp, "", dict(rpc.trailing_metadata() or ())
    except grpc.RpcError as exc:
        return exc.code(), None, exc.details(), dict(exc.trailing_metadata() or ())


def retry_delay(code: grpc.StatusCode, details: str, trailing: dict) -> int | None:
    """The RetryInfo's seconds (both trailers must agree, the Status with the RPC's code), else None."""
    if STATUS_DETAILS_KEY not in trailing:
        assert RETRY_INFO_KEY not in trailing
        return None
    status = status_pb2.Status.FromString(trailing[STATUS_DETAILS_KEY])
    assert (status.code, status.message) == (code.value[0], details)
    (detail,) = status.details
    info = error_details_pb2.RetryInfo()
    assert detail.Unpack(info)
    assert error_details_pb2.RetryInfo.FromString(trailing[RETRY_INFO_KEY]) == info
    return info.retry_delay.seconds


def big_request(nbytes: int = 8000) -> ExportTraceServiceRequest:
    req = request(("big", TRACE_A, b"\x01" * 8))
    attr = req.resource_spans[0].scope_spans[0].spans[0].attributes.add()
    attr.key, attr.value.string_value = "blob", "x" * nbytes  # gzips to a few dozen bytes
    return req


BEARER = (("authorization", f"Bearer {TOKEN}"),)


@pytest.mark.parametrize(
    "cfg, forwarder, metadata, req, compression, want, retry",
    [
        pytest.param({}, {}, (), GOOD, None, Code.OK, None, id="ok"),
        pytest.param({}, {}, (), GOOD, grpc.Compression.Gzip, Code.OK, None, id="gzip"),
        pytest.param({}, {"fail": KafkaUnavailable("k:9092", "timeout", retry_after=7)}, (), GOOD, None,
                     Code.UNAVAILABLE, 7, id="kafka-unavailable"),
        pytest.param({}, {"fail": RuntimeError("boom")}, (), GOOD, None, Code.INTERNAL, None, id="unexpected-error"),
        pytest.param({"bearer_token": TOKEN}, {}, (), GOOD, None, Code.UNAUTHENTICATED, None, id="no-token"),
        pytest.param({"bearer_token": TOKEN}, {}, (("authorization", "Bearer wrong-token"),), GOOD, None,
                     Code.UNAUTHENTICATED, None, id="wrong-token"),
        pytest.param({"bearer_token": TOKEN}, {}, (("authorization", TOKEN),), GOOD, None,
                     Code.UNAUTHENTICATED, None, id="token-without-bearer"),
        pytest.param({"bearer_token": TOKEN}, {}, BEARER + BEARER, GOOD, None, Code.UNAUTHENTICATED, None,
                     id="token-twice"),
        pytest.param({"bearer_token": TOKEN}, {}, BEARER, GOOD, grpc.Compression.Gzip, Code.OK, None,
                     id="right-token"),
        pytest.param({"max_body_bytes": 2048}, {}, (), big_request(), None, Code.RESOURCE_EXHAUSTED, None,
                     id="over-max-body"),
        pytest.param({"max_body_bytes": 2048}, {}, (), big_request(), grpc.Compression.Gzip,
                     Code.RESOURCE_EXHAUSTED, None, id="gzip-over-max-body-once-decompressed"),
        pytest.param({"max_header_bytes": 1024}, {}, (("x-padding", "x" * 4000),), GOOD, None,
                     Code.RESOURCE_EXHAUSTED, None, id="metadata-over-max-header-bytes"),
    ],
)
def test_status_codes(serve, cfg, forwarder, metadata, req, compression, want, retry):
    stub, fwd = serve(FakeForwarder(**forwarder), **cfg)
    code, resp, details, trailing = export(stub, req, metadata, compression)
    assert code == want, details
    assert retry_delay(code, details, trailing) == retry
    if want is not Code.OK:
        assert details and fwd.batches == []
        return
    assert not resp.HasField("partial_success")
    (batch,) = fwd.batches  # one Kafka message per trace, keyed by its id
    assert sorted(k for k, _ in batch) == sorted([TRACE_A.hex(), TRACE_B.hex()])
    for key, value in batch:
        spans = [s for rs in decode_protobuf(value).resource_spans for ss in rs.scope_spans for s in ss.spans]
        assert {s.trace_id.hex() for s in spans} == {key}


@pytest.mark.parametrize(
    "req, forwarder, rejected, words",
    [
        pytest.param(request(("ok", TRACE_A, b"\x01" * 8), ("bad", bytes(16), b"\x02" * 8)), {}, 1, "'bad'",
                     id="zero-trace-id"),
        pytest.param(request(("ok", TRACE_A, b"\x01" * 8), ("bad", TRACE_A, b"\x02" * 3)), {}, 1, "'bad'",
                     id="short-span-id"),
        pytest.param(GOOD, {"refuse": {TRACE_A.hex()}}, 2, "refused by Kafka", id="trace-refused-by-kafka"),
    ],
)
def test_partial_success(serve, req, forwarder, rejected, words):
    stub, fwd = serve(FakeForwarder(**forwarder))
    code, resp, details, _ = export(stub, req)
    assert code is Code.OK, details
    assert resp.partial_success.rejected_spans == rejected and words in resp.partial_success.error_message
    (batch,) = fwd.batches
    assert all(s.name != "bad" for _, v in batch for rs in decode_protobuf(v).resource_spans
               for ss in rs.scope_spans for s in ss.spans)


def test_undecodable_message_is_invalid_argument(serve):
    stub, fwd = serve()
    raw = stub.channel.unary_unary(f"/{TRACE_SERVICE}/Export")  # bytes in, bytes out
    code, _, details, trailing = export(raw, b"\xff\xff\xff")
    assert code is Code.INVALID_ARGUMENT and "ExportTraceServiceRequest" in details
    assert retry_delay(code, details, trailing) is None and fwd.batches == []


def test_resource_exhausted_with_retry_info_past_max_inflight_bytes(serve):
    release = threading.Event()
    fwd = RecordingForwarder(hold=release)
    stub, _ = serve(fwd, max_inflight_bytes=1, retry_after_s=3)
    first = stub.Export.future(GOOD, timeout=10)  # held in the forwarder: its bytes stay in flight
    try:
        assert fwd.entered.wait(10)
        code, _, details, trailing = export(stub, GOOD)
        assert code is Code.RESOURCE_EXHAUSTED and "in flight" in details
        assert retry_delay(code, details, trailing) == 3
    finally:
        release.set()
    assert not first.result().HasField("partial_success")
    assert export(stub, GOOD)[0] is Code.OK  # the bytes were given back
    assert len(fwd.messages) == 4


def test_past_max_workers_and_max_pending_refused_with_retry_info_and_the_waiting_export_lands():
    # The Go and Java exporters and the Collector drop a RESOURCE_EXHAUSTED batch that carries no RetryInfo:
    # grpc's own concurrency limit answers so, so the receiver refuses (with RetryInfo) before it.
    release = threading.Event()
    fwd = RecordingForwarder(hold=release)
    receiver = OtlpGrpcReceiver(CollectorConfig(max_workers=1, max_pending=1, retry_after_s=4), fwd,
                                host="127.0.0.1", port=0)
    port = receiver.start()
    # a connection has at most max_workers calls open (its client queues more): one exporter each
    channels = [own_channel(port) for _ in range(3)]
    stubs = [TraceServiceStub(c) for c in channels]
    try:
        working = stubs[0].Export.future(GOOD, timeout=10)  # held in the forwarder
        assert fwd.entered.wait(10)
        waiting = stubs[1].Export.future(GOOD, timeout=10)  # admitted: waits for the one worker
        wait_until(lambda: receiver._admitted == 2)
        code, _, details, trailing = export(stubs[2], GOOD)
        assert code is Code.RESOURCE_EXHAUSTED and "at once" in details
        assert retry_delay(code, details, trailing) == 4
        assert not waiting.done()
        release.set()
        assert not working.result().HasField("partial_success")
        assert not waiting.result().HasField("partial_success")
        assert export(stubs[2], GOOD)[0] is Code.OK  # the slots were given back
        assert len(fwd.messages) == 3 * 2  # GOOD holds two traces: one message each
    finally:
        release.set()
        for channel in channels:
            channel.close()
        receiver.shutdown()


def own_channel(port: int) -> grpc.Channel:
    """A channel on a connection of its own, as another exporter process has (a process's channels to
    one target otherwise share a connection)."""
    return grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])


def wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def stalled_exports(channel: grpc.Channel, n: int, stop: threading.Event) -> list[grpc.Future]:
    """``n`` Export calls that send their headers and then no message until ``stop`` is set."""
    def nothing():
        stop.wait()
        return
        yield  # a generator

    call = channel.stream_unary(f"/{TRACE_SERVICE}/Export", request_serializer=bytes, response_deserializer=bytes)
    return [call.future(nothing()) for _ in range(n)]


def test_calls_stalled_on_one_connection_do_not_lock_other_exporters_out():
    # grpc holds a thread for every call waiting for its message: a connection's calls past its limit
    # (max_workers) wait on the client, so a client stalling 20 calls holds 2 here, not every thread
    receiver = OtlpGrpcReceiver(CollectorConfig(max_workers=2, max_pending=2), FakeForwarder(), host="127.0.0.1",
                                port=0)
    port = receiver.start()
    stop = threading.Event()
    stalling, other = own_channel(port), own_channel(port)
    try:
        stalled = stalled_exports(stalling, 20, stop)
        wait_until(lambda: receiver._admitted == 2)
        time.sleep(0.3)  # time for more to arrive, were they let through
        assert receiver._admitted == 2
        code, _, details, _ = export(TraceServiceStub(other), GOOD)
        assert code is Code.OK, details
        assert not any(f.done() for f in stalled)
    finally:
        stop.set()
        stalling.close()
        other.close()
        receiver.shutdown()


def test_a_call_whose_message_does_not_come_is_cancelled_after_body_timeout_s():
    # admitted before its message arrives (so the calls past max_workers + max_pending are refused with
    # RetryInfo, not by grpc without it), and cancelled once body_timeout_s has passed without it
    receiver = OtlpGrpcReceiver(CollectorConfig(max_workers=1, max_pending=1, retry_after_s=4, body_timeout_s=1.0),
                                FakeForwarder(), host="127.0.0.1", port=0)
    port = receiver.start()
    stop = threading.Event()
    channels = [own_channel(port) for _ in range(3)]
    try:
        started = time.monotonic()
        stalled = [f for c in channels[:2] for f in stalled_exports(c, 1, stop)]
        wait_until(lambda: receiver._admitted == 2)
        code, _, details, trailing = export(TraceServiceStub(channels[2]), GOOD)
        assert code is Code.RESOURCE_EXHAUSTED and "at once" in details
        assert retry_delay(code, details, trailing) == 4
        for future in stalled:
            assert future.exception(timeout=5).code() is Code.CANCELLED
        assert 0.9 <= time.monotonic() - started < 4
        wait_until(lambda: receiver._admitted == 0)
        assert export(TraceServiceStub(channels[2]), GOOD)[0] is Code.OK
    finally:
        stop.set()
        for channel in channels:
            channel.close()
        receiver.shutdown()


def test_export_takes_decoded_requests_too_when_registered_as_a_servicer():
    """``add_TraceServiceServicer_to_server`` hands Export a decoded request: same checks, same answer."""
    fwd = FakeForwarder()
    receiver = OtlpGrpcReceiver(CollectorConfig(), fwd, port=0)  # not bound: the server below serves it
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            req = request(("ok", TRACE_A, b"\x01" * 8), ("bad", bytes(16), b"\x02" * 8))
            code, resp, _, _ = export(TraceServiceStub(channel), req)
    finally:
        server.stop(None)
    assert code is Code.OK and resp.partial_success.rejected_spans == 1
    assert [k for k, _ in fwd.batches[0]] == [TRACE_A.hex()]


# -- lifecycle, binds, TLS --------------------------------------------------------------------------
def test_port_in_use_raises_receiver_error_and_shutdown_closes_forwarder():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        fwd = FakeForwarder()
        other = OtlpGrpcReceiver(CollectorConfig(), fwd, host="127.0.0.1", port=sock.getsockname()[1])
        with pytest.raises(ReceiverError, match="--grpc-port"):
            other.start()
    other.shutdown()
    assert fwd.closed


def test_no_grpc_port_is_a_receiver_error():
    with pytest.raises(ReceiverError, match="grpc_port"):
        OtlpGrpcReceiver(CollectorConfig(), FakeForwarder())


def test_open_bind_without_token_refuses_to_start_unless_insecure():
    with pytest.raises(InsecureBindError, match="bearer_token"):
        OtlpGrpcReceiver(CollectorConfig(host="0.0.0.0"), FakeForwarder(), port=0).bind()
    for cfg in ({"allow_insecure": True}, {"bearer_token": TOKEN}):
        receiver = OtlpGrpcReceiver(CollectorConfig(host="0.0.0.0", **cfg), FakeForwarder(), port=0)
        assert receiver.start() > 0
        receiver.shutdown()


def sdk_provider(exporter):
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "grpc-app"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def model_calls(provider, usages) -> None:
    """GenAI model-call spans as an app's instrumentation writes them, one trace each."""
    from opentelemetry import trace

    tracer = provider.get_tracer("grpc-test")
    for n, (inp, out) in enumerate(usages):
        with tracer.start_as_current_span("chat claude-haiku-4-5", kind=trace.SpanKind.CLIENT, attributes={
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": "claude-haiku-4-5", "gen_ai.response.id": f"msg_grpc_{n}",
            "gen_ai.usage.input_tokens": inp, "gen_ai.usage.output_tokens": out,
        }):
            pass


def test_tls_receiver_takes_the_sdk_exporter_with_the_ca_certificate(tmp_path):
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    cert, key = self_signed(tmp_path)
    fwd = FakeForwarder()
    receiver = OtlpGrpcReceiver(CollectorConfig(tls_cert_file=cert, tls_key_file=key, bearer_token=TOKEN), fwd,
                                host="127.0.0.1", port=0)
    port = receiver.start()
    assert receiver.endpoint == f"https://127.0.0.1:{port}"
    provider = sdk_provider(OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=False,
                                             credentials=grpc.ssl_channel_credentials(cert.read_bytes()),
                                             headers={"authorization": f"Bearer {TOKEN}"}, timeout=10))
    try:
        model_calls(provider, [(120, 30)])
        with grpc.insecure_channel(f"127.0.0.1:{port}") as plain:  # plaintext to the TLS port
            code, _, _, _ = export(TraceServiceStub(plain), GOOD)
    finally:
        provider.shutdown()
        receiver.shutdown()
    assert code is Code.UNAVAILABLE
    ((key_, value),) = [m for batch in fwd.batches for m in batch]
    (span,) = decode_protobuf(value).resource_spans[0].scope_spans[0].spans
    assert span.name == "chat claude-haiku-4-5" and span.trace_id.hex() == key_


class FailsOnce(FakeForwarder):
    def forward(self, messages):
        try:
            return super().forward(messages)
        finally:
            self.fail = None


def test_sdk_exporter_retries_after_the_retry_info_delay():
    """UNAVAILABLE + RetryInfo(2 s): OpenTelemetry Python's exporter waits 2 s (its own first backoff
    is about 1 s), sends again and gets OK."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    fwd = FailsOnce(fail=KafkaUnavailable("k:9092", "timeout", retry_after=2))
    receiver = OtlpGrpcReceiver(CollectorConfig(), fwd, host="127.0.0.1", port=0)
    provider = sdk_provider(OTLPSpanExporter(endpoint=f"127.0.0.1:{receiver.start()}", insecure=True, timeout=10))
    started = time.monotonic()
    try:
        model_calls(provider, [(10, 1)])
    finally:
        provider.shutdown()
        receiver.shutdown()
    assert time.monotonic() - started >= 1.9
    assert fwd.fail is None and len(fwd.batches) == 1


@pytest.mark.kafka
def test_sdk_grpc_exporter_to_kafka_to_the_lake(kafka_config: Config):
    """The real OpenTelemetry Python OTLP/gRPC exporter (gzip) → OtlpGrpcReceiver → Kafka → processor → lake."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import Compression, OTLPSpanExporter

    from costline.lake import open_lake
    from costline.processors.processor import Processor

    usages = [(1200, 340), (87, 9), (4096, 1024)]
    forwarder = KafkaForwarder(kafka_config.kafka, produce_timeout_s=10.0, connect_timeout_s=5.0)
    receiver = OtlpGrpcReceiver(CollectorConfig(), forwarder, host="127.0.0.1", port=0)
    port = receiver.start()
    provider = sdk_provider(OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True, timeout=15,
                                             compression=Compression.Gzip))
    try:
        model_calls(provider, usages)
    finally:
        provider.shutdown()
        receiver.shutdown()
    stats = Processor(kafka_config).run(until_idle=1.5)
    assert (stats.messages, stats.spans, stats.dlq) == (len(usages), len(usages), 0), stats.describe()
    con = open_lake(kafka_config)
    assert con.execute("SELECT count(*), sum(input_tokens), sum(output_tokens) FROM calls").fetchone() == (
        len(usages), sum(i for i, _ in usages), sum(o for _, o in usages))


# -- config and `costline collect` --------------------------------------------------------------------
@pytest.mark.parametrize(
    "env, want",
    [
        pytest.param({}, None, id="off-by-default"),
        pytest.param({"COSTLINE_COLLECTOR_GRPC_PORT": "4317"}, 4317, id="env-var"),
        pytest.param({"COSTLINE_COLLECTOR_GRPC_PORT": ""}, None, id="empty-env-var-is-off"),
        pytest.param({"COSTLINE_COLLECTOR_GRPC_PORT": "4318"}, "must differ from [collector] port", id="http-port"),
        pytest.param({"COSTLINE_COLLECTOR_GRPC_PORT": "0"}, "must be a TCP port", id="zero"),
        pytest.param({"COSTLINE_COLLECTOR_GRPC_PORT": "70000"}, "must be a TCP port", id="too-high"),
        pytest.param({"COSTLINE_COLLECTOR_GRPC_PORT": "grpc"}, "whole number", id="not-a-number"),
    ],
)
def test_grpc_port_config(env, want):
    if isinstance(want, str):
        with pytest.raises(ConfigError, match="GRPC_PORT|grpc_port") as err:
            load_config(env=env)
        assert want in str(err.value)
    else:
        assert load_config(env=env).collector.grpc_port == want


def test_costline_collect_serves_both_and_stops_on_sigterm(tmp_path):
    http_port, grpc_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COSTLINE_")}
    env["KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{free_port()}"  # never contacted: nothing is sent
    proc = subprocess.Popen([sys.executable, "-m", "costline", "collect", "--port", str(http_port),
                             "--grpc-port", str(grpc_port)], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{http_port}/v1/traces (OTLP/HTTP)" in line, (line, proc.stderr.read())
        assert f"http://127.0.0.1:{grpc_port} (OTLP/gRPC)" in line
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            code, _, _, _ = export(TraceServiceStub(channel), ExportTraceServiceRequest())  # nothing to forward
        assert code is Code.OK
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for port in (http_port, grpc_port):  # both listeners are closed
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0
