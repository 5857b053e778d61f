"""Shapes of the Anthropic Messages API that the gateway speaks (and the local stand-in imitates).

* :data:`ANTHROPIC_ERROR_TYPES` — the error ``type`` Anthropic answers per HTTP status;
* :func:`message_text` — the text of a message's ``content`` (a string or a list of blocks);
* :func:`last_user_text` — the text of the last user message: what a request asks (:func:`question_text`: the
  same in a tool loop, whose last user turn may hold only tool results);
* :func:`shape_problem` — what is wrong with a request's ``messages`` and ``system``, checked as the API does
  before any model is called (a malformed one would fail on every tier, each paid for a round trip);
* :func:`sampling_of` — the generation parameters forwarded to every tier (:data:`SAMPLING_FIELDS`), checked;
* :func:`passthrough_of` — the fields carried as they are to Anthropic tiers (:data:`PASSTHROUGH_FIELDS`), checked;
* :func:`unsupported_problem` — malformed ``tools``: refused with a 400 rather than dropped; :func:`thinking_of` —
  ``thinking``, checked. (Structured outputs, ``output_config.format``: :mod:`costline.serving.structured`.)
* :func:`fields_problem` — a field the API does not have (:data:`API_FIELDS`), or one the gateway cannot carry
  (:data:`UNCARRIED_FIELDS`): refused with a 400, never ignored;
* :func:`textless_turn` / :func:`textless_query` — a last user turn of only an image or a document, and what such a
  request is routed on (it is never cached: it has no question text).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from costline.serving.translate import block_text, tools_problem

__all__ = ["ANTHROPIC_ERROR_TYPES", "API_FIELDS", "GATEWAY_FIELDS", "MAX_BETAS", "PASSTHROUGH_FIELDS",
           "SAMPLING_FIELDS", "UNCARRIED_FIELDS", "betas_of", "fields_problem", "message_text", "last_user_text",
           "question_text", "passthrough_of", "sampling_of", "shape_problem", "textless_query", "textless_turn",
           "thinking_of", "unsupported_problem"]

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


def question_text(messages: Iterable[Mapping[str, Any]]) -> str:
    """What a request asks, for routing: the last user message's text — or, in a tool loop whose last user
    turn carries only tool results, the last user text before it (the question the loop answers), else
    the results' text."""
    turns = [m for m in messages if m.get("role") == "user"]
    for m in reversed(turns):
        text = message_text(m.get("content"))
        if text.strip():
            return text
    last = turns[-1].get("content") if turns else None
    blocks = last if isinstance(last, list) else []
    results = (block_text(b.get("content")) for b in blocks if isinstance(b, Mapping) and b.get("type") == "tool_result")
    return "\n".join(r for r in results if r)


#: The blocks a ``tool_result``'s content may hold (a search tool's results, a screenshot, a fetched document).
TOOL_RESULT_BLOCKS = ("text", "image", "search_result", "document")
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
        if kind == "tool_use" and not (isinstance(block.get("id"), str) and isinstance(block.get("name"), str)
                                       and isinstance(block.get("input"), Mapping)):
            return f"{where}[{j}]: a tool_use block has a string id and name and an object input"
        if kind == "tool_result":
            content = block.get("content")
            if not isinstance(block.get("tool_use_id"), str):
                return f"{where}[{j}].tool_use_id: the id of the tool_use block it answers"
            if content is not None and not isinstance(content, str) and not (
                    isinstance(content, list) and all(
                        isinstance(b, Mapping) and b.get("type") in TOOL_RESULT_BLOCKS
                        and (b.get("type") != "text" or isinstance(b.get("text"), str)) for b in content)):
                return (f"{where}[{j}].content: a tool result's content is a string or a list of "
                        f"{', '.join(TOOL_RESULT_BLOCKS)} blocks")
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


#: Generation parameters the gateway carries to the tiers (``Prompt.sampling``), each to the tiers whose API takes
#: it: ``stop_sequences`` to every tier (``stop`` on the Chat Completions API); ``effort`` (the Messages API's
#: ``output_config.effort``) to Anthropic tiers; ``temperature`` and ``top_p`` — Chat Completions fields, which
#: the Messages API of anthropic 2.x no longer has — to OpenAI-compatible tiers (the student).
SAMPLING_FIELDS = ("temperature", "top_p", "stop_sequences", "effort")
#: ``output_config.effort`` values of the Messages API.
EFFORTS = ("low", "medium", "high", "xhigh", "max")

def thinking_of(body: Mapping[str, Any]) -> Mapping[str, Any] | None | str:
    """The request's ``thinking`` as the API takes it (``enabled`` with ``budget_tokens`` of at least 1024 and
    under ``max_tokens``, or ``adaptive``; ``display`` summarized or omitted), None when absent or ``disabled``,
    or what is wrong with it."""
    thinking = body.get("thinking")
    if thinking is None:
        return None
    kind = thinking.get("type") if isinstance(thinking, Mapping) else None
    if kind == "disabled":
        return None
    if kind not in ("enabled", "adaptive"):
        return "thinking: {\"type\": \"enabled\", \"budget_tokens\": N}, {\"type\": \"adaptive\"} or {\"type\": \"disabled\"}"
    if thinking.get("display") not in (None, "summarized", "omitted"):
        return "thinking.display: summarized or omitted"
    if kind == "enabled":
        budget, limit = thinking.get("budget_tokens"), body.get("max_tokens")
        if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1024:
            return "thinking.budget_tokens: a whole number >= 1024"
        if isinstance(limit, int) and budget >= limit:
            return "thinking.budget_tokens: must be less than max_tokens"
    return {k: thinking[k] for k in ("type", "budget_tokens", "display") if thinking.get(k) is not None}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def sampling_of(body: Mapping[str, Any], *, max_temperature: float = 1.0) -> tuple[tuple[str, Any], ...] | str:
    """The request's :data:`SAMPLING_FIELDS` that are set, as ``((name, value), ...)``, or what is wrong with
    one (the API would refuse it on every tier, each a paid round trip). ``max_temperature``: the asking API's
    bound (Anthropic's was 1, OpenAI's is 2)."""
    out: list[tuple[str, Any]] = []
    t = body.get("temperature")
    if t is not None:
        if not _number(t) or not 0 <= t <= max_temperature:
            return f"temperature: a number from 0 to {max_temperature:g}"
        out.append(("temperature", float(t)))
    p = body.get("top_p")
    if p is not None:
        if not _number(p) or not 0 <= p <= 1:
            return "top_p: a number from 0 to 1"
        out.append(("top_p", float(p)))
    stop = body.get("stop_sequences")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(x, str) and x for x in stop):
            return "stop_sequences: a list of non-empty strings"
        if stop:
            out.append(("stop_sequences", tuple(stop)))
    config = body.get("output_config")
    if config is not None:
        if not isinstance(config, Mapping):
            return "output_config: an object"
        effort = config.get("effort")
        if effort is not None:
            if effort not in EFFORTS:
                return f"output_config.effort: one of {', '.join(EFFORTS)}"
            out.append(("effort", effort))
    return tuple(out)


#: Messages API fields the gateway carries as they are to Anthropic tiers (``Prompt.anthropic_extra``), each with
#: the check the API would make: prompt caching for the whole request, the service tier, fast mode, where the
#: inference runs, the end user's id (``metadata.user_id``: the rest of ``metadata`` is costline's), the
#: context-management beta's edits. The ``anthropic-beta`` header is carried to them too (:func:`betas_of`).
PASSTHROUGH_FIELDS = ("cache_control", "service_tier", "speed", "inference_geo", "metadata.user_id",
                      "context_management")
#: An ``anthropic-beta`` feature name, and how many one request may name.
_BETA = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
MAX_BETAS = 16


def betas_of(header: str | None) -> tuple[str, ...] | str:
    """The features an ``anthropic-beta`` header names (comma-separated, as the SDK's ``betas=`` sends them), or what
    is wrong with it."""
    if not header:
        return ()
    names = tuple(n.strip() for n in header.split(",") if n.strip())
    if len(names) > MAX_BETAS or not all(_BETA.fullmatch(n) for n in names):
        return (f"anthropic-beta: up to {MAX_BETAS} comma-separated feature names (lower-case letters, digits, "
                "'.', '_' and '-')")
    return tuple(dict.fromkeys(names))


def passthrough_of(body: Mapping[str, Any]) -> tuple[tuple[str, Any], ...] | str:
    """The request's :data:`PASSTHROUGH_FIELDS` that are set, as ``((field, value), ...)``, or what is wrong with
    one (a value the API would refuse on every Anthropic tier)."""
    out: list[tuple[str, Any]] = []
    cache = body.get("cache_control")
    if cache is not None:
        if not isinstance(cache, Mapping) or cache.get("type") != "ephemeral" \
                or cache.get("ttl") not in (None, "5m", "1h") or set(cache) - {"type", "ttl"}:
            return "cache_control: {\"type\": \"ephemeral\"} with an optional ttl of \"5m\" or \"1h\""
        out.append(("cache_control", dict(cache)))
    for name, allowed in (("service_tier", ("auto", "standard_only")), ("speed", ("standard", "fast"))):
        value = body.get(name)
        if value is not None:
            if value not in allowed:
                return f"{name}: one of {', '.join(allowed)}"
            out.append((name, value))
    geo = body.get("inference_geo")
    if geo is not None:
        if not isinstance(geo, str) or not 0 < len(geo) <= 32:
            return "inference_geo: a region name (a string of up to 32 characters)"
        out.append(("inference_geo", geo))
    meta = body.get("metadata")
    user = meta.get("user_id") if isinstance(meta, Mapping) else None
    if user is not None:
        if not isinstance(user, str) or len(user) > 256:
            return "metadata.user_id: a string of up to 256 characters"
        out.append(("metadata", {"user_id": user}))
    manage = body.get("context_management")
    if manage is not None:  # (the context-management beta's: clearing old tool results and thinking)
        if not isinstance(manage, Mapping):
            return "context_management: an object"
        out.append(("context_management", dict(manage)))
    return tuple(out)


#: The Messages API's request body fields: those of the ``anthropic`` SDK's ``MessageCreateParams``
#: (``anthropic.types.message_create_params``) and of its beta's (``anthropic.types.beta.message_create_params``), as
#: of anthropic 2.17, written out here (the SDK's types are not imported at run time). The TypedDicts' ``betas``,
#: ``user_profile_id`` and ``workspace_id`` are sent by the SDK as headers (``anthropic-beta``,
#: ``anthropic-user-profile-id``, ``anthropic-workspace-id``), never in the body, so they are not body fields.
API_FIELDS = frozenset({
    "max_tokens", "messages", "model", "billing_policy", "cache_control", "compaction", "container",
    "context_management", "diagnostics", "fallback_credit_token", "fallbacks", "inference_geo", "mcp_servers",
    "metadata", "output_config", "service_tier", "speed", "stop_sequences", "stream", "system", "thinking", "thread",
    "tool_choice", "tools"})
#: Fields the gateway reads that the Messages API of anthropic 2.x no longer has: ``temperature`` and ``top_p``
#: (older clients: carried to OpenAI-compatible tiers, :data:`SAMPLING_FIELDS`), ``top_k`` (a Bedrock Converse
#: request's ``additionalModelRequestFields``: part of the cache scope) and ``output_format`` (the structured-outputs
#: beta's spelling of ``output_config.format``).
GATEWAY_FIELDS = frozenset({"temperature", "top_p", "top_k", "output_format"})
#: Fields of the API the gateway cannot carry to its tiers, and what each asks for: an answer without it would be
#: another request's answer (and the semantic cache, which does not key on them, would hand one out). Each, set
#: (not null), is refused with a 400 naming it. (``context_management`` is carried: :data:`PASSTHROUGH_FIELDS`.)
UNCARRIED_FIELDS: dict[str, str] = {
    "mcp_servers": "the MCP connector: remote MCP servers the API calls",
    "container": "a code execution / Agent Skills container",
    "compaction": "a compaction request (the API summarizes the conversation)",
    "thread": "server-held conversation state (a Thread)",
    "fallbacks": "server-side fallback models (the gateway picks and escalates models itself)",
    "fallback_credit_token": "a fallback credit token (it is redeemable on the model that refused only)",
    "diagnostics": "prompt-cache diagnostics against an earlier message",
    "billing_policy": "billing another organization for the request",
}


def fields_problem(body: Mapping[str, Any]) -> str | None:
    """What is wrong with the fields of a Messages request ``body``, or None: a field the API does not have is
    refused as the API refuses it ("Extra inputs are not permitted"), never ignored (a typo such as
    ``stop_sequence`` would be answered as if it was not sent, maybe from the cache of a request without it); a field
    of :data:`UNCARRIED_FIELDS` that is set is refused as one the gateway does not support."""
    unknown = sorted(str(k) for k in body if k not in API_FIELDS and k not in GATEWAY_FIELDS)
    if unknown:
        return f"{unknown[0][:80]}: Extra inputs are not permitted"
    for field, what in UNCARRIED_FIELDS.items():
        if body.get(field) is not None:
            return (f"{field}: not supported by the costline gateway ({what}); send a request that uses it to the "
                    "Anthropic API directly")
    return None


def textless_turn(content: Any) -> bool:
    """True for the content of a turn that asks without text: a list of blocks holding no text, with at least one
    other block (an image, a document: the instruction is in the system prompt, as OCR and document apps send it)."""
    return isinstance(content, list) and any(
        isinstance(b, Mapping) and b.get("type", "text") != "text" for b in content) and not message_text(content).strip()


def textless_query(system: Any) -> str:
    """What a request whose last user turn has no text is routed on: its system prompt's text, else one space (as
    ``count_tokens`` routes). Never matched in or stored to the semantic cache: it is not the question."""
    text = message_text(system) if isinstance(system, (str, list)) else ""
    return text if text.strip() else " "


def unsupported_problem(body: Mapping[str, Any]) -> str | None:
    """What is wrong with the ``tools`` and ``tool_choice`` of ``body``
    (:func:`~costline.serving.translate.tools_problem`), or None."""
    return tools_problem(body.get("tools"), body.get("tool_choice"))
