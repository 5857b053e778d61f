"""Tool use on the stand-in's Messages and Chat Completions endpoints, driven through the real SDKs.

The stand-in calls a tool when the last user question names it (or ``tool_choice`` forces one) and answers
the tool's result with ``"<name> returned: <result>"``: a whole two-turn tool loop, streamed and not.
"""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

MODEL = "claude-haiku-4-5"
STUDENT = "costline-student"

WEATHER_SCHEMA = {"type": "object",
                  "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                                 "metric": {"type": "boolean"}, "lat": {"type": "number"},
                                 "tags": {"type": "array", "items": {"type": "string"}}},
                  "required": ["city"]}
TIME_SCHEMA = {"type": "object", "properties": {"zone": {"type": "string"}}}
TOOLS = [{"name": "get_weather", "description": "The weather in a city.", "input_schema": WEATHER_SCHEMA},
         {"name": "get_time", "description": "The time in a zone.", "input_schema": TIME_SCHEMA}]
OPENAI_TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
                                                  "parameters": WEATHER_SCHEMA}},
                {"type": "function", "function": {"name": "get_time", "parameters": TIME_SCHEMA}}]
# written by hand: each property's default by JSON type (string, integer, boolean, number, anything else)
WEATHER_INPUT = {"city": "stand-in", "days": 1, "metric": True, "lat": 1, "tags": None}
WEATHER_ARGUMENTS = '{"city": "stand-in", "days": 1, "metric": true, "lat": 1, "tags": null}'
TIME_INPUT = {"zone": "stand-in"}
QUESTION = "What does get_weather say for Paris?"


@pytest.fixture
def claude(standin):
    client = anthropic.Anthropic(base_url=standin.url, api_key="x", max_retries=0)
    yield client
    client.close()


@pytest.fixture
def gpt(standin):
    client = openai.OpenAI(base_url=standin.openai_url, api_key="x", max_retries=0)
    yield client
    client.close()


def _blocks(message) -> list[dict]:
    return [b.model_dump(exclude_none=True) for b in message.content]


# -- Messages API -----------------------------------------------------------------------------------------
def test_messages_tool_loop(standin, claude) -> None:
    standin.log.clear()
    first = claude.messages.create(model=MODEL, max_tokens=64, tools=TOOLS,
                                   messages=[{"role": "user", "content": QUESTION}])
    assert first.stop_reason == "tool_use"
    blocks = _blocks(first)
    assert blocks[0] == {"type": "text", "text": "Calling get_weather."}
    tool_use = blocks[1]
    assert tool_use["type"] == "tool_use" and tool_use["name"] == "get_weather"
    assert tool_use["id"].startswith("toolu_standin_")
    assert tool_use["input"] == WEATHER_INPUT
    assert len(blocks) == 2 and first.usage.output_tokens > 0

    turns = [{"role": "user", "content": QUESTION},
             {"role": "assistant", "content": blocks},
             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use["id"],
                                           "content": "18C and sunny"}]}]
    second = claude.messages.create(model=MODEL, max_tokens=64, tools=TOOLS, messages=turns)
    assert second.stop_reason == "end_turn"
    assert _blocks(second) == [{"type": "text", "text": "get_weather returned: 18C and sunny"}]
    assert second.usage.output_tokens > 0

    # a result's content as text blocks; an id no tool_use had falls back to "the tool"
    turns[2] = {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": tool_use["id"], "content": [{"type": "text", "text": "rain"}]},
        {"type": "tool_result", "tool_use_id": "toolu_unknown", "content": "12:00"}]}
    third = claude.messages.create(model=MODEL, max_tokens=64, tools=TOOLS, messages=turns)
    assert third.content[0].text == "get_weather returned: rain\nthe tool returned: 12:00"

    paid = standin.log.paid("anthropic")
    assert len(paid) == 3 and all(e.status == 200 and e.output_tokens > 0 for e in paid)


def test_messages_tool_choice(claude) -> None:
    ask = [{"role": "user", "content": "Anything new?"}]
    plain = claude.messages.create(model=MODEL, max_tokens=64, tools=TOOLS, messages=ask)
    assert plain.stop_reason == "end_turn" and [b.type for b in plain.content] == ["text"]
    # the same answer as without tools
    bare = claude.messages.create(model=MODEL, max_tokens=64, messages=ask)
    assert plain.content[0].text == bare.content[0].text

    forced = claude.messages.create(model=MODEL, max_tokens=64, tools=TOOLS, tool_choice={"type": "any"},
                                    messages=ask)
    assert forced.stop_reason == "tool_use"
    assert (forced.content[1].name, forced.content[1].input) == ("get_weather", WEATHER_INPUT)

    named = claude.messages.create(model=MODEL, max_tokens=64, tools=TOOLS,
                                   tool_choice={"type": "tool", "name": "get_time"},
                                   messages=[{"role": "user", "content": QUESTION}])
    assert _blocks(named)[0] == {"type": "text", "text": "Calling get_time."}
    assert (named.content[1].name, named.content[1].input) == ("get_time", TIME_INPUT)

    # the question names the second tool: that one (auto)
    second = claude.messages.create(model=MODEL, max_tokens=64, tools=TOOLS,
                                    messages=[{"role": "user", "content": "call get_time please"}])
    assert (second.content[1].name, second.content[1].input) == ("get_time", TIME_INPUT)

    none = claude.messages.create(model=MODEL, max_tokens=64, tools=TOOLS, tool_choice={"type": "none"},
                                  messages=[{"role": "user", "content": QUESTION}])
    assert none.stop_reason == "end_turn" and [b.type for b in none.content] == ["text"]

    with pytest.raises(anthropic.BadRequestError) as err:
        claude.messages.create(model=MODEL, max_tokens=64, tools=TOOLS,
                               tool_choice={"type": "tool", "name": "get_stock"}, messages=ask)
    assert err.value.body["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("tool", [
    {"name": "get_weather"},  # no input_schema
    {"name": "get_weather", "input_schema": "object"},
    {"input_schema": WEATHER_SCHEMA},  # no name
    {"name": 7, "input_schema": WEATHER_SCHEMA},
])
def test_messages_malformed_tool_is_a_400(standin, claude, tool) -> None:
    standin.log.clear()
    with pytest.raises(anthropic.BadRequestError) as err:
        claude.messages.create(model=MODEL, max_tokens=64, tools=[tool],
                               messages=[{"role": "user", "content": QUESTION}])
    assert err.value.status_code == 400
    assert err.value.body["error"]["type"] == "invalid_request_error"
    assert standin.log.paid() == [] and [e.status for e in standin.log.entries()] == [400]


def test_messages_tool_use_streamed(standin, claude) -> None:
    standin.log.clear()
    events = list(claude.messages.create(model=MODEL, max_tokens=64, tools=TOOLS, stream=True,
                                         messages=[{"role": "user", "content": QUESTION}]))
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    starts = [e for e in events if e.type == "content_block_start"]
    assert [(s.index, s.content_block.type) for s in starts] == [(0, "text"), (1, "tool_use")]
    assert starts[1].content_block.name == "get_weather" and starts[1].content_block.input == {}
    assert starts[1].content_block.id.startswith("toolu_standin_")
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta" and e.index == 0)
    assert text == "Calling get_weather."
    pieces = [e.delta for e in events if e.type == "content_block_delta" and e.index == 1]
    assert len(pieces) > 1 and {p.type for p in pieces} == {"input_json_delta"}
    assert "".join(p.partial_json for p in pieces) == WEATHER_ARGUMENTS
    stops = [e.index for e in events if e.type == "content_block_stop"]
    assert stops == [0, 1]
    # the text block closes before the tool_use block opens
    assert kinds.index("content_block_stop") < kinds.index("content_block_start", kinds.index("content_block_stop"))
    delta = events[-2]
    assert delta.delta.stop_reason == "tool_use" and delta.usage.output_tokens > 0

    with claude.messages.stream(model=MODEL, max_tokens=64, tools=TOOLS,
                                messages=[{"role": "user", "content": QUESTION}]) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    blocks = _blocks(final)
    assert blocks[0] == {"type": "text", "text": "Calling get_weather."}
    assert (blocks[1]["type"], blocks[1]["name"], blocks[1]["input"]) == ("tool_use", "get_weather", WEATHER_INPUT)

    turns = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": blocks},
             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": blocks[1]["id"],
                                           "content": "18C and sunny"}]}]
    with claude.messages.stream(model=MODEL, max_tokens=64, tools=TOOLS, messages=turns) as stream:
        answer = stream.get_final_message()
    assert answer.stop_reason == "end_turn"
    assert _blocks(answer) == [{"type": "text", "text": "get_weather returned: 18C and sunny"}]
    assert len(standin.log.paid("anthropic")) == 3


def test_messages_tool_stream_broken_mid_call(standin, claude) -> None:
    standin.inject_stream_errors(after_deltas=2)
    try:
        with pytest.raises(anthropic.APIStatusError):
            with claude.messages.stream(model=MODEL, max_tokens=64, tools=TOOLS,
                                        messages=[{"role": "user", "content": QUESTION}]) as stream:
                stream.get_final_message()
    finally:
        standin.clear_errors()


# -- Chat Completions API ----------------------------------------------------------------------------------
def test_chat_tool_loop(standin, gpt) -> None:
    standin.log.clear()
    question = {"role": "user", "content": QUESTION}
    first = gpt.chat.completions.create(model=STUDENT, messages=[question], tools=OPENAI_TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.id.startswith("call_standin_") and call.type == "function"
    assert (call.function.name, call.function.arguments) == ("get_weather", WEATHER_ARGUMENTS)
    assert first.usage.completion_tokens > 0

    turns = [question, choice.message.model_dump(exclude_none=True),
             {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"}]
    second = gpt.chat.completions.create(model=STUDENT, messages=turns, tools=OPENAI_TOOLS)
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "get_weather returned: 18C and sunny"
    assert second.choices[0].message.tool_calls is None

    paid = standin.log.paid("openai")
    assert len(paid) == 2 and all(e.status == 200 and e.output_tokens > 0 for e in paid)


def test_chat_tool_choice(gpt) -> None:
    ask = [{"role": "user", "content": "Anything new?"}]
    plain = gpt.chat.completions.create(model=STUDENT, messages=ask, tools=OPENAI_TOOLS)
    bare = gpt.chat.completions.create(model=STUDENT, messages=ask)
    assert plain.choices[0].finish_reason == "stop" and plain.choices[0].message.tool_calls is None
    assert plain.choices[0].message.content == bare.choices[0].message.content

    required = gpt.chat.completions.create(model=STUDENT, messages=ask, tools=OPENAI_TOOLS, tool_choice="required")
    fn = required.choices[0].message.tool_calls[0].function
    assert (fn.name, fn.arguments) == ("get_weather", WEATHER_ARGUMENTS)

    named = gpt.chat.completions.create(model=STUDENT, messages=[{"role": "user", "content": QUESTION}],
                                        tools=OPENAI_TOOLS,
                                        tool_choice={"type": "function", "function": {"name": "get_time"}})
    fn = named.choices[0].message.tool_calls[0].function
    assert (fn.name, fn.arguments) == ("get_time", '{"zone": "stand-in"}')

    none = gpt.chat.completions.create(model=STUDENT, messages=[{"role": "user", "content": QUESTION}],
                                       tools=OPENAI_TOOLS, tool_choice="none")
    assert none.choices[0].finish_reason == "stop" and none.choices[0].message.tool_calls is None

    with pytest.raises(openai.BadRequestError):
        gpt.chat.completions.create(model=STUDENT, messages=ask, tools=OPENAI_TOOLS,
                                    tool_choice={"type": "function", "function": {"name": "get_stock"}})
    with pytest.raises(openai.BadRequestError):
        gpt.chat.completions.create(model=STUDENT, messages=ask, tools=[{"type": "function", "function": {}}])


def test_chat_tool_call_streamed(standin, gpt) -> None:
    standin.log.clear()
    question = {"role": "user", "content": QUESTION}
    chunks = list(gpt.chat.completions.create(model=STUDENT, messages=[question], tools=OPENAI_TOOLS, stream=True,
                                              stream_options={"include_usage": True}))
    head = chunks[0].choices[0].delta.tool_calls
    assert len(head) == 1 and head[0].index == 0 and head[0].type == "function"
    assert head[0].id.startswith("call_standin_")
    assert (head[0].function.name, head[0].function.arguments) == ("get_weather", "")
    pieces = [c.choices[0].delta.tool_calls[0] for c in chunks[1:] if c.choices and c.choices[0].delta.tool_calls]
    assert len(pieces) > 1 and all(p.index == 0 and p.id is None for p in pieces)
    assert "".join(p.function.arguments for p in pieces) == WEATHER_ARGUMENTS
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0

    with gpt.chat.completions.stream(model=STUDENT, messages=[question], tools=OPENAI_TOOLS) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert (call.function.name, call.function.arguments) == ("get_weather", WEATHER_ARGUMENTS)
    assert json.loads(call.function.arguments) == WEATHER_INPUT

    turns = [question, {"role": "assistant", "content": None,
                        "tool_calls": [{"id": call.id, "type": "function",
                                        "function": {"name": "get_weather", "arguments": WEATHER_ARGUMENTS}}]},
             {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"}]
    with gpt.chat.completions.stream(model=STUDENT, messages=turns, tools=OPENAI_TOOLS) as stream:
        answer = stream.get_final_completion()
    assert answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].message.content == "get_weather returned: 18C and sunny"
    assert len(standin.log.paid("openai")) == 3
