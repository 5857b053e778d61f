"""Agent frameworks that emit OpenTelemetry GenAI spans natively: each model call counted once.

An agent framework reports an agent run as a tree: the run (``invoke_agent``), its steps (Strands'
``execute_event_loop_cycle``), its tools (``execute_tool``) and, inside, one span per model request
(``chat``). Only the model requests are calls; the run's span often carries the usage of all its
calls. The spans go through the processor's decode / flatten / commit path into a lake in tmp_path
and the views are compared with what costline's stand-in served, priced with the hand-written prices
below (never costline's pricing code).

* **Strands Agents** (``strands-agents``, AWS; scope ``strands.telemetry.tracer``) cannot share the
  test venv: it depends on boto3, whose botocore needs ``python-dateutil < 3`` (the venv has 4.0.0),
  and its ``anthropic`` extra pins ``anthropic < 1`` (the venv has 2.14). Its spans were recorded in a
  virtual environment of its own (strands-agents 1.62.0, anthropic 0.125.0, openai 2.54.0,
  opentelemetry-sdk 1.45.1, opentelemetry-instrumentation-anthropic 0.62.4; and, for the anthropic SDK's
  own spans, strands-agents 1.62.0 without its anthropic extra on anthropic 2.14.0) against the
  stand-in, with the stand-in's log of what it served, into ``tests/data/strands_agents_spans.json``
  (gzipped OTLP protobuf, one message per trace); the tests replay them (as the LiteLLM test does).
* **Microsoft Agent Framework** (``agent-framework-core`` 1.23.0 + ``agent-framework-openai`` 1.17.0;
  scope ``agent_framework``) installs beside the pinned venv and is driven live against the stand-in.
  Its Anthropic client (``agent-framework-anthropic`` 1.0.0b261022) pins ``anthropic < 2``: its spans
  were recorded in a virtual environment of its own (anthropic 1.17.0, whose client writes the SDK's
  own spans too when given a tracer provider) into ``tests/data/agent_framework_anthropic_spans.json``.
* **CrewAI** (``crewai`` 1.15.30 pins ``openai < 3``) has no GenAI spans of its own (its telemetry goes
  to CrewAI); its instrumentors, OpenLLMetry's ``opentelemetry-instrumentation-crewai`` 0.62.4 and
  OpenInference's ``openinference-instrumentation-crewai`` 1.1.21, were recorded in a virtual
  environment of their own (anthropic 0.73.0, litellm 1.110.2) into ``tests/data/crewai_spans.json``.

The recorders (and how to run them again) are in ``tests/data/recorders/``.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import gzip
import json
import pathlib

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costline.config import Config, LakeConfig, ModelPrice, PricingConfig
from costline.serving.settings import StandInConfig
from costline.sim.standin import StandInServer

from figures_lake import lake_from_messages, lake_from_sdk_spans, query_lake as q
from sdk_hygiene import pristine_sdks  # noqa: F401 (autouse fixture)

# Hand-written prices, USD per million tokens (not costline's defaults, so nothing leaks from them).
HAIKU_IN, HAIKU_OUT = 1.0, 5.0
GPT_IN, GPT_OUT = 0.5, 2.0  # the stand-in's OpenAI-compatible model, priced here as a paid API model
READ_X, WRITE_X = 0.1, 1.25
STUDENT_MODEL = "costline-student"
SYSTEM = "You answer questions about our refund policy. " * 20  # long enough to be prompt-cached

#: The stand-in's OpenAI Responses API (function calls, automatic prompt caching), which Agent Framework's
#: OpenAIChatClient speaks; without it only the chat-completions client is driven.
RESPONSES_API = hasattr(StandInServer, "_responses")
STRANDS_DATA = pathlib.Path(__file__).parent / "data" / "strands_agents_spans.json"
CREWAI_DATA = pathlib.Path(__file__).parent / "data" / "crewai_spans.json"
AF_ANTHROPIC_DATA = pathlib.Path(__file__).parent / "data" / "agent_framework_anthropic_spans.json"


@pytest.fixture
def cfg(tmp_path) -> Config:
    return Config(lake=LakeConfig(path=tmp_path / "lake"), pricing=PricingConfig(
        models=(ModelPrice("claude-haiku-4-5", "budget", input_per_mtok=HAIKU_IN, output_per_mtok=HAIKU_OUT),
                ModelPrice(STUDENT_MODEL, "budget", provider="openai", input_per_mtok=GPT_IN,
                           output_per_mtok=GPT_OUT)),
        student_usd_per_hour=0.0, student_providers=()))




def served_usd(entries) -> tuple[int, float, int, int]:
    """(paid calls, their price, cache reads, cache writes) from the stand-in's log of what it served.

    Each entry has ``api``, ``paid``, ``input_tokens`` (all input: cached included), ``output_tokens``,
    ``cache_read_tokens``, ``cache_creation_tokens``; OpenAI's cached reads (the Responses API's automatic
    caching) are priced like Anthropic's, at READ_X of the input price."""
    usd, reads, writes, n = 0.0, 0, 0, 0
    for e in entries:
        get = e.get if isinstance(e, dict) else (lambda k, e=e: getattr(e, k))
        if not get("paid"):
            continue
        n += 1
        fin, fout = (GPT_IN, GPT_OUT) if get("api") == "openai" else (HAIKU_IN, HAIKU_OUT)
        read, write = get("cache_read_tokens"), get("cache_creation_tokens")
        fresh = get("input_tokens") - read - write
        usd += (fresh * fin + read * fin * READ_X + write * fin * WRITE_X + get("output_tokens") * fout) / 1e6
        reads += read
        writes += write
    return n, usd, reads, writes


# -- Strands Agents (recorded in a virtual environment of its own, replayed) -------------------------------
def _recorded(path: pathlib.Path, mode: str) -> tuple[list[bytes], list[dict]]:
    if not path.exists():
        pytest.skip(f"{path} is missing")
    got = json.loads(path.read_text())["modes"][mode]
    return [gzip.decompress(base64.b64decode(m)) for m in got["otlp_gzip"]], got["served"]


def _strands(mode: str) -> tuple[list[bytes], list[dict]]:
    return _recorded(STRANDS_DATA, mode)


def _spans(messages: list[bytes]) -> list[tuple[str, object]]:
    out = []
    for value in messages:
        for rs in ExportTraceServiceRequest.FromString(value).resource_spans:
            for ss in rs.scope_spans:
                out.extend((ss.scope.name, s) for s in ss.spans)
    return out


def _attr(span, key: str):
    for kv in span.attributes:
        if kv.key == key:
            return getattr(kv.value, kv.value.WhichOneof("value"))
    return None


def test_strands_recording_is_the_span_tree_strands_writes():
    """What the recording holds (and what the tests below rely on): five agent runs, through Strands'
    AnthropicModel (a run that failed on the stand-in's 400, a cached system prompt written, read, and
    read again streamed) and its OpenAIResponsesModel (a run that called a tool: two model requests).
    Each run is a trace: ``invoke_agent Strands Agents`` > ``execute_event_loop_cycle`` > ``chat`` and
    ``execute_tool {name}``; every span says ``gen_ai.system`` = ``strands-agents`` (not the model's
    provider) and Strands' ``chat`` has no response id."""
    messages, served = _strands("alone")
    spans = _spans(messages)
    assert {scope for scope, _ in spans} == {"strands.telemetry.tracer"}
    names = collections.Counter(s.name for _, s in spans)
    assert names == {"invoke_agent Strands Agents": 5, "execute_event_loop_cycle": 6, "chat": 6,
                     "execute_tool get_order_status": 1}
    ops = collections.Counter(_attr(s, "gen_ai.operation.name") for _, s in spans)
    assert ops == {"invoke_agent": 5, "execute_event_loop_cycle": 6, "chat": 6, "execute_tool": 1}
    assert {_attr(s, "gen_ai.system") for _, s in spans} == {"strands-agents"}
    assert all(_attr(s, "gen_ai.response.id") is None for _, s in spans)
    by_id = {s.span_id: s for _, s in spans}
    assert {by_id[s.parent_span_id].name for _, s in spans if s.name == "chat"} == {"execute_event_loop_cycle"}
    assert [e["status"] for e in served] == [400, 200, 200, 200, 200, 200]
    assert any(e["cache_read_tokens"] for e in served) and any(e["cache_creation_tokens"] for e in served)
    beside, _ = _strands("openllmetry")
    assert collections.Counter(scope for scope, _ in _spans(beside)) == {
        "strands.telemetry.tracer": 18, "opentelemetry.instrumentation.anthropic": 3}
    sdk = _spans(_strands("sdk")[0])
    assert collections.Counter(scope for scope, _ in sdk) == {"strands.telemetry.tracer": 18,
                                                               "com.anthropic.sdk.python": 4}
    by_id = {s.span_id: s for _, s in sdk}
    assert {by_id[s.parent_span_id].name for scope, s in sdk if scope == "com.anthropic.sdk.python"} == {"chat"}


def test_strands_agent_runs_count_each_model_call_once_at_the_served_price(cfg):
    """Strands alone: its six ``chat`` spans are the calls (five served, one failed), at the price of
    what the stand-in served, cached input priced as cached; the agent run (``invoke_agent``, with the
    run's total usage), the event-loop cycle (``execute_event_loop_cycle``) and the tool
    (``execute_tool``) are no calls."""
    messages, served = _strands("alone")
    lake_from_messages(messages, cfg)
    n, usd, reads, writes = served_usd(served)
    assert n == 5
    assert q(cfg, "SELECT count(*), count(error_type), count(cost_usd), sum(cost_usd), sum(cache_read_tokens), "
                  "sum(cache_creation_tokens) FROM calls") == [(6, 1, 6, pytest.approx(usd, rel=1e-9), reads, writes)]
    assert q(cfg, "SELECT DISTINCT operation FROM calls") == [("chat",)]
    assert q(cfg, "SELECT error_type FROM calls WHERE error_type IS NOT NULL") == [("anthropic.BadRequestError",)]
    assert q(cfg, "SELECT model, sum(input_tokens), sum(output_tokens) FROM calls GROUP BY 1 ORDER BY 1") == [
        (m, sum(e["input_tokens"] for e in served if e["model"] == m and e["paid"]),
         sum(e["output_tokens"] for e in served if e["model"] == m and e["paid"]))
        for m in ("claude-haiku-4-5", STUDENT_MODEL)]
    # each call a request of its own (no costline.request around them): the failed one is no success
    assert q(cfg, "SELECT count(*), count(*) FILTER (WHERE success), sum(cost_usd) FROM requests") == [
        (6, 5, pytest.approx(usd, rel=1e-9))]


def test_strands_beside_the_anthropic_sdk_instrumentation_counts_each_call_once(cfg):
    """Strands + OpenLLMetry's anthropic instrumentor (the SDK-level span, ``anthropic.chat``, a child
    of Strands' ``chat``, with the response id Strands' span lacks): still one call per model request.
    OpenLLMetry adds one output token to a streamed call (Strands always streams), so the price may be
    over by at most that token per call; OpenLLMetry writes no span for the stream that failed to open."""
    messages, served = _strands("openllmetry")
    lake_from_messages(messages, cfg)
    _, usd, reads, writes = served_usd(served)
    anthropic_calls = sum(1 for e in served if e["paid"] and e["api"] == "anthropic")
    (count, failed, cost, got_reads, got_writes), = q(
        cfg, "SELECT count(*), count(error_type), sum(cost_usd), sum(cache_read_tokens), "
             "sum(cache_creation_tokens) FROM calls")
    assert (count, failed, got_reads, got_writes) == (6, 1, reads, writes)
    assert usd - 1e-12 <= cost <= usd + anthropic_calls * HAIKU_OUT / 1e6 + 1e-12
    assert q(cfg, "SELECT count(*), count(*) FILTER (WHERE success) FROM requests") == [(6, 5)]


def test_strands_beside_the_anthropic_sdks_own_spans_counts_each_call_once(cfg):
    """Strands on anthropic 2.x with the client's own spans on (``client_args={"open_telemetry":
    {"tracer_provider": ...}}``): the SDK's ``anthropic.messages.create`` (provider ``anthropic``, response
    id, exact usage) is a child of Strands' ``chat``; one call per model request, at the served price, and
    the failed request is one failed call, not two."""
    messages, served = _strands("sdk")
    lake_from_messages(messages, cfg)
    _, usd, reads, writes = served_usd(served)
    assert q(cfg, "SELECT count(*), count(error_type), sum(cost_usd), sum(cache_read_tokens), "
                  "sum(cache_creation_tokens) FROM calls") == [(6, 1, pytest.approx(usd, rel=1e-9), reads, writes)]
    assert q(cfg, "SELECT count(*), count(*) FILTER (WHERE success) FROM requests") == [(6, 5)]


# -- Microsoft Agent Framework (live) -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def standin():
    srv = StandInServer(StandInConfig(port=0, latency_scale=0.0, min_cache_tokens=100))
    srv.start()
    yield srv
    srv.shutdown()


@pytest.fixture
def agent_framework_tracing(monkeypatch):
    """Agent Framework's spans into a provider this test owns: it takes every tracer from the global
    provider through ``agent_framework.observability.get_tracer`` (instrumentation is on by default;
    ``ENABLE_INSTRUMENTATION=false`` turns it off)."""
    pytest.importorskip("agent_framework_openai",
                        reason="agent-framework-core / agent-framework-openai are not installed")
    import agent_framework
    from agent_framework import observability

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(observability, "get_tracer",
                        lambda *a, **k: provider.get_tracer("agent_framework", agent_framework.__version__))
    settings = observability.OBSERVABILITY_SETTINGS
    before = (settings.enable_instrumentation, settings.enable_sensitive_data)
    observability.enable_instrumentation(enable_sensitive_data=False)
    yield provider, exporter
    settings.enable_instrumentation, settings.enable_sensitive_data = before
    provider.shutdown()




def get_order_status(order_id: str) -> str:
    """Look an order up."""
    return f"order {order_id} shipped"


def _agent_framework_traffic(standin) -> None:
    """Agent runs through both OpenAI clients: the Responses API client (a run, a second one reading the
    automatic prompt cache, a streamed one, one that calls a tool: two model requests, one that fails)
    and the chat-completions client (a run, a second one, a streamed one, one that fails). Without the
    stand-in's Responses API, the chat-completions client only: 4 model requests, not 10."""
    import openai
    from agent_framework import Agent
    from agent_framework.openai import OpenAIChatClient, OpenAIChatCompletionClient

    async def runs() -> None:
        oa = openai.AsyncOpenAI(base_url=standin.openai_url, api_key="test", max_retries=0)
        for cls in (OpenAIChatClient, OpenAIChatCompletionClient) if RESPONSES_API else (OpenAIChatCompletionClient,):
            responses = cls is OpenAIChatClient
            agent = Agent(client=cls(model=STUDENT_MODEL, async_client=oa), instructions="Agent Framework. " + SYSTEM,
                          tools=[get_order_status] if responses else None)
            await agent.run("Where is my parcel?")
            await agent.run("Where is my parcel now?")
            async for _ in agent.run("Stream the refund steps", stream=True):
                pass
            if responses:
                await agent.run("Call get_order_status for order 42")
            standin.inject_errors(400, 1, api="openai")
            with pytest.raises(Exception, match="400|Bad Request|bad request"):
                await agent.run("bad")

    asyncio.run(runs())


def test_agent_framework_runs_count_each_model_call_once_at_the_served_price(standin, cfg, agent_framework_tracing):
    """Agent Framework alone: ``chat {model}`` spans (provider ``openai``, response id, usage with the
    Responses API's cached reads) are the calls, at the served price; ``invoke_agent`` (provider
    ``microsoft.agent_framework``, the run's usage) and ``execute_tool`` are no calls; a failed request is
    a failed call (``error.type`` = ``ChatClientException``)."""
    _, exporter = agent_framework_tracing
    standin.log.clear()
    _agent_framework_traffic(standin)
    spans = exporter.get_finished_spans()
    assert {s.instrumentation_scope.name for s in spans} == {"agent_framework"}
    ops = collections.Counter(s.attributes.get("gen_ai.operation.name") for s in spans)
    assert ops == ({"chat": 10, "invoke_agent": 9, "execute_tool": 1} if RESPONSES_API
                   else {"chat": 4, "invoke_agent": 4})
    lake_from_sdk_spans(spans, cfg)
    n, usd, reads, _ = served_usd(standin.log.entries())
    calls, failed = (10, 2) if RESPONSES_API else (4, 1)
    assert n == calls - failed and (reads > 0 or not RESPONSES_API)
    assert q(cfg, "SELECT count(*), count(error_type), count(cost_usd), sum(cost_usd), sum(cache_read_tokens), "
                  "sum(input_tokens), sum(output_tokens) FROM calls") == [
        (calls, failed, calls, pytest.approx(usd, rel=1e-9), reads,
         sum(e.input_tokens for e in standin.log.paid()), sum(e.output_tokens for e in standin.log.paid()))]
    assert q(cfg, "SELECT DISTINCT operation, provider FROM calls") == [("chat", "openai")]
    assert q(cfg, "SELECT DISTINCT error_type FROM calls WHERE error_type IS NOT NULL") == [("ChatClientException",)]
    assert q(cfg, "SELECT count(*), count(*) FILTER (WHERE success), sum(cost_usd) FROM requests") == [
        (calls, n, pytest.approx(usd, rel=1e-9))]


def test_agent_framework_beside_openllmetry_and_openai_v2_counts_each_call_once(standin, cfg,
                                                                               agent_framework_tracing):
    """Agent Framework's ``chat`` spans beside the SDK-level spans of OpenLLMetry's -openai (Responses and
    chat completions) and the official -openai-v2 (chat completions only), all children of Agent
    Framework's span with the same response id: one call per model request, at the served price."""
    openllmetry_openai = pytest.importorskip("opentelemetry.instrumentation.openai")
    openai_v2 = pytest.importorskip("opentelemetry.instrumentation.openai_v2")
    provider, exporter = agent_framework_tracing
    standin.log.clear()
    insts = (openllmetry_openai.OpenAIInstrumentor(), openai_v2.OpenAIInstrumentor())
    for inst in insts:
        inst.instrument(tracer_provider=provider)
    try:
        _agent_framework_traffic(standin)
    finally:
        for inst in reversed(insts):
            inst.uninstrument()
    spans = exporter.get_finished_spans()
    scopes = collections.Counter(s.instrumentation_scope.name for s in spans
                                 if s.attributes.get("gen_ai.operation.name") == "chat")
    calls, failed = (10, 2) if RESPONSES_API else (4, 1)
    assert scopes["agent_framework"] == calls and len(scopes) == 3, scopes
    lake_from_sdk_spans(spans, cfg)
    _, usd, reads, _ = served_usd(standin.log.entries())
    assert q(cfg, "SELECT count(*), count(error_type), sum(cost_usd), sum(cache_read_tokens) FROM calls") == [
        (calls, failed, pytest.approx(usd, rel=1e-9), reads)]
    assert q(cfg, "SELECT count(*), count(*) FILTER (WHERE success) FROM requests") == [(calls, calls - failed)]


def test_agent_framework_workflow_spans_are_no_calls(standin, cfg, agent_framework_tracing):
    """A two-agent workflow (writer > editor): ``workflow.build``, ``workflow.run``, ``executor.process``,
    ``edge_group.process`` and ``message.send`` spans (no ``gen_ai.*`` operation) and the agents'
    ``invoke_agent`` spans are no calls; the two ``chat`` spans under them are, at the served price."""
    import openai
    from agent_framework import Agent, WorkflowBuilder
    from agent_framework.openai import OpenAIChatCompletionClient

    _, exporter = agent_framework_tracing
    standin.log.clear()

    async def run() -> None:
        oa = openai.AsyncOpenAI(base_url=standin.openai_url, api_key="test", max_retries=0)
        writer, editor = (Agent(client=OpenAIChatCompletionClient(model=STUDENT_MODEL, async_client=oa), name=name,
                                instructions=f"{name.title()} the text.") for name in ("writer", "editor"))
        await WorkflowBuilder(start_executor=writer).add_edge(writer, editor).build().run("Write the refund steps")

    asyncio.run(run())
    spans = exporter.get_finished_spans()
    # agent-framework-core 1.26 names the run invoke_workflow (gen_ai.operation.name too), 1.23 workflow.run
    names = collections.Counter({"invoke_workflow": "workflow.run"}.get(n, n) for n in (s.name.split(" ")[0]
                                                                                       for s in spans))
    assert names == {"workflow.build": 1, "workflow.run": 1, "executor.process": 2, "edge_group.process": 2,
                     "message.send": 2, "invoke_agent": 2, "chat": 2}
    lake_from_sdk_spans(spans, cfg)
    n, usd, _, _ = served_usd(standin.log.entries())
    assert n == 2
    assert q(cfg, "SELECT count(*), sum(cost_usd), min(operation), max(operation) FROM calls") == [
        (2, pytest.approx(usd, rel=1e-9), "chat", "chat")]


def test_agent_framework_anthropic_calls_count_the_cached_input(cfg):
    """Agent Framework's AnthropicClient alone (recorded): ``chat claude-haiku-4-5`` spans with a response
    id, but ``gen_ai.usage.input_tokens`` is Anthropic's own ``input_tokens`` — WITHOUT the cache reads and
    writes (it copies ``usage.input_tokens`` into ``input_token_count``), as OpenLIT's does. The calls'
    input is all input (cached included) and the price that of what was served: fresh input is not lost."""
    messages, served = _recorded(AF_ANTHROPIC_DATA, "alone")
    lake_from_messages(messages, cfg)
    n, usd, reads, writes = served_usd(served)
    assert n == 3 and reads and writes
    assert q(cfg, "SELECT count(*), count(error_type), sum(cost_usd), sum(input_tokens), sum(cache_read_tokens), "
                  "sum(cache_creation_tokens) FROM calls") == [
        (4, 1, pytest.approx(usd, rel=1e-9), sum(e["input_tokens"] for e in served if e["paid"]), reads, writes)]


def test_agent_framework_anthropic_beside_the_sdks_own_spans_counts_each_call_once(cfg):
    """The same runs with the anthropic client's own spans on (its ``anthropic.messages.create`` is a child
    of Agent Framework's ``chat`` with the same response id; the failed one has none on either): one call
    per request at the served price (the SDK's span, with the complete input, is the one kept)."""
    messages, served = _recorded(AF_ANTHROPIC_DATA, "sdk")
    chats = collections.Counter(scope for scope, s in _spans(messages) if _attr(s, "gen_ai.operation.name") == "chat")
    assert chats == {"agent_framework": 4, "com.anthropic.sdk.python": 4}
    lake_from_messages(messages, cfg)
    _, usd, reads, writes = served_usd(served)
    assert q(cfg, "SELECT count(*), count(error_type), sum(cost_usd), sum(cache_read_tokens), "
                  "sum(cache_creation_tokens) FROM calls") == [(4, 1, pytest.approx(usd, rel=1e-9), reads, writes)]
    assert q(cfg, "SELECT count(*), count(*) FILTER (WHERE success) FROM requests") == [(4, 3)]


def test_agent_framework_finish_reasons_are_read_as_a_list(standin, cfg, agent_framework_tracing):
    """Agent Framework writes ``gen_ai.response.finish_reasons`` as a JSON string (``'["stop"]'``), not
    the conventions' string array: the call's finish_reasons are ``["stop"]`` / ``["tool_calls"]``."""
    _, exporter = agent_framework_tracing
    _agent_framework_traffic(standin)
    spans = exporter.get_finished_spans()
    assert {s.attributes.get("gen_ai.response.finish_reasons") for s in spans
            if s.attributes.get("gen_ai.operation.name") == "chat"} >= {'["stop"]'}
    lake_from_sdk_spans(spans, cfg)
    got = collections.Counter(tuple(r[0]) if r[0] is not None else None
                              for r in q(cfg, "SELECT finish_reasons FROM calls"))
    assert got == ({("stop",): 7, ("tool_calls",): 1, None: 2} if RESPONSES_API else {("stop",): 3, None: 1})


# -- CrewAI through its instrumentors (recorded in a virtual environment of its own, replayed) -------------
def test_crewai_workflow_task_and_agent_spans_are_no_calls_beside_the_sdk_spans(cfg):
    """CrewAI's native Anthropic provider with OpenLLMetry's crewai and anthropic instrumentors: three
    kickoffs (one failed) are ``crewai.workflow`` > ``{task}.task`` > ``{role}.agent`` (all
    ``gen_ai.operation.name`` = ``invoke_agent``, provider ``crewai``; the agent's carries the model and
    the crew's usage) > ``anthropic.chat``; only the SDK-level ``anthropic.chat`` spans are calls."""
    messages, served = _recorded(CREWAI_DATA, "openllmetry_both")
    spans = _spans(messages)
    assert collections.Counter(scope for scope, _ in spans) == {
        "opentelemetry.instrumentation.crewai.instrumentation": 9, "opentelemetry.instrumentation.anthropic": 3}
    lake_from_messages(messages, cfg)
    _, usd, _, _ = served_usd(served)
    assert q(cfg, "SELECT count(*), count(error_type), sum(cost_usd), min(instrumentation), max(instrumentation) "
                  "FROM calls") == [(3, 1, pytest.approx(usd, rel=1e-9), "opentelemetry.instrumentation.anthropic",
                                     "opentelemetry.instrumentation.anthropic")]
    assert q(cfg, "SELECT count(*), count(*) FILTER (WHERE success) FROM requests") == [(3, 2)]


def test_crewai_instrumentor_alone_reports_no_call_of_the_native_provider(cfg):
    """OpenInference's crewai instrumentor alone: a ``Crew_….kickoff`` CHAIN and a ``{role}._execute_core``
    AGENT span per kickoff, and no LLM span (CrewAI's native providers are not wrapped): nothing is a
    call; instrument the SDK (or use CrewAI's LiteLLM route) to see the calls."""
    messages, _ = _recorded(CREWAI_DATA, "openinference")
    spans = _spans(messages)
    assert collections.Counter(_attr(s, "openinference.span.kind") for _, s in spans) == {"CHAIN": 3, "AGENT": 3}
    lake_from_messages(messages, cfg)
    assert q(cfg, "SELECT count(*) FROM calls") == [(0,)]
    assert q(cfg, "SELECT count(*) FROM requests") == [(0,)]


def test_crewai_litellm_route_calls_without_usage_are_unpriced_not_free(cfg):
    """CrewAI's LiteLLM route (``crewai.llm.LLM``) with OpenLLMetry's crewai instrumentor: a
    ``{model}.llm`` span per model request (provider ``anthropic``, model ``anthropic/claude-haiku-4-5``,
    no response id) whose usage CrewAI 1.15 no longer exposes to it (``last_token_usage``): three calls,
    the failed one a failure, the two answered ones unpriced (``incomplete_usage``), never $0."""
    messages, served = _recorded(CREWAI_DATA, "openllmetry_litellm")
    lake_from_messages(messages, cfg)
    assert sum(1 for e in served if e["paid"]) == 2
    assert q(cfg, "SELECT count(*), count(error_type), count(cost_usd), "
                  "count(*) FILTER (WHERE pricing_status = 'incomplete_usage') FROM calls") == [(3, 1, 1, 2)]
    assert q(cfg, "SELECT count(*), count(*) FILTER (WHERE success), sum(unpriced_calls) FROM requests") == [(3, 2, 2)]
