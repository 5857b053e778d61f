"""costline.serving: the router, the semantic cache, the model backends and the gateway.

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
    "ModelRegistry": "registry",
    "TierSpec": "registry",
    "Router": "router",
    "RulePolicy": "router",
    "Decision": "router",
    "RoutingPolicy": "router",
    "POLICIES": "router",
    "build_policy": "router",
    "LearnedPolicy": "policy_learned",
    "train_policy": "policy_learned",
    "evaluate": "route_eval",
    "Gateway": "gateway",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_loader(__name__, _LAZY)
