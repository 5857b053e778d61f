"""The processor on a real broker: end to end, DLQ, kill -9 crashes, a two-instance rebalance."""

from __future__ import annotations

import collections
import datetime as dt
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import expected
import pytest

from costline import contract as c
from costline.config import Config
from costline.lake import open_lake
from costline.processors.processor import Processor
from costline.sim.synth import SyntheticTrace, export_request, span, synthetic_traffic

pytestmark = pytest.mark.kafka

HOUR_US = 3_600_000_000


#: USD per million tokens (input, output), written out here rather than read from costline's
#: pricing code, so that a pricing bug fails these tests. The dated Sonnet id is how synth names it.
PRICE_PER_MTOK = {
    "claude-haiku-4-5": (0.80, 4.0),
    "claude-sonnet-4-6-20260101": (3.0, 15.0),
    "claude-opus-4-8": (5.0, 25.0),
    "claude-fable-5": (10.0, 50.0),
}
TIER_OF_MODEL = {"claude-haiku-4-5": "budget", "claude-sonnet-4-6-20260101": "mid", "claude-opus-4-8": "upper",
                 "claude-fable-5": "frontier", "student-qwen-7b": "student"}
CACHE_READ_X, CACHE_WRITE_X, BATCH_X = 0.1, 1.25, 0.5  # of the input price; of the whole call
STUDENT_USD_PER_HOUR = 2.74  # the student's hosting, spread over the hour's student requests


def hand_priced(model: str, inp: int, out: int, read: int, write: int, batch: bool) -> tuple[str, float]:
    """(tier, USD) of one call by the rules in docs/sql.md, with the prices above; unknown model: $0."""
    tier = TIER_OF_MODEL.get(model, "unknown")
    if model not in PRICE_PER_MTOK:
        return tier, 0.0
    in_usd, out_usd = PRICE_PER_MTOK[model]
    usd = ((inp - read - write) * in_usd + read * in_usd * CACHE_READ_X + write * in_usd * CACHE_WRITE_X
           + out * out_usd) / 1e6
    return tier, usd * (BATCH_X if batch else 1.0)


def expected_tier_hourly(traces: list[SyntheticTrace], config: Config) -> dict[tuple[dt.datetime, str], tuple]:
    """(window, tier) → (requests, successes, cost_usd), computed in Python with hand-written prices,
    independently of costline's pricing code and SQL views."""
    assert config.pricing.student_usd_per_hour == STUDENT_USD_PER_HOUR
    out: dict[tuple[int, str], list] = collections.defaultdict(lambda: [0, 0, 0.0])
    answered: list[tuple[int, str, bool, float, bool]] = []
    student_ends: list[int] = []
    last_end = 0
    for t in traces:
        spans = [s for rs in t.request.resource_spans for ss in rs.scope_spans for s in ss.spans]
        attrs = {id(s): {kv.key: kv.value for kv in s.attributes} for s in spans}
        reqs = {s.span_id: s for s in spans if s.name == c.SPAN_REQUEST}
        by_rid = {attrs[id(s)][c.COSTLINE_REQUEST_ID].string_value: sid for sid, s in reqs.items()}
        cost = {sid: 0.0 for sid in reqs}
        hosted = {sid: False for sid in reqs}
        for s in spans:
            a = attrs[id(s)]
            if c.GEN_AI_REQUEST_MODEL not in a:
                continue
            tier, usd = hand_priced(
                a[c.GEN_AI_RESPONSE_MODEL].string_value,
                a[c.GEN_AI_USAGE_INPUT_TOKENS].int_value,
                a[c.GEN_AI_USAGE_OUTPUT_TOKENS].int_value,
                a[c.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS].int_value if c.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS in a else 0,
                a[c.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS].int_value
                if c.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS in a else 0,
                c.COSTLINE_BATCH in a and a[c.COSTLINE_BATCH].bool_value,
            )
            rid = a[c.COSTLINE_REQUEST_ID].string_value if c.COSTLINE_REQUEST_ID in a else None
            owner = by_rid.get(rid) if rid else (s.parent_span_id if s.parent_span_id in reqs else None)
            last_end = max(last_end, s.end_time_unix_nano // 1000)
            if tier == c.TIER_STUDENT:
                student_ends.append(s.end_time_unix_nano // 1000)
            if owner is not None:
                cost[owner] += usd
                hosted[owner] = hosted[owner] or tier == c.TIER_STUDENT
            else:  # standalone
                answered.append((s.end_time_unix_nano // 1000, tier, c.ERROR_TYPE not in a, usd,
                                 tier == c.TIER_STUDENT))
        for sid, s in reqs.items():
            a = attrs[id(s)]
            answered.append((s.end_time_unix_nano // 1000, a[c.COSTLINE_TIER].string_value,
                             a[c.COSTLINE_SUCCESS].bool_value, cost[sid], hosted[sid]))
            last_end = max(last_end, s.end_time_unix_nano // 1000)
    expected.add_hosting(out, answered, student_ends, last_end, STUDENT_USD_PER_HOUR)
    epoch = dt.datetime(1970, 1, 1)
    return {(epoch + dt.timedelta(hours=h), tier): tuple(v) for (h, tier), v in out.items()}


def lake_tier_hourly(config: Config, con=None) -> dict[tuple[dt.datetime, str], tuple]:
    """The lake's ``tier_hourly`` rows by (window, tier); ``con``: an open connection to ``config``'s lake."""
    rows = (con if con is not None else open_lake(config)).execute(
        "SELECT window_start, tier, requests, successes, cost_usd FROM tier_hourly").fetchall()
    return {(w, t): (n, s, cost) for w, t, n, s, cost in rows}


def assert_same_aggregates(got: dict, expected: dict) -> None:
    assert set(got) == set(expected)
    for key, (n, s, cost) in expected.items():
        assert got[key][:2] == (n, s), key
        assert abs(got[key][2] - cost) < 1e-9, key


def assert_no_duplicates(config: Config, con=None) -> None:
    """No span twice in the lake's raw tables; ``con``: an open connection to ``config``'s lake."""
    con = con if con is not None else open_lake(config)
    for table in ("requests_raw", "calls_raw", "lookups_raw"):
        dup = con.execute(f"SELECT count(*) - count(DISTINCT (trace_id, span_id)) FROM {table}").fetchone()[0]
        assert dup == 0, f"{dup} duplicate rows in {table}"


def assert_lake_holds_exactly(config: Config, traces: list[SyntheticTrace]) -> None:
    """:func:`assert_no_duplicates` and ``tier_hourly`` equal to :func:`expected_tier_hourly` of ``traces``, on one
    connection: opening the lake binds every view, which reads every file's schema (seconds, for the thousands of
    small files a test's many commits leave)."""
    con = open_lake(config)
    try:
        assert_no_duplicates(config, con)
        assert_same_aggregates(lake_tier_hourly(config, con), expected_tier_hourly(traces, config))
    finally:
        con.close()


def producer(config: Config):
    from kafka import KafkaProducer

    return KafkaProducer(bootstrap_servers=config.kafka.bootstrap, acks="all", linger_ms=5)


def read_topic(bootstrap: str, topic: str, **options) -> list:
    """Every record of ``topic``, from its beginning to its end offsets now (``options``: the client's security):
    for a topic whose writers have all flushed and closed, so nothing is left to wait for."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **options)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        records: list = []
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, f"{topic} not read to its end offsets {ends} within 60 s"
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def produce(prod, config: Config, traces, extra_headers=None) -> None:
    for t in traces:
        prod.send(config.kafka.topic, key=t.trace_id.encode(), value=t.request.SerializeToString(),
                  headers=extra_headers or [])
    prod.flush()


def test_end_to_end_views_equal_expected(kafka_config: Config):
    traces = list(synthetic_traffic(2500, seed=1))
    n_spans = sum(len(ss.spans) for t in traces for rs in t.request.resource_spans for ss in rs.scope_spans)
    prod = producer(kafka_config)
    produce(prod, kafka_config, traces)
    prod.close()
    t0 = time.monotonic()
    stats = Processor(kafka_config).run(until_idle=1.5)
    elapsed = time.monotonic() - t0
    assert stats.spans == n_spans and stats.dlq == 0 and stats.messages == len(traces)
    assert stats.unknown_model_calls > 0 and "gpt-mystery-1" in stats.unknown_models
    assert_lake_holds_exactly(kafka_config, traces)
    con = open_lake(kafka_config)
    # unknown models are visible, never $0
    assert con.execute("SELECT count(*) FROM calls WHERE model = 'gpt-mystery-1' AND cost_usd IS NOT NULL"
                       ).fetchone() == (0,)
    assert con.execute("SELECT sum(unpriced_calls) FROM requests").fetchone()[0] == stats.unknown_model_calls
    print(f"\nend to end: {n_spans} spans in {elapsed:.2f}s incl. group join and {1.5}s idle wait")


def test_undecodable_messages_go_to_the_dlq(kafka_config: Config):
    good = list(synthetic_traffic(300, seed=2))
    n_spans = sum(len(ss.spans) for t in good for rs in t.request.resource_spans for ss in rs.scope_spans)
    valid = export_request([span(c.SPAN_REQUEST, trace_id=b"\1" * 16, span_id=b"\2" * 8, start_ns=1, end_ns=2)])
    bad = [
        (b"\xff\x00garbage", []),
        (valid.SerializeToString()[:-4], []),  # truncated
        (b'{"resourceSpans": [', []),  # bad JSON
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "00", "spanId": "01"}]}]}]}', []),
        (valid.SerializeToString(), [("content-type", b"application/json")]),  # lies about its type
    ]
    prod = producer(kafka_config)
    half = len(good) // 2
    produce(prod, kafka_config, good[:half])
    for i, (value, headers) in enumerate(bad):
        prod.send(kafka_config.kafka.topic, key=f"bad-{i}".encode(), value=value, headers=headers)
    produce(prod, kafka_config, good[half:])
    prod.close()
    stats = Processor(kafka_config).run(until_idle=1.5)
    assert stats.dlq == len(bad)
    assert stats.spans == n_spans
    assert_same_aggregates(lake_tier_hourly(kafka_config), expected_tier_hourly(good, kafka_config))
    dead = read_topic(kafka_config.kafka.bootstrap, kafka_config.kafka.dlq_topic)  # the processor closed its producer
    assert sorted(m.value for m in dead) == sorted(v for v, _ in bad)
    for m in dead:
        h = dict(m.headers)
        assert h[c.HEADER_DLQ_REASON]
        topic, partition, offset = h[c.HEADER_DLQ_SOURCE].decode().rsplit("/", 2)
        assert topic == kafka_config.kafka.topic and int(offset) >= 0
        assert m.key.startswith(b"bad-")


def test_a_span_with_a_malformed_id_is_left_out_and_its_neighbours_kept(kafka_config: Config):
    """One span with a zero, short or non-hex id (the OTel Collector forwards what its senders wrote) costs the
    lake only that span: its neighbours in the same message land, and the DLQ holds exactly the spans left out
    (re-encoded, so a replay of the DLQ duplicates nothing) with the reason."""
    import json

    from costline.otlp import ExportTraceServiceRequest

    t = 1_790_000_000_000_000_000
    tid = b"\x11" * 16

    def req_span(name: str, trace_id: bytes, span_id: bytes):
        return span(c.SPAN_REQUEST, trace_id=trace_id, span_id=span_id, start_ns=t, end_ns=t + 1_000_000,
                    attributes={c.COSTLINE_TENANT: name})

    mixed = export_request([req_span("good-1", tid, b"\x01" * 8), req_span("zero-span-id", tid, bytes(8)),
                            req_span("good-2", tid, b"\x02" * 8), req_span("short-trace-id", b"\x11" * 5, b"\x03" * 8)])
    as_json = json.dumps({"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "json-app"}}]}, "scopeSpans": [{"spans": [
            {"traceId": "22" * 16, "spanId": "04" * 8, "name": c.SPAN_REQUEST, "startTimeUnixNano": str(t),
             "endTimeUnixNano": str(t + 1), "attributes": [{"key": c.COSTLINE_TENANT, "value": {"stringValue": "good-3"}}]},
            {"traceId": "zz" * 16, "spanId": "05" * 8, "name": c.SPAN_REQUEST, "startTimeUnixNano": str(t),
             "endTimeUnixNano": str(t + 1)}]}]}]}).encode()
    prod = producer(kafka_config)
    prod.send(kafka_config.kafka.topic, key=b"mixed", value=mixed.SerializeToString())
    prod.send(kafka_config.kafka.topic, key=b"json", value=as_json, headers=[("content-type", b"application/json")])
    prod.close()

    stats = Processor(kafka_config).run(until_idle=1.5)

    assert (stats.spans, stats.invalid_spans, stats.dlq) == (6, 3, 2)
    con = open_lake(kafka_config)
    try:
        landed = sorted(con.execute("SELECT span_id FROM requests_raw").fetchall())
    finally:
        con.close()
    assert landed == [("01" * 8,), ("02" * 8,), ("04" * 8,)]
    records = read_topic(kafka_config.kafka.bootstrap, kafka_config.kafka.dlq_topic)
    dead = {m.key: m for m in records}
    assert len(records) == len(dead) and set(dead) == {b"mixed", b"json"}
    for key, want in ((b"mixed", [bytes(8), b"\x03" * 8]), (b"json", [b"\x05" * 8])):
        headers = dict(dead[key].headers)
        assert headers["content-type"] == c.CONTENT_TYPE_PROTOBUF.encode()
        assert b"left out (the others are in the lake)" in headers[c.HEADER_DLQ_REASON]
        request = ExportTraceServiceRequest()
        request.ParseFromString(dead[key].value)
        left_out = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
        assert [s.span_id for s in left_out] == want
    json_rs = ExportTraceServiceRequest.FromString(dead[b"json"].value).resource_spans[0]
    assert json_rs.resource.attributes[0].value.string_value == "json-app"  # under its own resource


def _env(config: Config, batch: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "KAFKA_BOOTSTRAP_SERVERS": config.kafka.bootstrap,
        "COSTLINE_KAFKA_TOPIC": config.kafka.topic,
        "COSTLINE_KAFKA_DLQ_TOPIC": config.kafka.dlq_topic,
        "COSTLINE_LAKE_PATH": str(config.lake.path),
        "COSTLINE_PROCESSOR_GROUP_ID": config.processor.group_id,
        "COSTLINE_PROCESSOR_BATCH_MAX_SPANS": str(batch),
        "COSTLINE_PROCESSOR_FLUSH_INTERVAL_S": "0.2",
        "COSTLINE_PROCESSOR_SESSION_TIMEOUT_MS": "6000",
        "COSTLINE_PROCESSOR_HEARTBEAT_INTERVAL_MS": "1000",
        "COSTLINE_CONFIG": os.devnull,
    })
    return env


def _manifests(lake: Path) -> int:
    return sum(1 for _ in (lake / "_offsets").rglob("*.json")) if (lake / "_offsets").exists() else 0


def test_kill_9_mid_stream_gives_the_same_aggregates(kafka_config: Config, tmp_path: Path):
    costline = Path(sys.executable).with_name("costline")
    traces = list(synthetic_traffic(3000, seed=3))
    waves = [traces[i::6] for i in range(6)]
    prod = producer(kafka_config)
    produce(prod, kafka_config, waves[0])
    env = _env(kafka_config, batch=40)
    rng = random.Random(7)
    log = open(tmp_path / "processor.log", "ab")
    kills = 0
    for wave in waves[1:4]:
        # A long idle limit: on a loaded machine the instance may catch up before it is killed, and
        # it must still be running then (it is killed anyway; only the final run exits on idle).
        proc = subprocess.Popen([str(costline), "-v", "process", "--until-idle", "120"], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        before = _manifests(kafka_config.lake.path)
        deadline = time.monotonic() + 30
        while _manifests(kafka_config.lake.path) <= before and time.monotonic() < deadline:
            time.sleep(0.02)
        produce(prod, kafka_config, wave)  # more data arrives while it works
        time.sleep(rng.uniform(0.0, 0.4))
        assert proc.poll() is None, "the processor exited before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    produce(prod, kafka_config, waves[4] + waves[5])
    prod.close()
    # The run that finishes the job is never killed: it recovers from the crashes at its start and then reads
    # the rest in larger batches (40-span batches there only made thousands of files for the checks to read).
    # It exits once idle and caught up to the end offsets, all produced before it starts.
    final = subprocess.run([str(costline), "-v", "process", "--until-idle", "1.5"], env=_env(kafka_config, batch=2000),
                           stdout=log, stderr=subprocess.STDOUT, timeout=120)
    log.close()
    assert final.returncode == 0, (tmp_path / "processor.log").read_text()[-3000:]
    assert kills == 3
    assert_lake_holds_exactly(kafka_config, traces)


def test_two_instances_rebalance_without_loss_or_duplicates(kafka_config: Config):
    cfg = kafka_config.replace(processor={"batch_max_spans": 60, "flush_interval_s": 0.2})
    traces = list(synthetic_traffic(2400, seed=4))
    prod = producer(cfg)
    produce(prod, cfg, traces[:800])
    results: dict[str, object] = {}
    procs = {name: Processor(cfg) for name in ("a", "b")}

    def run(name: str) -> None:
        results[name] = procs[name].run(until_idle=3)

    # daemon threads, stopped in the finally: a processor stuck in a rebalance fails this test, never the session
    a = threading.Thread(target=run, args=("a",), daemon=True)
    b = threading.Thread(target=run, args=("b",), daemon=True)
    try:
        a.start()
        time.sleep(1.5)
        produce(prod, cfg, traces[800:1600])
        b.start()  # joins the group: partitions move between instances mid-stream
        time.sleep(1.0)
        produce(prod, cfg, traces[1600:])
        prod.close()
        a.join(180)  # generous: a rebalance on a loaded machine takes a few session timeouts
        b.join(180)
        assert not a.is_alive() and not b.is_alive()
    finally:
        for name, t in (("a", a), ("b", b)):
            if t.is_alive():
                procs[name].stop()
                t.join(30)
    assert results["a"].messages > 0 and results["b"].messages > 0  # type: ignore[attr-defined]
    assert_lake_holds_exactly(cfg, traces)
