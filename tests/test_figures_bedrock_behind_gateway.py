"""An AWS app whose ``boto3.client("bedrock-runtime")`` points at ``costline serve`` and that is traced with
OpenTelemetry's botocore instrumentation (what ADOT installs), alone or with OpenLLMetry's Bedrock instrumentation:
each Converse, ConverseStream and InvokeModel call is counted once, as the gateway's request at the price of the tier
that answered.

Before, the gateway's ``x-amzn-RequestId`` was its plain request id and costline read no response id off botocore's
spans: each call was counted twice, the gateway's request and the app's span as a standalone request priced at the
model the app asked for (Haiku on the us. profile, whatever tier answered). Now the header is the id the request span
records (``msg_costline_<request id>``), which botocore writes as ``aws.request_id``. Real Bedrock's request ids
(UUIDs) are not read: a direct call stays a standalone request of its own, and botocore's span of a direct InvokeModel
call stays paired with OpenLLMetry's span of it (whose id is the body's ``msg_bdrk_…``).

Prices are set here (USD per million tokens: Haiku 0.80 / 4, Sonnet 3 / 15); every expected figure is worked out by
hand from them and the token counts the stand-in logged.
"""

from __future__ import annotations

import contextlib
import json
import uuid

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costline import contract as c
from costline.collectors import Recorder
from costline.serving.gateway.auth import KeyStore
from costline.sim.standin_bedrock import BEDROCK

from figures_lake import anthropic_tiers_config, lake_from_sdk_spans, query_lake as q
from gateways import routed_gateway

boto3 = pytest.importorskip("boto3", reason="boto3 comes with `pip install 'costline[compat]'`")
botocore_instrumentation = pytest.importorskip(
    "opentelemetry.instrumentation.botocore",
    reason="opentelemetry-instrumentation-botocore comes with `pip install 'costline[compat]'`")

from botocore.config import Config as BotoConfig  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402
from test_gateway_bedrock_front import certificate  # noqa: E402,F401 - fixture: a TLS certificate for 127.0.0.1
from test_processor_spellings import _read  # noqa: E402 - one span's attributes read as the processor reads them

MODEL = "us.anthropic.claude-haiku-4-5-20251001-v1:0"  # what the app asks for: the router decides
HAIKU, SONNET = "claude-haiku-4-5", "claude-sonnet-4-6"
PRICES = {HAIKU: (0.80, 4.0), SONNET: (3.0, 15.0)}
#: AWS bills a geography's inference profile (us.) 10 % over the global one for Claude Haiku 4.5: what the app's own
#: span of a call is priced at, as the model it asked for.
REGIONAL_X = 1.1
EASY = "How do I reset my password?"  # under 200 characters: the budget tier
#: 200 characters or more with the word "explain": the mid tier (serving/routing/router.py's rules)
LONG = ("Please explain how refunds work for an annual plan that was upgraded halfway through the year, including "
        "what happens to the unused months of the old plan, when the money arrives, and which invoice shows it.")
BOTOCORE = "opentelemetry.instrumentation.botocore.bedrock-runtime"
OPENLLMETRY = "opentelemetry.instrumentation.bedrock"


@pytest.fixture
def cfg(tmp_path):
    return anthropic_tiers_config(tmp_path / "lake", (HAIKU, *PRICES[HAIKU]), (SONNET, *PRICES[SONNET]))


def _provider(service: str) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@contextlib.contextmanager
def instrumented(names: tuple[str, ...]):
    """The app's provider (service "aws-app") with the real instrumentors ``names`` on it, and its exporter;
    uninstrumented (boto3's clients unpatched for later tests) and shut down on exit."""
    provider, exporter = _provider("aws-app")
    instrumentors = [botocore_instrumentation.BotocoreInstrumentor()]
    if OPENLLMETRY in names:
        instrumentors.append(pytest.importorskip("opentelemetry.instrumentation.bedrock").BedrockInstrumentor())
    try:
        for instrumentor in instrumentors:
            instrumentor.instrument(tracer_provider=provider)
        yield provider, exporter
    finally:
        for instrumentor in instrumentors:
            instrumentor.uninstrument()
        provider.shutdown()


def _price(model: str, tokens_in: int, tokens_out: int) -> float:
    p_in, p_out = PRICES[model]
    return (tokens_in * p_in + tokens_out * p_out) / 1e6


def _as_real_bedrock(client) -> None:
    """Each answer to ``client`` carries an ``x-amzn-RequestId`` UUID, as real Bedrock's do (the stand-in sends
    none)."""
    def add(response_dict, **_):
        response_dict["headers"]["x-amzn-RequestId"] = str(uuid.uuid4())
    client.meta.events.register("before-parse.bedrock-runtime", add)


def _direct(standin, monkeypatch):
    """boto3 straight to the stand-in's Bedrock Runtime API (SigV4 with made-up keys), answering as real Bedrock."""
    monkeypatch.delenv("AWS_BEARER_TOKEN_BEDROCK", raising=False)
    client = boto3.client("bedrock-runtime", region_name="us-east-1", endpoint_url=standin.url,
                          aws_access_key_id="x", aws_secret_access_key="y",
                          config=BotoConfig(retries={"total_max_attempts": 1}))
    _as_real_bedrock(client)
    return client


def _messages(text: str) -> list[dict]:
    return [{"role": "user", "content": [{"text": text}]}]


def _invoke_body(text: str) -> str:
    return json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 200,
                       "messages": [{"role": "user", "content": text}]})


@pytest.fixture
def aws_env(monkeypatch):
    for name in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


@pytest.mark.parametrize("names", [pytest.param((BOTOCORE,), id="botocore"),
                                   pytest.param((BOTOCORE, OPENLLMETRY), id="botocore+openllmetry")])
def test_boto3_through_the_gateway_is_counted_once_at_the_answering_tiers_price(
        standin, tmp_path, certificate, aws_env, cfg, names):  # noqa: F811 - certificate: the fixture imported
    """Converse (budget), ConverseStream of a long "explain" question (mid: Sonnet answers though the app asked for
    Haiku) and InvokeModel (budget) through the gateway, and one Converse straight to Bedrock: 4 requests, 4 calls,
    the gateway's three at their tiers' prices, the direct one standalone at the us. profile's (before: 7 requests,
    the app's three spans of the gateway's calls standalone, at Haiku's regional price)."""
    cert, key = certificate
    keys = tmp_path / "keys.json"
    _, secret = KeyStore(keys).add("acme")
    aws_env.setenv("AWS_BEARER_TOKEN_BEDROCK", secret)
    gw_provider, gw_spans = _provider("costline-gateway")
    before, before_direct = len(standin.log.entries("anthropic")), len(standin.log.entries(BEDROCK))
    with instrumented(names) as (app_provider, app_spans):
        app = app_provider.get_tracer("app")  # the app's server span around each call (as a web framework's)
        with routed_gateway(standin, keys, recorder=Recorder(gw_provider), tls_cert_file=cert, tls_key_file=key,
                            drain_timeout_s=2) as gw:
            with contextlib.closing(boto3.client("bedrock-runtime", region_name="us-east-1", endpoint_url=gw.url,
                                                 verify=str(cert), config=BotoConfig(retries={"max_attempts": 1}))
                                    ) as client:
                with app.start_as_current_span("POST /ask"):
                    answers = [client.converse(modelId=MODEL, messages=_messages(EASY))]
                with app.start_as_current_span("POST /ask"):
                    answers.append(client.converse_stream(modelId=MODEL, messages=_messages(LONG)))
                    events = list(answers[-1]["stream"])
                with app.start_as_current_span("POST /ask"):
                    answers.append(client.invoke_model(modelId=MODEL,
                                                       body=_invoke_body("What are your opening hours?")))
                    assert json.loads(answers[-1]["body"].read())["content"][0]["text"]
        with app.start_as_current_span("POST /ask"):
            own = _direct(standin, aws_env).converse(modelId=MODEL, messages=_messages("Hi there"))
        gw_finished, app_finished = gw_spans.get_finished_spans(), app_spans.get_finished_spans()
    assert "metadata" in events[-1]
    served, direct = standin.log.entries("anthropic")[before:], standin.log.entries(BEDROCK)[before_direct:]
    assert [e.model for e in served] == [HAIKU, SONNET, HAIKU] and len(direct) == 1
    requests = sorted((s for s in gw_finished if s.name == c.SPAN_REQUEST), key=lambda s: s.start_time)
    assert [s.attributes[c.COSTLINE_TIER] for s in requests] == ["budget", "mid", "budget"]
    # one id both sides see: the answer's x-amzn-RequestId (botocore's aws.request_id) is the request span's
    # costline.response.id; x-costline-request-id stays the request id
    headers = [a["ResponseMetadata"]["HTTPHeaders"] for a in answers]
    assert [h["x-amzn-requestid"] for h in headers] == [s.attributes[c.COSTLINE_RESPONSE_ID] for s in requests] == [
        f"msg_costline_{h['x-costline-request-id']}" for h in headers]
    botocore_spans = sorted((s for s in app_finished if s.instrumentation_scope.name == BOTOCORE),
                            key=lambda s: s.start_time)
    assert [s.attributes.get("aws.request_id") for s in botocore_spans] == [
        *(h["x-amzn-requestid"] for h in headers), own["ResponseMetadata"]["RequestId"]]
    assert {s.instrumentation_scope.name for s in app_finished} - {"app"} == set(names)

    lake_from_sdk_spans([*gw_finished, *app_finished], cfg)
    gateway_usd = [_price(e.model, e.input_tokens, e.output_tokens) for e in served]
    direct_usd = _price(HAIKU, direct[0].input_tokens, direct[0].output_tokens) * REGIONAL_X
    assert q(cfg, "SELECT tier, standalone, calls, cost_usd FROM requests ORDER BY ts") == [
        ("budget", False, 1, pytest.approx(gateway_usd[0], rel=1e-9)),
        ("mid", False, 1, pytest.approx(gateway_usd[1], rel=1e-9)),
        ("budget", False, 1, pytest.approx(gateway_usd[2], rel=1e-9)),
        ("budget", True, 1, pytest.approx(direct_usd, rel=1e-9))]  # the app's own call to Bedrock
    assert q(cfg, "SELECT count(*), sum(cost_usd) FROM calls") == [
        (4, pytest.approx(sum(gateway_usd) + direct_usd, rel=1e-9))]


def test_a_failed_call_through_the_gateway_is_counted_once(standin, tmp_path, certificate, aws_env, cfg):  # noqa: F811
    """Every tier's call refused (400): the gateway's answer is Bedrock's ValidationException, with the request
    span's id as x-amzn-RequestId as on a success (Bedrock sends it on errors too). One failed request, the
    gateway's (its attempts its calls); the app's failed botocore span of it is no request of its own (before: its
    error answer had no x-amzn-RequestId, and the app's span was a second, standalone failed request)."""
    cert, key = certificate
    keys = tmp_path / "keys.json"
    _, secret = KeyStore(keys).add("acme")
    aws_env.setenv("AWS_BEARER_TOKEN_BEDROCK", secret)
    gw_provider, gw_spans = _provider("costline-gateway")
    with instrumented((BOTOCORE,)) as (app_provider, app_spans):
        with routed_gateway(standin, keys, recorder=Recorder(gw_provider), tls_cert_file=cert, tls_key_file=key,
                            drain_timeout_s=2) as gw:
            with contextlib.closing(boto3.client("bedrock-runtime", region_name="us-east-1", endpoint_url=gw.url,
                                                 verify=str(cert), config=BotoConfig(retries={"max_attempts": 1}))
                                    ) as client, app_provider.get_tracer("app").start_as_current_span("POST /ask"):
                standin.inject_errors(400, 10)
                try:
                    with pytest.raises(ClientError) as refused:
                        client.converse(modelId=MODEL, messages=_messages(EASY))
                finally:
                    standin.clear_errors()
        gw_finished, app_finished = gw_spans.get_finished_spans(), app_spans.get_finished_spans()
    (request,) = [s for s in gw_finished if s.name == c.SPAN_REQUEST]
    header = refused.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    assert header == request.attributes[c.COSTLINE_RESPONSE_ID]
    (failed,) = [s for s in app_finished if s.instrumentation_scope.name == BOTOCORE]
    assert failed.attributes.get("aws.request_id") == header
    lake_from_sdk_spans([*gw_finished, *app_finished], cfg)
    assert q(cfg, "SELECT service_name, standalone, success FROM requests") == [("costline-gateway", False, False)]


def test_direct_calls_to_bedrock_with_both_instrumentations_count_once(standin, aws_env, cfg):
    """Straight to Bedrock (answers with an x-amzn-RequestId UUID), botocore's and OpenLLMetry's instrumentations
    together: an InvokeModel call (OpenLLMetry's span has the body's msg_bdrk_… id, botocore's none) and a Converse
    call (neither has an id) are one call each, one standalone request each, at the us. profile's price. Reading
    Bedrock's own request ids as response ids would part InvokeModel's two spans: two calls."""
    pytest.importorskip("opentelemetry.instrumentation.bedrock")
    before = len(standin.log.entries(BEDROCK))
    with instrumented((BOTOCORE, OPENLLMETRY)) as (provider, exporter):
        app, client = provider.get_tracer("app"), _direct(standin, aws_env)
        with app.start_as_current_span("POST /ask"):
            answer = client.invoke_model(modelId=MODEL, body=_invoke_body("Where is my parcel?"))
            body = json.loads(answer["body"].read())
        with app.start_as_current_span("POST /ask"):
            client.converse(modelId=MODEL, messages=_messages("Where is it now?"))
        spans = exporter.get_finished_spans()
    assert body["id"].startswith("msg_bdrk_")
    assert all(s.attributes.get("aws.request_id") for s in spans if s.instrumentation_scope.name == BOTOCORE)
    served = standin.log.entries(BEDROCK)[before:]
    assert len(served) == 2 and all(e.cache_read_tokens == e.cache_creation_tokens == 0 for e in served)
    lake_from_sdk_spans(spans, cfg)
    want = [_price(HAIKU, e.input_tokens, e.output_tokens) * REGIONAL_X for e in served]
    assert q(cfg, "SELECT standalone, calls, cost_usd FROM requests ORDER BY ts") == [
        (True, 1, pytest.approx(w, rel=1e-9)) for w in want]


@pytest.mark.parametrize("scope, attributes, response_id", [
    (BOTOCORE, {"aws.request_id": "msg_costline_0e02"}, "msg_costline_0e02"),  # the gateway's answer
    (BOTOCORE, {"aws.request_id": "bc971daf-bea2-4d89-a74b-20ea3a7a7537"}, None),  # real Bedrock's: not an identity
    (BOTOCORE, {"aws.request_id": "msg_costline_0e02", "gen_ai.response.id": "msg_1"}, "msg_1"),  # its own first
    ("opentelemetry.instrumentation.botocore.dynamodb", {"aws.request_id": "msg_costline_0e02"}, None),
    (OPENLLMETRY, {"aws.request_id": "msg_costline_0e02"}, None),
])
def test_which_aws_request_id_is_a_response_id(scope, attributes, response_id):
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.system": "aws.bedrock", "gen_ai.request.model": MODEL,
             "gen_ai.usage.input_tokens": 7, "gen_ai.usage.output_tokens": 51, **attributes}
    reading, bad = _read(attrs, f"chat {MODEL}", scope)
    assert reading is not None and reading.response_id == response_id and not bad
