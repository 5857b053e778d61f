"""Tool shapes between the Messages API and the Chat Completions API (costline.serving.translate), table-driven.

Every expected value is written out by hand from the two APIs' documented shapes."""

from __future__ import annotations

import pytest

from costline.serving.translate import (NotTranslatable, blocks_from_openai, cites, messages_to_openai,
                                         openai_tool_calls, tools_for_anthropic, tools_from_openai, tools_to_openai,
                                         tools_problem, turns_from_openai, uses_tools)

WEATHER = {"name": "get_weather", "description": "Weather of a city.",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.mark.parametrize("tools, choice, problem", [
    ([WEATHER], None, None),
    ([WEATHER], {"type": "auto"}, None),
    ([WEATHER], {"type": "any", "disable_parallel_tool_use": True}, None),
    ([WEATHER], {"type": "tool", "name": "get_weather"}, None),
    ([], {"type": "none"}, None),
    (None, None, None),
    ({"name": "x"}, None, "tools: a list of tools"),
    (["get_weather"], None, "tools[0]: a tool is an object"),
    ([{"name": "get weather", "input_schema": {}}], None, "tools[0].name: 1-64 letters, digits, '_' or '-'"),
    ([{"name": "a" * 65, "input_schema": {}}], None, "tools[0].name: 1-64 letters, digits, '_' or '-'"),
    ([{"name": "f"}], None, "tools[0].input_schema: a JSON Schema object is required"),
    ([{"name": "f", "input_schema": {}}, {"name": "f", "input_schema": {}}], None, "tools[1].name: 'f' is offered twice"),
    ([{"name": "f", "input_schema": {}, "description": 3}], None, "tools[0].description: a string"),
    ([{"name": "f", "input_schema": {}, "strict": True}], None, None),
    ([{"name": "f", "input_schema": {}, "strict": "yes"}], None, "tools[0].strict: true or false"),
    ([{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}], None, None),  # Anthropic's, carried
    ([{"type": "bash_20250124", "name": "bash"}, WEATHER], {"type": "tool", "name": "bash"}, None),
    ([{"type": "web_search", "name": "web_search"}], None, "tools[0].type: 'web_search' is neither custom"),
    ([{"type": "function", "name": "f", "input_schema": {}}], None, "tools[0].type: 'function' is neither custom"),
    ([WEATHER], {"type": "tool", "name": "other"}, "tool_choice.name: the name of one of the request's tools"),
    ([WEATHER], {"type": "sometimes"}, "tool_choice: an object whose type is auto, any, none or tool"),
    ([WEATHER], "auto", "tool_choice: an object whose type is auto, any, none or tool"),
    (None, {"type": "any"}, "tool_choice: 'any' needs tools"),
    ([{"name": f"t{i}", "input_schema": {}} for i in range(129)], None, "tools: at most 128 tools a request"),
])
def test_tools_problem_says_what_the_api_would_refuse(tools, choice, problem) -> None:
    found = tools_problem(tools, choice)
    assert (found is None) if problem is None else (found or "").startswith(problem)


@pytest.mark.parametrize("messages, tools, expected", [
    ([{"role": "user", "content": "hi"}], (), False),
    ([{"role": "user", "content": [{"type": "text", "text": "hi"}]}], (), False),
    ([{"role": "user", "content": "hi"}], ({"name": "f"},), True),
    ([{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}], (), True),
    ([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "1"}]}], (), True),
])
def test_uses_tools(messages, tools, expected) -> None:
    assert uses_tools(messages, tools) is expected


def test_openai_tools_become_messages_tools() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city.",
                                               "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                              "required": ["city"]}}},
             {"type": "function", "function": {"name": "now"}}]
    assert tools_from_openai(tools, "required") == (
        [WEATHER, {"name": "now", "input_schema": {"type": "object", "properties": {}}}], {"type": "any"})
    assert tools_from_openai(tools, {"type": "function", "function": {"name": "now"}})[1] == {"type": "tool", "name": "now"}
    assert tools_from_openai(tools, "none")[1] == {"type": "none"}
    assert tools_from_openai(None, None) == ([], None)


@pytest.mark.parametrize("strict", [True, False])
def test_a_strict_tool_stays_strict_both_ways(strict) -> None:
    """Structured outputs' ``strict`` on a function tool (Chat Completions, Responses) and on a Messages tool."""
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
              "additionalProperties": False}
    assert tools_from_openai([{"type": "function", "function": {"name": "get_weather", "parameters": schema,
                                                                "strict": strict}}], None) == (
        [{"name": "get_weather", "input_schema": schema, "strict": strict}], None)
    # to an OpenAI-compatible tier: strict true where the tier takes it (false is the API's default: not sent)
    function = {"name": "get_weather", "parameters": schema}
    assert tools_to_openai([{"name": "get_weather", "input_schema": schema, "strict": strict}], None) == {
        "tools": [{"type": "function", "function": {**function, **({"strict": True} if strict else {})}}]}
    assert tools_to_openai([{"name": "get_weather", "input_schema": schema, "strict": strict}], None,
                           strict=False) == {"tools": [{"type": "function", "function": function}]}  # a student
    assert tools_from_openai([{"type": "function", "function": {"name": "f", "strict": "on"}}], None) == (
        "tools", "tools[0].function.strict: true or false")


def test_a_strict_tools_schema_is_sent_to_anthropic_in_the_subset_its_strict_mode_takes() -> None:
    """An OpenAI app's strict schema may bound numbers and lengths, which Anthropic's strict tool use refuses: the
    bounds move into the description (the anthropic SDK's transform_schema); a tool that is not strict goes as it
    came, and the request's own tools are not changed."""
    bounded = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 5}},
               "required": ["n"], "additionalProperties": False}
    tools = [{"name": "pick", "input_schema": bounded, "strict": True},
             {"name": "loose", "input_schema": bounded}]
    sent = tools_for_anthropic(tools)
    assert sent[0] == {"name": "pick", "strict": True, "input_schema": {
        "type": "object", "properties": {"n": {"type": "integer", "description": "{minimum: 1, maximum: 5}"}},
        "required": ["n"], "additionalProperties": False}}
    assert sent[1] == {"name": "loose", "input_schema": bounded}
    assert tools[0]["input_schema"]["properties"]["n"]["minimum"] == 1


@pytest.mark.parametrize("schema", [
    {"type": "object", "properties": {"note": {"type": ["string", "null"], "maxLength": 9}}},  # OpenAI's nullable
    {"type": "object", "properties": {"anything": {}}},
    {"type": "object", "properties": {"a": {"$ref": "#/definitions/A"}}, "definitions": {"A": {"type": "string"}}},
    "not a schema",
])
def test_a_strict_schema_transform_schema_cannot_adapt_goes_as_it_came_without_strict(schema) -> None:
    """Never a request refused for strictness the gateway added: such a tool reaches Anthropic as before it
    carried ``strict`` (as sent, not strict)."""
    assert tools_for_anthropic([{"name": "t", "input_schema": schema, "strict": True}]) == [
        {"name": "t", "input_schema": schema}]


@pytest.mark.parametrize("tools, choice, param, problem", [
    ([{"type": "custom", "custom": {"name": "f"}}], None, "tools[0]", "tools[0]: only function tools"),
    ([{"type": "function", "function": {"name": "f", "parameters": "{}"}}], None, "tools[0].function.parameters",
     "tools[0].function.parameters: a JSON Schema object"),
    ([{"type": "function", "function": {"name": "bad name"}}], None, "tools", "tools[0].function.name: 1-64"),
    ([{"type": "function", "function": {"name": "f"}}], {"type": "function", "function": {"name": "g"}}, "tool_choice",
     "tool_choice.name"),
    ([{"type": "function", "function": {"name": "f"}}], "always", "tool_choice", "tool_choice: 'auto', 'none'"),
    ("f", None, "tools", "tools: a list of function tools"),
])
def test_openai_tools_that_cannot_be_carried_name_the_param(tools, choice, param, problem) -> None:
    got = tools_from_openai(tools, choice)
    assert got[0] == param and str(got[1]).startswith(problem)


def _text(content):
    return content if isinstance(content, str) else None


def test_an_openai_tool_loop_becomes_messages_turns() -> None:
    raw = [{"role": "system", "content": "Be brief."},
           {"role": "user", "content": "Weather in Oslo and Lima?"},
           {"role": "assistant", "content": None, "tool_calls": [
               {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
               {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Lima"}'}}]},
           {"role": "tool", "tool_call_id": "call_1", "content": "-3 C"},
           {"role": "tool", "tool_call_id": "call_2", "content": "19 C"}]
    system, turns = turns_from_openai(raw, _text)
    assert system == ["Be brief."]
    assert turns == [
        {"role": "user", "content": "Weather in Oslo and Lima?"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Oslo"}},
            {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Lima"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "-3 C"},
                                     {"type": "tool_result", "tool_use_id": "call_2", "content": "19 C"}]}]


@pytest.mark.parametrize("raw, param", [
    ([{"role": "tool", "content": "1"}], "messages[0].tool_call_id"),
    ([{"role": "tool", "tool_call_id": "c", "content": [{"type": "image_url"}]}], "messages[0].content"),
    ([{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{not json"}}]}],
     "messages[0].tool_calls[0]"),
    ([{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1, 2]"}}]}],
     "messages[0].tool_calls[0]"),
    ([{"role": "assistant", "tool_calls": "f"}], "messages[0].tool_calls"),
    ([{"role": "function", "content": "x"}], "messages[0].role"),
])
def test_openai_turns_that_cannot_be_carried_name_the_param(raw, param) -> None:
    assert turns_from_openai(raw, _text)[0] == param


@pytest.mark.parametrize("raw, want", [
    # an empty assistant turn mid-conversation (valid for OpenAI; Anthropic's API refuses any empty message but a
    # final assistant one): left out, the user turns either side kept as they came
    ([{"role": "user", "content": "Remind me later"}, {"role": "assistant", "content": ""},
      {"role": "user", "content": "What is our refund window?"}],
     [{"role": "user", "content": "Remind me later"}, {"role": "user", "content": "What is our refund window?"}]),
    # blank is no text either
    ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": " \n"},
      {"role": "user", "content": ""}, {"role": "assistant", "content": "Hello"},
      {"role": "user", "content": "Refunds?"}],
     [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
      {"role": "user", "content": "Refunds?"}]),
    # an empty user turn before the first answer
    ([{"role": "user", "content": ""}, {"role": "assistant", "content": "How can I help?"},
      {"role": "user", "content": "Refunds?"}],
     [{"role": "assistant", "content": "How can I help?"}, {"role": "user", "content": "Refunds?"}]),
    # an assistant turn of "" that calls tools is kept (its tool_use blocks are its content)
    ([{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": ""},
      {"role": "user", "content": "In Oslo"},
      {"role": "assistant", "content": "", "tool_calls": [
          {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
      {"role": "tool", "tool_call_id": "c1", "content": "sunny"}],
     [{"role": "user", "content": "Weather?"}, {"role": "user", "content": "In Oslo"},
      {"role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": "get_weather", "input": {}}]},
      {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1", "content": "sunny"}]}]),
    # the last turn is left as it is (the route refuses a last user turn without text itself)
    ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ""}, {"role": "user", "content": "Hi?"},
      {"role": "assistant", "content": ""}],
     [{"role": "user", "content": "Hi"}, {"role": "user", "content": "Hi?"}, {"role": "assistant", "content": ""}]),
])
def test_empty_openai_turns_before_the_last_are_left_out(raw, want) -> None:
    assert turns_from_openai(raw, _text) == ([], want)


def test_messages_turns_become_an_openai_conversation() -> None:
    messages = [{"role": "user", "content": "Weather in Oslo?"},
                {"role": "assistant", "content": [{"type": "text", "text": "Checking."},
                                                  {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                                   "input": {"city": "Oslo"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                              "content": [{"type": "text", "text": "-3 C"}]},
                                             {"type": "tool_result", "tool_use_id": "toolu_2", "content": "no such city",
                                              "is_error": True},
                                             {"type": "text", "text": "And tomorrow?"}]}]
    assert messages_to_openai([{"type": "text", "text": "Be"}, {"type": "text", "text": "brief."}], messages) == [
        {"role": "system", "content": "Be\nbrief."},
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "-3 C"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: no such city"},
        {"role": "user", "content": "And tomorrow?"}]


def test_a_chat_answer_that_calls_tools_becomes_tool_use_blocks() -> None:
    blocks, problem = blocks_from_openai({"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_9", "type": "function", "function": {"name": "now", "arguments": ""}},
        {"id": "call_10", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Lima"}'}}]})
    assert problem is None
    assert blocks == [{"type": "tool_use", "id": "call_9", "name": "now", "input": {}},
                      {"type": "tool_use", "id": "call_10", "name": "get_weather", "input": {"city": "Lima"}}]
    assert openai_tool_calls(blocks) == [
        {"id": "call_9", "type": "function", "function": {"name": "now", "arguments": "{}"}},
        {"id": "call_10", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Lima"}'}}]
    _, problem = blocks_from_openai({"tool_calls": [{"id": "c", "function": {"name": "f", "arguments": '{"a": '}}]})
    assert problem == "the arguments of the call to 'f' are not a JSON object"


@pytest.mark.parametrize("choice, fields", [
    (None, {}),
    ({"type": "auto"}, {"tool_choice": "auto"}),
    ({"type": "any", "disable_parallel_tool_use": True}, {"tool_choice": "required", "parallel_tool_calls": False}),
    ({"type": "tool", "name": "get_weather"}, {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
    ({"type": "none", "disable_parallel_tool_use": True}, {"tool_choice": "none"}),
])
def test_messages_tools_become_openai_request_fields(choice, fields) -> None:
    function = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city.",
                                                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                                "required": ["city"]}}}
    assert tools_to_openai([WEATHER], choice) == {"tools": [function], **fields}
    assert tools_to_openai([], choice) == {}


def test_a_user_turns_images_reach_an_openai_tier_as_image_url_parts_in_order() -> None:
    turn = {"role": "user", "content": [
        {"type": "text", "text": "Which of these two is a cat?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "QUJD"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/b.png"}}]}
    assert messages_to_openai(None, [turn]) == [{"role": "user", "content": [
        {"type": "text", "text": "Which of these two is a cat?"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,QUJD"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/b.png"}}]}]


@pytest.mark.parametrize("url, block", [
    ("data:image/png;base64,QUJD", {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                               "data": "QUJD"}}),
    ("https://example.com/a.jpg", {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}}),
    ("data:image/png;base64,@@not base64", None),
    ("data:text/html;base64,QUJD", None),
    ("file:///etc/passwd", None),
    (7, None),
])
def test_image_block_of_an_openai_image_url(url, block) -> None:
    from costline.serving.translate import image_block
    assert image_block(url) == block


def test_a_chat_user_message_with_image_parts_becomes_text_and_image_blocks() -> None:
    raw = [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,QUJD",
                                                                           "detail": "low"}}]}]
    assert turns_from_openai(raw, _text) == ([], [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "QUJD"}}]}])
    bad = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]
    assert turns_from_openai(bad, _text)[0] == "messages[0].content"


# -- documents and search results to an OpenAI-compatible tier ------------------------------------------------------
POLICY = "The refund window is 30 days. Opened software is not refundable."
TEXT_DOC = {"type": "document", "title": "Refunds", "context": "Policy of 2026.",
            "source": {"type": "text", "media_type": "text/plain", "data": POLICY}}
CONTENT_DOC = {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "Part one."},
                                                                                {"type": "text", "text": "Part two."}]}}
RESULT = {"type": "search_result", "source": "https://help.example.com/refunds", "title": "Refunds",
          "content": [{"type": "text", "text": POLICY}]}


def test_text_documents_and_search_results_reach_an_openai_tier_as_text_in_order() -> None:
    turns = [{"role": "user", "content": [TEXT_DOC, CONTENT_DOC, RESULT, {"type": "text", "text": "How long?"}]}]
    assert messages_to_openai(None, turns) == [{"role": "user", "content": (
        f"Document: Refunds\nPolicy of 2026.\n\n{POLICY}\n"
        "Document:\n\nPart one.\nPart two.\n"
        f"Search result: Refunds (https://help.example.com/refunds)\n{POLICY}\n"
        "How long?")}]


def test_a_tools_search_results_reach_an_openai_tier_as_the_tool_messages_text() -> None:
    turns = [{"role": "user", "content": "How long?"},
             {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "search", "input": {}}]},
             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [RESULT]}]}]
    tool = messages_to_openai(None, turns)[-1]
    assert tool == {"role": "tool", "tool_call_id": "t1",
                    "content": f"Search result: Refunds (https://help.example.com/refunds)\n{POLICY}"}


def test_earlier_thinking_is_left_out_for_an_openai_tier() -> None:
    turns = [{"role": "user", "content": "Hi"},
             {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                                               {"type": "text", "text": "Hello."}]},
             {"role": "user", "content": "And?"}]
    assert [m["content"] for m in messages_to_openai(None, turns)] == ["Hi", "Hello.", "And?"]


@pytest.mark.parametrize("block, says", [
    ({**TEXT_DOC, "citations": {"enabled": True}}, "citations"),
    ({**RESULT, "citations": {"enabled": True}}, "citations"),
    ({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}},
     "application/pdf"),
    ({"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}, "'url'"),
    ({"type": "document", "source": {"type": "file", "file_id": "file_1"}}, "'file'"),
    ({"type": "container_upload", "file_id": "file_1"}, "container_upload"),
    ({"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "image", "source": {
        "type": "base64", "media_type": "image/png", "data": "iVBORw0K"}}]}, "tool result holding 'image'"),
])
def test_what_an_openai_tier_cannot_read_is_never_dropped(block, says) -> None:
    """Until 2026-12-03 such blocks were left out: the student answered about a document it never saw."""
    with pytest.raises(NotTranslatable) as refused:
        messages_to_openai(None, [{"role": "user", "content": [block, {"type": "text", "text": "Summarise it."}]}])
    assert says in str(refused.value)


@pytest.mark.parametrize("turns, expected", [
    ([{"role": "user", "content": [TEXT_DOC, {"type": "text", "text": "q"}]}], False),
    ([{"role": "user", "content": [{**TEXT_DOC, "citations": {"enabled": True}}]}], True),
    ([{"role": "user", "content": [{**TEXT_DOC, "citations": {"enabled": False}}]}], False),
    ([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [
        {**RESULT, "citations": {"enabled": True}}]}]}], True),
    ([{"role": "user", "content": "q"}], False),
])
def test_cites(turns, expected) -> None:
    assert cites(turns) is expected
