"""FAISS's OpenMP thread count is per thread: the cache sets ``search_threads`` in every thread that searches.

Set only in the thread that made the cache, it never reached the gateway's request threads: their searches ran
with OpenMP's default team (a thread per core), whose idle threads spin after every search (2x the CPU of a
lookup). These tests read the count a thread has after it used the cache, against what a thread that never set
it has (OpenMP's default for this machine), so they hold on any number of cores.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from costline.serving.cache import SemanticCache
from costline.serving.settings import CacheConfig

faiss = pytest.importorskip("faiss")
DIM = 4


def in_new_thread(fn):
    """``fn()`` run in a thread of its own (a fresh OpenMP thread state, as a gateway request thread has)."""
    out = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join()
    return out[0]


def unit(i: int) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[i % DIM] = 1.0
    return v


@pytest.mark.parametrize("use", ["lookup", "store"])
def test_a_thread_that_uses_the_cache_runs_faiss_with_search_threads(use):
    default = in_new_thread(faiss.omp_get_max_threads)
    want = default + 1  # never what a fresh thread has by default
    cache = SemanticCache(None, CacheConfig(search_threads=want), dim=DIM)
    cache.store_vector(unit(0), "a", tenant="t")

    def use_then_read() -> int:
        if use == "lookup":
            assert cache.lookup_vector(unit(0), tenant="t").answer == "a"
        else:
            cache.store_vector(unit(1), "b", tenant="t")
        return faiss.omp_get_max_threads()

    assert in_new_thread(use_then_read) == want


def test_search_threads_0_leaves_openmp_default():
    default = in_new_thread(faiss.omp_get_max_threads)
    cache = SemanticCache(None, CacheConfig(search_threads=0), dim=DIM)
    cache.store_vector(unit(0), "a", tenant="t")

    def lookup_then_read() -> int:
        cache.lookup_vector(unit(0), tenant="t")
        return faiss.omp_get_max_threads()

    assert in_new_thread(lookup_then_read) == default
