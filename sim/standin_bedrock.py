"""**Amazon Bedrock Runtime**'s Converse API on the stand-in (what ``boto3.client("bedrock-runtime")`` speaks).

:class:`BedrockApi` is the :class:`~costline.sim.standin.StandInServer`'s Bedrock API (``server.bedrock``):

* ``POST /model/{modelId}/converse``: ``messages`` (``user`` / ``assistant`` turns of content blocks),
  ``system`` blocks, ``inferenceConfig.maxTokens``; ``{"cachePoint": {"type": "default"}}`` blocks mark
  prompt-cache checkpoints as Anthropic's ``cache_control`` does: the prompt up to a checkpoint (at least
  ``min_cache_tokens`` long) is written to the cache the first time and read from it while cached;
* ``POST /model/{modelId}/converse-stream``: the same answer as an AWS event stream
  (``application/vnd.amazon.eventstream``: ``messageStart``, ``contentBlockDelta`` …,
  ``contentBlockStop``, ``messageStop``, ``metadata`` with the usage);
* ``POST /model/{modelId}/invoke`` with an Anthropic Messages body (``anthropic_version``): the Messages API's
  answer (its ``cache_control`` prompt caching, usage without the cache) and Bedrock's
  ``x-amzn-bedrock-{input,output,cache-read-input,cache-write-input}-token-count`` headers (what
  ``anthropic.AnthropicBedrock`` sends for ``messages.create``);
* ``POST /model/{modelId}/invoke-with-response-stream``: the same answer as the Messages API streams it, each
  event an event-stream ``chunk`` whose ``bytes`` are the event's JSON (``messages.stream`` on AnthropicBedrock);
* ``POST /model/{modelId}/count-tokens`` (``{"input": {"invokeModel": {"body": <base64 Messages body>}}}``):
  ``{"inputTokens": n}``, nothing generated.

The ``Authorization`` header of each InvokeModel / CountTokens request is kept with the model id of its path
(``auth_seen``, the last 64): a SigV4 signature
(``AWS4-HMAC-SHA256 Credential=<key>/<date>/<region>/bedrock/aws4_request, …``) or a Bedrock API key
(``Bearer …``); the stand-in accepts any.

``usage`` is Bedrock's: ``inputTokens`` **without** the cached tokens (as Anthropic's own API counts),
``cacheReadInputTokens`` and ``cacheWriteInputTokens`` beside it, ``outputTokens``, ``totalTokens`` (all four).
Model ids are Bedrock's (``anthropic.claude-haiku-4-5-20251001-v1:0``, a cross-region profile
``us.anthropic.…``): the ones the stand-in's pricing knows, by their normalised id; another is ``400
ValidationException``. Errors are Bedrock's (``{"message": ...}`` with the ``x-amzn-ErrorType`` header
boto3 reads the code from); injected bursts (``inject_errors(..., api="bedrock")``): 429
``ThrottlingException``, 500 ``InternalServerException``, 503 ``ServiceUnavailableException`` (529 too).

Every data-plane request is logged with ``api="bedrock"``: input = all input tokens (cached included, as
costline counts them), ``cache_read_tokens`` / ``cache_creation_tokens`` as served.
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from costline import contract
from costline.pricing import normalize_model_id
from costline.serving.gateway._http import HttpRequest, HttpResponse, Route
from costline.serving.gateway.bedrock_api import chunk, event_message
from costline.sim.standin_model import count_tokens

if TYPE_CHECKING:
    from costline.sim.standin import StandInServer

__all__ = ["BEDROCK", "BedrockApi", "bedrock_error", "event_message", "is_bedrock_path"]

BEDROCK = "bedrock"
DEFAULT_MAX_TOKENS = 4096
_ERROR_TYPES: dict[int, str] = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}


def is_bedrock_path(path: str) -> bool:
    """Whether a request path is Bedrock Runtime's (its errors are then Bedrock's shape)."""
    return path.startswith("/model/")


def bedrock_error(server: StandInServer, status: int, message: str) -> HttpResponse:
    status = 503 if status == 529 else status
    kind = _ERROR_TYPES.get(status, "InternalServerException" if status >= 500 else "ValidationException")
    return HttpResponse(status, {"message": message},
                        headers={"x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/",
                                 **server._retry_headers(status)})


class _BadRequest(Exception):
    pass


def _texts_and_checkpoints(body: Mapping[str, Any]) -> tuple[list[str], list[int], str]:
    """(the prompt's text blocks in order: system, then each turn's; after how many of them each cachePoint
    sits; the last user turn's text)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _BadRequest("1 validation error detected: Value at 'messages' failed to satisfy constraint: "
                          "Member must not be null")
    texts: list[str] = []
    points: list[int] = []
    query = ""

    def blocks(content: Any) -> list[str]:
        got = []
        for block in content if isinstance(content, list) else []:
            if not isinstance(block, Mapping):
                raise _BadRequest("a content block must be an object")
            if "cachePoint" in block:
                points.append(len(texts))
            elif isinstance(block.get("text"), str):
                texts.append(block["text"])
                got.append(block["text"])
        return got

    blocks(body.get("system"))
    for m in messages:
        if not isinstance(m, Mapping) or m.get("role") not in ("user", "assistant"):
            raise _BadRequest("a message needs the role user or assistant")
        got = blocks(m.get("content"))
        if m.get("role") == "user" and got:
            query = "\n".join(got)
    return texts, points, query


class BedrockApi:
    """The Converse API's handlers on ``server`` (its knobs, log, model, prompt cache and latency)."""

    def __init__(self, server: StandInServer) -> None:
        self.server = server
        #: (Authorization header: SigV4 or ``Bearer``, model id) of the last InvokeModel / CountTokens requests.
        self.auth_seen: collections.deque[tuple[str, str]] = collections.deque(maxlen=64)

    def routes(self) -> list[Route]:
        return [Route("POST", "/model/{model}/converse", self._converse),
                Route("POST", "/model/{model}/converse-stream", self._converse_stream),
                Route("POST", "/model/{model}/invoke", self._invoke),
                Route("POST", "/model/{model}/invoke-with-response-stream", self._invoke_stream),
                Route("POST", "/model/{model}/count-tokens", self._count_tokens)]

    def inject_errors(self, status: int, count: int = 1) -> None:
        """Fail the next ``count`` Bedrock requests with ``status`` (Bedrock's error shape)."""
        with self.server._lock:
            self.server._errors.extend([(int(status), BEDROCK)] * count)

    def _invoke(self, req: HttpRequest, *, stream: bool = False) -> HttpResponse:
        """InvokeModel with an Anthropic Messages body (``anthropic_version`` ``bedrock-2023-05-31``, no model):
        the Messages API's answer, and Bedrock's token-count headers (input without the cache, as the body's);
        ``stream``: InvokeModelWithResponseStream, the Messages API's events in event-stream chunks."""
        from costline.sim.standin import LoggedRequest, _ApiError

        srv = self.server
        model = unquote(req.params["model"])
        self.auth_seen.append((req.header("authorization") or "", model))
        status = srv._take_error(BEDROCK)
        if status is not None:
            srv.log.add(LoggedRequest(BEDROCK, model, 503 if status == 529 else status, None, False))
            return bedrock_error(srv, status, "Too many requests, please wait before trying again. (stand-in burst)")
        try:
            body = req.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, Mapping) or not isinstance(body.get("anthropic_version"), str):
            srv.log.add(LoggedRequest(BEDROCK, model, 400, None, False))
            return bedrock_error(srv, 400, "Malformed input request: anthropic_version is required")
        try:
            message = srv._message({k: v for k, v in body.items() if k != "anthropic_version"} | {"model": model},
                                   key=None, api=BEDROCK)
        except _ApiError as exc:
            srv.log.add(LoggedRequest(BEDROCK, model, 400, None, False))
            return bedrock_error(srv, 400, "The provided model identifier is invalid." if exc.status == 404
                                 else exc.message)
        message["id"] = "msg_bdrk_" + message["id"].removeprefix("msg_")  # Bedrock's Claude ids: msg_bdrk_...
        usage = message["usage"]
        tier = srv.tier_of(model)
        if stream:
            return HttpResponse(200, content_type="application/vnd.amazon.eventstream",
                                stream=srv._anthropic_events(message, tier or "", None, encode=lambda _event, data: chunk(data)))
        if tier:
            srv._latency(tier)
        return HttpResponse(200, message, headers={
            "x-amzn-bedrock-input-token-count": str(usage["input_tokens"]),
            "x-amzn-bedrock-output-token-count": str(usage["output_tokens"]),
            "x-amzn-bedrock-cache-read-input-token-count": str(usage["cache_read_input_tokens"]),
            "x-amzn-bedrock-cache-write-input-token-count": str(usage["cache_creation_input_tokens"]),
            "x-amzn-bedrock-invocation-latency": "1"})

    def _invoke_stream(self, req: HttpRequest) -> HttpResponse:
        return self._invoke(req, stream=True)

    def _count_tokens(self, req: HttpRequest) -> HttpResponse:
        """CountTokens for an InvokeModel body: the input tokens the Messages request would cost (system and turns)."""
        from costline.sim.standin import _ApiError, _blocks

        srv = self.server
        model = unquote(req.params["model"])
        self.auth_seen.append((req.header("authorization") or "", model))
        tier = srv.tier_of(model)
        if tier is None or tier == contract.TIER_STUDENT:
            return bedrock_error(srv, 400, "The provided model identifier is invalid.")
        try:
            outer = req.json()
            raw = outer["input"]["invokeModel"]["body"]
            body = json.loads(base64.b64decode(raw, validate=True))
            messages = body["messages"]
            if not isinstance(messages, list) or not messages:
                raise ValueError("messages")
            total = sum(count_tokens(t) for t, _ in _blocks(body.get("system"))) + sum(
                count_tokens(t) for m in messages if isinstance(m, Mapping) for t, _ in _blocks(m.get("content")))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, binascii.Error, _ApiError):
            return bedrock_error(srv, 400, "Malformed input request: input.invokeModel.body must be a base64 "
                                           "InvokeModel body with messages")
        return HttpResponse(200, {"inputTokens": total})

    def _converse(self, req: HttpRequest) -> HttpResponse:
        return self._answer(req, stream=False)

    def _converse_stream(self, req: HttpRequest) -> HttpResponse:
        return self._answer(req, stream=True)

    def _cache(self, model: str, texts: list[str], points: list[int]) -> tuple[int, int]:
        """(read, written) cached tokens: the longest cached checkpoint prefix is read, the longer ones written."""
        srv = self.server
        prefixes = []
        for n in sorted(set(points)):
            tokens = sum(count_tokens(t) for t in texts[:n])
            if n and tokens >= srv.config.min_cache_tokens:
                key = hashlib.blake2b(b"bedrock\x1e" + normalize_model_id(model).encode() + b"\x1e"
                                      + "\x1e".join(texts[:n]).encode(), digest_size=16).hexdigest()
                prefixes.append((key, tokens))
        now = srv._now()
        with srv._lock:
            read = max((n for k, n in prefixes if srv._prompt_cache.get(k, -1.0) > now), default=0)
            for k, _ in prefixes:
                srv._prompt_cache[k] = now + srv.config.cache_ttl_s
        return read, max(max((n for _, n in prefixes), default=0) - read, 0)

    def _answer(self, req: HttpRequest, *, stream: bool) -> HttpResponse:
        from costline.sim.standin import LoggedRequest

        srv = self.server
        model = unquote(req.params["model"])
        status = srv._take_error(BEDROCK)
        if status is not None:
            srv.log.add(LoggedRequest(BEDROCK, model, 503 if status == 529 else status, None, False))
            return bedrock_error(srv, status, "Too many requests, please wait before trying again. (stand-in burst)"
                                  if status == 429 else "The service is unavailable. (stand-in burst)")
        tier = srv.tier_of(model)
        if tier is None or tier == contract.TIER_STUDENT:
            srv.log.add(LoggedRequest(BEDROCK, model, 400, None, False))
            return bedrock_error(srv, 400, "The provided model identifier is invalid.")
        try:
            body = req.json()
            if not isinstance(body, Mapping):
                raise _BadRequest("the body must be an object")
            texts, points, query = _texts_and_checkpoints(body)
            config = body.get("inferenceConfig") or {}
            limit = config.get("maxTokens", DEFAULT_MAX_TOKENS) if isinstance(config, Mapping) else None
            if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
                raise _BadRequest("inferenceConfig.maxTokens must be a positive integer")
        except (ValueError, UnicodeDecodeError, _BadRequest) as exc:
            srv.log.add(LoggedRequest(BEDROCK, model, 400, None, False))
            return bedrock_error(srv, 400, str(exc) or "Malformed input request")
        text, out_tokens, truncated = srv._generate(model, tier, query, limit)
        prompt = sum(count_tokens(t) for t in texts)
        read, written = self._cache(model, texts, points)
        srv.log.add(LoggedRequest(BEDROCK, model, 200, None, True, prompt, out_tokens, read, written))
        usage = {"inputTokens": prompt - read - written, "outputTokens": out_tokens,
                 "totalTokens": prompt + out_tokens, "cacheReadInputTokens": read, "cacheWriteInputTokens": written}
        stop = "max_tokens" if truncated else "end_turn"
        if stream:
            return HttpResponse(200, content_type="application/vnd.amazon.eventstream",
                                stream=self._events(text, stop, usage, tier))
        srv._latency(tier)
        return HttpResponse(200, {"output": {"message": {"role": "assistant", "content": [{"text": text}]}},
                                  "stopReason": stop, "usage": usage, "metrics": {"latencyMs": 1}})

    def _events(self, text: str, stop: str, usage: dict[str, int], tier: str) -> Iterator[bytes]:
        from costline.sim.standin import _pieces

        yield event_message("messageStart", {"role": "assistant"})
        for _, piece in self.server._paced(tier, _pieces(text)):
            yield event_message("contentBlockDelta", {"delta": {"text": piece}, "contentBlockIndex": 0})
        yield event_message("contentBlockStop", {"contentBlockIndex": 0})
        yield event_message("messageStop", {"stopReason": stop})
        yield event_message("metadata", {"usage": usage, "metrics": {"latencyMs": 1}})
