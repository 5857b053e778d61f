"""The DLQ size that `dlq_growing` watches, read from a real broker."""

from __future__ import annotations

import pytest

from costline.alerts import kafka_dlq_counter
from costline.config import Config

pytestmark = pytest.mark.kafka


def test_dlq_counter_counts_the_messages_in_the_dead_letter_topic(kafka_config: Config) -> None:
    from kafka import KafkaProducer

    count = kafka_dlq_counter(kafka_config.kafka)
    assert count() == 0
    producer = KafkaProducer(bootstrap_servers=kafka_config.kafka.bootstrap, acks="all")
    try:
        for i in range(3):
            producer.send(kafka_config.kafka.dlq_topic, key=b"k", value=b"garbage %d" % i,
                          headers=[("costline.dlq.reason", b"not OTLP")]).get(timeout=10)
    finally:
        producer.close()
    assert count() == 3


def test_dlq_counter_of_a_topic_that_does_not_exist_is_zero(kafka_config: Config) -> None:
    missing = kafka_config.replace(kafka={"dlq_topic": "no-such-topic.dlq"})
    assert kafka_dlq_counter(missing.kafka)() == 0
