"""`costline distill serve`: a local OpenAI-compatible server for a base model + LoRA adapter.

For development and the demo: the student the gateway reaches at ``[serving.backends]
student_base_url`` is then a model costline trained, not the stand-in's rules. It speaks the
subset of vLLM's API the serving path and the drift job use — ``POST /v1/chat/completions``
(non-streaming; greedy) and ``GET /v1/models`` — and answers for the adapter name (as vLLM's
``--lora-modules NAME=PATH``) and the base model's name. vLLM stays the production server.
Requests are answered one at a time (a lock around generation).
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

from costline.serving.gateway._http import (HttpRequest, HttpResponse, JsonServer, Route, ServedByJsonServer,
                                            not_allowed_with)

__all__ = ["StudentServer"]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(str(p.get("text", "")) for p in content or [] if isinstance(p, dict) and p.get("type") == "text")


class StudentServer(ServedByJsonServer):
    """Serves ``adapter`` on ``base_model`` under ``name``. ``start()`` returns the port."""

    def __init__(self, base_model: str | Path, adapter: str | Path | None, name: str, *, host: str = "127.0.0.1",
                 port: int = 8000, max_new_tokens: int = 256, threads: int = 0, device: str = "auto") -> None:
        from costline.distill.model import load_student, set_threads

        set_threads(threads)
        self.name = name
        self.base_name = str(base_model)
        self.max_new_tokens = max_new_tokens
        self.tokenizer, self.model = load_student(base_model, adapter, device=device)
        self._lock = threading.Lock()
        self._server = JsonServer(
            [Route("POST", "/v1/chat/completions", self._chat), Route("GET", "/v1/models", self._models)],
            host=host, port=port, name="costline-distill-serve",
            not_found=lambda req: self._error(404, f"no route {req.method} {req.path}"),
            on_error=lambda req, exc: self._error(500, f"student server failure: {exc}"),
            not_allowed=not_allowed_with(lambda req, status, message: self._error(status, message)))

    @property
    def openai_url(self) -> str:
        return self._server.url + "/v1"

    @staticmethod
    def _error(status: int, message: str) -> HttpResponse:
        kind = {400: "BadRequestError", 404: "NotFoundError", 405: "invalid_request_error"}.get(status,
                                                                                                  "InternalServerError")
        return HttpResponse(status, {"object": "error", "message": message, "type": kind, "code": status})

    def _models(self, req: HttpRequest) -> HttpResponse:
        data = [{"id": m, "object": "model", "owned_by": "costline", "created": 0} for m in (self.name, self.base_name)]
        return HttpResponse(200, {"object": "list", "data": data})

    def _chat(self, req: HttpRequest) -> HttpResponse:
        from costline.distill.model import format_prompt, generate

        try:
            body = req.json()
        except ValueError:
            return self._error(400, "the body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
            return self._error(400, "messages: at least one message is required")
        model = body.get("model") or self.name
        if model not in (self.name, self.base_name):
            return self._error(404, f"the model `{model}` does not exist (serving {self.name})")
        if body.get("stream"):
            return self._error(400, "stream=true is not supported by the development server: use vLLM")
        system = "\n".join(_text(m.get("content")) for m in body["messages"] if m.get("role") == "system") or None
        turns = [{"role": m.get("role", "user"), "content": _text(m.get("content"))}
                 for m in body["messages"] if m.get("role") != "system"]
        max_new = int(body.get("max_tokens") or body.get("max_completion_tokens") or self.max_new_tokens)
        prompt = format_prompt(self.tokenizer, system, turns)
        with self._lock:
            text, n_in, n_out = generate(self.tokenizer, self.model, [prompt], max_new_tokens=max_new)[0]
        return HttpResponse(200, {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "length" if n_out >= max_new else "stop"}],
            "usage": {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}})
