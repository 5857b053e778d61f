"""Structured answers of the local stand-in: what a model held to a JSON Schema (or told to answer in JSON) writes.

* :func:`schema_instance` — an instance of a JSON Schema, built from the stand-in's answer text: every property
  of an object (required or not), one item per array (or ``minItems``), the first ``enum`` / ``const`` value, the
  first non-null branch of ``anyOf`` / ``oneOf`` / a type list, ``$ref`` inside the schema followed; strings hold
  the answer's text, numbers their ``minimum`` (else 1). Real APIs constrain decoding to the schema (Anthropic's
  ``output_config.format``, vLLM's guided decoding), so these always follow it;
* :func:`asks_for_json` — a system prompt that tells the model to answer with a JSON object (there is no schema
  then, and nothing constrains the decoding);
* :func:`json_object_answer` — the answer to such a prompt: one JSON object — or, from a tier the question is too
  hard for, the object after a sentence of prose (what a weaker model does when only told), which a strict JSON
  reader rejects.

Everything is a pure function of its arguments.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["answer_text", "asks_for_json", "json_object_answer", "schema_instance"]

#: The trailing confidence marker of a stand-in answer (a structured answer carries none).
_MARKER = re.compile(r"\s*\(confidence: [0-9.]+\)\s*\Z")
#: How deep :func:`schema_instance` follows a schema (a recursive schema stops there with null).
_MAX_DEPTH = 12
_FORMATS = {"date": "2026-12-03", "date-time": "2026-12-03T09:00:00Z", "time": "09:00:00", "email": "standin@example.com",
            "uri": "https://example.com/standin", "uuid": "00000000-0000-4000-8000-000000000000"}


def answer_text(text: str) -> str:
    """A stand-in answer without its confidence marker."""
    return _MARKER.sub("", text)


def asks_for_json(system_text: str) -> bool:
    """True when the system prompt tells the model to answer with a JSON object."""
    return "json object" in system_text.lower()


def json_object_answer(text: str, *, adequate: bool) -> str:
    """The answer to a prompt that asks for a JSON object: ``{"answer": text}``; prose before it when not
    ``adequate``."""
    doc = json.dumps({"answer": answer_text(text)})
    return doc if adequate else f"Here is the JSON you asked for: {doc}"


def schema_instance(schema: Any, text: str) -> Any:
    """An instance of the JSON Schema ``schema`` whose strings hold ``text`` (its confidence marker removed)."""
    return _instance(schema, schema if isinstance(schema, Mapping) else {}, answer_text(text), 0)


def _resolve(ref: str, root: Mapping[str, Any]) -> Any:
    node: Any = root
    for part in ref.lstrip("#").strip("/").split("/") if ref not in ("#", "") else []:
        part = part.replace("~1", "/").replace("~0", "~")
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def _instance(schema: Any, root: Mapping[str, Any], text: str, depth: int) -> Any:
    if depth > _MAX_DEPTH or not isinstance(schema, Mapping):
        return None
    if isinstance(schema.get("$ref"), str):
        return _instance(_resolve(schema["$ref"], root), root, text, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            chosen = next((o for o in options if not (isinstance(o, Mapping) and o.get("type") == "null")), options[0])
            return _instance(chosen, root, text, depth + 1)
    if isinstance(schema.get("allOf"), list) and schema["allOf"]:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            if isinstance(part, Mapping):
                merged.update(part)
        return _instance({**merged, **{k: v for k, v in schema.items() if k != "allOf"}}, root, text, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        props = schema.get("properties") if isinstance(schema.get("properties"), Mapping) else {}
        return {str(name): _instance(spec, root, text, depth + 1) for name, spec in props.items()}
    if kind == "array":
        count = schema.get("minItems") if isinstance(schema.get("minItems"), int) else 1
        return [_instance(schema.get("items"), root, text, depth + 1) for _ in range(max(count, 0))]
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        value = (low + (1 if "exclusiveMinimum" in schema and "minimum" not in schema else 0)) \
            if isinstance(low, (int, float)) and not isinstance(low, bool) else 1
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    fmt = schema.get("format")
    value = _FORMATS.get(fmt, text) if isinstance(fmt, str) else text
    limit = schema.get("maxLength")
    return value[:limit] if isinstance(limit, int) and limit >= 0 else value
