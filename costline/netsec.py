"""What every costline HTTP listener shares to stay safe in front of production.

* :class:`PooledHTTPServer`: ``http.server`` with a **bounded** pool of worker threads (a
  ``ThreadPoolExecutor``) and a bounded number of complete requests waiting for one, instead of a
  thread per connection; past both, the request is answered ``503`` with ``Retry-After`` at once
  (back-pressure, not growth). One thread per server gathers request heads for every connection
  (``selectors``, non-blocking; TLS handshakes too), so a worker only ever gets a connection whose
  request head is whole: a client sending its head slowly, or idle between keep-alive requests, holds
  no worker, only a place among ``max_connections`` (503 past it), a cap it keeps below the process's
  open-file limit (:func:`connection_room`); out of open files, it pauses accepting instead of spinning.
  Optional TLS (``ssl``).
* :class:`GuardedHandler`: a request handler with socket idle/read timeouts, a cap on header bytes
  (431) and :meth:`~GuardedHandler.read_body`, which refuses a missing (411), malformed, negative
  or repeated-and-different ``Content-Length`` (400), a body over the limit before reading it
  (413) and a body shorter than announced once the read timeout passes (400). A
  ``Transfer-Encoding: chunked`` body (what OpenTelemetry JS's OTLP exporters send) is decoded with
  the same limit counted as it arrives (413), and refused beside a ``Content-Length`` (400: the
  ambiguity request smuggling uses) or with any other transfer coding (501).
  Deadlines, not only per-read timeouts: a request head (request line and headers) must arrive whole
  within ``read_timeout_s`` of its first byte (else the connection is closed; kept by the head
  gatherer, no worker waits for it), a body within ``body_timeout_s`` once the head is in (else 408,
  the connection closed), so a client trickling its body holds a worker for a bounded time.
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

import errno
import heapq
import hmac
import io
import itertools
import ipaddress
import logging
import os
import re
import select
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

from costline.errors import ConfigError, CostlineError
from costline.validate import Section

try:
    import resource
except ImportError:  # pragma: no cover - not on Windows
    resource = None  # type: ignore[assignment]

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
    "connection_room",
    "raise_open_file_limit",
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
#: Bytes a request head may have beyond ``max_header_bytes`` (its request line: method, target, version):
#: past both, before the head has ended, the head gatherer answers 431 (414 while still in the request line).
_REQUEST_LINE_ALLOWANCE = 8 * 1024
#: The end of a request head: an empty line, ``\r\n`` or a bare ``\n`` (as ``http.client`` reads headers).
_HEAD_END = re.compile(rb"\n\r?\n")
#: After the head gatherer refuses a request (431, 414, 503): how long it reads and drops what the client
#: still sends, so the client reads the answer instead of a connection reset.
_REFUSAL_LINGER_S = 2.0
#: How long a worker that answered a request on a connection kept open waits for the client's next request
#: before handing the connection back to the head gatherer (a client that sends it at once is served on without
#: a handoff between threads, which cost a fifth of a keep-alive request's throughput), and how many requests of
#: one connection a worker serves in a row (then it hands the connection back: other connections get their turn).
_KEEP_ALIVE_LINGER_S = 0.002
_KEEP_ALIVE_TURNS = 32
#: ``Limits.max_connections`` when a settings object says 0 (the gateway's "derive it" value).
_DEFAULT_MAX_CONNECTIONS = 1024
#: Open files a :class:`PooledHTTPServer` leaves to the rest of the process (Kafka, SQLite, logs, the listener)
#: beside the connections it may hold (as ``serving/gateway/asgi.py`` does; duplicated here: that module needs the
#: serving extra, this one only the standard library).
_RESERVED_FDS = 128
#: The soft open-file limit asked for when the hard limit is unlimited (Linux refuses more than fs.nr_open).
_NOFILE_CEILING = 1_048_576
#: ``accept()`` failing for want of a file descriptor (or kernel memory): the listening socket stays readable, so
#: retrying at once spins a core. The server pauses this long (s) after each such failure instead.
_OUT_OF_FILES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_ACCEPT_PAUSE_S = 0.1
#: At most one warning about it in this many seconds (it says how many failures it stands for).
_ACCEPT_WARN_EVERY_S = 60.0


def raise_open_file_limit() -> int:
    """Raise this process's soft limit on open files (RLIMIT_NOFILE) to its hard limit; the soft limit now. The
    collector's and stand-ins' servers and the gateway's (``serving/gateway/asgi.py``) call it: a service manager's
    default soft limit (1,024 under systemd) is far below what a server with many keep-alive connections needs, while
    the hard limit is high (524,288 there), and raising the soft one is allowed to anyone."""
    if resource is None:  # pragma: no cover
        return _DEFAULT_MAX_CONNECTIONS + _RESERVED_FDS
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return _DEFAULT_MAX_CONNECTIONS + _RESERVED_FDS
    target = _NOFILE_CEILING if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
        except (OSError, ValueError) as exc:
            log.warning("costline: could not raise the open-file limit from %d to %d (%s)", soft, target, exc)
    return _NOFILE_CEILING if soft == resource.RLIM_INFINITY else soft


def connection_room(limits: "Limits", open_files: int) -> int:
    """The most connections a :class:`PooledHTTPServer` holds waiting for a request: ``limits.max_connections``
    (0: 1,024), but never so many that, with one connection per worker and per pending request
    (``max_workers`` + ``max_pending``), fewer than 128 of the process's ``open_files`` are left to the rest of it;
    at least 1."""
    wanted = limits.max_connections if limits.max_connections > 0 else _DEFAULT_MAX_CONNECTIONS
    room = open_files - _RESERVED_FDS - limits.max_workers - limits.max_pending
    return max(min(wanted, room), 1)


@dataclass(frozen=True)
class Limits:
    """A listener's resource limits (each area's settings carry the same keys)."""

    max_body_bytes: int = 8 * 1024 * 1024
    max_header_bytes: int = 32 * 1024
    #: Seconds a connection may sit idle between requests (or before its first one), and a worker may
    #: wait to write to a client that reads nothing.
    idle_timeout_s: float = 15.0
    #: Seconds a body may take to arrive once its headers are in (per socket read); also what a
    #: request head (request line and headers) may take in all from its first byte, and a TLS
    #: handshake from when the connection was accepted.
    read_timeout_s: float = 10.0
    #: Seconds a whole body may take to arrive once its headers are in (a body trickled a byte at a
    #: time holds its worker and its bytes in flight no longer): 408 past it.
    body_timeout_s: float = 30.0
    #: Requests served at once, and ones whose head is in waiting for a worker; past both: 503.
    max_workers: int = 32
    max_pending: int = 64
    #: Connections open without a request being served (sending their head, idle between keep-alive
    #: requests), held by the head gatherer (each with at most ``max_header_bytes`` + 8 KiB read);
    #: past it a new connection is answered 503. 0: 1024.
    max_connections: int = _DEFAULT_MAX_CONNECTIONS
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
    if hasattr(settings, "max_connections"):
        s.not_negative("max_connections", getattr(settings, "max_connections"))
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
    query = min((i for i in (rest.find(c) for c in "?#") if i >= 0), default=len(rest))
    at = rest.rfind("@", 0, query)
    cred = rest[:at] if at >= 0 else ""
    user, colon, password = cred.partition(":")
    # a password written with a raw "/" ("u:pa/ss@host": RFC 3986 wants it percent-encoded, people do not) still
    # ends at the last "@" before the query; a path holding "@" after a port ("host:8080/a@b") is masked too (a URL
    # shown wrong rather than a password shown)
    if colon and "/" not in user:
        start = at + 1
    else:
        start, user, colon = 0, "", ""
    end = min((i for i in (rest.find(c, start) for c in "/?#") if i >= 0), default=len(rest))
    authority, path = rest[start:end], rest[end:]
    if colon:
        authority = f"{user}:***@{authority}"
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
    """An ``HTTPServer`` whose requests are served by at most ``limits.max_workers`` threads, and whose
    connections wait for a request without holding one.

    A head-gathering thread (:class:`_HeadGatherer`: one ``selectors`` selector, non-blocking sockets)
    holds every connection that has no complete request head: new ones and keep-alive ones between two
    requests. It does the TLS handshake (``ssl_ctx``; within ``read_timeout_s`` of the accept), reads a
    head into the connection's buffer until its empty line, then hands the connection and the bytes it
    read to the pool. So a worker only ever gets a request whose head is whole: a client sending its head
    a byte at a time, or idle between requests, holds no worker. The gatherer closes a connection that
    sends no byte within ``idle_timeout_s``, or whose head is not whole within ``read_timeout_s`` of its
    first byte; a head past ``max_header_bytes`` + 8 KiB still unended is answered 431 (414 while still
    in its request line). It holds at most ``limits.max_connections`` connections: past it a new one gets
    ``busy`` (a complete HTTP 503 answer with ``Retry-After``; a TLS one, which would need its handshake
    first, none) and is closed. That cap is kept below the open-file limit (:func:`connection_room`, after
    :func:`raise_open_file_limit`; a warning says when it cuts it): a server out of file descriptors could accept
    nothing, its listening socket readable forever. Should ``accept()`` still fail for want of one (other files of
    the process), the server logs a warning (at most one a minute) and pauses accepting 0.1 s (``sleep``)
    instead of retrying at once. :attr:`max_connections` is the cap in force.

    A :class:`~concurrent.futures.ThreadPoolExecutor` (threads made on demand, idle ones blocked, not
    polling) serves one request a turn (:meth:`GuardedHandler.handle`); at most ``limits.max_pending``
    more complete requests wait for a thread, past both the request gets ``busy``. A connection kept
    open after its answer goes back to the gatherer with any bytes already read past the request (a
    pipelined next one). ``handler`` must be a :class:`GuardedHandler` (it takes the gathered bytes).
    Closing the server stops the gatherer and closes every connection it still holds, the gatherer's
    and the workers', so no thread outlives it waiting on a client. ``refused`` counts the 503s.
    """

    daemon_threads = True
    #: The listen backlog (socketserver's default is 5: a burst of a few more connections than that, slowloris
    #: ones included, had the kernel drop the next SYNs, a second's retransmission each).
    request_queue_size = 128
    #: Tells :meth:`GuardedHandler.handle` that request heads arrive gathered, one request a turn.
    gathers_heads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], *, limits: Limits,
                 ssl_ctx: ssl.SSLContext | None = None, busy_body: tuple[str, bytes] | None = None,
                 name: str = "costline-http", now: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not (isinstance(handler, type) and issubclass(handler, GuardedHandler)):
            raise TypeError(f"PooledHTTPServer serves a GuardedHandler subclass (it hands it gathered request heads), "
                            f"not {handler!r}")
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.limits = limits
        self.ssl_ctx = ssl_ctx
        self.refused = 0
        self._refused_lock = threading.Lock()
        self._busy_type, self._busy_body = busy_body or ("text/plain", b"busy, retry later\n")
        self._slots = threading.BoundedSemaphore(limits.max_workers + limits.max_pending)
        #: connections handed to the pool -> the bytes gathered of them (until a worker takes them)
        self._open: dict[Any, bytes] = {}
        self._open_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._heads: _HeadGatherer | None = None
        self._name = name
        self._now = now
        self._sleep = sleep
        self._accept_failures = 0  # since the last warning about them
        self._accept_warned_at: float | None = None
        open_files = raise_open_file_limit()
        #: Connections held waiting for a request at most (``limits.max_connections`` within the open-file limit).
        self.max_connections = connection_room(limits, open_files)
        wanted = limits.max_connections if limits.max_connections > 0 else _DEFAULT_MAX_CONNECTIONS
        if self.max_connections < wanted:
            log.warning("%s: the open-file limit (%d) leaves room for %d connections waiting for a request, not %d "
                        "(%d files go to %d workers and %d pending requests, %d to the rest of the process): "
                        "past it new ones get 503. Raise the limit (ulimit -n; systemd LimitNOFILE=)",
                        name, open_files, self.max_connections, wanted,
                        limits.max_workers + limits.max_pending, limits.max_workers, limits.max_pending,
                        _RESERVED_FDS)
        super().__init__(address, handler)
        self._pool = ThreadPoolExecutor(max_workers=limits.max_workers, thread_name_prefix=f"{name}-worker")
        self._heads = _HeadGatherer(self, name)
        self._heads.start()

    def get_request(self) -> tuple[Any, Any]:
        try:
            sock, addr = self.socket.accept()
        except OSError as exc:
            if exc.errno in _OUT_OF_FILES:
                self._out_of_files(exc)
            raise  # socketserver drops it: the connection stays in the backlog for the next try
        if self.ssl_ctx is not None:  # the handshake: on the head gatherer, non-blocking
            sock = self.ssl_ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def _out_of_files(self, exc: OSError) -> None:
        """``accept()`` found no file descriptor: warn (once a minute at most), then pause accepting a while (the
        listening socket stays readable: retrying at once would spin a core and starve the workers)."""
        self._accept_failures += 1
        now = self._now()
        if self._accept_warned_at is None or now - self._accept_warned_at >= _ACCEPT_WARN_EVERY_S:
            log.warning("%s: cannot accept connections: %s (%d time(s) since the last warning); pausing accepts "
                        "%gs at a time. Raise the open-file limit (ulimit -n; systemd LimitNOFILE=)",
                        self._name, exc.strerror or exc, self._accept_failures, _ACCEPT_PAUSE_S)
            self._accept_warned_at = now
            self._accept_failures = 0
        self._sleep(_ACCEPT_PAUSE_S)

    def process_request(self, request: Any, client_address: Any) -> None:
        heads = self._heads
        if self._pool is None or heads is None or not heads.add(request, client_address, b"", new=True):
            self._count_refused()
            self._answer_busy(request)
            self.shutdown_request(request)

    def _count_refused(self) -> None:
        with self._refused_lock:
            self.refused += 1

    def _to_worker(self, request: Any, client_address: Any, gathered: bytes) -> bool:
        """Queue a connection whose request head is whole (``gathered``: the bytes read of it) for a worker;
        False when ``max_workers`` + ``max_pending`` are taken or the server is closing (the caller answers)."""
        pool = self._pool
        if pool is None or not self._slots.acquire(blocking=False):
            return False
        with self._open_lock:
            self._open[request] = gathered
        try:
            pool.submit(self._serve_one, request, client_address)
        except RuntimeError:  # the pool is shut down: the server is closing
            with self._open_lock:
                self._open.pop(request, None)
            self._slots.release()
            return False
        return True

    def gathered(self, request: Any) -> bytes:
        """The bytes the head gatherer read of ``request`` (a request head and what followed it), once."""
        with self._open_lock:
            data = self._open.get(request, b"")
            if request in self._open:
                self._open[request] = b""
        return data

    def _serve_one(self, request: Any, client_address: Any) -> None:
        kept: bytes | None = None
        try:
            for _turn in range(_KEEP_ALIVE_TURNS):
                kept = None
                handler = self.RequestHandlerClass(request, client_address, self)
                kept = getattr(handler, "kept", None)
                if kept is None:
                    break
                kept, whole = self._next_head(request, kept)
                if kept is None or not whole:
                    break
                with self._open_lock:  # a whole next head: this worker serves it too (its slot still held)
                    self._open[request] = kept
        except Exception:
            kept = None
            self.handle_error(request, client_address)
        finally:
            with self._open_lock:
                self._open.pop(request, None)
            self._slots.release()
            heads = self._heads
            if kept is None or heads is None or not heads.add(request, client_address, kept, new=False):
                self.shutdown_request(request)

    def _next_head(self, request: Any, kept: bytes) -> tuple[bytes | None, bool]:
        """After an answer on a connection kept open: ``(bytes read of it, whether they hold a whole request
        head)``, waiting at most :data:`_KEEP_ALIVE_LINGER_S` for the client's next request (a client that sends
        it on the heels of the answer is served by this worker, without a handoff to the head gatherer and back);
        ``(None, False)`` when the client closed. TLS connections are handed back at once (a record may be
        half there)."""
        limit = self.limits.max_header_bytes + _REQUEST_LINE_ALLOWANCE
        if _HEAD_END.search(kept) or isinstance(request, ssl.SSLSocket) or len(kept) > limit:
            return kept, _HEAD_END.search(kept) is not None
        try:
            if not select.select([request], [], [], _KEEP_ALIVE_LINGER_S)[0]:
                return kept, False
            more = request.recv(limit + 1 - len(kept))
        except (OSError, ValueError):
            return None, False
        if not more:
            return None, False
        kept += more
        end = _HEAD_END.search(kept)
        return kept, end is not None and end.start() <= limit

    def _busy_answer(self) -> bytes:
        head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: {self._busy_type}\r\n"
                f"Content-Length: {len(self._busy_body)}\r\nRetry-After: {max(self.limits.retry_after_s, 1)}\r\n"
                "Connection: close\r\n\r\n").encode("ascii")
        return head + self._busy_body

    def _answer_busy(self, request: Any) -> None:
        """Answer ``busy`` on a connection just accepted (plain TCP only: a TLS one would need its handshake
        first, on the accepting thread, so it is closed unanswered)."""
        if isinstance(request, ssl.SSLSocket):
            return
        try:
            request.settimeout(1.0)
            request.sendall(self._busy_answer())
        except (OSError, ValueError):
            pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s ended with an error", client_address, exc_info=True)

    def server_close(self) -> None:
        super().server_close()
        heads = self._heads
        if heads is not None:
            heads.stop()  # closes what it holds; nothing reaches the pool after this
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        with self._open_lock:
            still = list(self._open)
        for request in still:  # wake workers blocked on slow clients; queued ones are just closed
            try:
                request.shutdown(socket.SHUT_RDWR)
            except (OSError, ValueError):
                pass
            try:
                request.close()
            except (OSError, ValueError):
                pass


class _Gathering:
    """A connection the head gatherer holds, and where it is: ``handshake`` (TLS), ``head`` (reading a
    request head into ``buf``) or ``drain`` (answered and refused: reading and dropping what still comes)."""

    __slots__ = ("sock", "addr", "buf", "state", "scanned", "events", "gen", "gone", "dropped")

    def __init__(self, sock: Any, addr: Any, buf: bytes) -> None:
        self.sock = sock
        self.addr = addr
        self.buf = bytearray(buf)
        self.state = "head"
        self.scanned = 0  # where to look for the head's end from (what was scanned before cannot hold it)
        self.events = 0  # what the selector watches for (0: not registered)
        self.gen = 0  # the current deadline's number (an older one in the heap is void)
        self.gone = False  # handed to a worker or closed: nothing more to do here
        self.dropped = 0


class _HeadGatherer:
    """The thread of a :class:`PooledHTTPServer` that holds connections until a request head is whole.

    :meth:`add` (any thread) queues a connection for it: a new one (``new``: its TLS handshake first) or
    one a worker kept open, with the bytes already read of it. The thread owns the connections from
    then on: one ``selectors`` selector, non-blocking reads into a buffer per connection, a heap of
    deadlines. An error on one connection closes that one (logged at debug); the others go on.
    """

    def __init__(self, server: PooledHTTPServer, name: str) -> None:
        limits = server.limits
        self._server = server
        self._idle_s = limits.idle_timeout_s
        self._head_s = limits.read_timeout_s
        self._max = server.max_connections
        self._head_limit = limits.max_header_bytes + _REQUEST_LINE_ALLOWANCE
        self._drain_limit = limits.max_body_bytes + self._head_limit
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._incoming: deque[tuple[Any, Any, bytes, bool]] = deque()
        self._held = 0  # queued in _incoming or in _conns (what max_connections bounds)
        self._closed = False
        self._finished = False
        self._conns: set[_Gathering] = set()
        self._timers: list[tuple[float, int, int, _Gathering]] = []
        self._seq = itertools.count()
        self._thread = threading.Thread(target=self._run, name=f"{name}-heads", daemon=True)

    # -- any thread ------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    @property
    def held(self) -> int:
        """Connections held now (waiting for a request head, or being refused)."""
        with self._lock:
            return self._held

    def add(self, sock: Any, addr: Any, data: bytes, *, new: bool) -> bool:
        """Hold ``sock`` until its next request head is whole (``data``: bytes already read of it); False,
        taking nothing, when ``max_connections`` are held or the gatherer is stopped."""
        with self._lock:
            if self._closed or self._held >= self._max:
                return False
            self._held += 1
            self._incoming.append((sock, addr, data, new))
        self._wake()
        return True

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread and close every connection held (idempotent)."""
        with self._lock:
            self._closed = True
        self._wake()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        if not self._thread.is_alive():  # never started, or done: close what is left here
            self._close_all()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:  # full (a wake is pending anyway) or closed (stopped)
            pass

    # -- the gatherer's thread ---------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    if self._closed:
                        return
                try:
                    self._turn()
                except Exception:  # never let the gatherer die: drop what broke, go on
                    log.debug("head gatherer: recovering from an error", exc_info=True)
                    self._purge()
                    time.sleep(0.01)
        finally:
            self._close_all()

    def _turn(self) -> None:
        timeout = 1.0
        if self._timers:
            timeout = min(max(self._timers[0][0] - time.monotonic(), 0.0), 1.0)
        for key, _ in self._sel.select(timeout):
            if key.data is None:
                self._drain_wake()
            else:
                self._guarded(key.data)
        self._take_incoming()
        self._expire(time.monotonic())

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def _take_incoming(self) -> None:
        while True:
            with self._lock:
                if not self._incoming:
                    return
                sock, addr, data, new = self._incoming.popleft()
            conn = _Gathering(sock, addr, data)
            self._conns.add(conn)
            try:
                sock.setblocking(False)
            except (OSError, ValueError):
                self._close(conn)
                continue
            now = time.monotonic()
            if new and isinstance(sock, ssl.SSLSocket):
                conn.state = "handshake"
                self._deadline(conn, now + self._head_s)
            else:
                self._await_head(conn, now)
            self._guarded(conn)  # what is already there (a pipelined request, TLS bytes decrypted): at once

    def _await_head(self, conn: _Gathering, now: float) -> None:
        conn.state = "head"
        self._deadline(conn, now + (self._head_s if conn.buf else self._idle_s))

    def _guarded(self, conn: _Gathering) -> None:
        try:
            self._advance(conn)
        except Exception:
            log.debug("connection from %s closed after an error while reading its request head", conn.addr,
                      exc_info=True)
            self._close(conn)

    def _advance(self, conn: _Gathering) -> None:
        if conn.gone:
            return
        sock = conn.sock
        if conn.state == "handshake":
            try:
                sock.do_handshake()
            except ssl.SSLWantReadError:
                self._watch(conn, selectors.EVENT_READ)
                return
            except ssl.SSLWantWriteError:
                self._watch(conn, selectors.EVENT_WRITE)
                return
            except (OSError, ValueError) as exc:  # a failed handshake (ssl.SSLError is an OSError)
                log.debug("TLS handshake with %s failed: %s", conn.addr, exc)
                self._close(conn)
                return
            self._await_head(conn, time.monotonic())
        if conn.state == "drain":
            self._drain(conn)
            return
        while not self._head_done(conn):
            try:  # an SSL socket may hold decrypted bytes (pending()) the selector cannot see: read till it says so
                data = sock.recv(self._head_limit + 1 - len(conn.buf))
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                self._watch(conn, selectors.EVENT_READ)
                return
            except ssl.SSLWantWriteError:
                self._watch(conn, selectors.EVENT_WRITE)
                return
            except OSError:  # reset by the client
                self._close(conn)
                return
            if not data:  # the client closed it
                self._close(conn)
                return
            if not conn.buf:  # a request's first byte: its head is due read_timeout_s from now
                self._deadline(conn, time.monotonic() + self._head_s)
            conn.scanned = max(len(conn.buf) - 2, 0)
            conn.buf += data

    def _head_done(self, conn: _Gathering) -> bool:
        """Hand ``conn`` on when its head is whole, refuse it when it is too big: True when it is no longer
        reading a head."""
        if _HEAD_END.search(conn.buf, conn.scanned):
            self._unwatch(conn)
            server = self._server
            if server._to_worker(conn.sock, conn.addr, bytes(conn.buf)):
                self._forget(conn)
            else:
                server._count_refused()
                self._refuse(conn, server._busy_answer())
            return True
        conn.scanned = max(len(conn.buf) - 2, 0)
        if len(conn.buf) > self._head_limit:
            limit = self._server.limits.max_header_bytes
            if b"\n" in conn.buf:
                self._refuse(conn, _plain_answer(431, "Request Header Fields Too Large",
                                                 f"request head over {limit} bytes of headers"))
            else:
                self._refuse(conn, _plain_answer(414, "URI Too Long",
                                                 f"request line over {self._head_limit} bytes"))
            return True
        return False

    def _refuse(self, conn: _Gathering, answer: bytes) -> None:
        """Send ``answer`` (small: one non-blocking send), then read and drop what the client still sends for
        a while, its writing side shut, so it reads the answer rather than a reset (TLS: close at once)."""
        conn.buf = bytearray()
        sock = conn.sock
        try:
            sock.send(answer)
        except (OSError, ValueError):
            pass
        if isinstance(sock, ssl.SSLSocket):
            self._close(conn)
            return
        try:
            sock.shutdown(socket.SHUT_WR)
        except (OSError, ValueError):
            self._close(conn)
            return
        conn.state = "drain"
        self._deadline(conn, time.monotonic() + _REFUSAL_LINGER_S)
        self._drain(conn)

    def _drain(self, conn: _Gathering) -> None:
        try:
            data = conn.sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            self._watch(conn, selectors.EVENT_READ)
            return
        except OSError:
            self._close(conn)
            return
        conn.dropped += len(data)
        if not data or conn.dropped > self._drain_limit:
            self._close(conn)
        else:
            self._watch(conn, selectors.EVENT_READ)

    def _deadline(self, conn: _Gathering, at: float) -> None:
        conn.gen += 1
        heapq.heappush(self._timers, (at, next(self._seq), conn.gen, conn))

    def _expire(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            _, _, gen, conn = heapq.heappop(self._timers)
            if conn.gone or gen != conn.gen:
                continue
            if conn.state == "head" and conn.buf:
                log.debug("closing the connection from %s: its request head was not whole within %gs",
                          conn.addr, self._head_s)
            elif conn.state == "handshake":
                log.debug("closing the connection from %s: no TLS handshake within %gs", conn.addr, self._head_s)
            self._close(conn)

    def _watch(self, conn: _Gathering, events: int) -> None:
        if conn.events == events:
            return
        if conn.events:
            self._sel.modify(conn.sock, events, conn)
        else:
            self._sel.register(conn.sock, events, conn)
        conn.events = events

    def _unwatch(self, conn: _Gathering) -> None:
        if conn.events:
            conn.events = 0
            try:
                self._sel.unregister(conn.sock)
            except (KeyError, ValueError, OSError):
                pass

    def _forget(self, conn: _Gathering) -> None:
        """Stop holding ``conn`` (handed on, or closed by the caller)."""
        if conn.gone:
            return
        conn.gone = True
        conn.gen += 1
        self._unwatch(conn)
        self._conns.discard(conn)
        with self._lock:
            self._held -= 1

    def _close(self, conn: _Gathering) -> None:
        if conn.gone:
            return
        self._forget(conn)
        conn.buf = bytearray()
        try:
            conn.sock.close()
        except (OSError, ValueError):
            pass

    def _purge(self) -> None:
        """After an error outside any one connection: close the connections whose socket is gone."""
        for conn in list(self._conns):
            try:
                broken = conn.sock.fileno() < 0
            except Exception:
                broken = True
            if broken:
                self._close(conn)

    def _close_all(self) -> None:
        with self._lock:
            if self._finished:
                return
            self._finished = True
            self._closed = True
            queued = [item[0] for item in self._incoming]
            self._incoming.clear()
        for sock in queued:
            try:
                sock.close()
            except (OSError, ValueError):
                pass
        for conn in list(self._conns):
            self._close(conn)
        self._timers.clear()
        for thing in (self._sel, self._wake_r, self._wake_w):
            try:
                thing.close()
            except (OSError, ValueError):
                pass


def _plain_answer(status: int, reason: str, message: str) -> bytes:
    """A complete ``text/plain`` HTTP/1.1 answer that closes the connection."""
    body = (message + "\n").encode("ascii", "replace")
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode("ascii") + body


class _DeadlineReader(io.RawIOBase):
    """The connection's reads under a :class:`GuardedHandler`'s rfile: first the bytes the head gatherer
    read (``gathered``: a whole request head, and what followed it), then the socket, each read waiting at
    most the handler's per-read timeout and never past its deadline (:meth:`GuardedHandler._expect`), then
    raising ``TimeoutError``; the socket's timeout is the idle one again afterwards (for writes). Once
    :attr:`no_more` is set it reads nothing more from the socket (what is left buffered can be taken)."""

    def __init__(self, sock: Any, handler: "GuardedHandler", gathered: bytes = b"") -> None:
        super().__init__()
        self._sock = sock
        self._handler = handler
        self._gathered = memoryview(gathered)
        self.no_more = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        handler = self._handler
        if self._gathered:
            n = min(len(buffer), len(self._gathered))
            buffer[:n] = self._gathered[:n]
            self._gathered = self._gathered[n:]
            handler._arrived()
            return n
        if self.no_more:
            return 0
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

    Under a :class:`PooledHTTPServer` it serves one request a turn (:meth:`handle`): the server's head
    gatherer has read the request head whole (within ``read_timeout_s`` of its first byte, no worker
    waiting for it), the handler reads it from those bytes, and a connection kept open goes back to the
    gatherer afterwards (:attr:`kept`), so no worker waits on an idle keep-alive client. Every read of
    the socket itself (a body) waits at most a per-read timeout (``read_timeout_s``) and never past a
    deadline: ``body_timeout_s`` after the head (:meth:`read_body`: 408). A client sending its body a
    byte a read therefore holds a worker for a bounded time, not indefinitely. Under another server it
    loops over the connection's requests as ``BaseHTTPRequestHandler`` does, each head due within
    ``read_timeout_s`` of its first byte, the first byte within ``idle_timeout_s``."""

    protocol_version = "HTTP/1.1"
    server: PooledHTTPServer

    #: The current per-read timeout and deadline (``time.monotonic``, None: none), and whether the next
    #: bytes to arrive are a request's first (they start the head's deadline).
    _per_read_s = 15.0
    _deadline: float | None = None
    _head_due = False
    #: Whether the last read's wait was cut to what was left before the deadline.
    _capped = False
    #: After :meth:`handle` under a :class:`PooledHTTPServer`: None when the connection is to be closed,
    #: else the bytes read past the request (a pipelined next one's), for the head gatherer.
    kept: bytes | None = None
    _raw: _DeadlineReader | None = None

    def setup(self) -> None:
        self.timeout = self.server.limits.idle_timeout_s
        super().setup()
        self.rfile.close()  # the stdlib's socket file: replaced by one that keeps the deadlines
        gathered = self.server.gathered(self.request) if getattr(self.server, "gathers_heads", False) else b""
        self._raw = _DeadlineReader(self.connection, self, gathered)
        self.rfile = io.BufferedReader(self._raw)

    def handle(self) -> None:
        """One request (its head already gathered), then :attr:`kept` says whether and how the connection
        goes on; under a server that does not gather heads, every request of the connection."""
        if not getattr(self.server, "gathers_heads", False):
            super().handle()
            return
        self.close_connection = True
        self.handle_one_request()
        if not self.close_connection:
            self.kept = self._left_over()

    def _left_over(self) -> bytes | None:
        """The bytes read (gathered or buffered) but not used by the request just served."""
        if self._raw is None:
            return None
        self._raw.no_more = True
        parts = []
        try:
            while chunk := self.rfile.read1(1 << 16):
                parts.append(chunk)
        except (OSError, ValueError):
            return None
        return b"".join(parts)

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
