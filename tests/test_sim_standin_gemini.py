"""The stand-in's Gemini API (sim/standin_gemini.py): Google AI Studio's REST shape, as google-genai speaks it.

The first part drives the REST API with plain HTTP (``httpx``), so it runs wherever costline's tests do:
``usageMetadata`` (prompt with the cached tokens included, ``cachedContentTokenCount``, candidates,
``thoughtsTokenCount`` apart from the candidates, their total), ``responseId`` / ``modelVersion`` /
``finishReason``, streaming (``alt=sse``), Google's error shape, injected errors, countTokens, embeddings and
the served-call log the ingest tests price from.

The second part drives the real ``google-genai`` SDK (``genai.Client(http_options=HttpOptions(base_url=...))``),
installed by the ``compat`` extra (it pins ``tenacity < 9.2``); tests/test_ingest_gemini.py reads its spans.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from costline.serving.settings import StandInConfig
from costline.sim.standin import StandInServer
from costline.sim.standin_gemini import GEMINI, attach, thinks


SYSTEM = "You answer questions about our refund policy. " * 30  # long enough to be implicitly cached


@pytest.fixture
def standin():
    srv = StandInServer(StandInConfig(port=0, latency_scale=0.0, min_cache_tokens=100))
    srv.start()
    attach(srv)
    yield srv
    srv.shutdown()


def post(srv: StandInServer, path: str, body: object) -> httpx.Response:
    return httpx.post(srv.url + path, json=body, headers={"x-goog-api-key": "x"}, timeout=10)


def ask(text: str, system: str | None = None, **config: object) -> dict:
    body: dict = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    if config:
        body["generationConfig"] = config
    return body


# -- the REST API ------------------------------------------------------------------------------------------
def test_generate_content_reports_usage_ids_and_finish_reason_and_logs_it(standin):
    r = post(standin, "/v1beta/models/gemini-2.0-flash:generateContent", ask("Where is my parcel?"))
    assert r.status_code == 200
    body = r.json()
    cand = body["candidates"][0]
    assert cand["content"]["role"] == "model" and cand["content"]["parts"][0]["text"]
    assert cand["finishReason"] == "STOP" and cand["index"] == 0
    u = body["usageMetadata"]
    assert u["promptTokenCount"] > 0 and u["candidatesTokenCount"] > 0
    assert "thoughtsTokenCount" not in u and "cachedContentTokenCount" not in u  # not a thinking model, cold cache
    assert u["totalTokenCount"] == u["promptTokenCount"] + u["candidatesTokenCount"]
    assert body["modelVersion"] == "gemini-2.0-flash" and body["responseId"]
    [e] = standin.log.entries(GEMINI)
    assert (e.model, e.status, e.paid, e.input_tokens, e.output_tokens, e.cache_read_tokens) == (
        "gemini-2.0-flash", 200, True, u["promptTokenCount"], u["candidatesTokenCount"], 0)


def test_max_output_tokens_cuts_the_answer(standin):
    body = post(standin, "/v1beta/models/gemini-2.0-flash:generateContent",
                ask("Explain the refund policy", maxOutputTokens=3)).json()
    assert body["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert body["usageMetadata"]["candidatesTokenCount"] == 3


def test_a_repeated_long_prefix_is_implicitly_cached(standin):
    first = post(standin, "/v1beta/models/gemini-2.0-flash:generateContent", ask("Question 1?", SYSTEM)).json()
    second = post(standin, "/v1beta/models/gemini-2.0-flash:generateContent", ask("Question 2?", SYSTEM)).json()
    other = post(standin, "/v1beta/models/gemini-2.5-flash-lite:generateContent", ask("Question 3?", SYSTEM)).json()
    assert "cachedContentTokenCount" not in first["usageMetadata"]
    u = second["usageMetadata"]
    # the system instruction is the cached prefix: part of promptTokenCount, not added to it
    assert 100 <= u["cachedContentTokenCount"] < u["promptTokenCount"]
    assert u["cacheTokensDetails"] == [{"modality": "TEXT", "tokenCount": u["cachedContentTokenCount"]}]
    assert u["totalTokenCount"] == u["promptTokenCount"] + u["candidatesTokenCount"]
    assert "cachedContentTokenCount" not in other["usageMetadata"]  # another model's cache
    reads = [e.cache_read_tokens for e in standin.log.entries(GEMINI)]
    assert reads == [0, u["cachedContentTokenCount"], 0]


def test_a_thinking_model_reports_thoughts_apart_from_the_candidates(standin):
    assert thinks("gemini-2.5-flash") and thinks("gemini-2.0-flash-thinking-exp") and thinks("models/gemini-3-pro")
    assert not thinks("gemini-2.0-flash")
    body = post(standin, "/v1beta/models/gemini-2.5-flash:generateContent", ask("Think about refunds")).json()
    u = body["usageMetadata"]
    assert u["thoughtsTokenCount"] > 0
    assert u["totalTokenCount"] == u["promptTokenCount"] + u["candidatesTokenCount"] + u["thoughtsTokenCount"]
    assert [p.get("thought") for p in body["candidates"][0]["content"]["parts"]] == [None]  # not asked for
    # the log's output is what is billed as output: candidates + thoughts
    assert standin.log.entries(GEMINI)[-1].output_tokens == u["candidatesTokenCount"] + u["thoughtsTokenCount"]
    # includeThoughts returns the thought; a budget caps it; 0 turns thinking off (both spellings of the fields)
    shown = post(standin, "/v1beta/models/gemini-2.5-flash:generateContent",
                 ask("Think about refunds", thinkingConfig={"include_thoughts": True, "thinking_budget": 5})).json()
    parts = shown["candidates"][0]["content"]["parts"]
    assert parts[0]["thought"] is True and "thought" not in parts[1]
    assert shown["usageMetadata"]["thoughtsTokenCount"] == 5
    off = post(standin, "/v1beta/models/gemini-2.5-flash:generateContent",
               ask("Think about refunds", thinkingConfig={"thinkingBudget": 0})).json()
    assert "thoughtsTokenCount" not in off["usageMetadata"]


def test_stream_sends_sse_chunks_with_usage_and_the_finish_reason_last(standin):
    with httpx.stream("POST", standin.url + "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
                      json=ask("Stream the refund steps", SYSTEM), timeout=10) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        raw = "".join(r.iter_text())
    events = [json.loads(block[len("data: "):]) for block in raw.split("\r\n\r\n") if block]
    assert len(events) > 2
    assert len({e["responseId"] for e in events}) == 1 and {e["modelVersion"] for e in events} == {"gemini-2.5-flash"}
    text = "".join(p["text"] for e in events for p in e["candidates"][0]["content"]["parts"] if not p.get("thought"))
    last = events[-1]
    assert [e["candidates"][0].get("finishReason") for e in events] == [None] * (len(events) - 1) + ["STOP"]
    u = last["usageMetadata"]
    assert u["candidatesTokenCount"] > 0 and u["thoughtsTokenCount"] > 0
    assert all("candidatesTokenCount" not in e["usageMetadata"] for e in events[:-1])
    assert all(e["usageMetadata"]["promptTokenCount"] == u["promptTokenCount"] for e in events)
    e = standin.log.entries(GEMINI)[-1]
    assert (e.input_tokens, e.output_tokens) == (u["promptTokenCount"], u["candidatesTokenCount"] + u["thoughtsTokenCount"])
    # without alt=sse the chunks are one JSON array
    chunks = post(standin, "/v1beta/models/gemini-2.0-flash:streamGenerateContent", ask("Stream it")).json()
    assert isinstance(chunks, list) and chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) and text


def test_errors_are_googles_shape(standin):
    r = post(standin, "/v1beta/models/palm-2:generateContent", ask("hello"))
    assert r.status_code == 404 and r.json()["error"]["status"] == "NOT_FOUND" and r.json()["error"]["code"] == 404
    r = post(standin, "/v1beta/models/gemini-2.0-flash:generateContent", {"contents": []})
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
    r = post(standin, "/v1beta/models/gemini-2.0-flash:frobnicate", ask("hello"))
    assert r.status_code == 404 and r.json()["error"]["status"] == "NOT_FOUND"
    standin.gemini.inject_errors(429, 1)
    standin.gemini.inject_errors(529, 1)  # Google has no 529: served as 503 UNAVAILABLE
    r1 = post(standin, "/v1beta/models/gemini-2.0-flash:generateContent", ask("hello"))
    r2 = post(standin, "/v1beta/models/gemini-2.0-flash:generateContent", ask("hello"))
    assert (r1.status_code, r1.json()["error"]["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert (r2.status_code, r2.json()["error"]["status"]) == (503, "UNAVAILABLE")
    assert r1.headers["retry-after"]
    assert post(standin, "/v1beta/models/gemini-2.0-flash:generateContent", ask("hello")).status_code == 200
    assert [(e.status, e.paid) for e in standin.log.entries(GEMINI)] == [
        (404, False), (400, False), (429, False), (503, False), (200, True)]


def test_injected_stream_error_ends_the_stream_with_an_error_chunk(standin):
    standin.gemini.inject_stream_errors(after_chunks=1)
    with httpx.stream("POST", standin.url + "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
                      json=ask("Stream the refund steps"), timeout=10) as r:
        raw = "".join(r.iter_text())
    events = [json.loads(block[len("data: "):]) for block in raw.split("\r\n\r\n") if block]
    assert "candidates" in events[0] and events[-1]["error"]["status"] == "INTERNAL" and len(events) == 2


def test_count_tokens_is_free_and_embeddings_count_their_input(standin):
    r = post(standin, "/v1beta/models/gemini-2.0-flash:countTokens", ask("How long is this question?"))
    assert r.json()["totalTokens"] > 0
    one = post(standin, "/v1beta/models/text-embedding-004:embedContent",
               {"content": {"parts": [{"text": "refund policy"}]}}).json()
    many = post(standin, "/v1beta/models/text-embedding-004:batchEmbedContents",
                {"requests": [{"model": "models/text-embedding-004", "content": {"parts": [{"text": t}]}}
                              for t in ("refund policy", "parcel")]}).json()
    assert len(one["embedding"]["values"]) == 8 and len(many["embeddings"]) == 2
    assert many["embeddings"][0]["values"] == one["embedding"]["values"]  # deterministic
    assert [(e.model, e.paid, e.output_tokens) for e in standin.log.entries(GEMINI)] == [
        ("text-embedding-004", True, 0), ("text-embedding-004", True, 0)]  # countTokens: not logged


# -- the real google-genai SDK --------------------------------------------------------------------------
@pytest.fixture
def client(standin):
    genai = pytest.importorskip("google.genai", reason="google-genai comes with `pip install 'costline[compat]'`")
    types = genai.types

    return genai.Client(api_key="x", http_options=types.HttpOptions(
        base_url=standin.url, retry_options=types.HttpRetryOptions(attempts=1)))


def test_sdk_generate_content_cached_prefix_and_thoughts(standin, client):
    from google.genai import types

    cfg = types.GenerateContentConfig(system_instruction=SYSTEM, max_output_tokens=64)
    first = client.models.generate_content(model="gemini-2.0-flash", contents="Where is my parcel?", config=cfg)
    second = client.models.generate_content(model="gemini-2.0-flash", contents="Where is it now?", config=cfg)
    assert first.text and first.response_id and first.model_version == "gemini-2.0-flash"
    assert first.candidates[0].finish_reason == types.FinishReason.STOP
    assert first.usage_metadata.cached_content_token_count is None
    u = second.usage_metadata
    assert 0 < u.cached_content_token_count < u.prompt_token_count
    think = client.models.generate_content(
        model="gemini-2.5-flash", contents="Think about refunds",
        config=types.GenerateContentConfig(thinking_config=types.ThinkingConfig(include_thoughts=True)))
    t = think.usage_metadata
    assert t.thoughts_token_count > 0
    assert t.total_token_count == t.prompt_token_count + t.candidates_token_count + t.thoughts_token_count
    assert [bool(p.thought) for p in think.candidates[0].content.parts] == [True, False]
    served = standin.log.paid(GEMINI)
    assert [(e.input_tokens, e.cache_read_tokens, e.output_tokens) for e in served] == [
        (r.usage_metadata.prompt_token_count, r.usage_metadata.cached_content_token_count or 0,
         r.usage_metadata.candidates_token_count + (r.usage_metadata.thoughts_token_count or 0))
        for r in (first, second, think)]


def test_sdk_streams_sync_and_async(standin, client):
    chunks = list(client.models.generate_content_stream(model="gemini-2.5-flash", contents="Stream the steps"))
    assert len(chunks) > 1 and "".join(c.text or "" for c in chunks)
    last = chunks[-1].usage_metadata
    assert last.candidates_token_count > 0 and last.thoughts_token_count > 0

    async def run():
        got = [c async for c in await client.aio.models.generate_content_stream(
            model="gemini-2.0-flash", contents="Stream async")]
        return got, await client.aio.models.generate_content(model="gemini-2.0-flash", contents="Async")

    streamed, plain = asyncio.run(run())
    assert streamed[-1].usage_metadata.candidates_token_count > 0 and plain.text
    assert [e.output_tokens for e in standin.log.paid(GEMINI)] == [
        last.candidates_token_count + last.thoughts_token_count,
        streamed[-1].usage_metadata.candidates_token_count, plain.usage_metadata.candidates_token_count]


def test_sdk_raises_googles_errors(standin, client):
    from google.genai import errors

    standin.gemini.inject_errors(429, 1)
    with pytest.raises(errors.ClientError) as exc:
        client.models.generate_content(model="gemini-2.0-flash", contents="hello")
    assert (exc.value.code, exc.value.status) == (429, "RESOURCE_EXHAUSTED")
    with pytest.raises(errors.ClientError) as exc:
        client.models.generate_content(model="palm-2", contents="hello")
    assert (exc.value.code, exc.value.status) == (404, "NOT_FOUND")
    standin.gemini.inject_errors(500, 1)
    with pytest.raises(errors.ServerError):
        client.models.generate_content(model="gemini-2.0-flash", contents="hello")
    standin.gemini.inject_stream_errors(after_chunks=1)
    with pytest.raises(errors.APIError):
        for _ in client.models.generate_content_stream(model="gemini-2.0-flash", contents="Stream then fail"):
            pass
    assert not standin.log.paid(GEMINI)[:-1]  # only the broken stream was served (and is logged as paid)


def test_sdk_count_tokens_and_embeddings(standin, client):
    assert client.models.count_tokens(model="gemini-2.0-flash", contents="how many tokens").total_tokens > 0
    e = client.models.embed_content(model="text-embedding-004", contents=["refund policy", "parcel tracking"])
    assert len(e.embeddings) == 2 and len(e.embeddings[0].values) == 8
