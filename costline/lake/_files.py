"""How the lake names its files (data files, temporaries, manifests) and reads a table's files."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Final

from costline.errors import LakeError
from costline.sqlutil import sql_str

__all__ = [
    "EMPTY_DATE", "EMPTY_FILE", "MANIFEST_FORMAT", "Manifest", "OFFSET_DIGITS", "TMP_NAME", "WRITER_TOKEN",
    "data_file_name", "check_glob_free", "data_file_topic", "day_of_us", "parse_data_file_name", "read_table_sql",
    "topic_tag",
]

#: The day folder of the zero-row schema files (views work on an empty lake).
EMPTY_DATE: Final = "1970-01-01"
EMPTY_FILE: Final = "_empty.parquet"
OFFSET_DIGITS: Final = 12
_DATA_NAME = re.compile(r"^p(\d+)-(\d+)-(\d+)(?:\.([A-Za-z0-9._-]+))?\.parquet$")
#: A data file being written: ``.<data file name>[.w<writer token>].tmp``.
TMP_NAME: Final = re.compile(r"^\.(.+\.parquet)(?:\.w[0-9a-f]+)?\.tmp$")
#: A writer token (:attr:`Manifest.writer`): the part of a staged data file's name that names its batch's writer.
WRITER_TOKEN: Final = re.compile(r"^w[0-9a-f]{1,32}$")
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
    stem = f"p{partition:03d}-{first_offset:0{OFFSET_DIGITS}d}-{last_offset:0{OFFSET_DIGITS}d}"
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


#: Characters DuckDB's globs treat as patterns (a backslash it cannot read in a folder name either).
_GLOB_CHARS: Final = re.compile(r"[*?\[\]\\]")


def check_glob_free(lake_path: Path | str) -> Path:
    """The lake folder, absolute; :class:`LakeError` when its name holds a glob character: the views'
    globs would read other folders too (``lake*`` also matches ``lake-old``) or none at all."""
    path = Path(lake_path).resolve()
    if _GLOB_CHARS.search(str(path)):
        raise LakeError(f"the lake path {str(path)!r} holds a glob character (* ? [ ] or \\), which the views' "
                        "file globs would expand: move the lake or point [lake] path at a folder without them")
    return path


def read_table_sql(lake_path: Path | str, table: str) -> str:
    """``read_parquet(...)`` over every data file of a table, with the ``date`` partition column
    (filter on it to prune days). Add :data:`ONE_ROW_PER_SPAN` to read each span once."""
    glob = sql_str(check_glob_free(lake_path) / table / "*" / "*.parquet")
    return f"read_parquet({glob}, hive_partitioning = true, union_by_name = true, hive_types = {{'date': DATE}})"


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
    #: The writer token of the batch's staged files (``.<file name>.<writer>.tmp``): the manifest is
    #: written before they are renamed into place, so recovery can finish the renames of a batch that
    #: crashed in between. None: a manifest from before (its files were in place before it was written).
    writer: str | None = None
    #: The Kafka topic id (UUID) the batch was read from: a topic deleted and created again under the same
    #: name gets another, and its offsets start over. None: a manifest from before ids were recorded, or a
    #: broker that gives none (before Kafka 2.8).
    topic_id: str | None = None
    #: How far the partition's records are in the lake, in the order they reached Kafka: the batch's record time
    #: (ms since the epoch) as the processor sums it up (the alerts judge a late hour once every partition's
    #: record time has passed it). None: a manifest from before, or a writer that knew no record times.
    record_time_ms: int | None = None

    def staged_name(self, file: str) -> str | None:
        """The name ``file`` (one of :attr:`files`) is staged under before it is renamed into place."""
        return None if self.writer is None else f".{file.rsplit('/', 1)[-1]}.{self.writer}.tmp"

    def to_json(self) -> str:
        return json.dumps({
            "format": self.format, "topic": self.topic, "partition": self.partition,
            "first_offset": self.first_offset, "last_offset": self.last_offset,
            "files": list(self.files), "epoch": self.epoch,
            **({} if self.writer is None else {"writer": self.writer}),
            **({} if self.topic_id is None else {"topic_id": self.topic_id}),
            **({} if self.record_time_ms is None else {"record_time_ms": self.record_time_ms}),
        }, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        d = json.loads(text)
        writer = d.get("writer")
        if writer is not None and not (isinstance(writer, str) and WRITER_TOKEN.match(writer)):
            raise ValueError(f"writer {writer!r} is no writer token (w and hex digits)")
        topic_id = d.get("topic_id")
        if topic_id is not None and not isinstance(topic_id, str):
            raise ValueError(f"topic_id {topic_id!r} is no topic id (a UUID string)")
        record_time = d.get("record_time_ms")
        if not isinstance(record_time, int) or isinstance(record_time, bool):
            record_time = None  # not recorded (a manifest from before), or not a number: unknown
        return cls(d["topic"], int(d["partition"]), int(d["first_offset"]), int(d["last_offset"]),
                   tuple(d["files"]), int(d.get("format", 1)),
                   None if d.get("epoch") is None else int(d["epoch"]), writer, topic_id, record_time)
