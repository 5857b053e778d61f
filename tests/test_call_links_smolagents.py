"""smolagents behind ``costline serve``: its ``OpenAIModel.generate`` span is the gateway's request, even escalated.

smolagents (OpenInference's smolagents instrumentor) writes the model the app asked for (``llm.model_name``), no
response id of its own; OpenInference's OpenAI instrumentor, when on, writes a ``ChatCompletion`` span inside it
with the answer's model and id. Escalated, the gateway answers with another model than the one asked, so the two
spans never matched as one call (two models), and smolagents' span stayed a standalone request priced at the model
the app asked for, beside the gateway's request: the cost counted twice. The signal that it is the gateway's call:
smolagents' ``output.value`` keeps the openai SDK's response as ``"raw": "ChatCompletion(id='…', …)"``, and that id
is the one the gateway gave its client (``chatcmpl-costline-<request id>``). Without it (outputs hidden), two spans
of two models stay two calls.

The gateway is real (``costline serve`` in-process against the stand-in, the reference validator turning the budget
answer of :data:`HARD` down, so mid answers), asked through the real ``openai`` SDK; the app's spans are written in
the shapes of ``tests/data/smolagents_dated_spans.json`` (recorded, smolagents 1.26.0, see
``tests/data/recorders/record_smolagents.py``) with the ids, models and usage the gateway answered. Prices (USD per
million tokens) are the vendors' list prices written here; expected figures are worked out from them and the token
counts the stand-in logged, never with costline's pricing.
"""

from __future__ import annotations

import base64
import gzip
import json
import pathlib

import openai
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from costline.config import Config, LakeConfig, ModelPrice, PricingConfig
from figures_lake import lake_from_sdk_spans, query_lake as q
from test_figures_app_behind_gateway import HARD, HAIKU, SONNET, _provider, gateway

DATA = pathlib.Path(__file__).parent / "data" / "smolagents_dated_spans.json"
ASKED = "gpt-4o-mini"
#: List prices, USD per million tokens (input, output): Claude Haiku 4.5, Claude Sonnet 4.6, gpt-4o-mini.
PRICES = {HAIKU: (1.0, 5.0), SONNET: (3.0, 15.0), ASKED: (0.15, 0.60)}


@pytest.fixture
def cfg(tmp_path) -> Config:
    return Config(lake=LakeConfig(path=tmp_path / "lake"), pricing=PricingConfig(models=(
        ModelPrice(HAIKU, "budget", provider="anthropic", input_per_mtok=1.0, output_per_mtok=5.0),
        ModelPrice(SONNET, "mid", provider="anthropic", input_per_mtok=3.0, output_per_mtok=15.0),
        ModelPrice(ASKED, "budget", provider="openai", input_per_mtok=0.15, output_per_mtok=0.60)),
        student_usd_per_hour=0.0, student_providers=()))


def _usd(model: str, tokens_in: int, tokens_out: int) -> float:
    p_in, p_out = PRICES[model]
    return (tokens_in * p_in + tokens_out * p_out) / 1e6


def test_the_recorded_smolagents_span_keeps_the_response_id_in_raw():
    """What the fix reads, as smolagents wrote it: its ``output.value``'s ``raw`` starts with the response's id (the
    stand-in's ``chatcmpl-standin-…``), the same id OpenInference's span inside it starts its output with."""
    got = json.loads(DATA.read_text())["modes"]["dated"]["otlp_gzip"][0]
    ids = {}
    for rs in ExportTraceServiceRequest.FromString(gzip.decompress(base64.b64decode(got))).resource_spans:
        for ss in rs.scope_spans:
            for s in ss.spans:
                a = {kv.key: kv.value.string_value for kv in s.attributes}
                if a.get("openinference.span.kind") == "LLM":
                    out = a["output.value"]
                    ids.setdefault(ss.scope.name, []).append(
                        json.loads(out)["raw"][:45] if ss.scope.name.endswith("smolagents") else json.loads(out)["id"])
    assert ids["openinference.instrumentation.smolagents"][0] == "ChatCompletion(id='chatcmpl-standin-00000002'"
    assert ids["openinference.instrumentation.openai"][0] == "chatcmpl-standin-00000002"


def _app_spans(provider, completion, *, inner: bool, raw: bool) -> None:
    """smolagents' span of the call (the model asked for; ``raw`` or not in its output), with OpenInference's
    OpenAI span inside it when ``inner`` (the model and id the gateway answered with), as the recording has them."""
    usage = {"llm.token_count.prompt": completion.usage.prompt_tokens,
             "llm.token_count.completion": completion.usage.completion_tokens,
             "llm.token_count.total": completion.usage.total_tokens}
    text = completion.choices[0].message.content
    message = {"role": "assistant", "content": text, "tool_calls": None, **({"raw": repr(completion)} if raw else {})}
    outer = provider.get_tracer("openinference.instrumentation.smolagents")
    with outer.start_as_current_span("OpenAIModel.generate", attributes={
            "openinference.span.kind": "LLM", "llm.model_name": ASKED, "llm.provider": "openai",
            "llm.system": "openai", "llm.invocation_parameters": "{}", **usage,
            "llm.output_messages.0.message.role": "assistant", "llm.output_messages.0.message.content": text,
            "output.value": json.dumps(message), "output.mime_type": "application/json"}):
        if inner:
            with provider.get_tracer("openinference.instrumentation.openai").start_as_current_span(
                    "ChatCompletion", attributes={
                        "openinference.span.kind": "LLM", "llm.model_name": completion.model, "llm.system": "openai",
                        "llm.invocation_parameters": json.dumps({"model": ASKED}), **usage,
                        "llm.output_messages.0.message.role": "assistant",
                        "llm.output_messages.0.message.content": text, "llm.finish_reason": "stop",
                        "output.value": completion.model_dump_json(), "output.mime_type": "application/json"}):
                pass


#: (smolagents' span has raw, OpenInference's OpenAI span inside it, the app's span stays a standalone request).
CASES = [
    (True, True, False),  # both instrumentors: one call, the gateway's (before: + a standalone gpt-4o-mini request)
    (True, False, False),  # smolagents' alone: its raw id is the gateway's (before: the same double count)
    (False, True, True),  # outputs without raw: no signal, two models stay two calls (unchanged)
]


@pytest.mark.parametrize("raw,inner,standalone", CASES, ids=["with-openai-span", "smolagents-only", "no-raw"])
def test_an_escalated_smolagents_call_through_the_gateway_is_counted_once(standin, tmp_path, cfg, raw, inner,
                                                                          standalone):
    before = len(standin.log.entries("anthropic"))
    app_provider, app_spans = _provider("smol-app")
    with gateway(standin, tmp_path) as (gw, gw_spans):
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0)
        completion = client.chat.completions.create(model=ASKED, max_completion_tokens=200,
                                                    messages=[{"role": "user", "content": HARD}])
        sent = gw_spans.get_finished_spans()
    served = standin.log.entries("anthropic")[before:]
    assert [e.model for e in served] == [HAIKU, SONNET]  # the budget answer turned down, mid answered
    assert completion.model == SONNET and completion.id.startswith("chatcmpl-costline-")
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (
        served[1].input_tokens, served[1].output_tokens)
    _app_spans(app_provider, completion, inner=inner, raw=raw)
    lake_from_sdk_spans([*sent, *app_spans.get_finished_spans()], cfg)
    gateway_usd = sum(_usd(e.model, e.input_tokens, e.output_tokens) for e in served)
    want = [("costline-gateway", "mid", False, 2, pytest.approx(gateway_usd, rel=1e-9))]
    if standalone:  # smolagents' span, priced at the model the app asked for
        want.append(("smol-app", "budget", True, 1, pytest.approx(
            _usd(ASKED, served[1].input_tokens, served[1].output_tokens), rel=1e-9)))
    assert q(cfg, "SELECT service_name, tier, standalone, calls, cost_usd FROM requests ORDER BY standalone") == want
    assert q(cfg, "SELECT model FROM calls ORDER BY ts") == [(HAIKU,), (SONNET,), *([(ASKED,)] if standalone else [])]
