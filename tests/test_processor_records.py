"""Span → row flattening, pricing applied, decoding (no broker)."""

from __future__ import annotations

import base64
import json

import pytest

from costline import contract as c
from costline.config import PricingConfig
from costline.lake import SCHEMAS
from costline.otlp import OtlpDecodeError
from costline.pricing import UNKNOWN_MODEL, PricingTable
from costline.processors.buffer import PartitionBuffer, rows_to_tables
from costline.processors.decode import decode_message, flatten_message
from costline.processors.records import CallRow, LookupRow, MemoPricingTable, RequestRow, flatten_span
from costline.sim.synth import export_request, span

TID = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
SID = bytes.fromhex("b7ad6b7169203331")
PARENT = bytes.fromhex("00f067aa0ba902b7")
T0 = 1_780_000_000_000_000_000  # ns
PRICING = PricingTable()


def _span(name: str, attrs: dict, parent: bytes = PARENT, dur_ns: int = 250_000_000):
    return span(name, trace_id=TID, span_id=SID, parent_span_id=parent, start_ns=T0, end_ns=T0 + dur_ns,
                attributes=attrs)


def test_row_fields_match_lake_schemas():
    assert RequestRow._fields == tuple(SCHEMAS["requests"].names)
    assert CallRow._fields == tuple(SCHEMAS["calls"].names)
    assert LookupRow._fields == tuple(SCHEMAS["lookups"].names)


def test_request_span_becomes_request_row():
    row = flatten_span(_span(c.SPAN_REQUEST, {
        c.COSTLINE_REQUEST_ID: "r1", c.COSTLINE_TENANT: "acme", c.COSTLINE_TASK_TYPE: "qa",
        c.COSTLINE_SUBTYPE: "billing", c.COSTLINE_TIER: "student", c.COSTLINE_ROUTED_TIER: "student",
        c.COSTLINE_ATTEMPTS: 2, c.COSTLINE_ESCALATIONS: 1, c.COSTLINE_SUCCESS: True,
        c.GEN_AI_INPUT_MESSAGES: '[{"role":"user"}]', c.GEN_AI_OUTPUT_MESSAGES: '[{"role":"assistant"}]',
    }, parent=b""), PRICING, 3, 42)
    assert row == RequestRow(
        request_id="r1", trace_id=TID.hex(), span_id=SID.hex(), ts=(T0 + 250_000_000) // 1000,
        tenant="acme", task_type="qa", subtype="billing", tier="student", routed_tier="student",
        cache_hit=False, attempts=2, escalations=1, success=True, error_type=None, duration_ms=250.0,
        input_messages='[{"role":"user"}]', output_messages='[{"role":"assistant"}]',
        kafka_partition=3, kafka_offset=42)


@pytest.mark.parametrize("attrs, field, expected", [
    ({}, "request_id", SID.hex()),  # no costline.request.id: the span id
    ({c.COSTLINE_TIER: "cache"}, "cache_hit", True),  # derived from the tier
    ({c.COSTLINE_TIER: "mid", c.COSTLINE_CACHE_HIT: False}, "cache_hit", False),
    ({c.COSTLINE_SUCCESS: "true"}, "success", True),  # tolerant of stringly types
    ({c.COSTLINE_ATTEMPTS: "3"}, "attempts", 3),
    ({c.ERROR_TYPE: "timeout"}, "error_type", "timeout"),
    ({c.GEN_AI_INPUT_MESSAGES: [{"role": "user", "content": "hi"}]}, "input_messages",
     '[{"role":"user","content":"hi"}]'),  # structured content → JSON text
])
def test_request_row_fields(attrs, field, expected):
    row = flatten_span(_span(c.SPAN_REQUEST, attrs, parent=b""), PRICING)
    assert getattr(row, field) == expected


# (attrs, expected cost) — prices from the default table: haiku $0.80/$4, sonnet $3/$15 per MTok.
_HAIKU = {c.GEN_AI_OPERATION_NAME: "chat", c.GEN_AI_REQUEST_MODEL: "claude-haiku-4-5",
          c.GEN_AI_PROVIDER_NAME: "anthropic"}


@pytest.mark.parametrize("attrs, cost, status, tier", [
    ({**_HAIKU, c.GEN_AI_USAGE_INPUT_TOKENS: 1000, c.GEN_AI_USAGE_OUTPUT_TOKENS: 100},
     1000 * 0.8e-6 + 100 * 4e-6, "priced", "budget"),
    # input includes cache read (x0.1) and cache creation (x1.25)
    ({**_HAIKU, c.GEN_AI_USAGE_INPUT_TOKENS: 1000, c.GEN_AI_USAGE_OUTPUT_TOKENS: 100,
      c.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 600, c.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: 200},
     200 * 0.8e-6 + 600 * 0.8e-6 * 0.1 + 200 * 0.8e-6 * 1.25 + 100 * 4e-6, "priced", "budget"),
    # batch API: x0.5
    ({**_HAIKU, c.GEN_AI_USAGE_INPUT_TOKENS: 1000, c.GEN_AI_USAGE_OUTPUT_TOKENS: 100, c.COSTLINE_BATCH: True},
     (1000 * 0.8e-6 + 100 * 4e-6) * 0.5, "priced", "budget"),
    # dated snapshot of sonnet, provider only in the deprecated gen_ai.system
    ({c.GEN_AI_REQUEST_MODEL: "claude-sonnet-4-6-20260101", c.GEN_AI_SYSTEM: "anthropic",
      c.GEN_AI_USAGE_INPUT_TOKENS: 10, c.GEN_AI_USAGE_OUTPUT_TOKENS: 10}, 10 * 3e-6 + 10 * 15e-6, "priced", "mid"),
    # unknown model: NULL cost, never $0
    ({c.GEN_AI_OPERATION_NAME: "chat", c.GEN_AI_REQUEST_MODEL: "gpt-mystery-1",
      c.GEN_AI_USAGE_INPUT_TOKENS: 10}, None, UNKNOWN_MODEL, "unknown"),
    # self-hosted student: no token price (hosting is spread by the views)
    ({c.GEN_AI_OPERATION_NAME: "chat", c.GEN_AI_REQUEST_MODEL: "qwen-7b-student", c.GEN_AI_PROVIDER_NAME: "vllm",
      c.GEN_AI_USAGE_INPUT_TOKENS: 10}, 0.0, "student", "student"),
    # explicit price on the span wins
    ({**_HAIKU, c.GEN_AI_USAGE_INPUT_TOKENS: 1000, c.COSTLINE_COST_USD: 0.5}, 0.5, "explicit", "budget"),
])
def test_call_pricing(attrs, cost, status, tier):
    row = flatten_span(_span("chat x", attrs), MemoPricingTable())
    assert isinstance(row, CallRow)
    assert row.pricing_status == status
    assert row.tier == tier
    assert row.pricing_version == PricingConfig().version
    if cost is None:
        assert row.cost_usd is None
    else:
        assert row.cost_usd == pytest.approx(cost, abs=1e-12)


@pytest.mark.parametrize("attrs, tenant", [
    ({c.COSTLINE_TENANT: "globex"}, "globex"),
    ({}, None),
])
def test_a_call_span_keeps_its_own_tenant(attrs, tenant):
    row = flatten_span(_span("embeddings text-embedding-3-small", {
        c.GEN_AI_OPERATION_NAME: "embeddings", c.GEN_AI_PROVIDER_NAME: "openai",
        c.GEN_AI_REQUEST_MODEL: "text-embedding-3-small", c.GEN_AI_USAGE_INPUT_TOKENS: 12, **attrs}), PRICING)
    assert isinstance(row, CallRow) and row.tenant == tenant


def test_call_row_fields():
    row = flatten_span(_span("chat claude-haiku-4-5", {
        **_HAIKU, c.GEN_AI_RESPONSE_MODEL: "claude-haiku-4-5-20251001", c.GEN_AI_USAGE_INPUT_TOKENS: 5,
        c.GEN_AI_USAGE_OUTPUT_TOKENS: 7, c.GEN_AI_RESPONSE_FINISH_REASONS: ["stop", "length"],
        c.COSTLINE_REQUEST_ID: "r9", c.ERROR_TYPE: "overloaded"}), PRICING, 1, 7)
    assert (row.span_id, row.trace_id, row.parent_span_id, row.request_id) == (SID.hex(), TID.hex(), PARENT.hex(), "r9")
    assert (row.provider, row.model, row.response_model, row.operation) == (
        "anthropic", "claude-haiku-4-5", "claude-haiku-4-5-20251001", "chat")
    assert row.finish_reasons == ["stop", "length"]
    assert row.error_type == "overloaded"
    assert (row.input_tokens, row.output_tokens, row.cache_read_tokens, row.cache_creation_tokens) == (5, 7, 0, 0)
    assert (row.kafka_partition, row.kafka_offset, row.duration_ms) == (1, 7, 250.0)


# OpenInference spellings (Arize Phoenix): prompt includes the cached tokens; prices hand-written
# from the default table (haiku $0.80 / $4 per MTok, cache read x0.1, write x1.25).
_OI = {"openinference.span.kind": "LLM", "llm.provider": "anthropic", "llm.system": "anthropic",
       "llm.model_name": "claude-haiku-4-5"}


@pytest.mark.parametrize("name, attrs, want", [
    # (operation, provider, input, output, read, write, cost, pricing_status, data_quality)
    ("messages.create", {**_OI, "llm.token_count.prompt": 1000, "llm.token_count.completion": 100,
                         "llm.token_count.prompt_details.cache_read": 600,
                         "llm.token_count.prompt_details.cache_write": 200, "llm.token_count.total": 1100},
     ("chat", "anthropic", 1000, 100, 600, 200,
      200 * 0.8e-6 + 600 * 0.8e-6 * 0.1 + 200 * 0.8e-6 * 1.25 + 100 * 4e-6, "priced", None)),
    # OpenAI's instrumentor names only llm.system; the model is the response's
    ("ChatCompletion", {"openinference.span.kind": "LLM", "llm.system": "OpenAI", "llm.model_name": "claude-haiku-4-5",
                        "llm.token_count.prompt": 10, "llm.token_count.completion": 20},
     ("chat", "openai", 10, 20, 0, 0, 10 * 0.8e-6 + 20 * 4e-6, "priced", None)),
    # answered without usage (an OpenAI stream without include_usage): unknown, never $0
    ("ChatCompletion", {**_OI}, ("chat", "anthropic", None, None, 0, 0, None, "incomplete_usage",
                                 "llm.token_count.prompt:missing,llm.token_count.completion:missing")),
    # a NaN count is dropped and named; the call is not priced from what is left
    ("messages.create", {**_OI, "llm.token_count.prompt": float("nan"), "llm.token_count.completion": 5},
     ("chat", "anthropic", None, 5, 0, 0, None, "invalid_usage", "llm.token_count.prompt:not_finite")),
    ("CreateEmbeddings", {"openinference.span.kind": "EMBEDDING", "llm.system": "openai",
                          "embedding.model_name": "text-embedding-3-small", "llm.token_count.prompt": 8},
     ("embeddings", "openai", 8, 0, 0, 0, None, "unknown_model", None)),
])
def test_openinference_llm_spans_are_calls(name, attrs, want):
    row = flatten_span(_span(name, attrs), MemoPricingTable())
    assert isinstance(row, CallRow)
    got = (row.operation, row.provider, row.input_tokens, row.output_tokens, row.cache_read_tokens,
           row.cache_creation_tokens, row.cost_usd, row.pricing_status, row.data_quality)
    assert got[:6] == want[:6] and got[7:] == want[7:]
    assert got[6] == (None if want[6] is None else pytest.approx(want[6], abs=1e-12))


# LiteLLM's OpenTelemetry callback (1.108.7, SDK or proxy) as it wrote a prompt-cached Anthropic call
# and an OpenAI one here: no cache attribute, the counts only in metadata.usage_object (a dict's repr).
_LITELLM = {"gen_ai.operation.name": "chat", "gen_ai.system": "anthropic", "gen_ai.request.model": "claude-haiku-4-5",
            "gen_ai.response.model": "claude-haiku-4-5", "llm.request.type": "completion", "llm.is_streaming": "False",
            "gen_ai.cost.total_cost": 0.000324, "gen_ai.usage.total_tokens": 540}


@pytest.mark.parametrize("attrs, want", [
    # (input, output, read, write, cost at the default table: Haiku $0.80 / $4, reads x0.1, writes x1.25)
    ({**_LITELLM, "gen_ai.usage.input_tokens": 486, "gen_ai.usage.output_tokens": 54, "metadata.usage_object":
      "{'completion_tokens': 54, 'prompt_tokens': 486, 'total_tokens': 540, 'completion_tokens_details': "
      "{'reasoning_tokens': 0, 'text_tokens': 54}, 'prompt_tokens_details': {'audio_tokens': None, "
      "'cache_write_tokens': 0, 'cached_tokens': 480, 'image_tokens': None, 'text_tokens': 6, 'video_tokens': None, "
      "'initial_prompt_tokens': None, 'cache_creation_tokens': 0}, 'cache_creation_input_tokens': 0, "
      "'cache_read_input_tokens': 480, 'iterations': None}"},
     (486, 54, 480, 0, 6 * 0.8e-6 + 480 * 0.8e-6 * 0.1 + 54 * 4e-6)),
    ({**_LITELLM, "gen_ai.usage.input_tokens": 486, "gen_ai.usage.output_tokens": 58, "metadata.usage_object":
      "{'completion_tokens': 58, 'prompt_tokens': 486, 'prompt_tokens_details': {'cache_write_tokens': 480, "
      "'cached_tokens': 0, 'cache_creation_tokens': 480}, 'cache_creation_input_tokens': 480, "
      "'cache_read_input_tokens': 0}"},
     (486, 58, 0, 480, 6 * 0.8e-6 + 480 * 0.8e-6 * 1.25 + 58 * 4e-6)),
    # an OpenAI model through LiteLLM: only prompt_tokens_details.cached_tokens (reads)
    ({**_LITELLM, "gen_ai.system": "openai", "gen_ai.usage.input_tokens": 2000, "gen_ai.usage.output_tokens": 10,
      "metadata.usage_object": '{"prompt_tokens": 2000, "prompt_tokens_details": {"cached_tokens": 1500}}'},
     (2000, 10, 1500, 0, 500 * 0.8e-6 + 1500 * 0.8e-6 * 0.1 + 10 * 4e-6)),
    # cache attributes of the conventions win over the repr
    ({**_LITELLM, "gen_ai.usage.input_tokens": 486, "gen_ai.usage.output_tokens": 54,
      "gen_ai.usage.cache_read.input_tokens": 100, "metadata.usage_object": "{'cache_read_input_tokens': 480}"},
     (486, 54, 100, 0, 386 * 0.8e-6 + 100 * 0.8e-6 * 0.1 + 54 * 4e-6)),
    # no usage object, or one that says nothing: no cache counts
    ({**_LITELLM, "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 1, "metadata.usage_object": ""},
     (10, 1, 0, 0, 10 * 0.8e-6 + 4e-6)),
])
def test_litellm_cache_counts_are_read_from_its_usage_object(attrs, want):
    row = flatten_span(_span("litellm_request", attrs), MemoPricingTable())
    assert isinstance(row, CallRow)
    assert (row.input_tokens, row.output_tokens, row.cache_read_tokens, row.cache_creation_tokens) == want[:4]
    assert row.cost_usd == pytest.approx(want[4], abs=1e-12)


@pytest.mark.parametrize("count", ["1234567890123", "9" * 5000])
def test_an_absurd_litellm_cache_count_is_named_and_leaves_the_call_unpriced(count):
    """A cache count past any real one (13 digits and more were passed over as no count, the call priced with all
    its input fresh): named in data_quality, and the call unpriced, as an absurd count of the conventions is."""
    attrs = {**_LITELLM, "gen_ai.usage.input_tokens": 486, "gen_ai.usage.output_tokens": 54,
             "metadata.usage_object": "{'cache_read_input_tokens': " + count + "}"}
    row = flatten_span(_span("litellm_request", attrs), MemoPricingTable())
    assert isinstance(row, CallRow)
    assert row.cost_usd is None and row.pricing_status != "priced"
    assert "metadata.usage_object.cache_read:out_of_range" in (row.data_quality or "")


_LF = {"langfuse.observation.type": "generation", "langfuse.observation.model.name": "claude-haiku-4-5"}


@pytest.mark.parametrize("usage, want", [
    # (input with the cache, output, read, write, pricing_status, data_quality)
    ('{"prompt_tokens": 2000, "completion_tokens": 10, "prompt_tokens_details": {"cached_tokens": 1500}}',
     (2000, 10, 1500, 0, "priced", None)),
    ('{"input_tokens": 7, "output_tokens": 40, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 480}',
     (587, 40, 100, 480, "priced", None)),
    ('{"input": 6, "output": 54, "input_cache_read": 480}', (486, 54, 480, 0, "priced", None)),
    (None, (None, None, None, None, "incomplete_usage", "langfuse.observation.usage_details:missing")),
    ('{"input": NaN, "output": 5}', (None, 5, 0, 0, "invalid_usage", "langfuse.observation.usage_details.input:out_of_range")),
    ('{"input": -3, "output": 5}', (None, 5, 0, 0, "invalid_usage", "langfuse.observation.usage_details.input:out_of_range")),
    ('{"input": true, "output": 5}', (None, 5, 0, 0, "invalid_usage", "langfuse.observation.usage_details.input:out_of_range")),
    ('[1, 2]', (None, None, None, None, "invalid_usage", "langfuse.observation.usage_details:not_an_object")),
    ("[" * 60_000, (None, None, None, None, "invalid_usage", "langfuse.observation.usage_details:not_an_object")),
    ('{"input": 1' + " " * 70_000 + '}', (None, None, None, None, "invalid_usage",
                                          "langfuse.observation.usage_details:not_an_object")),
])
def test_langfuse_usage_shapes_and_bad_values(usage, want):
    row = flatten_span(_span("OpenAI-generation", {**_LF, "langfuse.observation.usage_details": usage}),
                       MemoPricingTable())
    assert isinstance(row, CallRow)
    assert (row.input_tokens, row.output_tokens, row.cache_read_tokens, row.cache_creation_tokens,
            row.pricing_status, row.data_quality) == want
    assert (row.cost_usd is None) == (want[4] != "priced")


@pytest.mark.parametrize("kind", ["span", "event", "agent", "tool", "chain", "retriever"])
def test_langfuse_observations_that_are_no_generation_are_no_calls(kind):
    assert flatten_span(_span("x", {**_LF, "langfuse.observation.type": kind}), PRICING) is None


@pytest.mark.parametrize("name, attrs", [
    ("messages.count_tokens", {**_OI}),  # free: nothing generated
    ("RunnableSequence", {"openinference.span.kind": "CHAIN", "llm.model_name": "claude-haiku-4-5"}),
    ("search", {"openinference.span.kind": "RETRIEVER"}),
    ("tool", {"openinference.span.kind": "TOOL", "llm.token_count.prompt": 5}),
])
def test_openinference_spans_that_are_no_model_call_are_ignored(name, attrs):
    assert flatten_span(_span(name, attrs), PRICING) is None


@pytest.mark.parametrize("op", ["invoke_agent", "create_agent", "execute_tool", "agent_step"])
def test_agent_and_tool_spans_of_the_genai_conventions_are_no_calls(op):
    # an agent's span may carry the model and the usage of all its calls (the conventions allow it):
    # counted as a call it would count them twice
    attrs = {**_HAIKU, c.GEN_AI_OPERATION_NAME: op, c.GEN_AI_USAGE_INPUT_TOKENS: 900, c.GEN_AI_USAGE_OUTPUT_TOKENS: 90}
    assert flatten_span(_span(f"{op} support-agent", attrs), PRICING) is None


_LOGFIRE = {**_HAIKU, "gen_ai.response.model": "claude-haiku-4-5"}


@pytest.mark.parametrize("scope, attrs, is_call", [
    # a streamed call to Logfire: the request's span without usage is no call, the log with the usage is
    ("logfire.anthropic", {**_LOGFIRE, "logfire.span_type": "span"}, False),
    ("logfire.anthropic", {**_LOGFIRE, "logfire.span_type": "log", c.GEN_AI_USAGE_INPUT_TOKENS: 481,
                           c.GEN_AI_USAGE_OUTPUT_TOKENS: 56}, True),
    ("logfire.anthropic", {**_LOGFIRE, "logfire.span_type": "span", c.GEN_AI_USAGE_INPUT_TOKENS: 481}, True),
    ("logfire.anthropic", {**_LOGFIRE, "logfire.span_type": "span", c.ERROR_TYPE: "BadRequestError"}, True),
    # the same usage-less span from anyone else is a call whose usage is unknown
    ("opentelemetry.instrumentation.anthropic", {**_LOGFIRE, "logfire.span_type": "span"}, True),
])
def test_logfires_usage_less_request_span_of_a_stream_is_no_call(scope, attrs, is_call):
    row = flatten_span(_span("Message with 'claude-haiku-4-5'", attrs), PRICING, scope=scope)
    assert isinstance(row, CallRow) if is_call else row is None
    if is_call and c.GEN_AI_USAGE_INPUT_TOKENS not in attrs and c.ERROR_TYPE not in attrs:
        assert (row.cost_usd, row.pricing_status) == (None, "incomplete_usage")


def _failed(attrs: dict, events: list[tuple[str, dict]]):
    s = _span("messages.create", attrs)
    s.status.code = 2  # STATUS_CODE_ERROR
    for ev_name, ev_attrs in events:
        ev = s.events.add()
        ev.name = ev_name
        for k, v in ev_attrs.items():
            kv = ev.attributes.add()
            kv.key = k
            kv.value.string_value = v
    return s


@pytest.mark.parametrize("attrs, events, error_type", [
    # a failure said only by the span's status: the exception event's type, else the conventions' _OTHER
    ({**_OI}, [("exception", {"exception.type": "anthropic.BadRequestError", "exception.message": "bad"})],
     "anthropic.BadRequestError"),
    ({**_HAIKU}, [("First Token Stream Event", {}), ("exception", {"exception.type": "TimeoutError"})],
     "TimeoutError"),
    ({**_HAIKU}, [], "_OTHER"),
    ({**_HAIKU, c.ERROR_TYPE: "overloaded_error"}, [("exception", {"exception.type": "X"})], "overloaded_error"),
])
def test_a_failed_span_status_is_an_error_type(attrs, events, error_type):
    row = flatten_span(_failed(attrs, events), PRICING)
    assert isinstance(row, CallRow) and row.error_type == error_type


def test_lookup_row_and_ignored_span():
    row = flatten_span(_span(c.SPAN_CACHE_LOOKUP, {c.COSTLINE_CACHE_HIT: True, c.COSTLINE_CACHE_SIMILARITY: 0.93,
                                                    c.COSTLINE_CACHE_NAMESPACE: "faq"}), PRICING)
    assert isinstance(row, LookupRow)
    assert (row.hit, row.similarity, row.namespace, row.tenant, row.request_id) == (True, 0.93, "faq", None, None)
    assert flatten_span(_span("http GET /", {"http.method": "GET"}), PRICING) is None


@pytest.mark.parametrize("trace_id, span_id, parent", [
    (bytes(16), SID, b""), (TID, bytes(8), b""), (TID[:8], SID, b""), (TID, SID, b"\x01\x02"),
])
def test_bad_ids_raise_decode_error(trace_id, span_id, parent):
    s = span(c.SPAN_REQUEST, trace_id=trace_id, span_id=span_id, parent_span_id=parent, start_ns=1, end_ns=2)
    with pytest.raises(OtlpDecodeError):
        flatten_span(s, PRICING)


def _otlp_json(spans: list[dict]) -> bytes:
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).encode()


def test_protobuf_and_json_decode_to_same_rows():
    proto = export_request([
        _span(c.SPAN_REQUEST, {c.COSTLINE_REQUEST_ID: "r1", c.COSTLINE_TIER: "budget", c.COSTLINE_SUCCESS: True},
              parent=b""),
        _span("chat", {**_HAIKU, c.GEN_AI_USAGE_INPUT_TOKENS: 100, c.GEN_AI_USAGE_OUTPUT_TOKENS: 10}),
    ])
    from google.protobuf import json_format

    doc = json_format.MessageToDict(proto)
    for rs in doc["resourceSpans"]:  # OTLP/JSON carries ids as hex, int64 as strings
        for ss in rs["scopeSpans"]:
            for s in ss["spans"]:
                for k in ("traceId", "spanId", "parentSpanId"):
                    if k in s:
                        s[k] = base64.b64decode(s[k]).hex()
    js = json.dumps(doc).encode()
    from_proto = flatten_message(decode_message(proto.SerializeToString()), PRICING).rows
    from_json = flatten_message(decode_message(js), PRICING).rows
    from_json_header = flatten_message(decode_message(js, [("content-type", b"application/json")]), PRICING).rows
    assert len(from_proto) == 2
    assert from_proto == from_json == from_json_header


@pytest.mark.parametrize("value, headers", [
    (b"", None),
    (b"\xff\xfe garbage \x00", None),
    (b"{not json", None),
    (b'{"resourceSpans": 5}', None),
    (b'{"resourceSpans": ' + b"[" * 60_000, None),  # nested past Python's recursion limit
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz", "spanId": "01"}]}]}]}', None),
    (export_request([_span(c.SPAN_REQUEST, {})]).SerializeToString()[:-3], None),  # truncated
    (export_request([_span(c.SPAN_REQUEST, {})]).SerializeToString(), [("content-type", b"application/json")]),
])
def test_undecodable_messages_raise(value, headers):
    with pytest.raises(OtlpDecodeError):
        flatten_message(decode_message(value, headers), PRICING)


def test_message_counts_ignored_spans():
    req = export_request([_span(c.SPAN_REQUEST, {}, parent=b""), _span("db.query", {"db.system": "pg"})])
    out = flatten_message(decode_message(req.SerializeToString()), PRICING)
    assert (out.spans, out.ignored, len(out.rows)) == (2, 1, 1)


def test_buffer_due_and_date_partitioning():
    buf = PartitionBuffer(3)
    assert not buf.due(100.0, max_spans=10, interval_s=2.0)
    day1 = flatten_span(_span(c.SPAN_REQUEST, {}, parent=b""), PRICING, 3, 5)
    late = day1._replace(ts=day1.ts - 86_400_000_000, request_id="late")  # a late span of the previous day
    buf.add(5, [day1, late], spans=2, now=100.0)
    assert not buf.due(101.9, max_spans=10, interval_s=2.0)
    assert buf.due(102.0, max_spans=10, interval_s=2.0)
    assert buf.due(100.0, max_spans=2, interval_s=2.0)
    tables = buf.tables()
    assert sorted(tables["requests"]) == ["2026-05-27", "2026-05-28"]
    assert tables["requests"]["2026-05-27"].column("request_id").to_pylist() == ["late"]
    assert rows_to_tables("requests", [])== {}


@pytest.mark.parametrize("attrs, cost, status", [
    ({c.ERROR_TYPE: "NotFoundException"}, 0.0, UNKNOWN_MODEL),  # failed, no tokens: nothing to pay
    ({c.ERROR_TYPE: "APITimeoutError", c.GEN_AI_USAGE_INPUT_TOKENS: 10}, None, UNKNOWN_MODEL),  # tokens: unknown
    ({}, None, UNKNOWN_MODEL),  # answered, no usage: unknown, never $0
])
def test_a_failed_call_without_tokens_to_an_unknown_model_costs_nothing(attrs, cost, status):
    row = flatten_span(_span("chat gpt-9", {c.GEN_AI_OPERATION_NAME: "chat", c.GEN_AI_PROVIDER_NAME: "openai",
                                            c.GEN_AI_REQUEST_MODEL: "gpt-9", **attrs}), PRICING)
    assert (row.cost_usd, row.pricing_status) == (cost, status)


@pytest.mark.parametrize("messages, system, want", [
    # the system prompt recorded apart goes first, as a system message
    ('[{"role":"user","parts":[{"type":"text","content":"hi"}]}]', '[{"type":"text","content":"Be brief."}]',
     [{"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
      {"role": "user", "parts": [{"type": "text", "content": "hi"}]}]),
    # a plain string is one text part
    ('[{"role":"user","parts":[{"type":"text","content":"hi"}]}]', "Be brief.",
     [{"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
      {"role": "user", "parts": [{"type": "text", "content": "hi"}]}]),
    # the conversation already says its system prompt: left as sent
    ('[{"role":"system","parts":[]},{"role":"user","parts":[]}]', "Other.",
     [{"role": "system", "parts": []}, {"role": "user", "parts": []}]),
    # no input messages: the system prompt alone
    (None, "Be brief.", [{"role": "system", "parts": [{"type": "text", "content": "Be brief."}]}]),
    # no system prompt, or input that is not a JSON list: as sent
    ('[{"role":"user","parts":[]}]', None, [{"role": "user", "parts": []}]),
    # input that is no JSON (a plain text, or JSON cut short): one user text, after the system prompt
    ("plain text", "Be brief.", [{"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
                                 {"role": "user", "parts": [{"type": "text", "content": "plain text"}]}]),
    ('{"role":"user"}', "Be brief.", {"role": "user"}),
    ('[{"role":"user","parts":[]}]', "7", [{"role": "user", "parts": []}]),  # a system that is JSON but no parts
    ('[{"role":"user","parts":[]}]', "[]", [{"role": "user", "parts": []}]),  # no instructions at all
    # a list of strings: each a text part
    ("[]", '["Be brief.", "Be kind."]', [{"role": "system", "parts": [{"type": "text", "content": "Be brief."},
                                                                     {"type": "text", "content": "Be kind."}]}]),
    # JSON nested past the parsers' depth (valid or not, no telling): one user text, after the system prompt
    ("[" * 100_000 + "]" * 100_000, "Be brief.", "deep"),
])
def test_a_system_prompt_recorded_apart_joins_the_input_messages(messages, system, want):
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

    from costline.processors.records import input_messages

    attrs = {k: AnyValue(string_value=v) for k, v in (("gen_ai.input.messages", messages),
                                                       ("gen_ai.system_instructions", system)) if v is not None}
    got = input_messages(attrs)
    if want == "deep":
        want = [{"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
                {"role": "user", "parts": [{"type": "text", "content": messages}]}]
    assert json.loads(got) == want


@pytest.mark.parametrize("system", [None, "Be brief."])
def test_a_cut_emoji_in_the_messages_becomes_a_replacement_character_duckdb_reads(system):
    """A JavaScript sender cuts a string in a surrogate pair and its JSON keeps the half as an escape (\\ud83d):
    decoded raw, Arrow could not encode the row (the whole Kafka message's rows would be lost); kept as an escape,
    every DuckDB JSON function over the column would fail. It is U+FFFD, with or without a system prompt spliced."""
    import duckdb
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

    from costline.processors.records import input_messages

    messages = '[{"role":"user","parts":[{"type":"text","content":"Thanks \\ud83d"}]}]'
    attrs = {"gen_ai.input.messages": AnyValue(string_value=messages)}
    if system:
        attrs["gen_ai.system_instructions"] = AnyValue(string_value=system)
    got = input_messages(attrs)
    head = [{"role": "system", "parts": [{"type": "text", "content": system}]}] if system else []
    assert json.loads(got) == [*head, {"role": "user", "parts": [{"type": "text", "content": "Thanks \ufffd"}]}]
    got.encode("utf-8")  # no lone surrogate in the text
    assert duckdb.connect().execute("SELECT json_extract_string(?, '$[-1].parts[0].content')", [got]).fetchall() == [
        ("Thanks \ufffd",)]


@pytest.mark.parametrize(("key", "value", "role"), [
    # what an SDK's attribute length limit leaves of the conventions' JSON
    ("gen_ai.input.messages", '[{"role":"user","parts":[{"type":"text","content":"Where is my par', "user"),
    ("gen_ai.output.messages", '[{"role":"assistant","parts":[{"type":"text","content":"It is on', "assistant"),
    ("gen_ai.input.messages", "Where is my parcel?", "user"),  # a plain text
    # nested past what Python's parsers check: valid or cut, no telling (DuckDB refuses the cut one)
    ("gen_ai.input.messages", "[" * 5_000, "user"),
    ("gen_ai.output.messages", "[" * 1_100 + '"\\ud83d"' + "]" * 1_100, "assistant"),
])
def test_content_that_is_no_json_is_kept_as_a_text_so_analysts_json_queries_never_fail(key, value, role):
    """One span whose content is no JSON would fail every DuckDB JSON function over the column (``->>``,
    json_extract: "Malformed JSON"), for every analyst's query over all spans: it is kept as one text part of its
    side's message, flagged ``{key}:not_json``, the call priced as ever."""
    import duckdb

    row = flatten_span(_span("chat claude-haiku-4-5", {**_HAIKU, key: value, c.GEN_AI_USAGE_INPUT_TOKENS: 10,
                                                       c.GEN_AI_USAGE_OUTPUT_TOKENS: 2}), PRICING)
    got = row.input_messages if key == "gen_ai.input.messages" else row.output_messages
    assert json.loads(got) == [{"role": role, "parts": [{"type": "text", "content": value}]}]
    assert row.data_quality == f"{key}:{'too_deep' if value.startswith('[' * 1_000) else 'not_json'}"
    assert row.cost_usd is not None
    assert duckdb.connect().execute("SELECT ?->>'$[0].parts[0].content'", [got]).fetchall() == [(value,)]


@pytest.mark.parametrize("doc", [
    '[{"role":"user","parts":[{"type":"text","content":"café ☕ \\ud83d\\ude00"}]}]',  # UTF-8, a whole pair escaped
    '[{"role":"user","parts":[{"type":"tool_call","arguments":{"x":NaN}}]}]',  # NaN: Python's and DuckDB's read it
    '  [{"role":"user","parts":[]}]\n',  # space around
])
def test_content_duckdb_reads_is_kept_as_sent(doc):
    import duckdb

    counts = {c.GEN_AI_USAGE_INPUT_TOKENS: 1, c.GEN_AI_USAGE_OUTPUT_TOKENS: 1}
    row = flatten_span(_span("chat claude-haiku-4-5", {**_HAIKU, "gen_ai.input.messages": doc, **counts}), PRICING)
    assert row.input_messages == doc and row.data_quality is None
    assert duckdb.connect().execute("SELECT json_valid(?)", [doc]).fetchall() == [(True,)]
