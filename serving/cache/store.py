"""Saving and loading a :class:`~costline.serving.cache.semantic.SemanticCache`.

Layout of a saved cache folder::

    PATH/MANIFEST.json            names the current generation, with a SHA-256 per file
    PATH/gen-000007/entries.json  metadata of every entry, least recently used first
    PATH/gen-000007/invalidated.json  the invalidated doc hashes the cache still refuses, [hash, when]
    PATH/gen-000007/invalidated_tenants.json  the tenant invalidations replicated stores are checked against,
                                  [tenant, when]
    PATH/gen-000007/p0.faiss ...  one FAISS index per (tenant, namespace)

A save writes a new generation into a temporary folder, fsyncs every file and the
folder, renames it to ``gen-N``, then atomically replaces ``MANIFEST.json``
(``os.replace`` of an fsynced temporary file) and only then deletes older
generations. A crash at any point leaves ``MANIFEST.json`` naming either the old
complete generation or the new complete one; leftovers are removed by the next save.
A load checks the manifest's checksums, the embedding model and dimension, and that
index and metadata agree, and raises :class:`CacheCorruptError` rather than load a
cache that would answer wrong.

The manifest records the cache key scheme its entries were keyed under (``key_scheme``:
:data:`~costline.serving.cache.key.KEY_SCHEME`; none before schemes were recorded). A load under
another scheme drops every entry whose namespace carries a scope, with one warning giving how many
(their scope hashes would name other requests now); entries of a namespace without a scope stay.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from costline.fsutil import atomic_write, fsync_dir, synced_write
from costline.serving.cache.index import INDEX_KINDS, Partition
from costline.serving.cache.key import KEY_SCHEME, still_keyed
from costline.serving.errors import CacheCorruptError, CacheError

if TYPE_CHECKING:
    from costline.serving.cache.semantic import SemanticCache

__all__ = ["save_cache", "load_cache", "read_replication_state", "MANIFEST", "FORMAT"]

MANIFEST = "MANIFEST.json"
FORMAT = "costline-semantic-cache/1"
_ENTRIES = "entries.json"
_INVALIDATED = "invalidated.json"  # absent from snapshots saved before 2026-12-05: none remembered
_INVALIDATED_TENANTS = "invalidated_tenants.json"  # absent from older snapshots: none remembered

log = logging.getLogger(__name__)

#: The modes of what a save makes (less the umask): its owner's only, as the gateway's keys file is.
_PRIVATE_DIR = 0o700
_PRIVATE_FILE = 0o600
#: Snapshot folders already warned about being open to others (:func:`_check_root`).
_WARNED_ROOTS: set[str] = set()


def save_cache(cache: "SemanticCache", path: str | os.PathLike[str]) -> Path:
    """Write ``cache`` under the folder ``path``; returns the generation folder written.

    Everything it writes holds every tenant's questions and answers in clear: the folder ``path`` (when it makes it),
    each generation folder and every file are its owner's only (0o700 / 0o600, whatever the umask). A ``path`` that
    exists already with access for others is left as it is, with a warning (:func:`_check_root`)."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True, mode=_PRIVATE_DIR)
    _check_root(root)
    header, entries, parts = cache._snapshot()  # copies taken under the cache's lock
    generation = _next_generation(root)
    tmp = root / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir(mode=_PRIVATE_DIR)
    try:
        files: dict[str, str] = {}
        partitions = []
        for n, ((tenant, namespace), kind, data) in enumerate(parts):
            name = f"p{n}.faiss"
            files[name] = _write(tmp / name, data)
            partitions.append({"tenant": tenant, "namespace": namespace, "kind": kind, "file": name})
        rows = [
            [e.id, e.tenant, e.namespace, e.query, e.answer, list(e.doc_hashes), e.created_at, e.expires_at]
            + ([e.key] if e.key else [])  # a replicated entry's key (cache_replication)
            for e in entries
        ]
        # ASCII with \u escapes: a lone surrogate (JSON's "\ud800", from a client or another replica) round-trips
        # instead of failing every later save of the whole cache
        files[_ENTRIES] = _write(tmp / _ENTRIES, json.dumps(rows, ensure_ascii=True).encode("ascii"))
        files[_INVALIDATED] = _write(tmp / _INVALIDATED, json.dumps(header["invalidated_docs"]).encode("ascii"))
        files[_INVALIDATED_TENANTS] = _write(tmp / _INVALIDATED_TENANTS,
                                             json.dumps(header.get("invalidated_tenants", [])).encode("ascii"))
        fsync_dir(tmp)
        gen_dir = root / f"gen-{generation:06d}"
        os.rename(tmp, gen_dir)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    embedder = cache.embedder
    manifest = {
        "format": FORMAT,
        "key_scheme": KEY_SCHEME,
        "generation": generation,
        "dir": gen_dir.name,
        "model": embedder.model_name if embedder is not None else None,
        "model_fingerprint": _fingerprint(embedder),
        "dim": header["dim"],
        "index": header["index"],
        "next_id": header["next_id"],
        "entries": len(rows),
        "partitions": partitions,
        "files": files,
    }
    if "replication" in header:  # the replication topic offset this snapshot covers
        manifest["replication"] = header["replication"]
    body = json.dumps(manifest, indent=1, sort_keys=True).encode("utf-8")
    _clear_manifest_path(root)
    with atomic_write(root / MANIFEST, opener=_owner_only) as fh:  # its rename is the commit point
        fh.write(body)
    for old in root.iterdir():  # older generations and leftovers of crashed saves
        if old.name != gen_dir.name and (old.name.startswith("gen-") or old.name.startswith(".tmp-")
                                         or old.name.startswith(f".{MANIFEST}.")):
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
    return gen_dir


def _clear_manifest_path(root: Path) -> None:
    """A folder (not a file) named MANIFEST.json would fail this save and every later one (a rename cannot replace
    a folder with a file). It holds no snapshot: move it aside, where the cleanup after the commit removes it."""
    target = root / MANIFEST
    if target.is_symlink() or not target.is_dir():
        return
    aside = root / f".{MANIFEST}.{uuid.uuid4().hex}.folder"
    try:
        os.rename(target, aside)
    except OSError as exc:
        raise CacheError(f"{target} is a folder, not the cache's manifest file, and cannot be moved aside ({exc}): "
                         f"remove it (rm -r {target}) so that snapshots can be saved to {root}") from None
    log.warning("costline: %s was a folder, not a cache manifest: moved it aside to replace it with this snapshot's "
                "manifest (it is deleted once the snapshot is saved)", target)


def load_cache(cache: "SemanticCache", path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Fill the empty ``cache`` from the folder ``path`` (verifying everything first).

    Returns the replication state the snapshot recorded (topic offsets; None when it has none).
    """
    root = Path(path)
    manifest = _read_manifest(root)
    gen_dir = root / manifest["dir"]
    embedder = cache.embedder
    if manifest["dim"] != cache.dim:
        raise CacheCorruptError(f"{root}: saved with {manifest['dim']}-dimensional vectors, this embedder "
                                f"makes {cache.dim}: rebuild the cache (delete {root})")
    if embedder is not None and manifest.get("model") and manifest["model"] != embedder.model_name:
        raise CacheCorruptError(f"{root}: saved with embedding model {manifest['model']!r}, loading with "
                                f"{embedder.model_name!r}: its vectors would not match; rebuild the cache")
    fingerprint = _fingerprint(embedder)
    if fingerprint and manifest.get("model_fingerprint") and manifest["model_fingerprint"] != fingerprint:
        raise CacheCorruptError(f"{root}: saved with other files of embedding model {manifest.get('model')!r} "
                                f"(fingerprint {manifest['model_fingerprint'][:16]}..., loading with "
                                f"{fingerprint[:16]}...): its vectors would not match; rebuild the cache")
    blobs = {name: _read_checked(gen_dir / name, digest) for name, digest in manifest["files"].items()}
    try:
        rows = json.loads(blobs[_ENTRIES])
        from costline.serving.cache.semantic import _Entry

        entries = [_Entry(int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), tuple(r[5]), float(r[6]),
                          None if r[7] is None else float(r[7]), str(r[8]) if len(r) > 8 else "") for r in rows]
    except (KeyError, ValueError, TypeError, IndexError, OverflowError) as exc:
        raise CacheCorruptError(f"{root}: entry metadata unreadable ({exc}); rebuild the cache") from None
    scheme = manifest.get("key_scheme")
    stale = {(e.tenant, e.namespace) for e in entries if not still_keyed(scheme, e.namespace)}
    stale.update((p["tenant"], p["namespace"]) for p in manifest["partitions"]
                 if not still_keyed(scheme, p["namespace"]))
    if stale:
        dropped = sum((e.tenant, e.namespace) in stale for e in entries)
        entries = [e for e in entries if (e.tenant, e.namespace) not in stale]
        if dropped:
            saved = 1 if scheme is None else scheme
            log.warning("costline: %s: %d cached answers from %s key scheme dropped: they will be asked again "
                        "(saved under cache key scheme %s, this version's is %d: what a request's scope hash is made "
                        "of changed, so they would answer requests they were not made for)",
                        root, dropped, "an older" if saved < KEY_SCHEME else "another", saved, KEY_SCHEME)
    remembered = {}
    for name in (_INVALIDATED, _INVALIDATED_TENANTS):
        try:
            remembered[name] = [(str(d), float(at)) for d, at in json.loads(blobs.get(name, b"[]"))]
        except (ValueError, TypeError, OverflowError) as exc:
            raise CacheCorruptError(f"{root}: {name} unreadable ({exc}); rebuild the cache") from None
    live: dict[tuple[str, str], set[int]] = {}
    for e in entries:
        live.setdefault((e.tenant, e.namespace), set()).add(e.id)
    parts: dict[tuple[str, str], Partition] = {}
    for p in manifest["partitions"]:
        key = (p["tenant"], p["namespace"])
        if key in parts or p["file"] not in blobs:
            raise CacheCorruptError(f"{root}: manifest lists partition {key} twice or without its file")
        if key in stale:  # keyed under another scheme: its entries were dropped above, its index is not read
            continue
        try:
            part = Partition.deserialize(blobs[p["file"]], cache.dim, cache.config, live.get(key, set()), p["kind"])
        except RuntimeError as exc:  # FAISS could not read it
            raise CacheCorruptError(f"{root}: index {p['file']} unreadable ({exc}); rebuild the cache") from None
        missing = part.live - part.id_set()
        if missing or part.index.d != cache.dim:
            raise CacheCorruptError(f"{root}: index {p['file']} does not hold entries {sorted(missing)[:5]}...; "
                                    "rebuild the cache")
        if part.kind == "exact" and part.tombstones:
            part.rebuild()  # saved by an hnsw cache with tombstones, or stray ids: keep only live ones
        parts[key] = part
    if set(live) - set(parts):
        raise CacheCorruptError(f"{root}: entries of {sorted(set(live) - set(parts))[:3]} have no index; "
                                "rebuild the cache")
    cache._restore(int(manifest["next_id"]), entries, parts, remembered[_INVALIDATED],
                   remembered[_INVALIDATED_TENANTS])
    return manifest.get("replication")


def read_replication_state(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The replication state recorded by the snapshot at ``path`` (None: none, or no snapshot)."""
    try:
        state = _read_manifest(Path(path)).get("replication")
    except CacheError:
        return None
    return state if isinstance(state, dict) else None


# -- helpers ---------------------------------------------------------------------------------
def _fingerprint(embedder: Any) -> str | None:
    """The SHA-256 of the embedder's model files (None: no embedder, or one that cannot say; a snapshot without
    it is compared by the model's name alone, as before fingerprints were recorded)."""
    fp = getattr(embedder, "model_fingerprint", None) if embedder is not None else None
    return fp if isinstance(fp, str) and fp else None


def _read_manifest(root: Path) -> dict[str, Any]:
    """The manifest at ``root``, its shape checked: every way it can be unreadable or malformed (valid JSON of
    another shape included) is a :class:`CacheCorruptError` naming the file and what is wrong."""
    path = root / MANIFEST
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CacheError(f"no saved cache at {root} (no {MANIFEST}): save one first") from None
    except OSError as exc:  # a folder of that name, no permission
        raise CacheCorruptError(f"{path} cannot be read ({exc}); delete {root} and rebuild") from None
    try:
        manifest = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise CacheCorruptError(f"{path} is not valid JSON ({exc}); delete {root} and rebuild") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CacheCorruptError(f"{path}: not a costline semantic cache of format {FORMAT}")
    problem = _manifest_problem(manifest)
    if problem is not None:
        raise CacheCorruptError(f"{path}: {problem}; delete {root} and rebuild")
    return manifest


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _plain_name(value: Any) -> bool:
    """A file or folder name inside the cache folder (no separator, not . or ..)."""
    return (isinstance(value, str) and value not in ("", ".", "..") and "/" not in value and "\\" not in value
            and "\0" not in value)


def _manifest_problem(m: dict[str, Any]) -> str | None:
    """What is wrong with the shape of a parsed manifest (None: nothing)."""
    for key in ("dir", "dim", "next_id", "partitions", "files"):
        if key not in m:
            return f"no {key!r}"
    if not _plain_name(m["dir"]):
        return f"'dir' {m['dir']!r} is not a folder name"
    if not _is_int(m["dim"]) or m["dim"] < 1:
        return f"'dim' {m['dim']!r} is not a positive integer"
    if not _is_int(m["next_id"]) or m["next_id"] < 0:
        return f"'next_id' {m['next_id']!r} is not a non-negative integer"
    for key in ("model", "model_fingerprint"):
        if m.get(key) is not None and not isinstance(m[key], str):
            return f"{key!r} {m[key]!r} is not a string"
    if m.get("key_scheme") is not None and (not _is_int(m["key_scheme"]) or m["key_scheme"] < 1):
        return f"'key_scheme' {m['key_scheme']!r} is not a positive integer"
    files = m["files"]
    if not isinstance(files, dict):
        return f"'files' is a {type(files).__name__}, not an object of file name to SHA-256"
    for name, digest in files.items():
        if not _plain_name(name) or not isinstance(digest, str):
            return f"'files' entry {name!r}: {digest!r} is not a file name and its SHA-256"
    if _ENTRIES not in files:
        return f"lists no {_ENTRIES}"
    parts = m["partitions"]
    if not isinstance(parts, list):
        return f"'partitions' is a {type(parts).__name__}, not a list"
    for n, p in enumerate(parts):
        if not isinstance(p, dict):
            return f"partition {n} is a {type(p).__name__}, not an object"
        for key in ("tenant", "namespace", "kind", "file"):
            if not isinstance(p.get(key), str):
                return f"partition {n} has no {key!r} string"
        if p["kind"] not in INDEX_KINDS:
            return f"partition {n} has index kind {p['kind']!r}, not one of {', '.join(INDEX_KINDS)}"
        if not _plain_name(p["file"]):
            return f"partition {n}'s file {p['file']!r} is not a file name"
    return None


def _read_checked(path: Path, digest: str) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CacheCorruptError(f"{path} is missing: the cache folder is incomplete; rebuild it") from None
    except OSError as exc:  # a folder of that name, no permission
        raise CacheCorruptError(f"{path} cannot be read ({exc}); rebuild the cache") from None
    if hashlib.sha256(data).hexdigest() != digest:
        raise CacheCorruptError(f"{path} fails its checksum: the file changed after the save; rebuild the cache")
    return data


def _owner_only(path: str, flags: int) -> int:
    """``open``'s opener for a file only its owner may read (a snapshot's files hold prompts and answers)."""
    return os.open(path, flags, _PRIVATE_FILE)


def _check_root(root: Path) -> None:
    """Warn (once per folder and process) when others may enter or list the snapshot folder ``root``: what is saved
    in it is its owner's only all the same, but a folder made looser on purpose is the operator's to change, never
    this save's (it may be a mount point, or shared with a backup agent by its group)."""
    try:
        mode = root.stat().st_mode & 0o777
    except OSError:
        return
    key = str(root.resolve())
    if mode & 0o077 and key not in _WARNED_ROOTS:
        _WARNED_ROOTS.add(key)
        log.warning("costline: the semantic cache folder %s has mode %s: others may list it. Its snapshots hold "
                    "every tenant's questions and answers (they are written readable by their owner only): "
                    "chmod 700 %s", root, oct(mode), root)


def _write(path: Path, data: bytes) -> str:
    with synced_write(path, opener=_owner_only) as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()


def _next_generation(root: Path) -> int:
    numbers = [0]
    for p in root.glob("gen-*"):
        try:
            numbers.append(int(p.name[4:]))
        except ValueError:
            continue
    return max(numbers) + 1
