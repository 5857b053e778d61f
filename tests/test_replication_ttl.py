"""A replicated cache entry is served no longer than the receiving replica's own ``ttl_s`` allows.

Each replica's TTL holds for what it serves: a replicated entry expires there at the earlier of the expiry the
sender gave it and its store time (``created_at``) + the receiver's ``ttl_s`` (0 = no bound of its own: the
sender's expiry alone). A receiver that expires an entry sooner than its sender does so locally: it publishes
no tombstone, so the other replicas keep serving it for as long as their own TTLs say. Two replicas in this
process, records encoded and decoded as on the topic (no broker), time injected.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("faiss")

from test_cache_isolation import _published as published  # noqa: E402

from costline.serving.cache.semantic import SemanticCache  # noqa: E402
from costline.serving.settings import CacheConfig  # noqa: E402

DIM = 8
T0 = 1_000_000.0
DAY = 86_400.0


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def replica(ttl_s: float, clock: Clock, **extra: object) -> SemanticCache:
    """A replicated cache never started (no broker): what it publishes waits in its queue."""
    cfg = CacheConfig(mode="threshold", threshold=0.99, ttl_s=ttl_s, replication_topic="costline_cache_ttl",
                      replication_bootstrap_servers="127.0.0.1:1", **extra)  # type: ignore[arg-type]
    return SemanticCache(None, cfg, dim=DIM, now=clock)


def deliver(records: list[tuple[bytes, bytes | None, list[tuple[str, bytes]]]], to: SemanticCache) -> None:
    """Apply records to a replica as its consumer would (decode, check, apply)."""
    assert to.replication is not None
    for offset, (key, value, headers) in enumerate(records):
        to.replication._apply(SimpleNamespace(key=key, value=value, headers=headers, offset=offset))


def answer(cache: SemanticCache, seed: int = 1) -> str | None:
    hit = cache.lookup_vector(unit(seed), tenant="acme", namespace="billing")
    return None if hit is None else hit.answer


def expiry(cache: SemanticCache, seed: int = 1) -> float | None:
    hit = cache.lookup_vector(unit(seed), tenant="acme", namespace="billing")
    assert hit is not None
    return hit.expires_at


def store(cache: SemanticCache, seed: int = 1) -> None:
    cache.store_vector(unit(seed), f"answer {seed}", tenant="acme", namespace="billing", query=f"q{seed}")


def test_a_receiver_with_a_shorter_ttl_serves_a_replicated_entry_only_as_long_as_its_own_ttl() -> None:
    clock = Clock()
    sender, receiver = replica(DAY, clock), replica(100, clock)
    store(sender)
    clock.t += 10  # it reaches the receiver 10 s later
    deliver(published(sender), receiver)
    assert answer(receiver) == "answer 1"
    assert expiry(receiver) == T0 + 100  # stored at T0 (the sender's store): + the receiver's own ttl
    assert expiry(sender) == T0 + DAY
    clock.t = T0 + 99.9
    assert answer(receiver) == "answer 1"
    clock.t = T0 + 100
    assert answer(receiver) is None  # the receiver's ttl holds...
    assert answer(sender) == "answer 1"  # ...and the sender's still does for the sender


def test_a_receiver_with_a_longer_ttl_or_none_keeps_the_senders_earlier_expiry() -> None:
    for receiver_ttl in (DAY, 0):  # 0: entries never expire on their own here; the sender's expiry still holds
        clock = Clock()
        sender, receiver = replica(100, clock), replica(receiver_ttl, clock)
        store(sender)
        deliver(published(sender), receiver)
        assert expiry(receiver) == T0 + 100
        clock.t = T0 + 100
        assert answer(receiver) is None, receiver_ttl


def test_an_entry_the_sender_never_expires_gets_the_receivers_ttl() -> None:
    clock = Clock()
    sender, receiver, forever = replica(0, clock), replica(100, clock), replica(0, clock)
    store(sender)
    records = published(sender)
    deliver(records, receiver)
    deliver(records, forever)
    assert expiry(receiver) == T0 + 100 and expiry(forever) is None
    clock.t = T0 + 10 * DAY
    assert answer(receiver) is None and answer(forever) == "answer 1"


def test_a_record_older_than_the_receivers_ttl_is_not_applied() -> None:
    """A replica that reads the topic from the beginning (bootstrap) takes no entry its ttl has outlived."""
    clock = Clock()
    sender, receiver = replica(DAY, clock), replica(100, clock)
    store(sender, 1)
    clock.t = T0 + 60
    store(sender, 2)
    clock.t = T0 + 130  # entry 1 is 130 s old (over the receiver's 100), entry 2 is 70 s old
    deliver(published(sender), receiver)
    assert len(receiver) == 1
    assert answer(receiver, 1) is None and answer(receiver, 2) == "answer 2"
    assert receiver.replication is not None  # read: the one expired on arrival is a skip of its own reason
    assert receiver.replication.stats().applied == 1 and receiver.replication.stats().skipped_by_reason == {"expired": 1}


def test_expiring_sooner_than_the_sender_is_local_no_tombstone_reaches_the_others() -> None:
    clock = Clock()
    sender, receiver = replica(DAY, clock), replica(100, clock)
    store(sender)
    deliver(published(sender), receiver)
    clock.t = T0 + 150
    assert receiver.purge_expired() == 1 and len(receiver) == 0
    tombstones = [r for r in published(receiver) if r[1] is None]
    assert tombstones == []  # the others' TTLs are theirs to apply
    assert answer(sender) == "answer 1"

    # an entry of the receiver's own (its carried expiry is its own ttl) is still tombstoned when it expires
    store(receiver, 2)
    (own_store,) = published(receiver)
    clock.t += 100
    assert receiver.purge_expired() == 1
    assert [(key, value) for key, value, _ in published(receiver)] == [(own_store[0], None)]


def test_the_bound_survives_a_snapshot(tmp_path) -> None:
    clock = Clock()
    sender, receiver = replica(DAY, clock), replica(100, clock)
    store(sender)
    deliver(published(sender), receiver)
    receiver.save(tmp_path / "r")
    loaded = SemanticCache.load(tmp_path / "r", None, receiver.config, now=clock, dim=DIM)
    assert expiry(loaded) == T0 + 100
    clock.t = T0 + 100
    assert answer(loaded) is None
