"""State a caller can make the gateway hold is bounded: a request's ``x-costline-doc-hashes`` (refused past 64 hashes
or 128 characters a hash, on every route, never cut short) and the semantic cache's own stores; conversations'
metadata counted in the response store's byte bounds; the rate limiter's buckets (a flood of new names never gives
a throttled one its burst back). Expected values are worked out by hand in the comments."""

from __future__ import annotations

import hashlib
import http.client
import json
import sqlite3

import numpy as np
import pytest
from gateways import routed_gateway

from costline.serving.errors import CacheError
from costline.serving.gateway.auth import RateLimiter
from costline.serving.gateway.response_store import ResponseStore, StoreFull

# -- x-costline-doc-hashes: the header ------------------------------------------------------------------------

H = "x-costline-doc-hashes"


@pytest.mark.parametrize("lines, expected", [
    (["a, b ,,c"], ("a", "b", "c")),                               # blanks dropped, spaces stripped
    ([",".join(f"h{i}" for i in range(64))], tuple(f"h{i}" for i in range(64))),  # 64: the most
    (["x" * 128], ("x" * 128,)),                                   # 128 characters: the longest
    (["a,b", "c"], ("a", "b", "c")),                               # every line of the header counts
])
def test_doc_hashes_within_the_bound_are_taken_whole(lines, expected) -> None:
    from costline.serving.gateway.app import doc_hashes_of

    assert doc_hashes_of(lines, H) == expected


@pytest.mark.parametrize("lines, says", [
    ([",".join(f"h{i}" for i in range(65))], "65 document hashes, more than the 64"),
    ([",".join(f"h{i}" for i in range(3000))], "3000 document hashes, more than the 64"),
    ([",".join(f"h{i}" for i in range(40)), ",".join(f"g{i}" for i in range(40))], "80 document hashes"),  # 40 + 40
    (["ok," + "x" * 129], "129 characters, longer than the 128"),
])
def test_doc_hashes_past_the_bound_are_refused_with_what_to_do(lines, says) -> None:
    from costline.serving.gateway.app import doc_hashes_of

    problem = doc_hashes_of(lines, H)
    assert isinstance(problem, str) and problem.startswith(f"{H}: ") and says in problem
    assert "hash of its own" in problem or "digest" in problem  # what to do instead


class RecordingCache:
    """An exact-text cache that records the doc hashes of every store."""

    def __init__(self) -> None:
        self.stores: list[tuple[str, tuple[str, ...]]] = []

    def lookup(self, query, *, tenant, namespace=None):
        return None

    def store(self, query, answer, *, tenant, namespace=None, doc_hashes=()):
        self.stores.append((query, tuple(doc_hashes)))


@pytest.fixture(scope="module")
def cache() -> RecordingCache:
    return RecordingCache()


@pytest.fixture(scope="module")
def gw(standin, tmp_path_factory, cache):
    # int(0.004 * 2**20) = int(4194.304) = 4194 bytes a tenant for the conversations below
    with routed_gateway(standin, tmp_path_factory.mktemp("keys") / "keys.json", cache=cache,
                        responses_tenant_max_mib=0.004, responses_total_max_mib=1.0) as gw:
        yield gw


def _post(gw, path: str, body: dict, headers: list[tuple[str, str]]) -> tuple[int, dict, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    try:
        conn.putrequest("POST", path)
        for name, value in [("content-type", "application/json"), *headers]:
            conn.putheader(name, value)
        raw = json.dumps(body).encode()
        conn.putheader("content-length", str(len(raw)))
        conn.endheaders(raw)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


MSG = {"model": "claude-haiku-4-5", "max_tokens": 512, "messages": [{"role": "user", "content": "Where is my invoice?"}]}


def _anthropic(body: dict, headers: dict) -> str:
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    return body["error"]["message"]


def _openai(body: dict, headers: dict) -> str:
    assert body["error"]["type"] == "invalid_request_error" and "param" in body["error"]
    return body["error"]["message"]


def _bedrock(body: dict, headers: dict) -> str:
    assert headers["x-amzn-errortype"].startswith("ValidationException:")
    return body["message"]


@pytest.mark.parametrize("path, body, error", [
    ("/v1/messages", MSG, _anthropic),
    ("/v1/messages/batches", {"requests": [{"custom_id": "a", "params": MSG}]}, _anthropic),
    ("/v1/chat/completions", {"model": "gpt-4o", "messages": [{"role": "user", "content": "Where is my invoice?"}]},
     _openai),
    ("/v1/responses", {"model": "gpt-4o", "input": "Where is my invoice?"}, _openai),
    ("/v1/batches", {"input_file_id": "file-abc", "endpoint": "/v1/chat/completions", "completion_window": "24h"},
     _openai),
    ("/model/anthropic.claude-3-haiku-20240307-v1:0/invoke",
     {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 20, "messages": MSG["messages"]}, _bedrock),
    ("/model/anthropic.claude-3-haiku-20240307-v1:0/converse",
     {"messages": [{"role": "user", "content": [{"text": "Where is my invoice?"}]}]}, _bedrock),
])
def test_every_route_refuses_65_doc_hashes_in_its_own_error_format(gw, cache, path, body, error) -> None:
    before = len(cache.stores)
    status, headers, answer = _post(gw, path, body, [(H, ",".join(f"doc-{i}" for i in range(65)))])
    assert status == 400
    assert "65 document hashes, more than the 64" in error(answer, headers)
    assert len(cache.stores) == before  # nothing answered, nothing stored


def _call(gw, method: str, path: str, body: dict | None, headers: list[tuple[str, str]]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    try:
        raw = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=raw, headers=dict([("content-type", "application/json"), *headers]))
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


@pytest.mark.parametrize("method, path, body", [
    ("GET", "/v1/models", None),
    ("POST", "/v1/messages/count_tokens", {k: v for k, v in MSG.items() if k != "max_tokens"}),
    ("GET", "/v1/messages/batches/msgbatch_x/results", None),
    ("DELETE", "/v1/conversations/conv_x", None),
    ("POST", "/v1/conversations", {"items": []}),
])
def test_a_request_that_stores_nothing_is_not_refused_for_its_doc_hashes(gw, method, path, body) -> None:
    """An SDK may send the header by default on every call: where nothing is stored it means nothing (before:
    400 on listing models, counting tokens, batch results, deleting a conversation)."""
    many = [(H, ",".join(f"doc-{i}" for i in range(65)))]
    assert _call(gw, method, path, body, many) == _call(gw, method, path, body, [])
    assert _call(gw, method, path, body, many) != 400


def test_a_long_doc_hash_is_refused_and_64_are_stored_whole(gw, cache) -> None:
    status, _, answer = _post(gw, "/v1/messages", MSG, [(H, "x" * 129)])
    assert status == 400 and "129 characters, longer than the 128" in answer["error"]["message"]
    hashes = [hashlib.sha512(str(i).encode()).hexdigest() for i in range(64)]  # 128 hex characters each
    status, _, _ = _post(gw, "/v1/messages", {**MSG, "messages": [{"role": "user", "content": "All 64 of them?"}]},
                         [(H, ",".join(hashes[:32])), (H, ",".join(hashes[32:]))])  # two lines of the header
    assert status == 200
    assert cache.stores[-1] == ("All 64 of them?", tuple(hashes))  # every line's, none left out


def test_a_handler_called_without_the_head_check_refuses_too(gw) -> None:
    from costline.serving.gateway._http import HttpRequest

    raw = (("host", f"127.0.0.1:{gw.port}"), ("content-type", "application/json"),
           (H, ",".join(f"doc-{i}" for i in range(65))))
    answer = gw._messages(HttpRequest("POST", "/v1/messages", dict(raw), json.dumps(MSG).encode(), raw_headers=raw))
    assert answer.status == 400 and "65 document hashes" in answer.body["error"]["message"]


# -- the semantic cache refuses such a store itself (the Python API) ------------------------------------------

class FakeEmbedder:
    dim = 16
    model_name = "fake"

    def encode(self, texts):
        rows = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
            v = np.random.default_rng(seed).normal(size=self.dim).astype(np.float32)
            rows.append(v / np.linalg.norm(v))
        return np.stack(rows)


def _semantic_cache():
    pytest.importorskip("faiss")
    from costline.serving.cache.semantic import SemanticCache
    from costline.serving.settings import CacheConfig

    return SemanticCache(FakeEmbedder(), CacheConfig(mode="threshold"))


@pytest.mark.parametrize("docs, says", [
    ([f"d{i}" for i in range(65)], "more than 64 doc hashes"),
    ((f"d{i}" for i in range(10_000)), "more than 64 doc hashes"),  # an iterable: read no further than 65
])
def test_the_semantic_cache_refuses_a_store_past_the_bound(docs, says) -> None:
    cache = _semantic_cache()
    with pytest.raises(CacheError, match=says) as raised:
        cache.store("how do I cancel my plan?", "Settings > Plan.", tenant="acme", doc_hashes=docs)
    assert isinstance(raised.value, ValueError)  # what callers of the cache (replication) skip as invalid
    assert len(cache) == 0 and cache.lookup("how do I cancel my plan?", tenant="acme") is None


def test_the_semantic_cache_keeps_64_hashes_whole_and_refuses_a_batch_with_one_over() -> None:
    cache = _semantic_cache()
    docs = [hashlib.sha512(str(i).encode()).hexdigest() for i in range(64)]
    entry = cache.store("how do I cancel my plan?", "Settings > Plan.", tenant="acme", doc_hashes=docs)
    assert entry >= 1 and cache.lookup("how do I cancel my plan?", tenant="acme").doc_hashes == tuple(docs)
    assert cache.invalidate_by_doc(docs[63]) == 1  # the last one invalidates it: none was left out
    vectors = FakeEmbedder().encode(["one?", "two?"])
    with pytest.raises(CacheError):
        cache.store_vectors(vectors, ["1", "2"], tenant="acme", queries=["one?", "two?"],
                            doc_hashes=[["a"], [f"d{i}" for i in range(65)]])
    assert len(cache) == 0  # neither of the batch


# -- conversations' metadata in the response store's byte bounds ----------------------------------------------

# json.dumps({"k": "é" * 500}, ensure_ascii=False): '{"k": "' (7) + 500 x 2 bytes + '"}' (2) = 1009 bytes
META = {"k": "é" * 500}
META_BYTES = 1009


@pytest.mark.parametrize("tenant_max, total_max, creates, kept", [
    (5000, 10_000, [("acme", 5)], [("acme", 4)]),                 # 4 x 1009 = 4036 <= 5000; 5045 > 5000
    (5000, 6000, [("acme", 4), ("globex", 2)], [("acme", 4), ("globex", 1)]),  # 5045 <= 6000; 6054 > 6000
    (1008, 10_000, [("acme", 1)], [("acme", 0)]),                 # one alone is over a tenant's 1008
])
def test_conversations_metadata_counts_in_the_byte_bounds(tenant_max, total_max, creates, kept) -> None:
    store = ResponseStore(tenant_max_bytes=tenant_max, total_max_bytes=total_max)
    made = {}
    for tenant, n in creates:
        made[tenant] = 0
        for i in range(n):
            try:
                store.create_conversation(tenant, f"conv_{i}", META, [])
                made[tenant] += 1
            except StoreFull as full:
                assert "responses_tenant_max_mib" in str(full) and "delete conversations" in str(full)
    assert list(made.items()) == kept


def test_metadata_leaves_less_room_for_items_and_a_delete_gives_it_back() -> None:
    store = ResponseStore(tenant_max_bytes=5000, total_max_bytes=10_000)
    store.create_conversation("acme", "conv_1", META, [])
    assert store.conversation_room("acme") == 5000 - META_BYTES  # 3991
    store.create_conversation("acme", "conv_2", {}, [])  # '{}': 2 bytes
    assert store.conversation_room("acme") == 5000 - META_BYTES - 2  # 3989
    assert store.delete_conversation("acme", "conv_1")
    assert store.conversation_room("acme") == 5000 - 2


def test_an_expired_conversations_metadata_is_room_again() -> None:
    clock = [1000.0]
    store = ResponseStore(tenant_max_bytes=5000, total_max_bytes=10_000, conversation_ttl_s=100,
                          now=lambda: clock[0])
    store.create_conversation("acme", "conv_1", META, [])
    assert store.conversation_room("acme") == 5000 - META_BYTES
    clock[0] += 101
    store.create_conversation("globex", "conv_2", {}, [])  # a write: the expired conversation goes
    assert store.conversation_room("acme") == 5000


@pytest.mark.parametrize("first, second, refused, room", [
    # tenant bound 2000; two conversations at '{}' (2 bytes each): 4 used
    (META, META, True, 989),                 # 1011 used, then growth 1007 > 2000 - 1011 = 989: refused; at the
                                             # end conv_1 '{}' 2 + conv_2 1009 = 1011 used: 989 left
    (META, {"k": "é" * 491}, False, 0),      # 7 + 982 + 2 = 991 bytes: growth 989 <= 989: taken, 2000 used
    ({}, META, False, 989),                  # nothing grew first: growth 1007 <= 1996; 2 + 1009 used
])
def test_an_update_that_grows_metadata_counts_the_growth(first, second, refused, room) -> None:
    store = ResponseStore(tenant_max_bytes=2000, total_max_bytes=10_000)
    store.create_conversation("acme", "conv_1", {}, [])
    store.create_conversation("acme", "conv_2", {}, [])
    assert store.update_conversation("acme", "conv_1", first)
    if refused:
        with pytest.raises(StoreFull):
            store.update_conversation("acme", "conv_2", second)
        assert store.conversation("acme", "conv_2")["metadata"] == {}  # nothing changed
        assert store.update_conversation("acme", "conv_1", {})  # shrinking is always taken
        assert store.update_conversation("acme", "conv_2", second)  # and makes room
    else:
        assert store.update_conversation("acme", "conv_2", second)
        assert store.conversation("acme", "conv_2")["metadata"] == second
    assert store.conversation_room("acme") == room


#: The conversation tables of a store file made before metadata was counted (response_store.py as it was).
OLD_SCHEMA = (
    "CREATE TABLE conversations (tenant TEXT NOT NULL, id TEXT NOT NULL, created REAL NOT NULL, "
    "used REAL NOT NULL, metadata TEXT NOT NULL, busy_until REAL NOT NULL DEFAULT 0, PRIMARY KEY (tenant, id))",
    "CREATE INDEX conversations_by_use ON conversations (used)",
    "CREATE TABLE conversation_items (tenant TEXT NOT NULL, conversation TEXT NOT NULL, "
    "seq INTEGER NOT NULL, id TEXT NOT NULL, size INTEGER NOT NULL, item TEXT NOT NULL, "
    "PRIMARY KEY (tenant, conversation, seq))",
    "CREATE TABLE conversation_bytes (one INTEGER PRIMARY KEY CHECK (one = 1), bytes INTEGER NOT NULL)",
    "INSERT INTO conversation_bytes VALUES (1, 0)",
    "CREATE TRIGGER conversation_items_added AFTER INSERT ON conversation_items "
    "BEGIN UPDATE conversation_bytes SET bytes = bytes + NEW.size; END",
    "CREATE TRIGGER conversation_items_dropped AFTER DELETE ON conversation_items "
    "BEGIN UPDATE conversation_bytes SET bytes = bytes - OLD.size; END",
)


def test_a_store_file_made_before_counts_its_conversations_metadata_once(tmp_path) -> None:
    path = tmp_path / "responses.sqlite3"
    db = sqlite3.connect(path)
    for statement in OLD_SCHEMA:
        db.execute(statement)
    db.execute("INSERT INTO conversations VALUES ('acme', 'conv_1', 1e12, 1e12, ?, 0)",
               (json.dumps(META, ensure_ascii=False),))
    db.execute("INSERT INTO conversation_items VALUES ('acme', 'conv_1', 1, 'msg_1', 50, '{}')")
    db.commit()
    db.close()
    for _ in range(2):  # a second opening (another worker, a restart) counts nothing twice
        store = ResponseStore(path, tenant_max_bytes=10_000, total_max_bytes=3000, now=lambda: 1e12)
        # min(10000 - (50 + 1009), 3000 - (50 + 1009)) = min(8941, 1941)
        assert store.conversation_room("acme") == 1941
        assert store.conversation_room("globex") == 1941  # everyone's bound holds the metadata too
        store.close()


def test_the_conversations_api_refuses_metadata_past_the_tenants_bytes(gw) -> None:
    tenant = [("x-costline-tenant", "meta-bound")]
    made = [_post(gw, "/v1/conversations", {"metadata": META}, tenant) for _ in range(5)]
    assert [status for status, _, _ in made] == [200, 200, 200, 200, 400]  # 4036 <= 4194 < 5045
    assert "responses_tenant_max_mib" in made[4][2]["error"]["message"]
    status, _, small = _post(gw, "/v1/conversations", {}, tenant)  # '{}': 2 bytes, 4194 - 4038 = 156 left
    assert status == 200
    status, _, answer = _post(gw, f"/v1/conversations/{small['id']}", {"metadata": {"k": "é" * 100}}, tenant)
    assert status == 400 and answer["error"]["type"] == "invalid_request_error"  # 209 bytes: growth 207 > 156
    status, _, answer = _post(gw, f"/v1/conversations/{small['id']}", {"metadata": {"k": "é" * 70}}, tenant)
    assert status == 200 and answer["metadata"] == {"k": "é" * 70}  # 149 bytes: growth 147 <= 156


# -- the rate limiter's buckets -------------------------------------------------------------------------------

def test_a_throttled_name_stays_throttled_after_100000_new_names_at_the_same_instant() -> None:
    limiter = RateLimiter(60, 5, now=lambda: 0.0)  # 1 a second, bursts of 5; 100,000 buckets at most
    assert [limiter.take("tenant:throttled") for _ in range(6)] == [0.0] * 5 + [1.0]  # the 6th waits (1 - 0) / 1
    for i in range(100_000):
        limiter.take(f"tenant:flood-{i}")
    assert [limiter.take("tenant:throttled") for _ in range(3)] == [1.0, 1.0, 1.0]
    assert len(limiter._buckets) <= 100_000


@pytest.mark.parametrize("steps, expected", [
    # max 2 buckets, 1 token a second, bursts of 2. A owes (0 tokens at t=0); B took 1 at t=0 and is full at t=1,
    # A has 1 then: the new C takes B's place (full: forgetting it changes nothing), not A's, the least recently used
    ([(0, "A"), (0, "A"), (0, "A"), (0, "B"), (1, "C"), (1, "A"), (1, "A")],
     [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]),
    # none full: the one nearest full goes (B, 1 token, before A's 0), so A still owes; B comes back fresh
    ([(0, "A"), (0, "A"), (0, "A"), (0, "B"), (0, "C"), (0, "A"), (0, "B"), (0, "B"), (0, "B")],
     [0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0]),
    # A, full again at t=2, goes for C; B, which spent its burst at t=0 and 1 token at t=2, keeps its 1 token
    ([(0, "A"), (0, "B"), (0, "B"), (2, "B"), (2, "C"), (2, "B"), (2, "B")],
     [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]),
])
def test_a_full_limiter_forgets_a_refilled_bucket_first(steps, expected) -> None:
    clock = [0.0]
    limiter = RateLimiter(60, 2, now=lambda: clock[0], max_buckets=2)
    got = []
    for t, name in steps:
        clock[0] = float(t)
        got.append(limiter.take(name))
    assert got == expected
    assert len(limiter._buckets) <= 2
