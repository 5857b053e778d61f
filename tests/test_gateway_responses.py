"""The OpenAI Responses API on the gateway (``POST /v1/responses``), driven by the real ``openai`` SDK
(``responses.create`` and ``responses.stream``) and by the OpenAI Agents SDK's default model (which calls the
Responses API), against Gateway → Pipeline → the local stand-ins: text answers, the cache (one entry whichever
API asked), a tool loop on an Anthropic tier and on the OpenAI-compatible student, ``max_output_tokens`` cuts,
and what the gateway cannot carry refused with a 400 naming the parameter before any model call.
"""

from __future__ import annotations

import asyncio

import openai
import pytest
from gateways import ROUTES, DictCache, routed_gateway

from costline.serving.gateway.app import CACHE_MODEL, STREAM_MODE_HEADER, Gateway

TOOLS = [{"type": "function", "name": "get_weather", "description": "The current weather of a city.", "strict": True,
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                         "additionalProperties": False}}]
ASK_TOOL = "Please use get_weather: is it cold in Oslo?"


@pytest.fixture(scope="module")
def setup(standin, tmp_path_factory):
    cache = DictCache()
    with routed_gateway(standin, tmp_path_factory.mktemp("keys") / "keys.json", cache=cache) as gw:
        yield gw, cache


def _client(gw: Gateway, route: str = "anthropic", tenant: str = "t") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{gw.port}/v1", api_key="unused", max_retries=0,
                         default_headers={**ROUTES[route], "x-costline-tenant": tenant})


@pytest.mark.parametrize("stream", [False, True])
def test_a_text_answer_then_the_same_question_from_the_cache(setup, standin, stream) -> None:
    gw, _ = setup
    client = _client(gw, tenant=f"text-{stream}")
    question = f"How do I export my invoices as CSV ({stream})?"

    def ask():
        if stream:
            with client.responses.stream(model="gpt-5-mini", input=question, instructions="Be brief.") as s:
                deltas = "".join(e.delta for e in s if e.type == "response.output_text.delta")
                final = s.get_final_response()
            assert deltas == final.output_text
            return final
        return client.responses.create(model="gpt-5-mini", input=question, instructions="Be brief.")

    paid = len(standin.log.paid())
    first = ask()
    assert first.status == "completed" and first.model != CACHE_MODEL and first.output_text
    assert first.usage.input_tokens > 0 and first.usage.output_tokens > 0
    assert [o.type for o in first.output] == ["message"]
    second = ask()
    assert second.model == CACHE_MODEL and second.output_text == first.output_text
    assert second.usage.input_tokens == 0 and second.usage.output_tokens == 0
    assert len(standin.log.paid()) == paid + 1


def test_one_cache_entry_whichever_openai_api_asked(setup, standin) -> None:
    gw, _ = setup
    client = _client(gw, tenant="both-apis")
    question = "How do I change the email address on my account?"
    answer = client.responses.create(model="gpt-5-mini", input=[{"role": "user", "content": question}])
    assert answer.model != CACHE_MODEL
    chat = client.chat.completions.create(model="gpt-5-mini", messages=[{"role": "user", "content": question}])
    assert chat.model == CACHE_MODEL and chat.choices[0].message.content == answer.output_text


@pytest.mark.parametrize("route", ["anthropic", "student"])
@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_loop(setup, standin, route, stream) -> None:
    gw, cache = setup
    client = _client(gw, route, tenant="tools")
    stored = dict(cache.entries)
    paid = len(standin.log.paid())
    if stream:
        with client.responses.stream(model="gpt-5-mini", input=ASK_TOOL, tools=TOOLS) as s:
            argument_deltas = "".join(e.delta for e in s if e.type == "response.function_call_arguments.delta")
            first = s.get_final_response()
        assert argument_deltas == '{"city": "stand-in"}'
    else:
        first = client.responses.create(model="gpt-5-mini", input=ASK_TOOL, tools=TOOLS)
    calls = [o for o in first.output if o.type == "function_call"]
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", '{"city": "stand-in"}')]
    follow = [{"role": "user", "content": ASK_TOOL}, *[o.model_dump(exclude_none=True) for o in first.output],
              {"type": "function_call_output", "call_id": calls[0].call_id, "output": "-3 C"}]
    final = client.responses.create(model="gpt-5-mini", input=follow, tools=TOOLS)
    assert final.output_text == "get_weather returned: -3 C"
    assert [o.type for o in final.output] == ["message"]
    assert cache.entries == stored  # nothing of a tool loop is stored
    assert {e.api for e in standin.log.paid()[paid:]} == {"openai" if route == "student" else "anthropic"}


def weather_agent(gw: Gateway, ran: list[str], headers: dict[str, str]):
    """An OpenAI Agents SDK agent on the gateway's Responses API (the SDK's default model) with a ``get_weather``
    tool that notes each city it ran for; a new client each time (an async client's connections belong to one
    event loop)."""
    from agents import Agent, function_tool
    from agents.models.openai_responses import OpenAIResponsesModel

    @function_tool
    def get_weather(city: str) -> str:
        """The current weather of a city."""
        ran.append(city)
        return f"-3 C in {city}"

    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{gw.port}/v1", api_key="unused", max_retries=0,
                                default_headers=headers)
    return Agent(name="weather", instructions="Be brief.", tools=[get_weather],
                 model=OpenAIResponsesModel(model="gpt-5-mini", openai_client=client))


@pytest.mark.parametrize("route", ["anthropic", "student"])
def test_the_openai_agents_sdk_default_model_runs_through_the_responses_api(setup, route) -> None:
    from agents import RunConfig, Runner

    gw, _ = setup
    ran: list[str] = []

    def agent():
        return weather_agent(gw, ran, ROUTES[route])

    config = RunConfig(tracing_disabled=True)
    result = Runner.run_sync(agent(), ASK_TOOL, run_config=config)
    assert result.final_output == "get_weather returned: -3 C in stand-in"

    async def streamed() -> str:
        run = Runner.run_streamed(agent(), ASK_TOOL, run_config=config)
        async for _ in run.stream_events():
            pass
        return run.final_output

    assert asyncio.run(streamed()) == "get_weather returned: -3 C in stand-in"
    assert ran == ["stand-in", "stand-in"]


LEAD = "From the search results: "  # the stand-in's uncited text before a searched answer's cited one


@pytest.mark.parametrize("route", ["anthropic", "student"])
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("tool, include, searches", [
    ({"type": "web_search"}, [], 2),
    ({"type": "web_search_preview", "search_context_size": "low",
      "user_location": {"type": "approximate", "city": "Oslo", "country": "NO"}}, ["web_search_call.action.sources"], 1),
    ({"type": "web_search", "filters": {"allowed_domains": ["standin.invalid"]}, "search_context_size": "high"},
     ["web_search_call.action.sources"], 2),
], ids=["default", "low-located-sources", "filtered"])
def test_the_web_search_tool_searches_on_an_anthropic_tier(setup, standin, route, stream, tool, include,
                                                           searches) -> None:
    """OpenAI's web search tool becomes Anthropic's (the stand-in refuses one of another shape): a ``web_search_call``
    item per search before the message (its query; its sources when ``include`` asks), the message's citations as
    ``url_citation`` annotations spanning the cited text; streamed, the SDK's events say the same; never cached;
    routed to the student, it goes up without a paid student call. (It was a 400 before.)"""
    gw, cache = setup
    client = _client(gw, route, tenant="search")
    question = f"What changed in the refund policy and in the shipping rules ({route}, {stream}, {searches})?"
    stored, lookups, paid = dict(cache.entries), cache.lookups, len(standin.log.paid())
    kwargs = dict(model="gpt-5-mini", input=question, tools=[tool], include=include)
    if stream:
        with client.responses.stream(**kwargs) as s:
            events = list(s)
            response = s.get_final_response()
        added = [e.annotation for e in events if e.type == "response.output_text.annotation.added"]
        assert [(a.url, a.start_index, a.end_index) for a in added] == [
            (f"https://standin.invalid/search/{n}", len(LEAD), len(response.output_text))
            for n in range(1, searches + 1)]
        kinds = [e.type for e in events]
        assert kinds.count("response.web_search_call.completed") == searches
        assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == response.output_text
    else:
        response = client.responses.create(**kwargs)
    assert [o.type for o in response.output] == ["web_search_call"] * searches + ["message"]
    calls, message = response.output[:-1], response.output[-1]
    assert all(c.status == "completed" and c.action.type == "search" and c.action.query for c in calls)
    if include:
        assert [[src.url for src in c.action.sources] for c in calls] == [
            [f"https://standin.invalid/search/{n}"] for n in range(1, searches + 1)]
    else:
        assert all(c.action.sources is None for c in calls)
    text = response.output_text
    assert text.startswith(LEAD) and len(text) > len(LEAD)
    assert [(a.type, a.url, a.title, a.start_index, a.end_index) for a in message.content[0].annotations] == [
        ("url_citation", f"https://standin.invalid/search/{n}", f"Stand-in result {n}", len(LEAD), len(text))
        for n in range(1, searches + 1)]
    assert [e.api for e in standin.log.paid()[paid:]] == ["anthropic"]
    assert cache.entries == stored and cache.lookups == lookups
    # a next turn that sends the whole conversation back (no previous_response_id), the search items included
    follow = [{"role": "user", "content": question}, *[o.model_dump(exclude_none=True) for o in response.output],
              {"role": "user", "content": "Thanks. Is that the same for refunds of annual plans?"}]
    assert client.responses.create(model="gpt-5-mini", input=follow, tools=[tool]).output_text


@pytest.mark.parametrize("extra, searches", [
    ({"tool_choice": "required"}, 2),  # the search alone may be required
    ({"tool_choice": {"type": "web_search_preview"}, "tools": [*TOOLS, {"type": "web_search_preview"}]}, 2),
    ({"tool_choice": {"type": "web_search"}}, 2),  # what the Agents SDK sends for tool_choice="web_search"
    ({"max_tool_calls": 1}, 1),  # caps the built-in tool's calls: one search, not the two wanted
], ids=["required", "forced-preview", "forced", "max-tool-calls"])
def test_the_web_search_tool_may_be_forced_and_capped(setup, standin, extra, searches) -> None:
    gw, _ = setup
    question = f"What changed in the refund policy and in the shipping rules ({sorted(extra)}, {searches})?"
    out = _client(gw, tenant="forced").responses.create(
        **{"model": "gpt-5-mini", "input": question, "tools": [{"type": "web_search", "search_context_size": "high"}],
           **extra})
    assert [o.type for o in out.output] == ["web_search_call"] * searches + ["message"]
    assert len(out.output[-1].content[0].annotations) == searches


def test_the_openai_agents_sdk_web_search_tool_runs_through_the_gateway(setup, standin) -> None:
    """The OpenAI Agents SDK's hosted ``WebSearchTool`` (what an agent on OpenAI's default model searches with) runs
    on an Anthropic tier through the gateway: the agent's run sees the search and the answer, and a second turn
    (the first run's items as its input, as ``to_input_list()`` gives them) runs too."""
    from agents import Agent, RunConfig, Runner, WebSearchTool
    from agents.models.openai_responses import OpenAIResponsesModel

    gw, _ = setup
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{gw.port}/v1", api_key="unused", max_retries=0,
                                default_headers=ROUTES["anthropic"])
    agent = Agent(name="researcher", instructions="Be brief.", tools=[WebSearchTool(search_context_size="low")],
                  model=OpenAIResponsesModel(model="gpt-5-mini", openai_client=client))
    paid = len(standin.log.paid())
    result = Runner.run_sync(agent, "What changed in the refund policy this year?",
                             run_config=RunConfig(tracing_disabled=True))
    assert result.final_output.startswith(LEAD)
    kinds = [item.type for item in result.new_items]
    assert kinds == ["tool_call_item", "message_output_item"]  # the search, then the answer
    assert [e.api for e in standin.log.paid()[paid:]] == ["anthropic"]
    follow = [*result.to_input_list(), {"role": "user", "content": "And for annual plans?"}]
    again = Runner.run_sync(agent, follow, run_config=RunConfig(tracing_disabled=True))
    assert again.final_output.startswith(LEAD)


def test_an_answer_cut_at_max_output_tokens_is_incomplete(setup) -> None:
    gw, _ = setup
    cut = _client(gw, tenant="cut").responses.create(
        model="gpt-5-mini", input="Explain in detail how refunds for annual plans are calculated.", max_output_tokens=3)
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"
    assert cut.usage.output_tokens == 3


def test_a_streamed_tool_request_is_buffered_and_a_text_one_says_its_mode(setup) -> None:
    gw, _ = setup
    raw = _client(gw, tenant="modes").responses.with_raw_response.create(
        model="gpt-5-mini", input=ASK_TOOL, tools=TOOLS, stream=True)
    assert raw.headers[STREAM_MODE_HEADER] == "buffered"
    kinds = [event.type for event in raw.parse()]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert kinds.count("response.output_item.done") == 2  # the text, the call


@pytest.mark.parametrize("extra, param", [
    ({"previous_response_id": "resp_123"}, "previous_response_id"),  # never stored
    ({"previous_response_id": 123}, "previous_response_id"),
    ({"conversation": 123}, "conversation"), ({"conversation": {"id": ""}}, "conversation"),
    ({"background": True}, "background"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"include": ["message.output_text.logprobs"]}, "include"),
    ({"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "tools[0]"),
    ({"tools": [{"type": "web_search", "search_context_size": "max"}]}, "tools[0]"),
    ({"tools": [{"type": "web_search", "external_web_access": False}]}, "tools[0]"),
    ({"tools": [{"type": "web_search", "search_content_types": ["image"]}]}, "tools[0]"),
    ({"tools": [{"type": "web_search", "user_location": {"type": "approximate", "country": "Norway"}}]}, "tools[0]"),
    ({"tools": [{"type": "web_search", "filters": {"allowed_domains": "example.com"}}]}, "tools[0]"),
    ({"tools": [{"type": "web_search"}, {"type": "web_search_preview"}]}, "tools[1]"),
    ({"tools": [{"type": "web_search"}, {"type": "function", "name": "web_search", "parameters": {}}]}, "tools"),
    ({"tools": TOOLS, "tool_choice": {"type": "web_search"}}, "tool_choice"),  # no search tool to force
    ({"tools": [{"type": "web_search"}], "max_tool_calls": "two"}, "max_tool_calls"),
    ({"tools": [{"type": "function", "name": "bad name", "parameters": {}}]}, "tools"),
    ({"text": {"format": {"type": "json_schema", "schema": {"type": "object"}}}}, "text.format.name"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input[0].content[0]"),
    ({"input": [{"role": "user", "content": "hi"}, {"type": "function_call", "call_id": "c", "name": "f",
                                                    "arguments": "{broken"}]}, "input[1]"),
    ({"input": [{"role": "assistant", "content": "hello"}]}, "input"),
    ({"max_output_tokens": 0}, "max_output_tokens"),
    ({"reasoning": {"effort": "extreme"}}, "reasoning.effort"),
    ({"temperature": 3}, "temperature"),
    ({"text": {"verbosity": "high"}}, "text.verbosity"),  # no tier's API has a verbosity control
    ({"moderation": {"model": "omni-moderation-latest"}}, "moderation"),
    ({"extra_body": {"definitely_not_a_field": 1}}, "definitely_not_a_field"),  # refused as OpenAI refuses it
])
def test_what_cannot_be_carried_is_a_400_naming_the_param(setup, standin, extra, param) -> None:
    gw, _ = setup
    paid = len(standin.log.paid())
    with pytest.raises(openai.BadRequestError) as err:
        _client(gw).responses.create(**{"model": "gpt-5-mini", "input": "How do I reset my password?", **extra})
    assert err.value.body["param"] == param and err.value.body["type"] == "invalid_request_error"
    assert len(standin.log.paid()) == paid


def test_input_images_reach_a_tier_as_image_blocks(setup, standin) -> None:
    """An ``input_image`` (a data URL) reaches the text-only student as an image part: refused there as vLLM
    refuses it, and escalated to a tier that reads images."""
    gw, _ = setup
    entries = len(standin.log.entries())
    raw = _client(gw, "student", tenant="images").responses.with_raw_response.create(
        model="gpt-5-mini", input=[{"role": "user", "content": [
            {"type": "input_text", "text": "Which label fits this picture?"},
            {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}]}])
    assert raw.headers["x-costline-routed-tier"] == "student" and raw.headers["x-costline-tier"] != "student"
    assert raw.parse().output_text
    logged = standin.log.entries()[entries:]
    assert (logged[0].api, logged[0].status) == ("openai", 400) and logged[-1].api == "anthropic"


def test_with_keys_the_key_decides_the_tenant_on_this_route_too(standin, tmp_path) -> None:
    from costline.serving.gateway.auth import KeyStore

    keyfile = tmp_path / "keys.json"
    _, key = KeyStore(keyfile).add("acme")
    with routed_gateway(standin, keyfile) as gw:
        base = f"http://127.0.0.1:{gw.port}/v1"
        with pytest.raises(openai.AuthenticationError) as err:
            openai.OpenAI(base_url=base, api_key="not-a-key", max_retries=0).responses.create(
                model="m", input="How do I reset my password?")
        assert "error" in err.value.response.json()  # OpenAI's error format
        acme = openai.OpenAI(base_url=base, api_key=key, max_retries=0)
        assert acme.responses.create(model="m", input="How do I reset my password?").output_text
        with pytest.raises(openai.PermissionDeniedError):
            acme.responses.create(model="m", input="How do I reset my password?", metadata={"tenant": "globex"})


@pytest.mark.parametrize("content, want", [
    # a search and its result: completed, its id from the search's own
    ([{"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "q"}},
      {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": [{"url": "https://a.example"}]}],
     [("ws_srvtoolu_1", "completed", "q", ["https://a.example"])]),
    # the result an error object (the API's web_search_tool_result_error): failed
    ([{"type": "server_tool_use", "id": "srvtoolu_2", "name": "web_search", "input": {"query": "q"}},
      {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_2",
       "content": {"type": "web_search_tool_result_error", "error_code": "max_uses_exceeded"}}],
     [("ws_srvtoolu_2", "failed", "q", [])]),
    # a proxy's odd blocks: an id that is no string, a query that is none, no result at all — failed, never a crash
    ([{"type": "server_tool_use", "id": ["x"], "name": "web_search", "input": {"query": 7}},
      {"type": "web_search_tool_result", "tool_use_id": ["x"], "content": []}],
     [("ws_costline_r1_0", "failed", "", [])]),
    ([{"type": "server_tool_use", "id": "srvtoolu_3", "name": "web_fetch", "input": {}}], []),  # not a search
])
def test_web_search_call_items_of_an_answer(content, want) -> None:
    from costline.serving.backends import Reply
    from costline.serving.gateway.responses_api import _items
    from costline.serving.pipeline import Answer

    reply = Reply("the answer", "budget", "m", "end_turn", content=(*content, {"type": "text", "text": "the answer"}))
    answer = Answer("the answer", "budget", "m", "budget", True, request_id="r1", reply=reply)
    twice = [_items("resp_costline_r1", answer, sources=True) for _ in range(2)]
    assert twice[0] == twice[1]  # built the same each time: the streamed items and the final response agree
    calls = [i for i in twice[0] if i["type"] == "web_search_call"]
    assert [(c["id"], c["status"], c["action"]["query"], [s["url"] for s in c["action"]["sources"]])
            for c in calls] == want
    assert twice[0][-1]["type"] == "message"


# -- stored responses: previous_response_id ------------------------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True])
def test_previous_response_id_continues_the_stored_conversation(setup, standin, stream) -> None:
    """The second request sends only its new question and the first response's id: the model reads the whole
    conversation — the same input tokens as the same conversation sent whole, counted by the stand-in (another
    tenant, so neither is a cache hit of the other); the earlier instructions are not carried over."""
    gw, _ = setup
    client = _client(gw, tenant=f"stored-{stream}")
    first_q, second_q = f"How do I export my invoices ({stream})?", "And can I export them as PDF instead?"

    def ask(client, **kwargs):
        if stream:
            with client.responses.stream(model="gpt-5-mini", **kwargs) as s:
                return s.get_final_response()
        return client.responses.create(model="gpt-5-mini", **kwargs)

    first = ask(client, input=first_q, instructions="Be brief.")
    assert first.store is True
    entries = len(standin.log.entries())
    second = ask(client, input=second_q, previous_response_id=first.id)
    assert second.output_text and second.previous_response_id == first.id
    continued = standin.log.entries()[entries:]
    whole = _client(gw, tenant=f"whole-{stream}").responses.create(model="gpt-5-mini", input=[
        {"role": "user", "content": first_q}, {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": second_q}])
    sent_whole = standin.log.entries()[-1]
    assert whole.output_text == second.output_text
    assert [e.input_tokens for e in continued] == [sent_whole.input_tokens]


def test_a_tool_loop_continues_from_the_stored_call(setup, standin) -> None:
    """The Responses API's own tool loop: the second request holds only the function_call_output and the id of the
    response that called the tool."""
    gw, _ = setup
    client = _client(gw, tenant="stored-tools")
    first = client.responses.create(model="gpt-5-mini", input=ASK_TOOL, tools=TOOLS)
    call = next(o for o in first.output if o.type == "function_call")
    final = client.responses.create(model="gpt-5-mini", tools=TOOLS, previous_response_id=first.id,
                                    input=[{"type": "function_call_output", "call_id": call.call_id, "output": "-3 C"}])
    assert final.output_text == "get_weather returned: -3 C"


@pytest.mark.parametrize("how", ["store false", "another tenant"])
def test_a_response_not_stored_or_not_yours_cannot_be_continued(setup, how) -> None:
    gw, _ = setup
    first = _client(gw, tenant="owner").responses.create(model="gpt-5-mini", input="How do I close my account?",
                                                          store=how != "store false")
    assert first.store is (how != "store false")
    asker = _client(gw, tenant="owner" if how == "store false" else "intruder")
    with pytest.raises(openai.BadRequestError) as err:
        asker.responses.create(model="gpt-5-mini", input="And reopen it?", previous_response_id=first.id)
    assert err.value.body["param"] == "previous_response_id" and "not found" in err.value.body["message"]


def test_the_openai_agents_sdk_keeps_its_conversation_on_the_gateway(setup, standin) -> None:
    """The Agents SDK's server-side conversation mode (``auto_previous_response_id``): each model call sends only its
    new items and the previous response's id — a tool loop within the run, then a second run continuing the first."""
    from agents import RunConfig, Runner

    gw, _ = setup
    ran: list[str] = []
    agent = weather_agent(gw, ran, {**ROUTES["anthropic"], "x-costline-tenant": "agents-stored"})
    config = RunConfig(tracing_disabled=True)
    first = Runner.run_sync(agent, ASK_TOOL, run_config=config, auto_previous_response_id=True)
    assert first.final_output == "get_weather returned: -3 C in stand-in" and ran == ["stand-in"]
    again = Runner.run_sync(agent, "Thanks. And tomorrow?", run_config=config,
                            previous_response_id=first.last_response_id)
    assert again.final_output


def test_a_streamed_response_is_stored_before_it_says_it_is_complete(setup) -> None:
    """A client may continue the moment it reads ``response.completed`` (the Agents SDK may close the stream
    there): the response is stored by then."""
    gw, _ = setup
    client = _client(gw, tenant="stored-early")
    found = None
    with client.responses.stream(model="gpt-5-mini", input="How do I rename a project?") as s:
        for event in s:
            if event.type == "response.completed":
                found = gw.stored_responses.get("stored-early", event.response.id)
                assert event.response.store is True
                break
    assert found is not None and found["input"][0]["content"] == [{"type": "input_text",
                                                                   "text": "How do I rename a project?"}]


def test_the_system_messages_of_the_input_are_carried_over_and_the_instructions_are_not(setup, standin) -> None:
    """As in OpenAI's API: a developer message in the input is part of the conversation a continuation reads; the
    request's ``instructions`` are not — the continuation reads as many input tokens as the conversation sent whole
    without them (counted by the stand-in)."""
    gw, _ = setup
    developer = {"role": "developer", "content": "Always answer in French, and name the page of the manual."}
    first = _client(gw, tenant="stored-dev").responses.create(
        model="gpt-5-mini", instructions="Be brief and polite, and never mention any competitor.",
        input=[developer, {"role": "user", "content": "hi"}])
    stored = gw.stored_responses.get("stored-dev", first.id)
    assert [(i["role"], i["content"][0]["text"]) for i in stored["input"]] == [
        ("developer", developer["content"]), ("user", "hi")]
    assert stored["response"]["instructions"].startswith("Be brief")
    entries = len(standin.log.entries())
    _client(gw, tenant="stored-dev").responses.create(model="gpt-5-mini", input="How do I reset my password?",
                                                      previous_response_id=first.id)
    continued = standin.log.entries()[entries:]
    _client(gw, tenant="stored-dev-whole").responses.create(model="gpt-5-mini", input=[
        developer, {"role": "user", "content": "hi"}, {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "How do I reset my password?"}])
    assert [e.input_tokens for e in continued] == [standin.log.entries()[-1].input_tokens]


@pytest.mark.parametrize("resent", ["the call", "the whole output", "the call without its id"])
def test_an_output_sent_again_with_the_call_output_is_not_repeated(setup, standin, resent) -> None:
    """A client that sends the stored response's output back with the tool's output (``input=[*resp.output,
    output]``, or just the function_call) continues as one that sends the output alone: the same input tokens at
    the stand-in (which, as Anthropic's API, refuses a conversation holding one tool_use id twice), and the items
    listed once each, so the SDK's paging ends."""
    gw, _ = setup
    client = _client(gw, tenant=f"stored-resent-{resent}")
    first = client.responses.create(model="gpt-5-mini", input=ASK_TOOL, tools=TOOLS)
    call = next(o for o in first.output if o.type == "function_call")
    output = {"type": "function_call_output", "call_id": call.call_id, "output": "-3 C"}
    sent_back = {"the call": [call.model_dump(exclude_none=True)],
                 "the whole output": [o.model_dump(exclude_none=True) for o in first.output],
                 "the call without its id": [call.model_dump(exclude_none=True, exclude={"id"})]}[resent]
    entries = len(standin.log.entries())
    alone = client.responses.create(model="gpt-5-mini", tools=TOOLS, previous_response_id=first.id, input=[output])
    again = client.responses.create(model="gpt-5-mini", tools=TOOLS, previous_response_id=first.id,
                                    input=[*sent_back, output])
    assert alone.output_text == again.output_text == "get_weather returned: -3 C"
    sent = standin.log.entries()[entries:]
    assert len(sent) == 2 and sent[0].input_tokens == sent[1].input_tokens
    listed = list(client.responses.input_items.list(again.id, order="asc", limit=1))
    assert [i.type for i in listed] == ["message", *(o.type for o in first.output), "function_call_output"]
    assert len({i.id for i in listed}) == len(listed)
    assert [i.type for i in first.output].count("function_call") == 1


@pytest.mark.parametrize("stream", [False, True])
def test_a_stored_response_is_read_back_listed_and_deleted(setup, stream) -> None:
    """``responses.retrieve``, ``responses.input_items.list`` (the SDK's own paging) and ``responses.delete`` of the
    real openai SDK: the response as it was answered; the items it answered — the first question, the first answer,
    the second question — newest first unless ``order=asc``; then gone: not read, not listed, not continued."""
    gw, _ = setup
    client = _client(gw, tenant=f"read-back-{stream}")
    first = client.responses.create(model="gpt-5-mini", input=f"How do I archive a project ({stream})?")

    def ask(**kwargs):
        if stream:
            with client.responses.stream(model="gpt-5-mini", **kwargs) as s:
                return s.get_final_response()
        return client.responses.create(model="gpt-5-mini", **kwargs)

    second = ask(input=[{"role": "user", "content": [{"type": "input_text", "text": "And restore it?"}]}],
                 previous_response_id=first.id, metadata={"ticket": "T-7"})
    read = client.responses.retrieve(second.id)
    assert read.model_dump(exclude={"output"}) == second.model_dump(exclude={"output"})  # a stream's has `parsed`
    assert [(o.id, o.content[0].text) for o in read.output] == [(o.id, o.content[0].text) for o in second.output]
    assert read.store is True and read.previous_response_id == first.id and read.metadata == {"ticket": "T-7"}
    newest_first = client.responses.input_items.list(second.id)
    texts = [(i.role, i.content[0].text) for i in newest_first.data]
    assert texts == [("user", "And restore it?"), ("assistant", first.output_text),
                     ("user", f"How do I archive a project ({stream})?")]
    assert newest_first.data[1].id == first.output[0].id and not newest_first.has_more
    paged = list(client.responses.input_items.list(second.id, order="asc", limit=1))  # the SDK follows `after`
    assert [(i.role, i.content[0].text) for i in paged] == texts[::-1]
    assert len({i.id for i in paged}) == 3
    deleted = client.responses.delete(second.id)
    assert deleted is None  # the SDK reads nothing back; the answer is the API's {"id", "object", "deleted": true}
    for gone in (lambda: client.responses.retrieve(second.id), lambda: client.responses.input_items.list(second.id),
                 lambda: client.responses.delete(second.id)):
        with pytest.raises(openai.NotFoundError):
            gone()
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="gpt-5-mini", input="And then?", previous_response_id=second.id)
    assert client.responses.retrieve(first.id).id == first.id  # the one it continued stays


def test_another_tenant_cannot_read_list_or_delete_a_stored_response(setup) -> None:
    gw, _ = setup
    owner, intruder = _client(gw, tenant="keeper"), _client(gw, tenant="snooper")
    kept = owner.responses.create(model="gpt-5-mini", input="What is my account's recovery code?")
    for look in (lambda: intruder.responses.retrieve(kept.id), lambda: intruder.responses.input_items.list(kept.id),
                 lambda: intruder.responses.delete(kept.id)):
        with pytest.raises(openai.NotFoundError):
            look()
    assert owner.responses.retrieve(kept.id).output_text == kept.output_text


@pytest.mark.parametrize("path, param", [
    ("/input_items?limit=0", "limit"), ("/input_items?limit=" + "1" * 5000, "limit"), ("/input_items?limit=101", "limit"), ("/input_items?limit=x", "limit"),
    ("/input_items?order=sideways", "order"), ("/input_items?after=msg_nope", "after"), ("?stream=true", "stream"),
])
def test_reading_a_stored_response_with_a_bad_query_is_a_400_naming_it(setup, path, param) -> None:
    import httpx

    gw, _ = setup
    client = _client(gw, tenant="bad-query")
    kept = client.responses.create(model="gpt-5-mini", input="How do I export my contacts?")
    got = httpx.get(f"http://127.0.0.1:{gw.port}/v1/responses/{kept.id}{path}",
                    headers={**ROUTES["anthropic"], "x-costline-tenant": "bad-query"})
    assert got.status_code == 400 and got.json()["error"]["param"] == param


@pytest.mark.parametrize("strict", [True, False, None])
def test_a_function_tools_strict_is_carried_as_sent(strict) -> None:
    """The Responses API's function tools say ``strict`` at the top level; it reaches the Messages tool as sent
    (absent: absent; OpenAI's own default is not imposed on other providers' tiers)."""
    from costline.serving.gateway.responses_api import _tools

    tool = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}
    tools, _ = _tools({"tools": [{**tool, **({"strict": strict} if strict is not None else {})}]})
    assert tools == ({"name": "get_weather", "input_schema": {"type": "object", "properties": {}},
                      **({"strict": strict} if strict is not None else {})},)


@pytest.mark.parametrize("given, want", [
    # two messages of one role are one turn of two paragraphs, never one run-on text
    ([{"role": "user", "content": "Our plan is Pro."}, {"role": "user", "content": "Can I add seats?"}],
     [{"role": "user", "content": "Our plan is Pro.\n\nCan I add seats?"}]),
    ([{"role": "user", "content": [{"type": "input_text", "text": "Can I "}, {"type": "input_text", "text": "add seats?"}]}],
     [{"role": "user", "content": "Can I add seats?"}]),  # the parts of one message are one text
    ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ""}, {"role": "user", "content": "Seats?"}],
     [{"role": "user", "content": "Hi\n\nSeats?"}]),  # an empty answer between them is left out
])
def test_adjacent_messages_of_one_role_are_paragraphs_of_one_turn(given, want) -> None:
    from costline.serving.gateway.responses_api import turns_of

    assert turns_of(given)[1] == want
