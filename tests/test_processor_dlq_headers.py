"""What a message bound for the DLQ carries in its headers must never stop the partition (no broker: the real
Processor.handle with a DLQ stand-in that checks records as kafka-python's ``KafkaProducer.send()`` does).

Kafka allows a null header value (the Java client writes ``new RecordHeader(k, null)``; kafka-python's consumer reads
it as ``(key, None)``), but kafka-python's producer takes ``(str, bytes)`` headers only. Dead-lettering such a message
raised TypeError inside ``send()``, which became a DeadLetterError ("check the topic exists and Kafka is up"): the
processor stopped at that offset on every start. Now a null value goes as ``b""`` (its header named in
``costline.dlq.null_headers``), and a record ``send()`` still refuses is dead-lettered with costline's headers only,
or at worst as a pointer to the original: a problem of one record, never "the DLQ is unavailable".
"""

from __future__ import annotations

import json

import pytest

from costline import contract as c
from costline.config import Config, LakeConfig
from costline.lake import open_lake
from costline.processors.errors import DeadLetterError
from costline.processors.processor import HEADER_DLQ_HEADERS_DROPPED, HEADER_DLQ_NULL_HEADERS, Processor
from costline.sim.synth import synthetic_traffic

NOT_OTLP = b"\x99not otlp at all"


class _Done:
    def get(self, timeout=None):
        return None


class _StrictDLQ:
    """A DLQ producer stand-in: refuses what kafka-python 3's ``KafkaProducer.send()`` refuses before sending
    (headers not ``(str, bytes)`` tuples: TypeError; a key that is not bytes: TypeError), plus what ``refuse``
    says; records the rest as (key, value, headers list)."""

    def __init__(self, refuse=None) -> None:
        self.sent: list[tuple] = []
        self.refuse = refuse or (lambda key, value, headers: None)

    def send(self, topic, key=None, value=None, headers=None):
        headers = [] if headers is None else headers
        if not isinstance(headers, list):
            raise TypeError("headers must be list-type")
        if not all(isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
                   and isinstance(item[1], bytes) for item in headers):
            raise TypeError("All headers items must be (str, bytes) tuples")
        if key is not None and not isinstance(key, (bytes, bytearray, memoryview)):
            raise TypeError(f"Unsupported type for serialized key: {type(key)}")
        for item in headers:
            item[0].encode("utf-8")  # kafka-python sizes the record with h_key.encode("utf-8")
        self.refuse(key, value, headers)
        self.sent.append((key, value, list(headers)))
        return _Done()

    def flush(self, timeout=None):
        pass

    def close(self, timeout=None):
        pass


def _proc(tmp_path, dlq) -> Processor:
    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"))
    p = Processor(cfg, producer_factory=lambda **kw: dlq)
    p.lake.init()
    p._epochs[0] = p.lake.claim(cfg.kafka.topic, 0)
    return p


def _valid_value(seed: int = 5) -> bytes:
    (t,) = synthetic_traffic(1, seed=seed)
    return t.request.SerializeToString()


def _trace_ids(p: Processor) -> int:
    con = open_lake(p.config)
    try:
        return con.execute("SELECT count(DISTINCT trace_id) FROM requests_raw").fetchone()[0]
    finally:
        con.close()


def test_a_null_header_value_is_dead_lettered_as_empty_and_named_and_the_partition_goes_on(tmp_path):
    dlq = _StrictDLQ()
    p = _proc(tmp_path, dlq)
    p.handle(0, 0, b"t0", _valid_value(1), None, 0.0)
    p.handle(0, 1, None, NOT_OTLP, [("b3", None), ("traceparent", b"00-x"), ("x-empty", None), ("b3", None)], 0.0)
    p.handle(0, 2, b"t2", _valid_value(2), None, 0.0)
    p.flush_partition(0)

    ((key, value, headers),) = dlq.sent
    assert (key, value) == (None, NOT_OTLP)
    assert headers[:4] == [("b3", b""), ("traceparent", b"00-x"), ("x-empty", b""), ("b3", b"")]
    named = dict(headers)
    assert named[HEADER_DLQ_NULL_HEADERS] == b"b3,x-empty"  # each name once, in order
    assert named[c.HEADER_DLQ_SOURCE] == f"{p.topic}/0/1".encode()
    assert named[c.HEADER_DLQ_REASON]
    assert HEADER_DLQ_HEADERS_DROPPED not in named
    assert p.stats.dlq == 1
    assert p.lake.recover(p.topic, 0)[0] == 3  # the manifest covers the dead-lettered offset: nothing stops there
    assert _trace_ids(p) == 2


def test_a_message_without_null_headers_gets_no_null_headers_header(tmp_path):
    dlq = _StrictDLQ()
    p = _proc(tmp_path, dlq)
    p.handle(0, 0, b"k", NOT_OTLP, [("traceparent", b"00-x")], 0.0)
    ((_, _, headers),) = dlq.sent
    assert [k for k, _ in headers] == ["traceparent", c.HEADER_DLQ_REASON, c.HEADER_DLQ_SOURCE]


def test_spans_left_out_of_a_message_with_null_headers_reach_the_dlq(tmp_path):
    """The other road to the DLQ (_with_content_type: the spans left out of a message whose others land): its
    content-type is replaced, a null one included, and the null values of the rest are sent as b""."""
    dlq = _StrictDLQ()
    p = _proc(tmp_path, dlq)

    def json_span(n: int, **extra) -> dict:
        s = {"traceId": f"{n:02x}" * 16, "spanId": f"{n:02x}" * 7 + "01", "name": c.SPAN_REQUEST,
             "startTimeUnixNano": "1780000000000000000", "endTimeUnixNano": "1780000001000000000",
             "attributes": [{"key": c.COSTLINE_TENANT, "value": {"stringValue": "t"}},
                            {"key": c.COSTLINE_TIER, "value": {"stringValue": "cache"}},
                            {"key": c.COSTLINE_SUCCESS, "value": {"boolValue": True}}]}
        s.update(extra)
        return s

    value = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [
        json_span(3), json_span(6, startTimeUnixNano="-1"), json_span(8, traceId="zz" * 16)]}]}]}).encode()
    p.handle(0, 0, b"k", value, [("Content-Type", b"application/json"), ("b3", None), ("CONTENT-TYPE", None)], 0.0)
    p.flush_partition(0)

    assert len(dlq.sent) == 2  # the OTLP/JSON span that does not parse, and the span with a bad trace id
    types = set()
    for _, _, headers in dlq.sent:
        assert ("b3", b"") in headers
        assert not any(k.lower() == "content-type" and k != c.HEADER_CONTENT_TYPE for k, _ in headers)
        named = dict(headers)
        assert named[HEADER_DLQ_NULL_HEADERS] == b"b3"
        types.add(named[c.HEADER_CONTENT_TYPE])
    assert types == {c.CONTENT_TYPE_JSON.encode(), c.CONTENT_TYPE_PROTOBUF.encode()}
    assert _trace_ids(p) == 1


def test_header_keys_are_made_sendable_and_costline_headers_are_not_forwarded(tmp_path):
    """A key that is not a str (a consumer other than kafka-python's) is decoded with U+FFFD; one that does not
    encode to UTF-8 gets U+FFFD too; headers named like costline's own DLQ headers are not passed on (a sender
    must not forge why, or from where, a record was dead-lettered)."""
    dlq = _StrictDLQ()
    p = _proc(tmp_path, dlq)
    p.handle(0, 7, b"k", NOT_OTLP, [
        (b"x-\xff-raw", b"1"), (bytearray(b"x-ba"), bytearray(b"2")), ("x-\udc80-surrogate", memoryview(b"3")),
        (c.HEADER_DLQ_VALUE_DROPPED, b"forged"), (c.HEADER_DLQ_SOURCE, b"elsewhere/0/0"),
        (HEADER_DLQ_NULL_HEADERS, b"forged"), (HEADER_DLQ_HEADERS_DROPPED, b"forged"), (c.HEADER_DLQ_REASON, None),
    ], 0.0)
    ((_, _, headers),) = dlq.sent
    assert headers == [
        ("x-\ufffd-raw", b"1"), ("x-ba", b"2"), ("x-\ufffd-surrogate", b"3"),
        (c.HEADER_DLQ_REASON, headers[3][1]), (c.HEADER_DLQ_SOURCE, f"{p.topic}/0/7".encode()),
    ]
    assert p.stats.dlq == 1


def test_a_record_the_producer_refuses_is_sent_with_costline_headers_only(tmp_path):
    """send() refusing a record (TypeError / ValueError, raised before anything goes out) is a problem of that
    record: it goes again with costline's own headers and a note why; the partition moves on."""
    def refuse(key, value, headers):
        if any(k == "x-refused" for k, _ in headers):
            raise ValueError("header refused")

    dlq = _StrictDLQ(refuse)
    p = _proc(tmp_path, dlq)
    p.handle(0, 0, b"k", NOT_OTLP, [("x-refused", b"1"), ("x-other", None)], 0.0)
    p.handle(0, 1, b"t1", _valid_value(3), None, 0.0)
    p.flush_partition(0)
    ((key, value, headers),) = dlq.sent
    assert (key, value) == (b"k", NOT_OTLP)
    assert [k for k, _ in headers] == [c.HEADER_DLQ_REASON, c.HEADER_DLQ_SOURCE, HEADER_DLQ_HEADERS_DROPPED]
    assert dict(headers)[HEADER_DLQ_HEADERS_DROPPED] == b"ValueError: header refused"
    assert p.stats.dlq == 1
    assert p.lake.recover(p.topic, 0)[0] == 2
    assert _trace_ids(p) == 1


def test_a_record_refused_even_bare_leaves_a_pointer_and_the_partition_goes_on(tmp_path, caplog):
    dlq = _StrictDLQ()
    p = _proc(tmp_path, dlq)
    p.handle(0, 4, object(), NOT_OTLP, [("x-a", b"1")], 0.0)  # a key no producer can send
    ((key, value, headers),) = dlq.sent
    assert (key, value) == (None, b"")
    named = dict(headers)
    assert named[c.HEADER_DLQ_SOURCE] == f"{p.topic}/0/4".encode()
    assert b"the original is at costline.dlq.source" in named[c.HEADER_DLQ_VALUE_DROPPED]
    assert b"Unsupported type for serialized key" in named[c.HEADER_DLQ_VALUE_DROPPED]
    assert p.stats.dlq == 1
    assert any(r.levelname == "ERROR" and "skipped" in r.getMessage() for r in caplog.records)


def test_a_dlq_that_fails_is_still_a_stop(tmp_path):
    """What is not a problem of the record (the broker's error, a timeout) still stops the partition: nothing past
    an offset that is not durable anywhere may be committed."""
    from kafka.errors import KafkaTimeoutError

    class _Down(_StrictDLQ):
        def send(self, topic, key=None, value=None, headers=None):
            super().send(topic, key, value, headers)

            class _Fails:
                def get(self, timeout=None):
                    raise KafkaTimeoutError("Failed to update metadata after 60.0 secs.")
            return _Fails()

    p = _proc(tmp_path, _Down())
    with pytest.raises(DeadLetterError, match="Kafka is up"):
        p.handle(0, 0, b"k", NOT_OTLP, [("b3", None)], 0.0)
    assert p.stats.dlq == 0
