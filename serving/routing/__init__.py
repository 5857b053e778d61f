"""costline.serving.routing: which tier answers a request, and how a better policy gets in.

* :mod:`~costline.serving.routing.router` — :class:`Router` and the rule policy (``[serving.routes]``);
* :mod:`~costline.serving.routing.learned` — the learned policy (a classifier over query embeddings);
* :mod:`~costline.serving.routing.evaluation` — offline eval on labelled rows (``costline route eval``);
* :mod:`~costline.serving.routing.labels` — labels from the lake (shadow runs, judged answers);
* :mod:`~costline.serving.routing.gate` — the candidate-vs-incumbent gate on those labels;
* :mod:`~costline.serving.routing.promote` — promotion, rollback and the policy manifest;
* :mod:`~costline.serving.routing.loop` — the nightly retrain loop (gate, then promote);
* :mod:`~costline.serving.routing.cli` — ``costline route``; ``data/`` — the shipped labelled rows.

Names are imported lazily, so ``import costline.serving.routing`` stays light.
"""

from __future__ import annotations

from costline.lazy import lazy_loader

#: public name -> the module that defines it
_LAZY: dict[str, str] = {
    "Router": "router",
    "RulePolicy": "router",
    "Decision": "router",
    "RoutingPolicy": "router",
    "POLICIES": "router",
    "build_policy": "router",
    "LearnedPolicy": "learned",
    "train_policy": "learned",
    "evaluate": "evaluation",
    "compare": "gate",
    "labels_from_lake": "labels",
    "promote": "promote",
    "rollback": "promote",
    "retrain_candidate": "loop",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_loader(__name__, _LAZY)
