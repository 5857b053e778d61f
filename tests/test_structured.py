"""Structured outputs (costline.serving.structured): each API's way of asking read into one format, checked as the
APIs check it; every answer checked against it; what each kind of tier is sent; and the pipeline sending an answer
that breaks its format up a tier. Expected values are written out by hand from the JSON Schema specification."""

from __future__ import annotations

import time

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pipeline_rig import ScriptedTier, ToStudent

from costline import contract as c

from costline.collectors import Recorder
from costline.serving.backends import AnthropicBackend, Prompt, Reply
from costline.serving.cache.key import scope_of_body
from costline.serving.pipeline import Pipeline
from costline.serving.registry import ModelRegistry
from costline.serving.routing.router import Router
from costline.serving.settings import EscalationConfig
from costline.serving.structured import (JSON_OBJECT, JSON_OBJECT_INSTRUCTION, JSON_SCHEMA, PATTERN_TIMEOUT_S,
                                         SCHEMA_PROBLEM, OutputFormat, from_anthropic, from_chat, from_responses)
from costline.config import Config

TICKET = {"type": "object", "additionalProperties": False, "required": ["title", "priority", "hours"],
          "properties": {"title": {"type": "string", "minLength": 3},
                         "priority": {"enum": ["low", "high"]},
                         "hours": {"type": "integer", "minimum": 1},
                         "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2}}}


# -- reading each API's field ------------------------------------------------------------------------------------
@pytest.mark.parametrize("reader, value, expected", [
    # absent / plain text: no format
    (from_chat, None, None),
    (from_chat, {"type": "text"}, None),
    (from_responses, {"format": {"type": "text"}}, None),
    (from_responses, {"verbosity": "low"}, None),
    (from_anthropic, {"output_config": {"effort": "low"}}, None),
    # JSON mode
    (from_chat, {"type": "json_object"}, (JSON_OBJECT, None)),
    (from_responses, {"format": {"type": "json_object"}}, (JSON_OBJECT, None)),
    # a schema, each API's shape
    (from_chat, {"type": "json_schema", "json_schema": {"name": "ticket", "schema": TICKET, "strict": True}},
     (JSON_SCHEMA, "ticket")),
    (from_responses, {"format": {"type": "json_schema", "name": "ticket", "schema": TICKET}}, (JSON_SCHEMA, "ticket")),
    (from_anthropic, {"output_config": {"format": {"type": "json_schema", "schema": TICKET}}}, (JSON_SCHEMA, None)),
    # the structured-outputs beta's top-level field
    (from_anthropic, {"output_format": {"type": "json_schema", "schema": TICKET}}, (JSON_SCHEMA, None)),
])
def test_each_apis_field_is_read_into_one_format(reader, value, expected) -> None:
    fmt = reader(value)
    if expected is None:
        assert fmt is None
    else:
        assert isinstance(fmt, OutputFormat) and (fmt.kind, fmt.name) == expected


@pytest.mark.parametrize("reader, value, param, says", [
    (from_chat, {"type": "yaml"}, "response_format", "json_schema"),
    (from_chat, {"type": "json_schema"}, "response_format.json_schema", "name and a schema"),
    (from_chat, {"type": "json_schema", "json_schema": {"name": "has space", "schema": TICKET}},
     "response_format.json_schema.name", "letters, digits"),
    (from_chat, {"type": "json_schema", "json_schema": {"name": "t", "schema": TICKET, "strict": "yes"}},
     "response_format.json_schema.strict", "true or false"),
    (from_chat, {"type": "json_schema", "json_schema": {"name": "t", "schema": {"type": "nope"}}},
     "response_format.json_schema.schema", "not a valid JSON Schema"),
    (from_chat, {"type": "json_schema", "json_schema": {"name": "t", "schema": [1]}},
     "response_format.json_schema.schema", "a JSON Schema object"),
    (from_responses, "json", "text", "an object"),
    (from_responses, {"format": {"type": "json_schema", "schema": TICKET}}, "text.format.name", "letters"),
    (from_anthropic, {"output_config": {"format": {"type": "json_object"}}}, "output_config.format", "json_schema"),
    (from_anthropic, {"output_config": {"format": {"type": "json_schema"}}}, "output_config.format.schema",
     "a JSON Schema object"),
    # a reference to anything outside the schema is refused before any model is asked: the gateway fetches nothing
    (from_anthropic, {"output_config": {"format": {"type": "json_schema", "schema": {
        "type": "object", "properties": {"a": {"$ref": "http://169.254.169.254/latest/meta-data"}}}}}},
     "output_config.format.schema", "points outside the schema"),
    (from_anthropic, {"output_config": {"format": {"type": "json_schema", "schema": {"$ref": "file:///etc/passwd"}}}},
     "output_config.format.schema", "points outside the schema"),
])
def test_a_malformed_format_is_refused_naming_the_parameter(reader, value, param, says) -> None:
    refused = reader(value)
    assert isinstance(refused, tuple)
    assert refused[0] == param and says in refused[1]


def test_a_property_named_ref_is_not_a_reference() -> None:
    schema = {"type": "object", "properties": {"$ref": {"type": "string"}}}
    fmt = from_anthropic({"output_config": {"format": {"type": "json_schema", "schema": schema}}})
    assert isinstance(fmt, OutputFormat)
    assert fmt.problem('{"$ref": "x"}') is None


# -- the check -----------------------------------------------------------------------------------------------------
TICKET_FORMAT = OutputFormat.of(JSON_SCHEMA, TICKET)


@pytest.mark.parametrize("answer, where", [
    ('{"title": "Broken export", "priority": "high", "hours": 2}', None),
    ('{"title": "Broken export", "priority": "high", "hours": 2, "tags": ["ui", "csv"]}', None),
    ('  {"title": "Broken export", "priority": "low", "hours": 1}\n', None),
    ('Sure! {"title": "Broken export", "priority": "high", "hours": 2}', "not valid JSON"),
    ('{"title": "Broken export", "priority": "high"}', "'hours' is a required property"),
    ('{"title": "Broken export", "priority": "urgent", "hours": 2}', "at priority"),
    ('{"title": "Broken export", "priority": "high", "hours": 0}', "at hours"),
    ('{"title": "Broken export", "priority": "high", "hours": 2.5}', "at hours"),
    ('{"title": "ab", "priority": "high", "hours": 2}', "at title"),
    ('{"title": "Broken export", "priority": "high", "hours": 2, "owner": "me"}', "Additional properties"),
    ('{"title": "Broken export", "priority": "high", "hours": 2, "tags": ["a", "b", "c"]}', "at tags"),
    ('["title"]', "(the root)"),
    ('', "not valid JSON"),
])
def test_an_answer_is_checked_against_the_schema(answer, where) -> None:
    problem = TICKET_FORMAT.problem(answer)
    if where is None:
        assert problem is None
    else:
        assert problem is not None and where in problem


@pytest.mark.parametrize("answer, ok", [('{"a": 1}', True), ('{}', True), ('[1, 2]', False), ('"text"', False),
                                        ('{"a": 1', False), ('NaN', False)])
def test_json_mode_takes_one_json_object(answer, ok) -> None:
    assert (OutputFormat.of(JSON_OBJECT).problem(answer) is None) is ok


def test_references_inside_the_schema_are_followed() -> None:
    schema = {"$defs": {"Priority": {"enum": ["low", "high"]}}, "type": "object",
              "properties": {"p": {"$ref": "#/$defs/Priority"}}, "required": ["p"]}
    fmt = OutputFormat.of(JSON_SCHEMA, schema)
    assert fmt.problem('{"p": "low"}') is None
    assert "at p" in fmt.problem('{"p": "medium"}')


def test_a_schema_that_refers_to_itself_for_ever_fails_the_answer_not_the_gateway() -> None:
    fmt = OutputFormat.of(JSON_SCHEMA, {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"})
    assert fmt.problem("{}") is not None


def test_a_pattern_is_checked_within_its_time_limit() -> None:
    fmt = OutputFormat.of(JSON_SCHEMA, {"type": "string", "pattern": "^(a|aa)+$"})
    assert fmt.problem('"aaaa"') is None
    assert "does not match" in fmt.problem('"abab"')
    started = time.monotonic()
    problem = fmt.problem('"' + "a" * 5000 + '!"')  # catastrophic backtracking under a plain backtracking engine
    assert problem is not None and "took too long" in problem
    assert time.monotonic() - started < 40 * PATTERN_TIMEOUT_S


def test_draft_07_schemas_are_read_in_their_own_dialect() -> None:
    # draft-07's tuple form of items (an array of schemas), which 2020-12 spells prefixItems
    schema = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "array",
              "items": [{"type": "string"}, {"type": "integer"}]}
    fmt = from_chat({"type": "json_schema", "json_schema": {"name": "pair", "schema": schema}})
    assert isinstance(fmt, OutputFormat)
    assert fmt.problem('["a", 1]') is None
    assert fmt.problem('["a", "b"]') is not None


@pytest.mark.parametrize("text, settled", [
    ('```json\n{"a": 1}\n```', '{"a": 1}'),
    ('```\n{"a": 1}\n```\n', '{"a": 1}'),
    ('{"a": 1}', '{"a": 1}'),
    ('Here: ```json\n{"a": 1}\n```', 'Here: ```json\n{"a": 1}\n```'),  # prose around it: left as it is
])
def test_one_code_fence_around_the_answer_is_unwrapped(text, settled) -> None:
    assert OutputFormat.of(JSON_OBJECT).settle(text) == settled


# -- the scope and what each tier is sent ---------------------------------------------------------------------------
def test_the_same_format_is_one_scope_whichever_api_asked_and_another_schema_is_another() -> None:
    """The format's schema, and its name and description where the API has them (the model reads them), are the
    scope: chat's json_schema and Responses' text.format of one name share one; the Messages API's (no name) shares
    one with an unnamed format of the same schema; another schema, prose or JSON mode are each another."""
    chat = from_chat({"type": "json_schema", "json_schema": {"name": "ticket", "schema": TICKET, "strict": True}})
    responses = from_responses({"format": {"type": "json_schema", "name": "ticket", "schema": dict(TICKET),
                                           "strict": True}})
    anthropic_ = from_anthropic({"output_config": {"format": {"type": "json_schema", "schema": dict(TICKET)}}})
    unnamed = OutputFormat.of(JSON_SCHEMA, dict(TICKET))
    other = OutputFormat.of(JSON_SCHEMA, {**TICKET, "required": ["title"]})
    body = {"model": "m", "messages": [{"role": "user", "content": "q"}], "max_tokens": 10}
    scopes = [scope_of_body({**body, "output_format": f.scope() if f else None})
              for f in (chat, responses, anthropic_, unnamed, other, None, OutputFormat.of(JSON_OBJECT))]
    assert scopes[0] == scopes[1] and scopes[2] == scopes[3]
    assert len(set(scopes[1:])) == 5


def test_an_anthropic_tier_gets_the_schema_as_its_sdk_sends_it_and_json_mode_as_an_instruction() -> None:
    backend = AnthropicBackend(ModelRegistry.from_config(Config()).tier("budget"), client=None)
    kwargs = backend._kwargs(Prompt(({"role": "user", "content": "q"},), "Be brief.", 100, (("effort", "low"),),
                                    output_format=TICKET_FORMAT))
    fmt = kwargs["output_config"]["format"]
    assert kwargs["output_config"]["effort"] == "low"
    assert fmt["type"] == "json_schema"
    # constraints the API does not enforce travel in the descriptions (anthropic.transform_schema)
    assert "minimum" not in fmt["schema"]["properties"]["hours"]
    assert "minimum: 1" in fmt["schema"]["properties"]["hours"]["description"]
    told = backend._kwargs(Prompt(({"role": "user", "content": "q"},), [{"type": "text", "text": "Be brief."}], 100,
                                  output_format=OutputFormat.of(JSON_OBJECT)))
    assert "output_config" not in told
    assert told["system"] == [{"type": "text", "text": "Be brief."}, {"type": "text", "text": JSON_OBJECT_INSTRUCTION}]


def test_an_openai_compatible_tier_gets_response_format() -> None:
    assert OutputFormat.of(JSON_OBJECT).to_chat() == {"type": "json_object"}
    named = from_responses({"format": {"type": "json_schema", "name": "ticket", "schema": TICKET, "strict": True,
                                       "description": "A support ticket."}})
    assert named.to_chat() == {"type": "json_schema", "json_schema": {
        "name": "ticket", "schema": TICKET, "description": "A support ticket.", "strict": True}}
    assert TICKET_FORMAT.to_chat()["json_schema"]["name"] == "output"


# -- the pipeline --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("student, above, served_by, success", [
    ('{"title": "Broken export", "priority": "high", "hours": 2}', "unused", "student", True),
    ('```json\n{"title": "Broken export", "priority": "high", "hours": 2}\n```', "unused", "student", True),
    ('{"title": "Broken export", "priority": "urgent", "hours": 2}',
     '{"title": "Broken export", "priority": "high", "hours": 3}', "above", True),
    ('The ticket is about the export.', '{"title": "x"}', "above", False),
])
def test_an_answer_that_breaks_its_format_goes_up_a_tier(student, above, served_by, success) -> None:
    registry = ModelRegistry.from_config(Config())
    up = registry.ladder("student", 1)[1]  # the tier above the student
    served_by = up if served_by == "above" else served_by
    tiers = {"student": ScriptedTier(registry.tier("student"), student), up: ScriptedTier(registry.tier(up), above)}
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    pipeline = Pipeline(router=Router(ToStudent(), registry), backends=tiers, recorder=Recorder(provider, env={}),
                        confidence=None, escalation=EscalationConfig(max_escalations=1))
    prompt = Prompt(({"role": "user", "content": "File a ticket: export is broken"},), None, 100,
                    output_format=TICKET_FORMAT)
    answer = pipeline.answer("File a ticket: export is broken", task_type="t", tenant="x", prompt=prompt)
    assert answer.tier == served_by and answer.success is success
    (span,) = [s for s in exporter.get_finished_spans() if s.name == c.SPAN_REQUEST]
    rejected = span.attributes.get(c.COSTLINE_REJECTED_ATTEMPTS)
    if served_by == up:
        assert answer.attempts[0].problem == SCHEMA_PROBLEM
        assert tiers[up].prompts[0].output_format == TICKET_FORMAT
        # why it escalated is on the request span (requests.rejected_attempts in the lake)
        assert rejected == ("student:output_format" if success else f"student:output_format,{up}:output_format")
    else:
        assert rejected is None
    if success:
        assert TICKET_FORMAT.problem(answer.text) is None  # what the client gets is the JSON itself, fence or not


def test_a_big_schema_is_checked_without_being_kept() -> None:
    from costline.serving import structured

    big = {"enum": [f"value-{i:06d}" for i in range(8000)]}  # ~120 KB of JSON
    fmt = OutputFormat.of(JSON_SCHEMA, big)
    assert len(fmt.schema_key) > structured.CACHED_SCHEMA_CHARS
    before = structured._validator.cache_info().currsize
    assert fmt.problem('"value-007999"') is None
    assert "is not one of" in fmt.problem('"value-9"')
    assert structured._validator.cache_info().currsize == before


SEARCH = ({"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "refunds"}},
          {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []})
CITE = [{"type": "web_search_result_location", "url": "https://a.example", "title": "A", "cited_text": "x",
         "encrypted_index": "e"}]


@pytest.mark.parametrize("content, want_text, want_types, cited", [
    # what the model wrote before it searched is not the structured answer: dropped; the answer's block (its
    # citations) kept as it came
    ([{"type": "text", "text": "I'll look that up."}, *SEARCH, {"type": "text", "text": '{"a": 1}', "citations": CITE}],
     '{"a": 1}', ["server_tool_use", "web_search_tool_result", "text"], True),
    # the answer fenced after the search: unwrapped into one text block (its citations do not survive the change)
    ([*SEARCH, {"type": "text", "text": '```json\n{"a": 1}\n```', "citations": CITE}],
     '{"a": 1}', ["server_tool_use", "web_search_tool_result", "text"], False),
    # no server tool: the whole text is the answer, as before
    ([{"type": "thinking", "thinking": "t", "signature": "s"}, {"type": "text", "text": '```json\n{"a": 1}\n```'}],
     '{"a": 1}', ["thinking", "text"], False),
])
def test_a_structured_answer_after_a_search_is_the_text_after_its_last_result(content, want_text, want_types,
                                                                              cited) -> None:
    from costline.serving.pipeline import _settled

    reply = Reply("".join(b["text"] for b in content if b["type"] == "text"), "budget", "m", "end_turn",
                  content=tuple(content))
    settled = _settled(reply, OutputFormat.of(JSON_OBJECT, None))
    assert settled.text == want_text
    assert [b["type"] for b in settled.content] == want_types
    assert bool(settled.content[-1].get("citations")) is cited
