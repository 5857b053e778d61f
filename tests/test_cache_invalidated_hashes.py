"""A store tagged with a doc hash invalidated before it arrived is refused (a request that was still running when
its document changed must not put its old answer back in the cache), for ttl_s after the invalidation."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

pytest.importorskip("faiss")

from costline.serving.cache import semantic  # noqa: E402
from costline.serving.cache.semantic import REFUSED_ID, SemanticCache  # noqa: E402
from costline.serving.settings import CacheConfig  # noqa: E402

DIM = 16
TTL = 600.0
Q = "how do I cancel my plan?"


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeEmbedder:
    """One fixed unit vector per text (the same text: the same vector, similarity 1)."""

    dim = DIM
    model_name = "fake"

    def encode(self, texts: list[str]) -> np.ndarray:
        rows = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha256(t.encode("utf-8")).digest()[:8], "little")
            v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
            rows.append(v / np.linalg.norm(v))
        return np.stack(rows)


def make(clock: Clock, ttl: float = TTL) -> SemanticCache:
    return SemanticCache(FakeEmbedder(), CacheConfig(ttl_s=ttl), now=clock)


def answer(cache: SemanticCache) -> str | None:
    hit = cache.lookup(Q, tenant="acme", namespace="billing")
    return None if hit is None else hit.answer


def store(cache: SemanticCache, text: str, doc: str) -> int:
    return cache.store(Q, text, tenant="acme", namespace="billing", doc_hashes=[doc])


def test_a_late_store_of_an_invalidated_version_is_refused_and_a_new_version_is_served() -> None:
    clock = Clock()
    cache = make(clock)
    assert store(cache, "old answer", "policy@v1") >= 1
    assert answer(cache) == "old answer"
    clock.t += 5
    assert cache.invalidate_by_doc("policy@v1") == 1
    assert answer(cache) is None
    clock.t += 5  # the request that was running when v1 was invalidated answers now
    assert store(cache, "old answer, late", "policy@v1") == REFUSED_ID
    assert answer(cache) is None and len(cache) == 0
    assert cache.stats().stores_refused_invalidated == 1 and cache.stats().stores == 1
    # an answer built from the new version is stored and served
    assert store(cache, "new answer", "policy@v2") >= 1
    assert answer(cache) == "new answer"
    # a batch: only the entry naming the invalidated hash is refused
    ids = cache.store_vectors(FakeEmbedder().encode(["a", "b"]), ["A", "B"], tenant="acme",
                              doc_hashes=[["policy@v1", "faq"], ["faq"]])
    assert ids[0] == REFUSED_ID and ids[1] >= 1
    assert cache.stats().stores_refused_invalidated == 2


def test_an_invalidated_hash_is_accepted_again_ttl_s_after_its_invalidation() -> None:
    clock = Clock()
    cache = make(clock)
    cache.invalidate_by_doc("policy@v1")
    clock.t += TTL - 1
    assert store(cache, "late", "policy@v1") == REFUSED_ID
    clock.t += 1  # ttl_s after the invalidation: any entry stored before it has expired by now
    assert store(cache, "again", "policy@v1") >= 1
    assert answer(cache) == "again"


def test_with_no_ttl_the_hash_is_remembered_until_the_bound_drops_the_oldest(monkeypatch) -> None:
    monkeypatch.setattr(semantic, "MAX_INVALIDATED_DOCS", 3)
    clock = Clock()
    cache = make(clock, ttl=0.0)
    for i in range(3):
        cache.invalidate_by_doc(f"doc{i}")
        clock.t += 10_000_000
    assert store(cache, "x", "doc0") == REFUSED_ID  # no expiry: still remembered
    cache.invalidate_by_doc("doc3")  # a fourth: the oldest (doc0) is forgotten
    assert store(cache, "x", "doc0") >= 1
    for d in ("doc1", "doc2", "doc3"):
        assert store(cache, "x", d) == REFUSED_ID
    cache.invalidate_by_doc("doc1")  # invalidated again: now the latest, doc2 is the oldest
    cache.invalidate_by_doc("doc4")
    assert store(cache, "x", "doc2") >= 1
    assert store(cache, "x", "doc1") == REFUSED_ID


def test_an_invalidation_applied_from_the_replication_log_is_remembered() -> None:
    """What a replica does with another replica's ``d/<hash>`` record (CacheReplicator._apply_change)."""
    clock = Clock()
    cache = make(clock)
    vec = FakeEmbedder().encode([Q])[0]
    assert cache._apply_invalidate(doc_hash="policy@v1", spare=lambda key: False) == 0
    assert store(cache, "late", "policy@v1") == REFUSED_ID
    # another replica's late store of that version, read from the log, is refused too
    assert not cache._apply_store("other:7", vec, "late", Q, "acme", "billing", ("policy@v1",), clock.t, None)
    assert answer(cache) is None and len(cache) == 0
    assert cache._apply_store("other:8", vec, "new", Q, "acme", "billing", ("policy@v2",), clock.t, None)
    assert answer(cache) == "new"


def test_a_saved_cache_keeps_refusing_its_invalidated_hashes_for_what_is_left_of_ttl_s(tmp_path) -> None:
    """A restarted gateway (or a replica bootstrapping from a snapshot) loads the remembered hashes with the
    cache: an app whose retriever still hands out the old version cannot put its answer back after a restart."""
    clock = Clock()
    cache = make(clock)
    cache.invalidate_by_doc("policy@v1")  # at t0
    clock.t += 100
    cache.invalidate_by_doc("faq@v3")  # at t0 + 100
    assert store(cache, "kept", "policy@v2") >= 1
    cache.save(tmp_path / "c")

    clock.t += 200  # restarted 300 s after the first invalidation (ttl 600)
    loaded = SemanticCache.load(tmp_path / "c", FakeEmbedder(), CacheConfig(ttl_s=TTL), now=clock)
    assert answer(loaded) == "kept"
    assert store(loaded, "late", "policy@v1") == REFUSED_ID
    assert store(loaded, "late", "faq@v3") == REFUSED_ID
    clock.t += 300  # t0 + 600: policy@v1's ttl is over, faq@v3 has 100 s left
    assert store(loaded, "again", "policy@v1") >= 1
    assert store(loaded, "late", "faq@v3") == REFUSED_ID
    clock.t += 100
    assert store(loaded, "again", "faq@v3") >= 1


def test_hashes_past_their_ttl_are_neither_saved_nor_loaded(tmp_path) -> None:
    clock = Clock()
    cache = make(clock)
    cache.invalidate_by_doc("policy@v1")
    cache.save(tmp_path / "c")
    clock.t += TTL  # the snapshot still lists it; at load its ttl_s is over
    loaded = SemanticCache.load(tmp_path / "c", FakeEmbedder(), CacheConfig(ttl_s=TTL), now=clock)
    assert store(loaded, "again", "policy@v1") >= 1
    loaded.invalidate_by_doc("faq@v3")
    clock.t += TTL
    loaded.save(tmp_path / "d")  # faq@v3 expired before this save: not written
    listed = json.loads((tmp_path / "d" / json.loads((tmp_path / "d" / "MANIFEST.json").read_text())["dir"]
                         / "invalidated.json").read_text())
    assert listed == []


def test_a_snapshot_saved_before_hashes_were_kept_still_loads(tmp_path) -> None:
    """Snapshots written before invalidated.json existed (its manifest does not list it) load with none."""
    clock = Clock()
    cache = make(clock)
    assert store(cache, "kept", "policy@v2") >= 1
    cache.invalidate_by_doc("policy@v1")
    cache.save(tmp_path / "c")
    manifest_path = tmp_path / "c" / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["files"]["invalidated.json"]
    (tmp_path / "c" / manifest["dir"] / "invalidated.json").unlink()
    manifest_path.write_text(json.dumps(manifest))
    loaded = SemanticCache.load(tmp_path / "c", FakeEmbedder(), CacheConfig(ttl_s=TTL), now=clock)
    assert answer(loaded) == "kept"
    assert store(loaded, "late", "policy@v1") >= 1  # nothing was remembered in that format
