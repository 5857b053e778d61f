"""Apps that reach Claude through Amazon Bedrock or Google Vertex AI with the anthropic SDK's own clients
(``AnthropicBedrock``, ``AnthropicVertex``), traced by the SDK itself, by OpenLLMetry's anthropic instrumentation
and by costline's ``instrument_anthropic``: each call counted once and priced as the Claude model it is, prompt cache
included, streamed or not.

The clients talk to the stand-in's Bedrock Runtime (InvokeModel, InvokeModelWithResponseStream) and Vertex AI
(rawPredict, streamRawPredict) endpoints; the spans go through the processor's decode / flatten / commit path into a
lake in tmp_path; the figures are computed here from the responses' usage (Anthropic's: input without the cache) and
hand-written prices, never costline's pricing code.
"""

from __future__ import annotations

import pytest

from costline.collectors import Recorder, instrument_anthropic
from costline.config import Config, LakeConfig, ModelPrice, PricingConfig
from costline.serving.settings import StandInConfig
from costline.sim.standin import StandInServer

from figures_lake import lake_from_sdk_spans, query_lake as q
from sdk_hygiene import pristine_sdks, restore_sdk_classes, sdk_class_attributes  # noqa: F401 (autouse fixture)

anthropic = pytest.importorskip("anthropic")
openllmetry_anthropic = pytest.importorskip("opentelemetry.instrumentation.anthropic")

# Hand-written prices, USD per million tokens (not costline's defaults, so nothing leaks from them).
HAIKU_IN, HAIKU_OUT = 1.0, 5.0
READ_X, WRITE_X = 0.1, 1.25
SYSTEM = "You answer questions about our refund policy. " * 60  # long enough to be prompt-cached
#: What each cloud calls Claude Haiku 4.5 (and Anthropic's own API, for comparison).
MODELS = {"bedrock": "us.anthropic.claude-haiku-4-5-20251001-v1:0", "vertex": "claude-haiku-4-5@20251001",
          "anthropic": "claude-haiku-4-5"}
PROVIDERS = {"bedrock": "aws.bedrock", "vertex": "gcp.vertex_ai", "anthropic": "anthropic"}
#: Bedrock's us. profile and Vertex's us-east5 are regional endpoints: from Claude Sonnet 4.5 and Haiku 4.5 on, the
#: clouds bill them 10 % over their global endpoints, whose prices are Anthropic's list prices.
REGIONAL_X = {"bedrock": 1.1, "vertex": 1.1, "anthropic": 1.0}


@pytest.fixture
def standin():  # its own prompt cache each test: the first call writes it
    srv = StandInServer(StandInConfig(port=0, latency_scale=0.0, min_cache_tokens=100))
    srv.start()
    yield srv
    srv.shutdown()


@pytest.fixture
def cfg(tmp_path) -> Config:
    return Config(lake=LakeConfig(path=tmp_path / "lake"), pricing=PricingConfig(
        models=(ModelPrice("claude-haiku-4-5", "budget", input_per_mtok=HAIKU_IN, output_per_mtok=HAIKU_OUT),),
        student_usd_per_hour=0.0, student_providers=()))


def haiku_usd(u) -> float:
    """Anthropic's usage: input_tokens excludes the cached reads and writes."""
    read, write = u.cache_read_input_tokens or 0, u.cache_creation_input_tokens or 0
    return (u.input_tokens * HAIKU_IN + read * HAIKU_IN * READ_X + write * HAIKU_IN * WRITE_X
            + u.output_tokens * HAIKU_OUT) / 1e6


def cloud_client(cloud: str, standin, provider, *, region: str = "us-east5"):
    """The SDK's client of Claude on ``cloud`` at the stand-in, its own tracing on (Vertex: in ``region``)."""
    tracing = {"tracer_provider": provider}
    if cloud == "anthropic":
        return anthropic.Anthropic(base_url=standin.url, api_key="k", max_retries=0, open_telemetry=tracing)
    if cloud == "bedrock":
        return anthropic.AnthropicBedrock(base_url=standin.url, api_key="bedrock-key", aws_region="us-east-1",
                                          max_retries=0, open_telemetry=tracing)
    return anthropic.AnthropicVertex(base_url=standin.url + "/v1", access_token="ya29.token", region=region,
                                     project_id="acme", max_retries=0, open_telemetry=tracing)


def ask(client, cloud: str, i: int, *, stream: bool):
    request = dict(model=MODELS[cloud], max_tokens=64,
                   system=[{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}],
                   messages=[{"role": "user", "content": f"Question {i}: can I return a damaged item?"}])
    if not stream:
        return client.messages.create(**request)
    with client.messages.stream(**request) as s:
        for _ in s.text_stream:
            pass
        return s.get_final_message()


@pytest.mark.parametrize("cloud", ["bedrock", "vertex", "anthropic"])
@pytest.mark.parametrize("costline_wrapper", [False, True])
def test_claude_on_a_cloud_is_counted_once_and_priced_as_claude(standin, cfg, spans, cloud, costline_wrapper):
    provider, exporter = spans
    instrumentor = openllmetry_anthropic.AnthropicInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    usages = []
    try:
        client = cloud_client(cloud, standin, provider)
        recorder = Recorder(provider)
        if costline_wrapper:
            instrument_anthropic(client, recorder)
        for i in range(6):
            with recorder.request(task_type="faq", tenant="acme") as req:
                usages.append(ask(client, cloud, i, stream=i % 2 == 1).usage)
                req.accept()
    finally:
        instrumentor.uninstrument()
    spans_ = exporter.get_finished_spans()
    calls = [s for s in spans_ if s.name != "costline.request"]
    assert len(calls) == 6 * (3 if costline_wrapper else 2)  # every instrumentation saw every call
    assert any(u.cache_read_input_tokens for u in usages) and any(u.cache_creation_input_tokens for u in usages)
    lake_from_sdk_spans(spans_, cfg)

    want = sum(haiku_usd(u) for u in usages) * REGIONAL_X[cloud]
    n, cost, read, write, out = q(cfg, "SELECT count(*), sum(cost_usd), sum(cache_read_tokens), "
                                       "sum(cache_creation_tokens), sum(output_tokens) FROM calls")[0]
    assert n == 6
    # the kept span's output is the SDK's: OpenLLMetry's counts a streamed call's message_start output token twice
    assert cost == pytest.approx(want, rel=1e-9)
    assert (read, write, out) == (sum(u.cache_read_input_tokens for u in usages),
                                  sum(u.cache_creation_input_tokens for u in usages),
                                  sum(u.output_tokens for u in usages))
    assert q(cfg, "SELECT count(*), min(calls), max(calls), sum(cost_usd) FROM requests") == [
        (6, 1, 1, pytest.approx(want, rel=1e-9))]
    assert [r[:3] for r in q(cfg, "SELECT tier, requests, successes FROM tier_hourly")] == [("budget", 6, 6)]
    if costline_wrapper:  # costline's own span is the one kept, and it names the cloud
        assert q(cfg, "SELECT DISTINCT provider FROM calls") == [(PROVIDERS[cloud],)]


@pytest.mark.parametrize("costline_wrapper", [False, True])
@pytest.mark.parametrize("cloud, model, region, scope, multiple", [
    # a global inference profile / Vertex's global location: the list prices
    ("bedrock", "global.anthropic.claude-haiku-4-5-20251001-v1:0", None, "global", 1.0),
    ("vertex", "claude-haiku-4-5@20251001", "global", "global", 1.0),
    # an in-region Bedrock id and a European profile: regional
    ("bedrock", "anthropic.claude-haiku-4-5-20251001-v1:0", None, "regional", 1.1),
    ("bedrock", "eu.anthropic.claude-haiku-4-5-20251001-v1:0", None, "regional", 1.1),
    ("vertex", "claude-haiku-4-5@20251001", "europe-west1", "regional", 1.1),
    # Claude Sonnet 4 predates the split: one price wherever it runs
    ("bedrock", "us.anthropic.claude-sonnet-4-20250514-v1:0", None, "regional", 1.0),
    ("vertex", "claude-sonnet-4@20250514", "us-east5", "regional", 1.0),
])
def test_a_clouds_regional_endpoint_costs_its_premium_and_the_global_one_the_list_price(
        tmp_path, spans, cloud, model, region, scope, multiple, costline_wrapper):
    provider, exporter = spans
    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"), pricing=PricingConfig(models=(
        ModelPrice("claude-haiku-4-5", "budget", input_per_mtok=HAIKU_IN, output_per_mtok=HAIKU_OUT),
        ModelPrice("claude-sonnet-4", "mid", input_per_mtok=HAIKU_IN, output_per_mtok=HAIKU_OUT)),
        student_usd_per_hour=0.0, student_providers=()))
    standin = StandInServer(StandInConfig(port=0, latency_scale=0.0), pricing=cfg.pricing)  # it serves Sonnet 4 too
    standin.start()
    try:
        client = cloud_client(cloud, standin, provider, region=region or "us-east5")
        usages = _ask_twice(client, model, Recorder(provider), costline_wrapper)
    finally:
        standin.shutdown()
    lake_from_sdk_spans(exporter.get_finished_spans(), cfg)
    want = sum((u.input_tokens * HAIKU_IN + u.output_tokens * HAIKU_OUT) / 1e6 for u in usages) * multiple
    assert q(cfg, "SELECT count(*), sum(cost_usd), min(endpoint_scope), max(endpoint_scope) FROM calls") == [
        (2, pytest.approx(want, rel=1e-9), scope, scope)]


def _ask_twice(client, model: str, recorder: Recorder, costline_wrapper: bool) -> list:
    """Two calls of ``model``, each in a request (costline's wrapper on the client too where asked): their usage."""
    if costline_wrapper:
        instrument_anthropic(client, recorder)
    usages = []
    for i in range(2):
        with recorder.request(task_type="faq") as req:
            usages.append(client.messages.create(
                model=model, max_tokens=32, messages=[{"role": "user", "content": f"Question {i}: where is it?"}]).usage)
            req.accept()
    return usages


def test_a_models_own_regional_multiplier_wins_and_one_turns_the_premium_off(standin, tmp_path, spans):
    """An entry priced at a region's own prices says ``regional_endpoint_multiplier = 1``; another its own 1.25."""
    provider, exporter = spans
    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"), pricing=PricingConfig(models=(
        ModelPrice("claude-haiku-4-5", "budget", input_per_mtok=HAIKU_IN, output_per_mtok=HAIKU_OUT,
                   regional_endpoint_multiplier=1.0),
        ModelPrice("claude-opus-4-8", "upper", input_per_mtok=5.0, output_per_mtok=25.0,
                   regional_endpoint_multiplier=1.25)),
        student_usd_per_hour=0.0, student_providers=()))
    client = cloud_client("bedrock", standin, provider)
    usages = {}
    for model in ("us.anthropic.claude-haiku-4-5-20251001-v1:0", "us.anthropic.claude-opus-4-8-v1:0"):
        usages[model] = client.messages.create(model=model, max_tokens=16,
                                               messages=[{"role": "user", "content": "hi"}]).usage
    lake_from_sdk_spans(exporter.get_finished_spans(), cfg)
    haiku, opus = usages.values()
    assert sorted(q(cfg, "SELECT model, cost_usd FROM calls")) == [
        ("us.anthropic.claude-haiku-4-5-20251001-v1:0",
         pytest.approx((haiku.input_tokens * HAIKU_IN + haiku.output_tokens * HAIKU_OUT) / 1e6, rel=1e-9)),
        ("us.anthropic.claude-opus-4-8-v1:0",
         pytest.approx((opus.input_tokens * 5.0 + opus.output_tokens * 25.0) / 1e6 * 1.25, rel=1e-9))]


@pytest.mark.parametrize("cloud, model", [
    ("bedrock", "us.anthropic.claude-haiku-4-5-20251001-v1:0"),
    ("vertex", "claude-haiku-4-5@20251001"),
    ("vertex", "claude-haiku-4-5"),  # Vertex's newer ids have no @date: OpenInference says "google" all the same
])
def test_claude_on_a_cloud_traced_by_openinference_too_is_counted_once(standin, cfg, spans, cloud, model):
    """OpenInference's anthropic instrumentation names Bedrock's client "aws" and Vertex's "google" (the SDK:
    aws.bedrock, gcp.vertex_ai) and writes no response id: the two spans of one call are still one call."""
    openinference_anthropic = pytest.importorskip("openinference.instrumentation.anthropic")
    provider, exporter = spans
    instrumentor = openinference_anthropic.AnthropicInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        usages = _ask_twice(cloud_client(cloud, standin, provider), model, Recorder(provider), False)
    finally:
        instrumentor.uninstrument()
    spans_ = exporter.get_finished_spans()
    assert len([s for s in spans_ if s.name != "costline.request"]) == 4  # the SDK's and OpenInference's, each call
    lake_from_sdk_spans(spans_, cfg)
    want = sum((u.input_tokens * HAIKU_IN + u.output_tokens * HAIKU_OUT) / 1e6 for u in usages) * REGIONAL_X[cloud]
    assert q(cfg, "SELECT count(*), min(calls), max(calls), sum(cost_usd) FROM requests") == [
        (2, 1, 1, pytest.approx(want, rel=1e-9))]


def test_vertex_traced_by_openinference_and_openllmetry_without_the_sdks_own_spans_is_counted_once(standin, cfg,
                                                                                                   spans):
    """Neither OpenInference ("google") nor OpenLLMetry ("anthropic", but Vertex's msg_vrtx_ id) says gcp.vertex_ai:
    an undated Vertex id with the SDK's own tracing off is still one call."""
    openinference_anthropic = pytest.importorskip("openinference.instrumentation.anthropic")
    provider, exporter = spans
    instrumentors = [openinference_anthropic.AnthropicInstrumentor(), openllmetry_anthropic.AnthropicInstrumentor()]
    for instrumentor in instrumentors:
        instrumentor.instrument(tracer_provider=provider)
    try:
        client = anthropic.AnthropicVertex(base_url=standin.url + "/v1", access_token="ya29.token", region="us-east5",
                                           project_id="acme", max_retries=0, open_telemetry=False)
        usages = _ask_twice(client, "claude-haiku-4-5", Recorder(provider), False)
    finally:
        for instrumentor in instrumentors:
            instrumentor.uninstrument()
    spans_ = exporter.get_finished_spans()
    assert sorted(s.instrumentation_scope.name for s in spans_ if s.name != "costline.request") == [
        "openinference.instrumentation.anthropic"] * 2 + ["opentelemetry.instrumentation.anthropic"] * 2
    lake_from_sdk_spans(spans_, cfg)
    want = sum((u.input_tokens * HAIKU_IN + u.output_tokens * HAIKU_OUT) / 1e6 for u in usages)  # no URL: global
    assert q(cfg, "SELECT count(*), min(calls), max(calls), sum(cost_usd) FROM requests") == [
        (2, 1, 1, pytest.approx(want, rel=1e-9))]
