"""costline.netsec.PooledHTTPServer's head gatherer on real loopback sockets: a connection without a whole request
head (a new one, a slow one, an idle keep-alive one, one still in its TLS handshake) holds no worker, so slowloris
clients past ``max_workers`` + ``max_pending`` leave a real request answered at once; the head's limits and
deadlines are kept by the gatherer (431/414, closed), and ``max_connections`` bounds what it holds (503)."""

from __future__ import annotations

import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from costline import netsec
from costline.netsec import GuardedHandler, HttpReject, Limits, PooledHTTPServer

#: Limits for the tests: two workers, two waiting places, and head deadlines far past any test's wait, so that
#: nothing here is answered because a deadline ran out unless the test says so.
SMALL = dict(max_workers=2, max_pending=2, idle_timeout_s=30, read_timeout_s=30)


class _Recorder(GuardedHandler):
    """Answers 200 with the body's length; records each request it is given (method, path, body)."""

    seen: list[tuple[str, str, bytes]]

    def log_message(self, format, *args) -> None:
        pass

    def do_POST(self) -> None:
        try:
            body = self.read_body(self.content_length(1 << 20))
        except HttpReject as r:
            self.close_connection = True
            self._answer(r.status, r.message.encode())
            return
        self.seen.append((self.command, self.path, body))
        self._answer(200, str(len(body)).encode())

    def do_GET(self) -> None:
        self.seen.append((self.command, self.path, b""))
        self._answer(200, self.path.encode())

    def _answer(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def serve():
    made = []

    def start(ssl_ctx: ssl.SSLContext | None = None, **limits) -> tuple[PooledHTTPServer, int, list]:
        seen: list[tuple[str, str, bytes]] = []
        handler = type("Recorder", (_Recorder,), {"seen": seen})
        server = PooledHTTPServer(("127.0.0.1", 0), handler, limits=Limits(**limits), ssl_ctx=ssl_ctx,
                                  name="test-gather")
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        made.append((server, thread))
        return server, server.server_address[1], seen

    yield start
    for server, thread in made:
        server.shutdown()
        server.server_close()
        thread.join(5)


class Client:
    """One connection, read one answer at a time (so pipelined answers are told apart)."""

    def __init__(self, port: int, ctx: ssl.SSLContext | None = None, timeout_s: float = 5.0) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self.sock = ctx.wrap_socket(sock, server_hostname="localhost") if ctx is not None else sock
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def answer(self) -> tuple[int, bytes]:
        """The next answer's status and body (raises ``TimeoutError`` when none comes within the timeout)."""
        status = int(self.file.readline().split(b" ", 2)[1])
        length = 0
        while (line := self.file.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, self.file.read(length)

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def post(path: str, body: bytes) -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (path.encode(), len(body), body)


def answer_of(sock: socket.socket, wait_s: float = 5.0) -> bytes | None:
    """What the server sends until it closes (b"" when it closes without an answer; None when it neither answers
    nor closes within ``wait_s``)."""
    sock.settimeout(wait_s)
    chunks = []
    try:
        while data := sock.recv(65536):
            chunks.append(data)
    except ConnectionResetError:
        pass
    except TimeoutError:
        return None
    return b"".join(chunks)


def nothing_received(sock: socket.socket) -> bool:
    """Whether ``sock`` is still open and the server has sent nothing on it."""
    sock.setblocking(False)
    try:
        return sock.recv(1) is None
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def head_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "test-gather-heads"]


def test_slowloris_and_idle_connections_past_every_worker_and_place_leave_a_new_request_answered(serve):
    # 80 connections dripping a header line every 0.2 s (each line well within read_timeout_s) and 10 that never
    # send a byte: 45 times max_workers + max_pending. None of them holds a worker: a request on a new connection
    # is answered 200 within the client's 5 s (the head deadlines are 30 s), the handler is given that request
    # alone, and nothing is refused.
    server, port, seen = serve(**SMALL)
    loris = [socket.create_connection(("127.0.0.1", port)) for _ in range(80)]
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(10)]
    stop = threading.Event()

    def drip() -> None:
        while not stop.wait(0.2):
            for sock in loris:
                try:
                    sock.sendall(b"X-a: b\r\n")
                except OSError:
                    pass

    for sock in loris:
        sock.sendall(b"POST /loris HTTP/1.1\r\nHost: x\r\nX-a: b\r\n")
    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    client = Client(port)
    try:
        client.send(post("/fresh", b"hello"))
        assert client.answer() == (200, b"5")
        client.send(post("/again", b"hi"))  # kept alive: the same connection, through the gatherer again
        assert client.answer() == (200, b"2")
        assert seen == [("POST", "/fresh", b"hello"), ("POST", "/again", b"hi")]
        assert server.refused == 0
        assert all(nothing_received(s) for s in loris + idle)  # held, neither answered nor closed
        stop.set()
        dripper.join(5)
        assert head_threads()
        server.server_close()  # closes every connection the gatherer holds, and stops it
        assert all(answer_of(s) == b"" for s in loris + idle)
        deadline = time.monotonic() + 5
        while head_threads() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not head_threads()
    finally:
        stop.set()
        client.close()
        for sock in loris + idle:
            sock.close()


def test_an_idle_keep_alive_connection_holds_no_worker(serve):
    # one worker, one waiting place: a client idle between two requests on its connection does not hold the
    # worker, so another client is answered meanwhile, and the first one's next request on the same connection too
    _, port, seen = serve(**{**SMALL, "max_workers": 1, "max_pending": 1})
    first, other = Client(port), Client(port)
    try:
        first.send(post("/1", b"a"))
        assert first.answer() == (200, b"1")
        other.send(post("/other", b"bb"))  # `first` is open and idle
        assert other.answer() == (200, b"2")
        first.send(post("/2", b"ccc"))
        assert first.answer() == (200, b"3")
        assert [path for _, path, _ in seen] == ["/1", "/other", "/2"]
    finally:
        first.close()
        other.close()


def test_a_pipelined_pair_is_answered_in_order_while_idle_connections_fill_the_workers_and_places(serve):
    _, port, seen = serve(**{**SMALL, "max_workers": 1, "max_pending": 1})
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    client = Client(port)
    try:
        client.send(post("/one", b"a") + post("/two", b"bb") + b"GET /three HTTP/1.1\r\nHost: x\r\n\r\n")
        assert [client.answer() for _ in range(3)] == [(200, b"1"), (200, b"2"), (200, b"/three")]
        assert seen == [("POST", "/one", b"a"), ("POST", "/two", b"bb"), ("GET", "/three", b"")]
    finally:
        client.close()
        for sock in idle:
            sock.close()


def test_a_worker_serves_the_requests_already_sent_on_its_connection_without_handing_it_back(serve):
    """Requests a client has sent on the heels of an answer (here pipelined: deterministic) are served by the worker
    that answered, not handed to the head gatherer and back (a thread handoff each, a fifth of a keep-alive
    request's throughput); the connection goes back once no whole request is waiting (after at most 2 ms)."""
    server, port, seen = serve(**SMALL)
    backs: list[bool] = []
    real = server._heads.add

    def add(sock, addr, data, *, new):
        backs.append(new)
        return real(sock, addr, data, new=new)

    server._heads.add = add
    client = Client(port)
    try:
        client.send(b"".join(post(f"/{i}", b"x") for i in range(5)))
        assert [client.answer()[0] for _ in range(5)] == [200] * 5
        for _ in range(100):  # the connection is back with the gatherer once the worker saw no next request
            if backs.count(False):
                break
            time.sleep(0.01)
        assert backs == [True, False]  # accepted once, handed back once: not after each of the 5 requests
        client.send(post("/after", b"y"))  # and the gatherer serves it on
        assert client.answer() == (200, b"1")
        assert [path for _, path, _ in seen][-1] == "/after"
    finally:
        client.close()


@pytest.mark.parametrize("sent, status", [
    pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 20_000, 431, id="headers"),
    pytest.param(b"GET /" + b"a" * 20_000, 414, id="request-line"),
])
def test_a_head_past_the_limit_is_refused_before_it_ends(serve, sent, status):
    # max_header_bytes 1024 (+ 8 KiB for the request line): 20,000 bytes without the head's end are refused at
    # once, not read until read_timeout_s (30 s) runs out
    _, port, seen = serve(**SMALL, max_header_bytes=1024)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(sent)
        answer = answer_of(sock)
    assert answer is not None and answer.startswith(b"HTTP/1.1 %d " % status), answer
    assert seen == []
    # a whole head under the gatherer's limit but with headers over max_header_bytes: still 431, from the worker
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 2000 + b"\r\n\r\n")
        answer = answer_of(sock)
    assert answer is not None and answer.startswith(b"HTTP/1.1 431 "), answer
    client = Client(port)
    try:
        client.send(post("/ok", b"x"))
        assert client.answer() == (200, b"1")
    finally:
        client.close()


def test_slow_heads_and_silent_connections_are_closed_quietly_however_many(serve):
    # one worker, one waiting place, 0.5 s deadlines: 5 connections that never send a byte and 5 that drip a head
    # a byte every 0.1 s are each closed without an answer (none is refused with 503 for want of a worker)
    server, port, seen = serve(max_workers=1, max_pending=1, idle_timeout_s=0.5, read_timeout_s=0.5)
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
    slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
    stop = threading.Event()

    def drip() -> None:
        head = b"POST / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 200
        for i in range(len(head)):
            if stop.wait(0.1):
                return
            for sock in slow:
                try:
                    sock.sendall(head[i:i + 1])
                except OSError:
                    pass

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    try:
        assert [answer_of(s) for s in silent + slow] == [b""] * 10
        assert server.refused == 0 and seen == []
    finally:
        stop.set()
        for sock in silent + slow:
            sock.close()


def test_past_max_connections_a_new_connection_gets_503_and_room_comes_back(serve):
    server, port, seen = serve(**SMALL, max_connections=3, retry_after_s=2)
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    try:
        with socket.create_connection(("127.0.0.1", port)) as extra:
            answer = answer_of(extra)
        assert answer is not None and answer.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 2" in answer
        assert server.refused == 1
    finally:
        idle.pop().close()
    try:
        deadline, got = time.monotonic() + 5, None
        while got is None and time.monotonic() < deadline:  # once the gatherer has seen the close
            client = Client(port)
            try:
                client.send(post("/in", b"ok"))
                status, body = client.answer()
                if status == 200:
                    got = body
            finally:
                client.close()
        assert got == b"2"
    finally:
        for sock in idle:
            sock.close()


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a certificate")
    where: Path = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(str(cert), str(key))
    return server, ssl.create_default_context(cafile=str(cert))


def test_tls_handshakes_and_heads_are_gathered_without_a_worker(serve, tls):
    # one worker, one waiting place: 3 connections that never start their TLS handshake, one that sends half a
    # ClientHello and 2 handshaken ones idle hold no worker; a TLS client's keep-alive and pipelined requests are
    # answered (the decrypted bytes an SSL socket holds are read as well as the socket's)
    server_ctx, client_ctx = tls
    _, port, seen = serve(server_ctx, **{**SMALL, "max_workers": 1, "max_pending": 1})
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    half = socket.create_connection(("127.0.0.1", port))
    half.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's first bytes, no more
    idle = [Client(port, client_ctx) for _ in range(2)]
    client = Client(port, client_ctx)
    try:
        client.send(post("/a", b"x"))
        assert client.answer() == (200, b"1")
        client.send(post("/b", b"yy") + post("/c", b"zzz"))
        assert [client.answer(), client.answer()] == [(200, b"2"), (200, b"3")]
        assert [path for _, path, _ in seen] == ["/a", "/b", "/c"]
        assert all(nothing_received(s) for s in silent + [half])
    finally:
        client.close()
        for c in idle:
            c.close()
        for sock in silent + [half]:
            sock.close()


def test_tls_handshake_not_done_within_read_timeout_s_is_closed(serve, tls):
    server_ctx, _ = tls
    server, port, _ = serve(server_ctx, max_workers=1, max_pending=1, idle_timeout_s=30, read_timeout_s=0.5)
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    try:
        for sock in socks:
            sock.sendall(b"\x16\x03\x01\x02\x00\x01")  # a handshake started, never finished
        assert [answer_of(s) for s in socks] == [b""] * 4
        assert server.refused == 0
    finally:
        for sock in socks:
            sock.close()


def test_connections_reset_mid_head_leave_the_gatherer_serving(serve):
    # connections that send part of a head and then reset (RST) fail their reads in the gatherer: each is
    # dropped, and the gatherer goes on serving the idle connections' neighbours
    server, port, seen = serve(**{**SMALL, "max_workers": 1, "max_pending": 1})
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    for _ in range(5):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # RST
    client = Client(port)
    try:
        client.send(post("/after", b"ok"))
        assert client.answer() == (200, b"2")
        assert seen == [("POST", "/after", b"ok")] and head_threads()
    finally:
        client.close()
        for sock in idle:
            sock.close()


def test_an_error_on_one_connection_closes_that_one_and_the_gatherer_goes_on(serve, monkeypatch):
    # whatever goes wrong while one connection's head is read (here: the head's scan raises for it) closes that
    # connection alone; the others are still read and served
    real = netsec._HEAD_END

    class Boom:
        def search(self, buf, pos=0):
            if b"boom" in buf:
                raise RuntimeError("boom")
            return real.search(buf, pos)

    monkeypatch.setattr(netsec, "_HEAD_END", Boom())
    _, port, seen = serve(**SMALL)
    waiting = Client(port)
    waiting.send(b"POST /waiting HTTP/1.1\r\nHost: x\r\n")  # half a head, before the bad one
    try:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port)) as bad:
                bad.sendall(b"GET /boom HTTP/1.1\r\n")
                assert answer_of(bad) == b""
        waiting.send(b"Content-Length: 1\r\n\r\nw")
        assert waiting.answer() == (200, b"1")
        client = Client(port)
        try:
            client.send(post("/after", b"ok"))
            assert client.answer() == (200, b"2")
        finally:
            client.close()
        assert [path for _, path, _ in seen] == ["/waiting", "/after"] and head_threads()
    finally:
        waiting.close()
