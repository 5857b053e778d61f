"""Shapes of the Anthropic Messages API that the gateway speaks (and the local stand-in imitates).

* :data:`ANTHROPIC_ERROR_TYPES` — the error ``type`` Anthropic answers per HTTP status;
* :func:`message_text` — the text of a message's ``content`` (a string or a list of blocks);
* :func:`last_user_text` — the text of the last user message: what a request asks;
* :func:`shape_problem` — what is wrong with a request's ``messages`` and ``system``, checked as the API does
  before any model is called (a malformed one would fail on every tier, each paid for a round trip).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["ANTHROPIC_ERROR_TYPES", "message_text", "last_user_text", "shape_problem"]

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


#: The roles of the Messages API's turns (the system prompt is the ``system`` field).
ROLES = ("user", "assistant")


def _blocks_problem(where: str, blocks: list[Any], *, text_only: bool = False) -> str | None:
    for j, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, Mapping) else None
        if not isinstance(kind, str):
            return f"{where}[{j}]: a content block is an object with a string type"
        if text_only and kind != "text":
            return f"{where}[{j}].type: only text blocks are accepted here, not {kind[:40]!r}"
        if kind == "text" and not isinstance(block.get("text"), str):
            return f"{where}[{j}].text: a text block's text is a string"
    return None


def shape_problem(messages: list[Mapping[str, Any]], system: Any) -> str | None:
    """What is wrong with ``messages`` (objects already) and ``system``, or None: roles ``user`` / ``assistant``,
    content a string or a list of typed blocks (a text block's ``text`` a string), ``system`` absent, a string or
    a list of text blocks. The blocks' other fields are the model's to check."""
    if system is not None and not isinstance(system, str):
        if not isinstance(system, list):
            return "system: a string or a list of text blocks"
        problem = _blocks_problem("system", system, text_only=True)
        if problem:
            return problem
    for i, m in enumerate(messages):
        role = m.get("role")
        if role not in ROLES:
            return f"messages[{i}].role: {str(role)[:40]!r} is not one of user, assistant (the system prompt " \
                   "goes in the system field)"
        content = m.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            return f"messages[{i}].content: a string or a list of content blocks"
        problem = _blocks_problem(f"messages[{i}].content", content)
        if problem:
            return problem
    return None
