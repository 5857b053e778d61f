"""The lake where it cannot be written, and what interrupted writes leave behind.

* Reading needs no write: a lake only ``costline process`` wrote has no ``alerts/`` (nor the jobs' folders) yet, and a
  reader on a read-only mount or a full disk must still get its answer. The tests run as root, which chmod does
  not stop, so an unwritable lake is simulated: by a regular file where ``alerts/`` should be, and (as root) by
  making every write under the lake raise EROFS (``os.mkdir`` / ``os.open`` / ``open``), by chmod otherwise.
* A batch whose write fails half-way (a full disk) leaves no partial temporary file.
* A compaction killed mid-merge leaves ``.c-<id>.parquet.<pid>-<thread>.tmp``; the next compaction removes it.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import stat
import subprocess
import sys
from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest

from costline.config import Config, LakeConfig
from costline.errors import LakeError
from costline.lake import REQUESTS_SCHEMA, Lake, open_lake
from costline.lake import _lake as lake_module

TOPIC = "otlp_spans"
DAY = "2026-01-05"


def _requests(*span_ids: str) -> pa.Table:
    return pa.Table.from_pylist([{"request_id": f"r{s}", "trace_id": "t", "span_id": s, "ts": 0} for s in span_ids],
                                schema=REQUESTS_SCHEMA)


def _processed_lake(path: Path) -> Lake:
    """A lake as ``costline process`` leaves it: schema files and committed batches, no ``alerts/``."""
    lake = Lake(path).init()
    lake.commit_batch(TOPIC, 0, 0, 1, {"requests": {DAY: _requests("a", "b")}}, epoch=lake.claim(TOPIC, 0))
    lake.commit_batch(TOPIC, 0, 2, 2, {"requests": {DAY: _requests("c")}}, epoch=lake.claim(TOPIC, 0))
    return lake


def _read(lake_path: Path) -> dict[str, object]:
    con = open_lake(Config(lake=LakeConfig(path=lake_path)), create=False)
    try:
        return {"requests": con.execute("SELECT count(*) FROM requests").fetchone()[0],
                "alerts": con.execute("SELECT count(*) FROM alerts").fetchone()[0],
                "alerts_history": con.execute("SELECT count(*) FROM alerts_history").fetchone()[0],
                "alerts columns": [r[0] for r in con.execute("DESCRIBE alerts").fetchall()],
                "history types": {r[0]: r[1] for r in con.execute("DESCRIBE alerts_history").fetchall()}}
    finally:
        con.close()


# the alerts views' columns as docs/sql.md lists them, written out by hand
ALERTS_COLUMNS = ["fired_at", "resolved_at", "state", "rule", "fingerprint", "labels", "tenant", "tier", "subtype",
                  "severity", "value", "threshold", "summary", "resolved_summary", "muted"]
HISTORY_TYPES = {"ts": "TIMESTAMP", "rule": "VARCHAR", "fingerprint": "VARCHAR", "labels": "VARCHAR",
                 "tenant": "VARCHAR", "tier": "VARCHAR", "subtype": "VARCHAR", "severity": "VARCHAR",
                 "from_state": "VARCHAR", "to_state": "VARCHAR", "value": "DOUBLE", "threshold": "DOUBLE",
                 "summary": "VARCHAR", "muted": "VARCHAR"}
EXPECTED = {"requests": 3, "alerts": 0, "alerts_history": 0, "alerts columns": ALERTS_COLUMNS,
            "history types": HISTORY_TYPES}


def test_a_file_where_alerts_should_be_still_reads(tmp_path: Path) -> None:
    _processed_lake(tmp_path / "lake")
    (tmp_path / "lake" / "alerts").write_text("not a folder\n")
    assert _read(tmp_path / "lake") == EXPECTED


@pytest.fixture
def unwritable(monkeypatch: pytest.MonkeyPatch):
    """Make a folder unwritable: chmod for a user it binds; as root, every write under it raises EROFS."""
    made: list[Path] = []

    def make(root: Path) -> None:
        if os.geteuid() != 0:
            for d in [root, *(p for p in root.rglob("*") if p.is_dir())]:
                d.chmod(stat.S_IRUSR | stat.S_IXUSR)
                made.append(d)
            return
        prefix = str(root.resolve()) + os.sep

        def inside(path: object) -> bool:
            return isinstance(path, (str, os.PathLike)) and os.path.abspath(os.fspath(path)).startswith(prefix)

        def refuse(path: object) -> OSError:
            return OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))

        real_mkdir, real_os_open, real_open = os.mkdir, os.open, builtins.open
        writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

        def mkdir(path, *a, **k):
            if inside(path):
                raise refuse(path)
            return real_mkdir(path, *a, **k)

        def os_open(path, flags, *a, **k):
            if inside(path) and flags & writes:
                raise refuse(path)
            return real_os_open(path, flags, *a, **k)

        def open_(file, mode="r", *a, **k):
            if inside(file) and any(c in mode for c in "wax+"):
                raise refuse(file)
            return real_open(file, mode, *a, **k)

        monkeypatch.setattr(os, "mkdir", mkdir)
        monkeypatch.setattr(os, "open", os_open)
        monkeypatch.setattr(builtins, "open", open_)
        monkeypatch.setattr(io, "open", open_)

    yield make
    for d in made:
        d.chmod(stat.S_IRWXU)


def test_a_read_only_lake_answers_every_view(tmp_path: Path, unwritable, caplog: pytest.LogCaptureFixture) -> None:
    _processed_lake(tmp_path / "lake")
    unwritable(tmp_path / "lake")
    with pytest.raises(OSError):  # the simulation holds: nothing can be created in the lake
        (tmp_path / "lake" / "probe").mkdir()
    assert _read(tmp_path / "lake") == EXPECTED
    assert not (tmp_path / "lake" / "alerts").exists()


def test_a_batch_write_failing_half_way_leaves_no_temporary_file(tmp_path: Path, monkeypatch) -> None:
    lake = Lake(tmp_path / "lake").init()
    epoch = lake.claim(TOPIC, 0)

    class FullDisk:
        def write_table(self, table, fh, **kwargs):
            fh.write(b"PAR1" + b"\0" * 4096)  # part of the file made it to disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(lake_module, "pq", FullDisk())
    with pytest.raises(LakeError) as raised:
        lake.commit_batch(TOPIC, 0, 0, 1, {"requests": {DAY: _requests("a", "b")}}, epoch=epoch)
    said = str(raised.value)
    assert "No space left on device" in said and "nothing of it was committed" in said, said
    assert [p.name for p in (tmp_path / "lake").rglob("*") if p.name.endswith(".tmp")] == []
    assert lake.last_manifest(TOPIC, 0) is None
    monkeypatch.undo()  # space again: the same batch commits
    lake.commit_batch(TOPIC, 0, 0, 1, {"requests": {DAY: _requests("a", "b")}}, epoch=epoch)
    assert lake.last_manifest(TOPIC, 0).last_offset == 1


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def test_compaction_removes_the_merges_a_killed_compaction_left(tmp_path: Path) -> None:
    lake = _processed_lake(tmp_path / "lake")
    day = tmp_path / "lake" / "requests" / f"date={DAY}"
    dead = day / f".c-0123456789ab.parquet.{(pid := _dead_pid())}-{pid}.tmp"  # its compaction was killed
    old = day / f".c-0123456789ac.parquet.{os.getpid()}-1.tmp"  # a live pid, but written two hours before
    live = day / f".c-0123456789ad.parquet.{os.getpid()}-2.tmp"  # a compaction running now
    batch = day / ".p000-0000000000000003-0000000000000003.wdeadbeef0000.tmp"  # recovery's, not compaction's
    for f in (dead, old, live, batch):
        f.write_bytes(b"PAR1 half a merge")
    two_hours_ago = os.stat(live).st_mtime - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    merged = lake.compact(before=date(2026, 1, 6))
    assert merged == [("requests", DAY, 2, 3)]  # the two batches, their 3 rows
    assert not dead.exists() and not old.exists()
    assert live.exists() and batch.exists()
