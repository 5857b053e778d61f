"""SQL helpers: literals for the places where DuckDB takes no parameters (``CREATE VIEW``, globs), and the
bounded, streaming rendering of a query result that ``costline sql`` prints (table, CSV, JSON, JSON lines)."""

from __future__ import annotations

import csv
import datetime as _dt
import decimal
import io
import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

__all__ = [
    "sql_str",
    "FORMATS",
    "DEFAULT_TABLE_ROWS",
    "CHUNK_ROWS",
    "cell_text",
    "csv_cell",
    "FORMULA_STARTS",
    "json_value",
    "unique_names",
    "fetch_chunks",
    "write_rows",
    "render_rows",
    "more_rows_note",
]

#: Output formats of ``costline sql``: ``table`` is aligned for people (bounded by default); the others stream.
FORMATS: tuple[str, ...] = ("table", "csv", "json", "jsonl")
#: Rows the ``table`` format shows unless ``--max-rows`` says otherwise (duckdb's CLI shows 40, ``.maxrows``).
DEFAULT_TABLE_ROWS = 100
#: Rows fetched from DuckDB at a time: memory holds one chunk (a row with captured prompts can be 100 kB).
CHUNK_ROWS = 1_000
#: Rows past ``--max-rows`` are counted for the note up to this many (then "at least"), not read to the end.
COUNT_REST_CAP = 100_000


def sql_str(text: object) -> str:
    """``text`` as a single-quoted SQL string literal (quotes doubled): ``it's`` → ``'it''s'``."""
    return "'" + str(text).replace("'", "''") + "'"


def cell_text(value: Any) -> str:
    """One value as the ``table`` format shows it: ``NULL``, floats to 10 significant digits; a character that is
    not printable as itself (a newline, a terminal's escape, a bidi override, any control or format character) as
    its escape (``\\n``, ``\\x1b``, ``\\u202e``): a sender's string must neither add a row nor move the cursor,
    retitle the terminal or reorder what the analyst reads."""
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.10g}"
    text = str(value)
    return text if text.isprintable() else "".join(c if c.isprintable() else _escape(c) for c in text)


#: What a spreadsheet reads as the start of a formula in a CSV cell (OWASP, "CSV Injection"): ``=``, ``+``, ``-``,
#: ``@``, a tab and a carriage return.
FORMULA_STARTS: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any, *, guard_formulas: bool = True) -> Any:
    """One value as the ``csv`` format writes it: NULL as an empty cell; a text cell that a spreadsheet would run
    as a formula (it starts with one of :data:`FORMULA_STARTS`) with a ``'`` in front (unless ``guard_formulas``
    is false): a tenant or app name from a span such as ``=HYPERLINK(...)`` is shown as text, never run. Numbers
    are written as they are."""
    if value is None:
        return ""
    if guard_formulas and isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _escape(char: str) -> str:
    code = ord(char)
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char) or (
        f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")


def json_value(value: Any) -> Any:
    """One value as JSON takes it: times in ISO 8601, bytes in hex, NaN and infinities as null (JSON has none),
    a DECIMAL as a number, anything else unknown as its text."""
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        return json_value(int(value) if value == value.to_integral_value() else float(value)) if value.is_finite() \
            else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)


def unique_names(columns: Sequence[str]) -> list[str]:
    """Column names as JSON keys: a repeated name (``SELECT 1 AS a, 2 AS a``) gets ``_2``, ``_3``... rather than
    silently replacing the first."""
    out: list[str] = []
    taken: set[str] = set()
    for c in columns:
        name, k = c, 1
        while name in taken:
            k += 1
            name = f"{c}_{k}"
        taken.add(name)
        out.append(name)
    return out


def fetch_chunks(cursor: Any, size: int = CHUNK_ROWS) -> Iterator[list[tuple[Any, ...]]]:
    """A DB-API cursor's rows, ``size`` at a time (``fetchmany``): the result is never held whole."""
    while True:
        rows = cursor.fetchmany(size)
        if not rows:
            return
        yield rows


def write_rows(columns: Sequence[str], chunks: Iterable[Sequence[Sequence[Any]]], fmt: str,
               write: Callable[[str], None], *, max_rows: int | None = None, guard_formulas: bool = True) -> int:
    """Write a result, chunk by chunk, through ``write`` (every piece ends a line); return how many rows were
    left out.

    ``max_rows``: show at most this many rows (``None`` or 0: all). Rows past it are counted, not kept. ``csv``,
    ``json`` and ``jsonl`` write each chunk as it comes; ``table`` aligns its columns, so it holds the rows it
    shows. For a result it shows whole, the output is :func:`render_rows`'s plus a newline, byte for byte.
    ``guard_formulas``: ``csv`` writes a text cell (and a column name) that a spreadsheet would run as a formula
    with a ``'`` in front (:func:`csv_cell`); false writes them as they are.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")
    rows = _Limited(chunks, max_rows or None)
    if fmt == "table":
        cells = [[cell_text(v) for v in row] for row in rows]  # at most max_rows rows held
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
        out = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
        out += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
        n = len(cells)
        out.append(f"({'first ' if rows.cut else ''}{n} row{'s' if n != 1 else ''})")
        write("\n".join(out) + "\n")
    elif fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow([csv_cell(c, guard_formulas=guard_formulas) for c in columns])
        write(_drain(buf))
        for chunk in _batched(rows):
            w.writerows([csv_cell(v, guard_formulas=guard_formulas) for v in row] for row in chunk)
            write(_drain(buf))
    elif fmt == "jsonl":
        keys = unique_names(columns)
        for chunk in _batched(rows):
            write("".join(json.dumps({k: json_value(v) for k, v in zip(keys, row)}, allow_nan=False) + "\n"
                          for row in chunk))
    else:  # json: one array, laid out as json.dumps(rows, indent=1) lays it out, an object at a time
        keys = unique_names(columns)
        first = True
        for chunk in _batched(rows):
            parts = []
            for row in chunk:
                item = json.dumps({k: json_value(v) for k, v in zip(keys, row)}, indent=1, allow_nan=False)
                parts.append(("[\n " if first else ",\n ") + item.replace("\n", "\n "))
                first = False
            write("".join(parts))
        write("[]\n" if first else "\n]\n")
    return rows.count_rest()  # after the output, so people see the rows first


def render_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "table", *,
                guard_formulas: bool = True) -> str:
    """A whole (small) result as one string, without the final newline: the aligned table with its ``(N rows)``
    line, CSV (formulas guarded unless ``guard_formulas`` is false, :func:`csv_cell`), or JSON (a list of objects;
    NaN and infinities as null, repeated column names suffixed)."""
    out: list[str] = []
    write_rows(columns, [rows], fmt, out.append, guard_formulas=guard_formulas)
    return "".join(out)[:-1]


def more_rows_note(hidden: int, fmt: str) -> str:
    """What stderr says when ``max_rows`` left rows out (``hidden`` at :data:`COUNT_REST_CAP`: at least that many)."""
    how = "use --max-rows 0 for all / --format csv to stream" if fmt == "table" else "use --max-rows 0 for all"
    many = f"at least {hidden:,}" if hidden >= COUNT_REST_CAP else f"{hidden:,}"
    return f"… {many} more row{'s' if hidden != 1 else ''} not shown ({how})"


class _Limited:
    """The rows of ``chunks``, up to ``limit`` (None: all); :meth:`count_rest` then counts, without keeping, the
    rows past it."""

    def __init__(self, chunks: Iterable[Sequence[Sequence[Any]]], limit: int | None) -> None:
        self._chunks = iter(chunks)
        self._limit = limit
        self._shown = 0
        self._left = 0  # rows of the current chunk past the limit

    def __iter__(self) -> Iterator[Sequence[Any]]:
        for chunk in self._chunks:
            for i, row in enumerate(chunk):
                if self._limit is not None and self._shown >= self._limit:
                    self._left = len(chunk) - i
                    return
                self._shown += 1
                yield row

    @property
    def cut(self) -> bool:
        """Rows were left out (known once iteration stopped)."""
        return self._left > 0

    def count_rest(self, cap: int = COUNT_REST_CAP) -> int:
        """The rows past the limit, counted up to ``cap`` (a result of 50 M rows is not read to the end to say
        how many were left out: ``cap`` means "at least that many")."""
        if not self._left:
            return 0
        n = self._left
        for chunk in self._chunks:
            n += len(chunk)
            if n >= cap:
                return cap
        return n


def _batched(rows: Iterable[Sequence[Any]], size: int = CHUNK_ROWS) -> Iterator[list[Sequence[Any]]]:
    batch: list[Sequence[Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _drain(buf: io.StringIO) -> str:
    text = buf.getvalue()
    buf.seek(0)
    buf.truncate()
    return text
