"""``costline serve --workers N``: N gateway processes on one port, sharing one cache over Kafka.

One gateway process embeds every query on one micro-batching thread and runs its Python under one
GIL, so it uses about one core whatever the machine has. Workers are the way to the others: the
parent (a :class:`WorkerSupervisor`) reserves the port with ``SO_REUSEPORT`` and starts N
``costline serve --worker-index K`` processes that listen on it with ``SO_REUSEPORT`` too; the kernel
spreads new connections over them. Each worker is a cache replica (``[serving.cache]
replication_topic``, docs/cache.md "Replicas"): what one stores or invalidates reaches the others
through the topic, and a worker that restarts comes back warm from its snapshot plus the topic.
Workers without that would each keep a cache of their own — a document invalidated through one
would still be served by the others — so :func:`check_workers` refuses it (``--no-cache`` is fine).

The supervisor restarts a worker that exits while it serves (after ``1, 2, 4 … 30`` seconds; the
delay resets once a worker has lived ``stable_s``; five quick exits in a row end the supervision with
the reason, as a setup that cannot start will not start on the sixth try either), and on
:meth:`WorkerSupervisor.shutdown` sends every worker SIGTERM (each drains: ``/readyz`` 503, requests
in flight finish) and SIGKILLs what is left after ``drain_timeout_s``. A worker whose parent dies drains and exits by itself
(:func:`watch_parent`). Each worker answers with ``x-costline-worker: K`` and exports its telemetry
with ``service.instance.id`` of its own, so OTLP backends keep the workers' series apart.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from costline.serving.errors import GatewayError

__all__ = ["WorkerSupervisor", "check_workers", "tenant_cap_per_worker", "watch_parent", "worker_env"]

log = logging.getLogger(__name__)


def check_workers(workers: int, *, cache: bool, replication_topic: str | None) -> None:
    """Refuse ``workers > 1`` with a cache that is not shared (each worker would keep its own)."""
    if workers < 1:
        raise GatewayError(f"--workers must be 1 or more; got {workers}")
    if workers > 1 and cache and not replication_topic:
        raise GatewayError(
            f"{workers} workers would each keep a semantic cache of their own (an invalidation through one would "
            "not reach the others): set [serving.cache] replication_topic (COSTLINE_SERVING_CACHE_REPLICATION_TOPIC) "
            "so they share one over Kafka, or serve with --no-cache")


def tenant_cap_per_worker(cap: int, workers: int) -> int:
    """A worker's split share of ``[serving.gateway] max_in_flight_per_tenant`` (0: the derived default, a worker's
    own): the cap over the workers, at least 1. The workers count a tenant's requests in one table they share
    (:class:`~costline.serving.gateway.shared_limits.SharedTenantCounts`), so the whole cap holds across them; a
    request the table cannot count (every probed slot held by other tenants, or the file failing) is held to this
    share instead, counted in its worker alone."""
    return cap if cap <= 0 or workers <= 1 else max(1, cap // workers)


def worker_env(base: Mapping[str, str], index: int, *, replica_base: str, cache_path: str | None,
               prometheus_port: int | None) -> dict[str, str]:
    """The environment of worker ``index``: its own cache replica id and snapshot folder, its own
    ``service.instance.id``, with a fixed Prometheus port P, port P + index."""
    env = dict(base)
    name = f"{replica_base}-w{index}"
    env["COSTLINE_SERVING_CACHE_REPLICA_ID"] = name
    if cache_path:
        env["COSTLINE_SERVING_CACHE_PATH"] = os.path.join(cache_path, f"worker-{index}")
    if prometheus_port:
        env["COSTLINE_COLLECTOR_METRICS_PROMETHEUS_PORT"] = str(prometheus_port + index)
    resource = env.get("OTEL_RESOURCE_ATTRIBUTES", "")
    kept = [kv for kv in resource.split(",") if kv.strip() and not kv.strip().startswith("service.instance.id=")]
    env["OTEL_RESOURCE_ATTRIBUTES"] = ",".join([*kept, f"service.instance.id={name}"])
    return env


def watch_parent(parent_pid: int, *, interval_s: float = 0.5,
                 on_orphaned: Callable[[], None] | None = None) -> threading.Thread:
    """A daemon thread that, once this process's parent is no longer ``parent_pid`` (it died and the
    process was re-parented), calls ``on_orphaned`` — by default SIGTERM to this process, i.e. drain."""

    def orphaned() -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    def run() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval_s)
        log.warning("costline: the gateway supervisor (pid %d) is gone: this worker drains and exits", parent_pid)
        (on_orphaned or orphaned)()

    thread = threading.Thread(target=run, name="costline-worker-parent-watch", daemon=True)
    thread.start()
    return thread


def _listening(host: str, port: int) -> bool:
    """Whether a connection to ``host:port`` is accepted now (a wildcard host is asked on loopback)."""
    target = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    try:
        with socket.create_connection((target, port), timeout=1.0):
            return True
    except OSError:
        return False


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    restart_at: float | None = None  # when an exited worker is started again
    delay_s: float = 0.0  # the next restart's delay
    quick_exits: int = 0  # exits in a row, each within stable_s of its start
    restarts: int = 0


class WorkerSupervisor:
    """Starts ``workers`` processes (``command(index)`` with ``env(index)``) on a port it reserves,
    restarts one that exits, stops them all on :meth:`shutdown`.

    Lifecycle: :meth:`reserve_port` (port 0 picks a free one; the socket is bound with
    ``SO_REUSEPORT`` and never listens, so it keeps the port for restarts without taking connections),
    :meth:`start`, then :meth:`run` (until :meth:`stop`) or :meth:`poll` steps, then :meth:`shutdown`.
    A worker that exits ``give_up_after`` times in a row, each time within ``stable_s`` of starting (a
    broken setup, not a crash), stops the supervision: :attr:`failed` says why. ``on_exit(index)`` runs when a
    worker is seen to have exited, before it is started again (its restart keeps its index). ``now`` is a monotonic
    clock in seconds."""

    def __init__(self, workers: int, command: Callable[[int], Sequence[str]],
                 env: Callable[[int], Mapping[str, str]], *, host: str, port: int, drain_timeout_s: float = 30.0,
                 first_delay_s: float = 1.0, max_delay_s: float = 30.0, stable_s: float = 60.0,
                 give_up_after: int = 5, now: Callable[[], float] = time.monotonic,
                 echo: Callable[[str], None] | None = None, on_exit: Callable[[int], None] | None = None) -> None:
        if workers < 1:
            raise GatewayError(f"workers must be 1 or more; got {workers}")
        self.workers = [_Worker(i) for i in range(workers)]
        self._command = command
        self._env = env
        self._host = host
        self._port = port
        self._drain_timeout_s = drain_timeout_s
        self._first_delay_s = first_delay_s
        self._max_delay_s = max_delay_s
        self._stable_s = stable_s
        self._give_up_after = give_up_after  # 0: never
        #: Why supervising stopped by itself (a worker that cannot start), else None.
        self.failed: str | None = None
        self._now = now
        self._echo = echo or (lambda line: log.warning("%s", line))
        self._on_exit = on_exit
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._stopping = False

    # -- lifecycle --------------------------------------------------------------------------
    def reserve_port(self) -> int:
        """Bind the port with SO_REUSEPORT (0: a free one) without listening; returns it."""
        if self._sock is None:
            if self._port and _listening(self._host, self._port):  # SO_REUSEPORT would let us join it silently
                raise GatewayError(f"something already listens on {self._host}:{self._port} (another `costline "
                                   "serve --workers`?): stop it or pick another --port")
            family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                sock.bind((self._host, self._port))
            except OSError as exc:
                sock.close()
                raise GatewayError(f"cannot reserve {self._host}:{self._port} for the workers ({exc}): "
                                   "pick another --port") from exc
            self._sock = sock
            self._port = int(sock.getsockname()[1])
        return self._port

    @property
    def port(self) -> int:
        return self._port

    def pids(self) -> list[int | None]:
        """Each worker's pid (None while it waits to be restarted)."""
        return [w.proc.pid if w.proc is not None and w.proc.poll() is None else None for w in self.workers]

    def start(self) -> None:
        """Start every worker (reserving the port first if that was not done)."""
        self.reserve_port()
        for w in self.workers:
            self._spawn(w)

    def _spawn(self, w: _Worker) -> None:
        w.proc = subprocess.Popen(list(self._command(w.index)), env=dict(self._env(w.index)))
        w.started_at = self._now()
        w.restart_at = None

    def poll(self) -> None:
        """One supervision step: note workers that exited, start those whose restart is due."""
        if self._stopping:
            return
        now = self._now()
        for w in self.workers:
            if w.proc is not None:
                rc = w.proc.poll()
                if rc is None:
                    continue
                lived = now - w.started_at
                w.quick_exits = 0 if lived >= self._stable_s else w.quick_exits + 1
                w.delay_s = self._first_delay_s if lived >= self._stable_s or not w.delay_s \
                    else min(w.delay_s * 2, self._max_delay_s)
                w.proc = None
                self._exited(w.index)
                if self._give_up_after and w.quick_exits >= self._give_up_after:
                    self.failed = (f"gateway worker {w.index} exited {w.quick_exits} times in a row, each within "
                                   f"{self._stable_s:g} s of starting (last status {rc}): see its output above")
                    self._echo(f"costline: {self.failed}; stopping")
                    self.stop()
                    return
                w.restart_at = now + w.delay_s
                self._echo(f"costline: gateway worker {w.index} exited (status {rc}) after {lived:.0f} s; "
                           f"restarting it in {w.delay_s:g} s")
            if w.restart_at is not None and now >= w.restart_at:
                self._spawn(w)
                w.restarts += 1
                self._echo(f"costline: gateway worker {w.index} restarted (pid {w.proc.pid})")  # type: ignore[union-attr]

    def _exited(self, index: int) -> None:
        """Tell ``on_exit`` that worker ``index`` exited (before it is started again); a failure is logged."""
        if self._on_exit is not None:
            try:
                self._on_exit(index)
            except Exception:  # noqa: BLE001 - supervising goes on; the restarted worker clears after itself too
                log.exception("costline: cleaning up after gateway worker %d failed", index)

    def run(self, interval_s: float = 0.2) -> None:
        """Supervise until :meth:`stop` (from a signal handler or another thread)."""
        while not self._stop.wait(interval_s):
            self.poll()

    def stop(self) -> None:
        """Make :meth:`run` return (then call :meth:`shutdown`)."""
        self._stop.set()

    def shutdown(self, timeout_s: float | None = None) -> list[int | None]:
        """SIGTERM every worker (each drains), wait at most ``timeout_s`` (default the drain timeout +
        10 s), SIGKILL the rest; release the port. Returns each worker's exit status. Idempotent."""
        self._stopping = True
        self._stop.set()
        live = [w.proc for w in self.workers if w.proc is not None]
        for proc in live:
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass  # exited between poll() and the signal: nothing to stop
        deadline = self._now() + (self._drain_timeout_s + 10.0 if timeout_s is None else timeout_s)
        for proc in live:
            try:
                proc.wait(max(deadline - self._now(), 0.0))
            except subprocess.TimeoutExpired:
                log.warning("costline: gateway worker pid %d did not drain in time: killed", proc.pid)
                proc.kill()
                proc.wait()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        return [w.proc.returncode if w.proc is not None else None for w in self.workers]
