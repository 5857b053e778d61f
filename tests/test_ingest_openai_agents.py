"""The OpenAI Agents SDK (``openai-agents``) through its OpenTelemetry bridges: each model call once.

``openai-agents`` 0.24.0 cannot share costline's environment (it pins ``websockets`` < 17; the dev
environment has 17.4, and no older openai-agents release both works with openai 3.x and installs
without moving a package), so, as for LiteLLM, the real packages ran in a virtual environment of their
own (openai 3.57.0, openai-agents 0.24.0, openinference-instrumentation-openai-agents 2.6.0,
opentelemetry-instrumentation-openai-agents 0.62.4, opentelemetry-instrumentation-openai 0.62.4,
openinference-instrumentation-openai 0.1.66, opentelemetry-sdk 1.45.2) against costline's stand-in
(``StandInServer``, ``POST /v1/responses`` and ``/v1/chat/completions``), and their spans are replayed here
exactly as they were exported (content attributes left out: prompts, outputs, tool schemas).

Each recording is one process, one bridge combination, the same five runs:

* ``tool``: ``Runner.run`` of a triage agent (``OpenAIResponsesModel``, long cached instructions) that calls
  a function tool, then answers (two model calls, the second reading the prompt cache),
* ``handoff``: the triage agent hands off to a billing agent (two model calls),
* ``streamed``: ``Runner.run_streamed`` (one model call),
* ``chat``: an agent on ``OpenAIChatCompletionsModel`` (the student model, chat completions; one call),
* ``failed``: an agent whose model the stand-in does not serve (404: one failed call).

Six paid model calls and one failed call per recording: agent, run (workflow / turn), tool and handoff
spans are no calls. Expected figures come from the stand-in's own log of what it served (recorded with the
spans, cross-checked with the usage the SDK returned), priced with the hand-written prices below.
"""

from __future__ import annotations

import json
import pathlib

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from costline.config import Config, LakeConfig, ModelPrice, PricingConfig
from costline.sim.synth import set_anyvalue

from figures_lake import lake_from_messages, query_lake as q
from sdk_hygiene import (openllmetry_forgets_responses,  # noqa: F401 (autouse fixture)
                         restore_sdk_classes, sdk_class_attributes)

# Hand-written prices, USD per million tokens (not costline's defaults, so nothing leaks from them).
GPT_MODEL, GPT_IN, GPT_OUT = "gpt-5-mini", 0.25, 2.0
STUDENT_MODEL, STUDENT_IN, STUDENT_OUT = "costline-student", 0.5, 2.0  # priced here as a paid API model
READ_X = 0.1  # cached input at a tenth of the input price (costline's default multiplier, written out here)
PRICES = {GPT_MODEL: (GPT_IN, GPT_OUT), STUDENT_MODEL: (STUDENT_IN, STUDENT_OUT)}
#: The spans each combination produced, recorded against the stand-in (tests/data/recorders/record_agents.py)
#: with what it served.
RECORDED = json.loads((pathlib.Path(__file__).parent / "data" / "openai_agents_spans.json").read_text())


@pytest.fixture
def cfg(tmp_path) -> Config:
    return Config(lake=LakeConfig(path=tmp_path / "lake"), pricing=PricingConfig(models=(
        ModelPrice(GPT_MODEL, "budget", provider="openai", input_per_mtok=GPT_IN, output_per_mtok=GPT_OUT),
        ModelPrice(STUDENT_MODEL, "budget", provider="openai", input_per_mtok=STUDENT_IN,
                   output_per_mtok=STUDENT_OUT)),
        student_usd_per_hour=0.0, student_providers=(), cache_read_multiplier=READ_X))






T0 = 1_796_000_000_000_000_000
KINDS = {"INTERNAL": 1, "SERVER": 2, "CLIENT": 3}
STATUS = {"UNSET": 0, "OK": 1, "ERROR": 2}


def _messages(spans: list) -> list[bytes]:
    """The recorded spans as the exporter sent them: one OTLP message per trace and scope."""
    groups: dict[tuple[int, str], list] = {}
    for s in spans:
        groups.setdefault((s[2], s[0]), []).append(s)
    out = []
    for (trace, scope), group in groups.items():
        req = ExportTraceServiceRequest()
        ss = req.resource_spans.add().scope_spans.add()
        ss.scope.name = scope
        for _scope, name, _trace, span_id, parent, kind, start, end, status, events, attrs in group:
            p = ss.spans.add()
            p.trace_id = (trace + 1).to_bytes(16, "big")
            p.span_id = bytes.fromhex(span_id)
            if parent:
                p.parent_span_id = bytes.fromhex(parent)
            p.name, p.kind, p.status.code = name, KINDS[kind], STATUS[status]
            p.start_time_unix_nano, p.end_time_unix_nano = T0 + start, T0 + end
            for event in events:
                p.events.add(name=event, time_unix_nano=T0 + end)
            for k, v in attrs.items():
                if v is not None:  # the recorder's null: no such attribute
                    set_anyvalue(p.attributes.add(key=k).value, v)
        out.append(req.SerializeToString())
    return out


def _usd(model: str, input_tokens: int, output_tokens: int, cached: int) -> float:
    i, o = PRICES[model]
    return ((input_tokens - cached) * i + cached * i * READ_X + output_tokens * o) / 1e6


def _served(rec: dict) -> list:
    """(model, input, output, cached) of each paid call, from the stand-in's own log."""
    return [(m, i, o, c) for m, status, paid, i, o, c in rec["served"] if paid]


#: Recordings whose bridge writes no usage on the chat-completions model call (OpenLLMetry's
#: opentelemetry-instrumentation-openai-agents 0.62.4 reads no usage from a GenerationSpanData), and no
#: openai SDK instrumentation beside it reports the call: that call is unpriced (incomplete_usage), never $0.
CHAT_USAGE_MISSING = {"ll-agents"}
COMBINATIONS = ["oi-agents", "ll-agents", "oi-agents+ll-openai", "oi-agents+oi-openai", "ll-agents+ll-openai",
                "ll-agents+oi-openai"]


def test_the_recordings_are_what_the_stand_in_served():
    """Each recording: six paid calls and one refused, the SDK's usage equal to the stand-in's log."""
    for name in COMBINATIONS:
        rec = RECORDED[name]
        served = _served(rec)
        usages = [u for _, run in rec["usages"] for u in run]
        assert len(served) == 6 and len(rec["served"]) == 7, name
        assert [(u["input_tokens"], u["output_tokens"], u["cached_tokens"]) for u in usages] == [
            (i, o, c) for _, i, o, c in served], name
        assert sum(c for *_, c in served) > 0, name


@pytest.mark.parametrize("name", COMBINATIONS)
def test_agent_runs_count_each_model_call_once_at_the_served_price(cfg, name):
    """Every bridge alone and beside an openai SDK instrumentation: 7 calls (6 paid, 1 failed), priced as
    the stand-in served them; agent, workflow, turn, tool and handoff spans are no calls."""
    rec = RECORDED[name]
    lake_from_messages(_messages(rec["spans"]), cfg)
    served = _served(rec)
    priced = [s for s in served if not (name in CHAT_USAGE_MISSING and s[0] == STUDENT_MODEL)]
    want = sum(_usd(*s) for s in priced)
    assert q(cfg, "SELECT count(*), count(error_type), count(cost_usd) FILTER (WHERE error_type IS NULL), "
                  "sum(cost_usd), sum(input_tokens), sum(output_tokens), sum(cache_read_tokens) FROM calls") == [
        (7, 1, len(priced), pytest.approx(want, rel=1e-9), sum(s[1] for s in priced), sum(s[2] for s in priced),
         sum(s[3] for s in priced))]
    assert q(cfg, "SELECT DISTINCT operation FROM calls") == [("chat",)]
    assert q(cfg, "SELECT count(*) FROM calls WHERE error_type IS NULL AND cost_usd IS NULL "
                  "AND pricing_status <> 'incomplete_usage'") == [(0,)]
    assert q(cfg, "SELECT count(*), count(*) FILTER (WHERE success), sum(cost_usd) FROM requests") == [
        (7, 6, pytest.approx(want, rel=1e-9))]


def test_openllmetry_agents_bridge_spans_carry_a_response_model_but_no_request_model():
    """The facts behind the docs table: OpenLLMetry's agents bridge writes a Responses model call as
    ``openai.response`` with gen_ai.response.model and no gen_ai.request.model, and its handoff as
    gen_ai.operation.name = handoff; OpenInference's writes ``response`` / ``generation`` LLM spans with
    llm.model_name and no response id."""
    ll = [s for s in RECORDED["ll-agents"]["spans"] if s[0] == "opentelemetry.instrumentation.openai_agents"]
    responses = [s[10] for s in ll if s[1] == "openai.response" and s[10].get("gen_ai.response.id")]
    assert len(responses) == 5
    assert all(a.get("gen_ai.request.model") is None and a["gen_ai.response.model"] == GPT_MODEL for a in responses)
    assert {s[10].get("gen_ai.operation.name") for s in ll} == {"chat", "execute_tool", "handoff", "invoke_agent",
                                                                None}
    oi = [s for s in RECORDED["oi-agents"]["spans"] if s[10].get("openinference.span.kind") == "LLM"]
    assert sorted(s[1] for s in oi) == ["generation"] + ["response"] * 6
    assert all("llm.token_count.prompt" in s[10] for s in oi if s[8] == "OK")



# -- live: the same runs through the real packages, where openai-agents is installed ------------------------
AGENTS_ABSENT = ("openai-agents is not installed: it pins websockets < 17, which this environment cannot move; "
                 "the recorded runs above stand in for it (install openai-agents 0.24 and its bridges to run this)")
SYSTEM = "You answer questions about our refund policy. " * 60  # long enough to be prompt-cached



async def _agent_runs(client, agents) -> list:
    """The five runs of the recordings; the usage of each model call the SDK returned."""
    import openai

    @agents.function_tool
    def lookup_order(order_id: str) -> str:
        """Look an order up."""
        return f"order {order_id}: shipped"

    responses_model = agents.OpenAIResponsesModel(GPT_MODEL, openai_client=client)
    billing = agents.Agent(name="Billing agent", instructions="Billing. " + SYSTEM, model=responses_model)
    triage = agents.Agent(name="Triage agent", instructions=SYSTEM, model=responses_model, tools=[lookup_order],
                          handoffs=[billing])
    usages = []
    for question in ("please lookup_order 42", "transfer_to_billing_agent: I was charged twice"):
        usages += [r.usage for r in (await agents.Runner.run(triage, question)).raw_responses]
    streamed = agents.Runner.run_streamed(triage, "Stream the refund steps")
    async for _ in streamed.stream_events():
        pass
    usages += [r.usage for r in streamed.raw_responses]
    chat = agents.Agent(name="Chat agent", instructions="Be brief.",
                        model=agents.OpenAIChatCompletionsModel(STUDENT_MODEL, openai_client=client))
    usages += [r.usage for r in (await agents.Runner.run(chat, "Summarise ticket 7")).raw_responses]
    broken = agents.Agent(name="Broken agent", instructions="x",
                          model=agents.OpenAIResponsesModel("gpt-unknown", openai_client=client))
    with pytest.raises(openai.NotFoundError):
        await agents.Runner.run(broken, "hello")
    return usages


def _live_instrumentors(name: str) -> list:
    out = []
    for part in name.split("+"):
        if part == "oi-agents":
            mod = pytest.importorskip("openinference.instrumentation.openai_agents")
            out.append((mod.OpenAIAgentsInstrumentor(), {"exclusive_processor": False}))
        elif part == "ll-agents":
            mod = pytest.importorskip("opentelemetry.instrumentation.openai_agents")
            out.append((mod.OpenAIAgentsInstrumentor(), {}))
        elif part == "ll-openai":
            out.append((pytest.importorskip("opentelemetry.instrumentation.openai").OpenAIInstrumentor(), {}))
        elif part == "oi-openai":
            out.append((pytest.importorskip("openinference.instrumentation.openai").OpenAIInstrumentor(), {}))
    return out


@pytest.mark.parametrize("name", COMBINATIONS)
def test_live_agent_runs_count_each_model_call_once_at_the_served_price(cfg, name):
    """The recordings' runs, live: real openai-agents and bridges against the stand-in, spans into the lake."""
    agents = pytest.importorskip("agents", reason=AGENTS_ABSENT)
    import asyncio

    import openai
    import openai.resources.chat.completions.completions  # noqa: F401  (so the snapshot below holds them)
    import openai.resources.responses.responses  # noqa: F401
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from costline.serving.settings import StandInConfig
    from costline.sim.standin import StandInServer
    from figures_lake import lake_from_sdk_spans

    standin = StandInServer(StandInConfig(port=0, latency_scale=0.0, min_cache_tokens=100), pricing=PricingConfig(
        models=(ModelPrice(GPT_MODEL, "budget", provider="openai"),)))
    standin.start()
    exporter, provider = InMemorySpanExporter(), TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    before = sdk_class_attributes()
    agents.set_trace_processors([])  # nothing goes to api.openai.com: only the bridges' processors
    instrumentors = _live_instrumentors(name)
    for inst, kwargs in instrumentors:
        inst.instrument(tracer_provider=provider, **kwargs)
    try:
        client = openai.AsyncOpenAI(base_url=standin.openai_url, api_key="x", max_retries=0)
        usages = asyncio.run(_agent_runs(client, agents))
    finally:
        for inst, _ in reversed(instrumentors):
            inst.uninstrument()
        agents.set_trace_processors([])
        restore_sdk_classes(before)  # OpenLLMetry's uninstrument() leaves Responses.create wrapped
        standin.shutdown()
        provider.shutdown()
    paid = [e for e in standin.log.paid()]
    assert [(u.input_tokens, u.output_tokens) for u in usages] == [(e.input_tokens, e.output_tokens) for e in paid]
    assert len(paid) == 6 and len(standin.log.entries()) == 7 and sum(e.cache_read_tokens for e in paid) > 0
    lake_from_sdk_spans(exporter.get_finished_spans(), cfg)
    served = [(e.model, e.input_tokens, e.output_tokens, e.cache_read_tokens) for e in paid]
    priced = [s for s in served if not (name in CHAT_USAGE_MISSING and s[0] == STUDENT_MODEL)]
    want = sum(_usd(*s) for s in priced)
    assert q(cfg, "SELECT count(*), count(error_type), count(cost_usd) FILTER (WHERE error_type IS NULL), "
                  "sum(cost_usd), sum(input_tokens), sum(output_tokens), sum(cache_read_tokens) FROM calls") == [
        (7, 1, len(priced), pytest.approx(want, rel=1e-9), sum(s[1] for s in priced), sum(s[2] for s in priced),
         sum(s[3] for s in priced))]
    assert q(cfg, "SELECT DISTINCT operation FROM calls") == [("chat",)]


