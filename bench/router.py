"""Benchmark: a learned routing decision with the query's MiniLM embedding given vs embedding + decision.

    .venv/bin/python bench/router.py [--queries 150] [--train 120]

1. trains a :class:`LearnedPolicy` with the ``minilm`` featurizer (the semantic cache's
   :class:`Embedder`, all-MiniLM-L6-v2, its exact-text memo off so repeated queries are
   embedded again, as new production queries are) on ``--train`` rows of the shipped sample;
2. embeds the held-out queries once, as the semantic cache does on its lookup;
3. times, interleaved query by query so both see the same machine noise, through
   :class:`Router` (registry check and student gating included):
   **given** = ``router.route(q, t, embedding=vec)`` (the cache already embedded the query) and
   **embed+route** = ``router.route(q, t)`` (the policy embeds it itself);
4. prints p50/p99 in ms, the ratio, and checks both paths chose the same tiers.

Target (issue 15): p50 of **given** <= 2 ms. Runs in well under a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from costline.config import Config  # noqa: E402
from costline.serving.embedding import Embedder  # noqa: E402
from costline.serving.routing.learned import read_rows, train_policy  # noqa: E402
from costline.serving.registry import ModelRegistry  # noqa: E402
from costline.serving.routing.router import Router, StudentGate  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "serving" / "routing" / "data"
TARGET_MS = 2.0


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=150)
    ap.add_argument("--train", type=int, default=120)
    args = ap.parse_args()

    embedder = Embedder(memo_size=0, threads=1)  # one torch thread; no exact-text memo: every query is new to the model, as in production
    train = read_rows(DATA / "route_train.jsonl")[: args.train]
    held = read_rows(DATA / "route_eval_judged.jsonl")
    held = (held * (args.queries // len(held) + 1))[: args.queries]
    t0 = time.perf_counter()
    policy = train_policy(train, featurizer_name="minilm", featurizer=embedder, min_adequacy=0.8)
    print(f"trained on {len(train)} rows in {time.perf_counter() - t0:.1f}s (classes {', '.join(policy.classes)})")
    router = Router(StudentGate(policy, ()), ModelRegistry.from_config(Config()))
    vecs = embedder.encode([r.query for r in held])  # what the cache computed on its lookup
    for r, v in zip(held[:20], vecs):  # warm up both paths
        router.route(r.query, r.task_type, embedding=v)
        router.route(r.query, r.task_type)

    given, full, same = [], [], 0
    for r, v in zip(held, vecs):
        a = time.perf_counter()
        d1 = router.route(r.query, r.task_type, embedding=v)
        b = time.perf_counter()
        d2 = router.route(r.query, r.task_type)
        c = time.perf_counter()
        given.append(b - a)
        full.append(c - b)
        same += d1.tier == d2.tier
    p50g, p50f = pct(given, 50), pct(full, 50)
    print(f"{'path':<28}{'p50 ms':>10}{'p99 ms':>10}")
    print(f"{'decision, embedding given':<28}{p50g:>10.3f}{pct(given, 99):>10.3f}")
    print(f"{'embed + decision':<28}{p50f:>10.3f}{pct(full, 99):>10.3f}")
    ok = p50g <= TARGET_MS and same == len(held)
    print(f"RESULT given p50 {p50g:.3f} ms ({'<=' if p50g <= TARGET_MS else '>'} {TARGET_MS} ms target) | "
          f"embed+decision p50 {p50f:.3f} ms | ratio given/full {p50g / p50f:.3f} | "
          f"same tier {same}/{len(held)}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
