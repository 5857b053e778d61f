"""The backends and the pipeline against model servers that misbehave: a local HTTP server answers in the
Anthropic Messages or OpenAI chat-completions wire format as a flaky proxy, a vLLM or the real API does in
that situation (an ``error`` event in a stream, a stream cut off cleanly before its final event, a 200 whose
body is an error, ``content: null``, odd usage counts), and the real ``anthropic`` / ``openai`` SDK clients
read it. What is checked: what the caller gets, what the cache stores, what the call span records."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from scripted_http import ScriptedHttp
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costline import contract as c
from costline.collectors import Recorder
from costline.config import CaptureConfig, Config
from costline.serving.backends import Prompt, Reply, build_backends
from costline.serving.errors import BackendError
from costline.serving.gateway.app import failure_status
from costline.serving.pipeline import LiveAnswer, Pipeline
from costline.serving.registry import ModelRegistry
from costline.serving.routing.router import Decision, Router
from costline.serving.settings import BackendsConfig, EscalationConfig

Action = Callable[[BaseHTTPRequestHandler], None]


class Scripted(ScriptedHttp):
    """A model server answering each POST with the next scripted action."""

    def __init__(self, *actions: Action) -> None:
        self.actions = list(actions)
        super().__init__(lambda h, _path, _body: self.actions.pop(0)(h))


def json_answer(body: Any) -> Action:
    def act(h: BaseHTTPRequestHandler) -> None:
        raw = json.dumps(body).encode()
        h.send_response(200)
        h.send_header("content-type", "application/json")
        h.send_header("content-length", str(len(raw)))
        h.send_header("connection", "close")
        h.end_headers()
        h.wfile.write(raw)
    return act


def sse_answer(events: list[tuple[str | None, Any]]) -> Action:
    """A 200 event stream of ``(event name, data)`` that ends cleanly after the last one."""
    def act(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("content-type", "text/event-stream")
        h.send_header("connection", "close")
        h.end_headers()
        for name, data in events:
            text = data if isinstance(data, str) else json.dumps(data)
            h.wfile.write(((f"event: {name}\n" if name else "") + f"data: {text}\n\n").encode())
            h.wfile.flush()
    return act


def message(content: Any, stop: str | None = "end_turn", usage: Any = None) -> dict[str, Any]:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5-20251001",
            "content": content, "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 5} if usage is None else usage}


def anthropic_events(parts: list[str], *, error_after: int | None = None, error_type: str = "overloaded_error",
                     final: bool = True) -> list[tuple[str | None, Any]]:
    """The Messages API's stream of ``parts``; an ``error`` event after ``error_after`` text deltas (as the
    API sends ``overloaded_error`` mid-stream); ``final=False`` stops before ``message_delta``."""
    error = ("error", {"type": "error", "error": {"type": error_type, "message": "Overloaded"}})
    events: list[tuple[str | None, Any]] = [
        ("message_start", {"type": "message_start",
                           "message": message([], None, {"input_tokens": 10, "output_tokens": 1})}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}})]
    for i, part in enumerate(parts):
        if error_after == i:
            return events + [error]
        events.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                               "delta": {"type": "text_delta", "text": part}}))
    if error_after is not None:
        return events + [error]
    if final:
        events += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
                   ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn",
                                                                         "stop_sequence": None},
                                      "usage": {"output_tokens": 5}}),
                   ("message_stop", {"type": "message_stop"})]
    return events


def openai_chunk(content: str | None = None, finish: str | None = None) -> tuple[None, dict[str, Any]]:
    return None, {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "costline-student-lora",
                  "choices": [{"index": 0, "delta": {} if content is None else {"content": content},
                               "finish_reason": finish}]}


def completion(content: Any, finish: str = "stop", usage: Any = None) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion", "created": 1, "model": "costline-student-lora",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12} if usage is None else usage}


@dataclasses.dataclass
class World:
    server: Scripted
    recorder: Recorder
    exporter: InMemorySpanExporter
    backends: dict[str, Any]

    def call_spans(self) -> list[Any]:
        return [s for s in self.exporter.get_finished_spans() if s.kind.name == "CLIENT"]


@pytest.fixture
def world():
    made: list[World] = []

    def make(*actions: Action, capture: bool = False) -> World:
        server = Scripted(*actions)
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        recorder = Recorder(provider, capture=CaptureConfig(message_content=capture))
        config = Config()
        settings = BackendsConfig(anthropic_base_url=server.url, student_base_url=server.url + "/v1",
                                  max_retries=0, timeout_s=10.0)
        registry = ModelRegistry.from_config(config.replace(serving=dataclasses.replace(config.serving,
                                                                                        backends=settings)))
        backends = build_backends(registry, settings, recorder, env={})
        made.append(World(server, recorder, exporter, backends))
        return made[-1]

    yield make
    for w in made:
        for backend in w.backends.values():
            backend.close()
        w.server.close()


def drain(pieces: Any) -> tuple[list[str], Any]:
    """Every piece of a backend's stream, and the Reply it returned."""
    got = []
    while True:
        try:
            got.append(next(pieces))
        except StopIteration as done:
            return got, done.value


class FakeCache:
    def __init__(self) -> None:
        self.stored: list[tuple[str, str]] = []

    def lookup(self, query, *, tenant, namespace=None):
        return None

    def store(self, query, answer, *, tenant, namespace=None, doc_hashes=()):
        self.stored.append((query, answer))


class Fixed:
    """A routing policy that sends everything to one tier."""

    def __init__(self, tier: str) -> None:
        self.tier = tier

    def route(self, query, task_type=None):
        return Decision(self.tier, 1.0, "fixed")


def pipeline(w: World, tier: str, cache: FakeCache, *, max_escalations: int = 0) -> Pipeline:
    registry = ModelRegistry.from_config(Config())
    return Pipeline(router=Router(Fixed(tier), registry), backends=w.backends, recorder=w.recorder, cache=cache,
                    confidence=None, escalation=EscalationConfig(max_escalations=max_escalations))


# --- an error event or error body names its error type ---------------------------------------------------


@pytest.mark.parametrize("error_type, expected", [("overloaded_error", "OverloadedError"),
                                                  ("rate_limit_error", "RateLimitError"),
                                                  ("api_error", "InternalServerError")])
@pytest.mark.parametrize("error_after", [0, 1])
def test_an_error_event_in_an_anthropic_stream_fails_the_tier_with_the_sdk_class_of_its_error_type(
        world, error_type, expected, error_after) -> None:
    """Anthropic sends ``event: error`` (overloaded_error...) on a 200 stream; the SDK raises a bare
    APIStatusError for it (its class is picked by the HTTP status, 200). The tier's error type is the
    class the same error would have had as a status (what escalation, the request span and the gateway's
    429/529/500 go by), before any text or after some."""
    w = world(sse_answer(anthropic_events(["Hel", "lo"], error_after=error_after, error_type=error_type)))
    pieces: list[str] = []
    with pytest.raises(BackendError) as err:
        pieces, _ = drain(w.backends["budget"].stream(Prompt.of("hi")))
    assert err.value.error_type == expected


@pytest.mark.parametrize("capture", [False, True])
@pytest.mark.parametrize("error_type, expected", [("overloaded_error", "OverloadedError"),
                                                  ("rate_limit_error", "RateLimitError")])
def test_a_200_whose_body_is_an_anthropic_error_fails_the_tier_with_the_sdk_class_of_its_error_type(
        world, capture, error_type, expected) -> None:
    """A proxy that answers 200 with the Messages API's error object: not an empty answer, a failed tier."""
    w = world(json_answer({"type": "error", "error": {"type": error_type, "message": "busy"}}), capture=capture)
    with pytest.raises(BackendError) as err:
        w.backends["budget"].complete(Prompt.of("hi"))
    assert err.value.error_type == expected
    if not capture:  # with capture on the call span is instrument_anthropic's (the SDK raised nothing)
        (span,) = w.call_spans()
        assert span.attributes[c.ERROR_TYPE] == expected


def test_an_overloaded_error_before_the_first_token_on_the_top_tier_fails_the_request_as_overloaded(
        world) -> None:
    """The live path: the top tier's stream opens with an overloaded error; nothing to escalate to: the
    attempt's problem (what the gateway answers 529 on) is OverloadedError, nothing is cached."""
    w = world(sse_answer(anthropic_events(["Hel"], error_after=0)))
    cache = FakeCache()
    live = pipeline(w, "frontier", cache).answer_stream("hi", task_type="faq", tenant="acme")
    assert isinstance(live, LiveAnswer)
    assert list(live) == []
    assert live.result is not None and not live.result.success
    assert [a.problem for a in live.result.attempts] == ["OverloadedError"]
    assert failure_status(live.result) == 529  # the gateway's status for it (was 500 as an APIStatusError)
    assert cache.stored == []


# --- a stream cut off before its final event ---------------------------------------------------------------

CUT_STREAMS = {
    "anthropic, after text, before message_delta": ("budget", anthropic_events(["Hel", "lo"], final=False)),
    "anthropic, nothing after the headers": ("budget", []),
    "anthropic, message_start only": ("budget", anthropic_events([], final=False)),
    "openai, after text, before finish_reason": ("student", [openai_chunk("Hel"), openai_chunk("lo")]),
    "openai, nothing after the headers": ("student", []),
}


@pytest.mark.parametrize("tier, events", CUT_STREAMS.values(), ids=CUT_STREAMS)
def test_a_stream_that_ends_before_its_final_event_fails_the_tier(world, tier, events) -> None:
    """A proxy that ends the response cleanly mid-answer: the SDKs end the stream without an error. The
    answer is cut off (no stop reason: the gateway would call it end_turn), so the tier failed."""
    w = world(sse_answer(events))
    with pytest.raises(BackendError) as err:
        drain(w.backends[tier].stream(Prompt.of("hi")))
    assert err.value.tier == tier and err.value.error_type == "IncompleteStreamError"


def test_a_live_answer_cut_off_mid_stream_fails_the_request_and_is_not_cached(world) -> None:
    w = world(sse_answer(anthropic_events(["Hel", "lo"], final=False)))
    cache = FakeCache()
    live = pipeline(w, "frontier", cache).answer_stream("hi", task_type="faq", tenant="acme")
    assert isinstance(live, LiveAnswer)
    assert list(live) == ["Hel", "lo"]
    assert live.error is not None and live.error.error_type == "IncompleteStreamError"
    assert live.result is not None and not live.result.success
    assert cache.stored == []


def test_complete_streams_still_end_with_their_reply(world) -> None:
    w = world(sse_answer(anthropic_events(["Hel", "lo"])),
              sse_answer([openai_chunk("Hel"), openai_chunk("lo"), openai_chunk(finish="stop"), (None, "[DONE]")]))
    for tier in ("budget", "student"):
        pieces, reply = drain(w.backends[tier].stream(Prompt.of("hi")))
        assert pieces == ["Hel", "lo"] and reply.text == "Hello" and reply.stop_reason in ("end_turn", "stop")


# --- malformed answers read the same with content capture on and off, and never crash ------------------------

ANTHROPIC_ODD = {
    "content null": (message(None), ""),
    "content missing": ({k: v for k, v in message([]).items() if k != "content"}, ""),
    "usage missing": ({k: v for k, v in message([{"type": "text", "text": "hi"}]).items() if k != "usage"}, "hi"),
    "a text block whose text is null": (message([{"type": "text", "text": None}, {"type": "text", "text": "ok"}]),
                                        "ok"),
}


@pytest.mark.parametrize("body, text", ANTHROPIC_ODD.values(), ids=ANTHROPIC_ODD)
def test_an_odd_anthropic_answer_reads_the_same_with_capture_on_and_off(world, body, text) -> None:
    replies = []
    for capture in (False, True):
        w = world(json_answer(body), capture=capture)
        replies.append(w.backends["budget"].complete(Prompt.of("hi")))
    assert replies[0] == replies[1]
    assert replies[0].text == text


def test_an_openai_answer_without_choices_fails_the_tier_with_capture_on_and_off(world) -> None:
    body = completion("hello") | {"choices": []}
    for capture in (False, True):
        w = world(json_answer(body), capture=capture)
        with pytest.raises(BackendError) as err:
            w.backends["student"].complete(Prompt.of("hi"))
        assert err.value.error_type == "APIResponseValidationError"


USAGE = {
    "negative counts (anthropic)": ("budget", message([{"type": "text", "text": "hi"}],
                                                      usage={"input_tokens": -4, "output_tokens": -1,
                                                             "cache_read_input_tokens": -2}), (0, 0, 0)),
    "negative counts (openai)": ("student", completion("hi", usage={"prompt_tokens": -5, "completion_tokens": -1}),
                                 (0, 0, 0)),
    "counts as strings (openai)": ("student", completion("hi", usage={"prompt_tokens": "9", "completion_tokens": "3"}),
                                   (9, 3, 0)),
}


@pytest.mark.parametrize("tier, body, expected", USAGE.values(), ids=USAGE)
def test_usage_counts_are_whole_numbers_and_read_the_same_with_capture_on_and_off(world, tier, body,
                                                                                 expected) -> None:
    """A negative count is no count (a Reply never carries one up to the gateway's usage); a count sent as
    a string reads as the SDK's own model reads it."""
    for capture in (False, True):
        w = world(json_answer(body), capture=capture)
        reply: Reply = w.backends[tier].complete(Prompt.of("hi"))
        assert (reply.input_tokens, reply.output_tokens, reply.cache_read_tokens) == expected, capture


# --- what is cached ------------------------------------------------------------------------------------------

EMPTY = {
    "anthropic, content []": ("budget", message([])),
    "anthropic, an empty text block": ("budget", message([{"type": "text", "text": "  \n"}])),
    "openai, content null": ("student", completion(None)),
}


@pytest.mark.parametrize("tier, body", EMPTY.values(), ids=EMPTY)
def test_an_answer_with_no_text_is_never_cached(world, tier, body) -> None:
    """A natural end with no text (end_turn with empty content; a vLLM answer with content null) is not an
    answer to serve to the next similar question."""
    w = world(json_answer(body))
    cache = FakeCache()
    result = pipeline(w, tier, cache).answer("hi", task_type="faq", tenant="acme")
    assert result.reply is not None and result.reply.stop_reason in ("end_turn", "stop")
    assert cache.stored == []


@pytest.mark.parametrize("parts", [[], [" ", "\n"]])
def test_a_live_answer_with_no_text_is_never_cached(world, parts) -> None:
    w = world(sse_answer(anthropic_events(parts)))
    cache = FakeCache()
    live = pipeline(w, "frontier", cache).answer_stream("hi", task_type="faq", tenant="acme")
    assert isinstance(live, LiveAnswer)
    list(live)
    assert live.result is not None and live.result.reply is not None
    assert cache.stored == []


def test_a_natural_answer_with_text_is_still_cached(world) -> None:
    w = world(json_answer(message([{"type": "text", "text": "Reset it under Settings."}])),
              sse_answer(anthropic_events(["Reset it ", "under Settings."])))
    cache = FakeCache()
    p = pipeline(w, "frontier", cache)
    p.answer("how do I reset my password?", task_type="faq", tenant="acme")
    list(p.answer_stream("how do I reset it?", task_type="faq", tenant="acme"))
    assert cache.stored == [("how do I reset my password?", "Reset it under Settings."),
                            ("how do I reset it?", "Reset it under Settings.")]
