"""``NaN``, ``Infinity``, ``-Infinity`` (and a number past a float's range) in a request: Python's ``json`` reads them,
JSON and the APIs do not, and no tier SDK can send them on. The gateway refuses them as the APIs would: one 400 in
each API's own error format, naming where (the body, or the tool call whose ``arguments`` hold one), no model call
and nothing recorded against a tier — never a 500 the SDKs retry, each try a failed model call in the spans.

A Python app gets there easily: ``json.dumps({"t": float("nan")})`` is ``'{"t": NaN}'``, what it then sends as a
tool call's ``arguments`` (the openai SDK sends that string as it is). The SDKs refuse a NaN in the body itself, so
those requests are sent as raw bytes, as a hand-rolled client sends them. A real Gateway → Pipeline → the stand-in.
"""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest
from gateways import ROUTES, DictCache, routed_gateway
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costline import contract as c
from costline.collectors import Recorder
from costline.serving.translate import NotJSON, loads_json

BEDROCK_MODEL = "anthropic.claude-3-haiku-20240307-v1:0"


@pytest.fixture(scope="module")
def exporter():
    return InMemorySpanExporter()


@pytest.fixture(scope="module")
def gw(standin, exporter, tmp_path_factory):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with routed_gateway(standin, tmp_path_factory.mktemp("keys") / "keys.json", cache=DictCache(),
                        recorder=Recorder(provider), batches_poll_s=0.1) as gateway:
        gateway.batch_runner.idle_s = 0.05
        yield gateway


def _model_calls_and_failures(exporter) -> tuple[list, list]:
    spans = exporter.get_finished_spans()
    return ([s for s in spans if s.name.startswith("chat ")],
            [s for s in spans if s.attributes.get(c.ERROR_TYPE) is not None])


def _counting_openai(gw, tenant: str) -> tuple[openai.OpenAI, list]:
    """The openai SDK with its default retries (2), counting the HTTP requests it sends."""
    sent: list = []
    http = httpx.Client(event_hooks={"request": [sent.append]})
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", http_client=http,
                         default_headers={**ROUTES["anthropic"], "x-costline-tenant": tenant}), sent


# -- the parser -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ['{"t": NaN}', '{"t": Infinity}', '[-Infinity]', '{"a": {"b": [1, NaN]}}',
                                  '{"t": 1e999}', '[-1E400]', 'NaN'])
def test_non_finite_numbers_are_not_json(text) -> None:
    assert json.loads(text) is not None  # what Python's json makes of it: a float no JSON encoder writes
    with pytest.raises(NotJSON):
        loads_json(text)


@pytest.mark.parametrize("text, value", [
    ('{"t": "NaN", "u": 1.5e308, "v": -1e-400, "w": 12345678901234567890}',
     {"t": "NaN", "u": 1.5e308, "v": -0.0, "w": 12345678901234567890}),
    ('[0.1, -0, 1E3]', [0.1, 0, 1000.0]),
])
def test_finite_json_reads_as_before(text, value) -> None:
    assert loads_json(text) == value


# -- through the openai SDK: a tool call's arguments ---------------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("arguments", [json.dumps({"t": float("nan")}), '{"t": Infinity}', '{"t": -1e999}'])
def test_a_tool_calls_non_finite_arguments_are_one_400_naming_them(gw, standin, exporter, stream, arguments) -> None:
    client, sent = _counting_openai(gw, f"nan-args-{stream}")
    exporter.clear()
    paid = len(standin.log.paid())
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="gpt-4o-mini", stream=stream, messages=[
            {"role": "user", "content": f"What is the temperature in Paris? ({stream}, {arguments})"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "thermo", "arguments": arguments}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "unknown"}],
            tools=[{"type": "function", "function": {"name": "thermo", "parameters": {
                "type": "object", "properties": {"t": {"type": "number"}}}}}])
    assert refused.value.status_code == 400 and len(sent) == 1  # refused once: nothing for the SDK to retry
    error = refused.value.body
    assert error["param"] == "messages[1].tool_calls[0]"
    assert error["message"].startswith("messages[1].tool_calls[0].function.arguments: ")
    assert error["type"] == "invalid_request_error"
    calls, failed = _model_calls_and_failures(exporter)
    assert calls == [] and failed == [] and len(standin.log.paid()) == paid


# -- a body that is not JSON, on every front -------------------------------------------------------------------------
def _openai_error(reply: httpx.Response) -> str:
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error"
    return error["message"]


def _anthropic_error(reply: httpx.Response) -> str:
    doc = reply.json()
    assert doc["type"] == "error" and doc["error"]["type"] == "invalid_request_error"
    return doc["error"]["message"]


def _bedrock_error(reply: httpx.Response) -> str:
    assert reply.headers["x-amzn-errortype"].startswith("ValidationException:")
    return reply.json()["message"]


_TOOL = '{"type":"object","properties":{"t":{"type":"number","maximum":%s}}}'
_TOOL_USE = ('[{"role":"user","content":"w?"},{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"w",'
             '"input":{"t":%s}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"ok"}]}]')
FRONTS = {
    "chat": ("/v1/chat/completions", '{"model":"m","messages":[{"role":"user","content":"weather?"}],'
             '"tools":[{"type":"function","function":{"name":"w","parameters":%s}}]}' % _TOOL, _openai_error),
    "chat-stream": ("/v1/chat/completions", '{"model":"m","stream":true,"messages":[{"role":"user","content":"w?"}],'
                    '"tools":[{"type":"function","function":{"name":"w","parameters":%s}}]}' % _TOOL, _openai_error),
    "responses": ("/v1/responses", '{"model":"m","input":"weather?","tools":[{"type":"function","name":"w",'
                  '"parameters":%s}]}' % _TOOL, _openai_error),
    "messages": ("/v1/messages", '{"model":"m","max_tokens":100,"messages":%s,'
                 '"tools":[{"name":"w","input_schema":{"type":"object"}}]}' % _TOOL_USE, _anthropic_error),
    "messages-stream": ("/v1/messages", '{"model":"m","max_tokens":100,"stream":true,"messages":'
                        '[{"role":"user","content":"w?"}],"tools":[{"name":"w","input_schema":%s}]}' % _TOOL,
                        _anthropic_error),
    "message-batches": ("/v1/messages/batches", '{"requests":[{"custom_id":"a","params":{"model":"m","max_tokens":10,'
                        '"messages":%s}}]}' % _TOOL_USE, _anthropic_error),
    "bedrock-invoke": (f"/model/{BEDROCK_MODEL}/invoke", '{"anthropic_version":"bedrock-2023-05-31","max_tokens":100,'
                       '"messages":%s}' % _TOOL_USE, _bedrock_error),
    "bedrock-invoke-stream": (f"/model/{BEDROCK_MODEL}/invoke-with-response-stream",
                              '{"anthropic_version":"bedrock-2023-05-31","max_tokens":100,"messages":%s,'
                              '"tools":[{"name":"w","input_schema":{"type":"object"}}]}' % _TOOL_USE, _bedrock_error),
    "bedrock-converse": (f"/model/{BEDROCK_MODEL}/converse", '{"messages":[{"role":"user","content":[{"text":"w?"}]}],'
                         '"toolConfig":{"tools":[{"toolSpec":{"name":"w","inputSchema":{"json":%s}}}]}}' % _TOOL,
                         _bedrock_error),
    "bedrock-converse-stream": (f"/model/{BEDROCK_MODEL}/converse-stream",
                                '{"messages":[{"role":"user","content":[{"text":"w?"}]}],"toolConfig":{"tools":'
                                '[{"toolSpec":{"name":"w","inputSchema":{"json":%s}}}]}}' % _TOOL, _bedrock_error),
}


@pytest.mark.parametrize("front", sorted(FRONTS))
@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_a_body_with_a_non_finite_number_is_a_400_in_the_apis_format(gw, standin, exporter, front, constant) -> None:
    path, template, message_of = FRONTS[front]
    raw = template % constant
    json.loads(raw)  # Python's json reads it (that was the trouble), so the body is otherwise well formed
    exporter.clear()
    paid = len(standin.log.paid())
    reply = httpx.post(gw.url + path, content=raw.encode(), timeout=30, headers={
        "content-type": "application/json", "x-costline-tenant": f"nan-{front}", **ROUTES["anthropic"]})
    assert reply.status_code == 400, reply.text
    assert "the body is not valid JSON" in message_of(reply)
    calls, failed = _model_calls_and_failures(exporter)
    assert calls == [] and failed == [] and len(standin.log.paid()) == paid


@pytest.mark.parametrize("arguments", ['{"t": NaN}', '{"t": -Infinity}', '{"t": 1e999}'])
def test_a_responses_function_call_item_with_non_finite_arguments_is_a_400_naming_it(gw, standin, exporter,
                                                                                      arguments) -> None:
    """A Responses input's earlier ``function_call`` (the app sends back what the model called, arguments as the
    string its json.dumps wrote) holding NaN: a 400 naming the item, nothing sent to a tier."""
    body = {"model": "m", "tools": [{"type": "function", "name": "w", "parameters": {"type": "object"}}],
            "input": [{"role": "user", "content": "weather?"},
                      {"type": "function_call", "call_id": "c1", "name": "w", "arguments": arguments},
                      {"type": "function_call_output", "call_id": "c1", "output": "sunny"}]}
    exporter.clear()
    paid = len(standin.log.paid())
    reply = httpx.post(gw.url + "/v1/responses", json=body, timeout=30, headers={
        "x-costline-tenant": "nan-responses-items", **ROUTES["anthropic"]})
    assert reply.status_code == 400, reply.text
    assert "input[1]" in _openai_error(reply)
    calls, failed = _model_calls_and_failures(exporter)
    assert calls == [] and failed == [] and len(standin.log.paid()) == paid


# -- OpenAI batches ---------------------------------------------------------------------------------------------------
def _batch_line(custom_id: str, arguments: str | None = None) -> dict:
    messages: list = [{"role": "user", "content": f"What is the temperature in Lima? ({custom_id})"}]
    if arguments is not None:
        messages += [{"role": "assistant", "content": None, "tool_calls": [
                         {"id": "c1", "type": "function", "function": {"name": "thermo", "arguments": arguments}}]},
                     {"role": "tool", "tool_call_id": "c1", "content": "unknown"}]
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "messages": messages}}


def _finished(client: openai.OpenAI, batch_id: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while (got := client.batches.retrieve(batch_id)).status not in ("completed", "failed", "expired", "cancelled") \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    return got


def test_a_batch_line_whose_tool_call_arguments_hold_nan_fails_alone(gw, exporter) -> None:
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0,
                           default_headers={**ROUTES["anthropic"], "x-costline-tenant": "nan-batch"})
    text = "\n".join(json.dumps(x) for x in [_batch_line("ok"), _batch_line("nan", json.dumps({"t": float("nan")}))])
    exporter.clear()
    file_id = client.files.create(file=("requests.jsonl", text.encode()), purpose="batch").id
    made = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    done = _finished(client, made.id)
    assert done.status == "completed" and (done.request_counts.completed, done.request_counts.failed) == (1, 1)
    output = {d["custom_id"]: d for d in map(json.loads, client.files.content(done.output_file_id).text.splitlines())}
    errors = {d["custom_id"]: d for d in map(json.loads, client.files.content(done.error_file_id).text.splitlines())}
    assert sorted(output) == ["ok"] and sorted(errors) == ["nan"]
    assert errors["nan"]["response"]["status_code"] == 400
    assert "messages[1].tool_calls[0].function.arguments" in errors["nan"]["response"]["body"]["error"]["message"]
    calls, failed = _model_calls_and_failures(exporter)
    assert len(calls) == 1 and failed == []  # the line that reads was answered; the other never reached a tier


def test_a_batch_line_with_a_bare_nan_is_refused_naming_it_as_any_line_that_is_not_json(gw, standin, exporter) -> None:
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0,
                           default_headers={**ROUTES["anthropic"], "x-costline-tenant": "nan-batch-line"})
    bad = {**_batch_line("nan"), "body": {**_batch_line("nan")["body"], "temperature": float("nan")}}
    text = "\n".join(json.dumps(x) for x in [_batch_line("ok"), bad])  # json.dumps writes the NaN
    exporter.clear()
    paid = len(standin.log.paid())
    file_id = client.files.create(file=("requests.jsonl", text.encode()), purpose="batch").id
    with pytest.raises(openai.BadRequestError) as refused:
        client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    assert "line 2 is not JSON" in refused.value.body["message"]
    calls, failed = _model_calls_and_failures(exporter)
    assert calls == [] and failed == [] and len(standin.log.paid()) == paid
