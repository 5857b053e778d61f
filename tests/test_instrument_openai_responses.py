"""OpenAI's Responses API calls are recorded by ``instrument_openai``: the real openai SDK against the local stand-in.

``client.responses.create`` (plain and ``stream=True``), ``client.responses.stream(...)`` and their async twins each
make one call span. The expected usage is read, in the test, from the bytes the stand-in sent (a tee under the SDK's
HTTP client, parsed by hand), never from costline's code; the lake's price of a call is computed by hand from the
prices set here.
"""

from __future__ import annotations

import asyncio
import gc
import json

import httpx2 as httpx
import openai
import pytest
from openai.lib.streaming.responses import AsyncResponseStream, ResponseStream
from opentelemetry.trace import StatusCode

from costline import contract as c
from costline.collectors import Recorder, instrument_openai
from costline.config import Config, LakeConfig, ModelPrice, PricingConfig
from costline.serving.settings import StandInConfig
from costline.sim.standin import StandInServer

from figures_lake import lake_from_sdk_spans, query_lake
from test_stream_instrument import AsyncTee, SyncTee, calls, sse, ticking

MODEL = "costline-student"
ASK = "How do I reset my password for the billing portal? Explain in detail please."
# USD per million tokens, by hand
PRICE_IN, PRICE_CACHED, PRICE_OUT = 2.0, 0.5, 8.0


@pytest.fixture(scope="module")
def standin():
    # a small min_cache_tokens: a repeated short prompt is read from the stand-in's automatic prompt cache
    srv = StandInServer(StandInConfig(latency_scale=0.0, min_cache_tokens=8), port=0)
    srv.start()
    yield srv
    srv.shutdown()


def sync_client(standin, rec, **kw):
    tee = SyncTee()
    client = openai.OpenAI(base_url=standin.openai_url, api_key="x", max_retries=0,
                           http_client=httpx.Client(transport=tee))
    instrument_openai(client, rec, provider="openai", **kw)
    return client, tee


def async_client(standin, rec, **kw):
    tee = AsyncTee()
    client = openai.AsyncOpenAI(base_url=standin.openai_url, api_key="x", max_retries=0,
                                http_client=httpx.AsyncClient(transport=tee))
    instrument_openai(client, rec, provider="openai", **kw)
    return client, tee


def served(body: bytes) -> dict:
    """The response the stand-in sent: the JSON body, or a stream's final event's ``response``."""
    text = bytes(body)
    if not text.startswith(b"event:") and not text.startswith(b"data:"):
        return json.loads(text)
    finals = [data["response"] for event, data in sse(text)
              if event in ("response.completed", "response.incomplete", "response.failed")]
    assert len(finals) == 1, "the stand-in sent no final event"
    return finals[0]


def tokens(span) -> dict:
    a = span.attributes
    return {"input": a.get(c.GEN_AI_USAGE_INPUT_TOKENS), "output": a.get(c.GEN_AI_USAGE_OUTPUT_TOKENS),
            "cached": a.get(c.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS)}


def wire_tokens(response: dict) -> dict:
    u = response["usage"]
    return {"input": u["input_tokens"], "output": u["output_tokens"],
            "cached": u["input_tokens_details"]["cached_tokens"]}


# -- plain create ----------------------------------------------------------------------------------------
def test_create_is_one_chat_call_with_the_served_usage_and_the_lake_prices_cached_tokens_once(standin, plain_spans,
                                                                                             tmp_path):
    provider, exporter = plain_spans
    rec = Recorder(provider, env={})
    client, tee = sync_client(standin, rec, tier="budget")
    prompt = "Our refund policy for annual plans, in full: " + "terms apply to every plan " * 6
    first = client.responses.create(model=MODEL, input=prompt, instructions="Answer briefly.")
    second = client.responses.create(model=MODEL, input=prompt, instructions="Answer briefly.")
    assert isinstance(second, openai.types.responses.Response)  # what the app gets is the SDK's own
    assert second._request_id is None or isinstance(second._request_id, str)
    assert second.output_text == first.output_text and second.output_text
    sent = [served(b) for b in tee.bodies]
    assert sent[1]["usage"]["input_tokens_details"]["cached_tokens"] > 0  # the repeat was read from the cache
    one, two = calls(exporter)
    for span, wire in zip((one, two), sent):
        assert tokens(span) == wire_tokens(wire)
        a = span.attributes
        assert a[c.GEN_AI_OPERATION_NAME] == "chat" and a[c.GEN_AI_REQUEST_MODEL] == MODEL
        assert a[c.GEN_AI_RESPONSE_ID] == wire["id"] and a[c.GEN_AI_RESPONSE_FINISH_REASONS] == ("completed",)
        assert c.COSTLINE_USAGE_INCOMPLETE not in a and span.status.status_code is not StatusCode.ERROR

    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"), pricing=PricingConfig(
        models=(ModelPrice(MODEL, "budget", provider="openai", input_per_mtok=PRICE_IN, output_per_mtok=PRICE_OUT,
                           cache_read_per_mtok=PRICE_CACHED),),
        student_usd_per_hour=0.0, student_providers=()))
    lake_from_sdk_spans([two], cfg)
    u = sent[1]["usage"]
    cached = u["input_tokens_details"]["cached_tokens"]
    # input_tokens includes the cached ones: those are priced once, at the cache rate
    want = ((u["input_tokens"] - cached) * PRICE_IN + cached * PRICE_CACHED + u["output_tokens"] * PRICE_OUT) / 1e6
    got = query_lake(cfg, "SELECT input_tokens, cache_read_tokens, output_tokens, cost_usd, pricing_status FROM calls")
    assert got == [(u["input_tokens"], cached, u["output_tokens"], pytest.approx(want, rel=1e-9), "priced")]


def test_create_cut_at_max_output_tokens_keeps_its_billed_usage_and_says_why(standin, plain_spans):
    provider, exporter = plain_spans
    client, tee = sync_client(standin, Recorder(provider, env={}))
    response = client.responses.create(model=MODEL, input=ASK, max_output_tokens=3)
    assert response.status == "incomplete"
    (call,) = calls(exporter)
    assert tokens(call) == wire_tokens(served(tee.bodies[0]))
    assert call.attributes[c.GEN_AI_RESPONSE_FINISH_REASONS] == ("max_output_tokens",)
    assert c.COSTLINE_USAGE_INCOMPLETE not in call.attributes and call.status.status_code is not StatusCode.ERROR


def test_a_failed_create_propagates_unchanged_and_fails_its_span(standin, plain_spans):
    provider, exporter = plain_spans
    client, _ = sync_client(standin, Recorder(provider, env={}))
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input=ASK)
    (call,) = calls(exporter)
    assert call.attributes[c.ERROR_TYPE] == "NotFoundError" and call.status.status_code is StatusCode.ERROR


def test_calls_through_with_options_and_with_raw_response_are_recorded(standin, plain_spans):
    provider, exporter = plain_spans
    client, tee = sync_client(standin, Recorder(provider, env={}))
    client.with_options(timeout=30).responses.create(model=MODEL, input=ASK)
    raw = client.responses.with_raw_response.create(model=MODEL, input=ASK)
    assert raw.parse().usage.output_tokens > 0
    one, two = calls(exporter)
    assert [tokens(one), tokens(two)] == [wire_tokens(served(b)) for b in tee.bodies]


# -- create(stream=True) -------------------------------------------------------------------------------------
def test_create_stream_read_out_records_the_completed_events_usage(standin, plain_spans):
    provider, exporter = plain_spans
    client, tee = sync_client(standin, Recorder(provider, env={}), clock=ticking())
    stream = client.responses.create(model=MODEL, input=ASK, stream=True)
    assert isinstance(stream, openai.Stream) and stream.response.status_code == 200
    events = list(stream)
    assert events[-1].type == "response.completed"
    (call,) = calls(exporter)
    assert tokens(call) == wire_tokens(served(tee.bodies[0]))
    a = call.attributes
    assert a[c.GEN_AI_REQUEST_STREAM] is True and a[c.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] == 1.0
    assert c.COSTLINE_USAGE_INCOMPLETE not in a and call.status.status_code is not StatusCode.ERROR


def test_create_stream_left_early_ends_its_span_flagged_incomplete_never_zero(standin, plain_spans):
    provider, exporter = plain_spans
    client, _ = sync_client(standin, Recorder(provider, env={}))
    stream = client.responses.create(model=MODEL, input=ASK, stream=True)
    for i, _event in enumerate(stream):
        if i == 2:
            break
    (call,) = calls(exporter)  # ended although the app still holds the stream
    a = call.attributes
    assert a[c.COSTLINE_USAGE_INCOMPLETE] is True
    assert c.GEN_AI_USAGE_INPUT_TOKENS not in a and c.GEN_AI_USAGE_OUTPUT_TOKENS not in a
    assert call.status.status_code is not StatusCode.ERROR  # leaving early is the app's choice
    del stream


def test_an_error_event_fails_the_streamed_call(standin, plain_spans):
    provider, exporter = plain_spans
    client, tee = sync_client(standin, Recorder(provider, env={}))
    standin.inject_stream_errors(after_deltas=2, api="openai")
    events = list(client.responses.create(model=MODEL, input=ASK, stream=True))
    assert events[-1].type == "error"  # the app sees what it saw before
    (error,) = [data for event, data in sse(bytes(tee.bodies[0])) if event == "error"]
    assert error["code"] == "server_error"
    (call,) = calls(exporter)
    assert call.attributes[c.ERROR_TYPE] == "InternalServerError" and call.status.status_code is StatusCode.ERROR
    assert call.attributes[c.COSTLINE_USAGE_INCOMPLETE] is True


# -- responses.stream(...) -------------------------------------------------------------------------------------
def test_stream_helper_with_get_final_response(standin, plain_spans):
    provider, exporter = plain_spans
    client, tee = sync_client(standin, Recorder(provider, env={}))
    with client.responses.stream(model=MODEL, input=ASK) as stream:
        assert isinstance(stream, ResponseStream)
        final = stream.get_final_response()
    (call,) = calls(exporter)
    wire = served(tee.bodies[0])
    assert tokens(call) == wire_tokens(wire) and final.usage.output_tokens == wire["usage"]["output_tokens"]
    assert call.attributes[c.GEN_AI_RESPONSE_ID] == final.id
    assert c.COSTLINE_USAGE_INCOMPLETE not in call.attributes


def test_stream_helper_left_early_ends_its_span_when_the_app_leaves_the_block(standin, plain_spans):
    provider, exporter = plain_spans
    client, _ = sync_client(standin, Recorder(provider, env={}))
    with client.responses.stream(model=MODEL, input=ASK) as stream:
        for _event in stream:
            break
        assert calls(exporter) == []  # still open while the app may read on
    (call,) = calls(exporter)
    assert call.attributes[c.COSTLINE_USAGE_INCOMPLETE] is True
    assert c.GEN_AI_USAGE_OUTPUT_TOKENS not in call.attributes
    del stream


# -- async -----------------------------------------------------------------------------------------------------
def test_async_create_stream_and_stream_helper(standin, plain_spans):
    provider, exporter = plain_spans
    client, tee = async_client(standin, Recorder(provider, env={}))

    async def main():
        plain = await client.responses.create(model=MODEL, input=ASK)
        stream = await client.responses.create(model=MODEL, input=ASK, stream=True)
        assert isinstance(stream, openai.AsyncStream)
        async for _event in stream:
            pass
        async with client.responses.stream(model=MODEL, input=ASK) as helper:
            assert isinstance(helper, AsyncResponseStream)
            final = await helper.get_final_response()
        return plain, final

    plain, final = asyncio.run(main())
    gc.collect()
    got = calls(exporter)
    assert len(got) == 3
    assert [tokens(s) for s in got] == [wire_tokens(served(b)) for b in tee.bodies]
    assert [s.attributes.get(c.GEN_AI_REQUEST_STREAM) for s in got] == [None, True, True]
    assert all(c.COSTLINE_USAGE_INCOMPLETE not in s.attributes for s in got)
    assert plain.usage.input_tokens == got[0].attributes[c.GEN_AI_USAGE_INPUT_TOKENS]
    assert final.id == got[2].attributes[c.GEN_AI_RESPONSE_ID]


def test_a_response_that_failed_in_a_200_fails_its_call(plain_spans):
    """``status: failed`` (the API's own failure, sent as a 200 body): the app gets the Response; the call failed."""
    provider, exporter = plain_spans
    body = {"id": "resp_failed_1", "object": "response", "created_at": 0, "model": MODEL, "status": "failed",
            "error": {"code": "server_error", "message": "The model failed"}, "incomplete_details": None,
            "output": [], "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "usage": None}
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=body))
    client = openai.OpenAI(base_url="http://standin.invalid/v1", api_key="x", max_retries=0,
                           http_client=httpx.Client(transport=transport))
    instrument_openai(client, Recorder(provider, env={}), provider="openai")
    response = client.responses.create(model=MODEL, input=ASK)
    assert response.status == "failed" and response.error.code == "server_error"
    (call,) = calls(exporter)
    assert call.attributes[c.ERROR_TYPE] == "InternalServerError" and call.status.status_code is StatusCode.ERROR
    assert c.GEN_AI_USAGE_INPUT_TOKENS not in call.attributes
