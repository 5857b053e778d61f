"""One FAISS index of the semantic cache: the vectors of one (tenant, namespace).

The cache keeps a :class:`Partition` per (tenant, namespace), so a search can
only ever see the vectors of the tenant that asked. Two kinds of index:

* ``"exact"`` — ``IndexIDMap2(IndexFlatIP)``: exact inner product (= cosine on unit
  vectors); deletions are a batched ``remove_ids``;
* ``"hnsw"`` — ``IndexIDMap2(IndexHNSWFlat)``: approximate, for very large caches; it
  cannot delete, so removed ids become tombstones that searches skip, and the index is
  rebuilt from its survivors' stored vectors (never re-embedded) once tombstones pass
  ``rebuild_tombstone_ratio`` of it.

Not thread-safe by itself: :class:`~costline.serving.cache.semantic.SemanticCache` holds its
lock around every call.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from costline.serving.errors import MissingExtraError
from costline.serving.settings import CACHE_INDEX_KINDS, CacheConfig

__all__ = ["Partition", "INDEX_KINDS", "import_faiss"]

INDEX_KINDS = CACHE_INDEX_KINDS


def import_faiss() -> Any:
    """The ``faiss`` module, or :class:`MissingExtraError` naming the extra to install."""
    try:
        import faiss
    except ImportError:
        raise MissingExtraError("faiss (faiss-cpu)") from None
    return faiss


class Partition:
    """The index of one (tenant, namespace) and the set of its live entry ids."""

    def __init__(self, dim: int, config: CacheConfig, index: Any = None, live: Iterable[int] = ()) -> None:
        self.dim = dim
        self.kind = config.index
        self._config = config
        self._faiss = import_faiss()
        self.index = index if index is not None else self._new_index()
        self.live: set[int] = set(live)
        self.rebuilds = 0

    # -- queries -------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def tombstones(self) -> int:
        return self.ntotal - len(self.live)

    def search(self, vector: np.ndarray, k: int) -> list[tuple[float, int]]:
        """The ``k`` most similar live entries as (similarity, id), most similar first."""
        k = min(k, len(self.live))
        if k <= 0:
            return []
        want = k
        while True:
            want = min(want, self.ntotal)
            sims, ids = self.index.search(vector.reshape(1, -1), want)
            found = [(float(s), int(i)) for s, i in zip(sims[0], ids[0]) if i >= 0 and int(i) in self.live]
            if len(found) >= k or want >= self.ntotal:
                return found[:k]
            want *= 4  # tombstones took some of the places: look further

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of the live entries, read back from the index (no re-embedding)."""
        faiss = self._faiss
        inner = faiss.downcast_index(self.index.index)
        n = self.ntotal
        if n == 0:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.dim), dtype=np.float32)
        all_ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        all_vecs = inner.reconstruct_n(0, n)
        keep = np.isin(all_ids, np.fromiter(self.live, dtype=np.int64, count=len(self.live)))
        return all_ids[keep], np.ascontiguousarray(all_vecs[keep], dtype=np.float32)

    # -- changes -------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.index.add_with_ids(vectors, ids)
        self.live.update(int(i) for i in ids)

    def remove(self, ids: Iterable[int]) -> int:
        """Remove these ids (unknown ones are ignored); returns how many were live."""
        gone = [i for i in ids if i in self.live]
        if not gone:
            return 0
        self.live.difference_update(gone)
        if self.kind == "exact":
            self.index.remove_ids(np.asarray(gone, dtype=np.int64))
        elif self.live and self.tombstones > self._config.rebuild_tombstone_ratio * self.ntotal:
            self.rebuild()
        return len(gone)

    def rebuild(self, config: CacheConfig | None = None) -> None:
        """A fresh index (of ``config.index`` kind if given) holding only the live entries."""
        ids, vecs = self.vectors()
        if config is not None:
            self._config, self.kind = config, config.index
        self.index = self._new_index()
        if len(ids):
            self.index.add_with_ids(vecs, ids)
        self.rebuilds += 1

    # -- persistence ---------------------------------------------------------------------
    def serialize(self) -> bytes:
        return self._faiss.serialize_index(self.index).tobytes()

    @classmethod
    def deserialize(cls, data: bytes, dim: int, config: CacheConfig, live: Iterable[int], kind: str) -> "Partition":
        faiss = import_faiss()
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        saved = cls(dim, _with_kind(config, kind), index=index, live=live)
        if kind != config.index:
            saved.rebuild(config)
        elif kind == "hnsw":
            faiss.downcast_index(saved.index.index).hnsw.efSearch = config.hnsw_ef_search
        return saved

    def id_set(self) -> set[int]:
        """Every id the index holds, live or tombstone."""
        return set(self._faiss.vector_to_array(self.index.id_map).tolist())

    # -- internals -----------------------------------------------------------------------
    def _new_index(self) -> Any:
        faiss, cfg = self._faiss, self._config
        if self.kind == "exact":
            inner = faiss.IndexFlatIP(self.dim)
        elif self.kind == "hnsw":
            inner = faiss.IndexHNSWFlat(self.dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efSearch = cfg.hnsw_ef_search
            inner.hnsw.efConstruction = cfg.hnsw_ef_construction
        else:  # validated by the cache; here for direct use
            raise ValueError(f"index must be one of {', '.join(INDEX_KINDS)}, got {self.kind!r}")
        return faiss.IndexIDMap2(inner)


def _with_kind(config: CacheConfig, kind: str) -> CacheConfig:
    import dataclasses

    return config if config.index == kind else dataclasses.replace(config, index=kind)
