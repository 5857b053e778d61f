"""A KafkaProducer created on first use, with a back-off while Kafka is away.

Shared by :class:`~costline.collectors.kafka_exporter.KafkaSpanExporter` and
:class:`~costline.collectors.forwarder.KafkaForwarder`. Creating a kafka-python
producer blocks until it has bootstrapped; this wrapper bounds that wait
(``connect_timeout_s``) and, after a failure, answers ``None`` at once until
``retry_backoff_s`` has passed, so callers never stall on a dead cluster.

An outage is logged once when it starts (with why, from :func:`costline.localkafka.diagnose`, found on a thread of
its own: a refused login or TLS handshake names the ``[kafka]`` keys to check), then once a minute while it lasts,
and once when Kafka answers again; the retries in between are debug lines.

Fork safety: a pre-forking server (gunicorn ``--preload``, Celery prefork, ``multiprocessing`` with fork) copies
the parent's producer into each child, where its I/O thread does not exist: everything the child sent through it
would wait there forever. A child therefore starts afresh (``os.register_at_fork``, and a pid check on use for
forks that bypass it): new lock, no producer, no back-off. The inherited producer is dropped without being closed
or flushed: its buffers are the parent's (the parent sends them), and its sockets are the parent's connections.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from costline.config import KafkaConfig
from costline.kafka_security import client_options

__all__ = ["LazyProducer", "producer_settings", "DEFAULT_MAX_REQUEST_SIZE", "after_fork_in_child"]

log = logging.getLogger(__name__)

#: Seconds between the warnings that Kafka is still unreachable (the retries between them log at debug).
REPEAT_WARNING_S = 60.0
#: kafka-python's ``max_request_size`` when the producer settings do not set one (Kafka's 1 MiB).
DEFAULT_MAX_REQUEST_SIZE = 1_048_576


def after_fork_in_child(obj: Any, reinit: Callable[[Any], None]) -> None:
    """Call ``reinit(obj)`` in every child forked from now on, while ``obj`` lives (held weakly: registering
    keeps nothing alive; ``os.register_at_fork`` cannot unregister, so a dead object's hook does nothing)."""
    if not hasattr(os, "register_at_fork"):  # not on Windows: no fork there
        return
    ref = weakref.ref(obj)

    def hook() -> None:
        target = ref()
        if target is not None:
            try:
                reinit(target)
            except Exception:  # noqa: BLE001 - never break the child's start
                log.exception("costline: could not reset %s after fork", type(target).__name__)

    os.register_at_fork(after_in_child=hook)


def _disown(producer: Any) -> None:
    """Forget a producer inherited over fork without it ever flushing or closing from here: kafka-python closes a
    producer at exit and when it is collected (``close`` → ``flush``), which in a child would wait on the parent's
    buffered records that no thread here sends. Best effort: other clients are just dropped."""
    try:
        unregister = getattr(producer, "_unregister_cleanup", None)
        if callable(unregister):
            unregister()  # its atexit hook
        if hasattr(producer, "_closed"):
            producer._closed = True  # close() (from __del__) then returns at once
    except Exception:  # noqa: BLE001 - a courtesy to the child; never raise
        log.debug("costline: could not disown the producer inherited over fork", exc_info=True)


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
        diagnose: Callable[[KafkaConfig], str | None] | None = None,
    ) -> None:
        """``diagnose(config)``: why the cluster does not answer, for the log (default
        :func:`costline.localkafka.diagnose`: probes of a few seconds, run on a thread of its own)."""
        self.config = config
        self._settings = producer_settings(config, connect_timeout_s=connect_timeout_s, **dict(producer_config or {}))
        self._retry_backoff_s = retry_backoff_s
        self._factory = factory
        self._now = now
        self._lock = threading.Lock()
        self._producer: Any = None
        self._next_try = float("-inf")
        self.last_error: str | None = None
        self._diagnose = diagnose
        self._failures = 0  # failed tries since Kafka last answered
        self._warned_at = float("-inf")
        self._explainer: threading.Thread | None = None
        self._closed = False
        self._pid = os.getpid()
        after_fork_in_child(self, LazyProducer._after_fork)

    @property
    def bootstrap(self) -> str:
        return self.config.bootstrap

    @property
    def max_request_size(self) -> int:
        """The largest record (key + value + headers + batch overhead) the producer accepts, in bytes."""
        try:
            size = int(self._settings.get("max_request_size") or DEFAULT_MAX_REQUEST_SIZE)
        except (TypeError, ValueError):
            size = DEFAULT_MAX_REQUEST_SIZE
        return size if size > 0 else DEFAULT_MAX_REQUEST_SIZE

    def _after_fork(self) -> None:
        """In a forked child: start afresh (see the module's doc). The lock may have been held by a thread of the
        parent's at the fork, so it is replaced, never acquired."""
        inherited, self._producer = self._producer, None
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._next_try = float("-inf")
        self._failures, self._warned_at, self.last_error = 0, float("-inf"), None
        self._explainer = None
        if inherited is not None:
            _disown(inherited)

    def check_fork(self) -> None:
        """Start afresh if this process is a fork the fork hook missed (a fork done outside ``os.fork``)."""
        if self._pid != os.getpid():
            self._after_fork()

    def get(self) -> Any:
        """The producer, creating it if needed; None (at once) while backing off after a failure."""
        self.check_fork()
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
                self._answered()
                return self._producer
            except Exception as exc:  # kafka-python raises several kinds here
                self._next_try = self._now() + self._retry_backoff_s
                self._failed(f"{type(exc).__name__}: {exc}")
                return None

    def note_failure(self, reason: str) -> bool:
        """Count a failure of a connected producer (a send or an acknowledgement that timed out) in the outage, as
        ``get()`` counts its own; True when it was logged as a warning (the first of an outage, then one a
        minute), so a caller's own line about it can be a debug one."""
        with self._lock:
            return self._failed(reason)

    def note_success(self) -> None:
        """Kafka took and acknowledged messages: an outage, if one was counted, is over."""
        if self._failures:
            with self._lock:
                self._answered()

    def back_off(self, reason: str) -> bool:
        """Note that Kafka stopped answering (metadata timeout...): :meth:`note_failure`."""
        return self.note_failure(reason)

    def _answered(self) -> None:
        self.last_error = None
        if self._failures:
            log.warning("costline: Kafka at %s answers again (after %d failed tries)", self.bootstrap, self._failures)
            self._failures, self._warned_at = 0, float("-inf")

    def _failed(self, reason: str) -> bool:
        """One failure of the outage (the lock held): a warning at its start and once a minute, else a debug
        line; the start also looks for why (:meth:`_explain`)."""
        self.last_error = reason
        now = self._now()
        self._failures += 1
        first = self._failures == 1
        if first or now - self._warned_at >= REPEAT_WARNING_S:
            self._warned_at = now
            log.warning("costline: Kafka at %s unreachable (%s); retrying every %.1fs%s", self.bootstrap, reason,
                        self._retry_backoff_s, "" if first else f" ({self._failures} tries so far)")
            warned = True
        else:
            log.debug("costline: Kafka at %s still unreachable (%s)", self.bootstrap, reason)
            warned = False
        if first:
            self._explain()
        return warned

    def _explain(self) -> None:
        """Log why Kafka does not answer, found on a thread of its own (the probes take seconds; callers must not
        wait for them). One at a time."""
        if self._explainer is not None and self._explainer.is_alive():
            return

        def run() -> None:
            try:
                diagnose = self._diagnose
                if diagnose is None:
                    from costline.localkafka import diagnose
                why = diagnose(self.config)
            except Exception as exc:  # noqa: BLE001 - the explanation is a courtesy: never raise from here
                log.debug("costline: could not find why Kafka at %s does not answer: %s", self.bootstrap, exc)
                return
            if why and not self._closed:  # closed meanwhile: the app has moved on
                log.error("costline: Kafka at %s does not answer: %s", self.bootstrap, why)

        self._explainer = threading.Thread(target=run, name="costline-kafka-diagnose", daemon=True)
        self._explainer.start()

    def close(self, timeout_s: float = 5.0) -> None:
        self.check_fork()  # a child never closes (flushes) the parent's producer
        with self._lock:
            producer, self._producer = self._producer, None
            self._closed = True
        if producer is not None:
            try:
                producer.close(timeout=timeout_s)
            except Exception:
                log.exception("costline: error closing the Kafka producer")
