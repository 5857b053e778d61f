"""An OTLP/HTTP trace receiver (``POST /v1/traces``) that forwards to Kafka.

Follows the OTLP/HTTP specification:

* ``application/x-protobuf`` or ``application/json`` bodies, optionally
  ``Content-Encoding: gzip``; the answer uses the request's encoding;
* 200 with an ``ExportTraceServiceResponse`` once Kafka acknowledged every trace
  — with ``partial_success`` (rejected_spans, error_message) when invalid spans
  (bad trace/span ids) were dropped from an otherwise valid request;
* 400 for an undecodable payload (google.rpc.Status body; clients must not retry);
* 411 without Content-Length, 413 over ``max_body_bytes`` (checked before reading
  and again while un-gzipping), 415 for another content type or encoding,
  404 for another path, 405 for another method;
* 503 with ``Retry-After`` when Kafka cannot take the data within
  ``produce_timeout_s``, so exporters retry later.
"""

from __future__ import annotations

import binascii
import json
import logging
import threading
import zlib
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import MappingProxyType
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from costline import contract
from costline.config import CollectorConfig
from costline.otlp import OtlpDecodeError, decode_json, span_count, split_by_trace

from costline.collectors.errors import KafkaUnavailable, ReceiverError
from costline.collectors.forwarder import Forwarder

__all__ = ["OtlpReceiver", "TRACES_PATH"]

log = logging.getLogger(__name__)

TRACES_PATH = "/v1/traces"
_PROTOBUF_TYPES = frozenset({contract.CONTENT_TYPE_PROTOBUF, "application/protobuf"})
_GRPC_CODE = MappingProxyType({400: 3, 404: 5, 405: 12, 411: 3, 413: 8, 415: 3, 500: 13, 503: 14})


class _Reject(Exception):
    """An HTTP error answer: status, message, extra headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


# --- decoding with span-by-span validation -------------------------------------------------------
def _span_problem(trace_id: bytes, span_id: bytes, parent_span_id: bytes) -> str | None:
    if len(trace_id) != 16 or trace_id == bytes(16):
        return "invalid trace_id (need 16 non-zero bytes)"
    if len(span_id) != 8 or span_id == bytes(8):
        return "invalid span_id (need 8 non-zero bytes)"
    if parent_span_id and len(parent_span_id) != 8:
        return "invalid parent_span_id (need 8 bytes or none)"
    return None


def _drop_invalid_spans(req: ExportTraceServiceRequest) -> tuple[int, str]:
    """Remove spans with bad ids in place; return (how many, the first reason)."""
    rejected, first = 0, ""
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            for i in range(len(ss.spans) - 1, -1, -1):
                span = ss.spans[i]
                problem = _span_problem(span.trace_id, span.span_id, span.parent_span_id)
                if problem:
                    rejected += 1
                    first = f"span {span.name!r}: {problem}"
                    del ss.spans[i]
    return rejected, first


def _hex_id(value: Any, nbytes: int, *, optional: bool = False) -> bool:
    if value in (None, "") and optional:
        return True
    if not isinstance(value, str) or len(value) != 2 * nbytes:
        return False
    try:
        raw = binascii.unhexlify(value)
    except (binascii.Error, ValueError):
        return False
    return optional or raw != bytes(nbytes)


def _drop_invalid_json_spans(doc: Any) -> tuple[int, str]:
    """OTLP/JSON: remove spans whose hex ids are malformed (structure errors are left to the decoder)."""
    rejected, first = 0, ""
    if not isinstance(doc, dict):
        return 0, ""
    for rs in doc.get("resourceSpans") or doc.get("resource_spans") or []:
        if not isinstance(rs, dict):
            continue
        for ss in rs.get("scopeSpans") or rs.get("scope_spans") or []:
            if not isinstance(ss, dict) or not isinstance(ss.get("spans"), list):
                continue
            kept = []
            for span in ss["spans"]:
                if isinstance(span, dict):
                    ok = (
                        _hex_id(span.get("traceId", span.get("trace_id")), 16)
                        and _hex_id(span.get("spanId", span.get("span_id")), 8)
                        and _hex_id(span.get("parentSpanId", span.get("parent_span_id")), 8, optional=True)
                    )
                    if not ok:
                        rejected += 1
                        first = f"span {span.get('name')!r}: invalid trace/span id (need hex, non-zero)"
                        continue
                kept.append(span)
            ss["spans"] = kept
    return rejected, first


def decode_with_rejections(body: bytes, is_json: bool) -> tuple[ExportTraceServiceRequest, int, str]:
    """Decode an OTLP trace request, dropping invalid spans → (request, rejected, error message)."""
    if is_json:
        try:
            doc = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise OtlpDecodeError(f"not valid JSON: {exc}") from None
        rejected, first = _drop_invalid_json_spans(doc)
        req = decode_json(json.dumps(doc).encode())
        more, why = _drop_invalid_spans(req)
        return req, rejected + more, first or why
    req = ExportTraceServiceRequest()
    try:
        req.ParseFromString(body)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise OtlpDecodeError(f"not an OTLP protobuf ExportTraceServiceRequest: {exc}") from None
    rejected, first = _drop_invalid_spans(req)
    return req, rejected, first


def _gunzip(body: bytes, limit: int) -> bytes:
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(body, limit + 1)
        if len(out) > limit or d.unconsumed_tail:
            raise _Reject(413, f"decompressed body exceeds {limit} bytes: send smaller batches")
        out += d.flush()
    except zlib.error as exc:
        raise _Reject(400, f"body is not valid gzip: {exc}") from None
    if len(out) > limit:
        raise _Reject(413, f"decompressed body exceeds {limit} bytes: send smaller batches")
    if not d.eof:
        raise _Reject(400, "body is truncated gzip")
    return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "costline-collect"
    timeout = 30
    receiver: OtlpReceiver  # set on the per-receiver subclass

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)

    # -- routing -----------------------------------------------------------------------------
    def do_POST(self) -> None:
        is_json = self._is_json()
        try:
            if self.path.split("?", 1)[0] != TRACES_PATH:
                raise _Reject(404, f"unknown path {self.path}; OTLP traces go to POST {TRACES_PATH}")
            self._export(is_json)
        except _Reject as r:
            self._error(r, is_json)
        except Exception as exc:
            log.exception("costline collect: unexpected error")
            self._error(_Reject(500, f"internal error: {type(exc).__name__}"), is_json)

    def _other_method(self) -> None:
        if self.path.split("?", 1)[0] == TRACES_PATH:
            self._error(_Reject(405, f"use POST {TRACES_PATH}", {"Allow": "POST"}), self._is_json())
        else:
            self._error(_Reject(404, f"unknown path {self.path}"), self._is_json())

    do_GET = do_PUT = do_DELETE = do_PATCH = _other_method

    # -- the export ---------------------------------------------------------------------------
    def _is_json(self) -> bool:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower() == contract.CONTENT_TYPE_JSON

    def _export(self, is_json: bool) -> None:
        cfg = self.receiver.config
        kind = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if kind not in _PROTOBUF_TYPES and kind != contract.CONTENT_TYPE_JSON:
            raise _Reject(415, f"unsupported Content-Type {kind or '(none)'!r}: send application/x-protobuf "
                               "or application/json")
        encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding not in ("identity", "gzip"):
            raise _Reject(415, f"unsupported Content-Encoding {encoding!r}: send gzip or none")
        if self.headers.get("Transfer-Encoding"):
            raise _Reject(411, "chunked bodies are not supported: send Content-Length")
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            raise _Reject(411, "Content-Length is required")
        try:
            length = int(length_text)
            if length < 0:
                raise ValueError
        except ValueError:
            raise _Reject(400, f"bad Content-Length {length_text!r}") from None
        if length > cfg.max_body_bytes:
            raise _Reject(413, f"body of {length} bytes exceeds {cfg.max_body_bytes}: send smaller batches")
        body = self.rfile.read(length)
        if len(body) != length:
            raise _Reject(400, "body shorter than Content-Length")
        if encoding == "gzip":
            body = _gunzip(body, cfg.max_body_bytes)
        try:
            req, rejected, why = decode_with_rejections(body, is_json)
        except OtlpDecodeError as exc:
            raise _Reject(400, str(exc)) from None
        messages = split_by_trace(req)
        try:
            refused = self.receiver.forwarder.forward([(key, r.SerializeToString()) for key, r in messages])
        except KafkaUnavailable as exc:
            log.warning("costline collect: answering 503: %s", exc)
            retry = str(max(int(round(exc.retry_after)), 1))
            raise _Reject(503, "Kafka unavailable, retry later", {"Retry-After": retry}) from None
        if refused:
            by_key = dict(messages)
            for key, reason in refused:
                rejected += span_count(by_key[key]) if key in by_key else 0
                why = why or f"trace {key} refused by Kafka: {reason}"
        resp = ExportTraceServiceResponse()
        if rejected:
            resp.partial_success.rejected_spans = rejected
            resp.partial_success.error_message = why
        self._send(200, resp, is_json)

    # -- answers ---------------------------------------------------------------------------------
    def _send(self, status: int, message: Any, is_json: bool, headers: dict[str, str] | None = None) -> None:
        if is_json:
            body = json_format.MessageToJson(message, indent=None).encode()
            ctype = contract.CONTENT_TYPE_JSON
        else:
            body = message.SerializeToString()
            ctype = contract.CONTENT_TYPE_PROTOBUF
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _error(self, r: _Reject, is_json: bool) -> None:
        # The body may be unread: do not reuse the connection after an error.
        self.close_connection = True
        status = status_pb2.Status(code=_GRPC_CODE.get(r.status, 2), message=r.message)
        self._send(r.status, status, is_json, r.headers)


class OtlpReceiver:
    """``POST /v1/traces`` on ``config.host:config.port`` → ``forwarder``.

    ``start()`` serves on a background thread and returns the bound port (pass
    ``port=0`` for any free one); ``serve_forever()`` blocks; ``shutdown()``
    stops serving and closes the forwarder.
    """

    def __init__(
        self,
        config: CollectorConfig,
        forwarder: Forwarder,
        *,
        host: str | None = None,
        port: int | None = None,
    ) -> None:
        self.config = config
        self.forwarder = forwarder
        self.host = config.host if host is None else host
        self._port = config.port if port is None else port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else self._port

    @property
    def endpoint(self) -> str:
        """The URL to give an OTLP/HTTP exporter (``.../v1/traces``)."""
        return f"http://{self.host}:{self.port}{TRACES_PATH}"

    def bind(self) -> ThreadingHTTPServer:
        """Open the listening socket (idempotent); raises ReceiverError when the port is taken."""
        if self._server is None:
            handler = type("OtlpHandler", (_Handler,), {"receiver": self})
            try:
                server = ThreadingHTTPServer((self.host, self._port), handler)
            except OSError as exc:
                raise ReceiverError(
                    f"cannot listen on {self.host}:{self._port} ({exc.strerror or exc}): stop what uses the "
                    "port, or pick another with --port / [collector] port (COSTLINE_COLLECTOR_PORT)"
                ) from None
            server.daemon_threads = True
            self._server = server
        return self._server

    def start(self) -> int:
        """Serve on a background thread; return the bound port."""
        server = self.bind()
        if self._thread is None:
            self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="costline-collect", daemon=True)
            self._thread.start()
        return self.port

    def serve_forever(self) -> None:
        """Serve on this thread until :meth:`shutdown` (or Ctrl-C)."""
        self.bind().serve_forever()

    def shutdown(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            if self._thread is not None:
                server.shutdown()
                self._thread.join(timeout=5)
                self._thread = None
            server.server_close()
        try:
            self.forwarder.close()
        except Exception:
            log.exception("costline collect: error closing the forwarder")
