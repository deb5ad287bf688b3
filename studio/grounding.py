"""Which figures in an answer come from the prompt's data, and which did the model invent?

Deterministic: every number the answer states (kWh, kW, %, $, years, panel counts...) is
compared with the numbers in the prompt's ``## DATA CONTEXT``. A figure counts as grounded
when some context number, rounded to the precision the answer shows, equals it (53.8 and 54
match 53.76), also across the %/ratio forms (70.23% and 0.7023). Bare integers below 10 are
not judged: they are list counts and section numbers far more often than data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# A number with optional $ before, thousands separators, decimals, and % or a unit after.
NUMBER = re.compile(
    r"(?<![\w.])(?P<dollar>\$\s?)?(?P<value>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
    r"(?P<unit>\s?%|\s?(?:kWh|MWh|Wh|kW|MW|W|years?|yrs?|yr|panels?|months?|hours?|h)\b)?",
    re.IGNORECASE)
_SECTION = re.compile(r"^##\s+DATA CONTEXT\s*$(?P<body>.*?)(?=^##\s+(?!#)|\Z)",
                      re.MULTILINE | re.DOTALL | re.IGNORECASE)
_LIST_MARKER = re.compile(r"^\s*(?:\d+[.)]|#+)\s*$")
_CODE = re.compile(r"```.*?```|`[^`\n]*`", re.DOTALL)


@dataclass(frozen=True)
class Figure:
    """One number as written in the answer, where it stands, and whether it is grounded."""

    text: str
    value: float
    start: int
    end: int
    grounded: bool


@dataclass
class GroundingReport:
    figures: list[Figure] = field(default_factory=list)

    @property
    def grounded(self) -> list[Figure]:
        return [f for f in self.figures if f.grounded]

    @property
    def not_found(self) -> list[Figure]:
        return [f for f in self.figures if not f.grounded]

    @property
    def score(self) -> float | None:
        """Share of the answer's figures found in the data (None when it states none)."""
        return len(self.grounded) / len(self.figures) if self.figures else None

    def summary(self) -> str:
        if not self.figures:
            return "no figures to check"
        return f"{len(self.grounded)} grounded · {len(self.not_found)} not found"


def data_context(prompt: str) -> str:
    """The ``## DATA CONTEXT`` section of a prompt, or the whole prompt without one."""
    match = _SECTION.search(prompt)
    return match.group("body") if match else prompt


def context_numbers(prompt: str) -> list[float]:
    """Every number in the data context, with its %/ratio twin (70.23 -> 0.7023, and back)."""
    numbers: list[float] = []
    for match in NUMBER.finditer(data_context(prompt)):
        value = _value(match)
        numbers.extend((value, value / 100, value * 100))
    return numbers


def check(answer: str, prompt: str) -> GroundingReport:
    """Judge every figure in ``answer`` against the prompt's data context."""
    known = context_numbers(prompt)
    report = GroundingReport()
    code_spans = [m.span() for m in _CODE.finditer(answer)]
    for match in NUMBER.finditer(answer):
        if any(start <= match.start() < end for start, end in code_spans):
            continue
        value = _value(match)
        has_marker = bool(match.group("dollar") or match.group("unit"))
        is_integer = "." not in match.group("value")
        if is_integer and value < 10 and not has_marker:
            continue
        line_start = answer.rfind("\n", 0, match.start()) + 1
        if _LIST_MARKER.match(answer[line_start:match.end() + 1].rstrip()):
            continue  # "1." or "2)" numbering a list
        decimals = len(match.group("value").partition(".")[2])
        grounded = any(_matches(value, number, decimals) for number in known)
        report.figures.append(Figure(match.group(0).strip(), value, match.start(),
                                     match.end(), grounded))
    return report


def _value(match: re.Match[str]) -> float:
    return float(match.group("value").replace(",", ""))


def _matches(stated: float, known: float, decimals: int) -> bool:
    """``stated`` is ``known`` rounded to the precision the answer wrote it with."""
    tolerance = 0.5 * 10 ** -decimals + 1e-9
    if abs(stated - known) <= tolerance:
        return True
    # "~128 panels" or "$1,480": allow the answer to round large figures loosely (0.5 %).
    return stated >= 100 and abs(stated - known) <= 0.005 * abs(known)


def highlight_not_found(markdown: str, report: GroundingReport) -> str:
    """Mark each figure not found in the data, in markdown already made safe for display.

    Works on the display text by matching the figures' text again (its offsets differ from
    the raw answer's after sanitizing), outside code, left to right.
    """
    wanted = [f.text for f in report.not_found]
    if not wanted:
        return markdown
    pieces: list[str] = []
    position = 0
    code_spans = [m.span() for m in _CODE.finditer(markdown)]
    for match in NUMBER.finditer(markdown):
        if not wanted:
            break
        if any(start <= match.start() < end for start, end in code_spans):
            continue
        text = match.group(0).strip()
        if text == wanted[0]:
            wanted.pop(0)
            start = match.start()
            if markdown[start - 1:start] == "\\":  # keep the escape of "\$" inside the mark
                start -= 1
            end = match.start() + len(match.group(0).rstrip())
            pieces.append(markdown[position:start])
            pieces.append(f":red-background[{markdown[start:end]}]")
            position = end
    pieces.append(markdown[position:])
    return "".join(pieces)
