"""A recorded run's columns, named once: the one serializer that the history's rows, the JSON
export and the CSV export derive from.

Outside Python a field has one name: its column in the history's ``runs`` table, its key in the
JSON export and its header in the CSV. Most keep their Python name; ``RENAMED`` lists the rest.
``columns_of`` writes a record (a ``RunRequest`` with its ``Sampling``, an ``Outcome``, a stored
run holding one) as ``{column: value}``, and ``record_of`` reads one back; the JSON's layout
(``json_of``) and the CSV's (``studio.records.store.CSV_COLUMNS``) only choose and order those
columns.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import MISSING, Field, asdict, fields, is_dataclass
from typing import Any, TypeVar, cast, get_type_hints

from backends.http import redact
from backends.sampling import Sampling
from studio.pv.structured import check
from studio.runs.request import WHOLE, Outcome, RunParams, RunRequest

# The fields whose name outside Python is not their name in Python.
RENAMED = {"system": "system_prompt", "prompt": "user_prompt", "text": "answer",
           "delivered": "delivery"}
# A request's Sampling is spread out among its columns, a column per setting; the JSON
# groups them again under "parameters".
PARAMETERS = tuple(f.name for f in fields(Sampling))
# The JSON export's keys, in order; a live run's download has those it holds (no history
# fields: id, page, the delivery recorded, notes).
JSON_KEYS = ("id", "created_at", "updated_at", "page", "group_id", "position", "started_at",
             "backend", "host", "model", "preset", "location", "parameters", "delivery",
             "answer_format", "system_prompt", "user_prompt", "thinking", "answer", "status",
             "structured_valid", "structured_problem", "error", "notes", "statistics",
             "figure_check", "grounding")

Record = TypeVar("Record")


def column(name: str) -> str:
    """A field's name outside Python."""
    return RENAMED.get(name, name)


@functools.cache
def _hints(kind: Any) -> dict[str, Any]:
    return get_type_hints(kind)


def columns_of(record: Any) -> dict[str, Any]:
    """A record's fields by column; a record held in a field (a stored run's outcome) is
    spread out among them."""
    values: dict[str, Any] = {}
    for item in fields(record):
        value = getattr(record, item.name)
        if is_dataclass(value) and not isinstance(value, type) and not item.metadata.get(WHOLE):
            values.update(columns_of(value))
        else:
            values[column(item.name)] = value
    return values


def record_of(kind: type[Record], columns: Mapping[str, Any]) -> Record:
    """``columns_of``'s inverse. A column that is missing, or NULL where the field has a
    default (a v1 row's parameters), takes the field's default; a value of another type than
    the field's (SQLite's 0/1 for a flag, a status's text) is converted to it."""
    values: dict[str, Any] = {}
    hints = _hints(cast(Any, kind))
    for item in fields(kind):  # type: ignore[arg-type]
        hint = hints[item.name]
        if is_dataclass(hint):
            values[item.name] = record_of(hint, columns)  # type: ignore[arg-type]
            continue
        value = columns.get(column(item.name))
        if value is None and _has_default(item):
            continue
        if isinstance(hint, type) and value is not None and not isinstance(value, hint):
            value = hint(value)
        values[item.name] = value
    return kind(**values)


def _has_default(item: Field[Any]) -> bool:
    return item.default is not MISSING or item.default_factory is not MISSING


def request_columns(request: RunRequest) -> dict[str, Any]:
    """A request's columns as they may be written and shown: the host without credentials."""
    return {**columns_of(request), "host": redact(request.host)}


def json_of(columns: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON export's object of a run: its columns in ``JSON_KEYS``' order, the sampling
    parameters grouped."""
    values = {**columns, "parameters": {name: columns[name] for name in PARAMETERS}}
    if is_dataclass(values.get("location")):
        values["location"] = asdict(values["location"])
    return {key: values[key] for key in JSON_KEYS if key in values}


def structured_columns(params: RunParams, outcome: Outcome) -> dict[str, Any]:
    """Whether a structured answer is valid JSON of the report's schema, and why not
    (``studio.pv.structured.check``); both None for a markdown answer."""
    if not params.structured:
        return {"structured_valid": None, "structured_problem": None}
    verdict = check(outcome.text, outcome.status)
    return {"structured_valid": verdict.valid, "structured_problem": verdict.problem or None}
