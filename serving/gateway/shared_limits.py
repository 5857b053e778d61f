"""One set of rate-limit token buckets, and one count of each tenant's requests in flight, for every worker of
``costline serve --workers N``.

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

:class:`SharedTenantCounts` does the same for ``[serving.gateway] max_in_flight_per_tenant``: a tenant's slot holds
one count per worker index, a request is admitted while their sum is under the cap (whichever worker its connection
reached), and a worker that dies leaves no count behind for ever: its column is cleared by the supervisor when it
sees it exit and by the worker that takes its index when it starts. A slot whose counts are all 0 is free for
another tenant. :class:`TenantCounts` is the same interface in one process (a single gateway).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from costline.serving.errors import GatewayError
from costline.serving.gateway.workers import tenant_cap_per_worker

__all__ = ["SharedRateLimiter", "SharedTenantCounts", "TenantCounts"]

log = logging.getLogger(__name__)

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
        self._fd, self._map, (slots,) = _open_table(self.path, _MAGIC, _HEADER, lambda slots: slots * _SLOT.size,
                                                    "rate-limit table")
        self.slots = slots

    @classmethod
    def create(cls, path: str | os.PathLike[str], slots: int = 65_536) -> Path:
        """Write an empty table of ``slots`` slots at ``path`` (mode 0600) and return its path."""
        if slots < 1:
            raise GatewayError(f"a rate-limit table needs at least one slot; got {slots}")
        return _create_table(path, _HEADER.pack(_MAGIC, slots), slots * _SLOT.size)

    def take(self, name: str) -> float:
        """0 when allowed (a token taken), else seconds until a request would be."""
        if self.rate <= 0:
            return 0.0
        key, start = _key(name, self.slots)
        with self._lock, _flocked(self._fd):
            now = self._now()
            offset, tokens, last = self._find(key, start, now)
            tokens = min(self.burst, tokens + max(now - last, 0.0) * self.rate)
            if tokens >= 1.0:
                _SLOT.pack_into(self._map, offset, key, tokens - 1.0, now)
                return 0.0
            _SLOT.pack_into(self._map, offset, key, tokens, now)
            return (1.0 - tokens) / self.rate

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
        _close(self)


class TenantCounts(dict[str, int]):
    """One process's requests in flight per tenant (tenant -> admitted and not answered), at most ``cap`` each; a
    tenant with none takes no room. The in-process side of what :class:`SharedTenantCounts` shares: ``take`` admits
    (True) or refuses, ``release`` gives one back. Not locked: one event loop (or its caller's lock) uses it."""

    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = cap
        #: The limit the last refused :meth:`take` was held to (what its 429 says).
        self.refused_at = cap

    def take(self, tenant: str) -> bool:
        n = self.get(tenant, 0)
        if n >= self.cap:
            self.refused_at = self.cap
            return False
        self[tenant] = n + 1
        return True

    def release(self, tenant: str) -> None:
        n = self.get(tenant, 0) - 1
        if n > 0:
            self[tenant] = n
        else:
            self.pop(tenant, None)


_COUNTS_MAGIC = b"CLIF\x01\x00\x00\x00"
_COUNTS_HEADER = struct.Struct("<8sII")  # magic + version, slot count, workers


def _counts_slot(workers: int) -> struct.Struct:
    return struct.Struct(f"<16s{workers}I")  # tenant hash, one count per worker index


class SharedTenantCounts:
    """Each tenant's requests in flight on every worker, at most ``cap`` in all, in a file the workers share.

    :meth:`create` makes the file for ``workers`` workers; worker K opens it with ``worker=K`` and calls
    :meth:`take` / :meth:`release` (the interface of :class:`TenantCounts`), and :meth:`clear` once it starts;
    the supervisor calls :meth:`clear_worker` when it sees worker K exit. Never raises into a request: when no slot
    is free among the probed ones (more tenants in flight than the table holds) or the file fails, the request is
    counted in this process against the worker's split share of the cap (``max(1, cap // workers)``), logged once."""

    def __init__(self, path: str | os.PathLike[str], cap: int, worker: int) -> None:
        self.path = Path(path)
        self.cap = cap
        self._lock = threading.Lock()
        self._fd, self._map, (self.slots, self.workers) = _open_table(
            self.path, _COUNTS_MAGIC, _COUNTS_HEADER, lambda slots, workers: slots * _counts_slot(workers).size,
            "in-flight table")
        if not 0 <= worker < self.workers:
            _close(self)
            raise GatewayError(f"worker {worker} is not one of the {self.workers} workers {self.path} was made for")
        self.worker = worker
        self._slot = _counts_slot(self.workers)
        #: the requests admitted here on the split share while the table could not count them
        self._fallback = TenantCounts(tenant_cap_per_worker(cap, self.workers))
        #: The limit the last refused :meth:`take` was held to (what its 429 says): the cap, or the worker's share.
        self.refused_at = cap
        self._warned: set[str] = set()

    @classmethod
    def create(cls, path: str | os.PathLike[str], workers: int, slots: int = 4096) -> Path:
        """Write an empty table of ``slots`` tenants for ``workers`` workers at ``path`` (mode 0600); its path."""
        if slots < 1 or workers < 1:
            raise GatewayError(f"an in-flight table needs a slot and a worker at least; got {slots} and {workers}")
        return _create_table(path, _COUNTS_HEADER.pack(_COUNTS_MAGIC, slots, workers),
                             slots * _counts_slot(workers).size)

    @classmethod
    def clear_worker(cls, path: str | os.PathLike[str], worker: int) -> None:
        """Clear worker ``worker``'s counts in the table at ``path`` (it exited: what it held is free)."""
        table = cls(path, 0, worker)
        try:
            table.clear()
        finally:
            table.close()

    def take(self, tenant: str) -> bool:
        """Admit one request of ``tenant`` (True) while its requests on every worker are under the cap."""
        key, start = _key(tenant, self.slots)
        with self._lock:
            try:
                with _flocked(self._fd):
                    offset = self._find(key, start, claim=True)
                    if offset is not None:
                        slot = list(self._slot.unpack_from(self._map, offset))
                        # this worker's requests of the tenant the table could not count before (still running) are
                        # counted in it from now on: their releases find them there
                        slot[0], slot[1 + self.worker] = key, slot[1 + self.worker] + self._fallback.pop(tenant, 0)
                        admit = sum(slot[1:]) < self.cap
                        slot[1 + self.worker] += admit
                        self._slot.pack_into(self._map, offset, *slot)
                        if not admit:
                            self.refused_at = self.cap
                        return admit
                self._warn("full", "every slot of the in-flight table %s near tenant %r is held by another tenant's "
                                   "requests: such requests are held to this worker's share of the cap, %d",
                           self.path, tenant, self._fallback.cap)
            except (OSError, ValueError) as exc:  # ValueError: the map is closed
                self._warn("error", "the in-flight table %s failed (%s): requests are held to this worker's share "
                                    "of the cap, %d", self.path, exc, self._fallback.cap)
            admit = self._fallback.take(tenant)
            if not admit:
                self.refused_at = self._fallback.cap
            return admit

    def release(self, tenant: str) -> None:
        """Give back one request of ``tenant`` that :meth:`take` admitted."""
        with self._lock:
            if tenant in self._fallback:  # one of this worker's: the counts are the same either way
                self._fallback.release(tenant)
                return
            key, start = _key(tenant, self.slots)
            try:
                with _flocked(self._fd):
                    offset = self._find(key, start, claim=False)
                    if offset is not None:
                        slot = list(self._slot.unpack_from(self._map, offset))
                        slot[1 + self.worker] = max(slot[1 + self.worker] - 1, 0)
                        self._slot.pack_into(self._map, offset, *slot)
            except (OSError, ValueError) as exc:
                self._warn("error", "the in-flight table %s failed (%s): a request's count is left in it until "
                                    "this worker restarts", self.path, exc)

    def clear(self) -> None:
        """Set this worker's count of every tenant to 0 (what a previous worker of this index held)."""
        column = len(_EMPTY) + 4 * self.worker  # this worker's count, after the tenant's hash
        with self._lock, _flocked(self._fd):
            for i in range(self.slots):
                struct.pack_into("<I", self._map, _COUNTS_HEADER.size + i * self._slot.size + column, 0)

    def _find(self, key: bytes, start: int, *, claim: bool) -> int | None:
        """The offset of ``key``'s slot; with ``claim``, else the first free one (all counts 0) given to it; None
        when neither is among the ``PROBES`` slots from ``start``. A slot never used ends the search: keys are
        never removed, so ``key`` is not further on."""
        free = None
        for i in range(min(PROBES, self.slots)):
            offset = _COUNTS_HEADER.size + ((start + i) % self.slots) * self._slot.size
            slot = self._slot.unpack_from(self._map, offset)
            if slot[0] == key:
                return offset
            if slot[0] == _EMPTY:
                return (offset if free is None else free) if claim else None
            if free is None and not any(slot[1:]):
                free = offset
        return free if claim else None

    def _warn(self, kind: str, message: str, *args: object) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning("costline: " + message, *args)

    def close(self) -> None:
        """Unmap and close the file (the file stays). Idempotent."""
        _close(self)


def _key(name: str, slots: int) -> tuple[bytes, int]:
    """A name's 16-byte BLAKE2b hash and the slot its probing starts at."""
    key = hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    return key, int.from_bytes(key[:8], "little") % slots


@contextmanager
def _flocked(fd: int) -> Iterator[None]:
    """An exclusive ``flock`` on ``fd``: the other processes wait (this one's threads: the caller's lock)."""
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _create_table(path: str | os.PathLike[str], header: bytes, body_size: int) -> Path:
    """Write ``header`` and ``body_size`` zero bytes (every slot empty) at ``path``, mode 0600."""
    path = Path(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, len(header) + body_size)
        os.pwrite(fd, header, 0)
    finally:
        os.close(fd)
    return path


def _open_table(path: Path, magic: bytes, header: struct.Struct, body_size: Callable[..., int],
                what: str) -> tuple[int, mmap.mmap, tuple[int, ...]]:
    """Open and map the table at ``path``: (fd, map, the header's numbers after ``magic``), every number at least
    1 and the file ``header.size + body_size(*numbers)`` bytes, else a :class:`GatewayError` saying what to do."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError as exc:
        raise GatewayError(f"cannot open the workers' {what} {path} ({exc}): "
                           "it is made by `costline serve --workers N`") from exc
    try:
        raw = os.pread(fd, header.size, 0)
        fields = header.unpack(raw) if len(raw) == header.size else (b"",)
        numbers = tuple(int(n) for n in fields[1:])
        size = os.fstat(fd).st_size
        if fields[0] != magic or min(numbers, default=0) < 1 or size != header.size + body_size(*numbers):
            raise GatewayError(f"{path} is not a costline {what} (or another version): "
                               "restart `costline serve --workers N`, which makes a new one")
        return fd, mmap.mmap(fd, size), numbers
    except BaseException:
        os.close(fd)
        raise


def _close(table: SharedRateLimiter | SharedTenantCounts) -> None:
    if table._fd >= 0:
        table._map.close()
        os.close(table._fd)
        table._fd = -1
