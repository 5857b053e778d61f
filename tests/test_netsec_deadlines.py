"""costline.netsec's deadlines on real loopback sockets: a request head must arrive whole within
``read_timeout_s`` of its first byte, a body within ``body_timeout_s``, however steadily a client
trickles them (slowloris), and a body read on a :class:`BytesBudget` holds only what has arrived."""

from __future__ import annotations

import http.client
import socket
import threading
import time

import pytest

from costline.netsec import BytesBudget, GuardedHandler, HttpReject, Limits, PooledHTTPServer


class _Echo(GuardedHandler):
    """``POST``: 200 with the body's length; an :class:`HttpReject` as its status."""

    budget: BytesBudget | None = None

    def log_message(self, format, *args) -> None:
        pass

    def do_POST(self) -> None:
        try:
            body = self.read_body(self.content_length(1 << 20), self.budget)
        except HttpReject as r:
            self.close_connection = True
            self._answer(r.status, r.message.encode(), r.headers)
            return
        if self.budget is not None:
            self.budget.release(len(body))
        self._answer(200, str(len(body)).encode())

    def _answer(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def serve():
    made = []

    def start(budget: BytesBudget | None = None, **limits) -> int:
        handler = type("Echo", (_Echo,), {"budget": budget})
        server = PooledHTTPServer(("127.0.0.1", 0), handler, limits=Limits(**limits), name="test-deadlines")
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        made.append((server, thread))
        return server.server_address[1]

    yield start
    for server, thread in made:
        server.shutdown()
        server.server_close()
        thread.join(5)


def drip(sock: socket.socket, data: bytes, every_s: float, stop: threading.Event) -> threading.Thread:
    """Send ``data`` a byte every ``every_s`` seconds (until ``stop`` or the connection is gone)."""
    def run() -> None:
        for i in range(len(data)):
            if stop.is_set():
                return
            try:
                sock.sendall(data[i:i + 1])
            except OSError:
                return
            stop.wait(every_s)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def answer_of(sock: socket.socket, wait_s: float = 3.0) -> bytes:
    """What the server sends until it closes (b"" when it closes without an answer)."""
    sock.settimeout(wait_s)
    chunks = []
    try:
        while data := sock.recv(65536):
            chunks.append(data)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def post(port: int, body: bytes = b"hello") -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        return int(answer_of(sock).split(b" ", 2)[1])


HEAD = b"POST / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 200 + b"\r\nContent-Length: 5\r\n\r\nhello"


def test_a_head_dripped_a_byte_at_a_time_is_closed_read_timeout_s_after_its_first_byte(serve):
    # every worker and queue slot held by connections that send their head a byte every 0.1 s (each read
    # is well within the 5 s idle timeout): they are closed 0.5 s after their first byte, then others are served
    port = serve(max_workers=1, max_pending=1, idle_timeout_s=5, read_timeout_s=0.5)
    stop = threading.Event()
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    try:
        started = time.monotonic()
        for sock in socks:
            drip(sock, HEAD, 0.1, stop)
        for sock in socks:
            assert answer_of(sock) == b""  # closed without an answer
        assert time.monotonic() - started < 2.0
        assert post(port) == 200
    finally:
        stop.set()
        for sock in socks:
            sock.close()


def test_the_head_deadline_starts_at_the_first_byte_not_while_idle(serve):
    port = serve(idle_timeout_s=5, read_timeout_s=0.3)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.connect()
        for body in (b"hello", b"hi"):
            time.sleep(0.6)  # idle (within idle_timeout_s) longer than read_timeout_s, before each request
            conn.request("POST", "/", body=body)
            resp = conn.getresponse()
            assert (resp.status, resp.read()) == (200, str(len(body)).encode())
    finally:
        conn.close()


def test_heads_dripped_on_more_connections_than_workers_are_each_due_read_timeout_s_after_their_first_byte(serve):
    # more connections dripping their heads than workers and queue places: no worker waits for a head (the
    # server's head gatherer holds them all), so each is closed read_timeout_s after its own first byte, all of
    # them at once rather than one after another, and none is refused for want of a worker
    port = serve(max_workers=1, max_pending=1, idle_timeout_s=5, read_timeout_s=0.6)
    stop = threading.Event()
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    try:
        started = time.monotonic()
        for sock in socks:
            drip(sock, HEAD, 0.05, stop)
        for sock in socks:
            assert answer_of(sock) == b""
        assert time.monotonic() - started < 1.5  # 0.6 for all of them, not 0.6 each one after the other
    finally:
        stop.set()
        for sock in socks:
            sock.close()


@pytest.mark.parametrize("head, body", [
    pytest.param(b"Content-Length: 1000", b"x" * 1000, id="content-length"),
    pytest.param(b"Transfer-Encoding: chunked", b"1\r\nx\r\n" * 1000, id="chunked"),
])
def test_a_body_trickled_a_byte_at_a_time_is_408_after_body_timeout_s(serve, head, body):
    budget = BytesBudget(1 << 20)
    port = serve(budget, idle_timeout_s=5, read_timeout_s=1.0, body_timeout_s=0.5)
    stop = threading.Event()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        try:
            started = time.monotonic()
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n\r\n")
            drip(sock, body, 0.05, stop)  # every read well within read_timeout_s
            answer = answer_of(sock)
            took = time.monotonic() - started
        finally:
            stop.set()
    assert answer.startswith(b"HTTP/1.1 408") and b"within 0.5s" in answer, answer[:300]
    assert 0.45 <= took < 2.0
    assert budget.used == 0  # what arrived was given back
    assert post(port) == 200


@pytest.mark.parametrize("head, sent", [
    pytest.param(b"Content-Length: 1000000", b"x" * 10, id="content-length"),
    pytest.param(b"Transfer-Encoding: chunked", b"f4240\r\n" + b"x" * 10, id="chunked-one-big-chunk"),
    pytest.param(b"Transfer-Encoding: chunked", b"", id="chunked-nothing-yet"),
])
def test_a_body_holds_on_the_budget_what_arrived_not_what_was_announced(serve, head, sent):
    budget = BytesBudget(1 << 20)
    port = serve(budget, idle_timeout_s=5, read_timeout_s=5, body_timeout_s=5)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n\r\n" + sent)
        time.sleep(0.3)
        assert budget.used <= 64 * 1024 + len(sent)  # what came and a read's step, never the 1 MB announced
        assert post(port, b"y" * 100_000) == 200  # others still get in
    deadline = time.monotonic() + 3
    while budget.used and time.monotonic() < deadline:  # the cut-short body gave its bytes back
        time.sleep(0.01)
    assert budget.used == 0


def test_a_full_budget_is_503_with_retry_after_and_nothing_stays_held(serve):
    budget = BytesBudget(100_000)
    budget.acquire(90_000)  # another request's
    port = serve(budget, retry_after_s=3)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 50000\r\n\r\n" + b"z" * 50_000)
        answer = answer_of(sock)
    assert answer.startswith(b"HTTP/1.1 503") and b"Retry-After: 3" in answer
    assert budget.used == 90_000
    budget.release(90_000)
    assert post(port, b"z" * 50_000) == 200
