"""The cache key's canonical form: requests that mean the same thing share one cache entry, and every distinction
that changes the answer is kept.

Until 2026-12-05 the scope hashed the raw values, so ``temperature: 1`` and ``1.0``, a temperature left at the API's
default and the same value sent, ``frequency_penalty: 0`` and none, stop sequences in another order, ``tools: []`` and
none, or a system prompt in NFC and in NFD were each another entry: a paid call for an answer the cache held. The
defaults are the APIs' documented ones (Anthropic: temperature "Defaults to 1.0"; OpenAI: temperature 1, top_p 1,
frequency_penalty and presence_penalty 0).

Table-driven unit tests of :func:`~costline.serving.cache.key.scope_of_body` and of the Chat Completions route's
scope, then the reviewer's misses through the real ``anthropic`` and ``openai`` SDKs (one gateway for the module).
"""

from __future__ import annotations

import dataclasses
import unicodedata
import uuid
from typing import Any

import anthropic
import openai
import pytest

pytest.importorskip("faiss")

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402

from costline.collectors import Recorder  # noqa: E402
from costline.config import Config  # noqa: E402
from costline.serving.cache.key import scope_of_body  # noqa: E402
from costline.serving.gateway.app import Gateway, read_messages_request  # noqa: E402
from costline.serving.gateway.openai_api import read_chat_request  # noqa: E402
from costline.serving.settings import BackendsConfig, CacheConfig, StandInConfig  # noqa: E402

Q = "How do I reset my password?"
BASE: dict[str, Any] = {"model": "claude-haiku-4-5", "max_tokens": 300, "messages": [{"role": "user", "content": Q}]}
FRENCH = "Tu es un assistant très poli, réponds en français."
NFC, NFD = unicodedata.normalize("NFC", FRENCH), unicodedata.normalize("NFD", FRENCH)
assert NFC != NFD  # the two spellings really differ as strings


def scope(**change: Any) -> str:
    return scope_of_body({**BASE, **change})


# -- one meaning, one scope -------------------------------------------------------------------------------
SAME = [
    ("temperature 1 vs 1.0", {"temperature": 1}, {"temperature": 1.0}),
    ("temperature 0 vs 0.0", {"temperature": 0}, {"temperature": 0.0}),
    ("temperature absent vs 1.0 (the default)", {}, {"temperature": 1.0}),
    ("temperature absent vs 1", {}, {"temperature": 1}),
    ("top_p absent vs 1", {}, {"top_p": 1}),
    ("frequency_penalty absent vs 0", {}, {"frequency_penalty": 0}),
    ("presence_penalty absent vs 0.0", {}, {"presence_penalty": 0.0}),
    ("temperature 0.5 in either spelling of its other params", {"temperature": 0.5},
     {"temperature": 0.5, "top_p": 1.0, "presence_penalty": 0}),
    ("stop_sequences order", {"stop_sequences": ["zzq", "qqz"]}, {"stop_sequences": ["qqz", "zzq"]}),
    ("stop_sequences repeated", {"stop_sequences": ["zzq"]}, {"stop_sequences": ["zzq", "zzq"]}),
    ("stop_sequences [] vs absent", {}, {"stop_sequences": []}),
    ("stop string vs one-item list", {"stop": "END"}, {"stop": ["END"]}),
    ("tools [] vs absent", {}, {"tools": []}),
    ("logit_bias {} vs absent", {}, {"logit_bias": {}}),
    ("system [] vs absent", {}, {"system": []}),
    ("system NFC vs NFD", {"system": NFC}, {"system": NFD}),
    ("system block NFC vs plain NFD", {"system": [{"type": "text", "text": NFC}]}, {"system": NFD}),
    ("earlier turn NFC vs NFD",
     {"messages": [{"role": "user", "content": NFC}, {"role": "assistant", "content": "Oui."},
                   {"role": "user", "content": Q}]},
     {"messages": [{"role": "user", "content": NFD}, {"role": "assistant", "content": "Oui."},
                   {"role": "user", "content": Q}]}),
    ("schema number 1 vs 1.0",
     {"output_format": {"type": "json_schema", "schema": {"type": "array", "minItems": 1}}},
     {"output_format": {"type": "json_schema", "schema": {"type": "array", "minItems": 1.0}}}),
]


@pytest.mark.parametrize("one, other", [(a, b) for _, a, b in SAME], ids=[n for n, _, _ in SAME])
def test_requests_that_mean_the_same_have_one_scope(one: dict[str, Any], other: dict[str, Any]) -> None:
    assert scope(**one) == scope(**other)


# -- every distinction that changes the answer is kept, however the rest is spelled ---------------------------
#: What a request may carry that means nothing (each at the API's default, or empty): added to one side of every
#: distinction below, the two still differ, and that side still has its own scope.
NOISE: dict[str, Any] = {"temperature": 1.0, "top_p": 1, "frequency_penalty": 0.0, "presence_penalty": 0,
                         "tools": [], "stop_sequences": [], "logit_bias": {}}


def noisy(body: dict[str, Any]) -> dict[str, Any]:
    return {**{k: v for k, v in NOISE.items() if k not in body}, **body}


IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
DISTINCT = [
    ("another system prompt", {"system": "Answer in English."}, {"system": "Answer only in French."}),
    ("another history",
     {"messages": [{"role": "user", "content": "I use the mobile app."}, {"role": "assistant", "content": "OK."},
                   {"role": "user", "content": Q}]},
     {"messages": [{"role": "user", "content": "I use the desktop site."}, {"role": "assistant", "content": "OK."},
                   {"role": "user", "content": Q}]}),
    ("another model", {}, {"model": "claude-opus-4-1"}),
    ("temperature 0 vs 1", {"temperature": 0}, {"temperature": 1}),
    ("temperature 0.0 vs absent", {"temperature": 0.0}, {}),
    ("temperature 1.2 vs absent", {"temperature": 1.2}, {}),
    ("top_p 0.9 vs absent", {"top_p": 0.9}, {}),
    ("top_k 5 vs 50", {"top_k": 5}, {"top_k": 50}),
    ("top_k 5 vs absent", {"top_k": 5}, {}),
    ("frequency_penalty 0.5 vs absent", {"frequency_penalty": 0.5}, {}),
    ("max_tokens 300 vs 8", {}, {"max_tokens": 8}),
    ("stop_sequences none vs one", {}, {"stop_sequences": ["password"]}),
    ("stop_sequences other sets", {"stop_sequences": ["a", "b"]}, {"stop_sequences": ["a", "c"]}),
    ("effort low vs high", {"output_config": {"effort": "low"}}, {"output_config": {"effort": "high"}}),
    ("effort low vs absent", {"output_config": {"effort": "low"}}, {}),
    ("structured output on vs off", {"output_format": {"type": "json_schema", "schema": {"type": "object"}}}, {}),
    ("prefill vs none", {"messages": [{"role": "user", "content": Q}, {"role": "assistant", "content": "Step 1:"}]},
     {}),
    ("image vs none", {"messages": [{"role": "user", "content": [IMAGE, {"type": "text", "text": Q}]}]}, {}),
    ("seed 1 vs 2", {"seed": 1}, {"seed": 2}),
    ("seed 2**60 vs 2**60 + 1 (no float rounding)", {"seed": 2 ** 60}, {"seed": 2 ** 60 + 1}),
    ("a tool vs none", {"tools": [{"name": "lookup_user", "input_schema": {"type": "object"}}]}, {}),
]


@pytest.mark.parametrize("one, other", [(a, b) for _, a, b in DISTINCT], ids=[n for n, _, _ in DISTINCT])
def test_what_changes_the_answer_keeps_another_scope_however_the_rest_is_spelled(one: dict[str, Any],
                                                                                other: dict[str, Any]) -> None:
    assert scope(**noisy(one)) == scope(**one)  # the noise means nothing...
    assert scope(**noisy(one)) != scope(**other)  # ...and the distinction stays
    assert scope(**one) != scope(**other)


# -- the Chat Completions route: its scope is the equivalent Messages request's -------------------------
SYS = {"role": "system", "content": "You are a support bot."}
CHAT: dict[str, Any] = {"model": "gpt-4o-mini", "max_tokens": 400, "messages": [SYS, {"role": "user", "content": Q}]}
CHAT_NOISE: dict[str, Any] = {"temperature": 1, "top_p": 1.0, "frequency_penalty": 0, "presence_penalty": 0.0}


def chat_scope(**change: Any) -> str:
    read = read_chat_request({**CHAT, **change})
    assert isinstance(read, tuple), read.body
    assert not read[1].expects_blocks  # a cached request (a tool request never is)
    return str(read[2])


def _schema(prop: str) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "s", "strict": True, "schema": {
        "type": "object", "properties": {prop: {"type": "string"}}, "required": [prop], "additionalProperties": False}}}


CHAT_SAME = [
    ("temperature 0 vs 0.0", {"temperature": 0}, {"temperature": 0.0}),
    ("frequency_penalty 0 vs absent", {"frequency_penalty": 0}, {}),
    ("temperature 1 vs absent", {"temperature": 1}, {}),
    ("stop order", {"stop": ["b", "a"]}, {"stop": ["a", "b"]}),
    # the reviewer's hits, each now also with the defaults spelled out on one side
    ("n=1", {"n": 1, **CHAT_NOISE}, {}),
    ("logprobs false", {"logprobs": False, **CHAT_NOISE}, {}),
    ("response_format text", {"response_format": {"type": "text"}, **CHAT_NOISE}, {}),
    ("stop string vs list", {"stop": "END", **CHAT_NOISE}, {"stop": ["END"]}),
    ("max_completion_tokens vs max_tokens", {"max_tokens": None, "max_completion_tokens": 400, **CHAT_NOISE}, {}),
    ("developer vs system role", {"messages": [{"role": "developer", "content": SYS["content"]},
                                              {"role": "user", "content": Q}], **CHAT_NOISE}, {}),
    ("another user", {"user": "alice", **CHAT_NOISE}, {"user": "bob"}),
]


@pytest.mark.parametrize("one, other", [(a, b) for _, a, b in CHAT_SAME], ids=[n for n, _, _ in CHAT_SAME])
def test_chat_requests_that_mean_the_same_have_one_scope(one: dict[str, Any], other: dict[str, Any]) -> None:
    assert chat_scope(**one) == chat_scope(**other)


CHAT_DISTINCT = [
    ("json_object", {"response_format": {"type": "json_object"}}, {}),
    ("json_schema A vs B", {"response_format": _schema("answer")}, {"response_format": _schema("steps")}),
    ("seed 1 vs 2", {"seed": 1}, {"seed": 2}),
    ("reasoning_effort low vs high", {"reasoning_effort": "low"}, {"reasoning_effort": "high"}),
    ("image_url vs none", {"messages": [SYS, {"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}, {"type": "text", "text": Q}]}]}, {}),
    ("another history", {"messages": [SYS, {"role": "user", "content": "I use Android."},
                                      {"role": "assistant", "content": "OK"}, {"role": "user", "content": Q}]},
     {"messages": [SYS, {"role": "user", "content": "I use iOS."}, {"role": "assistant", "content": "OK"},
                   {"role": "user", "content": Q}]}),
    ("temperature 1.2 vs absent", {"temperature": 1.2}, {}),
]


@pytest.mark.parametrize("one, other", [(a, b) for _, a, b in CHAT_DISTINCT], ids=[n for n, _, _ in CHAT_DISTINCT])
def test_chat_distinctions_stay_however_the_defaults_are_spelled(one: dict[str, Any], other: dict[str, Any]) -> None:
    spelled = {**{k: v for k, v in CHAT_NOISE.items() if k not in one}, **one}
    assert chat_scope(**spelled) == chat_scope(**one)
    assert chat_scope(**spelled) != chat_scope(**other)


def test_one_question_is_one_scope_whichever_api_asked_with_the_defaults_spelled_or_not() -> None:
    messages = read_messages_request({"model": "claude-haiku-4-5", "max_tokens": 400, "system": SYS["content"],
                                      "messages": [{"role": "user", "content": Q}]}, None)
    assert isinstance(messages, tuple)
    assert chat_scope(model="claude-haiku-4-5", temperature=1.0, frequency_penalty=0) == messages[2]


# -- the reviewer's misses through the real SDKs ----------------------------------------------------------
@pytest.fixture(scope="module")
def gateway_url():
    from costline.serving.cache.semantic import SemanticCache
    from costline.serving.embedding import Embedder
    from costline.serving.pipeline import Pipeline
    from costline.sim.standin import StandInServer

    standin = StandInServer(StandInConfig(latency_scale=0.0), port=0)
    standin.start()
    cfg = Config()
    serving = dataclasses.replace(cfg.serving, backends=BackendsConfig(
        anthropic_base_url=standin.url, student_base_url=standin.openai_url, max_retries=0))
    cache = SemanticCache(Embedder().load(), CacheConfig())
    pipeline = Pipeline.from_config(cfg.replace(serving=serving), recorder=Recorder(TracerProvider()), cache=cache,
                                    validator=None, env={})
    gw = Gateway(pipeline, port=0)
    gw.start()
    yield gw.url
    gw.shutdown()
    pipeline.close()
    standin.shutdown()


def _tenant() -> dict[str, str]:
    return {"x-costline-tenant": "t" + uuid.uuid4().hex[:10], "x-costline-task-type": "faq"}


ANTHROPIC_PAIRS = [
    ("temperature 1 vs 1.0", {"extra_body": {"temperature": 1}}, {"extra_body": {"temperature": 1.0}}),
    ("temperature absent vs 1.0", {}, {"extra_body": {"temperature": 1.0}}),
    ("stop_sequences order", {"stop_sequences": ["zzq", "qqz"]}, {"stop_sequences": ["qqz", "zzq"]}),
    ("tools [] vs absent", {"tools": []}, {}),
    ("system NFC vs NFD", {"system": NFC}, {"system": NFD}),
]


@pytest.mark.parametrize("first, then", [(a, b) for _, a, b in ANTHROPIC_PAIRS], ids=[n for n, _, _ in ANTHROPIC_PAIRS])
def test_the_same_request_spelled_another_way_is_a_hit_on_the_messages_api(gateway_url, first, then) -> None:
    client = anthropic.Anthropic(base_url=gateway_url, api_key="unused", max_retries=0, default_headers=_tenant())

    def ask(kw: dict[str, Any]) -> tuple[str, str]:
        raw = client.messages.with_raw_response.create(model="claude-haiku-4-5", max_tokens=300,
                                                       messages=[{"role": "user", "content": Q}], **kw)
        return raw.headers["x-costline-cache-hit"], raw.parse().content[0].text

    stored, text = ask(first)
    assert stored == "false"
    hit, again = ask(then)
    assert hit == "true" and again == text


OPENAI_PAIRS = [
    ("temperature 0 vs 0.0", {"temperature": 0}, {"temperature": 0.0}),
    ("frequency_penalty 0 vs absent", {"frequency_penalty": 0}, {}),
    ("temperature absent vs 1", {}, {"temperature": 1}),
]


@pytest.mark.parametrize("first, then", [(a, b) for _, a, b in OPENAI_PAIRS], ids=[n for n, _, _ in OPENAI_PAIRS])
def test_the_same_request_spelled_another_way_is_a_hit_on_chat_completions(gateway_url, first, then) -> None:
    client = openai.OpenAI(base_url=gateway_url + "/v1", api_key="unused", max_retries=0, default_headers=_tenant())

    def ask(kw: dict[str, Any]) -> str:
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", max_tokens=400,
                                                               messages=[SYS, {"role": "user", "content": Q}], **kw)
        return raw.headers["x-costline-cache-hit"]

    assert ask(first) == "false"
    assert ask(then) == "true"
