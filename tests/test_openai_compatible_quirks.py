"""OpenAI-compatible servers that answer as the OpenAI API never does, read by the real SDK clients: Mistral's
reasoning models' ``content`` as a list of parts, a server that refuses ``stream_options`` (Azure OpenAI before
api-version 2024-09-01), a null token count, an error object written unwrapped as a stream chunk or a 200 body
(older vLLM). And live streams through the gateway: no "Failed to detach context", each call span under its own
request. Expected tokens and costs are worked out by hand from the usage the scripted server sent."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

import anthropic
import openai
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from scripted_http import ScriptedHttp

from costline import contract as c
from costline.collectors import Recorder
from costline.config import CaptureConfig, Config, ModelPrice
from costline.pricing import PricingTable
from costline.processors.records import flatten_span
from costline.serving.backends import Prompt
from costline.serving.errors import BackendError
from costline.serving.gateway.app import Gateway
from costline.serving.pipeline import LiveAnswer, Pipeline
from costline.serving.settings import (BackendsConfig, EscalationConfig, GatewayConfig, RouteRulesConfig, TierConfig,
                                       TiersConfig)

Chat = Callable[[BaseHTTPRequestHandler, dict[str, Any]], None]

#: gpt-4o-mini's list prices, USD per million tokens: input, output, cached input.
IN, OUT, CACHED = 0.15, 0.60, 0.075
MID_TEXT = "The mid tier's answer."


# -- the wire ------------------------------------------------------------------------------------------------------
def send_json(h: BaseHTTPRequestHandler, body: Any, status: int = 200) -> None:
    raw = json.dumps(body).encode()
    h.send_response(status)
    h.send_header("content-type", "application/json")
    h.send_header("content-length", str(len(raw)))
    h.end_headers()
    h.wfile.write(raw)


def send_sse(h: BaseHTTPRequestHandler, events: list[Any], done: bool = True) -> None:
    h.send_response(200)
    h.send_header("content-type", "text/event-stream")
    h.end_headers()
    for event in events:
        h.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
    if done:
        h.wfile.write(b"data: [DONE]\n\n")
    h.wfile.flush()


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "served",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def usage_chunk(prompt: int, completion: int) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "served", "choices": [],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}}


def completion(message: dict[str, Any], usage: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": "stop"}],
            "usage": usage}


def anthropic_message(usage: Any, text: str = MID_TEXT) -> dict[str, Any]:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5-20251001",
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": usage}


#: Mistral's Magistral models: the answer's content as parts, thinking first (itself a list of parts).
PARTS = [{"type": "thinking", "thinking": [{"type": "text", "text": "the user likes it"}]},
         {"type": "text", "text": "Posi"}, {"type": "text", "text": "tive."}]
ERROR_OBJECT = {"object": "error", "message": "This model's maximum context length is 4096 tokens",
                "type": "BadRequestError", "param": None, "code": 400}
AZURE_400 = {"error": {"message": "Unrecognized request argument supplied: stream_options",
                       "type": "invalid_request_error", "param": None, "code": None}}


# -- a world: a scripted server behind every tier ------------------------------------------------------------------
class World:
    """Student and budget (``api = "openai"``, gpt-4o-mini priced by hand) on one scripted OpenAI-compatible server;
    mid and frontier on the same server's Messages API (``anthropic`` answers those). ``log``: (path, body) of each
    request."""

    def __init__(self, chat: Chat, *, capture: bool = False,
                 anthropic: Callable[[dict[str, Any]], Any] = lambda b: anthropic_message(
                     {"input_tokens": 100, "output_tokens": 30})) -> None:
        self.log: list[tuple[str, dict[str, Any]]] = []

        def answer(h: BaseHTTPRequestHandler, path: str, body: bytes) -> None:
            got = json.loads(body or b"{}")
            self.log.append((path, got))
            if path.endswith("/chat/completions"):
                chat(h, got)
            else:
                send_json(h, anthropic(got))

        self.server = ScriptedHttp(answer)
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.recorder = Recorder(provider, capture=CaptureConfig(message_content=capture), env={})
        cfg = Config()
        pricing = dataclasses.replace(cfg.pricing, models=(
            *[m for m in cfg.pricing.models if m.tier != c.TIER_BUDGET],
            ModelPrice("gpt-4o-mini", c.TIER_BUDGET, provider=c.PROVIDER_OPENAI, input_per_mtok=IN,
                       output_per_mtok=OUT, cache_read_per_mtok=CACHED)))
        serving = dataclasses.replace(
            cfg.serving,
            router=dataclasses.replace(cfg.serving.router, rules=RouteRulesConfig(student_task_types=("classify",))),
            backends=BackendsConfig(anthropic_base_url=self.server.url, student_base_url=self.server.url + "/v1",
                                    max_retries=0, timeout_s=10.0),
            tiers=TiersConfig(budget=TierConfig(api="openai", base_url=self.server.url + "/v1", model="gpt-4o-mini",
                                                api_key_env="TEST_KEY")),
            escalation=EscalationConfig(max_escalations=2))
        self.config = cfg.replace(serving=serving, pricing=pricing)
        self.pipeline = Pipeline.from_config(self.config, recorder=self.recorder, env={"TEST_KEY": "k"}, cache=None,
                                             confidence=None)

    @property
    def backends(self) -> dict[str, Any]:
        return self.pipeline.backends

    def calls(self) -> list[Any]:
        return [s for s in self.exporter.get_finished_spans() if s.kind.name == "CLIENT"]

    def requests(self) -> list[Any]:
        return [s for s in self.exporter.get_finished_spans() if s.name == c.SPAN_REQUEST]

    def lake_rows(self) -> list[Any]:
        """The processors' rows of the call spans, exported as OTLP and priced as the lake prices them."""
        table = PricingTable(self.config.pricing)
        rows = []
        for rs in encode_spans(self.exporter.get_finished_spans()).resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    row = flatten_span(span, table, scope=ss.scope.name)
                    if row is not None and hasattr(row, "cost_usd"):
                        rows.append(row)
        return rows

    def chats(self) -> list[dict[str, Any]]:
        return [body for path, body in self.log if path.endswith("/chat/completions")]

    def close(self) -> None:
        self.pipeline.close()
        self.server.close()


@pytest.fixture
def world():
    made: list[World] = []

    def make(chat: Chat, **kw: Any) -> World:
        made.append(World(chat, **kw))
        return made[-1]

    yield make
    for w in made:
        w.close()


def drain(pieces: Any) -> tuple[list[Any], Any]:
    got = []
    while True:
        try:
            got.append(next(pieces))
        except StopIteration as done:
            return got, done.value


# -- 1. content as a list of parts ---------------------------------------------------------------------------------
@pytest.mark.parametrize("capture", [False, True])
def test_an_answer_whose_content_is_a_list_of_parts_is_read_as_the_text_of_its_text_parts(world, capture):
    """Before: only a string was read, so the answer was judged empty and the paid call wasted (sent up a tier)."""
    usage = {"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500,
             "prompt_tokens_details": {"cached_tokens": 1024}}
    w = world(lambda h, b: send_json(h, completion({"content": PARTS}, usage)), capture=capture)
    result = w.pipeline.answer("Classify: great product", task_type="classification", tenant="t1")
    assert (result.tier, result.success, result.text) == (c.TIER_BUDGET, True, "Positive.")
    assert [a.tier for a in result.attempts] == [c.TIER_BUDGET]  # not sent up to mid
    (call,) = w.calls()
    a = call.attributes
    assert (a[c.GEN_AI_USAGE_INPUT_TOKENS], a[c.GEN_AI_USAGE_OUTPUT_TOKENS],
            a[c.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS]) == (1200, 300, 1024)
    assert c.COSTLINE_USAGE_INCOMPLETE not in a  # every count came
    # the lake's row of the call: (1200 - 1024) fresh + 1024 cached input, 300 output, at gpt-4o-mini's prices
    (row,) = w.lake_rows()
    assert (row.input_tokens, row.output_tokens, row.cache_read_tokens) == (1200, 300, 1024)
    assert row.cost_usd == pytest.approx((176 * 0.15 + 1024 * 0.075 + 300 * 0.60) / 1e6)  # 2.832e-4


def test_a_tool_call_answer_with_content_as_parts_keeps_its_text(world):
    body = completion({"content": PARTS, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\": \"x\"}"}}]},
        {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15})
    w = world(lambda h, b: send_json(h, body))
    reply = w.backends[c.TIER_BUDGET].complete(Prompt.of("hi"))
    assert reply.content[0] == {"type": "text", "text": "Positive."}
    assert reply.tool_calls[0]["name"] == "lookup"


def test_a_stream_whose_deltas_are_lists_of_parts_yields_only_text(world):
    w = world(lambda h, b: send_sse(h, [chunk({"role": "assistant", "content": PARTS[:2]}),
                                        chunk({"content": [PARTS[2]]}), chunk({}, "stop"), usage_chunk(40, 7)]))
    pieces, reply = drain(w.backends[c.TIER_STUDENT].stream(Prompt.of("hi")))
    assert pieces == ["Posi", "tive."] and reply.text == "Positive."
    (call,) = w.calls()
    assert call.status.status_code != StatusCode.ERROR
    assert (call.attributes[c.GEN_AI_USAGE_INPUT_TOKENS], call.attributes[c.GEN_AI_USAGE_OUTPUT_TOKENS]) == (40, 7)


@pytest.fixture
def gateway(tmp_path):
    made: list[Any] = []

    def make(w: World) -> Gateway:
        gw = Gateway(w.pipeline, GatewayConfig(keys_file=tmp_path / "keys.json", rate_limit_per_minute=0), port=0)
        gw.start()
        made.append(gw)
        return gw

    yield make
    for gw in made:
        gw.shutdown()


ASK = [{"role": "user", "content": "Is this review positive? 'great product'"}]
STUDENT = {"x-costline-task-type": "classify"}


def test_sdk_clients_streaming_a_list_content_answer_through_the_gateway_get_its_text(world, gateway):
    """Before: the list went to the client as a text delta (the anthropic SDK crashed on it) and the request failed
    with "costline gateway failure mid-stream"."""
    w = world(lambda h, b: send_sse(h, [chunk({"role": "assistant", "content": PARTS}), chunk({}, "stop"),
                                        usage_chunk(40, 7)]))
    gw = gateway(w)
    oa = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="x", max_retries=0, default_headers=STUDENT)
    text = "".join(ch.choices[0].delta.content or "" for ch in oa.chat.completions.create(
        model="m", messages=ASK, stream=True) if ch.choices)
    an = anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0, default_headers=STUDENT)
    with an.messages.stream(model="m", max_tokens=50, messages=ASK) as s:
        streamed = s.get_final_text()
    assert text == streamed == "Positive."
    assert all(r.attributes[c.COSTLINE_SUCCESS] for r in w.requests()) and len(w.requests()) == 2
    for call in w.calls():
        assert call.status.status_code != StatusCode.ERROR
        assert (call.attributes[c.GEN_AI_USAGE_INPUT_TOKENS], call.attributes[c.GEN_AI_USAGE_OUTPUT_TOKENS]) == (40, 7)


# -- 2. a server that refuses stream_options -----------------------------------------------------------------------
def refuses_stream_options(h: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
    if "stream_options" in body:
        send_json(h, AZURE_400, 400)
    else:
        send_sse(h, [chunk({"role": "assistant", "content": "Positive."}), chunk({}, "stop")])


def test_a_server_that_refuses_stream_options_is_asked_again_without_it_and_so_from_then_on(world, caplog):
    """Before: every streamed request to such a tier failed (400) and went up a tier."""
    w = world(refuses_stream_options)
    backend = w.backends[c.TIER_STUDENT]
    with caplog.at_level(logging.WARNING, logger="costline.serving.backends"):
        first, reply = drain(backend.stream(Prompt.of("hi")))
        second, _ = drain(backend.stream(Prompt.of("hi")))
    assert first == second == ["Positive."] and reply.stop_reason == "stop"
    assert ["stream_options" in b for b in w.chats()] == [True, False, False]  # remembered after the first refusal
    assert len([r for r in caplog.records if "stream_options" in r.getMessage()]) == 1  # said once
    refused, *answered = w.calls()
    assert refused.attributes[c.ERROR_TYPE] == "BadRequestError"
    for call in answered:  # no usage came: none recorded, the call flagged
        assert call.status.status_code != StatusCode.ERROR
        assert c.GEN_AI_USAGE_INPUT_TOKENS not in call.attributes
        assert call.attributes[c.COSTLINE_USAGE_INCOMPLETE] is True
    # a 400 for anything else fails the tier as it is, asked once
    other = world(lambda h, b: send_json(h, {"error": {"message": "model not found",
                                                       "type": "invalid_request_error"}}, 400))
    with pytest.raises(BackendError) as err:
        drain(other.backends[c.TIER_STUDENT].stream(Prompt.of("hi")))
    assert err.value.error_type == "BadRequestError"
    assert len(other.chats()) == 1


def test_a_live_request_to_such_a_server_is_served_by_its_tier(world):
    w = world(refuses_stream_options)
    live = w.pipeline.answer_stream("Is this review positive?", task_type="classify", tenant="t1")
    assert isinstance(live, LiveAnswer)
    assert list(live) == ["Positive."]
    assert (live.result.tier, live.result.success) == (c.TIER_STUDENT, True)


# -- 3. a null token count (content capture off and on read alike) -------------------------------------------------
@pytest.mark.parametrize("usage, missing, kept", [
    ({"prompt_tokens": None, "completion_tokens": 300, "total_tokens": None}, c.GEN_AI_USAGE_INPUT_TOKENS,
     (c.GEN_AI_USAGE_OUTPUT_TOKENS, 300)),
    ({"prompt_tokens": 1200, "completion_tokens": None, "total_tokens": None}, c.GEN_AI_USAGE_OUTPUT_TOKENS,
     (c.GEN_AI_USAGE_INPUT_TOKENS, 1200)),
], ids=["prompt_tokens null", "completion_tokens null"])
def test_a_null_openai_count_is_left_out_and_flagged_not_recorded_as_zero(world, usage, missing, kept):
    """Content capture off (the backend reads the JSON) and on (the instrumentation reads the SDK's model) alike.
    Before, with capture off: recorded as 0 and priced as 0 tokens."""
    for capture in (False, True):
        w = world(lambda h, b: send_json(h, completion({"content": "Positive."}, usage)), capture=capture)
        w.backends[c.TIER_BUDGET].complete(Prompt.of("hi"))
        (call,) = w.calls()
        assert missing not in call.attributes, capture
        assert call.attributes[kept[0]] == kept[1]
        assert call.attributes[c.COSTLINE_USAGE_INCOMPLETE] is True, capture


@pytest.mark.parametrize("usage, missing, kept", [
    # Anthropic's input_tokens leaves the cache out: the GenAI total is 10 + 100 + 20 = 130
    ({"input_tokens": 10, "output_tokens": None, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20},
     c.GEN_AI_USAGE_OUTPUT_TOKENS, (c.GEN_AI_USAGE_INPUT_TOKENS, 130)),
    ({"input_tokens": None, "output_tokens": 30}, c.GEN_AI_USAGE_INPUT_TOKENS, (c.GEN_AI_USAGE_OUTPUT_TOKENS, 30)),
], ids=["output_tokens null", "input_tokens null"])
def test_a_null_anthropic_count_is_left_out_and_flagged_not_recorded_as_zero(world, usage, missing, kept):
    for capture in (False, True):
        w = world(lambda h, b: None, capture=capture, anthropic=lambda b: anthropic_message(usage))
        reply = w.backends[c.TIER_MID].complete(Prompt.of("hi"))
        assert reply.text == MID_TEXT
        (call,) = w.calls()
        assert missing not in call.attributes, capture
        assert call.attributes[kept[0]] == kept[1]
        assert call.attributes[c.COSTLINE_USAGE_INCOMPLETE] is True, capture
    # whole counts (a null cache count: no cache used) are recorded as sent, not flagged
    w = world(lambda h, b: None, anthropic=lambda b: anthropic_message(
        {"input_tokens": 10, "output_tokens": 30, "cache_read_input_tokens": None}))
    w.backends[c.TIER_MID].complete(Prompt.of("hi"))
    (call,) = w.calls()
    assert (call.attributes[c.GEN_AI_USAGE_INPUT_TOKENS], call.attributes[c.GEN_AI_USAGE_OUTPUT_TOKENS]) == (10, 30)
    assert c.COSTLINE_USAGE_INCOMPLETE not in call.attributes


# -- 4. an error object without choices ---------------------------------------------------------------------------
@pytest.mark.parametrize("events, sent", [
    ([chunk({"role": "assistant", "content": "Posi"}), ERROR_OBJECT], ["Posi"]),
    ([ERROR_OBJECT], []),
], ids=["mid-stream", "first"])
def test_an_error_object_as_a_stream_chunk_fails_the_tier_and_its_call_span(world, events, sent):
    """Before: TypeError ('NoneType' object is not subscriptable) for the tier, and a call span with no error."""
    w = world(lambda h, b: send_sse(h, events))
    got: list[str] = []
    pieces = w.backends[c.TIER_STUDENT].stream(Prompt.of("hi"))
    with pytest.raises(BackendError) as err:
        while True:
            got.append(next(pieces))
    assert got == sent
    assert err.value.error_type == "APIError" and "maximum context length" in str(err.value)
    (call,) = w.calls()
    assert call.attributes[c.ERROR_TYPE] == "APIError" and call.status.status_code == StatusCode.ERROR


def test_a_live_stream_whose_first_chunk_is_an_error_object_goes_up_a_tier(world):
    w = world(lambda h, b: send_sse(h, [ERROR_OBJECT]))
    live = w.pipeline.answer_stream("Is this review positive?", task_type="classify", tenant="t1")
    assert list(live) == [MID_TEXT]
    assert [(a.tier, a.problem) for a in live.result.attempts] == [(c.TIER_STUDENT, "APIError"), (c.TIER_MID, None)]
    assert [s.attributes.get(c.ERROR_TYPE) for s in w.calls()] == ["APIError", None]


def test_a_200_error_object_fails_the_call_span_as_the_attempt_says(world):
    """Content capture off and on alike. Before, with capture on: the call span had no error while the attempt
    failed."""
    for capture in (False, True):
        w = world(lambda h, b: send_json(h, ERROR_OBJECT), capture=capture)
        result = w.pipeline.answer("Classify: great product", task_type="classification", tenant="t1")
        assert (result.tier, result.text) == (c.TIER_MID, MID_TEXT)
        failed = result.attempts[0]
        assert (failed.tier, failed.problem) == (c.TIER_BUDGET, "APIResponseValidationError")
        budget_call = next(s for s in w.calls() if s.attributes[c.COSTLINE_TIER] == c.TIER_BUDGET)
        assert budget_call.attributes.get(c.ERROR_TYPE) == failed.problem, capture
        assert budget_call.status.status_code == StatusCode.ERROR


# -- 5. live streams through the gateway: context and parentage ----------------------------------------------------
def test_live_streams_through_the_gateway_log_no_detach_error_and_each_call_is_under_its_request(world, gateway,
                                                                                                   caplog):
    """Before: "Failed to detach context" (ERROR, with a traceback) on every live stream: the request's context was
    attached in one context and detached in another, on whichever pool thread ran the generator's last step."""
    answers = iter([["Positive."], ["Negative."], ["Posi"]])  # the last one cut off: a failed request

    def chat(h: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        parts = next(answers)
        finish = [chunk({}, "stop"), usage_chunk(40, 7)] if parts != ["Posi"] else []
        send_sse(h, [chunk({"role": "assistant", "content": p}) for p in parts] + finish)

    w = world(chat)
    gw = gateway(w)
    oa = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="x", max_retries=0, default_headers=STUDENT)
    with caplog.at_level(logging.DEBUG):
        texts = []
        for _ in range(3):
            try:
                texts.append("".join(ch.choices[0].delta.content or "" for ch in oa.chat.completions.create(
                    model="m", messages=ASK, stream=True) if ch.choices))
            except openai.APIError:
                texts.append(None)
    assert texts == ["Positive.", "Negative.", None]
    assert not [r for r in caplog.records if "detach" in r.getMessage().lower()]
    requests, calls = w.requests(), w.calls()
    assert len(requests) == len(calls) == 3
    assert len({r.context.span_id for r in requests}) == 3
    by_id = {r.context.span_id: r for r in requests}
    for call in calls:
        assert call.parent is not None and call.parent.span_id in by_id
        assert call.context.trace_id == by_id[call.parent.span_id].context.trace_id
    assert sorted(by_id[call.parent.span_id].attributes[c.COSTLINE_SUCCESS] for call in calls) == [False, True, True]
