"""Message Batches on the gateway: where a batch's requests are kept, and the runner that answers them.

An app on the ``anthropic`` SDK sends work that can wait as a Message Batch (``client.messages.batches.create``)
for half the token price. Through costline the batch goes the same way a request does, and keeps the discount:

* each request is looked up in the semantic cache first (a hit is answered at once, for nothing);
* a miss is routed, and the tier it is routed to answers it: an Anthropic tier through **the Anthropic Message
  Batches API** (one upstream batch per tier and round, at the batch price; its calls are recorded with
  ``costline.batch``), any other tier (the self-hosted student) by direct calls, ``direct_concurrency`` at once;
* an answer the quality gates refuse goes up the ladder as a synchronous one would, in the next round;
* results come back as the API gives them (``succeeded`` / ``errored`` / ``canceled`` / ``expired``, by
  ``custom_id``), 29 days by default.

Every request is one ``costline.request`` span, opened when its answer is settled, in a trace of its own that its
lookup and calls (made over minutes or hours) were recorded in as they happened, each with its request id: the
lake links them as it links a synchronous request's.

:class:`BatchStore` is one SQLite database (the file the Responses API's store uses, which the workers of
``costline serve --workers N`` share, or memory). :class:`BatchRunner` is one background thread per gateway
process; a lease in the database lets one runner work at a time. Time is injected (``now``).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from costline import contract
from costline.collectors.stamping import REQUEST_ID_CONTEXT_KEY
from costline.serving.backends import AnthropicBackend, Prompt, Reply
from costline.serving.pipeline import Answer, Attempt, Pipeline, declined
from costline.textutil import well_formed

__all__ = ["BatchRunner", "BatchStore", "BatchStoreFull", "BatchesFull", "StoredBatch", "BATCH_EXPIRES_S"]

log = logging.getLogger(__name__)


def _on_batches_api(backend: object) -> bool:
    """Whether a tier's requests go to Anthropic's Message Batches API (not Bedrock's Claude, not an OpenAI server)."""
    return isinstance(backend, AnthropicBackend) and backend.message_batches


#: A batch not ended this long after it was made has its unanswered requests expired (the API's 24 hours).
BATCH_EXPIRES_S = 24 * 3600.0

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS message_batches (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, created REAL NOT NULL, "
    "task_type TEXT NOT NULL, beta TEXT, cancel_at REAL, ended REAL, size INTEGER NOT NULL, doc_hashes TEXT, "
    "api TEXT NOT NULL DEFAULT 'anthropic', meta TEXT)",
    "CREATE INDEX IF NOT EXISTS message_batches_by_tenant ON message_batches (tenant, created)",
    # state: new (not looked at) -> ready (to ask `tier`) -> submitted (in `upstream`) -> ... -> done (`kind`)
    "CREATE TABLE IF NOT EXISTS batch_requests (batch TEXT NOT NULL, seq INTEGER NOT NULL, custom_id TEXT NOT NULL, "
    "params TEXT NOT NULL, state TEXT NOT NULL, tier TEXT, ladder TEXT NOT NULL DEFAULT '[]', "
    "attempts TEXT NOT NULL DEFAULT '[]', upstream TEXT, trace TEXT NOT NULL, root TEXT NOT NULL, routed TEXT, "
    "reason TEXT, looked INTEGER NOT NULL DEFAULT 0, last TEXT, kind TEXT, result TEXT, PRIMARY KEY (batch, seq))",
    "CREATE INDEX IF NOT EXISTS batch_requests_by_state ON batch_requests (state, batch, tier)",
    "CREATE INDEX IF NOT EXISTS batch_requests_by_upstream ON batch_requests (upstream)",
    # tag: the custom_id prefix of its requests (an upstream batch found again is taken only for those)
    "CREATE TABLE IF NOT EXISTS upstream_batches (id TEXT PRIMARY KEY, batch TEXT NOT NULL, tier TEXT NOT NULL, "
    "next_poll REAL NOT NULL, state TEXT NOT NULL, tag TEXT NOT NULL DEFAULT '')",
    # an upstream create whose outcome is not known yet (its rows are in state 'sending', upstream = the token)
    "CREATE TABLE IF NOT EXISTS upstream_intents (token TEXT PRIMARY KEY, batch TEXT NOT NULL, tier TEXT NOT NULL, "
    "at REAL NOT NULL, count INTEGER NOT NULL)",
    # the OpenAI Files API's uploads (purpose "batch"): a batch's input file
    "CREATE TABLE IF NOT EXISTS batch_files (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, created REAL NOT NULL, "
    "filename TEXT NOT NULL, purpose TEXT NOT NULL, bytes INTEGER NOT NULL, content BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS batch_files_by_tenant ON batch_files (tenant, created)",
    "CREATE TABLE IF NOT EXISTS batch_lease (one INTEGER PRIMARY KEY CHECK (one = 1), holder TEXT, until REAL)",
    "INSERT OR IGNORE INTO batch_lease VALUES (1, NULL, 0)",
)

#: Columns added since the tables were first made: (table, column, type and default).
_ADDED_COLUMNS = (
    ("message_batches", "doc_hashes", "TEXT"),
    ("message_batches", "api", "TEXT NOT NULL DEFAULT 'anthropic'"),
    ("message_batches", "meta", "TEXT"),
    ("upstream_batches", "tag", "TEXT NOT NULL DEFAULT ''"),
)

#: Result kinds, as the API names them.
SUCCEEDED, ERRORED, CANCELED, EXPIRED = "succeeded", "errored", "canceled", "expired"
KINDS = (SUCCEEDED, ERRORED, CANCELED, EXPIRED)


@dataclass(frozen=True)
class StoredBatch:
    id: str
    tenant: str
    created: float
    task_type: str
    beta: str | None
    cancel_at: float | None
    ended: float | None
    size: int
    #: The create's ``x-costline-doc-hashes``: its answers are stored in the cache tagged with them.
    doc_hashes: str | None = None
    #: The API it was made in: "anthropic" (Message Batches) or "openai" (the Batch API, its requests chat
    #: completions); ``meta`` the OpenAI batch's own fields (input file, metadata).
    api: str = "anthropic"
    meta: str | None = None


@dataclass
class _Row:
    batch: str
    seq: int
    custom_id: str
    params: dict[str, Any]
    state: str
    tier: str | None
    ladder: list[str]
    attempts: list[dict[str, Any]]
    upstream: str | None
    trace: str
    root: str
    routed: str | None
    reason: str | None
    looked: int
    last: dict[str, Any] | None
    #: The state and upstream batch it was read in: a save applies only while they are still so (another
    #: process's runner that took over has not moved it on), see :meth:`BatchStore.save`.
    read_state: str = ""
    read_upstream: str | None = None
    #: Set by :meth:`BatchStore.save` when the result was not kept (it would have taken the tenant past its bound):
    #: the request ends ``errored`` with :data:`NOT_KEPT` instead.
    not_kept: bool = False

    @property
    def request_id(self) -> str:
        return f"{self.batch}-{self.seq}"


_BATCH_COLUMNS = "id, tenant, created, task_type, beta, cancel_at, ended, size, doc_hashes, api, meta"
_ROW_COLUMNS = ("batch, seq, custom_id, params, state, tier, ladder, attempts, upstream, trace, root, routed, reason, "
                "looked, last")


def _row(r: Sequence[Any]) -> _Row:
    return _Row(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], json.loads(r[6]), json.loads(r[7]), r[8], r[9], r[10],
                r[11], r[12], r[13], json.loads(r[14]) if r[14] else None, r[4], r[8])


#: Seconds the runner's lease lasts past its last unit of work (longer than one: a direct call with its retries):
#: a process whose runner stopped (killed, or paused that long) is taken over by another's after this.
LEASE_S = 600.0
#: How far before its recorded intent an upstream batch's ``created_at`` may lie (clock skew) and still be ours.
_CREATE_SKEW_S = 300.0
#: How long a create of unknown outcome is looked for in the upstream list before its rows are sent again (a batch
#: the API is still making may not be listed yet).
INTENT_GRACE_S = 120.0


def tag_of(token: str) -> str:
    """The custom_id prefix of an upstream create's requests (``{tag}-{seq}``): unique per create, so an upstream
    batch found again is taken only for requests it was made for."""
    return token.removeprefix("intent-")[:24]


class _LeaseLost(Exception):
    """Another process's runner holds the lease."""


class BatchesFull(Exception):
    """A tenant's batches are at a bound: the message says which, and what to do."""


class BatchStoreFull(BatchesFull):
    """Every tenant's batches and uploads together fill the store's bound (``batches_total_max_mib``)."""


def _store_full(total_max_bytes: int) -> BatchStoreFull:
    log.warning("costline: the gateway's batches and uploads take all of [serving.gateway] batches_total_max_mib "
                "(%g MiB, all tenants together): new ones are refused until ended batches are deleted or expire; "
                "raise it if the disk has the room", total_max_bytes / 2 ** 20)
    return BatchStoreFull("the gateway's batch storage is full (all tenants together): try again later")


def _tenant_usage(db: sqlite3.Connection, tenant: str) -> tuple[int, int]:
    """``(count, bytes)`` that ``tenant`` keeps: its batches of both APIs (their requests and the results saved so
    far) and its uploads together, what ``batches_max`` and ``batches_tenant_max_mib`` bound."""
    count, size = db.execute(
        "SELECT (SELECT count(*) FROM message_batches WHERE tenant = ?) + (SELECT count(*) FROM batch_files WHERE "
        "tenant = ?), (SELECT coalesce(sum(size), 0) FROM message_batches WHERE tenant = ?) + "
        "(SELECT coalesce(sum(bytes), 0) FROM batch_files WHERE tenant = ?)", (tenant,) * 4).fetchone()
    return int(count), int(size)


#: The result of a request whose answer was not kept: saving it would have taken its tenant past
#: ``batches_tenant_max_mib`` (a batch's results are bounded by its tenant's room, never the other tenants').
#: Nothing of it is stored but its kind (the row's ``result`` is NULL): it takes no room.
NOT_KEPT = json.dumps({"type": ERRORED, "error": {"type": "error", "error": {
    "type": "rate_limit_error",
    "message": "costline gateway: this answer was not kept: this tenant's batches, their results and its uploaded "
               "files take all the room it has ([serving.gateway] batches_tenant_max_mib). Delete the ended batches "
               "whose results were read and the files its batches have read, then send this request again"}}},
    separators=(",", ":"))


def _tenant_full(what: str) -> BatchesFull:
    return BatchesFull(f"this tenant's batches (their requests and results) and uploaded files take all the room it "
                       f"has ([serving.gateway] batches_max, batches_tenant_max_mib): {what}")


def _stored_bytes(db: sqlite3.Connection) -> int:
    """What every tenant's batches (their requests and results saved so far) and uploads take, in bytes."""
    return int(db.execute("SELECT (SELECT coalesce(sum(size), 0) FROM message_batches) + "
                          "(SELECT coalesce(sum(bytes), 0) FROM batch_files)").fetchone()[0])


class BatchStore:
    """The batches and their requests (see the module docstring). Thread-safe: one connection behind a lock.

    ``tenant_max_bytes`` (``batches_tenant_max_mib``): a result is saved only while the tenant's batches, results
    and uploads stay within it; past it the request ends ``errored`` (:data:`NOT_KEPT`) and nothing of its answer is
    stored, so one tenant's results never take room beyond its own bound (nor the other tenants' share of
    ``batches_total_max_mib``). None: results are not bounded when saved (only :meth:`create` checks)."""

    def __init__(self, path: str | Path | None = None, *, tenant_max_bytes: int | None = None) -> None:
        from costline.serving.gateway.response_store import open_store

        self.tenant_max_bytes = tenant_max_bytes
        self._not_kept_in: set[str] = set()  # batches whose results were not kept (said once each in the log)
        self._db = open_store(path, _SCHEMA, 5.0)
        self._lock = threading.Lock()
        for table, column, kind in _ADDED_COLUMNS:  # a store file made by an earlier costline
            have = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                try:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
                except sqlite3.OperationalError:  # another worker added it first
                    log.debug("costline: %s.%s was added by another process", table, column)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- batches ---------------------------------------------------------------------------------------------
    def create(self, tenant: str, requests: Sequence[tuple[str, Mapping[str, Any]]], *, task_type: str,
               beta: str | None, now: float, max_open: int, max_kept: int = 1_000,
               max_bytes: int = 1024 * 2 ** 20, doc_hashes: str | None = None, api: str = "anthropic",
               meta: str | None = None, prefix: str = "msgbatch_costline_",
               total_max_bytes: int | None = None) -> StoredBatch:
        """A new batch of ``(custom_id, params)`` for ``tenant``. Per tenant at most ``max_open`` in progress and
        ``max_kept`` batches and uploads of ``max_bytes`` (requests, results saved so far, uploads) in all, counted
        together (:func:`_tenant_usage`): the oldest ended batches are forgotten to make room (never an upload);
        :class:`BatchesFull` when that is not enough (nothing changed then). All tenants' batches and uploads
        together take at most ``total_max_bytes``: past it :class:`BatchStoreFull` (another tenant's batches are
        never forgotten to make room)."""
        batch_id = f"{prefix}{uuid.uuid4().hex[:24]}"
        rows = [(batch_id, seq, cid, json.dumps(params, separators=(",", ":")), "new", os.urandom(16).hex(),
                 os.urandom(8).hex()) for seq, (cid, params) in enumerate(requests)]
        size = sum(len(r[3]) for r in rows)
        with self._tx() as db:
            kept = db.execute("SELECT id, size, ended FROM message_batches WHERE tenant = ? ORDER BY created, id",
                              (tenant,)).fetchall()
            if sum(1 for _, _, ended in kept if ended is None) >= max_open:
                raise BatchesFull(f"{max_open} batches are in progress for this tenant ([serving.gateway] "
                                  "batches_max_open): wait for one to end, or cancel one")
            (count, total), drop = _tenant_usage(db, tenant), []
            everyone = _stored_bytes(db) if total_max_bytes is not None else 0
            for old_id, old_size, ended in kept:  # the oldest ended first
                if (count + 1 <= max_kept and total + size <= max_bytes
                        and (total_max_bytes is None or everyone + size <= total_max_bytes)):
                    break
                if ended is not None:
                    drop.append(old_id)
                    count, total, everyone = count - 1, total - old_size, everyone - old_size
            if count + 1 > max_kept or total + size > max_bytes:
                raise _tenant_full("wait for its batches in progress to end, delete the files its batches have read "
                                   "and the ended batches it has read the results of")
            if total_max_bytes is not None and everyone + size > total_max_bytes:
                raise _store_full(total_max_bytes)
            for old_id in drop:
                db.execute("DELETE FROM upstream_intents WHERE batch = ?", (old_id,))
                db.execute("DELETE FROM batch_requests WHERE batch = ?", (old_id,))
                db.execute("DELETE FROM upstream_batches WHERE batch = ?", (old_id,))
                db.execute("DELETE FROM message_batches WHERE id = ?", (old_id,))
            db.execute("INSERT INTO message_batches VALUES (?, ?, ?, ?, ?, NULL, NULL, ?, ?, ?, ?)",
                       (batch_id, tenant, now, task_type, beta, size, doc_hashes, api, meta))
            db.executemany("INSERT INTO batch_requests (batch, seq, custom_id, params, state, trace, root) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        if drop:
            log.info("costline: tenant %s's %d oldest ended batches forgotten to make room", tenant, len(drop))
        return StoredBatch(batch_id, tenant, now, task_type, beta, None, None, size, doc_hashes, api, meta)

    def batch(self, batch_id: str, tenant: str | None = None) -> StoredBatch | None:
        """The batch (only ``tenant``'s, when given: another's is not found)."""
        with self._lock:
            row = self._db.execute(f"SELECT {_BATCH_COLUMNS} "
                                   "FROM message_batches WHERE id = ?", (batch_id,)).fetchone()
        if row is None or (tenant is not None and row[1] != tenant):
            return None
        return StoredBatch(*row)

    def batches(self, tenant: str, *, limit: int, before: str | None = None, after: str | None = None,
                api: str = "anthropic") -> tuple[list[StoredBatch], bool]:
        """``tenant``'s batches, newest first, ``limit`` of them after ``after`` (the next page, as the SDK's list
        pages on with ``after_id``) or just before ``before`` (an id); whether there are more that way."""
        with self._lock:
            rows = self._db.execute(f"SELECT {_BATCH_COLUMNS} "
                                    "FROM message_batches WHERE tenant = ? AND api = ? ORDER BY created DESC, id DESC",
                                    (tenant, api)).fetchall()
        found = [StoredBatch(*r) for r in rows]
        ids = [b.id for b in found]
        if before is not None:  # the page just before `before` in this order (newer ones), nearest it last
            if before not in ids:
                raise LookupError(before)
            newer = found[:ids.index(before)]
            return newer[-limit:], len(newer) > limit
        if after is not None:  # the next page: those after `after` in this order (older ones)
            if after not in ids:
                raise LookupError(after)
            found = found[ids.index(after) + 1:]
        return found[:limit], len(found) > limit

    def counts(self, batch_id: str) -> dict[str, int]:
        """``request_counts``: processing (not done yet) and each result kind."""
        with self._lock:
            rows = self._db.execute("SELECT coalesce(kind, 'processing'), count(*) FROM batch_requests "
                                    "WHERE batch = ? GROUP BY 1", (batch_id,)).fetchall()
        got = dict(rows)
        return {"processing": got.get("processing", 0), **{k: got.get(k, 0) for k in KINDS}}

    def results(self, batch_id: str, page: int = 200) -> Iterator[tuple[str, str]]:
        """``(custom_id, result as JSON)`` of each request, in the order they were sent, read a page at a time."""
        after = -1
        while True:
            with self._lock:
                rows = self._db.execute("SELECT seq, custom_id, result, kind FROM batch_requests WHERE batch = ? AND "
                                        "seq > ? ORDER BY seq LIMIT ?", (batch_id, after, page)).fetchall()
            if not rows:
                return
            for seq, cid, result, kind in rows:
                # no result stored: a request ended before it was answered, or one whose answer was not kept
                yield cid, result or (NOT_KEPT if kind == ERRORED else json.dumps({"type": kind or EXPIRED},
                                                                                  separators=(",", ":")))
            after = rows[-1][0]

    def cancel(self, batch_id: str, now: float) -> None:
        with self._tx() as db:
            db.execute("UPDATE message_batches SET cancel_at = ? WHERE id = ? AND cancel_at IS NULL AND ended IS NULL",
                       (now, batch_id))

    def delete(self, batch_id: str) -> bool:
        """Forget an ended batch and its results; False when it is still in progress."""
        with self._tx() as db:
            ended = db.execute("SELECT ended FROM message_batches WHERE id = ?", (batch_id,)).fetchone()
            if ended is None or ended[0] is None:
                return False
            db.execute("DELETE FROM batch_requests WHERE batch = ?", (batch_id,))
            db.execute("DELETE FROM upstream_batches WHERE batch = ?", (batch_id,))
            db.execute("DELETE FROM upstream_intents WHERE batch = ?", (batch_id,))
            db.execute("DELETE FROM message_batches WHERE id = ?", (batch_id,))
        return True

    # -- uploaded files (the OpenAI Files API) -------------------------------------------------------------------
    def add_file(self, tenant: str, filename: str, purpose: str, content: bytes, *, now: float, max_files: int,
                 max_bytes: int, total_max_bytes: int | None = None) -> tuple[str, float]:
        """Keep an upload; ``(id, created)``. :class:`BatchesFull` past ``max_files`` / ``max_bytes`` per tenant
        (its uploads and batches counted together, as :meth:`create` counts them; no batch is forgotten for an
        upload), :class:`BatchStoreFull` past ``total_max_bytes`` for every tenant's batches and uploads together."""
        file_id = f"file-costline-{uuid.uuid4().hex[:24]}"
        with self._tx() as db:
            count, total = _tenant_usage(db, tenant)
            if count >= max_files or total + len(content) > max_bytes:
                raise _tenant_full("delete the files its batches have read and the ended batches it has read the "
                                   "results of")
            if total_max_bytes is not None and _stored_bytes(db) + len(content) > total_max_bytes:
                raise _store_full(total_max_bytes)
            db.execute("INSERT INTO batch_files VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (file_id, tenant, now, filename, purpose, len(content), content))
        return file_id, now

    def file(self, file_id: str, tenant: str) -> tuple[str, float, str, str, int] | None:
        """``(id, created, filename, purpose, bytes)`` of ``tenant``'s upload (another's is not found)."""
        with self._lock:
            return self._db.execute("SELECT id, created, filename, purpose, bytes FROM batch_files WHERE id = ? AND "
                                    "tenant = ?", (file_id, tenant)).fetchone()

    def file_content(self, file_id: str, tenant: str) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT content FROM batch_files WHERE id = ? AND tenant = ?",
                                   (file_id, tenant)).fetchone()
        return None if row is None else bytes(row[0])

    def files(self, tenant: str) -> list[tuple[str, float, str, str, int]]:
        with self._lock:
            return self._db.execute("SELECT id, created, filename, purpose, bytes FROM batch_files WHERE tenant = ? "
                                    "ORDER BY created DESC, id DESC", (tenant,)).fetchall()

    def delete_file(self, file_id: str, tenant: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM batch_files WHERE id = ? AND tenant = ?", (file_id, tenant)).rowcount == 1

    # -- the runner's -----------------------------------------------------------------------------------------
    def take_lease(self, holder: str, now: float, for_s: float) -> bool:
        """Hold the runner's lease until ``now + for_s`` (kept by its holder, taken when it ran out)."""
        with self._tx() as db:
            return db.execute("UPDATE batch_lease SET holder = ?, until = ? WHERE one = 1 AND (holder = ? OR until < ?)",
                              (holder, now + for_s, holder, now)).rowcount == 1

    def release_lease(self, holder: str) -> None:
        """Give the lease up (a runner that stops: the next process's runner need not wait for it to run out)."""
        with self._tx() as db:
            db.execute("UPDATE batch_lease SET holder = NULL, until = 0 WHERE one = 1 AND holder = ?", (holder,))

    def open_batches(self) -> list[StoredBatch]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_BATCH_COLUMNS} "
                                    "FROM message_batches WHERE ended IS NULL ORDER BY created").fetchall()
        return [StoredBatch(*r) for r in rows]

    def rows(self, batch_id: str, state: str, *, limit: int, tier: str | None = None) -> list[_Row]:
        where, args = "batch = ? AND state = ?", [batch_id, state]
        if tier is not None:
            where, args = where + " AND tier = ?", [*args, tier]
        with self._lock:
            got = self._db.execute(f"SELECT {_ROW_COLUMNS} FROM batch_requests WHERE {where} ORDER BY seq LIMIT ?",
                                   (*args, limit)).fetchall()
        return [_row(r) for r in got]

    def ready_tiers(self, batch_id: str) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT DISTINCT tier FROM batch_requests WHERE batch = ? AND "
                                                   "state = 'ready' ORDER BY tier", (batch_id,))]

    def upstream_rows(self, upstream: str) -> dict[int, _Row]:
        with self._lock:
            got = self._db.execute(f"SELECT {_ROW_COLUMNS} FROM batch_requests WHERE upstream = ? AND "
                                   "state = 'submitted'", (upstream,)).fetchall()
        return {r[1]: _row(r) for r in got}

    def save(self, row: _Row, *, kind: str | None = None, result: Mapping[str, Any] | None = None) -> bool:
        """Write back a row's progress (``kind`` and ``result``: it is done), only while it is still in the state and
        upstream batch it was read in; False when it was not (another runner moved it on: this work is dropped).

        A result counts toward its tenant's bytes. One that would take the tenant past :attr:`tenant_max_bytes` is
        not stored: the request ends ``errored`` (:data:`NOT_KEPT`, no bytes) and ``row.not_kept`` is set."""
        state = "done" if kind is not None else row.state
        body = json.dumps(result, separators=(",", ":")) if result is not None else None
        if row.read_state == "done":  # settled already: nothing moves it again
            return False
        not_kept = False
        with self._tx() as db:
            if body is not None and self.tenant_max_bytes is not None:
                owner = db.execute("SELECT tenant FROM message_batches WHERE id = ?", (row.batch,)).fetchone()
                if owner is not None and _tenant_usage(db, owner[0])[1] + len(body) > self.tenant_max_bytes:
                    # canceled and expired carry nothing but their kind (read back from it); an answer or an error
                    # is not kept: the request ends errored, saying why
                    body, not_kept = None, kind not in (CANCELED, EXPIRED)
                    kind = kind if kind in (CANCELED, EXPIRED) else ERRORED
            last = None if kind is not None else row.last  # a settled row's answer is its result: not kept twice
            won = db.execute(
                "UPDATE batch_requests SET state = ?, tier = ?, ladder = ?, attempts = ?, upstream = ?, routed = ?, "
                "reason = ?, looked = ?, last = ?, kind = ?, result = ? WHERE batch = ? AND seq = ? AND state = ? "
                "AND upstream IS ?",
                (state, row.tier, json.dumps(row.ladder), json.dumps(row.attempts), row.upstream, row.routed,
                 row.reason, row.looked, json.dumps(last) if last is not None else None, kind, body,
                 row.batch, row.seq, row.read_state, row.read_upstream)).rowcount == 1
            # the answers count toward the tenant's bytes too, as they are saved: within its bound (above), so a
            # batch in progress always finishes, its results past the bound errored rather than kept
            if won and body is not None:
                db.execute("UPDATE message_batches SET size = size + ? WHERE id = ?", (len(body), row.batch))
        if won:
            row.read_state, row.read_upstream = state, row.upstream
            if not_kept:
                row.not_kept = True
            if not_kept and row.batch not in self._not_kept_in:
                if len(self._not_kept_in) >= 10_000:
                    self._not_kept_in.clear()
                self._not_kept_in.add(row.batch)
                log.warning("costline: batch %s request %s: its answer was not kept (its tenant's batches and uploads "
                            "take all of [serving.gateway] batches_tenant_max_mib, %g MiB); it ends errored, as do "
                            "the batch's other answers past it (said once per batch)",
                            row.batch, row.custom_id, (self.tenant_max_bytes or 0) / 2 ** 20)
        else:
            log.warning("costline: batch %s request %s was moved on by another runner; this one's work dropped",
                        row.batch, row.custom_id)
        return won

    def intend(self, token: str, batch_id: str, tier: str, rows: Sequence[_Row], at: float) -> list[_Row]:
        """Before an upstream create: its rows (still ``ready``) go to ``sending`` under ``token``; those this runner
        could move."""
        moved = []
        with self._tx() as db:
            for row in rows:
                if db.execute("UPDATE batch_requests SET state = 'sending', upstream = ? WHERE batch = ? AND seq = ? "
                              "AND state = 'ready' AND upstream IS NULL", (token, row.batch, row.seq)).rowcount:
                    row.state = row.read_state = "sending"
                    row.upstream = row.read_upstream = token
                    moved.append(row)
            db.execute("INSERT INTO upstream_intents VALUES (?, ?, ?, ?, ?)", (token, batch_id, tier, at, len(moved)))
        return moved

    def intents(self) -> list[tuple[str, str, str, float, int]]:
        """``(token, batch, tier, at, count)`` of the upstream creates whose outcome is not known."""
        with self._lock:
            return self._db.execute("SELECT token, batch, tier, at, count FROM upstream_intents ORDER BY at").fetchall()

    def known_upstreams(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT id FROM upstream_batches")}

    def settle_intent(self, token: str, upstream: str | None, next_poll: float) -> None:
        """The create of ``token`` made ``upstream`` (its rows are submitted to it), or nothing (None: back to
        ``ready``, to be sent again)."""
        with self._tx() as db:
            row = db.execute("SELECT batch, tier FROM upstream_intents WHERE token = ?", (token,)).fetchone()
            if row is None:
                return
            if upstream is None:
                db.execute("UPDATE batch_requests SET state = 'ready', upstream = NULL WHERE upstream = ? AND "
                           "state = 'sending'", (token,))
            else:
                db.execute("INSERT OR IGNORE INTO upstream_batches VALUES (?, ?, ?, ?, 'open', ?)",
                           (upstream, row[0], row[1], next_poll, tag_of(token)))
                db.execute("UPDATE batch_requests SET state = 'submitted', upstream = ? WHERE upstream = ? AND "
                           "state = 'sending'", (upstream, token))
            db.execute("DELETE FROM upstream_intents WHERE token = ?", (token,))

    def unsubmit(self, upstream: str) -> None:
        """An upstream batch that cannot be read any more (its tier is no longer on the Anthropic API): its rows go
        back to ``ready``, to be asked again."""
        with self._tx() as db:
            db.execute("UPDATE batch_requests SET state = 'ready', upstream = NULL WHERE upstream = ? AND "
                       "state = 'submitted'", (upstream,))
            db.execute("UPDATE upstream_batches SET state = 'collected' WHERE id = ?", (upstream,))

    def due_upstreams(self, now: float) -> list[tuple[str, str, str, str]]:
        """``(upstream id, batch, tier, tag)`` of the upstream batches to poll now."""
        with self._lock:
            return self._db.execute("SELECT id, batch, tier, tag FROM upstream_batches WHERE state = 'open' AND "
                                    "next_poll <= ? ORDER BY next_poll", (now,)).fetchall()

    def drop_intents(self, batch_id: str) -> None:
        """Forget a closed batch's creates of unknown outcome (their rows are settled)."""
        with self._tx() as db:
            db.execute("DELETE FROM upstream_intents WHERE batch = ?", (batch_id,))

    def upstreams(self, batch_id: str) -> list[tuple[str, str]]:
        """``(upstream id, tier)`` of a batch's upstream batches still open."""
        with self._lock:
            return self._db.execute("SELECT id, tier FROM upstream_batches WHERE batch = ? AND state = 'open'",
                                    (batch_id,)).fetchall()

    def poll_later(self, upstream: str, at: float) -> None:
        with self._tx() as db:
            db.execute("UPDATE upstream_batches SET next_poll = ? WHERE id = ?", (at, upstream))

    def collected(self, upstream: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE upstream_batches SET state = 'collected' WHERE id = ?", (upstream,))

    def end_finished(self, now: float) -> int:
        """Mark ended the batches with no request left to answer; how many."""
        with self._tx() as db:
            return db.execute("UPDATE message_batches SET ended = ? WHERE ended IS NULL AND NOT EXISTS (SELECT 1 FROM "
                              "batch_requests r WHERE r.batch = message_batches.id AND r.state <> 'done')",
                              (now,)).rowcount

    def forget_older(self, ended_before: float) -> int:
        """Delete the batches that ended before ``ended_before`` (their results kept long enough), and the uploads
        made before it."""
        with self._tx() as db:
            db.execute("DELETE FROM batch_files WHERE created < ?", (ended_before,))
        with self._lock:
            ids = [r[0] for r in self._db.execute("SELECT id FROM message_batches WHERE ended < ?", (ended_before,))]
        for batch_id in ids:
            self.delete(batch_id)
        return len(ids)


def _errored(error_type: str, message: str) -> dict[str, Any]:
    return {"type": ERRORED, "error": {"type": "error", "error": {"type": error_type, "message": message}}}


#: The API's error type of an SDK error class (a failed call's ``error.type``), for an errored result.
_ERROR_TYPES = {"BadRequestError": "invalid_request_error", "AuthenticationError": "authentication_error",
                "PermissionDeniedError": "permission_error", "NotFoundError": "not_found_error",
                "RequestTooLargeError": "request_too_large", "ContentTooLargeError": "request_too_large",
                "RateLimitError": "rate_limit_error",
                "OverloadedError": "overloaded_error"}


#: How a batch's request reads: ``(params, anthropic-beta header)`` -> ``(query, prompt, cache scope)`` or the problem.
Reader = Callable[[Mapping[str, Any], "str | None"], "tuple[str, Prompt, str] | str"]
#: How a settled answer renders as the result's body (a Messages API message, a chat completion).
Renderer = Callable[[Answer], dict[str, Any]]


class BatchRunner:
    """Answers the stored batches' requests (see the module docstring). :meth:`step` does one pass (tests drive
    it with an injected ``now``); :meth:`start` runs passes in a thread until :meth:`shutdown`.

    ``message`` turns a settled :class:`Answer` into the API's message (the gateway's own rendering), ``read``
    checks a request's params as ``POST /v1/messages`` does (``(query, prompt, scope)`` or the problem).

    At most once upstream: every row moves by compare-and-set on the state it was read in (a runner that lost the
    lease and comes back late changes nothing); an upstream create is preceded by a recorded intent, and one whose
    outcome is unknown (a timeout, a crash) is looked for in the upstream batch list before its rows are sent again.
    """

    def __init__(self, pipeline: Pipeline, store: BatchStore, *, message: Renderer, read: Reader,
                 poll_s: float = 60.0, ttl_s: float = 29 * 86_400.0, idle_s: float = 1.0,
                 now: Callable[[], float] = time.time, per_step: int = 64, default_task_type: str = "general",
                 apis: Mapping[str, tuple[Reader, Renderer]] | None = None, direct_concurrency: int = 4) -> None:
        self.pipeline = pipeline
        #: Requests of a tier not on the Anthropic API (the student) asked at once, at most.
        self.direct_concurrency = direct_concurrency
        self.default_task_type = default_task_type
        self.store = store
        self.poll_s = poll_s
        self.ttl_s = ttl_s
        self.idle_s = idle_s
        self.per_step = per_step
        #: Per API a batch was made in ("anthropic", "openai"): how its requests read and its answers render.
        self._apis: dict[str, tuple[Reader, Renderer]] = {"anthropic": (read, message), **(apis or {})}
        self._now = now
        self._holder = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._retry_at: dict[tuple[str, str], float] = {}  # (batch, tier) whose upstream create failed for a while
        self._canceled: set[str] = set()  # upstream batches asked to cancel (once)

    def _api(self, batch: StoredBatch) -> tuple[Reader, Renderer]:
        return self._apis[batch.api]

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="costline-batches", daemon=True)
            self._thread.start()

    def shutdown(self, timeout: float = 30.0) -> bool:
        """Stop after the unit of work in hand; True once the thread has ended (then the lease is given up)."""
        self._stop.set()
        if self._thread is None:
            return True
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._thread.join(max(0.0, deadline - time.monotonic()))
                break
            except RuntimeError:  # made, not started yet: SIGTERM landed inside start() (costline serve's handler)
                if time.monotonic() >= deadline:
                    log.warning("costline: the batch runner's thread never started; leaving its lease to run out")
                    return False
                time.sleep(0.01)
        if self._thread.is_alive():
            log.warning("costline: the batch runner is still in a call after %.0f s; leaving it to end", timeout)
            return False
        try:
            self.store.release_lease(self._holder)
        except Exception:  # noqa: BLE001 - a lease left behind runs out by itself
            log.warning("costline: could not give up the batch runner's lease", exc_info=True)
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.step()
            except Exception:  # noqa: BLE001 - one bad pass never stops the runner: logged, tried again
                log.exception("costline: a pass over the message batches failed; trying again")
                busy = False
            if not busy:
                self._stop.wait(self.idle_s)

    # -- one pass ----------------------------------------------------------------------------------------------
    def step(self) -> bool:
        """One pass over every open batch; True when it did something (another pass may do more at once)."""
        now = self._now()
        try:
            self._hold()
            busy = self._reconcile(now)
            for batch in self.store.open_batches():
                busy |= self._step_batch(batch, now)
            busy |= self._poll(now)
        except _LeaseLost:  # another process's runner has it, or this one is stopping
            return False
        busy |= self.store.end_finished(self._now()) > 0
        self.store.forget_older(now - self.ttl_s)
        return busy

    def _hold(self) -> None:
        """Renew the runner's lease before each unit of work (a request, an upstream batch), so two processes'
        runners never work at once; :class:`_LeaseLost` when another holds it or this runner is stopping."""
        if self._stop.is_set() or not self.store.take_lease(self._holder, self._now(), LEASE_S):
            raise _LeaseLost

    def _step_batch(self, batch: StoredBatch, now: float) -> bool:
        if now >= batch.created + 2 * BATCH_EXPIRES_S:  # an upstream API that never ended what it was sent
            return self._close_out(batch, EXPIRED, everything=True)
        if batch.cancel_at is not None or now >= batch.created + BATCH_EXPIRES_S:
            return self._close_out(batch, CANCELED if batch.cancel_at is not None else EXPIRED)
        busy = False
        for row in self.store.rows(batch.id, "new", limit=self.per_step):
            self._hold()
            self._guarded(batch, row, self._intake)
            busy = True
        if self.store.rows(batch.id, "new", limit=1):
            return busy  # every request looked up and routed first: one upstream batch per tier and round
        tiers = self.store.ready_tiers(batch.id)
        upstream = [t for t in tiers if _on_batches_api(self.pipeline.backends.get(t))]
        direct = [t for t in tiers if t not in upstream]
        for tier in direct:
            rows = self.store.rows(batch.id, "ready", tier=tier, limit=self.per_step)
            self._direct_all(batch, rows)
            busy = busy or bool(rows)
        if direct:
            return True  # their escalations join this round's upstream batches: sent once they are all in
        for tier in upstream:
            self._hold()
            busy |= self._submit(batch, tier, self.pipeline.backends[tier], now)  # type: ignore[arg-type]
        return busy

    def _direct_all(self, batch: StoredBatch, rows: Sequence[_Row]) -> None:
        """Ask ``rows``' tier (a self-hosted one takes several at once) ``direct_concurrency`` at a time, on daemon
        threads as the runner's own is: a call in flight never holds the process open at exit, and a runner told
        to stop starts no new one (a row not asked stays ``ready``, asked after a restart)."""
        if len(rows) < 2 or self.direct_concurrency < 2:
            for row in rows:
                self._direct_guarded(batch, row)
            return
        todo, lock, failed = iter(rows), threading.Lock(), []

        def work() -> None:
            while True:
                with lock:
                    row = next(todo, None)
                if row is None:
                    return
                try:
                    self._direct_guarded(batch, row)
                except BaseException as exc:  # noqa: BLE001 - _LeaseLost, raised again by the runner's thread
                    failed.append(exc)
                    return

        threads = [threading.Thread(target=work, name=f"costline-batch-direct-{i}", daemon=True)
                   for i in range(min(self.direct_concurrency, len(rows)))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if failed:
            raise failed[0]

    def _direct_guarded(self, batch: StoredBatch, row: _Row) -> None:
        self._hold()
        if self._cancel_asked(batch):
            return  # left ready: the next pass ends it canceled, unasked
        self._guarded(batch, row, self._direct)

    def _cancel_asked(self, batch: StoredBatch) -> bool:
        """Whether the batch was canceled (or deleted) since this pass read it: a round of a self-hosted tier's
        requests (up to 64, asked a few at a time) stops asking at once instead of at the next pass."""
        now = self.store.batch(batch.id)
        return now is None or now.cancel_at is not None

    def _guarded(self, batch: StoredBatch, row: _Row, work: Callable[[StoredBatch, _Row], None]) -> None:
        """``work`` on one request; a failure of costline's own (a router or a cache that raises) ends that request
        as ``errored`` (api_error), or with the answer it already has, instead of failing every pass over the batch."""
        try:
            work(batch, row)
        except _LeaseLost:
            raise
        except Exception as exc:  # noqa: BLE001 - one request's failure never stops the others
            if self._stop.is_set():  # the gateway is closing its clients under it: asked again after a restart
                log.warning("costline: batch %s request %s stopped with the gateway (%s); it is asked again when "
                            "the gateway starts", batch.id, row.custom_id, type(exc).__name__)
                return
            log.exception("costline: batch %s request %s failed in the gateway", batch.id, row.custom_id)
            if row.last is not None:
                self._settle(batch, row, SUCCEEDED, _result(row.last), served=row.last["tier"], success=False)
            else:
                self._settle(batch, row, ERRORED, _errored("api_error",
                                                           f"costline gateway failure: {type(exc).__name__}"),
                             served=_last_tier(row), success=False)

    def _intake(self, batch: StoredBatch, row: _Row) -> None:
        read = self._api(batch)[0](row.params, batch.beta)
        if isinstance(read, str):
            self.store.save(row, kind=ERRORED, result=_errored("invalid_request_error", read))
            return
        query, prompt, scope = read
        query = well_formed(query)
        task_type = self._task_type(row, batch)
        with self._context(row):
            decision = self.pipeline.route(query, task_type, prompt=prompt)
            row.routed, row.reason = decision.tier, decision.reason
            hit = None
            if not prompt.expects_blocks:
                hit = self.pipeline.look_up(query, tenant=batch.tenant,
                                            namespace=self.pipeline.cache_namespace(scope))
                row.looked = 2 if hit is not None else (1 if self.pipeline.cache is not None else 0)
        if hit is not None:
            answer = Answer(hit.answer, contract.TIER_CACHE, None, decision.tier, True, cached=True,
                            similarity=float(hit.similarity), request_id=row.request_id, reason=decision.reason)
            self._settle(batch, row, SUCCEEDED, {"type": SUCCEEDED, "message": self._api(batch)[1](answer)},
                         served=contract.TIER_CACHE, success=True)
            return
        ladder = self.pipeline.registry.ladder(decision.tier, self.pipeline.escalation.max_escalations)
        row.tier, row.ladder, row.state = ladder[0], list(ladder[1:]), "ready"
        self.store.save(row)

    def _direct(self, batch: StoredBatch, row: _Row) -> None:
        query, prompt, _ = self._read_ok(row, batch)
        assert row.tier is not None
        with self._context(row):
            attempt = self.pipeline._attempt(row.tier, query, prompt)
        self._attempted(batch, row, attempt, query, prompt)

    def _read_ok(self, row: _Row, batch: StoredBatch) -> tuple[str, Prompt, str]:
        read = self._api(batch)[0](row.params, batch.beta)
        if isinstance(read, str):  # it was read at intake: only a gateway of another version reads it otherwise
            raise ValueError(f"the request no longer reads as it did: {read}")
        return well_formed(read[0]), read[1], read[2]

    def _task_type(self, row: _Row, batch: StoredBatch) -> str:
        """As a synchronous request's: the create's task type header, else the request's ``metadata.task_type``,
        else the default."""
        meta = row.params.get("metadata")
        task = str(meta.get("task_type") or "") if isinstance(meta, Mapping) else ""
        return batch.task_type or task or self.default_task_type

    def _submit(self, batch: StoredBatch, tier: str, backend: AnthropicBackend, now: float) -> bool:
        if self._retry_at.get((batch.id, tier), 0.0) > now:
            return False
        import anthropic

        rows, prompts = [], {}
        for row in self.store.rows(batch.id, "ready", tier=tier, limit=10_000):
            try:
                prompts[row.seq] = self._read_ok(row, batch)[1]
                rows.append(row)
            except ValueError as exc:
                log.warning("costline: batch %s request %s: %s", batch.id, row.custom_id, exc)
                self._settle(batch, row, ERRORED, _errored("invalid_request_error", str(exc)), served=None,
                             success=False)
        token, at = f"intent-{uuid.uuid4().hex}", self._now()
        rows = self.store.intend(token, batch.id, tier, rows, at)  # recorded before the create: never paid twice
        if not rows:
            self.store.settle_intent(token, None, now)
            return False
        tag = tag_of(token)
        requests = [{"custom_id": f"{tag}-{r.seq}", "params": backend._kwargs(prompts[r.seq])} for r in rows]
        betas = prompts[rows[0].seq].anthropic_betas
        client = backend.client.with_options(max_retries=0)  # a retried create could make a second batch
        try:
            if betas:  # the requests' anthropic-beta header, as the Batches API takes it
                made = client.beta.messages.batches.create(requests=requests, betas=list(betas))
            else:
                made = client.messages.batches.create(requests=requests)
        except anthropic.APIStatusError as exc:
            if exc.status_code in (408, 409, 429, 529):  # refused before anything was made: sent again later
                self.store.settle_intent(token, None, now)
                self._retry_at[(batch.id, tier)] = now + self.poll_s
                log.warning("costline: the %s tier's API refused batch %s's upstream batch (%s); trying again in "
                            "%.0f s", tier, batch.id, exc.status_code, self.poll_s)
                return False
            if exc.status_code >= 500:  # it may have been made: looked for (_reconcile) before sent again
                log.warning("costline: the upstream create for batch %s failed (%s): looking for it before sending "
                            "again", batch.id, exc.status_code)
                return False
            log.warning("costline: the %s tier refused batch %s's requests: %s", tier, batch.id, exc)
            self.store.settle_intent(token, None, now)
            for row in self.store.rows(batch.id, "ready", tier=tier, limit=10_000):
                query, prompt, _ = self._read_ok(row, batch)
                self._attempted(batch, row, Attempt(tier, backend.spec.model, False, type(exc).__name__), query,
                                prompt)
            return True
        except anthropic.APIConnectionError as exc:  # timeouts included: it may have been made (_reconcile)
            log.warning("costline: the upstream create for batch %s failed (%s): looking for it before sending "
                        "again", batch.id, type(exc).__name__)
            return False
        except Exception as exc:  # noqa: BLE001 - the SDK could not send it (it raised before any request)
            log.exception("costline: batch %s's upstream batch could not be sent", batch.id)
            self.store.settle_intent(token, None, now)
            for row in self.store.rows(batch.id, "ready", tier=tier, limit=10_000):
                self._settle(batch, row, ERRORED, _errored("api_error", f"costline gateway failure: "
                                                                        f"{type(exc).__name__}"),
                             served=_last_tier(row), success=False)
            return True
        self._retry_at.pop((batch.id, tier), None)
        self.store.settle_intent(token, str(made.id), now + self.poll_s)
        log.info("costline: batch %s: %d requests sent to the %s tier as upstream batch %s", batch.id, len(requests),
                 tier, made.id)
        return True

    def _reconcile(self, now: float) -> bool:
        """Upstream creates whose outcome is unknown (a timeout, a 5xx, the process stopped between the create and
        its record): the batch one made, found in the upstream list, is attached; none found after
        :data:`INTENT_GRACE_S`, its rows are sent again."""
        busy = False
        for token, _batch_id, tier, at, count in self.store.intents():
            backend = self.pipeline.backends.get(tier)
            found = None
            if _on_batches_api(backend):
                try:
                    found = self._find_created(backend, count, at)
                except Exception as exc:  # noqa: BLE001 - the upstream API is down: asked again next pass
                    log.warning("costline: could not list upstream batches (%s); trying again", type(exc).__name__)
                    continue
            if found is None and now < at + INTENT_GRACE_S:
                continue  # a batch being made may not be listed yet
            self.store.settle_intent(token, found, now)
            busy = True
        return busy

    def _find_created(self, backend: AnthropicBackend, count: int, at: float) -> str | None:
        """The upstream batch of ``count`` requests created nearest after ``at`` that is not one of ours yet, if any
        (batches carry no client metadata; its results are taken only for the custom ids made for this create)."""
        known = self.store.known_upstreams()
        found: list[tuple[float, str]] = []
        for b in backend.client.messages.batches.list(limit=100):  # most recent first
            created = b.created_at.timestamp()
            if created < at - _CREATE_SKEW_S:
                break
            c = b.request_counts
            if b.id not in known and c.processing + c.succeeded + c.errored + c.canceled + c.expired == count:
                found.append((abs(created - at), b.id))
        return min(found)[1] if found else None

    def _poll(self, now: float) -> bool:
        busy = False
        for upstream, batch_id, tier, tag in self.store.due_upstreams(now):
            self._hold()
            batch = self.store.batch(batch_id)
            backend = self.pipeline.backends.get(tier)
            if batch is None:
                self.store.collected(upstream)
                continue
            if not _on_batches_api(backend):  # the tier moved off the Message Batches API: asked again there
                log.warning("costline: the %s tier is no longer on the Anthropic API: upstream batch %s's requests "
                            "are asked again (cancel it there if it still runs)", tier, upstream)
                self.store.unsubmit(upstream)
                continue
            try:
                status = backend.client.messages.batches.retrieve(upstream)
                if getattr(status, "processing_status", None) != "ended":
                    self.store.poll_later(upstream, now + self.poll_s)
                    continue
                self._collect(batch, tier, backend, upstream, tag)
            except _LeaseLost:
                raise
            except Exception as exc:  # noqa: BLE001 - the upstream API is down: asked again later
                log.warning("costline: could not read upstream batch %s (%s); trying again in %.0f s", upstream,
                            type(exc).__name__, self.poll_s)
                self.store.poll_later(upstream, now + self.poll_s)
                continue
            busy = True
        return busy

    def _collect(self, batch: StoredBatch, tier: str, backend: AnthropicBackend, upstream: str, tag: str) -> None:
        rows = self.store.upstream_rows(upstream)
        ours = 0
        for n, item in enumerate(backend.client.messages.batches.results(upstream)):
            if n % 100 == 99:
                self._hold()
            head, _, seq = str(getattr(item, "custom_id", "")).rpartition("-")
            row = rows.pop(int(seq), None) if head == tag and seq.isdigit() else None
            if row is not None:
                ours += 1
                self._guarded(batch, row, lambda b, r: self._collect_one(b, r, tier, backend, item.result))
        if not ours and rows:  # not the batch these were sent in (one found again that was not ours): sent again
            log.warning("costline: upstream batch %s holds none of batch %s's requests: they are sent again",
                        upstream, batch.id)
            self.store.unsubmit(upstream)
            return
        for row in rows.values():  # sent, but not in the results: it never ran
            query, prompt, _ = self._read_ok(row, batch)
            row.upstream = None
            self._attempted(batch, row, Attempt(tier, backend.spec.model, False, EXPIRED), query, prompt)
        self.store.collected(upstream)
        self._canceled.discard(upstream)

    def _collect_one(self, batch: StoredBatch, row: _Row, tier: str, backend: AnthropicBackend, result: Any) -> None:
        query, prompt, _ = self._read_ok(row, batch)
        kind = getattr(result, "type", None)
        if kind == SUCCEEDED:
            reply = backend._reply(result.message)
            attempt = self.pipeline.judged(tier, reply, query, prompt)
            call: Callable[[Any], None] = lambda c: self._record_reply(c, reply)  # noqa: E731
        elif kind == ERRORED:
            error_type = _error_class(getattr(result, "error", None))
            attempt = Attempt(tier, backend.spec.model, False, error_type)
            call = lambda c: c.error(error_type)  # noqa: E731
        else:  # canceled or expired upstream: never ran
            attempt, call = Attempt(tier, backend.spec.model, False, str(kind or EXPIRED)), None
        row.upstream = None
        try:
            moved = self._attempted(batch, row, attempt, query, prompt)
        except Exception:  # the row is settled as errored by _guarded: the call was paid for all the same
            moved = True
            raise
        finally:
            if moved and call is not None:  # once the row has moved on: a result read again is not counted again
                with self._context(row), self.pipeline.recorder.call(
                        contract.PROVIDER_ANTHROPIC, backend.spec.model, tier, batch=True) as span:
                    call(span)

    def _record_reply(self, call: Any, reply: Reply) -> None:
        """An upstream batch's answer on its call span (at the batch price)."""
        try:
            call.usage(reply.input_tokens, reply.output_tokens, reply.cache_read_tokens, reply.cache_creation_tokens,
                       reply.cache_creation_1h_tokens, reply.web_search_requests)
            call.inference_geo(reply.inference_geo)
            call.response(reply.model, [reply.stop_reason] if reply.stop_reason else None, reply.id)
        except Exception:  # noqa: BLE001 - recording never fails the answer
            log.exception("costline: could not record a batch answer")

    def _attempted(self, batch: StoredBatch, row: _Row, attempt: Attempt, query: str, prompt: Prompt) -> bool:
        """Go on after one attempt: settled (accepted, or nothing left to try), or up the ladder next round. False
        when another runner had moved the row on (nothing of this attempt is kept)."""
        row.attempts.append({"tier": attempt.tier, "ok": attempt.ok, "problem": attempt.problem})
        if attempt.reply is not None:
            answer = Answer(attempt.reply.text, attempt.tier, attempt.reply.model, row.routed or attempt.tier,
                            attempt.ok, request_id=row.request_id, reply=attempt.reply)
            row.last = {"type": SUCCEEDED, "message": self._api(batch)[1](answer), "tier": attempt.tier}
        if attempt.ok:
            assert attempt.reply is not None
            # a refusal is the caller's answer but no successful request (costline.serving.pipeline.declined)
            stop = declined(attempt.reply)
            won = self._settle(batch, row, SUCCEEDED, _result(row.last), served=attempt.tier, success=stop is None,
                               declined=stop)
            if won and not prompt.expects_blocks:
                read = self._api(batch)[0](row.params, batch.beta)
                scope = read[2] if not isinstance(read, str) else ""
                hashes = tuple(h for h in (batch.doc_hashes or "").split(",") if h)
                self.pipeline.keep(query, attempt.reply, tenant=batch.tenant,
                                   namespace=self.pipeline.cache_namespace(scope), doc_hashes=hashes)
            return won
        current = self.store.batch(batch.id)
        closing = current is None or current.cancel_at is not None
        goes_on = attempt.reply is not None or self.pipeline.escalation.on_error
        if row.ladder and goes_on and not closing:
            row.tier, row.ladder, row.state = row.ladder[0], row.ladder[1:], "ready"
            return self.store.save(row)
        if row.last is not None:  # every tier tried: the last answer, as a synchronous request gets it
            return self._settle(batch, row, SUCCEEDED, _result(row.last), served=row.last["tier"], success=False)
        if attempt.problem in (CANCELED, EXPIRED):
            return self._settle(batch, row, attempt.problem, {"type": attempt.problem}, served=attempt.tier,
                                success=False)
        problems = ", ".join(f"{a['tier']}: {a['problem']}" for a in row.attempts)
        error_type = _ERROR_TYPES.get(str(attempt.problem), "api_error")
        return self._settle(batch, row, ERRORED, _errored(error_type, f"every tier failed: {problems}"),
                            served=attempt.tier, success=False)

    def _settle(self, batch: StoredBatch, row: _Row, kind: str, result: Mapping[str, Any], *, served: str | None,
                success: bool, declined: str | None = None) -> bool:
        """The request is answered: its result kept, then its request span (when it looked anything up or called
        anything). False when another runner had moved it on (then nothing is recorded). ``declined``: the stop reason
        of the ``served`` tier's answer when the model declined to give one (a refusal): recorded as that tier's
        rejected attempt, as a synchronous request's is."""
        if not self.store.save(row, kind=kind, result=result):
            return False
        not_kept = "result not kept: batches_tenant_max_mib" if row.not_kept else None
        if not_kept:  # its tenant had no room for the answer: the caller gets none
            success = False
        ran = [a for a in row.attempts if a["problem"] not in (CANCELED, EXPIRED)]
        if row.looked or ran:
            with self._context(row), self.pipeline.recorder.request(
                    task_type=self._task_type(row, batch), tenant=batch.tenant,
                    request_id=row.request_id, routed_tier=row.routed, route_reason=row.reason) as req:
                if row.looked:
                    req.looked_up(row.looked == 2)
                for a in ran:
                    req.attempted(a["tier"], a["ok"])
                    if not a["ok"]:
                        req.attempt_rejected(a["tier"], a["problem"])
                if declined is not None and served is not None:
                    req.attempt_rejected(served, declined)
                if served is not None and (ran or row.looked == 2):
                    req.served_by(served)
                if success:
                    req.accept()
                else:
                    turned_down = [f"{a['tier']}: {a['problem']}" for a in ran if not a["ok"]]
                    if declined is not None:
                        turned_down.append(f"{served}: {declined}")
                    req.reject(not_kept or ", ".join(turned_down) or kind)
        return True

    def _close_out(self, batch: StoredBatch, kind: str, *, everything: bool = False) -> bool:
        """A canceled or expired batch: what was not sent anywhere ends as ``kind``; upstream batches are canceled
        (their answers, already paid for, are still collected). ``everything``: what was sent too (an upstream
        batch that never ended)."""
        busy = False
        for state in ("new", "ready", *(("sending", "submitted") if everything else ())):
            for row in self.store.rows(batch.id, state, limit=10_000):
                self._hold()
                if row.last is not None:
                    self._settle(batch, row, SUCCEEDED, _result(row.last), served=row.last["tier"], success=False)
                else:
                    self._settle(batch, row, kind, {"type": kind}, served=_last_tier(row), success=False)
                busy = True
        if everything:
            self.store.drop_intents(batch.id)
        for upstream, tier in self.store.upstreams(batch.id):
            backend = self.pipeline.backends.get(tier)
            if everything:
                self.store.collected(upstream)
            if not _on_batches_api(backend) or upstream in self._canceled:
                continue
            try:
                backend.client.messages.batches.cancel(upstream)
            except Exception as exc:  # noqa: BLE001 - it ends by itself: its results are collected then
                log.warning("costline: could not cancel upstream batch %s: %s", upstream, type(exc).__name__)
            self._canceled.add(upstream)
            self.store.poll_later(upstream, self._now())
            busy = True
        return busy

    @contextmanager
    def _context(self, row: _Row) -> Iterator[None]:
        """The request's own trace (its spans are recorded over hours) and its request id, made current."""
        parent = NonRecordingSpan(SpanContext(int(row.trace, 16), int(row.root, 16), is_remote=True,
                                              trace_flags=TraceFlags(TraceFlags.SAMPLED)))
        ctx = otel_context.set_value(REQUEST_ID_CONTEXT_KEY, row.request_id, trace.set_span_in_context(parent))
        token = otel_context.attach(ctx)
        try:
            yield
        finally:
            otel_context.detach(token)


def _result(last: Mapping[str, Any] | None) -> dict[str, Any]:
    assert last is not None
    return {"type": SUCCEEDED, "message": last["message"]}


def _last_tier(row: _Row) -> str | None:
    """The tier a request last tried (what its span says served it when none answered)."""
    return row.attempts[-1]["tier"] if row.attempts else None


def _error_class(error: Any) -> str:
    """The SDK error class name of an errored result's error object (``api_error`` and unknown: APIStatusError)."""
    from costline.collectors.instrument import anthropic_error_class

    return anthropic_error_class(error) or "APIStatusError"
