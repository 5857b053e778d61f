"""Three cache replicas in three processes sharing one topic on a real broker, each with real
FAISS and the packaged MiniLM (on ONNX Runtime, as the gateway runs it): a store on A is served by B and C, an invalidation on A stops
their hits, a replica killed (SIGKILL) and restarted comes back warm from its snapshot plus the
topic, and hostile records on the topic are skipped while the replicas keep applying.

Each replica is a small ``python -c`` harness (HARNESS) driven over stdin/stdout, one JSON
command a line. Waits for propagation are bounded polls, never assertions on time.
"""

from __future__ import annotations

import base64
import contextlib
import json
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from costline.config import KafkaConfig

pytestmark = pytest.mark.kafka

WAIT_S = 60.0  # bound on a propagation wait (the machine is shared and slow); not a time assertion
CALL_S = 180.0  # bound on one harness command
START_S = 600.0  # bound on a start: loading MiniLM (exporting it, on a clean cache), three at once, on a loaded machine

HARNESS = r'''
import dataclasses, json, logging, sys
from pathlib import Path
logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
from costline.serving.cache.semantic import SemanticCache
from costline.serving.embedding_onnx import make_embedder
from costline.serving.settings import CacheConfig

args = json.loads(sys.argv[1])
cfg = CacheConfig(ttl_s=0, replication_topic=args["topic"], replication_bootstrap_servers=args["bootstrap"],
                  replica_id=args["name"], path=Path(args["path"]), replication_snapshot_interval_s=0)
cache = SemanticCache(make_embedder(cfg), cfg)  # as `costline serve` builds it: ONNX Runtime, no PyTorch
cache.embedder.encode(["warm the model up"])
cache.start()

def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()

out({"started": True})
for line in sys.stdin:
    cmd = json.loads(line)
    op = cmd.pop("op")
    if op == "store":
        r = {"id": cache.store(cmd["q"], cmd["a"], tenant=cmd["tenant"], namespace=cmd["ns"],
                               doc_hashes=cmd.get("docs", []))}
    elif op == "lookup":
        hit = cache.lookup(cmd["q"], tenant=cmd["tenant"], namespace=cmd["ns"])
        r = {"answer": None if hit is None else hit.answer}
    elif op == "invalidate_doc":
        r = {"removed": cache.invalidate_by_doc(cmd["doc"])}
    elif op == "flush":
        r = {"ok": cache.force_flush(cmd["timeout"])}
    elif op == "save":
        r = {"ok": cache.replication.save_snapshot()}
    elif op == "ready":
        r = {"ready": cache.replication.wait_ready(cmd["timeout"])}
    elif op == "stats":
        r = dataclasses.asdict(cache.replication.stats()) | {"entries": len(cache)}
    elif op == "quit":
        cache.shutdown()
        out({"ok": True})
        break
    else:
        r = {"error": f"unknown op {op}"}
    out(r)
'''


class Replica:
    """One harness process."""

    def __init__(self, name: str, topic: str, kafka: KafkaConfig, root: Path) -> None:
        self.name = name
        args = {"topic": topic, "bootstrap": kafka.bootstrap, "name": name, "path": str(root / name)}
        self.log = root / f"{name}.log"
        self.proc = subprocess.Popen([sys.executable, "-c", HARNESS, json.dumps(args)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=open(self.log, "ab"), text=True)
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def wait_started(self) -> "Replica":
        assert self._next(START_S) == {"started": True}
        return self

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)

    def _next(self, timeout: float = CALL_S) -> Any:
        try:
            return json.loads(self._lines.get(timeout=timeout))
        except queue.Empty:
            raise AssertionError(f"replica {self.name} did not answer; its log:\n{self.log.read_text()[-3000:]}") from None

    def call(self, op: str, **kw: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.poll() is None, f"replica {self.name} is not running"
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        return self._next()

    def lookup(self, q: str, tenant: str = "acme", ns: str = "billing") -> str | None:
        return self.call("lookup", q=q, tenant=tenant, ns=ns)["answer"]

    def store(self, q: str, a: str, docs: list[str], tenant: str = "acme", ns: str = "billing") -> None:
        self.call("store", q=q, a=a, tenant=tenant, ns=ns, docs=docs)

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL: no shutdown, no snapshot at exit
        self.proc.wait(30)

    def ask_to_quit(self) -> None:
        """Send ``quit`` without waiting: the fixture stops the three side by side."""
        if self.proc.poll() is None and self.proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):  # it exited since the poll: nothing left to stop
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.flush()


def wait_for(what: Callable[[], bool], timeout: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(0.1)
    return what()


@pytest.fixture(scope="module")
def trio(kafka: KafkaConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("replicas")
    topic = f"cache-replicas-{uuid.uuid4().hex[:8]}"
    replicas = {name: Replica(name, topic, kafka, root) for name in ("A", "B", "C")}  # started side by side
    world = {"topic": topic, "root": root, "kafka": kafka, **replicas}
    try:
        for r in replicas.values():
            assert r.wait_started().call("ready", timeout=WAIT_S)["ready"]
        yield world
    finally:
        for name in ("A", "B", "C"):
            world[name].ask_to_quit()
        for name in ("A", "B", "C"):
            world[name].proc.wait(60)


Q1 = "How do I cancel my subscription?"
Q2 = "What is the refund policy for annual plans?"


def test_a_store_on_a_is_served_by_b_and_c_in_its_tenant_only(trio: dict[str, Any]) -> None:
    a, b, c = trio["A"], trio["B"], trio["C"]
    assert b.lookup(Q1) is None
    a.store(Q1, "Settings > Billing > Cancel.", docs=["doc-cancel"])
    for r in (b, c):
        assert wait_for(lambda r=r: r.lookup(Q1) == "Settings > Billing > Cancel."), r.name
        assert r.lookup(Q1, tenant="globex") is None  # another tenant never sees it
        assert r.lookup(Q1, ns="support") is None  # nor another namespace
    assert a.call("stats")["entries"] == 1  # A read its own store back without adding it again


def test_an_invalidation_on_a_stops_hits_on_b_and_c(trio: dict[str, Any]) -> None:
    a, b, c = trio["A"], trio["B"], trio["C"]
    a.store(Q2, "Refunds within 30 days.", docs=["doc-refunds-v1"])
    for r in (b, c):
        assert wait_for(lambda r=r: r.lookup(Q2) == "Refunds within 30 days."), r.name
    assert a.call("invalidate_doc", doc="doc-refunds-v1")["removed"] == 1
    assert a.lookup(Q2) is None
    for r in (b, c):
        assert wait_for(lambda r=r: r.lookup(Q2) is None), r.name
    assert b.lookup(Q1) == "Settings > Billing > Cancel."  # other documents' entries stay


def test_a_killed_replica_restarts_warm_from_its_snapshot_and_the_topic(trio: dict[str, Any]) -> None:
    a, c = trio["A"], trio["C"]
    q_doomed, q_after = "Which currencies can I pay in?", "How do I add a teammate to my workspace?"
    a.store(q_doomed, "USD and EUR.", docs=["doc-currencies"])
    assert wait_for(lambda: c.lookup(q_doomed) == "USD and EUR.")
    assert c.call("save")["ok"]  # the snapshot: Q1 and q_doomed, with the offset it covers
    c.kill()
    a.store(q_after, "Invite them from Members.", docs=["doc-members"])  # only on the topic
    a.call("invalidate_doc", doc="doc-currencies")  # removes an entry of C's snapshot
    assert a.call("flush", timeout=WAIT_S)["ok"]
    c = trio["C"] = Replica("C", trio["topic"], trio["kafka"], trio["root"]).wait_started()
    assert c.call("ready", timeout=WAIT_S)["ready"]
    stats = c.call("stats")
    assert stats["bootstrap_entries"] == 2 and stats["start_offset"] > 0  # warm from the snapshot...
    assert c.lookup(Q1) == "Settings > Billing > Cancel."
    assert c.lookup(q_after) == "Invite them from Members."  # ...plus the topic after it
    assert c.lookup(q_doomed) is None
    assert stats["skipped"] == 0


def test_hostile_records_are_skipped_and_the_replicas_keep_applying(trio: dict[str, Any]) -> None:
    from kafka import KafkaProducer

    a, b, c = trio["A"], trio["B"], trio["C"]
    before = {r.name: r.call("stats")["skipped"] for r in (b, c)}
    vec = base64.b64encode(np.ones(384, "<f4").tobytes()).decode()
    store = {"v": 1, "op": "store", "origin": "evil", "key": "evil:1", "tenant": "acme", "ns": "billing",
             "query": Q1, "answer": "POISON", "docs": [], "created_at": time.time(), "expires_at": None,
             "model": None, "vec": vec}
    hostile: list[tuple[bytes | None, bytes | None]] = [
        (b"e/evil:1", b"\xff\xfe not json"),
        (b"e/evil:2", json.dumps(store).encode()),  # the key does not match
        (b"e/evil:1", json.dumps({**store, "vec": base64.b64encode(b"\0" * 16).decode()}).encode()),  # 4 dims
        (b"e/evil:1", json.dumps({**store, "tenant": ""}).encode()),
        (b"e/evil:1", json.dumps({**store, "model": "some-other-model"}).encode()),
        (b"d/x", None),
        (b"e/evil:1", b"[" * 50_000),
    ]
    producer = KafkaProducer(bootstrap_servers=trio["kafka"].bootstrap)
    try:
        for key, value in hostile:  # (a record without a key the broker itself refuses on a compacted topic)
            producer.send(trio["topic"], key=key, value=value, partition=0).get(30)
    finally:
        producer.close()
    q_valid = "Can I change my billing email?"
    a.store(q_valid, "Yes, under Billing contacts.", docs=["doc-email"])
    for r in (b, c):
        assert wait_for(lambda r=r: r.lookup(q_valid) == "Yes, under Billing contacts."), r.name
        stats = r.call("stats")
        assert stats["skipped"] - before[r.name] == len(hostile), stats["skipped_by_reason"]
        assert r.lookup(Q1) == "Settings > Billing > Cancel."  # nothing poisoned
        assert r.proc.poll() is None
