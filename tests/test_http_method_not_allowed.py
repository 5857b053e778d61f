"""A method a served path is not served by is answered ``405 Method Not Allowed`` with an ``Allow`` header naming the
methods it is (RFC 9110 §15.5.6; ``HEAD`` wherever ``GET`` is, §9.3.2), in the API's own error format; an unknown path
stays a 404. Driven over HTTP through the real servers: the gateway (Starlette/uvicorn) in front of the stand-in, and
the stand-in itself (the stdlib ``JsonServer``), which also answers ``HEAD`` on a GET path as the GET without its body.

Before: the gateway answered a wrong method on a served path with its 404 (and an unknown method, as ``TRACE``, too);
``JsonServer`` answered it with its 404 and ``HEAD`` with ``501 Unsupported method``.

The expected methods are the APIs' documented ones, written by hand: Anthropic's Messages, Models and Message Batches,
OpenAI's Chat Completions and Responses, Bedrock Runtime's InvokeModel; on the gateway ``OPTIONS`` too where it answers
CORS preflights (its browser-facing routes; not ``/v1/models``, nor Bedrock's, docs/serving.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from gateways import StreamedLines, exchange, gateway_starter

from costline.serving.gateway._http import HttpResponse, JsonServer, Route
from costline.serving.gateway.auth import KeyStore

ANTHROPIC, OPENAI, BEDROCK = "anthropic", "openai", "bedrock"


def _allow(headers: dict[str, str]) -> set[str]:
    """The methods an ``Allow`` header lists (a comma-separated list: order and spacing mean nothing)."""
    return {m.strip() for m in headers["allow"].split(",") if m.strip()}


def _assert_api_error(api: str, body: bytes, headers: dict[str, str], method: str) -> None:
    """``body`` is an error in ``api``'s documented format, its message naming ``method``."""
    doc = json.loads(body)
    if api == ANTHROPIC:  # {"type": "error", "error": {"type": ..., "message": ...}}
        assert doc["type"] == "error" and isinstance(doc["error"]["type"], str), doc
        message = doc["error"]["message"]
    elif api == OPENAI:  # {"error": {"message": ..., "type": ..., "param": ..., "code": ...}}
        assert set(doc["error"]) >= {"message", "type", "param", "code"}, doc
        message = doc["error"]["message"]
    else:  # Bedrock: {"message": ...} and the error's kind in x-amzn-ErrorType
        assert set(doc) == {"message"} and "x-amzn-errortype" in headers, (doc, headers)
        message = doc["message"]
    assert method in message, message


# --- the gateway -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gateway(pipeline, tmp_path_factory) -> Iterator[tuple[int, dict[str, str]]]:
    """A gateway that requires keys, its port and a valid key's header."""
    keys_file = tmp_path_factory.mktemp("keys") / "keys.json"
    _, key = KeyStore(keys_file).add("acme")
    with gateway_starter(pipeline, keys_file) as start:
        yield start().port, {"x-api-key": key}


PREFLIGHT = {"OPTIONS"}  # the gateway answers CORS preflights on its browser-facing routes

GATEWAY_405 = [
    # method, path, the methods the path is served by, the API's error format
    ("PUT", "/v1/models", {"GET", "HEAD"}, ANTHROPIC),
    ("POST", "/v1/models", {"GET", "HEAD"}, ANTHROPIC),
    ("DELETE", "/v1/models/claude-haiku-4-5", {"GET", "HEAD"}, ANTHROPIC),
    ("GET", "/v1/messages", {"POST"} | PREFLIGHT, ANTHROPIC),
    ("HEAD", "/v1/messages", {"POST"} | PREFLIGHT, ANTHROPIC),
    ("DELETE", "/v1/messages/count_tokens", {"POST"} | PREFLIGHT, ANTHROPIC),
    ("PUT", "/v1/messages/batches", {"GET", "HEAD", "POST"} | PREFLIGHT, ANTHROPIC),
    ("POST", "/v1/messages/batches/msgbatch_01", {"GET", "HEAD", "DELETE"} | PREFLIGHT, ANTHROPIC),
    ("GET", "/v1/messages/batches/msgbatch_01/cancel", {"POST"} | PREFLIGHT, ANTHROPIC),
    ("GET", "/v1/chat/completions", {"POST"} | PREFLIGHT, OPENAI),
    ("PATCH", "/v1/responses/resp_01", {"GET", "HEAD", "DELETE"} | PREFLIGHT, OPENAI),
    ("GET", "/model/anthropic.claude-3-haiku-20240307-v1:0/invoke", {"POST"}, BEDROCK),
    ("TRACE", "/v1/models", {"GET", "HEAD"}, ANTHROPIC),  # a method no route of the gateway takes anywhere
]


@pytest.mark.parametrize(("method", "path", "allow", "api"), GATEWAY_405,
                         ids=[f"{m} {p}" for m, p, _, _ in GATEWAY_405])
def test_gateway_answers_405_with_allow_after_the_key_check(gateway, method: str, path: str, allow: set[str],
                                                            api: str) -> None:
    port, key = gateway
    body = b'{"model": "claude-haiku-4-5"}' if method in ("POST", "PUT", "PATCH") else b""
    status, headers, got = exchange(port, method, path, key, body)
    assert status == 405, (status, got[:300])
    assert _allow(headers) == allow
    if method == "HEAD":
        assert got == b""  # a HEAD's answer has no body, a 405's neither
    else:
        _assert_api_error(api, got, headers, method)
    # a caller without a key is refused as on any request (401), before routing: told nothing of the path's methods
    status, headers, got = exchange(port, method, path, {}, body)
    assert status == 401 and "allow" not in headers, (status, headers, got[:300])


#: method, path, whether the key is sent, the status: an unknown path stays a 404 (with a key or without), an OPTIONS
#: where the gateway answers no preflight too (a preflight needs no key: a stranger is told nothing more); the health
#: checks need no key and take GET (and HEAD)
GATEWAY_OTHERS = [
    ("GET", "/v1/nowhere", True, 404),
    ("DELETE", "/v1/nowhere", False, 404),
    ("OPTIONS", "/v1/models", False, 404),
    ("POST", "/healthz", False, 405),
    ("PUT", "/readyz", False, 405),
]


def test_gateway_reads_a_wrong_method_requests_body_before_its_405(gateway) -> None:
    """A wrong method with a 4 MB body (under the 8 MiB default limit) from a caller with a key: the body is read, the
    405 reaches the client. Closing on the unread body reset the connection under the answer (the client got
    ConnectionResetError / BrokenPipeError, and an SDK sends the request again)."""
    port, key = gateway
    status, headers, body = exchange(port, "PUT", "/v1/models", key, b"x" * 4_000_000)
    assert (status, _allow(headers)) == (405, {"GET", "HEAD"}), body[:300]
    _assert_api_error(ANTHROPIC, body, headers, "PUT")


def test_gateway_answers_a_wrong_methods_body_over_the_limit_405_not_413(pipeline, tmp_path) -> None:
    """A wrong method with a body over ``max_body_bytes``: 405 with ``Allow`` (the request is refused whatever its
    size), its body unread and the connection closed. Before: a 413 asking to raise the limit."""
    keys_file = tmp_path / "keys.json"
    key = {"x-api-key": KeyStore(keys_file).add("acme")[1]}
    with gateway_starter(pipeline, keys_file) as start:
        port = start(max_body_bytes=1024).port
        status, headers, body = _answer_to_a_large_body(port, "PUT", "/v1/models", key, 2048)
        assert (status, _allow(headers), headers.get("connection")) == (405, {"GET", "HEAD"}, "close"), body[:300]
        _assert_api_error(ANTHROPIC, body, headers, "PUT")
        # the served method's body over the limit stays the 413 it was
        status, _, body = _answer_to_a_large_body(port, "POST", "/v1/messages", key, 2048)
        assert status == 413, body[:300]


def _answer_to_a_large_body(port: int, method: str, path: str, key: dict[str, str],
                            size: int) -> tuple[int, dict[str, str], bytes]:
    """``exchange`` for a body the server may not read, on a connection left open (its ``connection`` header is the
    server's own): the answer read to its ``content-length``; a reset after it (the unread bytes) ends it too."""
    import socket

    head = "".join(f"{k}: {v}\r\n" for k, v in key.items())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n{head}content-type: application/json\r\n"
                     f"content-length: {size}\r\n\r\n".encode() + b"x" * size)
        raw = b""
        try:
            while chunk := sock.recv(65536):
                raw += chunk
                head_part, found, rest = raw.partition(b"\r\n\r\n")
                length = re.search(rb"(?im)^content-length:\s*(\d+)", head_part) if found else None
                if length and len(rest) >= int(length.group(1)):
                    break
        except ConnectionResetError:
            pass
    head_part, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *lines = head_part.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, rest


def test_a_busy_gateway_answers_a_wrong_method_with_a_body_405_not_529(pipeline, tmp_path) -> None:
    """Every slot held (one worker, one place in the queue: two POSTs whose bodies have not all come), a wrong method
    with a body still gets its 405: it is read and answered on the event loop, no slot taken. Before: 529
    overloaded."""
    import socket

    keys_file = tmp_path / "keys.json"
    key = {"x-api-key": KeyStore(keys_file).add("acme")[1]}
    post = (f"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\nx-api-key: {key['x-api-key']}\r\n"
            "content-type: application/json\r\ncontent-length: 1000\r\n\r\n{").encode()
    with gateway_starter(pipeline, keys_file) as start:
        port = start(max_workers=1, max_pending=1, max_in_flight_per_tenant=2).port
        with socket.create_connection(("127.0.0.1", port), timeout=10) as a, \
                socket.create_connection(("127.0.0.1", port), timeout=10) as b:
            a.sendall(post)
            b.sendall(post)
            # each takes its slot once its head is in: a request with no body and a served method then sees none
            for _ in range(200):
                status, _, _ = exchange(port, "GET", "/v1/models", key)
                if status == 529:
                    break
            assert status == 529, "the held POSTs never took both slots"
            status, headers, body = exchange(port, "PUT", "/v1/models", key, b'{"model": "claude-haiku-4-5"}')
            assert (status, _allow(headers)) == (405, {"GET", "HEAD"}), (status, body[:300])


def test_gateway_reads_at_most_max_pending_wrong_method_bodies_at_once(pipeline, tmp_path) -> None:
    """A wrong method's body is read on the event loop with no slot: at most ``max_pending`` at once, so a caller
    trickling such bodies cannot have the gateway hold them without bound. With one being read (its body not all
    come), the next is answered 405 unread, its connection closed; once that one ends, a body is read again."""
    import socket

    keys_file = tmp_path / "keys.json"
    key = {"x-api-key": KeyStore(keys_file).add("acme")[1]}
    with gateway_starter(pipeline, keys_file) as start:
        port = start(max_pending=1).port
        with socket.create_connection(("127.0.0.1", port), timeout=10) as held:
            held.sendall(f"PUT /v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\nx-api-key: {key['x-api-key']}\r\n"
                         "content-type: application/json\r\ncontent-length: 1000\r\n\r\n{".encode())
            for _ in range(200):  # until the held body is being read: the next one is then turned away unread
                status, headers, _ = _answer_to_a_large_body(port, "PUT", "/v1/models", key, 10)
                if headers.get("connection") == "close":
                    break
            assert (status, _allow(headers), headers.get("connection")) == (405, {"GET", "HEAD"}, "close")
            held.sendall(b"x" * 999)
            assert held.recv(65536).startswith(b"HTTP/1.1 405")
        status, headers, _ = _answer_to_a_large_body(port, "PUT", "/v1/models", key, 10)
        assert (status, headers.get("connection")) == (405, None), headers


def _answer_to_a_head_announcing_a_body(port: int, head: str) -> bytes:
    """The answer to ``head`` (announcing a 100 kB body, of which one byte is sent): what arrives within 5 s."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head.encode() + b"x")
        try:
            return sock.recv(65536)
        except TimeoutError:
            return b""


@pytest.mark.parametrize(("path", "origin", "status"), [
    ("/v1/models", "", b"404"),  # no preflight route
    ("/v1/messages", "", b"403"),  # a preflight route, no origin: refused
    ("/v1/messages", "origin: https://evil.example\r\naccess-control-request-method: POST\r\n", b"403"),
])
def test_gateway_answers_a_strangers_options_with_a_body_at_once_without_reading_it(gateway, path, origin,
                                                                                     status) -> None:
    """A CORS preflight needs no key (so anyone may send one) and no body: an OPTIONS with a body is answered at once
    (a path's 404, a preflight route's refusal), its body never read and the connection closed. Reading it took a
    worker slot and waited for the body (a stranger could hold every slot with such requests)."""
    port, _key = gateway
    answer = _answer_to_a_head_announcing_a_body(
        port, f"OPTIONS {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n{origin}content-length: 100000\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 " + status) and b"connection: close" in answer.lower(), answer[:300]


@pytest.mark.parametrize(("headers", "has_body"), [
    ([], False),
    ([(b"content-length", b"0")], False),  # no body: a wrong method's 405 comes before a slot is taken
    ([(b"content-length", b" 0 ")], False),
    ([(b"content-length", b"12")], True),
    ([(b"transfer-encoding", b"chunked")], True),
    ([(b"content-type", b"application/json")], False),
])
def test_a_request_announces_a_body_unless_its_length_is_zero(headers, has_body) -> None:
    from types import SimpleNamespace

    from costline.serving.gateway.asgi import _has_body

    assert _has_body(SimpleNamespace(headers=SimpleNamespace(raw=headers))) is has_body


def test_gateway_unknown_paths_stay_404_and_health_checks_say_405(gateway) -> None:
    port, api_key = gateway
    for method, path, key, status in GATEWAY_OTHERS:
        got_status, headers, body = exchange(port, method, path, api_key if key else {})
        assert got_status == status, (method, path, got_status, body[:300])
        if status == 405:
            assert _allow(headers) == {"GET", "HEAD"}, (method, path)
            _assert_api_error(ANTHROPIC, body, headers, method)
        else:
            assert "allow" not in headers, (method, path)


# --- the stand-in (JsonServer) ----------------------------------------------------------------------------------

STANDIN_405 = [
    ("PUT", "/v1/models", {"GET", "HEAD"}, ANTHROPIC),
    ("GET", "/v1/messages", {"POST"}, ANTHROPIC),
    ("HEAD", "/v1/messages", {"POST"}, ANTHROPIC),
    ("DELETE", "/v1/messages/batches", {"GET", "HEAD", "POST"}, ANTHROPIC),
    ("POST", "/v1/messages/batches/msgbatch_01", {"GET", "HEAD"}, ANTHROPIC),
    ("GET", "/v1/messages/batches/msgbatch_01/cancel", {"POST"}, ANTHROPIC),
    ("GET", "/v1/chat/completions", {"POST"}, OPENAI),
]


@pytest.mark.parametrize(("method", "path", "allow", "api"), STANDIN_405,
                         ids=[f"{m} {p}" for m, p, _, _ in STANDIN_405])
def test_standin_answers_405_with_allow(standin, method: str, path: str, allow: set[str], api: str) -> None:
    body = b'{"model": "claude-haiku-4-5"}' if method in ("POST", "PUT") else b""
    status, headers, got = exchange(standin.port, method, path, {}, body)
    assert status == 405, (status, got[:300])
    assert _allow(headers) == allow
    if method == "HEAD":
        assert got == b""
    else:
        _assert_api_error(api, got, headers, method)
        # the body says what the status says: no "not found" of the path's 404 (before, its body was the 404's)
        assert b"not_found" not in got and b"NotFound" not in got and b"no route" not in got, got[:300]
        assert b'"api_error"' not in got, got[:300]  # Anthropic's type of a server error, not of a wrong method


@pytest.mark.parametrize(("path", "status"), [
    ("/v1/models", 200),
    ("/v1/messages/batches", 200),
    ("/v1/messages/batches/msgbatch_none", 404),  # the GET's own 404 (no such batch): HEAD answers it too
])
def test_standin_answers_head_as_get_without_a_body(standin, path: str, status: int) -> None:
    get_status, get_headers, get_body = exchange(standin.port, "GET", path)
    head_status, head_headers, head_body = exchange(standin.port, "HEAD", path)
    assert (get_status, head_status, head_body) == (status, status, b"")
    assert head_headers == get_headers and get_headers["content-length"] == str(len(get_body))


def test_standin_model_path_without_a_method_is_no_gemini_route(standin) -> None:
    """Gemini's routes are ``/v1beta/models/{model}:{method}`` (a colon in the segment): a model's own path
    (``GET /v1/models/claude-haiku-4-5``, the Anthropic and OpenAI SDKs' ``models.retrieve``) is not one of them, so
    no 405 naming POST (before: ``Allow: POST``, whose POST answered 404 "Method (none) is not supported")."""
    for path in ("/v1/models/claude-haiku-4-5", "/v1beta/models/gemini-2.5-flash"):
        status, headers, body = exchange(standin.port, "GET", path)
        assert (status, "allow" in headers) == (404, False), (path, status, body[:300])
    status, _, body = exchange(standin.port, "POST", "/v1beta/models/gemini-2.5-flash:countTokens", {},
                               b'{"contents": [{"role": "user", "parts": [{"text": "hello there"}]}]}')
    assert status == 200 and "totalTokens" in json.loads(body), body[:300]


def test_standin_unknown_path_stays_404_whatever_the_method(standin) -> None:
    for method in ("GET", "HEAD", "DELETE", "OPTIONS"):
        status, headers, body = exchange(standin.port, method, "/v1/nowhere")
        assert (status, "allow" in headers) == (404, False), (method, status, body[:300])
        assert (body == b"") == (method == "HEAD"), (method, body[:300])


def test_json_server_head_on_a_streamed_get_sends_its_head_and_closes_the_stream_unread() -> None:
    made: list[StreamedLines] = []

    def results(_req: Any) -> HttpResponse:
        made.append(StreamedLines())
        return HttpResponse(200, stream=made[-1], content_type="application/x-jsonl")

    server = JsonServer([Route("GET", "/results", results)], not_found=lambda req: HttpResponse(404, {"error": "no"}),
                        on_error=lambda req, exc: HttpResponse(500, {"error": "failed"}))
    server.start()
    try:
        status, got, body = exchange(server.port, "GET", "/results")
        assert (status, body) == (200, b'C\r\n{"line": 1}\n\r\nC\r\n{"line": 2}\n\r\n0\r\n\r\n')
        status, head, body = exchange(server.port, "HEAD", "/results")
        assert (status, head, body) == (200, got, b"")
        assert made[-1].closed.wait(10) and made[-1].read == 0
        status, head, body = exchange(server.port, "POST", "/results", body=b"{}")
        assert (status, _allow(head)) == (405, {"GET", "HEAD"})
    finally:
        server.shutdown()
