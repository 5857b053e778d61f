"""**Claude on Google Vertex AI** on the stand-in (what ``anthropic.AnthropicVertex`` speaks).

:class:`VertexClaudeApi` is the :class:`~costline.sim.standin.StandInServer`'s Vertex AI publisher endpoint for
Anthropic's models (``server.vertex``), under ``/v1/projects/{project}/locations/{region}/publishers/anthropic/models/``:

* ``{model}:rawPredict``: a Messages API body without its model (``anthropic_version`` instead), answered as the
  Messages API answers (usage, prompt caching, tools: the stand-in's own Messages model);
* ``{model}:streamRawPredict``: the same with ``"stream": true``, as the Messages API's server-sent events;
* ``count-tokens:rawPredict``: a Messages body with its model: ``{"input_tokens": n}``.

Model ids are Vertex's (``claude-haiku-4-5@20251001``): the ones the stand-in's pricing knows by their normalised
id; another is a 404. Errors are the Messages API's shape (Vertex passes Claude's own through); injected bursts
with ``inject_errors``. The ``Authorization`` header of each request is kept (``auth_seen``: the last 64, with the
project and region of the path). Every answered request is logged with ``api="vertex"``.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import TYPE_CHECKING

from costline import contract
from costline.serving.gateway._http import HttpRequest, HttpResponse, Route

if TYPE_CHECKING:
    from costline.sim.standin import StandInServer

__all__ = ["VERTEX", "VertexClaudeApi"]

VERTEX = "vertex"
_PREFIX = "/v1/projects/{project}/locations/{region}/publishers/anthropic/models/{model}:{method}"


class VertexClaudeApi:
    """Claude's Vertex AI methods on ``server`` (its knobs, log, Messages model, prompt cache and latency)."""

    def __init__(self, server: StandInServer) -> None:
        self.server = server
        #: (Authorization header, project, region) of the last requests, oldest first.
        self.auth_seen: collections.deque[tuple[str, str, str]] = collections.deque(maxlen=64)

    def routes(self) -> list[Route]:
        return [Route("POST", _PREFIX, self._call)]

    def inject_errors(self, status: int, count: int = 1) -> None:
        """Fail the next ``count`` Vertex requests with ``status``."""
        with self.server._lock:
            self.server._errors.extend([(int(status), VERTEX)] * count)

    def _call(self, req: HttpRequest) -> HttpResponse:
        from costline.sim.standin import LoggedRequest, _ApiError, _injected_message, _json

        srv = self.server
        self.auth_seen.append((req.header("authorization") or "", req.params["project"], req.params["region"]))
        model, method = req.params["model"], req.params["method"]
        if method not in ("rawPredict", "streamRawPredict") or not model:
            return srv._error_response(req, 404, f"no method {model}:{method!r} (rawPredict, streamRawPredict)")
        if model == "count-tokens":
            return srv._count_tokens(req)
        status = srv._take_error(VERTEX)
        if status is not None:
            srv.log.add(LoggedRequest(VERTEX, model, status, None, False))
            return srv._error_response(req, status, _injected_message(status))
        body = _json(req)
        if not isinstance(body, Mapping) or not isinstance(body.get("anthropic_version"), str):
            srv.log.add(LoggedRequest(VERTEX, model, 400, None, False))
            return srv._error_response(req, 400, "anthropic_version: field required")
        stream = body.get("stream") is True
        if stream != (method == "streamRawPredict"):
            return srv._error_response(req, 400, f"{method} with stream={stream}: streamRawPredict streams, rawPredict "
                                                 "does not")
        tier = srv.tier_of(model)
        try:
            message = srv._message({k: v for k, v in body.items() if k not in ("anthropic_version", "stream")}
                                   | {"model": model}, key=None, api=VERTEX)
        except _ApiError as exc:
            srv.log.add(LoggedRequest(VERTEX, model, exc.status, None, False))
            return srv._error_response(req, exc.status, exc.message)
        message["id"] = "msg_vrtx_" + message["id"].removeprefix("msg_")  # Vertex's Claude ids: msg_vrtx_...
        if stream:
            return HttpResponse(200, content_type="text/event-stream",
                                stream=srv._anthropic_events(message, tier or "", None))
        if tier and tier != contract.TIER_STUDENT:
            srv._latency(tier)
        return HttpResponse(200, message)
