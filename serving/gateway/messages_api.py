"""Shapes of the Anthropic Messages API that the gateway speaks (and the local stand-in imitates).

* :data:`ANTHROPIC_ERROR_TYPES` — the error ``type`` Anthropic answers per HTTP status;
* :func:`message_text` — the text of a message's ``content`` (a string or a list of blocks);
* :func:`last_user_text` — the text of the last user message: what a request asks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["ANTHROPIC_ERROR_TYPES", "message_text", "last_user_text"]

#: Anthropic's error ``type`` per HTTP status.
ANTHROPIC_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def message_text(content: Any) -> str:
    """The text of a message's ``content`` (a string or a list of blocks)."""
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if isinstance(block, Mapping) and block.get("type", "text") == "text":
            parts.append(str(block.get("text", "")))
    return "\n".join(parts)


def last_user_text(messages: Iterable[Mapping[str, Any]]) -> str:
    """The text of the last user message: what the request asks (the cache key's query)."""
    for m in reversed(list(messages)):
        if m.get("role") == "user":
            return message_text(m.get("content"))
    return ""
