"""An OTLP/gRPC trace receiver (``TraceService/Export``, port 4317 by convention) that forwards to Kafka.

Many OpenTelemetry SDKs export OTLP/gRPC by default (Python's ``opentelemetry-exporter-otlp``,
.NET): this listener lets such apps send to ``costline collect`` unchanged. It validates, packs
and forwards exactly as the OTLP/HTTP receiver (:func:`~costline.collectors.receiver.decode_export`,
:func:`~costline.collectors.receiver.export_request`) and answers as the OTLP specification's
OTLP/gRPC section says:

* ``OK`` with an ``ExportTraceServiceResponse`` once Kafka acknowledged every trace, with
  ``partial_success`` (rejected_spans, error_message) when invalid spans were dropped;
* ``UNAVAILABLE`` when Kafka cannot take the data within ``produce_timeout_s``, and
  ``RESOURCE_EXHAUSTED`` past ``max_inflight_bytes`` or past ``max_workers`` RPCs at work plus
  ``max_pending`` waiting: all with a ``google.rpc.RetryInfo`` (``retry_delay``) in the trailing
  metadata, so exporters retry after it (the Go and Java exporters, and the Collector's, retry a
  RESOURCE_EXHAUSTED only with it: without, the batch is dropped);
* ``UNAUTHENTICATED`` without a valid ``authorization: Bearer <token>`` (same tokens as HTTP);
* ``INVALID_ARGUMENT`` for a message that is not an ``ExportTraceServiceRequest``;
* ``RESOURCE_EXHAUSTED`` from grpc itself for a message over ``max_body_bytes`` (decompressed) or
  metadata over ``max_header_bytes`` (no RetryInfo: retrying would not help), and past
  :data:`REFUSING_THREADS` more RPCs at once than the limits above (grpc answers before this code
  runs: each of those threads only refuses, in microseconds, so it takes a flood to get there);
* ``CANCELLED`` for a call whose message has not arrived whole within ``body_timeout_s`` (the thread
  it holds meanwhile is given back; exporters retry a CANCELLED call);
* ``INTERNAL`` for an unexpected error.

A call holds one of grpc's threads from its headers on, while its message arrives. So Export is
served as a stream-unary method, which admits the call (``max_workers`` + ``max_pending``, else
RESOURCE_EXHAUSTED with RetryInfo) *before* waiting for its message, and waits ``body_timeout_s``
at most for it; and one connection may have ``max_workers`` calls open at once (HTTP/2
``SETTINGS_MAX_CONCURRENT_STREAMS``: the client queues the rest), so one client stalling its calls
cannot hold every thread.

RetryInfo travels twice: in ``grpc-status-details-bin`` (a ``google.rpc.Status`` whose details hold
it: what the Go and Java exporters read) and bare in ``google.rpc.retryinfo-bin`` (what the Python
exporter reads). ``grpc-encoding: gzip`` requests are decompressed by grpc.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import NoReturn

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from costline.collectors.errors import ReceiverError
from costline.collectors.forwarder import Forwarder
from costline.collectors.receiver import ExportRefused, ReceiverBase, decode_export, export_request, parse_cost
from costline.config import CollectorConfig

__all__ = ["OtlpGrpcReceiver", "TRACE_SERVICE", "STATUS_DETAILS_KEY", "RETRY_INFO_KEY"]

log = logging.getLogger(__name__)

#: The OTLP trace service's full gRPC name.
TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
#: Trailing metadata: a serialized ``google.rpc.Status`` with details (the gRPC richer error model)...
STATUS_DETAILS_KEY = "grpc-status-details-bin"
#: ...and a bare serialized ``google.rpc.RetryInfo`` (read by OpenTelemetry Python's exporter).
RETRY_INFO_KEY = "google.rpc.retryinfo-bin"
#: Seconds an RPC in flight may still take when the receiver shuts down.
SHUTDOWN_GRACE_S = 5.0
#: Threads beyond ``max_workers`` + ``max_pending`` whose only work is refusing with RetryInfo: grpc
#: itself refuses (without RetryInfo) only past those.
REFUSING_THREADS = 8


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str, *,
           retry_after: int | None = None) -> NoReturn:
    """End the RPC with ``code``; with ``retry_after``, attach RetryInfo (retry_delay) as OTLP asks."""
    if retry_after is not None:
        info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=retry_after))
        detail = any_pb2.Any()
        detail.Pack(info)
        status = status_pb2.Status(code=code.value[0], message=message, details=[detail])
        context.set_trailing_metadata(((STATUS_DETAILS_KEY, status.SerializeToString()),
                                       (RETRY_INFO_KEY, info.SerializeToString())))
    context.abort(code, message)
    raise AssertionError("grpc's abort() returned")  # pragma: no cover: it raises


class _Watchdog:
    """Calls a function at its deadline unless disarmed before: one thread (started on first use) for
    every call's deadline, rather than a timer thread per call."""

    def __init__(self, name: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._name = name
        self._clock = clock
        self._heap: list[list] = []  # [due, sequence, fn or None once disarmed or run]
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def arm(self, seconds: float, fn: Callable[[], object]) -> list:
        entry = [self._clock() + seconds, next(self._seq), fn]
        with self._cond:
            heapq.heappush(self._heap, entry)
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()
        return entry

    def disarm(self, entry: list) -> bool:
        """Cancel ``entry``; False when its function already ran (or is running)."""
        with self._cond:
            armed = entry[2] is not None
            entry[2] = None
            return armed

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                while self._heap and self._heap[0][2] is None:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0][0] - self._clock()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                entry = heapq.heappop(self._heap)
                fn, entry[2] = entry[2], None
                self._cond.release()
                try:
                    fn()
                except Exception:
                    log.exception("costline collect: a deadline's action failed (OTLP/gRPC)")
                finally:
                    self._cond.acquire()


class OtlpGrpcReceiver(ReceiverBase, trace_service_pb2_grpc.TraceServiceServicer):
    """OTLP/gRPC ``TraceService/Export`` on ``config.host:config.grpc_port`` → ``forwarder``.

    Same lifecycle as :class:`~costline.collectors.receiver.OtlpReceiver`: ``start()`` serves on
    grpc's threads and returns the bound port (pass ``port=0`` for any free one);
    ``serve_forever()`` blocks; ``shutdown()`` stops serving (RPCs in flight get
    :data:`SHUTDOWN_GRACE_S`) and closes the forwarder. Bearer tokens, TLS, ``allow_insecure`` and the
    limits are the ``[collector]`` ones the HTTP receiver uses.
    """

    port_key = "grpc_port"
    protocol = "OTLP/gRPC"
    _server: grpc.Server | None = None
    _pool: ThreadPoolExecutor | None = None
    _bound = 0
    _started = False

    def __init__(self, config: CollectorConfig, forwarder: Forwarder, *, host: str | None = None,
                 port: int | None = None) -> None:
        super().__init__(config, forwarder, host=host, port=port)
        #: RPCs admitted (at work or waiting for a worker), under ``_admit_lock``.
        self._admitted = 0
        self._admit_lock = threading.Lock()
        self._working = threading.BoundedSemaphore(config.max_workers)
        #: Cancels the calls whose message has not arrived within ``body_timeout_s``.
        self._watchdog = _Watchdog("costline-collect-grpc-deadlines")

    @property
    def port(self) -> int:
        return self._bound or self._port

    @property
    def endpoint(self) -> str:
        """What to give an OTLP/gRPC exporter (``OTEL_EXPORTER_OTLP_ENDPOINT``: the scheme says TLS or not)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self._ssl is not None else 'http'}://{host}:{self.port}"

    def bind(self) -> grpc.Server:
        """Open the listening socket (idempotent); raises ReceiverError when the port is taken."""
        if self._server is not None:
            return self._server
        self.refuse_open_bind()
        cfg = self.config
        # Every RPC grpc admits gets a thread at once: Export itself makes at most max_workers work,
        # max_pending wait, and refuses the rest with RetryInfo (grpc's own limit would refuse without).
        threads = cfg.max_workers + cfg.max_pending + REFUSING_THREADS
        pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="costline-collect-grpc")
        server = grpc.server(
            pool,
            maximum_concurrent_rpcs=threads,
            options=[
                ("grpc.max_receive_message_length", cfg.max_body_bytes),
                ("grpc.max_send_message_length", 1024 * 1024),
                ("grpc.max_metadata_size", cfg.max_header_bytes),  # soft limit (refused at random past it)
                ("grpc.absolute_max_metadata_size", cfg.max_header_bytes),  # hard limit
                ("grpc.max_connection_idle_ms", int(cfg.idle_timeout_s * 1000)),
                # calls one connection may have open (the client queues more): one client stalling its
                # calls cannot hold every thread
                ("grpc.max_concurrent_streams", max(cfg.max_workers, 1)),
                ("grpc.so_reuseport", 0),  # a port in use must fail, not be shared with another server
            ],
        )
        # stream-unary, not unary-unary: for the latter grpc holds a thread waiting for the message, with no
        # deadline, before any of this code runs; so the call is admitted first, then waits body_timeout_s at most
        handler = grpc.stream_unary_rpc_method_handler(
            self._export_stream,
            request_deserializer=None,  # raw bytes: held against max_inflight_bytes before decoding
            response_serializer=ExportTraceServiceResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(TRACE_SERVICE, {"Export": handler}),))
        address = f"[{self.host}]:{self._port}" if ":" in self.host else f"{self.host}:{self._port}"
        try:
            if self._ssl is not None:
                assert cfg.tls_cert_file is not None and cfg.tls_key_file is not None
                creds = grpc.ssl_server_credentials([(cfg.tls_key_file.read_bytes(), cfg.tls_cert_file.read_bytes())])
                bound = server.add_secure_port(address, creds)
            else:
                bound = server.add_insecure_port(address)
        except RuntimeError:
            bound = 0
        if not bound:
            server.stop(None)
            pool.shutdown(wait=False)
            raise ReceiverError(
                f"cannot listen for OTLP/gRPC on {address}: stop what uses the port, or pick another with "
                f"{self.port_hint}")
        self._server, self._pool, self._bound = server, pool, bound
        return server

    def start(self) -> int:
        """Serve on grpc's threads; return the bound port."""
        server = self.bind()
        if not self._started:
            server.start()
            self._started = True
        return self.port

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown` (or Ctrl-C)."""
        self.start()
        assert self._server is not None
        self._server.wait_for_termination()

    def shutdown(self) -> None:
        server, self._server = self._server, None
        pool, self._pool = self._pool, None
        if server is not None:
            server.stop(SHUTDOWN_GRACE_S).wait(SHUTDOWN_GRACE_S + 1)
            self._started = False
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        self._watchdog.close()
        self.close_forwarder()

    # -- TraceService ---------------------------------------------------------------------------
    def Export(self, request: ExportTraceServiceRequest | bytes,
               context: grpc.ServicerContext) -> ExportTraceServiceResponse:
        """``TraceService/Export`` for a request grpc already received: a decoded one when registered with
        ``add_TraceServiceServicer_to_server`` (re-encoded, then handled the same), or the message's bytes.
        :meth:`bind` registers :meth:`_export_stream` instead (the message's wait is bounded there)."""
        return self._admitted_export(lambda: request, context)

    def _export_stream(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> ExportTraceServiceResponse:
        """``TraceService/Export`` as :meth:`bind` registers it: admitted before its message arrives, which
        must within ``body_timeout_s`` (else the call is cancelled and its thread given back); the message's
        bytes are counted against ``max_inflight_bytes`` before decoding."""
        return self._admitted_export(lambda: self._one_message(requests, context), context)

    def _one_message(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        timeout = self.config.body_timeout_s
        entry = self._watchdog.arm(timeout, context.cancel)  # wakes the wait below (grpc raises an RpcError)
        try:
            message = next(requests, None)
        finally:
            in_time = self._watchdog.disarm(entry)
        if not in_time:  # cancelled as it arrived: the client sees CANCELLED, so it is not exported
            _abort(context, grpc.StatusCode.CANCELLED, f"message not received within {timeout:g}s")
        if message is None:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "Export takes one ExportTraceServiceRequest message")
        return message

    def _admitted_export(self, get_request: Callable[[], ExportTraceServiceRequest | bytes],
                         context: grpc.ServicerContext) -> ExportTraceServiceResponse:
        self._authenticate(context)
        cfg = self.config
        with self._admit_lock:
            admitted = self._admitted < cfg.max_workers + cfg.max_pending
            if admitted:
                self._admitted += 1
        if not admitted:
            _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, "too many exports at once, retry later",
                   retry_after=max(cfg.retry_after_s, 1))
        try:
            request = get_request()  # admitted before its message arrives (within body_timeout_s)
            with self._working:  # at most max_workers at work; the admitted others wait here
                return self._export(request, context)
        finally:
            with self._admit_lock:
                self._admitted -= 1

    def _export(self, request: ExportTraceServiceRequest | bytes,
                context: grpc.ServicerContext) -> ExportTraceServiceResponse:
        cfg = self.config
        body = request if isinstance(request, bytes) else request.SerializeToString()
        try:  # spans counted on the wire, no object built: past max_spans_per_request → RESOURCE_EXHAUSTED
            more = parse_cost(body, False, cfg.max_spans_per_request)
        except ExportRefused as r:
            _abort(context, _status_code(r.grpc_code), r.message)
        # the message's bytes and its parsed spans' objects, held before decoding (as the budget holds any request:
        # one alone is taken whatever its size, the message being bounded by max_body_bytes and its spans by
        # max_spans_per_request)
        hold = len(body) + more
        if not self.budget.acquire(hold):
            _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, "too many bytes in flight, retry later",
                   retry_after=max(cfg.retry_after_s, 1))
        try:
            req, rejected, why = decode_export(body, False)  # the HTTP receiver's checks, span by span
            del body
            return export_request(req, self.forwarder, cfg.max_message_bytes, rejected=rejected, why=why)
        except ExportRefused as r:
            _abort(context, _status_code(r.grpc_code), r.message, retry_after=r.retry_after)
        except Exception as exc:
            log.exception("costline collect: unexpected error (OTLP/gRPC)")
            _abort(context, grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")
        finally:
            self.budget.release(hold)

    def _authenticate(self, context: grpc.ServicerContext) -> None:
        if not self.tokens.enabled:
            return
        values = [v for k, v in context.invocation_metadata() if k == "authorization"]
        if len(values) != 1 or not isinstance(values[0], str) or not self.tokens.check(values[0]):
            _abort(context, grpc.StatusCode.UNAUTHENTICATED,
                   "a valid 'authorization: Bearer <token>' metadata entry is required")


def _status_code(number: int) -> grpc.StatusCode:
    """The ``grpc.StatusCode`` of a numeric code (UNKNOWN for one grpc does not name)."""
    return next((code for code in grpc.StatusCode if code.value[0] == number), grpc.StatusCode.UNKNOWN)
