"""Local stand-ins for the paid and remote model APIs, for the demo and the tests.

:class:`StandInServer` is one stdlib HTTP server speaking

* the **Anthropic Messages API** — ``POST /v1/messages`` (usage with
  ``cache_read_input_tokens`` / ``cache_creation_input_tokens``: ``cache_control``
  blocks create prompt-cache entries that later requests with the same prefix read, the writes split by
  lifetime in ``usage.cache_creation`` (a ``"ttl": "1h"`` breakpoint's share is one-hour); ``speed: "fast"``
  is said back in ``usage.speed``, ``inference_geo`` ("us" or "global") in ``usage.inference_geo``; a ``web_search_*`` server tool searches once, plus once per " and " in the
  question, at most ``max_uses`` a request, none with ``tool_choice`` none (``server_tool_use`` and
  ``web_search_tool_result`` blocks before the answer,
  which is a lead text block then the answer's, citing each result as ``web_search_result_location``; a turn
  that needs more than three searches pauses after three — ``stop_reason`` ``pause_turn``, no text — and goes on,
  sent back with the paused turn as the last assistant message;
  ``usage.server_tool_use.web_search_requests``); ``tools`` /
  ``tool_choice``: a tool is called — a ``tool_use`` block after a short text block, ``stop_reason``
  ``tool_use`` — when the last user question names it, or ``tool_choice`` is ``any`` / ``tool``, unless
  ``tool_result`` blocks came back since that question: those get the text answer
  ``"<tool name> returned: <result>"``),
  also under the platform clients' prefixes: ``POST /anthropic/v1/messages`` (``anthropic.AnthropicFoundry``,
  ``AnthropicBedrockMantle``) and ``POST /v1/projects/{p}/locations/{l}/workspaces/{w}/invoke/v1/messages``
  (``AnthropicGoogleCloud``),
* ``POST /v1/messages/count_tokens`` (``{"input_tokens": N}``: free, nothing generated, not logged as paid),
* the **Message Batches API** — ``POST /v1/messages/batches``, ``GET /v1/messages/batches``,
  ``GET /v1/messages/batches/{id}``, ``GET /v1/messages/batches/{id}/results`` (JSONL),
  ``POST /v1/messages/batches/{id}/cancel``,
* the **OpenAI chat-completions API** as vLLM serves it — ``POST /v1/chat/completions``
  for the student's model and LoRA adapter names (a ``service_tier`` asked for is named in the answer, as
  OpenAI does; ``tools`` / ``tool_choice`` as for the Messages API:
  ``tool_calls`` with JSON ``arguments`` and ``finish_reason`` ``tool_calls``; ``role: "tool"`` results
  after the last user question get ``"<function name> returned: <content>"``),
* the **OpenAI Responses API** — ``POST /v1/responses`` for the student's names and the models
  ``pricing`` lists with provider ``openai``: ``input`` a string or a list of items (messages,
  ``function_call`` / ``function_call_output``), ``instructions``, ``max_output_tokens``; a function
  tool whose name the last user message mentions is called (once: a ``function_call_output`` after
  that message gets a text answer); automatic prompt caching as OpenAI does it (every prefix ending
  at an input item's end and at least ``min_cache_tokens`` long is cached, the longest cached one is
  read: ``usage.input_tokens_details.cached_tokens``, part of ``input_tokens``; no write charge),
* the **OpenAI embeddings API** — ``POST /v1/embeddings`` (any model name; deterministic 8-dimensional
  vectors, float or base64 as asked; usage counts the input's tokens),
* ``GET /v1/models`` (Anthropic's shape when the request carries ``anthropic-version``).
* the **Gemini API** (Google AI Studio's REST shape, what ``google-genai`` speaks) —
  ``POST /v1beta/models/{model}:generateContent`` / ``:streamGenerateContent`` / ``:countTokens`` /
  ``:embedContent``: :mod:`costline.sim.standin_gemini` (``server.gemini``).
* **Amazon Bedrock Runtime**'s Converse API (what ``boto3.client("bedrock-runtime")`` speaks) —
  ``POST /model/{modelId}/converse`` / ``converse-stream`` (an AWS event stream), ``cachePoint``
  prompt caching: :mod:`costline.sim.standin_bedrock` (``server.bedrock``); its InvokeModel (streamed too) and
  CountTokens for Claude (what ``anthropic.AnthropicBedrock`` speaks).
* **Claude on Google Vertex AI** (``anthropic.AnthropicVertex``) — ``…/publishers/anthropic/models/{model}:rawPredict``
  / ``:streamRawPredict`` / ``count-tokens:rawPredict``: :mod:`costline.sim.standin_vertex` (``server.vertex``).

``stream: true`` is answered with server-sent events as each API sends them: the Messages
API's ``message_start`` (input and cache usage) … ``content_block_delta`` (``text_delta``; a tool call's
``input_json_delta`` pieces) … ``message_delta`` (the cumulative usage: input, cache and output) …
``message_stop``; OpenAI's ``chat.completion.chunk`` objects (a tool call's ``delta.tool_calls``: the id and
name, then ``arguments`` pieces), plus a last chunk
with ``usage`` and no choices when ``stream_options.include_usage`` is true, then ``[DONE]``; the
Responses API's ``response.created``, ``response.in_progress``, ``response.output_item.added``,
``response.content_part.added``, ``response.output_text.delta`` … (a function call's
``response.function_call_arguments.delta`` …), ``…done`` events, ``response.completed`` with the
full response and its usage (``response.incomplete`` when cut at ``max_output_tokens``).
A streamed answer takes the tier's latency in all: the first text delta comes after
:data:`PREFILL_SHARE` of it, the rest spread evenly over the deltas.
:meth:`StandInServer.inject_stream_errors` breaks the next streams after some deltas with each
API's in-stream error.

Answers come from :mod:`costline.sim.standin_model`: deterministic from
``(model, query)``, adequate when the tier's capability reaches the query's difficulty,
token counts exact for the returned text under its regex tokenizer. Knobs: per-tier
latency (``latency_ms`` x ``latency_scale``, through an injected ``sleep``), error bursts
(:meth:`StandInServer.inject_errors`: 429 ``rate_limit_error`` with ``retry-after``,
529 ``overloaded_error``, 500 ``api_error``, each in its API's own error format), and a
student that degrades on a shifted slice (``degrade_keywords``).

:attr:`StandInServer.log` records every data-plane request, so tests and jobs can prove
there was no duplicate paid request per ``Idempotency-Key`` header or batch ``custom_id``.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import threading
import time
import uuid
from array import array
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from costline import contract
from costline.config import PricingConfig
from costline.pricing import PricingTable, normalize_model_id
from costline.serving.gateway._http import (HttpRequest, HttpResponse, JsonServer, Route, ServedByJsonServer,
                                            not_allowed_with)
from costline.serving.gateway.messages_api import (ANTHROPIC_ERROR_TYPES, last_user_text, message_text, shape_problem,
                                                   thinking_of)
from costline.serving.settings import StandInConfig
from costline.sim.standin_bedrock import BedrockApi, bedrock_error, is_bedrock_path
from costline.sim.standin_vertex import VertexClaudeApi
from costline.sim.standin_gemini import GeminiApi, gemini_error, is_gemini_path
from costline.sim.standin_model import adequate, count_tokens, synthesize, tokenize
from costline.sim.standin_documents import cited_answer
from costline.sim.standin_structured import asks_for_json, json_object_answer, schema_instance

__all__ = ["StandInServer", "RequestLog", "LoggedRequest"]

_OPENAI_ERROR_TYPES: dict[int, str] = {
    400: "BadRequestError",
    404: "NotFoundError",
    405: "invalid_request_error",
    429: "RateLimitError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
    529: "InternalServerError",
}
ANTHROPIC = "anthropic"
OPENAI = "openai"
#: Share of a streamed answer's latency spent before its first text delta (the prefill).
PREFILL_SHARE = 0.25
#: OpenAI's ``service_tier`` asked for -> the one its answer names (``auto`` is served by the default tier).
_OPENAI_SERVICE_TIERS = {"auto": "default", "default": "default", "flex": "flex", "priority": "priority"}
#: How long a prompt-cache entry written with ``cache_control: {"ttl": "1h"}`` lives (others: ``cache_ttl_s``).
ONE_HOUR_S = 3600.0
#: Words per text delta of a streamed answer.
STREAM_WORDS_PER_DELTA = 3
_WORD_START = re.compile(r"(?<=\s)(?=\S)")


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    """One data-plane request the stand-in received."""

    api: str  # "anthropic" | "openai" (chat completions, responses, embeddings) | "anthropic-batch"
    model: str
    status: int
    #: The ``Idempotency-Key`` header, or the batch request's ``custom_id``.
    key: str | None
    paid: bool
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    #: The generation parameters the request set, ``(name, value)`` by the asking API's names.
    sampling: tuple[tuple[str, Any], ...] = ()
    #: The ``anthropic-beta`` features the request named (Messages API).
    betas: tuple[str, ...] = ()


#: Messages API fields that change how a request is served, not what it asks; logged with the parameters so
#: tests see what a client's request carried to the model.
_CARRIED = ("cache_control", "service_tier", "speed", "inference_geo", "metadata", "context_management")
#: Chat Completions fields the Messages API does not have (it refuses a request that sends one).
_NOT_MESSAGES_FIELDS = ("frequency_penalty", "presence_penalty", "seed", "logit_bias", "response_format")


def _sampling(body: Mapping[str, Any], names: tuple[str, ...], max_temperature: float) -> tuple[tuple[str, Any], ...]:
    """The generation parameters of ``body`` among ``names``, checked as the API checks them (raises _ApiError)."""
    out = []
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if name in ("temperature", "top_p"):
            top = max_temperature if name == "temperature" else 1.0
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= top:
                raise _ApiError(400, f"{name}: range: 0..{top:g}")
        elif name == "top_k" and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise _ApiError(400, "top_k: a whole number >= 0")
        elif name in ("frequency_penalty", "presence_penalty") and (
                not isinstance(value, (int, float)) or isinstance(value, bool) or not -2 <= value <= 2):
            raise _ApiError(400, f"{name}: range: -2..2")
        elif name in ("output_config", "cache_control", "metadata", "response_format", "logit_bias",
                      "context_management"):
            if not isinstance(value, Mapping):
                raise _ApiError(400, f"{name}: Input should be a valid dictionary")
            value = tuple(sorted(value.items()))
        elif name in ("stop_sequences", "stop"):
            value = [value] if name == "stop" and isinstance(value, str) else value
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise _ApiError(400, f"{name}: a list of non-empty strings")
            value = tuple(value)
        out.append((name, value))
    return tuple(out)


def _stopped(text: str, stops: Any) -> tuple[str, str | None]:
    """``text`` cut before the first of ``stops`` it holds, and that stop sequence (None: none held)."""
    cuts = [(text.find(stop), stop) for stop in stops or () if stop in text]
    if not cuts:
        return text, None
    at, stop = min(cuts)
    return text[:at], stop


class RequestLog:
    """Thread-safe record of what the stand-in served."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[LoggedRequest] = []

    def add(self, entry: LoggedRequest) -> None:
        with self._lock:
            self._entries.append(entry)

    def entries(self, api: str | None = None) -> list[LoggedRequest]:
        with self._lock:
            return [e for e in self._entries if api is None or e.api == api]

    def paid(self, api: str | None = None) -> list[LoggedRequest]:
        return [e for e in self.entries(api) if e.paid]

    def paid_count(self, key: str) -> int:
        """How many paid requests carried this idempotency key / custom_id."""
        return sum(1 for e in self.paid() if e.key == key)

    def duplicate_paid_keys(self) -> dict[str, int]:
        """Keys that were paid for more than once, with their counts."""
        counts = Counter(e.key for e in self.paid() if e.key)
        return {k: n for k, n in counts.items() if n > 1}

    def models(self, paid_only: bool = True) -> Counter[str]:
        return Counter(e.model for e in (self.paid() if paid_only else self.entries()))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def _blocks(value: Any) -> list[tuple[str, str | None]]:
    """(text, its cache_control's lifetime: "5m", "1h", or None without one) for a system prompt or a message's
    content."""
    if value is None:
        return []
    if isinstance(value, str):
        return [(value, False)]
    if not isinstance(value, list):  # as the API: a 400, not the stand-in's own TypeError (a 500)
        raise _ApiError(400, f"system / content: a string or a list of content blocks, not {type(value).__name__}")
    out = []
    for block in value:
        if isinstance(block, Mapping):
            text = block.get("text") if block.get("type", "text") == "text" else json.dumps(block, sort_keys=True)
            out.append((str(text or ""), _cache_ttl(block.get("cache_control"))))
    return out


def _cache_ttl(cache_control: Any) -> str | None:
    if not cache_control:
        return None
    return "1h" if isinstance(cache_control, Mapping) and cache_control.get("ttl") == "1h" else "5m"


class _ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Batch:
    id: str
    created_at: datetime
    ends_at: float
    results: list[dict[str, Any]]
    canceled: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class StandInServer(ServedByJsonServer):
    """The local Anthropic + vLLM stand-in. ``start()`` returns the port; ``shutdown()`` stops it.

    ``sleep`` simulates latency, ``now`` (monotonic seconds) drives the prompt-cache TTL and
    batch completion, ``wall`` (epoch seconds) stamps batch times: inject them in tests.
    """

    def __init__(
        self,
        config: StandInConfig | None = None,
        *,
        pricing: PricingConfig | None = None,
        host: str | None = None,
        port: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or StandInConfig()
        self._pricing = PricingTable(pricing or PricingConfig())
        self._sleep = sleep
        self._now = now
        self._wall = wall
        self._lock = threading.Lock()
        self._errors: deque[tuple[int, str]] = deque()
        self._stream_errors: deque[tuple[int, str]] = deque()
        self._prompt_cache: dict[str, float] = {}
        self._batches: dict[str, _Batch] = {}
        self._ids = itertools.count(1)
        self._degrade: tuple[str, ...] = tuple(k.lower() for k in self.config.degrade_keywords)
        self.log = RequestLog()
        routes = [
            Route("POST", "/v1/messages", self._messages),
            Route("POST", "/v1/messages/count_tokens", self._count_tokens),
            Route("POST", "/v1/messages/batches", self._batch_create),
            Route("GET", "/v1/messages/batches", self._batch_list),
            Route("GET", "/v1/messages/batches/{id}", self._batch_get),
            Route("GET", "/v1/messages/batches/{id}/results", self._batch_results),
            Route("POST", "/v1/messages/batches/{id}/cancel", self._batch_cancel),
            # the Messages API under the path prefixes of Anthropic's platform clients: /anthropic (Microsoft
            # Foundry's AnthropicFoundry, Amazon Bedrock Mantle's AnthropicBedrockMantle) and Claude on Google
            # Cloud's gateway (AnthropicGoogleCloud: a workspace's .../invoke)
            Route("POST", "/anthropic/v1/messages", self._messages),
            Route("POST", "/v1/projects/{project}/locations/{location}/workspaces/{workspace}/invoke/v1/messages",
                  self._messages),
            Route("POST", "/v1/chat/completions", self._chat),
            # Azure OpenAI's spelling (AzureOpenAI(azure_endpoint=...)): the deployment in the path, the model
            # (the deployment's name) in the body as well
            Route("POST", "/openai/deployments/{deployment}/chat/completions", self._chat),
            Route("POST", "/v1/responses", self._responses),
            Route("POST", "/v1/embeddings", self._embeddings),
            Route("GET", "/v1/models", self._models),
        ]
        #: the Gemini API (``/v1beta/models/{model}:generateContent`` ...): sim/standin_gemini.py
        self.gemini = GeminiApi(self)
        routes.extend(self.gemini.routes())
        #: Amazon Bedrock Runtime's Converse API (``/model/{modelId}/converse``): sim/standin_bedrock.py
        self.bedrock = BedrockApi(self)
        routes.extend(self.bedrock.routes())
        #: Claude on Google Vertex AI (``…/publishers/anthropic/models/{model}:rawPredict``): sim/standin_vertex.py
        self.vertex = VertexClaudeApi(self)
        routes.extend(self.vertex.routes())
        self._server = JsonServer(
            routes,
            host=host or self.config.host,
            port=self.config.port if port is None else port,
            not_found=lambda req: self._error_response(req, 404, f"no route {req.method} {req.path}"),
            on_error=lambda req, exc: self._error_response(req, 500, f"stand-in failure: {exc}"),
            not_allowed=not_allowed_with(self._error_response),
            name="costline-standin",
        )

    @property
    def openai_url(self) -> str:
        """Base URL for an OpenAI-compatible client (``OpenAI(base_url=...)``)."""
        return self._server.url + "/v1"

    # -- knobs ----------------------------------------------------------------------------
    def inject_errors(self, status: int, count: int = 1, *, api: str = ANTHROPIC) -> None:
        """Fail the next ``count`` requests of ``api`` ("anthropic", "openai" or "any") with ``status``."""
        if api not in (ANTHROPIC, OPENAI, "any"):
            raise ValueError(f"api must be 'anthropic', 'openai' or 'any', got {api!r}")
        with self._lock:
            self._errors.extend([(int(status), api)] * count)

    def clear_errors(self) -> None:
        with self._lock:
            self._errors.clear()
            self._stream_errors.clear()

    def inject_stream_errors(self, after_deltas: int = 1, count: int = 1, *, api: str = ANTHROPIC) -> None:
        """Break the next ``count`` streams of ``api`` after ``after_deltas`` text deltas with the
        API's in-stream error (Anthropic: an ``error`` event of type ``overloaded_error``;
        OpenAI/vLLM: a ``data: {"error": ...}`` chunk). The usage sent before it stands."""
        if api not in (ANTHROPIC, OPENAI, "any"):
            raise ValueError(f"api must be 'anthropic', 'openai' or 'any', got {api!r}")
        if after_deltas < 0:
            raise ValueError(f"after_deltas must be >= 0, got {after_deltas}")
        with self._lock:
            self._stream_errors.extend([(int(after_deltas), api)] * count)

    def degrade(self, *keywords: str) -> None:
        """From now on the student answers queries containing any of ``keywords`` badly."""
        self._degrade = tuple(k.lower() for k in keywords)

    # -- the synthetic model -------------------------------------------------------------------
    def tier_of(self, model: str) -> str | None:
        """The tier a model name serves on this stand-in; None when it serves no such model."""
        if model in self.config.student_models or normalize_model_id(model) in self.config.student_models:
            return contract.TIER_STUDENT
        entry = self._pricing.lookup(model)
        return entry.tier if entry is not None else None

    def _degraded(self, tier: str, query: str) -> bool:
        low = query.lower()
        return tier == contract.TIER_STUDENT and any(k in low for k in self._degrade)

    def _generate(self, model: str, tier: str, query: str, max_tokens: int) -> tuple[str, int, bool]:
        """(text, output tokens, truncated) for one answer."""
        answer = synthesize(model, tier, query, degraded=self._degraded(tier, query))
        return _clipped(answer.text, max_tokens)

    def _structured(self, generated: tuple[str, int, bool], model: str, tier: str, query: str, max_tokens: int,
                    schema: Any, told: bool, *, guided: bool = False) -> tuple[str, int, bool]:
        """(text, output tokens, truncated) of a structured answer: an instance of ``schema`` (decoding held to it),
        or, with a prompt that only ``told`` the model to answer in JSON, a JSON object (prose before it from a tier
        the question is too hard for; ``guided``: held to JSON, never prose); ``generated`` as it is otherwise."""
        text = generated[0]
        if schema is not None:
            doc = json.dumps(schema_instance(schema, text))
        elif told or guided:
            doc = json_object_answer(text, adequate=guided or adequate(tier, query, degraded=self._degraded(tier, query)))
        else:
            return generated
        return _clipped_json(doc, max_tokens)

    def _latency(self, tier: str) -> None:
        ms = self.config.latency_ms.get(tier, 0.0) * self.config.latency_scale
        if ms > 0:
            self._sleep(ms / 1000.0)

    def _take_error(self, api: str, errors: deque[tuple[int, str]] | None = None) -> int | None:
        errors = self._errors if errors is None else errors
        with self._lock:
            for i, (value, which) in enumerate(errors):
                if which in (api, "any"):
                    del errors[i]
                    return value
        return None

    def _paced(self, tier: str, pieces: list[str]) -> Iterator[tuple[int, str]]:
        """(index, piece) with the tier's latency spread as a streamed answer takes it."""
        total = self.config.latency_ms.get(tier, 0.0) * self.config.latency_scale / 1000.0
        rest = total * (1.0 - PREFILL_SHARE) / max(len(pieces) - 1, 1)
        for i, piece in enumerate(pieces):
            pause = total * PREFILL_SHARE if i == 0 else rest
            if pause > 0:
                self._sleep(pause)
            yield i, piece

    def _search_blocks(self, question: str, n: int) -> list[dict[str, Any]]:
        """One search of the web search server tool: its ``server_tool_use`` block and its result."""
        tool_id = f"srvtoolu_standin_{next(self._ids):08d}"
        return [{"type": "server_tool_use", "id": tool_id, "name": "web_search",
                 "input": {"query": f"{question[:80]} ({n + 1})"}},
                {"type": "web_search_tool_result", "tool_use_id": tool_id, "content": [
                    {"type": "web_search_result", "url": _search_url(n),
                     "title": f"Stand-in result {n + 1}", "encrypted_content": "c3RhbmQtaW4=", "page_age": None}]}]

    def _prompt_cache_usage(self, model: str, system: Any, messages: list[Any]) -> tuple[int, int, int]:
        """(cache read, cache creation, of which one-hour) tokens for the request's cache_control breakpoints.

        The tokens written are those after the longest prefix read; each breakpoint's share of them (from the
        breakpoint before it) is written with its own lifetime, as the API bills a mix of "1h" and "5m"."""
        h = hashlib.blake2b(normalize_model_id(model).encode(), digest_size=16)
        total = 0
        breakpoints: list[tuple[str, int, str]] = []
        blocks = _blocks(system) + [b for m in messages for b in _blocks(m.get("content"))]
        for text, ttl_name in blocks:
            h.update(text.encode() + b"\x1e")
            total += count_tokens(text)
            if ttl_name:
                breakpoints.append((h.hexdigest(), total, ttl_name))
        eligible = [(k, n, t) for k, n, t in breakpoints[-4:] if n >= self.config.min_cache_tokens]
        if not eligible:
            return 0, 0, 0
        now = self._now()
        ttl = self.config.cache_ttl_s
        with self._lock:
            read = 0
            for key, tokens, ttl_name in reversed(eligible):
                if self._prompt_cache.get(key, -1.0) > now:
                    read = tokens
                    self._prompt_cache[key] = now + (ONE_HOUR_S if ttl_name == "1h" else ttl)
                    break
            last_key, last_tokens, last_ttl = eligible[-1]
            created = max(last_tokens - read, 0)
            one_hour, before = 0, read
            for _, tokens, ttl_name in eligible:
                if tokens > before:
                    one_hour += tokens - before if ttl_name == "1h" else 0
                    before = tokens
            if created:
                self._prompt_cache[last_key] = now + (ONE_HOUR_S if last_ttl == "1h" else ttl)
        return read, created, one_hour

    def _message(self, body: Any, *, key: str | None, api: str = ANTHROPIC,
                 betas: tuple[str, ...] = ()) -> dict[str, Any]:
        """Answer one Messages API request body (raises _ApiError)."""
        if not isinstance(body, Mapping):
            raise _ApiError(400, "the body must be a JSON object")
        model = body.get("model")
        max_tokens = body.get("max_tokens")
        messages = body.get("messages")
        if not isinstance(model, str) or not model:
            raise _ApiError(400, "model: field required")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise _ApiError(400, "max_tokens: field required (a whole number >= 1)")
        if not isinstance(messages, list) or not messages:
            raise _ApiError(400, "messages: at least one message is required")
        if not all(isinstance(m, Mapping) for m in messages):
            raise _ApiError(400, "messages: each message is an object with a role and content")
        problem = shape_problem(messages, body.get("system")) or _repeated_tool_use(messages)  # as the API checks
        if problem:
            raise _ApiError(400, problem)
        if body.get("stream") and api != ANTHROPIC:
            raise _ApiError(400, "stream: message batches do not stream; send stream=false")
        tier = self.tier_of(model)
        if tier is None or tier == contract.TIER_STUDENT:
            raise _ApiError(404, f"model: {model}")
        extra = next((k for k in _NOT_MESSAGES_FIELDS if k in body), None)
        if extra is not None:  # as the API answers a field it does not have
            raise _ApiError(400, f"{extra}: Extra inputs are not permitted")
        sampling = _sampling(body, ("temperature", "top_p", "top_k", "stop_sequences", "output_config", *_CARRIED), 1.0)
        tools, choice, named = _message_tools(body)
        tool = _chosen_tool(tools, choice, named, _open_question(messages, _holds_tool_results))
        stopped: str | None = None
        truncated = False
        if tool is not None:  # a tool call: a short text block, then the tool_use block
            name, schema = tool
            lead, tool_input = f"Calling {name}.", _default_input(schema)
            content: list[dict[str, Any]] = [
                {"type": "text", "text": lead},
                {"type": "tool_use", "id": f"toolu_standin_{next(self._ids):08d}", "name": name, "input": tool_input}]
            out_tokens = count_tokens(lead) + count_tokens(name) + count_tokens(json.dumps(tool_input))
        else:
            results = _tool_results_answer(messages) if tools else None
            if results is not None:
                text, out_tokens, truncated = _clipped(results, max_tokens)
            else:
                text, out_tokens, truncated = self._generate(model, tier, last_user_text(messages), max_tokens)
                text, out_tokens, truncated = self._structured(
                    (text, out_tokens, truncated), model, tier, last_user_text(messages), max_tokens,
                    _output_schema(body), asks_for_json(message_text(body.get("system"))))
            text, stopped = _stopped(text, dict(sampling).get("stop_sequences"))
            if stopped is not None:
                out_tokens, truncated = count_tokens(text), False
            content = [{"type": "text", "text": text}]
            cited = cited_answer(messages)
            if cited is not None:  # the sources asked for citations: quote each, cited
                content = cited
                out_tokens, truncated, stopped = sum(count_tokens(b["text"]) for b in cited), False, None
        thinking = _thinking(body)
        if thinking is not None:  # the model's thought comes first (empty when display is "omitted")
            thought = "" if thinking.get("display") == "omitted" else \
                f"The stand-in thinks about: {last_user_text(messages)[:60]}"
            content.insert(0, {"type": "thinking", "thinking": thought,
                               "signature": f"sig_standin_{next(self._ids):08d}"})
            out_tokens += count_tokens(thought)
        # the web search server tool: its searches (those of a paused turn sent back as the last assistant turn
        # done already), at most SEARCHES_A_TURN a response: a turn that needs more pauses (stop_reason pause_turn)
        done = _searched_before(messages)
        allowed, wanted = (0, 0) if tool is not None else _web_searches(body, last_user_text(messages), done)
        searches = min(allowed, SEARCHES_A_TURN)
        paused = allowed > SEARCHES_A_TURN
        if paused:  # only the searches so far, no answer yet
            content, out_tokens, truncated, stopped = [], 0, False, None
        elif done + searches and [b["type"] for b in content] == ["text"] and content[0]["text"]:
            # as the API answers after searching: a lead, then the answer in a text block whose citations are the
            # results it read (web_search_result_location), those of the paused turns before included; a structured
            # answer is its JSON alone
            cited = {**content[0], "citations": [_search_citation(n) for n in range(done + searches)]}
            if _output_schema(body) is None and not asks_for_json(message_text(body.get("system"))):
                content = [{"type": "text", "text": SEARCH_LEAD}, cited]
                out_tokens += count_tokens(SEARCH_LEAD)
            else:
                content = [cited]
        if searches:  # the server tool's calls and results come before the answer that read them
            blocks = [b for n in range(done, done + searches) for b in self._search_blocks(last_user_text(messages), n)]
            content = blocks + content
            out_tokens += sum(count_tokens(b["input"]["query"]) for b in blocks if b["type"] == "server_tool_use")
        read, created, one_hour = self._prompt_cache_usage(model, body.get("system"), messages)
        total_in = sum(count_tokens(t) for t, _ in _blocks(body.get("system"))) + sum(
            count_tokens(t) for m in messages for t, _ in _blocks(m.get("content")))
        usage = {
            "input_tokens": max(total_in - read - created, 0),
            "output_tokens": out_tokens,
            "cache_creation_input_tokens": created,
            "cache_read_input_tokens": read,
            # the API's breakdown of the writes by lifetime (one-hour writes cost 2 x the input, five-minute 1.25 x)
            "cache_creation": {"ephemeral_5m_input_tokens": created - one_hour, "ephemeral_1h_input_tokens": one_hour},
        }
        if searches:  # billed per search on top of the tokens
            usage["server_tool_use"] = {"web_search_requests": searches}
        if body.get("speed") == "fast":  # the API says which speed served it (fast mode: a premium per token)
            usage["speed"] = "fast"
        if body.get("inference_geo") in ("us", "global"):  # and where it ran (US-only: 1.1 x the token prices)
            usage["inference_geo"] = body["inference_geo"]
        self.log.add(LoggedRequest(api, model, 200, key, True, total_in, out_tokens, read, created, sampling, betas))
        return {
            "id": f"msg_standin_{next(self._ids):08d}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": "tool_use" if tool is not None else "pause_turn" if paused else "stop_sequence"
            if stopped is not None else "max_tokens" if truncated else "end_turn",
            "stop_sequence": stopped,
            "usage": usage,
        }

    # -- Anthropic Messages API ------------------------------------------------------------------
    def _messages(self, req: HttpRequest) -> HttpResponse:
        key = req.header("idempotency-key")
        status = self._take_error(ANTHROPIC)
        body = _json(req)
        model = body.get("model", "") if isinstance(body, Mapping) else ""
        if status is not None:
            self.log.add(LoggedRequest(ANTHROPIC, str(model), status, key, False))
            return self._error_response(req, status, _injected_message(status))
        try:
            tier = self.tier_of(str(model)) if model else None
            betas = tuple(b.strip() for b in (req.header("anthropic-beta") or "").split(",") if b.strip())
            message = self._message(body, key=key, betas=betas)
        except _ApiError as exc:
            self.log.add(LoggedRequest(ANTHROPIC, str(model), exc.status, key, False))
            return self._error_response(req, exc.status, exc.message)
        headers = {"request-id": f"req_standin_{uuid.uuid4().hex[:16]}"}
        if isinstance(body, Mapping) and body.get("stream"):
            break_after = self._take_error(ANTHROPIC, self._stream_errors)
            return HttpResponse(200, headers=headers, content_type="text/event-stream",
                                stream=self._anthropic_events(message, tier or "", break_after))
        if tier:
            self._latency(tier)
        return HttpResponse(200, message, headers=headers)

    def _count_tokens(self, req: HttpRequest) -> HttpResponse:
        """The token count of a Messages request, as ``/v1/messages/count_tokens`` answers (nothing generated)."""
        body = _json(req)
        if not isinstance(body, Mapping) or not isinstance(body.get("model"), str) or not body.get("model"):
            return self._error_response(req, 400, "model: field required")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self._error_response(req, 400, "messages: at least one message is required")
        tier = self.tier_of(body["model"])
        if tier is None or tier == contract.TIER_STUDENT:
            return self._error_response(req, 404, f"model: {body['model']}")
        try:
            total = sum(count_tokens(t) for t, _ in _blocks(body.get("system"))) + sum(
                count_tokens(t) for m in messages if isinstance(m, Mapping) for t, _ in _blocks(m.get("content")))
        except _ApiError as exc:
            return self._error_response(req, exc.status, exc.message)
        return HttpResponse(200, {"input_tokens": total})

    def _anthropic_events(self, message: dict[str, Any], tier: str, break_after: int | None,
                          encode: Callable[[str, dict[str, Any]], bytes] | None = None) -> Iterator[bytes]:
        """A message as the Messages API streams it; ``break_after`` deltas, then an error event. ``encode``
        (event name, its data) -> bytes: server-sent events by default (Bedrock wraps each in an event-stream chunk)."""
        sse = encode or _sse
        usage = message["usage"]
        start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
        blocks = message["content"]
        steps: list[tuple[int, dict[str, Any]]] = []  # (content block index, its next delta)
        for b, block in enumerate(blocks):
            if block["type"] == "text":  # its citations first (one citations_delta each), then the text
                steps.extend((b, {"type": "citations_delta", "citation": c}) for c in block.get("citations") or ())
                steps.extend((b, {"type": "text_delta", "text": p}) for p in _pieces(block["text"]))
            elif block["type"] == "thinking":  # the thought in pieces, then its signature
                steps.extend((b, {"type": "thinking_delta", "thinking": p}) for p in _pieces(block["thinking"]))
                steps.append((b, {"type": "signature_delta", "signature": block["signature"]}))
            elif block["type"] == "web_search_tool_result":  # whole in its content_block_start, no delta
                steps.append((b, None))
            else:
                steps.extend((b, {"type": "input_json_delta", "partial_json": p})
                             for p in _json_pieces(json.dumps(block["input"])))
        current = -1
        for i, _ in self._paced(tier, [str(delta) for _, delta in steps]):
            b, delta = steps[i]
            if i == 0:
                yield sse("message_start", {"type": "message_start", "message": start})
            if b != current:
                if current >= 0:
                    yield sse("content_block_stop", {"type": "content_block_stop", "index": current})
                block = blocks[b]
                opened = {"type": "text", "text": ""} if block["type"] == "text" else {
                    "type": "thinking", "thinking": "", "signature": ""} if block["type"] == "thinking" else \
                    block if block["type"] == "web_search_tool_result" else {
                    "type": block["type"], "id": block["id"], "name": block["name"], "input": {}}
                yield sse("content_block_start", {"type": "content_block_start", "index": b,
                                                   "content_block": opened})
                current = b
            if break_after is not None and i >= break_after:
                yield sse("error", {"type": "error", "error": {"type": "overloaded_error",
                                                                 "message": "Overloaded (stand-in, mid-stream)"}})
                return
            if delta is not None:
                yield sse("content_block_delta", {"type": "content_block_delta", "index": b, "delta": delta})
        yield sse("content_block_stop", {"type": "content_block_stop", "index": current})
        # the API's message_delta carries the cumulative usage, input and cache counts included
        # (anthropic's MessageDeltaUsage; LangChain reads a stream's usage from this event alone)
        yield sse("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": message["stop_reason"],
                                               "stop_sequence": message.get("stop_sequence")},
                                     "usage": dict(usage)})
        yield sse("message_stop", {"type": "message_stop"})

    # -- Message Batches API ------------------------------------------------------------------------
    def _batch_create(self, req: HttpRequest) -> HttpResponse:
        status = self._take_error(ANTHROPIC)
        if status is not None:
            return self._error_response(req, status, _injected_message(status))
        body = _json(req)
        requests = body.get("requests") if isinstance(body, Mapping) else None
        if not isinstance(requests, list) or not requests:
            return self._error_response(req, 400, "requests: at least one request is required")
        ids = [r.get("custom_id") if isinstance(r, Mapping) else None for r in requests]
        if any(not isinstance(i, str) or not i for i in ids):
            return self._error_response(req, 400, "requests: every request needs a custom_id")
        dupes = [i for i, n in Counter(ids).items() if n > 1]
        if dupes:
            return self._error_response(req, 400, f"requests: custom_id {dupes[0]!r} is used more than once")
        results = []
        for r in requests:
            try:
                message = self._message(r.get("params"), key=r["custom_id"], api="anthropic-batch")
                result: dict[str, Any] = {"type": "succeeded", "message": message}
            except _ApiError as exc:
                err_type = ANTHROPIC_ERROR_TYPES.get(exc.status,
                                                     "invalid_request_error" if exc.status < 500 else "api_error")
                result = {"type": "errored", "error": {"type": "error", "error": {"type": err_type,
                                                                                  "message": exc.message}}}
            results.append({"custom_id": r["custom_id"], "result": result})
        batch = _Batch(f"msgbatch_standin_{uuid.uuid4().hex[:20]}", self._wall_dt(),
                       self._now() + self.config.batch_delay_s, results)
        with self._lock:
            self._batches[batch.id] = batch
        return HttpResponse(200, self._batch_json(batch, req))

    def _batch_list(self, req: HttpRequest) -> HttpResponse:
        with self._lock:
            batches = list(self._batches.values())
        data = [self._batch_json(b, req) for b in reversed(batches)]
        return HttpResponse(200, {"data": data, "has_more": False,
                                  "first_id": data[0]["id"] if data else None,
                                  "last_id": data[-1]["id"] if data else None})

    def _find_batch(self, req: HttpRequest) -> _Batch | None:
        with self._lock:
            return self._batches.get(req.params["id"])

    def _batch_get(self, req: HttpRequest) -> HttpResponse:
        batch = self._find_batch(req)
        if batch is None:
            return self._error_response(req, 404, f"message batch {req.params['id']!r} not found")
        return HttpResponse(200, self._batch_json(batch, req))

    def _batch_cancel(self, req: HttpRequest) -> HttpResponse:
        batch = self._find_batch(req)
        if batch is None:
            return self._error_response(req, 404, f"message batch {req.params['id']!r} not found")
        if not self._ended(batch):
            batch.canceled = True
            batch.ends_at = self._now()
            for r in batch.results:
                r["result"] = {"type": "canceled"}
        return HttpResponse(200, self._batch_json(batch, req))

    def _batch_results(self, req: HttpRequest) -> HttpResponse:
        batch = self._find_batch(req)
        if batch is None:
            return self._error_response(req, 404, f"message batch {req.params['id']!r} not found")
        if not self._ended(batch):
            return self._error_response(req, 400, "the batch is still in progress: poll it until it has ended")
        lines = "".join(json.dumps(r) + "\n" for r in batch.results)
        return HttpResponse(200, raw=lines.encode(), content_type="application/x-jsonl")

    def _ended(self, batch: _Batch) -> bool:
        return batch.canceled or self._now() >= batch.ends_at

    def _wall_dt(self) -> datetime:
        return datetime.fromtimestamp(self._wall(), tz=UTC)

    def _batch_json(self, batch: _Batch, req: HttpRequest) -> dict[str, Any]:
        ended = self._ended(batch)
        kinds = Counter(r["result"]["type"] for r in batch.results)
        counts = {"processing": 0 if ended else len(batch.results),
                  "succeeded": kinds["succeeded"] if ended else 0,
                  "errored": kinds["errored"] if ended else 0,
                  "canceled": kinds["canceled"] if ended else 0,
                  "expired": 0}
        host = req.header("host") or f"127.0.0.1:{self.port}"
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": "ended" if ended else "in_progress",
            "request_counts": counts,
            "created_at": _iso(batch.created_at),
            "expires_at": _iso(batch.created_at + timedelta(hours=24)),
            "ended_at": _iso(self._wall_dt()) if ended else None,
            "cancel_initiated_at": _iso(self._wall_dt()) if batch.canceled else None,
            "archived_at": None,
            "results_url": f"http://{host}/v1/messages/batches/{batch.id}/results" if ended else None,
        }

    # -- OpenAI chat completions (vLLM) and embeddings ------------------------------------------------
    def _openai_request(self, req: HttpRequest) -> tuple[str | None, Any, str, HttpResponse | None]:
        """(idempotency key, body, model, the injected error's answer or None) of an OpenAI API request."""
        key = req.header("idempotency-key")
        body = _json(req)
        model = str(body.get("model", "")) if isinstance(body, Mapping) else ""
        status = self._take_error(OPENAI)
        if status is None:
            return key, body, model, None
        self.log.add(LoggedRequest(OPENAI, model, status, key, False))
        return key, body, model, self._openai_error(status, _injected_message(status))

    def _chat(self, req: HttpRequest) -> HttpResponse:
        key, body, model, refused = self._openai_request(req)
        if refused is not None:
            return refused
        messages = body.get("messages") if isinstance(body, Mapping) else None
        if not isinstance(messages, list) or not messages:
            return self._openai_error(400, "messages: at least one message is required")
        if self.tier_of(model) != contract.TIER_STUDENT:
            self.log.add(LoggedRequest(OPENAI, model, 404, key, False))
            return self._openai_error(404, f"The model `{model}` does not exist.")
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or 1024
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            return self._openai_error(400, "max_tokens must be a whole number >= 1")
        if any(isinstance(m, Mapping) and isinstance(m.get("content"), list) and any(
                isinstance(p, Mapping) and p.get("type") == "image_url" for p in m["content"]) for m in messages):
            # as vLLM answers image parts sent to a text-only model (the student is one)
            self.log.add(LoggedRequest(OPENAI, model, 400, key, False))
            return self._openai_error(400, f"{model} is not a multimodal model: image_url parts are not supported")
        try:
            sampling = _sampling(body, ("temperature", "top_p", "top_k", "stop", "parallel_tool_calls", "response_format",
                                        "frequency_penalty", "presence_penalty", "seed", "logit_bias"), 2.0)
            tools, choice, named = _chat_tools(body)
        except _ApiError as exc:
            return self._openai_error(exc.status, exc.message)
        turns = [m for m in messages if isinstance(m, Mapping)]
        tool = _chosen_tool(tools, choice, named, _open_question(turns, lambda m: m.get("role") == "tool"))
        call: dict[str, Any] | None = None
        if tool is not None:  # a function call: no text, the call's arguments as a JSON string
            name, schema = tool
            arguments = json.dumps(_default_input(schema))
            call = {"id": f"call_standin_{next(self._ids):08d}", "type": "function",
                    "function": {"name": name, "arguments": arguments}}
            text, out_tokens, finish = "", count_tokens(name) + count_tokens(arguments), "tool_calls"
        else:
            results = _chat_results_answer(turns) if tools else None
            if results is not None:
                text, out_tokens, truncated = _clipped(results, limit)
            else:
                text, out_tokens, truncated = self._generate(model, contract.TIER_STUDENT, last_user_text(messages),
                                                             limit)
                fmt = body.get("response_format") if isinstance(body.get("response_format"), Mapping) else {}
                spec = fmt.get("json_schema") if isinstance(fmt.get("json_schema"), Mapping) else {}
                if fmt.get("type") in ("json_schema", "json_object"):  # guided decoding: always the format
                    text, out_tokens, truncated = self._structured(
                        (text, out_tokens, truncated), model, contract.TIER_STUDENT, last_user_text(messages), limit,
                        spec.get("schema", {}) if fmt.get("type") == "json_schema" else None, False, guided=True)
            text, stopped = _stopped(text, dict(sampling).get("stop"))
            if stopped is not None:
                out_tokens, truncated = count_tokens(text), False
            finish = "length" if truncated else "stop"
        prompt = sum(count_tokens(_chat_message_text(m)) for m in turns)
        self.log.add(LoggedRequest(OPENAI, model, 200, key, True, prompt, out_tokens, sampling=sampling))
        usage = {"prompt_tokens": prompt, "completion_tokens": out_tokens, "total_tokens": prompt + out_tokens}
        cid = f"chatcmpl-standin-{next(self._ids):08d}"
        # the tier that served it, as OpenAI says it when asked for one ("flex": billed at Batch API prices)
        asked = body.get("service_tier")
        tier = _OPENAI_SERVICE_TIERS.get(asked) if isinstance(asked, str) else None
        if body.get("stream"):
            options = body.get("stream_options")
            with_usage = isinstance(options, Mapping) and bool(options.get("include_usage"))
            break_after = self._take_error(OPENAI, self._stream_errors)
            return HttpResponse(200, content_type="text/event-stream",
                                stream=self._openai_chunks(cid, model, text, finish, usage if with_usage else None,
                                                           break_after, call, tier))
        self._latency(contract.TIER_STUDENT)
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if call is not None:
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
        return HttpResponse(200, {
            "id": cid,
            "object": "chat.completion",
            "created": int(self._wall()),
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": usage,
            **({"service_tier": tier} if tier else {}),
        })

    def _openai_chunks(self, cid: str, model: str, text: str, finish: str, usage: dict[str, int] | None,
                       break_after: int | None, call: dict[str, Any] | None = None,
                       tier: str | None = None) -> Iterator[bytes]:
        """A chat completion as vLLM streams it; ``usage`` (include_usage) in a last, choice-less chunk. A function
        ``call``: its id and name in the first chunk's ``delta.tool_calls``, then its ``arguments`` in pieces."""
        head = {"id": cid, "object": "chat.completion.chunk", "created": int(self._wall()), "model": model,
                **({"service_tier": tier} if tier else {})}
        extra = {"usage": None} if usage is not None else {}

        def chunk(delta: dict[str, Any], reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
            return _sse(None, {**head, "choices": [choice], **extra})

        pieces = _pieces(text) if call is None else _json_pieces(call["function"]["arguments"])
        for i, piece in self._paced(contract.TIER_STUDENT, pieces):
            if i == 0:
                yield chunk({"role": "assistant", "content": ""} if call is None else {
                    "role": "assistant", "content": None,
                    "tool_calls": [{"index": 0, "id": call["id"], "type": "function",
                                    "function": {"name": call["function"]["name"], "arguments": ""}}]})
            if break_after is not None and i >= break_after:
                yield _sse(None, {"error": {"message": "stand-in failure mid-stream", "type": "InternalServerError",
                                            "param": None, "code": 500}})
                return
            yield chunk({"content": piece} if call is None else
                        {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
        yield chunk({}, finish)
        if usage is not None:
            yield _sse(None, {**head, "choices": [], "usage": usage})
        yield b"data: [DONE]\n\n"

    # -- OpenAI Responses API ----------------------------------------------------------------------
    def _responses(self, req: HttpRequest) -> HttpResponse:
        """OpenAI's ``POST /v1/responses``: text answers, function calls, automatic prompt caching."""
        key, body, model, refused = self._openai_request(req)
        if refused is not None:
            return refused
        if not isinstance(body, Mapping) or not model:
            return self._openai_error(400, "model: field required")
        items = _response_input(body.get("input"))
        if items is None:
            return self._openai_error(400, "input: a string or a list of input items is required")
        instructions = body.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            return self._openai_error(400, "instructions: a string is required")
        tier = self.tier_of(model)
        entry = self._pricing.lookup(model)
        if tier is None or (tier != contract.TIER_STUDENT and (entry is None or entry.provider != OPENAI)):
            self.log.add(LoggedRequest(OPENAI, model, 404, key, False))
            return self._openai_error(404, f"The model `{model}` does not exist or you do not have access to it.")
        limit = body.get("max_output_tokens") or 1024
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            return self._openai_error(400, "max_output_tokens must be a whole number >= 1")
        texts = ([instructions] if instructions else []) + [_item_text(i) for i in items]
        prompt = sum(count_tokens(t) for t in texts)
        # OpenAI caches prompts by itself: every prefix ending at an input item's end is a breakpoint
        read = self._automatic_cache_usage(model, texts)
        rid = f"resp_standin_{next(self._ids):08d}"
        call = _function_call(body.get("tools"), items)
        if call is not None:
            name, arguments = call
            out_tokens = count_tokens(name) + count_tokens(arguments)
            output = [{"type": "function_call", "id": f"fc_{rid[5:]}", "call_id": f"call_{rid[5:]}",
                       "name": name, "arguments": arguments, "status": "completed"}]
            truncated = False
        else:
            text, out_tokens, truncated = self._generate(model, tier, _last_user_item_text(items), limit)
            output = [{"type": "message", "id": f"msg_{rid[5:]}", "role": "assistant",
                       "status": "incomplete" if truncated else "completed",
                       "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}]
        self.log.add(LoggedRequest(OPENAI, model, 200, key, True, prompt, out_tokens, read, 0))
        usage = {"input_tokens": prompt,
                 "input_tokens_details": {"cached_tokens": read, "cache_write_tokens": 0},
                 "output_tokens": out_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                 "total_tokens": prompt + out_tokens}
        response = {
            "id": rid, "object": "response", "created_at": int(self._wall()), "model": model,
            "status": "incomplete" if truncated else "completed",
            "completed_at": int(self._wall()),
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if truncated else None,
            "instructions": instructions, "max_output_tokens": body.get("max_output_tokens"),
            "metadata": body.get("metadata") or {}, "output": output,
            "parallel_tool_calls": bool(body.get("parallel_tool_calls", True)),
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None}, "store": bool(body.get("store", True)),
            "temperature": body.get("temperature", 1.0), "top_p": body.get("top_p", 1.0),
            "text": {"format": {"type": "text"}}, "tool_choice": body.get("tool_choice", "auto"),
            "tools": list(body.get("tools") or []), "truncation": body.get("truncation", "disabled"),
            "usage": usage, "user": body.get("user"),
        }
        if body.get("stream"):
            break_after = self._take_error(OPENAI, self._stream_errors)
            return HttpResponse(200, content_type="text/event-stream",
                                stream=self._response_events(response, tier, break_after))
        self._latency(tier)
        return HttpResponse(200, response)

    def _automatic_cache_usage(self, model: str, texts: list[str], api: bytes = b"openai-auto") -> int:
        """Cached input tokens of a request under automatic (implicit) prompt caching, OpenAI's or Gemini's
        (``api``: their caches are apart): the longest cached prefix ending at an input item's end; every such
        prefix of ``min_cache_tokens`` or more is cached."""
        h = hashlib.blake2b(api + b"\x1e" + normalize_model_id(model).encode(), digest_size=16)
        total = 0
        prefixes: list[tuple[str, int]] = []
        for text in texts:
            h.update(text.encode() + b"\x1e")
            total += count_tokens(text)
            if total >= self.config.min_cache_tokens:
                prefixes.append((h.hexdigest(), total))
        now = self._now()
        expires = now + self.config.cache_ttl_s
        with self._lock:
            read = max((n for k, n in prefixes if self._prompt_cache.get(k, -1.0) > now), default=0)
            for k, _ in prefixes:
                self._prompt_cache[k] = expires
        return read

    def _response_events(self, response: dict[str, Any], tier: str, break_after: int | None) -> Iterator[bytes]:
        """A response as the Responses API streams it: ``response.created`` … ``response.completed``
        (the full response with its usage; ``response.incomplete`` when cut at max_output_tokens)."""
        seq = itertools.count()
        pending = {**response, "status": "in_progress", "output": [], "usage": None, "completed_at": None,
                   "incomplete_details": None}

        def event(kind: str, **data: Any) -> bytes:
            return _sse(kind, {"type": kind, "sequence_number": next(seq), **data})

        item = response["output"][0]
        if item["type"] == "function_call":
            pieces = _pieces(item["arguments"])
            added = {**item, "arguments": "", "status": "in_progress"}
        else:
            pieces = _pieces(item["content"][0]["text"])
            added = {**item, "content": [], "status": "in_progress"}
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        for i, piece in self._paced(tier, pieces):
            if i == 0:
                yield event("response.created", response=pending)
                yield event("response.in_progress", response=pending)
                yield event("response.output_item.added", output_index=0, item=added)
                if item["type"] == "message":
                    yield event("response.content_part.added", item_id=item["id"], output_index=0,
                                content_index=0, part=part)
            if break_after is not None and i >= break_after:
                yield event("error", code="server_error", message="stand-in failure mid-stream", param=None)
                return
            if item["type"] == "message":
                yield event("response.output_text.delta", item_id=item["id"], output_index=0, content_index=0,
                            delta=piece, logprobs=[])
            else:
                yield event("response.function_call_arguments.delta", item_id=item["id"], output_index=0,
                            delta=piece)
        if item["type"] == "message":
            text = item["content"][0]["text"]
            yield event("response.output_text.done", item_id=item["id"], output_index=0, content_index=0,
                        text=text, logprobs=[])
            yield event("response.content_part.done", item_id=item["id"], output_index=0, content_index=0,
                        part={**part, "text": text})
        else:
            yield event("response.function_call_arguments.done", item_id=item["id"], output_index=0,
                        name=item["name"], arguments=item["arguments"])
        yield event("response.output_item.done", output_index=0, item=item)
        final = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        yield event(final, response=response)

    def _models(self, req: HttpRequest) -> HttpResponse:
        names = [m.model for m in self._pricing.config.models] + list(self.config.student_models)
        if req.header("anthropic-version"):
            data = [{"type": "model", "id": n, "display_name": n, "created_at": "2026-06-01T00:00:00Z"}
                    for n in names if self.tier_of(n) != contract.TIER_STUDENT]
            return HttpResponse(200, {"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
                                      "last_id": data[-1]["id"] if data else None})
        data = [{"id": n, "object": "model", "created": 0,
                 "owned_by": "vllm" if self.tier_of(n) == contract.TIER_STUDENT else "anthropic"} for n in names]
        return HttpResponse(200, {"object": "list", "data": data})

    def _embeddings(self, req: HttpRequest) -> HttpResponse:
        """OpenAI's ``/v1/embeddings``: one deterministic 8-dimensional unit vector per input text."""
        key, body, model, refused = self._openai_request(req)
        if refused is not None:
            return refused
        texts = body.get("input") if isinstance(body, Mapping) else None
        texts = [texts] if isinstance(texts, str) else texts
        if not model or not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return self._openai_error(400, "model and input (a string or a list of strings) are required")
        tokens = sum(count_tokens(t) for t in texts)
        self.log.add(LoggedRequest(OPENAI, model, 200, key, True, tokens, 0))
        base64_format = body.get("encoding_format") == "base64"
        data = []
        for i, text in enumerate(texts):
            raw = [b - 127.5 for b in hashlib.sha256(text.encode()).digest()[:8]]
            norm = sum(x * x for x in raw) ** 0.5 or 1.0
            vec = array("f", (x / norm for x in raw))
            data.append({"object": "embedding", "index": i,
                         "embedding": base64.b64encode(vec.tobytes()).decode() if base64_format else vec.tolist()})
        return HttpResponse(200, {"object": "list", "data": data, "model": model,
                                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    # -- errors --------------------------------------------------------------------------------
    def _error_response(self, req: HttpRequest, status: int, message: str) -> HttpResponse:
        if is_gemini_path(req.path):
            return gemini_error(self, status, message)
        if is_bedrock_path(req.path):
            return bedrock_error(self, status, message)
        if req.path.startswith(("/v1/chat/", "/v1/embeddings", "/v1/responses", "/openai/")):
            return self._openai_error(status, message)
        err_type = ANTHROPIC_ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
        return HttpResponse(status, {"type": "error", "error": {"type": err_type, "message": message}},
                            headers=self._retry_headers(status))

    def _openai_error(self, status: int, message: str) -> HttpResponse:
        err_type = _OPENAI_ERROR_TYPES.get(status, "InternalServerError")
        return HttpResponse(status, {"error": {"message": message, "type": err_type, "param": None, "code": status}},
                            headers=self._retry_headers(status))

    def _retry_headers(self, status: int) -> dict[str, str]:
        if status not in (429, 529, 500, 503):
            return {}
        ms = max(int(self.config.retry_after_ms), 0)
        return {"retry-after": str(max(1, -(-ms // 1000))), "retry-after-ms": str(ms)}


def _pieces(text: str) -> list[str]:
    """``text`` in text deltas of a few words each (they concatenate back to ``text``)."""
    words = _WORD_START.split(text)
    n = STREAM_WORDS_PER_DELTA
    return ["".join(words[i:i + n]) for i in range(0, len(words), n)] or [""]


def _response_input(value: Any) -> list[dict[str, Any]] | None:
    """A Responses request's ``input`` as a list of items (a string is one user message); None if invalid."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if not isinstance(value, list) or not value or not all(isinstance(i, Mapping) for i in value):
        return None
    return [dict(i) for i in value]


def _item_text(item: Mapping[str, Any]) -> str:
    """The text an input item puts before the model: a message's text, a call's name and arguments, a
    call's output."""
    kind = item.get("type", "message")
    if kind == "message" or "role" in item and kind not in ("function_call", "function_call_output"):
        content = item.get("content")
        if isinstance(content, str):
            return content
        return "\n".join(str(p.get("text", "")) for p in content or []
                         if isinstance(p, Mapping) and p.get("type") in ("input_text", "output_text", "text"))
    if kind == "function_call":
        return f"{item.get('name', '')} {item.get('arguments', '')}"
    if kind == "function_call_output":
        out = item.get("output")
        return out if isinstance(out, str) else json.dumps(out, sort_keys=True)
    return json.dumps(item, sort_keys=True)


def _last_user_item_text(items: list[dict[str, Any]]) -> str:
    for item in reversed(items):
        if item.get("role") == "user":
            return _item_text(item)
    return ""


def _function_call(tools: Any, items: list[dict[str, Any]]) -> tuple[str, str] | None:
    """(name, JSON arguments) of the function the stand-in calls: the first function tool whose name the
    last user message mentions, unless a function's output came back since that message."""
    if not isinstance(tools, list):
        return None
    last_user = max((i for i, item in enumerate(items) if item.get("role") == "user"), default=None)
    if last_user is None or any(item.get("type") == "function_call_output" for item in items[last_user:]):
        return None
    query = _item_text(items[last_user])
    for tool in tools:
        if isinstance(tool, Mapping) and tool.get("type") == "function" and tool.get("name") \
                and str(tool["name"]) in query:
            return str(tool["name"]), json.dumps(_default_input(tool.get("parameters")))
    return None


def _thinking(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The request's ``thinking`` when it asks the model to think (``enabled`` / ``adaptive``), checked as the
    API checks it (:func:`~costline.serving.gateway.messages_api.thinking_of`; raises _ApiError); None when absent
    or ``disabled``."""
    checked = thinking_of(body)
    if isinstance(checked, str):
        raise _ApiError(400, checked)
    return checked


#: The argument a stand-in tool call passes for a parameter, by the parameter's JSON Schema type (else null).
_DEFAULT_ARGUMENTS: dict[str, Any] = {"string": "stand-in", "integer": 1, "number": 1, "boolean": True}
#: Characters per ``input_json_delta`` / ``arguments`` delta of a streamed tool call.
STREAM_JSON_CHARS = 12


def _default_input(schema: Any) -> dict[str, Any]:
    """A tool call's input for the JSON Schema ``schema``: each of its properties, in order, with the default
    argument of its type (:data:`_DEFAULT_ARGUMENTS`)."""
    props = schema.get("properties") if isinstance(schema, Mapping) else None
    out: dict[str, Any] = {}
    for name, spec in (props if isinstance(props, Mapping) else {}).items():
        kind = spec.get("type") if isinstance(spec, Mapping) else None
        out[str(name)] = _DEFAULT_ARGUMENTS.get(kind) if isinstance(kind, str) else None
    return out


def _output_schema(body: Mapping[str, Any]) -> Any:
    """The JSON Schema a Messages request holds the answer to (``output_config.format``, or the beta's top-level
    ``output_format``), or None."""
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, Mapping) else None
    fmt = fmt if isinstance(fmt, Mapping) else body.get("output_format")
    return fmt.get("schema") if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema" else None


def _clipped_json(doc: str, max_tokens: int) -> tuple[str, int, bool]:
    """(text, output tokens, truncated) of a JSON answer: cut (and so no longer JSON) past ``max_tokens``."""
    pieces = tokenize(doc)
    if len(pieces) <= max_tokens:
        return doc, len(pieces), False
    return "".join(pieces[:max_tokens]), max_tokens, True


def _json_pieces(text: str) -> list[str]:
    """A tool call's JSON in the pieces a stream sends it (they concatenate back to ``text``)."""
    n = STREAM_JSON_CHARS
    return [text[i:i + n] for i in range(0, len(text), n)] or [""]


def _clipped(text: str, max_tokens: int) -> tuple[str, int, bool]:
    """(text, output tokens, truncated): ``text`` cut at ``max_tokens`` tokens."""
    pieces = tokenize(text)
    if len(pieces) > max_tokens:
        return " ".join(pieces[:max_tokens]), max_tokens, True
    return text, len(pieces), False


#: A request's tools as (name, input JSON Schema), the tool_choice type ("auto" | "any" | "none" | "tool") and the
#: tool it names.
_Tools = tuple[list[tuple[str, Any]], str, str | None]


def _message_tools(body: Mapping[str, Any]) -> _Tools:
    """A Messages request's ``tools`` and ``tool_choice``, checked as the API checks them (raises _ApiError)."""
    tools = body.get("tools")
    if tools is None:  # tool_choice alone asks for nothing
        return [], "auto", None
    if not isinstance(tools, list):
        raise _ApiError(400, "tools: Input should be a valid list")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping) or not isinstance(tool.get("name"), str) or not tool["name"]:
            raise _ApiError(400, f"tools.{i}.name: Field required (a string)")
        if _is_web_search(tool):  # a server tool: the API runs it (_web_searches), no schema
            if tool["name"] != "web_search":
                raise _ApiError(400, f"tools.{i}.name: the web search tool is named 'web_search'")
            _check_web_search(tool, i)
            continue
        if not isinstance(tool.get("input_schema"), Mapping):
            raise _ApiError(400, f"tools.{i}.input_schema: Field required (an object)")
        out.append((tool["name"], tool["input_schema"]))
    choice = body.get("tool_choice")
    if choice is None:
        return out, "auto", None
    kind = choice.get("type") if isinstance(choice, Mapping) else None
    if kind not in ("auto", "any", "none", "tool"):
        raise _ApiError(400, "tool_choice.type: one of 'auto', 'any', 'tool', 'none'")
    named = choice.get("name") if kind == "tool" else None
    if kind == "tool" and any(isinstance(t, Mapping) and _is_web_search(t) and t.get("name") == named for t in tools):
        return out, "auto", None  # a server tool forced: it runs (_web_searches), no client tool is called
    if kind == "tool" and not any(name == named for name, _ in out):
        raise _ApiError(400, f"tool_choice.name: no tool named {str(named)[:64]!r} in tools")
    return out, str(kind), named


#: The uncited text block before a searched answer's cited one.
SEARCH_LEAD = "From the search results: "
#: Searches the stand-in's web search tool makes in one response: a turn that needs more is paused (``pause_turn``).
SEARCHES_A_TURN = 3


def _searched_before(messages: list[Any]) -> int:
    """Web searches of a paused turn sent back to go on (a last assistant turn's ``server_tool_use`` blocks)."""
    last = messages[-1] if messages else None
    if not isinstance(last, Mapping) or last.get("role") != "assistant" or not isinstance(last.get("content"), list):
        return 0
    return sum(1 for b in last["content"] if isinstance(b, Mapping) and b.get("type") == "server_tool_use"
               and b.get("name") == "web_search")


def _search_url(n: int) -> str:
    return f"https://standin.invalid/search/{n + 1}"


def _search_citation(n: int) -> dict[str, Any]:
    """The citation of search ``n``'s result on the text that read it (the API's ``web_search_result_location``)."""
    return {"type": "web_search_result_location", "url": _search_url(n), "title": f"Stand-in result {n + 1}",
            "encrypted_index": "c3RhbmQtaW4=", "cited_text": f"What stand-in result {n + 1} says."}


_WEB_SEARCH_FIELDS = frozenset({"type", "name", "max_uses", "user_location", "allowed_domains", "blocked_domains",
                                "cache_control", "allowed_callers", "defer_loading", "strict", "response_inclusion"})


def _repeated_tool_use(messages: list[Mapping[str, Any]]) -> str | None:
    """The API's error for a conversation that holds one tool_use id twice, or None."""
    seen: set[Any] = set()
    for i, m in enumerate(messages):
        for j, block in enumerate(m.get("content") if isinstance(m.get("content"), list) else ()):
            if isinstance(block, Mapping) and block.get("type") == "tool_use" and isinstance(block.get("id"), str):
                if block["id"] in seen:
                    return f"messages.{i}.content.{j}: `tool_use` ids must be unique"
                seen.add(block["id"])
    return None


def _check_web_search(tool: Mapping[str, Any], i: int) -> None:
    """The web search tool's fields, checked as the API checks them (raises _ApiError)."""
    extra = sorted(set(tool) - _WEB_SEARCH_FIELDS)
    if extra:
        raise _ApiError(400, f"tools.{i}.{extra[0]}: Extra inputs are not permitted")
    if tool.get("allowed_domains") and tool.get("blocked_domains"):
        raise _ApiError(400, f"tools.{i}: allowed_domains and blocked_domains cannot both be set")
    uses = tool.get("max_uses")
    if uses is not None and (not isinstance(uses, int) or isinstance(uses, bool) or uses < 1):
        raise _ApiError(400, f"tools.{i}.max_uses: Input should be greater than 0")
    place = tool.get("user_location")
    if place is None:
        return
    if not isinstance(place, Mapping) or place.get("type") != "approximate":
        raise _ApiError(400, f"tools.{i}.user_location.type: Input should be 'approximate'")
    for key, value in place.items():
        if key == "type":
            continue
        if key not in ("city", "region", "country", "timezone"):
            raise _ApiError(400, f"tools.{i}.user_location.{key}: Extra inputs are not permitted")
        if value is not None and (not isinstance(value, str) or not 1 <= len(value) <= 255
                                  or (key == "country" and len(value) != 2)):
            raise _ApiError(400, f"tools.{i}.user_location.{key}: a string (country: two letters)")


def _is_web_search(tool: Mapping[str, Any]) -> bool:
    return str(tool.get("type") or "").startswith("web_search_")


def _web_searches(body: Mapping[str, Any], question: str, done: int = 0) -> tuple[int, int]:
    """(searches this request's web search server tool may make, searches the question wants in all): it wants
    one, plus one per " and " in it; those of the paused turn sent back (``done``) are made already; the tool's
    ``max_uses`` caps this request's; ``tool_choice`` none makes none. (0, 0) without the tool."""
    tool = next((t for t in body.get("tools") or () if isinstance(t, Mapping) and _is_web_search(t)), None)
    if tool is None:
        return 0, 0
    wanted = 1 + question.count(" and ")
    choice = body.get("tool_choice")
    if isinstance(choice, Mapping) and choice.get("type") == "none":
        return 0, wanted
    limit = tool.get("max_uses")
    more = max(wanted - done, 0)
    return (min(more, limit) if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 1 else more), wanted


def _chat_tools(body: Mapping[str, Any]) -> _Tools:
    """A chat completion request's function ``tools`` and ``tool_choice`` (``required`` is the Messages API's
    ``any``, a named function its ``tool``), checked as the API checks them (raises _ApiError)."""
    tools = body.get("tools")
    if tools is None:
        return [], "auto", None
    if not isinstance(tools, list):
        raise _ApiError(400, "tools: Input should be a valid list")
    out = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(fn, Mapping) or tool.get("type") != "function":
            raise _ApiError(400, f"tools[{i}]: a function tool: {{'type': 'function', 'function': {{'name': ...}}}}")
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            raise _ApiError(400, f"tools[{i}].function.name: Field required (a string)")
        if fn.get("parameters") is not None and not isinstance(fn["parameters"], Mapping):
            raise _ApiError(400, f"tools[{i}].function.parameters: an object (a JSON Schema)")
        out.append((fn["name"], fn.get("parameters")))
    choice = body.get("tool_choice")
    if choice is None or choice in ("auto", "none", "required"):
        return out, {"required": "any"}.get(str(choice), str(choice or "auto")), None
    fn = choice.get("function") if isinstance(choice, Mapping) and choice.get("type") == "function" else None
    named = fn.get("name") if isinstance(fn, Mapping) else None
    if not isinstance(named, str):
        raise _ApiError(400, "tool_choice: 'auto', 'none', 'required' or {'type': 'function', 'function': "
                             "{'name': ...}}")
    if not any(name == named for name, _ in out):
        raise _ApiError(400, f"tool_choice.function.name: no function named {named[:64]!r} in tools")
    return out, "tool", named


def _holds_tool_results(message: Mapping[str, Any]) -> bool:
    content = message.get("content")
    return isinstance(content, list) and any(isinstance(b, Mapping) and b.get("type") == "tool_result"
                                             for b in content)


def _open_question(messages: list[Any], is_result: Callable[[Mapping[str, Any]], bool]) -> str | None:
    """The text of the last user message with text, unless a tool's result (``is_result``) came back since
    (in that message or after it): then None — the question is being answered."""
    asked = max((i for i, m in enumerate(messages) if isinstance(m, Mapping) and m.get("role") == "user"
                 and message_text(m.get("content")).strip()), default=None)
    if asked is None or any(isinstance(m, Mapping) and is_result(m) for m in messages[asked:]):
        return None
    return message_text(messages[asked].get("content"))


def _chosen_tool(tools: list[tuple[str, Any]], choice: str, named: str | None,
                 question: str | None) -> tuple[str, Any] | None:
    """(name, schema) of the tool the stand-in calls, or None: with tools offered, ``tool_choice`` not ``none``
    and an open ``question``, the tool ``tool_choice`` names, else the first tool the question names, else
    (``tool_choice`` ``any``) the first tool."""
    if not tools or choice == "none" or question is None:
        return None
    if choice == "tool":
        return next(tool for tool in tools if tool[0] == named)
    for tool in tools:
        if tool[0] in question:
            return tool
    return tools[0] if choice == "any" else None


def _tool_results_answer(messages: list[Any]) -> str | None:
    """The answer to a last user message holding ``tool_result`` blocks: ``"<tool name> returned: <result>"``
    a line per result (the name from the earlier ``tool_use`` block with that id); None without results."""
    users = [m for m in messages if m.get("role") == "user"]
    if not users or not _holds_tool_results(users[-1]):
        return None
    names = {b.get("id"): b.get("name") for m in messages if m.get("role") == "assistant"
             and isinstance(m.get("content"), list)
             for b in m["content"] if isinstance(b, Mapping) and b.get("type") == "tool_use"}
    return "\n".join(f"{_name_of(names, b.get('tool_use_id'))} returned: {message_text(b.get('content'))}"
                     for b in users[-1]["content"] if isinstance(b, Mapping) and b.get("type") == "tool_result")


def _name_of(names: Mapping[Any, Any], call_id: Any) -> str:
    """The name of the tool called with ``call_id`` ("the tool" when no call had that id)."""
    name = names.get(call_id) if isinstance(call_id, str) else None
    return name if isinstance(name, str) and name else "the tool"


def _chat_results_answer(messages: list[Mapping[str, Any]]) -> str | None:
    """The answer to ``role: "tool"`` messages after the last user message: ``"<function name> returned:
    <content>"`` a line per result (the name from the assistant ``tool_calls`` entry with that id); None without."""
    last = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    results = [m for m in messages[last + 1:] if m.get("role") == "tool"]
    if not results:
        return None
    names: dict[Any, Any] = {}
    for m in messages:
        calls = m.get("tool_calls") if m.get("role") == "assistant" else None
        for call in calls if isinstance(calls, list) else []:
            fn = call.get("function") if isinstance(call, Mapping) else None
            if isinstance(fn, Mapping):
                names[call.get("id")] = fn.get("name")
    return "\n".join(f"{_name_of(names, m.get('tool_call_id'))} returned: {message_text(m.get('content'))}"
                     for m in results)


def _chat_message_text(message: Mapping[str, Any]) -> str:
    """The text a chat message puts before the model: its content, and its tool calls' names and arguments."""
    text = message_text(message.get("content"))
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else []:
        fn = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(fn, Mapping):
            text += f"\n{fn.get('name', '')} {fn.get('arguments', '')}"
    return text


def _sse(event: str | None, data: Any) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


def _json(req: HttpRequest) -> Any:
    try:
        return req.json()
    except (ValueError, UnicodeDecodeError):
        return None


def _iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def _injected_message(status: int) -> str:
    return {429: "Number of request tokens has exceeded your per-minute rate limit (stand-in burst)",
            529: "Overloaded (stand-in burst)",
            500: "Internal server error (stand-in burst)"}.get(status, f"injected error {status}")
