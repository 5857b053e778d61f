"""costline.otlp.decode_json_salvaging: OTLP/JSON where one span never costs its neighbours.

What the OTLP receiver's ``decode_with_rejections`` does with its own helpers, as one shared function: lone
surrogates read as U+FFFD; a span that does not decode on its own left out, counted, named, and handed back as
OTLP/JSON as it came (for a DLQ); what is no OTLP trace request still refused.
"""

from __future__ import annotations

import json

import pytest

from costline.otlp import JsonSalvage, OtlpDecodeError, decode_json, decode_json_salvaging

T0 = 1_780_000_000 * 10**9


def _span(n: int, **extra) -> dict:
    s = {"traceId": f"{n:02x}" * 16, "spanId": f"{n:02x}" * 8, "name": f"span-{n}",
         "startTimeUnixNano": str(T0), "endTimeUnixNano": str(T0 + 1)}
    s.update(extra)
    return s


def _doc(*scopes: list[dict]) -> bytes:
    return json.dumps({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
        "scopeSpans": [{"scope": {"name": f"scope-{i}"}, "spans": spans} for i, spans in enumerate(scopes)]}]}).encode()


def _names(req) -> list[str]:
    return [s.name for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]


def _attr(key: str, value) -> dict:
    return {"attributes": [{"key": key, "value": value}]}


def test_a_valid_document_decodes_as_decode_json_does():
    body = _doc([_span(1), _span(2)])
    got = decode_json_salvaging(body)
    assert got == JsonSalvage(decode_json(body)) and (got.dropped, got.reason, got.dropped_json) == (0, "", b"")


@pytest.mark.parametrize("bad", [
    _attr("n", {"intValue": 1e30}), _attr("n", {"intValue": "1e30"}), _attr("n", {"intValue": str(2**64)}),
    _attr("n", {"intValue": 1.5}), _attr("n", {"intValue": True}), _attr("n", {"doubleValue": 1e400}),
    _attr("b", {"boolValue": "true"}), _attr("s", {"stringValue": 5}),
    _attr("a", {"arrayValue": {"values": [{"stringValue": "stop"}, 7]}}),
    {"endTimeUnixNano": 1e30}, {"endTimeUnixNano": "-1"}, {"endTimeUnixNano": str(2**64)},
    {"traceId": 5},
])
def test_a_span_protobuf_cannot_hold_is_left_out_alone(bad):
    body = _doc([_span(1), _span(2, **bad), _span(3)])
    with pytest.raises(OtlpDecodeError):
        decode_json(body)  # what the processor used to do: the whole message refused
    got = decode_json_salvaging(body)
    assert _names(got.request) == ["span-1", "span-3"]
    assert got.dropped == 1 and got.reason.startswith("span 'span-2': ")
    dropped = json.loads(got.dropped_json)
    assert dropped == {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
        "scopeSpans": [{"scope": {"name": "scope-0"}, "spans": [json.loads(json.dumps(_span(2, **bad)))]}]}]}


def test_lone_surrogates_are_read_as_u_fffd_and_cost_nothing():
    body = _doc([_span(1, name="cut \ud83d"), _span(2, **_attr("t", {"stringValue": "x\udc00y"}))])
    got = decode_json_salvaging(body)
    assert got.dropped == 0
    assert _names(got.request) == ["cut \ufffd", "span-2"]
    assert got.request.resource_spans[0].scope_spans[0].spans[1].attributes[0].value.string_value == "x\ufffdy"


def test_spans_left_out_keep_their_scopes_and_what_they_came_as():
    body = _doc([_span(1), _span(2, name="half \ud83d", startTimeUnixNano="-1")],
                [_span(3, endTimeUnixNano="-2"), _span(4)])
    got = decode_json_salvaging(body)
    assert _names(got.request) == ["span-1", "span-4"] and got.dropped == 2
    assert b"\\ud83d" in got.dropped_json  # the escape as sent, hex ids as sent
    dropped = json.loads(got.dropped_json)["resourceSpans"][0]["scopeSpans"]
    assert [(ss["scope"]["name"], [s["spanId"] for s in ss["spans"]]) for ss in dropped] == [
        ("scope-0", ["02" * 8]), ("scope-1", ["03" * 8])]


def test_ids_are_checked_span_by_span_when_asked():
    body = _doc([_span(1), _span(2, traceId="zz" * 16), _span(3, spanId="00" * 8), _span(4, spanId="0102")])
    got = decode_json_salvaging(body)
    assert _names(got.request) == ["span-1"] and got.dropped == 3
    unchecked = decode_json_salvaging(body, check_ids=False)  # the processor checks ids while flattening
    assert unchecked.dropped == 0 and len(_names(unchecked.request)) == 4


@pytest.mark.parametrize("body", [
    b"{not json", b"[]", b'{"resourceSpans": 5}', b'{"resourceSpans": [5]}',
    b'{"resourceSpans": [{"resource": {"attributes": [{"key": "k", "value": {"intValue": 1.5}}]}}]}',
    b'{"resourceSpans": ' + b"[" * 60_000,
])
def test_what_is_no_trace_request_is_still_refused(body):
    with pytest.raises(OtlpDecodeError):
        decode_json_salvaging(body)
