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
