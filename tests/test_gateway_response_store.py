"""The Responses API's stored responses (serving/gateway/response_store.py): per tenant, bounded in time, count and
size, shared by the processes that open one file."""

from __future__ import annotations

import pytest

from costline.serving.gateway.response_store import ResponseStore

TURNS = [{"role": "user", "content": "How do I reset my password?"}, {"role": "assistant", "content": "Like so."}]


class Clock:
    def __init__(self) -> None:
        self.t = 1_000.0

    def __call__(self) -> float:
        return self.t


def test_a_tenant_reads_its_own_responses_only() -> None:
    store = ResponseStore()
    assert store.put("acme", "resp_1", TURNS)
    assert store.get("acme", "resp_1") == TURNS
    assert store.get("globex", "resp_1") is None  # another tenant's id: not found, as one never stored
    assert store.get("acme", "resp_2") is None


@pytest.mark.parametrize("age, found", [(0, True), (59.9, True), (60.1, False)])
def test_a_response_expires_after_ttl_s(age, found) -> None:
    clock = Clock()
    store = ResponseStore(ttl_s=60, now=clock)
    store.put("acme", "resp_1", TURNS)
    clock.t += age
    assert (store.get("acme", "resp_1") is not None) is found


def test_the_oldest_responses_are_dropped_past_max_responses() -> None:
    clock = Clock()
    store = ResponseStore(max_responses=3, now=clock)
    for n in range(5):
        clock.t += 1
        store.put("acme", f"resp_{n}", TURNS)
    assert [n for n in range(5) if store.get("acme", f"resp_{n}") is not None] == [2, 3, 4]


def test_a_conversation_over_max_bytes_is_not_stored() -> None:
    store = ResponseStore(max_bytes=100)
    assert not store.put("acme", "resp_big", [{"role": "user", "content": "x" * 200}])
    assert store.get("acme", "resp_big") is None
    assert store.put("acme", "resp_small", TURNS) and store.get("acme", "resp_small") == TURNS


def test_stores_that_open_one_file_share_it(tmp_path) -> None:
    """What the workers of `costline serve --workers N` do: one stores, another continues."""
    path = tmp_path / "responses.sqlite3"
    one, two = ResponseStore(path), ResponseStore(path)
    one.put("acme", "resp_1", TURNS)
    assert two.get("acme", "resp_1") == TURNS
    one.close()
    assert two.get("acme", "resp_1") == TURNS


def test_a_closed_store_loses_nothing_but_its_own_work() -> None:
    """A store closed under a request (the gateway shutting down): the put says it did not keep it, the get finds
    nothing; neither raises into the answer."""
    store = ResponseStore()
    store.close()
    assert not store.put("acme", "resp_1", TURNS)
    assert store.get("acme", "resp_1") is None
