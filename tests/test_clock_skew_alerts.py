"""Alert rules that a host's wrong clock must not fool: a late hour is judged once the Kafka records of every
partition are in past it (not once one span stamped by a fast clock says a later hour), and ``pipeline_silent``
goes by when data reached the lake (not by the spans' own times, which a lagging clock makes old).

Real lake (Lake.commit_batch / the processor rig), real DuckDB views, AlertService.tick with injected times.
Expected hit rates, hours and silences are worked out by hand in the comments."""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from costline import contract as c
from costline.alerts.notify import InMemoryNotifier
from costline.alerts.service import AlertService
from costline.alerts.settings import AlertsConfig
from costline.config import Config, LakeConfig
from costline.lake import Lake
from costline.processors.buffer import rows_to_tables
from costline.processors.records import LookupRow
from costline.sim.synth import export_request, span

from processor_rig import claimed_processor

D = datetime(2026, 11, 8)  # naive UTC
TOPIC = "otlp_spans"


def _us(t: datetime) -> int:
    return int(t.replace(tzinfo=UTC).timestamp() * 1_000_000)


def _at(h: int, m: int = 0, s: int = 40) -> datetime:
    return (D + timedelta(hours=h, minutes=m, seconds=s)).replace(tzinfo=UTC)


class _Lake:
    """Commits lookup rows to partition 0 (and empty batches to others) with the record time the processor
    would have recorded."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lake = Lake(path).init()
        self.ids = itertools.count(1)
        self.offsets: dict[int, itertools.count] = {}

    def lookups(self, tenant: str, start: datetime, n: int, hits: int, span_s: int) -> list[LookupRow]:
        out = []
        for i in range(n):
            k = next(self.ids)
            out.append(LookupRow(f"l{k}", f"t{k}", None, None, _us(start + timedelta(seconds=i * span_s // n)),
                                 tenant, "default", i < hits, 0.9, 1.0, 0, k))
        return out

    def commit(self, rows: list[LookupRow], record_time: datetime | None, partition: int = 0) -> None:
        offs = self.offsets.setdefault(partition, itertools.count(0))
        first = next(offs)
        tables = {"lookups": rows_to_tables("lookups", rows)} if rows else {}
        self.lake.commit_batch(TOPIC, partition, first, first, tables,
                               record_time_ms=None if record_time is None else _us(record_time) // 1000)


def _service(path: Path, mem: InMemoryNotifier) -> AlertService:
    cfg = Config(lake=LakeConfig(path=path), alerts=AlertsConfig(state_path=str(path.parent / "state.sqlite")))
    return AlertService(cfg, notifiers={"slack": mem}, export=False)


def _late(report) -> list[tuple[str, list[tuple[str, str]]]]:
    return [(w.strftime("%H:%M"), sorted((o.labels.get("tenant"), o.condition.value) for o in obs or []))
            for _rule, w, obs in report.late]


def _outage(tmp: Path, *, record_times: bool) -> tuple[list, list, list[str]]:
    """A week of history (acme 100 lookups all hour long, initech 100 at :30-:40, both 60 % hits), hour 09:00
    judged live at 10:00, the processor down until 13:05; then the backlog lands in two slices:

    1. acme's 10:00-10:10 (17 lookups, 10 hits) + one lookup of globex, whose host clock runs 65 min ahead, made
       at 10:00 and stamped 11:05; its Kafka records arrived 10:00-10:10 (record time 10:10);
    2. the rest: acme 10:10-11:00 (83 lookups, 8 hits: its cache broke), initech 10:30-10:40, hours 11 and 12
       as usual, acme's first lookups of 13:00; record time 13:05.

    Hour 10 by hand: acme (10 + 8) / (17 + 83) = 18 % against 60 %: a breach; initech 60/100 = 60 %: ok.
    Returns the late hours judged at 13:06 (after slice 1) and at 13:07 (after slice 2), and the posts."""
    lake = _Lake(tmp / "lake")
    rec = (lambda t: t) if record_times else (lambda t: None)
    hist = []
    for h in range(1, 24 * 7 + 1):
        hour = D + timedelta(hours=10 - h)
        hist += lake.lookups("acme", hour, 100, 60, 3600) + lake.lookups("initech", hour + timedelta(minutes=30),
                                                                         100, 60, 600)
    lake.commit(hist, rec(D + timedelta(hours=10)))
    mem = InMemoryNotifier("slack")
    svc = _service(tmp / "lake", mem)
    rule = ["cache_hit_rate_drop"]
    try:
        svc.tick(_at(10), rules=rule)  # judges 09:00
        for t in (_at(11), _at(12), _at(13, 5)):  # nothing lands
            svc.tick(t, rules=rule)
        lake.commit(lake.lookups("acme", D + timedelta(hours=10), 17, 10, 600)
                    + lake.lookups("globex", D + timedelta(hours=11, minutes=5), 1, 1, 60),
                    rec(D + timedelta(hours=10, minutes=10)))
        first = _late(svc.tick(_at(13, 6), rules=rule))
        rest = lake.lookups("acme", D + timedelta(hours=10, minutes=10), 83, 8, 3000) + \
            lake.lookups("initech", D + timedelta(hours=10, minutes=30), 100, 60, 600)
        for h in (11, 12):
            rest += lake.lookups("acme", D + timedelta(hours=h), 100, 60, 3600) + \
                lake.lookups("initech", D + timedelta(hours=h, minutes=30), 100, 60, 600)
        rest += lake.lookups("acme", D + timedelta(hours=13), 5, 3, 300)
        lake.commit(rest, rec(D + timedelta(hours=13, minutes=5)))
        second = _late(svc.tick(_at(13, 7), rules=rule))
    finally:
        svc.shutdown()
    posts = [f"{m.payload['kind']}:{tenant}" for m in mem.sent()
             for tenant in [t for t in ("acme", "initech") if f"tenant={t}" in m.payload["text"]] or ["?"]]
    return first, second, posts


def test_a_span_from_a_fast_clock_does_not_make_a_late_hour_complete(tmp_path: Path) -> None:
    first, second, posts = _outage(tmp_path, record_times=True)
    # 13:06: the records are in up to 10:10 only: hour 10 waits (before: judged on its first 10 minutes, initech
    # "traffic stopped", and acme's 18 % never paged)
    assert first == []
    # 13:07: records in up to 13:05 >= 11:00:30 and 12:00:30: hours 10 and 11 judged (12:00 is the current one)
    assert second == [("10:00", [("acme", "breach"), ("initech", "ok")]),
                      ("11:00", [("acme", "ok"), ("initech", "ok")])]
    assert posts[0] == "firing:acme" and "firing:initech" not in posts
    # manifests of an older costline record no record time: the rule of before (a span of a later hour is in).
    # Here that is the fast clock's 11:05 lookup: hour 10 judged at 13:06 on its first 10 minutes
    first, _second, posts = _outage(tmp_path / "old", record_times=False)
    assert first == [("10:00", [("acme", "band"), ("initech", "breach")])]
    assert posts[0] == "firing:initech"


T = D + timedelta(hours=13, minutes=5)  # the newest record time in the cases below

# (case, {partition: record time of its batch, None: a manifest without one}, the mark: every active
# partition's records in up to it). A partition more than 24 h (LATE_HOURS) behind the newest is idle.
MARKS = [
    ("one partition", {0: T}, T),
    ("a partition still catching up holds the mark", {0: T, 1: D + timedelta(hours=10, minutes=5)},
     D + timedelta(hours=10, minutes=5)),
    ("23 h behind: not idle yet", {0: T, 1: T - timedelta(hours=23)}, T - timedelta(hours=23)),
    ("25 h behind: idle, left out", {0: T, 1: T - timedelta(hours=25)}, T),
    ("a partition with no record time (an older costline's manifest) is left out", {0: T, 1: None}, T),
    ("no record time anywhere: unknown", {0: None, 1: None}, None),
    ("no manifest: unknown", {}, None),
]


def test_the_record_mark_over_partitions(tmp_path: Path) -> None:
    got, want = {}, {}
    for n, (case, times, expected) in enumerate(MARKS):
        lake = _Lake(tmp_path / str(n) / "lake")
        for partition, at in times.items():
            lake.commit([], at, partition)
        svc = _service(tmp_path / str(n) / "lake", InMemoryNotifier("slack"))
        try:
            got[case], want[case] = svc._record_mark(), expected
        finally:
            svc.shutdown()
    assert got == want


# --- pipeline_silent: arrival, not the spans' own clock -----------------------------------------------------

NOW = datetime(2026, 11, 8, 12, 0, tzinfo=UTC)
NOW_S = NOW.timestamp()

# (case, span end relative to NOW (s: the app host's clock), data file's mtime relative to NOW (s: when it was
# written), compacted file?, tick relative to NOW (s), expected (condition, seconds silent)). silent_s = 900.
SILENT = [
    ("app clock 20 min behind, file written now: spans arrive", -1200, 0, False, 5, ("ok", 5.0)),
    ("app clock 1 min behind, file written now", -60, 0, False, 5, ("ok", 5.0)),
    ("right clock, nothing written for 1000 s: silent", 0, 0, False, 1000, ("breach", 1000.0)),
    ("app clock an hour ahead, nothing written for 1000 s: still silent", 3600, 0, False, 1000,
     ("breach", 1000.0)),
    ("a compacted file written now holds spans of 2 days ago: no arrival", -2 * 86400, 0, True, 5,
     ("breach", 2 * 86400.0 + 5)),
    ("a file written after the tick (a backfill, a writer clock ahead): its spans' time counts", -60, 7200, False,
     0, ("ok", 60.0)),
]


def _silent_case(tmp: Path, span_end_s: int, mtime_s: int, compacted: bool, tick_s: int) -> tuple[str, float]:
    path = tmp / "lake"
    cfg = Config(lake=LakeConfig(path=path), alerts=AlertsConfig(state_path=str(tmp / "state.sqlite")))
    p = claimed_processor(cfg, wall_clock=lambda: NOW_S)
    for i in range(5):  # 5 requests stamped by the app host's clock, i s apart; records stamped at NOW
        end = int((NOW_S + span_end_s - i) * 1e9)
        sp = span(c.SPAN_REQUEST, trace_id=(i + 1).to_bytes(16, "big"), span_id=(i + 1).to_bytes(8, "big"),
                  start_ns=end - 10**9, end_ns=end, attributes={c.COSTLINE_REQUEST_ID: f"r{i}"})
        p.handle(0, i, None, export_request([sp]).SerializeToString(), [], 0.0, int(NOW_S * 1000))
    p.flush_partition(0)
    files = p.lake.data_files("requests")
    assert len(files) == 1
    f = files[0]
    if compacted:
        f = f.rename(f.with_name(f"c-{f.name}"))
    os.utime(f, (NOW_S + mtime_s, NOW_S + mtime_s))
    svc = AlertService(cfg, notifiers={"slack": InMemoryNotifier("slack")}, export=False)
    try:
        rep = svc.tick(NOW + timedelta(seconds=tick_s), rules=["pipeline_silent"])
    finally:
        svc.shutdown()
    (obs,) = rep.observations["pipeline_silent"]
    return obs.condition.value, round(obs.value, 3)


def test_pipeline_silent_goes_by_arrival(tmp_path: Path) -> None:
    got = {case: _silent_case(tmp_path / str(n), end, mtime, comp, tick)
           for n, (case, end, mtime, comp, tick, _) in enumerate(SILENT)}
    assert got == {case: expected for case, *_, expected in SILENT}
