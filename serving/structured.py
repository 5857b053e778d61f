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
  ``$ref`` to a URL is never fetched. ``pattern`` is checked by the ``regex`` module with a time limit
  (:data:`PATTERN_TIMEOUT_S`: a pattern that backtracks for ever fails the answer rather than hold a worker);
  ``format`` is not checked (as the JSON Schema specification leaves it: an annotation). Anthropic tiers get
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
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

__all__ = ["JSON_OBJECT", "JSON_OBJECT_INSTRUCTION", "JSON_SCHEMA", "OutputFormat", "PATTERN_TIMEOUT_S",
           "SCHEMA_PROBLEM", "from_anthropic", "from_chat", "from_responses"]

JSON_SCHEMA = "json_schema"
JSON_OBJECT = "json_object"
#: What an Anthropic tier is told, after the system prompt, for a ``json_object`` request (the Messages API has
#: no JSON mode without a schema).
JSON_OBJECT_INSTRUCTION = "Answer with one JSON object and nothing else: no prose, no Markdown."
#: How long one ``pattern`` may take to check against one string of an answer.
PATTERN_TIMEOUT_S = 0.05
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

    def problem(self, text: str) -> str | None:
        """Why ``text`` is not an answer in this format (not JSON, not an object, not valid against the schema), or
        None when it is one."""
        try:
            value = json.loads(text, parse_constant=_not_json)  # NaN / Infinity: no client's JSON parser reads them
        except (ValueError, RecursionError):
            return "the answer is not valid JSON"
        if self.kind == JSON_OBJECT:
            return None if isinstance(value, dict) else "the answer is not a JSON object"
        try:
            error = next(_errors(self.schema_key, value), None)
        except RecursionError:
            return "the schema refers to itself without end"
        except Exception as exc:  # noqa: BLE001 - a schema the checker cannot apply fails the answer, never the gateway
            return f"the answer could not be checked against the schema ({type(exc).__name__})"
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
    try:
        from jsonschema.exceptions import SchemaError
        from jsonschema.validators import validator_for

        validator_for(schema, default=_default_dialect()).check_schema(schema)
    except SchemaError as exc:
        return param, f"{param}: not a valid JSON Schema: {exc.message[:200]}"
    except RecursionError:
        return param, f"{param}: nests too deep"
    remote = _remote_ref(schema)
    if remote is not None:
        return param, (f"{param}: $ref {remote[:80]!r} points outside the schema; the gateway follows references "
                       "inside it only (#/$defs/...): inline the definition")
    return OutputFormat.of(JSON_SCHEMA, schema)


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
#: answer, so what the cache holds stays under ~256 x 64 KB whatever callers send (a body may be 8 MB).
CACHED_SCHEMA_CHARS = 64 * 1024


def _errors(schema_key: str, value: Any) -> Iterator[Any]:
    """The validation errors of ``value`` against the schema (canonical JSON), best first."""
    validator = _validator(schema_key) if len(schema_key) <= CACHED_SCHEMA_CHARS else _build(schema_key)
    return validator.iter_errors(value)


@lru_cache(maxsize=256)
def _validator(schema_key: str) -> Any:
    """:func:`_build`, once per schema (a structured app sends the same few schemas over and over)."""
    return _build(schema_key)


def _build(schema_key: str) -> Any:
    """A validator of the schema: its dialect, ``pattern`` by :func:`_pattern`, no remote references."""
    from jsonschema.validators import validator_for
    from referencing import Registry

    schema = json.loads(schema_key)
    base = validator_for(schema, default=_default_dialect())
    return _guarded(base)(schema, registry=Registry(retrieve=_refuse_remote))


@lru_cache(maxsize=8)
def _guarded(base: Any) -> Any:
    from jsonschema.validators import extend

    return extend(base, {"pattern": _pattern})


def _refuse_remote(uri: str) -> Any:
    from referencing.exceptions import NoSuchResource

    raise NoSuchResource(ref=uri)  # never fetched: a schema's $ref resolves inside the schema only


def _pattern(validator: Any, pattern: Any, instance: Any, schema: Any) -> Iterator[Any]:
    """``pattern``, searched with a time limit (:data:`PATTERN_TIMEOUT_S`)."""
    import regex
    from jsonschema.exceptions import ValidationError

    if not validator.is_type(instance, "string") or not isinstance(pattern, str):
        return
    try:
        found = regex.search(pattern, instance, timeout=PATTERN_TIMEOUT_S)
    except TimeoutError:
        yield ValidationError(f"the pattern {pattern[:60]!r} took too long to check")
        return
    except regex.error:
        yield ValidationError(f"the pattern {pattern[:60]!r} is not a regular expression the checker reads")
        return
    if found is None:
        yield ValidationError(f"{instance[:60]!r} does not match {pattern[:60]!r}")
