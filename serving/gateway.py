"""``costline serve``: an HTTP gateway that speaks the Anthropic Messages API.

An existing app changes only its ``base_url`` (``Anthropic(base_url="http://127.0.0.1:8787")``)
and gets routing, the semantic cache, escalation and telemetry: ``POST /v1/messages`` runs
:meth:`Pipeline.answer <costline.serving.pipeline.Pipeline.answer>` and answers with an
Anthropic-shaped message whose ``model`` is the model that answered (``costline-cache`` for a
cache hit). The request's ``model`` is ignored: the router picks.

* tenant: header ``x-costline-tenant`` (or ``metadata.tenant``), else ``[serving.gateway] default_tenant``;
* task type: header ``x-costline-task-type`` (or ``metadata.task_type``), else ``default_task_type``;
* document hashes for cache invalidation: header ``x-costline-doc-hashes`` (comma-separated);
* response headers: ``x-costline-tier``, ``x-costline-routed-tier``, ``x-costline-attempts``,
  ``x-costline-escalations``, ``x-costline-success``, ``x-costline-cache-hit``, ``x-costline-request-id``.

When every tier failed with an API error the gateway answers in Anthropic's error format
(429 ``rate_limit_error``, 529 ``overloaded_error`` or 500 ``api_error``). Streaming is not
supported (400).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from costline.serving._http import HttpRequest, HttpResponse, JsonServer, Route, ServedByJsonServer
from costline.serving.backends import Prompt
from costline.serving.cache_key import scope_of_body
from costline.serving.pipeline import Answer, Pipeline
from costline.serving.settings import GatewayConfig
from costline.serving.standin import ANTHROPIC_ERROR_TYPES, last_user_text

__all__ = ["Gateway", "CACHE_MODEL"]

log = logging.getLogger(__name__)

#: The ``model`` of a message answered from the semantic cache.
CACHE_MODEL = "costline-cache"

_STOP = {"stop": "end_turn", "length": "max_tokens"}
_STATUS_OF_ERROR = {"RateLimitError": 429, "OverloadedError": 529}


class Gateway(ServedByJsonServer):
    """Serves ``pipeline`` as an Anthropic Messages API. ``start()`` returns the port."""

    def __init__(self, pipeline: Pipeline, config: GatewayConfig | None = None, *,
                 host: str | None = None, port: int | None = None) -> None:
        self.pipeline = pipeline
        self.config = config or GatewayConfig()
        self._server = JsonServer(
            [Route("POST", "/v1/messages", self._messages), Route("GET", "/v1/models", self._models)],
            host=host or self.config.host,
            port=self.config.port if port is None else port,
            not_found=lambda req: _error(404, f"no route {req.method} {req.path}"),
            on_error=lambda req, exc: _error(500, f"costline gateway failure: {type(exc).__name__}: {exc}"),
            name="costline-gateway",
        )

    # -- handlers ----------------------------------------------------------------------------
    def _messages(self, req: HttpRequest) -> HttpResponse:
        try:
            body = req.json()
        except (ValueError, UnicodeDecodeError):
            return _error(400, "the body is not valid JSON")
        if not isinstance(body, Mapping):
            return _error(400, "the body must be a JSON object")
        stream = bool(body.get("stream"))
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, Mapping) for m in messages):
            return _error(400, "messages: at least one message is required")
        max_tokens = body.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            return _error(400, "max_tokens: field required (a whole number >= 1)")
        query = last_user_text(messages)
        if not query.strip():
            return _error(400, "messages: the last user message has no text")
        meta = body.get("metadata") if isinstance(body.get("metadata"), Mapping) else {}
        cfg = self.config
        tenant = req.header(cfg.tenant_header) or str(meta.get("tenant") or "") or cfg.default_tenant
        task_type = req.header(cfg.task_type_header) or str(meta.get("task_type") or "") or cfg.default_task_type
        doc_hashes = tuple(h.strip() for h in (req.header(cfg.doc_hashes_header) or "").split(",") if h.strip())
        prompt = Prompt(tuple(messages), body.get("system"), max_tokens)
        result = self.pipeline.answer(query, task_type=task_type, tenant=tenant, doc_hashes=doc_hashes,
                                      prompt=prompt, cache_scope=scope_of_body(body))
        headers = _headers(result)
        if not result.cached and result.reply is None:
            problem = result.attempts[-1].problem if result.attempts else "no attempt"
            status = _STATUS_OF_ERROR.get(problem or "", 529 if "Overloaded" in (problem or "") else 500)
            # The gateway already retried (the SDK's retries, then escalation): ask clients not to.
            return _error(status, f"every tier failed: {result.reason}", {**headers, "x-should-retry": "false"})
        if stream:
            return HttpResponse(200, headers=headers, raw=_event_stream(_message(result)),
                                content_type="text/event-stream")
        return HttpResponse(200, _message(result), headers=headers)

    def _models(self, req: HttpRequest) -> HttpResponse:
        data = [{"type": "model", "id": t.model, "display_name": f"{t.model} ({t.name})",
                 "created_at": "2026-06-01T00:00:00Z"} for t in self.pipeline.registry]
        return HttpResponse(200, {"data": data, "has_more": False,
                                  "first_id": data[0]["id"] if data else None,
                                  "last_id": data[-1]["id"] if data else None})


def _message(result: Answer) -> dict[str, Any]:
    reply = result.reply
    if result.cached or reply is None:
        usage = {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0,
                 "cache_read_input_tokens": 0}
        model, stop, msg_id = CACHE_MODEL, "end_turn", f"msg_costline_{result.request_id or uuid.uuid4().hex}"
    else:
        fresh = max(reply.input_tokens - reply.cache_read_tokens - reply.cache_creation_tokens, 0)
        usage = {"input_tokens": fresh, "output_tokens": reply.output_tokens,
                 "cache_creation_input_tokens": reply.cache_creation_tokens,
                 "cache_read_input_tokens": reply.cache_read_tokens}
        model = reply.model
        stop = _STOP.get(reply.stop_reason or "", reply.stop_reason or "end_turn")
        msg_id = reply.id if reply.id and reply.id.startswith("msg_") else f"msg_costline_{result.request_id}"
    return {"id": msg_id, "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": result.text}], "stop_reason": stop, "stop_sequence": None,
            "usage": usage}


def _event_stream(message: dict[str, Any], chunk_chars: int = 48) -> bytes:
    """A finished message as the Messages API's server-sent events (``stream=true``).

    The answer is complete before the first event: routing, the cache and escalation decide
    which tier's answer is good enough, which a token-by-token stream would have to reveal
    before knowing. Clients that stream (``client.messages.stream``) work unchanged.
    """
    text = message["content"][0]["text"]
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 0}}
    pieces = [text[i:i + chunk_chars] for i in range(0, len(text), chunk_chars)] or [""]
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        *(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                   "delta": {"type": "text_delta", "text": piece}}) for piece in pieces),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta",
                           "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                           "usage": {"output_tokens": usage["output_tokens"]}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return b"".join(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events)


def _headers(result: Answer) -> dict[str, str]:
    return {
        "x-costline-tier": result.tier,
        "x-costline-routed-tier": result.routed_tier,
        "x-costline-attempts": str(len(result.attempts)),
        "x-costline-escalations": str(result.escalations),
        "x-costline-success": json.dumps(result.success),
        "x-costline-cache-hit": json.dumps(result.cached),
        "x-costline-request-id": result.request_id,
    }


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> HttpResponse:
    err_type = ANTHROPIC_ERROR_TYPES.get(status, "api_error")
    return HttpResponse(status, {"type": "error", "error": {"type": err_type, "message": message}},
                        headers=dict(headers or {}))
