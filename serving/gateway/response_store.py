"""Stored responses of the gateway's Responses API, for ``previous_response_id``.

OpenAI's Responses API stores each response (``store``, true by default) so that the next request of a conversation
sends only its new input and ``previous_response_id``; the API also reads a stored response back
(``GET /v1/responses/{id}``), lists the input items it answered and deletes it. The store keeps, per tenant, a JSON
document per response (the Responses route decides its shape: the conversation's input items and the response)
and a request naming it continues from there.

Bounded per tenant — at most ``max_responses`` responses and ``tenant_max_bytes`` bytes, its oldest dropped first,
so one tenant never pushes out another's — and in all (``total_max_bytes``, the oldest of anyone's dropped), each
for ``ttl_s`` seconds; a conversation longer than ``max_bytes`` is not stored (naming it later is a "not found").
Conversations (the Conversations API's) are never dropped to make room: their items and metadata (the UTF-8 bytes of
each, metadata counted as items are) are held within ``tenant_max_bytes`` per tenant and ``total_max_bytes`` in all,
and a create, an add or a metadata update that grows past one is refused (:class:`StoreFull`).
What has expired is deleted from the database, not only hidden: when the store is opened, then at most every
:data:`PURGE_EVERY_S` on a read (never a full scan per request), and by each save; a delete removes the tenant's row
whatever its age (one past its time still answers "not found", as it did before the delete).

One SQLite database: in memory for one gateway process, or a file every worker of ``costline serve --workers N``
opens (``[serving.gateway] responses_store_path``, or a file in the supervisor's private folder), created
readable by its owner only. A tenant reads and deletes only its own responses and conversations. Replicas on other
machines do not share it: a conversation that moves between them must send its whole input, as one that is not
stored does.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["CONVERSATION_MAX_BYTES", "ResponseStore", "StoreFull", "open_store"]

log = logging.getLogger(__name__)

_SCHEMA = (
    # size before the conversation: summing sizes never reads the conversations' pages
    "CREATE TABLE IF NOT EXISTS responses (tenant TEXT NOT NULL, id TEXT NOT NULL, created REAL NOT NULL, "
    "size INTEGER NOT NULL, turns TEXT NOT NULL, PRIMARY KEY (tenant, id))",
    "CREATE INDEX IF NOT EXISTS responses_by_tenant ON responses (tenant, created, size)",
    "CREATE INDEX IF NOT EXISTS responses_by_age ON responses (created, size)",
    # the Conversations API: a conversation, and its items in order (seq)
    # busy_until: a response is answering on it until then (another is refused: conversation_locked)
    # meta_size: the metadata's UTF-8 bytes, counted with the items' (added to files made before it: _META_SIZE)
    "CREATE TABLE IF NOT EXISTS conversations (tenant TEXT NOT NULL, id TEXT NOT NULL, created REAL NOT NULL, "
    "used REAL NOT NULL, metadata TEXT NOT NULL, busy_until REAL NOT NULL DEFAULT 0, "
    "meta_size INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (tenant, id))",
    "CREATE INDEX IF NOT EXISTS conversations_by_use ON conversations (used)",
    "CREATE TABLE IF NOT EXISTS conversation_items (tenant TEXT NOT NULL, conversation TEXT NOT NULL, "
    "seq INTEGER NOT NULL, id TEXT NOT NULL, size INTEGER NOT NULL, item TEXT NOT NULL, "
    "PRIMARY KEY (tenant, conversation, seq))",
    "CREATE INDEX IF NOT EXISTS conversation_items_by_id ON conversation_items (tenant, conversation, id)",
    "CREATE INDEX IF NOT EXISTS conversation_items_by_tenant ON conversation_items (tenant, size)",
    # the bytes of everyone's items and conversations' metadata, kept by triggers (an add checks the bound without
    # summing every row; the metadata's triggers: _META_SIZE)
    "CREATE TABLE IF NOT EXISTS conversation_bytes (one INTEGER PRIMARY KEY CHECK (one = 1), bytes INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO conversation_bytes VALUES (1, 0)",
    "CREATE TRIGGER IF NOT EXISTS conversation_items_added AFTER INSERT ON conversation_items "
    "BEGIN UPDATE conversation_bytes SET bytes = bytes + NEW.size; END",
    "CREATE TRIGGER IF NOT EXISTS conversation_items_dropped AFTER DELETE ON conversation_items "
    "BEGIN UPDATE conversation_bytes SET bytes = bytes - OLD.size; END",
)
#: The conversations' metadata in the byte bounds: its column (a file made by an earlier costline gets it, its
#: metadata counted then), an index a tenant's sum reads without the metadata's pages, and the triggers that keep
#: ``conversation_bytes`` (made after the column: a trigger naming a column a table lacks would not be made).
_META_SIZE = (
    "CREATE INDEX IF NOT EXISTS conversations_meta_by_tenant ON conversations (tenant, meta_size)",
    "CREATE TRIGGER IF NOT EXISTS conversations_added AFTER INSERT ON conversations "
    "BEGIN UPDATE conversation_bytes SET bytes = bytes + NEW.meta_size; END",
    "CREATE TRIGGER IF NOT EXISTS conversations_dropped AFTER DELETE ON conversations "
    "BEGIN UPDATE conversation_bytes SET bytes = bytes - OLD.meta_size; END",
    "CREATE TRIGGER IF NOT EXISTS conversations_resized AFTER UPDATE OF meta_size ON conversations "
    "BEGIN UPDATE conversation_bytes SET bytes = bytes + NEW.meta_size - OLD.meta_size; END",
)
#: How long a save waits for another process's write (the workers share the file); past it, not stored.
_BUSY_S = 1.0
#: Seconds between two purges of expired responses and conversations done on a read (each process its own).
PURGE_EVERY_S = 60.0


def _connect(path: str | Path | None, timeout: float) -> sqlite3.Connection:
    if path is not None and not os.path.exists(path):
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))  # SQLite's -wal / -shm files take its mode
    return sqlite3.connect(":memory:" if path is None else str(path), check_same_thread=False, timeout=timeout,
                           isolation_level=None)


def open_store(path: str | Path | None, schema: tuple[str, ...], timeout: float) -> sqlite3.Connection:
    """A connection to the gateway's store (``path``, or memory) with ``schema`` made: a file in WAL mode (readers do
    not wait for a writer), created readable by its owner only. Workers opening a new file at once: one sets WAL,
    the others wait for it."""
    db = _connect(path, timeout)
    for attempt in range(50):
        try:
            if path is not None:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
            for statement in schema:
                db.execute(statement)
            return db
        except sqlite3.OperationalError:
            if attempt == 49:
                raise
            time.sleep(0.05)
    raise AssertionError("unreachable")


#: The most bytes of items one conversation holds: every request that names a conversation reads all of it back (a
#: tenant's 26 MB conversation cost 550 ms of CPU a 100-byte request), and a model's context takes far less (200,000
#: tokens are about 1 MB of text), so more is only cost. Past it, adding items is refused (:class:`StoreFull`).
CONVERSATION_MAX_BYTES = 4 * 1024 * 1024


#: What a create, add or metadata update past a bound is told.
_FULL = ("the stored conversations are at their bound (4 MiB a conversation; [serving.gateway] "
         "responses_tenant_max_mib per tenant, responses_total_max_mib in all, items and metadata together): start a "
         "new conversation, or delete conversations or items no longer needed")


class StoreFull(Exception):
    """A conversation's items would go past a bound: nothing was added (a conversation never loses items behind its
    back, as a stored response may)."""


class ResponseStore:
    """Conversations of stored responses, per tenant (see the module docstring). Thread-safe; ``now`` is the clock
    of their ages (seconds)."""

    def __init__(self, path: str | Path | None = None, *, ttl_s: float = 86_400.0, max_responses: int = 1_000,
                 max_bytes: int = 8 * 1024 * 1024, tenant_max_bytes: int = 32 * 1024 * 1024,
                 total_max_bytes: int = 256 * 1024 * 1024, conversation_ttl_s: float = 30 * 86_400.0,
                 max_conversations: int = 1_000, now: Callable[[], float] = time.time) -> None:
        self.ttl_s = ttl_s
        self.conversation_ttl_s = conversation_ttl_s
        self.max_conversations = max_conversations
        self.max_responses = max_responses
        self.max_bytes = min(max_bytes, tenant_max_bytes)
        self.tenant_max_bytes = tenant_max_bytes
        self.total_max_bytes = total_max_bytes
        self._now = now
        self._write_lock = threading.Lock()
        self._db = open_store(path, _SCHEMA, _BUSY_S)
        self._count_metadata()
        # reads on a connection of their own (a file's: WAL lets them go on while a save writes); in memory, one
        # connection is the database, so reads share it and its lock
        self._reader = _connect(path, 5.0) if path is not None else self._db
        self._read_lock = threading.Lock() if path is not None else self._write_lock
        self._purge_lock = threading.Lock()
        self._next_purge = float("-inf")
        self._purge_expired()  # what expired while the gateway was down is not kept a minute longer

    def _count_metadata(self) -> None:
        """Count the conversations' metadata in the byte bounds (:data:`_META_SIZE`), once per file: one made by an
        earlier costline gets the column, its metadata's bytes measured and added to ``conversation_bytes``, in one
        transaction (workers opening it at once: the first does it, the others find it done)."""
        def count(db: sqlite3.Connection) -> None:
            if "meta_size" not in {r[1] for r in db.execute("PRAGMA table_info(conversations)")}:
                db.execute("ALTER TABLE conversations ADD COLUMN meta_size INTEGER NOT NULL DEFAULT 0")
                db.execute("UPDATE conversations SET meta_size = length(CAST(metadata AS BLOB))")
                db.execute("UPDATE conversation_bytes SET bytes = bytes + "
                           "(SELECT coalesce(sum(meta_size), 0) FROM conversations)")
            for statement in _META_SIZE:
                db.execute(statement)

        for attempt in range(50):
            try:
                self._write(count)
                return
            except sqlite3.OperationalError:
                if attempt == 49:
                    raise
                time.sleep(0.05)

    def _purge_expired(self) -> None:
        """Delete the expired responses and conversations (their items too), at most every :data:`PURGE_EVERY_S`
        (by this process's clock ``now``). A database that will not take it is tried again next time: a read never
        fails for it."""
        now = self._now()
        with self._purge_lock:
            if now < self._next_purge:
                return
            self._next_purge = now + PURGE_EVERY_S

        def purge(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM responses WHERE created < ?", (now - self.ttl_s,))
            if self.conversation_ttl_s > 0:  # 0: the API is off, its conversations are left as they are
                self._expire_conversations(db, now)

        try:
            self._write(purge)
        except sqlite3.Error:
            log.warning("costline: could not delete the expired stored responses just now; trying again later",
                        exc_info=True)

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

        def save(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM responses WHERE created < ?", (now - self.ttl_s,))
            db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?)", (tenant, response_id, now, size, body))
            self._trim(db, "WHERE tenant = ?", (tenant,), self.max_responses, self.tenant_max_bytes)
            self._trim(db, "", (), None, self.total_max_bytes)

        try:
            self._write(save)
        except sqlite3.Error:  # busy past _BUSY_S, a full disk, a closed store: the answer stands, not its sequel
            log.warning("costline: could not store response %s", response_id, exc_info=True)
            return False
        return True

    def _write(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        """``work(db)``'s result, done in one transaction (all of it or none)."""
        with self._write_lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                out = work(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return out

    def _read(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        with self._read_lock:
            return self._reader.execute(sql, args).fetchall()

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
        self._purge_expired()
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
        """Drop ``tenant``'s ``response_id``, whatever its age; whether it was there and readable (never stored,
        another tenant's — untouched —, or expired — deleted all the same —: False, the "not found" a read of it
        answers). Raises :class:`sqlite3.Error` when the database would not take the write (the caller says so: a
        delete that did not happen must not look like one that did)."""
        cutoff = self._now() - self.ttl_s

        def delete(db: sqlite3.Connection) -> bool:
            row = db.execute("SELECT created FROM responses WHERE tenant = ? AND id = ?", (tenant, response_id)).fetchone()
            if row is None:
                return False
            db.execute("DELETE FROM responses WHERE tenant = ? AND id = ?", (tenant, response_id))
            return bool(row[0] >= cutoff)

        return bool(self._write(delete))

    # -- the Conversations API's conversations and their items (raise sqlite3.Error when the database fails) ---
    def create_conversation(self, tenant: str, conversation_id: str, metadata: dict[str, str],
                            items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A new conversation of ``tenant`` holding ``items`` (each with an ``id``); the items as stored (an id the
        conversation holds already is replaced by a new one). Raises :class:`StoreFull` past ``max_conversations``
        or the byte bounds (its metadata's UTF-8 bytes count in them with its items')."""
        now = self._now()
        meta = json.dumps(metadata, ensure_ascii=False)
        meta_size = len(meta.encode())

        def create(db: sqlite3.Connection) -> list[dict[str, Any]]:
            self._expire_conversations(db, now)
            (count,) = db.execute("SELECT count(*) FROM conversations WHERE tenant = ?", (tenant,)).fetchone()
            if count >= self.max_conversations:
                raise StoreFull(f"this tenant keeps {count} conversations, the most [serving.gateway] "
                                "conversations_max allows: delete the ones it no longer needs")
            if meta_size > self._room(db, tenant):
                raise StoreFull(_FULL)
            db.execute("INSERT INTO conversations (tenant, id, created, used, metadata, busy_until, meta_size) "
                       "VALUES (?, ?, ?, ?, ?, 0, ?)", (tenant, conversation_id, now, now, meta, meta_size))
            return self._append(db, tenant, conversation_id, items)

        return self._write(create)

    def conversation(self, tenant: str, conversation_id: str) -> dict[str, Any] | None:
        """``{"id", "created_at", "metadata"}`` of ``tenant``'s conversation, or None (never created, deleted,
        unused for ``conversation_ttl_s``, another tenant's)."""
        self._purge_expired()
        rows = self._read("SELECT created, metadata FROM conversations WHERE tenant = ? AND id = ? AND used >= ?",
                          (tenant, conversation_id, self._now() - self.conversation_ttl_s))
        if not rows:
            return None
        return {"id": conversation_id, "created_at": int(rows[0][0]), "metadata": json.loads(rows[0][1])}

    def update_conversation(self, tenant: str, conversation_id: str, metadata: dict[str, str]) -> bool:
        """Replace the conversation's metadata; whether it was there. Raises :class:`StoreFull` when metadata that
        grows would take the tenant or everyone past the byte bounds (nothing changed)."""
        now = self._now()
        meta = json.dumps(metadata, ensure_ascii=False)
        meta_size = len(meta.encode())

        def update(db: sqlite3.Connection) -> bool:
            row = db.execute("SELECT meta_size FROM conversations WHERE tenant = ? AND id = ? AND used >= ?",
                             (tenant, conversation_id, now - self.conversation_ttl_s)).fetchone()
            if row is None:
                return False
            if meta_size - row[0] > 0 and meta_size - row[0] > self._room(db, tenant):  # only the growth counts
                raise StoreFull(_FULL)
            db.execute("UPDATE conversations SET metadata = ?, meta_size = ?, used = ? WHERE tenant = ? AND id = ?",
                       (meta, meta_size, now, tenant, conversation_id))
            return True

        return bool(self._write(update))

    def delete_conversation(self, tenant: str, conversation_id: str) -> bool:
        """Drop ``tenant``'s conversation and its items, whatever its age; whether it was there and not expired (one
        unused for ``conversation_ttl_s`` is deleted all the same, and is "not found" as a read of it is)."""
        cutoff = self._now() - self.conversation_ttl_s

        def delete(db: sqlite3.Connection) -> bool:
            row = db.execute("SELECT used FROM conversations WHERE tenant = ? AND id = ?",
                             (tenant, conversation_id)).fetchone()
            db.execute("DELETE FROM conversations WHERE tenant = ? AND id = ?", (tenant, conversation_id))
            db.execute("DELETE FROM conversation_items WHERE tenant = ? AND conversation = ?", (tenant, conversation_id))
            return row is not None and row[0] >= cutoff

        return self._write(delete)

    def add_items(self, tenant: str, conversation_id: str, items: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """Append ``items`` (each with an ``id``) to the conversation: the items as stored, or None when there is no
        such conversation. Raises :class:`StoreFull` past the byte bounds (nothing added)."""
        now = self._now()

        def add(db: sqlite3.Connection) -> list[dict[str, Any]] | None:
            self._expire_conversations(db, now)
            if db.execute("UPDATE conversations SET used = ? WHERE tenant = ? AND id = ? AND used >= ?",
                          (now, tenant, conversation_id, now - self.conversation_ttl_s)).rowcount == 0:
                return None
            return self._append(db, tenant, conversation_id, items)

        return self._write(add)

    def conversation_items(self, tenant: str, conversation_id: str, *, after: str | None = None,
                           limit: int | None = None, order: str = "asc") -> tuple[list[dict[str, Any]], bool] | None:
        """(a page of the conversation's items in ``order``, whether more follow), or None when there is no such
        conversation; ``after`` an item id (the page starts past it; raises LookupError for one it does not
        hold); ``limit`` None: all of them."""
        if self.conversation(tenant, conversation_id) is None:
            return None
        down = order == "desc"
        where, args = "tenant = ? AND conversation = ?", [tenant, conversation_id]
        if after is not None:
            at = self._read(f"SELECT seq FROM conversation_items WHERE {where} AND id = ? ORDER BY seq LIMIT 1",
                            (*args, after))
            if not at:
                raise LookupError(after)
            where += " AND seq < ?" if down else " AND seq > ?"
            args.append(at[0][0])
        sql = f"SELECT item FROM conversation_items WHERE {where} ORDER BY seq {'DESC' if down else 'ASC'}"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit + 1)
        rows = [json.loads(r[0]) for r in self._read(sql, tuple(args))]
        if limit is not None and len(rows) > limit:
            return rows[:limit], True
        return rows, False

    def conversation_item(self, tenant: str, conversation_id: str, item_id: str) -> dict[str, Any] | None:
        if self.conversation(tenant, conversation_id) is None:
            return None
        rows = self._read("SELECT item FROM conversation_items WHERE tenant = ? AND conversation = ? AND id = ? "
                          "ORDER BY seq LIMIT 1", (tenant, conversation_id, item_id))
        return json.loads(rows[0][0]) if rows else None

    def delete_conversation_item(self, tenant: str, conversation_id: str, item_id: str) -> bool:
        """Drop one item of the conversation; whether it was there."""
        now = self._now()

        def delete(db: sqlite3.Connection) -> bool:
            if db.execute("UPDATE conversations SET used = ? WHERE tenant = ? AND id = ? AND used >= ?",
                          (now, tenant, conversation_id, now - self.conversation_ttl_s)).rowcount == 0:
                return False
            return db.execute("DELETE FROM conversation_items WHERE tenant = ? AND conversation = ? AND id = ?",
                              (tenant, conversation_id, item_id)).rowcount > 0

        return self._write(delete)

    def hold_conversation(self, tenant: str, conversation_id: str, hold_s: float) -> bool | None:
        """Mark a response answering on the conversation for at most ``hold_s`` seconds: True; False when another
        holds it; None when there is no such conversation. :meth:`release_conversation` ends the hold."""
        now = self._now()

        def hold(db: sqlite3.Connection) -> bool | None:
            if db.execute("UPDATE conversations SET busy_until = ? WHERE tenant = ? AND id = ? AND used >= ? AND "
                          "busy_until <= ?", (now + hold_s, tenant, conversation_id, now - self.conversation_ttl_s,
                                              now)).rowcount:
                return True
            held = db.execute("SELECT 1 FROM conversations WHERE tenant = ? AND id = ? AND used >= ?",
                              (tenant, conversation_id, now - self.conversation_ttl_s)).fetchone()
            return False if held else None

        return self._write(hold)

    def release_conversation(self, tenant: str, conversation_id: str) -> None:
        self._write(lambda db: db.execute("UPDATE conversations SET busy_until = 0 WHERE tenant = ? AND id = ?",
                                          (tenant, conversation_id)))

    def conversation_room(self, tenant: str, conversation_id: str | None = None) -> int:
        """The bytes of items ``tenant``'s conversations may still take (and the conversation ``conversation_id``,
        at most :data:`CONVERSATION_MAX_BYTES` of items in all): what the tenant's and everyone's items and metadata
        leave of ``tenant_max_bytes`` and ``total_max_bytes``."""
        with self._write_lock:
            return self._room(self._db, tenant, conversation_id)

    def _room(self, db: sqlite3.Connection, tenant: str, conversation_id: str | None = None) -> int:
        (mine,) = db.execute("SELECT coalesce(sum(size), 0) FROM conversation_items WHERE tenant = ?",
                             (tenant,)).fetchone()
        (meta,) = db.execute("SELECT coalesce(sum(meta_size), 0) FROM conversations WHERE tenant = ?",
                             (tenant,)).fetchone()
        mine += meta
        (everyone,) = db.execute("SELECT bytes FROM conversation_bytes").fetchone()
        room = min(self.tenant_max_bytes - mine, self.total_max_bytes - everyone)
        if conversation_id is not None:
            (this,) = db.execute("SELECT coalesce(sum(size), 0) FROM conversation_items WHERE tenant = ? AND "
                                 "conversation = ?", (tenant, conversation_id)).fetchone()
            room = min(room, CONVERSATION_MAX_BYTES - this)
        return room

    def _expire_conversations(self, db: sqlite3.Connection, now: float) -> None:
        cutoff = now - self.conversation_ttl_s
        db.execute("DELETE FROM conversation_items WHERE (tenant, conversation) IN "
                   "(SELECT tenant, id FROM conversations WHERE used < ?)", (cutoff,))
        db.execute("DELETE FROM conversations WHERE used < ?", (cutoff,))

    def _append(self, db: sqlite3.Connection, tenant: str, conversation_id: str,
                items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Append ``items`` after the conversation's last (in this transaction), an id it holds already replaced."""
        stored, bodies, taken = [], [], set()
        for item in items:
            own = item["id"]
            if own in taken or db.execute("SELECT 1 FROM conversation_items WHERE tenant = ? AND conversation = ? "
                                          "AND id = ?", (tenant, conversation_id, own)).fetchone():
                item = {**item, "id": f"{own.split('_')[0][:16]}_{uuid.uuid4().hex}"}
            taken.add(item["id"])
            stored.append(item)
            bodies.append(json.dumps(item, separators=(",", ":"), ensure_ascii=False))
        size = sum(len(b.encode()) for b in bodies)
        if size > self._room(db, tenant, conversation_id):
            raise StoreFull(_FULL)
        (last,) = db.execute("SELECT coalesce(max(seq), 0) FROM conversation_items WHERE tenant = ? AND "
                             "conversation = ?", (tenant, conversation_id)).fetchone()
        db.executemany("INSERT INTO conversation_items VALUES (?, ?, ?, ?, ?, ?)",
                       [(tenant, conversation_id, last + k, item["id"], len(body.encode()), body)
                        for k, (item, body) in enumerate(zip(stored, bodies), start=1)])
        return stored

    def close(self) -> None:
        with self._write_lock:
            self._db.close()
        if self._reader is not self._db:
            with self._read_lock:
                self._reader.close()
