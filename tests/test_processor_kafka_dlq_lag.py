"""With a real broker: a null header value on a message to dead-letter, and the group's committed offset behind a
transactional producer (see test_processor_dlq_headers.py and test_processor_offsets_mirror.py for the details)."""

from __future__ import annotations

import uuid

import pytest
from test_processor_kafka import assert_no_duplicates

from costline import contract as c
from costline.config import Config
from costline.lake import open_lake
from costline.processors.processor import HEADER_DLQ_NULL_HEADERS, Processor
from costline.sim.synth import synthetic_traffic

pytestmark = pytest.mark.kafka

#: A header value the patched producer writes as null on the wire (as Java's ``new RecordHeader(k, null)`` does).
NULL = b"\x00costline-test-null\x00"


@pytest.fixture
def null_header_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let kafka-python's producer write a null header value: a value of :data:`NULL` goes as null."""
    from kafka.record.default_records import DefaultRecordBatchBuilder

    append = DefaultRecordBatchBuilder.append

    def with_nulls(self, offset, timestamp, key, value, headers, *args, **kwargs):
        headers = [(k, None if v == NULL else v) for k, v in headers]
        return append(self, offset, timestamp, key, value, headers, *args, **kwargs)

    monkeypatch.setattr(DefaultRecordBatchBuilder, "append", with_nulls)


def _dlq_records(config: Config) -> list:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(config.kafka.dlq_topic, bootstrap_servers=config.kafka.bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=3000)
    try:
        return list(consumer)
    finally:
        consumer.close()


def test_a_message_to_dead_letter_with_a_null_header_value_does_not_stop_the_partition(
        null_header_values: None, kafka_config: Config):
    from kafka import KafkaProducer

    topic = kafka_config.kafka.topic
    traces = list(synthetic_traffic(6, seed=5))
    prod = KafkaProducer(bootstrap_servers=kafka_config.kafka.bootstrap, acks="all")
    for t in traces[:3]:
        prod.send(topic, key=t.trace_id.encode(), value=t.request.SerializeToString(), partition=0)
    prod.send(topic, value=b"\x99not otlp at all", headers=[("b3", NULL), ("traceparent", b"00-x")], partition=0)
    for t in traces[3:]:
        prod.send(topic, key=t.trace_id.encode(), value=t.request.SerializeToString(), partition=0)
    prod.flush()
    prod.close()

    stats = Processor(kafka_config).run(until_idle=1.5)  # raised DeadLetterError here, on every start
    assert (stats.messages, stats.dlq) == (7, 1)
    con = open_lake(kafka_config)
    try:
        assert con.execute("SELECT count(DISTINCT trace_id) FROM requests_raw").fetchone()[0] == len(traces)
    finally:
        con.close()
    (dead,) = _dlq_records(kafka_config)
    assert dead.value == b"\x99not otlp at all"
    headers = dict(dead.headers)
    assert (headers["b3"], headers["traceparent"]) == (b"", b"00-x")
    assert headers[HEADER_DLQ_NULL_HEADERS] == b"b3"
    assert headers[c.HEADER_DLQ_SOURCE] == f"{topic}/0/3".encode()
    assert_no_duplicates(kafka_config)


def test_the_committed_offset_reaches_the_log_end_behind_a_transactional_producer(kafka_config: Config):
    """Partition 0: offsets 0-9 committed records, 10 the commit marker, 11-20 aborted records, 21 the abort
    marker: nothing is left to read, so the lag is 0 (it was 12 for good). Partition 1 holds only an aborted
    transaction: the lake has no manifest for it, so Kafka's offset is left alone there and the next start is not
    refused for having "skipped" it."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    topic = kafka_config.kafka.topic
    traces = list(synthetic_traffic(25, seed=7))
    prod = KafkaProducer(bootstrap_servers=kafka_config.kafka.bootstrap, acks="all",
                         transactional_id=f"costline-test-{uuid.uuid4().hex[:8]}")
    prod.init_transactions()
    for group, partition, commit in ((traces[:10], 0, True), (traces[10:20], 0, False), (traces[20:], 1, False)):
        prod.begin_transaction()
        for t in group:
            prod.send(topic, value=t.request.SerializeToString(), partition=partition)
        prod.flush()
        prod.commit_transaction() if commit else prod.abort_transaction()
    prod.close()

    stats = Processor(kafka_config).run(until_idle=1.5)
    assert (stats.messages, stats.dlq) == (10, 0)

    p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    check = KafkaConsumer(bootstrap_servers=kafka_config.kafka.bootstrap, group_id=kafka_config.processor.group_id,
                          enable_auto_commit=False, isolation_level="read_committed")
    try:
        ends = check.end_offsets([p0, p1])
        assert ends == {p0: 22, p1: 6}  # by hand: records, then one marker per transaction
        assert check.committed(p0) == 22
        assert check.committed(p1) is None
    finally:
        check.close()

    stats = Processor(kafka_config).run(until_idle=1.5)  # starts (no refusal), reads nothing again
    assert (stats.messages, stats.commits) == (0, 0)
    assert_no_duplicates(kafka_config)
