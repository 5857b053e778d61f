"""The OpenAI Chat Completions API on the gateway: ``POST /v1/chat/completions``.

An app on the ``openai`` SDK changes only its ``base_url`` (``OpenAI(base_url="http://127.0.0.1:8787/v1")``)
and gets the same router, semantic cache, escalation, telemetry, keys and limits as the Messages
API (:mod:`costline.serving.gateway.app`): the request is translated to the Messages shape (system and
developer messages become the system prompt, text parts become text), answered by the same
pipeline call, and the answer is written back as a ``chat.completion``:

* ``model`` is the model that answered (``costline-cache`` for a cache hit); the request's
  ``model`` is part of the cache scope only, as in the Messages API;
* ``max_completion_tokens`` (or the older ``max_tokens``) is optional: default
  :data:`DEFAULT_MAX_TOKENS`. The cache scope is that of the equivalent Messages request, so the
  same question with the same parameters is one cache entry whichever API asked it;
* ``usage``: ``prompt_tokens`` (cached tokens included, ``prompt_tokens_details.cached_tokens``),
  ``completion_tokens``, ``total_tokens`` — zeros for a cache hit;
* ``stream: true``: ``chat.completion.chunk`` server-sent events ending in ``data: [DONE]``, live
  or buffered exactly as the Messages API decides (``x-costline-stream-mode``); with
  ``stream_options.include_usage`` a last chunk with empty ``choices`` carries ``usage``. A model
  failing mid-answer ends the stream with an ``error`` event (the SDK raises ``APIError``);
* ``tools`` (function tools), ``tool_choice``, an assistant message's ``tool_calls`` and ``role: "tool"``
  results are carried in the Messages API's shapes (:mod:`costline.serving.translate`) and an answer that calls
  tools comes back as ``tool_calls`` with ``finish_reason: "tool_calls"`` (streamed: a ``tool_calls`` delta with
  the name, then one with the arguments); such a request is never cached;
* a user message's ``image_url`` parts become image blocks (:func:`~costline.serving.translate.image_block`), its
  ``file`` parts with inline ``file_data`` (a PDF or plain text) document blocks
  (:func:`~costline.serving.translate.file_block`);
* ``response_format`` ``json_schema`` / ``json_object`` (structured outputs, what the SDK's ``parse`` sends) reach
  every tier in its API's shape and every answer is checked against it (:mod:`costline.serving.structured`);
* ``web_search_options`` becomes Anthropic's web search server tool (``search_context_size`` low / medium / high:
  at most 1 / 5 / 10 searches, LiteLLM's mapping; ``user_location`` as the tool's): it runs on Anthropic tiers only
  (routed to an OpenAI-compatible tier, the request goes up a tier before any call there), is never cached, and the
  answer's web search citations come back as ``message.annotations`` of type ``url_citation`` (streamed: a delta of
  ``annotations`` after the text), each the place of a cited text block in ``content``; a turn Anthropic pauses
  (``pause_turn``) is sent back to go on, up to :data:`RESUME_PAUSED` times;
* a refusal (an Anthropic tier's ``stop_reason: "refusal"``, an OpenAI-compatible tier's ``content_filter``) comes
  back as OpenAI's API gives one: ``message.refusal`` holds what the tier wrote before it stopped (or
  :data:`DEFAULT_REFUSAL` when it wrote nothing) and ``message.content`` is null — the text in one place, so an app
  that reads ``content`` as the answer (or parses it as JSON) never takes a refusal for one, and the ``openai`` SDK's
  ``parse`` / structured outputs, which skip the content of a message with a ``refusal``, read it as one. Streamed,
  the text comes as ``delta.refusal`` chunks; a live stream's text left as ``content`` before the model's last event
  said it was a refusal, and is not sent again as a ``delta.refusal`` (a client that shows both, as the Vercel AI
  SDK does, would show it twice): its ``finish_reason`` says it was one (:func:`refusal_of`).
  ``finish_reason`` is ``"content_filter"``: the tier's filter stopped the answer (Anthropic's classifiers, OpenAI's
  or Azure's filter), as LiteLLM and the Vercel AI SDK map Anthropic's ``refusal`` too, so an app already checking
  it keeps working; the SDK's ``chat.completions.parse`` then raises ``ContentFilterFinishReasonError``, whose
  ``completion`` holds the message with its ``refusal``. Never sent up a tier nor cached; the request is recorded as
  no success (``x-costline-success: false``, as on the Messages API). Sent back in ``messages`` (the ``openai``
  SDK's ``messages.append(choice.message)``: ``content`` null, ``refusal`` its text; or a ``refusal`` content part),
  the assistant message is that text (:func:`~costline.serving.translate.turns_from_openai`);
* errors in OpenAI's format (``{"error": {"message", "type", "param", "code"}}``); every tier
  failing answers 429, 503 (overloaded) or 500; ``frequency_penalty``, ``presence_penalty``, ``seed`` and
  ``logit_bias`` reach OpenAI-compatible tiers only (:data:`CHAT_SAMPLING_FIELDS`); other parts (audio, a file by ``file_id``) and the deprecated
  ``functions`` are refused (400);
* ``reasoning_effort`` reaches the Anthropic tiers as ``output_config.effort`` and is part of the cache scope as that
  effort; ``verbosity`` is answered at OpenAI's default (``medium``) only, since no tier's API has a verbosity
  control (``low`` / ``high``: a 400 naming it); the fields of :data:`CHAT_IGNORED_FIELDS` are left out (they do not
  change the answer); any field not in :data:`CHAT_FIELDS` is refused as OpenAI refuses it (400 "Unrecognized request
  argument supplied"); a field sent as null is unset (``max_completion_tokens: null`` leaves ``max_tokens`` in force);
* an empty message before the last (valid for OpenAI, refused by Anthropic's API) is left out
  (:func:`~costline.serving.translate.without_empty_turns`); a last user message of only an image or a file (the
  instruction in the system message) is answered, routed on the system prompt and never cached (no question text);
* ``Cache-Control: no-cache`` / ``no-store`` and ``[serving.cache] bypass_sampled`` bypass the semantic cache as on
  the Messages API (:func:`~costline.serving.gateway.app.cache_bypass_of`; ``x-costline-cache-bypass``); the cache
  scope is the canonical one of :mod:`costline.serving.cache.key` (``temperature: 1`` is the default, a
  ``frequency_penalty`` of 0 is none...);
* every answer, errors included, carries the request id as ``x-request-id`` (the SDK's ``_request_id`` /
  ``APIStatusError.request_id``) beside ``x-costline-request-id``.
"""

from __future__ import annotations

import json
import logging
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from costline.serving.gateway._http import HttpRequest, HttpResponse
from costline.serving.backends import Prompt
from costline.serving.cache.key import scope_of_body
from costline.serving.gateway.app import (CACHE_MODEL, MAX_JSON_DEPTH, STREAM_MODE_HEADER, Gateway, ReturnedId, _headers,
                                      failure_message, failure_status, gave_no_answer, json_depth, open_live,
                                      with_request_id)
from costline.serving.gateway.messages_api import question_text, sampling_of, textless_query, textless_turn
from costline.serving.embeddings import embeddings_problem
from costline.serving.structured import from_chat
from costline.serving.translate import (MAX_TOOLS, block_text, loads_json, openai_tool_calls, tools_from_openai,
                                       turns_from_openai, uses_tools)
from costline.serving.pipeline import Answer, LiveAnswer, declined

__all__ = ["CHAT_FIELDS", "CHAT_IGNORED_FIELDS", "CHAT_SAMPLING_FIELDS", "ChatCompletions", "DEFAULT_MAX_TOKENS",
           "DEFAULT_REFUSAL", "Embeddings", "OpenAIRoute", "RESUME_PAUSED", "SEARCH_CONTEXT_USES",
           "arguments_too_deep_message", "chat_completion", "chat_sampling_of", "citation_spans", "end_user_of",
           "json_arguments_too_deep", "model_of", "open_openai_live", "openai_error", "read_chat_request",
           "refusal_of", "search_tool", "settled_response", "token_counts", "unrecognized", "unrecognized_error",
           "url_citations", "web_search_tool"]

log = logging.getLogger(__name__)

#: ``max_completion_tokens`` of a request that sets none (OpenAI's is optional, Anthropic's is not).
DEFAULT_MAX_TOKENS = 1024
#: How many times the OpenAI routes send an Anthropic tier's paused turn (a long web search turn: ``pause_turn``)
#: back to go on: their clients cannot (:attr:`~costline.serving.backends.Prompt.resume_paused`). A turn still
#: paused after that ends as cut short (``finish_reason: "length"``; the Responses API's ``incomplete``).
RESUME_PAUSED = 8
#: What a refusal says when the model declined without a word (an Anthropic ``refusal`` with no text): OpenAI's
#: ``refusal`` is a message to show the user, never empty (:func:`refusal_of`).
DEFAULT_REFUSAL = "The model declined to answer this request."

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 411: "invalid_request_error", 413: "invalid_request_error",
                415: "invalid_request_error", 431: "invalid_request_error", 429: "rate_limit_error",
                500: "server_error", 503: "server_error"}
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "stop": "stop", "max_tokens": "length", "length": "length",
           "pause_turn": "length",
           "tool_use": "tool_calls", "tool_calls": "tool_calls", "refusal": "content_filter",
           "function_call": "tool_calls", "content_filter": "content_filter", "model_context_window_exceeded": "length",
           "eos_token": "stop", "eos": "stop", "model_length": "length"}


def openai_error(status: int, message: str, headers: Mapping[str, str] | None = None, *,
                 param: str | None = None, code: str | None = None) -> HttpResponse:
    """An error answer in OpenAI's format (Anthropic's 529 becomes 503: OpenAI clients know that one), with the
    request id headers (``x-request-id``: the SDK's ``APIStatusError.request_id``; a fresh id when it had none)."""
    status = 503 if status == 529 else status
    headers = dict(headers or {})
    with_request_id(headers)
    # a 4xx the table does not name (421: a Host the gateway is not known by) is still the caller's to fix
    kind = _ERROR_TYPES.get(status, "invalid_request_error" if 400 <= status < 500 else "server_error")
    return HttpResponse(status, {"error": {"message": message, "type": kind, "param": param, "code": code}},
                        headers=headers)


class OpenAIRoute(ABC):
    """A route of an OpenAI API on a :class:`~costline.serving.gateway.app.Gateway`: the checks every API shares
    (key, tenant, a JSON object body), answered in OpenAI's format, then :meth:`_answer`. ``wall`` is the clock
    of the answers' timestamps."""

    def __init__(self, gateway: Gateway, *, wall: Callable[[], float]) -> None:
        self.gateway = gateway
        self._wall = wall

    def __call__(self, req: HttpRequest) -> HttpResponse:
        entered = self.gateway._entry(req, openai_error)
        if isinstance(entered, HttpResponse):
            return entered
        admitted, body = entered
        response = self._answer(req, body, admitted.tenant)
        response.headers.update(admitted.headers)
        return response

    @abstractmethod
    def _answer(self, req: HttpRequest, body: Mapping[str, Any], tenant: str | None) -> HttpResponse:
        """The answer to an admitted request's JSON ``body`` (``tenant``: the key's, or None in open mode)."""


class Embeddings(OpenAIRoute):
    """``POST /v1/embeddings``: forwarded as it came to ``[serving.backends] embeddings_base_url``
    (:mod:`costline.serving.embeddings`); the server's answer, or its error, comes back as it said it."""

    def _answer(self, req: HttpRequest, body: Mapping[str, Any], tenant: str | None) -> HttpResponse:
        import openai

        upstream = self.gateway.pipeline.embeddings
        if upstream is None:
            return openai_error(404, "embeddings are not served by this gateway: set [serving.backends] "
                                     "embeddings_base_url to the OpenAI-compatible server that embeds for your app, "
                                     "or point your embeddings client there directly")
        problem = embeddings_problem(body)
        if problem is not None:
            return openai_error(400, problem[1], param=problem[0])
        try:
            status, doc = upstream.embed(body, tenant or self.gateway.config.default_tenant)
        except openai.APIError as exc:  # not reached, timed out
            log.warning("costline gateway: the embeddings server failed: %s", exc)
            return openai_error(502, f"the embeddings server could not answer: {type(exc).__name__}")
        if not isinstance(doc, dict):  # not JSON, too large, or refused the gateway's own key: the operator's to fix
            return openai_error(502 if status < 400 or status in (401, 403) else status,
                                "the embeddings server did not answer usably (not JSON, over "
                                "serving.embeddings.MAX_ANSWER_BYTES, or it refused the gateway's key: "
                                "[serving.backends] embeddings_api_key_env)")
        return HttpResponse(status, doc)


class ChatCompletions(OpenAIRoute):
    """``POST /v1/chat/completions`` on a :class:`~costline.serving.gateway.app.Gateway`."""

    def _answer(self, req: HttpRequest, body: Mapping[str, Any], tenant: str | None) -> HttpResponse:
        read = read_chat_request(body, textless=True)
        if isinstance(read, HttpResponse):
            return read
        query, prompt, scope = read
        stream = body.get("stream") is True
        options = body.get("stream_options") if isinstance(body.get("stream_options"), Mapping) else {}
        include_usage = stream and options.get("include_usage") is True
        meta = body.get("metadata") if isinstance(body.get("metadata"), Mapping) else {}
        result = self.gateway.ask(req, query=query, prompt=prompt, cache_scope=scope or "", stream=stream,
                                  metadata=meta, tenant=tenant, cached=scope is not None, sampling=body,
                                  returned=ReturnedId(_id_of))  # every answer's id is made: chatcmpl-costline-<id>
        created = int(self._wall())
        if isinstance(result, LiveAnswer):
            return self._live(result, created, include_usage)
        return settled_response(result, stream, lambda: _completion(result, created), lambda: _chunks(
            model_of(result), _id_of(result.request_id), created, [result.text], lambda: result, include_usage,
            _calls(result), refused=refusal_of(result) is not None))

    def _live(self, live: LiveAnswer, created: int, include_usage: bool) -> HttpResponse:
        opened = open_openai_live(live)
        if isinstance(opened, HttpResponse):
            return opened
        model, texts, headers = opened

        def settle() -> Answer | None:
            return None if live.error is not None else live.result

        # settled before its first piece (escalated to a tier that declined): known for a refusal from the start
        early = settle() if live.result is not None else None
        refused = early is not None and refusal_of(early) is not None

        def body() -> Any:
            try:
                yield from _chunks(model, _id_of(live.request_id), created, texts, settle, include_usage,
                                   refused=refused)
            finally:
                live.close()

        return HttpResponse(200, headers=headers, content_type="text/event-stream", stream=body())


def read_chat_request(body: Mapping[str, Any], *, textless: bool = False
                      ) -> tuple[str, Prompt, str | None] | HttpResponse:
    """A Chat Completions request body checked before any model is called: ``(query, prompt, cache scope)`` (the
    scope of the equivalent Messages request: one cache entry whichever API asked), or the 400 naming the parameter.

    A last user message with no text but an image or a file (the instruction in the system message) is refused,
    unless ``textless``: then the query is what it is routed on (the system prompt's text) and the scope is None —
    no question text to match on, so it is never cached. (A batch's requests are read without ``textless``: the
    batch runner looks every request up in the cache.)"""
    parsed = _to_messages(body)
    if isinstance(parsed, HttpResponse):
        return parsed
    system, messages, query, max_tokens, sampling, tools, tool_choice = parsed
    if not query.strip() and not textless:
        return openai_error(400, "messages: the last message must be a user message with text", param="messages")
    fmt = from_chat(body.get("response_format"))
    if isinstance(fmt, tuple):
        return openai_error(400, fmt[1], param=fmt[0])
    effort = dict(sampling).get("effort")  # as the tiers get it: "minimal" is "low" there, so one scope
    equivalent = {**{k: body[k] for k in ("model", "temperature", "top_p", *CHAT_SAMPLING_FIELDS)
                     if body.get(k) is not None},
                  "system": system, "messages": messages, "max_tokens": max_tokens,
                  "output_format": fmt.scope() if fmt is not None else None,
                  "output_config": {"effort": effort} if effort is not None else None}
    stop = body.get("stop")
    if stop is not None:
        equivalent["stop_sequences"] = [stop] if isinstance(stop, str) else stop
    end_user = end_user_of(body)
    if isinstance(end_user, HttpResponse):
        return end_user
    prompt = Prompt(tuple(messages), system, max_tokens, sampling, tools, tool_choice, end_user, output_format=fmt,
                    resume_paused=RESUME_PAUSED)
    if not query.strip():  # only an image or a file: routed on the system prompt, never cached
        return textless_query(system), prompt, None
    return query, prompt, scope_of_body(equivalent)


def chat_completion(result: Answer, created: int) -> dict[str, Any]:
    """The ``chat.completion`` object of a settled answer."""
    return _completion(result, created)


def _to_messages(body: Mapping[str, Any]) -> tuple[Any, list[dict[str, Any]], str, int, Any, Any, Any] | HttpResponse:
    """(system, Messages-shaped turns, the question, max_tokens, sampling, tools, tool_choice) of a chat request
    (tools and tool turns in the Messages API's shapes: :mod:`costline.serving.translate`), or a 400."""
    unknown = unrecognized(body, CHAT_FIELDS | CHAT_IGNORED_FIELDS)
    if unknown is not None:
        return unrecognized_error(unknown)
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw or not all(isinstance(m, Mapping) for m in raw):
        return openai_error(400, "messages: at least one message is required", param="messages")
    if body.get("functions") or body.get("function_call"):
        return openai_error(400, "functions / function_call (deprecated by OpenAI) are not carried by the costline "
                                 "gateway: send them as tools / tool_choice", param="functions")
    tooled = tools_from_openai(body.get("tools"), body.get("tool_choice"))
    if isinstance(tooled[0], str):
        return openai_error(400, str(tooled[1]), param=str(tooled[0]))
    tools, tool_choice = tooled
    if body.get("web_search_options") is not None:  # Anthropic's web search server tool (Anthropic tiers only)
        search = web_search_tool(body["web_search_options"])
        if isinstance(search, tuple):
            return openai_error(400, search[1], param=search[0])
        if any(t.get("name") == "web_search" for t in tools):
            return openai_error(400, "tools: a function named web_search cannot go with web_search_options (the "
                                     "search tool has that name)", param="tools")
        if len(tools) >= MAX_TOOLS:
            return openai_error(400, f"tools: at most {MAX_TOOLS - 1} functions with web_search_options (the "
                                     "search is a tool too)", param="tools")
        tools = [*tools, search]
    cannot = _cannot_carry(body)
    if cannot is not None:
        return openai_error(400, cannot[1], param=cannot[0])
    # null is unset (what a client serialising its unset fields sends): max_tokens then stands
    limit_field = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = body.get(limit_field)
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return openai_error(400, f"{limit_field}: a whole number >= 1", param=limit_field)
    n = body.get("n")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n != 1):
        return openai_error(400, "n: only 1 choice is supported", param="n")
    if body.get("stream") is not None and not isinstance(body.get("stream"), bool):
        return openai_error(400, "stream: true or false", param="stream")
    stop = body.get("stop")
    if stop is not None and not (isinstance(stop, str) or isinstance(stop, list)):
        return openai_error(400, "stop: a string or a list of strings", param="stop")
    effort = body.get("reasoning_effort")
    if effort is not None and (not isinstance(effort, str) or effort not in EFFORTS):
        return openai_error(400, f"reasoning_effort: one of {', '.join(EFFORTS)}", param="reasoning_effort")
    sampling = sampling_of({"temperature": body.get("temperature"), "top_p": body.get("top_p"),
                            "stop_sequences": [stop] if isinstance(stop, str) else stop,
                            "output_config": {"effort": EFFORTS[effort]} if effort else None}, max_temperature=2.0)
    if isinstance(sampling, str):
        param = sampling.split(":")[0]
        return openai_error(400, sampling.replace("stop_sequences", "stop"), param="stop" if param == "stop_sequences"
                            else param)
    chat_only = chat_sampling_of(body)
    if isinstance(chat_only, tuple) and chat_only and isinstance(chat_only[0], str):
        return openai_error(400, chat_only[1], param=chat_only[0])
    sampling = (*sampling, *chat_only)
    deep = _deep_arguments(raw)
    if deep is not None:
        return openai_error(400, deep[1], param=deep[0])
    parsed = turns_from_openai(raw, _text)
    if isinstance(parsed[0], str):
        return openai_error(400, str(parsed[1]), param=str(parsed[0]))
    system_parts, turns = parsed
    tool_choice = tool_choice if tools else None
    if tools and body.get("parallel_tool_calls") is False:  # one call a turn: the Messages API's way to say it
        tool_choice = {**(tool_choice or {"type": "auto"}), "disable_parallel_tool_use": True}
        if tool_choice["type"] == "none":
            tool_choice.pop("disable_parallel_tool_use")
    # a last user message of only an image or a file is asked (query ""): the caller decides (read_chat_request)
    if uses_tools(turns, tools):  # a tool loop: its last turn may be the tools' results
        query = question_text(turns)
        if not turns or turns[-1]["role"] != "user" or not (query.strip() or textless_turn(turns[-1]["content"])):
            return openai_error(400, "messages: the last message must be a user message or a tool result",
                                param="messages")
    else:
        query = block_text(turns[-1]["content"], "") if turns else ""
        if not turns or turns[-1]["role"] != "user" or not (query.strip() or textless_turn(turns[-1]["content"])):
            return openai_error(400, "messages: the last message must be a user message with text", param="messages")
    return (("\n\n".join(system_parts) or None), turns, query, max_tokens, sampling, tuple(tools),
            tool_choice)


def json_arguments_too_deep(raw: Any) -> bool:
    """True for a function call's ``arguments`` (JSON in a string) that nest objects and arrays deeper than the body
    may (:data:`~costline.serving.gateway.app.MAX_JSON_DEPTH`): the body's depth check never saw inside the string,
    and what reads the call after it (the cache's scope, the SDKs) would go as deep. JSON that is not JSON is not
    too deep (the caller says what is wrong with it); JSON the parser cannot nest as deep (RecursionError) is."""
    if not isinstance(raw, (str, bytes)) or not raw:
        return False
    try:
        value = loads_json(raw)
    except RecursionError:
        return True
    except ValueError:
        return False
    return json_depth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH


def arguments_too_deep_message(field: str) -> str:
    return (f"{field}: the arguments nest objects and arrays more than {MAX_JSON_DEPTH} levels deep (the limit of "
            "the whole body): flatten them")


def _deep_arguments(raw: list[Any]) -> tuple[str, str] | None:
    """(param, message) for the first assistant message's function call whose ``arguments`` are
    :func:`json_arguments_too_deep`, else None."""
    for i, m in enumerate(raw):
        calls = m.get("tool_calls") if m.get("role") == "assistant" else None
        for j, call in enumerate(calls if isinstance(calls, list) else ()):
            fn = call.get("function") if isinstance(call, Mapping) else None
            if isinstance(fn, Mapping) and json_arguments_too_deep(fn.get("arguments")):
                field = f"messages[{i}].tool_calls[{j}].function.arguments"
                return field, arguments_too_deep_message(field)
    return None


#: Chat Completions generation parameters the Messages API has no field for: carried to OpenAI-compatible tiers
#: (vLLM takes them all), not sent to Anthropic tiers (whose API would refuse the request), part of the cache scope.
CHAT_SAMPLING_FIELDS = ("frequency_penalty", "presence_penalty", "seed", "logit_bias")


def chat_sampling_of(body: Mapping[str, Any]) -> tuple[tuple[str, Any], ...] | tuple[str, str]:
    """The request's :data:`CHAT_SAMPLING_FIELDS` that are set, as ``((name, value), ...)``, or ``(param, what is
    wrong)`` for a value the API would refuse."""
    out: list[tuple[str, Any]] = []
    for name in ("frequency_penalty", "presence_penalty"):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not -2 <= value <= 2:
            return name, f"{name}: a number from -2 to 2"
        if value:
            out.append((name, float(value)))
    seed = body.get("seed")
    if seed is not None:
        if not isinstance(seed, int) or isinstance(seed, bool) or not -2 ** 63 <= seed < 2 ** 63:
            return "seed", "seed: a whole number (64-bit)"
        out.append(("seed", seed))
    bias = body.get("logit_bias")
    if bias is not None:
        if not isinstance(bias, Mapping) or len(bias) > 300 or not all(
                isinstance(k, str) and k.isdigit() and isinstance(v, (int, float)) and not isinstance(v, bool)
                and -100 <= v <= 100 for k, v in bias.items()):
            return "logit_bias", "logit_bias: an object of up to 300 token ids (as strings) to numbers from -100 to 100"
        if bias:
            out.append(("logit_bias", tuple(sorted((k, float(v)) for k, v in bias.items()))))
    return tuple(out)


#: ``reasoning_effort`` (Chat Completions) and ``reasoning.effort`` (Responses) → the Messages API's
#: ``output_config.effort`` (Anthropic tiers; the student ignores it).
EFFORTS = {"none": "low", "minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh",
            "max": "max"}

#: The Chat Completions request fields (those of the ``openai`` SDK's ``chat.completions.create``) the gateway
#: reads: each carried to the tiers, part of the cache scope, or refused with a 400 when it asks for what the gateway
#: cannot give (:func:`_cannot_carry`). Any other field is refused as OpenAI refuses it ("Unrecognized request
#: argument supplied"), never dropped.
CHAT_FIELDS = frozenset({
    "messages", "model", "stream", "stream_options", "max_completion_tokens", "max_tokens", "temperature", "top_p",
    "stop", "reasoning_effort", "response_format", "tools", "tool_choice", "parallel_tool_calls", "web_search_options",
    "frequency_penalty", "presence_penalty", "seed", "logit_bias", "safety_identifier", "user", "metadata", "n",
    "logprobs", "top_logprobs", "audio", "modalities", "functions", "function_call", "verbosity", "moderation"})
#: Chat Completions fields accepted and left out because they do not change the answer, only how OpenAI itself
#: would serve or keep it: ``store`` (OpenAI keeping the completion for its evals and distillation: costline records
#: every call itself), ``service_tier`` (OpenAI's processing tier: latency and price), ``prompt_cache_key``,
#: ``prompt_cache_retention`` and ``prompt_cache_options`` (OpenAI's prompt-cache hints: cost and latency),
#: ``prediction`` (Predicted Outputs: a latency hint, the answer is the model's either way).
CHAT_IGNORED_FIELDS = frozenset({"store", "service_tier", "prompt_cache_key", "prompt_cache_retention",
                                 "prompt_cache_options", "prediction"})
#: ``verbosity`` of a request the gateway can answer: OpenAI's default (or null: unset). No tier's API has a field
#: for another (Anthropic's has no verbosity control), so ``low`` / ``high`` are refused.
_DEFAULT_VERBOSITY = (None, "medium")


def unrecognized(body: Mapping[str, Any], known: frozenset[str]) -> str | None:
    """The first (sorted) top-level field of ``body`` not in ``known``, or None."""
    unknown = sorted(str(k) for k in body if k not in known)
    return unknown[0] if unknown else None


def unrecognized_error(field: str) -> HttpResponse:
    """OpenAI's 400 for a request field it does not know."""
    return openai_error(400, f"Unrecognized request argument supplied: {field[:80]}", param=field[:80])


def _cannot_carry(body: Mapping[str, Any]) -> tuple[str, str] | None:
    """(param, message) for a request field whose answer the gateway cannot give (one choice, no log
    probabilities, text out, OpenAI's default verbosity, no moderation), or None. Ignoring them would hand the app
    something else than it asked for."""
    if body.get("logprobs") or body.get("top_logprobs"):
        return "logprobs", "log probabilities are not supported by the costline gateway"
    modalities = body.get("modalities")
    if body.get("audio") is not None or (modalities is not None and modalities != ["text"]):
        return "modalities", "only text output is supported by the costline gateway"
    if body.get("verbosity") not in _DEFAULT_VERBOSITY:
        return "verbosity", ("verbosity: only medium (OpenAI's default) is supported by the costline gateway: no tier "
                             "it routes to has a verbosity control (ask for a shorter or longer answer in the prompt)")
    if body.get("moderation") is not None:
        return "moderation", "moderation is not run by the costline gateway"
    return None


#: ``web_search_options.search_context_size`` as the web search tool's ``max_uses`` (LiteLLM's mapping, so an app
#: moving from its proxy searches as often); OpenAI's default size is "medium".
SEARCH_CONTEXT_USES = {"low": 1, "medium": 5, "high": 10}
_LOCATION_FIELDS = ("city", "region", "country", "timezone")
_WEB_SEARCH_TYPE = "web_search_20250305"


def web_search_tool(options: Any) -> dict[str, Any] | tuple[str, str]:
    """Chat Completions' ``web_search_options`` as Anthropic's web search server tool (:func:`search_tool`), or
    ``(param, problem)``."""
    param = "web_search_options"
    if not isinstance(options, Mapping):
        return param, "web_search_options: an object ({} searches with the defaults)"
    unknown = sorted(str(k) for k in options if k not in ("search_context_size", "user_location"))
    if unknown:
        return param, f"web_search_options.{unknown[0][:40]}: not a field (search_context_size, user_location)"
    location = options.get("user_location")
    approx = location.get("approximate") if isinstance(location, Mapping) else None
    if location is not None and (not isinstance(location, Mapping) or location.get("type") != "approximate"
                                 or not isinstance(approx, Mapping)):
        return param, ("web_search_options.user_location: {\"type\": \"approximate\", \"approximate\": "
                       "{\"city\", \"region\", \"country\", \"timezone\"}}")
    tool = search_tool(options.get("search_context_size"), approx, "web_search_options.search_context_size",
                       "web_search_options.user_location.approximate")
    return (param, tool) if isinstance(tool, str) else tool


def search_tool(size: Any, place: Mapping[str, Any] | None, size_field: str, place_field: str,
                allowed_domains: Any = None, domains_field: str = "") -> dict[str, Any] | str:
    """Anthropic's web search server tool (``web_search_20250305``) for an OpenAI API's search options, or what is
    wrong with them (naming ``size_field`` / ``place_field`` / ``domains_field``): ``max_uses`` from the search
    context ``size`` (:data:`SEARCH_CONTEXT_USES`, None: medium), ``user_location`` from ``place`` (city, region,
    country, timezone; ``type`` aside), ``allowed_domains`` as they came (up to 100 host names)."""
    size = "medium" if size is None else size
    if not isinstance(size, str) or size not in SEARCH_CONTEXT_USES:
        return f"{size_field}: low, medium or high"
    tool: dict[str, Any] = {"type": _WEB_SEARCH_TYPE, "name": "web_search", "max_uses": SEARCH_CONTEXT_USES[size]}
    if place is not None:
        located: dict[str, Any] = {"type": "approximate"}
        for key, value in place.items():
            where = f"{place_field}.{str(key)[:40]}"
            if key == "type":
                continue
            if key not in _LOCATION_FIELDS:
                return f"{where}: not a field (city, region, country, timezone)"
            if value is None:
                continue
            if not isinstance(value, str) or not 1 <= len(value) <= 255:
                return f"{where}: a string of 1-255 characters"
            if key == "country" and not (len(value) == 2 and value.isascii() and value.isalpha()):
                return f"{where}: a two-letter ISO 3166-1 country code, such as GB"
            located[key] = value
        tool["user_location"] = located
    if allowed_domains is not None:
        if not isinstance(allowed_domains, list) or len(allowed_domains) > 100 or not all(
                isinstance(d, str) and 1 <= len(d) <= 253 and d.isascii() and not any(c.isspace() for c in d)
                for d in allowed_domains):
            return f"{domains_field}: a list of up to 100 domain names"
        if allowed_domains:
            tool["allowed_domains"] = list(allowed_domains)
    return tool


def citation_spans(result: Answer) -> list[tuple[int, int, str, str]]:
    """(start, end, url, title) of each web search citation of an answer: the cited text block's place in its text
    (the answer's text blocks joined), the cited page's URL and title (its URL when it has none), each once; none
    for a cache hit or an answer without them."""
    reply = result.reply
    if reply is None or result.cached:
        return []
    out: list[tuple[int, int, str, str]] = []
    at, end = 0, len(result.text)
    for block in reply.content:
        text = block.get("text") if block.get("type") == "text" else None
        if not isinstance(text, str):
            continue
        start, stop = min(at, end), min(at + len(text), end)
        for cited in block.get("citations") or ():
            url = cited.get("url") if isinstance(cited, Mapping) else None
            if not isinstance(url, str) or cited.get("type") != "web_search_result_location":
                continue
            title = cited.get("title")
            span = (start, stop, url, title if isinstance(title, str) else url)
            if span not in out:
                out.append(span)
        at += len(text)
    return out


def url_citations(result: Answer) -> list[dict[str, Any]]:
    """The web search citations of an answer (:func:`citation_spans`) as Chat Completions' ``url_citation``
    annotations."""
    return [{"type": "url_citation", "url_citation": {"start_index": start, "end_index": stop, "url": url,
                                                      "title": title}}
            for start, stop, url, title in citation_spans(result)]


def _text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, Mapping) and p.get("type") == "text"
                                         and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    return None


def _id_of(request_id: str) -> str:
    return f"chatcmpl-costline-{request_id or uuid.uuid4().hex}"


def end_user_of(body: Mapping[str, Any]) -> tuple[tuple[str, Any], ...] | HttpResponse:
    """The app's end-user id (``safety_identifier``, or the older ``user``) as what an Anthropic tier takes for it
    (``metadata.user_id``: ``Prompt.anthropic_extra``), or a 400 for one the API would refuse."""
    for param in ("safety_identifier", "user"):
        value = body.get(param)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > 256:
            return openai_error(400, f"{param}: a string of up to 256 characters", param=param)
        return (("metadata", {"user_id": value}),)
    return ()


def _every_tier_failed(result: Answer) -> HttpResponse:
    """OpenAI's error for an answer whose every tier failed (the gateway retried already: clients should not)."""
    return openai_error(failure_status(result), failure_message(result), {**_headers(result), "x-should-retry": "false"})


def settled_response(result: Answer, stream: bool, whole: Callable[[], Any],
                     events: Callable[[], Iterable[bytes]]) -> HttpResponse:
    """An OpenAI route's answer once the pipeline settled it: the error when every tier failed, else the ``whole``
    body, or with ``stream`` its ``events`` (``x-costline-stream-mode``: live for a cache hit, else buffered)."""
    if gave_no_answer(result):
        return _every_tier_failed(result)
    headers = _headers(result)
    if not stream:
        return HttpResponse(200, whole(), headers=headers)
    headers[STREAM_MODE_HEADER] = "live" if result.cached else "buffered"
    return HttpResponse(200, headers=headers, content_type="text/event-stream", stream=events())


def open_openai_live(live: LiveAnswer) -> tuple[str, Iterator[str], dict[str, str]] | HttpResponse:
    """:func:`~costline.serving.gateway.app.open_live` for an OpenAI route: (the answering model, the text pieces,
    the headers), or the error answer in OpenAI's format when every tier failed before a first piece."""
    opened = open_live(live)
    if isinstance(opened, Answer):
        return _every_tier_failed(opened)
    first, pieces, headers = opened

    def texts() -> Iterator[str]:
        piece = first
        while piece is not None:
            yield piece
            piece = next(pieces, None)

    return (CACHE_MODEL if live.cached else (live.model or "unknown")), texts(), headers


def model_of(result: Answer) -> str:
    """The model an answer names: the one that answered, ``costline-cache`` for a cache hit."""
    return CACHE_MODEL if result.cached or result.reply is None else result.reply.model


def token_counts(result: Answer) -> tuple[int, int, int]:
    """(input tokens with cached ones, output tokens, cached input tokens) of an answer: zeros for a cache hit."""
    reply = result.reply
    if result.cached or reply is None:
        return 0, 0, 0
    return reply.input_tokens, reply.output_tokens, reply.cache_read_tokens


def _usage(result: Answer) -> dict[str, Any]:
    prompt, completion, cached = token_counts(result)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


def _finish(result: Answer) -> str:
    if result.cached or result.reply is None:
        return "stop"
    return _FINISH.get(result.reply.stop_reason or "", "stop")


def refusal_of(result: Answer) -> str | None:
    """The refusal of an answer the model declined to give (:func:`~costline.serving.pipeline.declined`: Anthropic's
    ``refusal``, an OpenAI-compatible server's ``content_filter``): what the tier wrote, or :data:`DEFAULT_REFUSAL`
    when it wrote nothing; None for any other answer (a cache hit never is one: refusals are never cached)."""
    reply = result.reply
    if result.cached or reply is None or declined(reply) is None:
        return None
    return result.text if result.text.strip() else DEFAULT_REFUSAL


def _calls(result: Answer) -> list[dict[str, Any]]:
    """The answer's tool calls as a chat message's ``tool_calls`` (none for a text answer or a cache hit)."""
    reply = result.reply
    return openai_tool_calls(reply.tool_calls) if reply is not None and not result.cached else []


def _completion(result: Answer, created: int) -> dict[str, Any]:
    refusal = refusal_of(result)
    message: dict[str, Any] = {"role": "assistant", "content": result.text if refusal is None else None,
                               "refusal": refusal}
    calls = _calls(result)
    if calls:
        message.update(content=(result.text or None) if refusal is None else None, tool_calls=calls)
    cited = url_citations(result)
    if cited:
        message["annotations"] = cited
    return {"id": _id_of(result.request_id), "object": "chat.completion", "created": created,
            "model": model_of(result),
            "choices": [{"index": 0, "message": message, "finish_reason": _finish(result), "logprobs": None}],
            "usage": _usage(result)}


def _chunks(model: str, chat_id: str, created: int, texts: Any, settle: Callable[[], Answer | None],
            include_usage: bool, calls: list[dict[str, Any]] | None = None, *, refused: bool = False) -> Any:
    """The chunk events: role, a content delta per piece (a ``refusal`` delta per piece when the answer is known to
    be ``refused`` before it streams), a ``tool_calls`` delta per call (its name, then its arguments), the finish
    reason, usage, ``[DONE]``. A refusal without text gets one ``refusal`` delta of :func:`refusal_of` before its
    finish reason; one whose text already went out as content (a live stream: the model's last event said it
    declined) gets none — the text is never sent twice (clients such as the Vercel AI SDK append both deltas to the
    text), and ``finish_reason: "content_filter"`` says it was declined."""

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        doc = {"id": chat_id, "object": "chat.completion.chunk", "created": created, "model": model,
               "choices": choices, **({"usage": None} if include_usage else {}), **extra}
        return b"data: " + json.dumps(doc).encode() + b"\n\n"

    field = "refusal" if refused else "content"
    yield chunk([{"index": 0, "delta": {"role": "assistant", field: ""}, "finish_reason": None, "logprobs": None}])
    said = False  # some text went out (as content, or as a refusal)
    try:
        for text in texts:
            if text:
                yield chunk([{"index": 0, "delta": {field: text}, "finish_reason": None, "logprobs": None}])
                said = True
    except Exception as exc:  # not a model error (those end the pieces): still end the stream in form
        log.exception("costline gateway: a live chat completion failed mid-stream")
        yield _error_event(f"costline gateway failure mid-stream: {type(exc).__name__}")
        return
    for i, call in enumerate(calls or []):
        head = {"index": i, "id": call["id"], "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""}}
        yield chunk([{"index": 0, "delta": {"tool_calls": [head]}, "finish_reason": None, "logprobs": None}])
        yield chunk([{"index": 0, "delta": {"tool_calls": [{"index": i, "function": {
            "arguments": call["function"]["arguments"]}}]}, "finish_reason": None, "logprobs": None}])
    result = settle()
    if result is None:
        yield _error_event("the model failed mid-answer: the text sent so far stands")
        return
    refusal = refusal_of(result)
    if refusal is not None and not said:  # no text at all (text sent as content is not sent again as a refusal)
        yield chunk([{"index": 0, "delta": {"refusal": refusal}, "finish_reason": None, "logprobs": None}])
    cited = url_citations(result)
    if cited:  # as OpenAI streams a search's citations: on a delta of their own once the text is out
        yield chunk([{"index": 0, "delta": {"annotations": cited}, "finish_reason": None, "logprobs": None}])
    yield chunk([{"index": 0, "delta": {}, "finish_reason": _finish(result), "logprobs": None}])
    if include_usage:
        yield chunk([], usage=_usage(result))
    yield b"data: [DONE]\n\n"


def _error_event(message: str) -> bytes:
    return b"data: " + json.dumps({"error": {"message": message, "type": "server_error", "param": None,
                                             "code": None}}).encode() + b"\n\n"
