"""No message can stop the processor: a corpus of hostile spans in both encodings (OTLP protobuf
and OTLP JSON), mixed with valid traffic, through the real processor on a real broker.

Whatever a hostile message becomes (rows with nulled fields, or a DLQ entry with its reason) is
the flattening rules' business; what this file checks is the loop: it never dies, every valid
span lands exactly once, every message is accounted for, and the lake's committed
offsets reach the end of every partition.
"""

from __future__ import annotations

import base64
import json
import random

import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from costline import contract as c
from costline.config import Config
from costline.lake import Lake, open_lake
from costline.otlp import ExportTraceServiceRequest
from costline.processors.processor import Processor
from costline.sim.synth import export_request, span, synthetic_traffic

pytestmark = pytest.mark.kafka

JSON_HEADERS = [(c.HEADER_CONTENT_TYPE, c.CONTENT_TYPE_JSON.encode())]
PROTO_HEADERS = [(c.HEADER_CONTENT_TYPE, c.CONTENT_TYPE_PROTOBUF.encode())]
#: Attributes costline reads (numbers, flags, names): where a hostile value does harm.
KEYS = [
    c.GEN_AI_USAGE_INPUT_TOKENS, c.GEN_AI_USAGE_OUTPUT_TOKENS, c.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
    c.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, c.COSTLINE_COST_USD, c.COSTLINE_ATTEMPTS, c.COSTLINE_ESCALATIONS,
    c.COSTLINE_CACHE_SIMILARITY, c.COSTLINE_CACHE_HIT, c.COSTLINE_SUCCESS, c.COSTLINE_BATCH, c.COSTLINE_TIER,
    c.COSTLINE_ROUTED_TIER, c.COSTLINE_REQUEST_ID, c.COSTLINE_TENANT, c.GEN_AI_REQUEST_MODEL,
    c.GEN_AI_RESPONSE_MODEL, c.GEN_AI_PROVIDER_NAME, c.GEN_AI_SYSTEM, c.GEN_AI_RESPONSE_FINISH_REASONS,
    c.GEN_AI_OPERATION_NAME, c.ERROR_TYPE, c.GEN_AI_INPUT_MESSAGES,
]
NAMES = [c.SPAN_REQUEST, c.SPAN_CACHE_LOOKUP, "chat claude-haiku-4-5", "chat student-qwen-7b", "other"]
INT64 = (-(2**63), 2**63 - 1)
UINT64_MAX = 2**64 - 1

# -- hostile values -------------------------------------------------------------------------
hostile_scalar = st.one_of(
    st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e30, -1.0, 1e308, -0.0]),
    st.sampled_from(["1e30", "NaN", "inf", "-5", "", "0x10", "12abc", "\x00", "é" * 3]),
    st.sampled_from([-1, -(2**63), 2**63 - 1, 0, 10**15]),
    st.integers(*INT64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.binary(max_size=16),
    st.text(max_size=40),
)
hostile_value = st.one_of(hostile_scalar, st.lists(hostile_scalar, max_size=3),
                          st.dictionaries(st.sampled_from(["a", "b"]), hostile_scalar, max_size=2))
hostile_time = st.one_of(st.sampled_from([0, 1, UINT64_MAX, 2**63, 10**19]), st.integers(0, UINT64_MAX))
span_id_bytes = st.one_of(st.binary(min_size=8, max_size=8), st.sampled_from([b"", b"\0" * 8, b"\1" * 3]))
trace_id_bytes = st.one_of(st.binary(min_size=16, max_size=16), st.sampled_from([b"", b"\0" * 16, b"\1" * 5]))


@st.composite
def hostile_span(draw):
    name = draw(st.sampled_from(NAMES))
    attrs = {c.GEN_AI_REQUEST_MODEL: "claude-haiku-4-5", c.GEN_AI_PROVIDER_NAME: "anthropic"} \
        if name.startswith("chat") else {}
    for key in draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=6, unique=True)):
        attrs[key] = draw(hostile_value)
    return span(name, trace_id=draw(trace_id_bytes), span_id=draw(span_id_bytes),
                parent_span_id=draw(st.sampled_from([b"", b"\7" * 8, b"\1" * 2])),
                start_ns=draw(hostile_time), end_ns=draw(hostile_time), attributes=attrs)


hostile_proto = st.lists(hostile_span(), min_size=1, max_size=3).map(
    lambda spans: export_request(spans).SerializeToString())

# OTLP JSON breaks in ways protobuf cannot: out-of-range numbers, wrong JSON types, bad ids.
json_any_value = st.one_of(
    st.fixed_dictionaries({"intValue": st.sampled_from(["1e30", 1e30, "99999999999999999999999", "NaN", -1,
                                                         "abc", None, [], 2**70, 1.5])}),
    st.fixed_dictionaries({"doubleValue": st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "x",
                                                            -1, 1e30, None, {}])}),
    st.fixed_dictionaries({"stringValue": st.sampled_from([5, None, "1e30", "NaN", [], "\ud7ff"])}),
    st.fixed_dictionaries({"boolValue": st.sampled_from(["yes", 1, None, "true"])}),
    st.fixed_dictionaries({"arrayValue": st.sampled_from([{"values": "x"}, {"values": [{"intValue": "1e30"}]},
                                                           None, 3])}),
    st.just({}), st.just(None), st.just("plain"), st.integers(), st.floats(allow_nan=False),
)
json_time = st.sampled_from(["0", "-1", "1e30", "18446744073709551615", "18446744073709551616", 1e30, -5,
                             None, "", "abc", "1700000000000000000"])
json_id = st.sampled_from(["", "zz" * 8, "00" * 8, "0102030405060708", "ab", 12, None, "0" * 33])


@st.composite
def hostile_json(draw):
    spans = []
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(NAMES))
        attrs = [{"key": k, "value": draw(json_any_value)}
                 for k in draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=5, unique=True))]
        if name.startswith("chat"):
            attrs.append({"key": c.GEN_AI_REQUEST_MODEL, "value": {"stringValue": "claude-haiku-4-5"}})
        spans.append({"traceId": draw(st.sampled_from(["0102030405060708090a0b0c0d0e0f10", "00" * 16]) | json_id),
                      "spanId": draw(json_id | st.just("0a0b0c0d0e0f0102")), "name": name,
                      "startTimeUnixNano": draw(json_time), "endTimeUnixNano": draw(json_time),
                      "attributes": attrs})
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).encode()


def fixed_hostile() -> list[tuple[bytes, list]]:
    """The cases named in the issue, always present whatever Hypothesis draws."""
    tid, t = b"\x42" * 16, 1_790_000_000_000_000_000

    def call(**attrs) -> bytes:
        base = {c.GEN_AI_REQUEST_MODEL: "claude-haiku-4-5", c.GEN_AI_PROVIDER_NAME: "anthropic",
                c.GEN_AI_USAGE_INPUT_TOKENS: 10, c.GEN_AI_USAGE_OUTPUT_TOKENS: 5}
        base.update(attrs)
        sid = random.Random(str(sorted(attrs.items(), key=str))).randbytes(8)
        return export_request([span("chat x", trace_id=tid, span_id=sid, start_ns=t, end_ns=t + 1,
                                    attributes=base)]).SerializeToString()

    valid = export_request([span(c.SPAN_REQUEST, trace_id=tid, span_id=b"\x43" * 8, start_ns=t, end_ns=t + 1)])
    deep = b'{"resourceSpans": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    return [
        (call(**{c.GEN_AI_USAGE_INPUT_TOKENS: float("nan")}), []),
        (call(**{c.GEN_AI_USAGE_INPUT_TOKENS: float("inf")}), []),
        (call(**{c.GEN_AI_USAGE_OUTPUT_TOKENS: "1e30"}), []),
        (call(**{c.GEN_AI_USAGE_INPUT_TOKENS: -7}), []),
        (call(**{c.GEN_AI_USAGE_INPUT_TOKENS: 2**63 - 1, c.GEN_AI_USAGE_OUTPUT_TOKENS: 2**63 - 1}), []),
        (call(**{c.COSTLINE_COST_USD: float("nan")}), []),
        (call(**{c.COSTLINE_COST_USD: -3.5}), []),
        (call(**{c.GEN_AI_USAGE_INPUT_TOKENS: ["a", 1]}), []),
        (call(**{c.GEN_AI_REQUEST_MODEL: 42}), []),
        (export_request([span("chat y", trace_id=tid, span_id=b"\x44" * 8, start_ns=0, end_ns=0, attributes={
            c.GEN_AI_REQUEST_MODEL: "claude-haiku-4-5"})]).SerializeToString(), []),
        (export_request([span("chat z", trace_id=tid, span_id=b"\x45" * 8, start_ns=UINT64_MAX, end_ns=UINT64_MAX,
                              attributes={c.GEN_AI_REQUEST_MODEL: "claude-haiku-4-5"})]).SerializeToString(), []),
        (valid.SerializeToString()[:-3], []),  # truncated protobuf
        (b"\x0a\xff\xff\xff\xff\x0f", []),  # a length prefix far past the end
        (random.Random(5).randbytes(300), []),
        (b"", []),
        (b"", JSON_HEADERS),
        (b"{}", JSON_HEADERS),
        (b"[]", JSON_HEADERS),
        (b"null", []),
        (deep, JSON_HEADERS),  # nesting deeper than the JSON parser's recursion limit
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "01", "spanId": 3}]}]}]}', JSON_HEADERS),
        (valid.SerializeToString(), [(c.HEADER_CONTENT_TYPE, b"application/x-made-up")]),
        (b"\xff\xfe{", JSON_HEADERS),
    ]


def to_otlp_json(req: ExportTraceServiceRequest) -> bytes:
    """OTLP/JSON of a request (hex ids, as the Collector writes it)."""
    doc = json_format.MessageToDict(req)
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for s in ss.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if s.get(key):
                        s[key] = base64.b64decode(s[key]).hex()
    return json.dumps(doc).encode()


def span_ids(req: ExportTraceServiceRequest) -> set[tuple[str, str]]:
    return {(s.trace_id.hex(), s.span_id.hex()) for rs in req.resource_spans for ss in rs.scope_spans
            for s in ss.spans}


@settings(max_examples=1, deadline=None, database=None, derandomize=True,
          phases=(Phase.explicit, Phase.generate), suppress_health_check=list(HealthCheck))
@given(drawn_proto=st.lists(hostile_proto, min_size=60, max_size=60),
       drawn_json=st.lists(hostile_json(), min_size=60, max_size=60))
def test_hostile_corpus_never_stops_the_processor(kafka_config: Config, drawn_proto, drawn_json):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    cfg = kafka_config.replace(processor={"batch_max_spans": 300, "flush_interval_s": 0.3})
    traces = list(synthetic_traffic(240, seed=31))
    valid: list[tuple[bytes, list]] = []
    expected: set[tuple[str, str]] = set()
    for i, t in enumerate(traces):
        expected |= span_ids(t.request)
        if i % 2:
            valid.append((to_otlp_json(t.request), JSON_HEADERS if i % 4 == 1 else []))  # sniffed or declared
        else:
            valid.append((t.request.SerializeToString(), PROTO_HEADERS if i % 4 == 0 else []))
    hostile = fixed_hostile() + [(v, []) for v in drawn_proto] \
        + [(v, JSON_HEADERS if i % 2 else []) for i, v in enumerate(drawn_json)]
    messages = [(True, v, h) for v, h in valid] + [(False, v, h) for v, h in hostile]
    random.Random(3).shuffle(messages)
    prod = KafkaProducer(bootstrap_servers=cfg.kafka.bootstrap, acks="all", linger_ms=5,
                         max_request_size=4 * 1024 * 1024)
    for n, (_, value, headers) in enumerate(messages):
        prod.send(cfg.kafka.topic, key=str(n).encode(), value=value, headers=headers)
    prod.close()

    stats = Processor(cfg).run(until_idle=2.0)  # returns: nothing raised out of the loop

    assert stats.messages == len(messages)
    con = open_lake(cfg)
    landed: dict[tuple[str, str], int] = {}
    for table in ("requests_raw", "calls_raw", "lookups_raw"):
        for tid, sid, n in con.execute(f"SELECT trace_id, span_id, count(*) FROM {table} GROUP BY ALL").fetchall():
            landed[(tid, sid)] = landed.get((tid, sid), 0) + n
    missing = expected - set(landed)
    assert not missing, f"{len(missing)} valid spans did not land, e.g. {sorted(missing)[:3]}"
    assert all(landed[k] == 1 for k in expected), "a valid span landed twice"

    # offsets moved to the end of every partition, in the lake (the authority on where to resume)
    consumer = KafkaConsumer(bootstrap_servers=cfg.kafka.bootstrap, group_id=cfg.processor.group_id,
                             enable_auto_commit=False)
    tps = [TopicPartition(cfg.kafka.topic, p) for p in consumer.partitions_for_topic(cfg.kafka.topic)]
    ends = consumer.end_offsets(tps)
    lake = Lake(cfg.lake.path)
    for tp in tps:
        if ends[tp] == 0:
            continue
        manifest = lake.last_manifest(cfg.kafka.topic, tp.partition)
        assert manifest is not None and manifest.last_offset + 1 == ends[tp], tp
        # (the mirror of these offsets into Kafka's group is best effort, so it is not asserted here)
    consumer.close()

    # whatever went to the DLQ says why, and is one of the hostile messages
    dlq = KafkaConsumer(cfg.kafka.dlq_topic, bootstrap_servers=cfg.kafka.bootstrap,
                        auto_offset_reset="earliest", consumer_timeout_ms=3000)
    dead = list(dlq)
    dlq.close()
    assert len(dead) == stats.dlq
    hostile_values = {v for v, _ in hostile}
    for m in dead:
        reason = dict(m.headers)[c.HEADER_DLQ_REASON]
        assert reason
        if m.value not in hostile_values:  # the spans with malformed ids of a message whose others landed
            assert b"left out (the others are in the lake)" in reason
            left_out = ExportTraceServiceRequest.FromString(m.value)
            assert span_ids(left_out) and not span_ids(left_out) & expected
    assert stats.dlq >= 8  # undecodable ones at least: truncated, random, empty, bad JSON, ...
