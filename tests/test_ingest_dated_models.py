"""A framework's span of a model call (no response id) and the SDK instrumentation's span inside it name the model
differently: the framework the alias it asked for (``gpt-4o-mini``), the SDK's the snapshot that answered
(``gpt-4o-mini-2024-07-18``, as api.openai.com answers every alias). They are one call: the call_links view
compares the models without the snapshot suffix pricing's ``normalize_model_id`` strips (``-2024-07-18``,
``-20251001``, ``@20251001``, ``-v1:0``, ``-latest``), but never two different suffixes (two snapshots, two
versions): two models stay two calls.

Recorded: smolagents 1.26.0 traced by OpenInference's smolagents (0.1.43) and OpenAI (0.1.66) instrumentors (a venv
of its own; ``tests/data/recorders/record_smolagents.py`` + ``smolagents_probe.py``) against costline's stand-in,
mode ``dated`` through a proxy that answers with the dated snapshot, mode ``echo`` without it, into
``tests/data/smolagents_dated_spans.json`` with the stand-in's log of what it served: one agent run, three calls,
each smolagents' ``OpenAIModel.generate`` span (``llm.model_name`` = ``gpt-4o-mini``, no response id) around
OpenInference's ``ChatCompletion`` span (the answer's model, the response id in its output).

Expected figures by hand from the list prices below, never costline's pricing code.
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

DATA = pathlib.Path(__file__).parent / "data" / "smolagents_dated_spans.json"
#: gpt-4o-mini's list price, USD per million tokens (input, output).
MINI_IN, MINI_OUT = 0.15, 0.60


def recording(mode: str) -> tuple[list[bytes], list[dict]]:
    got = json.loads(DATA.read_text())["modes"][mode]
    return [gzip.decompress(base64.b64decode(m)) for m in got["otlp_gzip"]], got["served"]


def llm_spans(messages: list[bytes]) -> list[tuple[str, str, str]]:
    out = []
    for value in messages:
        for rs in ExportTraceServiceRequest.FromString(value).resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    a = {kv.key: kv.value.string_value for kv in s.attributes}
                    if a.get("openinference.span.kind") == "LLM":
                        out.append((ss.scope.name, s.name, a["llm.model_name"]))
    return sorted(out)


def with_model(messages: list[bytes], old: str, new: str) -> list[bytes]:
    """The messages with every ``llm.model_name`` ``old`` made ``new``, and the response id smolagents keeps in its
    span's ``output.value`` (``"raw": "ChatCompletion(id='chatcmpl-…'``) made another: two calls of two models have
    two ids, and a shared id says one call whatever the models (tests/test_call_links_smolagents.py)."""
    out = []
    for value in messages:
        req = ExportTraceServiceRequest.FromString(value)
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    for kv in s.attributes:
                        if kv.key == "llm.model_name" and kv.value.string_value == old:
                            kv.value.string_value = new
                        elif kv.key == "output.value":
                            kv.value.string_value = kv.value.string_value.replace(
                                "ChatCompletion(id='", "ChatCompletion(id='framework-")
        out.append(req.SerializeToString())
    return out


@pytest.fixture
def cfg(tmp_path) -> Config:
    return Config(lake=LakeConfig(path=tmp_path / "lake"), pricing=PricingConfig(
        models=(ModelPrice("gpt-4o-mini", "budget", provider="openai", input_per_mtok=MINI_IN,
                           output_per_mtok=MINI_OUT),
                ModelPrice("gpt-4o", "mid", provider="openai", input_per_mtok=2.50, output_per_mtok=10.0)),
        student_usd_per_hour=0.0, student_providers=()))


def test_the_recording_names_the_alias_on_smolagents_span_and_the_snapshot_on_the_sdks():
    messages, served = recording("dated")
    assert llm_spans(messages) == sorted(
        [("openinference.instrumentation.smolagents", "OpenAIModel.generate", "gpt-4o-mini")] * 3
        + [("openinference.instrumentation.openai", "ChatCompletion", "gpt-4o-mini-2024-07-18")] * 3)
    assert [(e["model"], e["input_tokens"], e["output_tokens"]) for e in served] == [
        ("gpt-4o-mini", 850, 12), ("gpt-4o-mini", 905, 12), ("gpt-4o-mini", 179, 62)]


@pytest.mark.parametrize("mode", ["dated", "echo"])
def test_a_framework_span_of_the_alias_and_the_sdks_of_its_snapshot_are_one_call(cfg, mode):
    """By hand: 850/12, 905/12 and 179/62 tokens, 1934 in and 86 out: 1934 × 0.15 + 86 × 0.60 = 290.1 + 51.6
    = 341.7 USD per million → $0.0003417 in three requests. Before the fix the dated mode was six calls and six
    standalone requests at $0.0006834."""
    lake_from_messages(recording(mode)[0], cfg)
    assert q(cfg, "SELECT input_tokens, output_tokens FROM calls ORDER BY ts") == [(850, 12), (905, 12), (179, 62)]
    assert q(cfg, "SELECT count(*), sum(input_tokens), sum(output_tokens), sum(cost_usd) FROM requests") == [
        (3, 1934, 86, pytest.approx(0.0003417, rel=1e-9))]


def test_a_framework_span_and_an_sdk_span_of_another_model_stay_two_calls(cfg):
    """The same recording with the SDK's spans naming another model (gpt-4o's snapshot): six calls, as before."""
    lake_from_messages(with_model(recording("dated")[0], "gpt-4o-mini-2024-07-18", "gpt-4o-2024-08-06"), cfg)
    assert q(cfg, "SELECT model, count(*) FROM calls GROUP BY 1 ORDER BY 1") == [
        ("gpt-4o-2024-08-06", 3), ("gpt-4o-mini", 3)]


# -- the rule, table-driven: a framework's span (no response id) around an SDK instrumentation's span -----------
T0 = 1_780_000_000 * 10**9  # ns
SEC = 10**9
#: every model below at $1 / $2 per million tokens: a call of 1,000 in + 100 out costs 0.001 + 0.0002 = $0.0012
CALL_USD = 0.0012


def _span(ss, *, name: str, span_id: bytes, parent: bytes, start: int, end: int, attrs: dict) -> None:
    sp = ss.spans.add()
    sp.name, sp.trace_id, sp.span_id, sp.parent_span_id = name, b"\x01" * 16, span_id, parent
    sp.start_time_unix_nano, sp.end_time_unix_nano = start, end
    for k, v in attrs.items():
        a = sp.attributes.add()
        a.key = k
        if isinstance(v, int):
            a.value.int_value = v
        else:
            a.value.string_value = v


def _pair(provider: str, outer_model: str, inner_model: str) -> bytes:
    """An app's span, a framework's chat span inside it (no response id) and an SDK instrumentation's inside that
    (with one), the same tokens; each instrumentation its own scope."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "agent-app"
    usage = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": provider,
             "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 100}
    ss = rs.scope_spans.add()
    ss.scope.name = "app"
    _span(ss, name="agent.run", span_id=b"\x0a" * 8, parent=b"", start=T0, end=T0 + 5 * SEC, attrs={})
    ss = rs.scope_spans.add()
    ss.scope.name = "some.agent.framework"
    _span(ss, name=f"chat {outer_model}", span_id=b"\x0b" * 8, parent=b"\x0a" * 8, start=T0 + SEC, end=T0 + 4 * SEC,
          attrs={**usage, "gen_ai.request.model": outer_model})
    ss = rs.scope_spans.add()
    ss.scope.name = "opentelemetry.instrumentation.openai_v2"
    _span(ss, name=f"chat {inner_model}", span_id=b"\x0c" * 8, parent=b"\x0b" * 8, start=T0 + 2 * SEC,
          end=T0 + 3 * SEC, attrs={**usage, "gen_ai.request.model": inner_model, "gen_ai.response.id": "resp-1"})
    return req.SerializeToString()


PAIRS = [
    # (provider, the framework's model, the SDK span's model, calls)
    pytest.param("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", 1, id="alias-and-openai-snapshot"),
    pytest.param("openai", "gpt-4o-mini-2024-07-18", "gpt-4o-mini", 1, id="snapshot-outside-the-alias"),
    pytest.param("anthropic", "claude-haiku-4-5", "claude-haiku-4-5-20251001", 1, id="claude-alias-and-date"),
    pytest.param("anthropic", "claude-3-5-sonnet-latest", "claude-3-5-sonnet-20241022", 1, id="latest-and-date"),
    pytest.param("gcp.vertex_ai", "claude-haiku-4-5@20251001", "claude-haiku-4-5-20251001", 1,
                 id="vertex-at-date-and-dash-date"),
    # Bedrock's global inference profile (a regional one adds the regional endpoint premium to the price)
    pytest.param("aws.bedrock", "claude-haiku-4-5", "global.anthropic.claude-haiku-4-5-20251001-v1:0", 1,
                 id="alias-and-bedrock-profile"),
    pytest.param("aws.bedrock", "global.anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4-5-20251001", 1,
                 id="bedrock-version-after-the-date"),
    pytest.param("openai", "gpt-4o", "gpt-4o-mini-2024-07-18", 2, id="another-model"),
    pytest.param("openai", "gpt-4o-2024-05-13", "gpt-4o-2024-08-06", 2, id="two-snapshots"),
    pytest.param("deepseek", "deepseek-v2", "deepseek-v3", 2, id="two-versions"),
    pytest.param("aws.bedrock", "anthropic.claude-v2", "anthropic.claude-v2:1", 2, id="claude-2-0-and-2-1"),
    pytest.param("aws.bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0",
                 "anthropic.claude-3-5-sonnet-20241022-v2:0", 2, id="claude-3-5-sonnet-v1-and-v2"),
    pytest.param("gemini", "gemini-2.5-flash", "gemini-2.5-flash-lite", 2, id="a-longer-name"),
]


@pytest.mark.parametrize("provider, outer_model, inner_model, calls", PAIRS)
def test_a_framework_span_and_the_sdk_span_inside_it_are_one_call_when_they_name_one_model(
        tmp_path, provider, outer_model, inner_model, calls):
    cfg = Config(lake=LakeConfig(path=tmp_path / "lake"), pricing=PricingConfig(
        models=tuple(ModelPrice(m, "budget", input_per_mtok=1.0, output_per_mtok=2.0)
                     for m in (outer_model, inner_model)),
        student_usd_per_hour=0.0, student_providers=()))
    lake_from_messages([_pair(provider, outer_model, inner_model)], cfg)
    assert q(cfg, "SELECT count(*), sum(cost_usd) FROM requests") == [
        (calls, pytest.approx(calls * CALL_USD, rel=1e-9))]
