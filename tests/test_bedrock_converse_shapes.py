"""Converse requests translated to the Messages requests they are (serving/gateway/bedrock_api.py), table-driven,
no server: what each block becomes (a cachePoint's ttl a cache_control's, a toolSpec's strict a tool's), what is
refused and why, the defaults Bedrock's own semantics call for."""

from __future__ import annotations

import base64

import pytest

from costline.serving.gateway.bedrock_api import DEFAULT_MAX_TOKENS, converse_answer, converse_body

MODEL = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n fake").decode()


def user(*blocks):
    return {"role": "user", "content": list(blocks)}


def test_blocks_system_tools_and_cache_points_become_the_messages_request():
    body, betas = converse_body({
        "system": [{"text": "Be terse."}, {"cachePoint": {"type": "default"}}],
        "messages": [user({"text": "What is in this?"}, {"image": {"format": "png", "source": {"bytes": PNG}}},
                          {"cachePoint": {"type": "default"}})],
        "inferenceConfig": {"maxTokens": 300, "temperature": 0.1, "topP": 0.9, "stopSequences": ["END"]},
        "toolConfig": {"tools": [{"toolSpec": {"name": "lookup", "inputSchema": {"json": {"type": "object"}}}}],
                       "toolChoice": {"any": {}}},
        "additionalModelRequestFields": {"top_k": 40, "anthropic_beta": ["context-1m-2025-08-07"]},
    }, MODEL, stream=False)
    assert betas == "context-1m-2025-08-07"
    assert body["system"] == [{"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}}]
    assert body["messages"][0]["content"][1] == {
        "type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG},
        "cache_control": {"type": "ephemeral"}}
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["stop_sequences"], body["top_k"]) == (
        300, 0.1, 0.9, ["END"], 40)
    assert body["tools"] == [{"name": "lookup", "input_schema": {"type": "object"}}]
    assert body["tool_choice"] == {"type": "any"} and body["model"] == MODEL and body["stream"] is False


@pytest.mark.parametrize("point, cache_control", [
    ({"type": "default"}, {"type": "ephemeral"}),  # the API's five minutes
    ({"type": "default", "ttl": "5m"}, {"type": "ephemeral", "ttl": "5m"}),
    ({"type": "default", "ttl": "1h"}, {"type": "ephemeral", "ttl": "1h"}),
], ids=["no-ttl", "5m", "1h"])
def test_a_cache_points_ttl_is_the_cache_controls_in_system_messages_and_tools(point, cache_control):
    body, _ = converse_body({
        "system": [{"text": "Be terse."}, {"cachePoint": point}],
        "messages": [user({"text": "Look order 7 up"}, {"cachePoint": point}, {"text": "Quickly"})],
        "toolConfig": {"tools": [{"toolSpec": {"name": "lookup", "inputSchema": {"json": {"type": "object"}}}},
                                 {"cachePoint": point}]},
    }, MODEL, stream=False)
    assert body["system"] == [{"type": "text", "text": "Be terse.", "cache_control": cache_control}]
    assert body["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "Look order 7 up", "cache_control": cache_control},
        {"type": "text", "text": "Quickly"}]}]
    assert body["tools"] == [{"name": "lookup", "input_schema": {"type": "object"}, "cache_control": cache_control}]


def test_a_tool_specs_strict_is_the_tools():
    schema = {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"],
              "additionalProperties": False}
    body, _ = converse_body({"messages": [user({"text": "Where is order 7?"})], "toolConfig": {"tools": [
        {"toolSpec": {"name": "get_order", "description": "Look an order up", "strict": True,
                      "inputSchema": {"json": schema}}},
        {"toolSpec": {"name": "note", "strict": False, "inputSchema": {"json": {"type": "object"}}}},
        {"toolSpec": {"name": "plain", "inputSchema": {"json": {"type": "object"}}}}]}}, MODEL, stream=False)
    assert body["tools"] == [
        {"name": "get_order", "description": "Look an order up", "input_schema": schema, "strict": True},
        {"name": "note", "input_schema": {"type": "object"}, "strict": False},
        {"name": "plain", "input_schema": {"type": "object"}}]


@pytest.mark.parametrize("usage, converse", [
    ({"input_tokens": 5, "output_tokens": 7}, {"inputTokens": 5, "outputTokens": 7, "totalTokens": 12,
                                               "cacheReadInputTokens": 0, "cacheWriteInputTokens": 0}),
    # the cache reads and writes are not in Anthropic's input, nor in Bedrock's; the writes by lifetime
    ({"input_tokens": 5, "output_tokens": 7, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 300,
      "cache_creation": {"ephemeral_5m_input_tokens": 120, "ephemeral_1h_input_tokens": 180}},
     {"inputTokens": 5, "outputTokens": 7, "totalTokens": 412, "cacheReadInputTokens": 100,
      "cacheWriteInputTokens": 300, "cacheDetails": [{"ttl": "5m", "inputTokens": 120},
                                                     {"ttl": "1h", "inputTokens": 180}]}),
    ({"input_tokens": 5, "output_tokens": 7, "cache_creation_input_tokens": 40,  # all one-hour
      "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 40}},
     {"inputTokens": 5, "outputTokens": 7, "totalTokens": 52, "cacheReadInputTokens": 0,
      "cacheWriteInputTokens": 40, "cacheDetails": [{"ttl": "1h", "inputTokens": 40}]}),
    ({"input_tokens": 5, "output_tokens": 7, "cache_creation_input_tokens": 40},  # not split: no details
     {"inputTokens": 5, "outputTokens": 7, "totalTokens": 52, "cacheReadInputTokens": 0,
      "cacheWriteInputTokens": 40}),
    ({"input_tokens": -1, "output_tokens": True, "cache_creation": "x"},  # nonsense counts are none
     {"inputTokens": 0, "outputTokens": 0, "totalTokens": 0, "cacheReadInputTokens": 0, "cacheWriteInputTokens": 0}),
])
def test_the_answers_usage_is_bedrocks_with_the_cache_writes_by_lifetime(usage, converse):
    answer = converse_answer({"content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
                              "usage": usage}, 12)
    assert answer["usage"] == converse


def test_a_thinking_conversation_sends_the_models_reasoning_back():
    answer = converse_answer({"content": [{"type": "thinking", "thinking": "Let me see.", "signature": "sig"},
                                          {"type": "redacted_thinking", "data": "opaque"},
                                          {"type": "tool_use", "id": "t1", "name": "lookup", "input": {"q": 1}}],
                              "stop_reason": "tool_use", "usage": {"input_tokens": 5, "output_tokens": 7}}, 12)
    turn = answer["output"]["message"]  # what a boto3 loop appends to its messages
    body, _ = converse_body({"messages": [user({"text": "Look it up"}), turn,
                                          user({"toolResult": {"toolUseId": "t1", "content": [{"json": {"a": 1}}]}})],
                             "additionalModelRequestFields": {"thinking": {"type": "enabled",
                                                                           "budget_tokens": 5000}}},
                            MODEL, stream=False)
    assert body["messages"][1]["content"] == [
        {"type": "thinking", "thinking": "Let me see.", "signature": "sig"},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "tool_use", "id": "t1", "name": "lookup", "input": {"q": 1}}]
    assert body["max_tokens"] == DEFAULT_MAX_TOKENS + 5000  # no maxTokens: room for the budget and an answer
    assert body["messages"][2]["content"][0] == {"type": "tool_result", "tool_use_id": "t1",
                                                 "content": [{"type": "text", "text": '{"a": 1}'}]}


@pytest.mark.parametrize("request_, says", [
    ({"messages": [user({"reasoningContent": {"reasoningText": {"text": "x"}}})]}, "'reasoningContent' blocks"),
    ({"messages": [user({"document": {"format": "pdf", "name": "a", "source": {"bytes": PNG},
                                      "citations": {"enabled": True}}})]}, "citations"),
    ({"messages": [user({"document": {"format": "docx", "name": "a", "source": {"bytes": PNG}}})]}, "costline takes pdf"),
    ({"messages": [user({"image": {"format": "png", "source": {"s3Location": {"uri": "s3://b/k"}}}})]}, "only bytes"),
    ({"messages": [user({"text": 5})]}, "text: a string"),
    ({"messages": [user({"text": "hi"})], "promptVariables": {}}, "'promptVariables'"),
    ({"messages": [user({"text": "hi"})], "additionalModelRequestFields": {"top_p_weird": 1}}, "top_p_weird"),
    ({"messages": []}, "at least one message"),
    ({"system": [{"text": "Be terse."}, {"cachePoint": {"type": "default", "ttl": "2h"}}],
      "messages": [user({"text": "hi"})]}, "system[1].cachePoint.ttl: one of 5m, 1h, not '2h'"),
    ({"messages": [user({"text": "hi"}, {"cachePoint": {"type": "default", "ttl": 3600}})]},
     "messages[0].content[1].cachePoint.ttl: one of 5m, 1h"),
    ({"messages": [user({"text": "hi"})],
      "toolConfig": {"tools": [{"toolSpec": {"name": "lookup", "inputSchema": {"json": {"type": "object"}}}},
                               {"cachePoint": {"type": "default", "ttl": "60m"}}]}},
     "toolConfig.tools[1].cachePoint.ttl: one of 5m, 1h"),
    ({"messages": [user({"text": "hi"}, {"cachePoint": {"type": "ephemeral", "ttl": "1h"}})]},
     "messages[0].content[1].cachePoint.type: \"default\""),
    ({"messages": [user({"text": "hi"}, {"cachePoint": {"ttl": "1h"}})]}, "messages[0].content[1].cachePoint.type"),
    ({"messages": [user({"text": "hi"}, {"cachePoint": {"type": "default", "scope": "global"}})]},
     "messages[0].content[1].cachePoint.scope"),
    ({"messages": [user({"text": "hi"}, {"cachePoint": "1h"})]}, "messages[0].content[1].cachePoint: an object"),
    ({"messages": [user({"text": "hi"})],
      "toolConfig": {"tools": [{"toolSpec": {"name": "lookup", "strict": "yes",
                                             "inputSchema": {"json": {"type": "object"}}}}]}},
     "toolConfig.tools[0].toolSpec.strict: true or false"),
])
def test_what_cannot_be_carried_is_refused_naming_it(request_, says):
    refused = converse_body(request_, MODEL, stream=False)
    assert isinstance(refused, str) and says in refused, refused
