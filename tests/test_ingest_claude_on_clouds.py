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


def cloud_client(cloud: str, standin, provider):
    """The SDK's client of Claude on ``cloud`` at the stand-in, its own tracing on."""
    tracing = {"tracer_provider": provider}
    if cloud == "anthropic":
        return anthropic.Anthropic(base_url=standin.url, api_key="k", max_retries=0, open_telemetry=tracing)
    if cloud == "bedrock":
        return anthropic.AnthropicBedrock(base_url=standin.url, api_key="bedrock-key", aws_region="us-east-1",
                                          max_retries=0, open_telemetry=tracing)
    return anthropic.AnthropicVertex(base_url=standin.url + "/v1", access_token="ya29.token", region="us-east5",
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

    want = sum(haiku_usd(u) for u in usages)
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
