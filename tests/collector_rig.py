"""Shared by the collector tests: a forwarder that keeps what the receiver hands it (Kafka always takes it)."""

from __future__ import annotations

import threading

__all__ = ["RecordingForwarder"]


class RecordingForwarder:
    """What a receiver forwards, kept in ``messages`` (``(key, value)`` pairs); nothing is refused. ``entered`` is
    set once a forward began; with ``hold``, each forward waits for it (at most 10 s) first, so a test can keep an
    export in flight."""

    def __init__(self, hold: threading.Event | None = None) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.hold = hold
        self.entered = threading.Event()

    def forward(self, messages):
        self.entered.set()
        if self.hold is not None:
            self.hold.wait(10)
        self.messages.extend(messages)
        return []

    def close(self) -> None:
        """Nothing to release: the messages stay for the test to read."""
