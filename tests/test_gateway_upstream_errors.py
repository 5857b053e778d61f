"""When no tier gives an answer because the models misbehaved — every tier calls a tool the request never offered
(``unoffered_tool``), or answers with nothing (``empty``) — the gateway answers 502 in the asking API's own error
format, saying what happened (before, 500 ``api_error`` "every tier failed", or a 200 with an empty answer). Streamed
requests too: before anything was sent, the same 502; after text was sent, the stream ends with an error event.
Real ``anthropic`` / ``openai`` SDK clients against a gateway whose tiers are scripted model servers."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from test_pipeline_open_world_answers import (Server, chunk, completion, message, send_json, send_sse,
                                              student_world_config, tool_call)

from costline.collectors import Recorder
from costline.serving.gateway.app import Gateway
from costline.serving.pipeline import Pipeline
from costline.serving.settings import GatewayConfig

UNOFFERED = "delete_account"
CLASSIFY = {"x-costline-task-type": "classify"}  # routed to the student, then mid, then upper


def unoffered_everywhere() -> tuple[Any, Any]:
    use = {"type": "tool_use", "id": "toolu_1", "name": UNOFFERED, "input": {}}

    def chat(h: Any, b: dict[str, Any]) -> None:
        if b.get("stream"):  # a live stream reads text only: the call's stream is an empty answer there
            call = {**tool_call(UNOFFERED), "index": 0}
            send_sse(h, [chunk({"role": "assistant", "tool_calls": [call]}), chunk({}, "tool_calls")])
        else:
            send_json(h, completion(None, "tool_calls", tool_calls=[tool_call(UNOFFERED)]))
    return chat, lambda h, b: send_json(h, message([use], "tool_use", model=b["model"]))


def empty_everywhere() -> tuple[Any, Any]:
    def chat(h: Any, b: dict[str, Any]) -> None:
        if b.get("stream"):
            send_sse(h, [chunk({"role": "assistant", "reasoning_content": "Hmm"}), chunk({}, "length")])
        else:
            send_json(h, completion(None, "length", reasoning_content="Hmm"))
    return chat, lambda h, b: send_json(h, message([], model=b["model"]))


CASES = {"unoffered_tool": (unoffered_everywhere, "every tier answered with a call of a tool the request did not "
                                                  "offer"),
         "empty": (empty_everywhere, "every tier answered with an empty answer")}
#: Streamed live, the student's call comes as an empty answer (student: empty, mid: unoffered_tool, ...).
MIXED = ("no tier gave an answer: each answered with a call of a tool the request did not offer or answered with an "
         "empty answer")


def said_for(case: str, stream: bool) -> str:
    return MIXED if case == "unoffered_tool" and stream else CASES[case][1]


@pytest.fixture
def gateway(tmp_path):
    made: list[tuple[Server, Pipeline, Gateway]] = []

    def make(chat: Any, messages: Any, *, max_escalations: int = 2) -> Gateway:
        server = Server(chat, messages)
        # no confidence gate and no validator: a streamed request is answered live
        pipeline = Pipeline.from_config(student_world_config(server, max_escalations),
                                        recorder=Recorder(TracerProvider()), env={},
                                        confidence=None)
        gw = Gateway(pipeline, GatewayConfig(keys_file=tmp_path / "keys.json", rate_limit_per_minute=0), port=0)
        gw.start()
        made.append((server, pipeline, gw))
        return gw

    yield make
    for server, pipeline, gw in made:
        gw.shutdown()
        pipeline.close()
        server.close()


ASK = [{"role": "user", "content": "Is this review positive? 'great product'"}]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("stream", [False, True])
def test_the_messages_api_answers_502_in_its_error_format(gateway, case, stream) -> None:
    make, said = CASES[case][0], said_for(case, stream)
    gw = gateway(*make())
    client = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0, default_headers=CLASSIFY)
    with pytest.raises(anthropic.InternalServerError) as err:
        if stream:  # live (no gate): the student fails before its first piece, then every tier above
            with client.messages.stream(model="m", max_tokens=50, messages=ASK) as s:
                list(s.text_stream)
        else:
            client.messages.create(model="m", max_tokens=50, messages=ASK)
    assert err.value.status_code == 502
    assert err.value.body["type"] == "error" and err.value.body["error"]["type"] == "api_error"
    assert err.value.body["error"]["message"].startswith(said)
    assert err.value.response.headers["x-should-retry"] == "false"


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("stream", [False, True])
def test_the_chat_completions_api_answers_502_in_its_error_format(gateway, case, stream) -> None:
    make, said = CASES[case][0], said_for(case, stream)
    gw = gateway(*make())
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0, default_headers=CLASSIFY)
    with pytest.raises(openai.InternalServerError) as err:
        reply = client.chat.completions.create(model="m", messages=ASK, stream=stream)
        if stream:
            list(reply)
    assert err.value.status_code == 502
    assert err.value.body["type"] == "server_error" and err.value.body["message"].startswith(said)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("stream", [False, True])
def test_the_responses_api_answers_502_in_its_error_format(gateway, case, stream) -> None:
    make, said = CASES[case][0], said_for(case, stream)
    gw = gateway(*make())
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0, default_headers=CLASSIFY)
    with pytest.raises(openai.InternalServerError) as err:
        reply = client.responses.create(model="m", input=ASK[0]["content"], stream=stream)
        if stream:
            list(reply)
    assert err.value.status_code == 502 and err.value.body["message"].startswith(said)


@pytest.mark.parametrize("case", CASES)
def test_bedrocks_invoke_answers_502_as_bedrock_does(gateway, case) -> None:
    make, said = CASES[case]
    gw = gateway(*make())
    r = httpx2.post(f"{gw.url}/model/anthropic.claude-haiku-4-5/invoke", headers=CLASSIFY, json={
        "anthropic_version": "bedrock-2023-05-31", "max_tokens": 50, "messages": ASK})
    assert r.status_code == 502
    assert r.headers["x-amzn-ErrorType"].startswith("InternalServerException:")
    assert r.json()["message"].startswith(said)


def anthropic_sse(h: Any, events: list[dict[str, Any]]) -> None:
    h.send_response(200)
    h.send_header("content-type", "text/event-stream")
    h.end_headers()
    for data in events:
        h.wfile.write(f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode())
    h.wfile.flush()


def text_then_unoffered_call(h: Any, b: dict[str, Any]) -> None:
    """An Anthropic tier that streams some text, then calls a tool nobody offered."""
    anthropic_sse(h, [
        {"type": "message_start", "message": {**message([], model=b["model"]), "stop_reason": None}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me delete it. "}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1",
                                                                      "name": UNOFFERED, "input": {}}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{}"}},
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
         "usage": {"output_tokens": 9}},
        {"type": "message_stop"}])


def test_a_live_stream_whose_answer_turns_into_an_unoffered_call_after_its_text_ends_in_an_error_event(gateway):
    """The text already went out, so no status can say it: the stream ends with the API's error event (before, it
    ended as a finished message whose stop reason said tool_use, with no call in it)."""
    gw = gateway(lambda h, b: send_json(h, completion("x")), text_then_unoffered_call)
    client = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0)
    got: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as err:
        with client.messages.stream(model="m", max_tokens=50, messages=[
                {"role": "user", "content": "Please remove my account"}]) as s:
            for piece in s.text_stream:
                got.append(piece)
    assert "".join(got) == "Let me delete it. "
    assert "did not offer" in str(err.value) and "after its text was sent" in str(err.value)
