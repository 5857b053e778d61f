"""Apps that reach Claude through the anthropic SDK's platform clients besides Bedrock and Vertex —
``AnthropicAWS`` (Claude Platform on AWS), ``AnthropicBedrockMantle`` (Amazon Bedrock's Messages API),
``AnthropicFoundry`` (Microsoft Foundry), ``AnthropicGoogleCloud`` (Claude on Google Cloud, Anthropic managed) and
their async twins — traced by the SDK itself, by OpenLLMetry's anthropic instrumentation and by costline's
``instrument_anthropic``: each call counted once and priced as the Claude model it is, prompt cache included,
created or streamed.

Each client talks to the stand-in's Messages API under the path its real service has: ``/v1/messages`` (AWS),
``/anthropic/v1/messages`` (Mantle, Foundry), ``/v1/projects/…/workspaces/…/invoke/v1/messages`` (Google Cloud),
with a placeholder credential each accepts. The spans go through the processor's decode / flatten / commit path into
a lake in tmp_path; the figures are computed here from the responses' usage (Anthropic's: input without the cache)
and hand-written prices, never costline's pricing code.
"""

from __future__ import annotations

import asyncio

import pytest

from costline.collectors import Recorder, instrument_anthropic
from costline.lake import open_lake

import sdk_hygiene
from figures_lake import lake_from_sdk_spans
# the stand-in and lake fixtures, Claude Haiku 4.5's hand-written prices and the prompt-cached system prompt
from test_ingest_claude_on_clouds import (  # noqa: F401 (cfg, standin: fixtures)
    MODELS, REGIONAL_X, SYSTEM, cfg, cloud_client, haiku_usd, standin, ask as ask_cloud)

anthropic = pytest.importorskip("anthropic")
openllmetry_anthropic = pytest.importorskip("opentelemetry.instrumentation.anthropic")
pristine_sdks = sdk_hygiene.pristine_sdks  # autouse: each test starts from the SDK's own methods

WORKSPACE = "wrkspc_acme"
N = 4  #: app requests a test makes, one call each: the first writes the prompt cache, the others read it

#: What costline reads a Mantle call's endpoint as. Mantle's model ids are Bedrock's without the InvokeModel version
#: suffix (``anthropic.claude-opus-5-5``, as Pydantic AI's notes of live calls spell them; the SDK shows none), the
#: in-region spelling that costline.pricing.endpoint_scope reads as a regional endpoint (1.1 x from Claude Haiku 4.5
#: on); its host is a region's (``bedrock-mantle.{region}.api.aws``). The SDK says neither global nor regional:
#: change this one line if Mantle's in-region ids are billed at the global prices.
MANTLE_SCOPE, MANTLE_X = "regional", 1.1


class Platform:
    """One of the SDK's platform clients: how it is built against the stand-in and what costline should read."""

    def __init__(self, name: str, cls: str, model: str, provider: str, scope: str, *, path: str = "",
                 endpoint: str | None = None, multiple: float = 1.0, kwargs: dict | None = None) -> None:
        self.name, self.cls, self.model, self.provider, self.scope = name, cls, model, provider, scope
        self.path, self.endpoint, self.multiple, self.kwargs = path, endpoint, multiple, kwargs or {}

    def __repr__(self) -> str:
        return self.name

    def client_class(self, is_async: bool):
        name = ("Async" if is_async else "") + self.cls
        found = getattr(anthropic, name, None)
        if found is None:
            pytest.skip(f"anthropic {anthropic.__version__} has no {name}")
        return found


PLATFORMS = [
    # Claude Platform on AWS: Anthropic's own API at aws-external-anthropic.{region}.api.aws, a workspace header;
    # an API key (else SigV4, service aws-external-anthropic); Anthropic's model ids
    Platform("aws", "AnthropicAWS", "claude-haiku-4-5", "anthropic", "com.anthropic.sdk.python.aws",
             kwargs={"api_key": "aws-key", "workspace_id": WORKSPACE}),
    # Amazon Bedrock's Messages API at bedrock-mantle.{region}.api.aws/anthropic: a Bedrock API key as a bearer
    # token (else SigV4, service bedrock-mantle); Bedrock's model ids without the InvokeModel version suffix
    Platform("mantle", "AnthropicBedrockMantle", "anthropic.claude-haiku-4-5", "aws.bedrock",
             "com.anthropic.sdk.python.bedrock", path="/anthropic", endpoint=MANTLE_SCOPE, multiple=MANTLE_X,
             kwargs={"api_key": "bedrock-key", "aws_region": "us-east-1"}),
    # Microsoft Foundry at {resource}.services.ai.azure.com/anthropic/: an API key (x-api-key and api-key) or an
    # Azure AD token provider; Anthropic's model ids (a deployment's name)
    Platform("foundry", "AnthropicFoundry", "claude-haiku-4-5", "anthropic", "com.anthropic.sdk.python.foundry",
             path="/anthropic/", kwargs={"azure_ad_token_provider": lambda: "entra-token"}),
    # Claude on Google Cloud (Anthropic managed) at claude.googleapis.com/v1/projects/{p}/locations/{l}/workspaces/
    # {w}/invoke: a GCP bearer token from a token provider (else google.auth); Anthropic's model ids
    Platform("google_cloud", "AnthropicGoogleCloud", "claude-haiku-4-5", "anthropic",
             "com.anthropic.sdk.python.google_cloud",
             path=f"/v1/projects/acme/locations/global/workspaces/{WORKSPACE}/invoke",
             kwargs={"token_provider": lambda: "ya29.token"}),
]


def request(platform: Platform, i: int) -> dict:
    return dict(model=platform.model, max_tokens=64,
                system=[{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}],
                messages=[{"role": "user", "content": f"Question {i}: can I return a damaged item?"}])


def ask(client, platform: Platform, i: int, *, stream: bool):
    if not stream:
        return client.messages.create(**request(platform, i))
    with client.messages.stream(**request(platform, i)) as s:
        return s.get_final_message()  # reads the stream to its end


async def ask_async(client, platform: Platform, i: int, *, stream: bool):
    if not stream:
        return await client.messages.create(**request(platform, i))
    async with client.messages.stream(**request(platform, i)) as s:
        return await s.get_final_message()  # reads the stream to its end


def some_requests(platform: Platform, standin, provider, *, is_async: bool, costline_wrapper: bool) -> list:
    """``N`` app requests of one call each (odd ones streamed) through ``platform``'s client at the stand-in, its own
    tracing on (and costline's wrapper where asked): their usage."""
    cls = platform.client_class(is_async)
    recorder = Recorder(provider)

    def make():
        client = cls(base_url=standin.url + platform.path, max_retries=0,
                     open_telemetry={"tracer_provider": provider}, **platform.kwargs)
        if costline_wrapper:
            instrument_anthropic(client, recorder)
        return client

    if not is_async:
        client, usages = make(), []
        for i in range(N):
            with recorder.request(task_type="faq", tenant="acme") as req:
                usages.append(ask(client, platform, i, stream=i % 2 == 1).usage)
                req.accept()
        return usages

    async def run() -> list:
        client, usages = make(), []
        async with client:
            for i in range(N):
                with recorder.request(task_type="faq", tenant="acme") as req:
                    usages.append((await ask_async(client, platform, i, stream=i % 2 == 1)).usage)
                    req.accept()
        return usages

    return asyncio.run(run())


def traced_requests(instrumentor, platform: Platform, standin, provider, **kwargs) -> list:
    """:func:`some_requests` with ``instrumentor`` (OpenLLMetry's or OpenInference's) on ``provider`` meanwhile."""
    instrumentor.instrument(tracer_provider=provider)
    try:
        return some_requests(platform, standin, provider, **kwargs)
    finally:
        instrumentor.uninstrument()


@pytest.mark.parametrize("platform", PLATFORMS, ids=repr)
@pytest.mark.parametrize("is_async, costline_wrapper", [  # the async twins with all three (to keep the file fast)
    (False, False), (False, True), (True, True)], ids=["sdk+openllmetry", "sdk+openllmetry+costline",
                                                       "async:sdk+openllmetry+costline"])
def test_claude_on_a_platform_client_is_counted_once_and_priced_as_claude(
        standin, cfg, spans, platform, is_async, costline_wrapper):
    provider, exporter = spans
    usages = traced_requests(openllmetry_anthropic.AnthropicInstrumentor(), platform, standin, provider,
                             is_async=is_async, costline_wrapper=costline_wrapper)
    spans_ = exporter.get_finished_spans()
    calls = [s for s in spans_ if s.name != "costline.request"]
    by_scope = {}
    for s in calls:
        by_scope.setdefault(s.instrumentation_scope.name, []).append(s)
    # every instrumentation saw every call; the SDK's spans come in the platform's own scope and name its provider
    assert sorted((k, len(v)) for k, v in by_scope.items()) == sorted(
        [(platform.scope, N), ("opentelemetry.instrumentation.anthropic", N)]
        + ([("costline.collectors", N)] if costline_wrapper else []))
    assert {s.attributes.get("gen_ai.provider.name") for s in by_scope[platform.scope]} == {platform.provider}
    if costline_wrapper:  # costline's wrapper names the provider as the SDK does (type(client)._gen_ai_provider_name)
        assert {s.attributes.get("gen_ai.provider.name") for s in by_scope["costline.collectors"]} == {
            platform.provider}
    assert any(u.cache_read_input_tokens for u in usages) and any(u.cache_creation_input_tokens for u in usages)
    lake_from_sdk_spans(spans_, cfg)

    want = sum(haiku_usd(u) for u in usages) * platform.multiple
    con = open_lake(cfg)  # one connection for the lot: each opening creates the views anew
    try:
        n, cost, inp, read, write, out = con.execute(
            "SELECT count(*), sum(cost_usd), sum(input_tokens), sum(cache_read_tokens), sum(cache_creation_tokens), "
            "sum(output_tokens) FROM calls").fetchone()
        assert n == N
        assert cost == pytest.approx(want, rel=1e-9)
        # the lake's input includes the cache (the conventions'); the kept span's output is the SDK's (OpenLLMetry's
        # counts a streamed call's message_start output token twice)
        assert (inp, read, write, out) == (
            sum(u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens for u in usages),
            sum(u.cache_read_input_tokens for u in usages), sum(u.cache_creation_input_tokens for u in usages),
            sum(u.output_tokens for u in usages))
        assert con.execute("SELECT DISTINCT provider, model, pricing_status, endpoint_scope FROM calls").fetchall() == [
            (platform.provider, platform.model, "priced", platform.endpoint)]
        assert con.execute("SELECT count(*), min(calls), max(calls), sum(cost_usd) FROM requests").fetchall() == [
            (N, 1, 1, pytest.approx(want, rel=1e-9))]
        assert [r[:3] for r in con.execute("SELECT tier, requests, successes FROM tier_hourly").fetchall()] == [
            ("budget", N, N)]
    finally:
        con.close()


#: OpenInference's anthropic instrumentation names these platforms' calls after the cloud ("aws", "azure",
#: "google") where the SDK's own spans and costline's say "anthropic": the lake's call_links reads them as Anthropic's
#: (they would otherwise fall in Bedrock's, OpenAI's and Google's families, and the call count twice).
@pytest.mark.parametrize("platform", PLATFORMS, ids=repr)
def test_claude_on_a_platform_client_traced_by_openinference_too_is_counted_once(standin, cfg, spans, platform):
    openinference_anthropic = pytest.importorskip("openinference.instrumentation.anthropic")
    provider, exporter = spans
    usages = traced_requests(openinference_anthropic.AnthropicInstrumentor(), platform, standin, provider,
                             is_async=False, costline_wrapper=False)
    lake_from_sdk_spans(exporter.get_finished_spans(), cfg)
    want = sum(haiku_usd(u) for u in usages) * platform.multiple
    con = open_lake(cfg)
    try:
        assert con.execute("SELECT count(*), min(calls), max(calls), sum(cost_usd) FROM requests").fetchall() == [
            (N, 1, 1, pytest.approx(want, rel=1e-9))]
    finally:
        con.close()


#: Each platform client beside the cloud client OpenInference names alike ("aws": Bedrock; "google": Vertex AI),
#: in one app request: the platform call is Anthropic's API, the other the cloud's (MODELS: the cloud's model id).
MIXED = [pytest.param("aws", "bedrock", id="aws+bedrock"), pytest.param("google_cloud", "vertex", id="google+vertex")]


@pytest.mark.parametrize(("platform_name", "cloud"), MIXED)
def test_a_platform_call_beside_its_clouds_call_in_one_trace_is_counted_once(standin, cfg, spans, platform_name,
                                                                               cloud):
    """One app request calls Claude through ``AnthropicAWS`` and through Bedrock (or ``AnthropicGoogleCloud`` and
    Vertex AI), traced by the SDK's own spans and OpenInference: OpenInference names both calls after the cloud, and
    the trace has a Bedrock call, yet the platform call (whose response id and model are Anthropic's) is one call,
    and the Bedrock one another: two calls, each priced as served (Bedrock's at its regional price)."""
    openinference_anthropic = pytest.importorskip("openinference.instrumentation.anthropic")
    provider, exporter = spans
    platform = next(p for p in PLATFORMS if p.name == platform_name)
    instrumentor = openinference_anthropic.AnthropicInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        on_platform = platform.client_class(False)(base_url=standin.url + platform.path, max_retries=0,
                                                    open_telemetry={"tracer_provider": provider}, **platform.kwargs)
        on_cloud = cloud_client(cloud, standin, provider)
        recorder = Recorder(provider)
        with recorder.request(task_type="faq", tenant="acme") as req:
            first = ask(on_platform, platform, 0, stream=False).usage
            second = ask_cloud(on_cloud, cloud, 1, stream=False).usage
            req.accept()
    finally:
        instrumentor.uninstrument()
    lake_from_sdk_spans(exporter.get_finished_spans(), cfg)
    con = open_lake(cfg)
    try:
        got = con.execute("SELECT model, cost_usd FROM calls ORDER BY ts").fetchall()
    finally:
        con.close()
    assert [m for m, _ in got] == [platform.model, MODELS[cloud]], got
    assert [c for _, c in got] == [pytest.approx(haiku_usd(first), rel=1e-9),
                                   pytest.approx(haiku_usd(second) * REGIONAL_X[cloud], rel=1e-9)]
