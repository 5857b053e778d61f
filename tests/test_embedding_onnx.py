"""The ONNX Runtime embedder against the PyTorch one (same vectors, same cache decisions on the
labelled pair set), its micro-batcher (each caller its own rows, bounded queue, lifecycle) and
the [serving.cache] embedder switch."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("sentence_transformers")

from costline.errors import ConfigError  # noqa: E402
from costline.serving.embedding import Embedder  # noqa: E402
from costline.serving.cache.admission import (  # noqa: E402
    AdmissionModel,
    default_model_path,
    default_pair_set_path,
    read_pairs,
    score_pairs,
)
from costline.serving.embedding_onnx import (  # noqa: E402
    EmbedderError,
    EmbedQueueFullError,
    MicroBatcher,
    OnnxEmbedder,
    make_embedder,
    resolve_embedder,
)
from costline.serving.settings import CacheConfig  # noqa: E402

#: The packaged labelled pair set (serving/cache/data/cache_pair_set.jsonl): q1, q2, same_answer, category, split.
PAIRS = [json.loads(line) for line in default_pair_set_path().open()]
TEXTS = sorted({p["q1"] for p in PAIRS} | {p["q2"] for p in PAIRS})
#: Its test split: the pairs the cache's decisions are compared on.
TEST_PAIRS = [p for p in read_pairs(default_pair_set_path())[0] if p.split == "test"]
#: The issue's tolerance: false-hit rate and recall within half a point of PyTorch's.
TOLERANCE = 0.005


@pytest.fixture(scope="module")
def torch_vectors() -> dict[str, np.ndarray]:
    e = Embedder(threads=1, memo_size=0)
    return dict(zip(TEXTS, e.encode(TEXTS)))


@pytest.fixture(scope="module")
def onnx_fp32():
    e = OnnxEmbedder(threads=1, memo_size=0).load()
    yield e
    e.shutdown()


@pytest.fixture(scope="module")
def onnx_vectors(onnx_fp32) -> dict[str, np.ndarray]:
    """Every text of the pair set through the ONNX embedder once (> max_batch: the direct path, in batches of
    batch_size); the comparisons below share it."""
    return dict(zip(TEXTS, onnx_fp32.encode(TEXTS)))


def decisions(vectors: dict[str, np.ndarray], threshold: float) -> tuple[float, float]:
    """(false-hit rate, recall) of a threshold-mode cache at ``threshold`` over the test split."""
    hits_true = hits_false = n_true = n_false = 0
    for p in PAIRS:
        if p["split"] != "test":
            continue
        hit = float(vectors[p["q1"]] @ vectors[p["q2"]]) >= threshold
        if p["same_answer"]:
            n_true += 1
            hits_true += hit
        else:
            n_false += 1
            hits_false += hit
    return hits_false / n_false, hits_true / n_true


def test_fp32_vectors_match_pytorch(torch_vectors, onnx_vectors):
    assert len(TEXTS) >= 300
    got = np.stack([onnx_vectors[t] for t in TEXTS])
    ref = np.stack([torch_vectors[t] for t in TEXTS])
    cosines = (got * ref).sum(axis=1)
    assert cosines.min() >= 0.999
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_cache_decisions_match_pytorch_on_the_pair_set(torch_vectors, onnx_vectors):
    threshold = CacheConfig().threshold
    vectors = onnx_vectors
    ref_fhr, ref_recall = decisions(torch_vectors, threshold)
    fhr, recall = decisions(vectors, threshold)
    assert 0 < ref_fhr < 1 and 0 < ref_recall < 1  # the threshold cuts through the pairs: a real comparison
    assert abs(fhr - ref_fhr) <= TOLERANCE, (fhr, ref_fhr)
    assert abs(recall - ref_recall) <= TOLERANCE, (recall, ref_recall)


#: A passage that runs past MiniLM's window (256 word pieces) with a question after it: its vector is the mean of
#: its head and tail windows (docs/cache.md), so the question counts.
PASSAGE = "Our refund policy: items may be returned within thirty days of delivery with the receipt. " * 25
LONG_TEXTS = [
    PASSAGE + "\n\nWhat is the return window?",
    PASSAGE + "\n\nProve that the refund policy, modelled as a state machine, cannot refund a customer twice.",
    "How do I reset my password?",  # fits: as before, beside the long ones in one batch
    PASSAGE * 16 + "Which carrier collects the parcel?",  # over MAX_TEXT_CHARS: its head and tail slices are read
]


@pytest.fixture(scope="module")
def long_reference() -> np.ndarray:
    """LONG_TEXTS embedded by sentence-transformers itself, a long text as the normalised mean of its first and
    last 254 word pieces (the HF tokenizer's, decoded and read again), each text of the 32,768 characters at
    either end of it: what docs/cache.md says the embedder does."""
    from sentence_transformers import SentenceTransformer

    from costline.serving.embedding import default_model_path as minilm_path

    model = SentenceTransformer(str(minilm_path()), device="cpu", local_files_only=True)
    tok, room = model.tokenizer, model.max_seq_length - 2
    assert room == 254
    rows = []
    for text in LONG_TEXTS:
        head = tok(text[:32_768], add_special_tokens=False)["input_ids"]
        tail = tok(text[-32_768:], add_special_tokens=False)["input_ids"]
        if len(text) <= 32_768 and len(head) <= room:
            rows.append(model.encode([text], normalize_embeddings=True)[0])
            continue
        pair = model.encode([tok.decode(head[:room]), tok.decode(tail[-room:])], normalize_embeddings=True)
        mean = pair.mean(axis=0)
        rows.append(mean / np.linalg.norm(mean))
    return np.stack(rows)


def _check_long(got: np.ndarray, ref: np.ndarray) -> None:
    assert ((got * ref).sum(axis=1) >= 0.999).all(), (got * ref).sum(axis=1)
    assert float(ref[0] @ ref[1]) < 0.99  # the questions after the passage differ: so do the vectors
    assert float(got[0] @ got[1]) < 0.99  # (the head window alone made them the same vector, cosine 1.0000)


def test_a_long_text_is_the_mean_of_its_head_and_tail_windows_as_in_pytorch(onnx_fp32, long_reference):
    """The ONNX embedder read the first 256 word pieces only: a question after a pasted passage was invisible
    to the cache and the learned router. Micro-batched (a long text's two windows in one job), direct, and
    micro-batched one text at a time with a batch of one."""
    assert onnx_fp32.batcher is not None and not onnx_fp32.fits(LONG_TEXTS[0])
    _check_long(onnx_fp32.encode(LONG_TEXTS), long_reference)
    direct = OnnxEmbedder(threads=1, memo_size=0, batch_wait_ms=None)
    _check_long(direct.encode(LONG_TEXTS), long_reference)
    single = OnnxEmbedder(threads=1, memo_size=0, max_batch=1)
    try:
        _check_long(np.stack([single.encode([t])[0] for t in LONG_TEXTS]), long_reference)
        assert single.batcher.batches == len(LONG_TEXTS) and single.batcher.texts == len(LONG_TEXTS) + 3
    finally:
        single.shutdown()


class _Table:
    """An embedder answering from precomputed vectors (so score_pairs sees exactly those)."""

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors

    def encode(self, texts):
        return np.stack([self.vectors[t] for t in texts])


def verified_decisions(vectors: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """What the verified cache serves on the test split (guards + the shipped admission model), and the labels."""
    config = CacheConfig()
    model = AdmissionModel.load(default_model_path()).at(config.target_false_hit_rate)
    s = score_pairs(_Table(vectors), TEST_PAIRS)
    unguarded = np.array([r is None for r in s.reasons])
    served = unguarded & (s.features[:, 0] >= model.min_similarity) & (model.probabilities(s.features) >= model.threshold)
    return served, s.labels


@pytest.fixture(scope="module")
def torch_verified(torch_vectors) -> tuple[np.ndarray, np.ndarray]:
    """:func:`verified_decisions` of the PyTorch vectors, the reference of both runtimes' comparisons below."""
    return verified_decisions(torch_vectors)


def test_verified_cache_decisions_match_pytorch_on_the_test_split(torch_verified, onnx_vectors):
    """The cache's default mode (verified) on the pair set's test split: false-hit rate and recall
    within half a point of PyTorch's (on 250 pairs that means no decision changes)."""
    assert len(TEST_PAIRS) >= 200
    ref, labels = torch_verified
    got, _ = verified_decisions(onnx_vectors)
    assert 0 < ref[labels].mean() < 1  # some paraphrases served, some not: the comparison can fail
    assert abs(got[~labels].mean() - ref[~labels].mean()) <= TOLERANCE
    assert abs(got[labels].mean() - ref[labels].mean()) <= TOLERANCE


def test_int8_export_is_a_separate_smaller_file(onnx_fp32):
    """int8 is measured by bench/embed.py, not offered as a config choice (out of tolerance)."""
    int8 = OnnxEmbedder(threads=1, memo_size=0, quantize=True, batch_wait_ms=None)
    assert int8.onnx_path != onnx_fp32.onnx_path
    # MatMul weights in int8; the token embedding table (~47 MB) stays fp32.
    assert int8.onnx_path.stat().st_size < onnx_fp32.onnx_path.stat().st_size * 0.75
    v = int8.encode(["How do I reset my password?"])
    assert v.shape == (1, 384) and abs(float(np.linalg.norm(v)) - 1.0) < 1e-5
    # dynamic quantisation scales a MatMul's input per tensor: each text runs alone, so its vector is the
    # same beside a much longer text as on its own
    longer = "Explain every step of exporting the quarterly audit report with all invoices to CSV, " * 4
    assert np.array_equal(int8.encode([longer, "How do I reset my password?"])[1], v[0])


def test_onnx_file_runs_that_file_instead_of_an_export(onnx_fp32, tmp_path):
    """bench/embed.py's static int8 candidates run through onnx_file: the embedder runs exactly the
    file it is given (a renamed copy of the fp32 export gives its vectors) and names a missing one."""
    copy = tmp_path / "candidate.onnx"
    copy.write_bytes(onnx_fp32.onnx_path.read_bytes())
    e = OnnxEmbedder(threads=1, memo_size=0, onnx_file=copy, batch_wait_ms=None, cache_dir=tmp_path / "exports")
    texts = TEXTS[:16]
    assert e.onnx_path == copy and e.runtime == "onnx-file"
    assert np.allclose(e.encode(texts), onnx_fp32.encode(texts), atol=1e-6)
    assert not (tmp_path / "exports").exists()  # nothing exported
    with pytest.raises(EmbedderError, match="no ONNX file at"):
        OnnxEmbedder(onnx_file=tmp_path / "missing.onnx", batch_wait_ms=None).load()


def test_concurrent_callers_each_get_their_own_vector(torch_vectors):
    texts = TEXTS[:48]
    # A long wait so the callers' queries really share batches (the result must not depend on it).
    e = OnnxEmbedder(threads=1, memo_size=0, batch_wait_ms=50, max_batch=16)
    results: dict[str, np.ndarray] = {}
    barrier = threading.Barrier(16)

    def caller(mine: list[str]) -> None:
        barrier.wait()
        for t in mine:
            results[t] = e.encode([t])[0]

    threads = [threading.Thread(target=caller, args=(texts[i::16],)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    e.shutdown()
    assert set(results) == set(texts)
    ref = np.stack([torch_vectors[t] for t in texts])
    got = np.stack([results[t] for t in texts])
    sims = got @ ref.T
    assert (sims.argmax(axis=1) == np.arange(len(texts))).all()  # each row is its own text's
    assert np.diag(sims).min() >= 0.999
    assert e.batcher.texts == len(texts)
    assert e.batcher.batches < len(texts)  # the 16 callers shared batches


def test_microbatcher_batches_what_waits_while_the_model_runs():
    started, release = threading.Event(), threading.Event()
    calls: list[list[str]] = []

    def fn(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        started.set()
        release.wait()
        return np.array([[float(len(t)), float(i)] for i, t in enumerate(texts)])

    b = MicroBatcher(fn, max_wait_s=0.0, max_batch=100)
    first = b.submit(["a"])
    assert started.wait(10)
    later = [b.submit(["x" * n, "y" * n]) for n in range(1, 6)]  # queued while the model runs
    release.set()
    assert first.result(10)[0, 0] == 1.0
    for n, fut in enumerate(later, start=1):
        rows = fut.result(10)
        assert rows[:, 0].tolist() == [n, n]  # its own two texts, in order
    assert calls[1] == [s for n in range(1, 6) for s in ("x" * n, "y" * n)]  # one batch
    assert b.batches == 2
    b.shutdown()
    assert not b.running
    with pytest.raises(EmbedderError, match="shut down"):
        b.submit(["late"])
    b.shutdown()  # idempotent


def test_microbatcher_bounded_queue_and_errors_reach_every_caller():
    started, release = threading.Event(), threading.Event()

    def fn(texts: list[str]) -> np.ndarray:
        started.set()
        release.wait()
        if "boom" in texts:
            raise ValueError("model failed")
        return np.zeros((len(texts), 2))

    b = MicroBatcher(fn, max_wait_s=0.0, max_batch=4, queue_size=1, put_timeout_s=0.05)
    running = b.submit(["ok"])
    assert started.wait(10)
    queued = b.submit(["boom"])
    with pytest.raises(EmbedQueueFullError, match="embed_queue_size"):
        b.submit(["no room"])
    release.set()
    assert running.result(10).shape == (1, 2)
    with pytest.raises(ValueError, match="model failed"):
        queued.result(10)
    assert b.submit(["after"]).result(10).shape == (1, 2)  # the thread survived the error
    b.shutdown()


def test_shutdown_finishes_queued_encodes():
    release = threading.Event()

    def fn(texts: list[str]) -> np.ndarray:
        release.wait()
        return np.ones((len(texts), 1))

    b = MicroBatcher(fn, max_wait_s=0.0, max_batch=1)
    futures = [b.submit([str(i)]) for i in range(5)]
    release.set()
    b.shutdown(wait=True)
    assert all(f.result(0).shape == (1, 1) for f in futures)


def test_auto_is_onnx_when_onnxruntime_is_installed():
    assert CacheConfig().embedder == "auto"
    assert resolve_embedder("auto") == "onnx"  # onnxruntime is importable here (module skip above)
    assert (resolve_embedder("torch"), resolve_embedder("onnx")) == ("torch", "onnx")
    e = make_embedder(CacheConfig())
    assert isinstance(e, OnnxEmbedder)
    e.shutdown()


def test_auto_falls_back_to_torch_without_onnxruntime():
    code = ("import sys; sys.modules['onnxruntime'] = None\n"  # an import of it now fails, as when absent
            "from costline.serving.embedding_onnx import make_embedder, resolve_embedder\n"
            "from costline.serving.settings import CacheConfig\n"
            "print(resolve_embedder('auto'), type(make_embedder(CacheConfig())).__name__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["torch", "Embedder"]


_EXPORTER = """
import logging, sys, time
from pathlib import Path
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
from costline.serving.embedding import default_model_path
from costline.serving.embedding_onnx import export_onnx
go = Path(sys.argv[2])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.01)
print("path", export_onnx(default_model_path(), cache_dir=Path(sys.argv[1])), flush=True)
"""


def test_concurrent_processes_on_a_clean_cache_export_once(tmp_path):
    """Two processes (replicas on one host) ask for the export at the same instant: one exports,
    the other waits on the file lock and opens the finished file."""
    cache, go = tmp_path / "onnx", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _EXPORTER, str(cache), str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:  # both imported and polling before either may start
        assert p.stdout.readline().strip() == "ready"
    go.touch()
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    lines = [line for out, _ in outs for line in out.splitlines()]
    assert sum("exporting" in line for line in lines) == 1, lines
    paths = {line.split(" ", 1)[1] for line in lines if line.startswith("path ")}
    assert len(paths) == 1 and Path(paths.pop()).stat().st_size > 10_000_000


def test_make_embedder_follows_the_switch(tmp_path):
    assert type(make_embedder(CacheConfig(embedder="torch"))) is Embedder
    e = make_embedder(CacheConfig(embedder="onnx", embed_batch_wait_ms=1.0, embed_max_batch=8,
                                  onnx_cache_dir=tmp_path), memo_size=7)
    assert isinstance(e, OnnxEmbedder)
    assert (e.runtime, e.batcher.max_wait_s, e.batcher.max_batch, e.memo_size, e.cache_dir) == (
        "onnx", 0.001, 8, 7, tmp_path)
    assert e.model_name == "all-MiniLM-L6-v2"  # a cache saved with torch vectors loads with onnx
    e.shutdown()


@pytest.mark.parametrize("threads, expected", [(0, 1), (2, 2)])
def test_the_onnx_session_runs_one_idle_sleeping_thread_unless_embed_threads_says(threads, expected):
    e = make_embedder(CacheConfig(embedder="onnx", embed_threads=threads, embed_batch_wait_ms=0.0))
    options = e.session_options
    e.shutdown()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (expected, 1)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"


@pytest.mark.parametrize(
    "change, key",
    [
        ({"embedder": "tensorflow"}, "embedder"),
        ({"embedder": "onnx-int8"}, "embedder"),  # out of the cache's tolerance: refused, saying so
        ({"embed_batch_wait_ms": -1.0}, "embed_batch_wait_ms"),
        ({"embed_max_batch": 0}, "embed_max_batch"),
        ({"embed_queue_size": 0}, "embed_queue_size"),
    ],
)
def test_bad_embedder_settings_name_the_key(change, key):
    with pytest.raises(ConfigError) as info:
        make_embedder(CacheConfig(**change))
    assert info.value.key == f"[serving.cache] {key}"


def test_the_switch_loads_from_toml_and_env(tmp_path):
    from costline.config import load_config

    f = tmp_path / "costline.toml"
    f.write_text('[serving.cache]\nembedder = "onnx"\nembed_batch_wait_ms = 1.5\n')
    cfg = load_config(f, env={}).serving.cache
    assert (cfg.embedder, cfg.embed_batch_wait_ms) == ("onnx", 1.5)
    cfg = load_config(f, env={"COSTLINE_SERVING_CACHE_EMBEDDER": "torch"}).serving.cache
    assert cfg.embedder == "torch"  # env wins


def test_the_semantic_cache_serves_a_paraphrase_through_the_onnx_embedder():
    pytest.importorskip("faiss")
    from costline.serving.cache.semantic import SemanticCache

    stored, asked = "How do I reset my password?", "How can I reset my password?"
    e = make_embedder(CacheConfig(embedder="onnx", embed_threads=1))
    cache = SemanticCache(e, CacheConfig(threshold=0.9))
    cache.store(stored, "Use the reset link on the sign-in page.", tenant="acme")
    hit = cache.lookup(asked, tenant="acme")
    miss = cache.lookup("What is your refund policy?", tenant="acme")
    e.shutdown()
    ref = Embedder(threads=1, memo_size=0).encode([stored, asked])
    assert hit is not None and hit.answer == "Use the reset link on the sign-in page."
    assert hit.similarity == pytest.approx(float(ref[0] @ ref[1]), abs=1e-3)  # what PyTorch's vectors give
    assert miss is None


def test_concurrent_requests_embed_each_query_once_in_shared_batches(tmp_path):
    """The gateway's request path with the default (ONNX) embedder and a learned MiniLM router:
    concurrent requests' queries are micro-batched, and each query runs through the model once —
    the router's vector is the one the cache looks up and stores under (real FAISS, stand-in API)."""
    import dataclasses

    from opentelemetry.sdk.trace import TracerProvider

    from costline.collectors import Recorder
    from costline.config import Config
    from costline.serving.cache.semantic import SemanticCache
    from costline.serving.pipeline import Pipeline
    from costline.serving.routing.learned import LabelledQuery, train_policy
    from costline.serving.settings import BackendsConfig, StandInConfig
    from costline.sim.standin import StandInServer

    pytest.importorskip("faiss")
    rows = [LabelledQuery(q, "faq", tier) for q, tier in [
        ("what are your opening hours", "budget"), ("where is my parcel", "budget"),
        ("compare these two contracts clause by clause and list the risks", "upper"),
        ("draft a migration plan for our billing database with rollback steps", "upper")]]
    embedder = make_embedder(CacheConfig(embed_batch_wait_ms=50.0))  # a long wait: callers share batches
    assert isinstance(embedder, OnnxEmbedder)
    policy = train_policy(rows, featurizer=Embedder(memo_size=0))
    standin = StandInServer(StandInConfig(latency_scale=0.0), port=0)
    standin.start()
    try:
        cfg = Config()
        serving = dataclasses.replace(cfg.serving, backends=BackendsConfig(
            anthropic_base_url=standin.url, student_base_url=standin.openai_url, max_retries=0))
        cache = SemanticCache(embedder, CacheConfig(path=tmp_path / "cache"))
        pipeline = Pipeline.from_config(cfg.replace(serving=serving), recorder=Recorder(TracerProvider()),
                                        cache=cache, validator=None, policy=policy, env={})
        assert pipeline.router.reads_embeddings
        queries = [p["q1"] for p in PAIRS[:24]]
        assert len(set(queries)) == len(queries)
        answers: dict[str, object] = {}
        barrier = threading.Barrier(8)

        def client(mine: list[str]) -> None:
            barrier.wait()
            for q in mine:
                answers[q] = pipeline.answer(q, task_type="faq", tenant="acme")

        threads = [threading.Thread(target=client, args=(queries[i::8],)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert set(answers) == set(queries) and all(a.success for a in answers.values())
        # route + lookup + store: one model run per query, and the 8 clients' queries shared batches
        assert embedder.batcher.texts == len(queries)
        assert embedder.batcher.batches < len(queries)
        assert len(cache) == sum(not a.cached for a in answers.values())  # each miss stored, no re-embedding
    finally:
        embedder.shutdown()
        standin.shutdown()


# --- [serving.cache] embedder = "openvino": the same export on OpenVINO (bf16 where the CPU has it) --------------
@pytest.fixture(scope="module")
def openvino():
    pytest.importorskip("openvino")
    e = make_embedder(CacheConfig(embedder="openvino"), memo_size=0).load()
    yield e
    e.shutdown()


@pytest.fixture(scope="module")
def openvino_vectors(openvino) -> dict[str, np.ndarray]:
    return dict(zip(TEXTS, openvino.encode(TEXTS)))


def test_openvino_vectors_match_pytorch(torch_vectors, openvino, openvino_vectors):
    assert openvino.runtime == "openvino"
    session = openvino._get_model().session
    assert session.precision in ("bf16", "f32")
    # one stream, one thread (embed_threads 0), not pinned: workers on one machine must not pin to the same core
    compiled = session._compiled
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 1 and compiled.get_property("NUM_STREAMS") == 1
    assert compiled.get_property("ENABLE_CPU_PINNING") is False
    got = np.stack([openvino_vectors[t] for t in TEXTS])
    ref = np.stack([torch_vectors[t] for t in TEXTS])
    assert (got * ref).sum(axis=1).min() >= 0.999
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-3)


def test_openvino_keeps_pytorchs_cache_decisions_in_both_modes(torch_vectors, torch_verified, openvino_vectors):
    vectors = openvino_vectors
    threshold = CacheConfig().threshold
    (ref_fhr, ref_recall), (fhr, recall) = decisions(torch_vectors, threshold), decisions(vectors, threshold)
    assert 0 < ref_fhr < 1 and 0 < ref_recall < 1
    assert abs(fhr - ref_fhr) <= TOLERANCE and abs(recall - ref_recall) <= TOLERANCE, (fhr, ref_fhr, recall, ref_recall)
    ref, labels = torch_verified
    got, _ = verified_decisions(vectors)
    assert abs(got[~labels].mean() - ref[~labels].mean()) <= TOLERANCE
    assert abs(got[labels].mean() - ref[labels].mean()) <= TOLERANCE


def test_openvino_embeds_a_long_text_from_its_head_and_tail_windows(openvino, long_reference):
    _check_long(openvino.encode(LONG_TEXTS), long_reference)


def test_openvino_pads_to_its_bucket_without_moving_a_vector(openvino):
    """Inputs are padded to a multiple of 16 tokens (so OpenVINO sees few shapes): a text's vector is the
    same alone, in a batch of longer and shorter texts, and at a length just over a bucket's edge."""
    short, long_ = "Refund?", "How long does a refund take to reach my card after I send the shoes back? " * 3
    texts = [short, long_, "How do I reset my password?"]
    alone = np.concatenate([openvino._encode_model([t]) for t in texts])
    together = openvino._encode_model(texts)
    assert (alone * together).sum(axis=1).min() >= 0.9995
    width = openvino._get_model().tokenizer.encode(long_).ids
    assert len(width) % 16 != 0  # the long text is padded too


def test_openvino_without_the_package_names_the_extra(monkeypatch):
    from costline.errors import MissingExtraError

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    e = make_embedder(CacheConfig(embedder="openvino"), memo_size=0)
    with pytest.raises(MissingExtraError, match=r"costline\[openvino\]"):
        e.load()
    e.shutdown()


def test_openvino_callers_on_their_own_threads_each_get_their_own_vectors(torch_vectors):
    """Without the micro-batcher every caller runs the compiled model in its own thread (one infer request
    per thread): eight threads at once, each with batches of its own texts, get their own rows."""
    pytest.importorskip("openvino")
    e = OnnxEmbedder(memo_size=0, batch_wait_ms=None, engine="openvino")
    texts = TEXTS[:64]
    results: dict[str, np.ndarray] = {}
    barrier = threading.Barrier(8)

    def caller(mine: list[str]) -> None:
        barrier.wait()
        for i in range(0, len(mine), 3):
            results.update(zip(mine[i:i + 3], e.encode(mine[i:i + 3])))

    threads = [threading.Thread(target=caller, args=(texts[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = np.stack([results[t] for t in texts])
    sims = got @ np.stack([torch_vectors[t] for t in texts]).T
    assert (sims.argmax(axis=1) == np.arange(len(texts))).all() and np.diag(sims).min() >= 0.999
