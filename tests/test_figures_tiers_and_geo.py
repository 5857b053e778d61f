"""Premiums the answer names: OpenAI's priority tier and Anthropic's US-only inference.

OpenAI bills ``service_tier: "priority"`` at a per-model multiple of the standard prices, cached input included
(2 x for gpt-5, 1.75 x for gpt-4.1); its answer names the tier that served it, which
``opentelemetry-instrumentation-openai-v2``, OpenLLMetry and costline's wrapper write as
``openai.response.service_tier`` and LiteLLM's OpenTelemetry callback as ``gen_ai.openai.response.service_tier``
(the older spelling: its flex calls were priced in full before). Anthropic bills a call it ran in the US only
(``inference_geo: "us"``, models from February 2026 on) at 1.1 x its token prices; its usage says
``inference_geo``, which the gateway passes on and costline's wrapper records.

The calls are made by the real SDKs and instrumentations against costline's stand-in, and through the gateway;
expected dollars are computed here from the responses' usage and hand-written prices and multipliers.
"""

from __future__ import annotations

import time

import pytest

from costline.collectors import Recorder, instrument_openai
from costline.config import Config, ConfigError, LakeConfig, ModelPrice, PricingConfig, load_config
from costline.pricing import PricingTable

from figures_lake import budget_calls_of_a_day, cost_report_stages, lake_from_sdk_spans, note_unpriced, query_lake as q
from sdk_hygiene import pristine_sdks, restore_sdk_classes, sdk_class_attributes  # noqa: F401 (autouse fixture)

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")

# Hand-written prices, USD per million tokens, and multipliers (not costline's defaults).
HAIKU_IN, HAIKU_OUT = 1.0, 5.0
GPT_IN, GPT_OUT = 0.5, 2.0
PRIORITY = 1.75
STUDENT_MODEL = "costline-student"  # the stand-in's OpenAI-compatible model, priced here as a paid OpenAI model


@pytest.fixture(scope="module")
def standin(cache_standin):
    return cache_standin


def _config(tmp_path, priority: float | None = PRIORITY, us: float | None = None) -> Config:
    return Config(lake=LakeConfig(path=tmp_path / "lake"), pricing=PricingConfig(
        models=(ModelPrice("claude-haiku-4-5", "budget", input_per_mtok=HAIKU_IN, output_per_mtok=HAIKU_OUT,
                           us_inference_multiplier=us),
                ModelPrice(STUDENT_MODEL, "budget", provider="openai", input_per_mtok=GPT_IN,
                           output_per_mtok=GPT_OUT, priority_multiplier=priority)),
        student_usd_per_hour=0.0, student_providers=()))


@pytest.fixture
def cfg(tmp_path) -> Config:
    return _config(tmp_path)


# -- the price of one call ---------------------------------------------------------------------------------------
# model "m" (openai): $2 in, $10 out, priority 2 x; model "c" (anthropic): $4 in, $20 out. 1,000 in (200 of them
# cache reads), 100 out. Each row: (provider, model, service tier, inference geo, batch, searches, USD by hand).
M_STANDARD = (800 * 2 + 200 * 0.2 + 100 * 10) / 1e6  # reads at 0.1 x
C_STANDARD = (800 * 4 + 200 * 0.4 + 100 * 20) / 1e6
ONE_CALL = [
    ("openai priority: 2 x every token", "openai", "m", "priority", None, False, 0, 2 * M_STANDARD),
    ("azure priority: 2 x", "azure.ai.openai", "m", "priority", None, False, 0, 2 * M_STANDARD),
    ("openai flex: batch prices", "openai", "m", "flex", None, False, 0, M_STANDARD / 2),
    ("openai default", "openai", "m", "default", None, False, 0, M_STANDARD),
    ("openai scale: no per-call price", "openai", "m", "scale", None, False, 0, M_STANDARD),
    ("anthropic's priority tier is a commitment, not a per-call price", "anthropic", "c", "priority", None, False, 0,
     C_STANDARD),
    ("anthropic US-only: 1.1 x", "anthropic", "c", None, "us", False, 0, 1.1 * C_STANDARD),
    ("anthropic global", "anthropic", "c", None, "global", False, 0, C_STANDARD),
    ("US-only in a batch: 1.1 x half", "anthropic", "c", "batch", "us", False, 0, 1.1 * C_STANDARD / 2),
    ("US-only with 2 searches: the searches at $10 / 1k, not 1.1 x", "anthropic", "c", None, "us", False, 2,
     1.1 * C_STANDARD + 2 * 0.01),
]


@pytest.mark.parametrize("provider,model,tier,geo,batch,searches,usd", [r[1:] for r in ONE_CALL],
                         ids=[r[0] for r in ONE_CALL])
def test_the_price_of_one_call(provider, model, tier, geo, batch, searches, usd):
    table = PricingTable(PricingConfig(models=(
        ModelPrice("m", "mid", provider="openai", input_per_mtok=2.0, output_per_mtok=10.0, priority_multiplier=2.0),
        ModelPrice("c", "mid", input_per_mtok=4.0, output_per_mtok=20.0))))
    got = table.price_call(model=model, provider=provider, input_tokens=1000, output_tokens=100,
                           cache_read_tokens=200, service_tier=tier, inference_geo=geo, batch=batch,
                           web_search_requests=searches)
    assert (got.cost_usd, got.status) == (pytest.approx(usd), "priced")


def test_a_priority_call_of_a_model_without_a_multiplier_is_unpriced():
    table = PricingTable(PricingConfig(models=(ModelPrice("m", "mid", provider="openai", input_per_mtok=2.0,
                                                          output_per_mtok=10.0),)))
    got = table.price_call(model="m", provider="openai", input_tokens=1000, output_tokens=100, service_tier="priority")
    assert (got.cost_usd, got.status) == (None, "no_priority_price")


@pytest.mark.parametrize("toml,key", [
    ('[[pricing.models]]\nmodel = "m"\ntier = "mid"\npriority_multiplier = -2\n', "priority_multiplier"),
    ('[[pricing.models]]\nmodel = "m"\ntier = "mid"\nus_inference_multiplier = nan\n', "us_inference_multiplier"),
    ("[pricing]\nus_inference_multiplier = -1.1\n", "us_inference_multiplier"),
    ("[pricing]\nregional_endpoint_multiplier = -1.1\n", "regional_endpoint_multiplier"),  # a cloud's regional endpoint
    ('[[pricing.models]]\nmodel = "m"\ntier = "mid"\nregional_endpoint_multiplier = inf\n',
     "regional_endpoint_multiplier"),
])
def test_a_bad_multiplier_is_refused_by_its_key(tmp_path, toml, key):
    path = tmp_path / "costline.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert key in str(err.value)


def test_the_us_multiplier_comes_from_the_file(tmp_path):
    path = tmp_path / "costline.toml"
    path.write_text('[pricing]\nus_inference_multiplier = 1.25\n\n[[pricing.models]]\nmodel = "a"\ntier = "mid"\n'
                    'input_per_mtok = 1.0\n\n[[pricing.models]]\nmodel = "b"\ntier = "mid"\ninput_per_mtok = 1.0\n'
                    'us_inference_multiplier = 1.5\n')
    table = PricingTable(load_config(path, env={}).pricing)
    for model, usd in (("a", 1.25), ("b", 1.5)):  # a million input tokens run in the US
        assert table.price_call(model=model, input_tokens=10**6, inference_geo="us").cost_usd == pytest.approx(usd)


# -- OpenAI's priority tier, from three instrumentations ----------------------------------------------------------
@pytest.fixture(scope="module")
def litellm():
    # LiteLLM reads the price map it ships, never GitHub's (nothing here leaves the machine)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        mp.setenv("LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS", "true")
        yield pytest.importorskip("litellm", reason="scripts/test installs it with `pip install --no-deps "
                                                    "litellm==1.110.2`")


def _litellm_calls(litellm, standin, spans, questions, tier: str) -> list:
    """``litellm.completion`` with its OpenTelemetry callback on the test's tracer provider; waits for its spans (its callbacks
    run on a thread of their own after the answer)."""
    from litellm.integrations.opentelemetry import OpenTelemetry, OpenTelemetryConfig

    provider, exporter = spans
    before = len(exporter.get_finished_spans())
    otel = OpenTelemetry(config=OpenTelemetryConfig(exporter=exporter, skip_set_global=True),
                         tracer_provider=provider)
    litellm.callbacks = [otel]
    try:
        usages = [litellm.completion(model=f"openai/{STUDENT_MODEL}", api_base=standin.openai_url, api_key="test",
                                     messages=[{"role": "user", "content": q}], service_tier=tier).usage
                  for q in questions]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sum(
                s.name == "litellm_request" for s in exporter.get_finished_spans()[before:]) < len(questions):
            time.sleep(0.05)
    finally:  # LiteLLM copies a callback into lists of its own: take it out of all of them, for the next test
        for name in ("callbacks", "success_callback", "failure_callback", "_async_success_callback",
                     "_async_failure_callback", "service_callback"):
            setattr(litellm, name, [cb for cb in getattr(litellm, name, []) if cb is not otel])
    return usages


@pytest.mark.parametrize("tier,factor", [("priority", PRIORITY), ("flex", 0.5)])
def test_openai_service_tiers_are_priced_from_every_instrumentations_spelling(standin, cfg, spans, litellm, tier,
                                                                              factor):
    """The same tier through ``opentelemetry-instrumentation-openai-v2``, costline's wrapper (streamed) and
    LiteLLM's callback (the older ``gen_ai.openai.response.service_tier``): each call at the tier's price."""
    openai_v2 = pytest.importorskip("opentelemetry.instrumentation.openai_v2")
    provider, exporter = spans
    instrumentor = openai_v2.OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        client = openai.OpenAI(base_url=standin.openai_url, api_key="test", max_retries=0)
        usages = [client.chat.completions.create(model=STUDENT_MODEL, service_tier=tier, messages=[
            {"role": "user", "content": f"Classify ticket {i}"}]).usage for i in range(2)]
    finally:
        instrumentor.uninstrument()
    wrapped = openai.OpenAI(base_url=standin.openai_url, api_key="test", max_retries=0)
    instrument_openai(wrapped, Recorder(provider), provider="openai")
    streamed = wrapped.chat.completions.create(model=STUDENT_MODEL, stream=True, service_tier=tier,
                                               stream_options={"include_usage": True},
                                               messages=[{"role": "user", "content": "Classify ticket 7"}])
    usages += [chunk.usage for chunk in streamed if chunk.usage is not None]
    usages += _litellm_calls(litellm, standin, spans, ["Classify ticket 8", "Classify ticket 9"], tier)
    finished = [s for s in exporter.get_finished_spans() if s.name not in ("costline.request", "raw_gen_ai_request")]
    said = [s.attributes.get("openai.response.service_tier") or s.attributes.get("gen_ai.openai.response.service_tier")
            for s in finished]
    assert len(usages) == 5 and said == [tier] * 5
    lake_from_sdk_spans(exporter.get_finished_spans(), cfg)
    want = sum((u.prompt_tokens * GPT_IN + u.completion_tokens * GPT_OUT) / 1e6 * factor for u in usages)
    assert q(cfg, "SELECT count(*), sum(cost_usd), min(service_tier), max(service_tier), bool_and(batch) FROM calls") \
        == [(5, pytest.approx(want, rel=1e-9), tier, tier, tier == "flex")]


def test_a_priority_call_of_a_model_without_a_multiplier_is_unpriced_and_named_once(standin, spans, tmp_path,
                                                                                     caplog):
    """1.7 to 2 x by model is never guessed: NULL, ``no_priority_price``, and the processor names the model once,
    with the key to set."""
    cfg = _config(tmp_path, priority=None)
    provider, exporter = spans
    client = openai.OpenAI(base_url=standin.openai_url, api_key="test", max_retries=0)
    instrument_openai(client, Recorder(provider), provider="openai")
    for i in range(3):
        client.chat.completions.create(model=STUDENT_MODEL, service_tier="priority",
                                       messages=[{"role": "user", "content": f"Classify ticket {i}"}])
    lake_from_sdk_spans(exporter.get_finished_spans(), cfg)
    assert q(cfg, "SELECT count(*), count(cost_usd), min(pricing_status) FROM calls") == [(3, 0, "no_priority_price")]
    with caplog.at_level("WARNING", logger="costline.processors.processor"):
        stats = note_unpriced(exporter.get_finished_spans(), cfg)
    said = [r.getMessage() for r in caplog.records if "priority" in r.getMessage()]
    assert len(said) == 1 and STUDENT_MODEL in said[0] and "priority_multiplier" in said[0]
    assert stats.unknown_model_calls == 0


# -- Anthropic's US-only inference ---------------------------------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_us_only_calls_through_the_gateway_and_the_wrapper_cost_a_tenth_more(standin, cfg, spans, tmp_path, stream):
    """``inference_geo: "us"`` through ``costline serve`` (which passes it on and says the API's
    ``usage.inference_geo`` back) and through ``instrument_anthropic``: the tokens at 1.1 x; "global" at 1 x."""
    from gateways import gateway_and_direct_anthropic

    provider, exporter = spans
    usages = []
    with gateway_and_direct_anthropic(standin, provider, tmp_path / "keys.json") as (gateway, direct):
        for client in (gateway, direct):
            for geo in ("us", "global"):
                kwargs = dict(model="claude-haiku-4-5", max_tokens=64, inference_geo=geo,
                              messages=[{"role": "user", "content": f"Where is my refund ({geo}, {stream})?"}])
                if stream and client is direct:
                    with client.messages.stream(**kwargs) as s:
                        assert "".join(s.text_stream)
                        usages.append(s.get_final_message().usage)
                else:
                    usages.append(client.messages.create(**kwargs).usage)
    assert [u.inference_geo for u in usages] == ["us", "global", "us", "global"]
    lake_from_sdk_spans(exporter.get_finished_spans(), cfg)
    want = sum((u.input_tokens * HAIKU_IN + u.output_tokens * HAIKU_OUT) / 1e6 * (1.1 if u.inference_geo == "us"
                                                                                  else 1.0) for u in usages)
    assert q(cfg, "SELECT count(*), count(*) FILTER (WHERE inference_geo = 'us'), sum(cost_usd) FROM calls") == [
        (4, 2, pytest.approx(want, rel=1e-9))]
    # a model's own multiplier wins over [pricing]'s 1.1
    own = _config(tmp_path / "own", us=1.3)
    lake_from_sdk_spans(exporter.get_finished_spans(), own)
    want = sum((u.input_tokens * HAIKU_IN + u.output_tokens * HAIKU_OUT) / 1e6 * (1.3 if u.inference_geo == "us"
                                                                                  else 1.0) for u in usages)
    assert q(own, "SELECT sum(cost_usd) FROM calls") == [(pytest.approx(want, rel=1e-9),)]


def test_the_cost_reports_baseline_bills_us_only_calls_at_the_frontiers_us_price(tmp_path):
    """A request run in the US only would run there on the baseline model too: its frontier price x 1.1."""
    import datetime as dt

    day = dt.datetime(2026, 11, 7)
    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"), pricing=PricingConfig(
        models=(ModelPrice("cheap", "budget", input_per_mtok=1.0, output_per_mtok=5.0),
                ModelPrice("big", "frontier", input_per_mtok=10.0, output_per_mtok=50.0)),
        student_usd_per_hour=0.0, student_providers=()))
    # 1,000 in, 100 out each, on the budget model
    requests, calls = budget_calls_of_a_day(day, "anthropic", "cheap", [
        ((1000 * 1.0 + 100 * 5.0) / 1e6 * (1.1 if geo == "us" else 1.0), {"inference_geo": geo})
        for geo in ("us", "global", None)])
    stages = cost_report_stages(cfg, requests, calls, day)
    # the frontier model: 1,000 * $10 + 100 * $50 = $0.015 a call, the US one x 1.1; routed: what was paid
    assert stages["baseline"] == pytest.approx(0.015 * 1.1 + 0.015 + 0.015)
    assert stages["routing"] == pytest.approx(0.0015 * 1.1 + 0.0015 + 0.0015)
