"""Expired stored responses and conversations are deleted, not only hidden (serving/gateway/response_store.py):
a delete removes the tenant's row whatever its age, the store purges what expired when it is opened and on reads
at most every PURGE_EVERY_S (an injected clock), and the HTTP delete routes answer as a read does."""

from __future__ import annotations

import sqlite3

import httpx
import openai
import pytest
from gateways import ROUTES, routed_gateway

from costline.serving.gateway.response_store import PURGE_EVERY_S, ResponseStore

TURNS = {"input": [{"type": "message", "role": "user", "content": "my card is 4111-1111-1111-1111"}],
         "response": {"id": "resp_1", "output": []}}


class Clock:
    def __init__(self) -> None:
        self.t = 1_000.0

    def __call__(self) -> float:
        return self.t


def _msg(n: int, text: str = "hi") -> dict:
    return {"id": f"msg_{n}", "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def _rows(path, sql: str) -> list:
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_deleting_an_expired_response_removes_it_and_still_says_not_found(tmp_path) -> None:
    path = tmp_path / "store.sqlite3"
    clock = Clock()
    store = ResponseStore(path, ttl_s=60, now=clock)
    store.put("acme", "resp_1", TURNS)
    store.put("globex", "resp_2", TURNS)
    clock.t += 61  # both past ttl_s; no read or write since (no purge ran)
    assert _rows(path, "SELECT tenant, id FROM responses ORDER BY id") == [("acme", "resp_1"), ("globex", "resp_2")]
    assert store.delete("globex", "resp_1") is False  # another tenant's id: untouched
    assert _rows(path, "SELECT id FROM responses WHERE id = 'resp_1'") == [("resp_1",)]
    assert store.delete("acme", "resp_1") is False  # expired: "not found", as a read of it answers ...
    assert _rows(path, "SELECT id FROM responses ORDER BY id") == [("resp_2",)]  # ... and gone from the file
    store.close()


def test_deleting_an_expired_conversation_removes_it_and_its_items(tmp_path) -> None:
    path = tmp_path / "store.sqlite3"
    clock = Clock()
    store = ResponseStore(path, conversation_ttl_s=100, now=clock)
    store.create_conversation("acme", "conv_1", {}, [_msg(1, "acme secret"), _msg(2)])
    store.create_conversation("globex", "conv_1", {}, [_msg(1, "globex's")])
    clock.t += 101
    assert store.delete_conversation("acme", "conv_1") is False  # expired: "not found", but deleted
    assert _rows(path, "SELECT tenant FROM conversations") == [("globex",)]
    assert _rows(path, "SELECT tenant, id FROM conversation_items") == [("globex", "msg_1")]
    store.close()


def test_opening_the_store_purges_what_expired_while_it_was_closed(tmp_path) -> None:
    path = tmp_path / "store.sqlite3"
    clock = Clock()
    store = ResponseStore(path, ttl_s=60, conversation_ttl_s=100, now=clock)
    store.put("acme", "resp_old", TURNS)
    store.create_conversation("acme", "conv_old", {}, [_msg(1)])
    clock.t += 50
    store.put("acme", "resp_new", TURNS)  # created at 1050: alive until 1110
    store.create_conversation("acme", "conv_new", {}, [_msg(1)])
    store.close()
    clock.t = 1_101.0  # resp_old (1000) past 60 s, conv_old (1000) past 100 s; the new ones are not
    assert len(_rows(path, "SELECT id FROM responses")) == 2  # the file still holds them while closed
    ResponseStore(path, ttl_s=60, conversation_ttl_s=100, now=clock).close()
    assert _rows(path, "SELECT id FROM responses") == [("resp_new",)]
    assert _rows(path, "SELECT id FROM conversations") == [("conv_new",)]
    assert _rows(path, "SELECT conversation FROM conversation_items") == [("conv_new",)]


def test_reads_purge_expired_rows_at_most_once_a_purge_period() -> None:
    clock = Clock()
    store = ResponseStore(ttl_s=60, conversation_ttl_s=100, now=clock)  # purged at open: next purge at 1060
    store.put("acme", "resp_1", TURNS)  # created at 1000
    store.create_conversation("acme", "conv_1", {}, [_msg(1)])  # used at 1000
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    purges = lambda: sum(s.startswith("DELETE FROM responses WHERE created <") for s in statements)  # noqa: E731
    for _ in range(50):  # reads inside the period: no purge, no scan
        clock.t += 1
        store.get("acme", "nothing")
    assert clock.t == 1_050.0 and purges() == 0
    clock.t = 1_000.0 + PURGE_EVERY_S + 1  # 1061: resp_1 expired (1000 < 1001), conv_1 not (1000 >= 961)
    assert store.get("acme", "nothing") is None
    assert purges() == 1
    assert store._db.execute("SELECT count(*) FROM responses").fetchone()[0] == 0
    assert store._db.execute("SELECT count(*) FROM conversations").fetchone()[0] == 1
    for _ in range(30):
        clock.t += 1
        store.conversation("acme", "conv_1")
    assert purges() == 1  # 1091 < 1121: still the one purge
    clock.t = 1_122.0  # next purge due at 1121; conv_1 (used 1000) expired at 1100
    assert store.conversation("acme", "conv_1") is None
    assert purges() == 2
    assert store._db.execute("SELECT count(*) FROM conversation_items").fetchone()[0] == 0
    store.close()


def test_a_purge_the_database_refuses_does_not_fail_the_read(tmp_path) -> None:
    path = tmp_path / "store.sqlite3"
    clock = Clock()
    store = ResponseStore(path, ttl_s=60, now=clock)
    store.put("acme", "resp_1", TURNS)
    blocker = sqlite3.connect(path, timeout=0, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another worker holds the write lock past the store's wait
    try:
        clock.t += PURGE_EVERY_S + 1
        assert store.get("acme", "resp_1") is None  # expired: not found; the purge is tried again later
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    clock.t += PURGE_EVERY_S
    store.get("acme", "nothing")
    assert _rows(path, "SELECT id FROM responses") == []
    store.close()


@pytest.fixture
def gw(standin, tmp_path):
    with routed_gateway(standin, tmp_path / "keys.json", responses_ttl_s=60, conversations_ttl_s=100,
                        responses_store_path=str(tmp_path / "store.sqlite3")) as gw:
        yield gw


def test_the_delete_routes_remove_an_expired_response_and_conversation(gw, tmp_path) -> None:
    path = tmp_path / "store.sqlite3"
    clock = Clock()
    gw.stored_responses._now = clock
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{gw.port}/v1", api_key="unused", max_retries=0,
                           default_headers={**ROUTES["anthropic"], "x-costline-tenant": "acme"})
    gw.stored_responses.put("acme", "resp_1", TURNS)
    conv = client.conversations.create(items=[{"type": "message", "role": "user", "content": "acme secret"}])
    clock.t += 101  # both expired
    with pytest.raises(openai.NotFoundError):
        client.responses.delete("resp_1")
    with pytest.raises(openai.NotFoundError):
        client.conversations.delete(conv.id)
    assert _rows(path, "SELECT id FROM responses") == []
    assert _rows(path, "SELECT id FROM conversations") == []
    assert _rows(path, "SELECT id FROM conversation_items") == []
    live = client.conversations.create(items=[])  # a live one still answers deleted: true
    assert client.conversations.delete(live.id).deleted is True
    other = httpx.delete(f"http://127.0.0.1:{gw.port}/v1/conversations/{live.id}",
                         headers={**ROUTES["anthropic"], "x-costline-tenant": "acme"})
    assert other.status_code == 404
