"""Table-mode maintenance (`costline lake compact`): small files rewritten, old snapshots expired,
safe beside writers (real SeaweedFS + catalog; a real broker and a running TableProcessor for the
last test). Expected rows and aggregates are computed by hand, never by costline's SQL."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from costline.config import Config
from tests.tablelake_helpers import table_lake_config
from tests.test_tablelake import TOPIC, _calls, _requests

pytest.importorskip("pyiceberg")
pytestmark = pytest.mark.objstore


def _live_files(lake, table: str) -> int:  # type: ignore[no-untyped-def]
    return sum(1 for _ in lake.table(table).scan().plan_files())


def test_compaction_rewrites_small_files_keeps_rows_and_offsets_and_expiry_keeps_the_current_snapshot(
        objstore, tmp_path: Path) -> None:
    from costline.tablelake import TableLake

    lake = TableLake(table_lake_config(objstore, tmp_path)).init()
    epoch = lake.claim(TOPIC, 0)
    for first in range(0, 40, 10):  # four batches: four small files per table
        lake.commit_batch(TOPIC, 0, first, first + 9, {"requests": _requests(list(range(first, first + 10))),
                                                       "calls": _calls([first])}, epoch=epoch)
    assert _live_files(lake, "requests") == 4 and _live_files(lake, "calls") == 4
    done = {c.table: c for c in lake.compact()}
    assert set(done) == {"requests", "calls"}  # lookups has no files
    assert (done["requests"].files, done["requests"].new_files, done["requests"].rows) == (4, 1, 40)
    assert _live_files(lake, "requests") == 1 and _live_files(lake, "calls") == 1
    assert sorted(lake.table("requests").scan().to_arrow().column("kafka_offset").to_pylist()) == list(range(40))
    assert sorted(lake.table("calls").scan().to_arrow().column("kafka_offset").to_pylist()) == [0, 10, 20, 30]
    # the compaction snapshot carried the offsets and the claim: recovery and the fence are unchanged
    assert lake.recover(TOPIC, 0) == (40, [])
    lake.commit_batch(TOPIC, 0, 40, 41, {"requests": _requests([40, 41])}, epoch=epoch)
    before = len(lake.table("requests").snapshots())
    expired = lake.expire_snapshots(older_than_s=0, keep_last=2)
    tbl = lake.table("requests")
    assert expired["requests"] == before - 2 and len(tbl.snapshots()) == 2
    assert lake.recover(TOPIC, 0) == (42, [])
    assert tbl.scan().to_arrow().num_rows == 42


def test_a_compaction_that_loses_the_race_to_a_writer_retries_on_the_new_snapshot(objstore, tmp_path: Path) -> None:
    """A writer commits between the compaction's read and its catalog swap: the compaction's commit is
    refused, it retries on the writer's snapshot (carrying the writer's new offsets), and the writer's
    rows stay."""
    from costline.tablelake import TableLake

    cfg = table_lake_config(objstore, tmp_path)
    writer, compactor = TableLake(cfg).init(), TableLake(cfg).init()
    epoch = writer.claim(TOPIC, 0)
    for first in (0, 5):
        writer.commit_batch(TOPIC, 0, first, first + 4, {"requests": _requests(list(range(first, first + 5)))},
                            epoch=epoch)
    real = compactor.catalog.commit_table
    raced: list[bool] = []

    def commit_table(table, requirements, updates):  # type: ignore[no-untyped-def]
        if not raced:
            raced.append(True)
            writer.commit_batch(TOPIC, 0, 10, 14, {"requests": _requests([10, 12, 14])}, epoch=epoch)
        return real(table, requirements, updates)

    compactor.catalog.commit_table = commit_table
    done = compactor.compact(tables=["requests"])
    assert raced and len(done) == 1 and done[0].lost_races >= 1 and done[0].rows == 10
    assert sorted(writer.table("requests").scan().to_arrow().column("kafka_offset").to_pylist()) == [
        *range(10), 10, 12, 14]
    assert writer.committed_offsets(TOPIC, 0)["requests"] == 14
    assert _live_files(writer, "requests") == 2  # the rewritten file and the writer's


@pytest.mark.kafka
def test_compaction_and_expiry_beside_a_running_processor(kafka_config: Config, objstore, tmp_path: Path) -> None:
    from test_processor_kafka import assert_lake_holds_exactly, produce, producer

    from costline.sim.synth import synthetic_traffic
    from costline.processors.table_sink import TableProcessor
    from costline.tablelake import TableLake
    from costline.tablelake_cli import compact_once

    cfg = kafka_config.replace(lake=table_lake_config(objstore, tmp_path),
                               processor={"batch_max_spans": 150, "flush_interval_s": 0.3})
    lake = TableLake(cfg.lake).init()
    traces = list(synthetic_traffic(900, seed=31))
    prod = producer(cfg)
    produce(prod, cfg, traces[:450])
    proc = TableProcessor(cfg)
    result: list = []
    t = threading.Thread(target=lambda: result.append(proc.run(until_idle=3.0)), daemon=True)
    t.start()
    passes = compacted = 0
    deadline = time.monotonic() + 240
    while t.is_alive() and time.monotonic() < deadline:
        compacted += sum("files ->" in line for line in compact_once(cfg, expire_older_than=0))
        passes += 1
        if passes == 2:
            produce(prod, cfg, traces[450:])  # the processor keeps committing after compactions
    prod.close()
    t.join(240)
    assert result, "the processor did not finish"
    commits = result[0].commits
    compact_once(cfg, expire_older_than=0)
    assert passes >= 2 and compacted > 0 and commits > 0, (passes, compacted, commits)
    assert result[0].fenced == 0
    for table in ("requests", "calls", "lookups"):
        tbl = lake.table(table)
        days = {str(task.file.partition) for task in tbl.scan().plan_files()}
        assert _live_files(lake, table) == len(days), table  # one file per day partition left
        assert len(tbl.snapshots()) <= 10  # expired down to the newest 10
    assert_lake_holds_exactly(cfg, traces)
    # and a processor started now finds every partition's offsets in the compacted tables
    assert TableProcessor(cfg).run(until_idle=1.0).messages == 0


def test_the_scheduled_form_reports_a_failed_pass_and_runs_the_next(objstore, tmp_path: Path, capsys) -> None:
    """`costline lake compact --every N`: a pass that fails (the store unreachable past
    [lake] outage_retry_s) is reported, and the next pass runs on schedule."""
    import dataclasses
    import socket

    from costline.tablelake import TableLake
    from costline.tablelake_cli import compact_loop

    good = table_lake_config(objstore, tmp_path)
    TableLake(good).init()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    cut_off = Config(lake=dataclasses.replace(good, s3_endpoint=dead, outage_retry_s=0.3))
    slept: list[float] = []
    compact_loop(cut_off, every=600.0, expire_older_than=0, sleep=slept.append, passes=2)
    out = capsys.readouterr()
    assert slept == [600.0] and out.err.count("maintenance pass failed:") == 2, out
    compact_loop(Config(lake=good), every=600.0, sleep=slept.append, passes=1)
    assert "nothing to compact" in capsys.readouterr().out
