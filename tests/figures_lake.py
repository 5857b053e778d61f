"""Finished OTel SDK spans → a lake in tmp_path through the processor's own decode / flatten / commit path.

:func:`lake_from_sdk_spans` encodes spans one message per trace (as ``KafkaSpanExporter`` does),
decodes and flattens each message exactly as the processor does (instrumentation scopes
included), buffers them with :class:`~costline.processors.buffer.PartitionBuffer` and commits
them with :meth:`costline.lake.Lake.commit_batch`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from costline.config import Config
from costline.lake import Lake, open_lake
from costline.otlp import encode_sdk_spans_by_trace
from costline.processors.buffer import PartitionBuffer
from costline.processors.decode import decode_message, flatten_message
from costline.processors.records import MemoPricingTable

__all__ = ["lake_from_sdk_spans", "lake_from_messages", "query_lake"]


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


def lake_from_sdk_spans(spans: Sequence[Any], config: Config, *, partition: int = 0) -> int:
    """Write finished SDK spans to ``config.lake.path``; returns the rows written."""
    return lake_from_messages([value for _trace, value in encode_sdk_spans_by_trace(spans)], config,
                              partition=partition)


def query_lake(cfg: Config, sql: str) -> list[tuple]:
    """``sql``'s rows over the lake's views (a connection of its own, closed after)."""
    con = open_lake(cfg)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()
