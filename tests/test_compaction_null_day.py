"""Compaction merges ``date=1970-01-01`` too: the rows of spans without a usable time (``ts`` NULL) land there every
flush that has one. Its schema file stays, and only committed files are merged, as on any other day."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from costline.lake import Lake
from costline.lake._files import data_file_name
from costline.lake._schema import SCHEMAS

TOPIC = "otlp_spans"
NULL_DAY = "1970-01-01"


def _rows(first_offset: int, n: int) -> pa.Table:
    """``n`` request rows with ``ts`` NULL, span ids ``s<offset>``, one per offset from ``first_offset``."""
    schema = SCHEMAS["requests"]
    rows = [{"request_id": f"r{o}", "trace_id": f"{o:032x}", "span_id": f"s{o}", "ts": None, "cache_hit": False,
             "kafka_partition": 0, "kafka_offset": o, "data_quality": "ts:out_of_range"}
            for o in range(first_offset, first_offset + n)]
    return pa.Table.from_pylist(rows, schema=schema)


def _null_day(lake: Lake) -> Path:
    return lake.table_dir("requests") / f"date={NULL_DAY}"


def test_null_day_files_are_merged_schema_file_kept(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake").init()
    schema_file = _null_day(lake) / "_empty.parquet"
    schema_bytes = schema_file.read_bytes()
    epoch = lake.claim(TOPIC, 0)
    for first in (0, 2, 4):  # three committed batches of 2 rows each: offsets 0-1, 2-3, 4-5
        lake.commit_batch(TOPIC, 0, first, first + 1, {"requests": {NULL_DAY: _rows(first, 2)}}, epoch=epoch)
    # a batch written but not committed (a crash before its manifest): offsets 6-7, past the manifests
    uncommitted = _null_day(lake) / data_file_name(0, 6, 7, TOPIC)
    pq.write_table(_rows(6, 2), uncommitted)

    done = lake.compact(before=date(2026, 12, 1))

    assert done == [("requests", NULL_DAY, 3, 6)]
    names = sorted(p.name for p in _null_day(lake).iterdir())
    assert len(names) == 3 and names[0] == "_empty.parquet" and names[2] == uncommitted.name
    assert names[1].startswith("c-") and names[1].endswith(".parquet")
    assert schema_file.read_bytes() == schema_bytes  # the schema file is untouched
    merged = pq.read_table(_null_day(lake) / names[1])
    assert sorted(merged.column("span_id").to_pylist()) == ["s0", "s1", "s2", "s3", "s4", "s5"]
    assert merged.column("ts").null_count == 6
    # the other tables' null days hold only their schema file: nothing to merge
    assert sorted(p.name for p in (lake.table_dir("calls") / f"date={NULL_DAY}").iterdir()) == ["_empty.parquet"]


def test_a_crash_between_merge_and_removal_is_merged_away(tmp_path: Path) -> None:
    """A merged file written but the merged files not yet removed (a crash): the rows are on disk twice; the next
    compaction keeps one row per (trace_id, span_id)."""
    lake = Lake(tmp_path / "lake").init()
    epoch = lake.claim(TOPIC, 0)
    lake.commit_batch(TOPIC, 0, 0, 1, {"requests": {NULL_DAY: _rows(0, 2)}}, epoch=epoch)
    lake.commit_batch(TOPIC, 0, 2, 2, {"requests": {NULL_DAY: _rows(2, 1)}}, epoch=epoch)
    pq.write_table(pa.concat_tables([_rows(0, 2), _rows(2, 1)]), _null_day(lake) / "c-crashed00000.parquet")

    assert lake.compact(before=date(2026, 12, 1)) == [("requests", NULL_DAY, 3, 3)]
    names = sorted(p.name for p in _null_day(lake).iterdir())
    assert len(names) == 2 and names[0] == "_empty.parquet" and names[1].startswith("c-")
    assert sorted(pq.read_table(_null_day(lake) / names[1]).column("span_id").to_pylist()) == ["s0", "s1", "s2"]
