"""Generation parameters through the gateway: what an app sets reaches the model that answers, in the names of that
model's API, through the real ``anthropic`` (2.x: ``stop_sequences``, ``output_config.effort``; its Messages API
has no temperature) and ``openai`` SDKs (``temperature``, ``top_p``, ``stop``), streamed or not; what the gateway
cannot carry (log probabilities, audio, web search) or the API would refuse (a malformed structured-output format)
is a 400 naming the field, never silently dropped (a request answered as if it had not asked). (Structured outputs
themselves: tests/test_gateway_structured.py.) The stand-in records the parameters each
call carried, by its API's names, and stops at a stop sequence as the API does."""

from __future__ import annotations

import dataclasses

import anthropic
import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from test_gateway_hostile import post, serve  # noqa: F401 - fixture

from costline.collectors import Recorder
from costline.config import Config
from costline.serving.backends import Prompt, build_backends
from costline.serving.pipeline import Pipeline
from costline.serving.registry import ModelRegistry
from costline.serving.settings import BackendsConfig, RouteRulesConfig
from costline.sim.standin import StandInServer

QUESTION = "How do I export my invoices as CSV?"


def _anthropic(gw) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=f"http://127.0.0.1:{gw.port}", api_key="unused", max_retries=0)


def _openai(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{gw.port}/v1", api_key="unused", max_retries=0)


def _sent(standin: StandInServer) -> list[dict]:
    """The generation parameters of each paid call the tiers made, oldest first."""
    return [dict(e.sampling) for e in standin.log.paid()]


@pytest.fixture(scope="module")
def student_pipeline(standin):  # noqa: F811 - the imported fixture
    """Task type "classify" goes to the student (an OpenAI-compatible tier) first."""
    cfg = Config()
    router = dataclasses.replace(cfg.serving.router, rules=RouteRulesConfig(student_task_types=("classify",)))
    serving = dataclasses.replace(cfg.serving, router=router, backends=BackendsConfig(
        anthropic_base_url=standin.url, student_base_url=standin.openai_url, max_retries=0))
    p = Pipeline.from_config(cfg.replace(serving=serving), recorder=Recorder(TracerProvider()), env={})
    yield p
    p.close()


def _ask_messages(gw, stream: bool, tenant: str, **extra) -> str:
    kwargs = dict(model="claude-haiku-4-5", max_tokens=200, messages=[{"role": "user", "content": QUESTION}],
                  extra_headers={"x-costline-tenant": tenant, **extra.pop("headers", {})}, **extra)
    if stream:
        with _anthropic(gw).messages.stream(**kwargs) as s:
            return "".join(s.text_stream)
    return _anthropic(gw).messages.create(**kwargs).content[0].text


@pytest.mark.parametrize("stream", [False, True])
def test_messages_api_parameters_reach_anthropic_tiers_in_its_names(standin, serve, stream):  # noqa: F811
    """stop_sequences and output_config.effort are sent; temperature and top_p (not fields of the Messages API
    any more, sent by an older client) are not sent to an Anthropic tier."""
    standin.log.clear()
    gw = serve()
    assert _ask_messages(gw, stream, f"sampling-{stream}", stop_sequences=["zzz-never"],
                         output_config={"effort": "low"}, extra_body={"temperature": 0.2, "top_p": 0.9})
    sent = _sent(standin)
    assert sent and all(p == {"stop_sequences": ("zzz-never",), "output_config": (("effort", "low"),)}
                        for p in sent), sent


@pytest.mark.parametrize("stream", [False, True])
def test_messages_api_parameters_reach_the_student_in_openai_names(standin, student_pipeline, tmp_path, stream):
    """Routed to the student (task type classify): temperature, top_p and stop, never effort."""
    from costline.serving.gateway.app import Gateway
    from costline.serving.settings import GatewayConfig

    standin.log.clear()
    gw = Gateway(student_pipeline, GatewayConfig(keys_file=tmp_path / "keys.json", rate_limit_per_minute=0), port=0)
    gw.start()
    try:
        assert _ask_messages(gw, stream, f"student-{stream}", stop_sequences=["zzz-never"],
                             output_config={"effort": "low"}, extra_body={"temperature": 0.2, "top_p": 0.9},
                             headers={"x-costline-task-type": "classify"})
    finally:
        gw.shutdown()
    calls = standin.log.paid()
    assert calls[0].api == "openai"  # the student answered (or was asked) first
    assert dict(calls[0].sampling) == {"temperature": 0.2, "top_p": 0.9, "stop": ("zzz-never",)}


def test_a_stop_sequence_ends_the_answer_where_the_api_ends_it(standin, serve):  # noqa: F811
    """The stand-in's whole answer to QUESTION, then the same request with a stop sequence from inside it: the
    answer ends before it, with stop_reason stop_sequence (the tier's own words, not the gateway's)."""
    gw = serve()
    client = _anthropic(gw)
    whole = client.messages.create(model="m", max_tokens=300, messages=[{"role": "user", "content": QUESTION}],
                                   extra_headers={"x-costline-tenant": "stop-whole"}).content[0].text
    words = whole.split()
    stop = " ".join(words[3:5])  # two words from inside the answer
    cut = client.messages.create(model="m", max_tokens=300, messages=[{"role": "user", "content": QUESTION}],
                                 stop_sequences=[stop], extra_headers={"x-costline-tenant": "stop-cut"})
    assert cut.stop_reason == "stop_sequence"
    assert cut.content[0].text == whole[:whole.index(stop)]


@pytest.mark.parametrize("stream", [False, True])
def test_chat_completions_parameters_reach_the_anthropic_tiers_by_their_names(standin, serve, stream):  # noqa: F811
    """``stop`` is sent as stop_sequences; temperature and top_p have no Messages API field and are not sent."""
    standin.log.clear()
    gw = serve()
    kwargs = dict(model="gpt-anything", max_completion_tokens=200, temperature=1.6, top_p=0.5, stop="zzz-never",
                  messages=[{"role": "user", "content": QUESTION}],
                  extra_headers={"x-costline-tenant": f"sampling-openai-{stream}"})
    if stream:
        text = "".join(c.choices[0].delta.content or "" for c in _openai(gw).chat.completions.create(
            stream=True, **kwargs) if c.choices)
    else:
        text = _openai(gw).chat.completions.create(**kwargs).choices[0].message.content
    assert text
    sent = _sent(standin)
    assert sent and all(p == {"stop_sequences": ("zzz-never",)} for p in sent), sent


@pytest.mark.parametrize("stream", [False, True])
def test_an_openai_compatible_tier_gets_openai_names_and_never_effort(standin, stream):  # noqa: F811
    config = Config()
    settings = BackendsConfig(anthropic_base_url=standin.url, student_base_url=standin.openai_url, max_retries=0)
    registry = ModelRegistry.from_config(config.replace(serving=dataclasses.replace(config.serving, backends=settings)))
    backends = build_backends(registry, settings, Recorder(TracerProvider()))
    try:
        standin.log.clear()
        prompt = Prompt(({"role": "user", "content": "Classify: fine"},), None, 50,
                        (("temperature", 0.3), ("top_p", 0.8), ("stop_sequences", ("zzz", "yyy")), ("effort", "max")))
        if stream:
            gen = backends["student"].stream(prompt)
            while True:
                try:
                    next(gen)
                except StopIteration:
                    break
        else:
            backends["student"].complete(prompt)
        assert _sent(standin) == [{"temperature": 0.3, "top_p": 0.8, "stop": ("zzz", "yyy")}]
    finally:
        for b in backends.values():
            b.close()


@pytest.mark.parametrize("field, value", [  # (tools and schemas are carried: test_gateway_tools.py, _structured.py)
    ("output_config", {"format": {"type": "json_object"}}),  # the Messages API takes schemas only
])
def test_what_the_gateway_cannot_carry_is_refused_not_dropped(standin, serve, field, value):  # noqa: F811
    standin.log.clear()
    gw = serve()
    with pytest.raises(anthropic.BadRequestError) as err:
        _anthropic(gw).messages.create(model="m", max_tokens=100, messages=[{"role": "user", "content": QUESTION}],
                                       extra_body={field: value})
    assert err.value.body["error"]["type"] == "invalid_request_error"
    assert err.value.body["error"]["message"].startswith(f"{field}: " if field != "output_config"
                                                         else "output_config.format: ")
    assert standin.log.entries() == []  # no model was called


@pytest.mark.parametrize("extra", [{"tools": []}, {"tool_choice": {"type": "none"}}, {"thinking": {"type": "disabled"}}])
def test_fields_that_ask_for_nothing_pass(standin, serve, extra):  # noqa: F811
    gw = serve()
    msg = _anthropic(gw).messages.create(model="m", max_tokens=100, messages=[{"role": "user", "content": QUESTION}],
                                         extra_body=extra, extra_headers={"x-costline-tenant": "asks-nothing"})
    assert msg.content[0].text


@pytest.mark.parametrize("path, body, message", [
    ("/v1/messages", {"temperature": 1.5}, "temperature: a number from 0 to 1"),
    ("/v1/messages", {"temperature": True}, "temperature: a number from 0 to 1"),
    ("/v1/messages", {"top_p": "0.9"}, "top_p: a number from 0 to 1"),
    ("/v1/messages", {"output_config": {"effort": "extreme"}}, "output_config.effort: one of low, medium, high"),
    ("/v1/messages", {"output_config": "high"}, "output_config: an object"),
    ("/v1/messages", {"stop_sequences": "END"}, "stop_sequences: a list of non-empty strings"),
    ("/v1/messages", {"stop_sequences": [""]}, "stop_sequences: a list of non-empty strings"),
    ("/v1/chat/completions", {"temperature": 2.5}, "temperature: a number from 0 to 2"),
    ("/v1/chat/completions", {"stop": 5}, "stop: a string or a list of strings"),
    ("/v1/chat/completions", {"stop": ["ok", 5]}, "stop: a list of non-empty strings"),
])
def test_parameters_the_api_would_refuse_are_a_400_before_any_call(standin, serve, path, body, message):  # noqa: F811
    """Each would fail on every tier, each a paid round trip: refused up front, naming the field."""
    standin.log.clear()
    gw = serve()
    status, _, raw = post(gw, path, {"model": "m", "max_tokens": 50,
                                     "messages": [{"role": "user", "content": QUESTION}], **body})
    assert status == 400
    assert message in raw.decode()
    assert standin.log.entries() == []


@pytest.mark.parametrize("extra, param", [
    ({"response_format": {"type": "xml"}}, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 7}}}},
     "response_format.json_schema.schema"),
    ({"logprobs": True, "top_logprobs": 3}, "logprobs"),
    ({"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}, "modalities"),
    ({"web_search_options": "on"}, "web_search_options"),
    ({"web_search_options": {"search_context_size": "huge"}}, "web_search_options"),
    ({"web_search_options": {"search_domain_filter": ["a.example"]}}, "web_search_options"),
    ({"web_search_options": {"user_location": {"type": "exact", "approximate": {"city": "Oslo"}}}},
     "web_search_options"),
    ({"web_search_options": {"user_location": {"type": "approximate", "approximate": {"country": "Norway"}}}},
     "web_search_options"),
    ({"web_search_options": {"user_location": {"type": "approximate", "approximate": {"street": "Main St"}}}},
     "web_search_options"),
    ({"web_search_options": {"user_location": {"type": "approximate", "approximate": {"city": ""}}}},
     "web_search_options"),
    ({"web_search_options": {}, "tools": [{"type": "function", "function": {"name": "web_search"}}]}, "tools"),
    ({"web_search_options": {}, "tools": [{"type": "function", "function": {"name": f"f{i}"}} for i in range(128)]},
     "tools"),  # 128 functions are the most a request offers; the search would be a 129th tool
    ({"reasoning_effort": "extreme"}, "reasoning_effort"),
    ({"frequency_penalty": 3}, "frequency_penalty"),
    ({"presence_penalty": "high"}, "presence_penalty"),
    ({"seed": 1.5}, "seed"),
    ({"logit_bias": {"word": 5}}, "logit_bias"),
    ({"logit_bias": {"50256": 101}}, "logit_bias"),
    ({"verbosity": "low"}, "verbosity"),  # no tier's API has a verbosity control: only OpenAI's default is answered
    ({"verbosity": "high"}, "verbosity"),
    ({"moderation": {"model": "omni-moderation-latest"}}, "moderation"),
    ({"definitely_not_a_field": 1}, "definitely_not_a_field"),  # unknown fields: refused as OpenAI refuses them
    ({"top_k": 5}, "top_k"),
])
def test_chat_fields_the_gateway_cannot_answer_are_refused(standin, serve, extra, param):  # noqa: F811
    """Each asks for an answer the gateway cannot give (log probabilities, audio) or is malformed (a response format
    of no known type, a schema that is no JSON Schema, a penalty, seed or logit bias the API would refuse, web search
    options of another shape than OpenAI's or beside a function of the search tool's name): a 400 naming the field,
    in OpenAI's format, before any model is paid."""
    standin.log.clear()
    gw = serve()
    with pytest.raises(openai.BadRequestError) as err:
        _openai(gw).chat.completions.create(model="m", messages=[{"role": "user", "content": QUESTION}],
                                            extra_body=extra)
    assert err.value.body["param"] == param
    assert standin.log.entries() == []


def test_reasoning_effort_reaches_the_anthropic_tiers_as_effort(standin, serve):  # noqa: F811
    standin.log.clear()
    gw = serve()
    out = _openai(gw).chat.completions.create(model="m", messages=[{"role": "user", "content": QUESTION}],
                                              reasoning_effort="minimal", response_format={"type": "text"},
                                              extra_headers={"x-costline-tenant": "effort"})
    assert out.choices[0].message.content
    sent = _sent(standin)
    assert sent and all(p == {"output_config": (("effort", "low"),)} for p in sent), sent


@pytest.mark.parametrize("stream", [False, True])
def test_fields_that_change_how_a_request_is_served_reach_anthropic_tiers_as_they_came(standin, serve, stream):  # noqa: F811
    """Top-level prompt caching, the service tier, fast mode, the inference region and the end user's id were
    dropped on the way (a request pinned to a region went without it); now an Anthropic tier gets them as sent —
    and only the end user's id of ``metadata`` (the tenant stays costline's)."""
    standin.log.clear()
    gw = serve()
    assert _ask_messages(gw, stream, f"carried-{stream}", extra_body={
        "cache_control": {"type": "ephemeral", "ttl": "1h"}, "service_tier": "standard_only", "speed": "fast",
        "inference_geo": "us", "metadata": {"user_id": "user-42", "task_type": "support"}})
    sent = _sent(standin)
    assert sent and all(p == {"cache_control": (("ttl", "1h"), ("type", "ephemeral")), "service_tier": "standard_only",
                              "speed": "fast", "inference_geo": "us", "metadata": (("user_id", "user-42"),)}
                        for p in sent), sent


@pytest.mark.parametrize("extra, message", [
    ({"cache_control": {"type": "persistent"}}, "cache_control: {\"type\": \"ephemeral\"}"),
    ({"service_tier": "priority"}, "service_tier: one of auto, standard_only"),
    ({"speed": "ludicrous"}, "speed: one of standard, fast"),
    ({"inference_geo": 7}, "inference_geo: a region name"),
    ({"metadata": {"user_id": "u" * 300}}, "metadata.user_id: a string of up to 256 characters"),
])
def test_carried_fields_the_api_would_refuse_are_a_400_before_any_call(standin, serve, extra, message):  # noqa: F811
    standin.log.clear()
    gw = serve()
    with pytest.raises(anthropic.BadRequestError) as err:
        _anthropic(gw).messages.create(model="m", max_tokens=50, messages=[{"role": "user", "content": QUESTION}],
                                       extra_body=extra)
    assert err.value.body["error"]["message"].startswith(message)
    assert standin.log.entries() == []


@pytest.mark.parametrize("route, field", [("chat", "safety_identifier"), ("chat", "user"),
                                          ("responses", "safety_identifier"), ("responses", "user")])
def test_an_openai_apps_end_user_id_reaches_anthropic_tiers_as_metadata_user_id(standin, serve, route, field):  # noqa: F811
    standin.log.clear()
    gw = serve()
    client = _openai(gw)
    body = {"model": "gpt-5-mini", field: "user-7", "extra_headers": {"x-costline-tenant": f"end-user-{route}-{field}"}}
    if route == "chat":
        client.chat.completions.create(messages=[{"role": "user", "content": QUESTION}], **body)
    else:
        client.responses.create(input=QUESTION, **body)
    sent = _sent(standin)
    assert sent and all(p.get("metadata") == (("user_id", "user-7"),) for p in sent), sent
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(messages=[{"role": "user", "content": QUESTION}], **{**body, field: "u" * 300})
    assert err.value.body["param"] == field


@pytest.mark.parametrize("stream", [False, True])
def test_chat_only_parameters_reach_the_student_and_never_an_anthropic_tier(standin, student_pipeline, tmp_path,
                                                                            stream):
    """``frequency_penalty``, ``presence_penalty``, ``seed`` and ``logit_bias`` have no Messages API field (the API
    refuses a request that sends one): an OpenAI-compatible tier gets them; an Anthropic tier answers without
    them. Until 2026-12-03 the student never got them either."""
    from costline.serving.gateway.app import Gateway
    from costline.serving.settings import GatewayConfig

    standin.log.clear()
    fields = dict(frequency_penalty=0.5, presence_penalty=-0.25, seed=42, logit_bias={"50256": -100})
    gw = Gateway(student_pipeline, GatewayConfig(keys_file=tmp_path / "keys.json", rate_limit_per_minute=0), port=0)
    gw.start()
    try:
        for route in ("classify", "support"):  # the student, then an Anthropic tier
            kwargs = dict(model="m", max_completion_tokens=100, messages=[{"role": "user", "content": QUESTION}],
                          extra_headers={"x-costline-tenant": f"chat-only-{stream}-{route}",
                                         "x-costline-task-type": route}, **fields)
            if stream:
                assert "".join(c.choices[0].delta.content or "" for c in _openai(gw).chat.completions.create(
                    stream=True, **kwargs) if c.choices)
            else:
                assert _openai(gw).chat.completions.create(**kwargs).choices[0].message.content
    finally:
        gw.shutdown()
    student, *anthropic_calls = standin.log.paid()
    assert student.api == "openai"
    assert {k: v for k, v in student.sampling if k in fields} == {
        "frequency_penalty": 0.5, "presence_penalty": -0.25, "seed": 42, "logit_bias": (("50256", -100),)}
    assert anthropic_calls and all(c.api == "anthropic" and not set(dict(c.sampling)) & set(fields)
                                   for c in anthropic_calls)


@pytest.mark.parametrize("stream", [False, True])
def test_the_anthropic_beta_header_and_context_management_reach_anthropic_tiers(standin, serve, stream):  # noqa: F811
    """The SDK's ``betas=`` (the ``anthropic-beta`` header: a 1M-token context, interleaved thinking…) and the
    context-management beta's ``context_management`` were dropped on the way; an Anthropic tier now gets both."""
    standin.log.clear()
    gw = serve()
    edits = {"edits": [{"type": "clear_tool_uses_20250919"}]}
    kwargs = dict(model="claude-sonnet-4-5", max_tokens=200, messages=[{"role": "user", "content": QUESTION}],
                  betas=["context-1m-2025-08-07", "context-management-2025-06-27"],
                  extra_body={"context_management": edits}, extra_headers={"x-costline-tenant": f"betas-{stream}"})
    if stream:
        with _anthropic(gw).beta.messages.stream(**kwargs) as s:
            assert "".join(s.text_stream)
    else:
        assert _anthropic(gw).beta.messages.create(**kwargs).content[0].text
    calls = standin.log.paid()
    assert calls and all(c.api == "anthropic" for c in calls)
    assert all(c.betas == ("context-1m-2025-08-07", "context-management-2025-06-27") for c in calls)
    assert all(dict(c.sampling)["context_management"] == (("edits", [{"type": "clear_tool_uses_20250919"}]),)
               for c in calls)


@pytest.mark.parametrize("header", ["UPPER-case", ",".join(f"beta-{i}" for i in range(17)), "a b"])
def test_a_malformed_beta_header_is_a_400(standin, serve, header):  # noqa: F811
    standin.log.clear()
    gw = serve()
    with pytest.raises(anthropic.BadRequestError) as err:
        _anthropic(gw).messages.create(model="m", max_tokens=50, messages=[{"role": "user", "content": QUESTION}],
                                       extra_headers={"anthropic-beta": header})
    assert "anthropic-beta" in err.value.body["error"]["message"]
    assert standin.log.entries() == []


#: What the openai SDK and common apps send on ordinary requests: each carried, or left out because it does not change
#: the answer (store, service_tier, the prompt-cache hints, prediction), never refused.
ORDINARY_CHAT_FIELDS = dict(
    store=True, service_tier="auto", prompt_cache_key="app-1", prompt_cache_retention="24h",
    prediction={"type": "content", "content": "Settings"}, parallel_tool_calls=True, safety_identifier="u-1",
    metadata={"feature": "billing"}, stream_options=None, n=1, logprobs=False, modalities=["text"], verbosity="medium",
    frequency_penalty=0, presence_penalty=0, seed=7, stop=None, temperature=1, top_p=1, max_completion_tokens=300,
    response_format={"type": "text"}, reasoning_effort="low", tool_choice="auto", tools=[])


@pytest.mark.parametrize("route", ["chat", "responses"])
def test_unknown_fields_are_refused_as_openai_refuses_them_and_ordinary_ones_pass(standin, serve, route):  # noqa: F811
    """Until now an unknown field (or verbosity) was accepted and dropped: the answer was as if the request had not
    asked. Now it is OpenAI's 400 naming it; the fields the SDK sends for an ordinary request still pass."""
    gw = serve()
    app = openai.OpenAI(base_url=f"http://127.0.0.1:{gw.port}/v1", api_key="unused", max_retries=0,
                        default_headers={"x-costline-tenant": f"fields-{route}"})
    if route == "chat":
        def ask(**extra):
            return app.chat.completions.create(model="gpt-5", messages=[{"role": "user", "content": QUESTION}],
                                               **extra).choices[0].message.content
        ordinary = ORDINARY_CHAT_FIELDS
    else:
        def ask(**extra):
            return app.responses.create(model="gpt-5", input=QUESTION, **extra).output_text
        ordinary = dict(store=False, service_tier="auto", prompt_cache_key="app-1", truncation="auto",
                        parallel_tool_calls=True, safety_identifier="u-1", metadata={"feature": "billing"},
                        text={"format": {"type": "text"}, "verbosity": "medium"},
                        reasoning={"effort": "low", "summary": "auto"}, max_output_tokens=300, temperature=1)
    assert ask(**ordinary)
    standin.log.clear()
    with pytest.raises(openai.BadRequestError) as err:
        ask(extra_body={"definitely_not_a_field": 1})
    assert err.value.body == {"message": "Unrecognized request argument supplied: definitely_not_a_field",
                              "type": "invalid_request_error", "param": "definitely_not_a_field", "code": None}
    verbosity = {"verbosity": "low"} if route == "chat" else {"text": {"verbosity": "low"}}
    with pytest.raises(openai.BadRequestError) as err:
        ask(**verbosity)
    assert err.value.body["param"] == ("verbosity" if route == "chat" else "text.verbosity")
    assert standin.log.entries() == []  # no model was called
