"""OpenAI's Conversations API on the gateway (``/v1/conversations``), driven by the real ``openai`` SDK
(``client.conversations`` and ``responses.create(conversation=...)``) and by the OpenAI Agents SDK
(``Runner.run(conversation_id=...)`` and ``OpenAIConversationsSession``), against Gateway → Pipeline → the local
stand-ins: a conversation's items in order, the turns a response adds, what the model reads (counted by the
stand-in, against the same conversation sent whole), tenants apart, and what the API would refuse."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest
from gateways import ROUTES, DictCache, routed_gateway

from test_gateway_responses import ASK_TOOL, weather_agent


@pytest.fixture(scope="module")
def gw(standin, tmp_path_factory):
    with routed_gateway(standin, tmp_path_factory.mktemp("keys") / "keys.json", cache=DictCache()) as gw:
        yield gw


def _client(gw, tenant: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{gw.port}/v1", api_key="unused", max_retries=0,
                         default_headers={**ROUTES["anthropic"], "x-costline-tenant": tenant})


def _texts(items) -> list[tuple[str, str]]:
    return [(i.role, i.content[0].text) for i in items]


def test_a_conversation_and_its_items_through_the_sdk(gw) -> None:
    client = _client(gw, "conv-crud")
    conv = client.conversations.create(metadata={"topic": "billing"},
                                       items=[{"type": "message", "role": "user", "content": "Hello!"}])
    assert conv.id.startswith("conv_") and conv.metadata == {"topic": "billing"} and conv.object == "conversation"
    assert client.conversations.retrieve(conv.id).created_at == conv.created_at
    assert client.conversations.update(conv.id, metadata={"topic": "refunds"}).metadata == {"topic": "refunds"}
    added = client.conversations.items.create(conv.id, items=[
        {"type": "message", "role": "assistant", "content": "Hi, how can I help?"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Where is my invoice?"}]}])
    assert [i.role for i in added.data] == ["assistant", "user"]
    newest_first = client.conversations.items.list(conv.id)
    assert _texts(newest_first.data) == [("user", "Where is my invoice?"), ("assistant", "Hi, how can I help?"),
                                         ("user", "Hello!")]
    paged = list(client.conversations.items.list(conv.id, order="asc", limit=1))  # the SDK follows `after`
    assert _texts(paged) == _texts(newest_first.data)[::-1]
    one = client.conversations.items.retrieve(added.data[0].id, conversation_id=conv.id)
    assert one.content[0].text == "Hi, how can I help?"
    after = client.conversations.items.delete(added.data[0].id, conversation_id=conv.id)
    assert after.id == conv.id
    assert _texts(client.conversations.items.list(conv.id, order="asc").data) == [
        ("user", "Hello!"), ("user", "Where is my invoice?")]
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.retrieve(added.data[0].id, conversation_id=conv.id)
    assert client.conversations.delete(conv.id).deleted is True
    for gone in (lambda: client.conversations.retrieve(conv.id), lambda: client.conversations.items.list(conv.id),
                 lambda: client.conversations.delete(conv.id)):
        with pytest.raises(openai.NotFoundError):
            gone()


@pytest.mark.parametrize("stream", [False, True])
def test_responses_in_a_conversation_read_its_items_and_add_their_turns(gw, standin, stream) -> None:
    """Each response reads the conversation's items before its input, then adds its input and its answer: the
    second question is answered from as many input tokens as the whole conversation sent in ``input`` (another
    tenant, so no cache hit), and the conversation holds the four turns in order."""
    client = _client(gw, f"conv-turns-{stream}")
    conv = client.conversations.create()

    def ask(text: str):
        if stream:
            with client.responses.stream(model="gpt-5-mini", input=text, conversation=conv.id) as s:
                return s.get_final_response()
        return client.responses.create(model="gpt-5-mini", input=text, conversation={"id": conv.id})

    first = ask(f"How do I add a team member ({stream})?")
    assert first.conversation.id == conv.id
    entries = len(standin.log.entries())
    second = ask("And remove one?")
    continued = standin.log.entries()[entries:]
    _client(gw, f"conv-whole-{stream}").responses.create(model="gpt-5-mini", input=[
        {"role": "user", "content": f"How do I add a team member ({stream})?"},
        {"role": "assistant", "content": first.output_text}, {"role": "user", "content": "And remove one?"}])
    assert [e.input_tokens for e in continued] == [standin.log.entries()[-1].input_tokens]
    held = client.conversations.items.list(conv.id, order="asc").data
    assert _texts(held) == [("user", f"How do I add a team member ({stream})?"), ("assistant", first.output_text),
                            ("user", "And remove one?"), ("assistant", second.output_text)]
    assert held[1].id == first.output[0].id


def test_the_agents_sdk_runs_on_a_conversation_and_on_a_conversations_session(gw) -> None:
    """``Runner.run(conversation_id=...)`` (a tool loop inside the run, each model call adding to the conversation)
    and ``OpenAIConversationsSession`` (the SDK keeps its history in the conversation with items.create / list)."""
    from agents import RunConfig, Runner
    from agents.memory import OpenAIConversationsSession

    headers = {**ROUTES["anthropic"], "x-costline-tenant": "conv-agents"}
    client = _client(gw, "conv-agents")
    config = RunConfig(tracing_disabled=True)
    conv = client.conversations.create()
    ran: list[str] = []
    first = Runner.run_sync(weather_agent(gw, ran, headers), ASK_TOOL, run_config=config, conversation_id=conv.id)
    assert first.final_output == "get_weather returned: -3 C in stand-in" and ran == ["stand-in"]
    kinds = [i.type for i in client.conversations.items.list(conv.id, order="asc", limit=100).data]
    assert kinds[0] == "message" and kinds.count("function_call") == kinds.count("function_call_output") == 1
    again = Runner.run_sync(weather_agent(gw, ran, headers), "Thanks. And tomorrow?", run_config=config,
                            conversation_id=conv.id)
    assert again.final_output

    async def two_turns():  # one event loop: the session's client and the model's are one async client
        agent = weather_agent(gw, ran, headers)
        session = OpenAIConversationsSession(openai_client=agent.model._client)
        await Runner.run(agent, "How do I change my billing address?", run_config=config, session=session)
        second = await Runner.run(agent, "And my shipping address?", run_config=config, session=session)
        return session.session_id, second

    conversation, second = asyncio.run(two_turns())
    assert second.final_output
    held = client.conversations.items.list(conversation, order="asc").data
    assert [i.role for i in held] == ["user", "assistant", "user", "assistant"]
    assert held[0].content[0].text == "How do I change my billing address?"


def test_another_tenant_cannot_reach_a_conversation(gw) -> None:
    owner, intruder = _client(gw, "conv-owner"), _client(gw, "conv-intruder")
    conv = owner.conversations.create(items=[{"type": "message", "role": "user", "content": "My PIN is 0000"}])
    item = owner.conversations.items.list(conv.id).data[0]
    for look in (lambda: intruder.conversations.retrieve(conv.id), lambda: intruder.conversations.items.list(conv.id),
                 lambda: intruder.conversations.items.retrieve(item.id, conversation_id=conv.id),
                 lambda: intruder.conversations.items.create(conv.id, items=[
                     {"type": "message", "role": "user", "content": "hi"}]),
                 lambda: intruder.conversations.update(conv.id, metadata={"a": "b"}),
                 lambda: intruder.conversations.items.delete(item.id, conversation_id=conv.id),
                 lambda: intruder.conversations.delete(conv.id),
                 lambda: intruder.responses.create(model="gpt-5-mini", input="What is my PIN?", conversation=conv.id)):
        with pytest.raises(openai.NotFoundError):
            look()
    assert _texts(owner.conversations.items.list(conv.id).data) == [("user", "My PIN is 0000")]


@pytest.mark.parametrize("method, path, body, param", [
    ("POST", "", {"items": [{"type": "message", "role": "user", "content": "hi"}] * 21}, "items"),
    ("POST", "", {"items": [{"type": "file_search_call"}]}, "items[0].type"),
    ("POST", "", {"items": "hi"}, "items"),
    ("POST", "", {"metadata": {f"k{n}": "v" for n in range(17)}}, "metadata"),
    ("POST", "", {"metadata": {"k": "v" * 513}}, "metadata"),
    ("POST", "/{id}", {}, "metadata"),
    ("POST", "/{id}/items", {"items": []}, "items"),
    ("GET", "/{id}/items?limit=0", None, "limit"),
    ("GET", "/{id}/items?order=up", None, "order"),
    ("GET", "/{id}/items?after=msg_nope", None, "after"),
])
def test_what_the_api_would_refuse_is_a_400_naming_it(gw, method, path, body, param) -> None:
    conv = _client(gw, "conv-bad").conversations.create()
    got = httpx.request(method, f"http://127.0.0.1:{gw.port}/v1/conversations{path.format(id=conv.id)}", json=body,
                        headers={**ROUTES["anthropic"], "x-costline-tenant": "conv-bad"})
    assert got.status_code == 400 and got.json()["error"]["param"] == param, got.text


def test_a_response_names_a_conversation_or_a_previous_response_not_both(gw) -> None:
    client = _client(gw, "conv-both")
    conv = client.conversations.create()
    first = client.responses.create(model="gpt-5-mini", input="How do I pause my plan?")
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="gpt-5-mini", input="And resume it?", conversation=conv.id,
                                previous_response_id=first.id)
    assert err.value.body["param"] == "previous_response_id"
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="gpt-5-mini", input="And resume it?", conversation="conv_never")
    assert client.conversations.items.list(conv.id).data == []  # nothing was added


def test_one_response_at_a_time_on_a_conversation(gw) -> None:
    """While a response is answering on a conversation another one is refused with OpenAI's ``conversation_locked``
    (the Agents SDK retries it), and the hold ends with the answer — streamed or not, or refused."""
    client = _client(gw, "conv-lock")
    conv = client.conversations.create()
    assert gw.stored_responses.hold_conversation("conv-lock", conv.id, 60)  # a response answering elsewhere
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="gpt-5-mini", input="How do I pause my plan?", conversation=conv.id)
    assert err.value.code == "conversation_locked"
    gw.stored_responses.release_conversation("conv-lock", conv.id)
    with client.responses.stream(model="gpt-5-mini", input="How do I pause my plan?", conversation=conv.id) as s:
        s.get_final_response()
    with pytest.raises(openai.BadRequestError):  # refused after it was held: released too
        client.responses.create(model="gpt-5-mini", input="x", conversation=conv.id, max_output_tokens=0)
    again = client.responses.create(model="gpt-5-mini", input="And resume it?", conversation=conv.id)
    assert again.conversation.id == conv.id
    assert len(client.conversations.items.list(conv.id).data) == 4


def test_a_turn_the_conversation_has_no_room_for_is_refused_or_said_not_added(standin, tmp_path) -> None:
    """Past the tenant's bytes, an input that cannot fit is refused before any model call; an answer that does not
    fit comes back without its ``conversation`` and leaves the conversation as it was (no half turn, no gap)."""
    with routed_gateway(standin, tmp_path / "keys.json", responses_tenant_max_mib=2048 / 2 ** 20) as small:
        client = _client(small, "conv-full")
        conv = client.conversations.create()
        first = client.responses.create(model="gpt-5-mini", input="How do I pause my plan?", conversation=conv.id)
        assert first.conversation.id == conv.id
        held = client.conversations.items.list(conv.id).data
        paid = len(standin.log.paid())
        with pytest.raises(openai.BadRequestError) as err:
            client.responses.create(model="gpt-5-mini", input="Why? " * 500, conversation=conv.id)
        assert err.value.body["param"] == "conversation" and "responses_tenant_max_mib" in err.value.body["message"]
        assert len(standin.log.paid()) == paid  # refused before any model call
        room = small.stored_responses.conversation_room("conv-full")
        fits_alone = "Why? " * ((room - 40) // 5)  # the input fits; with the answer's item, the turn does not
        late = client.responses.create(model="gpt-5-mini", input=fits_alone, conversation=conv.id)
        assert late.output_text and late.conversation is None
        assert [i.id for i in client.conversations.items.list(conv.id).data] == [i.id for i in held]


def test_a_conversations_metadata_is_its_own_even_with_a_tenant_key(standin, tmp_path) -> None:
    """With API keys, ``metadata.tenant`` of a request body is checked against the key's tenant; a conversation's
    metadata is the app's data, so a ``tenant`` key there is just data."""
    from costline.serving.gateway.auth import KeyStore

    _, key = KeyStore(tmp_path / "keys.json").add("acme")
    with routed_gateway(standin, tmp_path / "keys.json") as keyed:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{keyed.port}/v1", api_key=key, max_retries=0)
        conv = client.conversations.create(metadata={"tenant": "customer-42"})
        assert client.conversations.update(conv.id, metadata={"tenant": "customer-43"}).metadata == {
            "tenant": "customer-43"}


def test_an_item_id_a_route_could_not_name_is_replaced(gw) -> None:
    client = _client(gw, "conv-ids")
    conv = client.conversations.create()
    added = client.conversations.items.create(conv.id, items=[
        {"type": "message", "id": "a/b?c", "role": "user", "content": "hi"},
        {"type": "message", "id": "msg_kept-1", "role": "user", "content": "there"}])
    first, second = added.data
    assert first.id != "a/b?c" and second.id == "msg_kept-1"
    assert client.conversations.items.retrieve(first.id, conversation_id=conv.id).content[0].text == "hi"
