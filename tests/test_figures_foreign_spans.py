"""Figures from other instrumentations' spans that costline read wrong, each through the real package.

* the anthropic SDK's own tracing writes a span for ``messages.count_tokens`` (free) and ``sessions.*`` with the
  model but no ``gen_ai.operation.name``: no model call;
* LangSmith's OpenTelemetry export (``Client(tracing_mode="otel")``): a prompt template is exported as a
  model-less ``chat`` span (no call), and the cache counts are only in ``gen_ai.usage.input_token_details`` (a
  Python dict's repr) and ``langsmith.metadata.usage_metadata`` (JSON); LangChain's ``input_tokens`` includes them;
* Anthropic's server-side compaction (beta ``usage.iterations`` of type ``compaction``) is billed on top of the
  top-level usage: the SDK's ``anthropic.usage.compaction.*`` sums and costline's own wrapper price it;
* LiteLLM's response-cache hits (``litellm.cache_hit``) made no API call: no model call, $0;
* OpenLLMetry's Anthropic span of a stream a proxy cut before ``message_delta`` (no finish reason, output 1,
  the ``message_start`` placeholder) is flagged, its usage a lower bound.

Prices are set here (USD per million tokens: Haiku 0.80 / 4, Sonnet 3 / 15; cache read 0.1 x, a five-minute write
1.25 x, a one-hour write 2 x the input) and every expected figure is worked out by hand from them.
"""

from __future__ import annotations

import json
import time

import pytest

from costline.collectors import Recorder, instrument_anthropic
from costline.config import Config
from costline.processors.spellings import STREAM_ENDED_EARLY, CallReading, read_call
from costline.sim.synth import span

from figures_lake import anthropic_tiers_config, lake_from_sdk_spans, query_lake as q
from sdk_hygiene import pristine_sdks, restore_sdk_classes, sdk_class_attributes  # noqa: F401 (autouse fixture)

anthropic = pytest.importorskip("anthropic")

HAIKU, SONNET = "claude-haiku-4-5", "claude-sonnet-4-6"
H_IN, H_OUT = 0.80, 4.0
S_IN, S_OUT = 3.0, 15.0


@pytest.fixture(scope="module")
def standin(cache_standin):
    return cache_standin


@pytest.fixture
def cfg(tmp_path) -> Config:
    return anthropic_tiers_config(tmp_path / "lake", (HAIKU, H_IN, H_OUT), (SONNET, S_IN, S_OUT))


def _read(attrs: dict, name: str, scope: str | None, failed: bool = False) -> tuple[CallReading | None, list[str]]:
    s = span(name, trace_id=b"\x01" * 16, span_id=b"\x02" * 8, start_ns=1_780_000_000_000_000_000,
             end_ns=1_780_000_000_000_000_001, attributes=attrs)
    bad: list[str] = []
    return read_call(name, {kv.key: kv.value for kv in s.attributes}.get, scope, failed, bad), bad


# -- the anthropic SDK's spans of its other APIs ----------------------------------------------------------------
def test_the_sdks_count_tokens_spans_are_no_calls(standin, cfg, spans):
    """A pre-flight count before each of 3 calls: 3 requests, 3 calls, none unpriced (before: 6 and 3)."""
    provider, exporter = spans
    client = anthropic.Anthropic(base_url=standin.url, api_key="k", max_retries=0,
                                 open_telemetry={"tracer_provider": provider})
    usages = []
    for i in range(3):
        m = [{"role": "user", "content": f"Where is order {i}?"}]
        assert client.messages.count_tokens(model=HAIKU, messages=m).input_tokens > 0
        assert client.beta.messages.count_tokens(model=HAIKU, messages=m).input_tokens > 0
        usages.append(client.messages.create(model=HAIKU, max_tokens=40, messages=m).usage)
    finished = exporter.get_finished_spans()
    assert sorted({(s.name, s.instrumentation_scope.name) for s in finished}) == [
        ("anthropic.messages.count_tokens", "com.anthropic.sdk.python"),
        ("anthropic.messages.create", "com.anthropic.sdk.python")]
    assert len(finished) == 9
    lake_from_sdk_spans(finished, cfg)
    want = sum(u.input_tokens * H_IN + u.output_tokens * H_OUT for u in usages) / 1e6
    assert q(cfg, "SELECT tier, requests, successes, cost_usd, cost_per_success, unpriced_calls FROM tier_hourly") \
        == [("budget", 3, 3, pytest.approx(want, rel=1e-9), pytest.approx(want / 3, rel=1e-9), 0)]


NOT_CALLS = [
    # what anthropic 2.17's SPAN_ATTRIBUTES gives sessions.create (the agent's model as the request model)
    pytest.param({"gen_ai.provider.name": "anthropic", "gen_ai.request.model": SONNET, "gen_ai.agent.name": "support",
                  "anthropic.session.environment.id": "env_1", "http.route": "/v1/sessions"},
                 "anthropic.sessions.create", "com.anthropic.sdk.python", id="sdk-sessions-create"),
    pytest.param({"gen_ai.provider.name": "anthropic", "gen_ai.request.model": HAIKU,
                  "anthropic.message.count_tokens.input_tokens": 12},
                 "anthropic.messages.count_tokens", "com.anthropic.sdk.python.bedrock", id="sdk-platform-count-tokens"),
    pytest.param({"gen_ai.provider.name": "anthropic", "gen_ai.request.model": HAIKU},
                 "Messages.count_tokens", "some.other.instrumentation", id="count-tokens-of-another-scope"),
    # LangSmith 0.15's OTel export: run types prompt and retriever (written as chat / embeddings, no model)
    pytest.param({"langsmith.span.kind": "prompt", "gen_ai.operation.name": "chat", "gen_ai.system": "langchain"},
                 "ChatPromptTemplate", "langsmith", id="langsmith-prompt"),
    pytest.param({"langsmith.span.kind": "retriever", "gen_ai.operation.name": "embeddings",
                  "gen_ai.system": "langchain"}, "retrieve", "langsmith", id="langsmith-retriever"),
    # LiteLLM 1.110's callback on an answer from its own cache (bool, and a string as a proxy may relay it)
    pytest.param({"gen_ai.request.model": "anthropic/claude-haiku-4-5", "gen_ai.system": "anthropic",
                  "gen_ai.usage.input_tokens": 6, "gen_ai.usage.output_tokens": 31, "litellm.cache_hit": True,
                  "gen_ai.cost.total_cost": 0.0}, "litellm_request", "litellm", id="litellm-cache-hit"),
    pytest.param({"gen_ai.request.model": "anthropic/claude-haiku-4-5", "gen_ai.system": "anthropic",
                  "gen_ai.usage.input_tokens": 6, "gen_ai.usage.output_tokens": 31, "litellm.cache_hit": "True"},
                 "litellm_request", "litellm", id="litellm-cache-hit-string"),
]


@pytest.mark.parametrize("attrs, name, scope", NOT_CALLS)
def test_spans_that_name_a_model_but_are_no_call(attrs, name, scope):
    assert _read(attrs, name, scope) == (None, [])


def test_a_litellm_call_that_missed_its_cache_and_the_sdks_chat_span_stay_calls():
    litellm = {"gen_ai.request.model": "anthropic/claude-haiku-4-5", "gen_ai.system": "anthropic",
               "gen_ai.usage.input_tokens": 6, "gen_ai.usage.output_tokens": 31, "litellm.cache_hit": False}
    assert _read(litellm, "litellm_request", "litellm")[0][4:6] == (6, 31)
    sdk = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic", "gen_ai.request.model": HAIKU,
           "gen_ai.usage.input_tokens": 5, "gen_ai.usage.output_tokens": 40}
    assert _read(sdk, "anthropic.messages.create", "com.anthropic.sdk.python")[0][4:6] == (5, 40)


# -- LangSmith's OpenTelemetry export ---------------------------------------------------------------------------
@pytest.fixture
def langsmith_otel(spans, monkeypatch):
    monkeypatch.setenv("LANGSMITH_TRACING", "true")
    monkeypatch.setenv("LANGSMITH_API_KEY", "x")
    langsmith = pytest.importorskip("langsmith")
    from langsmith.run_helpers import tracing_context

    provider, exporter = spans
    client = langsmith.Client(tracing_mode="otel", otel_tracer_provider=provider, api_key="x",
                              api_url="http://127.0.0.1:9")  # nothing listens: the OTel export is all there is
    return client, tracing_context, exporter


def test_langsmith_chain_reads_its_cache_counts_and_its_prompt_template_is_no_call(standin, cfg, langsmith_otel):
    """A cached system prompt through prompt | ChatAnthropic, 4 times: the 1st writes 480 tokens, the others
    read them. Before: 4 'unknown' calls of the prompt template, and every call priced as fresh input."""
    pytest.importorskip("langchain_anthropic")
    from langchain_anthropic import ChatAnthropic
    from langchain_core.prompts import ChatPromptTemplate

    client, tracing_context, exporter = langsmith_otel
    system = "You answer questions about our refund policy. " * 60
    llm = ChatAnthropic(model=HAIKU, anthropic_api_url=standin.url, api_key="k", max_tokens=40, max_retries=0)
    chain = ChatPromptTemplate.from_messages(
        [("system", [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}]), ("user", "{q}")]) | llm
    metas = []
    with tracing_context(enabled=True, client=client):
        for i in range(4):
            metas.append(chain.invoke({"q": f"Question {i}: can I return a damaged item?"}).usage_metadata)
    client.flush()
    finished = exporter.get_finished_spans()
    assert sorted(s.name for s in finished) == ["ChatAnthropic"] * 4 + ["ChatPromptTemplate"] * 4 + \
        ["RunnableSequence"] * 4
    # LangChain's input_tokens includes the cache: 490 = 10 fresh + 480 written (1st) or read (others)
    details = [m["input_token_details"] for m in metas]
    assert [(m["input_tokens"], m["output_tokens"]) for m in metas] == [(490, 40)] * 4
    assert [(d["cache_read"], d["cache_creation"] + d["ephemeral_5m_input_tokens"]) for d in details] == \
        [(0, 480), (480, 0), (480, 0), (480, 0)]
    lake_from_sdk_spans(finished, cfg)
    first = (10 * H_IN + 480 * H_IN * 1.25 + 40 * H_OUT) / 1e6  # 0.000648
    later = (10 * H_IN + 480 * H_IN * 0.1 + 40 * H_OUT) / 1e6  # 0.0002064
    assert q(cfg, "SELECT tier, requests, successes, cost_usd, cost_per_success FROM tier_hourly") == [
        ("budget", 4, 4, pytest.approx(first + 3 * later, rel=1e-9), pytest.approx((first + 3 * later) / 4, rel=1e-9))]
    assert q(cfg, "SELECT sum(input_tokens), sum(cache_read_tokens), sum(cache_creation_tokens) FROM calls") == [
        (4 * 490, 3 * 480, 480)]


def test_langsmith_traceable_llm_run_with_one_hour_cache_writes(cfg, langsmith_otel):
    """A ``@traceable(run_type="llm")`` function returning LangChain's usage_metadata: LangSmith writes the details
    both as a dict's repr and in its metadata's JSON. 1490 in = 10 fresh + 1000 read + 200 + 280 (1 h) written."""
    import langsmith

    client, tracing_context, exporter = langsmith_otel

    @langsmith.traceable(run_type="llm", metadata={"ls_provider": "anthropic", "ls_model_name": HAIKU})
    def ask(question: str) -> dict:
        return {"role": "assistant", "content": "Yes.", "usage_metadata": {
            "input_tokens": 1490, "output_tokens": 40, "total_tokens": 1530,
            "input_token_details": {"cache_read": 1000, "cache_creation": 0, "ephemeral_5m_input_tokens": 200,
                                    "ephemeral_1h_input_tokens": 280}}}

    @langsmith.traceable(run_type="retriever")
    def retrieve(question: str) -> list:
        return [{"page_content": "Refunds within 30 days."}]

    with tracing_context(enabled=True, client=client):
        retrieve("refunds?")
        ask("refunds?")
    client.flush()
    finished = {s.name: s for s in exporter.get_finished_spans()}
    assert finished["ask"].attributes["gen_ai.usage.input_token_details"] == \
        "{'cache_read': 1000, 'cache_creation': 0, 'ephemeral_5m_input_tokens': 200, 'ephemeral_1h_input_tokens': 280}"
    lake_from_sdk_spans(list(finished.values()), cfg)
    want = (10 * H_IN + 1000 * H_IN * 0.1 + 200 * H_IN * 1.25 + 280 * H_IN * 2 + 40 * H_OUT) / 1e6  # 0.000896
    assert q(cfg, "SELECT model, input_tokens, cache_read_tokens, cache_creation_tokens, cache_creation_1h_tokens, "
                  "cost_usd FROM calls") == [(HAIKU, 1490, 1000, 480, 280, pytest.approx(want, rel=1e-9))]


DETAILS = "gen_ai.usage.input_token_details"
LS_CALL = {"langsmith.span.kind": "llm", "gen_ai.operation.name": "chat", "gen_ai.system": "anthropic",
           "gen_ai.request.model": HAIKU, "gen_ai.usage.input_tokens": 1490, "gen_ai.usage.output_tokens": 40}


@pytest.mark.parametrize("details, want, bad", [
    # the repr alone (no metadata): 1000 read, 480 written of which 280 for an hour
    ("{'cache_read': 1000, 'cache_creation': 0, 'ephemeral_5m_input_tokens': 200, 'ephemeral_1h_input_tokens': 280}",
     (1000, 480, 280), []),
    # an app's own details with the total in cache_creation beside its split: 480, never 960
    ("{'cache_read': 1000, 'cache_creation': 480, 'ephemeral_5m_input_tokens': 480}", (1000, 480, None), []),
    # OpenAI through LangChain: cache reads only, None for the rest
    ("{'audio': None, 'cache_read': 1000}", (1000, None, None), []),
    # not a count: nothing read; an absurd one is dropped and named (the call is then unpriced)
    ("{'cache_read': __import__('os')}", (None, None, None), []),
    ("{'cache_read': 999999999999}", (None, None, None), [f"{DETAILS}.cache_read:out_of_range"]),
    # a count of 13 digits or more is as absurd: named too, never passed over (it was read as no count at all)
    ("{'cache_read': 1234567890123}", (None, None, None), [f"{DETAILS}.cache_read:out_of_range"]),
    ("{'cache_read': " + "9" * 5000 + "}", (None, None, None), [f"{DETAILS}.cache_read:out_of_range"]),
])
def test_langsmith_input_token_details_are_read_never_evaluated(details, want, bad):
    reading, flagged = _read({**LS_CALL, DETAILS: details}, "ask", "langsmith")
    assert (reading.cache_read_tokens, reading.cache_creation_tokens, reading.cache_creation_1h_tokens) == want
    assert reading.input_tokens == 1490 and flagged == bad


# -- Anthropic's server-side compaction --------------------------------------------------------------------------
USAGE = {"input_tokens": 2000, "output_tokens": 500, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
COMPACTION = {"type": "compaction", "input_tokens": 150000, "output_tokens": 4000, "cache_read_input_tokens": 0,
              "cache_creation_input_tokens": 0}
MESSAGE = {"id": "msg_01", "type": "message", "role": "assistant", "model": SONNET,
           "content": [{"type": "text", "text": "Done."}], "stop_reason": "end_turn", "stop_sequence": None}
#: 2,000 in + 500 out, plus the compaction's 150,000 in + 4,000 out, at Sonnet's prices
WANT_COMPACTED = (2000 * S_IN + 500 * S_OUT + 150000 * S_IN + 4000 * S_OUT) / 1e6  # 0.5235


def _mock_client(body: dict | bytes, **kw):
    import httpx2 as httpx

    def answer(request):
        if isinstance(body, bytes):
            return httpx.Response(200, content=body, headers={"content-type": "text/event-stream", "request-id": "r"})
        return httpx.Response(200, json=body, headers={"request-id": "req_1"})

    return anthropic.Anthropic(api_key="k", max_retries=0,
                               http_client=httpx.Client(transport=httpx.MockTransport(answer)), **kw)


def _sse(events: list[dict]) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def test_the_sdks_compaction_sums_are_priced(cfg, spans):
    provider, exporter = spans
    body = {**MESSAGE, "usage": {**USAGE, "iterations": [COMPACTION, {"type": "message", **USAGE}]}}
    client = _mock_client(body, open_telemetry={"tracer_provider": provider})
    client.beta.messages.create(model=SONNET, max_tokens=1000, betas=["compact-2026-01-12"],
                                messages=[{"role": "user", "content": "continue the task"}])
    (sp,) = exporter.get_finished_spans()
    assert (sp.attributes["anthropic.usage.compaction.input_tokens"],
            sp.attributes["anthropic.usage.compaction.output_tokens"]) == (150000, 4000)
    lake_from_sdk_spans([sp], cfg)
    assert q(cfg, "SELECT input_tokens, output_tokens, cost_usd, pricing_status FROM calls") == [
        (152000, 4500, pytest.approx(WANT_COMPACTED, rel=1e-9), "priced")]


def test_a_bad_compaction_count_leaves_the_call_unpriced():
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic", "gen_ai.request.model": SONNET,
             "gen_ai.usage.input_tokens": 2000, "gen_ai.usage.output_tokens": 500,
             "anthropic.usage.compaction.input_tokens": -5, "anthropic.usage.compaction.output_tokens": 4000}
    reading, bad = _read(attrs, "anthropic.messages.create", "com.anthropic.sdk.python")
    assert (reading.input_tokens, reading.output_tokens) == (2000, 4500)
    assert bad == ["anthropic.usage.compaction.input_tokens:negative"]


@pytest.mark.parametrize("stream", [False, True], ids=["parsed", "streamed"])
def test_costlines_wrapper_prices_the_compaction_iterations(cfg, spans, stream):
    """The wrapper has each compaction's own split: its cache reads at 0.1 x, not the input price."""
    provider, exporter = spans
    compaction = {**COMPACTION, "input_tokens": 50000, "cache_read_input_tokens": 100000}
    iterations = [compaction, {"type": "message", **USAGE}]
    if stream:
        body = _sse([
            {"type": "message_start", "message": {**MESSAGE, "content": [], "stop_reason": None,
                                                  "usage": {**USAGE, "output_tokens": 1}}},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Done."}},
            {"type": "content_block_stop", "index": 0},
            {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
             "usage": {**USAGE, "iterations": iterations}},
            {"type": "message_stop"}])
    else:
        body = {**MESSAGE, "usage": {**USAGE, "iterations": iterations}}
    client = _mock_client(body, open_telemetry=False)
    recorder = Recorder(provider)
    instrument_anthropic(client, recorder)
    with recorder.request(task_type="agent", tenant="acme") as req:
        kw = dict(model=SONNET, max_tokens=1000, betas=["compact-2026-01-12"],
                  messages=[{"role": "user", "content": "continue the task"}])
        if stream:
            for _ in client.beta.messages.create(stream=True, **kw):
                pass
        else:
            client.beta.messages.create(**kw)
        req.accept()
    lake_from_sdk_spans(exporter.get_finished_spans(), cfg)
    want = (2000 * S_IN + 500 * S_OUT + 50000 * S_IN + 100000 * S_IN * 0.1 + 4000 * S_OUT) / 1e6  # 0.2235
    assert q(cfg, "SELECT input_tokens, output_tokens, cache_read_tokens, cost_usd, pricing_status FROM calls") == [
        (152000, 4500, 100000, pytest.approx(want, rel=1e-9), "priced")]


# -- LiteLLM's response cache ------------------------------------------------------------------------------------
@pytest.fixture
def litellm(monkeypatch):
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # its shipped price map, never GitHub's
    monkeypatch.setenv("LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS", "true")
    module = pytest.importorskip("litellm", reason="scripts/test installs it with `pip install --no-deps "
                                                   "litellm==1.110.2`")
    import litellm.caching.caching_handler as handler

    # the real function imports LiteLLM's proxy (fastapi, not installed); a non-streamed replay answers False
    monkeypatch.setattr(handler, "_should_defer_streaming_cache_hit_callbacks", lambda *a, **k: False)
    names = ("callbacks", "success_callback", "failure_callback", "_async_success_callback",
             "_async_failure_callback", "service_callback")
    saved = {name: list(getattr(module, name, [])) for name in names}
    cache = module.cache
    yield module
    module.cache = cache  # LiteLLM copies a callback into lists of its own: put all of them back as they were
    for name, callbacks in saved.items():
        setattr(module, name, callbacks)


def test_litellm_response_cache_hits_are_no_paid_calls(standin, cfg, spans, litellm):
    from litellm.caching.caching import Cache
    from litellm.integrations.opentelemetry import OpenTelemetry, OpenTelemetryConfig

    provider, exporter = spans
    litellm.callbacks = [OpenTelemetry(config=OpenTelemetryConfig(exporter=exporter, skip_set_global=True),
                                       tracer_provider=provider)]
    litellm.cache = Cache(type="local")
    paid_before = len(standin.log.paid())
    usages = [litellm.completion(model=f"anthropic/{HAIKU}", api_base=standin.url, api_key="k", max_tokens=40,
                                 messages=[{"role": "user", "content": "What is your refund policy?"}],
                                 caching=True).usage for _ in range(4)]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and sum(s.name == "litellm_request" for s in exporter.get_finished_spans()) < 4:
        time.sleep(0.05)
    calls = [s for s in exporter.get_finished_spans() if s.name == "litellm_request"]
    # LiteLLM ends its spans from its callback threads: in any order
    assert sorted(s.attributes.get("litellm.cache_hit") for s in calls) == [False, True, True, True]
    assert len(standin.log.paid()) - paid_before == 1
    lake_from_sdk_spans(exporter.get_finished_spans(), cfg)
    want = (usages[0].prompt_tokens * H_IN + usages[0].completion_tokens * H_OUT) / 1e6
    assert q(cfg, "SELECT count(*), sum(cost_usd) FROM calls") == [(1, pytest.approx(want, rel=1e-9))]
    assert q(cfg, "SELECT tier, requests, cost_usd FROM tier_hourly") == [("budget", 1, pytest.approx(want, rel=1e-9))]


# -- OpenLLMetry's span of a stream cut before message_delta -----------------------------------------------------
def _stream_through(standin, spans, cfg, cut: bool):
    from test_stream_cut_error import CuttingProxy, before_event

    proxy = CuttingProxy(standin.url)
    try:
        proxy.cut = before_event("message_delta") if cut else None
        client = anthropic.Anthropic(base_url=proxy.url, api_key="k", max_retries=0, open_telemetry=False)
        with client.messages.stream(model=HAIKU, max_tokens=200,
                                    messages=[{"role": "user", "content": "Explain refunds in detail please"}]) as s:
            text = "".join(s.text_stream)
    finally:
        proxy.close()
    (sp,) = spans[1].get_finished_spans()
    lake_from_sdk_spans([sp], cfg)
    return text, sp


def test_openllmetrys_cut_stream_is_flagged_and_priced_as_a_lower_bound(standin, cfg, spans, openllmetry):
    text, sp = _stream_through(standin, spans, cfg, cut=True)
    assert text  # the app saw the text so far, and no error
    a = sp.attributes
    assert "gen_ai.response.finish_reasons" not in a and a["gen_ai.usage.output_tokens"] == 1
    want = (a["gen_ai.usage.input_tokens"] * H_IN + 1 * H_OUT) / 1e6
    assert q(cfg, "SELECT cost_usd, pricing_status, data_quality FROM calls") == [
        (pytest.approx(want, rel=1e-9), "priced", STREAM_ENDED_EARLY)]


def test_openllmetrys_whole_stream_is_not_flagged(standin, cfg, spans, openllmetry):
    _text, sp = _stream_through(standin, spans, cfg, cut=False)
    assert sp.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert q(cfg, "SELECT data_quality, count(*) FROM calls GROUP BY 1") == [(None, 1)]
    assert q(cfg, "SELECT count(*) FILTER (WHERE success) FROM requests") == [(1,)]


def test_openllmetrys_cut_stream_is_no_success(standin, cfg, spans, openllmetry):
    _stream_through(standin, spans, cfg, cut=True)
    assert q(cfg, "SELECT error_type FROM calls") == [("IncompleteStreamError",)]
    assert q(cfg, "SELECT count(*) FILTER (WHERE success) FROM requests") == [(0,)]
