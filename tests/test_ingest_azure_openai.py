"""Azure OpenAI (``openai.AzureOpenAI``) through the three OpenAI instrumentations: each call once, at the price of
what was served.

The instrumentations name Azure's provider three ways: OpenInference ``llm.provider`` = ``azure`` (from the host),
OpenLLMetry ``gen_ai.provider.name`` = ``azure.ai.openai`` (from the base URL), openai-v2 ``openai``. One call
reported by all three is one call (the views take the three as one provider family with ``openai``).

The SDK talks to ``https://myres.openai.azure.com`` as an Azure app would (the host the instrumentations read);
an httpx transport hands each request to costline's stand-in instead, whose
``/openai/deployments/{deployment}/chat/completions`` is its chat-completions API. Expected figures come from
the usage the SDK returned, priced with the hand-written prices below (never costline's pricing code).
"""

from __future__ import annotations

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costline.config import Config, LakeConfig, ModelPrice, PricingConfig
from costline.serving.settings import StandInConfig
from costline.sim.standin import StandInServer

from figures_lake import lake_from_sdk_spans, query_lake as q
from sdk_hygiene import pristine_sdks  # noqa: F401 (autouse fixture)

openai = pytest.importorskip("openai")
import openai.resources.chat.completions.completions  # noqa: E402  (loaded before pristine_sdks' snapshot)
import openai.resources.embeddings  # noqa: E402

DEPLOYMENT = "costline-student"  # the deployment's name, as Azure apps pass it for model=; the stand-in serves it
PRICE_IN, PRICE_OUT = 0.15, 0.60  # USD per million tokens, by hand
SCOPES = {"openinference": "openinference.instrumentation.openai",
          "openllmetry": "opentelemetry.instrumentation.openai.v1",
          "openai-v2": "opentelemetry.util.genai.handler"}
MODULES = {"openinference": "openinference.instrumentation.openai",
           "openllmetry": "opentelemetry.instrumentation.openai",
           "openai-v2": "opentelemetry.instrumentation.openai_v2"}


@pytest.fixture(scope="module")
def standin():
    srv = StandInServer(StandInConfig(port=0, latency_scale=0.0))
    srv.start()
    yield srv
    srv.shutdown()


@pytest.fixture
def cfg(tmp_path) -> Config:
    return Config(lake=LakeConfig(path=tmp_path / "lake"), pricing=PricingConfig(
        models=(ModelPrice(DEPLOYMENT, "budget", provider="azure.ai.openai", input_per_mtok=PRICE_IN,
                           output_per_mtok=PRICE_OUT),),
        student_usd_per_hour=0.0, student_providers=()))


class _ToStandIn(httpx.HTTPTransport):
    """Sends what the SDK addresses to Azure to the stand-in (the SDK and the instrumentations still see Azure)."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self._port = port

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(scheme="http", host="127.0.0.1", port=self._port)
        return super().handle_request(request)


@pytest.mark.parametrize("names", ["openinference", "openllmetry", "openai-v2", "openinference+openllmetry+openai-v2"])
def test_azure_openai_calls_count_once_whatever_each_instrumentation_calls_the_provider(standin, cfg, names):
    """A call, a streamed call with its usage, a failed call (an unknown deployment): two answered calls at the
    price of their usage and one failure at $0, alone or with the three instrumentations together."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentors = [pytest.importorskip(MODULES[n]).OpenAIInstrumentor() for n in names.split("+")]
    for instrumentor in instrumentors:
        instrumentor.instrument(tracer_provider=provider)
    try:
        client = openai.AzureOpenAI(azure_endpoint="https://myres.openai.azure.com", api_key="x",
                                    api_version="2024-10-21", max_retries=0,
                                    http_client=httpx.Client(transport=_ToStandIn(standin.port)))
        usages = [client.chat.completions.create(model=DEPLOYMENT, max_tokens=40, messages=[
            {"role": "user", "content": "Where is my parcel?"}]).usage]
        chunks = list(client.chat.completions.create(model=DEPLOYMENT, stream=True, stream_options={
            "include_usage": True}, messages=[{"role": "user", "content": "Stream the refund steps"}]))
        usages.append(chunks[-1].usage)
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="gpt-4o-prod", messages=[{"role": "user", "content": "hi"}])
    finally:
        for instrumentor in instrumentors:
            instrumentor.uninstrument()
    spans = exporter.get_finished_spans()
    assert {s.instrumentation_scope.name for s in spans} == {SCOPES[n] for n in names.split("+")}
    lake_from_sdk_spans(spans, cfg)
    want = sum(u.prompt_tokens * PRICE_IN + u.completion_tokens * PRICE_OUT for u in usages) / 1e6
    got = q(cfg, "SELECT count(*), sum(input_tokens), sum(output_tokens), sum(cost_usd) FROM calls "
                 "WHERE error_type IS NULL")
    assert got == [(2, sum(u.prompt_tokens for u in usages), sum(u.completion_tokens for u in usages),
                    pytest.approx(want, rel=1e-9))]
    assert q(cfg, "SELECT count(*), sum(cost_usd) FROM calls WHERE error_type IS NOT NULL") == [(1, 0.0)]
