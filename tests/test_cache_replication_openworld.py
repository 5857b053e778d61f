"""Cache replication against the open world: damaged snapshot manifests at start, a cache topic deleted and
recreated under a stopped replica, two embedding models that share a folder name.

The manifest and model tests drive one replicator in this process (no broker; what a replica publishes is encoded
and applied as on the topic); the test marked ``kafka`` runs on a broker of this module's own, on which it deletes
and recreates a topic.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("faiss")

from costline.config import KafkaConfig  # noqa: E402
from costline.serving.cache.replication import encode_change  # noqa: E402
from costline.serving.cache.semantic import SemanticCache  # noqa: E402
from costline.serving.cache.store import load_cache  # noqa: E402
from costline.serving.errors import CacheCorruptError  # noqa: E402
from costline.serving.settings import CacheConfig  # noqa: E402
from test_cache_replication import unit, wait_for  # noqa: E402 - 8-dim unit vectors, a bounded wait (DIM 8 there too)

DIM = 8
T0 = 1_800_000_000.0
WAIT_S = 60.0  # a bound on waits for propagation, never an assertion on time
TOPIC = "cache-openworld"


def config(**extra: Any) -> CacheConfig:
    fields: dict[str, Any] = dict(mode="threshold", threshold=0.99, ttl_s=0, replication_topic=TOPIC,
                                  replication_bootstrap_servers="127.0.0.1:1", replication_snapshot_interval_s=0,
                                  replication_snapshot_max_age_s=3600)
    fields.update(extra)
    return CacheConfig(**fields)


def replica(embedder: Any = None, **extra: Any) -> SemanticCache:
    """A replicated cache never started (no broker): what it publishes waits in its queue."""
    return SemanticCache(embedder, config(**extra), dim=DIM, now=lambda: T0)


def answer(cache: SemanticCache, seed: int) -> str | None:
    found = cache.lookup_vector(unit(seed), tenant="acme", namespace="billing")
    return None if found is None else found.answer


# -- 3. damaged snapshot manifests --------------------------------------------------------------------------
def snapshot(path: Path, embedder: Any = None) -> dict[str, Any]:
    """Save a one-entry snapshot at offset 5 to ``path``; its manifest."""
    cache = replica(embedder)
    cache.store_vector(unit(1), "from the snapshot", tenant="acme", namespace="billing")
    assert cache.replication is not None
    cache.replication._offset = 5
    cache.save(path)
    return json.loads((path / "MANIFEST.json").read_text())


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], Any]:
    def change(m: dict[str, Any]) -> None:
        m[key] = value
    return change


def _partition(**fields: Any) -> Callable[[dict[str, Any]], Any]:
    def change(m: dict[str, Any]) -> None:
        for k, v in fields.items():
            if v is None:
                m["partitions"][0].pop(k)
            else:
                m["partitions"][0][k] = v
    return change


# each is valid JSON, made unloadable in a way the old checks let through as KeyError, AttributeError, ValueError,
# TypeError (or, for the file paths, reading outside the cache folder)
DAMAGED = {
    "partition without tenant": (_partition(tenant=None), "partition 0 has no 'tenant'"),
    "partition without file": (_partition(file=None), "partition 0 has no 'file'"),
    "partition of an unknown index kind": (_partition(kind="btree"), "index kind 'btree'"),
    "partition not an object": (_set("partitions", ["p0.faiss"]), "partition 0 is a str"),
    "files as a list": (lambda m: m.update(files=list(m["files"])), "'files' is a list"),
    "a digest not a string": (lambda m: m["files"].update({"entries.json": 7}), "'files' entry 'entries.json'"),
    "next_id not an int": (_set("next_id", "x"), "'next_id' 'x'"),
    "partitions null": (_set("partitions", None), "'partitions' is a NoneType"),
    "dir outside the folder": (_set("dir", "../elsewhere"), "'dir' '../elsewhere'"),
}


def damage(path: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    manifest = json.loads((path / "MANIFEST.json").read_text())
    change(manifest)
    (path / "MANIFEST.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_a_manifest_of_another_shape_is_refused_as_corrupt_naming_the_file_and_what_is_wrong(
        tmp_path: Path, case: str) -> None:
    path = tmp_path / "snap"
    snapshot(path)
    change, what = DAMAGED[case]
    damage(path, change)
    with pytest.raises(CacheCorruptError) as raised:
        load_cache(replica(), path)
    assert str(path / "MANIFEST.json") in str(raised.value) and what in str(raised.value)


@pytest.mark.parametrize("case", sorted(DAMAGED) + ["MANIFEST is a folder"])
def test_a_replica_whose_snapshot_is_damaged_starts_from_the_topics_beginning(
        tmp_path: Path, case: str, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "snap"
    snapshot(path)
    control = replica(path=path)  # the snapshot as saved is followed on from
    assert control.replication is not None and control.replication._bootstrap() == 5
    assert answer(control, 1) == "from the snapshot"
    if case == "MANIFEST is a folder":
        (path / "MANIFEST.json").unlink()
        (path / "MANIFEST.json").mkdir()
    else:
        damage(path, DAMAGED[case][0])
    fresh = replica(path=path)
    assert fresh.replication is not None
    with caplog.at_level(logging.WARNING, logger="costline.serving.cache.replication"):
        assert fresh.replication._bootstrap() == 0  # before the fix: KeyError, TypeError... out of start()
    assert len(fresh) == 0 and fresh.replication.stats().offset == 0
    assert any("not bootstrapping from the snapshot" in r.getMessage() for r in caplog.records)
    if case != "MANIFEST is a folder":  # unreadable, counted as dropped (a folder is no snapshot at all)
        assert fresh.replication.stats().snapshots_dropped == 1


def test_a_folder_named_like_the_manifest_is_replaced_by_the_next_save(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "snap"
    snapshot(path)
    (path / "MANIFEST.json").unlink()
    (path / "MANIFEST.json").mkdir()
    (path / "MANIFEST.json" / "stray").write_text("x")
    cache = replica()
    cache.store_vector(unit(2), "saved over the folder", tenant="acme", namespace="billing")
    with caplog.at_level(logging.WARNING, logger="costline.serving.cache.store"):
        cache.save(path)  # before the fix: IsADirectoryError, on this save and every later one
    assert (path / "MANIFEST.json").is_file()
    assert any("was a folder" in r.getMessage() for r in caplog.records)
    assert sorted(p.name for p in path.iterdir() if not p.name.startswith("gen-")) == ["MANIFEST.json"]
    loaded = replica()
    load_cache(loaded, path)
    assert answer(loaded, 2) == "saved over the folder"


# -- 2. two embedding models in folders of the same name ------------------------------------------------------
class FakeEmbedder:
    """An embedder of the model ``name`` whose files hash to ``fingerprint`` (None: one that cannot say, as an
    embedder before fingerprints were recorded)."""

    def __init__(self, name: str, fingerprint: str | None) -> None:
        self.model_name = name
        self.dim = DIM
        if fingerprint is not None:
            self.model_fingerprint = fingerprint

    def encode(self, texts: list[str]) -> np.ndarray:  # never called: the tests store and look up vectors
        raise AssertionError("not used")


V1, V2 = "1" * 64, "2" * 64  # /models/v1/encoder and /models/v2/encoder: both named "encoder", 8-dimensional


def deliver(sender: SemanticCache, receiver: SemanticCache) -> None:
    """Apply what ``sender`` queued for the topic to ``receiver``, as its consumer would."""
    from types import SimpleNamespace

    assert sender.replication is not None and receiver.replication is not None
    offset = 0
    while not sender.replication._queue.empty():
        change = sender.replication._queue.get_nowait()
        assert change is not None
        key, value, headers = encode_change(change, None)
        receiver.replication._apply(SimpleNamespace(key=key, value=value, headers=headers, offset=offset))
        offset += 1


STORES = [  # (sender's fingerprint, receiver's, applied)
    (V1, V2, False),  # same name and dim, other model files: its vectors mean nothing here
    (V1, V1, True),
    (None, V2, True),  # a record of a writer before fingerprints: compared by name alone (a rolling restart)
    (V1, None, True),  # a receiver that cannot fingerprint its model: by name alone
]


def test_a_store_embedded_by_other_model_files_of_the_same_name_is_skipped() -> None:
    for sender_fp, receiver_fp, applied in STORES:  # one table, so that it fails on the old code as a whole
        sender, receiver = replica(FakeEmbedder("encoder", sender_fp)), replica(FakeEmbedder("encoder", receiver_fp))
        sender.store_vector(unit(1), "embedded by the sender's model", tenant="acme", namespace="billing")
        deliver(sender, receiver)
        assert receiver.replication is not None
        stats = receiver.replication.stats()
        assert (answer(receiver, 1) is not None) is applied, (sender_fp, receiver_fp)
        assert stats.skipped_by_reason == ({} if applied else {"model_mismatch": 1}), (sender_fp, receiver_fp)


@pytest.mark.parametrize(("saved_fp", "loading_fp", "loads"), [
    (V1, V2, False),
    (V1, V1, True),
    (None, V2, True),  # a snapshot saved before fingerprints were recorded: by name alone
])
def test_a_snapshot_of_other_model_files_of_the_same_name_is_refused(
        tmp_path: Path, saved_fp: str | None, loading_fp: str, loads: bool) -> None:
    """(Each case checks first that the snapshot records the model's fingerprint beside its name.)"""
    path = tmp_path / "snap"
    manifest = snapshot(path, FakeEmbedder("encoder", V1))
    assert manifest["model"] == "encoder" and manifest["model_fingerprint"] == V1
    if saved_fp is None:
        manifest.pop("model_fingerprint")
        (path / "MANIFEST.json").write_text(json.dumps(manifest))
    cache = replica(FakeEmbedder("encoder", loading_fp))
    if loads:
        load_cache(cache, path)
        assert answer(cache, 1) == "from the snapshot"
    else:
        with pytest.raises(CacheCorruptError, match="other files of embedding model 'encoder'"):
            load_cache(cache, path)
        fresh = replica(FakeEmbedder("encoder", loading_fp), path=path)  # at start: dropped, read from the topic
        assert fresh.replication is not None and fresh.replication._bootstrap() == 0 and len(fresh) == 0


def test_an_embedders_fingerprint_tells_model_folders_of_the_same_name_apart(tmp_path: Path) -> None:
    from costline.serving.embedding import Embedder

    for version, weights in (("v1", b"weights one"), ("v2", b"weights two"), ("v1-copy", b"weights one")):
        folder = tmp_path / version / "encoder"
        folder.mkdir(parents=True)
        (folder / "config.json").write_text('{"hidden_size": 8}')
        (folder / "model.safetensors").write_bytes(weights)
        (folder / "README.md").write_text(f"the {version} encoder")  # not a model file: not hashed
    v1, v2, copy = (Embedder(tmp_path / v / "encoder") for v in ("v1", "v2", "v1-copy"))
    assert v1.model_name == v2.model_name == "encoder"
    assert v1.model_fingerprint != v2.model_fingerprint
    assert v1.model_fingerprint == copy.model_fingerprint  # the same files elsewhere: the same model
    import hashlib  # computed independently: the files' relative paths and bytes, sorted by path
    h = hashlib.sha256(b"costline-model-files/1\n")
    for name, data in (("config.json", b'{"hidden_size": 8}'), ("model.safetensors", b"weights one")):
        h.update(name.encode() + b"\0" + data)
    assert v1.model_fingerprint == h.hexdigest()


# -- 1. a cache topic deleted and created again under a stopped replica --------------------------------------------
def live_replica(kafka: KafkaConfig, topic: str, name: str, path: Path | None = None) -> SemanticCache:
    cfg = CacheConfig(mode="threshold", threshold=0.99, ttl_s=0, replication_topic=topic,
                      replication_bootstrap_servers=kafka.bootstrap, replica_id=name, path=path,
                      replication_snapshot_interval_s=0)
    cache = SemanticCache(None, cfg, dim=DIM)
    cache.start()
    assert cache.replication is not None and cache.replication.wait_ready(WAIT_S)
    return cache


class FakeConsumer:
    def __init__(self, begin: int, end: int) -> None:
        self.begin, self.end = begin, end

    def beginning_offsets(self, tps: list[Any]) -> dict[Any, int]:
        return {tp: self.begin for tp in tps}

    def end_offsets(self, tps: list[Any]) -> dict[Any, int]:
        return {tp: self.end for tp in tps}


OLD_ID, NEW_ID = "4c7702fc-5fe7-4060-b1a1-ad3ce8d3e1ba", "d86ac509-76a1-499b-be9b-011033837110"


@pytest.mark.parametrize(("saved_id", "kept"), [
    (NEW_ID, True),  # the topic it followed
    (OLD_ID, False),  # another topic of the same name, holding as many records: dropped, read from its beginning
    (None, True),  # a snapshot saved before topic ids were recorded: the offset checks alone (a rolling restart)
])
def test_a_snapshot_is_followed_on_only_on_the_topic_it_recorded(tmp_path: Path, saved_id: str | None,
                                                                  kept: bool) -> None:
    path = tmp_path / "snap"
    snapshot(path)
    manifest = json.loads((path / "MANIFEST.json").read_text())
    manifest["replication"].pop("topic_id", None)
    if saved_id is not None:
        manifest["replication"]["topic_id"] = saved_id
    (path / "MANIFEST.json").write_text(json.dumps(manifest))
    fresh = replica(path=path)
    r = fresh.replication
    assert r is not None and r._bootstrap() == 5
    r._live_topic_id = NEW_ID  # what the cluster describes at connect
    assert r._check_start(FakeConsumer(0, 9), "tp", 5) == (5 if kept else 0)
    assert (answer(fresh, 1) == "from the snapshot") is kept and r.stats().snapshots_dropped == int(not kept)
    assert r.snapshot_state()["topic_id"] == NEW_ID  # what the next snapshot records


@pytest.mark.kafka
def test_a_replica_restarted_on_a_recreated_topic_drops_its_snapshot_and_reads_the_new_topic_whole(
        kafka: KafkaConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from kafka.admin import KafkaAdminClient

    topic = f"cache-recreated-{uuid.uuid4().hex[:8]}"
    a, b = live_replica(kafka, topic, "a"), live_replica(kafka, topic, "b", tmp_path / "b")
    for seed in (1, 2, 3):
        a.store_vector(unit(seed), f"old topic {seed}", tenant="acme", namespace="billing", doc_hashes=[f"doc{seed}"])
    assert wait_for(lambda: answer(b, 3) == "old topic 3")
    b.shutdown()  # its snapshot covers offsets 0..2 of the old topic
    a.shutdown()
    saved = json.loads((tmp_path / "b" / "MANIFEST.json").read_text())["replication"]
    assert saved["offset"] == 3 and saved.get("topic_id")  # the snapshot names the topic it followed

    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    try:
        admin.delete_topics([topic])
        assert wait_for(lambda: topic not in set(admin.list_topics()))
        # created again (by a new replica), with at least as many records as the old snapshot's offset: the
        # invalidation of doc1 first, then four stores
        a2 = live_replica(kafka, topic, "a2")
        a2.invalidate_by_doc("doc1")
        for seed in (4, 5, 6, 7):
            a2.store_vector(unit(seed), f"new topic {seed}", tenant="acme", namespace="billing")
        assert a2.force_flush(WAIT_S)
        with caplog.at_level(logging.WARNING, logger="costline.serving.cache.replication"):
            b2 = live_replica(kafka, topic, "b", tmp_path / "b")
        try:
            assert wait_for(lambda: answer(b2, 7) == "new topic 7")
            assert answer(b2, 1) is None  # before the fix: served, its invalidation (offset 0) skipped
            assert answer(b2, 4) == "new topic 4"  # before the fix: offsets 0..2 of the new topic never read
            assert b2.replication is not None and b2.replication.stats().snapshots_dropped == 1
            assert any("deleted and created again" in r.getMessage() for r in caplog.records)
        finally:
            b2.shutdown()
            a2.shutdown()
        again = json.loads((tmp_path / "b" / "MANIFEST.json").read_text())["replication"]
        assert again["topic_id"] != saved["topic_id"]  # the next snapshot names the new topic
    finally:
        admin.close()
