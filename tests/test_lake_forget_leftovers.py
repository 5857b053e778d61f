"""What a killed writer leaves staged in a folder of results (the jobs' and distillation's per-request items, the
alerts' exported files): a forget rewrites such a file as ``.<name>.parquet.<pid>-<thread>.tmp`` and renames it
over the old one (the jobs and the alerts' export write theirs the same way), so a forget killed mid-rewrite leaves
that hidden file, which may hold the very prompts it was erasing. The next forget deletes it once its writer is
gone: its pid is no live process and it was last written ten minutes before the forget started (a job on another
host or container writes there too, its pid meaningless here), or it was last written over an hour before; one
younger is named as not covered. Before, only the tables' day folders were swept: the leftover stayed for ever.

The pids are real: a finished child process's (dead), this test process's (alive).
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from costline.lake import Lake
from tests.test_lake_erasure import _three_day_lake
from tests.test_lake_readonly_and_tmp import _dead_pid

#: The folders of results under the lake a forget rewrites files in (written out here, not taken from costline).
FOLDERS = ["jobs/eval_items", "jobs/shadow_items", "distill_results/distill_items", "alerts/episodes",
           "alerts/history"]

TWO_HOURS = 7200
#: Older than the ten minutes a dead pid's staged results file must have been left alone (it may be a job's on
#: another host or container, whose pid means nothing here).
ELEVEN_MINUTES = 660


def _leftovers(folder: Path) -> tuple[set[str], set[str]]:
    """Hidden files written into ``folder``: (those the next forget must delete, those it must keep)."""
    dead, live = _dead_pid(), os.getpid()
    gone = {
        f".run1.parquet.{dead}-{dead}.tmp": ELEVEN_MINUTES,  # a forget (or job) killed mid-rewrite
        f".run2.parquet.{live}-1.tmp": TWO_HOURS,  # a live pid, but last written two hours before: taken since
    }
    kept = {
        f".run3.parquet.{live}-2.tmp": 0,  # a writer at work now
        f".run7.parquet.{dead}-{dead}.tmp": 0,  # written just now by a pid not of this host: a job elsewhere, maybe
        ".run4.parquet.w0123abcd.tmp": 0,  # a batch's staged name (recovery's), not atomic_path's
        f".run5.parquet.{dead}.tmp": 0,  # no thread: not atomic_path's name
        f".run6.json.{dead}-{dead}.tmp": 0,  # not a Parquet file's
        f".notes.{dead}-{dead}": 0,  # no .tmp
        ".editor.swp": TWO_HOURS,
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, age in (gone | kept).items():
        f = folder / name
        f.write_bytes(b"PAR1 half a rewrite: the prompts of acme")
        if age:
            then = f.stat().st_mtime - age
            os.utime(f, (then, then))
    return set(gone), set(kept)


@pytest.mark.parametrize("folder", FOLDERS)
def test_the_next_forget_deletes_what_a_killed_writer_left_in_a_folder_of_results(tmp_path: Path,
                                                                                   folder: str) -> None:
    lake = _three_day_lake(tmp_path / "lake")
    gone, kept = _leftovers(lake.path / folder)

    lake.forget(["nobody"])

    left = {f.name for f in (lake.path / folder).iterdir()}
    assert left == kept, f"deleted {kept - left}, left {gone & left}"


def test_the_forget_rewrites_its_results_file_and_deletes_the_leftover_beside_it(tmp_path: Path) -> None:
    """A results file holding acme's row next to the staged rewrite a killed forget of acme left: the forget run
    again removes the row from the file and the leftover (its own staged file, a live writer's, is renamed)."""
    from costline.jobs.store import JOB_SCHEMAS

    lake = _three_day_lake(tmp_path / "lake")
    items = lake.path / "jobs" / "eval_items"
    gone, kept = _leftovers(items)
    run = items / "run1.parquet"
    pq.write_table(pa.Table.from_pylist(
        [{"run_id": "run1", "request_id": "r1", "tenant": "acme", "query": "acme's prompt"},
         {"run_id": "run1", "request_id": "r2", "tenant": "globex", "query": "globex's prompt"}],
        schema=JOB_SCHEMAS["eval_items"]), run)

    lake.forget(["acme"])

    assert {f.name for f in items.iterdir()} == kept | {"run1.parquet"}
    assert pq.read_table(run, columns=["tenant", "query"]).to_pylist() == [
        {"tenant": "globex", "query": "globex's prompt"}]


def test_a_dry_run_deletes_nothing(tmp_path: Path) -> None:
    lake = _three_day_lake(tmp_path / "lake")
    gone, kept = _leftovers(lake.path / "jobs" / "eval_items")

    Lake(lake.path).forget(["acme"], dry_run=True)

    assert {f.name for f in (lake.path / "jobs" / "eval_items").iterdir()} == gone | kept


def test_a_leftover_too_new_to_delete_is_named_and_the_forget_exits_3(tmp_path: Path) -> None:
    """A dead pid's staged file written two minutes ago (a forget killed just now, run again at once) is kept — it
    may be a job's on another host — but named as not covered, and `costline lake forget` exits 3 (run it again).
    Before the report said nothing: the operator had no reason to run it again."""
    from tests.test_lake_erasure import _cli

    lake = _three_day_lake(tmp_path / "lake")
    items = lake.path / "jobs" / "eval_items"
    items.mkdir(parents=True)
    dead = _dead_pid()
    young = items / f".run1.parquet.{dead}-{dead}.tmp"
    young.write_bytes(b"PAR1 half a rewrite: the prompts of acme")
    then = young.stat().st_mtime - 120
    os.utime(young, (then, then))

    report = lake.forget(["acme"])
    assert report.staged_left == (young,) and young.exists()
    assert [line for line in report.lines() if str(young) in line][0].startswith("not covered: ")

    result = _cli({"COSTLINE_LAKE_PATH": str(lake.path)}, "lake", "forget", "--tenant", "acme")
    assert result.exit_code == 3, result.output
    assert f"not covered: {young} is a staged file" in result.output and young.exists()


def test_one_leftover_that_cannot_be_removed_does_not_keep_the_others(tmp_path: Path) -> None:
    """A folder named like a staged file (it cannot be unlinked) and a name holding a number no pid can be: the sweep
    goes on past both and deletes the real leftover beside them; the forget does not fail. Before, the folder's
    error ended the sweep of that folder, and the huge number raised OverflowError out of the forget."""
    lake = _three_day_lake(tmp_path / "lake")
    items = lake.path / "jobs" / "eval_items"
    items.mkdir(parents=True)
    dead = _dead_pid()
    (items / f".a.parquet.{dead}-1.tmp").mkdir()
    huge = items / ".b.parquet.99999999999999999999-1.tmp"
    real = items / f".c.parquet.{dead}-2.tmp"
    for f in (huge, real):
        f.write_bytes(b"PAR1 half a rewrite")
        then = f.stat().st_mtime - ELEVEN_MINUTES
        os.utime(f, (then, then))

    lake.forget(["acme"])

    assert sorted(f.name for f in items.iterdir()) == [f".a.parquet.{dead}-1.tmp"]
