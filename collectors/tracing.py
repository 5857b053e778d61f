"""``setup_tracing``: one call to make an app send costline telemetry."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from costline.config import Config, load_config

from costline.collectors.stamping import RequestStampingProcessor

__all__ = ["setup_tracing"]


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
    Call ``provider.shutdown()`` at exit to flush.
    """
    if exporter is None:
        from costline.collectors.kafka_exporter import KafkaSpanExporter

        exporter = KafkaSpanExporter((config or load_config()).kafka)
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    provider.add_span_processor(RequestStampingProcessor())
    options = {} if max_queue_size is None else {"max_queue_size": max_queue_size}
    provider.add_span_processor(BatchSpanProcessor(exporter, **options))
    if set_global:
        trace.set_tracer_provider(provider)
    return provider
