"""Captured content spelled some other way, read into the GenAI conventions' message JSON.

costline keeps a call's content as the conventions spell it in ``gen_ai.input.messages`` /
``gen_ai.output.messages``: ``[{"role": "user", "parts": [{"type": "text", "content": "..."}]}]``, an output
message with its ``finish_reason``. Three widely deployed families spell content otherwise, and all three capture
it by default:

* **OpenInference** (Arize Phoenix) writes one attribute per field:
  - ``llm.input_messages.{i}.message.role`` and ``.content``, or parts as
    ``.contents.{j}.message_content.type`` / ``.text``;
  - tool calls as ``.tool_calls.{k}.tool_call.id`` / ``.function.name`` / ``.function.arguments``, and a tool's
    answer with ``.tool_call_id``;
  - the answer under ``llm.output_messages``, its finish reason in ``llm.finish_reason``.

  Its indices may start past 0 or skip some (a Responses API call without instructions starts at 1; a part or
  an item it does not record leaves a hole), so an OpenInference span's keys are read by prefix.
* **OpenLLMetry before 0.57** (``traceloop-sdk`` and its instrumentations; 0.57 moved to the conventions'
  attributes) writes one attribute per field, numbered from 0:
  - ``gen_ai.prompt.{i}.role`` and ``.content`` (a text, or Anthropic's or OpenAI's content blocks as a JSON
    list), ``.tool_calls.{k}.id`` / ``.name`` / ``.arguments`` and ``.tool_call_id``;
  - the answer under ``gen_ai.completion.{i}``, with ``.finish_reason`` and ``.refusal``; an Anthropic answer's
    thinking comes first as a message of role ``thinking``.
* **The Vercel AI SDK's spans of AI SDK 6 and before** (``LegacyOpenTelemetry`` in AI SDK 7) write the prompt as
  one JSON list in ``ai.prompt.messages``, in the SDK's own message shape (``text`` / ``reasoning`` /
  ``tool-call`` / ``tool-result`` / ``file`` parts). The answer is ``ai.response.text``,
  ``ai.response.reasoning``, ``ai.response.toolCalls`` and ``ai.response.finishReason``.

Cost: a span with none of them costs a few dict lookups. Only an OpenInference span's keys are scanned.

What is kept:
- texts (and reasoning) as sent;
- a tool call's id, name and arguments;
- a tool's answer, as a ``tool_call_response`` part;
- of other parts (an image, a document), only their ``type``, as costline's own recorder does.

The result is ASCII JSON, so a cut emoji's half-surrogate stays an escape and never breaks the Parquet writer.
Nothing here raises on what a sender wrote. A value of an unexpected type is left out, and content nested past
JSON's depth is dropped (the caller notes it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from costline.processors.attributes import str_of

__all__ = ["flattened_input_messages", "flattened_output_messages", "MAX_MESSAGES", "MAX_PARTS"]

#: At most this many messages are read from one span (a sender's own limit is usually lower: the OTel SDK
#: keeps 128 attributes a span unless told otherwise).
MAX_MESSAGES: Final = 1_000
#: At most this many parts (or tool calls) are read from one message.
MAX_PARTS: Final = 256

_OI_KIND: Final = "openinference.span.kind"
_OI_INPUT: Final = "llm.input_messages."
_OI_OUTPUT: Final = "llm.output_messages."
_OI_FINISH: Final = "llm.finish_reason"
_OLD_PROMPT: Final = "gen_ai.prompt"
_OLD_COMPLETION: Final = "gen_ai.completion"
_AI_PROMPT_MESSAGES: Final = "ai.prompt.messages"
_AI_TEXT: Final = "ai.response.text"
_AI_REASONING: Final = "ai.response.reasoning"
_AI_TOOL_CALLS: Final = "ai.response.toolCalls"
_AI_FINISH: Final = "ai.response.finishReason"

#: Content block types of Anthropic's and OpenAI's APIs: a JSON list of only these in OpenLLMetry's ``.content``
#: is the message's blocks. Any other list (a tool's JSON output, say) is text.
_BLOCK_TYPES: Final = frozenset({
    "text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking", "server_tool_use",
    "web_search_tool_result", "search_result", "container_upload", "mcp_tool_use", "mcp_tool_result",
    "image_url", "input_audio", "file", "refusal", "input_text", "input_image", "input_file", "output_text"})


def flattened_input_messages(attrs: Mapping[str, Any]) -> str | None:
    """The request's messages as OpenInference, older OpenLLMetry or the AI SDK's older spans spell them, as
    conventions JSON; None when the span carries none of them (``attrs``: the span's attributes by key)."""
    get = attrs.get
    if (prompt := get(_AI_PROMPT_MESSAGES)) is not None:
        return _dump(_ai_sdk_prompt(str_of(prompt)))
    if get(f"{_OLD_PROMPT}.0.role") is not None or get(f"{_OLD_PROMPT}.0.content") is not None:
        return _dump(_openllmetry(get, _OLD_PROMPT, output=False))
    if get(_OI_KIND) is not None:
        return _dump(_openinference(attrs, _OI_INPUT, None))
    return None


def flattened_output_messages(attrs: Mapping[str, Any]) -> str | None:
    """The answer as OpenInference, older OpenLLMetry or the AI SDK's older spans spell it, as conventions
    JSON; None when none of them is there."""
    get = attrs.get
    if get(_AI_TEXT) is not None or get(_AI_TOOL_CALLS) is not None:
        return _dump(_ai_sdk_answer(get))
    if get(f"{_OLD_COMPLETION}.0.role") is not None or get(f"{_OLD_COMPLETION}.0.content") is not None:
        return _dump(_openllmetry(get, _OLD_COMPLETION, output=True))
    if get(_OI_KIND) is not None:
        return _dump(_openinference(attrs, _OI_OUTPUT, str_of(get(_OI_FINISH))))
    return None


def _dump(messages: list[dict[str, Any]]) -> str | None:
    # RecursionError: arguments nested past what json.dumps walks (json.loads took them): the caller notes it
    return json.dumps(messages, separators=(",", ":")) if messages else None


def _str(v: Any) -> str | None:
    """A string from a sender's JSON, else None (an id or a name of another type is left out)."""
    return v if isinstance(v, str) else None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is no JSON")


def _loads(text: str) -> Any:
    """``json.loads`` without Python's extensions (``NaN``, ``Infinity``: no strict parser reads them back)."""
    return json.loads(text, parse_constant=_no_constant)


def _arguments(text: str | None) -> Any:
    """A tool call's arguments: the object their JSON spells (the conventions' shape), else the text as sent."""
    if text is None:
        return None
    try:
        return _loads(text)
    except (ValueError, RecursionError):
        return text


def _tool_call(call_id: Any, name: Any, args: Any) -> dict[str, Any]:
    part: dict[str, Any] = {"type": "tool_call", "id": _str(call_id), "name": _str(name)}
    if args is not None:
        part["arguments"] = _arguments(args) if isinstance(args, str) else args
    return part


def _new_calls(parts: list[dict[str, Any]], calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``calls`` less those already among ``parts`` (by id)."""
    seen = {p["id"] for p in parts if p["type"] == "tool_call" and p["id"] is not None}
    return [p for p in calls if p["id"] is None or p["id"] not in seen]


def _message(role: str | None, parts: list[dict[str, Any]], output: bool) -> dict[str, Any]:
    return {"role": role or ("assistant" if output else "user"), "parts": parts}


def _text_or_tool_answer(text: str, tool_call_id: str | None) -> dict[str, Any]:
    if tool_call_id is not None:
        return {"type": "tool_call_response", "id": tool_call_id, "response": _tool_answer(text)}
    return {"type": "text", "content": text}


def _tool_answer(text: str) -> str:
    """A tool's answer; when it is Anthropic's content blocks as JSON (as OpenInference writes a ``tool_result``
    of blocks), their texts."""
    blocks = _blocks_of(text)
    if blocks is None:
        return text
    return "".join(b["text"] for b in blocks if b["type"] == "text" and isinstance(b.get("text"), str))


# -- OpenInference --------------------------------------------------------------------------------------------

def _index(key: str, start: int) -> tuple[int, int] | None:
    """``(n, end)`` of the number at ``key[start:]`` up to the next ``.``, else None."""
    end = key.find(".", start)
    if end <= start or not key[start:end].isdigit() or end - start > 6:
        return None
    return int(key[start:end]), end + 1


def _openinference(attrs: Mapping[str, Any], root: str, finish: str | None) -> list[dict[str, Any]]:
    """OpenInference's ``llm.{input,output}_messages.{i}.message.*``, grouped by index (holes skipped)."""
    fields: dict[int, dict[str, Any]] = {}
    n = len(root)
    for key, value in attrs.items():
        if not key.startswith(root):
            continue
        at = _index(key, n)
        if at is None or not key.startswith("message.", at[1]):
            continue
        i = at[0]
        if i not in fields:
            if len(fields) >= MAX_MESSAGES:
                continue
            fields[i] = {}
        fields[i][key[at[1] + 8:]] = value
    messages = []
    for i in sorted(fields):
        message = _oi_message(fields[i], root == _OI_OUTPUT)
        if message is not None:
            messages.append(message)
    if messages and finish is not None:
        messages[0]["finish_reason"] = finish  # OpenInference records the first choice's only
    return messages


def _grouped(fields: dict[str, Any], prefix: str) -> dict[int, dict[str, Any]]:
    """``{j: {rest: value}}`` of the keys ``prefix.{j}.{rest}`` (at most :data:`MAX_PARTS` indices)."""
    out: dict[int, dict[str, Any]] = {}
    for key, value in fields.items():
        if not key.startswith(prefix):
            continue
        at = _index(key, len(prefix))
        if at is None:
            continue
        if at[0] not in out:
            if len(out) >= MAX_PARTS:
                continue
            out[at[0]] = {}
        out[at[0]][key[at[1]:]] = value
    return out


def _oi_message(fields: dict[str, Any], output: bool) -> dict[str, Any] | None:
    role = str_of(fields.get("role"))
    content = str_of(fields.get("content"))
    tool_call_id = str_of(fields.get("tool_call_id"))
    parts: list[dict[str, Any]] = []
    if content is not None:
        parts.append(_text_or_tool_answer(content, tool_call_id))
    contents = _grouped(fields, "contents.")
    for j in sorted(contents):
        part = contents[j]
        kind = str_of(part.get("message_content.type"))
        text = str_of(part.get("message_content.text"))
        if kind in ("text", "reasoning") and text is not None:
            parts.append(_text_or_tool_answer(text, tool_call_id) if kind == "text"
                         else {"type": "reasoning", "content": text})
        elif part.get("tool_call.function.name") is not None or part.get("tool_call.id") is not None:
            # Anthropic's tool_use block, said again under the message's tool_calls
            parts.append(_tool_call(str_of(part.get("tool_call.id")), str_of(part.get("tool_call.function.name")),
                                    str_of(part.get("tool_call.function.arguments"))))
        elif kind is not None:
            parts.append({"type": kind[:64]})
    calls = _grouped(fields, "tool_calls.")
    parts += _new_calls(parts, [_tool_call(str_of(c.get("tool_call.id")), str_of(c.get("tool_call.function.name")),
                                           str_of(c.get("tool_call.function.arguments")))
                                for _, c in sorted(calls.items())])
    if (name := str_of(fields.get("function_call_name"))) is not None:  # OpenAI's function_call, before tools
        parts.append(_tool_call(None, name, str_of(fields.get("function_call_arguments_json"))))
    if role is None and not parts:
        return None
    return _message(role, parts, output)


# -- OpenLLMetry before 0.57 ----------------------------------------------------------------------------------

def _tool_calls(get: Any, prefix: str) -> list[dict[str, Any]]:
    """OpenLLMetry's ``prefix.{k}.id`` / ``.name`` / ``.arguments``, from 0 until one has neither id nor name."""
    parts = []
    for k in range(MAX_PARTS):
        base = f"{prefix}.{k}."
        name = str_of(get(base + "name"))
        call_id = str_of(get(base + "id"))
        if name is None and call_id is None:
            break
        parts.append(_tool_call(call_id, name, str_of(get(base + "arguments"))))
    return parts


def _openllmetry(get: Any, root: str, output: bool) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    thinking: list[dict[str, Any]] = []  # an Anthropic answer's thinking, put first in the next message
    finish_ahead = None  # and the answer's finish reason, which OpenLLMetry sets on the thinking's index
    for i in range(MAX_MESSAGES):
        base = f"{root}.{i}."
        role = str_of(get(base + "role"))
        content = str_of(get(base + "content"))
        if role is None and content is None:
            break
        finish = str_of(get(base + "finish_reason"))
        if role == "thinking":
            if content:
                thinking.append({"type": "reasoning", "content": content})
            finish_ahead = finish_ahead or finish
            continue
        tool_call_id = str_of(get(base + "tool_call_id"))
        parts = thinking + (_blocks(content, tool_call_id) if content is not None else [])
        thinking = []
        refusal = str_of(get(base + "refusal"))
        if refusal is not None:
            parts.append({"type": "text", "content": refusal})
        # Anthropic's tool_use blocks are in the content and under tool_calls both
        parts += _new_calls(parts, _tool_calls(get, base + "tool_calls"))
        message = _message(role, parts, output)
        finish, finish_ahead = finish or finish_ahead, None
        if output and finish is not None:
            message["finish_reason"] = finish
        messages.append(message)
    if thinking:
        messages.append(_message(None, thinking, output))
        if output and finish_ahead is not None:
            messages[-1]["finish_reason"] = finish_ahead
    return messages


def _blocks_of(content: str) -> list[dict[str, Any]] | None:
    """``content`` as a JSON list of API content blocks (each a known :data:`_BLOCK_TYPES`), else None."""
    if not (content.startswith("[") and content.endswith("]")):
        return None
    try:
        blocks = _loads(content)
    except (ValueError, RecursionError):
        return None
    if isinstance(blocks, list) and blocks and all(isinstance(b, dict) and b.get("type") in _BLOCK_TYPES
                                                    for b in blocks):
        return blocks
    return None


def _blocks(content: str, tool_call_id: str | None) -> list[dict[str, Any]]:
    """OpenLLMetry's ``.content``: a text as sent, or the message's content blocks as a JSON list (Anthropic's
    ``text`` / ``tool_result`` / ``tool_use`` / ``image`` blocks, OpenAI's ``text`` / ``image_url`` parts)."""
    blocks = _blocks_of(content)
    if blocks is None:
        return [_text_or_tool_answer(content, tool_call_id)]
    return [_block(b, tool_call_id) for b in blocks[:MAX_PARTS]]


def _block(block: dict[str, Any], tool_call_id: str | None) -> dict[str, Any]:
    kind = block["type"]
    if kind in ("text", "input_text", "output_text") and isinstance(block.get("text"), str):
        return _text_or_tool_answer(block["text"], tool_call_id)
    if kind == "thinking" and isinstance(block.get("thinking"), str):
        return {"type": "reasoning", "content": block["thinking"]}
    if kind == "tool_result":
        answer = block.get("content")
        if isinstance(answer, list):  # Anthropic's tool_result content as blocks: its texts
            answer = "".join(b["text"] for b in answer
                             if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str))
        return {"type": "tool_call_response", "id": _str(block.get("tool_use_id")),
                "response": answer if isinstance(answer, str) else None}
    if kind == "tool_use":
        return _tool_call(block.get("id"), block.get("name"), block.get("input"))
    return {"type": kind}


# -- the Vercel AI SDK's spans of AI SDK 6 and before -------------------------------------------------------

def _json_list(text: str | None) -> list[Any]:
    if not text:
        return []
    try:
        items = _loads(text)
    except (ValueError, RecursionError):
        return []
    return items if isinstance(items, list) else []


def _ai_sdk_prompt(text: str | None) -> list[dict[str, Any]]:
    """``ai.prompt.messages``: ``[{"role", "content": "text" | [parts]}]`` in the AI SDK's shape."""
    messages = []
    for m in _json_list(text)[:MAX_MESSAGES]:
        if not isinstance(m, dict):
            continue
        content = m.get("content")
        if isinstance(content, str):
            parts = [{"type": "text", "content": content}]
        elif isinstance(content, list):
            parts = [_ai_sdk_part(part) for part in content[:MAX_PARTS] if isinstance(part, dict)]
        else:
            parts = []
        messages.append(_message(_str(m.get("role")), parts, output=False))
    return messages


def _ai_sdk_part(part: dict[str, Any]) -> dict[str, Any]:
    kind = _str(part.get("type")) or "unknown"
    if kind in ("text", "reasoning") and isinstance(part.get("text"), str):
        return {"type": kind, "content": part["text"]}
    if kind == "tool-call":
        return _tool_call(part.get("toolCallId"), part.get("toolName"), part.get("input", part.get("args")))
    if kind == "tool-result":
        output = part.get("output")  # AI SDK 5+: {"type": "text" | "json" | ..., "value"}; before: "result"
        answer = output.get("value") if isinstance(output, dict) and "value" in output else part.get("result", output)
        return {"type": "tool_call_response", "id": _str(part.get("toolCallId")), "response": answer}
    return {"type": kind[:64]}


def _ai_sdk_answer(get: Any) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if reasoning := str_of(get(_AI_REASONING)):
        parts.append({"type": "reasoning", "content": reasoning})
    if (answer := str_of(get(_AI_TEXT))) is not None:
        parts.append({"type": "text", "content": answer})
    for call in _json_list(str_of(get(_AI_TOOL_CALLS)))[:MAX_PARTS]:
        if isinstance(call, dict):
            parts.append(_tool_call(call.get("toolCallId"), call.get("toolName"), call.get("input", call.get("args"))))
    message = _message("assistant", parts, output=True)
    if (finish := str_of(get(_AI_FINISH))) is not None:
        message["finish_reason"] = finish
    return [message]
