"""Google ADK's own tracing (``google-adk``, scope ``gcp.vertex.agent``): each model call counted once, a thinking
model's thoughts priced as output.

ADK 1.x (and 2.x with ``ADK_TELEMETRY_SCHEMA_VERSION_OPT_IN=1``, its legacy schema) writes two spans per model
call, neither with a response id: ``call_llm`` (``gen_ai.system`` = ``gcp.vertex.agent``, no operation, the usage)
and, inside it, ``generate_content <model>`` (``gen_ai.system`` = ``gemini``, the same usage). ADK 1.x's output
count is the Gemini API's ``candidatesTokenCount`` only; the thoughts (billed as output) are only on ``call_llm``,
as ``gen_ai.usage.experimental.reasoning_tokens``. ADK 2.x's output includes them
(``gen_ai.usage.reasoning.output_tokens`` beside it); its default schema writes one ``generate_content`` span per
call.

Recorded (``tests/data/recorders/record_adk.py`` + ``adk_probe.py``: google-adk pins OpenTelemetry and google-genai
versions of its own) against costline's stand-in Gemini API into ``tests/data/adk_spans.json``, with the stand-in's
log of what it served. Each mode: an agent run whose one call the stand-in fails with 500, a thinking call
(gemini-2.5-flash), a SequentialAgent's two calls in one trace (gemini-2.0-flash, then gemini-2.5-flash) and a
streamed thinking call. Modes: ``adk1`` (google-adk 1.39.1), ``adk2_legacy`` (2.13.0, legacy schema), ``adk2``
(2.13.0, default schema) and ``adk1_openinference`` (1.39.1 with OpenInference's google-genai instrumentor, whose
span is inside ADK's ``generate_content``: three spans of one call).

Expected figures: the stand-in's log (output = candidates + thoughts, what Google bills as output) priced with the
hand-written list prices below, never costline's pricing code.
"""

from __future__ import annotations

import base64
import gzip
import json
import pathlib

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from costline.config import Config, LakeConfig, ModelPrice, PricingConfig
from figures_lake import lake_from_messages, query_lake as q

DATA = pathlib.Path(__file__).parent / "data" / "adk_spans.json"
#: Google's list prices (ai.google.dev/pricing), USD per million tokens (input, output; output includes thinking).
PRICES = {"gemini-2.5-flash": (0.30, 2.50), "gemini-2.0-flash": (0.10, 0.40)}
ADK_SCOPE = "gcp.vertex.agent"


@pytest.fixture
def cfg(tmp_path) -> Config:
    return Config(lake=LakeConfig(path=tmp_path / "lake"), pricing=PricingConfig(
        models=tuple(ModelPrice(m, "budget", input_per_mtok=i, output_per_mtok=o) for m, (i, o) in PRICES.items()),
        student_usd_per_hour=0.0, student_providers=()))


def recording(mode: str) -> tuple[list[bytes], list[dict]]:
    got = json.loads(DATA.read_text())["modes"][mode]
    return [gzip.decompress(base64.b64decode(m)) for m in got["otlp_gzip"]], got["served"]


def served_calls(served: list[dict]) -> list[tuple]:
    """(model, input, output, USD) of each paid call the stand-in served, priced by hand, in the order served."""
    out = []
    for e in served:
        if e["paid"]:
            price_in, price_out = PRICES[e["model"]]
            out.append((e["model"], e["input_tokens"], e["output_tokens"],
                        (e["input_tokens"] * price_in + e["output_tokens"] * price_out) / 1e6))
    return out


def approx_usd(rows: list[tuple]) -> list[tuple]:
    """``rows`` with their last field (USD) compared to a relative 1e-9."""
    return [(*r[:-1], pytest.approx(r[-1], rel=1e-9)) for r in rows]


def attrs(span) -> dict:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in span.attributes}


def spans_of(messages: list[bytes]) -> list[tuple[str, object]]:
    return [(ss.scope.name, s) for value in messages
            for rs in ExportTraceServiceRequest.FromString(value).resource_spans for ss in rs.scope_spans
            for s in ss.spans]


def edited(messages: list[bytes], name: str, key: str, value) -> list[bytes]:
    """The messages with attribute ``key`` of the spans named ``name`` set to ``value``."""
    out = []
    for m in messages:
        req = ExportTraceServiceRequest.FromString(m)
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    if s.name != name:
                        continue
                    for kv in s.attributes:
                        if kv.key == key:
                            if isinstance(value, int):
                                kv.value.int_value = value
                            else:
                                kv.value.string_value = value
        out.append(req.SerializeToString())
    return out


def test_the_recording_is_the_span_tree_adk_writes():
    """What the tests below rely on: ADK 1.x's call_llm (no operation, gcp.vertex.agent) around generate_content
    (gemini), the same input and candidates-only output, the thoughts only on call_llm and only under the
    experimental key; 2.x's legacy schema the same pair, output with the thoughts; 2.x's default one span."""
    served = {m: served_calls(recording(m)[1]) for m in ("adk1", "adk2")}
    assert served["adk1"][0] == approx_usd([("gemini-2.5-flash", 25, 57, (25 * 0.30 + 57 * 2.50) / 1e6)])[0]
    assert len(served["adk1"]) == len(served["adk2"]) == 4  # the failed call is not paid
    spans = [s for scope, s in spans_of(recording("adk1")[0]) if scope == ADK_SCOPE]
    thinking = [s for s in spans if attrs(s).get("gen_ai.usage.input_tokens") == 25]
    assert sorted((s.name, attrs(s).get("gen_ai.system"), attrs(s).get("gen_ai.operation.name"),
                   attrs(s)["gen_ai.usage.output_tokens"], attrs(s).get("gen_ai.usage.experimental.reasoning_tokens"),
                   attrs(s).get("gen_ai.response.id")) for s in thinking) == [
        ("call_llm", "gcp.vertex.agent", None, 29, 28, None),
        ("generate_content gemini-2.5-flash", "gemini", "generate_content", 29, None, None)]
    outer = next(s for s in thinking if s.name == "call_llm")
    assert next(s for s in thinking if s.name != "call_llm").parent_span_id == outer.span_id
    legacy = [s for _, s in spans_of(recording("adk2_legacy")[0]) if attrs(s).get("gen_ai.usage.input_tokens") == 25]
    assert sorted((s.name, attrs(s)["gen_ai.usage.output_tokens"], attrs(s)["gen_ai.usage.reasoning.output_tokens"])
                  for s in legacy) == [("call_llm", 57, 28), ("generate_content gemini-2.5-flash", 57, 28)]
    assert [s.name for _, s in spans_of(recording("adk2")[0]) if s.name.startswith(("call_llm", "generate"))] == [
        "generate_content gemini-2.0-flash", "generate_content gemini-2.5-flash", "generate_content gemini-2.0-flash",
        "generate_content gemini-2.5-flash", "generate_content gemini-2.5-flash"]


@pytest.mark.parametrize("mode", ["adk1", "adk2_legacy", "adk2", "adk1_openinference"])
def test_each_adk_model_call_counts_once_at_the_price_of_what_was_served(cfg, mode):
    """Before the fix ADK 1.x's and 2.x's legacy spans counted every call twice (two standalone requests), and ADK
    1.x's left the thoughts out of the output: adk1 showed 9 requests at $0.000437 for the $0.000712 served.
    ``adk2`` (one span a call) and ``adk1_openinference`` (OpenInference's span inside ADK's generate_content, matched
    to call_llm two levels up once generate_content is dropped) were right before and must stay so."""
    messages, served = recording(mode)
    lake_from_messages(messages, cfg)
    expected = served_calls(served)
    got = q(cfg, "SELECT model, input_tokens, output_tokens, cost_usd FROM calls WHERE error_type IS NULL ORDER BY ts")
    assert got == approx_usd(expected)
    # the failed run: one failed call, no cost; every call a standalone request of its own
    assert q(cfg, "SELECT model, cost_usd FROM calls WHERE error_type IS NOT NULL") == [("gemini-2.0-flash", 0.0)]
    assert q(cfg, "SELECT count(*), sum(CASE WHEN success THEN 1 ELSE 0 END), sum(input_tokens), sum(output_tokens), "
                  "sum(cost_usd) FROM requests") == approx_usd([
        (5, 4, sum(e[1] for e in expected), sum(e[2] for e in expected), sum(e[3] for e in expected))])


def test_adk1_figures_by_hand(cfg):
    """ADK 1.39.1's recording priced by hand: 25/57, 26/30 (2.0 Flash, no thinking), 62/123 and 21/86, each output
    candidates + thoughts (29+28, 30, 65+58, 62+24): 25×0.30 + 57×2.50 + 26×0.10 + 30×0.40 + 62×0.30 + 123×2.50
    + 21×0.30 + 86×2.50 = 7.5 + 142.5 + 2.6 + 12 + 18.6 + 307.5 + 6.3 + 215 = 712 (USD per million) → $0.000712."""
    lake_from_messages(recording("adk1")[0], cfg)
    assert q(cfg, "SELECT count(*), sum(input_tokens), sum(output_tokens), sum(cost_usd) FROM calls") == [
        (5, 134, 296, pytest.approx(0.000712, rel=1e-9))]
    assert q(cfg, "SELECT tier, requests, successes, cost_usd FROM tier_hourly") == [
        ("budget", 5, 4, pytest.approx(0.000712, rel=1e-9))]


@pytest.mark.parametrize("mode", ["adk1", "adk2_legacy"])
def test_the_kept_span_is_call_llm_which_alone_has_the_thoughts_on_adk1(cfg, mode):
    """Of the pair the outer ``call_llm`` is kept, the same on both schemas (on ADK 1.x only it has the thoughts)."""
    lake_from_messages(recording(mode)[0], cfg)
    assert q(cfg, "SELECT DISTINCT provider, instrumentation FROM calls WHERE error_type IS NULL") == [
        ("gcp.vertex.agent", ADK_SCOPE)]


@pytest.mark.parametrize("key, value", [
    pytest.param("gen_ai.usage.input_tokens", 24, id="other-input: another call"),
    pytest.param("gen_ai.usage.output_tokens", 500, id="more-output-inside: another call"),
    pytest.param("gen_ai.request.model", "gemini-2.5-pro", id="other-model: another call"),
])
def test_an_adk_span_inside_call_llm_that_is_not_the_same_call_is_counted(cfg, key, value):
    """The inner span is dropped only as the same call: same model, input and cache counts, no more output. Edited
    here on the three gemini-2.5-flash calls' generate_content spans (the thinking call's: 25 in, 29 out, its
    call_llm 25 in, 29 + 28 thoughts out): with another input, more output than call_llm or another model each is
    a call of its own: eight calls, not five."""
    messages = edited(recording("adk1")[0], "generate_content gemini-2.5-flash", key, value)
    lake_from_messages(messages, cfg)
    assert q(cfg, "SELECT count(*) FROM calls") == [(5 + 3,)]


# -- the thoughts' count, span by span ------------------------------------------------------------------------
_CALL_LLM = {"gen_ai.system": "gcp.vertex.agent", "gen_ai.request.model": "gemini-2.5-flash",
             "gen_ai.usage.input_tokens": 25, "gen_ai.usage.output_tokens": 29}


@pytest.mark.parametrize("more, scope, output, bad", [
    pytest.param({"gen_ai.usage.experimental.reasoning_tokens": 28}, ADK_SCOPE, 29 + 28, [],
                 id="adk1-candidates-only: thoughts added"),
    pytest.param({"gen_ai.usage.output_tokens": 57, "gen_ai.usage.reasoning.output_tokens": 28}, ADK_SCOPE, 57, [],
                 id="adk2-output-includes-them: nothing added"),
    pytest.param({"gen_ai.usage.output_tokens": 57, "gen_ai.usage.reasoning.output_tokens": 28,
                  "gen_ai.usage.experimental.reasoning_tokens": 28}, ADK_SCOPE, 57, [],
                 id="both-keys: the conventions' key says they are in the output"),
    pytest.param({"gen_ai.usage.experimental.reasoning_tokens": 28}, "some.other.scope", 29, [],
                 id="another-scope: not read"),
    pytest.param({"gen_ai.usage.experimental.reasoning_tokens": -1}, ADK_SCOPE, 29,
                 ["gen_ai.usage.experimental.reasoning_tokens:negative"], id="bad-count: flagged"),
])
def test_adk1s_thoughts_are_read_into_the_output_only_where_it_leaves_them_out(more, scope, output, bad):
    from costline.processors.spellings import read_call
    from costline.sim.synth import span

    s = span("call_llm", trace_id=b"\x01" * 16, span_id=b"\x02" * 8, start_ns=1, end_ns=2,
             attributes={**_CALL_LLM, **more})
    got_bad: list[str] = []
    reading = read_call("call_llm", {kv.key: kv.value for kv in s.attributes}.get, scope, False, got_bad)
    assert (reading.input_tokens, reading.output_tokens, got_bad) == (25, output, bad)
