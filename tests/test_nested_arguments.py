"""JSON nested inside a function call's ``arguments`` string, and the cache key's walk of a deep request.

The gateway refuses a body nested past ``MAX_JSON_DEPTH`` (100) levels, but a function call's ``arguments`` are JSON in
a *string*: the body's check never looked inside. Chat Completions' ``tool_calls[].function.arguments`` and the
Responses API's ``function_call.arguments`` nested 500-999 deep parsed, became a ``tool_use`` input, and the cache
key's walk recursed into them: RecursionError, a 500 with a ~240 KB traceback logged per request; Responses
arguments 2,000 deep failed in the parse itself (only ValueError was caught). Now the parsed arguments get the body's
limit (a 400 naming the field, in the API's error format, no model called), and the key's walk and its JSON are made
without recursion (the same hash for every ordinary request: checked against the old code, copied here).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import math
import unicodedata
from typing import Any

import pytest
from gateways import gateway_starter

from costline.serving.cache import key

CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"


def nested_object(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def chat_body(arguments: str) -> dict[str, Any]:
    return {"model": "m", "messages": [
        {"role": "user", "content": "call f"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
        {"role": "user", "content": "and now?"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}


def responses_body(arguments: str) -> dict[str, Any]:
    return {"model": "m", "input": [
        {"type": "message", "role": "user", "content": "call f"},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": arguments},
        {"type": "function_call_output", "call_id": "c1", "output": "ok"},
        {"type": "message", "role": "user", "content": "and now?"}],
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}]}


APIS = [
    (CHAT, chat_body, "messages[1].tool_calls[0].function.arguments"),
    (RESPONSES, responses_body, "input[1].arguments"),
]


@pytest.fixture(scope="module")
def gateway(pipeline, tmp_path_factory):
    with gateway_starter(pipeline, tmp_path_factory.mktemp("keys") / "keys.json") as start:
        yield start()


def post(port: int, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", path, json.dumps(body).encode(), {"content-type": "application/json"})
    resp = conn.getresponse()
    out = resp.status, json.loads(resp.read() or b"null")
    conn.close()
    return out


@pytest.mark.parametrize("depth", [101, 500, 900, 2_000, 100_000])
@pytest.mark.parametrize("path, body, field", APIS, ids=["chat", "responses"])
def test_arguments_nested_past_the_body_limit_are_a_400_naming_the_field(gateway, standin, path, body, field,
                                                                         depth) -> None:
    before = len(standin.log.entries())
    status, answer = post(gateway.port, path, body(nested_object(depth)))
    assert status == 400, answer
    error = answer["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == field
    assert error["message"].startswith(field) and "100 levels" in error["message"]
    assert len(standin.log.entries()) == before  # no model called


@pytest.mark.parametrize("path, body, field", APIS, ids=["chat", "responses"])
def test_arguments_at_the_limit_are_answered(gateway, path, body, field) -> None:
    status, answer = post(gateway.port, path, body(nested_object(100)))
    assert status == 200, answer


# -- the cache key walks without recursion --------------------------------------------------------------------------
def deep_tool_input(depth: int, leaf: Any = 1) -> dict[str, Any]:
    value: Any = leaf
    for _ in range(depth):
        value = {"a": [value]}
    return {"model": "m", "max_tokens": 9, "messages": [
        {"role": "user", "content": "call f"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": "f", "input": value}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1", "content": "ok"},
                                     {"type": "text", "text": "and now?"}]}]}


@pytest.mark.parametrize("depth", [600, 3_000, 10_000])
def test_a_library_caller_s_deep_request_has_a_scope(depth: int) -> None:
    """The gateway never passes such a request now, but scope_of_body / scope_of_prompt are called from Python too:
    the old recursive walk raised RecursionError a few hundred levels down."""
    one = key.scope_of_body(deep_tool_input(depth))
    assert len(one) == 32 and int(one, 16) >= 0
    assert key.scope_of_body(deep_tool_input(depth)) == one
    assert key.scope_of_body(deep_tool_input(depth, leaf=2)) != one


def test_a_request_that_contains_itself_is_a_value_error() -> None:
    looped: dict[str, Any] = {"a": []}
    looped["a"].append(looped)
    with pytest.raises(ValueError, match="levels deep"):
        key.scope_of_body({"model": "m", "max_tokens": 9, "system": [looped],
                           "messages": [{"role": "user", "content": "hi"}]})


# -- ordinary requests keep their scope ----------------------------------------------------------------------------
def _old_normal(value: Any) -> Any:
    """serving/cache/key.py's _normal before 2026-12 (recursive), for comparison."""
    if isinstance(value, dict):
        return {str(k): _old_normal(v) for k, v in value.items()
                if not (k == "cache_control" and isinstance(v, dict) and v.get("type") == "ephemeral")}
    if isinstance(value, (list, tuple)):
        items = [_old_normal(v) for v in value]
        if items and all(isinstance(b, dict) and b.get("type") == "text" and set(b) <= {"type", "text"}
                         for b in items):
            return "\n".join(str(b.get("text", "")) for b in items)
        return items
    return value


def _old_plain(value: Any) -> Any:
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value)
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2 ** 53:
        return int(value)
    if isinstance(value, dict):
        return {_old_plain(str(k)): _old_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_old_plain(v) for v in value]
    return value


_DEFAULTS = {"temperature": 1, "top_p": 1, "frequency_penalty": 0, "presence_penalty": 0}


def _old_scope(body: dict[str, Any]) -> str:
    """The old scope_of_body, written out (the parameters, the defaults and the last turn's rule as documented)."""
    messages = list(body.get("messages") or [])
    *before, last = messages
    content = last.get("content")
    rest = [b for b in content if not (isinstance(b, dict) and b.get("type") == "text")] \
        if isinstance(content, list) else []
    earlier = before + ([{"role": "user", "content": rest}] if rest else [])
    config = body.get("output_config")
    params = {**body, "effort": config.get("effort")} if isinstance(config, dict) and config.get("effort") else body
    kept = {k: params[k] for k in key._PARAMS if params.get(k) is not None}
    doc = {"system": _old_normal(body.get("system")), "earlier": _old_normal(earlier),
           "tools": _old_normal(body.get("tools")), "model": key.model_family(body.get("model")),
           "params": _old_normal(kept)}
    out = {k: _old_plain(v) for k, v in doc.items()}
    for name in ("system", "tools"):
        if isinstance(out.get(name), (list, dict)) and not out[name]:
            out[name] = None
    params_out = {}
    for name, value in out["params"].items():
        if name in ("stop_sequences", "stop"):
            value = [value] if isinstance(value, str) else value
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                value = sorted(set(value))
        real = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if (isinstance(value, (list, dict)) and not value) or (name in _DEFAULTS and real
                                                              and value == _DEFAULTS[name]):
            continue
        params_out[name] = value
    out["params"] = params_out
    raw = json.dumps(out, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:32]


Q = {"role": "user", "content": "How do I reset my password?"}
ORDINARY = [
    {"model": "claude-haiku-4-5", "max_tokens": 300, "messages": [Q]},
    {"model": "claude-sonnet-4-5-20250929", "max_tokens": 1024, "system": "Tu es un assistant très poli.",
     "temperature": 0.2, "messages": [Q]},
    {"model": "m", "max_tokens": 50, "system": [{"type": "text", "text": "Be brief.",
                                                 "cache_control": {"type": "ephemeral"}}], "messages": [Q]},
    {"model": "m", "max_tokens": 50, "stop_sequences": ["zz", "aa", "zz"], "top_p": 0.9, "top_k": 5,
     "messages": [{"role": "user", "content": "Bonjour"}, {"role": "assistant", "content": "Salut 👋"}, Q]},
    {"model": "m", "max_tokens": 50, "tools": [{"name": "weather", "description": "Météo — température en °C",
                                                "input_schema": {"type": "object", "properties": {
                                                    "city": {"type": "string", "maxLength": 80.0},
                                                    "днів": {"type": "integer", "enum": [1, 2, 3.5]}},
                                                    "required": ["city"]}}],
     "tool_choice": {"type": "auto"}, "messages": [
        {"role": "user", "content": "Weather in Hà Nội?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Checking."},
                                          {"type": "tool_use", "id": "t1", "name": "weather",
                                           "input": {"city": "Hà Nội", "days": 2.0, "flags": [True, None, -0.5]}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "31 °C"},
                                     {"type": "text", "text": "And tomorrow?"}]}]},
    {"model": "m", "max_tokens": 10, "output_config": {"effort": "high"}, "thinking": {"type": "enabled",
                                                                                        "budget_tokens": 2048},
     "system": unicodedata.normalize("NFD", "क्या आप मदद कर सकते हैं? Ẹ kú àárọ̀"),
     "messages": [{"role": "user", "content": "בְּרֵאשִׁית"}, {"role": "assistant", "content": "ok"},
                  {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                            "data": "iVBORw0KGgo="}},
                                               {"type": "text", "text": "What is this?"}]}]},
    {"model": "m", "max_tokens": 10, "temperature": 1.0, "frequency_penalty": 0, "seed": 7,
     "logit_bias": {"50256": -100}, "response_format": {"type": "json_object"}, "messages": [
        {"role": "user", "content": "escape \" \\ \n \t \u2028 \x01 and a lone \ud800 surrogate"}, Q]},
]


@pytest.mark.parametrize("body", ORDINARY, ids=[f"request{i}" for i in range(len(ORDINARY))])
def test_an_ordinary_request_keeps_its_scope(body: dict[str, Any]) -> None:
    """The entries a saved cache holds are still found: the walk and its JSON changed, the hash did not."""
    assert key.scope_of_body(body) == _old_scope(body)


@pytest.mark.parametrize("doc", [
    None, True, 0, -1, 2 ** 60, 1.5, 1e300, float("nan"), float("inf"), "", "é\"\\\n\u2028😀\ud800",
    [], {}, [[], {}], {"b": 1, "a": [1, "x", None, {"z": {}, "é": [2.5]}]}, {"a": {1, 2}}, {"a": b"bytes"},
])
def test_the_key_s_json_is_json_dumps_s(doc: Any) -> None:
    assert key._dumps(doc) == json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
