"""The OpenAI Responses API through real instrumentations: each ``client.responses.create`` counted once.

The installed openai SDK calls costline's stand-in ``POST /v1/responses`` (non-streamed, streamed with
``stream=True`` and through ``client.responses.stream``, a prompt read from OpenAI's automatic prompt cache,
a failed call). OpenLLMetry's ``opentelemetry-instrumentation-openai`` (span ``openai.response``) and
OpenInference's ``openinference-instrumentation-openai`` (span ``Response``, no response id) report them,
alone and together; the official ``opentelemetry-instrumentation-openai-v2`` (2.4b0) does not instrument
the Responses API at all (it wraps chat completions and embeddings only). The spans go through the
processor's decode / flatten / commit path into a lake in tmp_path and the views are compared with figures
computed here from the usage the SDK returned and the stand-in's own log, priced with the hand-written
prices below (never costline's pricing code).
"""

from __future__ import annotations

import json

import pytest

from costline.config import Config, LakeConfig, ModelPrice, PricingConfig
from costline.serving.settings import StandInConfig
from costline.sim.standin import StandInServer

from figures_lake import lake_from_sdk_spans, query_lake as q
from scripted_http import ScriptedHttp, send_json
from sdk_hygiene import openllmetry_forgets_responses, pristine_sdks  # noqa: F401 (autouse fixtures)

openai = pytest.importorskip("openai")
# the resource modules the instrumentors wrap, loaded now so that the pristine_sdks snapshot holds their classes
# (openai.resources loads them lazily; OpenLLMetry's uninstrument() leaves Responses.create wrapped: its
# unwrap list stops at the first ImportError of a beta module)
import openai.resources.chat.completions.completions  # noqa: E402
import openai.resources.embeddings  # noqa: E402
import openai.resources.responses.responses  # noqa: E402

# Hand-written prices, USD per million tokens (not costline's defaults, so nothing leaks from them).
GPT_MODEL = "gpt-5-mini"
GPT_IN, GPT_OUT = 0.25, 2.0
READ_X = 0.1  # cached input at a tenth of the input price (costline's default multiplier, written out here)
SYSTEM = "You answer questions about our refund policy. " * 60  # long enough to be prompt-cached


@pytest.fixture(scope="module")
def standin():
    srv = StandInServer(StandInConfig(port=0, latency_scale=0.0, min_cache_tokens=100), pricing=PricingConfig(
        models=(ModelPrice(GPT_MODEL, "budget", provider="openai", input_per_mtok=1.0, output_per_mtok=1.0),)))
    srv.start()
    yield srv
    srv.shutdown()


@pytest.fixture
def cfg(tmp_path) -> Config:
    return Config(lake=LakeConfig(path=tmp_path / "lake"), pricing=PricingConfig(
        models=(ModelPrice(GPT_MODEL, "budget", provider="openai", input_per_mtok=GPT_IN, output_per_mtok=GPT_OUT),),
        student_usd_per_hour=0.0, student_providers=(), cache_read_multiplier=READ_X))






def usd(u) -> float:
    """OpenAI's usage: input_tokens includes the cached tokens."""
    cached = u.input_tokens_details.cached_tokens
    return ((u.input_tokens - cached) * GPT_IN + cached * GPT_IN * READ_X + u.output_tokens * GPT_OUT) / 1e6



def _instrumentors(names: str) -> list:
    out = []
    for name in names.split("+"):
        if name == "openllmetry":
            out.append(pytest.importorskip("opentelemetry.instrumentation.openai").OpenAIInstrumentor())
        elif name == "openinference":
            out.append(pytest.importorskip("openinference.instrumentation.openai").OpenAIInstrumentor())
        elif name == "openai-v2":
            out.append(pytest.importorskip("opentelemetry.instrumentation.openai_v2").OpenAIInstrumentor())
    return out


def _traffic(standin, provider) -> list:
    """Five Responses calls, each in an app's server span: the usages the SDK returned (four; the fifth fails)."""
    client = openai.OpenAI(base_url=standin.openai_url, api_key="test", max_retries=0)
    tracer = provider.get_tracer("app")
    usages = []
    with tracer.start_as_current_span("POST /ask"):  # writes the instructions' prefix into the prompt cache
        usages.append(client.responses.create(model=GPT_MODEL, instructions=SYSTEM,
                                              input="Can I return a damaged item?").usage)
    with tracer.start_as_current_span("POST /ask"):  # reads it: cached_tokens
        usages.append(client.responses.create(model=GPT_MODEL, instructions=SYSTEM, max_output_tokens=64,
                                              input=[{"role": "user", "content": "Where is my parcel?"}]).usage)
    with tracer.start_as_current_span("POST /ask"):
        completed = [e.response for e in client.responses.create(model=GPT_MODEL, input="Stream the refund steps",
                                                                 stream=True)
                     if e.type == "response.completed"]
        usages.append(completed[0].usage)
    with tracer.start_as_current_span("POST /ask"):
        with client.responses.stream(model=GPT_MODEL, input=[
                {"role": "user", "content": [{"type": "input_text", "text": "Stream the delivery steps"}]}]) as stream:
            for _ in stream:
                pass
            usages.append(stream.get_final_response().usage)
    standin.inject_errors(500, 1, api="openai")
    with tracer.start_as_current_span("POST /ask"):
        with pytest.raises(openai.InternalServerError):
            client.responses.create(model=GPT_MODEL, input="bad")
    return usages


COMBINATIONS = ["openllmetry", "openinference", "openllmetry+openinference", "openllmetry+openai-v2",
                "openllmetry+openinference+openai-v2", "openinference+openai-v2"]


@pytest.mark.parametrize("names", COMBINATIONS)
def test_responses_calls_count_once_at_the_price_of_the_returned_usage(standin, cfg, spans, names):
    """Each combination: 5 calls (one failed, unpriced as $0), 4 priced from the usage the SDK returned,
    the cached read counted as such; every call the request of its app span."""
    provider, exporter = spans
    standin.log.clear()
    instrumentors = _instrumentors(names)
    for inst in instrumentors:
        inst.instrument(tracer_provider=provider)
    try:
        usages = _traffic(standin, provider)
    finally:
        for inst in reversed(instrumentors):
            inst.uninstrument()
    spans = exporter.get_finished_spans()
    calls = [s for s in spans if s.name != "POST /ask"]
    reporting = {n for n in names.split("+") if n != "openai-v2"}  # openai-v2 2.4b0 has no Responses wrapper
    assert len(calls) == 5 * len(reporting)
    paid = standin.log.paid()
    assert len(paid) == 4 and len(usages) == 4
    assert [u.input_tokens for u in usages] == [e.input_tokens for e in paid]  # the SDK saw what was served
    cached = sum(u.input_tokens_details.cached_tokens for u in usages)
    assert cached == sum(e.cache_read_tokens for e in paid) > 0
    lake_from_sdk_spans(spans, cfg)

    want = sum(usd(u) for u in usages)
    assert q(cfg, "SELECT count(*), count(error_type), count(cost_usd), sum(cost_usd), sum(input_tokens), "
                  "sum(output_tokens), sum(cache_read_tokens), min(provider), max(provider), min(model) "
                  "FROM calls") == [
        (5, 1, 5, pytest.approx(want, rel=1e-9), sum(u.input_tokens for u in usages),
         sum(u.output_tokens for u in usages), cached, "openai", "openai", GPT_MODEL)]
    assert q(cfg, "SELECT cost_usd, input_tokens FROM calls WHERE error_type IS NOT NULL") == [(0.0, 0)]
    assert q(cfg, "SELECT count(*), count(*) FILTER (WHERE success), sum(calls), sum(cost_usd) FROM requests") == [
        (5, 4, 5, pytest.approx(want, rel=1e-9))]


def test_openai_v2_does_not_instrument_the_responses_api(standin, spans):
    """opentelemetry-instrumentation-openai-v2 2.4b0 wraps chat completions and embeddings only: a Responses
    call leaves no span (an app traced by it alone has its Responses calls missing from the lake)."""
    provider, exporter = spans
    (inst,) = _instrumentors("openai-v2")
    inst.instrument(tracer_provider=provider)
    try:
        client = openai.OpenAI(base_url=standin.openai_url, api_key="test", max_retries=0)
        client.responses.create(model=GPT_MODEL, input="Where is my parcel?")
        client.chat.completions.create(model="costline-student", max_tokens=16,
                                       messages=[{"role": "user", "content": "Where is my parcel?"}])
    finally:
        inst.uninstrument()
    assert [s.name for s in exporter.get_finished_spans()] == ["chat costline-student"]


def test_responses_spans_carry_the_attributes_the_docs_table_names(standin, spans):
    """What each instrumentation writes on a Responses call (the facts behind docs/telemetry.md's table)."""
    provider, exporter = spans
    instrumentors = _instrumentors("openllmetry+openinference")
    for inst in instrumentors:
        inst.instrument(tracer_provider=provider)
    try:
        client = openai.OpenAI(base_url=standin.openai_url, api_key="test", max_retries=0)
        r = client.responses.create(model=GPT_MODEL, input="Where is my parcel?")
    finally:
        for inst in reversed(instrumentors):
            inst.uninstrument()
    by_scope = {s.instrumentation_scope.name: s for s in exporter.get_finished_spans()}
    assert set(by_scope) == {"opentelemetry.instrumentation.openai.v1", "openinference.instrumentation.openai"}
    ll = by_scope["opentelemetry.instrumentation.openai.v1"]
    assert ll.name == "openai.response"
    keys = ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model", "gen_ai.response.id",
            "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.usage.cache_read.input_tokens")
    assert {k: ll.attributes.get(k) for k in keys} == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": GPT_MODEL,
        "gen_ai.response.id": r.id, "gen_ai.usage.input_tokens": r.usage.input_tokens,
        "gen_ai.usage.output_tokens": r.usage.output_tokens, "gen_ai.usage.cache_read.input_tokens": 0}
    oi = by_scope["openinference.instrumentation.openai"]
    assert oi.name == "Response"
    assert {k: oi.attributes.get(k) for k in ("openinference.span.kind", "llm.system", "llm.provider",
                                              "llm.model_name", "llm.token_count.prompt",
                                              "llm.token_count.completion",
                                              "llm.token_count.prompt_details.cache_read")} == {
        "openinference.span.kind": "LLM", "llm.system": "openai", "llm.provider": None, "llm.model_name": GPT_MODEL,
        "llm.token_count.prompt": r.usage.input_tokens, "llm.token_count.completion": r.usage.output_tokens,
        "llm.token_count.prompt_details.cache_read": 0}
    # no response id attribute: only the response's JSON in output.value carries it
    assert oi.attributes["output.mime_type"] == "application/json"
    assert json.loads(oi.attributes["output.value"])["id"] == r.id


def test_responses_calls_outside_any_app_span_count_once_under_two_instrumentations(standin, cfg, spans):
    """OpenLLMetry's and OpenInference's spans of one Responses call with no span around it: OpenLLMetry
    starts its span after the call returned (a streamed one: when the stream comes back), so neither is the
    other's parent and each is a trace of its own. Still one call each (OpenInference's response JSON in
    ``output.value`` carries the id OpenLLMetry writes as gen_ai.response.id)."""
    provider, exporter = spans
    standin.log.clear()
    instrumentors = _instrumentors("openllmetry+openinference")
    for inst in instrumentors:
        inst.instrument(tracer_provider=provider)
    try:
        client = openai.OpenAI(base_url=standin.openai_url, api_key="test", max_retries=0)
        usages = [client.responses.create(model=GPT_MODEL, input=f"Where is parcel {i}?").usage for i in range(3)]
        with client.responses.stream(model=GPT_MODEL, input="Stream the refund steps") as stream:
            for _ in stream:
                pass
            usages.append(stream.get_final_response().usage)
    finally:
        for inst in reversed(instrumentors):
            inst.uninstrument()
    spans = exporter.get_finished_spans()
    assert len(spans) == 8 and len({s.context.trace_id for s in spans}) == 8  # eight traces of one span
    lake_from_sdk_spans(spans, cfg)
    want = sum(usd(u) for u in usages)
    assert q(cfg, "SELECT count(*), sum(cost_usd), sum(input_tokens) FROM calls") == [
        (4, pytest.approx(want, rel=1e-9), sum(u.input_tokens for u in usages))]


#: OpenAI's usage of the background response below: 1,000 in, 500 out.
BACKGROUND_USAGE = {"input_tokens": 1000, "output_tokens": 500, "total_tokens": 1500,
                    "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}


def _background_openai() -> ScriptedHttp:
    """What OpenAI's API does with ``background: true`` (platform.openai.com, "Background mode"), as a local server:
    the create answers ``queued`` with no usage; ``GET /v1/responses/{id}`` answers ``in_progress`` twice, then
    ``completed`` with :data:`BACKGROUND_USAGE`."""
    polls = [0]

    def answer(h, path: str, body: bytes) -> None:
        polls[0] += h.command == "GET"
        status = "queued" if h.command == "POST" else "in_progress" if polls[0] < 3 else "completed"
        done = status == "completed"
        send_json(h, {"id": "resp_bg1", "object": "response", "created_at": 1, "status": status, "model": GPT_MODEL,
                      "output": [{"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
                                  "content": [{"type": "output_text", "text": "An essay.", "annotations": []}]}]
                      if done else [], "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
                      "background": True, "usage": BACKGROUND_USAGE if done else None})

    return ScriptedHttp(answer)


@pytest.mark.parametrize("enclosed", [True, False], ids=["in-an-app-span", "bare"])
def test_a_background_response_polled_to_its_end_is_one_call_at_its_usage(cfg, spans, enclosed):
    """OpenInference's spans of a background response: the create (queued: no tokens), two polls still running (no
    tokens), the poll that finds it completed (its usage). Its cost is the completed response's, once; the polls
    before are no calls. In an app's span the create and the last poll are one call (one response id); with no span
    around them each is a trace of its own, and the create is an unpriced call (no usage yet)."""
    provider, exporter = spans
    api = _background_openai()
    (inst,) = _instrumentors("openinference")
    inst.instrument(tracer_provider=provider)
    try:
        client = openai.OpenAI(base_url=f"{api.url}/v1", api_key="test", max_retries=0)

        def run():
            r = client.responses.create(model=GPT_MODEL, input="Write an essay on refunds", background=True)
            while r.status in ("queued", "in_progress"):
                r = client.responses.retrieve(r.id)
            return r

        if enclosed:
            with provider.get_tracer("app").start_as_current_span("essay job"):
                done = run()
        else:
            done = run()
    finally:
        inst.uninstrument()
        api.close()
    assert (done.usage.input_tokens, done.usage.output_tokens) == (1000, 500)
    lake_from_sdk_spans(exporter.get_finished_spans(), cfg)
    want = (1000 * GPT_IN + 500 * GPT_OUT) / 1e6  # $0.00125
    assert q(cfg, "SELECT count(*), sum(cost_usd), sum(input_tokens), sum(output_tokens) FROM calls") == [
        (1 if enclosed else 2, pytest.approx(want, rel=1e-9), 1000, 500)]
