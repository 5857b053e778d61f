"""PartitionBuffer: a message whose rows do not fit the lake's schema is set aside with its reason;
the rows of the messages it was batched with are kept (pure: no broker)."""

from __future__ import annotations

from costline import contract as c
from costline.processors.buffer import PartitionBuffer
from costline.processors.records import MemoPricingTable, flatten_span
from costline.sim.synth import span

T = 1_790_000_000_000_000_000
PRICING = MemoPricingTable()


def _rows(offset: int, sid: int):
    s = span("chat x", trace_id=b"\1" * 16, span_id=bytes([sid]) * 8, start_ns=T, end_ns=T + 1,
             attributes={c.GEN_AI_REQUEST_MODEL: "claude-haiku-4-5", c.GEN_AI_USAGE_INPUT_TOKENS: 10})
    return flatten_span(s, PRICING, 0, offset)


def test_a_row_past_year_9999_rejects_its_message_only():
    buf = PartitionBuffer(0, chunk_rows=4)
    for offset in range(6):
        row = _rows(offset, offset + 1)
        if offset == 2:  # an event time no lake date can hold (year > 9999)
            row = row._replace(ts=2**62)
        buf.rows["calls"].append(row)
        buf.note(offset, 1, 0.0, ("msg", offset))
    tables = buf.tables()
    assert [m for m, _ in buf.rejected] == [("msg", 2)]
    assert "years 1-9999" in buf.rejected[0][1]
    kept = sorted(r for t in tables["calls"].values() for r in t.column("kafka_offset").to_pylist())
    assert kept == [0, 1, 3, 4, 5]
    assert buf.row_counts()["calls"] == 5


def test_a_row_of_the_wrong_type_rejects_its_message_only():
    buf = PartitionBuffer(0, chunk_rows=100)
    good = _rows(0, 1)
    bad = _rows(1, 2)._replace(input_tokens="ten")  # what a flattening bug could hand over
    for offset, row in enumerate((good, bad)):
        buf.rows["calls"].append(row)
        buf.note(offset, 1, 0.0, ("msg", offset))
    tables = buf.tables()
    assert [m for m, _ in buf.rejected] == [("msg", 1)]
    assert [r for t in tables["calls"].values() for r in t.column("kafka_offset").to_pylist()] == [0]


def test_a_running_processor_raises_the_gc_threshold_and_the_last_one_out_restores_it():
    import gc

    from costline.processors import processor as p

    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        with p._gc_for_buffers():
            assert gc.get_threshold() == (p.GC_GEN0_THRESHOLD, 10, 10)
            with p._gc_for_buffers():  # a second processor in the same interpreter
                pass
            assert gc.get_threshold() == (p.GC_GEN0_THRESHOLD, 10, 10)  # the first still runs
        assert gc.get_threshold() == (700, 10, 10)
        gc.set_threshold(10 * p.GC_GEN0_THRESHOLD, 5, 5)
        with p._gc_for_buffers():
            assert gc.get_threshold() == (10 * p.GC_GEN0_THRESHOLD, 5, 5)  # never lowered
        assert gc.get_threshold() == (10 * p.GC_GEN0_THRESHOLD, 5, 5)
    finally:
        gc.set_threshold(*saved)


def test_the_poll_wait_ends_when_a_buffer_falls_due_or_the_idle_time_may_end_and_never_spins(tmp_path):
    from costline.config import Config, LakeConfig, ProcessorConfig
    from costline.processors.processor import Processor

    clock = [100.0]
    proc = Processor(Config(lake=LakeConfig(path=tmp_path / "lake"),
                            processor=ProcessorConfig(flush_interval_s=30.0)), now=lambda: clock[0])
    proc._last_activity = 100.0
    assert proc._poll_wait_ms(None) == 1000  # nothing buffered: the longest wait, 1 s
    assert proc._poll_wait_ms(until_idle=0.4) == 400  # --until-idle may end in 0.4 s
    buf = proc._buffers[0] = PartitionBuffer(0)
    buf.note(offset=5, spans=1, now=100.0)  # falls due at 130.0
    clock[0] = 129.7
    assert proc._poll_wait_ms(None) == 300
    clock[0] = 131.0  # overdue: poll briefly, then flush_due flushes it
    assert proc._poll_wait_ms(None) == 50
    del proc._buffers[0]
    # Idle past --until-idle but not caught up yet (e.g. still joining): ask again each second,
    # not every 50 ms.
    assert proc._poll_wait_ms(until_idle=2.0) == 1000
