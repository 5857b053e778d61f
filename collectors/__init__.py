"""costline.collectors: get telemetry out of apps and into Kafka.

* :class:`Recorder` — record costline requests, cache lookups and model calls as spans;
* :func:`instrument_anthropic` / :func:`instrument_openai` — record SDK calls automatically;
* :func:`setup_tracing` — one call: TracerProvider + request-id stamping + Kafka export;
* :class:`KafkaSpanExporter` — the SDK's spans → Kafka, one OTLP message per trace;
* :class:`OtlpReceiver` + :class:`KafkaForwarder` — ``costline collect``, OTLP/HTTP → Kafka;
* :class:`OtlpGrpcReceiver` — the same for OTLP/gRPC (``costline collect --grpc-port 4317``).

Importing this package has no side effects; Kafka is only contacted on first export.
:class:`OtlpGrpcReceiver` is imported on first use (apps that only record spans never load grpc).
"""

from __future__ import annotations

from costline.collectors.errors import CollectorError, KafkaUnavailable, ReceiverError
from costline.collectors.forwarder import Forwarder, KafkaForwarder
from costline.collectors.instrument import instrument_anthropic, instrument_openai
from costline.collectors.kafka_exporter import KafkaSpanExporter
from costline.collectors.receiver import OtlpReceiver
from costline.collectors.recorder import CallHandle, LookupHandle, Recorder, RequestHandle, capture_enabled
from costline.collectors.stamping import REQUEST_ID_CONTEXT_KEY, RequestStampingProcessor, current_request_id
from costline.collectors.tracing import setup_tracing
from costline.lazy import lazy_loader

__all__ = [
    "CallHandle",
    "CollectorError",
    "Forwarder",
    "KafkaForwarder",
    "KafkaSpanExporter",
    "KafkaUnavailable",
    "LookupHandle",
    "OtlpGrpcReceiver",
    "OtlpReceiver",
    "REQUEST_ID_CONTEXT_KEY",
    "ReceiverError",
    "Recorder",
    "RequestHandle",
    "RequestStampingProcessor",
    "capture_enabled",
    "current_request_id",
    "instrument_anthropic",
    "instrument_openai",
    "setup_tracing",
]

__getattr__, __dir__ = lazy_loader(__name__, {"OtlpGrpcReceiver": "receiver_grpc"})
