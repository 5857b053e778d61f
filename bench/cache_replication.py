"""Benchmark: three semantic-cache replicas sharing one compacted Kafka topic.

    .venv/bin/python bench/cache_replication.py [--entries 3000] [--invalidations 100] [--stream-rate 200]
    KAFKA_BOOTSTRAP_SERVERS=host:9092 .venv/bin/python bench/cache_replication.py   # an existing cluster

Starts a local broker (free ports, temp dir) unless ``KAFKA_BOOTSTRAP_SERVERS`` is set, then three
replica processes A, B, C (this file with ``--child``), each a :class:`SemanticCache` (exact FAISS
index, 384-dimensional vectors as MiniLM makes; the vectors are random unit vectors given to
``store_vector``, so no model runs: what is measured is replication, not embedding).

1. **fill** — A stores ``--entries`` entries; B and C apply them. Printed per replica: the
   applier thread's CPU per record (decode + FAISS add under the cache lock) and the whole
   process's CPU per record (kafka-python fetch, decode, apply, everything else); on A the
   storing thread's CPU for a replicated store beside a local store (same process, same
   vectors, a cache without replication; the hot path's publishing overhead as a ratio), and
   A's whole-process CPU per store until everything was produced.
2. **invalidation propagation** — A invalidates a document whose entry B and C hold, one at a
   time; each replica notes (CLOCK_MONOTONIC, shared by the processes) when it has applied the
   invalidation, after which its lookups can no longer hit. Latency = that time minus the time
   just before A's ``invalidate_by_doc``. p50 / p95 / max, idle and again while C stores
   ``--stream-rate`` entries a second.

The machine is shared (the figures move with its load); keep it under ~3 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

DIM = 384


# -- the replica process ---------------------------------------------------------------------------
def child(args: dict[str, Any]) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("kafka").setLevel(logging.ERROR)
    from costline.serving.cache.semantic import SemanticCache
    from costline.serving.settings import CacheConfig

    cfg = CacheConfig(mode="threshold", ttl_s=0, max_entries=1_000_000, replication_topic=args["topic"],
                      replication_bootstrap_servers=args["bootstrap"], replica_id=args["name"],
                      replication_snapshot_interval_s=0, replication_queue_size=100_000)
    cache = SemanticCache(None, cfg, dim=DIM)
    local = SemanticCache(None, CacheConfig(mode="threshold", ttl_s=0, max_entries=1_000_000), dim=DIM)
    applied: dict[str, float] = {}

    def on_applied(change: Any, offset: int) -> None:  # noqa: ARG001
        if change.op == "invalidate_doc":
            applied[change.doc_hash] = time.monotonic()

    assert cache.replication is not None
    cache.replication.add_listener(on_applied)
    cache.start()
    stop_stream = threading.Event()

    def stream(rate: float) -> None:
        rng = np.random.default_rng(1)
        i = 0
        while not stop_stream.wait(1.0 / rate):
            cache.store_vector(rng.normal(size=DIM), f"s{i}", tenant="bench", namespace="stream")
            i += 1

    def vectors(n: int, seed: int) -> np.ndarray:
        return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)

    def out(obj: Any) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    out({"started": True})
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "ready":
            r: Any = {"ready": cache.replication.wait_ready(cmd["timeout"])}
        elif op == "fill":  # n stores, each one record; CPU of replicated vs local stores of the same vectors
            vecs = vectors(cmd["n"], cmd["seed"])
            t0 = time.thread_time()  # the calling thread only: what a request pays
            for i, v in enumerate(vecs):
                local.store_vector(v, f"a{i}", tenant="bench", namespace="fill", doc_hashes=[f"fill-{i}"])
            t_local = time.thread_time() - t0
            p0, t0 = time.process_time(), time.thread_time()
            for i, v in enumerate(vecs):
                cache.store_vector(v, f"a{i}", tenant="bench", namespace="fill", doc_hashes=[f"fill-{i}"])
            t_repl = time.thread_time() - t0
            flushed = cache.force_flush(60)
            r = {"local_s": t_local, "replicated_s": t_repl, "process_s": time.process_time() - p0,
                 "flushed": flushed}
        elif op == "store":
            cache.store_vector(vectors(1, cmd["seed"])[0], "x", tenant="bench", namespace="inv",
                               doc_hashes=[cmd["doc"]])
            r = {"ok": cache.force_flush(30)}
        elif op == "has":
            hit = cache.lookup_vector(vectors(1, cmd["seed"])[0], tenant="bench", namespace="inv")
            r = {"hit": hit is not None}
        elif op == "invalidate":
            t0 = time.monotonic()
            n = cache.invalidate_by_doc(cmd["doc"])
            r = {"t0": t0, "removed": n}
        elif op == "applied":
            r = {"t": applied.get(cmd["doc"])}
        elif op == "stream":
            stop_stream.clear()
            threading.Thread(target=stream, args=(cmd["rate"],), daemon=True).start()
            r = {"ok": True}
        elif op == "stop_stream":
            stop_stream.set()
            r = {"ok": True}
        elif op == "stats":
            st = cache.replication.stats()
            t = os.times()
            r = {"applied": st.applied, "own": st.own, "apply_cpu_s": st.apply_cpu_s, "cpu_s": t.user + t.system,
                 "entries": len(cache), "dropped": st.dropped, "skipped": st.skipped}
        elif op == "quit":
            stop_stream.set()
            cache.shutdown()
            out({"ok": True})
            return
        else:
            r = {"error": op}
        out(r)


# -- the driver ------------------------------------------------------------------------------------
class Replica:
    def __init__(self, name: str, topic: str, bootstrap: str, log: Path) -> None:
        self.name = name
        cmd = [sys.executable, __file__, "--child", json.dumps({"name": name, "topic": topic, "bootstrap": bootstrap})]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(log, "ab"),
                                     text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(x) for x in self.proc.stdout], daemon=True).start()  # type: ignore[union-attr]

    def next(self) -> Any:
        return json.loads(self.lines.get(timeout=120))

    def call(self, op: str, **kw: Any) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        return self.next()


def wait(what: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(0.005)
    return what()


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q)) if values else float("nan")


def invalidations(a: Replica, others: list[Replica], n: int, start: int) -> tuple[list[float], int]:
    """n invalidations on A, one at a time; (latencies in s over both others, ones never seen)."""
    lat: list[float] = []
    missing = 0
    for k in range(start, start + n):
        doc = f"inv-{k}"
        a.call("store", seed=10_000 + k, doc=doc)
        for r in others:  # both hold it before it is invalidated
            wait(lambda r=r: r.call("has", seed=10_000 + k)["hit"])
        t0 = a.call("invalidate", doc=doc)["t0"]
        for r in others:
            t = wait(lambda r=r: r.call("applied", doc=doc)["t"], timeout=30)
            if t is None:
                missing += 1
            else:
                lat.append(t - t0)
                assert not r.call("has", seed=10_000 + k)["hit"]
    return lat, missing


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=3000, help="entries A stores in the fill phase")
    ap.add_argument("--invalidations", type=int, default=100, help="invalidations per phase")
    ap.add_argument("--stream-rate", type=float, default=200.0, help="stores/s on C during the second phase")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return 0

    from costline.config import KafkaConfig
    from costline.localkafka import LocalKafka

    tmp = Path(tempfile.mkdtemp(prefix="costline-bench-repl-"))
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    broker = None
    if external:
        kafka = KafkaConfig(bootstrap_servers=external)
    else:
        kafka = KafkaConfig(port=_free_port(), controller_port=_free_port(), data_dir=tmp / "kafka", heap="512m")
        broker = LocalKafka(kafka)
    replicas: list[Replica] = []
    try:
        t0 = time.perf_counter()
        if broker is not None:
            broker.up()
        print(f"broker {kafka.bootstrap} ({'external' if external else 'local'}, {time.perf_counter() - t0:.0f}s); "
              f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} (shared machine)", flush=True)
        topic = f"bench-cache-{uuid.uuid4().hex[:8]}"
        replicas = [Replica(n, topic, kafka.bootstrap, tmp / f"{n}.log") for n in ("A", "B", "C")]
        for r in replicas:
            assert r.next() == {"started": True}
            assert r.call("ready", timeout=60)["ready"], r.name
        a, b, c = replicas

        before = {r.name: r.call("stats") for r in replicas}
        fill = a.call("fill", n=args.entries, seed=0)
        for r in (b, c):
            wait(lambda r=r: r.call("stats")["applied"] >= args.entries, timeout=120)
        after = {r.name: r.call("stats") for r in replicas}
        n = args.entries
        print(f"\nfill: A stored {n:,} entries (one record each); B and C applied them")
        print(f"  {'replica':8} {'applier µs/record':>18} {'process µs/record':>18} {'records':>8}")
        for r in (b, c):
            d_apply = after[r.name]["apply_cpu_s"] - before[r.name]["apply_cpu_s"]
            d_cpu = after[r.name]["cpu_s"] - before[r.name]["cpu_s"]
            got = after[r.name]["applied"] - before[r.name]["applied"]
            print(f"  {r.name:8} {d_apply / got * 1e6:18.0f} {d_cpu / got * 1e6:18.0f} {got:8,}")
        print(f"  A, the storing thread: local store {fill['local_s'] / n * 1e6:.0f} µs, replicated store "
              f"{fill['replicated_s'] / n * 1e6:.0f} µs (ratio {fill['replicated_s'] / fill['local_s']:.2f})")
        print(f"  A, whole process until flushed (sender: encode + produce; applier: reading its own back): "
              f"{fill['process_s'] / n * 1e6:.0f} µs/store")

        lat_idle, miss_idle = invalidations(a, [b, c], args.invalidations, 0)
        c.call("stream", rate=args.stream_rate)
        lat_load, miss_load = invalidations(a, [b], args.invalidations, args.invalidations)
        c.call("stop_stream")
        print(f"\ninvalidation on A until applied by the others (n = {len(lat_idle)} / {len(lat_load)}):")
        print(f"  {'phase':36} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
        print(f"  {'idle (B and C)':36} {pct(lat_idle, 50):8.1f} {pct(lat_idle, 95):8.1f} {pct(lat_idle, 100):8.1f}")
        print(f"  {f'C storing {args.stream_rate:.0f}/s (B)':36} {pct(lat_load, 50):8.1f} {pct(lat_load, 95):8.1f} "
              f"{pct(lat_load, 100):8.1f}")
        if miss_idle or miss_load:
            print(f"  NOT SEEN within 30 s: {miss_idle + miss_load}")
        stats = {r.name: r.call("stats") for r in replicas}
        held = ", ".join(f"{k} {v['entries']:,}" for k, v in stats.items())
        print(f"\nentries per replica: {held}; "
              f"dropped {sum(v['dropped'] for v in stats.values())}, skipped {sum(v['skipped'] for v in stats.values())}")
        print(f"RESULT invalidation p50 {pct(lat_idle, 50):.1f} ms p95 {pct(lat_idle, 95):.1f} ms idle, "
              f"p95 {pct(lat_load, 95):.1f} ms under {args.stream_rate:.0f} stores/s (target p95 ≤ 1000 ms)")
        return 0 if not (miss_idle or miss_load) else 1
    finally:
        for r in replicas:
            try:
                r.call("quit")
                r.proc.wait(30)
            except Exception:
                r.proc.kill()
        if broker is not None:
            broker.down()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
