"""The router on the real world's failures: a router failure falls back to a tier (never a 500), a tier the
registry lacks is replaced by the nearest one above it, and a rules config naming a tier no model serves is
refused when the pipeline is built, not on the first request that reaches it.

Real parts: a Gateway → Pipeline → the local stand-ins, driven with the ``anthropic`` SDK; spans in memory.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import anthropic
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costline.collectors import Recorder
from costline.config import Config
from costline.serving.errors import RoutingError
from costline.serving.gateway.app import Gateway
from costline.serving.pipeline import Pipeline
from costline.serving.registry import ModelRegistry
from costline.serving.routing.learned import HashingFeaturizer, LearnedPolicy, read_rows, train_policy
from costline.serving.routing.router import Router, RulePolicy
from costline.serving.settings import BackendsConfig, GatewayConfig

DATA = Path(__file__).parent.parent / "serving" / "routing" / "data"
LONG_QUESTION = ("Walk me through why our quarterly revenue recognition differs between the two subsidiaries, "
                 "given that one invoices annually in advance and the other monthly in arrears, and what an "
                 "auditor would ask about it.")



def _config(standin, *, drop_tiers: tuple[str, ...] = ()) -> Config:
    cfg = Config()
    serving = dataclasses.replace(cfg.serving, backends=BackendsConfig(
        anthropic_base_url=standin.url, student_base_url=standin.openai_url, max_retries=0))
    pricing = dataclasses.replace(cfg.pricing, models=tuple(m for m in cfg.pricing.models if m.tier not in drop_tiers))
    return cfg.replace(serving=serving, pricing=pricing)


@pytest.fixture(scope="module")
def hashing_policy() -> LearnedPolicy:
    return train_policy(read_rows(DATA / "route_train.jsonl"), featurizer_name="hashing", min_adequacy=0.9)


def test_a_policy_that_fails_on_a_request_falls_back_to_the_top_tier_instead_of_a_500(standin, hashing_policy,
                                                                                      tmp_path: Path) -> None:
    # The policy was trained on 384-dim vectors; the featurizer it meets in service now writes 512
    # (the cache's embedding model was changed under a minilm policy): every route raises ValueError.
    drifted = LearnedPolicy(coef=hashing_policy.coef, intercept=hashing_policy.intercept,
                            classes=hashing_policy.classes, task_types=hashing_policy.task_types,
                            featurizer_name="hashing", featurizer=HashingFeaturizer(dim=512), min_adequacy=0.9)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    pipeline = Pipeline.from_config(_config(standin), recorder=Recorder(provider), policy=drifted, env={})
    gw = Gateway(pipeline, GatewayConfig(keys_file=tmp_path / "keys.json", rate_limit_per_minute=0), port=0)
    gw.start()
    try:
        client = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0)
        raw = client.messages.with_raw_response.create(
            model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": LONG_QUESTION}])
        message = raw.parse()
    finally:
        gw.shutdown()
        pipeline.close()
    assert raw.http_response.status_code == 200
    assert raw.headers["x-costline-routed-tier"] == "frontier"  # the quality-safe tier: the top of the registry
    assert message.model == "claude-fable-5"
    requests = [s for s in exporter.get_finished_spans() if s.name == "costline.request"]
    assert [s.attributes.get("costline.routed_tier") for s in requests] == ["frontier"]
    # the span says it was a fallback, and why: in the lake and a trace it is not a real frontier decision
    assert requests[0].attributes["costline.route.reason"].startswith(
        "fallback to frontier: the routing policy failed (ValueError")


def test_a_fallback_decision_says_why(hashing_policy) -> None:
    drifted = LearnedPolicy(coef=hashing_policy.coef, intercept=hashing_policy.intercept,
                            classes=hashing_policy.classes, task_types=hashing_policy.task_types,
                            featurizer_name="hashing", featurizer=HashingFeaturizer(dim=512), min_adequacy=0.9)
    decision = Router(drifted, ModelRegistry.from_config(Config())).route(LONG_QUESTION, "faq")
    assert decision.tier == "frontier"
    assert decision.confidence == 0.0
    assert "ValueError" in decision.reason and "fallback" in decision.reason


def test_a_tier_the_registry_lacks_becomes_the_nearest_tier_above_it(hashing_policy) -> None:
    # Opus was taken out of [[pricing.models]] after the learned policy was trained with upper as a class.
    cfg = Config()
    registry = ModelRegistry.from_config(cfg.replace(pricing=dataclasses.replace(
        cfg.pricing, models=tuple(m for m in cfg.pricing.models if m.tier != "upper"))))
    assert "upper" not in registry
    rows = read_rows(DATA / "route_eval_judged.jsonl")
    to_upper = [r for r in rows if hashing_policy.route(r.query, r.task_type).tier == "upper"]
    assert to_upper, "the sample has rows the policy sends to upper"
    row = to_upper[0]
    decision = Router(hashing_policy, registry).route(row.query, row.task_type)
    assert decision.tier == "frontier"
    assert "upper" in decision.reason


def test_a_rules_default_tier_that_no_model_serves_is_refused_when_the_pipeline_is_built(standin) -> None:
    # [[pricing.models]] lists no frontier model, yet the rules send every long request there: before,
    # each such request was a 500 ("costline gateway failure: RoutingError"); now the start says what to fix.
    cfg = _config(standin, drop_tiers=("frontier",))
    with pytest.raises(RoutingError, match=r"default_tier = 'frontier'.*\[\[pricing.models\]\]"):
        Pipeline.from_config(cfg, recorder=Recorder(TracerProvider()), env={})
    # the same config with a default tier that exists serves
    rules = dataclasses.replace(cfg.serving.router.rules, default_tier="upper")
    ok = cfg.replace(serving=dataclasses.replace(cfg.serving, router=dataclasses.replace(cfg.serving.router,
                                                                                          rules=rules)))
    pipeline = Pipeline.from_config(ok, recorder=Recorder(TracerProvider()), env={})
    try:
        assert pipeline.router.route(LONG_QUESTION, "creative").tier == "upper"
    finally:
        pipeline.close()


def test_rules_still_route_exactly_as_before_when_every_tier_exists() -> None:
    router = Router(RulePolicy(), ModelRegistry.from_config(Config()))
    assert router.route("How do I reset my password?", "faq").tier == "budget"
    assert router.route(LONG_QUESTION, "creative").tier == "frontier"
    assert router.route(LONG_QUESTION, "coding").tier == "mid"
