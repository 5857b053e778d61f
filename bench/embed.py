"""Benchmark: query embedding with PyTorch vs ONNX Runtime (fp32) vs ONNX Runtime int8, side by side.

    .venv/bin/python bench/embed.py [--queries 200] [--callers 16] [--threads 0] [--wait-ms 2]
    .venv/bin/python bench/embed.py --runtimes onnx,onnx-int8 --ref onnx --static-int8 minmax \
        --static-int8 smooth-no-ffn-down --dev          # static int8 candidates, judged on ~2,700 pairs
    .venv/bin/python bench/embed.py --runtimes torch,onnx,openvino --ref onnx --dev   # OpenVINO (bf16 on AMX)

For each runtime (``make_embedder`` with ``[serving.cache] embedder`` = torch, onnx, openvino (not measured
unless named: ``pip install openvino``), and ``OnnxEmbedder(quantize=True)`` for dynamic int8, which is not a config choice; memo off, so every query really runs the model; models loaded and warmed before timing):

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
   of pairs with the same decision and the lowest cosine to PyTorch's vector. ``--dev`` adds the
   held-out dev sets (cache_pair_heldout3..9.jsonl, 2,450 pairs, labelled by us) per set and pooled;
   ``--ref onnx`` compares against ONNX fp32 instead of PyTorch;
4. **batch 8**: ``encode`` of 8 queries at a time (one micro-batch) — CPU ms per query;
5. **batch invariance**: 40 queries embedded alone and in the middle of a batch of 8 other,
   longer and shorter ones — the largest absolute difference of any vector component.

``--static-int8 VARIANT`` (repeatable) adds a static int8 candidate (onnxruntime.quantization.
quantize_static: QDQ, per-channel int8 weights, uint8 activations with fixed scales calibrated on
the questions of the pair set's **train** split, our own data) run through
``OnnxEmbedder(onnx_file=...)``: ``minmax`` / ``entropy`` (every MatMul, MinMax or Entropy
calibration), ``no-ffn-down`` (MinMax, the feed-forward down-projections left fp32) and
``smooth-no-ffn-down`` (that, after SmoothQuant-style per-channel smoothing, alpha 0.5, of the
other MatMuls' inputs into their weights — exact in fp32). Built into ``--work-dir`` (reused when
there; a temporary folder otherwise; ~30-40 s CPU each).

``--dynamic-int8 no-ffn-down`` adds a dynamic int8 candidate (``quantize_dynamic``, per-channel int8 weights)
with the feed-forward down-projections left fp32, run one text a call as the int8 embedder runs (its
vectors never depend on a batch).

The runtimes take turns phase by phase so they share the machine's noise. Queries are the
questions of the packaged tuning sample (serving/cache/data/cache_pairs.jsonl). Ratios are against torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
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
from costline.serving.embedding_onnx import OnnxEmbedder, export_onnx, make_embedder, model_inputs  # noqa: E402
from costline.serving.settings import CacheConfig  # noqa: E402

# int8 is measured, not a config choice (out of tolerance); openvino needs `pip install openvino`
RUNTIMES = ("torch", "onnx", "onnx-int8", "openvino")
STATIC_VARIANTS = ("minmax", "entropy", "no-ffn-down", "smooth-no-ffn-down")
DYNAMIC_VARIANTS = ("no-ffn-down",)
TOLERANCE = 0.005
DATA = ROOT / "serving" / "cache" / "data"


def pair_set() -> list[dict]:
    for p in (ROOT / "serving" / "cache" / "data" / "cache_pair_set.jsonl", ROOT / "tests" / "data" / "cache_pair_set.jsonl"):
        if p.is_file():
            return [json.loads(line) for line in p.open()]
    raise SystemExit("no labelled pair set (serving/cache/data/cache_pair_set.jsonl or tests/data/ copy)")


def dev_sets() -> dict[str, list[dict]]:
    """The held-out dev sets 3..9 (our own labels), by name."""
    return {f"heldout{i}": [json.loads(line) for line in (DATA / f"cache_pair_heldout{i}.jsonl").open()]
            for i in range(3, 10)}


def train_questions() -> list[str]:
    """The questions of the pair set's train split: the only calibration data of static int8."""
    return sorted({t for p in pair_set() if p.get("split") == "train" for t in (p["q1"], p["q2"])})


# --- static int8 candidates (onnxruntime.quantization) -------------------------------------------


def _tokenizer(model_path: Path):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_path / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(256)
    return tok


def _feed(tok, texts: list[str], width: int = 0) -> dict[str, np.ndarray]:
    """The model's inputs for ``texts``, padded to the longest (or to ``width``), as the embedder pads."""
    return model_inputs(tok, texts, width)


def _session(path: Path):
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


def _weight_matmuls(model) -> list:
    inits = {i.name for i in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits]


def _is_ffn_down(name: str) -> bool:
    return name.endswith("/output/dense/MatMul") and "/attention/" not in name


def _smooth(src: Path, dst: Path, tok, texts: list[str], alpha: float = 0.5) -> Path:
    """SmoothQuant-style: each weight MatMul but the FFN down-projections gets x' = x / s (a Mul)
    and W' = diag(s) W, s_j = max|x_j|^alpha / max|W_j|^(1-alpha) over the calibration texts' real
    tokens. Exact in fp32; it moves per-channel activation outliers into the per-channel weights."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    targets = [n for n in _weight_matmuls(model) if not _is_ffn_down(n.name)]
    inputs = sorted({n.input[0] for n in targets})
    probe = onnx.load(str(src))
    for t in inputs:
        probe.graph.output.append(helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    probe_path = dst.with_suffix(".probe.onnx")
    onnx.save(probe, str(probe_path))
    session, amax = _session(probe_path), {}
    for i in range(0, len(texts), 16):
        feed = _feed(tok, texts[i:i + 16])
        mask = feed["attention_mask"].astype(bool)
        for t, out in zip(inputs, session.run(inputs, feed)):
            amax[t] = np.maximum(amax.get(t, 0.0), np.abs(out[mask]).max(0))
    probe_path.unlink()
    inits = {i.name: i for i in model.graph.initializer}
    muls = {}
    for n in targets:
        w = numpy_helper.to_array(inits[n.input[1]])
        scale = (np.maximum(amax[n.input[0]], 1e-5) ** alpha / np.maximum(np.abs(w).max(1), 1e-5) ** (1 - alpha))
        inits[n.input[1]].CopyFrom(numpy_helper.from_array((w * scale[:, None]).astype(np.float32), n.input[1]))
        model.graph.initializer.append(numpy_helper.from_array((1.0 / scale).astype(np.float32), n.name + "_smooth"))
        muls[n.name] = helper.make_node("Mul", [n.input[0], n.name + "_smooth"], [n.name + "_smoothed"],
                                        name=n.name + "_smooth")
        n.input[0] = n.name + "_smoothed"
    nodes = [m for n in model.graph.node for m in ([muls[n.name]] if n.name in muls else []) + [n]]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(dst))
    return dst


def build_dynamic_int8(variant: str, work_dir: Path) -> Path:
    """A dynamic int8 candidate: ``no-ffn-down`` quantises every weight MatMul's weights per channel but the
    feed-forward down-projections' (their GELU inputs carry the outlier activations a per-tensor activation
    scale suffers from). Run one text a call, as the int8 embedder runs."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = work_dir / f"dynamic-{variant}.onnx"
    if target.is_file():
        return target
    work_dir.mkdir(parents=True, exist_ok=True)
    src = export_onnx(OnnxEmbedder().model_path)
    names = [n.name for n in _weight_matmuls(onnx.load(str(src)))]
    exclude = [n for n in names if _is_ffn_down(n)] if variant == "no-ffn-down" else []
    if variant == "no-ffn-down" and len(exclude) != 6:
        raise SystemExit(f"expected 6 feed-forward down-projections in {src}, found {len(exclude)}: {names[:8]}")
    quantize_dynamic(str(src), str(target), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul"], nodes_to_exclude=exclude)
    return target


def build_static_int8(variant: str, work_dir: Path) -> Path:
    """The static int8 candidate ``variant`` (see the module docstring), built once into ``work_dir``."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    target = work_dir / f"static-{variant}.onnx"
    if target.is_file():
        return target
    work_dir.mkdir(parents=True, exist_ok=True)
    model_path = OnnxEmbedder().model_path
    tok = _tokenizer(model_path)
    pre = work_dir / "preprocessed.onnx"
    if not pre.is_file():
        quant_pre_process(str(export_onnx(model_path)), str(pre), skip_symbolic_shape=True)
    texts = train_questions()
    src = _smooth(pre, work_dir / "smoothed.onnx", tok, texts) if variant.startswith("smooth") else pre
    # Entropy's histograms need equal shapes: one text a feed, padded to 48 tokens (longer ones left out).
    width = 48 if variant == "entropy" else 0
    feeds = [_feed(tok, [t], width) for t in texts]
    feeds = [f for f in feeds if not width or f["input_ids"].shape[1] == width]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    names = [n.name for n in _weight_matmuls(onnx.load(str(src)))]
    exclude = [n for n in names if _is_ffn_down(n)] if variant.endswith("no-ffn-down") else []
    quantize_static(str(src), str(target), Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul"],
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=exclude,
                    calibrate_method=CalibrationMethod.Entropy if variant == "entropy" else CalibrationMethod.MinMax)
    return target


def batch8(embedder, texts: list[str]) -> dict:
    cpu0 = time.process_time()
    for i in range(0, len(texts), 8):
        embedder.encode(texts[i:i + 8])
    return {"cpu_ms": (time.process_time() - cpu0) / len(texts) * 1000}


def batch_invariance(embedder, texts: list[str], others: list[str], n: int = 40) -> float:
    """Largest |component difference| of a query's vector (n of ``texts``) alone vs in the middle
    of 8 of ``others``."""
    others = others[7::max(1, len(others) // 8)][:8]
    worst = 0.0
    for q in texts[::max(1, len(texts) // n)][:n]:
        alone = embedder.encode([q])[0]
        inside = embedder.encode(others[:4] + [q] + others[4:])[4]
        worst = max(worst, float(np.abs(alone - inside).max()))
    return worst


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
    return (sum(false) / len(false) if false else float("nan")), (sum(true) / len(true) if true else float("nan"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=200, help="queries per phase and runtime")
    ap.add_argument("--callers", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0: each runtime's default)")
    ap.add_argument("--wait-ms", type=float, default=2.0, help="micro-batcher wait (embed_batch_wait_ms)")
    ap.add_argument("--pairs", type=int, default=0, help="only the first N labelled pairs of the split (0: all)")
    ap.add_argument("--split", default="test", help="the pair set's split to compare decisions on ('all': every pair)")
    ap.add_argument("--runtimes", default="torch,onnx,onnx-int8", help=f"comma-separated, of {', '.join(RUNTIMES)}")
    ap.add_argument("--ref", default="torch", help="the runtime decisions and cosines are compared with")
    ap.add_argument("--static-int8", action="append", default=[], choices=STATIC_VARIANTS, metavar="VARIANT",
                    help=f"add a static int8 candidate ({', '.join(STATIC_VARIANTS)}); repeatable")
    ap.add_argument("--dynamic-int8", action="append", default=[], choices=DYNAMIC_VARIANTS, metavar="VARIANT",
                    help=f"add a dynamic int8 candidate run one text a call ({', '.join(DYNAMIC_VARIANTS)}); repeatable")
    ap.add_argument("--work-dir", type=Path, help="where static int8 candidates are built (reused; default: a temp dir)")
    ap.add_argument("--dev", action="store_true", help="also compare decisions on the dev sets heldout3..9")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()
    base_runtimes = [r for r in args.runtimes.split(",") if r]
    if unknown := [r for r in base_runtimes if r not in RUNTIMES]:
        ap.error(f"--runtimes: unknown {unknown}; choose from {RUNTIMES}")
    runtimes = (base_runtimes + [f"static-{v}" for v in dict.fromkeys(args.static_int8)]
                + [f"dynamic-{v}" for v in dict.fromkeys(args.dynamic_int8)])
    if args.ref not in runtimes:
        ap.error(f"--ref {args.ref} is not among the runtimes measured ({', '.join(runtimes)})")
    base = CacheConfig(embed_threads=args.threads, embed_batch_wait_ms=args.wait_ms)
    t_start = time.perf_counter()
    tmp = None
    if (args.static_int8 or args.dynamic_int8) and args.work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="costline-static-int8-")
    work_dir = args.work_dir or Path(tmp.name if tmp else ".")
    embedders = {}
    for name in runtimes:
        t0 = time.perf_counter()
        if name.startswith("dynamic-"):
            built = build_dynamic_int8(name.removeprefix("dynamic-"), work_dir)
            # quantize=True: one text a call (the candidate file is what runs)
            embedders[name] = OnnxEmbedder(threads=base.embed_threads or None, memo_size=0, onnx_file=built,
                                           quantize=True, batch_wait_ms=base.embed_batch_wait_ms,
                                           max_batch=base.embed_max_batch)
        elif name.startswith("static-"):
            built = build_static_int8(name.removeprefix("static-"), work_dir)
            embedders[name] = OnnxEmbedder(threads=base.embed_threads or None, memo_size=0, onnx_file=built,
                                           batch_wait_ms=base.embed_batch_wait_ms, max_batch=base.embed_max_batch)
        elif name == "onnx-int8":
            embedders[name] = OnnxEmbedder(threads=base.embed_threads or None, memo_size=0, quantize=True,
                                           batch_wait_ms=base.embed_batch_wait_ms, max_batch=base.embed_max_batch)
        else:
            embedders[name] = make_embedder(dataclasses.replace(base, embedder=name), memo_size=0)
        embedders[name].load()
        embedders[name].encode(queries(8))  # warm: first-run allocations out of the timings
        print(f"loaded {name:9s} in {time.perf_counter() - t0:5.1f} s (an ONNX export or static build runs once)",
              flush=True)
    texts = queries(args.queries)
    results: dict[str, dict] = {name: {} for name in runtimes}
    for name in runtimes:
        results[name]["1"] = one_caller(embedders[name], texts)
        results[name]["batch8"] = batch8(embedders[name], texts)
        print(f"1 caller, batch 8 {name:9s} done ({time.perf_counter() - t_start:4.0f} s)", flush=True)
    for name in runtimes:
        results[name][str(args.callers)] = many_callers(embedders[name], texts, args.callers)
        print(f"{args.callers} callers {name:9s} done ({time.perf_counter() - t_start:4.0f} s)", flush=True)

    sets = {args.split: [p for p in pair_set() if args.split == "all" or p.get("split") == args.split][:args.pairs or None]}
    if args.dev:
        dev = dev_sets()
        sets |= dev | {"dev 3-9": [p for ps in dev.values() for p in ps]}
    all_texts = sorted({t for ps in sets.values() for p in ps for t in (p["q1"], p["q2"])})
    vectors = {}
    for name in runtimes:
        vectors[name] = dict(zip(all_texts, embedders[name].encode(all_texts)))
        results[name]["batch_invariance"] = batch_invariance(embedders[name], all_texts, texts)
    print(f"pair sets embedded ({time.perf_counter() - t_start:4.0f} s)", flush=True)
    for e in embedders.values():
        getattr(e, "shutdown", lambda: None)()
    threshold = base.threshold
    for set_name, pairs in sets.items():
        ref = decisions(vectors[args.ref], pairs, threshold)
        texts_here = {t for p in pairs for t in (p["q1"], p["q2"])}
        for name in runtimes:
            got = decisions(vectors[name], pairs, threshold)
            d = results[name].setdefault("decisions", {})[set_name] = {
                "min_cosine": min(float(vectors[name][t] @ vectors[args.ref][t]) for t in texts_here)}
            for mode in ("threshold", "verified"):
                fhr, recall = rates(got[mode], pairs)
                ref_fhr, ref_recall = rates(ref[mode], pairs)
                d[mode] = {
                    "false_hit_rate": fhr, "recall": recall, "d_false_hit_pts": (fhr - ref_fhr) * 100,
                    "d_recall_pts": (recall - ref_recall) * 100,
                    "same_decision": sum(a == b for a, b in zip(got[mode], ref[mode])) / len(pairs),
                    "within_tolerance": abs(fhr - ref_fhr) <= TOLERANCE and abs(recall - ref_recall) <= TOLERANCE,
                }

    c = str(args.callers)
    print(f"\n{args.queries} queries per phase; threads={args.threads or 'default'}; micro-batch wait {args.wait_ms} ms")
    print(f"{'runtime':24s} | {'1 caller p50/p99 ms':>19s} {'q/s':>6s} {'cpu ms/q':>8s} | {'b8 cpu':>6s} | "
          f"{c + ' callers p50/p99 ms':>20s} {'q/s':>6s} {'cpu ms/q':>8s} {'batch':>5s} | "
          f"x {args.ref} cpu (1, 8) | batch max|d|")
    r1, r8 = results[args.ref]["1"]["cpu_ms"], results[args.ref]["batch8"]["cpu_ms"]
    for name in runtimes:
        a, b, b8 = results[name]["1"], results[name][c], results[name]["batch8"]
        print(f"{name:24s} | {a['p50_ms']:8.2f} / {a['p99_ms']:8.2f} {a['qps']:6.0f} {a['cpu_ms']:8.2f} | "
              f"{b8['cpu_ms']:6.2f} | {b['p50_ms']:9.2f} / {b['p99_ms']:8.2f} {b['qps']:6.0f} {b['cpu_ms']:8.2f} "
              f"{b.get('mean_batch', 1):5.1f} | {r1 / a['cpu_ms']:5.2f} {r8 / b8['cpu_ms']:5.2f}      "
              f"| {results[name]['batch_invariance']:.1e}")
    print(f"\ndecisions vs {args.ref}, tolerance 0.5 points; threshold mode at {threshold}, verified mode (default) "
          "at its operating point; d = change in points, same = pairs with the same decision:")
    print(f"{'runtime':24s} | {'pairs':17s} | {'threshold: false-hit (d)':>24s} {'recall (d)':>16s} {'same':>7s} | "
          f"{'verified: false-hit (d)':>23s} {'recall (d)':>16s} {'same':>7s} | {'min cos':>7s} | verdict")
    for name in runtimes:
        if name == args.ref:
            continue
        for set_name, pairs in sets.items():
            d = results[name]["decisions"][set_name]
            row = f"{name:24s} | {set_name + f' ({len(pairs)})':17s} |"
            for mode in ("threshold", "verified"):
                m = d[mode]
                row += (f" {m['false_hit_rate']:15.2%} ({m['d_false_hit_pts']:+5.2f}) {m['recall']:7.2%} "
                        f"({m['d_recall_pts']:+5.2f}) {m['same_decision']:7.2%} |")
            ok = d["threshold"]["within_tolerance"] and d["verified"]["within_tolerance"]
            print(f"{row} {d['min_cosine']:7.4f} | {'OK' if ok else 'OUT OF TOLERANCE'}")
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
