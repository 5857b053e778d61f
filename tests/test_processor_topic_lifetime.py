"""A topic deleted and created again (or a broker whose storage was wiped, a move to a new cluster) starts its
offsets over at 0, and the lake's offsets then belong to the old topic. Resuming there skipped the new records
(kafka-python resets an offset past the log's end to 0 silently) and the first new batch got the name of a
committed one and replaced it. Now the lake never overwrites a committed batch, every manifest records the
topic's id, and a claim whose lake offsets belong to another lifetime of the topic is refused
(TopicLifetimeError) unless ``accept_new_topic`` (``--accept-new-topic``) sets the old history aside (still
read) and reads the new topic from its beginning.

Fast tests drive a real lake in tmp_path and the real Processor with a consumer stand-in; one ``kafka`` test
deletes and re-creates a real topic."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from kafka import TopicPartition

from costline.config import Config, LakeConfig
from costline.errors import LakeError
from costline.lake import Lake, Manifest, open_lake
from costline.processors.errors import ProcessorError
from costline.processors.processor import Processor, topic_lifetime_change
from tests.test_lake_commit_visibility import DAY, TOPIC, batch

OLD_ID = "2ef609d5-99fd-403b-b3a8-ebf9c6ef79e5"
NEW_ID = "4e16daa5-8809-4cd6-ae7a-56ce988308c3"


def _ids(path: Path) -> list[str]:
    con = open_lake(Config(lake=LakeConfig(path=path)))
    try:
        return sorted(r[0] for r in con.execute("SELECT request_id FROM requests_raw").fetchall())
    finally:
        con.close()


def _committed_lake(path: Path, topic_id: str | None = OLD_ID) -> Lake:
    """A lake whose partition 0 holds two committed batches: A0..A4 at offsets 0..4, B0..B4 at 5..9."""
    lake = Lake(path).init()
    epoch = lake.claim(TOPIC, 0)
    kw = {} if topic_id is None else {"topic_id": topic_id}
    lake.commit_batch(TOPIC, 0, 0, 4, batch("A", 5), epoch=epoch, **kw)
    lake.commit_batch(TOPIC, 0, 5, 9, batch("B", 5), epoch=epoch, **kw)
    return lake


# -- the lake never overwrites committed data ---------------------------------------------------------------

@pytest.mark.parametrize("first, last", [
    (0, 4),   # the name of the committed batch 0..4: its file was replaced
    (0, 6),   # another name, offsets already committed: the lake held two versions of 0..4
    (9, 12),  # overlaps the last committed offset by one
])
def test_a_batch_at_committed_offsets_is_refused_and_nothing_is_overwritten(tmp_path: Path, first: int, last: int):
    lake = _committed_lake(tmp_path / "lake")
    files = sorted(lake.path.glob(f"*/{DAY}/*.parquet"))
    before = {f: f.read_bytes() for f in files}
    manifests = sorted(p.name for p in lake.offsets_dir(TOPIC, 0).glob("*.json"))
    with pytest.raises(LakeError, match="refused.*went back.*no committed data was overwritten"):
        lake.commit_batch(TOPIC, 0, first, last, batch("N", 3), epoch=lake.claim(TOPIC, 0))
    assert {f: f.read_bytes() for f in sorted(lake.path.glob(f"*/{DAY}/*.parquet"))} == before
    assert list(lake.path.glob(f"*/{DAY}/.*.tmp")) == []  # the refused batch's staged files are gone
    assert sorted(p.name for p in lake.offsets_dir(TOPIC, 0).glob("*.json")) == manifests
    assert _ids(lake.path) == [f"A{i}" for i in range(5)] + [f"B{i}" for i in range(5)]


def test_the_next_batch_after_the_committed_ones_commits_with_its_topic_id(tmp_path: Path):
    lake = _committed_lake(tmp_path / "lake")
    lake.commit_batch(TOPIC, 0, 10, 12, batch("C", 3), epoch=lake.claim(TOPIC, 0), topic_id=NEW_ID)
    assert lake.last_manifest(TOPIC, 0).topic_id == NEW_ID
    assert len(_ids(lake.path)) == 13


def test_a_manifest_from_before_topic_ids_reads_without_one():
    old = ('{"format": 2, "topic": "otlp_spans", "partition": 0, "first_offset": 0, "last_offset": 4, '
           '"files": [], "epoch": 1}')
    assert Manifest.from_json(old).topic_id is None
    m = Manifest(TOPIC, 0, 0, 4, (), epoch=1, topic_id=NEW_ID)
    assert Manifest.from_json(m.to_json()) == m


# -- the claim decision --------------------------------------------------------------------------------------

@pytest.mark.parametrize("recorded, live, next_offset, end, refused", [
    (OLD_ID, OLD_ID, 10, 10, False),   # the same topic, caught up
    (OLD_ID, OLD_ID, 10, 500, False),  # the same topic, records to read
    (OLD_ID, NEW_ID, 10, 500, True),   # created again and already past the old offsets: ids alone tell
    (OLD_ID, NEW_ID, 10, 5, True),     # created again, fewer records
    (None, NEW_ID, 10, 5, True),       # a lake from before ids: the end offset tells
    (None, NEW_ID, 10, 500, False),    # ... and cannot tell otherwise (no false alarm on upgrade)
    (OLD_ID, None, 10, 5, True),       # a broker without ids: the end offset tells
    (OLD_ID, None, 10, 11, False),
    (OLD_ID, NEW_ID, None, 0, False),  # no manifest: nothing to resume, the partition starts fresh
    (None, None, 10, None, False),     # nothing known: resume as before
])
def test_the_claim_decision(recorded, live, next_offset, end, refused):
    assert (topic_lifetime_change(recorded, live, next_offset, end) is not None) is refused


class _Cluster:
    def __init__(self, topic_id):
        self._id = topic_id

    def topic_id(self, topic):
        return None if self._id is None else uuid.UUID(self._id)


class _Consumer:
    """What the processor asks of kafka-python's KafkaConsumer on a claim."""

    def __init__(self, topic_id: str | None, begin: int, end: int) -> None:
        self._client = type("Client", (), {"cluster": _Cluster(topic_id)})()
        self.begin, self.end = begin, end
        self.positions: dict = {}

    def beginning_offsets(self, tps, timeout_ms=None):
        return {tp: self.begin for tp in tps}

    def end_offsets(self, tps, timeout_ms=None):
        return {tp: self.end for tp in tps}

    def seek(self, tp, offset):
        self.positions[tp] = offset

    def seek_to_beginning(self, *tps):
        for tp in tps:
            self.positions[tp] = self.begin

    def committed(self, tp):
        return None

    def resume(self, *tps):
        pass


def _claimed(path: Path, consumer: _Consumer, *, accept: bool = False) -> tuple[Processor, TopicPartition]:
    p = Processor(Config(lake=LakeConfig(path=path)), accept_new_topic=accept)
    p._consumer = consumer
    tp = TopicPartition(p.topic, 0)
    p._claim(tp)
    return p, tp


@pytest.mark.parametrize("live, end", [(NEW_ID, 5), (NEW_ID, 500), (OLD_ID, 5)])
def test_a_claim_on_another_lifetime_of_the_topic_is_refused(tmp_path: Path, live: str, end: int):
    lake = _committed_lake(tmp_path / "lake")
    with pytest.raises(ProcessorError, match="partition 0 .*--accept-new-topic"):
        _claimed(lake.path, _Consumer(live, 0, end))
    assert lake.last_manifest(TOPIC, 0).last_offset == 9  # nothing changed
    assert _ids(lake.path) == [f"A{i}" for i in range(5)] + [f"B{i}" for i in range(5)]


def test_accept_new_topic_keeps_the_old_data_and_reads_the_new_topic_from_its_beginning(tmp_path: Path):
    lake = _committed_lake(tmp_path / "lake")
    p, tp = _claimed(lake.path, _Consumer(NEW_ID, 0, 5), accept=True)
    assert p._consumer.positions[tp] == 0
    assert lake.last_manifest(TOPIC, 0) is None  # the old manifests are set aside
    # the new topic's first batch (offsets 0..4: the old first batch's name) lands beside the old data
    p.lake.commit_batch(TOPIC, 0, 0, 4, batch("N", 5), epoch=p._epochs[0], topic_id=p._topic_ids[0])
    assert _ids(lake.path) == sorted([f"A{i}" for i in range(5)] + [f"B{i}" for i in range(5)]
                                     + [f"N{i}" for i in range(5)])
    assert lake.last_manifest(TOPIC, 0).topic_id == NEW_ID
    assert lake.recover(TOPIC, 0) == (5, [])  # recovery leaves the set-aside files alone


def test_a_lake_from_before_topic_ids_resumes_and_records_the_id(tmp_path: Path):
    lake = _committed_lake(tmp_path / "lake", topic_id=None)
    p, tp = _claimed(lake.path, _Consumer(NEW_ID, 0, 12))
    assert p._consumer.positions[tp] == 10
    p.lake.commit_batch(TOPIC, 0, 10, 11, batch("C", 2), epoch=p._epochs[0], topic_id=p._topic_ids[0])
    assert lake.last_manifest(TOPIC, 0).topic_id == NEW_ID


def test_the_processor_stops_rather_than_commit_over_a_committed_batch(tmp_path: Path):
    """Offsets going back while the processor runs (the topic created again under it): the batch is refused with
    the processor's error, which stops the run, and the committed batch stays."""
    from tests.processor_rig import claimed_processor
    from costline.sim.synth import synthetic_traffic

    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"))
    p = claimed_processor(cfg)
    traffic = list(synthetic_traffic(6, seed=7))
    for offset, t in enumerate(traffic[:3]):
        p.handle(0, offset, None, t.request.SerializeToString(), None, 0.0)
    p.flush_partition(0)
    before = {f: f.read_bytes() for f in cfg.lake.path.glob("requests/date=*/p*.parquet")}
    for offset, t in enumerate(traffic[3:]):  # offsets 0..2 again, other records
        p.handle(0, offset, None, t.request.SerializeToString(), None, 0.0)
    with pytest.raises(ProcessorError, match="went back.*--accept-new-topic"):
        p.flush_partition(0)
    assert {f: f.read_bytes() for f in cfg.lake.path.glob("requests/date=*/p*.parquet")} == before


# -- a real broker -------------------------------------------------------------------------------------------

@pytest.mark.kafka
def test_a_recreated_topic_is_refused_then_accepted_keeping_every_record(kafka_config: Config):
    from kafka.admin import KafkaAdminClient

    from costline.localkafka import ensure_topics
    from costline.sim.synth import synthetic_traffic
    from test_processor_topics import lake_keys, produce, span_keys

    old = list(synthetic_traffic(30, seed=81))
    produce(kafka_config, old)
    Processor(kafka_config).run(until_idle=1.0)
    admin = KafkaAdminClient(bootstrap_servers=kafka_config.kafka.bootstrap)
    try:
        admin.delete_topics([kafka_config.kafka.topic])
        while kafka_config.kafka.topic in admin.list_topics():
            time.sleep(0.2)
    finally:
        admin.close()
    ensure_topics(kafka_config.kafka)
    new = list(synthetic_traffic(12, seed=82))  # fewer records than before: the old offsets run past the end
    produce(kafka_config, new)
    with pytest.raises(ProcessorError, match="--accept-new-topic"):
        Processor(kafka_config).run(until_idle=1.0)
    assert lake_keys(kafka_config) == span_keys(old)
    Processor(kafka_config, accept_new_topic=True).run(until_idle=1.0)
    assert lake_keys(kafka_config) == span_keys(old) | span_keys(new)
