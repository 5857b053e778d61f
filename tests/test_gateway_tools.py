"""Tool use through the gateway, driven by the real ``anthropic`` and ``openai`` SDKs (streaming included) against
Gateway → Pipeline → the local stand-ins: a two-turn tool loop on an Anthropic tier and on an OpenAI-compatible
tier (the student), from either API, so the tools, the calls and the results are translated both ways. A request
with tools is never answered from the cache nor stored in it; malformed tools are a 400 before any model call.
An image for the text-only student reaches it as an image part (refused there, escalated), never dropped.
Extended thinking reaches Anthropic tiers and its blocks come back (never cached); count_tokens is answered.

The stand-in calls the first offered tool whose name the question mentions, with each parameter set to a
default of its JSON type (a string: ``"stand-in"``), and answers a tool result with ``"<name> returned: <result>"``.
"""

from __future__ import annotations

import dataclasses
import json

import anthropic
import openai
import pytest
from gateways import ROUTES, DictCache, routed_gateway

from costline.serving.gateway.app import STREAM_MODE_HEADER, Gateway

QUESTION = "Please use get_weather: is it cold in Oslo today?"
WEATHER = {"name": "get_weather", "description": "The current weather of a city.",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
OPENAI_WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
STUDENT, ANTHROPIC_TIER = ROUTES["student"], ROUTES["anthropic"]


@pytest.fixture(scope="module")
def setup(standin, tmp_path_factory):
    cache = DictCache()
    with routed_gateway(standin, tmp_path_factory.mktemp("keys") / "keys.json", cache=cache) as gw:
        yield gw, cache


def _anthropic(gw: Gateway, headers: dict[str, str]) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=f"http://127.0.0.1:{gw.port}", api_key="unused", max_retries=0,
                               default_headers=headers)


def _ask(client: anthropic.Anthropic, stream: bool, **kwargs):
    """One Messages request, streamed or not: the answer's text (as the stream gave it) and the final message."""
    if stream:
        with client.messages.stream(**kwargs) as s:
            return "".join(s.text_stream), s.get_final_message()
    message = client.messages.create(**kwargs)
    return message.content[-1].text, message


def _openai(gw: Gateway, headers: dict[str, str]) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{gw.port}/v1", api_key="unused", max_retries=0,
                         default_headers=headers)


@pytest.mark.parametrize("route, tier", [(ANTHROPIC_TIER, "anthropic"), (STUDENT, "student")])
@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_loop_through_the_messages_api(setup, standin, route, tier, stream) -> None:
    gw, cache = setup
    client = _anthropic(gw, route)
    first = [{"role": "user", "content": QUESTION}]
    kwargs = dict(model="claude-haiku-4-5", max_tokens=300, tools=[WEATHER])
    lookups, paid, stored = cache.lookups, len(standin.log.paid()), dict(cache.entries)
    if stream:
        with client.messages.stream(messages=first, **kwargs) as s:
            message = s.get_final_message()
    else:
        message = client.messages.create(messages=first, **kwargs)
    assert message.stop_reason == "tool_use"
    calls = [b for b in message.content if b.type == "tool_use"]
    assert [(c.name, c.input) for c in calls] == [("get_weather", {"city": "stand-in"})]
    assert calls[0].id
    second = [*first, {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in message.content]},
              {"role": "user", "content": [{"type": "tool_result", "tool_use_id": calls[0].id, "content": "-3 C"}]}]
    if stream:
        with client.messages.stream(messages=second, **kwargs) as s:
            text = "".join(s.text_stream)
            final = s.get_final_message()
    else:
        final = client.messages.create(messages=second, **kwargs)
        text = final.content[0].text
    assert text == "get_weather returned: -3 C"
    assert final.stop_reason == "end_turn"
    # the same question again: a model answers it, never the cache (nothing was looked up or stored)
    again = client.messages.create(messages=first, **kwargs)
    assert again.stop_reason == "tool_use" and again.model != "costline-cache"
    assert cache.lookups == lookups and cache.entries == stored
    calls_made = standin.log.paid()[paid:]
    assert len(calls_made) == 3
    expected_api = "openai" if tier == "student" else "anthropic"
    assert {e.api for e in calls_made} == {expected_api}


@pytest.mark.parametrize("route, tier", [(ANTHROPIC_TIER, "anthropic"), (STUDENT, "student")])
@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_loop_through_the_chat_completions_api(setup, standin, route, tier, stream) -> None:
    gw, cache = setup
    client = _openai(gw, route)
    first = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}]
    lookups, paid, stored = cache.lookups, len(standin.log.paid()), dict(cache.entries)
    if stream:
        call_id, name, arguments, finish = "", "", "", None
        for chunk in client.chat.completions.create(model="gpt-5-mini", messages=first, tools=[OPENAI_WEATHER],
                                                    stream=True, stream_options={"include_usage": True}):
            for choice in chunk.choices:
                finish = choice.finish_reason or finish
                for delta in choice.delta.tool_calls or []:
                    assert delta.index == 0
                    call_id = delta.id or call_id
                    name += (delta.function.name or "") if delta.function else ""
                    arguments += (delta.function.arguments or "") if delta.function else ""
    else:
        reply = client.chat.completions.create(model="gpt-5-mini", messages=first, tools=[OPENAI_WEATHER])
        finish = reply.choices[0].finish_reason
        (call,) = reply.choices[0].message.tool_calls
        call_id, name, arguments = call.id, call.function.name, call.function.arguments
    assert finish == "tool_calls"
    assert name == "get_weather" and json.loads(arguments) == {"city": "stand-in"} and call_id
    second = [*first, {"role": "assistant", "content": None, "tool_calls": [
        {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "-3 C"}]
    answer = client.chat.completions.create(model="gpt-5-mini", messages=second, tools=[OPENAI_WEATHER])
    assert answer.choices[0].message.content == "get_weather returned: -3 C"
    assert answer.choices[0].finish_reason == "stop" and not answer.choices[0].message.tool_calls
    assert cache.lookups == lookups and cache.entries == stored
    calls_made = standin.log.paid()[paid:]
    assert {e.api for e in calls_made} == {"openai" if tier == "student" else "anthropic"}


def test_tool_choice_reaches_the_model(setup) -> None:
    gw, _ = setup
    client = _anthropic(gw, ANTHROPIC_TIER)
    plain = [{"role": "user", "content": "Is it cold in Oslo today?"}]  # names no tool
    forced = client.messages.create(model="m", max_tokens=100, messages=plain, tools=[WEATHER],
                                    tool_choice={"type": "tool", "name": "get_weather"})
    assert [b.name for b in forced.content if b.type == "tool_use"] == ["get_weather"]
    banned = client.messages.create(model="m", max_tokens=100, messages=[{"role": "user", "content": QUESTION}],
                                    tools=[WEATHER], tool_choice={"type": "none"})
    assert banned.stop_reason == "end_turn" and all(b.type == "text" for b in banned.content)
    required = _openai(gw, STUDENT).chat.completions.create(model="m", messages=plain, tools=[OPENAI_WEATHER],
                                                            tool_choice="required")
    assert required.choices[0].message.tool_calls[0].function.name == "get_weather"


@pytest.mark.parametrize("tools, tool_choice, message", [
    ([{"name": "get weather", "input_schema": {"type": "object"}}], None, "tools[0].name: 1-64 letters"),
    ([{"name": "get_weather"}], None, "tools[0].input_schema: a JSON Schema object is required"),
    ([{"type": "web-search", "name": "web_search"}], None, "tools[0].type: 'web-search' is neither custom"),
    ([{"type": "web_search_20250305", "name": "web search"}], None, "tools[0].name: 1-64 letters"),
    ([WEATHER], {"type": "tool", "name": "get_time"}, "tool_choice.name: the name of one of the request's tools"),
])
def test_malformed_tools_are_a_400_before_any_model_call(setup, standin, tools, tool_choice, message) -> None:
    gw, _ = setup
    paid = len(standin.log.paid())
    extra = {"tool_choice": tool_choice} if tool_choice else {}
    with pytest.raises(anthropic.BadRequestError) as err:
        _anthropic(gw, ANTHROPIC_TIER).messages.create(
            model="m", max_tokens=100, messages=[{"role": "user", "content": QUESTION}], extra_body={"tools": tools,
                                                                                                  **extra})
    assert err.value.body["error"]["type"] == "invalid_request_error"
    assert err.value.body["error"]["message"].startswith(message)
    assert len(standin.log.paid()) == paid


@pytest.mark.parametrize("body, param", [
    ({"tools": [{"type": "function", "function": {"name": "get weather"}}]}, "tools"),
    ({"tools": [OPENAI_WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
    ({"messages": [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{oops"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "-3 C"}]}, "messages[1].tool_calls[0]"),
    ({"messages": [{"role": "user", "content": QUESTION}, {"role": "tool", "content": "-3 C"}]},
     "messages[1].tool_call_id"),
])
def test_malformed_openai_tool_requests_are_a_400_naming_the_param(setup, standin, body, param) -> None:
    gw, _ = setup
    paid = len(standin.log.paid())
    request = {"model": "m", "messages": [{"role": "user", "content": QUESTION}], **body}
    with pytest.raises(openai.BadRequestError) as err:
        _openai(gw, ANTHROPIC_TIER).chat.completions.create(**request)
    assert err.value.body["param"] == param and err.value.body["type"] == "invalid_request_error"
    assert len(standin.log.paid()) == paid


def test_a_streamed_tool_request_is_buffered_and_says_so(setup) -> None:
    gw, _ = setup
    raw = _anthropic(gw, ANTHROPIC_TIER).messages.with_raw_response.create(
        model="m", max_tokens=100, messages=[{"role": "user", "content": QUESTION}], tools=[WEATHER], stream=True)
    assert raw.headers[STREAM_MODE_HEADER] == "buffered"
    kinds = [event.type for event in raw.parse()]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_start" in kinds and kinds.count("content_block_stop") == 2  # a text block, a tool_use block


WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}


@pytest.mark.parametrize("route", [ANTHROPIC_TIER, STUDENT], ids=["anthropic", "student"])
@pytest.mark.parametrize("stream", [False, True])
def test_web_search_runs_on_an_anthropic_tier_and_its_blocks_come_back(setup, standin, route, stream) -> None:
    """Anthropic's web search server tool reaches an Anthropic tier as it was sent; its ``server_tool_use`` and
    ``web_search_tool_result`` blocks come back before the answer (streamed as the API streams them) with
    ``usage.server_tool_use``. Its answers come from live results: never looked up in nor stored in the cache.
    Routed to the student, which has no such tool, the request goes up to an Anthropic tier without a paid student
    call. (Such tools were refused with a 400 before.)"""
    gw, cache = setup
    client = _anthropic(gw, route)
    question = f"What changed in the refund policy and in the shipping rules ({route is STUDENT}, {stream})?"
    lookups, stored = cache.lookups, dict(cache.entries)
    for _ in range(2):  # the same question twice: searched twice
        entries = len(standin.log.entries())
        kwargs = dict(model="claude-haiku-4-5", max_tokens=400, tools=[WEB_SEARCH],
                      messages=[{"role": "user", "content": question}])
        text, message = _ask(client, stream, **kwargs)
        # one " and " in the question: two searches, each a call and its result, then the answer (a lead, then
        # the text that cites both results)
        assert [b.type for b in message.content] == ["server_tool_use", "web_search_tool_result"] * 2 + ["text"] * 2
        assert message.content[0].name == "web_search" and message.content[0].input["query"]
        assert message.content[1].tool_use_id == message.content[0].id
        assert message.content[1].content[0].url.startswith("https://standin.invalid/search/")
        assert [c.url for c in message.content[-1].citations] == [message.content[1].content[0].url,
                                                                 message.content[3].content[0].url]
        assert text and text.endswith(message.content[-1].text)
        assert message.usage.server_tool_use.web_search_requests == 2
        logged = standin.log.entries()[entries:]
        assert [(e.api, e.paid) for e in logged] == [("anthropic", True)]  # the student was never called
    assert cache.lookups == lookups and cache.entries == stored


@pytest.mark.parametrize("route", [ANTHROPIC_TIER, STUDENT], ids=["anthropic", "student"])
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("options, searches", [
    ({}, 2),  # OpenAI's default size (medium): up to 5 searches; the question asks for 2
    ({"search_context_size": "low"}, 1),  # at most one search
    ({"search_context_size": "high", "user_location": {"type": "approximate", "approximate": {
        "city": "Oslo", "country": "NO", "region": "Oslo", "timezone": "Europe/Oslo"}}}, 2),
], ids=["default", "low", "located"])
def test_web_search_options_search_on_an_anthropic_tier_and_cite_as_url_annotations(
        setup, standin, route, stream, options, searches) -> None:
    """An app on the ``openai`` SDK asks with ``web_search_options``: an Anthropic tier searches (the stand-in
    refuses a search tool of another shape than the API's), the answer comes back as ``content`` with one
    ``url_citation`` annotation per result it cites, spanning the cited text (streamed: an ``annotations`` delta
    after the text, as OpenAI streams them); never from the cache nor into it; routed to the student, the request
    goes up without a paid student call. (Such requests were refused with a 400 before.)"""
    gw, cache = setup
    client = _openai(gw, route)
    question = f"What changed in the refund policy and in the shipping rules ({route is STUDENT}, {stream}, {searches})?"
    lookups, stored = cache.lookups, dict(cache.entries)
    entries = len(standin.log.entries())
    kwargs = dict(model="gpt-4o-search-preview", messages=[{"role": "user", "content": question}],
                  web_search_options=options)
    if stream:
        text, annotations, finish = "", [], None
        for chunk in client.chat.completions.create(stream=True, **kwargs):
            delta = chunk.choices[0].delta
            text += delta.content or ""
            annotations += (delta.model_extra or {}).get("annotations") or []
            finish = chunk.choices[0].finish_reason or finish
        cited = [(a["url_citation"]["url"], a["url_citation"]["start_index"], a["url_citation"]["end_index"],
                  a["url_citation"]["title"]) for a in annotations]
    else:
        out = client.chat.completions.create(**kwargs)
        text, finish = out.choices[0].message.content, out.choices[0].finish_reason
        cited = [(a.url_citation.url, a.url_citation.start_index, a.url_citation.end_index, a.url_citation.title)
                 for a in out.choices[0].message.annotations or []]
    assert finish == "stop" and text
    # the stand-in's answer after searching: an uncited lead, then the cited answer (to the end of the content)
    lead = "From the search results: "
    assert text.startswith(lead) and len(text) > len(lead)
    assert cited == [(f"https://standin.invalid/search/{n}", len(lead), len(text), f"Stand-in result {n}")
                     for n in range(1, searches + 1)]
    logged = standin.log.entries()[entries:]
    assert [(e.api, e.paid) for e in logged] == [("anthropic", True)]  # the student was never called
    assert cache.lookups == lookups and cache.entries == stored
    if not stream:  # the next turn sends the answer back as the SDK gives it, its annotations included
        follow = [*kwargs["messages"], out.choices[0].message.model_dump(exclude_none=True),
                  {"role": "user", "content": "Thanks. And for annual plans?"}]
        assert client.chat.completions.create(**{**kwargs, "messages": follow}).choices[0].message.content


def test_a_structured_answer_that_searched_parses_and_keeps_its_citations(setup, standin) -> None:
    """``response_format`` with ``web_search_options`` (the SDK's ``parse``): the answer is the schema's JSON, read on
    the first tier (one paid search), with its citations as annotations spanning all of it."""
    from pydantic import BaseModel

    class Summary(BaseModel):
        summary: str

    gw, _ = setup
    entries = len(standin.log.entries())
    out = _openai(gw, ANTHROPIC_TIER).chat.completions.parse(
        model="m", messages=[{"role": "user", "content": "What changed in the refund policy and in the shipping rules?"}],
        response_format=Summary, web_search_options={})
    message = out.choices[0].message
    assert isinstance(message.parsed, Summary) and message.parsed.summary
    assert [(a.url_citation.start_index, a.url_citation.end_index) for a in message.annotations] == \
        [(0, len(message.content))] * 2
    assert [(e.api, e.paid) for e in standin.log.entries()[entries:]] == [("anthropic", True)]


#: Four " and ": five searches, more than the stand-in makes in one response (three): its turn pauses once.
LONG_SEARCH = ("Compare the refund policy and the shipping rules and the warranty terms and the return window and the "
               "price match promise ({})")


def test_a_paused_search_turn_reaches_a_messages_client_which_sends_it_back(setup, standin) -> None:
    """On the Messages API the client continues a paused turn itself (as Anthropic's docs say): the gateway hands
    the ``pause_turn`` answer over as it came, and the paused turn sent back goes on to the answer."""
    gw, _ = setup
    client = _anthropic(gw, ANTHROPIC_TIER)
    question = [{"role": "user", "content": LONG_SEARCH.format("messages")}]
    kwargs = dict(model="claude-haiku-4-5", max_tokens=400, tools=[{**WEB_SEARCH, "max_uses": 10}])
    paused = client.messages.create(messages=question, **kwargs)
    assert paused.stop_reason == "pause_turn"
    assert [b.type for b in paused.content] == ["server_tool_use", "web_search_tool_result"] * 3
    turn = {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in paused.content]}
    final = client.messages.create(messages=[*question, turn], **kwargs)
    assert final.stop_reason == "end_turn"
    assert [b.type for b in final.content] == ["server_tool_use", "web_search_tool_result"] * 2 + ["text"] * 2
    assert [c.url for c in final.content[-1].citations] == [f"https://standin.invalid/search/{n}" for n in range(1, 6)]


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_the_openai_routes_send_a_paused_search_turn_back_themselves(setup, standin, api) -> None:
    """An OpenAI client cannot send a paused turn back: the gateway does (``RESUME_PAUSED`` times at most), and the
    app gets one answer — all five searches, their citations, the usage of both calls (each billed)."""
    gw, _ = setup
    client = _openai(gw, ANTHROPIC_TIER)
    entries = len(standin.log.entries())
    question = LONG_SEARCH.format(api)
    if api == "chat":
        out = client.chat.completions.create(model="m", messages=[{"role": "user", "content": question}],
                                             web_search_options={"search_context_size": "high"})
        assert out.choices[0].finish_reason == "stop"
        urls = [a.url_citation.url for a in out.choices[0].message.annotations]
        usage = (out.usage.prompt_tokens, out.usage.completion_tokens)
    else:
        out = client.responses.create(model="m", input=question,
                                      tools=[{"type": "web_search", "search_context_size": "high"}])
        assert out.status == "completed"
        assert [o.type for o in out.output] == ["web_search_call"] * 5 + ["message"]
        urls = [a.url for a in out.output[-1].content[0].annotations]
        usage = (out.usage.input_tokens, out.usage.output_tokens)
    assert urls == [f"https://standin.invalid/search/{n}" for n in range(1, 6)]
    calls = standin.log.entries()[entries:]
    assert [(e.api, e.paid) for e in calls] == [("anthropic", True)] * 2  # the paused turn, then its continuation
    # the usage the app reads is both calls' as the API counted them (the continuation re-reads the paused turn)
    assert usage == (sum(e.input_tokens for e in calls), sum(e.output_tokens for e in calls))


def test_an_anthropic_tier_resumes_a_paused_turn_at_most_as_often_as_asked(standin) -> None:
    """``Prompt.resume_paused`` bounds the continuations: ten searches (three a response) need three; given one,
    the answer is the first two responses joined — six searches, their blocks in order, both calls' counts — and
    still paused."""
    from costline.serving.backends import Prompt

    backend = _haiku_backend(standin)
    question = " and ".join(f"topic {n}" for n in range(10))
    entries = len(standin.log.entries())
    prompt = Prompt(({"role": "user", "content": question},), None, 300,
                    tools=({**WEB_SEARCH, "max_uses": 10},), resume_paused=1)
    reply = backend.complete(prompt)
    calls = standin.log.entries()[entries:]
    assert len(calls) == 2 and reply.stop_reason == "pause_turn" and reply.text == ""
    assert reply.web_search_requests == 6
    assert [b["type"] for b in reply.content] == ["server_tool_use", "web_search_tool_result"] * 6
    assert [b["content"][0]["url"] for b in reply.content[1::2]] == [
        f"https://standin.invalid/search/{n}" for n in range(1, 7)]
    assert (reply.input_tokens, reply.output_tokens) == (sum(e.input_tokens for e in calls),
                                                         sum(e.output_tokens for e in calls))
    assert backend.complete(dataclasses.replace(prompt, resume_paused=0)).web_search_requests == 3


def _haiku_backend(standin):
    from costline.config import Config
    from costline.serving.backends import AnthropicBackend
    from costline.serving.registry import ModelRegistry

    return AnthropicBackend(ModelRegistry.from_config(Config()).tier("budget"),
                            anthropic.Anthropic(base_url=standin.url, api_key="test", max_retries=0))


def test_a_resumed_turn_keeps_the_requests_search_and_token_bounds(standin) -> None:
    """The continuations together stay within what the request allowed: ``max_uses`` 4 makes four searches in all
    (three, paused, then one), not four more; a continuation with no output token left is not sent."""
    from costline.serving.backends import Prompt

    backend = _haiku_backend(standin)
    question = " and ".join(f"topic {n}" for n in range(10))  # ten searches wanted
    entries = len(standin.log.entries())
    reply = backend.complete(Prompt(({"role": "user", "content": question},), None, 300,
                                    tools=({**WEB_SEARCH, "max_uses": 4},), resume_paused=8))
    assert len(standin.log.entries()) - entries == 2
    assert reply.stop_reason == "end_turn" and reply.web_search_requests == 4
    assert len(reply.content[-1]["citations"]) == 4
    entries = len(standin.log.entries())
    tiny = backend.complete(Prompt(({"role": "user", "content": question},), None, 1,
                                   tools=({**WEB_SEARCH, "max_uses": 10},), resume_paused=8))
    assert len(standin.log.entries()) - entries == 1 and tiny.stop_reason == "pause_turn"


@pytest.mark.parametrize("max_tokens, out, uses, searches, want_tokens, want_uses, forced_none", [
    (300, 40, 10, 3, 260, 7, False),
    (300, 40, None, 3, 260, None, False),  # a server tool without max_uses stays without
    (300, 40, 3, 3, 260, 1, True),  # no search left: offered (its calls are in the turn), none to be made
    (300, 300, 10, 3, None, None, False),  # no output token left: not sent
])
def test_what_is_left_of_a_paused_requests_bounds(max_tokens, out, uses, searches, want_tokens, want_uses,
                                                  forced_none) -> None:
    from costline.serving.backends import Prompt, _bounds_left

    tool = {**WEB_SEARCH, "max_uses": uses} if uses is not None else {k: v for k, v in WEB_SEARCH.items()
                                                                       if k != "max_uses"}
    left = _bounds_left(Prompt(({"role": "user", "content": "q"},), None, max_tokens, tools=(tool,),
                               tool_choice={"type": "auto"}), max_tokens - out, searches)
    if want_tokens is None:
        assert left is None
        return
    assert left.max_tokens == want_tokens and left.tools[0].get("max_uses") == want_uses
    assert left.tool_choice == ({"type": "none"} if forced_none else {"type": "auto"})


def test_a_failed_continuation_leaves_the_paused_turn_as_the_answer(standin, monkeypatch) -> None:
    """Its searches are paid for: the paused turn stands (cut short for an OpenAI client), no error goes up to
    send the request to another tier, where they would be paid again."""
    from costline.serving.backends import AnthropicBackend, Prompt
    from costline.serving.errors import BackendError

    backend = _haiku_backend(standin)
    real, calls = AnthropicBackend._complete_once, []

    def once(self, prompt):
        calls.append(prompt)
        if len(calls) > 1:
            raise BackendError("budget", "InternalServerError", "stand-in failure on the continuation")
        return real(self, prompt)

    monkeypatch.setattr(AnthropicBackend, "_complete_once", once)
    reply = backend.complete(Prompt(({"role": "user", "content": LONG_SEARCH.format("fails")},), None, 300,
                                    tools=({**WEB_SEARCH, "max_uses": 10},), resume_paused=8))
    assert len(calls) == 2 and reply.stop_reason == "pause_turn" and reply.web_search_requests == 3


def test_an_answer_without_citations_has_no_annotations(setup) -> None:
    gw, _ = setup
    out = _openai(gw, ANTHROPIC_TIER).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "What is the capital of Norway?"}])
    assert out.choices[0].message.content and out.choices[0].message.annotations is None


def test_an_image_for_a_text_only_student_is_escalated_not_dropped(setup, standin) -> None:
    """The image reaches the student as an image_url part; the stand-in refuses it as vLLM refuses image parts
    for a text-only model, and a tier that reads images answers (before, the student got the text alone and
    answered a question about a picture it never saw)."""
    gw, _ = setup
    entries = len(standin.log.entries())
    raw = _anthropic(gw, STUDENT).messages.with_raw_response.create(
        model="m", max_tokens=100, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "text", "text": "Which label fits this picture?"}]}])
    assert raw.headers["x-costline-routed-tier"] == "student"
    assert raw.headers["x-costline-tier"] != "student" and int(raw.headers["x-costline-escalations"]) >= 1
    assert raw.parse().content[0].text
    logged = standin.log.entries()[entries:]
    assert (logged[0].api, logged[0].status, logged[0].paid) == ("openai", 400, False)
    assert logged[-1].api == "anthropic" and logged[-1].paid


def test_count_tokens_through_the_anthropic_sdk_counts_on_the_routed_tiers_model(setup, standin) -> None:
    """``messages.count_tokens`` (LangChain's get_num_tokens_from_messages, Claude Code) reaches the Messages API's
    free count on the tier the request would go to — the nearest Anthropic tier up the ladder for the student —
    and nothing is paid. The stand-in counts a token per word and per punctuation mark."""
    gw, _ = setup
    paid = len(standin.log.paid())
    for route in (ANTHROPIC_TIER, STUDENT):
        raw = _anthropic(gw, route).messages.with_raw_response.count_tokens(
            model="claude-haiku-4-5", system="Be brief.", messages=[{"role": "user", "content": "How do I reset my password?"}])
        assert raw.parse().input_tokens == 3 + 7  # "Be" "brief" "." and "How" "do" "I" "reset" "my" "password" "?"
        assert raw.headers["x-costline-tier"] != "student"
    with pytest.raises(anthropic.BadRequestError):
        _anthropic(gw, ANTHROPIC_TIER).messages.count_tokens(model="m", messages=[{"role": "robot", "content": "x"}])
    assert len(standin.log.paid()) == paid


THINK = {"type": "enabled", "budget_tokens": 1024}


@pytest.mark.parametrize("stream", [False, True])
def test_extended_thinking_comes_back_with_its_signature_and_is_never_cached(setup, standin, stream) -> None:
    """``thinking`` reaches an Anthropic tier; the thinking block (its text and signature, which the client sends
    back on the next turn) comes back before the text, streamed as thinking_delta + signature_delta; the request
    is neither looked up in nor stored in the cache. (It was refused with a 400 before.)"""
    gw, cache = setup
    client = _anthropic(gw, ANTHROPIC_TIER)
    question = f"How do I rotate my API key ({stream})?"
    kwargs = dict(model="claude-sonnet-4-6", max_tokens=2000, thinking=THINK,
                  messages=[{"role": "user", "content": question}])
    lookups, stored, paid = cache.lookups, dict(cache.entries), len(standin.log.paid())
    for _ in range(2):  # the same request twice: a model answers both
        text, message = _ask(client, stream, **kwargs)
        assert [b.type for b in message.content] == ["thinking", "text"]
        assert message.content[0].thinking == f"The stand-in thinks about: {question}"
        assert message.content[0].signature.startswith("sig_standin_")
        assert text and message.content[1].text == text
    assert cache.lookups == lookups and cache.entries == stored
    assert len(standin.log.paid()) == paid + 2


def test_thinking_and_tools_in_one_loop_send_the_thinking_block_back(setup, standin) -> None:
    gw, _ = setup
    client = _anthropic(gw, ANTHROPIC_TIER)
    first = [{"role": "user", "content": QUESTION}]
    kwargs = dict(model="claude-sonnet-4-6", max_tokens=2000, thinking=THINK, tools=[WEATHER])
    message = client.messages.create(messages=first, **kwargs)
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use"]
    call = message.content[2]
    follow = [*first, {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in message.content]},
              {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "-3 C"}]}]
    final = client.messages.create(messages=follow, **kwargs)
    assert final.content[-1].text == "get_weather returned: -3 C"


def test_thinking_routed_to_the_student_answers_without_it(setup, standin) -> None:
    """An OpenAI-compatible tier has no thinking: it answers the question, with no thinking block."""
    gw, _ = setup
    paid = len(standin.log.paid())
    message = _anthropic(gw, STUDENT).messages.create(model="m", max_tokens=2000, thinking=THINK,
                                                      messages=[{"role": "user", "content": "Classify: refund late"}])
    assert [b.type for b in message.content] == ["text"] and message.content[0].text
    assert [e.api for e in standin.log.paid()[paid:]] == ["openai"]


@pytest.mark.parametrize("thinking, message", [
    ({"type": "enabled", "budget_tokens": 512}, "thinking.budget_tokens: a whole number >= 1024"),
    ({"type": "enabled", "budget_tokens": 4096}, "thinking.budget_tokens: must be less than max_tokens"),
    ({"type": "enabled"}, "thinking.budget_tokens: a whole number >= 1024"),
    ({"type": "deep"}, "thinking: {\"type\": \"enabled\""),
    ({"type": "adaptive", "display": "full"}, "thinking.display: summarized or omitted"),
])
def test_thinking_the_api_would_refuse_is_a_400_before_any_call(setup, standin, thinking, message) -> None:
    gw, _ = setup
    paid = len(standin.log.paid())
    with pytest.raises(anthropic.BadRequestError) as err:
        _anthropic(gw, ANTHROPIC_TIER).messages.create(model="m", max_tokens=2000, thinking=thinking,
                                                       messages=[{"role": "user", "content": QUESTION}])
    assert err.value.body["error"]["message"].startswith(message)
    assert len(standin.log.paid()) == paid


def test_parallel_tool_calls_false_reaches_an_openai_tier_as_it_was_sent(setup, standin) -> None:
    """Chat Completions' parallel_tool_calls: false is the Messages API's disable_parallel_tool_use on the way in
    and parallel_tool_calls: false again at an OpenAI-compatible tier (the stand-in logs what it received)."""
    gw, _ = setup
    paid = len(standin.log.paid())
    _openai(gw, STUDENT).chat.completions.create(model="m", messages=[{"role": "user", "content": QUESTION}],
                                                 tools=[OPENAI_WEATHER], parallel_tool_calls=False)
    (call,) = standin.log.paid()[paid:]
    assert call.api == "openai" and dict(call.sampling).get("parallel_tool_calls") is False


def test_chat_completions_image_parts_reach_a_tier_and_two_pictures_are_two_cache_entries(setup, standin) -> None:
    """An openai-SDK app's image_url parts become image blocks: an Anthropic tier answers, and the same question
    about another picture is not served the first picture's answer from the cache."""
    gw, _ = setup
    client = _openai(gw, ANTHROPIC_TIER)

    def ask(picture: str):
        return client.chat.completions.create(model="m", messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{picture}"}}]}])

    paid = len(standin.log.paid())
    first, again, other = ask("iVBORw0KGgo="), ask("iVBORw0KGgo="), ask("R0lGODlhAQABAAAAACw=")
    assert first.model != "costline-cache" and first.choices[0].message.content
    assert again.model == "costline-cache"  # the same picture: the cache
    assert other.model != "costline-cache"  # another picture: a model
    assert [e.api for e in standin.log.paid()[paid:]] == ["anthropic", "anthropic"]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}])
    assert err.value.body["param"] == "messages[0].content"


@pytest.mark.parametrize("stream", [False, True])
def test_an_image_by_url_is_never_sent_to_the_self_hosted_student(setup, standin, stream) -> None:
    """vLLM fetches an image URL itself, from inside the network it runs in: a caller's URL (cloud metadata, an
    internal service) would be fetched there. The student is not asked at all; a tier whose API fetches from
    outside answers (streamed too: this gateway has no gate, so a stream to the student would go live)."""
    gw, _ = setup
    entries = len(standin.log.entries())
    raw = _anthropic(gw, STUDENT).messages.with_raw_response.create(
        model="m", max_tokens=100, stream=stream, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": "http://169.254.169.254/latest/meta-data/"}},
            {"type": "text", "text": f"Which label fits this picture ({stream})?"}]}])
    assert raw.headers["x-costline-routed-tier"] == "student" and raw.headers["x-costline-tier"] != "student"
    assert [e.api for e in standin.log.entries()[entries:]] == ["anthropic"]  # the student's server was never asked


def test_a_strict_tool_reaches_an_anthropic_tier_still_strict(setup, standin, monkeypatch) -> None:
    """Structured outputs' ``strict``: an openai-SDK app's strict function reaches an Anthropic tier as a strict
    tool; an anthropic-SDK app's strict tool reaches the student (a self-hosted server, which may refuse the field)
    without it (what reached the stand-in is read off its two request handlers)."""
    gw, _ = setup
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
              "additionalProperties": False}
    seen: dict[str, list] = {"anthropic": [], "openai": []}
    message, openai_request = standin._message, standin._openai_request

    def on_message(body, **kwargs):
        seen["anthropic"].append(body.get("tools"))
        return message(body, **kwargs)

    def on_openai(req):
        key, body, model, refused = openai_request(req)
        seen["openai"].append(body.get("tools"))
        return key, body, model, refused

    monkeypatch.setattr(standin, "_message", on_message)
    monkeypatch.setattr(standin, "_openai_request", on_openai)
    _openai(gw, ANTHROPIC_TIER).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "Weather in Oslo, please (strict 1)."}],
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": schema, "strict": True}}])
    _anthropic(gw, STUDENT).messages.create(
        model="m", max_tokens=100, messages=[{"role": "user", "content": "Weather in Lima, please (strict 2)."}],
        tools=[{"name": "get_weather", "input_schema": schema, "strict": True}])
    assert seen["anthropic"] == [[{"name": "get_weather", "input_schema": schema, "strict": True}]]
    assert seen["openai"] == [[{"type": "function", "function": {"name": "get_weather", "parameters": schema}}]]
