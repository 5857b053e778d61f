"""Benchmark: OTLP spans through Kafka and ``costline process`` into the lake, beside a bare decode.

    .venv/bin/python bench/processor.py [--spans 100000] [--rounds 5] [--profile out.pstats]

1. starts a local broker on free ports in a temp dir (or uses ``KAFKA_BOOTSTRAP_SERVERS``)
   and creates a fresh topic;
2. builds synthetic, contract-conformant traces (:mod:`costline.sim.synth`),
   encodes each once in the Collector's format (one ``ExportTraceServiceRequest``
   per trace, key = trace id hex) and produces them all *before* any timing;
3. **bare**: decode + flatten of exactly those message values in this process,
   no Kafka, no buffers, no Parquet (spans per CPU-second);
4. **end to end**: an in-process ``Processor(config).run(until_idle=...)`` on a
   fresh consumer group, timed from the first poll that returns records to the
   last lake commit (manifest written), with this process's CPU time over the
   same window (all threads: kafka-python's IO thread included; the broker is a
   separate process and not counted);
5. prints both rates and e2e / bare, and checks that the lake holds exactly one
   row per span produced (no loss, no duplicates).

Steps 3 and 4 alternate for ``--rounds`` rounds (bare, e2e, bare, e2e, ...; each e2e round on a
fresh consumer group and a fresh lake). Each round's ratio compares a bare run with the e2e run
right after it, so both saw about the same load; the result is the **median** of the rounds'
ratios (and of each side's rates), printed beside the per-round table: on a shared machine one
round can land on a busy moment, and a best-of-N would compare the quietest moment of one side
with the quietest of the other.

An e2e round that has not finished after ``--round-timeout`` seconds is stopped (the processor's
``stop()``: it flushes and closes), the stacks of all threads are printed, and the round counts as
failed: a wedged round ends the bench instead of hanging it.

"Per core" = spans per CPU-second of the Python process. The machine this was
written on has 2 shared cores (broker + processor), so wall-clock rates are
noisier than CPU-normalised ones.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import logging
import os
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from statistics import median

from costline.config import Config, KafkaConfig, LakeConfig, ProcessorConfig
from costline.sim.synth import synthetic_traffic


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def build_messages(target_spans: int, seed: int) -> tuple[list[tuple[bytes, bytes]], int]:
    """``[(key, value)]`` holding at least ``target_spans`` spans, encoded once."""
    msgs: list[tuple[bytes, bytes]] = []
    spans = 0
    for trace in synthetic_traffic(10**9, seed=seed):
        msgs.append((trace.trace_id.encode(), trace.request.SerializeToString()))
        spans += sum(len(ss.spans) for rs in trace.request.resource_spans for ss in rs.scope_spans)
        if spans >= target_spans:
            break
    return msgs, spans


def produce(kafka: KafkaConfig, msgs: list[tuple[bytes, bytes]]) -> None:
    from kafka import KafkaProducer

    prod = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks=1, linger_ms=20,
                         batch_size=512 * 1024, max_request_size=8 * 1024 * 1024,
                         client_id="costline-bench")
    send = prod.send
    topic = kafka.topic
    for key, value in msgs:
        send(topic, key=key, value=value)
    prod.flush()
    prod.close()


def bare_decode(values: list[bytes], repeat: int) -> tuple[int, float, float]:
    """Best of ``repeat`` runs: (spans, wall s, cpu s) of decode + flatten over ``values``."""
    from costline.processors.decode import decode_message, flatten_message
    from costline.processors.records import MemoPricingTable

    best: tuple[int, float, float] | None = None
    for _ in range(repeat):
        pricing = MemoPricingTable()
        spans = 0
        w0, c0 = _clock()
        for offset, value in enumerate(values):
            out = flatten_message(decode_message(value, None), pricing, 0, offset)
            spans += out.spans
            del out
        w1, c1 = _clock()
        run = (spans, w1 - w0, c1 - c0)
        if best is None or run[2] < best[2]:
            best = run
    assert best is not None
    return best


class _TimedConsumer:
    """Wraps the processor's KafkaConsumer: notes the first poll that returns records."""

    def __init__(self, inner, marks: dict) -> None:
        self._inner = inner
        self._marks = marks

    def poll(self, *args, **kwargs):
        batch = self._inner.poll(*args, **kwargs)
        if batch and "first" not in self._marks:
            self._marks["first"] = _clock()
        return batch

    def __getattr__(self, name):
        return getattr(self._inner, name)


def end_to_end(config: Config, until_idle: float, profile: str | None, timeout_s: float):
    import faulthandler
    import threading

    from kafka import KafkaConsumer

    from costline.processors.processor import Processor

    marks: dict[str, tuple[float, float]] = {}
    proc = Processor(config, consumer_factory=lambda **kw: _TimedConsumer(KafkaConsumer(**kw), marks))
    inner_commit = proc.lake.commit_batch

    def commit_batch(*args, **kwargs):
        manifest = inner_commit(*args, **kwargs)
        marks["last"] = _clock()
        return manifest

    proc.lake.commit_batch = commit_batch  # type: ignore[method-assign]
    def wedged() -> None:
        marks["timed_out"] = _clock()
        print(f"end-to-end round still running after {timeout_s:g}s: stopping it; thread stacks:",
              file=sys.stderr, flush=True)
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        proc.stop()

    watchdog = threading.Timer(timeout_s, wedged)
    watchdog.daemon = True
    prof = cProfile.Profile() if profile else None
    marks["start"] = _clock()
    watchdog.start()
    try:
        if prof:
            prof.enable()
        stats = proc.run(until_idle=until_idle)
        if prof:
            prof.disable()
            prof.dump_stats(profile)
    finally:
        watchdog.cancel()
    marks["end"] = _clock()
    return stats, marks


def lake_rows(config: Config) -> tuple[dict[str, int], int]:
    """Rows per table and duplicate (trace_id, span_id) pairs, via the lake's DuckDB views."""
    from costline.lake import open_lake

    con = open_lake(config)
    counts, dups = {}, 0
    for table in ("requests", "calls", "lookups"):
        n, distinct = con.execute(
            f"SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM {table}_raw").fetchone()
        counts[table] = n
        dups += n - distinct
    con.close()
    return counts, dups


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spans", type=int, default=100_000, help="spans to produce (at least; whole traces)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=4,
                    help="alternating bare / end-to-end rounds; the median round ratio counts")
    ap.add_argument("--round-timeout", type=float, default=180.0,
                    help="seconds an end-to-end round may run before it is stopped and counted as failed")
    ap.add_argument("--bare-repeat", type=int, default=1, help="bare-decode runs per round; the fastest counts")
    ap.add_argument("--until-idle", type=float, default=2.0)
    ap.add_argument("--batch-max-spans", type=int, default=None, help="override [processor] batch_max_spans")
    ap.add_argument("--flush-interval-s", type=float, default=None, help="override [processor] flush_interval_s")
    ap.add_argument("--profile", metavar="PSTATS", help="cProfile the first end-to-end run into this file")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (lake, broker data)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.ERROR)

    from costline.localkafka import LocalKafka, ensure_topics

    tmp = Path(tempfile.mkdtemp(prefix="costline-bench-"))
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    broker = None
    suffix = uuid.uuid4().hex[:8]
    topics = dict(topic=f"bench_spans_{suffix}", dlq_topic=f"bench_spans_{suffix}.dlq", partitions=args.partitions)
    if external:
        kafka = KafkaConfig(bootstrap_servers=external, **topics)
    else:
        kafka = KafkaConfig(port=_free_port(), controller_port=_free_port(), data_dir=tmp / "kafka",
                            heap="1g", **topics)
        broker = LocalKafka(kafka)
    try:
        t0 = time.perf_counter()
        if broker is not None:
            broker.up()
        else:
            ensure_topics(kafka)
        print(f"broker {kafka.bootstrap} ({'external' if external else 'local, started'} "
              f"in {time.perf_counter() - t0:.1f}s); topic {kafka.topic}, {args.partitions} partitions", flush=True)

        t0 = time.perf_counter()
        msgs, n_spans = build_messages(args.spans, args.seed)
        n_bytes = sum(len(v) for _, v in msgs)
        print(f"built {len(msgs):,} messages / {n_spans:,} spans ({n_bytes / 1e6:.0f} MB, "
              f"{n_bytes / len(msgs):.0f} B/message) in {time.perf_counter() - t0:.1f}s", flush=True)
        t0 = time.perf_counter()
        produce(kafka, msgs)
        print(f"produced in {time.perf_counter() - t0:.1f}s", flush=True)

        values = [v for _, v in msgs]
        del msgs
        overrides = {k: v for k, v in (("batch_max_spans", args.batch_max_spans),
                                       ("flush_interval_s", args.flush_interval_s)) if v is not None}
        rounds = []
        ok = True
        for rnd in range(args.rounds):
            gc.collect()
            spans_bare, wall_bare, cpu_bare = bare_decode(values, args.bare_repeat)
            assert spans_bare == n_spans, (spans_bare, n_spans)
            gc.collect()
            print(f"[round {rnd + 1}] bare decode+flatten: {n_spans:,} spans, {wall_bare:.2f}s wall, "
                  f"{cpu_bare:.2f}s CPU -> {n_spans / cpu_bare:,.0f} spans/s per core "
                  f"({n_spans / wall_bare:,.0f} spans/s wall)", flush=True)
            config = Config(kafka=kafka, lake=LakeConfig(path=tmp / f"lake{rnd}"),
                            processor=ProcessorConfig(group_id=f"costline-bench-{suffix}-{rnd}", **overrides))
            stats, marks = end_to_end(config, args.until_idle, args.profile if rnd == 0 else None,
                                      args.round_timeout)
            if "timed_out" in marks or "first" not in marks or "last" not in marks:
                print(f"[round {rnd + 1}] end to end: FAILED (stopped after {args.round_timeout:g}s, "
                      f"{stats.messages:,} messages handled, {stats.commits} lake commits)", flush=True)
                ok = False
                break
            (ws, cs), (wf, cf), (wl, cl) = marks["start"], marks["first"], marks["last"]
            wall_e2e, cpu_e2e = wl - wf, cl - cf
            print(f"[round {rnd + 1}] end to end (first records polled -> last lake commit): {n_spans:,} spans, "
                  f"{wall_e2e:.2f}s wall, {cpu_e2e:.2f}s CPU -> {n_spans / cpu_e2e:,.0f} spans/s per core "
                  f"({n_spans / wall_e2e:,.0f} spans/s wall); incl. group join {wl - ws:.2f}s wall, "
                  f"{cl - cs:.2f}s CPU; {stats.commits} lake commits; round ratio "
                  f"{cpu_bare / cpu_e2e:.2f}", flush=True)
            counts, dups = lake_rows(config)
            rows = sum(counts.values())
            round_ok = rows == n_spans and dups == 0 and stats.spans == n_spans and stats.dlq == 0
            ok = ok and round_ok
            print(f"[round {rnd + 1}] lake rows {rows:,} ({', '.join(f'{k} {v:,}' for k, v in counts.items())}), "
                  f"duplicates {dups}: {'OK' if round_ok else 'MISMATCH'} (spans produced {n_spans:,})", flush=True)
            rounds.append({"bare_cpu_s": cpu_bare, "bare_wall_s": wall_bare, "e2e_cpu_s": cpu_e2e,
                           "e2e_wall_s": wall_e2e, "commits": stats.commits, "lake_rows": counts,
                           "messages": stats.messages, "ok": round_ok})
        del values
        if not rounds:
            print("RESULT none: no end-to-end round finished")
            return 1
        bare_rates = [n_spans / r["bare_cpu_s"] for r in rounds]
        e2e_rates = [n_spans / r["e2e_cpu_s"] for r in rounds]
        ratios = [r["bare_cpu_s"] / r["e2e_cpu_s"] for r in rounds]
        print(f"\n{'round':>5} {'bare spans/s/core':>18} {'e2e spans/s/core':>17} {'e2e spans/s wall':>17} "
              f"{'e2e/bare':>9}")
        for i, r in enumerate(rounds):
            print(f"{i + 1:>5} {bare_rates[i]:>18,.0f} {e2e_rates[i]:>17,.0f} "
                  f"{n_spans / r['e2e_wall_s']:>17,.0f} {ratios[i]:>9.2f}")
        bare_rate, e2e_rate, ratio = median(bare_rates), median(e2e_rates), median(ratios)
        wall_rate = median(n_spans / r["e2e_wall_s"] for r in rounds)
        print(f"{'median':>5} {bare_rate:>18,.0f} {e2e_rate:>17,.0f} {wall_rate:>17,.0f} {ratio:>9.2f}")
        print(f"RESULT bare {bare_rate:,.0f} spans/s/core | e2e {e2e_rate:,.0f} spans/s/core "
              f"({wall_rate:,.0f} wall) | ratio e2e/bare {ratio:.2f} "
              f"({'>=' if ratio >= 0.5 else '<'} 0.5 target; median of {len(rounds)} alternating rounds, "
              f"range {min(ratios):.2f}-{max(ratios):.2f})")
        if args.json:
            Path(args.json).write_text(json.dumps({
                "spans": n_spans, "bare_spans_per_cpu_s": bare_rate, "e2e_spans_per_cpu_s": e2e_rate,
                "e2e_spans_per_wall_s": wall_rate, "ratio": ratio, "ratio_of": "median of rounds",
                "rounds": rounds, "ok": ok,
            }, indent=1))
        return 0 if ok else 1
    finally:
        if broker is not None:
            broker.down()
        if args.keep:
            print(f"kept {tmp}")
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
