"""Real JavaScript apps: the official Anthropic and OpenAI TypeScript SDKs instrumented by OpenLLMetry JS
(``@traceloop/instrumentation-anthropic``, ``-openai``) or OpenInference JS
(``@arizeai/openinference-instrumentation-anthropic``, ``-openai``), exporting over OTLP/HTTP (JSON) to
costline's OtlpReceiver, through Kafka and the processor into the lake.

``tests/js/instrumentations/app.mjs`` (a Node program, pinned in its package-lock.json) makes real SDK
calls against costline's stand-in APIs: an Anthropic call the stand-in fails with 400, two
``messages.create`` with a long system prompt marked ``cache_control: ephemeral`` (a cache write, then a
read), a streamed ``messages.create`` consumed to the end (a cache read), an OpenAI-compatible chat
completion and a streamed one with ``stream_options.include_usage``. The app is an ES module, so each
instrumentation is applied with its ``manuallyInstrument(module)`` API. Each family runs once (a
module-scoped run) for several tests.

Expected figures come from the stand-in's own log of what it served and hand-written prices, never
from costline's pricing code.

What the two families emit (app.mjs prints every span), and how costline reads it:

* OpenLLMetry JS 0.27.0: one CLIENT span ``chat {model}`` per call, GenAI conventions
  (``gen_ai.provider.name``, ``gen_ai.operation.name`` = chat, ``gen_ai.request.model``,
  ``gen_ai.usage.input_tokens`` / ``output_tokens``, ``gen_ai.usage.cache_read.input_tokens`` /
  ``cache_creation.input_tokens``). Its Anthropic ``gen_ai.usage.input_tokens`` is the API's own
  ``input_tokens`` (cache reads and writes NOT included, 10 where the stand-in served 490), and it writes
  no ``gen_ai.response.id`` on Anthropic spans (costline adds the cache back for its scope, as for
  OpenLIT's). Its streamed OpenAI chat span has no usage at all (``include_usage`` or not), and no flag
  saying so: costline leaves that call unpriced (``incomplete_usage``), never $0. The failed call: status ERROR, an ``exception``
  event (``exception.type`` = ``Error``), no ``error.type``.
* OpenInference JS (anthropic 0.2.8, openai 4.2.7): one INTERNAL span ``Anthropic Messages`` /
  ``OpenAI Chat Completions`` per call, ``openinference.span.kind`` = LLM, ``llm.token_count.prompt``
  (cache included), ``.completion``, ``.prompt_details.cache_read`` / ``cache_write``; no response id.
  Its streamed OpenAI chat span has no ``llm.token_count.*`` (the instrumentation reads usage only from
  non-streamed completions) and status UNSET. The failed call as OpenLLMetry's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from costline.config import Config
from costline.processors.processor import Processor
from costline.sim.standin import LoggedRequest

from node_apps import (AppRun, assert_each_call_once, assert_the_failed_call, fresh_config, require_node, run_app,
                       start_receiver, start_standin)
# the hand-written prices, the price of what the stand-in served and the lake query helper
from test_ingest_instrumentations import (GPT_IN, GPT_OUT, HAIKU_IN, HAIKU_OUT, READ_X, STUDENT_MODEL, WRITE_X,
                                          _served_usd, q)

pytestmark = pytest.mark.kafka

APP_DIR = Path(__file__).parent / "js" / "instrumentations"
APP = APP_DIR / "app.mjs"

#: app.mjs's calls, in this order: 1 failed + 3 Anthropic (cache write, cache read, streamed) + 2 OpenAI.
NAMES = ["fails", "cached-0", "cached-1", "streamed", "student", "student-streamed"]
N_CALLS, N_PAID = 6, 5
#: The stand-in's response ids of the paid calls, in the order served (the failed one has none).
RESPONSE_IDS = [f"msg_standin_{i:08d}" for i in range(1, 4)] + [f"chatcmpl-standin-{i:08d}" for i in (4, 5)]
#: Each family's instrumentation scopes (Anthropic, OpenAI).
SCOPES = {"openllmetry": ("@traceloop/instrumentation-anthropic", "@traceloop/instrumentation-openai"),
          "openinference": ("@arizeai/openinference-instrumentation-anthropic",
                            "@arizeai/openinference-instrumentation-openai")}
#: The index (in NAMES) of the streamed OpenAI-compatible call: neither family writes its usage.
STREAMED_STUDENT = NAMES.index("student-streamed")


@pytest.fixture(scope="module")
def node() -> str:
    return require_node(APP_DIR, ("@traceloop/instrumentation-anthropic", "@arizeai/openinference-instrumentation-openai"))


@pytest.fixture(scope="module")
def js_run(request, node, kafka, tmp_path_factory) -> AppRun:
    """app.mjs instrumented by one family (the param), straight into costline's receiver, Kafka and the
    processor."""
    family = request.param
    cfg = fresh_config(kafka, tmp_path_factory.mktemp(f"js-{family}") / "lake")
    standin = start_standin()
    receiver = start_receiver(cfg.kafka)
    try:
        report = run_app(node, APP, standin, ["--otlp", receiver.endpoint, "--anthropic", standin.url,
                                             "--openai", standin.openai_url, "--family", family])
    finally:
        receiver.shutdown()
        standin.shutdown()
    stats = Processor(cfg).run(until_idle=1.5)
    return AppRun(cfg, report, stats, standin.log.paid(), standin.log.entries(), _served_usd(standin)[1], family)


def _usd(e: LoggedRequest) -> float:
    """The served price of one stand-in log entry (as _served_usd prices them all)."""
    if e.api == "openai":
        return (e.input_tokens * GPT_IN + e.output_tokens * GPT_OUT) / 1e6
    fresh = e.input_tokens - e.cache_read_tokens - e.cache_creation_tokens
    return (fresh * HAIKU_IN + e.cache_read_tokens * HAIKU_IN * READ_X
            + e.cache_creation_tokens * HAIKU_IN * WRITE_X + e.output_tokens * HAIKU_OUT) / 1e6


def _calls_in_order(cfg: Config) -> list[tuple]:
    """The lake's calls in the order made (the app makes them one after the other)."""
    return q(cfg, "SELECT error_type, input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, "
                  "cost_usd, pricing_status, response_id FROM calls ORDER BY ts")


OPENLLMETRY = pytest.param("openllmetry", id="openllmetry")
OPENINFERENCE = pytest.param("openinference", id="openinference")
BOTH = [OPENLLMETRY, OPENINFERENCE]


@pytest.mark.parametrize("js_run", BOTH, indirect=True)
def test_the_app_saw_what_the_standin_served_and_exported_every_span(js_run: AppRun):
    """The premise of the lake checks: the SDKs' own usage is the stand-in's, every span got out."""
    run = js_run
    calls = run.report["calls"]
    assert [c["name"] for c in calls] == NAMES
    assert [c["failed"] for c in calls] == [True] + [False] * (N_CALLS - 1), calls
    assert calls[0]["statusCode"] == 400 and calls[0]["error"] == "BadRequestError"
    assert len(run.paid) == N_PAID and len(run.entries) == N_CALLS
    assert [(bool(e.cache_creation_tokens), bool(e.cache_read_tokens)) for e in run.paid] == [
        (True, False), (False, True), (False, True), (False, False), (False, False)]
    assert [c["responseId"] for c in calls[1:]] == RESPONSE_IDS
    for c, e in zip(calls[1:], run.paid):
        u = c["usage"]
        if c["api"] == "anthropic":  # Anthropic's input_tokens excludes the cache, the stand-in's log includes it
            got = (u["input_tokens"] + u["cache_read_input_tokens"] + u["cache_creation_input_tokens"],
                   u["output_tokens"], u["cache_read_input_tokens"], u["cache_creation_input_tokens"])
        else:
            got = (u["prompt_tokens"], u["completion_tokens"], 0, 0)
        assert got == (e.input_tokens, e.output_tokens, e.cache_read_tokens, e.cache_creation_tokens), c
    export = run.report["export"]
    assert export["failures"] == [] and export["accepted"] == export["ended"] == N_CALLS, run.report["stderr"][-4000:]
    assert (run.stats.spans, run.stats.dlq) == (export["ended"], 0)
    assert sorted({s["scope"] for s in run.report["spans"]}) == sorted(SCOPES[run.family])


@pytest.mark.parametrize("js_run", BOTH, indirect=True)
def test_each_call_counted_once(js_run: AppRun):
    """One call per model request, the failed one included; with no costline.request span, each call is
    a request of its own."""
    cfg = js_run.cfg
    assert_each_call_once(cfg, N_CALLS, js_run.spans())
    # response ids where the family writes them (OpenLLMetry: OpenAI only; OpenInference: none), each once
    ids = [r[0] for r in q(cfg, "SELECT response_id FROM calls WHERE response_id IS NOT NULL")]
    assert len(ids) == len(set(ids)) and set(ids) <= set(RESPONSE_IDS)


@pytest.mark.parametrize("js_run", BOTH, indirect=True)
def test_the_failed_call_is_an_error_and_its_request_no_success(js_run: AppRun):
    # the JS SDKs' errors are recorded as exception events with exception.type "Error" (no error.type)
    assert_the_failed_call(js_run.cfg, "Error")


@pytest.mark.parametrize("js_run", BOTH, indirect=True)
def test_calls_with_usage_have_the_served_tokens_and_price(js_run: AppRun):
    """Call by call (in the order made), every call whose span carries usage (all but the streamed
    OpenAI one): input (cache included), output, cache reads and writes as the stand-in counted them,
    at the served price (reads 0.1x, writes 1.25x the input price); the streamed Anthropic call too.
    OpenLLMetry JS writes Anthropic's own input_tokens (without the cache): costline adds it back."""
    run = js_run
    rows = _calls_in_order(run.cfg)
    assert len(rows) == N_CALLS, run.spans()
    served = [None] + list(run.paid)
    for i, (row, e) in enumerate(zip(rows, served)):
        if e is None or i == STREAMED_STUDENT:
            continue
        assert row[1:5] == (e.input_tokens, e.output_tokens, e.cache_read_tokens, e.cache_creation_tokens), \
            (NAMES[i], row)
        assert row[5] == pytest.approx(_usd(e), rel=1e-9), (NAMES[i], row)


@pytest.mark.parametrize("js_run", BOTH, indirect=True)
def test_the_streamed_openai_call_without_usage_is_unpriced_not_free(js_run: AppRun):
    """Neither family writes the usage of a streamed OpenAI chat completion (include_usage on): costline
    must keep that call unpriced (cost NULL, incomplete_usage), never $0."""
    row = _calls_in_order(js_run.cfg)[STREAMED_STUDENT]
    assert row[0] is None and row[5] is None and row[6] == "incomplete_usage", (row, js_run.spans())


@pytest.mark.parametrize("js_run", BOTH, indirect=True)
def test_tokens_and_cost_are_the_served_ones_but_the_unreported_stream(js_run: AppRun):
    """The sums: input (cache included), output, cache reads and writes as the stand-in counted them and
    the served price, for every call but the streamed OpenAI one, whose usage neither family writes
    (include_usage on): that one is counted as unpriced, so the requests' cost is a lower bound that says so."""
    run, cfg = js_run, js_run.cfg
    reported = [e for i, e in enumerate(run.paid, start=1) if i != STREAMED_STUDENT]
    tin, tout, read, write, cost = q(cfg, "SELECT sum(input_tokens), sum(output_tokens), sum(cache_read_tokens), "
                                          "sum(cache_creation_tokens), sum(cost_usd) FROM calls")[0]
    assert (tin, tout, read, write) == (sum(e.input_tokens for e in reported), sum(e.output_tokens for e in reported),
                                        sum(e.cache_read_tokens for e in reported),
                                        sum(e.cache_creation_tokens for e in reported))
    assert cost == pytest.approx(sum(_usd(e) for e in reported), rel=1e-9)
    assert q(cfg, "SELECT sum(cost_usd), sum(unpriced_calls) FROM requests") == [
        (pytest.approx(sum(_usd(e) for e in reported), rel=1e-9), 1)]


@pytest.mark.parametrize("js_run", BOTH, indirect=True)
def test_provider_model_operation_and_scope(js_run: AppRun):
    anthropic_scope, openai_scope = SCOPES[js_run.family]
    assert q(js_run.cfg, "SELECT provider, model, operation, instrumentation, count(*) FROM calls "
                         "GROUP BY ALL ORDER BY ALL") == [
        ("anthropic", "claude-haiku-4-5", "chat", anthropic_scope, 4),
        ("openai", STUDENT_MODEL, "chat", openai_scope, 2)]
