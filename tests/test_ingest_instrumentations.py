"""Real instrumentations, real SDK clients, costline's stand-in APIs: each model call counted once (issue 9 §1).

The anthropic SDK's own spans (scope ``com.anthropic.sdk.python``, on whenever the client has a
tracer provider), OpenLLMetry (``opentelemetry-instrumentation-anthropic`` / ``-openai``), the
official ``opentelemetry-instrumentation-openai-v2`` and costline's own wrappers report the same
calls; the spans go through the processor's decode / flatten / commit path into a lake in
tmp_path, and the views are compared with figures computed here from the responses' usage and
hand-written prices (never costline's pricing code).

OpenInference (``openinference-instrumentation-anthropic`` / ``-openai``, Arize Phoenix's conventions:
``openinference.span.kind``, ``llm.token_count.*``, failures by span status only, no response id) is
driven alone and beside the SDK's own spans.

OpenLIT (``openlit``) pins anthropic < 1 / openai < 3 in its metadata, yet its anthropic and openai
instrumentors run on anthropic 2.x / openai 3.x: scripts/test installs it with ``--no-deps`` and its
real instrumentors are driven here too (skipped, with that reason, only where it is not installed).
"""

from __future__ import annotations

import asyncio
import collections

import pytest

from costline.collectors import Recorder, instrument_anthropic, instrument_openai
from costline.config import Config, LakeConfig, ModelPrice, PricingConfig
from costline.sim.synth import export_request, span
from costline.serving.settings import StandInConfig
from costline.sim.standin import StandInServer

from figures_lake import lake_from_messages, lake_from_sdk_spans, query_lake as q
from sdk_hygiene import langfuse_openai, pristine_sdks, restore_sdk_classes, sdk_class_attributes  # noqa: F401

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")
openllmetry_anthropic = pytest.importorskip("opentelemetry.instrumentation.anthropic")
openllmetry_openai = pytest.importorskip("opentelemetry.instrumentation.openai")
openai_v2 = pytest.importorskip("opentelemetry.instrumentation.openai_v2")

# Hand-written prices, USD per million tokens (not costline's defaults, so nothing leaks from them).
HAIKU_IN, HAIKU_OUT = 1.0, 5.0
GPT_IN, GPT_OUT = 0.5, 2.0  # the stand-in's OpenAI-compatible model, priced here as a paid API model
READ_X, WRITE_X = 0.1, 1.25
STUDENT_MODEL = "costline-student"
SYSTEM = "You answer questions about our refund policy. " * 60  # long enough to be prompt-cached


@pytest.fixture(scope="module")
def standin():
    srv = StandInServer(StandInConfig(port=0, latency_scale=0.0, min_cache_tokens=100))
    srv.start()
    yield srv
    srv.shutdown()


@pytest.fixture
def cfg(tmp_path) -> Config:
    return Config(lake=LakeConfig(path=tmp_path / "lake"), pricing=PricingConfig(
        models=(ModelPrice("claude-haiku-4-5", "budget", input_per_mtok=HAIKU_IN, output_per_mtok=HAIKU_OUT),
                ModelPrice(STUDENT_MODEL, "budget", provider="openai", input_per_mtok=GPT_IN,
                           output_per_mtok=GPT_OUT)),
        student_usd_per_hour=0.0, student_providers=()))



def haiku_usd(u) -> float:
    """Anthropic's usage: input_tokens excludes the cached reads and writes."""
    read, write = u.cache_read_input_tokens or 0, u.cache_creation_input_tokens or 0
    return (u.input_tokens * HAIKU_IN + read * HAIKU_IN * READ_X + write * HAIKU_IN * WRITE_X
            + u.output_tokens * HAIKU_OUT) / 1e6




def test_anthropic_sdk_spans_and_openllmetry_count_each_call_once(standin, cfg, spans):
    """anthropic 2.x + OpenLLMetry: 40 Haiku calls are 40 calls, not 80, at the price of 40."""
    provider, exporter = spans
    instrumentor = openllmetry_anthropic.AnthropicInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    usages = []
    try:
        client = anthropic.Anthropic(base_url=standin.url, api_key="test", max_retries=0,
                                     open_telemetry={"tracer_provider": provider})
        recorder = Recorder(provider)
        for i in range(20):
            with recorder.request(task_type="faq", tenant="acme") as req:
                for j in range(2):
                    r = client.messages.create(
                        model="claude-haiku-4-5", max_tokens=64,
                        system=[{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}],
                        messages=[{"role": "user", "content": f"Question {i}.{j}: can I return a damaged item?"}])
                    usages.append(r.usage)
                req.accept()
    finally:
        instrumentor.uninstrument()
    spans = exporter.get_finished_spans()
    scopes = sorted({s.instrumentation_scope.name for s in spans if s.name != "costline.request"})
    assert scopes == ["com.anthropic.sdk.python", "opentelemetry.instrumentation.anthropic"]
    assert sum(1 for s in spans if s.name != "costline.request") == 80
    assert any(u.cache_read_input_tokens for u in usages) and any(u.cache_creation_input_tokens for u in usages)
    lake_from_sdk_spans(spans, cfg)

    want = sum(haiku_usd(u) for u in usages)
    n, cost, read, write = q(cfg, "SELECT count(*), sum(cost_usd), sum(cache_read_tokens), "
                                  "sum(cache_creation_tokens) FROM calls")[0]
    assert n == 40
    assert cost == pytest.approx(want, rel=1e-9)
    assert (read, write) == (sum(u.cache_read_input_tokens for u in usages),
                             sum(u.cache_creation_input_tokens for u in usages))
    assert q(cfg, "SELECT count(*), min(calls), max(calls), sum(cost_usd) FROM requests") == [
        (20, 2, 2, pytest.approx(want, rel=1e-9))]
    rows = q(cfg, "SELECT tier, requests, successes, cost_usd FROM tier_hourly")
    assert [r[:3] for r in rows] == [("budget", 20, 20)]  # the tier came from the calls: nobody stamped it
    assert sum(r[3] for r in rows) == pytest.approx(want, rel=1e-9)


def test_costline_wrapper_sdk_spans_and_openllmetry_count_each_call_once(standin, cfg, spans):
    """costline's own instrument_anthropic on top: three spans a call, still one call (costline's kept)."""
    provider, exporter = spans
    instrumentor = openllmetry_anthropic.AnthropicInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    usages = []
    try:
        client = anthropic.Anthropic(base_url=standin.url, api_key="test", max_retries=0,
                                     open_telemetry={"tracer_provider": provider})
        recorder = Recorder(provider)
        undo = instrument_anthropic(client, recorder, tier="budget")
        for i in range(10):
            with recorder.request(task_type="faq", tenant="acme") as req:
                usages.append(client.messages.create(
                    model="claude-haiku-4-5", max_tokens=64,
                    messages=[{"role": "user", "content": f"Where is order {i}?"}]).usage)
        standin.inject_errors(400, 1)
        with recorder.request(task_type="faq", tenant="acme"):
            with pytest.raises(anthropic.BadRequestError):
                client.messages.create(model="claude-haiku-4-5", max_tokens=64,
                                       messages=[{"role": "user", "content": "bad"}])
        undo()
    finally:
        instrumentor.uninstrument()
    spans = exporter.get_finished_spans()
    assert sum(1 for s in spans if s.name != "costline.request") == 33
    lake_from_sdk_spans(spans, cfg)
    want = sum(haiku_usd(u) for u in usages)
    assert q(cfg, "SELECT count(*), sum(cost_usd), count(*) FILTER (WHERE error_type IS NOT NULL) FROM calls") == [
        (11, pytest.approx(want, rel=1e-9), 1)]
    assert q(cfg, "SELECT DISTINCT instrumentation FROM calls") == [("costline.collectors",)]
    assert q(cfg, "SELECT count(*), sum(calls) FROM requests") == [(11, 11)]


def test_openai_clients_with_openllmetry_and_openai_v2_count_each_call_once(standin, cfg, spans):
    """OpenLLMetry's -openai, the official -openai-v2 and costline's instrument_openai on one client."""
    provider, exporter = spans
    first = openllmetry_openai.OpenAIInstrumentor()
    second = openai_v2.OpenAIInstrumentor()
    first.instrument(tracer_provider=provider)
    second.instrument(tracer_provider=provider)
    usages = []
    try:
        client = openai.OpenAI(base_url=standin.openai_url, api_key="test", max_retries=0)
        recorder = Recorder(provider)
        undo = instrument_openai(client, recorder)  # costline says provider "vllm", the others "openai"
        for i in range(12):
            with recorder.request(task_type="faq", tenant="acme") as req:
                r = client.chat.completions.create(model=STUDENT_MODEL, max_tokens=32,
                                                   messages=[{"role": "user", "content": f"Summarise ticket {i}"}])
                usages.append(r.usage)
                req.accept()
        undo()
    finally:
        second.uninstrument()
        first.uninstrument()
    spans = exporter.get_finished_spans()
    calls = [s for s in spans if s.name != "costline.request"]
    assert len({s.instrumentation_scope.name for s in calls}) == 3 and len(calls) == 36
    lake_from_sdk_spans(spans, cfg)
    want = sum((u.prompt_tokens * GPT_IN + u.completion_tokens * GPT_OUT) / 1e6 for u in usages)
    assert q(cfg, "SELECT count(*), sum(input_tokens), sum(output_tokens) FROM calls") == [
        (12, sum(u.prompt_tokens for u in usages), sum(u.completion_tokens for u in usages))]
    assert q(cfg, "SELECT count(*), sum(cost_usd) FROM requests") == [(12, pytest.approx(want, rel=1e-9))]


def test_the_sdks_content_mode_keeps_the_system_prompt_with_the_conversation(standin, cfg, spans):
    """The anthropic SDK's own spans in content mode record the system prompt apart (``gen_ai.system_instructions``,
    the conventions' since 1.37): the lake's input_messages carry it first, as a ``system`` message, as costline's
    own spans do, so the nightly jobs regenerate teacher answers with the app's system prompt."""
    from costline.jobs.sampling import parse_messages

    provider, exporter = spans
    client = anthropic.Anthropic(base_url=standin.url, api_key="k", max_retries=0, open_telemetry={
        "tracer_provider": provider, "traces": {"content_mode": "content"}})
    client.messages.create(model="claude-haiku-4-5", max_tokens=20, system="Answer in one sentence.",
                           messages=[{"role": "user", "content": "Where is my parcel?"}])
    with client.messages.stream(model="claude-haiku-4-5", max_tokens=20,  # no system prompt: messages as sent
                                messages=[{"role": "user", "content": "Can I return it?"}]) as s:
        s.until_done()
    (with_system,) = [sp for sp in exporter.get_finished_spans() if "gen_ai.system_instructions" in sp.attributes]
    assert with_system.attributes["gen_ai.system_instructions"] == '[{"type":"text","content":"Answer in one sentence."}]'
    lake_from_sdk_spans(exporter.get_finished_spans(), cfg)
    rows = sorted(parse_messages(doc) for (doc,) in q(cfg, "SELECT input_messages FROM calls"))
    assert rows == [[("system", "Answer in one sentence."), ("user", "Where is my parcel?")],
                    [("user", "Can I return it?")]]


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_beta_messages_through_costlines_wrapper_are_recorded_and_undone(standin, cfg, spans, is_async):
    """``client.beta.messages`` (apps use it for beta features: the 1M-token context, the Files API…) is the
    Messages API too: create, stream and parse are recorded by ``instrument_anthropic`` (the SDK's own spans off),
    priced as served; the undo takes the wrapper off both resources."""
    from pydantic import BaseModel

    class Answer(BaseModel):
        text: str

    provider, exporter = spans
    recorder = Recorder(provider)
    before = len(standin.log.paid())  # the stand-in serves the module's tests
    cls = anthropic.AsyncAnthropic if is_async else anthropic.Anthropic
    client = cls(base_url=standin.url, api_key="k", max_retries=0, open_telemetry=False)
    raw_view = client.beta.with_raw_response  # read before instrumenting: the SDK caches such views
    undo = instrument_anthropic(client, recorder)
    assert client.beta.with_raw_response is not raw_view  # built again, on the wrapped create
    beta = client.beta.messages
    ask = dict(model="claude-haiku-4-5", max_tokens=40, betas=["context-1m-2025-08-07"])

    async def calls() -> None:
        async def run(value):
            return await value if is_async else value

        with recorder.request(task_type="faq") as req:
            await run(beta.create(**ask, messages=[{"role": "user", "content": "Where is my parcel?"}]))
            req.accept()
        with recorder.request(task_type="faq") as req:
            if is_async:
                async with beta.stream(**ask, messages=[{"role": "user", "content": "Stream it"}]) as s:
                    await s.until_done()
            else:
                with beta.stream(**ask, messages=[{"role": "user", "content": "Stream it"}]) as s:
                    s.until_done()
            req.accept()
        with recorder.request(task_type="faq") as req:
            await run(beta.parse(**ask, messages=[{"role": "user", "content": "Answer as JSON"}],
                                 output_format=Answer))
            req.accept()
        undo()
        await run(beta.create(**ask, messages=[{"role": "user", "content": "Not recorded"}]))

    asyncio.run(calls())
    calls_ = [s for s in exporter.get_finished_spans() if s.name != "costline.request"]
    assert [s.instrumentation_scope.name for s in calls_] == ["costline.collectors"] * 3
    lake_from_sdk_spans(exporter.get_finished_spans(), cfg)
    served = standin.log.paid()[before:]
    assert len(served) == 4  # the fourth call was made, after the undo, and not recorded
    want = sum((e.input_tokens * HAIKU_IN + e.output_tokens * HAIKU_OUT) / 1e6 for e in served[:3])  # no cache here
    assert q(cfg, "SELECT count(*), min(calls), max(calls), sum(cost_usd) FROM requests") == [
        (3, 1, 1, pytest.approx(want, rel=1e-9))]


def test_third_party_spellings_are_read(cfg):
    """Attribute spellings of older OpenLLMetry, OpenLIT (Anthropic input without the cache) and the
    SDK's cache_write spelling, on spans built as those sources write them; one call each."""
    t0 = 1_790_000_000_000_000_000

    def s(sid: int, attrs: dict) -> object:
        tid = bytes([sid]) * 16  # one call per trace (in one trace, id-less overlapping spans would be one call)
        return span("chat claude-haiku-4-5", trace_id=tid, span_id=sid.to_bytes(8, "big"), start_ns=t0,
                    end_ns=t0 + 10**8, attributes={"gen_ai.request.model": "claude-haiku-4-5", **attrs})

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    def message(scope: str, spans: list) -> bytes:
        req = ExportTraceServiceRequest()
        ss = req.resource_spans.add().scope_spans.add()
        ss.scope.name = scope
        ss.spans.extend(spans)
        return req.SerializeToString()

    # the same usage in four spellings: 1000 input of which 600 read and 100 written, 50 output
    old_openllmetry = s(1, {"gen_ai.system": "Anthropic", "gen_ai.usage.prompt_tokens": 1000,
                            "gen_ai.usage.completion_tokens": 50, "gen_ai.usage.cache_read_input_tokens": 600,
                            "gen_ai.usage.cache_creation_input_tokens": 100, "gen_ai.response.id": "msg_a"})
    openlit = s(2, {"gen_ai.provider.name": "anthropic", "gen_ai.usage.input_tokens": 300,
                    "gen_ai.usage.output_tokens": 50, "gen_ai.usage.cache_read.input_tokens": 600,
                    "gen_ai.usage.cache_creation.input_tokens": 100, "gen_ai.usage.cost": 99.0,
                    "gen_ai.response.id": "msg_b"})
    sdk = s(3, {"gen_ai.provider.name": "anthropic", "gen_ai.usage.input_tokens": 1000,
                "gen_ai.usage.output_tokens": 50, "gen_ai.usage.cache_read.input_tokens": 600,
                "gen_ai.usage.cache_write.input_tokens": 100, "gen_ai.response.id": "msg_c"})
    llm = s(4, {"gen_ai.system": "anthropic", "llm.usage.prompt_tokens": 1000, "llm.usage.completion_tokens": 50,
                "gen_ai.usage.cache_read_input_tokens": 600, "gen_ai.usage.cache_creation_input_tokens": 100})
    lake_from_messages([message("opentelemetry.instrumentation.anthropic", [old_openllmetry]),
                        message("openlit.otel.tracing", [openlit]),
                        message("com.anthropic.sdk.python", [sdk]),
                        message("traceloop", [llm])], cfg)
    one = (300 * HAIKU_IN + 600 * HAIKU_IN * READ_X + 100 * HAIKU_IN * WRITE_X + 50 * HAIKU_OUT) / 1e6
    rows = q(cfg, "SELECT provider, input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, cost_usd "
                  "FROM calls ORDER BY span_id")
    assert [r[:5] for r in rows] == [("anthropic", 1000, 50, 600, 100)] * 4
    assert [r[5] for r in rows] == [pytest.approx(one, rel=1e-12)] * 4  # OpenLIT's own gen_ai.usage.cost ignored


# -- OpenLIT ------------------------------------------------------------------------------------------------
OPENLIT_ABSENT = ("openlit is not installed: scripts/test installs it with `pip install --no-deps` (its "
                  "metadata pins anthropic < 1 and openai < 3; its anthropic and openai instrumentors run on "
                  "anthropic 2.x / openai 3.x)")




@pytest.fixture
def openlit_instrumented(spans, monkeypatch):
    """OpenLIT's real anthropic and openai instrumentors, their spans into the test's provider."""
    pytest.importorskip("openlit", reason=OPENLIT_ABSENT)
    from opentelemetry import trace

    from openlit._config import OpenlitConfig
    from openlit.instrumentation.anthropic import AnthropicInstrumentor
    from openlit.instrumentation.openai import OpenAIInstrumentor

    provider, _ = spans
    OpenlitConfig()  # what openlit.init() sets up first: its defaults (no metrics instruments)
    before = sdk_class_attributes()
    # OpenLIT takes its tracer from the global provider (trace.get_tracer) when instrumenting.
    instrumentors = (AnthropicInstrumentor(), OpenAIInstrumentor())
    with monkeypatch.context() as m:
        m.setattr(trace, "get_tracer", lambda name, *a, **k: provider.get_tracer(name, *a))
        for inst in instrumentors:
            inst.instrument(disable_metrics=True)
    try:
        yield
    finally:
        restore_sdk_classes(before)
        for inst in instrumentors:
            inst.uninstrument()  # unpatches nothing (done above); lets a later test instrument again


def test_openlit_anthropic_and_openai_calls_count_once_at_the_hand_computed_price(standin, cfg, spans,
                                                                                   openlit_instrumented):
    """OpenLIT alone, OpenLIT beside the anthropic SDK's own spans, and OpenLIT beside costline's
    instrument_openai: each call once, priced from the responses' usage with the prices above
    (OpenLIT writes Anthropic's input_tokens without the cache reads and writes)."""
    provider, exporter = spans
    recorder = Recorder(provider)
    usages = []
    plain = anthropic.Anthropic(base_url=standin.url, api_key="test", max_retries=0)
    native = anthropic.Anthropic(base_url=standin.url, api_key="test", max_retries=0,
                                 open_telemetry={"tracer_provider": provider})
    for i, client in enumerate([plain] * 3 + [native] * 3):
        with recorder.request(task_type="faq", tenant="acme") as req:
            r = client.messages.create(
                model="claude-haiku-4-5", max_tokens=64,
                system=[{"type": "text", "text": "OpenLIT. " + SYSTEM,  # its own prompt cache: written, then read
                         "cache_control": {"type": "ephemeral"}}],
                messages=[{"role": "user", "content": f"Question {i}: can I return a damaged item?"}])
            usages.append(r.usage)
            req.accept()
    oa = openai.OpenAI(base_url=standin.openai_url, api_key="test", max_retries=0)
    undo = instrument_openai(oa, recorder)
    gpt = []
    try:
        for i in range(4):
            with recorder.request(task_type="faq", tenant="acme") as req:
                gpt.append(oa.chat.completions.create(
                    model=STUDENT_MODEL, max_tokens=32,
                    messages=[{"role": "user", "content": f"Summarise ticket {i}"}]).usage)
                req.accept()
    finally:
        undo()
    spans = exporter.get_finished_spans()
    scopes = {}
    for s in spans:
        if s.name != "costline.request":
            scopes[s.instrumentation_scope.name] = scopes.get(s.instrumentation_scope.name, 0) + 1
    assert scopes == {"openlit.instrumentation.anthropic": 6, "com.anthropic.sdk.python": 3,
                      "openlit.instrumentation.openai": 4, "costline.collectors": 4}
    assert any(u.cache_read_input_tokens for u in usages) and any(u.cache_creation_input_tokens for u in usages)
    lake_from_sdk_spans(spans, cfg)

    want_haiku = sum(haiku_usd(u) for u in usages)
    want_gpt = sum((u.prompt_tokens * GPT_IN + u.completion_tokens * GPT_OUT) / 1e6 for u in gpt)
    got = q(cfg, "SELECT provider = 'anthropic', count(*), sum(cost_usd), sum(input_tokens), sum(cache_read_tokens) "
                 "FROM calls GROUP BY 1 ORDER BY 1")
    assert got == [
        (False, 4, pytest.approx(want_gpt, rel=1e-9), sum(u.prompt_tokens for u in gpt), 0),
        (True, 6, pytest.approx(want_haiku, rel=1e-9),
         sum(u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens for u in usages),
         sum(u.cache_read_input_tokens for u in usages))]
    assert q(cfg, "SELECT count(*), min(calls), max(calls), sum(cost_usd) FROM requests") == [
        (10, 1, 1, pytest.approx(want_haiku + want_gpt, rel=1e-9))]


# -- OpenInference (Arize Phoenix's conventions) -------------------------------------------------------------
@pytest.fixture
def openinference(spans):
    """OpenInference's real anthropic and openai instrumentors, their spans into the test's provider."""
    oi_anthropic = pytest.importorskip("openinference.instrumentation.anthropic")
    oi_openai = pytest.importorskip("openinference.instrumentation.openai")
    provider, _ = spans
    instrumentors = (oi_anthropic.AnthropicInstrumentor(), oi_openai.OpenAIInstrumentor())
    for inst in instrumentors:
        inst.instrument(tracer_provider=provider)
    try:
        yield
    finally:
        for inst in instrumentors:
            inst.uninstrument()


def test_openinference_calls_alone_are_priced_from_the_responses_usage(standin, cfg, spans, openinference):
    """An app traced only by OpenInference: every Messages call (cached prompt written then read,
    a streamed one), a failed call and OpenAI chat calls are calls at the hand-computed price; a free
    count_tokens is no call; an OpenAI stream without include_usage is unpriced, never $0."""
    provider, exporter = spans
    client = anthropic.Anthropic(base_url=standin.url, api_key="test", max_retries=0)
    usages = []
    for i in range(4):
        usages.append(client.messages.create(
            model="claude-haiku-4-5", max_tokens=64,
            system=[{"type": "text", "text": "OpenInference. " + SYSTEM, "cache_control": {"type": "ephemeral"}}],
            messages=[{"role": "user", "content": f"Question {i}: can I return a damaged item?"}]).usage)
    with client.messages.stream(model="claude-haiku-4-5", max_tokens=64,
                                messages=[{"role": "user", "content": "Stream the refund steps"}]) as stream:
        for _ in stream.text_stream:
            pass
        usages.append(stream.get_final_message().usage)
    counted = client.messages.count_tokens(model="claude-haiku-4-5",
                                           messages=[{"role": "user", "content": "How long is this question?"}])
    assert counted.input_tokens > 0
    standin.inject_errors(400, 1)
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": "bad"}])
    oa = openai.OpenAI(base_url=standin.openai_url, api_key="test", max_retries=0)
    gpt = [oa.chat.completions.create(model=STUDENT_MODEL, max_tokens=32,
                                      messages=[{"role": "user", "content": f"Summarise ticket {i}"}]).usage
           for i in range(3)]
    for chunk in oa.chat.completions.create(model=STUDENT_MODEL, max_tokens=32, stream=True,
                                            stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": "Summarise ticket 9"}]):
        if chunk.usage is not None:
            gpt.append(chunk.usage)
    for _ in oa.chat.completions.create(model=STUDENT_MODEL, max_tokens=32, stream=True,  # no usage reported
                                        messages=[{"role": "user", "content": "Summarise ticket 10"}]):
        pass
    spans = exporter.get_finished_spans()
    assert {s.instrumentation_scope.name for s in spans} == {"openinference.instrumentation.anthropic",
                                                             "openinference.instrumentation.openai"}
    assert len(spans) == 4 + 1 + 1 + 1 + 3 + 1 + 1
    assert len(gpt) == 4 and any(u.cache_read_input_tokens for u in usages)
    lake_from_sdk_spans(spans, cfg)

    want_haiku = sum(haiku_usd(u) for u in usages)
    want_gpt = sum((u.prompt_tokens * GPT_IN + u.completion_tokens * GPT_OUT) / 1e6 for u in gpt)
    assert q(cfg, "SELECT provider, count(*), count(cost_usd), sum(cost_usd), sum(input_tokens), "
                  "sum(cache_read_tokens), sum(cache_creation_tokens), count(error_type) "
                  "FROM calls GROUP BY 1 ORDER BY 1") == [
        ("anthropic", 6, 6, pytest.approx(want_haiku, rel=1e-9),
         sum(u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens for u in usages),
         sum(u.cache_read_input_tokens for u in usages), sum(u.cache_creation_input_tokens for u in usages), 1),
        ("openai", 5, 4, pytest.approx(want_gpt, rel=1e-9), sum(u.prompt_tokens for u in gpt), 0, 0, 0)]
    assert q(cfg, "SELECT error_type, cost_usd, input_tokens FROM calls WHERE error_type IS NOT NULL") == [
        ("anthropic.BadRequestError", 0.0, 0)]
    assert q(cfg, "SELECT pricing_status, data_quality FROM calls WHERE cost_usd IS NULL") == [
        ("incomplete_usage", "llm.token_count.prompt:missing,llm.token_count.completion:missing")]
    # each call a request of its own; the failed one is no success; the unpriced one is counted as such
    assert q(cfg, "SELECT count(*), count(*) FILTER (WHERE success), sum(unpriced_calls), sum(cost_usd) "
                  "FROM requests") == [(11, 10, 1, pytest.approx(want_haiku + want_gpt, rel=1e-9))]
    assert sorted(r[0] for r in q(cfg, "SELECT DISTINCT operation FROM calls")) == ["chat"]


def test_openinference_beside_the_sdk_spans_and_costline_counts_each_call_once(standin, cfg, spans,
                                                                               openinference):
    """OpenInference + the anthropic SDK's own spans + costline's requests: OpenInference records no
    response id, so its span is matched to the SDK's by provider, model and time: 8 calls, not 16."""
    provider, exporter = spans
    client = anthropic.Anthropic(base_url=standin.url, api_key="test", max_retries=0,
                                 open_telemetry={"tracer_provider": provider})
    recorder = Recorder(provider)
    usages = []
    for i in range(4):
        with recorder.request(task_type="faq", tenant="acme") as req:
            for j in range(2):
                usages.append(client.messages.create(
                    model="claude-haiku-4-5", max_tokens=64,
                    system=[{"type": "text", "text": "Both. " + SYSTEM, "cache_control": {"type": "ephemeral"}}],
                    messages=[{"role": "user", "content": f"Question {i}.{j}: where is my parcel?"}]).usage)
            req.accept()
    spans = exporter.get_finished_spans()
    calls = [s for s in spans if s.name != "costline.request"]
    assert sorted({s.instrumentation_scope.name for s in calls}) == ["com.anthropic.sdk.python",
                                                                       "openinference.instrumentation.anthropic"]
    assert len(calls) == 16
    lake_from_sdk_spans(spans, cfg)
    want = sum(haiku_usd(u) for u in usages)
    assert q(cfg, "SELECT count(*), sum(cost_usd) FROM calls") == [(8, pytest.approx(want, rel=1e-9))]
    assert q(cfg, "SELECT count(*), min(calls), max(calls), sum(cost_usd), bool_and(success) FROM requests") == [
        (4, 2, 2, pytest.approx(want, rel=1e-9), True)]


# -- LangChain (OpenInference's and OpenLLMetry's LangChain instrumentors) ----------------------------------
def _served_usd(standin) -> tuple[int, float]:
    """Paid calls and their price from the stand-in's own log of what it served (no instrumentation)."""
    paid = standin.log.paid()
    usd = 0.0
    for e in paid:
        if e.api == "openai":
            usd += (e.input_tokens * GPT_IN + e.output_tokens * GPT_OUT) / 1e6
        else:
            fresh = e.input_tokens - e.cache_read_tokens - e.cache_creation_tokens
            usd += (fresh * HAIKU_IN + e.cache_read_tokens * HAIKU_IN * READ_X
                    + e.cache_creation_tokens * HAIKU_IN * WRITE_X + e.output_tokens * HAIKU_OUT) / 1e6
    return len(paid), usd


def _langchain_traffic(standin, provider) -> None:
    """Five LangChain calls in one app's server span each (as a web framework's instrumentation makes
    them): three Anthropic invokes, a streamed one, an OpenAI-compatible one; then one that fails."""
    from langchain_anthropic import ChatAnthropic
    from langchain_openai import ChatOpenAI

    tracer = provider.get_tracer("app")
    claude = ChatAnthropic(model="claude-haiku-4-5", base_url=standin.url, api_key="test", max_retries=0,
                           max_tokens=64)
    gpt = ChatOpenAI(model=STUDENT_MODEL, base_url=standin.openai_url, api_key="test", max_retries=0, max_tokens=32)
    for i in range(3):
        with tracer.start_as_current_span("POST /ask"):
            claude.invoke(f"Question {i}: where is my parcel?")
    with tracer.start_as_current_span("POST /ask"):
        for _ in claude.stream("Stream the refund steps"):
            pass
    with tracer.start_as_current_span("POST /ask"):
        gpt.invoke("Summarise ticket 7")
    standin.inject_errors(400, 1)
    with tracer.start_as_current_span("POST /ask"):
        with pytest.raises(Exception, match="400"):
            claude.invoke("bad")


def test_langchain_with_openinference_counts_each_call_once_at_the_served_price(standin, cfg, spans,
                                                                                 openinference):
    """OpenInference's LangChain instrumentor beside its anthropic and openai ones: every call is two
    LLM spans (LangChain's and the SDK's, siblings under the app's span: LangChain's span is never made
    current), with no response id; each is one call, at the price of what the stand-in served."""
    oi_langchain = pytest.importorskip("openinference.instrumentation.langchain")
    pytest.importorskip("langchain_anthropic")
    provider, exporter = spans
    standin.log.clear()
    inst = oi_langchain.LangChainInstrumentor()
    inst.instrument(tracer_provider=provider)
    try:
        _langchain_traffic(standin, provider)
    finally:
        inst.uninstrument()
    spans = [s for s in exporter.get_finished_spans() if s.name != "POST /ask"]
    assert {s.instrumentation_scope.name for s in spans} == {
        "openinference.instrumentation.langchain", "openinference.instrumentation.anthropic",
        "openinference.instrumentation.openai"}
    assert len(spans) == 12
    lake_from_sdk_spans(exporter.get_finished_spans(), cfg)
    n, usd = _served_usd(standin)
    assert n == 5
    assert q(cfg, "SELECT count(*), count(*) FILTER (WHERE error_type IS NULL), sum(cost_usd) FROM calls") == [
        (6, 5, pytest.approx(usd, rel=1e-9))]
    assert q(cfg, "SELECT count(*), count(*) FILTER (WHERE success) FROM requests") == [(6, 5)]


def test_langchain_with_openllmetry_counts_each_call_once_at_the_served_price(standin, cfg, spans):
    """OpenLLMetry's LangChain instrumentor beside its anthropic one (which it keeps quiet inside
    LangChain): one span a call, with a response id, at the price of what the stand-in served."""
    ll_langchain = pytest.importorskip("opentelemetry.instrumentation.langchain")
    pytest.importorskip("langchain_anthropic")
    provider, exporter = spans
    standin.log.clear()
    insts = (ll_langchain.LangchainInstrumentor(), openllmetry_anthropic.AnthropicInstrumentor())
    for inst in insts:
        inst.instrument(tracer_provider=provider)
    try:
        _langchain_traffic(standin, provider)
    finally:
        for inst in insts:
            inst.uninstrument()
    lake_from_sdk_spans(exporter.get_finished_spans(), cfg)
    n, usd = _served_usd(standin)
    assert n == 5
    assert q(cfg, "SELECT count(*), count(*) FILTER (WHERE error_type IS NULL), sum(cost_usd), "
                  "bool_and(instrumentation = 'opentelemetry.instrumentation.langchain') FROM calls") == [
        (6, 5, pytest.approx(usd, rel=1e-9), True)]


# -- Pydantic AI (its own instrumentation, the GenAI conventions' agent spans) ------------------------------
def test_pydantic_ai_agent_runs_count_their_model_calls_not_the_agent_span(standin, cfg, spans):
    """Pydantic AI's instrumentation: an ``invoke_agent`` span (the GenAI conventions' agent run, its
    usage aggregated under ``gen_ai.aggregated_usage.*``) over one ``chat`` span per model request. Only
    the model requests are calls: a cached-prompt run, a second run reading the cache, a streamed run
    and a failed one, priced as the stand-in served them."""
    pytest.importorskip("pydantic_ai")
    import asyncio

    from pydantic_ai import Agent, InstrumentationSettings
    from pydantic_ai.models.anthropic import AnthropicModel, AnthropicModelSettings
    from pydantic_ai.providers.anthropic import AnthropicProvider

    provider, exporter = spans
    standin.log.clear()

    async def runs() -> None:
        client = anthropic.AsyncAnthropic(base_url=standin.url, api_key="test", max_retries=0)
        agent = Agent(AnthropicModel("claude-haiku-4-5", provider=AnthropicProvider(anthropic_client=client)),
                      system_prompt="Pydantic AI. " + SYSTEM,
                      model_settings=AnthropicModelSettings(anthropic_cache_instructions=True, max_tokens=64))
        agent.instrument = InstrumentationSettings(tracer_provider=provider)
        await agent.run("Where is my parcel?")
        await agent.run("Where is my parcel now?")
        async with agent.run_stream("Stream the refund steps") as stream:
            async for _ in stream.stream_text():
                pass
        standin.inject_errors(400, 1)
        with pytest.raises(Exception, match="400"):
            await agent.run("bad")

    asyncio.run(runs())
    spans = exporter.get_finished_spans()
    ops = collections.Counter(s.attributes.get("gen_ai.operation.name") for s in spans)
    assert ops == {"invoke_agent": 4, "chat": 4}
    paid = standin.log.paid()
    assert len(paid) == 3 and any(e.cache_read_tokens for e in paid) and any(e.cache_creation_tokens for e in paid)
    lake_from_sdk_spans(spans, cfg)
    n, usd = _served_usd(standin)
    assert q(cfg, "SELECT count(*), count(*) FILTER (WHERE error_type IS NULL), sum(cost_usd), count(cost_usd), "
                  "sum(cache_read_tokens) FROM calls") == [
        (4, 3, pytest.approx(usd, rel=1e-9), 4, sum(e.cache_read_tokens for e in paid))]
    assert q(cfg, "SELECT count(*), count(*) FILTER (WHERE success) FROM requests") == [(4, 3)]
    assert q(cfg, "SELECT error_type FROM calls WHERE error_type IS NOT NULL") == [("pydantic_ai.exceptions.ModelRequestRejectedError",)]


# -- Langfuse (its SDK's own OpenTelemetry spans) -------------------------------------------------------------
def test_langfuse_generations_are_calls_at_the_served_price(standin, cfg, spans, request):
    """Langfuse's SDK (OpenTelemetry-native since v3): its OpenAI wrapper's generations (OpenAI's usage
    shape, a streamed one, a failed one) and generations an app records itself with Langfuse's usage
    types and with Anthropic's usage shape (input without the cache) are calls, nothing else is."""
    pytest.importorskip("langfuse")
    from langfuse import Langfuse, observe
    from langfuse._client.resource_manager import LangfuseResourceManager

    # Langfuse keeps one client per public key for the process: another test's, bound to a provider shut down
    # since, would take this test's spans
    LangfuseResourceManager.reset()
    request.addfinalizer(LangfuseResourceManager.reset)
    OpenAI = langfuse_openai()
    provider, exporter = spans
    standin.log.clear()
    client = Langfuse(public_key="pk-lf-test", secret_key="sk-lf-test", host="http://127.0.0.1:9",
                      tracer_provider=provider, flush_at=1000)
    oa = OpenAI(base_url=standin.openai_url, api_key="test", max_retries=0)
    oa.chat.completions.create(model=STUDENT_MODEL, max_tokens=32, messages=[{"role": "user", "content": "Summarise 1"}])
    for _ in oa.chat.completions.create(model=STUDENT_MODEL, max_tokens=32, stream=True,
                                        stream_options={"include_usage": True},
                                        messages=[{"role": "user", "content": "Summarise 2"}]):
        pass
    standin.inject_errors(500, 1, api="openai")
    with pytest.raises(openai.InternalServerError):
        oa.chat.completions.create(model=STUDENT_MODEL, max_tokens=32, messages=[{"role": "user", "content": "x"}])

    @observe(as_type="generation")
    def langfuse_types() -> None:  # Langfuse's usage types: input excludes the cache reads
        client.update_current_generation(model="claude-haiku-4-5",
                                         usage_details={"input": 6, "output": 54, "input_cache_read": 480})

    @observe(as_type="generation")
    def anthropic_shape() -> None:  # Anthropic's usage as the API returns it
        client.update_current_generation(model="claude-haiku-4-5", usage_details={
            "input_tokens": 7, "output_tokens": 40, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 480})

    @observe()
    def a_plain_span() -> None:  # a span observation: no call
        pass

    langfuse_types()
    anthropic_shape()
    a_plain_span()
    lf_spans = [s for s in exporter.get_finished_spans() if s.instrumentation_scope.name == "langfuse-sdk"]
    assert len(lf_spans) == 6, [s.name for s in lf_spans]
    lake_from_sdk_spans(exporter.get_finished_spans(), cfg)
    _, served = _served_usd(standin)
    mine = ((6 * HAIKU_IN + 480 * HAIKU_IN * READ_X + 54 * HAIKU_OUT)
            + (7 * HAIKU_IN + 480 * HAIKU_IN * WRITE_X + 40 * HAIKU_OUT)) / 1e6
    assert q(cfg, "SELECT count(*), count(error_type), sum(cost_usd), sum(input_tokens), sum(cache_read_tokens), "
                  "sum(cache_creation_tokens) FROM calls") == [
        (5, 1, pytest.approx(served + mine, rel=1e-9),
         sum(e.input_tokens for e in standin.log.paid()) + 486 + 487, 480, 480)]


# -- embeddings ----------------------------------------------------------------------------------------------
EMBED_MODEL, EMBED_IN = "text-embedding-3-small", 0.02  # USD per million input tokens, hand-written


def test_embedding_calls_through_three_instrumentations_count_once_at_the_served_price(standin, cfg, spans,
                                                                                        openinference):
    """OpenLLMetry's -openai, the official -openai-v2 and OpenInference's on one OpenAI client calling the
    embeddings API (its responses have no id): each call once, priced per input token as served."""
    provider, exporter = spans
    standin.log.clear()
    first, second = openllmetry_openai.OpenAIInstrumentor(), openai_v2.OpenAIInstrumentor()
    first.instrument(tracer_provider=provider)
    second.instrument(tracer_provider=provider)
    try:
        client = openai.OpenAI(base_url=standin.openai_url, api_key="test", max_retries=0)
        tracer = provider.get_tracer("app")
        for i in range(3):
            with tracer.start_as_current_span("POST /search"):
                client.embeddings.create(model=EMBED_MODEL, input=[f"where is parcel {i}", "refund policy"])
    finally:
        second.uninstrument()
        first.uninstrument()
    calls = [s for s in exporter.get_finished_spans() if s.name != "POST /search"]
    assert len({s.instrumentation_scope.name for s in calls}) == 3, sorted({s.instrumentation_scope.name for s in calls})
    cfg = cfg.replace(pricing=PricingConfig(models=(*cfg.pricing.models, ModelPrice(
        EMBED_MODEL, "budget", provider="openai", input_per_mtok=EMBED_IN, output_per_mtok=0.0)),
        student_usd_per_hour=0.0, student_providers=()))
    lake_from_sdk_spans(exporter.get_finished_spans(), cfg)
    paid = standin.log.paid()
    assert len(paid) == 3
    assert q(cfg, "SELECT count(*), sum(input_tokens), sum(cost_usd), min(operation) FROM calls") == [
        (3, sum(e.input_tokens for e in paid), pytest.approx(sum(e.input_tokens for e in paid) * EMBED_IN / 1e6,
                                                           rel=1e-9), "embeddings")]
