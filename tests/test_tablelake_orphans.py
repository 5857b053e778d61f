"""Table mode's orphan data files (`costline lake remove-orphans`, and each `costline lake compact` pass): the data
files of a commit that never landed (a crash, lost races) and those only expired snapshots named are deleted once
old enough; every file a retained snapshot names stays, and the tables read the same rows. Real SeaweedFS and a
SQLite catalog; the expected orphans are found by listing the object store around the failed commit."""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner

from costline.config import Config
from costline.errors import LakeError
from costline.lake import SCHEMAS
from tests.tablelake_helpers import table_lake_config

pytest.importorskip("pyiceberg")
pytestmark = pytest.mark.objstore

TOPIC = "otlp_spans"
LATER = 2 * 3600.0  # how far the injected clock runs ahead: every file written by the test is then 2 h old


def _requests(prefix: str, offsets: range, day: int = 2) -> pa.Table:
    rows = [{"request_id": f"{prefix}{o}", "trace_id": f"{prefix}t{o}", "span_id": f"{prefix}s{o}",
             "ts": datetime(2026, 11, day, 10, o % 60), "tenant": "acme", "tier": "haiku", "success": True,
             "kafka_partition": 0, "kafka_offset": o} for o in offsets]
    return pa.Table.from_pylist(rows, schema=SCHEMAS["requests"])


@pytest.fixture
def lake_cfg(objstore, tmp_path: Path):  # type: ignore[no-untyped-def]
    return dataclasses.replace(table_lake_config(objstore, tmp_path), commit_retries=2)


def _lake(cfg, **kw):  # type: ignore[no-untyped-def]
    from costline.tablelake import TableLake

    return TableLake(cfg, sleep=lambda s: None, **kw).init()


def _stored(cfg, table: str) -> set[str]:  # type: ignore[no-untyped-def]
    """Every object under the table's data folder (``.../<table>/data/``), listed straight from the store."""
    from pyarrow.fs import FileSelector, FileType

    from costline.localobjstore import s3_filesystem

    fs = s3_filesystem(cfg.s3_endpoint, cfg.s3_access_key_id, cfg.s3_secret_access_key, cfg.s3_region)
    found = fs.get_file_info(FileSelector(cfg.warehouse.split("://", 1)[1], recursive=True, allow_not_found=True))
    return {f"s3://{i.path}" for i in found if i.type == FileType.File and f"/{table}/data/" in i.path}


def _rows(lake) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(lake.table("requests").scan().to_arrow().column("request_id").to_pylist())


def _failed_commit(lake) -> None:  # type: ignore[no-untyped-def]
    """A batch whose commit loses every race: its data files are written, no snapshot names them."""
    from pyiceberg.exceptions import CommitFailedException

    epoch = lake.claim(TOPIC, 0)
    real = lake.catalog.commit_table

    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise CommitFailedException("another writer won")

    lake.catalog.commit_table = refuse
    try:
        with pytest.raises(LakeError, match="could not commit batch"):
            lake.commit_batch(TOPIC, 0, 10, 14, {"requests": _requests("X", range(10, 15))}, epoch=epoch)
    finally:
        lake.catalog.commit_table = real


def _committed_and_orphaned(cfg):  # type: ignore[no-untyped-def]
    lake = _lake(cfg)
    lake.commit_batch(TOPIC, 0, 0, 9, {"requests": _requests("A", range(10))}, epoch=lake.claim(TOPIC, 0))
    before = _stored(cfg, "requests")
    _failed_commit(lake)
    orphans = _stored(cfg, "requests") - before
    assert len(orphans) == 1 and len(before) == 1  # one day: one file each
    return lake, before, orphans


def test_the_files_of_a_commit_that_never_landed_are_removed_once_old_and_nothing_else(lake_cfg) -> None:
    lake, kept, orphans = _committed_and_orphaned(lake_cfg)
    later = lambda: time.time() + LATER  # noqa: E731
    # young: a commit may still name them
    young = lake.remove_orphans(older_than_s=3600, now=time.time, tables=["requests"])
    assert young[0].files == () and young[0].kept_young == 1 and _stored(lake_cfg, "requests") == kept | orphans
    # a dry run lists them and deletes nothing
    lines: list[str] = []
    dry = lake.remove_orphans(older_than_s=3600, dry_run=True, now=later, tables=["requests"], progress=lines.append)
    assert {path for path, _, _ in dry[0].files} == orphans and not dry[0].removed
    assert [line.split()[:3] for line in lines] == [["would", "remove", next(iter(orphans))]]
    assert _stored(lake_cfg, "requests") == kept | orphans
    # removed, and only them: the committed rows read the same
    done = lake.remove_orphans(older_than_s=3600, now=later)
    assert {path for o in done for path, _, _ in o.files} == orphans
    assert _stored(lake_cfg, "requests") == kept
    assert _rows(lake) == [f"A{i}" for i in range(10)]
    # the batch commits after all (written again): resumes at 10 as before
    lake.commit_batch(TOPIC, 0, 10, 14, {"requests": _requests("X", range(10, 15))}, epoch=lake.claim(TOPIC, 0))
    assert _rows(lake) == sorted([f"A{i}" for i in range(10)] + [f"X{i}" for i in range(10, 15)])


def test_files_only_expired_snapshots_named_are_removed_and_the_retained_ones_kept(lake_cfg) -> None:
    lake = _lake(lake_cfg)
    epoch = lake.claim(TOPIC, 0)
    lake.commit_batch(TOPIC, 0, 0, 4, {"requests": _requests("A", range(5))}, epoch=epoch)
    lake.commit_batch(TOPIC, 0, 5, 9, {"requests": _requests("B", range(5, 10))}, epoch=epoch)
    small = _stored(lake_cfg, "requests")
    assert len(small) == 2 and [c.files for c in lake.compact(tables=["requests"])] == [2]
    merged = _stored(lake_cfg, "requests") - small
    later = lambda: time.time() + LATER  # noqa: E731
    # the snapshots before the compaction still name the small files: kept
    assert lake.remove_orphans(older_than_s=3600, now=later, tables=["requests"])[0].files == ()
    assert lake.expire_snapshots(older_than_s=0, keep_last=1, tables=["requests"])["requests"] > 0
    gone = lake.remove_orphans(older_than_s=3600, now=later, tables=["requests"])
    assert {path for path, _, _ in gone[0].files} == small
    assert _stored(lake_cfg, "requests") == merged
    assert _rows(lake) == sorted([f"A{i}" for i in range(5)] + [f"B{i}" for i in range(5, 10)])


def test_an_age_under_the_longest_commit_is_refused(lake_cfg) -> None:
    from costline.tablelake import MIN_ORPHAN_AGE_S

    lake, kept, orphans = _committed_and_orphaned(lake_cfg)
    with pytest.raises(LakeError, match="commit still in flight"):
        lake.remove_orphans(older_than_s=MIN_ORPHAN_AGE_S - 1, now=lambda: time.time() + LATER)
    assert _stored(lake_cfg, "requests") == kept | orphans


def test_each_compact_pass_removes_the_orphans(lake_cfg) -> None:
    from costline.tablelake_cli import compact_once

    lake, kept, orphans = _committed_and_orphaned(lake_cfg)
    lines = compact_once(Config(lake=lake_cfg), expire_older_than=3600.0, now=lambda: time.time() + LATER)
    assert "requests: removed 1 orphan file(s)" in "\n".join(lines), lines
    assert lines[-1] == "removed 1 orphan file(s)"
    assert _stored(lake_cfg, "requests") == kept


def test_a_commit_attempt_writes_its_files_again_when_they_are_older_than_orphan_removal_spares(
        lake_cfg, monkeypatch) -> None:
    """A writer stalled between writing a batch's files and a commit attempt (lost races, a pause): files written
    more than FILES_FRESH_S before the attempt are written again, so orphan removal can never take a file a
    commit is about to name."""
    import pyiceberg.io.pyarrow as pyarrow_io
    from pyiceberg.exceptions import CommitFailedException

    from costline.tablelake import FILES_FRESH_S

    clock = [1000.0]
    lake = _lake(dataclasses.replace(lake_cfg, commit_retries=4), now=lambda: clock[0])
    epoch = lake.claim(TOPIC, 0)
    writes: list[str] = []
    real_write = pyarrow_io._dataframe_to_data_files

    def write(**kwargs):  # type: ignore[no-untyped-def]
        files = list(real_write(**kwargs))
        writes.extend(f.file_path for f in files)
        return iter(files)

    monkeypatch.setattr(pyarrow_io, "_dataframe_to_data_files", write)
    real_commit = lake.catalog.commit_table
    refused: list[bool] = []

    def stall_then_lose(table, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not refused and table.name()[-1] == "requests":  # the first attempt loses the race, and the writer stalls past FILES_FRESH_S
            refused.append(True)
            clock[0] += FILES_FRESH_S + 1
            raise CommitFailedException("another writer won")
        return real_commit(table, *args, **kwargs)

    lake.catalog.commit_table = stall_then_lose
    lake.commit_batch(TOPIC, 0, 0, 4, {"requests": _requests("A", range(5))}, epoch=epoch)
    lake.catalog.commit_table = real_commit
    assert len(writes) == 2 and writes[0] != writes[1]  # written again before the second attempt
    live = {t.file.file_path for t in lake.table("requests").scan().plan_files()}
    assert live == {writes[1]}
    assert _rows(lake) == [f"A{i}" for i in range(5)]


@pytest.mark.parametrize("text, seconds", [("90", 90.0), ("90s", 90.0), ("30m", 1800.0), ("1h", 3600.0),
                                           ("1.5h", 5400.0), ("2d", 172800.0), (" 6H ", 21600.0)])
def test_durations(text: str, seconds: float) -> None:
    from costline.tablelake_cli import parse_duration

    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "1w", "ten minutes", "-1h", "nan", "1e12d"])
def test_what_is_no_duration(text: str) -> None:
    from costline.tablelake_cli import parse_duration

    with pytest.raises(ValueError):
        parse_duration(text)


def _invoke(cfg, *args: str):  # type: ignore[no-untyped-def]
    from costline.cli import _Ctx
    from costline.tablelake_cli import lake_remove_orphans

    ctx = _Ctx(None)
    ctx._config = Config(lake=cfg)
    return CliRunner().invoke(lake_remove_orphans, list(args), obj=ctx)


def test_the_command_lists_what_it_would_remove_and_refuses_too_young_an_age(lake_cfg) -> None:
    lake, kept, orphans = _committed_and_orphaned(lake_cfg)
    result = _invoke(lake_cfg, "--dry-run")
    assert result.exit_code == 0, result.output
    # just written: younger than the default hour, so none would go yet
    assert "requests: would remove 0 orphan file(s)" in result.output and "1 younger kept" in result.output
    assert result.output.strip().splitlines()[-1] == "no orphan files"
    refused = _invoke(lake_cfg, "--older-than", "5m")
    assert refused.exit_code == 2 and "commit still in flight" in refused.output, refused.output
    bad = _invoke(lake_cfg, "--older-than", "soon")
    assert bad.exit_code == 2 and "is no duration" in bad.output, bad.output
    assert _stored(lake_cfg, "requests") == kept | orphans
