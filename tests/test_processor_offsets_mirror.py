"""Kafka's committed offset follows the consumer past offsets that hold no record (no broker: the real Processor
with a consumer stand-in).

A read_committed consumer never returns a transaction's commit/abort markers nor its aborted records, but each
takes an offset. The processor mirrored only "last record handled + 1" to Kafka, so behind a transactional
producer the group's committed offset never reached the log end: lag dashboards showed a backlog for good. Now,
at most every ``flush_interval_s`` (and on shutdown), a partition with nothing buffered and a lake manifest has
the consumer's position mirrored; never one with a record not yet in the lake, never one the lake has no manifest
for (the start check compares Kafka's offset with the partition's first), never one that is not ours.
"""

from __future__ import annotations

import pytest
from kafka import TopicPartition

from costline.config import Config, LakeConfig, ProcessorConfig
from costline.processors.processor import Processor
from costline.sim.synth import synthetic_traffic

INTERVAL = 0.5


class _Consumer:
    """What the processor asks of kafka-python's KafkaConsumer here; ``commits`` records each commit."""

    def __init__(self) -> None:
        self.assigned: set = set()
        self.positions: dict = {}
        self.commits: list[dict[int, int]] = []

    def assignment(self):
        return set(self.assigned)

    def position(self, tp, timeout_ms=None):
        return self.positions[tp]

    def seek(self, tp, offset):
        self.positions[tp] = offset

    def seek_to_beginning(self, *tps):
        for tp in tps:
            self.positions[tp] = 0

    def resume(self, *tps):
        pass

    def commit(self, offsets, timeout_ms=None):
        self.commits.append({tp.partition: o.offset for tp, o in offsets.items()})


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def setup(tmp_path):
    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"), processor=ProcessorConfig(flush_interval_s=INTERVAL))
    clock = _Clock()
    p = Processor(cfg, now=clock)
    p.lake.init()
    consumer = p._consumer = _Consumer()
    return p, consumer, clock


def _assign(p: Processor, consumer: _Consumer, partition: int) -> TopicPartition:
    tp = TopicPartition(p.topic, partition)
    consumer.assigned.add(tp)
    p._claim(tp)
    return tp


def _read(p: Processor, consumer: _Consumer, tp: TopicPartition, offsets, position: int, clock: _Clock) -> None:
    """Handle records at ``offsets`` as one poll returning them would, the position then at ``position``."""
    traces = synthetic_traffic(len(offsets), seed=len(offsets) + offsets[0])
    for offset, t in zip(offsets, traces):
        p.handle(tp.partition, offset, t.trace_id.encode(), t.request.SerializeToString(), None, clock.t)
    consumer.positions[tp] = position


def test_the_position_past_transaction_markers_is_mirrored_once_flushed(setup):
    """Offsets 0-9 committed records, 10 a commit marker, 11-20 aborted records, 21 the abort marker: the lake
    holds 0-9 and Kafka's committed offset is 22, the log end (it stayed at 10: a lag of 12 for good)."""
    p, consumer, clock = setup
    tp = _assign(p, consumer, 0)
    _read(p, consumer, tp, list(range(10)), 22, clock)
    p.flush_partition(0)
    p._commit_to_kafka()
    assert consumer.commits == [{0: 22}]
    assert p.lake.recover(p.topic, 0)[0] == 10  # the lake still says where processing resumes


def test_a_position_is_never_mirrored_past_a_record_not_yet_in_the_lake(setup):
    p, consumer, clock = setup
    tp = _assign(p, consumer, 0)
    _read(p, consumer, tp, list(range(10)), 12, clock)
    p.flush_partition(0)
    p._commit_to_kafka()
    assert consumer.commits == [{0: 12}]
    _read(p, consumer, tp, [12, 13], 16, clock)  # buffered, not in the lake
    for _ in range(3):
        clock.t += INTERVAL
        p._commit_to_kafka()
    assert consumer.commits == [{0: 12}]
    p.flush_partition(0)
    clock.t += INTERVAL
    p._commit_to_kafka()
    assert consumer.commits == [{0: 12}, {0: 16}]


def test_the_extra_commit_comes_at_most_every_flush_interval_and_only_when_the_position_moved(setup):
    p, consumer, clock = setup
    tp = _assign(p, consumer, 0)
    _read(p, consumer, tp, list(range(5)), 5, clock)
    p.flush_partition(0)
    p._commit_to_kafka()
    assert consumer.commits == [{0: 5}]
    consumer.positions[tp] = 7  # a marker, then an aborted record, skipped by the consumer
    clock.t += INTERVAL / 2
    p._commit_to_kafka()
    assert consumer.commits == [{0: 5}]  # not yet
    clock.t += INTERVAL / 2
    p._commit_to_kafka()
    assert consumer.commits == [{0: 5}, {0: 7}]
    for _ in range(4):  # the position did not move: nothing to commit
        clock.t += INTERVAL
        p._commit_to_kafka()
    assert consumer.commits == [{0: 5}, {0: 7}]
    consumer.positions[tp] = 9
    p._commit_to_kafka(final=True)  # shutdown: now, whatever the cadence
    assert consumer.commits == [{0: 5}, {0: 7}, {0: 9}]


def test_a_partition_the_lake_has_no_manifest_for_keeps_kafkas_offset(setup):
    """Only aborted transactions in it: nothing reaches the lake. Committing the position there would make the next
    start refuse ("the group committed past a partition the lake has no offsets for") a lake that misses nothing."""
    p, consumer, clock = setup
    tp = _assign(p, consumer, 1)
    consumer.positions[tp] = 11
    clock.t += INTERVAL
    p._commit_to_kafka(final=True)
    assert consumer.commits == []


def test_a_claimed_partition_with_a_manifest_mirrors_the_lake_even_when_idle(setup):
    p, consumer, clock = setup
    tp = _assign(p, consumer, 0)
    _read(p, consumer, tp, list(range(3)), 3, clock)
    p.flush_partition(0)
    p._on_revoked([tp])  # handed to another member, then back
    consumer.assigned.clear()
    p._commit_to_kafka(final=True)
    assert consumer.commits == []  # not ours meanwhile: nothing committed for it
    consumer.positions[tp] = 999  # kafka-python's in-memory position from before: the claim seeks to the lake's
    tp = _assign(p, consumer, 0)
    consumer.positions[tp] += 2  # two markers after the lake's last record
    p._commit_to_kafka(final=True)
    assert consumer.commits == [{0: 5}]


def test_a_fenced_partition_is_never_mirrored(setup):
    p, consumer, clock = setup
    tp = _assign(p, consumer, 0)
    _read(p, consumer, tp, list(range(3)), 3, clock)
    p.flush_partition(0)
    p._commit_to_kafka(final=True)
    assert consumer.commits == [{0: 3}]
    p.lake.claim(p.topic, 0)  # another instance claims it: our next flush is fenced
    _read(p, consumer, tp, [3, 4], 5, clock)
    p.flush_partition(0)
    assert p.stats.fenced == 1
    clock.t += INTERVAL
    p._commit_to_kafka(final=True)
    assert consumer.commits == [{0: 3}]
