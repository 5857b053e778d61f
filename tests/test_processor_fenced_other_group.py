"""A processor fenced from a partition it still holds: by another consumer group writing the same lake (it stops
with an error naming what to do), or by a member of its own group (a rebalance it missed: it stops reading the
partition until the group hands it out again, and the lake ends exact).

Driven through ``Processor.run()`` with a scripted consumer (no broker): each ``poll()`` runs the step the test
scripted (the group assigning or revoking partition 0, another processor running meanwhile), then returns the
next records of each assigned, unpaused partition from its position."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kafka import TopicPartition
from processor_rig import RecordingDLQ

from costline.config import Config, KafkaConfig, LakeConfig, ProcessorConfig
from costline.lake import open_lake
from costline.processors import errors as processor_errors
from costline.processors.processor import Processor
from costline.sim.synth import synthetic_traffic

TOPIC = "otlp_spans"
TRACES = list(synthetic_traffic(30, seed=77))
VALUES = [t.request.SerializeToString() for t in TRACES]
TP = TopicPartition(TOPIC, 0)


def _spans(traces) -> list:
    return [s for t in traces for rs in t.request.resource_spans for ss in rs.scope_spans for s in ss.spans]


def _expected(traces) -> tuple[list[str], int]:
    """What the lake holds once for ``traces``, counted from the spans: the trace ids of the request spans
    (a bare model call has none), and the number of model-call spans."""
    requests = sorted(s.trace_id.hex() for s in _spans(traces) if s.name == "costline.request")
    return requests, sum(1 for s in _spans(traces) if s.name.startswith("chat "))


class ScriptedConsumer:
    """Enough of KafkaConsumer for ``Processor.run()``: one topic of one partition holding :data:`VALUES`."""

    def __init__(self, script: list[Callable[["ScriptedConsumer"], None]], per_poll: int = 10) -> None:
        self.script = script
        self.per_poll = per_poll
        self.processor: Processor | None = None
        self.listener: Any = None
        self.assigned: set[TopicPartition] = set()
        self.paused: set[TopicPartition] = set()
        self.pos: dict[TopicPartition, int] = {}
        self.delivered: list[int] = []  # every offset poll() returned
        self.polls = 0
        self.closed = False

    # the group, as the test scripts it
    def assign(self) -> None:
        self.assigned.add(TP)
        self.listener.on_partitions_assigned([TP])

    def revoke(self) -> None:
        self.listener.on_partitions_revoked([TP])
        self.assigned.discard(TP)
        self.paused.discard(TP)

    # KafkaConsumer
    def subscribe(self, topics: list[str], listener: Any = None) -> None:
        self.listener = listener

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict:
        step = self.script[self.polls] if self.polls < len(self.script) else None
        self.polls += 1
        if step is None:
            self.processor.stop()
            return {}
        step(self)
        out = {}
        for tp in self.assigned - self.paused:
            start = self.pos.get(tp, 0)
            offsets = range(start, min(start + self.per_poll, len(VALUES)))
            if offsets:
                out[tp] = [SimpleNamespace(offset=o, key=None, value=VALUES[o], headers=[], timestamp=None)
                           for o in offsets]
                self.pos[tp] = offsets[-1] + 1
                self.delivered.extend(offsets)
        return out

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0}

    def beginning_offsets(self, tps, timeout_ms=None):
        return {tp: 0 for tp in tps}

    def end_offsets(self, tps, timeout_ms=None):
        return {tp: len(VALUES) for tp in tps}

    def committed(self, tp):
        return None

    def assignment(self):
        return set(self.assigned)

    def pause(self, *tps):
        self.paused.update(tps)

    def resume(self, *tps):
        self.paused.difference_update(tps)

    def seek(self, tp, offset):
        self.pos[tp] = offset

    def seek_to_beginning(self, tp):
        self.pos[tp] = 0

    def position(self, tp, timeout_ms=None):
        return self.pos.get(tp, 0)

    def commit(self, offsets, timeout_ms=None):
        pass

    def close(self, autocommit=True):
        self.closed = True


def _config(lake: Path, group: str) -> Config:
    # batch_max_spans 1: every message is its own batch, committed as soon as it is handled
    return Config(kafka=KafkaConfig(bootstrap_servers="kafka.invalid:9092", topic=TOPIC, dlq_topic=TOPIC + ".dlq"),
                  lake=LakeConfig(path=lake),
                  processor=ProcessorConfig(group_id=group, batch_max_spans=1, flush_interval_s=3600.0))


def _processor(lake: Path, group: str, script: list) -> tuple[Processor, ScriptedConsumer]:
    consumer = ScriptedConsumer(script)
    p = Processor(_config(lake, group), consumer_factory=lambda **kw: consumer,
                  producer_factory=lambda **kw: RecordingDLQ())
    consumer.processor = p
    return p, consumer


def _run_other(lake: Path, group: str) -> Processor:
    """Another processor, run to its end: the group gives it partition 0, it reads 10 messages, and stops."""
    other, _ = _processor(lake, group, [ScriptedConsumer.assign, lambda c: None])
    other.run()
    return other


def _lake_rows(lake: Path) -> tuple[list[str], int]:
    """The request rows' trace ids and the number of call rows the lake holds (``*_raw``: nothing deduplicated)."""
    con = open_lake(_config(lake, "reader"), create=False)
    try:
        return (sorted(r[0] for r in con.execute("SELECT trace_id FROM requests_raw").fetchall()),
                con.execute("SELECT count(*) FROM calls_raw").fetchone()[0])
    finally:
        con.close()


def test_a_processor_fenced_by_another_group_stops_with_what_to_do_and_loses_nothing(tmp_path: Path):
    lake = tmp_path / "lake"
    others: list[Processor] = []
    script = [ScriptedConsumer.assign,  # claimed after this poll
              lambda c: None,  # offsets 0..9, each committed
              # meanwhile a `costline process` of group gB runs once on the same lake: it claims partition 0,
              # resumes at 10 from the lake, commits 10..19 and leaves (no rebalance of gA follows)
              lambda c: others.append(_run_other(lake, "gB")),
              lambda c: None, lambda c: None, lambda c: None]
    a, consumer = _processor(lake, "gA", script)
    error = getattr(processor_errors, "OtherWriterError", None)
    assert error is not None, "processors.errors has no OtherWriterError"
    with pytest.raises(error) as raised:
        a.run()
    said = str(raised.value)
    assert "'gA'" in said and "'gB'" in said and str(lake) in said, said
    assert "different [processor] group_id" in said and "one consumer group per lake" in said, said
    assert consumer.closed
    assert a.stats.commits == 10 and a.stats.fenced == 1
    assert others[0].stats.commits == 10
    # nothing lost: gA restarted resumes after the lake's last manifest (gB's) and reads the rest
    again, consumer = _processor(lake, "gA", [ScriptedConsumer.assign] + [lambda c: None] * 2)
    again.run()
    assert consumer.delivered == list(range(20, 30))
    assert _lake_rows(lake) == _expected(TRACES)  # every request and call once


def test_a_processor_fenced_within_its_own_group_pauses_until_the_rebalance_and_stays_exact(
        tmp_path: Path, caplog: pytest.LogCaptureFixture):
    lake = tmp_path / "lake"
    script = [ScriptedConsumer.assign,
              lambda c: None,  # 0..9 committed
              # a member of its own group claims partition 0 (this one missed the rebalance), commits 10..19
              lambda c: _run_other(lake, "gA"),
              lambda c: None,  # offset 10's batch is fenced; nothing more of the partition may be read ...
              lambda c: None,
              lambda c: (c.revoke(), c.assign()),  # ... until the group hands it back: claimed, resumed at 20
              lambda c: None]
    a, consumer = _processor(lake, "gA", script)
    with caplog.at_level(logging.WARNING, logger="costline.processors.processor"):
        stats = a.run()  # no error: this is the usual fencing
    assert stats.fenced == 1
    # read: 0..19 (the rest of the poll that held 10 is left alone), then 20..29 once claimed again
    assert consumer.delivered == list(range(0, 20)) + list(range(20, 30))
    assert stats.messages == 21  # 0..9, the fenced 10, 20..29: nothing handled for a partition not held
    assert stats.commits == 20
    assert not [r for r in caplog.records if "not ours any more" in r.getMessage()]
    assert _lake_rows(lake) == _expected(TRACES)


def test_a_revoked_buffer_fenced_by_its_groups_new_owner_is_no_error_by_another_groups_it_is(tmp_path: Path):
    """The usual rebalance: the buffer of a revoked partition is flushed after the new owner claimed it. By a
    processor of this group that is no error; by one of another group it is."""
    error = getattr(processor_errors, "OtherWriterError", None)
    assert error is not None, "processors.errors has no OtherWriterError"
    for other_group in ("gA", "gB"):
        lake = tmp_path / other_group
        consumer = ScriptedConsumer([ScriptedConsumer.assign, lambda c: None,
                                     lambda c: (c.revoke(), _run_other(lake, other_group)), lambda c: None])
        cfg = _config(lake, "gA").replace(processor={"batch_max_spans": 1000})  # 0..9 held in the buffer
        a = Processor(cfg, consumer_factory=lambda **kw: consumer, producer_factory=lambda **kw: RecordingDLQ())
        consumer.processor = a
        if other_group == "gA":
            stats = a.run()
        else:
            with pytest.raises(error, match="'gB'"):
                a.run()
            stats = a.stats
        assert stats.fenced == 1 and stats.commits == 0
        assert _lake_rows(lake) == _expected(TRACES[:10]), other_group  # the new owner's batches of 0..9 only
