"""Amazon Bedrock's Converse API (``boto3.client("bedrock-runtime")``) through OpenTelemetry's botocore
instrumentation and OpenLLMetry's Bedrock instrumentation, alone and together: each call once, at the price of
what the stand-in served.

Bedrock's ``usage.inputTokens`` excludes the tokens read from and written to the prompt cache (reported beside
it as ``cacheReadInputTokens`` / ``cacheWriteInputTokens``), and ``opentelemetry-instrumentation-botocore``
0.66b2 and ``opentelemetry-instrumentation-bedrock`` 0.62 write it as ``gen_ai.usage.input_tokens`` unchanged:
costline adds the cache back for those scopes, as the GenAI conventions count input. OpenLLMetry's writes the
model without the inference profile's ``us.anthropic.`` (priced as the same model). boto3 retries a throttled call inside the same span: one call, priced by the
attempt that answered. Expected figures: the stand-in's log (sim/standin_bedrock.py) priced with the hand-written
prices below, never costline's pricing code.
"""

from __future__ import annotations

import contextlib
import json

import pytest

from costline.config import Config, LakeConfig, ModelPrice, PricingConfig
from costline.serving.settings import StandInConfig
from costline.sim.standin import StandInServer
from costline.sim.standin_bedrock import BEDROCK

from figures_lake import lake_from_sdk_spans, query_lake as q

boto3 = pytest.importorskip("boto3", reason="boto3 comes with `pip install 'costline[compat]'`")
botocore_instrumentation = pytest.importorskip(
    "opentelemetry.instrumentation.botocore",
    reason="opentelemetry-instrumentation-botocore comes with `pip install 'costline[compat]'`")

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

MODEL = "us.anthropic.claude-haiku-4-5-20251001-v1:0"  # a cross-region inference profile of Claude Haiku 4.5
IN, OUT, READ_X, WRITE_X = 0.80, 4.0, 0.1, 1.25  # USD per MTok; cache read / write as multiples of the input
#: A geography's inference profile (us.) is a regional endpoint: from Claude Sonnet 4.5 and Haiku 4.5 on, AWS bills
#: it 10 % over the global profile (global.), whose prices are Anthropic's list prices.
REGIONAL_X = 1.1
SYSTEM = [{"text": "You answer questions about our refund policy. " * 20}, {"cachePoint": {"type": "default"}}]


@pytest.fixture
def standin():
    srv = StandInServer(StandInConfig(port=0, latency_scale=0.0, min_cache_tokens=100))
    srv.start()
    yield srv
    srv.shutdown()


@pytest.fixture
def cfg(tmp_path) -> Config:
    return Config(lake=LakeConfig(path=tmp_path / "lake"), pricing=PricingConfig(
        models=(ModelPrice("claude-haiku-4-5", "budget", provider="aws.bedrock", input_per_mtok=IN,
                           output_per_mtok=OUT),),
        cache_read_multiplier=READ_X, cache_write_multiplier=WRITE_X, student_usd_per_hour=0.0,
        student_providers=()))


BOTOCORE, OPENLLMETRY = "opentelemetry.instrumentation.botocore.bedrock-runtime", "opentelemetry.instrumentation.bedrock"


@contextlib.contextmanager
def instrumented(names):
    """A provider with the instrumentations ``names`` on it (OpenTelemetry's botocore one, OpenLLMetry's Bedrock
    one, or both) and its in-memory exporter; uninstrumented and shut down on exit."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentors = []
    if BOTOCORE in names:
        instrumentors.append(botocore_instrumentation.BotocoreInstrumentor())
    if OPENLLMETRY in names:
        mod = pytest.importorskip("opentelemetry.instrumentation.bedrock",
                                  reason="opentelemetry-instrumentation-bedrock comes with `pip install 'costline[compat]'`")
        instrumentors.append(mod.BedrockInstrumentor())
    for instrumentor in instrumentors:
        instrumentor.instrument(tracer_provider=provider)
    try:
        yield provider, exporter
    finally:
        for instrumentor in instrumentors:
            instrumentor.uninstrument()
        provider.shutdown()


@pytest.fixture(params=[(BOTOCORE,), (OPENLLMETRY,), (BOTOCORE, OPENLLMETRY)], ids=["botocore", "openllmetry", "both"])
def traced(request):
    """OpenTelemetry's botocore instrumentation, OpenLLMetry's Bedrock instrumentation, or both."""
    with instrumented(request.param) as (provider, exporter):
        tracer = provider.get_tracer("app")

        def app():
            """Both together: each call inside an app's span (a web framework's server span). OpenLLMetry's span of
            a streamed call is not current while botocore's runs: with no span around them, each is a trace of
            its own and, with no response id in either, the call would count twice."""
            return tracer.start_as_current_span("app.request") if len(request.param) > 1 else contextlib.nullcontext()

        yield exporter, set(request.param), app


def client(srv: StandInServer, **config):
    from botocore.config import Config as BotoConfig

    return boto3.client("bedrock-runtime", endpoint_url=srv.url, region_name="us-east-1", aws_access_key_id="x",
                        aws_secret_access_key="y", config=BotoConfig(**config))


def ask(text: str) -> dict:
    return {"modelId": MODEL, "system": SYSTEM, "messages": [{"role": "user", "content": [{"text": text}]}],
            "inferenceConfig": {"maxTokens": 64}}


def served_usd(srv: StandInServer, multiple: float = REGIONAL_X) -> float:
    """What the stand-in served, priced by hand: its log's input includes the cached tokens; every call went to
    the us. profile (a regional endpoint: ``multiple`` x the global prices)."""
    return sum(((e.input_tokens - e.cache_read_tokens - e.cache_creation_tokens) * IN
                + e.cache_read_tokens * IN * READ_X + e.cache_creation_tokens * IN * WRITE_X
                + e.output_tokens * OUT) / 1e6 * multiple for e in srv.log.paid(BEDROCK))


def test_the_stand_in_speaks_converse_as_boto3_reads_it(standin):
    """Bedrock's usage (input without the cache), cachePoint caching, the event stream, Bedrock's errors."""
    c = client(standin, retries={"total_max_attempts": 1})
    first, second = c.converse(**ask("Where is my parcel?")), c.converse(**ask("Where is it now?"))
    assert first["output"]["message"]["content"][0]["text"] and first["stopReason"] == "end_turn"
    u1, u2 = first["usage"], second["usage"]
    assert u1["cacheWriteInputTokens"] > 0 and u1["cacheReadInputTokens"] == 0
    assert u2["cacheReadInputTokens"] == u1["cacheWriteInputTokens"] and u2["cacheWriteInputTokens"] == 0
    assert u2["totalTokens"] == u2["inputTokens"] + u2["cacheReadInputTokens"] + u2["outputTokens"]
    events = list(c.converse_stream(**ask("Stream the refund steps"))["stream"])
    assert [next(iter(e)) for e in events[:1] + events[-3:]] == [
        "messageStart", "contentBlockStop", "messageStop", "metadata"]
    assert "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert events[-1]["metadata"]["usage"]["cacheReadInputTokens"] == u1["cacheWriteInputTokens"]
    standin.bedrock.inject_errors(429)
    with pytest.raises(c.exceptions.ThrottlingException):
        c.converse(**ask("throttled"))
    with pytest.raises(c.exceptions.ValidationException, match="model identifier is invalid"):
        c.converse(modelId="palm-2", messages=[{"role": "user", "content": [{"text": "x"}]}])
    assert [(e.status, e.paid) for e in standin.log.entries(BEDROCK)] == [
        (200, True), (200, True), (200, True), (429, False), (400, False)]


def test_botocore_converse_calls_count_once_at_the_served_price(standin, traced, cfg):
    """Two Converse calls (cache written, then read), a cached ConverseStream, a throttled call boto3 retries
    inside its span, an unknown model: four answered calls at the served price (the cached input added back
    to Bedrock's inputTokens), one failure at $0."""
    exporter, scopes, app = traced
    c = client(standin, retries={"total_max_attempts": 3, "mode": "standard"})
    with app():
        c.converse(**ask("Where is my parcel?"))
    with app():
        c.converse(**ask("Where is it now?"))
    with app():
        for _ in c.converse_stream(**ask("Stream the refund steps"))["stream"]:
            pass
    standin.bedrock.inject_errors(429)
    with app():
        c.converse(**ask("Throttled once, then answered"))
    with app(), pytest.raises(c.exceptions.ValidationException):
        c.converse(modelId="palm-2", messages=[{"role": "user", "content": [{"text": "x"}]}])
    spans = exporter.get_finished_spans()
    assert {s.instrumentation_scope.name for s in spans} - {"app"} == scopes
    lake_from_sdk_spans(spans, cfg)
    paid = standin.log.paid(BEDROCK)
    assert len(paid) == 4 and sum(e.cache_read_tokens for e in paid) > 0 and paid[0].cache_creation_tokens > 0
    assert q(cfg, "SELECT count(*), sum(input_tokens), sum(cache_read_tokens), sum(cache_creation_tokens), "
                  "sum(output_tokens) FROM calls WHERE error_type IS NULL") == [(
        4, sum(e.input_tokens for e in paid), sum(e.cache_read_tokens for e in paid),
        sum(e.cache_creation_tokens for e in paid), sum(e.output_tokens for e in paid))]
    # botocore's span names the inference profile (us.: regional, 1.1 x); OpenLLMetry's Converse span names the model
    # without it (claude-haiku-4-5-…-v1:0) and no response model: where its span is the one kept, the endpoint is
    # unknown and the call is priced at the global prices, a lower bound
    rows = q(cfg, "SELECT input_tokens, cache_read_tokens, cache_creation_tokens, output_tokens, endpoint_scope, "
                  "cost_usd FROM calls WHERE error_type IS NULL")
    seen = {r[4] for r in rows}
    # both: of two spans of one call otherwise alike, the one that names the endpoint is kept (botocore's)
    assert seen == ({None} if scopes == {OPENLLMETRY} else {"regional"})
    for inp, read, write, out, scope, cost in rows:
        hand = ((inp - read - write) * IN + read * IN * READ_X + write * IN * WRITE_X + out * OUT) / 1e6
        assert cost == pytest.approx(hand * (REGIONAL_X if scope == "regional" else 1.0), rel=1e-9)
    assert sum(r[5] for r in rows) == pytest.approx(served_usd(standin, 1.0 if scopes == {OPENLLMETRY} else REGIONAL_X),
                                                    rel=1e-9)
    assert q(cfg, "SELECT model, cost_usd FROM calls WHERE error_type IS NOT NULL") == [("palm-2", 0.0)]


INVOKE_SYSTEM = [{"type": "text", "text": "You answer questions about our refund policy. " * 20,
                  "cache_control": {"type": "ephemeral"}}]


def invoke(c, text: str) -> dict:
    """InvokeModel with an Anthropic Messages body: the usage Bedrock returned (Anthropic's: without the cache)."""
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 64, "system": INVOKE_SYSTEM,
            "messages": [{"role": "user", "content": text}]}
    return json.loads(c.invoke_model(modelId=MODEL, body=json.dumps(body))["body"].read())["usage"]


def test_the_stand_in_answers_invoke_model_with_anthropics_body_and_bedrocks_headers(standin):
    c = client(standin, retries={"total_max_attempts": 1})
    first, second = invoke(c, "Where is my parcel?"), invoke(c, "Where is it now?")
    assert first["cache_creation_input_tokens"] > 0 and second["cache_read_input_tokens"] == first[
        "cache_creation_input_tokens"]
    served = standin.log.paid(BEDROCK)
    assert [(e.input_tokens, e.cache_read_tokens, e.cache_creation_tokens) for e in served] == [
        (u["input_tokens"] + u["cache_read_input_tokens"] + u["cache_creation_input_tokens"],
         u["cache_read_input_tokens"], u["cache_creation_input_tokens"]) for u in (first, second)]
    raw = c.invoke_model(modelId=MODEL, body=json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 8,
                                                          "messages": [{"role": "user", "content": "hi"}]}))
    headers = raw["ResponseMetadata"]["HTTPHeaders"]
    assert int(headers["x-amzn-bedrock-input-token-count"]) == json.loads(raw["body"].read())["usage"]["input_tokens"]
    with pytest.raises(c.exceptions.ValidationException):
        c.invoke_model(modelId=MODEL, body=json.dumps({"messages": []}))


@pytest.mark.parametrize("names", [pytest.param((OPENLLMETRY,), id="openllmetry"),
                                   pytest.param((BOTOCORE, OPENLLMETRY), id="both")])
def test_invoke_model_calls_are_priced_as_served_with_their_cache_from_bedrocks_headers(standin, cfg, names):
    """InvokeModel with Claude's body: OpenLLMetry reads Bedrock's cache-count headers (and the input without
    them), so a cached call is priced as served; with botocore's span beside it (which has no cache counts)
    the span with the most tokens, OpenLLMetry's, is kept."""
    with instrumented(names) as (provider, exporter):
        tracer = provider.get_tracer("app")
        c = client(standin, retries={"total_max_attempts": 1})
        for text in ("Where is my parcel?", "Where is it now?"):
            with tracer.start_as_current_span("POST /ask"):
                invoke(c, text)
    spans = exporter.get_finished_spans()
    lake_from_sdk_spans(spans, cfg)
    paid = standin.log.paid(BEDROCK)
    assert paid[0].cache_creation_tokens > 0 and paid[1].cache_read_tokens > 0
    assert q(cfg, "SELECT count(*), sum(input_tokens), sum(cache_read_tokens), sum(cache_creation_tokens), "
                  "sum(cost_usd) FROM calls") == [(
        2, sum(e.input_tokens for e in paid), sum(e.cache_read_tokens for e in paid),
        sum(e.cache_creation_tokens for e in paid), pytest.approx(served_usd(standin), rel=1e-9))]


def test_botocores_invoke_model_span_has_no_cache_counts(standin, cfg):
    """OpenTelemetry's botocore instrumentation on InvokeModel writes Anthropic's own input (without the cache)
    and no cache count at all: a cached call's cached input is not in its span, so it cannot be priced (what
    costline reads is the uncached part). Use Converse, or OpenLLMetry's instrumentation, for cached Claude calls."""
    with instrumented((BOTOCORE,)) as (_, exporter):
        c = client(standin, retries={"total_max_attempts": 1})
        usages = [invoke(c, t) for t in ("Where is my parcel?", "Where is it now?")]
    lake_from_sdk_spans(exporter.get_finished_spans(), cfg)
    assert q(cfg, "SELECT count(*), sum(input_tokens), sum(cache_read_tokens), sum(cache_creation_tokens) "
                  "FROM calls") == [(2, sum(u["input_tokens"] for u in usages), 0, 0)]
