"""A DLQ topic missing from the cluster: the processor refuses to start, saying which topic and what to do, instead
of blocking for kafka-python's 60 s ``max_block_ms`` (logging hundreds of errors) at the first poison message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from costline.config import Config, KafkaConfig, LakeConfig
from costline.processors import processor as processor_module
from costline.processors.errors import DeadLetterTopicError, ProcessorError
from costline.processors.processor import Processor

SOURCE = "spans_src"
DLQ = "spans_src.dead"


class _Consumer:
    """Just what ``run()`` asks of a KafkaConsumer before and at its first poll. ``topics``: what the cluster's
    metadata shows this client (topic -> partition ids)."""

    def __init__(self, topics: dict[str, set[int]], processor: list[Processor]) -> None:
        self.topics = topics
        self.calls: list[tuple[str, Any]] = []
        self._processor = processor
        self.closed = False

    def partitions_for_topic(self, topic: str) -> set[int]:
        self.calls.append(("partitions_for_topic", topic))
        return set(self.topics.get(topic, set()))

    def subscribe(self, topics: list[str], listener: Any = None) -> None:
        self.calls.append(("subscribe", tuple(topics)))

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict:
        self.calls.append(("poll", None))
        self._processor[0].stop()
        return {}

    def assignment(self) -> set:
        return set()

    def close(self, autocommit: bool = True) -> None:
        self.closed = True


def _run(tmp_path: Path, topics: dict[str, set[int]]) -> tuple[_Consumer, BaseException | None]:
    cfg = Config(kafka=KafkaConfig(bootstrap_servers="kafka.invalid:9092", topic=SOURCE, dlq_topic=DLQ),
                 lake=LakeConfig(path=tmp_path / "lake"))
    holder: list[Processor] = []
    consumer = _Consumer(topics, holder)
    # "beginning": no start-position check (it has its own test); only the DLQ check asks the consumer anything.
    p = Processor(cfg, consumer_factory=lambda **kw: consumer, start="beginning")
    holder.append(p)
    try:
        p.run()
    except ProcessorError as exc:
        return consumer, exc
    return consumer, None


def test_a_missing_dlq_topic_is_refused_before_anything_is_consumed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(processor_module, "DLQ_TOPIC_WAIT_S", 0.0, raising=False)  # no grace wait
    consumer, err = _run(tmp_path, {SOURCE: {0, 1, 2}})
    assert isinstance(err, DeadLetterTopicError), err
    said = str(err)
    assert f"'{DLQ}'" in said and "kafka.invalid:9092" in said, said
    assert "costline kafka up" in said and "[kafka] dlq_topic" in said and "COSTLINE_KAFKA_DLQ_TOPIC" in said, said
    assert "\n" not in said
    assert [c for c in consumer.calls if c[0] in ("subscribe", "poll")] == []  # refused before subscribing
    assert consumer.closed


def test_a_dlq_topic_on_the_cluster_is_checked_and_the_processor_runs(tmp_path: Path) -> None:
    consumer, err = _run(tmp_path, {SOURCE: {0, 1, 2}, DLQ: {0}})
    assert err is None
    # the DLQ topic was looked up, and before the processor subscribed
    asked = consumer.calls.index(("partitions_for_topic", DLQ))
    assert asked < consumer.calls.index(("subscribe", (SOURCE,))) < consumer.calls.index(("poll", None))


def test_the_dlq_producer_blocks_a_bounded_time_on_a_topic_gone_missing(tmp_path: Path) -> None:
    """kafka-python's producer waits ``max_block_ms`` (default 60 000) for a topic's metadata in ``send()``."""
    seen: dict[str, Any] = {}
    p = Processor(Config(lake=LakeConfig(path=tmp_path / "lake")),
                  producer_factory=lambda **kw: seen.update(kw) or object())
    p._dlq_producer()
    assert 0 < seen["max_block_ms"] <= 10_000


@pytest.mark.kafka
def test_a_real_cluster_without_the_dlq_topic_refuses_to_start(kafka_config: Config, tmp_path: Path) -> None:
    """The fixture's cluster has the source topic but not this DLQ topic (its broker does not auto-create topics)."""
    missing = kafka_config.replace(kafka={"dlq_topic": f"{kafka_config.kafka.topic}.no-such-dlq"})
    with pytest.raises(DeadLetterTopicError) as err:
        Processor(missing).run(until_idle=2.0)
    said = str(err.value)
    assert f"'{missing.kafka.dlq_topic}'" in said and "costline kafka up" in said, said
