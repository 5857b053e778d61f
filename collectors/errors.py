"""Exceptions of the collectors (instrumentation, exporter, OTLP receiver).

::

    CostlineError
     └── CollectorError            root of everything raised here
          ├── KafkaUnavailable      Kafka did not take the data in time (carries retry_after)
          └── ReceiverError         the OTLP/HTTP receiver cannot start (port taken...)

Hot-path code (recorder, span processor, exporter) never raises these into the
app: they are for the receiver and the CLI.
"""

from __future__ import annotations

from costline.errors import CostlineError

__all__ = ["CollectorError", "KafkaUnavailable", "ReceiverError"]


class CollectorError(CostlineError):
    """Root of the errors raised by :mod:`costline.collectors`."""


class KafkaUnavailable(CollectorError):
    """Kafka did not acknowledge the data in time; try again after ``retry_after`` seconds."""

    def __init__(self, bootstrap: str, detail: str, *, retry_after: float = 5.0) -> None:
        self.bootstrap = bootstrap
        self.retry_after = retry_after
        super().__init__(
            f"Kafka at {bootstrap} did not take the data ({detail}): check it runs "
            "(`costline kafka status`) or point KAFKA_BOOTSTRAP_SERVERS at a reachable cluster"
        )


class ReceiverError(CollectorError):
    """The OTLP/HTTP receiver cannot start (the message says why and what to do)."""
