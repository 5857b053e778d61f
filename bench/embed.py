"""Benchmark: query embedding with PyTorch vs ONNX Runtime (fp32) vs ONNX Runtime int8, side by side.

    .venv/bin/python bench/embed.py [--queries 200] [--callers 16] [--threads 0] [--wait-ms 2]

For each runtime (``make_embedder`` with ``[serving.cache] embedder`` = torch, onnx, and
``OnnxEmbedder(quantize=True)`` for int8, which is not a config choice; memo off, so every query really runs the model; models loaded and warmed before timing):

1. **1 caller**: ``encode([q])`` one query after another — per-query latency p50/p99, queries/s
   and process CPU ms per query;
2. **N callers** (16): N threads encode their share of the queries one at a time, as a gateway's
   request threads would — latency p50/p99 as each caller sees it, aggregate queries/s, CPU ms per
   query. Torch serialises encodes (its tokenizer is not thread-safe); ONNX goes through the
   micro-batcher (``--wait-ms``, ``[serving.cache] embed_batch_wait_ms``);
3. **decisions**: every text of the labelled pair set's test split (``--split``) embedded by each
   runtime; the false-hit rate and recall of the cache in both its modes — ``threshold`` (cosine at
   the configured threshold) and ``verified`` (the default: guards + the shipped admission model at
   its operating point) — side by side with PyTorch's (the issue's tolerance: 0.5 points), the share
   of pairs with the same decision and the lowest cosine to PyTorch's vector.

The runtimes take turns phase by phase so they share the machine's noise. Queries are the
questions of the packaged tuning sample (serving/cache/data/cache_pairs.jsonl). Ratios are against torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from costline.serving.cache.admission import (  # noqa: E402
    AdmissionModel,
    LabelledPair,
    default_model_path,
    score_pairs,
)
from costline.serving.embedding_onnx import OnnxEmbedder, make_embedder  # noqa: E402
from costline.serving.settings import CacheConfig  # noqa: E402

RUNTIMES = ("torch", "onnx", "onnx-int8")  # int8 is measured, not a config choice (out of tolerance)
TOLERANCE = 0.005


def pair_set() -> list[dict]:
    for p in (ROOT / "serving" / "cache" / "data" / "cache_pair_set.jsonl", ROOT / "tests" / "data" / "cache_pair_set.jsonl"):
        if p.is_file():
            return [json.loads(line) for line in p.open()]
    raise SystemExit("no labelled pair set (serving/cache/data/cache_pair_set.jsonl or tests/data/ copy)")


def queries(n: int) -> list[str]:
    rows = [json.loads(line) for line in (ROOT / "serving" / "cache" / "data" / "cache_pairs.jsonl").open()]
    texts = list(dict.fromkeys(t for r in rows for t in (r["a"], r["b"])))
    return (texts * (n // len(texts) + 1))[:n]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) * 1000.0


def one_caller(embedder, texts: list[str]) -> dict:
    lat = []
    cpu0, t0 = time.process_time(), time.perf_counter()
    for t in texts:
        s = time.perf_counter()
        embedder.encode([t])
        lat.append(time.perf_counter() - s)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "qps": len(texts) / wall, "cpu_ms": cpu / len(texts) * 1000}


def many_callers(embedder, texts: list[str], callers: int) -> dict:
    lat: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(callers + 1)

    def run(mine: list[str]) -> None:
        barrier.wait()
        local = []
        for t in mine:
            s = time.perf_counter()
            embedder.encode([t])
            local.append(time.perf_counter() - s)
        with lock:
            lat.extend(local)

    threads = [threading.Thread(target=run, args=(texts[i::callers],)) for i in range(callers)]
    for th in threads:
        th.start()
    cpu0 = time.process_time()
    barrier.wait()
    t0 = time.perf_counter()
    for th in threads:
        th.join()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    out = {"p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "qps": len(texts) / wall, "cpu_ms": cpu / len(texts) * 1000}
    batcher = getattr(embedder, "batcher", None)
    if batcher is not None and batcher.batches:
        out["mean_batch"] = batcher.texts / batcher.batches
    return out


class _Table:
    """Answers encode() from precomputed vectors, so the verifier scores exactly those."""

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors

    def encode(self, texts):
        return np.stack([self.vectors[t] for t in texts])


def decisions(vectors: dict[str, np.ndarray], pairs: list[dict], threshold: float) -> dict[str, list[bool]]:
    """Per cache mode, which pairs the cache serves (q1 stored, q2 asked)."""
    labelled = [LabelledPair(p["q1"], p["q2"], p["same_answer"], p.get("category", ""), p.get("domain", ""),
                             p.get("split", "")) for p in pairs]
    s = score_pairs(_Table(vectors), labelled)
    model = AdmissionModel.load(default_model_path()).at(CacheConfig().target_false_hit_rate)
    verified = (np.array([r is None for r in s.reasons]) & (s.features[:, 0] >= model.min_similarity)
                & (model.probabilities(s.features) >= model.threshold))
    return {"threshold": [bool(c >= threshold) for c in s.cosine], "verified": [bool(v) for v in verified]}


def rates(hits: list[bool], pairs: list[dict]) -> tuple[float, float]:
    false = [h for h, p in zip(hits, pairs) if not p["same_answer"]]
    true = [h for h, p in zip(hits, pairs) if p["same_answer"]]
    return sum(false) / len(false), sum(true) / len(true)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=200, help="queries per phase and runtime")
    ap.add_argument("--callers", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0: each runtime's default)")
    ap.add_argument("--wait-ms", type=float, default=2.0, help="micro-batcher wait (embed_batch_wait_ms)")
    ap.add_argument("--pairs", type=int, default=0, help="only the first N labelled pairs of the split (0: all)")
    ap.add_argument("--split", default="test", help="the pair set's split to compare decisions on ('all': every pair)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()
    base = CacheConfig(embed_threads=args.threads, embed_batch_wait_ms=args.wait_ms)
    t_start = time.perf_counter()
    embedders = {}
    for name in RUNTIMES:
        t0 = time.perf_counter()
        if name == "onnx-int8":
            embedders[name] = OnnxEmbedder(threads=base.embed_threads or None, memo_size=0, quantize=True,
                                           batch_wait_ms=base.embed_batch_wait_ms, max_batch=base.embed_max_batch)
        else:
            embedders[name] = make_embedder(dataclasses.replace(base, embedder=name), memo_size=0)
        embedders[name].load()
        embedders[name].encode(queries(8))  # warm: first-run allocations out of the timings
        print(f"loaded {name:9s} in {time.perf_counter() - t0:5.1f} s (an ONNX export runs once, then is cached)",
              flush=True)
    texts = queries(args.queries)
    results: dict[str, dict] = {name: {} for name in RUNTIMES}
    for name in RUNTIMES:
        results[name]["1"] = one_caller(embedders[name], texts)
        print(f"1 caller   {name:9s} done ({time.perf_counter() - t_start:4.0f} s)", flush=True)
    for name in RUNTIMES:
        results[name][str(args.callers)] = many_callers(embedders[name], texts, args.callers)
        print(f"{args.callers} callers {name:9s} done ({time.perf_counter() - t_start:4.0f} s)", flush=True)

    pairs = [p for p in pair_set() if args.split == "all" or p.get("split") == args.split][:args.pairs or None]
    all_texts = sorted({p["q1"] for p in pairs} | {p["q2"] for p in pairs})
    vectors = {name: dict(zip(all_texts, embedders[name].encode(all_texts))) for name in RUNTIMES}
    print(f"pair set embedded ({time.perf_counter() - t_start:4.0f} s)", flush=True)
    for e in embedders.values():
        getattr(e, "shutdown", lambda: None)()
    threshold = base.threshold
    ref = decisions(vectors["torch"], pairs, threshold)
    for name in RUNTIMES:
        got = decisions(vectors[name], pairs, threshold)
        cos = min(float(vectors[name][t] @ vectors["torch"][t]) for t in all_texts)
        results[name]["decisions"] = {"min_cosine": cos}
        for mode in ("threshold", "verified"):
            fhr, recall = rates(got[mode], pairs)
            ref_fhr, ref_recall = rates(ref[mode], pairs)
            results[name]["decisions"][mode] = {
                "false_hit_rate": fhr, "recall": recall, "d_false_hit_pts": (fhr - ref_fhr) * 100,
                "d_recall_pts": (recall - ref_recall) * 100,
                "same_decision": sum(a == b for a, b in zip(got[mode], ref[mode])) / len(pairs),
                "within_tolerance": abs(fhr - ref_fhr) <= TOLERANCE and abs(recall - ref_recall) <= TOLERANCE,
            }

    c = str(args.callers)
    print(f"\n{args.queries} queries per phase; threads={args.threads or 'default'}; micro-batch wait {args.wait_ms} ms")
    print(f"{'runtime':10s} | {'1 caller p50/p99 ms':>19s} {'q/s':>7s} {'cpu ms/q':>8s} | "
          f"{c + ' callers p50/p99 ms':>20s} {'q/s':>7s} {'cpu ms/q':>8s} {'batch':>5s} | x torch q/s (1, {c})")
    t1, tn = results["torch"]["1"], results["torch"][c]
    for name in RUNTIMES:
        a, b = results[name]["1"], results[name][c]
        print(f"{name:10s} | {a['p50_ms']:8.2f} / {a['p99_ms']:8.2f} {a['qps']:7.0f} {a['cpu_ms']:8.2f} | "
              f"{b['p50_ms']:9.2f} / {b['p99_ms']:8.2f} {b['qps']:7.0f} {b['cpu_ms']:8.2f} "
              f"{b.get('mean_batch', 1):5.1f} | {a['qps'] / t1['qps']:5.2f} {b['qps'] / tn['qps']:6.2f}")
    print(f"\ndecisions on {len(pairs)} labelled pairs ({args.split} split), tolerance 0.5 points vs torch; "
          f"threshold mode at {threshold}, verified mode (default) at its operating point:")
    print(f"{'runtime':10s} | {'mode':9s} | {'false-hit':>9s} {'(d pts)':>8s} | {'recall':>7s} {'(d pts)':>8s} | "
          f"{'same':>7s} | {'min cos':>7s} | verdict")
    for name in RUNTIMES:
        d = results[name]["decisions"]
        for mode in ("threshold", "verified"):
            m = d[mode]
            print(f"{name:10s} | {mode:9s} | {m['false_hit_rate']:9.2%} {m['d_false_hit_pts']:+8.2f} | "
                  f"{m['recall']:7.2%} {m['d_recall_pts']:+8.2f} | {m['same_decision']:7.2%} | "
                  f"{d['min_cosine']:7.4f} | {'OK' if m['within_tolerance'] else 'OUT OF TOLERANCE'}")
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
