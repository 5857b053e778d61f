"""Durable file writes: the one implementation of tmp + fsync + rename every area uses (the lake, the
jobs' and distillation results, the semantic cache's snapshots, keys, policies, the dashboard).

* :func:`atomic_write` — write under a temporary name (``.<name>.<pid>-<thread>.tmp``, never matched by a
  ``*.parquet`` or ``*.json`` glob), fsync, rename into place, fsync the folder: a reader sees the
  old file or the whole new one, never a part;
* :func:`atomic_path` — the same for a writer that takes a path, not a file object (DuckDB's
  ``COPY ... TO``, ``shutil.copyfile``, an ONNX export): it writes the temporary path it is given;
* :func:`synced_write` — open, write, fsync, no rename: for writers that stage several files
  and rename them later (the lake's batches);
* :func:`fsync_file` / :func:`fsync_dir` — the two fsyncs, for writers that stage several files;
* :func:`file_lock` — an ``flock``, exclusive or shared, held for a ``with`` block; :func:`exclusive_lock` — the
  exclusive one (the lake's partitions and maintenance, the gateway's keys file; a dry run's shared one on a lake it
  cannot write).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_path", "atomic_write", "cannot_write", "exclusive_lock", "file_lock", "fsync_dir", "fsync_file",
           "os_reason", "synced_write", "tmp_path_for"]


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Make a file's written bytes durable."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def tmp_path_for(path: Path) -> Path:
    """The temporary name :func:`atomic_write` stages ``path`` under (hidden, ends in ``.tmp``; one per
    process and thread, so two writers of one file never share it)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{threading.get_native_id()}.tmp")


def _check_write_mode(mode: str) -> str:
    if not any(c in mode for c in "wx") or "+" in mode:
        raise ValueError(f"atomic_write opens for writing only ('wb' or 'w'), not {mode!r}")
    return mode.replace("x", "w")


@contextmanager
def synced_write(path: Path | str, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Open ``path`` for writing; on a clean exit flush and fsync it (no rename: the caller stages
    the file under a temporary name and renames it itself)."""
    with open(path, _check_write_mode(mode), **open_kwargs) as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield the temporary path to write ``path``'s new content to; on a clean exit fsync it, rename
    it to ``path`` and fsync the folder. On an exception the temporary file is removed::

        with atomic_path(final) as tmp:
            con.execute(f"COPY (...) TO {sql_str(tmp)} (FORMAT parquet)")
    """
    final = Path(path)
    tmp = tmp_path_for(final)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(final.parent)


@contextmanager
def atomic_write(path: Path | str, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; on a clean exit fsync it and rename it to ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was::

        with atomic_write(final) as fh:
            pq.write_table(table, fh)
    """
    mode = _check_write_mode(mode)
    with atomic_path(path) as tmp, open(tmp, mode, **open_kwargs) as fh:
        yield fh


@contextmanager
def file_lock(path: Path | str, *, shared: bool = False, mode: int = 0o666) -> Iterator[None]:
    """Hold an ``flock`` on ``path`` for the ``with`` block: an exclusive one, or with ``shared`` a shared one (any
    number of shared holders at once; an exclusive one waits for them all, and they for it). Processes and threads
    alike wait for it (each ``with`` opens its own descriptor). The file is opened read-only — ``flock`` needs no
    write access — so every user who may read it can lock it, not only the one who created it (an operator's `sudo`
    compaction must not lock the service account out of a group-writable lake). An exclusive lock creates a missing
    file (with ``mode``, less the umask); a shared one never does (its holder may only read: a missing file raises
    ``FileNotFoundError``). Opening it raises the ``OSError`` (the caller says what to check); the lock is released
    when the block ends, whatever happens in it. Honoured on a local filesystem."""
    fd = os.open(path, os.O_RDONLY | (0 if shared else os.O_CREAT) | getattr(os, "O_CLOEXEC", 0), mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def exclusive_lock(path: Path | str, mode: int = 0o666) -> AbstractContextManager[None]:
    """An exclusive :func:`file_lock` on ``path`` (created with ``mode`` if missing, less the umask) for the ``with``
    block."""
    return file_lock(path, mode=mode)


def os_reason(exc: OSError) -> str:
    """``Permission denied: '/nonexistent'``: an OSError's reason and path, without the errno."""
    if exc.strerror and exc.filename is not None:
        return f"{exc.strerror}: {str(exc.filename)!r}"
    return exc.strerror or str(exc)


def cannot_write(folder: Path, *, parent_too: bool = False) -> str | None:
    """Why ``folder`` cannot be created (if missing) or written — by writing a temporary file there, and in its
    parent too with ``parent_too`` (where a lock file beside it goes) — as :func:`os_reason` says it; None when it
    can."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for where in (folder, folder.parent) if parent_too else (folder,):
            with tempfile.TemporaryFile(dir=where):
                pass
    except OSError as exc:
        return os_reason(exc)
    return None
