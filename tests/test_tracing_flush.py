"""``provider.force_flush()`` from :func:`setup_tracing` tells whether the exporter delivered (no broker)."""

from __future__ import annotations

import time

from kafka.errors import KafkaTimeoutError
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from costline.config import KafkaConfig
from costline.collectors import KafkaSpanExporter, Recorder, setup_tracing
from costline.collectors.tracing import FlushingBatchSpanProcessor


class Future:
    def __init__(self):
        self.is_done = False
        self.exception = None

    def succeeded(self):
        return self.is_done and self.exception is None


class SlowAckProducer:
    """Takes messages; Kafka acknowledges them only when flush() is called (as kafka-python's flush waits)."""

    def __init__(self):
        self.futures: list[Future] = []
        self.flushes = 0

    def send(self, topic, value=None, key=None, headers=None):
        self.futures.append(Future())
        return self.futures[-1]

    def flush(self, timeout=None):
        self.flushes += 1
        for f in self.futures:
            f.is_done = True

    def close(self, timeout=None):
        pass


def record(provider, n=3):
    rec = Recorder(provider, env={})
    for _ in range(n):
        with rec.request(task_type="faq", tenant="job") as req:
            req.accept()


def test_provider_force_flush_waits_for_kafkas_acknowledgements():
    producer = SlowAckProducer()
    exporter = KafkaSpanExporter(KafkaConfig(bootstrap_servers="k:9092", topic="t"),
                                 producer_factory=lambda **_: producer)
    provider = setup_tracing("job", exporter=exporter, set_global=False)
    record(provider)
    assert provider.force_flush(5_000) is True
    assert producer.flushes >= 1 and len(producer.futures) == 3 and exporter.buffered_spans == 0
    provider.shutdown()


def test_provider_force_flush_is_false_while_kafka_is_down():
    def down(**_settings):
        raise KafkaTimeoutError("Unable to bootstrap")

    exporter = KafkaSpanExporter(KafkaConfig(bootstrap_servers="k:9092", topic="t"), producer_factory=down,
                                 retry_backoff_s=60)
    provider = setup_tracing("job", exporter=exporter, set_global=False)
    record(provider)
    started = time.monotonic()
    assert provider.force_flush(2_000) is False
    assert time.monotonic() - started < 2.0
    assert exporter.buffered_spans == 3
    provider.shutdown()


class Exporter(SpanExporter):
    def __init__(self, flushed):
        self.flushed = flushed
        self.timeouts: list[int] = []
        self.exported = 0

    def export(self, spans):
        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis=30_000):
        self.timeouts.append(timeout_millis)
        if isinstance(self.flushed, Exception):
            raise self.flushed
        return self.flushed


def test_the_exporter_gets_what_is_left_of_the_timeout_and_its_answer_counts():
    for flushed, want in ((True, True), (False, False), (RuntimeError("bug"), False)):
        exporter = Exporter(flushed)
        provider = setup_tracing("job", exporter=exporter, set_global=False)
        record(provider, 2)
        assert provider.force_flush(4_000) is want  # never raises
        assert exporter.exported == 2 and len(exporter.timeouts) == 1 and 0 < exporter.timeouts[0] <= 4_000
        provider.shutdown()


def test_the_remaining_timeout_comes_from_the_injected_clock():
    from opentelemetry.sdk.trace import TracerProvider

    clock = [100.0]

    class Slow(Exporter):
        def export(self, spans):
            clock[0] += 1.5  # the SDK's export took 1.5 s
            return super().export(spans)

    slow = Slow(True)
    processor = FlushingBatchSpanProcessor(slow, now=lambda: clock[0])
    provider = TracerProvider()
    provider.add_span_processor(processor)
    provider.get_tracer("t").start_span("s").end()
    assert processor.force_flush(2_000) is True and slow.timeouts == [500]
    provider.shutdown()
