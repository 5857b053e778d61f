"""The rules' length test reads the whole request, and the lake keeps why each request went where it went.

The article's router sends a query under 200 characters to the budget tier. The gateway used to route on the last
user turn alone, so "Is clause 4 enforceable?" after a pasted 1,200-character contract, or "Summarise it." with a
plain-text document attached, went to the budget tier as a short task (and an analyst could not see why: the
route's reason and confidence were on the span only). Now the length rule reads the larger of the question and the
whole request (:func:`request_chars`: every turn, tool results and plain-text documents; not the system prompt),
and ``requests.route_reason`` / ``route_confidence`` are lake columns.

Real parts: a Gateway → Pipeline → the local stand-ins, driven with the ``anthropic`` SDK; its spans written to a
lake in tmp_path through the processor's decode/flatten/commit path and read back with DuckDB. Character counts
below are of ASCII strings built here (``len`` of a string written out in the test), not costline's counting.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import anthropic
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costline import contract as c
from costline.collectors import Recorder
from costline.config import Config, LakeConfig
from costline.processors.records import flatten_span
from costline.pricing import PricingTable
from costline.serving.gateway.app import Gateway
from costline.serving.pipeline import Pipeline
from costline.serving.routing.router import RulePolicy, request_chars
from costline.serving.settings import BackendsConfig, GatewayConfig
from costline.sim.synth import span

from figures_lake import lake_from_sdk_spans, query_lake

CLAUSE = "4. The Supplier may terminate this agreement on thirty days written notice to the Customer. "  # 91 chars
CONTRACT = CLAUSE * 13  # 1,183 characters, one space at the end dropped when read: 1,182
QUESTION = "Is clause 4 enforceable?"  # 24 characters

#: (messages, visible characters the router reads; None: a one-turn plain-string request)
SIZES = [
    ([{"role": "user", "content": QUESTION}], None),
    ([{"role": "user", "content": [{"type": "text", "text": QUESTION}]}], 24),
    ([{"role": "user", "content": "Here it is:"}, {"role": "assistant", "content": "Thanks."},
      {"role": "user", "content": QUESTION}], 11 + 7 + 24),
    # a plain-text document block counts its data; a PDF (base64) and an image have no text to count
    ([{"role": "user", "content": [{"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                                                    "data": "a" * 300}},
                                   {"type": "text", "text": "Summarise it."}]}], 300 + 13),
    ([{"role": "user", "content": [{"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                                                    "data": "JVBERi0x" * 500}},
                                   {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                "data": "iVBORw0K" * 500}},
                                   {"type": "text", "text": "Summarise it."}]}], 13),
    # a tool's result, and a search result inside it
    ([{"role": "user", "content": QUESTION},
      {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "lookup", "input": {"q": "x"}}]},
      {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [
          {"type": "text", "text": "b" * 40},
          {"type": "search_result", "source": "https://example.com", "title": "T",
           "content": [{"type": "text", "text": "c" * 60}]}]}]}], 24 + 40 + 60),
    # padding is not size: zero-width spaces and runs of whitespace read as nothing / one space
    ([{"role": "user", "content": "\u200b" * 500 + "hi   there"}, {"role": "user", "content": "ok"}], 8 + 2),
    # malformed turns and blocks count nothing, and never raise
    ([{"role": "user", "content": [None, 7, {"type": "text", "text": None}, {"type": "document", "source": "x"}]},
      "not a turn", {"role": "user", "content": {"type": "text"}}, {"role": "user", "content": "abc"}], 3),
]


@pytest.mark.parametrize("messages, expected", SIZES)
def test_request_chars_counts_what_the_model_reads(messages, expected) -> None:
    assert request_chars(messages) == expected


def test_request_chars_stops_at_its_cap() -> None:
    turns = [{"role": "user", "content": "x" * 1000}] * 50
    assert request_chars(turns, cap=2500) == 2500


@pytest.mark.parametrize("query, size, task_type, tier, reason", [
    (QUESTION, None, "faq", "budget", "query under 200 characters"),
    (QUESTION, 199, "faq", "budget", "query under 200 characters"),
    (QUESTION, 1206, "faq", "frontier",
     "default (the question is short, the request is not: 200+ characters)"),
    (QUESTION, 1206, "coding", "mid", "task type coding (the question is short, the request is not: 200+ characters)"),
    ("Please explain it.", 1206, "faq", "mid",
     "keyword 'explain' (the question is short, the request is not: 200+ characters)"),
    (QUESTION, 1206, "complex_reasoning", "upper",
     "task type complex_reasoning (the question is short, the request is not: 200+ characters)"),
    (QUESTION, 1206, "classification", "budget", "task type classification"),  # a budget task type stays budget
    ("q" * 250, 1206, "faq", "frontier", "default"),  # a long question: as before
])
def test_the_length_rule_reads_the_whole_request(query, size, task_type, tier, reason) -> None:
    decision = RulePolicy().route(query, task_type, request_chars=size)
    assert (decision.tier, decision.reason, decision.confidence) == (tier, reason, 1.0)


@pytest.mark.parametrize("value, expected, flagged", [
    (0.87, 0.87, False),
    (0.0, 0.0, False),
    (1, 1.0, False),
    (1.5, None, True),
    (-0.1, None, True),
    (math.nan, None, True),
    ("0.25", 0.25, False),
    ("sure", None, True),
])
def test_the_route_confidence_column_is_a_number_from_0_to_1(value, expected, flagged) -> None:
    row = flatten_span(span(c.SPAN_REQUEST, trace_id=b"\x0a" * 16, span_id=b"\x0b" * 8, parent_span_id=b"",
                            start_ns=1_780_000_000_000_000_000, end_ns=1_780_000_000_100_000_000,
                            attributes={c.COSTLINE_ROUTE_CONFIDENCE: value,
                                        c.COSTLINE_ROUTE_REASON: "r" * 300}), PricingTable())
    assert row.route_confidence == expected
    assert ("costline.route.confidence:out_of_range" in (row.data_quality or "")) is flagged
    assert row.route_reason == "r" * 256  # a foreign span's reason is cut as the recorder cuts its own


@pytest.fixture()
def gateway_run(standin, tmp_path: Path):
    """Ask the gateway with the anthropic SDK; returns (ask, finish) — finish() stops it and gives the spans."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    cfg = Config()
    cfg = cfg.replace(serving=dataclasses.replace(cfg.serving, backends=BackendsConfig(
        anthropic_base_url=standin.url, student_base_url=standin.openai_url, max_retries=0)),
        lake=LakeConfig(path=tmp_path / "lake"))
    pipeline = Pipeline.from_config(cfg, recorder=Recorder(provider), env={})
    gw = Gateway(pipeline, GatewayConfig(keys_file=tmp_path / "keys.json", rate_limit_per_minute=0), port=0)
    gw.start()
    client = anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0)

    def ask(messages: list) -> str:
        raw = client.messages.with_raw_response.create(model="claude-haiku-4-5", max_tokens=64, messages=messages)
        assert raw.http_response.status_code == 200
        return raw.headers["x-costline-routed-tier"]

    def finish() -> list:
        gw.shutdown()
        pipeline.close()
        return list(exporter.get_finished_spans())

    yield ask, finish, cfg
    gw.shutdown()
    pipeline.close()


def test_a_short_question_about_a_long_conversation_or_document_is_not_sent_to_budget(gateway_run) -> None:
    ask, finish, cfg = gateway_run
    alone = ask([{"role": "user", "content": QUESTION}])
    after_contract = ask([{"role": "user", "content": CONTRACT}, {"role": "assistant", "content": "Got it."},
                          {"role": "user", "content": QUESTION}])
    with_document = ask([{"role": "user", "content": [
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": CONTRACT}},
        {"type": "text", "text": QUESTION}]}])
    assert (alone, after_contract, with_document) == ("budget", "frontier", "frontier")
    spans = finish()
    lake_from_sdk_spans(spans, cfg)
    rows = query_lake(cfg, "SELECT routed_tier, route_reason, route_confidence FROM requests "
                           "WHERE NOT standalone ORDER BY ts")
    long_request = ("frontier", "default (the question is short, the request is not: 200+ characters)", 1.0)
    assert rows == [("budget", "query under 200 characters", 1.0), long_request, long_request]
