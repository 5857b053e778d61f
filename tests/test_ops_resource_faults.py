"""Resource faults an operator meets: too few open files, clients that give up, Ctrl-C, a full disk, a closed pipe.

* At the open-file limit a listener must not spin on ``accept()`` (EMFILE leaves the listening socket readable): its
  connection cap stays below the limit, and an EMFILE pauses accepting with one warning.
* A client that resets its connection mid-request is no error of the collector (no ERROR line, no traceback).
* Ctrl-C during a DuckDB query is ``aborted`` and exit 130, however DuckDB words it.
* A full disk says "free disk space", not "move the file out of the lake" (compaction) or "check permissions".
* A closed stdout (``costline config | head -1``) exits 141 (128 + SIGPIPE, as ``seq`` does) with nothing on stderr.

Expected values are worked out by hand in the comments.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections import namedtuple
from datetime import date
from pathlib import Path

import click
import pyarrow as pa
import pytest

from collector_rig import RecordingForwarder

from costline import netsec
from costline.netsec import GuardedHandler, Limits, PooledHTTPServer

PY = sys.executable
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "COSTLINE_REQUIRE_EXTRAS": "0"}


def _wait_for(predicate, timeout_s: float = 15.0) -> bool:
    """Poll ``predicate`` until true or ``timeout_s`` passed (a wait, never an assertion on time)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


# --- 1. the open-file limit ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("limits, open_files, expected", [
    # 256 files: 128 kept for the rest of the process, 32 workers + 64 pending hold one each -> 256-128-96 = 32
    (Limits(max_connections=1024, max_workers=32, max_pending=64), 256, 32),
    # plenty of files: the configured 1024
    (Limits(max_connections=1024, max_workers=32, max_pending=64), 1_048_576, 1024),
    # 0 means the default, 1024
    (Limits(max_connections=0, max_workers=32, max_pending=64), 1_048_576, 1024),
    # 200 files, 2 + 2 workers/pending: room for 200-128-4 = 68, above the configured 50
    (Limits(max_connections=50, max_workers=2, max_pending=2), 200, 50),
    # fewer files than the reserve: still one connection
    (Limits(max_connections=1024, max_workers=32, max_pending=64), 100, 1),
])
def test_connection_cap_stays_below_the_open_file_limit(limits, open_files, expected) -> None:
    assert netsec.connection_room(limits, open_files) == expected


_LOW_LIMIT_SERVER = textwrap.dedent("""
    import resource, sys, threading
    resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))  # the hard one too: nothing to raise it to
    from costline.netsec import GuardedHandler, Limits, PooledHTTPServer
    class H(GuardedHandler):
        def do_GET(self):
            self.send_response(204); self.end_headers()
    server = PooledHTTPServer(("127.0.0.1", 0), H, limits=Limits(max_workers=2, max_pending=2, max_connections=1024,
                              idle_timeout_s=120, read_timeout_s=120))
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    print(server.server_address[1], flush=True)
    sys.stdin.read()
    server.server_close()
""")


def test_server_under_a_low_open_file_limit_answers_503_past_its_cap() -> None:
    """Open-file limit 200, 2 workers + 2 pending: at most 200 - 128 - 4 = 68 idle connections are held; of 100 idle
    connections the last 32 get a 503 at once (the old server held all 100, on its way to EMFILE)."""
    proc = subprocess.Popen([PY, "-c", _LOW_LIMIT_SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=ENV, text=True)
    socks: list[socket.socket] = []
    try:
        port = int(proc.stdout.readline())
        sel = selectors.DefaultSelector()
        for _ in range(100):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.setblocking(False)
            socks.append(s)
            sel.register(s, selectors.EVENT_READ)
        answered: dict[socket.socket, bytes] = {}

        def poll() -> bool:
            for key, _ in sel.select(0.05):
                sock = key.fileobj
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b"(reset)"
                answered[sock] = answered.get(sock, b"") + data
                if not data or len(answered[sock]) > 20:
                    sel.unregister(sock)
            return len(answered) >= 32

        _wait_for(poll)
        time.sleep(0.2)
        poll()  # none more should come
        assert len(answered) == 32
        assert all(a.startswith(b"HTTP/1.1 503") for a in answered.values())
        assert set(answered) == set(socks[68:])  # the first 68 are held, waiting for their request
    finally:
        for s in socks:
            s.close()
        proc.stdin.close()
        proc.wait(10)
        err = proc.stderr.read()
    assert "leaves room for 68 connections" in err  # the operator is told, once


class _Nothing(GuardedHandler):
    pass


class _OutOfFiles:
    """A listening socket whose accept() fails as the kernel does for want of a file descriptor."""

    def __init__(self, code: int) -> None:
        self.code = code

    def accept(self):
        raise OSError(self.code, os.strerror(self.code))


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE])
def test_accept_out_of_files_pauses_and_warns_once_a_minute(code, caplog) -> None:
    clock = [0.0]
    pauses: list[float] = []
    server = PooledHTTPServer(("127.0.0.1", 0), _Nothing, limits=Limits(), name="test-emfile",
                              now=lambda: clock[0], sleep=pauses.append)
    real = server.socket
    try:
        server.socket = _OutOfFiles(code)
        with caplog.at_level(logging.WARNING, logger="costline.netsec"):
            for at in (0.0, 1.0, 2.0, 61.0):  # a warning at 0 (1 failure), none at 1 and 2, one at 61 (3 since)
                clock[0] = at
                server._handle_request_noblock()  # what serve_forever does when the listener is readable
    finally:
        server.socket = real
        server.server_close()
    assert pauses == [0.1, 0.1, 0.1, 0.1]  # every failure pauses accepting 0.1 s instead of retrying at once
    warned = [r.getMessage() for r in caplog.records if "cannot accept connections" in r.getMessage()]
    assert len(warned) == 2
    assert "(1 time(s) since the last warning)" in warned[0]
    assert "(3 time(s) since the last warning)" in warned[1]


# --- 2. a client that gives up mid-request ---------------------------------------------------------------------------
def _export_body() -> bytes:
    from costline.sim.synth import synthetic_traffic

    return next(synthetic_traffic(1, seed=9)).request.SerializeToString()


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # RST: what a client whose timeout fired does


@pytest.mark.parametrize("when", ["before its answer", "while sending its body"])
def test_a_client_that_resets_mid_request_is_no_error(when, caplog) -> None:
    from costline.collectors import OtlpReceiver
    from costline.config import CollectorConfig

    hold = threading.Event()
    fwd = RecordingForwarder(hold=hold)
    receiver = OtlpReceiver(CollectorConfig(), fwd, host="127.0.0.1", port=0)
    body = _export_body()
    caplog.set_level(logging.DEBUG, logger="costline.collectors.receiver")
    port = receiver.start()
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        head = (b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body))
        if when == "before its answer":
            sock.sendall(head + body)
            assert fwd.entered.wait(10)  # the export is at the forwarder: the answer is still to be written
            _reset(sock)
            hold.set()
        else:
            sock.sendall(head + body[:10])
            assert _wait_for(lambda: receiver.budget.used > 0)  # a worker is reading the body
            _reset(sock)
        assert _wait_for(lambda: any(r.levelno >= logging.ERROR or "went away" in r.getMessage()
                                     for r in caplog.records))
    finally:
        hold.set()
        receiver.shutdown()
    records = [r for r in caplog.records if r.name == "costline.collectors.receiver"]
    assert [r.getMessage() for r in records if r.levelno >= logging.WARNING] == []
    assert any(r.levelno == logging.DEBUG and "went away" in r.getMessage() for r in records)


# --- 3. Ctrl-C during a DuckDB query ---------------------------------------------------------------------------------
def _duckdb_interrupt():
    import duckdb

    return duckdb.InterruptException("INTERRUPT Error: Interrupted!")


@pytest.mark.parametrize("make", [lambda: RuntimeError("Query interrupted"), _duckdb_interrupt],
                         ids=["RuntimeError", "InterruptException"])
def test_a_duckdb_interrupt_is_aborted_130(make, capsys) -> None:
    from costline.cli import cli, main

    @click.command("raise-for-test")
    def raiser() -> None:
        raise make()

    cli.add_command(raiser)
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(["raise-for-test"])
    finally:
        cli.commands.pop("raise-for-test", None)
    assert exit_info.value.code == 130
    assert capsys.readouterr().err == "aborted\n"


def test_an_interrupted_sql_query_is_not_reported_as_a_query_error() -> None:
    """`costline sql` turned DuckDB's InterruptException (a duckdb.Error) into "Error: INTERRUPT Error", exit 1."""
    import duckdb

    from costline.processors.cli import _run_query

    con = duckdb.connect()
    con.execute("SET threads = 1")
    done = threading.Event()

    def interrupt() -> None:
        while not done.is_set():
            con.interrupt()
            time.sleep(0.01)

    t = threading.Thread(target=interrupt, daemon=True)
    t.start()
    try:
        with pytest.raises(duckdb.InterruptException):
            _run_query(con, "SELECT count(*) FROM range(100000000000000) t(x) WHERE x % 7 = 3", "csv", None)
    finally:
        done.set()
        t.join(5)
        con.close()


def _empty_lake(tmp_path: Path) -> Path:
    from costline.lake import Lake

    return Lake(tmp_path / "lake").init().path


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to tell the query is running")
def test_ctrl_c_during_costline_sql_exits_130(tmp_path: Path) -> None:
    env = {**ENV, "COSTLINE_LAKE_PATH": str(_empty_lake(tmp_path))}
    # SIGINT as at a terminal: Python's own handler, even where this test runs with SIGINT ignored (a background job)
    start = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
             "sys.argv = ['costline'] + sys.argv[1:]; runpy.run_module('costline', run_name='__main__')")
    proc = subprocess.Popen([PY, "-c", start, "sql", "SELECT count(*) FROM range(100000000000) t(x) WHERE x % 7 = 3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        # starting costline takes under 1 s of CPU; past 2 s the query is running
        assert _wait_for(lambda: proc.poll() is not None or _cpu_s(proc.pid) > 2.0, 60)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (proc.returncode, err.decode().strip().splitlines()[-1:]) == (130, ["aborted"])
    assert b"Traceback" not in err


# --- 4. a full disk --------------------------------------------------------------------------------------------------
def _lake_with_two_days(root: Path):
    from costline.lake import Lake
    from costline.lake._schema import SCHEMAS

    lake = Lake(root).init()
    epoch = lake.claim("otlp_spans", 0)
    offset = 0
    for day in ("2026-05-01", "2026-05-02"):
        for _ in range(2):  # two committed batches a day: something to merge
            rows = [{"request_id": f"r{offset}", "trace_id": f"{offset:032x}", "span_id": f"s{offset}",
                     "ts": None, "cache_hit": False, "kafka_partition": 0, "kafka_offset": offset}]
            table = pa.Table.from_pylist(rows, schema=SCHEMAS["requests"])
            lake.commit_batch("otlp_spans", 0, offset, offset, {"requests": {day: table}}, epoch=epoch)
            offset += 1
    return lake


def _data_files(lake) -> list[str]:
    return sorted(str(p.relative_to(lake.path)) for p in lake.path.rglob("*.parquet") if p.name != "_empty.parquet")


class _FullDiskDuckDB:
    """duckdb.connect() whose COPY fails as DuckDB's does on a full disk."""

    def __init__(self, connect):
        self._con = connect()

    def execute(self, sql, *args):
        import duckdb

        if sql.startswith("COPY"):
            raise duckdb.IOException('IO Error: Could not write file "/lake/.c-x.parquet.1-1.tmp": '
                                     'No space left on device')
        return self._con.execute(sql, *args)

    def close(self):
        self._con.close()


@pytest.mark.parametrize("how", ["duckdb's write", "the fsync"])
def test_compaction_on_a_full_disk_says_free_space_once(how, tmp_path, monkeypatch) -> None:
    import duckdb

    from costline import fsutil
    from costline.errors import LakeError

    lake = _lake_with_two_days(tmp_path / "lake")
    before = _data_files(lake)
    assert len(before) == 4
    if how == "duckdb's write":
        real = duckdb.connect
        monkeypatch.setattr(duckdb, "connect", lambda *a, **k: _FullDiskDuckDB(real))
    else:
        def full(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(fsutil, "fsync_file", full)
    with pytest.raises(LakeError) as err:
        lake.compact(before=date(2026, 12, 1))
    message = str(err.value)
    assert "Free disk space" in message
    assert message.count("No space left on device") == 1  # said once: the second day was not tried
    assert "Move the file" not in message  # the old advice: remove good data
    assert _data_files(lake) == before  # nothing changed
    assert not list(lake.path.rglob("*.tmp"))


def test_alert_state_on_a_full_disk_says_free_space(tmp_path, monkeypatch) -> None:
    import shutil
    import sqlite3

    from costline.alerts.errors import AlertsStateError
    from costline.alerts.store import AlertStore

    usage = namedtuple("usage", "total used free")
    free = [0]

    def failing_connect(*args, **kwargs):
        raise sqlite3.OperationalError(message[0])

    message = ["disk I/O error"]
    monkeypatch.setattr(sqlite3, "connect", failing_connect)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 << 30, (10 << 30) - free[0], free[0]))
    with pytest.raises(AlertsStateError) as err:
        AlertStore(tmp_path / "_alerts" / "state.sqlite")
    assert "the disk holding it is full (0 bytes free): free disk space there" in str(err.value)
    assert "permissions" not in str(err.value)
    # 5 GiB free and a permission problem: the old advice stands
    free[0], message[0] = 5 << 30, "unable to open database file"
    with pytest.raises(AlertsStateError) as err:
        AlertStore(tmp_path / "_alerts" / "state.sqlite")
    assert "check the path ([alerts] state_path) and its permissions" in str(err.value)


# --- 5. a closed stdout ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [
    ["config"],
    ["sql", "--format", "csv", "SELECT * FROM range(3)"],
    ["lake", "status"],
    ["--help"],
])
def test_a_closed_stdout_exits_141_silently(args, tmp_path) -> None:
    """stdout is a pipe whose reader is gone before costline writes (`costline config | head -0`): 141, as `seq`
    killed by SIGPIPE; nothing on stderr (no "Exception ignored ... BrokenPipeError")."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {**ENV, "COSTLINE_LAKE_PATH": str(_empty_lake(tmp_path))}
    try:
        done = subprocess.run([PY, "-m", "costline", *args], stdout=write_end, stderr=subprocess.PIPE, env=env,
                              timeout=120)
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr.decode()) == (141, "")
