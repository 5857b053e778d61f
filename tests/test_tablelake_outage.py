"""The object store or the catalog goes down in the middle of a table commit, then comes back.

Real servers, really stopped: the SeaweedFS process is SIGKILLed and PostgreSQL is stopped in
``immediate`` mode (a crash) while a :class:`TableProcessor` commits, and restarted a few seconds
later. The processor must neither lose nor duplicate a row and must keep going once the server is
back: every hour x tier aggregate equals the one computed in Python with hand-written prices
(tests/test_processor_kafka.py), never by costline's SQL."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, missing_binary
from test_processor_kafka import assert_lake_holds_exactly, produce, producer

from costline.config import Config
from costline.sim.synth import synthetic_traffic
from tests.tablelake_helpers import table_lake_config

pytest.importorskip("pyiceberg")
pytestmark = [pytest.mark.kafka, pytest.mark.objstore]

DOWN_FOR_S = 3.0


@pytest.fixture
def own_objstore(tmp_path: Path) -> Iterator[Any]:
    """A SeaweedFS store of this test alone (the session's store must stay up for the others)."""
    from costline.localobjstore import LocalObjectStore, weed_binary

    try:
        weed_binary()
    except Exception as exc:  # noqa: BLE001
        missing_binary(str(exc))
    store = LocalObjectStore(tmp_path / "own-objstore", port=free_port(), access_key="costline-test",
                             secret_key="costline-test-secret", buckets=("costline-lake",))
    store.up()
    try:
        yield store
    finally:
        store.down()


@pytest.fixture
def own_postgres() -> Iterator[Any]:
    """A PostgreSQL cluster of this test alone (it gets crashed and restarted)."""
    pytest.importorskip("psycopg2")
    from costline.localcatalog import LocalPostgres, PostgresNotFound

    folder = tempfile.mkdtemp(prefix="costline-pgoutage-")  # not under tmp_path: see conftest.pg_catalog
    try:
        pg = LocalPostgres(folder, port=free_port())
    except PostgresNotFound as exc:
        shutil.rmtree(folder, ignore_errors=True)
        missing_binary(str(exc))
    pg.up()
    try:
        yield pg
    finally:
        pg.down()
        shutil.rmtree(folder, ignore_errors=True)


def _kill_objstore(store: Any) -> None:
    pid = int(store.pid_file.read_text())
    os.killpg(pid, signal.SIGKILL)
    os.waitpid(pid, 0)  # started by this process: reap it, so that `up` sees it gone


def _crash_postgres(pg: Any) -> None:
    r = pg._run(str(pg.bin / "pg_ctl"), "-D", str(pg.data_dir / "pg"), "-m", "immediate", "-w", "stop")
    assert r.returncode == 0, r.stderr


class _Outage:
    """On the ``nth`` catalog commit the processor makes: take the server down (before that commit's
    catalog swap, or right after it landed), and bring it back ``DOWN_FOR_S`` seconds later."""

    def __init__(self, nth: int, when: str, down: Callable[[], None], up: Callable[[], Any]) -> None:
        self.nth, self.when, self.down, self.up = nth, when, down, up
        self.calls = 0
        self.commits_at_outage: int | None = None
        self.restarted = threading.Event()
        self._lock = threading.Lock()
        self._restarter: threading.Thread | None = None

    def hook(self, processor: Any) -> None:
        catalog = processor.lake.catalog
        real = catalog.commit_table

        def commit_table(table: Any, requirements: Any, updates: Any) -> Any:
            with self._lock:
                self.calls += 1
                now = self.calls == self.nth
            if now and self.when == "before":
                self._go_down(processor)
            answer = real(table, requirements, updates)
            if now and self.when == "after":
                self._go_down(processor)
            return answer

        catalog.commit_table = commit_table

    def _go_down(self, processor: Any) -> None:
        self.commits_at_outage = processor.stats.commits
        self.down()

        def restart() -> None:
            time.sleep(DOWN_FOR_S)
            self.up()
            self.restarted.set()

        self._restarter = threading.Thread(target=restart, daemon=True)
        self._restarter.start()

    def join(self) -> None:
        assert self._restarter is not None, "the outage never happened"
        self._restarter.join(120)
        assert self.restarted.is_set()


def _run_through(cfg: Config, outage: _Outage, caplog: pytest.LogCaptureFixture, seed: int) -> Any:
    from costline.processors.table_sink import TableProcessor
    from costline.tablelake import TableLake

    TableLake(cfg.lake).init()
    traces = list(synthetic_traffic(900, seed=seed))
    prod = producer(cfg)
    produce(prod, cfg, traces)
    prod.close()
    proc = TableProcessor(cfg)
    outage.hook(proc)
    with caplog.at_level(logging.WARNING, logger="costline.tablelake"):
        stats = proc.run(until_idle=2.0)
    outage.join()
    assert outage.commits_at_outage is not None
    # it kept going: batches were committed after the outage, and it said what happened
    assert stats.commits > outage.commits_at_outage + 2, (stats.commits, outage.commits_at_outage)
    assert stats.fenced == 0
    text = caplog.text
    assert "unreachable" in text and "retry 1 in" in text and "reachable again" in text, text[-3000:]
    assert_lake_holds_exactly(cfg, traces)
    return stats


def test_the_object_store_killed_mid_commit_loses_and_duplicates_nothing(
        kafka_config: Config, own_objstore: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """SeaweedFS dies after a batch's data files were written, before the catalog swap (the metadata
    file cannot be written): the commit retries, writes its files again once the store is back and
    lands once; the processor goes on with the next batches."""
    cfg = kafka_config.replace(lake=table_lake_config(own_objstore, tmp_path),
                               processor={"batch_max_spans": 250, "flush_interval_s": 0.5})
    outage = _Outage(nth=13, when="before", down=lambda: _kill_objstore(own_objstore), up=own_objstore.up)
    _run_through(cfg, outage, caplog, seed=21)
    assert "object store unreachable" in caplog.text


@pytest.mark.parametrize("when", ["before", "after"])
def test_the_catalog_crashed_mid_commit_loses_and_duplicates_nothing(
        kafka_config: Config, objstore: Any, own_postgres: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        when: str) -> None:
    """PostgreSQL crashes before one table's catalog swap ("before"), or right after it landed while
    the batch's other tables are still committing ("after": the batch is in some tables only). The
    commits retry until it is back; the offsets in each snapshot keep every row once."""
    cfg = kafka_config.replace(lake=table_lake_config(objstore, tmp_path, catalog_uri=own_postgres.uri),
                               processor={"batch_max_spans": 250, "flush_interval_s": 0.5})
    outage = _Outage(nth=13, when=when, down=lambda: _crash_postgres(own_postgres), up=own_postgres.up)
    _run_through(cfg, outage, caplog, seed=22 if when == "before" else 23)
    assert "catalog unreachable" in caplog.text


def test_an_outage_past_the_retry_budget_fails_with_a_clear_error_and_commits_nothing(
        objstore: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Retries are bounded ([lake] outage_retry_s): past it the commit raises a LakeError that names the
    outage and says how to resume, and the table keeps its last commit."""
    import dataclasses
    import socket

    from costline.errors import LakeError
    from costline.tablelake import TableLake
    from tests.test_tablelake import _requests

    cfg = table_lake_config(objstore, tmp_path)
    lake = TableLake(cfg).init()
    epoch = lake.claim("otlp_spans", 0)
    lake.commit_batch("otlp_spans", 0, 0, 1, {"requests": _requests([0, 1])}, epoch=epoch)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    clocks = threading.local()  # injected time, one clock per table's commit thread
    slept: list[float] = []

    def now() -> float:
        return float(getattr(clocks, "t", 0.0))

    def sleep(s: float) -> None:  # the budget runs out without waiting for it
        clocks.t = now() + s
        slept.append(clocks.t)

    # each try at the dead port costs real time (the S3 client's own connect retries): a budget that takes one
    # wait at the 5 s cap, not four
    cut_off = TableLake(dataclasses.replace(cfg, s3_endpoint=dead, outage_retry_s=15.0), sleep=sleep, now=now)
    with caplog.at_level(logging.WARNING, logger="costline.tablelake"):
        with pytest.raises(LakeError, match=r"object store has been unreachable for \d+ s .*outage_retry_s = 15"):
            cut_off.commit_batch("otlp_spans", 0, 2, 5, {"requests": _requests([2, 5])}, epoch=epoch)
    assert "retry 1 in 0.25 s" in caplog.text and "giving up" in caplog.text
    # backed off 0.25 s doubling, capped at 5 s, and up to the budget (7.75 + 5 + 2.25 = 15 s), not beyond
    assert [b - a for a, b in zip([0.0] + slept, slept)] == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 2.25]
    assert max(slept) == 15.0
    assert lake.committed_offsets("otlp_spans", 0) == {"requests": 1, "calls": 1, "lookups": 1}
