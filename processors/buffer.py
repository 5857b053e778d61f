"""Per-partition buffers of rows awaiting a lake commit (pure; the clock is passed in).

Rows are kept as Python tuples only briefly: every :data:`CHUNK_ROWS` rows of a
table are converted to one Arrow record batch (column by column, in C). A
buffer of 50k spans then holds a handful of Arrow batches instead of 50k tuples
the cyclic garbage collector would walk again and again (a call row holds a
list, so it is never untracked); at commit the batches are concatenated and
split by UTC date with Arrow compute, keeping the order rows arrived in.

A row that does not fit the lake's schema (a wrong type, an end time no date can hold)
must not sink the rows of other messages it was batched with: when a conversion fails,
the pending rows are converted message by message, the messages whose rows fail are
set aside in :attr:`PartitionBuffer.rejected` (with the reason, for the DLQ) and all
other rows are kept. The happy path pays one min/max over each converted ``ts`` column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from costline.lake import SCHEMAS, day_of_us
from costline.processors.records import CallRow, LookupRow, RequestRow, Row

__all__ = ["PartitionBuffer", "rows_to_tables", "rows_to_batch", "checked_batch", "split_by_day",
           "RowsDoNotFit", "CHUNK_ROWS"]

_KIND_OF = {RequestRow: "requests", CallRow: "calls", LookupRow: "lookups"}
_US_PER_DAY = 86_400_000_000
#: Rows of one table converted to Arrow at a time (bounds the Python objects a buffer holds).
CHUNK_ROWS = 512


#: The event times a lake date can hold (``date=0001-01-01`` .. ``date=9999-12-31``; rows from
#: a 64-bit end time may lie far beyond, and would fail when split by day at commit).
_MIN_TS_US = (date.min - date(1970, 1, 1)).days * _US_PER_DAY
_MAX_TS_US = ((date.max - date(1970, 1, 1)).days + 1) * _US_PER_DAY - 1
#: Where each table's rows carry their Kafka offset (rows are tuples in schema order).
_OFFSET_AT = {t: schema.get_field_index("kafka_offset") for t, schema in SCHEMAS.items()}


class RowsDoNotFit(ValueError):
    """Rows that Arrow cannot hold in the lake's schema (the reason names the column)."""


#: Each table's rows as one Arrow struct type: row tuples convert in a single C pass
#: (faster than transposing them into columns in Python and converting each).
_ROW_TYPES = {t: pa.struct(list(schema)) for t, schema in SCHEMAS.items()}


def rows_to_batch(table: str, rows: Sequence[Row]) -> pa.RecordBatch:
    """Rows of one table → one Arrow record batch with the lake's fixed schema."""
    if not rows:
        return pa.RecordBatch.from_pylist([], schema=SCHEMAS[table])
    return pa.RecordBatch.from_struct_array(pa.array(rows, type=_ROW_TYPES[table]))


def checked_batch(table: str, rows: Sequence[Row]) -> pa.RecordBatch:
    """:func:`rows_to_batch`, plus a check that every event time is one a lake date can hold;
    raises (any exception: :class:`RowsDoNotFit` or Arrow's / Python's own) when the rows do not fit.
    A NULL ``ts`` fits: flatten nulls a time that is not one and flags the row (``data_quality``),
    which is kept, countable, and filed under 1970-01-01."""
    batch = rows_to_batch(table, rows)
    ts = batch.column("ts")
    lo_hi = pc.min_max(ts.cast(pa.int64()))
    lo, hi = lo_hi["min"].as_py(), lo_hi["max"].as_py()
    if lo is not None and (lo < _MIN_TS_US or hi > _MAX_TS_US):
        raise RowsDoNotFit(f"span end time outside years 1-9999 (ts {lo if lo < _MIN_TS_US else hi} us)")
    return batch


def split_by_day(arrow: pa.Table) -> dict[str, pa.Table]:
    """An Arrow table with a ``ts`` column → ``{UTC date: rows of that date}``, row order kept."""
    if arrow.num_rows == 0:
        return {}
    # ts >= 0: integer division floors; a span with no valid time, or one outside the processor's span-time
    # window (ts NULL, flagged in data_quality), is filed with the schema files under 1970-01-01.
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
    #: Bytes of the messages buffered (their Kafka values), for ``[processor] batch_max_bytes``.
    bytes: int = 0
    #: Rows not converted to Arrow yet (fewer than ``chunk_rows`` per table); each list is
    #: kept for the buffer's life, so callers may append to it and then call :meth:`note`.
    rows: dict[str, list[Row]] = field(default_factory=lambda: {t: [] for t in SCHEMAS})
    chunk_rows: int = CHUNK_ROWS
    #: Messages whose rows did not fit the lake's schema: ``(message, reason)``, message being what
    #: was passed to :meth:`note` (their rows were dropped; the owner dead-letters and clears these).
    rejected: list[tuple[Any, str]] = field(default_factory=list)
    _batches: dict[str, list[pa.RecordBatch]] = field(default_factory=lambda: {t: [] for t in SCHEMAS}, repr=False)
    _converted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SCHEMAS, 0), repr=False)
    #: ``{offset: message}`` of the messages whose rows are not converted yet (for :attr:`rejected`).
    _messages: dict[int, Any] = field(default_factory=dict, repr=False)

    def add(self, offset: int, rows: Sequence[Row], spans: int, now: float) -> None:
        """Buffer the rows of the message at ``offset`` (``spans``: how many spans it had)."""
        pending = self.rows
        for row in rows:
            pending[_KIND_OF[type(row)]].append(row)
        self.note(offset, spans, now)

    def note(self, offset: int, spans: int, now: float, message: Any = None, nbytes: int = 0) -> None:
        """Account for the message at ``offset`` whose rows were appended to :attr:`rows` directly
        (the processor's hot path: :func:`~costline.processors.decode.flatten_into`). ``message``
        is handed back in :attr:`rejected` should its rows not fit the lake's schema."""
        if self.first_offset is None:
            self.first_offset = offset
            self.opened_at = now
        self.last_offset = offset
        self.spans += spans
        self.bytes += nbytes
        if message is not None:
            self._messages[offset] = message
        pending = self.rows
        limit = self.chunk_rows
        if (len(pending["calls"]) >= limit or len(pending["requests"]) >= limit
                or len(pending["lookups"]) >= limit):
            self._convert()

    def _convert(self) -> None:
        """Every table's pending rows → Arrow at once (a message's rows are never split between
        a converted batch and the pending lists, so a rejected message can be dropped whole)."""
        pending = self.rows
        try:
            batches = {t: checked_batch(t, held) for t, held in pending.items() if held}
        except Exception as exc:  # noqa: BLE001 - any failure: find the messages that cause it
            batches = self._convert_message_by_message(exc)
        for table, batch in batches.items():
            if batch.num_rows:
                self._batches[table].append(batch)
                self._converted[table] += batch.num_rows
        for held in pending.values():
            held.clear()  # the same list objects stay the tables' sinks
        self._messages.clear()

    def _convert_message_by_message(self, first_error: Exception) -> dict[str, pa.RecordBatch]:
        by_offset: dict[int, dict[str, list[Row]]] = {}
        for table, held in self.rows.items():
            at = _OFFSET_AT[table]
            for row in held:
                by_offset.setdefault(row[at], {}).setdefault(table, []).append(row)
        bad: set[int] = set()
        for offset, tables in by_offset.items():
            try:
                for table, rows in tables.items():
                    checked_batch(table, rows)
            except Exception as exc:  # noqa: BLE001 - this message's rows do not fit
                bad.add(offset)
                self.rejected.append((self._messages.get(offset, offset),
                                      f"rows do not fit the lake schema: {type(exc).__name__}: {exc}"))
        if not bad:  # fits message by message yet not together: should not happen; keep the error
            raise first_error
        return {table: checked_batch(table, [r for r in held if r[_OFFSET_AT[table]] not in bad])
                for table, held in self.rows.items() if held}

    @property
    def empty(self) -> bool:
        return self.first_offset is None

    def due(self, now: float, max_spans: int, interval_s: float, max_bytes: int | None = None) -> bool:
        """True when the buffer should be committed now."""
        if self.opened_at is None:
            return False
        return (self.spans >= max_spans or now - self.opened_at >= interval_s
                or (max_bytes is not None and self.bytes >= max_bytes))

    def tables(self) -> dict[str, dict[str, pa.Table]]:
        """``{table: {UTC date: arrow table}}`` of everything buffered (tables without rows left out)."""
        self._convert()
        out: dict[str, dict[str, pa.Table]] = {}
        for table in SCHEMAS:
            batches = self._batches[table]
            if batches:
                out[table] = split_by_day(pa.Table.from_batches(batches, schema=SCHEMAS[table]))
        return out

    def row_counts(self) -> dict[str, int]:
        return {t: self._converted[t] + len(rows) for t, rows in self.rows.items()}
