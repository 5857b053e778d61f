"""A throwaway local PostgreSQL cluster for the table lake's shared Iceberg catalog.

Uses the PostgreSQL server binaries of the host (Debian: ``apt-get install postgresql``, found under
``/usr/lib/postgresql/<version>/bin`` or on PATH): ``initdb`` a cluster in a folder (trust auth, loopback
only), ``pg_ctl start`` on a given port, ``stop``. As root, the server runs as the ``postgres`` user
(PostgreSQL refuses to run as root). Several processor hosts point ``[lake] catalog_uri`` at one such
(or any real) PostgreSQL: ``postgresql+psycopg2://costline@host:port/postgres``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from costline.errors import LakeError

__all__ = ["LocalPostgres", "PostgresNotFound", "postgres_bin_dir"]


class PostgresNotFound(LakeError):
    """No PostgreSQL server binaries (initdb, pg_ctl) on this host."""


def postgres_bin_dir() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl`` (the newest Debian version first, then PATH)."""
    for cand in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True):
        if Path(cand, "initdb").exists() and Path(cand, "pg_ctl").exists():
            return Path(cand)
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    raise PostgresNotFound("PostgreSQL server binaries not found: `apt-get install postgresql` "
                           "(or point [lake] catalog_uri at an existing PostgreSQL)")


class LocalPostgres:
    """One cluster under ``data_dir`` listening on ``host:port`` (user ``costline``, trust auth)."""

    def __init__(self, data_dir: Path | str, *, port: int, host: str = "127.0.0.1", user: str = "costline") -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self.host = host
        self.user = user
        self.bin = postgres_bin_dir()

    @property
    def uri(self) -> str:
        return f"postgresql+psycopg2://{self.user}@{self.host}:{self.port}/postgres"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError as exc:
                raise LakeError("running as root needs a `postgres` system user to run PostgreSQL") from exc
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=False)

    def up(self) -> str:
        """initdb (once) and start; returns the SQLAlchemy URL."""
        pg = self.data_dir / "pg"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.data_dir, "postgres")
        if not (pg / "PG_VERSION").exists():
            r = self._run(str(self.bin / "initdb"), "-D", str(pg), "-A", "trust", "-U", self.user,
                          "--no-sync", "-E", "UTF8")
            if r.returncode != 0:
                raise LakeError(f"initdb failed: {r.stderr.strip()[-500:]}")
        r = self._run(str(self.bin / "pg_ctl"), "-D", str(pg), "-w", "-t", "60", "-l", str(self.data_dir / "pg.log"),
                      "-o", f"-h {self.host} -p {self.port} -k {self.data_dir} -F -c max_connections=200", "start")
        if r.returncode != 0:
            raise LakeError(f"PostgreSQL did not start: {r.stdout.strip()[-300:]} {r.stderr.strip()[-300:]} "
                            f"(see {self.data_dir / 'pg.log'})")
        return self.uri

    def down(self) -> None:
        pg = self.data_dir / "pg"
        if (pg / "postmaster.pid").exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(pg), "-m", "fast", "-w", "stop")
