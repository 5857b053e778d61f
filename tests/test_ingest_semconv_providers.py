"""Spans of the GenAI conventions as frameworks and client-library instrumentations write them for one call.

An OpenAI client library's instrumentation (openai-v2, OpenLLMetry, OpenLIT) says ``gen_ai.provider.name`` =
"openai" of whatever OpenAI-compatible server it talks to, while the framework around it (Pydantic AI, LangChain,
an agent SDK) names the real provider ("deepseek", "groq", "x_ai", ...): both spans are one call. So are
Pydantic AI's "bedrock" and the botocore instrumentation's "aws.bedrock". A ``retrieval`` operation is no call,
and a call that reported its answer's tokens but not its input's is not priced as a free prompt.

Spans are hand-built OTLP protobuf (times and ids under the test's control), committed through the processor's
own decode / flatten / commit path; prices are the test's own, figures worked out by hand.
"""

from __future__ import annotations

import itertools
import os

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from costline.config import Config, LakeConfig, ModelPrice, PricingConfig
from costline.sim.synth import set_anyvalue

from figures_lake import lake_from_messages, query_lake as q

T0 = 1_780_000_000_000_000_000  # ns
#: USD per million tokens, by hand
DEEPSEEK_IN, DEEPSEEK_OUT = 0.27, 1.10
HAIKU_IN, HAIKU_OUT = 1.0, 5.0
PRICING = PricingConfig(models=(
    ModelPrice("deepseek-chat", "budget", provider="deepseek", input_per_mtok=DEEPSEEK_IN,
               output_per_mtok=DEEPSEEK_OUT),
    ModelPrice("claude-haiku-4-5", "budget", input_per_mtok=HAIKU_IN, output_per_mtok=HAIKU_OUT),
), student_usd_per_hour=0.0)
_ids = itertools.count(1)


def span(name: str, trace: bytes, attrs: dict, *, parent: bytes = b"", start_ms: int = 0, end_ms: int = 1000,
         error: bool = False) -> Span:
    s = Span(name=name, trace_id=trace, span_id=next(_ids).to_bytes(8, "big"), parent_span_id=parent,
             start_time_unix_nano=T0 + start_ms * 1_000_000, end_time_unix_nano=T0 + end_ms * 1_000_000, kind=3)
    for key, value in attrs.items():
        kv = s.attributes.add()
        kv.key = key
        set_anyvalue(kv.value, value)
    if error:
        s.status.code = Status.STATUS_CODE_ERROR
    return s


def message(*groups: tuple[str, list[Span]]) -> bytes:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "semconv-app"
    for scope, spans in groups:
        ss = rs.scope_spans.add()
        ss.scope.name = scope
        ss.spans.extend(spans)
    return req.SerializeToString()


def lake(tmp_path, *messages: bytes) -> Config:
    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"), pricing=PRICING)
    lake_from_messages(list(messages), cfg)
    return cfg


def chat(provider: str, model: str, **attrs) -> dict:
    return {"gen_ai.operation.name": "chat", "gen_ai.provider.name": provider, "gen_ai.request.model": model,
            **attrs}


@pytest.mark.parametrize("provider", ["deepseek", "groq", "x_ai", "perplexity", "openrouter"])
def test_a_framework_span_and_the_openai_librarys_of_one_call_count_once(tmp_path, provider):
    trace = os.urandom(16)
    usage = {"gen_ai.response.id": "3f2a-resp", "gen_ai.usage.input_tokens": 1000,
             "gen_ai.usage.output_tokens": 100}
    outer = span("chat deepseek-chat", trace, chat(provider, "deepseek-chat", **usage))
    inner = span("chat deepseek-chat", trace, chat("openai", "deepseek-chat", **usage), parent=outer.span_id,
                 start_ms=1, end_ms=999)
    cfg = lake(tmp_path, message(("pydantic-ai", [outer]), ("opentelemetry.util.genai.handler", [inner])))
    want = (1000 * DEEPSEEK_IN + 100 * DEEPSEEK_OUT) / 1e6
    assert q(cfg, "SELECT count(*), sum(cost_usd) FROM calls") == [(1, pytest.approx(want))]
    assert q(cfg, "SELECT count(*), sum(cost_usd) FROM requests") == [(1, pytest.approx(want))]


def test_the_failed_call_without_a_response_id_counts_once_too(tmp_path):
    trace = os.urandom(16)
    err = {"error.type": "RateLimitError"}
    outer = span("chat deepseek-chat", trace, chat("deepseek", "deepseek-chat", **err), error=True)
    inner = span("chat deepseek-chat", trace, chat("openai", "deepseek-chat", **err), parent=outer.span_id,
                 start_ms=1, end_ms=999, error=True)
    cfg = lake(tmp_path, message(("pydantic-ai", [outer]), ("opentelemetry.util.genai.handler", [inner])))
    assert q(cfg, "SELECT count(*), count(*) FILTER (WHERE error_type IS NOT NULL) FROM calls") == [(1, 1)]


def test_two_calls_to_two_servers_in_one_trace_stay_two(tmp_path):
    """The "openai" span takes the family of its own response id's span, not any span's of the trace."""
    trace = os.urandom(16)
    spans = []
    for i, provider in enumerate(("deepseek", "groq")):
        usage = {"gen_ai.response.id": f"resp-{i}", "gen_ai.usage.input_tokens": 1000,
                 "gen_ai.usage.output_tokens": 100}
        outer = span("chat deepseek-chat", trace, chat(provider, "deepseek-chat", **usage), start_ms=2000 * i,
                     end_ms=2000 * i + 1000)
        inner = span("chat deepseek-chat", trace, chat("openai", "deepseek-chat", **usage), parent=outer.span_id,
                     start_ms=2000 * i + 1, end_ms=2000 * i + 999)
        spans.append((outer, inner))
    cfg = lake(tmp_path, message(("pydantic-ai", [o for o, _ in spans]),
                                 ("opentelemetry.util.genai.handler", [i for _, i in spans])))
    want = (1000 * DEEPSEEK_IN + 100 * DEEPSEEK_OUT) / 1e6
    assert q(cfg, "SELECT response_id, cost_usd FROM calls ORDER BY 1") == [
        ("resp-0", pytest.approx(want)), ("resp-1", pytest.approx(want))]


def test_pydantic_ais_bedrock_and_the_botocore_span_inside_count_once(tmp_path):
    trace = os.urandom(16)
    model = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
    outer = span(f"chat {model}", trace, chat("bedrock", model, **{
        "gen_ai.response.id": "a1b2c3", "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 100}))
    inner = span("chat", trace, chat("aws.bedrock", model, **{
        "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 100}), parent=outer.span_id,
        start_ms=1, end_ms=999)
    cfg = lake(tmp_path, message(("pydantic-ai", [outer]),
                                 ("opentelemetry.instrumentation.botocore.bedrock-runtime", [inner])))
    assert q(cfg, "SELECT count(*) FROM calls") == [(1,)]
    assert q(cfg, "SELECT count(*) FROM requests") == [(1,)]


def test_a_retrieval_is_no_call(tmp_path):
    trace = os.urandom(16)
    retrieval = span("retrieval docs", trace, {"gen_ai.operation.name": "retrieval",
                                               "gen_ai.request.model": "claude-haiku-4-5",
                                               "gen_ai.data_source.id": "kb-1"})
    call = span("chat claude-haiku-4-5", trace, chat("anthropic", "claude-haiku-4-5", **{
        "gen_ai.response.id": "msg_01", "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 100}),
        start_ms=1000, end_ms=2000)
    cfg = lake(tmp_path, message(("app", [retrieval, call])))
    want = (1000 * HAIKU_IN + 100 * HAIKU_OUT) / 1e6
    assert q(cfg, "SELECT operation, cost_usd FROM calls") == [("chat", pytest.approx(want))]


def test_an_answers_count_without_its_inputs_is_unpriced_not_a_free_prompt(tmp_path):
    trace = os.urandom(16)
    call = span("chat claude-haiku-4-5", trace, chat("anthropic", "claude-haiku-4-5", **{
        "gen_ai.response.id": "msg_02", "gen_ai.usage.output_tokens": 100}))
    cfg = lake(tmp_path, message(("app", [call])))
    assert q(cfg, "SELECT input_tokens, output_tokens, cost_usd, pricing_status, "
                  "contains(data_quality, 'gen_ai.usage.input_tokens:missing') FROM calls") == [
        (None, 100, None, "incomplete_usage", True)]


def test_an_embedding_reports_only_its_input(tmp_path):
    """An embedding answers with no tokens: its missing output count is no gap (priced from the input)."""
    trace = os.urandom(16)
    call = span("embeddings deepseek-chat", trace, {"gen_ai.operation.name": "embeddings",
                                                    "gen_ai.provider.name": "deepseek",
                                                    "gen_ai.request.model": "deepseek-chat",
                                                    "gen_ai.usage.input_tokens": 1000})
    cfg = lake(tmp_path, message(("app", [call])))
    assert q(cfg, "SELECT input_tokens, cost_usd, pricing_status FROM calls") == [
        (1000, pytest.approx(1000 * DEEPSEEK_IN / 1e6), "priced")]
