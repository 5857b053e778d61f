"""costline.serving: the router, the semantic cache, the model backends and the gateway.

Layout (one folder per concern; this package's own modules are the path they share)::

    pipeline.py      Pipeline: route -> cache lookup -> backend call -> escalation -> cache store
    backends.py      the model tiers' SDK clients (Anthropic, OpenAI-compatible/vLLM)
    registry.py      the tiers and their models ([serving.tiers])
    confidence.py    the confidence marker the pipeline escalates on
    structured.py    structured outputs: each API's format read into one, every answer checked against it
    translate.py     tools and images between the Messages and Chat Completions shapes
    embedding*.py    the MiniLM embedder (torch, ONNX), shared by the cache and the learned router
    settings.py      the [serving] config section; errors.py: ServingError and its children
    cache/           the semantic cache (FAISS index, key scoping, verification, admission model,
                     threshold tuning, persistence, replication, `costline cache`)
    routing/         the router and its policies (rules, learned), offline eval, the candidate gate,
                     lake labels, the retrain loop, promotion (`costline route`)
    gateway/         the HTTP front: the Anthropic Messages and OpenAI Chat Completions APIs on
                     ASGI, API keys and rate limits (`costline serve`, `costline keys`)

Names are imported lazily on first use, so ``import costline.serving`` stays light
(no SDK clients, no numpy, no torch)::

    from costline.serving import Pipeline, Router

The local stand-ins and simulated traffic live in :mod:`costline.sim`, never imported from here.
"""

from __future__ import annotations

from costline.lazy import lazy_loader

#: public name -> the module that defines it
_LAZY: dict[str, str] = {
    "Pipeline": "pipeline",
    "Answer": "pipeline",
    "Attempt": "pipeline",
    "AnswerCache": "pipeline",
    "Validator": "pipeline",
    "Prompt": "backends",
    "Reply": "backends",
    "Backend": "backends",
    "build_backends": "backends",
    "OutputFormat": "structured",
    "ModelRegistry": "registry",
    "TierSpec": "registry",
    "Router": "routing.router",
    "RulePolicy": "routing.router",
    "Decision": "routing.router",
    "RoutingPolicy": "routing.router",
    "POLICIES": "routing.router",
    "build_policy": "routing.router",
    "LearnedPolicy": "routing.learned",
    "train_policy": "routing.learned",
    "evaluate": "routing.evaluation",
    "Gateway": "gateway.app",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_loader(__name__, _LAZY)
