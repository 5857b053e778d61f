"""Table mode across versions and failures (real SeaweedFS + SQLite catalog): a compaction keeps the columns a
newer costline added, a result table an older costline made gains the new columns, the scheduled compaction
outlives an outage while it plans, and pipeline_silent's last span is bounded by the last commit, not by a
client's clock. Expected values are written by hand."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from costline.config import Config
from costline.lake import SCHEMAS
from tests.tablelake_helpers import table_lake_config
from tests.test_tablelake import TOPIC, _requests

pytest.importorskip("pyiceberg")
pytestmark = pytest.mark.objstore


def _with_region(offsets: list[int], region: str) -> pa.Table:
    """``_requests`` rows as a newer costline writes them: one more column, ``region``."""
    t = _requests(offsets)  # (made with SCHEMAS, which may be the newer one already)
    t = t.drop_columns(["region"]) if "region" in t.schema.names else t
    return t.append_column(pa.field("region", pa.string()), pa.array([region] * t.num_rows, pa.string()))


def _regions(lake) -> list[tuple[int, str | None]]:  # type: ignore[no-untyped-def]
    got = lake.table("requests").scan(selected_fields=("kafka_offset", "region")).to_arrow().to_pylist()
    return sorted((r["kafka_offset"], r["region"]) for r in got)


def test_a_compaction_keeps_the_values_of_a_column_a_newer_costline_added(objstore, tmp_path: Path,
                                                                          monkeypatch, caplog) -> None:
    """Rolling upgrade: the newer version adds `requests.region` and writes it; this (older) version's
    compaction rewrites those files. The values stay (they were all NULL after the rewrite), and the
    partition reads as a date, not `Record[...]`."""
    from costline.tablelake import TableLake

    cfg = table_lake_config(objstore, tmp_path)
    old = TableLake(cfg).init()
    epoch = old.claim(TOPIC, 0)
    old.commit_batch(TOPIC, 0, 0, 1, {"requests": _requests([0, 1])}, epoch=epoch)
    with monkeypatch.context() as m:  # the newer costline: one more column, added by its _ensure_columns
        m.setitem(SCHEMAS, "requests", _with_region([0], "eu").schema)
        new = TableLake(cfg).init()
        new.commit_batch(TOPIC, 0, 2, 3, {"requests": _with_region([2, 3], "eu")}, epoch=epoch)
        new.commit_batch(TOPIC, 0, 4, 5, {"requests": _with_region([4, 5], "us")}, epoch=epoch)
    expected = [(0, None), (1, None), (2, "eu"), (3, "eu"), (4, "us"), (5, "us")]
    assert _regions(new) == expected
    caplog.set_level("INFO", logger="costline.tablelake")
    done = TableLake(cfg).compact(tables=["requests"])  # this version: SCHEMAS without `region`
    assert _regions(TableLake(cfg).init()) == expected
    assert [(c.partition, c.files, c.new_files, c.rows) for c in done] == [("2026-11-02", 3, 1, 6)]
    assert sum(1 for _ in old.table("requests").scan().plan_files()) == 1
    assert old.recover(TOPIC, 0) == (6, [])
    assert "requests 2026-11-02" in caplog.text and "Record[" not in caplog.text


def test_a_column_that_cannot_be_rewritten_stops_the_compaction_and_keeps_the_files(objstore, tmp_path: Path,
                                                                                   monkeypatch) -> None:
    import pyiceberg.io.pyarrow as pio

    from costline.errors import LakeError
    from costline.tablelake import TableLake

    cfg = table_lake_config(objstore, tmp_path)
    lake = TableLake(cfg).init()
    epoch = lake.claim(TOPIC, 0)
    with monkeypatch.context() as m:
        m.setitem(SCHEMAS, "requests", _with_region([0], "eu").schema)
        newer = TableLake(cfg).init()
        for first in (0, 2):
            newer.commit_batch(TOPIC, 0, first, first + 1, {"requests": _with_region([first, first + 1], "eu")},
                               epoch=epoch)

    def refuse(**kw):  # type: ignore[no-untyped-def]
        raise NotImplementedError("a type this pyiceberg cannot write")

    monkeypatch.setattr(pio, "_dataframe_to_data_files", refuse)
    with pytest.raises(LakeError, match=r"region \(string\)"):
        lake.compact(tables=["requests"])
    assert sum(1 for _ in lake.table("requests").scan().plan_files()) == 2
    assert _regions(lake) == [(0, "eu"), (1, "eu"), (2, "eu"), (3, "eu")]


def test_a_result_table_an_older_costline_made_gains_the_columns_this_one_writes(objstore, tmp_path: Path) -> None:
    from costline.jobs.store import JOB_SCHEMAS, job_store
    from costline.lake import open_lake
    from costline.tablelake import ResultTables

    cfg = Config(lake=table_lake_config(objstore, tmp_path))
    now = JOB_SCHEMAS["job_runs"]
    older = now.remove(now.get_field_index("updated_at"))
    ResultTables(cfg.lake).write("job_runs", "old.0", pa.Table.from_pylist(
        [{"run_id": "old", "job": "drift", "status": "succeeded"}], schema=older))
    store = job_store(cfg)
    store.write("job_runs", "new.0", [{"run_id": "new", "job": "drift", "status": "running",
                                       "updated_at": datetime(2026, 11, 2, 3, 0)}])
    store.write("job_runs", "new.1", [{"run_id": "new", "job": "drift", "status": "succeeded",
                                       "updated_at": datetime(2026, 11, 2, 3, 5)}])
    con = open_lake(cfg)
    assert con.execute("SELECT run_id, status, updated_at FROM job_runs ORDER BY run_id").fetchall() == [
        ("new", "succeeded", datetime(2026, 11, 2, 3, 5)), ("old", "succeeded", None)]


def test_the_scheduled_compaction_outlives_an_outage_while_it_plans(objstore, tmp_path: Path, monkeypatch,
                                                                   capsys) -> None:
    """The store drops between loading a table and planning its files: the planning is retried like any
    outage, and the pass compacts."""
    from pyiceberg.table import DataScan

    from costline.tablelake import TableLake
    from costline.tablelake_cli import compact_loop

    cfg = table_lake_config(objstore, tmp_path)
    lake = TableLake(cfg).init()
    epoch = lake.claim(TOPIC, 0)
    for first in (0, 2):
        lake.commit_batch(TOPIC, 0, first, first + 1, {"requests": _requests([first, first + 1])}, epoch=epoch)
    real = DataScan.plan_files
    failed: list[bool] = []

    def plan_files(self):  # type: ignore[no-untyped-def]
        if not failed:
            failed.append(True)
            raise OSError("AWS Error NETWORK_CONNECTION during HeadObject operation: Could not connect to server")
        return real(self)

    monkeypatch.setattr(DataScan, "plan_files", plan_files)
    compact_loop(Config(lake=cfg), every=600.0, expire_older_than=3600.0, sleep=lambda s: None, passes=1)
    out = capsys.readouterr()
    assert failed and "maintenance pass failed" not in out.err, out
    assert "requests 2026-11-02: 2 files -> 1 (4 rows" in out.out
    assert sorted(lake.table("requests").scan().to_arrow().column("kafka_offset").to_pylist()) == [0, 1, 2, 3]


def test_the_scheduled_compaction_reports_any_failed_pass_and_runs_the_next(monkeypatch, capsys) -> None:
    """No store needed: a pass raising an OSError, a SQLAlchemy error or a LakeError is reported and the next
    pass runs; an interrupt stops the loop; a single pass raises."""
    import sqlalchemy.exc

    import costline.tablelake_cli as cli
    from costline.errors import LakeError

    errors: list[BaseException] = [OSError("connection reset"),
                                   sqlalchemy.exc.ProgrammingError("SELECT", {}, Exception("no such table")),
                                   LakeError("catalog gone")]
    calls: list[int] = []

    def compact_once(config, **kw):  # type: ignore[no-untyped-def]
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return ["nothing to compact"]

    monkeypatch.setattr(cli, "compact_once", compact_once)
    slept: list[float] = []
    cli.compact_loop(Config(), every=60.0, sleep=slept.append, passes=4)
    out = capsys.readouterr()
    assert len(calls) == 4 and slept == [60.0] * 3
    assert out.err.count("maintenance pass failed:") == 3 and "OSError: connection reset" in out.err, out
    assert "ProgrammingError" in out.err and "catalog gone" in out.err and "nothing to compact" in out.out

    def interrupted(config, **kw):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "compact_once", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cli.compact_loop(Config(), every=60.0, sleep=slept.append, passes=3)
    errors.append(OSError("once"))
    monkeypatch.setattr(cli, "compact_once", compact_once)
    with pytest.raises(OSError):
        cli.compact_loop(Config(), every=None, sleep=slept.append)


def test_pipeline_silent_in_table_mode_is_bounded_by_the_last_commit_not_a_fast_client_clock(
        objstore, tmp_path: Path) -> None:
    """A client 2 h ahead sent the last spans, then the pipeline died. Later compactions (and claims) do not
    count as arrivals either: the last span is the last commit that added rows."""
    from costline.alerts.source import AlertSource
    from costline.tablelake import TableLake

    cfg = Config(lake=table_lake_config(objstore, tmp_path))
    lake = TableLake(cfg.lake).init()
    epoch = lake.claim(TOPIC, 0)
    real_now = datetime.now(timezone.utc).replace(tzinfo=None)
    skewed = real_now + timedelta(hours=2)

    def rows(offsets: list[int]) -> pa.Table:
        t = _requests(offsets).to_pylist()
        return pa.Table.from_pylist([{**r, "ts": skewed} for r in t], schema=SCHEMAS["requests"])

    lake.commit_batch(TOPIC, 0, 0, 0, {"requests": rows([0])}, epoch=epoch)
    lake.commit_batch(TOPIC, 0, 1, 1, {"requests": rows([1])}, epoch=epoch)
    last_commit = lake.table("requests").current_snapshot().timestamp_ms
    assert len(lake.compact(tables=["requests"])) == 1
    lake.claim(TOPIC, 0)  # a restarted processor claims, commits nothing
    assert lake.table("requests").current_snapshot().timestamp_ms > last_commit
    expected = datetime.fromtimestamp(last_commit / 1000, tz=timezone.utc).replace(tzinfo=None)
    assert abs(expected - real_now) < timedelta(minutes=5)  # the commits' clock, not the client's
    when = (real_now + timedelta(hours=2, minutes=30)).replace(tzinfo=timezone.utc)
    source = AlertSource(cfg)
    assert source.snapshot(when, rules=["pipeline_silent"]).last_span_at == expected
    with source.frozen():  # a backfill reads the same bounded times
        assert source.snapshot(when, rules=["pipeline_silent"]).last_span_at == expected
