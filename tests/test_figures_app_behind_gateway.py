"""Figures of apps whose own model-call spans reach the lake beside costline's, through the real processor path.

* an app behind the gateway (base_url pointed at ``costline serve``) that also exports its own span of each call
  (here the anthropic SDK's own tracing, ``open_telemetry=``, and a span as OpenTelemetry's openai-v2 instrumentation
  writes one): the app's span is in a trace of its own, so the call's identity within a trace never matched it, and
  each request was counted twice (a cache hit as a $0 budget request, an escalated answer at the asked model's
  price). The gateway now records on its request span the id its answer gave the client (``costline.response.id``),
  and the views count an app's span of that id (or of a call the gateway made) as the gateway's request;
* DSPy traced with OpenInference's DSPy and LiteLLM instrumentors: ``LM.__call__`` says ``claude-haiku-4-5``, the
  LiteLLM ``completion`` span inside it ``anthropic/claude-haiku-4-5``: one call, not two;
* LlamaIndex's tool call: OpenInference writes ``Anthropic._prepare_chat_with_tools`` as an LLM span (no tokens, no
  output, no finish reason) beside the ``Anthropic.chat`` that makes the call: no call.

The attribute shapes are those the instrumentations wrote in real runs (openinference-instrumentation-dspy /
-litellm / -llama_index with llama-index-llms-anthropic 0.12, against the stand-in). Prices are set here (USD per
million tokens: Haiku 0.80 / 4, Sonnet 3 / 15) and every expected figure is worked out by hand from them and the
token counts the stand-in logged.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from contextlib import contextmanager

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costline import contract as c
from costline.collectors import Recorder
from costline.config import CaptureConfig, Config
from costline.processors.spellings import read_call
from costline.serving.gateway.app import Gateway
from costline.serving.pipeline import Pipeline
from costline.serving.settings import BackendsConfig, GatewayConfig
from costline.sim.standin_model import reference_validator
from costline.sim.synth import span

from figures_lake import anthropic_tiers_config, lake_from_sdk_spans, query_lake as q
from sdk_hygiene import openllmetry_forgets_responses, pristine_sdks  # noqa: F401 - autouse: the SDKs restored

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")

HAIKU, SONNET = "claude-haiku-4-5", "claude-sonnet-4-6"
H_IN, H_OUT = 0.80, 4.0
S_IN, S_OUT = 3.0, 15.0
PRICES = {HAIKU: (H_IN, H_OUT), SONNET: (S_IN, S_OUT)}
EASY = "How do I reset my password?"  # the budget tier answers it
HARD = "Why was I charged twice?"  # routed to budget, its answer turned down, answered by mid (deterministic)


@pytest.fixture
def cfg(tmp_path) -> Config:
    return anthropic_tiers_config(tmp_path / "lake", (HAIKU, H_IN, H_OUT), (SONNET, S_IN, S_OUT))


def _provider(service: str) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


class DictCache:
    """The cache protocol in a dict: exact-match lookups."""

    def __init__(self) -> None:
        self.entries: dict[tuple, str] = {}
        self.lock = threading.Lock()

    def lookup(self, query, *, tenant, namespace=None):
        with self.lock:
            found = self.entries.get((tenant, namespace, query))
        return None if found is None else type("Hit", (), {"answer": found, "similarity": 0.99})()

    def store(self, query, answer, *, tenant, namespace=None, doc_hashes=()):
        with self.lock:
            self.entries[(tenant, namespace, query)] = answer


@contextmanager
def gateway(standin, tmp_path, *, validator=reference_validator, cache=None, capture=False):
    """``costline serve`` in-process against the stand-in, its spans (service "costline-gateway") in an exporter
    (``capture``: with the prompts and answers)."""
    provider, exporter = _provider("costline-gateway")
    base = Config()
    serving = dataclasses.replace(base.serving, backends=BackendsConfig(
        anthropic_base_url=standin.url, student_base_url=standin.openai_url, max_retries=0))
    pipeline = Pipeline.from_config(base.replace(serving=serving), recorder=Recorder(provider, capture=CaptureConfig(message_content=capture)), cache=cache,
                                    validator=validator, env={}, confidence=None)
    gw = Gateway(pipeline, GatewayConfig(keys_file=tmp_path / "keys.json"), port=0)
    gw.start()
    try:
        yield gw, exporter
    finally:
        gw.shutdown()
        pipeline.close()
        provider.shutdown()


@contextmanager
def instrumented_app(instrumentor, service: str):
    """The exporter of the spans ``instrumentor`` writes for an app named ``service``; uninstrumented on exit."""
    app_provider, app_spans = _provider(service)
    instrumentor.instrument(tracer_provider=app_provider)
    try:
        yield app_spans
    finally:
        instrumentor.uninstrument()


def _price(model: str, tokens_in: int, tokens_out: int) -> float:
    p_in, p_out = PRICES[model]
    return (tokens_in * p_in + tokens_out * p_out) / 1e6


def _cost_report(cfg: Config):
    """The cost report of the day around now, on the lake's views."""
    import datetime as dt

    from costline.jobs.cost_report import build_cost_report
    from costline.jobs.store import open_jobs_lake

    from costline.config import ModelPrice

    frontier = ModelPrice("claude-opus-4-6", "frontier", provider="anthropic", input_per_mtok=5.0, output_per_mtok=25.0)
    cfg = cfg.replace(pricing=dataclasses.replace(cfg.pricing, models=(*cfg.pricing.models, frontier)))
    now = dt.datetime.now(dt.UTC)
    con = open_jobs_lake(cfg)
    try:
        return build_cost_report(con, cfg, since=now - dt.timedelta(hours=1), until=now + dt.timedelta(hours=1))
    finally:
        con.close()


def _returned_ids(exporter) -> list[str | None]:
    return [s.attributes.get(c.COSTLINE_RESPONSE_ID) for s in sorted(exporter.get_finished_spans(),
                                                                     key=lambda s: s.start_time)
            if s.name == c.SPAN_REQUEST]


# -- an app behind the gateway -----------------------------------------------------------------------------------
def test_an_app_tracing_its_own_calls_through_the_gateway_is_counted_once(standin, tmp_path, cfg):
    """A call the budget tier answers, the same question again (a cache hit), one escalated to mid: 3 requests and
    3 calls at the answering tiers' prices (before: 6 requests, the app's three standalone, priced at Haiku's); the
    app's own call straight to the model (an id no gateway request gave) stays a standalone request of its own."""
    before = len(standin.log.entries("anthropic"))
    app_provider, app_spans = _provider("support-app")
    with gateway(standin, tmp_path, cache=DictCache()) as (gw, gw_spans):
        app = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0,
                                  open_telemetry={"tracer_provider": app_provider})
        got = [app.messages.create(model=HAIKU, max_tokens=200, messages=[{"role": "user", "content": text}])
               for text in (EASY, EASY, HARD)]
        # and one call of its own, straight to the model: a standalone request of the app's
        direct = anthropic.Anthropic(base_url=standin.url, api_key="unused", max_retries=0,
                                     open_telemetry={"tracer_provider": app_provider})
        own = direct.messages.create(model=HAIKU, max_tokens=200, messages=[{"role": "user", "content": "Hi there"}])
        sent = gw_spans.get_finished_spans()
    served = standin.log.entries("anthropic")[before:]
    assert [e.model for e in served] == [HAIKU, HAIKU, SONNET, HAIKU]  # the cache hit made no call; HARD escalated
    app_finished = app_spans.get_finished_spans()
    assert [s.attributes.get(c.GEN_AI_RESPONSE_ID) for s in app_finished] == [m.id for m in (*got, own)]
    # the id each answer gave the client, on its request span: always the gateway's own (a backend's may repeat)
    assert _returned_ids(gw_spans) == [m.id for m in got]
    assert all(m.id.startswith("msg_costline_") for m in got)
    lake_from_sdk_spans([*sent, *app_finished], cfg)
    calls = [_price(e.model, e.input_tokens, e.output_tokens) for e in served]
    assert q(cfg, "SELECT count(*) FROM calls_raw WHERE service_name = 'support-app'") == [(4,)]  # the app's spans
    assert q(cfg, "SELECT tier, cache_hit, standalone, calls, unpriced_calls, cost_usd FROM requests ORDER BY ts") == [
        ("budget", False, False, 1, 0, pytest.approx(calls[0], rel=1e-9)),
        ("cache", True, False, 0, 0, 0.0),
        ("mid", False, False, 2, 0, pytest.approx(calls[1] + calls[2], rel=1e-9)),
        ("budget", False, True, 1, 0, pytest.approx(calls[3], rel=1e-9))]  # the app's own call
    assert q(cfg, "SELECT model, standalone FROM calls ORDER BY ts") == [
        (HAIKU, False), (HAIKU, False), (SONNET, False), (HAIKU, True)]
    assert q(cfg, "SELECT tier, requests, cost_usd FROM tier_hourly ORDER BY tier") == [
        ("budget", 2, pytest.approx(calls[0] + calls[3], rel=1e-9)), ("cache", 1, 0.0),
        ("mid", 1, pytest.approx(calls[1] + calls[2], rel=1e-9))]


def test_chat_completions_and_live_streams_record_the_id_the_client_got(standin, tmp_path, cfg):
    """Chat Completions' ids are the gateway's (chatcmpl-costline-<request id>), a live stream's msg_costline_<request
    id> although its call had an id of its own: each request span says the one its client got, and an app span of
    that id (as OpenTelemetry's openai-v2 instrumentation writes one, in the app's trace) is the gateway's request."""
    before = len(standin.log.entries("anthropic"))
    app_provider, app_spans = _provider("support-app")
    with gateway(standin, tmp_path, validator=None) as (gw, gw_spans):  # no gate: a stream is live
        oc = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0)
        completion = oc.chat.completions.create(model="gpt-4o-mini", max_completion_tokens=200,
                                                messages=[{"role": "user", "content": EASY}])
        ac = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0)
        with ac.messages.stream(model=HAIKU, max_tokens=200,
                                messages=[{"role": "user", "content": "What are your opening hours?"}]) as stream:
            streamed = stream.get_final_message()
        sent = gw_spans.get_finished_spans()
    assert completion.id.startswith("chatcmpl-costline-") and streamed.id.startswith("msg_costline_")
    assert _returned_ids(gw_spans) == [completion.id, streamed.id]
    served = standin.log.entries("anthropic")[before:]
    assert [e.model for e in served] == [HAIKU, HAIKU]
    tracer = app_provider.get_tracer("opentelemetry.instrumentation.openai_v2")
    with tracer.start_as_current_span("chat gpt-4o-mini", attributes={
            "gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.model": completion.model, "gen_ai.response.id": completion.id,
            "gen_ai.response.finish_reasons": ("stop",), "server.address": "127.0.0.1",
            "gen_ai.usage.input_tokens": completion.usage.prompt_tokens,
            "gen_ai.usage.output_tokens": completion.usage.completion_tokens}):
        pass
    lake_from_sdk_spans([*sent, *app_spans.get_finished_spans()], cfg)
    want = [_price(e.model, e.input_tokens, e.output_tokens) for e in served]
    assert q(cfg, "SELECT standalone, calls, cost_usd FROM requests ORDER BY ts") == [
        (False, 1, pytest.approx(want[0], rel=1e-9)), (False, 1, pytest.approx(want[1], rel=1e-9))]
    assert q(cfg, "SELECT count(*) FROM calls") == [(2,)]


def test_the_responses_api_records_the_id_the_client_got(standin, tmp_path, cfg):
    """The Responses API (what the OpenAI Agents SDK calls): its ids are the gateway's (``resp_costline_<request
    id>``), and each request span now says the one its client got, so an app instrumented with OpenLLMetry's openai
    instrumentation (real, 0.62: its Responses spans carry the response id), one answer settled and one live stream,
    is counted once, at the tier's price. Before: the request spans named no id, and the app's two spans were two
    more standalone requests, priced at the model the app asked for."""
    openllmetry_openai = pytest.importorskip("opentelemetry.instrumentation.openai")
    before = len(standin.log.entries("anthropic"))
    with instrumented_app(openllmetry_openai.OpenAIInstrumentor(), "agents-app") as app_spans, \
            gateway(standin, tmp_path, validator=None) as (gw, gw_spans):  # no gate: the stream is live
        oc = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0)
        settled = oc.responses.create(model="gpt-4o-mini", input=EASY, max_output_tokens=200)
        with oc.responses.stream(model="gpt-4o-mini", input="What are your opening hours?",
                                 max_output_tokens=200) as stream:
            streamed = stream.get_final_response()
        sent = gw_spans.get_finished_spans()
    assert settled.id.startswith("resp_costline_") and streamed.id.startswith("resp_costline_")
    assert _returned_ids(gw_spans) == [settled.id, streamed.id]
    app_finished = app_spans.get_finished_spans()
    assert sorted(s.attributes.get(c.GEN_AI_RESPONSE_ID) for s in app_finished) == sorted([settled.id, streamed.id])
    served = standin.log.entries("anthropic")[before:]
    assert [e.model for e in served] == [HAIKU, HAIKU]
    lake_from_sdk_spans([*sent, *app_finished], cfg)
    want = [_price(e.model, e.input_tokens, e.output_tokens) for e in served]
    assert q(cfg, "SELECT count(*) FROM calls_raw WHERE service_name = 'agents-app'") == [(2,)]  # the app's spans
    assert q(cfg, "SELECT service_name, standalone, calls, cost_usd FROM requests ORDER BY ts") == [
        ("costline-gateway", False, 1, pytest.approx(want[0], rel=1e-9)),
        ("costline-gateway", False, 1, pytest.approx(want[1], rel=1e-9))]
    assert q(cfg, "SELECT count(*) FROM calls") == [(2,)]


def test_a_stored_response_read_back_is_no_call(standin, tmp_path, cfg):
    """OpenInference's openai instrumentation (real, 0.1.66) writes an LLM span for every request that returns a
    Response: ``responses.retrieve`` too (no request body: ``input.value`` ``{}``), with the stored response's id and
    token counts. An app that creates a response and reads it back ten minutes later (polling a background response,
    say) made one model call: the read-back is no call. Before, past the minute the views match the gateway's id over,
    it was a standalone request at the answering model's price (and against a model directly, always)."""
    from opentelemetry.sdk.trace import ReadableSpan

    oi_openai = pytest.importorskip("openinference.instrumentation.openai")
    before = len(standin.log.entries("anthropic"))
    with instrumented_app(oi_openai.OpenAIInstrumentor(), "agents-app") as app_spans, \
            gateway(standin, tmp_path, validator=None) as (gw, gw_spans):
        oc = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0)
        made = oc.responses.create(model="gpt-4o-mini", input=EASY, max_output_tokens=200)
        again = oc.responses.retrieve(made.id)
        sent = gw_spans.get_finished_spans()
    assert again.id == made.id and again.usage.output_tokens == made.usage.output_tokens
    create, read = app_spans.get_finished_spans()
    assert read.attributes.get("input.value") == "{}"  # what the test stands on: the read-back's span as written
    late = 600 * 10**9  # read back ten minutes later
    read = ReadableSpan(name=read.name, context=read.context, parent=read.parent, resource=read.resource,
                        attributes=read.attributes, events=read.events, links=read.links, kind=read.kind,
                        status=read.status, start_time=read.start_time + late, end_time=read.end_time + late,
                        instrumentation_scope=read.instrumentation_scope)
    (served,) = standin.log.entries("anthropic")[before:]
    lake_from_sdk_spans([*sent, create, read], cfg)
    assert q(cfg, "SELECT service_name, standalone, calls, cost_usd FROM requests") == [
        ("costline-gateway", False, 1, pytest.approx(_price(served.model, served.input_tokens, served.output_tokens),
                                                     rel=1e-9))]
    assert q(cfg, "SELECT count(*) FROM calls") == [(1,)]


def test_another_apps_direct_call_with_a_backend_id_the_gateway_saw_is_its_own(standin, tmp_path, cfg):
    """A server's ids repeat (the stand-ins count from 1 per process, so do self-hosted servers): an app calling a
    model directly, in the same minute, gets the very id a backend gave the gateway's call. Its call is its own
    standalone request, not the gateway's (before, the view dropped it: its cost was lost)."""
    before = len(standin.log.entries("anthropic"))
    with gateway(standin, tmp_path) as (gw, gw_spans):
        behind = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0)
        got = behind.messages.create(model=HAIKU, max_tokens=200, messages=[{"role": "user", "content": EASY}])
        sent = gw_spans.get_finished_spans()
    backend_ids = [s.attributes.get(c.GEN_AI_RESPONSE_ID) for s in sent
                   if s.name != c.SPAN_REQUEST and s.attributes.get(c.GEN_AI_RESPONSE_ID)]
    assert len(backend_ids) == 1 and backend_ids[0] != got.id  # the gateway gave its client its own id
    (served,) = standin.log.entries("anthropic")[before:]
    app_provider, app_spans = _provider("acme-app")  # another app, on another server with the same ids
    tracer = app_provider.get_tracer("opentelemetry.instrumentation.anthropic")
    with tracer.start_as_current_span(f"chat {HAIKU}", attributes={
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic", "gen_ai.request.model": HAIKU,
            "gen_ai.response.model": HAIKU, "gen_ai.response.id": backend_ids[0],
            "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 20}):
        pass
    lake_from_sdk_spans([*sent, *app_spans.get_finished_spans()], cfg)
    own = (10 * H_IN + 20 * H_OUT) / 1e6  # $0.000088
    assert q(cfg, "SELECT service_name, standalone, cost_usd FROM requests ORDER BY standalone") == [
        ("costline-gateway", False, pytest.approx(_price(HAIKU, served.input_tokens, served.output_tokens), rel=1e-9)),
        ("acme-app", True, pytest.approx(own, rel=1e-9))]


# -- DSPy with OpenInference's DSPy and LiteLLM instrumentors ---------------------------------------------------
def test_dspy_lm_call_and_litellms_completion_inside_it_are_one_call(cfg, tmp_path):
    """Two LM calls, each an ``LM.__call__`` span (no tokens) around LiteLLM's ``completion`` (198/64 and 180/64
    tokens): 2 calls, both priced (before: 4 requests, 2 of them unpriced)."""
    provider, exporter = _provider("dspy-app")
    dspy_tracer = provider.get_tracer("openinference.instrumentation.dspy")
    litellm_tracer = provider.get_tracer("openinference.instrumentation.litellm")
    answer = "Returns are accepted within 30 days."
    for adapter, (prompt, completion) in (("ChatAdapter.__call__", (198, 64)), ("JSONAdapter.__call__", (180, 64))):
        with dspy_tracer.start_as_current_span("Predict(QA).forward", attributes={
                "openinference.span.kind": "CHAIN", "input.value": '{"question": "How many days?"}',
                "input.mime_type": "application/json"}), \
             dspy_tracer.start_as_current_span(adapter, attributes={"openinference.span.kind": "CHAIN"}), \
             dspy_tracer.start_as_current_span("LM.__call__", attributes={
                "openinference.span.kind": "LLM", "llm.model_name": HAIKU, "llm.provider": "anthropic",
                "input.mime_type": "application/json",
                "input.value": '{"prompt": null, "messages": [{"role": "user", "content": "How many days?"}]}',
                "llm.invocation_parameters": '{"temperature": null, "max_tokens": null, '
                                             '"api_base": "http://127.0.0.1:18787"}',
                "llm.input_messages.0.message.role": "user",
                "llm.input_messages.0.message.content": "How many days?",
                "output.value": json.dumps([answer]), "output.mime_type": "application/json",
                "llm.output_messages.0.message.role": "assistant",
                "llm.output_messages.0.message.content": answer}), \
             litellm_tracer.start_as_current_span("completion", attributes={
                "openinference.span.kind": "LLM", "llm.model_name": f"anthropic/{HAIKU}", "llm.provider": "anthropic",
                "llm.input_messages.0.message.role": "user", "llm.input_messages.0.message.content": "How many days?",
                "input.value": '{"messages": [{"role": "user", "content": "How many days?"}]}',
                "input.mime_type": "application/json",
                "llm.invocation_parameters": f'{{"model": "anthropic/{HAIKU}", "api_base": "http://127.0.0.1:18787"}}',
                "output.value": answer, "llm.output_messages.0.message.role": "assistant",
                "llm.output_messages.0.message.content": answer, "llm.finish_reason": "stop",
                "llm.token_count.prompt": prompt, "llm.token_count.completion": completion,
                "llm.token_count.completion_details.reasoning": 0, "llm.token_count.total": prompt + completion,
                "llm.token_count.prompt_details.cache_write": 0, "llm.token_count.prompt_details.cache_read": 0}):
            pass
    lake_from_sdk_spans(exporter.get_finished_spans(), cfg)
    first, second = _price(HAIKU, 198, 64), _price(HAIKU, 180, 64)  # 0.0004144, 0.0004
    assert q(cfg, "SELECT count(*) FROM calls_raw") == [(4,)]
    assert q(cfg, "SELECT calls, unpriced_calls, input_tokens, output_tokens, cost_usd FROM requests ORDER BY ts") == [
        (1, 0, 198, 64, pytest.approx(first, rel=1e-9)), (1, 0, 180, 64, pytest.approx(second, rel=1e-9))]
    assert q(cfg, "SELECT instrumentation, count(*) FROM calls GROUP BY ALL") == [
        ("openinference.instrumentation.litellm", 2)]


# -- LlamaIndex's tool call --------------------------------------------------------------------------------------
def _llama_index_tool_call(provider) -> None:
    """``llm.predict_and_call([tool], ...)`` as OpenInference's LlamaIndex instrumentation wrote it (6 / 15 tokens)."""
    tracer = provider.get_tracer("openinference.instrumentation.llama_index")
    llm = {"openinference.span.kind": "LLM", "llm.model_name": HAIKU, "llm.provider": "anthropic",
           "llm.system": "anthropic", "input.mime_type": "application/json",
           "llm.invocation_parameters": '{"context_window":200000,"num_output":300,"is_chat_model":true,'
                                        '"is_function_calling_model":true,"model_name":"claude-haiku-4-5"}'}
    with tracer.start_as_current_span("Anthropic.predict_and_call", attributes={
            **llm, "input.value": '{"tools": ["<FunctionTool object>"], "user_msg": "Weather in Oslo?"}',
            "output.value": '{"response": "Sunny in Oslo", "sources": []}', "output.mime_type": "application/json"}):
        with tracer.start_as_current_span("Anthropic._prepare_chat_with_tools", attributes={
                **llm, "input.value": '{"tools": ["<FunctionTool object>"], "user_msg": "Weather in Oslo?"}',
                "output.value": '{"messages": ["ChatMessage(role=<MessageRole.USER: \'user\'>, blocks=[...])"], '
                                '"tools": [{"name": "get_weather"}]}',
                "output.mime_type": "application/json"}):
            pass
        with tracer.start_as_current_span("Anthropic.chat", attributes={
                **llm, "input.value": '{"messages": ["ChatMessage(...)"]}',
                "llm.input_messages.0.message.role": "user",
                "llm.input_messages.0.message.content": "Weather in Oslo?",
                "output.value": "assistant: Calling get_weather.", "llm.finish_reason": "tool_use",
                "llm.token_count.prompt": 6, "llm.token_count.completion": 15,
                "llm.token_count.prompt_details.cache_write": 0, "llm.token_count.prompt_details.cache_read": 0,
                "llm.output_messages.0.message.role": "assistant",
                "llm.output_messages.0.message.contents.0.message_content.type": "text",
                "llm.output_messages.0.message.contents.0.message_content.text": "Calling get_weather.",
                "llm.output_messages.0.message.tool_calls.0.tool_call.id": "toolu_01",
                "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "get_weather",
                "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": '{"city": "Oslo"}'}):
            pass
        with tracer.start_as_current_span("FunctionTool.__call__", attributes={
                "openinference.span.kind": "TOOL", "tool.name": "get_weather",
                "input.value": '{"kwargs": {"city": "Oslo"}}', "output.value": "Sunny in Oslo"}):
            pass


def test_llama_indexs_tool_call_preparation_is_no_call(cfg):
    """One tool call: 1 call of 6 / 15 tokens, none unpriced (before: a second, unpriced, call)."""
    provider, exporter = _provider("li-app")
    _llama_index_tool_call(provider)
    lake_from_sdk_spans(exporter.get_finished_spans(), cfg)
    assert q(cfg, "SELECT count(*) FROM calls_raw") == [(2,)]  # predict_and_call and the chat: no preparation
    assert q(cfg, "SELECT calls, unpriced_calls, input_tokens, output_tokens, cost_usd FROM requests") == [
        (1, 0, 6, 15, pytest.approx(_price(HAIKU, 6, 15), rel=1e-9))]  # 0.0000648
    assert q(cfg, "SELECT model, finish_reasons FROM calls") == [(HAIKU, ["tool_use"])]


_HELPER = {"openinference.span.kind": "LLM", "llm.model_name": HAIKU, "llm.provider": "anthropic"}
HELPER_CASES = [
    ("Anthropic._prepare_chat_with_tools", {}, False),
    ("OpenAI._prepare_chat_with_tools", {"llm.provider": "openai", "llm.model_name": "gpt-4o-mini"}, False),
    # saying what a call says, a span of that name is read as one
    ("Anthropic._prepare_chat_with_tools", {"llm.token_count.prompt": 6, "llm.token_count.completion": 15}, True),
    ("Anthropic._prepare_chat_with_tools", {"llm.finish_reason": "end_turn"}, True),
    ("Anthropic._prepare_chat_with_tools", {"llm.output_messages.0.message.role": "assistant"}, True),
    ("Anthropic._prepare_chat_with_tools", {"output.value": '{"id": "msg_01", "type": "message"}'}, True),
    # other names: a call without its counts stays one (unpriced, flagged)
    ("Anthropic.chat", {}, True),
    ("Anthropic.prepare_chat_with_tools_and_more", {}, True),
]


def test_only_llama_indexs_helper_spans_that_say_nothing_of_a_call_are_no_calls():
    def is_call(name: str, extra: dict) -> bool:
        s = span(name, trace_id=b"\x01" * 16, span_id=b"\x02" * 8, start_ns=1_780_000_000_000_000_000,
                 end_ns=1_780_000_000_000_000_001, attributes={**_HELPER, **extra})
        return read_call(name, {kv.key: kv.value for kv in s.attributes}.get,
                         "openinference.instrumentation.llama_index", False, []) is not None

    assert [is_call(name, extra) for name, extra, _ in HELPER_CASES] == [want for _, _, want in HELPER_CASES]


# -- an app that records its own requests and calls the gateway inside them --------------------------------------
def test_an_app_recording_its_own_requests_through_the_gateway_pays_each_answer_once(standin, tmp_path, cfg):
    """The app records its own requests with costline's recorder (service "support-app", tenant "acme", task type
    "support") and, inside each, calls the gateway with the SDK's tracing on: its SDK span is owned by its request.
    Each gateway request counts its answer once, at the answering tier's price, with the app request's tenant and
    verdict (its task type stays the gateway's: the router's); the app's span is no call, and an app request of gateway calls only is no request of its own
    (before: the app's span was a call of its request priced at Haiku's, beside the gateway's request: every answer
    paid twice, a cache hit at Haiku's price). A direct call of the app's request stays its call."""
    before = len(standin.log.entries("anthropic"))
    app_provider, app_spans = _provider("support-app")
    recorder = Recorder(app_provider)
    with gateway(standin, tmp_path, cache=DictCache()) as (gw, gw_spans):
        app = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0,
                                  open_telemetry={"tracer_provider": app_provider})
        direct = anthropic.Anthropic(base_url=standin.url, api_key="unused", max_retries=0,
                                     open_telemetry={"tracer_provider": app_provider})
        for text in (EASY, EASY, HARD):
            with recorder.request(task_type="support", tenant="acme") as req:
                app.messages.create(model=HAIKU, max_tokens=200, messages=[{"role": "user", "content": text}])
                req.accept()
        with recorder.request(task_type="support", tenant="acme") as req:  # a request that also calls the model
            app.messages.create(model=HAIKU, max_tokens=200, messages=[{"role": "user", "content": EASY}])
            direct.messages.create(model=HAIKU, max_tokens=200, messages=[{"role": "user", "content": "Hi there"}])
            req.accept()
        with recorder.request(task_type="support", tenant="acme") as req:  # the app turns the answer down
            app.messages.create(model=HAIKU, max_tokens=200, messages=[{"role": "user", "content": EASY}])
            req.reject("not what the customer asked")
        sent = gw_spans.get_finished_spans()
    served = standin.log.entries("anthropic")[before:]
    # EASY answered by budget, EASY again from the cache, HARD escalated (budget, then mid), EASY from the cache, the
    # app's direct call, EASY from the cache
    assert [e.model for e in served] == [HAIKU, HAIKU, SONNET, HAIKU]
    price = [_price(e.model, e.input_tokens, e.output_tokens) for e in served]
    rejected = [s.attributes.get(c.COSTLINE_REJECTED_ATTEMPTS) for s in sorted(sent, key=lambda s: s.start_time)
                if s.name == c.SPAN_REQUEST]
    assert rejected[:2] == [None, None] and rejected[2]  # the gateway turned the budget answer to HARD down
    lake_from_sdk_spans([*sent, *app_spans.get_finished_spans()], cfg)
    gw, app_ = "costline-gateway", "support-app"
    assert q(cfg, "SELECT service_name, tenant, task_type, tier, cache_hit, success, calls, escalations, "
                  "rejected_attempts, cost_usd FROM requests ORDER BY ts") == [
        (gw, "acme", "chat", "budget", False, True, 1, 0, None, pytest.approx(price[0], rel=1e-9)),
        (gw, "acme", "chat", "cache", True, True, 0, 0, None, 0.0),
        (gw, "acme", "chat", "mid", False, True, 2, 1, rejected[2], pytest.approx(price[1] + price[2], rel=1e-9)),
        (gw, "acme", "chat", "cache", True, True, 0, 0, None, 0.0),
        # the app's request of its direct call
        (app_, "acme", "support", "budget", False, True, 1, 0, None, pytest.approx(price[3], rel=1e-9)),
        (gw, "acme", "chat", "cache", True, False, 0, 0, None, 0.0)]  # the app said no
    # the gateway's three calls and the direct one, each once, each of its request (the gateway's: acme's)
    assert q(cfg, "SELECT c.model, c.tenant, r.service_name FROM calls c JOIN requests r "
                  "ON r.trace_id = c.trace_id AND r.span_id = c.request_span_id ORDER BY c.ts") == [
        (HAIKU, "acme", gw), (HAIKU, "acme", gw), (SONNET, "acme", gw), (HAIKU, "acme", app_)]
    assert q(cfg, "SELECT sum(cost_usd) FROM calls") == [(pytest.approx(sum(price), rel=1e-9),)]
    # the cost report: 6 requests, 3 of them cache hits, what was paid once
    report = _cost_report(cfg)
    assert (report.requests, report.cache_hits) == (6, 3)
    assert {s.stage: s.total_cost_usd for s in report.stages}["student"] == pytest.approx(sum(price), rel=1e-9)


def test_forgetting_the_app_requests_tenant_forgets_the_gateway_requests_that_are_its_parts(standin, tmp_path, cfg):
    """The gateway's key names another tenant ("default") than the app's request ("acme", "globex"): forgetting
    "acme" removes acme's request, the app's span of its call, and the gateway's request span (its prompt), calls
    and cache lookups of it; globex's request and its gateway part stay whole."""
    from costline.lake import Lake

    app_provider, app_spans = _provider("support-app")
    recorder = Recorder(app_provider)
    with gateway(standin, tmp_path, cache=DictCache(), capture=True) as (gw, gw_spans):
        app = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0,
                                  open_telemetry={"tracer_provider": app_provider})
        for tenant, text in (("acme", "Where is the acme invoice?"), ("globex", EASY)):
            with recorder.request(task_type="support", tenant=tenant) as req:
                app.messages.create(model=HAIKU, max_tokens=200, messages=[{"role": "user", "content": text}])
                req.accept()
        sent = gw_spans.get_finished_spans()
    lake_from_sdk_spans([*sent, *app_spans.get_finished_spans()], cfg)
    assert q(cfg, "SELECT tenant, count(*) FROM requests_raw GROUP BY ALL ORDER BY ALL") == [
        ("acme", 1), ("default", 2), ("globex", 1)]
    assert q(cfg, "SELECT count(*) FROM lookups_raw") == [(2,)]  # one lookup per gateway request
    acme_text = "SELECT count(*) FROM calls_raw WHERE input_messages LIKE '%acme invoice%'"
    assert q(cfg, acme_text)[0][0] > 0  # the gateway captured acme's prompt on the spans its key's tenant owns
    # the drift job's sample of acme's gateway request (the jobs read the raw spans: it names the key's tenant)
    import datetime as dt

    from costline.jobs.sampling import sample_requests
    from costline.jobs.store import job_store
    from costline.lake import open_lake

    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    con = open_lake(cfg)
    try:
        sampled = [s for tier in ("budget", "mid") for s in sample_requests(
            con, lake_path=cfg.lake.path, tier=tier, since=now - dt.timedelta(hours=1),
            until=now + dt.timedelta(hours=1), size=10, seed=1)]
    finally:
        con.close()
    assert sorted((s.query, s.tenant) for s in sampled) == [
        (EASY, "default"), ("Where is the acme invoice?", "default")]
    job_store(cfg).write("eval_items", "run1", [
        {"run_id": "run1", "request_id": s.request_id, "trace_id": s.trace_id, "ts": s.ts, "subtype": s.subtype,
         "task_type": s.task_type, "metric": "judge", "query": s.query, "student_answer": "x", "teacher_answer": "y",
         "student_score": 1.0, "teacher_score": 1.0, "query_chars": len(s.query), "tenant": s.tenant}
        for s in sampled])
    report = Lake(cfg.lake.path).forget(["acme"])
    # the item names another tenant, so it is not removed, but the report says it is left
    assert [(x.rows, x.why) for x in report.items_left] == [(1, "named")]
    # globex's app request, its gateway part, its call, the lookup and the app's span of the answer; nothing of acme's
    assert q(cfg, "SELECT tenant, count(*) FROM requests_raw GROUP BY ALL ORDER BY ALL") == [
        ("default", 1), ("globex", 1)]
    assert q(cfg, "SELECT count(*) FROM lookups_raw") == [(1,)]
    assert q(cfg, "SELECT count(*) FROM calls_raw") == [(2,)]
    assert q(cfg, acme_text) == [(0,)]
    assert q(cfg, "SELECT tenant, tier, calls FROM requests") == [("globex", "budget", 1)]


LONG_QUESTION = ("My order of three blue mugs arrived with one of them broken, the box was dented and the receipt is "
                 "missing. I would like a replacement mug sent to the same address, please. What should I do?")


@pytest.mark.parametrize("question", [LONG_QUESTION, "Hi"], ids=["framework-span-kept", "sdk-span-kept"])
def test_a_frameworks_span_of_a_direct_call_paired_with_the_gateway_calls_span_keeps_its_cost(standin, tmp_path, cfg,
                                                                                             question):
    """Inside one app request, a framework span (no response id: as OpenInference's LlamaIndex instrumentation
    writes one) of a call straight to the model runs beside the SDK's span of a call through the gateway, under the
    same parent at the same time: the views pair them by model and time, and the framework's span (more input) is
    kept with the gateway's answer id. Its output is not that answer's, so it is not the gateway request's answer:
    it stays the app request's call, at its price, and the gateway's request stays its own (the fec30c6 review's
    first case: dropping it lost the direct call's cost)."""
    from opentelemetry import context as otel_context

    before = len(standin.log.entries("anthropic"))
    app_provider, app_spans = _provider("support-app")
    recorder = Recorder(app_provider)
    framework = app_provider.get_tracer("openinference.instrumentation.llama_index")
    with gateway(standin, tmp_path, cache=DictCache()) as (gw, gw_spans):
        app = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0,
                                  open_telemetry={"tracer_provider": app_provider})
        untraced = anthropic.Anthropic(base_url=standin.url, api_key="unused", max_retries=0)
        with recorder.request(task_type="support", tenant="acme") as req:
            ctx = otel_context.get_current()
            through_gateway = []

            def ask_the_gateway():
                token = otel_context.attach(ctx)
                try:
                    through_gateway.append(app.messages.create(
                        model=HAIKU, max_tokens=200, messages=[{"role": "user", "content": EASY}]))
                finally:
                    otel_context.detach(token)

            with framework.start_as_current_span("Anthropic.chat", attributes={
                    "openinference.span.kind": "LLM", "llm.provider": "anthropic", "llm.system": "anthropic",
                    "llm.model_name": HAIKU}) as fw:
                worker = threading.Thread(target=ask_the_gateway)
                worker.start()
                own = untraced.messages.create(model=HAIKU, max_tokens=3,
                                               messages=[{"role": "user", "content": question}])
                worker.join()
                fw.set_attribute("llm.token_count.prompt", own.usage.input_tokens)
                fw.set_attribute("llm.token_count.completion", own.usage.output_tokens)
            req.accept()
        sent = gw_spans.get_finished_spans()
    served = standin.log.entries("anthropic")[before:]
    assert len(served) == 2 and through_gateway[0].usage.output_tokens - own.usage.output_tokens > 1
    lake_from_sdk_spans([*sent, *app_spans.get_finished_spans()], cfg)
    # the app's request keeps its call (one of the two paired spans), the gateway's request its own, a part of the
    # app's request all the same (its tenant, so a forget of acme covers it)
    assert q(cfg, "SELECT service_name, tenant, calls FROM requests ORDER BY service_name") == [
        ("costline-gateway", "acme", 1), ("support-app", "acme", 1)]
    if question == LONG_QUESTION:  # the framework's span (more input) is kept: both calls paid, each once
        assert own.usage.input_tokens > through_gateway[0].usage.input_tokens
        price = sum(_price(e.model, e.input_tokens, e.output_tokens) for e in served)
        assert q(cfg, "SELECT sum(cost_usd), count(*) FROM calls") == [(pytest.approx(price, rel=1e-9), 2)]
