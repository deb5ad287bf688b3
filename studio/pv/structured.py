"""The structured answer: a JSON schema that holds the quantities the question asks for (typed
numbers) and the report's sections (markdown strings), its rendering as the same markdown
report the markdown format gives, the partial object read while it streams, and the final
check (valid, or why not).

One definition, ``REPORT``: a pydantic model made from ``studio.pv.quantities.SPECS`` (panel
counts integers, the rest numbers; the EV ones, break-even and ROI nullable) and the sections.
Its JSON schema (``SCHEMA``) is what every backend sends for its server to enforce; it keeps
to what all of them enforce: ``type``, ``properties``, ``required``, ``anyOf`` of a type and
null, ``additionalProperties: false``, ``title``/``description`` (xgrammar on vLLM's CPU build
takes no ``multipleOf``; llama-cpp-python's converter ignores ``minimum``/``maximum``; Ollama
0.5.0-0.5.1 keep only ``$defs``/``properties``/``required``/``title``/``type`` at the top).
Its properties are in the order the report reads, so the report draws top-down as it streams.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jiter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from backends.status import Status
from studio.pv.quantities import EV_QUANTITIES, Quantity, Unit

# The report's sections (markdown strings).
TRENDS, SIZING_NOTES, PAYBACK_NOTES, RISKS = "key_trends", "sizing_notes", "payback_notes", "risks"
SECTION_HELP = {
    TRENDS: "Markdown: the key consumption trends and seasonal patterns.",
    SIZING_NOTES: "Markdown: notes on the sizing figures above.",
    PAYBACK_NOTES: "Markdown: notes on the payback figures above.",
    RISKS: "Markdown: the main risks and caveats (nighttime load, sunlight, battery storage).",
}
SIZING = (Quantity.OFFSET_PANELS, Quantity.OFFSET_KW, Quantity.EV_PANELS, Quantity.EV_KW,
          Quantity.BUDGET_PANELS)
PAYBACK = (Quantity.SAVINGS, Quantity.BREAK_EVEN, Quantity.ROI)
# Null: no EV in the household; no break-even (and so no ROI) within reach.
NULLABLE = (*EV_QUANTITIES, Quantity.BREAK_EVEN, Quantity.ROI)
NULL_WORDS = {Quantity.EV_PANELS: "no EV", Quantity.EV_KW: "no EV",
              Quantity.BREAK_EVEN: "not reached", Quantity.ROI: "not reached"}
# The report top-down: each heading with its properties (quantities first, then the section's
# markdown). The schema's properties come in this order, so what is read first streams first.
TITLE = "## PV PANEL INSTALLATION RECOMMENDATION"
REPORT_SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("### Key trends and seasonal patterns", (TRENDS,)),
    ("### System sizing", (*SIZING, SIZING_NOTES)),
    ("### Payback and ROI", (*PAYBACK, PAYBACK_NOTES)),
    ("### Risks and caveats", (RISKS,)),
)
ORDER: tuple[str, ...] = tuple(key for _, keys in REPORT_SECTIONS for key in keys)


def _field(key: str) -> tuple[Any, Any]:
    """A property's type and pydantic field: a section's string, a quantity's number."""
    if key in SECTION_HELP:
        return str, Field(description=SECTION_HELP[key])
    quantity = Quantity(key)
    kind: Any = int if quantity.integer else float
    if quantity in NULLABLE:
        kind = kind | None
    return kind, Field(description=f"{quantity.label} ({quantity.unit.value}); a number"
                                   + (", or null" if quantity in NULLABLE else ""))


REPORT: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "PVReport", __config__=ConfigDict(extra="forbid", strict=True),
    **{str(key): _field(key) for key in ORDER})


def _schema() -> dict[str, Any]:
    schema = REPORT.model_json_schema()
    schema["required"] = list(ORDER)  # every property, nullable ones too
    schema["additionalProperties"] = False
    return schema


SCHEMA: dict[str, Any] = _schema()


# -- rendering --------------------------------------------------------------------------------
def _number(value: float) -> str:
    return f"{value:,}"


def quantity_text(quantity: Quantity, value: Any) -> str:
    """A quantity's value as the report writes it, with its unit: '30 panels', '$1,234.5'."""
    if value is None:
        return NULL_WORDS.get(quantity, "not given")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    number = _number(value)
    unit = quantity.unit
    if unit == Unit.USD:
        return f"${number}"
    if unit == Unit.PERCENT:
        return f"{number}%"
    return f"{number} {unit.value}"


def render(obj: Mapping[str, Any]) -> str:
    """The (whole or partial) object as the markdown report: a heading per section, a bullet
    per quantity with its unit, the sections' own markdown. A partial object renders what it
    holds so far, in the report's order."""
    lines = [TITLE]
    for heading, keys in REPORT_SECTIONS:
        present = [key for key in keys if key in obj]
        if not present:
            continue
        lines += ["", heading, ""]
        for key in present:
            value = obj[key]
            if key in SECTION_HELP:
                if isinstance(value, str) and value.strip():
                    lines += (["", value.strip()] if lines[-1] else [value.strip()])
                continue
            quantity = Quantity(key)
            label = quantity.label[0].upper() + quantity.label[1:]
            lines.append(f"- **{label}:** {quantity_text(quantity, value)}")
    return "\n".join(lines).rstrip() + "\n"


# -- reading it while it streams --------------------------------------------------------------
_OPEN_NUMBER = re.compile(r"([:,\[]\s*)-?(?:\d[\d.eE+-]*)?$")


def parse_partial(text: str) -> dict[str, Any]:
    """What a growing answer holds so far ({} when nothing yet, or not an object). A string
    still being written is kept as far as it goes; a number at the very end may still grow
    (``12`` of ``125``), so it is left out until something follows it."""
    # A number at the end is cut off before parsing: it may still grow, and jiter drops the
    # whole object for an open fraction ('{"a": 1, "b": 12.' reads as {}).
    buffer = _OPEN_NUMBER.sub(r"\1", text.lstrip())
    if not buffer:
        return {}
    try:
        value = jiter.from_json(buffer.encode("utf-8"), partial_mode="trailing-strings")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# -- the final check --------------------------------------------------------------------------
INCOMPLETE = {Status.STOPPED: "incomplete: stopped",
              Status.LENGTH: "incomplete: cut by max tokens (length)",
              Status.REPETITION: "incomplete: cut by the repetition guard",
              Status.ERROR: "incomplete: the run failed",
              Status.INTERRUPTED: "incomplete: interrupted",
              Status.RUNNING: "incomplete: still running"}


@dataclass(frozen=True)
class Verdict:
    """A structured answer, checked: the object when it is valid, else why not."""

    report: dict[str, Any] | None
    problem: str = ""

    @property
    def valid(self) -> bool:
        return self.report is not None

    @property
    def line(self) -> str:
        """What the page says under the answer."""
        if self.valid:
            return "Structured answer: valid JSON of the report's schema."
        return (f"Structured answer not valid ({self.problem}): the raw text is shown, and "
                "the run counts as not valid.")


def valid_share(verdicts: Sequence[Verdict]) -> str:
    """'valid structured: 4 of 5' ('' when there is none)."""
    if not verdicts:
        return ""
    return f"valid structured: {sum(v.valid for v in verdicts)} of {len(verdicts)}"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")  # NaN, Infinity: Python's, not JSON's


def counted(text: str, status: str) -> bool:
    """Whether a run counts in a share of valid structured answers: not one that failed with
    no answer at all (a server's 400 says nothing of the model's JSON)."""
    return bool(text.strip()) or status != Status.ERROR


def check(text: str, status: str = Status.FINISHED) -> Verdict:
    """The whole answer parsed strictly and validated against the schema: the object, or the
    reason it is not valid: "invalid JSON", "incomplete: ..." (a run that did not finish: its
    JSON was cut), "does not match the schema: ...". The servers' own check is not trusted:
    a converter may fall back to generic JSON without a word."""
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        if status in INCOMPLETE:
            return Verdict(None, INCOMPLETE[Status(status)])
        detail = "empty answer" if not text.strip() else str(exc)
        return Verdict(None, f"invalid JSON: {detail}")
    try:
        REPORT.model_validate(value)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in error['loc']) or 'answer'}: {error['msg']}"
                    for error in exc.errors()[:3]]
        more = len(exc.errors()) - len(problems)
        return Verdict(None, "does not match the schema: " + "; ".join(problems)
                       + (f" (and {more} more)" if more > 0 else ""))
    return Verdict(dict(value))


def quantities(obj: Mapping[str, Any]) -> dict[Quantity, float | None]:
    """The quantities a (valid or partial) object states, by ``Quantity``: a number, or None
    where it says null (no EV, no break-even); those it does not hold yet are left out."""
    values: dict[Quantity, float | None] = {}
    for quantity in Quantity:
        if quantity.value not in obj:
            continue
        value = obj[quantity.value]
        if value is None:
            values[quantity] = None
        elif isinstance(value, int | float) and not isinstance(value, bool):
            values[quantity] = float(value)
    return values


def fields_of(text: str) -> dict[str, Any]:
    """A structured answer's fields, valid or not: the whole object, or what a cut one
    holds (what the checks of its figures read)."""
    verdict = check(text)
    return verdict.report if verdict.report is not None else parse_partial(text)


def shown_text(text: str, done: bool, status: str = Status.FINISHED) -> tuple[str, Verdict | None]:
    """What the answer panel shows of a structured answer: while it streams, the report of
    what it holds so far; once ended, the report when valid, else (markdown) the raw text as
    a literal code block, with the verdict saying why."""
    if not done:
        return render(parse_partial(text)), None
    verdict = check(text, status)
    if verdict.report is not None:
        return render(verdict.report), verdict
    return raw_block(text), verdict


def raw_block(text: str) -> str:
    """``text`` as a fenced code block that nothing inside can close (markdown, shown as is)."""
    fence = "```"
    while fence in text:
        fence += "`"
    return f"{fence}text\n{text}\n{fence}\n"
