"""One span's attributes → what it says about its model call, per instrumentation family (no pricing).

Each row is a span as its instrumentation writes it (keys copied from that package's source, see
docs/telemetry.md) and the reading a person expects from it: counts with the cache included, the
provider lower-cased, None for spans that are no model call.
"""

from __future__ import annotations

import pytest

from costline.processors.spellings import CallReading, read_call
from costline.sim.synth import span

T0 = 1_780_000_000_000_000_000


def _read(attrs: dict, name: str = "call", scope: str | None = None, failed: bool = False):
    s = span(name, trace_id=b"\x01" * 16, span_id=b"\x02" * 8, start_ns=T0, end_ns=T0 + 1, attributes=attrs)
    get = {kv.key: kv.value for kv in s.attributes}.get
    bad: list[str] = []
    return read_call(name, get, scope, failed, bad), bad


READS = [
    pytest.param(
        {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "Anthropic", "gen_ai.request.model": "claude-haiku-4-5",
         "gen_ai.usage.input_tokens": 1200, "gen_ai.usage.output_tokens": 40,
         "gen_ai.usage.cache_read.input_tokens": 1000},
        "chat anthropic", None,
        ("chat", "anthropic", "claude-haiku-4-5", None, 1200, 40, 1000, None, None, ()),
        id="genai-conventions"),
    pytest.param(  # OpenLIT: Anthropic's own input_tokens, without the cache
        {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic", "gen_ai.request.model": "claude-haiku-4-5",
         "gen_ai.usage.input_tokens": 200, "gen_ai.usage.output_tokens": 40,
         "gen_ai.usage.cache_read_input_tokens": 1000, "gen_ai.usage.cache_creation_input_tokens": 5},
        "chat claude-haiku-4-5", "openlit.instrumentation.anthropic",
        ("chat", "anthropic", "claude-haiku-4-5", None, 1205, 40, 1000, 5, None, ()),
        id="openlit-input-without-cache"),
    pytest.param(  # an instrumentation costline does not know, writing Anthropic's own input_tokens: an input
        # under its cache reads cannot include them, so it is read as the API's (10 fresh + 1000 read + 5 written)
        {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic", "gen_ai.request.model": "claude-haiku-4-5",
         "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 40,
         "gen_ai.usage.cache_read.input_tokens": 1000, "gen_ai.usage.cache_creation.input_tokens": 5},
        "chat claude-haiku-4-5", "some.unknown.instrumentation",
        ("chat", "anthropic", "claude-haiku-4-5", None, 1015, 40, 1000, 5, None, ()),
        id="unknown-scope-input-under-its-cache"),
    pytest.param(  # the Vercel AI SDK's legacy scope: provider and API in one, operation from the name
        {"gen_ai.system": "anthropic.messages", "gen_ai.request.model": "claude-haiku-4-5",
         "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 3},
        "ai.generateText.doGenerate", "ai",
        ("chat", "anthropic", "claude-haiku-4-5", None, 10, 3, None, None, None, ()),
        id="ai-sdk-legacy"),
    pytest.param(  # its embedding calls carry no gen_ai.* at all
        {"ai.model.id": "text-embedding-3-small", "ai.model.provider": "openai.embedding", "ai.usage.tokens": 12,
         "ai.operationId": "ai.embedMany.doEmbed"},
        "ai.embedMany.doEmbed", "ai",
        ("embeddings", "openai", "text-embedding-3-small", None, 12, None, None, None, None,
         ("ai.usage.tokens:missing",)),
        id="ai-sdk-legacy-embedding"),
    pytest.param(  # OpenTelemetry's botocore instrumentation on Bedrock's Converse: inputTokens without the cache
        {"gen_ai.operation.name": "chat", "gen_ai.system": "aws.bedrock",
         "gen_ai.request.model": "us.anthropic.claude-haiku-4-5-20251001-v1:0", "gen_ai.usage.input_tokens": 5,
         "gen_ai.usage.output_tokens": 61, "gen_ai.usage.cache_read.input_tokens": 160,
         "gen_ai.usage.cache_creation.input_tokens": 20},
        "chat us.anthropic.claude-haiku-4-5-20251001-v1:0", "opentelemetry.instrumentation.botocore.bedrock-runtime",
        ("chat", "aws.bedrock", "us.anthropic.claude-haiku-4-5-20251001-v1:0", None, 185, 61, 160, 20, None, ()),
        id="botocore-converse-input-without-cache"),
    pytest.param(  # OpenLLMetry's Gemini: output = candidates only, the thoughts only in the total
        {"gen_ai.operation.name": "generate_content", "gen_ai.provider.name": "gcp.gen_ai",
         "gen_ai.request.model": "gemini-2.5-flash", "gen_ai.usage.input_tokens": 6,
         "gen_ai.usage.output_tokens": 27, "gen_ai.usage.total_tokens": 59},
        "generate_content gemini-2.5-flash", "opentelemetry.instrumentation.google_generativeai",
        ("generate_content", "gcp.gen_ai", "gemini-2.5-flash", None, 6, 53, None, None, None, ()),
        id="openllmetry-gemini-thoughts-in-total"),
    pytest.param(  # elsewhere a total is not read (OpenLLMetry's Anthropic total includes the cache)
        {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic", "gen_ai.request.model": "claude-haiku-4-5",
         "gen_ai.usage.input_tokens": 6, "gen_ai.usage.output_tokens": 27, "gen_ai.usage.total_tokens": 59},
        "anthropic.chat", "opentelemetry.instrumentation.anthropic",
        ("chat", "anthropic", "claude-haiku-4-5", None, 6, 27, None, None, None, ()),
        id="total-not-read-elsewhere"),
    pytest.param(  # Strands Agents names itself as the system: no provider (the model prices the call)
        {"gen_ai.operation.name": "chat", "gen_ai.system": "strands-agents", "gen_ai.request.model": "claude-haiku-4-5",
         "gen_ai.usage.input_tokens": 121, "gen_ai.usage.output_tokens": 9},
        "chat", "strands.telemetry.tracer",
        ("chat", None, "claude-haiku-4-5", None, 121, 9, None, None, None, ()),
        id="strands-chat"),
    pytest.param(  # Agent Framework's Anthropic client: Anthropic's input, without the cache
        {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic", "gen_ai.request.model": "claude-haiku-4-5",
         "gen_ai.usage.input_tokens": 5, "gen_ai.usage.output_tokens": 9, "gen_ai.usage.cache_read.input_tokens": 116,
         "gen_ai.response.finish_reasons": '["end_turn"]'},
        "chat claude-haiku-4-5", "agent_framework",
        ("chat", "anthropic", "claude-haiku-4-5", None, 121, 9, 116, None, ["end_turn"], ()),
        id="agent-framework-anthropic"),
    pytest.param(  # Spring AI (Micrometer, every value a string): Anthropic's input without the cache, "none"
        {"gen_ai.operation.name": "chat", "gen_ai.system": "anthropic", "gen_ai.request.model": "claude-haiku-4-5",
         "gen_ai.response.model": "none", "gen_ai.usage.input_tokens": "10", "gen_ai.usage.output_tokens": "7",
         "gen_ai.usage.cache_read.input_tokens": "480"},
        "chat claude-haiku-4-5", "org.springframework.boot",
        ("chat", "anthropic", "claude-haiku-4-5", None, 490, 7, 480, None, None, ()),
        id="spring-ai-anthropic"),
    pytest.param(  # the Anthropic Java SDK's own spans: the stop reason only
        {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic", "gen_ai.request.model": "claude-haiku-4-5",
         "gen_ai.usage.input_tokens": 490, "gen_ai.usage.output_tokens": 7, "anthropic.message.stop_reason": "end_turn"},
        "anthropic.messages.create", "com.anthropic.sdk.java",
        ("chat", "anthropic", "claude-haiku-4-5", None, 490, 7, None, None, ["end_turn"], ()),
        id="anthropic-java"),
    pytest.param(
        {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini"},
        "chat", None,
        ("chat", None, "gpt-4o-mini", None, None, None, None, None, None,
         ("gen_ai.usage.input_tokens:missing", "gen_ai.usage.output_tokens:missing")),
        id="genai-without-usage"),
    pytest.param(
        {"openinference.span.kind": "LLM", "llm.provider": "anthropic", "llm.model_name": "claude-haiku-4-5",
         "llm.token_count.prompt": 1200, "llm.token_count.completion": 40,
         "llm.token_count.prompt_details.cache_read": 1000},
        "Messages", None,
        ("chat", "anthropic", "claude-haiku-4-5", "claude-haiku-4-5", 1200, 40, 1000, None, None,
         ("llm.token_count.prompt:missing", "llm.token_count.completion:missing")),
        id="openinference-llm"),
    pytest.param(  # Langfuse in Anthropic's shape: input without the cache
        {"langfuse.observation.type": "generation", "langfuse.observation.model.name": "claude-haiku-4-5",
         "langfuse.observation.usage_details":
             '{"input_tokens": 200, "output_tokens": 40, "cache_read_input_tokens": 1000}'},
        "generation", "langfuse-sdk",
        ("chat", None, "claude-haiku-4-5", "claude-haiku-4-5", 1200, 40, 1000, None, None,
         ("langfuse.observation.usage_details:missing",)),
        id="langfuse-anthropic-shape"),
]


@pytest.mark.parametrize("attrs, name, scope, expected", READS)
def test_each_family_reads_as_the_genai_conventions(attrs, name, scope, expected):
    reading, bad = _read(attrs, name, scope)
    assert reading == CallReading(*expected)
    assert bad == []


NOT_CALLS = [
    pytest.param({"gen_ai.operation.name": "invoke_agent", "gen_ai.request.model": "claude-haiku-4-5",
                  "gen_ai.usage.input_tokens": 900}, "invoke_agent support", None, id="agent-run"),
    pytest.param({"gen_ai.operation.name": "execute_tool"}, "execute_tool lookup", None, id="tool"),
    pytest.param({"openinference.span.kind": "CHAIN"}, "RunnableSequence", None, id="openinference-chain"),
    pytest.param({"gen_ai.operation.name": "execute_event_loop_cycle", "gen_ai.system": "strands-agents",
                  "gen_ai.usage.input_tokens": 300}, "execute_event_loop_cycle", "strands.telemetry.tracer",
                 id="strands-cycle"),
    pytest.param({"gen_ai.operation.name": "plan_step", "gen_ai.usage.input_tokens": 300}, "plan", None,
                 id="unknown-operation-without-a-model"),
    pytest.param({"openinference.span.kind": "LLM", "llm.provider": "anthropic"}, "Messages.count_tokens", None,
                 id="openinference-count-tokens"),
    pytest.param({"langfuse.observation.type": "span"}, "retrieve", "langfuse-sdk", id="langfuse-span"),
    pytest.param({"http.method": "POST"}, "POST /v1/messages", None, id="not-genai"),
    pytest.param({"ai.model.id": "text-embedding-3-small", "ai.usage.tokens": 34}, "ai.embedMany", "ai",
                 id="ai-sdk-embed-many-around-its-calls"),
    pytest.param({"ai.model.id": "text-embedding-3-small", "ai.usage.tokens": 34}, "x.doEmbed", "other",
                 id="doEmbed-of-another-scope"),
    pytest.param({"gen_ai.operation.name": "chat", "gen_ai.request.model": "claude-haiku-4-5",
                  "logfire.span_type": "span"}, "Message with 'claude-haiku-4-5'", "logfire.anthropic",
                 id="logfire-stream-request"),
]


@pytest.mark.parametrize("attrs, name, scope", NOT_CALLS)
def test_spans_that_are_no_model_call_read_as_none(attrs, name, scope):
    assert _read(attrs, name, scope)[0] is None


def test_a_failed_logfire_request_span_is_the_call():
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "claude-haiku-4-5", "logfire.span_type": "span"}
    reading, _ = _read(attrs, "Message with 'claude-haiku-4-5'", "logfire.anthropic", failed=True)
    assert reading is not None and reading.operation == "chat"


@pytest.mark.parametrize("value, flag", [
    (float("nan"), "gen_ai.usage.input_tokens:not_finite"),
    (-3, "gen_ai.usage.input_tokens:negative"),
    ("many", "gen_ai.usage.input_tokens:not_a_number"),
])
def test_unusable_counts_read_as_none_and_are_named(value, flag):
    reading, bad = _read({"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": value,
                          "gen_ai.usage.output_tokens": 5})
    assert reading.input_tokens is None and reading.output_tokens == 5
    assert bad == [flag]


def test_the_ai_sdks_nan_embedding_tokens_are_named_not_read_as_zero():
    reading, bad = _read({"ai.model.id": "text-embedding-3-small", "ai.usage.tokens": float("nan")},
                         "ai.embed.doEmbed", "ai")
    assert reading.input_tokens is None and bad == ["ai.usage.tokens:not_finite"]


@pytest.mark.parametrize("value, expected", [
    ('["stop"]', ["stop"]),
    ('["stop", "length"]', ["stop", "length"]),
    ("stop", ["stop"]),
    ("[not json", ["[not json"]),
    ('[1, 2]', ["[1, 2]"]),  # not a list of strings: the string as it is
    (["end_turn"], ["end_turn"]),
])
def test_finish_reasons_as_an_array_or_a_json_string(value, expected):
    reading, _ = _read({"gen_ai.operation.name": "chat", "gen_ai.request.model": "m",
                        "gen_ai.response.finish_reasons": value})
    assert reading.finish_reasons == expected


@pytest.mark.parametrize("output, response_id", [
    ('{"id":"resp_0a1b2c","object":"response","created_at":1}', "resp_0a1b2c"),
    ('{ "id": "chatcmpl-9x", "choices": []}', "chatcmpl-9x"),
    ('{"object":"response","id":"resp_late"}', None),  # not where the API's JSON puts it: not guessed
    ('{"id":"' + "x" * 300 + '"}', None),  # past the bounded prefix
    ("plain text answer", None),
])
def test_openinference_response_id_from_the_start_of_its_output_json(output, response_id):
    reading, _ = _read({"openinference.span.kind": "LLM", "llm.model_name": "gpt-5-mini", "output.value": output,
                        "output.mime_type": "application/json"}, "Response")
    assert reading.response_id == response_id


READ_BACK = '{"id":"resp_0a1b2c","object":"response","created_at":1}'
GATEWAY_READ_BACK = '{"id":"resp_costline_4f1c","object":"response","created_at":1}'  # costline serve's answer


@pytest.mark.parametrize("attrs, is_call", [
    # responses.retrieve / chat.completions.retrieve of costline serve's answer (no request body, the gateway's id):
    # the gateway's request counts it, and it serves no background response: no call
    ({"input.value": "{}", "llm.invocation_parameters": "{}", "output.value": GATEWAY_READ_BACK}, False),
    ({"input.value": " { } ", "output.value": GATEWAY_READ_BACK}, False),
    ({"input.value": "{}", "output.value": '{"id":"chatcmpl-costline-9x","choices":[]}'}, False),
    # another server's response read back with its usage: a call (a background response's create had no tokens: this
    # is what says its cost; in one trace the create and it share the id and count once)
    ({"input.value": "{}", "llm.invocation_parameters": "{}", "output.value": READ_BACK}, True),
    # a create: its body (model, input) is in input.value and invocation parameters
    ({"input.value": '{"model": "gpt-5-mini", "input": "hi"}', "llm.invocation_parameters": '{"model": "gpt-5-mini"}',
      "output.value": GATEWAY_READ_BACK}, True),
    ({"input.value": "{}", "llm.invocation_parameters": '{"model": "gpt-5-mini"}', "output.value": GATEWAY_READ_BACK},
     True),
    # no request body and no token counts: a poll of a background response still running, a list of a response's
    # input items (responses.input_items.list), a failed read-back: no call
    ({"input.value": "{}", "output.value": READ_BACK, "llm.token_count.prompt": None,
      "llm.token_count.completion": None}, False),
    ({"input.value": "{}", "output.value": '{"data":[{"id":"msg_1","type":"message"}],"object":"list"}',
      "llm.token_count.prompt": None, "llm.token_count.completion": None}, False),
    ({"input.value": "{}", "llm.invocation_parameters": "{}", "llm.token_count.prompt": None,
      "llm.token_count.completion": None}, False),
    # a body (outputs hidden, or a failed call): a call, as before
    ({"input.value": '{"model": "gpt-5-mini", "input": "hi"}', "llm.token_count.prompt": None,
      "llm.token_count.completion": None}, True),
])
def test_which_openinference_spans_without_a_request_body_are_calls(attrs, is_call):
    attrs = {"llm.token_count.prompt": 7, "llm.token_count.completion": 51, **attrs}
    reading, _ = _read({"openinference.span.kind": "LLM", "llm.model_name": "gpt-5-mini",
                        **{k: v for k, v in attrs.items() if v is not None}}, "Response")
    assert (reading is not None) is is_call
