"""The gateway against hostile or odd callers: slow clients, oversized heads, malformed Messages shapes,
non-boolean flags. Each is answered with a clear 4xx in the API's own error format (and no model call), or the
connection is closed within the configured limits; the other callers go on being served.

Raw sockets where the client must misbehave at the HTTP level; plain ``http.client`` for bodies the SDKs would
never send. A real Gateway → Pipeline → the local stand-ins.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import pytest
from gateways import gateway_starter

from costline.serving.gateway.app import Gateway

QUESTION = "How do I reset my password?"
MESSAGES = "/v1/messages"
CHAT = "/v1/chat/completions"



@pytest.fixture
def serve(pipeline, tmp_path):
    with gateway_starter(pipeline, tmp_path / "keys.json") as start:
        yield start


def post(gw: Gateway, path: str, body: bytes | dict, headers: dict[str, str] | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=20)
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", path, payload, {"content-type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    out = resp.status, dict(resp.getheaders()), resp.read()
    conn.close()
    return out


def closed_within(sock: socket.socket, seconds: float, trickle: bytes | None = None) -> float | None:
    """Seconds until the server closed ``sock`` (None: still open after ``seconds``), sending ``trickle`` every
    0.1 s meanwhile, as a slow client does."""
    start = time.monotonic()
    sock.settimeout(0.1)
    while time.monotonic() - start < seconds:
        try:
            if trickle:
                sock.sendall(trickle)
            data = sock.recv(65536)
            while data:  # an answer: read it to the end (the server closes after it)
                data = sock.recv(65536)
            return time.monotonic() - start
        except (TimeoutError, socket.timeout):
            continue
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - start
    return None


def message(**fields) -> dict:
    return {"model": "m", "max_tokens": 20, "messages": [{"role": "user", "content": QUESTION}], **fields}


# -- slow clients ---------------------------------------------------------------------------------
def test_a_request_head_that_never_ends_is_closed(serve) -> None:
    """Slowloris: a head trickled a byte at a time never completes; uvicorn's keep-alive timer stops at the first
    byte, so nothing closed it. Now the head must arrive within read_timeout_s of its first byte."""
    gw = serve(idle_timeout_s=0.5, read_timeout_s=0.5)
    with socket.create_connection(("127.0.0.1", gw.port)) as sock:
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        took = closed_within(sock, 5.0, trickle=b"a")
    assert took is not None and took < 3.0, took
    status, _, _ = post(gw, MESSAGES, message())  # and the gateway serves the others
    assert status == 200


def test_a_body_trickled_slowly_frees_its_slot_for_other_callers(serve) -> None:
    """A body sent a byte per read, each within read_timeout_s, held its admission slot for as long as the client
    liked: two such clients turned every other caller away with 529. A body now has read_timeout_s plus
    read_timeout_s per 64 KiB received to arrive."""
    gw = serve(max_workers=1, max_pending=1, read_timeout_s=0.5)
    slow = [socket.create_connection(("127.0.0.1", gw.port)) for _ in range(2)]
    try:
        for sock in slow:
            sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100000\r\n\r\n{")
        deadline = time.monotonic() + 5
        while gw._server.in_flight < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        answers: list[bytes] = []
        trickling = [threading.Thread(target=lambda s=sock: answers.append(_trickle(s, 4.0))) for sock in slow]
        for t in trickling:
            t.start()
        for t in trickling:
            t.join(10)
        status, _, body = post(gw, MESSAGES, message())
    finally:
        for sock in slow:
            sock.close()
    assert status == 200, body
    assert len(answers) == 2 and all(a.startswith(b"HTTP/1.1 400") and b"too slowly" in a for a in answers), answers


def _trickle(sock: socket.socket, seconds: float) -> bytes:
    """Send a body byte every 0.1 s until the server answers (or ``seconds`` pass); what it answered."""
    start = time.monotonic()
    sock.settimeout(0.1)
    got = b""
    while time.monotonic() - start < seconds:
        try:
            sock.sendall(b" ")
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
        except (TimeoutError, socket.timeout):
            continue
        except ConnectionResetError:
            break
    return got


# -- oversized heads ------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [MESSAGES, CHAT, "/v1/responses"])
def test_headers_over_max_header_bytes_are_refused_even_when_they_arrive_in_one_read(serve, path) -> None:
    """h11 enforces max_header_bytes only on a head still incomplete: one that arrived whole in one read passed."""
    gw = serve(max_header_bytes=4096)
    status, headers, body = post(gw, path, message(), {"x-padding": "a" * 8000})
    assert status == 431, body
    doc = json.loads(body)
    error = doc["error"]
    assert error["type"] == "invalid_request_error" and "4096" in error["message"]
    assert (doc.get("type") == "error") == (path == MESSAGES)  # each API in its own format
    assert headers.get("connection") == "close"


# -- malformed Messages shapes: 400 before any model call ----------------------------------------------
BAD_MESSAGES = {
    "system a number": message(system=5),
    "system blocks not objects": message(system=[3]),
    "system an image block": message(system=[{"type": "image", "source": {}}]),
    "system text not a string": message(system=[{"type": "text", "text": 5}]),
    "role unknown": message(messages=[{"role": "wizard", "content": "hi"}, {"role": "user", "content": QUESTION}]),
    "role system in messages": message(messages=[{"role": "system", "content": "hi"},
                                                 {"role": "user", "content": QUESTION}]),
    "content a number": message(messages=[{"role": "assistant", "content": 5}, {"role": "user", "content": QUESTION}]),
    "content null": message(messages=[{"role": "assistant", "content": None}, {"role": "user", "content": QUESTION}]),
    "content block not an object": message(messages=[{"role": "user", "content": [3, {"type": "text", "text": "x"}]}]),
    "content block without type": message(messages=[{"role": "user", "content": [{"text": QUESTION}]}]),
    "text block text a number": message(messages=[{"role": "user", "content": [{"type": "text", "text": 5}]}]),
    "text block without text": message(messages=[{"role": "user", "content": [{"type": "text"},
                                                                                {"type": "text", "text": QUESTION}]}]),
    "stream a string": message(stream="false"),
    "stream a number": message(stream=1),
}


@pytest.mark.parametrize("name", list(BAD_MESSAGES))
def test_a_malformed_messages_request_is_400_without_a_model_call(serve, standin, name) -> None:
    """Each of these reached the models (every tier: the stand-in and Anthropic refuse them) and came back as a
    500 'every tier failed' — or, routed to the student, a TypeError traceback; ``stream: "false"`` streamed."""
    gw = serve()
    before = len(standin.log.entries())
    status, headers, body = post(gw, MESSAGES, BAD_MESSAGES[name])
    assert status == 400, body
    doc = json.loads(body)
    assert doc["type"] == "error" and doc["error"]["type"] == "invalid_request_error"
    assert headers["content-type"].startswith("application/json")
    assert len(standin.log.entries()) == before  # refused before any model call


GOOD_MESSAGES = {
    "system blocks": message(system=[{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}]),
    "image and text": message(messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
        {"type": "text", "text": QUESTION}]}]),
    "tool use and result": message(messages=[
        {"role": "user", "content": "what is 6 times 7"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "mul", "input": {"a": 6, "b": 7}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "42"},
                                     {"type": "text", "text": QUESTION}]}]),
    "thinking block": message(messages=[
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"},
                                          {"type": "text", "text": "hello"}]},
        {"role": "user", "content": QUESTION}]),
    "stream false": message(stream=False),
    "stream null": message(stream=None),
}


@pytest.mark.parametrize("name", list(GOOD_MESSAGES))
def test_well_formed_messages_of_every_block_kind_are_still_answered(serve, name) -> None:
    gw = serve()
    status, _, body = post(gw, MESSAGES, GOOD_MESSAGES[name])
    assert status == 200, body
    assert json.loads(body)["type"] == "message"


# -- the OpenAI API's flags ------------------------------------------------------------------------
def chat(**fields) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": QUESTION}], **fields}


@pytest.mark.parametrize("body, param", [(chat(stream="true"), "stream"), (chat(stream=1), "stream"),
                                         (chat(n=True), "n"), (chat(n=1.5), "n")])
def test_a_chat_request_with_a_non_boolean_stream_or_non_integer_n_is_400(serve, standin, body, param) -> None:
    """``stream: "true"`` answered a plain completion and ``n: true`` passed as 1: OpenAI refuses both types."""
    gw = serve()
    before = len(standin.log.entries())
    status, _, answer = post(gw, CHAT, body)
    assert status == 400, answer
    error = json.loads(answer)["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert len(standin.log.entries()) == before


# -- error types of the statuses the table did not name ---------------------------------------------
def test_411_and_415_carry_an_invalid_request_error_type(serve) -> None:
    """Anthropic's format names the error's type: a 411 or 415 said ``api_error`` (a server fault)."""
    gw = serve()
    status, _, body = post(gw, MESSAGES, message(), {"content-type": "text/plain"})
    assert status == 415 and json.loads(body)["error"]["type"] == "invalid_request_error", body
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 411") and b'"invalid_request_error"' in answer, answer


# -- deep JSON that json.loads takes ---------------------------------------------------------------
def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("path, body", [
    (MESSAGES, '{"model": "m", "max_tokens": 20, "messages": [{"role": "user", "content": [{"type": "tool_result", '
               '"tool_use_id": "t", "content": "x", "extra": %s}, {"type": "text", "text": "%s"}]}]}'),
    (CHAT, '{"model": "m", "prediction": %s, "messages": [{"role": "user", "content": "%s"}]}'),
])
def test_json_a_few_hundred_levels_deep_is_400_not_a_recursion_error(serve, standin, path, body) -> None:
    """json.loads refuses ~990 levels (400 already), but 500 levels parsed and then the cache's scope hash
    recursed into them: 500 ``RecursionError``."""
    gw = serve()
    before = len(standin.log.entries())
    status, _, answer = post(gw, path, (body % (_nested(500), QUESTION)).encode())
    assert status == 400, answer
    error = json.loads(answer)["error"]
    assert error["type"] == "invalid_request_error" and "100 levels" in error["message"]
    assert len(standin.log.entries()) == before
    status, _, answer = post(gw, path, (body % (_nested(90), QUESTION)).encode())  # deep, within the bound
    assert status == 200, answer


@pytest.mark.parametrize(("problems", "status"), [
    (("BadRequestError", "BadRequestError", "BadRequestError"), 400),  # every tier's API: the request is invalid
    (("BadRequestError", "RequestTooLargeError"), 400),
    (("UnprocessableEntityError",), 400),  # vLLM's 422
    (("BadRequestError", "OverloadedError"), 529),  # one tier could have answered it: a fault to retry later
    (("low_confidence", "BadRequestError"), 500),
    (("RateLimitError",), 429),
    (("InternalServerError",), 500),
    ((), 500),
])
def test_the_failure_status_is_400_only_when_every_tier_refused_the_request_as_invalid(problems, status) -> None:
    from costline.serving.gateway.app import failure_status
    from costline.serving.pipeline import Answer, Attempt

    attempts = tuple(Attempt(f"tier{i}", "m", False, p) for i, p in enumerate(problems))
    result = Answer("", "budget", "m", "budget", False, attempts=attempts)
    assert failure_status(result) == status
