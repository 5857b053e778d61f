"""Lakes filled from traffic plans without Kafka, through the product's own recording and commit path.

:func:`lake_from_plans` replays plans (:mod:`costline.sim.traffic`) through a real
:class:`~costline.collectors.Recorder` on an OTel SDK ``TracerProvider`` with a
simulated clock (:func:`costline.sim.demo.replay_one`), encodes the finished spans
to OTLP one message per trace (as ``KafkaSpanExporter`` does), decodes and
flattens each message exactly as the processor does, and commits them with the
processor's buffer (:class:`~costline.processors.buffer.PartitionBuffer`) and
:meth:`costline.lake.Lake.commit_batch` — one "partition", offsets = message
numbers, one commit per ``batch_messages`` messages.

Usage::

    from lakes import lake_from_plans, demo_plans
    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"))
    lake_from_plans(demo_plans(days=8, per_day=300), cfg)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costline.collectors import Recorder, RequestStampingProcessor
from costline.config import Config, LakeConfig
from costline.sim.demo import SimClock, replay_one
from costline.lake import Lake
from costline.otlp import encode_sdk_spans_by_trace
from costline.processors.buffer import PartitionBuffer
from costline.processors.decode import decode_message, flatten_message
from costline.processors.records import MemoPricingTable
from costline.sim.traffic import RequestPlan, TrafficSpec, sample_traffic

__all__ = ["LakeFill", "demo_plans", "lake_from_plans", "demo_lake", "add_standin_job_views"]

TOPIC = "otlp_spans"


@dataclass(frozen=True)
class LakeFill:
    """What :func:`lake_from_plans` wrote."""

    requests: int
    messages: int
    spans: int
    commits: int


def demo_plans(days: int = 8, per_day: int = 300, **spec: object) -> list[RequestPlan]:
    """The built-in demo traffic (stale-cache incident on day 6, student shift on day 7)."""
    return list(sample_traffic(TrafficSpec(days=days, requests_per_day=per_day, **spec)))  # type: ignore[arg-type]


def lake_from_plans(
    plans: Iterable[RequestPlan],
    config: Config,
    *,
    partition: int = 0,
    batch_messages: int = 2_000,
) -> LakeFill:
    """Record ``plans`` and write them to ``config.lake.path``; returns the counts."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(RequestStampingProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    clock = SimClock()
    recorder = Recorder(provider, capture=config.capture, env={}, now=clock)
    n = 0
    for plan in plans:
        replay_one(plan, recorder, clock)
        n += 1
    provider.force_flush()
    messages = encode_sdk_spans_by_trace(exporter.get_finished_spans())
    provider.shutdown()

    lake = Lake(config.lake.path).init()
    pricing = MemoPricingTable(config.pricing)
    buf = PartitionBuffer(partition)
    spans = commits = 0
    for offset, (_trace_id, value) in enumerate(messages):
        out = flatten_message(decode_message(value), pricing, partition, offset)
        buf.add(offset, out.rows, out.spans, now=0.0)
        spans += out.spans
        if offset - (buf.first_offset or 0) + 1 >= batch_messages:
            commits += _commit(lake, buf)
            buf = PartitionBuffer(partition)
    commits += _commit(lake, buf)
    return LakeFill(requests=n, messages=len(messages), spans=spans, commits=commits)


def _commit(lake: Lake, buf: PartitionBuffer) -> int:
    if buf.empty:
        return 0
    assert buf.first_offset is not None and buf.last_offset is not None
    lake.commit_batch(TOPIC, buf.partition, buf.first_offset, buf.last_offset, buf.tables())
    return 1


def demo_lake(path: Path, *, days: int = 8, per_day: int = 300) -> Config:
    """A Config whose lake at ``path`` holds ``days`` of the built-in demo traffic."""
    config = Config(lake=LakeConfig(path=Path(path)))
    lake_from_plans(demo_plans(days=days, per_day=per_day), config)
    return config


def add_standin_job_views(con: Any, days: int = 8) -> None:
    """Tables standing in for views that later issues add (nightly jobs, alerts), on one connection.

    Columns as the issues announce them: ``eval_runs(run_id, finished_at, subtype, student_score,
    teacher_score, gap, n)``, ``shadow_runs(run_id, finished_at, tier, tier_match_rate, n)``; the
    ``alerts`` view is costline.alerts' episodes (``fired_at, resolved_at, state, rule, fingerprint, labels,
    tenant, tier, subtype, severity, value, threshold, summary, resolved_summary, muted``).
    """
    con.execute("DROP VIEW IF EXISTS eval_runs")  # the real (empty) views: replaced by rows to draw
    con.execute("DROP VIEW IF EXISTS shadow_runs")
    con.execute(f"""
CREATE OR REPLACE TABLE eval_runs AS
SELECT 'eval-' || d AS run_id, TIMESTAMP '2026-11-01 02:00:00' + INTERVAL (d) DAY AS finished_at, subtype,
       0.86 - CASE WHEN subtype = 'sarcasm' THEN 0.25 ELSE 0.01 * d END AS student_score,
       0.91 AS teacher_score,
       0.91 - (0.86 - CASE WHEN subtype = 'sarcasm' THEN 0.25 ELSE 0.01 * d END) AS gap, 200 AS n
FROM range({days}) r(d), (VALUES ('sentiment'), ('intent'), ('urgency'), ('sarcasm')) s(subtype)
WHERE subtype <> 'sarcasm' OR d >= 7""")
    con.execute(f"""
CREATE OR REPLACE TABLE shadow_runs AS
SELECT 'shadow-' || d AS run_id, TIMESTAMP '2026-11-01 03:00:00' + INTERVAL (d) DAY AS finished_at, tier,
       CASE tier WHEN 'budget' THEN 0.95 - 0.01 * d WHEN 'mid' THEN 0.92 ELSE 0.9 END AS tier_match_rate,
       150 AS n
FROM range({days}) r(d), (VALUES ('budget'), ('mid'), ('upper')) t(tier)""")
    con.execute("DROP VIEW IF EXISTS alerts")  # the real (empty) view: replaced by rows to draw
    con.execute("""
CREATE OR REPLACE TABLE alerts AS
SELECT * FROM (VALUES
  (TIMESTAMP '2026-11-03 09:00:00', TIMESTAMP '2026-11-03 12:00:00', 'resolved', 'student_drift', 'f1',
   '{"subtype":"sentiment"}', NULL, NULL, 'sentiment', 'warning', 0.06, 0.05,
   'student-teacher gap 0.06 over 0.05', 'student-teacher gap back to 0.03', NULL),
  (TIMESTAMP '2026-11-07 11:00:00', NULL, 'firing', 'cache_hit_rate_drop', 'f2', '{"tenant":"acme"}', 'acme',
   NULL, NULL, 'critical', 0.08, 0.35, 'acme hit rate 0.08 is 37 points under its 7-day average 0.45', NULL,
   NULL)
) a(fired_at, resolved_at, state, rule, fingerprint, labels, tenant, tier, subtype, severity, value, threshold,
    summary, resolved_summary, muted)""")
