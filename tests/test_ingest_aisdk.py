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

The app's ``embeddings`` scenario (``--scenario embeddings``, a run of its own) calls the OpenAI
provider's embeddings API (``openai.embedding``, at most 2 values a request through
``wrapEmbeddingModel``'s ``overrideMaxEmbeddingsPerCall``): an ``embed`` the stand-in fails with 400, an
``embed`` of one value, and an ``embedMany`` of five values that the SDK splits into three requests, sent
in parallel. Each is an outer span of the operation around one inner span per HTTP request, in one scope:
``LegacyOpenTelemetry``: ``ai.embed`` > ``ai.embed.doEmbed``, ``ai.embedMany`` > ``ai.embedMany.doEmbed``
(no ``gen_ai.*`` attribute at all: ``ai.model.id``, ``ai.model.provider`` = ``openai.embedding``,
``ai.operationId``; usage ``ai.usage.tokens``, the outer's the sum of its requests'); ``OpenTelemetry``:
``embeddings {model}`` > ``embeddings {model}``, both with ``gen_ai.operation.name`` = ``embeddings``,
provider and model; only the inner ones carry ``gen_ai.usage.input_tokens``, and a failed request's outer
and inner spans are alike (status ``ERROR``, an ``exception`` event). Each HTTP request served is one
call at the price of its tokens; the outer span is no call.

Expected figures come from the stand-in's own log of what it served and hand-written prices, never
from costline's pricing code.

The OTel JS OTLP/HTTP exporters (Node's http transport) always stream the body with
``Transfer-Encoding: chunked`` and no Content-Length (otlp-exporter-base 0.223.1): the app sends
straight to the receiver, which decodes chunked bodies (it answered 411 before, and every span of a
Node app was dropped).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from costline.config import ModelPrice, PricingConfig
from costline.processors.processor import Processor

from node_apps import (PRICING, AppRun, assert_each_call_once, assert_the_failed_call, fresh_config, require_node,
                       run_app, start_receiver, start_standin)
# the hand-written prices, the price of what the stand-in served and the lake query helper
from test_ingest_instrumentations import EMBED_IN, EMBED_MODEL, HAIKU_IN, HAIKU_OUT, STUDENT_MODEL, _served_usd, q

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


#: app.mjs's system prompt for the cached calls, and each paid call's (system prompt, question) in RESPONSE_IDS' order.
LONG_SYSTEM = "You answer questions about our refund policy. " * 60
ASKED = [(LONG_SYSTEM, "Question 0: can I return a damaged item?"), (LONG_SYSTEM, "Question 1: can I return a damaged item?"),
         (LONG_SYSTEM, "Question 2: can I return a damaged item?"), (None, "Where is order 42?"),
         (LONG_SYSTEM, "Question 3: how long do refunds take?"), (None, "Summarise ticket 7"),
         (None, "Summarise ticket 8")]


def _turns(doc: str | None) -> list[tuple[str, str]]:
    """(role, text) of a lake message column: the GenAI conventions' parts, read here by hand."""
    return [(m["role"], "".join(p["content"] for p in m["parts"] if p["type"] == "text"))
            for m in json.loads(doc or "[]")]


@pytest.mark.parametrize("aisdk_run", [GENAI, LEGACY], indirect=True)
def test_each_calls_question_and_answer_are_in_the_lake(aisdk_run: AppRun):
    """Both integrations capture content by default (the AI SDK 6 spans as ``ai.prompt.messages`` /
    ``ai.response.text``): each call's system prompt, question and answer are in the lake in the conventions'
    shape, the answer as the app received it (streamed ones included)."""
    run = aisdk_run
    answers = {c["responseId"]: c["text"] for c in run.report["calls"] if not c["failed"]}
    got = {rid: (_turns(i), _turns(o)) for rid, i, o in q(run.cfg, "SELECT response_id, input_messages, "
                                                                     "output_messages FROM calls")}
    assert got.pop(None)[0] == [("user", "Can I return a damaged item?")]  # the failed call: its question
    assert got == {rid: (([("system", system)] if system else []) + [("user", question)],
                         [("assistant", answers[rid])]) for rid, (system, question) in zip(RESPONSE_IDS, ASKED)}
    assert all(answers.values())


# -- embeddings: embed / embedMany (--scenario embeddings) ---------------------------------------------------
#: app.mjs's embeddings scenario: a failed embed, an embed of one value, an embedMany of 5 values at most 2 a
#: request: 1 + 1 + 3 HTTP requests, 4 of them answered.
EMBED_REQUESTS, EMBED_PAID, EMBED_MANY_REQUESTS = 5, 4, 3
#: The names of the AI SDK's spans per integration: (outer, inner) of embed and of embedMany.
EMBED_SPANS = {"legacy": (("ai.embed", "ai.embed.doEmbed"), ("ai.embedMany", "ai.embedMany.doEmbed")),
               "genai": ((f"embeddings {EMBED_MODEL}",) * 2, (f"embeddings {EMBED_MODEL}",) * 2)}


@pytest.fixture(scope="module")
def embed_run(request, node, kafka, tmp_path_factory) -> AppRun:
    """app.mjs --scenario embeddings with one AI SDK telemetry integration and one OTLP encoding (the
    param), the embedding model priced by hand; the first OpenAI request answered 400."""
    telemetry, protocol = request.param
    cfg = fresh_config(kafka, tmp_path_factory.mktemp(f"aisdk-embed-{telemetry}-{protocol}") / "lake")
    cfg = cfg.replace(pricing=PricingConfig(models=(*PRICING.models, ModelPrice(
        EMBED_MODEL, "budget", provider="openai", input_per_mtok=EMBED_IN, output_per_mtok=0.0)),
        student_usd_per_hour=0.0, student_providers=()))
    standin = start_standin()
    receiver = start_receiver(cfg.kafka)
    try:
        # the failed embed (run_app also arms an Anthropic 400: this scenario makes no Anthropic request)
        standin.inject_errors(400, 1, api="openai")
        report = run_app(node, APP, standin, ["--otlp", receiver.endpoint, "--anthropic", standin.url + "/v1",
                                             "--openai", standin.openai_url, "--telemetry", telemetry,
                                             "--protocol", protocol, "--scenario", "embeddings"])
    finally:
        receiver.shutdown()
        standin.shutdown()
    stats = Processor(cfg).run(until_idle=1.5)
    paid = standin.log.paid()
    return AppRun(cfg, report, stats, paid, standin.log.entries(),
                  sum(e.input_tokens for e in paid) * EMBED_IN / 1e6)


def _sdk_spans(run: AppRun) -> tuple[list[dict], list[dict]]:
    """The AI SDK's spans in the report: (outer, inner): an inner one's parent is a span of the same scope."""
    scope = SCOPES[run.report["telemetry"]]
    mine = [sp for sp in run.report["spans"] if sp["scope"] == scope]
    ids = {sp["spanId"] for sp in mine}
    return [sp for sp in mine if sp["parent"] not in ids], [sp for sp in mine if sp["parent"] in ids]


GENAI_EMBED = pytest.param(("genai", "proto"), id="genai-proto")
LEGACY_EMBED = pytest.param(("legacy", "json"), id="legacy-json")


@pytest.mark.parametrize("embed_run", [GENAI_EMBED, LEGACY_EMBED], indirect=True)
def test_embeddings_the_app_saw_what_the_standin_served_and_exported_every_span(embed_run: AppRun):
    """The premise: the AI SDK's usage is the stand-in's, every span got out, and each HTTP request the
    stand-in served has one inner span (under its embed / embedMany's outer span) in the SDK's scope."""
    run = embed_run
    calls = run.report["calls"]
    assert [(c["name"], c["failed"]) for c in calls] == [("embed-fails", True), ("embed", False),
                                                         ("embed-many", False)], calls
    assert calls[0]["statusCode"] == 400 and calls[0]["error"] == "AI_APICallError"
    assert len(run.entries) == EMBED_REQUESTS and len(run.paid) == EMBED_PAID
    assert {(e.api, e.model) for e in run.entries} == {("openai", EMBED_MODEL)}
    assert [e.output_tokens for e in run.paid] == [0] * EMBED_PAID
    # embed is served first; embedMany's three requests after it, in parallel (any order)
    assert calls[1]["usage"]["tokens"] == run.paid[0].input_tokens
    assert calls[2]["usage"]["tokens"] == sum(e.input_tokens for e in run.paid[1:])
    assert (calls[2]["responses"], calls[2]["embeddings"]) == (EMBED_MANY_REQUESTS, 5)
    export = run.report["export"]
    assert export["failures"] == [] and export["accepted"] == export["ended"] > 0, run.report["stderr"][-4000:]
    assert (run.stats.spans, run.stats.dlq) == (export["ended"], 0)
    outer, inner = _sdk_spans(run)
    (embed_outer, embed_inner), (many_outer, many_inner) = EMBED_SPANS[run.report["telemetry"]]
    assert sorted(sp["name"] for sp in outer) == sorted([embed_outer, embed_outer, many_outer]), run.spans()
    assert sorted(sp["name"] for sp in inner) == sorted([embed_inner] * 2 + [many_inner] * 3), run.spans()
    assert len(inner) == EMBED_REQUESTS
    assert sum(sp["status"]["code"] == 2 for sp in inner) == sum(sp["status"]["code"] == 2 for sp in outer) == 1


@pytest.mark.parametrize("embed_run", [GENAI_EMBED, LEGACY_EMBED], indirect=True)
def test_each_embedding_request_is_one_call_and_the_outer_span_none(embed_run: AppRun):
    """One call per HTTP request (each inner span), the failed one included; the embed / embedMany span
    around them is no call (it is no model request: an extra call, unpriced or failed, if it were)."""
    run, cfg = embed_run, embed_run.cfg
    outer, inner = _sdk_spans(run)
    got = q(cfg, "SELECT span_id FROM calls")
    assert sorted(r[0] for r in got) == sorted(sp["spanId"] for sp in inner), run.spans()
    assert q(cfg, "SELECT count(*), count(*) FILTER (WHERE error_type IS NOT NULL), count(DISTINCT trace_id) "
                  "FROM calls") == [(EMBED_REQUESTS, 1, 3)]  # the failed embed, the embed, the embedMany
    # embedMany's three requests: three calls in one trace, none the parent of another
    assert q(cfg, "SELECT count(*) FROM calls GROUP BY trace_id ORDER BY 1") == [(1,), (1,), (EMBED_MANY_REQUESTS,)]
    assert q(cfg, "SELECT count(*) FROM calls c JOIN calls p ON p.span_id = c.parent_span_id") == [(0,)]


@pytest.mark.parametrize("embed_run", [GENAI_EMBED, LEGACY_EMBED], indirect=True)
def test_embedding_tokens_and_cost_are_the_served_ones(embed_run: AppRun):
    """Each answered request at the price of the input tokens the stand-in served it (none unpriced);
    the failed one no tokens, no price."""
    run, cfg = embed_run, embed_run.cfg
    got = q(cfg, "SELECT input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, cost_usd, "
                 "pricing_status FROM calls WHERE error_type IS NULL ORDER BY input_tokens")
    assert [r[:4] for r in got] == sorted((e.input_tokens, 0, 0, 0) for e in run.paid)
    assert [r[4] for r in got] == [pytest.approx(r[0] * EMBED_IN / 1e6, rel=1e-9) for r in got]
    assert q(cfg, "SELECT count(*) FROM calls WHERE cost_usd IS NULL AND error_type IS NULL") == [(0,)]
    assert q(cfg, "SELECT sum(input_tokens), sum(cost_usd) FROM calls") == [
        (sum(e.input_tokens for e in run.paid), pytest.approx(run.served_usd, rel=1e-9))]
    assert q(cfg, "SELECT error_type, model, coalesce(cost_usd, 0), input_tokens + output_tokens FROM calls "
                  "WHERE error_type IS NOT NULL") == [("AI_APICallError", EMBED_MODEL, 0.0, 0)]


@pytest.mark.parametrize("embed_run", [GENAI_EMBED, LEGACY_EMBED], indirect=True)
def test_embedding_calls_with_no_request_span_are_a_request_each(embed_run: AppRun):
    """No costline.request around them (docs/telemetry.md): each call is one request of its own, the
    failed one no success; the requests cost what the stand-in served."""
    cfg = embed_run.cfg
    assert q(cfg, "SELECT count(*), count(*) FILTER (WHERE NOT success), sum(calls), sum(cost_usd) FROM requests") == [
        (EMBED_REQUESTS, 1, EMBED_REQUESTS, pytest.approx(embed_run.served_usd, rel=1e-9))]
    assert q(cfg, "SELECT error_type, calls, coalesce(cost_usd, 0) FROM requests WHERE NOT success") == [
        ("AI_APICallError", 1, 0.0)]


@pytest.mark.parametrize("embed_run", [GENAI_EMBED, LEGACY_EMBED], indirect=True)
def test_embedding_provider_model_and_operation(embed_run: AppRun):
    """provider ``openai`` (legacy: ``ai.model.provider`` = ``openai.embedding``), the model asked for,
    operation ``embeddings``, the integration's scope."""
    assert q(embed_run.cfg, "SELECT provider, model, operation, instrumentation, count(*) FROM calls "
                            "GROUP BY ALL ORDER BY ALL") == [
        ("openai", EMBED_MODEL, "embeddings", SCOPES[embed_run.report["telemetry"]], EMBED_REQUESTS)]


# -- what Anthropic bills beyond the tokens, in providerMetadata (--scenario modifiers) ------------------------
#: app.mjs's modifiers scenario: a one-hour cache write, its read, a web search (2 searches), US-only inference
#: streamed; all answered.
MODIFIER_CALLS = 4
#: The hand-written multipliers: one-hour writes 2 x the input price, US-only inference 1.1 x every token, USD per
#: 1,000 searches (Anthropic's list prices, 2026).
WRITE_1H_X, US_X, SEARCH_PER_1K = 2.0, 1.1, 10.0


def _anthropic_usage(call: dict) -> dict:
    """The Anthropic API's own usage object of one call, as the AI SDK received it (the app's report)."""
    return call["providerMetadata"]["anthropic"]["usage"]


def _billed_usd(usage: dict) -> float:
    """What Anthropic bills for ``usage`` (its raw usage object), by hand-written prices."""
    one_hour = usage["cache_creation"]["ephemeral_1h_input_tokens"]
    five_min = usage["cache_creation_input_tokens"] - one_hour
    tokens = (usage["input_tokens"] * HAIKU_IN + usage["cache_read_input_tokens"] * HAIKU_IN * 0.1
              + five_min * HAIKU_IN * 1.25 + one_hour * HAIKU_IN * WRITE_1H_X + usage["output_tokens"] * HAIKU_OUT) / 1e6
    searches = (usage.get("server_tool_use") or {}).get("web_search_requests", 0)
    return tokens * (US_X if usage.get("inference_geo") == "us" else 1.0) + searches * SEARCH_PER_1K / 1000


@pytest.fixture(scope="module")
def modifiers_run(request, node, kafka, tmp_path_factory) -> AppRun:
    """app.mjs --scenario modifiers with one integration (the param: the genai one recording providerMetadata, or
    the legacy one, which always does), the multipliers set by hand."""
    telemetry, metadata = request.param
    cfg = fresh_config(kafka, tmp_path_factory.mktemp(f"aisdk-modifiers-{telemetry}") / "lake")
    cfg = cfg.replace(pricing=dataclasses.replace(cfg.pricing, cache_read_multiplier=0.1, cache_write_multiplier=1.25,
                                                  cache_write_1h_multiplier=WRITE_1H_X, us_inference_multiplier=US_X,
                                                  web_search_per_1k=SEARCH_PER_1K))
    standin = start_standin()
    receiver = start_receiver(cfg.kafka)
    try:
        report = run_app(node, APP, standin, ["--otlp", receiver.endpoint, "--anthropic", standin.url + "/v1",
                                             "--openai", standin.openai_url, "--telemetry", telemetry,
                                             "--scenario", "modifiers", "--provider-metadata", metadata],
                         fail_first=False)
    finally:
        receiver.shutdown()
        standin.shutdown()
    stats = Processor(cfg).run(until_idle=1.5)
    return AppRun(cfg, report, stats, standin.log.paid(), standin.log.entries(),
                  sum(_billed_usd(_anthropic_usage(c)) for c in report["calls"]))


MODIFIERS = [pytest.param(("genai", "on"), id="genai-providerMetadata"), pytest.param(("legacy", "off"), id="legacy")]


@pytest.mark.parametrize("modifiers_run", MODIFIERS, indirect=True)
def test_one_hour_writes_searches_and_us_inference_are_priced_from_the_provider_metadata(modifiers_run: AppRun):
    """Anthropic's one-hour cache writes (2 x), web searches ($10 / 1,000) and US-only inference (1.1 x) are only
    in the AI SDK's ``ai.response.providerMetadata`` (the API's raw usage): each call costs what Anthropic bills for
    the usage the SDK received, the streamed one too; nothing is left unpriced."""
    run, cfg = modifiers_run, modifiers_run.cfg
    calls = run.report["calls"]
    assert [c["failed"] for c in calls] == [False] * MODIFIER_CALLS, calls
    usages = [_anthropic_usage(c) for c in calls]
    # the premise: the one-hour write, then reads of it; two searches; the US-only stream
    assert [u["cache_creation"]["ephemeral_1h_input_tokens"] > 0 for u in usages] == [True, False, False, False]
    assert [u["cache_read_input_tokens"] > 0 for u in usages] == [False, True, False, True]
    assert [(u.get("server_tool_use") or {}).get("web_search_requests", 0) for u in usages] == [0, 0, 2, 0]
    assert [u.get("inference_geo") for u in usages] == [None, None, None, "us"]
    export = run.report["export"]
    assert export["failures"] == [] and export["accepted"] == export["ended"] > 0, run.report["stderr"][-4000:]
    assert (run.stats.spans, run.stats.dlq) == (export["ended"], 0)
    got = {r[0]: r[1:] for r in q(cfg, "SELECT response_id, cost_usd, cache_creation_1h_tokens, web_search_requests, "
                                       "inference_geo, pricing_status, data_quality FROM calls")}
    want = {c["responseId"]: (pytest.approx(_billed_usd(u), rel=1e-9), u["cache_creation"]["ephemeral_1h_input_tokens"],
                              (u.get("server_tool_use") or {}).get("web_search_requests", 0), u.get("inference_geo"),
                              "priced", None) for c, u in zip(calls, usages)}
    assert got == want, run.spans()
    assert q(cfg, "SELECT sum(cost_usd) FROM requests") == [(pytest.approx(run.served_usd, rel=1e-9),)]
