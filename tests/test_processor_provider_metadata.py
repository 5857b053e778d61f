"""The Vercel AI SDK's ``ai.response.providerMetadata`` (the provider's raw response fields as JSON): the figures
only it holds are read as the anthropic SDK's native spans write them; anything malformed in it is flagged, never
raised, and the span's own attributes win (no broker: span -> row). The end-to-end check with the real AI SDK is
tests/test_ingest_aisdk.py::test_one_hour_writes_searches_and_us_inference_are_priced_from_the_provider_metadata."""

from __future__ import annotations

import json

import pytest

from costline import contract as c
from costline.config import ModelPrice, PricingConfig
from costline.pricing import PricingTable
from costline.processors.records import flatten_span
from costline.sim.synth import span

TID = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
SID = bytes.fromhex("b7ad6b7169203331")
T0 = 1_780_000_000_000_000_000
#: Hand-written: $1 / $5 a million tokens, one-hour writes 2 x, US-only 1.1 x, $10 / 1,000 searches.
PRICING = PricingTable(PricingConfig(models=(ModelPrice("claude-haiku-4-5", "budget", input_per_mtok=1.0,
                                                        output_per_mtok=5.0),),
                                     cache_write_1h_multiplier=2.0, us_inference_multiplier=1.1,
                                     web_search_per_1k=10.0))
#: A genai integration's call span without a write count (its generateObject ones): the input includes the cache
#: (1,000 fresh + 3,000 written).
CHAT = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic", "gen_ai.request.model":
        "claude-haiku-4-5", "gen_ai.usage.input_tokens": 4000, "gen_ai.usage.output_tokens": 100}
USAGE = {"input_tokens": 1000, "output_tokens": 100, "cache_read_input_tokens": 0,
         "cache_creation_input_tokens": 3000, "cache_creation": {"ephemeral_5m_input_tokens": 1000,
                                                                 "ephemeral_1h_input_tokens": 2000},
         "server_tool_use": {"web_search_requests": 3}, "service_tier": "standard", "inference_geo": "us"}


def _row(meta, extra: dict | None = None):
    attrs = dict(CHAT, **(extra or {}))
    if meta is not None:
        attrs["ai.response.providerMetadata"] = meta if isinstance(meta, str) else json.dumps(meta)
    return flatten_span(span("chat claude-haiku-4-5", trace_id=TID, span_id=SID, start_ns=T0, end_ns=T0 + 10**9,
                             attributes=attrs), PRICING, scope="gen_ai")


def test_one_hour_writes_searches_and_geography_come_from_the_raw_usage() -> None:
    row = _row({"anthropic": {"usage": USAGE, "stopSequence": None}})
    # by hand: 1,000 fresh x $1 + 1,000 five-minute writes x $1.25 + 2,000 one-hour x $2 + 100 out x $5, x 1.1; + 3 x $0.01
    want = (1000 * 1.0 + 1000 * 1.25 + 2000 * 2.0 + 100 * 5.0) / 1e6 * 1.1 + 3 * 10.0 / 1000
    assert (row.cache_creation_tokens, row.cache_creation_1h_tokens, row.web_search_requests, row.inference_geo,
            row.service_tier, row.data_quality) == (3000, 2000, 3, "us", "standard", None)
    assert row.cost_usd == pytest.approx(want, rel=1e-12)


def test_the_spans_own_attributes_win() -> None:
    row = _row({"anthropic": {"usage": USAGE}}, {c.ANTHROPIC_USAGE_CACHE_CREATION_1H: 500,
                                                "ai.usage.inputTokenDetails.cacheWriteTokens": 2500,
                                                c.ANTHROPIC_RESPONSE_INFERENCE_GEO: "global"})
    assert (row.cache_creation_tokens, row.cache_creation_1h_tokens, row.inference_geo) == (2500, 500, "global")


def test_openai_responses_served_tier() -> None:
    row = _row({"openai": {"responseId": "resp_1", "serviceTier": "flex"}})
    assert row.service_tier == "flex"


@pytest.mark.parametrize("meta, flag", [
    ("{not json", "ai.response.providerMetadata:not_an_object"),
    ("[1, 2]", "ai.response.providerMetadata:not_an_object"),
    ('"text"', "ai.response.providerMetadata:not_an_object"),
    ("{}" + " " * 70_000, "ai.response.providerMetadata:too_long"),
    ({"anthropic": {"usage": dict(USAGE, cache_creation={"ephemeral_1h_input_tokens": -5})}},
     f"{c.ANTHROPIC_USAGE_CACHE_CREATION_1H}:negative"),
    ({"anthropic": {"usage": dict(USAGE, cache_creation={"ephemeral_1h_input_tokens": "NaN"})}},
     f"{c.ANTHROPIC_USAGE_CACHE_CREATION_1H}:not_finite"),
    ({"anthropic": {"usage": dict(USAGE, server_tool_use={"web_search_requests": True})}},
     f"{c.ANTHROPIC_USAGE_WEB_SEARCH_REQUESTS}:not_a_number"),
    ({"anthropic": {"usage": dict(USAGE, server_tool_use={"web_search_requests": 10**30})}},
     f"{c.ANTHROPIC_USAGE_WEB_SEARCH_REQUESTS}:out_of_range"),
])
def test_malformed_metadata_is_flagged_and_the_call_kept(meta, flag) -> None:
    row = _row(meta)
    assert row is not None and row.input_tokens == 4000 and row.output_tokens == 100
    assert flag in (row.data_quality or ""), row.data_quality


@pytest.mark.parametrize("meta", [
    {"anthropic": "not an object"}, {"anthropic": {"usage": None}}, {"anthropic": {"usage": [1]}},
    {"anthropic": {"usage": {"cache_creation": "x", "inference_geo": 7, "speed": ["fast"]}}}, {"gateway": {"cost": "1"}},
])
def test_metadata_without_the_figures_changes_nothing(meta) -> None:
    assert _row(meta) == _row(None)
