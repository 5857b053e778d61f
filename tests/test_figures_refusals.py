"""What refusals through the gateway do to the figures: the lake's ``requests.success`` is false for a refused
request (its cost still counted), ``requests.rejected_attempts`` says why (``budget:refusal``), ``tier_hourly``'s cost
per success divides by the answers delivered only, and ``rejections_hourly`` names the refusals. An answer cut at
``max_tokens`` stays a success.

The real ``anthropic`` SDK against an in-process Gateway in front of the local server of
``test_gateway_refusals``; the spans go into a lake through the processor's own decode / flatten / commit path and
are read with real DuckDB through the views. Prices by hand: Haiku 4.5 at $1 in / $5 out per MTok (Anthropic's list
price; the lake is given its own pricing so the default's figures do not matter here).
"""

from __future__ import annotations

import pytest
from figures_lake import anthropic_tiers_config, lake_from_sdk_spans, query_lake
from test_gateway_refusals import CUT, HAIKU, PLAIN, REFUSE, SONNET, gateway

#: Every Messages answer of the local server: 100 tokens in, 5 out; a cut one max_tokens (16 here) out.
REFUSED_COST = PLAIN_COST = 100 * 1.0 / 1e6 + 5 * 5.0 / 1e6  # 0.000125
CUT_COST = 100 * 1.0 / 1e6 + 16 * 5.0 / 1e6  # 0.00018


def test_refusals_are_paid_for_but_not_successes_in_the_lake(tmp_path) -> None:
    cfg = anthropic_tiers_config(tmp_path / "lake", (HAIKU, 1.0, 5.0), (SONNET, 3.0, 15.0))
    with gateway(tmp_path) as w:
        client = w.messages()
        ids = {}
        for question in (PLAIN, REFUSE, CUT):
            raw = client.messages.with_raw_response.create(model="m", max_tokens=16,
                                                           messages=[{"role": "user", "content": question}])
            ids[question] = raw.headers["x-costline-request-id"]
        with client.messages.stream(model="m", max_tokens=16, messages=[{"role": "user", "content": REFUSE}]) as s:
            s.get_final_message()
            ids["live refusal"] = s.response.headers["x-costline-request-id"]
        spans = w.exporter.get_finished_spans()
    lake_from_sdk_spans(spans, cfg)

    rows = dict((r[0], r[1:]) for r in query_lake(
        cfg, "SELECT request_id, tier, success, rejected_attempts, cost_usd FROM requests"))
    assert rows == {
        ids[PLAIN]: ("budget", True, None, pytest.approx(PLAIN_COST)),
        ids[REFUSE]: ("budget", False, "budget:refusal", pytest.approx(REFUSED_COST)),
        ids[CUT]: ("budget", True, None, pytest.approx(CUT_COST)),
        ids["live refusal"]: ("budget", False, "budget:refusal", pytest.approx(REFUSED_COST)),
    }
    # cost per successful request: all four paid for, two answers delivered
    (hour,) = query_lake(cfg, "SELECT tier, requests, successes, cost_usd, cost_per_success FROM tier_hourly")
    total = PLAIN_COST + 2 * REFUSED_COST + CUT_COST  # 0.000555
    assert hour == ("budget", 4, 2, pytest.approx(total), pytest.approx(total / 2))  # 0.0002775 a success
    assert query_lake(cfg, "SELECT tier, attempts, rejected, problems FROM rejections_hourly") == [
        ("budget", 4, 2, "refusal 2")]


@pytest.mark.parametrize(("finish_reasons", "error_type", "success"), [
    (("end_turn",), None, True),
    (("max_tokens",), None, True),  # a cut answer was delivered: a success, as behind the gateway
    (("refusal",), None, False),  # Anthropic
    (("content_filter",), None, False),  # OpenAI, Azure
    (("SAFETY",), None, False),  # Gemini, in its own upper case
    (("guardrail_intervened",), None, False),  # Amazon Bedrock
    (("end_turn",), "RateLimitError", False),
    # Anthropic paused a server tool's long turn: no answer yet; the app sends the turn back and that call, which
    # answers, is the success (two successes for one answer would halve its cost per success)
    (("pause_turn",), None, False),
], ids=["end_turn", "max_tokens", "refusal", "content_filter", "gemini-safety", "bedrock-guardrail", "error",
        "pause_turn"])
def test_a_call_of_another_instrumentation_the_model_declined_is_no_successful_request(
        tmp_path, plain_spans, finish_reasons, error_type, success) -> None:
    """A call no costline request span links (an app's own instrumentation) is one standalone request: no success when
    it failed or when its finish reasons say the model or the provider declined to answer; its tokens still cost."""
    provider, exporter = plain_spans
    with provider.get_tracer("opentelemetry.instrumentation.anthropic").start_as_current_span(f"chat {HAIKU}") as s:
        s.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.system": "anthropic",
                          "gen_ai.request.model": HAIKU, "gen_ai.response.model": HAIKU,
                          "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 5,
                          "gen_ai.response.finish_reasons": finish_reasons})
        if error_type:
            s.set_attribute("error.type", error_type)
    cfg = anthropic_tiers_config(tmp_path / "lake", (HAIKU, 1.0, 5.0), (SONNET, 3.0, 15.0))
    lake_from_sdk_spans(exporter.get_finished_spans(), cfg)
    assert query_lake(cfg, "SELECT standalone, success, cost_usd FROM requests") == [
        (True, success, pytest.approx(PLAIN_COST))]
