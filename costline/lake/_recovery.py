"""Recovery of a partition before it is consumed again: a committed batch is completed, the rest goes.

A batch commits by its manifest, written before its data files are renamed from their hidden staged
names into place (:meth:`Lake.commit_batch <costline.lake.Lake.commit_batch>`). :func:`recover`, under
the partition's lock, first renames into place what a committed batch still has staged (a writer that
stopped between its manifest and its renames), then deletes what no manifest commits: temporaries, and
files whose first offset lies beyond the partition's last manifest (left by a costline that renamed
before writing its manifest), and returns the offset to resume from.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from costline.errors import LakeError
from costline.lake._files import TMP_NAME, data_file_topic, parse_data_file_name, topic_tag
from costline.lake._schema import TABLES

if TYPE_CHECKING:  # pragma: no cover
    from costline.lake._lake import Lake

__all__ = ["recover"]


def recover(lake: "Lake", topic: str, partition: int) -> tuple[int | None, list[Path]]:
    """:meth:`Lake.recover <costline.lake.Lake.recover>`: under the partition's lock."""
    try:
        with lake._partition_lock(topic, partition):
            lake._complete_committed(topic, partition)  # before anything is deleted: its staged files are data
            return _recover(lake, topic, partition)
    except OSError as exc:
        raise LakeError(f"cannot clean partition {partition} of the lake at {lake.path}: {exc}") from exc


def _recover(lake: "Lake", topic: str, partition: int) -> tuple[int | None, list[Path]]:
    manifest = lake.last_manifest(topic, partition)
    last = manifest.last_offset if manifest else -1
    tag = topic_tag(topic)
    legacy_owner = manifest is not None and manifest.format < 2
    removed: list[Path] = []

    def ours(name: str) -> bool:
        file_tag = data_file_topic(name)
        return file_tag == tag or (file_tag is None and legacy_owner)

    try:
        for table in TABLES:
            tdir = lake.table_dir(table)
            if not tdir.is_dir():
                continue
            for p in tdir.glob(f"date=*/.p{partition:03d}-*.tmp"):
                m = TMP_NAME.match(p.name)
                if m and ours(m.group(1)):
                    p.unlink(missing_ok=True)
                    removed.append(p)
            for p in lake.data_files(table, partition):
                parsed = parse_data_file_name(p.name)
                if parsed and parsed[1] > last and ours(p.name):
                    p.unlink(missing_ok=True)
                    removed.append(p)
        mdir = lake.offsets_dir(topic, partition)
        if mdir.is_dir():
            for p in mdir.glob(".*.tmp"):
                p.unlink(missing_ok=True)
    except OSError as exc:
        raise LakeError(f"cannot clean partition {partition} of the lake at {lake.path}: {exc}") from exc
    return (last + 1 if manifest else None), removed
