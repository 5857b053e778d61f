"""The student's gating per (task type, subtype): the router sends a request to the student only when
its task type is gated as a whole or its subtype is gated under that task type; promote writes the
subtypes a run passed, not the whole task type."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from costline.config import load_config
from costline.errors import ConfigError
from costline.serving.routing.router import Decision, Router, RulePolicy, StudentGate, build_policy
from costline.serving.settings import RouteRulesConfig

RULES = RouteRulesConfig(student_task_types=("faq",),
                         student_subtypes={"classification": ("sentiment",), "extraction": ("(none)",)})
SHORT = "is this ok"  # under short_query_chars: the rule policy's budget tier when not gated

# (task type, subtype, gated?) - hand-written from the rule: whole task type, or subtype under its task type
CASES = [
    ("classification", "sentiment", True),
    ("classification", "topic", False),       # a subtype that did not pass: not the whole task type
    ("classification", None, False),
    ("extraction", None, True),               # "(none)" gates the requests without a subtype
    ("extraction", "dates", False),
    ("faq", "returns", True),                 # a task type gated as a whole takes every subtype
    ("faq", None, True),
    ("coding", "sentiment", False),           # a subtype is gated only under its own task type
    (None, "sentiment", False),
    ("", "sentiment", False),
]


@pytest.mark.parametrize("task_type,subtype,gated", CASES)
def test_rule_policy_gates_the_student_per_task_type_and_subtype(task_type, subtype, gated):
    d = RulePolicy(RULES).route(SHORT, task_type, subtype=subtype)
    assert (d.tier == "student") is gated
    if not gated:
        assert d.tier == "budget"  # the rest of the heuristic is unchanged


class Frontier:
    """A policy that knows nothing of subtypes (no keyword), as a learned policy or a plug-in."""

    def route(self, query, task_type):
        return Decision("frontier", 0.9, "inner")


@pytest.mark.parametrize("task_type,subtype,gated", CASES)
def test_student_gate_in_front_of_another_policy(task_type, subtype, gated):
    gate = StudentGate(Frontier(), RULES.student_task_types, RULES.student_subtypes)
    assert gate.route(SHORT, task_type, subtype=subtype).tier == ("student" if gated else "frontier")


@pytest.mark.parametrize("task_type,subtype,gated", CASES)
def test_router_hands_the_subtype_to_the_policy(task_type, subtype, gated):
    registry = type("Registry", (), {"__contains__": lambda self, t: True, "names": ()})()
    assert (Router(RulePolicy(RULES), registry).route(SHORT, task_type, subtype=subtype).tier == "student") is gated
    # a policy without the keyword still routes (the subtype is dropped for it)
    assert Router(Frontier(), registry).route(SHORT, task_type, subtype=subtype).tier == "frontier"


def test_subtype_gating_from_the_config_file(tmp_path):
    toml = tmp_path / "costline.toml"
    toml.write_text('[serving.router.rules.student_subtypes]\nclassification = ["sentiment"]\n')
    cfg = load_config(toml)
    assert cfg.serving.router.rules.student_subtypes == {"classification": ("sentiment",)}
    policy = build_policy(cfg.serving)
    assert policy.route(SHORT, "classification", subtype="sentiment").tier == "student"
    assert policy.route(SHORT, "classification", subtype="topic").tier == "budget"
    toml.write_text('[serving.router.rules.student_subtypes]\nclassification = "sentiment"\n')
    with pytest.raises(ConfigError, match=r"student_subtypes.classification"):
        load_config(toml)


def _evaluated_run(root: Path, run_id: str, verdicts: dict[tuple[str, str], bool]):
    from costline.distill.runs import DistillRun, write_json

    run = DistillRun(root, run_id)
    (run.dataset).mkdir(parents=True)
    write_json(run.path("eval.json"), {"subtypes": [
        {"subtype": sub, "task_type": tt, "n": 30, "student_score": 1.0 if ok else 0.5, "teacher_score": 1.0,
         "gap": 0.0 if ok else 0.5, "gap_ci_low": 0.0, "gap_ci_high": 0.0 if ok else 0.6, "threshold": 0.05,
         "passed": ok, "reason": "ok" if ok else "gap 0.500 > 0.050"} for (tt, sub), ok in verdicts.items()]})
    run.adapter.mkdir(parents=True)
    write_json(run.adapter / "training_manifest.json", {"base_model": "/models/base"})
    return run


def test_promote_gates_only_the_subtypes_the_run_passed(tmp_path):
    from costline.distill.errors import GateFailedError
    from costline.distill.promote import promote_run

    toml = tmp_path / "costline.toml"
    toml.write_text("# ops\n[serving.router.rules]\nstudent_task_types = [\"faq\"]\n"
                    "[serving.router.rules.student_subtypes]\nclassification = [\"intent\"]\n")
    cfg = load_config(toml)
    failed = _evaluated_run(tmp_path / "runs", "failed", {("classification", "sentiment"): True,
                                                         ("classification", "topic"): False})
    with pytest.raises(GateFailedError, match="topic"):
        promote_run(cfg, failed, toml)
    assert load_config(toml).serving.router.rules.student_subtypes == {"classification": ("intent",)}

    # a run distilled for the sentiment subtype only (export --subtype sentiment), and one extraction subtype
    run = _evaluated_run(tmp_path / "runs", "sentiment-only", {("classification", "sentiment"): True,
                                                              ("extraction", "dates"): True})
    p = promote_run(cfg, run, toml)
    # exactly the run's passed subtypes: "intent" (an earlier run's) is dropped, the new adapter never saw it
    assert p.subtypes == {"classification": ["sentiment"], "extraction": ["dates"]}
    assert p.dropped == {"classification": ["intent"]} and p.whole_task_types == ["faq"]
    after = load_config(toml)
    rules = after.serving.router.rules
    assert rules.student_task_types == ("faq",)  # a whole task type stays the operator's decision
    assert rules.student_subtypes == {"classification": ("sentiment",), "extraction": ("dates",)}
    assert toml.read_text().startswith("# ops")
    policy = build_policy(after.serving)
    routed = {(t, s): policy.route(SHORT, t, subtype=s).tier for t, s in [
        ("classification", "sentiment"), ("classification", "intent"), ("classification", "topic"),
        ("extraction", "dates"), ("extraction", "names")]}
    assert routed == {("classification", "sentiment"): "student", ("classification", "intent"): "budget",
                      ("classification", "topic"): "budget", ("extraction", "dates"): "student",
                      ("extraction", "names"): "budget"}
    promoted = json.loads(run.path("promoted.json").read_text())
    assert promoted["subtypes"] == {"classification": ["sentiment"], "extraction": ["dates"]}
    assert promoted["dropped"] == {"classification": ["intent"]}


def test_the_serving_pipeline_routes_by_the_requests_subtype():
    import dataclasses

    from opentelemetry.sdk.trace import TracerProvider

    from costline.collectors import Recorder
    from costline.config import Config
    from costline.serving.pipeline import Pipeline
    from costline.serving.settings import BackendsConfig, RouterConfig, StandInConfig
    from costline.sim.standin import StandInServer

    with StandInServer(StandInConfig(latency_scale=0.0), port=0) as standin:
        cfg = Config()
        serving = dataclasses.replace(
            cfg.serving, backends=BackendsConfig(anthropic_base_url=standin.url, student_base_url=standin.openai_url,
                                                 max_retries=0),
            router=RouterConfig(rules=RouteRulesConfig(student_subtypes={"classification": ("intent",)})))
        p = Pipeline.from_config(cfg.replace(serving=serving), recorder=Recorder(TracerProvider()), env={})
        try:
            q = "Classify the intent of: 'where is my parcel?'"
            gated = p.answer(q, task_type="classification", subtype="intent", tenant="acme")
            other = p.answer(q, task_type="classification", subtype="topic", tenant="acme")
            bare = p.answer(q, task_type="classification", tenant="acme")
        finally:
            p.close()
    assert (gated.routed_tier, gated.tier) == ("student", "student")
    assert other.routed_tier == "budget" and bare.routed_tier == "budget"
