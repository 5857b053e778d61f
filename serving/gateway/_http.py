"""A small JSON-over-HTTP server on the standard library, shared by the local stand-ins and the distill dev server
(the gateway serves the same handler shapes through :mod:`costline.serving.gateway.asgi`)."""

from __future__ import annotations

import json
import re
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler
from typing import Any

from costline.netsec import GuardedHandler, HttpReject, Limits, PooledHTTPServer
from costline.serving.translate import loads_json
from costline.textutil import well_formed

__all__ = ["HttpRequest", "HttpResponse", "JsonServer", "NotAllowed", "Route", "ServedByJsonServer",
           "allowed_methods", "dispatch", "not_allowed_from", "not_allowed_with"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    #: Path parameters matched by the route ("{id}" segments).
    params: dict[str, str] = field(default_factory=dict)
    #: Every header line as received (name lower-cased), repeats included, in order.
    raw_headers: tuple[tuple[str, str], ...] = ()

    def header_all(self, name: str) -> list[str]:
        """Every value sent for header ``name`` (a repeated header gives several)."""
        name = name.lower()
        if not self.raw_headers:
            value = self.headers.get(name)
            return [] if value is None else [value]
        return [v for k, v in self.raw_headers if k == name]

    def json(self) -> Any:
        """The body as JSON: a ``ValueError`` when it is not, ``NaN``, ``Infinity`` and numbers out of a float's range
        included (Python's ``json`` takes them, JSON and the APIs do not: :func:`~costline.serving.translate.loads_json`)."""
        doc = loads_json(self.body.decode("utf-8") or "null")
        if b"\\u" in self.body and _SURROGATE_ESCAPE.search(self.body):  # only then can a lone surrogate be in it
            doc = _well_formed_strings(doc)
        return doc

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)



#: A JSON escape of a UTF-16 surrogate ("\\ud83d", "\\uDC00"): a pair of them is one character (an emoji, from a
#: client that escapes non-ASCII), one alone decodes to a lone surrogate, which no tokenizer, hash or SDK takes.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _well_formed_strings(doc: Any) -> Any:
    """``doc`` (parsed JSON) with every string, keys included, made well formed: a lone surrogate becomes U+FFFD, as a
    UTF-8 decoder reads a byte it cannot (:func:`~costline.textutil.well_formed`). Iterative: as deep as
    json.loads went."""
    if isinstance(doc, str):
        return well_formed(doc)
    root = [doc]
    todo: list[Any] = [root]
    while todo:
        node = todo.pop()
        items = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        if isinstance(node, dict):
            node.clear()
        for key, value in items:
            if isinstance(value, str):
                value = well_formed(value)
            elif isinstance(value, (dict, list)):
                todo.append(value)
            node[well_formed(key) if isinstance(key, str) else key] = value
    return root[0]


@dataclass
class HttpResponse:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    #: Raw bytes to send instead of JSON (e.g. JSONL), with this content type.
    raw: bytes | None = None
    content_type: str = "application/json"
    #: Pieces sent as they come (chunked transfer encoding, flushed one by one), e.g. server-sent
    #: events; closed (``close()``) when the client goes away early.
    stream: Iterable[bytes] | None = None


Handler = Callable[[HttpRequest], HttpResponse]

#: Limits of a server given none (the local stand-ins): generous, still bounded. The gateway
#: passes its own from [serving.gateway].
STANDIN_LIMITS = Limits(max_body_bytes=64 * 1024 * 1024, max_workers=128, max_pending=512, idle_timeout_s=30.0)


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str  # "/v1/messages/batches/{id}/results"; a segment "{model}:{method}" matches one with a colon
    handler: Handler

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """The path parameters when ``method`` and ``path`` are this route's, else None. A ``HEAD`` is a ``GET``
        route's too (RFC 9110 §9.3.2: answered as the GET, the same checks included; the server sends no body)."""
        if method != self.method and not (method == "HEAD" and self.method == "GET"):
            return None
        return self.params(path)

    def params(self, path: str) -> dict[str, str] | None:
        """The path parameters when ``path`` (a query string allowed) is this route's, whatever the method; else
        None."""
        want = self.pattern.strip("/").split("/")
        got = path.split("?", 1)[0].strip("/").split("/")
        if len(want) != len(got):
            return None
        params: dict[str, str] = {}
        for w, g in zip(want, got):
            if w.startswith("{") and w.endswith("}") and "}:{" in w:  # "{model}:{method}": split at its last colon
                name, _, rest = w[1:-1].partition("}:{")
                if ":" not in g:
                    return None
                params[name], _, params[rest] = g.rpartition(":")
            elif w.startswith("{") and w.endswith("}"):
                params[w[1:-1]] = g
            elif w != g:
                return None
        return params


#: Answers a request for a path served, with a method it is not served by: the request and the methods it is served
#: by (:func:`allowed_methods`): a 405 with an ``Allow`` header (:func:`not_allowed_from`).
NotAllowed = Callable[[HttpRequest, tuple[str, ...]], HttpResponse]


def allowed_methods(routes: Sequence[Route], path: str) -> tuple[str, ...]:
    """The methods ``routes`` serve ``path`` by, sorted, ``HEAD`` wherever ``GET`` is (RFC 9110 §9.3.2); () for a
    path none of them serves."""
    methods = {route.method for route in routes if route.params(path) is not None}
    if "GET" in methods:
        methods.add("HEAD")
    return tuple(sorted(methods))


def not_allowed_with(error: Callable[[HttpRequest, int, str], HttpResponse]) -> NotAllowed:
    """A 405 answer (RFC 9110 §15.5.6, ``Allow`` listing the methods the path is served by) built by a server's own
    ``error(request, status, message)``: the body in its API's error format, saying 405."""

    def answer(request: HttpRequest, allow: tuple[str, ...]) -> HttpResponse:
        listed = ", ".join(allow)
        made = error(request, 405, f"{request.method} is not allowed on {request.path.split('?', 1)[0]}: it takes "
                                   f"{listed}")
        return replace(made, headers={**made.headers, "allow": listed})

    return answer


def not_allowed_from(not_found: Callable[[HttpRequest], HttpResponse]) -> NotAllowed:
    """A 405 answer (RFC 9110 §15.5.6: ``Allow`` lists the methods the path is served by) made of ``not_found``'s
    answer to the request: the body in the API's own error format, as its 404 for the path has it."""

    def answer(request: HttpRequest, allow: tuple[str, ...]) -> HttpResponse:
        missed = not_found(request)
        return replace(missed, status=405, headers={**missed.headers, "allow": ", ".join(allow)})

    return answer


def dispatch(routes: Sequence[Route], request: HttpRequest, *, name: str,
             on_error: Callable[[HttpRequest, Exception], HttpResponse],
             not_found: Callable[[HttpRequest], HttpResponse], not_allowed: NotAllowed | None = None) -> HttpResponse:
    """The first route that matches answers (its path parameters filled in); a handler that raises
    is logged and answered by ``on_error``; no match by ``not_found``, or, when a route serves the path by another
    method, by ``not_allowed`` (default: :func:`not_allowed_from` ``not_found``). Both servers use it."""
    for route in routes:
        params = route.match(request.method, request.path)
        if params is not None:
            req = HttpRequest(request.method, request.path, request.headers, request.body, params,
                              request.raw_headers)
            try:
                return route.handler(req)
            except Exception as exc:
                log.exception("%s: %s %s failed", name, request.method, request.path)
                return on_error(req, exc)
    allow = allowed_methods(routes, request.path)
    if allow:
        return (not_allowed or not_allowed_from(not_found))(request, allow)
    return not_found(request)


class JsonServer:
    """Serves ``routes`` on a bounded worker pool (:class:`~costline.netsec.PooledHTTPServer`)
    in a background thread.

    ``not_found`` builds the answer for unknown paths, ``on_error`` the answer to a
    handler that raised (each API has its own error format); ``reject`` the answer to a
    request refused before dispatch (bad Content-Length, body over ``limits``, timeouts);
    ``not_allowed`` the 405 to a method a path is not served by (default: the path's 404, made a 405 with
    ``Allow``). ``HEAD`` is answered as the ``GET`` (status and headers, ``content-length`` the GET body's) with
    no body. ``ssl_ctx`` serves HTTPS.
    """

    def __init__(
        self,
        routes: list[Route],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        not_found: Handler,
        on_error: Callable[[HttpRequest, Exception], HttpResponse],
        name: str = "costline-http",
        limits: Limits | None = None,
        reject: Callable[[HttpReject], HttpResponse] | None = None,
        ssl_ctx: Any = None,
        busy_body: tuple[str, bytes] | None = None,
        not_allowed: NotAllowed | None = None,
    ) -> None:
        self._routes = routes
        self._not_allowed = not_allowed
        self._host = host
        self._port = port
        self._not_found = not_found
        self._on_error = on_error
        self._name = name
        self._limits = limits or STANDIN_LIMITS
        self._reject = reject or (lambda r: HttpResponse(r.status, {"error": r.message}, headers=r.headers))
        self._ssl_ctx = ssl_ctx
        self._busy_body = busy_body
        self._server: PooledHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        scheme = "https" if self._ssl_ctx is not None else "http"
        return f"{scheme}://{self._host}:{self.port}"

    def start(self) -> int:
        """Bind (port 0 picks a free one), serve in a daemon thread, return the port."""
        server = PooledHTTPServer((self._host, self._port), self._handler_class(), limits=self._limits,
                                  ssl_ctx=self._ssl_ctx, busy_body=self._busy_body, name=self._name)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=self._name, daemon=True)
        self._thread.start()
        return self.port

    def serve_forever(self) -> None:
        """Block until interrupted (for CLI commands); call after :meth:`start`."""
        if self._thread is None:
            self.start()
        assert self._thread is not None
        try:
            while self._thread.is_alive():
                self._thread.join(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def dispatch(self, request: HttpRequest) -> HttpResponse:
        return dispatch(self._routes, request, name=self._name, on_error=self._on_error, not_found=self._not_found,
                        not_allowed=self._not_allowed)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class _Handler(GuardedHandler):
            # Headers and body are written separately: with Nagle's algorithm on, the body waits
            # for the client's delayed ACK of the headers (~40 ms a reply on Linux).
            disable_nagle_algorithm = True

            def _serve(self) -> None:
                try:
                    body = self.read_body(self.content_length(outer._limits.max_body_bytes))
                except HttpReject as r:
                    self.close_connection = True
                    response = outer._reject(r)
                else:
                    raw = tuple((k.lower(), v) for k, v in self.headers.items())
                    headers = {k: v for k, v in raw}
                    response = outer.dispatch(HttpRequest(self.command, self.path, headers, body, raw_headers=raw))
                if response.stream is not None:
                    self._send_stream(response)
                    return
                payload = response.raw if response.raw is not None else json.dumps(response.body).encode()
                self.send_response(response.status)
                self.send_header("content-type", response.content_type)
                self.send_header("content-length", str(len(payload)))
                for k, v in response.headers.items():
                    self.send_header(k, v)
                if self.close_connection:
                    self.send_header("connection", "close")
                self.end_headers()
                if self.command != "HEAD":  # a HEAD's answer is the GET's head alone (RFC 9110 §9.3.2)
                    self.wfile.write(payload)
                if self.close_connection:
                    self.linger(outer._limits.max_body_bytes)

            def _send_stream(self, response: HttpResponse) -> None:
                assert response.stream is not None
                pieces = iter(response.stream)
                try:
                    self.send_response(response.status)
                    self.send_header("content-type", response.content_type)
                    self.send_header("transfer-encoding", "chunked")
                    self.send_header("cache-control", "no-cache")
                    for k, v in response.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    if self.command == "HEAD":  # the GET's head; the stream is closed unread (finally)
                        return
                    for piece in pieces:
                        if piece:
                            self.wfile.write(b"%X\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):  # the client went away mid-stream
                    self.close_connection = True
                except Exception:  # too late for an error status: cut the stream short
                    log.exception("%s: %s %s failed mid-stream", outer._name, self.command, self.path)
                    self.close_connection = True
                finally:
                    close = getattr(pieces, "close", None)
                    if close is not None:
                        close()

            do_GET = do_HEAD = do_POST = do_DELETE = do_OPTIONS = do_PUT = do_PATCH = _serve

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                log.debug("%s: " + format, outer._name, *args)

        return _Handler


class ServedByJsonServer:
    """Lifecycle of an object that answers HTTP through a :class:`JsonServer` in ``self._server``:
    ``start()`` (returns the port), ``serve_forever()``, ``shutdown()``, a context manager, ``port``, ``url``."""

    _server: JsonServer

    def start(self) -> int:
        return self._server.start()

    def shutdown(self) -> None:
        self._server.shutdown()

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def __enter__(self):  # type: ignore[no-untyped-def]
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def url(self) -> str:
        """The base URL (for the Anthropic SDK: ``Anthropic(base_url=...)``)."""
        return self._server.url
