"""The telemetry contract: span names and attribute keys costline reads and writes.

Follows the OpenTelemetry GenAI semantic conventions (v1.40 names) and adds
``costline.*`` keys where those have no word. ``docs/telemetry.md`` is the prose
version of this module; keep the two in step.

Three kinds of span:

* **model call** — kind CLIENT, named ``"{gen_ai.operation.name} {gen_ai.request.model}"``;
* **cache lookup** — named :data:`SPAN_CACHE_LOOKUP`;
* **request** — named :data:`SPAN_REQUEST`, parent of its lookups and calls.
"""

from __future__ import annotations

from typing import Final

# --- span names -----------------------------------------------------------------
SPAN_REQUEST: Final = "costline.request"
SPAN_CACHE_LOOKUP: Final = "costline.cache.lookup"

# --- OpenTelemetry GenAI semantic conventions -------------------------------------
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_SYSTEM: Final = "gen_ai.system"  # deprecated predecessor of provider.name; read, never written
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_ID: Final = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
# Includes cached tokens (read and creation), as the conventions say.
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: Final = "gen_ai.usage.cache_creation.input_tokens"
# Of the cache writes, those with a one-hour lifetime (Anthropic's ttl "1h": 2 x the input price, not 1.25 x).
# No GenAI convention names them: costline writes (and reads) the anthropic SDK's own spelling.
ANTHROPIC_USAGE_CACHE_CREATION_1H: Final = "anthropic.usage.cache_creation.ephemeral_1h_input_tokens"
# The tier that served the call as the API said it ("batch": priced at the batch multiplier). OpenAI's is a
# GenAI convention ("flex" is billed at Batch API prices); Anthropic's is the anthropic SDK's spelling.
# Web searches the model's server tool made for the call (Anthropic's usage.server_tool_use.web_search_requests):
# billed per search on top of the tokens. Spelled as the anthropic SDK spells its other usage attributes.
ANTHROPIC_USAGE_WEB_SEARCH_REQUESTS: Final = "anthropic.usage.server_tool_use.web_search_requests"
# The speed the call ran at, as the API said it (Anthropic's usage.speed: "fast" is billed at a per-model
# multiplier of the standard prices). Spelled after the SDK's anthropic.response.service_tier (also a usage field).
ANTHROPIC_RESPONSE_SPEED: Final = "anthropic.response.speed"
ANTHROPIC_RESPONSE_SERVICE_TIER: Final = "anthropic.response.service_tier"
OPENAI_RESPONSE_SERVICE_TIER: Final = "openai.response.service_tier"
# The older GenAI spelling of OpenAI's served tier, which LiteLLM's OpenTelemetry callback still writes (for every
# provider: Anthropic's usage.service_tier too).
GEN_AI_OPENAI_RESPONSE_SERVICE_TIER: Final = "gen_ai.openai.response.service_tier"
# Where Anthropic ran the call, as its usage.inference_geo says ("us": US-only inference, 1.1 x the token prices
# on models from February 2026 on; "global"). No convention or SDK span names it: spelled after the SDK's
# anthropic.response.service_tier.
ANTHROPIC_RESPONSE_INFERENCE_GEO: Final = "anthropic.response.inference_geo"
# The server a client span called (the GenAI conventions' and HTTP clients'): with the request's URL, where a
# Google Vertex AI call ran ("us-east5-aiplatform.googleapis.com" is a regional endpoint, "aiplatform.googleapis.com"
# the global one), which the clouds bill differently for Claude (costline.pricing.endpoint_scope).
SERVER_ADDRESS: Final = "server.address"
URL_FULL: Final = "url.full"
URL_PATH: Final = "url.path"
# The kind of a cloud's endpoint that ran a Claude call (ENDPOINT_GLOBAL / ENDPOINT_REGIONAL), where costline's
# wrapper knows it: an AnthropicVertex client's region, a Bedrock model id's inference profile. Wins over reading
# the model id or URL at ingest.
COSTLINE_ENDPOINT_SCOPE: Final = "costline.endpoint_scope"
# Streamed calls: the request asked for a stream; seconds from sending it to the first chunk of output.
GEN_AI_REQUEST_STREAM: Final = "gen_ai.request.stream"
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: Final = "gen_ai.response.time_to_first_chunk"
GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"
# The system prompt when an instrumentation records it apart from the chat history (the conventions since 1.37; the
# anthropic SDK's own spans in content mode): a JSON list of parts, [{"type": "text", "content": "..."}].
GEN_AI_SYSTEM_INSTRUCTIONS: Final = "gen_ai.system_instructions"
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
ERROR_TYPE: Final = "error.type"
# The resource attribute naming the app or service that sent a span (the lake's service_name columns).
SERVICE_NAME: Final = "service.name"

OPERATION_CHAT: Final = "chat"
PROVIDER_ANTHROPIC: Final = "anthropic"
PROVIDER_VLLM: Final = "vllm"
PROVIDER_OPENAI: Final = "openai"
#: Claude on Amazon Bedrock (the GenAI conventions' gen_ai.provider.name; anthropic.AnthropicBedrock says the same)
PROVIDER_BEDROCK: Final = "aws.bedrock"
#: Claude on Google Vertex AI (likewise; anthropic.AnthropicVertex)
PROVIDER_VERTEX: Final = "gcp.vertex_ai"
#: A cloud's endpoint kinds for Claude (the lake's calls.endpoint_scope): Bedrock's global inference profiles and
#: Vertex's global location, or a region / geography (1.1 x the global prices from Sonnet 4.5 and Haiku 4.5 on).
ENDPOINT_GLOBAL: Final = "global"
ENDPOINT_REGIONAL: Final = "regional"

# --- costline.* on every kind of span ----------------------------------------------
COSTLINE_TIER: Final = "costline.tier"
COSTLINE_REQUEST_ID: Final = "costline.request.id"  # stamped on a request's descendants too

# --- costline.* on model calls ------------------------------------------------------
COSTLINE_COST_USD: Final = "costline.cost_usd"  # explicit price, overrides the pricing table
COSTLINE_BATCH: Final = "costline.batch"  # bool: sent through a batch API (priced at the batch multiplier)
#: bool: the usage on this call is not the provider's final count (a stream that broke or was
#: closed early, or an OpenAI stream without include_usage: then no token counts at all).
COSTLINE_USAGE_INCOMPLETE: Final = "costline.usage.incomplete"

# --- cache lookups -----------------------------------------------------------------
COSTLINE_CACHE_HIT: Final = "costline.cache.hit"
COSTLINE_CACHE_SIMILARITY: Final = "costline.cache.similarity"
COSTLINE_CACHE_NAMESPACE: Final = "costline.cache.namespace"
#: Why the verification stage turned candidates down, comma-separated (e.g. ``number,negation``):
#: the near-misses a namespace's traffic holds (lookups.reject_reason in the lake).
COSTLINE_CACHE_REJECT_REASON: Final = "costline.cache.reject_reason"
#: On a request span: why the cache was not looked up for a request that would have used it (``no-cache``,
#: ``no-store``: the request's ``Cache-Control``; ``sampled``: ``[serving.cache] bypass_sampled``). Such a request
#: opens no lookup span, so the hit rates (computed from lookup spans) do not count it as a miss.
COSTLINE_CACHE_BYPASS: Final = "costline.cache.bypass"

# --- requests ---------------------------------------------------------------------
COSTLINE_TENANT: Final = "costline.tenant"
COSTLINE_TASK_TYPE: Final = "costline.task_type"
COSTLINE_SUBTYPE: Final = "costline.subtype"
COSTLINE_ROUTED_TIER: Final = "costline.routed_tier"
#: Why the router picked that tier (the policy's reason; ``fallback to …`` when the policy failed).
COSTLINE_ROUTE_REASON: Final = "costline.route.reason"
#: How sure the policy was, 0–1 (the rules: 1; a learned policy: its estimate that the tier passes; 0: a fallback).
COSTLINE_ROUTE_CONFIDENCE: Final = "costline.route.confidence"
COSTLINE_ATTEMPTS: Final = "costline.attempts"
COSTLINE_ESCALATIONS: Final = "costline.escalations"
#: The attempts whose answer was not accepted, in order, as ``tier:problem`` comma-separated (``student:validator,
#: budget:RateLimitError``): why the request escalated, or failed (requests.rejected_attempts in the lake).
COSTLINE_REJECTED_ATTEMPTS: Final = "costline.rejected_attempts"
COSTLINE_SUCCESS: Final = "costline.success"
#: The response id the gateway's answer gave its client (the backend's ``msg_…`` when it passed that on, else one it
#: made: ``msg_costline_<request id>``, ``chatcmpl-costline-<request id>``): an app's own span of that call, in
#: another trace, carries it as its ``gen_ai.response.id``, and the lake counts the call once (docs/telemetry.md,
#: "Apps behind the gateway"; requests.response_id in the lake).
COSTLINE_RESPONSE_ID: Final = "costline.response.id"

# --- tiers --------------------------------------------------------------------------
TIER_CACHE: Final = "cache"
TIER_STUDENT: Final = "student"
TIER_BUDGET: Final = "budget"
TIER_MID: Final = "mid"
TIER_UPPER: Final = "upper"
TIER_FRONTIER: Final = "frontier"
API_TIERS: Final = (TIER_BUDGET, TIER_MID, TIER_UPPER, TIER_FRONTIER)  # cheapest first
UNKNOWN_TIER: Final = "unknown"

# --- content capture ---------------------------------------------------------------
ENV_CAPTURE_MESSAGE_CONTENT: Final = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

# --- Kafka message format -----------------------------------------------------------
#: Header naming the payload encoding, when a producer sets one. Without it the
#: processor sniffs: ``{`` opens OTLP JSON, anything else is OTLP protobuf.
HEADER_CONTENT_TYPE: Final = "content-type"
CONTENT_TYPE_PROTOBUF: Final = "application/x-protobuf"
CONTENT_TYPE_JSON: Final = "application/json"
#: Header on a dead-lettered message saying why it was rejected.
HEADER_DLQ_REASON: Final = "costline.dlq.reason"
HEADER_DLQ_SOURCE: Final = "costline.dlq.source"  # "topic/partition/offset" of the original
#: On a DLQ record whose value was too large for the DLQ topic: "<n> bytes: ..." (the value is left out; the
#: original is at costline.dlq.source while the source topic's retention keeps it).
HEADER_DLQ_VALUE_DROPPED: Final = "costline.dlq.value_dropped"

#: The largest token count one call may report (1e8): more is a broken counter, not a call. The in-app hooks and the
#: backends leave such a count out (the call flagged ``costline.usage.incomplete``), the processor nulls it.
MAX_TOKENS: Final = 100_000_000

#: The finish reasons of an OpenAI-compatible answer that is no answer: vLLM's (and SGLang's) ``abort`` (the engine
#: dropped the request mid-answer), ``error`` (it failed mid-answer), ``repetition`` (a loop it detected and cut),
#: DeepSeek's ``insufficient_system_resource``. A call that ends so failed (``error.type`` ``finish_reason:<reason>``).
OPENAI_FAILED_FINISH_REASONS: Final = frozenset({"abort", "error", "repetition", "insufficient_system_resource"})

__all__ = [name for name in dir() if name.isupper()]
