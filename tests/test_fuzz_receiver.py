"""Property-based fuzzing of the OTLP/HTTP receiver and the processor's decode/flatten path.

The receiver never answers 5xx (except 503 back-pressure) and never crashes; what it forwards
decodes and fits a Kafka message; the processor raises nothing but OtlpDecodeError on any message.
Plus the hostile inputs of issue 12 as a regression corpus.
"""

from __future__ import annotations

import gzip
import http.client

import pytest
from fuzzing import FUZZ, maybe_gzip, otlp_requests, request_bodies
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector_rig import RecordingForwarder as Forwarder
from costline.collectors import OtlpReceiver
from costline.collectors.receiver import decode_with_rejections, pack_traces
from costline.config import CollectorConfig, PricingConfig
from costline.otlp import OtlpDecodeError
from costline.pricing import PricingTable
from costline.processors.decode import decode_message, flatten_into, flatten_message

ACCEPTABLE = {200, 400, 413, 415, 503}


@pytest.fixture(scope="module")
def receiver():
    fwd = Forwarder()
    r = OtlpReceiver(CollectorConfig(max_message_bytes=16 * 1024), fwd, host="127.0.0.1", port=0)
    r.start()
    yield r, fwd
    r.shutdown()


def post(port: int, body: bytes, headers: dict[str, str]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/v1/traces", body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


@FUZZ
@given(request_bodies())
def test_receiver_answers_every_body_without_a_server_error(receiver, case) -> None:
    r, fwd = receiver
    ctype, body, gz = case
    headers = {"Content-Type": ctype, **({"Content-Encoding": "gzip"} if gz else {})}
    fwd.messages.clear()
    status = post(r.port, maybe_gzip(body, gz), headers)
    assert status in ACCEPTABLE, (status, body[:200])
    for _, value in fwd.messages:
        assert len(value) <= 16 * 1024
        ExportTraceServiceRequest.FromString(value)


@FUZZ
@given(st.binary(max_size=400), st.booleans())
def test_decode_raises_only_decode_errors(body, is_json) -> None:
    try:
        decode_with_rejections(body, is_json)
    except OtlpDecodeError:
        pass


@FUZZ
@given(otlp_requests(), st.integers(1024, 64 * 1024))
def test_pack_traces_keeps_every_span_and_every_message_fits(req, limit) -> None:
    messages, refused, _ = pack_traces(req, limit)
    spans = [s.span_id for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    got = []
    for _, value in messages:
        assert len(value) <= limit
        got += [s.span_id for rs in ExportTraceServiceRequest.FromString(value).resource_spans
                for ss in rs.scope_spans for s in ss.spans]
    assert len(got) + refused == len(spans)
    assert sorted(got) == sorted(spans) or refused  # nothing lost unless refused (and then counted)


PRICING = PricingTable(PricingConfig())


@FUZZ
@given(st.one_of(otlp_requests().map(lambda r: r.SerializeToString()), st.binary(max_size=300)),
       st.sampled_from([None, [("content-type", b"application/x-protobuf")], [("content-type", b"application/json")]]))
def test_processor_decode_and_flatten_raise_only_decode_errors(value, headers) -> None:
    pricing = PRICING
    try:
        req = decode_message(value, headers)
    except OtlpDecodeError:
        return
    try:
        whole = flatten_message(req, pricing)
    except OtlpDecodeError:
        whole = None
    requests: list = []
    calls: list = []
    lookups: list = []
    try:
        counts = flatten_into(req, pricing, 0, 0, requests, calls, lookups, [])
    except OtlpDecodeError:
        # all or nothing: the processor's form refuses the same message and keeps no part of it
        assert whole is None and requests == calls == lookups == []
        return
    # the processor's one-pass form yields the same rows and counts as flatten_message
    assert whole is not None and counts == (whole.spans, whole.ignored)
    assert sorted(map(repr, requests + calls + lookups)) == sorted(map(repr, whole.rows))


# -- the regression corpus: issue 12's hostile inputs -------------------------------------------------
CORPUS = [
    ("application/json", b'{"resourceSpans": 5}', 400),
    ("application/json", b'{"resourceSpans": [5]}', 400),
    # a span with a wrongly typed id is dropped and counted (partial success), the rest is kept
    ("application/json", b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": 5}]}]}]}', 200),
    ("application/json", b"[" * 100_000 + b"]" * 100_000, 400),
    ("application/json", b'{"a":' * 50_000 + b"1" + b"}" * 50_000, 400),
    ("application/x-protobuf", b"\x0a\xff\xff\xff\xff\x0f", 400),
    ("application/json", b"\xff\xfe", 400),
]


@pytest.mark.parametrize(("ctype", "body", "want"), CORPUS)
@pytest.mark.parametrize("gz", [False, True])
def test_hostile_corpus(receiver, ctype, body, want, gz) -> None:
    r, _ = receiver
    headers = {"Content-Type": ctype, **({"Content-Encoding": "gzip"} if gz else {})}
    assert post(r.port, gzip.compress(body) if gz else body, headers) == want
