"""The OTLP receivers against what real senders do: a Kafka slow to acknowledge under the OTel SDK exporter's own
timeout, a span bigger than one Kafka message, a protobuf export with one span nested past protobuf's depth, and
the Content-Encodings the OTLP exporters and the Collector send (deflate, zstd) — each under the same bounds."""

from __future__ import annotations

import http.client
import time
import zlib

import pytest
import zstandard
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from collector_rig import RecordingForwarder as Capture
from costline.config import CollectorConfig, KafkaConfig
from costline.collectors import receiver as receiver_mod
from costline.collectors.forwarder import KafkaForwarder
from costline.collectors.kafka_exporter import TRUNCATED_ATTRIBUTES
from costline.collectors.receiver import OtlpReceiver, pack_traces
from costline.collectors.receiver_grpc import OtlpGrpcReceiver

PROTO = {"Content-Type": "application/x-protobuf"}


@pytest.fixture
def receiver():
    started: list[OtlpReceiver] = []

    def start(forwarder=None, **config):
        r = OtlpReceiver(CollectorConfig(**config), forwarder or Capture(), host="127.0.0.1", port=0)
        r.start()
        started.append(r)
        return r

    yield start
    for r in started:
        r.shutdown()


def post(port: int, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/v1/traces", body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def spans_of(messages) -> list:
    return [s for _, v in messages for rs in ExportTraceServiceRequest.FromString(v).resource_spans
            for ss in rs.scope_spans for s in ss.spans]


def attrs(span) -> dict:
    out = {}
    for kv in span.attributes:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = ([v.string_value for v in kv.value.array_value.values] if kind == "array_value"
                       else getattr(kv.value, kind))
    return out


# --- 1. Kafka slow to acknowledge: the 503 reaches the exporter inside its default timeout ----------------------
class _SlowOnceProducer:
    """kafka-python's producer whose first acknowledgement does not come in time (acks=all with an ISR short, a
    broker under load): ``get`` waits the whole timeout it is given, then raises KafkaTimeoutError, as
    kafka-python's FutureRecordMetadata does; later sends are acknowledged at once."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def __call__(self, **_: object) -> _SlowOnceProducer:  # the LazyProducer's factory
        return self

    def send(self, topic, value, key, headers):
        self.sent.append(value)
        first = len(self.sent) == 1

        class Future:
            def get(self, timeout=None):
                if first:
                    from kafka.errors import KafkaTimeoutError

                    time.sleep(timeout)
                    raise KafkaTimeoutError(f"Timeout after waiting for {timeout} secs.")
                return None

        return Future()

    def flush(self, timeout=None) -> None:
        pass

    def close(self, timeout=None) -> None:
        pass


def test_forwarder_defaults_are_the_collector_config_defaults():
    # `costline collect` passes [collector]'s values; a KafkaForwarder built without them must not wait longer
    # than the exporters' 10 s export timeout either
    fwd = KafkaForwarder(KafkaConfig())
    cfg = CollectorConfig()
    assert (fwd._timeout, fwd._retry_after) == (cfg.produce_timeout_s, cfg.retry_after_s) == (3.0, 1)
    fwd.close()


def test_a_slow_kafka_ack_gives_the_real_otlp_exporter_a_503_it_retries_within_its_default_timeout(
        receiver, monkeypatch):
    statuses: list[int] = []
    original = receiver_mod._Handler._send

    def recording_send(self, status, *args, **kwargs):
        statuses.append(status)
        return original(self, status, *args, **kwargs)

    monkeypatch.setattr(receiver_mod._Handler, "_send", recording_send)
    producer = _SlowOnceProducer()
    fwd = KafkaForwarder(KafkaConfig())  # its own defaults: what [collector] holds unless the operator says
    fwd._producer._factory = producer
    fwd._producer._diagnose = lambda config: None  # no probes of a Kafka that is not there
    r = receiver(fwd)
    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{r.port}/v1/traces")  # defaults, as an app's
    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("app").start_as_current_span("chat claude"):
        pass
    result = exporter.export(memory.get_finished_spans())
    exporter.shutdown()
    assert statuses == [503, 200]  # the exporter got the 503 (with Retry-After) and sent again
    assert result is SpanExportResult.SUCCESS
    assert len(producer.sent) == 2 and [s.name for s in spans_of([("k", producer.sent[1])])] == ["chat claude"]


# --- 2. a span bigger than one Kafka message: sent with its largest values cut, not refused ---------------------
TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
TRACE_2 = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")


def add_span(ss, name: str, trace_id: bytes, span_id: bytes, **attributes):
    span = ss.spans.add(name=name, trace_id=trace_id, span_id=span_id, start_time_unix_nano=1_700_000_000_000_000_000,
                        end_time_unix_nano=1_700_000_001_000_000_000)
    for key, value in attributes.items():
        kv = span.attributes.add(key=key.replace("__", "."))
        if isinstance(value, int):
            kv.value.int_value = value
        else:
            kv.value.string_value = value
    return span


def one_scope() -> tuple[ExportTraceServiceRequest, object]:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "faq-bot"
    ss = rs.scope_spans.add()
    ss.scope.name = "opentelemetry.instrumentation.anthropic"
    return req, ss


def test_a_span_over_the_kafka_message_limit_is_sent_with_its_prompt_cut_not_refused(receiver):
    # a vision call as OpenLLMetry records it: ~1.07 MB of base64 image in the prompt attribute
    image = "iVBORw0KGgo" * 97_000
    req, ss = one_scope()
    add_span(ss, "anthropic.chat", TRACE, b"\x01" * 8, gen_ai__system="Anthropic",
             gen_ai__request__model="claude-sonnet-4-5", gen_ai__prompt__0__content=image,
             gen_ai__usage__input_tokens=1650, gen_ai__usage__output_tokens=120, costline__tenant="acme")
    add_span(ss, "costline.request", TRACE, b"\x02" * 8, costline__tenant="acme")
    assert len(req.SerializeToString()) > 1_000_000  # [collector] max_message_bytes' default
    fwd = Capture()
    r = receiver(fwd)
    status, body = post(r.port, req.SerializeToString(), PROTO)
    assert status == 200
    assert ExportTraceServiceResponse.FromString(body).partial_success.rejected_spans == 0
    assert all(len(v) <= 1_000_000 for _, v in fwd.messages)
    assert {k for k, _ in fwd.messages} == {TRACE.hex()}
    by_name = {s.name: s for s in spans_of(fwd.messages)}
    assert sorted(by_name) == ["anthropic.chat", "costline.request"]
    big = by_name["anthropic.chat"]
    a = attrs(big)
    assert (big.trace_id, big.span_id, big.start_time_unix_nano) == (TRACE, b"\x01" * 8, 1_700_000_000_000_000_000)
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (1650, 120)
    assert (a["gen_ai.request.model"], a["costline.tenant"]) == ("claude-sonnet-4-5", "acme")
    assert a[TRUNCATED_ATTRIBUTES] == ["gen_ai.prompt.0.content"]
    cut = a["gen_ai.prompt.0.content"]
    assert 900_000 < len(cut) < len(image) and image.startswith(cut)


def test_only_a_span_that_cannot_fit_even_cut_is_refused_and_the_named_attributes_are_never_cut():
    limit = 4096
    req, ss = one_scope()
    # the model name (read by pricing) is the largest value: the prompt is cut instead, the model kept whole
    add_span(ss, "chat", TRACE, b"\x01" * 8, gen_ai__request__model="m" * 2500, gen_ai__prompt="p" * 2000,
             gen_ai__usage__input_tokens=7)
    # 400 numbers: nothing to cut; refused, and said why
    numbers = add_span(ss, "numbers", TRACE_2, b"\x02" * 8)
    for i in range(400):
        numbers.attributes.add(key=f"n{i:03d}").value.int_value = 2**40 + i
    messages, rejected, why = pack_traces(req, limit)
    assert rejected == 1 and "'numbers'" in why and "even with its attribute values cut" in why
    assert all(len(v) <= limit for _, v in messages)
    [chat] = spans_of(messages)
    a = attrs(chat)
    assert a["gen_ai.request.model"] == "m" * 2500 and a["gen_ai.usage.input_tokens"] == 7
    assert a[TRUNCATED_ATTRIBUTES] == ["gen_ai.prompt"] and 0 < len(a["gen_ai.prompt"]) < 2000


# --- 3. a protobuf span nested past protobuf's depth limit costs only itself ------------------------------------
def nested_span(ss, depth: int, trace_id: bytes = TRACE_2, name: str = "deep"):
    span = add_span(ss, name, trace_id, b"\x04" * 8)
    value = span.attributes.add(key="tool.args").value
    for _ in range(depth):
        value = value.kvlist_value.values.add(key="k").value
    value.string_value = "leaf"
    return span


def good_and_deep(depth: int) -> bytes:
    req, ss = one_scope()
    add_span(ss, "good", TRACE, b"\x01" * 8, gen_ai__usage__input_tokens=5)
    nested_span(ss, depth)
    add_span(ss, "after", TRACE, b"\x03" * 8)
    return req.SerializeToString()


@pytest.mark.parametrize("depth", [32, 40], ids=["parses-alone-not-in-a-request", "past-any-limit"])
def test_a_protobuf_span_nested_too_deep_is_refused_alone_and_its_neighbours_reach_kafka(receiver, depth):
    fwd = Capture()
    r = receiver(fwd)
    status, body = post(r.port, good_and_deep(depth), PROTO)
    assert status == 200
    ps = ExportTraceServiceResponse.FromString(body).partial_success
    assert ps.rejected_spans == 1 and "'deep'" in ps.error_message
    kept = spans_of(fwd.messages)  # every message parses back (what the processor does)
    assert [s.name for s in kept] == ["good", "after"]
    assert attrs(kept[0])["gen_ai.usage.input_tokens"] == 5
    assert [rs.resource.attributes[0].value.string_value for _, v in fwd.messages
            for rs in ExportTraceServiceRequest.FromString(v).resource_spans] == ["faq-bot"]
    # what is not protobuf at all is still refused whole
    assert post(r.port, b"\xff\xff\xff" + good_and_deep(depth), PROTO)[0] == 400


def test_protobuf_salvage_keeps_neighbours_with_cut_utf8_drops_corrupt_span_bytes_and_is_bounded(monkeypatch):
    from costline import otlp

    req, ss = one_scope()
    add_span(ss, "good", TRACE, b"\x01" * 8, prompt="caf\u00e9 au lait")
    nested_span(ss, 40)
    good = req.SerializeToString()
    # the prompt cut through its "é" (0xC3 0xA9) by a sender with a byte limit: invalid UTF-8, repaired
    cut_utf8 = good.replace("caf\u00e9 au lait".encode(), b"caf\xc3 au lait!")
    # a span whose bytes are corrupt: field 2 of ScopeSpans holding a span whose only field is a varint cut short
    # (tag 0x08 = field 1 varint, then 0x80 announcing more bytes that never come), added by hand to the scope
    corrupt_span = b"\x12\x02\x08\x80"
    got = otlp.parse_protobuf_salvaging(cut_utf8)
    assert got.dropped == 1 and [s.name for s in got.request.resource_spans[0].scope_spans[0].spans] == ["good"]
    assert attrs(got.request.resource_spans[0].scope_spans[0].spans[0])["prompt"] == "caf\ufffd au lait!"
    # rebuild the request by hand with the corrupt span between two good ones (lengths written independently)
    req2, ss2 = one_scope()
    add_span(ss2, "one", TRACE, b"\x01" * 8)
    add_span(ss2, "two", TRACE, b"\x02" * 8)
    scope_bytes = ss2.SerializeToString() + corrupt_span
    rs = req2.resource_spans[0]
    rs_bytes = rs.resource.SerializeToString()

    def ld(tag: int, payload: bytes) -> bytes:  # a length-delimited field; lengths under 16,384 (two varint bytes)
        n = len(payload)
        assert n < 1 << 14
        return bytes([tag]) + (bytes([n]) if n < 128 else bytes([n & 0x7F | 0x80, n >> 7])) + payload

    body = ld(0x0A, ld(0x0A, rs_bytes) + ld(0x12, scope_bytes))  # request.resource_spans{resource, scope_spans}
    got = otlp.parse_protobuf_salvaging(body)
    assert got.dropped == 1 and [s.name for s in got.request.resource_spans[0].scope_spans[0].spans] == ["one", "two"]
    # bounded: a failing request of more spans than the bound is refused whole, as before
    monkeypatch.setattr(otlp, "MAX_SALVAGED_SPANS", 1)
    with pytest.raises(otlp.OtlpDecodeError):
        otlp.parse_protobuf_salvaging(cut_utf8)


def test_an_otlp_json_span_nested_just_past_the_request_depth_is_refused_alone(receiver):
    # it decodes as a Span on its own (3 levels shallower) but not inside its request: that refused the export
    import json

    def nested(depth):
        v = {"stringValue": "leaf"}
        for _ in range(depth):
            v = {"kvlistValue": {"values": [{"key": "k", "value": v}]}}
        return v

    doc = {"resourceSpans": [{"resource": {}, "scopeSpans": [{"scope": {}, "spans": [
        {"traceId": TRACE.hex(), "spanId": "11" * 8, "name": "good", "startTimeUnixNano": "1", "endTimeUnixNano": "2"},
        {"traceId": TRACE_2.hex(), "spanId": "22" * 8, "name": "deep", "startTimeUnixNano": "1",
         "endTimeUnixNano": "2", "attributes": [{"key": "tool.args", "value": nested(32)}]}]}]}]}
    fwd = Capture()
    r = receiver(fwd)
    status, body = post(r.port, json.dumps(doc).encode(), {"Content-Type": "application/json"})
    assert status == 200
    assert json.loads(body)["partialSuccess"]["rejectedSpans"] in ("1", 1)
    assert [s.name for s in spans_of(fwd.messages)] == ["good"]


def test_grpc_export_cuts_a_big_span_and_refuses_only_a_deep_one():
    import grpc

    fwd = Capture()
    r = OtlpGrpcReceiver(CollectorConfig(), fwd, host="127.0.0.1", port=0)
    port = r.start()
    req, ss = one_scope()
    add_span(ss, "big", TRACE, b"\x01" * 8, gen_ai__prompt="x" * 1_200_000, gen_ai__usage__output_tokens=3)
    nested_span(ss, 40)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                                       request_serializer=lambda b: b,
                                       response_deserializer=ExportTraceServiceResponse.FromString)
            resp = call(req.SerializeToString(), timeout=30)
    finally:
        r.shutdown()
    assert resp.partial_success.rejected_spans == 1 and "'deep'" in resp.partial_success.error_message
    [big] = spans_of(fwd.messages)
    assert attrs(big)["gen_ai.usage.output_tokens"] == 3 and attrs(big)[TRUNCATED_ATTRIBUTES] == ["gen_ai.prompt"]


# --- 4. Content-Encoding deflate (zlib or raw) and zstd, under the decompressed-size limit ---------------------
def _raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


def _two_spans() -> bytes:
    req, ss = one_scope()
    add_span(ss, "a", TRACE, b"\x01" * 8)
    add_span(ss, "b", TRACE_2, b"\x02" * 8)
    return req.SerializeToString()


@pytest.mark.parametrize("encoding, encode", [
    pytest.param("deflate", zlib.compress, id="deflate-zlib"),
    pytest.param("deflate", _raw_deflate, id="deflate-raw"),
    pytest.param("zstd", lambda d: zstandard.ZstdCompressor().compress(d), id="zstd"),
    pytest.param("zstd", lambda d: zstandard.ZstdCompressor(write_content_size=False).compress(d[:7])
                 + zstandard.ZstdCompressor().compress(d[7:]), id="zstd-two-frames"),
    pytest.param("ZSTD", lambda d: zstandard.ZstdCompressor().compress(d), id="zstd-uppercase"),
])
def test_deflate_and_zstd_bodies_are_accepted(receiver, encoding, encode):
    fwd = Capture()
    r = receiver(fwd)
    status, _ = post(r.port, encode(_two_spans()), {**PROTO, "Content-Encoding": encoding})
    assert status == 200
    assert sorted(s.name for s in spans_of(fwd.messages)) == ["a", "b"]


def _zstd_bomb(size: int) -> bytes:
    c = zstandard.ZstdCompressor(level=1, write_content_size=False).compressobj()
    chunk = b"\x00" * (1 << 20)
    return b"".join(c.compress(chunk) for _ in range(size >> 20)) + c.flush()


@pytest.mark.parametrize("encoding, bomb", [
    pytest.param("deflate", lambda: zlib.compress(b"\x00" * (64 << 20), 9), id="deflate-zlib"),
    pytest.param("deflate", lambda: _raw_deflate(b"\x00" * (64 << 20)), id="deflate-raw"),
    pytest.param("zstd", lambda: _zstd_bomb(64 << 20), id="zstd"),
])
def test_a_deflate_or_zstd_bomb_is_413_at_the_limit(receiver, encoding, bomb):
    body = bomb()
    assert len(body) < 1 << 20  # under max_body_bytes compressed: only the decompressed limit can stop it
    fwd = Capture()
    r = receiver(fwd, max_body_bytes=1 << 20)
    status, _ = post(r.port, body, {**PROTO, "Content-Encoding": encoding})
    assert status == 413 and fwd.messages == []


@pytest.mark.parametrize("encoding, decode", [
    pytest.param("deflate", "_inflate", id="deflate"), pytest.param("zstd", "_unzstd", id="zstd")])
def test_a_bomb_is_never_decompressed_far_past_the_limit(encoding, decode):
    import tracemalloc

    from costline.netsec import HttpReject

    body = zlib.compress(b"\x00" * (256 << 20), 9) if encoding == "deflate" else _zstd_bomb(256 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(HttpReject) as refused:
            getattr(receiver_mod, decode)(body, 1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused.value.status == 413
    assert peak < 12 << 20  # 256 MiB inflated whole would be 256 MiB


@pytest.mark.parametrize("encoding, body", [
    pytest.param("deflate", zlib.compress(b"0123456789" * 50)[:-4], id="deflate-cut-short"),
    pytest.param("deflate", zlib.compress(b"x") + b"junk", id="deflate-trailing-bytes"),
    pytest.param("deflate", b"\xff\xfe\xfd\xfc", id="deflate-garbage"),
    pytest.param("zstd", zstandard.ZstdCompressor().compress(b"0123456789" * 50)[:-4], id="zstd-cut-short"),
    pytest.param("zstd", zstandard.ZstdCompressor().compress(b"x") + b"junk", id="zstd-trailing-bytes"),
    pytest.param("zstd", b"", id="zstd-empty"),
])
def test_a_bad_deflate_or_zstd_body_is_400(receiver, encoding, body):
    fwd = Capture()
    r = receiver(fwd)
    status, raw = post(r.port, body, {**PROTO, "Content-Encoding": encoding})
    assert status == 400 and fwd.messages == []
    assert encoding in status_pb2.Status.FromString(raw).message


def test_more_zstd_frames_than_the_bound_are_refused(receiver):
    frame = zstandard.ZstdCompressor().compress(b"")
    fwd = Capture()
    r = receiver(fwd)
    status, raw = post(r.port, frame * (receiver_mod.MAX_ZSTD_FRAMES + 1) + zstandard.ZstdCompressor().compress(
        _two_spans()), {**PROTO, "Content-Encoding": "zstd"})
    assert status == 400 and b"zstd frames" in raw and fwd.messages == []
