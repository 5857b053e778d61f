"""Benchmark: semantic-cache lookup latency beside a bare embedding + FAISS search.

    .venv/bin/python bench/cache.py [--sizes 10000,100000,1000000] [--queries 200] [--index exact]

For each size:

1. fills a :class:`SemanticCache` (one tenant) with that many random unit vectors
   (``store_vectors``, so the fill costs no embedding) and a bare ``faiss.IndexFlatIP``
   with the very same vectors;
2. times, interleaved query by query so both see the same machine noise:
   **cache** = ``cache.lookup(text, tenant=...)`` (real MiniLM embedding + search +
   TTL/LRU bookkeeping), and **bare** = ``embedder.encode([text])`` +
   ``index.search(vec, 1)``; also ``cache.lookup_vector`` beside the bare search alone,
   which isolates the cache's own overhead from the model;
3. prints p50/p99 in ms and the cache/bare ratios. With ``--index hnsw`` it also
   prints the build time and recall@1 of the approximate index for near-duplicates (cosine 0.95)
   of stored entries, against the exact one.

Queries are real support questions (the tuning sample), so embedding cost is real.
FAISS runs on ``[serving.cache] search_threads`` (1) OpenMP threads; torch on its default.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from costline.serving.cache import SemanticCache  # noqa: E402
from costline.serving.cache_index import import_faiss  # noqa: E402
from costline.serving.cache_tune import default_pairs_path, read_pairs  # noqa: E402
from costline.serving.embedding import Embedder  # noqa: E402
from costline.serving.settings import CacheConfig  # noqa: E402

TENANT = "bench"


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q))


def fill(cache: SemanticCache, bare, n: int, dim: int, rng: np.random.Generator) -> float:
    start = time.perf_counter()
    chunk = 100_000
    for lo in range(0, n, chunk):
        m = min(chunk, n - lo)
        vecs = rng.standard_normal((m, dim), dtype=np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        cache.store_vectors(vecs, ["cached answer"] * m, tenant=TENANT)
        bare.add(vecs)
    return time.perf_counter() - start


def run_size(n: int, args: argparse.Namespace, embedder: Embedder, texts: list[str]) -> dict:
    faiss = import_faiss()
    rng = np.random.default_rng(n)
    cfg = CacheConfig(index=args.index, max_entries=n + 1000, ttl_s=0, search_threads=args.threads)
    cache = SemanticCache(embedder, cfg)
    bare = faiss.IndexFlatIP(embedder.dim)
    fill_s = fill(cache, bare, n, embedder.dim, rng)
    faiss.omp_set_num_threads(args.threads)

    # warm up both paths
    for t in texts[:5]:
        cache.lookup(t, tenant=TENANT)
        bare.search(embedder.encode([t]), 1)

    full, base, lv, bs, emb_only = [], [], [], [], []
    qvecs = []
    for i in range(args.queries):
        text = texts[i % len(texts)]
        order = (0, 1) if i % 2 == 0 else (1, 0)
        for which in order:
            if which == 0:
                t0 = time.perf_counter()
                cache.lookup(text, tenant=TENANT)
                full.append(time.perf_counter() - t0)
            else:
                t0 = time.perf_counter()
                v = embedder.encode([text])
                t1 = time.perf_counter()
                bare.search(v, 1)
                t2 = time.perf_counter()
                base.append(t2 - t0)
                emb_only.append(t1 - t0)
                qvecs.append(v[0])
    # the search part alone, on the same query vectors
    for v in qvecs:
        t0 = time.perf_counter()
        cache.lookup_vector(v, tenant=TENANT)
        t1 = time.perf_counter()
        bare.search(v[None, :], 1)
        t2 = time.perf_counter()
        lv.append(t1 - t0)
        bs.append(t2 - t1)
    out = {
        "n": n, "fill_s": fill_s,
        "cache_p50": pct(full, 50), "cache_p99": pct(full, 99),
        "bare_p50": pct(base, 50), "bare_p99": pct(base, 99),
        "embed_p50": pct(emb_only, 50),
        "lv_p50": pct(lv, 50), "lv_p99": pct(lv, 99),
        "search_p50": pct(bs, 50), "search_p99": pct(bs, 99),
    }
    if args.index != "exact":
        # recall where it matters to a cache: near-duplicates (cosine 0.95) of stored entries
        # must find that entry (the bare exact index is the ground truth; its 0-based ids are
        # the store order, the cache's ids are 1-based in the same order)
        sample = rng.choice(n, size=min(100, n), replace=False)
        stored = bare.reconstruct_batch(sample.astype(np.int64))
        noise = rng.standard_normal(stored.shape, dtype=np.float32)
        noise -= (noise * stored).sum(1, keepdims=True) * stored
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        near = (0.95 * stored + np.sqrt(1 - 0.95**2) * noise).astype(np.float32)
        _, truth = bare.search(near, 1)
        found = [cache.lookup_vector(q, tenant=TENANT) for q in near]
        right = sum(h is not None and h.entry_id - 1 == int(t[0]) for h, t in zip(found, truth))
        out["recall_at_1"] = right / len(near)
    del cache, bare
    gc.collect()
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--index", choices=("exact", "hnsw"), default="exact")
    ap.add_argument("--threads", type=int, default=1, help="FAISS OpenMP threads (default 1)")
    args = ap.parse_args(argv)
    pairs, _ = read_pairs(default_pairs_path())
    texts = list(dict.fromkeys([p.a for p in pairs] + [p.b for p in pairs]))
    embedder = Embedder().load()
    import torch

    print(f"index={args.index} faiss_threads={args.threads} torch_threads={torch.get_num_threads()} "
          f"queries={args.queries} model={embedder.model_name}")
    header = (f"{'entries':>9} {'fill s':>7} | {'cache p50':>9} {'p99':>7} | {'bare p50':>8} {'p99':>7} | "
              f"{'ratio p50':>9} {'p99':>5} | {'embed p50':>9} | {'lookup_vector p50':>17} {'p99':>6} | "
              f"{'bare search p50':>15} {'p99':>6}")
    print(header)
    for n in (int(s) for s in args.sizes.split(",") if s):
        r = run_size(n, args, embedder, texts)
        line = (f"{n:>9,} {r['fill_s']:>7.1f} | {r['cache_p50']:>9.2f} {r['cache_p99']:>7.2f} | "
                f"{r['bare_p50']:>8.2f} {r['bare_p99']:>7.2f} | {r['cache_p50'] / r['bare_p50']:>9.2f} "
                f"{r['cache_p99'] / r['bare_p99']:>5.2f} | {r['embed_p50']:>9.2f} | "
                f"{r['lv_p50']:>17.3f} {r['lv_p99']:>6.2f} | {r['search_p50']:>15.3f} {r['search_p99']:>6.2f}")
        if "recall_at_1" in r:
            line += f" | recall@1 {r['recall_at_1']:.2f}"
        print(line, flush=True)
    print("times in ms; ratio = cache / bare (embedding included on both sides)")


if __name__ == "__main__":
    main()
