"""`costline process` consumes every compression codec Kafka producers use (the OTel Collector's
kafkaexporter among them): gzip, snappy, lz4, zstd — produced with each on a real broker."""

from __future__ import annotations

import pytest
from test_processor_kafka import assert_no_duplicates, assert_same_aggregates, expected_tier_hourly, lake_tier_hourly

from costline.config import Config
from costline.processors.processor import Processor
from costline.sim.synth import synthetic_traffic

pytestmark = pytest.mark.kafka


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_process_consumes_compressed_messages(kafka_config: Config, codec: str):
    from kafka import KafkaProducer

    traces = list(synthetic_traffic(200, seed=11))
    n_spans = sum(len(ss.spans) for t in traces for rs in t.request.resource_spans for ss in rs.scope_spans)
    prod = KafkaProducer(bootstrap_servers=kafka_config.kafka.bootstrap, acks="all", linger_ms=20,
                         compression_type=codec)
    for t in traces:
        prod.send(kafka_config.kafka.topic, key=t.trace_id.encode(), value=t.request.SerializeToString())
    prod.close()
    stats = Processor(kafka_config).run(until_idle=1.5)
    assert (stats.messages, stats.spans, stats.dlq) == (len(traces), n_spans, 0)
    assert_same_aggregates(lake_tier_hourly(kafka_config), expected_tier_hourly(traces, kafka_config))
    assert_no_duplicates(kafka_config)
