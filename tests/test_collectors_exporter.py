"""KafkaSpanExporter buffering and retry logic with a fake producer (no broker)."""

from __future__ import annotations

import pytest
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError, NotLeaderForPartitionError
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costline.config import KafkaConfig
from costline.collectors import KafkaSpanExporter


class FakeFuture:
    def __init__(self, error=None, done=True):
        self.is_done = done
        self.exception = error

    def succeeded(self):
        return self.is_done and self.exception is None


class FakeProducer:
    """send() raises the queued errors first, then returns futures from ``outcomes`` (default: ok)."""

    def __init__(self):
        self.send_errors: list[Exception] = []
        self.outcomes: list[FakeFuture] = []
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.flushed = 0

    def send(self, topic, value=None, key=None, headers=None):
        if self.send_errors:
            raise self.send_errors.pop(0)
        self.sent.append((topic, key, value))
        return self.outcomes.pop(0) if self.outcomes else FakeFuture()

    def flush(self, timeout=None):
        self.flushed += 1

    def close(self, timeout=None):
        pass


def traces(n):
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t")
    for i in range(n):
        with tracer.start_as_current_span(f"root{i}"):
            tracer.start_span(f"child{i}").end()
    return memory.get_finished_spans()


@pytest.fixture
def make():
    def make(max_buffered_spans=100, fail_connect=0):
        producer = FakeProducer()
        attempts = [0]

        def factory(**settings):
            attempts[0] += 1
            if attempts[0] <= fail_connect:
                raise KafkaTimeoutError("Unable to bootstrap")
            assert settings["acks"] == "all"
            return producer

        clock = [0.0]
        exporter = KafkaSpanExporter(KafkaConfig(bootstrap_servers="k:9092", topic="t"),
                                     max_buffered_spans=max_buffered_spans, retry_backoff_s=10,
                                     producer_factory=factory, now=lambda: clock[0])
        return exporter, producer, clock, attempts

    return make


def test_one_message_per_trace_keyed_by_trace_id(make):
    exporter, producer, _, _ = make()
    spans = traces(3)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert sorted(k.decode() for _, k, _ in producer.sent) == sorted({f"{s.context.trace_id:032x}" for s in spans})


def test_buffered_while_unreachable_then_sent_after_backoff(make):
    exporter, producer, clock, attempts = make(fail_connect=1)
    assert exporter.export(traces(2)) is SpanExportResult.FAILURE
    assert exporter.export(traces(1)) is SpanExportResult.FAILURE  # still backing off: no new attempt
    assert attempts[0] == 1 and exporter.buffered_spans == 6
    clock[0] = 11
    assert exporter.force_flush(1000) is True
    assert len(producer.sent) == 3 and exporter.buffered_spans == 0 and exporter.dropped_spans == 0


def test_metadata_timeout_on_send_keeps_messages_for_the_next_export(make):
    exporter, producer, _, _ = make()
    producer.send_errors = [KafkaTimeoutError("Failed to update metadata")]
    assert exporter.export(traces(2)) is SpanExportResult.FAILURE
    assert producer.sent == [] and exporter.buffered_spans == 4
    assert exporter.export(traces(1)) is SpanExportResult.SUCCESS
    assert len(producer.sent) == 3


def test_failed_delivery_is_retried_and_fatal_refusal_is_dropped(make):
    exporter, producer, _, _ = make()
    producer.outcomes = [FakeFuture(NotLeaderForPartitionError()), FakeFuture(MessageSizeTooLargeError())]
    exporter.export(traces(2))
    assert exporter.force_flush(1000) is True
    assert len(producer.sent) == 3  # the retriable one was sent again
    assert exporter.dropped_spans == 2


def test_bound_drops_oldest_and_counts(make):
    exporter, _, _, _ = make(max_buffered_spans=5, fail_connect=99)
    for _ in range(4):
        exporter.export(traces(1))  # 2 spans each
    assert exporter.buffered_spans == 4 and exporter.dropped_spans == 4
    exporter.shutdown()
    assert exporter.dropped_spans == 8
    assert exporter.export(traces(1)) is SpanExportResult.FAILURE  # after shutdown


def test_never_raises_from_export_even_if_producer_breaks(make):
    exporter, producer, _, _ = make()
    producer.send_errors = [RuntimeError("bug in client")]
    assert exporter.export(traces(1)) is SpanExportResult.FAILURE
    assert exporter.dropped_spans == 2 and exporter.buffered_spans == 0
    exporter.shutdown()
