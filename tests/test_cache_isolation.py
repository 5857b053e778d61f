"""The semantic cache against callers and replicas that misbehave: what a request's scope ignores, invalidations
that must reach every replica whatever the names involved, bounds that must hold whatever the tenants and the
clock do. Small vectors, real FAISS, replication records applied in-process (no broker)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

pytest.importorskip("faiss")

from costline.serving.cache.key import scope_of_body  # noqa: E402
from costline.serving.cache.replication import RecordSkipped, decode_record, encode_change  # noqa: E402
from costline.serving.cache.semantic import SemanticCache  # noqa: E402
from costline.serving.settings import CacheConfig  # noqa: E402

DIM = 8


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# -- the scope: cache_control is a caching marker, not a name to drop wherever it appears -------------------
BASE: dict[str, Any] = {"model": "claude-haiku-4-5", "max_tokens": 300,
                        "messages": [{"role": "user", "content": "Which fields does it take?"}]}
EPHEMERAL = {"type": "ephemeral"}


def _tool(properties: dict[str, Any]) -> dict[str, Any]:
    return {"tools": [{"name": "save", "input_schema": {"type": "object", "properties": properties}}]}


def _tool_use(tool_input: dict[str, Any]) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "Save it."},
                         {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "save",
                                                            "input": tool_input}]},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"},
                                                      {"type": "text", "text": "Which fields does it take?"}]}]}


def _schema(properties: dict[str, Any]) -> dict[str, Any]:
    return {"output_format": {"type": "json_schema", "schema": {"type": "object", "properties": properties}}}


@pytest.mark.parametrize(("one", "other"), [
    # a tool whose schema has a field named cache_control is another tool
    (_tool({"cache_control": {"type": "string"}}), _tool({})),
    # a tool call made with a cache_control argument is another call
    (_tool_use({"cache_control": "no-store"}), _tool_use({})),
    # an output schema with a cache_control field asks for another shape
    (_schema({"cache_control": {"type": "string"}}), _schema({})),
], ids=["tool_schema_field", "tool_use_argument", "output_schema_field"])
def test_a_field_named_cache_control_in_the_request_data_changes_the_scope(one: dict[str, Any],
                                                                          other: dict[str, Any]) -> None:
    assert scope_of_body({**BASE, **one}) != scope_of_body({**BASE, **other})


TURNS = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."},
         {"role": "user", "content": "Which fields does it take?"}]
TOOL = {"name": "save", "input_schema": {"type": "object"}}


@pytest.mark.parametrize(("marked", "plain"), [
    ({"system": [{"type": "text", "text": "Be brief.", "cache_control": EPHEMERAL}]}, {"system": "Be brief."}),
    ({"system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]},
     {"system": "Be brief."}),
    ({"tools": [{**TOOL, "cache_control": EPHEMERAL}]}, {"tools": [TOOL]}),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi.", "cache_control": EPHEMERAL}]},
                   *TURNS[1:]]}, {"messages": TURNS}),
], ids=["system_block", "system_block_ttl", "tool", "earlier_turn"])
def test_a_prompt_caching_marker_still_keeps_the_scope(marked: dict[str, Any], plain: dict[str, Any]) -> None:
    assert scope_of_body({**BASE, **marked}) == scope_of_body({**BASE, **plain})


# -- replication: an invalidation reaches every replica, however long its document hash or tenant ----------
REPLICATED = CacheConfig(replication_topic="costline_cache_isolation", replication_bootstrap_servers="127.0.0.1:1")


def _published(cache: SemanticCache) -> list[tuple[bytes, bytes | None, list[tuple[str, bytes]]]]:
    """The records ``cache`` queued for the topic (never sent: no broker here), encoded as the sender would."""
    assert cache.replication is not None
    out = []
    q = cache.replication._queue
    while not q.empty():
        change = q.get_nowait()
        assert change is not None
        out.append(encode_change(change, None))
    return out


@pytest.mark.parametrize(("tenant", "doc", "by"), [
    ("acme", "d" * 2000, "doc"),  # a document hash longer than a record key may be
    ("\U0001f600" * 256, "doc-1", "tenant"),  # 256 characters (allowed), 1 KiB of UTF-8 (over a record key)
    ("acme", "\u00e9" * 600, "doc"),  # 600 characters, 1200 bytes
], ids=["long_doc_hash", "four_byte_tenant", "two_byte_doc_hash"])
def test_an_invalidation_reaches_every_replica_whatever_the_length_of_what_it_names(tenant: str, doc: str,
                                                                                     by: str) -> None:
    a, b = SemanticCache(None, REPLICATED, dim=DIM), SemanticCache(None, REPLICATED, dim=DIM)
    b.store_vector(unit(1), "the old policy", tenant=tenant, doc_hashes=[doc])
    log = _published(b)
    if by == "doc":
        a.invalidate_by_doc(doc)  # before A read B's store: it reaches B's entry through the log
    else:
        a.invalidate_tenant(tenant)
    log += _published(a)
    for offset, (key, value, headers) in enumerate(log):  # both replicas apply the one log, in order
        for replica in (a, b):
            assert replica.replication is not None
            replica.replication._apply(SimpleNamespace(key=key, value=value, headers=headers, offset=offset))
    for replica in (a, b):
        assert replica.replication is not None
        assert replica.replication.stats().skipped == 0
        assert replica.lookup_vector(unit(1), tenant=tenant) is None


def test_an_invalidation_record_must_name_what_its_key_names() -> None:
    from costline.serving.cache.replication import Change

    key, value, headers = encode_change(Change("invalidate_doc", doc_hash="d" * 2000, origin="x"), None)
    assert len(key) <= 1024
    _, other, _ = encode_change(Change("invalidate_doc", doc_hash="e" * 2000, origin="x"), None)
    assert decode_record(key, value, headers, dim=DIM, model=None, secret=None).doc_hash == "d" * 2000
    with pytest.raises(RecordSkipped) as caught:
        decode_record(key, other, headers, dim=DIM, model=None, secret=None)
    assert caught.value.reason == "bad_value"


# -- bounds ------------------------------------------------------------------------------------------------
def test_tenants_whose_entries_are_all_gone_leave_nothing_behind() -> None:
    cache = SemanticCache(None, CacheConfig(max_entries=10, evict_fraction=0.0), dim=DIM)
    for i in range(500):  # one tenant per end user, each evicted by the ones after it
        cache.store_vector(unit(i), "answer", tenant=f"user-{i}")
    cache.invalidate_tenant("user-499")
    assert len(cache) == 9
    assert len(cache._per_tenant) == 9  # the quota's count keeps no name of a tenant that holds nothing


def test_an_empty_batch_leaves_no_index_behind() -> None:
    cache = SemanticCache(None, CacheConfig(), dim=DIM)
    for i in range(50):
        assert cache.store_vectors(np.zeros((0, DIM), np.float32), [], tenant=f"t{i}", namespace=f"n{i}") == []
    stats = cache.stats()
    assert (stats.entries, stats.partitions, stats.tenants) == (0, 0, 0)


@pytest.mark.parametrize("fields", [{"query": 123}, {"query": None}, {"query": b"bytes"}])
def test_a_stored_query_that_is_not_text_is_refused_and_nothing_is_stored(fields) -> None:
    """store_vector(query=123) was stored, and a later lookup of the same scope met it as a candidate."""
    cache = SemanticCache(None, CacheConfig(), dim=DIM)
    with pytest.raises(TypeError, match="queries must be strings"):
        cache.store_vector(unit(0), "an answer", tenant="acme", **fields)
    assert cache.stats().entries == 0


def _clock_set_back(cache: SemanticCache, clock: Clock) -> None:
    cache.store_vector(unit(0), "live", tenant="acme")  # expires at t0 + 100
    clock.t -= 500  # the clock is set back: the next entries expire before the first one
    for i in range(1, 4):
        cache.store_vector(unit(i), f"stale {i}", tenant="acme")
    clock.t += 450  # t0 - 50: those three have expired, the first has not


def _replica_with_a_slow_clock(cache: SemanticCache, clock: Clock) -> None:
    # a replica whose clock is 90 s behind: its entries arrive after ours (later in store order) but were stored
    # "earlier", so under our own ttl they expire first (a clock ahead of ours is taken as now: no entry outlives it)
    cache.store_vector(unit(0), "live", tenant="acme")
    other = SemanticCache(None, REPLICATED, dim=DIM, now=lambda: clock() - 90)
    for i in range(1, 4):
        other.store_vector(unit(i), f"stale {i}", tenant="acme")
    for offset, (key, value, headers) in enumerate(_published(other)):
        assert cache.replication is not None
        cache.replication._apply(SimpleNamespace(key=key, value=value, headers=headers, offset=offset))
    clock.t += 50  # the replicated ones have expired, ours has not


@pytest.mark.parametrize("disorder", [_clock_set_back, _replica_with_a_slow_clock],
                         ids=["clock_set_back", "replica_with_a_slow_clock"])
def test_over_the_cap_expired_entries_go_before_any_live_one_whatever_the_store_order(disorder: Any) -> None:
    clock = Clock()
    cache = SemanticCache(None, CacheConfig(max_entries=4, evict_fraction=0.0, ttl_s=100,
                                            replication_topic=REPLICATED.replication_topic,
                                            replication_bootstrap_servers="127.0.0.1:1"), dim=DIM, now=clock)
    disorder(cache, clock)
    assert len(cache) == 4
    cache.store_vector(unit(9), "new", tenant="acme")  # passes the cap
    assert [cache.lookup_vector(unit(i), tenant="acme") is not None for i in (0, 9)] == [True, True]
    assert len(cache) == 2 and cache.stats().expired == 3 and cache.stats().evicted == 0
