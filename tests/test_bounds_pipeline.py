"""A buggy sender's exports next to a real OTel SDK app's, through `costline collect`, a real broker, the
processor and the lake: the bad span costs only itself; every valid span of the same exports is in the lake,
nothing is dead-lettered."""

from __future__ import annotations

import gzip
import json

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from test_bounds_receiver import post

from costline.collectors import KafkaForwarder, OtlpReceiver
from costline.config import Config
from costline.lake import open_lake
from costline.processors.processor import Processor

pytestmark = pytest.mark.kafka

T0 = 1_700_000_000_000_000_000


def _json_call(trace: str, span: str, tokens: int, **extra) -> dict:
    out = {"traceId": trace, "spanId": span, "name": "chat claude-haiku-4-5", "kind": 3,
           "startTimeUnixNano": str(T0), "endTimeUnixNano": str(T0 + 10**9),
           "attributes": [{"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                          {"key": "gen_ai.provider.name", "value": {"stringValue": "anthropic"}},
                          {"key": "gen_ai.request.model", "value": {"stringValue": "claude-haiku-4-5"}},
                          {"key": "gen_ai.usage.input_tokens", "value": {"intValue": str(tokens)}},
                          {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 1}}]}
    out.update(extra)
    return out


def test_bad_spans_cost_only_themselves_end_to_end(kafka_config: Config) -> None:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    forwarder = KafkaForwarder(kafka_config.kafka, produce_timeout_s=10, retry_after_s=1)
    receiver = OtlpReceiver(kafka_config.collector, forwarder, host="127.0.0.1", port=0)
    port = receiver.start()
    try:
        # 1. a real OTel SDK app (protobuf, gzip) whose span carries 10,000 junk attributes beside its usage
        provider = TracerProvider(resource=Resource.create({"service.name": "sdk-app"}),
                                  span_limits=SpanLimits(max_span_attributes=20_000))
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(
            endpoint=f"http://127.0.0.1:{port}/v1/traces", compression=Compression.Gzip)))
        tracer = provider.get_tracer("bounds-test")
        with tracer.start_as_current_span("chat claude-haiku-4-5") as span:
            span.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
                                 "gen_ai.request.model": "claude-haiku-4-5", "gen_ai.usage.input_tokens": 100,
                                 "gen_ai.usage.output_tokens": 1})
            span.set_attributes({f"junk.{i}": i for i in range(10_000)})
        provider.shutdown()

        # 2. OTLP/JSON from a buggy sender: one span's intValue past int64 (OpenTelemetry JS writes 1e20 so)
        doc = {"resourceSpans": [{"resource": {}, "scopeSpans": [{"scope": {"name": "js"}, "spans": [
            _json_call("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", 200),
            _json_call("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203332", 999,
                       attributes=[{"key": "n", "value": {"intValue": 100000000000000000000}}]),
            _json_call("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", 300),
        ]}]}]}
        status, body = post(port, json.dumps(doc).encode(), {"Content-Type": "application/json"})
        assert status == 200, body
        assert json.loads(body)["partialSuccess"]["rejectedSpans"] == "1"

        # 3. protobuf in a two-member gzip: one span in each member
        halves = []
        for i, tokens in ((1, 400), (2, 500)):
            req = ExportTraceServiceRequest()
            s = req.resource_spans.add().scope_spans.add().spans.add()
            s.name, s.trace_id, s.span_id = "chat claude-haiku-4-5", bytes([0x40 + i]) * 16, bytes([0x40 + i]) * 8
            s.start_time_unix_nano, s.end_time_unix_nano = T0, T0 + 10**9
            for key, value in (("gen_ai.operation.name", "chat"), ("gen_ai.provider.name", "anthropic"),
                               ("gen_ai.request.model", "claude-haiku-4-5")):
                kv = s.attributes.add()
                kv.key, kv.value.string_value = key, value
            for key, value in (("gen_ai.usage.input_tokens", tokens), ("gen_ai.usage.output_tokens", 1)):
                kv = s.attributes.add()
                kv.key, kv.value.int_value = key, value
            halves.append(gzip.compress(req.SerializeToString()))
        status, body = post(port, b"".join(halves),
                             {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"})
        assert status == 200, body
    finally:
        receiver.shutdown()

    stats = Processor(kafka_config).run(until_idle=1.5)
    assert stats.dlq == 0, stats.describe()
    con = open_lake(kafka_config)
    try:
        got = sorted(r[0] for r in con.execute("SELECT input_tokens FROM calls_raw").fetchall())
    finally:
        con.close()
    assert got == [100, 200, 300, 400, 500]
