"""``setup_tracing``: one call to make an app send costline telemetry."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from costline.config import Config, load_config

from costline.collectors.stamping import RequestStampingProcessor

__all__ = ["setup_tracing", "FlushingBatchSpanProcessor"]

log = logging.getLogger(__name__)

#: The SDK's default ``force_flush`` timeout.
_DEFAULT_FLUSH_MS = 30_000


class FlushingBatchSpanProcessor(BatchSpanProcessor):
    """A ``BatchSpanProcessor`` whose ``force_flush`` also flushes the exporter.

    The SDK's ``force_flush`` hands the queued spans to ``exporter.export`` and returns True, whatever the exporter
    did with them; an exporter that buffers (the :class:`~costline.collectors.kafka_exporter.KafkaSpanExporter`
    waits for Kafka's acknowledgements, and holds spans while Kafka is away) is never asked to flush. Here
    ``force_flush(timeout_millis)`` then calls ``exporter.force_flush`` with what is left of the timeout, and
    returns False when either did not finish: True means the spans so far are acknowledged."""

    def __init__(self, span_exporter: SpanExporter, *, now: Callable[[], float] = time.monotonic, **options: Any):
        super().__init__(span_exporter, **options)
        self._flush_exporter = span_exporter
        self._flush_now = now

    def force_flush(self, timeout_millis: int | None = None) -> bool:
        timeout_ms = _DEFAULT_FLUSH_MS if timeout_millis is None else max(timeout_millis, 0)
        deadline = self._flush_now() + timeout_ms / 1000
        queued = super().force_flush(timeout_ms)
        remaining_ms = max(int((deadline - self._flush_now()) * 1000), 0)
        flush = getattr(self._flush_exporter, "force_flush", None)
        if flush is None:
            return bool(queued)
        try:
            flushed = flush(remaining_ms)
        except Exception:  # noqa: BLE001 - an exporter's bug must not raise into the app
            log.exception("costline: exporter force_flush failed")
            return False
        return bool(queued) and flushed is not False


def setup_tracing(
    service_name: str,
    *,
    config: Config | None = None,
    exporter: SpanExporter | None = None,
    set_global: bool = True,
    max_queue_size: int | None = None,
) -> TracerProvider:
    """A TracerProvider for an app: ``service.name``, request-id stamping, batched export.

    The exporter defaults to :class:`~costline.collectors.kafka_exporter.KafkaSpanExporter`
    on ``config.kafka`` (``config`` defaults to :func:`~costline.config.load_config`);
    pass another — ``InMemorySpanExporter`` in tests, ``OTLPSpanExporter`` to send to
    ``costline collect`` — to use it instead. With ``set_global`` the provider becomes
    the global one, so foreign instrumentations (e.g. opentelemetry-instrumentation-anthropic)
    use it too and their spans get stamped with the active ``costline.request.id``.
    ``max_queue_size`` bounds the spans waiting for export (default: the SDK's, or
    ``OTEL_BSP_MAX_QUEUE_SIZE``); past it the SDK drops spans rather than block the app,
    so raise it for bursty producers such as a replay of simulated traffic.
    Call ``provider.shutdown()`` at exit to flush. ``provider.force_flush(timeout_millis)`` flushes the
    exporter too (:class:`FlushingBatchSpanProcessor`): it returns True only once the exporter has
    delivered every span so far (Kafka acknowledged them), False when it could not within the timeout
    (Kafka down) — flush through the provider before a process exits or freezes.
    """
    if exporter is None:
        from costline.collectors.kafka_exporter import KafkaSpanExporter

        exporter = KafkaSpanExporter((config or load_config()).kafka)
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    provider.add_span_processor(RequestStampingProcessor())
    options = {} if max_queue_size is None else {"max_queue_size": max_queue_size}
    provider.add_span_processor(FlushingBatchSpanProcessor(exporter, **options))
    if set_global:
        trace.set_tracer_provider(provider)
    return provider
