"""KafkaSpanExporter against a real broker: forked workers, traces over Kafka's 1 MiB message limit."""

from __future__ import annotations

import os
import signal
import time

import pytest

from costline import contract as c
from costline.config import KafkaConfig
from costline.otlp import decode_request
from costline.collectors import KafkaSpanExporter, Recorder, setup_tracing
from costline.collectors.kafka_exporter import TRUNCATED_ATTRIBUTES

pytestmark = pytest.mark.kafka


def consume(cfg: KafkaConfig, want_spans: int, timeout_s: float = 20.0):
    """[(key, span)] of the topic, until ``want_spans`` were read or the timeout."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(cfg.topic, bootstrap_servers=cfg.bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=500, max_partition_fetch_bytes=4 << 20,
                             fetch_max_bytes=8 << 20)
    got = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < want_spans and time.monotonic() < deadline:
            for m in consumer:
                assert len(m.value) < 1_048_576
                req = decode_request(m.value, dict(m.headers).get(c.HEADER_CONTENT_TYPE, b"").decode())
                got.extend((m.key.decode(), s) for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans)
    finally:
        consumer.close()
    return got


def tenant_of(span):
    return next((kv.value.string_value for kv in span.attributes if kv.key == "costline.tenant"), None)


def emit(rec, tenant, n):
    for _ in range(n):
        with rec.request(task_type="faq", tenant=tenant) as req:
            req.accept()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_prefork_workers_deliver_their_spans_through_their_own_producers(kafka_topics):
    """gunicorn --preload: the master exported (its producer and its I/O thread exist), then forks workers; each
    worker's spans arrive, its provider.force_flush() says so, and it exits right after (no shutdown)."""
    exporter = KafkaSpanExporter(kafka_topics, connect_timeout_s=5.0)
    provider = setup_tracing("app", exporter=exporter, set_global=False)
    rec = Recorder(provider, env={})
    emit(rec, "master", 1)
    assert provider.force_flush(15_000) is True
    pids = []
    for worker in range(2):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the worker
            status = 1
            try:
                signal.signal(signal.SIGALRM, lambda *_: os._exit(3))  # hung
                signal.alarm(30)
                emit(rec, f"worker{worker}", 20)
                flushed = provider.force_flush(15_000)
                status = 0 if flushed and exporter.dropped_spans == 0 else 2
            finally:
                os._exit(status)  # a worker's exit: no atexit, no shutdown
        pids.append(pid)
    statuses = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    emit(rec, "master", 1)  # the master's producer still works
    assert provider.force_flush(15_000) is True
    started = time.monotonic()
    provider.shutdown()
    assert time.monotonic() - started < 5.0
    assert statuses == [0, 0]  # each worker's force_flush() was True: Kafka acknowledged its spans
    got = consume(kafka_topics, 42)
    counts: dict[str, int] = {}
    for _, span in got:
        counts[tenant_of(span)] = counts.get(tenant_of(span), 0) + 1
    assert counts == {"master": 2, "worker0": 20, "worker1": 20}  # none lost, none sent twice


def test_a_trace_with_a_captured_image_over_a_mebibyte_arrives_whole(kafka_topics):
    """OpenLLMetry captured a 1.1 MB base64 image: the request and call spans arrive; the image span arrives cut
    and marked instead of sinking the trace."""
    exporter = KafkaSpanExporter(kafka_topics, connect_timeout_s=5.0)
    provider = setup_tracing("app", exporter=exporter, set_global=False)
    rec = Recorder(provider, env={})
    tracer = provider.get_tracer("opentelemetry.instrumentation.anthropic")
    with rec.request(task_type="faq", tenant="acme") as req:
        with req.call("anthropic", "claude-sonnet-4-6", tier="premium") as call:
            with tracer.start_as_current_span("anthropic.chat") as chat:
                chat.set_attribute("gen_ai.prompt.0.content", "iVBORw0KGgo" + "A" * 1_100_000)
            call.usage(100, 10)
        req.accept()
    assert provider.force_flush(15_000) is True
    provider.shutdown()
    got = consume(kafka_topics, 3)
    assert exporter.dropped_spans == 0 and exporter.truncated_spans == 1
    by_name = {span.name: span for _, span in got}
    assert set(by_name) == {c.SPAN_REQUEST, "chat claude-sonnet-4-6", "anthropic.chat"} and len(got) == 3
    assert len({key for key, _ in got}) == 1
    marker = next(kv.value for kv in by_name["anthropic.chat"].attributes if kv.key == TRUNCATED_ATTRIBUTES)
    assert [v.string_value for v in marker.array_value.values] == ["gen_ai.prompt.0.content"]
