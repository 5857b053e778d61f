"""Durable file writes shared by the lake, the jobs' results and the semantic cache's snapshots.

* :func:`atomic_write` — write under a temporary name (``.<name>.<pid>.tmp``, never matched by a
  ``*.parquet`` or ``*.json`` glob), fsync, rename into place, fsync the folder: a reader sees the
  old file or the whole new one, never a part;
* :func:`fsync_file` / :func:`fsync_dir` — the two fsyncs, for writers that stage several files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "fsync_dir", "fsync_file", "tmp_path_for"]


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
    """The temporary name :func:`atomic_write` stages ``path`` under (hidden, ends in ``.tmp``)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextmanager
def atomic_write(path: Path | str, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; on a clean exit fsync it and rename it to ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was::

        with atomic_write(final) as fh:
            pq.write_table(table, fh)
    """
    if not any(c in mode for c in "wx") or "+" in mode:
        raise ValueError(f"atomic_write opens for writing only ('wb' or 'w'), not {mode!r}")
    final = Path(path)
    tmp = tmp_path_for(final)
    try:
        with open(tmp, mode.replace("x", "w"), **open_kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(final.parent)
