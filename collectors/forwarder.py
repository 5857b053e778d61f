"""Forward OTLP traces to Kafka and wait for the acknowledgement (used by the receiver).

Each trace is its own message — key = trace id hex, value = an OTLP protobuf
``ExportTraceServiceRequest`` — like the OpenTelemetry Collector's Kafka
exporter with ``partition_traces_by_id``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from costline import contract
from costline.config import KafkaConfig

from costline.collectors.errors import KafkaUnavailable
from costline.collectors.producer import LazyProducer

__all__ = ["Forwarder", "KafkaForwarder"]

log = logging.getLogger(__name__)

_HEADERS = ((contract.HEADER_CONTENT_TYPE, contract.CONTENT_TYPE_PROTOBUF.encode()),)


class Forwarder(Protocol):
    """What the receiver needs: hand over keyed messages, wait for them to be safe."""

    def forward(self, messages: Sequence[tuple[str, bytes]]) -> list[tuple[str, str]]:
        """Deliver every ``(key, value)``; return ``(key, why)`` for messages refused for good.

        Raises :class:`KafkaUnavailable` when they could not be delivered in time
        (the client should retry the whole request later).
        """
        ...

    def close(self) -> None: ...


class KafkaForwarder:
    """Produce to ``config.topic`` with acks=all; wait at most ``produce_timeout_s``.

    The defaults are ``[collector]``'s (3 s, Retry-After 1 s): the 503 must reach the sender well inside its own
    export timeout (the OTel SDKs' default is 10 s), and its retry must fit there too, or the sender gives up and
    drops the batch without ever seeing the answer.
    """

    def __init__(
        self,
        config: KafkaConfig,
        *,
        produce_timeout_s: float = 3.0,
        retry_after_s: float = 1.0,
        connect_timeout_s: float = 2.0,
        producer_config: Mapping[str, Any] | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.topic = config.topic
        self._timeout = produce_timeout_s
        self._retry_after = retry_after_s
        self._now = now
        self._producer = LazyProducer(
            config, connect_timeout_s=min(connect_timeout_s, produce_timeout_s),
            retry_backoff_s=1.0, producer_config=producer_config, now=now,
        )

    def _unavailable(self, detail: str, *, counted: bool = False) -> KafkaUnavailable:
        """The error the receiver answers 503 with; a send or acknowledgement that failed is counted in the
        outage (``counted``: ``get()`` counted it already), which the producer logs once a minute."""
        if not counted:
            self._producer.note_failure(detail)
        return KafkaUnavailable(self.config.bootstrap, detail, retry_after=self._retry_after)

    def forward(self, messages: Sequence[tuple[str, bytes]]) -> list[tuple[str, str]]:
        if not messages:
            return []
        deadline = self._now() + self._timeout
        producer = self._producer.get()
        if producer is None:
            raise self._unavailable(self._producer.last_error or "cannot connect", counted=True)
        futures = []
        refused: list[tuple[str, str]] = []
        for key, value in messages:
            try:
                futures.append((key, producer.send(self.topic, value=value, key=key.encode(), headers=list(_HEADERS))))
            except Exception as exc:
                if getattr(exc, "retriable", False) or type(exc).__name__ == "KafkaTimeoutError":
                    raise self._unavailable(f"{type(exc).__name__}: {exc}") from None
                refused.append((key, f"{type(exc).__name__}: {exc}"))
        for key, future in futures:
            try:
                future.get(timeout=max(deadline - self._now(), 0.001))
            except Exception as exc:
                if getattr(exc, "retriable", False) or type(exc).__name__ == "KafkaTimeoutError":
                    raise self._unavailable(f"no acknowledgement within {self._timeout:g}s ({exc})") from None
                refused.append((key, f"{type(exc).__name__}: {exc}"))
        self._producer.note_success()
        return refused

    def close(self, timeout_s: float = 5.0) -> None:
        self._producer.close(timeout_s=timeout_s)
