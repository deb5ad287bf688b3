"""What the test servers generate when a request asks for JSON: an object that satisfies the
schema (as a server's constrained decoding would make the model write it), or any JSON object
for a plain JSON request; and the schema problems a real server refuses.

The value is made from the schema alone: an object gets every required property, in the
schema's order (``sorted_keys`` for Ollama 0.5.0-0.5.1, which lost the order through a Go
map), a string a short markdown text, an integer 30, a number 12.5, the first branch of an
``anyOf``. A test may give the object to send instead (``answer``), e.g. a realistic report.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tests.servers.tokens import split_tokens

TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")
GENERIC = {"answer": "A PV recommendation.", "panels": 30}  # what "json" alone makes


def schema_problem(schema: Any) -> str | None:
    """Why a schema cannot be made into a grammar (an unknown type, a non-object), or None."""
    if not isinstance(schema, Mapping):
        return f"schema must be an object, not {type(schema).__name__}"
    kinds = schema.get("type")
    for kind in kinds if isinstance(kinds, list) else [kinds] if kinds is not None else []:
        if kind not in TYPES:
            return f'Unsupported type "{kind}"'
    for key in ("properties", "$defs"):
        for sub in (schema.get(key) or {}).values():
            if (problem := schema_problem(sub)) is not None:
                return problem
    for sub in schema.get("anyOf") or []:
        if (problem := schema_problem(sub)) is not None:
            return problem
    return None


def sample(schema: Mapping[str, Any], name: str = "answer", sorted_keys: bool = False) -> Any:
    """A value that satisfies ``schema``."""
    if "anyOf" in schema:
        return sample(schema["anyOf"][0], name, sorted_keys)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = kind[0]
    if kind == "object":
        properties = schema.get("properties") or {}
        keys = list(properties)
        if sorted_keys:
            keys.sort()
        return {key: sample(properties[key], key, sorted_keys) for key in keys}
    if kind == "array":
        return [sample(schema.get("items") or {"type": "string"}, name, sorted_keys)]
    if kind == "integer":
        return 30
    if kind == "number":
        return 12.5
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    words = name.replace("_", " ")
    return f"- The {words}, first point.\n- The {words}, **second** point."


def pieces(value: Any) -> list[str]:
    """The JSON text of ``value`` in the pieces a model would write it (joined: the text)."""
    return split_tokens(json.dumps(value, ensure_ascii=False))
