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


# -- a trace over the producer's max_request_size: split, then cut ------------------------------------------------
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402

from costline.collectors.kafka_exporter import TRUNCATED_ATTRIBUTES  # noqa: E402


def sized_exporter(max_request_size, **options):
    producer = FakeProducer()
    exporter = KafkaSpanExporter(KafkaConfig(bootstrap_servers="k:9092", topic="t"),
                                 producer_config={} if max_request_size is None else {"max_request_size": max_request_size},
                                 producer_factory=lambda **_: producer, **options)
    return exporter, producer


def sent_spans(producer):
    """[(key, span)] of every message sent, each message checked to be one ExportTraceServiceRequest."""
    out = []
    for _, key, value in producer.sent:
        request = ExportTraceServiceRequest.FromString(value)
        for rs in request.resource_spans:
            assert rs.resource.attributes  # the resource (service.name...) goes with every part
            for ss in rs.scope_spans:
                out.extend((key.decode(), span) for span in ss.spans)
    return out


def attrs(span):
    return {kv.key: kv.value for kv in span.attributes}


def one_trace(big: dict[str, object], small_spans=3, events=None):
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("openllmetry-like")
    with tracer.start_as_current_span("costline.request") as root:
        root.set_attribute("costline.tenant", "acme")
        for i in range(small_spans):
            tracer.start_span(f"small{i}").end()
        with tracer.start_as_current_span("anthropic.chat") as chat:
            for key, value in big.items():
                chat.set_attribute(key, value)
            for name, attributes in (events or {}).items():
                chat.add_event(name, attributes)
    return memory.get_finished_spans()


def test_a_trace_over_the_message_limit_is_split_and_its_huge_span_cut_not_dropped():
    limit = 40_000
    exporter, producer = sized_exporter(limit)
    spans = one_trace({"gen_ai.prompt.0.content": "é" * 60_000, "gen_ai.prompt.1.content": "small",
                       "gen_ai.usage.input_tokens": 7})
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    key = f"{spans[0].context.trace_id:032x}"
    assert len(producer.sent) >= 2
    assert all(len(value) <= exporter.max_message_bytes < limit for _, _, value in producer.sent)
    got = sent_spans(producer)
    assert {k for k, _ in got} == {key}  # same key: the trace stays on one partition
    assert sorted(s.span_id for _, s in got) == sorted(s.context.span_id.to_bytes(8, "big") for s in spans)
    by_name = {s.name: s for _, s in got}
    chat = attrs(by_name["anthropic.chat"])
    assert [v.string_value for v in chat[TRUNCATED_ATTRIBUTES].array_value.values] == ["gen_ai.prompt.0.content"]
    cut = chat["gen_ai.prompt.0.content"].string_value
    assert 10_000 < len(cut) < 60_000 and set(cut) == {"é"}  # cut on a character boundary
    assert chat["gen_ai.prompt.1.content"].string_value == "small" and chat["gen_ai.usage.input_tokens"].int_value == 7
    assert TRUNCATED_ATTRIBUTES not in attrs(by_name["costline.request"])
    assert attrs(by_name["costline.request"])["costline.tenant"].string_value == "acme"
    assert exporter.dropped_spans == 0 and exporter.truncated_spans == 1


def test_a_trace_of_many_medium_spans_is_split_without_cutting_anything():
    exporter, producer = sized_exporter(30_000)
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("root"):
        for i in range(12):
            with tracer.start_as_current_span(f"call{i}") as s:
                s.set_attribute("gen_ai.completion.0.content", str(i) * 5_000)
    spans = memory.get_finished_spans()
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert 2 <= len(producer.sent) <= 4  # packed, not one message per span
    got = sent_spans(producer)
    assert len(got) == 13 and exporter.truncated_spans == 0 and exporter.dropped_spans == 0
    assert all(TRUNCATED_ATTRIBUTES not in attrs(s) for _, s in got)
    assert all(len(value) <= 30_000 for _, _, value in producer.sent)


def test_event_attributes_and_arrays_are_cut_too():
    exporter, producer = sized_exporter(20_000)
    spans = one_trace({"gen_ai.input.messages": ("x" * 15_000, "y" * 15_000)},
                      events={"gen_ai.user.message": {"content": "z" * 30_000}})
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    chat = next(s for _, s in sent_spans(producer) if s.name == "anthropic.chat")
    names = {v.string_value for v in attrs(chat)[TRUNCATED_ATTRIBUTES].array_value.values}
    assert "event:gen_ai.user.message/content" in names
    assert chat.ByteSize() < 20_000 and exporter.truncated_spans == 1 and exporter.dropped_spans == 0


def test_a_span_that_cannot_be_cut_small_enough_is_dropped_alone_and_counted(caplog):
    exporter, producer = sized_exporter(20_000)
    # 120 events with 200-character names and no attributes: nothing that can be cut
    spans = one_trace({"n": 1}, events={f"{i:03d}" + "e" * 197: {} for i in range(120)})
    assert exporter.export(spans) is SpanExportResult.FAILURE
    assert sorted(s.name for _, s in sent_spans(producer)) == ["costline.request", "small0", "small1", "small2"]
    assert exporter.dropped_spans == 1 and "dropped" in caplog.text


def test_the_default_limit_is_kafkas_one_mebibyte_less_headroom():
    exporter, producer = sized_exporter(None)  # not set: kafka-python's default
    assert 1_000_000 < exporter.max_message_bytes < 1_048_576
    spans = one_trace({"gen_ai.prompt.0.content": "A" * 1_100_000})  # a base64 image captured whole
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert len(sent_spans(producer)) == 5 and exporter.dropped_spans == 0
    assert all(len(value) <= exporter.max_message_bytes for _, _, value in producer.sent)



def test_an_earlier_cut_stays_named_and_the_warning_is_not_repeated_per_trace(caplog):
    import logging

    exporter, producer = sized_exporter(20_000)
    with caplog.at_level(logging.DEBUG, logger="costline.collectors.kafka_exporter"):
        for _ in range(3):
            exporter.export(one_trace({TRUNCATED_ATTRIBUTES: ("gen_ai.output.messages",),
                                       "gen_ai.input.messages": "m" * 30_000}))
    chats = [s for _, s in sent_spans(producer) if s.name == "anthropic.chat"]
    assert len(chats) == 3 and exporter.truncated_spans == 3
    for chat in chats:
        names = [v.string_value for v in attrs(chat)[TRUNCATED_ATTRIBUTES].array_value.values]
        assert names == ["gen_ai.output.messages", "gen_ai.input.messages"]
    over = [r for r in caplog.records if "over the Kafka message limit" in r.getMessage()]
    assert [r.levelname for r in over] == ["WARNING", "DEBUG", "DEBUG"]  # all within a minute


# -- the buffer's byte bound ------------------------------------------------------------------------------------
def test_the_buffer_is_bounded_in_bytes_oldest_dropped_first(caplog):
    clock = [0.0]

    def down(**_):
        raise KafkaTimeoutError("Unable to bootstrap")

    exporter = KafkaSpanExporter(KafkaConfig(bootstrap_servers="k:9092", topic="t"), max_buffered_bytes=1_000_000,
                                 retry_backoff_s=60, producer_factory=down, now=lambda: clock[0])
    traces_sent = []
    for i in range(10):  # ten traces of ~200 kB each, Kafka down
        spans = one_trace({"gen_ai.prompt.0.content": f"{i}" * 200_000}, small_spans=0)
        traces_sent.append(f"{spans[0].context.trace_id:032x}")
        exporter.export(spans)
    assert exporter.buffered_bytes <= 1_000_000
    assert exporter.buffered_spans == 8 and exporter.dropped_spans == 12  # 4 traces of 2 spans kept
    assert [m.key for m in exporter._pending] == traces_sent[-4:]  # the newest kept
    assert "dropped the" in caplog.text


def test_the_byte_bound_counts_messages_handed_over_but_not_acknowledged():
    exporter, producer = sized_exporter(None, max_buffered_bytes=700_000)
    producer.outcomes = [FakeFuture(done=False) for _ in range(4)]  # handed over, never acknowledged
    for i in range(4):  # ~200 kB each
        exporter.export(one_trace({"gen_ai.prompt.0.content": f"{i}" * 200_000}, small_spans=0))
    assert len(producer.sent) == 3  # in flight: cannot be taken back; the fourth could not be held
    assert exporter.dropped_spans == 2 and exporter.buffered_spans == 6 and exporter.buffered_bytes <= 700_000


def test_max_buffered_bytes_must_be_positive():
    with pytest.raises(ValueError, match="max_buffered_bytes"):
        KafkaSpanExporter(KafkaConfig(bootstrap_servers="k:9092"), max_buffered_bytes=0)


# -- fork safety (gunicorn --preload, Celery prefork, multiprocessing) ---------------------------------------------
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import threading  # noqa: E402
import traceback  # noqa: E402


class RecordingProducer(FakeProducer):
    def __init__(self, name):
        super().__init__()
        self.name = name
        self.closed = 0

    def close(self, timeout=None):
        self.closed += 1


def forking_exporter():
    made: list[RecordingProducer] = []

    def factory(**_settings):
        made.append(RecordingProducer(f"producer{len(made)}"))
        return made[-1]

    exporter = KafkaSpanExporter(KafkaConfig(bootstrap_servers="k:9092", topic="t"), producer_factory=factory)
    return exporter, made


def in_child(work):
    """``work()`` in a forked child (20 s at most: a deadlock fails the test); its JSON-able result."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        status = 1
        try:
            os.close(read)
            signal.signal(signal.SIGALRM, lambda *_: os._exit(3))  # hung (a lock held by a thread gone)
            signal.alarm(20)
            try:
                result = work()
            except BaseException:
                result = {"error": traceback.format_exc()}
            os.write(write, json.dumps(result).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child hung or died"
    result = json.loads(data)
    assert "error" not in result, result.get("error")
    return result


def keys_of(spans):
    return sorted({f"{s.context.trace_id:032x}" for s in spans})


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_child_sends_its_spans_with_a_producer_of_its_own_and_leaves_the_parents_alone():
    exporter, made = forking_exporter()
    parent_traces = traces(2)
    unacked = FakeFuture(done=False)  # the parent's first message: handed over, not yet acknowledged
    exporter.export(traces(1)[:0])  # nothing: no producer yet
    assert made == []
    exporter._producer.get()  # the parent connected...
    made[0].outcomes = [unacked]
    exporter.export(parent_traces[:2])  # ...one trace handed over, not acknowledged
    made[0].send_errors = [KafkaTimeoutError("Failed to update metadata")]
    exporter.export(parent_traces[2:])  # ...one still waiting to be handed over
    assert exporter.buffered_spans == 4 and len(made[0].sent) == 1
    # a thread of the parent's holds both locks at the fork (an export in progress)
    held, release = threading.Event(), threading.Event()

    def busy():
        with exporter._lock, exporter._producer._lock:
            held.set()
            release.wait(30)

    thread = threading.Thread(target=busy, daemon=True)
    thread.start()
    held.wait(5)
    child_traces = traces(2)

    def child():
        assert exporter.buffered_spans == 0  # the parent's messages are the parent's
        assert exporter.export(child_traces) is SpanExportResult.SUCCESS
        assert exporter.force_flush(1000) is True
        exporter.shutdown()
        return {"producers": [p.name for p in made], "sent": sorted(k.decode() for _, k, _ in made[-1].sent),
                "inherited": {"sent": len(made[0].sent), "flushed": made[0].flushed, "closed": made[0].closed},
                "dropped": exporter.dropped_spans}

    try:
        got = in_child(child)
    finally:
        release.set()
        thread.join(5)
    assert got["producers"] == ["producer0", "producer1"]  # its own producer
    assert got["sent"] == keys_of(child_traces)  # its spans, and none of the parent's again
    assert got["inherited"] == {"sent": 1, "flushed": 0, "closed": 0}  # the parent's producer untouched
    assert got["dropped"] == 0
    # the parent goes on with its producer and its buffer
    assert len(made) == 1 and exporter.buffered_spans == 4
    unacked.is_done = True
    assert exporter.force_flush(1000) is True
    assert sorted(k.decode() for _, k, _ in made[0].sent) == keys_of(parent_traces)
    exporter.shutdown()
    assert made[0].closed == 1 and exporter.dropped_spans == 0


def test_a_fork_the_hook_missed_is_caught_by_the_pid_check(monkeypatch):
    exporter, made = forking_exporter()
    made_first = traces(1)
    exporter._producer.get()
    made[0].outcomes = [FakeFuture(done=False)]
    exporter.export(made_first)
    real = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: real + 1)  # as in a child forked outside os.fork
    later = traces(1)
    assert exporter.buffered_spans == 0
    assert exporter.export(later) is SpanExportResult.SUCCESS
    assert len(made) == 2 and [k.decode() for _, k, _ in made[1].sent] == keys_of(later)
    exporter.shutdown()
    assert made[0].closed == 0 and made[0].flushed == 0 and made[1].closed == 1
