"""instrument_anthropic / instrument_openai under uses they were not first written against.

The real SDK clients over an httpx MockTransport that answers with the bytes the APIs send in each
situation (SSE events as ``anthropic/_streaming.py`` and ``openai/_streaming.py`` read them).
"""

from __future__ import annotations

import asyncio
import gc
import json

import anthropic
import httpx2 as httpx
import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from costline import contract as c
from costline.collectors import Recorder, instrument_anthropic, instrument_openai

Q = [{"role": "user", "content": "where is my invoice?"}]


# -- the wire ----------------------------------------------------------------------------------------------
def sse(events) -> bytes:
    out = b""
    for event, data in events:
        if event:
            out += f"event: {event}\n".encode()
        out += f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()
    return out


def message(**over):
    body = {"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-haiku-4-5-20251001",
            "content": [{"type": "text", "text": "attached"}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100,
                      "cache_creation_input_tokens": 20}}
    body.update(over)
    return body


MESSAGE_START = ("message_start", {"type": "message_start", "message": message(
    content=[], stop_reason=None, usage={"input_tokens": 10, "output_tokens": 1, "cache_read_input_tokens": 100,
                                         "cache_creation_input_tokens": 0})})
BLOCK_START = ("content_block_start", {"type": "content_block_start", "index": 0,
                                       "content_block": {"type": "text", "text": ""}})


def text(t):
    return ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                    "delta": {"type": "text_delta", "text": t}})


def error_event(kind):
    return ("error", {"type": "error", "error": {"type": kind, "message": "busy"}})


ANTHROPIC_STREAM = [MESSAGE_START, BLOCK_START, text("Hel"), text("lo"),
                    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                       "usage": {"output_tokens": 9}}),
                    ("message_stop", {"type": "message_stop"})]


def chunk(content=None, finish=None, usage=None, index=0):
    return {"id": "cmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "student-v1",
            "choices": [{"index": index, "delta": {"content": content} if content is not None else {},
                         "finish_reason": finish}], "usage": usage}


def completion(**over):
    body = {"id": "cmpl-1", "object": "chat.completion", "created": 1, "model": "student-v1",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 7, "total_tokens": 57}}
    body.update(over)
    return body


OPENAI_STREAM = [(None, chunk("Hel")), (None, chunk("lo")), (None, chunk(finish="stop")),
                 (None, {**chunk(), "choices": [], "usage": {"prompt_tokens": 50, "completion_tokens": 7,
                                                             "total_tokens": 57}}),
                 (None, "[DONE]")]


def answer(body):
    if isinstance(body, bytes):
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)
    return httpx.Response(200, json=body)


def sync_transport(body):
    return httpx.MockTransport(lambda request: answer(body))


def async_transport(body):
    async def handler(request):
        return answer(body)

    return httpx.MockTransport(handler)


def make(cls, body):
    """An SDK client of class ``cls`` whose every call is answered with ``body`` (a dict: JSON; bytes: SSE)."""
    is_async = issubclass(cls, (anthropic.AsyncAnthropic, openai.AsyncOpenAI))
    http = httpx.AsyncClient(transport=async_transport(body)) if is_async else httpx.Client(
        transport=sync_transport(body))
    url = "http://test/v1" if issubclass(cls, (openai.OpenAI, openai.AsyncOpenAI)) else "http://test"
    return cls(base_url=url, api_key="test", max_retries=0, http_client=http)


@pytest.fixture
def env():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield Recorder(provider, env={}), exporter
    provider.shutdown()


def calls(exporter):
    return [s for s in exporter.get_finished_spans() if s.kind.name == "CLIENT"]


# -- an Anthropic error event in a 200 stream, or a 200 whose body is the error --------------------------------
def _create_stream(client):
    for _ in client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=Q, stream=True):
        pass


def _helper_stream(client):
    with client.messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=Q) as stream:
        stream.get_final_text()


def _async_create_stream(client):
    async def go():
        async for _ in await client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=Q,
                                                    stream=True):
            pass

    asyncio.run(go())


def _async_helper_stream(client):
    async def go():
        async with client.messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=Q) as stream:
            await stream.get_final_text()

    asyncio.run(go())


STREAM_WAYS = {
    "create(stream=True)": (anthropic.Anthropic, _create_stream),
    "messages.stream()": (anthropic.Anthropic, _helper_stream),
    "async create(stream=True)": (anthropic.AsyncAnthropic, _async_create_stream),
    "async messages.stream()": (anthropic.AsyncAnthropic, _async_helper_stream),
}


@pytest.mark.parametrize("kind, expected", [("overloaded_error", "OverloadedError"),
                                            ("rate_limit_error", "RateLimitError"),
                                            ("api_error", "InternalServerError"),
                                            ("some_new_error", "APIStatusError")])
@pytest.mark.parametrize("cls, read", STREAM_WAYS.values(), ids=STREAM_WAYS)
def test_an_error_event_in_an_anthropic_stream_is_recorded_as_the_sdk_class_of_its_error_type(
        env, cls, read, kind, expected):
    rec, exporter = env
    client = make(cls, sse([MESSAGE_START, BLOCK_START, text("Hel"), error_event(kind)]))
    instrument_anthropic(client, rec)
    with pytest.raises(anthropic.APIStatusError) as info:
        read(client)
    assert type(info.value) is anthropic.APIStatusError  # the app's exception is the SDK's, unchanged
    (call,) = calls(exporter)
    assert call.attributes[c.ERROR_TYPE] == expected and call.status.status_code is StatusCode.ERROR
    assert call.attributes[c.COSTLINE_USAGE_INCOMPLETE] is True


@pytest.mark.parametrize("cls", [anthropic.Anthropic, anthropic.AsyncAnthropic])
def test_a_200_whose_body_is_an_anthropic_error_is_recorded_as_a_failed_call(env, cls):
    rec, exporter = env
    client = make(cls, {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
    instrument_anthropic(client, rec)
    result = client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=Q)
    if cls is anthropic.AsyncAnthropic:
        result = asyncio.run(result)
    assert result.type == "error"  # the app gets what the SDK made of it
    (call,) = calls(exporter)
    assert call.attributes[c.ERROR_TYPE] == "OverloadedError" and call.status.status_code is StatusCode.ERROR


@pytest.mark.parametrize("cls", [openai.OpenAI, openai.AsyncOpenAI])
@pytest.mark.parametrize("body", [
    {"object": "error", "message": "maximum context length is 4096 tokens", "type": "BadRequestError", "param": None,
     "code": 400},  # older vLLM's error object, sent with a 200
    completion(choices=[]),
], ids=["vLLM error object", "no choices"])
def test_a_chat_completion_without_choices_is_recorded_as_a_failed_call(env, cls, body):
    """No choice is no answer: the call failed (as the serving tiers fail it: APIResponseValidationError)."""
    rec, exporter = env
    client = make(cls, body)
    instrument_openai(client, rec)
    result = client.chat.completions.create(model="student", messages=Q)
    if cls is openai.AsyncOpenAI:
        result = asyncio.run(result)
    assert not getattr(result, "choices", None)  # the app gets what the SDK made of it
    (call,) = calls(exporter)
    assert call.attributes[c.ERROR_TYPE] == "APIResponseValidationError"
    assert call.status.status_code is StatusCode.ERROR


# -- ways to reach the API that bypass create() ---------------------------------------------------------------
def test_calls_through_a_with_options_or_copy_of_the_client_are_recorded(env):
    rec, exporter = env
    ac = make(anthropic.Anthropic, message())
    undo_a = instrument_anthropic(ac, rec, tier="budget")
    oc = make(openai.OpenAI, completion())
    instrument_openai(oc, rec, tier="student")
    ac.with_options(timeout=5).messages.create(model="claude-haiku-4-5", max_tokens=64, messages=Q)
    ac.copy(max_retries=1).with_options(timeout=3).messages.create(model="claude-haiku-4-5", max_tokens=64,
                                                                     messages=Q)
    oc.with_options(timeout=5).chat.completions.create(model="student", messages=Q)
    spans = calls(exporter)
    assert [s.attributes[c.COSTLINE_TIER] for s in spans] == ["budget", "budget", "student"]
    assert [s.attributes[c.GEN_AI_USAGE_OUTPUT_TOKENS] for s in spans] == [5, 5, 7]
    undo_a()
    ac.with_options(timeout=5).messages.create(model="claude-haiku-4-5", max_tokens=64, messages=Q)
    assert len(calls(exporter)) == 3  # undone: copies made afterwards are not recorded either


def test_parse_calls_are_recorded_like_create(env):
    rec, exporter = env
    ac, aac = make(anthropic.Anthropic, message()), make(anthropic.AsyncAnthropic, message())
    oc, aoc = make(openai.OpenAI, completion()), make(openai.AsyncOpenAI, completion())
    for client in (ac, aac):
        instrument_anthropic(client, rec)
    for client in (oc, aoc):
        instrument_openai(client, rec)
    parsed = ac.messages.parse(model="claude-haiku-4-5", max_tokens=64, messages=Q)
    asyncio.run(aac.messages.parse(model="claude-haiku-4-5", max_tokens=64, messages=Q))
    done = oc.chat.completions.parse(model="student", messages=Q)
    raw = oc.chat.completions.with_raw_response.parse(model="student", messages=Q)
    asyncio.run(aoc.chat.completions.parse(model="student", messages=Q))
    assert type(parsed).__name__.startswith("ParsedMessage") and type(done).__name__.startswith("ParsedChatCompletion")
    assert type(raw.parse()).__name__.startswith("ParsedChatCompletion")
    spans = calls(exporter)
    assert [s.attributes[c.GEN_AI_USAGE_OUTPUT_TOKENS] for s in spans] == [5, 5, 7, 7, 7]
    assert [s.attributes[c.GEN_AI_USAGE_INPUT_TOKENS] for s in spans] == [130, 130, 50, 50, 50]


# -- a subclass of an async client ---------------------------------------------------------------------------
class MyAsyncAnthropic(anthropic.AsyncAnthropic):
    pass


class MyAsyncOpenAI(openai.AsyncOpenAI):
    pass


@pytest.mark.parametrize("cls, body, instrument, call", [
    (MyAsyncAnthropic, ANTHROPIC_STREAM, instrument_anthropic,
     lambda cl, **kw: cl.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=Q, **kw)),
    (MyAsyncOpenAI, OPENAI_STREAM, instrument_openai,
     lambda cl, **kw: cl.chat.completions.create(model="student", messages=Q, **kw)),
], ids=["anthropic", "openai"])
def test_a_subclass_of_an_async_client_is_instrumented_as_async(env, cls, body, instrument, call):
    rec, exporter = env
    plain_body = message() if cls is MyAsyncAnthropic else completion()
    plain, streamed = make(cls, plain_body), make(cls, sse(body))
    instrument(plain, rec)
    instrument(streamed, rec)

    async def go():
        answer_ = await call(plain)
        extra = {} if cls is MyAsyncAnthropic else {"stream_options": {"include_usage": True}}
        items = [item async for item in await call(streamed, stream=True, **extra)]
        return answer_, items

    answer_, items = asyncio.run(go())
    assert answer_.usage is not None and len(items) == len(body) - (cls is MyAsyncOpenAI)
    first, second = calls(exporter)
    assert first.attributes[c.GEN_AI_USAGE_OUTPUT_TOKENS] in (5, 7)
    assert second.attributes[c.GEN_AI_USAGE_OUTPUT_TOKENS] in (9, 7)
    assert c.COSTLINE_USAGE_INCOMPLETE not in second.attributes


# -- streams the app stops reading ------------------------------------------------------------------------------
@pytest.mark.parametrize("cls, body, instrument, call", [
    (anthropic.AsyncAnthropic, ANTHROPIC_STREAM, instrument_anthropic,
     lambda cl: cl.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=Q, stream=True)),
    (openai.AsyncOpenAI, OPENAI_STREAM, instrument_openai,
     lambda cl: cl.chat.completions.create(model="student", messages=Q, stream=True,
                                           stream_options={"include_usage": True})),
], ids=["anthropic", "openai"])
def test_an_async_stream_abandoned_as_the_event_loop_ends_is_not_recorded_as_failed(env, cls, body, instrument,
                                                                                     call):
    rec, exporter = env
    client = make(cls, sse(body))
    instrument(client, rec)

    async def go():
        async for _ in await call(client):
            break  # the app has what it wants; asyncio.run then ends, closing the dropped iterator

    asyncio.run(go())
    gc.collect()
    (span,) = calls(exporter)
    assert c.ERROR_TYPE not in span.attributes and span.status.status_code is not StatusCode.ERROR
    assert span.attributes[c.COSTLINE_USAGE_INCOMPLETE] is True


def test_an_openai_stream_with_usage_on_every_chunk_is_complete_only_when_read_to_the_end(env):
    """vLLM's ``continuous_usage_stats``: a running count on every chunk, the final one on the last."""
    rec, exporter = env

    def usage(n):
        return {"prompt_tokens": 50, "completion_tokens": n, "total_tokens": 50 + n}

    body = sse([(None, chunk("Hel", usage=usage(1))), (None, chunk("lo", usage=usage(2))),
                (None, chunk(finish="stop", usage=usage(3))), (None, "[DONE]")])
    client = make(openai.OpenAI, body)
    instrument_openai(client, rec)
    kwargs = {"model": "student", "messages": Q, "stream": True,
              "stream_options": {"include_usage": True, "continuous_usage_stats": True}}
    stream = client.chat.completions.create(**kwargs)
    next(stream)
    stream.close()  # the app stops after the first chunk: the server's final count was never seen
    list(client.chat.completions.create(**kwargs))
    early, full = calls(exporter)
    assert early.attributes[c.COSTLINE_USAGE_INCOMPLETE] is True
    assert full.attributes[c.GEN_AI_USAGE_OUTPUT_TOKENS] == 3 and c.COSTLINE_USAGE_INCOMPLETE not in full.attributes


# -- usage with null counts --------------------------------------------------------------------------------------
NULL_COUNTS = {
    "openai prompt_tokens null": (openai.OpenAI, completion(usage={"prompt_tokens": None, "completion_tokens": 7,
                                                                   "total_tokens": None}),
                                  c.GEN_AI_USAGE_INPUT_TOKENS),
    "openai completion_tokens null": (openai.OpenAI, completion(usage={"prompt_tokens": 50,
                                                                       "completion_tokens": None,
                                                                       "total_tokens": None}),
                                      c.GEN_AI_USAGE_OUTPUT_TOKENS),
    "anthropic input_tokens null": (anthropic.Anthropic, message(usage={"input_tokens": None, "output_tokens": 5}),
                                    c.GEN_AI_USAGE_INPUT_TOKENS),
    # a negative number is no count either (before: dropped from the span, the call not flagged)
    "openai prompt_tokens negative": (openai.OpenAI, completion(usage={"prompt_tokens": -5, "completion_tokens": 7,
                                                                       "total_tokens": 2}),
                                      c.GEN_AI_USAGE_INPUT_TOKENS),
    "anthropic output_tokens negative": (anthropic.Anthropic, message(usage={"input_tokens": 10, "output_tokens": -1}),
                                         c.GEN_AI_USAGE_OUTPUT_TOKENS),
}


@pytest.mark.parametrize("cls, body, missing", NULL_COUNTS.values(), ids=NULL_COUNTS)
def test_a_null_token_count_is_flagged_incomplete_not_recorded_as_zero(env, cls, body, missing):
    rec, exporter = env
    client = make(cls, body)
    if cls is openai.OpenAI:
        instrument_openai(client, rec)
        client.chat.completions.create(model="student", messages=Q)
    else:
        instrument_anthropic(client, rec)
        client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=Q)
    (span,) = calls(exporter)
    assert missing not in span.attributes
    assert span.attributes[c.COSTLINE_USAGE_INCOMPLETE] is True


def test_null_cache_counts_are_zero_and_the_usage_complete(env):
    rec, exporter = env
    client = make(anthropic.Anthropic, message(usage={"input_tokens": 10, "output_tokens": 5,
                                                      "cache_read_input_tokens": None,
                                                      "cache_creation_input_tokens": None}))
    instrument_anthropic(client, rec)
    client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=Q)
    (span,) = calls(exporter)
    assert span.attributes[c.GEN_AI_USAGE_INPUT_TOKENS] == 10 and span.attributes[c.GEN_AI_USAGE_OUTPUT_TOKENS] == 5
    assert c.COSTLINE_USAGE_INCOMPLETE not in span.attributes


# -- a vLLM answer that is no answer --------------------------------------------------------------------------------
@pytest.mark.parametrize("reason, failed", [("abort", True), ("error", True), ("repetition", True),
                                            ("stop", False), ("length", False), ("eos_token", False)])
@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_vllm_ended_as_aborted_or_errored_is_a_failed_call(env, reason, failed, stream):
    """vLLM ends a request it dropped, failed or cut in a loop with that finish_reason and the partial text: the app
    gets it, the call span says the call failed (a natural end in a server's own word, TGI's eos_token, does not)."""
    rec, exporter = env
    body = sse([(None, chunk("Hel")), (None, chunk(finish=reason)), (None, "[DONE]")]) if stream else \
        completion(choices=[{"index": 0, "message": {"role": "assistant", "content": "Hel"}, "finish_reason": reason}])
    client = make(openai.OpenAI, body)
    instrument_openai(client, rec)
    result = client.chat.completions.create(model="student", messages=Q, stream=stream)
    if stream:
        list(result)
    (call,) = calls(exporter)
    assert call.attributes.get(c.ERROR_TYPE) == (f"finish_reason:{reason}" if failed else None)
    assert (call.status.status_code is StatusCode.ERROR) is failed
