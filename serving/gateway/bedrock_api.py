"""Amazon Bedrock Runtime's InvokeModel, as the gateway speaks it to apps that call Claude through Bedrock.

An app on ``anthropic.AnthropicBedrock`` or boto3's ``bedrock-runtime`` ``invoke_model`` switches to costline by
pointing its endpoint at the gateway (``base_url`` / ``endpoint_url``) and sending a costline key as its Bedrock API
key (``api_key=`` / ``AWS_BEARER_TOKEN_BEDROCK``: ``Authorization: Bearer``; a SigV4 signature is no costline key):

* ``POST /model/{modelId}/invoke``: an Anthropic Messages body with ``anthropic_version`` and without ``model`` and
  ``stream`` (the model is the path's; ``anthropic_beta`` a list): answered as ``POST /v1/messages`` is — routed,
  cached, escalated — with Bedrock's ``x-amzn-bedrock-*-token-count`` headers;
* ``POST /model/{modelId}/invoke-with-response-stream``: the same, streamed: each Messages API event in an AWS
  event-stream ``chunk`` whose ``bytes`` are the event's JSON (:func:`event_message`, :func:`chunks_of_sse`).

Errors are Bedrock's: ``{"message": ...}`` with the ``x-amzn-ErrorType`` header boto3 reads the code from
(:func:`bedrock_error`). The event-stream encoding is also what the local stand-in answers with
(``costline.sim.standin_bedrock``).
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

__all__ = ["BEDROCK_ERROR_TYPES", "bedrock_error", "chunks_of_sse", "event_message", "invoke_body", "token_headers"]

#: Bedrock's error code per HTTP status (the ``x-amzn-ErrorType`` header; boto3 raises ``client.exceptions.<code>``).
BEDROCK_ERROR_TYPES: dict[int, str] = {
    400: "ValidationException",
    401: "AccessDeniedException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    413: "ValidationException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
#: The most ``anthropic_beta`` flags a body may carry (as the Messages API's header).
_MAX_BETAS = 32


def bedrock_error(status: int, message: str, headers: Mapping[str, str] | None = None) -> "Any":
    """An error as Bedrock Runtime answers it (529, Anthropic's overload, is Bedrock's 503)."""
    from costline.serving.gateway._http import HttpResponse

    status = 503 if status == 529 else status
    kind = BEDROCK_ERROR_TYPES.get(status, "InternalServerException" if status >= 500 else "ValidationException")
    return HttpResponse(status, {"message": message},
                        headers={**dict(headers or {}),
                                 "x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"})


def invoke_body(body: Mapping[str, Any], model: str, *, stream: bool) -> tuple[dict[str, Any], str | None] | str:
    """An InvokeModel body as the Messages request it is (``model`` from the path, ``stream`` from the operation)
    and its ``anthropic_beta`` list as an ``anthropic-beta`` header value, or what is wrong (a 400's message)."""
    if not isinstance(body.get("anthropic_version"), str):
        return "Malformed input request: anthropic_version is required (e.g. \"bedrock-2023-05-31\")"
    for key in ("model", "stream"):
        if key in body:
            return f"Malformed input request: extraneous key [{key}] is not permitted (the model is the path's)"
    betas = body.get("anthropic_beta")
    if betas is not None and not (isinstance(betas, list) and len(betas) <= _MAX_BETAS
                                  and all(isinstance(b, str) and b and "," not in b for b in betas)):
        return f"Malformed input request: anthropic_beta is a list of at most {_MAX_BETAS} beta names"
    messages = {k: v for k, v in body.items() if k not in ("anthropic_version", "anthropic_beta")}
    return {**messages, "model": model, "stream": stream}, (",".join(betas) if betas else None)


def token_headers(message: Mapping[str, Any]) -> dict[str, str]:
    """Bedrock's token-count headers of an answered Messages body (input without the cache, as the body's)."""
    usage = message.get("usage") if isinstance(message.get("usage"), Mapping) else {}

    def n(key: str) -> str:
        value = usage.get(key)
        return str(value if isinstance(value, int) and not isinstance(value, bool) else 0)

    return {"x-amzn-bedrock-input-token-count": n("input_tokens"),
            "x-amzn-bedrock-output-token-count": n("output_tokens"),
            "x-amzn-bedrock-cache-read-input-token-count": n("cache_read_input_tokens"),
            "x-amzn-bedrock-cache-write-input-token-count": n("cache_creation_input_tokens")}


def event_message(event_type: str, payload: Mapping[str, Any]) -> bytes:
    """One AWS event-stream message (``:event-type`` ``event_type``, a JSON payload): prelude (total and
    headers length, their CRC32), headers, payload, the message's CRC32."""
    headers = b""
    for name, value in ((":event-type", event_type), (":content-type", "application/json"),
                        (":message-type", "event")):
        raw = value.encode()
        headers += bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(raw)) + raw
    body = json.dumps(payload, separators=(",", ":")).encode()
    prelude = struct.pack(">II", 12 + len(headers) + len(body) + 4, len(headers))
    head = prelude + struct.pack(">I", binascii.crc32(prelude)) + headers + body
    return head + struct.pack(">I", binascii.crc32(head))


def chunk(data: Mapping[str, Any]) -> bytes:
    """One Messages API stream event as InvokeModelWithResponseStream sends it: a ``chunk`` whose ``bytes`` are
    the event's JSON (base64 in the event stream's JSON payload)."""
    raw = json.dumps(data, separators=(",", ":")).encode()
    return event_message("chunk", {"bytes": base64.b64encode(raw).decode()})


def chunks_of_sse(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """The Messages API's server-sent events (as the gateway writes them, in pieces of any size) as event-stream
    chunks, one per event, as each event completes. ``pieces`` is closed when the result is (the client left)."""
    buffer = b""
    try:
        for piece in pieces:
            buffer += piece
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                data = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
                if data:
                    yield chunk(json.loads(b"\n".join(data)))
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()
