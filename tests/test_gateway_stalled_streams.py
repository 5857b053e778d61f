"""A streamed answer whose client never reads must not keep its worker slot for ever (the real AsgiServer).

Two clients ask for an endless SSE stream and read nothing; with ``max_workers=2, max_pending=0`` they took every
slot and every other caller got 529 for as long as they stayed. Each piece's send is now due within
``idle_timeout_s``: past it the stalled connection is dropped, the producer is closed as when a client goes away
(the pipeline takes ``GeneratorExit`` as "the client closed the stream"), the slot is freed, and one warning per
stalled client is logged.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest

from costline.netsec import Limits
from costline.serving.gateway._http import HttpResponse, Route
from costline.serving.gateway.asgi import AsgiServer

PIECE = b"event: content_block_delta\ndata: " + b"x" * 65_536 + b"\n\n"
BOUND_S = 30.0  # generous: "eventually"; the stalled sends are due after idle_timeout_s (1 s)


class Producer:
    """An endless stream per request, recording how each one ended."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started = 0
        self.gone = 0  # closed from outside (GeneratorExit): what the pipeline records as the client going away

    def pieces(self):
        with self.lock:
            self.started += 1
        try:
            while True:
                yield PIECE
        except GeneratorExit:
            with self.lock:
                self.gone += 1
            raise


@pytest.fixture
def server():
    producer = Producer()

    def stream(req):
        return HttpResponse(stream=producer.pieces(), content_type="text/event-stream")

    srv = AsgiServer(
        [Route("POST", "/s", stream), Route("POST", "/q", lambda req: HttpResponse(body={"ok": 1}))],
        host="127.0.0.1", port=0, not_found=lambda r: HttpResponse(status=404, body={}),
        on_error=lambda r, e: HttpResponse(status=500, body={}),
        reject=lambda r, p: HttpResponse(status=r.status, body={"e": r.message}),
        busy=lambda p: HttpResponse(status=529, body={"busy": 1}), bad_request=lambda m: b"{}",
        limits=Limits(max_workers=2, max_pending=0, idle_timeout_s=1.0, read_timeout_s=5.0))
    srv.start()
    yield srv, producer
    srv.shutdown()


def _post(port: int, path: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window, filled fast
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
              .encode())
    return s


def _status(port: int) -> int:
    with _post(port, "/q") as s:
        head = b""
        while b"\r\n" not in head:
            chunk = s.recv(200)
            if not chunk:
                break
            head += chunk
    return int(head.split(b" ", 2)[1])


def _eventually(check, what) -> None:
    """Wait (at most BOUND_S) until ``check()``; ``what()`` says what did not happen."""
    deadline = time.monotonic() + BOUND_S
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {BOUND_S:g} s: {what()}")
        time.sleep(0.2)


def _closed_by_server(s: socket.socket) -> bool:
    """Read what is left until the server's end of the connection is gone (EOF or reset)."""
    s.settimeout(BOUND_S)
    try:
        while s.recv(1 << 20):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return False
    return True


def test_clients_that_never_read_their_streams_lose_their_slots_to_other_callers(server, caplog) -> None:
    srv, producer = server
    caplog.set_level(logging.WARNING)
    held = [_post(srv.port, "/s"), _post(srv.port, "/s")]
    try:
        _eventually(lambda: producer.started == 2, lambda: f"both streams started (started: {producer.started})")

        # the third caller is refused while the stalled streams hold both slots, then served once they are dropped
        seen: list[int] = []
        _eventually(lambda: seen.append(_status(srv.port)) or seen[-1] == 200,
                    lambda: f"another caller served (its last answers: {seen[-5:]})")
        assert set(seen) <= {529, 200}

        # the stalled connections were closed by the server, and their producers stopped as if the client left
        assert all(_closed_by_server(s) for s in held)
        _eventually(lambda: producer.gone == 2, lambda: f"both producers closed (closed: {producer.gone})")
        _eventually(lambda: srv.in_flight == 0, lambda: f"every slot given back (in flight: {srv.in_flight})")
    finally:
        for s in held:
            s.close()

    # one warning per stalled client, not one per piece
    warnings = [r for r in caplog.records if "stopped reading its streamed answer" in r.getMessage()]
    assert len(warnings) == 2
    assert all(r.levelno == logging.WARNING for r in warnings)
    # dropped as a client gone away: no "ASGI callable returned without completing response" or traceback
    # (the gateway's and the server's records: a Kafka client another test of this process left retrying logs too)
    assert [r.getMessage() for r in caplog.records
            if r.levelno >= logging.ERROR and not r.name.startswith("kafka")] == []
