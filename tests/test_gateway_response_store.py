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


# -- the Conversations API's conversations -----------------------------------------------------------------------
def _msg(n: int, text: str = "") -> dict:
    return {"type": "message", "id": f"msg_{n}", "role": "user", "content": [{"type": "input_text", "text": text}]}


def test_a_conversations_items_are_kept_in_order_and_paged_both_ways() -> None:
    store = ResponseStore()
    store.create_conversation("acme", "conv_1", {"topic": "billing"}, [_msg(1), _msg(2)])
    assert store.add_items("acme", "conv_1", [_msg(3), _msg(4), _msg(5)]) == [_msg(3), _msg(4), _msg(5)]
    ids = lambda page: [i["id"] for i in page[0]]  # noqa: E731
    assert ids(store.conversation_items("acme", "conv_1")) == ["msg_1", "msg_2", "msg_3", "msg_4", "msg_5"]
    first = store.conversation_items("acme", "conv_1", limit=2, order="desc")
    assert (ids(first), first[1]) == (["msg_5", "msg_4"], True)
    last = store.conversation_items("acme", "conv_1", limit=2, order="desc", after="msg_2")
    assert (ids(last), last[1]) == (["msg_1"], False)
    assert ids(store.conversation_items("acme", "conv_1", limit=2, after="msg_3")) == ["msg_4", "msg_5"]
    with pytest.raises(LookupError):
        store.conversation_items("acme", "conv_1", after="msg_9")
    assert store.conversation("acme", "conv_1")["metadata"] == {"topic": "billing"}


def test_an_item_id_the_conversation_holds_already_gets_a_new_one() -> None:
    store = ResponseStore()
    store.create_conversation("acme", "conv_1", {}, [_msg(1, "a"), _msg(1, "b")])
    added = store.add_items("acme", "conv_1", [_msg(1, "c")])
    held = store.conversation_items("acme", "conv_1")[0]
    assert [i["content"][0]["text"] for i in held] == ["a", "b", "c"]
    assert len({i["id"] for i in held}) == 3 and held[0]["id"] == "msg_1" and added[0]["id"].startswith("msg_")


def test_a_tenant_reaches_only_its_own_conversations() -> None:
    store = ResponseStore()
    store.create_conversation("acme", "conv_1", {}, [_msg(1)])
    assert store.conversation("globex", "conv_1") is None
    assert store.conversation_items("globex", "conv_1") is None
    assert store.add_items("globex", "conv_1", [_msg(2)]) is None
    assert store.conversation_item("globex", "conv_1", "msg_1") is None
    assert not store.delete_conversation_item("globex", "conv_1", "msg_1")
    assert not store.update_conversation("globex", "conv_1", {"x": "y"})
    assert not store.delete_conversation("globex", "conv_1")
    assert [i["id"] for i in store.conversation_items("acme", "conv_1")[0]] == ["msg_1"]
    assert store.conversation("acme", "conv_1")["metadata"] == {}


def test_past_its_bounds_a_conversation_refuses_items_and_loses_none() -> None:
    """Conversations are refused past conversations_max and their items past the tenant's bytes and everyone's;
    what was there stays whole, and another tenant goes on."""
    from costline.serving.gateway.response_store import StoreFull

    store = ResponseStore(max_conversations=2, tenant_max_bytes=1500, total_max_bytes=1900)
    store.create_conversation("acme", "conv_1", {}, [_msg(1, "x" * 600)])
    store.create_conversation("acme", "conv_2", {}, [])
    with pytest.raises(StoreFull, match="conversations_max"):
        store.create_conversation("acme", "conv_3", {}, [])
    with pytest.raises(StoreFull, match="responses_tenant_max_mib"):
        store.add_items("acme", "conv_1", [_msg(2, "y" * 300), _msg(3, "z" * 600)])
    assert [i["id"] for i in store.conversation_items("acme", "conv_1")[0]] == ["msg_1"]  # none of the two
    store.create_conversation("globex", "conv_1", {}, [_msg(1, "x" * 600)])
    with pytest.raises(StoreFull):  # ~2.0 kB in all: under globex's own bound, over everyone's
        store.add_items("globex", "conv_1", [_msg(2, "y" * 600)])
    assert store.delete_conversation("acme", "conv_1")
    assert store.add_items("globex", "conv_1", [_msg(2, "y" * 600)])  # room again


def test_one_conversation_holds_at_most_4_mib_and_the_tenants_others_go_on() -> None:
    """Every request naming a conversation reads it all back (26 MB: 550 ms of CPU a 100-byte request): one
    conversation takes at most 4 MiB of items, whatever room its tenant has; its other conversations are not held."""
    from costline.serving.gateway.response_store import CONVERSATION_MAX_BYTES, StoreFull

    store = ResponseStore(tenant_max_bytes=64 * 1024 * 1024, total_max_bytes=64 * 1024 * 1024)
    store.create_conversation("acme", "big", {}, [])
    part = "x" * (512 * 1024)
    for i in range(7):  # 7 x 512 KiB and their JSON: under 4 MiB
        store.add_items("acme", "big", [_msg(i, part)])
    room = store.conversation_room("acme", "big")
    assert 0 < room < 512 * 1024 and store.conversation_room("acme") > 50 * 1024 * 1024
    with pytest.raises(StoreFull, match="4 MiB a conversation"):
        store.add_items("acme", "big", [_msg(7, part)])
    assert len(store.conversation_items("acme", "big")[0]) == 7  # nothing of the refused add
    store.create_conversation("acme", "next", {}, [])
    assert store.add_items("acme", "next", [_msg(0, part)])  # the tenant's next conversation goes on
    assert CONVERSATION_MAX_BYTES == 4 * 1024 * 1024


def test_a_conversation_unused_for_its_ttl_is_gone_with_its_items() -> None:
    clock = Clock()
    store = ResponseStore(conversation_ttl_s=100, now=clock)
    store.create_conversation("acme", "old", {}, [_msg(1)])
    store.create_conversation("acme", "used", {}, [_msg(1)])
    clock.t += 60
    store.add_items("acme", "used", [_msg(2)])  # a use keeps it
    clock.t += 60
    assert store.conversation("acme", "old") is None and store.add_items("acme", "old", [_msg(2)]) is None
    assert [i["id"] for i in store.conversation_items("acme", "used")[0]] == ["msg_1", "msg_2"]
    store.create_conversation("acme", "new", {}, [])  # expired rows go in the next write
    rows = store._db.execute("SELECT count(*) FROM conversation_items WHERE conversation = 'old'").fetchone()[0]
    assert rows == 0
