"""costline.fsutil.atomic_write and costline.sqlutil.sql_str: the shared small helpers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

from costline.fsutil import atomic_path, atomic_write, synced_write, tmp_path_for
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
