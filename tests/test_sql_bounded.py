"""`costline sql` output is bounded and streamed: the table shows the first rows and counts the rest on stderr,
csv / json / jsonl write a chunk at a time (fetchmany), and small results print byte for byte as before."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import duckdb
import pytest

from costline import sqlutil
from costline.sqlutil import CHUNK_ROWS, DEFAULT_TABLE_ROWS, fetch_chunks, more_rows_note, render_rows, write_rows

# What `costline sql` printed before it streamed (format_result over fetchall()), kept here verbatim so the
# byte-for-byte comparison does not depend on the code under test.


def _old_format_result(columns: list[str], rows: list[tuple[Any, ...]], fmt: str) -> str:
    import math

    def cell(value: Any) -> str:
        if value is None:
            return "NULL"
        if isinstance(value, float):
            return f"{value:.10g}"
        # since the table format escapes what is not printable (a sender's newline adds no row): as repr() writes it
        return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(value))

    def jsonable(value: Any) -> Any:
        import datetime as dt
        import decimal

        if isinstance(value, (dt.datetime, dt.date, dt.time)):
            return value.isoformat()
        if isinstance(value, (list, tuple)):
            return [jsonable(v) for v in value]
        if isinstance(value, dict):
            return {str(k): jsonable(v) for k, v in value.items()}
        if isinstance(value, (bytes, bytearray)):
            return value.hex()
        if isinstance(value, float):
            return value if math.isfinite(value) else None
        if isinstance(value, decimal.Decimal):
            return jsonable(int(value) if value == value.to_integral_value() else float(value)) \
                if value.is_finite() else None
        if isinstance(value, (str, int, bool)) or value is None:
            return value
        return str(value)

    if fmt == "json":
        keys: list[str] = []
        for c in columns:
            name, k = c, 1
            while name in keys:
                k += 1
                name = f"{c}_{k}"
            keys.append(name)
        return json.dumps([{c: jsonable(v) for c, v in zip(keys, row)} for row in rows], indent=1, allow_nan=False)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(columns)
        for row in rows:
            w.writerow(["" if v is None else v for v in row])
        return buf.getvalue().rstrip("\n")
    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    out = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


#: Small results of every awkward kind: NULLs, NaN and infinities, DECIMALs, times, lists, structs, blobs,
#: CSV-hostile text, a repeated column name, one row, none.
SMALL_QUERIES = [
    "SELECT 'mid' AS tier, 0.25::DOUBLE AS cost UNION ALL SELECT 'cache', NULL ORDER BY tier DESC",
    "SELECT 'nan'::DOUBLE AS x, 1 AS x, 1.50::DECIMAL(6, 2) AS d, '-inf'::DOUBLE AS inf",
    "SELECT TIMESTAMP '2026-06-01 12:00:00' AS ts, DATE '2026-06-01' AS d, [1, 2] AS l, "
    "{'a': 1, 'b': [TRUE, NULL]} AS s, '\\xAA'::BLOB AS b",
    "SELECT 'a,\"quoted\"' AS t, 'two\nlines' AS u, '' AS empty, NULL AS n",
    "SELECT i, i * 1.5 AS f, repeat('x', i % 7) AS pad FROM range(37) t(i) ORDER BY i",
    "SELECT 1 AS one",
    "SELECT 1 AS a, 'b' AS b WHERE false",
]


@pytest.fixture
def con(tmp_path: Path):  # type: ignore[no-untyped-def]
    c = duckdb.connect(str(tmp_path / "t.duckdb"))
    c.execute("SET enable_progress_bar = false")
    yield c
    c.close()


def _stream(con: Any, query: str, fmt: str, *, max_rows: int | None = None, size: int = CHUNK_ROWS
            ) -> tuple[str, int]:
    cur = con.execute(query)
    out: list[str] = []
    hidden = write_rows([d[0] for d in cur.description], fetch_chunks(cur, size), fmt, out.append,
                        max_rows=max_rows)
    return "".join(out), hidden


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
@pytest.mark.parametrize("query", SMALL_QUERIES)
def test_small_results_print_byte_for_byte_as_before(con: Any, query: str, fmt: str) -> None:
    cur = con.execute(query)
    columns, rows = [d[0] for d in cur.description], cur.fetchall()
    before = _old_format_result(columns, rows, fmt)
    assert render_rows(columns, rows, fmt) == before
    for size in (1, 2, CHUNK_ROWS):  # however the rows are chunked
        assert _stream(con, query, fmt, size=size) == (before + "\n", 0)
    # the table's default bound does not touch a small result
    assert _stream(con, query, fmt, max_rows=DEFAULT_TABLE_ROWS) == (before + "\n", 0)


class _SpyCursor:
    """A real DuckDB result that records every fetch and write, and refuses fetchall()."""

    def __init__(self, cur: Any, events: list[tuple[str, int]]) -> None:
        self._cur, self.events = cur, events
        self.description = cur.description

    def fetchmany(self, size: int) -> list[tuple[Any, ...]]:
        rows = self._cur.fetchmany(size)
        self.events.append(("fetch", len(rows)))
        return rows

    def fetchall(self) -> list[tuple[Any, ...]]:
        raise AssertionError("fetchall() loads the whole result")


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_csv_json_and_jsonl_write_each_chunk_before_fetching_the_next(con: Any, fmt: str) -> None:
    n = 3 * CHUNK_ROWS + 17
    con.execute(f"CREATE TABLE spans AS SELECT i, 'span-' || i AS name FROM range({n}) t(i)")
    events: list[tuple[str, int]] = []
    cur = _SpyCursor(con.execute("SELECT * FROM spans ORDER BY i"), events)
    out: list[str] = []

    def write(text: str) -> None:
        out.append(text)
        events.append(("write", text.count("\n")))

    assert write_rows(["i", "name"], fetch_chunks(cur), fmt, write) == 0
    fetches = [k for kind, k in events if kind == "fetch"]
    assert max(fetches) <= CHUNK_ROWS and sum(fetches) == n
    # streaming: between two fetches of rows, the rows of the first were written
    kinds = [kind for kind, k in events if not (kind == "fetch" and k == 0)]
    assert kinds.count("write") >= 4
    assert "fetch,fetch" not in ",".join(kinds)
    text = "".join(out)
    if fmt == "csv":
        assert list(csv.reader(io.StringIO(text)))[-1] == [str(n - 1), f"span-{n - 1}"]
    elif fmt == "json":
        assert json.loads(text)[-1] == {"i": n - 1, "name": f"span-{n - 1}"}
    else:
        lines = text.splitlines()
        assert len(lines) == n and json.loads(lines[-1]) == {"i": n - 1, "name": f"span-{n - 1}"}


def test_the_table_shows_the_first_rows_and_counts_the_rest_without_keeping_them(con: Any) -> None:
    n = 2 * CHUNK_ROWS + 250
    events: list[tuple[str, int]] = []
    cur = _SpyCursor(con.execute(f"SELECT i FROM range({n}) t(i) ORDER BY i"), events)
    out: list[str] = []
    hidden = write_rows(["i"], fetch_chunks(cur), "table", out.append, max_rows=DEFAULT_TABLE_ROWS)
    assert hidden == n - DEFAULT_TABLE_ROWS
    lines = "".join(out).splitlines()
    assert lines[:3] == ["i ", "--", "0 "]  # as wide as the rows shown
    assert lines[-2].strip() == str(DEFAULT_TABLE_ROWS - 1)
    assert lines[-1] == f"(first {DEFAULT_TABLE_ROWS} rows)"
    assert len(lines) == DEFAULT_TABLE_ROWS + 3
    assert out and len(out) == 1  # printed once, before the rest was counted
    assert max(k for kind, k in events) <= CHUNK_ROWS


@pytest.mark.parametrize(("n", "max_rows", "hidden", "footer"), [
    (100, 100, 0, "(100 rows)"),       # exactly the bound: nothing left out
    (101, 100, 1, "(first 100 rows)"),
    (5, 1, 4, "(first 1 row)"),
    (250, 0, 0, "(250 rows)"),         # 0: all
    (250, None, 0, "(250 rows)"),
])
def test_table_bound_edges(con: Any, n: int, max_rows: int | None, hidden: int, footer: str) -> None:
    for size in (1, 7, CHUNK_ROWS):
        text, left = _stream(con, f"SELECT i FROM range({n}) t(i)", "table", max_rows=max_rows, size=size)
        assert (left, text.splitlines()[-1]) == (hidden, footer)


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_an_explicit_bound_applies_to_every_format(con: Any, fmt: str) -> None:
    text, hidden = _stream(con, "SELECT i FROM range(30) t(i) ORDER BY i", fmt, max_rows=10, size=4)
    assert hidden == 20
    if fmt == "csv":
        assert text == "i\n" + "".join(f"{i}\n" for i in range(10))
    elif fmt == "json":
        assert json.loads(text) == [{"i": i} for i in range(10)]
    else:
        assert [json.loads(line) for line in text.splitlines()] == [{"i": i} for i in range(10)]


def test_jsonl_is_one_valid_object_a_line(con: Any) -> None:
    text, _ = _stream(con, "SELECT 'nan'::DOUBLE AS x, 2 AS x, 'a\nb' AS t, [1.5] AS l", "jsonl")
    assert text.count("\n") == 1
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"not JSON: {c}")) == {
        "x": None, "x_2": 2, "t": "a\nb", "l": [1.5]}


def test_more_rows_note_says_how_to_see_them() -> None:
    assert more_rows_note(99_900, "table") == (
        "… 99,900 more rows not shown (use --max-rows 0 for all / --format csv to stream)")
    assert more_rows_note(1, "csv") == "… 1 more row not shown (use --max-rows 0 for all)"


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        write_rows(["a"], [[(1,)]], "xml", print)
    assert set(sqlutil.FORMATS) == {"table", "csv", "json", "jsonl"}


# -- the command: `costline sql` on a real lake in tmp_path ---------------------------------------------------------


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    """A lake with a 2,500-row Parquet file inside it (`costline sql` reads files under the lake only)."""
    from costline.lake import Lake

    path = tmp_path / "lake"
    Lake(path).init()
    with duckdb.connect() as c:
        c.execute(f"COPY (SELECT i, 'span-' || i AS name FROM range(2500) t(i)) TO '{path}/big.parquet'")
    return path


def _sql(lake: Path, *args: str, input: str | None = None):  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from costline.cli import _register_area_commands, cli

    _register_area_commands()
    return CliRunner().invoke(cli, ["sql", *args], input=input,
                              env={"COSTLINE_LAKE_PATH": str(lake), "COSTLINE_CONFIG": ""})


def _big(lake: Path) -> str:
    return f"SELECT * FROM read_parquet('{lake}/big.parquet') ORDER BY i"


def test_sql_table_shows_the_first_rows_and_says_how_many_more_on_stderr(lake: Path) -> None:
    res = _sql(lake, _big(lake))
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert len(lines) == 2 + DEFAULT_TABLE_ROWS + 1 and lines[-1] == f"(first {DEFAULT_TABLE_ROWS} rows)"
    assert res.stderr.strip() == ("… 2,400 more rows not shown (use --max-rows 0 for all / --format csv to "
                                  "stream)")


@pytest.mark.parametrize(("args", "rows", "note"), [
    (["--max-rows", "0"], 2500, ""),
    (["--max-rows", "10"], 10, "… 2,490 more rows not shown"),
    (["--format", "csv"], 2500, ""),
    (["--format", "csv", "--max-rows", "5"], 5, "… 2,495 more rows not shown (use --max-rows 0 for all)"),
    (["--format", "json"], 2500, ""),
    (["--format", "jsonl"], 2500, ""),
])
def test_sql_max_rows_and_formats(lake: Path, args: list[str], rows: int, note: str) -> None:
    res = _sql(lake, *args, _big(lake))
    assert res.exit_code == 0, res.output
    fmt = args[args.index("--format") + 1] if "--format" in args else "table"
    out = res.stdout
    got = {"table": lambda: len(out.splitlines()) - 3, "csv": lambda: len(out.splitlines()) - 1,
           "json": lambda: len(json.loads(out)), "jsonl": lambda: len([json.loads(x) for x in out.splitlines()])}
    assert got[fmt]() == rows
    assert res.stderr.startswith(note) if note else res.stderr == ""


def test_sql_never_fetches_the_whole_result(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import costline.lake

    real_open = costline.lake.open_lake
    events: list[tuple[str, int]] = []

    class Con:
        def __init__(self, con: Any) -> None:
            self._con = con

        def execute(self, *a: Any) -> Any:
            cur = self._con.execute(*a)
            return _SpyCursor(cur, events) if cur.description is not None else cur

        def __getattr__(self, name: str) -> Any:
            return getattr(self._con, name)

    monkeypatch.setattr(costline.lake, "open_lake", lambda config, **kw: Con(real_open(config, **kw)))
    for fmt in ("table", "csv", "json", "jsonl"):
        res = _sql(lake, "--format", fmt, _big(lake))
        assert res.exit_code == 0, res.output  # _SpyCursor.fetchall() fails the command
    assert events and max(k for _, k in events) <= CHUNK_ROWS


def test_sql_small_results_and_stdin_print_as_before(lake: Path) -> None:
    res = _sql(lake, "SELECT 'mid' AS tier, 0.25 AS cost UNION ALL SELECT 'cache', NULL ORDER BY tier DESC")
    assert res.stdout == "tier   cost\n-----  ----\nmid    0.25\ncache  NULL\n(2 rows)\n" and res.stderr == ""
    res = _sql(lake, "--format", "json", "SELECT 1 AS a")
    assert res.stdout == '[\n {\n  "a": 1\n }\n]\n'
    res = _sql(lake, "--format", "csv", input="SELECT 1 AS a;\nSELECT\n 2 AS b;\n")
    assert res.stdout == "a\n1\nb\n2\n"
    res = _sql(lake, "--max-rows", "2", input=f"{_big(lake)};\nSELECT 1 AS a;\n")
    assert res.stdout.endswith("(first 2 rows)\na\n-\n1\n(1 row)\n") and "… 2,498 more rows not shown" in res.stderr


def test_sql_an_error_while_streaming_is_an_error(lake: Path) -> None:
    res = _sql(lake, "--format", "csv", "SELECT CAST(CASE WHEN i < 1500 THEN '1' ELSE 'x' END AS INTEGER) AS n "
                                        f"FROM read_parquet('{lake}/big.parquet')")
    assert res.exit_code == 1 and "Error" in res.stderr and "Traceback" not in res.output


def test_rows_past_the_limit_are_counted_only_up_to_the_cap():
    """A huge result is not read to its end to say how many rows were left out: past the cap, "at least"."""
    from costline.sqlutil import COUNT_REST_CAP, more_rows_note, write_rows

    out: list[str] = []
    chunks = ([(i,)] * 1000 for i in range(10 * COUNT_REST_CAP // 1000))  # 10 x the cap, lazily
    read = []
    hidden = write_rows(["n"], (read.append(1) or c for c in chunks), "table", out.append, max_rows=5)
    assert hidden == COUNT_REST_CAP
    assert len(read) <= COUNT_REST_CAP // 1000 + 1  # stopped reading at the cap
    assert more_rows_note(hidden, "table").startswith(f"… at least {COUNT_REST_CAP:,} more rows not shown")
    assert more_rows_note(2400, "table").startswith("… 2,400 more rows not shown")
