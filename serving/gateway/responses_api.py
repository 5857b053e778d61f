"""The OpenAI Responses API on the gateway: ``POST /v1/responses``.

OpenAI's newer API (what the ``openai`` SDK's ``client.responses.create`` and the OpenAI Agents SDK's default
model call) on the same router, semantic cache, escalation, telemetry, keys and limits as the Messages API and
the Chat Completions API: the request is translated to the Messages shape and answered by the same pipeline call.

* ``input``: a string, or a list of items — messages (``role`` user / assistant / system / developer, ``content``
  a string or ``input_text`` / ``output_text`` / ``input_image`` parts), ``function_call`` and
  ``function_call_output`` items (a tool loop: :mod:`costline.serving.translate`); ``reasoning`` and
  ``web_search_call`` items are skipped (another model's reasoning, an earlier answer's search: not input a tier
  can take). ``instructions`` and system / developer
  messages become the system prompt;
* ``max_output_tokens`` (default :data:`~costline.serving.gateway.openai_api.DEFAULT_MAX_TOKENS`), ``temperature``,
  ``top_p``, ``reasoning.effort`` (the Anthropic tiers' ``output_config.effort``), function ``tools``,
  ``tool_choice``, ``parallel_tool_calls``, ``text.format`` (structured outputs: ``json_schema`` / ``json_object``,
  checked on every answer: :mod:`costline.serving.structured`);
* the answer: ``output`` holds a ``message`` item (``output_text``) and a ``function_call`` item per tool call;
  ``status`` ``incomplete`` (``incomplete_details.reason: max_output_tokens``) when the model ran out of tokens;
  a refusal (:func:`~costline.serving.gateway.openai_api.refusal_of`: an Anthropic tier's ``refusal``, an
  OpenAI-compatible tier's ``content_filter``) is the message's ``refusal`` content part (``{"type": "refusal",
  "refusal": ...}``), as OpenAI's API gives one, never ``output_text`` (the SDK's ``output_text`` and ``parse`` read
  only those: a refusal is no answer to show or parse); the response is ``completed``, as OpenAI's own refusals are
  (the SDK's stream helpers end on ``response.completed`` only). Streamed, ``response.refusal.delta`` /
  ``response.refusal.done``; a live stream's text went out as ``output_text`` deltas before the model's last event
  said it was a refusal (a delta cannot be taken back): that part is closed as the refusal — its
  ``response.refusal.done`` and ``content_part.done`` carry the text, with no ``response.refusal.delta`` (the text
  is never sent twice: the Vercel AI SDK shows a refusal's deltas as text, and takes ``refusal.done`` as its
  ``finish`` ``content-filter``) — and ``output_item.done``, ``response.completed`` and the stored response hold the
  message as the unstreamed answer does: one ``refusal`` part with the text (what the Agents SDK, which raises
  ``ModelRefusalError`` on a refusal part with text, and the ``openai`` SDK read at the end). A stored refusal is
  continued as any response (``previous_response_id``; a ``refusal`` part sent back in ``input`` is the assistant's
  text). Never sent up a tier nor cached, no success;
  ``usage`` with ``input_tokens_details.cached_tokens``; ``model`` is the model that answered
  (``costline-cache`` for a cache hit);
* ``stream: true``: the API's events, ``response.created`` … ``response.output_text.delta`` …
  ``response.completed`` (with the whole response), live or buffered as the other APIs decide
  (``x-costline-stream-mode``);
* the ``web_search`` tool (or ``web_search_preview``) becomes Anthropic's web search server tool, as Chat
  Completions' ``web_search_options`` does (:func:`~costline.serving.gateway.openai_api.search_tool`; its
  ``filters.allowed_domains`` as the tool's): Anthropic tiers only, never cached; each search comes back as a
  ``web_search_call`` item before the message (its query; its ``action.sources`` with ``include``
  ``web_search_call.action.sources``), the citations as the ``output_text``'s ``url_citation`` annotations
  (streamed: ``response.web_search_call.*`` events, then ``response.output_text.annotation.added``);
* ``store`` (true unless false, as in OpenAI's API) keeps the response with the input items it answered (those of
  the responses it continued, their outputs, its own input) for ``[serving.gateway] responses_ttl_s``
  (:mod:`~costline.serving.gateway.response_store`), and ``previous_response_id`` continues it: the request's
  ``input`` follows those items (the earlier ``instructions`` are not carried over, as in OpenAI's API; a
  ``function_call`` sent again with its output is not a second call); one not stored, expired or another tenant's
  is a 400 naming the parameter. ``GET /v1/responses/{id}`` reads a stored response back,
  ``GET /v1/responses/{id}/input_items`` lists its input items (``limit``, ``order``, ``after``) and
  ``DELETE /v1/responses/{id}`` deletes it (another tenant's, or one not stored: a 404);
* ``conversation`` (an id of the Conversations API's, :mod:`~costline.serving.gateway.conversations_api`): its
  items come before the request's input, and the input and the answer are added to it;
* ``text.verbosity`` only at OpenAI's default (``medium``): no tier's API has a verbosity control; the fields of
  :data:`RESPONSES_IGNORED_FIELDS` are left out (they do not change the answer); a field the API does not have is
  OpenAI's 400 "Unrecognized request argument supplied";
* an empty message before the last is left out (:func:`~costline.serving.translate.without_empty_turns`: Anthropic's
  API refuses it);
* refused with a 400 naming the parameter: ``background``, ``moderation``, ``context_management``,
  ``access_programs``, other hosted tools (file search, computer use, code interpreter…), log probabilities
  (``top_logprobs``, ``include`` ``message.output_text.logprobs``; other ``include`` values ask for nothing the
  gateway has), ``item_reference`` items, an ``input_file`` by ``file_id`` (``input_file`` with ``file_data`` or
  ``file_url`` becomes a document block).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import sqlite3
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from costline.serving.backends import PAUSE_TURN, Prompt
from costline.serving.cache.key import scope_of_body
from costline.serving.gateway._http import HttpRequest, HttpResponse
from costline.serving.gateway.app import MAX_JSON_DEPTH, ReturnedId, json_depth
from costline.serving.gateway.auth import Refused
from costline.serving.gateway.response_store import StoreFull
from costline.serving.gateway.messages_api import question_text, sampling_of, textless_query, textless_turn
from costline.serving.gateway.openai_api import (DEFAULT_MAX_TOKENS, EFFORTS, RESUME_PAUSED, OpenAIRoute,
                                                 arguments_too_deep_message, citation_spans, end_user_of, model_of,
                                                 open_openai_live, openai_error, refusal_of, search_tool,
                                                 settled_response, token_counts, unrecognized, unrecognized_error)
from costline.serving.pipeline import Answer, LiveAnswer
from costline.serving.structured import from_responses
from costline.serving.translate import (MAX_TOOLS, file_block, image_block, loads_json, tools_from_openai,
                                       without_empty_turns)

__all__ = ["Responses"]

log = logging.getLogger(__name__)

#: The Responses request fields (those of the ``openai`` SDK's ``responses.create``) the gateway reads: each carried,
#: part of the cache scope, or refused with a 400 when it asks for what the gateway cannot give. Any other field is
#: refused as OpenAI refuses it ("Unrecognized request argument supplied"), never dropped.
RESPONSES_FIELDS = frozenset({
    "input", "instructions", "model", "max_output_tokens", "max_tool_calls", "temperature", "top_p", "reasoning",
    "text", "tools", "tool_choice", "parallel_tool_calls", "stream", "store", "previous_response_id", "conversation",
    "include", "metadata", "safety_identifier", "user", "top_logprobs", "background", "prompt", "moderation",
    "context_management", "access_programs"})
#: Responses fields accepted and left out because they do not change the answer, only how OpenAI itself would serve
#: it: ``service_tier`` (latency and price), ``prompt_cache_key`` / ``prompt_cache_retention`` /
#: ``prompt_cache_options`` (prompt-cache hints), ``stream_options`` (``include_obfuscation``: padding the gateway
#: never adds), ``truncation`` (the gateway never drops input items: an input too long for a tier fails there, as
#: with OpenAI's default ``disabled``), ``image`` (image-context compression: a cost hint), ``background_options``
#: (of background runs, which are refused).
RESPONSES_IGNORED_FIELDS = frozenset({"service_tier", "prompt_cache_key", "prompt_cache_retention",
                                      "prompt_cache_options", "stream_options", "truncation", "image",
                                      "background_options"})
#: The ``include`` value asking for each web search's sources (``action.sources``: the URLs it found).
_SOURCES = "web_search_call.action.sources"
#: Seconds a response holds its conversation at most (others on it are refused with ``conversation_locked`` until it
#: is added): its answer releases it sooner; this bounds the hold of a worker that died mid-answer.
_CONVERSATION_HOLD_S = 600.0
#: An item id kept as the client sent it (others get one of the gateway's: a "/" or "?" in an id would make it
#: unreachable by the routes that name it).
_ITEM_ID = re.compile(r"[A-Za-z0-9_\-]{1,256}")
#: Fields whose answer needs state the gateway does not keep, or work it cannot do: (field, why).
_REFUSED = (
    ("background", "background responses are not supported by the costline gateway"),
    ("prompt", "stored prompt templates are not supported by the costline gateway: send instructions and input"),
    ("moderation", "moderation is not run by the costline gateway"),
    ("context_management", "context compaction is not supported by the costline gateway"),
    ("access_programs", "access programs are OpenAI's: not supported by the costline gateway"),
)


class BadParam(Exception):
    """A request the API would refuse: a 400 naming ``param``."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


class Responses(OpenAIRoute):
    """``POST /v1/responses`` on a :class:`~costline.serving.gateway.app.Gateway`."""

    def _answer(self, req: HttpRequest, body: Mapping[str, Any], tenant: str | None) -> HttpResponse:
        owner = tenant or self.gateway.config.default_tenant  # whose stored responses and conversations it reaches
        try:
            conversation = self._conversation(owner, body)  # held until the answer is added to it
        except BadParam as refused:
            return openai_error(400, str(refused), param=refused.param)
        if isinstance(conversation, HttpResponse):
            return conversation
        if conversation is None:
            release: Callable[[], None] = lambda: None  # noqa: E731
        else:
            def release() -> None:
                try:
                    self.gateway.stored_responses.release_conversation(owner, conversation[0])
                except sqlite3.Error:  # its hold ends by itself (_CONVERSATION_HOLD_S)
                    log.warning("costline gateway: could not release conversation %s", conversation[0], exc_info=True)
        try:
            answer = self._respond(req, body, tenant, owner, conversation)
        except BadParam as refused:
            release()
            return openai_error(400, str(refused), param=refused.param)
        except BaseException:
            release()
            raise
        if answer.stream is None or conversation is None:  # nothing held past the answer
            release()
            return answer
        return dataclasses.replace(answer, stream=_Releasing(answer.stream, release))  # held until the stream ends

    def _respond(self, req: HttpRequest, body: Mapping[str, Any], tenant: str | None, owner: str,
                 conversation: tuple[str, list[dict[str, Any]]] | None) -> HttpResponse:
        history = conversation[1] if conversation else _history(self._earlier(owner, body.get("previous_response_id")))
        system, turns, query, max_tokens, sampling, tools, tool_choice = _to_messages(body, history)
        fmt = from_responses(body.get("text"))
        if isinstance(fmt, tuple):
            raise BadParam(*fmt)
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise BadParam("stream", "stream: true or false")
        # the scope of the equivalent Messages request: one cache entry whichever API asked
        effort = dict(sampling).get("effort")  # as the tiers get it ("minimal" is "low" there)
        equivalent = {**{k: body[k] for k in ("model", "temperature", "top_p") if body.get(k) is not None},
                      "system": system, "messages": turns, "max_tokens": max_tokens,
                      "output_format": fmt.scope() if fmt is not None else None,
                      "output_config": {"effort": effort} if effort is not None else None}
        meta = body.get("metadata") if isinstance(body.get("metadata"), Mapping) else {}
        end_user = end_user_of(body)
        if isinstance(end_user, HttpResponse):
            return end_user
        prompt = Prompt(tuple(turns), system, max_tokens, sampling, tools, tool_choice, end_user, output_format=fmt,
                        resume_paused=RESUME_PAUSED)
        textless = not query.strip()  # only an image or a file: no question text to match in the cache
        result = self.gateway.ask(req, query=textless_query(system) if textless else query, prompt=prompt,
                                  cache_scope=scope_of_body(equivalent), stream=bool(stream), metadata=meta,
                                  tenant=tenant, cached=not textless,
                                  returned=ReturnedId(_id_of))  # every answer's id is made: resp_costline_<id>
        shell = _shell(body, int(self._wall()))
        store = body.get("store") is not False and self.gateway.config.responses_ttl_s > 0
        shell["store"] = store  # then whether it was stored
        shell["previous_response_id"] = body.get("previous_response_id")
        if conversation:
            shell["conversation"] = {"id": conversation[0]}
        sources = _SOURCES in (body.get("include") or ())

        def keep(answer: Answer) -> bool:
            """Add the turn to the conversation, and store the response (as it is returned); whether it was stored.
            A turn that could not be added leaves the answer without its ``conversation`` (the client sees it was
            not)."""
            final = _finished({**shell, "store": True}, answer, sources)
            if conversation and not self._add_turn(owner, conversation[0], history, body.get("input"), final):
                shell["conversation"] = final["conversation"] = None
            return store and self._keep(owner, history, body.get("input"), final)

        if isinstance(result, LiveAnswer):
            return self._live(result, shell, sources, keep)
        if result.cached or result.reply is not None:
            shell["store"] = keep(result)
        return settled_response(result, bool(stream), lambda: _finished(shell, result, sources), lambda: _events(
            shell, result.request_id, model_of(result), [result.text], lambda: result, sources, settled=result))

    def _conversation(self, owner: str, body: Mapping[str, Any]
                      ) -> tuple[str, list[dict[str, Any]]] | None | HttpResponse:
        """(the id, the items) of the request's ``conversation`` (an id, or ``{"id": ...}``) of ``owner``, None
        without one, or the 404 of one not found; raises :class:`BadParam` for a bad one."""
        named = body.get("conversation")
        if named is None:
            return None
        if isinstance(named, Mapping):
            named = named.get("id")
        if not isinstance(named, str) or not 1 <= len(named) <= 256:
            raise BadParam("conversation", "conversation: the id of a conversation, or {\"id\": ...}")
        if body.get("previous_response_id") is not None:
            raise BadParam("previous_response_id", "previous_response_id and conversation: send one of them")
        if self.gateway.config.conversations_ttl_s <= 0:
            raise BadParam("conversation", "conversations are turned off on this gateway ([serving.gateway] "
                                           "conversations_ttl_s = 0): send the whole conversation in input")
        store = self.gateway.stored_responses
        try:
            held = store.hold_conversation(owner, named, _CONVERSATION_HOLD_S)
            if held is None:
                return openai_error(404, f"Conversation with id '{named[:80]}' not found", param="conversation")
            if not held:
                return openai_error(400, "Another response is in progress for this conversation: retry when it has "
                                         "finished", param="conversation", code="conversation_locked")
            try:
                found = store.conversation_items(owner, named)
                room = store.conversation_room(owner, named)
            except BaseException:
                store.release_conversation(owner, named)
                raise
        except sqlite3.Error:
            log.warning("costline gateway: could not read conversation %s", named, exc_info=True)
            return openai_error(503, "the stored conversations could not be read just now: retry later")
        needed = len(json.dumps(body.get("input"), ensure_ascii=False).encode())
        if found is None or needed > room:
            store.release_conversation(owner, named)
            if found is None:  # deleted since it was held
                return openai_error(404, f"Conversation with id '{named[:80]}' not found", param="conversation")
            raise BadParam("conversation", "the stored conversations are at their bound (4 MiB a conversation; "
                                           "[serving.gateway] responses_tenant_max_mib per tenant, "
                                           "responses_total_max_mib in all): start a new conversation, or delete "
                                           "conversations or items no longer needed")
        return named, found[0]

    def _add_turn(self, owner: str, conversation: str, history: list[dict[str, Any]], given: Any,
                  response: dict[str, Any]) -> bool:
        """Append the request's input items and the response's output to the conversation it named; whether they
        were (the answer stands if not: logged)."""
        items = [*items_of(given, response["id"], seen_before(history)), *response["output"]]
        try:
            if self.gateway.stored_responses.add_items(owner, conversation, items) is None:
                log.warning("costline gateway: conversation %s was deleted while %s answered it", conversation,
                            response["id"])
                return False
        except (StoreFull, sqlite3.Error) as exc:
            log.warning("costline gateway: response %s was not added to conversation %s: %s", response["id"],
                        conversation, exc)
            return False
        return True

    def _earlier(self, owner: str, previous: Any) -> dict[str, Any]:
        """The stored response ``previous`` (``previous_response_id``) of ``owner`` (an empty one without it);
        raises :class:`BadParam` for one not stored (or not ``owner``'s)."""
        if previous is None:
            return {}
        if not isinstance(previous, str) or not 1 <= len(previous) <= 256:
            raise BadParam("previous_response_id", "previous_response_id: the id of a stored response")
        earlier = self.gateway.stored_responses.get(owner, previous)
        if not isinstance(earlier, dict) or not isinstance(earlier.get("response"), dict):  # an older gateway's too
            raise BadParam("previous_response_id", f"Previous response with id '{previous[:80]}' not found: the "
                                                   "gateway keeps stored responses for [serving.gateway] "
                                                   "responses_ttl_s; send the whole conversation in input instead")
        return earlier

    def _keep(self, owner: str, history: list[dict[str, Any]], given: Any, response: dict[str, Any]) -> bool:
        """Store ``response`` with the input items it answered — the ``history`` of the response it continued, then
        the request's own ``given`` input (each item with an id) — under its id; whether it was (an answer with
        nothing in it is no turn to go on from; a refusal is one: what the model said when it declined)."""
        if not any(item["type"] == "function_call"
                   or any(p.get("text") or p.get("refusal") for p in item.get("content") or ())
                   for item in response["output"] if item["type"] in ("message", "function_call")):
            return False
        items = [*history, *items_of(given, response["id"], seen_before(history))]
        return self.gateway.stored_responses.put(owner, response["id"], {"input": items, "response": response})

    # -- stored responses: read back, their input items, deleted ----------------------------------------------
    def retrieve(self, req: HttpRequest) -> HttpResponse:
        """``GET /v1/responses/{id}``: a stored response as it was answered (``stream=true``, a replay of its
        events, is refused)."""
        found = self._stored(req)
        if isinstance(found, HttpResponse):
            return found
        doc, headers = found
        if query_of(req).get("stream", "false").lower() not in ("false", "0"):
            return openai_error(400, "stream: replaying a stored response's events is not supported by the costline "
                                     "gateway: read it whole", headers, param="stream")
        return HttpResponse(200, doc["response"], headers=headers)

    def input_items(self, req: HttpRequest) -> HttpResponse:
        """``GET /v1/responses/{id}/input_items``: the items a stored response answered — those of the responses it
        continued, their outputs, then its own input — a page at a time (``limit`` 1-100, default 20; ``order``
        ``desc`` (the default) or ``asc``; ``after`` an item id of the previous page)."""
        found = self._stored(req)
        if isinstance(found, HttpResponse):
            return found
        doc, headers = found
        try:
            limit, order, after = page_of(query_of(req))
        except BadParam as bad:
            return openai_error(400, str(bad), headers, param=bad.param)
        items = list(doc.get("input") or ())
        if order == "desc":
            items.reverse()
        if after is not None:
            at = next((k for k, item in enumerate(items) if item.get("id") == after), None)
            if at is None:
                return openai_error(400, f"after: {after[:80]!r} is not an input item of this response", headers,
                                    param="after")
            items = items[at + 1:]
        page = items[:limit]
        return HttpResponse(200, {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                                  "last_id": page[-1]["id"] if page else None, "has_more": len(items) > len(page)},
                            headers=headers)

    def delete(self, req: HttpRequest) -> HttpResponse:
        """``DELETE /v1/responses/{id}``: the stored response is gone (it can no longer be read or continued)."""
        admitted = self._admitted(req)
        if isinstance(admitted, HttpResponse):
            return admitted
        owner, rid, headers = admitted
        try:
            gone = self.gateway.stored_responses.delete(owner, rid)
        except sqlite3.Error:
            log.warning("costline gateway: could not delete stored response %s", rid, exc_info=True)
            return openai_error(503, "the stored responses could not be changed just now: retry later", headers)
        if not gone:
            return _not_found(rid, headers)
        return HttpResponse(200, {"id": rid, "object": "response", "deleted": True}, headers=headers)

    def _admitted(self, req: HttpRequest) -> tuple[str, str, dict[str, str]] | HttpResponse:
        """(the tenant whose stored responses the request reaches, the response id, the headers of its answer), or
        the refusal."""
        admitted = self.gateway.guard.admit(req)
        if isinstance(admitted, Refused):
            return openai_error(admitted.status, admitted.message, admitted.headers)
        rid = req.params.get("id", "")
        if not 1 <= len(rid) <= 256:
            return _not_found(rid, admitted.headers)
        return admitted.tenant or self.gateway.config.default_tenant, rid, dict(admitted.headers)

    def _stored(self, req: HttpRequest) -> tuple[dict[str, Any], dict[str, str]] | HttpResponse:
        admitted = self._admitted(req)
        if isinstance(admitted, HttpResponse):
            return admitted
        owner, rid, headers = admitted
        doc = self.gateway.stored_responses.get(owner, rid)
        if not isinstance(doc, dict) or not isinstance(doc.get("response"), dict):
            return _not_found(rid, headers)  # a record of an older gateway holds no response to show
        return doc, headers

    def _live(self, live: LiveAnswer, shell: dict[str, Any], sources: bool,
              keep: Callable[[Answer], bool]) -> HttpResponse:
        opened = open_openai_live(live)
        if isinstance(opened, HttpResponse):
            return opened
        model, texts, headers = opened

        def settle() -> Answer | None:
            return None if live.error is not None else live.result

        early = settle() if live.result is not None else None  # settled before its first piece: escalated

        def body() -> Any:
            try:
                yield from _events(shell, live.request_id, model, texts, settle, sources, settled=early, keep=keep)
            finally:
                live.close()

        return HttpResponse(200, headers=headers, content_type="text/event-stream", stream=body())


class _Releasing:
    """An answer's stream that calls ``release`` once when it ends, fails or is closed — iterated or not (a
    client may leave before the first byte)."""

    def __init__(self, stream: Iterable[bytes], release: Callable[[], None]) -> None:
        self._it = iter(stream)
        self._release = release
        self._done = False

    def __iter__(self) -> "_Releasing":
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._it)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            close = getattr(self._it, "close", None)
            if close is not None:
                close()
        finally:
            self._release()


def _not_found(rid: str, headers: Mapping[str, str]) -> HttpResponse:
    return openai_error(404, f"Response with id '{rid[:80]}' not found: it was never stored (store: false), it is "
                             "another tenant's, or it expired ([serving.gateway] responses_ttl_s) or was deleted",
                        headers)


def page_of(query: Mapping[str, str]) -> tuple[int, str, str | None]:
    """(``limit``, ``order``, ``after``) of a list request's query (1-100, default 20; ``desc`` by default, or
    ``asc``; an item id or None), or :class:`BadParam`."""
    limit = query.get("limit", "20")
    if not (limit.isascii() and limit.isdigit() and len(limit) <= 3 and 1 <= int(limit) <= 100):
        raise BadParam("limit", "limit: a whole number from 1 to 100")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise BadParam("order", "order: asc or desc")
    return int(limit), order, query.get("after")


def query_of(req: HttpRequest) -> dict[str, str]:
    """The request's query parameters (the first value of each)."""
    _, _, query = req.path.partition("?")
    return {k: v[0] for k, v in urllib.parse.parse_qs(query).items()}


# -- the request ------------------------------------------------------------------------------------------------
def _to_messages(body: Mapping[str, Any], history: list[dict[str, Any]] | None = None,
                 ) -> tuple[Any, list[dict[str, Any]], str, int, Any, tuple, Any]:
    """(system, Messages-shaped turns, the question, max_tokens, sampling, tools, tool_choice) of a Responses
    request, after the ``history`` items it continues (those of the stored response of ``previous_response_id``
    and its output, or those of its ``conversation``; an earlier ``instructions`` is not carried over, as in
    OpenAI's API); raises :class:`BadParam` for what the gateway cannot carry or the API would refuse."""
    unknown = unrecognized(body, RESPONSES_FIELDS | RESPONSES_IGNORED_FIELDS)
    if unknown is not None:
        raise BadParam(unknown[:80], unrecognized_error(unknown).body["error"]["message"])
    for field, why in _REFUSED:
        if body.get(field) not in (None, False):
            raise BadParam(field, f"{field}: {why}")
    text = body.get("text")
    if isinstance(text, Mapping) and text.get("verbosity") not in (None, "medium"):
        raise BadParam("text.verbosity", "text.verbosity: only medium (OpenAI's default) is supported by the costline "
                                         "gateway: no tier it routes to has a verbosity control")
    include = body.get("include")
    if include is not None and not (isinstance(include, list) and all(isinstance(i, str) for i in include)):
        raise BadParam("include", "include: a list of strings")
    if body.get("top_logprobs") or "message.output_text.logprobs" in (include or ()):
        raise BadParam("top_logprobs" if body.get("top_logprobs") else "include",
                       "log probabilities are not supported by the costline gateway")
    max_tokens = body.get("max_output_tokens")
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise BadParam("max_output_tokens", "max_output_tokens: a whole number >= 1")
    reasoning = body.get("reasoning")
    effort = reasoning.get("effort") if isinstance(reasoning, Mapping) else None
    if effort is not None and (not isinstance(effort, str) or effort not in EFFORTS):
        raise BadParam("reasoning.effort", f"reasoning.effort: one of {', '.join(EFFORTS)}")
    sampling = sampling_of({"temperature": body.get("temperature"), "top_p": body.get("top_p"),
                            "output_config": {"effort": EFFORTS[effort]} if effort else None}, max_temperature=2.0)
    if isinstance(sampling, str):
        raise BadParam(sampling.split(":")[0], sampling)
    tools, tool_choice = _tools(body)
    cap = body.get("max_tool_calls")  # of built-in tools: here the web search, whose max_uses it lowers
    if cap is not None:
        if not isinstance(cap, int) or isinstance(cap, bool) or cap < 0:
            raise BadParam("max_tool_calls", "max_tool_calls: a whole number >= 0")
        capped = [{**t, "max_uses": min(t["max_uses"], cap)} if "max_uses" in t else t for t in tools
                  if cap or "max_uses" not in t]
        if len(capped) < len(tools) and tool_choice is not None and tool_choice.get("name") == "web_search":
            raise BadParam("max_tool_calls", "max_tool_calls: 0 with the web search tool required")
        tools, tool_choice = tuple(capped), (tool_choice if capped else None)
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise BadParam("instructions", "instructions: a string")
    history = history or []
    # a function_call sent again with the output of a call the stored response made is that call, not a second one
    system, turns = turns_of(body.get("input"), seen_before(history))
    if history:
        earlier_system, earlier_turns = turns_of(history)
        system = earlier_system + system
        turns = without_empty_turns(_continued(earlier_turns, turns))
    if instructions:
        system.insert(0, instructions)
    if not turns or turns[-1]["role"] != "user":
        raise BadParam("input", "input: the last item must be a user message or a function_call_output")
    query = question_text(turns)
    if not query.strip() and not textless_turn(turns[-1]["content"]):
        raise BadParam("input", "input: the last user message has no text")
    # ("" for a last user message of only an image or a file: routed on the system prompt, never cached)
    return ("\n\n".join(system) or None), turns, query, max_tokens, sampling, tools, tool_choice


def _tools(body: Mapping[str, Any]) -> tuple[tuple[dict[str, Any], ...], dict[str, Any] | None]:
    """The request's function tools and tool_choice in the Messages API's shapes (hosted tools are refused)."""
    raw = body.get("tools")
    if raw is not None and not isinstance(raw, list):
        raise BadParam("tools", "tools: a list of tools")
    chat_tools = []
    search: dict[str, Any] | None = None
    for i, tool in enumerate(raw or []):
        kind = tool.get("type") if isinstance(tool, Mapping) else None
        if isinstance(kind, str) and kind in WEB_SEARCH_TYPES:
            if search is not None:
                raise BadParam(f"tools[{i}]", f"tools[{i}]: one web search tool a request")
            search = _search_tool(tool, i)
            continue
        if kind != "function":
            raise BadParam(f"tools[{i}]", f"tools[{i}]: only function tools and web search are carried by the "
                                          f"costline gateway ({str(kind)[:40]!r} is a tool OpenAI's API runs itself)")
        chat_tools.append({"type": "function", "function": {k: tool[k] for k in ("name", "description", "parameters",
                                                                                      "strict") if k in tool}})
    choice = body.get("tool_choice")
    forced_search = isinstance(choice, Mapping) and isinstance(choice.get("type"), str) \
        and choice.get("type") in WEB_SEARCH_TYPES
    if forced_search and search is None:
        raise BadParam("tool_choice", "tool_choice: the web search tool is not among the request's tools")
    if isinstance(choice, Mapping) and choice.get("type") == "function":
        choice = {"type": "function", "function": {"name": choice.get("name")}}
    elif isinstance(choice, Mapping) and not forced_search:
        raise BadParam("tool_choice", "tool_choice: 'auto', 'none', 'required', {'type': 'function', 'name'} or "
                                      "{'type': 'web_search'}")
    # the choice among the functions (the search tool is not one): a search alone may be required, or forced
    only_search = search is not None and not chat_tools
    converted = tools_from_openai(chat_tools if raw is not None else None,
                                  None if forced_search or only_search else choice)
    if isinstance(converted[0], str):
        raise BadParam(str(converted[0]).replace("function.", ""), str(converted[1]).replace("function.", ""))
    tools, tool_choice = converted
    if search is not None:
        if any(t.get("name") == "web_search" for t in tools):
            raise BadParam("tools", "tools: a function named web_search cannot go with the web search tool (the "
                                    "search tool has that name)")
        if len(tools) >= MAX_TOOLS:
            raise BadParam("tools", f"tools: at most {MAX_TOOLS} tools a request, the web search tool included")
        tools = [*tools, search]
        if forced_search:
            tool_choice = {"type": "tool", "name": "web_search"}
        elif only_search and choice is not None:
            if not isinstance(choice, str) or choice not in _CHOICES:
                raise BadParam("tool_choice", "tool_choice: 'auto', 'none', 'required' or {'type': 'web_search'}")
            tool_choice = {"type": _CHOICES[choice]}
    if not tools:
        return (), None
    if body.get("parallel_tool_calls") is False and tool_choice is not None and tool_choice.get("type") != "none":
        tool_choice = {**tool_choice, "disable_parallel_tool_use": True}
    elif body.get("parallel_tool_calls") is False:
        tool_choice = {"type": "auto", "disable_parallel_tool_use": True}
    return tuple(tools), tool_choice


#: A Responses ``tool_choice`` string as the Messages API's choice type.
_CHOICES = {"auto": "auto", "none": "none", "required": "any"}
#: The Responses API's web search tool types: each becomes Anthropic's web search server tool.
WEB_SEARCH_TYPES = ("web_search", "web_search_2025_08_26", "web_search_preview", "web_search_preview_2025_03_11")
_SEARCH_FIELDS = ("type", "search_context_size", "user_location", "filters", "external_web_access",
                  "search_content_types")


def _search_tool(tool: Mapping[str, Any], i: int) -> dict[str, Any]:
    """A web search tool of the request as Anthropic's server tool (:func:`~costline.serving.gateway.openai_api.
    search_tool`: ``filters.allowed_domains`` as its ``allowed_domains``)."""
    where = f"tools[{i}]"
    unknown = sorted(str(k) for k in tool if k not in _SEARCH_FIELDS)
    if unknown:
        raise BadParam(where, f"{where}.{unknown[0][:40]}: not a field of the web search tool")
    if tool.get("external_web_access") is False:  # OpenAI's cached-results-only mode: Anthropic's search has none
        raise BadParam(where, f"{where}.external_web_access: false (cached results only) is not supported by the "
                              "costline gateway: its tiers search the live web")
    kinds = tool.get("search_content_types")
    if kinds is not None and (not isinstance(kinds, list) or any(k != "text" for k in kinds)):
        raise BadParam(where, f"{where}.search_content_types: only [\"text\"] (the costline gateway's tiers search "
                              "for text, not images)")
    place, filters = tool.get("user_location"), tool.get("filters")
    if place is not None and (not isinstance(place, Mapping) or place.get("type", "approximate") != "approximate"):
        raise BadParam(where, f"{where}.user_location: {{\"type\": \"approximate\", \"city\", \"region\", "
                              "\"country\", \"timezone\"}")
    if filters is not None and (not isinstance(filters, Mapping) or set(filters) - {"allowed_domains"}):
        raise BadParam(where, f"{where}.filters: {{\"allowed_domains\": [...]}}")
    made = search_tool(tool.get("search_context_size"), place, f"{where}.search_context_size",
                       f"{where}.user_location", (filters or {}).get("allowed_domains"),
                       f"{where}.filters.allowed_domains")
    if isinstance(made, str):
        raise BadParam(where, made)
    return made


def turns_of(raw: Any, seen: frozenset[str] = frozenset()) -> tuple[list[str], list[dict[str, Any]]]:
    """(system parts, Messages-shaped turns) of ``input``: adjacent items of one role are one turn; a function_call
    :func:`seen_before` in ``seen`` (an earlier item sent again) is left out."""
    if isinstance(raw, str):
        return [], [{"role": "user", "content": raw}]
    if not isinstance(raw, list) or not raw:
        raise BadParam("input", "input: a string or a non-empty list of input items")
    system: list[str] = []
    turns: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if turns and turns[-1]["role"] == role:
            content = turns[-1]["content"]
            if content and content[-1]["type"] == "text" and blocks and blocks[0]["type"] == "text":
                # two messages are two paragraphs of the turn, not one run-on text ("A" + "B" is "A\n\nB")
                content[-1] = {**content[-1], "text": content[-1]["text"] + "\n\n"}
            content.extend(blocks)
        else:
            turns.append({"role": role, "content": list(blocks)})

    for i, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise BadParam(f"input[{i}]", f"input[{i}]: an input item is an object")
        if _sent_again(item, seen):
            continue
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise BadParam(f"input[{i}].role", f"input[{i}].role: user, assistant, system or developer")
            blocks = _parts(item.get("content"), f"input[{i}].content")
            if role in ("system", "developer"):
                if any(b["type"] != "text" for b in blocks):
                    raise BadParam(f"input[{i}].content", f"input[{i}].content: a {role} message holds text only")
                system.append("".join(b["text"] for b in blocks))
            elif blocks:
                add(role, blocks)
        elif kind == "function_call":
            call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments", "")
            try:
                args = loads_json(arguments) if isinstance(arguments, str) and arguments else {}
            except RecursionError:  # nested past what the parser takes: past the body's limit too
                raise BadParam(f"input[{i}].arguments", arguments_too_deep_message(f"input[{i}].arguments")) from None
            except ValueError:  # NaN / Infinity too: no tier's API takes them
                args = None
            if isinstance(args, dict) and json_depth(args, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
                raise BadParam(f"input[{i}].arguments", arguments_too_deep_message(f"input[{i}].arguments"))
            if not isinstance(call_id, str) or not isinstance(name, str) or not isinstance(args, dict):
                raise BadParam(f"input[{i}]", f"input[{i}]: a function_call has a call_id, a name and JSON object "
                                              "arguments")
            add("assistant", [{"type": "tool_use", "id": call_id, "name": name, "input": args}])
        elif kind == "function_call_output":
            call_id, output = item.get("call_id"), item.get("output")
            if isinstance(output, list):
                output = "".join(str(p.get("text", "")) for p in output if isinstance(p, Mapping)
                                 and p.get("type") in ("input_text", "output_text"))
            if not isinstance(call_id, str) or not isinstance(output, str):
                raise BadParam(f"input[{i}]", f"input[{i}]: a function_call_output has a call_id and an output")
            add("user", [{"type": "tool_result", "tool_use_id": call_id, "content": output}])
        elif kind in ("reasoning", "web_search_call"):
            # another model's reasoning, or a search an earlier answer made (what it found is in that answer's
            # text; its results are not in the item): not input a tier can take
            continue
        else:
            raise BadParam(f"input[{i}].type", f"input[{i}].type: {str(kind)[:40]!r} items are not supported by the "
                                               "costline gateway (messages, function_call, function_call_output)")
    for turn in turns:  # a turn of text alone is a string, as the other APIs' turns are
        if all(b["type"] == "text" for b in turn["content"]):
            turn["content"] = "".join(b["text"] for b in turn["content"])
    return system, without_empty_turns(turns)  # Anthropic's API refuses an empty message before the last


def _history(earlier: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The items of a stored response's conversation: the input items it answered, then its output."""
    response = earlier.get("response")
    output = response.get("output") if isinstance(response, Mapping) else None
    return [i for i in [*(earlier.get("input") or ()), *(output or ())] if isinstance(i, dict)]


def seen_before(items: Iterable[Mapping[str, Any]]) -> frozenset[str]:
    """What marks an item of ``items`` sent again: the ids of them all, the call_ids of their function_calls."""
    ids = {f"id:{i['id']}" for i in items if isinstance(i.get("id"), str)}
    return frozenset(ids | {f"call:{i['call_id']}" for i in items
                            if i.get("type") == "function_call" and isinstance(i.get("call_id"), str)})


def _sent_again(item: Mapping[str, Any], seen: frozenset[str]) -> bool:
    """Whether ``item`` is one of the conversation's already (its id, or a function_call's call_id): the Responses
    API takes an item once, so one sent again with ``previous_response_id`` (a client that sends the last output
    back with its tool results) is left out, not repeated."""
    own = item.get("id")
    call = item.get("call_id") if item.get("type") == "function_call" else None
    return (isinstance(own, str) and f"id:{own}" in seen) or (isinstance(call, str) and f"call:{call}" in seen)


#: The id prefix of an input item the client sent without one, by type (OpenAI's own prefixes).
_ITEM_PREFIXES = {"message": "msg", "function_call": "fc", "function_call_output": "fc", "reasoning": "rs",
                  "web_search_call": "ws"}


def items_of(given: Any, response_id: str, seen: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """A request's ``input`` (checked already) as the input items ``GET /v1/responses/{id}/input_items`` lists:
    each with an id of its own (the one it came with, unless another item has it; else one from the response's
    id and its place), a message's text content as ``input_text`` (``output_text`` for an assistant's) parts; one
    sent again (:func:`seen_before` in ``seen``) left out."""
    raw = [{"type": "message", "role": "user", "content": given}] if isinstance(given, str) else given
    items: list[dict[str, Any]] = []
    taken: set[str] = set()
    for k, item in enumerate(raw if isinstance(raw, list) else ()):
        if _sent_again(item, seen):
            continue
        kind = item.get("type", "message")
        own = item.get("id")
        if not (isinstance(own, str) and _ITEM_ID.fullmatch(own)) or own in taken:
            own = f"{_ITEM_PREFIXES.get(kind, 'item')}_{response_id[5:]}_in{k}"
        taken.add(own)
        item = {**item, "type": kind, "id": own}
        if kind == "message":
            if isinstance(item.get("content"), str):
                text = item["content"]
                part = "output_text" if item.get("role") == "assistant" else "input_text"
                item["content"] = [{"type": part, "text": text}] if text else []
            item.setdefault("status", "completed")
        items.append(item)
    return items


def _blocks(content: Any) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def _continued(earlier: list[dict[str, Any]], turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A stored conversation followed by a request's turns (a first turn of the same role as the last stored one
    joins it, as adjacent items of one role are one turn)."""
    out = [dict(t) for t in earlier]
    for turn in turns:
        if out and out[-1]["role"] == turn["role"]:
            joined = _blocks(out[-1]["content"]) + _blocks(turn["content"])
            out[-1] = {"role": turn["role"], "content": "".join(b["text"] for b in joined)
                       if all(b.get("type") == "text" for b in joined) else joined}
        else:
            out.append(turn)
    return out


def _parts(content: Any, where: str) -> list[dict[str, Any]]:
    """A message's ``content`` as Messages blocks: text parts as text, ``input_image`` as an image block,
    ``input_file`` as a document block (:func:`~costline.serving.translate.file_block`)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise BadParam(where, f"{where}: a string or a list of content parts")
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            blocks.append({"type": "text", "text": part["text"]})
        elif kind == "refusal":  # an earlier answer the model declined, sent back: what it said is its turn
            if isinstance(part.get("refusal"), str) and part["refusal"]:
                blocks.append({"type": "text", "text": part["refusal"]})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            blocks.append(_image(part["image_url"], f"{where}[{j}]"))
        elif kind == "input_file":
            block = file_block(part.get("file_data"), part.get("filename"), part.get("file_url"))
            if block is None:
                raise BadParam(f"{where}[{j}]", f"{where}[{j}]: an input_file is carried with file_data (a base64 "
                                                "data: URL of a PDF or plain text) or a file_url; a file_id names a "
                                                "file stored at OpenAI, which the gateway cannot read")
            blocks.append(block)
        else:
            raise BadParam(f"{where}[{j}]", f"{where}[{j}]: text, input_image (an image_url) and input_file parts are "
                                            f"supported by the costline gateway, not {str(kind)[:40]!r}")
    return blocks


def _image(url: str, where: str) -> dict[str, Any]:
    block = image_block(url)
    if block is None:
        raise BadParam(where, f"{where}.image_url: a base64 data: URL or an http(s) URL")
    return block


# -- the answer -------------------------------------------------------------------------------------------------
def _shell(body: Mapping[str, Any], created: int) -> dict[str, Any]:
    """The response's fields that echo the request."""
    return {"object": "response", "created_at": created, "error": None,
            "instructions": body.get("instructions") if isinstance(body.get("instructions"), str) else None,
            "max_output_tokens": body.get("max_output_tokens"),
            "metadata": body.get("metadata") if isinstance(body.get("metadata"), Mapping) else {},
            "parallel_tool_calls": body.get("parallel_tool_calls") is not False, "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None}, "store": False,
            "temperature": body.get("temperature", 1.0), "top_p": body.get("top_p", 1.0),
            "text": {"format": dict(_format_of(body))}, "tool_choice": body.get("tool_choice", "auto"),
            "tools": list(body.get("tools") or []), "truncation": "disabled", "user": None}


def _format_of(body: Mapping[str, Any]) -> Mapping[str, Any]:
    """The request's ``text.format`` (checked already), or the default ``text``."""
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, Mapping) else None
    return fmt if isinstance(fmt, Mapping) else {"type": "text"}


def _id_of(request_id: str) -> str:
    return f"resp_costline_{request_id or uuid.uuid4().hex}"


def _usage(result: Answer) -> dict[str, Any]:
    prompt, completion, cached = token_counts(result)
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached}, "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": prompt + completion}


def _cut(result: Answer) -> bool:
    """True when the model stopped at its token limit."""
    return result.reply is not None and not result.cached and result.reply.stop_reason in (
        "max_tokens", "length", PAUSE_TURN)  # a turn still paused after RESUME_PAUSED continuations: cut short too


def _searches(result: Answer, sources: bool, rid: str) -> list[dict[str, Any]]:
    """A ``web_search_call`` item per search the answer's web search tool made (its query; with ``sources``, the
    URLs it found), ``failed`` when the search came back as an error or without its result; its id from the
    search's own (else from ``rid`` and its place), the same each time it is built."""
    reply = result.reply
    if reply is None or result.cached:
        return []
    found = {b["tool_use_id"]: b.get("content") for b in reply.content
             if b.get("type") == "web_search_tool_result" and isinstance(b.get("tool_use_id"), str)}
    items = []
    for block in reply.content:
        if block.get("type") != "server_tool_use" or block.get("name") != "web_search":
            continue
        own = block.get("id") if isinstance(block.get("id"), str) else None
        given = block.get("input") if isinstance(block.get("input"), Mapping) else {}
        results = found.get(own) if own else None
        query = given.get("query")
        action: dict[str, Any] = {"type": "search", "query": query if isinstance(query, str) else ""}
        if sources:
            action["sources"] = [{"type": "url", "url": r["url"]} for r in results or ()
                                 if isinstance(r, Mapping) and isinstance(r.get("url"), str)]
        items.append({"type": "web_search_call", "id": f"ws_{own}" if own else f"ws_{rid[5:]}_{len(items)}",
                      "status": "completed" if isinstance(results, list) else "failed", "action": action})
    return items


def _items(rid: str, result: Answer, sources: bool = False) -> list[dict[str, Any]]:
    """The ``output`` items of an answer: a ``web_search_call`` item per search (first, as OpenAI's API orders
    them), its text as a message item (its web search citations as ``url_citation`` annotations; a refusal as a
    ``refusal`` part holding its text, streamed live or not), then a function_call item per tool call."""
    reply = result.reply
    calls = list(reply.tool_calls) if reply is not None and not result.cached else []
    items = _searches(result, sources, rid)
    refusal = refusal_of(result)
    if result.text or not calls or refusal is not None:
        cited = [{"type": "url_citation", "start_index": start, "end_index": stop, "url": url, "title": title}
                 for start, stop, url, title in citation_spans(result)]
        text = [{"type": "output_text", "text": result.text, "annotations": cited, "logprobs": []}]
        content = text if refusal is None else [{"type": "refusal", "refusal": refusal}]
        items.append({"type": "message", "id": f"msg_{rid[5:]}", "role": "assistant",
                      "status": "incomplete" if _cut(result) else "completed", "content": content})
    for k, call in enumerate(calls):
        items.append({"type": "function_call", "id": f"fc_{rid[5:]}_{k}", "call_id": call.get("id"),
                      "name": call.get("name"), "arguments": json.dumps(call.get("input") or {}),
                      "status": "completed"})
    return items


def _finished(shell: dict[str, Any], result: Answer, sources: bool = False) -> dict[str, Any]:
    rid = _id_of(result.request_id)
    cut = _cut(result)
    return {**shell, "id": rid, "model": model_of(result), "status": "incomplete" if cut else "completed",
            "completed_at": shell["created_at"], "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
            "output": _items(rid, result, sources), "usage": _usage(result)}


def _part_events(event: Callable[..., bytes], item_id: str, at: int, k: int, done: Mapping[str, Any],
                 empty: Mapping[str, Any], added: bool) -> Iterable[bytes]:
    """The events that finish the message's ``k``-th content part ``done`` (its ``added`` event already sent, as an
    ``output_text`` part ``empty``, when ``added``): an ``output_text``'s annotations and ``done``, a refusal's one
    delta and ``done``, then the part's ``content_part.done``. A refusal whose text went out already (``added``: a
    live stream's ``output_text`` deltas) gets no delta: its ``done`` closes that part as the refusal."""
    where = {"item_id": item_id, "output_index": at, "content_index": k}
    if done["type"] == "refusal":
        if not added:
            yield event("response.content_part.added", **where, part={"type": "refusal", "refusal": ""})
            yield event("response.refusal.delta", **where, delta=done["refusal"])
        yield event("response.refusal.done", **where, refusal=done["refusal"])
        yield event("response.content_part.done", **where, part=done)
        return
    if not added:
        yield event("response.content_part.added", **where, part=empty)
    for a, annotation in enumerate(done["annotations"]):
        yield event("response.output_text.annotation.added", **where, annotation_index=a, annotation=annotation)
    yield event("response.output_text.done", **where, text=done["text"], logprobs=[])
    yield event("response.content_part.done", **where, part={**empty, "text": done["text"],
                                                             "annotations": done["annotations"]})


def _events(shell: dict[str, Any], request_id: str, model: str, texts: Iterable[str],
            settle: Callable[[], Answer | None], sources: bool = False, settled: Answer | None = None,
            keep: Callable[[Answer], bool] | None = None) -> Any:
    """The Responses API's events: created, in_progress, the web_search_call items of a ``settled`` answer (in
    progress, searching, completed: a request with tools is answered whole before it streams, so they are known),
    the message item's text deltas as they come (then its annotations, one ``annotation.added`` each; a refusal's
    part with its ``response.refusal.delta`` / ``.done``: a ``settled`` refusal's text never goes out as
    ``output_text``; text that did, live, is not sent again: its part is closed as the refusal), the function_call
    items (their arguments in one delta), then ``response.completed`` (or ``incomplete``)."""
    seq = iter(range(1 << 62))
    rid = _id_of(request_id)
    msg_id = f"msg_{rid[5:]}"
    pending = {**shell, "id": rid, "model": model, "status": "in_progress", "output": [], "usage": None,
               "completed_at": None, "incomplete_details": None}

    def event(kind: str, **data: Any) -> bytes:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, 'sequence_number': next(seq), **data})}\n\n".encode()

    yield event("response.created", response=pending)
    yield event("response.in_progress", response=pending)
    searches = _searches(settled, sources, rid) if settled is not None else []
    for k, item in enumerate(searches):
        yield event("response.output_item.added", output_index=k, item={**item, "status": "in_progress"})
        stages = ("in_progress", "searching", "completed") if item["status"] == "completed" else ("in_progress",)
        for stage in stages:  # a failed search has no event of its own: its item is done as failed
            yield event(f"response.web_search_call.{stage}", item_id=item["id"], output_index=k)
        yield event("response.output_item.done", output_index=k, item=item)
    at = len(searches)  # the message item's output index
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    opened = False
    refused = settled is not None and refusal_of(settled) is not None  # its text is the refusal part's, not output
    try:
        for piece in texts:
            if not piece or refused:
                continue
            if not opened:
                yield event("response.output_item.added", output_index=at, item={
                    "type": "message", "id": msg_id, "role": "assistant", "status": "in_progress", "content": []})
                yield event("response.content_part.added", item_id=msg_id, output_index=at, content_index=0,
                            part=part)
                opened = True
            yield event("response.output_text.delta", item_id=msg_id, output_index=at, content_index=0, delta=piece,
                        logprobs=[])
    except Exception as exc:  # not a model error (those end the pieces): still end the stream in form
        log.exception("costline gateway: a live response failed mid-stream")
        yield event("error", code="server_error", message=f"costline gateway failure mid-stream: {type(exc).__name__}",
                    param=None)
        return
    result = settle()
    if result is None:
        yield event("error", code="server_error", message="the model failed mid-answer: the text sent so far stands",
                    param=None)
        return
    if keep is not None:  # stored before the client hears it is complete (it may continue at once)
        shell = {**shell, "store": keep(result)}
    final = _finished(shell, result, sources)
    items = final["output"]
    index = at
    if index < len(items) and items[index]["type"] == "message":
        message = items[index]
        if not opened:  # an answer with no text pieces: the message item still opens and closes
            yield event("response.output_item.added", output_index=at, item={**message, "status": "in_progress",
                                                                             "content": []})
        for k, done in enumerate(message["content"]):
            yield from _part_events(event, message["id"], at, k, done, part, opened and k == 0)
        yield event("response.output_item.done", output_index=at, item=message)
        index += 1
    for k, item in enumerate(items[index:], start=index):
        yield event("response.output_item.added", output_index=k, item={**item, "arguments": "",
                                                                        "status": "in_progress"})
        yield event("response.function_call_arguments.delta", item_id=item["id"], output_index=k,
                    delta=item["arguments"])
        yield event("response.function_call_arguments.done", item_id=item["id"], output_index=k, name=item["name"],
                    arguments=item["arguments"])
        yield event("response.output_item.done", output_index=k, item=item)
    done = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
    yield event(done, response=final)
