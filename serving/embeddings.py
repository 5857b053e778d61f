"""The app's own embedding model, reached through the gateway: ``POST /v1/embeddings``.

An app that points the ``openai`` SDK at costline — often by setting ``OPENAI_BASE_URL``, which every client of
the app then uses — also sends its embedding calls there (a RAG app embeds its documents and questions). costline
does not route or cache them (an embedding is the app's index key: another model's vectors would not match it);
it forwards each, with the real ``openai`` SDK, to the OpenAI-compatible server of ``[serving.backends]
embeddings_base_url`` (OpenAI, or a self-hosted TEI / vLLM / Ollama server) and records the call as an
``embeddings`` span (model, input tokens, tenant), so its cost is in the lake beside the chat calls, split by tenant
(a standalone request in the ``requests`` view, whose tenant is the span's own ``costline.tenant``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from costline import contract
from costline.collectors import Recorder
from costline.sdk import openai_client
from costline.serving.settings import BackendsConfig

__all__ = ["EmbeddingsUpstream", "embeddings_problem", "MAX_INPUTS"]

log = logging.getLogger(__name__)

#: Inputs one request may carry (OpenAI's bound).
MAX_INPUTS = 2048
#: The Embeddings API's own fields (others — vLLM's truncate_prompt_tokens, NIM's input_type... — go along as
#: extra fields of the request, as the app sent them).
FIELDS = ("model", "input", "encoding_format", "dimensions", "user")
#: The largest answer relayed (2,048 inputs of 3,072 floats as JSON is ~130 MB: ask fewer, or base64).
MAX_ANSWER_BYTES = 64 * 1024 * 1024


def embeddings_problem(body: Mapping[str, Any]) -> tuple[str, str] | None:
    """(param, what is wrong) with an Embeddings API request body, or None: ``model`` a string; ``input`` a
    non-empty string, or a list of 1 to :data:`MAX_INPUTS` non-empty strings, token ids (whole numbers) or lists
    of them; ``encoding_format`` float or base64; ``dimensions`` a whole number >= 1; ``user`` a string."""
    model = body.get("model")
    if not isinstance(model, str) or not 1 <= len(model) <= 256:
        return "model", "model: the embedding model's name"
    given = body.get("input")
    items = [given] if isinstance(given, str) else given
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_INPUTS or not (
            all(isinstance(i, str) and i for i in items) or all(_token_id(i) for i in items)
            or all(isinstance(i, list) and i and all(_token_id(t) for t in i) for i in items)):
        return "input", (f"input: a non-empty string, or a list of 1 to {MAX_INPUTS} non-empty strings, token ids or "
                         "lists of token ids")
    if body.get("encoding_format") not in (None, "float", "base64"):
        return "encoding_format", "encoding_format: float or base64"
    dims = body.get("dimensions")
    if dims is not None and (not isinstance(dims, int) or isinstance(dims, bool) or dims < 1):
        return "dimensions", "dimensions: a whole number >= 1"
    if body.get("user") is not None and not isinstance(body.get("user"), str):
        return "user", "user: a string"
    return None


def _token_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class EmbeddingsUpstream:
    """The OpenAI-compatible server the gateway forwards ``/v1/embeddings`` to; each call an ``embeddings`` span
    on ``recorder``. Thread-safe (one SDK client); :meth:`close` at the end."""

    def __init__(self, settings: BackendsConfig, recorder: Recorder, *, env: Mapping[str, str] | None = None) -> None:
        self._client = openai_client(base_url=settings.embeddings_base_url, key_env=settings.embeddings_api_key_env,
                                     env=env, service="the embeddings server", max_retries=settings.max_retries,
                                     timeout=settings.timeout_s)
        self._recorder = recorder

    def embed(self, body: Mapping[str, Any], tenant: str | None) -> tuple[int, Any]:
        """(status, JSON) of the server's answer to ``body`` (checked by :func:`embeddings_problem`); raises the
        SDK's connection errors (``openai.APIConnectionError``) when the server cannot be reached."""
        import openai

        kwargs: dict[str, Any] = {k: body[k] for k in FIELDS if body.get(k) is not None}
        kwargs.setdefault("encoding_format", "float")  # as the API answers without it (the SDK would ask base64)
        extra = {k: v for k, v in body.items() if k not in FIELDS}
        with self._recorder.call(contract.PROVIDER_OPENAI, kwargs["model"], operation="embeddings") as call:
            if tenant:
                call.span.set_attribute(contract.COSTLINE_TENANT, tenant)
            try:
                raw = self._client.embeddings.with_raw_response.create(**kwargs, extra_body=extra or None)
            except openai.APIStatusError as exc:
                call.error(str(exc.status_code))  # its message may quote the gateway's own key: not in the lake
                if exc.status_code in (401, 403):  # the gateway's key, not the app's: not the app's to fix
                    return 502, None
                try:
                    return exc.status_code, exc.response.json()
                except ValueError:
                    return exc.status_code, None
            content = raw.http_response.content
            if len(content) > MAX_ANSWER_BYTES:
                call.error("answer_too_large")
                return 502, None
            try:
                doc = json.loads(content)
            except ValueError:
                call.error("not_json")
                return 502, None
            usage = doc.get("usage") if isinstance(doc, dict) else None
            tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
            if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0:  # else unknown, not 0
                call.usage(input_tokens=tokens, output_tokens=0)
            call.response(model=doc.get("model") if isinstance(doc, dict) else None)
            return raw.http_response.status_code, doc

    def close(self) -> None:
        self._client.close()
