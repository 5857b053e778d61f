"""OpenInference's OpenAI spans of an app that hides inputs: the requests without a body are still no calls.

With ``OPENINFERENCE_HIDE_INPUTS=true`` (or ``TraceConfig(hide_inputs=True)``) the real
``openinference-instrumentation-openai`` writes ``__REDACTED__`` as every span's ``input.value``, so the ``{}`` that
told a read-back (``responses.retrieve``, ``chat.completions.retrieve``, ``responses.input_items.list``,
``responses.cancel``) from a model call is gone; its ``llm.invocation_parameters`` is still written: ``{}`` for those,
at least the ``model`` for every call. The installed openai SDK, instrumented so, talks to a local server answering
as OpenAI's API does (token counts chosen here); the spans go through the processor's decode / flatten / commit path
into a lake in tmp_path, and the calls are compared with figures worked out by hand from those counts and the
hand-written prices below.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from costline.config import Config, LakeConfig, ModelPrice, PricingConfig
from costline.processors.spellings import read_call
from costline.sim.synth import span

from figures_lake import lake_from_sdk_spans, query_lake as q
from scripted_http import ScriptedHttp, send_json
from sdk_hygiene import pristine_sdks  # noqa: F401 (autouse fixture)

openai = pytest.importorskip("openai")
oi_openai = pytest.importorskip("openinference.instrumentation.openai")
from openinference.instrumentation import TraceConfig  # noqa: E402

MODEL = "gpt-5-mini"
IN, OUT = 0.25, 2.0  # USD per million tokens, hand-written (not costline's defaults)

#: (input, output) tokens the server reports for each answer.
CREATE, STREAMED, CHAT, CHAT_STREAMED = (1200, 300), (800, 200), (100, 20), (60, 15)
DONE = (1000, 500)  # a background response of OpenAI's, read back completed: its cost is only here
GATEWAY_RESPONSE, GATEWAY_CHAT = (500, 50), (40, 10)  # costline serve's answers, read back: the gateway counts them


@pytest.fixture
def cfg(tmp_path) -> Config:
    return Config(lake=LakeConfig(path=tmp_path / "lake"), pricing=PricingConfig(
        models=(ModelPrice(MODEL, "budget", provider="openai", input_per_mtok=IN, output_per_mtok=OUT),),
        student_usd_per_hour=0.0, student_providers=()))


def _response(rid: str, status: str, tokens: tuple[int, int] | None) -> dict[str, Any]:
    usage = None if tokens is None else {
        "input_tokens": tokens[0], "output_tokens": tokens[1], "total_tokens": sum(tokens),
        "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}
    output = [{"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
               "content": [{"type": "output_text", "text": "Within 30 days.", "annotations": []}]}]
    return {"id": rid, "object": "response", "created_at": 1, "status": status, "model": MODEL,
            "output": output if status == "completed" else [], "parallel_tool_calls": True, "tool_choice": "auto",
            "tools": [], "usage": usage}


def _chat(cid: str, tokens: tuple[int, int]) -> dict[str, Any]:
    return {"id": cid, "object": "chat.completion", "created": 1, "model": MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Within 30 days."},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": tokens[0], "completion_tokens": tokens[1], "total_tokens": sum(tokens)}}


def _chunk(**fields: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-s1", "object": "chat.completion.chunk", "created": 1, "model": MODEL, **fields}


def _send_sse(h, events: list[dict[str, Any]], done: bool) -> None:
    h.send_response(200)
    h.send_header("content-type", "text/event-stream")
    h.end_headers()
    for event in events:
        h.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
    if done:  # Chat Completions ends with [DONE]; the Responses API's stream just ends
        h.wfile.write(b"data: [DONE]\n\n")
    h.wfile.flush()


def _answer(h, path: str, body: bytes) -> None:
    """OpenAI's API for the requests below; a create with ``"fail"`` as its input answers 500."""
    request = json.loads(body) if body else {}
    if h.command == "POST" and path == "/v1/responses":
        if request.get("input") == "fail":
            h.send_response(500)
            h.send_header("content-length", "0")
            h.end_headers()
        elif request.get("stream"):
            _send_sse(h, [{"type": "response.created", "sequence_number": 0,
                           "response": _response("resp_s1", "in_progress", None)},
                          {"type": "response.completed", "sequence_number": 1,
                           "response": _response("resp_s1", "completed", STREAMED)}], done=False)
        else:
            send_json(h, _response("resp_c1", "completed", CREATE))
    elif h.command == "POST" and path == "/v1/chat/completions":
        if request.get("stream"):
            _send_sse(h, [_chunk(choices=[{"index": 0, "delta": {"role": "assistant", "content": "Within 30 days."},
                                           "finish_reason": None}]),
                          _chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]),
                          _chunk(choices=[], usage={"prompt_tokens": CHAT_STREAMED[0],
                                                    "completion_tokens": CHAT_STREAMED[1],
                                                    "total_tokens": sum(CHAT_STREAMED)})], done=True)
        else:
            send_json(h, _chat("chatcmpl-c1", CHAT))
    elif path == "/v1/responses/resp_bg":  # a background response still running
        send_json(h, _response("resp_bg", "in_progress", None))
    elif path == "/v1/responses/resp_bg/cancel":
        send_json(h, _response("resp_bg", "cancelled", None))
    elif path.startswith("/v1/responses/resp_bg/input_items"):
        send_json(h, {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False})
    elif path == "/v1/responses/resp_done":
        send_json(h, _response("resp_done", "completed", DONE))
    elif path == "/v1/responses/resp_costline_42":
        send_json(h, _response("resp_costline_42", "completed", GATEWAY_RESPONSE))
    elif path == "/v1/chat/completions/chatcmpl-costline-7":
        send_json(h, _chat("chatcmpl-costline-7", GATEWAY_CHAT))
    else:
        raise AssertionError(f"unexpected request {h.command} {path}")


def _traffic(client) -> None:
    """Five model calls (one failed) and six requests without a body."""
    client.responses.create(model=MODEL, input="Can I return a damaged item?")
    for _ in client.responses.create(model=MODEL, input="Stream the refund steps", stream=True):
        pass
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Where is my parcel?"}])
    for _ in client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Stream it"}],
                                            stream=True, stream_options={"include_usage": True}):
        pass
    with pytest.raises(openai.InternalServerError):
        client.responses.create(model=MODEL, input="fail")
    client.responses.retrieve("resp_bg")  # a poll: no tokens yet
    client.responses.input_items.list("resp_bg")
    client.responses.cancel("resp_bg")
    client.responses.retrieve("resp_done")  # found done: the tokens OpenAI bills
    client.responses.retrieve("resp_costline_42")  # costline serve's answers read back
    client.chat.completions.retrieve("chatcmpl-costline-7")


@pytest.mark.parametrize("hide", ["env", "trace-config"])
def test_read_backs_with_hidden_inputs_are_no_calls_and_model_calls_stay_calls(cfg, plain_spans, monkeypatch, hide):
    """5 calls (4 priced at their reported tokens, 1 failed: unpriced, $0) and the read-back of a response of
    OpenAI's with its tokens: 6 calls. The poll, the list of items, the cancel and the two read-backs of costline
    serve's answers are no calls (before: 5 more, the gateway's two at 540 in / 60 out again)."""
    provider, exporter = plain_spans
    if hide == "env":
        monkeypatch.setenv("OPENINFERENCE_HIDE_INPUTS", "true")
        config = None
    else:
        config = TraceConfig(hide_inputs=True)
    api = ScriptedHttp(_answer)
    inst = oi_openai.OpenAIInstrumentor()
    inst.instrument(tracer_provider=provider, config=config)
    try:
        _traffic(openai.OpenAI(base_url=f"{api.url}/v1", api_key="test", max_retries=0))
    finally:
        inst.uninstrument()
        api.close()
    spans = exporter.get_finished_spans()
    # what the test stands on: the inputs hidden, the arguments still written ({} for the six without a body)
    assert len(spans) == 11 and {s.attributes.get("input.value") for s in spans} == {"__REDACTED__"}
    params = [json.loads(s.attributes["llm.invocation_parameters"]) for s in spans]
    assert [p.get("model") for p in params[:5]] == [MODEL] * 5 and params[5:] == [{}] * 6

    lake_from_sdk_spans(spans, cfg)
    assert q(cfg, "SELECT input_tokens, output_tokens, error_type IS NOT NULL FROM calls ORDER BY input_tokens") == [
        (0, 0, True), (60, 15, False), (100, 20, False), (800, 200, False), (1000, 500, False), (1200, 300, False)]
    # inputs 60 + 100 + 800 + 1000 + 1200 = 3160 at $0.25/M; outputs 15 + 20 + 200 + 500 + 300 = 1035 at $2/M
    want = (3160 * 0.25 + 1035 * 2.0) / 1e6  # $0.00286
    assert q(cfg, "SELECT count(*), count(cost_usd), sum(cost_usd) FROM calls") == [
        (6, 6, pytest.approx(want, rel=1e-9))]


OI_OPENAI = "openinference.instrumentation.openai"
HIDDEN = "__REDACTED__"
GATEWAY_ANSWER = '{"id":"resp_costline_4f1c","object":"response","created_at":1}'


@pytest.mark.parametrize("scope, attrs, is_call", [
    # OpenAI's instrumentor, inputs hidden: arguments {} = no body: no tokens, or a gateway's answer: no call
    (OI_OPENAI, {"llm.invocation_parameters": "{}"}, False),
    (OI_OPENAI, {"llm.invocation_parameters": "{}", "output.value": GATEWAY_ANSWER,
                 "llm.token_count.prompt": 500, "llm.token_count.completion": 50}, False),
    # ... another server's response read back with its tokens: a call (as with input.value {})
    (OI_OPENAI, {"llm.invocation_parameters": "{}", "output.value": '{"id":"resp_0a1b","object":"response"}',
                 "llm.token_count.prompt": 500, "llm.token_count.completion": 50}, True),
    # a model call's arguments name the model: a call, failed (no tokens) or through the gateway
    (OI_OPENAI, {"llm.invocation_parameters": '{"model": "gpt-5-mini"}'}, True),
    (OI_OPENAI, {"llm.invocation_parameters": '{"model": "gpt-5-mini", "stream": true}',
                 "output.value": GATEWAY_ANSWER, "llm.token_count.prompt": 500,
                 "llm.token_count.completion": 50}, True),
    # arguments hidden too (OPENINFERENCE_HIDE_LLM_INVOCATION_PARAMETERS): nothing tells a read-back: a call
    (OI_OPENAI, {}, True),
    # another instrumentor's {} arguments under hidden inputs: not known to mean no body: a call
    ("openinference.instrumentation.bedrock", {"llm.invocation_parameters": "{}"}, True),
])
def test_which_hidden_input_spans_are_requests_without_a_body(scope, attrs, is_call):
    attrs = {"openinference.span.kind": "LLM", "llm.model_name": "gpt-5-mini", "input.value": HIDDEN, **attrs}
    s = span("Response", trace_id=b"\x01" * 16, span_id=b"\x02" * 8, start_ns=1, end_ns=2, attributes=attrs)
    reading = read_call("Response", {kv.key: kv.value for kv in s.attributes}.get, scope, False, [])
    assert (reading is not None) is is_call
