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

Requests that mean the same thing have one scope (:func:`request_scope` hashes a canonical form): a number in one
spelling (``1`` and ``1.0``, ``0`` and ``0.0``), a generation parameter at the APIs' documented default left out
(``temperature`` 1, ``top_p`` 1, ``frequency_penalty`` and ``presence_penalty`` 0: :data:`DEFAULTS`), stop sequences
as a sorted set, an empty list or object (``tools: []``, ``logit_bias: {}``) as absent, and every text in Unicode
NFC (a system prompt typed with combining accents is the same prompt; NFC of the text made Stream-Safe, which leaves
every real text as it is: :func:`~costline.textutil.stream_safe`). The request is walked and written without
recursion, whatever its depth.

What goes into the hash is versioned: :data:`KEY_SCHEME`. A change that adds a field to the scope makes the request
that sets it hash apart, but leaves an entry made for it *before* the change under the hash a request *without* it
gets now (until 2026-12-05 the effort was not hashed: an old entry made for an ``effort: "low"`` request sits where a
request without an effort looks). So a saved cache (its manifest's ``key_scheme``, :mod:`~costline.serving.cache.store`)
and every replicated store (its record's ``key_scheme``, :mod:`~costline.serving.cache.replication`) carry the scheme
they were keyed under, and entries of another scheme (or of none: written before schemes were recorded) are dropped on
load and skipped on the topic when their namespace carries a scope. A namespace without one (a bare query's,
:func:`scoped_namespace` with no scope) never went through this hash, so its entries stay.

Whether a request uses the cache at all is its own: :func:`sampled` says whether it explicitly asks for sampling
(``[serving.cache] bypass_sampled``), and the gateway reads the ``Cache-Control`` request header (docs/serving.md).

Only final answers are stored (:func:`is_final`): a reply cut off at ``max_tokens``, a tool
call, a refusal or an error is an answer to this one request, never to the next.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from costline import contract
from costline.textutil import stream_safe

__all__ = [
    "COSTLINE_CACHE_BYPASS",
    "COSTLINE_CACHE_REJECT_REASON",
    "DEFAULTS",
    "FINAL_STOP_REASONS",
    "KEY_SCHEME",
    "SCOPE_SEPARATOR",
    "is_final",
    "model_family",
    "request_scope",
    "sampled",
    "scope_of_body",
    "scope_of_prompt",
    "scoped_namespace",
    "split_namespace",
    "still_keyed",
]

#: The lookup span attribute listing why candidates were rejected (comma-separated, most similar first).
COSTLINE_CACHE_REJECT_REASON = contract.COSTLINE_CACHE_REJECT_REASON
#: The request span attribute saying why the cache was not looked up (:mod:`costline.serving.pipeline`).
COSTLINE_CACHE_BYPASS = contract.COSTLINE_CACHE_BYPASS

#: Stop reasons of a natural end (Anthropic's end_turn / stop_sequence, OpenAI's stop).
#: A stop sequence is part of the scope, so an answer ended by one is final for that scope.
FINAL_STOP_REASONS = frozenset({"end_turn", "stop_sequence", "stop"})

#: Between a namespace and its scope hash in a cache namespace (never in a configured name).
SCOPE_SEPARATOR = "\x1f"

#: The version of what a scope hash is made of: a saved cache and every replicated store carry it, and entries of
#: another scheme whose namespace carries a scope are dropped (they would answer requests they were not made for).
#: **Bump it whenever what goes into a scope hash changes**: a name added to or removed from :data:`_PARAMS` or
#: :data:`DEFAULTS`, :func:`model_family`, :func:`_earlier`, :func:`_normal`, :func:`_canonical`, :func:`_dumps`, the
#: fields :func:`scope_of_body` / :func:`scope_of_prompt` read, or what a gateway route passes as a body's scope.
#: 1 (a snapshot or record that names none): every version before schemes were recorded, some without
#: ``effort``, ``frequency_penalty``, ``presence_penalty`` or ``logit_bias``, or hashing raw values. 2: this one.
KEY_SCHEME = 2

#: Generation parameters of a Messages / Chat Completions body that change the answer (``effort``: the Messages
#: API's ``output_config.effort``, read by :func:`scope_of_body`; ``output_config.format`` is scoped as
#: ``output_format``, the shape every API's route scopes a format in). Changing them changes what a scope hash is
#: made of: bump :data:`KEY_SCHEME` with them.
_PARAMS = ("temperature", "top_p", "top_k", "max_tokens", "max_completion_tokens", "stop_sequences", "stop",
           "response_format", "output_format", "tool_choice", "thinking", "seed", "frequency_penalty",
           "presence_penalty", "logit_bias", "effort")

#: The generation parameters' defaults as the APIs document them: a request that sets one to it asks what a request
#: without it asks. ``temperature``: 1 (Anthropic's "Defaults to 1.0", OpenAI's 1); ``top_p``: 1 (OpenAI's default;
#: no nucleus cut-off, as an Anthropic request without one); ``frequency_penalty`` / ``presence_penalty``: 0 (OpenAI's).
#: Not ``effort``: a request without one gets the tier's own default, which differs by API and model. Changing them
#: changes what a scope hash is made of: bump :data:`KEY_SCHEME` with them.
DEFAULTS: dict[str, float] = {"temperature": 1, "top_p": 1, "frequency_penalty": 0, "presence_penalty": 0}
#: The parameters holding stop sequences (a string is one sequence): their order and repeats do not change the answer.
_STOP_PARAMS = ("stop_sequences", "stop")
#: The largest whole float written as an int in the key (past it, floats are not all whole numbers exactly).
_EXACT_INT = 2 ** 53

#: A string as the json module writes it with ``ensure_ascii=False``.
_json_string: Callable[[str], str] = json.encoder.encode_basestring  # type: ignore[attr-defined]

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
    What is hashed is the canonical form of the request (:func:`_canonical`): requests that mean the same thing
    have one scope.
    """
    kept = {k: params[k] for k in _PARAMS if params and params.get(k) is not None}
    doc = {"system": _normal(system), "earlier": _normal(list(earlier)), "tools": _normal(tools),
           "model": model_family(model), "params": _normal(kept)}
    raw = _dumps(_canonical(doc))
    # surrogatepass: a lone surrogate (JSON's "\\ud800" escape decodes to one) is hashed, not a UnicodeEncodeError
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def sampled(params: Mapping[str, Any]) -> bool:
    """True for a request that explicitly asks for sampling: ``temperature`` above 0, ``top_p`` under 1, or any
    ``top_k`` (a request that sets none gets the API's default, and is not "explicitly" sampled)."""
    t, p = params.get("temperature"), params.get("top_p")
    return ((_real(t) and t > 0) or (_real(p) and p < 1) or params.get("top_k") is not None)


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


def still_keyed(scheme: Any, namespace: str) -> bool:
    """Whether an entry of the cache namespace ``namespace`` stored under key scheme ``scheme`` (as its snapshot or
    record names it; None: written before schemes were recorded, scheme 1) may be kept by this version: one of
    :data:`KEY_SCHEME`, or one whose namespace carries no scope (no hash made it, so every scheme finds it alike)."""
    return (type(scheme) is int and scheme == KEY_SCHEME) or SCOPE_SEPARATOR not in namespace


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


#: How deep :func:`request_scope` walks a request (objects and arrays), without recursion: far past any request the
#: gateway takes (it refuses a body, or a function call's arguments, nested past 100 levels), so only a structure
#: that contains itself, or a library caller's of 100,000 levels, reaches it (ValueError).
MAX_SCOPE_DEPTH = 100_000
_END = object()


def _rebuild(value: Any, leaf: Callable[[Any], Any], pairs: Callable[[Mapping[Any, Any]], list[tuple[Any, Any]]],
             make_dict: Callable[[list[Any], list[Any]], Any], make_list: Callable[[list[Any]], Any]) -> Any:
    """``value`` rebuilt bottom-up with an explicit stack (no recursion, whatever its depth): a Mapping from its
    ``pairs`` (keys as given, values rebuilt) by ``make_dict(keys, values)``, a list or tuple from its rebuilt items by
    ``make_list``, anything else by ``leaf``. ValueError past :data:`MAX_SCOPE_DEPTH` levels."""
    stack: list[tuple[list[Any] | None, Iterator[Any], list[Any]]] = []
    node, result, opened = value, None, False
    while True:
        if isinstance(node, Mapping):
            kept = pairs(node)
            stack.append(([k for k, _ in kept], iter([v for _, v in kept]), []))
            opened = True
        elif isinstance(node, (list, tuple)):
            stack.append((None, iter(node), []))
            opened = True
        else:
            result, opened = leaf(node), False
        if len(stack) > MAX_SCOPE_DEPTH:
            raise ValueError(f"the request nests objects and arrays more than {MAX_SCOPE_DEPTH} levels deep (or "
                             "contains itself): flatten it")
        while True:
            if not opened:
                if not stack:
                    return result
                stack[-1][2].append(result)
            keys, children, done = stack[-1]
            node = next(children, _END)
            if node is not _END:
                break
            stack.pop()
            result = make_list(done) if keys is None else make_dict(keys, done)
            opened = False


def _normal(value: Any) -> Any:
    """Plain JSON values; a system prompt given as text blocks hashes like the same plain text."""
    return _rebuild(value, _same, _normal_pairs, _as_dict, _joined_text_blocks)


def _same(value: Any) -> Any:
    return value


def _as_dict(keys: list[Any], values: list[Any]) -> dict[Any, Any]:
    return dict(zip(keys, values))


def _normal_pairs(value: Mapping[Any, Any]) -> list[tuple[Any, Any]]:
    return [(str(k), v) for k, v in value.items() if not (k == "cache_control" and _caching_marker(v))]


def _joined_text_blocks(items: list[Any]) -> Any:
    """A list of text blocks (only ``type`` and ``text``) as its texts, one a line; any other list as it is."""
    if items and all(isinstance(b, Mapping) and b.get("type") == "text" and set(b) <= {"type", "text"} for b in items):
        return "\n".join(str(b.get("text", "")) for b in items)
    return items


def _canonical(doc: dict[str, Any]) -> dict[str, Any]:
    """The scope document (:func:`request_scope`'s, after :func:`_normal`) in its canonical form: texts (keys too) in
    NFC, whole numbers as ints (``1.0`` is ``1``), the generation parameters without those at their default
    (:data:`DEFAULTS`), stop sequences sorted and without repeats, an empty list or object as absent. A function of the
    document alone, and idempotent: a document already canonical is hashed as it is (so a key made before this form
    existed is only ever found again by a request that means the same)."""
    out = {k: _plain(v) for k, v in doc.items()}
    for key in ("system", "tools"):
        if _empty(out.get(key)):
            out[key] = None
    params = out.get("params")
    if isinstance(params, dict):
        kept = {}
        for name, value in params.items():
            if name in _STOP_PARAMS:
                value = [value] if isinstance(value, str) else value
                if isinstance(value, list) and all(isinstance(v, str) for v in value):
                    value = sorted(set(value))
            if _empty(value) or (name in DEFAULTS and _real(value) and value == DEFAULTS[name]):
                continue
            kept[name] = value
        out["params"] = kept
    return out


def _plain(value: Any) -> Any:
    """``value`` with its texts (keys too) in NFC and its whole floats as ints.

    NFC of a Stream-Safe text (:func:`~costline.textutil.stream_safe`): the same text for every real one, and a run
    of thousands of combining marks, which NFC sorts in quadratic time, cut every 30 marks by a grapheme joiner."""
    return _rebuild(value, _plain_leaf, _plain_pairs, _as_dict, list)


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", stream_safe(text))


def _plain_leaf(value: Any) -> Any:
    if isinstance(value, str):
        return _nfc(value)
    if isinstance(value, float) and value.is_integer() and abs(value) <= _EXACT_INT:
        return int(value)
    return value


def _plain_pairs(value: Mapping[Any, Any]) -> list[tuple[Any, Any]]:
    return [(_nfc(str(k)), v) for k, v in value.items()]


def _dumps(doc: Any) -> str:
    """``json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)``, the same text,
    written without recursion (the json module's encoder recurses, and raises RecursionError a few hundred levels
    down). ValueError past :data:`MAX_SCOPE_DEPTH` levels."""
    out: list[str] = []
    # each open object or array: [its items, its closing bracket, whether none is written yet, whether an object]
    stack: list[list[Any]] = []

    def begin(value: Any) -> None:
        if isinstance(value, Mapping):
            out.append("{")
            stack.append([iter(sorted(value.items(), key=lambda kv: kv[0])), "}", True, True])
        elif isinstance(value, (list, tuple)):
            out.append("[")
            stack.append([iter(value), "]", True, False])
        else:
            out.append(_json_string(value) if isinstance(value, str)
                       else json.dumps(value, ensure_ascii=False, default=str))
        if len(stack) > MAX_SCOPE_DEPTH:
            raise ValueError(f"the request nests objects and arrays more than {MAX_SCOPE_DEPTH} levels deep: "
                             "flatten it")

    begin(doc)
    while stack:
        top = stack[-1]
        item = next(top[0], _END)
        if item is _END:
            out.append(top[1])
            stack.pop()
            continue
        if not top[2]:
            out.append(",")
        top[2] = False
        if top[3]:
            out.append(f"{_json_string(item[0])}:")
            item = item[1]
        begin(item)
    return "".join(out)


def _empty(value: Any) -> bool:
    """An empty list or object (the same request as one without the field)."""
    return isinstance(value, (list, tuple, Mapping)) and not value


def _real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _caching_marker(value: Any) -> bool:
    """A prompt-caching ``cache_control`` (``{"type": "ephemeral", ...}``), not a field of the request's data (a
    tool's schema, a tool call's input) that happens to bear the name: only the marker leaves the answer as is."""
    return isinstance(value, Mapping) and value.get("type") == "ephemeral"
