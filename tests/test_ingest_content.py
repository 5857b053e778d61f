"""Captured content that OpenInference and older OpenLLMetry flatten into one attribute per field reaches the lake.

Both capture content by default: OpenInference (``llm.input_messages.{i}.message.*``) and OpenLLMetry before 0.57
(``gen_ai.prompt.{i}.*`` / ``gen_ai.completion.{i}.*``). The lake keeps content in the GenAI conventions' message
shape, so analysts and the nightly jobs read one shape whoever captured it. Expected messages are written here by
hand from what the test sent and from what the SDKs returned. None comes from costline's reader.

The table-driven part feeds attributes as the instrumentations spell them. The live part drives the real
instrumentations through the real SDKs against the stand-in: OpenInference in this process, OpenLLMetry 0.52.6 in a
process of its own (tests/legacy_openllmetry_app.py; scripts/test installs it apart, as the compat extra has the
newest).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from costline.collectors import Recorder
from costline.config import Config, LakeConfig, ModelPrice, PricingConfig
from costline.processors.content import MAX_MESSAGES, flattened_messages
from costline.processors.records import input_messages, output_messages

from conftest import missing_binary
from figures_lake import lake_from_messages, lake_from_sdk_spans, query_lake as q
# the stand-in and OpenInference's real instrumentors into the test's provider
from test_ingest_instrumentations import openinference, standin  # noqa: F401 (fixtures)
from sdk_hygiene import langfuse_openai, pristine_sdks, restore_sdk_classes, sdk_class_attributes  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
LEGACY = ROOT / ".venv" / "legacy" / "openllmetry-0.52"
STUDENT = "costline-student"
TIME_SCHEMA = {"type": "object", "properties": {"zone": {"type": "string"}}}


def text_part(content: str) -> dict:
    return {"type": "text", "content": content}


def text(role: str, *texts: str, **extra) -> dict:
    return {"role": role, "parts": [{"type": "text", "content": t} for t in texts], **extra}


def attrs(values: dict) -> dict:
    """Attribute values as a span carries them (OTLP AnyValue); OpenInference's with its span kind."""
    if any(k.startswith("llm.") for k in values):
        values = {"openinference.span.kind": "LLM", **values}
    out = {}
    for k, v in values.items():
        av = AnyValue()
        if isinstance(v, bool):
            av.bool_value = v
        elif isinstance(v, int):
            av.int_value = v
        else:
            av.string_value = v
        out[k] = av
    return out


# -- what each family writes, read into the conventions' shape ------------------------------------------------

OI = "llm.input_messages"
OO = "llm.output_messages"
GP = "gen_ai.prompt"
GC = "gen_ai.completion"

INPUT_CASES = {
    "openinference: system and turns": (
        {f"{OI}.0.message.role": "system", f"{OI}.0.message.content": "Be brief.",
         f"{OI}.1.message.role": "user", f"{OI}.1.message.content": "Where is my invoice?"},
        [text("system", "Be brief."), text("user", "Where is my invoice?")]),
    "openinference: parts, an image keeps only its type": (
        {f"{OI}.0.message.role": "user",
         f"{OI}.0.message.contents.0.message_content.type": "text",
         f"{OI}.0.message.contents.0.message_content.text": "What is in this photo?",
         f"{OI}.0.message.contents.1.message_content.type": "image",
         f"{OI}.0.message.contents.1.message_content.image.image.url": "data:image/png;base64,iVBORw0KGgo="},
        [{"role": "user", "parts": [{"type": "text", "content": "What is in this photo?"}, {"type": "image"}]}]),
    "openinference: a tool call said twice is one, then the tool's answer": (
        {f"{OI}.0.message.role": "assistant",
         f"{OI}.0.message.contents.0.message_content.type": "text",
         f"{OI}.0.message.contents.0.message_content.text": "Calling get_time.",
         f"{OI}.0.message.contents.1.message_content.type": "tool_use",
         f"{OI}.0.message.contents.1.tool_call.id": "toolu_1",
         f"{OI}.0.message.contents.1.tool_call.function.name": "get_time",
         f"{OI}.0.message.contents.1.tool_call.function.arguments": '{"zone": "CET"}',
         f"{OI}.0.message.tool_calls.0.tool_call.id": "toolu_1",
         f"{OI}.0.message.tool_calls.0.tool_call.function.name": "get_time",
         f"{OI}.0.message.tool_calls.0.tool_call.function.arguments": '{"zone": "CET"}',
         f"{OI}.1.message.role": "tool", f"{OI}.1.message.tool_call_id": "toolu_1",
         f"{OI}.1.message.content": "12:00"},
        [{"role": "assistant", "parts": [
            {"type": "text", "content": "Calling get_time."},
            {"type": "tool_call", "id": "toolu_1", "name": "get_time", "arguments": {"zone": "CET"}}]},
         {"role": "tool", "parts": [{"type": "tool_call_response", "id": "toolu_1", "response": "12:00"}]}]),
    "openinference: arguments that are no JSON are kept as sent": (
        {f"{OI}.0.message.role": "assistant",
         f"{OI}.0.message.tool_calls.0.tool_call.id": "call_9",
         f"{OI}.0.message.tool_calls.0.tool_call.function.name": "lookup",
         f"{OI}.0.message.tool_calls.0.tool_call.function.arguments": '{"order": 12'},
        [{"role": "assistant", "parts": [{"type": "tool_call", "id": "call_9", "name": "lookup",
                                          "arguments": '{"order": 12'}]}]),
    "openllmetry: Anthropic's blocks as JSON, the tool_use said again under tool_calls": (
        {f"{GP}.0.role": "assistant",
         f"{GP}.0.content": json.dumps([{"type": "text", "text": "Calling get_time."},
                                        {"type": "tool_use", "id": "toolu_2", "name": "get_time",
                                         "input": {"zone": "UTC"}}]),
         f"{GP}.0.tool_calls.0.id": "toolu_2", f"{GP}.0.tool_calls.0.name": "get_time",
         f"{GP}.0.tool_calls.0.arguments": '{"zone": "UTC"}',
         f"{GP}.1.role": "user",
         f"{GP}.1.content": json.dumps([{"type": "tool_result", "tool_use_id": "toolu_2",
                                         "content": [{"type": "text", "text": "09:00"}]},
                                        {"type": "image", "source": {"type": "base64", "data": "iVBORw0KGgo="}}])},
        [{"role": "assistant", "parts": [
            {"type": "text", "content": "Calling get_time."},
            {"type": "tool_call", "id": "toolu_2", "name": "get_time", "arguments": {"zone": "UTC"}}]},
         {"role": "user", "parts": [{"type": "tool_call_response", "id": "toolu_2", "response": "09:00"},
                                    {"type": "image"}]}]),
    "openllmetry: OpenAI's tool answer and a text that only looks like JSON": (
        {f"{GP}.0.role": "user", f"{GP}.0.content": "[1] Reset the router. [2] Then what?",
         f"{GP}.1.role": "user", f"{GP}.1.content": '["a", "b"]',
         f"{GP}.2.role": "tool", f"{GP}.2.content": "42 items", f"{GP}.2.tool_call_id": "call_7"},
        [text("user", "[1] Reset the router. [2] Then what?"), text("user", '["a", "b"]'),
         {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_7", "response": "42 items"}]}]),
    "openinference: indices from 1 (a Responses call without instructions) and a part it did not record": (
        {f"{OI}.1.message.role": "user",
         f"{OI}.1.message.contents.1.message_content.type": "text",
         f"{OI}.1.message.contents.1.message_content.text": "What does this recording say?",
         f"{OI}.3.message.role": "assistant", f"{OI}.3.message.content": "It says hello."},
        [{"role": "user", "parts": [{"type": "text", "content": "What does this recording say?"}]},
         text("assistant", "It says hello.")]),
    "openinference: thinking kept as reasoning; a tool_result of blocks is its text; OpenAI's function_call": (
        {f"{OI}.0.message.role": "assistant",
         f"{OI}.0.message.contents.0.message_content.type": "reasoning",
         f"{OI}.0.message.contents.0.message_content.text": "They want May.",
         f"{OI}.0.message.function_call_name": "find_invoice",
         f"{OI}.0.message.function_call_arguments_json": '{"month": 5}',
         f"{OI}.1.message.role": "tool", f"{OI}.1.message.tool_call_id": "toolu_5",
         f"{OI}.1.message.content": '[{"type": "text", "text": "invoice "}, {"type": "text", "text": "#5"}]'},
        [{"role": "assistant", "parts": [{"type": "reasoning", "content": "They want May."},
                                         {"type": "tool_call", "id": None, "name": "find_invoice",
                                          "arguments": {"month": 5}}]},
         {"role": "tool", "parts": [{"type": "tool_call_response", "id": "toolu_5", "response": "invoice #5"}]}]),
    "openllmetry: a tool's JSON output of other types stays its text": (
        {f"{GP}.0.role": "tool", f"{GP}.0.tool_call_id": "call_3",
         f"{GP}.0.content": '[{"type": "web_result", "url": "https://example.com/refunds"}]'},
        [{"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_3",
                                     "response": '[{"type": "web_result", "url": "https://example.com/refunds"}]'}]}]),
    "openllmetry: no role said reads as the user's, and reading stops at a gap": (
        {f"{GP}.0.content": "hello", f"{GP}.2.role": "user", f"{GP}.2.content": "after a gap"},
        [text("user", "hello")]),
    "ai sdk 6: the SDK's message shape": (
        {"ai.prompt.messages": json.dumps([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Time in Paris?"},
                                         {"type": "file", "mediaType": "image/png", "data": "iVBORw0KGgo="}]},
            {"role": "assistant", "content": [{"type": "tool-call", "toolCallId": "c1", "toolName": "get_time",
                                               "input": {"zone": "CET"}}]},
            {"role": "tool", "content": [{"type": "tool-result", "toolCallId": "c1", "toolName": "get_time",
                                          "output": {"type": "text", "value": "12:00"}}]}])},
        [text("system", "Be brief."),
         {"role": "user", "parts": [{"type": "text", "content": "Time in Paris?"}, {"type": "file"}]},
         {"role": "assistant", "parts": [{"type": "tool_call", "id": "c1", "name": "get_time",
                                          "arguments": {"zone": "CET"}}]},
         {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1", "response": "12:00"}]}]),
    "langfuse: OpenAI's messages with parts and a tool's answer": (
        {"langfuse.observation.input": json.dumps([
            {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                         {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_4", "type": "function", "function": {"name": "look", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_4", "content": "a cat"}])},
        [{"role": "user", "parts": [{"type": "text", "content": "What is this?"}, {"type": "image_url"}]},
         {"role": "assistant", "parts": [{"type": "tool_call", "id": "call_4", "name": "look", "arguments": {}}]},
         {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_4", "response": "a cat"}]}]),
    "langfuse: an object with messages (tools sent)": (
        {"langfuse.observation.input": json.dumps({"tools": [{"type": "function"}],
                                                   "messages": [{"role": "user", "content": "Hi"}]})},
        [text("user", "Hi")]),
    "langfuse: an app's own generation with a text (Langfuse keeps a string as it is)": (
        {"langfuse.observation.input": "Where is it?"}, [text("user", "Where is it?")]),
    "langfuse: a text that is JSON of no conversation is a text": (
        {"langfuse.observation.input": '"quoted"'}, [text("user", '"quoted"')]),
    "langfuse: a shape that is no conversation": ({"langfuse.observation.input": '{"query": "x", "k": 3}'}, None),
    "langfuse + LangChain: tool definitions are no messages; LangChain's tool calls keep name and args": (
        {"langfuse.observation.input": json.dumps([
            {"role": "user", "content": "Time in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"name": "get_time", "args": {"zone": "CET"}, "id": "call_8", "type": "tool_call"}]},
            {"role": "tool", "content": {"type": "function", "function": {"name": "get_time"}}}])},
        [text("user", "Time in Paris?"),
         {"role": "assistant", "parts": [{"type": "tool_call", "id": "call_8", "name": "get_time",
                                          "arguments": {"zone": "CET"}}]}]),
    "langfuse + Responses: instructions, input items, a function call and its output": (
        {"langfuse.observation.input": json.dumps({"instructions": "Be brief.", "tools": [{"type": "function"}],
                                                   "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Time in Paris?"}]},
            {"type": "function_call", "call_id": "call_9", "name": "get_time", "arguments": '{"zone": "CET"}'},
            {"type": "function_call_output", "call_id": "call_9", "output": "12:00"},
            {"type": "item_reference", "id": "x"}]})},
        [text("system", "Be brief."),
         {"role": "user", "parts": [text_part("Time in Paris?")]},
         {"role": "assistant", "parts": [{"type": "tool_call", "id": "call_9", "name": "get_time",
                                          "arguments": {"zone": "CET"}}]},
         {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_9", "response": "12:00"}]}]),
    "langfuse: Anthropic's blocks and system": (
        {"langfuse.observation.input": json.dumps({"system": "Be brief.", "messages": [
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "Check."},
                                              {"type": "tool_use", "id": "toolu_3", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_3",
                                          "content": [{"type": "text", "text": "ok"}]}]}]})},
        [text("system", "Be brief."),
         {"role": "assistant", "parts": [{"type": "reasoning", "content": "Check."},
                                         {"type": "tool_call", "id": "toolu_3", "name": "f", "arguments": {}}]},
         {"role": "user", "parts": [{"type": "tool_call_response", "id": "toolu_3", "response": "ok"}]}]),
    "openllmetry: a tool's JSON output of block-like items is the tool's answer": (
        {f"{GP}.0.role": "tool", f"{GP}.0.tool_call_id": "call_6",
         f"{GP}.0.content": '[{"type": "file", "path": "a.py"}]'},
        [{"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_6",
                                     "response": '[{"type": "file", "path": "a.py"}]'}]}]),
    "openllmetry: JSON data of typed items (no API's blocks) in a prompt stays its text": (
        {f"{GP}.0.role": "user", f"{GP}.0.content": '[{"type": "file", "path": "a.txt"}, {"type": "directory"}]'},
        [text("user", '[{"type": "file", "path": "a.txt"}, {"type": "directory"}]')]),
    "openinference: a user's text beside a message-level tool_call_id stays the user's": (
        {f"{OI}.0.message.role": "user", f"{OI}.0.message.tool_call_id": "toolu_7",
         f"{OI}.0.message.contents.0.message_content.type": "text",
         f"{OI}.0.message.contents.0.message_content.text": "And also this."},
        [text("user", "And also this.")]),
    "openinference: LangChain's content as strings, without a type": (
        {f"{OI}.0.message.role": "user", f"{OI}.0.message.contents.0.message_content.text": "Plain."},
        [text("user", "Plain.")]),
    "openinference: an embedding span has no messages": (
        {"openinference.span.kind": "EMBEDDING", f"{OI}.0.message.role": "user",
         f"{OI}.0.message.content": "x"}, None),
    "ai sdk 6: a tool result's media keeps no base64": (
        {"ai.prompt.messages": json.dumps([{"role": "tool", "content": [
            {"type": "tool-result", "toolCallId": "c3", "toolName": "screenshot", "output": {
                "type": "content", "value": [{"type": "text", "text": "the screen"},
                                             {"type": "media", "data": "iVBORw0KGgo=" * 100,
                                              "mediaType": "image/png"}]}}]}])},
        [{"role": "tool", "parts": [{"type": "tool_call_response", "id": "c3", "response": "the screen"}]}]),
    "langfuse + LangChain's Anthropic message: a tool call said in the content and in tool_calls is one; v1 blocks": (
        {"langfuse.observation.input": json.dumps([
            {"role": "assistant", "content": [
                {"type": "reasoning", "reasoning": "Need the time."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_time", "input": {"zone": "CET"}}],
             "tool_calls": [{"name": "get_time", "args": {"zone": "CET"}, "id": "toolu_1", "type": "tool_call"}]},
            {"role": "assistant", "content": [{"type": "tool_call", "id": "t2", "name": "log", "args": {}}]}])},
        [{"role": "assistant", "parts": [{"type": "reasoning", "content": "Need the time."},
                                         {"type": "tool_call", "id": "toolu_1", "name": "get_time",
                                          "arguments": {"zone": "CET"}}]},
         {"role": "assistant", "parts": [{"type": "tool_call", "id": "t2", "name": "log", "arguments": {}}]}]),
    "langfuse + Responses: instructions only": ({"langfuse.observation.input": '{"instructions": "Be brief."}'},
                                                [text("system", "Be brief.")]),
    "nothing flattened": ({"gen_ai.request.model": "claude-haiku-4-5"}, None),
}

OUTPUT_CASES = {
    "openinference: text": (
        {f"{OO}.0.message.role": "assistant", f"{OO}.0.message.content": "In your account, under Billing."},
        [text("assistant", "In your account, under Billing.")]),
    "openinference: the finish reason is the first answer's": (
        {f"{OO}.0.message.role": "assistant", f"{OO}.0.message.content": "Done.", "llm.finish_reason": "end_turn"},
        [text("assistant", "Done.", finish_reason="end_turn")]),
    "ai sdk 6: reasoning, text, tool calls and the finish reason": (
        {"ai.response.reasoning": "Check the zone.", "ai.response.text": "Calling get_time.",
         "ai.response.toolCalls": '[{"toolCallId": "c2", "toolName": "get_time", "input": "{\\"zone\\": \\"UTC\\"}"}]',
         "ai.response.finishReason": "tool-calls"},
        [{"role": "assistant", "parts": [{"type": "reasoning", "content": "Check the zone."},
                                         {"type": "text", "content": "Calling get_time."},
                                         {"type": "tool_call", "id": "c2", "name": "get_time",
                                          "arguments": {"zone": "UTC"}}],
          "finish_reason": "tool-calls"}]),
    "langfuse: the answer's message with a tool call": (
        {"langfuse.observation.output": json.dumps({"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_5", "type": "function", "function": {"name": "get_time", "arguments": '{"zone": "UTC"}'}}]})},
        [{"role": "assistant", "parts": [{"type": "tool_call", "id": "call_5", "name": "get_time",
                                          "arguments": {"zone": "UTC"}}]}]),
    "langfuse: a text answer, as JSON or not": ({"langfuse.observation.output": "plain words"},
                                                [text("assistant", "plain words")]),
    "langfuse + Responses: output items are one answer": (
        {"langfuse.observation.output": json.dumps([
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Look it up."}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "It is noon."}]},
            {"type": "function_call", "call_id": "call_2", "name": "log", "arguments": "{}"}])},
        [{"role": "assistant", "parts": [{"type": "reasoning", "content": "Look it up."}, text_part("It is noon."),
                                         {"type": "tool_call", "id": "call_2", "name": "log", "arguments": {}}]}]),
    "langfuse: a JSON-mode answer is its text": ({"langfuse.observation.output": '{"answer": 42}'},
                                                 [text("assistant", '{"answer": 42}')]),
    "langfuse: a JSON answer with a type or a role of its own is its text": (
        {"langfuse.observation.output": '{"type": "refund", "amount": 12}'},
        [text("assistant", '{"type": "refund", "amount": 12}')]),
    "langfuse: two choices are two answers; a Responses refusal is text": (
        {"langfuse.observation.output": json.dumps([
            {"role": "assistant", "content": "answer 0"},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't."}]}])},
        [text("assistant", "answer 0"), text("assistant", "I can't.")]),
    "openllmetry: a Responses answer's reasoning summary as JSON is its text": (
        {f"{GC}.0.role": "assistant", f"{GC}.0.content": "Noon.",
         f"{GC}.0.reasoning": '[{"type": "summary_text", "text": "Look it up."}]'},
        [{"role": "assistant", "parts": [{"type": "reasoning", "content": "Look it up."}, text_part("Noon.")]}]),
    "ai sdk 6: generateObject's object": ({"ai.response.object": '{"city": "Paris"}',
                                          "ai.response.finishReason": "stop"},
                                         [text("assistant", '{"city": "Paris"}', finish_reason="stop")]),
    "openinference: no finish reason when the first choice is not there": (
        {f"{OO}.1.message.role": "assistant", f"{OO}.1.message.content": "B", "llm.finish_reason": "stop"},
        [text("assistant", "B")]),
    "openllmetry: the finish reason is kept": (
        {f"{GC}.0.role": "assistant", f"{GC}.0.content": "Sure.", f"{GC}.0.finish_reason": "stop"},
        [text("assistant", "Sure.", finish_reason="stop")]),
    "openllmetry: Anthropic's thinking goes first in the answer, with the answer's finish reason": (
        {f"{GC}.0.finish_reason": "end_turn", f"{GC}.0.role": "thinking", f"{GC}.0.content": "The user wants May.",
         f"{GC}.1.role": "assistant", f"{GC}.1.content": "Here is May's invoice."},
        [{"role": "assistant", "parts": [{"type": "reasoning", "content": "The user wants May."},
                                         {"type": "text", "content": "Here is May's invoice."}],
          "finish_reason": "end_turn"}]),
    "openllmetry: a refusal is the answer's text": (
        {f"{GC}.0.role": "assistant", f"{GC}.0.refusal": "I can't help with that.",
         f"{GC}.0.finish_reason": "stop"},
        [text("assistant", "I can't help with that.", finish_reason="stop")]),
    "openllmetry: tool calls without text": (
        {f"{GC}.0.role": "assistant", f"{GC}.0.finish_reason": "tool_calls",
         f"{GC}.0.tool_calls.0.id": "call_1", f"{GC}.0.tool_calls.0.name": "get_time",
         f"{GC}.0.tool_calls.0.arguments": "{}"},
        [{"role": "assistant", "parts": [{"type": "tool_call", "id": "call_1", "name": "get_time", "arguments": {}}],
          "finish_reason": "tool_calls"}]),
}


@pytest.mark.parametrize("values, want", INPUT_CASES.values(), ids=INPUT_CASES.keys())
def test_flattened_input_is_read_in_the_conventions_shape(values, want):
    got = flattened_messages(attrs(values))[0]
    assert (json.loads(got) if got is not None else None) == want


@pytest.mark.parametrize("values, want", OUTPUT_CASES.values(), ids=OUTPUT_CASES.keys())
def test_flattened_output_is_read_in_the_conventions_shape(values, want):
    got = flattened_messages(attrs(values))[1]
    assert (json.loads(got) if got is not None else None) == want


def test_an_embedding_has_no_conversation():
    """An embedding call's input is no question and its output no answer (Langfuse records the vectors' shape):
    flattened content is not read for it, so the nightly sample never takes it for a request's answer."""
    from costline.processors.records import MemoPricingTable, flatten_request
    from costline.sim.synth import export_request, span

    attributes = {"langfuse.observation.type": "embedding", "langfuse.observation.model.name": "text-embedding-3-small",
                  "langfuse.observation.input": "hello world", "langfuse.observation.output": '{"dimensions": 3}',
                  "langfuse.observation.usage_details": '{"input": 2}'}
    request = export_request([span("OpenAI-embedding", trace_id=b"\x01" * 16, span_id=b"\x02" * 8,
                                    start_ns=1_780_000_000 * 10**9, end_ns=1_780_000_001 * 10**9,
                                    attributes=attributes)])
    (row,) = [r for r in flatten_request(request, MemoPricingTable()) if r is not None]
    assert (row.operation, row.input_messages, row.output_messages) == ("embeddings", None, None)


def test_the_conventions_attributes_win_over_flattened_ones():
    doc = '[{"role":"user","parts":[{"type":"text","content":"from the conventions"}]}]'
    span = attrs({"gen_ai.input.messages": doc, "gen_ai.output.messages": doc,
                  f"{OI}.0.message.role": "user", f"{OI}.0.message.content": "flattened",
                  f"{OO}.0.message.role": "assistant", f"{OO}.0.message.content": "flattened"})
    assert input_messages(span) == doc and output_messages(span) == doc


#: What a hostile or broken sender may write: each is read without raising (the call and its Kafka message are kept).
ODD_CONTENT = {
    "a tool_use id that is an object": {f"{GP}.0.role": "assistant",
                                        f"{GP}.0.content": '[{"type": "tool_use", "id": {}, "name": [1]}]',
                                        f"{GP}.0.tool_calls.0.id": "x", f"{GP}.0.tool_calls.0.name": "y"},
    "a tool_result text that is null or a number": {
        f"{GP}.0.role": "user",
        f"{GP}.0.content": '[{"type": "tool_result", "content": [{"type": "text", "text": null}, '
                           '{"type": "text", "text": 7}]}]'},
    "NaN and Infinity in arguments": {f"{GC}.0.role": "assistant", f"{GC}.0.tool_calls.0.name": "f",
                                      f"{GC}.0.tool_calls.0.arguments": '{"x": NaN, "y": -Infinity}'},
    "a number out of a double's range": {"langfuse.observation.input": '[{"role": "user", "content": [1e400]}]',
                                         f"{GC}.0.role": "assistant", f"{GC}.0.tool_calls.0.name": "f",
                                         f"{GC}.0.tool_calls.0.arguments": '{"x": 1e400}',
                                         "gen_ai.system_instructions": '[{"type": "text", "content": 1e400}]'},
    "numbers where texts belong": {f"{OI}.0.message.role": 5, f"{OI}.0.message.content": 7,
                                   f"{OI}.0.message.contents.0.message_content.type": True,
                                   f"{OI}.x.message.role": "user", f"{OI}.99999999.message.role": "user"},
    "a tool's JSON answer whose type is a list": {f"{GP}.0.role": "tool", f"{GP}.0.tool_call_id": "c1",
                                                  f"{GP}.0.content": '[{"name": "a", "type": ["string", "null"]}]',
                                                  f"{GC}.0.content": "ok"},
    "parts of this module's own kinds without their fields": {
        f"{GP}.0.role": "user", f"{GP}.0.content": '[{"type": "text", "text": "hi"}, {"type": "tool_call"}]',
        f"{OI}.0.message.role": "user", f"{OI}.0.message.contents.0.message_content.type": "tool_call",
        "langfuse.observation.output": '[{"role": "assistant", "content": [{"type": "tool_call_response"}]}]'},
    "index digits that are not ASCII": {f"{OI}.\u00b2.message.role": "user", f"{OI}.0.message.contents.\u2460."
                                        "message_content.type": "text", f"{OI}.0.message.role": "user"},
    "an AI SDK prompt of odd items": {"ai.prompt.messages": '[1, "a", {"role": 3, "content": {"a": 1}}, '
                                                            '{"content": [{"type": 5}, 7]}]',
                                      "ai.response.toolCalls": '{"not": "a list"}'},
}


@pytest.mark.parametrize("values", ODD_CONTENT.values(), ids=ODD_CONTENT.keys())
def test_odd_content_is_read_without_raising_and_stays_strict_json(values):
    span = attrs(values)
    for doc in (input_messages(span), output_messages(span)):
        if doc is not None:
            doc.encode("utf-8")
            json.loads(doc, parse_constant=lambda name: pytest.fail(f"{name} in {doc}"))


def test_content_that_cannot_be_read_is_left_out_and_noted(monkeypatch):
    """Content json cannot walk (arguments nested past Python's stack, say) costs that side's content, never the
    call or the other side: a NULL column and a ``data_quality`` flag. Content nested past the parser is its text."""
    from costline.processors import records

    deep = "[" * 5_000 + "]" * 5_000
    span = attrs({f"{GC}.0.role": "assistant", f"{GC}.0.tool_calls.0.name": "f",
                  f"{GC}.0.tool_calls.0.arguments": deep})
    assert json.loads(output_messages(span))[0]["parts"][0]["arguments"] == deep

    from costline.processors import content

    real = content._openllmetry

    def answer_too_deep(get, root, output):  # as json.dumps does past Python's stack
        if output:
            raise RecursionError("maximum recursion depth exceeded while encoding a JSON object")
        return real(get, root, output)

    monkeypatch.setattr(content, "_openllmetry", answer_too_deep)
    bad = []
    span = attrs({f"{GP}.0.role": "user", f"{GP}.0.content": "hi", f"{GC}.0.role": "assistant",
                  f"{GC}.0.content": "hello"})
    assert records.messages(span, bad) == ('[{"role":"user","parts":[{"type":"text","content":"hi"}]}]', None)
    assert bad == [records.CONTENT_UNREADABLE]


def test_a_cut_emoji_is_a_replacement_character_and_the_messages_are_bounded():
    """A JavaScript sender's cut emoji arrives as an escaped half surrogate inside a JSON block list: it becomes
    U+FFFD, as neither the Parquet writer (raw) nor DuckDB's JSON functions (escaped) take a lone surrogate; other
    text is kept as UTF-8, not escaped. A sender's 1,500 messages are read to the bound."""
    import duckdb

    doc = flattened_messages(attrs({f"{GP}.0.role": "user",
                                    f"{GP}.0.content": '[{"type": "text", "text": "caf\\u00e9 \\ud83d"}]'}))[0]
    assert "café \ufffd" in doc and json.loads(doc)[0]["parts"][0]["content"] == "café \ufffd"
    assert duckdb.sql(f"SELECT json_extract_string({doc!r}, '$[0].parts[0].content')").fetchall() == [("café \ufffd",)]
    many = {}
    for i in range(1_500):
        many |= {f"{OI}.{i}.message.role": "user", f"{OI}.{i}.message.content": f"q{i}"}
    assert len(json.loads(flattened_messages(attrs(many))[0])) == MAX_MESSAGES == 1_000


# -- the real instrumentations, the real SDKs, the stand-in ---------------------------------------------------

@pytest.fixture
def cfg(tmp_path) -> Config:
    return Config(lake=LakeConfig(path=tmp_path / "lake"), pricing=PricingConfig(
        models=(ModelPrice("claude-haiku-4-5", "budget", input_per_mtok=1.0, output_per_mtok=5.0),
                ModelPrice(STUDENT, "student", provider="openai", input_per_mtok=0.0, output_per_mtok=0.0)),
        student_usd_per_hour=0.0, student_providers=()))


def nightly_sample(cfg, tier: str, since: dt.datetime) -> list[tuple[str, str]]:
    """(question, answer) of each request the nightly jobs sample from ``tier`` in the hour from ``since``."""
    from costline.jobs.sampling import sample_requests
    from costline.jobs.store import open_jobs_lake

    con = open_jobs_lake(cfg)
    try:
        sample = sample_requests(con, tier=tier, since=since, until=since + dt.timedelta(hours=1), size=10)
    finally:
        con.close()
    return sorted((s.query, s.answer) for s in sample)


def contents(cfg) -> list[tuple]:
    return [(json.loads(i) if i else None, json.loads(o) if o else None)
            for i, o in q(cfg, "SELECT input_messages, output_messages FROM calls ORDER BY ts, span_id")]


def test_openinference_content_reaches_the_lake(standin, cfg, spans, openinference):
    """A multi-turn Messages call with a system prompt, a tool loop on both APIs and a streamed call, traced by
    OpenInference alone: each call's conversation and answer are in the lake as sent and as answered."""
    import anthropic
    import openai

    provider, exporter = spans
    claude = anthropic.Anthropic(base_url=standin.url, api_key="test", max_retries=0)
    first = claude.messages.create(model="claude-haiku-4-5", max_tokens=64, system="Answer in one line.", messages=[
        {"role": "user", "content": "Where is my invoice?"}, {"role": "assistant", "content": "Which month?"},
        {"role": "user", "content": [{"type": "text", "text": "The May one, please."}]}])
    tools = [{"name": "get_time", "input_schema": TIME_SCHEMA}]
    asked = [{"role": "user", "content": "What does get_time say for Paris?"}]
    use_answer = claude.messages.create(model="claude-haiku-4-5", max_tokens=64, tools=tools, messages=asked)
    use = next(b for b in use_answer.content if b.type == "tool_use")
    after = claude.messages.create(model="claude-haiku-4-5", max_tokens=64, tools=tools, messages=[
        *asked, {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in use_answer.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "12:00"}]}])
    with claude.messages.stream(model="claude-haiku-4-5", max_tokens=64,
                                messages=[{"role": "user", "content": "Stream the refund steps"}]) as stream:
        streamed = stream.get_final_message()
    gpt = openai.OpenAI(base_url=standin.openai_url, api_key="test", max_retries=0)
    g = gpt.chat.completions.create(model=STUDENT, max_tokens=32, messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Summarise ticket 4"}])
    lake_from_sdk_spans(exporter.get_finished_spans(), cfg)

    tool_call = {"type": "tool_call", "id": use.id, "name": "get_time", "arguments": use.input}
    assert contents(cfg) == [
        ([text("system", "Answer in one line."), text("user", "Where is my invoice?"),
          text("assistant", "Which month?"), text("user", "The May one, please.")],
         [text("assistant", first.content[0].text, finish_reason=first.stop_reason)]),
        ([text("user", "What does get_time say for Paris?")],
         [{"role": "assistant", "parts": [{"type": "text", "content": use_answer.content[0].text}, tool_call],
           "finish_reason": use_answer.stop_reason}]),
        ([text("user", "What does get_time say for Paris?"),
          {"role": "assistant", "parts": [{"type": "text", "content": use_answer.content[0].text}, tool_call]},
          {"role": "tool", "parts": [{"type": "tool_call_response", "id": use.id, "response": "12:00"}]}],
         [text("assistant", after.content[0].text, finish_reason=after.stop_reason)]),
        ([text("user", "Stream the refund steps")], [text("assistant", streamed.content[0].text,
                                                                  finish_reason=streamed.stop_reason)]),
        ([text("system", "Be brief."), text("user", "Summarise ticket 4")],
         [text("assistant", g.choices[0].message.content, finish_reason=g.choices[0].finish_reason)]),
    ]
    assert "get_time returned: 12:00" == after.content[0].text  # the stand-in answered the tool's result


def test_the_sample_has_the_content_one_instrumentation_captured_when_another_is_kept(standin, cfg, spans,
                                                                                      openinference):
    """costline's request, the anthropic SDK's own span (content off) and OpenInference's (content on) report one
    call: the lake counts it once, and the nightly sample and the calls view have the question and answer
    OpenInference captured, whichever span the calls view kept for its figures."""
    import anthropic

    provider, exporter = spans
    claude = anthropic.Anthropic(base_url=standin.url, api_key="test", max_retries=0,
                                 open_telemetry={"tracer_provider": provider})
    recorder = Recorder(provider)
    answers = {}
    start = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(minutes=5)
    for i in range(3):
        with recorder.request(task_type="faq", tenant="acme") as req:
            question = f"Question {i}: where is my parcel?"
            answers[question] = claude.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=[
                {"role": "user", "content": question}]).content[0].text
            req.served_by("budget")
            req.accept()
    finished = exporter.get_finished_spans()
    assert sorted({s.instrumentation_scope.name for s in finished if s.name != "costline.request"}) == [
        "com.anthropic.sdk.python", "openinference.instrumentation.anthropic"]
    lake_from_sdk_spans(finished, cfg)
    assert q(cfg, "SELECT count(*) FROM calls") == [(3,)]
    assert q(cfg, "SELECT count(*), count(input_messages) FROM calls_raw") == [(6, 3)]
    assert nightly_sample(cfg, "budget", start) == sorted(answers.items())
    got = [(json.loads(i)[0]["parts"][0]["content"], json.loads(o)[0]["parts"][0]["content"])
           for i, o in q(cfg, "SELECT input_messages, output_messages FROM calls")]
    assert sorted(got) == sorted(answers.items())


def test_the_nightly_sample_reads_a_student_call_captured_by_openinference(standin, cfg, spans, openinference):
    """An app that marks its requests with costline's recorder and lets OpenInference capture the student's
    calls: the nightly job's sample has the question and the student's answer to score."""
    import openai

    provider, exporter = spans
    recorder = Recorder(provider)
    gpt = openai.OpenAI(base_url=standin.openai_url, api_key="test", max_retries=0)
    answers = {}
    start = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(minutes=5)
    for i in range(4):
        with recorder.request(task_type="summary", tenant="acme", subtype="tickets") as req:
            question = f"Summarise ticket {i}"
            answers[question] = gpt.chat.completions.create(model=STUDENT, max_tokens=32, messages=[
                {"role": "user", "content": question}]).choices[0].message.content
            req.served_by("student")
            req.accept()
    lake_from_sdk_spans(exporter.get_finished_spans(), cfg)
    assert nightly_sample(cfg, "student", start) == sorted(answers.items())


def test_langfuse_generations_content_reaches_the_lake(standin, cfg, spans, request):
    """Langfuse's SDK: its OpenAI wrapper's generations (plain, streamed, with tools) and an app's own generation
    carry their input and output into the lake in the conventions' shape."""
    pytest.importorskip("langfuse")
    from langfuse import Langfuse, observe
    from langfuse._client.resource_manager import LangfuseResourceManager

    # Langfuse keeps one client per public key for the process: another test's, bound to a provider shut down
    # since, would take this test's spans
    LangfuseResourceManager.reset()
    request.addfinalizer(LangfuseResourceManager.reset)
    OpenAI = langfuse_openai()
    provider, exporter = spans
    client = Langfuse(public_key="pk-lf-test", secret_key="sk-lf-test", host="http://127.0.0.1:9",
                      tracer_provider=provider, flush_at=1000)
    oa = OpenAI(base_url=standin.openai_url, api_key="test", max_retries=0)
    plain = oa.chat.completions.create(model=STUDENT, max_tokens=32, messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Summarise 1"}])
    streamed = "".join(c.choices[0].delta.content or "" for c in oa.chat.completions.create(
        model=STUDENT, max_tokens=32, stream=True, messages=[{"role": "user", "content": "Summarise 2"}])
        if c.choices)
    tools = [{"type": "function", "function": {"name": "get_time", "parameters": TIME_SCHEMA}}]
    called = oa.chat.completions.create(model=STUDENT, max_tokens=32, tools=tools, messages=[
        {"role": "user", "content": "What does get_time say for Paris?"}]).choices[0].message.tool_calls[0]

    @observe(as_type="generation")
    def own_generation(question: str) -> str:
        client.update_current_generation(model="claude-haiku-4-5", input=[{"role": "user", "content": question}],
                                         output="Under Billing.")
        return "Under Billing."

    own_generation("Where is my invoice?")
    lake_from_sdk_spans(exporter.get_finished_spans(), cfg)
    assert contents(cfg) == [
        ([text("system", "Be brief."), text("user", "Summarise 1")],
         [text("assistant", plain.choices[0].message.content)]),
        ([text("user", "Summarise 2")], [text("assistant", streamed)]),
        ([text("user", "What does get_time say for Paris?")],
         [{"role": "assistant", "parts": [{"type": "tool_call", "id": called.id, "name": "get_time",
                                           "arguments": json.loads(called.function.arguments)}]}]),
        ([text("user", "Where is my invoice?")], [text("assistant", "Under Billing.")]),
    ]


def test_openllmetry_before_0_57_content_reaches_the_lake(standin, cfg, tmp_path):
    """The real OpenLLMetry 0.52.6 (gen_ai.prompt.N / gen_ai.completion.N) in an app of its own: each call's
    conversation, tool calls, tool results and answer are in the lake."""
    if not (LEGACY / "opentelemetry_instrumentation_anthropic-0.52.6.dist-info").is_dir():
        missing_binary(f"OpenLLMetry 0.52.6 is not installed in {LEGACY} (scripts/test installs it)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(LEGACY), str(ROOT / "tests")]),
           "HF_HUB_OFFLINE": "1", "TRACELOOP_TRACE_CONTENT": "true"}
    out = tmp_path / "spans"
    run = subprocess.run([sys.executable, str(ROOT / "tests" / "legacy_openllmetry_app.py"), standin.url,
                          standin.openai_url, str(out)], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["versions"] == ["0.52.6", "0.52.6"]
    lake_from_messages([p.read_bytes() for p in sorted(out.glob("*.pb"))], cfg)

    tool = seen["claude_tool"]
    claude_call = {"type": "tool_call", "id": tool["id"], "name": "get_time", "arguments": tool["input"]}
    gpt_tool = seen["gpt_tool"]
    assert contents(cfg) == [
        ([text("system", "Answer in one line."), text("user", "Where is my invoice?"),
          text("assistant", "Which month?"), text("user", "The May one, please.")],
         [text("assistant", seen["claude_text"], finish_reason="end_turn")]),
        ([text("user", "What does get_time say for Paris?")],
         [{"role": "assistant", "parts": [{"type": "text", "content": tool["text"]}, claude_call],
           "finish_reason": "tool_use"}]),
        ([text("user", "What does get_time say for Paris?"),
          {"role": "assistant", "parts": [{"type": "text", "content": tool["text"]}, claude_call]},
          {"role": "user", "parts": [{"type": "tool_call_response", "id": tool["id"], "response": "12:00"}]}],
         [text("assistant", seen["claude_after_tool"], finish_reason="end_turn")]),
        ([text("user", "Stream the refund steps")],
         [text("assistant", seen["claude_stream"], finish_reason="end_turn")]),
        ([text("system", "Be brief."), text("user", "Summarise ticket 4")],
         [text("assistant", seen["gpt_text"], finish_reason="length")]),
        ([text("user", "What does get_time say for Paris?")],
         [{"role": "assistant", "parts": [{"type": "tool_call", "id": gpt_tool["id"], "name": "get_time",
                                           "arguments": json.loads(gpt_tool["arguments"])}],
           "finish_reason": "tool_calls"}]),
    ]


# -- the calls view's content, of a call several instrumentations reported (no SDK: spans as they arrive) ------

def _scoped_message(spans_by_scope: dict[str, list]) -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    for scope, spans in spans_by_scope.items():
        ss = rs.scope_spans.add()
        ss.scope.name = scope
        ss.spans.extend(spans)
    return req.SerializeToString()


def _call_span(i: int, at_s: float, response_id: str, **content):
    from costline.sim.synth import span

    t0 = 1_790_000_000_000_000_000 + int(at_s * 1e9)
    return span("chat claude-haiku-4-5", trace_id=b"\x01" * 16, span_id=bytes([0, 0, 0, 0, 0, 0, 0, i]),
                start_ns=t0, end_ns=t0 + 400_000_000, attributes={
                    "gen_ai.operation.name": "chat", "gen_ai.request.model": "claude-haiku-4-5",
                    "gen_ai.provider.name": "anthropic", "gen_ai.usage.input_tokens": 30,
                    "gen_ai.usage.output_tokens": 5, "gen_ai.response.id": response_id,
                    **{f"gen_ai.{side}.messages": doc for side, doc in content.items()}})


FULL_IN = json.dumps([text("system", "You answer questions about refunds."), text("user", "Can I return shoes?")])
FULL_OUT = json.dumps([text("assistant", "Yes, within 30 days.", finish_reason="end_turn")])


def test_the_calls_view_takes_a_calls_whole_content_over_a_cut_copy(cfg):
    """The SDK's own span (no content) is kept for the figures; OpenLLMetry's copy of the call's content was cut by
    its attribute length limit (kept as a flagged text), a third instrumentation's is whole: the calls view shows
    the whole one, whatever sorts first."""
    cut = FULL_IN[:40]
    lake_from_messages([_scoped_message({
        "com.anthropic.sdk.python": [_call_span(1, 0.0, "msg_01ABC")],
        "opentelemetry.instrumentation.anthropic": [_call_span(2, 0.0, "msg_01ABC", input=cut, output=FULL_OUT[:30])],
        "another.instrumentation": [_call_span(3, 0.0, "msg_01ABC", input=FULL_IN, output=FULL_OUT)]})], cfg)
    assert q(cfg, "SELECT count(*) FILTER (WHERE data_quality LIKE '%not_json%') FROM calls_raw") == [(1,)]
    assert q(cfg, "SELECT instrumentation, input_messages, output_messages FROM calls") == [
        ("com.anthropic.sdk.python", FULL_IN, FULL_OUT)]


def test_a_response_id_a_server_gives_again_later_lends_no_content_to_the_other_call(cfg):
    """A caching proxy (or a stand-in) gives the same response id to two calls of one trace, seconds apart: the
    content a view shows for a call is of spans that ran with the span it kept, never the other call's answer."""
    lake_from_messages([_scoped_message({"opentelemetry.instrumentation.anthropic": [
        _call_span(1, 0.0, "chatcmpl-7", input=json.dumps([text("user", "first question")])),
        _call_span(2, 5.0, "chatcmpl-7", input=json.dumps([text("user", "second question")]),
                   output=json.dumps([text("assistant", "second answer")]))]})], cfg)
    own = {json.dumps([text("user", "first question")]): None,
           json.dumps([text("user", "second question")]): json.dumps([text("assistant", "second answer")])}
    for given, answered in q(cfg, "SELECT input_messages, output_messages FROM calls"):
        assert own[given] == answered  # each call's question with its own answer, or none
