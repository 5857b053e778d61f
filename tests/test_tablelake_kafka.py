"""The table lake end to end: a real broker, the SeaweedFS object store, a SQL catalog (SQLite; the
shared PostgreSQL one for several processes), processors in table mode. Expected aggregates are
computed in Python with hand-written prices (tests/test_processor_kafka.py), never by costline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_processor_kafka import assert_lake_holds_exactly, produce, producer

from costline.config import Config
from costline.processors.table_sink import TableProcessor
from costline.sim.synth import synthetic_traffic
from tests.tablelake_helpers import table_lake_config

pytest.importorskip("pyiceberg")
pytestmark = [pytest.mark.kafka, pytest.mark.objstore]


def _spans(traces) -> int:  # type: ignore[no-untyped-def]
    return sum(len(ss.spans) for t in traces for rs in t.request.resource_spans for ss in rs.scope_spans)


def test_one_processor_in_table_mode_gives_the_expected_views(kafka_config: Config, objstore, tmp_path: Path):
    cfg = kafka_config.replace(lake=table_lake_config(objstore, tmp_path),
                               processor={"batch_max_spans": 2000, "flush_interval_s": 0.5})
    traces = list(synthetic_traffic(800, seed=11))
    prod = producer(cfg)
    produce(prod, cfg, traces)
    prod.close()
    stats = TableProcessor(cfg).run(until_idle=1.5)
    assert stats.spans == _spans(traces) and stats.fenced == 0
    assert not (tmp_path / "lake" / "_offsets").exists()  # nothing went to the local lake's manifests
    assert_lake_holds_exactly(cfg, traces)
    # a second run finds every partition committed in the tables and reads nothing again
    again = TableProcessor(cfg).run(until_idle=1.0)
    assert again.messages == 0


def _env(cfg: Config) -> dict[str, str]:
    lake, p = cfg.lake, cfg.processor
    env = dict(os.environ)
    env.update({
        "COSTLINE_CONFIG": os.devnull,
        "KAFKA_BOOTSTRAP_SERVERS": cfg.kafka.bootstrap,
        "COSTLINE_KAFKA_TOPIC": cfg.kafka.topic,
        "COSTLINE_KAFKA_DLQ_TOPIC": cfg.kafka.dlq_topic,
        "COSTLINE_PROCESSOR_GROUP_ID": p.group_id,
        "COSTLINE_PROCESSOR_BATCH_MAX_SPANS": str(p.batch_max_spans),
        "COSTLINE_PROCESSOR_FLUSH_INTERVAL_S": str(p.flush_interval_s),
        "COSTLINE_PROCESSOR_SESSION_TIMEOUT_MS": "6000",
        "COSTLINE_PROCESSOR_HEARTBEAT_INTERVAL_MS": "1000",
        "COSTLINE_LAKE_PATH": str(lake.path),
        "COSTLINE_LAKE_MODE": "table",
        "COSTLINE_LAKE_CATALOG_URI": str(lake.catalog_uri),
        "COSTLINE_LAKE_NAMESPACE": lake.namespace,
        "COSTLINE_LAKE_WAREHOUSE": lake.warehouse,
        "COSTLINE_LAKE_S3_ENDPOINT": str(lake.s3_endpoint),
        "COSTLINE_LAKE_S3_ACCESS_KEY_ID": lake.s3_access_key_id,
        "COSTLINE_LAKE_S3_SECRET_ACCESS_KEY": lake.s3_secret_access_key,
    })
    return env


def _committed_batches(cfg: Config) -> int:
    """Batches committed to the requests table so far (its snapshots that name a batch)."""
    from costline.tablelake import BATCH_PROPERTY, TableLake

    tbl = TableLake(cfg.lake).table("requests")
    return sum(1 for s in tbl.snapshots()
               if "claim" not in (s.summary.additional_properties.get(BATCH_PROPERTY, "claim") if s.summary else "claim"))


def test_three_processes_a_sigkill_and_rebalances_on_a_postgres_catalog(kafka_config: Config, objstore, pg_catalog,
                                                                        tmp_path: Path):
    cfg = kafka_config.replace(lake=table_lake_config(objstore, tmp_path, catalog_uri=pg_catalog),
                               processor={"batch_max_spans": 300, "flush_interval_s": 0.5})
    from costline.tablelake import TableLake

    TableLake(cfg.lake).init()
    costline = Path(sys.executable).with_name("costline")
    traces = list(synthetic_traffic(1200, seed=13))
    waves = [traces[i::4] for i in range(4)]
    prod = producer(cfg)
    produce(prod, cfg, waves[0])
    env = _env(cfg)
    logs = [open(tmp_path / f"processor-{i}.log", "ab") for i in range(4)]

    def start(i: int, idle: float) -> subprocess.Popen:
        return subprocess.Popen([str(costline), "-v", "process", "--until-idle", str(idle)], env=env,
                                stdout=logs[i], stderr=subprocess.STDOUT)

    # each member's idle limit outlasts the killed member's session timeout (6 s) and a heartbeat, so that none
    # leaves before the group has moved the victim's partitions; an exit is a rebalance too (the rest still read)
    procs = [start(i, 8) for i in range(3)]  # three members: the group rebalances as each joins
    deadline = time.monotonic() + 90
    while _committed_batches(cfg) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    produce(prod, cfg, waves[1])
    victim = procs[0]
    assert victim.poll() is None, "the processor exited before it could be killed"
    victim.send_signal(signal.SIGKILL)  # mid-stream: its partitions move to the others (a rebalance)
    victim.wait()
    produce(prod, cfg, waves[2])
    procs.append(start(3, 8))  # and a newcomer joins: another rebalance
    produce(prod, cfg, waves[3])
    prod.close()
    for p in procs[1:]:
        p.wait(240)
    final = subprocess.run([str(costline), "-v", "process", "--until-idle", "1.5"], env=env, stdout=logs[0],
                           stderr=subprocess.STDOUT, timeout=180)
    for f in logs:
        f.close()
    tails = "\n".join((tmp_path / f"processor-{i}.log").read_text()[-1500:] for i in range(4))
    assert final.returncode == 0 and all(p.returncode == 0 for p in procs[1:]), tails
    # partitions changed hands after commits: their new owners resumed from the tables' offsets
    assert "resuming at offset" in "".join((tmp_path / f"processor-{i}.log").read_text() for i in (1, 2, 3)), tails
    assert_lake_holds_exactly(cfg, traces)


def test_a_partition_handed_back_before_its_first_commit_is_read_again_from_its_first_offset(
        kafka_config: Config, objstore, tmp_path: Path):
    """The rebalance that hands a member its own partitions back, before any batch of them reached
    the tables: kafka-python keeps each partition's in-memory position across it, while the revoke
    dropped the rows read up to there. Driven by hand (the two listener calls an eager rebalance makes,
    no group timing): the tables must still hold every message once."""
    from kafka import TopicPartition

    cfg = kafka_config.replace(lake=table_lake_config(objstore, tmp_path),
                               processor={"batch_max_spans": 100_000, "flush_interval_s": 3600.0})
    traces = list(synthetic_traffic(240, seed=17))
    prod = producer(cfg)
    produce(prod, cfg, traces)
    prod.close()
    proc = TableProcessor(cfg, now=lambda: 0.0)  # a fixed clock: nothing is due until flush_all
    proc.lake.init()
    consumer = proc._consumer = proc._make_consumer()
    try:
        tps = [TopicPartition(cfg.kafka.topic, p) for p in sorted(consumer.partitions_for_topic(cfg.kafka.topic))]
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)

        def pump(enough) -> None:  # type: ignore[no-untyped-def]
            while not enough():
                for tp, records in consumer.poll(timeout_ms=500, max_records=40).items():
                    for r in records:
                        proc.handle(tp.partition, r.offset, r.key, r.value, r.headers, 0.0)
                proc.flush_due(0.0)

        proc._on_assigned(tps)
        proc.flush_due(0.0)  # claims them: no table holds offsets yet
        pump(lambda: proc.stats.messages >= 80)
        assert proc.stats.commits == 0  # all of it is still in the buffers
        proc._on_revoked(tps)  # the rebalance: the buffers are dropped...
        proc._on_assigned(tps)  # ...and the same partitions come back, positions kept by the client
        proc.flush_due(0.0)
        pump(lambda: all(consumer.position(tp) >= ends[tp] for tp in tps))
        proc.flush_all()
    finally:
        consumer.close(autocommit=False)
    assert_lake_holds_exactly(cfg, traces)


def test_a_first_commit_by_another_member_while_one_starts_is_not_taken_for_skipped_history(
        kafka_config: Config, objstore, tmp_path: Path):
    """Another member commits partition 0's first batch (the tables, then Kafka's mirror of them) right
    after the starting instance looked at the tables: the start check must not read that as a group
    that committed past a lake without offsets (Kafka's offsets are read first, the tables second)."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    cfg = kafka_config.replace(lake=table_lake_config(objstore, tmp_path))
    prod = producer(cfg)
    for i in range(5):
        prod.send(cfg.kafka.topic, value=b"x", partition=0)
    prod.flush()
    prod.close()
    proc = TableProcessor(cfg)
    proc.lake.init()
    other = TableProcessor(cfg).lake
    tp = TopicPartition(cfg.kafka.topic, 0)
    done: list[bool] = []

    def the_other_member_commits() -> None:  # partition 0's first batch: the tables, then Kafka's mirror
        if done:
            return
        done.append(True)
        other.commit_batch(cfg.kafka.topic, 0, 0, 4, {}, epoch=other.claim(cfg.kafka.topic, 0))
        mirror = KafkaConsumer(bootstrap_servers=cfg.kafka.bootstrap, group_id=cfg.processor.group_id,
                               enable_auto_commit=False)
        mirror.assign([tp])
        mirror.commit({tp: OffsetAndMetadata(5, "", -1)})
        mirror.close(autocommit=False)

    def then_commits(read):  # type: ignore[no-untyped-def]  # a read, then the other member's commit
        def wrapped(*args, **kwargs):  # type: ignore[no-untyped-def]
            answer = read(*args, **kwargs)
            the_other_member_commits()
            return answer
        return wrapped

    proc.lake.last_manifest = then_commits(proc.lake.last_manifest)  # type: ignore[method-assign]
    proc._consumer = proc._make_consumer()
    proc._consumer.committed = then_commits(proc._consumer.committed)
    try:
        proc._check_start_position()  # raised StartPositionError when it read the tables first
    finally:
        proc._consumer.close(autocommit=False)
    assert other.last_manifest(cfg.kafka.topic, 0).last_offset == 4  # the other member's commit did happen meanwhile


def test_a_refused_batched_claim_leaves_the_contested_partition_to_its_newer_owner(
        kafka_config: Config, objstore, tmp_path: Path):
    """While this member claims its six partitions in one batch, another member claims partition 2
    (its assignment is newer: this one sat in a long commit past a rebalance). The batch is refused;
    the retry claims the other five in one batch and leaves partition 2 alone: the newer owner keeps
    its claim and can commit (claiming one by one used to outbid it and steal the partition back)."""
    from kafka import TopicPartition

    from costline.tablelake import TableLake

    cfg = kafka_config.replace(lake=table_lake_config(objstore, tmp_path))
    proc = TableProcessor(cfg, now=lambda: 0.0)
    proc.lake.init()
    newer = TableLake(cfg.lake)
    topic = cfg.kafka.topic
    real = proc.lake.catalog.commit_table
    newer_epoch: list[int] = []

    def commit_table(table, requirements, updates):  # type: ignore[no-untyped-def]
        if not newer_epoch:  # just before this member's first claim snapshot lands
            newer_epoch.append(newer.claim(topic, 2))
        return real(table, requirements, updates)

    proc.lake.catalog.commit_table = commit_table
    consumer = proc._consumer = proc._make_consumer()
    try:
        tps = [TopicPartition(topic, p) for p in range(6)]
        consumer.assign(tps)
        proc._on_assigned(tps)
        proc.flush_due(0.0)
    finally:
        consumer.close(autocommit=False)
    assert sorted(proc._epochs) == [0, 1, 3, 4, 5] and proc.stats.fenced == 1
    done = newer.commit_batch(topic, 2, 0, 3, {}, epoch=newer_epoch[0])  # not fenced: still its partition
    assert done.partition == 2 and newer.committed_offsets(topic, 2) == {"requests": 3, "calls": 3, "lookups": 3}
