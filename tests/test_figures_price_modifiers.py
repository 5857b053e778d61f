"""What the API says changed the price of a call: one-hour prompt-cache writes, batch and flex service tiers.

Anthropic bills a cache write with a one-hour lifetime (``cache_control: {"type": "ephemeral", "ttl": "1h"}``)
at 2 x the input price, a five-minute one at 1.25 x; its usage splits the writes by lifetime
(``usage.cache_creation.ephemeral_1h_input_tokens``). OpenAI bills ``service_tier: "flex"`` at Batch API prices;
Anthropic's Message Batches report ``usage.service_tier: "batch"``. Agent loops (Claude Code among them) write
their context with the one-hour lifetime, so pricing every write at 1.25 x understated those writes by 37.5 %.

The calls are made by the real SDKs and instrumentations (the anthropic SDK's native spans, costline's wrappers,
Pydantic AI, ``opentelemetry-instrumentation-openai-v2``) and the gateway, against costline's stand-in; the
expected dollars are computed here from the responses' usage and hand-written prices, never with costline's
pricing code.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from costline.collectors import Recorder, instrument_anthropic, instrument_openai
from costline.config import Config, ConfigError, LakeConfig, ModelPrice, PricingConfig, load_config
from costline.pricing import PricingTable

from figures_lake import cost_report_stages, lake_from_sdk_spans, note_unpriced, query_lake as q
from sdk_hygiene import pristine_sdks, restore_sdk_classes, sdk_class_attributes  # noqa: F401 (autouse fixture)

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")

# Hand-written prices, USD per million tokens (not costline's defaults, so nothing leaks from them).
HAIKU_IN, HAIKU_OUT = 1.0, 5.0
GPT_IN, GPT_OUT = 0.5, 2.0
STUDENT_MODEL = "costline-student"  # the stand-in's OpenAI-compatible model, priced here as a paid API model
SYSTEM = "You answer questions about our refund policy. " * 60  # long enough to be prompt-cached
RULES = "Shipping rules: parcels leave the warehouse within two days. " * 40


@pytest.fixture(scope="module")
def standin(cache_standin):
    return cache_standin


@pytest.fixture
def cfg(tmp_path) -> Config:
    return Config(lake=LakeConfig(path=tmp_path / "lake"), pricing=PricingConfig(
        models=(ModelPrice("claude-haiku-4-5", "budget", input_per_mtok=HAIKU_IN, output_per_mtok=HAIKU_OUT),
                ModelPrice(STUDENT_MODEL, "budget", provider="openai", input_per_mtok=GPT_IN,
                           output_per_mtok=GPT_OUT)),
        student_usd_per_hour=0.0, student_providers=()))


def haiku_usd(u) -> float:
    """Anthropic's usage (input_tokens excludes the cache): reads 0.1 x, five-minute writes 1.25 x, one-hour 2 x."""
    read, write = u.cache_read_input_tokens or 0, u.cache_creation_input_tokens or 0
    one_hour = u.cache_creation.ephemeral_1h_input_tokens if u.cache_creation is not None else 0
    return (u.input_tokens * HAIKU_IN + read * HAIKU_IN * 0.1 + (write - one_hour) * HAIKU_IN * 1.25
            + one_hour * HAIKU_IN * 2.0 + u.output_tokens * HAIKU_OUT) / 1e6


# -- the price of one call --------------------------------------------------------------------------------------
# model "m": $2 in, $10 out per MTok. Each row: (input incl. cache, output, read, write, of which 1h, batch,
# model's own 1h price, USD worked out by hand).
PRICES = [
    # 400 fresh * 2 + 200 five-minute writes * 2.5 + 400 one-hour writes * 4 + 100 out * 10
    ("one-hour and five-minute writes", 1000, 100, 0, 600, 400, False, None, (800 + 500 + 1600 + 1000) / 1e6),
    ("only five-minute writes", 1000, 100, 0, 600, 0, False, None, (800 + 1500 + 1000) / 1e6),
    # 300 fresh * 2 + 100 reads * 0.2 + 600 one-hour writes * 4 + 50 out * 10
    ("reads and one-hour writes", 1000, 50, 100, 600, 600, False, None, (600 + 20 + 2400 + 500) / 1e6),
    ("more one-hour tokens than writes: all the writes", 1000, 0, 0, 600, 9000, False, None, (800 + 2400) / 1e6),
    ("one-hour tokens without writes: nothing to reprice", 1000, 0, 0, 0, 500, False, None, 2000 / 1e6),
    ("the model's own one-hour price ($3)", 1000, 0, 0, 600, 400, False, 3.0, (800 + 500 + 1200) / 1e6),
    ("a batch call: half of it all", 1000, 100, 0, 600, 400, True, None, (800 + 500 + 1600 + 1000) / 2e6),
]


@pytest.mark.parametrize("inp,out,read,write,one_hour,batch,own_1h,usd",
                         [p[1:] for p in PRICES], ids=[p[0] for p in PRICES])
def test_the_price_of_one_call(inp, out, read, write, one_hour, batch, own_1h, usd):
    table = PricingTable(PricingConfig(models=(ModelPrice("m", "budget", input_per_mtok=2.0, output_per_mtok=10.0,
                                                          cache_write_1h_per_mtok=own_1h),)))
    price = table.price_call(model="m", input_tokens=inp, output_tokens=out, cache_read_tokens=read,
                             cache_creation_tokens=write, cache_creation_1h_tokens=one_hour, batch=batch)
    assert (price.cost_usd, price.status) == (pytest.approx(usd, rel=1e-12), "priced")


# model "g" (Gemini 2.5 Pro's shape): $1.25 in, $10 out, cache reads $0.3125; over 200,000 input tokens (cached
# ones included) $2.50 in, $15 out, and the cache reads scaled as the input: $0.625. Rows: (input incl. cache,
# output, reads, writes, USD worked out by hand).
LONG = [
    ("at the threshold: the short prices", 200_000, 1000, 0, 0, (250_000 + 10_000) / 1e6),
    ("one token over: all of it at the long prices", 200_001, 1000, 0, 0, (500_002.5 + 15_000) / 1e6),
    ("cache reads count toward the threshold", 210_000, 0, 60_000, 0, (375_000 + 37_500) / 1e6),
    ("long, with reads and five-minute writes (1.25 x the long input)", 250_000, 2000, 100_000, 40_000,
     (110_000 * 2.5 + 100_000 * 0.625 + 40_000 * 3.125 + 30_000) / 1e6),
    ("short, with reads", 150_000, 2000, 100_000, 0, (62_500 + 31_250 + 20_000) / 1e6),
]


@pytest.mark.parametrize("inp,out,read,write,usd", [p[1:] for p in LONG], ids=[p[0] for p in LONG])
def test_the_long_prompt_band(inp, out, read, write, usd):
    table = PricingTable(PricingConfig(models=(ModelPrice(
        "g", "frontier", provider="gcp.gemini", input_per_mtok=1.25, output_per_mtok=10.0, cache_read_per_mtok=0.3125,
        long_context_above_tokens=200_000, long_input_per_mtok=2.5, long_output_per_mtok=15.0),)))
    price = table.price_call(model="g", input_tokens=inp, output_tokens=out, cache_read_tokens=read,
                             cache_creation_tokens=write)
    assert price.cost_usd == pytest.approx(usd, rel=1e-12)


@pytest.mark.parametrize("toml,key", [
    ('[[pricing.models]]\nmodel = "g"\ntier = "frontier"\ninput_per_mtok = 1.0\nlong_input_per_mtok = 2.0\n',
     "long_context_above_tokens"),
    ('[[pricing.models]]\nmodel = "g"\ntier = "frontier"\ninput_per_mtok = 1.0\nlong_context_above_tokens = 0\n'
     'long_input_per_mtok = 2.0\nlong_output_per_mtok = 3.0\n', "long_context_above_tokens"),
    ('[[pricing.models]]\nmodel = "g"\ntier = "frontier"\ninput_per_mtok = 1.0\nlong_context_above_tokens = 200000\n'
     'long_input_per_mtok = -2.0\nlong_output_per_mtok = 3.0\n', "long_input_per_mtok"),
    ('[[pricing.models]]\nmodel = "o"\ntier = "upper"\nfast_multiplier = -6\n', "fast_multiplier"),
    ('[[pricing.models]]\nmodel = "o"\ntier = "upper"\nweb_search_per_1k = nan\n', "web_search_per_1k"),
    ("[pricing]\nweb_search_per_1k = -10\n", "web_search_per_1k"),
    ("[pricing]\ncache_write_1h_multiplier = -1\n", "cache_write_1h_multiplier"),
    ('[[pricing.models]]\nmodel = "m"\ntier = "budget"\ninput_per_mtok = 1.0\ncache_write_1h_per_mtok = -2.0\n',
     "cache_write_1h_per_mtok"),
    ('[[pricing.models]]\nmodel = "m"\ntier = "budget"\ninput_per_mtok = 1.0\ncache_write_1h_per_mtok = "two"\n',
     "cache_write_1h_per_mtok"),
])
def test_a_bad_one_hour_price_is_refused_by_its_key(tmp_path, toml, key):
    path = tmp_path / "costline.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=key):
        load_config(path, env={})


def test_the_one_hour_price_comes_from_the_file(tmp_path):
    path = tmp_path / "costline.toml"
    path.write_text('[pricing]\ncache_write_1h_multiplier = 3.0\n[[pricing.models]]\nmodel = "m"\ntier = "budget"\n'
                    'input_per_mtok = 1.0\n[[pricing.models]]\nmodel = "n"\ntier = "mid"\ninput_per_mtok = 1.0\n'
                    'cache_write_1h_per_mtok = 1.5\n')
    table = PricingTable(load_config(path, env={}).pricing)
    for model, usd in (("m", 3.0), ("n", 1.5)):  # a million one-hour writes and nothing else
        got = table.price_call(model=model, input_tokens=10**6, cache_creation_tokens=10**6,
                               cache_creation_1h_tokens=10**6)
        assert got.cost_usd == pytest.approx(usd)


# -- the SDKs and instrumentations, against the stand-in -------------------------------------------------------
def _cached_system(ttl_first: str | None, ttl_second: str | None) -> list[dict]:
    """A system prompt of two cached blocks (the API wants one-hour breakpoints before five-minute ones)."""
    blocks = []
    for text, ttl in ((SYSTEM, ttl_first), (RULES, ttl_second)):
        block = {"type": "text", "text": text}
        if ttl is not None:
            block["cache_control"] = {"type": "ephemeral", **({"ttl": ttl} if ttl != "5m" else {})}
        blocks.append(block)
    return blocks


#: (first block's ttl, second's): every write one hour, a mix, every write five minutes
LIFETIMES = [("1h", "1h"), ("1h", "5m"), ("5m", None)]


def _anthropic_traffic(client, tag: str, stream: bool = False) -> list:
    """Per lifetime mix: a first call writes the prompt, a second reads it; returns the usages served."""
    usages = []
    for first, second in LIFETIMES:
        system = _cached_system(first, second)
        system[0]["text"] = f"[{tag} {first}/{second}] " + system[0]["text"]  # its own prefix: written anew
        for question in ("Can I return a damaged item?", "And a used one?"):
            kwargs = dict(model="claude-haiku-4-5", max_tokens=64, system=system,
                          messages=[{"role": "user", "content": question}])
            if stream:
                with client.messages.stream(**kwargs) as s:
                    assert "".join(s.text_stream)  # read as an app reads it, to the end
                    usages.append(s.get_final_message().usage)
            else:
                usages.append(client.messages.create(**kwargs).usage)
    return usages


def _check_the_served_split(usages) -> None:
    one_hour = [u.cache_creation.ephemeral_1h_input_tokens for u in usages]
    writes = [u.cache_creation_input_tokens for u in usages]
    assert one_hour[0] == writes[0] > 0  # all one-hour
    assert 0 < one_hour[2] < writes[2]  # a mix
    assert one_hour[4] == 0 < writes[4]  # all five-minute
    assert usages[1].cache_read_input_tokens > 0 and usages[1].cache_creation_input_tokens == 0


def test_the_anthropic_sdks_own_spans_price_one_hour_writes_at_twice_the_input(standin, cfg, spans):
    provider, exporter = spans
    client = anthropic.Anthropic(base_url=standin.url, api_key="test", max_retries=0,
                                 open_telemetry={"tracer_provider": provider})
    usages = _anthropic_traffic(client, "sdk")
    _check_the_served_split(usages)
    sdk_spans = exporter.get_finished_spans()
    assert {s.instrumentation_scope.name for s in sdk_spans} == {"com.anthropic.sdk.python"}
    assert any(s.attributes.get("anthropic.usage.cache_creation.ephemeral_1h_input_tokens") for s in sdk_spans)
    lake_from_sdk_spans(sdk_spans, cfg)
    assert q(cfg, "SELECT count(*), sum(cost_usd), sum(cache_creation_1h_tokens), sum(cache_creation_tokens) "
                  "FROM calls") == [(6, pytest.approx(sum(haiku_usd(u) for u in usages), rel=1e-9),
                                     sum(u.cache_creation.ephemeral_1h_input_tokens for u in usages),
                                     sum(u.cache_creation_input_tokens for u in usages))]


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_costlines_wrapper_records_the_one_hour_writes(standin, cfg, spans, stream):
    provider, exporter = spans
    client = anthropic.Anthropic(base_url=standin.url, api_key="test", max_retries=0)
    instrument_anthropic(client, Recorder(provider))
    usages = _anthropic_traffic(client, f"wrapper-{stream}", stream=stream)
    _check_the_served_split(usages)
    calls = [s for s in exporter.get_finished_spans() if s.name != "costline.request"]
    assert [s.attributes.get("anthropic.usage.cache_creation.ephemeral_1h_input_tokens", 0) for s in calls] == [
        u.cache_creation.ephemeral_1h_input_tokens for u in usages]
    lake_from_sdk_spans(exporter.get_finished_spans(), cfg)
    assert q(cfg, "SELECT count(*), sum(cost_usd) FROM calls") == [
        (6, pytest.approx(sum(haiku_usd(u) for u in usages), rel=1e-9))]


def _pydantic_ai_runs(standin, provider, questions, **agent_kwargs) -> None:
    """Pydantic AI's Anthropic model, instrumented, through the real AsyncAnthropic client to the stand-in."""
    pytest.importorskip("pydantic_ai")
    import asyncio

    from pydantic_ai import Agent, InstrumentationSettings
    from pydantic_ai.models.anthropic import AnthropicModel
    from pydantic_ai.providers.anthropic import AnthropicProvider

    async def runs() -> None:
        client = anthropic.AsyncAnthropic(base_url=standin.url, api_key="test", max_retries=0)
        agent = Agent(AnthropicModel("claude-haiku-4-5", provider=AnthropicProvider(anthropic_client=client)),
                      **agent_kwargs)
        agent.instrument = InstrumentationSettings(tracer_provider=provider)
        for question in questions:
            await agent.run(question)

    standin.log.clear()
    asyncio.run(runs())


def test_pydantic_ai_one_hour_cached_instructions_are_priced_as_such(standin, cfg, spans):
    """Pydantic AI writes the split as ``gen_ai.usage.details.ephemeral_1h_input_tokens``."""
    pytest.importorskip("pydantic_ai")
    from pydantic_ai.models.anthropic import AnthropicModelSettings

    provider, exporter = spans
    _pydantic_ai_runs(standin, provider, ("Where is my parcel?", "Where is my parcel now?"),
                      system_prompt="Pydantic AI, one hour. " + SYSTEM,
                      model_settings=AnthropicModelSettings(anthropic_cache_instructions="1h", max_tokens=64))
    chats = [s for s in exporter.get_finished_spans() if s.attributes.get("gen_ai.operation.name") == "chat"]
    assert [s.attributes.get("gen_ai.usage.details.ephemeral_1h_input_tokens", 0) > 0 for s in chats] == [True, False]
    paid = standin.log.paid()
    assert len(paid) == 2 and paid[0].cache_creation_tokens > 0 and paid[1].cache_read_tokens > 0
    lake_from_sdk_spans(exporter.get_finished_spans(), cfg)
    # the stand-in's log: all of the first call's writes were one-hour ones (its only breakpoint said so)
    want = sum(((e.input_tokens - e.cache_read_tokens - e.cache_creation_tokens) * HAIKU_IN
                + e.cache_read_tokens * HAIKU_IN * 0.1 + e.cache_creation_tokens * HAIKU_IN * 2.0
                + e.output_tokens * HAIKU_OUT) / 1e6 for e in paid)
    assert q(cfg, "SELECT count(*), sum(cost_usd), sum(cache_creation_1h_tokens) FROM calls") == [
        (2, pytest.approx(want, rel=1e-9), paid[0].cache_creation_tokens)]


def _gpt_usd(usage, flex: bool) -> float:
    return (usage.prompt_tokens * GPT_IN + usage.completion_tokens * GPT_OUT) / 1e6 * (0.5 if flex else 1.0)


@pytest.mark.parametrize("tier", ["flex", "default", None])
def test_openai_flex_calls_are_billed_at_batch_prices(standin, cfg, spans, tier):
    """``opentelemetry-instrumentation-openai-v2`` writes ``openai.response.service_tier``; costline's wrapper
    writes the same. A flex call costs half (OpenAI: "Tokens are priced at Batch API rates")."""
    openai_v2 = pytest.importorskip("opentelemetry.instrumentation.openai_v2")
    provider, exporter = spans
    extra = {"service_tier": tier} if tier else {}
    instrumentor = openai_v2.OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        client = openai.OpenAI(base_url=standin.openai_url, api_key="test", max_retries=0)
        usages = [client.chat.completions.create(model=STUDENT_MODEL, messages=[
            {"role": "user", "content": f"Classify ticket {i}"}], **extra).usage for i in range(3)]
    finally:
        instrumentor.uninstrument()
    wrapped = openai.OpenAI(base_url=standin.openai_url, api_key="test", max_retries=0)
    instrument_openai(wrapped, Recorder(provider), provider="openai")  # OpenAI's API (costline's default: vLLM)
    streamed = wrapped.chat.completions.create(model=STUDENT_MODEL, stream=True, stream_options={"include_usage": True},
                                               messages=[{"role": "user", "content": "Classify ticket 9"}], **extra)
    usages += [chunk.usage for chunk in streamed if chunk.usage is not None]
    finished = [s for s in exporter.get_finished_spans() if s.name != "costline.request"]
    assert len(finished) == 4 and len(usages) == 4
    assert {s.attributes.get("openai.response.service_tier") for s in finished} == {
        None if tier is None else tier}
    lake_from_sdk_spans(exporter.get_finished_spans(), cfg)
    flex = tier == "flex"
    assert q(cfg, "SELECT count(*), sum(cost_usd), bool_and(batch) = ? FROM calls".replace("?", str(flex).lower())) \
        == [(4, pytest.approx(sum(_gpt_usd(u, flex) for u in usages), rel=1e-9), True)]


def test_an_anthropic_batch_tier_span_is_billed_at_batch_prices(cfg):
    """The anthropic SDK's native span of a Message Batches result says ``anthropic.response.service_tier`` =
    "batch"; a "standard" one is not discounted, nor is another provider's "batch"."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("com.anthropic.sdk.python")
    for i, (system, tier) in enumerate((("anthropic", "batch"), ("anthropic", "standard"), ("anthropic", None),
                                        ("openai", "batch"))):
        with tracer.start_as_current_span(f"chat claude-haiku-4-5 #{i}") as s:
            s.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.provider.name": system,
                              "gen_ai.request.model": "claude-haiku-4-5", "gen_ai.usage.input_tokens": 1000,
                              "gen_ai.usage.output_tokens": 200, **({"anthropic.response.service_tier": tier}
                                                                     if tier else {})})
    lake_from_sdk_spans(exporter.get_finished_spans(), cfg)
    full = (1000 * HAIKU_IN + 200 * HAIKU_OUT) / 1e6
    assert q(cfg, "SELECT batch, cost_usd FROM calls ORDER BY cost_usd, batch") == [
        (True, pytest.approx(full / 2)), (False, pytest.approx(full)), (False, pytest.approx(full)),
        (False, pytest.approx(full))]


# -- the gateway -------------------------------------------------------------------------------------------------
def test_the_gateway_passes_the_split_on_and_prices_it(standin, cfg, spans, tmp_path):
    """An app on the anthropic SDK behind ``costline serve``: its usage shows the API's split of the writes, and
    the gateway's own call spans price the one-hour ones at 2 x (the default prices: Haiku $0.80 in, $4 out)."""
    from gateways import anthropic_client, routed_gateway

    provider, exporter = spans
    with routed_gateway(standin, tmp_path / "keys.json", recorder=Recorder(provider)) as gw:
        usages = _anthropic_traffic(anthropic_client(gw, "anthropic", "acme"), "gateway")
    _check_the_served_split(usages)
    lake_from_sdk_spans(exporter.get_finished_spans(), cfg.replace(pricing=PricingConfig()))
    want = sum((u.input_tokens * 0.8 + (u.cache_read_input_tokens or 0) * 0.08
                + (u.cache_creation_input_tokens - u.cache_creation.ephemeral_1h_input_tokens) * 1.0
                + u.cache_creation.ephemeral_1h_input_tokens * 1.6 + u.output_tokens * 4.0) / 1e6 for u in usages)
    assert q(cfg, "SELECT count(*), sum(cost_usd), sum(cache_creation_1h_tokens) FROM calls") == [
        (6, pytest.approx(want, rel=1e-9), sum(u.cache_creation.ephemeral_1h_input_tokens for u in usages))]


# -- the lake and the reports ------------------------------------------------------------------------------------
DAY = dt.datetime(2026, 11, 7)


def test_the_cost_reports_baseline_prices_one_hour_writes_and_searches_at_the_frontiers_prices(tmp_path):
    """The stacking table reprices each call at the frontier model: its one-hour writes at 2 x its input, its web
    searches at its search price."""
    from costline.processors.records import CallRow, RequestRow

    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"), pricing=PricingConfig(student_usd_per_hour=0.0))
    ts = int(DAY.replace(hour=1, tzinfo=dt.timezone.utc).timestamp() * 1_000_000)
    request = RequestRow("R1", "t-R1", "s-R1", ts, "acme", "faq", "x", "budget", "budget", False, 1, 0, True, None, 5.0,
                         None, None, 0, 0)
    # 1,000 input tokens: 100 fresh, 900 written, 600 of them for an hour; 100 out; 2 web searches
    call = CallRow("c-R1", "t-R1", "s-R1", "R1", ts, "chat", "anthropic", "claude-haiku-4-5", "claude-haiku-4-5",
                   "budget", 1000, 100, 0, 900, False, ["stop"], None, 0.02258, "priced", "2026-06", 5.0, None, None,
                   0, 1, None, None, None, 600, 2)
    # claude-fable-5, $10 in / $50 out: 100 * 10 + 300 * 12.5 + 600 * 20 + 100 * 50, and the searches at $10 / 1,000
    assert cost_report_stages(cfg, [request], [call], DAY)["baseline"] == pytest.approx(
        (1000 + 3750 + 12000 + 5000) / 1e6 + 2 * 0.01)


def test_litellms_usage_object_gives_the_one_hour_writes(cfg):
    """LiteLLM's OpenTelemetry callback writes no cache attribute: its usage dict's repr (``metadata.usage_object``)
    carries ``cache_creation_token_details`` with the split."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    usage = {"completion_tokens": 100, "prompt_tokens": 1000, "total_tokens": 1100,
             "prompt_tokens_details": {"cached_tokens": 0, "cache_creation_tokens": 900},
             "cache_creation_input_tokens": 900, "cache_read_input_tokens": 0,
             "cache_creation_token_details": {"ephemeral_5m_input_tokens": 300, "ephemeral_1h_input_tokens": 600}}
    with provider.get_tracer("litellm").start_as_current_span("litellm_request") as s:
        s.set_attributes({"gen_ai.system": "anthropic", "gen_ai.request.model": "claude-haiku-4-5",
                          "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 100,
                          "metadata.usage_object": repr(usage)})
    lake_from_sdk_spans(exporter.get_finished_spans(), cfg)
    # 100 fresh + 300 five-minute writes * 1.25 + 600 one-hour writes * 2, $1 in; 100 out at $5
    assert q(cfg, "SELECT cost_usd, cache_creation_1h_tokens FROM calls") == [
        (pytest.approx((100 + 375 + 1200 + 500) / 1e6), 600)]


@pytest.mark.parametrize("one_hour", [float("nan"), -5, "600"])
def test_an_unusable_one_hour_count_leaves_the_call_unpriced_and_says_why(cfg, one_hour):
    """A price made from a dropped count would be made up: NULL, ``invalid_usage``, the key in ``data_quality``
    (a count sent as a string, as some SDKs do, is read)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("com.anthropic.sdk.python").start_as_current_span("chat claude-haiku-4-5") as s:
        s.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
                          "gen_ai.request.model": "claude-haiku-4-5", "gen_ai.usage.input_tokens": 1000,
                          "gen_ai.usage.output_tokens": 100, "gen_ai.usage.cache_write.input_tokens": 900,
                          "anthropic.usage.cache_creation.ephemeral_1h_input_tokens": one_hour})
    lake_from_sdk_spans(exporter.get_finished_spans(), cfg)
    status, cost, quality = q(cfg, "SELECT pricing_status, cost_usd, data_quality FROM calls")[0]
    if one_hour == "600":
        assert (status, cost) == ("priced", pytest.approx((100 + 375 + 1200 + 500) / 1e6))
    else:
        assert (status, cost) == ("invalid_usage", None)
        assert "anthropic.usage.cache_creation.ephemeral_1h_input_tokens" in quality


def test_the_cost_reports_baseline_bills_a_long_prompt_in_the_frontiers_long_band(tmp_path):
    """A frontier model with a long-prompt band: the baseline reprices each call in the band of its own input."""
    from costline.processors.records import CallRow, RequestRow

    frontier = ModelPrice("claude-fable-5", "frontier", input_per_mtok=10.0, output_per_mtok=50.0,
                          long_context_above_tokens=200_000, long_input_per_mtok=20.0, long_output_per_mtok=75.0)
    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"), pricing=PricingConfig(
        models=(*[m for m in PricingConfig().models if m.tier != "frontier"], frontier), student_usd_per_hour=0.0))
    ts = int(DAY.replace(hour=1, tzinfo=dt.timezone.utc).timestamp() * 1_000_000)
    requests, calls = [], []
    for rid, inp, read in (("R1", 1000, 0), ("R2", 300_000, 100_000)):  # a short call, and a long one with reads
        requests.append(RequestRow(rid, f"t-{rid}", f"s-{rid}", ts, "acme", "faq", "x", "budget", "budget", False, 1,
                                   0, True, None, 5.0, None, None, 0, 0))
        calls.append(CallRow(f"c-{rid}", f"t-{rid}", f"s-{rid}", rid, ts, "chat", "anthropic", "claude-haiku-4-5",
                             "claude-haiku-4-5", "budget", inp, 100, read, 0, False, ["stop"], None, 0.001, "priced",
                             "2026-06", 5.0, None, None, 0, len(calls) + 1))
    # R1: 1000 * 10 + 100 * 50; R2 (long): 200,000 fresh * 20 + 100,000 reads * 0.1 * 20 + 100 * 75
    want = (10_000 + 5_000) / 1e6 + (4_000_000 + 200_000 + 7_500) / 1e6
    assert cost_report_stages(cfg, requests, calls, DAY)["baseline"] == pytest.approx(want)


# -- web searches (Anthropic's web search server tool: $10 per 1,000 searches on top of the tokens) -----------------
WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}
SEARCH_QUESTIONS = ("What is the weather in Lisbon?", "Compare the ferry and the bus and the train to Sintra.",
                    "Which museums open late and which are free and which are near the river and the castle?")


def _search_traffic(client, stream: bool) -> tuple[list, list]:
    """SEARCH_QUESTIONS with the web search tool: the usages and the block types the SDK read."""
    usages, blocks = [], []
    for question in SEARCH_QUESTIONS:
        kwargs = dict(model="claude-haiku-4-5", max_tokens=256, tools=[WEB_SEARCH],
                      messages=[{"role": "user", "content": question}])
        if stream:
            with client.messages.stream(**kwargs) as s:
                message = s.get_final_message()
        else:
            message = client.messages.create(**kwargs)
        usages.append(message.usage)
        blocks.append([b.type for b in message.content])
    return usages, blocks


def _searches(response_or_usage) -> int:
    usage = getattr(response_or_usage, "usage", response_or_usage)
    return usage.server_tool_use.web_search_requests if usage.server_tool_use is not None else 0


@pytest.mark.parametrize("via", ["wrapper", "gateway"])
@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_web_searches_are_priced_per_search_on_top_of_the_tokens(standin, cfg, spans, tmp_path, stream, via):
    """The web search server tool called by the real SDK, wrapped by ``instrument_anthropic`` or through ``costline
    serve`` (which carries the tool to an Anthropic tier and its blocks and count back): each search at $10 / 1,000
    on top of the tokens."""
    from contextlib import ExitStack

    from gateways import anthropic_client, routed_gateway

    provider, exporter = spans
    with ExitStack() as stack:
        if via == "gateway":
            gw = stack.enter_context(routed_gateway(standin, tmp_path / "keys.json", recorder=Recorder(provider)))
            client = anthropic_client(gw, "anthropic", "acme")
        else:
            client = anthropic.Anthropic(base_url=standin.url, api_key="test", max_retries=0)
            instrument_anthropic(client, Recorder(provider))
        usages, blocks = _search_traffic(client, stream)
    # the SDK read the server tool's blocks and counts: 1, 3 and 3 (max_uses) searches
    assert [_searches(u) for u in usages] == [1, 3, 3]
    assert blocks[0] == ["server_tool_use", "web_search_tool_result", "text", "text"]  # a lead, then the cited answer
    calls = [s for s in exporter.get_finished_spans() if s.name != "costline.request"]
    assert [s.attributes.get("anthropic.usage.server_tool_use.web_search_requests") for s in calls] == [1, 3, 3]
    lake_from_sdk_spans(exporter.get_finished_spans(), cfg)
    want = sum(haiku_usd(u) + _searches(u) * 10.0 / 1000 for u in usages)
    assert q(cfg, "SELECT count(*), sum(cost_usd), sum(web_search_requests) FROM calls") == [
        (3, pytest.approx(want, rel=1e-9), 7)]


def test_pydantic_ai_web_searches_are_priced(standin, cfg, spans):
    """Pydantic AI's built-in web search tool on Anthropic: it writes ``gen_ai.usage.details.web_search_requests``."""
    pytest.importorskip("pydantic_ai")
    from pydantic_ai.capabilities.web_search import WebSearch
    from pydantic_ai.models.anthropic import AnthropicModelSettings

    provider, exporter = spans
    _pydantic_ai_runs(standin, provider, SEARCH_QUESTIONS[:2], capabilities=[WebSearch(max_uses=2)],
                      model_settings=AnthropicModelSettings(max_tokens=256))
    chats = [s for s in exporter.get_finished_spans() if s.attributes.get("gen_ai.operation.name") == "chat"]
    assert [s.attributes.get("gen_ai.usage.details.web_search_requests") for s in chats] == [1, 2]
    lake_from_sdk_spans(exporter.get_finished_spans(), cfg)
    paid = standin.log.paid()
    want = sum(((e.input_tokens - e.cache_read_tokens - e.cache_creation_tokens) * HAIKU_IN
                + e.output_tokens * HAIKU_OUT) / 1e6 for e in paid) + 3 * 10.0 / 1000
    assert q(cfg, "SELECT count(*), sum(cost_usd), sum(web_search_requests) FROM calls") == [
        (2, pytest.approx(want, rel=1e-9), 3)]


@pytest.mark.parametrize("own,batch,usd", [
    (None, False, (1000 * 2.0 + 100 * 10.0) / 1e6 + 4 * 0.010),   # [pricing] web_search_per_1k: $10
    (25.0, False, (1000 * 2.0 + 100 * 10.0) / 1e6 + 4 * 0.025),   # the model's own: $25 per 1,000
    (None, True, (1000 * 2.0 + 100 * 10.0) / 2e6 + 4 * 0.010),    # batch halves the tokens, not the searches
])
def test_the_price_of_web_searches(own, batch, usd):
    table = PricingTable(PricingConfig(models=(ModelPrice("m", "budget", input_per_mtok=2.0, output_per_mtok=10.0,
                                                          web_search_per_1k=own),)))
    got = table.price_call(model="m", input_tokens=1000, output_tokens=100, web_search_requests=4, batch=batch)
    assert got.cost_usd == pytest.approx(usd, rel=1e-12)


# -- Anthropic's fast mode (speed "fast": a per-model multiple of the standard prices) ----------------------------
@pytest.mark.parametrize("multiplier,fast,usd,status", [
    (6.0, True, 6 * (1000 * 5.0 + 100 * 25.0) / 1e6, "priced"),
    (6.0, False, (1000 * 5.0 + 100 * 25.0) / 1e6, "priced"),
    (None, True, None, "no_fast_price"),  # 2 to 6 x: never guessed
    (None, False, (1000 * 5.0 + 100 * 25.0) / 1e6, "priced"),
])
def test_the_price_of_a_fast_call(multiplier, fast, usd, status):
    table = PricingTable(PricingConfig(models=(ModelPrice("claude-opus-4-6", "upper", input_per_mtok=5.0,
                                                          output_per_mtok=25.0, fast_multiplier=multiplier),)))
    got = table.price_call(model="claude-opus-4-6", input_tokens=1000, output_tokens=100, fast=fast)
    assert (got.cost_usd, got.status) == (pytest.approx(usd) if usd is not None else None, status)


def test_fast_calls_through_the_gateway_and_the_wrapper_are_priced_at_the_multiplier(standin, cfg, spans, tmp_path):
    """``speed: "fast"`` through ``costline serve`` (which passes it on) and through ``instrument_anthropic``: the
    API's ``usage.speed`` is recorded and the tokens priced at the model's multiplier (here 6 x Haiku's $1 / $5)."""
    from gateways import gateway_and_direct_anthropic

    provider, exporter = spans
    usages = []
    with gateway_and_direct_anthropic(standin, provider, tmp_path / "keys.json") as clients:
        for client in clients:
            for speed in ("fast", "standard"):
                usages.append(client.messages.create(model="claude-haiku-4-5", max_tokens=64, speed=speed,
                                                     messages=[{"role": "user", "content": f"Refund {speed}?"}]).usage)
    assert [u.speed for u in usages] == ["fast", None, "fast", None]
    fast_cfg = cfg.replace(pricing=dataclasses.replace(cfg.pricing, models=(dataclasses.replace(
        cfg.pricing.models[0], fast_multiplier=6.0), *cfg.pricing.models[1:])))
    lake_from_sdk_spans(exporter.get_finished_spans(), fast_cfg)
    want = sum((u.input_tokens * HAIKU_IN + u.output_tokens * HAIKU_OUT) / 1e6 * (6 if u.speed == "fast" else 1)
               for u in usages)
    assert q(cfg, "SELECT count(*), count(*) FILTER (WHERE fast), sum(cost_usd) FROM calls") == [
        (4, 2, pytest.approx(want, rel=1e-9))]


def test_a_fast_call_of_a_model_without_a_multiplier_is_unpriced_and_named_once(standin, cfg, spans, caplog):
    """2 to 6 x the standard price is never guessed: NULL, ``no_fast_price``, and the processor names the model
    once in its log, with what to set."""
    provider, exporter = spans
    client = anthropic.Anthropic(base_url=standin.url, api_key="test", max_retries=0)
    instrument_anthropic(client, Recorder(provider))
    for _ in range(3):
        client.messages.create(model="claude-haiku-4-5", max_tokens=64, speed="fast",
                               messages=[{"role": "user", "content": "Where is my refund?"}])
    lake_from_sdk_spans(exporter.get_finished_spans(), cfg)
    assert q(cfg, "SELECT count(*), count(cost_usd), min(pricing_status) FROM calls") == [(3, 0, "no_fast_price")]
    with caplog.at_level("WARNING", logger="costline.processors.processor"):
        stats = note_unpriced(exporter.get_finished_spans(), cfg)
    said = [r.getMessage() for r in caplog.records if "fast" in r.getMessage()]
    assert len(said) == 1 and "claude-haiku-4-5" in said[0] and "fast_multiplier" in said[0]
    assert stats.unknown_model_calls == 0  # a known model: not counted as an unknown one


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_a_paused_search_turn_the_gateway_resumes_is_billed_as_its_two_calls(standin, cfg, spans, tmp_path, api):
    """An OpenAI client's web search that Anthropic pauses (the stand-in: after three of the five searches wanted):
    the gateway sends the paused turn back, and the lake holds both calls, each at its own tokens and searches —
    priced by hand from what the stand-in logged, $10 per 1,000 searches on top."""
    from gateways import openai_client, routed_gateway

    provider, exporter = spans
    question = ("Compare the refund policy and the shipping rules and the warranty terms and the return window and "
                f"the price match promise ({api})")
    entries = len(standin.log.entries())
    with routed_gateway(standin, tmp_path / "keys.json", recorder=Recorder(provider)) as gw:
        client = openai_client(gw, "anthropic", "acme")
        if api == "chat":
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": question}],
                                           web_search_options={"search_context_size": "high"})
        else:
            client.responses.create(model="m", input=question, tools=[{"type": "web_search"}])
    logged = standin.log.entries()[entries:]
    assert len(logged) == 2 and all(e.cache_read_tokens == e.cache_creation_tokens == 0 for e in logged)
    lake_from_sdk_spans(exporter.get_finished_spans(), cfg)
    want = sum(e.input_tokens * HAIKU_IN + e.output_tokens * HAIKU_OUT for e in logged) / 1e6 + 5 * 10.0 / 1000
    assert q(cfg, "SELECT count(*), sum(cost_usd), sum(web_search_requests), count(DISTINCT request_id) "
                  "FROM calls") == [(2, pytest.approx(want, rel=1e-9), 5, 1)]
