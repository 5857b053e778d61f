"""Agent frameworks' tool loops through the gateway, unchanged but for their base URL: LangChain's ChatAnthropic
and ChatOpenAI (``bind_tools``, invoke and stream), the OpenAI Agents SDK (an ``Agent`` with a ``function_tool``
on ``OpenAIChatCompletionsModel``), Microsoft Agent Framework (``OpenAIChatClient``, the Responses API, with a
session kept on the gateway), Pydantic AI (``tool_plain`` on its OpenAI and Anthropic models) and, in
JavaScript, the Vercel AI SDK (``generateText`` / ``streamText`` with a tool on all three APIs). Each
sends the request fields its own code writes (``parallel_tool_calls``, ``strict`` schemas, ``stream_options``...)
and reads the answer with its own parser; the stand-in behind the gateway calls the tool the question names and
answers its result with ``"<name> returned: <result>"``. Routed to an Anthropic tier, or to the student (an
OpenAI-compatible tier) by task type, so the shapes are translated both ways.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from gateways import ROUTES, routed_gateway
from node_apps import NODE_TIMEOUT_S, require_node

@pytest.fixture(scope="module")
def base(standin, tmp_path_factory):
    with routed_gateway(standin, tmp_path_factory.mktemp("keys") / "keys.json") as gw:
        yield f"http://127.0.0.1:{gw.port}"


def _paid_apis(standin, since: int) -> set[str]:
    return {e.api for e in standin.log.paid()[since:]}


def _langchain_loop(model) -> tuple[list, str, list]:
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """The current weather of a city."""
        return f"-3 C in {city}"

    bound = model.bind_tools([get_weather])
    asked = [HumanMessage("Please use get_weather: is it cold in Oslo?")]
    ai = bound.invoke(asked)
    results = [ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"]) for call in ai.tool_calls]
    final = bound.invoke([*asked, ai, *results])
    streamed = None
    for chunk in bound.stream(asked):
        streamed = chunk if streamed is None else streamed + chunk
    return ai.tool_calls, final.content, streamed.tool_calls


@pytest.mark.parametrize("route", ["anthropic", "student"])
@pytest.mark.parametrize("api", ["ChatAnthropic", "ChatOpenAI"])
def test_langchain_binds_tools_invokes_and_streams(base, standin, api, route) -> None:
    if api == "ChatAnthropic":
        from langchain_anthropic import ChatAnthropic
        model = ChatAnthropic(model="claude-haiku-4-5", base_url=base, api_key="unused", max_retries=0,
                              default_headers=ROUTES[route])
    else:
        from langchain_openai import ChatOpenAI
        model = ChatOpenAI(model="gpt-5-mini", base_url=f"{base}/v1", api_key="unused", max_retries=0,
                           default_headers=ROUTES[route])
    since = len(standin.log.paid())
    calls, final, streamed = _langchain_loop(model)
    assert [(c["name"], c["args"]) for c in calls] == [("get_weather", {"city": "stand-in"})]
    assert final == "get_weather returned: -3 C in stand-in"
    assert [(c["name"], c["args"]) for c in streamed] == [("get_weather", {"city": "stand-in"})]
    assert _paid_apis(standin, since) == {"openai" if route == "student" else "anthropic"}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("api", ["ChatAnthropic", "ChatOpenAI-responses", "ChatOpenAI-chat"])
def test_langchain_searches_the_web_through_the_gateway(base, standin, api, stream) -> None:
    """LangChain's chat models with a web search tool bound (ChatAnthropic: Anthropic's server tool on the Messages
    API; ChatOpenAI on the Responses API: the hosted web_search tool) or ``web_search_options`` (ChatOpenAI on Chat
    Completions), invoked and streamed: the searched answer comes back, and where LangChain keeps them (its content
    blocks) the searches and their citations (two: the question wants two searches)."""
    question = f"What changed in the refund policy and in the shipping rules ({api}, {stream})?"
    if api == "ChatAnthropic":
        from langchain_anthropic import ChatAnthropic
        model = ChatAnthropic(model="claude-haiku-4-5", base_url=base, api_key="unused", max_retries=0).bind_tools(
            [{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}])
    elif api == "ChatOpenAI-responses":
        from langchain_openai import ChatOpenAI
        model = ChatOpenAI(model="gpt-5-mini", base_url=f"{base}/v1", api_key="unused", max_retries=0,
                           use_responses_api=True).bind_tools([{"type": "web_search"}])
    else:
        from langchain_openai import ChatOpenAI
        model = ChatOpenAI(model="gpt-4o-search-preview", base_url=f"{base}/v1", api_key="unused", max_retries=0,
                           model_kwargs={"web_search_options": {}})
    since = len(standin.log.paid())
    if stream:
        message = None
        for chunk in model.stream(question):
            message = chunk if message is None else message + chunk
    else:
        message = model.invoke(question)
    assert message.text.startswith("From the search results: ")
    blocks = [b for b in message.content if isinstance(b, dict)] if isinstance(message.content, list) else []
    cited = [c for b in blocks for c in (b.get("annotations") or b.get("citations") or [])]
    if api == "ChatAnthropic":
        assert [b["type"] for b in blocks].count("web_search_tool_result") == 2 and len(cited) == 2
    elif api == "ChatOpenAI-responses":
        assert [b["type"] for b in blocks].count("web_search_call") == 2 and len(cited) == 2
    assert _paid_apis(standin, since) == {"anthropic"}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("route", ["anthropic", "student"])
def test_a_microsoft_agent_framework_agent_keeps_its_session_on_the_gateway(base, standin, route, stream) -> None:
    """Agent Framework's ``OpenAIChatClient`` (the Responses API) with a tool and a session: the session lives on
    the gateway (each call after the first sends only its new items and ``previous_response_id``), the tool loop
    inside a run and a second run both continue from the stored responses."""
    import asyncio

    import openai
    from agent_framework import Agent
    from agent_framework.openai import OpenAIChatClient

    ran: list[str] = []
    headers = {**ROUTES[route], "x-costline-tenant": f"maf-{route}-{stream}"}

    def get_weather(city: str) -> str:
        """The current weather of a city."""
        ran.append(city)
        return f"-3 C in {city}"

    async def two_runs():
        client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, default_headers=headers)
        agent = Agent(client=OpenAIChatClient(model="gpt-5-mini", async_client=client), instructions="Be brief.",
                      tools=[get_weather])
        session = agent.create_session()
        if stream:
            updates = agent.run("Please use get_weather: is it cold in Oslo?", session=session, stream=True)
            _ = [update async for update in updates]  # the stream read to its end, as an app shows it
            first = await updates.get_final_response()
        else:
            first = await agent.run("Please use get_weather: is it cold in Oslo?", session=session)
        second = await agent.run("And how do I export my invoices?", session=session)
        return first, second, session.service_session_id

    since = len(standin.log.paid())
    first, second, last_response = asyncio.run(two_runs())
    assert ran == ["stand-in"] and first.text.endswith("get_weather returned: -3 C in stand-in")
    assert second.text
    reader = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, default_headers=headers)
    items = list(reader.responses.input_items.list(last_response, order="asc"))
    kinds = [i.type for i in items]
    assert kinds.count("function_call") == kinds.count("function_call_output") == 1  # each once
    assert items[0].content[0].text == "Please use get_weather: is it cold in Oslo?"
    assert items[-1].content[0].text == "And how do I export my invoices?"
    assert _paid_apis(standin, since) == {"openai" if route == "student" else "anthropic"}


@pytest.mark.parametrize("route", ["anthropic", "student"])
def test_an_openai_agents_sdk_agent_runs_its_function_tool(base, standin, route) -> None:
    from agents import Agent, OpenAIChatCompletionsModel, RunConfig, Runner, function_tool
    from openai import AsyncOpenAI

    ran: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The current weather of a city."""
        ran.append(city)
        return f"-3 C in {city}"

    client = AsyncOpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, default_headers=ROUTES[route])
    agent = Agent(name="weather", instructions="Be brief.", tools=[get_weather],
                  model=OpenAIChatCompletionsModel(model="gpt-5-mini", openai_client=client))
    since = len(standin.log.paid())
    result = Runner.run_sync(agent, "Please use get_weather: is it cold in Oslo?",
                             run_config=RunConfig(tracing_disabled=True))
    assert ran == ["stand-in"]
    assert result.final_output == "get_weather returned: -3 C in stand-in"
    assert _paid_apis(standin, since) == {"openai" if route == "student" else "anthropic"}


@pytest.mark.parametrize("route", ["anthropic", "student"])
@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_a_pydantic_ai_agent_runs_its_tool(base, standin, api, route) -> None:
    from pydantic_ai import Agent

    if api == "openai":
        from openai import AsyncOpenAI
        from pydantic_ai.models.openai import OpenAIChatModel
        from pydantic_ai.providers.openai import OpenAIProvider
        client = AsyncOpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, default_headers=ROUTES[route])
        model = OpenAIChatModel("gpt-5-mini", provider=OpenAIProvider(openai_client=client))
    else:
        from anthropic import AsyncAnthropic
        from pydantic_ai.models.anthropic import AnthropicModel
        from pydantic_ai.providers.anthropic import AnthropicProvider
        client = AsyncAnthropic(base_url=base, api_key="unused", max_retries=0, default_headers=ROUTES[route])
        model = AnthropicModel("claude-haiku-4-5", provider=AnthropicProvider(anthropic_client=client))
    agent = Agent(model)
    ran: list[str] = []

    @agent.tool_plain
    def get_weather(city: str) -> str:
        """The current weather of a city."""
        ran.append(city)
        return f"-3 C in {city}"

    since = len(standin.log.paid())
    result = agent.run_sync("Please use get_weather: is it cold in Oslo?")
    assert ran == ["stand-in"]
    assert result.output == "get_weather returned: -3 C in stand-in"
    assert _paid_apis(standin, since) == {"openai" if route == "student" else "anthropic"}


@pytest.mark.parametrize("route", ["anthropic", "student"])
def test_a_vercel_ai_sdk_app_searches_the_web_through_the_gateway(base, standin, route) -> None:
    """tests/js/aisdk/gateway_search.mjs: generateText and streamText with @ai-sdk/anthropic's web search tool (the
    Messages API's server tool, carried as it came) and @ai-sdk/openai's (the Responses API's hosted tool, turned
    into Anthropic's): the SDK reads each search as a provider-executed tool call and each cited result as a
    source. The question wants two searches; the openai one asks for a low search context: one."""
    app = Path(__file__).parent / "js" / "aisdk"
    node = require_node(app, ("ai", "@ai-sdk/anthropic", "@ai-sdk/openai"))
    since = len(standin.log.paid())
    done = subprocess.run([node, str(app / "gateway_search.mjs"), "--gateway", base,
                           "--task-type", ROUTES[route]["x-costline-task-type"]],
                          capture_output=True, text=True, timeout=NODE_TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(report) == sorted(f"{api}/{mode}" for api in ("messages", "responses") for mode in ("generate", "stream"))
    for case, got in report.items():
        assert "error" not in got, (case, got)
        n = 2 if case.startswith("messages") else 1
        assert got["searches"] == ["web_search"] * n, (case, got)
        assert got["sources"] == [f"https://standin.invalid/search/{k}" for k in range(1, n + 1)], (case, got)
        assert got["text"].startswith("From the search results: "), (case, got)
    assert _paid_apis(standin, since) == {"anthropic"}  # the student cannot search: never asked


@pytest.mark.parametrize("route", ["anthropic", "student"])
def test_a_vercel_ai_sdk_agent_runs_its_tool_on_all_three_apis(base, route) -> None:
    """tests/js/aisdk/gateway_agent.mjs: generateText and streamText with a tool and up to three steps, on
    @ai-sdk/anthropic (Messages), @ai-sdk/openai's default model (Responses) and its .chat model (Chat
    Completions), pointed at the gateway by base URL only."""
    app = Path(__file__).parent / "js" / "aisdk"
    node = require_node(app, ("ai", "@ai-sdk/anthropic", "@ai-sdk/openai"))
    done = subprocess.run([node, str(app / "gateway_agent.mjs"), "--gateway", base,
                           "--task-type", ROUTES[route]["x-costline-task-type"]],
                          capture_output=True, text=True, timeout=NODE_TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(report) == sorted(f"{api}/{mode}" for api in ("messages", "responses", "chat")
                                    for mode in ("generate", "stream"))
    for case, got in report.items():
        assert "error" not in got, (case, got)
        assert got["ran"] == ["stand-in"] and got["steps"] == 2, (case, got)
        assert got["text"].endswith("get_weather returned: -3 C in stand-in"), (case, got)
