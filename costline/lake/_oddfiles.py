"""Odd files in a table's folders, set aside before they stop every query.

The views read ``<table>/*/*.parquet`` with one DuckDB glob: a single file DuckDB cannot read (zero
bytes or cut short by a crash or an interrupted copy, a garbled footer), a file in a folder that is
no ``date=YYYY-MM-DD`` partition (an operator's ``backup/``, ``date=…bak``), or one whose columns
the views cannot use (tokens as text, a time zone on ``ts``, no span ids) fails every query over
the table: a whole dashboard, the nightly jobs. costline itself never leaves such a file (it writes
``.*.tmp`` names and renames them whole). :func:`set_aside_odd_files` renames each one in place to
``<name>.unreadable`` / ``<name>.misplaced`` (kept byte for byte, no longer matched by the glob)
and logs which file, why and what to do, so the other files stay readable.
"""

from __future__ import annotations

import logging
import re
from datetime import date
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.parquet as pq

from costline.errors import LakeError
from costline.lake._files import EMPTY_FILE, parse_data_file_name
from costline.lake._schema import SCHEMAS, TABLES

__all__ = ["MISPLACED", "UNREADABLE", "file_problem", "set_aside", "set_aside_files", "set_aside_odd_files"]

log = logging.getLogger("costline.lake")

UNREADABLE: Final = ".unreadable"
MISPLACED: Final = ".misplaced"
_DAY_DIR: Final = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
#: Columns every row needs: without them rows collapse into one (one row per span) or fall out of hours.
_REQUIRED: Final = ("trace_id", "span_id", "ts")


def _day_folder(folder: str) -> bool:
    m = _DAY_DIR.match(folder)
    if not m:
        return False
    try:
        date.fromisoformat(m.group(1))
    except ValueError:
        return False
    return True


def _compatible(found: pa.DataType, want: pa.DataType) -> bool:
    """True when the views read a column of type ``found`` as they read the lake's ``want``."""
    if pa.types.is_dictionary(found):
        found = found.value_type
    if found == want or pa.types.is_null(found):
        return True
    if pa.types.is_integer(want):
        return pa.types.is_integer(found)
    if pa.types.is_floating(want):
        return pa.types.is_floating(found) or pa.types.is_integer(found)
    if pa.types.is_string(want):
        return pa.types.is_string(found) or pa.types.is_large_string(found) or pa.types.is_string_view(found)
    if pa.types.is_timestamp(want):  # naive UTC; a time zone turns every view's ts into TIMESTAMPTZ
        return pa.types.is_timestamp(found) and found.tz is None
    if pa.types.is_list(want):
        return (pa.types.is_list(found) or pa.types.is_large_list(found)) and _compatible(found.value_type,
                                                                                          want.value_type)
    return False


def file_problem(path: Path, table: str, *, footer: bool = True) -> str | None:
    """Why the views could not read ``path`` as a file of ``table`` (None: they can).

    Reads the file's first and last bytes and, with ``footer``, its footer (schema and types); never
    its data."""
    try:
        size = path.stat().st_size
        if size < 12:
            return f"{size} bytes, too small to be a Parquet file (a crashed write or an interrupted copy)"
        with path.open("rb") as fh:
            head = fh.read(4)
            fh.seek(size - 8)
            tail = fh.read(8)
        if head != b"PAR1" or tail[4:] != b"PAR1":
            return "not a whole Parquet file (no PAR1 marker at its start or end: cut short by a crash or copy)"
        if int.from_bytes(tail[:4], "little") + 12 > size:
            return "its footer is cut short (a crashed write or an interrupted copy)"
        if not footer:
            return None
        schema = pq.read_schema(path)
    except FileNotFoundError:
        return None  # gone meanwhile (compacted, recovered): nothing to read
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds for a garbled footer
        return f"its footer cannot be read ({type(exc).__name__}: {exc})"
    want = SCHEMAS[table]
    missing = [c for c in _REQUIRED if c not in schema.names]
    if missing:
        return f"it has no {', '.join(missing)} column: its rows cannot be told apart"
    wrong = []
    for field in schema:
        idx = want.get_field_index(field.name)
        if idx >= 0 and not _compatible(field.type, want.field(idx).type):
            tz = " (a time zone: the lake's times are naive UTC)" if pa.types.is_timestamp(field.type) else ""
            wrong.append(f"{field.name} is {field.type}, the lake's {want.field(idx).type}{tz}")
    if wrong:
        return "column types the views cannot read: " + "; ".join(wrong)
    return None


def _costline_named(name: str) -> bool:
    return parse_data_file_name(name) is not None or name.startswith("c-") or name == EMPTY_FILE


def set_aside(path: Path, suffix: str, why: str, todo: str) -> Path:
    """Rename ``path`` to ``<name><suffix>`` (``.1``, ``.2``... if taken) and log it; the new path."""
    target = path.with_name(path.name + suffix)
    n = 0
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}{suffix}.{n}")
    try:
        path.rename(target)
    except FileNotFoundError:
        return path
    except OSError as exc:
        raise LakeError(f"{path}: {why}, and every query over its table would fail; it cannot be set aside "
                        f"({exc}): {todo}, or move it out of the lake folder") from exc
    log.warning("%s: %s; set aside as %s so that the lake's other files stay readable: %s",
                path, why, target.name, todo)
    return target


def set_aside_odd_files(lake_path: Path | str, tables: tuple[str, ...] = TABLES) -> list[Path]:
    """Set aside every file the views' globs match but cannot read; the new paths."""
    root = Path(lake_path)
    moved: list[Path] = []
    for table in tables:
        tdir = root / table
        if not tdir.is_dir():
            continue
        for path in sorted(tdir.glob("*/*.parquet")):
            if not path.is_file():
                continue
            if not _day_folder(path.parent.name):
                moved.append(set_aside(
                    path, MISPLACED, f"its folder {path.parent.name!r} is no date=YYYY-MM-DD partition",
                    f"the views read {table}/date=YYYY-MM-DD/*.parquet: move it into the folder of its rows' "
                    f"UTC day and rename it back to {path.name}"))
            # costline's own files (batch, compacted, schema files) only for a whole file: parsing every
            # footer would triple the time the views take to open a lake of many small files
            elif (why := file_problem(path, table, footer=not _costline_named(path.name))) is not None:
                moved.append(set_aside(
                    path, UNREADABLE, why,
                    f"restore it from where it came from (or rewrite it with the lake's schema, "
                    f"costline.lake.SCHEMAS[{table!r}]) and rename it back to {path.name}; delete it if it "
                    "is the leftover of a crashed write"))
    return moved


def set_aside_files(lake_path: Path | str, tables: tuple[str, ...] = TABLES) -> list[Path]:
    """Every file :func:`set_aside_odd_files` set aside that is still there (for the ``lake_unreadable`` alert:
    its rows are missing from every figure until someone restores or deletes it)."""
    root = Path(lake_path)
    return sorted(p for table in tables for suffix in (UNREADABLE, MISPLACED)
                  for p in (root / table).glob(f"*/*.parquet{suffix}*") if p.is_file())
