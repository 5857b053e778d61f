"""A KafkaProducer created on first use, with a back-off while Kafka is away.

Shared by :class:`~costline.collectors.kafka_exporter.KafkaSpanExporter` and
:class:`~costline.collectors.forwarder.KafkaForwarder`. Creating a kafka-python
producer blocks until it has bootstrapped; this wrapper bounds that wait
(``connect_timeout_s``) and, after a failure, answers ``None`` at once until
``retry_backoff_s`` has passed, so callers never stall on a dead cluster.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from costline.config import KafkaConfig
from costline.kafka_security import client_options

__all__ = ["LazyProducer", "producer_settings"]

log = logging.getLogger(__name__)


def producer_settings(config: KafkaConfig, *, connect_timeout_s: float, **overrides: Any) -> dict[str, Any]:
    """kafka-python producer settings: acks=all, short linger, no compression, short blocking."""
    block_ms = max(int(connect_timeout_s * 1000), 100)
    settings: dict[str, Any] = {
        "bootstrap_servers": config.bootstrap.split(","),
        "client_id": "costline-collector",
        "acks": "all",
        "linger_ms": 5,
        "compression_type": None,
        "max_block_ms": block_ms,
        "bootstrap_timeout_ms": block_ms,
        "request_timeout_ms": 10_000,
        "delivery_timeout_ms": 30_000,
        "reconnect_backoff_max_ms": 2_000,
        **client_options(config),
    }
    settings.update(overrides)
    return settings


class LazyProducer:
    """``get()`` → a connected KafkaProducer, or None while Kafka is unreachable."""

    def __init__(
        self,
        config: KafkaConfig,
        *,
        connect_timeout_s: float = 1.0,
        retry_backoff_s: float = 2.0,
        producer_config: Mapping[str, Any] | None = None,
        factory: Callable[..., Any] | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._settings = producer_settings(config, connect_timeout_s=connect_timeout_s, **dict(producer_config or {}))
        self._retry_backoff_s = retry_backoff_s
        self._factory = factory
        self._now = now
        self._lock = threading.Lock()
        self._producer: Any = None
        self._next_try = float("-inf")
        self.last_error: str | None = None

    @property
    def bootstrap(self) -> str:
        return self.config.bootstrap

    def get(self) -> Any:
        """The producer, creating it if needed; None (at once) while backing off after a failure."""
        with self._lock:
            if self._producer is not None:
                return self._producer
            if self._now() < self._next_try:
                return None
            try:
                factory = self._factory
                if factory is None:
                    from kafka import KafkaProducer

                    factory = KafkaProducer
                self._producer = factory(**self._settings)
                self.last_error = None
                return self._producer
            except Exception as exc:  # kafka-python raises several kinds here
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._next_try = self._now() + self._retry_backoff_s
                log.warning("costline: Kafka at %s unreachable (%s); retrying in %.1fs",
                            self.bootstrap, self.last_error, self._retry_backoff_s)
                return None

    def back_off(self, reason: str) -> None:
        """Note that Kafka stopped answering (metadata timeout...)."""
        self.last_error = reason

    def close(self, timeout_s: float = 5.0) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=timeout_s)
            except Exception:
                log.exception("costline: error closing the Kafka producer")
