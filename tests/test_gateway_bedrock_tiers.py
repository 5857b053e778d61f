"""A tier served by Claude on Amazon Bedrock ([serving.tiers.<tier>] api = "bedrock"): config, registry, and requests
through the gateway reaching the stand-in's Bedrock Runtime InvokeModel (streamed and not) through the real
``anthropic.AnthropicBedrock`` client, SigV4-signed with the environment's AWS keys or sent a Bedrock API key; the
call spans say ``aws.bedrock`` and are priced by the model's Anthropic id."""

from __future__ import annotations

import dataclasses
import re

import anthropic
import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costline import contract as c
from costline.collectors import Recorder
from costline.config import Config, load_config
from costline.errors import ConfigError
from costline.pricing import PricingTable
from costline.serving.gateway.app import Gateway
from costline.serving.pipeline import Pipeline
from costline.serving.registry import ModelRegistry
from costline.serving.settings import BackendsConfig, GatewayConfig, StandInConfig, TierConfig, TiersConfig
from costline.sim.standin import StandInServer

pytest.importorskip("boto3")  # SigV4 signing (the `bedrock` extra)


@pytest.fixture(autouse=True)
def no_aws_setup_of_this_machine(monkeypatch):
    """Only what a test gives reaches the client: no profile, keys, token or instance role of the host."""
    for name in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
                 "AWS_DEFAULT_REGION", "AWS_BEARER_TOKEN_BEDROCK", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "ANTHROPIC_BEDROCK_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role lookup (169.254.169.254)


#: Claude Haiku 4.5 through a US cross-region inference profile, as Bedrock names it.
BEDROCK_MODEL = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
#: The article's budget-tier prices (USD per million input / output tokens), written here, not read from costline.
IN_PRICE, OUT_PRICE = 0.80, 4.00
SHORT = "How do I reset my password?"  # under 200 characters: the rules route it to budget
AWS_KEYS = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}


def config_with_bedrock_budget(base_url: str | None, **tier) -> Config:
    cfg = Config()
    tiers = TiersConfig(budget=TierConfig(**{"api": "bedrock", "base_url": base_url, "model": BEDROCK_MODEL,
                                             "region": "eu-west-1", **tier}))
    return cfg.replace(serving=dataclasses.replace(cfg.serving, tiers=tiers))


def test_the_bedrock_tier_loads_from_toml(tmp_path):
    f = tmp_path / "costline.toml"
    f.write_text(f'[serving.tiers.budget]\napi = "bedrock"\nmodel = "{BEDROCK_MODEL}"\nregion = "eu-west-1"\n')
    cfg = load_config(f, env={"COSTLINE_SERVING_TIERS_BUDGET_REGION": "us-gov-west-1"})
    assert cfg.serving.tiers.budget == TierConfig("bedrock", None, BEDROCK_MODEL, "", "us-gov-west-1")


@pytest.mark.parametrize("table, key", [
    ('api = "openai"\nregion = "eu-west-1"\n', "[serving.tiers.budget] region"),  # region is Bedrock's
    (f'api = "bedrock"\nmodel = "{BEDROCK_MODEL}"\nregion = "Europe"\n', "[serving.tiers.budget] region"),
    ('api = "bedrock"\nregion = "eu-west-1"\n', "[serving.tiers.budget] model"),  # no Anthropic id default there
])
def test_bad_bedrock_settings_name_the_key(tmp_path, table, key):
    f = tmp_path / "costline.toml"
    f.write_text("[serving.tiers.budget]\n" + table)
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_config(f, env={})


def test_the_student_is_never_a_bedrock_tier(tmp_path):
    f = tmp_path / "costline.toml"
    f.write_text(f'[serving.tiers.student]\napi = "bedrock"\nmodel = "{BEDROCK_MODEL}"\n')
    with pytest.raises(ConfigError, match=re.escape("[serving.tiers.student] api")):
        load_config(f, env={})


def test_the_registry_prices_a_bedrock_model_id_as_its_anthropic_model():
    registry = ModelRegistry.from_config(config_with_bedrock_budget(None))
    spec = registry.tier(c.TIER_BUDGET)
    assert (spec.provider, spec.model, spec.region) == (c.PROVIDER_BEDROCK, BEDROCK_MODEL, "eu-west-1")
    assert registry.tier(c.TIER_MID).provider == c.PROVIDER_ANTHROPIC  # the other tiers are unchanged
    cost = registry.estimate_cost(c.TIER_BUDGET, input_tokens=1000, output_tokens=500)
    assert cost == pytest.approx((1000 * IN_PRICE + 500 * OUT_PRICE) / 1e6)


@pytest.fixture
def standin():
    server = StandInServer(StandInConfig(latency_scale=0.0), port=0)
    server.start()
    yield server
    server.shutdown()


def serve(standin, tmp_path, env, **tier):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    cfg = config_with_bedrock_budget(standin.url, **tier)
    cfg = cfg.replace(serving=dataclasses.replace(cfg.serving, backends=BackendsConfig(
        anthropic_base_url=standin.url, student_base_url=standin.openai_url, max_retries=0)))
    pipeline = Pipeline.from_config(cfg, recorder=Recorder(provider), cache=None, env=env, confidence=None)
    gw = Gateway(pipeline, GatewayConfig(keys_file=tmp_path / "keys.json", rate_limit_per_minute=0), port=0)
    gw.start()
    return gw, pipeline, exporter


@pytest.fixture
def served(standin, tmp_path):
    gw, pipeline, exporter = serve(standin, tmp_path, dict(AWS_KEYS))
    yield gw, exporter
    gw.shutdown()
    pipeline.close()


def call_spans(exporter):
    return [s for s in exporter.get_finished_spans() if s.attributes.get(c.GEN_AI_USAGE_INPUT_TOKENS) is not None]


def sigv4_scope(header: str) -> tuple[str, str, str]:
    """(access key id, region, service) of a SigV4 Authorization header."""
    m = re.fullmatch(r"AWS4-HMAC-SHA256 Credential=([^/]+)/\d{8}/([^/]+)/([^/]+)/aws4_request, "
                     r"SignedHeaders=[^,]+, Signature=[0-9a-f]{64}", header)
    assert m, header
    return m.group(1), m.group(2), m.group(3)


def test_an_anthropic_client_is_answered_by_claude_on_bedrock_signed_with_sigv4(served, standin):
    gw, exporter = served
    app = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0)
    msg = app.messages.create(model="claude-haiku-4-5", max_tokens=200, messages=[{"role": "user", "content": SHORT}])
    assert msg.content[0].text
    (seen,) = standin.log.entries("bedrock")  # one InvokeModel, no Messages API call
    assert seen.model == BEDROCK_MODEL and seen.paid
    assert standin.log.entries("anthropic") == []
    assert sigv4_scope(standin.bedrock.auth_seen[-1][0]) == ("AKIDEXAMPLE", "eu-west-1", "bedrock")
    (span,) = call_spans(exporter)
    a = span.attributes
    assert a[c.GEN_AI_PROVIDER_NAME] == c.PROVIDER_BEDROCK and a[c.COSTLINE_TIER] == c.TIER_BUDGET
    assert a[c.GEN_AI_REQUEST_MODEL] == BEDROCK_MODEL
    assert (a[c.GEN_AI_USAGE_INPUT_TOKENS], a[c.GEN_AI_USAGE_OUTPUT_TOKENS]) == (seen.input_tokens, seen.output_tokens)
    price = PricingTable(Config().pricing).price_call(model=a[c.GEN_AI_REQUEST_MODEL], provider=c.PROVIDER_BEDROCK,
                                                      input_tokens=seen.input_tokens, output_tokens=seen.output_tokens)
    assert price.cost_usd == pytest.approx((seen.input_tokens * IN_PRICE + seen.output_tokens * OUT_PRICE) / 1e6)


def test_a_streamed_request_streams_from_invoke_with_response_stream(served, standin):
    gw, exporter = served
    app = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0)
    with app.messages.stream(model="claude-haiku-4-5", max_tokens=200,
                             messages=[{"role": "user", "content": SHORT}]) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1 and "".join(pieces) == final.content[0].text
    (seen,) = standin.log.entries("bedrock")
    assert final.usage.output_tokens == seen.output_tokens
    (span,) = call_spans(exporter)
    assert span.attributes[c.GEN_AI_PROVIDER_NAME] == c.PROVIDER_BEDROCK
    assert span.attributes[c.GEN_AI_USAGE_OUTPUT_TOKENS] == seen.output_tokens


def test_an_openai_client_streams_from_the_bedrock_tier_with_usage_last(served, standin):
    gw, _ = served
    app = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0)
    chunks = list(app.chat.completions.create(model="claude-haiku-4-5", messages=[{"role": "user", "content": SHORT}],
                                              stream=True, stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    (seen,) = standin.log.entries("bedrock")
    assert text and chunks[-1].usage.completion_tokens == seen.output_tokens


def test_count_tokens_on_a_bedrock_tier_asks_bedrocks_count_tokens(served, standin):
    gw, _ = served
    messages = [{"role": "user", "content": SHORT}]
    via_bedrock = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0).messages.count_tokens(
        model="claude-haiku-4-5", messages=messages, system="Be brief.")
    direct = anthropic.Anthropic(base_url=standin.url, api_key="unused", max_retries=0).messages.count_tokens(
        model="claude-haiku-4-5", messages=messages, system="Be brief.")
    assert via_bedrock.input_tokens == direct.input_tokens > 0
    auth, model = standin.bedrock.auth_seen[-1]
    assert sigv4_scope(auth)[1:] == ("eu-west-1", "bedrock")
    assert model == "anthropic.claude-haiku-4-5-20251001-v1:0"  # CountTokens takes the profile's foundation model
    assert standin.log.entries("bedrock") == []  # counted, nothing generated


def ask_once(standin, tmp_path, env, **tier) -> tuple[str, str]:
    """One request through a gateway started for it: the (Authorization header, model) the stand-in saw."""
    gw, pipeline, _ = serve(standin, tmp_path, env, **tier)
    try:
        anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0).messages.create(
            model="claude-haiku-4-5", max_tokens=50, messages=[{"role": "user", "content": SHORT}])
    finally:
        gw.shutdown()
        pipeline.close()
    return standin.bedrock.auth_seen[-1]


def test_a_bedrock_api_key_is_sent_as_a_bearer_token(standin, tmp_path):
    seen = ask_once(standin, tmp_path, {"TEAM_BEDROCK_KEY": "bedrock-api-key-123"}, api_key_env="TEAM_BEDROCK_KEY")
    assert seen == ("Bearer bedrock-api-key-123", BEDROCK_MODEL)


def test_bedrock_throttling_surfaces_as_the_tiers_failure_and_escalates(served, standin):
    gw, exporter = served
    standin.bedrock.inject_errors(429, 1)
    app = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0)
    raw = app.messages.with_raw_response.create(model="claude-haiku-4-5", max_tokens=200,
                                                messages=[{"role": "user", "content": SHORT}])
    assert raw.parse().content[0].text
    assert raw.headers["x-costline-tier"] == c.TIER_MID  # the throttled budget call escalated to the next tier
    failed = [s for s in exporter.get_finished_spans() if s.attributes.get(c.ERROR_TYPE)]
    assert [s.attributes[c.GEN_AI_PROVIDER_NAME] for s in failed] == [c.PROVIDER_BEDROCK]
    assert failed[0].attributes[c.ERROR_TYPE] == "RateLimitError"


@pytest.mark.parametrize("env, key", [
    ({}, "[serving.tiers.budget] api_key_env"),  # no credentials for a real AWS endpoint
    (AWS_KEYS, None),  # keys in the environment are enough
])
def test_a_remote_bedrock_endpoint_without_credentials_is_refused_at_start(env, key):
    from costline.serving.backends import build_backends

    cfg = config_with_bedrock_budget(None)
    registry = ModelRegistry.from_config(cfg)
    build = lambda: build_backends(registry, cfg.serving.backends, Recorder(TracerProvider()),  # noqa: E731
                                   tiers=[c.TIER_BUDGET], env=env)
    if key is None:
        backend = build()[c.TIER_BUDGET]
        assert str(backend.client.base_url).rstrip("/") == "https://bedrock-runtime.eu-west-1.amazonaws.com"
        assert backend.message_batches is False  # a batch's requests for this tier are asked one by one
        backend.close()
    else:
        with pytest.raises(ConfigError, match=re.escape(key) + ".*AWS_BEARER_TOKEN_BEDROCK"):
            build()


def test_sigv4_chosen_from_the_config_environment_wins_over_a_bearer_token_exported_on_the_host(
        monkeypatch, standin, tmp_path):
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", "a-token-of-another-deployment")  # the SDK would read it itself
    auth, _ = ask_once(standin, tmp_path, dict(AWS_KEYS))
    assert sigv4_scope(auth)[0] == "AKIDEXAMPLE"


def test_a_tier_priced_under_bedrock_is_never_sent_to_the_anthropic_base_url():
    cfg = Config()
    models = tuple(dataclasses.replace(m, model=BEDROCK_MODEL, provider=c.PROVIDER_BEDROCK)
                   if m.tier == c.TIER_BUDGET else m for m in cfg.pricing.models)
    cfg = cfg.replace(pricing=dataclasses.replace(cfg.pricing, models=models), serving=dataclasses.replace(
        cfg.serving, backends=BackendsConfig(anthropic_base_url="https://llm-proxy.corp/anthropic")))
    registry = ModelRegistry.from_config(cfg)
    assert (registry.tier(c.TIER_BUDGET).provider, registry.tier(c.TIER_BUDGET).base_url) == (c.PROVIDER_BEDROCK, None)
    assert registry.tier(c.TIER_MID).base_url == "https://llm-proxy.corp/anthropic"


def test_an_anthropic_tier_must_name_the_model_as_priced_exactly():
    from costline.serving.errors import RoutingError

    cfg = Config()
    cfg = cfg.replace(serving=dataclasses.replace(cfg.serving, tiers=TiersConfig(mid=TierConfig(
        api="anthropic", model="us.anthropic.claude-sonnet-4-6"))))  # Bedrock's spelling, sent to Anthropic's API
    with pytest.raises(RoutingError, match=re.escape("[serving.tiers.mid] model")):
        ModelRegistry.from_config(cfg)


def test_an_apps_own_bedrock_client_is_recorded_as_aws_bedrock(standin):
    from costline.collectors import instrument_anthropic

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    client = anthropic.AnthropicBedrock(base_url=standin.url, api_key="k", aws_region="us-west-2", max_retries=0)
    instrument_anthropic(client, Recorder(provider))
    client.messages.create(model=BEDROCK_MODEL, max_tokens=50, messages=[{"role": "user", "content": SHORT}])
    (span,) = call_spans(exporter)
    assert span.attributes[c.GEN_AI_PROVIDER_NAME] == c.PROVIDER_BEDROCK
