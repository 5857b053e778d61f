"""MLflow Tracing's spans: each model call its autologging traced counted once, priced from its token usage.

MLflow Tracing (``mlflow-tracing`` / ``mlflow``) traces an app's model calls with one line per library
(``mlflow.anthropic.autolog()``, ``mlflow.openai.autolog()``, ``mlflow.langchain.autolog()``, ...) and, as its docs
say, exports them to an OpenTelemetry Collector when ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set. Its spans speak
MLflow's own attributes, every value JSON-encoded: ``mlflow.spanType`` (``"CHAT_MODEL"``), ``mlflow.llm.model``,
``mlflow.chat.tokenUsage`` (an object), ``mlflow.spanInputs`` / ``mlflow.spanOutputs`` (the call's arguments and
the SDK's answer). costline read none of them: every call of such an app was missing from the lake.

mlflow-tracing 3.17.2 cannot share the test venv (its dependencies are unpinned there and it brings the Databricks
SDK), so its spans were recorded in a virtual environment of its own (anthropic 2.17.0, openai 3.63.0,
langchain-anthropic 1.7.10, opentelemetry-sdk 1.45.2) against costline's stand-in, as the OTLP/HTTP requests MLflow
sent, with the stand-in's log of what it served, into ``tests/data/mlflow_spans.json``
(``tests/data/recorders/mlflow_probe.py``; the README there says how to record again). The expected figures are
the stand-in's log priced with the hand-written prices of tests/test_ingest_agent_frameworks.py, and what the SDKs
returned to the app.
"""

from __future__ import annotations

import base64
import collections
import gzip
import json
import pathlib

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from costline.pricing import PricingTable
from costline.processors.records import CallRow, flatten_span
from costline.sim.synth import span

from figures_lake import lake_from_messages, query_lake as q
from test_ingest_agent_frameworks import GPT_IN, GPT_OUT, cfg, served_usd  # noqa: F401 (cfg: a fixture)

DATA = pathlib.Path(__file__).parent / "data" / "mlflow_spans.json"


def recorded(mode: str) -> tuple[list[bytes], list[dict], list[dict]]:
    got = json.loads(DATA.read_text())["modes"][mode]
    return [gzip.decompress(base64.b64decode(m)) for m in got["otlp_gzip"]], got["served"], got["runs"]


def spans_of(messages: list[bytes]) -> list[tuple[str, object]]:
    return [(ss.scope.name, s) for value in messages for rs in ExportTraceServiceRequest.FromString(value).resource_spans
            for ss in rs.scope_spans for s in ss.spans]


def attr(s, key: str):
    for kv in s.attributes:
        if kv.key == key:
            return getattr(kv.value, kv.value.WhichOneof("value"))
    return None


def calls(cfg, columns: str) -> list[tuple]:
    return q(cfg, f"SELECT {columns} FROM calls ORDER BY ts, span_id")


def totals(cfg, columns: str) -> list[tuple]:
    return q(cfg, f"SELECT {columns} FROM calls")


def test_the_recording_is_what_mlflow_autologging_exports():
    """What the tests below rely on: one ``mlflow.tracing.provider`` scope for every flavor, JSON-encoded values,
    usage only where the SDK's answer had it (not on ``stream=True``, nor on an embedding), and with LangChain and
    the anthropic SDK both autologged two CHAT_MODEL spans of each call, the SDK's inside LangChain's."""
    kinds = {}
    for mode in ("anthropic", "openai", "langchain"):
        spans = spans_of(recorded(mode)[0])
        assert {scope for scope, _ in spans} == {"mlflow.tracing.provider"}
        kinds[mode] = collections.Counter((attr(s, "mlflow.spanType"), attr(s, "mlflow.message.format"),
                                           attr(s, "mlflow.chat.tokenUsage") is not None) for _, s in spans)
    assert kinds["anthropic"] == {('"CHAT_MODEL"', '"anthropic"', True): 4, ('"CHAT_MODEL"', '"anthropic"', False): 2}
    assert kinds["openai"] == {('"CHAT_MODEL"', '"openai"', True): 3, ('"CHAT_MODEL"', '"openai"', False): 1,
                               ('"EMBEDDING"', None, False): 1}
    assert kinds["langchain"] == {('"CHAT_MODEL"', '"langchain"', True): 2, ('"CHAT_MODEL"', '"langchain"', False): 1,
                                  ('"CHAT_MODEL"', '"anthropic"', False): 3}
    inner = [s for _, s in spans_of(recorded("langchain")[0]) if attr(s, "mlflow.message.format") == '"anthropic"']
    assert all(s.parent_span_id for s in inner)


def test_anthropic_autolog_calls_are_counted_and_priced_from_mlflows_token_usage(cfg):
    """``mlflow.anthropic.autolog()``: a call refused with 400, a prompt-cache write and read, an async call, a
    ``stream=True`` call and a tool call. Each is one call in the lake with the stand-in's counts (MLflow's input
    includes the cache, as the conventions' does), priced as the stand-in's log says. The streamed call's span has
    no usage (MLflow never sees the stream's end): unpriced, never $0."""
    messages, served, runs = recorded("anthropic")
    lake_from_messages(messages, cfg)
    streamed = 4  # the fifth request the stand-in served
    assert [r["label"] for r in runs][streamed] == "stream=True" and served[streamed]["paid"]
    n, usd, reads, writes = served_usd([e for i, e in enumerate(served) if i != streamed])
    assert totals(cfg, "count(*), count(error_type), count(cost_usd), sum(cost_usd), sum(cache_read_tokens), "
                      "sum(cache_creation_tokens), min(instrumentation), max(instrumentation), min(service_name)") == [
        (6, 1, 5, pytest.approx(usd, rel=1e-9), reads, writes, "mlflow.anthropic", "mlflow.anthropic",
         "mlflow-anthropic")]
    assert n == 4 and reads == writes == 323
    got = calls(cfg, "input_tokens, output_tokens, response_id, finish_reasons, pricing_status, data_quality")
    want = [(e["input_tokens"], e["output_tokens"]) for e in served]
    assert [g[:2] for g in got] == [(0, 0), *want[1:streamed], (None, None), *want[streamed + 1:]]
    assert [g[2] for g in got] == [None, "msg_standin_00000001", "msg_standin_00000002", "msg_standin_00000003",
                                   None, "msg_standin_00000006"]
    assert got[streamed][4:] == ("incomplete_usage", "mlflow.chat.tokenUsage:missing")
    assert [g[3] for g in got] == [None, ["end_turn"], ["end_turn"], ["max_tokens"], None, ["tool_use"]]


def test_anthropic_autolog_content_is_read_into_the_conventions_messages(cfg):
    """The call's arguments (system blocks, messages) and the SDK's answer (text, a tool call) as the GenAI
    conventions' messages, each as the app sent it and the SDK returned it; a streamed call's output is MLflow's
    repr of the stream object, which is no answer."""
    messages, _, runs = recorded("anthropic")
    lake_from_messages(messages, cfg)
    got = [(json.loads(i) if i else None, json.loads(o) if o else None)
           for i, o in calls(cfg, "input_messages, output_messages")]
    system = "Mode anthropic. " + "You answer questions about our refund policy. " * 40
    assert got[1] == ([{"role": "system", "parts": [{"type": "text", "content": system}]},
                       {"role": "user", "parts": [{"type": "text", "content": "Where is my parcel?"}]}],
                      [{"role": "assistant", "parts": [{"type": "text", "content": runs[1]["text"]}],
                        "finish_reason": "end_turn"}])
    assert got[4] == ([{"role": "user", "parts": [{"type": "text", "content": "Streamed: how long is shipping?"}]}],
                      None)
    use = runs[5]["tool_uses"][0]
    assert got[5][1] == [{"role": "assistant", "finish_reason": "tool_use", "parts": [
        {"type": "text", "content": runs[5]["text"]},
        {"type": "tool_call", "id": use["id"], "name": "order_status", "arguments": use["input"]}]}]
    assert got[0][1] is None and got[0][0][-1] == {"role": "user", "parts": [{"type": "text", "content": "bad"}]}


def test_openai_autolog_calls_chat_stream_responses_and_an_embedding(cfg):
    """``mlflow.openai.autolog()``: a chat completion refused with 400, one answered, one streamed with
    ``include_usage`` (MLflow aggregates its chunks), a Responses API call and an embedding. The flavor writes no
    provider (its format says openai) and no model on a failed call's span (its ``model`` argument does). The
    embedding's span has no usage: unpriced, never $0."""
    messages, served, runs = recorded("openai")
    lake_from_messages(messages, cfg)
    chats = [e for e in served if e["model"] == "costline-student"]
    _, usd, _, _ = served_usd(chats)
    got = calls(cfg, "operation, provider, model, input_tokens, output_tokens, error_type IS NOT NULL, pricing_status")
    assert got == [("chat", "openai", "costline-student", 0, 0, True, "priced"),
                   *[("chat", "openai", "costline-student", e["input_tokens"], e["output_tokens"], False, "priced")
                     for e in chats[1:3]],
                   ("embeddings", None, "costline-embed", 0, 0, False, "unknown_model"),
                   ("chat", "openai", "costline-student", chats[3]["input_tokens"], chats[3]["output_tokens"], False,
                    "priced")]
    assert totals(cfg, "sum(cost_usd)") == [(pytest.approx(usd, rel=1e-9),)]
    assert usd == pytest.approx(sum(e["input_tokens"] * GPT_IN + e["output_tokens"] * GPT_OUT for e in chats) / 1e6)
    answers = [json.loads(o)[0]["parts"][0]["content"] if o else None for (o,) in calls(cfg, "output_messages")]
    assert [answers[1], answers[4]] == [runs[1]["text"], runs[4]["text"]]  # as the SDK returned them
    assert answers[0] is answers[3] is None and answers[2].endswith(")")  # the stream's text, its chunks joined


def test_langchain_and_anthropic_flavors_count_each_call_once(cfg):
    """``mlflow.langchain.autolog()`` with ``mlflow.anthropic.autolog()``: each ``ChatAnthropic.invoke`` is a
    LangChain CHAT_MODEL span (with the usage) around the SDK's (none: LangChain reads the raw response). Both
    come in one scope; their flavors (``mlflow.langchain``, ``mlflow.anthropic``) tell them apart, so each call is
    counted once, priced as served, and the failed one is one failure."""
    messages, served, _ = recorded("langchain")
    lake_from_messages(messages, cfg)
    _, usd, _, _ = served_usd(served)
    assert q(cfg, "SELECT count(*) FROM calls_raw") == [(6,)]
    assert totals(cfg, "count(*), count(error_type), sum(cost_usd), count(*) FILTER (WHERE cost_usd IS NULL)") == [
        (3, 1, pytest.approx(usd, rel=1e-9), 0)]
    assert calls(cfg, "instrumentation, input_tokens, output_tokens") == [
        ("mlflow.langchain", 0, 0), *[("mlflow.langchain", e["input_tokens"], e["output_tokens"]) for e in served[1:]]]


def test_mlflows_genai_conventions_export_is_read_and_leaves_out_the_cache_counts(cfg):
    """With ``MLFLOW_ENABLE_OTEL_GENAI_SEMCONV=true`` MLflow exports the GenAI conventions' attributes, read like any
    other instrumentation's: every call counted, uncached ones priced as served. That export carries no cache
    counts (MLflow 3.17.2 writes the input with the cache in it and nothing else), so a cached call is priced as
    all fresh input: MLflow's native export (the default) keeps them."""
    messages, served, _ = recorded("semconv")
    lake_from_messages(messages, cfg)
    got = calls(cfg, "input_tokens, cache_read_tokens + cache_creation_tokens, cost_usd, error_type IS NOT NULL")
    assert [(g[0], g[1], g[3]) for g in got] == [(0, 0, True), (328, 0, False), (328, 0, False), (7, 0, False),
                                                 (None, 0, False), (8, 0, False)]
    assert [e["cache_read_tokens"] + e["cache_creation_tokens"] for e in served] == [0, 323, 323, 0, 0, 0]
    uncached = [e for e in served[3:] if e["paid"] and e is not served[4]]
    assert sum(g[2] for g in got[3:] if g[2] is not None) == pytest.approx(served_usd(uncached)[1], rel=1e-9)


# -- MLflow's spelling, value by value (no recording) ----------------------------------------------------------

_TID, _SID = bytes.fromhex("0af7651916cd43dd8448eb211c80319c"), bytes.fromhex("b7ad6b7169203331")


def mlflow_call(**attrs) -> CallRow | None:
    base = {"mlflow.spanType": '"CHAT_MODEL"', "mlflow.llm.model": '"claude-haiku-4-5"',
            "mlflow.llm.provider": '"anthropic"', "mlflow.message.format": '"anthropic"'}
    base.update({k.replace("__", "."): v for k, v in attrs.items()})
    return flatten_span(span("Messages.create", trace_id=_TID, span_id=_SID, start_ns=10**18, end_ns=10**18 + 10**6,
                             attributes={k: v for k, v in base.items() if v is not None}),
                        PricingTable(), scope="mlflow.tracing.provider")


@pytest.mark.parametrize(("usage", "want", "flags"), [
    ('{"input_tokens": 12, "output_tokens": 3}', (12, 3, 0, 0), None),
    ('{"input_tokens": 12, "output_tokens": 3, "cache_read_input_tokens": 10}', (12, 3, 10, 0), None),
    # an MLflow before it added Anthropic's cache to the input: an input smaller than its own cache cannot hold it
    ('{"input_tokens": 2, "output_tokens": 3, "cache_read_input_tokens": 10}', (12, 3, 10, 0), None),
    ('{"input_tokens": NaN, "output_tokens": 3}', (None, 3, 0, 0), "mlflow.chat.tokenUsage.input_tokens:out_of_range"),
    ('{"input_tokens": "12", "output_tokens": 3}', (None, 3, 0, 0), "mlflow.chat.tokenUsage.input_tokens:out_of_range"),
    ('{"input_tokens": 12, "output_tokens": -3}', (12, None, 0, 0), "mlflow.chat.tokenUsage.output_tokens:out_of_range"),
    ('{"input_tokens": 1e12, "output_tokens": 3}', (None, 3, 0, 0), "mlflow.chat.tokenUsage.input_tokens:out_of_range"),
    ('[12, 3]', (None, None, None, None), "mlflow.chat.tokenUsage:not_an_object"),
    ('{"input_tokens": 12', (None, None, None, None), "mlflow.chat.tokenUsage:not_an_object"),
])
def test_mlflow_token_usage_values_that_are_no_counts_are_dropped_and_named(usage, want, flags):
    row = mlflow_call(mlflow__chat__tokenUsage=usage)
    assert (row.input_tokens, row.output_tokens, row.cache_read_tokens, row.cache_creation_tokens) == want
    assert row.data_quality == flags
    assert (row.cost_usd is None) == (flags is not None)  # a price from a dropped count would be made up


@pytest.mark.parametrize(("attrs", "want"), [
    ({"mlflow__spanType": '"AGENT"'}, None),  # an agent's run, a chain, a tool, a retriever: no call
    ({"mlflow__spanType": '"TOOL"'}, None),
    ({"mlflow__spanType": '"EMBEDDING"'}, ("embeddings", "anthropic", "claude-haiku-4-5", "mlflow.anthropic")),
    ({"mlflow__spanType": "CHAT_MODEL"}, ("chat", "anthropic", "claude-haiku-4-5", "mlflow.anthropic")),  # not JSON
    ({"mlflow__llm__provider": None, "mlflow__message__format": '"openai"'},
     ("chat", "openai", "claude-haiku-4-5", "mlflow.openai")),
    # a framework's flavor names no provider; an odd flavor is not an instrumentation's name
    ({"mlflow__llm__provider": None, "mlflow__message__format": '"langchain"'},
     ("chat", None, "claude-haiku-4-5", "mlflow.langchain")),
    ({"mlflow__message__format": '"Lang Chain!"'}, ("chat", "anthropic", "claude-haiku-4-5", "mlflow.tracing.provider")),
    ({"mlflow__llm__model": None, "model": '"claude-haiku-4-5"'}, ("chat", "anthropic", "claude-haiku-4-5",
                                                                    "mlflow.anthropic")),
])
def test_mlflow_span_types_flavors_and_providers(attrs, want):
    row = mlflow_call(**attrs)
    assert (row if row is None else (row.operation, row.provider, row.model, row.instrumentation)) == want


@pytest.mark.parametrize(("outputs", "answer", "reasons", "quality"), [
    ('"<anthropic.Stream object at 0x7f0cb5052fd0>"', None, None, None),  # stream=True: the stream object's repr
    ('"<APIResponse [200 OK] type=<class \'anthropic.types.message.Message\'>>"', None, None, None),
    ('"<b>Bold</b> answer"', [{"role": "assistant", "parts": [{"type": "text", "content": "<b>Bold</b> answer"}]}],
     None, None),
    ('{"id": "chatcmpl-1", "model": "m", "choices": [{"finish_reason": "stop", "message": {"role": "assistant", '
     '"content": "Hi"}}]}', [{"role": "assistant", "parts": [{"type": "text", "content": "Hi"}],
                             "finish_reason": "stop"}], ["stop"], None),
    ('{"id": "resp_1", "output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", '
     '"text": "Hi"}]}]}', [{"role": "assistant", "parts": [{"type": "text", "content": "Hi"}]}], None, None),
    ('{"id": "msg_1", "role": "assistant", "stop_reason": "max_tokens", "content": "not blocks but a text"}',
     [{"role": "assistant", "parts": [{"type": "text", "content": "not blocks but a text"}],
       "finish_reason": "max_tokens"}], ["max_tokens"], None),
    ('{"choices": 3}', None, None, None),  # nothing readable: no answer, the call kept
    # cut short (the OTel SDK's attribute length limit): no JSON, so no answer, and said so
    ('{"id": "msg_1", "content": [' * 3000, None, None, "content:unreadable"),
])
def test_mlflow_outputs_are_read_as_answers_and_an_objects_repr_is_none(outputs, answer, reasons, quality):
    row = mlflow_call(mlflow__chat__tokenUsage='{"input_tokens": 1, "output_tokens": 1}', mlflow__spanOutputs=outputs,
                      mlflow__spanInputs='{"messages": [{"role": "user", "content": "Hi?"}]}')
    assert (json.loads(row.output_messages) if row.output_messages else None) == answer
    assert json.loads(row.input_messages) == [{"role": "user", "parts": [{"type": "text", "content": "Hi?"}]}]
    assert row.finish_reasons == reasons and row.cost_usd is not None and row.data_quality == quality


def test_an_mlflow_span_in_another_scope_still_names_its_flavor():
    """The flavor (``mlflow.langchain``) tells two spans of one call apart whatever scope MLflow's tracer has (a
    shared tracer provider, another version); a span type in other casing is the same type."""
    row = flatten_span(span("ChatAnthropic", trace_id=_TID, span_id=_SID, start_ns=10**18, end_ns=10**18 + 10**6,
                            attributes={"mlflow.spanType": '" chat_model "', "mlflow.llm.model": '"claude-haiku-4-5"',
                                        "mlflow.message.format": '"langchain"'}),
                       PricingTable(), scope="my.app.tracer")
    assert (row.operation, row.instrumentation) == ("chat", "mlflow.langchain")
