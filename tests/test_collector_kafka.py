"""A real OpenTelemetry Collector writes ``otlp_spans`` and costline's processor reads it.

docs/telemetry.md ("Kafka message format") says a Collector's Kafka exporter can write the topic
costline reads. Here the real one does: ``scripts/otelcol/build`` builds a minimal Collector from the
official modules (core v0.165.0 / v1.71.0, contrib kafkaexporter v0.165.1: an OTLP receiver, the batch
processor, the Kafka exporter) into ``.cache/otelcol/otelcol-costline``. The OpenTelemetry Python SDK
sends GenAI spans to its OTLP receiver (HTTP/protobuf and gRPC); two Kafka exporters write them to two
topics, one ``otlp_proto``, one ``otlp_json``. The test reads both topics with kafka-python to pin down
what the Collector writes (keys, headers, how a trace is split into messages, partitions), then runs
costline's processor on each and checks with DuckDB that every span it sent is in the lake exactly
once, with the token counts it chose, and that each request owns its calls even when they came in
other messages.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import free_port, missing_binary

from costline import contract as c
from costline.config import Config, KafkaConfig
from costline.lake import open_lake
from costline.processors.processor import Processor

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[1]
BINARY = ROOT / ".cache" / "otelcol" / "otelcol-costline"
#: Generous bounds for a loaded 2-core CI machine; every wait ends as soon as its condition holds.
START_TIMEOUT_S = 60.0
DELIVERY_TIMEOUT_S = 60.0

MODEL = "claude-haiku-4-5"
RESPONSE_MODEL = "claude-haiku-4-5-20251001"
SECOND_SCOPE = "collector-kafka-test.other-instrumentation"

#: trace -> (root span, [(input tokens, output tokens, instrumentation scope)]). The root is a
#: `costline.request`, an app's HTTP server span (no request: each call is a request of its own) or
#: none (the call is the root). C's calls come from two instrumentation scopes; D's request span ends
#: after its calls were delivered (a second export); E and F are sent over OTLP/gRPC.
PLAN: dict[str, tuple[str | None, list[tuple[int, int, str]]]] = {
    "A": ("request", [(1200, 340, "main"), (2200, 95, "main")]),
    "B": ("request", [(310, 42, "main"), (4096, 1024, "main"), (77, 5, "main")]),
    "C": ("request", [(640, 128, "main"), (900, 210, "other")]),
    "D": ("request", [(1500, 250, "main"), (35, 700, "main")]),
    "E": (None, [(512, 64, "main")]),
    "F": ("http", [(2048, 17, "main"), (99, 333, "main")]),
}
GRPC_TRACES = ("E", "F")
LATE_REQUEST = "D"


@dataclass
class Sent:
    """What the test sent, from the SDK's own span contexts (hex ids as OTLP JSON spells them)."""

    trace_ids: dict[str, str] = field(default_factory=dict)  # plan letter -> trace id
    spans: dict[str, str] = field(default_factory=dict)  # span id -> plan letter
    calls: dict[str, tuple[int, int]] = field(default_factory=dict)  # call span id -> tokens
    #: request id (the request span's costline.request.id, or a standalone call's span id) ->
    #: (calls, input tokens, output tokens), computed here from the chosen numbers.
    requests: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    request_spans: int = 0


@dataclass
class Message:
    partition: int
    key: bytes | None
    headers: list
    resource_spans: int
    scopes: list[str]
    spans: list[tuple[str, str]]  # (trace id hex, span id hex)


# -- the Collector ------------------------------------------------------------------------------------
def collector_config(bootstrap: str, http_port: int, grpc_port: int, proto_topic: str, json_topic: str) -> dict:
    brokers = bootstrap.split(",")
    return {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{http_port}"},
                                             "grpc": {"endpoint": f"127.0.0.1:{grpc_port}"}}}},
        "processors": {"batch": {"timeout": "100ms"}},
        "exporters": {
            # what docs/telemetry.md tells users to write: default partitioner (sarama_compat)
            "kafka/proto": {"brokers": brokers, "partition_traces_by_id": True,
                            "traces": {"topic": proto_topic, "encoding": "otlp_proto"},
                            "producer": {"compression": "zstd"}},
            # OTLP JSON, and Kafka's own murmur2 partitioner (the one kafka-python and costline use)
            "kafka/json": {"brokers": brokers, "partition_traces_by_id": True,
                           "traces": {"topic": json_topic, "encoding": "otlp_json"},
                           "producer": {"compression": "gzip"},
                           "record_partitioner": {"sticky_key": {"hasher": "murmur2"}}},
        },
        "service": {
            "pipelines": {"traces": {"receivers": ["otlp"], "processors": ["batch"],
                                     "exporters": ["kafka/proto", "kafka/json"]}},
            "telemetry": {"logs": {"level": "info"}, "metrics": {"level": "none"}},
        },
    }


class Collector:
    def __init__(self, config: dict, folder: Path) -> None:
        self.config_path = folder / "otelcol.yaml"
        self.config_path.write_text(json.dumps(config, indent=1))  # JSON is YAML
        self.log_path = folder / "otelcol.log"
        self.proc: subprocess.Popen | None = None

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def start(self, port: int) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen([str(BINARY), "--config", f"file:{self.config_path}"],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"the collector exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the collector's receiver did not listen on {port} within "
                                     f"{START_TIMEOUT_S:.0f}s:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


# -- the app: the OpenTelemetry Python SDK ------------------------------------------------------------
class RecordingExporter:
    """Delegates to an OTLP exporter and keeps every export's result (force_flush does not say)."""

    def __init__(self, inner) -> None:
        self.inner, self.results = inner, []

    def export(self, spans):
        result = self.inner.export(spans)
        self.results.append(result)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


def provider_for(exporter):
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "collector-kafka-test"}))
    # exports only on force_flush: the test decides which spans travel together
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=600_000))
    return provider


def flush(provider, recorder: RecordingExporter) -> None:
    from opentelemetry.sdk.trace.export import SpanExportResult

    assert provider.force_flush(timeout_millis=30_000)
    assert recorder.results and all(r is SpanExportResult.SUCCESS for r in recorder.results), recorder.results


def send_plan(http_port: int, grpc_port: int, wait_delivered: Callable[[Sent], None]) -> Sent:
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

    http = RecordingExporter(HttpSpanExporter(endpoint=f"http://127.0.0.1:{http_port}/v1/traces", timeout=30))
    grpc = RecordingExporter(GrpcSpanExporter(endpoint=f"127.0.0.1:{grpc_port}", insecure=True, timeout=30))
    http_provider, grpc_provider = provider_for(http), provider_for(grpc)
    sent = Sent()
    late_request = None
    try:
        for letter, (root, calls) in PLAN.items():
            provider = grpc_provider if letter in GRPC_TRACES else http_provider
            tracers = {"main": provider.get_tracer("collector-kafka-test"), "other": provider.get_tracer(SECOND_SCOPE)}
            req = rid = None
            if root == "request":
                rid = uuid.uuid4().hex
                req = tracers["main"].start_span(c.SPAN_REQUEST, attributes={
                    c.COSTLINE_REQUEST_ID: rid, c.COSTLINE_TENANT: "acme", c.COSTLINE_TASK_TYPE: "faq",
                    c.COSTLINE_CACHE_HIT: False, c.COSTLINE_ATTEMPTS: len(calls), c.COSTLINE_ESCALATIONS: 0,
                    c.COSTLINE_SUCCESS: True})
                sent.request_spans += 1
                sent.requests[rid] = (len(calls), sum(i for i, _, _ in calls), sum(o for _, o, _ in calls))
            elif root == "http":
                req = tracers["main"].start_span("POST /v1/answer", kind=trace.SpanKind.SERVER,
                                                 attributes={"http.request.method": "POST"})
            if req is not None:
                ctx = req.get_span_context()
                sent.trace_ids[letter] = format(ctx.trace_id, "032x")
                sent.spans[format(ctx.span_id, "016x")] = letter
            with trace.use_span(req, end_on_exit=False) if req else contextlib.nullcontext():
                for n, (inp, out, scope) in enumerate(calls):
                    attrs = {c.GEN_AI_OPERATION_NAME: c.OPERATION_CHAT, c.GEN_AI_PROVIDER_NAME: c.PROVIDER_ANTHROPIC,
                             c.GEN_AI_REQUEST_MODEL: MODEL, c.GEN_AI_RESPONSE_MODEL: RESPONSE_MODEL,
                             c.GEN_AI_RESPONSE_ID: f"msg_{letter}{n}_{uuid.uuid4().hex[:12]}",
                             c.GEN_AI_USAGE_INPUT_TOKENS: inp, c.GEN_AI_USAGE_OUTPUT_TOKENS: out}
                    if rid:
                        attrs[c.COSTLINE_REQUEST_ID] = rid
                    with tracers[scope].start_as_current_span(f"chat {MODEL}", kind=trace.SpanKind.CLIENT,
                                                              attributes=attrs) as span:
                        ctx = span.get_span_context()
                    sid, tid = format(ctx.span_id, "016x"), format(ctx.trace_id, "032x")
                    assert sent.trace_ids.setdefault(letter, tid) == tid, f"{letter}: one trace, one id"
                    sent.spans[sid] = letter
                    sent.calls[sid] = (inp, out)
                    if not rid:
                        sent.requests[sid] = (1, inp, out)  # a call without a request is a request of its own
            if req is not None:
                if letter == LATE_REQUEST:
                    late_request = req
                else:
                    req.end()
        flush(http_provider, http)
        flush(grpc_provider, grpc)
        # the late request span travels in a later export, once its calls are in Kafka
        late_sid = format(late_request.get_span_context().span_id, "016x")
        wait_delivered(Sent(spans={s: t for s, t in sent.spans.items() if s != late_sid}))
        late_request.end()
        flush(http_provider, http)
        return sent
    finally:
        http_provider.shutdown()
        grpc_provider.shutdown()


# -- Kafka, read directly -----------------------------------------------------------------------------
def parse_value(value: bytes, encoding: str) -> tuple[int, list[str], list[tuple[str, str]]]:
    """(resourceSpans, scope names, [(trace id, span id)]) of an ExportTraceServiceRequest."""
    if encoding == "otlp_proto":
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        req = ExportTraceServiceRequest.FromString(value)
        return (len(req.resource_spans), [ss.scope.name for rs in req.resource_spans for ss in rs.scope_spans],
                [(s.trace_id.hex(), s.span_id.hex()) for rs in req.resource_spans for ss in rs.scope_spans
                 for s in ss.spans])
    doc = json.loads(value)  # OTLP JSON: lowerCamelCase keys, ids in hex (not protobuf-JSON base64)
    assert set(doc) == {"resourceSpans"}, sorted(doc)
    rss = doc["resourceSpans"]
    spans = [s for rs in rss for ss in rs["scopeSpans"] for s in ss["spans"]]
    # int64 values travel as JSON strings, as the OTLP JSON mapping says
    assert all(isinstance(a["value"]["intValue"], str)
               for s in spans for a in s["attributes"] if "intValue" in a["value"])
    return (len(rss), [ss["scope"]["name"] for rs in rss for ss in rs["scopeSpans"]],
            [(s["traceId"], s["spanId"]) for s in spans])


class TopicReader:
    def __init__(self, bootstrap: str, topic: str, encoding: str) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self.topic, self.encoding, self.messages = topic, encoding, []
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                      auto_offset_reset="earliest")
        self.partitions = sorted(self.consumer.partitions_for_topic(topic) or ())
        assert self.partitions, f"topic {topic} has no partitions"
        self.consumer.assign([TopicPartition(topic, p) for p in self.partitions])

    def span_ids(self) -> set[str]:
        return {sid for m in self.messages for _, sid in m.spans}

    def read_until(self, span_ids: set[str], collector: Collector) -> None:
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S
        while not span_ids <= self.span_ids():
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(span_ids - self.span_ids())} of {len(span_ids)} spans did not reach "
                                     f"{self.topic} within {DELIVERY_TIMEOUT_S:.0f}s:\n{collector.log_tail()}")
            for records in self.consumer.poll(timeout_ms=200).values():
                for r in records:
                    n_rs, scopes, spans = parse_value(r.value, self.encoding)
                    self.messages.append(Message(r.partition, r.key, list(r.headers or []), n_rs, scopes, spans))

    def close(self) -> None:
        self.consumer.close()


def sarama_compat_partition(key: bytes, n: int) -> int:
    """The kafkaexporter's default partitioner: 32-bit FNV-1a as int32, Go's truncated %, abs."""
    h = 0x811C9DC5
    for b in key:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    signed = h - (1 << 32) if h & 0x80000000 else h
    return abs(signed) % n


def murmur2_partition(key: bytes, n: int) -> int:
    """Kafka's default (Java, kafka-python: costline's own exporter) partitioner."""
    from kafka.partitioner.default import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % n


def check_messages(reader: TopicReader, sent: Sent, partition_of: Callable[[bytes, int], int]) -> None:
    msgs = reader.messages
    # every span exactly once
    counts = collections.Counter(sid for m in msgs for _, sid in m.spans)
    assert set(counts) == set(sent.spans) and set(counts.values()) == {1}, counts
    letter_of_trace = {t: letter for letter, t in sent.trace_ids.items()}
    per_trace = collections.Counter()
    for m in msgs:
        traces = {t for t, _ in m.spans}
        # partition_traces_by_id: one trace per message, keyed by its id as 32 lowercase hex chars (ASCII)
        assert len(traces) == 1, traces
        (trace_id,) = traces
        assert m.key == trace_id.encode("ascii") and len(m.key) == 32 and m.key.decode() == m.key.decode().lower()
        # ...holding one ResourceSpans with one ScopeSpans: a trace is split per instrumentation scope
        assert (m.resource_spans, len(m.scopes)) == (1, 1), (m.resource_spans, m.scopes)
        # no headers at all: no content-type (costline sniffs the encoding)
        assert m.headers == [], m.headers
        assert m.partition == partition_of(m.key, len(reader.partitions)), (m.partition, m.key)
        per_trace[letter_of_trace[trace_id]] += 1
    # one message per trace, per instrumentation scope and per export that carried it: C's two scopes
    # and D's late request span each make a second message (same key, same partition)
    assert per_trace == {"A": 1, "B": 1, "C": 2, "D": 2, "E": 1, "F": 1}, per_trace
    assert sorted(s for m in msgs if letter_of_trace[m.spans[0][0]] == "C" for s in m.scopes) == sorted(
        ["collector-kafka-test", SECOND_SCOPE])


# -- costline's processor and lake --------------------------------------------------------------------
def check_lake(config: Config, reader: TopicReader, sent: Sent) -> None:
    stats = Processor(config).run(until_idle=1.5)
    ignored = sum(root == "http" for root, _ in PLAN.values())  # neither request nor call nor lookup
    assert (stats.messages, stats.spans, stats.ignored_spans, stats.dlq) == (
        len(reader.messages), len(sent.spans), ignored, 0), stats.describe()
    assert stats.rows == {"requests": sent.request_spans, "calls": len(sent.calls), "lookups": 0}, stats.describe()
    con = open_lake(config)
    # raw rows: each span once
    assert con.execute("SELECT count(*), count(DISTINCT span_id) FROM calls_raw").fetchone() == (len(sent.calls),) * 2
    assert con.execute("SELECT count(*) FROM requests_raw").fetchone() == (sent.request_spans,)
    # the calls view: the calls sent, with the tokens chosen here
    rows = con.execute("SELECT span_id, trace_id, input_tokens, output_tokens FROM calls").fetchall()
    assert {sid: (i, o) for sid, _, i, o in rows} == sent.calls and len(rows) == len(sent.calls)
    assert {t for _, t, _, _ in rows} == set(sent.trace_ids.values())
    assert con.execute("SELECT sum(input_tokens), sum(output_tokens) FROM calls").fetchone() == (
        sum(i for i, _ in sent.calls.values()), sum(o for _, o in sent.calls.values()))
    # the requests view: every request owns its calls, also those that came in other messages (C, D)
    got = {rid: (n, i, o) for rid, n, i, o in con.execute(
        "SELECT request_id, calls, input_tokens, output_tokens FROM requests").fetchall()}
    assert got == sent.requests


def test_real_collector_writes_what_the_processor_reads(kafka_config: Config, tmp_path: Path):
    if not os.access(BINARY, os.X_OK):
        missing_binary(f"the OpenTelemetry Collector {BINARY.relative_to(ROOT)} is missing: build it with "
                       "scripts/otelcol/build (needs Go)")
    from costline.localkafka import ensure_topics

    kafka = kafka_config.kafka
    json_kafka = KafkaConfig(bootstrap_servers=kafka.bootstrap, topic=f"{kafka.topic}_json",
                             dlq_topic=f"{kafka.topic}_json.dlq", partitions=kafka.partitions)
    ensure_topics(json_kafka)  # the fixture made the protobuf topic
    json_config = kafka_config.replace(
        kafka=json_kafka, lake={"path": tmp_path / "lake_json"},
        processor={"group_id": f"{kafka_config.processor.group_id}-json"})

    http_port, grpc_port = free_port(), free_port()
    collector = Collector(collector_config(kafka.bootstrap, http_port, grpc_port, kafka.topic, json_kafka.topic),
                          tmp_path)
    readers = [TopicReader(kafka.bootstrap, kafka.topic, "otlp_proto"),
               TopicReader(kafka.bootstrap, json_kafka.topic, "otlp_json")]
    try:
        collector.start(http_port)

        def wait_delivered(expected: Sent) -> None:
            for reader in readers:
                reader.read_until(set(expected.spans), collector)

        sent = send_plan(http_port, grpc_port, wait_delivered)
        wait_delivered(sent)
    finally:
        collector.stop()
        for reader in readers:
            reader.close()
    assert collector.proc.returncode == 0, collector.log_tail()

    n_calls = sum(len(calls) for _, calls in PLAN.values())
    n_roots = collections.Counter(root for root, _ in PLAN.values())
    assert (len(sent.calls), sent.request_spans, len(sent.spans), len(sent.trace_ids)) == (
        n_calls, n_roots["request"], n_calls + n_roots["request"] + n_roots["http"], len(PLAN))
    check_messages(readers[0], sent, sarama_compat_partition)
    check_messages(readers[1], sent, murmur2_partition)
    check_lake(kafka_config, readers[0], sent)
    check_lake(json_config, readers[1], sent)
