"""costline.serving.cache: the semantic cache (FAISS + MiniLM) and its tools.

* :mod:`~costline.serving.cache.semantic` — :class:`SemanticCache`, lookups and stores per namespace;
* :mod:`~costline.serving.cache.index` — the FAISS partitions (exact, HNSW);
* :mod:`~costline.serving.cache.key` — what scopes an entry (system prompt, earlier turns, max_tokens);
* :mod:`~costline.serving.cache.verify` — the guards every candidate hit passes;
* :mod:`~costline.serving.cache.admission` — the admission model trained on labelled pairs;
* :mod:`~costline.serving.cache.pair_model` — the pair model, a small cross-encoder with the last word (on by default);
* :mod:`~costline.serving.cache.tune` — the cosine-threshold sweep;
* :mod:`~costline.serving.cache.store` — saving and loading a cache (crash-safe);
* :mod:`~costline.serving.cache.replication` — replicas sharing one cache over Kafka;
* :mod:`~costline.serving.cache.cli` — ``costline cache``; ``data/`` — the shipped pair sets and model.

Names are imported lazily, so ``import costline.serving.cache`` pulls in neither numpy nor FAISS.
"""

from __future__ import annotations

from costline.lazy import lazy_loader

#: public name -> the module that defines it
_LAZY: dict[str, str] = {
    "SemanticCache": "semantic",
    "CacheHit": "semantic",
    "CacheStats": "semantic",
    "LookupResult": "semantic",
    "Verifier": "verify",
    "AdmissionModel": "admission",
    "train_admission": "admission",
    "PairModel": "pair_model",
    "train_pair_model": "pair_model",
    "tune_thresholds": "tune",
    "save_cache": "store",
    "load_cache": "store",
    "CacheReplicator": "replication",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_loader(__name__, _LAZY)
