"""Cache replication: the record format (hostile input included), the config, and two in-process
replicas on a real broker (small vectors, no embedder: the model is exercised by
test_cache_replication_processes.py)."""

from __future__ import annotations

import base64
import dataclasses
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from test_kafka_headers import RawKey, kafka_python_reader  # noqa: F401 - a fixture

from costline.config import KafkaConfig
from costline.errors import ConfigError
from costline.serving.cache.semantic import REFUSED_ID, SemanticCache
from costline.serving.cache.replication import (
    Change,
    RecordSkipped,
    decode_record,
    encode_change,
    topic_cleanup_policy,
    validate_replication_config,
)
from costline.serving.settings import CacheConfig

DIM = 8
WAIT_S = 30.0  # a bound on waits for propagation, never an assertion on time


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def store_change(**overrides: object) -> Change:
    fields: dict[str, object] = dict(
        key="abc:1", origin="abc", tenant="acme", namespace="billing", query="q", answer="a",
        doc_hashes=("doc-1",), created_at=1000.0, expires_at=None, vector=unit(1), model=None,
    )
    fields.update(overrides)
    return Change("store", **fields)  # type: ignore[arg-type]


def decode(key: object, value: object, headers: object = (), secret: bytes | None = None) -> Change:
    return decode_record(key, value, headers, dim=DIM, model="minilm", secret=secret)


# -- the record format ---------------------------------------------------------------------------
def test_every_change_round_trips_through_its_record() -> None:
    changes = [
        store_change(),
        store_change(expires_at=2000.5, namespace="billing\x1fscopehash", doc_hashes=()),
        Change("remove", key="abc:7", origin="abc"),
        Change("invalidate_doc", doc_hash="doc-9", origin="abc"),
        Change("invalidate_tenant", tenant="globex", origin="abc"),
    ]
    for change in changes:
        key, value, headers = encode_change(change, None)
        back = decode(key, value, headers)
        assert back.op == change.op and back.origin == "abc"
        assert (back.key, back.tenant, back.namespace, back.doc_hash) == (
            change.key, change.tenant, change.namespace, change.doc_hash)
        if change.op == "store":
            assert (back.query, back.answer, back.doc_hashes, back.created_at, back.expires_at) == (
                change.query, change.answer, change.doc_hashes, change.created_at, change.expires_at)
            assert np.array_equal(back.vector, change.vector)
    # keys decide what compaction keeps: one per entry, document, tenant
    assert encode_change(changes[0], None)[0] == b"e/abc:1"
    assert encode_change(changes[2], None)[:2] == (b"e/abc:7", None)  # a tombstone
    assert encode_change(changes[3], None)[0] == b"d/doc-9"
    assert encode_change(changes[4], None)[0] == b"t/globex"


def _store_value(**overrides: object) -> bytes:
    body: dict[str, object] = {"v": 1, "op": "store", "origin": "x", "key": "x:1", "tenant": "acme", "ns": "b",
                               "query": "q", "answer": "a", "docs": [], "created_at": 1.0, "expires_at": None,
                               "model": None, "vec": base64.b64encode(unit(2).astype("<f4").tobytes()).decode()}
    body.update(overrides)
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (None, _store_value(), "bad_key"),
        (b"e/", _store_value(), "bad_key"),
        (b"z/x:1", _store_value(), "bad_key"),
        (b"e/\xff\xfe", _store_value(), "bad_key"),
        (b"e/x:1", b"\x00not json", "bad_value"),
        (b"e/x:1", b"[1, 2]", "bad_version"),
        (b"e/x:1", _store_value(v=2), "bad_version"),
        (b"e/x:1", b"[" * 100_000 + b"]" * 100_000, "bad_value"),  # deep nesting: refused, no crash
        (b"e/x:2", _store_value(), "bad_value"),  # key differs from the record's
        (b"d/x:1", _store_value(), "bad_value"),  # a store under a document key
        (b"e/x:1", _store_value(tenant=""), "bad_value"),
        (b"e/x:1", _store_value(tenant=7), "bad_value"),
        (b"e/x:1", _store_value(tenant="t" * 300), "bad_value"),
        (b"e/x:1", _store_value(docs="doc-1"), "bad_value"),
        (b"e/x:1", _store_value(docs=[""]), "bad_value"),
        (b"e/x:1", _store_value(created_at="now"), "bad_value"),
        (b"e/x:1", _store_value(expires_at=True), "bad_value"),
        (b"e/x:1", _store_value(answer=None), "bad_value"),
        (b"e/x:1", _store_value(model="another-model"), "model_mismatch"),
        (b"e/x:1", _store_value(vec="!!!"), "bad_vector"),
        (b"e/x:1", _store_value(vec=base64.b64encode(b"\0" * 12).decode()), "bad_vector"),  # 3 dims
        (b"e/x:1", _store_value(vec=base64.b64encode(np.zeros(DIM, "<f4").tobytes()).decode()), "bad_vector"),
        (b"e/x:1", _store_value(vec=base64.b64encode(np.full(DIM, np.nan, "<f4").tobytes()).decode()),
         "bad_vector"),
        (b"d/doc", json.dumps({"v": 1, "op": "invalidate_doc", "origin": "x", "doc": "other"}).encode(),
         "bad_value"),
        (b"t/acme", json.dumps({"v": 1, "op": "invalidate_tenant", "origin": "x", "tenant": "globex"}).encode(),
         "bad_value"),
        (b"d/doc", None, "bad_value"),  # a tombstone of an invalidation
        (b"e/x:1", _store_value(created_at=10**400), "bad_value"),  # past a float's range: no OverflowError
        (b"e/x:1", _store_value(expires_at=-10**400), "bad_value"),
        (b"t/acme", json.dumps({"v": 1, "op": "invalidate_tenant", "origin": "x", "tenant": "acme",
                                "at": 10**400}).encode(), "bad_value"),
        (b"t/acme", json.dumps({"v": 1, "op": "invalidate_tenant", "origin": "x", "tenant": "acme",
                                "at": "yesterday"}).encode(), "bad_value"),
    ],
)
def test_a_hostile_or_malformed_record_is_skipped_with_its_reason(key: object, value: object, reason: str) -> None:
    with pytest.raises(RecordSkipped) as caught:
        decode(key, value)
    assert caught.value.reason == reason


def test_with_a_secret_only_records_signed_with_it_are_applied() -> None:
    key, value, headers = encode_change(store_change(), b"s3cret")
    assert decode(key, value, headers, secret=b"s3cret").key == "abc:1"
    for secret_used, hdrs in ((b"other", encode_change(store_change(), b"other")[2]), (None, [])):
        with pytest.raises(RecordSkipped) as caught:
            decode(key, value, hdrs, secret=b"s3cret")
        assert caught.value.reason == "bad_signature", secret_used
    # a signature does not carry over to another value
    _, other_value, _ = encode_change(store_change(answer="poisoned"), None)
    with pytest.raises(RecordSkipped):
        decode(key, other_value, headers, secret=b"s3cret")


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (dict(replication_topic="has space"), "replication_topic"),
        (dict(replication_topic=""), "replication_topic"),
        (dict(replication_topic="t", replica_id="a/b"), "replica_id"),
        (dict(replication_topic="t", replication_queue_size=0), "replication_queue_size"),
        (dict(replication_topic="t", replication_snapshot_interval_s=-1.0), "replication_snapshot_interval_s"),
        (dict(replication_topic="t", replication_snapshot_max_age_s=0.0), "replication_snapshot_max_age_s"),
        (dict(replication_topic="t", replication_secret_env=""), "replication_secret_env"),
    ],
)
def test_a_bad_replication_setting_is_named(change: dict[str, object], key: str) -> None:
    cfg = dataclasses.replace(CacheConfig(), **change)
    with pytest.raises(ConfigError, match=key):
        validate_replication_config(cfg)
    with pytest.raises(ConfigError, match=key):  # the cache refuses it too
        SemanticCache(None, cfg, dim=DIM)


def test_a_secret_env_that_is_unset_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COSTLINE_TEST_CACHE_SECRET", raising=False)
    cfg = dataclasses.replace(CacheConfig(), replication_topic="t", replication_secret_env="COSTLINE_TEST_CACHE_SECRET")
    with pytest.raises(ConfigError, match="COSTLINE_TEST_CACHE_SECRET"):
        SemanticCache(None, cfg, dim=DIM)


def test_replication_is_off_by_default_and_the_lifecycle_is_a_no_op() -> None:
    cache = SemanticCache(None, CacheConfig(mode="threshold"), dim=DIM)
    assert cache.replication is None
    cache.start()
    cache.store_vector(unit(1), "a", tenant="acme")
    assert cache.force_flush(1.0) is True
    cache.shutdown()


def test_publishing_never_blocks_past_the_queue_it_drops_and_counts() -> None:
    # never started (no sender): the bounded queue fills, stores still succeed at once
    cfg = CacheConfig(mode="threshold", replication_topic="never-sent", replication_queue_size=3,
                      replication_bootstrap_servers="127.0.0.1:1")
    cache = SemanticCache(None, cfg, dim=DIM)
    for i in range(10):
        cache.store_vector(unit(i), f"a{i}", tenant="acme")
    assert len(cache) == 10
    assert cache.replication is not None
    stats = cache.replication.stats()
    assert stats.dropped == 7
    started = time.monotonic()
    assert cache.force_flush(0.05) is False
    assert time.monotonic() - started < 5, "force_flush(timeout) waited out the admin client's 30 s bootstrap"


# -- two replicas in this process, on a real broker ---------------------------------------------
def wait_for(what: Callable[[], bool], timeout: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(0.05)
    return what()


def replica_config(topic: str, kafka: KafkaConfig, name: str, path: Path | None = None, **extra: object) -> CacheConfig:
    return CacheConfig(mode="threshold", threshold=0.99, ttl_s=0, replication_topic=topic,
                       replication_bootstrap_servers=kafka.bootstrap, replica_id=name, path=path,
                       replication_snapshot_interval_s=0, **extra)  # type: ignore[arg-type]


@pytest.fixture
def topic() -> str:
    return f"cache-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def replicas(kafka: KafkaConfig, topic: str) -> Iterator[list[SemanticCache]]:
    caches = [SemanticCache(None, replica_config(topic, kafka, f"r{i}"), dim=DIM) for i in range(2)]
    for c in caches:
        c.start()
    for c in caches:
        assert c.replication is not None and c.replication.wait_ready(WAIT_S)
    yield caches
    for c in caches:
        c.shutdown()


def hit(cache: SemanticCache, seed: int, tenant: str = "acme", namespace: str = "billing") -> str | None:
    found = cache.lookup_vector(unit(seed), tenant=tenant, namespace=namespace)
    return None if found is None else found.answer


@pytest.mark.kafka
def test_the_topic_is_created_compacted_with_one_partition(kafka: KafkaConfig, replicas: list[SemanticCache],
                                                           topic: str) -> None:
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    try:
        assert len(admin.describe_topics([topic])[0]["partitions"]) == 1
        assert topic_cleanup_policy(admin, topic) == "compact"
        assert topic_cleanup_policy(admin, "otlp_spans_never_created") is None
        admin.create_topics({f"{topic}-plain": {"num_partitions": 1, "replication_factor": 1}}, wait_for_metadata=True)
        assert topic_cleanup_policy(admin, f"{topic}-plain") == "delete"  # the check can tell them apart
    finally:
        admin.close()


@pytest.mark.kafka
def test_a_store_on_one_replica_is_served_by_the_other_in_its_tenant_only(replicas: list[SemanticCache]) -> None:
    a, b = replicas
    a.store_vector(unit(1), "answer one", tenant="acme", namespace="billing", query="q1", doc_hashes=["d1"])
    assert wait_for(lambda: hit(b, 1) == "answer one")
    assert hit(b, 1, tenant="globex") is None  # another tenant never sees it
    assert hit(b, 1, namespace="support") is None  # nor another namespace
    assert hit(b, 1, namespace="billing\x1fotherscope") is None  # nor another scope
    got = b.lookup_vector(unit(1), tenant="acme", namespace="billing")
    assert got is not None and (got.query, got.doc_hashes) == ("q1", ("d1",))
    assert len(b) == 1 and len(a) == 1  # A did not apply its own store twice


@pytest.mark.kafka
def test_an_invalidation_reaches_the_entries_the_invalidating_replica_had_not_seen(
        replicas: list[SemanticCache]) -> None:
    a, b = replicas
    a.store_vector(unit(1), "from a", tenant="acme", namespace="billing", doc_hashes=["policy"])
    b.store_vector(unit(2), "from b", tenant="acme", namespace="billing", doc_hashes=["policy"])
    b.store_vector(unit(3), "other doc", tenant="acme", namespace="billing", doc_hashes=["terms"])
    assert wait_for(lambda: hit(a, 2) == "from b" and hit(b, 1) == "from a" and hit(a, 3) == "other doc")
    b.invalidate_by_doc("policy")
    assert wait_for(lambda: hit(a, 1) is None and hit(a, 2) is None)
    assert hit(b, 1) is None and hit(b, 2) is None
    assert hit(a, 3) == "other doc" and hit(b, 3) == "other doc"
    a.invalidate_tenant("acme")
    assert wait_for(lambda: len(b) == 0)


@pytest.mark.kafka
def test_a_store_after_an_invalidation_survives_it_on_every_replica(replicas: list[SemanticCache]) -> None:
    a, b = replicas
    a.store_vector(unit(1), "old", tenant="acme", namespace="billing", doc_hashes=["policy"])
    assert wait_for(lambda: hit(b, 1) == "old")
    a.invalidate_by_doc("policy")
    # a request still running on the old document stores its answer late: refused, never published
    assert a.store_vector(unit(3), "late", tenant="acme", namespace="billing", doc_hashes=["policy"]) == REFUSED_ID
    a.store_vector(unit(2), "new", tenant="acme", namespace="billing", doc_hashes=["policy@v2"])
    assert a.force_flush(WAIT_S)
    assert wait_for(lambda: hit(b, 2) == "new" and hit(b, 1) is None)
    assert a.replication is not None
    assert wait_for(lambda: a.replication.stats().own >= 3)  # A read its own three records back...
    assert hit(a, 2) == "new"  # ...and its own invalidation did not remove what came after it
    assert hit(a, 3) is None and hit(b, 3) is None


@pytest.mark.kafka
def test_a_foreign_record_with_a_header_key_that_is_not_utf8_does_not_stop_the_replicas(
        kafka_python_reader: None, kafka: KafkaConfig, topic: str, replicas: list[SemanticCache]) -> None:
    """A record on the cache topic whose header key is not UTF-8 (sarama / librdkafka can write one) is skipped
    as a foreign record, and the changes after it are applied: it used to stop each replica's consumer at that
    offset, so no invalidation after it reached any replica."""
    from kafka import KafkaProducer

    a, b = replicas
    a.store_vector(unit(1), "before", tenant="acme", namespace="billing", doc_hashes=["policy"])
    assert wait_for(lambda: hit(b, 1) == "before")
    prod = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    prod.send(topic, key=b"foreign", value=b"not a cache change", headers=[(RawKey(b"\xff\xfe"), b"x")], partition=0)
    prod.flush()
    prod.close()
    a.invalidate_by_doc("policy")
    a.store_vector(unit(2), "after", tenant="acme", namespace="billing")
    assert wait_for(lambda: hit(b, 2) == "after" and hit(b, 1) is None)


@pytest.mark.kafka
def test_evictions_are_published_but_removals_made_while_applying_are_not(kafka: KafkaConfig, topic: str) -> None:
    small = SemanticCache(None, replica_config(topic, kafka, "small", max_entries=2, evict_fraction=0.0), dim=DIM)
    big = SemanticCache(None, replica_config(topic, kafka, "big"), dim=DIM)
    try:
        for c in (small, big):
            c.start()
        for seed in (1, 2, 3):
            big.store_vector(unit(seed), f"a{seed}", tenant="acme", namespace="billing")
        # the small replica holds only 2 after applying 3; its cap evictions stay local
        assert wait_for(lambda: small.replication is not None and small.replication.stats().applied >= 3)
        assert len(small) == 2
        assert small.force_flush(WAIT_S)  # anything it had published would now come before the next store
        big.store_vector(unit(4), "a4", tenant="acme", namespace="billing")
        assert big.force_flush(WAIT_S)
        assert wait_for(lambda: big.replication is not None and big.replication.stats().own >= 4)
        assert len(big) == 4
        # a store made on the small replica evicts locally, and that eviction is published
        small.store_vector(unit(5), "a5", tenant="acme", namespace="billing")
        assert len(small) == 2
        assert wait_for(lambda: len(big) == 4 and hit(big, 5) == "a5")
    finally:
        for c in (small, big):
            c.shutdown()


@pytest.mark.kafka
def test_a_snapshot_plus_the_topic_bootstraps_a_new_replica_warm(kafka: KafkaConfig, topic: str, tmp_path: Path) -> None:
    a = SemanticCache(None, replica_config(topic, kafka, "a"), dim=DIM)
    b = SemanticCache(None, replica_config(topic, kafka, "b", path=tmp_path / "b"), dim=DIM)
    b2 = None
    try:
        a.start()
        b.start()
        a.store_vector(unit(1), "before", tenant="acme", namespace="billing", doc_hashes=["x"])
        a.store_vector(unit(2), "doomed", tenant="acme", namespace="billing", doc_hashes=["y"])
        assert wait_for(lambda: len(b) == 2)
        b.shutdown()  # saves its snapshot with the offset it covers
        a.store_vector(unit(3), "after", tenant="acme", namespace="billing")
        a.invalidate_by_doc("y")
        assert a.force_flush(WAIT_S)
        b2 = SemanticCache(None, replica_config(topic, kafka, "b", path=tmp_path / "b"), dim=DIM)
        b2.start()
        assert b2.replication is not None and b2.replication.wait_ready(WAIT_S)
        stats = b2.replication.stats()
        assert stats.bootstrap_entries == 2 and stats.start_offset == 2  # two records were in the snapshot
        assert hit(b2, 1) == "before" and hit(b2, 3) == "after" and hit(b2, 2) is None
        assert stats.applied >= 2 and stats.skipped == 0
        b2.shutdown()  # saves again, covering everything it applied
        covered = b2.replication.stats().offset
        # a cache loaded by SemanticCache.load follows on from the offset its snapshot covers
        b2 = SemanticCache.load(tmp_path / "b", None, replica_config(topic, kafka, "b", path=tmp_path / "b"), dim=DIM)
        b2.start()
        assert b2.replication is not None and b2.replication.wait_ready(WAIT_S)
        stats = b2.replication.stats()
        assert (stats.start_offset, stats.bootstrap_entries, stats.applied) == (covered, 2, 0)
        assert hit(b2, 1) == "before" and hit(b2, 3) == "after"
    finally:
        a.shutdown()
        if b2 is not None:
            b2.shutdown()


@pytest.mark.kafka
def test_a_tool_that_never_starts_still_publishes_its_invalidation_on_flush(
        replicas: list[SemanticCache], kafka: KafkaConfig, topic: str) -> None:
    a, b = replicas
    a.store_vector(unit(1), "stale", tenant="acme", namespace="billing", doc_hashes=["policy"])
    assert wait_for(lambda: hit(b, 1) == "stale")
    tool = SemanticCache(None, replica_config(topic, kafka, "cli"), dim=DIM)  # e.g. `costline cache invalidate`
    assert tool.invalidate_by_doc("policy") == 0  # it holds nothing itself
    assert tool.force_flush(WAIT_S)
    assert wait_for(lambda: hit(a, 1) is None and hit(b, 1) is None)


@pytest.mark.kafka
def test_the_tenant_quota_holds_on_every_replica(kafka: KafkaConfig, topic: str) -> None:
    caches = [SemanticCache(None, replica_config(topic, kafka, f"q{i}", max_entries_per_tenant=2), dim=DIM)
              for i in range(2)]
    a, b = caches
    try:
        for c in caches:
            c.start()
        for seed in (1, 2, 3):
            a.store_vector(unit(seed), f"a{seed}", tenant="acme", namespace="billing")
        b.store_vector(unit(9), "other tenant", tenant="globex", namespace="billing")
        assert a.force_flush(WAIT_S) and b.force_flush(WAIT_S)
        assert wait_for(lambda: b.replication is not None and b.replication.stats().applied >= 4)
        assert wait_for(lambda: a.replication is not None and a.replication.stats().applied >= 1)
        for c in caches:  # acme's oldest went on both; globex's entry is untouched by acme's traffic
            assert [hit(c, s) for s in (1, 2, 3)] == [None, "a2", "a3"]
            assert hit(c, 9, tenant="globex") == "other tenant"
    finally:
        for c in caches:
            c.shutdown()


def test_with_kafka_unreachable_a_started_replica_still_serves_and_shuts_down() -> None:
    cfg = CacheConfig(mode="threshold", replication_topic="nowhere", replication_queue_size=5,
                      replication_bootstrap_servers="127.0.0.1:1", replica_id="lonely")
    cache = SemanticCache(None, cfg, dim=DIM)
    cache.start()
    try:
        for i in range(20):  # the sender waits for the topic; the queue fills; stores never fail
            cache.store_vector(unit(i), f"a{i}", tenant="acme")
        assert cache.lookup_vector(unit(3), tenant="acme") is not None  # served locally
        assert cache.invalidate_by_doc("nothing") == 0
        assert cache.replication is not None
        stats = cache.replication.stats()
        assert stats.dropped >= 20 - 5 - 1  # stores: at most the queue and one in the sender's hands
        # the invalidation is never dropped: it waits to be published, in the retry list (the queue was full) or in
        # the queue (the sender had taken a store off it: which one depends on the threads' timing)
        assert stats.retry_pending <= 1 and stats.invalidations_lost == 0
        assert not stats.ready
        assert cache.force_flush(0.2) is False
    finally:
        started = time.monotonic()
        cache.shutdown(timeout=2.0)
    assert time.monotonic() - started < 3.5, "shutdown(timeout) must bound the whole shutdown, not each thread's join"
    assert cache.replication.stats().invalidations_lost == 1  # never published: said loudly and counted


@pytest.mark.kafka
def test_costline_cache_invalidate_publishes_to_every_replica(kafka: KafkaConfig, topic: str, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from costline.cli import _register_area_commands, cli

    _register_area_commands()
    dim = 384  # the command loads the saved cache with the configured (MiniLM) embedder's dimension
    vec = np.random.default_rng(1).normal(size=dim).astype(np.float32)
    vec /= np.linalg.norm(vec)
    a, b = (SemanticCache(None, replica_config(topic, kafka, n), dim=dim) for n in ("r0", "r1"))
    try:
        for c in (a, b):
            c.start()
            assert c.replication is not None and c.replication.wait_ready(WAIT_S)
        a.store_vector(vec, "stale", tenant="acme", namespace="billing", doc_hashes=["policy"])

        def answer(c: SemanticCache) -> str | None:
            found = c.lookup_vector(vec, tenant="acme", namespace="billing")
            return None if found is None else found.answer

        assert wait_for(lambda: answer(b) == "stale")
        saved = tmp_path / "saved"
        a.save(saved)  # an operator's saved copy: the command edits it and publishes what it removed
        toml = tmp_path / "costline.toml"
        toml.write_text(f'[serving.cache]\nmode = "threshold"\nreplication_topic = "{topic}"\n'
                        f'replication_bootstrap_servers = "{kafka.bootstrap}"\nreplica_id = "cli"\n')
        r = CliRunner().invoke(cli, ["--config", str(toml), "cache", "invalidate", "--path", str(saved),
                                     "--doc", "policy"])
        assert r.exit_code == 0, r.output
        assert "removed 1 entries" in r.output and f"published to {topic}" in r.output
        assert wait_for(lambda: answer(a) is None and answer(b) is None)
    finally:
        a.shutdown()
        b.shutdown()
