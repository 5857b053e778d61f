"""The span-time window's reference is bounded from below too, one flush writes at most 64 days per table, and a
batch's manifest records its Kafka record time.

A record stamped by an app host's clock (the in-app exporter lets kafka-python stamp it) that lags the wall clock by
more than ``span_time_max_age_days`` is no reference: the wall clock is. Records whose timestamps walk over many
days, each inside the window, cannot make a file per table and day either. Expected times, days and flags are
worked out by hand from the constants below."""

from __future__ import annotations

import json
import os
from pathlib import Path

from costline import contract as c
from costline.config import Config, LakeConfig, ProcessorConfig
from costline.lake import Lake
from costline.sim.synth import export_request, span

from processor_rig import claimed_processor, flushed_rows

#: The wall clock: 1_780_000_000 s after the epoch = 2026-05-28T20:26:40Z.
W_S = 1_780_000_000
W_MS = W_S * 1000
MIN_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000


def _processor(tmp_path: Path, **processor: float):
    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"), processor=ProcessorConfig(**processor))
    return claimed_processor(cfg, wall_clock=lambda: W_S)


def _request(n: int, end_ms: int):
    end = end_ms * 1_000_000
    return span(c.SPAN_REQUEST, trace_id=n.to_bytes(16, "big"), span_id=n.to_bytes(8, "big"),
                start_ns=end - 1_000_000, end_ns=end, attributes={c.COSTLINE_REQUEST_ID: f"r{n}"})


# (case, record timestamp, processor settings, expected: {request: (ts in ms or None, data_quality)}).
# Each message holds r1, an hour before its record, and r2, an hour before the wall clock. The window: 400 days
# back and a day ahead of the reference, which is the record's timestamp only when that lies within the same
# window around the wall clock.
CASES = [
    ("record 2 years behind the wall clock: the wall clock is the reference",
     W_MS - 730 * DAY_MS, {}, {"r1": (None, "ts:out_of_window"), "r2": (W_MS - HOUR_MS, None)}),
    ("record 401 days behind: the wall clock is the reference",
     W_MS - 401 * DAY_MS, {}, {"r1": (None, "ts:out_of_window"), "r2": (W_MS - HOUR_MS, None)}),
    ("record 399 days behind (a replay of an old topic): the record is the reference",
     W_MS - 399 * DAY_MS, {}, {"r1": (W_MS - 399 * DAY_MS - HOUR_MS, None), "r2": (None, "ts:out_of_window")}),
    ("record 2 years behind, span_time_max_age_days = 0: no bound back, the record is the reference",
     W_MS - 730 * DAY_MS, {"span_time_max_age_days": 0},
     {"r1": (W_MS - 730 * DAY_MS - HOUR_MS, None), "r2": (None, "ts:out_of_window")}),
    ("record 2 years behind, span_time_max_age_days = 1000: the record is the reference",
     W_MS - 730 * DAY_MS, {"span_time_max_age_days": 1000},
     {"r1": (W_MS - 730 * DAY_MS - HOUR_MS, None), "r2": (None, "ts:out_of_window")}),
]


def test_a_record_timestamp_far_behind_the_wall_clock_is_no_reference(tmp_path: Path) -> None:
    got, want = {}, {}
    for n, (case, record_ms, settings, expected) in enumerate(CASES):
        p = _processor(tmp_path / str(n), **settings)
        msg = export_request([_request(1, record_ms - HOUR_MS), _request(2, W_MS - HOUR_MS)]).SerializeToString()
        p.handle(0, 0, None, msg, [], 0.0, record_ms)
        rows = flushed_rows(p, "SELECT request_id, epoch_ms(ts), data_quality FROM requests_raw")
        got[case], want[case] = {rid: (ts, dq) for rid, ts, dq in rows}, expected
    assert got == want


def _day_folders(p, table: str) -> list[str]:
    return sorted(d for d in os.listdir(p.lake.table_dir(table)) if d != "date=1970-01-01")


def test_one_flush_writes_at_most_64_days_per_table(tmp_path: Path) -> None:
    """100 messages whose record timestamps (a producer's clock) walk back a day each, each with a request and a
    lookup a minute before its record: every span is inside its own record's window. The first 64 days (offsets
    0..63) are written; the 36 others' rows are kept with ts NULL (date=1970-01-01). Before: 100 day folders."""
    p = _processor(tmp_path)
    for i in range(100):
        rec = W_MS - i * DAY_MS
        end = (rec - MIN_MS) * 1_000_000
        tid = (i + 1).to_bytes(16, "big")
        spans = [span(c.SPAN_REQUEST, trace_id=tid, span_id=(2 * i + 1).to_bytes(8, "big"), start_ns=end - 1,
                      end_ns=end, attributes={c.COSTLINE_REQUEST_ID: f"r{i}"}),
                 span(c.SPAN_CACHE_LOOKUP, trace_id=tid, span_id=(2 * i + 2).to_bytes(8, "big"), start_ns=end - 1,
                      end_ns=end)]
        p.handle(0, i, None, export_request(spans).SerializeToString(), [], 0.0, rec)
    rows = flushed_rows(p, "SELECT request_id, epoch_ms(ts), data_quality FROM requests_raw")
    expected = {f"r{i}": (W_MS - i * DAY_MS - MIN_MS, None) if i < 64 else (None, "ts:out_of_window")
                for i in range(100)}
    assert {rid: (ts, dq) for rid, ts, dq in rows} == expected
    # W - 1 min is 2026-05-28 20:25:40; 63 days before it is 2026-03-26
    for table in ("requests", "lookups"):
        days = _day_folders(p, table)
        assert (len(days), days[0], days[-1]) == (64, "date=2026-03-26", "date=2026-05-28"), table
    # the cap is per flush: the next batch may write a day the first one could not
    p.handle(0, 100, None, export_request([_request(500, W_MS - 80 * DAY_MS)]).SerializeToString(), [], 0.0,
             W_MS - 80 * DAY_MS + MIN_MS)
    p.flush_partition(0)
    assert "date=2026-03-09" in _day_folders(p, "requests")  # 80 days before 2026-05-28


def _manifests(lake_path: Path) -> list[dict]:
    folder = lake_path / "_offsets" / "otlp_spans" / "p000"
    return [json.loads(m.read_text(encoding="utf-8")) for m in sorted(folder.glob("[0-9]*.json"))]


def test_the_manifest_records_the_batch_record_time(tmp_path: Path) -> None:
    """The median (low) of the batch's trusted record timestamps, each capped at the wall clock: records at
    W-10 min, W-5 min, W-1 min, W+2 h (ahead, capped: W) and W-2 years (no reference: left out) -> sorted
    W-10, W-5, W-1, W -> the 2nd = W - 5 min. A batch of one record of a fast clock moves it to the wall clock at
    most; the partition's record time is the newest its manifests recorded."""
    p = _processor(tmp_path)
    for offset, rec in enumerate((W_MS - 10 * MIN_MS, W_MS - 5 * MIN_MS, W_MS - MIN_MS, W_MS + 2 * HOUR_MS,
                                  W_MS - 730 * DAY_MS)):
        p.handle(0, offset, None, export_request([_request(offset + 1, W_MS - 20 * MIN_MS)]).SerializeToString(),
                 [], 0.0, rec)
    p.flush_partition(0)
    first = _manifests(tmp_path / "lake")
    assert [m.get("record_time_ms") for m in first] == [W_MS - 5 * MIN_MS]
    p.handle(0, 5, None, export_request([_request(9, W_MS - 20 * MIN_MS)]).SerializeToString(), [], 0.0,
             W_MS - 30 * MIN_MS)
    p.flush_partition(0)
    lake = Lake(tmp_path / "lake")
    assert [m.get("record_time_ms") for m in _manifests(tmp_path / "lake")] == [W_MS - 5 * MIN_MS,
                                                                                W_MS - 30 * MIN_MS]
    assert lake.record_times("otlp_spans") == {0: W_MS - 5 * MIN_MS}
    assert lake.last_manifest("otlp_spans", 0).last_offset == 5


def test_manifests_without_a_record_time_stay_readable(tmp_path: Path) -> None:
    """A batch handed in with no record (and a manifest of an older costline) records none: read as unknown."""
    p = _processor(tmp_path)
    p.handle(0, 0, None, export_request([_request(1, W_MS - MIN_MS)]).SerializeToString(), [], 0.0)
    p.flush_partition(0)
    assert ["record_time_ms" in m for m in _manifests(tmp_path / "lake")] == [False]
    lake = Lake(tmp_path / "lake")
    assert lake.record_times("otlp_spans") == {0: None}
    assert lake.last_manifest("otlp_spans", 0).last_offset == 0
    assert lake.record_times("another_topic") == {}
