"""costline.cost prices a call by the processor's rules, so that it adds up to the lake's cost_usd: a call whose
input count is missing or no count (null, NaN, negative, not whole, a broken counter) is unpriced and counted in
costline.calls.unpriced by reason, never priced as a free prompt; gen_ai.client.token.usage records only counts.

Expected dollars by hand from the docs' price table (README: Sonnet 4.6 $3 / $15 per million input / output tokens,
cache reads 0.1 x the input price); the lake's own reading of the same spans is checked against the same figures."""

from __future__ import annotations

import math

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costline.collectors import Recorder
from costline.collectors.metrics import CostlineMetrics
from costline.config import PricingConfig
from costline.otlp import encode_sdk_spans_by_trace
from costline.pricing import PricingTable
from costline.processors.decode import decode_message, flatten_message
from costline.processors.records import CallRow, MemoPricingTable

IN, OUT, READ = 3.0 / 1e6, 15.0 / 1e6, 0.30 / 1e6  # USD per token: Sonnet 4.6 ("mid")
NAN, INF = float("nan"), float("inf")
UNPRICED = "incomplete_usage"


def usage(i, o, **kw):
    return lambda call: call.usage(i, o, **kw)


def failed(i, o):
    def act(call):
        call.usage(i, o)
        call.error("APIError")
    return act


def cut_stream(i, o):
    """costline's wrapper's stream cut before its final event: failed, usage flagged incomplete."""
    def act(call):
        call.usage(i, o)
        call.streamed(0.2, usage_complete=False)
        call.error("IncompleteStreamError")
    return act


def explicit(usd, i=1000, o=1000):
    def act(call):
        call.usage(i, o)
        call.cost(usd)
    return act


def twice(call):
    call.usage(1000, 1000)
    call.usage(-5, 1000)  # no count: the span keeps the first input count


# (id, model, what the call reports, expected costline.cost USD, expected unpriced reason (None: priced))
CASES = [
    ("counted", "claude-sonnet-4-6", usage(1000, 1000), 1000 * IN + 1000 * OUT, None),
    ("input_null", "claude-sonnet-4-6", usage(None, 1000), 0.0, UNPRICED),
    ("input_broken_counter", "claude-sonnet-4-6", usage(10**12, 1000), 0.0, UNPRICED),
    ("input_negative", "claude-sonnet-4-6", usage(-5, 1000), 0.0, UNPRICED),
    ("input_nan", "claude-sonnet-4-6", usage(NAN, 1000), 0.0, UNPRICED),
    ("input_not_whole", "claude-sonnet-4-6", usage(1000.5, 1000), 0.0, UNPRICED),
    ("no_counts", "claude-sonnet-4-6", usage(None, None), 0.0, UNPRICED),
    ("no_usage_at_all", "claude-sonnet-4-6", lambda call: None, 0.0, UNPRICED),
    # the provider sent no output count: the Recorder flags the usage incomplete, the lake prices the input (a lower
    # bound), as a cut stream's
    ("output_null", "claude-sonnet-4-6", usage(1000, None), 1000 * IN, None),
    ("output_broken_counter", "claude-sonnet-4-6", usage(1000, 10**12), 1000 * IN, None),
    # an output that is no count: left out and the usage flagged incomplete, as a null one: the input priced
    ("output_negative", "claude-sonnet-4-6", usage(1000, -5), 1000 * IN, None),
    ("output_nan", "claude-sonnet-4-6", usage(1000, NAN), 1000 * IN, None),
    # a whole float is that count (JSON and arithmetic make them)
    ("input_whole_float", "claude-sonnet-4-6", usage(1000.0, 1000.0), 1000 * IN + 1000 * OUT, None),
    ("failed_input_null", "claude-sonnet-4-6", failed(None, 1000), 0.0, UNPRICED),
    # a failed call whose input is no count: flagged incomplete, unpriced (never a free prompt)
    ("failed_input_negative", "claude-sonnet-4-6", failed(-5, 1000), 0.0, UNPRICED),
    ("failed_input_nan", "claude-sonnet-4-6", failed(NAN, 1000), 0.0, UNPRICED),
    ("cut_stream_lower_bound", "claude-sonnet-4-6", cut_stream(1000, 1), 1000 * IN + 1 * OUT, None),
    ("cut_stream_no_input", "claude-sonnet-4-6", cut_stream(None, 1), 0.0, UNPRICED),
    ("explicit_cost_without_input", "claude-sonnet-4-6", explicit(0.5, i=None), 0.5, None),
    # an explicit price the processor drops (negative, not finite, over $100,000): priced from the table
    ("explicit_negative", "claude-sonnet-4-6", explicit(-1.0), 1000 * IN + 1000 * OUT, None),
    ("explicit_infinite", "claude-sonnet-4-6", explicit(INF), 1000 * IN + 1000 * OUT, None),
    ("explicit_absurd", "claude-sonnet-4-6", explicit(1e6), 1000 * IN + 1000 * OUT, None),
    # an input below its own cache reads is the API's fresh input: 100 fresh + 500 read
    ("input_excludes_cache", "claude-sonnet-4-6", usage(100, 10, cache_read_tokens=500),
     100 * IN + 500 * READ + 10 * OUT, None),
    ("second_usage_not_a_count", "claude-sonnet-4-6", twice, 1000 * IN + 1000 * OUT, None),
    ("unknown_model", "no-such-model-9", usage(1000, 1000), 0.0, "unknown_model"),
]


def points(reader: InMemoryMetricReader) -> dict[str, list]:
    out: dict[str, list] = {}
    data = reader.get_metrics_data()
    for rm in (data.resource_metrics if data else []):
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out.setdefault(m.name, []).extend(m.data.data_points)
    return out


def record(model, act, cost_usd=None):
    """One call through a Recorder with metrics: (metric points, the call's finished spans)."""
    reader = InMemoryMetricReader()
    metrics = CostlineMetrics(meter_provider=MeterProvider(metric_readers=[reader]),
                              pricing=PricingTable(PricingConfig()))
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    recorder = Recorder(provider, metrics=metrics, env={})
    with recorder.request(tenant="acme", task_type="faq") as req:
        with req.call(provider="anthropic", model=model, tier="mid", cost_usd=cost_usd) as call:
            act(call)
        req.accept()
    return points(reader), spans.get_finished_spans()


@pytest.mark.parametrize("model,act,cost,reason", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_cost_counter_prices_what_the_lake_prices(model, act, cost, reason):
    got, spans = record(model, act)
    assert sum(p.value for p in got.get("costline.cost", [])) == pytest.approx(cost, abs=1e-12)
    unpriced = [(dict(p.attributes), p.value) for p in got.get("costline.calls.unpriced", [])]
    if reason is None:
        assert unpriced == []
    else:
        assert unpriced == [({"gen_ai.provider.name": "anthropic", "gen_ai.request.model": model,
                              "costline.tier": "mid", "costline.reason": reason}, 1)]
    # the same figures are the lake's: the processor's cost_usd and pricing_status of the call's span
    rows = [row for _trace, message in encode_sdk_spans_by_trace(spans)
            for row in flatten_message(decode_message(message), MemoPricingTable(PricingConfig())).rows
            if isinstance(row, CallRow)]
    assert len(rows) == 1
    if reason is None:
        assert rows[0].cost_usd == pytest.approx(cost, abs=1e-12)
    else:
        assert (rows[0].cost_usd, rows[0].pricing_status) == (None, reason)


def test_an_explicit_nan_cost_is_no_cost_and_the_table_prices_the_call():
    got, _spans = record("claude-sonnet-4-6", usage(1000, 1000), cost_usd=NAN)
    assert sum(p.value for p in got["costline.cost"]) == pytest.approx(1000 * IN + 1000 * OUT)


def test_the_fast_mode_of_a_model_without_its_price_is_unpriced():
    def act(call):
        call.usage(1000, 1000)
        call.speed("fast")
    got, _spans = record("claude-sonnet-4-6", act)
    assert not got.get("costline.cost")
    assert [p.attributes["costline.reason"] for p in got["costline.calls.unpriced"]] == ["no_fast_price"]


def test_unpriced_calls_add_up_by_reason():
    reader = InMemoryMetricReader()
    metrics = CostlineMetrics(meter_provider=MeterProvider(metric_readers=[reader]),
                              pricing=PricingTable(PricingConfig()))
    recorder = Recorder(TracerProvider(), metrics=metrics, env={})
    with recorder.request(tenant="acme") as req:
        for i, o in ((None, 1000), (10**12, 1000), (-5, 1000), (1000, 1000)):
            with req.call(provider="anthropic", model="claude-sonnet-4-6", tier="mid") as call:
                call.usage(i, o)
    got = points(reader)
    assert sum(p.value for p in got["costline.cost"]) == pytest.approx(0.018)  # 1000 x $3 + 1000 x $15 per MTok
    assert [(p.attributes["costline.reason"], p.value) for p in got["costline.calls.unpriced"]] == [
        ("incomplete_usage", 3)]


@pytest.mark.parametrize("input_tokens", [10**12, -5, NAN, INF, 1000.5, True])
def test_token_histogram_records_no_count_that_is_none(input_tokens):
    """Fed directly (not through the Recorder, which leaves a broken counter out first): the histogram records token
    counts only, and the call is not priced from them."""
    reader = InMemoryMetricReader()
    metrics = CostlineMetrics(meter_provider=MeterProvider(metric_readers=[reader]),
                              pricing=PricingTable(PricingConfig()))
    obs = metrics.start_call(operation="chat", provider="anthropic", model="claude-sonnet-4-6", tier="mid")
    obs.usage(input_tokens, 1000)
    obs.end(None)
    got = points(reader)
    tokens = {p.attributes["gen_ai.token.type"]: (p.count, p.sum) for p in got["gen_ai.client.token.usage"]}
    assert tokens == {"output": (1, 1000)}
    assert not got.get("costline.cost")
    assert [(p.attributes["costline.reason"], p.value) for p in got["costline.calls.unpriced"]] == [
        ("incomplete_usage", 1)]
    assert all(math.isfinite(p.sum) for p in got["gen_ai.client.token.usage"])


def test_token_histogram_records_the_input_total_with_its_cache():
    got, _spans = record("claude-sonnet-4-6", usage(100, 10, cache_read_tokens=500))
    tokens = {p.attributes["gen_ai.token.type"]: p.sum for p in got["gen_ai.client.token.usage"]}
    assert tokens == {"input": 600, "output": 10}


def test_a_call_flagged_incomplete_later_is_unpriced_without_its_input():
    """The hook for a span flagged costline.usage.incomplete after its usage (a stream closed early): a failed call
    whose input was no count is then unpriced, as the lake leaves it."""
    reader = InMemoryMetricReader()
    metrics = CostlineMetrics(meter_provider=MeterProvider(metric_readers=[reader]),
                              pricing=PricingTable(PricingConfig()))
    obs = metrics.start_call(operation="chat", provider="anthropic", model="claude-sonnet-4-6", tier="mid")
    obs.usage(-5, 1000)
    obs.usage_incomplete()
    obs.end("IncompleteStreamError")
    got = points(reader)
    assert not got.get("costline.cost")
    assert [p.attributes["costline.reason"] for p in got["costline.calls.unpriced"]] == ["incomplete_usage"]


def test_the_reason_is_the_processors_name():
    from costline.collectors.metrics import INCOMPLETE_USAGE
    from costline.processors.records import INCOMPLETE_USAGE as LAKE_INCOMPLETE_USAGE

    assert INCOMPLETE_USAGE == LAKE_INCOMPLETE_USAGE == "incomplete_usage"
