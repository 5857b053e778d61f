"""Rebalances on the real broker that used to stall a processor: a flush that outlasts the
session timeout while partitions move (kafka-python 3 runs rebalance listeners on its IO
thread, the thread that also sends heartbeats)."""

from __future__ import annotations

import threading
import time

import pytest
from test_processor_kafka import assert_lake_holds_exactly, produce, producer

from costline.config import Config
from costline.processors.processor import Processor
from costline.sim.synth import synthetic_traffic

pytestmark = pytest.mark.kafka


def test_a_flush_longer_than_the_session_timeout_during_a_rebalance_loses_nothing(kafka_config: Config):
    """Instance A's lake commit stalls for longer than the session timeout as B joins (a slow disk,
    a GC pause). The processor must do no lake work on the consumer's IO thread (there a stall
    stops the heartbeats and gets A expelled mid-rebalance); both instances must finish, and the
    lake must hold every span once."""
    cfg = kafka_config.replace(processor={"batch_max_spans": 60, "flush_interval_s": 0.2})
    stall_s = cfg.processor.session_timeout_ms / 1000 + 3
    traces = list(synthetic_traffic(1000, seed=8))
    prod = producer(cfg)
    produce(prod, cfg, traces[:400])
    b_started = threading.Event()
    stalls: list[str] = []
    lake_threads: set[str] = set()
    results: dict[str, object] = {}
    a, b = Processor(cfg), Processor(cfg)

    def watched(proc: Processor, name: str, stall: bool):
        inner = getattr(proc.lake, name)

        def call(*args, **kwargs):
            thread = threading.current_thread().name
            lake_threads.add(thread)
            # A's first commit once B is joining stalls, on whichever thread makes it
            if stall and b_started.is_set() and not stalls:
                stalls.append(thread)
                time.sleep(stall_s)
            return inner(*args, **kwargs)

        setattr(proc.lake, name, call)

    for proc in (a, b):
        for name in ("commit_batch", "claim", "recover"):
            watched(proc, name, stall=proc is a and name == "commit_batch")
    ta = threading.Thread(target=lambda: results.setdefault("a", a.run(until_idle=3)), daemon=True)
    tb = threading.Thread(target=lambda: results.setdefault("b", b.run(until_idle=3)), daemon=True)
    try:
        ta.start()
        time.sleep(1.5)
        produce(prod, cfg, traces[400:700])
        b_started.set()
        tb.start()
        time.sleep(1.0)
        produce(prod, cfg, traces[700:])
        prod.close()
        ta.join(150)
        tb.join(150)
        assert not ta.is_alive() and not tb.is_alive()
    finally:
        for proc, t in ((a, ta), (b, tb)):
            if t.is_alive():
                proc.stop()
                t.join(30)
    assert stalls, "A never committed after B started"
    assert not [t for t in lake_threads if t.startswith("kafka-")], lake_threads
    assert results["a"].messages > 0 and results["b"].messages > 0  # type: ignore[attr-defined]
    assert_lake_holds_exactly(cfg, traces)
