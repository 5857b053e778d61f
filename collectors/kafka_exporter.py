"""``KafkaSpanExporter``: the SDK's spans → Kafka, one OTLP protobuf message per trace per export.

The message format is the OpenTelemetry Collector Kafka exporter's with
``partition_traces_by_id``: value = an ``ExportTraceServiceRequest`` holding one
trace, key = the 32-hex-char trace id, header ``content-type:
application/x-protobuf``. Use it under a ``BatchSpanProcessor`` (see
:func:`~costline.collectors.tracing.setup_tracing`).

It never raises and never stalls: while Kafka is away, unsent messages wait in
a bounded buffer (``max_buffered_spans``) and are retried on the next
``export``/``force_flush``; what the bound pushes out is counted in
:attr:`KafkaSpanExporter.dropped_spans` and logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from costline import contract
from costline.config import KafkaConfig
from costline.otlp import encode_sdk_spans_by_trace

from costline.collectors.producer import LazyProducer

__all__ = ["KafkaSpanExporter"]

log = logging.getLogger(__name__)

_HEADERS = ((contract.HEADER_CONTENT_TYPE, contract.CONTENT_TYPE_PROTOBUF.encode()),)


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
        connect_timeout_s: float = 1.0,
        retry_backoff_s: float = 2.0,
        producer_config: Mapping[str, Any] | None = None,
        producer_factory: Callable[..., Any] | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_buffered_spans < 1:
            raise ValueError("max_buffered_spans must be at least 1")
        self.config = config
        self.topic = config.topic
        self._max_buffered = max_buffered_spans
        self._now = now
        self._producer = LazyProducer(
            config, connect_timeout_s=connect_timeout_s, retry_backoff_s=retry_backoff_s,
            producer_config=producer_config, factory=producer_factory, now=now,
        )
        self._lock = threading.Lock()
        self._pending: deque[_Message] = deque()
        self._inflight: list[tuple[_Message, Any]] = []
        self._dropped = 0
        self._shutdown = False

    # -- observability --------------------------------------------------------------------
    @property
    def dropped_spans(self) -> int:
        """Spans given up on: pushed out of the full buffer, too big, or left at shutdown."""
        return self._dropped

    @property
    def buffered_spans(self) -> int:
        """Spans waiting for Kafka (not yet handed over, or handed over but not acknowledged)."""
        with self._lock:
            return sum(m.spans for m in self._pending) + sum(m.spans for m, _ in self._inflight)

    # -- SpanExporter -------------------------------------------------------------------------
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            log.warning("costline: export after shutdown; %d spans dropped", len(spans))
            self._dropped += len(spans)
            return SpanExportResult.FAILURE
        try:
            counts = Counter(f"{s.context.trace_id:032x}" for s in spans)
            messages = [_Message(key, value, counts[key]) for key, value in encode_sdk_spans_by_trace(spans)]
        except Exception:
            log.exception("costline: could not encode %d spans; dropped", len(spans))
            self._dropped += len(spans)
            return SpanExportResult.FAILURE
        try:
            with self._lock:
                dropped_before = self._dropped
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

    # -- internals (called with the lock held) ---------------------------------------------------
    def _enforce_bound(self) -> None:
        total = sum(m.spans for m in self._pending) + sum(m.spans for m, _ in self._inflight)
        lost = 0
        while total > self._max_buffered and self._pending:
            m = self._pending.popleft()
            total -= m.spans
            lost += m.spans
        if lost:
            self._dropped += lost
            log.warning("costline: Kafka buffer full (%d spans): dropped the %d oldest spans",
                        self._max_buffered, lost)

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
