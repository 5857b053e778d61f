"""Google Gemini (the ``google-genai`` SDK) through its instrumentations: each model call counted once, at the
price of what was served, a thinking model's thoughts priced as output.

The Gemini API's ``usageMetadata``: ``promptTokenCount`` includes the implicitly cached
``cachedContentTokenCount``; ``thoughtsTokenCount`` (a thinking model's reasoning, billed as output) is **not**
part of ``candidatesTokenCount``, so a call's output is candidates + thoughts. The embeddings API reports no
usage at all (an embedding call is unpriced, never $0).

Recorded: google-genai 2.34 under each instrumentation in a venv of its own (versions in the recording's ``venv``:
``opentelemetry-instrumentation-google-genai`` 1.3b0 needs ``opentelemetry-util-genai`` 1.3b0, costline's venv pins
``< 1.2`` for openai-v2) against costline's stand-in (sim/standin_gemini.py), with the stand-in's log of what it
served, into ``tests/data/gemini_spans.json`` (``tests/data/recorders/record_gemini.py`` + ``gemini_probe.py``).
Live: the same probe on what the ``compat`` extra installs (google-genai, the official instrumentation 1.1 on
util-genai 1.1, OpenInference's and OpenLLMetry's), against a fresh stand-in. The same
ten calls under each instrumentation: a 429, a call with a long system instruction, the same prefix again
(implicitly cached), a cached stream, ``gemini-2.5-flash`` thinking (plain, streamed with its thoughts shown,
async with ``thinking_budget=0``), an async stream of ``gemini-2.0-flash-thinking-exp``, an unknown model
(404) and an embedding call. Modes:

* ``official``: ``opentelemetry-instrumentation-google-genai`` (scope ``opentelemetry.instrumentation.google_genai``,
  spans ``generate_content {model}`` / ``embeddings {model}``, ``gen_ai.provider.name`` = ``gemini``, output =
  candidates + thoughts, ``gen_ai.usage.reasoning.output_tokens``, ``gen_ai.usage.cache_read.input_tokens``,
  ``gen_ai.response.id``, ``error.type`` = the HTTP status, ``"429"``);
* ``openinference``: ``openinference-instrumentation-google-genai`` (``GenerateContent``, ``GenerateContentStream``,
  ``AsyncGenerateContent[Stream]``, ``EmbedContent``; ``llm.provider`` = ``google``; completion = candidates +
  thoughts, ``llm.token_count.completion_details.reasoning``; no response id; failures by status);
* ``openllmetry``: ``opentelemetry-instrumentation-google-generativeai`` (it instruments google-genai's
  ``Models`` / ``AsyncModels``; ``generate_content {model}``, ``gen_ai.provider.name`` = ``gcp.gen_ai``;
  ``gen_ai.usage.output_tokens`` = candidates only, the thoughts only in ``gen_ai.usage.total_tokens``; its
  span is started but never made current, so another instrumentation's span of the call is in another
  trace unless an app span encloses both; no embedding span);
* ``official_util_1_1``: the official instrumentation 1.1b0 on ``opentelemetry-util-genai`` 1.1b0 (what
  costline's venv pins): the same attributes, scope ``opentelemetry.util.genai.handler``;
* ``all`` (the three together, no span around the calls) and ``all_app`` (the three, each call inside an
  app's own span, as under a web framework's server span);
* ``logfire``: ``logfire.instrument_google_genai()`` (the official instrumentor on Logfire's tracer:
  ``gen_ai.operation.name`` = ``chat``, ``logfire.span_type`` = ``span`` with the usage on it).

Expected figures come from the stand-in's log (input = prompt with the cached tokens, output = candidates +
thoughts) priced with the hand-written prices below — never costline's pricing code.
"""

from __future__ import annotations

import base64
import collections
import gzip
import json
import pathlib

import pytest

from costline.config import Config, LakeConfig, ModelPrice, PricingConfig

from figures_lake import lake_from_messages, query_lake as q

DATA = pathlib.Path(__file__).parent / "data" / "gemini_spans.json"
# Hand-written prices, USD per million tokens (input, output); a cache read costs READ_X of the input price.
PRICES = {"gemini-2.0-flash": (0.10, 0.40), "gemini-2.0-flash-thinking-exp": (0.10, 0.40),
          "gemini-2.5-flash": (0.30, 2.50)}
EMBED_MODEL, EMBED_IN = "text-embedding-004", 0.15
READ_X = 0.25
GEMINI_SCOPES = {
    "official": {"opentelemetry.instrumentation.google_genai"},
    "openinference": {"openinference.instrumentation.google_genai"},
    "openllmetry": {"opentelemetry.instrumentation.google_generativeai"},
    "logfire": {"opentelemetry.instrumentation.google_genai"},
    # opentelemetry-instrumentation-google-genai 1.1b0 on opentelemetry-util-genai 1.1b0 (the util-genai costline's
    # venv pins for openai-v2): the spans are util-genai's, under its handler's scope
    "official_util_1_1": {"opentelemetry.util.genai.handler"},
}
GEMINI_SCOPES["all"] = GEMINI_SCOPES["all_app"] = set().union(*(GEMINI_SCOPES[m] for m in
                                                                  ("official", "openinference", "openllmetry")))


@pytest.fixture
def cfg(tmp_path) -> Config:
    # each model's own cache-read price (Gemini's implicit cache: a quarter of the input price); the table's
    # multiplier stays Anthropic's 0.1
    models = tuple(ModelPrice(m, "budget", provider="gcp.gemini", input_per_mtok=i, output_per_mtok=o,
                              cache_read_per_mtok=i * READ_X) for m, (i, o) in PRICES.items())
    return Config(lake=LakeConfig(path=tmp_path / "lake"), pricing=PricingConfig(
        models=models + (ModelPrice(EMBED_MODEL, "budget", provider="gcp.gemini", input_per_mtok=EMBED_IN),),
        student_usd_per_hour=0.0, student_providers=()))


def recording(mode: str) -> tuple[list[bytes], list[dict], list[dict]]:
    got = json.loads(DATA.read_text())["modes"][mode]
    return [gzip.decompress(base64.b64decode(m)) for m in got["otlp_gzip"]], got["served"], got["runs"]




def served_by_model(served: list[dict]) -> list[tuple]:
    """(model, calls, input, output, cache reads, USD) of the generateContent calls the stand-in served."""
    acc: dict[str, list] = collections.defaultdict(lambda: [0, 0, 0, 0, 0.0])
    for e in served:
        if not e["paid"] or e["model"] == EMBED_MODEL:
            continue
        price_in, price_out = PRICES[e["model"]]
        read = e["cache_read_tokens"]
        usd = ((e["input_tokens"] - read) * price_in + read * price_in * READ_X + e["output_tokens"] * price_out) / 1e6
        a = acc[e["model"]]
        a[0] += 1
        a[1] += e["input_tokens"]
        a[2] += e["output_tokens"]
        a[3] += read
        a[4] += usd
    return [(m, n, i, o, r, pytest.approx(usd, rel=1e-9)) for m, (n, i, o, r, usd) in sorted(acc.items())]


def successes_by_model(cfg: Config) -> list[tuple]:
    return q(cfg, "SELECT model, count(*), sum(input_tokens), sum(output_tokens), sum(cache_read_tokens), "
                  "sum(cost_usd) FROM calls WHERE error_type IS NULL AND operation <> 'embeddings' "
                  "GROUP BY 1 ORDER BY 1")


MODES = ("official", "official_util_1_1", "openinference", "openllmetry", "all", "all_app", "logfire")


def test_the_recordings_are_what_the_stand_in_served():
    """Every mode made the same ten calls; the SDK's usage is the served log's (thoughts apart from the
    candidates, cached tokens inside the prompt)."""
    for mode in MODES:
        messages, served, runs = recording(mode)
        assert [(e["model"], e["status"]) for e in served] == [
            ("gemini-2.0-flash", 429)] + [("gemini-2.0-flash", 200)] * 3 + [("gemini-2.5-flash", 200)] * 3 + [
            ("gemini-2.0-flash-thinking-exp", 200), ("palm-2", 404), (EMBED_MODEL, 200)], mode
        usage = [r for r in runs if "prompt" in r]
        paid = [e for e in served if e["paid"] and e["model"] != EMBED_MODEL]
        assert [(e["input_tokens"], e["cache_read_tokens"], e["output_tokens"]) for e in paid] == [
            (r["prompt"], r["cached"] or 0, r["candidates"] + (r["thoughts"] or 0)) for r in usage], mode
        assert [bool(r["thoughts"]) for r in usage] == [False, False, False, True, True, False, True], mode
        assert [bool(r["cached"]) for r in usage] == [False, True, True, False, False, False, False], mode
        assert [r["failed"] for r in runs if "failed" in r] == ["google.genai.errors.ClientError"] * 2, mode


@pytest.mark.parametrize("mode", ["official", "official_util_1_1", "openinference", "openllmetry", "logfire"])
def test_one_gemini_instrumentation_counts_each_call_once_at_the_served_price(cfg, mode):
    """Each instrumentation alone: seven answered calls at the price of what was served (a thinking model's
    thoughts priced as output, cached prompt tokens as cached), two failed calls at $0, and an embedding call
    without usage unpriced (OpenLLMetry has no embedding span)."""
    messages, served, _ = recording(mode)
    lake_from_messages(messages, cfg)
    assert {r[0] for r in q(cfg, "SELECT DISTINCT instrumentation FROM calls")} == GEMINI_SCOPES[mode]
    assert successes_by_model(cfg) == served_by_model(served)
    assert q(cfg, "SELECT model, cost_usd, input_tokens, output_tokens FROM calls WHERE error_type IS NOT NULL "
                  "ORDER BY model") == [("gemini-2.0-flash", 0.0, 0, 0), ("palm-2", 0.0, 0, 0)]
    embeds = q(cfg, "SELECT model, cost_usd, pricing_status FROM calls WHERE operation = 'embeddings'")
    assert embeds == ([] if mode == "openllmetry" else [(EMBED_MODEL, None, "incomplete_usage")])
    n_calls = 9 if mode == "openllmetry" else 10
    want = sum(r[5].expected for r in served_by_model(served))
    assert q(cfg, "SELECT count(*), count(*) FILTER (WHERE success), sum(cost_usd) FROM requests") == [
        (n_calls, n_calls - 2, pytest.approx(want, rel=1e-9))]


def test_three_gemini_instrumentations_under_an_app_span_count_each_call_once(cfg):
    """The official instrumentation, OpenInference and OpenLLMetry together, every call inside an app span:
    ten calls, not twenty-nine. The official span and OpenLLMetry's share the response id (providers
    ``gemini`` and ``gcp.gen_ai``: one provider family); OpenInference's (``google``, no response id) is the
    same call by nesting and time."""
    messages, served, _ = recording("all_app")
    lake_from_messages(messages, cfg)
    assert successes_by_model(cfg) == served_by_model(served)
    assert q(cfg, "SELECT model, cost_usd FROM calls WHERE error_type IS NOT NULL ORDER BY model") == [
        ("gemini-2.0-flash", 0.0), ("palm-2", 0.0)]
    assert q(cfg, "SELECT count(*), count(cost_usd) FROM calls WHERE operation = 'embeddings'") == [(1, 0)]
    want = sum(r[5].expected for r in served_by_model(served))
    assert q(cfg, "SELECT count(*), count(*) FILTER (WHERE success), sum(cost_usd) FROM requests") == [
        (10, 8, pytest.approx(want, rel=1e-9))]


def test_three_gemini_instrumentations_without_an_app_span_count_each_answered_call_once(cfg):
    """The three together with no span around the calls: OpenLLMetry's span is never made current, so the
    official and OpenInference spans of the same call are in a trace of their own. An answered call is still
    one call: the response id is the same, and the spans' times overlap. (A failed call has no response id:
    OpenLLMetry's failed span is not matched across traces, so failures are not asserted here.)"""
    messages, served, _ = recording("all")
    lake_from_messages(messages, cfg)
    assert successes_by_model(cfg) == served_by_model(served)
    assert q(cfg, "SELECT count(*), count(cost_usd) FROM calls WHERE operation = 'embeddings'") == [(1, 0)]


def test_openllmetry_gemini_thoughts_are_output(cfg):
    """OpenLLMetry writes ``gen_ai.usage.output_tokens`` = candidates only; its ``gen_ai.usage.total_tokens`` is
    prompt + candidates + thoughts. A thinking call's output is what the API billed: candidates + thoughts."""
    messages, served, runs = recording("openllmetry")
    lake_from_messages(messages, cfg)
    thinking = [r for r in runs if r.get("thoughts")]
    got = q(cfg, "SELECT model, input_tokens, output_tokens FROM calls WHERE model LIKE '%thinking%' "
                 "OR model = 'gemini-2.5-flash' ORDER BY ts")
    want = [(m, r["prompt"], r["candidates"] + (r["thoughts"] or 0))
            for m, r in zip([g[0] for g in got], [r for r in runs if "prompt" in r][3:])]
    assert got == want and len(thinking) == 3


# -- live: the instrumentations costline's venv holds (the compat extra), against a fresh stand-in -------------
PROBE = pathlib.Path(__file__).parent / "data" / "recorders" / "gemini_probe.py"
LIVE_SCOPES = dict(GEMINI_SCOPES, official=GEMINI_SCOPES["official_util_1_1"])  # the venv's util-genai is 1.1
LIVE_SCOPES["all"] = LIVE_SCOPES["all_app"] = (LIVE_SCOPES["official"] | GEMINI_SCOPES["openinference"]
                                               | GEMINI_SCOPES["openllmetry"])


def run_probe(mode: str, tmp_path: pathlib.Path) -> tuple[list[bytes], list[dict]]:
    """The probe's ten calls through google-genai under ``mode``, in a process of its own (instrumentors patch
    the SDK's classes for good), against a stand-in with the Gemini API that fails the first request with 429."""
    pytest.importorskip("google.genai", reason="google-genai comes with `pip install 'costline[compat]'`")
    import dataclasses
    import subprocess
    import sys

    from costline.serving.settings import StandInConfig
    from costline.sim.standin import StandInServer
    from costline.sim.standin_gemini import attach

    srv = StandInServer(StandInConfig(port=0, latency_scale=0.0, min_cache_tokens=100))
    srv.start()
    try:
        attach(srv).inject_errors(429, 1)
        out = tmp_path / f"{mode}.json"
        p = subprocess.run([sys.executable, str(PROBE), srv.url, mode, str(out)], capture_output=True, text=True,
                           timeout=180)
        assert p.returncode == 0, p.stderr[-3000:]
        got = json.loads(out.read_text())
        served = [dataclasses.asdict(e) for e in srv.log.entries()]
    finally:
        srv.shutdown()
    return [gzip.decompress(base64.b64decode(m)) for m in got["otlp_gzip"]], served


# OpenLLMetry alone, the three together; on Vertex AI (the official instrumentation names it vertex_ai)
@pytest.mark.parametrize("mode", ["openllmetry", "all_app", "all", "all_app_vertex"])
def test_live_gemini_instrumentations_count_each_call_once_at_the_served_price(cfg, tmp_path, mode):
    """The installed google-genai and instrumentations, driven now: each answered call once at the price of what
    the stand-in served (thoughts as output, cached tokens as cached), the two failures at $0 (once each, but
    with no span around three instrumentations: OpenLLMetry's failed span is in a trace of its own)."""
    messages, served = run_probe(mode, tmp_path)
    lake_from_messages(messages, cfg)
    # every instrumentation reported (which of a call's spans is kept depends on the random span ids)
    scopes = LIVE_SCOPES[mode.removesuffix("_vertex")]
    assert {r[0] for r in q(cfg, "SELECT DISTINCT instrumentation FROM call_links_all")} == scopes
    assert successes_by_model(cfg) == served_by_model(served)
    failed = q(cfg, "SELECT DISTINCT model, cost_usd FROM calls WHERE error_type IS NOT NULL ORDER BY model")
    assert failed == [("gemini-2.0-flash", 0.0), ("palm-2", 0.0)]
    if mode != "all":  # with no app span a failed call (no response id) is in two traces: counted in each
        assert q(cfg, "SELECT count(*) FROM calls WHERE error_type IS NOT NULL") == [(2,)]


def test_pydantic_ai_gemini_agent_beside_openinference_counts_each_call_once(cfg, tmp_path):
    """Pydantic AI's own instrumentation of a GoogleModel agent (``gen_ai.provider.name`` = ``google``, a response
    id) with OpenInference's google-genai instrumentor (``llm.provider`` = ``google``, no id) around the same
    SDK calls: each model call once, at the served price (thoughts as output, the cached system prompt as cached)."""
    pytest.importorskip("google.genai", reason="google-genai comes with `pip install 'costline[compat]'`")
    pytest.importorskip("pydantic_ai.models.google")
    oi = pytest.importorskip("openinference.instrumentation.google_genai")
    import asyncio
    import dataclasses

    from google import genai
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from pydantic_ai import Agent, InstrumentationSettings
    from pydantic_ai.models.google import GoogleModel
    from pydantic_ai.providers.google import GoogleProvider

    from costline.serving.settings import StandInConfig
    from costline.sim.standin import StandInServer

    from figures_lake import lake_from_sdk_spans

    srv = StandInServer(StandInConfig(port=0, latency_scale=0.0, min_cache_tokens=100))
    srv.start()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = oi.GoogleGenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        client = genai.Client(api_key="x", http_options=genai.types.HttpOptions(
            base_url=srv.url, retry_options=genai.types.HttpRetryOptions(attempts=1)))
        agent = Agent(GoogleModel("gemini-2.5-flash", provider=GoogleProvider(client=client)),
                      system_prompt="You answer questions about our refund policy. " * 20)
        agent.instrument = InstrumentationSettings(tracer_provider=provider)
        tracer = provider.get_tracer("app")

        async def runs() -> None:
            for question in ("Where is my parcel?", "Where is my parcel now?"):
                with tracer.start_as_current_span("POST /ask"):
                    await agent.run(question)

        asyncio.run(runs())
    finally:
        instrumentor.uninstrument()
        srv.shutdown()
    spans = exporter.get_finished_spans()
    assert {s.instrumentation_scope.name for s in spans} >= {"pydantic-ai", "openinference.instrumentation.google_genai"}
    lake_from_sdk_spans(spans, cfg)
    served = [dataclasses.asdict(e) for e in srv.log.entries()]
    assert [e["cache_read_tokens"] > 0 for e in served] == [False, True]
    assert successes_by_model(cfg) == served_by_model(served)
