"""Erasure and content retention in table mode (``TableLake.forget`` / ``redact``, ``costline lake forget`` and
``lake compact`` with ``[lake] content_retention_days``) on the real SeaweedFS store and a SQLite catalog. Expected
rows and counts are worked out by hand from the rows written."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from click.testing import CliRunner

from costline.config import Config
from costline.lake import SCHEMAS
from costline.lake._erasure import TableTotal
from tests.tablelake_helpers import table_lake_config

pytest.importorskip("pyiceberg")
pytestmark = pytest.mark.objstore

TOPIC = "otlp_spans"
D1, D2, D3 = "2026-11-01", "2026-11-02", "2026-11-03"
NOW = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)


def _row(n: int, tenant: str | None, day: str, **more: Any) -> dict[str, Any]:
    return {"trace_id": f"t{n}", "span_id": f"s{n}", "request_id": f"r{n}", "tenant": tenant,
            "ts": datetime.fromisoformat(f"{day}T10:00:00"), "kafka_partition": 0, "kafka_offset": n,
            "input_messages": f"question {n}", "output_messages": f"answer {n}", **more}


def _arrow(table: str, rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SCHEMAS[table])


def _rows(lake: Any, table: str, *columns: str) -> list[tuple[Any, ...]]:
    arrow = lake.table(table).scan().to_arrow()
    return sorted(zip(*(arrow.column(c).to_pylist() for c in columns)), key=repr)


def _snapshots(lake: Any) -> list[int]:
    return [len(lake.table(t).snapshots()) for t in ("requests", "calls", "lookups")]


def _lake(objstore: Any, tmp_path: Path) -> tuple[Any, Any]:
    """requests: b1 D1 s1 acme, s2 globex, s3 NULL | D2 s4 acme; b2 D2 s5 acme, s6 NULL
    calls: b1 D1 s11 acme, s13 NULL | b2 D3 s12 globex; lookups: b2 D2 s21 acme"""
    from costline.tablelake import TableLake

    cfg = table_lake_config(objstore, tmp_path)
    lake = TableLake(cfg).init()
    epoch = lake.claim(TOPIC, 0)
    lake.commit_batch(TOPIC, 0, 0, 9, {
        "requests": _arrow("requests", [_row(1, "acme", D1, attempts=1), _row(2, "globex", D1, attempts=2),
                                        _row(3, None, D1, attempts=3), _row(4, "acme", D2, attempts=4)]),
        "calls": _arrow("calls", [_row(11, "acme", D1, input_tokens=111), _row(13, None, D1, input_tokens=113)])},
        epoch=epoch)
    lake.commit_batch(TOPIC, 0, 10, 19, {
        "requests": _arrow("requests", [_row(5, "acme", D2, attempts=5), _row(6, None, D2, attempts=6)]),
        "calls": _arrow("calls", [_row(12, "globex", D3, input_tokens=112)]),
        "lookups": _arrow("lookups", [{k: v for k, v in _row(21, "acme", D2).items() if "messages" not in k}])},
        epoch=epoch)
    return cfg, lake


def test_forget_and_redact_rewrite_the_tables_and_carry_the_offsets(objstore, tmp_path: Path) -> None:
    cfg, lake = _lake(objstore, tmp_path)
    snapshots = _snapshots(lake)

    dry = lake.forget(["acme"], dry_run=True)
    # requests: s1 (b1's D1 file), s4 (b1's D2 file), s5 (b2's D2 file); calls s11; lookups s21
    assert dry.tables == (TableTotal("requests", 3, 2, 3), TableTotal("calls", 1, 1, 1),
                          TableTotal("lookups", 1, 1, 1))
    assert _snapshots(lake) == snapshots  # nothing committed

    report = lake.forget(["acme"])
    assert report.tables == dry.tables and report.not_covered == ()
    assert _rows(lake, "requests", "span_id", "tenant", "attempts") == [
        ("s2", "globex", 2), ("s3", None, 3), ("s6", None, 6)]
    assert _rows(lake, "calls", "span_id", "input_tokens") == [("s12", 112), ("s13", 113)]
    assert lake.table("lookups").scan().to_arrow().num_rows == 0
    assert any("older snapshots" in line for line in report.lines())
    # the offsets and the claim were carried forward: recovery resumes where it was, the writer still commits
    assert lake.recover(TOPIC, 0) == (20, [])
    again = _snapshots(lake)
    assert lake.forget(["acme"]).rows == 0 and _snapshots(lake) == again  # nothing left: no snapshot

    # 8 days before 2026-11-10 12:00: the days before 2026-11-02 -> requests s2 s3, calls s13
    red = lake.redact(8, now=lambda: NOW)
    assert red.tables == (TableTotal("requests", 2, 1, 1), TableTotal("calls", 1, 1, 1))
    assert _rows(lake, "requests", "span_id", "tenant", "attempts", "input_messages", "output_messages") == [
        ("s2", "globex", 2, None, None), ("s3", None, 3, None, None), ("s6", None, 6, "question 6", "answer 6")]
    assert _rows(lake, "calls", "span_id", "input_tokens", "output_messages") == [
        ("s12", 112, "answer 12"), ("s13", 113, None)]
    assert lake.recover(TOPIC, 0) == (20, [])
    again = _snapshots(lake)
    assert lake.redact(8, now=lambda: NOW).rows == 0 and _snapshots(lake) == again  # idempotent


def test_the_cli_forgets_in_table_mode_and_compact_applies_the_retention(objstore, tmp_path: Path) -> None:
    from costline.cli import _register_area_commands, cli
    from costline.tablelake_cli import compact_once

    cfg, lake = _lake(objstore, tmp_path)
    env = {"COSTLINE_CONFIG": "", "COSTLINE_LAKE_MODE": "table", "COSTLINE_LAKE_CATALOG_URI": cfg.catalog_uri,
           "COSTLINE_LAKE_WAREHOUSE": cfg.warehouse, "COSTLINE_LAKE_NAMESPACE": cfg.namespace,
           "COSTLINE_LAKE_S3_ENDPOINT": cfg.s3_endpoint, "COSTLINE_LAKE_S3_ACCESS_KEY_ID": cfg.s3_access_key_id,
           "COSTLINE_LAKE_S3_SECRET_ACCESS_KEY": cfg.s3_secret_access_key, "COSTLINE_LAKE_PATH": str(cfg.path),
           "COSTLINE_LAKE_OBJSTORE_DIR": str(cfg.objstore_dir)}
    _register_area_commands()
    out = CliRunner().invoke(cli, ["lake", "forget", "--tenant", "globex"], env=env)
    assert out.exit_code == 0, out.output
    assert "requests: removed 1 rows of 1 day(s), 1 file(s) rewritten" in out.output
    assert "calls: removed 1 rows of 1 day(s), 1 file(s) rewritten" in out.output and "retention.ms" in out.output

    # 1 day before 2026-11-10: every day -> the content of requests s1 s3 s4 s5 s6 and calls s11 s13
    lines = compact_once(Config(lake=dataclasses.replace(cfg, content_retention_days=1)), now=NOW.timestamp)
    assert "requests: redacted 5 rows of 2 day(s), 2 file(s) rewritten" in lines, lines
    assert _rows(lake, "calls", "span_id", "input_messages") == [("s11", None), ("s13", None)]
    assert lake.recover(TOPIC, 0) == (20, [])


def test_forget_removes_the_calls_whose_own_row_names_no_tenant(objstore, tmp_path: Path) -> None:
    """An SDK's call span inside each costline request (no tenant of its own: the calls view takes the request's),
    and, in acme's second request, an SDK span inside costline's own call span (the views keep costline's and leave
    the SDK's out; it holds the prompt too). Spans through the processor's decode / flatten path, committed as the
    processor commits. Before: calls kept every SDK span (their tenant column is NULL)."""
    import json

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from costline.collectors import Recorder, RequestStampingProcessor
    from costline.config import CaptureConfig
    from costline.otlp import encode_sdk_spans_by_trace
    from costline.processors.buffer import PartitionBuffer
    from costline.processors.decode import decode_message, flatten_message
    from costline.processors.records import MemoPricingTable
    from costline.tablelake import TableLake

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(RequestStampingProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    rec = Recorder(provider, capture=CaptureConfig(message_content=True), env={})
    sdk = provider.get_tracer("opentelemetry.instrumentation.anthropic")

    def sdk_call(question: str) -> None:
        with sdk.start_as_current_span("chat claude-haiku-4-5", attributes={
                "gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
                "gen_ai.request.model": "claude-haiku-4-5", "gen_ai.usage.input_tokens": 100,
                "gen_ai.usage.output_tokens": 10,
                "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text",
                                                                                  "content": question}]}])}):
            pass

    for tenant in ("acme", "globex"):
        with rec.request(task_type="qa", tenant=tenant):
            sdk_call(f"{tenant} asks")
    with rec.request(task_type="qa", tenant="acme") as r:
        with r.call("anthropic", "claude-haiku-4-5", tier="budget") as c:
            c.usage(100, 10)
            sdk_call("acme asks again")
    assert trace.get_current_span() is trace.INVALID_SPAN

    cfg = table_lake_config(objstore, tmp_path)
    lake = TableLake(cfg).init()
    pricing = MemoPricingTable(Config().pricing)
    buf = PartitionBuffer(0)
    for i, (_t, value) in enumerate(encode_sdk_spans_by_trace(exporter.get_finished_spans())):
        out = flatten_message(decode_message(value), pricing, 0, i)
        buf.add(i, out.rows, out.spans, now=0.0)
    lake.commit_batch(TOPIC, 0, buf.first_offset, buf.last_offset, buf.tables(), epoch=lake.claim(TOPIC, 0))
    # 3 SDK spans without a tenant, costline's call span with acme's
    assert sorted(_rows(lake, "calls", "tenant", "input_messages"), key=repr)[0][0] == "acme"
    assert [t for t, _q in _rows(lake, "calls", "tenant", "input_messages")].count(None) == 3

    dry = lake.forget(["acme"], dry_run=True)
    # requests: acme's two; calls: acme's first SDK span (its request's tenant), costline's call (its own), the SDK
    # span inside it (left out by the views, in acme's trace)
    assert [(t.table, t.rows) for t in dry.tables] == [("requests", 2), ("calls", 3), ("lookups", 0)]
    report = lake.forget(["acme"])
    assert [(t.table, t.rows) for t in report.tables] == [("requests", 2), ("calls", 3), ("lookups", 0)]
    assert report.not_covered == () and report.shared == 0
    assert _rows(lake, "requests", "tenant") == [("globex",)]
    assert [q for _t, q in _rows(lake, "calls", "tenant", "input_messages")] == [
        '[{"role": "user", "parts": [{"type": "text", "content": "globex asks"}]}]']
