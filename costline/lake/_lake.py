"""The :class:`Lake`: its folders, the commit protocol and writer fencing (recovery and compaction
live in their own modules; the class's methods hand over to them)."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

from costline.errors import LakeError
from costline.fsutil import atomic_write, exclusive_lock, file_lock, fsync_dir, synced_write
from costline.lake import _compaction, _erasure, _recovery
from costline.lake._files import (
    EMPTY_DATE,
    EMPTY_FILE,
    OFFSET_DIGITS,
    Manifest,
    data_file_name,
    data_file_topic,
    parse_data_file_name,
    topic_tag,
)
from costline.lake._schema import DICTIONARY_COLUMNS, SCHEMAS, same_schema
from costline.timeutil import utc_now

__all__ = ["Lake", "NoLake", "OffsetsWentBack", "WriterFenced", "lake_exists"]

log = logging.getLogger("costline.lake")

#: Next to a partition's ``epoch``: who made its current claim (:meth:`Lake.claim`'s ``claimant``).
CLAIMANT_FILE = "claimant.json"
#: At the lake's root: the lock the commands that rewrite committed files (compact, forget, redact) take one at a
#: time (:meth:`Lake._maintenance_lock`).
MAINTENANCE_LOCK = ".maintenance.lock"


class WriterFenced(LakeError):
    """A writer's claim on a partition is stale: another writer claimed it since (a rebalance)."""


class OffsetsWentBack(LakeError):
    """A batch's offsets start at or before what the lake already committed for its partition, or its file name
    is taken: Kafka's offsets started over (the topic was deleted and created again, the broker's storage was
    wiped). The batch is refused, nothing written: committing it would overwrite committed data."""


class NoLake(LakeError):
    """A command that only reads the lake found none at ``[lake] path`` (a mistyped path, or nothing
    processed yet): reading on would answer from an empty lake made up on the spot."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        where = ("does not exist" if not self.path.exists() else
                 "is not a folder" if not self.path.is_dir() else
                 f"holds none of the lake's tables ({', '.join(t + '/' for t in SCHEMAS)})")
        super().__init__(f"no lake at {self.path}: the path {where}: check [lake] path / COSTLINE_LAKE_PATH "
                         "(and --config), or run `costline process` first to create the lake")


#: Why a lock file cannot be opened for writing where the lake can still be read: a read-only filesystem, no permission.
_READ_ONLY: Final = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


@contextlib.contextmanager
def _shared_lock(path: Path) -> Iterator[bool]:
    """A shared lock on ``path`` for the ``with`` block (:func:`~costline.fsutil.file_lock`: opened read-only, never
    created): yields True; False, holding nothing, when ``path`` cannot be opened (a read-only lake no compaction
    ever ran on, none can run on now) or locked (a filesystem without locks: NFS with no lock daemon); a dry run
    then reads without it, and its report says so."""
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(file_lock(path, shared=True))
            locked = True
        except OSError as exc:
            log.warning("the maintenance lock %s cannot be opened or locked (%s): reading without it", path, exc)
            locked = False
        yield locked


def lake_exists(path: Path | str) -> bool:
    """True when ``path`` holds a lake: a folder with at least one table folder (``requests/``...), as
    :meth:`Lake.init` or a first committed batch leave it."""
    root = Path(path)
    try:
        return root.is_dir() and any((root / table).is_dir() for table in SCHEMAS)
    except OSError:
        return False


def _holds(path: Path, manifest: Manifest) -> bool:
    """True when the manifest at ``path`` is ``manifest`` (its rename, the commit point, happened)."""
    try:
        return path.read_text(encoding="utf-8") == manifest.to_json()
    except (OSError, ValueError):  # none there, or not this manifest (not even text)
        return False


class Lake:
    """A lake rooted at ``path``: writes committed batches, recovers partitions, lists files."""

    #: :meth:`commit_batch` takes ``topic_id`` and records it in the manifest (the processor asks).
    records_topic_id = True
    #: :meth:`claim` takes ``claimant`` and :meth:`claimant` tells it (the processor asks).
    records_claimant = True
    #: :meth:`commit_batch` takes ``record_time_ms`` and :meth:`record_times` tells it (the processor asks).
    records_record_time = True

    def __init__(self, path: Path | str, *, keep_manifests: int = 20) -> None:
        self.path = Path(path)
        self.keep_manifests = keep_manifests

    # -- layout ---------------------------------------------------------------------
    def table_dir(self, table: str) -> Path:
        return self.path / table

    def offsets_dir(self, topic: str, partition: int) -> Path:
        return self.path / "_offsets" / topic / f"p{partition:03d}"

    def init(self) -> "Lake":
        """Create the folders and a zero-row schema file per table. Idempotent.

        The schema file is what lets the views name a column no data file has yet (``union_by_name``
        takes every file's columns): a lake made by an older costline gets it rewritten with the
        current schema, so columns added since (``data_quality``, ``response_id``...) read as NULL
        in its old files instead of failing every view."""
        try:
            for table, schema in SCHEMAS.items():
                d = self.table_dir(table) / f"date={EMPTY_DATE}"
                d.mkdir(parents=True, exist_ok=True)
                empty = d / EMPTY_FILE
                if not empty.exists() or not same_schema(empty, schema):
                    with atomic_write(empty) as fh:
                        pq.write_table(schema.empty_table(), fh)
        except OSError as exc:
            raise LakeError(f"cannot initialise the lake at {self.path}: {exc}: check the path and permissions") from exc
        return self

    def data_files(self, table: str, partition: int | None = None) -> list[Path]:
        """Data files of a table (of one Kafka partition, if given; every topic's and topic-less
        ones), schema files and compacted files excluded."""
        pattern = f"date=*/p{partition:03d}-*.parquet" if partition is not None else "date=*/p*.parquet"
        return sorted(p for p in self.table_dir(table).glob(pattern) if parse_data_file_name(p.name))

    # -- commit protocol ---------------------------------------------------------------
    def commit_batch(
        self,
        topic: str,
        partition: int,
        first_offset: int,
        last_offset: int,
        tables: Mapping[str, Mapping[str, pa.Table]],
        *,
        epoch: int | None = None,
        topic_id: str | None = None,
        record_time_ms: int | None = None,
    ) -> Manifest:
        """Write one batch (``{table: {date: arrow table}}``) and commit it with a manifest.

        Offsets are inclusive. A batch may hold no rows (only ignored or
        dead-lettered messages): its manifest still moves the partition on.

        The data files are written under hidden temporary names (``.<name>.<writer>.tmp``, never
        matched by the views' globs) and fsynced. Then, under the partition's lock (which
        :meth:`claim` and :meth:`recover` take too), the manifest is written (tmp + fsync +
        rename: its rename is the commit point) and only then are the files renamed into place:
        no data file is ever visible before its batch is committed. The manifest names the
        writer token of the staged files, so a crash between the manifest and the last rename
        leaves a committed batch that :meth:`recover` completes by finishing the renames.

        ``epoch`` (from :meth:`claim`) fences the writer: the manifest is written only while the
        partition's epoch is still ``epoch``. A writer another one claimed the partition from
        raises :class:`WriterFenced` and leaves no file behind.

        Committed data is never overwritten: a batch whose first offset is not past the partition's last
        manifest, or one of whose file names is taken, raises :class:`OffsetsWentBack` (Kafka's offsets
        started over: a topic created again, a wiped broker) and leaves no file behind. ``topic_id`` (the
        Kafka topic's id) is recorded in the manifest, so a later claim can tell a new topic of the same name.
        ``record_time_ms`` (the batch's Kafka record times, as the processor sums them up: ms since the epoch) is
        recorded in the manifest too (:attr:`Manifest.record_time_ms`): how far the partition's records, in the order
        they reached Kafka, are in the lake (:meth:`record_times`).
        """
        if last_offset < first_offset:
            raise LakeError(f"empty offset range {first_offset}..{last_offset} for partition {partition}")
        name = data_file_name(partition, first_offset, last_offset, topic)
        writer = f"w{uuid.uuid4().hex[:12]}"
        staged: list[tuple[Path, Path]] = []
        committed = False
        mdir = self.offsets_dir(topic, partition)
        mpath = mdir / f"{last_offset:0{OFFSET_DIGITS}d}.json"
        try:
            dirs: set[Path] = set()
            for table, by_date in tables.items():
                if table not in SCHEMAS:
                    raise LakeError(f"unknown lake table {table!r}")
                for day, arrow in by_date.items():
                    if arrow.num_rows == 0:
                        continue
                    d = self.table_dir(table) / f"date={day}"
                    d.mkdir(parents=True, exist_ok=True)
                    final = d / name
                    tmp = d / f".{name}.{writer}.tmp"
                    # staged before it is written: a write that fails half-way (a full disk) leaves no
                    # partial file behind (the ``finally`` below deletes it), which recovery could only
                    # delete after a claim, itself a write that a still-full disk refuses
                    staged.append((tmp, final))
                    dirs.add(d)
                    with synced_write(tmp) as fh:
                        pq.write_table(arrow, fh, compression="zstd", use_dictionary=[
                            c for c in arrow.column_names if c in DICTIONARY_COLUMNS])
            for d in dirs:  # the staged files' names durable before a manifest can list them
                fsync_dir(d)
            manifest = Manifest(topic, partition, first_offset, last_offset,
                                tuple(sorted(str(final.relative_to(self.path)) for _tmp, final in staged)),
                                epoch=epoch, writer=writer if staged else None, topic_id=topic_id,
                                record_time_ms=None if record_time_ms is None else int(record_time_ms))
            with self._partition_lock(topic, partition):
                if epoch is not None and (current := self._read_epoch(mdir)) != epoch:
                    raise WriterFenced(
                        f"partition {partition} of {topic!r} was claimed by another writer (epoch {current}, "
                        f"this writer's {epoch}): batch {first_offset}..{last_offset} discarded, the new "
                        "owner reprocesses it")
                self._refuse_going_back(topic, partition, first_offset, last_offset,
                                        [final for _tmp, final in staged])
                try:
                    with atomic_write(mpath, "w", encoding="utf-8") as fh:
                        fh.write(manifest.to_json())  # its rename is the commit point
                finally:  # the rename may have happened even if what followed it (the folder's fsync) failed
                    committed = _holds(mpath, manifest)
                # committed: from here on the staged files belong to the batch, which recovery completes;
                # no file of these names exists (checked above, under the lock every writer of it takes)
                for tmp, final in staged:
                    os.replace(tmp, final)
                for d in dirs:
                    fsync_dir(d)
                staged.clear()
        except OSError as exc:
            if committed:
                raise LakeError(
                    f"batch {name} is committed (manifest {mpath}) but not all its files could be renamed into "
                    f"place in the lake at {self.path} ({exc}): fix the cause and restart the processor; "
                    "recovery of the partition finishes the renames") from exc
            raise LakeError(f"cannot write batch {name} to the lake at {self.path}: {exc}: nothing of it was "
                            "committed and its partial files were removed; free disk space (or fix the path's "
                            "permissions), then restart the processor: it resumes after the last committed "
                            "batch") from exc
        finally:
            if not committed:  # fenced, or failed before the commit point: the staged files go
                for tmp, _final in staged:
                    tmp.unlink(missing_ok=True)
        self._prune_manifests(mdir)
        return manifest

    def _refuse_going_back(self, topic: str, partition: int, first_offset: int, last_offset: int,
                           finals: list[Path]) -> None:
        """Raise :class:`OffsetsWentBack` when a batch would cover offsets already committed or replace a data
        file (caller holds the partition's lock)."""
        last = self.last_manifest(topic, partition)
        taken = [str(f.relative_to(self.path)) for f in finals if f.exists()]
        if (last is None or first_offset > last.last_offset) and not taken:
            return
        what = (f"the lake already committed offsets up to {last.last_offset}" if last is not None
                and first_offset <= last.last_offset else f"its file(s) {', '.join(taken)} already exist")
        raise OffsetsWentBack(
            f"batch {first_offset}..{last_offset} of partition {partition} of {topic!r} refused: {what} in the lake "
            f"at {self.path}. Kafka's offsets went back: the topic was deleted and created again, or the broker's "
            "storage was wiped. Nothing was written and no committed data was overwritten")

    def retire_partition(self, topic: str, partition: int, reason: str) -> Path:
        """Set a partition's committed history aside so that it can be read again from offset 0 (a new topic of
        the same name): its data files are renamed ``c-old-<id>-<name>`` (still read by the views and compacted
        like compacted files, out of reach of recovery and of new batches' names), then its manifests move to
        ``_offsets/<topic>/pNNN/retired-<id>/`` with ``reason.txt``; the folder returned. Nothing is deleted.

        Data files first: a crash in between leaves manifests whose files are renamed (nothing for recovery to
        do) and a partition that still reads as the old one, retired again by the next claim."""
        stamp = uuid.uuid4().hex[:8]
        tag = topic_tag(topic)
        try:
            with self._partition_lock(topic, partition) as mdir:
                dirs: set[Path] = set()
                for table in SCHEMAS:
                    for f in self.data_files(table, partition):
                        if data_file_topic(f.name) == tag:
                            os.rename(f, f.with_name(f"c-old-{stamp}-{f.name}"))
                            dirs.add(f.parent)
                for d in dirs:
                    fsync_dir(d)
                retired = mdir / f"retired-{stamp}"
                retired.mkdir()
                with atomic_write(retired / "reason.txt", "w", encoding="utf-8") as fh:
                    fh.write(reason.rstrip() + "\n")
                for m in sorted(mdir.glob("[0-9]*.json")):
                    os.rename(m, retired / m.name)
                fsync_dir(retired)
                fsync_dir(mdir)
        except OSError as exc:
            raise LakeError(f"cannot set aside the history of partition {partition} of {topic!r} in the lake at "
                            f"{self.path}: {exc}: check the path and permissions, then start again") from exc
        log.warning("partition %d of %r: committed history set aside (data files renamed c-old-%s-..., still "
                    "read; manifests in %s): %s", partition, topic, stamp, retired, reason)
        return retired

    # -- writer fencing -----------------------------------------------------------------
    @contextlib.contextmanager
    def _partition_lock(self, topic: str, partition: int) -> Iterator[Path]:
        """An exclusive lock on a partition's manifests (``flock``: processes and threads alike;
        the lake must be on a local filesystem, where flock is honoured)."""
        mdir = self.offsets_dir(topic, partition)
        mdir.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(mdir / ".lock"):
            yield mdir

    @contextlib.contextmanager
    def _maintenance_lock(self, *, read_only: bool = False) -> Iterator[bool]:
        """An exclusive lock on rewriting committed files (``flock`` on ``<lake>/.maintenance.lock``: processes
        and threads alike). Compaction, :meth:`forget` and :meth:`redact` each rewrite a day's files from what
        they read: two at once would put a row back that the other removed, or keep it twice. The processor
        never takes it (it only writes new files). Not re-entrant: take it once per operation. Yields True.

        ``read_only`` (a dry run, which changes nothing): where the lock file cannot be opened for writing (a
        read-only mount or snapshot of the lake, no write permission), a shared lock on the lock file opened
        read-only (it still waits for a compaction), else no lock at all: then it yields False (what is read may
        change under a compaction running meanwhile)."""
        path = self.path / MAINTENANCE_LOCK
        with contextlib.ExitStack() as held:
            shared = False
            try:  # the lake's folder must be there: a mistyped path gets an error, no lake made up on the spot
                held.enter_context(exclusive_lock(path))
            except OSError as exc:
                if not (read_only and exc.errno in _READ_ONLY and self.path.is_dir()):
                    raise LakeError(f"cannot take the maintenance lock {path} ({exc}): check the lake path and its "
                                    "permissions (compact, forget and redact rewrite the lake's files)") from exc
                shared = True
            yield held.enter_context(_shared_lock(path)) if shared else True

    @staticmethod
    def _read_epoch(mdir: Path) -> int:
        try:
            return int((mdir / "epoch").read_text(encoding="utf-8").strip() or 0)
        except FileNotFoundError:
            return 0
        except ValueError as exc:
            raise LakeError(f"{mdir / 'epoch'} is not a number ({exc}): remove it (the next claim "
                            "starts a new epoch)") from exc

    def claim(self, topic: str, partition: int, *, claimant: Mapping[str, Any] | None = None) -> int:
        """Claim a partition for a new writer: bump and return its epoch. Writers holding an older
        epoch can no longer commit (:meth:`commit_batch` raises :class:`WriterFenced`).

        ``claimant`` (JSON values: the processor's consumer group, Kafka cluster id, host and pid) is
        recorded with the epoch, in ``claimant.json`` next to it, so that a writer fenced later can tell
        who claimed the partition from it (:meth:`claimant`): a rebalance of its own consumer group, or a
        writer of another group, which no rebalance of its group ever hands the partition back from."""
        try:
            with self._partition_lock(topic, partition) as mdir:
                epoch = self._read_epoch(mdir) + 1
                who = mdir / CLAIMANT_FILE
                if claimant is None:  # an unknown claimant: no record of an earlier one may name it
                    who.unlink(missing_ok=True)
                else:  # before the epoch: a crash in between leaves a record of an epoch never claimed
                    with atomic_write(who, "w", encoding="utf-8") as fh:
                        fh.write(json.dumps({**claimant, "epoch": epoch}, sort_keys=True) + "\n")
                with atomic_write(mdir / "epoch", "w", encoding="utf-8") as fh:
                    fh.write(f"{epoch}\n")
        except (OSError, TypeError, ValueError) as exc:
            raise LakeError(f"cannot claim partition {partition} of {topic!r} in the lake at {self.path}: "
                            f"{exc}: check the path and permissions") from exc
        return epoch

    def claimant(self, topic: str, partition: int) -> dict[str, Any] | None:
        """Who made the partition's current claim, as :meth:`claim` recorded it (``epoch`` included); None when
        unknown: no claim yet, a claim made without ``claimant`` (an older costline), or a record of another
        epoch."""
        mdir = self.offsets_dir(topic, partition)
        try:
            with self._partition_lock(topic, partition):
                epoch = self._read_epoch(mdir)
                record = json.loads((mdir / CLAIMANT_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError, LakeError):
            return None
        if not isinstance(record, dict) or record.get("epoch") != epoch:
            return None
        return record

    def _prune_manifests(self, mdir: Path) -> None:
        names = sorted(p for p in mdir.glob("[0-9]*.json"))
        for old in names[: max(len(names) - self.keep_manifests, 0)]:
            old.unlink(missing_ok=True)

    def last_manifest(self, topic: str, partition: int) -> Manifest | None:
        """The newest committed manifest of a partition, or None."""
        mdir = self.offsets_dir(topic, partition)
        names = sorted(mdir.glob("[0-9]*.json")) if mdir.is_dir() else []
        if not names:
            return None
        try:
            return Manifest.from_json(names[-1].read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError) as exc:
            raise LakeError(f"manifest {names[-1]} is unreadable ({exc}): restore it or remove it "
                            "together with the data files it lists") from exc

    def record_times(self, topic: str) -> dict[int, int | None]:
        """Per partition of ``topic`` with a committed manifest, the newest ``record_time_ms`` its retained
        manifests recorded (:meth:`commit_batch`); None: none recorded (manifests from before, or from a writer
        that knew no record times). A manifest that cannot be read counts as recording none."""
        root = self.path / "_offsets" / topic
        out: dict[int, int | None] = {}
        try:
            folders = sorted(d for d in root.glob("p[0-9]*") if d.name[1:].isdigit()) if root.is_dir() else []
        except OSError:
            return out
        for mdir in folders:
            times: list[int] = []
            seen = False
            try:
                for mpath in mdir.glob("[0-9]*.json"):
                    seen = True
                    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                        if (t := Manifest.from_json(mpath.read_text(encoding="utf-8")).record_time_ms) is not None:
                            times.append(t)
            except OSError:
                continue
            if seen:
                out[int(mdir.name[1:])] = max(times, default=None)
        return out

    # -- recovery (costline/lake/_recovery.py) ------------------------------------------
    def recover(self, topic: str, partition: int) -> tuple[int | None, list[Path]]:
        """Complete a topic's partition's committed batches, then delete its uncommitted files; return
        ``(next_offset or None, removed)``.

        First, under the partition's lock, every retained manifest's files that are missing from
        their place but still staged (a crash between the manifest and the renames,
        :meth:`commit_batch`) are renamed into place; then the uncommitted files go (see
        :mod:`costline.lake._recovery`). ``next_offset`` is the last committed offset + 1 (None: no
        manifest yet). Only files named for ``topic`` are touched, and topic-less files (a lake from
        before topics were in the names) only while the topic's newest manifest is of that era:
        other topics' files, and what a lake committed before ``[kafka] topic`` changed, stay.
        """
        return _recovery.recover(self, topic, partition)

    def _complete_committed(self, topic: str, partition: int) -> list[Path]:
        """Rename into place the still-staged files of committed batches (caller holds the lock); the
        files placed."""
        mdir = self.offsets_dir(topic, partition)
        placed: list[Path] = []
        dirs: set[Path] = set()
        for mpath in sorted(mdir.glob("[0-9]*.json")) if mdir.is_dir() else []:
            try:
                manifest = Manifest.from_json(mpath.read_text(encoding="utf-8"))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # the newest one is reported by last_manifest; older ones hold nothing to finish
            if manifest.writer is None:
                continue  # written after its files were in place
            for rel in manifest.files:
                parts = Path(rel).parts
                if (len(parts) != 3 or parts[0] not in SCHEMAS or not parts[1].startswith("date=")
                        or parse_data_file_name(parts[2]) is None):
                    continue  # not a data file of this lake: nothing costline staged
                final = self.path.joinpath(*parts)
                tmp = final.with_name(manifest.staged_name(rel) or "")
                if final.exists() or not tmp.is_file():
                    continue  # in place (or compacted away since): nothing staged to finish
                os.replace(tmp, final)
                placed.append(final)
                dirs.add(final.parent)
        for d in dirs:
            fsync_dir(d)
        if placed:
            log.warning("partition %d of %r: finished renaming %d file(s) of a committed batch into place "
                        "(a writer stopped between its manifest and its renames)", partition, topic, len(placed))
        return placed

    # -- compaction (costline/lake/_compaction.py) ---------------------------------------
    def committed_offsets(self) -> dict[int, int]:
        """Per Kafka partition, the last offset a manifest committed (over every topic's manifests)."""
        out: dict[int, int] = {}
        for by_partition in self.committed_offsets_by_topic().values():
            for part, last in by_partition.items():
                out[part] = max(out.get(part, -1), last)
        return out

    def committed_offsets_by_topic(self) -> dict[str, dict[int, int]]:
        """``{topic tag: {partition: last committed offset}}`` (tags as in data file names)."""
        return _compaction.committed_offsets_by_topic(self)

    def compact(self, *, before: date | None = None) -> list[tuple[str, str, int, int]]:
        """Merge each day's committed files of every table into one file; return
        ``[(table, date, files merged, rows kept)]`` (see :func:`costline.lake._compaction.compact`)."""
        return _compaction.compact(self, before=before)

    # -- erasure and content retention (costline/lake/_erasure.py) ---------------------------
    def forget(self, tenants: Iterable[str], *, before: date | None = None, dry_run: bool = False,
               alert_state: Path | str | None = None) -> _erasure.ForgetReport:
        """Remove every row of ``tenants`` from every table with a ``tenant`` column (the processor's, the
        alerts' exported files), today's committed files included; with ``before``, only the days before it. A call
        or lookup whose own row names no tenant goes when the views give it the tenant's request (an SDK
        instrumentation's span inside it), with the second spans of those calls; other rows without a tenant are
        never touched. The tenants go from the alert state file too (``<lake>/_alerts/state.sqlite``, and
        ``alert_state``: ``[alerts] state_path``). See :func:`costline.lake._erasure.forget`: what it reports,
        and :class:`~costline.lake._erasure.ErasureIncomplete`, raised when a file it could not read was set
        aside."""
        return _erasure.forget(self, tenants, before=before, dry_run=dry_run, alert_state=alert_state)

    def redact(self, older_than_days: int, *, now: Callable[[], datetime] = utc_now,
               dry_run: bool = False) -> _erasure.RedactReport:
        """Set the prompt and answer columns (:data:`costline.lake._erasure.CONTENT_COLUMNS`) to NULL in every day
        older than ``older_than_days`` days before ``now()``, every other column kept. Idempotent. See
        :func:`costline.lake._erasure.redact`."""
        return _erasure.redact(self, older_than_days, now=now, dry_run=dry_run)
