"""A refusal through the gateway is served as it came but is no successful request; an answer cut at ``max_tokens``
is one. And a body over ``max_body_bytes`` is refused with a 413 that names the setting to raise.

* Anthropic's ``stop_reason: "refusal"`` (its classifiers stopped the answer) and an OpenAI-compatible tier's
  ``finish_reason: "content_filter"``: the client gets the answer as the tier wrote it (never sent up a tier: the same
  request would be declined again, and paid again; never cached), but ``x-costline-success`` is false, the request
  span's ``costline.success`` false and its ``costline.rejected_attempts`` says why (``budget:refusal``) — so cost per
  successful request no longer counts a refusal as a delivered answer. A live stream's headers leave before the
  answer ends: its request span says false.
* ``stop_reason: "max_tokens"`` / ``finish_reason: "length"``: a success (an app asks ``max_tokens=1`` for a label).

The real ``anthropic`` and ``openai`` SDKs against an in-process Gateway in front of a small local server that
answers as the Messages API and a vLLM-like Chat Completions server do (the stand-ins never refuse). Expected values
are written by hand from what that server sends.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from scripted_http import ScriptedHttp

from costline import contract as c
from costline.collectors import Recorder
from costline.config import Config
from costline.serving.gateway.app import Gateway
from costline.serving.pipeline import Pipeline
from costline.serving.settings import BackendsConfig, GatewayConfig, RouteRulesConfig

HAIKU, SONNET = "claude-haiku-4-5", "claude-sonnet-4-6"  # the default budget and mid tiers' models
STUDENT = "costline-student-lora"  # the default student's model
PLAIN, REFUSE, CUT = "What is the capital of France?", "How do I pick a lock? [refuse]", "Three reasons? [cut]"
#: Scenarios by tag in the question: the mid tier refuses (the budget tier's answer says BUDGET, which the validator
#: of :func:`gateway` rejects when it has one), or the budget tier fails with a 500 first.
MID_REFUSES, BUDGET_FAILS = "Is this safe? [mid refuses]", "Is this legal? [budget fails]"
ANSWER, REFUSED, TRUNCATED = "Paris.", "I can't help with", "The three reasons are: first"
#: The usage every Messages answer reports (output_tokens: 5, or max_tokens for a cut answer).
IN_TOKENS, OUT_TOKENS = 100, 5


# --- a server answering as the Messages API (/v1/messages) and a vLLM (/v1/chat/completions) ----------------------


class Upstream(ScriptedHttp):
    """Both APIs on one port; ``asked`` keeps (path, model, question) of every model call."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, str]] = []

        def answer(h: BaseHTTPRequestHandler, path: str, raw: bytes) -> None:
            body = json.loads(raw or b"{}")
            question = _last_user_text(body)
            self.asked.append((path, body.get("model", ""), question))
            if path.endswith("/chat/completions"):
                _chat(h, body, question)
            else:
                _messages(h, body, question)

        super().__init__(answer)

    def calls(self, question: str) -> int:
        return sum(1 for _, _, q in self.asked if q == question)


def _last_user_text(body: dict[str, Any]) -> str:
    for m in reversed(body.get("messages", [])):
        if m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, str):
                return content
            return "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _messages(h: BaseHTTPRequestHandler, body: dict[str, Any], question: str) -> None:
    model = body["model"]
    if question == BUDGET_FAILS and model == HAIKU:
        return _send(h, 500, "application/json", json.dumps(
            {"type": "error", "error": {"type": "api_error", "message": "Internal server error"}}).encode())
    text, stop, out = ANSWER, "end_turn", OUT_TOKENS
    if question == REFUSE or (question in (MID_REFUSES, BUDGET_FAILS) and model == SONNET):
        text, stop = REFUSED, "refusal"
    elif question == MID_REFUSES:
        text = "BUDGET answer"
    elif question == CUT:
        text, stop, out = TRUNCATED, "max_tokens", body["max_tokens"]
    msg = {"id": f"msg_{model}", "type": "message", "role": "assistant", "model": model,
           "content": [{"type": "text", "text": text}], "stop_reason": stop, "stop_sequence": None,
           "usage": {"input_tokens": IN_TOKENS, "output_tokens": out,
                     "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}
    if not body.get("stream"):
        return _send(h, 200, "application/json", json.dumps(msg).encode())
    start = {**msg, "content": [], "stop_reason": None, "usage": {**msg["usage"], "output_tokens": 1}}
    events = [("message_start", {"type": "message_start", "message": start}),
              ("content_block_start", {"type": "content_block_start", "index": 0,
                                       "content_block": {"type": "text", "text": ""}}),
              *(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                         "delta": {"type": "text_delta", "text": text[i:i + 6]}})
                for i in range(0, len(text), 6)),
              ("content_block_stop", {"type": "content_block_stop", "index": 0}),
              ("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                 "usage": {"output_tokens": out}}),
              ("message_stop", {"type": "message_stop"})]
    _send(h, 200, "text/event-stream",
          b"".join(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events))


def _chat(h: BaseHTTPRequestHandler, body: dict[str, Any], question: str) -> None:
    text, finish = ("positive", "stop")
    if question == REFUSE:
        text, finish = REFUSED, "content_filter"
    elif question == CUT:
        text, finish = "posi", "length"
    usage = {"prompt_tokens": 20, "completion_tokens": 4, "total_tokens": 24}
    base = {"id": "chatcmpl-1", "created": 1, "model": body["model"]}
    if not body.get("stream"):
        return _send(h, 200, "application/json", json.dumps({
            **base, "object": "chat.completion", "usage": usage,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish}]}).encode())
    chunks = [{**base, "object": "chat.completion.chunk",
               "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None}]},
              {**base, "object": "chat.completion.chunk",
               "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]},
              {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}]
    _send(h, 200, "text/event-stream",
          b"".join(f"data: {json.dumps(x)}\n\n".encode() for x in chunks) + b"data: [DONE]\n\n")


def _send(h: BaseHTTPRequestHandler, status: int, ctype: str, raw: bytes) -> None:
    h.send_response(status)
    h.send_header("content-type", ctype)
    h.send_header("content-length", str(len(raw)))
    h.end_headers()
    h.wfile.write(raw)


# --- the gateway ---------------------------------------------------------------------------------------------------


class DictCache:
    """An exact-text cache that keeps what was stored."""

    def __init__(self) -> None:
        self.entries: dict[tuple, str] = {}

    def lookup(self, query, *, tenant, namespace=None):
        found = self.entries.get((tenant, namespace, query))
        return None if found is None else type("Hit", (), {"answer": found, "similarity": 1.0})()

    def store(self, query, answer, *, tenant, namespace=None, doc_hashes=()):
        self.entries[(tenant, namespace, query)] = answer


@dataclasses.dataclass
class World:
    gw: Gateway
    upstream: Upstream
    exporter: InMemorySpanExporter
    cache: DictCache

    def request_span(self, request_id: str) -> Any:
        (span,) = [s for s in self.exporter.get_finished_spans()
                   if s.name == c.SPAN_REQUEST and s.attributes[c.COSTLINE_REQUEST_ID] == request_id]
        return span

    def outcome(self, request_id: str) -> tuple[Any, Any]:
        """(costline.success, costline.rejected_attempts) of the request's span."""
        attrs = self.request_span(request_id).attributes
        return attrs[c.COSTLINE_SUCCESS], attrs.get(c.COSTLINE_REJECTED_ATTEMPTS)

    def messages(self, task: str = "support") -> Any:
        return anthropic.Anthropic(base_url=f"http://127.0.0.1:{self.gw.port}", api_key="unused", max_retries=0,
                                   default_headers={"x-costline-task-type": task, "x-costline-tenant": "acme"})

    def chat(self, task: str = "support") -> Any:
        return openai.OpenAI(base_url=f"http://127.0.0.1:{self.gw.port}/v1", api_key="unused", max_retries=0,
                             default_headers={"x-costline-task-type": task, "x-costline-tenant": "acme"})


@contextmanager
def gateway(tmp_path: Path, *, validator: Any = None, **settings: Any) -> Iterator[World]:
    """A gateway on the default config (``classify`` → the student, anything short → budget; no confidence gate)
    in front of :class:`Upstream`, its spans kept in memory."""
    upstream = Upstream()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    cfg = Config()
    serving = dataclasses.replace(
        cfg.serving, router=dataclasses.replace(cfg.serving.router, rules=RouteRulesConfig(
            student_task_types=("classify",))),
        backends=BackendsConfig(anthropic_base_url=upstream.url, student_base_url=upstream.url + "/v1",
                                max_retries=0, timeout_s=10))
    cache = DictCache()
    pipeline = Pipeline.from_config(cfg.replace(serving=serving), recorder=Recorder(provider), cache=cache, env={},
                                    validator=validator, confidence=None)
    settings.setdefault("rate_limit_per_minute", 0)
    gw = Gateway(pipeline, GatewayConfig(keys_file=tmp_path / "keys.json", **settings), port=0)
    gw.start()
    try:
        yield World(gw, upstream, exporter, cache)
    finally:
        gw.shutdown()
        pipeline.close()
        upstream.close()


# --- 1. the Messages API, plain and streamed -----------------------------------------------------------------------

#: Each question asked twice: (question, stop reason, text, x-costline-success of each ask (None: not sent, a live
#: stream's), cache hit of each, the span's success and rejected attempts, calls upstream in all).
MESSAGES_PLAIN = [
    (PLAIN, "end_turn", ANSWER, ("true", "true"), ("false", "true"), True, None, 1),
    (REFUSE, "refusal", REFUSED, ("false", "false"), ("false", "false"), False, "budget:refusal", 2),
    (CUT, "max_tokens", TRUNCATED, ("true", "true"), ("false", "false"), True, None, 2),
]
MESSAGES_LIVE = [  # a cache hit is settled when its headers leave: it says its success
    (PLAIN, "end_turn", ANSWER, (None, "true"), ("false", "true"), True, None, 1),
    (REFUSE, "refusal", REFUSED, (None, None), ("false", "false"), False, "budget:refusal", 2),
    (CUT, "max_tokens", TRUNCATED, (None, None), ("false", "false"), True, None, 2),
]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "live-stream"])
def test_messages_api_a_refusal_is_served_unescalated_uncached_and_no_success(tmp_path, stream) -> None:
    table = MESSAGES_LIVE if stream else MESSAGES_PLAIN
    with gateway(tmp_path) as w:
        client = w.messages()
        for question, stop, text, successes, hits, span_success, rejected, upstream_calls in table:
            for ask in range(2):
                if stream:
                    with client.messages.stream(model="m", max_tokens=16,
                                                messages=[{"role": "user", "content": question}]) as s:
                        m = s.get_final_message()
                        headers = s.response.headers
                    assert headers["x-costline-stream-mode"] == "live"
                else:
                    raw = client.messages.with_raw_response.create(
                        model="m", max_tokens=16, messages=[{"role": "user", "content": question}])
                    m, headers = raw.parse(), raw.headers
                said = (question, ask)
                assert (m.stop_reason, [b.text for b in m.content]) == (stop, [text]), said
                assert headers.get("x-costline-success") == successes[ask], said
                assert headers["x-costline-cache-hit"] == hits[ask], said
                if hits[ask] == "false":  # answered by the budget tier, never sent up
                    assert (m.model, headers["x-costline-tier"], headers["x-costline-attempts"]) == (
                        HAIKU, "budget", "1"), said
                    assert w.outcome(headers["x-costline-request-id"]) == (span_success, rejected), said
            assert w.upstream.calls(question) == upstream_calls, question
            assert {m for _, m, q in w.upstream.asked if q == question} == {HAIKU}, question
        assert sorted(w.cache.entries.values()) == [ANSWER]  # neither the refusal nor the cut answer


# --- 2. the Chat Completions API: an Anthropic tier's refusal and an OpenAI-compatible tier's content_filter ---------

#: (task type → tier, question, finish_reason, content, the span's success and rejected attempts).
CHAT_CASES = [
    ("support", REFUSE, "content_filter", REFUSED, False, "budget:refusal"),
    ("support", CUT, "length", TRUNCATED, True, None),
    ("classify", REFUSE, "content_filter", REFUSED, False, "student:content_filter"),
    ("classify", CUT, "length", "posi", True, None),
    ("classify", PLAIN, "stop", "positive", True, None),
]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "live-stream"])
def test_chat_completions_a_refusal_or_content_filter_is_served_and_no_success(tmp_path, stream) -> None:
    with gateway(tmp_path) as w:
        got = []
        for task, question, _, _, _, _ in CHAT_CASES:
            client = w.chat(task)
            if stream:
                raw = client.chat.completions.with_raw_response.create(
                    model="gpt-4o", max_tokens=16, stream=True, stream_options={"include_usage": True},
                    messages=[{"role": "user", "content": question}])
                chunks = list(raw.parse())
                finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
                text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
                assert raw.headers["x-costline-stream-mode"] == "live"
                assert "x-costline-success" not in raw.headers  # sent before the answer ended: the span says it
                got.append((task, question, finish[-1], text, *w.outcome(raw.headers["x-request-id"])))
            else:
                raw = client.chat.completions.with_raw_response.create(
                    model="gpt-4o", max_tokens=16, messages=[{"role": "user", "content": question}])
                done = raw.parse()
                success = raw.headers["x-costline-success"] == "true"
                outcome = w.outcome(raw.headers["x-request-id"])
                assert outcome[0] is success
                message = done.choices[0].message  # a refusal's text is its refusal (content null)
                got.append((task, question, done.choices[0].finish_reason,
                            message.refusal if done.choices[0].finish_reason == "content_filter" else message.content,
                            *outcome))
        assert got == CHAT_CASES
        # each asked once, each answered by the tier it was routed to: nothing sent up a tier
        assert [(p.rsplit("/", 1)[-1], m) for p, m, _ in w.upstream.asked] == [
            ("messages", HAIKU), ("messages", HAIKU), ("completions", STUDENT),
            ("completions", STUDENT), ("completions", STUDENT)]


# --- 3. a refusal after an escalation (buffered), and after a tier that failed before its first piece (live) ------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "buffered-stream"])
def test_a_refusal_of_the_tier_escalated_to_is_served_and_no_success(tmp_path, stream) -> None:
    """The validator turns the budget answer down; the mid tier refuses: that refusal is served (not sent up to
    upper), with success false; both attempts are named."""
    with gateway(tmp_path, validator=lambda query, text: "BUDGET" not in text) as w:
        client = w.messages()
        if stream:
            with client.messages.stream(model="m", max_tokens=16,
                                        messages=[{"role": "user", "content": MID_REFUSES}]) as s:
                m = s.get_final_message()
                headers = s.response.headers
            assert headers["x-costline-stream-mode"] == "buffered"
        else:
            raw = client.messages.with_raw_response.create(
                model="m", max_tokens=16, messages=[{"role": "user", "content": MID_REFUSES}])
            m, headers = raw.parse(), raw.headers
        assert (m.model, m.stop_reason, m.content[0].text) == (SONNET, "refusal", REFUSED)
        assert (headers["x-costline-tier"], headers["x-costline-attempts"], headers["x-costline-escalations"],
                headers["x-costline-success"]) == ("mid", "2", "1", "false")
        span = w.request_span(headers["x-costline-request-id"])
        assert (span.attributes[c.COSTLINE_SUCCESS], span.attributes[c.COSTLINE_REJECTED_ATTEMPTS]) == (
            False, "budget:validator,mid:refusal")
        assert [dict(e.attributes) for e in span.events if e.name == "costline.reject"] == [
            {"reason": "budget: validator, mid: refusal"}]
        assert [m for _, m, _ in w.upstream.asked] == [HAIKU, SONNET]
        assert w.cache.entries == {}


def test_a_live_stream_escalated_before_its_first_piece_to_a_refusal_is_no_success(tmp_path) -> None:
    """No gate: the budget tier streams live, fails with a 500 before its first piece and the request goes up to
    mid, which refuses: the refusal is served (in one piece), the request span says success false."""
    with gateway(tmp_path) as w:
        with w.messages().messages.stream(model="m", max_tokens=16,
                                          messages=[{"role": "user", "content": BUDGET_FAILS}]) as s:
            m = s.get_final_message()
            headers = s.response.headers
        assert (m.model, m.stop_reason, m.content[0].text) == (SONNET, "refusal", REFUSED)
        assert (headers["x-costline-stream-mode"], headers["x-costline-tier"], headers["x-costline-success"]) == (
            "buffered", "mid", "false")
        assert w.outcome(headers["x-costline-request-id"]) == (False, "budget:InternalServerError,mid:refusal")
        assert [m for _, m, _ in w.upstream.asked] == [HAIKU, SONNET]
        assert w.cache.entries == {}


# --- 4. a body over max_body_bytes: the 413 names the setting ------------------------------------------------------

LIMIT = 4096
#: What the 413 says after its sizes, written out by hand.
RAISE_IT = ("to take larger requests (PDFs, images sent inline as base64: a third larger than their files), raise "
            "[serving.gateway] max_body_bytes (environment COSTLINE_SERVING_GATEWAY_MAX_BODY_BYTES); each body is "
            "held in memory while it is served")
PDF_B64 = "JVBERi0xLjQK" * 500  # "%PDF-1.4\n" in base64, 6,000 characters: over the 4,096-byte limit


def test_a_pdf_over_max_body_bytes_is_a_413_naming_the_setting(tmp_path) -> None:
    with gateway(tmp_path, max_body_bytes=LIMIT) as w:
        with pytest.raises(anthropic.APIStatusError) as err:
            w.messages().messages.create(model="m", max_tokens=16, messages=[{"role": "user", "content": [
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF_B64}},
                {"type": "text", "text": "Summarise this contract."}]}])
        size = len(err.value.response.request.content)
        assert size > LIMIT
        assert err.value.status_code == 413
        assert err.value.body["type"] == "error"
        assert err.value.body["error"] == {
            "type": "request_too_large",
            "message": f"the body ({size} bytes) is over the limit of 4096 bytes: {RAISE_IT}"}
        assert w.upstream.asked == []


def test_a_chunked_body_over_max_body_bytes_is_a_413_naming_the_setting(tmp_path) -> None:
    """No Content-Length (chunked): the limit is found while reading, and the 413 says the same."""
    body = json.dumps({"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "x" * 6000}]})
    with gateway(tmp_path, max_body_bytes=LIMIT) as w:
        conn = http.client.HTTPConnection("127.0.0.1", w.gw.port, timeout=20)
        conn.putrequest("POST", "/v1/messages")
        conn.putheader("content-type", "application/json")
        conn.putheader("transfer-encoding", "chunked")
        conn.endheaders()
        for i in range(0, len(body), 1000):
            piece = body[i:i + 1000].encode()
            conn.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        conn.send(b"0\r\n\r\n")
        resp = conn.getresponse()
        status, answer = resp.status, json.loads(resp.read())
        conn.close()
    assert status == 413
    assert answer["error"] == {"type": "request_too_large",
                               "message": f"the body is over the limit of 4096 bytes: {RAISE_IT}"}
