"""The semantic cache: answer a question again when a close enough one was answered before.

::

    cache = SemanticCache(Embedder(), config.serving.cache, recorder=recorder)
    hit = cache.lookup("how do I cancel my plan?", tenant="acme", namespace="billing")
    if hit is None:
        answer = call_the_model(...)
        cache.store("how do I cancel my plan?", answer, tenant="acme", namespace="billing",
                    doc_hashes=[policy_hash])

How it keeps its promises (docs/cache.md has the long version):

* **tenant isolation by construction** — one FAISS index per (tenant, namespace); a
  lookup searches only the index of the tenant it names, so another tenant's vectors
  are never candidates, whatever their similarity;
* **thresholds** — ``threshold`` (0.93), overridden per namespace by ``namespace_thresholds``;
* **invalidation** — :meth:`SemanticCache.invalidate_by_doc` drops every entry built
  from a document (one batched ``remove_ids`` per index; survivors are never
  re-embedded); :meth:`SemanticCache.invalidate_tenant` drops a tenant. An entry names at most
  :data:`MAX_DOC_HASHES` doc hashes: a store naming more is refused whole (:class:`DocHashesError`), never cut
  short (a hash left out would never invalidate it);
* **TTL** — absolute from the store (a hit does not extend it): an expired entry is
  never served and is purged in batches; an entry from another replica expires here at the
  earlier of the sender's expiry and its store time + this cache's ``ttl_s``;
  **size cap** — least recently used first;
* **persistence** — :meth:`SemanticCache.save` / :meth:`SemanticCache.load`
  (see :mod:`costline.serving.cache.store`: a crash mid-save never leaves a cache that loads wrong);
* **thread-safe** — one lock around index and metadata; embedding runs outside it;
* **replicas** — with ``[serving.cache] replication_topic`` set, every store, invalidation and
  eviction is published to a compacted Kafka topic and the other replicas' changes are applied
  from it (:mod:`costline.serving.cache.replication`): call :meth:`SemanticCache.start` once the
  server is up and :meth:`SemanticCache.shutdown` when it stops.

Each :meth:`SemanticCache.lookup` is a ``costline.cache.lookup`` span (hit, similarity,
namespace) when a :class:`~costline.collectors.Recorder` is given.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from costline.errors import ConfigError
from costline.serving.errors import CacheError
from costline.serving.cache.index import Partition, import_faiss
from costline.serving.cache.key import COSTLINE_CACHE_REJECT_REASON, split_namespace
from costline.serving.settings import CACHE_MODES, CacheConfig

if TYPE_CHECKING:
    from costline.collectors.recorder import Recorder
    from costline.config import KafkaConfig
    from costline.serving.cache.replication import CacheReplicator
    from costline.serving.cache.pair_model import LazyPairModel
    from costline.serving.cache.verify import Verifier
    from costline.serving.embedding import Embedder

__all__ = [
    "SemanticCache",
    "CacheHit",
    "CacheStats",
    "LookupResult",
    "DEFAULT_NAMESPACE",
    "COSTLINE_CACHE_REJECT_REASON",
    "REASON_SIMILARITY",
    "REASON_LONG_QUERY",
    "REASON_SHADOWED",
    "CACHE_MODES",
    "DocHashesError",
    "MAX_DOC_HASHES",
    "build_verifier",
    "validate_cache_config",
]

#: The namespace of lookups and stores that name none.
DEFAULT_NAMESPACE = "default"

log = logging.getLogger(__name__)

#: The most doc hashes one stored answer may name: every hash is kept with the entry and in the index from hash to
#: entries, so an unbounded list would let one request hold memory for thousands (a store naming more is refused:
#: :class:`DocHashesError`). An answer built from more documents names their set by one hash of its own.
MAX_DOC_HASHES = 64


class DocHashesError(CacheError, ValueError):
    """A store names more doc hashes than :data:`MAX_DOC_HASHES`: nothing was stored (the list is never cut short:
    a hash left out would never invalidate the entry)."""


#: At most this many invalidated doc hashes are remembered (see :meth:`SemanticCache.invalidate_by_doc`):
#: past it the oldest invalidation is forgotten first.
MAX_INVALIDATED_DOCS = 100_000
#: At most this many tenant invalidations are remembered (see :meth:`SemanticCache.invalidate_tenant`): past it the
#: oldest is forgotten first.
MAX_INVALIDATED_TENANTS = 100_000

#: What :meth:`SemanticCache.store` (and each refused position of :meth:`SemanticCache.store_vectors`) returns
#: for an answer it did not store because it was built from an invalidated document (entry ids start at 1).
REFUSED_ID = -1

#: Candidates fetched per search; more are fetched only when expired ones fill the places.
_SEARCH_K = 4

#: A candidate under the similarity a hit needs.
REASON_SIMILARITY = "similarity"
#: A query longer than the embedding model's window, which is only served for an exact repeat.
REASON_LONG_QUERY = "long_query"
#: A candidate less similar, by more than ``verify_shadow_margin``, than one the verifier rejected: the closest
#: stored question asks something else, so a farther one is a weaker match than a known different question.
REASON_SHADOWED = "shadowed"


@dataclass(frozen=True)
class CacheHit:
    """A stored answer served for a lookup."""

    entry_id: int
    answer: str
    similarity: float
    #: The stored query that matched (empty when it was stored as a bare vector).
    query: str
    tenant: str
    namespace: str
    doc_hashes: tuple[str, ...]
    created_at: float
    expires_at: float | None


@dataclass(frozen=True)
class LookupResult:
    """What one lookup found: the hit (or None), the best similarity, why candidates were rejected."""

    hit: CacheHit | None
    similarity: float | None
    #: One reason per rejected candidate, most similar first (see the REASON_* names).
    reject_reasons: tuple[str, ...]


@dataclass(frozen=True)
class CacheStats:
    """Counts since the cache was built (``entries``..``tombstones`` are current sizes)."""

    entries: int
    partitions: int
    tenants: int
    tombstones: int
    lookups: int
    hits: int
    misses: int
    stores: int
    evicted: int
    expired: int
    invalidated: int
    #: Stores refused because an answer was built from a document invalidated before it arrived.
    stores_refused_invalidated: int = 0
    #: Replicated stores refused because their tenant was invalidated at or after their store time (a store
    #: delivered late, or an old record replayed onto the topic).
    stores_refused_tenant: int = 0

    @property
    def hit_rate(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0


@dataclass
class _Entry:
    id: int
    tenant: str
    namespace: str
    query: str
    answer: str
    doc_hashes: tuple[str, ...]
    created_at: float
    #: The expiry the entry was stored with (by another replica, for a replicated one: what its record says).
    expires_at: float | None
    #: The entry's name across replicas ("" when the cache is not replicated).
    key: str = ""

    def expired(self, now: float) -> bool:
        """Past the expiry it was stored with (every replica's bound; this cache's own: ``SemanticCache._expired``)."""
        return self.expires_at is not None and now >= self.expires_at


def effective_expiry(created_at: float, expires_at: float | None, ttl_s: float) -> float | None:
    """When an entry stops being served by a cache of ``ttl_s``: the earlier of the expiry it was stored with (the
    sender's, for a replicated entry) and its store time + ``ttl_s`` (0: no bound of this cache's own). None: never."""
    own = created_at + ttl_s if ttl_s > 0 else None
    if expires_at is None or own is None:
        return own if expires_at is None else expires_at
    return min(expires_at, own)


def validate_cache_config(config: CacheConfig) -> None:
    """Raise :class:`~costline.errors.ConfigError` naming the first bad ``[serving.cache]`` key."""

    def bad(key: str, problem: str) -> ConfigError:
        return ConfigError(f"[serving.cache] {key}", problem)

    def similarity(key: str, value: float) -> None:
        if not (isinstance(value, (int, float)) and 0.0 < value <= 1.0):
            raise bad(key, f"must be a cosine similarity in (0, 1]; got {value!r}")

    similarity("threshold", config.threshold)
    if not isinstance(config.bypass_sampled, bool):
        raise bad("bypass_sampled", f"must be true or false (true: requests that ask for sampling skip the cache); "
                                    f"got {config.bypass_sampled!r}")
    for ns, value in config.namespace_thresholds.items():
        similarity(f"namespace_thresholds.{ns}", value)
    if not 0.0 <= config.ttl_s < math.inf:
        raise bad("ttl_s", f"must be a finite number of seconds, 0 (never expires) or more; got {config.ttl_s!r}")
    if config.max_entries < 1:
        raise bad("max_entries", "must be at least 1")
    if not 0.0 <= config.evict_fraction < 1.0:
        raise bad("evict_fraction", "must be in [0, 1)")
    if not 0 <= config.max_entries_per_tenant <= config.max_entries:
        raise bad("max_entries_per_tenant", "must be 0 (no quota) up to max_entries")
    if not 0.0 < config.rebuild_tombstone_ratio <= 1.0:
        raise bad("rebuild_tombstone_ratio", "must be in (0, 1]")
    for key in ("hnsw_m", "hnsw_ef_search", "hnsw_ef_construction"):
        if getattr(config, key) < 1:
            raise bad(key, "must be at least 1")
    if config.search_threads < 0:
        raise bad("search_threads", "must be 0 (FAISS's default) or more")
    if not 0.0 < config.tune_max_false_hit_rate < 1.0:
        raise bad("tune_max_false_hit_rate", "must be in (0, 1)")
    similarity("verify_min_similarity", config.verify_min_similarity)
    m = config.verify_shadow_margin
    if not (isinstance(m, (int, float)) and not isinstance(m, bool) and 0.0 <= m <= 1.0):
        raise bad("verify_shadow_margin", f"must be a cosine margin in [0, 1] (1: verify every candidate on its "
                                          f"own); got {m!r}")
    if not 0.0 < config.target_false_hit_rate < 1.0:
        raise bad("target_false_hit_rate", "must be in (0, 1)")
    t = config.pair_model_threshold
    if t is not None and not (isinstance(t, (int, float)) and 0.0 <= t < 1.0):
        raise bad("pair_model_threshold", f"must be a probability in [0, 1), or unset for the model's own; got {t!r}")
    similarity("pair_model_strict_below", config.pair_model_strict_below)
    for key in ("pair_model_strict_threshold", "pair_model_time_threshold"):
        t = getattr(config, key)
        if not (isinstance(t, (int, float)) and not isinstance(t, bool) and 0.0 <= t < 1.0):
            raise bad(key, f"must be a probability in [0, 1) (0: no stricter); got {t!r}")
    # the replication keys whether replication is on or not: a bad one must not wait for the day it is turned on
    # (a queue of 0 or less is unbounded: queue.Queue(maxsize=0))
    q = config.replication_queue_size
    if not (isinstance(q, int) and not isinstance(q, bool) and q >= 1):
        raise bad("replication_queue_size", f"must be at least 1 (changes waiting to be published; the default is "
                                            f"10000); got {q!r}")
    interval, max_age = config.replication_snapshot_interval_s, config.replication_snapshot_max_age_s
    if not (isinstance(interval, (int, float)) and 0.0 <= interval < math.inf):
        raise bad("replication_snapshot_interval_s", f"must be a finite number of seconds, 0 (a snapshot only at "
                                                     f"shutdown) or more; got {interval!r}")
    if not (isinstance(max_age, (int, float)) and 0.0 < max_age < math.inf):
        raise bad("replication_snapshot_max_age_s", f"must be a finite number of seconds above 0 (the topic's "
                                                    f"tombstones live 24 h: the default is 72000); got {max_age!r}")
    if config.replication_topic is not None:
        from costline.serving.cache.replication import validate_replication_config

        validate_replication_config(config)


class _Remembered:
    """When each name (an invalidated doc hash, an invalidated tenant) was last invalidated, while that still
    matters: for ``ttl()`` seconds after it (an entry stored before it cannot outlive it by more; 0 = no expiry) and
    for at most ``bound()`` names, the oldest invalidation forgotten first. The cache's lock guards it."""

    def __init__(self, ttl: Callable[[], float], bound: Callable[[], int]) -> None:
        self._ttl, self._bound = ttl, bound
        self._at: OrderedDict[str, float] = OrderedDict()  # name -> when, the latest remembered last

    def __bool__(self) -> bool:
        return bool(self._at)

    def remember(self, name: str, at: float, now: float) -> None:
        """``name`` invalidated at ``at`` (its latest time counts; a late record's older time is kept as the later)."""
        self._at[name] = max(at, self._at.pop(name, at))
        ttl = self._ttl()
        while self._at:
            first, when = next(iter(self._at.items()))
            if len(self._at) > self._bound() or (ttl > 0 and now >= when + ttl):
                del self._at[first]
            else:
                break

    def at(self, name: str, now: float) -> float | None:
        """When ``name`` was invalidated, if that is still remembered at ``now``; else None."""
        when = self._at.get(name)
        ttl = self._ttl()
        return None if when is None or (ttl > 0 and now >= when + ttl) else when

    def live(self, now: float) -> list[list[Any]]:
        """``[name, when]`` of every name still remembered at ``now``, oldest first (what a snapshot keeps)."""
        return [[name, when] for name, when in self._at.items() if self.at(name, now) is not None]

    def merge(self, loaded: Iterable[tuple[str, float]], now: float) -> None:
        """Add ``loaded`` (a snapshot's ``[name, when]``), the latest time of a name counting, and keep what is
        still remembered at ``now``, oldest first, at most ``bound()``."""
        when = dict(self._at)
        for name, at in loaded:
            when[name] = max(at, when.get(name, at))
        ttl = self._ttl()
        live = sorted((at, name) for name, at in when.items() if ttl <= 0 or now < at + ttl)
        self._at = OrderedDict((name, at) for at, name in live[-self._bound():])


class SemanticCache:
    """A per-tenant semantic cache over FAISS (see the module docstring).

    ``now`` returns seconds since the epoch (inject a fake clock in tests);
    ``recorder`` turns each lookup into a ``costline.cache.lookup`` span; ``kafka`` is the
    cluster of the replication topic unless ``[serving.cache] replication_bootstrap_servers`` names one.
    """

    def __init__(
        self,
        embedder: "Embedder | None",
        config: CacheConfig | None = None,
        *,
        recorder: "Recorder | None" = None,
        now: Callable[[], float] = time.time,
        dim: int | None = None,
        verifier: "Verifier | None" = None,
        kafka: "KafkaConfig | None" = None,
    ) -> None:
        self._config = config or CacheConfig()
        validate_cache_config(self._config)
        if verifier is None and self._config.mode == "verified":
            verifier = build_verifier(self._config)
        #: The verification stage (None in threshold mode).
        self.verifier = verifier if self._config.mode == "verified" else None
        if embedder is None and dim is None:
            raise ValueError("give an embedder, or dim= for a cache used only through *_vector methods")
        self._embedder = embedder
        self._dim = dim
        self._recorder = recorder
        self._now = now
        self._lock = threading.RLock()
        self._parts: dict[tuple[str, str], Partition] = {}
        self._entries: dict[int, _Entry] = {}  # in store order (= expiry order for one ttl)
        self._lru: OrderedDict[int, None] = OrderedDict()
        self._by_doc: dict[str, set[int]] = {}
        self._next_id = 1
        self._counts: Counter[str] = Counter()
        self._per_tenant: Counter[str] = Counter()  # entries held per tenant (the quota's count)
        self._by_key: dict[str, int] = {}  # replicated entries: key -> id
        # doc hash / tenant -> when it was last invalidated (see invalidate_by_doc, invalidate_tenant; bounded)
        self._invalidated_docs = _Remembered(lambda: self._config.ttl_s, lambda: MAX_INVALIDATED_DOCS)
        self._invalidated_tenants = _Remembered(lambda: self._config.ttl_s, lambda: MAX_INVALIDATED_TENANTS)
        self._applying = False  # True while a change from the replication topic is applied
        self._faiss = import_faiss()
        #: The threads that have set FAISS's OpenMP thread count (see _faiss_threads).
        self._omp = threading.local()
        self._faiss_threads()
        #: The replication of this cache over Kafka (None when ``replication_topic`` is unset).
        self.replication: "CacheReplicator | None" = None
        if self._config.replication_topic is not None:
            from costline.serving.cache.replication import CacheReplicator

            self.replication = CacheReplicator(self, kafka=kafka, now=now)

    # -- lifecycle (replication; no-ops without it) -----------------------------------------
    def start(self) -> None:
        """Start replication: bootstrap from the snapshot at ``path`` plus the topic, then follow it."""
        if self.replication is not None:
            self.replication.start()

    def force_flush(self, timeout: float = 5.0) -> bool:
        """Wait until every change made so far is on the replication topic; False on timeout."""
        return True if self.replication is None else self.replication.force_flush(timeout)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Publish what is queued, stop following the topic, save a snapshot (when ``path`` is set)."""
        if self.replication is not None:
            self.replication.shutdown(timeout)

    # -- properties ----------------------------------------------------------------------
    @property
    def config(self) -> CacheConfig:
        return self._config

    @property
    def embedder(self) -> "Embedder | None":
        return self._embedder

    @property
    def dim(self) -> int:
        if self._dim is None:
            assert self._embedder is not None
            self._dim = self._embedder.dim
        return self._dim

    def threshold_for(self, namespace: str | None) -> float:
        """The similarity a hit needs in ``namespace``."""
        ns = split_namespace(namespace or DEFAULT_NAMESPACE)[0]
        return self._config.namespace_thresholds.get(ns, self._config.threshold)

    # -- lookups -------------------------------------------------------------------------
    def lookup(self, query: str, *, tenant: str, namespace: str | None = None) -> CacheHit | None:
        """The stored answer of the closest query of ``tenant``'s ``namespace``, if close enough."""
        return self.lookup_detail(query, tenant=tenant, namespace=namespace).hit

    def lookup_detail(self, query: str, *, tenant: str, namespace: str | None = None) -> LookupResult:
        """:meth:`lookup`, also saying why each candidate was rejected."""
        ns = _names(tenant, namespace)
        if not isinstance(query, str):
            raise TypeError(f"query must be a string, got {type(query).__name__}")
        with self._span(ns) as lk:
            vector = self._embed([query])[0]
            found = self._search(vector, tenant, ns, query)
            _record(lk, found)
        return found

    def lookup_vector(self, vector: Any, *, tenant: str, namespace: str | None = None) -> CacheHit | None:
        """:meth:`lookup` with a precomputed embedding (normalised here; no text, so no verification)."""
        ns = _names(tenant, namespace)
        with self._span(ns) as lk:
            found = self._search(self._unit(vector), tenant, ns, None)
            _record(lk, found)
        return found.hit

    # -- stores --------------------------------------------------------------------------
    def store(
        self,
        query: str,
        answer: str,
        *,
        tenant: str,
        namespace: str | None = None,
        doc_hashes: Iterable[str] = (),
    ) -> int:
        """Store ``answer`` for ``query``; returns the new entry's id, or :data:`REFUSED_ID` when it was not
        stored because one of ``doc_hashes`` was invalidated (see :meth:`invalidate_by_doc`)."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a string, got {type(query).__name__}")
        vector = self._embed([query])
        return self._add(vector, [answer], [query], tenant, namespace, [doc_hashes])[0]

    def store_vector(
        self,
        vector: Any,
        answer: str,
        *,
        tenant: str,
        namespace: str | None = None,
        query: str = "",
        doc_hashes: Iterable[str] = (),
    ) -> int:
        """:meth:`store` with a precomputed embedding (normalised here)."""
        return self._add(self._unit(vector)[None, :], [answer], [query], tenant, namespace, [doc_hashes])[0]

    def store_vectors(
        self,
        vectors: Any,
        answers: Sequence[str],
        *,
        tenant: str,
        namespace: str | None = None,
        queries: Sequence[str] | None = None,
        doc_hashes: Sequence[Iterable[str]] | None = None,
    ) -> list[int]:
        """Store many precomputed embeddings at once (one index add); returns their ids (:data:`REFUSED_ID` for each
        one refused because it names an invalidated doc hash)."""
        mat = self._units(vectors)
        n = len(mat)
        queries = [""] * n if queries is None else list(queries)
        docs = [()] * n if doc_hashes is None else list(doc_hashes)
        if not (len(answers) == len(queries) == len(docs) == n):
            raise ValueError(f"{n} vectors need as many answers, queries and doc_hashes")
        return self._add(mat, list(answers), queries, tenant, namespace, docs)

    # -- removal -------------------------------------------------------------------------
    def invalidate_by_doc(self, doc_hash: str) -> int:
        """Remove every entry built from ``doc_hash`` (all tenants); returns how many.

        A doc hash names one version of a document: once invalidated it is never valid again, so the cache also
        *remembers* it and refuses any later store tagged with it (an answer that was being computed from the old
        version when it was invalidated must not be served afterwards): the store returns :data:`REFUSED_ID` and
        counts ``stores_refused_invalidated``. A hash is remembered for ``ttl_s`` after its (latest) invalidation
        (an entry stored before it could not live longer anyway), or, with ``ttl_s = 0``, until forgotten by the
        bound: at most :data:`MAX_INVALIDATED_DOCS` hashes are remembered, the oldest invalidation dropped first.
        Invalidations applied from the replication topic are remembered too, and :meth:`save` keeps them (with
        their times), so a cache loaded from a snapshot — a restarted gateway, a new replica bootstrapping — still
        refuses them for what is left of their ``ttl_s``.
        """
        with self._lock:
            if self.replication is not None and not self._applying:
                self.replication.publish_invalidate_doc(doc_hash)
            self._remember_invalidated(doc_hash)
            ids = self._by_doc.get(doc_hash, set())
            return self._remove(list(ids), "invalidated")

    def invalidate_tenant(self, tenant: str) -> int:
        """Remove every entry of ``tenant``; returns how many.

        The time is remembered (like an invalidated doc hash: for ``ttl_s``, at most :data:`MAX_INVALIDATED_TENANTS`
        tenants, kept by :meth:`save`): a store of the tenant read from the replication topic that was made at or
        before it (one delivered late, or an old record replayed onto the topic) is refused.
        """
        with self._lock:
            now = self._now()
            if self.replication is not None and not self._applying:
                self.replication.publish_invalidate_tenant(tenant, at=now)
            self._remember_tenant_invalidated(tenant, now)
            ids = [i for (t, _), p in self._parts.items() if t == tenant for i in p.live]
            return self._remove(ids, "invalidated")

    def purge_expired(self) -> int:
        """Remove every expired entry now (lookups never serve them anyway); returns how many."""
        with self._lock:
            now = self._now()
            return self._remove([e.id for e in self._entries.values() if self._expired(e, now)], "expired")

    def clear(self) -> None:
        """Remove everything (here only: replicas keep theirs; nothing is published)."""
        with self._lock:
            self._by_key.clear()
            self._parts.clear()
            self._entries.clear()
            self._per_tenant.clear()
            self._lru.clear()
            self._by_doc.clear()

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Save index and metadata under the folder ``path`` (atomically; see cache_store)."""
        from costline.serving.cache.store import save_cache

        save_cache(self, path)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        embedder: "Embedder | None",
        config: CacheConfig | None = None,
        *,
        recorder: "Recorder | None" = None,
        now: Callable[[], float] = time.time,
        dim: int | None = None,
        kafka: "KafkaConfig | None" = None,
    ) -> "SemanticCache":
        """A cache read back from ``path``; raises CacheCorruptError rather than load anything wrong."""
        from costline.serving.cache.store import load_cache

        cache = cls(embedder, config, recorder=recorder, now=now, dim=dim, kafka=kafka)
        state = load_cache(cache, path)
        if cache.replication is not None:
            cache.replication.restore_offset(state)  # start() follows on from the offset it covers
        return cache

    # -- introspection -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> CacheStats:
        with self._lock:
            c = self._counts
            return CacheStats(
                entries=len(self._entries),
                partitions=len(self._parts),
                tenants=len({t for t, _ in self._parts}),
                tombstones=sum(p.tombstones for p in self._parts.values()),
                lookups=c["hits"] + c["misses"],
                hits=c["hits"],
                misses=c["misses"],
                stores=c["stores"],
                evicted=c["evicted"],
                expired=c["expired"],
                invalidated=c["invalidated"],
                stores_refused_invalidated=c["stores_refused_invalidated"],
                stores_refused_tenant=c["stores_refused_tenant"],
            )

    # -- internals -----------------------------------------------------------------------
    def _span(self, namespace: str) -> Any:
        if self._recorder is None:
            return contextlib.nullcontext(None)
        return self._recorder.cache_lookup(namespace=split_namespace(namespace)[0])

    def _embed(self, texts: list[str]) -> np.ndarray:
        if self._embedder is None:
            raise ValueError("this cache has no embedder: use lookup_vector/store_vector")
        return self._embedder.encode(texts)

    def _unit(self, vector: Any) -> np.ndarray:
        return self._units(np.asarray(vector, dtype=np.float32).reshape(1, -1))[0]

    def _units(self, vectors: Any) -> np.ndarray:
        mat = np.array(vectors, dtype=np.float32, copy=True, ndmin=2)
        if mat.ndim != 2 or mat.shape[1] != self.dim:
            raise ValueError(f"vectors must have shape (n, {self.dim}), got {mat.shape}")
        norms = np.linalg.norm(mat, axis=1, keepdims=True)
        if not np.all(np.isfinite(norms)) or np.any(norms == 0):
            raise ValueError("vectors must be finite and non-zero")
        return np.ascontiguousarray(mat / norms, dtype=np.float32)

    def _search(self, vector: np.ndarray, tenant: str, ns: str, query: str | None) -> LookupResult:
        threshold = self.threshold_for(ns)
        verifier = self.verifier
        floor = self._config.verify_min_similarity
        base_ns = split_namespace(ns)[0]
        reasons: list[str] = []
        # FAISS search and the candidates' snapshot under the lock (an index is not safe to search
        # while another thread adds); their verification outside it (about a millisecond of parsing
        # and model per lookup, which would otherwise serialise every concurrent lookup and store)
        with self._lock:
            part = self._parts.get((tenant, ns))
            if part is None:
                self._counts["misses"] += 1
                return LookupResult(None, None, ())
            candidates = self._candidates(part, vector, self._now())
        best = candidates[0][0] if candidates else None
        margin = self._config.verify_shadow_margin
        rejected: float | None = None  # the cosine of the most similar candidate the verifier rejected
        for sim, entry in candidates:
            # every candidate with both texts is verified (unless a closer one was rejected: shadowed); a bare
            # vector can only be thresholded
            verify = verifier is not None and query is not None and bool(entry.query)
            if sim < (floor if verify else threshold):
                reasons.append(REASON_SIMILARITY)
                break  # most similar first: the rest are further still
            if verify and rejected is not None and sim < rejected - margin:
                reasons.append(REASON_SHADOWED)
                break
            if query is not None and entry.query and not self._same_long(query, entry.query):
                reasons.append(REASON_LONG_QUERY)
                continue
            if verify:
                assert verifier is not None and query is not None
                why = verifier.check(query, entry.query, sim, base_ns)
                if why is not None:
                    reasons.append(why)
                    if rejected is None:
                        rejected = sim
                    continue
            with self._lock:
                if self._entries.get(entry.id) is not entry or self._expired(entry, self._now()):
                    continue  # invalidated, evicted or expired while it was verified: never served
                self._lru.move_to_end(entry.id)  # recency only: the TTL stays absolute
                self._counts["hits"] += 1
            return LookupResult(_hit(entry, sim, self._expires(entry)), best, tuple(reasons))
        with self._lock:
            self._counts["misses"] += 1
        return LookupResult(None, best, tuple(reasons))

    def _faiss_threads(self) -> None:
        """Set FAISS's OpenMP threads to ``search_threads`` in the calling thread, once per thread.

        OpenMP keeps its thread count per thread: set in the thread that made the cache, it did not reach the
        gateway's request threads, whose searches ran with a team of one OpenMP thread per core; after each search
        the team's idle threads spin for a while, and that spinning cost more CPU than the lookup itself (a lookup
        at a time: 16.5 ms of CPU against 7.6 with one thread, on 2 cores)."""
        n = self._config.search_threads
        if n and getattr(self._omp, "threads", None) != n:
            self._faiss.omp_set_num_threads(n)
            self._omp.threads = n

    def _candidates(self, part: Partition, vector: np.ndarray, now: float) -> list[tuple[float, _Entry]]:
        """The top-k live, unexpired entries, most similar first."""
        self._faiss_threads()
        k = _SEARCH_K
        while True:
            found = part.search(vector, k)
            out = [(sim, self._entries[i]) for sim, i in found if not self._expired(self._entries[i], now)]
            # expired ones are never served; purged in batches by _maintain / purge_expired
            if len(out) >= _SEARCH_K or len(found) < k:
                return out[:_SEARCH_K]
            k *= 4

    def _same_long(self, query: str, stored: str) -> bool:
        """False when either text overflows the model's window and they are not the same text."""
        fits = getattr(self._embedder, "fits", None)  # an embedder that knows no window: all fit
        if fits is None or (fits(query) and fits(stored)):
            return True
        return _normal_text(query) == _normal_text(stored)

    def _add(
        self,
        vectors: np.ndarray,
        answers: list[str],
        queries: list[str],
        tenant: str,
        namespace: str | None,
        doc_hashes: list[Iterable[str]],
        *,
        replicated: tuple[str, float, float | None] | None = None,
    ) -> list[int]:
        """Add entries; ``replicated`` = (key, created_at, expires_at) of one entry from the topic."""
        ns = _names(tenant, namespace)
        for what, values in (("answers", answers), ("queries", queries)):
            for v in values:
                if not isinstance(v, str):  # a stored query of another type would break every later lookup near it
                    raise TypeError(f"{what} must be strings, got {type(v).__name__}")
        docs = [_doc_tuple(d) for d in doc_hashes]
        if not answers:
            return []  # nothing to add: no index either (an empty one would never be removed)
        ttl = self._config.ttl_s
        repl = self.replication
        with self._lock:
            now = self._now()
            keep = [i for i, d in enumerate(docs) if not self._names_invalidated(d, now)]
            if len(keep) < len(answers):
                refused = len(answers) - len(keep)
                self._counts["stores_refused_invalidated"] += refused
                kept_set = set(keep)
                stale = {h for i, d in enumerate(docs) if i not in kept_set for h in d
                         if self._invalidated_at(h, now) is not None}
                log.debug("costline: semantic cache refused %d store(s) of tenant %r built from an invalidated "
                          "document (%s)", refused, tenant, ", ".join(sorted(stale)[:10]))
                if not keep:
                    return [REFUSED_ID] * len(answers)
                out = [REFUSED_ID] * len(answers)
                kept = self._add(vectors[keep], [answers[i] for i in keep], [queries[i] for i in keep], tenant,
                                 namespace, [docs[i] for i in keep], replicated=replicated)
                for i, entry_id in zip(keep, kept):
                    out[i] = entry_id
                return out
            first = self._next_id
            self._next_id += len(answers)
            ids = np.arange(first, first + len(answers), dtype=np.int64)
            part = self._parts.get((tenant, ns))
            if part is None:
                part = self._parts[(tenant, ns)] = Partition(self.dim, self._config)
            self._faiss_threads()
            part.add(ids, vectors)
            for i, entry_id in enumerate(ids.tolist()):
                if replicated is not None:
                    key, created, expires = replicated
                    entry = _Entry(entry_id, tenant, ns, queries[i], answers[i], docs[i], created, expires, key)
                else:
                    entry = _Entry(entry_id, tenant, ns, queries[i], answers[i], docs[i], now,
                                   now + ttl if ttl > 0 else None)
                    if repl is not None:
                        entry.key = repl.new_key(entry_id)
                        repl.publish_store(entry, vectors[i])
                if entry.key:
                    self._by_key[entry.key] = entry_id
                self._entries[entry_id] = entry
                self._per_tenant[tenant] += 1
                self._lru[entry_id] = None
                for d in entry.doc_hashes:
                    self._by_doc.setdefault(d, set()).add(entry_id)
            self._counts["stores"] += len(answers)
            self._enforce_quota(tenant)
            self._maintain(now)
            return ids.tolist()

    def _remember_invalidated(self, doc_hash: str) -> None:
        """Under the lock: remember that ``doc_hash`` was invalidated now (see :meth:`invalidate_by_doc`)."""
        now = self._now()
        self._invalidated_docs.remember(doc_hash, now, now)

    def _invalidated_at(self, doc_hash: str, now: float) -> float | None:
        """When ``doc_hash`` was invalidated, if that is still remembered at ``now``; else None."""
        return self._invalidated_docs.at(doc_hash, now)

    def _remember_tenant_invalidated(self, tenant: str, at: float) -> None:
        """Under the lock: remember that ``tenant`` was invalidated at ``at`` (the latest time of it counts)."""
        self._invalidated_tenants.remember(tenant, at, self._now())

    def _tenant_invalidated_at(self, tenant: str, now: float) -> float | None:
        """When ``tenant`` was last invalidated, if that is still remembered at ``now``; else None. An entry stored
        before it cannot outlive it by more than ``ttl_s``, so it is forgotten then."""
        return self._invalidated_tenants.at(tenant, now)

    def _refuses_replicated(self, tenant: str, created_at: float) -> bool:
        """Under the lock: is a replicated store of ``tenant`` made at ``created_at`` refused (its tenant was
        invalidated at or after it)? Counted in ``stores_refused_tenant``."""
        at = self._tenant_invalidated_at(tenant, self._now()) if self._invalidated_tenants else None
        if at is None or created_at > at:
            return False
        self._counts["stores_refused_tenant"] += 1
        return True

    def _names_invalidated(self, doc_hashes: tuple[str, ...], now: float) -> bool:
        return bool(self._invalidated_docs) and any(self._invalidated_at(d, now) is not None for d in doc_hashes)

    def _enforce_quota(self, tenant: str) -> None:
        """[serving.cache] max_entries_per_tenant: a tenant over its quota loses its own LRU entries."""
        quota = self._config.max_entries_per_tenant
        if not quota:
            return
        held = self._per_tenant[tenant]
        if held <= quota:
            return
        over = held - quota
        victims = []
        for entry_id in self._lru:  # least recently used first
            if self._entries[entry_id].tenant == tenant:
                victims.append(entry_id)
                if len(victims) >= over:
                    break
        self._remove(victims, "evicted")

    def _maintain(self, now: float) -> None:
        """Purge expired entries in batches and evict least recently used ones over the cap."""
        cap = self._config.max_entries
        batch = max(1, int(cap * self._config.evict_fraction))
        expired = []
        for entry in self._entries.values():  # store order: the expired ones come first
            if not self._expired(entry, now):
                break
            expired.append(entry.id)
        if len(self._entries) > cap:
            # ... mostly: a clock set back, or a replica's entry (its store time is the sender's), breaks the order;
            # over the cap every expired entry goes before any live one (once per evict_fraction of the cap)
            expired = [e.id for e in self._entries.values() if self._expired(e, now)]
        if expired and (len(expired) >= batch or len(self._entries) > cap):
            self._remove(expired, "expired")
        over = len(self._entries) - cap
        if over > 0:
            victims = []
            for entry_id in self._lru:
                victims.append(entry_id)
                if len(victims) >= over + batch - 1:
                    break
            self._remove(victims, "evicted")

    def _expires(self, entry: _Entry) -> float | None:
        """When ``entry`` stops being served here (:func:`effective_expiry` with this cache's ``ttl_s``)."""
        return effective_expiry(entry.created_at, entry.expires_at, self._config.ttl_s)

    def _expired(self, entry: _Entry, now: float) -> bool:
        expires = self._expires(entry)
        return expires is not None and now >= expires

    def _remove(self, ids: list[int], reason: str) -> int:
        # an entry that expired here by this cache's own ttl before the expiry it was stored with (another replica's
        # entry, the sender's ttl being longer) is removed here only: no tombstone, the other replicas keep it for as
        # long as their own ttls say (else the shortest ttl of all would hold on every replica)
        now = self._now() if reason == "expired" else 0.0
        self._faiss_threads()  # an HNSW partition's rebuild adds in parallel
        by_part: dict[tuple[str, str], list[int]] = {}
        for entry_id in ids:
            entry = self._entries.get(entry_id)
            if entry is not None:
                by_part.setdefault((entry.tenant, entry.namespace), []).append(entry_id)
        removed = 0
        for key, part_ids in by_part.items():
            part = self._parts[key]
            if len(part_ids) == len(part.live):
                del self._parts[key]  # all of it: drop the index rather than compact it
                removed += len(part_ids)
            else:
                removed += part.remove(part_ids)
            for entry_id in part_ids:
                entry = self._entries.pop(entry_id)
                if entry.key:
                    self._by_key.pop(entry.key, None)
                    if self.replication is not None and not self._applying and (
                            reason != "expired" or entry.expired(now)):
                        self.replication.publish_remove(entry.key)
                self._per_tenant[entry.tenant] -= 1
                if not self._per_tenant[entry.tenant]:
                    del self._per_tenant[entry.tenant]  # a tenant holding nothing leaves no name behind
                self._lru.pop(entry_id, None)
                for d in entry.doc_hashes:
                    owners = self._by_doc.get(d)
                    if owners is not None:
                        owners.discard(entry_id)
                        if not owners:
                            del self._by_doc[d]
        self._counts[reason] += removed
        return removed

    # -- used by cache_store ---------------------------------------------------------------
    def _snapshot(self) -> tuple[dict[str, Any], list[_Entry], list[tuple[tuple[str, str], str, bytes]]]:
        """Under the lock: header fields (with the remembered invalidated doc hashes, ``[hash, when]`` oldest
        first), entries in LRU order, and each partition's bytes."""
        with self._lock:
            now = self._now()
            header = {"dim": self.dim, "next_id": self._next_id, "index": self._config.index,
                      "invalidated_docs": self._invalidated_docs.live(now),
                      "invalidated_tenants": self._invalidated_tenants.live(now)}
            if self.replication is not None:
                header["replication"] = self.replication.snapshot_state()  # the offset this state covers
            entries = [self._entries[i] for i in self._lru]
            parts = [(key, p.kind, p.serialize()) for key, p in self._parts.items()]
            return header, entries, parts

    def _restore(self, next_id: int, entries: list[_Entry], parts: dict[tuple[str, str], Partition],
                 invalidated_docs: Iterable[tuple[str, float]] = (),
                 invalidated_tenants: Iterable[tuple[str, float]] = ()) -> None:
        with self._lock:
            now = self._now()
            self._invalidated_docs.merge(invalidated_docs, now)
            self._invalidated_tenants.merge(invalidated_tenants, now)
            self._parts = parts
            self._entries = {e.id: e for e in sorted(entries, key=lambda e: (e.created_at, e.id))}
            self._lru = OrderedDict((e.id, None) for e in entries)
            self._per_tenant = Counter(e.tenant for e in entries)
            self._by_key = {e.key: e.id for e in entries if e.key}
            self._by_doc = {}
            for e in entries:
                for d in e.doc_hashes:
                    self._by_doc.setdefault(d, set()).add(e.id)
            self._next_id = max(next_id, max(self._entries, default=0) + 1)

    # -- used by cache_replication (a change read from the topic; never published again) ---------
    def _apply_store(self, key: str, vector: np.ndarray, answer: str, query: str, tenant: str, namespace: str,
                     doc_hashes: tuple[str, ...], created_at: float, expires_at: float | None) -> bool:
        """Add one replicated entry unless its key is here already (idempotent) or it is refused (built from an
        invalidated doc hash, or stored at or before its tenant's latest invalidation); True if added."""
        with self._lock:
            if key in self._by_key or self._refuses_replicated(tenant, created_at):
                return False
            self._applying = True
            try:
                added = self._add(self._unit(vector)[None, :], [answer], [query], tenant, namespace, [doc_hashes],
                                  replicated=(key, created_at, expires_at))
            finally:
                self._applying = False
            return added[0] != REFUSED_ID  # one built from a doc invalidated here is refused like a local store

    def _apply_remove(self, key: str) -> int:
        with self._lock:
            entry_id = self._by_key.get(key)
            return 0 if entry_id is None else self._removing([entry_id], "evicted")

    def _apply_invalidate(self, *, doc_hash: str | None = None, tenant: str | None = None,
                          spare: Callable[[str], bool], at: float | None = None) -> int:
        """Remove the entries of ``doc_hash`` or of ``tenant``, except, for a tenant, those whose key ``spare``
        keeps. A doc hash names a version, never valid again: every entry built from it goes, whenever it was
        stored (one of ours stored after the invalidation was published but before we read it is as stale as the
        others; one stored after we read it is refused), and the hash is remembered like a local invalidation.
        A tenant's invalidation time ``at`` (when its record carries one) is remembered: later replicated stores of
        the tenant made at or before it are refused (:meth:`_refuses_replicated`)."""
        with self._lock:
            if tenant is not None and at is not None:
                self._remember_tenant_invalidated(tenant, at)
            if doc_hash is not None:
                self._remember_invalidated(doc_hash)  # every replica refuses a late store of this version
                ids = list(self._by_doc.get(doc_hash, ()))
                spare = _spare_none
            else:
                ids = [i for (t, _), p in self._parts.items() if t == tenant for i in p.live]
            return self._removing([i for i in ids if not spare(self._entries[i].key)], "invalidated")

    def _created_at(self, key: str) -> float | None:
        """Under the lock: the store time of the replicated entry ``key`` (None: not here)."""
        entry_id = self._by_key.get(key)
        return None if entry_id is None else self._entries[entry_id].created_at

    def _removing(self, ids: list[int], reason: str) -> int:
        self._applying = True
        try:
            return self._remove(ids, reason)
        finally:
            self._applying = False


def build_verifier(config: CacheConfig) -> "Verifier":
    """The verification stage of ``config``: the admission model(s) at the target false-hit rate, and
    the pair model (its file checked now, loaded on the first candidate that reaches it)."""
    from costline.serving.cache.admission import AdmissionModel, default_model_path
    from costline.serving.cache.verify import Verifier

    target = config.target_false_hit_rate
    models = {"*": AdmissionModel.load(config.admission_model or default_model_path()).at(target)}
    for ns, path in config.namespace_admission_models.items():
        models[ns] = AdmissionModel.load(path).at(target)
    return Verifier(models, pair_model=build_pair_model(config) if config.verify_pair_model else None,
                    strict_below=config.pair_model_strict_below, strict_threshold=config.pair_model_strict_threshold,
                    time_threshold=config.pair_model_time_threshold)


def build_pair_model(config: CacheConfig) -> "LazyPairModel":
    """The pair model ``config`` names (its file checked now, loaded on first use), on the runtime, threads,
    export folder and precision the config gives."""
    from costline.serving.cache.pair_model import LazyPairModel, default_pair_model_path

    return LazyPairModel(config.pair_model or default_pair_model_path(), threshold=config.pair_model_threshold,
                         runtime=config.embedder, threads=config.embed_threads, cache_dir=config.onnx_cache_dir,
                         int8=config.pair_model_int8)


def _names(tenant: str, namespace: str | None) -> str:
    """The partition name: the namespace, with the request's scope when it has one (cache_key)."""
    if not isinstance(tenant, str) or not tenant:
        raise ValueError(f"tenant must be a non-empty string, got {tenant!r}")
    if namespace is None:
        return DEFAULT_NAMESPACE
    if not isinstance(namespace, str) or not split_namespace(namespace)[0]:
        raise ValueError(f"namespace must be a non-empty string or None, got {namespace!r}")
    return namespace


def _spare_none(key: str) -> bool:
    return False


def _normal_text(text: str) -> str:
    return " ".join(text.lower().split())


def _doc_tuple(doc_hashes: Iterable[str]) -> tuple[str, ...]:
    """``doc_hashes`` as an entry keeps them, or :class:`DocHashesError` past :data:`MAX_DOC_HASHES` (an iterable is
    read no further than one past the bound)."""
    if isinstance(doc_hashes, str):
        raise TypeError("doc_hashes takes a list of hashes; wrap a single hash in a list")
    out = tuple(itertools.islice(doc_hashes, MAX_DOC_HASHES + 1))
    if len(out) > MAX_DOC_HASHES:
        raise DocHashesError(f"a stored answer names more than {MAX_DOC_HASHES} doc hashes (MAX_DOC_HASHES): name "
                             "the set of documents it was built from by one hash of its own, and invalidate that "
                             "hash when any of them changes")
    for d in out:
        if not isinstance(d, str) or not d:
            raise ValueError(f"doc hashes must be non-empty strings, got {d!r}")
    return out


def _record(lk: Any, found: LookupResult) -> None:
    """The lookup span's hit, best similarity and reject reasons (never raises)."""
    if lk is None:
        return
    lk.result(hit=found.hit is not None, similarity=found.similarity)
    if found.reject_reasons:
        try:
            lk.span.set_attribute(COSTLINE_CACHE_REJECT_REASON, ",".join(found.reject_reasons))
        except Exception:  # telemetry never fails a lookup
            pass


def _hit(entry: _Entry, similarity: float, expires_at: float | None) -> CacheHit:
    return CacheHit(
        entry_id=entry.id,
        answer=entry.answer,
        similarity=similarity,
        query=entry.query,
        tenant=entry.tenant,
        namespace=split_namespace(entry.namespace)[0],
        doc_hashes=entry.doc_hashes,
        created_at=entry.created_at,
        expires_at=expires_at,
    )
