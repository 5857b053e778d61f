"""Stored responses of the gateway's Responses API, for ``previous_response_id``.

OpenAI's Responses API stores each response (``store``, true by default) so that the next request of a conversation
sends only its new input and ``previous_response_id``. The gateway keeps, per tenant, each stored response's
conversation in the Messages API's shape — the turns it answered and its answer (text and tool calls) — and a
request naming it continues from there. Bounded: ``ttl_s`` seconds, at most ``max_responses`` (the oldest dropped
first), a conversation of at most ``max_bytes`` (a longer one is not stored; naming it later is a "not found").

One SQLite database: in memory for one gateway process, or a file every worker of ``costline serve --workers N``
opens (``[serving.gateway] responses_store_path``, or a file in the supervisor's private folder). A tenant reads
only its own responses. Replicas on other machines do not share it: a conversation that moves between them must
send its whole input, as one that is not stored does.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["ResponseStore"]

log = logging.getLogger(__name__)

_SCHEMA = """CREATE TABLE IF NOT EXISTS responses (
    tenant TEXT NOT NULL, id TEXT NOT NULL, created REAL NOT NULL, turns TEXT NOT NULL,
    PRIMARY KEY (tenant, id))"""


class ResponseStore:
    """Conversations of stored responses, per tenant (see the module docstring). Thread-safe; ``now`` is the clock
    of their ages (seconds)."""

    def __init__(self, path: str | Path | None = None, *, ttl_s: float = 86_400.0, max_responses: int = 10_000,
                 max_bytes: int = 8 * 1024 * 1024, now: Callable[[], float] = time.time) -> None:
        self.ttl_s = ttl_s
        self.max_responses = max_responses
        self.max_bytes = max_bytes
        self._now = now
        self._lock = threading.Lock()
        self._db = sqlite3.connect(":memory:" if path is None else str(path), check_same_thread=False,
                                   timeout=5.0, isolation_level=None)
        if path is not None:
            self._db.execute("PRAGMA journal_mode=WAL")  # workers read while one writes
        self._db.execute(_SCHEMA)

    def put(self, tenant: str, response_id: str, turns: Sequence[Any]) -> bool:
        """Keep ``turns`` (the conversation up to and with the response) as ``tenant``'s ``response_id``; False when
        it is over ``max_bytes`` (not kept). Expired and surplus responses are dropped on the way."""
        body = json.dumps(list(turns), separators=(",", ":"), ensure_ascii=False)
        if len(body.encode()) > self.max_bytes:
            log.info("costline: response %s not stored: its conversation is over %d bytes", response_id, self.max_bytes)
            return False
        now = self._now()
        try:
            with self._lock:
                self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?)",
                                 (tenant, response_id, now, body))
                self._db.execute("DELETE FROM responses WHERE created < ?", (now - self.ttl_s,))
                self._db.execute("DELETE FROM responses WHERE rowid NOT IN "
                                 "(SELECT rowid FROM responses ORDER BY created DESC LIMIT ?)", (self.max_responses,))
        except sqlite3.Error:  # a full disk, a closed store: the answer stands, only its continuation is lost
            log.exception("costline: could not store response %s", response_id)
            return False
        return True

    def get(self, tenant: str, response_id: str) -> list[Any] | None:
        """``tenant``'s conversation of ``response_id``, or None (never stored, expired, dropped, another tenant's)."""
        try:
            with self._lock:
                row = self._db.execute("SELECT created, turns FROM responses WHERE tenant = ? AND id = ?",
                                       (tenant, response_id)).fetchone()
        except sqlite3.Error:
            log.exception("costline: could not read stored response %s", response_id)
            return None
        if row is None or row[0] < self._now() - self.ttl_s:
            return None
        return json.loads(row[1])

    def close(self) -> None:
        with self._lock:
            self._db.close()
