"""The processor against what production Kafka clusters and producers other than costline's send:
transactional producers (aborted and still-open transactions, commit/abort markers in the log)."""

from __future__ import annotations

import uuid

import pytest
from test_kafka_headers import RawKey, kafka_python_reader  # noqa: F401 - a fixture
from test_processor_kafka import assert_no_duplicates, assert_same_aggregates, expected_tier_hourly, lake_tier_hourly

from costline.config import Config
from costline.processors.processor import Processor
from costline.sim.synth import synthetic_traffic

pytestmark = pytest.mark.kafka


def _spans(traces) -> int:
    return sum(len(ss.spans) for t in traces for rs in t.request.resource_spans for ss in rs.scope_spans)


def test_aborted_and_open_transactions_never_reach_the_lake(kafka_config: Config):
    """A transactional producer's aborted records are not spans; nor, yet, those of a transaction still
    open. Committed transactions land whole, once, past the markers between them."""
    from kafka import KafkaProducer

    topic = kafka_config.kafka.topic
    traces = list(synthetic_traffic(40, seed=23))
    committed_first, aborted, committed_second, pending = traces[:10], traces[10:20], traces[20:30], traces[30:]
    prod = KafkaProducer(bootstrap_servers=kafka_config.kafka.bootstrap, acks="all",
                         transactional_id=f"costline-test-{uuid.uuid4().hex[:8]}")
    prod.init_transactions()
    for group, commit in ((committed_first, True), (aborted, False), (committed_second, True)):
        prod.begin_transaction()
        for t in group:
            prod.send(topic, key=t.trace_id.encode(), value=t.request.SerializeToString())
        prod.flush()
        prod.commit_transaction() if commit else prod.abort_transaction()
    prod.begin_transaction()  # left open while the processor runs
    for t in pending:
        prod.send(topic, key=t.trace_id.encode(), value=t.request.SerializeToString())
    prod.flush()

    landed = committed_first + committed_second
    stats = Processor(kafka_config).run(until_idle=1.5)  # returns: caught up to the last stable offset
    assert (stats.messages, stats.spans, stats.dlq) == (len(landed), _spans(landed), 0)
    assert_same_aggregates(lake_tier_hourly(kafka_config), expected_tier_hourly(landed, kafka_config))

    prod.commit_transaction()
    prod.close()
    stats = Processor(kafka_config).run(until_idle=1.5)  # resumes past the markers: the rest, once
    assert (stats.messages, stats.spans, stats.dlq) == (len(pending), _spans(pending), 0)
    assert_same_aggregates(lake_tier_hourly(kafka_config), expected_tier_hourly(landed + pending, kafka_config))
    assert_no_duplicates(kafka_config)


def test_a_header_key_that_is_not_utf8_loses_nothing(kafka_python_reader: None, kafka_config: Config):
    """A message whose header key is not UTF-8 is read like the Java client reads it (U+FFFD), not an error
    that stops the processor on every start: its spans and every message after it land, and its other
    headers (content-type) are still read."""
    from kafka import KafkaProducer

    topic = kafka_config.kafka.topic
    traces = list(synthetic_traffic(30, seed=29))
    prod = KafkaProducer(bootstrap_servers=kafka_config.kafka.bootstrap, acks="all", linger_ms=0)
    for i, t in enumerate(traces):
        headers = None
        if i in (3, 17):
            headers = [(RawKey(b"x-\xff\xfe-source"), b"\xc3\x28"),
                       ("content-type", b"application/x-protobuf")]
        prod.send(topic, key=t.trace_id.encode(), value=t.request.SerializeToString(), headers=headers)
        if i in (3, 4):
            prod.flush()  # the bad record first in a fetch, and in the middle of one
    prod.flush()
    prod.close()

    stats = Processor(kafka_config).run(until_idle=1.5)
    assert (stats.messages, stats.spans, stats.dlq) == (len(traces), _spans(traces), 0)
    assert_same_aggregates(lake_tier_hourly(kafka_config), expected_tier_hourly(traces, kafka_config))
    assert_no_duplicates(kafka_config)


def _dlq_records(config: Config) -> list:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(config.kafka.dlq_topic, bootstrap_servers=config.kafka.bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=3000, max_partition_fetch_bytes=8 << 20)
    try:
        return list(consumer)
    finally:
        consumer.close()


def test_a_large_undecodable_message_is_dead_lettered_not_a_stop(kafka_config: Config):
    """A producer's compressed batch holds a 3 MB undecodable value (the broker limits the compressed size):
    dead-lettering it uncompressed was over the producer's 1 MiB request limit, and the processor stopped at that
    offset on every start. It is dead-lettered whole (compressed), and the messages after it land."""
    from kafka import KafkaProducer

    traces = list(synthetic_traffic(20, seed=31))
    big = b"not an OTLP export; " * 150_000  # 3.0 MB, compresses to a few kB
    prod = KafkaProducer(bootstrap_servers=kafka_config.kafka.bootstrap, acks="all", compression_type="gzip",
                         max_request_size=8 << 20)
    for t in traces[:10]:
        prod.send(kafka_config.kafka.topic, key=t.trace_id.encode(), value=t.request.SerializeToString())
    prod.send(kafka_config.kafka.topic, key=b"big", value=big).get(timeout=30)
    for t in traces[10:]:
        prod.send(kafka_config.kafka.topic, key=t.trace_id.encode(), value=t.request.SerializeToString())
    prod.flush()
    prod.close()

    stats = Processor(kafka_config).run(until_idle=1.5)
    assert (stats.messages, stats.spans, stats.dlq) == (len(traces) + 1, _spans(traces), 1)
    assert_same_aggregates(lake_tier_hourly(kafka_config), expected_tier_hourly(traces, kafka_config))
    (dead,) = _dlq_records(kafka_config)
    assert (dead.key, dead.value) == (b"big", big)


def test_a_message_the_dlq_topic_cannot_hold_leaves_a_pointer_to_itself(kafka_config: Config):
    """The DLQ topic refuses the record (its max.message.bytes is smaller than the message, even compressed):
    the DLQ gets the message's key and headers with no value, saying why and where the original is, and the
    processor goes on."""
    import os

    from kafka import KafkaProducer
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=kafka_config.kafka.bootstrap)
    try:
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, kafka_config.kafka.dlq_topic,
                                            configs={"max.message.bytes": "65536"})])
    finally:
        admin.close()
    traces = list(synthetic_traffic(10, seed=37))
    junk = os.urandom(200_000)  # incompressible: 200 kB whatever the codec
    prod = KafkaProducer(bootstrap_servers=kafka_config.kafka.bootstrap, acks="all")
    prod.send(kafka_config.kafka.topic, key=b"junk", value=junk, partition=0).get(timeout=30)
    for t in traces:
        prod.send(kafka_config.kafka.topic, key=t.trace_id.encode(), value=t.request.SerializeToString())
    prod.flush()
    prod.close()

    stats = Processor(kafka_config).run(until_idle=1.5)
    assert (stats.messages, stats.spans, stats.dlq) == (len(traces) + 1, _spans(traces), 1)
    (dead,) = _dlq_records(kafka_config)
    headers = dict(dead.headers)
    assert (dead.key, dead.value) == (b"junk", b"")
    assert headers["costline.dlq.source"].decode().endswith("/0/0")
    assert b"200000 bytes" in headers["costline.dlq.value_dropped"]
