"""The Parquet lake: layout, schemas, the offset-manifest commit protocol, DuckDB views.

This module is the one place that knows the lake's paths, file schemas and views.

Layout::

    <lake>/requests/date=YYYY-MM-DD/p003-000000000101-000000000150.otlp_spans.parquet
    <lake>/calls/date=.../...
    <lake>/lookups/date=.../...
    <lake>/<table>/date=1970-01-01/_empty.parquet       zero-row schema file (views work on an empty lake)
    <lake>/_offsets/<topic>/p003/000000000150.json      manifest: the commit point of a batch
    <lake>/costline.duckdb                              views for the plain ``duckdb`` CLI

Rows are hive-partitioned by the UTC date of their event time ``ts`` (the span's
end time, stored as a naive ``TIMESTAMP`` in UTC). A data file is named by the
Kafka partition, the offset range of the batch that wrote it and its topic (sanitised:
characters outside ``[A-Za-z0-9._-]`` become ``_``), so that lakes fed from another topic
(``[kafka] topic`` changed) keep their files. Lakes written before topics were in the
names hold ``p003-000000000101-000000000150.parquet`` files: they are read as before, and
recovery only touches them for a topic whose newest manifest is of that era.

**Commit protocol** (exactly-once effect, see :meth:`Lake.commit_batch`): the
data files of one batch of one partition are written under temporary names
(``.*.tmp``, never matched by the views' ``*.parquet`` globs), fsynced and
renamed into place; then a manifest naming the files and the offset range is
written atomically (tmp + fsync + rename). The manifest is the commit point.
Before a partition is consumed again :meth:`Lake.recover` deletes the data files
of that topic's partition whose first offset lies beyond the last manifest (the orphans
of a batch that crashed between rename and manifest) and returns the offset to
resume from. Between such a crash and the next start of a processor for that
partition the orphans are visible to the views; nowhere else is an uncommitted
file ever visible.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pyarrow as pa
import pyarrow.parquet as pq

from costline.config import Config
from costline.errors import LakeError
from costline.fsutil import fsync_dir, fsync_file

if TYPE_CHECKING:  # pragma: no cover
    import duckdb

__all__ = [
    "Lake",
    "Manifest",
    "WriterFenced",
    "TABLES",
    "REQUESTS_SCHEMA",
    "CALLS_SCHEMA",
    "LOOKUPS_SCHEMA",
    "SCHEMAS",
    "VIEWS",
    "open_lake",
    "write_views_db",
    "create_views",
    "views_sql",
    "data_file_name",
    "parse_data_file_name",
    "data_file_topic",
    "topic_tag",
    "MANIFEST_FORMAT",
    "VIEW_PROVIDERS",
    "ONE_ROW_PER_SPAN",
    "read_table_sql",
]

_TS: Final = pa.timestamp("us")  # naive, UTC
#: Low-cardinality columns, dictionary-encoded in Parquet; ids, texts, offsets and times are not
#: (dictionaries there only cost time: measured 1.27 → 1.02 µs per span written, files 14% smaller).
_DICTIONARY_COLUMNS: Final = frozenset({
    "tenant", "task_type", "subtype", "tier", "routed_tier", "error_type", "operation", "provider", "model",
    "response_model", "pricing_status", "pricing_version", "namespace", "finish_reasons", "instrumentation",
    "data_quality",
})

REQUESTS_SCHEMA: Final = pa.schema([
    ("request_id", pa.string()),
    ("trace_id", pa.string()),
    ("span_id", pa.string()),
    ("ts", _TS),
    ("tenant", pa.string()),
    ("task_type", pa.string()),
    ("subtype", pa.string()),
    ("tier", pa.string()),
    ("routed_tier", pa.string()),
    ("cache_hit", pa.bool_()),
    ("attempts", pa.int64()),
    ("escalations", pa.int64()),
    ("success", pa.bool_()),
    ("error_type", pa.string()),
    ("duration_ms", pa.float64()),
    ("input_messages", pa.string()),
    ("output_messages", pa.string()),
    ("kafka_partition", pa.int32()),
    ("kafka_offset", pa.int64()),
    ("data_quality", pa.string()),
])

CALLS_SCHEMA: Final = pa.schema([
    ("span_id", pa.string()),
    ("trace_id", pa.string()),
    ("parent_span_id", pa.string()),
    ("request_id", pa.string()),
    ("ts", _TS),
    ("operation", pa.string()),
    ("provider", pa.string()),
    ("model", pa.string()),
    ("response_model", pa.string()),
    ("tier", pa.string()),
    ("input_tokens", pa.int64()),
    ("output_tokens", pa.int64()),
    ("cache_read_tokens", pa.int64()),
    ("cache_creation_tokens", pa.int64()),
    ("batch", pa.bool_()),
    ("finish_reasons", pa.list_(pa.string())),
    ("error_type", pa.string()),
    ("cost_usd", pa.float64()),
    ("pricing_status", pa.string()),
    ("pricing_version", pa.string()),
    ("duration_ms", pa.float64()),
    ("input_messages", pa.string()),
    ("output_messages", pa.string()),
    ("kafka_partition", pa.int32()),
    ("kafka_offset", pa.int64()),
    ("response_id", pa.string()),
    ("instrumentation", pa.string()),
    ("data_quality", pa.string()),
])

LOOKUPS_SCHEMA: Final = pa.schema([
    ("span_id", pa.string()),
    ("trace_id", pa.string()),
    ("parent_span_id", pa.string()),
    ("request_id", pa.string()),
    ("ts", _TS),
    ("tenant", pa.string()),
    ("namespace", pa.string()),
    ("hit", pa.bool_()),
    ("similarity", pa.float64()),
    ("duration_ms", pa.float64()),
    ("kafka_partition", pa.int32()),
    ("kafka_offset", pa.int64()),
    ("data_quality", pa.string()),
    ("reject_reason", pa.string()),
])

TABLES: Final = ("requests", "calls", "lookups")
SCHEMAS: Final[Mapping[str, pa.Schema]] = {
    "requests": REQUESTS_SCHEMA,
    "calls": CALLS_SCHEMA,
    "lookups": LOOKUPS_SCHEMA,
}
#: Views :func:`create_views` makes (besides the ``*_raw`` ones over the files).
VIEWS: Final = ("requests", "calls", "lookups", "tier_hourly", "cache_hourly", "cache_hit_rate_7d",
                 "student_hosting_hourly", "hosting_schedule")

_EMPTY_DATE: Final = "1970-01-01"
_EMPTY_FILE: Final = "_empty.parquet"
_OFFSET_DIGITS: Final = 12
_DATA_NAME = re.compile(r"^p(\d+)-(\d+)-(\d+)(?:\.([A-Za-z0-9._-]+))?\.parquet$")
#: A data file being written: ``.<data file name>[.w<writer token>].tmp``.
_TMP_NAME = re.compile(r"^\.(.+\.parquet)(?:\.w[0-9a-f]+)?\.tmp$")
_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9._-]")
#: Manifest format: 1 (no ``format`` key) wrote topic-less data file names; 2 names the topic.
MANIFEST_FORMAT: Final = 2
_EPOCH: Final = date(1970, 1, 1)
_US_PER_DAY: Final = 86_400_000_000


def topic_tag(topic: str) -> str:
    """A topic as it appears in data file names: ``[A-Za-z0-9._-]`` kept, anything else ``_``
    (Kafka's own topic names need no change)."""
    if not topic:
        raise LakeError("a lake batch needs its Kafka topic ([kafka] topic is empty)")
    return _UNSAFE_IN_NAME.sub("_", topic)


def data_file_name(partition: int, first_offset: int, last_offset: int, topic: str | None = None) -> str:
    """``p003-000000000101-000000000150.otlp_spans.parquet`` (without ``topic``: the topic-less
    name of lakes written before topics were in the names)."""
    stem = f"p{partition:03d}-{first_offset:0{_OFFSET_DIGITS}d}-{last_offset:0{_OFFSET_DIGITS}d}"
    return f"{stem}.{topic_tag(topic)}.parquet" if topic is not None else f"{stem}.parquet"


def parse_data_file_name(name: str) -> tuple[int, int, int] | None:
    """``(partition, first_offset, last_offset)`` of a data file name; None for other files."""
    m = _DATA_NAME.match(name)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def data_file_topic(name: str) -> str | None:
    """The topic tag (:func:`topic_tag`) of a data file name; None for topic-less and other files."""
    m = _DATA_NAME.match(name)
    return m.group(4) if m else None


def day_of_us(ts_us: int) -> str:
    """The UTC date (``YYYY-MM-DD``) of a timestamp in microseconds since the epoch."""
    return (_EPOCH + timedelta(days=ts_us // _US_PER_DAY)).isoformat()


@dataclass(frozen=True)
class Manifest:
    """One committed batch of one Kafka partition."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int
    files: tuple[str, ...]  # relative to the lake root
    #: :data:`MANIFEST_FORMAT` of the writer (1: a lake from before topics were in file names).
    format: int = MANIFEST_FORMAT
    #: The writer's claim on the partition (:meth:`Lake.claim`); None: an unfenced writer.
    epoch: int | None = None

    def to_json(self) -> str:
        return json.dumps({
            "format": self.format, "topic": self.topic, "partition": self.partition,
            "first_offset": self.first_offset, "last_offset": self.last_offset,
            "files": list(self.files), "epoch": self.epoch,
        }, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        d = json.loads(text)
        return cls(d["topic"], int(d["partition"]), int(d["first_offset"]), int(d["last_offset"]),
                   tuple(d["files"]), int(d.get("format", 1)),
                   None if d.get("epoch") is None else int(d["epoch"]))


class WriterFenced(LakeError):
    """A writer's claim on a partition is stale: another writer claimed it since (a rebalance)."""


class Lake:
    """A lake rooted at ``path``: writes committed batches, recovers partitions, lists files."""

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
                d = self.table_dir(table) / f"date={_EMPTY_DATE}"
                d.mkdir(parents=True, exist_ok=True)
                empty = d / _EMPTY_FILE
                if not empty.exists() or not _same_schema(empty, schema):
                    tmp = d / f".{_EMPTY_FILE}.{os.getpid()}.tmp"
                    pq.write_table(schema.empty_table(), tmp)
                    os.replace(tmp, empty)
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
    ) -> Manifest:
        """Write one batch (``{table: {date: arrow table}}``) and commit it with a manifest.

        Offsets are inclusive. A batch may hold no rows (only ignored or
        dead-lettered messages): its manifest still moves the partition on.

        ``epoch`` (from :meth:`claim`) fences the writer: the data files are written under
        temporary names, and renamed into place and committed only while the partition's
        epoch is still ``epoch``, under the partition's lock (which :meth:`claim` and
        :meth:`recover` take too). A writer another one claimed the partition from raises
        :class:`WriterFenced` and leaves no file behind.
        """
        if last_offset < first_offset:
            raise LakeError(f"empty offset range {first_offset}..{last_offset} for partition {partition}")
        name = data_file_name(partition, first_offset, last_offset, topic)
        writer = f"w{uuid.uuid4().hex[:12]}"
        written: list[str] = []
        staged: list[tuple[Path, Path]] = []
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
                    with open(tmp, "wb") as fh:
                        pq.write_table(arrow, fh, compression="zstd", use_dictionary=[
                            c for c in arrow.column_names if c in _DICTIONARY_COLUMNS])
                        fh.flush()
                        os.fsync(fh.fileno())
                    staged.append((tmp, final))
                    dirs.add(d)
            mdir = self.offsets_dir(topic, partition)
            with self._partition_lock(topic, partition):
                if epoch is not None and (current := self._read_epoch(mdir)) != epoch:
                    raise WriterFenced(
                        f"partition {partition} of {topic!r} was claimed by another writer (epoch {current}, "
                        f"this writer's {epoch}): batch {first_offset}..{last_offset} discarded, the new "
                        "owner reprocesses it")
                for tmp, final in staged:
                    os.replace(tmp, final)
                    written.append(str(final.relative_to(self.path)))
                staged.clear()
                for d in dirs:
                    fsync_dir(d)
                manifest = Manifest(topic, partition, first_offset, last_offset, tuple(sorted(written)),
                                    epoch=epoch)
                final_m = mdir / f"{last_offset:0{_OFFSET_DIGITS}d}.json"
                tmp_m = mdir / f".{final_m.name}.tmp"
                with open(tmp_m, "w", encoding="utf-8") as fh:
                    fh.write(manifest.to_json())
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp_m, final_m)  # <- the commit point
                fsync_dir(mdir)
        except OSError as exc:
            raise LakeError(f"cannot write batch {name} to the lake at {self.path}: {exc}") from exc
        finally:
            for tmp, _final in staged:  # not renamed: fenced, or failed
                tmp.unlink(missing_ok=True)
        self._prune_manifests(mdir)
        return manifest

    # -- writer fencing -----------------------------------------------------------------
    @contextlib.contextmanager
    def _partition_lock(self, topic: str, partition: int) -> Iterator[Path]:
        """An exclusive lock on a partition's manifests (``flock``: processes and threads alike;
        the lake must be on a local filesystem, where flock is honoured)."""
        mdir = self.offsets_dir(topic, partition)
        mdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(mdir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield mdir
        finally:
            os.close(fd)  # releases the lock

    @staticmethod
    def _read_epoch(mdir: Path) -> int:
        try:
            return int((mdir / "epoch").read_text(encoding="utf-8").strip() or 0)
        except FileNotFoundError:
            return 0
        except ValueError as exc:
            raise LakeError(f"{mdir / 'epoch'} is not a number ({exc}): remove it (the next claim "
                            "starts a new epoch)") from exc

    def claim(self, topic: str, partition: int) -> int:
        """Claim a partition for a new writer: bump and return its epoch. Writers holding an older
        epoch can no longer commit (:meth:`commit_batch` raises :class:`WriterFenced`)."""
        try:
            with self._partition_lock(topic, partition) as mdir:
                epoch = self._read_epoch(mdir) + 1
                tmp = mdir / ".epoch.tmp"
                with open(tmp, "w", encoding="utf-8") as fh:
                    fh.write(f"{epoch}\n")
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, mdir / "epoch")
                fsync_dir(mdir)
        except OSError as exc:
            raise LakeError(f"cannot claim partition {partition} of {topic!r} in the lake at {self.path}: "
                            f"{exc}: check the path and permissions") from exc
        return epoch

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

    def recover(self, topic: str, partition: int) -> tuple[int | None, list[Path]]:
        """Delete a topic's partition's uncommitted files; return ``(next_offset or None, removed)``.

        ``next_offset`` is the last committed offset + 1 (None: no manifest yet). Only files named
        for ``topic`` are touched, and topic-less files (a lake from before topics were in the
        names) only while the topic's newest manifest is of that era: other topics' files, and
        what a lake committed before ``[kafka] topic`` changed, stay.
        """
        try:
            with self._partition_lock(topic, partition):
                return self._recover(topic, partition)
        except OSError as exc:
            raise LakeError(f"cannot clean partition {partition} of the lake at {self.path}: {exc}") from exc

    def _recover(self, topic: str, partition: int) -> tuple[int | None, list[Path]]:
        manifest = self.last_manifest(topic, partition)
        last = manifest.last_offset if manifest else -1
        tag = topic_tag(topic)
        legacy_owner = manifest is not None and manifest.format < 2
        removed: list[Path] = []

        def ours(name: str) -> bool:
            file_tag = data_file_topic(name)
            return file_tag == tag or (file_tag is None and legacy_owner)

        try:
            for table in TABLES:
                tdir = self.table_dir(table)
                if not tdir.is_dir():
                    continue
                for p in tdir.glob(f"date=*/.p{partition:03d}-*.tmp"):
                    m = _TMP_NAME.match(p.name)
                    if m and ours(m.group(1)):
                        p.unlink(missing_ok=True)
                        removed.append(p)
                for p in self.data_files(table, partition):
                    parsed = parse_data_file_name(p.name)
                    if parsed and parsed[1] > last and ours(p.name):
                        p.unlink(missing_ok=True)
                        removed.append(p)
            mdir = self.offsets_dir(topic, partition)
            if mdir.is_dir():
                for p in mdir.glob(".*.tmp"):
                    p.unlink(missing_ok=True)
        except OSError as exc:
            raise LakeError(f"cannot clean partition {partition} of the lake at {self.path}: {exc}") from exc
        return (last + 1 if manifest else None), removed


    # -- compaction ---------------------------------------------------------------------
    def committed_offsets(self) -> dict[int, int]:
        """Per Kafka partition, the last offset a manifest committed (over every topic's manifests)."""
        out: dict[int, int] = {}
        for by_partition in self.committed_offsets_by_topic().values():
            for part, last in by_partition.items():
                out[part] = max(out.get(part, -1), last)
        return out

    def committed_offsets_by_topic(self) -> dict[str, dict[int, int]]:
        """``{topic tag: {partition: last committed offset}}`` (tags as in data file names)."""
        out: dict[str, dict[int, int]] = {}
        root = self.path / "_offsets"
        if not root.is_dir():
            return out
        for pdir in root.glob("*/p[0-9][0-9][0-9]"):
            last = max((int(m.stem) for m in pdir.glob("[0-9]*.json") if m.stem.isdigit()), default=None)
            if last is not None:
                by_partition = out.setdefault(topic_tag(pdir.parent.name), {})
                part = int(pdir.name[1:])
                by_partition[part] = max(by_partition.get(part, -1), last)
        return out

    def compact(self, *, before: date | None = None) -> list[tuple[str, str, int, int]]:
        """Merge each day's committed files of every table into one file; return
        ``[(table, date, files merged, rows kept)]``.

        Only closed days (``before``, default today UTC) and only files a manifest committed are
        merged, so a running processor and crash recovery are never disturbed: the merged file is
        named ``c-…`` (not a ``pNNN-first-last`` batch file, which recovery may delete) and is
        written (tmp + fsync + rename) before the files it replaces are removed. A crash between
        the two leaves rows twice on disk, which the views already read once (one row per
        (trace_id, span_id)); the next compaction merges them away.
        """
        import duckdb

        before = before or datetime.now(UTC).date()
        committed = self.committed_offsets_by_topic()
        done: list[tuple[str, str, int, int]] = []
        for table in TABLES:
            for day_dir in sorted(self.table_dir(table).glob("date=*")):
                day = day_dir.name.removeprefix("date=")
                if day == _EMPTY_DATE or day >= before.isoformat():
                    continue
                files = [f for f in sorted(day_dir.glob("*.parquet")) if _compactable(f, committed)]
                if len(files) < 2:
                    continue
                name = f"c-{uuid.uuid4().hex[:12]}.parquet"
                tmp, final = day_dir / f".{name}.tmp", day_dir / name
                globs = "[" + ", ".join(_sql_str(str(f)) for f in files) + "]"
                con = duckdb.connect()
                try:
                    con.execute(
                        f"COPY (SELECT * FROM read_parquet({globs}, union_by_name = true) "
                        f"{ONE_ROW_PER_SPAN} ORDER BY ts) "
                        f"TO {_sql_str(str(tmp))} (FORMAT parquet, COMPRESSION zstd)"
                    )
                    rows = con.execute(f"SELECT count(*) FROM read_parquet({_sql_str(str(tmp))})").fetchone()[0]
                finally:
                    con.close()
                fsync_file(tmp)
                os.replace(tmp, final)
                fsync_dir(day_dir)
                for f in files:
                    f.unlink(missing_ok=True)
                fsync_dir(day_dir)
                done.append((table, day, len(files), int(rows)))
        return done


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


# --- views ---------------------------------------------------------------------------


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


#: Upstream delivery is at least once (an exporter or OTLP client may resend a trace after a
#: timeout), so a span can reach Kafka twice: whoever reads the files keeps one row per span.
ONE_ROW_PER_SPAN: Final = (
    "QUALIFY row_number() OVER (PARTITION BY trace_id, span_id ORDER BY kafka_partition, kafka_offset) = 1"
)


def _same_schema(path: Path, schema: pa.Schema) -> bool:
    """True when the Parquet file at ``path`` has exactly ``schema``'s columns and types."""
    try:
        return pq.read_schema(path).remove_metadata().equals(schema.remove_metadata())
    except Exception:  # noqa: BLE001 - unreadable (e.g. cut short by a crash): rewrite it
        return False


def read_table_sql(lake_path: Path | str, table: str) -> str:
    """``read_parquet(...)`` over every data file of a table, with the ``date`` partition column
    (filter on it to prune days). Add :data:`ONE_ROW_PER_SPAN` to read each span once."""
    glob = _sql_str(str(Path(lake_path).resolve() / table / "*" / "*.parquet"))
    return f"read_parquet({glob}, hive_partitioning = true, union_by_name = true, hive_types = {{'date': DATE}})"


#: The instrumentation scope of costline's own call spans (preferred when two spans report one call).
COSTLINE_SCOPE: Final = "costline.collectors"

#: Which of several spans of one model call is kept (first wins): one with an explicit price, then
#: the most complete usage (most tokens counted), then costline's own span, then a fixed order.
_CALL_PREFERENCE: Final = """(pricing_status = 'explicit') DESC,
    (coalesce(input_tokens, 0) + coalesce(output_tokens, 0) + coalesce(cache_read_tokens, 0)
     + coalesce(cache_creation_tokens, 0)) DESC,
    (instrumentation IS NOT DISTINCT FROM '""" + COSTLINE_SCOPE + """') DESC, kafka_partition, kafka_offset, span_id"""


#: A call's identity is provider + response id within its trace: every instrumentation of one call
#: reports it in the caller's trace, and an id is only as unique as the server that made it (the
#: stand-ins count from 1 per process). The provider part of a call's identity: an OpenAI-compatible server (vLLM) is reported as "vllm" by
#: costline's wrapper and as "openai" by OpenLLMetry / OpenLIT / openai-v2 for the same response.
_PROVIDER_FAMILY: Final = "CASE WHEN provider IN ('vllm', 'openai') THEN 'openai' ELSE coalesce(provider, '') END"


def _ts_sql(ts: datetime | None) -> str:
    return "NULL::TIMESTAMP" if ts is None else f"TIMESTAMP '{ts.isoformat(sep=' ')}'"


def _schedule_sql(schedule: Sequence[tuple[datetime | None, datetime | None, float]]) -> str:
    if not schedule:
        return "SELECT NULL::TIMESTAMP AS since, NULL::TIMESTAMP AS until, 0.0::DOUBLE AS usd_per_hour WHERE false"
    rows = ", ".join(f"({_ts_sql(a)}, {_ts_sql(b)}, {float(r)!r}::DOUBLE)" for a, b, r in schedule)
    return f"SELECT * FROM (VALUES {rows}) s(since, until, usd_per_hour)"


def views_sql(
    lake_path: Path | str,
    *,
    student_usd_per_hour: float | None = None,
    hosting: Sequence[tuple[datetime | None, datetime | None, float]] | None = None,
) -> list[str]:
    """The ``CREATE VIEW`` statements over a lake (absolute paths, hosting schedule embedded).

    ``hosting`` is :func:`costline.pricing.hosting_schedule`'s ``[(since, until, USD/hour)]``; without
    it, ``student_usd_per_hour`` is one open period (the simplest schedule). docs/sql.md has the rules.
    """
    if hosting is None:
        rate = float(student_usd_per_hour or 0.0)
        hosting = [(None, None, rate)] if rate > 0 else []
    stmts = []
    for table in TABLES:
        stmts.append(
            f"CREATE OR REPLACE VIEW {table}_raw AS SELECT * FROM {read_table_sql(lake_path, table)} "
            f"{ONE_ROW_PER_SPAN}"
        )
    # The request span each call / lookup belongs to: its parent request span first, else the
    # (first) request span of its trace with its costline.request.id. Exactly one, never several.
    for kind in ("call", "lookup"):
        src = f"{kind}s_raw"
        view = "call_links_all" if kind == "call" else "lookup_links"
        stmts.append(f"""
CREATE OR REPLACE VIEW {view} AS
SELECT x.*, coalesce(rp.span_id, rq.span_id) AS linked_span_id,
       coalesce(rp.request_id, rq.request_id) AS linked_request_id,
       coalesce(rp.tenant, rq.tenant) AS request_tenant
FROM {src} x
LEFT JOIN requests_raw rp ON rp.trace_id = x.trace_id AND rp.span_id = x.parent_span_id
LEFT JOIN (SELECT trace_id, request_id, span_id, tenant FROM requests_raw
           QUALIFY row_number() OVER (PARTITION BY trace_id, request_id ORDER BY ts, span_id) = 1) rq
  ON rp.span_id IS NULL AND x.request_id IS NOT NULL AND rq.trace_id = x.trace_id AND rq.request_id = x.request_id""")
    # One row per model call, whoever reported it (costline, the SDK's own spans, OpenLLMetry, OpenLIT, ...).
    stmts.append(f"""
CREATE OR REPLACE VIEW call_links AS
WITH k AS (
  SELECT *, {_PROVIDER_FAMILY} AS family,
         CASE WHEN response_id IS NOT NULL THEN trace_id || '|' || {_PROVIDER_FAMILY} || '|' || response_id END
           AS call_key,
         ts - to_microseconds(CAST(coalesce(duration_ms, 0) * 1000 AS BIGINT)) AS started
  FROM call_links_all
), ranked AS (
  SELECT *,
         row_number() OVER (PARTITION BY call_key ORDER BY {_CALL_PREFERENCE}) AS key_rank,
         row_number() OVER (PARTITION BY trace_id ORDER BY {_CALL_PREFERENCE}) AS trace_rank,
         CASE WHEN call_key IS NOT NULL THEN max(linked_span_id) OVER (PARTITION BY call_key) END AS key_span_id,
         CASE WHEN call_key IS NOT NULL THEN max(linked_request_id) OVER (PARTITION BY call_key) END AS key_request_id,
         CASE WHEN call_key IS NOT NULL THEN max(request_tenant) OVER (PARTITION BY call_key) END AS key_tenant
  FROM k
), heads AS (
  SELECT * FROM ranked WHERE call_key IS NULL OR key_rank = 1
), shadowed AS (
  -- without a response id: the same call when another instrumentation reported the same provider and
  -- model, under the same parent (or one inside the other), over overlapping times
  SELECT DISTINCT a.trace_id, a.span_id
  FROM heads a JOIN heads b
    ON b.trace_id = a.trace_id AND b.trace_rank < a.trace_rank
   AND (a.call_key IS NULL OR b.call_key IS NULL)
   AND coalesce(a.instrumentation, '') <> coalesce(b.instrumentation, '')
   AND a.family = b.family AND lower(a.model) IS NOT DISTINCT FROM lower(b.model)
   AND (a.parent_span_id IS NOT DISTINCT FROM b.parent_span_id OR a.parent_span_id = b.span_id
        OR b.parent_span_id = a.span_id)
   AND a.started <= b.ts AND b.started <= a.ts
)
SELECT h.* EXCLUDE (family, call_key, key_rank, trace_rank, key_span_id, key_request_id, key_tenant,
                    linked_span_id, linked_request_id, request_tenant),
       coalesce(h.linked_span_id, h.key_span_id) AS linked_span_id,
       coalesce(h.linked_request_id, h.key_request_id) AS linked_request_id,
       coalesce(h.request_tenant, h.key_tenant) AS request_tenant
FROM heads h ANTI JOIN shadowed s ON s.trace_id = h.trace_id AND s.span_id = h.span_id""")
    # The student's hosting, hour by hour, from the dated schedule (materialised here, never a rate
    # applied to history): open ends run from the first student call to the lake's newest span.
    stmts.append(f"CREATE OR REPLACE VIEW hosting_schedule AS {_schedule_sql(hosting)}")
    stmts.append("""
CREATE OR REPLACE VIEW student_hosting_hourly AS
WITH bounds AS (
  SELECT (SELECT date_trunc('hour', min(ts)) FROM calls_raw WHERE tier = 'student') AS first_student,
         (SELECT date_trunc('hour', max(ts)) + INTERVAL 1 HOUR FROM (
            SELECT max(ts) AS ts FROM requests_raw UNION ALL SELECT max(ts) FROM calls_raw)) AS lake_end
), periods AS (
  SELECT coalesce(s.since, b.first_student) AS since, coalesce(s.until, b.lake_end) AS until, s.usd_per_hour
  FROM hosting_schedule s CROSS JOIN bounds b
), hours AS (
  SELECT since, until, usd_per_hour, unnest(range(date_trunc('hour', since), until, INTERVAL 1 HOUR)) AS window_start
  FROM periods WHERE since IS NOT NULL AND until IS NOT NULL AND since < until
)
SELECT window_start,
       sum(usd_per_hour * (epoch(least(until, window_start + INTERVAL 1 HOUR)) - epoch(greatest(since, window_start)))
           / 3600.0) AS hosting_usd
FROM hours GROUP BY window_start""")
    stmts.append("""
CREATE OR REPLACE VIEW requests AS
WITH c AS (
  SELECT *, lag(tier) OVER (PARTITION BY trace_id, linked_span_id ORDER BY started, span_id) AS prev_tier
  FROM call_links WHERE linked_span_id IS NOT NULL
), agg AS (
  SELECT trace_id, linked_span_id,
         sum(cost_usd) AS call_cost_usd, count(*) FILTER (WHERE cost_usd IS NULL) AS unpriced_calls,
         sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, count(*) AS calls,
         bool_or(pricing_status = 'student') AS shares_hosting,
         coalesce(arg_max(tier, started) FILTER (WHERE error_type IS NULL), arg_max(tier, started)) AS call_tier,
         count(*) FILTER (WHERE prev_tier IS NOT NULL AND tier <> prev_tier) AS tier_changes
  FROM c GROUP BY ALL
), base AS (
  SELECT r.request_id, r.trace_id, r.ts, r.tenant, r.task_type, r.subtype,
         coalesce(r.tier, a.call_tier, CASE WHEN r.cache_hit THEN 'cache' END) AS tier, r.routed_tier,
         coalesce(r.cache_hit, false) AS cache_hit,
         CASE WHEN coalesce(r.attempts, 0) < coalesce(a.calls, 0) THEN a.calls ELSE coalesce(r.attempts, 1) END
           AS attempts,
         CASE WHEN r.tier IS NULL OR r.escalations IS NULL THEN coalesce(a.tier_changes, r.escalations, 0)
              ELSE r.escalations END AS escalations,
         r.success,
         coalesce(a.call_cost_usd, 0.0) AS call_cost_usd,
         coalesce(a.input_tokens, 0) AS input_tokens, coalesce(a.output_tokens, 0) AS output_tokens,
         coalesce(a.unpriced_calls, 0) AS unpriced_calls, coalesce(a.calls, 0) AS calls,
         false AS standalone, coalesce(a.shares_hosting, false) AS shares_hosting,
         r.error_type, r.duration_ms, r.input_messages, r.output_messages, r.span_id
  FROM requests_raw r LEFT JOIN agg a ON a.trace_id = r.trace_id AND a.linked_span_id = r.span_id
  UNION ALL
  SELECT c.span_id, c.trace_id, c.ts, NULL, NULL, NULL, c.tier, NULL,
         false, 1, 0, c.error_type IS NULL,
         coalesce(c.cost_usd, 0.0),
         coalesce(c.input_tokens, 0), coalesce(c.output_tokens, 0),
         CASE WHEN c.cost_usd IS NULL THEN 1 ELSE 0 END, 1,
         true, c.pricing_status = 'student',
         c.error_type, c.duration_ms, c.input_messages, c.output_messages, c.span_id
  FROM call_links c WHERE c.linked_span_id IS NULL
), sharing AS (
  SELECT date_trunc('hour', ts) AS window_start, count(*) AS n FROM base WHERE shares_hosting GROUP BY 1
), share AS (
  SELECT h.window_start, h.hosting_usd / s.n AS share
  FROM student_hosting_hourly h JOIN sharing s ON s.window_start = h.window_start
)
SELECT b.request_id, b.trace_id, b.ts, b.tenant, b.task_type, b.subtype, b.tier, b.routed_tier,
       b.cache_hit, b.attempts, b.escalations, b.success,
       b.call_cost_usd + coalesce(h.share, 0.0) AS cost_usd,
       b.input_tokens, b.output_tokens,
       b.unpriced_calls, b.calls, b.standalone, coalesce(h.share, 0.0) AS hosting_cost_usd,
       b.call_cost_usd, b.error_type, b.duration_ms, b.input_messages, b.output_messages, b.span_id,
       b.shares_hosting
FROM base b
LEFT JOIN share h ON b.shares_hosting AND h.window_start = date_trunc('hour', b.ts)""")
    stmts.append("""
CREATE OR REPLACE VIEW calls AS
SELECT span_id, trace_id, ts, provider, model, tier, input_tokens, output_tokens, cache_read_tokens,
       cache_creation_tokens, error_type, cost_usd, duration_ms,
       coalesce(linked_request_id, span_id) AS request_id, linked_span_id IS NULL AS standalone,
       parent_span_id, operation, response_model, batch, finish_reasons, pricing_status, pricing_version,
       input_messages, output_messages, kafka_partition, kafka_offset,
       coalesce(linked_span_id, span_id) AS request_span_id, response_id, instrumentation, data_quality
FROM call_links""")
    stmts.append("""
CREATE OR REPLACE VIEW lookups AS
SELECT span_id, trace_id, ts, coalesce(tenant, request_tenant) AS tenant, namespace, hit, similarity,
       linked_request_id AS request_id, parent_span_id, duration_ms, kafka_partition, kafka_offset,
       reject_reason
FROM lookup_links""")
    stmts.append("""
CREATE OR REPLACE VIEW tier_hourly AS
WITH r AS MATERIALIZED (
  SELECT date_trunc('hour', ts) AS window_start, tier, success, cost_usd, unpriced_calls, shares_hosting FROM requests
), per AS (
  SELECT window_start, tier, 1 AS n, CASE WHEN success THEN 1 ELSE 0 END AS ok, cost_usd, unpriced_calls FROM r
  UNION ALL
  -- an hour of the hosting schedule that no request shared: its cost still shows, under the student
  SELECT h.window_start, 'student', 0, 0, h.hosting_usd, 0
  FROM student_hosting_hourly h ANTI JOIN (SELECT DISTINCT window_start FROM r WHERE shares_hosting) s
    ON s.window_start = h.window_start
)
SELECT window_start, tier,
       CAST(sum(n) AS BIGINT) AS requests, CAST(sum(ok) AS BIGINT) AS successes,
       sum(cost_usd) AS cost_usd,
       sum(cost_usd) / nullif(sum(ok), 0) AS cost_per_success,
       sum(unpriced_calls) AS unpriced_calls
FROM per GROUP BY ALL""")
    stmts.append("""
CREATE OR REPLACE VIEW cache_hourly AS
SELECT date_trunc('hour', ts) AS window_start, tenant,
       count(*) AS lookups, count(*) FILTER (WHERE hit) AS hits,
       count(*) FILTER (WHERE hit) / count(*) AS hit_rate
FROM lookups GROUP BY ALL""")
    stmts.append("""
CREATE OR REPLACE VIEW cache_hit_rate_7d AS
SELECT window_start, tenant, hit_rate,
       sum(hits) OVER w / nullif(sum(lookups) OVER w, 0) AS avg_7d,
       lookups, hits, sum(lookups) OVER w AS lookups_7d
FROM cache_hourly
WINDOW w AS (PARTITION BY tenant ORDER BY window_start
             RANGE BETWEEN INTERVAL 168 HOURS PRECEDING AND INTERVAL 1 HOUR PRECEDING)""")
    return stmts


#: Views other package areas keep over their own files in the lake: "module:function", where the
#: function takes the lake path and returns SQL (one string or a list). Imported when views are
#: created, so the core never imports an area at start-up; an area that is not installed is skipped.
VIEW_PROVIDERS: Final = (
    "costline.alerts.view:alerts_view_sql",
    "costline.jobs.store:jobs_views_sql",
    "costline.distill.store:distill_views_sql",
)


def _provided_views(lake_path: Path | str) -> list[str]:
    import importlib

    out: list[str] = []
    for spec in VIEW_PROVIDERS:
        module_name, _, func = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue
            raise
        sql = getattr(module, func)(lake_path)
        out.extend([sql] if isinstance(sql, str) else sql)
    return out


def create_views(con: "duckdb.DuckDBPyConnection", config: Config) -> None:
    """Create the views of ``config``'s lake on a DuckDB connection (initialising the lake)."""
    if config.lake.mode == "table":  # Iceberg tables on object storage (docs/scale.md)
        from costline.tablelake import create_table_views

        return create_table_views(con, config)
    Lake(config.lake.path).init()
    from costline.pricing import hosting_schedule

    for stmt in views_sql(config.lake.path, hosting=hosting_schedule(config.pricing)):
        con.execute(stmt)
    for stmt in _provided_views(config.lake.path):
        con.execute(stmt)


def open_lake(config: Config) -> "duckdb.DuckDBPyConnection":
    """An in-memory DuckDB connection with the lake's views."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    create_views(con, config)
    return con


def write_views_db(config: Config) -> Path:
    """Write ``<lake>/costline.duckdb`` holding only the views (they read the files live)."""
    import duckdb

    path = Path(config.lake.path) / "costline.duckdb"
    Lake(config.lake.path).init()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp))
    try:
        create_views(con, config)
        con.execute("CHECKPOINT")
    finally:
        con.close()
    os.replace(tmp, path)
    return path
