"""The teacher step: a crash half-way resumes without paying twice (the stand-in's request log proves
it), each paid answer is one span with its cost, chain-of-thought for reasoning subtypes, and the
synchronous fallback when the API refuses message batches."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

import anthropic
import httpx2 as httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

sys.path.insert(0, str(Path(__file__).parent))

from distill_world import labelled_plans, world_config  # noqa: E402

from costline.collectors import Recorder  # noqa: E402
from costline.config import CaptureConfig  # noqa: E402
from costline.distill.teacher import run_teacher, split_answer, teacher_requests  # noqa: E402
from costline.serving.settings import StandInConfig  # noqa: E402
from costline.sim.standin import StandInServer  # noqa: E402

SINCE, UNTIL = datetime(2026, 11, 1), datetime(2026, 11, 2)


class Killed(Exception):
    pass


@pytest.fixture
def exported(tmp_path):
    from lakes import lake_from_plans

    from costline.distill.dataset import export_dataset

    cfg = world_config(tmp_path, tenants=("*",), reasoning_subtypes=("topic",))
    lake_from_plans(labelled_plans(120), cfg)
    return cfg, export_dataset(cfg, since=SINCE, until=UNTIL, run_id="r1")


def test_a_teacher_run_killed_half_way_resumes_without_paying_twice_and_records_one_span_per_answer(exported):
    cfg, ex = exported
    total = ex.train + ex.eval
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    recorder = Recorder(provider, capture=CaptureConfig(), env={})
    seen = []

    def kill_after_10(answer):
        seen.append(answer.key)
        if len(seen) == 10:
            raise Killed

    with StandInServer(StandInConfig(port=0, latency_scale=0.0)) as srv:
        client = anthropic.Anthropic(base_url=srv.url, api_key="x", max_retries=0)
        with pytest.raises(Killed):
            run_teacher(cfg, ex.run, client=client, recorder=recorder, batch=False, on_answer=kill_after_10)
        assert not ex.run.path("teacher.jsonl").exists()
        first = len(srv.log.paid())
        assert 10 <= first < total
        t = run_teacher(cfg, ex.run, client=client, recorder=recorder, batch=False)
        assert t.resumed == first and t.sent == total - first and t.answered == total
        assert srv.log.duplicate_paid_keys() == {} and len(srv.log.paid()) == total
        again = run_teacher(cfg, ex.run, client=client, recorder=recorder, batch=False)
        assert again.sent == 0 and len(srv.log.paid()) == total
    calls = [s for s in spans.get_finished_spans() if s.attributes.get("gen_ai.request.model")]
    assert len(calls) == total  # one span per paid answer, none for resumed ones
    rows = [json.loads(line) for line in ex.run.path("teacher.jsonl").read_text().splitlines()]
    assert sum(s.attributes["costline.cost_usd"] for s in calls) == pytest.approx(sum(r["cost_usd"] for r in rows))
    # Fable 5 synchronous: $10 in / $50 out per MTok
    one = calls[0]
    assert one.attributes["costline.cost_usd"] == pytest.approx(
        (one.attributes["gen_ai.usage.input_tokens"] * 10 + one.attributes["gen_ai.usage.output_tokens"] * 50) / 1e6)


def test_reasoning_subtypes_get_chain_of_thought_and_the_final_answer_is_kept_apart(exported):
    cfg, ex = exported
    items = [json.loads(line) for line in (ex.run.dataset / "train.jsonl").read_text().splitlines()]
    reqs = teacher_requests(items, "claude-fable-5", cfg.distill)
    by_sub = {it["subtype"]: r for it, r in zip(items, reqs)}
    assert cfg.distill.cot_prompt in (by_sub["topic"].system or "")
    assert by_sub["sentiment"].system is None
    assert split_answer("Billing words come first.\nThe last word is refund.\nFinal answer: billing",
                        "Final answer:") == ("Billing words come first.\nThe last word is refund.", "billing")
    assert split_answer("billing", "Final answer:") == ("", "billing")


def test_falls_back_to_synchronous_calls_when_batches_are_refused(exported):
    cfg, ex = exported
    hits = {"batches": 0, "messages": 0}

    def handler(request):
        if request.url.path.endswith("/batches"):
            hits["batches"] += 1
            return httpx.Response(404, json={"type": "error", "error": {"type": "not_found_error",
                                                                        "message": "no batches here"}})
        hits["messages"] += 1
        return httpx.Response(200, json={
            "id": "m", "type": "message", "role": "assistant", "model": "claude-fable-5",
            "content": [{"type": "text", "text": "positive"}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 1}})

    client = anthropic.Anthropic(base_url="http://test", api_key="x", max_retries=0,
                                 http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    t = run_teacher(cfg, ex.run, client=client)
    assert not t.batch and hits["batches"] == 1 and hits["messages"] == ex.train + ex.eval
    assert json.loads(ex.run.path("teacher_manifest.json").read_text())["batch"] is False
