"""A real JavaScript app: the Vercel AI SDK (``ai`` 7 with ``@ai-sdk/otel``) exporting over OTLP/HTTP to
costline's OtlpReceiver, through Kafka and the processor into the lake.

``tests/js/aisdk/app.mjs`` (a Node program, pinned in its package-lock.json) makes real AI SDK calls
against costline's stand-in APIs: a call the stand-in fails with 400, three ``generateText`` calls with a
long system prompt marked for Anthropic prompt caching (a cache write, then reads), a plain one, a
``streamText`` consumed to the end, and the OpenAI-compatible student through ``createOpenAI().chat``,
plain and streamed; some inside a server span the app starts (as a web framework's instrumentation
would), some with none. Its spans go out through the OpenTelemetry JS SDK's BatchSpanProcessor and
OTLPTraceExporter (``exporter-trace-otlp-http``: OTLP JSON; ``exporter-trace-otlp-proto``: protobuf).

The AI SDK 7 emits spans only through an integration registered with ``registerTelemetry`` (the per-call
``telemetry`` option, formerly ``experimental_telemetry``, alone emits none). ``@ai-sdk/otel`` has two:
``OpenTelemetry`` (the GenAI conventions: ``invoke_agent {model}`` > ``step {n}`` > ``chat {model}``,
usage on the root and on ``chat``) and ``LegacyOpenTelemetry`` (``ai.generateText`` >
``ai.generateText.doGenerate``, ``ai.streamText`` > ``ai.streamText.doStream``: the spans of AI SDK <= 6's
``experimental_telemetry``). Both are driven, each once (a module-scoped run) for several tests.

Expected figures come from the stand-in's own log of what it served and hand-written prices, never
from costline's pricing code.

The OTel JS OTLP/HTTP exporters (Node's http transport) always stream the body with
``Transfer-Encoding: chunked`` and no Content-Length (otlp-exporter-base 0.223.1): the app sends
straight to the receiver, which decodes chunked bodies (it answered 411 before, and every span of a
Node app was dropped).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from costline.collectors import KafkaForwarder, OtlpReceiver
from costline.config import (CollectorConfig, Config, KafkaConfig, LakeConfig, ModelPrice, PricingConfig,
                             ProcessorConfig)
from costline.processors.processor import Processor, ProcessorStats
from costline.serving.settings import StandInConfig
from costline.sim.standin import LoggedRequest, StandInServer

from conftest import missing_binary
# the hand-written prices, the price of what the stand-in served and the lake query helper
from test_ingest_instrumentations import GPT_IN, GPT_OUT, HAIKU_IN, HAIKU_OUT, STUDENT_MODEL, _served_usd, q

pytestmark = pytest.mark.kafka

APP_DIR = Path(__file__).parent / "js" / "aisdk"
APP = APP_DIR / "app.mjs"
NODE_TIMEOUT_S = 60.0

#: app.mjs's calls: 1 failed + 5 Anthropic + 2 OpenAI-compatible answered, in this order.
N_CALLS, N_PAID = 8, 7
#: The stand-in's response ids of the paid calls, in the order served (the failed one has none).
RESPONSE_IDS = [f"msg_standin_{i:08d}" for i in range(1, 6)] + [f"chatcmpl-standin-{i:08d}" for i in (6, 7)]
#: The instrumentation scope of each @ai-sdk/otel integration's spans.
SCOPES = {"genai": "gen_ai", "legacy": "ai"}

@pytest.fixture(scope="module")
def node() -> str:
    exe = shutil.which("node")
    if exe is None:
        missing_binary("node (Node.js >= 20) is not installed: the AI SDK app needs it")
    if not (APP_DIR / "node_modules" / "ai" / "package.json").is_file():
        missing_binary("tests/js/aisdk/node_modules is missing: run: npm ci --prefix tests/js/aisdk")
    return exe


PRICING = PricingConfig(
    models=(ModelPrice("claude-haiku-4-5", "budget", input_per_mtok=HAIKU_IN, output_per_mtok=HAIKU_OUT),
            ModelPrice(STUDENT_MODEL, "budget", provider="openai", input_per_mtok=GPT_IN, output_per_mtok=GPT_OUT)),
    student_usd_per_hour=0.0, student_providers=())


def start_standin() -> StandInServer:
    srv = StandInServer(StandInConfig(port=0, latency_scale=0.0, min_cache_tokens=100))
    srv.start()
    return srv


def start_receiver(kafka: KafkaConfig) -> OtlpReceiver:
    forwarder = KafkaForwarder(kafka, produce_timeout_s=10.0, connect_timeout_s=5.0)
    recv = OtlpReceiver(CollectorConfig(), forwarder, host="127.0.0.1", port=0)
    recv.start()
    return recv


def fresh_config(kafka: KafkaConfig, lake: Path) -> Config:
    """As conftest's kafka_config (fresh topics, a unique consumer group, fast joins), with PRICING;
    built here for a module-scoped run (one app run serves several tests)."""
    from costline.localkafka import ensure_topics

    suffix = uuid.uuid4().hex[:8]
    topics = KafkaConfig(bootstrap_servers=kafka.bootstrap, topic=f"otlp_spans_{suffix}",
                         dlq_topic=f"otlp_spans_{suffix}.dlq", partitions=kafka.partitions)
    ensure_topics(topics)
    return Config(kafka=topics, lake=LakeConfig(path=lake), pricing=PRICING, processor=ProcessorConfig(
        group_id=f"costline-test-{uuid.uuid4().hex[:8]}", session_timeout_ms=6000, heartbeat_interval_ms=1000,
        flush_interval_s=0.5))


def run_app(node: str, endpoint: str, standin: StandInServer, telemetry: str, protocol: str) -> dict:
    """app.mjs against the stand-in, the first Anthropic request answered 400: its JSON report."""
    standin.inject_errors(400, 1)
    try:
        proc = subprocess.run(
            [node, str(APP), "--otlp", endpoint, "--anthropic", standin.url + "/v1", "--openai", standin.openai_url,
             "--telemetry", telemetry, "--protocol", protocol],
            cwd=APP_DIR, capture_output=True, text=True, timeout=NODE_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"app.mjs ran past {NODE_TIMEOUT_S}s; stderr: {exc.stderr!r}")
    assert proc.returncode == 0, f"app.mjs exited {proc.returncode}: {proc.stderr[-4000:]}"
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines, f"app.mjs printed nothing; stderr: {proc.stderr[-4000:]}"
    report = json.loads(lines[-1])
    report["stderr"] = proc.stderr
    return report


@dataclass
class AppRun:
    """One run of app.mjs (straight to the receiver), processed into a lake."""

    cfg: Config
    report: dict
    stats: ProcessorStats
    paid: list[LoggedRequest]
    entries: list[LoggedRequest]
    served_usd: float


@pytest.fixture(scope="module")
def aisdk_run(request, node, kafka, tmp_path_factory) -> AppRun:
    """app.mjs with one AI SDK telemetry integration and one OTLP encoding (the param), straight into
    costline's receiver (chunked bodies), Kafka and the processor."""
    telemetry, protocol = request.param
    cfg = fresh_config(kafka, tmp_path_factory.mktemp(f"aisdk-{telemetry}-{protocol}") / "lake")
    standin = start_standin()
    receiver = start_receiver(cfg.kafka)
    try:
        report = run_app(node, receiver.endpoint, standin, telemetry, protocol)
    finally:
        receiver.shutdown()
        standin.shutdown()
    stats = Processor(cfg).run(until_idle=1.5)
    return AppRun(cfg, report, stats, standin.log.paid(), standin.log.entries(), _served_usd(standin)[1])


GENAI = pytest.param(("genai", "json"), id="genai-json")
LEGACY = pytest.param(("legacy", "proto"), id="legacy-proto")


@pytest.mark.parametrize("aisdk_run", [GENAI, LEGACY], indirect=True)
def test_the_app_saw_what_the_standin_served_and_exported_every_span(aisdk_run: AppRun):
    """The premise of the lake checks: the AI SDK's own usage is the stand-in's, every span got out."""
    run = aisdk_run
    calls = run.report["calls"]
    assert [c["failed"] for c in calls] == [True] + [False] * (N_CALLS - 1), calls
    assert calls[0]["statusCode"] == 400 and calls[0]["error"] == "AI_APICallError"
    assert len(run.paid) == N_PAID and len(run.entries) == N_CALLS
    assert [bool(e.cache_creation_tokens) for e in run.paid] == [True] + [False] * (N_PAID - 1)
    assert sum(1 for e in run.paid if e.cache_read_tokens) == 3  # two cached calls after the first, the stream
    # AI SDK usage: inputTokens include the cache reads and writes, as the stand-in's log counts them
    assert sorted((c["usage"]["inputTokens"], c["usage"]["outputTokens"], c["responseId"]) for c in calls[1:]) == \
        sorted((e.input_tokens, e.output_tokens, rid) for e, rid in zip(run.paid, RESPONSE_IDS))
    assert [(c["usage"]["inputTokenDetails"].get("cacheReadTokens", 0),
             c["usage"]["inputTokenDetails"].get("cacheWriteTokens", 0)) for c in calls[1:]] == \
        [(e.cache_read_tokens, e.cache_creation_tokens) for e in run.paid]
    export = run.report["export"]
    assert export["failures"] == [] and export["accepted"] == export["ended"] > 0, run.report["stderr"][-4000:]
    assert (run.stats.spans, run.stats.dlq) == (export["ended"], 0)


@pytest.mark.parametrize("aisdk_run", [GENAI, LEGACY], indirect=True)
def test_each_call_counted_once(aisdk_run: AppRun):
    """One call per model request (not one per span: the AI SDK's root/step spans are no calls), the
    failed one included; with no costline.request span, each call is a request of its own."""
    cfg = aisdk_run.cfg
    assert q(cfg, "SELECT count(*), count(*) FILTER (WHERE error_type IS NOT NULL), count(DISTINCT trace_id) "
                  "FROM calls") == [(N_CALLS, 1, N_CALLS)]
    ids = q(cfg, "SELECT response_id FROM calls WHERE error_type IS NULL")
    assert sorted(r[0] for r in ids) == sorted(RESPONSE_IDS)
    assert q(cfg, "SELECT count(*) FROM calls WHERE cost_usd IS NULL") == [(0,)]
    assert q(cfg, "SELECT count(*), count(*) FILTER (WHERE NOT success), sum(calls) FROM requests") == [
        (N_CALLS, 1, N_CALLS)]


@pytest.mark.parametrize("aisdk_run", [GENAI, LEGACY], indirect=True)
def test_the_failed_call_is_an_error_and_its_request_no_success(aisdk_run: AppRun):
    cfg = aisdk_run.cfg
    assert q(cfg, "SELECT error_type, model, coalesce(cost_usd, 0), input_tokens + output_tokens, response_id "
                  "FROM calls WHERE error_type IS NOT NULL") == [("AI_APICallError", "claude-haiku-4-5", 0.0, 0, None)]
    assert q(cfg, "SELECT error_type, calls, cost_usd FROM requests WHERE NOT success") == [
        ("AI_APICallError", 1, 0.0)]


@pytest.mark.parametrize("aisdk_run", [GENAI, LEGACY], indirect=True)
def test_tokens_and_cost_are_the_served_ones(aisdk_run: AppRun):
    """Input (cache included), output, cache reads and writes as the stand-in counted them; the cost
    is the served price (reads 0.1x, writes 1.25x the input price)."""
    run, cfg = aisdk_run, aisdk_run.cfg
    tin, tout, read, write, cost = q(cfg, "SELECT sum(input_tokens), sum(output_tokens), sum(cache_read_tokens), "
                                          "sum(cache_creation_tokens), sum(cost_usd) FROM calls")[0]
    assert (tin, tout, read, write) == (sum(e.input_tokens for e in run.paid), sum(e.output_tokens for e in run.paid),
                                        sum(e.cache_read_tokens for e in run.paid),
                                        sum(e.cache_creation_tokens for e in run.paid))
    assert cost == pytest.approx(run.served_usd, rel=1e-9)
    assert q(cfg, "SELECT sum(cost_usd) FROM requests") == [(pytest.approx(run.served_usd, rel=1e-9),)]
    # call by call: the streamed ones priced like the others
    got = {r[0]: r[1:] for r in q(cfg, "SELECT response_id, input_tokens, output_tokens, cache_read_tokens, "
                                       "cache_creation_tokens FROM calls WHERE response_id IS NOT NULL")}
    assert got == {rid: (e.input_tokens, e.output_tokens, e.cache_read_tokens, e.cache_creation_tokens)
                   for e, rid in zip(run.paid, RESPONSE_IDS)}


@pytest.mark.parametrize("aisdk_run", [GENAI, LEGACY], indirect=True)
def test_provider_model_and_operation_as_the_genai_conventions_name_them(aisdk_run: AppRun):
    assert q(aisdk_run.cfg, "SELECT provider, model, operation, instrumentation, count(*) FROM calls "
                            "GROUP BY ALL ORDER BY ALL") == [
        ("anthropic", "claude-haiku-4-5", "chat", SCOPES[aisdk_run.report["telemetry"]], 6),
        ("openai", STUDENT_MODEL, "chat", SCOPES[aisdk_run.report["telemetry"]], 2)]
