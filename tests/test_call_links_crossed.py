"""The call_links view's ``crossed`` step: one response reported in two traces is one call only where it can be.

``crossed`` merges spans of one provider family and response id, from different traces and instrumentations, whose
times overlap: two instrumentations of one call with no span around them (OpenLLMetry starts its span of an OpenAI
Responses call only once the call returned, so with OpenInference beside it and no app span, one call is in two
traces). A response id is only as unique as the server that made it, though: a self-hosted OpenAI-compatible server
(Ollama's ``/v1``: ``"chatcmpl-" + rand.Intn(999)``) repeats short ids, and two tenants' apps calling it at once made
two calls with one id. Each is inside its own request span, of its own tenant and service: they must stay two calls,
each in its own request, never one tenant's call and cost counted in the other's request.

The figures are by hand from the per-million prices below.
"""

from __future__ import annotations

import pytest

from costline.config import DEFAULT_MODELS, Config, LakeConfig, ModelPrice, PricingConfig
from costline.otlp import ExportTraceServiceRequest
from figures_lake import lake_from_messages, query_lake

T0 = 1_780_000_000 * 10**9  # ns
SEC = 10**9
MODEL = "llama3.1:8b"
#: USD per million tokens, set here: a call of 100,000 in + 10,000 out costs 0.01 + 0.002 = $0.012
IN_PER_MTOK, OUT_PER_MTOK = 0.10, 0.20


def _config(tmp_path) -> Config:
    return Config(lake=LakeConfig(path=tmp_path / "lake"), pricing=PricingConfig(models=DEFAULT_MODELS + (
        ModelPrice(MODEL, "budget", provider="openai", input_per_mtok=IN_PER_MTOK, output_per_mtok=OUT_PER_MTOK),)))


def _span(req: ExportTraceServiceRequest, *, name: str, trace: bytes, span_id: bytes, parent: bytes = b"",
          start: int, end: int, attrs: dict, service: str, scope: str) -> None:
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", service
    ss = rs.scope_spans.add()
    ss.scope.name = scope
    sp = ss.spans.add()
    sp.name, sp.trace_id, sp.span_id, sp.parent_span_id = name, trace, span_id, parent
    sp.start_time_unix_nano, sp.end_time_unix_nano = start, end
    for k, v in attrs.items():
        a = sp.attributes.add()
        a.key = k
        if isinstance(v, bool):
            a.value.bool_value = v
        elif isinstance(v, int):
            a.value.int_value = v
        else:
            a.value.string_value = v


def _call(req, n: int, *, tenant: str | None, service: str, scope: str, tokens: tuple[int, int], start: int,
          in_request: bool) -> None:
    """One model call of response id ``chatcmpl-417`` in trace ``n`` (its own), inside a request span or not."""
    trace, call_id, request_id = bytes([n]) * 16, bytes([n, 1]) * 4, bytes([n, 2]) * 4
    if in_request:
        _span(req, name="costline.request", trace=trace, span_id=request_id, start=start, end=start + 3 * SEC,
              service=service, scope="app", attrs={"costline.request.id": f"r{n}", "costline.tenant": tenant,
                                                   "costline.success": True})
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": MODEL,
             "gen_ai.usage.input_tokens": tokens[0], "gen_ai.usage.output_tokens": tokens[1],
             "gen_ai.response.id": "chatcmpl-417"}
    if tenant is not None and not in_request:
        attrs["costline.tenant"] = tenant
    _span(req, name=f"chat {MODEL}", trace=trace, span_id=call_id, parent=request_id if in_request else b"",
          start=start + SEC // 10, end=start + 2 * SEC, service=service, scope=scope, attrs=attrs)


def test_two_tenants_calls_with_one_short_response_id_stay_two_calls_in_their_own_requests(tmp_path):
    """The reviewer's case: tenantA's app (OpenLLMetry's openai instrumentation) and tenantB's (openai-v2), each
    call inside its own request span, overlapping in time, the server's id the same. Before the fix tenantA's call
    was merged into tenantB's: its request showed cost 0 and no call."""
    cfg = _config(tmp_path)
    req = ExportTraceServiceRequest()
    _call(req, 1, tenant="tenantA", service="appA", scope="opentelemetry.instrumentation.openai",
          tokens=(100_000, 10_000), start=T0, in_request=True)
    _call(req, 2, tenant="tenantB", service="appB", scope="opentelemetry.instrumentation.openai_v2",
          tokens=(200_000, 30_000), start=T0 + SEC // 2, in_request=True)
    lake_from_messages([req.SerializeToString()], cfg)

    got = query_lake(cfg, "SELECT tenant, calls, input_tokens, cost_usd FROM requests ORDER BY tenant")
    # tenantA: 100,000 x 0.10 / 1e6 + 10,000 x 0.20 / 1e6 = 0.010 + 0.002; tenantB: 0.020 + 0.006
    assert got == [("tenantA", 1, 100_000, pytest.approx(0.012, abs=1e-12)),
                   ("tenantB", 1, 200_000, pytest.approx(0.026, abs=1e-12))]
    assert query_lake(cfg, "SELECT tenant, count(*), sum(cost_usd) FROM calls GROUP BY 1 ORDER BY 1") == [
        ("tenantA", 1, pytest.approx(0.012, abs=1e-12)), ("tenantB", 1, pytest.approx(0.026, abs=1e-12))]


# (tenant, service) of the two spans, whether each is in a request, and how many calls the view should keep
@pytest.mark.parametrize("first, second, in_request, calls", [
    # each inside its own request (one tenant, one service): two requests, so two calls
    (("acme", "app"), ("acme", "app"), True, 2),
    # no request span, but each call says its tenant, and they differ: two calls
    (("tenantA", "app"), ("tenantB", "app"), False, 2),
    # no request span, no tenant, two services: two processes, two calls
    ((None, "appA"), (None, "appB"), False, 2),
    # the case the step is for: one process, two instrumentations, no span around them: one call
    ((None, "app"), (None, "app"), False, 1),
    # one tenant said by one span only: still one call
    (("acme", "app"), (None, "app"), False, 1),
])
def test_crossed_merges_only_what_can_be_one_call(tmp_path, first, second, in_request, calls):
    cfg = _config(tmp_path)
    req = ExportTraceServiceRequest()
    # two instrumentations' spans of 100,000 in + 10,000 out each ($0.012), overlapping in time
    _call(req, 1, tenant=first[0], service=first[1], scope="opentelemetry.instrumentation.openai",
          tokens=(100_000, 10_000), start=T0, in_request=in_request)
    _call(req, 2, tenant=second[0], service=second[1], scope="openinference.instrumentation.openai",
          tokens=(100_000, 10_000), start=T0 + SEC // 2, in_request=in_request)
    lake_from_messages([req.SerializeToString()], cfg)

    got = query_lake(cfg, "SELECT count(*), sum(cost_usd) FROM calls")
    assert got == [(calls, pytest.approx(calls * 0.012, abs=1e-12))]
