"""The OpenAI Chat Completions API on the gateway, driven by the real ``openai`` SDK (streaming
included) against Gateway → Pipeline → the local stand-ins; the same question asked through the
``anthropic`` SDK is one cache entry."""

from __future__ import annotations

import dataclasses

import anthropic
import httpx
import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from gateways import DictCache

from costline import contract as c
from costline.collectors import Recorder
from costline.config import Config
from costline.serving.gateway.auth import KeyStore
from costline.serving.gateway.app import CACHE_MODEL, STREAM_MODE_HEADER, Gateway
from costline.serving.pipeline import Pipeline
from costline.serving.settings import BackendsConfig, GatewayConfig, StandInConfig
from costline.sim.standin import StandInServer

EASY = "How do I reset my password?"


@pytest.fixture
def standin():
    server = StandInServer(StandInConfig(latency_scale=0.0), port=0)
    server.start()
    yield server
    server.shutdown()


@pytest.fixture
def exporter():
    return InMemorySpanExporter()


@pytest.fixture
def gateway(standin, exporter, tmp_path):
    made = []

    def start(*, gated: bool = False, keys: bool = False, **settings):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        cfg = Config()
        serving = dataclasses.replace(cfg.serving, backends=BackendsConfig(
            anthropic_base_url=standin.url, student_base_url=standin.openai_url, max_retries=0))
        kwargs = {} if gated else {"confidence": None}
        pipeline = Pipeline.from_config(cfg.replace(serving=serving), recorder=Recorder(provider),
                                        cache=DictCache(), env={}, **kwargs)
        gw = Gateway(pipeline, GatewayConfig(keys_file=tmp_path / "keys.json", **settings), port=0,
                     wall=lambda: 1_780_000_000.0)
        gw.start()
        made.append((gw, pipeline))
        return gw

    yield start
    for gw, pipeline in made:
        gw.shutdown()
        pipeline.close()


def settles_to_zero(gw) -> bool:
    """Every admitted request released its slot (a stream frees it once its last byte left)."""
    import time

    for _ in range(400):
        if gw._server.in_flight == 0:
            return True
        time.sleep(0.05)
    return False


def client(gw, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=kw.pop("api_key", "unused"), max_retries=0, **kw)


def direct_usage(standin, query: str, model: str, max_tokens: int, system: str | None = None) -> tuple[int, int]:
    """What the stand-in model itself reports for the prompt (asked directly, not through costline)."""
    extra = {"system": system} if system is not None else {}
    msg = anthropic.Anthropic(base_url=standin.url, api_key="x", max_retries=0).messages.create(
        model=model, max_tokens=max_tokens, messages=[{"role": "user", "content": query}], **extra)
    return msg.usage.input_tokens, msg.usage.output_tokens


def test_a_chat_completion_through_the_openai_sdk(gateway, standin, exporter) -> None:
    gw = gateway()
    app = client(gw, default_headers={"x-costline-tenant": "acme"})
    raw = app.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", max_completion_tokens=200,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": EASY}])
    done = raw.parse()
    assert raw.headers["x-costline-cache-hit"] == "false"
    assert done.object == "chat.completion" and done.created == 1_780_000_000
    assert done.choices[0].message.role == "assistant" and done.choices[0].message.content
    assert done.choices[0].finish_reason == "stop"
    # the usage the model reported for the same prompt asked directly: the system message reached it
    # as the system prompt (without it the model counts fewer input tokens)
    want_in, want_out = direct_usage(standin, EASY, done.model, 200, system="Be brief.")
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (want_in, want_out)
    assert direct_usage(standin, EASY, done.model, 200)[0] != want_in
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens
    (req,) = [s for s in exporter.get_finished_spans() if s.name == c.SPAN_REQUEST]
    assert req.attributes[c.COSTLINE_TENANT] == "acme"
    # asked again: the cache answers, usage zero, model costline-cache
    again = app.chat.completions.create(model="gpt-4o-mini", max_completion_tokens=200,
                                        messages=[{"role": "system", "content": "Be brief."},
                                                  {"role": "user", "content": EASY}])
    assert again.model == CACHE_MODEL and again.choices[0].message.content == done.choices[0].message.content
    assert again.usage.total_tokens == 0


@pytest.mark.parametrize("gated", [False, True])
def test_streaming_with_usage_in_the_final_chunk(gateway, standin, gated) -> None:
    gw = gateway(gated=gated)
    app = client(gw)
    ask = dict(model="gpt-4o-mini", max_completion_tokens=150, messages=[{"role": "user", "content": EASY}])
    with app.chat.completions.with_streaming_response.create(
            **ask, stream=True, stream_options={"include_usage": True}) as raw:
        assert raw.headers[STREAM_MODE_HEADER] == ("buffered" if gated else "live")
        chunks = list(raw.parse())
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    finals = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finals == ["stop"]
    *body, last = chunks
    assert last.choices == [] and all(ch.usage is None for ch in body)  # usage in the final chunk only
    want_in, want_out = direct_usage(standin, EASY, last.model, 150)
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (want_in, want_out)
    # the whole answer was stored: the same request without streaming gets the streamed text from the cache
    plain = app.chat.completions.create(**ask)
    assert text and plain.model == CACHE_MODEL and plain.choices[0].message.content == text
    # without include_usage no chunk carries usage
    chunks = list(app.chat.completions.create(**ask, stream=True))
    assert all(getattr(ch, "usage", None) is None for ch in chunks)
    assert settles_to_zero(gw)


def test_one_cache_entry_for_both_apis(gateway) -> None:
    gw = gateway()
    first = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0).messages.create(
        model="m", max_tokens=300, system="Answer in one line.", messages=[{"role": "user", "content": EASY}])
    again = client(gw).chat.completions.create(
        model="m", max_tokens=300, messages=[{"role": "system", "content": "Answer in one line."},
                                             {"role": "user", "content": EASY}])
    assert again.model == CACHE_MODEL and again.choices[0].message.content == first.content[0].text
    # another max_tokens is another scope: a model answers
    other = client(gw).chat.completions.create(
        model="m", max_tokens=301, messages=[{"role": "system", "content": "Answer in one line."},
                                             {"role": "user", "content": EASY}])
    assert other.model != CACHE_MODEL


def test_errors_in_openais_format(gateway, standin, tmp_path) -> None:
    gw = gateway()
    app = client(gw)
    with pytest.raises(openai.BadRequestError) as err:
        app.chat.completions.create(model="m", messages=[{"role": "user", "content": EASY}],
                                    functions=[{"name": "f", "parameters": {}}])
    assert err.value.body["type"] == "invalid_request_error" and "functions" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError):
        app.chat.completions.create(model="m", messages=[{"role": "assistant", "content": "hi"}])
    with pytest.raises(openai.BadRequestError):
        app.chat.completions.create(model="m", max_completion_tokens=0, messages=[{"role": "user", "content": EASY}])
    standin.inject_errors(529, 20)  # every tier overloaded (this test's own stand-in)
    with pytest.raises(openai.InternalServerError) as err:
        app.chat.completions.create(model="m", messages=[{"role": "user", "content": "a fresh question"}])
    assert err.value.status_code == 503 and err.value.response.headers["x-should-retry"] == "false"
    assert err.value.body["type"] == "server_error"


def test_keys_work_as_openai_api_keys(gateway, tmp_path, exporter) -> None:
    _, key = KeyStore(tmp_path / "keys.json").add("globex")
    gw = gateway()
    with pytest.raises(openai.AuthenticationError) as err:
        client(gw).chat.completions.create(model="m", messages=[{"role": "user", "content": EASY}])
    assert err.value.body["type"] == "authentication_error"
    done = client(gw, api_key=key).chat.completions.create(model="m", messages=[{"role": "user", "content": EASY}])
    assert done.choices[0].message.content
    assert [s.attributes[c.COSTLINE_TENANT] for s in exporter.get_finished_spans() if s.name == c.SPAN_REQUEST] \
        == ["globex"]
    models = client(gw, api_key=key).models.list()
    assert [m.id for m in models.data] and all(m.object == "model" for m in models.data)


def test_models_retrieve_answers_both_sdks_for_any_model_a_request_may_name(gateway, tmp_path) -> None:
    """Frameworks check a model with ``models.retrieve`` before using it; the router answers whatever model a
    request names, so a tier's model is that tier's and any other well-formed name is served (routed)."""
    _, key = KeyStore(tmp_path / "keys.json").add("globex")
    gw = gateway()
    listed = [m.id for m in client(gw, api_key=key).models.list().data]
    for name in (*listed[:1], "gpt-4o-mini", "claude-sonnet-4-6"):
        got = client(gw, api_key=key).models.retrieve(name)
        assert (got.id, got.object) == (name, "model")
        got_a = anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0).models.retrieve(name)
        assert got_a.id == name and got_a.display_name.startswith(name)
    assert "routed by costline" in client(gw, api_key=key).models.retrieve("gpt-4o-mini").model_extra.get(
        "display_name", "")
    with pytest.raises(openai.AuthenticationError):
        client(gw).models.retrieve("gpt-4o-mini")  # the key is checked as on every route
    with pytest.raises(openai.NotFoundError):
        client(gw, api_key=key).models.retrieve("x" * 300)


def test_a_model_failing_mid_stream_ends_the_stream_with_an_error(gateway, standin) -> None:
    gw = gateway()
    standin.inject_stream_errors(after_deltas=2)
    pieces = []
    with pytest.raises(openai.APIError):
        for chunk in client(gw).chat.completions.create(model="m", messages=[{"role": "user", "content": EASY}],
                                                        stream=True):
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
    assert "".join(pieces)  # what was sent before the failure stands
    assert settles_to_zero(gw)


def test_a_body_over_the_limit_is_refused_in_openais_format(gateway) -> None:
    gw = gateway(max_body_bytes=2048)
    with pytest.raises(openai.APIStatusError) as err:
        client(gw).chat.completions.create(model="m", messages=[{"role": "user", "content": "x" * 5000}])
    assert err.value.status_code == 413 and err.value.body["type"] == "invalid_request_error"


def _ask_with_effort(gw, api: str, effort: str):
    """``EASY`` asked through ``api`` at a reasoning ``effort`` (each API's own field for it): the answering model."""
    if api == "messages":
        return anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0).messages.create(
            model="m", max_tokens=300, output_config={"effort": effort},
            messages=[{"role": "user", "content": EASY}]).model
    if api == "chat":
        return client(gw).chat.completions.create(model="m", max_tokens=300, reasoning_effort=effort,
                                                  messages=[{"role": "user", "content": EASY}]).model
    return client(gw).responses.create(model="m", max_output_tokens=300, reasoning={"effort": effort},
                                       input=EASY).model


@pytest.mark.parametrize("api, low, high, same_as_low", [
    ("messages", "low", "high", ("chat", "low")),
    ("chat", "low", "high", ("responses", "low")),
    ("chat", "minimal", "medium", ("messages", "low")),  # minimal reaches the Anthropic tiers as low: one scope
    ("responses", "low", "xhigh", ("messages", "low")),
])
def test_the_reasoning_effort_is_part_of_the_cache_scope(gateway, api, low, high, same_as_low) -> None:
    """A "high" effort request was answered with the answer a "low" one stored (output_config.effort,
    reasoning_effort and reasoning.effort were not in the scope). The effort the tiers get is: the same effort is
    one cache entry whichever API asked."""
    gw = gateway()
    assert _ask_with_effort(gw, api, low) != CACHE_MODEL
    assert _ask_with_effort(gw, api, low) == CACHE_MODEL
    assert _ask_with_effort(gw, api, high) != CACHE_MODEL  # a model answers: another effort, another scope
    assert _ask_with_effort(gw, *same_as_low) == CACHE_MODEL


@pytest.fixture
def sent_to_anthropic(monkeypatch):
    """The Messages API request bodies the gateway sent to Anthropic tiers (the stand-in is lenient about shapes
    Anthropic's API refuses), oldest first."""
    from costline.serving.backends import AnthropicBackend

    sent: list[dict] = []
    made = AnthropicBackend._kwargs

    def recorded(self, prompt):
        kwargs = made(self, prompt)
        sent.append(kwargs)
        return kwargs

    monkeypatch.setattr(AnthropicBackend, "_kwargs", recorded)
    return sent


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_an_empty_turn_mid_conversation_is_not_sent_to_anthropic_tiers(gateway, sent_to_anthropic, api) -> None:
    """OpenAI takes an assistant message of "" mid-conversation; Anthropic's API refuses every empty message but a
    final assistant one (a 400 on every Anthropic tier). It says nothing: it is left out, the rest as it came."""
    gw = gateway()
    history = [{"role": "user", "content": "Remind me later"}, {"role": "assistant", "content": ""},
               {"role": "user", "content": "What is our refund window?"}]
    if api == "chat":
        done = client(gw).chat.completions.create(model="m", messages=history)
        assert done.choices[0].message.content
    else:  # as the Agents SDK sends an earlier answer back: output_text parts
        history[1] = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": ""}]}
        assert client(gw).responses.create(model="m", input=history).output_text
    assert sent_to_anthropic and all(kw["messages"] == [
        {"role": "user", "content": "Remind me later"}, {"role": "user", "content": "What is our refund window?"}]
        for kw in sent_to_anthropic), sent_to_anthropic


@pytest.mark.parametrize("limits, status, param", [
    # null is unset (what a client serialising its unset fields sends): max_tokens stands
    ({"max_tokens": 5, "max_completion_tokens": None}, 200, None),
    ({"max_tokens": 0, "max_completion_tokens": None}, 400, "max_tokens"),
])
def test_a_null_max_completion_tokens_leaves_max_tokens_in_force(gateway, limits, status, param) -> None:
    gw = gateway()
    story = "Tell a long story about a lighthouse keeper"
    if status == 400:
        with pytest.raises(openai.BadRequestError) as err:
            client(gw).chat.completions.create(model="m", messages=[{"role": "user", "content": story}],
                                               extra_body=limits)
        assert err.value.body["param"] == param
        return
    done = client(gw).chat.completions.create(model="m", messages=[{"role": "user", "content": story}],
                                              extra_body=limits)
    assert done.choices[0].finish_reason == "length" and done.usage.completion_tokens == 5


FN = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
RESP_FN = {"type": "function", "name": "f", "parameters": {"type": "object"}}


@pytest.mark.parametrize("path, body, param", [
    # a list or an object where a name is due: each was a TypeError and a 500 the SDK retried
    ("/v1/responses", {"input": EASY, "reasoning": {"effort": ["high"]}}, "reasoning.effort"),
    ("/v1/responses", {"input": EASY, "reasoning": {"effort": {"x": 1}}}, "reasoning.effort"),
    ("/v1/responses", {"input": EASY, "tools": [{"type": "web_search"}], "tool_choice": ["x"]}, "tool_choice"),
    ("/v1/responses", {"input": EASY, "tools": [{"type": "web_search"}], "tool_choice": {"type": ["x"]}},
     "tool_choice"),
    ("/v1/responses", {"input": EASY, "tools": [RESP_FN], "tool_choice": {"type": "function", "name": ["f"]}},
     "tool_choice"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": EASY}], "tools": [FN],
                              "tool_choice": {"type": "function", "function": {"name": ["f"]}}}, "tool_choice"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": EASY}], "reasoning_effort": ["high"]},
     "reasoning_effort"),
    ("/v1/messages", {"messages": [{"role": "user", "content": EASY}], "max_tokens": 50,
                      "tools": [{"name": "f", "input_schema": {"type": "object"}}],
                      "tool_choice": {"type": "tool", "name": ["f"]}}, None),
])
def test_a_list_or_object_where_a_name_is_due_is_a_400_naming_the_field(gateway, path, body, param) -> None:
    gw = gateway()
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        answer = http.post(path, json={"model": "m", **body})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error"
    if param is not None:  # the OpenAI format names the field; the Anthropic one says it in the message
        assert error["param"] == param
    else:
        assert "tool_choice" in error["message"]
