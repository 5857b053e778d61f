"""One protobuf span that does not parse costs the processor only that span (no broker: the real Processor.handle
with a DLQ stand-in).

A Kafka message's value is an ``ExportTraceServiceRequest``; another producer than costline's collector (the OTel
Collector's kafka exporter) can write one holding a span with an attribute nested past protobuf's recursion limit
(a ``kvlistValue`` ~32+ levels deep). Protobuf refuses the whole request then, and the processor dead-lettered the
whole message: its valid neighbour spans never reached the lake. Now that span alone is left out, counted and
dead-lettered (its own bytes under its resource and scope), as an OTLP/JSON span that does not decode is.
"""

from __future__ import annotations

import pytest

from costline import contract as c
from costline.config import Config, LakeConfig
from costline.otlp import ExportTraceServiceRequest, OtlpDecodeError
from costline.processors.decode import decode_message
from costline.sim.synth import export_request, span

from processor_rig import claimed_processor, flushed_tenants as _tenants

T0 = 1_780_000_000 * 10**9  # ns
DEPTH = 40  # kvlistValue levels: past protobuf's depth limit inside a request (and alone)


def _request(n: int, tenant: str):
    return span(c.SPAN_REQUEST, trace_id=bytes([n]) * 16, span_id=bytes([n, 1]) * 4, start_ns=T0,
                end_ns=T0 + 10**9, attributes={c.COSTLINE_TENANT: tenant, c.COSTLINE_TIER: "cache",
                                               c.COSTLINE_SUCCESS: True, c.COSTLINE_CACHE_HIT: True})


def _nest(s, depth: int = DEPTH) -> None:
    """Give span ``s`` (in place: protobuf cannot copy it once too deep) a tool-arguments attribute of ``depth``
    nested kvlistValues (a sender's deep JSON as OTLP)."""
    value = s.attributes.add(key="tool.args").value
    for _ in range(depth):
        value = value.kvlist_value.values.add(key="k").value
    value.string_value = "leaf"


def _kafka_message(spans, deep: tuple[int, ...] = ()) -> tuple[bytes, bytes]:
    """(key, value) as the OTel Collector's kafka exporter writes them (key = the trace id as 32 hex chars), the
    spans at the indexes ``deep`` nested too deep."""
    req = export_request(spans)
    for i in deep:
        _nest(req.resource_spans[0].scope_spans[0].spans[i])
    return spans[0].trace_id.hex().encode(), req.SerializeToString()


@pytest.fixture
def proc(tmp_path):
    yield claimed_processor(Config(lake=LakeConfig(path=tmp_path / "lake")))


@pytest.mark.parametrize("headers", [[("content-type", c.CONTENT_TYPE_PROTOBUF.encode())], []],
                         ids=["content-type", "no-header-as-the-collector-writes"])
def test_a_span_nested_too_deep_is_dead_lettered_alone_and_its_neighbours_land(proc, headers):
    key, value = _kafka_message([_request(1, "t1"), _request(2, "deep"), _request(3, "t3")], deep=(1,))
    # the premise: protobuf itself refuses the message whole (so the processor dead-lettered all of it) ...
    with pytest.raises(Exception):
        ExportTraceServiceRequest.FromString(value)
    # ... and so does decode_message for a caller that cannot dead-letter a span (no ``dropped`` list)
    with pytest.raises(OtlpDecodeError):
        decode_message(value, headers)
    proc.handle(0, 0, key, value, headers, 0.0)
    assert _tenants(proc) == ["t1", "t3"]
    ((dlq_headers, dead),) = proc.dlq.sent
    assert dlq_headers[c.HEADER_CONTENT_TYPE] == c.CONTENT_TYPE_PROTOBUF.encode()
    reason = dlq_headers[c.HEADER_DLQ_REASON]
    assert reason.startswith(b"1 of the message's 3 spans left out (the others are in the lake)")
    assert b"'costline.request'" in reason and b"depth limit" in reason
    # only the deep span, its bytes as they came under its own resource and scope: built independently here
    assert dead == _kafka_message([_request(2, "deep")], deep=(0,))[1]
    assert (proc.stats.spans, proc.stats.invalid_spans, proc.stats.dlq) == (3, 1, 1)


def test_a_deep_span_and_a_bad_id_span_each_go_to_the_dlq(proc):
    zero_id = span(c.SPAN_REQUEST, trace_id=b"\x05" * 16, span_id=bytes(8), start_ns=T0, end_ns=T0 + 1)
    key, value = _kafka_message([_request(1, "t1"), _request(2, "deep"), zero_id, _request(3, "t3")], deep=(1,))
    proc.handle(0, 0, key, value, [], 0.0)
    assert _tenants(proc) == ["t1", "t3"]
    assert len(proc.dlq.sent) == 2
    for headers, _ in proc.dlq.sent:  # each names its own span, of the message's four
        assert headers[c.HEADER_CONTENT_TYPE] == c.CONTENT_TYPE_PROTOBUF.encode()
        assert headers[c.HEADER_DLQ_REASON].startswith(b"1 of the message's 4 spans left out")
    (deep_value,) = [v for h, v in proc.dlq.sent if b"depth limit" in h[c.HEADER_DLQ_REASON]]
    (bad_id_value,) = [v for h, v in proc.dlq.sent if b"invalid" in h[c.HEADER_DLQ_REASON]]
    assert deep_value == _kafka_message([_request(2, "deep")], deep=(0,))[1]
    bad_id = ExportTraceServiceRequest.FromString(bad_id_value)  # it parses: dead-lettered decoded
    assert [s.span_id for rs in bad_id.resource_spans for ss in rs.scope_spans for s in ss.spans] == [bytes(8)]
    assert (proc.stats.spans, proc.stats.invalid_spans, proc.stats.dlq) == (4, 2, 2)


def test_a_message_of_nothing_but_deep_spans_is_dead_lettered_whole_and_the_next_one_salvaged(proc):
    key, value = _kafka_message([_request(2, "deep2"), _request(4, "deep4")], deep=(0, 1))
    proc.handle(0, 0, key, value, [], 0.0)
    key2, value2 = _kafka_message([_request(5, "deep5"), _request(6, "t6")], deep=(0,))
    proc.handle(0, 1, key2, value2, [], 0.0)
    assert _tenants(proc) == ["t6"]
    ((headers, dead), (headers2, dead2)) = proc.dlq.sent
    assert dead == value and b"depth limit" in headers[c.HEADER_DLQ_REASON]  # the whole message, as it came
    assert headers2[c.HEADER_DLQ_REASON].startswith(b"1 of the message's 2 spans left out")
    assert dead2 == _kafka_message([_request(5, "deep5")], deep=(0,))[1]
    assert (proc.stats.spans, proc.stats.invalid_spans, proc.stats.dlq) == (2, 1, 2)
