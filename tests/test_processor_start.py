"""A fresh lake on a consumer group that already committed offsets is refused with the flags that
decide where to start (--from-beginning / --from-committed), instead of silently skipping history."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_processor_topics import lake_keys, produce, span_keys

from costline.config import Config
from costline.processors.errors import StartPositionError
from costline.processors.processor import Processor
from costline.sim.synth import synthetic_traffic

pytestmark = pytest.mark.kafka

#: ``run(until_idle=...)`` of a processor whose records were all produced before it starts: it exits only once caught
#: up to the end offsets, so a longer idle wait would only add to the test's time.
IDLE_S = 0.5


def test_a_fresh_lake_on_a_consumed_group_needs_a_flag(kafka_config: Config, tmp_path: Path):
    first = list(synthetic_traffic(120, seed=61))
    produce(kafka_config, first)
    Processor(kafka_config).run(until_idle=IDLE_S)  # the group commits its offsets
    assert lake_keys(kafka_config) == span_keys(first)
    _commit_group_at_end(kafka_config)  # the processor's mirror is best effort: make the premise certain

    fresh = kafka_config.replace(lake={"path": tmp_path / "fresh-lake"})
    with pytest.raises(StartPositionError, match="--from-beginning.*--from-committed"):
        Processor(fresh).run(until_idle=1.5)

    env = dict(os.environ, COSTLINE_CONFIG=os.devnull, KAFKA_BOOTSTRAP_SERVERS=fresh.kafka.bootstrap,
               COSTLINE_KAFKA_TOPIC=fresh.kafka.topic, COSTLINE_KAFKA_DLQ_TOPIC=fresh.kafka.dlq_topic,
               COSTLINE_LAKE_PATH=str(fresh.lake.path), COSTLINE_PROCESSOR_GROUP_ID=fresh.processor.group_id)
    cli = subprocess.run([str(Path(sys.executable).with_name("costline")), "process", "--until-idle", "1"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 2 and "--from-beginning" in cli.stderr and "skip" in cli.stderr, cli.stderr

    # --from-committed: the group's offsets are accepted; only what arrives later is read
    later = list(synthetic_traffic(40, seed=62))
    produce(kafka_config, later)
    committed = kafka_config.replace(lake={"path": tmp_path / "committed-lake"})
    Processor(committed, start="committed").run(until_idle=IDLE_S)
    assert lake_keys(committed) == span_keys(later)

    # --from-beginning: the whole topic, whatever the group committed
    Processor(fresh, start="beginning").run(until_idle=IDLE_S)
    assert lake_keys(fresh) == span_keys(first) | span_keys(later)
    # and once the lake has its manifests, no flag is needed
    assert Processor(fresh).run(until_idle=1.0).messages == 0


def _commit_group_at_end(config: Config) -> None:
    """Commit the processor's group at the end of every partition, as its Kafka mirror does when the
    broker answers in time (on a loaded machine that mirror may miss, and this test is about the lake)."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    consumer = KafkaConsumer(bootstrap_servers=config.kafka.bootstrap, group_id=config.processor.group_id,
                             enable_auto_commit=False)
    try:
        tps = [TopicPartition(config.kafka.topic, p) for p in consumer.partitions_for_topic(config.kafka.topic)]
        ends = consumer.end_offsets(tps)
        consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in ends.items() if o})
    finally:
        consumer.close()


def test_a_fresh_group_needs_no_flag(kafka_config: Config):
    traces = list(synthetic_traffic(60, seed=63))
    produce(kafka_config, traces)
    Processor(kafka_config).run(until_idle=IDLE_S)
    assert lake_keys(kafka_config) == span_keys(traces)


def test_until_idle_commits_what_is_buffered_instead_of_waiting_for_the_flush_interval(kafka_config: Config):
    """`costline process --until-idle 2` with every span still buffered (flush_interval_s an hour, no size limit
    reached) commits them once idle and exits, saying first what it reads. The 120 s limit is no timing: the old
    processor waited for flush_interval_s (3600 s) before its buffers counted as caught up."""
    traces = list(synthetic_traffic(60, seed=64))
    produce(kafka_config, traces)
    env = dict(os.environ, COSTLINE_CONFIG=os.devnull, KAFKA_BOOTSTRAP_SERVERS=kafka_config.kafka.bootstrap,
               COSTLINE_KAFKA_TOPIC=kafka_config.kafka.topic, COSTLINE_KAFKA_DLQ_TOPIC=kafka_config.kafka.dlq_topic,
               COSTLINE_LAKE_PATH=str(kafka_config.lake.path),
               COSTLINE_PROCESSOR_GROUP_ID=kafka_config.processor.group_id,
               COSTLINE_PROCESSOR_FLUSH_INTERVAL_S="3600", COSTLINE_PROCESSOR_BATCH_MAX_SPANS="1000000")
    cli = subprocess.run([str(Path(sys.executable).with_name("costline")), "process", "--until-idle", "2"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert kafka_config.kafka.partitions == 6  # the session's topics (tests/conftest.py), all this one member's
    assert f"reading 6 partitions of {kafka_config.kafka.topic}; exits after 2 s idle" in cli.stderr.splitlines()
    assert lake_keys(kafka_config) == span_keys(traces)
