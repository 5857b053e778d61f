"""Data files and manifests carry their Kafka topic: changing ``[kafka] topic`` on an existing lake
keeps what the lake committed; lakes written before topics were in the names still recover."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from costline.config import Config
from costline.lake import Lake, open_lake, parse_data_file_name
from costline.processors.buffer import rows_to_tables
from costline.processors.processor import Processor
from costline.processors.records import MemoPricingTable
from costline.sim.synth import synthetic_traffic


def span_keys(traces) -> set[tuple[str, str]]:
    return {(s.trace_id.hex(), s.span_id.hex()) for t in traces for rs in t.request.resource_spans
            for ss in rs.scope_spans for s in ss.spans}


def lake_keys(config: Config) -> set[tuple[str, str]]:
    con = open_lake(config)
    return {k for table in ("requests_raw", "calls_raw", "lookups_raw")
            for k in con.execute(f"SELECT trace_id, span_id FROM {table}").fetchall()}


def produce(config: Config, traces) -> None:
    from kafka import KafkaProducer

    prod = KafkaProducer(bootstrap_servers=config.kafka.bootstrap, acks="all", linger_ms=5)
    for t in traces:
        prod.send(config.kafka.topic, key=t.trace_id.encode(), value=t.request.SerializeToString())
    prod.close()


@pytest.mark.kafka
def test_changing_the_topic_keeps_the_lakes_committed_files(kafka_config: Config):
    from costline.localkafka import ensure_topics

    first = list(synthetic_traffic(150, seed=41))
    produce(kafka_config, first)
    assert Processor(kafka_config).run(until_idle=1.5).spans == len(span_keys(first))
    assert lake_keys(kafka_config) == span_keys(first)

    suffix = uuid.uuid4().hex[:8]
    moved = kafka_config.replace(kafka={"topic": f"spans.v2-{suffix}", "dlq_topic": f"spans.v2-{suffix}.dlq"})
    ensure_topics(moved.kafka)
    second = list(synthetic_traffic(150, seed=42))
    produce(moved, second)
    Processor(moved).run(until_idle=1.5)

    assert lake_keys(moved) == span_keys(first) | span_keys(second)  # nothing of the old topic deleted
    names = [p.name for p in Path(moved.lake.path).glob("*/date=*/p*.parquet")]
    assert any(n.endswith(f".{kafka_config.kafka.topic}.parquet") for n in names)
    assert any(n.endswith(f".spans.v2-{suffix}.parquet") for n in names)
    manifest = json.loads(next((Path(moved.lake.path) / "_offsets" / moved.kafka.topic).rglob("[0-9]*.json"))
                          .read_text())
    assert manifest["topic"] == moved.kafka.topic and all(moved.kafka.topic in f for f in manifest["files"])


def _legacy_lake(path: Path) -> Lake:
    """A lake as written before topics were in the names: partition 0 committed up to offset 9,
    then a crashed batch 10..19 (files renamed, no manifest)."""
    lake = Lake(path).init()
    traces = list(synthetic_traffic(20, seed=43))
    pricing = MemoPricingTable()
    from costline.processors.decode import flatten_message

    for first, last, chunk in ((0, 9, traces[:10]), (10, 19, traces[10:])):
        rows = [r for t in chunk for r in flatten_message(t.request, pricing, 0, first).rows]
        by_table: dict = {}
        for r in rows:
            by_table.setdefault(type(r).__name__.removesuffix("Row").lower() + "s", []).append(r)
        tables = {t: rows_to_tables(t, rs) for t, rs in by_table.items()}
        m = lake.commit_batch("otlp_spans", 0, first, last, tables)
        for f in m.files:  # back to the old names, the manifest too
            (path / f).rename(path / f.replace(".otlp_spans.parquet", ".parquet"))
        mfile = lake.offsets_dir("otlp_spans", 0) / f"{last:012d}.json"
        doc = json.loads(mfile.read_text())
        del doc["format"]
        doc["files"] = [f.replace(".otlp_spans.parquet", ".parquet") for f in doc["files"]]
        mfile.write_text(json.dumps(doc))
    (lake.offsets_dir("otlp_spans", 0) / "000000000019.json").unlink()  # the crash
    return lake


def test_a_lake_from_before_topic_names_recovers_as_before(tmp_path: Path):
    lake = _legacy_lake(tmp_path / "lake")
    legacy = sorted(p.name for t in ("requests", "calls", "lookups") for p in lake.data_files(t, 0))
    assert legacy and all(parse_data_file_name(n) and n.count(".") == 1 for n in legacy)
    # another topic's processor leaves the topic-less files alone ...
    assert lake.recover("otlp_spans_new", 0) == (None, [])
    # ... their own topic's recovery removes the crashed batch and nothing committed
    next_offset, removed = lake.recover("otlp_spans", 0)
    assert next_offset == 10
    assert removed and all(parse_data_file_name(p.name)[1] == 10 for p in removed)
    kept = [p for t in ("requests", "calls", "lookups") for p in lake.data_files(t, 0)]
    assert kept and all(parse_data_file_name(p.name)[1] == 0 for p in kept)
    # once the topic has committed with new names, topic-less files are never touched again
    lake.commit_batch("otlp_spans", 0, 10, 12, {})
    assert lake.recover("otlp_spans", 0) == (13, [])
    assert sorted(lake.data_files("calls", 0)) == sorted(p for p in kept if p.parent.parent.name == "calls")
