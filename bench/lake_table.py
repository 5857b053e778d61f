"""Benchmark: the table lake (Iceberg on SeaweedFS + a PostgreSQL catalog): freshness at a sustained
rate, and one processor vs three.

    .venv/bin/python bench/lake_table.py [--phases freshness,scaling] [--rate 5000] [--seconds 30]
                                         [--spans 40000] [--batch 5000] [--flush 2.0]

0. **freshness** (``--phases freshness``): one ``costline process`` consumes while this process
   produces ``--rate`` spans/s for ``--seconds`` (paced every 50 ms), recording each message's send
   time and the (partition, offset) Kafka gives it; a reader thread opens the views exactly as
   ``costline sql`` does (:func:`costline.lake.open_lake`: the tables' current snapshots through
   DuckDB) again and again and reads each partition's highest visible ``kafka_offset``. A message is
   visible at the end of the first read that covers its offset (conservative: the read's own time
   counts). Prints the rate actually produced, the rate committed, freshness p50/p95/max, and the
   processor's commit latency p50/p95; freshness that grows through the run means the rate is not
   sustained (the processor falls behind);

1. starts a local broker, a SeaweedFS object store and a throwaway PostgreSQL cluster (the shared
   catalog), all on free ports in a temp dir (``KAFKA_BOOTSTRAP_SERVERS`` uses an existing broker);
2. builds synthetic traces (seed 0) once and produces them to two fresh 6-partition topics;
3. **bare**: decode + flatten of the same messages in this process (spans per CPU-second);
4. **1 processor**, then **3 processors** (separate processes, one consumer group, each with its own
   scratch directory, one object store + catalog, a fresh namespace each): ``costline process
   --until-idle 3``. Timed from launch until every partition's offsets are committed in all three
   tables (group join included), and between the first and the last batch commit;
5. commit latency (one batch = three table commits) p50/p95 from the processors' debug log, with
   the retries the catalog's optimistic concurrency caused; checks one row per span in the tables.

Prints the ratios side by side. About 2-3 minutes on 2 shared cores with the defaults.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from costline.config import Config, KafkaConfig, LakeConfig, ProcessorConfig
from costline.sim.synth import synthetic_traffic

_COMMIT = re.compile(r"table commit: partition (\d+) offsets (\d+)\.\.(\d+), (\d+) rows, ([0-9.]+) s, (\d+) retries")
_RUNNER = ("import logging, sys; logging.getLogger('costline.tablelake').setLevel(logging.DEBUG); "
           "from costline.cli import main; main(sys.argv[1:])")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _messages(target_spans: int) -> tuple[list[tuple[bytes, bytes]], int]:
    msgs, spans = [], 0
    for t in synthetic_traffic(10**9, seed=0):
        msgs.append((t.trace_id.encode(), t.request.SerializeToString()))
        spans += sum(len(ss.spans) for rs in t.request.resource_spans for ss in rs.scope_spans)
        if spans >= target_spans:
            return msgs, spans
    raise AssertionError("unreachable")


def _bare(values: list[bytes]) -> float:
    from costline.processors.decode import decode_message, flatten_message
    from costline.processors.records import MemoPricingTable

    pricing, spans, c0 = MemoPricingTable(), 0, time.process_time()
    for offset, value in enumerate(values):
        spans += flatten_message(decode_message(value, None), pricing, 0, offset).spans
    return spans / (time.process_time() - c0)


def _env(cfg: Config, scratch: Path) -> dict[str, str]:
    lake, p = cfg.lake, cfg.processor
    env = dict(os.environ)
    env.update({
        "COSTLINE_CONFIG": os.devnull, "KAFKA_BOOTSTRAP_SERVERS": cfg.kafka.bootstrap,
        "COSTLINE_KAFKA_TOPIC": cfg.kafka.topic, "COSTLINE_KAFKA_DLQ_TOPIC": cfg.kafka.dlq_topic,
        "COSTLINE_PROCESSOR_GROUP_ID": p.group_id, "COSTLINE_PROCESSOR_BATCH_MAX_SPANS": str(p.batch_max_spans),
        "COSTLINE_PROCESSOR_FLUSH_INTERVAL_S": str(p.flush_interval_s),
        "COSTLINE_PROCESSOR_SESSION_TIMEOUT_MS": "10000", "COSTLINE_PROCESSOR_HEARTBEAT_INTERVAL_MS": "1000",
        "COSTLINE_LAKE_PATH": str(scratch / "lake"), "COSTLINE_LAKE_MODE": "table",
        "COSTLINE_LAKE_CATALOG_URI": str(lake.catalog_uri), "COSTLINE_LAKE_NAMESPACE": lake.namespace,
        "COSTLINE_LAKE_WAREHOUSE": lake.warehouse, "COSTLINE_LAKE_S3_ENDPOINT": str(lake.s3_endpoint),
        "COSTLINE_LAKE_S3_ACCESS_KEY_ID": lake.s3_access_key_id,
        "COSTLINE_LAKE_S3_SECRET_ACCESS_KEY": lake.s3_secret_access_key,
    })
    return env


def _all_committed(cfg: Config, ends: dict[int, int]) -> bool:
    from costline.tablelake import TableLake

    lake = TableLake(cfg.lake)
    got = lake.recover_many(cfg.kafka.topic, list(ends))
    return all(got[p] is not None and got[p] >= end for p, end in ends.items())


def _run(cfg: Config, instances: int, ends: dict[int, int], tmp: Path) -> dict[str, object]:
    from costline.tablelake import BATCH_PROPERTY, TableLake

    TableLake(cfg.lake).init()
    logs = [tmp / f"{cfg.lake.namespace}-{i}.log" for i in range(instances)]
    t0 = time.time()
    procs = []
    for i, log in enumerate(logs):
        scratch = tmp / f"{cfg.lake.namespace}-scratch-{i}"
        scratch.mkdir()
        with open(log, "wb") as out:
            procs.append(subprocess.Popen([sys.executable, "-c", _RUNNER, "-v", "process", "--until-idle", "3"],
                                          env=_env(cfg, scratch), stdout=out, stderr=subprocess.STDOUT))
    while not _all_committed(cfg, ends):
        if all(p.poll() is not None for p in procs):
            break
        time.sleep(0.25)
    wall = time.time() - t0
    for p in procs:
        p.wait(300)
    snaps = [s for s in TableLake(cfg.lake).table("requests").snapshots()
             if s.summary and "claim" not in s.summary.additional_properties.get(BATCH_PROPERTY, "claim")]
    first, last = min(s.timestamp_ms for s in snaps) / 1000, max(s.timestamp_ms for s in snaps) / 1000
    latencies, retries, batches = [], 0, 0
    for log in logs:
        for m in _COMMIT.finditer(log.read_text(errors="replace")):
            latencies.append(float(m.group(5)))
            retries += int(m.group(6))
            batches += 1
    latencies.sort()
    return {"wall": wall, "between_commits": last - first, "batches": batches, "retries": retries,
            "p50": statistics.median(latencies), "p95": latencies[int(0.95 * (len(latencies) - 1))],
            "exit": [p.returncode for p in procs], "snapshots": len(snaps)}


def _freshness(cfg: Config, msgs: list[tuple[bytes, bytes]], spans_per_msg: float, rate: float, seconds: float,
               tmp: Path) -> dict[str, object]:
    """Produce at ``rate`` spans/s for ``seconds`` with one processor running; see the module doc."""
    import threading

    from kafka import KafkaProducer

    from costline.lake import open_lake
    from costline.tablelake import TableLake

    TableLake(cfg.lake).init()
    open_lake(cfg).close()  # creates the result tables once, as the first `costline sql` would
    scratch = tmp / f"{cfg.lake.namespace}-fresh"
    scratch.mkdir()
    log = tmp / f"{cfg.lake.namespace}-fresh.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", _RUNNER, "-v", "process", "--until-idle", "4"],
                                env=_env(cfg, scratch), stdout=out, stderr=subprocess.STDOUT)
    sent: dict[tuple[int, int], float] = {}
    lock = threading.Lock()
    seen: dict[int, int] = {}
    visible: dict[tuple[int, int], float] = {}
    reads: list[float] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            t0 = time.time()
            con = open_lake(cfg)
            rows = con.execute("SELECT kafka_partition, max(kafka_offset) FROM requests_raw GROUP BY 1").fetchall()
            con.close()
            t1 = time.time()
            reads.append(t1 - t0)
            with lock:
                for p, top in rows:
                    seen[p] = max(seen.get(p, -1), top)
                for key in [k for k in sent if k not in visible and k[1] <= seen.get(k[0], -1)]:
                    visible[key] = t1
            time.sleep(0.05)

    prod = KafkaProducer(bootstrap_servers=cfg.kafka.bootstrap, acks=1, linger_ms=5)
    time.sleep(8)  # let the processor join its group before the clock starts
    th = threading.Thread(target=reader, daemon=True)
    th.start()
    per_tick = rate / spans_per_msg * 0.05
    t_start = time.time()
    n = 0
    due = 0.0
    while time.time() - t_start < seconds:
        due += per_tick
        while n < due and n < len(msgs):
            k, v = msgs[n]
            t_emit = time.time()

            def done(md, t_emit=t_emit):  # type: ignore[no-untyped-def]
                with lock:
                    sent[(md.partition, md.offset)] = t_emit

            prod.send(cfg.kafka.topic, key=k, value=v).add_callback(done)
            n += 1
        if n >= len(msgs):
            break
        time.sleep(max(0.0, t_start + (due / per_tick) * 0.05 - time.time()))
    prod.flush()
    produced_s = time.time() - t_start
    deadline = time.time() + 120
    while time.time() < deadline:
        with lock:
            if len(visible) >= len(sent):
                break
        time.sleep(0.2)
    stop.set()
    th.join(30)
    proc.wait(120)
    prod.close()
    with lock:
        lags = sorted(visible[k] - sent[k] for k in visible)
        last_visible = max(visible.values()) if visible else t_start
        half = sorted(visible[k] - sent[k] for k in visible if sent[k] < t_start + produced_s / 2)
        second = sorted(visible[k] - sent[k] for k in visible if sent[k] >= t_start + produced_s / 2)
    lat = sorted(float(m.group(5)) for m in _COMMIT.finditer(log.read_text(errors="replace")))
    sizes = {}
    for table in ("requests", "calls", "lookups"):  # bytes per row as written (before any compaction)
        snap = TableLake(cfg.lake).table(table).current_snapshot()
        summary = snap.summary.additional_properties if snap and snap.summary else {}
        rows_, bytes_ = int(summary.get("total-records", 0)), int(summary.get("total-files-size", 0))
        files_ = int(summary.get("total-data-files", 0))
        sizes[table] = (rows_, bytes_, files_)

    def pct(xs: list[float], q: float) -> float:
        return xs[int(q * (len(xs) - 1))] if xs else float("nan")

    return {"messages": n, "spans": n * spans_per_msg, "produced_rate": n * spans_per_msg / produced_s,
            "committed_rate": n * spans_per_msg / max(last_visible - t_start, 1e-9),
            "visible": len(lags), "p50": pct(lags, 0.5), "p95": pct(lags, 0.95), "max": lags[-1] if lags else 0,
            "p95_first_half": pct(half, 0.95), "p95_second_half": pct(second, 0.95),
            "read_p50": pct(sorted(reads), 0.5), "commit_p50": pct(lat, 0.5), "commit_p95": pct(lat, 0.95),
            "batches": len(lat), "exit": proc.returncode, "sizes": sizes}


def _rows(cfg: Config) -> tuple[int, int]:
    from costline.lake import open_lake

    con = open_lake(cfg)
    total = dup = 0
    for t in ("requests_raw", "calls_raw", "lookups_raw"):
        n, d = con.execute(f"SELECT count(*), count(*) - count(DISTINCT (trace_id, span_id)) FROM {t}").fetchone()
        total, dup = total + n, dup + d
    return total, dup


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans", type=int, default=40_000)
    ap.add_argument("--batch", type=int, default=5_000, help="[processor] batch_max_spans")
    ap.add_argument("--flush", type=float, default=2.0, help="[processor] flush_interval_s")
    ap.add_argument("--phases", default="freshness,scaling", help="freshness, scaling, or both (comma-separated)")
    ap.add_argument("--rate", type=float, default=5000.0, help="freshness: spans/s produced")
    ap.add_argument("--seconds", type=float, default=30.0, help="freshness: seconds of production")
    args = ap.parse_args()
    phases = set(args.phases.split(","))

    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    from costline.localcatalog import LocalPostgres
    from costline.localkafka import LocalKafka, ensure_topics
    from costline.localobjstore import LocalObjectStore

    tmp = Path(tempfile.mkdtemp(prefix="costline-bench-lake-"))
    os.chmod(tmp, 0o755)  # the PostgreSQL server runs as `postgres` when this runs as root
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    kafka = KafkaConfig(bootstrap_servers=external) if external else KafkaConfig(
        port=_free_port(), controller_port=_free_port(), data_dir=tmp / "kafka", heap="1g", partitions=6)
    broker = None if external else LocalKafka(kafka)
    store = LocalObjectStore(tmp / "objstore", port=_free_port(), access_key="bench", secret_key="bench-secret",
                             buckets=("costline-lake",))
    pg = LocalPostgres(tmp / "pg", port=_free_port())
    try:
        t0 = time.perf_counter()
        if broker:
            broker.up()
        store.up()
        catalog = pg.up()
        print(f"broker, SeaweedFS and PostgreSQL up in {time.perf_counter() - t0:.1f}s", flush=True)
        def config(sfx: str, kcfg: KafkaConfig) -> Config:
            ns = f"bench_{sfx}"
            return Config(kafka=kcfg, lake=LakeConfig(
                path=tmp / "lake", mode="table", catalog_uri=catalog, namespace=ns,
                warehouse=f"s3://costline-lake/{ns}", s3_endpoint=store.endpoint, s3_access_key_id="bench",
                s3_secret_access_key="bench-secret"),
                processor=ProcessorConfig(group_id=f"bench-{sfx}", batch_max_spans=args.batch,
                                          flush_interval_s=args.flush))

        if "freshness" in phases:
            fmsgs, fspans = _messages(int(args.rate * args.seconds))
            sfx = uuid.uuid4().hex[:8]
            kcfg = KafkaConfig(bootstrap_servers=kafka.bootstrap, topic=f"bench_fresh_{sfx}",
                               dlq_topic=f"bench_fresh_{sfx}.dlq", partitions=6)
            ensure_topics(kcfg)
            f = _freshness(config(sfx, kcfg), fmsgs, fspans / len(fmsgs), args.rate, args.seconds, tmp)
            print(f"freshness, 1 processor, target {args.rate:,.0f} spans/s for {args.seconds:.0f}s: produced "
                  f"{f['produced_rate']:,.0f} spans/s, committed {f['committed_rate']:,.0f} spans/s; span emitted -> "
                  f"visible in `costline sql`: p50 {f['p50']:.1f}s p95 {f['p95']:.1f}s max {f['max']:.1f}s "
                  f"(p95 first half {f['p95_first_half']:.1f}s, second half {f['p95_second_half']:.1f}s); "
                  f"{f['visible']}/{f['messages']} messages seen; reader open+query p50 {f['read_p50']:.2f}s; "
                  f"{f['batches']} batches, commit p50 {f['commit_p50'] * 1000:.0f} ms p95 "
                  f"{f['commit_p95'] * 1000:.0f} ms; exit {f['exit']}", flush=True)
            for table, (rows_, bytes_, files_) in f["sizes"].items():
                print(f"  {table}: {rows_:,} rows in {files_} data files, {bytes_ / max(rows_, 1):.0f} bytes/row, "
                      f"{bytes_ / max(files_, 1) / 1024:.0f} KiB/file")
            if "scaling" not in phases:
                return 0 if f["visible"] == f["messages"] else 1
        msgs, spans = _messages(args.spans)
        bare = _bare([v for _, v in msgs])
        results = {}
        for n in (1, 3):
            sfx = uuid.uuid4().hex[:8]
            kcfg = KafkaConfig(bootstrap_servers=kafka.bootstrap, topic=f"bench_lake_{sfx}",
                               dlq_topic=f"bench_lake_{sfx}.dlq", partitions=6)
            ensure_topics(kcfg)
            prod = KafkaProducer(bootstrap_servers=kcfg.bootstrap, acks="all", linger_ms=20)
            for k, v in msgs:
                prod.send(kcfg.topic, key=k, value=v)
            prod.flush()
            prod.close()
            c = KafkaConsumer(bootstrap_servers=kcfg.bootstrap)
            ends = {tp.partition: off - 1 for tp, off in
                    c.end_offsets([TopicPartition(kcfg.topic, p) for p in range(6)]).items() if off > 0}
            c.close()
            cfg = config(sfx, kcfg)
            r = _run(cfg, n, ends, tmp)
            r["rows"], r["dups"] = _rows(cfg)
            results[n] = r
            print(f"{n} processor(s): {spans / r['wall']:,.0f} spans/s from launch ({r['wall']:.1f}s incl. group "
                  f"join), {spans / max(r['between_commits'], 1e-9):,.0f} spans/s first→last commit; "
                  f"{r['batches']} batches, commit p50 {r['p50'] * 1000:.0f} ms p95 {r['p95'] * 1000:.0f} ms, "
                  f"{r['retries']} retries; rows {r['rows']}/{spans}, dups {r['dups']}, exit {r['exit']}",
                  flush=True)
        one, three = results[1], results[3]
        print(f"\nbare decode+flatten: {bare:,.0f} spans per CPU-second (this process)")
        print(f"3 vs 1 processors, from launch: {one['wall'] / three['wall']:.2f}x; first→last commit: "
              f"{one['between_commits'] / max(three['between_commits'], 1e-9):.2f}x")
        print(f"per instance vs bare: 1 proc {spans / one['wall'] / bare:.3f}, "
              f"3 procs {spans / three['wall'] / 3 / bare:.3f} (wall-clock, 2 shared cores)")
        print(f"commit latency p50/p95: 1 proc {one['p50'] * 1000:.0f}/{one['p95'] * 1000:.0f} ms, "
              f"3 procs {three['p50'] * 1000:.0f}/{three['p95'] * 1000:.0f} ms")
        ok = all(r["rows"] == spans and r["dups"] == 0 for r in results.values())
        return 0 if ok else 1
    finally:
        pg.down()
        store.down()
        if broker:
            broker.down()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
