"""costline.serving: the router, the semantic cache, the model backends and the gateway.

Names are imported lazily on first use, so ``import costline.serving`` stays light
(no SDK clients, no numpy, no torch)::

    from costline.serving import Pipeline, StandInServer
"""

from __future__ import annotations

import importlib
from typing import Any

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
    "StandInServer": "standin",
    "reference_validator": "standin_model",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'costline.serving' has no attribute {name!r}")
    return getattr(importlib.import_module(f"costline.serving.{module}"), name)
