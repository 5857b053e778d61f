"""A tier served by Claude on Google Vertex AI ([serving.tiers.<tier>] api = "vertex"): config, registry, and requests
through the gateway reaching the stand-in's Vertex AI rawPredict / streamRawPredict through the real
``anthropic.AnthropicVertex`` client with an access token; the call spans say ``gcp.vertex_ai`` and are priced by
the model's Anthropic id."""

from __future__ import annotations

import dataclasses
import re
import time
from concurrent.futures import ThreadPoolExecutor

import anthropic
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costline import contract as c
from costline.collectors import Recorder
from costline.config import Config, load_config
from costline.errors import ConfigError
from costline.serving.gateway.app import Gateway
from costline.serving.pipeline import Pipeline
from costline.serving.registry import ModelRegistry
from costline.serving.settings import BackendsConfig, GatewayConfig, StandInConfig, TierConfig, TiersConfig
from costline.sim.standin import StandInServer

#: Claude Sonnet 4.6 as Vertex AI names it (a version after "@").
VERTEX_MODEL = "claude-sonnet-4-6@20260115"
#: The article's mid-tier prices (USD per million input / output tokens), written here, not read from costline.
IN_PRICE, OUT_PRICE = 3.00, 15.00
LONG = "Explain which of the migration plans below keeps the invoices consistent. " * 4  # "explain": routed to mid


def config_with_vertex_mid(base_url: str | None, **tier) -> Config:
    cfg = Config()
    tiers = TiersConfig(mid=TierConfig(**{"api": "vertex", "base_url": base_url, "model": VERTEX_MODEL,
                                          "region": "europe-west1", "project": "acme-prod", **tier}))
    return cfg.replace(serving=dataclasses.replace(cfg.serving, tiers=tiers))


def test_the_vertex_tier_loads_from_toml(tmp_path):
    f = tmp_path / "costline.toml"
    f.write_text(f'[serving.tiers.mid]\napi = "vertex"\nmodel = "{VERTEX_MODEL}"\nregion = "global"\n'
                 'project = "acme-prod"\n')
    cfg = load_config(f, env={})
    assert cfg.serving.tiers.mid == TierConfig("vertex", None, VERTEX_MODEL, "", "global", "acme-prod")


@pytest.mark.parametrize("table, key", [
    ('api = "bedrock"\nmodel = "anthropic.claude-sonnet-4-6"\nproject = "p"\n', "[serving.tiers.mid] project"),
    ('project = "acme-prod"\n', "[serving.tiers.mid] project"),  # the Anthropic API has no project
    (f'api = "vertex"\nmodel = "{VERTEX_MODEL}"\nregion = "us-east-1"\n', "[serving.tiers.mid] region"),  # AWS's
    ('api = "vertex"\nregion = "us-east5"\n', "[serving.tiers.mid] model"),
])
def test_bad_vertex_settings_name_the_key(tmp_path, table, key):
    f = tmp_path / "costline.toml"
    f.write_text("[serving.tiers.mid]\n" + table)
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_config(f, env={})


def test_the_registry_prices_a_vertex_model_id_as_its_anthropic_model():
    registry = ModelRegistry.from_config(config_with_vertex_mid(None))
    spec = registry.tier(c.TIER_MID)
    assert (spec.provider, spec.model, spec.region, spec.project) == (
        c.PROVIDER_VERTEX, VERTEX_MODEL, "europe-west1", "acme-prod")
    cost = registry.estimate_cost(c.TIER_MID, input_tokens=2000, output_tokens=300)
    assert cost == pytest.approx((2000 * IN_PRICE + 300 * OUT_PRICE) / 1e6)


@pytest.fixture
def served(tmp_path):
    standin = StandInServer(StandInConfig(latency_scale=0.0), port=0)
    standin.start()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    cfg = config_with_vertex_mid(standin.url + "/v1", api_key_env="VERTEX_TOKEN")
    cfg = cfg.replace(serving=dataclasses.replace(cfg.serving, backends=BackendsConfig(
        anthropic_base_url=standin.url, student_base_url=standin.openai_url, max_retries=0)))
    pipeline = Pipeline.from_config(cfg, recorder=Recorder(provider), cache=None,
                                    env={"VERTEX_TOKEN": "ya29.token-from-the-metadata-server"}, confidence=None)
    gw = Gateway(pipeline, GatewayConfig(keys_file=tmp_path / "keys.json", rate_limit_per_minute=0), port=0)
    gw.start()
    yield gw, standin, exporter
    gw.shutdown()
    pipeline.close()
    standin.shutdown()


def call_spans(exporter):
    return [s for s in exporter.get_finished_spans() if s.attributes.get(c.GEN_AI_USAGE_INPUT_TOKENS) is not None]


@pytest.mark.parametrize("stream", [False, True])
def test_an_anthropic_client_is_answered_by_claude_on_vertex(served, stream):
    gw, standin, exporter = served
    app = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0)
    request = dict(model="claude-sonnet-4-6", max_tokens=300, messages=[{"role": "user", "content": LONG}])
    if stream:
        with app.messages.stream(**request) as s:
            pieces = list(s.text_stream)
            msg = s.get_final_message()
        assert len(pieces) > 1 and "".join(pieces) == msg.content[0].text
    else:
        msg = app.messages.create(**request)
    (seen,) = standin.log.entries("vertex")  # one rawPredict / streamRawPredict, no Messages API call
    assert seen.model == VERTEX_MODEL and seen.paid and standin.log.entries("anthropic") == []
    assert standin.vertex.auth_seen[-1] == ("Bearer ya29.token-from-the-metadata-server", "acme-prod", "europe-west1")
    assert msg.usage.output_tokens == seen.output_tokens
    (span,) = call_spans(exporter)
    a = span.attributes
    assert (a[c.GEN_AI_PROVIDER_NAME], a[c.COSTLINE_TIER], a[c.GEN_AI_REQUEST_MODEL]) == (
        c.PROVIDER_VERTEX, c.TIER_MID, VERTEX_MODEL)
    assert (a[c.GEN_AI_USAGE_INPUT_TOKENS], a[c.GEN_AI_USAGE_OUTPUT_TOKENS]) == (seen.input_tokens, seen.output_tokens)
    # europe-west1 is a regional endpoint (Claude Sonnet 4.6 costs 10 % more there than on the global one)
    assert a[c.COSTLINE_ENDPOINT_SCOPE] == c.ENDPOINT_REGIONAL


def test_count_tokens_on_a_vertex_tier_asks_vertex(served):
    gw, standin, _ = served
    messages = [{"role": "user", "content": LONG}]
    via_vertex = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0).messages.count_tokens(
        model="claude-sonnet-4-6", messages=messages)
    direct = anthropic.Anthropic(base_url=standin.url, api_key="unused", max_retries=0).messages.count_tokens(
        model="claude-sonnet-4-6", messages=messages)
    assert via_vertex.input_tokens == direct.input_tokens > 0
    assert standin.vertex.auth_seen[-1][1:] == ("acme-prod", "europe-west1")
    assert standin.log.entries("vertex") == []  # counted, nothing generated


def test_vertex_quota_errors_escalate_to_the_next_tier(served):
    gw, standin, exporter = served
    standin.vertex.inject_errors(429, 1)
    raw = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0).messages.with_raw_response.create(
        model="claude-sonnet-4-6", max_tokens=300, messages=[{"role": "user", "content": LONG}])
    assert raw.parse().content[0].text and raw.headers["x-costline-tier"] == c.TIER_UPPER
    failed = [s for s in exporter.get_finished_spans() if s.attributes.get(c.ERROR_TYPE)]
    assert [(s.attributes[c.GEN_AI_PROVIDER_NAME], s.attributes[c.ERROR_TYPE]) for s in failed] == [
        (c.PROVIDER_VERTEX, "RateLimitError")]


@pytest.fixture
def no_google_setup_of_this_machine(monkeypatch):
    """Only what a test gives reaches google-auth: no key file, gcloud login or metadata server of the host."""
    pytest.importorskip("google.auth")
    from google.auth.compute_engine import _metadata

    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "CLOUD_ML_REGION", "ANTHROPIC_VERTEX_PROJECT_ID",
                 "ANTHROPIC_VERTEX_BASE_URL", "GOOGLE_CLOUD_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", "/nonexistent/gcloud")  # no gcloud login
    monkeypatch.setattr(_metadata, "_NO_GCE_CHECK", True)  # read once at import: no metadata server probe


def build_mid(cfg, env=None):
    from costline.serving.backends import build_backends

    return build_backends(ModelRegistry.from_config(cfg), cfg.serving.backends, Recorder(TracerProvider()),
                          tiers=[c.TIER_MID], env=env or {})[c.TIER_MID]


@pytest.mark.parametrize("tier, env, key", [
    ({}, {}, "[serving.tiers.mid] api_key_env"),  # no application default credentials here
    ({"region": ""}, {}, "[serving.tiers.mid] region"),
    ({"region": ""}, {"CLOUD_ML_REGION": "evil.example.com/x?"}, "[serving.tiers.mid] region"),  # a host name part
])
def test_a_remote_vertex_endpoint_without_credentials_or_region_is_refused_at_start(
        no_google_setup_of_this_machine, tier, env, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        build_mid(config_with_vertex_mid(None, **tier), env)


class FakeCredentials:
    """What google.auth.default() gives: a token, refreshed (counted) when expired."""

    def __init__(self):
        self.token, self.valid, self.expired, self.refreshes = None, False, True, 0

    def refresh(self, request):
        time.sleep(0.05)  # a token service's round trip
        self.refreshes += 1
        self.token, self.valid, self.expired = f"ya29.adc-{self.refreshes}", True, False


@pytest.mark.parametrize("adc_project, project, want", [
    ("adc-project", "", "adc-project"),  # the credentials' project when none is set
    ("adc-project", "acme-prod", "acme-prod"),
    (None, "", None),  # none anywhere: refused, naming the key
])
def test_application_default_credentials_and_their_project(no_google_setup_of_this_machine, monkeypatch,
                                                           adc_project, project, want):
    import google.auth

    monkeypatch.setattr(google.auth, "default", lambda scopes=None: (FakeCredentials(), adc_project))
    cfg = config_with_vertex_mid(None, project=project)
    if want is None:
        with pytest.raises(ConfigError, match=re.escape("[serving.tiers.mid] project")):
            build_mid(cfg)
        return
    backend = build_mid(cfg)
    assert backend.client.project_id == want and backend.client.region == "europe-west1"
    backend.close()


def test_an_expired_token_is_refreshed_once_for_many_threads(no_google_setup_of_this_machine, monkeypatch):
    import google.auth

    creds = FakeCredentials()
    monkeypatch.setattr(google.auth, "default", lambda scopes=None: (creds, "acme-prod"))
    backend = build_mid(config_with_vertex_mid(None))
    with ThreadPoolExecutor(8) as pool:
        tokens = set(pool.map(lambda _: backend.client._ensure_access_token(), range(16)))
    backend.close()
    assert tokens == {"ya29.adc-1"} and creds.refreshes == 1


def test_credentials_that_cannot_be_refreshed_fail_the_tier_and_escalate(no_google_setup_of_this_machine,
                                                                          monkeypatch, tmp_path):
    import google.auth
    from google.auth.exceptions import RefreshError

    class Revoked(FakeCredentials):
        def refresh(self, request):
            raise RefreshError("invalid_grant: the service account key was deleted")

    monkeypatch.setattr(google.auth, "default", lambda scopes=None: (Revoked(), "acme-prod"))
    from costline.serving.backends import Prompt
    from costline.serving.errors import BackendError

    backend = build_mid(config_with_vertex_mid("https://europe-west1-aiplatform.googleapis.com/v1"))
    with pytest.raises(BackendError) as err:  # the tier's failure (the pipeline escalates), never a 500
        backend.complete(Prompt.of("Explain the invoices"))
    backend.close()
    assert err.value.error_type == "RefreshError"
