"""The Responses API's stored responses (serving/gateway/response_store.py): per tenant, bounded in time, count and
size, shared by the processes that open one file."""

from __future__ import annotations

import pytest

from costline.serving.gateway.response_store import ResponseStore

TURNS = {"input": [{"type": "message", "role": "user", "content": "How do I reset my password?"}],
         "response": {"id": "resp_1", "output": [{"type": "message", "role": "assistant", "content": "Comme ceci."}]}}


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


def test_a_tenant_deletes_its_own_responses_only() -> None:
    clock = Clock()
    store = ResponseStore(ttl_s=60, now=clock)
    store.put("acme", "resp_1", TURNS)
    store.put("acme", "resp_old", TURNS)
    assert not store.delete("globex", "resp_1")  # another tenant's: not found, and still there
    assert store.get("acme", "resp_1") == TURNS
    assert store.delete("acme", "resp_1") and store.get("acme", "resp_1") is None
    assert not store.delete("acme", "resp_1")  # gone already
    clock.t += 61
    assert not store.delete("acme", "resp_old")  # expired: as good as gone


@pytest.mark.parametrize("age, found", [(0, True), (59.9, True), (60.1, False)])
def test_a_response_expires_after_ttl_s(age, found) -> None:
    clock = Clock()
    store = ResponseStore(ttl_s=60, now=clock)
    store.put("acme", "resp_1", TURNS)
    clock.t += age
    assert (store.get("acme", "resp_1") is not None) is found


def test_a_tenants_oldest_responses_are_dropped_past_max_responses_and_no_one_elses() -> None:
    clock = Clock()
    store = ResponseStore(max_responses=3, now=clock)
    store.put("victim", "resp_v", TURNS)
    for n in range(5):
        clock.t += 1
        store.put("acme", f"resp_{n}", TURNS)
    assert [n for n in range(5) if store.get("acme", f"resp_{n}") is not None] == [2, 3, 4]
    assert store.get("victim", "resp_v") == TURNS  # one tenant's traffic never pushes out another's


def test_a_tenants_bytes_are_bounded_then_everyones() -> None:
    """A tenant's conversations past tenant_max_bytes drop its own oldest; past total_max_bytes, anyone's oldest."""
    clock = Clock()
    big = {"system": [], "turns": [{"role": "user", "content": "x" * 1000}]}  # ~1 kB stored
    store = ResponseStore(tenant_max_bytes=3500, total_max_bytes=6000, now=clock)
    for n in range(5):
        clock.t += 1
        store.put("acme", f"resp_{n}", big)
    assert [n for n in range(5) if store.get("acme", f"resp_{n}")] == [2, 3, 4]  # three fit under 3.5 kB
    for n in range(3):
        clock.t += 1
        store.put("globex", f"resp_{n}", big)
    kept = [(t, n) for t in ("acme", "globex") for n in range(5) if store.get(t, f"resp_{n}")]
    assert kept == [("acme", 3), ("acme", 4), ("globex", 0), ("globex", 1), ("globex", 2)]  # 6 kB in all: acme's oldest


def test_a_conversation_over_max_bytes_is_not_stored() -> None:
    store = ResponseStore(max_bytes=250)
    assert not store.put("acme", "resp_big", {"system": [], "turns": [{"role": "user", "content": "x" * 300}]})
    assert store.get("acme", "resp_big") is None
    assert store.put("acme", "resp_small", TURNS) and store.get("acme", "resp_small") == TURNS


def test_stores_that_open_one_file_share_it(tmp_path) -> None:
    """What the workers of `costline serve --workers N` do: one stores, another continues; the file is its owner's
    alone (it holds prompts)."""
    import stat

    path = tmp_path / "responses.sqlite3"
    one, two = ResponseStore(path), ResponseStore(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
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


def test_a_save_waits_for_another_writer_a_bounded_time_and_reads_do_not(tmp_path) -> None:
    """Another process holding the file's write lock: a save gives up after about a second (the answer stands, not
    stored) and a read of what was stored goes on meanwhile."""
    import sqlite3
    import time

    path = tmp_path / "responses.sqlite3"
    store = ResponseStore(path)
    store.put("acme", "resp_1", TURNS)
    other = sqlite3.connect(str(path), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # a writer that does not let go
    try:
        started = time.monotonic()
        assert store.get("acme", "resp_1") == TURNS
        assert time.monotonic() - started < 0.5
        assert not store.put("acme", "resp_2", TURNS)
        assert time.monotonic() - started < 3
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.put("acme", "resp_2", TURNS)
