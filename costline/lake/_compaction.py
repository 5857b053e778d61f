"""Compaction: each closed day's committed files of a table merged into one ``c-…`` file."""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from costline.errors import LakeError
from costline.fsutil import atomic_path, fsync_dir
from costline.lake._files import EMPTY_FILE, data_file_topic, parse_data_file_name, topic_tag
from costline.lake._oddfiles import UNREADABLE, file_problem, set_aside
from costline.lake._schema import ONE_ROW_PER_SPAN, TABLES
from costline.sqlutil import sql_str

if TYPE_CHECKING:  # pragma: no cover
    from costline.lake._lake import Lake

__all__ = ["RESULT_TMP_MIN_AGE_S", "STALE_TMP_AGE_S", "committed_offsets_by_topic", "compact"]

log = logging.getLogger("costline.lake")

#: A staged merge (``.c-<id>.parquet.<pid>-<thread>.tmp``, :func:`costline.fsutil.atomic_path`'s name) or a staged
#: rewrite of a data file by forget / redact (``.p003-….parquet.<pid>-<thread>.tmp``, ``.c-….parquet.…``) whose pid
#: is alive is still deleted when last written this long (s) before a compaction started: its pid was taken since.
STALE_TMP_AGE_S = 3600.0
#: Those staged files' names (never a batch's staged file, ``.<name>.w<writer>.tmp``: recovery's).
_STAGED_MERGE = re.compile(r"^\.(?:c-[^/]+|p\d+-\d+-\d+(?:\.[A-Za-z0-9._-]+)?)\.parquet\.(\d+)(?:-\d+)?\.tmp$")
#: A staged rewrite of a file of results (a folder of ``ITEM_FILES`` / ``ALERT_FILES``, :mod:`costline.lake._erasure`)
#: by forget, or by the job or alert export writing it: ``.<name>.parquet.<pid>-<thread>.tmp``, the name
#: :func:`costline.fsutil.atomic_path` gives ``<name>.parquet``.
_STAGED_RESULT = re.compile(r"^\.[^/]+\.parquet\.(\d+)-\d+\.tmp$")
#: How long (s) before a run started a staged results file whose pid is no live process here must have been last
#: written to be deleted: the jobs and the alerts' export write there without the lake's maintenance lock, possibly
#: from another host or container (its pid means nothing here), and a file written this recently may be theirs.
RESULT_TMP_MIN_AGE_S = 600.0


def committed_offsets_by_topic(lake: "Lake") -> dict[str, dict[int, int]]:
    """``{topic tag: {partition: last committed offset}}`` (tags as in data file names)."""
    out: dict[str, dict[int, int]] = {}
    root = lake.path / "_offsets"
    if not root.is_dir():
        return out
    for pdir in root.glob("*/p[0-9]*"):  # p000 ... p999, p1000 ... (a partition's number, at least 3 digits)
        if not pdir.name[1:].isdigit():
            continue
        last = max((int(m.stem) for m in pdir.glob("[0-9]*.json") if m.stem.isdigit()), default=None)
        if last is not None:
            by_partition = out.setdefault(topic_tag(pdir.parent.name), {})
            part = int(pdir.name[1:])
            by_partition[part] = max(by_partition.get(part, -1), last)
    return out


def compact(lake: "Lake", *, before: date | None = None) -> list[tuple[str, str, int, int]]:
    """Merge each day's committed files of every table into one file; return
    ``[(table, date, files merged, rows kept)]``.

    Only closed days (``before``, default today UTC) and only files a manifest committed are
    merged, so a running processor and crash recovery are never disturbed: the merged file is
    named ``c-…`` (not a ``pNNN-first-last`` batch file, which recovery may delete) and is
    written (tmp + fsync + rename) before the files it replaces are removed. A crash between
    the two leaves rows twice on disk, which the views already read once (one row per
    (trace_id, span_id)); the next compaction merges them away.

    A compaction killed mid-merge leaves its merged file staged (``.c-<id>.parquet.<pid>-<thread>.tmp``, never
    read by the views); each compaction deletes those of every folder it visits whose writer is gone: its pid
    is no live process here, or the file was last written before this compaction started by more than
    :data:`STALE_TMP_AGE_S` (a pid taken since by another process).

    ``date=1970-01-01`` is merged too: it holds the rows whose span had no usable time (``ts`` NULL), filed
    there every flush that had one. Its zero-row schema files (``_empty.parquet``, :meth:`Lake.init`) are
    never merged nor removed: they are no data file.
    """
    if not lake.path.is_dir():  # no lake (yet): nothing to compact, and no folder made for the lock
        return []
    with lake._maintenance_lock():  # one rewrite of committed files at a time: forget, redact (_erasure.py)
        return _compact(lake, before or datetime.now(UTC).date())


def _compact(lake: "Lake", before: date) -> list[tuple[str, str, int, int]]:
    import duckdb

    started = time.time()
    committed = committed_offsets_by_topic(lake)
    done: list[tuple[str, str, int, int]] = []
    failed: list[str] = []
    for table in TABLES:
        for day_dir in sorted(lake.table_dir(table).glob("date=*")):
            _remove_stale_tmps(day_dir, started)
            day = day_dir.name.removeprefix("date=")
            if day >= before.isoformat():
                continue
            files = [f for f in sorted(day_dir.glob("*.parquet"))
                     if f.name != EMPTY_FILE and _compactable(f, committed)]
            if len(files) < 2:
                continue
            # a file DuckDB cannot read would stop this day and every one after it: set it aside
            files = [f for f in files if not _set_aside_if_unreadable(f, table)]
            if len(files) < 2:
                continue
            globs = "[" + ", ".join(sql_str(f) for f in files) + "]"
            try:
                with atomic_path(day_dir / f"c-{uuid.uuid4().hex[:12]}.parquet") as tmp:
                    con = duckdb.connect()
                    try:
                        # hive_partitioning off: the folder's date is no column of the files
                        con.execute(
                            f"COPY (SELECT * FROM read_parquet({globs}, union_by_name = true, "
                            f"hive_partitioning = false) {ONE_ROW_PER_SPAN} ORDER BY ts) "
                            f"TO {sql_str(tmp)} (FORMAT parquet, COMPRESSION zstd)"
                        )
                        rows = con.execute(f"SELECT count(*) FROM read_parquet({sql_str(tmp)})").fetchone()[0]
                    finally:
                        con.close()
            except (duckdb.Error, OSError) as exc:  # the day's files stay as they were; the other days go on
                if _disk_full(exc):  # so would every other day's merge: stop, say what to do once
                    raise LakeError(_disk_full_message(lake, day_dir, done, failed)) from None
                if not isinstance(exc, duckdb.Error):
                    raise
                failed.append(f"{day_dir}: {str(exc).splitlines()[0]}")
                continue
            for f in files:
                f.unlink(missing_ok=True)
            fsync_dir(day_dir)
            done.append((table, day, len(files), int(rows)))
    if failed:
        raise LakeError(
            f"compaction merged {len(done)} table-days but could not merge {len(failed)}, whose files were left "
            "as they were (the views still read them): " + "; ".join(failed) + ". Move the file named out of "
            "the lake folder (restore it from its source) and compact again")
    return done


#: How DuckDB words a write that found the disk full (its IO Error holds the OS's text, and "errno":"28").
_DISK_FULL_TEXT = ("No space left on device", "Disk quota exceeded")


def _disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the user's quota) is full: errno ENOSPC / EDQUOT, or DuckDB's text of it."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return any(t in text for t in _DISK_FULL_TEXT)


def _disk_full_message(lake: "Lake", day_dir: Path, done: list[tuple[str, str, int, int]], failed: list[str]) -> str:
    try:
        free = f"{shutil.disk_usage(lake.path).free:,} bytes free"
    except OSError:
        free = "free space unknown"
    merged = f"merged {len(done)} table-days, then " if done else ""
    others = (f" ({len(failed)} other table-days could not be merged either: " + "; ".join(failed) + ")"
              if failed else "")
    return (f"compaction {merged}ran out of disk space merging {day_dir} (No space left on device; {free} on "
            f"{lake.path}): the files not merged were left as they were, nothing of them was changed{others}. "
            "Free disk space on that filesystem and compact again")


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # OverflowError: a number no pid can be (a name made by hand)
        return False
    except OSError:  # PermissionError: a live process of another user
        return True
    return True


def _remove_stale_tmps(folder: Path, started: float, staged: re.Pattern[str] = _STAGED_MERGE, *,
                       min_age_s: float = 0.0) -> list[Path]:
    """Delete the files a killed writer left staged in ``folder``: those whose name ``staged`` matches (its first
    group: the writer's pid) and whose writer is gone (see :func:`compact`), a dead pid's only once last written
    ``min_age_s`` before ``started``. By default the merged files of a killed compaction and the rewrites of a
    killed forget / redact in a table's day folder. Returns the dead pids' files kept for being younger than
    ``min_age_s`` (a caller says so: they may hold what it was erasing). One file that cannot be removed is logged
    and the others are still looked at."""
    removed: list[str] = []
    young: list[Path] = []
    try:
        tmps = list(folder.glob(".*.tmp"))
    except OSError as exc:  # the next run tries again: this one goes on
        log.warning("could not look for the staged files a killed writer left in %s: %s", folder, exc)
        return young
    for tmp in tmps:
        m = staged.match(tmp.name)
        if m is None:
            continue
        try:
            written = tmp.stat().st_mtime
            if written < started - STALE_TMP_AGE_S or not _pid_alive(int(m.group(1))):
                if written >= started - min_age_s and written >= started - STALE_TMP_AGE_S:
                    young.append(tmp)
                    continue
                tmp.unlink()
                removed.append(tmp.name)
        except FileNotFoundError:  # renamed into place or removed by its writer meanwhile
            continue
        except OSError as exc:  # (a folder of that name...): the next run tries again, the others go on now
            log.warning("could not remove %s, a staged file a killed writer left: %s", tmp, exc)
    if removed:
        log.warning("removed %d staged file(s) a killed writer (compaction, forget, redact, job) left unfinished "
                    "in %s: %s", len(removed), folder, ", ".join(sorted(removed)))
    return young


def _set_aside_if_unreadable(path: Path, table: str) -> bool:
    why = file_problem(path, table)
    if why is None:
        return False
    set_aside(path, UNREADABLE, why, f"restore it from where it came from and rename it back to {path.name}, "
              "then compact again; delete it if it is the leftover of a crashed write")
    return True


def _compactable(path: Path, committed: Mapping[str, Mapping[int, int]]) -> bool:
    """A compacted file, or a batch file its topic's manifests committed (topic-less: any topic's)."""
    if path.name.startswith("c-"):
        return True
    parsed = parse_data_file_name(path.name)
    if parsed is None:
        return False
    tag = data_file_topic(path.name)
    tags = committed.values() if tag is None else [committed.get(tag, {})]
    return any(parsed[2] <= by_partition.get(parsed[0], -1) for by_partition in tags)
