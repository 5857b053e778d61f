"""The **Gemini API** (Google AI Studio's REST shape, what the ``google-genai`` SDK speaks) on the stand-in.

:class:`GeminiApi` is the :class:`~costline.sim.standin.StandInServer`'s Gemini API (``server.gemini``)

* ``POST /v1beta/models/{model}:generateContent`` (``/v1/`` too; and Vertex AI's
  ``/v1beta1/projects/{project}/locations/{location}/publishers/google/models/{model}:generateContent``): ``contents`` (``user`` / ``model``
  turns of ``parts``), ``systemInstruction``, ``generationConfig.maxOutputTokens`` and
  ``generationConfig.thinkingConfig`` (``thinkingBudget``, ``includeThoughts``);
* ``POST /v1beta/models/{model}:streamGenerateContent?alt=sse``: the same answer as server-sent
  events, one ``GenerateContentResponse`` a chunk (``data: {...}``), each with ``responseId``,
  ``modelVersion`` and ``usageMetadata`` (the prompt's counts on every chunk, the candidates' count and
  ``finishReason`` on the last); without ``alt=sse`` the chunks come as one JSON array;
* ``POST /v1beta/models/{model}:countTokens`` (``{"totalTokens": N}``: free, not logged as paid),
  ``:embedContent`` and ``:batchEmbedContents`` (deterministic 8-dimensional vectors; the Gemini API
  reports no usage for them; the log counts the input's tokens).

``usageMetadata`` is the Gemini API's: ``promptTokenCount`` (the whole prompt, cached tokens
*included*), ``cachedContentTokenCount`` (the implicitly cached part of it; left out when 0),
``candidatesTokenCount`` (the answer), ``thoughtsTokenCount`` (a thinking model's reasoning: billed as
output and **not** part of ``candidatesTokenCount``; left out when 0) and ``totalTokenCount`` (the
sum of prompt, candidates and thoughts). A model thinks when its name contains ``thinking`` or starts
with ``gemini-2.5`` / ``gemini-3`` (``thinkingBudget: 0`` turns it off; a positive budget caps it);
``includeThoughts`` returns the thought as a part with ``"thought": true``.

Implicit caching, kept simple and deterministic: every prefix of the prompt (system instruction,
then each turn) that ends at a turn's end and is at least ``min_cache_tokens`` long is cached for
``cache_ttl_s``; a later request of the same model with such a prefix reads the longest one
(``cachedContentTokenCount``). No write charge (Gemini charges none for implicit caching).

Models: the ones the stand-in's pricing lists (their tier), and any other ``gemini-*`` name (``pro``:
the mid tier, else the budget tier); another name is ``404 NOT_FOUND``. Errors are Google's shape
(``{"error": {"code", "message", "status"}}``); injected bursts (``inject_errors(..., api="gemini")``
or ``"any"``) answer ``429 RESOURCE_EXHAUSTED``, ``500 INTERNAL``, ``503 UNAVAILABLE`` (Anthropic's 529
is served as 503); an injected stream error ends a stream after some chunks with an ``{"error": ...}``
chunk, as the API does.

Every data-plane request is logged with ``api="gemini"``: input = ``promptTokenCount`` (cached
included), ``cache_read_tokens`` = ``cachedContentTokenCount``, output = candidates **+ thoughts**
(what is billed as output).
"""

from __future__ import annotations

import hashlib
import json
from array import array
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from costline import contract
from costline.pricing import normalize_model_id
from costline.serving.gateway._http import HttpRequest, HttpResponse, Route
from costline.sim.standin_model import count_tokens, tokenize

if TYPE_CHECKING:
    from costline.sim.standin import StandInServer

__all__ = ["GEMINI", "GeminiApi", "attach", "gemini_error", "is_gemini_path", "thinks"]

GEMINI = "gemini"
#: maxOutputTokens when the request sets none (the API's default for current models).
DEFAULT_MAX_OUTPUT_TOKENS = 8192
_STATUS_NAMES: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_INJECTED: dict[int, str] = {
    429: "Resource has been exhausted (e.g. check quota). (stand-in burst)",
    500: "An internal error has occurred. (stand-in burst)",
    503: "The model is overloaded. Please try again later. (stand-in burst)",
}
_PATH_PREFIXES = ("/v1beta/models/", "/v1/models/")


def is_gemini_path(path: str) -> bool:
    """Whether a request path is the Gemini API's (its errors are then Google's shape): anything under
    ``/v1beta/``, and ``/v1/models/{model}:{method}``."""
    path = path.split("?", 1)[0]
    return (path.startswith(("/v1beta/", "/v1beta1/")) or "/publishers/google/models/" in path
            or (path.startswith(_PATH_PREFIXES) and ":" in path.rsplit("/", 1)[-1]))


def thinks(model: str) -> bool:
    """Whether the stand-in's ``model`` is a thinking model (reports ``thoughtsTokenCount``)."""
    name = normalize_model_id(model).lower().removeprefix("models/")
    return "thinking" in name or name.startswith(("gemini-2.5", "gemini-3"))


def gemini_error(server: StandInServer, status: int, message: str) -> HttpResponse:
    """Google's error body (a 529 is served as 503 UNAVAILABLE: Google has no 529)."""
    status = 503 if status == 529 else status
    name = _STATUS_NAMES.get(status, "UNKNOWN" if status < 500 else "INTERNAL")
    return HttpResponse(status, {"error": {"code": status, "message": message, "status": name}},
                        headers=server._retry_headers(status))


def attach(server: StandInServer) -> GeminiApi:
    """The server's :class:`GeminiApi` (every stand-in serves the Gemini API: ``server.gemini``)."""
    return server.gemini


def _part_text(part: Any) -> str:
    if not isinstance(part, Mapping):
        return ""
    if isinstance(part.get("text"), str):
        return part["text"]
    return json.dumps(part, sort_keys=True)


def _content_text(content: Any) -> str:
    """The text of a ``Content`` (``{"role", "parts": [...]}``), a bare string, or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        parts = content.get("parts")
        return "\n".join(_part_text(p) for p in parts) if isinstance(parts, list) else ""
    if isinstance(content, list):
        return "\n".join(_part_text(p) for p in content)
    return ""


def _field(obj: Mapping[str, Any], name: str, default: Any) -> Any:
    """A request field in either spelling the API accepts (``thinkingBudget`` / ``thinking_budget``:
    google-genai sends ``thinkingConfig``'s fields in snake case)."""
    if name in obj:
        return obj[name]
    snake = "".join("_" + ch.lower() if ch.isupper() else ch for ch in name)
    return obj.get(snake, default)


class _BadRequest(Exception):
    pass


class GeminiApi:
    """The Gemini API's handlers on ``server`` (its knobs, log, model, cache and latency)."""

    def __init__(self, server: StandInServer) -> None:
        self.server = server

    def routes(self) -> list[Route]:
        vertex = "/projects/{project}/locations/{location}/publishers/google/models/{model}:{method}"
        return [Route("POST", "/v1beta/models/{model}:{method}", self._call),
                Route("POST", "/v1/models/{model}:{method}", self._call),
                # Gemini on Vertex AI (genai.Client(vertexai=True, project=..., location=...)): the same API
                Route("POST", "/v1beta1" + vertex, self._call),
                Route("POST", "/v1" + vertex, self._call)]

    # -- knobs ----------------------------------------------------------------------------------
    def inject_errors(self, status: int, count: int = 1) -> None:
        """Fail the next ``count`` Gemini requests with ``status`` (Google's error shape)."""
        with self.server._lock:
            self.server._errors.extend([(int(status), GEMINI)] * count)

    def inject_stream_errors(self, after_chunks: int = 1, count: int = 1) -> None:
        """Break the next ``count`` Gemini streams after ``after_chunks`` text chunks with an error chunk."""
        if after_chunks < 0:
            raise ValueError(f"after_chunks must be >= 0, got {after_chunks}")
        with self.server._lock:
            self.server._stream_errors.extend([(int(after_chunks), GEMINI)] * count)

    # -- dispatch --------------------------------------------------------------------------------
    def _call(self, req: HttpRequest) -> HttpResponse:
        model, method = req.params["model"], req.params["method"]
        if method in ("generateContent", "streamGenerateContent"):
            return self._generate_content(req, model, stream=method == "streamGenerateContent")
        if method == "countTokens":
            return self._count_tokens(req, model)
        if method in ("embedContent", "batchEmbedContents"):
            return self._embed(req, model, batch=method == "batchEmbedContents")
        return self._error(404, f"Method {method or '(none)'} is not supported for models/{model}.")

    def _error(self, status: int, message: str) -> HttpResponse:
        return gemini_error(self.server, status, message)

    def _tier(self, model: str) -> str | None:
        tier = self.server.tier_of(model)
        if tier is not None:
            return None if tier == contract.TIER_STUDENT else tier
        if normalize_model_id(model).lower().startswith("gemini"):
            return contract.TIER_MID if "pro" in model.lower() else contract.TIER_BUDGET
        return None

    def _injected(self, model: str) -> HttpResponse | None:
        status = self.server._take_error(GEMINI)
        if status is None:
            return None
        from costline.sim.standin import LoggedRequest

        self.server.log.add(LoggedRequest(GEMINI, model, 503 if status == 529 else status, None, False))
        return self._error(status, _INJECTED.get(503 if status == 529 else status, f"injected error {status}"))

    # -- generateContent ---------------------------------------------------------------------------
    def _prompt(self, body: Mapping[str, Any]) -> tuple[list[str], str]:
        """(texts in order: system instruction, then each turn; the last user turn's text)."""
        contents = body.get("contents")
        if isinstance(contents, (str, Mapping)):
            contents = [contents]
        if not isinstance(contents, list) or not contents:
            raise _BadRequest("* GenerateContentRequest.contents: contents is not specified")
        texts = []
        system = body.get("systemInstruction", body.get("system_instruction"))
        if system:
            texts.append(_content_text(system))
        query = ""
        for content in contents:
            text = _content_text(content)
            texts.append(text)
            if not isinstance(content, Mapping) or content.get("role", "user") == "user":
                query = text
        return texts, query

    def _generate_content(self, req: HttpRequest, model: str, *, stream: bool) -> HttpResponse:
        from costline.sim.standin import LoggedRequest

        srv = self.server
        refused = self._injected(model)
        if refused is not None:
            return refused
        try:
            body = req.json()
        except (ValueError, UnicodeDecodeError):
            return self._error(400, "Invalid JSON payload received.")
        if not isinstance(body, Mapping):
            return self._error(400, "Invalid JSON payload received: the body must be an object.")
        tier = self._tier(model)
        if tier is None:
            srv.log.add(LoggedRequest(GEMINI, model, 404, None, False))
            return self._error(404, f"models/{model} is not found for API version v1beta, or is not supported "
                                    "for generateContent. Call ListModels to see the list of available models "
                                    "and their supported methods.")
        try:
            texts, query = self._prompt(body)
        except _BadRequest as exc:
            srv.log.add(LoggedRequest(GEMINI, model, 400, None, False))
            return self._error(400, str(exc))
        config = body.get("generationConfig", body.get("generation_config")) or {}
        config = config if isinstance(config, Mapping) else {}
        limit = _field(config, "maxOutputTokens", DEFAULT_MAX_OUTPUT_TOKENS)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            srv.log.add(LoggedRequest(GEMINI, model, 400, None, False))
            return self._error(400, "* GenerateContentRequest.generation_config.max_output_tokens: must be >= 1")
        thinking = _field(config, "thinkingConfig", {})
        thinking = thinking if isinstance(thinking, Mapping) else {}
        text, out_tokens, truncated = srv._generate(model, tier, query, limit)
        thought, thought_tokens = self._thought(model, query, thinking)
        prompt = sum(count_tokens(t) for t in texts)
        read = srv._automatic_cache_usage(model, texts, b"gemini-implicit")
        srv.log.add(LoggedRequest(GEMINI, model, 200, None, True, prompt, out_tokens + thought_tokens, read, 0))
        usage: dict[str, Any] = {"promptTokenCount": prompt}
        if read:
            usage["cachedContentTokenCount"] = read
        usage["candidatesTokenCount"] = out_tokens
        if thought_tokens:
            usage["thoughtsTokenCount"] = thought_tokens
        usage["totalTokenCount"] = prompt + out_tokens + thought_tokens
        usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
        if read:
            usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": read}]
        parts: list[dict[str, Any]] = []
        if thought and _field(thinking, "includeThoughts", False):
            parts.append({"text": thought, "thought": True})
        parts.append({"text": text})
        response = {
            "candidates": [{"content": {"parts": parts, "role": "model"},
                            "finishReason": "MAX_TOKENS" if truncated else "STOP", "index": 0}],
            "usageMetadata": usage,
            "modelVersion": normalize_model_id(model).removeprefix("models/"),
            "responseId": f"gem_standin_{next(srv._ids):08d}",
        }
        if stream:
            break_after = srv._take_error(GEMINI, srv._stream_errors)
            chunks = self._chunks(response, tier, break_after)
            if "alt=sse" in req.path.split("?", 1)[-1]:
                return HttpResponse(200, content_type="text/event-stream",
                                    stream=(b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks))
            return HttpResponse(200, list(chunks))
        srv._latency(tier)
        return HttpResponse(200, response)

    def _thought(self, model: str, query: str, thinking: Mapping[str, Any]) -> tuple[str, int]:
        """(thought text, thoughts tokens) of a thinking model's answer to ``query``; ("", 0) for others."""
        budget = _field(thinking, "thinkingBudget", None)
        if not thinks(model) or budget == 0:
            return "", 0
        pieces = tokenize(f"The user asks: {query.strip()} I should work out what they need first, "
                          "then answer it briefly and plainly.")
        if isinstance(budget, int) and not isinstance(budget, bool) and budget > 0:
            pieces = pieces[:budget]
        return " ".join(pieces), len(pieces)

    def _chunks(self, response: dict[str, Any], tier: str, break_after: int | None) -> Iterator[dict[str, Any]]:
        """The response as streamed chunks: a thought chunk (if returned), then the text a few words a chunk;
        every chunk has the prompt's usage, the last the candidates' count and the finish reason."""
        from costline.sim.standin import _pieces

        usage = response["usageMetadata"]
        head = {k: v for k, v in usage.items() if k not in ("candidatesTokenCount", "candidatesTokensDetails")}
        head["totalTokenCount"] = usage["promptTokenCount"] + usage.get("thoughtsTokenCount", 0)
        candidate = response["candidates"][0]
        parts = candidate["content"]["parts"]
        thought = [p for p in parts if p.get("thought")]
        pieces = _pieces(parts[-1]["text"])
        ids = {"modelVersion": response["modelVersion"], "responseId": response["responseId"]}

        def chunk(part: dict[str, Any], last: bool = False) -> dict[str, Any]:
            cand: dict[str, Any] = {"content": {"parts": [part], "role": "model"}, "index": 0}
            if last:
                cand["finishReason"] = candidate["finishReason"]
            return {"candidates": [cand], "usageMetadata": usage if last else head, **ids}

        if thought:
            yield chunk(thought[0])
        for i, piece in self.server._paced(tier, pieces):
            if break_after is not None and i >= break_after:
                yield {"error": {"code": 500, "message": "An internal error has occurred. (stand-in, mid-stream)",
                                 "status": "INTERNAL"}}
                return
            yield chunk({"text": piece}, last=i == len(pieces) - 1)

    # -- countTokens, embeddings ------------------------------------------------------------------
    def _count_tokens(self, req: HttpRequest, model: str) -> HttpResponse:
        try:
            body = req.json()
            if not isinstance(body, Mapping):
                raise _BadRequest("the body must be an object")
            inner = body.get("generateContentRequest")
            texts, _ = self._prompt(inner if isinstance(inner, Mapping) else body)
        except (ValueError, UnicodeDecodeError, _BadRequest) as exc:
            return self._error(400, f"Invalid countTokens request: {exc}")
        if self._tier(model) is None:
            return self._error(404, f"models/{model} is not found for API version v1beta.")
        total = sum(count_tokens(t) for t in texts)
        return HttpResponse(200, {"totalTokens": total,
                                  "promptTokensDetails": [{"modality": "TEXT", "tokenCount": total}]})

    def _embed(self, req: HttpRequest, model: str, *, batch: bool) -> HttpResponse:
        from costline.sim.standin import LoggedRequest

        refused = self._injected(model)
        if refused is not None:
            return refused
        try:
            body = req.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        requests = body.get("requests") if batch and isinstance(body, Mapping) else [body]
        if not isinstance(requests, list) or not requests or not all(
                isinstance(r, Mapping) and isinstance(r.get("content"), Mapping) for r in requests):
            return self._error(400, "* EmbedContentRequest.content: content is not specified")
        texts = [_content_text(r["content"]) for r in requests]
        tokens = sum(count_tokens(t) for t in texts)
        self.server.log.add(LoggedRequest(GEMINI, model, 200, None, True, tokens, 0))
        vectors = []
        for text in texts:
            raw = [b - 127.5 for b in hashlib.sha256(text.encode()).digest()[:8]]
            norm = sum(x * x for x in raw) ** 0.5 or 1.0
            vectors.append({"values": array("f", (x / norm for x in raw)).tolist()})
        if batch:
            return HttpResponse(200, {"embeddings": vectors})
        return HttpResponse(200, {"embedding": vectors[0]})

