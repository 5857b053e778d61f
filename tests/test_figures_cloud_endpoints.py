"""Claude on a cloud's regional endpoint costs 10 % over its global endpoint (figures, issue 9's kind).

From Claude Sonnet 4.5 and Haiku 4.5 on, Amazon Bedrock and Google Vertex AI sell Claude through global endpoints
(Bedrock's ``global.`` inference profiles, Vertex's ``global`` location) at Anthropic's list prices and through
regional ones (a Bedrock geography profile such as ``us.`` or an in-region model id; a Vertex region such as
``us-east5``) at 1.1 x; older models keep one price wherever they run. Which endpoint a span's call went to is read
off its model id (Bedrock), its URL or server (Vertex), or costline's own ``costline.endpoint_scope``.

Expected values are worked out by hand here from hand-written prices, never with costline's pricing code.
"""

from __future__ import annotations

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

from costline.collectors import Recorder
from costline.collectors.metrics import setup_metrics
from costline.config import CollectorConfig, Config, LakeConfig, ModelPrice, PricingConfig, load_config
from costline.pricing import PricingTable, endpoint_scope

from figures_lake import budget_calls_of_a_day, cost_report_stages

# -- which endpoint a span names ----------------------------------------------------------------------------------
VERTEX_PATH = "/v1/projects/acme/locations/{}/publishers/anthropic/models/claude-haiku-4-5@20251001:rawPredict"
SCOPES = [
    # Bedrock: the model id's inference profile
    ("a geography profile", "us.anthropic.claude-haiku-4-5-20251001-v1:0", None, None, "regional"),
    ("a European profile", "eu.anthropic.claude-sonnet-4-6", None, None, "regional"),
    ("Japan's profile", "jp.anthropic.claude-sonnet-4-6", None, None, "regional"),
    ("a global profile", "global.anthropic.claude-sonnet-4-6", None, None, "global"),
    ("an in-region model id", "anthropic.claude-haiku-4-5-20251001-v1:0", None, None, "regional"),
    ("a profile's ARN", "arn:aws:bedrock:eu-west-1:123456789012:inference-profile/global.anthropic.claude-opus-4-8",
     None, None, "global"),
    ("a foundation model's ARN", "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-sonnet-4-6", None,
     None, "regional"),
    ("an application profile's ARN names no model", "arn:aws:bedrock:us-east-1:123456789012:"
     "application-inference-profile/a1b2c3d4e5", None, None, None),
    ("LiteLLM's spelling", "bedrock/us.anthropic.claude-sonnet-4-6", None, None, "regional"),
    ("upper case", "US.Anthropic.Claude-Sonnet-4-6", None, None, "regional"),
    # Vertex AI: the URL's location, else the host
    ("a Vertex region in the URL", "claude-haiku-4-5@20251001", "127.0.0.1",
     "http://127.0.0.1:8080" + VERTEX_PATH.format("us-east5"), "regional"),
    ("Vertex's global location", "claude-haiku-4-5@20251001", None, VERTEX_PATH.format("global"), "global"),
    ("a regional Vertex host", "claude-haiku-4-5@20251001", "us-east5-aiplatform.googleapis.com", None, "regional"),
    ("the global Vertex host", "claude-haiku-4-5@20251001", "aiplatform.googleapis.com", None, "global"),
    ("a multi-region Vertex host", "claude-haiku-4-5@20251001", "aiplatform.eu.rep.googleapis.com", None, "regional"),
    # nothing said
    ("Anthropic's own API", "claude-haiku-4-5", "api.anthropic.com", "https://api.anthropic.com/v1/messages", None),
    ("OpenRouter's spelling is not Bedrock's", "anthropic/claude-haiku-4.5", None, None, None),
    ("a Vertex model id with no URL", "claude-haiku-4-5@20251001", None, None, None),
    ("a look-alike host", "claude-haiku-4-5", "aiplatform.googleapis.com.evil.example", None, None),
    ("a host with its port", "claude-haiku-4-5@20251001", "us-east5-aiplatform.googleapis.com:443", None,
     "regional"),
    ("mTLS's host", "claude-haiku-4-5@20251001", "aiplatform.mtls.googleapis.com", None, "global"),
    ("Gemini on a Vertex region is not Claude's endpoint", "gemini-2.5-pro", "us-central1-aiplatform.googleapis.com",
     None, None),
    ("no model", None, None, None, None),
]


@pytest.mark.parametrize("model,server,url,scope", [r[1:] for r in SCOPES], ids=[r[0] for r in SCOPES])
def test_the_endpoint_a_span_names(model, server, url, scope):
    assert endpoint_scope(model, server, url) == scope


# -- the price of one call ----------------------------------------------------------------------------------------
# 1,000 input tokens (200 of them cache reads), 100 output; a web search where asked. Prices by hand, USD per MTok:
# "claude-sonnet-4-6" $3 / $15 (split: 1.1 x regional), "claude-sonnet-4" $3 / $15 (older: one price),
# "claude-opus-4-8" $5 / $25 with its own 1.25 x, "eu-sonnet" (an entry priced at a region's prices) with 1 x.
SONNET = (800 * 3 + 200 * 0.3 + 100 * 15) / 1e6
OPUS = (800 * 5 + 200 * 0.5 + 100 * 25) / 1e6
ONE_CALL = [
    ("regional: 1.1 x", "claude-sonnet-4-6", "regional", False, 0, 1.1 * SONNET),
    ("global: the list price", "claude-sonnet-4-6", "global", False, 0, SONNET),
    ("not said: the list price", "claude-sonnet-4-6", None, False, 0, SONNET),
    ("Sonnet 4 predates the split", "claude-sonnet-4", "regional", False, 0, SONNET),
    ("a model's own multiplier", "claude-opus-4-8", "regional", False, 0, 1.25 * OPUS),
    ("an entry with 1 x", "eu-sonnet", "regional", False, 0, SONNET),
    ("regional in a batch: 1.1 x half", "claude-sonnet-4-6", "regional", True, 0, 1.1 * SONNET / 2),
    ("regional with 2 searches: the searches at $10 / 1k, not 1.1 x", "claude-sonnet-4-6", "regional", False, 2,
     1.1 * SONNET + 2 * 0.01),
    ("a two-digit minor version is split too", "claude-opus-4-10", "regional", False, 0, 1.1 * SONNET),
]


def _table(config: PricingConfig | None = None) -> PricingTable:
    return PricingTable(config or PricingConfig(models=(
        ModelPrice("claude-sonnet-4-6", "mid", input_per_mtok=3.0, output_per_mtok=15.0),
        ModelPrice("claude-sonnet-4", "mid", input_per_mtok=3.0, output_per_mtok=15.0),
        ModelPrice("claude-opus-4-10", "upper", input_per_mtok=3.0, output_per_mtok=15.0),
        ModelPrice("claude-opus-4-8", "upper", input_per_mtok=5.0, output_per_mtok=25.0,
                   regional_endpoint_multiplier=1.25),
        ModelPrice("eu-sonnet", "mid", input_per_mtok=3.0, output_per_mtok=15.0, aliases=("claude-sonnet-4-5",),
                   regional_endpoint_multiplier=1.0))))


@pytest.mark.parametrize("model,scope,batch,searches,usd", [r[1:] for r in ONE_CALL], ids=[r[0] for r in ONE_CALL])
def test_the_price_of_one_call(model, scope, batch, searches, usd):
    got = _table().price_call(model=model, provider="aws.bedrock", input_tokens=1000, output_tokens=100,
                              cache_read_tokens=200, endpoint=scope, batch=batch, web_search_requests=searches)
    assert (got.cost_usd, got.status) == (pytest.approx(usd), "priced")


def test_a_cloud_call_is_not_also_billed_as_anthropics_us_only_inference():
    """US-only inference is the Anthropic API's own option; a cloud's regional endpoint is its premium alone (the
    gateway passes inference_geo on to every Anthropic-shaped tier, and a stand-in says it back)."""
    got = _table().price_call(model="claude-sonnet-4-6", provider="gcp.vertex_ai", input_tokens=1000,
                              output_tokens=100, cache_read_tokens=200, inference_geo="us", endpoint="regional")
    assert got.cost_usd == pytest.approx(1.1 * SONNET)


def test_the_multiplier_comes_from_the_file(tmp_path):
    path = tmp_path / "costline.toml"
    path.write_text('[pricing]\nregional_endpoint_multiplier = 1.2\n\n'
                    '[[pricing.models]]\nmodel = "claude-haiku-4-5"\ntier = "budget"\ninput_per_mtok = 1.0\n\n'
                    '[[pricing.models]]\nmodel = "claude-opus-4-8"\ntier = "upper"\ninput_per_mtok = 1.0\n'
                    'regional_endpoint_multiplier = 1.05\n\n'
                    '[[pricing.models]]\nmodel = "claude-opus-4-1"\ntier = "upper"\ninput_per_mtok = 1.0\n')
    table = PricingTable(load_config(path, env={}).pricing)
    for model, usd in (("claude-haiku-4-5", 1.2), ("claude-opus-4-8", 1.05), ("claude-opus-4-1", 1.0)):
        got = table.price_call(model=model, input_tokens=10**6, endpoint="regional")  # a million input tokens
        assert got.cost_usd == pytest.approx(usd), model


# -- costline's own spans and metrics -----------------------------------------------------------------------------
def test_costlines_call_spans_say_the_endpoint_and_its_cost_counter_pays_the_premium():
    """A Bedrock call's span says the endpoint its model id names; one opened with ``endpoint=`` says that (a Vertex
    client's region); the cost counter prices each so."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    reader, exporter = InMemoryMetricReader(), InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    setup = setup_metrics("test", config=CollectorConfig(), readers=[reader], pricing=PricingTable(PricingConfig(
        models=(ModelPrice("claude-haiku-4-5", "budget", input_per_mtok=1.0, output_per_mtok=5.0),))))
    recorder = Recorder(provider, metrics=setup.metrics)
    calls = [("aws.bedrock", "us.anthropic.claude-haiku-4-5-20251001-v1:0", None),
             ("aws.bedrock", "global.anthropic.claude-haiku-4-5-20251001-v1:0", None),
             ("gcp.vertex_ai", "claude-haiku-4-5@20251001", "regional"),
             ("gcp.vertex_ai", "claude-haiku-4-5@20251002", "global"),
             ("anthropic", "claude-haiku-4-5", "sideways")]  # not an endpoint kind: as if unsaid
    for provider_name, model, endpoint in calls:
        with recorder.call(provider_name, model, "budget", endpoint=endpoint) as call:
            call.usage(input_tokens=1000, output_tokens=100)
    spans = {s.attributes["gen_ai.request.model"]: s.attributes.get("costline.endpoint_scope")
             for s in exporter.get_finished_spans()}
    assert spans == {"us.anthropic.claude-haiku-4-5-20251001-v1:0": "regional",
                     "global.anthropic.claude-haiku-4-5-20251001-v1:0": "global",
                     "claude-haiku-4-5@20251001": "regional", "claude-haiku-4-5@20251002": "global",
                     "claude-haiku-4-5": None}
    base = (1000 * 1.0 + 100 * 5.0) / 1e6
    data = reader.get_metrics_data()
    cost = {p.attributes["gen_ai.request.model"]: p.value for rm in data.resource_metrics for sm in rm.scope_metrics
            for m in sm.metrics if m.name == "costline.cost" for p in m.data.data_points}
    assert cost == pytest.approx({"us.anthropic.claude-haiku-4-5-20251001-v1:0": 1.1 * base,
                                  "global.anthropic.claude-haiku-4-5-20251001-v1:0": base,
                                  "claude-haiku-4-5@20251001": 1.1 * base, "claude-haiku-4-5@20251002": base,
                                  "claude-haiku-4-5": base})
    setup.shutdown()


# -- the cost report ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("frontier,multiple", [("claude-fable-5", 1.1), ("claude-opus-4-1", 1.0)])
def test_the_cost_reports_baseline_bills_a_regional_call_at_the_frontiers_regional_price(tmp_path, frontier,
                                                                                        multiple):
    """A request sent to a regional endpoint would go there on the baseline model too: its frontier price x the
    frontier's regional multiple (1.1 for a model the clouds sell at two prices, 1 for an older one)."""
    import datetime as dt

    day = dt.datetime(2026, 11, 7)
    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"), pricing=PricingConfig(
        models=(ModelPrice("claude-haiku-4-5", "budget", input_per_mtok=1.0, output_per_mtok=5.0),
                ModelPrice(frontier, "frontier", input_per_mtok=10.0, output_per_mtok=50.0)),
        student_usd_per_hour=0.0, student_providers=()))
    # 1,000 in, 100 out each, on the budget model
    requests, calls = budget_calls_of_a_day(day, "aws.bedrock", "claude-haiku-4-5", [
        ((1000 * 1.0 + 100 * 5.0) / 1e6 * (1.1 if scope == "regional" else 1.0), {"endpoint_scope": scope})
        for scope in ("regional", "global", None)])
    stages = cost_report_stages(cfg, requests, calls, day)
    # the frontier model: 1,000 * $10 + 100 * $50 = $0.015 a call; routed: what was paid
    assert stages["baseline"] == pytest.approx(0.015 * multiple + 0.015 + 0.015)
    assert stages["routing"] == pytest.approx(0.0015 * 1.1 + 0.0015 + 0.0015)
