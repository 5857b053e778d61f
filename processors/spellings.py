"""How instrumentations spell a model call: one span's attributes → a :class:`CallReading`, or None.

costline reads four families of spans (docs/telemetry.md has the table of who writes what):

* the **OpenTelemetry GenAI conventions** (``gen_ai.operation.name``, ``gen_ai.request.model``,
  ``gen_ai.usage.*``): costline's own recorder, the anthropic SDK's native spans, OpenLLMetry,
  ``opentelemetry-instrumentation-openai-v2``, OpenLIT, Pydantic AI, Logfire, LiteLLM, LangSmith and the Vercel AI
  SDK, with the older and the tool-specific spellings each of them still writes;
* **OpenInference** (Arize Phoenix's conventions: ``openinference.span.kind``, ``llm.token_count.*``);
* **Langfuse**'s observations (``langfuse.observation.*``);
* **MLflow Tracing**'s own spans (``mlflow.spanType``, ``mlflow.chat.tokenUsage``).

Counts follow the GenAI conventions whatever the spelling: the input *includes* cache reads and cache
writes. A family whose counts do not (OpenLIT's and OpenLLMetry JS's Anthropic input, Anthropic's
shape of Langfuse's usage) is corrected here, so nothing downstream knows who spelled what; so are other
instrumentations' known quirks (a cut stream ended as complete, OpenLLMetry's streamed output one token over,
OpenLIT's failed Anthropic call without attributes: "known quirks" below).
"""

from __future__ import annotations

import json
import re
from typing import Any, Final, NamedTuple

from costline import contract as c
from costline.processors.attributes import (
    MAX_TOKENS,
    bool_of,
    count_of,
    first_present,
    first_str,
    str_list_of,
    str_of,
)

__all__ = [
    "CallReading",
    "read_call",
    "OI_LLAMA_INDEX_HELPERS",
    "NOT_CALL_OPERATIONS",
    "CALL_OPERATIONS",
    "INPUT_TOKEN_KEYS",
    "OUTPUT_TOKEN_KEYS",
    "CACHE_READ_KEYS",
    "CACHE_CREATION_KEYS",
    "CACHE_CREATION_1H_KEYS",
    "WEB_SEARCH_KEYS",
    "ALL_INPUT_KEYS",
    "ALL_OUTPUT_KEYS",
    "ALL_READ_KEYS",
    "ALL_WRITE_KEYS",
    "USAGE_PREFIXES",
    "AI_SDK_PROVIDER_METADATA",
    "provider_metadata_attributes",
    "mlflow_flavor",
    "STREAM_ENDED_EARLY",
    "INCOMPLETE_STREAM_ERROR",
    "ANTHROPIC_COMPACTION_INPUT",
    "ANTHROPIC_COMPACTION_OUTPUT",
]


class CallReading(NamedTuple):
    """What a model-call span says about its call, in the GenAI conventions' terms."""

    operation: str | None
    #: lower-cased (older OpenLLMetry spells it ``Anthropic``)
    provider: str | None
    model: str | None
    response_model: str | None
    #: cache reads and writes included; None: not reported (or dropped as invalid, named in ``bad``)
    input_tokens: int | None
    output_tokens: int | None
    cache_read_tokens: int | None
    cache_creation_tokens: int | None
    finish_reasons: list[str] | None
    #: the ``data_quality`` names to add when the call reported no usage at all: for families that
    #: write counts only when the API reported them (a call without any is then unpriced, never $0)
    unreported: tuple[str, ...] = ()
    #: the API's id of the response (``gen_ai.response.id``), the call's identity across instrumentations
    response_id: str | None = None
    #: of the cache writes, those with a one-hour lifetime (None: not reported, all priced as five-minute ones)
    cache_creation_1h_tokens: int | None = None
    #: web searches the model's server tool made (None: not reported)
    web_search_requests: int | None = None


_new = tuple.__new__  # builds a CallReading without its Python-level __new__ (the hot path)


# --- the GenAI conventions ------------------------------------------------------------

#: Attribute spellings read for each usage figure, first present wins. The first is what costline and
#: the current conventions write; the others are older conventions' and tools' spellings.
INPUT_TOKEN_KEYS: Final = (c.GEN_AI_USAGE_INPUT_TOKENS, "gen_ai.usage.prompt_tokens", "llm.usage.prompt_tokens")
OUTPUT_TOKEN_KEYS: Final = (c.GEN_AI_USAGE_OUTPUT_TOKENS, "gen_ai.usage.completion_tokens",
                            "llm.usage.completion_tokens")
CACHE_READ_KEYS: Final = (c.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, "gen_ai.usage.cache_read_input_tokens",
                          "ai.usage.inputTokenDetails.cacheReadTokens", "ai.usage.cachedInputTokens")
CACHE_CREATION_KEYS: Final = (c.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, "gen_ai.usage.cache_write.input_tokens",
                              "gen_ai.usage.cache_creation_input_tokens", "ai.usage.inputTokenDetails.cacheWriteTokens")
#: Of the cache writes, the one-hour ones (Anthropic's ``ttl: "1h"``; no GenAI convention names them): the anthropic
#: SDK's native spans and costline write the first, Pydantic AI (and Logfire through it) the second.
CACHE_CREATION_1H_KEYS: Final = (c.ANTHROPIC_USAGE_CACHE_CREATION_1H, "gen_ai.usage.details.ephemeral_1h_input_tokens")
#: Web searches the model's server tool made (Anthropic's ``usage.server_tool_use.web_search_requests``): costline
#: writes the first, Pydantic AI the second (on Google models, its count of grounding queries).
WEB_SEARCH_KEYS: Final = (c.ANTHROPIC_USAGE_WEB_SEARCH_REQUESTS, "gen_ai.usage.details.web_search_requests")
_IN0, _OUT0, _READ0, _WRITE0 = INPUT_TOKEN_KEYS[0], OUTPUT_TOKEN_KEYS[0], CACHE_READ_KEYS[0], CACHE_CREATION_KEYS[0]
_GENAI_UNREPORTED: Final = (f"{_IN0}:missing", f"{_OUT0}:missing")

#: ``gen_ai.operation.name`` values of the GenAI conventions that are no model call: an agent created or
#: run (its span may carry the model and the usage of all its calls), a tool executed, a retrieval from a
#: data source (its span may name the model the source embeds with; the embedding call is a span of its own).
NOT_CALL_OPERATIONS: Final = frozenset({
    "create_agent", "invoke_agent", "execute_tool", "retrieval",
    "invoke_workflow",  # a workflow's run (Microsoft Agent Framework 1.26)
    "agent_step",  # the Vercel AI SDK's step of an agent's run
    # Strands Agents: a cycle of its event loop (model call + tools), multi-agent runs, memory
    "execute_event_loop_cycle", "invoke_swarm", "invoke_graph", "memory.search", "memory.add", "memory.inject",
    "memory.extract",
})
#: The GenAI conventions' operations that are model calls. Another operation is one only when the span
#: names the model it asked for (a framework's own step without ``gen_ai.request.model`` is not).
CALL_OPERATIONS: Final = frozenset({"chat", "text_completion", "generate_content", "embeddings"})
#: ``gen_ai.system`` / ``gen_ai.provider.name`` values that name the framework, not the model's provider
#: (Strands Agents writes its own name on every span): read as no provider, so the model prices the call
#: and the views may match it with another instrumentation's span of the same call.
_FRAMEWORK_SYSTEMS: Final = frozenset({"strands-agents"})

#: Scopes whose Anthropic ``input_tokens`` is the API's own (cache reads and writes NOT included): OpenLIT,
#: OpenLLMetry JS, Microsoft Agent Framework's Anthropic client (agent-framework-anthropic 1.0.0b261022),
#: Spring AI's Anthropic model observed by Micrometer (Spring AI 2.0.1: scope ``org.springframework.boot``).
_INPUT_EXCLUDES_CACHE_SCOPES: Final = ("openlit", "@traceloop/instrumentation-anthropic", "agent_framework",
                                       "org.springframework")
#: Scopes that write Amazon Bedrock's own ``inputTokens`` as the input, WITHOUT the cache reads and writes they
#: report beside it, whatever the model: OpenTelemetry's botocore instrumentation (0.66b2,
#: ``opentelemetry.instrumentation.botocore.bedrock-runtime``; its InvokeModel spans write no cache counts at all:
#: nothing to add there) and OpenLLMetry's ``opentelemetry-instrumentation-bedrock`` (0.62), on Converse /
#: ConverseStream.
_BEDROCK_INPUT_EXCLUDES_CACHE_SCOPES: Final = ("opentelemetry.instrumentation.botocore",
                                               "opentelemetry.instrumentation.bedrock")
#: OpenLLMetry's Gemini instrumentation (``opentelemetry-instrumentation-google-generativeai`` 0.62, on the
#: ``google-genai`` SDK) writes ``gen_ai.usage.output_tokens`` = the API's ``candidatesTokenCount`` only; a
#: thinking model's ``thoughtsTokenCount`` (billed as output) is only in ``gen_ai.usage.total_tokens``
#: (prompt + candidates + thoughts): the surplus of the total is output.
_OUTPUT_IN_TOTAL_SCOPES: Final = ("opentelemetry.instrumentation.google_generativeai",)
_TOTAL_TOKENS: Final = "gen_ai.usage.total_tokens"
#: Google ADK 1.x's own spans (scope ``gcp.vertex.agent``; checked on google-adk 1.39.1) write
#: ``gen_ai.usage.output_tokens`` = the Gemini API's ``candidatesTokenCount`` only and, on ``call_llm``, a thinking
#: model's ``thoughtsTokenCount`` (billed as output) as ``gen_ai.usage.experimental.reasoning_tokens``: added to the
#: output. ADK 2.x (2.13.0) writes the conventions' ``gen_ai.usage.reasoning.output_tokens`` instead, a part of its
#: output (candidates + thoughts): a span that has it has nothing to add.
_ADK_SCOPES: Final = ("gcp.vertex.agent",)
_ADK_REASONING: Final = "gen_ai.usage.experimental.reasoning_tokens"
_REASONING_OUTPUT: Final = "gen_ai.usage.reasoning.output_tokens"
#: OpenTelemetry's botocore instrumentation writes no response id on its Bedrock Runtime spans (Converse has none;
#: it does not read InvokeModel's body for one), only the response's ``x-amzn-RequestId`` as ``aws.request_id``.
#: ``costline serve`` answers a Bedrock request with that header = the id its request span records
#: (``msg_costline_<request id>``, serving/gateway/app.py ``message_id``): read as the call's response id, so an
#: app's span of a call through the gateway is the gateway's request (docs/telemetry.md, "Apps behind the gateway").
#: Only that id: real Bedrock's (a UUID) would part botocore's span of a direct InvokeModel call from OpenLLMetry's
#: span of it, which has the body's ``msg_bdrk_…`` id (the views pair two spans of a call when one has no id).
_BOTOCORE_BEDROCK_SCOPE: Final = "opentelemetry.instrumentation.botocore.bedrock-runtime"
_AWS_REQUEST_ID: Final = "aws.request_id"
#: The ids ``costline serve``'s answers carry (serving/gateway: Messages and Bedrock, Chat Completions, Responses).
_GATEWAY_ANSWER_IDS: Final = ("msg_costline_", "chatcmpl-costline-", "resp_costline_")
#: Micrometer's placeholder for a value it does not have (Spring AI's failed call: response model ``none``).
_MICROMETER_SCOPES: Final = ("org.springframework",)
_MICROMETER_NONE: Final = "none"
#: Where a call's finish reasons are when ``gen_ai.response.finish_reasons`` is absent: the Anthropic
#: Java SDK's own spans write only the stop reason (anthropic-java 3.14.0).
_ANTHROPIC_STOP_REASON: Final = "anthropic.message.stop_reason"

#: The Vercel AI SDK's legacy telemetry (scope ``ai``): ``gen_ai.system`` is the provider and its API
#: (``anthropic.messages``, ``openai.chat``), no ``gen_ai.operation.name``; its calls are named
#: ``ai.<function>.doGenerate`` / ``.doStream`` (``.doEmbed``: embeddings).
_AI_SDK_SCOPE: Final = "ai"
_AI_SDK_OPERATIONS: Final = ((".doGenerate", c.OPERATION_CHAT), (".doStream", c.OPERATION_CHAT),
                             (".doEmbed", "embeddings"))

#: Its embedding calls (``ai.embed.doEmbed``, ``ai.embedMany.doEmbed``, one per HTTP call; ``embedMany``
#: splits its values into several) carry no ``gen_ai.*`` at all: the model is ``ai.model.id``, the provider
#: ``ai.model.provider`` (``openai.embedding``), the tokens ``ai.usage.tokens`` (NaN when the provider
#: reported none). The ``ai.embed`` / ``ai.embedMany`` span around them (the sum of their tokens) is no call.
_AI_SDK_EMBED_SUFFIX: Final = ".doEmbed"
AI_SDK_EMBED_TOKENS: Final = "ai.usage.tokens"
_AI_SDK_EMBED_UNREPORTED: Final = (f"{AI_SDK_EMBED_TOKENS}:missing",)


#: The Vercel AI SDK's ``ai.response.providerMetadata``: the provider's own response fields as JSON, on each call's
#: span (the legacy integration always; ``OpenTelemetry`` of @ai-sdk/otel with ``{ providerMetadata: true }``).
#: Only there are Anthropic's one-hour cache writes, web searches, service tier, speed and inference geography
#: (``anthropic.usage``: the API's own usage object) and the OpenAI Responses API's served tier
#: (``openai.serviceTier``); the cache-write count too, for a call span that carries none (the genai integration's
#: ``generateObject`` call spans: cache reads only).
AI_SDK_PROVIDER_METADATA: Final = "ai.response.providerMetadata"
#: Longest providerMetadata read (a response's is a few hundred bytes; a longer one is skipped and flagged).
MAX_PROVIDER_METADATA_CHARS: Final = 65_536
#: (path in the JSON, the attribute it stands for, counts or names): what the anthropic SDK's native spans and
#: costline write for the same figures, so the readers below take them as they take those.
_PROVIDER_METADATA_FIGURES: Final = (
    (("anthropic", "usage", "cache_creation_input_tokens"), c.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, int),
    (("anthropic", "usage", "cache_creation", "ephemeral_1h_input_tokens"), c.ANTHROPIC_USAGE_CACHE_CREATION_1H, int),
    (("anthropic", "usage", "server_tool_use", "web_search_requests"), c.ANTHROPIC_USAGE_WEB_SEARCH_REQUESTS, int),
    (("anthropic", "usage", "service_tier"), c.ANTHROPIC_RESPONSE_SERVICE_TIER, str),
    (("anthropic", "serviceTier"), c.ANTHROPIC_RESPONSE_SERVICE_TIER, str),
    (("anthropic", "usage", "speed"), c.ANTHROPIC_RESPONSE_SPEED, str),
    (("anthropic", "usage", "inference_geo"), c.ANTHROPIC_RESPONSE_INFERENCE_GEO, str),
    (("openai", "serviceTier"), c.OPENAI_RESPONSE_SERVICE_TIER, str),
)


def provider_metadata_attributes(value: str | None, present: Any, bad: list[str]) -> dict[str, Any]:
    """The attributes the AI SDK's providerMetadata JSON ``value`` stands for (see
    :data:`_PROVIDER_METADATA_FIGURES`), as OTLP ``AnyValue`` s, leaving out those ``present`` (a key test: the
    span's own attributes win) and the cache-write count when the span has any spelling of it. A count that is
    not a number goes on as is, for the readers to flag; JSON that is no object, or too long, is flagged in ``bad``
    and gives nothing. Never raises."""
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

    if not value:
        return {}
    if len(value) > MAX_PROVIDER_METADATA_CHARS:
        bad.append(f"{AI_SDK_PROVIDER_METADATA}:too_long")
        return {}
    try:
        meta = json.loads(value)
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        bad.append(f"{AI_SDK_PROVIDER_METADATA}:not_an_object")
        return {}
    out: dict[str, Any] = {}
    for path, key, kind in _PROVIDER_METADATA_FIGURES:
        if key in out or present(key):
            continue
        if key == c.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS and any(present(k) for k in CACHE_CREATION_KEYS):
            continue
        v: Any = meta
        for step in path:
            v = v.get(step) if isinstance(v, dict) else None
        if v is None:
            continue
        if kind is str:
            if isinstance(v, str) and v:
                out[key] = AnyValue(string_value=v[:256])
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            out[key] = AnyValue(string_value=str(v)[:64])  # read as not a number, and flagged
        elif isinstance(v, float):
            out[key] = AnyValue(double_value=v)  # NaN, infinities and 1000.6 are flagged by the readers
        elif -(2**63) <= v < 2**63:
            out[key] = AnyValue(int_value=v)
        else:
            # An integer past int64 (JSON has no limit; one past a double's, float() cannot even take): no count.
            # Flagged as count_of flags an absurd one, so the call is unpriced, never priced from a made-up count.
            bad.append(f"{key}:{'negative' if v < 0 else 'out_of_range'}")
    return out


def _read_ai_sdk_embedding(get: Any, bad: list[str]) -> CallReading:
    provider = str_of(get("ai.model.provider"))
    model = str_of(get("ai.model.id"))
    return _new(CallReading, (
        "embeddings",
        provider.split(".", 1)[0].strip().lower() if provider else None,  # "openai.embedding" -> "openai"
        model, None,
        count_of(get(AI_SDK_EMBED_TOKENS), AI_SDK_EMBED_TOKENS, bad), None, None, None, None,
        _AI_SDK_EMBED_UNREPORTED, None, None, None,
    ))


#: LiteLLM's OpenTelemetry callback (scope ``litellm``, SDK and proxy) writes no cache attribute: the
#: counts are only in ``metadata.usage_object``, the repr of its usage dict (``{'prompt_tokens': 486,
#: ..., 'cache_creation_input_tokens': 0, 'cache_read_input_tokens': 480}``; OpenAI's reads as
#: ``'prompt_tokens_details': {'cached_tokens': 480, ...}``), read with a bounded pattern, never evaluated.
_LITELLM_USAGE: Final = "metadata.usage_object"
_LITELLM_COUNT = re.compile(r"['\"](cache_read_input_tokens|cache_creation_input_tokens|cached_tokens|"
                            r"cache_creation_tokens|ephemeral_1h_input_tokens)['\"]\s*:\s*(\d+)")

#: LiteLLM's answer from its own response cache (``litellm.cache = Cache(...)``, SDK and proxy): no API call was made
#: (LiteLLM prices it at $0: ``gen_ai.cost.total_cost`` 0, ``litellm.saved_cache_cost`` the price saved), yet its
#: span has the cached response's usage and model. It is no model call, as a costline cache hit is none.
_LITELLM_CACHE_HIT: Final = "litellm.cache_hit"

#: Spans with no ``gen_ai.operation.name`` that are no model call though they name a model: a token count
#: (Anthropic's ``messages.count_tokens``, also ``beta.messages.count_tokens``: free, nothing generated).
_NOT_CALL_SUFFIXES: Final = ("count_tokens",)
#: The anthropic SDK's own tracing (``com.anthropic.sdk.python``, its platform clients' ``.aws``, ``.bedrock``, ...)
#: names each span after its method and writes ``gen_ai.operation.name`` = ``chat`` on its one model call,
#: ``anthropic.messages.create``; its spans of other APIs that name a model (``anthropic.messages.count_tokens``,
#: ``anthropic.sessions.create``: the agent's model) have no operation and are no call.
_ANTHROPIC_SDK_SCOPES: Final = ("com.anthropic.sdk.",)
_ANTHROPIC_SDK_SPAN_PREFIX: Final = "anthropic."
_ANTHROPIC_SDK_CALL: Final = "anthropic.messages.create"

#: The anthropic SDK's sums of a beta Message's ``usage.iterations`` entries of type ``compaction``
#: (the server-side summary of a context, billed on top of the top-level usage, which leaves it out): its input
#: (cache reads and writes included: the SDK adds them up, so all are priced at the input price, an upper bound
#: when a compaction read the cache) and its output. Read into the call's input and output counts.
ANTHROPIC_COMPACTION_INPUT: Final = "anthropic.usage.compaction.input_tokens"
ANTHROPIC_COMPACTION_OUTPUT: Final = "anthropic.usage.compaction.output_tokens"

#: LangSmith's OpenTelemetry export (``Client(tracing_mode="otel")``, scope ``langsmith``): every run is a span whose
#: ``langsmith.span.kind`` is its run type; only ``llm`` and ``embedding`` runs are model calls (``prompt``, a prompt
#: template, is exported as ``chat`` with no model, ``retriever`` as ``embeddings``). Its counts are LangChain's
#: ``usage_metadata``: ``input_tokens`` INCLUDES the cache reads and writes (langchain-anthropic adds Anthropic's);
#: the cache counts are only in its ``input_token_details``, which LangSmith writes as the Python repr of the dict
#: (``gen_ai.usage.input_token_details``: ``{'cache_read': 480, 'cache_creation': 0, ...}``) or, for a LangChain
#: chat model, as JSON in ``langsmith.metadata.usage_metadata``. Both are read with a bounded pattern, never evaluated.
_LANGSMITH_KIND: Final = "langsmith.span.kind"
_LANGSMITH_CALL_KINDS: Final = frozenset({"llm", "embedding"})
_LANGSMITH_DETAILS: Final = ("gen_ai.usage.input_token_details", "langsmith.metadata.usage_metadata")
_LANGSMITH_COUNT = re.compile(r"['\"](cache_read|cache_creation|ephemeral_5m_input_tokens|ephemeral_1h_input_tokens)"
                              r"['\"]\s*:\s*(\d+)")

# --- known quirks of other instrumentations, corrected here -------------------------------------------------------

#: A **cut stream** ended as complete. Anthropic's ``message_start`` event gives the input count and a placeholder
#: output count (1; 2 or 3 with tools); the final count and the stop reason come only with ``message_delta``. A
#: stream the app closed early, or a proxy cut, ends without it, and these instrumentations end its span as they end
#: a complete one (status not ERROR): what shows it is **no finish reason and an output count missing or at most the
#: placeholder**. Flagged in ``data_quality`` under :data:`STREAM_ENDED_EARLY` and failed
#: (:data:`INCOMPLETE_STREAM_ERROR`), as costline's own wrapper says of such a stream; priced from its counts, a
#: lower bound (without an input count: unpriced, never $0).
#:
#: OpenLLMetry's Anthropic instrumentation (Python) ends a streamed call's span only once the stream ran out (a
#: proxy that gave up on it) and writes its finish reasons from ``message_delta``; its non-streamed spans always have
#: them, and its ``messages.stream()`` spans say nothing of streaming: the rule reads every span of its scope.
_OPENLLMETRY_ANTHROPIC: Final = "opentelemetry.instrumentation.anthropic"
#: Other instrumentations that write a finish reason on every call they end as complete, streamed ones included
#: (checked, with the real packages around the real SDKs): the rule reads their **streamed** spans (below) — of the
#: span names given, when some are. Not here, because a complete stream of theirs may have no finish reason:
#: ``opentelemetry-instrumentation-openai-v2`` 2.4b0 (none on any stream), OpenInference's OpenAI ``Response`` spans
#: (none on the Responses API). OpenLIT and OpenLLMetry end no span for a stream the app closed (nothing to read).
_FINISH_REASON_SCOPES: Final[tuple[tuple[str, tuple[str, ...] | None], ...]] = (
    ("com.anthropic.sdk.", None),  # the anthropic SDK's own tracing (2.17: ``anthropic.message.stop_reason``)
    ("openinference.instrumentation.anthropic", None),  # 3.1.0: ``llm.finish_reason``
    ("openinference.instrumentation.openai", ("ChatCompletion",)),  # 0.1.66, chat completions
)
#: Where a span says its call was streamed: the anthropic SDK's own spans and OpenLIT write the first, OpenLLMetry
#: the second (on ``create(stream=True)`` only); OpenInference only in its ``llm.invocation_parameters`` JSON.
_STREAM_FLAGS: Final = ("gen_ai.request.stream", "gen_ai.is_streaming")
STREAM_ENDED_EARLY: Final = f"{c.GEN_AI_RESPONSE_FINISH_REASONS}:stream_ended_early"
#: The ``error.type`` such a call is given (what costline's own wrapper names a stream cut before the final event).
INCOMPLETE_STREAM_ERROR: Final = "IncompleteStreamError"

#: OpenLLMetry's Anthropic instrumentation **over-counts a streamed call's output by one token**: its
#: ``_process_response_item`` (streaming.py, 0.62.4) adds ``message_delta``'s output count, which is cumulative, to
#: ``message_start``'s placeholder (1) instead of replacing it (upstream fix proposed in traceloop/openllmetry#4377,
#: not released). On a span that says it streamed (``gen_ai.is_streaming``) and got the final event (it has a finish
#: reason: the sum is made only then), costline takes the 1 off the output. Every released version has the bug and
#: the processor does not see the scope's version: when a fixed release ships, bound this by version. Its
#: ``messages.stream()`` spans carry no streaming flag: they stay one output token over (nothing on the span tells
#: them from a non-streamed call); so does a stream whose ``message_start`` placeholder was 2 or 3 (tools).
_OPENLLMETRY_STREAMING: Final = "gen_ai.is_streaming"
_OPENLLMETRY_PLACEHOLDER: Final = 1


def _cut_stream(scope: str | None, name: str, streamed: bool, failed: bool, finish_reasons: list[str] | None,
                output_tokens: int | None) -> bool:
    """Whether a call's span shows a stream ended before the model's final event (see :data:`_FINISH_REASON_SCOPES`)."""
    if failed or finish_reasons is not None or scope is None or (output_tokens is not None and output_tokens > 1):
        return False
    if scope == _OPENLLMETRY_ANTHROPIC:
        return output_tokens is not None  # as before: its cut stream keeps message_start's count
    if not streamed:
        return False
    for prefix, names in _FINISH_REASON_SCOPES:
        if scope.startswith(prefix):
            return names is None or name in names
    return False

#: Logfire's LLM integrations (scopes ``logfire.anthropic``, ``logfire.openai``): a streamed call is a span
#: for the request (no usage) and, once the stream ends, a log (``logfire.span_type`` = ``log``, often in
#: another trace) with the usage: the log is the call.
_LOGFIRE_SCOPES: Final = ("logfire.",)
_LOGFIRE_SPAN_TYPE: Final = "logfire.span_type"


def _read_genai(name: str, get: Any, scope: str | None, failed: bool, bad: list[str]) -> CallReading | None:
    op = str_of(get(c.GEN_AI_OPERATION_NAME))
    response_model = str_of(get(c.GEN_AI_RESPONSE_MODEL))
    # the model asked for, else the one that answered (OpenLLMetry's OpenAI Agents bridge writes only that)
    model = str_of(get(c.GEN_AI_REQUEST_MODEL)) or response_model
    if op is not None and (op in NOT_CALL_OPERATIONS or (model is None and op not in CALL_OPERATIONS)):
        return None  # an agent's run or a tool's: its usage (if any) is its model calls', counted on them
    if op is None and (name.endswith(_NOT_CALL_SUFFIXES) or (
            scope is not None and scope.startswith(_ANTHROPIC_SDK_SCOPES)
            and name.startswith(_ANTHROPIC_SDK_SPAN_PREFIX) and name != _ANTHROPIC_SDK_CALL)):
        return None  # a free token count, or the anthropic SDK's span of another API (sessions, ...)
    if (kind_v := get(_LANGSMITH_KIND)) is not None and str_of(kind_v) not in _LANGSMITH_CALL_KINDS:
        return None  # LangSmith's prompt template, retriever, chain... run
    if bool_of(get(_LITELLM_CACHE_HIT)):
        return None  # answered from LiteLLM's own cache: no API call, nothing billed
    provider = str_of(get(c.GEN_AI_PROVIDER_NAME)) or str_of(get(c.GEN_AI_SYSTEM))
    if provider in _FRAMEWORK_SYSTEMS:
        provider = None
    # the first spelling is what costline and the current conventions write: look further only without it
    v = get(_IN0)
    input_tokens = count_of(v, _IN0, bad) if v is not None else count_of(*first_present(get, INPUT_TOKEN_KEYS), bad)
    v = get(_OUT0)
    output_tokens = count_of(v, _OUT0, bad) if v is not None else count_of(*first_present(get, OUTPUT_TOKEN_KEYS), bad)
    v = get(_READ0)
    read = count_of(v, _READ0, bad) if v is not None else count_of(*first_present(get, CACHE_READ_KEYS), bad)
    v = get(_WRITE0)
    write = count_of(v, _WRITE0, bad) if v is not None else count_of(*first_present(get, CACHE_CREATION_KEYS), bad)
    write_1h = count_of(*first_present(get, CACHE_CREATION_1H_KEYS), bad) if write else None
    if read is None and write is None:
        if (v := get(_LITELLM_USAGE)) is not None:
            read, write, write_1h = _litellm_cache(str_of(v) or "", bad)  # its cache counts are only in there
        elif (v := first_present(get, _LANGSMITH_DETAILS))[0] is not None:
            read, write, write_1h = _langsmith_cache(str_of(v[0]) or "", v[1], bad)
    if scope is not None:
        if scope == _AI_SDK_SCOPE:
            if provider:
                provider = provider.split(".", 1)[0]  # "anthropic.messages" -> "anthropic"
            if op is None:
                op = next((o for suffix, o in _AI_SDK_OPERATIONS if name.endswith(suffix)), None)
        elif (input_tokens is None and output_tokens is None and not failed and scope.startswith(_LOGFIRE_SCOPES)
              and str_of(get(_LOGFIRE_SPAN_TYPE)) == "span"):
            return None  # Logfire's streamed call: its usage is on the "streaming response" log, the call
        elif (input_tokens is not None and output_tokens is not None and scope.startswith(_OUTPUT_IN_TOTAL_SCOPES)
              and (total := count_of(get(_TOTAL_TOKENS), _TOTAL_TOKENS, bad)) is not None):
            output_tokens += max(0, total - input_tokens - output_tokens)  # the thoughts
        elif (output_tokens is not None and scope.startswith(_ADK_SCOPES) and (v := get(_ADK_REASONING)) is not None
              and get(_REASONING_OUTPUT) is None):
            n = count_of(v, _ADK_REASONING, bad)  # a bad one is flagged: the call is then unpriced
            output_tokens = output_tokens + n if n is not None else output_tokens  # the thoughts
    if provider is not None:
        provider = provider.strip().lower()  # older OpenLLMetry spells it "Anthropic"
        if input_tokens is not None and scope is not None and (
                (provider == c.PROVIDER_ANTHROPIC and scope.startswith(_INPUT_EXCLUDES_CACHE_SCOPES))
                or scope.startswith(_BEDROCK_INPUT_EXCLUDES_CACHE_SCOPES)):
            input_tokens += (read or 0) + (write or 0)
    if input_tokens is not None and (read or 0) + (write or 0) > input_tokens:
        # an input smaller than its own cache reads and writes cannot include them (the conventions' reading):
        # an instrumentation not named above wrote the API's own input_tokens. Read it as that, or the fresh
        # input would price at 0 and the cached share pass 100 %.
        input_tokens += (read or 0) + (write or 0)
    if (v := get(ANTHROPIC_COMPACTION_INPUT)) is not None and input_tokens is not None:
        n = count_of(v, ANTHROPIC_COMPACTION_INPUT, bad)  # a bad one is flagged: the call is then unpriced
        input_tokens = input_tokens + n if n is not None else input_tokens
    if (v := get(ANTHROPIC_COMPACTION_OUTPUT)) is not None and output_tokens is not None:
        n = count_of(v, ANTHROPIC_COMPACTION_OUTPUT, bad)
        output_tokens = output_tokens + n if n is not None else output_tokens
    # no usage at all (OpenLLMetry JS on a streamed OpenAI call): unknown, never $0; an answer's count without
    # its input's (the conventions only recommend each): the input is unknown, not free
    if input_tokens is output_tokens is read is write is None:
        unreported = _GENAI_UNREPORTED
    elif input_tokens is None and not failed and op != "embeddings":
        unreported = (f"{_IN0}:missing",)
    else:
        unreported = ()
    if scope is not None and scope.startswith(_MICROMETER_SCOPES):
        model = None if model == _MICROMETER_NONE else model
        response_model = None if response_model == _MICROMETER_NONE else response_model
    v = get(c.GEN_AI_RESPONSE_FINISH_REASONS)
    finish_reasons = str_list_of(v if v is not None else get(_ANTHROPIC_STOP_REASON))
    if finish_reasons is None:
        if (not failed and scope is not None and (output_tokens is None or output_tokens <= 1) and _cut_stream(
                scope, name, any(bool_of(get(k)) for k in _STREAM_FLAGS), failed, None, output_tokens)):
            bad.append(STREAM_ENDED_EARLY)  # priced from its counts, a lower bound, as costline's own cut stream
    elif (scope == _OPENLLMETRY_ANTHROPIC and output_tokens is not None and output_tokens >= _OPENLLMETRY_PLACEHOLDER
          and bool_of(get(_OPENLLMETRY_STREAMING))):
        output_tokens -= _OPENLLMETRY_PLACEHOLDER  # its sum of message_start's placeholder and the final count
    if not unreported and output_tokens is None and input_tokens is not None and not failed and op != "embeddings":
        unreported = (f"{_OUT0}:missing",)  # an input's count without its answer's: the output is unknown, not free
    response_id = str_of(get(c.GEN_AI_RESPONSE_ID))
    if (response_id is None and scope == _BOTOCORE_BEDROCK_SCOPE
            and (v := str_of(get(_AWS_REQUEST_ID))) is not None and v.startswith(_GATEWAY_ANSWER_IDS)):
        response_id = v  # the gateway's answer (see above)
    return _new(CallReading, (op, provider, model, response_model, input_tokens, output_tokens, read, write,
                              finish_reasons, unreported, response_id, write_1h,
                              count_of(*first_present(get, WEB_SEARCH_KEYS), bad)))


def _digits(value: str) -> int:
    """A count written in a repr as a run of digits; one too long to be a token count (or for ``int()``) reads as
    one over :data:`MAX_TOKENS`, so the caller flags it out of range instead of passing over it."""
    return int(value) if len(value) <= 18 else MAX_TOKENS + 1


def _litellm_cache(text: str, bad: list[str]) -> tuple[int | None, int | None, int | None]:
    found: dict[str, int] = {}
    for key, value in _LITELLM_COUNT.findall(text[:8192]):
        found.setdefault(key, _digits(value))
    read = found.get("cache_read_input_tokens", found.get("cached_tokens"))
    write = found.get("cache_creation_input_tokens", found.get("cache_creation_tokens"))
    write_1h = found.get("ephemeral_1h_input_tokens")
    for key, n in (("cache_read", read), ("cache_creation", write), ("ephemeral_1h", write_1h)):
        if n is not None and n > MAX_TOKENS:
            bad.append(f"{_LITELLM_USAGE}.{key}:out_of_range")
    return (read if read is None or read <= MAX_TOKENS else None,
            write if write is None or write <= MAX_TOKENS else None,
            write_1h if write_1h is None or write_1h <= MAX_TOKENS else None)


def _langsmith_cache(text: str, key: str, bad: list[str]) -> tuple[int | None, int | None, int | None]:
    """(cache read, cache write, one-hour writes) of LangSmith's ``input_token_details`` (a dict's repr) or its
    metadata's ``usage_metadata`` (JSON), read off their first 8 KiB. langchain-anthropic moves the writes to the
    TTL keys (``cache_creation`` then 0); an app's own details may give the total in ``cache_creation`` with the
    split beside it: the writes are the larger of the two, never their sum."""
    found: dict[str, int] = {}
    for name, value in _LANGSMITH_COUNT.findall(text[:8192]):
        found.setdefault(name, _digits(value))
    if not found:
        return None, None, None
    for name, n in found.items():
        if n > MAX_TOKENS:
            bad.append(f"{key}.{name}:out_of_range")  # under gen_ai.usage. or flagged so: the call is unpriced
    ok = {k: n for k, n in found.items() if n <= MAX_TOKENS}
    read = ok.get("cache_read")
    split = [ok[k] for k in ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens") if k in ok]
    write = max(ok.get("cache_creation", 0), sum(split)) if "cache_creation" in ok or split else None
    write_1h = ok.get("ephemeral_1h_input_tokens") if write else None
    return read, write, write_1h


# --- OpenInference --------------------------------------------------------------------

#: OpenInference (Arize Phoenix's conventions, ``openinference-instrumentation-*``): a span whose
#: ``openinference.span.kind`` is LLM or EMBEDDING is a model call (the operation it is recorded as);
#: its counts are ``llm.token_count.*`` (prompt includes the cached tokens, as in the GenAI conventions).
OI_SPAN_KIND: Final = "openinference.span.kind"
OI_PROVIDER: Final = "llm.provider"
OI_SYSTEM: Final = "llm.system"
OI_PROMPT_TOKENS: Final = "llm.token_count.prompt"
OI_COMPLETION_TOKENS: Final = "llm.token_count.completion"
OI_CACHE_READ_TOKENS: Final = "llm.token_count.prompt_details.cache_read"
OI_CACHE_WRITE_TOKENS: Final = "llm.token_count.prompt_details.cache_write"
OI_FINISH_REASON: Final = "llm.finish_reason"
_OI_OPERATIONS: Final = {"LLM": c.OPERATION_CHAT, "EMBEDDING": "embeddings"}
_OI_MODEL_KEYS: Final = ("llm.request.model_name", "llm.model_name", "embedding.model_name")
_OI_RESPONSE_MODEL_KEYS: Final = ("llm.response.model_name", "llm.model_name", "embedding.model_name")
_OI_UNREPORTED: Final = (f"{OI_PROMPT_TOKENS}:missing", f"{OI_COMPLETION_TOKENS}:missing")
#: LLM spans that are no model call: Anthropic's count_tokens (free, nothing generated).
_OI_NOT_CALLS: Final = ("count_tokens",)
#: LlamaIndex's helper methods that OpenInference's LlamaIndex instrumentation writes as LLM spans although they call
#: no model: ``FunctionCallingLLM._prepare_chat_with_tools`` (abstract, so LlamaIndex's span mixin wraps every
#: integration's: ``Anthropic._prepare_chat_with_tools``, ``OpenAI._prepare_chat_with_tools``...) builds the tool
#: call's arguments beside the ``chat`` span that makes it. Such a span is no call only when it also says nothing a
#: call says (no token counts, no output messages, no finish reason, no response id).
OI_LLAMA_INDEX_HELPERS: Final = ("_prepare_chat_with_tools",)
#: The request body OpenInference's OpenAI instrumentor records (``input.value``, JSON): ``{}`` for a request with
#: none, as ``GET /v1/responses/{id}`` (``responses.retrieve``), ``GET /v1/chat/completions/{id}``, ``GET
#: /v1/responses/{id}/input_items``, ``POST .../cancel``; every model call sends a body. Such a span is no call when
#: it has no token counts (a poll of a background response still running, a list of items, a failed read) or reads
#: back an answer of ``costline serve`` (its ids, :data:`_GATEWAY_ANSWER_IDS`: the gateway's request counts it, and
#: it serves no background response). A read-back with tokens of another server's response stays a call: for a
#: background response the create's span has none (it was only queued) and the read-back that finds it done is
#: what says the cost; in one trace the two share the id and count once. An app that hides inputs
#: (``OPENINFERENCE_HIDE_INPUTS=true``, ``TraceConfig(hide_inputs=True)``) has :data:`_OI_REDACTED` there instead: its
#: OpenAI instrumentor (0.1.66) still writes the arguments, ``{}`` for such a request and at least the ``model`` for
#: every model call, so from that scope a hidden input with ``llm.invocation_parameters`` ``{}`` is no body either
#: (only that scope: other instrumentors were not checked, and may leave no argument but the ones they drop).
_OI_INPUT: Final = "input.value"
#: The marker OpenInference writes for a hidden ``input.value`` (openinference-instrumentation 0.1.72,
#: ``REDACTED_VALUE``); it drops ``input.mime_type``.
_OI_REDACTED: Final = "__REDACTED__"
_OI_OPENAI_SCOPE: Final = "openinference.instrumentation.openai"
#: What the answer of a call says under OpenInference's output messages (a helper's span has neither).
_OI_OUTPUT_MESSAGE_KEYS: Final = ("llm.output_messages.0.message.role", "llm.output_messages.0.message.content")
#: OpenInference writes no response id; the API's response, as JSON in ``output.value`` (unless the app
#: hides outputs), begins with it (``{"id":"resp_…"``, ``{"id":"chatcmpl-…"``, ``{"id":"msg_…"``).
_OI_OUTPUT: Final = "output.value"
_OI_OUTPUT_ID = re.compile(r'\{\s*"id"\s*:\s*"([A-Za-z0-9_.:-]{1,200})"')
#: smolagents' ``{Model}.generate`` span: its ``output.value`` is the ``ChatMessage`` as JSON, whose ``raw`` is the
#: repr of the openai SDK's response (``"raw": "ChatCompletion(id='chatcmpl-…', …, model='…', …)"``), after the
#: message's content and tool calls. Its id is the call's: behind ``costline serve`` the gateway's own
#: (``chatcmpl-costline-<request id>``), which says the span is that request's even when the gateway answered with
#: another model than the one asked for (docs/telemetry.md, "Apps behind the gateway").
_OI_RAW_ID = re.compile(r""""raw"\s*:\s*"ChatCompletion\(id='([A-Za-z0-9_.:-]{1,200})'""")
#: How much of an ``output.value`` is searched for :data:`_OI_RAW_ID` (a long answer's text comes before it).
_MAX_RAW_SEARCH_CHARS: Final = 1 << 20
#: The call's arguments as JSON. Its OpenAI instrumentor's failed call has no ``llm.model_name``: the model asked for
#: is only in here (and in ``input.value``); a streamed call says so only in here (``"stream": true``).
OI_INVOCATION_PARAMETERS: Final = "llm.invocation_parameters"
#: Longest ``llm.invocation_parameters`` parsed (the arguments but the messages: a few hundred bytes; tools' schemas
#: may make it a few KiB).
_MAX_INVOCATION_CHARS: Final = 65_536
#: What a model id read off a name or a JSON value may be (see :func:`_model_name`).
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}")


def _read_openinference(kind: str | None, name: str, get: Any, scope: str | None, failed: bool,
                         bad: list[str]) -> CallReading | None:
    op = _OI_OPERATIONS.get(kind or "")
    if op is None or name.endswith(_OI_NOT_CALLS):
        return None  # not an OpenInference model call (a chain, tool, agent... or a free token count)
    provider = str_of(get(OI_PROVIDER)) or str_of(get(OI_SYSTEM))
    model = first_str(get, _OI_MODEL_KEYS)
    prompt = count_of(get(OI_PROMPT_TOKENS), OI_PROMPT_TOKENS, bad)
    completion = count_of(get(OI_COMPLETION_TOKENS), OI_COMPLETION_TOKENS, bad)
    finish_reasons = str_list_of(get(OI_FINISH_REASON))
    params: dict[str, Any] | None = None
    if model is None or (finish_reasons is None and not failed and (completion is None or completion <= 1)):
        params = _oi_invocation_parameters(get(OI_INVOCATION_PARAMETERS))
        if model is None:
            model = _model_name(params.get("model"))  # the OpenAI instrumentor's failed call: only in there
    if finish_reasons is None and params is not None and _cut_stream(
            scope, name, params.get("stream") is True, failed, None, completion):
        bad.append(STREAM_ENDED_EARLY)
    response_id = _oi_response_id(get(_OI_OUTPUT))
    if (prompt is None and completion is None and finish_reasons is None and response_id is None
            and name.rpartition(".")[2] in OI_LLAMA_INDEX_HELPERS
            and all(get(k) is None for k in _OI_OUTPUT_MESSAGE_KEYS)):
        return None  # a LlamaIndex helper's span beside the call it prepares (OI_LLAMA_INDEX_HELPERS)
    if (_oi_no_request_body(get, scope)
            and (prompt is None and completion is None
                 or response_id is not None and response_id.startswith(_GATEWAY_ANSWER_IDS))):
        return None  # no request body (_OI_INPUT): a poll, a list of items, a gateway's answer read back
    # OpenInference writes counts only when the API reported them: a prompt's count without the answer's leaves the
    # output unknown, not free
    unreported = (_OI_UNREPORTED if prompt is None or completion is not None or op == "embeddings"
                  else (f"{OI_COMPLETION_TOKENS}:missing",))
    return _new(CallReading, (
        op,
        provider.strip().lower() if provider is not None else None,
        model,
        first_str(get, _OI_RESPONSE_MODEL_KEYS),
        prompt,
        completion,
        count_of(get(OI_CACHE_READ_TOKENS), OI_CACHE_READ_TOKENS, bad),
        count_of(get(OI_CACHE_WRITE_TOKENS), OI_CACHE_WRITE_TOKENS, bad),
        finish_reasons,
        unreported,
        response_id,
        None,  # OpenInference: "The breakdown of cache_creation by TTL has no semantic convention"
        None,
    ))


def _oi_invocation_parameters(v: Any) -> dict[str, Any]:
    """``llm.invocation_parameters``: the call's arguments as JSON (``{"model": "gpt-4o", "stream": true, ...}``);
    ``{}`` when absent, longer than :data:`_MAX_INVOCATION_CHARS`, no JSON object, or nested too deep. Never raises."""
    text = str_of(v) if v is not None else None
    if not text or len(text) > _MAX_INVOCATION_CHARS or text[0] != "{":
        return {}
    try:
        params = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    return params if isinstance(params, dict) else {}


def _oi_no_request_body(get: Any, scope: str | None) -> bool:
    """An OpenInference span of a request without a body (:data:`_OI_INPUT`): ``input.value`` ``{}`` with no other
    arguments, or, inputs hidden, OpenInference's OpenAI instrumentor's ``llm.invocation_parameters`` ``{}``."""
    params = get(OI_INVOCATION_PARAMETERS)
    request = get(_OI_INPUT)
    if _empty_json_object(request):
        return params is None or _empty_json_object(params)
    return scope == _OI_OPENAI_SCOPE and _empty_json_object(params) and str_of(request) == _OI_REDACTED


def _empty_json_object(v: Any) -> bool:
    """The attribute is ``{}`` (the JSON of no arguments), spaces aside."""
    text = str_of(v) if v is not None else None
    return text is not None and len(text) <= 16 and "".join(text.split()) == "{}"


def _model_name(value: Any) -> str | None:
    """A model id read from a span's name or arguments JSON: a short run of the characters model ids are made of
    (``claude-haiku-4-5``, ``us.anthropic.claude-…-v1:0``, ``models/gemini-2.5-flash``), else None."""
    return value if isinstance(value, str) and _MODEL_NAME.fullmatch(value) else None


def _oi_response_id(v: Any) -> str | None:
    """The id the response JSON in ``output.value`` starts with (its first 256 characters; never parsed), else that
    of the openai SDK's response smolagents keeps in its message's ``raw`` (:data:`_OI_RAW_ID`)."""
    if v is None:
        return None
    m = _OI_OUTPUT_ID.match(v.string_value[:256])
    if m is None and '"raw"' in v.string_value[:_MAX_RAW_SEARCH_CHARS]:
        m = _OI_RAW_ID.search(v.string_value[:_MAX_RAW_SEARCH_CHARS])
    return m.group(1) if m else None


# --- Langfuse -------------------------------------------------------------------------

#: Langfuse's SDK (v3+, OpenTelemetry-native): a ``generation`` (or ``embedding``) observation is a model
#: call; its model is ``langfuse.observation.model.name`` (no provider), its usage the JSON object
#: ``langfuse.observation.usage_details`` in one of three shapes: OpenAI's (``prompt_tokens``, cached
#: included, ``prompt_tokens_details.cached_tokens``), Anthropic's (``input_tokens`` WITHOUT the cache,
#: ``cache_read_input_tokens``, ``cache_creation_input_tokens``) or Langfuse's own usage types
#: (``input`` without the cache, ``input_cache_read``, ``input_cache_creation``, ``output``).
LF_TYPE: Final = "langfuse.observation.type"
LF_MODEL: Final = "langfuse.observation.model.name"
#: Langfuse's usage attribute: bad values are named after it and its keys.
LF_USAGE: Final = "langfuse.observation.usage_details"
_LF_OPERATIONS: Final = {"generation": c.OPERATION_CHAT, "embedding": "embeddings"}
#: Longest usage object parsed (Langfuse's, MLflow's: a few hundred bytes; a longer one is flagged not an object).
_MAX_USAGE_CHARS: Final = 65_536
_LF_UNREPORTED: Final = (f"{LF_USAGE}:missing",)


def _read_langfuse(observation_type: str | None, get: Any, bad: list[str]) -> CallReading | None:
    op = _LF_OPERATIONS.get(observation_type or "")
    if op is None:
        return None  # a Langfuse span, event, agent, tool...: no model call
    model = str_of(get(LF_MODEL))
    input_tokens, output_tokens, read, write = _langfuse_usage(get(LF_USAGE), bad)
    # no provider: Langfuse does not say; the model prices the call
    return _new(CallReading, (op, None, model, model, input_tokens, output_tokens, read, write, None, _LF_UNREPORTED,
                              None, None, None))


def _langfuse_usage(v: Any, bad: list[str]) -> tuple[int | None, int | None, int | None, int | None]:
    """(input with the cache, output, cache read, cache write) of a Langfuse usage_details value."""
    text = str_of(v) if v is not None else None
    if not text:
        return None, None, None, None
    usage = _usage_object(text, LF_USAGE, bad)
    if usage is None:
        return None, None, None, None

    def num(obj: Any, key: str) -> int | None:
        return _count_in(obj, key, LF_USAGE, bad)

    details = usage.get("prompt_tokens_details")
    if "prompt_tokens" in usage:  # OpenAI's: prompt_tokens includes the cached tokens
        read, write = num(details, "cached_tokens"), num(details, "cache_write_tokens")
        return num(usage, "prompt_tokens"), num(usage, "completion_tokens"), read, write
    if "input_tokens" in usage:  # Anthropic's: input_tokens excludes the cache
        fresh, keys = num(usage, "input_tokens"), ("cache_read_input_tokens", "cache_creation_input_tokens")
    else:  # Langfuse's usage types
        fresh, keys = num(usage, "input"), ("input_cache_read", "input_cache_creation")
    read, write = num(usage, keys[0]), num(usage, keys[1])
    total = None if fresh is None else fresh + (read or 0) + (write or 0)
    return total, num(usage, "output_tokens" if "input_tokens" in usage else "output"), read, write


# --- MLflow Tracing --------------------------------------------------------------------

#: MLflow Tracing's own spans (its autologging: ``mlflow.anthropic.autolog()``, ``mlflow.openai.autolog()``,
#: ``mlflow.langchain.autolog()``, ...), exported over OTLP as its docs say (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``;
#: scope ``mlflow.tracing.provider``). Every value is JSON-encoded, a string too (``"CHAT_MODEL"`` with its quotes).
#: A span whose ``mlflow.spanType`` is CHAT_MODEL or LLM (EMBEDDING) is a model call; its usage is the object
#: ``mlflow.chat.tokenUsage`` (``input_tokens`` includes the cache reads and writes: MLflow adds Anthropic's),
#: written only when the answer had one: a ``stream=True`` call's span has none, nor has an embedding's. The model is
#: ``mlflow.llm.model``, the provider ``mlflow.llm.provider`` (the openai flavor writes none: its
#: ``mlflow.message.format`` says it). With ``MLFLOW_ENABLE_OTEL_GENAI_SEMCONV=true`` MLflow exports the GenAI
#: conventions instead (read above; that export leaves out the cache counts).
ML_SPAN_TYPE: Final = "mlflow.spanType"
ML_USAGE: Final = "mlflow.chat.tokenUsage"
ML_MODEL: Final = "mlflow.llm.model"
ML_PROVIDER: Final = "mlflow.llm.provider"
ML_FORMAT: Final = "mlflow.message.format"
ML_OUTPUTS: Final = "mlflow.spanOutputs"
_ML_OPERATIONS: Final = {"CHAT_MODEL": c.OPERATION_CHAT, "LLM": c.OPERATION_CHAT, "EMBEDDING": "embeddings"}
#: ``mlflow.message.format`` values of the flavors that patch a provider's own SDK: the provider (other flavors
#: are frameworks: langchain, llamaindex, crewai, dspy, pydantic_ai, ...).
_ML_FORMAT_PROVIDERS: Final = {"anthropic": c.PROVIDER_ANTHROPIC, "openai": "openai", "gemini": "gemini",
                               "mistral": "mistral_ai", "groq": "groq", "bedrock": "aws.bedrock"}
_ML_UNREPORTED: Final = (f"{ML_USAGE}:missing",)
#: The openai flavor's copy of the call's ``model`` argument: its failed call's span has no ``mlflow.llm.model``.
_ML_ARG_MODEL: Final = "model"
#: Longest ``mlflow.spanOutputs`` parsed for the finish reason and the model that answered (an answer is a few KiB;
#: a longer one keeps its response id, read off its start, and gives neither).
_ML_MAX_OUTPUT_CHARS: Final = 262_144
_ML_FLAVOR = re.compile(r"[a-z][a-z0-9_]{0,39}")


def _ml_str(v: Any) -> str | None:
    """An MLflow attribute's string: JSON-encoded (``"CHAT_MODEL"``), or as it is when it is not."""
    text = str_of(v) if v is not None else None
    if text and len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            value = json.loads(text)
        except ValueError:
            return text
        return value if isinstance(value, str) and value else None
    return text


def _read_mlflow(span_type: str | None, get: Any, bad: list[str]) -> CallReading | None:
    op = _ML_OPERATIONS.get(span_type or "")
    if op is None:
        return None  # an agent's, a chain's, a tool's, a retriever's span...
    provider = _ml_str(get(ML_PROVIDER)) or _ML_FORMAT_PROVIDERS.get(_ml_str(get(ML_FORMAT)) or "")
    model = _ml_str(get(ML_MODEL)) or _ml_str(get(_ML_ARG_MODEL))
    input_tokens = output_tokens = read = write = write_1h = None
    if (v := get(ML_USAGE)) is not None:
        usage = _usage_object(str_of(v), ML_USAGE, bad)
        if usage is not None:
            input_tokens, output_tokens = (_count_in(usage, "input_tokens", ML_USAGE, bad),
                                           _count_in(usage, "output_tokens", ML_USAGE, bad))
            read, write = (_count_in(usage, "cache_read_input_tokens", ML_USAGE, bad),
                           _count_in(usage, "cache_creation_input_tokens", ML_USAGE, bad))
            write_1h = _count_in(usage, "cache_creation_input_tokens_above_1hr", ML_USAGE, bad)
            if input_tokens is not None and (read or 0) + (write or 0) > input_tokens:
                input_tokens += (read or 0) + (write or 0)  # an MLflow before it added Anthropic's cache to the input
    out = get(ML_OUTPUTS)
    finish_reasons, response_model = _ml_answer(str_of(out) if out is not None else None)
    return _new(CallReading, (op, provider.strip().lower() if provider else None, model, response_model, input_tokens,
                              output_tokens, read, write, finish_reasons, _ML_UNREPORTED, _oi_response_id(out),
                              write_1h if write else None, None))


def _usage_object(text: str | None, key: str, bad: list[str]) -> dict[str, Any] | None:
    """A usage attribute's JSON object (Langfuse's, MLflow's); None, flagged ``key:not_an_object``, when it is none."""
    try:
        usage = json.loads(text) if text and len(text) <= _MAX_USAGE_CHARS else None
    except (ValueError, RecursionError):  # not JSON, or nested past Python's recursion limit
        usage = None
    if not isinstance(usage, dict):
        bad.append(f"{key}:not_an_object")
        return None
    return usage


def _count_in(obj: Any, key: str, attribute: str, bad: list[str]) -> int | None:
    """``obj[key]`` of a usage object as a token count; None when absent, or flagged ``attribute.key:out_of_range``
    when it is no number within range, ``attribute.key:not_whole`` when it has a fraction (1000.6 tokens: a
    sender's arithmetic, not a count, as :func:`~costline.processors.attributes.count_of` reads it; 1000.0 is one)."""
    x = obj.get(key) if isinstance(obj, dict) else None
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, (int, float)) or x != x or not 0 <= x <= MAX_TOKENS:
        bad.append(f"{attribute}.{key}:out_of_range")
        return None
    if x != int(x):
        bad.append(f"{attribute}.{key}:not_whole")
        return None
    return int(x)


def _ml_answer(text: str | None) -> tuple[list[str] | None, str | None]:
    """(finish reasons, model) of the answer MLflow recorded: an Anthropic message (``stop_reason``), a chat
    completion (each choice's ``finish_reason``) or a response (``status``: not a finish reason, so none)."""
    if not text or text[0] != "{" or len(text) > _ML_MAX_OUTPUT_CHARS:
        return None, None  # no answer, an object's repr (a stream's), or too long to parse here
    try:
        answer = json.loads(text)
    except (ValueError, RecursionError):
        return None, None
    if not isinstance(answer, dict):
        return None, None
    model = answer.get("model")
    model = model[:256] if isinstance(model, str) and model else None
    if isinstance(reason := answer.get("stop_reason"), str):
        return [reason[:64]], model
    choices = answer.get("choices")
    if isinstance(choices, list):
        reasons = [r[:64] for ch in choices[:64] if isinstance(ch, dict) and isinstance(r := ch.get("finish_reason"), str)]
        return reasons or None, model
    return None, model


def mlflow_flavor(get: Any) -> str | None:
    """``mlflow.<flavor>`` of an MLflow span (``mlflow.anthropic``, ``mlflow.langchain``): the instrumentation a
    call is reported by. MLflow's flavors share one scope, and two of them report one call (LangChain's span around
    the anthropic SDK's), so the views tell them apart by it. None: not an MLflow span, or no usable format."""
    flavor = _ml_str(get(ML_FORMAT))
    return f"mlflow.{flavor}" if flavor and _ML_FLAVOR.fullmatch(flavor) else None


# --- all families ---------------------------------------------------------------------

#: Every attribute key a usage figure may be read from (a ``data_quality`` entry naming one of them
#: means that figure was present and dropped as invalid: NULL, not 0).
ALL_INPUT_KEYS: Final = (*INPUT_TOKEN_KEYS, OI_PROMPT_TOKENS, AI_SDK_EMBED_TOKENS, LF_USAGE,
                         *(f"{LF_USAGE}.{k}" for k in ("prompt_tokens", "input_tokens", "input")),
                         ML_USAGE, f"{ML_USAGE}.input_tokens")
ALL_OUTPUT_KEYS: Final = (*OUTPUT_TOKEN_KEYS, OI_COMPLETION_TOKENS, LF_USAGE,
                          *(f"{LF_USAGE}.{k}" for k in ("completion_tokens", "output_tokens", "output")),
                          ML_USAGE, f"{ML_USAGE}.output_tokens")
ALL_READ_KEYS: Final = (*CACHE_READ_KEYS, OI_CACHE_READ_TOKENS, LF_USAGE,
                        *(f"{LF_USAGE}.{k}" for k in ("cached_tokens", "cache_read_input_tokens", "input_cache_read")),
                        ML_USAGE, f"{ML_USAGE}.cache_read_input_tokens")
ALL_WRITE_KEYS: Final = (*CACHE_CREATION_KEYS, OI_CACHE_WRITE_TOKENS, LF_USAGE,
                         *(f"{LF_USAGE}.{k}" for k in ("cache_write_tokens", "cache_creation_input_tokens",
                                                           "input_cache_creation")),
                         ML_USAGE, f"{ML_USAGE}.cache_creation_input_tokens")
#: Prefixes of the usage attributes of every family: a call with one of them dropped is not priced.
USAGE_PREFIXES: Final = ("gen_ai.usage.", "llm.usage.", "llm.token_count.", "ai.usage.", LF_USAGE, "anthropic.usage.",
                         ML_USAGE, _LANGSMITH_DETAILS[1], _LITELLM_USAGE + ".")


def read_call(name: str, get: Any, scope: str | None, failed: bool, bad: list[str]) -> CallReading | None:
    """What the span named ``name`` says about its model call; None when it is no model call.

    ``get`` is the span's ``{key: AnyValue}.get``; ``scope`` the name of its instrumentation scope;
    ``failed`` whether the span reports a failure (some spellings tell a call from a request by it).
    Unusable values are appended to ``bad`` (``key:reason``) and read as None; nothing raises.
    """
    if get(c.GEN_AI_OPERATION_NAME) is not None or get(c.GEN_AI_REQUEST_MODEL) is not None:
        return _read_genai(name, get, scope, failed, bad)
    if (lf_v := get(LF_TYPE)) is not None:
        return _read_langfuse(str_of(lf_v), get, bad)
    if (kind_v := get(OI_SPAN_KIND)) is not None:
        return _read_openinference(str_of(kind_v), name, get, scope, failed, bad)
    if (ml_v := get(ML_SPAN_TYPE)) is not None:
        kind = _ml_str(ml_v)
        return _read_mlflow(kind.strip().upper() if kind else None, get, bad)
    if scope == _AI_SDK_SCOPE and name.endswith(_AI_SDK_EMBED_SUFFIX):
        return _read_ai_sdk_embedding(get, bad)
    if failed and scope is not None and scope.startswith(_OPENLIT_SCOPE):
        return _read_openlit_failure(name, scope)
    return None


#: OpenLIT (1.45) names a call's span ``"{operation} {model}"``; its Anthropic instrumentor writes **no attribute at
#: all** on a failed call's span (a 529, a 400, an error mid-stream: only that name, status ERROR and an
#: ``exception`` event), so the failure would be lost. Such a span is read off its name: the operation must be a
#: model call's, the model a plausible id (:func:`_model_name`); the provider is the one the scope names.
_OPENLIT_SCOPE: Final = "openlit.instrumentation."
_OPENLIT_PROVIDERS: Final = {"anthropic": c.PROVIDER_ANTHROPIC, "openai": "openai"}
#: Longest span name read so (an operation, a space and a model id).
_MAX_OPENLIT_NAME_CHARS: Final = 256


def _read_openlit_failure(name: str, scope: str) -> CallReading | None:
    if len(name) > _MAX_OPENLIT_NAME_CHARS:
        return None
    op, _, model = name.partition(" ")
    if op not in CALL_OPERATIONS or _model_name(model) is None:
        return None
    provider = _OPENLIT_PROVIDERS.get(scope[len(_OPENLIT_SCOPE):].split(".", 1)[0])
    return _new(CallReading, (op, provider, model, None, None, None, None, None, None, (), None, None, None))
