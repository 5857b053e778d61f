"""`costline dashboard` (write, --sql, --serve's server) and the demo's closing lines, without a browser."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
from click.testing import CliRunner

from costline.cli import _register_area_commands, cli
from costline.config import Config, LakeConfig
from costline.dashboards import DashboardError, DashboardServer, announce_dashboard, chart_by_name, chart_sql
from costline.dashboards.serve import PageCache
from costline.dashboards.settings import DashboardConfig
from costline.lake import Lake


def _run(tmp_path, *args):
    _register_area_commands()
    env = {"COSTLINE_LAKE_PATH": str(tmp_path / "lake"), "COSTLINE_CONFIG": ""}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_dashboard_writes_the_page_and_says_where(tmp_path):
    Lake(tmp_path / "lake").init()  # a lake with no data yet (a missing one is refused: test_missing_lake.py)
    out = tmp_path / "site" / "dash.html"
    res = _run(tmp_path, "dashboard", "--out", str(out))
    assert res.exit_code == 0, res.output
    assert res.output.strip() == f"wrote {out.resolve()}"
    assert "No data yet" in out.read_text(encoding="utf-8")


def test_dashboard_sql_prints_one_charts_runnable_sql(tmp_path):
    res = _run(tmp_path, "dashboard", "--sql", "cache_hit_rate")
    assert res.exit_code == 0
    assert res.output == chart_sql(chart_by_name("cache_hit_rate"), Config())
    assert "baseline - 0.1" in res.output
    bad = _run(tmp_path, "dashboard", "--sql", "nope")
    assert bad.exit_code == 2 and "traffic_mix" in bad.output


def test_help_has_an_example(tmp_path):
    res = _run(tmp_path, "dashboard", "--help")
    assert "Example:" in res.output and "costline dashboard --serve" in res.output


def test_config_section_is_loaded_from_toml_and_env(tmp_path):
    from costline.config import load_config

    toml = tmp_path / "c.toml"
    toml.write_text('[dashboard]\nport = 9001\nout = "x/d.html"\n', encoding="utf-8")
    cfg = load_config(toml, env={"COSTLINE_DASHBOARD_REFRESH_S": "15"})
    assert cfg.dashboard == DashboardConfig(port=9001, out=cfg.dashboard.out, refresh_s=15.0)
    assert cfg.dashboard.out.name == "d.html"


def test_announce_dashboard_prints_the_path_and_the_serve_command(tmp_path):
    lines: list[str] = []
    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"))
    path = announce_dashboard(cfg, tmp_path / "d.html", echo=lines.append)
    assert path.is_file()
    assert lines[0] == f"dashboard: {path.resolve()}"
    assert lines[1].endswith(f"COSTLINE_LAKE_PATH={tmp_path / 'lake'} costline dashboard --serve")


def test_page_cache_rebuilds_only_when_stale():
    now = [0.0]
    n = [0]

    def build() -> str:
        n[0] += 1
        return f"page {n[0]}"

    cache = PageCache(build, 60.0, clock=lambda: now[0])
    assert cache.get() == b"page 1" and cache.get() == b"page 1"
    now[0] = 59.9
    assert cache.get() == b"page 1"
    now[0] = 60.0
    assert cache.get() == b"page 1"  # stale: served as it is while the rebuild runs in the background
    assert cache.wait(10)
    assert cache.get() == b"page 2" and cache.builds == 2


def test_a_request_gets_the_last_good_page_while_one_rebuild_runs_and_a_failed_rebuild_keeps_it():
    """The rebuild blocks (a slow lake): requests meanwhile get page 1 at once, and start no second rebuild; a
    rebuild that fails leaves page 2 served."""
    now = [0.0]
    release = threading.Event()
    started = threading.Semaphore(0)
    calls = [0]

    def build() -> str:
        calls[0] += 1
        if calls[0] == 2:
            started.release()
            release.wait(30)
            return "page 2"
        if calls[0] == 3:
            raise RuntimeError("lake unreadable")
        return f"page {calls[0]}"

    cache = PageCache(build, 60.0, clock=lambda: now[0])
    assert cache.get() == b"page 1"
    now[0] = 61.0
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.extend(cache.get() for _ in range(3)), daemon=True)
    reader.start()
    reader.join(10)  # guards against the old behaviour (the request waits for the build) hanging the test
    assert not reader.is_alive() and got == [b"page 1"] * 3
    assert started.acquire(timeout=10) and calls[0] == 2  # one rebuild, though three requests found it stale
    release.set()
    assert cache.wait(10) and cache.get() == b"page 2"
    now[0] = 200.0
    assert cache.get() == b"page 2"  # starts the failing rebuild
    assert cache.wait(10) and calls[0] == 3 and cache.failed == 1
    assert cache.get() == b"page 2" and cache.builds == 2


def test_server_serves_the_page_on_localhost_and_404s_elsewhere(tmp_path):
    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"))
    with DashboardServer(cfg, port=0, refresh_s=30) as server:
        assert server.url.startswith("http://localhost:")
        with urllib.request.urlopen(server.url, timeout=10) as resp:
            body = resp.read().decode("utf-8")
            assert resp.headers["Content-Type"].startswith("text/html")
        assert '"refresh_s":30.0' in body and "auto-refresh every 30 s" in body
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(server.url + "favicon.ico", timeout=10)
        assert err.value.code == 404
        assert server.pages.builds == 1


def test_server_answers_500_when_the_page_cannot_be_built(tmp_path):
    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"))

    def broken() -> str:
        raise DashboardError("lake unreadable")

    with DashboardServer(cfg, port=0, build=broken) as server:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(server.url, timeout=10)
        assert err.value.code == 500


def test_bad_refresh_is_refused(tmp_path):
    with pytest.raises(DashboardError, match="refresh"):
        DashboardServer(Config(lake=LakeConfig(path=tmp_path)), port=0, refresh_s=0)


def _answer(sock: socket.socket, wait_s: float = 3.0) -> bytes:
    sock.settimeout(wait_s)
    chunks = []
    try:
        while data := sock.recv(65536):
            chunks.append(data)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


def test_requests_take_at_most_max_workers_threads_and_the_rest_get_503_while_idle_connections_take_none(tmp_path):
    """2 workers + 3 waiting: of 10 page requests held in their build, 5 are served and 5 answered 503 at once;
    20 idle connections beside them hold no worker and no queue place (they wait for a head in the gatherer)."""
    release = threading.Event()

    def build():
        release.wait(10)
        return "<p>page</p>"

    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"), dashboard=DashboardConfig(max_workers=2, max_pending=3))
    with DashboardServer(cfg, port=0, build=build) as server:
        port = int(server.url.rsplit(":", 1)[1].strip("/"))
        before = threading.active_count()
        idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(20)]
        asking = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(10)]
        try:
            for s in asking:
                s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            deadline = time.monotonic() + 10
            while server.refused < 5 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert server.refused == 5  # 2 building, 3 waiting, 5 refused; the 20 idle ones none
            assert threading.active_count() - before <= 3  # 2 workers and the head gatherer
            release.set()
            answers = [_answer(s) for s in asking]
            assert sorted(a.split(b" ", 2)[1] for a in answers) == [b"200"] * 5 + [b"503"] * 5
            assert all(b"Retry-After: 1" in a for a in answers if a.split(b" ", 2)[1] == b"503")
        finally:
            release.set()
            for s in idle + asking:
                s.close()


@pytest.mark.parametrize("env, key", [
    ({"COSTLINE_DASHBOARD_MAX_WORKERS": "0"}, "max_workers"),
    ({"COSTLINE_DASHBOARD_MAX_PENDING": "0"}, "max_pending"),
    ({"COSTLINE_DASHBOARD_IDLE_TIMEOUT_S": "0"}, "idle_timeout_s"),
    ({"COSTLINE_DASHBOARD_MAX_HEADER_BYTES": "0"}, "max_header_bytes"),
])
def test_server_limits_are_checked_when_the_config_loads(tmp_path, env, key):
    from costline.config import load_config
    from costline.errors import ConfigError

    toml = tmp_path / "c.toml"
    toml.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match=key):
        load_config(toml, env=env)


def test_server_limits_are_read_from_the_config(tmp_path):
    from costline.config import load_config

    toml = tmp_path / "c.toml"
    toml.write_text("[dashboard]\nmax_workers = 3\nidle_timeout_s = 5\n", encoding="utf-8")
    cfg = load_config(toml, env={"COSTLINE_DASHBOARD_MAX_PENDING": "7"})
    d = cfg.dashboard
    assert (d.max_workers, d.max_pending, d.idle_timeout_s, d.max_header_bytes) == (3, 7, 5.0, 32 * 1024)
