"""Model backends: one per tier, each a real SDK client wrapped by costline's instrumentation.

* Anthropic tiers go through the ``anthropic`` SDK's Messages API
  (:class:`AnthropicBackend`): the SDK's own retries (``max_retries``) handle 429/529/5xx;
  usage includes ``cache_read_input_tokens`` and ``cache_creation_input_tokens``.
* The student goes through vLLM's OpenAI-compatible ``/v1/chat/completions`` with the
  ``openai`` client (:class:`OpenAIChatBackend`), the served model or LoRA adapter as ``model``.
* Any tier may instead be served by an OpenAI-compatible server (``[serving.tiers.<tier>] api =
  "openai"``, ``base_url``, ``model``, ``api_key_env``): the same :class:`OpenAIChatBackend`, its
  calls recorded with ``gen_ai.provider.name = "openai"`` and priced from ``[[pricing.models]]``
  like any other.

The Anthropic clients are built with the SDK's own OpenTelemetry spans off (``open_telemetry=False``):
costline's call span is the one record of a call.

Every ``complete`` (and ``stream``: the same answer, its text yielded as the model writes it,
the :class:`Reply` returned at the end) is one call span (``instrument_anthropic`` / ``instrument_openai``;
an Anthropic ``complete`` with content capture off records the same span itself from the raw JSON:
see :class:`AnthropicBackend`);
an SDK error that survives the retries is recorded as ``error.type`` (its class name:
``RateLimitError``, ``OverloadedError``, ``InternalServerError``...) and raised as
:class:`~costline.serving.errors.BackendError` (an Anthropic ``error`` event in a 200 stream, or a 200 whose
body is the error object, by the class its error type has as a status: ``collectors.instrument.ANTHROPIC_ERROR_CLASSES``). A
stream that ends before the model's final event (no stop reason: cut off by a proxy) fails the tier with
:data:`INCOMPLETE_STREAM`; it is never returned as an answer, and its call span says so (``error.type`` =
:data:`INCOMPLETE_STREAM`, status ERROR: the instrumentation records it as the stream runs out).

What OpenAI-compatible servers send that the OpenAI API does not is read, never crashed on (:class:`OpenAIChatBackend`):
``content`` as a list of parts (Mistral's reasoning models) is the text of its ``text`` parts; a server that refuses
``stream_options`` is streamed without it; an error object written as a stream chunk or a 200 body fails the tier and
its call span alike; a token count sent as null (or one no count could be: NaN, above :data:`MAX_TOKENS`) is left
out of the call span, which is flagged ``costline.usage.incomplete`` (the Anthropic tiers' too), never recorded as 0
(the Reply carries 0). An answer whose ``finish_reason`` says it is none
(:data:`OPENAI_FAILED_FINISH_REASONS`: vLLM's ``abort``, ``error``, ``repetition``) fails the tier with
``finish_reason:<reason>``, and its call span alike; one that calls tools but says ``stop`` (a forced tool call) is
read as ``tool_calls``.

:data:`BACKEND_FACTORIES` maps a tier's provider to a factory; add one for another API.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Generator, Mapping, Sequence
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from costline import contract
from costline.collectors import Recorder, instrument_anthropic, instrument_openai
from costline.collectors.instrument import (ANTHROPIC_ERROR_CLASSES, INCOMPLETE_STREAM, anthropic_error_class,
                                            anthropic_error_name, fail_stream_call, vertex_endpoint)
from costline.pricing import bedrock_foundation_model
from costline.sdk import anthropic_client, bedrock_client, openai_client, vertex_client
from costline.serving.errors import BackendError, RoutingError
from costline.serving.registry import ModelRegistry, TierSpec
from costline.serving.settings import BackendsConfig
from costline.serving.structured import JSON_OBJECT_INSTRUCTION, OutputFormat
from costline.serving.translate import (NotTranslatable, blocks_from_openai, cites, messages_to_openai,
                                       tools_for_anthropic, tools_to_openai, uses_tools)

log = logging.getLogger(__name__)

__all__ = [
    "Prompt",
    "Reply",
    "Backend",
    "StreamingBackend",
    "AnthropicBackend",
    "BedrockBackend",
    "VertexBackend",
    "OpenAIChatBackend",
    "BACKEND_FACTORIES",
    "OPENAI_KEY_ENV",
    "ANTHROPIC_ERROR_CLASSES",
    "INCOMPLETE_STREAM",
    "build_backends",
]


@dataclass(frozen=True)
class Prompt:
    """What is sent to a model: Anthropic-style ``messages`` and ``system`` (string or blocks), and the
    request's generation parameters (``sampling``: ``(name, value)`` pairs — ``temperature``, ``top_p``,
    ``stop_sequences``, ``effort``, and from the Chat Completions API ``frequency_penalty``, ``presence_penalty``,
    ``seed``, ``logit_bias`` — checked by the gateway; each backend sends those its API takes)."""

    messages: tuple[Mapping[str, Any], ...]
    system: Any = None
    max_tokens: int | None = None
    sampling: tuple[tuple[str, Any], ...] = ()
    #: The tools offered (the Messages API's ``tools``, checked by the gateway: :mod:`costline.serving.translate`)
    #: and ``tool_choice``; the turns may carry ``tool_use`` / ``tool_result`` blocks.
    tools: tuple[Mapping[str, Any], ...] = ()
    tool_choice: Mapping[str, Any] | None = None
    #: Messages API fields an Anthropic tier gets as they came (``PASSTHROUGH_FIELDS``: ``cache_control``,
    #: ``service_tier``, ``speed``, ``inference_geo``, ``metadata.user_id``), checked by the gateway;
    #: an OpenAI-compatible tier has no such fields and does not get them.
    anthropic_extra: tuple[tuple[str, Any], ...] = ()
    #: The Messages API's ``thinking`` (``enabled`` with a budget, or ``adaptive``), checked by the gateway: sent to
    #: Anthropic tiers; an OpenAI-compatible tier answers without it (and without thinking blocks).
    thinking: Mapping[str, Any] | None = None
    #: The ``anthropic-beta`` features the client asked for (checked by the gateway), sent to Anthropic tiers in the
    #: same header; an OpenAI-compatible tier has no betas.
    anthropic_betas: tuple[str, ...] = ()
    #: Structured outputs (:mod:`costline.serving.structured`): the answer must be JSON valid against a schema, or
    #: one JSON object. Each tier gets it in its API's shape; the pipeline checks every answer against it.
    output_format: OutputFormat | None = None
    #: How many times an Anthropic tier's paused turn (``stop_reason`` "pause_turn": the API paused a long server-tool
    #: turn, such as many web searches) is sent back to go on before its answer stands — what the OpenAI routes
    #: ask, whose clients cannot send one back; 0 (the Messages API): the client gets the paused turn and does.
    resume_paused: int = 0

    @property
    def uses_tools(self) -> bool:
        """True when the request offers tools or its turns carry tool calls or results: its answer may be a tool
        call, and it depends on what the tools returned."""
        return uses_tools(self.messages, self.tools)

    @property
    def expects_blocks(self) -> bool:
        """True when the answer may hold more than text — tool calls (:attr:`uses_tools`), thinking blocks
        (``thinking``) or citations (a document or search result with ``citations.enabled``): it is never served from
        or stored in the cache, and is streamed whole."""
        return self.thinking is not None or self.uses_tools or cites(self.messages)

    @classmethod
    def of(cls, query: str, *, system: Any = None, max_tokens: int | None = None) -> "Prompt":
        return cls(({"role": "user", "content": query},), system, max_tokens)


def _anthropic_sampling(prompt: Prompt) -> dict[str, Any]:
    """``prompt.sampling`` as Messages API fields: ``stop_sequences``, ``effort`` as ``output_config.effort``.
    ``temperature`` / ``top_p`` are not sent: the Messages API (anthropic 2.x) has no such fields."""
    given = dict(prompt.sampling)
    out: dict[str, Any] = {}
    if given.get("stop_sequences"):
        out["stop_sequences"] = list(given["stop_sequences"])
    if given.get("effort"):
        out["output_config"] = {"effort": given["effort"]}
    return out


def _openai_sampling(prompt: Prompt) -> dict[str, Any]:
    """``prompt.sampling`` as Chat Completions fields: ``temperature``, ``top_p``, ``stop_sequences`` as ``stop``, and
    the Chat Completions API's own (``frequency_penalty``, ``presence_penalty``, ``seed``, ``logit_bias``).
    ``effort`` is not sent (an Anthropic output setting; the student is no reasoning model)."""
    given = dict(prompt.sampling)
    out = {k: given[k] for k in ("temperature", "top_p", "frequency_penalty", "presence_penalty", "seed") if k in given}
    if given.get("stop_sequences"):
        out["stop"] = list(given["stop_sequences"])
    if given.get("logit_bias"):
        out["logit_bias"] = dict(given["logit_bias"])
    return out


@dataclass(frozen=True)
class Reply:
    """One model answer. ``input_tokens`` is the GenAI total: it includes cached tokens."""

    text: str
    tier: str
    model: str
    stop_reason: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    id: str | None = None
    #: The answer's content blocks (Messages API shapes) when it holds more than text: its text, ``tool_use``,
    #: ``thinking`` / ``redacted_thinking`` and a server tool's ``server_tool_use`` / ``*_tool_result`` blocks;
    #: empty for a text answer (``text`` is all of it).
    content: tuple[Mapping[str, Any], ...] = ()
    #: Of ``cache_creation_tokens``, those written with a one-hour lifetime (Anthropic's ``ttl: "1h"``).
    cache_creation_1h_tokens: int = 0
    #: The speed the API says served it (Anthropic's ``usage.speed``: "fast" costs a premium), when it says one.
    speed: str | None = None
    #: Where the API says it ran (Anthropic's ``usage.inference_geo``: "us" costs 1.1 x), when it says.
    inference_geo: str | None = None
    #: Searches Anthropic's web search server tool made for it (``usage.server_tool_use``), billed per search.
    web_search_requests: int = 0
    #: The stop sequence that ended it (Anthropic's ``stop_sequence``, with ``stop_reason`` "stop_sequence"); None
    #: when none did, and always on an OpenAI-compatible tier (the Chat Completions API does not say which).
    stop_sequence: str | None = None

    @property
    def tool_calls(self) -> tuple[Mapping[str, Any], ...]:
        """The ``tool_use`` blocks of the answer."""
        return tuple(b for b in self.content if b.get("type") == "tool_use")


class Backend(Protocol):
    spec: TierSpec

    def complete(self, prompt: Prompt) -> Reply: ...

    def close(self) -> None: ...


class StreamingBackend(Backend, Protocol):
    """A backend that can also stream: ``reply = yield from backend.stream(prompt)``."""

    def stream(self, prompt: Prompt) -> Generator[str, None, Reply]: ...


#: The largest token count one call may report (:data:`costline.contract.MAX_TOKENS`, 1e8: more is a broken counter,
#: not a call). A count above it (``1e300``, ``10**30`` from a broken server) is no count: read as one not sent.
MAX_TOKENS = contract.MAX_TOKENS


def _count_or_none(value: Any) -> int | None:
    """A token count the server sent as a whole number from 0 to :data:`MAX_TOKENS` (a string ``"9"`` or a float
    ``9.0`` read as the SDKs' own models read it); None when it sent none (missing, null) or one that is no such
    number (negative, a fraction, NaN, infinite, above the bound): not a count of 0. Recorded so, the call's count
    is left out and the call flagged ``costline.usage.incomplete`` (as the instrumentation records a count sent as
    null); a Reply carries 0 for it (:func:`_int`)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float):
        value = int(value) if value.is_integer() and 0 <= value <= MAX_TOKENS else None  # NaN / inf: no integer
    elif isinstance(value, str):  # length first: int() of thousands of digits raises (and costs)
        value = int(value) if len(value) <= 9 and value.isascii() and value.isdigit() else None
    return value if isinstance(value, int) and 0 <= value <= MAX_TOKENS else None


def _int(value: Any) -> int:
    """A token count as :func:`_count_or_none` reads it, 0 when it reads none."""
    return _count_or_none(value) or 0


def _chat_text(content: Any) -> str:
    """The answer text of a chat message's (or a streamed delta's) ``content``: a string as it is; a list of parts
    (Mistral's reasoning models send ``[{"type": "thinking", ...}, {"type": "text", "text": ...}]``) the ``text``
    of its ``text`` parts, joined (thinking is not answer text); anything else (null) none."""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for part in content if isinstance(content, list) else ():
        text = _field(part, "text") if _field(part, "type") == "text" else None
        if isinstance(text, str):
            parts.append(text)
    return "".join(parts)


def _field(obj: Any, name: str) -> Any:
    """``obj[name]`` of a JSON object, ``obj.name`` of an SDK model; None when absent."""
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def _message_text(blocks: Any) -> str:
    """The text of a Messages API answer's content (raw JSON blocks or the SDK's): its text blocks'
    strings, joined; a missing or null ``content`` or ``text`` has none."""
    parts = []
    for block in blocks if isinstance(blocks, list) else ():
        text = _field(block, "text") if _field(block, "type") == "text" else None
        if isinstance(text, str):
            parts.append(text)
    return "".join(parts)


def _content_blocks(blocks: Any) -> tuple[dict[str, Any], ...]:
    """A Messages API answer's content (raw JSON blocks or the SDK's) as plain blocks when it holds more than text
    (``tool_use``, ``thinking``, ``redacted_thinking``, text blocks' ``citations``, a server tool's
    ``server_tool_use`` and ``*_tool_result`` blocks as they came: kept in order with its text blocks, each with the
    fields a client sends back on the next turn), else ``()``: a text answer is all in ``Reply.text``."""
    blocks = blocks if isinstance(blocks, list) else []
    if all(_field(b, "type") == "text" and not _field(b, "citations") for b in blocks):
        return ()
    out: list[dict[str, Any]] = []
    for block in blocks:
        kind = _field(block, "type")
        if kind == "text" and isinstance(_field(block, "text"), str):
            cited = _field(block, "citations")
            out.append({"type": "text", "text": _field(block, "text"),
                        **({"citations": [_plain(c) for c in cited]} if isinstance(cited, list) and cited else {})})
        elif kind == "tool_use":
            given = _field(block, "input")
            out.append({"type": "tool_use", "id": str(_field(block, "id") or ""), "name": str(_field(block, "name")),
                        "input": dict(given) if isinstance(given, Mapping) else {}})
        elif kind == "thinking":
            out.append({"type": "thinking", "thinking": str(_field(block, "thinking") or ""),
                        "signature": str(_field(block, "signature") or "")})
        elif kind == "redacted_thinking":
            out.append({"type": "redacted_thinking", "data": str(_field(block, "data") or "")})
        elif isinstance(kind, str):  # a server tool's call and result (server_tool_use, web_search_tool_result…)
            plain = _plain(block)
            if isinstance(plain, Mapping):
                out.append(dict(plain))
    return tuple(out)


def _plain(value: Any) -> Any:
    """A citation or a block as plain JSON (the SDK's pydantic object dumped; raw JSON as it is)."""
    dump = getattr(value, "model_dump", None)
    return dump(mode="json", exclude_none=True) if callable(dump) else value


# INCOMPLETE_STREAM (imported from collectors.instrument, re-exported): the tier's error type of a stream that
# ended (cleanly, as far as the transport could tell) before the model's final event: no stop reason, so the
# answer may be cut off. It is not an answer. The same name is the call span's ``error.type``.
_INCOMPLETE_STREAM_MESSAGE = ("the model's stream ended before its final event (no stop reason): the answer may be "
                              "cut off; check the server or proxy between costline and the model")


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _httpx() -> Any:
    """The HTTP client module of the installed SDKs (anthropic 2.x, openai 3.x: httpx2; older ones: httpx)."""
    try:
        import httpx2 as httpx
    except ImportError:
        import httpx
    return httpx


def _stream_error_name(exc: BaseException, name: str) -> str:
    """The error type of a stream that failed: a timeout of its transport while it was read (a read's, or the
    stream's deadline: ``[serving.backends] stream_timeout_s``) is ``APITimeoutError``, as the SDK names a
    non-streamed call's; anything else ``name``."""
    return "APITimeoutError" if isinstance(exc, _httpx().TimeoutException) else name


def _json_object(client: Any, path: str, body: dict[str, Any], invalid: type[Exception],
                 headers: Mapping[str, str] | None = None) -> tuple[Any, dict[str, Any]]:
    """POST ``body`` through an SDK client (``anthropic`` or ``openai``: their retries, headers,
    timeouts and error classes) and read the answer's JSON once, without the SDK's pydantic models.
    An answer that is not a JSON object raises the SDK's ``APIResponseValidationError`` (``invalid``).
    Returns the HTTP response and the object."""
    http = client.post(path, body=body, cast_to=_httpx().Response,
                       **({"options": {"headers": dict(headers)}} if headers else {}))
    try:
        parsed = http.json()
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise invalid(http, None, message=f"{path} answered with a body that is not a JSON object")
    return http, parsed


class AnthropicBackend:
    """A tier served by the Anthropic Messages API.

    With ``recorder`` (what :func:`build_backends` passes) and content capture off, :meth:`complete`
    sends the request through the same SDK client's ``post`` (its retries, headers, timeouts and
    error classes) with ``cast_to=httpx.Response``, reads the JSON body once and records the call
    span itself, with the attributes ``instrument_anthropic`` records (usage, response model, stop
    reason, id): the SDK's pydantic ``Message`` is never built (CPU per call 3.5 -> 2.4 ms, median, on
    a loaded 2-core box). With capture on it goes through ``messages.create`` (the instrumentation records
    the content); :meth:`stream` always does.
    """

    #: Whether the tier's API has Anthropic's Message Batches (the gateway's batches send its requests there at
    #: half price); a tier without is asked request by request.
    message_batches: ClassVar[bool] = True

    def __init__(self, spec: TierSpec, client: Any, *, max_tokens: int = 1024,
                 recorder: Recorder | None = None) -> None:
        self.spec = spec
        self.client = client
        self.max_tokens = max_tokens
        self.recorder = recorder

    def complete(self, prompt: Prompt) -> Reply:
        """One answer; a paused turn (:data:`PAUSE_TURN`) sent back to go on up to ``prompt.resume_paused`` times,
        the pieces joined into one Reply. Each continuation is a call of its own (recorded and billed as one) within
        what is left of the request's bounds (:func:`_bounds_left`: ``max_tokens`` less the output so far, each server
        tool's ``max_uses`` less the searches so far). A continuation that fails leaves the paused turn as the answer
        (its searches are paid for: sent up a tier, they would be paid again)."""
        reply = self._complete_once(prompt)
        limit = prompt.max_tokens or self.max_tokens
        for _ in range(prompt.resume_paused):
            so_far = _blocks_of(reply)
            left = _bounds_left(prompt, limit - reply.output_tokens, reply.web_search_requests)
            if reply.stop_reason != PAUSE_TURN or not so_far or left is None:
                break
            turn = {"role": "assistant", "content": [dict(b) for b in so_far]}
            try:
                more = self._complete_once(dataclasses.replace(left, messages=(*prompt.messages, turn)))
            except BackendError as exc:
                log.warning("costline: continuing a paused turn on the %s tier failed (%s); its paused turn stands",
                            self.spec.name, exc)
                break
            reply = _joined(reply, more)
        return reply

    def _client_errors(self) -> tuple[type[BaseException], ...]:
        """What a call of this tier's client raises when the tier fails: the SDK's API errors (and, for a cloud's
        client, its credentials' errors: a token that cannot be refreshed is the tier's failure, not the gateway's)."""
        import anthropic

        return (anthropic.APIError,)

    def _complete_once(self, prompt: Prompt) -> Reply:
        kwargs = self._kwargs(prompt)
        headers = _beta_headers(prompt)
        try:
            if self.recorder is not None and not self.recorder.capture_enabled:
                return self._complete_raw(kwargs, headers)
            response = self.client.messages.create(**kwargs, **({"extra_headers": headers} if headers else {}))
        except self._client_errors() as exc:
            raise BackendError(self.spec.name, type(exc).__name__, str(exc)[:300]) from exc
        return self._reply(response)

    def _complete_raw(self, kwargs: dict[str, Any], headers: Mapping[str, str] | None = None) -> Reply:
        """One Messages call through the SDK client's ``post``, its JSON parsed once, its call span
        recorded here (see the class docstring)."""
        import anthropic

        assert self.recorder is not None
        with self.recorder.call(self.spec.provider, self.spec.model, self.spec.name,
                                endpoint=vertex_endpoint(self.client)) as call:  # a Vertex tier's region
            http, body = _json_object(self.client, "/v1/messages", kwargs, anthropic.APIResponseValidationError, headers)
            if body.get("type") == "error":  # a proxy's 200 with the API's error object: not an (empty) answer
                error = getattr(anthropic, anthropic_error_class(body) or "", anthropic.APIStatusError)
                raise error(f"/v1/messages answered 200 with an error: {body.get('error')}"[:300],
                            response=http, body=body)
            usage = body.get("usage")
            usage = usage if isinstance(usage, Mapping) else None
            # a count sent as null (or none at all in the usage) is no count: left out, the call flagged incomplete
            fresh = _count_or_none(usage.get("input_tokens")) if usage else None
            out = _count_or_none(usage.get("output_tokens")) if usage else None
            read = _int(usage.get("cache_read_input_tokens")) if usage else 0
            created = _int(usage.get("cache_creation_input_tokens")) if usage else 0
            split = usage.get("cache_creation") if usage else None
            one_hour = _int(split.get("ephemeral_1h_input_tokens")) if isinstance(split, Mapping) else 0
            searches = _int(_field(usage.get("server_tool_use"), "web_search_requests")) if usage else 0
            stop, model, rid = (_str_or_none(body.get(k)) for k in ("stop_reason", "model", "id"))
            try:  # recording never fails the answer (as instrument_anthropic's does not)
                if usage is not None:
                    # Anthropic's input_tokens excludes cached tokens; the GenAI total includes them
                    call.usage(None if fresh is None else fresh + read + created, out, read, created, one_hour,
                               searches)
                    call.speed(_str_or_none(usage.get("speed")))  # "fast": billed at the model's fast multiplier
                    call.inference_geo(_str_or_none(usage.get("inference_geo")))  # "us": 1.1 x the tokens
                call.response(model, [stop] if stop else None, rid)
            except Exception:
                log.exception("costline: could not record a model response")
        return Reply(_message_text(body.get("content")), self.spec.name, model or self.spec.model, stop,
                     (fresh or 0) + read + created, out or 0, read, created, rid, _content_blocks(body.get("content")),
                     one_hour,
                     speed=_str_or_none(usage.get("speed")) if usage else None,
                     inference_geo=_str_or_none(usage.get("inference_geo")) if usage else None,
                     web_search_requests=searches, stop_sequence=_str_or_none(body.get("stop_sequence")))

    def stream(self, prompt: Prompt) -> Generator[str, None, Reply]:
        """:meth:`complete`, streamed (``messages.stream``): yields text deltas, returns the Reply."""
        kwargs = self._kwargs(prompt)
        headers = _beta_headers(prompt)
        response = None
        try:
            with self.client.messages.stream(**kwargs, **({"extra_headers": headers} if headers else {})) as stream:
                yield from stream.text_stream
                try:
                    response = stream.get_final_message()
                except AssertionError:  # the stream ended before message_start
                    response = None
        except Exception as exc:  # the SDK's errors, and its transport's when a stream breaks
            raise BackendError(self.spec.name, _stream_error_name(exc, anthropic_error_name(exc)),
                               str(exc)[:300]) from exc
        if response is None or _field(response, "stop_reason") is None:  # no message_delta: cut off
            raise BackendError(self.spec.name, INCOMPLETE_STREAM, _INCOMPLETE_STREAM_MESSAGE)
        return self._reply(response)

    def count_tokens(self, prompt: Prompt) -> int:
        """The input tokens ``prompt`` would cost on this tier's model (the Messages API's free ``count_tokens``:
        system, turns and tools counted by the model's own tokenizer); nothing is generated or recorded."""
        kwargs = self._kwargs(prompt)
        fields = {k: kwargs[k] for k in ("model", "messages", "system", "tools", "tool_choice") if k in kwargs}
        headers = _beta_headers(prompt)
        try:
            counted = self.client.messages.count_tokens(**fields, **({"extra_headers": headers} if headers else {}))
        except self._client_errors() as exc:
            raise BackendError(self.spec.name, type(exc).__name__, str(exc)[:300]) from exc
        return _int(_field(counted, "input_tokens"))

    def _kwargs(self, prompt: Prompt) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self.spec.model,
            "max_tokens": prompt.max_tokens or self.max_tokens,
            "messages": list(prompt.messages),
        }
        if prompt.system:
            kwargs["system"] = prompt.system
        if prompt.tools:
            kwargs["tools"] = tools_for_anthropic(prompt.tools)
            if prompt.tool_choice:
                kwargs["tool_choice"] = dict(prompt.tool_choice)
        if prompt.thinking:
            kwargs["thinking"] = dict(prompt.thinking)
        kwargs.update(_anthropic_sampling(prompt))
        kwargs.update(prompt.anthropic_extra)
        fmt = prompt.output_format
        if fmt is not None:
            spec = fmt.to_anthropic()
            if spec is not None:
                kwargs["output_config"] = {**kwargs.get("output_config", {}), "format": spec}
            else:  # JSON without a schema: the Messages API has no such mode, so the model is told
                kwargs["system"] = _with_instruction(kwargs.get("system"), JSON_OBJECT_INSTRUCTION)
        return kwargs

    def _reply(self, response: Any) -> Reply:
        """The Reply of the SDK's ``Message``: read as :meth:`_complete_raw` reads the JSON (the SDK builds
        the model without validating it, so any field may be missing or null)."""
        if _field(response, "type") == "error":  # a proxy's 200 with the API's error object
            raise BackendError(self.spec.name, anthropic_error_class(response) or "APIStatusError",
                               f"the model answered 200 with an error: {_field(response, 'error')}"[:300])
        usage = _field(response, "usage")
        read = _int(_field(usage, "cache_read_input_tokens"))
        created = _int(_field(usage, "cache_creation_input_tokens"))
        return Reply(_message_text(_field(response, "content")), self.spec.name,
                     _str_or_none(_field(response, "model")) or self.spec.model,
                     _str_or_none(_field(response, "stop_reason")),
                     _int(_field(usage, "input_tokens")) + read + created, _int(_field(usage, "output_tokens")),
                     read, created, _str_or_none(_field(response, "id")), _content_blocks(_field(response, "content")),
                     _int(_field(_field(usage, "cache_creation"), "ephemeral_1h_input_tokens")),
                     speed=_str_or_none(_field(usage, "speed")),
                     inference_geo=_str_or_none(_field(usage, "inference_geo")),
                     web_search_requests=_int(_field(_field(usage, "server_tool_use"), "web_search_requests")),
                     stop_sequence=_str_or_none(_field(response, "stop_sequence")))

    def close(self) -> None:
        self.client.close()


class BedrockBackend(AnthropicBackend):
    """A tier served by Claude on Amazon Bedrock: the Messages API through ``anthropic.AnthropicBedrock``, which
    sends ``/v1/messages`` as Bedrock Runtime's InvokeModel (``…/invoke-with-response-stream`` when streamed),
    SigV4-signed or with a Bedrock API key. Answers, usage and errors are the Messages API's; its calls are recorded
    with ``gen_ai.provider.name`` ``aws.bedrock`` and priced by the model's Anthropic id (the processors read
    ``us.anthropic.claude-haiku-4-5-20251001-v1:0`` as ``claude-haiku-4-5``). Bedrock has no Message Batches
    (a batch's requests for such a tier are asked one by one); tokens are counted by Bedrock's CountTokens."""

    message_batches: ClassVar[bool] = False

    def _client_errors(self) -> tuple[type[BaseException], ...]:
        import botocore.exceptions

        return (*super()._client_errors(), botocore.exceptions.BotoCoreError)

    def count_tokens(self, prompt: Prompt) -> int:
        """The input tokens of ``prompt`` on the tier's model: Bedrock Runtime's CountTokens on the InvokeModel
        body the tier would send (free; nothing generated or recorded). CountTokens takes a foundation model, so a
        cross-region inference profile (``us.anthropic.…``) is counted on its model (``anthropic.…``)."""
        import base64
        import json
        import urllib.parse

        try:  # the version the SDK writes into InvokeModel bodies
            from anthropic._constants import ANTHROPIC_API_VERSION as version
        except ImportError:
            version = "bedrock-2023-05-31"
        kwargs = self._kwargs(prompt)
        body = {k: kwargs[k] for k in ("messages", "system", "tools", "tool_choice") if k in kwargs}
        body.update(anthropic_version=version, max_tokens=kwargs["max_tokens"])
        betas = _beta_headers(prompt).get("anthropic-beta")
        if betas:
            body["anthropic_beta"] = [b.strip() for b in betas.split(",")]
        raw = base64.b64encode(json.dumps(body, separators=(",", ":")).encode()).decode()
        model = bedrock_foundation_model(self.spec.model)
        path = f"/model/{urllib.parse.quote(model, safe=':;')}/count-tokens"
        try:  # sent as bytes: the SDK adds anthropic_version to any JSON object it is given, and CountTokens has none
            http = self.client.post(path, cast_to=_httpx().Response,
                                    content=json.dumps({"input": {"invokeModel": {"body": raw}}}).encode(),
                                    options={"headers": {"content-type": "application/json"}})
        except self._client_errors() as exc:
            raise BackendError(self.spec.name, type(exc).__name__, str(exc)[:300]) from exc
        try:
            counted = http.json()
        except ValueError:
            counted = None
        if not isinstance(counted, dict):
            raise BackendError(self.spec.name, "APIResponseValidationError", "CountTokens answered with no JSON object")
        return _int(counted.get("inputTokens"))



class VertexBackend(AnthropicBackend):
    """A tier served by Claude on Google Vertex AI: the Messages API through ``anthropic.AnthropicVertex``, which
    sends ``/v1/messages`` as the model's ``rawPredict`` (``streamRawPredict`` when streamed) and counts tokens
    with Vertex's ``count-tokens:rawPredict``. Calls are recorded with ``gen_ai.provider.name`` ``gcp.vertex_ai``
    and priced by the model's Anthropic id (``claude-haiku-4-5@20251001`` is ``claude-haiku-4-5``). Vertex's
    Claude has no Message Batches here (batch prediction reads and writes Cloud Storage): asked one by one."""

    message_batches: ClassVar[bool] = False

    def _client_errors(self) -> tuple[type[BaseException], ...]:
        try:
            from google.auth.exceptions import GoogleAuthError
        except ImportError:  # an access token from the environment: no google-auth
            return super()._client_errors()
        return (*super()._client_errors(), GoogleAuthError)


#: The stop reason of a turn Anthropic paused mid-way (a long server-tool turn): sent back as the last assistant turn,
#: it goes on. Not a final answer, nor a failed one.
PAUSE_TURN = "pause_turn"


def _blocks_of(reply: Reply) -> tuple[Mapping[str, Any], ...]:
    """A Reply's content blocks (a text answer's text as one block; none for an empty one)."""
    return reply.content or (({"type": "text", "text": reply.text},) if reply.text else ())


def _bounds_left(prompt: Prompt, tokens: int, searches: int) -> Prompt | None:
    """``prompt`` with what is left of its bounds after a paused turn (``tokens`` of output, ``searches`` made):
    ``max_tokens`` and each server tool's ``max_uses``. A tool with no use left stays offered (the paused turn's
    calls name it) with ``tool_choice`` none, so the model writes its answer without another call; None when no
    output token is left."""
    if tokens < 1:
        return None
    tools, spent = [], False
    for tool in prompt.tools:
        uses = tool.get("max_uses")
        if isinstance(uses, int) and not isinstance(uses, bool):
            spent = spent or uses - searches < 1
            tool = {**tool, "max_uses": max(uses - searches, 1)}
        tools.append(tool)
    return dataclasses.replace(prompt, max_tokens=tokens, tools=tuple(tools),
                               tool_choice={"type": "none"} if spent else prompt.tool_choice)


def _joined(first: Reply, more: Reply) -> Reply:
    """A paused turn's Reply and its continuation's as one: the text and blocks in order, the counts of both calls
    (each billed), the continuation's stop reason, model and id."""
    content = (*_blocks_of(first), *_blocks_of(more))
    return dataclasses.replace(
        more, text=first.text + more.text, content=content,
        input_tokens=first.input_tokens + more.input_tokens, output_tokens=first.output_tokens + more.output_tokens,
        cache_read_tokens=first.cache_read_tokens + more.cache_read_tokens,
        cache_creation_tokens=first.cache_creation_tokens + more.cache_creation_tokens,
        cache_creation_1h_tokens=first.cache_creation_1h_tokens + more.cache_creation_1h_tokens,
        web_search_requests=first.web_search_requests + more.web_search_requests,
        speed=more.speed or first.speed, inference_geo=more.inference_geo or first.inference_geo)


def _beta_headers(prompt: Prompt) -> dict[str, str]:
    """The ``anthropic-beta`` header of the prompt's betas (none: no header)."""
    return {"anthropic-beta": ",".join(prompt.anthropic_betas)} if prompt.anthropic_betas else {}


def _with_instruction(system: Any, instruction: str) -> Any:
    """``system`` (absent, a string or text blocks) with ``instruction`` after it."""
    if not system:
        return instruction
    if isinstance(system, str):
        return f"{system}\n\n{instruction}"
    return [*system, {"type": "text", "text": instruction}]


#: The finish reasons of an OpenAI-compatible answer that is not one: vLLM's (and SGLang's) ``abort`` (the engine
#: dropped the request mid-answer), ``error`` (it failed mid-answer), ``repetition`` (a loop it detected and cut),
#: DeepSeek's ``insufficient_system_resource`` (cut for lack of capacity). Such a tier fails (:func:`_finish_failure`):
#: its partial answer is never served or cached. A reason not listed passes as before: servers name a natural end
#: in their own words (TGI ``eos_token``, Together ``eos``, Mistral ``model_length``), and failing every one of
#: their answers would send all of the student's traffic up a tier.
OPENAI_FAILED_FINISH_REASONS = contract.OPENAI_FAILED_FINISH_REASONS
#: The finish reason of an answer that calls tools (what the gateway tells the Messages API as ``tool_use``).
_TOOL_CALLS = "tool_calls"


def _finish_failure(finish: str | None) -> str | None:
    """The error type a tier fails with when its answer ended with ``finish`` — ``finish_reason:<reason>``, the
    same on the call span (``error.type``) — or None when ``finish`` is not one of
    :data:`OPENAI_FAILED_FINISH_REASONS` (a non-streamed answer that says none is read as before; a stream with
    none was cut off, :data:`INCOMPLETE_STREAM`)."""
    if finish not in OPENAI_FAILED_FINISH_REASONS:
        return None
    return f"finish_reason:{finish}"


def _finish_message(finish: str) -> str:
    return (f"the model's answer ended with finish_reason {finish[:64]!r} (vLLM: 'abort' = the engine dropped the "
            "request, 'error' = it failed mid-answer, 'repetition' = it cut a loop): a partial answer, not served; "
            "check the model server's logs")


def _tool_finish(finish: str | None, blocks: Sequence[Mapping[str, Any]]) -> str | None:
    """The finish reason of an answer with ``blocks``: one that calls tools but says ``stop`` (a forced tool call:
    a named ``tool_choice``, or "required" on older vLLM, ends so, as OpenAI's does) is :data:`_TOOL_CALLS`, so
    that its client runs the tools (the Messages API's ``tool_use``)."""
    if finish == "stop" and any(b.get("type") == "tool_use" for b in blocks):
        return _TOOL_CALLS
    return finish


def openai_messages(prompt: Prompt) -> list[dict[str, Any]]:
    """Anthropic-style system + messages as OpenAI chat messages (tool calls and results included:
    :func:`~costline.serving.translate.messages_to_openai`)."""
    return messages_to_openai(prompt.system, prompt.messages)


class OpenAIChatBackend:
    """A tier served by an OpenAI-compatible chat-completions API (vLLM for the student).

    With ``recorder`` and content capture off, :meth:`complete` reads the raw JSON once and records
    the call span itself, as :class:`AnthropicBackend` does (the same attributes ``instrument_openai``
    records: usage with cached prompt tokens, response model, finish reasons, id).
    """

    def __init__(self, spec: TierSpec, client: Any, *, max_tokens: int = 1024,
                 recorder: Recorder | None = None) -> None:
        self.spec = spec
        self.client = client
        self.max_tokens = max_tokens
        self.recorder = recorder
        #: Whether streams are asked with ``stream_options`` (False once the server refused it: :meth:`_open_stream`).
        self._stream_usage = True

    def complete(self, prompt: Prompt) -> Reply:
        import openai

        messages = self._messages(prompt)
        try:
            tools = tools_to_openai(prompt.tools, prompt.tool_choice, strict=not self.spec.is_student)
        except NotTranslatable as exc:  # an Anthropic-defined tool (web search...): never a paid call here
            raise BackendError(self.spec.name, "ContentNotSent", f"not sent to this tier: {exc}") from exc
        request = {"model": self.spec.model, "messages": messages,
                   "max_tokens": prompt.max_tokens or self.max_tokens, **_openai_sampling(prompt), **tools}
        if prompt.output_format is not None:  # vLLM's guided decoding holds the student to it
            request["response_format"] = prompt.output_format.to_chat()
        try:
            if self.recorder is not None and not self.recorder.capture_enabled:
                return self._complete_raw(request)
            response = self.client.chat.completions.create(**request)
        except openai.APIError as exc:
            raise BackendError(self.spec.name, type(exc).__name__, str(exc)[:300]) from exc
        choices = _field(response, "choices")
        if not isinstance(choices, list) or not choices:  # as _complete_raw refuses it
            raise BackendError(self.spec.name, "APIResponseValidationError", "the chat completion has no choices")
        choice = choices[0]
        finish = _str_or_none(_field(choice, "finish_reason"))
        failure = _finish_failure(finish)
        if failure is not None:  # (the instrumentation's call span has ended: the request span records the failure)
            raise BackendError(self.spec.name, failure, _finish_message(str(finish)))
        message = _field(choice, "message")
        content = _field(message, "content")
        blocks: tuple[dict[str, Any], ...] = ()
        if _field(message, "tool_calls"):
            dumped = message.model_dump() if hasattr(message, "model_dump") else message
            dumped = dumped if isinstance(dumped, Mapping) else {}
            found, problem = blocks_from_openai({**dumped, "content": _chat_text(content)})
            if problem:
                raise BackendError(self.spec.name, "APIResponseValidationError", problem)
            blocks = tuple(found)
        return self._reply(_chat_text(content),
                           _str_or_none(_field(response, "model")) or self.spec.model,
                           finish, _field(response, "usage"), _str_or_none(_field(response, "id")), blocks)

    def _messages(self, prompt: Prompt) -> list[dict[str, Any]]:
        """The prompt as this tier's chat messages; a block it cannot be given (a PDF, citations: see
        :mod:`costline.serving.translate`) or an image it would fetch from inside your network fails the tier."""
        try:
            messages = openai_messages(prompt)
        except NotTranslatable as exc:
            raise BackendError(self.spec.name, "ContentNotSent", f"not sent to this tier: {exc}") from exc
        self._refuse_fetches(messages)
        return messages

    def _refuse_fetches(self, messages: list[dict[str, Any]]) -> None:
        """A self-hosted tier (vLLM) fetches an image given by URL itself, from inside the network it runs in: a
        caller's URL (``http://169.254.169.254/…``, an internal service) would be fetched there. Such an image
        is not sent to it — the tier fails (escalated to a tier whose API fetches from outside); an image sent
        inline (a ``data:`` URL) is."""
        if self.spec.provider != contract.PROVIDER_VLLM:
            return
        for m in messages:
            parts = m.get("content") if isinstance(m.get("content"), list) else ()
            if any(p.get("type") == "image_url" and not str(p["image_url"].get("url", "")).startswith("data:")
                   for p in parts):
                raise BackendError(self.spec.name, "ImageUrlNotSent",
                                   "an image given by URL is not sent to a self-hosted tier (its server would fetch "
                                   "it from inside your network); send it inline (base64) to use this tier")

    def _complete_raw(self, request: dict[str, Any]) -> Reply:
        import openai

        assert self.recorder is not None
        with self.recorder.call(self.spec.provider, self.spec.model, self.spec.name) as call:
            http, body = _json_object(self.client, "/chat/completions", request, openai.APIResponseValidationError)
            choices = [ch for ch in body.get("choices") or [] if isinstance(ch, Mapping)] \
                if isinstance(body.get("choices"), list) else []
            if not choices:
                said = f": {str(body.get('message'))[:200]}" if body.get("object") == "error" else ""
                raise openai.APIResponseValidationError(  # an error object a server sent with a 200 (old vLLM)
                    http, body, message=f"the chat completion has no choices{said}")
            usage = body.get("usage") if isinstance(body.get("usage"), Mapping) else None
            details = usage.get("prompt_tokens_details") if usage else None
            cached = _int(details.get("cached_tokens")) if isinstance(details, Mapping) else 0
            # a count sent as null is no count: left out, the call flagged incomplete (as instrument_openai does)
            prompt_tokens = _count_or_none(usage.get("prompt_tokens")) if usage else None
            completion_tokens = _count_or_none(usage.get("completion_tokens")) if usage else None
            reasons = [ch["finish_reason"] for ch in choices if isinstance(ch.get("finish_reason"), str)]
            model, rid = _str_or_none(body.get("model")), _str_or_none(body.get("id"))
            try:  # recording never fails the answer (as instrument_openai's does not)
                if usage is not None:  # prompt_tokens already includes cached tokens, as the semconv total does
                    call.usage(prompt_tokens, completion_tokens, cached, 0)
                call.response(model, reasons or None, rid)
            except Exception:
                log.exception("costline: could not record a model response")
            first = choices[0]
            finish = _str_or_none(first.get("finish_reason"))
            failure = _finish_failure(finish)
            if failure is not None:  # its span ends as it is (the tokens were spent), failed
                call.error(failure, _finish_message(str(finish)))
            message = first.get("message") if isinstance(first.get("message"), Mapping) else {}
            blocks: tuple[dict[str, Any], ...] = ()
            if message.get("tool_calls") and failure is None:
                found, problem = blocks_from_openai({**message, "content": _chat_text(message.get("content"))})
                if problem:  # a broken call is no answer: the span says so, the tier fails (escalated)
                    raise openai.APIResponseValidationError(http, body, message=problem)
                blocks = tuple(found)
        if failure is not None:
            raise BackendError(self.spec.name, failure, _finish_message(str(finish)))
        return Reply(_chat_text(message.get("content")), self.spec.name, model or self.spec.model,
                     _tool_finish(finish, blocks), prompt_tokens or 0, completion_tokens or 0, cached, 0, rid, blocks)

    def stream(self, prompt: Prompt) -> Generator[str, None, Reply]:
        """:meth:`complete`, streamed (with ``include_usage``, unless the server refuses it: :meth:`_open_stream`):
        yields text deltas (always strings: a delta whose ``content`` is a list of parts yields the text of its text
        parts), returns the Reply. A chunk that is an error object (``"object": "error"``, as older vLLM and some
        proxies write one mid-stream, unwrapped) fails the tier (``APIError``, as the SDK names the wrapped one)
        and its call span; so does a finish reason of no answer (:func:`_finish_failure`: vLLM's ``abort``,
        ``error``, ``repetition``), after the text already yielded, as a stream cut off does (the stream is read to
        its end first: its usage chunk, the tokens spent, is recorded on the failed call)."""
        parts: list[str] = []
        model, finish, usage, rid = self.spec.model, None, None, None
        failed = False
        messages = self._messages(prompt)
        request = {"model": self.spec.model, "messages": messages, "max_tokens": prompt.max_tokens or self.max_tokens,
                   "stream": True, **_openai_sampling(prompt),
                   **({"response_format": prompt.output_format.to_chat()} if prompt.output_format else {})}
        try:
            stream = self._open_stream(request)
            with stream:
                for chunk in stream:
                    if _field(chunk, "object") == "error":
                        problem = f"the server sent an error in the stream: {_field(chunk, 'message')}"[:300]
                        fail_stream_call(stream, "APIError", problem)  # its span ends when the stream closes
                        raise BackendError(self.spec.name, "APIError", problem)
                    model = _str_or_none(_field(chunk, "model")) or model
                    rid = _str_or_none(_field(chunk, "id")) or rid
                    usage = _field(chunk, "usage") or usage
                    choices = _field(chunk, "choices")
                    for choice in choices[:1] if isinstance(choices, list) else ():
                        finish = _str_or_none(_field(choice, "finish_reason")) or finish
                        failure = _finish_failure(finish)
                        if failure is not None and not failed:  # marked now: its span ends with the stream
                            failed = True
                            fail_stream_call(stream, failure, _finish_message(str(finish)))
                        text = _chat_text(_field(_field(choice, "delta"), "content"))
                        if text:
                            parts.append(text)
                            yield text
            text = "".join(parts)
        except BackendError:
            raise
        except Exception as exc:  # the SDK's errors, and its transport's when a stream breaks
            raise BackendError(self.spec.name, _stream_error_name(exc, type(exc).__name__), str(exc)[:300]) from exc
        if finish is None:  # no finish_reason: the stream was cut off
            raise BackendError(self.spec.name, INCOMPLETE_STREAM, _INCOMPLETE_STREAM_MESSAGE)
        failure = _finish_failure(finish)
        if failure is not None:
            raise BackendError(self.spec.name, failure, _finish_message(finish))
        return self._reply(text, model, finish, usage, rid)

    def _open_stream(self, request: dict[str, Any]) -> Any:
        """The SDK's stream of ``request``, asked with ``stream_options={"include_usage": True}`` (the usage chunk)
        unless this tier's server refused it once: a server that rejects the option (Azure OpenAI api-versions
        before 2024-09-01 answer 400 "Unrecognized request argument supplied: stream_options"; some proxies) is
        asked again without it, and so from then on (logged once). Such a stream carries no usage: its call span
        is flagged ``costline.usage.incomplete``, and the refused call is recorded as the failed call it was."""
        import openai

        if self._stream_usage:
            try:
                return self.client.chat.completions.create(**request, stream_options={"include_usage": True})
            except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
                if "stream_options" not in str(exc):
                    raise
                if self._stream_usage:
                    self._stream_usage = False
                    log.warning("costline: the %s tier's server refuses stream_options (%s); its streams are asked "
                                "without it from now on, and their calls carry no usage (flagged "
                                "costline.usage.incomplete): use an API version or server that takes it",
                                self.spec.name, str(exc)[:200])
        return self.client.chat.completions.create(**request)

    def _reply(self, text: str, model: str, finish: str | None, usage: Any, rid: str | None,
               blocks: tuple[dict[str, Any], ...] = ()) -> Reply:
        details = _field(usage, "prompt_tokens_details") if usage is not None else None
        return Reply(text, self.spec.name, model, _tool_finish(finish, blocks),
                     _int(_field(usage, "prompt_tokens")), _int(_field(usage, "completion_tokens")),
                     _int(_field(details, "cached_tokens")) if details is not None else 0, 0, rid, blocks)

    def close(self) -> None:
        self.client.close()


BackendFactory = Callable[[TierSpec, BackendsConfig, Recorder, Mapping[str, str]], Backend]


def _stream_timeout(settings: BackendsConfig) -> float | None:
    """The seconds a streamed call may take in all (``stream_timeout_s``; 0: no bound on the whole)."""
    return settings.stream_timeout_s or None


#: The API key variable of an OpenAI-compatible tier that names none ([serving.tiers.<tier>] api_key_env).
OPENAI_KEY_ENV = "OPENAI_API_KEY"


def _anthropic(spec: TierSpec, settings: BackendsConfig, recorder: Recorder, env: Mapping[str, str]) -> Backend:
    # open_telemetry=False: the SDK's own call span (anthropic 2.x emits one per call whenever a tracer
    # provider is global, as `costline serve` makes it) would duplicate the call span instrument_anthropic
    # records, to be exported and dropped again by the processors; turning it off saved ~0.3-1 ms CPU a call
    client = anthropic_client(base_url=spec.base_url, key_env=spec.key_env or settings.anthropic_api_key_env, env=env,
                              service=f"tier {spec.name!r} (Anthropic)", max_retries=settings.max_retries,
                              timeout=settings.timeout_s, stream_timeout=_stream_timeout(settings), open_telemetry=False)
    instrument_anthropic(client, recorder, tier=spec.name)  # stream(), and complete() when capture is on
    return AnthropicBackend(spec, client, max_tokens=settings.max_tokens, recorder=recorder)


def _bedrock(spec: TierSpec, settings: BackendsConfig, recorder: Recorder, env: Mapping[str, str]) -> Backend:
    client = bedrock_client(base_url=spec.base_url, region=spec.region, key_env=spec.key_env, env=env,
                            service=f"tier {spec.name!r} (Amazon Bedrock)", where=f"[serving.tiers.{spec.name}]",
                            max_retries=settings.max_retries, timeout=settings.timeout_s,
                            stream_timeout=_stream_timeout(settings), open_telemetry=False)
    instrument_anthropic(client, recorder, tier=spec.name, provider=spec.provider)
    return BedrockBackend(spec, client, max_tokens=settings.max_tokens, recorder=recorder)


def _vertex(spec: TierSpec, settings: BackendsConfig, recorder: Recorder, env: Mapping[str, str]) -> Backend:
    client = vertex_client(base_url=spec.base_url, region=spec.region, project=spec.project, key_env=spec.key_env,
                           env=env, service=f"tier {spec.name!r} (Vertex AI)", where=f"[serving.tiers.{spec.name}]",
                           max_retries=settings.max_retries, timeout=settings.timeout_s,
                           stream_timeout=_stream_timeout(settings), open_telemetry=False)
    instrument_anthropic(client, recorder, tier=spec.name, provider=spec.provider)
    return VertexBackend(spec, client, max_tokens=settings.max_tokens, recorder=recorder)


def _openai(spec: TierSpec, settings: BackendsConfig, recorder: Recorder, env: Mapping[str, str]) -> Backend:
    default_key = settings.student_api_key_env if spec.is_student else OPENAI_KEY_ENV
    client = openai_client(base_url=spec.base_url, key_env=spec.key_env or default_key, env=env,
                           service=f"tier {spec.name!r} ({spec.provider})", max_retries=settings.max_retries,
                           timeout=settings.timeout_s, stream_timeout=_stream_timeout(settings))
    instrument_openai(client, recorder, provider=spec.provider, tier=spec.name)  # stream(); complete() with capture on
    return OpenAIChatBackend(spec, client, max_tokens=settings.max_tokens, recorder=recorder)


#: A tier's provider → the factory of its backend.
BACKEND_FACTORIES: dict[str, BackendFactory] = {
    contract.PROVIDER_ANTHROPIC: _anthropic,
    contract.PROVIDER_BEDROCK: _bedrock,
    contract.PROVIDER_VERTEX: _vertex,
    contract.PROVIDER_VLLM: _openai,
    contract.PROVIDER_OPENAI: _openai,
}


def build_backends(
    registry: ModelRegistry,
    settings: BackendsConfig,
    recorder: Recorder,
    *,
    tiers: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, Backend]:
    """One instrumented backend per tier of ``registry`` (or of ``tiers``)."""
    env = os.environ if env is None else env
    out: dict[str, Backend] = {}
    for name in tiers or registry.names:
        spec = registry.tier(name)
        try:
            factory = BACKEND_FACTORIES[spec.provider]
        except KeyError:
            raise RoutingError(f"tier {name!r}: no backend for provider {spec.provider!r} "
                               f"(have: {', '.join(BACKEND_FACTORIES)})") from None
        out[name] = factory(spec, settings, recorder, env)
    return out
