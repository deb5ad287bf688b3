"""Both checks of an answer against its prompt's data, as every page, table and export shows
them: the figure check (is each asked-for quantity right?) and the grounding check (which
figures are not in the data at all?)."""

from __future__ import annotations

import functools
import html
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from studio.pv import figures, grounding
from studio.pv import structured as structured_answer
from studio.pv.figures import FigureReport, Verdict
from studio.pv.grounding import GroundingReport
from studio.pv.location import Location
from studio.runs.request import RunRequest


@dataclass(frozen=True)
class AnswerCheck:
    """An answer's figure check and grounding check."""

    figures: FigureReport
    grounding: GroundingReport

    def lines(self, marked: bool = True) -> list[str]:
        """What a page says under the answer: the figures, then the grounding; ``marked``
        where the answer shown carries the marks (a page; not a report's plain answer)."""
        flagged = self.figures.of(Verdict.WRONG) or self.figures.of(Verdict.AMBIGUOUS)
        marks = " (marked in the answer)" if flagged and marked else ""
        found = ("" if self.grounding.not_graded or not self.grounding.not_found or not marked
                 else " (not found: highlighted)")
        return [f"Figures right: {self.figures.summary()}{marks}",
                f"Grounding: {self.grounding.summary()}{found}"]

    def highlight(self, markdown: str) -> str:
        """The display markdown with both checks' marks."""
        return figures.highlight(markdown, self.figures, self.grounding)

    def columns(self) -> dict[str, Any]:
        """The exports' columns: the figure check per quantity, and the grounding score."""
        return {**self.figures.columns(),
                "grounding_score": (None if self.grounding.score is None
                                    else round(self.grounding.score, 2)),
                "grounding_not_graded": self.grounding.not_graded or ""}


# The exports' columns of an answer's checks, in order; and their cells without an answer.
CHECK_COLUMNS: tuple[str, ...] = (*FigureReport().columns(), "grounding_score",
                                  "grounding_not_graded")
BLANK_CHECK: dict[str, Any] = dict.fromkeys(CHECK_COLUMNS, "")

_FIGURES_MEAN = ("of the quantities the question asks for (panels and kW to offset 100%, "
                 "with the EV, the budget maximum, savings, break-even, ROI), how many the "
                 "answer states right against the location's data")
FIGURES_HELP = f"Figures right: {_FIGURES_MEAN}"
GROUNDING_HELP = "Share of the answer's figures found in the prompt's data"
# What the checks are, as the reports define them (their names as the checks' lines say them).
CHECK_DEFINITIONS: dict[str, str] = {
    "Figures right": f"{_FIGURES_MEAN}: each quantity graded right, wrong, missing or "
                     "ambiguous (two different values stated), from the answer's words or a "
                     "structured answer's fields; not graded when the server cut the prompt "
                     "or the prompt's data no longer matches the location's row.",
    "Grounding": f"{GROUNDING_HELP.lower()}: a figure the data does not hold is 'not found' "
                 "(not graded when the server cut the prompt).",
}
_CHECKS_SAY = ("The figure check: each quantity the question asks for, as the answer states "
               "it, against the location's data; then the grounding: "
               f"{GROUNDING_HELP.lower()}.")
CHECKS_HELP = f"{FIGURES_HELP} · then the grounding: {GROUNDING_HELP.lower()}"


def check_cell(check: AnswerCheck | None) -> str | None:
    """A narrow table's one cell for an answer's checks: the figures right, "x of y", next
    to the grounding score: "5 of 8 · 64%" (a dash for either not graded; None: no answer)."""
    if check is None:
        return None
    score = check.grounding.score
    grounded = "–" if score is None or check.grounding.not_graded else f"{score:.0%}"
    return f"{check.figures.score or '–'} · {grounded}"


def check_dict(check: AnswerCheck | None) -> dict[str, Any]:
    """The JSON exports' "figure_check" and "grounding" of an answer (None without one)."""
    if check is None:
        return {"figure_check": None, "grounding": None}
    report, grounded = check.figures, check.grounding
    return {
        "figure_check": {
            "summary": report.summary(), "right": report.score or None,
            "not_graded": report.not_graded,
            "quantities": {grade.quantity.value: {
                "verdict": grade.verdict.value, "reference": grade.reference_value,
                "stated": [s.text for s in grade.stated]} for grade in report.grades}},
        "grounding": {"score": grounded.score, "grounded": [f.text for f in grounded.grounded],
                      "not_found": [f.text for f in grounded.not_found],
                      "not_graded": grounded.not_graded},
    }


def check_html(check: AnswerCheck | None) -> str:
    """The checks for an HTML report, escaped, saying what they check: the figure check's
    summary and a row per asked-for quantity (verdict, what the answer states, the data's
    value), then the grounding ('' without an answer)."""
    if check is None:
        return ""
    report = check.figures
    rows = "".join(
        f"<tr><td>{html.escape(grade.quantity.label)}</td><td>{grade.verdict.value}</td>"
        f"<td>{html.escape(' / '.join(s.text for s in grade.stated) or '–')}</td>"
        f"<td>{html.escape(figures.format_value(grade.quantity, grade.reference))}</td></tr>"
        for grade in report.grades)
    table = (f"<table class=checks><thead><tr><th>Quantity</th><th>Verdict</th><th>Stated</th>"
             f"<th>In the data</th></tr></thead><tbody>{rows}</tbody></table>" if rows else "")
    figures_line, grounding_line = check.lines(marked=False)
    return (f"<h4>Figure check</h4><p class=meta>{html.escape(_CHECKS_SAY)}</p>"
            f"<p class=meta>{html.escape(figures_line)}</p>{table}"
            f"<p class=meta>{html.escape(grounding_line)}</p>")


def check_run(answer: str, request: RunRequest,
              stats: Mapping[str, Any] | None = None) -> AnswerCheck | None:
    """Both checks of a run's answer (live or recorded), as its request asked it: against
    its prompt and location row, from its fields when it answered structured."""
    return check_answer(answer, request.prompt, request.location, stats,
                        structured=request.structured)


def check_answer(answer: str, prompt: str, location: Location | None,
                 stats: Mapping[str, Any] | None = None, *,
                 structured: bool = False) -> AnswerCheck | None:
    """Both checks of an answer (None for no answer): not graded when the server cut the
    prompt, and the figures not when the prompt's data is not the location's row. A
    ``structured`` answer's figures are read from its fields (what a cut one holds), its
    grounding from the report it renders."""
    if not answer:
        return None
    return _check(answer, prompt, location, bool((stats or {}).get("prompt_truncated")),
                  structured)


@functools.lru_cache(maxsize=512)
def _check(answer: str, prompt: str, location: Location | None, cut: bool,
           structured: bool = False) -> AnswerCheck:
    # Deterministic in its arguments (the statistics matter only as "the prompt was cut"),
    # and a page redraws a hundred history rows, or a table, on every rerun: remembered.
    stats = {"prompt_truncated": cut}
    if structured:
        fields = structured_answer.fields_of(answer)
        return AnswerCheck(
            figures.grade_values(structured_answer.quantities(fields), prompt, location, stats),
            grounding.check_run(structured_answer.render(fields), prompt, stats))
    return AnswerCheck(figures.check(answer, prompt, location, stats),
                       grounding.check_run(answer, prompt, stats))
