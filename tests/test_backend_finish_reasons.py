"""How a model server's answer *ended*, read by the real backends against local servers that answer as vLLM and the
Anthropic API do (non-streamed and streamed, read by the real ``openai`` / ``anthropic`` SDKs).

* vLLM ends a request with ``finish_reason`` "stop", "length", "abort", "error" or "repetition" (vLLM v1's
  ``FINISH_REASON_STRINGS``); OpenAI adds "tool_calls", "content_filter", "function_call". An answer that ended any
  other way than those of an answer (abort / error / repetition / one nobody documents) is a failed attempt: the
  tier fails with ``finish_reason:<reason>``, its call span alike, the pipeline goes up a tier, nothing is cached;
  streamed live after text was sent, the request fails as a stream cut mid-way does.
* A forced tool call ends with "stop" (a named ``tool_choice``): read as "tool_calls", so the Messages API's client
  gets ``tool_use`` (and the Chat Completions client ``tool_calls``) and its agent loop runs the tool.
* A token count above 1e8 (the processors' bound), NaN or infinite is no count: left out of the call span (flagged
  ``costline.usage.incomplete``, as a null one is), 0 in the Reply.
* The Anthropic API's ``stop_sequence`` is carried on the Reply; an answer a stop sequence ended is never cached.

Expected values are written by hand from the servers' bodies.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from test_pipeline_open_world_answers import Server, student_world_config  # the vLLM + Anthropic stand-in

from costline import contract as c
from costline.collectors import Recorder
from costline.config import CaptureConfig
from costline.serving import backends
from costline.serving.backends import Prompt, Reply
from costline.serving.pipeline import LiveAnswer, Pipeline, cacheable
from costline.serving.settings import GatewayConfig

Handler = Callable[[BaseHTTPRequestHandler, dict[str, Any]], None]

CLASSIFY = "Is this review positive? 'great product'"
MID_ANSWER = "The mid tier's real answer."
PARTIAL = "The review is neg"
STUDENT = "costline-student-lora"


# --- local servers answering as vLLM (chat completions) and the Anthropic API (messages) ---------------------------


def send_raw(h: BaseHTTPRequestHandler, raw: bytes) -> None:
    h.send_response(200)
    h.send_header("content-type", "application/json")
    h.send_header("content-length", str(len(raw)))
    h.end_headers()
    h.wfile.write(raw)


def send_json(h: BaseHTTPRequestHandler, obj: Any) -> None:
    send_raw(h, json.dumps(obj).encode())


def send_sse(h: BaseHTTPRequestHandler, events: list[Any], *, named: bool = False) -> None:
    """Server-sent events; ``named``: Anthropic's (``event: <type>`` lines, no ``[DONE]``)."""
    h.send_response(200)
    h.send_header("content-type", "text/event-stream")
    h.end_headers()
    for data in events:
        head = f"event: {data['type']}\n" if named else ""
        h.wfile.write(f"{head}data: {json.dumps(data)}\n\n".encode())
    if not named:
        h.wfile.write(b"data: [DONE]\n\n")
    h.wfile.flush()


def completion(content: Any, finish: str = "stop", *, usage: Any = None, tool_calls: Any = None) -> dict[str, Any]:
    """A vLLM chat completion (its own fields: ``reasoning_content``, ``stop_reason``, ``prompt_logprobs``)."""
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": STUDENT,
            "choices": [{"index": 0, "message": {"role": "assistant", "reasoning_content": None, "content": content,
                                                 "tool_calls": tool_calls or []},
                         "logprobs": None, "finish_reason": finish, "stop_reason": None}],
            "usage": usage if usage is not None else {"prompt_tokens": 20, "completion_tokens": 5,
                                                      "total_tokens": 25, "prompt_tokens_details": None},
            "prompt_logprobs": None, "kv_transfer_params": None}


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": STUDENT,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish,
                         **({"stop_reason": None} if finish else {})}]}


def usage_chunk(prompt: Any, completion_tokens: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": STUDENT, "choices": [],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": 25}}


def streamed(finish: str, *texts: str) -> list[dict[str, Any]]:
    """A vLLM stream: the role, the texts, the finishing chunk, the usage chunk (20 in, 5 out)."""
    return [chunk({"role": "assistant", "content": ""}), *(chunk({"content": t}) for t in texts),
            chunk({"content": ""}, finish), usage_chunk(20, 5)]


def message(text: str, stop: str = "end_turn", stop_sequence: str | None = None, *, model: str = "claude",
            usage: Any = None) -> dict[str, Any]:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": stop, "stop_sequence": stop_sequence,
            "usage": usage if usage is not None else {"input_tokens": 100, "output_tokens": 30}}


def message_events(text: str, stop: str, stop_sequence: str | None) -> list[dict[str, Any]]:
    """The Messages API's stream of one text answer (the stop reason and sequence in ``message_delta``)."""
    start = message("", stop=None, model="claude-haiku-4-5")  # type: ignore[arg-type]
    start["content"] = []
    return [{"type": "message_start", "message": start},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
            {"type": "content_block_stop", "index": 0},
            {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": stop_sequence},
             "usage": {"output_tokens": 30}},
            {"type": "message_stop"}]


def mid(h: BaseHTTPRequestHandler, b: dict[str, Any]) -> None:
    send_json(h, message(MID_ANSWER, model=b["model"]))


class DictCache:
    """An exact-text cache that keeps what it was given."""

    def __init__(self) -> None:
        self.stored: list[str] = []

    def lookup(self, query, *, tenant, namespace=None):
        return None

    def store(self, query, answer, *, tenant, namespace=None, doc_hashes=()):
        self.stored.append(answer)


@dataclasses.dataclass
class World:
    server: Server
    pipeline: Pipeline
    exporter: InMemorySpanExporter
    cache: DictCache

    def calls(self) -> list[Any]:
        return [s for s in self.exporter.get_finished_spans() if s.kind.name == "CLIENT"]

    def request(self) -> Any:
        (req,) = [s for s in self.exporter.get_finished_spans() if s.name == c.SPAN_REQUEST]
        return req


@pytest.fixture
def world():
    made: list[World] = []

    def make(chat: Handler, messages: Handler = mid, *, capture: bool = False) -> World:
        server = Server(chat, messages)
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        cache = DictCache()
        pipeline = Pipeline.from_config(student_world_config(server), env={}, cache=cache, confidence=None,
                                        recorder=Recorder(provider, capture=CaptureConfig(message_content=capture)))
        w = World(server, pipeline, exporter, cache)
        made.append(w)
        return w

    yield make
    for w in made:
        w.pipeline.close()
        w.server.close()


# --- 1. a finish reason of no answer fails the tier ----------------------------------------------------------------

NO_ANSWER = ["abort", "error", "repetition", "insufficient_system_resource"]


def test_the_finish_reasons_of_no_answer() -> None:
    assert backends.OPENAI_FAILED_FINISH_REASONS == set(NO_ANSWER)


@pytest.mark.parametrize("reason", NO_ANSWER)
@pytest.mark.parametrize("capture", [False, True])  # the raw-JSON path and the SDK's own models
def test_a_non_streamed_answer_that_ended_as_no_answer_goes_up_a_tier(world, reason, capture) -> None:
    w = world(lambda h, b: send_json(h, completion(PARTIAL, reason)), capture=capture)
    r = w.pipeline.answer(CLASSIFY, task_type="classify", tenant="acme")
    assert [(a.tier, a.problem) for a in r.attempts] == [("student", f"finish_reason:{reason}"), ("mid", None)]
    assert (r.tier, r.success, r.text) == ("mid", True, MID_ANSWER)
    assert w.cache.stored == [MID_ANSWER]  # never the student's partial text
    assert w.request().attributes[c.COSTLINE_REJECTED_ATTEMPTS] == f"student:finish_reason:{reason}"
    if not capture:  # (with capture on the instrumentation's span has ended when the answer is read)
        student = w.calls()[0]
        assert (student.status.status_code, student.attributes[c.ERROR_TYPE]) == (
            StatusCode.ERROR, f"finish_reason:{reason}")
        # the tokens were spent: the failed call keeps its usage
        assert (student.attributes[c.GEN_AI_USAGE_INPUT_TOKENS], student.attributes[c.GEN_AI_USAGE_OUTPUT_TOKENS]) \
            == (20, 5)


@pytest.mark.parametrize("capture", [False, True])
def test_the_finish_reasons_of_an_answer_are_served(world, capture) -> None:
    """One abort, then answers that end as answers do: served by the student (a cut ``length`` one too, and the
    natural ends other servers name in their own words: TGI's ``eos_token``, Together's ``eos``); a filtered one
    (``content_filter``) is served too, but is no successful request."""
    answers = iter([completion(PARTIAL, "abort"), completion("positive", "length"),
                    completion("positive", "content_filter"), completion("positive", "stop"),
                    completion("positive", "eos_token"), completion("positive", "eos")])
    w = world(lambda h, b: send_json(h, next(answers)), capture=capture)
    got = [w.pipeline.answer(CLASSIFY, task_type="classify", tenant="acme") for _ in range(6)]
    assert [(r.tier, r.success, r.reply.stop_reason) for r in got] == [
        ("mid", True, "end_turn"), ("student", True, "length"), ("student", False, "content_filter"),
        ("student", True, "stop"), ("student", True, "eos_token"), ("student", True, "eos")]


@pytest.mark.parametrize("reason", NO_ANSWER)
def test_a_live_stream_that_ended_as_no_answer_after_its_text_fails(world, reason) -> None:
    """No gate: the student's answer streams live. Its text was sent; the request fails as a stream cut mid-way
    does (the client is told, the request is no success), its call span failed with its usage."""
    w = world(lambda h, b: send_sse(h, streamed(reason, PARTIAL)))
    live = w.pipeline.answer_stream(CLASSIFY, task_type="classify", tenant="acme")
    assert isinstance(live, LiveAnswer)
    assert "".join(live) == PARTIAL
    assert (live.result.success, live.error.error_type) == (False, f"finish_reason:{reason}")
    assert [(a.tier, a.problem) for a in live.result.attempts] == [("student", f"finish_reason:{reason}")]
    assert w.request().attributes[c.COSTLINE_SUCCESS] is False
    assert w.cache.stored == []
    (student,) = w.calls()
    assert (student.status.status_code, student.attributes[c.ERROR_TYPE]) == (StatusCode.ERROR,
                                                                                f"finish_reason:{reason}")
    assert (student.attributes[c.GEN_AI_USAGE_INPUT_TOKENS], student.attributes[c.GEN_AI_USAGE_OUTPUT_TOKENS]) == (20, 5)


def test_a_live_stream_that_ended_as_no_answer_before_its_text_goes_up_a_tier(world) -> None:
    w = world(lambda h, b: send_sse(h, streamed("abort")))
    live = w.pipeline.answer_stream(CLASSIFY, task_type="classify", tenant="acme")
    assert "".join(live) == MID_ANSWER
    r = live.result
    assert [(a.tier, a.problem) for a in r.attempts] == [("student", "finish_reason:abort"), ("mid", None)]
    assert (r.tier, r.success, live.buffered) == ("mid", True, True)


# --- 2. a forced tool call says "stop" -----------------------------------------------------------------------------

WEATHER = {"name": "get_weather", "description": "weather",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
CALL = [{"id": "chatcmpl-tool-1", "type": "function",
         "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]


def forced_call(h: BaseHTTPRequestHandler, b: dict[str, Any]) -> None:
    """vLLM's answer to a named tool_choice (or "required" before vLLM 0.11): the call, ``finish_reason`` "stop"."""
    send_json(h, completion(None, "stop", tool_calls=CALL))


@pytest.mark.parametrize("choice", [{"type": "tool", "name": "get_weather"}, {"type": "any"}], ids=["named", "any"])
@pytest.mark.parametrize("capture", [False, True])
def test_a_forced_tool_call_that_says_stop_is_a_tool_call(world, choice, capture) -> None:
    w = world(forced_call, capture=capture)
    prompt = Prompt(({"role": "user", "content": "Weather in Paris?"},), tools=(WEATHER,), tool_choice=choice)
    r = w.pipeline.answer("Weather in Paris?", task_type="classify", tenant="acme", prompt=prompt)
    assert (r.tier, r.success, r.reply.stop_reason) == ("student", True, "tool_calls")
    assert [(t["name"], t["input"]) for t in r.reply.tool_calls] == [("get_weather", {"city": "Paris"})]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("api", ["messages", "chat"])
def test_the_gateway_tells_the_client_to_run_a_forced_tool_call(world, tmp_path: Path, api, stream) -> None:
    from costline.serving.gateway.app import Gateway

    w = world(forced_call)
    gw = Gateway(w.pipeline, GatewayConfig(keys_file=tmp_path / "keys.json", rate_limit_per_minute=0), port=0)
    gw.start()
    headers = {"x-costline-task-type": "classify"}
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    try:
        if api == "messages":
            client = anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0, default_headers=headers)
            kwargs = dict(model="m", max_tokens=100, tools=[WEATHER], messages=ask,
                          tool_choice={"type": "tool", "name": "get_weather"})
            if stream:
                with client.messages.stream(**kwargs) as s:
                    m = s.get_final_message()
            else:
                m = client.messages.create(**kwargs)
            assert (m.stop_reason, [b.type for b in m.content]) == ("tool_use", ["tool_use"])
        else:
            client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="x", max_retries=0, default_headers=headers)
            tool = {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER["input_schema"]}}
            kwargs = dict(model="m", messages=ask, tools=[tool],
                          tool_choice={"type": "function", "function": {"name": "get_weather"}})
            if stream:
                finishes = [ch.choices[0].finish_reason for ch in client.chat.completions.create(**kwargs, stream=True)
                            if ch.choices and ch.choices[0].finish_reason]
            else:
                finishes = [client.chat.completions.create(**kwargs).choices[0].finish_reason]
            assert finishes == ["tool_calls"]
    finally:
        gw.shutdown()


# --- 3. absurd token counts ----------------------------------------------------------------------------------------


COUNTS = [  # what the server sent -> the count read (None: none)
    (0, 0), (5, 5), (9.0, 9), ("9", 9), (100_000_000, 100_000_000),
    (100_000_001, None), (10**30, None), (2**64, None), (1e300, None), (1e9, None),
    (float("nan"), None), (float("inf"), None), (-1, None), (2.5, None), ("9" * 5000, None), ("1e3", None),
    (None, None), (True, None), ([], None),
]


def test_a_token_count_is_a_whole_number_up_to_the_processors_bound() -> None:
    def read(value: Any) -> tuple[Any, Any]:
        try:
            return backends._count_or_none(value), backends._int(value)
        except Exception as exc:  # noqa: BLE001 - the old code's int() of 5000 digits raised
            return type(exc).__name__, None

    assert [read(value) for value, _ in COUNTS] == [(expected, expected or 0) for _, expected in COUNTS]


def test_the_bound_is_the_processors() -> None:
    from costline.processors.attributes import MAX_TOKENS

    assert backends.MAX_TOKENS == MAX_TOKENS == 10**8


HUGE = {  # body of the usage -> (Reply input, Reply output, span input, span output)
    "prompt 10**30": (b'{"prompt_tokens": 1000000000000000000000000000000, "completion_tokens": 5}', (0, 5, None, 5)),
    "completion 1e300": (b'{"prompt_tokens": 20, "completion_tokens": 1e300}', (20, 0, 20, None)),
    "one over the bound": (b'{"prompt_tokens": 100000001, "completion_tokens": 5}', (0, 5, None, 5)),
    "a 5000-digit string": (b'{"prompt_tokens": "' + b"9" * 5000 + b'", "completion_tokens": 5}', (0, 5, None, 5)),
}


@pytest.mark.parametrize("usage, expected", HUGE.values(), ids=HUGE)
def test_an_absurd_count_is_no_count(world, usage, expected, caplog) -> None:
    body = json.dumps(completion("positive", usage={})).encode().replace(b'"usage": {}', b'"usage": ' + usage)
    w = world(lambda h, b: send_raw(h, body))
    r = w.pipeline.answer(CLASSIFY, task_type="classify", tenant="acme")
    (student,) = w.calls()
    a = student.attributes
    assert (r.tier, r.reply.input_tokens, r.reply.output_tokens, a.get(c.GEN_AI_USAGE_INPUT_TOKENS),
            a.get(c.GEN_AI_USAGE_OUTPUT_TOKENS), a.get(c.COSTLINE_USAGE_INCOMPLETE)) == ("student", *expected, True)
    caplog.clear()
    encode_spans([student])  # every attribute fits OTLP: nothing dropped with an ERROR
    assert [rec.getMessage() for rec in caplog.records if rec.levelname == "ERROR"] == []


def test_an_absurd_count_in_a_stream_is_0_in_the_reply(world) -> None:
    events = [chunk({"role": "assistant", "content": "positive"}), chunk({}, "stop"), usage_chunk(10**30, 1e300)]
    w = world(lambda h, b: send_sse(h, events))
    live = w.pipeline.answer_stream(CLASSIFY, task_type="classify", tenant="acme")
    assert "".join(live) == "positive"
    assert (live.result.success, live.result.reply.input_tokens, live.result.reply.output_tokens) == (True, 0, 0)


def test_an_absurd_anthropic_count_is_no_count(world) -> None:
    w = world(lambda h, b: None,
              lambda h, b: send_json(h, message("ok", usage={"input_tokens": 10**30, "output_tokens": 7})))
    r = w.pipeline.answer("How do I reset my password?", task_type="faq", tenant="acme")
    (call,) = w.calls()
    assert (r.reply.input_tokens, r.reply.output_tokens) == (0, 7)
    assert (call.attributes.get(c.GEN_AI_USAGE_INPUT_TOKENS), call.attributes[c.COSTLINE_USAGE_INCOMPLETE]) == (None,
                                                                                                                 True)


# --- 4. and 5. the stop sequence ------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("capture", [False, True])
def test_an_anthropic_reply_carries_its_stop_sequence(world, stream, capture) -> None:
    def messages(h: BaseHTTPRequestHandler, b: dict[str, Any]) -> None:
        if b.get("stream"):
            send_sse(h, message_events("1. Reset it", "stop_sequence", "\n2."), named=True)
        else:
            send_json(h, message("1. Reset it", "stop_sequence", "\n2.", model=b["model"]))

    w = world(lambda h, b: None, messages, capture=capture)
    backend = w.pipeline.backends["budget"]
    prompt = Prompt(({"role": "user", "content": "Steps?"},), sampling=(("stop_sequences", ("\n2.",)),))
    if stream:
        gen = backend.stream(prompt)
        try:
            while True:
                next(gen)
        except StopIteration as done:
            reply = done.value
    else:
        reply = backend.complete(prompt)
    assert (reply.text, reply.stop_reason, reply.stop_sequence) == ("1. Reset it", "stop_sequence", "\n2.")
    assert w.server.log[0][1]["stop_sequences"] == ["\n2."]


def test_an_openai_compatible_reply_has_no_stop_sequence(world) -> None:
    w = world(lambda h, b: send_json(h, completion("positive")))
    r = w.pipeline.answer(CLASSIFY, task_type="classify", tenant="acme")
    assert (r.tier, r.reply.stop_reason, r.reply.stop_sequence) == ("student", "stop", None)


def test_what_the_cache_keeps() -> None:
    stops = ["end_turn", "stop", "stop_sequence", "max_tokens", "length", "tool_use", None]
    assert {s: cacheable(Reply("An answer.", "budget", "claude", s)) for s in stops} == {
        "end_turn": True, "stop": True, "stop_sequence": False, "max_tokens": False, "length": False,
        "tool_use": False, None: False}
    assert not any(cacheable(Reply("   ", "budget", "claude", s)) for s in stops)


def test_an_answer_a_stop_sequence_ended_is_not_cached(world) -> None:
    w = world(lambda h, b: None, lambda h, b: send_json(h, message("1. Reset it", "stop_sequence", "\n2.",
                                                                   model=b["model"])))
    r = w.pipeline.answer("How do I reset my password?", task_type="faq", tenant="acme")
    assert (r.tier, r.success, r.reply.stop_reason) == ("budget", True, "stop_sequence")
    assert w.cache.stored == []
