"""OTLP/JSON whose trace and span ids are base64, as protobuf's own ``json_format.MessageToJson`` writes bytes.

The OTLP spec says ids in OTLP/JSON are hex; hand-rolled exporters that serialise an ``ExportTraceServiceRequest``
with ``MessageToJson`` write them as base64 instead, and every such span was refused as having invalid ids. An id
in exactly that form (a trace id of 24 base64 characters decoding to 16 bytes, a span id of 12 decoding to 8: the
padding is never hex, so nothing reads both ways) is now read; anything else is refused as before.
"""

from __future__ import annotations

import base64
import json

import pytest
from google.protobuf import json_format

from costline import contract as c
from costline.config import Config, LakeConfig
from costline.otlp import ExportTraceServiceRequest, OtlpDecodeError, decode_json, decode_request
from costline.processors.decode import decode_message
from costline.sim.synth import export_request, span

from processor_rig import claimed_processor, flushed_rows

T0 = 1_780_000_000 * 10**9  # ns
# ids whose base64 holds "+" and "/" (and so a URL-safe twin with "-" and "_")
TRACE = bytes.fromhex("fbff0102fbff0304fbff0506fbff0708")
SPAN = bytes.fromhex("fbef0a0bfbef0c0d")
PARENT = bytes.fromhex("0a0b0c0d0e0f1011")
LINKED_TRACE = bytes.fromhex("11" * 16)
LINKED_SPAN = bytes.fromhex("22" * 8)
JSON_HEADERS = [("content-type", b"application/json")]


def _request_json(tenant: str = "t1") -> tuple[ExportTraceServiceRequest, str]:
    """A real request and its ``MessageToJson`` (base64 ids, as a hand-rolled exporter writes it)."""
    s = span(c.SPAN_REQUEST, trace_id=TRACE, span_id=SPAN, parent_span_id=PARENT, start_ns=T0, end_ns=T0 + 10**9,
             attributes={c.COSTLINE_TENANT: tenant, c.COSTLINE_TIER: "cache", c.COSTLINE_SUCCESS: True,
                         c.COSTLINE_CACHE_HIT: True})
    link = s.links.add()
    link.trace_id, link.span_id = LINKED_TRACE, LINKED_SPAN
    req = export_request([s])
    return req, json_format.MessageToJson(req)


def _ids(req: ExportTraceServiceRequest) -> list[tuple[bytes, ...]]:
    return [(s.trace_id, s.span_id, s.parent_span_id, s.links[0].trace_id, s.links[0].span_id)
            for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]


def _with(text: str, **ids: str) -> bytes:
    doc = json.loads(text)
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0].update(ids)
    return json.dumps(doc).encode()


def test_message_to_json_ids_are_base64_and_decode_to_the_request():
    req, text = _request_json()
    span_doc = json.loads(text)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    # what MessageToJson wrote (computed independently with the standard library)
    assert span_doc["traceId"] == base64.b64encode(TRACE).decode() and len(span_doc["traceId"]) == 24
    assert span_doc["spanId"] == base64.b64encode(SPAN).decode() and len(span_doc["spanId"]) == 12
    want = [(TRACE, SPAN, PARENT, LINKED_TRACE, LINKED_SPAN)]
    assert _ids(decode_json(text.encode())) == want
    assert _ids(decode_request(text.encode(), "application/json")) == want
    assert decode_json(text.encode()) == req
    # the URL-safe alphabet (protobuf's JSON parser reads it too)
    urlsafe = _with(text, traceId=base64.urlsafe_b64encode(TRACE).decode(),
                    spanId=base64.urlsafe_b64encode(SPAN).decode())
    assert b"-" in urlsafe and b"_" in urlsafe
    assert _ids(decode_json(urlsafe)) == want
    # hex, the spec's form, still reads as it did
    assert _ids(decode_json(_with(text, traceId=TRACE.hex(), spanId=SPAN.hex(), parentSpanId=PARENT.hex()))) == want


def test_only_the_exact_base64_form_is_read_anything_else_is_refused():
    _req, text = _request_json()
    assert _ids(decode_json(text.encode()))  # the exact form reads (it was refused before) ...
    trace_b64, span_b64 = base64.b64encode(TRACE).decode(), base64.b64encode(SPAN).decode()
    refused = {  # ... and nothing near it does
        "trace id unpadded": {"traceId": trace_b64.rstrip("=")},
        "span id unpadded": {"spanId": span_b64.rstrip("=")},
        "a span id's base64 as the trace id": {"traceId": span_b64},
        "a trace id's base64 as the span id": {"spanId": trace_b64},
        "20 bytes of base64 as the trace id": {"traceId": base64.b64encode(TRACE + b"\x01" * 4).decode()},
        "stray bits in the padding": {"traceId": trace_b64[:21] + "B=="},
        "not base64": {"spanId": "!!!!!!!!!!!="},
        "a 24-character hex-looking trace id (12 bytes)": {"traceId": "ab" * 12},
        "parent span id of 9 bytes": {"parentSpanId": base64.b64encode(b"\x01" * 9).decode()},
    }
    for why, ids in refused.items():
        with pytest.raises(OtlpDecodeError):
            decode_json(_with(text, **ids))
            pytest.fail(why)


@pytest.fixture
def proc(tmp_path):
    yield claimed_processor(Config(lake=LakeConfig(path=tmp_path / "lake")))


@pytest.mark.parametrize("headers", [JSON_HEADERS, []], ids=["content-type", "sniffed"])
def test_the_processor_lands_a_message_to_json_span_with_its_ids(proc, headers):
    _req, text = _request_json("t1")
    assert _ids(decode_message(text.encode(), headers, dropped=[])) == [
        (TRACE, SPAN, PARENT, LINKED_TRACE, LINKED_SPAN)]
    # a neighbour whose span id is base64 of the wrong length is still refused, alone
    _req2, text2 = _request_json("t2")
    bad = json.loads(_with(text2, spanId=base64.b64encode(b"\x07" * 9).decode()))
    doc = json.loads(text)
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"].append(bad["resourceSpans"][0]["scopeSpans"][0]["spans"][0])
    proc.handle(0, 0, TRACE.hex().encode(), json.dumps(doc).encode(), headers, 0.0)
    rows = flushed_rows(proc, "SELECT tenant, trace_id, span_id FROM requests_raw")
    assert rows == [("t1", TRACE.hex(), SPAN.hex())]
    ((dlq_headers, _dead),) = proc.dlq.sent
    assert dlq_headers[c.HEADER_DLQ_REASON].startswith(b"1 of the message's 2 spans left out")
    assert (proc.stats.spans, proc.stats.invalid_spans) == (2, 1)


def test_costline_collect_keeps_a_message_to_json_span_and_still_refuses_a_bad_id():
    """The receiver checks ids before decoding: the same exact base64 form passes there too, a zero or malformed
    id is still refused alone."""
    from costline.collectors.receiver import decode_with_rejections

    req, text = _request_json()
    got, rejected, why = decode_with_rejections(text.encode(), True)
    assert (rejected, _ids(got)) == (0, [(TRACE, SPAN, PARENT, LINKED_TRACE, LINKED_SPAN)])
    for bad in (base64.b64encode(bytes(16)).decode(), base64.b64encode(TRACE).decode().rstrip("=")):
        got, rejected, why = decode_with_rejections(_with(text, traceId=bad), True)
        assert (rejected, _ids(got)) == (1, []) and "id" in why
