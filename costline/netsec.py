"""What every costline HTTP listener shares to stay safe in front of production.

* :class:`PooledHTTPServer`: ``http.server`` with a **bounded** pool of worker threads (a
  ``ThreadPoolExecutor``) and a bounded number of accepted connections waiting, instead of a thread
  per connection; past both, the connection is
  answered ``503`` with ``Retry-After`` at once (back-pressure, not growth). Optional TLS (``ssl``).
* :class:`GuardedHandler`: a request handler with socket idle/read timeouts, a cap on header bytes
  (431) and :meth:`~GuardedHandler.read_body`, which refuses a missing (411), malformed, negative
  or repeated-and-different ``Content-Length`` (400), a body over the limit before reading it
  (413) and a body shorter than announced once the read timeout passes (400). A
  ``Transfer-Encoding: chunked`` body (what OpenTelemetry JS's OTLP exporters send) is decoded with
  the same limit counted as it arrives (413), and refused beside a ``Content-Length`` (400: the
  ambiguity request smuggling uses) or with any other transfer coding (501).
  Deadlines, not only per-read timeouts, so a client trickling bytes holds a worker for a bounded
  time: a request head (request line and headers) must arrive whole within ``read_timeout_s`` of
  its first byte (else the connection is closed), a body within ``body_timeout_s`` once the head is
  in (else 408, the connection closed).
* :class:`BytesBudget`: bytes in flight across requests (503 past it); :meth:`GuardedHandler.read_body`
  given one holds a body's bytes on it as they arrive, not as announced.
* :class:`BearerTokens`: constant-time check of ``Authorization: Bearer`` tokens (the OpenTelemetry
  Collector's ``bearertokenauth``), from config and/or a file re-read when it changes.
* :func:`is_loopback`, :func:`refuse_open_bind` (a non-loopback bind without authentication).
* :func:`host_name`, :func:`host_problem`, :func:`host_name_problem`: the ``Host`` check a listener without
  authentication makes against DNS rebinding (a page on a name that resolves to this machine).

Standard library only, so the collector, the gateway and the dashboard server can all use it.
"""

from __future__ import annotations

import hmac
import io
import ipaddress
import logging
import os
import re
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

from costline.errors import ConfigError, CostlineError
from costline.validate import Section

__all__ = [
    "CHUNKED",
    "Limits",
    "HttpReject",
    "InsecureBindError",
    "PooledHTTPServer",
    "GuardedHandler",
    "BytesBudget",
    "BearerTokens",
    "is_loopback",
    "refuse_open_bind",
    "host_name",
    "host_problem",
    "host_name_problem",
    "ssl_context",
    "validate_limits",
    "mask_secret",
    "redact_url",
]

log = logging.getLogger(__name__)

_DIGITS = re.compile(r"[0-9]{1,19}")
_HEX = re.compile(rb"[0-9a-fA-F]{1,15}")
#: :meth:`GuardedHandler.content_length`'s answer for a ``Transfer-Encoding: chunked`` body.
CHUNKED = -1
#: Longest chunk-size line accepted (size, extensions, CRLF).
_MAX_CHUNK_LINE = 1024
#: Most chunks one body may come in (OTel JS's exporters send a few, of ~16 KiB): a body of one-byte
#: chunks would cost a Python loop turn per byte.
_MAX_CHUNKS = 100_000
#: A body held on a :class:`BytesBudget` is read (and held) this many bytes at a time at most: what a
#: connection can hold on the budget without sending it.
_BUDGET_STEP = 64 * 1024
#: A connection's first request head is due ``read_timeout_s`` after it was accepted when its client sent
#: bytes while it waited for a worker, but never less than this after a worker took it (a TLS handshake
#: needs round trips then).
_QUEUED_GRACE_S = 1.0


@dataclass(frozen=True)
class Limits:
    """A listener's resource limits (each area's settings carry the same keys)."""

    max_body_bytes: int = 8 * 1024 * 1024
    max_header_bytes: int = 32 * 1024
    #: Seconds a connection may sit idle between requests (or before its first one).
    idle_timeout_s: float = 15.0
    #: Seconds a body may take to arrive once its headers are in (per socket read); also what a
    #: request head (request line and headers) may take in all from its first byte.
    read_timeout_s: float = 10.0
    #: Seconds a whole body may take to arrive once its headers are in (a body trickled a byte at a
    #: time holds its worker and its bytes in flight no longer): 408 past it.
    body_timeout_s: float = 30.0
    #: Connections served at once, and accepted ones waiting for a worker; past both: 503.
    max_workers: int = 32
    max_pending: int = 64
    #: What a 503 asks the client to wait.
    retry_after_s: int = 1

    @classmethod
    def of(cls, settings: Any) -> "Limits":
        """The limits named the same in an area's settings dataclass."""
        return cls(**{k: getattr(settings, k) for k in cls.__dataclass_fields__ if hasattr(settings, k)})


def validate_limits(section: str, settings: Any) -> None:
    """Raise :class:`ConfigError` naming the first bad limit key of ``[section]``."""
    s = Section(section)
    for key in ("max_body_bytes", "max_header_bytes", "max_workers", "max_pending"):
        if hasattr(settings, key):
            s.at_least(key, getattr(settings, key), 1)
    for key in ("idle_timeout_s", "read_timeout_s", "body_timeout_s"):
        if hasattr(settings, key):
            s.above_zero(key, getattr(settings, key), unit="seconds")
    if hasattr(settings, "retry_after_s"):
        s.not_negative("retry_after_s", getattr(settings, "retry_after_s"))
    cert, key = getattr(settings, "tls_cert_file", None), getattr(settings, "tls_key_file", None)
    s.need((cert is None) == (key is None), "tls_key_file", "set both tls_cert_file and tls_key_file, or neither")


class HttpReject(Exception):
    """An HTTP error answer: status, message and extra headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


class InsecureBindError(CostlineError):
    """A listener would accept unauthenticated requests from beyond this host."""


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; False for 0.0.0.0, names and other addresses."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """``Host`` without its port, lower-cased, brackets and a trailing dot removed (``[::1]:8787`` → ``::1``,
    ``Example.COM.:80`` → ``example.com``)."""
    h = header.strip().lower()
    if h.startswith("["):
        h = h[1:h.find("]")] if "]" in h else h
    elif h.count(":") == 1:
        h = h.rsplit(":", 1)[0]
    return h.rstrip(".") if h not in ("", ".") else h


_HOST_NAME = re.compile(r"[a-z0-9_](?:[a-z0-9_.-]{0,251}[a-z0-9_])?")


def host_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be an allowed host name (a DNS name or an IP address, without scheme, port or path;
    an IPv6 address with or without brackets), or None."""
    bare = name.strip().lower()
    bare = bare[1:-1] if bare.startswith("[") and bare.endswith("]") else bare
    if ":" in bare:
        try:
            ipaddress.IPv6Address(bare)
            return None
        except ValueError:
            return (f"{name[:100]!r} is not a host name: give the name alone, without a scheme, port or path (e.g. "
                    f"\"costline.internal\")")
    if not _HOST_NAME.fullmatch(bare.rstrip(".")):
        return (f"{name[:100]!r} is not a host name: give the name alone, without a scheme, port or path (e.g. "
                f"\"costline.internal\")")
    return None


def _rebindable(name: str) -> bool:
    """Whether a web page can be at ``name`` and have it resolve to this machine (DNS rebinding): a DNS name with a
    dot, whose answers its owner's DNS server gives. Not an IP address (a page's origin is then that address) nor a
    name without a dot (``localhost``, a host's own short name: public DNS answers none; whoever answers for them
    on the local network could answer for any name)."""
    try:
        ipaddress.ip_address(name)
        return False
    except ValueError:
        return "." in name or not name


def host_problem(values: Iterable[str], allowed: Iterable[str]) -> str | None:
    """Why a request whose ``Host`` header lines are ``values`` may come from a DNS rebinding page (the 421 a
    listener without authentication answers), or None. Passes: a name in ``allowed`` (compared as
    :func:`host_name` reads them), an IP address (loopback ones included) and a name without a dot (``localhost``);
    any other DNS name is refused. A request without ``Host`` is not a browser's (every browser sends one) and
    passes."""
    got = list(values)
    if not got:
        return None
    if len(got) > 1:
        return f"Host was sent {len(got)} times: send it once"
    name = host_name(got[0])
    if not _rebindable(name) or name in {host_name(a) for a in allowed}:
        return None
    return f"unknown Host {name[:100]!r}"


def refuse_open_bind(what: str, host: str, *, authenticated: bool, insecure: bool, how: str) -> None:
    """Raise :class:`InsecureBindError` for a non-loopback ``host`` without authentication unless forced."""
    if authenticated or insecure or is_loopback(host):
        return
    raise InsecureBindError(
        f"{what} would listen on {host} without authentication, so anyone who can reach it could use it: "
        f"{how}, bind to 127.0.0.1, or pass --insecure if something in front of it authenticates")


def ssl_context(cert_file: Path | None, key_file: Path | None) -> ssl.SSLContext | None:
    """A server TLS context from PEM files (None when neither is set)."""
    if cert_file is None and key_file is None:
        return None
    if cert_file is None or key_file is None:
        raise ConfigError("tls_key_file", "set both tls_cert_file and tls_key_file, or neither")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert_file), str(key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("tls_cert_file", f"cannot load {cert_file} / {key_file}: {exc}") from None
    return ctx


def mask_secret(value: object) -> str:
    """How a secret is shown: ``****`` plus its last 4 characters when long enough to keep it secret."""
    text = str(value or "")
    if not text:
        return ""
    return "****" + (text[-4:] if len(text) >= 16 else "")


#: Query parameters of a URL whose value is a credential (libpq's ``password``/``sslpassword``, and the usual
#: spellings of a secret), shown as ``***`` by :func:`redact_url`.
_SECRET_PARAM = re.compile(r"(?i)([?&;](?:password|passwd|pwd|sslpassword|secret|[a-z_]*secret[a-z_]*|token|"
                           r"[a-z_]*_key|apikey|api-key)=)[^&;#]*")


def redact_url(uri: str) -> str:
    """``uri`` with the password of its userinfo and the values of credential query parameters replaced by ``***``
    (``postgresql://user:***@host/db``, ``postgresql://user@host/db?password=***``).

    What `costline config`, `costline lake status` and the table lake's errors show of a URL: the user name and the
    rest stay readable, the password never is. The userinfo ends at the authority's last ``@`` (a password may hold
    one). A string with no ``scheme://`` is returned as it is.
    """
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return uri
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, path = rest[:end], rest[end:]
    cred, at, host = authority.rpartition("@")
    if at and ":" in cred:
        authority = f"{cred.split(':', 1)[0]}:***@{host}"
    path = _SECRET_PARAM.sub(r"\1***", path)
    return f"{scheme}://{authority}{path}"


class BytesBudget:
    """Bytes held by requests in flight; ``acquire`` says False rather than exceed ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()

    def acquire(self, n: int) -> bool:
        with self._lock:
            if self._used and self._used + n > self.limit:
                return False
            self._used += n
            return True

    def release(self, n: int) -> None:
        with self._lock:
            self._used = max(self._used - n, 0)

    def would_fit(self, n: int) -> bool:
        """Whether ``acquire(n)`` would succeed now (it reserves nothing)."""
        with self._lock:
            return not self._used or self._used + n <= self.limit

    @property
    def used(self) -> int:
        return self._used


class BearerTokens:
    """Accepted ``Authorization: Bearer <token>`` values, compared in constant time.

    Tokens come from ``tokens`` and from ``file`` (one a line, ``#`` comments), which is
    re-read when its modification time changes, so rotating a token needs no restart.
    """

    def __init__(self, tokens: Iterable[str] = (), file: Path | None = None) -> None:
        self._static = tuple(t for t in tokens if t)
        self._file = file
        self._mtime: float | None = None
        self._from_file: tuple[str, ...] = ()
        self._lock = threading.Lock()
        if file is not None:
            self._reload()

    def _reload(self) -> None:
        assert self._file is not None
        try:
            mtime = os.stat(self._file).st_mtime_ns
        except OSError as exc:
            raise ConfigError("bearer_token_file", f"cannot read {self._file}: {exc.strerror or exc}") from None
        if mtime != self._mtime:
            lines = self._file.read_text(encoding="utf-8").splitlines()
            self._from_file = tuple(s for s in (ln.strip() for ln in lines) if s and not s.startswith("#"))
            self._mtime = mtime

    @property
    def enabled(self) -> bool:
        return bool(self._static) or self._file is not None

    def check(self, authorization: str | None) -> bool:
        if not authorization:
            return False
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token or token != token.strip():
            return False
        if self._file is not None:
            with self._lock:
                try:
                    self._reload()
                except ConfigError:
                    log.warning("bearer token file %s unreadable: refusing every token", self._file)
                    return False
        wanted = token.encode("utf-8", "surrogateescape")
        ok = False
        for candidate in (*self._static, *self._from_file):
            ok |= hmac.compare_digest(candidate.encode("utf-8", "surrogateescape"), wanted)
        return ok


# --- the server ---------------------------------------------------------------------------------
class PooledHTTPServer(HTTPServer):
    """An ``HTTPServer`` whose connections are served by at most ``limits.max_workers`` threads.

    A :class:`~concurrent.futures.ThreadPoolExecutor` (threads made on demand, idle ones
    blocked, not polling) serves connections; at most ``limits.max_pending`` more wait for a
    thread. Past both the connection gets ``busy`` (a complete HTTP 503 answer with
    ``Retry-After``) and is closed. ``ssl_ctx`` wraps each accepted socket; the TLS handshake
    happens on the worker, never on the accepting thread. Closing the server also closes the
    connections it still holds, so no worker outlives it waiting on an idle client.
    """

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], *, limits: Limits,
                 ssl_ctx: ssl.SSLContext | None = None, busy_body: tuple[str, bytes] | None = None,
                 name: str = "costline-http") -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.limits = limits
        self.ssl_ctx = ssl_ctx
        self.refused = 0
        self._busy_type, self._busy_body = busy_body or ("text/plain", b"busy, retry later\n")
        self._slots = threading.BoundedSemaphore(limits.max_workers + limits.max_pending)
        self._open: dict[Any, float] = {}  # connection -> when it was accepted (time.monotonic)
        self._open_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._name = name
        super().__init__(address, handler)
        self._pool = ThreadPoolExecutor(max_workers=limits.max_workers, thread_name_prefix=f"{name}-worker")

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = self.socket.accept()
        if self.ssl_ctx is not None:
            sock = self.ssl_ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def process_request(self, request: Any, client_address: Any) -> None:
        if self._pool is None or not self._slots.acquire(blocking=False):
            self.refused += 1
            self._answer_busy(request)
            self.shutdown_request(request)
            return
        with self._open_lock:
            self._open[request] = time.monotonic()
        try:
            self._pool.submit(self._serve_one, request, client_address)
        except RuntimeError:  # the pool is shut down: the server is closing
            self._done(request)

    def _serve_one(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self._done(request)

    def _done(self, request: Any) -> None:
        with self._open_lock:
            self._open.pop(request, None)
        self.shutdown_request(request)
        self._slots.release()

    def accepted_at(self, request: Any) -> float | None:
        """When ``request`` (a connection being served) was accepted, in ``time.monotonic`` seconds."""
        with self._open_lock:
            return self._open.get(request)

    def _answer_busy(self, request: Any) -> None:
        head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: {self._busy_type}\r\n"
                f"Content-Length: {len(self._busy_body)}\r\nRetry-After: {max(self.limits.retry_after_s, 1)}\r\n"
                "Connection: close\r\n\r\n").encode("ascii")
        try:
            request.settimeout(1.0)
            request.sendall(head + self._busy_body)
        except (OSError, ValueError):
            pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s ended with an error", client_address, exc_info=True)

    def server_close(self) -> None:
        super().server_close()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        with self._open_lock:
            still = list(self._open)
        for request in still:  # wake workers blocked on idle clients; queued ones are just closed
            try:
                request.shutdown(socket.SHUT_RDWR)
            except (OSError, ValueError):
                pass
            try:
                request.close()
            except (OSError, ValueError):
                pass


class _DeadlineReader(io.RawIOBase):
    """The connection's reads under a :class:`GuardedHandler`'s rfile: each waits at most the
    handler's per-read timeout and never past its deadline (:meth:`GuardedHandler._expect`), then
    raises ``TimeoutError``; the socket's timeout is the idle one again afterwards (for writes)."""

    def __init__(self, sock: Any, handler: "GuardedHandler") -> None:
        super().__init__()
        self._sock = sock
        self._handler = handler

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        handler = self._handler
        self._sock.settimeout(handler._wait_s())
        try:
            n = self._sock.recv_into(buffer)
        finally:
            try:
                self._sock.settimeout(handler.timeout)
            except OSError:
                pass  # the connection is already gone
        if n:
            handler._arrived()
        return n


class GuardedHandler(BaseHTTPRequestHandler):
    """A handler that applies its server's :class:`Limits` (set ``server.limits``).

    Every read of the connection waits at most a per-read timeout (``idle_timeout_s`` for a
    request's first byte, ``read_timeout_s`` after) and never past a deadline: ``read_timeout_s``
    after a request's first byte for its head (then the connection is closed), ``body_timeout_s``
    after the head for its body (:meth:`read_body`: 408). A client sending a byte a read therefore
    holds a worker for a bounded time, not indefinitely. A connection's first head is due from when
    the connection was accepted if its client sent bytes while it waited for a worker (a head
    dripped while queued is not given ``read_timeout_s`` more once served)."""

    protocol_version = "HTTP/1.1"
    server: PooledHTTPServer

    #: The current per-read timeout and deadline (``time.monotonic``, None: none), and whether the next
    #: bytes to arrive are a request's first (they start the head's deadline).
    _per_read_s = 15.0
    _deadline: float | None = None
    _head_due = False
    #: Whether the last read's wait was cut to what was left before the deadline.
    _capped = False
    #: When a worker took the connection, and when it was accepted if its client sent bytes meanwhile
    #: (then its first head is due from then: see :data:`_QUEUED_GRACE_S`).
    _taken = 0.0
    _sent_while_queued: float | None = None

    def setup(self) -> None:
        self.timeout = self.server.limits.idle_timeout_s
        super().setup()
        self.rfile.close()  # the stdlib's socket file: replaced by one that keeps the deadlines
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, self))
        self._taken = time.monotonic()
        accepted = self.server.accepted_at(self.request) if hasattr(self.server, "accepted_at") else None
        if accepted is not None and self._taken - accepted > 0.01:
            try:
                if select.select([self.connection], [], [], 0)[0]:
                    self._sent_while_queued = accepted
            except (OSError, ValueError):
                pass

    def handle_one_request(self) -> None:
        self._expect(self.server.limits.idle_timeout_s, None)
        self._head_due = True
        super().handle_one_request()

    def _expect(self, per_read_s: float, within_s: float | None) -> None:
        """From now on: each read within ``per_read_s``, all of them within ``within_s`` (None: no deadline)."""
        self._per_read_s = per_read_s
        self._deadline = None if within_s is None else time.monotonic() + within_s
        self._head_due = False

    def _wait_s(self) -> float:
        """How long the next read may wait (raises ``TimeoutError`` once the deadline has passed)."""
        self._capped = False
        if self._deadline is None:
            return self._per_read_s
        left = self._deadline - time.monotonic()
        if left <= 0:
            self._capped = True
            raise TimeoutError("deadline passed")
        self._capped = left < self._per_read_s
        return min(self._per_read_s, left)

    def _arrived(self) -> None:
        """Bytes arrived: a request's first ones start its head's deadline."""
        if self._head_due:
            read_timeout_s = self.server.limits.read_timeout_s
            self._expect(read_timeout_s, read_timeout_s)
            if self._sent_while_queued is not None:  # they may have come long ago: a head dripped into the queue
                self._deadline = max(self._sent_while_queued + read_timeout_s,
                                     self._taken + min(read_timeout_s, _QUEUED_GRACE_S))
                self._sent_while_queued = None

    def _overdue(self) -> bool:
        """After a ``TimeoutError``: whether the deadline (not the per-read timeout) ran out."""
        return self._capped or (self._deadline is not None and time.monotonic() >= self._deadline)

    def parse_request(self) -> bool:
        ok = super().parse_request()
        self._expect(self.server.limits.idle_timeout_s, None)  # the head is in (or refused)
        if not ok:
            return False
        size = sum(len(k) + len(v) + 4 for k, v in self.headers.items())
        if size > self.server.limits.max_header_bytes:
            self.close_connection = True
            self.send_error(431, f"request headers of {size} bytes exceed {self.server.limits.max_header_bytes}")
            return False
        return True

    #: Body bytes announced but not read (an answer sent before reading them lingers, see :meth:`linger`).
    unread = 0

    def linger(self, max_bytes: int, seconds: float = 2.0) -> None:
        """After an early answer: stop writing, then read and drop what the client still sends (at most
        ``max_bytes`` within ``seconds``) so it reads our answer instead of a connection reset."""
        unread, self.unread = self.unread, 0
        if unread <= 0 or unread > max_bytes:
            return
        try:
            self.wfile.flush()
            self._expect(seconds, seconds)
            if not isinstance(self.connection, ssl.SSLSocket):
                self.connection.shutdown(socket.SHUT_WR)
            while unread > 0:
                chunk = self.rfile.read1(min(unread, 1 << 16))
                if not chunk:
                    break
                unread -= len(chunk)
        except (OSError, ValueError):
            pass
        finally:
            self._expect(self.server.limits.idle_timeout_s, None)

    def header_values(self, name: str) -> list[str]:
        return list(self.headers.get_all(name) or [])

    #: ``max_bytes`` of the chunked body :meth:`content_length` announced, for :meth:`read_body`.
    _chunked_max = 0

    def content_length(self, max_bytes: int) -> int:
        """The announced body size, validated (raises :class:`HttpReject`); :data:`CHUNKED` for a
        chunked body, whose size :meth:`read_body` checks against ``max_bytes`` as it arrives."""
        codings = [p.strip().lower() for v in self.header_values("Transfer-Encoding") for p in v.split(",")]
        if codings:
            self.close_connection = True  # until the body is read whole, the connection cannot be trusted
            if self.header_values("Content-Length"):
                raise HttpReject(400, "both Transfer-Encoding and Content-Length: send one of them")
            if codings != ["chunked"]:
                raise HttpReject(501, f"Transfer-Encoding {', '.join(codings)[:80]!r} is not supported: "
                                      "send chunked or a Content-Length")
            self._chunked_max = max_bytes
            return CHUNKED
        values = self.header_values("Content-Length")
        if not values:
            if self.command in ("POST", "PUT", "PATCH"):
                raise HttpReject(411, "Content-Length is required")
            return 0
        parts = {p.strip() for v in values for p in v.split(",")}
        if len(parts) != 1:
            raise HttpReject(400, f"conflicting Content-Length values {sorted(parts)}: send one")
        (text,) = parts
        if not _DIGITS.fullmatch(text):
            raise HttpReject(400, f"bad Content-Length {text[:40]!r}: a whole number of bytes is required")
        length = int(text)
        if length > max_bytes:
            raise HttpReject(413, f"body of {length} bytes exceeds the limit of {max_bytes}: send less")
        self.unread = length
        return length

    def _busy(self) -> HttpReject:
        return HttpReject(503, "too many bytes in flight, retry later",
                          {"Retry-After": str(max(self.server.limits.retry_after_s, 1))})

    def _too_slow(self, got: int, what: str) -> HttpReject:
        self.close_connection = True
        return HttpReject(408, f"{what} not received within {self.server.limits.body_timeout_s:g}s "
                               f"({got} bytes arrived): send it faster")

    def read_body(self, length: int, budget: BytesBudget | None = None) -> bytes:
        """Read exactly ``length`` bytes, each read within the read timeout (else 400) and all within
        ``body_timeout_s`` (else 408; either closes the connection); :data:`CHUNKED`: the decoded chunks
        (see :meth:`content_length`). With ``budget``, the body's bytes are held on it as they arrive (503
        with ``Retry-After`` when it is full): on return ``len(body)`` bytes are held, the caller's to
        release; on an error none are."""
        self.unread = 0
        if length == CHUNKED:
            return self._read_chunked(self._chunked_max, budget)
        if length == 0:
            return b""
        if budget is not None and not budget.would_fit(length):  # refused before reading, as far as one can tell
            self.unread = length
            raise self._busy()
        limits = self.server.limits
        self._expect(limits.read_timeout_s, limits.body_timeout_s)
        chunks, got, held = [], 0, 0
        try:
            while got < length:
                want = min(length - got, _BUDGET_STEP if budget is not None else 1 << 20)
                if budget is not None:
                    if not budget.acquire(want):
                        self.unread = length - got
                        raise self._busy()
                    held += want
                chunk = self.rfile.read1(want)
                if budget is not None:
                    budget.release(want - len(chunk))
                    held -= want - len(chunk)
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
        except (TimeoutError, socket.timeout):
            self.close_connection = True
            if self._overdue():
                raise self._too_slow(got, f"body of {length} bytes") from None
            raise HttpReject(400, f"body shorter than Content-Length ({got} of {length} bytes within "
                                  f"{limits.read_timeout_s:g}s)") from None
        finally:
            self._expect(limits.idle_timeout_s, None)
            if got != length and budget is not None:
                budget.release(held)
        if got != length:
            self.close_connection = True
            raise HttpReject(400, f"body shorter than Content-Length ({got} of {length} bytes)")
        return b"".join(chunks)

    def _read_chunked(self, max_bytes: int, budget: BytesBudget | None = None) -> bytes:
        """A chunked body (RFC 9112 §7.1), at most ``max_bytes`` decoded, each read within the read
        timeout and all within ``body_timeout_s``, held on ``budget`` as it arrives (see :meth:`read_body`);
        trailers are read and dropped (at most ``max_header_bytes``). Any error closes the connection:
        what is left of the body cannot be skipped safely."""
        limits = self.server.limits
        rfile = self.rfile
        parts: list[bytes] = []
        total = 0
        held = 0

        def line(limit: int, what: str) -> bytes:
            text = rfile.readline(limit + 1)
            if not text.endswith(b"\n"):
                raise HttpReject(400, f"chunked body cut short or {what} longer than {limit} bytes")
            return text

        self.close_connection = True
        self._expect(limits.read_timeout_s, limits.body_timeout_s)
        ok = False
        try:
            while True:
                size_text = line(_MAX_CHUNK_LINE, "a chunk-size line").split(b";", 1)[0].strip()
                if not _HEX.fullmatch(size_text):
                    raise HttpReject(400, f"bad chunk size {size_text[:20]!r}: hexadecimal digits are required")
                size = int(size_text, 16)
                if size == 0:
                    break
                if total + size > max_bytes:
                    raise HttpReject(413, f"chunked body exceeds the limit of {max_bytes} bytes: send less")
                if len(parts) >= _MAX_CHUNKS:
                    raise HttpReject(400, f"chunked body in more than {_MAX_CHUNKS} chunks: send larger chunks")
                pieces, got = [], 0
                while got < size:  # on a budget, a piece at a time: a chunk announced is not a chunk sent
                    want = min(size - got, _BUDGET_STEP) if budget is not None else size - got
                    if budget is not None:
                        if not budget.acquire(want):
                            raise self._busy()
                        held += want
                    piece = rfile.read(want)
                    if budget is not None:
                        budget.release(want - len(piece))
                        held -= want - len(piece)
                    pieces.append(piece)
                    got += len(piece)
                    if len(piece) != want:
                        break
                if got != size or line(2, "a chunk's end") not in (b"\r\n", b"\n"):
                    raise HttpReject(400, "chunked body cut short: a chunk is shorter than its size")
                parts.append(b"".join(pieces) if len(pieces) != 1 else pieces[0])
                total += size
            trailers = 0
            while (text := line(limits.max_header_bytes, "a trailer")) not in (b"\r\n", b"\n"):
                trailers += len(text)
                if trailers > limits.max_header_bytes:
                    raise HttpReject(431, f"trailers exceed {limits.max_header_bytes} bytes")
            ok = True
        except (TimeoutError, socket.timeout):
            if self._overdue():
                raise self._too_slow(total, "chunked body") from None
            raise HttpReject(400, f"chunked body not received within {limits.read_timeout_s:g}s a read "
                                  f"({total} bytes so far)") from None
        finally:
            self._expect(limits.idle_timeout_s, None)
            if not ok and budget is not None:
                budget.release(held)
        self.close_connection = False
        return b"".join(parts)
