"""What a cached answer is keyed on: everything of a request that changes the answer.

A stored answer may only answer a request that would have produced it. Only the **last user
turn** is matched semantically (embedding + verification); everything else that changes the
answer is matched **exactly**, through a hash — the *scope* of the request:

* the system prompt, the earlier turns (and any non-text blocks of the last one: images,
  tool results), the tools and ``tool_choice``;
* the generation parameters that change the answer: model family, ``temperature``,
  ``top_p``, ``top_k``, ``max_tokens``, ``stop_sequences``, the response / output format, the reasoning
  effort (the Messages API's ``output_config.effort``; Chat Completions' ``reasoning_effort`` and the Responses
  API's ``reasoning.effort`` are scoped as the effort they reach the tiers as), ``thinking``.

The scope becomes part of the cache namespace (:func:`scoped_namespace`): the cache keeps one
index per (tenant, namespace, scope), so an answer made under another system prompt or for
``max_tokens: 3`` is never even a candidate.

Only final answers are stored (:func:`is_final`): a reply cut off at ``max_tokens``, a tool
call, a refusal or an error is an answer to this one request, never to the next.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from costline import contract

__all__ = [
    "COSTLINE_CACHE_REJECT_REASON",
    "FINAL_STOP_REASONS",
    "SCOPE_SEPARATOR",
    "is_final",
    "model_family",
    "request_scope",
    "scope_of_body",
    "scope_of_prompt",
    "scoped_namespace",
    "split_namespace",
]

#: The lookup span attribute listing why candidates were rejected (comma-separated, most similar first).
COSTLINE_CACHE_REJECT_REASON = contract.COSTLINE_CACHE_REJECT_REASON

#: Stop reasons of a natural end (Anthropic's end_turn / stop_sequence, OpenAI's stop).
#: A stop sequence is part of the scope, so an answer ended by one is final for that scope.
FINAL_STOP_REASONS = frozenset({"end_turn", "stop_sequence", "stop"})

#: Between a namespace and its scope hash in a cache namespace (never in a configured name).
SCOPE_SEPARATOR = "\x1f"

#: Generation parameters of a Messages / Chat Completions body that change the answer (``effort``: the Messages
#: API's ``output_config.effort``, read by :func:`scope_of_body`; ``output_config.format`` is scoped as
#: ``output_format``, the shape every API's route scopes a format in).
_PARAMS = ("temperature", "top_p", "top_k", "max_tokens", "max_completion_tokens", "stop_sequences", "stop",
           "response_format", "output_format", "tool_choice", "thinking", "seed", "frequency_penalty",
           "presence_penalty", "logit_bias", "effort")

_DATE_SUFFIX = re.compile(r"(-\d{8}|-latest|@\d{8})$")


def is_final(stop_reason: str | None) -> bool:
    """True for a natural end; False for max_tokens / length, tool use, refusals, errors, unknown."""
    return stop_reason in FINAL_STOP_REASONS


def model_family(model: Any) -> str:
    """``claude-haiku-4-5-20251001`` → ``claude-haiku-4-5``: the model without its snapshot date — and without a
    cloud's spelling of it (Bedrock's ``us.anthropic.claude-haiku-4-5-20251001-v1:0``, Vertex's
    ``claude-haiku-4-5@20251001``), so one question is one entry whichever API asked."""
    if not isinstance(model, str):
        return ""
    low = _BEDROCK_SPELLING.sub(r"\1", model.strip().lower())  # a generation (anthropic.claude-v2:1) stays
    if low.startswith("claude") and "@" in low:
        low = low.split("@", 1)[0]
    return _DATE_SUFFIX.sub("", low)


#: Bedrock's Claude ids: a cross-region profile's prefix, ``anthropic.``, the id, and after a snapshot date the
#: id's version (``-v1:0``); a legacy id's ``-v2`` / ``-v2:1`` is its generation, kept.
_BEDROCK_SPELLING = re.compile(r"^(?:[a-z-]{2,8}\.)?anthropic\.(claude[a-z0-9.:-]*?(?:-\d{8})?)(?:(?<=\d{8})-v\d+:\d+)?$")


def request_scope(
    *,
    system: Any = None,
    earlier: Sequence[Any] = (),
    tools: Any = None,
    model: Any = None,
    params: Mapping[str, Any] | None = None,
) -> str:
    """The scope hash (32 hex digits) of everything but the last user turn's text.

    ``earlier`` is the turns before the last user turn (plus that turn's non-text blocks);
    ``params`` the generation parameters (only those in ``_PARAMS`` count; None values are dropped).
    """
    kept = {k: params[k] for k in _PARAMS if params and params.get(k) is not None}
    doc = {"system": _normal(system), "earlier": _normal(list(earlier)), "tools": _normal(tools),
           "model": model_family(model), "params": _normal(kept)}
    raw = json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    # surrogatepass: a lone surrogate (JSON's "\\ud800" escape decodes to one) is hashed, not a UnicodeEncodeError
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def scope_of_body(body: Mapping[str, Any]) -> str:
    """The scope of an Anthropic Messages (or OpenAI chat) request body: its ``output_config.effort`` counts as
    ``effort`` (the reasoning effort changes the answer: a "high" request is never answered with a "low" one's)."""
    messages = body.get("messages")
    messages = list(messages) if isinstance(messages, list) else []
    config = body.get("output_config")
    effort = config.get("effort") if isinstance(config, Mapping) else None
    params = {**body, "effort": effort} if effort is not None else body
    # (OpenAI puts the system prompt among the messages, where it counts as an earlier turn)
    return request_scope(system=body.get("system"), earlier=_earlier(messages), tools=body.get("tools"),
                         model=body.get("model"), params=params)


def scope_of_prompt(prompt: Any) -> str:
    """The scope of a :class:`~costline.serving.backends.Prompt` (system, earlier turns, max_tokens)."""
    messages = list(getattr(prompt, "messages", ()) or ())
    return request_scope(system=getattr(prompt, "system", None), earlier=_earlier(messages),
                         params={"max_tokens": getattr(prompt, "max_tokens", None)})


def scoped_namespace(namespace: str, scope: str) -> str:
    """The cache namespace of ``namespace`` under ``scope`` (``namespace`` alone for no scope)."""
    return f"{namespace}{SCOPE_SEPARATOR}{scope}" if scope else namespace


def split_namespace(name: str) -> tuple[str, str]:
    """(namespace, scope) of a cache namespace made by :func:`scoped_namespace`."""
    ns, _, scope = name.partition(SCOPE_SEPARATOR)
    return ns, scope


def _earlier(messages: list[Any]) -> list[Any]:
    """The turns before the last user turn, and that turn without its text blocks."""
    if not messages:
        return []
    *before, last = messages
    if isinstance(last, Mapping) and last.get("role") == "user":
        content = last.get("content")
        if isinstance(content, list):
            rest = [b for b in content if not (isinstance(b, Mapping) and b.get("type") == "text")]
            return before + ([{"role": "user", "content": rest}] if rest else [])
        return before
    return messages  # no user turn last: the whole conversation is context


def _normal(value: Any) -> Any:
    """Plain JSON values; a system prompt given as text blocks hashes like the same plain text."""
    if isinstance(value, Mapping):
        return {str(k): _normal(v) for k, v in value.items() if not (k == "cache_control" and _caching_marker(v))}
    if isinstance(value, (list, tuple)):
        items = [_normal(v) for v in value]
        if items and all(isinstance(b, Mapping) and b.get("type") == "text" and set(b) <= {"type", "text"}
                         for b in items):
            return "\n".join(str(b.get("text", "")) for b in items)
        return items
    return value


def _caching_marker(value: Any) -> bool:
    """A prompt-caching ``cache_control`` (``{"type": "ephemeral", ...}``), not a field of the request's data (a
    tool's schema, a tool call's input) that happens to bear the name: only the marker leaves the answer as is."""
    return isinstance(value, Mapping) and value.get("type") == "ephemeral"
