"""A turn Anthropic paused (``stop_reason: "pause_turn"``: a server tool's long turn, no answer yet) is no successful
request (the app sends it back, and that request, which gets the answer, is the success), but it says nothing of the
served tier's quality: the pipeline accepted it and never sent it up a tier. The routing labels read its served tier
as they read a refusal's — not rejected. Before, ``success = false`` with no rejected attempt made that tier
"inadequate": escalation evidence that every paused web-search request needs the next tier up, in the routing loop's
held-out evaluation and ``costline route eval`` (``include_unlabelled``) and in training labels.

A hand-built DuckDB with the columns the labels' SQL reads, a call's ``finish_reasons`` among them (table-driven;
each expected interval worked out by hand in its comment: tiers budget < mid < upper < frontier), then the reviewer's
path: the real gateway and ``anthropic`` SDK against costline's stand-in, whose web search pauses a turn that needs
more than three searches, the spans committed to a lake by the processor's own decode / flatten / commit.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone

import anthropic
import duckdb
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costline.collectors import Recorder
from costline.config import CaptureConfig, Config, LakeConfig
from costline.serving.gateway.app import Gateway
from costline.serving.pipeline import Pipeline
from costline.serving.routing.labels import labels_from_lake
from costline.serving.settings import BackendsConfig, GatewayConfig, StandInConfig
from costline.sim.standin import StandInServer
from figures_lake import lake_from_sdk_spans, query_lake

T0 = datetime(2026, 12, 6, 9)

#: One request: (success, rejected_attempts, its calls in order as (tier, finish_reasons), escalations).
Req = tuple[bool, str | None, tuple[tuple[str, tuple[str, ...]], ...], int]


def _lake(req: Req, shadow: list[tuple[str, bool]]) -> duckdb.DuckDBPyConnection:
    success, rejected, calls, escalations = req
    con = duckdb.connect()
    con.execute("CREATE TABLE requests (request_id VARCHAR, trace_id VARCHAR, ts TIMESTAMP, tenant VARCHAR, "
                "task_type VARCHAR, subtype VARCHAR, tier VARCHAR, routed_tier VARCHAR, escalations BIGINT, "
                "success BOOLEAN, input_messages VARCHAR, standalone BOOLEAN, cache_hit BOOLEAN, "
                "rejected_attempts VARCHAR)")
    con.execute("CREATE TABLE calls (request_id VARCHAR, trace_id VARCHAR, ts TIMESTAMP, tier VARCHAR, "
                "error_type VARCHAR, finish_reasons VARCHAR[], input_messages VARCHAR, input_tokens BIGINT, "
                "output_tokens BIGINT, standalone BOOLEAN)")
    con.execute("CREATE TABLE shadow_items (run_id VARCHAR, request_id VARCHAR, trace_id VARCHAR, tier VARCHAR, "
                "next_tier VARCHAR, subtype VARCHAR, metric VARCHAR, score DOUBLE, match BOOLEAN)")
    doc = json.dumps([{"role": "user", "parts": [{"type": "text", "content": "What changed in the refund policy?"}]}])
    con.execute("INSERT INTO requests VALUES ('req-1', 'trace-1', ?, 'acme', 'support', NULL, ?, ?, ?, ?, ?, false, "
                "false, ?)", [T0, calls[-1][0], calls[0][0], escalations, success, doc, rejected])
    for j, (tier, finish) in enumerate(calls):
        con.execute("INSERT INTO calls VALUES ('req-1', 'trace-1', ?, ?, NULL, ?, ?, 100, 20, false)",
                    [T0 + timedelta(seconds=j), tier, list(finish), doc])
    for tier, match in shadow:
        con.execute("INSERT INTO shadow_items VALUES ('run-1', 'req-1', 'trace-1', ?, NULL, NULL, 'exact', ?, ?)",
                    [tier, 1.0 if match else 0.0, match])
    return con


PAUSED: Req = (False, None, (("budget", ("pause_turn",)),), 0)

CASES = [
    pytest.param(
        # the paused turn alone, as an evaluation replays it: no evidence -> [budget, unknown], from nothing.
        # Before: budget "rejected" -> lo = mid, from an escalation.
        PAUSED, [], True, [("budget", None, "none")], 0, id="paused"),
    pytest.param(
        # as Anthropic's finish reason may be spelled in another case: the same.
        (False, None, (("budget", ("PAUSE_TURN",)),), 0), [], True, [("budget", None, "none")], 0,
        id="paused-any-case"),
    pytest.param(
        # a training label: the shadow job matched budget -> hi = budget; nothing inadequate -> lo = budget (exact).
        # Before: budget both adequate (shadow) and inadequate (rejected): contradicting, left out.
        PAUSED, [("budget", True)], False, [("budget", "budget", "shadow")], 0, id="paused-shadow-matched"),
    pytest.param(
        # the validator turned budget down (an escalation: budget inadequate -> lo = mid), mid paused: mid is no
        # evidence -> [mid, unknown]. Before: mid rejected too -> lo = upper.
        (False, "budget:validator", (("budget", ("end_turn",)), ("mid", ("pause_turn",))), 1), [], False,
        [("mid", None, "escalation")], 0, id="escalated-then-paused"),
    pytest.param(
        # no pause: every tier's answer turned down, the last (budget) served as no success -> budget inadequate,
        # lo = mid (unchanged: only a paused turn or a refusal keeps its tier out of the rejected ones).
        (False, "budget:validator", (("budget", ("end_turn",)),), 0), [], True, [("mid", None, "escalation")], 0,
        id="rejected-not-paused"),
]


@pytest.mark.parametrize(("req", "shadow", "unlabelled", "expected", "conflicting"), CASES)
def test_a_paused_turn_is_no_evidence_against_its_tier(req, shadow, unlabelled, expected, conflicting) -> None:
    con = _lake(req, shadow)
    try:
        got = labels_from_lake(Config(), since=T0, until=T0 + timedelta(days=1), con=con,
                               include_unlabelled=unlabelled)
    finally:
        con.close()
    assert [(lb.lo, lb.hi, lb.source) for lb in got.labels] == expected
    assert got.conflicting == conflicting


#: Four searches at the stand-in (one, plus one per " and "), three a turn: the first turn pauses.
QUESTION = "What changed in the refund policy and the shipping terms and the warranty and the returns window?"


def test_a_paused_web_search_turn_through_the_gateway_and_the_lake(tmp_path) -> None:
    """The app continues the paused turn as Anthropic documents (the paused content sent back as the assistant
    turn): two requests on budget, the first no success. Neither tells anything against budget: both are
    ``[budget, unknown]`` from no evidence (before: the paused one ``[mid, unknown]``, from an "escalation")."""
    standin = StandInServer(StandInConfig(latency_scale=0.0), port=0)
    standin.start()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    cfg = Config().replace(lake=LakeConfig(path=tmp_path / "lake"))
    serving = dataclasses.replace(cfg.serving, backends=BackendsConfig(
        anthropic_base_url=standin.url, student_base_url=standin.openai_url, max_retries=0))
    pipeline = Pipeline.from_config(cfg.replace(serving=serving), cache=None, validator=None, env={}, confidence=None,
                                    recorder=Recorder(provider, capture=CaptureConfig(message_content=True)))
    gw = Gateway(pipeline, GatewayConfig(keys_file=tmp_path / "keys.json", rate_limit_per_minute=0), port=0)
    gw.start()
    try:
        client = anthropic.Anthropic(base_url=f"http://127.0.0.1:{gw.port}", api_key="unused", max_retries=0,
                                     default_headers={"x-costline-task-type": "support", "x-costline-tenant": "acme"})
        tools = [{"type": "web_search_20250305", "name": "web_search"}]
        first = client.messages.create(model="claude-haiku-4-5", max_tokens=512, tools=tools,
                                       messages=[{"role": "user", "content": QUESTION}])
        assert first.stop_reason == "pause_turn"
        after = client.messages.create(model="claude-haiku-4-5", max_tokens=512, tools=tools, messages=[
            {"role": "user", "content": QUESTION}, {"role": "assistant", "content": first.content}])
        assert after.stop_reason == "end_turn"
    finally:
        gw.shutdown()
        pipeline.close()
        provider.shutdown()
        standin.shutdown()
    lake_from_sdk_spans(exporter.get_finished_spans(), cfg)
    assert query_lake(cfg, "SELECT tier, success, rejected_attempts FROM requests ORDER BY ts") == [
        ("budget", False, None), ("budget", True, None)]
    now = datetime.now(timezone.utc)
    got = labels_from_lake(cfg, since=now - timedelta(hours=1), until=now + timedelta(hours=1),
                           include_unlabelled=True)
    assert [(lb.served_tier, lb.lo, lb.hi, lb.source) for lb in got.labels] == [
        ("budget", "budget", None, "none"), ("budget", "budget", None, "none")]
