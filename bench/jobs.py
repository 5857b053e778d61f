"""Benchmark: the sampling + statistics part of `costline jobs drift` beside a bare DuckDB aggregate.

Writes N synthetic requests (and one call each; 10% student-served with captured content) over
8 days into a lake with the processor's layout, then times, on the same files:

* **bare**  — an hourly per-tier aggregate straight over the request Parquet files;
* **drift** — what `jobs drift` does besides calling the teacher: the stratified sample of the
  last day's student requests through the lake's views (:func:`sample_requests`), then the
  per-subtype statistics (bootstrap CIs, Mann-Whitney, trend) and the input-drift tests
  (PSI, KS) on synthetic scores.

    python bench/jobs.py                 # 10M rows
    python bench/jobs.py --rows 1000000
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np

from costline.config import Config, LakeConfig
from costline.jobs.drift import SubtypeScores, assess_inputs, assess_subtypes
from costline.jobs.sampling import sample_requests
from costline.jobs.settings import DriftConfig
from costline.lake import Lake, open_lake

DAYS = 8
START = datetime(2026, 11, 1)


def build(lake: Path, rows: int) -> None:
    Lake(lake).init()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    per_day = rows // DAYS
    for d in range(DAYS):
        lo, hi = d * per_day, (d + 1) * per_day
        day = f"2026-11-{d + 1:02d}"
        for table in ("requests", "calls"):
            (lake / table / f"date={day}").mkdir(parents=True, exist_ok=True)
        base = f"""
          SELECT i, TIMESTAMP '{START:%Y-%m-%d}' + to_microseconds(CAST(i * (86400000000 * {DAYS} // {rows}) AS BIGINT)) AS ts,
                 CASE WHEN i % 10 = 0 THEN 'student' WHEN i % 10 < 6 THEN 'budget' WHEN i % 10 < 8 THEN 'mid'
                      WHEN i % 10 = 8 THEN 'cache' ELSE 'frontier' END AS tier,
                 ['sentiment', 'intent', 'urgency', 'billing'][1 + (i // 10) % 4] AS subtype,
                 lpad(to_hex(i), 32, '0') AS trace_id
          FROM range({lo}, {hi}) r(i)"""
        con.execute(f"""COPY (SELECT 'r' || i AS request_id, trace_id, lpad(to_hex(i), 16, '0') AS span_id, ts,
              'acme' AS tenant, 'classification' AS task_type, subtype, tier, tier AS routed_tier,
              tier = 'cache' AS cache_hit, 1::BIGINT AS attempts, 0::BIGINT AS escalations, true AS success,
              NULL::VARCHAR AS error_type, 10.0 AS duration_ms, NULL::VARCHAR AS input_messages,
              NULL::VARCHAR AS output_messages, 0::INTEGER AS kafka_partition, i::BIGINT AS kafka_offset
            FROM ({base})) TO '{lake}/requests/date={day}/p000-{lo:012d}-{hi - 1:012d}.parquet' (FORMAT parquet)""")
        con.execute(f"""COPY (SELECT 'c' || lpad(to_hex(i), 15, '0') AS span_id, trace_id,
              lpad(to_hex(i), 16, '0') AS parent_span_id, 'r' || i AS request_id, ts, 'chat' AS operation,
              'anthropic' AS provider, 'claude-haiku-4-5' AS model, 'claude-haiku-4-5' AS response_model, tier,
              (300 + i % 700)::BIGINT AS input_tokens, (20 + i % 60)::BIGINT AS output_tokens,
              0::BIGINT AS cache_read_tokens, 0::BIGINT AS cache_creation_tokens, false AS batch,
              ['end_turn'] AS finish_reasons, NULL::VARCHAR AS error_type, 0.0005 AS cost_usd,
              'priced' AS pricing_status, '2026-06' AS pricing_version, 100.0 AS duration_ms,
              CASE WHEN tier = 'student' THEN '[{{"role":"user","parts":[{{"type":"text","content":"Classify the '
                   || subtype || ' of message ' || i || '"}}]}}]' END AS input_messages,
              CASE WHEN tier = 'student' THEN '[{{"role":"assistant","parts":[{{"type":"text","content":"label"}}]}}]'
                   END AS output_messages,
              0::INTEGER AS kafka_partition, i::BIGINT AS kafka_offset
            FROM ({base}) WHERE tier <> 'cache') TO '{lake}/calls/date={day}/p000-{lo:012d}-{hi - 1:012d}.parquet'
            (FORMAT parquet)""")
    con.close()


def timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--sample", type=int, default=500)
    ap.add_argument("--keep", type=Path, default=None, help="Build (or reuse) the lake here instead of a temp dir.")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="costline-bench-jobs-"))
    lake = args.keep or tmp / "lake"
    try:
        if not (lake / "requests").exists():
            t = time.perf_counter()
            build(lake, args.rows)
            print(f"built {args.rows:,} requests in {time.perf_counter() - t:.1f}s at {lake}")
        config = Config(lake=LakeConfig(path=lake))
        glob = f"{lake}/requests/*/*.parquet"
        bare_con = duckdb.connect()

        def bare() -> None:
            bare_con.execute(f"SELECT date_trunc('hour', ts) AS h, tier, count(*), count(*) FILTER (WHERE success) "
                             f"FROM read_parquet('{glob}') GROUP BY ALL").fetchall()

        cfg = DriftConfig()
        rng = np.random.default_rng(0)
        history = {s: list(rng.normal(0.08, 0.005, 13)) for s in ("sentiment", "intent", "urgency", "billing")}

        def drift() -> None:
            con = open_lake(config)
            try:
                sample = sample_requests(con, tier="student", since=datetime(2026, 11, 8), until=datetime(2026, 11, 9),
                                         size=args.sample, seed=1, min_per_subtype=cfg.min_per_subtype)
            finally:
                con.close()
            assert len(sample) == args.sample, len(sample)
            per: dict[str, list[float]] = {}
            for s in sample:
                per.setdefault(s.subtype, []).append(float(rng.normal(0.92, 0.05)))
            cur = {k: SubtypeScores.of(v) for k, v in per.items()}
            base = {k: SubtypeScores.of(rng.normal(0.92, 0.05, len(v))) for k, v in per.items()}
            assess_subtypes(cur, cfg, baseline=base, history=history, rng=rng)
            subs = [s.subtype for s in sample]
            assess_inputs(subs, [len(s.query) for s in sample], subs, [len(s.query) for s in sample], cfg)

        t_bare = timed(bare)
        t_drift = timed(drift)
        print(f"rows={args.rows:,} sample={args.sample}")
        print(f"bare hourly per-tier aggregate over the request files: {t_bare:.3f}s")
        print(f"jobs drift sampling + statistics (no teacher calls):   {t_drift:.3f}s")
        print(f"ratio drift / bare: {t_drift / t_bare:.1f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
