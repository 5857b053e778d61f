"""Other instrumentations' quirks on cut streams, failed calls and streamed counts, each through the real package.

* a stream the app closes before ``message_delta``, recorded by the anthropic SDK's own tracing
  (``com.anthropic.sdk.python``) or OpenInference: the span ends as complete (status UNSET) with the input
  count, no finish reason and an output count missing or at most ``message_start``'s placeholder: failed
  (``IncompleteStreamError``), flagged, priced as a lower bound — as costline's own wrapper and OpenLLMetry's
  cut streams are; complete streams and non-streamed calls of the same instrumentations are not flagged;
* a call that reports its input count but not its output count is unpriced (``incomplete_usage``), never
  priced as a free answer;
* OpenLIT's Anthropic span of a failed call has no attribute at all (only its name ``chat {model}``, status
  ERROR): read off the name; OpenInference's OpenAI span of a failed call names its model only in
  ``llm.invocation_parameters``: read from there (bounded, never raising);
* OpenLLMetry's Anthropic instrumentation adds ``message_start``'s placeholder (1) to a stream's final output
  count: taken off again.

Prices are set here (USD per million tokens: Haiku 1 / 5, the stand-in's OpenAI model 0.5 / 2) and every expected
figure is worked out by hand from them and the usage the API sent the app.
"""

from __future__ import annotations

import gc

import pytest

from costline.config import Config, LakeConfig, ModelPrice, PricingConfig
from costline.pricing import PricingTable
from costline.processors.records import flatten_span
from costline.processors.spellings import STREAM_ENDED_EARLY, read_call
from costline.sim.synth import span

from figures_lake import lake_from_sdk_spans, query_lake as q
from sdk_hygiene import pristine_sdks, restore_sdk_classes, sdk_class_attributes  # noqa: F401 (autouse fixture)

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")

HAIKU, GPT = "claude-haiku-4-5", "costline-student"
H_IN, H_OUT = 1.0, 5.0
G_IN, G_OUT = 0.5, 2.0
ASK = [{"role": "user", "content": "Explain refunds in detail please"}]


@pytest.fixture
def cfg(tmp_path) -> Config:
    return Config(lake=LakeConfig(path=tmp_path / "lake"), pricing=PricingConfig(
        models=(ModelPrice(HAIKU, "budget", provider="anthropic", input_per_mtok=H_IN, output_per_mtok=H_OUT),
                ModelPrice(GPT, "budget", provider="openai", input_per_mtok=G_IN, output_per_mtok=G_OUT)),
        student_usd_per_hour=0.0, student_providers=()))


def _haiku_usd(inp: int, out: int) -> float:
    return (inp * H_IN + out * H_OUT) / 1e6


def _three_calls(client) -> tuple[int, tuple[int, int], tuple[int, int]]:
    """A stream closed after four events (its input count, from message_start), then a whole stream and a
    non-streamed call (their (input, output) as the API sent them)."""
    cut = client.messages.create(model=HAIKU, max_tokens=200, stream=True, messages=ASK)
    seen = []
    for ev in cut:
        seen.append(ev)
        if len(seen) >= 4:
            break
    cut.close()
    del cut
    gc.collect()  # an instrumentation that ends the span when its stream wrapper is collected
    assert [e.type for e in seen][:1] == ["message_start"] and "message_delta" not in [e.type for e in seen]
    cut_input = seen[0].message.usage.input_tokens
    for ev in client.messages.create(model=HAIKU, max_tokens=60, stream=True, messages=ASK):
        if ev.type == "message_start":
            s_in = ev.message.usage.input_tokens
        elif ev.type == "message_delta":
            s_out = ev.usage.output_tokens
    u = client.messages.create(model=HAIKU, max_tokens=60, messages=ASK).usage
    return cut_input, (s_in, s_out), (u.input_tokens, u.output_tokens)


# -- a stream the app closed early ------------------------------------------------------------------------------
def test_the_sdks_own_span_of_a_stream_closed_early_is_a_failed_call_priced_as_a_lower_bound(standin, cfg, spans):
    provider, exporter = spans
    client = anthropic.Anthropic(base_url=standin.url, api_key="k", max_retries=0,
                                 open_telemetry={"tracer_provider": provider})
    cut_input, streamed, whole = _three_calls(client)
    finished = exporter.get_finished_spans()
    assert [(s.instrumentation_scope.name, s.status.status_code.name) for s in finished] == [
        ("com.anthropic.sdk.python", "UNSET"), ("com.anthropic.sdk.python", "OK"), ("com.anthropic.sdk.python", "OK")]
    assert "gen_ai.usage.output_tokens" not in finished[0].attributes  # no message_delta: no output count
    lake_from_sdk_spans(finished, cfg)
    assert q(cfg, "SELECT input_tokens, output_tokens, cost_usd, pricing_status, error_type, data_quality "
                  "FROM calls ORDER BY ts") == [
        (cut_input, 0, pytest.approx(_haiku_usd(cut_input, 0), rel=1e-9), "priced", "IncompleteStreamError",
         STREAM_ENDED_EARLY),
        (*streamed, pytest.approx(_haiku_usd(*streamed), rel=1e-9), "priced", None, None),
        (*whole, pytest.approx(_haiku_usd(*whole), rel=1e-9), "priced", None, None)]
    assert q(cfg, "SELECT count(*), count(*) FILTER (WHERE success) FROM requests") == [(3, 2)]


def _openinference(spans, *packages: str):
    instrumentors = [getattr(pytest.importorskip(f"openinference.instrumentation.{p}"), f"{n}Instrumentor")()
                     for p, n in (("anthropic", "Anthropic"), ("openai", "OpenAI")) if p in packages]
    for inst in instrumentors:
        inst.instrument(tracer_provider=spans[0])
    try:
        yield
    finally:
        for inst in instrumentors:
            inst.uninstrument()


@pytest.fixture
def openinference(spans):
    yield from _openinference(spans, "anthropic", "openai")


@pytest.fixture
def openinference_openai(spans):
    yield from _openinference(spans, "openai")


def test_openinferences_span_of_a_stream_closed_early_is_a_failed_call_priced_as_a_lower_bound(standin, cfg, spans,
                                                                                           openinference):
    provider, exporter = spans
    client = anthropic.Anthropic(base_url=standin.url, api_key="k", max_retries=0)
    cut_input, streamed, whole = _three_calls(client)
    finished = exporter.get_finished_spans()
    assert [s.instrumentation_scope.name for s in finished] == ["openinference.instrumentation.anthropic"] * 3
    a = finished[0].attributes
    assert "llm.finish_reason" not in a and a["llm.token_count.completion"] == 1  # message_start's placeholder
    lake_from_sdk_spans(finished, cfg)
    assert q(cfg, "SELECT input_tokens, output_tokens, cost_usd, error_type, data_quality FROM calls ORDER BY ts") == [
        (cut_input, 1, pytest.approx(_haiku_usd(cut_input, 1), rel=1e-9), "IncompleteStreamError",
         STREAM_ENDED_EARLY),
        (*streamed, pytest.approx(_haiku_usd(*streamed), rel=1e-9), None, None),
        (*whole, pytest.approx(_haiku_usd(*whole), rel=1e-9), None, None)]
    assert q(cfg, "SELECT count(*), count(*) FILTER (WHERE success) FROM requests") == [(3, 2)]


def test_openinferences_openai_stream_closed_early_is_failed_and_unpriced(standin, cfg, spans, openinference):
    """An OpenAI stream sends its usage last: cut, it has no count at all. A complete one (with include_usage)
    and one without usage (a finish reason, no counts) are no failure."""
    provider, exporter = spans
    oa = openai.OpenAI(base_url=standin.openai_url, api_key="k", max_retries=0)
    cut = oa.chat.completions.create(model=GPT, max_tokens=200, stream=True, messages=ASK,
                                     stream_options={"include_usage": True})
    for i, _chunk in enumerate(cut):
        if i >= 2:
            break
    cut.close()
    del cut
    gc.collect()
    usage = None
    for chunk in oa.chat.completions.create(model=GPT, max_tokens=16, stream=True, messages=ASK,
                                            stream_options={"include_usage": True}):
        usage = chunk.usage or usage
    for _chunk in oa.chat.completions.create(model=GPT, max_tokens=16, stream=True, messages=ASK):
        pass
    finished = exporter.get_finished_spans()
    assert [s.name for s in finished] == ["ChatCompletion"] * 3
    lake_from_sdk_spans(finished, cfg)
    want = (usage.prompt_tokens * G_IN + usage.completion_tokens * G_OUT) / 1e6
    assert q(cfg, "SELECT cost_usd, pricing_status, error_type FROM calls ORDER BY ts") == [
        (None, "incomplete_usage", "IncompleteStreamError"),
        (pytest.approx(want, rel=1e-9), "priced", None),
        (None, "incomplete_usage", None)]
    assert q(cfg, "SELECT count(*), count(*) FILTER (WHERE success) FROM requests") == [(3, 2)]


# -- an input count without an output count -----------------------------------------------------------------------
_T0 = 1_780_000_000_000_000_000


def _row(attrs: dict, name: str = "chat claude-haiku-4-5", scope: str | None = "some.instrumentation"):
    s = span(name, trace_id=b"\x01" * 16, span_id=b"\x02" * 8, start_ns=_T0, end_ns=_T0 + 1_000_000,
             attributes=attrs)
    pricing = PricingTable(PricingConfig(models=(
        ModelPrice(HAIKU, "budget", provider="anthropic", input_per_mtok=H_IN, output_per_mtok=H_OUT),
        ModelPrice("text-embedding-3-small", "budget", provider="openai", input_per_mtok=0.02, output_per_mtok=0.0)),
        student_usd_per_hour=0.0, student_providers=()))
    row = flatten_span(s, pricing, scope=scope)
    return row.input_tokens, row.output_tokens, row.cost_usd, row.pricing_status, row.data_quality


_CHAT = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic", "gen_ai.request.model": HAIKU}
_OI_LLM = {"openinference.span.kind": "LLM", "llm.provider": "anthropic", "llm.model_name": HAIKU}


def test_a_call_with_its_input_count_and_no_output_count_is_unpriced_never_a_free_answer():
    rows = [
        _row({**_CHAT, "gen_ai.usage.input_tokens": 400}),
        _row({**_OI_LLM, "llm.token_count.prompt": 400}, "messages.create"),
        # both counts: priced (400 x $1 + 30 x $5 per million)
        _row({**_CHAT, "gen_ai.usage.input_tokens": 400, "gen_ai.usage.output_tokens": 30}),
        # an embedding has no output: priced from its input (400 x $0.02 per million)
        _row({"gen_ai.operation.name": "embeddings", "gen_ai.provider.name": "openai",
              "gen_ai.request.model": "text-embedding-3-small", "gen_ai.usage.input_tokens": 400},
             "embeddings text-embedding-3-small"),
        # a failed call that counted its input only: priced from what it counted
        _row({**_CHAT, "gen_ai.usage.input_tokens": 400, "error.type": "overloaded_error"}),
    ]
    assert rows == [
        (400, None, None, "incomplete_usage", "gen_ai.usage.output_tokens:missing"),
        (400, None, None, "incomplete_usage", "llm.token_count.completion:missing"),
        (400, 30, pytest.approx(550e-6, rel=1e-12), "priced", None),
        (400, 0, pytest.approx(8e-6, rel=1e-12), "priced", None),
        (400, 0, pytest.approx(400e-6, rel=1e-12), "priced", None),
    ]


# -- failed calls -----------------------------------------------------------------------------------------------
@pytest.fixture
def openlit_anthropic(spans, monkeypatch):
    """OpenLIT's real anthropic instrumentor, its spans into the test's provider (as tests/test_ingest_instrumentations
    drives it)."""
    pytest.importorskip("openlit")
    from opentelemetry import trace

    from openlit._config import OpenlitConfig
    from openlit.instrumentation.anthropic import AnthropicInstrumentor

    provider, _ = spans
    OpenlitConfig()
    before = sdk_class_attributes()
    inst = AnthropicInstrumentor()
    with monkeypatch.context() as m:
        m.setattr(trace, "get_tracer", lambda name, *a, **k: provider.get_tracer(name, *a))
        inst.instrument(disable_metrics=True)
    try:
        yield
    finally:
        restore_sdk_classes(before)
        inst.uninstrument()


def test_failed_calls_of_openlits_anthropic_and_openinferences_openai_count_on_their_tier(
        standin, cfg, spans, openlit_anthropic, openinference_openai):
    provider, exporter = spans
    client = anthropic.Anthropic(base_url=standin.url, api_key="k", max_retries=0)
    oa = openai.OpenAI(base_url=standin.openai_url, api_key="k", max_retries=0)
    q_ = [{"role": "user", "content": "Where is my order?"}]
    client.messages.create(model=HAIKU, max_tokens=32, messages=q_)
    oa.chat.completions.create(model=GPT, max_tokens=16, messages=q_)
    failed = 0
    for status in (529, 400):
        standin.inject_errors(status, 1)
        with pytest.raises(anthropic.APIStatusError):
            client.messages.create(model=HAIKU, max_tokens=32, messages=q_)
        failed += 1
        standin.inject_errors(status, 1, api="openai")
        with pytest.raises(openai.APIStatusError):
            oa.chat.completions.create(model=GPT, max_tokens=16, messages=q_)
        failed += 1
    standin.inject_stream_errors(after_deltas=1)  # an error event mid-stream (OpenLIT ends no span for one in
    with pytest.raises(anthropic.APIStatusError):  # a create(stream=True) stream: docs/telemetry.md)
        with client.messages.stream(model=HAIKU, max_tokens=60, messages=q_) as stream:
            for _ev in stream:
                pass
    failed += 1
    finished = exporter.get_finished_spans()
    openlit_failures = [s for s in finished
                        if s.instrumentation_scope.name == "openlit.instrumentation.anthropic"
                        and s.status.status_code.name == "ERROR"]
    assert len(openlit_failures) == 3
    assert not any(k.startswith("gen_ai.") for s in openlit_failures for k in s.attributes)  # only the name says
    lake_from_sdk_spans(finished, cfg)
    assert q(cfg, "SELECT tier, requests, successes FROM tier_hourly") == [("budget", 2 + failed, 2)]
    assert q(cfg, "SELECT instrumentation, provider, model, error_type FROM calls WHERE error_type IS NOT NULL "
                  "ORDER BY ts") == [
        ("openlit.instrumentation.anthropic", "anthropic", HAIKU, "anthropic.OverloadedError"),
        ("openinference.instrumentation.openai", "openai", GPT, "openai.InternalServerError"),
        ("openlit.instrumentation.anthropic", "anthropic", HAIKU, "anthropic.BadRequestError"),
        ("openinference.instrumentation.openai", "openai", GPT, "openai.BadRequestError"),
        ("openlit.instrumentation.anthropic", "anthropic", HAIKU, "APIStatusError")]  # its error.type, only there


def _read(attrs: dict, name: str, scope: str | None, failed: bool):
    s = span(name, trace_id=b"\x01" * 16, span_id=b"\x02" * 8, start_ns=_T0, end_ns=_T0 + 1, attributes=attrs)
    bad: list[str] = []
    got = read_call(name, {kv.key: kv.value for kv in s.attributes}.get, scope, failed, bad)
    return (got.operation, got.provider, got.model) if got is not None else None


def test_a_failed_calls_model_is_read_off_the_span_name_or_the_arguments_only_when_plausible():
    lit, oi = "openlit.instrumentation.anthropic", "openinference.instrumentation.openai"
    oi_llm = {"openinference.span.kind": "LLM", "llm.system": "openai"}
    got = [
        _read({}, "chat claude-haiku-4-5", lit, True),
        _read({}, "embeddings text-embedding-3-small", "openlit.instrumentation.openai", True),
        _read({}, "chat claude-haiku-4-5", lit, False),  # not failed: no call of OpenLIT's spells nothing
        _read({}, "chat claude-haiku-4-5", "some.other", True),  # another scope's span named so: no call
        _read({}, "execute_tool lookup", lit, True),  # no model call
        _read({}, "chat " + "x" * 300, lit, True),  # no model id is that long
        _read({}, "chat claude haiku", lit, True),  # no model id has a space
        _read({}, "chat", lit, True),
        _read({**oi_llm, "llm.invocation_parameters": '{"model": "gpt-4o-mini", "max_tokens": 32}'},
              "ChatCompletion", oi, True),
        _read({**oi_llm, "llm.invocation_parameters": '{"model": 5}'}, "ChatCompletion", oi, True),
        _read({**oi_llm, "llm.invocation_parameters": '{"model": "a b"}'}, "ChatCompletion", oi, True),
        _read({**oi_llm, "llm.invocation_parameters": '["gpt-4o"]'}, "ChatCompletion", oi, True),
        _read({**oi_llm, "llm.invocation_parameters": '{"model": "gpt-4o"'}, "ChatCompletion", oi, True),
        _read({**oi_llm, "llm.invocation_parameters": "[" * 100_000}, "ChatCompletion", oi, True),
        _read({**oi_llm, "llm.invocation_parameters": '{"model": "gpt-4o", "pad": "' + "x" * 70_000 + '"}'},
              "ChatCompletion", oi, True),  # past the size read
        _read({**oi_llm, "llm.invocation_parameters": "{" * 5000}, "ChatCompletion", oi, True),
    ]
    assert got == [
        ("chat", "anthropic", "claude-haiku-4-5"),
        ("embeddings", "openai", "text-embedding-3-small"),
        None, None, None, None, None, None,
        ("chat", "openai", "gpt-4o-mini"),
        ("chat", "openai", None), ("chat", "openai", None), ("chat", "openai", None), ("chat", "openai", None),
        ("chat", "openai", None), ("chat", "openai", None), ("chat", "openai", None),
    ]


# -- OpenLLMetry's streamed output count ----------------------------------------------------------------------------
def test_openllmetrys_streamed_output_is_the_apis_final_count(standin, cfg, spans, openllmetry):
    provider, exporter = spans
    client = anthropic.Anthropic(base_url=standin.url, api_key="k", max_retries=0)
    sent = []
    for i in range(3):
        for ev in client.messages.create(model=HAIKU, max_tokens=64, stream=True,
                                         messages=[{"role": "user", "content": f"Stream question {i} on refunds"}]):
            if ev.type == "message_start":
                inp, placeholder = ev.message.usage.input_tokens, ev.message.usage.output_tokens
            elif ev.type == "message_delta":
                out = ev.usage.output_tokens  # cumulative: the whole answer's
        assert placeholder == 1
        sent.append((inp, out))
    u = client.messages.create(model=HAIKU, max_tokens=64, messages=ASK).usage
    sent.append((u.input_tokens, u.output_tokens))  # not streamed: as the API said
    finished = exporter.get_finished_spans()
    assert [s.attributes.get("gen_ai.is_streaming") for s in finished] == [True, True, True, None]
    assert [s.attributes["gen_ai.usage.output_tokens"] for s in finished] == [o + 1 for _, o in sent[:3]] + [sent[3][1]]
    lake_from_sdk_spans(finished, cfg)
    assert q(cfg, "SELECT input_tokens, output_tokens, cost_usd, data_quality FROM calls ORDER BY ts") == [
        (i, o, pytest.approx(_haiku_usd(i, o), rel=1e-9), None) for i, o in sent]

