"""KafkaSpanExporter and the OTLP/HTTP receiver against a real broker (and a dead one)."""

from __future__ import annotations

import time

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costline import contract as c
from costline.config import CollectorConfig, KafkaConfig
from costline.otlp import decode_request
from costline.collectors import (
    KafkaForwarder,
    KafkaSpanExporter,
    OtlpReceiver,
    Recorder,
    RequestStampingProcessor,
    setup_tracing,
)

from conftest import free_port


def consume(cfg: KafkaConfig, want: int, timeout_s: float = 15.0):
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(cfg.topic, bootstrap_servers=cfg.bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=500)
    got = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < want and time.monotonic() < deadline:
            got.extend(consumer)
    finally:
        consumer.close()
    return got


def spans_of(message):
    req = decode_request(message.value, dict(message.headers).get(c.HEADER_CONTENT_TYPE, b"").decode())
    return [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]


def record_two_requests(provider):
    rec = Recorder(provider, env={})
    for tenant in ("acme", "globex"):
        with rec.request(tenant=tenant, task_type="faq") as req:
            with req.cache_lookup(namespace=tenant) as lk:
                lk.result(hit=False, similarity=0.4)
            with req.call("anthropic", "claude-haiku-4-5", tier="budget") as call:
                call.usage(100, 10)
            req.accept()


@pytest.mark.kafka
def test_kafka_exporter_writes_one_message_per_trace_keyed_by_trace_id(kafka_topics):
    exporter = KafkaSpanExporter(kafka_topics, connect_timeout_s=5.0)
    provider = setup_tracing("faq-bot", exporter=exporter, set_global=False)
    record_two_requests(provider)
    assert provider.force_flush(15_000)
    provider.shutdown()
    messages = consume(kafka_topics, 2)
    assert len(messages) == 2
    for m in messages:
        assert dict(m.headers)[c.HEADER_CONTENT_TYPE] == c.CONTENT_TYPE_PROTOBUF.encode()
        spans = spans_of(m)
        assert len(m.key) == 32 and {s.trace_id.hex() for s in spans} == {m.key.decode()}
        assert sorted(s.name for s in spans) == sorted([c.SPAN_REQUEST, c.SPAN_CACHE_LOOKUP, "chat claude-haiku-4-5"])
    assert exporter.dropped_spans == 0


@pytest.mark.kafka
def test_otlp_http_exporter_to_receiver_to_kafka(kafka_topics):
    forwarder = KafkaForwarder(kafka_topics, produce_timeout_s=10.0, connect_timeout_s=5.0)
    receiver = OtlpReceiver(CollectorConfig(), forwarder, host="127.0.0.1", port=0)
    receiver.start()
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(RequestStampingProcessor())
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=receiver.endpoint, timeout=10)))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    try:
        record_two_requests(provider)
    finally:
        provider.shutdown()
        receiver.shutdown()
    sent = memory.get_finished_spans()
    messages = consume(kafka_topics, 2)
    got = {}
    for m in messages:
        spans = spans_of(m)
        assert {s.trace_id.hex() for s in spans} == {m.key.decode()}
        got.setdefault(m.key.decode(), set()).update(s.span_id.hex() for s in spans)
    want = {}
    for s in sent:
        want.setdefault(f"{s.context.trace_id:032x}", set()).add(f"{s.context.span_id:016x}")
    assert got == want and len(want) == 2


def closed_port_config() -> KafkaConfig:
    return KafkaConfig(bootstrap_servers=f"127.0.0.1:{free_port()}", topic="otlp_spans_dead")


def test_exporter_with_kafka_unreachable_returns_quickly_and_counts_drops(caplog):
    clock = [0.0]
    exporter = KafkaSpanExporter(closed_port_config(), max_buffered_spans=4, connect_timeout_s=0.2,
                                 retry_backoff_s=60, now=lambda: clock[0])
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    record_two_requests(provider)  # 2 traces x 3 spans
    spans = memory.get_finished_spans()
    started = time.monotonic()
    assert exporter.export(spans[:3]) is SpanExportResult.FAILURE
    assert exporter.export(spans[3:]) is SpanExportResult.FAILURE
    assert exporter.force_flush(100) is False
    assert time.monotonic() - started < 3.0
    assert exporter.buffered_spans == 3 and exporter.dropped_spans == 3  # bound of 4: oldest trace dropped
    exporter.shutdown()
    assert exporter.dropped_spans == 6
    assert "dropped" in caplog.text


def test_receiver_answers_503_when_kafka_is_unreachable():
    from http.client import HTTPConnection

    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    forwarder = KafkaForwarder(closed_port_config(), produce_timeout_s=0.5, retry_after_s=3, connect_timeout_s=0.2)
    receiver = OtlpReceiver(CollectorConfig(), forwarder, host="127.0.0.1", port=0)
    port = receiver.start()
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    record_two_requests(provider)
    body = encode_spans(memory.get_finished_spans()).SerializeToString()
    try:
        conn = HTTPConnection("127.0.0.1", port, timeout=10)
        started = time.monotonic()
        conn.request("POST", "/v1/traces", body=body, headers={"Content-Type": "application/x-protobuf"})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 503 and resp.getheader("Retry-After") == "3"
        assert time.monotonic() - started < 5
    finally:
        receiver.shutdown()


def test_an_outage_is_logged_when_it_starts_with_why_then_once_a_minute_and_when_it_ends(caplog):
    """The collector's producer retries every second while Kafka is away: the first failure is a warning and an
    error saying why (found on a thread of its own: a refused login names the keys to check), the retries in the
    next minute are debug lines, then one warning a minute, and one when Kafka answers again."""
    import logging

    from costline.collectors.producer import LazyProducer

    clock = [0.0]
    answers = iter([OSError("NoBrokersAvailable")] * 4 + ["producer"])
    asked: list[str] = []

    def factory(**_settings):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def diagnose(config):
        asked.append(config.bootstrap)
        return "the cluster refused this client's login (check [kafka] sasl_username and sasl_password_env)"

    producer = LazyProducer(KafkaConfig(bootstrap_servers="kafka.internal:9093"), retry_backoff_s=1.0,
                            factory=factory, now=lambda: clock[0], diagnose=diagnose)
    with caplog.at_level(logging.DEBUG, logger="costline.collectors.producer"):
        for t in (0.0, 1.0, 2.0, 61.0, 62.0):
            clock[0] = t
            got = producer.get()
            if producer._explainer is not None:
                producer._explainer.join(5)
    assert got == "producer" and asked == ["kafka.internal:9093"]  # diagnosed once, at the start
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "costline.collectors.producer"]
    assert [level for level, _ in said] == ["WARNING", "ERROR", "DEBUG", "DEBUG", "WARNING", "WARNING"]
    assert "unreachable (OSError: NoBrokersAvailable); retrying every 1.0s" in said[0][1]
    assert said[1][1].endswith("does not answer: the cluster refused this client's login (check [kafka] "
                               "sasl_username and sasl_password_env)")
    assert "(4 tries so far)" in said[4][1]
    assert said[5][1] == "costline: Kafka at kafka.internal:9093 answers again (after 4 failed tries)"

    # connected, then sends time out (a broker restart): counted as one outage the same way, and over at the next
    # acknowledged send; a caller's own line is a debug one unless the producer warned
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="costline.collectors.producer"):
        clock[0] = 100.0
        assert producer.note_failure("KafkaTimeoutError: no acknowledgement") is True
        producer._explainer.join(5)
        clock[0] = 101.0
        assert producer.note_failure("KafkaTimeoutError: no acknowledgement") is False
        producer.note_success()
        producer.note_success()  # nothing to say twice
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "costline.collectors.producer"]
    assert [level for level, _ in said] == ["WARNING", "ERROR", "DEBUG", "WARNING"]
    assert said[3][1].endswith("answers again (after 2 failed tries)") and asked == ["kafka.internal:9093"] * 2
