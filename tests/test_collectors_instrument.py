"""instrument_anthropic / instrument_openai with the real SDK clients over httpx MockTransport."""

from __future__ import annotations

import asyncio
import json

import anthropic
import httpx2 as httpx
import openai
import pytest
from opentelemetry.trace import StatusCode

from costline import contract as c
from costline.config import CaptureConfig
from costline.collectors import Recorder, instrument_anthropic, instrument_openai

ANTHROPIC_OK = {
    "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-haiku-4-5-20251001",
    "content": [{"type": "text", "text": "Your invoice is attached."}],
    "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100,
              "cache_creation_input_tokens": 20},
}
OPENAI_OK = {
    "id": "cmpl-1", "object": "chat.completion", "created": 1, "model": "student-v1",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 50, "completion_tokens": 7, "total_tokens": 57,
              "prompt_tokens_details": {"cached_tokens": 32}},
}
ERRORS = {
    429: {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}},
    500: {"type": "error", "error": {"type": "api_error", "message": "oops"}},
    400: {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}},
}



def transport(status, body):
    seen = []

    def handler(request):
        seen.append(request)
        return httpx.Response(status, json=body)

    return httpx.MockTransport(handler), seen


def anthropic_client(status=200, body=ANTHROPIC_OK):
    t, seen = transport(status, body)
    client = anthropic.Anthropic(base_url="http://test", api_key="test", max_retries=0,
                                 http_client=httpx.Client(transport=t))
    return client, seen


def openai_client(status=200, body=OPENAI_OK):
    t, seen = transport(status, body)
    client = openai.OpenAI(base_url="http://test/v1", api_key="test", max_retries=0,
                           http_client=httpx.Client(transport=t))
    return client, seen


def ask(client):
    return client.messages.create(model="claude-haiku-4-5", max_tokens=64,
                                  messages=[{"role": "user", "content": "where is my invoice?"}])


def test_anthropic_call_in_a_request_records_usage_including_cache_tokens(spans):
    provider, exporter = spans
    rec = Recorder(provider, env={})
    client, seen = anthropic_client()
    instrument_anthropic(client, rec, tier="budget")
    with rec.request(request_id="r1") as req:
        answer = ask(client)
        req.accept()
    assert answer.content[0].text == "Your invoice is attached." and len(seen) == 1
    (call,) = [s for s in exporter.get_finished_spans() if s.name == "chat claude-haiku-4-5"]
    a = call.attributes
    assert a[c.GEN_AI_PROVIDER_NAME] == "anthropic"
    assert a[c.GEN_AI_REQUEST_MODEL] == "claude-haiku-4-5"
    assert a[c.GEN_AI_RESPONSE_MODEL] == "claude-haiku-4-5-20251001"
    assert a[c.GEN_AI_USAGE_INPUT_TOKENS] == 130  # 10 fresh + 100 read + 20 written
    assert a[c.GEN_AI_USAGE_OUTPUT_TOKENS] == 5
    assert a[c.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 100
    assert a[c.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] == 20
    assert a[c.GEN_AI_RESPONSE_FINISH_REASONS] == ("end_turn",)
    assert a[c.GEN_AI_RESPONSE_ID] == "msg_01"
    assert a[c.COSTLINE_TIER] == "budget" and a[c.COSTLINE_REQUEST_ID] == "r1"
    (request,) = [s for s in exporter.get_finished_spans() if s.name == c.SPAN_REQUEST]
    assert request.attributes[c.COSTLINE_ATTEMPTS] == 1 and request.attributes[c.COSTLINE_TIER] == "budget"


@pytest.mark.parametrize("status, error_type", [(429, "RateLimitError"), (500, "InternalServerError"),
                                                (400, "BadRequestError")])
def test_anthropic_errors_set_error_type_and_are_reraised(spans, status, error_type):
    provider, exporter = spans
    client, _ = anthropic_client(status, ERRORS[status])
    instrument_anthropic(client, Recorder(provider, env={}))
    with pytest.raises(anthropic.APIStatusError) as info:
        ask(client)
    assert type(info.value).__name__ == error_type
    (call,) = exporter.get_finished_spans()
    assert call.attributes[c.ERROR_TYPE] == error_type
    assert call.status.status_code is StatusCode.ERROR
    assert c.GEN_AI_USAGE_INPUT_TOKENS not in call.attributes


def test_anthropic_standalone_call_without_request(spans):
    provider, exporter = spans
    client, _ = anthropic_client()
    instrument_anthropic(client, Recorder(provider, env={}))
    ask(client)
    (call,) = exporter.get_finished_spans()
    assert call.parent is None and c.COSTLINE_REQUEST_ID not in call.attributes


def test_anthropic_instrumentation_is_idempotent_and_undoable(spans):
    provider, exporter = spans
    rec = Recorder(provider, env={})
    client, _ = anthropic_client()
    undo = instrument_anthropic(client, rec)
    assert instrument_anthropic(client, rec) is undo
    ask(client)
    assert len(exporter.get_finished_spans()) == 1  # not wrapped twice
    undo()
    ask(client)
    assert len(exporter.get_finished_spans()) == 1


def test_anthropic_content_capture(spans):
    provider, exporter = spans
    rec = Recorder(provider, capture=CaptureConfig(message_content=True), env={})
    client, _ = anthropic_client()
    instrument_anthropic(client, rec)
    client.messages.create(model="claude-haiku-4-5", max_tokens=8, system="be brief",
                           messages=[{"role": "user", "content": [{"type": "text", "text": "invoice?"}]}])
    (call,) = exporter.get_finished_spans()
    assert json.loads(call.attributes[c.GEN_AI_INPUT_MESSAGES]) == [
        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
        {"role": "user", "parts": [{"type": "text", "content": "invoice?"}]},
    ]
    assert json.loads(call.attributes[c.GEN_AI_OUTPUT_MESSAGES]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "Your invoice is attached."}],
         "finish_reason": "end_turn"},
    ]


def test_async_anthropic_is_instrumented(spans):
    provider, exporter = spans
    t, _ = transport(200, ANTHROPIC_OK)
    client = anthropic.AsyncAnthropic(base_url="http://test", api_key="test", max_retries=0,
                                      http_client=httpx.AsyncClient(transport=t))
    instrument_anthropic(client, Recorder(provider, env={}), tier="budget")

    async def go():
        return await client.messages.create(model="claude-haiku-4-5", max_tokens=8,
                                            messages=[{"role": "user", "content": "hi"}])

    assert asyncio.run(go()).id == "msg_01"
    (call,) = exporter.get_finished_spans()
    assert call.attributes[c.GEN_AI_USAGE_INPUT_TOKENS] == 130


def test_openai_compatible_call_records_prompt_and_cached_tokens(spans):
    provider, exporter = spans
    rec = Recorder(provider, env={})
    client, _ = openai_client()
    instrument_openai(client, rec, tier="student")
    with rec.request() as req:
        client.chat.completions.create(model="student-v1", messages=[{"role": "user", "content": "hi"}])
        req.accept()
    (call,) = [s for s in exporter.get_finished_spans() if s.name == "chat student-v1"]
    a = call.attributes
    assert a[c.GEN_AI_PROVIDER_NAME] == "vllm"
    assert a[c.GEN_AI_USAGE_INPUT_TOKENS] == 50  # prompt_tokens already includes cached ones
    assert a[c.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 32
    assert a[c.GEN_AI_USAGE_OUTPUT_TOKENS] == 7
    assert a[c.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert a[c.GEN_AI_RESPONSE_MODEL] == "student-v1" and a[c.COSTLINE_TIER] == "student"


def test_openai_error_sets_error_type(spans):
    provider, exporter = spans
    client, _ = openai_client(429, {"error": {"message": "slow", "type": "rate_limit"}})
    instrument_openai(client, Recorder(provider, env={}))
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="student-v1", messages=[{"role": "user", "content": "hi"}])
    (call,) = exporter.get_finished_spans()
    assert call.attributes[c.ERROR_TYPE] == "RateLimitError"
