"""The gateway's HTTP server: Starlette on uvicorn, the request-handling core in a bounded thread pool.

The handlers stay plain functions ``HttpRequest -> HttpResponse`` (:mod:`costline.serving.gateway._http`),
because everything they do blocks: the API-key check, JSON parsing, embedding the query, the FAISS
search, the SDK call to the model. :class:`AsgiServer` runs them on a ``ThreadPoolExecutor`` of
``max_workers`` threads, so the event loop only moves bytes; it never embeds or searches.

* **bounded concurrency, back-pressure**: at most ``max_workers`` requests run and ``max_pending``
  wait for a thread; past that a request is answered at once with the API's *busy* answer
  (the gateway's: ``529 overloaded_error`` with ``retry-after``) instead of queueing without bound.
  Idle keep-alive connections cost no thread. A request whose client goes away while it waits for a thread is
  dropped then, never run (a caller that gave up on a busy gateway is not sent to a model and paid for; its slot is
  freed at once). ``admit_head(request)`` (the gateway's key, tenant and
  rate checks) runs on the request's head before any of that: a caller it refuses (401/403/429) is
  answered at once and holds neither a slot nor the server's time waiting for its body;
* **per tenant**: ``tenant_of()`` (run in the context ``admit_head`` left) names the request's tenant, and
  one tenant has at most ``max_in_flight_per_tenant`` requests admitted at once (0: ``max_workers`` plus
  half of ``max_pending``, rounded up); past it that tenant's request is answered ``429`` with
  ``retry-after`` (``reject``) and the other tenants keep the rest of the slots: a tenant whose requests
  are slow cannot take every one. They are counted in ``tenant_counts``: this process's own
  (:class:`~costline.serving.gateway.shared_limits.TenantCounts`), or, for the workers of ``costline serve
  --workers N``, a table they share (:class:`~costline.serving.gateway.shared_limits.SharedTenantCounts`: the cap
  holds across them);
* **connections**: the soft limit on open files is raised to the hard one at start, and at most
  ``max_connections`` connections are open at once (0: three quarters of that limit, at most 16,384),
  so idle ones cannot take every file descriptor: past it the connection idle longest (no request
  running on it) is closed to make room, or, when every one is busy, the new one is;
* **limits** (:class:`~costline.netsec.Limits`): body size (413 before reading it, from
  ``Content-Length``, and while reading a chunked one), a body slower than ``read_timeout_s`` per read
  (400) and, in all, ``read_timeout_s`` plus ``read_timeout_s`` per 64 KiB received (a body trickled
  a byte at a time holds no slot for longer), header bytes (h11's ``max_incomplete_event_size`` while
  a head arrives, 431 for a whole one over the limit), a request head due within ``read_timeout_s`` of
  its first byte (slowloris), keep-alive idle timeout; a request h11 cannot parse gets a 400 in the
  API's error format (:class:`_ApiH11Protocol`);
* **stalled streams**: each piece of a streamed answer must be taken by the connection within
  ``idle_timeout_s`` (the client reads, so the send buffer drains); a client that stops reading has its
  connection dropped, its slot freed and its answer's producer closed as if it had gone away (one warning). A
  connection being closed (keep-alive timeout, ``Connection: close``) whose client takes none of what is left to
  send for ``idle_timeout_s`` is dropped too (asyncio would wait for it for ever, the bytes held in memory);
* **graceful drain**: on SIGTERM (or :meth:`AsgiServer.shutdown`) ``/readyz`` turns 503, the
  listener closes, requests in flight finish (at most ``drain_timeout_s``), then the process exits;
* ``HEAD`` on a ``GET`` route is answered as the GET (its checks, its status and headers, ``content-length``
  included) without a body (RFC 9110 §9.3.2: load balancers and uptime checks send it); a streamed answer's stream
  is closed unread;
* a method a served path is not served by is answered ``405`` with ``Allow`` (RFC 9110 §15.5.6; ``HEAD`` where
  ``GET`` is) in the API's error format (``reject``), after ``admit_head``'s checks (a stranger is refused as on any
  path), on the event loop, never a slot (a busy gateway too); a body is read first and dropped as it comes,
  bounded as any, ``max_pending`` of them at once (closing on an unread body resets the connection under the
  answer); one over ``max_body_bytes`` or past that bound is still the 405, unread, its connection closed;
* an ``OPTIONS`` is answered at once, on the event loop, its body unread (a CORS preflight needs no key, no body
  and no upstream: a stranger's never holds a slot): by its preflight route, or, where no route serves it, by
  ``not_found`` (``admit_head`` lets it through without a key: a 405 would tell anyone which paths exist);
* an unknown path is ``not_found``'s;
* ``GET /healthz`` (200 while the process serves) and ``GET /readyz`` (200 when accepting work,
  503 while starting or draining), without authentication: they tell nothing but up/ready.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import socket
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from costline.serving.errors import MissingExtraError

try:
    import h11
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route as StarletteRoute
    from uvicorn.protocols.http.h11_impl import H11Protocol
except ImportError as exc:  # the serving extra
    raise MissingExtraError(exc.name or "starlette") from None

from costline.netsec import HttpReject, Limits, raise_open_file_limit
from costline.serving.gateway._http import HttpRequest, HttpResponse, Route, allowed_methods, dispatch
from costline.serving.gateway.shared_limits import SharedTenantCounts, TenantCounts

__all__ = ["AsgiServer", "Busy"]

log = logging.getLogger(__name__)

if sys.platform.startswith("linux"):
    import fcntl
    import termios

    _SIOCOUTQ: int | None = termios.TIOCOUTQ  # the same request for a TCP socket: its unsent bytes
else:  # no such count: only the event loop's buffer is watched
    _SIOCOUTQ = None

_END = object()
#: A body gets ``read_timeout_s`` more for every this many bytes received (a minimum rate of 64 KiB per
#: ``read_timeout_s``: 6.4 KiB/s by default), on top of ``read_timeout_s`` to begin.
_BODY_BYTES_PER_TIMEOUT = 64 * 1024
#: What a 413 for a body over ``max_body_bytes`` adds: the setting to raise, by its key and its variable (a PDF or an
#: image sent inline as base64 is a third larger than its file; the API behind takes up to 32 MB a request).
_RAISE_MAX_BODY = (": to take larger requests (PDFs, images sent inline as base64: a third larger than their files), "
                   "raise [serving.gateway] max_body_bytes (environment COSTLINE_SERVING_GATEWAY_MAX_BODY_BYTES); each "
                   "body is held in memory while it is served")
#: Methods a route table may name (Starlette needs them per path).
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD")
#: ``max_connections`` 0: this share of the open-file limit (the rest: the listener, model files, Kafka, SQLite, ...).
_AUTO_SHARE = 0.75
_AUTO_MAX = 16_384
#: Open files an explicit ``max_connections`` leaves to the rest of the process at least.
_RESERVED_FDS = 128


def connection_cap(configured: int, open_files: int) -> int:
    """The most connections to keep open: ``configured`` (0: three quarters of ``open_files``, at most 16,384), but
    never so many that fewer than 128 open files are left to the rest of the process (a warning says so)."""
    room = max(open_files - _RESERVED_FDS, 1)
    if configured <= 0:
        return max(min(int(open_files * _AUTO_SHARE), _AUTO_MAX, room), 1)
    if configured > room:
        log.warning("costline: [serving.gateway] max_connections = %d leaves too few of this process's %d open files "
                    "for the rest of the gateway: at most %d connections are kept. Raise the open-file limit "
                    "(ulimit -n; systemd LimitNOFILE=) or lower max_connections", configured, open_files, room)
        return room
    return configured


@dataclass(frozen=True)
class Busy:
    """What the server answers when every worker and queue slot is taken."""

    status: int
    body: bytes
    content_type: str = "application/json"


class AsgiServer:
    """Serves ``routes`` (sync handlers) through Starlette + uvicorn with a bounded worker pool.

    ``not_found`` answers unknown paths, ``on_error`` a handler that raised, ``reject`` a request
    refused before its handler ran (a bad or too-large body), ``busy(path)`` one refused for want
    of capacity, ``bad_request(message)`` the raw bytes of a 400 for a request h11 cannot parse.
    ``start()`` serves in a background thread (tests, embedding); ``serve_forever()`` serves in
    the calling thread and, in the main thread, drains on SIGTERM/SIGINT.
    """

    def __init__(
        self,
        routes: list[Route],
        *,
        host: str,
        port: int,
        not_found: Callable[[HttpRequest], HttpResponse],
        on_error: Callable[[HttpRequest, Exception], HttpResponse],
        reject: Callable[[HttpReject, str], HttpResponse],
        busy: Callable[[str], HttpResponse],
        bad_request: Callable[[str], bytes],
        limits: Limits,
        drain_timeout_s: float = 30.0,
        tls_files: tuple[str, str] | None = None,
        name: str = "costline-asgi",
        ready_check: Callable[[], bool] | None = None,
        reuse_port: bool = False,
        headers: tuple[tuple[str, str], ...] = (),
        admit_head: Callable[[HttpRequest], HttpResponse | None] | None = None,
        max_connections: int = 0,
        tenant_of: Callable[[], str | None] | None = None,
        max_in_flight_per_tenant: int = 0,
        tenant_counts: TenantCounts | SharedTenantCounts | None = None,
    ) -> None:
        self._routes = routes
        # checks a request's head (body b"") before its body is read: a response refuses it, None lets it on. It runs
        # in the contextvars context the request's handler runs in, so it can leave what it found for the handler
        self._admit_head = admit_head
        self._max_connections = max_connections  # 0: derived from the open-file limit at start
        self._reuse_port = reuse_port  # one of several processes on this port (`costline serve --workers`)
        self._headers = list(headers)  # on every response (uvicorn adds them), e.g. x-costline-worker
        self._ready_check = ready_check  # e.g. the replicated cache has caught up with its topic
        self._host = host
        self._port = port
        self._not_found = not_found
        self._on_error = on_error
        self._reject = reject
        self._busy = busy
        self._limits = limits
        self._drain_timeout_s = drain_timeout_s
        self._tls_files = tls_files
        self._name = name
        self._capacity = limits.max_workers + limits.max_pending
        self._in_flight = 0  # touched on the event loop only
        self._wrong_reads = 0  # bodies of wrong-method requests being read for their 405s (event loop only)
        self._tenant_of = tenant_of  # the admitted request's tenant, read in the context admit_head ran in
        #: Where each tenant's requests in flight are counted: this process's own (tenant -> admitted and not
        #: answered, event loop only), or the table the workers of ``costline serve --workers N`` share.
        self.tenant_counts: TenantCounts | SharedTenantCounts = TenantCounts(
            max_in_flight_per_tenant or limits.max_workers + (limits.max_pending + 1) // 2) \
            if tenant_counts is None else tenant_counts
        self._pool: ThreadPoolExecutor | None = None
        self._sock: _Listener | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.draining = False
        self.ready = False
        self.app = self._build_app()

        class _Protocol(_ApiH11Protocol):
            bad_request_body = staticmethod(bad_request)
            head_timeout_s = limits.read_timeout_s
            close_stall_s = max(limits.idle_timeout_s, 0.01)

        self._protocol = _Protocol

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._sock is None:
            raise RuntimeError("not started")
        return int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        scheme = "https" if self._tls_files else "http"
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{scheme}://{host}:{self.port}"

    @property
    def in_flight(self) -> int:
        """Requests admitted and not yet answered (running or waiting for a worker)."""
        return self._in_flight

    @property
    def max_connections(self) -> int:
        """Connections kept open at most (known once bound; 0 before)."""
        return self._sock.cap if self._sock is not None else 0

    @property
    def open_connections(self) -> int:
        """Connections accepted and not yet closed."""
        return self._sock.open if self._sock is not None else 0

    def _make_room(self) -> bool:
        """At max_connections: close the connection idle longest (between two requests, or not done sending a
        head) to make room for a new one; False when every one has a request running."""
        server = self._server
        connections = server.server_state.connections if server is not None else ()
        idle = [p for p in connections if isinstance(p, _ApiH11Protocol) and p._idle()]
        if not idle:
            return False
        victim = min(idle, key=lambda p: p._active_at)
        log.debug("%s: max_connections (%d) reached: closing a connection idle for %.1f s", self._name,
                  self.max_connections, victim.loop.time() - victim._active_at)
        victim._close_now()
        return True

    def _prepare(self) -> uvicorn.Server:
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on connections whose socket says it is TCP
        # (an accepted socket copies the listener's proto; 0 left Nagle on: see _ApiH11Protocol)
        sock = _Listener(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self._reuse_port:  # the kernel spreads new connections over every process listening on the port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((self._host, self._port))
        except OSError:
            sock.close()
            raise
        sock.listen(2048)
        sock.setblocking(False)
        self._sock = sock
        self._pool = ThreadPoolExecutor(self._limits.max_workers, thread_name_prefix=self._name)
        sock.cap = connection_cap(self._max_connections, raise_open_file_limit())
        sock.make_room = self._make_room
        cert, key = self._tls_files or (None, None)
        config = uvicorn.Config(
            # ws="none": the gateway speaks no WebSocket, and uvicorn then never imports a WebSocket library
            # (~1 s of a worker's start here); an Upgrade header is answered as the plain request it carries
            self.app, http=self._protocol, ws="none", loop="asyncio", lifespan="off", access_log=False, log_config=None,
            log_level="warning", timeout_keep_alive=max(self._limits.idle_timeout_s, 0.01),
            timeout_graceful_shutdown=max(int(round(self._drain_timeout_s)), 1),
            h11_max_incomplete_event_size=self._limits.max_header_bytes,
            ssl_certfile=cert, ssl_keyfile=key, server_header=False, headers=self._headers)
        outer = self

        class _Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: Any) -> None:  # SIGTERM/SIGINT: not ready, then drain
                outer.draining = True
                outer.ready = False
                super().handle_exit(sig, frame)

            async def startup(self, sockets: Any = None) -> None:
                await super().startup(sockets)
                outer.ready = not outer.draining

        self._server = _Server(config)
        return self._server

    def bind(self) -> int:
        """Bind the listening socket (port 0 picks a free one) without serving yet; returns the port."""
        if self._server is None:
            self._prepare()
        return self.port

    def start(self) -> int:
        """Bind (port 0 picks a free one), serve in a daemon thread, return the port once it serves."""
        self.bind()
        server = self._server
        assert server is not None
        started = threading.Event()

        def run() -> None:
            try:
                asyncio.run(server.serve(sockets=[self._sock]))
            finally:
                started.set()

        self._thread = threading.Thread(target=run, name=self._name, daemon=True)
        self._thread.start()
        while not started.wait(0.01):
            if server.started:
                break
        if not server.started:
            self._close()
            raise RuntimeError(f"{self._name} could not start on {self._host}:{self._port} (see the log)")
        return self.port

    def serve_forever(self) -> None:
        """Serve in this thread until SIGTERM/SIGINT (then drain); or until :meth:`shutdown` elsewhere."""
        if self._thread is not None:  # started in the background: wait for it
            try:
                while self._thread.is_alive():
                    self._thread.join(0.5)
            except KeyboardInterrupt:
                pass
            finally:
                self.shutdown()
            return
        self.bind()
        assert self._server is not None
        try:
            self._server.run(sockets=[self._sock])
        finally:
            self._close()

    def shutdown(self) -> None:
        """Drain: stop accepting, let requests in flight finish (at most ``drain_timeout_s``), stop."""
        self.draining = True
        self.ready = False
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(self._drain_timeout_s + 5)
            self._thread = None
        self._close()

    def _close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self._sock is not None:
            self._sock.close()
        self._server = None

    # -- the app ------------------------------------------------------------------------------
    def _build_app(self) -> Starlette:
        by_path: dict[str, set[str]] = {}
        for route in self._routes:
            by_path.setdefault(_starlette_path(route.pattern), set()).update(
                ("GET", "HEAD") if route.method == "GET" else (route.method,))
        # the methods each path pattern is served by: a request's method among them is routed without more ado
        self._served = {path: frozenset(methods) for path, methods in by_path.items()}
        routes = [StarletteRoute("/healthz", self._healthz, methods=["GET"]),
                  StarletteRoute("/readyz", self._readyz, methods=["GET"])]
        routes += [StarletteRoute(path, self._endpoint, methods=list(_METHODS)) for path in by_path]
        app = Starlette(routes=routes)
        app.add_exception_handler(404, self._starlette_miss)
        app.add_exception_handler(405, self._starlette_405)
        return app

    async def _healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _readyz(self, request: Request) -> Response:
        caught_up = self._ready_check is None or self._ready_check()
        if self.ready and not self.draining and caught_up:
            return JSONResponse({"status": "ready", "in_flight": self._in_flight})
        status = ("draining" if self.draining else "starting" if not self.ready
                  else "warming up (embedding model, pair model, cache replica)")
        return JSONResponse({"status": status}, status_code=503,
                            headers={"retry-after": str(self._limits.retry_after_s)})

    async def _starlette_miss(self, request: Request, exc: Exception) -> Response:
        return _to_starlette(self._not_found(_request_of(request, b"")))

    async def _starlette_405(self, request: Request, exc: Exception) -> Response:
        """A method Starlette's route for the path does not take (one outside ``_METHODS``, as ``TRACE``; any but
        ``GET``/``HEAD`` on ``/healthz``, ``/readyz``)."""
        if allowed_methods(self._routes, request.url.path):  # a route's path: its checks first, as for any method
            return await self._endpoint(request)
        listed = (getattr(exc, "headers", None) or {}).get("Allow", "GET, HEAD")  # Starlette's, for its own routes
        allow = tuple(sorted(m.strip() for m in listed.split(",")))
        return _to_starlette(self._not_allowed(_request_of(request, b""), allow))

    def _not_allowed(self, req: HttpRequest, allow: tuple[str, ...]) -> HttpResponse:
        """405 with ``Allow`` (RFC 9110 §15.5.6) in the API's error format; an ``OPTIONS`` stays a 404 (a CORS
        preflight is let through ``admit_head`` without a key: a 405 would tell a stranger the path exists)."""
        if req.method == "OPTIONS":
            return self._not_found(req)
        path = req.path.split("?", 1)[0]
        listed = ", ".join(allow)
        return self._reject(HttpReject(405, f"{req.method} is not allowed on {path}: it takes {listed}",
                                       {"allow": listed}), path)

    async def _endpoint(self, request: Request) -> Response:
        # h11 bounds a head only while it is incomplete: one that came whole in one read is measured here
        head = sum(len(k) + len(v) + 4 for k, v in request.headers.raw)
        if head > self._limits.max_header_bytes:
            response = self._reject(HttpReject(431, f"the request's headers ({head} bytes) are over the limit of "
                                                    f"{self._limits.max_header_bytes} bytes: send fewer or shorter "
                                                    "ones"), request.url.path)
            response.headers.setdefault("connection", "close")
            return _to_starlette(response)
        # the head's checks (the API key...) before the body is read or a slot taken: a stranger holds neither
        context = contextvars.copy_context()
        if self._admit_head is not None:
            try:
                refused = context.run(self._admit_head, _request_of(request, b""))
            except Exception:  # noqa: BLE001 - the handler checks it again
                log.exception("%s: checking a request's head failed", self._name)
                refused = None
            if refused is not None:
                return _unread_body(request, refused)
        if request.method == "OPTIONS":  # a CORS preflight: admit_head lets any through without a key, and it needs
            # no body and calls no upstream: answered here (its route's, or a path's 404), never a slot, body unread
            return _unread_body(request, context.run(self._dispatch, _request_of(request, b"")))
        if request.method not in self._served.get(getattr(request.scope.get("route"), "path", ""), ()):
            allow = allowed_methods(self._routes, request.url.path)  # another path pattern may match the path too
            if allow and request.method not in allow:  # answered here, no slot taken (a busy gateway's 405 too)
                return await self._wrong_method(request, allow)
        if self._in_flight >= self._capacity or self.draining:
            return _to_starlette(self._busy(request.url.path))
        tenant = self._tenant(context)
        if tenant is not None and not self.tenant_counts.take(tenant):
            return _to_starlette(self._reject(HttpReject(
                429, f"this tenant already has {self.tenant_counts.refused_at} requests in flight, the most one "
                     "tenant may have ([serving.gateway] max_in_flight_per_tenant): retry when one has been answered",
                {"retry-after": str(self._limits.retry_after_s)}), request.url.path))
        self._in_flight += 1
        released = False
        try:
            try:
                body = await self._read_body(request)
            except HttpReject as r:
                response = self._reject(r, request.url.path)
                if r.status in (413, 400, 411):
                    response.headers.setdefault("connection", "close")
                return _to_starlette(response)
            response = await self._run_while_connected(request, context, _request_of(request, body))
            if response is None:  # the client left while its request waited for a worker: it was never run
                return Response(status_code=499)  # (nginx's "client closed request"; there is no one to send it to)
            if response.stream is None:
                return _to_starlette(response)
            released = True  # the stream releases its slot when it ends (or is never sent)
            it = iter(response.stream)
            ended = _StreamEnd(self, it, tenant)
            headers = {"cache-control": "no-cache", **response.headers}
            if request.method == "HEAD":  # a GET's head without its body: the stream is closed, never run
                ended()
                return _head_only(response.status, headers, response.content_type)
            return _Streaming(self._pieces(it, ended), ended, self._stalled, status_code=response.status,
                              media_type=response.content_type, headers=headers)
        finally:
            if not released:
                self._in_flight -= 1
                self._release_tenant(tenant)

    async def _wrong_method(self, request: Request, allow: tuple[str, ...]) -> Response:
        """The 405 to a method ``request``'s path is not served by, on the event loop, no slot taken. Its body is read
        first and dropped as it comes (closing on an unread body resets the connection before the client reads the
        answer, and its SDK sends it again), bounded as any body; at most ``max_pending`` such bodies are read at
        once. One over ``max_body_bytes``, too slow, or past that bound is not read (on): still the 405 — not a 413
        asking to raise a limit for a request refused anyway — and the connection closed."""
        response = self._not_allowed(_request_of(request, b""), allow)
        if _has_body(request):
            if self._wrong_reads >= self._limits.max_pending:
                response.headers.setdefault("connection", "close")
                return _to_starlette(response)
            self._wrong_reads += 1
            try:
                await self._read_body(request, keep=False)
            except HttpReject:
                response.headers.setdefault("connection", "close")
            finally:
                self._wrong_reads -= 1
        return _to_starlette(response)

    def _tenant(self, context: contextvars.Context) -> str | None:
        """The admitted request's tenant (None: not known; no per-tenant cap then). Never raises."""
        if self._tenant_of is None:
            return None
        try:
            return context.run(self._tenant_of)
        except Exception:  # noqa: BLE001 - a request whose tenant cannot be read is still served
            log.exception("%s: reading a request's tenant failed; it is not held to a tenant's share", self._name)
            return None

    def _release_tenant(self, tenant: str | None) -> None:
        """Give back the slot an admitted request of ``tenant`` took (None: it took none)."""
        if tenant is not None:
            self.tenant_counts.release(tenant)

    def _stalled(self, scope: Any, sent: int) -> None:
        """A streamed answer's client took none of it for ``idle_timeout_s``: drop its connection at once (unsent
        bytes and all: a graceful close would wait for a client that reads nothing) and say so once."""
        client = scope.get("client") or ("?", 0)
        log.warning("%s: %s:%s stopped reading its streamed answer to %s %s (%d bytes sent): nothing taken for "
                    "%g s ([serving.gateway] idle_timeout_s), connection closed and its slot freed", self._name,
                    client[0], client[1], scope.get("method", "?"), scope.get("path", "?"), sent,
                    self._limits.idle_timeout_s)
        server = self._server
        for protocol in list(server.server_state.connections) if server is not None else ():
            if isinstance(protocol, _ApiH11Protocol) and protocol.cycle is not None and protocol.cycle.scope is scope:
                protocol._abort()
                return

    async def _run_while_connected(self, request: Request, context: contextvars.Context,
                                   req: HttpRequest) -> HttpResponse | None:
        """The handler's answer to ``req``, run on the worker pool; or None, without running it, when the client goes
        away while ``req`` waits for a worker (a caller that gave up, after its own timeout, on a busy gateway: its
        request is never sent to a model and paid for, nor recorded, and its slot is freed at once). Once a worker
        has it, it runs to its end (a model call cannot be taken back halfway). With a worker free for it (no more
        requests admitted than workers) it does not wait, so the client is not watched: no task a request on the
        hot path."""
        assert self._pool is not None
        work = self._pool.submit(context.run, self._dispatch, req)
        answer = asyncio.wrap_future(work)
        if self._in_flight <= self._limits.max_workers:
            return await answer
        gone = asyncio.ensure_future(_client_gone(request))
        try:
            await asyncio.wait((answer, gone), return_when=asyncio.FIRST_COMPLETED)
            if not answer.done() and work.cancel():  # still queued: dropped before any of it ran
                client = request.scope.get("client") or ("?", 0)
                log.info("%s: %s:%s went away while its %s %s waited for a worker: not run", self._name, client[0],
                         client[1], request.method, request.url.path)
                return None
            return await answer
        except BaseException:
            answer.cancel()  # the server is stopping: a request still queued is not run (as before)
            raise
        finally:
            gone.cancel()

    def _dispatch(self, request: HttpRequest) -> HttpResponse:
        return dispatch(self._routes, request, name=self._name, on_error=self._on_error, not_found=self._not_found,
                        not_allowed=self._not_allowed)

    async def _pieces(self, it: Iterator[bytes], ended: "_StreamEnd") -> Any:
        """A blocking iterator's pieces, each fetched on the worker pool; closed when the client goes."""
        pool = self._pool
        try:
            while True:
                assert pool is not None
                ended.pending = pool.submit(next, it, _END)
                piece = await asyncio.wrap_future(ended.pending)
                ended.pending = None
                if piece is _END:
                    return
                if piece:
                    yield piece
        except Exception:  # too late for an error status: cut the stream short
            log.exception("%s: a stream failed midway", self._name)
        finally:
            ended()

    async def _read_body(self, request: Request, *, keep: bool = True) -> bytes:
        """The request's body, within ``max_body_bytes`` and ``read_timeout_s`` (:class:`HttpReject` past them);
        ``keep=False``: read to its end and dropped as it comes (b"")."""
        limit = self._limits.max_body_bytes
        lengths = [v for k, v in request.headers.raw if k == b"content-length"]
        chunked = any(k == b"transfer-encoding" for k, _ in request.headers.raw)
        if lengths:
            announced = int(lengths[0])  # h11 already refused malformed and conflicting lengths
            if announced > limit:
                raise HttpReject(413, f"the body ({announced} bytes) is over the limit of {limit} bytes"
                                      f"{_RAISE_MAX_BODY}")
        elif request.method in ("POST", "PUT", "PATCH") and not chunked:
            raise HttpReject(411, "Content-Length is required")
        parts: list[bytes] = []
        size = 0
        timeout = self._limits.read_timeout_s
        loop = asyncio.get_running_loop()
        start = loop.time()
        while True:
            try:
                message = await asyncio.wait_for(request.receive(), timeout)
            except asyncio.TimeoutError:
                raise HttpReject(400, f"the body is shorter than Content-Length (no data for "
                                      f"{timeout:g} s)") from None
            if message["type"] == "http.disconnect":
                raise HttpReject(400, "the client went away before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise HttpReject(413, f"the body is over the limit of {limit} bytes{_RAISE_MAX_BODY}")
            # each read within read_timeout_s (above), and the whole body at 64 KiB per read_timeout_s or faster:
            # a body trickled a byte per read holds its slot no longer than that
            took = loop.time() - start
            if took > timeout * (1 + size / _BODY_BYTES_PER_TIMEOUT) and message.get("more_body", False):
                raise HttpReject(400, f"the body arrives too slowly ({size} bytes in {took:.1f} s): send at least "
                                      f"64 KiB per {timeout:g} s")
            if keep:
                parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)


class _Listener(socket.socket):
    """The listening socket. It counts the connections it accepted that are not closed yet (an accepted one is
    counted before asyncio makes it a transport: a burst accepted in one go is counted too) and keeps them at ``cap``
    at most: past it, ``make_room()`` closes an idle one; when none is idle, or closes asked for have not happened yet
    (``_CLOSING_SLACK`` past the cap), the new connection is closed at once and accepting resumes on the event loop's
    next turn (asyncio takes ``ConnectionAbortedError`` as "nothing more to accept now"). So idle connections never
    take every file descriptor, and the accept loop never hits EMFILE."""

    cap = 0  # 0: no cap
    open = 0

    @staticmethod
    def make_room() -> bool:
        return False

    def accept(self) -> tuple[socket.socket, Any]:
        fd, addr = self._accept()  # type: ignore[attr-defined]
        conn = _Accepted(self.family, self.type, self.proto, fileno=fd)
        if self.cap and self.open >= self.cap and (self.open >= self.cap + _CLOSING_SLACK or not self.make_room()):
            conn.close()
            raise ConnectionAbortedError("max_connections reached")
        self.open += 1
        conn.listener = self
        return conn, addr


#: Connections accepted past the cap while the idle ones closed to make room are still closing (their descriptors are
#: freed on the event loop's next turn); within the open files the cap leaves to the rest of the process.
_CLOSING_SLACK = 32


class _Accepted(socket.socket):
    """An accepted connection: tells its listener when its descriptor is closed."""

    listener: _Listener | None = None

    def _real_close(self, *args: Any, **kwargs: Any) -> None:
        self._uncount()
        super()._real_close(*args, **kwargs)  # type: ignore[misc]

    def detach(self) -> int:
        self._uncount()
        return super().detach()

    def _uncount(self) -> None:
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.open -= 1

    def __del__(self) -> None:  # never closed explicitly: its descriptor goes with it (socket's own finalizer)
        self._uncount()
        super().__del__()


class _StreamEnd:
    """Ends a streamed answer once: frees its slot and closes its iterator on the pool (after the
    ``next()`` running there, if any: a generator cannot be closed while it runs)."""

    def __init__(self, server: AsgiServer, it: Iterator[bytes], tenant: str | None = None) -> None:
        self.server = server
        self.it = it
        self.tenant = tenant
        self.pending: Any = None  # the worker's future (asyncio's wrapper, once cancelled, says done too early)
        self.done = False

    def __call__(self) -> None:
        if self.done:
            return
        self.done = True
        self.server._in_flight -= 1
        self.server._release_tenant(self.tenant)
        close = getattr(self.it, "close", None)
        pool = self.server._pool
        if close is None:
            return
        if pool is None:
            _submit_quietly(None, close)
        elif self.pending is not None and not self.pending.done():
            self.pending.add_done_callback(lambda _f: _submit_quietly(pool, close))
        else:
            _submit_quietly(pool, close)


class _Stalled(Exception):
    """The client took nothing of a streamed answer for ``idle_timeout_s``."""


class _Streaming(StreamingResponse):
    """A streaming response that ends its stream even when it is never iterated (the client left
    before the first byte): the slot is freed and the request's pipeline generator closed.

    Each send is due within ``idle_timeout_s``: uvicorn's ``send`` waits, without a deadline, for a client that
    reads nothing to drain its buffer, and the stream held its slot for ever. Past it ``stalled(scope, bytes
    sent)`` drops the connection and the stream ends as it does when the client goes away."""

    def __init__(self, content: Any, ended: _StreamEnd, stalled: Callable[[Any, int], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._ended = ended
        self._stalled = stalled

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        timeout = self._ended.server._limits.idle_timeout_s
        sent = 0

        async def send_within(message: Any) -> None:
            nonlocal sent
            try:
                async with asyncio.timeout(timeout):
                    await send(message)
            except TimeoutError:
                raise _Stalled from None
            sent += len(message.get("body", b""))

        try:
            await super().__call__(scope, receive, send_within)
        except _Stalled:
            self._stalled(scope, sent)
        finally:
            self._ended()


class _ApiH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, answering an unparsable request in the API's error format."""

    bad_request_body: Callable[[str], bytes]
    #: Seconds a request head may take to arrive from its first byte (then the connection is closed).
    head_timeout_s: float = 10.0
    #: Seconds a connection being closed may hold bytes its client takes none of (then they are dropped with it).
    close_stall_s: float = 15.0
    _head_timer: asyncio.TimerHandle | None = None
    _active_at: float = 0.0  # the loop's time of the connection's last bytes (or its start)

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(_BoundedClose(transport, self.loop, self.close_stall_s))
        self._active_at = self.loop.time()
        # Nagle off: uvicorn writes a response's head and body in two sends, and with Nagle on the
        # body waited for the client's delayed ACK of the head (~40 ms on Linux) on every request
        # of a keep-alive connection (bench/gateway.py: exact repeats 44 ms -> ~3 ms at 1 connection)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # a socket that went away already: nothing to tune
                pass
        # uvicorn times out idle connections only between requests: a connection that never sends
        # its first one is closed after the same idle_timeout_s (its first bytes cancel the timer)
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def _idle(self) -> bool:
        """No request of this connection is with the app (none yet, or its answer is sent)."""
        return (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing()

    def _abort(self) -> None:
        """Drop the connection now, its unsent bytes with it; its request (if any) counts as gone."""
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # uvicorn's send does nothing more, and its receive says so
            self.cycle.message_event.set()
        self.transport.abort()

    def _close_now(self) -> None:
        try:
            self.conn.send(h11.ConnectionClosed())
        except h11.LocalProtocolError:
            pass
        self.transport.close()

    def on_response_complete(self) -> None:
        self._active_at = self.loop.time()
        super().on_response_complete()

    def data_received(self, data: bytes) -> None:
        self._active_at = self.loop.time()
        super().data_received(data)
        # uvicorn's keep-alive timer stops at a head's first byte and nothing times the rest: a head trickled
        # a byte at a time (slowloris) held its connection for ever. It is due within head_timeout_s.
        if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)
        else:
            self._cancel_head_timer()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:  # noqa: ARG002 - h11's message is generic
        body = type(self).bad_request_body("malformed HTTP request (request line, headers or "
                                           "Content-Length): fix the client")
        event = h11.Response(status_code=400, reason=b"Bad Request", headers=[
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close")])
        try:
            self.transport.write(self.conn.send(event))
            self.transport.write(self.conn.send(h11.Data(data=body)))
            self.transport.write(self.conn.send(h11.EndOfMessage()))
        except h11.LocalProtocolError:  # a response had started already: nothing more can be said
            pass
        self.transport.close()


class _BoundedClose:
    """A connection's transport (everything passed on to it) whose ``close()`` has a deadline.

    asyncio's ``close()`` sends what is still buffered first and waits, without any deadline, for the client to take
    it: a client that keeps its socket open and reads nothing more (a hung process; one that never reads a large
    answer — a batch's results, a file — past the kernel's buffers) kept its connection, its descriptor and the unsent
    bytes in the gateway's memory for as long as it lived, and a closing connection is never the idle one
    ``max_connections`` closes to make room. Here, once closed, what is left to send must shrink (the client takes
    some: on Linux the kernel's unsent bytes count too, ``SIOCOUTQ``) at least once per ``stall_s``; when it does not,
    the connection is dropped (``abort()``). A client that keeps reading, however slowly, gets all of it."""

    def __init__(self, transport: Any, loop: asyncio.AbstractEventLoop, stall_s: float) -> None:
        self._transport = transport
        self._loop = loop
        self._stall_s = stall_s
        self._timer: asyncio.TimerHandle | None = None
        self._left = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def close(self) -> None:
        self._transport.close()
        if self._timer is None and self._transport.get_write_buffer_size():
            self._left = self._unsent()
            self._timer = self._loop.call_later(self._stall_s, self._check)

    def _unsent(self) -> int:
        """Bytes not yet taken by the client: asyncio's buffer and, where the kernel tells, its send queue."""
        return self._transport.get_write_buffer_size() + _kernel_unsent(self._transport.get_extra_info("socket"))

    def _check(self) -> None:
        self._timer = None
        if not self._transport.get_write_buffer_size():  # all handed to the kernel: asyncio has closed the socket
            return
        left = self._unsent()
        if left >= self._left:
            peer = self._transport.get_extra_info("peername") or ("?", 0)
            log.info("costline gateway: %s:%s took none of the last %d bytes of its answer for %g s after its "
                     "connection was closed ([serving.gateway] idle_timeout_s): dropped", peer[0], peer[1], left,
                     self._stall_s)
            self._transport.abort()
            return
        self._left = left
        self._timer = self._loop.call_later(self._stall_s, self._check)


def _kernel_unsent(sock: Any) -> int:
    """Bytes the kernel still holds to send on ``sock`` (Linux's ``SIOCOUTQ``); 0 where it cannot tell."""
    if _SIOCOUTQ is None or sock is None:
        return 0
    try:
        return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), _SIOCOUTQ, b"\0\0\0\0"))[0])
    except (OSError, ValueError):
        return 0


async def _client_gone(request: Request) -> None:
    """Returns once the client of ``request`` (its body read already) has gone away: uvicorn's ``receive`` has nothing
    else to say then but ``http.disconnect`` (a pipelined next request waits, unread, until this one is answered)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _submit_quietly(pool: ThreadPoolExecutor | None, fn: Callable[[], Any]) -> None:
    def run() -> None:
        try:
            fn()
        except Exception:
            log.debug("costline: closing a stream failed", exc_info=True)

    if pool is None:
        run()
        return
    try:
        pool.submit(run)
    except RuntimeError:  # the pool is shut down: close here
        run()


def _starlette_path(pattern: str) -> str:
    return pattern  # "{id}" segments mean the same in Starlette


def _request_of(request: Request, body: bytes) -> HttpRequest:
    # http.server hands header values over as latin-1 text: do the same, so the checks that
    # insist on UTF-8 (costline.serving.gateway.auth) see the bytes the client sent.
    raw = tuple((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in request.headers.raw)
    path = request.url.path
    if request.url.query:
        path = f"{path}?{request.url.query}"
    return HttpRequest(request.method, path, {k: v for k, v in raw}, body, raw_headers=raw)


def _has_body(request: Request) -> bool:
    """The request announces a body: chunked, or a ``content-length`` other than 0."""
    return any(k == b"transfer-encoding" or (k == b"content-length" and v.strip() != b"0")
               for k, v in request.headers.raw)


def _unread_body(request: Request, response: HttpResponse) -> Response:
    """``response`` to a request whose body (if it has one) is never read: it closes the connection then."""
    if _has_body(request):
        response.headers.setdefault("connection", "close")
    return _to_starlette(response)


def _head_only(status: int, headers: dict[str, str], media_type: str) -> Response:
    """The head a GET's streamed answer would have (its length unknown: no ``content-length``; uvicorn frames it as
    the GET's, ``transfer-encoding: chunked``), for a ``HEAD``: no body."""
    head = Response(status_code=status, headers=headers, media_type=media_type)
    del head.headers["content-length"]  # Starlette's for its empty body: not the GET's length
    return head


def _to_starlette(response: HttpResponse) -> Response:
    if response.raw is not None:
        payload = response.raw
    else:
        import json

        payload = json.dumps(response.body).encode()
    return Response(payload, status_code=response.status, headers=response.headers,
                    media_type=response.content_type)
