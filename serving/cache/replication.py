"""Replicas that share one semantic cache, over a compacted Kafka topic.

Each replica keeps its own FAISS indexes (:class:`~costline.serving.cache.semantic.SemanticCache`) and
publishes every change it makes to ``[serving.cache] replication_topic``; a background consumer
applies every other replica's changes to the local indexes. One partition keeps one order::

    key  e/<entry key>   value: the store (embedding, tenant, namespace with its scope, query,
                                answer, doc hashes, created/expiry times)     or null: removed
    key  d/<doc hash>    value: invalidate every entry built from this document
    key  t/<tenant>      value: invalidate every entry of this tenant (with ``at``, its writer's time)
                         (a doc hash or tenant that would make a key over 1 KiB: ``sha256:<its hex digest>``)

The topic is created with ``cleanup.policy=compact``: a removed entry's store is compacted away
behind its tombstone, so the topic holds about what the caches hold. Every replica applies the
same log in the same order, so they converge:

* **stores** — an entry's key is ``<instance>:<id>`` (the instance is this process's incarnation);
  a store whose key is already here is skipped (idempotent replays), one of our own is only noted;
* **expiry** — a replicated entry is served until the earlier of its sender's expiry and its store
  time + this replica's own ``ttl_s`` (0: the sender's alone); a record already past it is not applied
  (skip reason ``expired``); a store time in this replica's future (a sender's clock ahead) is taken as now,
  its sender's expiry moved back as much;
* **removals** (invalidation, eviction, expiry, quota) are published as tombstones of the removed
  keys (except an expiry by this replica's own, shorter ttl: it stays local); **invalidations** also
  as one ``d/``/``t/`` record, so a replica drops the document's entries it holds that the
  invalidating replica had not seen yet. A tenant's invalidation is applied in log order: an entry
  of ours not yet on the topic was stored *after* it and stays, as it would on every replica; our own
  invalidation, read back, removes the other replicas' entries stored before it. Its time (``at``) is
  remembered (like a doc hash: for ``ttl_s``, bounded, kept in snapshots): a later store of the tenant made
  at or before it (delivered late, or an old record replayed) is refused everywhere, ours not yet on the topic
  included; the invalidating replica's own stores made after it stay wherever they come in the log. A document's removes
  every entry tagged with its hash whenever stored, and its hash is remembered so that a late store of
  it is refused (:meth:`SemanticCache.invalidate_by_doc`);
* **removals made while applying the log** (the local size cap, the tenant quota) are not
  published again: a replica with a smaller cap never empties the others;
* **bootstrap** — :meth:`CacheReplicator.start` loads the snapshot at ``[serving.cache] path``
  (the cache store's own format; its manifest records the next topic offset it does not cover)
  and reads the topic from there, or from the beginning without a usable snapshot; ready once it
  has read up to the end offset seen at start (:meth:`CacheReplicator.wait_ready`). A snapshot whose
  offset the topic no longer holds (its log start moved past it: ``cleanup.policy=compact,delete``,
  DeleteRecords; or a topic recreated), that recorded another topic id (Kafka's topic UUID: the topic was
  deleted and created again), or that cannot be loaded (any damage: never an exception out of ``start``) is
  dropped with a warning and the topic read from its beginning;
* **hot path** — publishing is a ``put_nowait`` on a bounded queue (a sender thread encodes and
  produces): it never blocks or raises into a request; past ``replication_queue_size`` a store or
  removal is dropped with a log line and counted (best effort);
* **invalidations are never dropped** — one that fails to publish (Kafka away past the producer's
  ``delivery_timeout_ms``, the queue full) waits in a retry list (at most :data:`MAX_RETRY_INVALIDATIONS`,
  the oldest kept, one per document or tenant) and is published again, oldest first, with a backoff, until
  acknowledged; one past the bound, or still waiting at shutdown, is logged as an error and counted
  (``invalidations_lost``). Its late arrival is safe: a doc hash is remembered, a tenant's carries its time;
* **hostile records** — text fields are taken with each lone surrogate as U+FFFD; a record that does not
  decode, names no valid tenant or namespace, carries
  a vector of another dimension or model (its name, and the SHA-256 of its files where both sides know it), or (with ``replication_secret_env``) lacks a valid
  HMAC-SHA256 signature is skipped with a log line and a counter; it never stops the applier.
  Tenant isolation holds by construction: an entry goes to the (tenant, namespace) index its
  record names, and lookups search only the index of the tenant that asks;
* **key scheme** — a store carries the cache key scheme its namespace's scope hash was made under
  (``key_scheme``: :data:`~costline.serving.cache.key.KEY_SCHEME`; records of replicas older than it carry none:
  scheme 1). A store of another scheme whose namespace carries a scope is skipped (``old_key_scheme``, or
  ``new_key_scheme`` from a replica of a later version), never applied: its scope hash would name other requests
  here (an old replica's answer to an ``effort: "low"`` request sits where a request without an effort looks now).
  A rolling upgrade therefore shares no scoped entries between old and new replicas; removals and invalidations
  carry no scope and are applied whichever version wrote them, and an old replica reads a new one's stores as
  before (it ignores the field). The first such skip is logged as a warning, the rest counted.
"""

from __future__ import annotations

import base64
import dataclasses
import binascii
import hashlib
import hmac
import json
import logging
import math
import os
import queue
import re
import socket
import threading
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from costline.errors import ConfigError
from costline.kafka_security import client_options, make_client
from costline.kafkaheaders import read_header_keys_like_java
from costline.kafkameta import topic_id_text
from costline.textutil import well_formed
from costline.serving.cache.key import KEY_SCHEME, still_keyed
from costline.serving.cache.semantic import effective_expiry
from costline.serving.errors import CacheError

if TYPE_CHECKING:
    from costline.config import KafkaConfig
    from costline.serving.cache.semantic import SemanticCache, _Entry
    from costline.serving.settings import CacheConfig

__all__ = [
    "CacheReplicator",
    "CacheReplicationError",
    "ReplicationStats",
    "Change",
    "RecordSkipped",
    "decode_record",
    "encode_change",
    "ensure_cache_topic",
    "topic_cleanup_policy",
    "validate_replication_config",
    "FORMAT_VERSION",
    "SIGNATURE_HEADER",
    "ORIGIN_HEADER",
]

log = logging.getLogger(__name__)

#: The ``v`` of every record value this module writes and reads.
FORMAT_VERSION = 1
#: Record headers: the HMAC-SHA256 of key + value (when a secret is configured), the writer.
SIGNATURE_HEADER = "costline-sig"
ORIGIN_HEADER = "costline-origin"

_KEY_MAX = 1024
_TENANT_MAX = 256
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_REPLICA_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
#: How long tombstones stay on the topic (Kafka's default, set explicitly on the topics we create).
_DELETE_RETENTION_MS = 86_400_000
_LOGGED_SKIPS = 20  # the first skips are each logged, then one in _SKIP_LOG_EVERY
#: Stores keyed under another cache key scheme (a replica of another version, during a rolling upgrade): not a sign
#: of a hostile or broken writer; the first is logged as a warning saying what it means, the rest at debug.
_KEY_SCHEME_SKIPS = frozenset({"old_key_scheme", "new_key_scheme"})
#: Skip reasons that are not a sign of a hostile or broken writer: counted, logged at debug only.
_QUIET_SKIPS = frozenset({"expired"}) | _KEY_SCHEME_SKIPS
#: At most this many failed invalidations wait to be published again (the oldest are kept; past it one is lost,
#: logged as an error and counted in ``invalidations_lost``).
MAX_RETRY_INVALIDATIONS = 10_000
_RETRY_BACKOFF_S = (0.5, 10.0)  # the first wait before publishing a failed invalidation again, the longest


_INVALIDATIONS = frozenset({"invalidate_doc", "invalidate_tenant"})
_UNKNOWN = object()
_TOO_OLD = "it is older than replication_snapshot_max_age_s (the topic's tombstones may be gone)"


class CacheReplicationError(CacheError):
    """Cache replication cannot run as configured (the message says what to change)."""


class RecordSkipped(Exception):
    """A record of the replication topic that is not applied; ``reason`` names why (a counter)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class Change:
    """One decoded record: ``op`` is store, remove, invalidate_doc or invalidate_tenant."""

    op: str
    key: str = ""
    origin: str = ""
    tenant: str = ""
    namespace: str = ""
    query: str = ""
    answer: str = ""
    doc_hashes: tuple[str, ...] = ()
    created_at: float = 0.0
    expires_at: float | None = None
    doc_hash: str = ""
    vector: np.ndarray | None = None
    model: str | None = None
    #: When a tenant was invalidated (its writer's clock; None: a record of an older writer, which carries none).
    at: float | None = None
    #: The SHA-256 of the embedding model's files (None: unknown, or a record of an older writer: its name alone).
    model_fingerprint: str | None = None


@dataclass(frozen=True)
class ReplicationStats:
    """Counts since start (``offset`` is the next topic offset to apply)."""

    published: int
    dropped: int
    send_errors: int
    applied: int
    own: int
    skipped: int
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    offset: int = 0
    start_offset: int = 0
    bootstrap_entries: int = 0
    #: CPU seconds the applier thread spent decoding and applying records.
    apply_cpu_s: float = 0.0
    ready: bool = False
    error: str | None = None
    #: Invalidations that failed to publish and wait to be published again (oldest first, in order).
    retry_pending: int = 0
    #: Invalidations never published: the retry list was full, or they were still waiting at shutdown.
    invalidations_lost: int = 0
    #: Replicated stores refused because their tenant was invalidated at or after their store time.
    refused_tenant: int = 0
    #: Snapshots dropped at start: the topic no longer holds the records after their offset, is another topic of the
    #: same name (another topic id), or the snapshot could not be loaded.
    snapshots_dropped: int = 0
    #: Records on the topic not applied yet (the last end offset the consumer saw minus ``offset``; None: unknown).
    lag: int | None = None


def validate_replication_config(config: "CacheConfig") -> None:
    """Raise :class:`~costline.errors.ConfigError` naming the first bad replication key."""

    def bad(key: str, problem: str) -> ConfigError:
        return ConfigError(f"[serving.cache] {key}", problem)

    topic = config.replication_topic
    if not isinstance(topic, str) or not _TOPIC_NAME.match(topic) or topic in (".", ".."):
        raise bad("replication_topic", f"must be a Kafka topic name (letters, digits, . _ -); got {topic!r}")
    if config.replica_id and not _REPLICA_NAME.match(config.replica_id):
        raise bad("replica_id", f"must be letters, digits, . _ - (at most 128); got {config.replica_id!r}")
    if config.replication_queue_size < 1:
        raise bad("replication_queue_size", "must be at least 1")
    if config.replication_snapshot_interval_s < 0 or math.isnan(config.replication_snapshot_interval_s):
        raise bad("replication_snapshot_interval_s", "must be 0 (only at shutdown) or more seconds")
    if not config.replication_snapshot_max_age_s > 0:
        raise bad("replication_snapshot_max_age_s", "must be more than 0 seconds")
    if config.replication_secret_env is not None and not config.replication_secret_env:
        raise bad("replication_secret_env", "must name an environment variable (or be unset)")


def ensure_cache_topic(bootstrap: str, topic: str, *, timeout_s: float = 10.0,
                       security: Mapping[str, Any] | None = None, ids: dict[str, str] | None = None) -> int:
    """Create ``topic`` (one partition, ``cleanup.policy=compact``) unless it exists; its partitions. ``security``:
    the cluster's :func:`~costline.kafka_security.client_options`. ``ids``: filled with the topic's id
    (``ids[topic]``, Kafka's topic UUID: a topic deleted and created again gets another) when the cluster says it."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import TopicAlreadyExistsError

    # bootstrap_timeout_ms too: its default (30 s) would outlast a force_flush(timeout) on a down broker
    admin = make_client(KafkaAdminClient, bootstrap_servers=bootstrap.split(","), client_id="costline-cache-admin",
                        request_timeout_ms=int(timeout_s * 1000), bootstrap_timeout_ms=int(timeout_s * 1000),
                        **dict(security or {}))
    try:
        if topic not in set(admin.list_topics()):
            spec = {"num_partitions": 1, "replication_factor": -1,
                    "configs": {"cleanup.policy": "compact", "delete.retention.ms": str(_DELETE_RETENTION_MS)}}
            try:
                admin.create_topics({topic: spec}, wait_for_metadata=True)
            except TopicAlreadyExistsError:
                pass
        deadline = time.monotonic() + timeout_s
        while True:  # just created (here or by another replica): its metadata may lag
            described = admin.describe_topics([topic])
            partitions = len(described[0]["partitions"]) if described else 0
            if partitions or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        if ids is not None and partitions:
            topic_id = topic_id_text(described[0].get("topic_id"))
            if topic_id is not None:
                ids[topic] = topic_id
        policy = topic_cleanup_policy(admin, topic)
        if policy is not None and "compact" not in policy:
            log.warning("costline: cache replication topic %s has cleanup.policy=%s, not compact: removed entries "
                        "stay on it and it grows; set cleanup.policy=compact", topic, policy)
        if policy is not None and "delete" in policy:
            log.error("costline: cache replication topic %s has cleanup.policy=%s: deletion drops old records, "
                      "invalidations included, so a replica restarting from a snapshot older than retention.ms "
                      "must drop it and rebuild from what is left; set cleanup.policy=compact "
                      "(kafka-configs --alter --entity-type topics --entity-name %s --add-config "
                      "cleanup.policy=compact)", topic, policy, topic)
        return partitions
    finally:
        admin.close()




def topic_cleanup_policy(admin: Any, topic: str) -> str | None:
    """The topic's ``cleanup.policy`` (None when the cluster does not say)."""
    from kafka.admin import ConfigResource, ConfigResourceType

    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all")
        for by_name in described.values():
            value = by_name.get(topic, {}).get("cleanup.policy", {}).get("value")
            if value is not None:
                return str(value)
    except Exception:  # not allowed to describe, an old broker: nothing to warn about
        log.debug("costline: could not describe topic %s", topic, exc_info=True)
    return None


# -- the wire format ---------------------------------------------------------------------------
def encode_change(change: Change, secret: bytes | None) -> tuple[bytes, bytes | None, list[tuple[str, bytes]]]:
    """(key, value, headers) of a record; a ``remove`` is a tombstone (value None)."""
    prefix = {"store": "e/", "remove": "e/", "invalidate_doc": "d/", "invalidate_tenant": "t/"}[change.op]
    # text as every replica decodes it: a lone surrogate (which UTF-8 cannot encode) as U+FFFD
    doc_hash, tenant = well_formed(change.doc_hash), well_formed(change.tenant)
    name = {"invalidate_doc": _key_name(doc_hash),
            "invalidate_tenant": _key_name(tenant)}.get(change.op, well_formed(change.key))
    key = (prefix + name).encode("utf-8")
    value: bytes | None = None
    if change.op != "remove":
        body: dict[str, Any] = {"v": FORMAT_VERSION, "op": change.op, "origin": well_formed(change.origin)}
        if change.op == "store":
            assert change.vector is not None
            body.update(
                key=name, key_scheme=KEY_SCHEME, tenant=tenant, ns=well_formed(change.namespace),
                query=well_formed(change.query),
                answer=well_formed(change.answer), docs=[well_formed(d) for d in change.doc_hashes],
                created_at=change.created_at,
                expires_at=change.expires_at, model=change.model,
                **({"model_fp": change.model_fingerprint} if change.model_fingerprint else {}),
                vec=base64.b64encode(np.asarray(change.vector, dtype="<f4").tobytes()).decode("ascii"),
            )
        elif change.op == "invalidate_doc":
            body["doc"] = doc_hash
        else:
            body["tenant"] = tenant
            if change.at is not None:
                body["at"] = change.at
        value = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
    headers = [(ORIGIN_HEADER, change.origin.encode("utf-8"))]
    if secret is not None:
        headers.append((SIGNATURE_HEADER, _sign(secret, key, value).encode("ascii")))
    return key, value, headers


def decode_record(key: Any, value: Any, headers: Any, *, dim: int, model: str | None,
                  secret: bytes | None, fingerprint: str | None = None) -> Change:
    """The change a record carries, or :class:`RecordSkipped` saying why it is not one. ``model`` and
    ``fingerprint``: this replica's embedding model's name and the SHA-256 of its files; a store of another is
    skipped (``model_mismatch``); one that carries no fingerprint (an older writer) is compared by name alone."""
    if not isinstance(key, bytes) or not 2 < len(key) <= _KEY_MAX:
        raise RecordSkipped("bad_key", "no key, or one over 1 KiB")
    if value is not None and not isinstance(value, bytes):
        raise RecordSkipped("bad_value")
    if secret is not None:
        sig = _header(headers, SIGNATURE_HEADER)
        if sig is None or not hmac.compare_digest(sig, _sign(secret, key, value).encode("ascii")):
            raise RecordSkipped("bad_signature", "unsigned or signed with another secret")
    try:
        text_key = key.decode("utf-8")
    except UnicodeDecodeError:
        raise RecordSkipped("bad_key", "not UTF-8") from None
    prefix, name = text_key[:2], text_key[2:]
    if prefix not in ("e/", "d/", "t/") or not name:
        raise RecordSkipped("bad_key", f"unknown key {text_key[:40]!r}")
    origin = well_formed((_header(headers, ORIGIN_HEADER) or b"").decode("utf-8", "replace"))
    if value is None:
        if prefix != "e/":
            raise RecordSkipped("bad_value", "a tombstone of an invalidation")
        return Change("remove", key=name, origin=origin)
    try:
        body = json.loads(value)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise RecordSkipped("bad_value", "not JSON") from None
    if not isinstance(body, dict) or body.get("v") != FORMAT_VERSION:
        raise RecordSkipped("bad_version", f"not a v{FORMAT_VERSION} record")
    op = body.get("op")
    origin = _text(body, "origin", allow_empty=True)
    expected = {"e/": "store", "d/": "invalidate_doc", "t/": "invalidate_tenant"}[prefix]
    if op != expected:
        raise RecordSkipped("bad_value", f"op {op!r} under a {prefix} key")
    if op == "invalidate_doc":
        doc = _text(body, "doc")
        if _key_name(doc) != name:
            raise RecordSkipped("bad_value", "doc differs from the key")
        return Change(op, doc_hash=doc, origin=origin)
    if op == "invalidate_tenant":
        tenant = _text(body, "tenant")
        if _key_name(tenant) != name:
            raise RecordSkipped("bad_value", "tenant differs from the key")
        at = None if body.get("at") is None else _number(body, "at")
        return Change(op, tenant=tenant, origin=origin, at=at)
    if _text(body, "key") != name:
        raise RecordSkipped("bad_value", "entry key differs from the record key")
    tenant = _text(body, "tenant")
    if len(tenant) > _TENANT_MAX:
        raise RecordSkipped("bad_value", "tenant over 256 characters")
    scheme = body.get("key_scheme")
    if scheme is not None and (not isinstance(scheme, int) or isinstance(scheme, bool) or scheme < 1):
        raise RecordSkipped("bad_value", "key_scheme is not a positive integer")
    namespace = _text(body, "ns")
    if not still_keyed(scheme, namespace):
        saved = 1 if scheme is None else scheme
        raise RecordSkipped("old_key_scheme" if saved < KEY_SCHEME else "new_key_scheme",
                            f"stored under cache key scheme {saved}, this replica's is {KEY_SCHEME}: its scope hash "
                            "would name other requests here (a replica of another version); not applied")
    record_model = body.get("model")
    if record_model is not None and not isinstance(record_model, str):
        raise RecordSkipped("bad_value", "model is not a string")
    if model and record_model and record_model != model:
        raise RecordSkipped("model_mismatch", f"embedded with {record_model!r}, this replica uses {model!r}")
    record_fp = body.get("model_fp")
    if record_fp is not None and not isinstance(record_fp, str):
        raise RecordSkipped("bad_value", "model_fp is not a string")
    if fingerprint and record_fp and record_fp != fingerprint:
        raise RecordSkipped("model_mismatch", f"embedded with model files {record_fp[:16]}... of "
                                              f"{record_model!r}, this replica's are {fingerprint[:16]}...")
    docs = body.get("docs")
    if not isinstance(docs, list) or not all(isinstance(d, str) and d for d in docs):
        raise RecordSkipped("bad_value", "docs is not a list of non-empty strings")
    docs = [well_formed(d) for d in docs]
    created = _number(body, "created_at")
    expires = None if body.get("expires_at") is None else _number(body, "expires_at")
    try:
        raw = base64.b64decode(_text(body, "vec"), validate=True)
    except (binascii.Error, ValueError):
        raise RecordSkipped("bad_vector", "vec is not base64") from None
    if len(raw) != 4 * dim:
        raise RecordSkipped("bad_vector", f"{len(raw) // 4}-dimensional, this cache is {dim}")
    vector = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    norm = float(np.linalg.norm(vector))
    if not math.isfinite(norm) or norm == 0.0:
        raise RecordSkipped("bad_vector", "not finite and non-zero")
    return Change("store", key=name, origin=origin, tenant=tenant, namespace=namespace,
                  query=_text(body, "query", allow_empty=True), answer=_text(body, "answer", allow_empty=True),
                  doc_hashes=tuple(docs), created_at=created, expires_at=expires, vector=vector,
                  model=record_model, model_fingerprint=well_formed(record_fp) if record_fp else None)


def _key_name(name: str) -> str:
    """The key name of an invalidation of the document or tenant ``name``: itself, or its SHA-256 where the key
    would pass 1 KiB (any name a store carries can be invalidated on every replica; the value names it in full)."""
    raw = name.encode("utf-8", "surrogatepass")
    return name if len(raw) <= _KEY_MAX - 2 else "sha256:" + hashlib.sha256(raw).hexdigest()


def _text(body: dict[str, Any], name: str, *, allow_empty: bool = False) -> str:
    """A string field, each lone surrogate (JSON's ``"\ud800"``) as U+FFFD: one record's text must not stop every
    later snapshot of the replica (UTF-8 cannot encode it) or reach anything downstream."""
    value = body.get(name)
    if not isinstance(value, str) or (not value and not allow_empty):
        raise RecordSkipped("bad_value", f"{name} is not a{'' if allow_empty else ' non-empty'} string")
    return well_formed(value)


def _number(body: dict[str, Any], name: str) -> float:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecordSkipped("bad_value", f"{name} is not a finite number")
    try:
        number = float(value)  # an integer past a float's range (10**400) raises OverflowError
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise RecordSkipped("bad_value", f"{name} is not a finite number")
    return number


def _header(headers: Any, name: str) -> bytes | None:
    for k, v in headers or ():
        if k == name and isinstance(v, bytes):
            return v
    return None


def _sign(secret: bytes, key: bytes, value: bytes | None) -> str:
    return hmac.new(secret, key + b"\n" + (value or b""), hashlib.sha256).hexdigest()


# -- the replicator ------------------------------------------------------------------------------
class CacheReplicator:
    """Publishes a :class:`SemanticCache`'s changes and applies the other replicas' (module docstring).

    Built by the cache when ``replication_topic`` is set; the cache's ``start`` / ``force_flush`` /
    ``shutdown`` call the methods of the same names. ``now`` is the clock of the snapshot ages
    and of the expiry of applied entries.
    """

    def __init__(self, cache: "SemanticCache", *, kafka: "KafkaConfig | None" = None,
                 now: Callable[[], float] = time.time) -> None:
        from costline.config import KafkaConfig

        cfg = cache.config
        assert cfg.replication_topic is not None
        self._cache = cache
        self._config = cfg
        self._now = now
        self.topic: str = cfg.replication_topic
        self.bootstrap = cfg.replication_bootstrap_servers or (kafka or KafkaConfig()).bootstrap
        #: The cluster of the cache topic, reached with [kafka]'s security settings (TLS, SASL).
        self._kafka = dataclasses.replace(kafka or KafkaConfig(), bootstrap_servers=self.bootstrap)
        self._security = client_options(self._kafka)  # a missing secret is a ConfigError now, not a retry loop
        self.replica_id = cfg.replica_id or f"{socket.gethostname()}-{os.getpid()}"
        #: This process's incarnation: the prefix of the keys of the entries it stores.
        self.instance = uuid.uuid4().hex[:16]
        self._secret: bytes | None = None
        if cfg.replication_secret_env is not None:
            secret = os.environ.get(cfg.replication_secret_env, "")
            if not secret:
                raise ConfigError("[serving.cache] replication_secret_env",
                                  f"names ${cfg.replication_secret_env}, which is unset or empty")
            self._secret = secret.encode("utf-8")
        self._queue: queue.Queue[Change | None] = queue.Queue(maxsize=cfg.replication_queue_size)
        self._lock = threading.Lock()  # counters, pending keys, the flush condition
        self._flushed = threading.Condition(self._lock)
        self._pending: set[str] = set()  # our stores not yet read back from the topic
        self._enqueued = 0
        self._handed = 0  # handed to the producer
        self._counts: Counter[str] = Counter()
        self._skips: Counter[str] = Counter()
        self._offset = 0  # the next topic offset to apply (changed under the cache's lock)
        self._start_offset = 0
        self._bootstrap_entries = 0
        self._apply_cpu_s = 0.0
        self._ready = threading.Event()
        self._topic_ok = threading.Event()  # the topic exists as it must: the sender may produce
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._producer: Any = None
        self._listeners: list[Callable[[Change, int], None]] = []
        self._started = False
        self._stopped = False
        self._restored: bool | None = None  # a snapshot loaded before start: fresh enough to follow on from?
        self.error: str | None = None
        # invalidations that failed to publish, oldest first, by record key (a later one of the same key replaces
        # it in place): the sender publishes them again, before anything newer, until acknowledged
        self._retry: OrderedDict[bytes, Change] = OrderedDict()
        self._retrying = 0  # taken from _retry by the sender and not handed to the producer yet
        self._retry_due = 0.0  # monotonic time of the next try
        self._retry_backoff = _RETRY_BACKOFF_S[0]
        self._end: int | None = None  # the last end offset of the topic the consumer saw
        #: The id (Kafka's topic UUID) of the topic the cache's entries were read from: the snapshot's until the
        #: consumer connects, then the topic's (None: unknown, a snapshot saved before ids were recorded or a broker
        #: before 2.8). A snapshot of another id than the topic's now was read from a topic since deleted.
        self._topic_id: str | None = None
        self._live_topic_id: str | None = None  # the topic's id as the cluster said at connect
        self._fingerprint: object = _UNKNOWN  # the embedder's model fingerprint (_model_fingerprint)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Bootstrap from the snapshot (when usable), then publish and follow the topic in threads."""
        if self._started:
            return
        self._started = True
        self._model_fingerprint()  # here, not on the first store's path
        start = self._bootstrap()
        self._make_producer()
        for name, target in (("sender", self._run_sender), ("applier", self._run_applier)):
            args = (start,) if name == "applier" else ()
            t = threading.Thread(target=target, args=args, name=f"costline-cache-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def force_flush(self, timeout: float = 5.0) -> bool:
        """Wait until every change published so far was produced and acknowledged, failed invalidations
        published again included; False on timeout.

        On a replicator never started (a tool that loads a cache, invalidates and exits), this
        produces the queued changes itself, in the calling thread.
        """
        deadline = time.monotonic() + timeout
        if not self._started and not self._stopped:
            return self._produce_queued(deadline)
        while True:
            with self._flushed:
                target = self._enqueued
                while self._handed < target or self._retry or self._retrying:
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._started or self._stopped:
                        return False
                    self._flushed.wait(min(left, 0.1))
            producer = self._producer.get() if self._producer is not None else None
            if producer is None:
                return target == 0
            try:
                producer.flush(timeout=max(deadline - time.monotonic(), 0.001))
            except Exception as exc:  # KafkaTimeoutError
                log.warning("costline: cache replication flush did not finish: %s", exc)
                return False
            with self._lock:
                if not self._retry:  # else an invalidation failed while flushing: it is published again
                    return True
            if time.monotonic() >= deadline:
                return False

    def shutdown(self, timeout: float = 5.0) -> None:
        """Flush, stop both threads, save a snapshot to ``path`` (if set), close the producer."""
        if not self._started or self._stopped:
            return
        deadline = time.monotonic() + timeout  # the whole shutdown, not each step, is bounded by timeout
        self.force_flush(timeout / 2)
        self._stop.set()
        self._stopped = True
        for t in self._threads:  # daemon threads: one stuck reaching Kafka is left behind, not waited out
            t.join(max(deadline - time.monotonic(), 0.0))
        if self._config.path is not None and self.error is None:
            self.save_snapshot()
        if self._producer is not None:
            self._producer.close(max(deadline - time.monotonic(), 0.1))
        self._report_unpublished()

    def _report_unpublished(self) -> None:
        """At shutdown: the invalidations still waiting to be published — in the retry list, or still queued when the
        sender stopped (a sender left behind by the shutdown's timeout hands over nothing more) — are lost; say
        which, loudly."""
        queued = []
        while True:
            try:
                queued.append(self._queue.get_nowait())
            except queue.Empty:
                break
        with self._lock:
            left = list(self._retry.values()) + [c for c in queued if c.op in _INVALIDATIONS]
            self._retry.clear()
            self._counts["invalidations_lost"] += len(left)
        if left:
            names = ", ".join(repr(c.doc_hash or c.tenant) for c in left[:10])
            log.error("costline: %d cache invalidation(s) were never published to %s (Kafka at %s unreachable "
                      "until shutdown): the other replicas still serve what they removed here. Run them again "
                      "(costline cache invalidate) once Kafka is back: %s%s", len(left), self.topic, self.bootstrap,
                      names, "..." if len(left) > 10 else "")

    def _make_producer(self) -> None:
        from costline.collectors.producer import LazyProducer

        if self._producer is None:
            self._producer = LazyProducer(
                self._kafka, connect_timeout_s=2.0,
                producer_config={"client_id": f"costline-cache-{self.replica_id}", "linger_ms": 1},
            )

    def _produce_queued(self, deadline: float) -> bool:
        if self._queue.empty() and self._enqueued == 0 and not self._retry:
            return True
        if not self._topic_ok.is_set():
            try:
                partitions = ensure_cache_topic(self.bootstrap, self.topic,
                                                timeout_s=max(deadline - time.monotonic(), 0.05),
                                                security=self._security)
            except Exception as exc:
                log.warning("costline: cannot publish cache changes to %s: %s", self.topic, exc)
                return False
            if partitions != 1:
                log.warning("costline: topic %s has %d partitions, not 1: nothing published", self.topic, partitions)
                return False
            self._topic_ok.set()
        self._make_producer()
        with self._lock:
            lost = self._counts["lost"] + self._counts["invalidations_lost"]
        while True:
            try:
                change = self._queue.get_nowait()
            except queue.Empty:
                break
            if change is not None:
                self._send(change, deadline)  # a failed store is counted; a failed invalidation tried again below
        while True:  # the invalidations that failed are published again until acknowledged or the deadline
            producer = self._producer.get()
            if producer is not None:
                try:
                    producer.flush(timeout=max(deadline - time.monotonic(), 0.001))
                except Exception:  # the sends' own callbacks count what failed; the loop below tries again
                    log.debug("costline: cache replication flush failed", exc_info=True)
            with self._lock:
                again = list(self._retry.values())
                if not again or time.monotonic() >= deadline:
                    return not self._retry and lost == self._counts["lost"] + self._counts["invalidations_lost"]
                wait = min(max(self._retry_due - time.monotonic(), 0.0), deadline - time.monotonic())
                self._retry.clear()
                self._retrying += len(again)
            time.sleep(wait)
            for change in again:
                self._send(change, deadline, retry=True)

    def restore_offset(self, state: dict[str, Any] | None) -> None:
        """Note the offset a snapshot loaded by :meth:`SemanticCache.load` covers (same topic only)."""
        why = self._unusable(state)
        if why is not None and isinstance(state, dict) and state.get("topic") == self.topic:
            log.warning("costline: the cache snapshot loaded records no usable state of %s (%s)", self.topic, why)
        if why is None or why == _TOO_OLD:
            assert isinstance(state, dict)
            with self._lock:
                self._offset = self._start_offset = int(state["offset"])
                self._restored = why is None
            self._topic_id = topic_id_text(state.get("topic_id"))

    def _unusable(self, state: Any) -> str | None:
        """Why a snapshot's replication state cannot be followed on from (None: it can)."""
        if not isinstance(state, dict) or state.get("topic") != self.topic:
            return "it records no offset of this topic"
        offset, saved_at = state.get("offset"), state.get("saved_at")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            return f"its offset {offset!r} is not a topic offset"
        if isinstance(saved_at, bool) or not isinstance(saved_at, (int, float)):
            return f"its save time {saved_at!r} is not a number"
        try:
            age = self._now() - float(saved_at)
        except OverflowError:
            age = math.nan
        if not math.isfinite(age):
            return f"its save time {saved_at!r} is not a finite number"
        if age > self._config.replication_snapshot_max_age_s:
            return _TOO_OLD
        return None

    # -- state -------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """True once the topic was applied up to the end it had when this replica started."""
        return self._ready.is_set()

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    def add_listener(self, listener: Callable[[Change, int], None]) -> None:
        """Call ``listener(change, offset)`` after each applied record (errors are logged)."""
        self._listeners.append(listener)

    def stats(self) -> ReplicationStats:
        with self._lock:
            c = self._counts
            return ReplicationStats(
                published=c["published"], dropped=c["dropped"], send_errors=c["send_errors"],
                applied=c["applied"], own=c["own"], skipped=sum(self._skips.values()),
                skipped_by_reason=dict(self._skips), offset=self._offset, start_offset=self._start_offset,
                bootstrap_entries=self._bootstrap_entries, apply_cpu_s=self._apply_cpu_s,
                ready=self.ready, error=self.error, retry_pending=len(self._retry) + self._retrying,
                invalidations_lost=c["invalidations_lost"], refused_tenant=c["refused_tenant"],
                snapshots_dropped=c["snapshots_dropped"],
                lag=None if self._end is None else max(self._end - self._offset, 0),
            )

    def snapshot_state(self) -> dict[str, Any]:
        """What a snapshot records (called under the cache's lock, so it matches the entries)."""
        state = {"topic": self.topic, "partition": 0, "offset": self._offset, "saved_at": self._now(),
                 "replica_id": self.replica_id}
        if self._topic_id is not None:  # which topic of that name: a restart compares it (_check_start)
            state["topic_id"] = self._topic_id
        return state

    def save_snapshot(self) -> bool:
        """Save the cache to ``path`` with the topic offset it covers; False (logged) if it failed."""
        path = self._config.path
        if path is None:
            return False
        try:
            self._cache.save(path)
            return True
        except Exception:
            log.exception("costline: could not save the cache snapshot to %s", path)
            return False

    # -- publishing (the hot path: called under the cache's lock; never blocks or raises) ------
    def new_key(self, entry_id: int) -> str:
        return f"{self.instance}:{entry_id}"

    def publish_store(self, entry: "_Entry", vector: np.ndarray) -> None:
        embedder = self._cache.embedder
        change = Change("store", key=entry.key, origin=self.instance, tenant=entry.tenant,
                        namespace=entry.namespace, query=entry.query, answer=entry.answer,
                        doc_hashes=entry.doc_hashes, created_at=entry.created_at, expires_at=entry.expires_at,
                        vector=vector, model=getattr(embedder, "model_name", None),
                        model_fingerprint=self._model_fingerprint())
        with self._lock:
            self._pending.add(entry.key)
        self._publish(change)

    def _model_fingerprint(self) -> str | None:
        """The embedder's model fingerprint, asked once (at start: the embedder computed it when it loaded)."""
        if self._fingerprint is _UNKNOWN:
            fp = getattr(self._cache.embedder, "model_fingerprint", None)
            self._fingerprint = fp if isinstance(fp, str) and fp else None
        return self._fingerprint  # type: ignore[return-value]

    def publish_remove(self, key: str) -> None:
        self._publish(Change("remove", key=key, origin=self.instance))

    def publish_invalidate_doc(self, doc_hash: str) -> None:
        self._publish(Change("invalidate_doc", doc_hash=doc_hash, origin=self.instance))

    def publish_invalidate_tenant(self, tenant: str, at: float | None = None) -> None:
        self._publish(Change("invalidate_tenant", tenant=tenant, origin=self.instance,
                             at=self._now() if at is None else at))

    def _publish(self, change: Change) -> None:
        try:
            self._queue.put_nowait(change)
        except queue.Full:
            if change.op in _INVALIDATIONS:  # never dropped: it waits with the failed ones
                self._keep_for_retry(change, "the replication queue is full")
                return
            with self._lock:
                self._counts["dropped"] += 1
                dropped = self._counts["dropped"]
                self._pending.discard(change.key)  # never on the topic: remote invalidations apply to it
            if dropped == 1 or dropped % 1000 == 0:
                log.warning("costline: cache replication queue full (%d changes); %d dropped so far: "
                            "is Kafka at %s reachable?", self._queue.maxsize, dropped, self.bootstrap)
            return
        with self._lock:
            self._enqueued += 1

    # -- invalidations published again until acknowledged ------------------------------------------
    def _keep_for_retry(self, change: Change, why: object) -> None:
        """Keep a failed invalidation to publish again (bounded: past it, this one is lost, loudly)."""
        try:
            key = encode_change(change, None)[0]
        except Exception:  # not encodable: trying again cannot help
            log.exception("costline: a cache %s cannot be encoded; not published", change.op)
            self._count("invalidations_lost")
            return
        with self._lock:
            if key in self._retry:
                self._retry[key] = change  # the later one of the same document or tenant, in the earlier's place
                kept = True
            elif len(self._retry) < MAX_RETRY_INVALIDATIONS:
                self._retry[key] = change
                kept = True
            else:
                kept = False
                self._counts["invalidations_lost"] += 1
                lost = self._counts["invalidations_lost"]
            waiting = len(self._retry)
        if kept:
            if waiting == 1 or waiting % 1000 == 0:
                log.warning("costline: a cache %s was not published (%s); %d invalidation(s) wait to be published "
                            "again: is Kafka at %s reachable?", change.op, why, waiting, self.bootstrap)
        elif lost == 1 or lost % 100 == 0:
            log.error("costline: LOST a cache %s of %r: %d invalidations already wait to be published again (%s); "
                      "%d lost so far: the other replicas keep serving what it removed here. Once Kafka at %s is "
                      "back, run it again (costline cache invalidate)", change.op,
                      change.doc_hash or change.tenant, MAX_RETRY_INVALIDATIONS, why, lost, self.bootstrap)

    def _next_retry(self) -> Change | None:
        """The oldest failed invalidation when a try is due (None: none, not yet, or stopping)."""
        with self._lock:
            if not self._retry or self._stop.is_set() or time.monotonic() < self._retry_due:
                return None
            self._retrying += 1
            return self._retry.popitem(last=False)[1]

    def _retried(self, *, ok: bool) -> None:
        """Under the lock: the backoff of the retries after a publish succeeded or failed."""
        if ok:
            self._retry_backoff = _RETRY_BACKOFF_S[0]
        else:
            self._retry_due = time.monotonic() + self._retry_backoff
            self._retry_backoff = min(self._retry_backoff * 2, _RETRY_BACKOFF_S[1])

    # -- the sender thread ---------------------------------------------------------------------
    def _run_sender(self) -> None:
        while True:
            # failed invalidations first, oldest first: before anything newer (once stopping, none: what is queued
            # fails at once, and the shutdown reports every invalidation left as lost)
            retry = None if self._stop.is_set() else self._next_retry()
            if retry is not None:
                self._send(retry, retry=True)
                continue
            try:
                change = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if change is None:
                return
            self._send(change)

    def _send(self, change: Change, deadline: float | None = None, *, retry: bool = False) -> bool:
        def give_up() -> bool:
            return self._stop.is_set() or (deadline is not None and time.monotonic() >= deadline)

        while not self._topic_ok.is_set():  # never let a send auto-create the topic uncompacted
            if give_up() or self.error is not None:
                self._sent(change, ok=False, why=self.error or "stopped before the topic was ready", retry=retry)
                return False
            self._topic_ok.wait(0.2)
        producer = None
        while producer is None:
            producer = self._producer.get()
            if producer is None:
                if give_up():
                    self._sent(change, ok=False, why="Kafka unreachable", retry=retry)
                    return False
                time.sleep(0.2)
        try:
            key, value, headers = encode_change(change, self._secret)
        except Exception as exc:  # a bug, not Kafka: trying again cannot help
            log.exception("costline: a cache %s cannot be encoded; not published", change.op)
            self._sent(change, ok=False, why=f"{type(exc).__name__}: {exc}", retry=retry, keep=False)
            return False
        try:
            future = producer.send(self.topic, key=key, value=value, headers=headers, partition=0)
        except Exception as exc:  # KafkaTimeoutError: no metadata within max_block_ms (Kafka away)
            self._sent(change, ok=False, why=f"{type(exc).__name__}: {exc}", retry=retry)
            return False
        future.add_callback(lambda _meta: self._acked(change))
        future.add_errback(lambda exc: self._failed(change, exc))
        self._sent(change, ok=True, retry=retry)
        return True

    def _sent(self, change: Change, *, ok: bool, why: str = "", retry: bool = False, keep: bool = True) -> None:
        invalidation = change.op in _INVALIDATIONS
        with self._flushed:
            if retry:
                self._retrying -= 1
            else:
                self._handed += 1
            if ok:
                self._counts["published"] += 1
            else:
                self._counts["send_errors"] += 1
                self._pending.discard(change.key)
                if invalidation:
                    self._retried(ok=False)
                elif keep:
                    self._counts["lost"] += 1
            self._flushed.notify_all()
        if not ok:
            if invalidation and keep:
                self._keep_for_retry(change, why)
            else:
                if invalidation:
                    self._count("invalidations_lost")
                log.warning("costline: a cache %s was not published: %s", change.op, why)

    def _acked(self, change: Change) -> None:
        if change.op in _INVALIDATIONS:
            with self._lock:
                self._retried(ok=True)

    def _failed(self, change: Change, exc: BaseException) -> None:
        """A record the producer could not deliver (delivery_timeout_ms passed): an invalidation is kept to be
        published again; a store or removal is best effort (counted)."""
        invalidation = change.op in _INVALIDATIONS
        with self._flushed:
            self._counts["published"] -= 1
            self._counts["send_errors"] += 1
            self._pending.discard(change.key)
            if invalidation:
                self._retried(ok=False)
            else:
                self._counts["lost"] += 1
            self._flushed.notify_all()
        if invalidation:
            self._keep_for_retry(change, exc)
        else:
            log.warning("costline: a cache %s was not published: %s", change.op, exc)

    # -- the applier thread --------------------------------------------------------------------
    def _bootstrap(self) -> int:
        """Load the snapshot at ``path`` when it is usable; the topic offset to read from."""
        from costline.serving.cache.store import MANIFEST, _read_manifest, load_cache

        path = self._config.path
        if len(self._cache) or self._restored is not None:  # loaded before start (SemanticCache.load)
            if self._restored:
                with self._lock:
                    self._bootstrap_entries = len(self._cache)
                return self._offset
            log.warning("costline: the cache loaded before start records no recent offset of %s: "
                        "dropping it and reading the topic from the beginning", self.topic)
            self._cache.clear()
            with self._lock:
                self._offset = self._start_offset = 0
            return 0
        if path is None or not (Path(path) / MANIFEST).exists():
            return 0
        manifest = Path(path) / MANIFEST
        state: Any = None
        if not manifest.is_file():
            why: str | None = f"{manifest} is not a file: the next snapshot saved replaces it"
        else:
            try:
                state = _read_manifest(Path(path)).get("replication")
            except Exception as exc:  # never stops the start: the topic is read from its beginning instead
                why = str(exc) if isinstance(exc, CacheError) else f"{type(exc).__name__}: {exc}"
                with self._lock:
                    self._counts["snapshots_dropped"] += 1
            else:
                why = self._unusable(state)
        if why is None:
            assert state is not None
            try:
                load_cache(self._cache, path)
            except Exception as exc:  # damaged in any way (CacheCorruptError, or a shape the checks missed)
                why = str(exc) if isinstance(exc, CacheError) else f"{type(exc).__name__}: {exc}"
                self._cache.clear()
                with self._lock:
                    self._counts["snapshots_dropped"] += 1
            else:
                with self._lock:
                    self._offset = self._start_offset = int(state["offset"])
                    self._bootstrap_entries = len(self._cache)
                self._topic_id = topic_id_text(state.get("topic_id"))
                log.info("costline: cache replica %s bootstrapped %d entries from %s; topic from offset %d",
                         self.replica_id, len(self._cache), path, self._offset)
                return self._offset
        log.warning("costline: not bootstrapping from the snapshot at %s (%s); reading %s from the beginning",
                    path, why, self.topic)
        return 0

    def _run_applier(self, start: int) -> None:
        consumer = None
        try:
            consumer = self._connect(start)
            if consumer is None:
                return
            self._follow(consumer)
        except Exception as exc:  # never silently: the replica keeps serving its local cache
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("costline: cache replication stopped applying %s", self.topic)
        finally:
            if consumer is not None:
                try:
                    consumer.close()
                except Exception:
                    log.debug("costline: closing the cache replication consumer failed", exc_info=True)

    def _connect(self, start: int) -> Any:
        """Create the topic if needed and a consumer positioned at ``start`` (retrying while Kafka is away)."""
        from kafka import KafkaConsumer, TopicPartition
        from kafka.errors import KafkaError

        delay = 0.5
        while not self._stop.is_set():
            try:
                ids: dict[str, str] = {}
                partitions = ensure_cache_topic(self.bootstrap, self.topic, security=self._security, ids=ids)
                self._live_topic_id = ids.get(self.topic)
                if partitions != 1:
                    self.error = (f"topic {self.topic} has {partitions} partitions; cache replication needs "
                                  "exactly one (one order of changes): create it with one, or name another")
                    log.error("costline: %s", self.error)
                    return None
                self._topic_ok.set()
                read_header_keys_like_java()  # one record's non-UTF-8 header key must not stop every replica
                consumer = make_client(
                    KafkaConsumer, bootstrap_servers=self.bootstrap.split(","),
                    group_id=f"costline-cache-{self.replica_id}", client_id=f"costline-cache-{self.replica_id}",
                    enable_auto_commit=False,
                    auto_offset_reset="earliest", fetch_max_wait_ms=100, **self._security,
                )
                tp = TopicPartition(self.topic, 0)
                consumer.assign([tp])
                try:
                    start = self._check_start(consumer, tp, start)
                except BaseException:
                    consumer.close()
                    raise
                consumer.seek(tp, start)
                return consumer
            except (KafkaError, OSError, ValueError) as exc:
                log.warning("costline: cache replication cannot reach Kafka at %s (%s); retrying in %.1fs",
                            self.bootstrap, exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)
        return None

    def _check_start(self, consumer: Any, tp: Any, start: int) -> int:
        """The offset to read from: ``start`` (the snapshot's), unless the topic no longer holds the records right
        after it (its log start moved past it: retention of ``cleanup.policy=delete``, DeleteRecords) or never held
        it, or is another topic of the same name (deleted and created again: its topic id differs from the one the
        snapshot recorded): then the snapshot is dropped, with a warning, and the topic read from its beginning.
        Following on would skip those records, invalidations included, unseen (``auto_offset_reset`` reads on from
        wherever the log starts now), and serve entries whose invalidation the new topic never carries. A snapshot
        that recorded no topic id (saved before ids were recorded, or on a broker before 2.8) gets the offset
        checks alone."""
        saved, live = self._topic_id, self._live_topic_id
        if live is not None:
            self._topic_id = live  # the topic read from here on: what the next snapshot records
        if start <= 0:
            return 0
        begin = consumer.beginning_offsets([tp])[tp]
        end = consumer.end_offsets([tp])[tp]
        if saved is not None and live is not None and saved != live:
            why = (f"the topic's id is now {live}, the snapshot's was {saved}: the topic was deleted and created "
                   "again, and the snapshot's entries and offset belong to the old one")
        elif begin <= start <= end:
            return start
        else:
            why = (f"the topic now starts at offset {begin}: the records from {start} to {begin} are gone, "
                   "invalidations included" if start < begin else
                   f"the topic ends at offset {end}, before it: it is not the topic the snapshot followed")
        log.warning("costline: dropping the cache snapshot of replica %s, which covers %s up to offset %d (%s); "
                    "rebuilding it from the topic's beginning", self.replica_id, self.topic, start, why)
        begin = min(begin, end)
        with self._cache._lock:
            self._cache.clear()
            with self._lock:
                self._offset = self._start_offset = begin
                self._bootstrap_entries = 0
                self._counts["snapshots_dropped"] += 1
        return begin

    def _follow(self, consumer: Any) -> None:
        from kafka import TopicPartition

        tp = TopicPartition(self.topic, 0)
        end = consumer.end_offsets([tp])[tp]
        self._end = end
        if self._offset >= end:
            self._ready.set()
        interval = self._config.replication_snapshot_interval_s
        last_save = time.monotonic()
        last_commit = time.monotonic()
        while not self._stop.is_set():
            batch = consumer.poll(timeout_ms=100, max_records=500)
            records = batch.get(tp, [])
            if records:
                cpu = time.thread_time()
                applied = [(self._apply(r), r.offset) for r in records]
                with self._lock:
                    self._apply_cpu_s += time.thread_time() - cpu
                for change, offset in applied:
                    if change is not None:
                        self._notify(change, offset)
            try:
                highwater = consumer.highwater(tp)  # the end offset of the last fetch (None before one)
            except Exception:
                highwater = None
            if isinstance(highwater, int):
                self._end = highwater
            if not self._ready.is_set() and (self._offset >= end or consumer.position(tp) >= end):
                self._ready.set()
            if interval and self._config.path is not None and time.monotonic() - last_save >= interval:
                self.save_snapshot()
                last_save = time.monotonic()
            if records and time.monotonic() - last_commit >= 5.0:  # progress visible to kafka tooling
                last_commit = time.monotonic()
                try:
                    consumer.commit_async()
                except Exception:
                    log.debug("costline: cache replication offset commit failed", exc_info=True)

    def _apply(self, record: Any) -> Change | None:
        """Apply one record (under the cache's lock, with the offset); the change, None if skipped."""
        cache = self._cache
        with cache._lock:
            self._offset = record.offset + 1
            try:
                change = decode_record(record.key, record.value, record.headers, dim=cache.dim,
                                       model=getattr(cache.embedder, "model_name", None), secret=self._secret,
                                       fingerprint=self._model_fingerprint())
                self._apply_change(change)
            except RecordSkipped as skip:
                self._skip(skip.reason, str(skip), record.offset)
                return None
            except (ValueError, TypeError, OverflowError) as exc:  # the cache refused it (tenant, namespace, shape)
                self._skip("invalid", str(exc), record.offset)
                return None
            except Exception as exc:  # a bug: its traceback with the first skips, then counted (rate-limited)
                self._skip("error", f"{type(exc).__name__}: {exc}", record.offset, exc_info=True)
                return None
        return change

    def _apply_change(self, change: Change) -> None:
        cache = self._cache
        own = change.origin == self.instance
        if change.op == "store":
            if own:
                with self._lock:
                    self._pending.discard(change.key)
                    self._counts["own"] += 1
                return
            now = self._now()
            created, expires_at = change.created_at, change.expires_at
            if created > now:  # a sender whose clock is ahead: never stored in this replica's future
                if expires_at is not None:
                    expires_at -= created - now  # the same lifetime, from now
                created = now
            # expired on its way (by the sender's expiry, or by this replica's own ttl from the entry's store time:
            # a bootstrap from the topic's beginning): nothing to serve
            expires = effective_expiry(created, expires_at, cache.config.ttl_s)
            if expires is not None and expires <= now:
                raise RecordSkipped("expired", "expired on arrival")
            if cache._refuses_replicated(change.tenant, created):  # made before its tenant's latest invalidation
                with self._lock:
                    self._counts["refused_tenant"] += 1
                    self._counts["applied"] += 1
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("costline: refused replicated store %s of tenant %r: stored at %s, at or before the "
                              "tenant's latest invalidation", change.key, change.tenant, created)
                return
            assert change.vector is not None
            cache._apply_store(change.key, change.vector, change.answer, change.query, change.tenant,
                               change.namespace, change.doc_hashes, created, expires_at)
        elif change.op == "remove":
            cache._apply_remove(change.key)
        else:
            at = None
            if change.op == "invalidate_tenant" and change.at is not None:
                at = min(change.at, self._now())  # never in this replica's future (a sender's clock ahead)
            if own:  # done here already; only the entries of other replicas stored before it remain
                prefix = self.instance + ":"
                def spare(key: str) -> bool:
                    return key.startswith(prefix)
            elif at is None:  # our stores not yet on the topic come after it in the log: they stay
                with self._lock:
                    pending = set(self._pending)
                def spare(key: str) -> bool:
                    return key in pending
            else:
                # stored after the invalidation, by its writer's clock: ours not yet on the topic, and the ones of
                # the replica that invalidated (whose invalidation, published again after Kafka was away, may come
                # after them in the log); every replica refuses a later store made before it (_refuses_replicated)
                with self._lock:
                    pending = set(self._pending)
                origin = change.origin + ":"
                def spare(key: str) -> bool:
                    created = cache._created_at(key)
                    return (created is not None and created > at
                            and (key in pending or (bool(change.origin) and key.startswith(origin))))
            if change.op == "invalidate_doc":
                cache._apply_invalidate(doc_hash=change.doc_hash, spare=spare)
            else:
                cache._apply_invalidate(tenant=change.tenant, spare=spare, at=at)
        self._count("own" if own else "applied")

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _skip(self, reason: str, detail: str, offset: int, *, exc_info: bool = False) -> None:
        with self._lock:
            self._skips[reason] += 1
            first = self._skips[reason] == 1
            n = sum(self._skips[r] for r in self._skips if r not in _QUIET_SKIPS)
        if reason in _KEY_SCHEME_SKIPS and first:
            log.warning("costline: skipped cache replication record at %s offset %d (%s). Stores of that key scheme "
                        "are all skipped, counted as %s and logged at debug: they come from replicas of another "
                        "version (a rolling upgrade) or from before the upgrade, and their questions will be asked "
                        "again", self.topic, offset, detail, reason)
        elif reason in _QUIET_SKIPS:
            log.debug("costline: skipped cache replication record at %s offset %d (%s)", self.topic, offset, detail)
        elif n <= _LOGGED_SKIPS or n % 1000 == 0:
            log.warning("costline: skipped cache replication record at %s offset %d (%s); %d skipped so far",
                        self.topic, offset, detail, n, exc_info=exc_info and n <= _LOGGED_SKIPS)

    def _notify(self, change: Change, offset: int) -> None:
        for listener in self._listeners:
            try:
                listener(change, offset)
            except Exception:
                log.exception("costline: a cache replication listener failed")
