"""Pricing: the article's table, cache-token multipliers, batch, student, unknown models."""

from __future__ import annotations

import pytest

from costline import contract
from costline.config import ModelPrice, PricingConfig
from costline.errors import UnknownModelError
from costline.pricing import EXPLICIT, PRICED, STUDENT, UNKNOWN_MODEL, PricingTable, normalize_model_id

M = 1_000_000


@pytest.mark.parametrize(
    ("model", "inp", "out", "expected_usd"),
    [
        ("claude-fable-5", M, M, 10 + 50),
        ("claude-opus-4-8", M, M, 5 + 25),
        ("claude-sonnet-4-6", M, M, 3 + 15),
        ("claude-haiku-4-5", M, M, 0.80 + 4),
        ("claude-haiku-4-5-20251001", 750, 250, 750 * 0.80e-6 + 250 * 4e-6),
        ("CLAUDE-SONNET-4-6", 1000, 0, 1000 * 3e-6),
    ],
)
def test_article_prices(model: str, inp: int, out: int, expected_usd: float) -> None:
    price = PricingTable().price_call(model=model, provider="anthropic", input_tokens=inp, output_tokens=out)
    assert price.status == PRICED
    assert price.cost_usd == pytest.approx(expected_usd, abs=1e-12)


def test_cache_tokens_are_part_of_input_and_priced_with_multipliers() -> None:
    # 1000 input tokens of which 600 read from cache and 200 written to it: 200 uncached.
    price = PricingTable().price_call(
        model="claude-sonnet-4-6", input_tokens=1000, output_tokens=100,
        cache_read_tokens=600, cache_creation_tokens=200,
    )
    expected = 200 * 3e-6 + 600 * 3e-6 * 0.1 + 200 * 3e-6 * 1.25 + 100 * 15e-6
    assert price.cost_usd == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize("read, write, expected", [
    # Gemini 2.5 Flash: implicit cache reads at a quarter of $0.30, no write charge (the input price)
    pytest.param(0.075, 0.30, (200 * 0.30 + 600 * 0.075 + 200 * 0.30 + 100 * 2.50) / M, id="own-read-and-write"),
    pytest.param(0.075, None, (200 * 0.30 + 600 * 0.075 + 200 * 0.30 * 1.25 + 100 * 2.50) / M, id="own-read-only"),
    pytest.param(None, None, (200 * 0.30 + 600 * 0.30 * 0.1 + 200 * 0.30 * 1.25 + 100 * 2.50) / M, id="multipliers"),
])
def test_a_models_own_cache_prices_replace_the_multipliers(read, write, expected) -> None:
    table = PricingTable(PricingConfig(models=(
        ModelPrice("gemini-2.5-flash", contract.TIER_BUDGET, provider="gcp.gemini", input_per_mtok=0.30,
                   output_per_mtok=2.50, cache_read_per_mtok=read, cache_write_per_mtok=write),
        ModelPrice("claude-sonnet-4-6", contract.TIER_MID, input_per_mtok=3.0, output_per_mtok=15.0))))
    price = table.price_call(model="gemini-2.5-flash", input_tokens=1000, output_tokens=100,
                             cache_read_tokens=600, cache_creation_tokens=200)
    assert price.cost_usd == pytest.approx(expected, abs=1e-15)
    # another model of the same table keeps the multipliers
    other = table.price_call(model="claude-sonnet-4-6", input_tokens=1000, cache_read_tokens=1000)
    assert other.cost_usd == pytest.approx(1000 * 3e-6 * 0.1, abs=1e-15)


def test_batch_is_half_price() -> None:
    table = PricingTable()
    full = table.price_call(model="claude-fable-5", input_tokens=500, output_tokens=500).cost_usd
    half = table.price_call(model="claude-fable-5", input_tokens=500, output_tokens=500, batch=True).cost_usd
    assert half == pytest.approx(full * 0.5)


def test_unknown_model_is_flagged_never_zero() -> None:
    price = PricingTable().price_call(model="gpt-9-turbo", provider="openai", input_tokens=10, output_tokens=10)
    assert price.status == UNKNOWN_MODEL
    assert price.cost_usd is None
    assert price.tier == contract.UNKNOWN_TIER
    with pytest.raises(UnknownModelError, match=r"add it under \[\[pricing.models\]\]"):
        PricingTable().require("gpt-9-turbo")


def test_explicit_cost_overrides_the_table() -> None:
    price = PricingTable().price_call(model="gpt-9-turbo", input_tokens=10, explicit_cost_usd=0.25)
    assert (price.cost_usd, price.status) == (0.25, EXPLICIT)


@pytest.mark.parametrize(
    ("provider", "model", "explicit_tier"),
    [("vllm", "support-lora-v3", None), ("anthropic", "anything", "student")],
)
def test_student_calls_have_no_token_price(provider: str, model: str, explicit_tier: str | None) -> None:
    price = PricingTable().price_call(model=model, provider=provider, input_tokens=999, output_tokens=999,
                                      explicit_tier=explicit_tier)
    assert (price.cost_usd, price.tier, price.status) == (0.0, contract.TIER_STUDENT, STUDENT)


@pytest.mark.parametrize(
    ("model", "tier"),
    [
        ("claude-haiku-4-5-20251001", "budget"),
        ("claude-sonnet-4-6", "mid"),
        ("claude-opus-4-8", "upper"),
        ("claude-fable-5", "frontier"),
        ("anthropic/claude-fable-5", "frontier"),
        ("mystery", "unknown"),
    ],
)
def test_tier_from_registry(model: str, tier: str) -> None:
    assert PricingTable().tier_of("anthropic", model) == tier


def test_explicit_tier_wins() -> None:
    assert PricingTable().tier_of("anthropic", "claude-fable-5", "budget") == "budget"


def test_aliases_and_custom_table() -> None:
    table = PricingTable(PricingConfig(models=(ModelPrice("my-model", "mid", input_per_mtok=2, aliases=("mm",)),)))
    assert table.tier_of(None, "mm") == "mid"
    assert table.price_call(model="mm", input_tokens=M).cost_usd == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("claude-sonnet-4-6@20260101", "claude-sonnet-4-6"),
        ("claude-opus-4-8-latest", "claude-opus-4-8"),
        ("claude-fable-5", "claude-fable-5"),
        # Amazon Bedrock: model ids, cross-region inference profiles, an inference profile's ARN
        ("anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4-5"),
        ("us.anthropic.claude-sonnet-4-6-20260101-v1:0", "claude-sonnet-4-6"),
        ("global.anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4-5"),
        ("arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.anthropic.claude-haiku-4-5-20251001-v1:0",
         "claude-haiku-4-5"),
        ("deepseek-v3", "deepseek"),  # one suffix only for other names, as before
        # routers (OpenRouter, the Vercel AI Gateway) and frameworks (Pydantic AI, LangChain) spell them so
        ("anthropic/claude-haiku-4.5", "claude-haiku-4-5"),
        ("openrouter/anthropic/claude-sonnet-4.6", "claude-sonnet-4-6"),
        ("anthropic/claude-3.5-haiku", "claude-3-5-haiku"),
        ("anthropic/claude-3.7-sonnet:thinking", "claude-3-7-sonnet"),
        ("anthropic/claude-3.5-sonnet:beta", "claude-3-5-sonnet"),
        ("anthropic/claude-sonnet-4.5:online", "claude-sonnet-4-5:online"),  # web results cost more: not the model
        ("anthropic:claude-haiku-4-5", "claude-haiku-4-5"),
        ("anthropic/claude-4-sonnet", "claude-sonnet-4"),  # the Vercel AI Gateway's early version-first ids
        ("anthropic/claude-4.1-opus", "claude-opus-4-1"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),  # Claude 3.x ids put the version first themselves
        ("openai:gpt-4.1-mini", "gpt-4.1-mini"),  # only Claude versions lose their dots
        ("gpt-4.1", "gpt-4.1"),
        ("llama3.1:8b", "llama3.1:8b"),  # an Ollama tag keeps its name
        # OpenAI's snapshots, as OpenAI and Azure OpenAI name the model that answered
        ("gpt-4o-2024-11-20", "gpt-4o"),
        ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
        ("o3-2025-04-16", "o3"),
        ("mistral-large-2411", "mistral-large-2411"),  # no date: a version of its own
    ],
)
def test_normalize_model_id(raw: str, norm: str) -> None:
    assert normalize_model_id(raw) == norm


def test_an_azure_call_is_priced_by_the_dated_model_that_answered() -> None:
    """Azure OpenAI's request model is the deployment's name; the response model is OpenAI's snapshot id. A snapshot
    listed by its own id keeps its own price (gpt-4o's first snapshot cost twice the alias)."""
    table = PricingTable(PricingConfig(models=(
        ModelPrice("gpt-4o", "mid", provider="openai", input_per_mtok=2.5, output_per_mtok=10.0),
        ModelPrice("gpt-4o-2024-05-13", "mid", provider="openai", input_per_mtok=5.0, output_per_mtok=15.0))))
    for answered, usd in (("gpt-4o-2024-11-20", 2.5 + 1.0), ("gpt-4o-2024-05-13", 5.0 + 1.5)):
        price = table.price_call(model="prod-chat", response_model=answered, provider="azure.ai.openai",
                                 input_tokens=M, output_tokens=M // 10)
        assert (price.status, price.cost_usd) == (PRICED, pytest.approx(usd)), answered


@pytest.mark.parametrize("model", ["us.anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4-5@20251001",
                                   "anthropic.claude-haiku-4-5-20251001-v1:0", "anthropic/claude-haiku-4.5",
                                   "anthropic:claude-haiku-4-5"])
def test_a_claude_call_through_a_cloud_or_a_router_is_priced_as_the_model(model: str) -> None:
    # hand-written: 1M input at $0.80 + 100k output at $4 per million (the default table's Haiku 4.5)
    price = PricingTable().price_call(model=model, provider="aws.bedrock", input_tokens=M, output_tokens=M // 10)
    assert (price.status, price.tier) == (PRICED, "budget")
    assert price.cost_usd == pytest.approx(0.8 + 0.4)
