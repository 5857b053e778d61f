"""Hostile or buggy spans at the processor: what one message costs stays bounded once it is handled.

Real OTLP protobuf bytes through the processor's own decode + flatten (``decode_message``,
``flatten_into``) and the pricing memo it keeps for its whole life (``MemoPricingTable``).
"""

from __future__ import annotations

import gc
import tracemalloc

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from costline.processors.decode import decode_message, flatten_into
from costline.processors.records import MemoPricingTable


def _call_message(i: int, model: str) -> bytes:
    req = ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add()
    span.name = f"chat {i}"
    span.trace_id, span.span_id = i.to_bytes(16, "big"), i.to_bytes(8, "big")
    span.start_time_unix_nano, span.end_time_unix_nano = 1_700_000_000_000_000_000, 1_700_000_001_000_000_000
    for key, value in (("gen_ai.operation.name", "chat"), ("gen_ai.provider.name", "anthropic"),
                       ("gen_ai.request.model", model)):
        kv = span.attributes.add()
        kv.key, kv.value.string_value = key, value
    for key, value in (("gen_ai.usage.input_tokens", 10), ("gen_ai.usage.output_tokens", 5)):
        kv = span.attributes.add()
        kv.key, kv.value.int_value = key, value
    return req.SerializeToString()


def _handle(pricing: MemoPricingTable, values: list[bytes]) -> list:
    requests, calls, lookups, unpriced = [], [], [], []
    for offset, value in enumerate(values):
        flatten_into(decode_message(value), pricing, 0, offset, requests, calls, lookups, unpriced)
    return calls


def test_pricing_memo_does_not_keep_made_up_huge_model_ids():
    # A sender names a new 200 kB model in each span (each message well under Kafka's 1 MB). The processor's
    # pricing memo lives as long as the processor: it kept every id as a key (up to 10,000 of them, i.e. up
    # to 10,000 Kafka messages' worth of memory, held for good). Once the rows are gone, nothing of them may
    # stay behind.
    pricing = MemoPricingTable()
    values = [_call_message(i, f"m{i}-" + "x" * 200_000) for i in range(1, 41)]
    _handle(pricing, values[:1])  # warm up whatever is allocated once
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        calls = _handle(pricing, values[1:])
        assert len(calls) == 39
        assert calls[0].model.startswith("m2-x") and len(calls[0].model) == 200_003
        assert calls[0].input_tokens == 10 and calls[0].pricing_status == "unknown_model"
        del calls
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 1_000_000, f"{kept} bytes kept after the rows of 39 spans with 200 kB model ids were dropped"


def test_pricing_memo_still_serves_real_model_ids():
    pricing = MemoPricingTable()
    calls = _handle(pricing, [_call_message(i, "claude-haiku-4-5-20251001") for i in range(1, 4)])
    assert [c.pricing_status for c in calls] == ["priced"] * 3
    assert calls[0].cost_usd == calls[2].cost_usd and calls[0].cost_usd > 0
    assert "claude-haiku-4-5-20251001" in pricing._memo


def test_made_up_model_ids_do_not_grow_the_processors_summary_or_log_without_bound(caplog, tmp_path):
    """A sender inventing a new 200 kB model id per call: the processor names at most MAX_UNKNOWN_MODELS of
    them, each cut to MAX_MODEL_NAME_CHARS, then says "and more" once; every call is still counted."""
    import logging

    from costline.config import Config, LakeConfig
    from costline.processors.processor import MAX_MODEL_NAME_CHARS, MAX_UNKNOWN_MODELS, Processor

    proc = Processor(Config(lake=LakeConfig(path=tmp_path / "lake")))
    pricing = MemoPricingTable()
    calls = _handle(pricing, [_call_message(i, f"made-up-{i}-" + "x" * 200_000) for i in range(1, MAX_UNKNOWN_MODELS + 51)])
    with caplog.at_level(logging.WARNING, logger="costline.processors.processor"):
        proc._note_unpriced(calls)
    stats = proc.stats
    assert stats.unknown_model_calls == MAX_UNKNOWN_MODELS + 50
    assert len(stats.unknown_models) == MAX_UNKNOWN_MODELS and stats.unknown_models_more
    assert max(len(m) for m in stats.unknown_models) == MAX_MODEL_NAME_CHARS + 1  # cut, with its "…"
    assert len(stats.describe()) < 200 * (MAX_MODEL_NAME_CHARS + 10)
    assert sum("and more" in m or "are not named" in m for m in caplog.messages) == 1
    assert max(len(m) for m in caplog.messages) < 1000
