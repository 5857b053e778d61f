"""The semantic cache with the real MiniLM model and real FAISS: hits, thresholds, tenant
isolation, TTL, invalidation, eviction, spans, concurrency."""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("faiss")
pytest.importorskip("sentence_transformers")

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from costline import contract as c  # noqa: E402
from costline.collectors import Recorder  # noqa: E402
from costline.errors import ConfigError  # noqa: E402
from costline.serving.cache.semantic import CacheHit, SemanticCache  # noqa: E402
from costline.serving.embedding import Embedder  # noqa: E402
from costline.serving.settings import CacheConfig  # noqa: E402

KINDS = ["exact", "hnsw"]


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class CountingEmbedder:
    """The real embedder, counting how many texts it was asked to embed."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.texts = 0

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    def encode(self, texts):
        self.texts += len(texts)
        return self.inner.encode(texts)


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return Embedder(threads=1).load()  # 1 thread: steadier on a shared 2-core machine


@pytest.fixture
def counting(embedder: Embedder) -> CountingEmbedder:
    return CountingEmbedder(embedder)


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def with_cosine(base: np.ndarray, cos: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector whose cosine with the unit vector ``base`` is exactly ``cos``."""
    r = rng.normal(size=base.shape).astype(np.float64)
    r -= r.dot(base) * base
    r /= np.linalg.norm(r)
    return (cos * base + np.sqrt(1 - cos * cos) * r).astype(np.float32)


# -- the embedder ---------------------------------------------------------------------------
def test_embedder_vectors_are_unit_float32_rows(embedder):
    vecs = embedder.encode(["How do I reset my password?", "What are your opening hours?"])
    assert vecs.shape == (2, 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert embedder.encode([]).shape == (0, 384)
    with pytest.raises(TypeError):
        embedder.encode("not a list")


def test_embedder_is_lazy_and_thread_safe():
    e = Embedder()
    assert not e.loaded and e.dim == 384 and not e.loaded  # the packaged MiniLM's size is known
    results: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        results[i] = e.encode([f"question number {i}", "the same text"])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert e.loaded and len(results) == 6
    same = np.stack([r[1] for r in results.values()])
    np.testing.assert_allclose(same, np.repeat(same[:1], 6, axis=0), atol=1e-5)


# -- hits, misses, thresholds -----------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_hit_on_paraphrase_miss_on_unrelated(embedder, kind):
    cache = SemanticCache(embedder, CacheConfig(index=kind, threshold=0.9))
    eid = cache.store("How do I reset my password?", "Use the 'forgot password' link.", tenant="acme")
    hit = cache.lookup("How can I reset my password?", tenant="acme")
    assert isinstance(hit, CacheHit) and hit.entry_id == eid and hit.answer == "Use the 'forgot password' link."
    assert 0.9 <= hit.similarity <= 1.0001 and hit.query == "How do I reset my password?"
    assert cache.lookup("What are your opening hours?", tenant="acme") is None
    s = cache.stats()
    assert (s.lookups, s.hits, s.misses, s.entries) == (2, 1, 1, 1)


@pytest.mark.parametrize(("cos", "hit"), [(0.931, True), (0.999, True), (0.929, False), (0.5, False)])
def test_threshold_boundary(cos, hit):
    rng = np.random.default_rng(7)
    base = unit(rng.normal(size=384))
    cache = SemanticCache(None, CacheConfig(), dim=384)  # default threshold 0.93
    cache.store_vector(base, "stored", tenant="t")
    got = cache.lookup_vector(with_cosine(base, cos, rng), tenant="t")
    assert (got is not None) == hit


def test_namespace_thresholds_override_the_default():
    rng = np.random.default_rng(1)
    base = unit(rng.normal(size=384))
    near = with_cosine(base, 0.95, rng)
    cache = SemanticCache(None, CacheConfig(threshold=0.93, namespace_thresholds={"billing": 0.97}), dim=384)
    cache.store_vector(base, "faq answer", tenant="t", namespace="faq")
    cache.store_vector(base, "billing answer", tenant="t", namespace="billing")
    assert cache.threshold_for("billing") == 0.97 and cache.threshold_for(None) == 0.93
    assert cache.lookup_vector(near, tenant="t", namespace="faq").answer == "faq answer"
    assert cache.lookup_vector(near, tenant="t", namespace="billing") is None
    assert cache.lookup_vector(base, tenant="t", namespace="billing").answer == "billing answer"
    assert cache.lookup_vector(base, tenant="t") is None  # the default namespace is its own index


@pytest.mark.parametrize(
    ("key", "value"),
    [("threshold", 0.0), ("threshold", 1.5), ("index", "ivf"), ("max_entries", 0), ("ttl_s", -1.0),
     ("namespace_thresholds", {"x": 2.0})],
)
def test_bad_config_names_the_key(key, value):
    with pytest.raises(ConfigError, match=r"\[serving.cache\] " + key):
        SemanticCache(None, CacheConfig(**{key: value}), dim=4)


# -- tenant isolation ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_identical_queries_from_two_tenants_never_cross(embedder, kind):
    """Adversarial: tenant B asks exactly what tenant A stored (similarity 1.0) and must miss;
    once both store, each gets only its own answer."""
    cache = SemanticCache(embedder, CacheConfig(index=kind, threshold=0.5))
    q = "What is the wire transfer limit on my account?"
    cache.store(q, "ACME: $50,000 per day", tenant="acme")
    assert cache.lookup(q, tenant="globex") is None
    assert cache.lookup(q, tenant="globex", namespace="default") is None
    cache.store(q, "GLOBEX: $5,000 per day", tenant="globex")
    for _ in range(3):
        assert cache.lookup(q, tenant="acme").answer == "ACME: $50,000 per day"
        assert cache.lookup(q, tenant="globex").answer == "GLOBEX: $5,000 per day"
    # many near-duplicates of the other tenant change nothing
    vec = embedder.encode([q])[0]
    cache.store_vectors(np.repeat(vec[None, :], 50, axis=0), ["globex spam"] * 50, tenant="globex")
    assert cache.lookup(q, tenant="acme").answer == "ACME: $50,000 per day"
    assert cache.invalidate_tenant("acme") == 1
    assert cache.lookup(q, tenant="acme") is None
    assert cache.lookup(q, tenant="globex").tenant == "globex"


def test_tenant_names_cannot_alias():
    cache = SemanticCache(None, CacheConfig(threshold=0.5), dim=4)
    v = np.array([1, 0, 0, 0], dtype=np.float32)
    cache.store_vector(v, "a/b + c", tenant="a/b", namespace="c")
    assert cache.lookup_vector(v, tenant="a", namespace="b/c") is None
    assert cache.lookup_vector(v, tenant="a/b", namespace="c") is not None
    with pytest.raises(ValueError, match="tenant"):
        cache.lookup_vector(v, tenant="")


# -- TTL -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_ttl_is_absolute_and_a_hit_does_not_extend_it(kind):
    clock = Clock()
    cache = SemanticCache(None, CacheConfig(index=kind, ttl_s=60), dim=4, now=clock)
    v = np.array([1, 0, 0, 0], dtype=np.float32)
    cache.store_vector(v, "answer", tenant="t")
    clock.t += 59
    hit = cache.lookup_vector(v, tenant="t")
    assert hit is not None and hit.expires_at == hit.created_at + 60
    clock.t += 0.5
    assert cache.lookup_vector(v, tenant="t") is not None
    clock.t += 0.5  # exactly 60 s after the store: gone, though it was hit just before
    assert cache.lookup_vector(v, tenant="t") is None
    assert cache.purge_expired() == 1 and len(cache) == 0 and cache.stats().expired == 1


def test_an_expired_best_match_falls_back_to_a_live_one():
    clock = Clock()
    cache = SemanticCache(None, CacheConfig(ttl_s=10, threshold=0.9), dim=4, now=clock)
    exact = np.array([1, 0, 0, 0], dtype=np.float32)
    near = unit(np.array([1, 0.2, 0, 0]))
    old_ids = cache.store_vectors(np.repeat(exact[None, :], 10, axis=0), ["old"] * 10, tenant="t")
    clock.t += 5
    cache.store_vector(near, "new", tenant="t")
    clock.t += 6  # the 10 exact matches expired, the near one has 4 s left
    hit = cache.lookup_vector(exact, tenant="t")
    assert hit is not None and hit.answer == "new" and hit.entry_id not in old_ids


def test_zero_ttl_never_expires():
    clock = Clock()
    cache = SemanticCache(None, CacheConfig(ttl_s=0), dim=4, now=clock)
    v = np.array([0, 1, 0, 0], dtype=np.float32)
    cache.store_vector(v, "forever", tenant="t")
    clock.t += 10 * 365 * 86400
    assert cache.lookup_vector(v, tenant="t").expires_at is None


def test_expired_entries_are_purged_in_batches_on_store():
    clock = Clock()
    cache = SemanticCache(None, CacheConfig(ttl_s=10, max_entries=1000, evict_fraction=0.01), dim=4, now=clock)
    rng = np.random.default_rng(3)
    cache.store_vectors(rng.normal(size=(15, 4)), ["x"] * 15, tenant="t")
    clock.t += 11
    cache.store_vector(rng.normal(size=4), "y", tenant="t")  # 15 expired >= batch of 10: purged
    assert len(cache) == 1 and cache.stats().expired == 15


# -- invalidation ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_invalidate_by_doc_removes_its_entries_without_reembedding_survivors(counting, kind):
    cache = SemanticCache(counting, CacheConfig(index=kind, threshold=0.9))
    questions = {
        "How long is the warranty?": ["doc-warranty"],
        "Does the warranty cover water damage?": ["doc-warranty", "doc-damage"],
        "What is your return policy?": ["doc-returns"],
        "How do I reset my password?": [],
    }
    for q, docs in questions.items():
        cache.store(q, f"answer to {q}", tenant="acme", doc_hashes=docs)
    cache.store("How long is the warranty?", "globex warranty", tenant="globex", doc_hashes=["doc-warranty"])
    embedded = counting.texts
    assert cache.invalidate_by_doc("doc-warranty") == 3
    assert counting.texts == embedded  # no survivor was re-embedded
    assert cache.invalidate_by_doc("doc-warranty") == 0 and cache.invalidate_by_doc("unknown") == 0
    assert len(cache) == 2
    assert cache.lookup("How long is the warranty?", tenant="acme") is None
    assert cache.lookup("How long is the warranty?", tenant="globex") is None
    assert cache.lookup("What is your return policy?", tenant="acme").answer.startswith("answer to What")
    assert cache.lookup("How do I reset my password?", tenant="acme") is not None
    assert cache.invalidate_by_doc("doc-damage") == 0  # its only entry went with doc-warranty
    assert cache.stats().invalidated == 3


def test_hnsw_tombstones_are_skipped_then_rebuilt_away():
    rng = np.random.default_rng(5)
    vecs = rng.normal(size=(200, 16)).astype(np.float32)
    cache = SemanticCache(None, CacheConfig(index="hnsw", threshold=0.99, rebuild_tombstone_ratio=0.2), dim=16)
    ids = cache.store_vectors(vecs, [f"a{i}" for i in range(200)], tenant="t",
                              doc_hashes=[[f"d{i % 20}"] for i in range(200)])
    assert cache.invalidate_by_doc("d0") == 10  # 5%: tombstones, no rebuild
    assert cache.stats().tombstones == 10
    assert cache.lookup_vector(vecs[0], tenant="t") is None  # tombstoned, never served
    assert cache.lookup_vector(vecs[1], tenant="t").entry_id == ids[1]
    for d in range(1, 5):
        cache.invalidate_by_doc(f"d{d}")  # passes 20%: rebuilt from the survivors' stored vectors
    assert cache.stats().tombstones < 0.2 * len(cache) + 1
    assert len(cache) == 150
    for i in (5, 77, 199):
        assert cache.lookup_vector(vecs[i], tenant="t").answer == f"a{i}"


# -- size cap and LRU --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_lru_eviction_at_the_size_cap(kind):
    eye = np.eye(8, dtype=np.float32)
    cache = SemanticCache(None, CacheConfig(index=kind, max_entries=3, threshold=0.99), dim=8)
    a, b, c_ = (cache.store_vector(eye[i], f"e{i}", tenant="t") for i in range(3))
    assert cache.lookup_vector(eye[0], tenant="t").entry_id == a  # e0 is now the most recent
    cache.store_vector(eye[3], "e3", tenant="t")  # over the cap: e1, least recently used, goes
    assert len(cache) == 3 and cache.stats().evicted == 1
    assert cache.lookup_vector(eye[1], tenant="t") is None
    assert {cache.lookup_vector(eye[i], tenant="t").answer for i in (0, 2, 3)} == {"e0", "e2", "e3"}


def test_eviction_is_global_across_tenants_and_batched():
    cache = SemanticCache(None, CacheConfig(max_entries=100, evict_fraction=0.1), dim=4)
    rng = np.random.default_rng(2)
    cache.store_vectors(rng.normal(size=(60, 4)), ["a"] * 60, tenant="a")
    cache.store_vectors(rng.normal(size=(40, 4)), ["b"] * 40, tenant="b")
    cache.store_vector(rng.normal(size=4), "c", tenant="c")  # 101 > 100: evicts 1 + 9 oldest
    assert len(cache) == 91 and cache.stats().evicted == 10


# -- spans ---------------------------------------------------------------------------------------------
def test_each_lookup_is_a_cache_lookup_span(embedder):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    rec = Recorder(provider, env={})
    cache = SemanticCache(embedder, CacheConfig(threshold=0.9), recorder=rec)
    cache.store("How do I reset my password?", "link", tenant="acme", namespace="faq")
    with rec.request(task_type="faq", tenant="acme"):
        assert cache.lookup("How can I reset my password?", tenant="acme", namespace="faq") is not None
    assert cache.lookup("Opening hours?", tenant="acme", namespace="faq") is None
    assert cache.lookup("Anything", tenant="nobody") is None
    spans = [s for s in exporter.get_finished_spans() if s.name == c.SPAN_CACHE_LOOKUP]
    assert len(spans) == 3
    hit, miss, empty = (dict(s.attributes) for s in spans)
    assert hit[c.COSTLINE_CACHE_HIT] is True and hit[c.COSTLINE_CACHE_NAMESPACE] == "faq"
    assert hit[c.COSTLINE_CACHE_SIMILARITY] >= 0.9
    assert miss[c.COSTLINE_CACHE_HIT] is False and miss[c.COSTLINE_CACHE_SIMILARITY] < 0.9
    assert empty == {c.COSTLINE_CACHE_HIT: False, c.COSTLINE_CACHE_NAMESPACE: "default"}
    (request,) = [s for s in exporter.get_finished_spans() if s.name == c.SPAN_REQUEST]
    assert spans[0].parent.span_id == request.context.span_id
    assert request.attributes[c.COSTLINE_TIER] == c.TIER_CACHE
    provider.shutdown()


# -- concurrency ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_concurrent_lookups_stores_and_invalidations(kind):
    dim = 32
    rng = np.random.default_rng(11)
    vecs = rng.normal(size=(400, dim)).astype(np.float32)
    cache = SemanticCache(None, CacheConfig(index=kind, threshold=0.999, max_entries=10_000), dim=dim)
    errors: list[BaseException] = []
    wrong: list[tuple] = []

    def writer(w: int) -> None:
        try:
            for i in range(w, 400, 4):
                cache.store_vector(vecs[i], f"t{w}:{i}", tenant=f"t{w}", doc_hashes=[f"doc{i % 7}"])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader(w: int) -> None:
        try:
            for _ in range(3):
                for i in range(w, 400, 4):
                    hit = cache.lookup_vector(vecs[i], tenant=f"t{w}")
                    if hit is not None and (hit.answer != f"t{w}:{i}" or hit.tenant != f"t{w}"):
                        wrong.append((w, i, hit))
                    cache.lookup_vector(vecs[i], tenant=f"t{(w + 1) % 4}")  # never its own data
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    def invalidator() -> None:
        try:
            for d in range(0, 7, 3):
                cache.invalidate_by_doc(f"doc{d}")
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    threads += [threading.Thread(target=reader, args=(w,)) for w in range(4)]
    threads.append(threading.Thread(target=invalidator))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and not wrong
    # afterwards every surviving entry is findable, and only by its own tenant
    for i in range(400):
        hit = cache.lookup_vector(vecs[i], tenant=f"t{i % 4}")
        if hit is not None:
            assert hit.answer == f"t{i % 4}:{i}"
    assert len(cache) == sum(1 for i in range(400) if cache.lookup_vector(vecs[i], tenant=f"t{i % 4}"))


class _DuringCheck:
    """The cache's real verifier, running ``hook`` (another thread's work, done in between) first."""

    def __init__(self, inner, hook) -> None:
        self.inner, self.hook = inner, hook

    def check(self, query, candidate, cosine, namespace="*"):
        self.hook()
        return self.inner.check(query, candidate, cosine, namespace)


def test_verification_runs_outside_the_cache_lock(embedder):
    cache = SemanticCache(embedder, CacheConfig())
    assert cache.verifier is not None  # the default mode verifies
    cache.store("How long is the warranty on a laptop?", "two years", tenant="acme")
    free: list[bool] = []

    def try_lock() -> None:
        got = cache._lock.acquire(blocking=False)
        free.append(got)
        if got:
            cache._lock.release()

    def another_thread_takes_the_lock() -> None:
        t = threading.Thread(target=try_lock)
        t.start()
        t.join()

    cache.verifier = _DuringCheck(cache.verifier, another_thread_takes_the_lock)
    hit = cache.lookup("How long is the warranty on a laptop?", tenant="acme")
    assert hit is not None and hit.answer == "two years"
    assert free == [True]  # stores and other lookups were not held up by this lookup's verification


def test_an_entry_invalidated_while_it_is_verified_is_not_served(embedder):
    cache = SemanticCache(embedder, CacheConfig())
    cache.store("How long is the warranty on a laptop?", "two years", tenant="acme", doc_hashes=["doc-w"])
    cache.verifier = _DuringCheck(cache.verifier, lambda: cache.invalidate_by_doc("doc-w"))
    assert cache.lookup("How long is the warranty on a laptop?", tenant="acme") is None
    assert cache.stats().misses == 1 and cache.stats().hits == 0
