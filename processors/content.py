"""Captured content spelled some other way, read into the GenAI conventions' message JSON.

costline keeps a call's content as the conventions spell it in ``gen_ai.input.messages`` /
``gen_ai.output.messages``: ``[{"role": "user", "parts": [{"type": "text", "content": "..."}]}]``, an output
message with its ``finish_reason``. Five widely deployed families spell content otherwise, and all five capture
it by default. They are tried in this order; the first that yields any message wins.

* **The Vercel AI SDK's spans of AI SDK 6 and before** (``LegacyOpenTelemetry`` in AI SDK 7) write the prompt as
  one JSON list in ``ai.prompt.messages``, in the SDK's own message shape (``text`` / ``reasoning`` /
  ``tool-call`` / ``tool-result`` / ``file`` parts). The answer is ``ai.response.text`` (``ai.response.object``
  for ``generateObject``), ``ai.response.reasoning``, ``ai.response.toolCalls`` and ``ai.response.finishReason``.
* **OpenLLMetry before 0.57** (``traceloop-sdk`` and its instrumentations; 0.57 moved to the conventions'
  attributes) writes one attribute per field, numbered from 0:
  - ``gen_ai.prompt.{i}.role`` and ``.content`` (a text, or Anthropic's or OpenAI's content blocks as a JSON
    list), ``.tool_calls.{k}.id`` / ``.name`` / ``.arguments`` and ``.tool_call_id``;
  - the answer under ``gen_ai.completion.{i}``, with ``.finish_reason`` and ``.refusal``; an Anthropic answer's
    thinking comes first as a message of role ``thinking``.
* **Langfuse** (its SDK's own spans since v3) writes a generation's input and output in
  ``langfuse.observation.input`` / ``.output``: JSON of what was passed, a string as it is. Its OpenAI wrapper
  records Chat Completions messages (an object with ``messages`` when tools are sent) or a Responses API call's
  ``input`` / ``instructions`` and output items. Its LangChain handler records LangChain's messages (tool
  definitions as ``tool`` messages, which are left out). An app's own generation records whatever it passes.
  Anthropic's content blocks are read as OpenLLMetry's are.
* **OpenInference** (Arize Phoenix) writes one attribute per field on its ``LLM`` spans:
  - ``llm.input_messages.{i}.message.role`` and ``.content``, or parts as
    ``.contents.{j}.message_content.type`` / ``.text``;
  - tool calls as ``.tool_calls.{k}.tool_call.id`` / ``.function.name`` / ``.function.arguments``, and a tool's
    answer with ``.tool_call_id``;
  - the answer under ``llm.output_messages``, its finish reason in ``llm.finish_reason``.

  Its indices may start past 0 or skip some (a Responses API call without instructions starts at 1; a part or
  an item it does not record leaves a hole), so an OpenInference span's keys are read by prefix, once.
* **MLflow Tracing** (its autologging, exported over OTLP) writes the call's arguments and the SDK's answer as JSON
  in ``mlflow.spanInputs`` / ``mlflow.spanOutputs``, every value JSON-encoded: messages and a system prompt as the
  app passed them, an Anthropic message, a chat completion's choices, a response's output items, LangChain's
  choices. The repr it records for a stream's output is no answer; a value that is no JSON (cut short) is
  unreadable.

Cost: a span with none of them costs one set test of its keys (in C). Only an OpenInference ``LLM`` span's keys
are scanned.

What is kept:
- texts (and reasoning) as sent;
- a tool call's id, name and arguments;
- a tool's answer, as a ``tool_call_response`` part (its text, when it is content blocks);
- of other parts (an image, a document), only their ``type``, as costline's own recorder does.

The result is strict JSON in UTF-8: a half of a cut emoji becomes U+FFFD, as DuckDB's JSON functions reject a lone
surrogate's escape; numbers out of a double's range (and ``NaN``) in arguments keep their text. A value of an
unexpected type is left out. A side that cannot be read at all (content nested past what JSON is walked) is None
and flagged, the other side kept.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, NamedTuple

from costline.processors.attributes import str_of

__all__ = ["Flattened", "flattened_messages", "loads_strict", "strict_json", "MAX_MESSAGES", "MAX_PARTS"]

#: At most this many messages are read from one span (a sender's own limit is usually lower: the OTel SDK
#: keeps 128 attributes a span unless told otherwise).
MAX_MESSAGES: Final = 1_000
#: At most this many parts (or tool calls) are read from one message.
MAX_PARTS: Final = 256

_AI_PROMPT_MESSAGES: Final = "ai.prompt.messages"
_AI_TEXT: Final = "ai.response.text"
_AI_OBJECT: Final = "ai.response.object"
_AI_REASONING: Final = "ai.response.reasoning"
_AI_TOOL_CALLS: Final = "ai.response.toolCalls"
_AI_FINISH: Final = "ai.response.finishReason"
_OLD_PROMPT: Final = "gen_ai.prompt"
_OLD_COMPLETION: Final = "gen_ai.completion"
_OLD_MARKERS: Final = ("gen_ai.prompt.0.role", "gen_ai.prompt.0.content", "gen_ai.prompt.0.user",
                       "gen_ai.completion.0.role", "gen_ai.completion.0.content")
_LF_INPUT: Final = "langfuse.observation.input"
_LF_OUTPUT: Final = "langfuse.observation.output"
_ML_INPUTS: Final = "mlflow.spanInputs"
_ML_OUTPUTS: Final = "mlflow.spanOutputs"
_OI_KIND: Final = "openinference.span.kind"
_OI_INPUT: Final = "llm.input_messages."
_OI_OUTPUT: Final = "llm.output_messages."
_OI_FINISH: Final = "llm.finish_reason"

#: A key of one of the families at least: a span with none of them is read no further.
_MARKERS: Final = frozenset({_AI_PROMPT_MESSAGES, _AI_TEXT, _AI_OBJECT, _AI_TOOL_CALLS, *_OLD_MARKERS, _LF_INPUT,
                             _LF_OUTPUT, _OI_KIND, _ML_INPUTS, _ML_OUTPUTS})

#: Content block types of Anthropic's and OpenAI's APIs: a JSON list of dicts with these types in OpenLLMetry's
#: ``.content`` is the message's blocks; another list (a tool's JSON output, say) is text.
_BLOCK_TYPES: Final = frozenset({
    "text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking", "server_tool_use",
    "web_search_tool_result", "web_fetch_tool_result", "code_execution_tool_result", "search_result",
    "container_upload", "mcp_tool_use", "mcp_tool_result", "tool_reference",
    "image_url", "input_audio", "file", "refusal", "input_text", "input_image", "input_file", "output_text"})
#: Part types whose ``text`` is the part's text (Anthropic's and Chat Completions' ``text``, the Responses API's).
_TEXT_TYPES: Final = frozenset({"text", "input_text", "output_text"})
#: Part types this module writes with their fields: a sender's part of one of them without those is left out.
_OWN_KINDS: Final = frozenset({"text", "reasoning", "tool_call", "tool_call_response"})

Messages = list[dict[str, Any]]
#: A family's two readers, input and output, each run under its own guard.
Sides = tuple[Callable[[], Messages], Callable[[], Messages]]


class Flattened(NamedTuple):
    """A span's content as one family spells it, as conventions JSON (None: not said)."""

    input: str | None = None
    output: str | None = None
    #: A side could not be read (content nested past what JSON is walked, or a reader's bug): it is None.
    unreadable: bool = False


def flattened_messages(attrs: Mapping[str, Any]) -> Flattened:
    """A call's messages and answer as the first family above that says any spells them (``attrs``: the span's
    attributes by key). Each side is read on its own: one that cannot be read is None and ``unreadable`` says so,
    the other side kept."""
    if attrs.keys().isdisjoint(_MARKERS):  # the common case, in C: no family's key
        return Flattened()
    for family in (_ai_sdk, _openllmetry_family, _langfuse_family, _openinference_family, _mlflow_family):
        sides = family(attrs)
        if sides is None:
            continue
        docs: list[str | None] = []
        unreadable = False
        for read in sides:
            try:
                docs.append(_dump(read()))
            except Exception:  # noqa: BLE001 (a sender's content, however odd, never costs the call or the other side)
                docs.append(None)
                unreadable = True
        if docs[0] or docs[1] or unreadable:
            return Flattened(docs[0], docs[1], unreadable)
    return Flattened()


def _dump(messages: Messages) -> str | None:
    """:func:`strict_json` of the messages; None for none."""
    return strict_json(messages) if messages else None


def strict_json(value: Any) -> str:
    """Strict JSON in UTF-8 (a lone surrogate, a cut emoji's half, becomes U+FFFD: DuckDB's JSON functions refuse its
    escape). ValueError for a number no strict JSON has (NaN), RecursionError for content nested past what
    json.dumps walks, for the caller."""
    doc = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    try:
        doc.encode("utf-8")
    except UnicodeEncodeError:
        doc = doc.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return doc


def _str(v: Any) -> str | None:
    """A string from a sender's JSON, else None (an id or a name of another type is left out)."""
    return v if isinstance(v, str) else None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is no JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} is out of a double's range")
    return value


def loads_strict(text: str) -> Any:
    """``json.loads`` without what no strict parser reads back: ``NaN``, ``Infinity`` and numbers out of a double's
    range (``1e400``) are a ValueError."""
    return json.loads(text, parse_constant=_no_constant, parse_float=_finite)


def _parsed(text: str) -> Any:
    """``text``'s JSON value, else None (not JSON, not strict JSON, or nested past the parser)."""
    try:
        return loads_strict(text)
    except (ValueError, RecursionError):
        return None


def _arguments(args: Any) -> Any:
    """A tool call's arguments: the object their JSON text spells (the conventions' shape), else as sent."""
    if not isinstance(args, str):
        return args
    value = _parsed(args)
    return value if value is not None or args.strip() == "null" else args


def _tool_call(call_id: Any, name: Any, args: Any) -> dict[str, Any]:
    part: dict[str, Any] = {"type": "tool_call", "id": _str(call_id), "name": _str(name)}
    if args is not None:
        part["arguments"] = _arguments(args)
    return part


def _tool_answer(call_id: Any, answer: Any) -> dict[str, Any]:
    return {"type": "tool_call_response", "id": _str(call_id), "response": answer}


def _new_calls(parts: Messages, calls: Messages) -> Messages:
    """``calls`` less those already among ``parts`` (by id)."""
    seen = {p.get("id") for p in parts if p["type"] == "tool_call"} - {None}
    return [p for p in calls if p.get("id") is None or p["id"] not in seen]


def _message(role: str | None, parts: Messages, output: bool) -> dict[str, Any]:
    return {"role": role or ("assistant" if output else "user"), "parts": parts}


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "content": text}


def _texts_of(blocks: list[Any]) -> str | None:
    """The joined texts of content blocks (Anthropic's, OpenAI's); None when there is none."""
    texts = [b["text"] for b in blocks if isinstance(b, dict) and isinstance(b.get("type"), str)
             and b["type"] in _TEXT_TYPES and isinstance(b.get("text"), str)]
    return "".join(texts) if texts else None


def _tool_output(text: str) -> str:
    """A tool's answer as text: the texts of the content blocks it may be as JSON, else the text as sent."""
    value = _parsed(text) if text.startswith("[") else None
    return (_texts_of(value) if isinstance(value, list) else None) or text


def _blocks_of(text: str) -> list[dict[str, Any]] | None:
    """``text`` as a JSON list of API content blocks (dicts whose ``type`` is each one of :data:`_BLOCK_TYPES`),
    else None."""
    if not (text.startswith("[") and text.endswith("]")):
        return None
    blocks = _parsed(text)
    if isinstance(blocks, list) and blocks and all(isinstance(b, dict) and isinstance(b.get("type"), str)
                                                    and b["type"] in _BLOCK_TYPES for b in blocks):
        return blocks
    return None


def _other(kind: str) -> dict[str, Any] | None:
    """A part of another kind: its type only (None for a kind this module writes with fields it did not find)."""
    return None if kind in _OWN_KINDS else {"type": kind[:64]}


def _reasoning_of(block: dict[str, Any]) -> str | None:
    """A reasoning block's text: Anthropic's ``thinking``, LangChain's ``reasoning``, the Responses API's summary."""
    for key in ("thinking", "reasoning", "text"):
        if isinstance(block.get(key), str):
            return block[key]
    summary = block.get("summary")
    return _texts_of([{"type": "text", "text": s.get("text")} for s in summary if isinstance(s, dict)]) \
        if isinstance(summary, list) else None


def _block(block: dict[str, Any]) -> dict[str, Any] | None:
    """One content block (Anthropic's, Chat Completions', the Responses API's or LangChain's) as a conventions
    part, or None when it holds nothing to keep."""
    kind = _str(block.get("type")) or "unknown"
    if kind in _TEXT_TYPES and isinstance(block.get("text"), str):
        return _text(block["text"])
    if kind == "refusal" and isinstance(block.get("refusal"), str):
        return _text(block["refusal"])
    if kind in ("thinking", "reasoning"):
        text = _reasoning_of(block)
        return {"type": "reasoning", "content": text} if text else None
    if kind == "function_call":  # a Responses API item inside LangChain's content
        return _tool_call(block.get("call_id"), block.get("name"), block.get("arguments"))
    if kind == "tool_call":  # LangChain's standard block
        return _tool_call(block.get("id"), block.get("name"), block.get("args", block.get("arguments")))
    if kind == "tool_result":
        answer = block.get("content")
        if isinstance(answer, list):
            answer = _texts_of(answer)
        return _tool_answer(block.get("tool_use_id"), answer if isinstance(answer, str) else None)
    if kind == "tool_use":
        return _tool_call(block.get("id"), block.get("name"), block.get("input"))
    return _other(kind)


def _parts_of(content: Any, tool_call_id: str | None) -> Messages:
    """A message's content (a text, or blocks / parts) as parts; a tool's answer (``tool_call_id``) as one."""
    if tool_call_id is not None:
        answer = _texts_of(content) if isinstance(content, list) else content
        return [_tool_answer(tool_call_id, answer if isinstance(answer, str) else None)]
    if isinstance(content, str):
        return [_text(content)] if content else []
    if isinstance(content, list):
        parts = []
        for b in content[:MAX_PARTS]:
            if isinstance(b, str):
                parts.append(_text(b))
            elif isinstance(b, dict) and (part := _block(b)) is not None:
                parts.append(part)
        return parts
    return []


# -- the Vercel AI SDK's spans of AI SDK 6 and before -------------------------------------------------------

def _ai_sdk(attrs: Mapping[str, Any]) -> Sides | None:
    get = attrs.get
    prompt, text, calls = get(_AI_PROMPT_MESSAGES), get(_AI_TEXT), get(_AI_TOOL_CALLS)
    obj = get(_AI_OBJECT)
    if prompt is None and text is None and calls is None and obj is None:
        return None
    answered = text is not None or calls is not None or obj is not None
    return (lambda: _ai_sdk_prompt(str_of(prompt)) if prompt is not None else [],
            lambda: _ai_sdk_answer(get) if answered else [])


def _json_list(text: str | None) -> list[Any]:
    value = _parsed(text) if text else None
    return value if isinstance(value, list) else []


def _ai_sdk_prompt(text: str | None) -> Messages:
    """``ai.prompt.messages``: ``[{"role", "content": "text" | [parts]}]`` in the AI SDK's shape."""
    messages = []
    for m in _json_list(text)[:MAX_MESSAGES]:
        if not isinstance(m, dict):
            continue
        content = m.get("content")
        if isinstance(content, str):
            parts = [_text(content)]
        elif isinstance(content, list):
            parts = [p for part in content[:MAX_PARTS] if isinstance(part, dict) and (p := _ai_sdk_part(part))]
        else:
            parts = []
        messages.append(_message(_str(m.get("role")), parts, output=False))
    return messages


def _ai_sdk_part(part: dict[str, Any]) -> dict[str, Any] | None:
    kind = _str(part.get("type")) or "unknown"
    if kind in ("text", "reasoning"):
        return {"type": kind, "content": part["text"]} if isinstance(part.get("text"), str) else None
    if kind == "tool-call":
        return _tool_call(part.get("toolCallId"), part.get("toolName"), part.get("input", part.get("args")))
    if kind == "tool-result":
        return _tool_answer(part.get("toolCallId"), _ai_sdk_tool_output(part))
    return _other(kind)


def _ai_sdk_tool_output(part: dict[str, Any]) -> Any:
    """A tool result's answer: AI SDK 5+'s ``output`` (``{"type": "text" | "json" | "content" | ..., "value"}``:
    of ``content``, its texts only, never its media's base64), before that ``result``."""
    output = part.get("output")
    if not isinstance(output, dict):
        return part.get("result", output)
    value = output.get("value")
    if output.get("type") == "content" and isinstance(value, list):
        return "".join(v["text"] for v in value if isinstance(v, dict) and isinstance(v.get("text"), str)) or None
    return value


def _ai_sdk_answer(get: Any) -> Messages:
    parts: Messages = []
    if reasoning := str_of(get(_AI_REASONING)):
        parts.append({"type": "reasoning", "content": reasoning})
    for key in (_AI_TEXT, _AI_OBJECT):  # generateObject's answer is its object's JSON
        if (answer := str_of(get(key))) is not None:
            parts.append(_text(answer))
    for call in _json_list(str_of(get(_AI_TOOL_CALLS)))[:MAX_PARTS]:
        if isinstance(call, dict):
            parts.append(_tool_call(call.get("toolCallId"), call.get("toolName"), call.get("input", call.get("args"))))
    message = _message("assistant", parts, output=True)
    if (finish := str_of(get(_AI_FINISH))) is not None:
        message["finish_reason"] = finish
    return [message]


# -- OpenLLMetry before 0.57 ----------------------------------------------------------------------------------

def _openllmetry_family(attrs: Mapping[str, Any]) -> Sides | None:
    get = attrs.get
    if all(get(k) is None for k in _OLD_MARKERS):
        return None
    return lambda: _openllmetry_prompt(get), lambda: _openllmetry(get, _OLD_COMPLETION, output=True)


def _openllmetry_prompt(get: Any) -> Messages:
    prompt = _openllmetry(get, _OLD_PROMPT, output=False)
    if not prompt and (legacy := str_of(get(f"{_OLD_PROMPT}.0.user"))) is not None:  # the completions API's prompt
        prompt = [_message("user", [_text(legacy)], output=False)]
    return prompt


def _tool_calls(get: Any, prefix: str) -> Messages:
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


def _openllmetry_reasoning(text: str | None) -> str | None:
    """``.reasoning``: a text, or a Responses answer's summary as JSON (its texts)."""
    if text and text.startswith("["):
        items = _parsed(text)
        if isinstance(items, list):
            return _texts_of([{"type": "text", "text": i.get("text")} for i in items if isinstance(i, dict)])
    return text


def _openllmetry(get: Any, root: str, output: bool) -> Messages:
    messages: Messages = []
    thinking: Messages = []  # an Anthropic answer's thinking, put first in the next message
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
        parts = thinking
        thinking = []
        if reasoning := _openllmetry_reasoning(str_of(get(base + "reasoning"))):
            parts.append({"type": "reasoning", "content": reasoning})
        if content is not None:
            if tool_call_id is not None:
                parts.append(_tool_answer(tool_call_id, _tool_output(content)))
            elif (blocks := _blocks_of(content)) is not None:
                parts += _parts_of(blocks, None)
            else:
                parts.append(_text(content))
        if (refusal := str_of(get(base + "refusal"))) is not None:
            parts.append(_text(refusal))
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


# -- Langfuse --------------------------------------------------------------------------------------------------

def _langfuse_family(attrs: Mapping[str, Any]) -> Sides | None:
    return _one_attribute_a_side(attrs, _LF_INPUT, _LF_OUTPUT, _lf_input, _lf_output)


def _one_attribute_a_side(attrs: Mapping[str, Any], input_key: str, output_key: str,
                          read_input: Callable[[str | None], Messages],
                          read_output: Callable[[str | None], Messages]) -> Sides | None:
    """The readers of a family that records each side in one attribute (Langfuse, MLflow); None without either."""
    given, answered = attrs.get(input_key), attrs.get(output_key)
    if given is None and answered is None:
        return None
    return lambda: read_input(str_of(given)), lambda: read_output(str_of(answered))


def _lf_value(text: str | None) -> Any:
    """What Langfuse recorded: the JSON value it serialized, or the string as it is (Langfuse keeps a string
    unencoded, so a text that happens to be JSON of no object or list is a text)."""
    if text is None:
        return None
    value = _parsed(text) if text[:1] in ("[", "{") else None
    return value if isinstance(value, (list, dict)) else text


#: Roles of the conversations apps pass (Chat Completions', Anthropic's, LangChain's, the Responses API's).
_ROLES: Final = frozenset({"system", "developer", "user", "assistant", "tool", "function", "model"})
#: Items of a Responses API call's input or output that have no role.
_ITEMS: Final = frozenset({"message", "function_call", "function_call_output", "reasoning"})


def _is_item(value: Any) -> bool:
    """A conversation's message or a Responses API item (a JSON answer of an app's own is neither)."""
    return isinstance(value, dict) and (value.get("role") in _ROLES if "role" in value
                                        else value.get("type") in _ITEMS)


def _lf_input(text: str | None) -> Messages:
    return _input_of(_lf_value(text))


def _input_of(value: Any) -> Messages:
    """The messages of what an app passed: a conversation (a list), a call's arguments (an object with
    ``messages`` or ``input``, and ``system`` or ``instructions``), one item, or a text."""
    system: Any = None
    if isinstance(value, dict):
        system = value.get("system", value.get("instructions"))
        if isinstance(value.get("messages"), list):
            value = value["messages"]
        elif "input" in value:
            value = value["input"]
        elif _is_item(value):
            value = [value]
        else:
            value = []  # no conversation (a retrieval query, say), or instructions only
    if isinstance(value, str):
        value = [{"role": "user", "content": value}]
    if not isinstance(value, list):
        return []
    messages = [m for item in value[:MAX_MESSAGES] if (m := _chat_item(item, output=False)) is not None]
    if system is not None and not any(m["role"] == "system" for m in messages):
        if parts := _parts_of(system, None):
            messages.insert(0, _message("system", parts, output=False))
    return messages


def _lf_output(text: str | None) -> Messages:
    return _output_of(_lf_value(text), text)


def _output_of(value: Any, text: str | None) -> Messages:
    """The answer in what was recorded (``value``, parsed from ``text``): an item, Chat Completions' choices'
    messages or the Responses API's output items; else ``text`` as one text answer."""
    if value is None:
        return []
    if _is_item(value):
        value = [value]
    if isinstance(value, list) and value and all(_is_item(v) for v in value):
        if all("role" in v for v in value):  # Chat Completions' choices: an answer each
            return [m for v in value[:MAX_MESSAGES] if (m := _chat_item(v, output=True)) is not None]
        # the Responses API's output items: one answer
        parts = [p for item in value[:MAX_PARTS] if (m := _chat_item(item, output=True)) for p in m["parts"]]
        if parts:
            return [_message("assistant", parts, output=True)]
    return [_message("assistant", [_text(text)], output=True)] if text else []  # a JSON answer of the app's own


def _chat_item(item: Any, output: bool) -> dict[str, Any] | None:
    """One item of a conversation as apps and SDKs pass it: a Chat Completions or Anthropic message, LangChain's
    (its tool definitions, ``tool`` messages of an object, are no message), or a Responses API item."""
    if not isinstance(item, dict):
        return None
    role = _str(item.get("role"))
    kind = _str(item.get("type"))
    if role is None:
        if kind == "function_call":
            return _message("assistant", [_tool_call(item.get("call_id"), item.get("name"), item.get("arguments"))],
                            output)
        if kind == "function_call_output":
            answer = item.get("output")
            if isinstance(answer, list):
                answer = _texts_of(answer)
            return _message("tool", [_tool_answer(item.get("call_id"), answer if isinstance(answer, str) else None)],
                            output)
        if kind == "reasoning":
            text = _reasoning_of(item)
            return _message("assistant", [{"type": "reasoning", "content": text}], output) if text else None
        return None
    content = item.get("content")
    if role == "tool" and isinstance(content, dict):
        return None  # LangChain's tool definition, not a tool's answer
    tool_call_id = _str(item.get("tool_call_id")) if role == "tool" else None
    parts = _parts_of(content, tool_call_id)
    if isinstance(item.get("refusal"), str):
        parts.append(_text(item["refusal"]))
    calls = item.get("tool_calls")
    listed = []
    for call in (calls if isinstance(calls, list) else [])[:MAX_PARTS]:
        if isinstance(call, dict):
            function = call.get("function")
            if isinstance(function, dict):  # OpenAI's
                listed.append(_tool_call(call.get("id"), function.get("name"), function.get("arguments")))
            else:  # LangChain's
                listed.append(_tool_call(call.get("id"), call.get("name"), call.get("args")))
    parts += _new_calls(parts, listed)  # LangChain's Anthropic messages say them in the content too
    function_call = item.get("function_call")
    if isinstance(function_call, dict):  # OpenAI's before tools
        parts.append(_tool_call(None, function_call.get("name"), function_call.get("arguments")))
    return _message(role, parts, output)


# -- MLflow Tracing ---------------------------------------------------------------------------------------------

def _mlflow_family(attrs: Mapping[str, Any]) -> Sides | None:
    return _one_attribute_a_side(attrs, _ML_INPUTS, _ML_OUTPUTS, _ml_input, _ml_output)


def _ml_value(text: str | None) -> Any:
    """What MLflow recorded: every value is its JSON (a string too). One that is not was cut short (the OTel SDK's
    attribute length limit) or garbled: ValueError, and the side is flagged unreadable."""
    return loads_strict(text) if text else None


#: What MLflow records as the output of a call whose answer it never saw whole: the repr of the object returned
#: (``stream=True``'s ``<anthropic.Stream object at 0x…>``, LangChain's raw ``<APIResponse [200 OK] type=…>``).
_ML_REPR = re.compile(r"<[A-Za-z_][\w.]* object at 0x[0-9a-fA-F]+>|<APIResponse \[[^\]]{1,64}\] type=<class '[\w.]+'>>")


def _ml_input(text: str | None) -> Messages:
    return _input_of(_ml_value(text))


def _ml_output(text: str | None) -> Messages:
    """An Anthropic message (``stop_reason``), a chat completion (choices, each with its ``finish_reason``), a
    response (``output`` items), LangChain's choices, or a text; nothing for an object's repr."""
    value = _ml_value(text)
    if isinstance(value, str):
        return [] if _ML_REPR.fullmatch(value) else [_message("assistant", [_text(value)], output=True)]
    if not isinstance(value, dict):
        return _output_of(value, text)
    if isinstance(value.get("choices"), list):
        out = []
        for choice in value["choices"][:MAX_MESSAGES]:
            if isinstance(choice, dict) and (m := _chat_item(choice.get("message"), output=True)) is not None:
                if isinstance(choice.get("finish_reason"), str):
                    m["finish_reason"] = choice["finish_reason"]
                out.append(m)
        return out
    if isinstance(value.get("output"), list):  # the Responses API's response
        return _output_of(value["output"], None)
    out = _output_of(value, None)
    if out and isinstance(value.get("stop_reason"), str):  # Anthropic's message
        out[0]["finish_reason"] = value["stop_reason"]
    return out


# -- OpenInference --------------------------------------------------------------------------------------------

def _openinference_family(attrs: Mapping[str, Any]) -> Sides | None:
    if str_of(attrs.get(_OI_KIND)) != "LLM":
        return None
    given: dict[int, dict[str, Any]] = {}
    answered: dict[int, dict[str, Any]] = {}
    for key, value in attrs.items():  # one pass for both: the span's keys are read once
        if key.startswith(_OI_INPUT):
            _oi_field(given, key, len(_OI_INPUT), value)
        elif key.startswith(_OI_OUTPUT):
            _oi_field(answered, key, len(_OI_OUTPUT), value)
    return lambda: _oi_messages(given, False), lambda: _oi_answer(answered, str_of(attrs.get(_OI_FINISH)))


def _oi_answer(answered: dict[int, dict[str, Any]], finish: str | None) -> Messages:
    output = _oi_messages(answered, True)
    if output and finish is not None and min(answered) == 0:
        output[0]["finish_reason"] = finish  # OpenInference records the first choice's only
    return output


def _index(key: str, start: int) -> tuple[int, int] | None:
    """``(n, end)`` of the number at ``key[start:]`` up to the next ``.``, else None."""
    end = key.find(".", start)
    digits = key[start:end]
    if end <= start or end - start > 6 or not (digits.isascii() and digits.isdecimal()):
        return None
    return int(key[start:end]), end + 1


def _oi_field(fields: dict[int, dict[str, Any]], key: str, start: int, value: Any) -> None:
    at = _index(key, start)
    if at is not None and key.startswith("message.", at[1]):
        _put(fields, at[0], key[at[1] + 8:], value, MAX_MESSAGES)


def _put(groups: dict[int, dict[str, Any]], i: int, rest: str, value: Any, cap: int) -> None:
    """``groups[i][rest] = value``, with at most ``cap`` indices (a sender's further ones are left out)."""
    group = groups.get(i)
    if group is None:
        if len(groups) >= cap:
            return
        group = groups[i] = {}
    group[rest] = value


def _oi_messages(fields: dict[int, dict[str, Any]], output: bool) -> Messages:
    return [m for i in sorted(fields) if (m := _oi_message(fields[i], output)) is not None]


def _grouped(fields: dict[str, Any], prefix: str) -> dict[int, dict[str, Any]]:
    """``{j: {rest: value}}`` of the keys ``prefix.{j}.{rest}`` (at most :data:`MAX_PARTS` indices)."""
    out: dict[int, dict[str, Any]] = {}
    for key, value in fields.items():
        if not key.startswith(prefix):
            continue
        at = _index(key, len(prefix))
        if at is not None:
            _put(out, at[0], key[at[1]:], value, MAX_PARTS)
    return out


def _oi_message(fields: dict[str, Any], output: bool) -> dict[str, Any] | None:
    role = str_of(fields.get("role"))
    content = str_of(fields.get("content"))
    tool_call_id = str_of(fields.get("tool_call_id")) if role == "tool" else None
    parts: Messages = []
    if content is not None:
        parts.append(_tool_answer(tool_call_id, _tool_output(content)) if tool_call_id is not None
                     else _text(content))
    contents = _grouped(fields, "contents.")
    for j in sorted(contents):
        part = contents[j]
        kind = str_of(part.get("message_content.type"))
        text = str_of(part.get("message_content.text"))
        if kind in (None, "text") and text is not None:  # no type: LangChain's content given as strings
            parts.append(_tool_answer(tool_call_id, text) if tool_call_id is not None else _text(text))
        elif kind == "reasoning":
            if text is not None:
                parts.append({"type": "reasoning", "content": text})
        elif part.get("tool_call.function.name") is not None or part.get("tool_call.id") is not None:
            # Anthropic's tool_use block, said again under the message's tool_calls
            parts.append(_tool_call(str_of(part.get("tool_call.id")), str_of(part.get("tool_call.function.name")),
                                    str_of(part.get("tool_call.function.arguments"))))
        elif kind is not None and (other := _other(kind)) is not None:
            parts.append(other)
    calls = _grouped(fields, "tool_calls.")
    parts += _new_calls(parts, [_tool_call(str_of(c.get("tool_call.id")), str_of(c.get("tool_call.function.name")),
                                           str_of(c.get("tool_call.function.arguments")))
                                for _, c in sorted(calls.items())])
    if (name := str_of(fields.get("function_call_name"))) is not None:  # OpenAI's function_call, before tools
        parts.append(_tool_call(None, name, str_of(fields.get("function_call_arguments_json"))))
    if role is None and not parts:
        return None
    return _message(role, parts, output)
