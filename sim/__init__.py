"""costline.sim — simulation, kept apart from the product: worlds, traffic, stand-ins and the demo.

Nothing under the product packages (``costline``'s core, collectors, processors, serving, jobs,
alerts, dashboards, distill) imports this package at module level; only the commands that run a
simulation (``costline demo``, ``costline standin``, ``costline serve --standin``,
``costline alerts slack-standin``) and ``costline route eval``'s oracle check import it, inside the
command (tests/test_sim_boundary.py checks that).

* :mod:`~costline.sim.traffic` — the simulated world's requests over days (:func:`serving_traffic`)
  and the same world's outcome-decided plans (:func:`sample_traffic`), routed by the real
  :class:`~costline.serving.routing.router.RulePolicy`;
* :mod:`~costline.sim.standin_model` — the synthetic model world: tokens, difficulty, answers;
* :mod:`~costline.sim.standin` — :class:`StandInServer`, local Anthropic / vLLM-style APIs;
* :mod:`~costline.sim.slack_standin` — :class:`SlackStandIn`, a local Slack Web API and webhook;
* :mod:`~costline.sim.synth` — contract-following OTLP traces (processor tests, benchmarks);
* :mod:`~costline.sim.samples` — the labelled routing rows under ``serving/routing/data``;
* :mod:`~costline.sim.demo_app`, :mod:`~costline.sim.demo` — ``costline demo`` on top of it all,
  with :mod:`~costline.sim.nightly_demo` and :mod:`~costline.sim.distill_demo` for its later steps.

Names are imported lazily on first use.
"""

from __future__ import annotations

from costline.lazy import lazy_loader

#: public name -> the module that defines it
_LAZY: dict[str, str] = {
    "TrafficSpec": "traffic",
    "RequestPlan": "traffic",
    "ServingRequest": "traffic",
    "sample_traffic": "traffic",
    "serving_traffic": "traffic",
    "StandInServer": "standin",
    "reference_validator": "standin_model",
    "SlackStandIn": "slack_standin",
    "synthetic_traffic": "synth",
    "SimClock": "demo_app",
    "DemoApp": "demo_app",
    "run_demo": "demo",
    "run_nightly_demo": "nightly_demo",
    "run_distill_demo": "distill_demo",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_loader(__name__, _LAZY)
