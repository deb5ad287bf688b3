"""Which figures in an answer come from the prompt's data, and which did the model invent?

Deterministic: every number the answer states (kWh, kW, %, $, years, panel counts...) is
compared with the numbers in the prompt's ``## DATA CONTEXT``. A figure counts as grounded
when some context number, rounded to the precision the answer shows, equals it (53.8 and 54
match 53.76), also across the %/ratio forms (70.23% and 0.7023). Bare integers below 10 are
not judged: they are list counts and section numbers far more often than data.

An answer to a prompt the server cut is not graded at all: the model never saw the data it
would be graded against (``not_graded``, which any other check of an answer against the
prompt's data asks first, as ``check_run`` does).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from studio.records.render import Mark, mark

NOT_GRADED_CUT = "prompt cut: not graded"

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
    not_graded: str | None = None  # why the answer was not judged (NOT_GRADED_CUT), if so

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
        if self.not_graded:
            return self.not_graded
        if not self.figures:
            return "no figures to check"
        return f"{len(self.grounded)} grounded · {len(self.not_found)} not found"


def data_context(prompt: str) -> str:
    """The ``## DATA CONTEXT`` section of a prompt, or the whole prompt without one."""
    match = _SECTION.search(prompt)
    return match.group("body") if match else prompt


def context_numbers(prompt: str) -> list[float]:
    """Every number in the data context; a percentage also as a ratio (70.23% -> 0.7023)
    and a ratio (a bare decimal below 10) also as a percentage (1.36 -> 136), the forms an
    answer may use."""
    numbers: list[float] = []
    for match, value in _figures(data_context(prompt), judge_all=True):
        numbers.append(value)
        unit = (match.group("unit") or "").strip()
        if unit == "%":
            numbers.append(value / 100)
        elif not unit and not match.group("dollar") and "." in match.group("value") \
                and value < 10:
            numbers.append(value * 100)  # a ratio (0.94, 1.36) said as 94%, 136%
    return numbers


def not_graded(stats: Mapping[str, Any]) -> str | None:
    """Why a run's answer must not be judged against its prompt's data (None: it may be).
    The hook every such check asks first (grounding here; a figure check alike): a prompt
    the server cut lost data the model never saw."""
    return NOT_GRADED_CUT if stats.get("prompt_truncated") else None


def check_run(answer: str, prompt: str, stats: Mapping[str, Any]) -> GroundingReport:
    """``check`` for a run with these statistics (live or stored): not graded when the
    server cut its prompt."""
    reason = not_graded(stats)
    return GroundingReport(not_graded=reason) if reason else check(answer, prompt)


def check(answer: str, prompt: str) -> GroundingReport:
    """Judge every figure in ``answer`` against the prompt's data context."""
    known = sorted(context_numbers(prompt))
    report = GroundingReport()
    for match, value in _figures(answer):
        decimals = len(match.group("value").partition(".")[2])
        grounded = _is_known(value, decimals, known)
        report.figures.append(Figure(match.group(0).strip(), value, match.start(),
                                     match.end(), grounded))
    return report


def _figures(text: str, judge_all: bool = False) -> Iterator[tuple[re.Match[str], float]]:
    """The figures of ``text`` worth judging: outside code, not list numbering, and not bare
    integers below 10 (``judge_all`` keeps those, for the data side)."""
    code_spans = [m.span() for m in _CODE.finditer(text)]
    for match in NUMBER.finditer(text):
        if any(start <= match.start() < end for start, end in code_spans):
            continue
        value = _value(match)
        if not judge_all:
            has_marker = bool(match.group("dollar") or match.group("unit"))
            if "." not in match.group("value") and value < 10 and not has_marker:
                continue
            line_start = text.rfind("\n", 0, match.start()) + 1
            if _LIST_MARKER.match(text[line_start:match.end() + 1].rstrip()):
                continue  # "1." or "2)" numbering a list
        yield match, value


def _value(match: re.Match[str]) -> float:
    return float(match.group("value").replace(",", ""))


def _is_known(stated: float, decimals: int, known: list[float]) -> bool:
    """Whether ``stated`` is one of the sorted ``known`` numbers rounded to the precision the
    answer wrote it with (a window search: a long answer has a thousand figures)."""
    tolerance = 0.5 * 10 ** -decimals + 1e-9
    if _any_between(known, stated - tolerance, stated + tolerance):
        return True
    # "~128 panels" or "$1,480": allow the answer to round large figures loosely (0.5 %),
    # |stated - known| <= 0.005 * known for the (non-negative) numbers of the data.
    return stated >= 100 and _any_between(known, stated / 1.005, stated / 0.995)


def _any_between(numbers: list[float], low: float, high: float) -> bool:
    index = bisect.bisect_left(numbers, low)
    return index < len(numbers) and numbers[index] <= high


NOT_FOUND_MARK = ":red-background[{text}]"  # how the answer shows a figure not in the data


def not_found_marks(markdown: str, report: GroundingReport) -> list[Mark]:
    """Where each figure not found in the data stands in ``markdown`` (the display text),
    with its mark.

    Figures are found again in the display text (sanitizing shifts offsets and may drop some),
    with the same rules as ``check``; the same text always has the same verdict.
    """
    not_found = {figure.text for figure in report.not_found}
    marks = []
    for match, _ in _figures(markdown):
        if match.group(0).strip() in not_found:
            end = match.start() + len(match.group(0).rstrip())
            marks.append(Mark(match.start(), end, NOT_FOUND_MARK))
    return marks


def highlight_not_found(markdown: str, report: GroundingReport) -> str:
    """Mark each figure not found in the data, in markdown already made safe for display."""
    return mark(markdown, not_found_marks(markdown, report))
