"""OpenAI's Conversations API on the gateway: ``/v1/conversations``.

A conversation is server-side state of the Responses API — its items (messages, function calls and their outputs)
in order — that ``responses.create(conversation=...)`` reads before the request's input and to which it adds the
input and the answer; the OpenAI Agents SDK's ``OpenAIConversationsSession`` and ``Runner.run(conversation_id=...)``
use it. Per tenant, in the gateway's store (:mod:`~costline.serving.gateway.response_store`):

* ``POST /v1/conversations`` (``items``, at most 20, and ``metadata``: the app's data, never a tenant claim) → the
  conversation; ``GET`` / ``POST`` (new ``metadata``) / ``DELETE /v1/conversations/{id}``;
* ``POST /v1/conversations/{id}/items`` (``items``, at most 20) → the items as added (each with an id);
  ``GET /v1/conversations/{id}/items`` (``limit`` 1-100, default 20; ``order`` ``desc`` by default or ``asc``;
  ``after`` an item id); ``GET`` / ``DELETE /v1/conversations/{id}/items/{item_id}`` (a delete answers the
  conversation).

Items are checked as the Responses API's input items are (:func:`~costline.serving.gateway.responses_api.turns_of`).
Kept ``[serving.gateway] conversations_ttl_s`` after their last change (0: the API is off), at most
``conversations_max`` per tenant, their items and metadata (its UTF-8 bytes, counted as the items' are) within
``responses_tenant_max_mib`` per tenant and ``responses_total_max_mib`` in all: past a bound, creating, adding or an
update whose metadata grows is refused, a 400 saying which bound and what to do (nothing is dropped behind a
conversation's back). Another tenant's conversation is "not found", as one never created. A delete removes the
tenant's conversation whatever its age (one already expired answers the 404 it answered before).
"""

from __future__ import annotations

import logging
import sqlite3
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from costline.serving.gateway._http import HttpRequest, HttpResponse, Route
from costline.serving.gateway.auth import Refused
from costline.serving.gateway.openai_api import openai_error
from costline.serving.gateway.response_store import StoreFull
from costline.serving.gateway.responses_api import BadParam, items_of, page_of, query_of, turns_of

if TYPE_CHECKING:
    from costline.serving.gateway.app import Gateway

__all__ = ["Conversations", "conversation_routes"]

log = logging.getLogger(__name__)

#: Items one create or add may carry (OpenAI's bound).
MAX_ITEMS = 20
#: Metadata: at most this many keys, each key and value at most this long (OpenAI's bounds).
MAX_METADATA_KEYS, MAX_KEY_CHARS, MAX_VALUE_CHARS = 16, 64, 512


class Conversations:
    """The Conversations API's routes on a :class:`~costline.serving.gateway.app.Gateway` (``created_at`` is the
    store's clock)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    # -- conversations ----------------------------------------------------------------------------------------
    def create(self, req: HttpRequest) -> HttpResponse:
        return self._with_body(req, self._create)

    def _create(self, owner: str, req: HttpRequest, body: Mapping[str, Any], headers: dict[str, str]) -> HttpResponse:
        metadata = _metadata(body.get("metadata"))
        conversation = f"conv_{uuid.uuid4().hex}"
        items = _items(body.get("items"), conversation, allow_empty=True)
        self.gateway.stored_responses.create_conversation(owner, conversation, metadata, items)
        return HttpResponse(200, self._object(owner, conversation), headers=headers)

    def retrieve(self, req: HttpRequest) -> HttpResponse:
        return self._without_body(req, lambda owner, conversation, headers: HttpResponse(
            200, self._object(owner, conversation), headers=headers))

    def update(self, req: HttpRequest) -> HttpResponse:
        return self._with_body(req, self._update)

    def _update(self, owner: str, req: HttpRequest, body: Mapping[str, Any], headers: dict[str, str]) -> HttpResponse:
        conversation = req.params["id"]
        if "metadata" not in body:
            raise BadParam("metadata", "metadata: required (the conversation's new metadata)")
        if not self.gateway.stored_responses.update_conversation(owner, conversation, _metadata(body["metadata"])):
            return _not_found(conversation, headers)
        return HttpResponse(200, self._object(owner, conversation), headers=headers)

    def delete(self, req: HttpRequest) -> HttpResponse:
        def delete(owner: str, conversation: str, headers: dict[str, str]) -> HttpResponse:
            # deleted whatever its age: one unused past conversations_ttl_s is still removed from the store, and
            # answers the 404 a read of it answers (another tenant's is never touched)
            if not self.gateway.stored_responses.delete_conversation(owner, conversation):
                return _not_found(conversation, headers)
            return HttpResponse(200, {"id": conversation, "object": "conversation.deleted", "deleted": True},
                                headers=headers)

        return self._without_body(req, delete, exists=False)

    # -- items ------------------------------------------------------------------------------------------------
    def add_items(self, req: HttpRequest) -> HttpResponse:
        return self._with_body(req, self._add_items)

    def _add_items(self, owner: str, req: HttpRequest, body: Mapping[str, Any],
                   headers: dict[str, str]) -> HttpResponse:
        conversation = req.params["id"]
        items = _items(body.get("items"), conversation)
        added = self.gateway.stored_responses.add_items(owner, conversation, items)
        if added is None:
            return _not_found(conversation, headers)
        return HttpResponse(200, _page(added, more=False), headers=headers)

    def list_items(self, req: HttpRequest) -> HttpResponse:
        def listed(owner: str, conversation: str, headers: dict[str, str]) -> HttpResponse:
            limit, order, after = page_of(query_of(req))
            try:
                page = self.gateway.stored_responses.conversation_items(owner, conversation, after=after, limit=limit,
                                                                        order=order)
            except LookupError:
                raise BadParam("after", f"after: {str(after)[:80]!r} is not an item of this conversation") from None
            if page is None:
                return _not_found(conversation, headers)
            return HttpResponse(200, _page(page[0], more=page[1]), headers=headers)

        return self._without_body(req, listed, exists=False)

    def item(self, req: HttpRequest) -> HttpResponse:
        def item(owner: str, conversation: str, headers: dict[str, str]) -> HttpResponse:
            found = self.gateway.stored_responses.conversation_item(owner, conversation, req.params["item_id"])
            if found is None:
                return _item_not_found(req.params["item_id"], headers)
            return HttpResponse(200, found, headers=headers)

        return self._without_body(req, item)

    def delete_item(self, req: HttpRequest) -> HttpResponse:
        def delete(owner: str, conversation: str, headers: dict[str, str]) -> HttpResponse:
            if not self.gateway.stored_responses.delete_conversation_item(owner, conversation, req.params["item_id"]):
                return _item_not_found(req.params["item_id"], headers)
            return HttpResponse(200, self._object(owner, conversation), headers=headers)

        return self._without_body(req, delete)

    # -- the checks every route shares --------------------------------------------------------------------------
    def _object(self, owner: str, conversation: str) -> dict[str, Any]:
        found = self.gateway.stored_responses.conversation(owner, conversation) or {
            "id": conversation, "created_at": 0, "metadata": {}}  # deleted meanwhile: still say what was done
        return {"object": "conversation", **found}

    def _with_body(self, req: HttpRequest, answer: Callable[..., HttpResponse]) -> HttpResponse:
        entered = self.gateway._entry(req, openai_error, metadata_tenant=False)  # a conversation's metadata is data
        if isinstance(entered, HttpResponse):
            return entered
        admitted, body = entered
        return self._guarded(lambda: answer(self._owner(admitted.tenant), req, body, dict(admitted.headers)),
                             admitted.headers)

    def _without_body(self, req: HttpRequest, answer: Callable[[str, str, dict[str, str]], HttpResponse], *,
                      exists: bool = True) -> HttpResponse:
        admitted = self.gateway.guard.admit(req)
        if isinstance(admitted, Refused):
            return openai_error(admitted.status, admitted.message, admitted.headers)
        owner, conversation, headers = self._owner(admitted.tenant), req.params["id"], dict(admitted.headers)

        def run() -> HttpResponse:
            if exists and self.gateway.stored_responses.conversation(owner, conversation) is None:
                return _not_found(conversation, headers)
            return answer(owner, conversation, headers)

        return self._guarded(run, headers)

    def _owner(self, tenant: str | None) -> str:
        return tenant or self.gateway.config.default_tenant

    def _guarded(self, run: Callable[[], HttpResponse], headers: Mapping[str, str]) -> HttpResponse:
        if self.gateway.config.conversations_ttl_s <= 0:
            return openai_error(400, "conversations are turned off on this gateway ([serving.gateway] "
                                     "conversations_ttl_s = 0): send the whole conversation in input", headers)
        try:
            return run()
        except BadParam as bad:
            return openai_error(400, str(bad), headers, param=bad.param)
        except StoreFull as full:
            return openai_error(400, str(full), headers)
        except sqlite3.Error:
            log.warning("costline gateway: the stored conversations failed", exc_info=True)
            return openai_error(503, "the stored conversations could not be changed just now: retry later", headers)


def conversation_routes(api: Conversations, preflight: Callable[[HttpRequest], HttpResponse]) -> list[Route]:
    """The API's routes (and their CORS preflights) for the gateway's route table."""
    return [Route("POST", "/v1/conversations", api.create), Route("OPTIONS", "/v1/conversations", preflight),
            Route("GET", "/v1/conversations/{id}", api.retrieve), Route("POST", "/v1/conversations/{id}", api.update),
            Route("DELETE", "/v1/conversations/{id}", api.delete),
            Route("OPTIONS", "/v1/conversations/{id}", preflight),
            Route("POST", "/v1/conversations/{id}/items", api.add_items),
            Route("GET", "/v1/conversations/{id}/items", api.list_items),
            Route("OPTIONS", "/v1/conversations/{id}/items", preflight),
            Route("GET", "/v1/conversations/{id}/items/{item_id}", api.item),
            Route("DELETE", "/v1/conversations/{id}/items/{item_id}", api.delete_item),
            Route("OPTIONS", "/v1/conversations/{id}/items/{item_id}", preflight)]


def _metadata(raw: Any) -> dict[str, str]:
    """``metadata`` as the API takes it (at most 16 string keys of at most 64 characters, string values of at most
    512), or :class:`BadParam`."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or len(raw) > MAX_METADATA_KEYS or not all(
            isinstance(k, str) and len(k) <= MAX_KEY_CHARS and isinstance(v, str) and len(v) <= MAX_VALUE_CHARS
            for k, v in raw.items()):
        raise BadParam("metadata", f"metadata: at most {MAX_METADATA_KEYS} string keys of at most {MAX_KEY_CHARS} "
                                   f"characters, each with a string value of at most {MAX_VALUE_CHARS}")
    return dict(raw)


def _items(raw: Any, conversation: str, *, allow_empty: bool = False) -> list[dict[str, Any]]:
    """``items`` checked as the Responses API's input items (at most :data:`MAX_ITEMS`), each with an id."""
    if raw is None and allow_empty:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_ITEMS or (not raw and not allow_empty):
        raise BadParam("items", f"items: a list of 1 to {MAX_ITEMS} items")
    if raw:
        try:
            turns_of(raw)
        except BadParam as bad:
            raise BadParam(bad.param.replace("input", "items", 1), str(bad).replace("input", "items", 1)) from None
    return items_of(raw, f"conv_{conversation[5:]}_{uuid.uuid4().hex[:8]}")


def _page(items: list[dict[str, Any]], *, more: bool) -> dict[str, Any]:
    return {"object": "list", "data": items, "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None, "has_more": more}


def _not_found(conversation: str, headers: Mapping[str, str]) -> HttpResponse:
    return openai_error(404, f"Conversation with id '{conversation[:80]}' not found: never created, another "
                             "tenant's, deleted, or unused for [serving.gateway] conversations_ttl_s", headers)


def _item_not_found(item: str, headers: Mapping[str, str]) -> HttpResponse:
    return openai_error(404, f"Item with id '{item[:80]}' not found in this conversation", headers)
