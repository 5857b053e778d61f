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
