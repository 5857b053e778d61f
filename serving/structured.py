"""Structured outputs: an answer held to a JSON Schema (or to "one JSON object"), whichever API asked for it.

Three APIs say it three ways — the Messages API's ``output_config.format`` (or the 2025 beta's top-level
``output_format``), Chat Completions' ``response_format``, the Responses API's ``text.format`` — and :func:`from_anthropic`, :func:`from_chat` and :func:`from_responses` read
each into one :class:`OutputFormat` (or say what is wrong with it: the API would refuse it on every tier). A tier
gets it in its own API's shape (:meth:`OutputFormat.to_anthropic`, :meth:`OutputFormat.to_chat`), and every
answer is checked here (:meth:`OutputFormat.problem`) before it is accepted: a cheaper tier whose answer is not
valid JSON, or does not follow the schema, has failed, and the request goes up a tier, as for any other
answer that fails the quality bar. That check is what lets the gateway route a structured request to the
student at all.

* ``json_schema``: the answer is one JSON value valid against the schema (its own ``$schema`` dialect, Draft
  2020-12 by default; checked with the ``jsonschema`` library). References resolve inside the schema only: a
  ``$ref`` to a URL is never fetched. A schema is bounded before anything runs on it (:func:`_shape_problem`:
  its size, nodes, nesting, ``$ref`` chains and how far its references unfold — a 400 naming the field and the
  limit), and each answer's check has one budget (:class:`CheckBudget`: keyword steps and thread CPU time, shared
  by every schema node visited and every ``pattern`` / ``patternProperties`` search, each searched by the ``regex``
  module with a time limit that is a share of that budget): an answer whose check runs out of it fails the format
  (``check budget exceeded``) rather than hold a worker. ``format`` is not checked (as the JSON Schema
  specification leaves it: an annotation). Anthropic tiers get
  the schema through ``anthropic.transform_schema`` (what the SDK's own ``messages.parse`` sends: constraints
  the API cannot enforce move into descriptions — the check here still holds the answer to them);
* ``json_object``: the answer is one JSON object. The Messages API has no such mode (it takes schemas only), so
  an Anthropic tier gets :data:`JSON_OBJECT_INSTRUCTION` after the system prompt, and an answer wrapped in one
  Markdown code fence is unwrapped (:meth:`OutputFormat.settle`).

The cache keys a structured answer on its format (:meth:`OutputFormat.scope`: part of the request's exact
scope), so a JSON answer is only ever served to a request that asked for the same format.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

__all__ = ["BUDGET_EXCEEDED", "CheckBudget", "JSON_OBJECT", "JSON_OBJECT_INSTRUCTION", "JSON_SCHEMA",
           "MAX_REF_DEPTH", "MAX_SCHEMA_CHARS", "MAX_SCHEMA_DEPTH", "MAX_SCHEMA_EXPANSION", "MAX_SCHEMA_NODES",
           "OutputFormat", "PATTERN_TIMEOUT_S", "SCHEMA_PROBLEM", "from_anthropic", "from_chat", "from_responses"]

log = logging.getLogger(__name__)

JSON_SCHEMA = "json_schema"
JSON_OBJECT = "json_object"
#: What an Anthropic tier is told, after the system prompt, for a ``json_object`` request (the Messages API has
#: no JSON mode without a schema).
JSON_OBJECT_INSTRUCTION = "Answer with one JSON object and nothing else: no prose, no Markdown."
#: The most one ``pattern`` search may take (wall seconds): never more than what is left of the answer's
#: :class:`CheckBudget`, and a search that runs out of it ends the check (the answer fails its format).
PATTERN_TIMEOUT_S = 0.05
#: What a check that ran out of its :class:`CheckBudget` says (in the attempt's log line).
BUDGET_EXCEEDED = "check budget exceeded"

# -- what a schema may be (a 400 naming the field and the limit, before anything runs on it) --------------------
# No provider documents a size in bytes. OpenAI's Structured Outputs guide ("Supported schemas") documents, for
# strict schemas: at most 5,000 object properties in all, 10 levels of object nesting, 1,000 enum values and
# 120,000 characters of property names, definition names, enum and const values; Anthropic's structured outputs
# document no counts for a schema (only that recursive schemas and external $refs are unsupported). The limits
# below are the gateway's own, sized so that checking the schema (its metaschema, ~0.1 ms a node) and any answer
# against it stays polynomial and small: MAX_SCHEMA_DEPTH is well over OpenAI's 10 object levels (each takes two
# or three JSON levels), MAX_SCHEMA_CHARS matches the validator cache's bound below.
#: The schema's canonical JSON, in characters.
MAX_SCHEMA_CHARS = 64 * 1024
#: The schema's JSON objects, arrays and booleans (what can be, or hold, a subschema).
MAX_SCHEMA_NODES = 2_000
#: How deep the schema's JSON objects and arrays nest (the root is one level).
MAX_SCHEMA_DEPTH = 64
#: How many ``$ref`` / ``$dynamicRef`` one path through the schema may follow, one after another.
MAX_REF_DEPTH = 32
#: The schema's nodes counted with every reference unfolded (a ``$defs`` entry counted once per path that reaches
#: it): what bounds the work one answer value can cost (``anyOf: [{$ref: next}, {$ref: next}]`` N levels deep
#: unfolds to 2^N).
MAX_SCHEMA_EXPANSION = 20_000
#: The attempt's ``problem`` when its answer does not follow the requested format (the tier is escalated).
SCHEMA_PROBLEM = "output_format"
#: An answer inside one Markdown code fence (``` or ```json), nothing around it.
_FENCED = re.compile(r"\A\s*```[A-Za-z]*[ \t]*\n(.*)\n[ \t]*```\s*\Z", re.S)
#: A schema name as OpenAI takes it.
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")


@dataclass(frozen=True)
class OutputFormat:
    """What a structured request asked its answer to be: ``kind`` :data:`JSON_SCHEMA` (with ``schema``; ``name``,
    ``description`` and ``strict`` as OpenAI's APIs take them) or :data:`JSON_OBJECT`."""

    kind: str
    schema: Mapping[str, Any] | None = field(default=None, hash=False, compare=False)
    name: str | None = None
    description: str | None = None
    strict: bool | None = None
    #: The schema as canonical JSON (what equality, hashing and the cache scope compare).
    schema_key: str = ""

    @classmethod
    def of(cls, kind: str, schema: Mapping[str, Any] | None = None, *, name: str | None = None,
           description: str | None = None, strict: bool | None = None) -> "OutputFormat":
        key = json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False) if schema is not None else ""
        return cls(kind, schema, name, description, strict, key)

    def scope(self) -> dict[str, Any]:
        """What of the format changes the answer (the cache scope's part): the kind, the schema, and the ``name``
        and ``description`` OpenAI's APIs take beside it (the model reads them to decide what to answer: one schema
        asked for "the SHIPPING address" or "the BILLING address" gets two answers). The same format asked through
        any of the three APIs is one scope (the Messages API's has neither name nor description)."""
        return {"type": self.kind, **({"schema": json.loads(self.schema_key)} if self.schema_key else {}),
                **({"name": self.name} if self.name is not None else {}),
                **({"description": self.description} if self.description is not None else {})}

    # -- to a tier ----------------------------------------------------------------------------------------
    def to_anthropic(self) -> dict[str, Any] | None:
        """``output_config.format`` for a Messages API tier, or None for :data:`JSON_OBJECT` (see the module).

        The Messages API's format is the schema alone (no name, no description beside it), and the model reads a
        schema's descriptions (``transform_schema`` moves what the API cannot enforce into them "so that the model
        might follow them"): an OpenAI request's ``description`` becomes the schema's top-level ``description``,
        before the schema's own when it has one."""
        if self.kind != JSON_SCHEMA or self.schema is None:
            return None
        described = self._described(json.loads(self.schema_key))
        try:
            from anthropic import transform_schema  # anthropic >= 0.75: what its messages.parse sends
        except ImportError:  # pragma: no cover - an older SDK: the schema as it came
            return {"type": "json_schema", "schema": described}
        try:
            schema = transform_schema(described)
        except Exception:  # noqa: BLE001 - a schema it cannot adapt goes as it came; the API says what it thinks
            schema = described
        return {"type": "json_schema", "schema": schema}

    def _described(self, schema: dict[str, Any]) -> dict[str, Any]:
        """``schema`` with :attr:`description` as its top-level ``description`` (the schema's own after it)."""
        if not self.description or not self.description.strip():
            return schema
        own = schema.get("description")
        text = self.description if not isinstance(own, str) or not own.strip() or own == self.description \
            else f"{self.description}\n\n{own}"
        return {**schema, "description": text}

    def to_chat(self) -> dict[str, Any]:
        """``response_format`` for a Chat Completions tier (vLLM's guided decoding takes both kinds)."""
        if self.kind != JSON_SCHEMA:
            return {"type": "json_object"}
        spec: dict[str, Any] = {"name": self.name or "output", "schema": dict(self.schema or {})}
        if self.description is not None:
            spec["description"] = self.description
        if self.strict is not None:
            spec["strict"] = self.strict
        return {"type": "json_schema", "json_schema": spec}

    # -- the answer ---------------------------------------------------------------------------------------
    def settle(self, text: str) -> str:
        """The answer as the client gets it: the JSON inside one Markdown code fence, unwrapped (a model told to
        answer in JSON without a schema often fences it); any other text as it is."""
        fenced = _FENCED.match(text)
        return fenced.group(1).strip() if fenced else text

    def problem(self, text: str, *, budget: "CheckBudget | None" = None) -> str | None:
        """Why ``text`` is not an answer in this format (not JSON, not an object, not valid against the schema, or
        not checkable within ``budget`` — :meth:`CheckBudget.for_answer` when None), or None when it is one."""
        try:
            value = json.loads(text, parse_constant=_not_json)  # NaN / Infinity: no client's JSON parser reads them
        except (ValueError, RecursionError):
            return "the answer is not valid JSON"
        if self.kind == JSON_OBJECT:
            return None if isinstance(value, dict) else "the answer is not a JSON object"
        budget = budget if budget is not None else CheckBudget.for_answer(value)
        token = _BUDGET.set(budget)
        try:
            budget.start()
            error = next(_errors(self.schema_key, value), None)
        except _OverBudget as exc:
            log.info("costline: a structured answer's check stopped (%s after %d steps, %d searches): %s; "
                     "the answer fails its format", BUDGET_EXCEEDED, budget.used, budget.searches, exc)
            return f"{BUDGET_EXCEEDED}: {exc}"
        except _Unsupported as exc:
            return f"the answer could not be checked against the schema: {exc}"
        except RecursionError:
            return "the schema refers to itself without end"
        except Exception as exc:  # noqa: BLE001 - a schema the checker cannot apply fails the answer, never the gateway
            return f"the answer could not be checked against the schema ({type(exc).__name__})"
        finally:
            _BUDGET.reset(token)
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path) or "(the root)"
        return f"the answer does not follow the schema at {where}: {error.message[:200]}"


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# -- reading a request's format ------------------------------------------------------------------------------
def from_anthropic(body: Mapping[str, Any]) -> OutputFormat | None | tuple[str, str]:
    """A Messages request's ``output_config.format`` (``{"type": "json_schema", "schema": {...}}``) — or the same
    object as the top-level ``output_format`` of the structured-outputs beta (``structured-outputs-2025-11-13``,
    what SDKs of 2025 send) — None when absent, or ``(param, what is wrong)``."""
    config = body.get("output_config")
    fmt, param = (config.get("format") if isinstance(config, Mapping) else None), "output_config.format"
    if fmt is None and body.get("output_format") is not None:
        fmt, param = body.get("output_format"), "output_format"
    if fmt is None:
        return None
    if not isinstance(fmt, Mapping) or fmt.get("type") != JSON_SCHEMA:
        return param, f"{param}: {{\"type\": \"json_schema\", \"schema\": {{...}}}}"
    return _schema_format(f"{param}.schema", fmt.get("schema"))


def from_chat(response_format: Any) -> OutputFormat | None | tuple[str, str]:
    """Chat Completions' ``response_format`` (``text``, ``json_object``, or ``json_schema`` with ``json_schema:
    {name, schema, strict, description}``), None for text or absent, or ``(param, what is wrong)``."""
    def spec(fmt: Mapping[str, Any]) -> OutputFormat | tuple[str, str]:
        inner = fmt.get("json_schema")
        if not isinstance(inner, Mapping):
            return "response_format.json_schema", "response_format.json_schema: an object with a name and a schema"
        return _named("response_format.json_schema", inner)

    return _of_type("response_format", response_format, spec)


def from_responses(text: Any) -> OutputFormat | None | tuple[str, str]:
    """The Responses API's ``text.format`` (``text``, ``json_object``, or ``json_schema`` with ``name``, ``schema``,
    ``strict``, ``description`` beside the type), None for text or absent, or ``(param, what is wrong)``."""
    if text is not None and not isinstance(text, Mapping):
        return "text", "text: an object"
    return _of_type("text.format", (text or {}).get("format"), lambda fmt: _named("text.format", fmt))


def _of_type(param: str, fmt: Any, schema_of: Any) -> OutputFormat | None | tuple[str, str]:
    """An OpenAI API's format object by its ``type``: None for absent or ``text``, JSON mode, or ``schema_of(fmt)``."""
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, Mapping) else None
    if kind == "text":
        return None
    if kind == JSON_OBJECT:
        return OutputFormat.of(JSON_OBJECT)
    if kind != JSON_SCHEMA:
        return param, f"{param}: type text, json_object or json_schema"
    return schema_of(fmt)


def _named(param: str, spec: Mapping[str, Any]) -> OutputFormat | tuple[str, str]:
    name, strict, description = spec.get("name"), spec.get("strict"), spec.get("description")
    if not isinstance(name, str) or not _NAME.match(name):
        return f"{param}.name", f"{param}.name: letters, digits, _ and -, at most 64"
    if strict is not None and not isinstance(strict, bool):
        return f"{param}.strict", f"{param}.strict: true or false"
    if description is not None and not isinstance(description, str):
        return f"{param}.description", f"{param}.description: a string"
    parsed = _schema_format(f"{param}.schema", spec.get("schema"))
    if isinstance(parsed, tuple):
        return parsed
    return OutputFormat.of(JSON_SCHEMA, parsed.schema, name=name, description=description, strict=strict)


def _schema_format(param: str, schema: Any) -> OutputFormat | tuple[str, str]:
    if not isinstance(schema, Mapping):
        return param, f"{param}: a JSON Schema object"
    shape = _shape_problem(schema)  # bounded walks first: nothing below runs on a schema past the limits
    if shape is not None:
        return param, f"{param}: {shape}"
    fmt = OutputFormat.of(JSON_SCHEMA, schema)
    if len(fmt.schema_key) > MAX_SCHEMA_CHARS:
        return param, (f"{param}: the schema is {len(fmt.schema_key):,} characters of JSON, over the gateway's "
                       f"{MAX_SCHEMA_CHARS:,}: shorten its descriptions or split the task")
    remote = _remote_ref(schema)
    if remote is not None:
        return param, (f"{param}: $ref {remote[:80]!r} points outside the schema; the gateway follows references "
                       "inside it only (#/$defs/...): inline the definition")
    unfolded = _unfolded(schema)
    if unfolded is not None:
        return param, f"{param}: {unfolded}"
    try:
        from jsonschema.exceptions import SchemaError
        from jsonschema.validators import validator_for

        validator_for(schema, default=_default_dialect()).check_schema(schema)
    except SchemaError as exc:
        return param, f"{param}: not a valid JSON Schema: {exc.message[:200]}"
    except RecursionError:
        return param, f"{param}: nests too deep"
    return fmt


def _shape_problem(schema: Mapping[str, Any]) -> str | None:
    """What makes ``schema`` too big to take (its nodes, nesting, size), or a keyword the answer check cannot
    bound (a ``$schema`` below the root, ``unevaluatedProperties`` beside ``patternProperties``), or None. One walk
    that stops at the first limit passed: its cost is bounded by the limits, not by the schema."""
    nodes, chars = 0, 0
    evaluated = patterned = False
    todo: list[tuple[Any, int]] = [(schema, 1)]
    while todo:
        node, depth = todo.pop()
        if depth > MAX_SCHEMA_DEPTH and isinstance(node, (Mapping, list)):
            return f"the schema nests deeper than {MAX_SCHEMA_DEPTH} levels of JSON: flatten it or use $defs"
        if isinstance(node, (Mapping, list, bool)):
            nodes += 1
            if nodes > MAX_SCHEMA_NODES:
                return (f"the schema has more than {MAX_SCHEMA_NODES:,} objects, arrays and booleans: split the "
                        "task or simplify the schema")
        chars += 2  # at least a separator and a character for any value
        if isinstance(node, (Mapping, list)) and chars + 2 * len(node) > MAX_SCHEMA_CHARS:
            chars += 2 * len(node)  # over without a walk through them: each entry is two characters at least
        elif isinstance(node, Mapping):
            for key, value in node.items():
                chars += len(key) if isinstance(key, str) else 1
                if key == "$schema" and isinstance(value, str) and node is not schema:
                    return "$schema is taken at the root of the schema only: remove the nested one"
                evaluated = evaluated or key == "unevaluatedProperties"
                patterned = patterned or key == "patternProperties"
                todo.append((value, depth + 1))
        elif isinstance(node, list):
            todo.extend((value, depth + 1) for value in node)
        elif isinstance(node, str):
            chars += len(node)
        if chars > MAX_SCHEMA_CHARS:
            return (f"the schema is over {MAX_SCHEMA_CHARS:,} characters of JSON: shorten its descriptions or split "
                    "the task")
    if evaluated and patterned:
        return ("unevaluatedProperties beside patternProperties is not supported (the answer check cannot bound it): "
                "use additionalProperties")
    return None


def _unfolded(schema: Mapping[str, Any]) -> str | None:
    """Why ``schema`` unfolds too far through its references (more than :data:`MAX_SCHEMA_EXPANSION` nodes, or a
    chain of more than :data:`MAX_REF_DEPTH` references), or None. A reference back into its own path (a recursive
    schema) is counted once: recursion is bounded by the answer's own depth, and the check's budget."""
    expansion = _expansion(schema)
    if expansion is None:
        return "the schema nests too deep through its references: flatten it"
    count, chain = expansion
    if chain > MAX_REF_DEPTH:
        return (f"the schema follows more than {MAX_REF_DEPTH} references one after another: inline some of its "
                "definitions")
    if count > MAX_SCHEMA_EXPANSION:
        return (f"the schema unfolds to more than {MAX_SCHEMA_EXPANSION:,} nodes through its references (each "
                "anyOf / oneOf / allOf branch that refers to a shared definition repeats it): use fewer branches "
                "per definition")
    return None


def _expansion(schema: Mapping[str, Any]) -> tuple[int, int] | None:
    """(the schema's nodes with every in-schema reference unfolded, capped just past
    :data:`MAX_SCHEMA_EXPANSION`; the longest chain of references one path follows), or None when working it out
    nests past Python's stack. Nodes are counted as :func:`_shape_problem` counts them."""
    anchors: dict[str, Any] = {}
    todo: list[Any] = [schema]
    while todo:
        node = todo.pop()
        if isinstance(node, Mapping):
            for key in ("$anchor", "$dynamicAnchor"):
                if isinstance(node.get(key), str):
                    anchors.setdefault(node[key], node)
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    cap = MAX_SCHEMA_EXPANSION + 1
    done: dict[int, tuple[int, int]] = {}
    path: set[int] = set()

    def visit(node: Any) -> tuple[int, int]:
        if not isinstance(node, (Mapping, list)):
            return (1 if isinstance(node, bool) else 0), 0
        if id(node) in done:
            return done[id(node)]
        path.add(id(node))
        count, chain = 1, 0
        for value in (node.values() if isinstance(node, Mapping) else node):
            n, c = visit(value)
            count, chain = min(cap, count + n), max(chain, c)
        if isinstance(node, Mapping):
            for key in ("$ref", "$dynamicRef"):
                target = _target(schema, anchors, node.get(key))
                if target is None:
                    continue
                if id(target) in path:  # recursion: counted once (the answer's depth bounds it)
                    count, chain = min(cap, count + 1), max(chain, 1)
                    continue
                n, c = visit(target)
                count, chain = min(cap, count + n), max(chain, c + 1)
        path.discard(id(node))
        done[id(node)] = count, chain
        return count, chain

    try:
        return visit(schema)
    except RecursionError:
        return None


def _target(root: Mapping[str, Any], anchors: Mapping[str, Any], ref: Any) -> Any:
    """What the in-schema reference ``ref`` (``#``, ``#/json/pointer``, ``#anchor``) points at, or None."""
    if not isinstance(ref, str) or not ref.startswith("#"):
        return None
    fragment = unquote(ref[1:])
    if not fragment.startswith("/"):
        return anchors.get(fragment) if fragment else root
    node: Any = root
    for part in fragment[1:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _remote_ref(schema: Mapping[str, Any]) -> str | None:
    """The first ``$ref`` / ``$dynamicRef`` of ``schema`` that is not a fragment of the schema itself, or None."""
    todo: list[Any] = [schema]
    while todo:
        node = todo.pop()
        if isinstance(node, Mapping):
            for key, value in node.items():
                if key in ("$ref", "$dynamicRef") and isinstance(value, str) and not value.startswith("#"):
                    return value
                todo.append(value)
        elif isinstance(node, list):
            todo.extend(node)
    return None


def _default_dialect() -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator


# -- the check --------------------------------------------------------------------------------------------------
#: Schemas up to this size (canonical JSON) keep their validator between requests; a bigger one is rebuilt per
#: answer, so what the cache holds stays under ~256 x 64 KB whatever callers send (a body may be 8 MB). A schema a
#: request sends is at most :data:`MAX_SCHEMA_CHARS`: only a format built in code can be bigger.
CACHED_SCHEMA_CHARS = 64 * 1024
#: A check's steps: this many, plus :data:`CHECK_STEPS_PER_VALUE` for each JSON value of the answer.
CHECK_STEPS = 5_000
#: What each value of the answer adds to its check's steps (a realistic schema spends 2 to 5 a value).
CHECK_STEPS_PER_VALUE = 20
#: The most thread CPU time one answer's check may take, whatever its steps (the backstop of the step count: a
#: step's cost varies with the keyword and the values it compares).
CHECK_SECONDS = 1.0


class _OverBudget(Exception):
    """The answer's check ran out of its :class:`CheckBudget` (never caught by the validator: it ends the check)."""


class _Unsupported(Exception):
    """A schema the check cannot bound (built in code past what a request may send)."""


@dataclass
class CheckBudget:
    """One answer check's budget, shared by every schema node it visits and every regular expression it searches:
    ``steps`` (each keyword a schema node applies is one, or more for one that loops over the answer or the schema:
    ``enum``, ``required``, ``properties``, ``uniqueItems``, a search's text) and ``seconds`` of the checking
    thread's CPU time. A check past either stops: the answer fails its format (:data:`BUDGET_EXCEEDED`).

    ``used`` and ``searches`` say what a check spent (the tests read them)."""

    steps: int = CHECK_STEPS
    seconds: float = CHECK_SECONDS
    used: int = 0
    searches: int = 0
    clock: Any = time.thread_time
    _deadline: float | None = None

    @classmethod
    def for_answer(cls, value: Any) -> "CheckBudget":
        """The budget of checking ``value``: :data:`CHECK_STEPS` and :data:`CHECK_STEPS_PER_VALUE` a value."""
        return cls(steps=CHECK_STEPS + CHECK_STEPS_PER_VALUE * _values(value))

    def start(self) -> None:
        if self._deadline is None:
            self._deadline = self.clock() + self.seconds

    def left(self) -> float:
        """Seconds of the budget left (the time limit of the next search)."""
        self.start()
        return self._deadline - self.clock()

    def charge(self, steps: int = 1) -> None:
        self.used += steps
        if self.used > self.steps:
            raise _OverBudget(f"more than {self.steps:,} steps")
        if self.left() <= 0:
            raise _OverBudget(f"more than {self.seconds:g} s of CPU")


#: The budget of the check running in this thread (:meth:`OutputFormat.problem` sets it).
_BUDGET: ContextVar[CheckBudget | None] = ContextVar("costline_structured_budget", default=None)


def _values(value: Any) -> int:
    """How many JSON values ``value`` holds, itself included."""
    count, todo = 0, [value]
    while todo:
        node = todo.pop()
        count += 1
        if isinstance(node, dict):
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return count


def _errors(schema_key: str, value: Any) -> Iterator[Any]:
    """The validation errors of ``value`` against the schema (canonical JSON), best first."""
    validator = _validator(schema_key) if len(schema_key) <= CACHED_SCHEMA_CHARS else _build(schema_key)
    return validator.iter_errors(value)


@lru_cache(maxsize=256)
def _validator(schema_key: str) -> Any:
    """:func:`_build`, once per schema (a structured app sends the same few schemas over and over)."""
    return _build(schema_key)


def _build(schema_key: str) -> Any:
    """A validator of the schema: its dialect, every keyword counted against the check's budget, the regular
    expressions searched by :func:`_search`, no remote references."""
    from jsonschema.validators import validator_for
    from referencing import Registry

    schema = json.loads(schema_key)
    unbounded = _unbounded(schema)
    if unbounded is not None:
        raise _Unsupported(unbounded)
    base = validator_for(schema, default=_default_dialect())
    if isinstance(schema, dict):
        # the dialect is chosen: without its $schema, the root entered again through a $ref ("#") is checked by
        # this validator too (with it, jsonschema would switch to its own class of that dialect, unguarded)
        schema = {key: value for key, value in schema.items() if key != "$schema"}
    return _guarded(base)(schema, registry=Registry(retrieve=_refuse_remote))


def _unbounded(schema: Any) -> str | None:
    """What of ``schema`` the check could not hold to its budget, or None: a ``$schema`` below the root (the
    subschema would be checked by a validator of that dialect without the budget) or ``unevaluatedProperties``
    beside ``patternProperties`` (jsonschema searches those with ``re``, no time limit). A request's schema never
    has either (:func:`_shape_problem`); a format built in code might."""
    evaluated = patterned = False
    todo: list[Any] = [schema]
    while todo:
        node = todo.pop()
        if isinstance(node, Mapping):
            if node is not schema and isinstance(node.get("$schema"), str):
                return "a $schema below the root"
            evaluated = evaluated or "unevaluatedProperties" in node
            patterned = patterned or "patternProperties" in node
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return "unevaluatedProperties beside patternProperties" if evaluated and patterned else None


@lru_cache(maxsize=8)
def _guarded(base: Any) -> Any:
    """``base`` with every keyword charged to the check's budget, and its regular expressions searched within it."""
    from jsonschema import _keywords
    from jsonschema.validators import extend

    own = {"pattern": _pattern, "patternProperties": _pattern_properties,
           "additionalProperties": _additional_properties, "uniqueItems": _unique_items}
    keywords = {}
    for name, check in base.VALIDATORS.items():
        if name in own and check is getattr(_keywords, name, None):
            check = own[name]
        keywords[name] = _counted(name, check)
    return extend(base, keywords)


def _counted(name: str, check: Any) -> Any:
    """``check`` (one keyword), charged to the running check's budget before it runs."""
    weigh = _WEIGHTS.get(name)

    def counted(validator: Any, value: Any, instance: Any, schema: Any) -> Iterator[Any]:
        budget = _BUDGET.get()
        if budget is not None:
            budget.charge(1 + (weigh(value, instance) if weigh is not None else 0))
        errors = check(validator, value, instance, schema)
        if errors:
            yield from errors

    counted.__name__ = counted.__qualname__ = getattr(check, "__name__", name)
    return counted


def _size(value: Any) -> int:
    return len(value) if isinstance(value, (list, dict, str)) else 0


#: The keywords whose one call loops over the schema's value or the answer's: what each costs beyond one step (a
#: step — a keyword applied, a subschema entered — costs some microseconds; one comparison or lookup in such a
#: loop, a fraction of one: 32 of them are charged one step).
_WEIGHTS: dict[str, Any] = {
    "enum": lambda value, instance: _size(value) // 32,
    "const": lambda value, instance: _size(value) // 32,
    "required": lambda value, instance: _size(value) // 32,
    "properties": lambda value, instance: _size(value) // 32,
    "dependentRequired": lambda value, instance: _size(value) // 32,
    "additionalProperties": lambda value, instance: _size(instance) // 32 if isinstance(instance, dict) else 0,
    "uniqueItems": lambda value, instance: _size(instance) // 8 if isinstance(instance, list) else 0,
}


def _refuse_remote(uri: str) -> Any:
    from referencing.exceptions import NoSuchResource

    raise NoSuchResource(ref=uri)  # never fetched: a schema's $ref resolves inside the schema only


class _Unreadable(Exception):
    """A regular expression the ``regex`` module does not read."""


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> Any:
    import regex

    try:
        return regex.compile(pattern)
    except (regex.error, OverflowError, ValueError, RecursionError) as exc:
        return _Unreadable(f"the pattern {pattern[:60]!r} is not a regular expression the checker reads ({exc})")


def _search(pattern: str, text: str) -> Any:
    """``pattern`` searched in ``text``: within :data:`PATTERN_TIMEOUT_S` and what is left of the running check's
    budget (a search that runs out of it ends the check), charged one step and one for each 256 characters."""
    compiled = _compiled(pattern)
    if isinstance(compiled, _Unreadable):
        raise compiled
    budget = _BUDGET.get()
    timeout = PATTERN_TIMEOUT_S
    if budget is not None:
        budget.charge(1 + len(text) // 256)
        budget.searches += 1
        timeout = min(timeout, budget.left())
        if timeout <= 0:
            raise _OverBudget(f"no time left to search the pattern {pattern[:60]!r}")
    try:
        return compiled.search(text, timeout=timeout)
    except TimeoutError:
        raise _OverBudget(f"the pattern {pattern[:60]!r} took too long to check") from None


def _pattern(validator: Any, pattern: Any, instance: Any, schema: Any) -> Iterator[Any]:
    """``pattern``, searched by :func:`_search`."""
    from jsonschema.exceptions import ValidationError

    if not validator.is_type(instance, "string") or not isinstance(pattern, str):
        return
    try:
        found = _search(pattern, instance)
    except _Unreadable as exc:
        yield ValidationError(str(exc))
        return
    if found is None:
        yield ValidationError(f"{instance[:60]!r} does not match {pattern[:60]!r}")


def _pattern_properties(validator: Any, patterns: Any, instance: Any, schema: Any) -> Iterator[Any]:
    """``patternProperties`` as jsonschema checks it, each pattern searched by :func:`_search` (jsonschema's own
    uses ``re``, with no time limit)."""
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(validator: Any, additional: Any, instance: Any, schema: Any) -> Iterator[Any]:
    """``additionalProperties`` as jsonschema checks it, the ``patternProperties`` beside it searched by
    :func:`_search`."""
    from jsonschema.exceptions import ValidationError

    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = {key for key in instance
              if key not in properties and not any(_search(pattern, key) for pattern in patterns)}
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        if patterns:
            verb = "does" if len(extras) == 1 else "do"
            joined = ", ".join(repr(each) for each in sorted(extras))
            listed = ", ".join(repr(each) for each in sorted(patterns))
            yield ValidationError(f"{joined} {verb} not match any of the regexes: {listed}")
        else:
            verb = "was" if len(extras) == 1 else "were"
            joined = ", ".join(repr(each) for each in sorted(extras, key=str))
            yield ValidationError(f"Additional properties are not allowed ({joined} {verb} unexpected)")


def _unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Iterator[Any]:
    """``uniqueItems`` in one pass (jsonschema's falls back to comparing every pair when the items do not sort:
    objects), with jsonschema's equality: ``1`` and ``1.0`` are one value, ``true`` and ``1`` two."""
    from jsonschema.exceptions import ValidationError

    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[Any] = set()
    for item in instance:
        key = _canonical(item)
        if key in seen:
            yield ValidationError(f"{_short(instance)} has non-unique elements")
            return
        seen.add(key)


def _canonical(value: Any) -> Any:
    """A hashable stand-in for a JSON value, equal for values jsonschema's ``equal`` calls equal."""
    if isinstance(value, bool) or value is None:
        return ("b", value)
    if isinstance(value, (int, float)):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    if isinstance(value, list):
        return ("l", tuple(_canonical(each) for each in value))
    if isinstance(value, dict):
        return ("d", frozenset((key, _canonical(each)) for key, each in value.items()))
    return ("o", repr(value))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."
