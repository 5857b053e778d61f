"""Durable file writes shared by the lake, the jobs' results and the semantic cache's snapshots."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_dir", "fsync_file"]


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
