"""costline.fsutil (atomic_write, file_lock) and costline.sqlutil.sql_str: the shared small helpers."""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import duckdb
import pytest

from costline.fsutil import atomic_path, atomic_write, exclusive_lock, file_lock, synced_write, tmp_path_for
from costline.sqlutil import sql_str


def test_atomic_write_replaces_the_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    target.write_text("old")
    with atomic_write(target, "w", encoding="utf-8") as fh:
        fh.write("new")
        assert target.read_text() == "old"  # not visible until the block ends
        assert tmp_path_for(target).exists() and tmp_path_for(target).name.startswith(".")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def _half_write_file(target: Path) -> None:
    with atomic_write(target) as fh:
        fh.write(b"half")
        raise RuntimeError("disk on fire")


def _half_write_path(target: Path) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk on fire")


@pytest.mark.parametrize("half_write", [_half_write_file, _half_write_path])
def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path: Path, half_write: Callable[[Path], None]) -> None:
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk on fire"):
        half_write(target)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


@pytest.mark.parametrize("mode", ["r", "rb", "a", "w+b"])
def test_atomic_write_refuses_modes_that_are_not_a_fresh_write(tmp_path: Path, mode: str) -> None:
    with pytest.raises(ValueError, match="writing only"):
        with atomic_write(tmp_path / "x", mode):
            pass


def test_atomic_path_renames_what_a_path_writer_wrote(tmp_path: Path) -> None:
    target = tmp_path / "t.parquet"
    with atomic_path(target) as tmp:
        duckdb.connect().execute(f"COPY (SELECT 42 AS x) TO {sql_str(tmp)} (FORMAT parquet)")
        assert not target.exists() and tmp.name.startswith(".") and tmp.name.endswith(".tmp")
    assert duckdb.connect().execute(f"SELECT x FROM read_parquet({sql_str(target)})").fetchone() == (42,)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]


def test_synced_write_writes_in_place_without_renaming(tmp_path: Path) -> None:
    target = tmp_path / ".staged.tmp"
    with synced_write(target, "w", encoding="utf-8") as fh:
        fh.write("batch")
    assert target.read_text() == "batch"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".staged.tmp"]
    with pytest.raises(ValueError, match="writing only"):
        with synced_write(target, "a"):
            pass


@pytest.mark.parametrize(("text", "literal"), [
    ("plain", "'plain'"),
    ("it's", "'it''s'"),
    ("''", "''''''"),
    ("/lake/o'brien/*.parquet", "'/lake/o''brien/*.parquet'"),
])
def test_sql_str_round_trips_through_duckdb(text: str, literal: str) -> None:
    assert sql_str(text) == literal
    assert duckdb.connect().execute(f"SELECT {sql_str(text)}").fetchone()[0] == text


@pytest.mark.skipif(os.geteuid() != 0, reason="acting as a second user needs root")
def test_a_lock_file_another_user_created_can_still_be_locked() -> None:
    """A lake shared by two users (an operator's `sudo costline lake compact`, then the service account's): the lock
    file the first one made (0644 under umask 022, owned by them) is locked by the second too — flock needs only a
    descriptor, so it is opened read-only. Opened for writing, the second user got EACCES and every later compaction
    failed."""
    folder = Path(tempfile.mkdtemp(prefix="costline-lock-"))
    try:
        os.chmod(folder, 0o777)  # a shared folder: the other user may create and read files in it
        lock = folder / ".maintenance.lock"
        with exclusive_lock(lock):  # made by root, as the first user's compaction would
            pass
        os.chmod(lock, 0o644)  # as the usual umask 022 leaves it: others may read it, not write it
        assert stat.S_IMODE(lock.stat().st_mode) == 0o644 and lock.stat().st_uid == 0
        pid = os.fork()
        if pid == 0:  # the other user: nobody
            code = 1
            try:
                os.setgid(65534)
                os.setuid(65534)
                with exclusive_lock(lock):
                    code = 0
            except OSError:
                code = 13
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        shutil.rmtree(folder)


def _granted(path: Path, operation: int) -> bool:
    """Whether another descriptor of ``path`` gets the ``flock`` ``operation`` at once (a lock held elsewhere in this
    process conflicts as one of another process would: flock locks belong to the open file)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


@pytest.mark.parametrize(("shared", "other", "granted"), [
    (True, fcntl.LOCK_SH, True),    # shared locks coexist (two dry runs read at once)
    (True, fcntl.LOCK_EX, False),   # a shared lock keeps out an exclusive one (a compaction waits for the dry run)
    (False, fcntl.LOCK_SH, False),  # and the other way round
    (False, fcntl.LOCK_EX, False),
], ids=["shared-shared", "shared-exclusive", "exclusive-shared", "exclusive-exclusive"])
def test_file_lock_keeps_out_what_conflicts(tmp_path: Path, shared: bool, other: int, granted: bool) -> None:
    lock = tmp_path / ".lock"
    lock.touch()
    with file_lock(lock, shared=shared):
        assert _granted(lock, other) is granted
    assert _granted(lock, fcntl.LOCK_EX)  # released when the block ends


@pytest.mark.parametrize(("take", "made"), [
    (lambda p: file_lock(p), 0o644),            # exclusive: made, 0o666 less the umask
    (lambda p: exclusive_lock(p), 0o644),
    (lambda p: exclusive_lock(p, 0o600), 0o600),  # the gateway's keys lock
    (lambda p: file_lock(p, shared=True), None),  # shared: never made, FileNotFoundError
], ids=["exclusive", "exclusive_lock", "exclusive_lock-0600", "shared"])
def test_file_lock_on_a_missing_file(tmp_path: Path, take: Callable[[Path], AbstractContextManager[None]],
                                     made: int | None) -> None:
    lock = tmp_path / ".lock"
    umask = os.umask(0o022)
    try:
        if made is None:
            with pytest.raises(FileNotFoundError):
                with take(lock):
                    pass
            assert not lock.exists()
        else:
            with take(lock):
                assert not _granted(lock, fcntl.LOCK_SH)
            assert stat.S_IMODE(lock.stat().st_mode) == made
    finally:
        os.umask(umask)
