"""The gateway answers as the APIs it speaks answer, through the real ``anthropic`` and ``openai`` SDKs:

* a Messages request field the API does not have (a typo such as ``stop_sequence``) is refused as the API refuses it,
  and one the API has that the gateway cannot carry to its tiers (``mcp_servers``, ``container``...) is refused naming
  it — neither is answered as if it was not sent (from the cache of the request without it);
* ``stop_sequence`` says which stop sequence ended an answer (streamed or not, live or buffered);
* a request whose last user turn is only an image or a document (the instruction in the system prompt: OCR and
  document apps) is answered by a tier, on every route, and never looked up in or stored to the semantic cache;
* every answer carries its request id where the SDKs read it (``request-id``, ``x-request-id``; an Anthropic error
  body's ``request_id``), errors included.

Real parts: a Gateway → Pipeline → the local stand-ins; the cache is an exact-text one that counts its lookups.
"""

from __future__ import annotations

import http.client
import json

import anthropic
import openai
import pytest
from test_gateway_hostile import serve  # noqa: F401 - fixture

from gateways import DictCache, anthropic_client, openai_client, routed_gateway

QUESTION = "List the open issues in my repository tracker, please."
PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
DOCUMENT = {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                           "data": "Q3 revenue rose 12% on the year."}}


@pytest.fixture
def cached_gateway(standin, tmp_path):
    """A gateway whose pipeline has an exact-text cache (returned beside it), live streaming (no confidence gate)."""
    cache = DictCache()
    with routed_gateway(standin, tmp_path / "keys.json", cache=cache) as gw:
        yield gw, cache


# -- 1. fields the API does not have, or the gateway cannot carry --------------------------------------------------
MCP = [{"type": "url", "url": "https://mcp.example.com/sse", "name": "tracker"}]
SKILLS = {"skills": [{"type": "anthropic", "skill_id": "xlsx", "version": "latest"}]}


@pytest.mark.parametrize("beta, kwargs, said", [
    # not fields of the API: refused as it refuses them
    (False, {"extra_body": {"stop_sequence": ["\n"]}}, "stop_sequence: Extra inputs are not permitted"),
    (False, {"extra_body": {"max_token": 10}}, "max_token: Extra inputs are not permitted"),
    (False, {"extra_body": {"workspace_id": "wrkspc_1"}}, "workspace_id: Extra inputs are not permitted"),  # a header
    # fields of the API the gateway cannot carry: refused naming the field
    (True, {"mcp_servers": MCP, "betas": ["mcp-client-2025-04-04"]}, "mcp_servers: not supported by the costline"),
    (True, {"container": SKILLS, "betas": ["skills-2025-10-02"]}, "container: not supported by the costline"),
    (False, {"container": "container_011"}, "container: not supported by the costline"),
    (True, {"compaction": {"type": "enabled"}}, "compaction: not supported by the costline"),
    (True, {"thread": {"type": "create"}}, "thread: not supported by the costline"),
    (True, {"fallbacks": "default"}, "fallbacks: not supported by the costline"),
    (False, {"diagnostics": {"previous_message_id": "msg_1"}}, "diagnostics: not supported by the costline"),
])
def test_a_field_the_gateway_cannot_answer_is_refused_not_served_from_the_cache(cached_gateway, standin, beta,
                                                                                  kwargs, said):
    gw, cache = cached_gateway
    client = anthropic_client(gw, "anthropic", "fields")
    messages = client.beta.messages if beta else client.messages
    ask = dict(model="claude-sonnet-4-5", max_tokens=300, messages=[{"role": "user", "content": QUESTION}])
    messages.create(**ask)  # the plain request: answered, and stored
    assert cache.entries
    standin.log.clear()
    with pytest.raises(anthropic.BadRequestError) as err:
        messages.create(**ask, **kwargs)
    assert err.value.body["error"]["type"] == "invalid_request_error"
    assert err.value.body["error"]["message"].startswith(said), err.value.body
    assert standin.log.entries() == []  # no tier was paid for it


def test_the_allowlist_is_the_sdks_request_fields():
    """Every field of the SDK's MessageCreateParams (and its beta's) is a body field the gateway knows, except those
    the SDK sends as headers; and every field it knows is the API's or one it reads."""
    from anthropic.types import message_create_params
    from anthropic.types.beta import message_create_params as beta_params

    from costline.serving.gateway.messages_api import API_FIELDS, GATEWAY_FIELDS, UNCARRIED_FIELDS

    sdk = set()
    for module in (message_create_params, beta_params):
        for name in dir(module):
            kind = getattr(module, name)
            if name.startswith("MessageCreateParams") and hasattr(kind, "__optional_keys__"):  # a TypedDict
                sdk |= set(kind.__required_keys__) | set(kind.__optional_keys__)
    headers = {"betas", "user_profile_id", "workspace_id"}  # anthropic-beta, anthropic-user-profile-id, ...-workspace-id
    assert sdk - headers == set(API_FIELDS)
    assert set(UNCARRIED_FIELDS) <= set(API_FIELDS)
    assert {"mcp_servers", "container"} <= set(UNCARRIED_FIELDS)
    assert "context_management" not in UNCARRIED_FIELDS  # carried to Anthropic tiers
    assert not GATEWAY_FIELDS & API_FIELDS


# -- 2. stop_sequence ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stream, confidence_gate, mode", [
    (False, False, None),
    (True, False, "live"),  # no gate: token by token (_live_events)
    (True, True, "buffered"),  # a gate: the whole answer first (_event_stream)
])
def test_stop_sequence_names_the_sequence_that_ended_the_answer(standin, tmp_path, stream, confidence_gate, mode):
    from costline.serving.pipeline import marker_confidence

    ask = dict(model="claude-sonnet-4-5", max_tokens=200,
               messages=[{"role": "user", "content": "Name the largest planet in the solar system, briefly."}])
    with routed_gateway(standin, tmp_path / "keys.json", confidence=marker_confidence if confidence_gate else None,
                        ) as gw:
        client = anthropic_client(gw, "anthropic", f"stop-{stream}-{confidence_gate}")
        whole = client.messages.create(**ask).content[0].text
        word = whole.split()[3]  # a word in the middle of the answer: the stand-in stops before it
        if stream:
            with client.messages.stream(**ask, stop_sequences=[word, "zzz-never"]) as s:
                assert s.response.headers["x-costline-stream-mode"] == mode
                message = s.get_final_message()
        else:
            message = client.messages.create(**ask, stop_sequences=[word, "zzz-never"])
    assert message.stop_reason == "stop_sequence"
    assert message.stop_sequence == word
    assert message.content[0].text == whole[:whole.index(word)]


# -- 3. a last user turn of only an image or a document -----------------------------------------------------------
SYSTEM = "Transcribe all text in the image, line by line."


def _anthropic_textless(client, block, stream):
    ask = dict(model="claude-sonnet-4-5", max_tokens=200, system=SYSTEM,
               messages=[{"role": "user", "content": [block]}])
    if stream:
        with client.messages.with_streaming_response.create(**ask, stream=True) as raw:
            events = list(raw.iter_lines())
            return raw.headers, "".join(json.loads(e[6:])["delta"].get("text", "") for e in events
                                        if e.startswith("data: ") and '"content_block_delta"' in e)
    raw = client.messages.with_raw_response.create(**ask)
    return raw.headers, raw.parse().content[0].text


def _chat_textless(client, stream):
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": [{"type": "image_url",
                                              "image_url": {"url": "data:image/png;base64," + PNG}}]}]
    if stream:
        with client.chat.completions.with_streaming_response.create(model="m", messages=messages,
                                                                    stream=True) as raw:
            chunks = [json.loads(line[6:]) for line in raw.iter_lines()
                      if line.startswith("data: ") and line != "data: [DONE]"]
            return raw.headers, "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    raw = client.chat.completions.with_raw_response.create(model="m", messages=messages)
    return raw.headers, raw.parse().choices[0].message.content


def _responses_textless(client, stream):
    ask = dict(model="m", instructions=SYSTEM, store=False,
               input=[{"role": "user", "content": [{"type": "input_image",
                                                    "image_url": "data:image/png;base64," + PNG}]}])
    assert not stream
    raw = client.responses.with_raw_response.create(**ask)
    return raw.headers, raw.parse().output_text


TEXTLESS = {
    "messages image": lambda gw, stream: _anthropic_textless(anthropic_client(gw, "anthropic", "ocr"), IMAGE, stream),
    "messages document": lambda gw, stream: _anthropic_textless(anthropic_client(gw, "anthropic", "ocr"), DOCUMENT,
                                                                stream),
    "chat image": lambda gw, stream: _chat_textless(openai_client(gw, "anthropic", "ocr"), stream),
    "responses image": lambda gw, stream: _responses_textless(openai_client(gw, "anthropic", "ocr"), stream),
}


@pytest.mark.parametrize("route, stream", [("messages image", False), ("messages image", True),
                                           ("messages document", False), ("chat image", False),
                                           ("chat image", True), ("responses image", False)])
def test_a_last_user_turn_without_text_is_answered_by_a_tier_and_never_cached(cached_gateway, standin, route,
                                                                             stream):
    gw, cache = cached_gateway
    standin.log.clear()
    for _ in range(2):  # the same request twice: each answered by a tier (nothing to match on in the cache)
        headers, text = TEXTLESS[route](gw, stream)
        assert text
        assert headers["x-costline-cache-hit"] == "false"
        assert headers["x-costline-tier"] != "cache"
    assert len(standin.log.paid()) == 2
    assert cache.lookups == 0 and cache.entries == {}


# -- 4. request ids where the SDKs read them ----------------------------------------------------------------------
def _post(gw, path: str, body: bytes) -> tuple[int, dict[str, str], dict]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=20)
    conn.request("POST", path, body, {"content-type": "application/json"})
    resp = conn.getresponse()
    out = resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(resp.read())
    conn.close()
    return out


def _anthropic_answer(gw):
    raw = anthropic_client(gw, "anthropic", "ids").messages.with_raw_response.create(
        model="m", max_tokens=50, messages=[{"role": "user", "content": "Tell me a fun fact about owls."}])
    return raw.parse()._request_id, raw.headers, None


def _anthropic_stream(gw):
    with anthropic_client(gw, "anthropic", "ids").messages.stream(
            model="m", max_tokens=50, messages=[{"role": "user", "content": "Tell me a fun fact about otters."}]) as s:
        s.get_final_message()
        return s.request_id, s.response.headers, None


def _anthropic_error(gw):  # refused before any request id existed: a fresh one
    with pytest.raises(anthropic.BadRequestError) as err:
        anthropic_client(gw, "anthropic", "ids").messages.create(model="m", max_tokens=50, messages=[])
    return err.value.request_id, err.value.response.headers, err.value.body


def _anthropic_count(gw):
    raw = anthropic_client(gw, "anthropic", "ids").messages.with_raw_response.count_tokens(
        model="m", messages=[{"role": "user", "content": "How many tokens is this?"}])
    return raw.parse()._request_id, raw.headers, None


def _openai_answer(gw):
    raw = openai_client(gw, "anthropic", "ids").chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": "Tell me a fun fact about owls."}])
    return raw.parse()._request_id, raw.headers, None


def _openai_error(gw):
    with pytest.raises(openai.BadRequestError) as err:
        openai_client(gw, "anthropic", "ids").chat.completions.create(model="m", messages=[])
    return err.value.request_id, err.value.response.headers, None


def _responses_answer(gw):
    raw = openai_client(gw, "anthropic", "ids").responses.with_raw_response.create(
        model="m", input="Tell me a fun fact about owls.", store=False)
    return raw.parse()._request_id, raw.headers, None


def _malformed_json(gw):  # not JSON: refused before the body is read as a request
    status, headers, body = _post(gw, "/v1/messages", b"{not json")
    assert status == 400
    return headers["request-id"], headers, body


def _no_route(gw):
    status, headers, body = _post(gw, "/v1/chat/nothing-here", b"{}")
    assert status == 404
    return headers["x-request-id"], headers, None


@pytest.mark.parametrize("call", [_anthropic_answer, _anthropic_stream, _anthropic_error, _anthropic_count,
                                  _openai_answer, _openai_error, _responses_answer, _malformed_json, _no_route])
def test_every_answer_carries_its_request_id_where_the_sdks_read_it(serve, call):  # noqa: F811
    gw = serve()
    seen, headers, error_body = call(gw)
    assert seen  # what the SDK says (message._request_id, APIStatusError.request_id)
    assert headers["x-costline-request-id"] == headers["request-id"] == headers["x-request-id"] == seen
    if error_body is not None:  # an Anthropic error body names it too
        assert error_body["request_id"] == seen


def test_a_bedrock_answer_still_names_its_request_id(serve):  # noqa: F811
    """InvokeModel's own id header is the id its request span records, msg_costline_<request id> (botocore's
    aws.request_id: docs/telemetry.md, "Apps behind the gateway"); the SDK headers keep the request id."""
    gw = serve()
    body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50,
                       "messages": [{"role": "user", "content": "Tell me a fun fact about owls."}]}).encode()
    status, headers, _ = _post(gw, "/model/anthropic.claude-sonnet-4-5/invoke", body)
    assert status == 200
    assert headers["x-costline-request-id"] == headers["request-id"]
    assert headers["x-amzn-requestid"] == f"msg_costline_{headers['x-costline-request-id']}"
