"""``KafkaSpanExporter``: the SDK's spans → Kafka, one OTLP protobuf message per trace per export.

The message format is the OpenTelemetry Collector Kafka exporter's with
``partition_traces_by_id``: value = an ``ExportTraceServiceRequest`` holding one
trace, key = the 32-hex-char trace id, header ``content-type:
application/x-protobuf``. Use it under a ``BatchSpanProcessor`` (see
:func:`~costline.collectors.tracing.setup_tracing`).

It never raises and never stalls: while Kafka is away, unsent messages wait in
a buffer bounded in spans (``max_buffered_spans``) and in bytes (``max_buffered_bytes``,
counting messages not yet handed over and those handed over but not acknowledged) and
are retried on the next ``export``/``force_flush``; what the bounds push out (oldest
first) is counted in :attr:`KafkaSpanExporter.dropped_spans` and logged.

A trace's message must fit the producer's ``max_request_size`` (1 MiB by default; the
exporter keeps :data:`HEADROOM_BYTES` under it). One over it — a foreign instrumentation
that captured a 1 MB prompt or image — is split into several messages (same key, so the
trace stays on one partition), down to one span each; a span still too big alone is sent
with its largest string/bytes attribute values cut (event attributes too; never ``gen_ai.usage.*``,
``costline.*`` or the model names: :data:`KEPT_WHOLE`), their names
listed in the span's ``costline.truncated_attributes`` (:data:`TRUNCATED_ATTRIBUTES`), and
counted in :attr:`KafkaSpanExporter.truncated_spans`. Every message stays an
``ExportTraceServiceRequest``.

After a fork (gunicorn ``--preload``, Celery prefork, ``multiprocessing``), the child's
exporter starts with an empty buffer and a producer of its own (see
:mod:`costline.collectors.producer`): what the parent had buffered is the parent's to send.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from costline import contract
from costline.config import KafkaConfig
from costline.otlp import encode_sdk_spans_by_trace

from costline.collectors.producer import LazyProducer, after_fork_in_child

__all__ = ["KafkaSpanExporter", "TRUNCATED_ATTRIBUTES", "HEADROOM_BYTES", "KEPT_WHOLE", "fit_message", "truncate_span"]

log = logging.getLogger(__name__)

_HEADERS = ((contract.HEADER_CONTENT_TYPE, contract.CONTENT_TYPE_PROTOBUF.encode()),)

#: Span attribute (string array) naming the attributes whose values were cut for the span to fit one Kafka
#: message (an event's attribute as ``event:<event name>/<key>``).
TRUNCATED_ATTRIBUTES = "costline.truncated_attributes"
#: Span attributes never cut to make a span fit (what pricing and attribution read, all small): every
#: ``gen_ai.usage.*`` and ``costline.*`` attribute and these; a span that fits only with them cut is dropped whole.
KEPT_WHOLE = frozenset({"gen_ai.system", "gen_ai.provider.name", "gen_ai.operation.name", "gen_ai.request.model",
                        "gen_ai.response.model", "gen_ai.response.id"})
_KEPT_WHOLE_PREFIXES = ("gen_ai.usage.", "costline.")
#: Bytes kept free under the producer's ``max_request_size`` for the record's key, headers and batch overhead.
HEADROOM_BYTES = 4096
#: Default bound of the bytes buffered while Kafka is away.
DEFAULT_MAX_BUFFERED_BYTES = 64 * 1024 * 1024
#: Seconds between the warnings that traces are over the message limit (DEBUG lines between them).
OVERSIZE_WARNING_S = 60.0


@dataclass(frozen=True)
class _Message:
    key: str
    value: bytes
    spans: int


class KafkaSpanExporter(SpanExporter):
    """Export spans to ``config.topic``; the producer is created on first use."""

    def __init__(
        self,
        config: KafkaConfig,
        *,
        max_buffered_spans: int = 50_000,
        max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES,
        connect_timeout_s: float = 1.0,
        retry_backoff_s: float = 2.0,
        producer_config: Mapping[str, Any] | None = None,
        producer_factory: Callable[..., Any] | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_buffered_spans < 1:
            raise ValueError("max_buffered_spans must be at least 1")
        if max_buffered_bytes < 1:
            raise ValueError("max_buffered_bytes must be at least 1")
        self.config = config
        self.topic = config.topic
        self._max_buffered = max_buffered_spans
        self._max_buffered_bytes = max_buffered_bytes
        self._now = now
        self._producer = LazyProducer(
            config, connect_timeout_s=connect_timeout_s, retry_backoff_s=retry_backoff_s,
            producer_config=producer_config, factory=producer_factory, now=now,
        )
        limit = self._producer.max_request_size
        #: The largest message value sent: the producer's max_request_size less the headroom.
        self.max_message_bytes = max(limit - HEADROOM_BYTES, limit // 2)
        self._lock = threading.Lock()
        self._pending: deque[_Message] = deque()
        self._inflight: list[tuple[_Message, Any]] = []
        self._dropped = 0
        self._truncated = 0
        self._oversize_warned_at = float("-inf")
        self._shutdown = False
        self._pid = os.getpid()
        after_fork_in_child(self, KafkaSpanExporter._after_fork)

    def _after_fork(self) -> None:
        """In a forked child: an empty buffer (the parent's messages are the parent's to send), a new lock (the
        parent's may have been held at the fork), zero counts; the producer resets itself."""
        self._lock = threading.Lock()
        self._pending = deque()
        self._inflight = []
        self._dropped = 0
        self._truncated = 0
        self._pid = os.getpid()

    def _check_fork(self) -> None:
        if self._pid != os.getpid():  # a fork the at-fork hook did not see
            self._after_fork()
            self._producer.check_fork()

    # -- observability --------------------------------------------------------------------
    @property
    def dropped_spans(self) -> int:
        """Spans given up on: pushed out of the full buffer, too big, or left at shutdown."""
        return self._dropped

    @property
    def truncated_spans(self) -> int:
        """Spans sent with attribute values cut to fit one Kafka message (see :data:`TRUNCATED_ATTRIBUTES`)."""
        return self._truncated

    @property
    def buffered_spans(self) -> int:
        """Spans waiting for Kafka (not yet handed over, or handed over but not acknowledged)."""
        self._check_fork()
        with self._lock:
            return sum(m.spans for m in self._pending) + sum(m.spans for m, _ in self._inflight)

    @property
    def buffered_bytes(self) -> int:
        """Bytes of the messages waiting for Kafka (what ``max_buffered_bytes`` bounds)."""
        self._check_fork()
        with self._lock:
            return self._bytes_held()

    # -- SpanExporter -------------------------------------------------------------------------
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self._check_fork()
        if self._shutdown:
            log.warning("costline: export after shutdown; %d spans dropped", len(spans))
            self._dropped += len(spans)
            return SpanExportResult.FAILURE
        lost = truncated = 0
        try:
            counts = Counter(f"{s.context.trace_id:032x}" for s in spans)
            messages: list[_Message] = []
            for key, value in encode_sdk_spans_by_trace(spans):
                if len(value) <= self.max_message_bytes:  # nearly always: no parsing
                    messages.append(_Message(key, value, counts[key]))
                    continue
                parts, cut, too_big = fit_message(value, self.max_message_bytes)
                messages.extend(_Message(key, part, n) for part, n in parts)
                truncated += cut
                lost += too_big
                log.log(self._oversize_level(),
                        "costline: trace %s (%d bytes) is over the Kafka message limit (%d bytes): sent as %d "
                        "messages%s%s", key, len(value), self.max_message_bytes, len(parts),
                        f", {cut} spans with attribute values cut" if cut else "",
                        f", {too_big} spans too big even so (dropped)" if too_big else "")
        except Exception:
            log.exception("costline: could not encode %d spans; dropped", len(spans))
            self._dropped += len(spans)
            return SpanExportResult.FAILURE
        try:
            with self._lock:
                self._truncated += truncated
                self._dropped += lost
                dropped_before = self._dropped - lost
                self._pending.extend(messages)
                self._enforce_bound()
                self._pump()
                ok = not self._pending and self._dropped == dropped_before
            return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE
        except Exception:
            log.exception("costline: unexpected error exporting spans to Kafka")
            return SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Send what is buffered and wait (at most ``timeout_millis``) for Kafka's acknowledgements."""
        self._check_fork()
        deadline = self._now() + max(timeout_millis, 0) / 1000
        try:
            with self._lock:
                self._pump()
                producer = self._producer.get() if self._inflight else None
            if producer is not None:
                remaining = deadline - self._now()
                if remaining > 0:
                    try:
                        producer.flush(timeout=remaining)
                    except Exception as exc:  # KafkaTimeoutError: not all acknowledged in time
                        log.warning("costline: Kafka flush incomplete: %s", exc)
            with self._lock:
                self._reap()
                if self._pending and self._now() < deadline:
                    self._pump()
                return not self._pending and not self._inflight
        except Exception:
            log.exception("costline: unexpected error flushing spans to Kafka")
            return False

    def shutdown(self) -> None:
        """Flush (bounded), close the producer, count what could not be sent as dropped."""
        self._check_fork()
        if self._shutdown:
            return
        try:
            self.force_flush(5_000)
        finally:
            self._shutdown = True
            self._producer.close(timeout_s=2.0)
            with self._lock:
                left = sum(m.spans for m in self._pending) + sum(
                    m.spans for m, f in self._inflight if not (f.is_done and f.succeeded())
                )
                self._pending.clear()
                self._inflight.clear()
            if left:
                self._dropped += left
                log.warning("costline: %d spans not delivered to Kafka at shutdown (dropped)", left)

    def _oversize_level(self) -> int:
        """WARNING for the first trace over the message limit, then at most once a minute (DEBUG in between: an app
        that captures every image must not flood its log)."""
        now = self._now()
        if now - self._oversize_warned_at >= OVERSIZE_WARNING_S:
            self._oversize_warned_at = now
            return logging.WARNING
        return logging.DEBUG

    # -- internals (called with the lock held) ---------------------------------------------------
    def _bytes_held(self) -> int:
        return sum(len(m.value) for m in self._pending) + sum(len(m.value) for m, _ in self._inflight)

    def _enforce_bound(self) -> None:
        """Drop the oldest messages not yet handed over while over either bound (spans or bytes)."""
        total = sum(m.spans for m in self._pending) + sum(m.spans for m, _ in self._inflight)
        held = self._bytes_held()
        lost = lost_bytes = 0
        while (total > self._max_buffered or held > self._max_buffered_bytes) and self._pending:
            m = self._pending.popleft()
            total -= m.spans
            held -= len(m.value)
            lost += m.spans
            lost_bytes += len(m.value)
        if lost:
            self._dropped += lost
            log.warning("costline: Kafka buffer full (bounds: %d spans, %d bytes): dropped the %d oldest spans "
                        "(%d bytes)", self._max_buffered, self._max_buffered_bytes, lost, lost_bytes)

    def _reap(self) -> None:
        """Forget acknowledged messages; put retriable failures back at the front of the queue."""
        still: list[tuple[_Message, Any]] = []
        retry: list[_Message] = []
        acked = False
        for message, future in self._inflight:
            if not future.is_done:
                still.append((message, future))
            elif future.succeeded():
                acked = True
                continue
            elif getattr(future.exception, "retriable", False) or _is_timeout(future.exception):
                retry.append(message)
            else:
                self._dropped += message.spans
                log.warning("costline: Kafka refused trace %s (%s); %d spans dropped",
                            message.key, future.exception, message.spans)
        self._inflight = still
        self._pending.extendleft(reversed(retry))
        if acked:
            self._producer.note_success()  # an outage counted by the producer is over

    def _pump(self) -> None:
        self._reap()
        if not self._pending:
            return
        producer = self._producer.get()
        if producer is None:
            return
        while self._pending:
            message = self._pending[0]
            try:
                future = producer.send(self.topic, value=message.value, key=message.key.encode(), headers=list(_HEADERS))
            except Exception as exc:
                if getattr(exc, "retriable", False) or _is_timeout(exc):
                    warned = self._producer.back_off(str(exc))
                    log.log(logging.WARNING if warned else logging.DEBUG,
                            "costline: Kafka not taking messages (%s); %d spans buffered",
                            exc, sum(m.spans for m in self._pending))
                    return
                self._pending.popleft()
                self._dropped += message.spans
                log.warning("costline: Kafka refused trace %s (%s); %d spans dropped", message.key, exc, message.spans)
                continue
            self._pending.popleft()
            self._inflight.append((message, future))


def _is_timeout(exc: BaseException | None) -> bool:
    return exc is not None and type(exc).__name__ == "KafkaTimeoutError"


# -- fitting a trace into messages of at most ``limit`` bytes (pure; protobuf level) -------------------------
_Unit = tuple[int, int, Span]  # (resource_spans index, scope_spans index, span)


def fit_message(value: bytes, limit: int) -> tuple[list[tuple[bytes, int]], int, int]:
    """An ``ExportTraceServiceRequest`` (one trace) over ``limit`` bytes → ``(parts, truncated, dropped)``:
    ``parts`` are ``(request bytes, spans)`` of at most ``limit`` bytes each, holding every span in order (spans
    packed greedily; resource and scope repeated in each part); a span over the limit alone has its largest
    string/bytes attribute values cut (``truncated`` counts such spans), and is left out only when even that cannot
    make it fit (``dropped``)."""
    request = ExportTraceServiceRequest.FromString(value)
    units: list[_Unit] = [(ri, si, span) for ri, rs in enumerate(request.resource_spans)
                          for si, ss in enumerate(rs.scope_spans) for span in ss.spans]
    parts: list[tuple[bytes, int]] = []
    truncated = dropped = 0
    for group in _pack(request, units, limit):
        for chunk in _fitting(request, group, limit):
            if len(chunk) > 1:
                parts.append((_build(request, chunk).SerializeToString(), len(chunk)))
                continue
            data = _build(request, chunk).SerializeToString()
            if len(data) <= limit:
                parts.append((data, 1))
                continue
            cut = _truncated(request, chunk[0], limit)
            if cut is None:
                dropped += 1
                log.error("costline: span %s of trace %s is over the Kafka message limit (%d bytes) even with its "
                          "attribute values cut; dropped", chunk[0][2].span_id.hex(), chunk[0][2].trace_id.hex(),
                          limit)
            else:
                truncated += 1
                parts.append((cut, 1))
    return parts, truncated, dropped


def _build(request: ExportTraceServiceRequest, units: Sequence[_Unit]) -> ExportTraceServiceRequest:
    """A request holding ``units`` (consecutive units of one resource/scope share its entries)."""
    out = ExportTraceServiceRequest()
    last: tuple[int, int] | None = None
    scope: Any = None
    for ri, si, span in units:
        if last is None or last[0] != ri:
            rs_in = request.resource_spans[ri]
            rs = out.resource_spans.add(schema_url=rs_in.schema_url)
            rs.resource.CopyFrom(rs_in.resource)
            last = None
        if last != (ri, si):
            ss_in = request.resource_spans[ri].scope_spans[si]
            scope = rs.scope_spans.add(schema_url=ss_in.schema_url)
            scope.scope.CopyFrom(ss_in.scope)
        scope.spans.append(span)
        last = (ri, si)
    return out


def _pack(request: ExportTraceServiceRequest, units: Sequence[_Unit], limit: int) -> Iterator[list[_Unit]]:
    """Greedy groups whose estimated size is within ``limit`` (a span with its resource and scope; checked later)."""
    group: list[_Unit] = []
    size = 0
    for unit in units:
        ri, si, span = unit
        rs = request.resource_spans[ri]
        cost = span.ByteSize() + rs.resource.ByteSize() + rs.scope_spans[si].scope.ByteSize() + 32
        if group and size + cost > limit:
            yield group
            group, size = [], 0
        group.append(unit)
        size += cost
    if group:
        yield group


def _fitting(request: ExportTraceServiceRequest, units: list[_Unit], limit: int) -> Iterator[list[_Unit]]:
    """``units`` halved until each part serializes within ``limit`` (or is a single span)."""
    if len(units) == 1 or _build(request, units).ByteSize() <= limit:
        yield units
        return
    mid = len(units) // 2
    yield from _fitting(request, units[:mid], limit)
    yield from _fitting(request, units[mid:], limit)


def _values(value: AnyValue, label: str) -> Iterator[tuple[AnyValue, str]]:
    """The string/bytes values in ``value`` (arrays and key-value lists walked), with the attribute's label."""
    kind = value.WhichOneof("value")
    if kind in ("string_value", "bytes_value"):
        yield value, label
    elif kind == "array_value":
        for item in value.array_value.values:
            yield from _values(item, label)
    elif kind == "kvlist_value":
        for kv in value.kvlist_value.values:
            yield from _values(kv.value, label)


def _length(value: AnyValue) -> int:
    if value.WhichOneof("value") == "bytes_value":
        return len(value.bytes_value)
    return len(value.string_value.encode("utf-8", "surrogatepass"))


def _cut(value: AnyValue, keep: int) -> None:
    if value.WhichOneof("value") == "bytes_value":
        value.bytes_value = value.bytes_value[:keep]
    else:  # on a character boundary
        value.string_value = value.string_value.encode("utf-8", "surrogatepass")[:keep].decode("utf-8", "ignore")


def _kept_whole(key: str) -> bool:
    return key in KEPT_WHOLE or key.startswith(_KEPT_WHOLE_PREFIXES)


def truncate_span(request: ExportTraceServiceRequest, resource_index: int, scope_index: int, span: Span,
                  limit: int) -> bytes | None:
    """An ``ExportTraceServiceRequest`` holding only ``span`` (under ``request``'s resource ``resource_index`` and its
    scope ``scope_index``) of at most ``limit`` bytes: the span's largest string/bytes attribute values (its events'
    too; never :data:`KEPT_WHOLE`'s) cut on a character boundary, their names in :data:`TRUNCATED_ATTRIBUTES`;
    None when cutting every such value cannot make it fit (a huge resource, thousands of numbers). Its ids, times,
    numbers and the rest are kept as they are. What :func:`fit_message` does to a span over the limit alone (the
    OTLP receivers do the same)."""
    return _truncated(request, (resource_index, scope_index, span), limit)


def _truncated(request: ExportTraceServiceRequest, unit: _Unit, limit: int) -> bytes | None:
    """One span's request with its largest attribute values cut until it fits ``limit``, the cut attributes named
    in :data:`TRUNCATED_ATTRIBUTES`; None when cutting every value cannot make it fit."""
    ri, si, original = unit
    single = _build(request, [(ri, si, original)])
    span = single.resource_spans[0].scope_spans[0].spans[0]
    names: list[str] = []  # an earlier cut's names (a span exported twice) are kept, in the marker set below
    for index, kv in enumerate(span.attributes):
        if kv.key == TRUNCATED_ATTRIBUTES:
            names = [v.string_value for v in kv.value.array_value.values if v.string_value]
            del span.attributes[index]
            break
    candidates = [found for kv in span.attributes if not _kept_whole(kv.key) for found in _values(kv.value, kv.key)]
    candidates += [found for event in span.events for kv in event.attributes
                   for found in _values(kv.value, f"event:{event.name}/{kv.key}")]
    candidates.sort(key=lambda c: _length(c[0]), reverse=True)

    def marker_size(labels: Sequence[str]) -> int:  # an upper bound of the marker attribute's bytes
        return (64 + sum(len(n.encode("utf-8", "surrogatepass")) + 8 for n in labels)) if labels else 0

    for value, label in candidates:
        if single.ByteSize() + marker_size(names) <= limit:
            break
        length = _length(value)
        if length == 0:
            break  # sorted: nothing longer is left to cut
        labels = names if label in names else [*names, label]
        excess = single.ByteSize() + marker_size(labels) - limit
        _cut(value, max(length - excess, 0))
        names[:] = labels
    if names:
        marker = span.attributes.add(key=TRUNCATED_ATTRIBUTES)
        for name in names:
            marker.value.array_value.values.add(string_value=name)
    data = single.SerializeToString()
    return data if len(data) <= limit else None
