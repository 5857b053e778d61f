"""Stored responses of the gateway's Responses API, for ``previous_response_id``.

OpenAI's Responses API stores each response (``store``, true by default) so that the next request of a conversation
sends only its new input and ``previous_response_id``; the API also reads a stored response back
(``GET /v1/responses/{id}``), lists the input items it answered and deletes it. The store keeps, per tenant, a JSON
document per response (the Responses route decides its shape: the conversation's input items and the response)
and a request naming it continues from there.

Bounded per tenant — at most ``max_responses`` responses and ``tenant_max_bytes`` bytes, its oldest dropped first,
so one tenant never pushes out another's — and in all (``total_max_bytes``, the oldest of anyone's dropped), each
for ``ttl_s`` seconds; a conversation longer than ``max_bytes`` is not stored (naming it later is a "not found").

One SQLite database: in memory for one gateway process, or a file every worker of ``costline serve --workers N``
opens (``[serving.gateway] responses_store_path``, or a file in the supervisor's private folder), created
readable by its owner only. A tenant reads and deletes only its own responses. Replicas on other machines do not share it: a
conversation that moves between them must send its whole input, as one that is not stored does.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["ResponseStore"]

log = logging.getLogger(__name__)

_SCHEMA = (
    # size before the conversation: summing sizes never reads the conversations' pages
    "CREATE TABLE IF NOT EXISTS responses (tenant TEXT NOT NULL, id TEXT NOT NULL, created REAL NOT NULL, "
    "size INTEGER NOT NULL, turns TEXT NOT NULL, PRIMARY KEY (tenant, id))",
    "CREATE INDEX IF NOT EXISTS responses_by_tenant ON responses (tenant, created, size)",
    "CREATE INDEX IF NOT EXISTS responses_by_age ON responses (created, size)",
)
#: How long a save waits for another process's write (the workers share the file); past it, not stored.
_BUSY_S = 1.0


def _connect(path: str | Path | None, timeout: float) -> sqlite3.Connection:
    if path is not None and not os.path.exists(path):
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))  # SQLite's -wal / -shm files take its mode
    return sqlite3.connect(":memory:" if path is None else str(path), check_same_thread=False, timeout=timeout,
                           isolation_level=None)


class ResponseStore:
    """Conversations of stored responses, per tenant (see the module docstring). Thread-safe; ``now`` is the clock
    of their ages (seconds)."""

    def __init__(self, path: str | Path | None = None, *, ttl_s: float = 86_400.0, max_responses: int = 1_000,
                 max_bytes: int = 8 * 1024 * 1024, tenant_max_bytes: int = 32 * 1024 * 1024,
                 total_max_bytes: int = 256 * 1024 * 1024, now: Callable[[], float] = time.time) -> None:
        self.ttl_s = ttl_s
        self.max_responses = max_responses
        self.max_bytes = min(max_bytes, tenant_max_bytes)
        self.tenant_max_bytes = tenant_max_bytes
        self.total_max_bytes = total_max_bytes
        self._now = now
        self._write_lock = threading.Lock()
        self._db = _connect(path, _BUSY_S)
        for attempt in range(50):  # workers opening a new file at once: one sets WAL, the others wait for it
            try:
                if path is not None:
                    self._db.execute("PRAGMA journal_mode=WAL")  # readers do not wait for a writer
                    self._db.execute("PRAGMA synchronous=NORMAL")
                for statement in _SCHEMA:
                    self._db.execute(statement)
                break
            except sqlite3.OperationalError:
                if attempt == 49:
                    raise
                time.sleep(0.05)
        # reads on a connection of their own (a file's: WAL lets them go on while a save writes); in memory, one
        # connection is the database, so reads share it and its lock
        self._reader = _connect(path, 5.0) if path is not None else self._db
        self._read_lock = threading.Lock() if path is not None else self._write_lock

    def put(self, tenant: str, response_id: str, conversation: Any) -> bool:
        """Keep ``conversation`` (JSON: what the response answered and its answer) as ``tenant``'s ``response_id``;
        False when it was not kept (over ``max_bytes``, or the database would not take it). Expired responses and
        those over the bounds are dropped in the same transaction."""
        body = json.dumps(conversation, separators=(",", ":"), ensure_ascii=False)
        size = len(body.encode())
        if size > self.max_bytes:
            log.info("costline: response %s not stored: its conversation is over %d bytes", response_id, self.max_bytes)
            return False
        now = self._now()
        try:
            with self._write_lock:
                db = self._db
                db.execute("BEGIN IMMEDIATE")
                try:
                    db.execute("DELETE FROM responses WHERE created < ?", (now - self.ttl_s,))
                    db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?)",
                               (tenant, response_id, now, size, body))
                    self._trim(db, "WHERE tenant = ?", (tenant,), self.max_responses, self.tenant_max_bytes)
                    self._trim(db, "", (), None, self.total_max_bytes)
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
        except sqlite3.Error:  # busy past _BUSY_S, a full disk, a closed store: the answer stands, not its sequel
            log.warning("costline: could not store response %s", response_id, exc_info=True)
            return False
        return True

    @staticmethod
    def _trim(db: sqlite3.Connection, where: str, args: tuple[Any, ...], max_rows: int | None, max_bytes: int) -> None:
        """Drop the oldest rows (of ``where``) until at most ``max_rows`` of at most ``max_bytes`` are left."""
        rows, used = db.execute(f"SELECT count(*), coalesce(sum(size), 0) FROM responses {where}", args).fetchone()
        extra_rows = rows - max_rows if max_rows is not None else 0
        if extra_rows <= 0 and used <= max_bytes:
            return
        doomed, freed = [], 0
        for rowid, size in db.execute(f"SELECT rowid, size FROM responses {where} ORDER BY created", args):
            if len(doomed) >= extra_rows and used - freed <= max_bytes:
                break
            doomed.append((rowid,))
            freed += size
        db.executemany("DELETE FROM responses WHERE rowid = ?", doomed)

    def get(self, tenant: str, response_id: str) -> Any:
        """``tenant``'s conversation of ``response_id``, or None (never stored, expired, dropped, another tenant's)."""
        try:
            with self._read_lock:
                row = self._reader.execute("SELECT created, turns FROM responses WHERE tenant = ? AND id = ?",
                                           (tenant, response_id)).fetchone()
        except sqlite3.Error:
            log.warning("costline: could not read stored response %s", response_id, exc_info=True)
            return None
        if row is None or row[0] < self._now() - self.ttl_s:
            return None
        return json.loads(row[1])

    def delete(self, tenant: str, response_id: str) -> bool:
        """Drop ``tenant``'s ``response_id``; whether it was there (never stored, expired, another tenant's: False).
        Raises :class:`sqlite3.Error` when the database would not take the write (the caller says so: a delete that
        did not happen must not look like one that did)."""
        with self._write_lock:
            gone = self._db.execute("DELETE FROM responses WHERE tenant = ? AND id = ? AND created >= ?",
                                    (tenant, response_id, self._now() - self.ttl_s)).rowcount
        return gone > 0

    def close(self) -> None:
        with self._write_lock:
            self._db.close()
        if self._reader is not self._db:
            with self._read_lock:
                self._reader.close()
