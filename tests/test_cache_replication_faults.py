"""Cache replication under faults: Kafka away past the producer's delivery timeout, a topic whose log start moved
past a snapshot, hostile text and numbers, an old signed store replayed after a tenant invalidation, clock skew, bad
snapshot manifests.

Most tests drive one replicator in this process (records encoded and applied as on the topic, a fake producer, time
injected); the two marked ``kafka`` run on a broker of this module's own, which one of them stops and starts again.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

pytest.importorskip("faiss")

from costline.config import KafkaConfig  # noqa: E402
from costline.serving.cache import replication  # noqa: E402
from costline.serving.cache.replication import CacheReplicator, decode_record, encode_change  # noqa: E402
from costline.serving.cache.semantic import SemanticCache  # noqa: E402
from costline.serving.settings import CacheConfig  # noqa: E402

DIM = 8
T0 = 1_800_000_000.0
WAIT_S = 60.0  # a bound on waits for propagation, never an assertion on time
TOPIC = "cache-faults"


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def replica(clock: Callable[[], float] | None = None, **extra: Any) -> SemanticCache:
    """A replicated cache never started (no broker): what it publishes waits in its queue."""
    fields: dict[str, Any] = dict(mode="threshold", threshold=0.99, ttl_s=0, replication_topic=TOPIC,
                                  replication_bootstrap_servers="127.0.0.1:1", replication_snapshot_interval_s=0)
    fields.update(extra)
    return SemanticCache(None, CacheConfig(**fields), dim=DIM, now=clock or Clock())


def published(cache: SemanticCache, secret: bytes | None = None) -> list[tuple[bytes, bytes | None, list]]:
    """The records ``cache`` queued for the topic, encoded (and signed) as its sender would."""
    assert cache.replication is not None
    out = []
    while not cache.replication._queue.empty():
        change = cache.replication._queue.get_nowait()
        assert change is not None
        out.append(encode_change(change, secret))
    return out


class Log:
    """The offsets of records applied to replicas, as one topic would number them."""

    def __init__(self) -> None:
        self.offset = 0

    def deliver(self, records: list[tuple[bytes, bytes | None, list]], to: SemanticCache) -> None:
        assert to.replication is not None
        for key, value, headers in records:
            to.replication._apply(SimpleNamespace(key=key, value=value, headers=headers, offset=self.offset))
            self.offset += 1


def answer(cache: SemanticCache, seed: int, tenant: str = "acme") -> str | None:
    hit = cache.lookup_vector(unit(seed), tenant=tenant)
    return None if hit is None else hit.answer


def wait_for(what: Callable[[], bool], timeout: float = WAIT_S) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if what():
            return True
        time.sleep(0.02)
    return what()


# -- 1. an invalidation that fails to publish is published again until acknowledged ----------------------
class FakeProducer:
    """KafkaProducer's send/flush: while ``down`` every record fails as on a delivery timeout."""

    def __init__(self, fail_first: int | None = None) -> None:
        self.down = fail_first is None
        self.fail_first = fail_first or 0
        self.tried: list[bytes] = []
        self.acked: list[bytes] = []
        self.lock = threading.Lock()

    def send(self, topic: str, *, key: bytes, value: bytes | None, headers: list, partition: int) -> Any:
        from kafka.errors import KafkaTimeoutError
        from kafka.future import Future

        future = Future()
        with self.lock:
            self.tried.append(key)
            fail = self.down or len(self.tried) <= self.fail_first
            if not fail:
                self.acked.append(key)
        if fail:
            future.failure(KafkaTimeoutError("Expiring 1 record(s): 30000 ms has passed since batch creation"))
        else:
            future.success(SimpleNamespace(offset=len(self.acked) - 1))
        return future

    def flush(self, timeout: float | None = None) -> None:
        pass


def wire(cache: SemanticCache, producer: FakeProducer) -> CacheReplicator:
    r = cache.replication
    assert r is not None
    r._producer = SimpleNamespace(get=lambda: producer, close=lambda timeout=None: None)
    r._topic_ok.set()
    return r


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replication, "_RETRY_BACKOFF_S", (0.01, 0.05), raising=False)


def test_an_invalidation_that_fails_to_publish_is_published_again_until_acknowledged_a_store_is_not(
        quick_retries: None) -> None:
    """Kafka away past delivery_timeout_ms (30 s): the invalidation was counted, logged and never sent again, so
    the other replicas served the invalidated answer for good."""
    cache = replica()
    producer = FakeProducer()
    r = wire(cache, producer)
    r._started = True
    sender = threading.Thread(target=r._run_sender, daemon=True)
    sender.start()
    try:
        entry = cache.store_vector(unit(0), "old", tenant="acme", doc_hashes=["doc0"])
        store_key = f"e/{r.new_key(entry)}".encode()
        cache.invalidate_by_doc("doc0")
        cache.invalidate_tenant("globex")
        assert wait_for(lambda: producer.tried.count(b"d/doc0") >= 2 and producer.tried.count(b"t/globex") >= 2)
        assert r.stats().retry_pending >= 1
        producer.down = False  # Kafka is back
        assert cache.force_flush(WAIT_S)
    finally:
        r._stop.set()
        sender.join(5)
    assert b"d/doc0" in producer.acked and b"t/globex" in producer.acked
    assert producer.acked.index(b"d/doc0") < producer.acked.index(b"t/globex")  # in the order they were made
    assert store_key in producer.tried and store_key not in producer.acked  # a store stays best effort
    stats = r.stats()
    assert (stats.retry_pending, stats.invalidations_lost) == (0, 0)
    assert stats.send_errors >= 1 + 1 + 2 * 2  # the store, its tombstone, two tries of each invalidation


def test_a_tool_that_never_starts_publishes_its_failed_invalidation_again_before_flush_returns(
        quick_retries: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replication, "ensure_cache_topic", lambda *args, **kwargs: 1)
    cache = replica()
    producer = FakeProducer(fail_first=2)
    wire(cache, producer)
    cache.invalidate_by_doc("doc0")
    assert cache.force_flush(WAIT_S) is True
    assert producer.tried == [b"d/doc0"] * 3 and producer.acked == [b"d/doc0"]

    down = FakeProducer()  # Kafka away for good: flush says so, the invalidation still waits
    cache = replica()
    wire(cache, down)
    cache.invalidate_by_doc("doc1")
    assert cache.force_flush(0.3) is False
    assert cache.replication is not None and cache.replication.stats().retry_pending == 1


def test_a_full_queue_drops_stores_never_invalidations_and_the_retry_list_is_bounded_loudly(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(replication, "MAX_RETRY_INVALIDATIONS", 2)
    cache = replica(replication_queue_size=1)
    cache.invalidate_by_doc("a")  # the queue's one place
    cache.store_vector(unit(1), "s", tenant="globex")  # dropped: stores are best effort
    cache.invalidate_by_doc("b")  # queue full: waits in the retry list
    cache.invalidate_by_doc("b")  # the same document again: one place
    cache.invalidate_tenant("acme")
    assert cache.replication is not None
    stats = cache.replication.stats()
    assert (stats.dropped, stats.retry_pending, stats.invalidations_lost) == (1, 2, 0)
    with caplog.at_level(logging.ERROR, logger="costline.serving.cache.replication"):
        cache.invalidate_by_doc("c")  # past the bound: the oldest are kept, this one is lost, loudly
    stats = cache.replication.stats()
    assert (stats.dropped, stats.retry_pending, stats.invalidations_lost) == (1, 2, 1)
    assert any("LOST" in r.getMessage() and "'c'" in r.getMessage() for r in caplog.records)
    assert [c.doc_hash or c.tenant for c in cache.replication._retry.values()] == ["b", "acme"]


# -- 2. a snapshot whose offset the topic no longer holds ------------------------------------------------
class FakeConsumer:
    def __init__(self, begin: int, end: int) -> None:
        self.begin, self.end = begin, end

    def beginning_offsets(self, tps: list) -> dict:
        return {tp: self.begin for tp in tps}

    def end_offsets(self, tps: list) -> dict:
        return {tp: self.end for tp in tps}


@pytest.mark.parametrize(("begin", "end", "start", "read_from", "kept"), [
    (0, 10, 5, 5, True),  # the records after the snapshot are all there
    (5, 5, 5, 5, True),  # nothing new since
    (8, 10, 5, 8, False),  # 5..7 deleted (retention of compact,delete; DeleteRecords): an invalidation may be gone
    (0, 3, 5, 0, False),  # the topic ends before the snapshot: another topic of the same name
    (4, 9, 0, 0, False),  # no snapshot: from the beginning, nothing to drop
])
def test_a_snapshot_is_followed_on_only_when_the_topic_still_holds_the_records_after_it(
        begin: int, end: int, start: int, read_from: int, kept: bool, caplog: pytest.LogCaptureFixture) -> None:
    cache = replica()
    if start:
        cache.store_vector(unit(1), "from the snapshot", tenant="acme")
    r = cache.replication
    assert r is not None
    r._offset = r._start_offset = start
    with caplog.at_level(logging.WARNING, logger="costline.serving.cache.replication"):
        assert r._check_start(FakeConsumer(begin, end), "tp", start) == read_from
    assert (len(cache) == 1) is (kept and start > 0)
    dropped = start > 0 and not kept
    assert r.stats().snapshots_dropped == int(dropped)
    assert any("dropping the cache snapshot" in rec.getMessage() for rec in caplog.records) is dropped
    if dropped:
        assert r.stats().offset == read_from


# -- 3. hostile text: a lone surrogate -------------------------------------------------------------------
def store_value(**overrides: Any) -> bytes:
    body: dict[str, Any] = {"v": 1, "op": "store", "origin": "evil", "key": "evil:1", "tenant": "acme", "ns": "b",
                            "query": "q", "answer": "a", "docs": ["d"], "created_at": T0, "expires_at": None,
                            "model": None, "vec": base64.b64encode(unit(2).astype("<f4").tobytes()).decode()}
    body.update(overrides)
    return json.dumps(body).encode()  # ensure_ascii: a lone surrogate is written as the escape "\ud800"


@pytest.mark.parametrize(("field", "value", "read"), [
    ("tenant", "acme\ud800", "acme\ufffd"),
    ("ns", "billing\udc00", "billing\ufffd"),
    ("query", "half an emoji \ud83d", "half an emoji \ufffd"),
    ("answer", "\udfff", "\ufffd"),
    ("docs", ["doc\ud800"], ("doc\ufffd",)),
])
def test_a_lone_surrogate_in_a_record_is_read_as_the_replacement_character(field: str, value: Any,
                                                                          read: Any) -> None:
    change = decode_record(b"e/evil:1", store_value(**{field: value}), [], dim=DIM, model=None, secret=None)
    got = {"tenant": change.tenant, "ns": change.namespace, "query": change.query, "answer": change.answer,
           "docs": change.doc_hashes}[field]
    assert got == read


def test_a_record_with_a_lone_surrogate_never_stops_the_replicas_snapshots(tmp_path: Path) -> None:
    cache = replica(path=tmp_path / "snap")
    Log().deliver([(b"e/evil:1", store_value(tenant="globex", query="hi \ud800"), [])], cache)
    assert len(cache) == 1
    assert cache.replication is not None and cache.replication.save_snapshot() is True
    back = SemanticCache.load(tmp_path / "snap", None, cache.config, dim=DIM)
    hit = back.lookup_vector(unit(2), tenant="globex", namespace="b")
    assert hit is not None and hit.query == "hi \ufffd"


def test_a_local_change_with_a_lone_surrogate_is_published_as_every_replica_reads_it() -> None:
    sender, receiver = replica(), replica()
    sender.store_vector(unit(1), "half \ud83d", tenant="acme\ud800", doc_hashes=["doc\udc00"])
    records = published(sender)  # encoding it raised UnicodeEncodeError: the store never left
    Log().deliver(records, receiver)
    assert answer(receiver, 1, tenant="acme\ufffd") == "half \ufffd"
    sender.invalidate_by_doc("doc\udc00")  # the sender's own name of the document reaches the receiver's copy
    Log().deliver(published(sender), receiver)
    assert len(receiver) == 0


# -- 4. a tenant's invalidation time: a late or replayed store of it is refused ---------------------------
def test_an_old_signed_store_replayed_after_a_tenant_invalidation_is_refused_even_after_a_restart(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COSTLINE_TEST_CACHE_SECRET", "s3cret")
    clock = Clock()
    signed = dict(replication_secret_env="COSTLINE_TEST_CACHE_SECRET", ttl_s=3600)
    sender, receiver = replica(clock, **signed), replica(clock, **signed)
    topic = Log()
    sender.store_vector(unit(1), "acme's private answer", tenant="acme")
    (old_store,) = published(sender, b"s3cret")  # signed: a copy of its bytes needs no secret
    topic.deliver([old_store], receiver)
    assert answer(receiver, 1) == "acme's private answer"
    clock.t += 60
    sender.invalidate_tenant("acme")  # the tenant asked for its data to be purged
    topic.deliver(published(sender, b"s3cret"), receiver)
    assert answer(receiver, 1) is None
    clock.t += 60
    topic.deliver([old_store], receiver)  # replayed onto the topic
    assert answer(receiver, 1) is None
    assert receiver.replication is not None and receiver.replication.stats().refused_tenant == 1
    assert receiver.stats().stores_refused_tenant == 1

    receiver.save(tmp_path / "snap")  # a restart: the invalidation time is in the snapshot
    restarted = SemanticCache.load(tmp_path / "snap", None, receiver.config, dim=DIM, now=clock)
    topic.deliver([old_store], restarted)
    assert answer(restarted, 1) is None
    clock.t += 3600  # past ttl_s: an entry stored before it would have expired anyway; forgotten
    assert restarted._tenant_invalidated_at("acme", clock()) is None


def test_a_tenant_invalidation_published_late_spares_what_was_stored_after_it_and_nothing_before() -> None:
    """Kafka was away: the invalidating replica's invalidation is published again after its later stores. Every
    replica keeps the stores made after it (by the invalidating replica's clock) and drops every one made before,
    its own not yet on the topic included; a later store made before it is refused."""
    clock = Clock()
    origin, receiver = replica(clock), replica(clock)
    origin.store_vector(unit(1), "before", tenant="acme")
    receiver.store_vector(unit(3), "receiver's, before", tenant="acme")  # not on the topic yet
    before = published(origin)
    clock.t += 10
    origin.invalidate_tenant("acme")
    invalidation = [r for r in published(origin) if r[0].startswith(b"t/")]  # its tombstones were lost
    clock.t += 10
    origin.store_vector(unit(2), "after", tenant="acme")
    receiver.store_vector(unit(4), "receiver's, after", tenant="acme")
    after = published(origin)
    Log().deliver(before + after + invalidation, receiver)
    assert [answer(receiver, i) for i in (1, 2, 3, 4)] == [None, "after", None, "receiver's, after"]
    late = replica(clock)  # a store made before the invalidation, by a third replica, arriving after it
    clock.t -= 15
    late.store_vector(unit(5), "third's, before", tenant="acme")
    clock.t += 15
    Log().deliver(published(late), receiver)
    assert answer(receiver, 5) is None


# -- 5. clock skew ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("skew", "served_until", "reason"), [
    (+600, T0 + 300, None),  # its sender's clock ahead: stored "now", not 10 minutes from now
    (-600, None, "expired"),  # behind: already past its ttl on arrival, counted as such
])
def test_a_senders_clock_skew_never_lets_an_entry_outlive_this_replicas_ttl(skew: float, served_until: float | None,
                                                                          reason: str | None) -> None:
    sender_clock, clock = Clock(T0 + skew), Clock(T0)
    sender, receiver = replica(sender_clock, ttl_s=300), replica(clock, ttl_s=300)
    sender.store_vector(unit(1), "answer", tenant="acme")
    Log().deliver(published(sender), receiver)
    stats = receiver.replication.stats() if receiver.replication is not None else None
    assert stats is not None
    if served_until is None:
        assert len(receiver) == 0 and stats.applied == 0 and stats.skipped_by_reason == {reason: 1}
        return
    hit = receiver.lookup_vector(unit(1), tenant="acme")
    assert hit is not None and hit.created_at == T0 and hit.expires_at == served_until
    assert stats.applied == 1 and stats.skipped == 0


# -- 6. hostile numbers and manifests --------------------------------------------------------------------
def test_a_created_at_past_a_floats_range_is_a_counted_skip_without_a_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    cache = replica()
    with caplog.at_level(logging.DEBUG, logger="costline.serving.cache.replication"):
        Log().deliver([(b"e/evil:1", store_value(created_at=10**400), [])], cache)
    assert cache.replication is not None and cache.replication.stats().skipped_by_reason == {"bad_value": 1}
    assert not any(r.exc_info for r in caplog.records)


def snapshot_with(tmp_path: Path, **state: Any) -> Path:
    cache = replica()
    cache.store_vector(unit(1), "kept", tenant="acme")
    assert cache.replication is not None
    cache.replication._offset = 5
    path = tmp_path / "snap"
    cache.save(path)
    manifest = json.loads((path / "MANIFEST.json").read_text())
    manifest["replication"].update(state)
    (path / "MANIFEST.json").write_text(json.dumps(manifest))
    return path


@pytest.mark.parametrize(("state", "why"), [
    ({"saved_at": None}, "save time None"),
    ({"saved_at": "yesterday"}, "save time 'yesterday'"),
    ({"saved_at": 10**400}, "not a finite number"),
    ({"offset": -1}, "offset -1"),
    ({"offset": True}, "offset True"),
])
def test_a_snapshot_manifest_with_a_bad_replication_state_is_not_used_and_start_goes_on(
        tmp_path: Path, state: dict, why: str, caplog: pytest.LogCaptureFixture) -> None:
    path = snapshot_with(tmp_path, **state)
    fresh = replica(path=path)  # bootstrapping at start
    assert fresh.replication is not None
    with caplog.at_level(logging.WARNING, logger="costline.serving.cache.replication"):
        assert fresh.replication._bootstrap() == 0
    assert len(fresh) == 0
    assert any(why in r.getMessage() for r in caplog.records)
    loaded = SemanticCache.load(path, None, fresh.config, dim=DIM)  # loaded before start: dropped at start
    assert loaded.replication is not None and loaded.replication._bootstrap() == 0 and len(loaded) == 0

    good = snapshot_with(tmp_path / "good", saved_at=T0 - 60, offset=5)  # the same snapshot, a usable state
    fresh = replica(path=good, replication_snapshot_max_age_s=3600)
    assert fresh.replication is not None and fresh.replication._bootstrap() == 5 and len(fresh) == 1


# -- on a broker of this module's own --------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A local broker this module may stop and start (never the session's shared one)."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        pytest.skip("needs a local broker it can stop and start")
    from costline.localkafka import LocalKafka

    cfg = KafkaConfig(port=_free_port(), controller_port=_free_port(), data_dir=tmp_path_factory.mktemp("kafka"),
                      heap="512m", partitions=1)
    local = LocalKafka(cfg)
    local.up()
    try:
        yield local
    finally:
        local.down()


def live_replica(broker: Any, topic: str, name: str, path: Path | None = None) -> SemanticCache:
    cfg = CacheConfig(mode="threshold", threshold=0.99, ttl_s=0, replication_topic=topic,
                      replication_bootstrap_servers=broker.config.bootstrap, replica_id=name, path=path,
                      replication_snapshot_interval_s=0)
    cache = SemanticCache(None, cfg, dim=DIM)
    cache.start()
    assert cache.replication is not None and cache.replication.wait_ready(WAIT_S)
    return cache


@pytest.mark.kafka
def test_an_invalidation_made_while_kafka_is_away_past_the_delivery_timeout_reaches_the_other_replica(
        broker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from costline.collectors.producer import LazyProducer

    def short_delivery_timeout(self: CacheReplicator) -> None:  # 30 s in production: the same path, sooner
        if self._producer is None:
            self._producer = LazyProducer(self._kafka, connect_timeout_s=1.0, producer_config={
                "client_id": f"costline-cache-{self.replica_id}", "linger_ms": 1, "request_timeout_ms": 1500,
                "delivery_timeout_ms": 3000})

    monkeypatch.setattr(CacheReplicator, "_make_producer", short_delivery_timeout)
    monkeypatch.setattr(replication, "_RETRY_BACKOFF_S", (0.2, 1.0), raising=False)
    topic = f"cache-outage-{uuid.uuid4().hex[:8]}"
    a, b = live_replica(broker, topic, "a"), live_replica(broker, topic, "b")
    try:
        a.store_vector(unit(0), "old policy", tenant="acme", doc_hashes=["policy"])
        assert wait_for(lambda: answer(b, 0) == "old policy")
        broker.down()
        try:
            a.invalidate_by_doc("policy")
            assert a.replication is not None
            assert wait_for(lambda: a.replication.stats().send_errors >= 1)  # its delivery timed out
            assert a.replication.stats().retry_pending == 1
        finally:
            broker.up()
        assert wait_for(lambda: answer(b, 0) is None, 120.0)
        assert a.force_flush(WAIT_S)
        stats = a.replication.stats()
        assert (stats.retry_pending, stats.invalidations_lost) == (0, 0)
    finally:
        a.shutdown()
        b.shutdown()


@pytest.mark.kafka
def test_a_replica_whose_snapshot_the_topic_outlived_rebuilds_and_misses_no_invalidation(
        broker: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic

    topic = f"cache-deleted-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=broker.config.bootstrap)
    try:
        admin.create_topics([NewTopic(topic, 1, 1, topic_configs={"cleanup.policy": "compact,delete"})])
        with caplog.at_level(logging.ERROR, logger="costline.serving.cache.replication"):
            a = live_replica(broker, topic, "a")
        assert any("cleanup.policy=compact,delete" in r.getMessage() for r in caplog.records)
        r = live_replica(broker, topic, "r", tmp_path / "r")
        a.store_vector(unit(0), "doc v1", tenant="acme", doc_hashes=["doc@v1"])
        assert wait_for(lambda: answer(r, 0) == "doc v1")
        r.shutdown()  # its snapshot covers the store
        a.invalidate_by_doc("doc@v1")
        a.store_vector(unit(1), "filler", tenant="acme")
        assert a.force_flush(WAIT_S)
        consumer = KafkaConsumer(bootstrap_servers=broker.config.bootstrap)
        tp = TopicPartition(topic, 0)
        end = consumer.end_offsets([tp])[tp]
        consumer.close()
        admin.delete_records({tp: end})  # what retention does to old segments: the invalidation is gone
        with caplog.at_level(logging.WARNING, logger="costline.serving.cache.replication"):
            restarted = live_replica(broker, topic, "r", tmp_path / "r")
        try:
            assert answer(restarted, 0) is None  # it followed on from its snapshot and served doc v1
            assert restarted.replication is not None and restarted.replication.stats().snapshots_dropped == 1
            assert any("dropping the cache snapshot" in rec.getMessage() for rec in caplog.records)
        finally:
            restarted.shutdown()
            a.shutdown()
    finally:
        admin.close()
