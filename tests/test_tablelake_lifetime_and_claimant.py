"""Table mode (``[lake] mode = "table"``) gives the local lake's guarantees through the processor's shared checks:

- a topic deleted and created again is refused (TopicLifetimeError) once its new offsets are past the old ones
  too: each table commit records the topic id in its snapshot, carried forward like the offsets; with
  ``accept_new_topic`` the partition's history is set aside (rows kept) and the new topic is read from 0;
- a processor fenced by another consumer group's claim stops (OtherWriterError) instead of pausing forever:
  each claim records its claimant next to the claims; a same-group rebalance stays silent and exact.

Real SeaweedFS and a SQLite catalog, no broker: the real TableProcessor with a consumer stand-in
(tests/test_processor_fenced_other_group.py's ScriptedConsumer). Expected rows are counted from the spans."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pytest
from kafka import TopicPartition
from processor_rig import RecordingDLQ

from costline.config import Config, KafkaConfig, ProcessorConfig
from costline.lake import SCHEMAS
from costline.processors.errors import OtherWriterError, TopicLifetimeError
from tests.tablelake_helpers import table_lake_config
from tests.test_processor_fenced_other_group import TRACES, ScriptedConsumer, _expected

pytest.importorskip("pyiceberg")
pytestmark = pytest.mark.objstore

TOPIC = "otlp_spans"
OLD_ID = "2ef609d5-99fd-403b-b3a8-ebf9c6ef79e5"
NEW_ID = "4e16daa5-8809-4cd6-ae7a-56ce988308c3"


def _requests(prefix: str, offsets: range) -> pa.Table:
    rows = [{"request_id": f"{prefix}{o}", "trace_id": f"{prefix}t{o}", "span_id": f"{prefix}s{o}",
             "ts": datetime(2026, 11, 2, 10, o % 60), "tenant": "acme", "tier": "haiku", "success": True,
             "kafka_partition": 0, "kafka_offset": o} for o in offsets]
    return pa.Table.from_pylist(rows, schema=SCHEMAS["requests"])


@pytest.fixture
def lake_cfg(objstore, tmp_path: Path):  # type: ignore[no-untyped-def]
    return table_lake_config(objstore, tmp_path)


def _lake(cfg):  # type: ignore[no-untyped-def]
    from costline.tablelake import TableLake

    return TableLake(cfg).init()


def _ids(lake) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(lake.table("requests").scan().to_arrow().column("request_id").to_pylist())


def _committed(cfg) -> "object":  # type: ignore[no-untyped-def]
    """Partition 0 holding A0..A9 at offsets 0..9 of the old topic (id OLD_ID), on every table, the topic id passed
    as the processor passes it (only to a sink that records one)."""
    lake = _lake(cfg)
    kw = {"topic_id": OLD_ID} if getattr(lake, "records_topic_id", False) else {}
    lake.commit_batch(TOPIC, 0, 0, 9, {"requests": _requests("A", range(10))}, epoch=lake.claim(TOPIC, 0), **kw)
    return lake


# -- topic lifetimes ------------------------------------------------------------------------------------------

def test_each_commit_records_the_topic_id_and_claims_and_compactions_carry_it(lake_cfg) -> None:
    from costline.tablelake import TOPIC_IDS_PROPERTY

    lake = _committed(lake_cfg)
    lake.commit_batch(TOPIC, 1, 0, 4, {}, epoch=lake.claim(TOPIC, 1), topic_id=NEW_ID)
    lake.claim(TOPIC, 0)  # a claim snapshot
    lake.commit_batch(TOPIC, 0, 10, 14, {"requests": _requests("B", range(10, 15))}, epoch=lake.claim(TOPIC, 0),
                      topic_id=OLD_ID)
    assert [c.files for c in lake.compact(tables=["requests"])] == [2]  # a maintenance snapshot
    for table in ("requests", "calls", "lookups"):
        summary = lake.table(table).current_snapshot().summary.additional_properties
        assert json.loads(summary[TOPIC_IDS_PROPERTY]) == {TOPIC: {"0": OLD_ID, "1": NEW_ID}}, table
    manifest = lake.last_manifest(TOPIC, 0)
    assert (manifest.last_offset, manifest.topic_id) == (14, OLD_ID)
    assert lake.last_manifest(TOPIC, 2) is None


class _Cluster:
    def __init__(self, topic_id: str) -> None:
        self._id = topic_id

    def topic_id(self, topic):  # type: ignore[no-untyped-def]
        return uuid.UUID(self._id)


class _Consumer:
    """What TableProcessor asks of kafka-python's KafkaConsumer when it claims an assigned partition."""

    def __init__(self, topic_id: str, begin: int, end: int) -> None:
        self._client = type("Client", (), {"cluster": _Cluster(topic_id)})()
        self.begin, self.end = begin, end
        self.positions: dict = {}
        self.resumed: list = []

    def assignment(self):  # type: ignore[no-untyped-def]
        return {TopicPartition(TOPIC, 0)}

    def beginning_offsets(self, tps, timeout_ms=None):  # type: ignore[no-untyped-def]
        return {tp: self.begin for tp in tps}

    def end_offsets(self, tps, timeout_ms=None):  # type: ignore[no-untyped-def]
        return {tp: self.end for tp in tps}

    def seek(self, tp, offset):  # type: ignore[no-untyped-def]
        self.positions[tp] = offset

    def seek_to_beginning(self, *tps):  # type: ignore[no-untyped-def]
        for tp in tps:
            self.positions[tp] = self.begin

    def committed(self, tp):  # type: ignore[no-untyped-def]
        return None

    def resume(self, *tps):  # type: ignore[no-untyped-def]
        self.resumed.extend(tps)


def _claimed(cfg, consumer: _Consumer, *, accept: bool = False):  # type: ignore[no-untyped-def]
    """A TableProcessor that was assigned partition 0 and claims it (what follows its next poll)."""
    from costline.processors.table_sink import TableProcessor

    p = TableProcessor(Config(lake=cfg), accept_new_topic=accept)
    p._consumer = consumer
    tp = TopicPartition(TOPIC, 0)
    p._pending.add(tp)
    p.flush_due(0.0)
    return p, tp


@pytest.mark.parametrize("live, end", [
    (NEW_ID, 2400),  # created again and already past the old offsets: only the ids tell (was resumed at 10)
    (NEW_ID, 5),     # created again, fewer records than the old offsets
])
def test_a_claim_on_a_recreated_topic_is_refused_with_what_to_do(lake_cfg, live: str, end: int) -> None:
    lake = _committed(lake_cfg)
    consumer = _Consumer(live, 0, end)
    with pytest.raises(TopicLifetimeError, match="partition 0 .*--accept-new-topic"):
        _claimed(lake_cfg, consumer)
    assert consumer.positions == {} and consumer.resumed == []  # not resumed anywhere
    assert lake.last_manifest(TOPIC, 0).last_offset == 9 and _ids(lake) == [f"A{i}" for i in range(10)]


def test_the_same_topic_resumes_after_the_committed_offsets(lake_cfg) -> None:
    _committed(lake_cfg)
    p, tp = _claimed(lake_cfg, _Consumer(OLD_ID, 0, 2400))
    assert p._consumer.positions == {tp: 10} and p._topic_ids[0] == OLD_ID


def test_accept_new_topic_sets_the_history_aside_and_reads_the_new_topic_from_its_beginning(lake_cfg) -> None:
    lake = _committed(lake_cfg)
    p, tp = _claimed(lake_cfg, _Consumer(NEW_ID, 0, 2400), accept=True)
    assert p._consumer.positions == {tp: 0}
    assert lake.last_manifest(TOPIC, 0) is None and lake.recover(TOPIC, 0) == (None, [])
    # the new topic's first batch (offsets 0..4, under the old rows' offsets) lands beside the old rows
    p.lake.commit_batch(TOPIC, 0, 0, 4, {"requests": _requests("N", range(5))}, epoch=p._epochs[0],
                        topic_id=p._topic_ids[0])
    assert _ids(lake) == sorted([f"A{i}" for i in range(10)] + [f"N{i}" for i in range(5)])
    manifest = lake.last_manifest(TOPIC, 0)
    assert (manifest.last_offset, manifest.topic_id) == (4, NEW_ID)
    # a restart resumes in the new topic without asking again
    again, tp = _claimed(lake_cfg, _Consumer(NEW_ID, 0, 2400))
    assert again._consumer.positions == {tp: 5}
    # and old snapshots holding the set-aside offsets still expire (covered by the record of what was set aside)
    assert sum(lake.expire_snapshots(older_than_s=0, keep_last=1).values()) > 0


def test_a_table_still_holding_the_old_topics_offsets_takes_the_new_topic_from_its_first_offset(
        lake_cfg, monkeypatch) -> None:
    """A crash while setting the history aside: requests was set aside, calls and lookups were not. The partition
    then resumes from 0 (no offsets on requests) and the new topic's rows must land on every table, not be
    skipped as 'already committed' where the old topic's offsets are still recorded."""
    import costline.tablelake as tablelake

    lake = _committed(lake_cfg)
    lake.commit_batch(TOPIC, 0, 10, 19, {"calls": pa.Table.from_pylist(
        [{"span_id": f"c{o}", "request_id": f"A{o}", "kafka_partition": 0, "kafka_offset": o} for o in range(10, 20)],
        schema=SCHEMAS["calls"])}, epoch=lake.claim(TOPIC, 0), topic_id=OLD_ID)
    monkeypatch.setattr(tablelake, "TABLES", ("requests",))
    lake.retire_partition(TOPIC, 0, "test: the crash after the first table")
    monkeypatch.undo()
    assert lake.committed_offsets(TOPIC, 0) == {"requests": None, "calls": 19, "lookups": 19}
    assert lake.recover(TOPIC, 0) == (None, [])
    new_calls = pa.Table.from_pylist([{"span_id": f"n{o}", "request_id": f"N{o}", "kafka_partition": 0,
                                       "kafka_offset": o} for o in range(5)], schema=SCHEMAS["calls"])
    done = lake.commit_batch(TOPIC, 0, 0, 4, {"requests": _requests("N", range(5)), "calls": new_calls},
                             epoch=lake.claim(TOPIC, 0), topic_id=NEW_ID)
    assert dict(done.rows) == {"requests": 5, "calls": 5, "lookups": 0}
    assert sorted(lake.table("calls").scan().to_arrow().column("span_id").to_pylist()) == sorted(
        [f"c{o}" for o in range(10, 20)] + [f"n{o}" for o in range(5)])
    assert lake.committed_offsets(TOPIC, 0) == {"requests": 4, "calls": 4, "lookups": 4}
    assert lake.last_manifest(TOPIC, 0).topic_id == NEW_ID


def test_tables_that_recorded_different_topic_ids_are_refused(lake_cfg, monkeypatch) -> None:
    """The new topic's first batch reached requests only; calls and lookups still hold the old topic's offsets:
    resuming at the smallest offset would skip the new rows below it on requests' siblings, so it is refused."""
    import costline.tablelake as tablelake

    lake = _committed(lake_cfg)
    monkeypatch.setattr(tablelake, "TABLES", ("requests",))
    lake.retire_partition(TOPIC, 0, "test")
    lake.commit_batch(TOPIC, 0, 0, 2, {"requests": _requests("N", range(3))}, epoch=lake.claim(TOPIC, 0),
                      topic_id=NEW_ID)
    monkeypatch.undo()
    assert lake.last_manifest(TOPIC, 0).topic_id == f"{OLD_ID} / {NEW_ID} (the tables disagree)"
    with pytest.raises(TopicLifetimeError):
        _claimed(lake_cfg, _Consumer(NEW_ID, 0, 2400))


# -- claimants ------------------------------------------------------------------------------------------------

def test_a_claim_records_its_claimant_and_an_unknown_one_names_nobody(lake_cfg) -> None:
    lake = _lake(lake_cfg)
    who = {"group_id": "gA", "cluster_id": "c1", "host": "h1", "pid": 11}
    epoch = lake.claim(TOPIC, 0, claimant=who)
    assert lake.claimant(TOPIC, 0) == {**who, "epoch": epoch}
    lake.commit_batch(TOPIC, 0, 0, 9, {"requests": _requests("A", range(10))}, epoch=epoch)
    assert lake.claimant(TOPIC, 0) == {**who, "epoch": epoch}  # commits carry it forward
    lake.claim(TOPIC, 0)  # an older costline's claim: no claimant
    assert lake.claimant(TOPIC, 0) is None
    assert lake.claimant(TOPIC, 5) is None


def _config(lake_cfg, group: str) -> Config:  # type: ignore[no-untyped-def]
    # batch_max_spans 1: every message is its own batch, committed as soon as it is handled
    return Config(kafka=KafkaConfig(bootstrap_servers="kafka.invalid:9092", topic=TOPIC, dlq_topic=TOPIC + ".dlq"),
                  lake=lake_cfg, processor=ProcessorConfig(group_id=group, batch_max_spans=1, flush_interval_s=3600.0))


def _processor(lake_cfg, group: str, script: list):  # type: ignore[no-untyped-def]
    from costline.processors.table_sink import TableProcessor

    consumer = ScriptedConsumer(script, per_poll=3)
    p = TableProcessor(_config(lake_cfg, group), consumer_factory=lambda **kw: consumer,
                       producer_factory=lambda **kw: RecordingDLQ())
    consumer.processor = p
    return p, consumer


def _run_other(lake_cfg, group: str):  # type: ignore[no-untyped-def]
    """Another processor run to its end: assigned partition 0 (claimed after that poll), reads 3 messages."""
    other, _ = _processor(lake_cfg, group, [ScriptedConsumer.assign, lambda c: None])
    other.run()
    return other


def _lake_rows(lake_cfg) -> tuple[list[str], int]:  # type: ignore[no-untyped-def]
    lake = _lake(lake_cfg)
    return (sorted(lake.table("requests").scan().to_arrow().column("trace_id").to_pylist()),
            lake.table("calls").scan().to_arrow().num_rows)


def test_a_table_processor_fenced_by_another_group_stops_naming_both_groups(lake_cfg) -> None:
    others: list = []
    script = [ScriptedConsumer.assign,  # claimed after this poll
              lambda c: None,  # offsets 0..2, each committed
              # meanwhile a processor of group gB runs on the same tables: claims partition 0, commits 3..5
              lambda c: others.append(_run_other(lake_cfg, "gB")),
              lambda c: None, lambda c: None]
    a, consumer = _processor(lake_cfg, "gA", script)
    with pytest.raises(OtherWriterError) as raised:  # was: paused for good, nothing written, exit 0
        a.run()
    said = str(raised.value)
    assert "'gA'" in said and "'gB'" in said and "one consumer group per lake" in said, said
    assert consumer.closed and a.stats.commits == 3 and a.stats.fenced == 1
    assert others[0].stats.commits == 3
    # nothing lost: gA restarted resumes after gB's last commit
    again, consumer = _processor(lake_cfg, "gA", [ScriptedConsumer.assign] + [lambda c: None] * 8)
    again.run()
    assert consumer.delivered == list(range(6, 30))
    assert _lake_rows(lake_cfg) == _expected(TRACES)


def test_a_table_processor_fenced_within_its_own_group_pauses_until_the_rebalance_and_stays_exact(
        lake_cfg, caplog: pytest.LogCaptureFixture) -> None:
    script = [ScriptedConsumer.assign,
              lambda c: None,  # 0..2 committed
              lambda c: _run_other(lake_cfg, "gA"),  # a member of its own group claims it, commits 3..5
              lambda c: None,  # offset 3's batch is fenced: the partition is read no further ...
              lambda c: (c.revoke(), c.assign()),  # ... until the group hands it back: claimed, resumed at 6
              ] + [lambda c: None] * 8
    a, consumer = _processor(lake_cfg, "gA", script)
    with caplog.at_level(logging.WARNING):
        stats = a.run()  # no error: the usual fencing
    assert stats.fenced == 1
    assert consumer.delivered[:6] == list(range(6)) and consumer.delivered[6:] == list(range(6, 30))
    assert _lake_rows(lake_cfg) == _expected(TRACES)
