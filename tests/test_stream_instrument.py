"""Streamed model calls are recorded: the real anthropic and openai SDKs against the local stand-in.

The expected usage of each call is read, in the test, from the bytes the stand-in actually sent
(a tee under the SDK's HTTP client), never from costline's code.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json

import anthropic
import httpx2 as httpx
import openai
import pytest
from opentelemetry.trace import StatusCode

from costline import contract as c
from costline.config import CaptureConfig
from costline.collectors import Recorder, instrument_anthropic, instrument_openai

Q = [{"role": "user", "content": "How do I reset my password for the billing portal?"}]
HAIKU = "claude-haiku-4-5"
STUDENT = "costline-student"


# -- the tee: what went over the wire, kept for the test to read --------------------------------------
class Tee:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.bodies: list[bytearray] = []

    def _keep(self, request) -> bytearray:
        self.requests.append(json.loads(request.content or b"null"))
        body = bytearray()
        self.bodies.append(body)
        return body


class SyncTee(Tee, httpx.BaseTransport):
    def __init__(self) -> None:
        super().__init__()
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request):
        request.read()
        body = self._keep(request)
        response = self.inner.handle_request(request)
        inner = response.stream

        class Stream(httpx.SyncByteStream):
            def __iter__(self):
                for piece in inner:
                    body.extend(piece)
                    yield piece

            def close(self):
                inner.close()

        return httpx.Response(response.status_code, headers=response.headers, stream=Stream(),
                              extensions=response.extensions)


class AsyncTee(Tee, httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        super().__init__()
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request):
        await request.aread()
        body = self._keep(request)
        response = await self.inner.handle_async_request(request)
        inner = response.stream

        class Stream(httpx.AsyncByteStream):
            async def __aiter__(self):
                async for piece in inner:
                    body.extend(piece)
                    yield piece

            async def aclose(self):
                await inner.aclose()

        return httpx.Response(response.status_code, headers=response.headers, stream=Stream(),
                              extensions=response.extensions)


def sse(body: bytes) -> list[tuple[str | None, object]]:
    """(event, data) of each server-sent event, parsed here by hand."""
    out = []
    for block in body.decode().split("\n\n"):
        event, data = None, None
        for line in block.splitlines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        if data is not None:
            out.append((event, data if data == "[DONE]" else json.loads(data)))
    return out


def anthropic_sent(body: bytes) -> dict:
    """The usage an Anthropic stream carried: message_start's, updated by message_delta's."""
    usage, text, msg_id = {}, "", None
    for event, data in sse(body):
        if event == "message_start":
            usage.update(data["message"]["usage"])
            msg_id = data["message"]["id"]
        elif event == "message_delta":
            usage.update({k: v for k, v in data["usage"].items() if v is not None})
        elif event == "content_block_delta":
            text += data["delta"]["text"]
    fresh, read, made = usage["input_tokens"], usage["cache_read_input_tokens"], usage["cache_creation_input_tokens"]
    return {"input": fresh + read + made, "output": usage["output_tokens"], "read": read, "made": made,
            "text": text, "id": msg_id}


def openai_sent(body: bytes) -> dict:
    usage, text = None, ""
    for _, data in sse(body):
        if data == "[DONE]" or "error" in data:
            continue
        if data.get("usage"):
            usage = data["usage"]
        for choice in data["choices"]:
            text += choice["delta"].get("content") or ""
    return {"usage": usage, "text": text}


# -- fixtures --------------------------------------------------------------------------------------------

def ticking():
    """A clock that moves one second each time it is read: the first chunk is read 1 s after the send."""
    return itertools.count(100).__next__


def calls(exporter):
    return [s for s in exporter.get_finished_spans() if s.kind.name == "CLIENT"]


def usage_of(span) -> dict:
    a = span.attributes
    return {"input": a[c.GEN_AI_USAGE_INPUT_TOKENS], "output": a[c.GEN_AI_USAGE_OUTPUT_TOKENS],
            "read": a[c.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS], "made": a[c.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS]}


def sync_anthropic(standin, rec, **kw):
    tee = SyncTee()
    client = anthropic.Anthropic(base_url=standin.url, api_key="x", max_retries=0,
                                 http_client=httpx.Client(transport=tee))
    instrument_anthropic(client, rec, **kw)
    return client, tee


def sync_openai(standin, rec, **kw):
    tee = SyncTee()
    client = openai.OpenAI(base_url=standin.openai_url, api_key="x", max_retries=0,
                           http_client=httpx.Client(transport=tee))
    instrument_openai(client, rec, **kw)
    return client, tee


# -- anthropic ---------------------------------------------------------------------------------------------
def test_create_stream_true_records_the_streamed_usage_and_time_to_first_chunk(standin, plain_spans):
    provider, exporter = plain_spans
    rec = Recorder(provider, env={})
    client, tee = sync_anthropic(standin, rec, tier="budget", clock=ticking())
    with rec.request(request_id="r1") as req:
        stream = client.messages.create(model=HAIKU, max_tokens=200, messages=Q, stream=True)
        assert isinstance(stream, anthropic.Stream)  # the app's type checks still hold
        events = list(stream)
        req.accept()
    sent = anthropic_sent(tee.bodies[0])
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta") == sent["text"]
    (call,) = calls(exporter)
    assert usage_of(call) == {k: sent[k] for k in ("input", "output", "read", "made")}
    assert sent["output"] > 1  # the final count, not message_start's placeholder
    a = call.attributes
    assert a[c.GEN_AI_RESPONSE_ID] == sent["id"] and a[c.GEN_AI_RESPONSE_FINISH_REASONS] == ("end_turn",)
    assert a[c.GEN_AI_REQUEST_STREAM] is True
    assert a[c.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] == 1.0
    assert c.COSTLINE_USAGE_INCOMPLETE not in a and call.status.status_code is not StatusCode.ERROR
    (request,) = [s for s in exporter.get_finished_spans() if s.name == c.SPAN_REQUEST]
    assert call.parent.span_id == request.context.span_id
    assert request.attributes[c.COSTLINE_ATTEMPTS] == 1 and request.attributes[c.COSTLINE_TIER] == "budget"


def test_prompt_cache_tokens_of_a_stream_are_recorded(standin, plain_spans):
    provider, exporter = plain_spans
    client, tee = sync_anthropic(standin, Recorder(provider, env={}))
    system = [{"type": "text", "text": "policy " * 1100, "cache_control": {"type": "ephemeral"}}]
    for _ in range(2):  # the first writes the prompt cache, the second reads it
        for _ in client.messages.create(model=HAIKU, max_tokens=50, system=system, messages=Q, stream=True):
            pass
    spans_ = calls(exporter)
    for span, body in zip(spans_, tee.bodies):
        assert usage_of(span) == {k: anthropic_sent(body)[k] for k in ("input", "output", "read", "made")}
    assert anthropic_sent(tee.bodies[0])["made"] > 0 and anthropic_sent(tee.bodies[1])["read"] > 0


def test_messages_stream_helper_is_recorded_and_unchanged_for_the_app(standin, plain_spans):
    provider, exporter = plain_spans
    rec = Recorder(provider, capture=CaptureConfig(message_content=True), env={})
    client, tee = sync_anthropic(standin, rec, clock=ticking())
    with client.messages.stream(model=HAIKU, max_tokens=200, messages=Q) as stream:
        assert type(stream).__name__ == "MessageStream"
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    sent = anthropic_sent(tee.bodies[0])
    assert text == sent["text"] == final.content[0].text
    (call,) = calls(exporter)
    assert usage_of(call) == {k: sent[k] for k in ("input", "output", "read", "made")}
    assert final.usage.output_tokens == sent["output"]
    assert call.attributes[c.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] == 1.0
    (output,) = json.loads(call.attributes[c.GEN_AI_OUTPUT_MESSAGES])
    assert output["parts"][0]["content"] == sent["text"] and output["finish_reason"] == "end_turn"


def test_get_final_message_without_iterating_is_recorded(standin, plain_spans):
    provider, exporter = plain_spans
    client, tee = sync_anthropic(standin, Recorder(provider, env={}))
    with client.messages.stream(model=HAIKU, max_tokens=200, messages=Q) as stream:
        stream.get_final_text()
    (call,) = calls(exporter)
    assert usage_of(call)["output"] == anthropic_sent(tee.bodies[0])["output"]


def test_an_error_mid_stream_sets_error_type_keeps_the_usage_sent_and_reraises(standin, plain_spans):
    provider, exporter = plain_spans
    client, tee = sync_anthropic(standin, Recorder(provider, env={}))
    standin.inject_stream_errors(after_deltas=2)
    seen = []
    with pytest.raises(anthropic.APIStatusError) as info:
        for event in client.messages.create(model=HAIKU, max_tokens=200, messages=Q, stream=True):
            seen.append(event.type)
    assert info.value.body["error"]["type"] == "overloaded_error"
    assert seen.count("content_block_delta") == 2
    (call,) = calls(exporter)
    sent = anthropic_sent(tee.bodies[0])  # message_start's usage only: no message_delta came
    # its output at least a token a text delta streamed (Anthropic bills what it generated before the error;
    # message_start's placeholder says 1): 2 deltas came
    assert usage_of(call) == {**{k: sent[k] for k in ("input", "read", "made")}, "output": max(sent["output"], 2)}
    # the SDK's bare APIStatusError of the error event, named as the status would name it
    assert type(info.value) is anthropic.APIStatusError and call.attributes[c.ERROR_TYPE] == "OverloadedError"
    assert call.attributes[c.COSTLINE_USAGE_INCOMPLETE] is True
    assert call.status.status_code is StatusCode.ERROR


def test_a_stream_closed_early_or_dropped_still_ends_its_span(standin, plain_spans):
    provider, exporter = plain_spans
    client, _ = sync_anthropic(standin, Recorder(provider, env={}))
    stream = client.messages.create(model=HAIKU, max_tokens=200, messages=Q, stream=True)
    assert next(stream).type == "message_start"
    stream.close()
    (closed,) = calls(exporter)
    assert closed.attributes[c.COSTLINE_USAGE_INCOMPLETE] is True
    assert c.ERROR_TYPE not in closed.attributes  # closing early is the app's choice, not an error

    for event in client.messages.create(model=HAIKU, max_tokens=200, messages=Q, stream=True):
        break  # the app stops reading and drops the stream
    gc.collect()
    assert len(calls(exporter)) == 2

    with client.messages.stream(model=HAIKU, max_tokens=200, messages=Q) as stream:
        next(iter(stream))
    assert len(calls(exporter)) == 3 and calls(exporter)[2].attributes[c.COSTLINE_USAGE_INCOMPLETE] is True


def test_a_failing_clock_never_reaches_the_app(standin, plain_spans):
    provider, exporter = plain_spans

    def broken() -> float:
        raise RuntimeError("clock")

    client, tee = sync_anthropic(standin, Recorder(provider, env={}), clock=broken)
    events = list(client.messages.create(model=HAIKU, max_tokens=200, messages=Q, stream=True))
    assert events[-1].type == "message_stop"


def test_async_anthropic_plain_and_streamed_calls_are_recorded(standin, plain_spans):
    provider, exporter = plain_spans
    tee = AsyncTee()
    client = anthropic.AsyncAnthropic(base_url=standin.url, api_key="x", max_retries=0,
                                      http_client=httpx.AsyncClient(transport=tee))
    instrument_anthropic(client, Recorder(provider, env={}), clock=ticking())

    async def go():
        plain = await client.messages.create(model=HAIKU, max_tokens=200, messages=Q)
        stream = await client.messages.create(model=HAIKU, max_tokens=200, messages=Q, stream=True)
        assert isinstance(stream, anthropic.AsyncStream)
        async for _ in stream:
            pass
        async with client.messages.stream(model=HAIKU, max_tokens=200, messages=Q) as helper:
            text = "".join([t async for t in helper.text_stream])
            final = await helper.get_final_message()
        return plain, text, final

    plain, text, final = asyncio.run(go())
    first, second, third = calls(exporter)
    sent_plain = json.loads(tee.bodies[0])["usage"]
    assert usage_of(first)["output"] == sent_plain["output_tokens"] == plain.usage.output_tokens
    assert c.GEN_AI_REQUEST_STREAM not in first.attributes
    for span, body in ((second, tee.bodies[1]), (third, tee.bodies[2])):
        sent = anthropic_sent(body)
        assert usage_of(span) == {k: sent[k] for k in ("input", "output", "read", "made")}
        assert span.attributes[c.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] == 1.0
    assert text == anthropic_sent(tee.bodies[2])["text"] == final.content[0].text


def test_instrumentation_still_idempotent_and_undoable_for_streams(standin, plain_spans):
    provider, exporter = plain_spans
    rec = Recorder(provider, env={})
    client, _ = sync_anthropic(standin, rec)
    undo = instrument_anthropic(client, rec)
    with client.messages.stream(model=HAIKU, max_tokens=20, messages=Q) as stream:
        stream.until_done()
    assert len(calls(exporter)) == 1  # not wrapped twice
    undo()
    with client.messages.stream(model=HAIKU, max_tokens=20, messages=Q) as stream:
        stream.until_done()
    list(client.messages.create(model=HAIKU, max_tokens=20, messages=Q, stream=True))
    assert len(calls(exporter)) == 1


# -- openai ------------------------------------------------------------------------------------------------
def test_openai_stream_with_include_usage_records_the_last_chunks_usage(standin, plain_spans):
    provider, exporter = plain_spans
    client, tee = sync_openai(standin, Recorder(provider, env={}), tier="student", clock=ticking())
    chunks = list(client.chat.completions.create(model=STUDENT, messages=Q, stream=True,
                                                 stream_options={"include_usage": True}))
    sent = openai_sent(tee.bodies[0])
    assert chunks[-1].usage.completion_tokens == sent["usage"]["completion_tokens"]  # the app sees its chunk
    (call,) = calls(exporter)
    a = call.attributes
    assert (a[c.GEN_AI_USAGE_INPUT_TOKENS], a[c.GEN_AI_USAGE_OUTPUT_TOKENS]) == (
        sent["usage"]["prompt_tokens"], sent["usage"]["completion_tokens"])
    assert a[c.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",) and a[c.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] == 1.0
    assert c.COSTLINE_USAGE_INCOMPLETE not in a


def test_openai_stream_without_include_usage_is_flagged_not_zero_and_the_request_unchanged(standin, plain_spans):
    provider, exporter = plain_spans
    client, tee = sync_openai(standin, Recorder(provider, env={}))
    chunks = list(client.chat.completions.create(model=STUDENT, messages=Q, stream=True))
    assert "stream_options" not in tee.requests[0]  # the app's request went out as it wrote it
    assert all(ch.choices for ch in chunks)  # and no usage chunk it did not ask for
    (call,) = calls(exporter)
    assert call.attributes[c.COSTLINE_USAGE_INCOMPLETE] is True
    assert c.GEN_AI_USAGE_INPUT_TOKENS not in call.attributes and c.GEN_AI_USAGE_OUTPUT_TOKENS not in call.attributes


def test_openai_error_mid_stream_is_recorded_and_reraised(standin, plain_spans):
    provider, exporter = plain_spans
    client, _ = sync_openai(standin, Recorder(provider, env={}))
    standin.inject_stream_errors(after_deltas=1, api="openai")
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(model=STUDENT, messages=Q, stream=True,
                                                stream_options={"include_usage": True}):
            pass
    (call,) = calls(exporter)
    assert call.attributes[c.ERROR_TYPE] == "APIError" and call.attributes[c.COSTLINE_USAGE_INCOMPLETE] is True


def test_async_openai_plain_and_streamed_calls_are_recorded(standin, plain_spans):
    provider, exporter = plain_spans
    tee = AsyncTee()
    client = openai.AsyncOpenAI(base_url=standin.openai_url, api_key="x", max_retries=0,
                                http_client=httpx.AsyncClient(transport=tee))
    instrument_openai(client, Recorder(provider, env={}))

    async def go():
        await client.chat.completions.create(model=STUDENT, messages=Q)
        stream = await client.chat.completions.create(model=STUDENT, messages=Q, stream=True,
                                                      stream_options={"include_usage": True})
        async with stream:
            return [chunk async for chunk in stream]

    chunks = asyncio.run(go())
    plain, streamed = calls(exporter)
    assert plain.attributes[c.GEN_AI_USAGE_OUTPUT_TOKENS] == json.loads(tee.bodies[0])["usage"]["completion_tokens"]
    sent = openai_sent(tee.bodies[1])
    assert streamed.attributes[c.GEN_AI_USAGE_OUTPUT_TOKENS] == sent["usage"]["completion_tokens"]
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == sent["text"]


def test_openai_stream_helper_goes_through_create_and_is_recorded(standin, plain_spans):
    provider, exporter = plain_spans
    client, tee = sync_openai(standin, Recorder(provider, env={}))
    with client.chat.completions.stream(model=STUDENT, messages=Q, stream_options={"include_usage": True}) as stream:
        final = stream.get_final_completion()
    sent = openai_sent(tee.bodies[0])
    assert final.choices[0].message.content == sent["text"]
    (call,) = calls(exporter)
    assert call.attributes[c.GEN_AI_USAGE_OUTPUT_TOKENS] == sent["usage"]["completion_tokens"]


def test_async_streams_that_fail_or_are_closed_early_end_their_spans(standin, plain_spans):
    provider, exporter = plain_spans
    tee = AsyncTee()
    client = anthropic.AsyncAnthropic(base_url=standin.url, api_key="x", max_retries=0,
                                      http_client=httpx.AsyncClient(transport=tee))
    instrument_anthropic(client, Recorder(provider, env={}))

    async def go():
        standin.inject_stream_errors(after_deltas=1)
        with pytest.raises(anthropic.APIStatusError):
            async for _ in await client.messages.create(model=HAIKU, max_tokens=200, messages=Q, stream=True):
                pass
        stream = await client.messages.create(model=HAIKU, max_tokens=200, messages=Q, stream=True)
        await stream.__anext__()
        await stream.close()

    asyncio.run(go())
    failed, closed = calls(exporter)
    sent = anthropic_sent(tee.bodies[0])
    assert usage_of(failed) == {k: sent[k] for k in ("input", "output", "read", "made")}
    assert failed.attributes[c.ERROR_TYPE] == "OverloadedError"  # the error event's type, as a status names it
    assert closed.attributes[c.COSTLINE_USAGE_INCOMPLETE] is True and c.ERROR_TYPE not in closed.attributes


# -- with_raw_response / with_streaming_response (issue 9) ------------------------------------------------
def anthropic_json_sent(body: bytes) -> dict:
    """The usage a non-streamed Anthropic answer carried, read from its JSON body here."""
    u = json.loads(body)["usage"]
    read, made = u.get("cache_read_input_tokens") or 0, u.get("cache_creation_input_tokens") or 0
    return {"input": u["input_tokens"] + read + made, "output": u["output_tokens"], "read": read, "made": made}


def test_anthropic_raw_and_streaming_response_calls_are_recorded_from_the_parsed_answer(standin, plain_spans):
    provider, exporter = plain_spans
    rec = Recorder(provider, env={})
    tee = SyncTee()
    client = anthropic.Anthropic(base_url=standin.url, api_key="x", max_retries=0,
                                 http_client=httpx.Client(transport=tee))
    early = client.messages.with_raw_response  # read before instrumenting: must not stay unwatched
    assert early is client.messages.with_raw_response
    instrument_anthropic(client, rec, tier="budget")
    raw = client.messages.with_raw_response.create(model=HAIKU, max_tokens=60, messages=Q)
    message = raw.parse()
    with client.messages.with_streaming_response.create(model=HAIKU, max_tokens=60, messages=Q) as resp:
        parsed = resp.parse()
    with client.with_streaming_response.messages.create(model=HAIKU, max_tokens=60, messages=Q) as resp:
        body = resp.json()  # read without parse(): recorded from the body read when it closes
    with client.messages.with_streaming_response.create(model=HAIKU, max_tokens=60, messages=Q,
                                                        stream=True) as resp:
        stream = resp.parse()
        assert isinstance(stream, anthropic.Stream) and resp.parse() is stream
        events = list(stream)
    with client.messages.with_streaming_response.create(model=HAIKU, max_tokens=60, messages=Q):
        pass  # never read: the call is flagged, not $0
    spans_ = calls(exporter)
    assert len(spans_) == 5
    plain = [anthropic_json_sent(b) for b in tee.bodies[:3]]
    for span, sent in zip(spans_[:3], plain):
        assert usage_of(span) == sent and c.COSTLINE_USAGE_INCOMPLETE not in span.attributes
    assert message.usage.output_tokens == plain[0]["output"] and parsed.usage.output_tokens == plain[1]["output"]
    assert spans_[0].attributes[c.GEN_AI_RESPONSE_ID] == message.id and body["id"] == spans_[2].attributes[
        c.GEN_AI_RESPONSE_ID]
    sent = anthropic_sent(tee.bodies[3])
    assert usage_of(spans_[3]) == {k: sent[k] for k in ("input", "output", "read", "made")}
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta") == sent["text"]
    assert spans_[3].attributes[c.GEN_AI_REQUEST_STREAM] is True
    unread = spans_[4].attributes
    assert unread[c.COSTLINE_USAGE_INCOMPLETE] is True and c.GEN_AI_USAGE_OUTPUT_TOKENS not in unread


def test_async_anthropic_raw_and_streaming_response_calls_are_recorded(standin, plain_spans):
    provider, exporter = plain_spans
    tee = AsyncTee()
    client = anthropic.AsyncAnthropic(base_url=standin.url, api_key="x", max_retries=0,
                                      http_client=httpx.AsyncClient(transport=tee))
    instrument_anthropic(client, Recorder(provider, env={}))

    async def go():
        raw = await client.messages.with_raw_response.create(model=HAIKU, max_tokens=60, messages=Q)
        first = await raw.parse()
        async with client.messages.with_streaming_response.create(model=HAIKU, max_tokens=60, messages=Q) as r:
            second = await r.parse()
        async with client.messages.with_streaming_response.create(model=HAIKU, max_tokens=60, messages=Q,
                                                                  stream=True) as r:
            events = [e async for e in await r.parse()]
        return first, second, events

    first, second, events = asyncio.run(go())
    one, two, three = calls(exporter)
    assert usage_of(one) == anthropic_json_sent(tee.bodies[0]) and first.usage.output_tokens == usage_of(one)["output"]
    assert usage_of(two) == anthropic_json_sent(tee.bodies[1]) and second.id == two.attributes[c.GEN_AI_RESPONSE_ID]
    sent = anthropic_sent(tee.bodies[2])
    assert usage_of(three) == {k: sent[k] for k in ("input", "output", "read", "made")}
    assert events[-1].type == "message_stop"


def test_openai_raw_and_streaming_response_calls_are_recorded(standin, plain_spans):
    provider, exporter = plain_spans
    client, tee = sync_openai(standin, Recorder(provider, env={}))
    raw = client.chat.completions.with_raw_response.create(model=STUDENT, messages=Q)
    completion = raw.parse()
    with client.chat.completions.with_streaming_response.create(
            model=STUDENT, messages=Q, stream=True, stream_options={"include_usage": True}) as resp:
        chunks = list(resp.parse())

    async def go():
        atee = AsyncTee()
        aclient = openai.AsyncOpenAI(base_url=standin.openai_url, api_key="x", max_retries=0,
                                     http_client=httpx.AsyncClient(transport=atee))
        instrument_openai(aclient, Recorder(provider, env={}))
        araw = await aclient.chat.completions.with_raw_response.create(model=STUDENT, messages=Q)
        return araw.parse(), atee  # openai's raw response parses synchronously, async client or not

    acompletion, atee = asyncio.run(go())
    plain, streamed, aplain = calls(exporter)
    for span, body, parsed in ((plain, tee.bodies[0], completion), (aplain, atee.bodies[0], acompletion)):
        u = json.loads(body)["usage"]
        a = span.attributes
        assert (a[c.GEN_AI_USAGE_INPUT_TOKENS], a[c.GEN_AI_USAGE_OUTPUT_TOKENS]) == (
            u["prompt_tokens"], u["completion_tokens"])
        assert a[c.GEN_AI_RESPONSE_ID] == parsed.id
    sent = openai_sent(tee.bodies[1])
    assert streamed.attributes[c.GEN_AI_USAGE_OUTPUT_TOKENS] == sent["usage"]["completion_tokens"]
    assert chunks[-1].usage.completion_tokens == sent["usage"]["completion_tokens"]


def test_a_failing_finish_of_a_dropped_stream_is_logged_not_raised(standin, plain_spans, caplog):
    provider, exporter = plain_spans
    client, _ = sync_anthropic(standin, Recorder(provider, env={}))
    stream = client.messages.create(model=HAIKU, max_tokens=20, messages=Q, stream=True)
    rec = stream._self_record

    def boom():
        raise RuntimeError("finish failed")

    rec.finish = boom
    with caplog.at_level("WARNING", logger="costline.collectors.instrument"):
        del stream
        gc.collect()
    assert any("dropped stream" in r.getMessage() and r.exc_info for r in caplog.records)
