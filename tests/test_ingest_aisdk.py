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

from pathlib import Path

import pytest

from costline.processors.processor import Processor

from node_apps import (AppRun, assert_each_call_once, assert_the_failed_call, fresh_config, require_node, run_app,
                       start_receiver, start_standin)
# the hand-written prices, the price of what the stand-in served and the lake query helper
from test_ingest_instrumentations import STUDENT_MODEL, _served_usd, q

pytestmark = pytest.mark.kafka

APP_DIR = Path(__file__).parent / "js" / "aisdk"
APP = APP_DIR / "app.mjs"

#: app.mjs's calls: 1 failed + 5 Anthropic + 2 OpenAI-compatible answered, in this order.
N_CALLS, N_PAID = 8, 7
#: The stand-in's response ids of the paid calls, in the order served (the failed one has none).
RESPONSE_IDS = [f"msg_standin_{i:08d}" for i in range(1, 6)] + [f"chatcmpl-standin-{i:08d}" for i in (6, 7)]
#: The instrumentation scope of each @ai-sdk/otel integration's spans.
SCOPES = {"genai": "gen_ai", "legacy": "ai"}

@pytest.fixture(scope="module")
def node() -> str:
    return require_node(APP_DIR, ("ai",))


@pytest.fixture(scope="module")
def aisdk_run(request, node, kafka, tmp_path_factory) -> AppRun:
    """app.mjs with one AI SDK telemetry integration and one OTLP encoding (the param), straight into
    costline's receiver (chunked bodies), Kafka and the processor."""
    telemetry, protocol = request.param
    cfg = fresh_config(kafka, tmp_path_factory.mktemp(f"aisdk-{telemetry}-{protocol}") / "lake")
    standin = start_standin()
    receiver = start_receiver(cfg.kafka)
    try:
        report = run_app(node, APP, standin, ["--otlp", receiver.endpoint, "--anthropic", standin.url + "/v1",
                                             "--openai", standin.openai_url, "--telemetry", telemetry,
                                             "--protocol", protocol])
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
    assert_each_call_once(cfg, N_CALLS)
    ids = q(cfg, "SELECT response_id FROM calls WHERE error_type IS NULL")
    assert sorted(r[0] for r in ids) == sorted(RESPONSE_IDS)
    assert q(cfg, "SELECT count(*) FROM calls WHERE cost_usd IS NULL") == [(0,)]


@pytest.mark.parametrize("aisdk_run", [GENAI, LEGACY], indirect=True)
def test_the_failed_call_is_an_error_and_its_request_no_success(aisdk_run: AppRun):
    assert_the_failed_call(aisdk_run.cfg, "AI_APICallError")


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
