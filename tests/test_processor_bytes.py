"""Buffers are bounded by bytes as well as spans: ``[processor] batch_max_bytes`` commits a partition's
buffer once its messages hold that many bytes (real broker), and the setting is validated."""

from __future__ import annotations

import json
import threading
import time

import pytest
from test_processor_topics import lake_keys, produce, span_keys

from costline.config import Config, load_config
from costline.errors import ConfigError
from costline.processors.processor import Processor
from costline.sim.synth import synthetic_traffic


def test_batch_max_bytes_is_validated_naming_the_key():
    assert load_config(env={"COSTLINE_CONFIG": "/dev/null"}).processor.batch_max_bytes == 64 * 1024 * 1024
    with pytest.raises(ConfigError, match=r"\[processor\] batch_max_bytes"):
        load_config(env={"COSTLINE_CONFIG": "/dev/null", "COSTLINE_PROCESSOR_BATCH_MAX_BYTES": "100"})


@pytest.mark.kafka
def test_a_partition_is_committed_when_its_buffer_reaches_the_byte_budget(kafka_config: Config):
    from kafka import KafkaConsumer

    budget = 16 * 1024
    # neither the span count nor the clock can trigger a flush during this test
    cfg = kafka_config.replace(processor={"batch_max_spans": 10**9, "flush_interval_s": 3600.0,
                                          "batch_max_bytes": budget})
    traces = list(synthetic_traffic(400, seed=71))
    produce(cfg, traces)
    reader = KafkaConsumer(cfg.kafka.topic, bootstrap_servers=cfg.kafka.bootstrap, auto_offset_reset="earliest",
                           consumer_timeout_ms=3000)
    size = {(m.partition, m.offset): len(m.value) for m in reader}
    reader.close()
    assert len(size) == len(traces)

    proc = Processor(cfg)
    runner = threading.Thread(target=proc.run)
    runner.start()
    deadline = time.monotonic() + 120
    while proc.stats.messages < len(traces) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.stop()  # commits what is left, whatever its size
    runner.join(60)
    assert proc.stats.messages == len(traces)
    assert lake_keys(cfg) == span_keys(traces)

    batches: dict[int, list[tuple[int, int]]] = {}
    for m in (cfg.lake.path / "_offsets" / cfg.kafka.topic).rglob("[0-9]*.json"):
        d = json.loads(m.read_text())
        batches.setdefault(d["partition"], []).append((d["first_offset"], d["last_offset"]))
    for partition, ranges in batches.items():
        ranges.sort()
        for i, (first, last) in enumerate(ranges):
            held = sum(size[(partition, o)] for o in range(first, last + 1))
            assert held - size[(partition, last)] < budget, (partition, first, last, held)  # never past it
            if i < len(ranges) - 1:  # committed by the budget, not on shutdown
                assert held >= budget, (partition, first, last, held)
    assert sum(len(r) for r in batches.values()) > len(batches)
