"""Per-partition buffers of rows awaiting a lake commit (pure; the clock is passed in)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from costline.lake import SCHEMAS, day_of_us
from costline.processors.records import CallRow, LookupRow, RequestRow, Row

__all__ = ["PartitionBuffer", "rows_to_tables"]

_KIND_OF = {RequestRow: "requests", CallRow: "calls", LookupRow: "lookups"}


def rows_to_tables(table: str, rows: Sequence[Row]) -> dict[str, pa.Table]:
    """Rows of one table → ``{UTC date: arrow table}`` with the lake's fixed schema."""
    schema = SCHEMAS[table]
    by_day: dict[int, list[Row]] = {}
    for row in rows:
        by_day.setdefault(row.ts // 86_400_000_000, []).append(row)
    out: dict[str, pa.Table] = {}
    for day_rows in by_day.values():
        columns = list(zip(*day_rows))
        arrays = [pa.array(col, type=f.type) for col, f in zip(columns, schema)]
        out[day_of_us(day_rows[0].ts)] = pa.Table.from_arrays(arrays, schema=schema)
    return out


@dataclass
class PartitionBuffer:
    """What has been read from one partition since its last commit."""

    partition: int
    first_offset: int | None = None
    last_offset: int | None = None
    #: Clock reading when the first message entered the buffer.
    opened_at: float | None = None
    spans: int = 0
    rows: dict[str, list[Row]] = field(default_factory=lambda: {t: [] for t in SCHEMAS})

    def add(self, offset: int, rows: Sequence[Row], spans: int, now: float) -> None:
        if self.first_offset is None:
            self.first_offset = offset
            self.opened_at = now
        self.last_offset = offset
        self.spans += spans
        for row in rows:
            self.rows[_KIND_OF[type(row)]].append(row)

    @property
    def empty(self) -> bool:
        return self.first_offset is None

    def due(self, now: float, max_spans: int, interval_s: float) -> bool:
        """True when the buffer should be committed now."""
        if self.opened_at is None:
            return False
        return self.spans >= max_spans or now - self.opened_at >= interval_s

    def tables(self) -> dict[str, dict[str, pa.Table]]:
        return {t: rows_to_tables(t, rows) for t, rows in self.rows.items() if rows}

    def row_counts(self) -> dict[str, int]:
        return {t: len(rows) for t, rows in self.rows.items()}
