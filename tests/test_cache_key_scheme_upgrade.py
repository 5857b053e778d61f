"""An upgrade that changes what a scope hash is made of never serves an old entry to the wrong request.

Until 2026-12-05 the scope hash left out the reasoning effort, ``frequency_penalty``, ``presence_penalty`` and
``logit_bias``: an old gateway's answer to an ``effort: "low"`` request sits under the hash a request *without* an
effort gets now. Snapshots and replicated stores carry the key scheme they were keyed under
(:data:`costline.serving.cache.key.KEY_SCHEME`); those of another scheme (or none) whose namespace carries a scope
are dropped on load and skipped on the topic. What an old gateway wrote is built here by hand, byte by byte as it
wrote it (its JSON, its FAISS index, its hash: sha256 of the sorted-key JSON of the scope document), never through
the current writer.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

from costline.serving.cache.key import scope_of_body  # noqa: E402
from costline.serving.cache.replication import RecordSkipped, decode_record, encode_change  # noqa: E402
from costline.serving.cache.semantic import SemanticCache  # noqa: E402
from costline.serving.errors import CacheCorruptError  # noqa: E402
from costline.serving.settings import CacheConfig  # noqa: E402

DIM = 8
T0 = 1_800_000_000.0
SEP = "\x1f"  # between a namespace and its scope hash
PLAIN = {"model": "claude-haiku-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "prove it"}]}
#: The fields the old scope hash left out (the current one hashes them).
CHANGED = [
    pytest.param({"output_config": {"effort": "low"}}, id="effort"),
    pytest.param({"frequency_penalty": 2.0}, id="frequency_penalty"),
    pytest.param({"presence_penalty": 1.5}, id="presence_penalty"),
    pytest.param({"logit_bias": {"50256": -100}}, id="logit_bias"),
]


def old_scope() -> str:
    """The old gateway's scope of ``PLAIN`` plus any of ``CHANGED`` (it left them out), computed by hand as it did."""
    doc = {"system": None, "earlier": [], "tools": None, "model": "claude-haiku-4-5", "params": {"max_tokens": 100}}
    raw = json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def config(**extra: Any) -> CacheConfig:
    return CacheConfig(mode="threshold", threshold=0.99, ttl_s=0, **extra)


def write_snapshot(root: Path, entries: list[tuple[str, str, int]], **manifest_extra: Any) -> None:
    """A snapshot as the cache store writes it: ``entries`` are (namespace, answer, vector seed) of tenant acme."""
    gen = root / "gen-000001"
    gen.mkdir(parents=True)
    files, partitions, rows = {}, [], []
    by_ns: dict[str, list[tuple[int, int]]] = {}
    for n, (namespace, answer, seed) in enumerate(entries, start=1):
        rows.append([n, "acme", namespace, f"question {seed}", answer, [], T0, None])
        by_ns.setdefault(namespace, []).append((n, seed))
    for p, (namespace, members) in enumerate(by_ns.items()):
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
        index.add_with_ids(np.stack([unit(s) for _, s in members]), np.array([i for i, _ in members], dtype=np.int64))
        data = faiss.serialize_index(index).tobytes()
        (gen / f"p{p}.faiss").write_bytes(data)
        files[f"p{p}.faiss"] = hashlib.sha256(data).hexdigest()
        partitions.append({"tenant": "acme", "namespace": namespace, "kind": "exact", "file": f"p{p}.faiss"})
    data = json.dumps(rows).encode("ascii")
    (gen / "entries.json").write_bytes(data)
    files["entries.json"] = hashlib.sha256(data).hexdigest()
    manifest = {"format": "costline-semantic-cache/1", "generation": 1, "dir": gen.name, "model": None, "dim": DIM,
                "index": "exact", "next_id": len(rows) + 1, "entries": len(rows), "partitions": partitions,
                "files": files, **manifest_extra}
    (root / "MANIFEST.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))


def load(root: Path) -> SemanticCache:
    return SemanticCache.load(root, None, config(), dim=DIM, now=lambda: T0 + 1)


def answer(cache: SemanticCache, seed: int, body: dict[str, Any] | None) -> str | None:
    namespace = "default" if body is None else f"default{SEP}{scope_of_body(body)}"
    hit = cache.lookup_vector(unit(seed), tenant="acme", namespace=namespace)
    return None if hit is None else hit.answer


# -- snapshots -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("changed", CHANGED)
def test_an_old_snapshots_scoped_entries_are_dropped_with_one_warning_and_its_bare_ones_stay(
        tmp_path: Path, changed: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    asked = {**PLAIN, **changed}
    assert scope_of_body(PLAIN) == old_scope() != scope_of_body(asked)  # the old entry sits where PLAIN looks now
    write_snapshot(tmp_path, [(f"default{SEP}{old_scope()}", "ANSWER TO THE CHANGED REQUEST", 1),
                              (f"default{SEP}{old_scope()}", "another old scoped answer", 2),
                              ("default", "a bare query's answer", 3)])
    with caplog.at_level(logging.WARNING, logger="costline.serving.cache.store"):
        cache = load(tmp_path)
    assert answer(cache, 1, PLAIN) is None  # was "ANSWER TO THE CHANGED REQUEST", for a request that never asked
    assert answer(cache, 1, asked) is None and answer(cache, 2, PLAIN) is None
    assert answer(cache, 3, None) == "a bare query's answer"  # no scope hash made its namespace
    assert len(cache) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "2 cached answers from an older key scheme dropped: they will be asked again" \
        in warnings[0], warnings


@pytest.mark.parametrize("changed", CHANGED)
def test_a_snapshot_of_this_key_scheme_keeps_and_serves_its_scoped_entries(tmp_path: Path,
                                                                          changed: dict[str, Any]) -> None:
    asked = {**PLAIN, **changed}
    saved = SemanticCache(None, config(), dim=DIM, now=lambda: T0)
    saved.store_vector(unit(1), "changed", tenant="acme", namespace=f"default{SEP}{scope_of_body(asked)}")
    saved.store_vector(unit(1), "plain", tenant="acme", namespace=f"default{SEP}{scope_of_body(PLAIN)}")
    saved.save(tmp_path / "by-save")
    manifest = json.loads((tmp_path / "by-save" / "MANIFEST.json").read_text())
    assert manifest["key_scheme"] == 2  # the scheme that hashes effort, the penalties and logit_bias
    cache = load(tmp_path / "by-save")
    assert (answer(cache, 1, asked), answer(cache, 1, PLAIN)) == ("changed", "plain")
    # the same, written by hand: a manifest naming scheme 2 loads as it is
    write_snapshot(tmp_path / "by-hand", [(f"default{SEP}{scope_of_body(asked)}", "changed", 1),
                                          (f"default{SEP}{scope_of_body(PLAIN)}", "plain", 1)], key_scheme=2)
    cache = load(tmp_path / "by-hand")
    assert (answer(cache, 1, asked), answer(cache, 1, PLAIN), len(cache)) == ("changed", "plain", 2)


@pytest.mark.parametrize("scheme", [1, 3])  # 3: a later version's, after a rollback
def test_a_snapshot_of_another_named_scheme_keeps_only_its_bare_entries(tmp_path: Path, scheme: int) -> None:
    write_snapshot(tmp_path, [(f"default{SEP}{scope_of_body(PLAIN)}", "scoped", 1), ("default", "bare", 2)],
                   key_scheme=scheme)
    cache = load(tmp_path)
    assert (answer(cache, 1, PLAIN), answer(cache, 2, None), len(cache)) == (None, "bare", 1)


@pytest.mark.parametrize("scheme", ["2", True, 0, 2.5, [2]])
def test_a_manifest_whose_key_scheme_is_not_a_positive_integer_is_refused_as_corrupt(tmp_path: Path,
                                                                                     scheme: Any) -> None:
    write_snapshot(tmp_path, [(f"default{SEP}{scope_of_body(PLAIN)}", "scoped", 1)], key_scheme=scheme)
    with pytest.raises(CacheCorruptError, match="key_scheme"):
        load(tmp_path)


# -- replication records ---------------------------------------------------------------------------------
def store_value(namespace: str, **extra: Any) -> bytes:
    """A store record's value as a replica writes it (an old one: without ``key_scheme``)."""
    body = {"v": 1, "op": "store", "origin": "old-replica", "key": "old-replica:1", "tenant": "acme", "ns": namespace,
            "query": "prove it", "answer": "ANSWER TO THE CHANGED REQUEST", "docs": [], "created_at": T0,
            "expires_at": None, "model": None,
            "vec": base64.b64encode(unit(1).astype("<f4").tobytes()).decode("ascii"), **extra}
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def decode(value: bytes | None, key: bytes = b"e/old-replica:1") -> Any:
    return decode_record(key, value, [], dim=DIM, model=None, secret=None)


def outcome(value: bytes | None, key: bytes = b"e/old-replica:1") -> str:
    try:
        return decode(value, key).op
    except RecordSkipped as skip:
        return skip.reason


@pytest.mark.parametrize("changed", CHANGED)
def test_an_old_replicas_scoped_store_is_skipped_and_its_other_records_still_decode(changed: dict[str, Any]) -> None:
    asked = {**PLAIN, **changed}
    assert scope_of_body(PLAIN) == old_scope() != scope_of_body(asked)
    old = f"default{SEP}{old_scope()}"  # its answer to ``asked``
    rows = [
        (store_value(old), b"e/old-replica:1", "old_key_scheme"),  # never applied
        (store_value(old, key_scheme=1), b"e/old-replica:1", "old_key_scheme"),
        (store_value(old, key_scheme=3), b"e/old-replica:1", "new_key_scheme"),  # a later version's hash
        (store_value(old, key_scheme="2"), b"e/old-replica:1", "bad_value"),
        (store_value(old, key_scheme=True), b"e/old-replica:1", "bad_value"),
        (store_value("default"), b"e/old-replica:1", "store"),  # a bare query's namespace: no hash made it
        (store_value(f"default{SEP}{scope_of_body(asked)}", key_scheme=2), b"e/old-replica:1", "store"),
        (None, b"e/old-replica:1", "remove"),  # removals and invalidations carry no scope: applied
        (b'{"v":1,"op":"invalidate_doc","origin":"old-replica","doc":"abc"}', b"d/abc", "invalidate_doc"),
        (b'{"v":1,"op":"invalidate_tenant","origin":"old-replica","tenant":"acme","at":1.0}', b"t/acme",
         "invalidate_tenant"),
    ]
    assert [outcome(value, key) for value, key, _ in rows] == [want for _, _, want in rows]


def test_a_store_record_names_this_key_scheme_and_stays_a_v1_record_old_replicas_read() -> None:
    from costline.serving.cache.replication import Change

    namespace = f"default{SEP}{scope_of_body({**PLAIN, 'output_config': {'effort': 'low'}})}"
    change = Change("store", key="new:1", origin="new", tenant="acme", namespace=namespace, query="q", answer="a",
                    created_at=T0, vector=unit(1))
    key, value, headers = encode_change(change, None)
    assert value is not None
    body = json.loads(value)
    # an old replica checks v == 1 and the fields it knows, and ignores the rest
    assert (body["v"], body["key_scheme"], body["ns"]) == (1, 2, namespace)
    assert decode_record(key, value, headers, dim=DIM, model=None, secret=None).namespace == namespace


def test_an_applier_counts_old_scheme_stores_as_skips_warns_once_and_serves_none_of_them(
        caplog: pytest.LogCaptureFixture) -> None:
    cache = SemanticCache(None, config(replication_topic="cache-upgrade",
                                       replication_bootstrap_servers="127.0.0.1:1",
                                       replication_snapshot_interval_s=0), dim=DIM, now=lambda: T0 + 1)
    assert cache.replication is not None
    old = f"default{SEP}{old_scope()}"
    records = [(b"e/old-replica:1", store_value(old)), (b"e/old-replica:2", store_value(old, key="old-replica:2")),
               (b"e/old-replica:3", store_value("default", key="old-replica:3"))]
    with caplog.at_level(logging.DEBUG, logger="costline.serving.cache.replication"):
        for offset, (key, value) in enumerate(records):
            cache.replication._apply(SimpleNamespace(key=key, value=value, headers=[], offset=offset))
    stats = cache.replication.stats()
    assert stats.skipped_by_reason == {"old_key_scheme": 2} and stats.applied == 1
    assert answer(cache, 1, PLAIN) is None and answer(cache, 1, None) == "ANSWER TO THE CHANGED REQUEST"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "old_key_scheme" in warnings[0], warnings


# -- the scheme pins the hash ----------------------------------------------------------------------------
def by_hand(params: dict[str, Any]) -> str:
    """The scope hash of ``PLAIN`` with these (canonical) generation parameters: sha256 of the sorted-key JSON."""
    doc = {"system": None, "earlier": [], "tools": None, "model": "claude-haiku-4-5", "params": params}
    raw = json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]


@pytest.mark.parametrize(("changed", "params"), [
    ({"output_config": {"effort": "low"}}, {"effort": "low", "max_tokens": 100}),
    ({"frequency_penalty": 2.0}, {"frequency_penalty": 2, "max_tokens": 100}),
    ({"presence_penalty": 1.5}, {"max_tokens": 100, "presence_penalty": 1.5}),
    ({"logit_bias": {"50256": -100}}, {"logit_bias": {"50256": -100}, "max_tokens": 100}),
    ({"temperature": 1.0, "frequency_penalty": 0}, {"max_tokens": 100}),  # the APIs' defaults: left out
])
def test_key_scheme_2_hashes_these_requests_so(changed: dict[str, Any], params: dict[str, Any]) -> None:
    """A failure here means what goes into a scope hash changed: bump ``KEY_SCHEME`` in serving/cache/key.py (so that
    saved and replicated entries of the old hashes are dropped, not served to other requests), then update this."""
    from costline.serving.cache import key

    assert (key.KEY_SCHEME, scope_of_body({**PLAIN, **changed})) == (2, by_hand(params))
