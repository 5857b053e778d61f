"""The Messages API's request shapes and the Chat Completions API's, translated: tool use (function calling)
and images, between the two APIs the gateway speaks and the two kinds of tier it calls.

A request that offers tools, or whose turns carry tool calls and their results, is carried through the
pipeline in the Messages API's shapes (the canonical form of a :class:`~costline.serving.backends.Prompt`):

* ``tools``: ``[{"name", "description"?, "input_schema"}]``, ``tool_choice``: ``{"type": "auto" | "any" |
  "none"}`` or ``{"type": "tool", "name"}`` (``disable_parallel_tool_use`` kept);
* an assistant turn's ``tool_use`` blocks (``id``, ``name``, ``input`` an object) and the next user turn's
  ``tool_result`` blocks (``tool_use_id``, ``content`` a string or text blocks, ``is_error``).

This module checks those shapes (:func:`tools_problem`, what the API itself would refuse) and translates
them to and from the Chat Completions API's (``tools: [{"type": "function", "function": {"name",
"description", "parameters"}}]``, ``tool_choice`` ``"auto" | "none" | "required"`` or a named function, an
assistant message's ``tool_calls`` with JSON ``arguments``, ``role: "tool"`` messages): both for an app on the
``openai`` SDK (:func:`tools_from_openai`, :func:`turns_from_openai`, :func:`openai_tool_calls`) and for a tier
served by an OpenAI-compatible server (:func:`tools_to_openai`, :func:`messages_to_openai`,
:func:`blocks_from_openai`).

A user turn's ``image`` blocks (``source`` base64 or url) reach an OpenAI-compatible tier as ``image_url`` parts
(a data URL for base64): a tier that cannot read images refuses the request (an API error, escalated to a tier
that can), rather than answering a question about a picture it never saw.

A ``document`` block whose source is text (``source.type`` ``text``, or ``content`` of text blocks) and a
``search_result`` block reach such a tier as text (:func:`document_text`: its title, context and text). Anything
it cannot be given — a PDF or a document by URL or file id, a document or search result that asks for
citations (the Messages API's citation blocks have no Chat Completions form), an image in a tool result, a
block type this module does not know — raises :class:`NotTranslatable`: that tier fails and the request goes up
a tier, never answered by a model that did not see part of it. (Thinking blocks of earlier assistant turns are
left out: an OpenAI-compatible API takes no reasoning as input.)

Anthropic-defined tools (a ``type`` with a version date: the server tools ``web_search_20250305``,
``web_fetch_20250910``, ``code_execution_20250825``… that run inside Anthropic's API, and the client tools
``bash_20250124``, ``text_editor_20250728``, ``computer_20250124``… whose schema Anthropic defines) are carried to
Anthropic tiers as they came (:func:`anthropic_defined`); an OpenAI-compatible tier has no form of them
(:func:`tools_to_openai` raises :class:`NotTranslatable`), nor of the ``server_tool_use`` / ``*_tool_result``
blocks they leave in a conversation.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["TOOL_NAME", "MAX_TOOLS", "ANTHROPIC_TOOL_TYPE", "NotTranslatable", "anthropic_defined", "tools_problem", "uses_tools", "cites", "tools_from_openai",
           "turns_from_openai", "refusal_as_text", "without_empty_turns", "tools_to_openai", "tools_for_anthropic", "messages_to_openai", "blocks_from_openai", "openai_tool_calls",
           "block_text", "document_text", "file_block", "image_block", "NotJSON", "loads_json"]

#: A tool's name as both APIs accept it (Anthropic allows 128 characters, OpenAI 64).
TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
#: At most this many tools a request (the APIs' own limit is in the same range: OpenAI 128).
MAX_TOOLS = 128
#: The type of an Anthropic-defined tool: its name and the date of its version (``web_search_20250305``).
ANTHROPIC_TOOL_TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}_\d{8}")
_CHOICES = ("auto", "any", "none", "tool")


def block_text(content: Any, sep: str = "\n") -> str:
    """The text of a message's (or a ``tool_result``'s) content: a string, or its text blocks joined by ``sep``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return sep.join(str(b.get("text", "")) for b in content if isinstance(b, Mapping)
                        and b.get("type", "text") == "text")
    return ""


class NotTranslatable(ValueError):
    """A block an OpenAI-compatible tier cannot be given (the Chat Completions API has no form for it): that tier
    fails, and the request goes up a tier."""


#: Blocks that carry a source a model may cite (the Messages API's ``citations: {"enabled": true}``).
_CITABLE = ("document", "search_result")


def cites(messages: Sequence[Mapping[str, Any]]) -> bool:
    """True when a document or search result of the turns (a tool result's included) asks for citations: the
    answer's text blocks then carry ``citations``, which only the Messages API has."""
    for m in messages:
        content = m.get("content")
        for block in content if isinstance(content, list) else ():
            if not isinstance(block, Mapping):
                continue
            inner = block.get("content") if block.get("type") == "tool_result" else None
            for b in [block, *(inner if isinstance(inner, list) else ())]:
                if isinstance(b, Mapping) and b.get("type") in _CITABLE and _citations_on(b):
                    return True
    return False


def _citations_on(block: Mapping[str, Any]) -> bool:
    config = block.get("citations")
    return isinstance(config, Mapping) and config.get("enabled") is True


def document_text(block: Mapping[str, Any]) -> str:
    """A ``document`` block with a text source, or a ``search_result`` block, as the text an OpenAI-compatible tier
    reads (title, context, then the text); raises :class:`NotTranslatable` for any other source or when it asks
    for citations."""
    kind = block.get("type")
    if _citations_on(block):
        raise NotTranslatable(f"a {kind} that asks for citations (an OpenAI-compatible API cannot return them)")
    title = block.get("title")
    if kind == "search_result":
        head = f"Search result: {title} ({block.get('source')})" if title else f"Search result ({block.get('source')})"
        return f"{head}\n{block_text(block.get('content'))}"
    source = block.get("source") if isinstance(block.get("source"), Mapping) else {}
    if source.get("type") == "text" and isinstance(source.get("data"), str):
        body = source["data"]
    elif source.get("type") == "content":
        body = block_text(source.get("content"))
    else:
        what = source.get("media_type") or source.get("type") or "unknown"
        raise NotTranslatable(f"a document of source {str(what)[:40]!r} (an OpenAI-compatible tier reads text)")
    lines = [f"Document: {title}" if title else "Document:"]
    if isinstance(block.get("context"), str) and block["context"]:
        lines.append(block["context"])
    return "\n".join(lines) + f"\n\n{body}"


def uses_tools(messages: Sequence[Mapping[str, Any]], tools: Sequence[Any] = ()) -> bool:
    """True when a request offers tools or its turns carry tool calls or results."""
    if tools:
        return True
    for m in messages:
        content = m.get("content")
        if isinstance(content, list) and any(isinstance(b, Mapping) and b.get("type") in ("tool_use", "tool_result")
                                             for b in content):
            return True
    return False


def tools_problem(tools: Any, tool_choice: Any) -> str | None:
    """What is wrong with a Messages request's ``tools`` and ``tool_choice`` (as the API would say it), or None.
    Only custom tools (a name and an ``input_schema``) are carried: Anthropic's server tools (web search, code
    execution…) run inside Anthropic's API and no other tier could answer them."""
    if tools is not None:
        if not isinstance(tools, list):
            return "tools: a list of tools"
        if len(tools) > MAX_TOOLS:
            return f"tools: at most {MAX_TOOLS} tools a request"
        seen: set[str] = set()
        for i, tool in enumerate(tools):
            if not isinstance(tool, Mapping):
                return f"tools[{i}]: a tool is an object"
            kind = tool.get("type", "custom")
            if kind not in ("custom", None) and not (isinstance(kind, str) and ANTHROPIC_TOOL_TYPE.fullmatch(kind)):
                return (f"tools[{i}].type: {str(kind)[:60]!r} is neither custom nor an Anthropic-defined tool type "
                        "(a name and its version date, such as web_search_20250305)")
            name = tool.get("name")
            if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
                return f"tools[{i}].name: 1-64 letters, digits, '_' or '-'"
            if name in seen:
                return f"tools[{i}].name: {name!r} is offered twice"
            seen.add(name)
            if anthropic_defined(tool):
                continue  # its schema is Anthropic's; its other fields are the API's to check
            if not isinstance(tool.get("input_schema"), Mapping):
                return f"tools[{i}].input_schema: a JSON Schema object is required"
            if tool.get("description") is not None and not isinstance(tool.get("description"), str):
                return f"tools[{i}].description: a string"
            if tool.get("strict") is not None and not isinstance(tool.get("strict"), bool):
                return f"tools[{i}].strict: true or false"
    if tool_choice is None:
        return None
    if not isinstance(tool_choice, Mapping) or tool_choice.get("type") not in _CHOICES:
        return "tool_choice: an object whose type is auto, any, none or tool"
    if tool_choice.get("type") == "tool":
        names = {t.get("name") for t in tools or [] if isinstance(t, Mapping) and isinstance(t.get("name"), str)}
        if not isinstance(tool_choice.get("name"), str) or tool_choice.get("name") not in names:
            return "tool_choice.name: the name of one of the request's tools"
    elif tool_choice.get("type") == "any" and not tools:
        return "tool_choice: 'any' needs tools"
    return None


def anthropic_defined(tool: Mapping[str, Any]) -> bool:
    """True for an Anthropic-defined tool (a server tool such as web search, or a client tool whose schema Anthropic
    defines such as bash): only an Anthropic tier can be given it."""
    kind = tool.get("type")
    return isinstance(kind, str) and ANTHROPIC_TOOL_TYPE.fullmatch(kind) is not None


class NotJSON(ValueError):
    """Text that Python's ``json`` module reads but JSON is not: ``NaN``, ``Infinity``, ``-Infinity``, or a number
    too large for a float (``1e999``, read as infinity). No API the gateway calls takes such a value, and the tier
    SDKs cannot even send it: the request is the client's mistake (a 400), never a tier's failure."""


def _constant(name: str) -> Any:
    raise NotJSON(f"{name} is not a JSON value (JSON numbers are finite): send null, a number or a string")


def _finite(text: str) -> float:
    value = float(text)
    if value - value != 0.0:  # inf - inf is nan
        raise NotJSON(f"the number {text[:40]} is out of range: JSON numbers the APIs take are finite 64-bit floats")
    return value


def loads_json(text: str | bytes) -> Any:
    """``json.loads`` of JSON as the APIs read it: ``NaN``, ``Infinity`` and a number out of a float's range raise
    :class:`NotJSON` (a ``ValueError``, as malformed JSON raises) instead of becoming a float no JSON encoder of the
    tiers' SDKs will write."""
    return json.loads(text, parse_constant=_constant, parse_float=_finite)


def _read_arguments(raw: Any) -> dict[str, Any] | str:
    """A function call's JSON ``arguments`` as an object (an empty string is no arguments), or what is wrong."""
    if raw is None or raw == "":
        return {}
    if isinstance(raw, Mapping):
        return dict(raw)
    if not isinstance(raw, str):
        return "not a string of JSON"
    try:
        value = loads_json(raw)
    except NotJSON as exc:
        return str(exc)
    except (ValueError, RecursionError):
        return "not JSON"
    return value if isinstance(value, dict) else "not a JSON object"


def _arguments(raw: Any) -> dict[str, Any] | None:
    """A function call's JSON ``arguments`` as an object (an empty string is no arguments); None if not one."""
    read = _read_arguments(raw)
    return None if isinstance(read, str) else read


# -- an app on the openai SDK -> the pipeline's Messages shapes --------------------------------------------------
def tools_from_openai(tools: Any, tool_choice: Any) -> tuple[list[dict[str, Any]], dict[str, Any] | None] | tuple[str, str]:
    """A Chat Completions request's ``tools`` / ``tool_choice`` as the Messages API's, or ``(param, problem)``."""
    out: list[dict[str, Any]] = []
    if tools is not None:
        if not isinstance(tools, list):
            return "tools", "tools: a list of function tools"
        for i, tool in enumerate(tools):
            fn = tool.get("function") if isinstance(tool, Mapping) else None
            if not isinstance(tool, Mapping) or tool.get("type") != "function" or not isinstance(fn, Mapping):
                return f"tools[{i}]", (f"tools[{i}]: only function tools ({{'type': 'function', 'function': {{...}}}}) "
                                       "are carried by the costline gateway")
            params = fn.get("parameters")
            if params is None:
                params = {"type": "object", "properties": {}}
            if not isinstance(params, Mapping):
                return f"tools[{i}].function.parameters", f"tools[{i}].function.parameters: a JSON Schema object"
            converted: dict[str, Any] = {"name": fn.get("name"), "input_schema": dict(params)}
            if fn.get("description") is not None:
                converted["description"] = fn.get("description")
            if fn.get("strict") is not None:  # structured outputs: the arguments follow the schema exactly
                converted["strict"] = fn.get("strict")
            out.append(converted)
    choice: dict[str, Any] | None = None
    if tool_choice is not None:
        if tool_choice in ("auto", "none"):
            choice = {"type": tool_choice}
        elif tool_choice == "required":
            choice = {"type": "any"}
        elif isinstance(tool_choice, Mapping) and tool_choice.get("type") == "function" \
                and isinstance(tool_choice.get("function"), Mapping):
            choice = {"type": "tool", "name": tool_choice["function"].get("name")}
        else:
            return "tool_choice", "tool_choice: 'auto', 'none', 'required' or {'type': 'function', 'function': {'name'}}"
    problem = tools_problem(out if tools is not None else None, choice)
    if problem:
        return ("tool_choice" if problem.startswith("tool_choice") else "tools"), \
            problem.replace("input_schema", "function.parameters").replace("].name", "].function.name") \
            .replace("].strict", "].function.strict")
    return out, choice


def turns_from_openai(raw: Sequence[Mapping[str, Any]], text_of: Any) -> tuple[list[str], list[dict[str, Any]]] | tuple[str, str]:
    """(system parts, Messages-shaped turns) of Chat Completions ``messages`` that may carry ``tool_calls`` and
    ``role: "tool"`` results, or ``(param, problem)``. ``text_of(content)`` reads a message's text (None: not text).
    Consecutive tool results become one user turn of ``tool_result`` blocks, as the Messages API wants them; an
    empty turn before the last is left out (:func:`without_empty_turns`); an assistant message's refusal is its text
    (:func:`refusal_as_text`)."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, m in enumerate(raw):
        role = m.get("role")
        if role == "tool":
            call_id = m.get("tool_call_id")
            text = text_of(m.get("content"))
            if not isinstance(call_id, str) or not call_id:
                return f"messages[{i}].tool_call_id", f"messages[{i}].tool_call_id: the id of the call it answers"
            if text is None:
                return f"messages[{i}].content", f"messages[{i}].content: a tool result's text"
            block = {"type": "tool_result", "tool_use_id": call_id, "content": text}
            last = turns[-1] if turns else None
            if last is not None and last["role"] == "user" and isinstance(last["content"], list) \
                    and all(b.get("type") == "tool_result" for b in last["content"]):
                last["content"].append(block)
            else:
                turns.append({"role": "user", "content": [block]})
            continue
        if role not in ("system", "developer", "user", "assistant"):
            return f"messages[{i}].role", (f"messages[{i}].role: {role!r} is not supported (system, developer, user, "
                                           "assistant, tool)")
        calls = m.get("tool_calls") if role == "assistant" else None
        content = refusal_as_text(m.get("content"), m.get("refusal")) if role == "assistant" else m.get("content")
        if role == "user" and isinstance(content, list) and any(
                isinstance(p, Mapping) and p.get("type") in ("image_url", "file") for p in content):
            blocks = _user_parts(content)
            if isinstance(blocks, str):
                return f"messages[{i}].content", f"messages[{i}].content{blocks}"
            turns.append({"role": "user", "content": blocks})
            continue
        text = "" if content is None and calls else text_of(content)
        if text is None:
            return f"messages[{i}].content", f"messages[{i}].content: text (a string or text parts) is required"
        if role in ("system", "developer"):
            system.append(text)
            continue
        if not calls:
            turns.append({"role": role, "content": text})
            continue
        if not isinstance(calls, list):
            return f"messages[{i}].tool_calls", f"messages[{i}].tool_calls: a list of function calls"
        blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
        for j, call in enumerate(calls):
            fn = call.get("function") if isinstance(call, Mapping) else None
            args = _read_arguments(fn.get("arguments")) if isinstance(fn, Mapping) else None
            if not isinstance(fn, Mapping) or not isinstance(call.get("id"), str) \
                    or not isinstance(fn.get("name"), str) or args is None:
                return f"messages[{i}].tool_calls[{j}]", (f"messages[{i}].tool_calls[{j}]: a function call with an id, "
                                                          "a name and JSON object arguments")
            if isinstance(args, str):  # the param is the call (as for any other fault of it), the message says where
                return f"messages[{i}].tool_calls[{j}]", (f"messages[{i}].tool_calls[{j}].function.arguments: {args} "
                                                          "(a function call's arguments are a JSON object, as a string)")
            blocks.append({"type": "tool_use", "id": call["id"], "name": fn["name"], "input": args})
        turns.append({"role": "assistant", "content": blocks})
    return system, without_empty_turns(turns)


def refusal_as_text(content: Any, refusal: Any) -> Any:
    """An assistant message's ``content`` with its refusal read as text: OpenAI's API gives a declined answer as
    ``refusal`` with ``content`` null (or as a ``{"type": "refusal", "refusal": ...}`` content part), and an app sends
    that message back as it came (the ``openai`` SDK's ``messages.append(choice.message)``, LiteLLM's
    ``model_dump()``). What the model said when it declined is its turn: left out, the next question would join the
    declined one in one user turn."""
    if content in (None, "") and isinstance(refusal, str) and refusal:
        return refusal
    if isinstance(content, list):
        return [{"type": "text", "text": p["refusal"]} if isinstance(p, Mapping) and p.get("type") == "refusal"
                and isinstance(p.get("refusal"), str) else p for p in content]
    return content


def without_empty_turns(turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``turns`` less each turn of no text before the last (an empty or blank string, or no blocks at all).

    OpenAI's APIs take an assistant (or user) message of ``""`` anywhere in a conversation; Anthropic's refuses every
    empty message but a final assistant one ("all messages must have non-empty content…"), so such a turn would fail
    on every Anthropic tier. It says nothing, so leaving it out keeps the conversation's meaning. The turns either
    side of it may then share a role: they are left as they are, as a conversation of two user messages in a row
    is (Anthropic's API reads consecutive turns of one role as one turn). The last turn is kept as it is: the
    routes refuse a last user turn without text themselves."""
    last = len(turns) - 1
    return [t for i, t in enumerate(turns) if i == last or not _empty(t.get("content"))]


def _empty(content: Any) -> bool:
    return (isinstance(content, str) and not content.strip()) or (isinstance(content, list) and not content)


def _user_parts(parts: list[Any]) -> list[dict[str, Any]] | str:
    """A user message's text, ``image_url`` and ``file`` parts as Messages blocks, in order, or what is wrong
    (``[j]: …``)."""
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text" and isinstance(part.get("text"), str):
            blocks.append({"type": "text", "text": part["text"]})
            continue
        if kind == "file":
            given = part.get("file") if isinstance(part.get("file"), Mapping) else {}
            block = file_block(given.get("file_data"), given.get("filename"))
            if block is None:
                return (f"[{j}].file: file_data, a base64 data: URL of a PDF or plain text (a file_id names a file "
                        "stored at OpenAI, which the gateway cannot read: send the data inline)")
            blocks.append(block)
            continue
        url = part.get("image_url") if kind == "image_url" else None
        block = image_block(url.get("url") if isinstance(url, Mapping) else url)
        if block is None:
            return (f"[{j}]: text, image_url and file parts are supported by the costline gateway, not "
                    f"{str(kind)[:40]!r}" if kind != "image_url"
                    else f"[{j}].image_url.url: a base64 data: URL or an http(s) URL")
        blocks.append(block)
    return blocks


_DATA_DOCUMENT = re.compile(r"data:(application/pdf|text/plain)(?:;[^;,]*)*;base64,(.*)", re.DOTALL)


def file_block(data: Any, filename: Any = None, url: Any = None) -> dict[str, Any] | None:
    """An OpenAI file input (``file_data``: a base64 ``data:`` URL of a PDF or plain text; or, from the Responses API,
    a ``file_url``) as a Messages ``document`` block titled with ``filename``, or None when it is neither."""
    title = {"title": filename[:500]} if isinstance(filename, str) and filename else {}
    if isinstance(url, str) and url.startswith(("https://", "http://")) and data is None:
        return {"type": "document", "source": {"type": "url", "url": url}, **title}
    found = _DATA_DOCUMENT.fullmatch(data) if isinstance(data, str) else None
    if found is None:
        return None
    try:
        raw = base64.b64decode(found.group(2), validate=True)
    except (binascii.Error, ValueError):
        return None
    if found.group(1) == "text/plain":
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": text}, **title}
    return {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": found.group(2)},
            **title}


def openai_tool_calls(blocks: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """An answer's ``tool_use`` blocks as a chat completion message's ``tool_calls``."""
    return [{"id": b.get("id"), "type": "function",
             "function": {"name": b.get("name"), "arguments": json.dumps(b.get("input") or {})}}
            for b in blocks if b.get("type") == "tool_use"]


# -- the pipeline's Messages shapes -> a tier on an OpenAI-compatible server ------------------------------------
def tools_to_openai(tools: Sequence[Mapping[str, Any]], tool_choice: Mapping[str, Any] | None, *,
                    strict: bool = True) -> dict[str, Any]:
    """The request fields (``tools``, ``tool_choice``, ``parallel_tool_calls``) of a Messages request's tools;
    :class:`NotTranslatable` for an Anthropic-defined tool. A strict tool's function says ``strict: true`` where the
    tier takes it (``strict``: False for a self-hosted student, whose server may refuse the field or read it as part
    of the prompt); ``strict: false`` is the API's default and is not sent."""
    if not tools:
        return {}
    for t in tools:
        if anthropic_defined(t):
            raise NotTranslatable(f"the Anthropic-defined tool {str(t.get('type'))[:60]!r} (it runs on Anthropic "
                                  "tiers only)")
    out: dict[str, Any] = {"tools": [{"type": "function", "function": {
        "name": t.get("name"), **({"description": t["description"]} if t.get("description") else {}),
        "parameters": t.get("input_schema") or {"type": "object", "properties": {}},
        **({"strict": True} if strict and t.get("strict") is True else {})}} for t in tools]}
    if tool_choice:
        kind = tool_choice.get("type")
        out["tool_choice"] = ({"type": "function", "function": {"name": tool_choice.get("name")}} if kind == "tool"
                              else {"any": "required"}.get(str(kind), kind))
        if tool_choice.get("disable_parallel_tool_use") is True and kind != "none":
            out["parallel_tool_calls"] = False
    return out


def tools_for_anthropic(tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A request's tools as a Messages API tier is sent them: a strict tool's ``input_schema`` in the subset of JSON
    Schema Anthropic's strict tool use takes (the anthropic SDK's ``transform_schema``, as its own ``parse`` sends:
    numeric and length bounds move into the description), since an OpenAI app's strict schema may use more. A
    strict schema it cannot adapt (a list of types, an empty property schema, pydantic v1's ``definitions``) goes
    as it came without ``strict``, as before the gateway carried it: never a request refused for it. The other
    tools as they came."""
    out = [dict(t) for t in tools]
    if not any(t.get("strict") is True for t in out):
        return out
    try:
        from anthropic import transform_schema  # anthropic >= 0.75
    except ImportError:  # pragma: no cover - an older SDK: strict dropped, as before
        transform_schema = None
    for t in out:
        if t.get("strict") is not True:
            continue
        schema = t.get("input_schema")
        try:
            if transform_schema is None or not isinstance(schema, Mapping) or "definitions" in schema:
                raise ValueError("not a schema transform_schema takes")
            t["input_schema"] = transform_schema(schema)  # a new schema: the request's own is left as it is
        except Exception:  # noqa: BLE001 - AssertionError, ValueError, TypeError, RecursionError…
            del t["strict"]
    return out


def messages_to_openai(system: Any, messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Messages-shaped system + turns as Chat Completions messages: text (documents and search results as text), an
    assistant turn's ``tool_use`` blocks as ``tool_calls``, a user turn's ``tool_result`` blocks as ``role:
    "tool"`` messages (before the turn's text, as an OpenAI conversation orders them). Raises
    :class:`NotTranslatable` for a block the tier cannot be given (see the module)."""
    out: list[dict[str, Any]] = []
    if system:
        out.append({"role": "system", "content": block_text(system)})
    for m in messages:
        role = str(m.get("role", "user"))
        content = m.get("content")
        if not isinstance(content, list):
            out.append({"role": role, "content": block_text(content)})
            continue
        blocks = [b for b in content if isinstance(b, Mapping)]
        for b in blocks:
            _check_translatable(b, role)
        text = "\n".join(_text_of(b) for b in blocks if b.get("type", "text") in _TEXTUAL)
        images = any(b.get("type") == "image" for b in blocks)
        uses = [b for b in blocks if b.get("type") == "tool_use"]
        results = [b for b in blocks if b.get("type") == "tool_result"]
        if role == "assistant" and uses:
            out.append({"role": "assistant", "content": text or None, "tool_calls": openai_tool_calls(uses)})
            continue
        for r in results:
            result = _result_text(r.get("content"))
            if r.get("is_error") is True:
                result = f"Error: {result}"
            out.append({"role": "tool", "tool_call_id": str(r.get("tool_use_id", "")), "content": result})
        if images and role == "user":  # the turn's parts in order: text and images
            parts = [{"type": "text", "text": _text_of(b)} if b.get("type", "text") in _TEXTUAL else _image_part(b)
                     for b in blocks if b.get("type", "text") in (*_TEXTUAL, "image")]
            out.append({"role": role, "content": parts})
        elif text or not results:
            out.append({"role": role, "content": text})
    return out


#: Blocks an OpenAI-compatible tier reads as text.
_TEXTUAL = ("text", "document", "search_result")
#: Blocks of earlier assistant turns it is not given (it takes no reasoning as input).
_LEFT_OUT = ("thinking", "redacted_thinking")


def _text_of(block: Mapping[str, Any]) -> str:
    if block.get("type", "text") == "text":
        return str(block.get("text", ""))
    return document_text(block)


def _result_text(content: Any) -> str:
    """A tool result's content as the text of a ``role: "tool"`` message (search results as text; an image or a
    document it cannot read raises :class:`NotTranslatable`)."""
    if not isinstance(content, list):
        return block_text(content)
    parts = []
    for b in content:
        kind = b.get("type", "text") if isinstance(b, Mapping) else None
        if kind not in _TEXTUAL:
            raise NotTranslatable(f"a tool result holding {str(kind)[:40]!r} content (an OpenAI-compatible tool "
                                  "message holds text)")
        parts.append(_text_of(b))
    return "\n".join(parts)


#: The block types an OpenAI-compatible tier can be given, by the role of the turn that holds them.
_TRANSLATABLE = {"user": (*_TEXTUAL, "image", "tool_result"), "assistant": ("text", "tool_use", *_LEFT_OUT)}


def _check_translatable(block: Mapping[str, Any], role: str) -> None:
    kind = block.get("type", "text")
    if kind not in _TRANSLATABLE.get(role, ("text",)):
        raise NotTranslatable(f"a {str(kind)[:40]!r} block in a {role[:20]} turn (no Chat Completions form)")


_DATA_URL = re.compile(r"data:(image/[a-zA-Z0-9.+-]+);base64,(.*)", re.DOTALL)


def image_block(url: Any) -> dict[str, Any] | None:
    """An OpenAI image URL (a base64 ``data:`` URL or an http(s) URL) as a Messages ``image`` block, or None when
    it is neither (or its base64 does not decode)."""
    if not isinstance(url, str):
        return None
    found = _DATA_URL.fullmatch(url)
    if found is None:
        return {"type": "image", "source": {"type": "url", "url": url}} if url.startswith(("https://", "http://")) \
            else None
    try:
        base64.b64decode(found.group(2), validate=True)
    except (binascii.Error, ValueError):
        return None
    return {"type": "image", "source": {"type": "base64", "media_type": found.group(1), "data": found.group(2)}}


def _image_part(block: Mapping[str, Any]) -> dict[str, Any]:
    """A Messages ``image`` block as a Chat Completions ``image_url`` part (base64 as a data URL)."""
    source = block.get("source") if isinstance(block.get("source"), Mapping) else {}
    if source.get("type") == "url":
        url = str(source.get("url", ""))
    else:
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    return {"type": "image_url", "image_url": {"url": url}}


def blocks_from_openai(message: Mapping[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """(Messages-shaped content blocks, problem) of a chat completion's message that calls tools: its text
    (if any) and a ``tool_use`` block per call. ``problem`` names a call whose ``arguments`` are no JSON object
    (a model's broken call: not an answer to pass on)."""
    content = message.get("content")
    blocks: list[dict[str, Any]] = [{"type": "text", "text": content}] if isinstance(content, str) and content else []
    for call in message.get("tool_calls") or []:
        fn = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            return blocks, "a tool call without a function name"
        args = _arguments(fn.get("arguments"))
        if args is None:
            return blocks, f"the arguments of the call to {fn['name'][:64]!r} are not a JSON object"
        blocks.append({"type": "tool_use", "id": str(call.get("id") or ""), "name": fn["name"], "input": args})
    return blocks, None
