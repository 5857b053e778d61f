"""The views' figures on awkward data, against values computed by hand (prices written out here).

Each test writes a small lake with the rows an instrumentation would have produced and compares a view's
figure with what an analyst counts from the same spans; nothing below prices with costline's code.
"""

from __future__ import annotations

import pytest

from test_figures_views import H, MIN, call, commit, config, q, req


@pytest.mark.parametrize("sdk_response_id", [None, "msg_1"])
def test_a_call_whose_kept_span_is_the_sdks_inside_costlines_stays_in_its_request(tmp_path, sdk_response_id):
    """costline's call span (parent: the request span) recorded no usage; the SDK's own span inside it counted
    the tokens (so it is the one kept) but carries no request id (no stamping processor). One request, one
    call: the call is the request's, never a standalone request of its own."""
    cfg = config(tmp_path)
    commit(cfg, [
        req("s1", H + 5 * MIN, trace="t1"),
        call("own", "t1", H + MIN, parent="s1", tier="budget", model="claude-haiku-4-5", cost=0.0,
             scope="costline.collectors"),
        call("sdk", "t1", H + MIN, parent="own", tier="budget", model="claude-haiku-4-5", cost=0.002, inp=1000,
             out=200, response_id=sdk_response_id, scope="com.anthropic.sdk.python", duration_ms=90.0),
    ])
    hand = (1000 * 1.0 + 200 * 5.0) / 1e6  # Haiku at $1 / $5 per million tokens
    assert q(cfg, "SELECT request_id, tenant, tier, calls, cost_usd, standalone FROM requests") == [
        ("s1", "acme", "budget", 1, pytest.approx(hand), False)]
    assert q(cfg, "SELECT span_id, request_id, standalone FROM calls") == [("sdk", "s1", False)]
    assert q(cfg, "SELECT tier, requests, successes, cost_usd FROM tier_hourly") == [
        ("budget", 1, 1, pytest.approx(hand))]


def test_parallel_calls_kept_as_the_sdks_spans_each_count_once_in_their_request(tmp_path):
    """Two parallel Haiku calls, each reported by costline (no usage) with the SDK's span inside it (the tokens):
    two calls, both the request's, and no standalone request."""
    cfg = config(tmp_path)
    haiku = {"tier": "budget", "model": "claude-haiku-4-5"}
    commit(cfg, [
        req("s2", H + 6 * MIN, trace="t2"),
        call("p1", "t2", H + 2 * MIN, parent="s2", cost=0.0, scope="costline.collectors", **haiku),
        call("p2", "t2", H + 2 * MIN, parent="s2", cost=0.0, scope="costline.collectors", **haiku),
        call("q1", "t2", H + 2 * MIN, parent="p1", cost=0.001, inp=500, out=100, scope="com.anthropic.sdk.python",
             duration_ms=90.0, **haiku),
        call("q2", "t2", H + 2 * MIN, parent="p2", cost=0.001, inp=500, out=100, scope="com.anthropic.sdk.python",
             duration_ms=90.0, **haiku),
    ])
    one = (500 * 1.0 + 100 * 5.0) / 1e6
    assert q(cfg, "SELECT request_id, calls, cost_usd, standalone FROM requests") == [
        ("s2", 2, pytest.approx(2 * one), False)]
    assert q(cfg, "SELECT span_id, request_id FROM calls ORDER BY span_id") == [("q1", "s2"), ("q2", "s2")]
