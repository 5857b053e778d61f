"""The Iceberg table lake (costline/tablelake.py) on a real SeaweedFS S3 gateway and SQL catalog:
offsets in the snapshot summary, claims that fence a rebalanced-away writer, recovery, the views."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pytest

from costline.config import Config
from costline.lake import SCHEMAS, WriterFenced
from tests.tablelake_helpers import table_lake_config

pytest.importorskip("pyiceberg")
pytestmark = pytest.mark.objstore

TOPIC = "otlp_spans"


def _requests(offsets: list[int], partition: int = 0, tier: str = "haiku") -> pa.Table:
    rows = [{"request_id": f"r{partition}-{o}", "trace_id": f"t{partition}-{o}", "span_id": f"s{partition}-{o}",
             "ts": datetime(2026, 11, 2, 10, o % 60), "tenant": "acme", "tier": tier, "success": True,
             "kafka_partition": partition, "kafka_offset": o} for o in offsets]
    return pa.Table.from_pylist(rows, schema=SCHEMAS["requests"])


def _calls(offsets: list[int], partition: int = 0, cost: float = 0.5) -> pa.Table:
    rows = [{"span_id": f"c{partition}-{o}", "trace_id": f"t{partition}-{o}", "parent_span_id": f"s{partition}-{o}",
             "request_id": f"r{partition}-{o}", "ts": datetime(2026, 11, 2, 10, o % 60), "tier": "haiku",
             "provider": "anthropic", "model": "claude-haiku", "cost_usd": cost, "input_tokens": 10,
             "output_tokens": 5, "kafka_partition": partition, "kafka_offset": o} for o in offsets]
    return pa.Table.from_pylist(rows, schema=SCHEMAS["calls"])


@pytest.fixture
def lake_cfg(objstore, tmp_path: Path):  # type: ignore[no-untyped-def]
    return table_lake_config(objstore, tmp_path)


def _lake(cfg):  # type: ignore[no-untyped-def]
    from costline.tablelake import TableLake

    return TableLake(cfg).init()


def test_commit_puts_rows_and_offsets_in_one_snapshot_and_recovery_resumes_after_it(lake_cfg) -> None:
    from costline.tablelake import CLAIMS_PROPERTY, OFFSETS_PROPERTY

    lake = _lake(lake_cfg)
    assert lake.recover(TOPIC, 3) == (None, [])
    epoch = lake.claim(TOPIC, 3)
    assert epoch == 1
    lake.commit_batch(TOPIC, 3, 100, 104, {"requests": _requests([100, 102, 104], 3), "calls": _calls([101], 3)},
                      epoch=epoch)
    calls = lake.table("calls")
    summary = calls.current_snapshot().summary.additional_properties
    assert json.loads(summary[OFFSETS_PROPERTY]) == {TOPIC: {"3": 104}}
    assert json.loads(summary[CLAIMS_PROPERTY]) == {TOPIC: {"3": 1}}
    assert calls.scan().to_arrow().column("span_id").to_pylist() == ["c3-101"]
    # lookups got no rows but its offsets moved too (a snapshot without files)
    assert lake.committed_offsets(TOPIC, 3) == {"requests": 104, "calls": 104, "lookups": 104}
    # another partition's commit carries partition 3's offsets forward
    lake.commit_batch(TOPIC, 1, 0, 9, {"requests": _requests([5], 1)}, epoch=lake.claim(TOPIC, 1))
    assert lake.recover(TOPIC, 3) == (105, [])
    assert lake.recover(TOPIC, 1) == (10, [])
    assert sorted(lake.table("requests").scan().to_arrow().column("request_id").to_pylist()) == [
        "r1-5", "r3-100", "r3-102", "r3-104"]


def test_a_rebalanced_away_writer_cannot_commit(lake_cfg) -> None:
    old_owner, new_owner = _lake(lake_cfg), _lake(lake_cfg)
    old_epoch = old_owner.claim(TOPIC, 0)
    old_owner.commit_batch(TOPIC, 0, 0, 4, {"requests": _requests([0, 4])}, epoch=old_epoch)
    new_epoch = new_owner.claim(TOPIC, 0)  # the rebalance: the new owner claims, then reads where to resume
    assert new_epoch == old_epoch + 1
    assert new_owner.recover(TOPIC, 0) == (5, [])
    with pytest.raises(WriterFenced):
        old_owner.commit_batch(TOPIC, 0, 5, 9, {"requests": _requests([5, 9], tier="zombie")}, epoch=old_epoch)
    new_owner.commit_batch(TOPIC, 0, 5, 9, {"requests": _requests([5, 9], tier="sonnet")}, epoch=new_epoch)
    got = old_owner.table("requests").scan().to_arrow().to_pylist()
    assert sorted((r["kafka_offset"], r["tier"]) for r in got) == [(0, "haiku"), (4, "haiku"), (5, "sonnet"),
                                                                   (9, "sonnet")]


def test_a_claim_fails_a_commit_based_on_the_snapshot_before_it(lake_cfg) -> None:
    """What the fencing rests on: a claim moves the snapshot, so an append prepared on the older
    snapshot is refused by the catalog (Iceberg's AssertRefSnapshotId), never applied on top."""
    from pyiceberg.exceptions import CommitFailedException

    writer, claimer = _lake(lake_cfg), _lake(lake_cfg)
    writer.claim(TOPIC, 0)
    stale = writer.table("requests")
    tx = stale.transaction()
    tx.append(_requests([1]))
    claimer.claim(TOPIC, 0)
    with pytest.raises(CommitFailedException):
        tx.commit_transaction()
    assert claimer.table("requests").scan().to_arrow().num_rows == 0


def test_a_batch_committed_to_some_tables_only_lands_once_everywhere(lake_cfg) -> None:
    """A crash between two tables' commits: recovery starts before the batch, the replay skips the rows
    the first table already holds."""
    lake = _lake(lake_cfg)
    epoch = lake.claim(TOPIC, 0)
    lake.commit_batch(TOPIC, 0, 0, 3, {"requests": _requests([0]), "calls": _calls([1])}, epoch=epoch)
    # the next batch reaches `requests` only, then the process dies
    lake._commit_table("requests", TOPIC, 0, 4, 7, _requests([4, 6]), epoch)
    assert lake.committed_offsets(TOPIC, 0) == {"requests": 7, "calls": 3, "lookups": 3}
    again = _lake(lake_cfg)
    epoch2 = again.claim(TOPIC, 0)
    assert again.recover(TOPIC, 0) == (4, [])
    done = again.commit_batch(TOPIC, 0, 4, 7, {"requests": _requests([4, 6]), "calls": _calls([5, 7])},
                              epoch=epoch2)
    assert done.rows == {"requests": 0, "calls": 2, "lookups": 0}
    assert sorted(again.table("requests").scan().to_arrow().column("kafka_offset").to_pylist()) == [0, 4, 6]
    assert sorted(again.table("calls").scan().to_arrow().column("kafka_offset").to_pylist()) == [1, 5, 7]


def test_the_views_read_the_tables(lake_cfg) -> None:
    from costline.lake import open_lake

    lake = _lake(lake_cfg)
    epoch = lake.claim(TOPIC, 0)
    # two requests, each one call: $0.50 and $0.25
    lake.commit_batch(TOPIC, 0, 0, 1, {"requests": _requests([0, 1]), "calls": pa.concat_tables([
        _calls([0], cost=0.5), _calls([1], cost=0.25)])}, epoch=epoch)
    con = open_lake(Config(lake=lake_cfg))
    assert con.execute("SELECT tier, requests, cost_usd FROM tier_hourly").fetchall() == [("haiku", 2, 0.75)]
    assert con.execute("SELECT count(*), min(date) FROM requests_raw").fetchone() == (2, datetime(2026, 11, 2).date())
    # `costline sql` locks DuckDB out of files and the network: the tables are read through pyarrow
    from costline.processors.cli import _lock_down

    _lock_down(con, Config(lake=lake_cfg))
    assert con.execute("SELECT sum(cost_usd) FROM requests").fetchone() == (0.75,)


def test_table_mode_settings_are_validated_naming_the_key(tmp_path: Path) -> None:
    from costline.config import load_config
    from costline.errors import ConfigError

    for text, key in [('mode = "iceberg"', "[lake] mode"),
                      ('mode = "table"\nwarehouse = "/data/lake"', "[lake] warehouse"),
                      ('mode = "table"\ns3_endpoint = "127.0.0.1:8333"', "[lake] s3_endpoint"),
                      ('mode = "table"\ncatalog_uri = "catalog.db"', "[lake] catalog_uri")]:
        f = tmp_path / "c.toml"
        f.write_text(f"[lake]\n{text}\n")
        with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
            load_config(f, env={})


def test_a_commit_while_the_object_store_is_unreachable_commits_nothing_and_the_retry_lands_once(lake_cfg, tmp_path) -> None:
    """The store is unreachable after the claim (same catalog, an S3 endpoint nobody listens on): the commit
    fails, the table keeps its rows and offsets, and the batch redone once the store is back lands once."""
    import dataclasses
    import socket

    lake = _lake(lake_cfg)
    epoch = lake.claim(TOPIC, 0)
    lake.commit_batch(TOPIC, 0, 0, 1, {"requests": _requests([0, 1])}, epoch=epoch)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    from costline.tablelake import TableLake

    cut_off = TableLake(dataclasses.replace(lake_cfg, s3_endpoint=dead, outage_retry_s=1.0))
    with pytest.raises(Exception):  # noqa: B017 - pyarrow's OSError or pyiceberg's, whichever layer notices
        cut_off.commit_batch(TOPIC, 0, 2, 5, {"requests": _requests([2, 5])}, epoch=epoch)
    assert lake.committed_offsets(TOPIC, 0) == {"requests": 1, "calls": 1, "lookups": 1}
    assert lake.recover(TOPIC, 0) == (2, [])
    lake.commit_batch(TOPIC, 0, 2, 5, {"requests": _requests([2, 5])}, epoch=epoch)
    assert sorted(lake.table("requests").scan().to_arrow().column("kafka_offset").to_pylist()) == [0, 1, 2, 5]


def test_a_table_an_older_costline_made_gets_the_new_columns(lake_cfg) -> None:
    """A requests table created without ``rejected_attempts`` (costline before 2026-12-03): opening the lake adds the
    column, this version's batches append, and the rows written before read it as NULL."""
    from costline.lake import open_lake
    from costline.tablelake import TableLake

    old_schema = SCHEMAS["requests"].remove(SCHEMAS["requests"].get_field_index("rejected_attempts"))
    first = TableLake(lake_cfg)
    first.catalog.create_namespace_if_not_exists(lake_cfg.namespace)
    first.catalog.create_table(first.identifier("requests"), schema=old_schema)
    first.catalog.load_table(first.identifier("requests")).append(pa.Table.from_pylist([{
        "request_id": "old", "trace_id": "t-old", "span_id": "s-old", "ts": datetime(2026, 11, 2, 9, 0),
        "tenant": "acme", "tier": "haiku", "success": True, "kafka_partition": 0, "kafka_offset": 0}],
        schema=old_schema))
    lake = _lake(lake_cfg)
    assert "rejected_attempts" in {f.name for f in lake.table("requests").schema().fields}
    epoch = lake.claim(TOPIC, 0)
    new = _requests([1]).set_column(SCHEMAS["requests"].get_field_index("rejected_attempts"), "rejected_attempts",
                                    pa.array(["student:validator"]))
    lake.commit_batch(TOPIC, 0, 1, 1, {"requests": new}, epoch=epoch)
    con = open_lake(Config(lake=lake_cfg))
    assert sorted(con.execute("SELECT request_id, rejected_attempts FROM requests_raw").fetchall()) == [
        ("old", None), ("r0-1", "student:validator")]
