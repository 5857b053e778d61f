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
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from costline.serving.gateway.messages_api import MAX_BETAS

__all__ = ["BEDROCK_ERROR_TYPES", "MAX_BEDROCK_MODEL_ID", "bedrock_error", "chunk", "chunks_of_sse", "converse_answer", "converse_body",
           "converse_events", "event_message", "exception_message", "invoke_body", "token_headers"]

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
#: The longest model id (or ARN) Bedrock takes in a path.
MAX_BEDROCK_MODEL_ID = 2048


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
    betas = _betas(body.get("anthropic_beta"))
    if betas is False:
        return f"Malformed input request: anthropic_beta is a list of at most {MAX_BETAS} beta names"
    messages = {k: v for k, v in body.items() if k not in ("anthropic_version", "anthropic_beta")}
    return {**messages, "model": model, "stream": stream}, betas


def _betas(value: Any) -> str | None | bool:
    """An ``anthropic_beta`` list as an ``anthropic-beta`` header value (None: none asked), or False: not a list of
    at most :data:`MAX_BETAS` beta names."""
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) <= MAX_BETAS
            and all(isinstance(b, str) and b and "," not in b for b in value)):
        return False
    return ",".join(value) or None


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
    """One AWS event-stream event (``:event-type`` ``event_type``, a JSON payload)."""
    return _frame(((":event-type", event_type), (":content-type", "application/json"), (":message-type", "event")),
                  payload)


def _frame(headers: Iterable[tuple[str, str]], payload: Mapping[str, Any]) -> bytes:
    """One AWS event-stream message: prelude (total and headers length, their CRC32), string headers, the JSON
    payload, the message's CRC32."""
    raw_headers = b""
    for name, value in headers:
        raw = value.encode()
        raw_headers += bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(raw)) + raw
    body = json.dumps(payload, separators=(",", ":")).encode()
    prelude = struct.pack(">II", 12 + len(raw_headers) + len(body) + 4, len(raw_headers))
    head = prelude + struct.pack(">I", binascii.crc32(prelude)) + raw_headers + body
    return head + struct.pack(">I", binascii.crc32(head))


def chunk(data: Mapping[str, Any]) -> bytes:
    """One Messages API stream event as InvokeModelWithResponseStream sends it: a ``chunk`` whose ``bytes`` are
    the event's JSON (base64 in the event stream's JSON payload)."""
    raw = json.dumps(data, separators=(",", ":")).encode()
    return event_message("chunk", {"bytes": base64.b64encode(raw).decode()})


def chunks_of_sse(pieces: Iterable[bytes], started: float | None = None,
                  clock: Callable[[], float] = time.monotonic) -> Iterator[bytes]:
    """The Messages API's server-sent events (as the gateway writes them, in pieces of any size) as event-stream
    chunks, one per event, as each event completes; ``message_stop`` with Bedrock's
    ``amazon-bedrock-invocationMetrics`` (token counts, latency and first-byte latency in ms from ``started``, which
    LangChain's Bedrock models read); an ``error`` event (a tier failing mid-answer) as the stream's exception, as
    Bedrock ends a failed stream. ``pieces`` is closed when the result is (the client left)."""
    started = clock() if started is None else started
    usage: dict[str, Any] = {}
    first: float | None = None
    for event in _sse_events(pieces):
        kind = event.get("type")
        if first is None:
            first = clock()
        if kind == "error":
            yield _stream_exception(event)
            return
        if kind == "message_start" and isinstance(event.get("message"), Mapping):
            usage.update(event["message"].get("usage") or {})
        elif kind == "message_delta":
            usage.update(event.get("usage") or {})
        elif kind == "message_stop":
            counts = _usage(usage)
            event = {**event, "amazon-bedrock-invocationMetrics": {
                "inputTokenCount": counts["inputTokens"], "outputTokenCount": counts["outputTokens"],
                "invocationLatency": int((clock() - started) * 1000), "firstByteLatency": int((first - started) * 1000),
                "cacheReadInputTokenCount": counts["cacheReadInputTokens"],
                "cacheWriteInputTokenCount": counts["cacheWriteInputTokens"]}}
        yield chunk(event)


def _stream_exception(event: Mapping[str, Any]) -> bytes:
    error = event.get("error") if isinstance(event.get("error"), Mapping) else {}
    return exception_message(_STREAM_EXCEPTIONS.get(str(error.get("type")), "modelStreamErrorException"),
                             str(error.get("message") or "the model failed mid-answer"))


# -- the Converse API -------------------------------------------------------------------------------------------
#: Converse's image and document formats -> the Messages API's media types.
_IMAGE_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "gif": "image/gif", "webp": "image/webp"}
_TEXT_DOCUMENTS = {"txt": "text/plain", "md": "text/plain", "csv": "text/plain", "html": "text/plain"}
#: The Messages API's stop reasons -> Converse's.
_STOP_REASONS = {"end_turn": "end_turn", "tool_use": "tool_use", "max_tokens": "max_tokens",
                 "stop_sequence": "stop_sequence", "pause_turn": "end_turn", "refusal": "content_filtered",
                 "model_context_window_exceeded": "model_context_window_exceeded"}
#: ``max_tokens`` of a Converse request without ``inferenceConfig.maxTokens`` (Bedrock lets the model write up to its
#: own limit then; the Messages API needs a number): this, plus a thinking budget when one is asked for.
DEFAULT_MAX_TOKENS = 8192
#: ``additionalModelRequestFields`` carried to the Messages request (Claude's own fields on Bedrock).
_ADDITIONAL_FIELDS = ("top_k", "thinking", "anthropic_beta")
#: Converse fields that change nothing costline does with the request (Bedrock-side features): accepted, unused.
_IGNORED_FIELDS = ("requestMetadata", "performanceConfig", "additionalModelResponseFieldPaths", "serviceTier")
#: A ``cachePoint``'s lifetimes (Bedrock's ``CacheTTL``), each the Messages API's ``cache_control.ttl`` so named.
_CACHE_TTLS = ("5m", "1h")


class _Refused(Exception):
    """What a Converse request carries that costline cannot (the message says which)."""


def _bytes_of(source: Any, where: str) -> str:
    """A Converse ``source``'s base64 ``bytes`` (what boto3 sends a blob as), checked."""
    data = source.get("bytes") if isinstance(source, Mapping) else None
    if not isinstance(data, str):
        raise _Refused(f"{where}.source: only bytes are accepted (not an S3 location)")
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise _Refused(f"{where}.source.bytes: not base64") from None
    return data


def _cached(blocks: list[dict[str, Any]], point: Any, where: str) -> None:
    """A ``cachePoint``: the block before it ends a cached prefix (Anthropic's ``cache_control``), for the point's
    ``ttl`` when it names one (Bedrock's ``CacheTTL``, the Messages API's lifetimes: ``1h``, ``5m``; without one,
    the API's five minutes)."""
    if not blocks:
        raise _Refused(f"{where}: a cachePoint follows the content it caches")
    if not isinstance(point, Mapping):
        raise _Refused(f"{where}.cachePoint: an object, {{\"type\": \"default\"}} with an optional ttl")
    unknown = sorted(set(point) - {"type", "ttl"})
    if unknown:
        raise _Refused(f"{where}.cachePoint.{str(unknown[0])[:40]}: costline takes a cachePoint's type and ttl")
    if point.get("type") != "default":
        raise _Refused(f"{where}.cachePoint.type: \"default\" (the only cache point type)")
    ttl = point.get("ttl")
    if ttl is not None and ttl not in _CACHE_TTLS:
        raise _Refused(f"{where}.cachePoint.ttl: one of {', '.join(_CACHE_TTLS)}, not {str(ttl)[:40]!r} (or none: "
                       "five minutes)")
    blocks[-1] = {**blocks[-1], "cache_control": {"type": "ephemeral", **({"ttl": ttl} if ttl is not None else {})}}


def _converse_block(block: Any, where: str, *, assistant: bool = False) -> dict[str, Any] | None:
    """One Converse content block as the Messages API's (None: a cachePoint, applied by the caller). ``assistant``:
    a block of an assistant turn, which may be the model's reasoning (sent back as it came, as a thinking
    conversation must)."""
    if not isinstance(block, Mapping) or len(block) != 1:
        raise _Refused(f"{where}: a content block is an object with one member")
    (kind, value), = block.items()
    if kind == "text":
        if not isinstance(value, str):
            raise _Refused(f"{where}.text: a string")
        return {"type": "text", "text": value}
    if kind == "cachePoint":
        return None
    if not isinstance(value, Mapping):
        raise _Refused(f"{where}.{kind}: an object")
    if kind == "reasoningContent" and assistant:
        text = value.get("reasoningText")
        if isinstance(text, Mapping) and isinstance(text.get("text"), str):
            return {"type": "thinking", "thinking": text["text"], "signature": str(text.get("signature") or "")}
        if isinstance(value.get("redactedContent"), str):
            return {"type": "redacted_thinking", "data": value["redactedContent"]}
        raise _Refused(f"{where}.reasoningContent: reasoningText (text, signature) or redactedContent")
    if kind == "image":
        media = _IMAGE_TYPES.get(str(value.get("format")))
        if media is None:
            raise _Refused(f"{where}.image.format: one of {', '.join(_IMAGE_TYPES)}")
        return {"type": "image", "source": {"type": "base64", "media_type": media,
                                            "data": _bytes_of(value.get("source"), f"{where}.image")}}
    if kind == "document":
        fmt = str(value.get("format"))
        if value.get("citations") or value.get("context"):
            raise _Refused(f"{where}.document: costline does not carry a document's citations or context on Converse "
                           "(ask through the Messages API)")
        data = _bytes_of(value.get("source"), f"{where}.document")
        title = value.get("name") if isinstance(value.get("name"), str) else None
        if fmt == "pdf":
            doc: dict[str, Any] = {"type": "document",
                                   "source": {"type": "base64", "media_type": "application/pdf", "data": data}}
        elif fmt in _TEXT_DOCUMENTS:
            try:
                text = base64.b64decode(data).decode("utf-8")
            except UnicodeDecodeError:
                raise _Refused(f"{where}.document: a {fmt} document is UTF-8 text") from None
            doc = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": text}}
        else:
            raise _Refused(f"{where}.document.format: costline takes pdf, {', '.join(_TEXT_DOCUMENTS)}")
        return {**doc, **({"title": title} if title else {})}
    if kind == "toolUse":
        if not (isinstance(value.get("toolUseId"), str) and isinstance(value.get("name"), str)
                and isinstance(value.get("input"), Mapping)):
            raise _Refused(f"{where}.toolUse: toolUseId, name and an object input")
        return {"type": "tool_use", "id": value["toolUseId"], "name": value["name"], "input": value["input"]}
    if kind == "toolResult":
        if not isinstance(value.get("toolUseId"), str):
            raise _Refused(f"{where}.toolResult.toolUseId: the id of the toolUse it answers")
        content = []
        for j, part in enumerate(value.get("content") or []):
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                content.append({"type": "text", "text": part["text"]})
            elif isinstance(part, Mapping) and "json" in part:
                content.append({"type": "text", "text": json.dumps(part["json"])})
            elif isinstance(part, Mapping) and "image" in part:
                content.append(_converse_block({"image": part["image"]}, f"{where}.toolResult.content[{j}]"))
            else:
                raise _Refused(f"{where}.toolResult.content[{j}]: text, json or image")
        return {"type": "tool_result", "tool_use_id": value["toolUseId"], "content": content,
                **({"is_error": True} if value.get("status") == "error" else {})}
    raise _Refused(f"{where}: costline does not take {kind[:40]!r} blocks (text, image, document, toolUse, "
                   "toolResult, cachePoint)")


def _converse_blocks(blocks: Any, where: str, *, assistant: bool = False) -> list[dict[str, Any]]:
    if not isinstance(blocks, list):
        raise _Refused(f"{where}: a list of content blocks")
    out: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        converted = _converse_block(block, f"{where}[{j}]", assistant=assistant)
        if converted is None:
            _cached(out, block["cachePoint"], f"{where}[{j}]")
        else:
            out.append(converted)
    return out


def converse_body(body: Mapping[str, Any], model: str, *, stream: bool) -> tuple[dict[str, Any], str | None] | str:
    """A Converse request as the Messages request it is, with ``additionalModelRequestFields.anthropic_beta`` as an
    ``anthropic-beta`` header value, or what is wrong (a ValidationException's message)."""
    try:
        unknown = sorted(set(body) - {"messages", "system", "inferenceConfig", "toolConfig",
                                      "additionalModelRequestFields", *_IGNORED_FIELDS})
        if unknown:
            raise _Refused(f"costline does not take {unknown[0][:40]!r} (guardrails and prompt variables are "
                           "Bedrock's own)")
        turns = body.get("messages")
        if not isinstance(turns, list) or not turns:
            raise _Refused("messages: at least one message")
        messages = []
        for i, turn in enumerate(turns):
            if not isinstance(turn, Mapping) or turn.get("role") not in ("user", "assistant"):
                raise _Refused(f"messages[{i}].role: user or assistant")
            messages.append({"role": turn["role"], "content": _converse_blocks(
                turn.get("content"), f"messages[{i}].content", assistant=turn["role"] == "assistant")})
        out: dict[str, Any] = {"model": model, "messages": messages, "stream": stream}
        if body.get("system") is not None:
            system = _converse_blocks(body["system"], "system")
            if any(b["type"] != "text" for b in system):
                raise _Refused("system: text blocks (and cachePoints) only")
            out["system"] = system
        config = body.get("inferenceConfig") or {}
        if not isinstance(config, Mapping):
            raise _Refused("inferenceConfig: an object")
        extra = body.get("additionalModelRequestFields") or {}
        if not isinstance(extra, Mapping):
            raise _Refused("additionalModelRequestFields: an object")
        max_tokens = config.get("maxTokens")
        if max_tokens is None:  # Bedrock then lets the model write up to its own limit: room for an answer
            thinking = extra.get("thinking") if isinstance(extra.get("thinking"), Mapping) else {}
            budget = thinking.get("budget_tokens")
            max_tokens = DEFAULT_MAX_TOKENS + (budget if isinstance(budget, int) and not isinstance(budget, bool)
                                               and budget > 0 else 0)
        out["max_tokens"] = max_tokens
        for key, name in (("temperature", "temperature"), ("topP", "top_p"), ("stopSequences", "stop_sequences")):
            if config.get(key) is not None:
                out[name] = config[key]
        tools = body.get("toolConfig")
        if tools is not None:
            if not isinstance(tools, Mapping) or not isinstance(tools.get("tools"), list):
                raise _Refused("toolConfig.tools: a list of toolSpecs")
            specs: list[dict[str, Any]] = []
            for j, tool in enumerate(tools["tools"]):
                spec = tool.get("toolSpec") if isinstance(tool, Mapping) else None
                if isinstance(tool, Mapping) and "cachePoint" in tool:
                    _cached(specs, tool["cachePoint"], f"toolConfig.tools[{j}]")
                    continue
                schema = spec.get("inputSchema") if isinstance(spec, Mapping) else None
                if not (isinstance(spec, Mapping) and isinstance(spec.get("name"), str)
                        and isinstance(schema, Mapping) and isinstance(schema.get("json"), Mapping)):
                    raise _Refused(f"toolConfig.tools[{j}]: a toolSpec with a name and inputSchema.json")
                if spec.get("strict") is not None and not isinstance(spec["strict"], bool):
                    raise _Refused(f"toolConfig.tools[{j}].toolSpec.strict: true or false")
                specs.append({"name": spec["name"], "input_schema": schema["json"],
                              **({"description": spec["description"]}
                                 if isinstance(spec.get("description"), str) else {}),
                              **({"strict": spec["strict"]} if spec.get("strict") is not None else {})})
            out["tools"] = specs
            choice = tools.get("toolChoice")
            if choice is not None:
                kind = next(iter(choice), None) if isinstance(choice, Mapping) and len(choice) == 1 else None
                if kind not in ("auto", "any", "tool"):
                    raise _Refused("toolConfig.toolChoice: one of auto, any, tool")
                out["tool_choice"] = {"type": kind, **({"name": choice["tool"].get("name")} if kind == "tool"
                                                       and isinstance(choice["tool"], Mapping) else {})}
        unknown = sorted(set(extra) - set(_ADDITIONAL_FIELDS))
        if unknown:
            raise _Refused(f"additionalModelRequestFields.{unknown[0][:40]}: costline carries "
                           f"{', '.join(_ADDITIONAL_FIELDS)}")
        out.update({k: extra[k] for k in ("top_k", "thinking") if k in extra})
        betas = _betas(extra.get("anthropic_beta"))
        if betas is False:
            raise _Refused(f"additionalModelRequestFields.anthropic_beta: a list of at most {MAX_BETAS} beta names")
    except _Refused as exc:
        return str(exc)
    return out, betas


def _count(usage: Any, key: str) -> int:
    value = usage.get(key) if isinstance(usage, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """The Messages API's usage as Converse's: ``inputTokens`` without the cache, as Bedrock counts it; the cache
    writes by lifetime (``cacheDetails``: Bedrock's ``CacheDetail`` list, ``5m`` / ``1h``) when the API split them."""
    fresh, out, read, write = (_count(usage, "input_tokens"), _count(usage, "output_tokens"),
                               _count(usage, "cache_read_input_tokens"), _count(usage, "cache_creation_input_tokens"))
    counts: dict[str, Any] = {"inputTokens": fresh, "outputTokens": out, "totalTokens": fresh + out + read + write,
                              "cacheReadInputTokens": read, "cacheWriteInputTokens": write}
    split = usage.get("cache_creation")
    details = [{"ttl": ttl, "inputTokens": _count(split, f"ephemeral_{ttl}_input_tokens")} for ttl in _CACHE_TTLS]
    if write and any(d["inputTokens"] for d in details):
        counts["cacheDetails"] = [d for d in details if d["inputTokens"]]
    return counts


def converse_answer(message: Mapping[str, Any], latency_ms: int) -> dict[str, Any]:
    """An answered Messages body as Converse's answer."""
    content: list[dict[str, Any]] = []
    for block in message.get("content") or []:
        kind = block.get("type") if isinstance(block, Mapping) else None
        if kind == "text":
            content.append({"text": block.get("text", "")})
        elif kind == "tool_use":
            content.append({"toolUse": {"toolUseId": block.get("id"), "name": block.get("name"),
                                        "input": block.get("input") or {}}})
        elif kind == "thinking":
            content.append({"reasoningContent": {"reasoningText": {"text": block.get("thinking", ""),
                                                                   "signature": block.get("signature", "")}}})
        elif kind == "redacted_thinking":
            content.append({"reasoningContent": {"redactedContent": block.get("data", "")}})
    usage = message.get("usage") if isinstance(message.get("usage"), Mapping) else {}
    return {"output": {"message": {"role": "assistant", "content": content}},
            "stopReason": _STOP_REASONS.get(str(message.get("stop_reason")), "end_turn"),
            "usage": _usage(usage), "metrics": {"latencyMs": latency_ms}}


def exception_message(exception_type: str, message: str) -> bytes:
    """An AWS event-stream exception (``:message-type`` exception): how Bedrock ends a stream that failed; boto3
    raises ``EventStreamError`` with its type, AnthropicBedrock an error event."""
    return _frame(((":exception-type", exception_type), (":content-type", "application/json"),
                   (":message-type", "exception")), {"message": message})


def _sse_events(pieces: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """The data objects of server-sent events, in order, as each completes (CRLF or LF line endings)."""
    buffer = b""
    try:
        for piece in pieces:
            buffer += piece.replace(b"\r\n", b"\n")
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                data = [line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:")]
                if data:
                    parsed = json.loads(b"\n".join(data))
                    if isinstance(parsed, dict):
                        yield parsed
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()


def converse_events(pieces: Iterable[bytes], started: float, clock: Any) -> Iterator[bytes]:
    """The Messages API's server-sent events as ConverseStream's: messageStart, contentBlockStart (a tool call's),
    contentBlockDelta ..., contentBlockStop, messageStop, metadata (usage, latency); an error event as the stream's
    exception."""
    stop, usage = "end_turn", {}
    seen: set[Any] = set()  # the blocks a start or a delta was sent for: only those get a contentBlockStop
    for event in _sse_events(pieces):
        kind = event.get("type")
        index = event.get("index", 0)
        if kind == "message_start":
            usage = dict((event.get("message") or {}).get("usage") or {})
            yield event_message("messageStart", {"role": "assistant"})
        elif kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                seen.add(index)
                yield event_message("contentBlockStart", {"contentBlockIndex": index, "start": {"toolUse": {
                    "toolUseId": block.get("id"), "name": block.get("name")}}})
        elif kind == "content_block_delta":
            delta = event.get("delta") or {}
            converted = ({"text": delta.get("text", "")} if delta.get("type") == "text_delta" else
                         {"toolUse": {"input": delta.get("partial_json", "")}} if delta.get("type") == "input_json_delta"
                         else {"reasoningContent": {"text": delta.get("thinking", "")}}
                         if delta.get("type") == "thinking_delta" else
                         {"reasoningContent": {"signature": delta.get("signature", "")}}
                         if delta.get("type") == "signature_delta" else None)
            if converted is not None:
                seen.add(index)
                yield event_message("contentBlockDelta", {"contentBlockIndex": index, "delta": converted})
        elif kind == "content_block_stop":
            if index in seen:
                yield event_message("contentBlockStop", {"contentBlockIndex": index})
        elif kind == "message_delta":
            stop = _STOP_REASONS.get(str((event.get("delta") or {}).get("stop_reason")), "end_turn")
            usage.update(event.get("usage") or {})
        elif kind == "message_stop":
            yield event_message("messageStop", {"stopReason": stop})
            yield event_message("metadata", {"usage": _usage(usage),
                                             "metrics": {"latencyMs": int((clock() - started) * 1000)}})
        elif kind == "error":
            yield _stream_exception(event)
            return


#: The Messages API's stream error types -> Bedrock's stream exceptions.
_STREAM_EXCEPTIONS = {"overloaded_error": "serviceUnavailableException", "rate_limit_error": "throttlingException",
                      "api_error": "internalServerException"}
