"""Saving and loading the semantic cache: round trips, crashes mid-save, corruption."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss")

from costline.serving.cache import store as cache_store  # noqa: E402
from costline.serving.cache.semantic import SemanticCache  # noqa: E402
from costline.serving.errors import CacheCorruptError, CacheError, ServingError  # noqa: E402
from costline.serving.settings import CacheConfig  # noqa: E402

DIM = 16


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class NamedEmbedder:
    """Names a model and its size without loading one (the *_vector methods embed nothing)."""

    def __init__(self, name: str = "all-MiniLM-L6-v2", dim: int = DIM) -> None:
        self.model_name, self.dim = name, dim

    def encode(self, texts):  # pragma: no cover - never called here
        raise AssertionError("nothing is embedded in these tests")


def filled(kind: str, clock: Clock) -> tuple[SemanticCache, np.ndarray]:
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(30, DIM)).astype(np.float32)
    cache = SemanticCache(NamedEmbedder(), CacheConfig(index=kind, threshold=0.99, ttl_s=100), now=clock)
    for i in range(30):
        cache.store_vector(vecs[i], f"answer {i} ✓", tenant=f"t{i % 3}", namespace="ns" if i % 2 else None,
                           query=f"q{i}", doc_hashes=[f"d{i % 5}"])
    return cache, vecs


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_round_trip_keeps_entries_tenants_ttl_lru_and_docs(tmp_path, kind):
    clock = Clock()
    cache, vecs = filled(kind, clock)
    cache.invalidate_by_doc("d4")  # an hnsw cache saves with tombstones
    clock.t += 10
    cache.lookup_vector(vecs[0], tenant="t0")  # entry 0 becomes the most recently used
    cache.save(tmp_path / "c")
    loaded = SemanticCache.load(tmp_path / "c", NamedEmbedder(), CacheConfig(index=kind, threshold=0.99,
                                                                               max_entries=24), now=clock)
    assert len(loaded) == len(cache) == 24
    for i in range(30):
        got = loaded.lookup_vector(vecs[i], tenant=f"t{i % 3}", namespace="ns" if i % 2 else None)
        if i % 5 == 4:
            assert got is None
        else:
            assert got is not None and got.answer == f"answer {i} ✓" and got.query == f"q{i}"
            assert got.expires_at == got.created_at + 100 and got.doc_hashes == (f"d{i % 5}",)
        assert loaded.lookup_vector(vecs[i], tenant="other") is None
    assert loaded.invalidate_by_doc("d1") == 6
    new_id = loaded.store_vector(vecs[4], "new", tenant="t1")
    assert new_id > 30  # ids never reused after a load
    clock.t += 91  # absolute TTL survives the round trip
    assert loaded.lookup_vector(vecs[0], tenant="t0") is None


def test_round_trip_can_switch_index_kind(tmp_path):
    clock = Clock()
    cache, vecs = filled("hnsw", clock)
    cache.save(tmp_path / "c")
    exact = SemanticCache.load(tmp_path / "c", NamedEmbedder(), CacheConfig(index="exact", threshold=0.99),
                               now=clock)
    assert exact.lookup_vector(vecs[7], tenant="t1", namespace="ns").answer == "answer 7 ✓"
    assert exact.stats().tombstones == 0


def test_save_replaces_the_previous_generation(tmp_path):
    clock = Clock()
    cache, vecs = filled("exact", clock)
    cache.save(tmp_path / "c")
    cache.invalidate_by_doc("d0")
    cache.save(tmp_path / "c")
    names = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert names == ["MANIFEST.json", "gen-000002"]
    loaded = SemanticCache.load(tmp_path / "c", NamedEmbedder(), CacheConfig(threshold=0.99), now=clock)
    assert len(loaded) == 24


@pytest.mark.parametrize("fail_at", ["write", "rename", "manifest"])
def test_a_crash_mid_save_leaves_the_previous_cache_loadable(tmp_path, monkeypatch, fail_at):
    clock = Clock()
    cache, vecs = filled("exact", clock)
    cache.save(tmp_path / "c")
    cache.invalidate_by_doc("d0")
    cache.store_vector(np.ones(DIM), "after", tenant="t0")

    class Crash(Exception):
        pass

    real_write, real_rename, real_replace = cache_store._write, os.rename, os.replace
    calls = {"n": 0}

    def write(path, data):
        calls["n"] += 1
        if fail_at == "write" and calls["n"] == 2:
            Path(path).write_bytes(data[: len(data) // 2])  # a torn file
            raise Crash
        return real_write(path, data)

    def rename(src, dst):
        if fail_at == "rename":
            raise Crash
        return real_rename(src, dst)

    def replace(src, dst):
        if fail_at == "manifest":
            raise Crash
        return real_replace(src, dst)

    monkeypatch.setattr(cache_store, "_write", write)
    monkeypatch.setattr(cache_store.os, "rename", rename)
    monkeypatch.setattr(cache_store.os, "replace", replace)
    with pytest.raises(Crash):
        cache.save(tmp_path / "c")
    monkeypatch.undo()
    old = SemanticCache.load(tmp_path / "c", NamedEmbedder(), CacheConfig(threshold=0.99), now=clock)
    assert len(old) == 30 and old.lookup_vector(vecs[0], tenant="t0").answer == "answer 0 ✓"
    cache.save(tmp_path / "c")  # the next save cleans up what the crash left
    # a crash before the rename left no generation behind; after it, gen 2 exists uncommitted and is skipped
    expected_gen = "gen-000003" if fail_at == "manifest" else "gen-000002"
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["MANIFEST.json", expected_gen]
    new = SemanticCache.load(tmp_path / "c", NamedEmbedder(), CacheConfig(threshold=0.99), now=clock)
    assert len(new) == 25 and new.lookup_vector(np.ones(DIM), tenant="t0").answer == "after"


def test_a_changed_file_fails_its_checksum(tmp_path):
    cache, _ = filled("exact", Clock())
    gen = cache_store.save_cache(cache, tmp_path / "c")
    target = gen / "p0.faiss"
    data = bytearray(target.read_bytes())
    data[-5] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(CacheCorruptError, match="checksum"):
        SemanticCache.load(tmp_path / "c", NamedEmbedder())


def test_a_missing_file_or_bad_manifest_is_refused(tmp_path):
    cache, _ = filled("exact", Clock())
    gen = cache_store.save_cache(cache, tmp_path / "c")
    (gen / "entries.json").unlink()
    with pytest.raises(CacheCorruptError, match="missing"):
        SemanticCache.load(tmp_path / "c", NamedEmbedder())
    (tmp_path / "c" / "MANIFEST.json").write_text("{not json")
    with pytest.raises(CacheCorruptError, match="not valid JSON"):
        SemanticCache.load(tmp_path / "c", NamedEmbedder())
    with pytest.raises(CacheError, match="no saved cache"):
        SemanticCache.load(tmp_path / "nowhere", NamedEmbedder())


def test_another_embedding_model_is_refused(tmp_path):
    cache, _ = filled("exact", Clock())
    cache.save(tmp_path / "c")
    with pytest.raises(CacheCorruptError, match="embedding model"):
        SemanticCache.load(tmp_path / "c", NamedEmbedder(name="bge-small"))
    with pytest.raises(CacheCorruptError, match="dimensional"):
        SemanticCache.load(tmp_path / "c", NamedEmbedder(dim=DIM * 2))


def test_manifest_names_its_files_with_checksums(tmp_path):
    cache, _ = filled("exact", Clock())
    cache.save(tmp_path / "c")
    manifest = json.loads((tmp_path / "c" / "MANIFEST.json").read_text())
    assert manifest["format"] == cache_store.FORMAT and manifest["entries"] == 30
    assert len(manifest["partitions"]) == 6  # 3 tenants x 2 namespaces
    assert all(len(d) == 64 for d in manifest["files"].values())
    assert issubclass(CacheCorruptError, ServingError)


def test_a_lone_surrogate_in_an_entry_round_trips_and_never_stops_a_save(tmp_path):
    """JSON's "\\ud800" (a client's half emoji) in a stored text made every later save of the whole cache raise
    UnicodeEncodeError (entries.json was written as UTF-8): it is written escaped and read back as it was."""
    clock = Clock()
    cache = SemanticCache(NamedEmbedder(), CacheConfig(threshold=0.99), now=clock)
    vec = np.random.default_rng(3).normal(size=DIM).astype(np.float32)
    texts = {"answer": "half an emoji \ud83d", "query": "\udc00 q", "tenant": "acme\ud800", "doc": "doc\udfff"}
    cache.store_vector(vec, texts["answer"], tenant=texts["tenant"], query=texts["query"], doc_hashes=[texts["doc"]])
    cache.save(tmp_path / "c")
    back = SemanticCache.load(tmp_path / "c", NamedEmbedder(), CacheConfig(threshold=0.99), now=clock)
    hit = back.lookup_vector(vec, tenant=texts["tenant"])
    assert hit is not None
    assert (hit.answer, hit.query, hit.tenant, hit.doc_hashes) == (
        texts["answer"], texts["query"], texts["tenant"], (texts["doc"],))
