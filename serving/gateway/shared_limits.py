"""One set of rate-limit token buckets for every worker of ``costline serve --workers N``.

Each gateway process has its own :class:`~costline.serving.gateway.auth.RateLimiter`; with N
workers on one port a caller whose connections land on several of them would get up to N times
``rate_limit_per_minute``. :class:`SharedRateLimiter` keeps the buckets in a file every worker
maps into memory (the supervisor creates it with :meth:`SharedRateLimiter.create`), so a key's
limit holds across the workers. Same answer as ``RateLimiter.take``: 0 when allowed, else the
seconds until a request would be.

The table is a fixed number of slots (``slots``, 65,536 by default: 2 MiB) addressed by a 16-byte
BLAKE2b hash of the bucket's name, probed linearly ``PROBES`` slots; when all of them are taken the
one used longest ago is given to the new name with a full bucket (bounded memory; the per-process
limiter forgets a refilled bucket first, else the one nearest full, so a flood of new names does not forgive a
throttled name's debt). A take holds an in-process lock and an exclusive ``flock`` on the
file for a few microseconds. Times are ``time.monotonic()``: one clock for every process on the host.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

from costline.serving.errors import GatewayError

__all__ = ["SharedRateLimiter"]

_MAGIC = b"CLRL\x01\x00\x00\x00"
_HEADER = struct.Struct("<8sI4x")  # magic + version, slot count
_SLOT = struct.Struct("<16sdd")  # name hash, tokens, last refill (monotonic seconds)
_EMPTY = bytes(16)
#: Slots probed for a name before the least recently used of them is taken over.
PROBES = 32


class SharedRateLimiter:
    """Token buckets (``rate_per_minute`` sustained, ``burst`` at once; 0 rate = unlimited) in a file
    shared by processes. :meth:`create` makes the file; every process (the creator included) opens it
    with the constructor and calls :meth:`take`; :meth:`close` unmaps it."""

    def __init__(self, path: str | os.PathLike[str], rate_per_minute: float, burst: int, *,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path)
        self.rate = rate_per_minute / 60.0
        self.burst = float(burst)
        self._now = now
        self._lock = threading.Lock()
        try:
            self._fd = os.open(self.path, os.O_RDWR)
        except OSError as exc:
            raise GatewayError(f"cannot open the workers' rate-limit table {self.path} ({exc}): "
                               "it is made by `costline serve --workers N`") from exc
        try:
            size = os.fstat(self._fd).st_size
            header = os.pread(self._fd, _HEADER.size, 0)
            magic, slots = _HEADER.unpack(header) if len(header) == _HEADER.size else (b"", 0)
            if magic != _MAGIC or slots < 1 or size != _HEADER.size + slots * _SLOT.size:
                raise GatewayError(f"{self.path} is not a costline rate-limit table (or another version): "
                                   "restart `costline serve --workers N`, which makes a new one")
            self._map = mmap.mmap(self._fd, size)
        except BaseException:
            os.close(self._fd)
            raise
        self.slots = slots

    @classmethod
    def create(cls, path: str | os.PathLike[str], slots: int = 65_536) -> Path:
        """Write an empty table of ``slots`` slots at ``path`` (mode 0600) and return its path."""
        if slots < 1:
            raise GatewayError(f"a rate-limit table needs at least one slot; got {slots}")
        path = Path(path)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, _HEADER.size + slots * _SLOT.size)  # zeros: every slot empty
            os.pwrite(fd, _HEADER.pack(_MAGIC, slots), 0)
        finally:
            os.close(fd)
        return path

    def take(self, name: str) -> float:
        """0 when allowed (a token taken), else seconds until a request would be."""
        if self.rate <= 0:
            return 0.0
        key = hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        start = int.from_bytes(key[:8], "little") % self.slots
        with self._lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                now = self._now()
                offset, tokens, last = self._find(key, start, now)
                tokens = min(self.burst, tokens + max(now - last, 0.0) * self.rate)
                if tokens >= 1.0:
                    _SLOT.pack_into(self._map, offset, key, tokens - 1.0, now)
                    return 0.0
                _SLOT.pack_into(self._map, offset, key, tokens, now)
                return (1.0 - tokens) / self.rate
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _find(self, key: bytes, start: int, now: float) -> tuple[int, float, float]:
        """(slot offset, tokens, last) for ``key``: its slot, an empty one (a full bucket), or the
        probed slot used longest ago, taken over with a full bucket."""
        oldest_offset, oldest_last = -1, float("inf")
        for i in range(min(PROBES, self.slots)):
            offset = _HEADER.size + ((start + i) % self.slots) * _SLOT.size
            slot_key, tokens, last = _SLOT.unpack_from(self._map, offset)
            if slot_key == key:
                return offset, tokens, last
            if slot_key == _EMPTY:
                return offset, self.burst, now
            if last < oldest_last:
                oldest_offset, oldest_last = offset, last
        return oldest_offset, self.burst, now

    def close(self) -> None:
        """Unmap and close the file (the file stays). Idempotent."""
        if self._fd >= 0:
            self._map.close()
            os.close(self._fd)
            self._fd = -1
