"""Clock skew in the telemetry path: a client whose clock runs ahead must not keep ``pipeline_silent`` quiet.

Spans are real OTel SDK spans with explicit start/end times, written to a lake in tmp_path through the
processor's own decode / flatten / commit path; each data file's modification time is set to when that
batch reached the lake in the simulated world (what a processor's commit leaves on disk). The alert
service runs on a manual clock; the expected figures are counted by hand below.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costline.alerts.notify import InMemoryNotifier
from costline.alerts.service import AlertService
from costline.alerts.source import AlertSource
from costline.alerts.testing import ManualClock
from costline.config import Config, LakeConfig

from figures_lake import lake_from_sdk_spans

OUTAGE = datetime(2026, 11, 7, 10, 0)  # the processor dies here; nothing reaches the lake after it


def _ns(t: datetime) -> int:
    return int(t.replace(tzinfo=UTC).timestamp()) * 1_000_000_000 + t.microsecond * 1000


def _lookup(tracer, end: datetime) -> None:
    span = tracer.start_span("costline.cache.lookup", start_time=_ns(end) - 2_000_000,
                             attributes={"costline.cache.hit": True, "costline.tenant": "acme"})
    span.end(end_time=_ns(end))


def _written_at(lake: Path, t: datetime) -> None:
    """Every data file of the lake was committed at ``t`` (its modification time)."""
    stamp = t.replace(tzinfo=UTC).timestamp()
    for f in lake.glob("*/date=*/*.parquet"):
        if not f.name.startswith("_"):
            os.utime(f, (stamp, stamp))


def _skewed_lake(tmp_path: Path) -> Config:
    """09:00–10:00: one lookup a minute from a healthy client (ending at hh:mm:30) and one a minute from a
    client whose clock runs one hour ahead (stamped 10:00:40 … 10:59:40); all of it reached the lake by 10:00."""
    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"))
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("app")
    for i in range(60):
        _lookup(tracer, OUTAGE - timedelta(hours=1) + timedelta(minutes=i, seconds=30))
        _lookup(tracer, OUTAGE + timedelta(minutes=i, seconds=40))  # sent at 09:mm:40, its clock says 10:mm:40
    lake_from_sdk_spans(exporter.get_finished_spans(), cfg)
    _written_at(cfg.lake.path, OUTAGE)
    return cfg


def test_a_client_clock_ahead_does_not_hide_a_dead_pipeline(tmp_path):
    """The pipeline dies at 10:00. By hand: the last span that reached the lake did so at 10:00 (the skewed
    client's spans were written then, whatever their clock said), so at 10:15 nothing arrived for 900 s =
    ``silent_s``: pipeline_silent fires; at 10:50 it has been 3000 s and it still fires — one incident, no
    resolve in between. Before: the skewed spans "arrived" one by one as the clock passed their stamps, so
    the rule said OK until 11:00 and the dead pipeline went unreported for an hour."""
    cfg = _skewed_lake(tmp_path)
    clock = ManualClock(OUTAGE.replace(tzinfo=UTC))
    slack = InMemoryNotifier("slack")
    service = AlertService(cfg, now=clock, notifiers={"slack": slack}, export=False)
    try:
        seen = {}
        for minutes in (5, 15, 30, 50, 70):
            at = OUTAGE.replace(tzinfo=UTC) + timedelta(minutes=minutes)
            clock.t = at
            report = service.tick(at, rules=["pipeline_silent"])
            (obs,) = report.observations["pipeline_silent"]
            seen[minutes] = (obs.condition.value, obs.value)
        assert seen[5] == ("ok", 5 * 60.0)
        assert seen[15] == ("breach", 15 * 60.0)
        assert seen[30] == ("breach", 30 * 60.0)
        assert seen[50] == ("breach", 50 * 60.0)
        assert seen[70] == ("breach", 70 * 60.0)
        kinds = [m.payload["kind"] for m in slack.sent() if m.op == "post"]
        assert kinds == ["firing"]  # one incident, never resolved while the pipeline is dead
    finally:
        service.shutdown()


def test_the_newest_span_is_bounded_by_when_it_reached_the_lake(tmp_path):
    """The figure the rule reads: at 10:30 the newest span is the one written at 10:00 (not 10:29:40, the
    skewed client's stamp); at 09:59:45 it is the healthy client's 09:59:30 (a span is never newer than now)."""
    cfg = _skewed_lake(tmp_path)
    source = AlertSource(cfg)
    assert source.snapshot(datetime(2026, 11, 7, 10, 30, tzinfo=UTC), ["pipeline_silent"]).last_span_at == OUTAGE
    assert source.snapshot(datetime(2026, 11, 7, 9, 59, 45, tzinfo=UTC), ["pipeline_silent"]).last_span_at == \
        datetime(2026, 11, 7, 9, 59, 30)
