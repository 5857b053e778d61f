"""Finished OTel SDK spans → a lake in tmp_path through the processor's own decode / flatten / commit path.

:func:`lake_from_sdk_spans` encodes spans one message per trace (as ``KafkaSpanExporter`` does),
decodes and flattens each message exactly as the processor does (instrumentation scopes
included), buffers them with :class:`~costline.processors.buffer.PartitionBuffer` and commits
them with :meth:`costline.lake.Lake.commit_batch`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from costline.config import Config, LakeConfig, ModelPrice, PricingConfig
from costline.lake import Lake, open_lake, views_in
from costline.otlp import encode_sdk_spans_by_trace
from costline.processors.buffer import PartitionBuffer
from costline.processors.decode import decode_message, flatten_message
from costline.processors.records import MemoPricingTable

__all__ = ["anthropic_tiers_config", "cost_report_stages", "lake_from_sdk_spans", "lake_from_messages", "note_unpriced", "query_lake"]


def lake_from_messages(messages: Sequence[bytes], config: Config, *, partition: int = 0, first_offset: int = 0) -> int:
    """Commit OTLP protobuf messages (offsets from ``first_offset``) as one batch; returns the rows written."""
    lake = Lake(config.lake.path).init()
    pricing = MemoPricingTable(config.pricing)
    buf = PartitionBuffer(partition)
    rows = 0
    for i, value in enumerate(messages):
        out = flatten_message(decode_message(value), pricing, partition, first_offset + i)
        buf.add(first_offset + i, out.rows, out.spans, now=0.0)
        rows += len(out.rows)
    if not buf.empty:
        assert buf.first_offset is not None and buf.last_offset is not None
        lake.commit_batch("otlp_spans", partition, buf.first_offset, buf.last_offset, buf.tables())
    return rows


def anthropic_tiers_config(lake: Path, budget: tuple[str, float, float], mid: tuple[str, float, float]) -> Config:
    """A config whose lake is ``lake`` and whose only priced models are two Anthropic tiers, each given as
    (model, input $/Mtok, output $/Mtok); no student hosting cost."""
    return Config(lake=LakeConfig(path=lake), pricing=PricingConfig(
        models=tuple(ModelPrice(model, tier, provider="anthropic", input_per_mtok=i, output_per_mtok=o)
                     for tier, (model, i, o) in (("budget", budget), ("mid", mid))),
        student_usd_per_hour=0.0, student_providers=()))


def lake_from_sdk_spans(spans: Sequence[Any], config: Config, *, partition: int = 0) -> int:
    """Write finished SDK spans to ``config.lake.path``; returns the rows written."""
    return lake_from_messages([value for _trace, value in encode_sdk_spans_by_trace(spans)], config,
                              partition=partition)


def query_lake(cfg: Config, sql: str) -> list[tuple]:
    """``sql``'s rows over the lake's views (a connection of its own with the views ``sql`` names, closed after)."""
    con = open_lake(cfg, views=views_in(sql))
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def note_unpriced(spans: Sequence[Any], config: Config) -> Any:
    """Flatten finished SDK spans as the processor does and hand its unpriced calls to the processor's own
    ``_note_unpriced`` (which logs each unpriced model once); returns the :class:`ProcessorStats` it kept."""
    import types

    from costline.processors.decode import flatten_into
    from costline.processors.processor import Processor, ProcessorStats

    requests: list = []
    calls: list = []
    lookups: list = []
    unpriced: list = []
    pricing = MemoPricingTable(config.pricing)
    for offset, (_trace, value) in enumerate(encode_sdk_spans_by_trace(spans)):
        flatten_into(decode_message(value), pricing, 0, offset, requests, calls, lookups, unpriced)
    processor = types.SimpleNamespace(stats=ProcessorStats())
    Processor._note_unpriced(processor, unpriced)  # type: ignore[arg-type]
    return processor.stats


def cost_report_stages(config: Config, requests: Sequence[Any], calls: Sequence[Any], day: Any) -> dict[str, float]:
    """Commit ``RequestRow`` / ``CallRow`` rows to a fresh lake and build the cost report of ``day`` (a naive UTC
    midnight) on it: each stage's total."""
    import datetime as dt

    from costline.jobs.cost_report import build_cost_report
    from costline.jobs.store import open_jobs_lake
    from costline.processors.buffer import rows_to_tables

    Lake(config.lake.path).init().commit_batch("otlp_spans", 0, 0, max(len(requests), len(calls)), {
        "requests": rows_to_tables("requests", list(requests)), "calls": rows_to_tables("calls", list(calls))})
    con = open_jobs_lake(config)
    try:
        report = build_cost_report(con, config, since=day, until=day + dt.timedelta(days=1))
    finally:
        con.close()
    return {s.stage: s.total_cost_usd for s in report.stages}


def budget_calls_of_a_day(day: Any, provider: str, model: str, paid: Sequence[tuple[float, dict[str, Any]]]
                          ) -> tuple[list[Any], list[Any]]:
    """Requests of ``day`` (a naive UTC midnight, at 01:00), each one call of ``model`` on the budget tier with
    1,000 input and 100 output tokens: (USD it paid, more ``CallRow`` fields such as ``inference_geo``) a call ->
    (request rows, call rows)."""
    import datetime as dt

    from costline.processors.records import CallRow, RequestRow

    ts = int(day.replace(hour=1, tzinfo=dt.timezone.utc).timestamp() * 1_000_000)
    requests, calls = [], []
    for i, (usd, more) in enumerate(paid):
        requests.append(RequestRow(f"R{i}", f"t{i}", f"s{i}", ts, "acme", "faq", "x", "budget", "budget", False, 1, 0,
                                   True, None, 5.0, None, None, 0, i))
        calls.append(CallRow(f"c{i}", f"t{i}", f"s{i}", f"R{i}", ts, "chat", provider, model, model, "budget",
                             1000, 100, 0, 0, False, ["stop"], None, usd, "priced", "v", 5.0, None, None, 0, i,
                             **more))
    return requests, calls
