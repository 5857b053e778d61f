"""A tier served by an OpenAI-compatible server ([serving.tiers.<tier>] api = "openai"): config,
registry, and requests through the gateway reaching the stand-in's chat-completions API through
the real ``openai`` SDK (streamed and not), usage and cost recorded as for an Anthropic tier."""

from __future__ import annotations

import dataclasses

import anthropic
import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costline import contract as c
from costline.collectors import Recorder
from costline.config import Config, ModelPrice, load_config
from costline.errors import ConfigError
from costline.serving.errors import RoutingError
from costline.serving.gateway.app import Gateway
from costline.serving.pipeline import Pipeline
from costline.serving.registry import ModelRegistry
from costline.serving.settings import BackendsConfig, GatewayConfig, StandInConfig, TierConfig, TiersConfig
# The stand-in serves both APIs; it is moving to a `sim` area (the lead fixes this import at merge).
from costline.sim.standin import StandInServer

#: An OpenAI-compatible model for the budget tier, priced by hand (USD per million tokens).
OPENAI_MODEL = "gpt-4o-mini"
IN_PRICE, OUT_PRICE = 0.15, 0.60
SHORT = "How do I reset my password?"  # under 200 characters: the rules route it to budget


def config_with_openai_budget(base_url: str, **tier) -> Config:
    cfg = Config()
    pricing = dataclasses.replace(cfg.pricing, models=cfg.pricing.models + (
        ModelPrice(OPENAI_MODEL, c.TIER_BUDGET, provider=c.PROVIDER_OPENAI, input_per_mtok=IN_PRICE,
                   output_per_mtok=OUT_PRICE),))
    tiers = TiersConfig(budget=TierConfig(**{"api": "openai", "base_url": base_url, "model": OPENAI_MODEL, **tier}))
    return cfg.replace(pricing=pricing, serving=dataclasses.replace(cfg.serving, tiers=tiers))


def test_the_tiers_table_loads_from_toml_and_env(tmp_path):
    f = tmp_path / "costline.toml"
    f.write_text('[serving.tiers.budget]\napi = "openai"\nbase_url = "http://127.0.0.1:9000/v1"\n'
                 'model = "gpt-4o-mini"\napi_key_env = "MY_KEY"\n')
    cfg = load_config(f, env={"COSTLINE_SERVING_TIERS_MID_API": "openai"})
    assert cfg.serving.tiers.budget == TierConfig("openai", "http://127.0.0.1:9000/v1", "gpt-4o-mini", "MY_KEY")
    assert cfg.serving.tiers.mid.api == "openai"  # env works per key
    assert not cfg.serving.tiers.frontier.configured


@pytest.mark.parametrize("table, key", [
    ('[serving.tiers.budget]\napi = "grpc"\n', "[serving.tiers.budget] api"),
    ('[serving.tiers.mid]\nbase_url = "localhost:9000"\n', "[serving.tiers.mid] base_url"),
])
def test_bad_tier_settings_name_the_key(tmp_path, table, key):
    f = tmp_path / "costline.toml"
    f.write_text(table)
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_config(f, env={})


def test_the_registry_serves_the_tier_through_the_openai_api_and_prices_it():
    registry = ModelRegistry.from_config(config_with_openai_budget("http://127.0.0.1:9000/v1", api_key_env="K"))
    spec = registry.tier(c.TIER_BUDGET)
    assert (spec.provider, spec.model, spec.base_url, spec.key_env) == (
        c.PROVIDER_OPENAI, OPENAI_MODEL, "http://127.0.0.1:9000/v1", "K")
    assert registry.tier(c.TIER_MID).provider == c.PROVIDER_ANTHROPIC  # the other tiers are unchanged
    assert registry.next_tier(c.TIER_BUDGET) == c.TIER_MID  # same ladder
    cost = registry.estimate_cost(c.TIER_BUDGET, input_tokens=1000, output_tokens=500)
    assert cost == pytest.approx((1000 * IN_PRICE + 500 * OUT_PRICE) / 1e6)


def test_an_unpriced_model_is_refused_naming_the_table():
    cfg = Config()
    cfg = cfg.replace(serving=dataclasses.replace(cfg.serving, tiers=TiersConfig(
        mid=TierConfig(api="openai", model="some-unpriced-model"))))
    with pytest.raises(RoutingError, match=r"\[serving.tiers.mid\] model = 'some-unpriced-model'.*pricing.models"):
        ModelRegistry.from_config(cfg)


@pytest.fixture
def standin():
    # The stand-in's chat-completions endpoint answers the model names it is told to serve.
    server = StandInServer(StandInConfig(latency_scale=0.0, student_models=(
        "costline-student", "costline-student-lora", OPENAI_MODEL)), port=0)
    server.start()
    yield server
    server.shutdown()


@pytest.fixture
def served(standin, tmp_path):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    cfg = config_with_openai_budget(standin.openai_url)
    cfg = cfg.replace(serving=dataclasses.replace(cfg.serving, backends=BackendsConfig(
        anthropic_base_url=standin.url, student_base_url=standin.openai_url, max_retries=0)))
    pipeline = Pipeline.from_config(cfg, recorder=Recorder(provider), cache=None, env={}, confidence=None)
    gw = Gateway(pipeline, GatewayConfig(keys_file=tmp_path / "keys.json"), port=0)
    gw.start()
    yield gw, pipeline, exporter
    gw.shutdown()
    pipeline.close()


def call_spans(exporter):
    return [s for s in exporter.get_finished_spans() if s.attributes.get(c.GEN_AI_USAGE_INPUT_TOKENS) is not None]


def test_an_anthropic_client_is_answered_by_the_openai_compatible_tier(served, standin):
    gw, pipeline, exporter = served
    app = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0)
    msg = app.messages.create(model="claude-haiku-4-5", max_tokens=200, messages=[{"role": "user", "content": SHORT}])
    assert msg.content[0].text
    (seen,) = standin.log.entries("openai")  # the tier's server got one chat completion, through the openai SDK
    assert seen.model == OPENAI_MODEL and seen.paid
    assert standin.log.entries("anthropic") == []
    # usage: what the OpenAI-compatible server reported, in the client's answer and in the call span
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (seen.input_tokens, seen.output_tokens)
    (span,) = call_spans(exporter)
    assert span.attributes[c.GEN_AI_PROVIDER_NAME] == c.PROVIDER_OPENAI
    assert span.attributes[c.GEN_AI_REQUEST_MODEL] == OPENAI_MODEL
    assert span.attributes[c.COSTLINE_TIER] == c.TIER_BUDGET
    assert (span.attributes[c.GEN_AI_USAGE_INPUT_TOKENS], span.attributes[c.GEN_AI_USAGE_OUTPUT_TOKENS]) == (
        seen.input_tokens, seen.output_tokens)
    # and it is priced from [[pricing.models]] like an Anthropic call
    assert pipeline.registry.estimate_cost(c.TIER_BUDGET, input_tokens=seen.input_tokens,
                                           output_tokens=seen.output_tokens) == pytest.approx(
        (seen.input_tokens * IN_PRICE + seen.output_tokens * OUT_PRICE) / 1e6)


def test_a_streamed_openai_client_is_streamed_from_the_openai_compatible_tier(served, standin):
    gw, _, exporter = served
    app = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0)
    chunks = list(app.chat.completions.create(model="anything", max_completion_tokens=200, stream=True,
                                              stream_options={"include_usage": True},
                                              messages=[{"role": "user", "content": SHORT}]))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    (seen,) = standin.log.entries("openai")
    assert seen.model == OPENAI_MODEL and text
    usage = chunks[-1].usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (seen.input_tokens, seen.output_tokens)
    (span,) = call_spans(exporter)
    assert span.attributes[c.GEN_AI_PROVIDER_NAME] == c.PROVIDER_OPENAI
    assert span.attributes[c.GEN_AI_USAGE_OUTPUT_TOKENS] == seen.output_tokens
