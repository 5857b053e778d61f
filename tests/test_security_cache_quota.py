"""Per-tenant quota in the semantic cache: one tenant's traffic cannot evict another's entries."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("faiss")

from costline.errors import ConfigError  # noqa: E402
from costline.serving.cache.semantic import SemanticCache  # noqa: E402
from costline.serving.settings import CacheConfig  # noqa: E402

DIM = 16


def vectors(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_a_flooding_tenant_evicts_only_its_own_entries() -> None:
    cache = SemanticCache(None, CacheConfig(max_entries=100, max_entries_per_tenant=40, evict_fraction=0.0),
                          dim=DIM)
    acme = vectors(30, seed=1)
    for i, v in enumerate(acme):
        cache.store_vector(v, f"acme {i}", tenant="acme")
    flood = vectors(500, seed=2)
    for i, v in enumerate(flood):
        cache.store_vector(v, f"evil {i}", tenant="evil")
    hits = [cache.lookup_vector(v, tenant="acme") for v in acme]
    assert all(h is not None and h.answer == f"acme {i}" for i, h in enumerate(hits))  # all 30 survive
    evil_hits = sum(cache.lookup_vector(v, tenant="evil") is not None for v in flood)
    assert evil_hits == 40  # the flooding tenant keeps its quota, its most recent entries
    assert cache.lookup_vector(flood[-1], tenant="evil") is not None
    assert cache.lookup_vector(flood[0], tenant="evil") is None


def test_without_a_quota_the_shared_cap_lets_one_tenant_evict_another() -> None:
    cache = SemanticCache(None, CacheConfig(max_entries=100, evict_fraction=0.0), dim=DIM)
    acme = vectors(30, seed=1)
    for i, v in enumerate(acme):
        cache.store_vector(v, f"acme {i}", tenant="acme")
    for v in vectors(500, seed=2):
        cache.store_vector(v, "evil", tenant="evil")
    assert all(cache.lookup_vector(v, tenant="acme") is None for v in acme)


def test_quota_is_validated() -> None:
    with pytest.raises(ConfigError, match="max_entries_per_tenant"):
        SemanticCache(None, CacheConfig(max_entries=10, max_entries_per_tenant=11), dim=DIM)
    with pytest.raises(ConfigError, match="max_entries_per_tenant"):
        SemanticCache(None, CacheConfig(max_entries_per_tenant=-1), dim=DIM)
