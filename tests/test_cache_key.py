"""The cache key: a cached answer only answers a request that would have produced it.

The issue's gateway scenario on the real gateway, real FAISS + MiniLM and the real anthropic SDK:
an answer cut off at ``max_tokens: 3`` is never stored, another system prompt / earlier turns /
tools / generation parameters never share an answer, and a question behind a long shared
prefix (longer than MiniLM's 256 word pieces) is never served another question's answer.
"""

from __future__ import annotations

import dataclasses

import anthropic
import pytest

pytest.importorskip("faiss")
pytest.importorskip("sentence_transformers")

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from costline.collectors import Recorder  # noqa: E402
from costline.config import Config  # noqa: E402
from costline.serving.backends import Prompt  # noqa: E402
from costline.serving.cache.semantic import SemanticCache  # noqa: E402
from costline.serving.cache.key import (COSTLINE_CACHE_REJECT_REASON, is_final, model_family, scope_of_body, scope_of_prompt,  # noqa: E402
                                        scoped_namespace, split_namespace)
from costline.serving.embedding import Embedder  # noqa: E402
from costline.serving.gateway.app import CACHE_MODEL, Gateway  # noqa: E402
from costline.serving.pipeline import Pipeline  # noqa: E402
from costline.serving.settings import BackendsConfig, CacheConfig, StandInConfig  # noqa: E402
from costline.sim.standin import StandInServer  # noqa: E402

Q = "How do I reset my password?"
BASE = {"model": "claude-haiku-4-5", "max_tokens": 300, "messages": [{"role": "user", "content": Q}]}


@pytest.mark.parametrize("change", [
    {"system": "You are a pirate. Answer in pirate speak."},
    {"messages": [{"role": "user", "content": "I use the mobile app."},
                  {"role": "assistant", "content": "Noted."}, {"role": "user", "content": Q}]},
    {"tools": [{"name": "lookup_user", "input_schema": {"type": "object"}}]},
    {"temperature": 0.5},  # (1.0 is the APIs' default: the same scope as none, tests/test_cache_key_normal.py)
    {"max_tokens": 3},
    {"stop_sequences": ["\n"]},
    {"output_format": {"type": "json_schema", "schema": {"type": "object"}}},
    {"model": "claude-opus-4-1"},
    {"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "x"}},
                                                {"type": "text", "text": Q}]}]},
])
def test_everything_but_the_last_user_turn_changes_the_scope(change) -> None:
    assert scope_of_body({**BASE, **change}) != scope_of_body(BASE)


@pytest.mark.parametrize("same", [
    {"model": "claude-haiku-4-5-20251001"},  # the same family, a dated snapshot
    {"messages": [{"role": "user", "content": "Some other question entirely?"}]},  # the semantic part
    {"messages": [{"role": "user", "content": [{"type": "text", "text": Q}]}]},
    {"metadata": {"user_id": "u1"}, "stream": True},  # do not change the answer
])
def test_what_does_not_change_the_answer_keeps_the_scope(same) -> None:
    assert scope_of_body({**BASE, **same}) == scope_of_body(BASE)


@pytest.mark.parametrize("one, other", [
    ({"output_config": {"effort": "low"}}, {"output_config": {"effort": "high"}}),
    ({"output_config": {"effort": "low"}}, {}),  # the tier's own default effort is another answer
    ({"output_config": {"effort": "medium", "format": {"type": "json_schema", "schema": {"type": "object"}}}},
     {"output_config": {"effort": "max", "format": {"type": "json_schema", "schema": {"type": "object"}}}}),
])
def test_the_reasoning_effort_changes_the_scope(one, other) -> None:
    """output_config.effort changes the answer: a "high" request is never answered with a "low" one's."""
    assert scope_of_body({**BASE, **one}) != scope_of_body({**BASE, **other})


def test_a_system_prompt_as_text_blocks_scopes_like_the_same_text() -> None:
    blocks = {**BASE, "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]}
    assert scope_of_body(blocks) == scope_of_body({**BASE, "system": "Be brief."})


@pytest.mark.parametrize("stop_reason, final", [
    ("end_turn", True), ("stop", True), ("stop_sequence", True),
    ("max_tokens", False), ("length", False), ("tool_use", False), ("tool_calls", False),
    ("refusal", False), ("content_filter", False), ("pause_turn", False), (None, False),
])
def test_only_a_natural_end_is_final(stop_reason, final) -> None:
    assert is_final(stop_reason) is final


@pytest.mark.parametrize("model, family", [
    ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
    ("us.anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4-5"),  # Bedrock's cross-region profile
    ("global.anthropic.claude-sonnet-4-6", "claude-sonnet-4-6"),
    ("claude-haiku-4-5@20251001", "claude-haiku-4-5"),  # Vertex AI's
    ("anthropic.claude-v2", "claude-v2"), ("anthropic.claude-v2:1", "claude-v2:1"),  # generations, not versions
    ("amazon.nova-pro-v1:0", "amazon.nova-pro-v1:0"), ("gpt-4o-2024-08-06", "gpt-4o-2024-08-06"),
])
def test_a_clouds_spelling_of_claude_is_its_model_family(model, family) -> None:
    assert model_family(model) == family


def test_names() -> None:
    assert model_family("claude-haiku-4-5-20251001") == "claude-haiku-4-5"
    assert split_namespace(scoped_namespace("billing", "ab12")) == ("billing", "ab12")
    assert scoped_namespace("billing", "") == "billing"
    assert scope_of_prompt(Prompt.of(Q, max_tokens=3)) != scope_of_prompt(Prompt.of(Q, max_tokens=300))


# -- the scenario through the gateway -------------------------------------------------------
@pytest.fixture(scope="module")
def embedder():
    return Embedder().load()


@pytest.fixture
def served(embedder, tmp_path):
    standin = StandInServer(StandInConfig(latency_scale=0.0), port=0)
    standin.start()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    cfg = Config()
    serving = dataclasses.replace(cfg.serving, backends=BackendsConfig(
        anthropic_base_url=standin.url, student_base_url=standin.openai_url, max_retries=0))
    cache = SemanticCache(embedder, CacheConfig(path=tmp_path / "cache"))
    pipeline = Pipeline.from_config(cfg.replace(serving=serving), recorder=Recorder(provider), cache=cache,
                                    validator=None, env={})
    gw = Gateway(pipeline, port=0)
    gw.start()
    app = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0,
                              default_headers={"x-costline-tenant": "acme", "x-costline-task-type": "faq"})
    app.exporter = exporter  # the pipeline's spans, for the reject reasons
    yield app, cache
    gw.shutdown()
    pipeline.close()
    standin.shutdown()


def ask(app, content, **kw):
    body = {"model": "claude-haiku-4-5", "max_tokens": 300, **kw}
    raw = app.messages.with_raw_response.create(messages=[{"role": "user", "content": content}], **body)
    return raw.parse(), raw.headers["x-costline-cache-hit"] == "true"


def test_an_answer_cut_off_at_max_tokens_is_never_stored_nor_served(served) -> None:
    app, cache = served
    short, hit = ask(app, Q, max_tokens=3)
    assert short.stop_reason == "max_tokens" and not hit
    assert len(cache) == 0  # not stored
    again, hit = ask(app, Q, max_tokens=3)
    assert not hit and again.model != CACHE_MODEL
    full, hit = ask(app, Q)
    assert not hit and full.stop_reason == "end_turn" and len(full.content[0].text) > len(short.content[0].text)
    repeat, hit = ask(app, Q)
    assert hit and repeat.content[0].text == full.content[0].text


def test_another_system_prompt_or_temperature_is_not_served_the_answer(served) -> None:
    app, cache = served
    ask(app, Q)
    assert ask(app, Q)[1]
    assert not ask(app, Q, system="Answer only in French.")[1]
    assert not ask(app, Q, extra_body={"temperature": 0.9})[1]
    assert not ask(app, Q, extra_body={"stop_sequences": ["###"]})[1]
    assert ask(app, Q, system="Answer only in French.")[1]  # its own answer, under its own scope


def test_a_different_question_behind_a_long_shared_prefix_is_a_miss(served, embedder) -> None:
    app, cache = served
    prefix = ("Here is our full account history and the terms we agreed to. " * 40).strip()
    first = prefix + "\n\nQuestion: how do I cancel my subscription?"
    second = prefix + "\n\nQuestion: how do I add a new user to my team?"
    assert not embedder.fits(first)  # longer than MiniLM's window
    ask(app, first)
    app.exporter.clear()
    assert not ask(app, second)[1]  # the head windows are identical, the tails differ
    (lookup,) = [s for s in app.exporter.get_finished_spans() if s.name == "costline.cache.lookup"]
    assert lookup.attributes[COSTLINE_CACHE_REJECT_REASON] == "long_query"  # said on the pipeline's span
    assert ask(app, first)[1]  # an exact repeat of a long question is still served


def test_a_long_query_embeds_its_tail(embedder) -> None:
    prefix = "We have used your product for years and like it a lot. " * 40
    a, b = embedder.encode([prefix + "How do I cancel?", prefix + "Where is the invoice for March?"])
    assert float(a @ b) < 0.999  # truncation to the head would make them identical


def test_a_lone_surrogate_in_the_system_prompt_or_the_question_is_served_and_cached(served) -> None:
    """JSON's "\\ud800" escape decodes to a lone surrogate (the anthropic SDK refuses to send one; a raw HTTP client
    does): hashing the scope raised UnicodeEncodeError (a 500 for the request) and the embedder refused the
    question. Both are read now, and the repeat is a hit."""
    import http.client
    import json
    from urllib.parse import urlsplit

    app, cache = served
    url = urlsplit(str(app.base_url))

    def raw_ask(system: str) -> tuple[int, str, bool]:
        body = {"model": "claude-haiku-4-5", "max_tokens": 300, "system": system,
                "messages": [{"role": "user", "content": "How do I reset my password \udc00?"}]}
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        try:
            conn.request("POST", "/v1/messages", json.dumps(body).encode(),  # ensure_ascii: "\\udc00" on the wire
                         {"content-type": "application/json", "x-costline-tenant": "acme",
                          "x-costline-task-type": "faq"})
            resp = conn.getresponse()
            out = json.loads(resp.read())
            return resp.status, json.dumps(out.get("content")), resp.getheader("x-costline-cache-hit") == "true"
        finally:
            conn.close()

    status, first, hit = raw_ask("Answer briefly \ud800.")
    assert status == 200 and not hit
    status, again, hit = raw_ask("Answer briefly \ud800.")
    assert status == 200 and hit and again == first
    assert not raw_ask("Answer briefly.")[2]  # another system prompt: another scope
