"""Property-based fuzzing of the gateway's request parsing: any method, headers and body get an
answer in Anthropic's error format or a message, never a 5xx (except 529 when busy), never a crash; and a valid
tool-loop request of each route (Messages, count_tokens, Chat Completions, Responses, a new conversation's items)
with one to three of its values replaced at any depth gets an answer or a 400 in its API's error format."""

from __future__ import annotations

import dataclasses
import http.client
import json

import pytest
from fuzzing import FUZZ
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider

from costline.collectors import Recorder
from costline.config import Config
from costline.serving.gateway.auth import KeyStore
from costline.serving.gateway.app import Gateway
from costline.serving.pipeline import Pipeline
from costline.serving.settings import BackendsConfig, GatewayConfig, StandInConfig
from costline.sim.standin import StandInServer


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    standin = StandInServer(StandInConfig(latency_scale=0.0), port=0)
    standin.start()
    cfg = Config()
    serving = dataclasses.replace(cfg.serving, backends=BackendsConfig(
        anthropic_base_url=standin.url, student_base_url=standin.openai_url, max_retries=0))
    pipeline = Pipeline.from_config(cfg.replace(serving=serving), recorder=Recorder(TracerProvider()), env={})
    keys = tmp_path_factory.mktemp("keys") / "keys.json"
    _, key = KeyStore(keys).add("acme")
    gw = Gateway(pipeline, GatewayConfig(keys_file=keys, rate_limit_per_minute=0, max_body_bytes=64 * 1024),
                 port=0)
    gw.start()
    yield gw, key
    gw.shutdown()
    pipeline.close()
    standin.shutdown()


content = st.one_of(st.text(max_size=40), st.lists(st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image", 5]), "text": st.one_of(st.text(max_size=20), st.integers())}),
    max_size=2), st.integers(), st.none())
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", 3]),
                                           "content": content}), max_size=3)
json_any = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                                  st.text(max_size=10)),
                        lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                        max_leaves=10)
bodies = st.one_of(
    st.fixed_dictionaries({"model": st.text(max_size=10), "max_tokens": st.one_of(st.integers(-2, 5000), st.text(max_size=3),
                                                                                   st.booleans(), st.none()),
                           "messages": st.one_of(messages, json_any)},
                          optional={"stream": st.one_of(st.booleans(), json_any), "system": json_any,
                                    "metadata": st.one_of(st.fixed_dictionaries({"tenant": json_any}), json_any)}
                          ).map(lambda d: json.dumps(d).encode()),
    json_any.map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=200),
)
header_values = st.one_of(st.sampled_from(["acme", "globex", "", " acme", "application/json", "text/plain",
                                           "https://evil.example", "Bearer x"]),
                          st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20))
header_names = st.sampled_from(["x-costline-tenant", "content-type", "origin", "x-api-key", "authorization",
                                "x-costline-task-type", "x-costline-doc-hashes", "anthropic-version"])


@FUZZ
@given(method=st.sampled_from(["POST", "POST", "POST", "GET", "OPTIONS", "PUT", "DELETE"]),
       path=st.sampled_from(["/v1/messages", "/v1/models", "/v1/models/claude-haiku-4-5", "/v1/models/%2F..",
                             "/v1/messages?beta=true", "/", "/v1/../etc", "/v1/messages/batches",
                             "/v1/messages/batches?limit=0&after_id=%00", "/v1/messages/batches/msgbatch_x/results",
                             "/v1/messages/batches/msgbatch_x/cancel", "/v1/files", "/v1/files/file-x/content",
                             "/v1/batches", "/v1/batches/batch_x/cancel",
                             "/v1/responses/resp_x", "/v1/responses/resp_x/input_items?limit=5&after=%00",
                             "/v1/conversations", "/v1/conversations/conv_x/items?order=asc&limit=999",
                             "/v1/conversations/conv_x/items/msg_x"]),
       headers=st.lists(st.tuples(header_names, header_values), max_size=5),
       with_key=st.booleans(), body=bodies)
def test_gateway_parses_anything_without_a_server_error(gateway, method, path, headers, with_key, body) -> None:
    gw, key = gateway
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=20)
    try:
        conn.putrequest(method, path)
        if with_key:
            conn.putheader("x-api-key", key)
            conn.putheader("content-type", "application/json")
        for k, v in headers:
            conn.putheader(k, v)
        conn.putheader("content-length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        answer = resp.read()
    finally:
        conn.close()
    assert resp.status < 500 or resp.status in (503, 529), (resp.status, answer[:300])  # busy: back-pressure
    if resp.status >= 400 and resp.status != 431:
        doc = json.loads(answer)
        if path.startswith(("/v1/responses", "/v1/conversations", "/v1/files", "/v1/batches")):  # OpenAI's format
            assert doc["error"]["message"]
        else:
            assert doc["type"] == "error"


# -- tools, tool turns and the OpenAI routes: a valid tool-loop request of each route, one to three of its values
# (at any depth) replaced by something else, so the fuzz reaches the deep checks and the translation -----------
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
QUESTION_TOOL = "Please use get_weather: is it cold in Oslo?"
TICKET_SCHEMA = {"$defs": {"P": {"enum": ["low", "high"]}}, "type": "object", "required": ["title", "p"],
                 "properties": {"title": {"type": "string", "pattern": "^[A-Z]"}, "p": {"$ref": "#/$defs/P"}},
                 "additionalProperties": False}
BASES = {
    "/v1/messages": {
        "model": "m", "max_tokens": 50, "system": [{"type": "text", "text": "Be brief."}],
        "tools": [{"name": "get_weather", "description": "Weather.", "input_schema": WEATHER_SCHEMA}],
        "tool_choice": {"type": "auto"},
        "messages": [{"role": "user", "content": QUESTION_TOOL},
                     {"role": "assistant", "content": [{"type": "text", "text": "Calling."}, {
                         "type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                                   "content": [{"type": "text", "text": "-3 C"}]}]}]},
    "/v1/chat/completions": {
        "model": "m", "max_completion_tokens": 50, "stream": False, "tool_choice": "auto",
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}],
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION_TOOL},
                     {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
                         "name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
                     {"role": "tool", "tool_call_id": "call_1", "content": "-3 C"}]},
    "/v1/responses": {
        "model": "m", "instructions": "Be brief.", "max_output_tokens": 50, "parallel_tool_calls": False,
        "tools": [{"type": "function", "name": "get_weather", "parameters": WEATHER_SCHEMA}],
        "input": [{"role": "user", "content": [{"type": "input_text", "text": QUESTION_TOOL},
                                               {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0K"}]},
                  {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Oslo"}'},
                  {"type": "function_call_output", "call_id": "call_1", "output": "-3 C"}]},
    "/v1/conversations": {
        "metadata": {"topic": "weather"},
        "items": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": QUESTION_TOOL}]},
                  {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Oslo"}'},
                  {"type": "function_call_output", "call_id": "call_1", "output": "-3 C"}]},
    "/v1/messages/count_tokens": {
        "model": "m", "tools": [{"name": "get_weather", "input_schema": WEATHER_SCHEMA}],
        "messages": [{"role": "user", "content": QUESTION_TOOL}]},
    # structured outputs: each API's format around a schema with a $ref, an enum and a pattern
    "/v1/messages#structured": {
        "model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "File a ticket"}],
        "output_config": {"effort": "low", "format": {"type": "json_schema", "schema": TICKET_SCHEMA}}},
    "/v1/chat/completions#structured": {
        "model": "m", "messages": [{"role": "user", "content": "File a ticket"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "t", "strict": True,
                                                                   "schema": TICKET_SCHEMA}}},
    "/v1/responses#structured": {
        "model": "m", "input": "File a ticket",
        "text": {"format": {"type": "json_schema", "name": "t", "schema": TICKET_SCHEMA}}},
}
odd = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False), st.text(max_size=8),
                st.sampled_from(["", "tool", "any", "none", "function", "user", "assistant", "tool_use", "text",
                                 "{not json", "[1]", "data:image/png;base64,@@", "ftp://x", "json_object",
                                 "json_schema", "#/$defs/Q", "http://169.254.169.254/", "(a|aa)+$", "[", "#"]),
                st.lists(st.integers(), max_size=2), st.just({}), st.just([]),
                st.dictionaries(st.sampled_from(["type", "name", "text"]), st.text(max_size=4), max_size=2))


def _paths(doc, at=()):
    """Every place in ``doc`` (a key of an object, an index of a list), outermost first."""
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        yield (*at, key)
        yield from _paths(value, (*at, key))


@FUZZ
@given(route=st.sampled_from(sorted(BASES)), data=st.data())
def test_tool_and_openai_route_shapes_never_get_a_server_error(gateway, route, data) -> None:
    gw, key = gateway
    body = json.loads(json.dumps(BASES[route]))
    for _ in range(data.draw(st.integers(1, 3))):
        places = list(_paths(body))
        if not places:
            break
        *parent, last = data.draw(st.sampled_from(places))
        node = body
        for step in parent:
            node = node[step]
        node[last] = data.draw(odd)
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=20)
    try:
        conn.request("POST", route.split("#")[0], json.dumps(body), {"x-api-key": key,
                                                                     "content-type": "application/json"})
        resp = conn.getresponse()
        answer = resp.read()
    finally:
        conn.close()
    assert resp.status < 500 or resp.status in (503, 529), (resp.status, answer[:300], body)
    if resp.status >= 400:
        doc = json.loads(answer)
        assert (doc.get("type") == "error") == route.startswith("/v1/messages")  # each API in its own format
        assert doc["error"]["message"]
