"""Per-partition buffers of rows awaiting a lake commit (pure; the clock is passed in).

Rows are kept as Python tuples only briefly: every :data:`CHUNK_ROWS` rows of a
table are converted to one Arrow record batch (column by column, in C). A
buffer of 50k spans then holds a handful of Arrow batches instead of 50k tuples
the cyclic garbage collector would walk again and again (a call row holds a
list, so it is never untracked); at commit the batches are concatenated and
split by UTC date with Arrow compute, keeping the order rows arrived in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from costline.lake import SCHEMAS, day_of_us
from costline.processors.records import CallRow, LookupRow, RequestRow, Row

__all__ = ["PartitionBuffer", "rows_to_tables", "rows_to_batch", "split_by_day", "CHUNK_ROWS"]

_KIND_OF = {RequestRow: "requests", CallRow: "calls", LookupRow: "lookups"}
_US_PER_DAY = 86_400_000_000
#: Rows of one table converted to Arrow at a time (bounds the Python objects a buffer holds).
CHUNK_ROWS = 512


#: Each table's rows as one Arrow struct type: row tuples convert in a single C pass
#: (faster than transposing them into columns in Python and converting each).
_ROW_TYPES = {t: pa.struct(list(schema)) for t, schema in SCHEMAS.items()}


def rows_to_batch(table: str, rows: Sequence[Row]) -> pa.RecordBatch:
    """Rows of one table → one Arrow record batch with the lake's fixed schema."""
    if not rows:
        return pa.RecordBatch.from_pylist([], schema=SCHEMAS[table])
    return pa.RecordBatch.from_struct_array(pa.array(rows, type=_ROW_TYPES[table]))


def split_by_day(arrow: pa.Table) -> dict[str, pa.Table]:
    """An Arrow table with a ``ts`` column → ``{UTC date: rows of that date}``, row order kept."""
    if arrow.num_rows == 0:
        return {}
    # ts >= 0: integer division floors; a span with no valid time (ts NULL, flagged in data_quality) is filed
    # with the schema files under 1970-01-01.
    days = pc.fill_null(pc.divide(arrow.column("ts").cast(pa.int64()), _US_PER_DAY), 0)
    distinct = pc.unique(days).to_pylist()  # in order of first appearance
    if len(distinct) == 1:
        return {day_of_us(distinct[0] * _US_PER_DAY): arrow}
    # One contiguous copy first: filtering many small chunks costs more than the copy.
    arrow = arrow.combine_chunks()
    days = days.combine_chunks() if isinstance(days, pa.ChunkedArray) else days
    return {day_of_us(d * _US_PER_DAY): arrow.filter(pc.equal(days, d)) for d in distinct}


def rows_to_tables(table: str, rows: Sequence[Row]) -> dict[str, pa.Table]:
    """Rows of one table → ``{UTC date: arrow table}`` with the lake's fixed schema."""
    if not rows:
        return {}
    return split_by_day(pa.Table.from_batches([rows_to_batch(table, rows)]))


@dataclass
class PartitionBuffer:
    """What has been read from one partition since its last commit."""

    partition: int
    first_offset: int | None = None
    last_offset: int | None = None
    #: Clock reading when the first message entered the buffer.
    opened_at: float | None = None
    spans: int = 0
    #: Rows not converted to Arrow yet (fewer than ``chunk_rows`` per table); each list is
    #: kept for the buffer's life, so callers may append to it and then call :meth:`note`.
    rows: dict[str, list[Row]] = field(default_factory=lambda: {t: [] for t in SCHEMAS})
    chunk_rows: int = CHUNK_ROWS
    _batches: dict[str, list[pa.RecordBatch]] = field(default_factory=lambda: {t: [] for t in SCHEMAS}, repr=False)
    _converted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SCHEMAS, 0), repr=False)

    def add(self, offset: int, rows: Sequence[Row], spans: int, now: float) -> None:
        """Buffer the rows of the message at ``offset`` (``spans``: how many spans it had)."""
        pending = self.rows
        for row in rows:
            pending[_KIND_OF[type(row)]].append(row)
        self.note(offset, spans, now)

    def note(self, offset: int, spans: int, now: float) -> None:
        """Account for the message at ``offset`` whose rows were appended to :attr:`rows` directly
        (the processor's hot path: :func:`~costline.processors.decode.flatten_into`)."""
        if self.first_offset is None:
            self.first_offset = offset
            self.opened_at = now
        self.last_offset = offset
        self.spans += spans
        pending = self.rows
        limit = self.chunk_rows
        if (len(pending["calls"]) >= limit or len(pending["requests"]) >= limit
                or len(pending["lookups"]) >= limit):
            for table, held in pending.items():
                if len(held) >= limit:
                    self._convert(table)

    def _convert(self, table: str) -> None:
        held = self.rows[table]
        if held:
            self._batches[table].append(rows_to_batch(table, held))
            self._converted[table] += len(held)
            held.clear()  # the same list object stays the table's sink

    @property
    def empty(self) -> bool:
        return self.first_offset is None

    def due(self, now: float, max_spans: int, interval_s: float) -> bool:
        """True when the buffer should be committed now."""
        if self.opened_at is None:
            return False
        return self.spans >= max_spans or now - self.opened_at >= interval_s

    def tables(self) -> dict[str, dict[str, pa.Table]]:
        """``{table: {UTC date: arrow table}}`` of everything buffered (tables without rows left out)."""
        out: dict[str, dict[str, pa.Table]] = {}
        for table in SCHEMAS:
            self._convert(table)
            batches = self._batches[table]
            if batches:
                out[table] = split_by_day(pa.Table.from_batches(batches, schema=SCHEMAS[table]))
        return out

    def row_counts(self) -> dict[str, int]:
        return {t: self._converted[t] + len(rows) for t, rows in self.rows.items()}
