"""Structured outputs held to bounds (costline.serving.structured): a schema past the limits is a 400 naming the
field and the limit before anything runs on it, and every answer's check has one budget (steps and CPU time)
shared by every schema node it visits and every regular expression it searches: a check that runs out of it fails
the answer (``check budget exceeded``) instead of holding a worker. Realistic schemas keep working, well inside
the budget.

Assertions are on counts (steps, searches) and on what each reader answers; the one time bound is a generous
hang guard, not a performance target. Expected values are written out by hand."""

from __future__ import annotations

import json
import time

import pytest
from opentelemetry.sdk.trace import TracerProvider

from pipeline_rig import ScriptedTier, ToStudent

from costline.collectors import Recorder
from costline.config import Config
from costline.serving import structured
from costline.serving.backends import Prompt
from costline.serving.pipeline import Pipeline
from costline.serving.registry import ModelRegistry
from costline.serving.routing.router import Router
from costline.serving.settings import EscalationConfig
from costline.serving.structured import (BUDGET_EXCEEDED, JSON_SCHEMA, MAX_REF_DEPTH, MAX_SCHEMA_CHARS,
                                         MAX_SCHEMA_DEPTH, MAX_SCHEMA_EXPANSION, MAX_SCHEMA_NODES, SCHEMA_PROBLEM,
                                         CheckBudget, OutputFormat, from_anthropic, from_chat, from_responses)

#: A hang guard (thread CPU seconds), not a performance target: the old check took 2^N steps (minutes and more).
HANG_GUARD_S = 30.0


def _readers(schema):
    """The schema as each API asks for it: (reader, its argument, the parameter a refusal names)."""
    return [
        (from_anthropic, {"output_config": {"format": {"type": "json_schema", "schema": schema}}},
         "output_config.format.schema"),
        (from_anthropic, {"output_format": {"type": "json_schema", "schema": schema}}, "output_format.schema"),
        (from_chat, {"type": "json_schema", "json_schema": {"name": "out", "schema": schema}},
         "response_format.json_schema.schema"),
        (from_responses, {"format": {"type": "json_schema", "name": "out", "schema": schema}}, "text.format.schema"),
    ]


# -- realistic schemas: accepted, checked, well inside the budget ------------------------------------------------
ADDRESS = {"type": "object", "additionalProperties": False, "required": ["street", "city", "country"],
           "properties": {"street": {"type": "string"}, "city": {"type": "string"},
                          "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
                          "country": {"enum": ["US", "CA", "MX", "FR", "DE"]}}}
ITEM = {"type": "object", "additionalProperties": False, "required": ["sku", "qty", "price"],
        "properties": {"sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
                       "qty": {"type": "integer", "minimum": 1}, "price": {"type": "number", "minimum": 0},
                       "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True}}}
ORDER = {"$defs": {"Address": ADDRESS, "Item": ITEM}, "type": "object", "additionalProperties": False,
         "required": ["id", "billing", "shipping", "items", "status"],
         "properties": {"id": {"type": "string"}, "billing": {"$ref": "#/$defs/Address"},
                        "shipping": {"anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}]},
                        "items": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/Item"}},
                        "status": {"enum": ["new", "paid", "shipped"]}}}
# a recursive schema (a tree: Pydantic's self-referencing model)
TREE = {"$defs": {"Node": {"type": "object", "required": ["name", "children"], "additionalProperties": False,
                           "properties": {"name": {"type": "string"},
                                          "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}}}},
        "$ref": "#/$defs/Node"}
# what Pydantic writes for Optional fields and a nested model list, with a discriminated-ish union
PYDANTIC = {"$defs": {"Step": {"properties": {"explanation": {"title": "Explanation", "type": "string"},
                                              "output": {"title": "Output", "type": "string"}},
                               "required": ["explanation", "output"], "title": "Step", "type": "object",
                               "additionalProperties": False}},
            "properties": {"steps": {"items": {"$ref": "#/$defs/Step"}, "title": "Steps", "type": "array"},
                           "final_answer": {"title": "Final Answer", "type": "string"},
                           "confidence": {"anyOf": [{"type": "number", "minimum": 0, "maximum": 1}, {"type": "null"}],
                                          "default": None}},
            "required": ["steps", "final_answer", "confidence"], "title": "MathReasoning", "type": "object",
            "additionalProperties": False}

_ADDR = {"street": "1 Main St", "city": "Springfield", "zip": "12345", "country": "US"}
_LINE = {"sku": "ABC-1234", "qty": 2, "price": 3.5, "tags": ["gift", "fragile"]}
_TREE = {"name": "root", "children": [{"name": "a", "children": [{"name": "a1", "children": []}]},
                                      {"name": "b", "children": []}]}
_MATH = {"steps": [{"explanation": "8x + 7 = -23", "output": "8x = -30"}], "final_answer": "x = -3.75",
         "confidence": None}


@pytest.mark.parametrize("schema, good, bad, where", [
    (ORDER, {"id": "o1", "billing": _ADDR, "shipping": None, "items": [_LINE] * 200, "status": "paid"},
     {"id": "o1", "billing": _ADDR, "shipping": None, "items": [{**_LINE, "sku": "abc"}], "status": "paid"},
     "items/0/sku"),
    (ORDER, {"id": "o1", "billing": _ADDR, "shipping": _ADDR, "items": [_LINE], "status": "new"},
     {"id": "o1", "billing": {**_ADDR, "country": "ZZ"}, "shipping": None, "items": [_LINE], "status": "new"},
     "billing/country"),
    (TREE, _TREE, {"name": "root", "children": [{"name": "a"}]}, "children/0"),
    (PYDANTIC, _MATH, {**_MATH, "confidence": 2}, "confidence"),
])
def test_a_realistic_schema_is_read_by_every_api_and_its_answers_checked_inside_the_budget(schema, good, bad,
                                                                                          where) -> None:
    for reader, value, _ in _readers(schema):
        fmt = reader(value)
        assert isinstance(fmt, OutputFormat), fmt
        budget = CheckBudget.for_answer(good)
        assert fmt.problem(json.dumps(good), budget=budget) is None
        assert 0 < budget.used < budget.steps // 4  # a realistic check spends a small part of its budget
        problem = fmt.problem(json.dumps(bad))
        assert problem is not None and f"at {where}" in problem and BUDGET_EXCEEDED not in problem


def test_a_budget_grows_with_the_answer() -> None:
    # 5,000 steps, and 20 for each JSON value: {"a": [1, 2]} holds 4 values (the object, the array, two numbers)
    assert CheckBudget.for_answer({"a": [1, 2]}).steps == 5_000 + 20 * 4
    assert CheckBudget.for_answer("x").steps == 5_020


# -- hostile schemas: refused before anything runs ---------------------------------------------------------------
def _chain(n: int, last: dict) -> dict:
    """``anyOf: [{$ref: next}, {$ref: next}]`` n levels deep, then ``last``: the check of a failing answer tries
    both branches of every level, 2^n paths."""
    defs = {f"d{i}": {"anyOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}]} for i in range(n)}
    defs[f"d{n}"] = last
    return {"$defs": defs, "$ref": "#/$defs/d0"}


def _nested(levels: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(levels - 1):
        schema = {"items": schema}
    return schema  # ``levels`` levels of JSON objects


def _ref_line(hops: int) -> dict:
    """A chain of ``hops`` references, each definition only a reference to the next (no branching)."""
    defs = {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(hops - 1)}
    defs[f"d{hops - 1}"] = {"type": "string"}
    return {"$defs": defs, "$ref": "#/$defs/d0"}


HOSTILE = [  # (name, the schema past a limit, what the refusal says, the same shape just inside it or None)
    ("anyOf chain N=16", _chain(16, {"type": "string", "minLength": 100000}), "unfolds to more than 20,000",
     _chain(10, {"type": "string", "minLength": 100000})),
    ("anyOf chain N=30", _chain(30, {"type": "string", "minLength": 100000}), "unfolds to more than 20,000", None),
    ("anyOf chain N=16, not {}", _chain(16, {"not": {}}), "unfolds to more than 20,000", _chain(10, {"not": {}})),
    ("200k boolean properties", {"type": "object", "properties": {f"p{i}": {"type": "boolean"}
                                                                 for i in range(200_000)}}, "65,536 characters",
     {"type": "object", "properties": {f"p{i}": {"type": "boolean"} for i in range(1_900)}}),
    ("2,001 subschemas", {"anyOf": [True] * 1999}, "more than 2,000 objects, arrays and booleans",
     {"anyOf": [True] * 1998}),  # the root, the list and the booleans
    ("65 levels of JSON", _nested(65), "deeper than 64 levels", _nested(64)),
    ("33 references in a row", _ref_line(33), "more than 32 references", _ref_line(32)),
    ("a $schema below the root", {"type": "object", "properties": {"a": {
        "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "string", "pattern": "^(a|aa)+$"}}},
     "$schema is taken at the root",
     {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
      "properties": {"$schema": {"type": "string"}}}),  # at the root, and a property of that name: taken
    ("unevaluatedProperties beside patternProperties",
     {"type": "object", "patternProperties": {"^x": {"type": "string"}}, "unevaluatedProperties": False},
     "unevaluatedProperties beside patternProperties",
     {"type": "object", "properties": {"x": {"type": "string"}}, "unevaluatedProperties": False}),
]


def test_the_limits_are_what_the_docs_say() -> None:
    assert (MAX_SCHEMA_CHARS, MAX_SCHEMA_NODES, MAX_SCHEMA_DEPTH, MAX_REF_DEPTH, MAX_SCHEMA_EXPANSION) == (
        65_536, 2_000, 64, 32, 20_000)


@pytest.mark.parametrize("name, schema, says, inside", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_schema_past_a_limit_is_refused_by_every_api_naming_the_field_and_the_limit(name, schema, says,
                                                                                      inside) -> None:
    started = time.thread_time()
    for reader, value, param in _readers(schema):
        refused = reader(value)
        assert isinstance(refused, tuple), f"{name}: accepted"
        assert refused[0] == param and refused[1].startswith(f"{param}: ") and says in refused[1]
    assert time.thread_time() - started < HANG_GUARD_S
    if inside is not None:  # the same shape just inside the limit is taken
        for reader, value, _ in _readers(inside):
            assert isinstance(reader(value), OutputFormat), reader(value)


# -- the check's one budget ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, last", [(16, {"type": "string", "minLength": 100000}), (30, {"not": {}}),
                                     (11, {"not": {}})])
def test_an_exponential_check_stops_at_its_step_budget(n, last) -> None:
    # built in code (no request can send it past the 400): the check still stops, after its steps and no more
    fmt = OutputFormat.of(JSON_SCHEMA, _chain(n, last))
    budget = CheckBudget.for_answer("any answer")
    started = time.thread_time()
    problem = fmt.problem('"any answer"', budget=budget)
    assert problem is not None and problem.startswith(BUDGET_EXCEEDED)
    assert budget.used == budget.steps + 1 == 5_021  # the step that went over ended it
    assert time.thread_time() - started < HANG_GUARD_S


def test_many_slow_patterns_share_one_budget_the_first_timeout_ends_the_check() -> None:
    # 60 strings, each against a pattern that backtracks for ever, inside an anyOf that keeps every branch's errors:
    # one search, not 60, each with its own time limit
    slow = r"(.*)(.*)(.*)\3\2\1\d"
    props = {f"p{i}": {"type": "string", "pattern": slow} for i in range(60)}
    schema = {"anyOf": [{"type": "object", "properties": props, "required": list(props),
                         "additionalProperties": False}, {"type": "null"}]}
    fmt = from_anthropic({"output_config": {"format": {"type": "json_schema", "schema": schema}}})
    assert isinstance(fmt, OutputFormat)
    answer = json.dumps({key: "ab" * 2000 for key in props})
    budget = CheckBudget.for_answer(json.loads(answer))
    problem = fmt.problem(answer, budget=budget)
    assert problem is not None and problem.startswith(BUDGET_EXCEEDED) and "took too long" in problem
    assert budget.searches == 1


def test_a_search_gets_what_is_left_of_the_budget_and_no_more(monkeypatch) -> None:
    timeouts = []

    class _Found:
        def search(self, text, timeout):
            timeouts.append(timeout)
            return object()

    monkeypatch.setattr(structured, "_compiled", lambda pattern: _Found())
    now = [0.0]

    def clock():  # each reading of the clock: 0.01 s of CPU gone
        now[0] += 0.01
        return now[0]

    schema = {"type": "array", "items": {"type": "string", "pattern": "x"}}
    fmt = OutputFormat.of(JSON_SCHEMA, schema)
    budget = CheckBudget(steps=10_000, seconds=0.1, clock=clock)
    problem = fmt.problem(json.dumps(["x"] * 50), budget=budget)
    assert problem == f"{BUDGET_EXCEEDED}: more than 0.1 s of CPU"
    # never more than PATTERN_TIMEOUT_S (0.05), never more than what was left; the budget ran out within 50 strings
    assert timeouts and all(0 < t <= 0.05 for t in timeouts) and timeouts[-1] < 0.05
    assert len(timeouts) < 50


def test_pattern_properties_are_searched_within_the_budget() -> None:
    # jsonschema's own patternProperties / additionalProperties use re, with no time limit: "a" * 34 + "!" takes
    # re about a second against ^(a|aa)+$, each further "a" multiplying it; here it is one search with a limit
    schema = {"type": "object", "patternProperties": {"^(a|aa)+$": {"type": "string"}},
              "additionalProperties": {"type": "integer"}}
    fmt = from_chat({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    assert isinstance(fmt, OutputFormat)
    budget = CheckBudget.for_answer({"k": 1})
    problem = fmt.problem(json.dumps({"a" * 34 + "!": 1}), budget=budget)
    assert problem is not None and problem.startswith(BUDGET_EXCEEDED)
    assert budget.searches == 1
    # and they still mean what they meant
    assert fmt.problem('{"aaaa": "s", "b": 1}') is None
    assert "at aaaa" in fmt.problem('{"aaaa": 1}')
    assert "at b" in fmt.problem('{"b": "s"}')
    closed = OutputFormat.of(JSON_SCHEMA, {"type": "object", "patternProperties": {"^x": True},
                                           "additionalProperties": False})
    assert closed.problem('{"x1": 1}') is None
    assert "'y' does not match any of the regexes: '^x'" in closed.problem('{"x1": 1, "y": 2}')


@pytest.mark.parametrize("dialect", ["http://json-schema.org/draft-07/schema#",
                                     "https://json-schema.org/draft/2020-12/schema"])
def test_the_root_entered_again_through_a_reference_keeps_the_budget(dialect) -> None:
    # a root that names its dialect, entered again through "#": jsonschema switches to its own validator of that
    # dialect (no budget, pattern searched by re, ~0.5 s for 28 a's and doubling with each two more)
    schema = {"$schema": dialect, "type": "object",
              "properties": {"name": {"type": "string", "pattern": "^(a|aa)+$"}, "child": {"$ref": "#"}}}
    fmt = from_anthropic({"output_config": {"format": {"type": "json_schema", "schema": schema}}})
    assert isinstance(fmt, OutputFormat)
    assert fmt.problem('{"child": {"name": "aa", "child": {"name": "aaa"}}}') is None
    budget = CheckBudget.for_answer(1)
    problem = fmt.problem(json.dumps({"child": {"name": "a" * 34 + "!"}}), budget=budget)
    assert problem is not None and problem.startswith(BUDGET_EXCEEDED)
    assert budget.searches == 1


@pytest.mark.parametrize("items, unique", [
    ([{"a": 1}, {"a": 2}], True),
    ([{"a": 1}, {"a": 1.0}], False),  # 1 and 1.0 are one JSON number
    ([1, True], True),  # true is not 1
    ([0, False], True),
    ([[1, 2], [2, 1]], True),  # arrays are ordered
    ([{"a": [1, {"b": None}]}, {"a": [1, {"b": None}]}], False),
    ([None, "null"], True),
])
def test_unique_items_is_counted_and_keeps_json_schema_equality(items, unique) -> None:
    fmt = OutputFormat.of(JSON_SCHEMA, {"type": "array", "uniqueItems": True})
    budget = CheckBudget.for_answer(items)
    assert (fmt.problem(json.dumps(items), budget=budget) is None) is unique
    assert budget.used == 2  # type and uniqueItems, one step each (under 8 items: no more)


def test_unique_items_of_many_objects_is_one_pass() -> None:
    # jsonschema's own compares every pair of objects (they do not sort): 3,000 objects, ~4.5 million comparisons
    fmt = OutputFormat.of(JSON_SCHEMA, {"type": "array", "uniqueItems": True})
    answer = [{"n": i} for i in range(3000)]
    budget = CheckBudget.for_answer(answer)
    assert fmt.problem(json.dumps(answer), budget=budget) is None
    # one step for the type, one for uniqueItems and one for each 8 items it hashes
    assert budget.used == 1 + 1 + 3000 // 8


@pytest.mark.parametrize("schema, says", [
    ({"type": "object", "properties": {"a": {"$schema": "https://json-schema.org/draft/2020-12/schema",
                                             "pattern": "^(a|aa)+$"}}}, "a $schema below the root"),
    ({"patternProperties": {"^(a|aa)+$": True}, "unevaluatedProperties": False},
     "unevaluatedProperties beside patternProperties"),
])
def test_a_schema_built_in_code_the_budget_cannot_hold_fails_the_answer(schema, says) -> None:
    # a nested $schema switches to a validator of that dialect, without the budget (its pattern searched by re)
    problem = OutputFormat.of(JSON_SCHEMA, schema).problem(json.dumps({"a" * 34 + "!": "a" * 34 + "!"}))
    assert problem is not None and says in problem


# -- the pipeline --------------------------------------------------------------------------------------------------
def test_an_answer_whose_check_runs_out_fails_its_format_on_every_tier_and_the_request_ends() -> None:
    registry = ModelRegistry.from_config(Config())
    up = registry.ladder("student", 1)[1]
    fmt = OutputFormat.of(JSON_SCHEMA, _chain(30, {"not": {}}))
    tiers = {"student": ScriptedTier(registry.tier("student"), '"a"'), up: ScriptedTier(registry.tier(up), '"b"')}
    pipeline = Pipeline(router=Router(ToStudent(), registry), backends=tiers,
                        recorder=Recorder(TracerProvider(), env={}), confidence=None,
                        escalation=EscalationConfig(max_escalations=1))
    started = time.thread_time()
    answer = pipeline.answer("q", task_type="t", tenant="x",
                             prompt=Prompt(({"role": "user", "content": "q"},), None, 100, output_format=fmt))
    assert answer.success is False
    assert [a.problem for a in answer.attempts] == [SCHEMA_PROBLEM, SCHEMA_PROBLEM]
    assert time.thread_time() - started < HANG_GUARD_S
