"""Zombie fencing: an instance that stalled through a rebalance cannot commit after the partition's
new owner recovered it (real broker, two Processor instances)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from test_processor_kafka import assert_lake_holds_exactly, produce, producer

from costline.config import Config
from costline.lake import Lake, WriterFenced
from costline.processors.processor import Processor
from costline.sim.synth import synthetic_traffic


def test_a_stale_epoch_cannot_commit_and_leaves_no_file(tmp_path: Path):
    lake = Lake(tmp_path / "lake").init()
    old = lake.claim("otlp_spans", 0)
    new = lake.claim("otlp_spans", 0)
    assert new == old + 1
    lake.commit_batch("otlp_spans", 0, 0, 4, {}, epoch=new)
    import pyarrow as pa

    from costline.lake import REQUESTS_SCHEMA
    table = pa.Table.from_pylist([{"request_id": "r", "trace_id": "t", "span_id": "s", "ts": 0}],
                                 schema=REQUESTS_SCHEMA)
    with pytest.raises(WriterFenced, match="claimed by another writer"):
        lake.commit_batch("otlp_spans", 0, 5, 9, {"requests": {"1970-01-01": table}}, epoch=old)
    assert lake.last_manifest("otlp_spans", 0).last_offset == 4
    assert not [p for p in (tmp_path / "lake" / "requests").rglob("*") if p.name.startswith((".p", "p"))]
    assert lake.last_manifest("otlp_spans", 0).epoch == new


@pytest.mark.kafka
def test_a_zombie_instance_cannot_commit_after_the_new_owner_recovered(kafka_config: Config):
    from kafka import KafkaConsumer

    cfg = kafka_config.replace(processor={"batch_max_spans": 100_000, "flush_interval_s": 0.3})
    traces = list(synthetic_traffic(600, seed=51))
    prod = producer(cfg)
    produce(prod, cfg, traces)
    prod.close()
    stalled, resume = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    class Zombie(Processor):
        """Stalls (a GC pause, a stuck disk) holding a buffer, past max.poll.interval.ms; once
        woken, it flushes what it holds, as a stalled instance would."""

        def handle(self, partition, offset, key, value, headers, now, *more):  # more: the record's timestamp
            super().handle(partition, offset, key, value, headers, now, *more)
            if not stalled.is_set():
                stalled.set()
                resume.wait(120)
                before = self.stats.fenced
                self.flush_all()
                outcome["fenced"] = self.stats.fenced - before

    a = Zombie(cfg, consumer_factory=lambda **kw: KafkaConsumer(**{**kw, "max_poll_interval_ms": 4000}))
    a_thread = threading.Thread(target=lambda: outcome.setdefault("a", a.run(until_idle=2.0)))
    a_thread.start()
    assert stalled.wait(60)
    b_stats = Processor(cfg).run(until_idle=2.0)  # joins, gets every partition once A is expelled
    assert b_stats.commits > 0
    later = list(synthetic_traffic(200, seed=52))  # B has left: only A, rejoining, can write these
    prod = producer(cfg)
    produce(prod, cfg, later)
    prod.close()
    resume.set()
    a_thread.join(120)
    assert not a_thread.is_alive()

    assert outcome["fenced"] >= 1  # the zombie's flush was refused ...
    # ... so no offset range was written twice, and the expelled instance rejoined the group and resumed from the lake
    assert_lake_holds_exactly(cfg, traces + later)
