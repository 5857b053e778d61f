"""LiteLLM's SDK (``litellm.completion``), the most used multi-provider client (DSPy and many agent frameworks call
it), pointed at the gateway by ``api_base`` only: its ``anthropic/`` provider speaks the Messages API with its own
HTTP code (not the anthropic SDK) and its ``openai/`` provider the Chat Completions API. Plain answers, streams
with usage, a tool loop and a Pydantic ``response_format`` (which LiteLLM turns into the structured-outputs beta's
``output_format`` or a forced JSON tool for Anthropic), each routed to an Anthropic tier and to the student.

What LiteLLM reads is compared with what the official SDKs read from the same gateway for the same request, and
with what the stand-in behind it serves (its tool loop answers ``"<name> returned: <result>"``); the gateway here
has no cache, so every request is a model call the stand-in logs.

LiteLLM is installed by ``scripts/test`` with ``pip install --no-deps`` (its metadata pins huggingface-hub < 2,
which the embedding stack has outgrown; the SDK path imports none of it); the dependencies it does import are in
the ``dev`` extra.
"""

from __future__ import annotations

import json

import pytest
from gateways import ROUTES, routed_gateway

pytestmark = [pytest.mark.filterwarnings("ignore:Item '.*' on TypedDict class:UserWarning"),  # LiteLLM's own types
              pytest.mark.filterwarnings("ignore::DeprecationWarning:litellm")]

LITELLM_ABSENT = ("litellm is not installed: scripts/test installs it with `pip install --no-deps litellm==1.110.2` "
                  "(its metadata pins huggingface-hub < 2)")

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The current weather of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


@pytest.fixture(scope="module")
def litellm():
    # LiteLLM fetches its model price map (at import) and its Anthropic beta headers (per call) from GitHub
    # unless told to read the copies it ships: nothing here leaves the machine
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        mp.setenv("LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS", "true")
        module = pytest.importorskip("litellm", reason=LITELLM_ABSENT)
        mp.setattr(module, "drop_params", False)  # a parameter the gateway would refuse must reach it
        yield module


@pytest.fixture(scope="module")
def gateway(standin, tmp_path_factory):
    with routed_gateway(standin, tmp_path_factory.mktemp("keys") / "keys.json") as gw:
        yield f"http://127.0.0.1:{gw.port}"


def target(provider: str, base: str, route: str) -> dict:
    """``litellm.completion`` keyword arguments that reach the gateway's Messages or Chat Completions route."""
    if provider == "anthropic":
        return {"model": "anthropic/claude-haiku-4-5", "api_base": base, "api_key": "unused",
                "extra_headers": ROUTES[route]}
    return {"model": "openai/gpt-5-mini", "api_base": f"{base}/v1", "api_key": "unused", "extra_headers": ROUTES[route]}


def official_answer(provider: str, base: str, route: str, question: str) -> tuple[str, int, int]:
    """The same question through the official SDK: (text, input tokens, output tokens)."""
    if provider == "anthropic":
        import anthropic

        client = anthropic.Anthropic(base_url=base, api_key="unused", max_retries=0, default_headers=ROUTES[route])
        done = client.messages.create(model="claude-haiku-4-5", max_tokens=300,
                                      messages=[{"role": "user", "content": question}])
        return done.content[0].text, done.usage.input_tokens, done.usage.output_tokens
    import openai

    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, default_headers=ROUTES[route])
    done = client.chat.completions.create(model="gpt-5-mini", max_tokens=300,
                                          messages=[{"role": "user", "content": question}])
    return done.choices[0].message.content, done.usage.prompt_tokens, done.usage.completion_tokens


def paid_apis(standin, since: int) -> list[str]:
    return [e.api for e in standin.log.paid()[since:]]


ROUTED = [("anthropic", "anthropic"), ("anthropic", "student"), ("openai", "anthropic"), ("openai", "student")]


@pytest.mark.parametrize(("provider", "route"), ROUTED)
def test_a_plain_answer_reads_as_the_official_sdk_reads_it(litellm, gateway, standin, provider, route) -> None:
    question = f"How do I export my invoices as CSV? ({provider} via {route})"
    text, tokens_in, tokens_out = official_answer(provider, gateway, route, question)
    since = len(standin.log.paid())
    done = litellm.completion(messages=[{"role": "user", "content": question}], max_tokens=300,
                              **target(provider, gateway, route))
    assert done.choices[0].message.content == text
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (tokens_in, tokens_out)
    assert done.choices[0].finish_reason == "stop"
    assert paid_apis(standin, since) == ["openai" if route == "student" else "anthropic"]


@pytest.mark.parametrize(("provider", "route"), ROUTED)
def test_a_stream_carries_the_same_text_and_its_usage(litellm, gateway, standin, provider, route) -> None:
    question = f"Can I change the currency of my account? ({provider} via {route})"
    text, tokens_in, tokens_out = official_answer(provider, gateway, route, question)
    chunks = list(litellm.completion(messages=[{"role": "user", "content": question}], max_tokens=300, stream=True,
                                     stream_options={"include_usage": True}, **target(provider, gateway, route)))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    usage = [c.usage for c in chunks if getattr(c, "usage", None) is not None][-1]
    assert (usage.prompt_tokens, usage.completion_tokens) == (tokens_in, tokens_out)


@pytest.mark.parametrize(("provider", "route"), ROUTED)
def test_a_tool_loop_calls_the_tool_and_reads_the_answer(litellm, gateway, standin, provider, route) -> None:
    asked = [{"role": "user", "content": "Please use get_weather: is it cold in Oslo?"}]
    since = len(standin.log.paid())
    first = litellm.completion(messages=asked, tools=TOOLS, max_tokens=300, **target(provider, gateway, route))
    calls = first.choices[0].message.tool_calls
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [("get_weather", {"city": "stand-in"})]
    assert first.choices[0].finish_reason == "tool_calls"
    results = [{"role": "tool", "tool_call_id": c.id, "content": f"-3 C in {json.loads(c.function.arguments)['city']}"}
               for c in calls]
    final = litellm.completion(messages=[*asked, first.choices[0].message.model_dump(), *results], tools=TOOLS,
                               max_tokens=300, **target(provider, gateway, route))
    assert final.choices[0].message.content == "get_weather returned: -3 C in stand-in"
    assert paid_apis(standin, since) == ["openai" if route == "student" else "anthropic"] * 2


@pytest.mark.parametrize(("provider", "route"), ROUTED)
def test_a_pydantic_response_format_comes_back_as_that_model(litellm, gateway, standin, provider, route) -> None:
    from pydantic import BaseModel

    class Weather(BaseModel):
        city: str
        temperature_c: int
        windy: bool

    since = len(standin.log.paid())
    done = litellm.completion(messages=[{"role": "user", "content": f"The weather in Oslo ({provider}, {route})"}],
                              response_format=Weather, max_tokens=300, **target(provider, gateway, route))
    weather = Weather.model_validate_json(done.choices[0].message.content)
    assert isinstance(weather.temperature_c, int) and isinstance(weather.windy, bool) and weather.city
    assert paid_apis(standin, since) == ["openai" if route == "student" else "anthropic"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("provider", "route"), ROUTED)
def test_web_search_options_search_on_an_anthropic_tier(litellm, gateway, standin, provider, route, stream) -> None:
    """``web_search_options`` through LiteLLM: its ``anthropic/`` provider turns them into the Messages API's web search
    tool, its ``openai/`` provider sends them as they are (the gateway's Chat Completions route turns them into the
    same tool); either way an Anthropic tier searches once (``low``) and answers — routed to the student too, which
    cannot search — and on the Chat Completions route LiteLLM reads the citation as OpenAI's ``url_citation``."""
    question = f"What changed in the refund policy and in the shipping rules? ({provider} via {route}, {stream})"
    since = len(standin.log.paid())
    where = target(provider, gateway, route)
    if provider == "openai":  # LiteLLM refuses web_search_options for an OpenAI model that cannot search
        where["model"] = "openai/gpt-4o-search-preview"
    done = litellm.completion(messages=[{"role": "user", "content": question}], max_tokens=300, stream=stream,
                              web_search_options={"search_context_size": "low"}, **where)
    if stream:
        done = litellm.stream_chunk_builder(list(done))
    message = done.choices[0].message
    assert message.content.startswith("From the search results: ")  # the stand-in's searched answer
    if provider == "openai":
        assert [a["url_citation"]["url"] for a in message.annotations] == ["https://standin.invalid/search/1"]
    assert paid_apis(standin, since) == ["anthropic"]
