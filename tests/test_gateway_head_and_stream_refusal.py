"""Two open-world gaps of the gateway's HTTP front, each driven through a real running gateway.

* ``HEAD`` on a GET route is answered as the GET (RFC 9110 §9.3.2: same status and headers, ``content-length`` the
  GET body's, no body bytes on the wire), with the GET's key, tenant and rate-limit checks: load balancers and uptime
  checkers send HEAD. Before: every GET route of the gateway's own router answered HEAD with a 404 (only Starlette's
  ``/healthz`` and ``/readyz`` took it). A GET route that streams its answer (a batch's results) closes the stream
  unread. A wrong method is a 405 with ``Allow`` (tests/test_http_method_not_allowed.py), HEAD included.
* A live Responses stream whose model streamed text and then said ``stop_reason: "refusal"`` ends, in
  ``response.completed`` and the stored response, with the message the unstreamed answer has — one ``refusal`` part
  holding the text — so the OpenAI Agents SDK's ``Runner.run_streamed`` raises ``ModelRefusalError`` as
  ``Runner.run`` does, and the ``openai`` SDK's stream helper's final response has no ``output_text``. The text went
  out live as ``output_text`` deltas once (a delta cannot be taken back); its part is closed by
  ``response.refusal.done`` with the text, no ``response.refusal.delta`` repeats it. Before: an ``output_text`` part
  with the text and an empty ``refusal`` part, which the Agents SDK returned as the run's final output.

Raw sockets read what goes on the wire; expected values are written by hand (the refusal scenario's text is the
scripted upstream's of ``test_gateway_refusals``).
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import openai
import pytest

from gateways import StreamedLines, exchange, gateway_starter
from test_gateway_refusals import HAIKU, REFUSE, REFUSED, gateway

from costline.netsec import Limits
from costline.serving.gateway._http import HttpResponse, Route
from costline.serving.gateway.asgi import AsgiServer
from costline.serving.gateway.auth import KeyStore


# --- HEAD ----------------------------------------------------------------------------------------------------------

def _same_as_get(port: int, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """HEAD ``path`` answers GET's status and headers with no body byte; the GET's status and body."""
    status, got, body = exchange(port, "GET", path, headers)
    head_status, head_headers, head_body = exchange(port, "HEAD", path, headers)
    assert (head_status, head_body) == (status, b""), (path, head_status, head_body[:200])
    assert head_headers == got, path
    assert got.get("content-length") == str(len(body)), path
    return status, body


@pytest.fixture
def keyed(pipeline, tmp_path):
    """A gateway that requires keys, and a key of tenants ``acme`` and ``other``."""
    keys = KeyStore(tmp_path / "keys.json")
    (_, acme), (_, other) = keys.add("acme"), keys.add("other")
    with gateway_starter(pipeline, tmp_path / "keys.json") as start:
        yield start, {"x-api-key": acme}, {"x-api-key": other}


def _post(port: int, path: str, doc: dict[str, Any], key: dict[str, str]) -> dict[str, Any]:
    status, _, body = exchange(port, "POST", path, key, json.dumps(doc).encode())
    assert status == 200, body
    return json.loads(body)


def test_head_on_every_get_route_answers_as_get_without_a_body(keyed) -> None:
    start, acme, _ = keyed
    gw = start()
    port = gw.port
    stored = _post(port, "/v1/responses", {"model": "gpt-4o", "input": "How do I reset my password?"}, acme)["id"]
    conversation = _post(port, "/v1/conversations", {"items": []}, acme)["id"]
    routes = ["/v1/models", "/v1/models/claude-haiku-4-5", "/v1/models/no-such-tier",
              f"/v1/responses/{stored}", f"/v1/responses/{stored}/input_items?limit=5",
              f"/v1/conversations/{conversation}", f"/v1/conversations/{conversation}/items",
              "/v1/messages/batches", "/v1/batches", "/v1/files"]
    for path in routes:
        status, body = _same_as_get(port, path, acme)
        assert status == 200 and json.loads(body), (path, body)  # a real answer, not an error's
    # the same checks as GET: another tenant's stored response is not found, a request with no key is refused
    assert _same_as_get(port, f"/v1/responses/{stored}", keyed[2])[0] == 404
    for path in routes:
        status, body = _same_as_get(port, path, {})
        assert status == 401 and b"API key" in body, (path, body)
    # a POST-only route answers HEAD as it answers a GET: a 405 naming the method (RFC 9110 §15.5.6), HEAD's bodiless
    (status, _, body), (head_status, _, head_body) = (exchange(port, m, "/v1/messages", acme) for m in ("GET", "HEAD"))
    assert (status, head_status, head_body) == (405, 405, b"") and b"GET is not allowed on /v1/messages" in body


def test_head_is_charged_to_the_rate_limit_once_as_get_is(keyed) -> None:
    """A burst of 2: two HEADs are answered (a HEAD charged twice would refuse the second), the third request is
    refused 429 with retry-after, a HEAD as a GET."""
    start, acme, _ = keyed
    gw = start(rate_limit_per_minute=1, rate_limit_burst=2)
    assert [exchange(gw.port, "HEAD", "/v1/models", acme)[0] for _ in range(2)] == [200, 200]
    for method in ("HEAD", "GET"):
        status, headers, body = exchange(gw.port, method, "/v1/models", acme)
        assert status == 429 and "retry-after" in headers, (method, headers)
        assert (body == b"") is (method == "HEAD")


def test_head_on_a_streamed_get_sends_its_head_and_never_runs_the_stream() -> None:
    """A streamed GET (a batch's results, JSONL) is chunked; its HEAD has the same head (``transfer-encoding:
    chunked``, no length), no bytes after it — not even the last chunk's ``0`` — and the stream is closed unread
    with its slot freed; the connection then serves the next request."""
    made: list[StreamedLines] = []

    def results(_req: Any) -> HttpResponse:
        made.append(StreamedLines())
        return HttpResponse(200, stream=made[-1], content_type="application/x-jsonl", headers={"x-kind": "results"})

    def error(status: int, message: str) -> HttpResponse:
        return HttpResponse(status, {"error": message})

    server = AsgiServer([Route("GET", "/results", results)], host="127.0.0.1", port=0,
                        not_found=lambda req: error(404, "no route"), on_error=lambda req, exc: error(500, "failed"),
                        reject=lambda r, path: error(r.status, r.message), busy=lambda path: error(529, "busy"),
                        bad_request=lambda message: message.encode(),
                        limits=Limits(max_body_bytes=1024, max_workers=2, max_pending=2, idle_timeout_s=5.0))
    server.start()
    try:
        status, got, body = exchange(server.port, "GET", "/results")
        assert (status, body) == (200, b'c\r\n{"line": 1}\n\r\nc\r\n{"line": 2}\n\r\n0\r\n\r\n')
        assert got["transfer-encoding"] == "chunked" and "content-length" not in got
        status, head, body = exchange(server.port, "HEAD", "/results")
        assert (status, head, body) == (200, got, b"")
        assert made[-1].closed.wait(10) and made[-1].read == 0
        assert server.in_flight == 0
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:  # keep-alive: framed right
            sock.sendall(b"HEAD /results HTTP/1.1\r\nhost: x\r\n\r\nGET /nowhere HTTP/1.1\r\nhost: x\r\n"
                         b"connection: close\r\n\r\n")
            raw = b""
            while chunk := sock.recv(65536):
                raw += chunk
        first, _, after = raw.partition(b"\r\n\r\n")
        assert first.startswith(b"HTTP/1.1 200") and after.startswith(b"HTTP/1.1 404"), raw
    finally:
        server.shutdown()


# --- a live Responses stream that ends in a refusal -----------------------------------------------------------------

#: What the non-streamed answer's message holds, and what a streamed one now ends with.
REFUSAL_CONTENT = [{"type": "refusal", "refusal": REFUSED}]


def test_a_live_refusal_completes_as_the_unstreamed_refusal(tmp_path) -> None:
    with gateway(tmp_path) as w:
        client = w.chat()
        raw = client.responses.with_raw_response.create(model="gpt-4o", input=REFUSE, stream=True)
        events = list(raw.parse())
        assert raw.headers["x-costline-stream-mode"] == "live"
        # sent live once as output_text (the upstream's 6-character pieces), never as a refusal delta
        assert [e.delta for e in events if e.type == "response.output_text.delta"] == ["I can'", "t help", " with"]
        assert [e.type for e in events if e.type.startswith("response.refusal")] == ["response.refusal.done"]
        assert [e.refusal for e in events if e.type == "response.refusal.done"] == [REFUSED]
        parts = [(e.type, e.content_index, e.part.type) for e in events if e.type.startswith("response.content_part")]
        assert parts == [("response.content_part.added", 0, "output_text"),  # one part, opened as the text went out,
                         ("response.content_part.done", 0, "refusal")]  # closed as the refusal
        (item,) = [e.item for e in events if e.type == "response.output_item.done"]
        assert [c.model_dump() for c in item.content] == REFUSAL_CONTENT
        final = events[-1]
        assert final.type == "response.completed" and final.response.status == "completed"
        assert [c.model_dump() for c in final.response.output[0].content] == REFUSAL_CONTENT
        assert final.response.output_text == ""
        # stored as returned: read back the same
        assert client.responses.retrieve(final.response.id).model_dump() == final.response.model_dump()
        # the SDK's stream helper ends on the same response
        with client.responses.stream(model="gpt-4o", input=REFUSE, store=False) as stream:
            done = stream.get_final_response()
        assert [c.model_dump() for c in done.output[0].content] == REFUSAL_CONTENT and done.output_text == ""
        # as the unstreamed answer is
        plain = client.responses.create(model="gpt-4o", input=REFUSE, store=False)
        assert [c.model_dump() for c in plain.output[0].content] == REFUSAL_CONTENT
        assert [m for _, m, _ in w.upstream.asked] == [HAIKU] * 3  # never sent up a tier
        assert w.cache.entries == {}


def test_the_agents_sdk_raises_model_refusal_streamed_as_unstreamed(tmp_path) -> None:
    from agents import Agent, ModelRefusalError, RunConfig, Runner
    from agents.models.openai_responses import OpenAIResponsesModel

    with gateway(tmp_path) as w:
        def agent() -> Agent:  # a new client each run: an async client's connections belong to one event loop
            client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{w.gw.port}/v1", api_key="unused", max_retries=0,
                                        default_headers={"x-costline-task-type": "support",
                                                         "x-costline-tenant": "acme"})
            return Agent(name="helper", model=OpenAIResponsesModel(model="gpt-4o", openai_client=client))

        config = RunConfig(tracing_disabled=True)
        with pytest.raises(ModelRefusalError) as unstreamed:
            Runner.run_sync(agent(), REFUSE, run_config=config)

        async def streamed() -> None:
            run = Runner.run_streamed(agent(), REFUSE, run_config=config)
            async for _ in run.stream_events():
                pass

        with pytest.raises(ModelRefusalError) as live:
            asyncio.run(streamed())
        assert unstreamed.value.refusal == live.value.refusal == REFUSED
        assert [m for _, m, _ in w.upstream.asked] == [HAIKU, HAIKU]
