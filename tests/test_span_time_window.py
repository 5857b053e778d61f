"""The processor's span-time window: a span whose time lies too far from its Kafka record's timestamp keeps its
row with ``ts`` NULL and ``ts:out_of_window`` (one message of spans spread over years once wrote a Parquet file per
table and day). Expected times, days and flags are worked out by hand from the constants below."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import TopicPartition

from costline import contract as c
from costline.config import Config, LakeConfig, ProcessorConfig, load_config
from costline.errors import ConfigError
from costline.lake import open_lake
from costline.processors.processor import Processor
from costline.sim.synth import export_request, span

from processor_rig import flushed_rows

#: The Kafka record's timestamp: 1_780_000_000 s after the epoch = 2026-05-28T20:26:40Z.
R_MS = 1_780_000_000_000
R_NS = R_MS * 1_000_000
HOUR_NS = 3_600 * 10**9
DAY_NS = 24 * HOUR_NS
#: 2000-01-02T00:00:00Z (946_684_800 s is 2000-01-01T00:00:00Z).
Y2K_DAY2_NS = (946_684_800 + 86_400) * 10**9


class _DLQ:
    def send(self, *a, **kw):
        raise AssertionError("nothing here is dead-lettered")

    def close(self, timeout=None):
        pass


def _processor(tmp_path: Path, wall_s: float, **processor: float) -> Processor:
    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"), processor=ProcessorConfig(**processor))
    p = Processor(cfg, wall_clock=lambda: wall_s, producer_factory=lambda **kw: _DLQ())
    p.lake.init()
    p._epochs[0] = p.lake.claim(cfg.kafka.topic, 0)
    return p


def _request(n: int, end_ns: int, start_ns: int | None = None):
    return span(c.SPAN_REQUEST, trace_id=n.to_bytes(16, "big"), span_id=n.to_bytes(8, "big"),
                start_ns=end_ns - 1_000_000 if start_ns is None else start_ns, end_ns=end_ns,
                attributes={c.COSTLINE_REQUEST_ID: f"r{n}"})


def _requests(p: Processor) -> dict[str, tuple[int | None, str | None]]:
    """``{request_id: (ts in µs since the epoch or None, data_quality)}`` of the lake."""
    rows = flushed_rows(p, "SELECT request_id, epoch_us(ts), data_quality FROM requests_raw")
    return {rid: (ts, dq) for rid, ts, dq in rows}


# (request id, span end time, expected ts in µs or None, expected data_quality); window: 400 days back, 1 day ahead
CASES = [
    ("an hour before", R_NS - HOUR_NS, R_NS // 1000 - 3_600_000_000, None),
    ("399 days before", R_NS - 399 * DAY_NS, R_NS // 1000 - 399 * 86_400_000_000, None),
    ("401 days before", R_NS - 401 * DAY_NS, None, "ts:out_of_window"),
    ("23 hours after", R_NS + 23 * HOUR_NS, R_NS // 1000 + 23 * 3_600_000_000, None),
    ("25 hours after", R_NS + 25 * HOUR_NS, None, "ts:out_of_window"),
    ("2000-01-02", Y2K_DAY2_NS, None, "ts:out_of_window"),
]


def test_window_is_around_the_record_timestamp(tmp_path: Path) -> None:
    # the wall clock is 30 days later: the record's own timestamp is the reference (a replay of last month's
    # topic; a record more than span_time_max_age_days behind the wall clock is none: test_span_window_behind.py)
    p = _processor(tmp_path, wall_s=R_MS / 1000 + 30 * 86_400)
    spans = [_request(i + 1, end) for i, (_, end, _, _) in enumerate(CASES)]
    p.handle(0, 0, None, export_request(spans).SerializeToString(), [], 0.0, R_MS)
    got = _requests(p)
    assert got == {f"r{i + 1}": (ts, dq) for i, (_, _, ts, dq) in enumerate(CASES)}


def test_a_flag_already_there_is_kept(tmp_path: Path) -> None:
    # start 2000-01-02, end 31 days later: the duration (> 7 days) is dropped first, then the time
    p = _processor(tmp_path, wall_s=R_MS / 1000)
    p.handle(0, 0, None, export_request([_request(1, Y2K_DAY2_NS + 31 * DAY_NS, Y2K_DAY2_NS)]).SerializeToString(),
             [], 0.0, R_MS)
    assert _requests(p) == {"r1": (None, "duration_ms:out_of_range,ts:out_of_window")}


def test_a_record_without_a_timestamp_is_windowed_around_the_wall_clock(tmp_path: Path) -> None:
    # wall clock 500 days after R: a span an hour before R is 500 days old (Kafka's "no timestamp" is -1)
    p = _processor(tmp_path, wall_s=R_MS / 1000 + 500 * 86_400)
    msg = export_request([_request(1, R_NS - HOUR_NS), _request(2, R_NS + 499 * DAY_NS)]).SerializeToString()
    p.handle(0, 0, None, msg, [], 0.0, -1)
    assert _requests(p) == {"r1": (None, "ts:out_of_window"),
                            "r2": (R_NS // 1000 + 499 * 86_400_000_000, None)}


def test_a_message_handed_in_with_no_record_is_not_windowed(tmp_path: Path) -> None:
    # no record at all (a caller in this process, as tests with fixed dates are): times kept whatever the clock
    p = _processor(tmp_path, wall_s=R_MS / 1000 + 500 * 86_400)
    p.handle(0, 0, None, export_request([_request(1, R_NS - HOUR_NS)]).SerializeToString(), [], 0.0)
    assert _requests(p) == {"r1": (R_NS // 1000 - 3_600_000_000, None)}


def test_a_record_timestamp_ahead_of_the_wall_clock_is_no_reference(tmp_path: Path) -> None:
    # record stamped 10 days after the wall clock (a producer's clock gone wrong): the window is around the wall
    p = _processor(tmp_path, wall_s=R_MS / 1000)
    msg = export_request([_request(1, R_NS + 10 * DAY_NS), _request(2, R_NS - HOUR_NS)]).SerializeToString()
    p.handle(0, 0, None, msg, [], 0.0, R_MS + 10 * 86_400_000)
    assert _requests(p) == {"r1": (None, "ts:out_of_window"), "r2": (R_NS // 1000 - 3_600_000_000, None)}


@pytest.mark.parametrize("processor, expected", [
    ({"span_time_max_age_days": 0}, {"r1": (Y2K_DAY2_NS // 1000, None), "r2": (None, "ts:out_of_window")}),
    ({"span_time_max_ahead_s": 0}, {"r1": (None, "ts:out_of_window"), "r2": (R_NS // 1000 + 30 * 86_400_000_000,
                                                                            None)}),
    ({"span_time_max_age_days": 0, "span_time_max_ahead_s": 0},
     {"r1": (Y2K_DAY2_NS // 1000, None), "r2": (R_NS // 1000 + 30 * 86_400_000_000, None)}),
    # 10,000 days: 27.4 years (2000-01-02 is 26.4 years before R); 3,000,000 s: 34.7 days
    ({"span_time_max_age_days": 10_000, "span_time_max_ahead_s": 3_000_000},
     {"r1": (Y2K_DAY2_NS // 1000, None), "r2": (R_NS // 1000 + 30 * 86_400_000_000, None)}),
])
def test_zero_turns_a_bound_off(tmp_path: Path, processor: dict, expected: dict) -> None:
    p = _processor(tmp_path, wall_s=R_MS / 1000, **processor)
    msg = export_request([_request(1, Y2K_DAY2_NS), _request(2, R_NS + 30 * DAY_NS)]).SerializeToString()
    p.handle(0, 0, None, msg, [], 0.0, R_MS)
    assert _requests(p) == expected


def test_spans_over_many_days_make_no_file_per_day(tmp_path: Path) -> None:
    """The reviewer's repro, small: 30 request spans on 30 days of 2000 + one of the record's day, with a cache
    lookup and a model call each. Before: 31 day folders per table; now the out-of-window rows go together."""
    p = _processor(tmp_path, wall_s=R_MS / 1000)
    spans = []
    for i in range(31):
        end = R_NS - HOUR_NS if i == 0 else Y2K_DAY2_NS + i * DAY_NS
        tid = (i + 1).to_bytes(16, "big")
        spans += [
            span(c.SPAN_REQUEST, trace_id=tid, span_id=(3 * i + 1).to_bytes(8, "big"), start_ns=end - 1, end_ns=end),
            span(c.SPAN_CACHE_LOOKUP, trace_id=tid, span_id=(3 * i + 2).to_bytes(8, "big"), start_ns=end - 1,
                 end_ns=end),
            span("chat m", trace_id=tid, span_id=(3 * i + 3).to_bytes(8, "big"), start_ns=end - 1, end_ns=end,
                 attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}),
        ]
    p.handle(0, 0, None, export_request(spans).SerializeToString(), [], 0.0, R_MS)
    p.flush_partition(0)
    for table in ("requests", "lookups", "calls"):
        folders = {d: sorted(os.listdir(p.lake.table_dir(table) / d)) for d in os.listdir(p.lake.table_dir(table))}
        assert sorted(folders) == ["date=1970-01-01", "date=2026-05-28"], table
        assert len(folders["date=1970-01-01"]) == 2 and "_empty.parquet" in folders["date=1970-01-01"], table
        assert len(folders["date=2026-05-28"]) == 1, table
    con = open_lake(p.config)
    try:
        for table in ("requests_raw", "lookups_raw", "calls_raw"):
            assert con.execute(f"SELECT ts IS NULL, data_quality, count(*) FROM {table} GROUP BY ALL ORDER BY 1"
                               ).fetchall() == [(False, None, 1), (True, "ts:out_of_window", 30)], table
    finally:
        con.close()


def test_the_consumer_loop_passes_the_record_timestamp(tmp_path: Path) -> None:
    # the wall clock 30 days on: a span 390 days before its record is kept (around the wall clock, 420 days
    # before it, it would not be)
    p = _processor(tmp_path, wall_s=R_MS / 1000 + 30 * 86_400)
    msg = export_request([_request(1, R_NS - 390 * DAY_NS)]).SerializeToString()
    record = ConsumerRecord(p.topic, 0, -1, 0, R_MS, 0, None, msg, [], None, -1, len(msg), -1)
    p._handle_batch({TopicPartition(p.topic, 0): [record]}, 0.0)
    assert _requests(p) == {"r1": (R_NS // 1000 - 390 * 86_400_000_000, None)}


def test_the_consumer_says_its_max_poll_interval(tmp_path: Path) -> None:
    seen: dict = {}
    p = Processor(Config(lake=LakeConfig(path=tmp_path / "lake")), consumer_factory=lambda **kw: seen.update(kw))
    p._make_consumer()
    assert seen["max_poll_interval_ms"] == 300_000


@pytest.mark.parametrize("key, value", [
    ("span_time_max_age_days", "-1"),
    ("span_time_max_age_days", "nan"),
    ("span_time_max_age_days", "inf"),
    ("span_time_max_ahead_s", "-0.5"),
    ("span_time_max_ahead_s", "inf"),
])
def test_window_keys_are_checked_on_load(tmp_path: Path, key: str, value: str) -> None:
    path = tmp_path / "costline.toml"
    path.write_text(f"[processor]\n{key} = {value}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert err.value.key == f"[processor] {key}"
    assert "0 for no bound" in err.value.problem


def test_window_keys_load(tmp_path: Path) -> None:
    path = tmp_path / "costline.toml"
    path.write_text("[processor]\nspan_time_max_age_days = 0\nspan_time_max_ahead_s = 3600\n", encoding="utf-8")
    cfg = load_config(path, env={})
    assert (cfg.processor.span_time_max_age_days, cfg.processor.span_time_max_ahead_s) == (0, 3600)
    defaults = load_config(env={}).processor
    assert (defaults.span_time_max_age_days, defaults.span_time_max_ahead_s) == (400, 86_400)
