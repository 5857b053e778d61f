"""Structured outputs through the gateway, asked the way apps ask: the ``openai`` SDK's ``chat.completions.parse`` and
``responses.parse`` (a pydantic model becomes a strict ``json_schema``), JSON mode, the ``anthropic`` SDK's
``messages.parse`` / ``messages.stream`` with ``output_format``, LangChain's ``with_structured_output`` and Pydantic
AI's ``NativeOutput``, the Vercel AI SDK's ``Output.object`` / ``generateObject`` — each unchanged but for its base URL, routed to an Anthropic tier and to the student (an
OpenAI-compatible tier), streamed and not. The stand-in behind the gateway answers with an instance of the schema
(as constrained decoding does), and with prose around the JSON when only told to answer in JSON by a tier the
question is too hard for. Expected values come from the schema (written out here) and ``json.loads``, not from
costline's checker.
"""

from __future__ import annotations

import json
import subprocess
from enum import Enum
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from gateways import ROUTES, DictCache, anthropic_client, openai_client, routed_gateway
from node_apps import NODE_TIMEOUT_S, require_node
from pydantic import BaseModel

from costline.serving.gateway.app import CACHE_MODEL
from costline.sim.standin_model import cheapest_adequate_tier


class Priority(str, Enum):
    low = "low"
    high = "high"


class Ticket(BaseModel):
    title: str
    priority: Priority
    tags: list[str]
    estimate_hours: int


def _is_ticket(ticket: Ticket) -> bool:
    """What the stand-in writes for this schema: every field, the first enum value, one tag, the integer 1."""
    return (isinstance(ticket, Ticket) and ticket.title.strip() != "" and ticket.priority is Priority.low
            and len(ticket.tags) == 1 and ticket.estimate_hours == 1)


@pytest.fixture(scope="module")
def setup(standin, tmp_path_factory):
    cache = DictCache()
    with routed_gateway(standin, tmp_path_factory.mktemp("keys") / "keys.json", cache=cache) as gw:
        yield gw, cache


def _tier_received(standin, since: int) -> dict:
    """The structured-output field the paid model call carried, by the tier's API."""
    entry = standin.log.paid()[since]
    sampling = dict(entry.sampling)
    if entry.api == "openai":
        return {"api": "openai", **dict(sampling["response_format"])}
    return {"api": "anthropic", **dict(dict(sampling["output_config"]))}


@pytest.mark.parametrize("route", ["anthropic", "student"])
@pytest.mark.parametrize("stream", [False, True])
def test_openai_chat_parse_gets_a_parsed_model(setup, standin, route, stream) -> None:
    gw, _ = setup
    client = openai_client(gw, route, f"chat-parse-{stream}")
    paid = len(standin.log.paid())
    asked = [{"role": "user", "content": f"File a ticket: the CSV export button does nothing ({route}, {stream})"}]
    if stream:
        with client.chat.completions.stream(model="gpt-5-mini", messages=asked, response_format=Ticket) as s:
            deltas = "".join(e.delta for e in s if e.type == "content.delta")
            completion = s.get_final_completion()
        assert json.loads(deltas) == json.loads(completion.choices[0].message.content)
    else:
        completion = client.chat.completions.parse(model="gpt-5-mini", messages=asked, response_format=Ticket)
    assert _is_ticket(completion.choices[0].message.parsed)
    assert completion.choices[0].finish_reason == "stop"
    received = _tier_received(standin, paid)
    if route == "student":  # the student got OpenAI's own shape, its name and strictness kept
        assert received["api"] == "openai" and received["type"] == "json_schema"
        assert received["json_schema"]["name"] == "Ticket" and received["json_schema"]["strict"] is True
    else:  # an Anthropic tier got output_config.format
        assert received["api"] == "anthropic" and received["format"]["type"] == "json_schema"
        assert set(received["format"]["schema"]["required"]) == {"title", "priority", "tags", "estimate_hours"}


@pytest.mark.parametrize("route", ["anthropic", "student"])
@pytest.mark.parametrize("stream", [False, True])
def test_openai_responses_parse_gets_a_parsed_model(setup, route, stream) -> None:
    gw, _ = setup
    client = openai_client(gw, route, f"responses-parse-{stream}")
    question = f"File a ticket: login fails on Safari ({route}, {stream})"
    if stream:
        with client.responses.stream(model="gpt-5-mini", input=question, text_format=Ticket) as s:
            for _ in s:
                pass
            response = s.get_final_response()
    else:
        response = client.responses.parse(model="gpt-5-mini", input=question, text_format=Ticket)
    assert response.status == "completed"
    assert _is_ticket(response.output_parsed)
    assert response.text.format.type == "json_schema" and response.text.format.name == "Ticket"


@pytest.mark.parametrize("route", ["anthropic", "student"])
@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_messages_parse_gets_a_parsed_model(setup, route, stream) -> None:
    gw, _ = setup
    client = anthropic_client(gw, route, f"messages-parse-{stream}")
    asked = [{"role": "user", "content": f"File a ticket: dark mode is unreadable ({route}, {stream})"}]
    if stream:
        with client.messages.stream(model="claude-haiku-4-5", max_tokens=500, messages=asked,
                                    output_format=Ticket) as s:
            text = "".join(s.text_stream)
            message = s.get_final_message()
        assert json.loads(text) == json.loads(message.content[-1].text)
    else:
        message = client.messages.parse(model="claude-haiku-4-5", max_tokens=500, messages=asked,
                                        output_format=Ticket)
    assert _is_ticket(message.parsed_output)
    assert message.stop_reason == "end_turn"


def test_the_structured_outputs_betas_top_level_field_is_read_too(setup) -> None:
    gw, _ = setup
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
              "additionalProperties": False}
    reply = httpx.post(f"http://127.0.0.1:{gw.port}/v1/messages", headers={**ROUTES["anthropic"],
                       "anthropic-beta": "structured-outputs-2025-11-13"}, timeout=30, json={
        "model": "claude-haiku-4-5", "max_tokens": 200, "output_format": {"type": "json_schema", "schema": schema},
        "messages": [{"role": "user", "content": "Which city is the capital of Norway?"}]})
    assert reply.status_code == 200, reply.text
    assert set(json.loads(reply.json()["content"][0]["text"])) == {"city"}


def test_one_cache_entry_per_question_and_schema_whichever_api_asked(setup, standin) -> None:
    gw, _ = setup
    question = "File a ticket: the invoice PDF shows the wrong VAT number"
    schema = {"type": "object", "additionalProperties": False, "required": ["title", "priority", "tags", "estimate_hours"],
              "properties": {"title": {"type": "string"}, "priority": {"enum": ["low", "high"]},
                             "tags": {"type": "array", "items": {"type": "string"}},
                             "estimate_hours": {"type": "integer"}}}
    chat = openai_client(gw, "anthropic", "cache-structured")
    paid = len(standin.log.paid())
    first = chat.chat.completions.create(
        model="claude-haiku-4-5", messages=[{"role": "user", "content": question}],
        response_format={"type": "json_schema", "json_schema": {"name": "ticket", "schema": schema, "strict": True}})
    assert first.model != CACHE_MODEL
    again = chat.responses.create(  # the same format (schema and name) asked through another API
        model="claude-haiku-4-5", input=question,
        text={"format": {"type": "json_schema", "name": "ticket", "schema": schema, "strict": True}})
    assert again.model == CACHE_MODEL
    assert _is_ticket(Ticket.model_validate_json(again.output_text))
    assert json.loads(again.output_text) == json.loads(first.choices[0].message.content)
    assert len(standin.log.paid()) == paid + 1
    # the Messages API's format has no name: not the named one's scope (a name steers an OpenAI model's answer),
    # one entry for every Messages request of that schema
    messages = anthropic_client(gw, "anthropic", "cache-structured")
    asked = dict(model="claude-haiku-4-5", max_tokens=1024, messages=[{"role": "user", "content": question}],
                 output_config={"format": {"type": "json_schema", "schema": schema}})
    assert messages.messages.create(**asked).model != CACHE_MODEL
    repeat = messages.messages.create(**asked)
    assert repeat.model == CACHE_MODEL and _is_ticket(Ticket.model_validate_json(repeat.content[0].text))
    paid += 1

    class Summary(BaseModel):  # another schema: another answer, never the ticket's
        summary: str

    other = chat.chat.completions.parse(model="claude-haiku-4-5", messages=[{"role": "user", "content": question}],
                                        response_format=Summary)
    assert other.model != CACHE_MODEL and set(json.loads(other.choices[0].message.content)) == {"summary"}
    plain = chat.chat.completions.create(model="claude-haiku-4-5", messages=[{"role": "user", "content": question}])
    assert plain.model != CACHE_MODEL  # a prose request never gets the JSON answer
    assert len(standin.log.paid()) == paid + 3


ADDRESS = {"type": "object", "properties": {"address": {"type": "string"}}, "required": ["address"],
           "additionalProperties": False}


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_one_schema_steered_by_two_descriptions_is_two_answers(setup, standin, api) -> None:
    """OpenAI's ``description`` is "used by the model to determine how to respond": the Anthropic tier reads it as
    the schema's description, and the cache keeps one answer per description."""
    gw, _ = setup
    client = openai_client(gw, "anthropic", f"described-{api}")
    email = f"Ship to 1 Main St, Springfield; bill to 99 Elm Rd, Shelbyville. Extract the address ({api})."

    def ask(description: str) -> str:
        if api == "chat":
            return client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": email}],
                response_format={"type": "json_schema", "json_schema": {
                    "name": "addr", "description": description, "strict": True, "schema": ADDRESS}}).model
        return client.responses.create(model="gpt-4o", input=email, text={"format": {
            "type": "json_schema", "name": "addr", "description": description, "strict": True,
            "schema": ADDRESS}}).model

    paid = len(standin.log.paid())
    for k, description in enumerate(["The SHIPPING address of the order", "The BILLING address of the order"]):
        assert ask(description) != CACHE_MODEL  # a miss each: another description, another answer
        received = _tier_received(standin, paid + k)
        assert received["api"] == "anthropic" and received["format"]["schema"]["description"] == description
        assert received["format"]["schema"]["properties"] == ADDRESS["properties"]
    assert ask("The BILLING address of the order") == CACHE_MODEL  # the same description again: its answer
    assert len(standin.log.paid()) == paid + 2


def test_an_anthropic_tier_gets_the_description_as_the_schemas_own() -> None:
    from costline.serving.structured import from_chat

    own = {**ADDRESS, "description": "A postal address"}
    for description, schema, sent in [
        (None, ADDRESS, None),
        ("The shipping address", ADDRESS, "The shipping address"),
        ("The shipping address", own, "The shipping address\n\nA postal address"),  # both, the request's first
        ("A postal address", own, "A postal address"),  # not twice
        ("", own, "A postal address"),
    ]:
        fmt = from_chat({"type": "json_schema", "json_schema": {"name": "addr", "schema": schema,
                                                                **({} if description is None else {"description": description})}})
        got = fmt.to_anthropic()["schema"]
        assert got.get("description") == sent, description
        assert got["properties"] == ADDRESS["properties"] and got["required"] == ["address"]


def test_the_cache_scope_tells_apart_name_and_description_and_nothing_else() -> None:
    from costline.serving.structured import from_anthropic, from_chat, from_responses

    def chat(**spec):
        return from_chat({"type": "json_schema", "json_schema": {"schema": ADDRESS, **spec}}).scope()

    base = chat(name="addr", description="Shipping")
    assert chat(name="addr", description="Billing") != base
    assert chat(name="billing_addr", description="Shipping") != base
    assert chat(name="addr") != base
    assert chat(name="addr", description="Shipping", strict=True) == base  # strictness does not change the answer
    assert from_responses({"format": {"type": "json_schema", "name": "addr", "description": "Shipping",
                                      "schema": ADDRESS}}).scope() == base
    assert from_anthropic({"output_config": {"format": {"type": "json_schema", "schema": ADDRESS}}}).scope() == {
        "type": "json_schema", "schema": ADDRESS}


@pytest.mark.parametrize("answer", ['{"address": NaN}', '{"n": Infinity}', '[-Infinity]'])
def test_an_answer_with_nan_is_not_json(answer) -> None:
    from costline.serving.structured import OutputFormat

    assert json.loads(answer) is not None  # Python reads it; no client's JSON parser does
    assert OutputFormat.of("json_object").problem(answer) is not None
    assert OutputFormat.of("json_schema", {}).problem(answer) == "the answer is not valid JSON"


def _question_for(top: str) -> str:
    """A question (asking for JSON) whose cheapest adequate tier in the stand-in's world is ``top``."""
    for i in range(2000):
        q = f"How do I reconcile ledger batch {i} with the bank statement? Answer in JSON."
        if cheapest_adequate_tier(q) == top:
            return q
    raise AssertionError(f"no question found for {top}")


@pytest.mark.parametrize("hard", [False, True])
def test_json_mode_on_an_anthropic_tier_escalates_an_answer_that_is_not_json(setup, standin, hard) -> None:
    gw, _ = setup
    client = openai_client(gw, "anthropic", f"json-mode-{hard}")
    question = _question_for("mid" if hard else "budget")
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-5-mini", messages=[{"role": "user", "content": question}], response_format={"type": "json_object"})
    completion = raw.parse()
    doc = json.loads(completion.choices[0].message.content)  # the client gets the JSON object alone
    assert isinstance(doc, dict) and set(doc) == {"answer"}
    assert raw.headers["x-costline-routed-tier"] == "budget"
    assert raw.headers["x-costline-tier"] == ("mid" if hard else "budget")


@pytest.mark.parametrize("api", ["messages", "chat", "responses"])
def test_a_schema_that_reaches_outside_itself_is_refused_before_any_model_call(setup, standin, api) -> None:
    gw, _ = setup
    schema = {"type": "object", "properties": {"a": {"$ref": "http://169.254.169.254/latest/meta-data/"}}}
    paid = len(standin.log.paid())
    with pytest.raises((openai.BadRequestError, anthropic.BadRequestError)) as refused:
        if api == "messages":
            anthropic_client(gw, "anthropic", "ssrf").messages.create(
                model="claude-haiku-4-5", max_tokens=100, messages=[{"role": "user", "content": "hi"}],
                output_config={"format": {"type": "json_schema", "schema": schema}})
        elif api == "chat":
            openai_client(gw, "student", "ssrf").chat.completions.create(
                model="gpt-5-mini", messages=[{"role": "user", "content": "hi"}],
                response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
        else:
            openai_client(gw, "student", "ssrf").responses.create(
                model="gpt-5-mini", input="hi", text={"format": {"type": "json_schema", "name": "x", "schema": schema}})
    assert "points outside the schema" in str(refused.value)
    assert len(standin.log.paid()) == paid


@pytest.mark.parametrize("api, field, value, says", [
    ("chat", "response_format", {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 7}}},
     "not a valid JSON Schema"),
    ("chat", "response_format", {"type": "xml"}, "json_schema"),
    ("responses", "text", {"format": {"type": "json_schema", "schema": {"type": "object"}}}, "name"),
    ("messages", "output_config", {"format": {"type": "json_object"}}, "json_schema"),
])
def test_a_malformed_format_is_a_400_naming_it(setup, standin, api, field, value, says) -> None:
    gw, _ = setup
    path = {"chat": "/v1/chat/completions", "responses": "/v1/responses", "messages": "/v1/messages"}[api]
    body = {"model": "m", field: value}
    body.update({"input": "hi", "max_output_tokens": 50} if api == "responses"  # (max_tokens is no Responses field)
                else {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 50})
    reply = httpx.post(f"http://127.0.0.1:{gw.port}{path}", json=body, timeout=30)
    assert reply.status_code == 400
    assert says in reply.json()["error"]["message"]


@pytest.mark.parametrize("route", ["anthropic", "student"])
@pytest.mark.parametrize("api", ["ChatAnthropic", "ChatOpenAI"])
def test_langchain_with_structured_output(setup, route, api) -> None:
    gw, _ = setup
    headers = {**ROUTES[route], "x-costline-tenant": "langchain"}
    if api == "ChatAnthropic":
        from langchain_anthropic import ChatAnthropic
        model = ChatAnthropic(model="claude-haiku-4-5", base_url=f"http://127.0.0.1:{gw.port}", api_key="unused",
                              max_retries=0, default_headers=headers)
        structured = model.with_structured_output(Ticket, method="json_schema")
    else:
        from langchain_openai import ChatOpenAI
        model = ChatOpenAI(model="gpt-5-mini", base_url=f"http://127.0.0.1:{gw.port}/v1", api_key="unused",
                           max_retries=0, default_headers=headers)
        structured = model.with_structured_output(Ticket)  # its default: json_schema (response_format)
    assert _is_ticket(structured.invoke(f"File a ticket: the mobile app logs me out ({api}, {route})"))


@pytest.mark.parametrize("route", ["anthropic", "student"])
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_pydantic_ai_native_output(setup, route, provider) -> None:
    from pydantic_ai import Agent, NativeOutput

    gw, _ = setup
    headers = {**ROUTES[route], "x-costline-tenant": "pydantic-ai"}
    if provider == "openai":
        from pydantic_ai.models.openai import OpenAIChatModel
        from pydantic_ai.providers.openai import OpenAIProvider
        model = OpenAIChatModel("gpt-5-mini", provider=OpenAIProvider(openai_client=openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{gw.port}/v1", api_key="unused", max_retries=0, default_headers=headers)))
    else:
        from pydantic_ai.models.anthropic import AnthropicModel
        from pydantic_ai.providers.anthropic import AnthropicProvider
        model = AnthropicModel("claude-haiku-4-5", provider=AnthropicProvider(anthropic_client=anthropic.AsyncAnthropic(
            base_url=f"http://127.0.0.1:{gw.port}", api_key="unused", max_retries=0, default_headers=headers)))
    agent = Agent(model, output_type=NativeOutput(Ticket))
    result = agent.run_sync(f"File a ticket: search ignores accents ({provider}, {route})")
    assert _is_ticket(result.output)


@pytest.mark.parametrize("route", ["anthropic", "student"])
def test_the_vercel_ai_sdk_gets_objects_on_all_three_apis(setup, route) -> None:
    """tests/js/aisdk/gateway_structured.mjs: generateText / streamText with ``Output.object`` and the older
    generateObject, on @ai-sdk/anthropic (Messages), @ai-sdk/openai's default model (Responses) and its .chat model
    (Chat Completions), pointed at the gateway by base URL only."""
    gw, _ = setup
    app = Path(__file__).parent / "js" / "aisdk"
    node = require_node(app, ("ai", "@ai-sdk/anthropic", "@ai-sdk/openai"))
    done = subprocess.run([node, str(app / "gateway_structured.mjs"), "--gateway", f"http://127.0.0.1:{gw.port}",
                           "--task-type", ROUTES[route]["x-costline-task-type"]],
                          capture_output=True, text=True, timeout=NODE_TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(report) == sorted(f"{api}/{mode}" for api in ("messages", "responses", "chat")
                                    for mode in ("output", "stream", "generateObject"))
    for case, got in report.items():
        assert "error" not in got, (case, got)
        obj = got["object"]
        assert set(obj) == {"title", "priority", "tags"}, (case, got)
        assert obj["priority"] == "low" and obj["title"].strip() and len(obj["tags"]) == 1, (case, got)


@pytest.mark.parametrize("route", ["anthropic", "student"])
@pytest.mark.parametrize("api", ["responses", "chat"])
def test_an_openai_agents_sdk_agent_with_an_output_type(setup, route, api) -> None:
    """An Agents SDK ``Agent(output_type=...)`` asks for a strict JSON schema (the Responses API's ``text.format``
    on its default model, ``response_format`` on the Chat Completions one) and parses the final output."""
    from agents import Agent, OpenAIChatCompletionsModel, OpenAIResponsesModel, RunConfig, Runner

    gw, _ = setup
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{gw.port}/v1", api_key="unused", max_retries=0,
                                default_headers={**ROUTES[route], "x-costline-tenant": "agents"})
    model = (OpenAIResponsesModel if api == "responses" else OpenAIChatCompletionsModel)(
        model="gpt-5-mini", openai_client=client)
    agent = Agent(name="triage", instructions="File support tickets.", output_type=Ticket, model=model)
    # tracing off for this run only: set_tracing_disabled() is process-wide, and a later test in this worker
    # (tests/test_ingest_openai_agents.py) records the SDK's traces
    result = Runner.run_sync(agent, f"File a ticket: the invoice page is blank ({api}, {route})",
                             run_config=RunConfig(tracing_disabled=True))
    assert _is_ticket(result.final_output)
