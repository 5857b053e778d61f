"""costline.processors: the stream processor from ``otlp_spans`` to the Parquet lake.

* :mod:`~costline.processors.records` — span → row (pure, table-testable);
* :mod:`~costline.processors.decode` — Kafka message → OTLP request → rows;
* :mod:`~costline.processors.buffer` — per-partition buffers → Arrow tables;
* :mod:`~costline.processors.processor` — the consumer loop, exactly-once via lake manifests;
* :mod:`~costline.processors.cli` — ``costline process``, ``costline sql``, ``costline lake views``.
"""

from __future__ import annotations

from costline.processors.decode import decode_message, flatten_message
from costline.processors.errors import DeadLetterError, ProcessorError
from costline.processors.processor import Processor, ProcessorStats
from costline.processors.records import CallRow, LookupRow, MemoPricingTable, RequestRow, flatten_span

__all__ = [
    "Processor",
    "ProcessorStats",
    "ProcessorError",
    "DeadLetterError",
    "RequestRow",
    "CallRow",
    "LookupRow",
    "MemoPricingTable",
    "flatten_span",
    "flatten_message",
    "decode_message",
]
