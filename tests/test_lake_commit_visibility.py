"""The manifest is the commit point for what the views show too: a writer that dies anywhere inside
:meth:`Lake.commit_batch` never leaves rows of an uncommitted batch visible, and a batch that died after its
manifest is completed by recovery (each row exactly once). Crashes are injected into a real lake in tmp_path;
one test kills a real process (``os._exit``, as SIGKILL would) to check what it leaves on disk."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import costline.lake._lake as lake_module
from costline.config import Config, LakeConfig
from costline.lake import Lake, Manifest, WriterFenced, open_lake
from costline.processors.buffer import rows_to_tables
from tests.test_lake_views import H, call, req

TOPIC = "otlp_spans"
DAY = "date=2026-05-28"
NAME = "p000-000000000010-000000000019.otlp_spans.parquet"  # batch 2's files (partition 0, offsets 10..19)


class Killed(BaseException):
    """A writer dying at the injected point (not an Exception: nothing may catch it as a failure)."""


def batch(prefix: str, n: int):
    """``n`` requests and one priced call per request, all on H's day (requests and calls tables)."""
    reqs = [req(f"{prefix}{i}", f"t{prefix}{i}", f"s{prefix}{i}", H, "mid") for i in range(n)]
    calls = [call(f"c{prefix}{i}", f"t{prefix}{i}", H, request_id=f"{prefix}{i}", cost=0.5) for i in range(n)]
    return {"requests": rows_to_tables("requests", reqs), "calls": rows_to_tables("calls", calls)}


def seen(cfg: Config) -> tuple[list[str], int]:
    """What an analyst sees: the request ids in the ``requests`` view and the number of rows of ``calls``."""
    con = open_lake(cfg)
    try:
        ids = [r[0] for r in con.execute("SELECT request_id FROM requests ORDER BY request_id").fetchall()]
        return ids, con.execute("SELECT count(*) FROM calls").fetchone()[0]
    finally:
        con.close()


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return Config(lake=LakeConfig(path=tmp_path / "lake"))


def _die_at_rename(monkeypatch: pytest.MonkeyPatch, nth: int) -> None:
    """The writer dies at its ``nth`` rename of a staged data file (1: before any is in place)."""
    real = os.replace
    count = [0]

    class FakeOs:
        def __getattr__(self, name):
            return getattr(os, name)

        def replace(self, src, dst):
            if str(src).endswith(".tmp") and str(dst).endswith(".parquet"):
                count[0] += 1
                if count[0] == nth:
                    raise Killed(f"killed at data file rename {nth}")
            return real(src, dst)

    monkeypatch.setattr(lake_module, "os", FakeOs())


def _die_at_manifest(monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer dies while writing the batch's manifest, before its rename (the commit point)."""
    real = lake_module.atomic_write

    def atomic_write(path, *args, **kwargs):
        if path.parent.parent.parent.name == "_offsets" and path.name.endswith(".json"):
            raise Killed("killed before the manifest's rename")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(lake_module, "atomic_write", atomic_write)


# (where the writer dies, whether batch 2 is committed when it does); batch 2 = 3 requests B0..B2 + 3 calls.
# The sorted manifest lists calls/ before requests/, staged in table order requests, calls.
CRASHES = [
    ("at the manifest, all data files staged", lambda mp: _die_at_manifest(mp), False),
    ("at the first data file rename", lambda mp: _die_at_rename(mp, 1), True),
    ("between the two data file renames", lambda mp: _die_at_rename(mp, 2), True),
]


@pytest.mark.parametrize("where, inject, committed", CRASHES, ids=[c[0] for c in CRASHES])
def test_a_crashed_commit_shows_no_uncommitted_row_and_recovery_completes_a_committed_one(
        cfg: Config, monkeypatch: pytest.MonkeyPatch, where, inject, committed) -> None:
    lake = Lake(cfg.lake.path).init()
    lake.commit_batch(TOPIC, 0, 0, 9, batch("A", 2))  # batch 1: committed whole
    inject(monkeypatch)
    with pytest.raises(Killed):
        lake.commit_batch(TOPIC, 0, 10, 19, batch("B", 3))
    monkeypatch.undo()

    manifest = lake.offsets_dir(TOPIC, 0) / "000000000019.json"
    ids, calls = seen(cfg)
    # whatever the crash point: a row of batch 2 in a view only once its manifest is there
    assert manifest.exists() or (ids, calls) == (["A0", "A1"], 2)
    assert manifest.exists() == committed
    if not committed:  # nothing of batch 2 before its commit point
        assert (ids, calls) == (["A0", "A1"], 2)
    else:  # a part of a committed batch at most, each row once
        assert set(ids) <= {"A0", "A1", "B0", "B1", "B2"} and len(ids) == len(set(ids))
        assert {"A0", "A1"} <= set(ids) and calls in (2, 5)

    next_offset, removed = lake.recover(TOPIC, 0)
    assert next_offset == (20 if committed else 10)
    assert [p for p in removed if p.name.startswith("p")] == []  # never a file in place
    assert seen(cfg) == ((["A0", "A1", "B0", "B1", "B2"], 5) if committed else (["A0", "A1"], 2))
    leftovers = sorted(p.name for p in cfg.lake.path.glob("*/date=*/.*.tmp"))
    assert leftovers == []
    assert lake.recover(TOPIC, 0) == (next_offset, [])  # nothing left to do


def test_a_commit_killed_after_its_manifest_is_finished_by_recovery_and_one_before_leaves_nothing(
        cfg: Config, tmp_path: Path) -> None:
    """A real kill (no clean-up runs): the staged files stay on disk, hidden from the views; recovery renames a
    committed batch's into place and deletes an uncommitted batch's."""
    Lake(cfg.lake.path).init()
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
        import costline.lake._lake as L
        from costline.lake import Lake
        from tests.test_lake_commit_visibility import batch
        real_write, real_replace = L.atomic_write, os.replace
        where = sys.argv[1]
        def atomic_write(path, *a, **k):
            if where == "manifest" and path.name.endswith(".json"):
                os._exit(137)
            return real_write(path, *a, **k)
        class FakeOs:
            def __getattr__(self, name): return getattr(os, name)
            def replace(self, src, dst):
                if where == "rename" and str(src).endswith(".tmp"):
                    os._exit(137)
                return real_replace(src, dst)
        L.atomic_write, L.os = atomic_write, FakeOs()
        Lake({str(cfg.lake.path)!r}).commit_batch("{TOPIC}", 0, {{first}}, {{last}}, batch(sys.argv[2], 2))
    """)
    lake = Lake(cfg.lake.path)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    # (where it dies, batch, offsets, what the views show before recovery, recovery's next offset and removals)
    for where, prefix, first, last, before, after in (
            ("rename", "K", 0, 9, ([], 0), (10, [])),  # committed before the kill: completed, nothing removed
            ("manifest", "X", 10, 19, (["K0", "K1"], 2), (10, ["calls", "requests"]))):  # not committed: removed
        done = subprocess.run([sys.executable, "-c", script.format(first=first, last=last), where, prefix],
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 137, done.stderr
        staged = sorted(p.parent.parent.name for p in cfg.lake.path.glob(f"*/{DAY}/.*.tmp"))
        assert staged == ["calls", "requests"]  # both files still staged, under hidden names
        assert seen(cfg) == before
        next_offset, removed = lake.recover(TOPIC, 0)
        assert (next_offset, sorted(p.parent.parent.name for p in removed)) == after
        assert seen(cfg) == (["K0", "K1"], 2)
        assert list(cfg.lake.path.glob(f"*/{DAY}/.*.tmp")) == []


def test_a_fenced_writer_leaves_nothing(cfg: Config) -> None:
    lake = Lake(cfg.lake.path).init()
    old = lake.claim(TOPIC, 0)
    lake.commit_batch(TOPIC, 0, 0, 9, batch("A", 1), epoch=old)
    new = lake.claim(TOPIC, 0)  # a rebalance: another writer owns the partition now
    with pytest.raises(WriterFenced):
        lake.commit_batch(TOPIC, 0, 10, 19, batch("Z", 2), epoch=old)
    assert not (lake.offsets_dir(TOPIC, 0) / "000000000019.json").exists()
    assert sorted(p.name for p in cfg.lake.path.glob(f"*/{DAY}/*")) == [
        "p000-000000000000-000000000009.otlp_spans.parquet"] * 2
    assert lake.recover(TOPIC, 0) == (10, [])
    assert seen(cfg) == (["A0"], 1)
    assert lake.commit_batch(TOPIC, 0, 10, 19, batch("B", 1), epoch=new).epoch == new


def test_manifests_name_their_writer_and_old_ones_still_read(cfg: Config) -> None:
    lake = Lake(cfg.lake.path).init()
    m = lake.commit_batch(TOPIC, 0, 10, 19, batch("A", 1))
    assert m.writer is not None and m.writer.startswith("w")
    assert sorted(m.files) == [f"calls/{DAY}/{NAME}", f"requests/{DAY}/{NAME}"]
    assert lake.last_manifest(TOPIC, 0) == m
    assert lake.commit_batch(TOPIC, 0, 20, 20, {}).writer is None  # nothing staged, nothing to name
    old = ('{"format": 2, "topic": "otlp_spans", "partition": 0, "first_offset": 0, "last_offset": 9, '
           '"files": ["requests/date=2026-05-28/p000-000000000000-000000000009.otlp_spans.parquet"], "epoch": 3}')
    assert Manifest.from_json(old).writer is None
    with pytest.raises(ValueError):
        Manifest.from_json(old[:-1] + ', "writer": "../../etc"}')


def test_recovery_completes_a_committed_batch_that_compaction_ran_past(cfg: Config,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Compaction between the crash and recovery merges what is in place and leaves the staged files be."""
    lake = Lake(cfg.lake.path).init()
    lake.commit_batch(TOPIC, 0, 0, 9, batch("A", 2))
    lake.commit_batch(TOPIC, 1, 0, 4, batch("C", 1))
    _die_at_rename(monkeypatch, 2)  # requests/ in place, calls/ still staged
    with pytest.raises(Killed):
        lake.commit_batch(TOPIC, 0, 10, 19, batch("B", 3))
    monkeypatch.undo()
    lake.compact(before=H.date() + dt.timedelta(days=1))
    assert lake.recover(TOPIC, 0) == (20, [])
    assert seen(cfg) == (["A0", "A1", "B0", "B1", "B2", "C0"], 6)
