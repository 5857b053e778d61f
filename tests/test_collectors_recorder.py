"""Recorder spans and attributes, request-id stamping, content capture, setup_tracing."""

from __future__ import annotations

import json

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import costline.collectors as collectors
from costline import contract as c
from costline.config import CaptureConfig
from costline.collectors import Recorder, RequestStampingProcessor, setup_tracing



def by_name(exporter, name):
    return [s for s in exporter.get_finished_spans() if s.name == name]


def test_public_surface_is_pinned():
    assert set(collectors.__all__) == {
        "CallHandle", "CollectorError", "Forwarder", "KafkaForwarder", "KafkaSpanExporter", "KafkaUnavailable",
        "LookupHandle", "OtlpGrpcReceiver", "OtlpReceiver", "REQUEST_ID_CONTEXT_KEY", "ReceiverError", "Recorder", "RequestHandle",
        "RequestStampingProcessor", "capture_enabled", "current_request_id", "instrument_anthropic",
        "instrument_openai", "setup_tracing",
    }


def test_request_lookup_and_call_spans_follow_the_contract(spans):
    provider, exporter = spans
    rec = Recorder(provider, env={})
    with rec.request(task_type="faq", tenant="acme", subtype="billing", routed_tier="budget") as req:
        with req.cache_lookup(namespace="acme") as lk:
            lk.result(hit=False, similarity=0.71)
        with req.call(provider="anthropic", model="claude-haiku-4-5", tier="budget", cost_usd=0.002) as call:
            call.usage(input_tokens=1300, output_tokens=80, cache_read_tokens=200, cache_creation_tokens=100)
            call.response(model="claude-haiku-4-5-20251001", finish_reasons=["end_turn"], id="msg_1")
        req.accept()
    (request,) = by_name(exporter, c.SPAN_REQUEST)
    (lookup,) = by_name(exporter, c.SPAN_CACHE_LOOKUP)
    (call_span,) = by_name(exporter, "chat claude-haiku-4-5")
    rid = request.attributes[c.COSTLINE_REQUEST_ID]
    assert len(rid) == 32 and int(rid, 16) >= 0
    assert dict(request.attributes) == {
        c.COSTLINE_REQUEST_ID: rid, c.COSTLINE_TENANT: "acme", c.COSTLINE_TASK_TYPE: "faq",
        c.COSTLINE_SUBTYPE: "billing", c.COSTLINE_ROUTED_TIER: "budget", c.COSTLINE_TIER: "budget",
        c.COSTLINE_CACHE_HIT: False, c.COSTLINE_ATTEMPTS: 1, c.COSTLINE_ESCALATIONS: 0, c.COSTLINE_SUCCESS: True,
    }
    assert dict(lookup.attributes) == {
        c.COSTLINE_CACHE_NAMESPACE: "acme", c.COSTLINE_CACHE_HIT: False, c.COSTLINE_CACHE_SIMILARITY: 0.71,
        c.COSTLINE_REQUEST_ID: rid, c.COSTLINE_TENANT: "acme",
    }
    assert call_span.kind is SpanKind.CLIENT
    assert dict(call_span.attributes) == {
        c.GEN_AI_OPERATION_NAME: "chat", c.GEN_AI_PROVIDER_NAME: "anthropic",
        c.GEN_AI_REQUEST_MODEL: "claude-haiku-4-5", c.GEN_AI_RESPONSE_MODEL: "claude-haiku-4-5-20251001",
        c.GEN_AI_RESPONSE_FINISH_REASONS: ("end_turn",), c.GEN_AI_RESPONSE_ID: "msg_1",
        c.GEN_AI_USAGE_INPUT_TOKENS: 1300, c.GEN_AI_USAGE_OUTPUT_TOKENS: 80,
        c.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 200, c.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: 100,
        c.COSTLINE_TIER: "budget", c.COSTLINE_COST_USD: 0.002, c.COSTLINE_REQUEST_ID: rid,
        c.COSTLINE_TENANT: "acme",
    }
    for child in (lookup, call_span):
        assert child.parent.span_id == request.context.span_id
        assert child.context.trace_id == request.context.trace_id


@pytest.mark.parametrize(
    "steps, expected",
    [
        # (tier per call, ok?) ..., lookup hit, served_by, accept → tier, attempts, escalations, cache.hit, success
        pytest.param(dict(calls=[], hit=True, accept=True), ("cache", 0, 0, True, True), id="cache-hit"),
        pytest.param(dict(calls=[("budget", True)], hit=False, accept=True), ("budget", 1, 0, False, True),
                     id="one-call"),
        pytest.param(dict(calls=[("budget", True), ("mid", True)], hit=False, accept=False),
                     ("mid", 2, 1, False, False), id="escalated-no-verdict"),
        pytest.param(dict(calls=[("budget", True), ("budget", True), ("mid", False)], hit=False, accept=True),
                     ("budget", 3, 1, False, True), id="last-successful-call-wins"),
        pytest.param(dict(calls=[("student", True), ("budget", True), ("student", True)], hit=True, accept=True),
                     ("student", 3, 2, True, True), id="escalations-count-tier-changes"),
        pytest.param(dict(calls=[("budget", True)], hit=False, accept=True, served_by="upper"),
                     ("upper", 1, 0, False, True), id="served-by-explicit"),
    ],
)
def test_request_summary_attributes(spans, steps, expected):
    provider, exporter = spans
    rec = Recorder(provider, env={})
    with rec.request(request_id="r1") as req:
        if steps["hit"]:
            with req.cache_lookup() as lk:
                lk.result(hit=True, similarity=0.97)
        for tier, ok in steps["calls"]:
            try:
                with req.call("anthropic", "m", tier=tier):
                    if not ok:
                        raise TimeoutError("slow")
            except TimeoutError:
                pass
        if "served_by" in steps:
            req.served_by(steps["served_by"])
        if steps["accept"]:
            req.accept()
    (request,) = by_name(exporter, c.SPAN_REQUEST)
    a = request.attributes
    got = (a.get(c.COSTLINE_TIER), a[c.COSTLINE_ATTEMPTS], a[c.COSTLINE_ESCALATIONS], a[c.COSTLINE_CACHE_HIT],
           a[c.COSTLINE_SUCCESS])
    assert got == expected
    assert a[c.COSTLINE_REQUEST_ID] == "r1"


def test_reject_sets_success_false_with_reason_event(spans):
    provider, exporter = spans
    with Recorder(provider, env={}).request() as req:
        req.reject("judge score 0.3")
    (request,) = by_name(exporter, c.SPAN_REQUEST)
    assert request.attributes[c.COSTLINE_SUCCESS] is False
    assert [(e.name, dict(e.attributes)) for e in request.events] == [("costline.reject", {"reason": "judge score 0.3"})]


@pytest.mark.parametrize("rejected, expected", [
    ([], None),
    ([("student", "validator")], "student:validator"),
    ([("student", "output_format"), ("budget", "RateLimitError")], "student:output_format,budget:RateLimitError"),
    ([("student", None)], "student:unknown"),
    ([("mid", "a,b")], "mid:a;b"),  # a comma in a problem cannot split the list
    ([("t", "p")] * 12, ",".join(["t:p"] * 8)),  # at most MAX_REJECTED_ATTEMPTS
])
def test_rejected_attempts_are_listed_on_the_request_span(spans, rejected, expected):
    provider, exporter = spans
    with Recorder(provider, env={}).request() as req:
        for tier, problem in rejected:
            req.attempt_rejected(tier, problem)
    (request,) = by_name(exporter, c.SPAN_REQUEST)
    assert request.attributes.get(c.COSTLINE_REJECTED_ATTEMPTS) == expected


def test_exception_in_call_sets_error_type_and_is_reraised(spans):
    provider, exporter = spans
    rec = Recorder(provider, env={})
    with pytest.raises(ConnectionError):
        with rec.request() as req:
            with req.call("anthropic", "claude-haiku-4-5"):
                raise ConnectionError("boom")
    (call_span,) = by_name(exporter, "chat claude-haiku-4-5")
    (request,) = by_name(exporter, c.SPAN_REQUEST)
    assert call_span.attributes[c.ERROR_TYPE] == "ConnectionError"
    assert call_span.status.status_code is StatusCode.ERROR
    assert request.attributes[c.ERROR_TYPE] == "ConnectionError"
    assert request.attributes[c.COSTLINE_SUCCESS] is False
    assert request.attributes[c.COSTLINE_ATTEMPTS] == 1


@pytest.mark.parametrize(
    "call_kwargs, usage",
    [
        pytest.param(dict(tier=42), None, id="tier-not-a-string"),
        pytest.param(dict(cost_usd="cheap"), None, id="cost-not-a-number"),
        pytest.param({}, dict(input_tokens="many", output_tokens=-1), id="bad-token-counts"),
        pytest.param({}, dict(input_tokens=object(), output_tokens=None), id="weird-objects"),
    ],
)
def test_bad_attribute_values_are_dropped_never_raised(spans, call_kwargs, usage, caplog):
    provider, exporter = spans
    rec = Recorder(provider, env={})
    with rec.request(tenant=123, task_type=["x"]) as req:  # type: ignore[arg-type]
        with req.call("anthropic", "m", **call_kwargs) as call:
            if usage:
                call.usage(**usage)
            call.response(model=5, finish_reasons="stop")  # type: ignore[arg-type]
        req.served_by(None)  # type: ignore[arg-type]
        req.accept()
    (request,) = by_name(exporter, c.SPAN_REQUEST)
    (call_span,) = by_name(exporter, "chat m")
    assert c.COSTLINE_TENANT not in request.attributes and c.COSTLINE_TASK_TYPE not in request.attributes
    assert request.attributes[c.COSTLINE_SUCCESS] is True
    for key in (c.COSTLINE_TIER, c.COSTLINE_COST_USD, c.GEN_AI_RESPONSE_MODEL, c.GEN_AI_RESPONSE_FINISH_REASONS):
        assert key not in call_span.attributes
    assert "dropped attribute" in caplog.text


def test_standalone_call_without_request_has_no_request_id(spans):
    provider, exporter = spans
    with Recorder(provider, env={}).call("vllm", "student-v1", tier="student") as call:
        call.usage(10, 5)
    (span,) = exporter.get_finished_spans()
    assert span.name == "chat student-v1" and span.parent is None
    assert c.COSTLINE_REQUEST_ID not in span.attributes


def test_stamping_links_foreign_spans_inside_a_request(spans):
    provider, exporter = spans
    foreign = provider.get_tracer("opentelemetry.instrumentation.anthropic")
    rec = Recorder(provider, env={})
    with foreign.start_as_current_span("outside"):
        pass
    with rec.request(request_id="req-42"):
        with foreign.start_as_current_span("chat claude-sonnet-4-6", kind=SpanKind.CLIENT):
            with foreign.start_as_current_span("POST /v1/messages"):
                pass
    with foreign.start_as_current_span("after"):
        pass
    got = {s.name: s.attributes.get(c.COSTLINE_REQUEST_ID) for s in exporter.get_finished_spans()}
    assert got == {"outside": None, "chat claude-sonnet-4-6": "req-42", "POST /v1/messages": "req-42",
                   "after": None, c.SPAN_REQUEST: "req-42"}


def test_stamping_keeps_an_existing_request_id(spans):
    provider, exporter = spans
    with Recorder(provider, env={}).request(request_id="outer"):
        provider.get_tracer("x").start_span("own", attributes={c.COSTLINE_REQUEST_ID: "mine"}).end()
    (own,) = by_name(exporter, "own")
    assert own.attributes[c.COSTLINE_REQUEST_ID] == "mine"


def test_stamping_processor_never_raises():
    class Broken:
        attributes = None

        def set_attribute(self, *a):
            raise RuntimeError("broken span")

    from opentelemetry import context

    from costline.collectors.stamping import REQUEST_ID_CONTEXT_KEY

    ctx = context.set_value(REQUEST_ID_CONTEXT_KEY, "r")
    RequestStampingProcessor().on_start(Broken(), ctx)  # type: ignore[arg-type]


MESSAGES_IN = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "my card 4111-1111 failed"}]
MESSAGES_OUT = [{"role": "assistant", "content": "sorry about card 4111-1111", "finish_reason": "end_turn"}]


@pytest.mark.parametrize(
    "capture, env, recorded",
    [
        pytest.param(None, {}, False, id="off-by-default"),
        pytest.param(CaptureConfig(message_content=True), {}, True, id="on-by-config"),
        pytest.param(None, {c.ENV_CAPTURE_MESSAGE_CONTENT: "true"}, True, id="on-by-env"),
        pytest.param(None, {c.ENV_CAPTURE_MESSAGE_CONTENT: "false"}, False, id="env-false"),
    ],
)
def test_content_capture_switch(spans, capture, env, recorded):
    provider, exporter = spans
    rec = Recorder(provider, capture=capture, env=env)
    with rec.call("anthropic", "m") as call:
        call.content(MESSAGES_IN, MESSAGES_OUT)
    (span,) = exporter.get_finished_spans()
    assert (c.GEN_AI_INPUT_MESSAGES in span.attributes) is recorded
    assert (c.GEN_AI_OUTPUT_MESSAGES in span.attributes) is recorded


def test_content_is_semconv_shaped_redacted_and_truncated(spans):
    provider, exporter = spans
    rec = Recorder(provider, capture=CaptureConfig(message_content=True, max_chars=12), env={},
                   redact=lambda text: text.replace("4111-1111", "[CARD]"))
    with rec.call("anthropic", "m") as call:
        call.content(MESSAGES_IN, MESSAGES_OUT)
    (span,) = exporter.get_finished_spans()
    assert json.loads(span.attributes[c.GEN_AI_INPUT_MESSAGES]) == [
        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
        {"role": "user", "parts": [{"type": "text", "content": "my card [CAR"}]},
    ]
    assert json.loads(span.attributes[c.GEN_AI_OUTPUT_MESSAGES]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "sorry about "}], "finish_reason": "end_turn"},
    ]


def test_a_failing_redact_hook_drops_content_not_the_call(spans):
    provider, exporter = spans

    def redact(text):
        raise ValueError("nope")

    rec = Recorder(provider, capture=CaptureConfig(message_content=True), env={}, redact=redact)
    with rec.call("anthropic", "m") as call:
        call.content(MESSAGES_IN, MESSAGES_OUT)
        call.usage(3, 4)
    (span,) = exporter.get_finished_spans()
    assert c.GEN_AI_INPUT_MESSAGES not in span.attributes
    assert span.attributes[c.GEN_AI_USAGE_OUTPUT_TOKENS] == 4


def test_setup_tracing_stamps_and_exports_with_service_name():
    exporter = InMemorySpanExporter()
    provider = setup_tracing("faq-bot", exporter=exporter, set_global=False)
    try:
        rec = Recorder(provider, env={})
        with rec.request(request_id="r9"):
            provider.get_tracer("foreign").start_span("inner").end()
        assert provider.force_flush(5_000)
        got = exporter.get_finished_spans()
        assert {s.name for s in got} == {"inner", c.SPAN_REQUEST}
        assert all(s.resource.attributes["service.name"] == "faq-bot" for s in got)
        assert all(s.attributes[c.COSTLINE_REQUEST_ID] == "r9" for s in got)
        assert trace.get_tracer_provider() is not provider
    finally:
        provider.shutdown()


def test_a_request_whose_every_attempt_failed_is_filed_under_the_last_tier_tried() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from costline import contract
    from costline.collectors import Recorder

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    recorder = Recorder(provider)
    with recorder.request(task_type="faq", tenant="acme") as req:
        for tier, model in (("budget", "claude-haiku-4-5"), ("mid", "claude-sonnet-4-6")):
            with req.call(provider="anthropic", model=model, tier=tier) as call:
                call.error("OverloadedError")
        req.reject("every tier was overloaded")
    (span,) = [s for s in exporter.get_finished_spans() if s.name == contract.SPAN_REQUEST]
    assert span.attributes[contract.COSTLINE_TIER] == "mid"
    assert span.attributes[contract.COSTLINE_SUCCESS] is False
    assert span.attributes[contract.COSTLINE_ATTEMPTS] == 2


@pytest.mark.parametrize("usage, expected", [
    # (input, output, cache read, cache write) -> (input attr, output attr, cache read attr, incomplete flag)
    ((10**30, 80, 0, 0), (None, 80, 0, True)),       # a broken counter: left out, not an exporter ERROR per call
    ((1300, 2**64, 0, 0), (1300, None, 0, True)),
    ((1300, 80, 10**12, 0), (1300, 80, 0, True)),
    ((100_000_000, 80, 0, 0), (100_000_000, 80, 0, None)),  # the bound itself is a count
    ((1300, 80, 200, 0), (1300, 80, 200, None)),
])
def test_absurd_token_counts_are_left_out_and_flagged(spans, usage, expected):
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    provider, exporter = spans
    rec = Recorder(provider, env={})
    with rec.request(task_type="faq", tenant="acme") as req:
        with req.call("anthropic", "claude-haiku-4-5", tier="budget") as call:
            call.usage(*usage)
    (span,) = by_name(exporter, "chat claude-haiku-4-5")
    a = span.attributes
    assert (a.get(c.GEN_AI_USAGE_INPUT_TOKENS), a.get(c.GEN_AI_USAGE_OUTPUT_TOKENS),
            a.get(c.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS), a.get(c.COSTLINE_USAGE_INCOMPLETE)) == expected
    encode_spans([span])  # int64 attributes only: the OTLP encoder takes it
