"""How well the figure check grades: the labelled corpus (tests/fixtures/figure_corpus/), each
answer graded against its location's preset, each quantity's verdict (and stated value)
compared with its label.

    python -m bench.bench_figures          # print the table
    python -m bench.bench_figures --write  # and rewrite its section of docs/BENCHMARKS.md

Per quantity: **precision**, of the values the check reports stated (right or wrong), the share
the label states too, with the same verdict and value; **recall**, of the values the labels
state, the share the check reports alike. **Graded correctly**: the verdict (and for right or
wrong, the value) is the label's. A label is ``right <value>``, ``wrong <value>`` (a range
``lo-hi``), ``missing`` or ``ambiguous``.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bench.common import Figure, Result, at_least
from studio.pv.figures import FigureReport, Verdict, check
from studio.pv.library import load_locations
from studio.pv.location import Location
from studio.pv.prompt import build_user_prompt
from studio.pv.quantities import Quantity

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "fixtures" / "figure_corpus"
REPORT = ROOT / "docs" / "BENCHMARKS.md"
GOAL = 0.95
START, END = "<!-- figure-check:start -->", "<!-- figure-check:end -->"
_LABEL = re.compile(r"^(right|wrong)\s+(-?[\d.]+)(?:-([\d.]+))?$|^(missing|ambiguous)$")


@dataclass(frozen=True)
class Label:
    verdict: Verdict
    low: float | None = None
    high: float | None = None

    @classmethod
    def parse(cls, text: str) -> Label:
        match = _LABEL.match(str(text).strip())
        if match is None:
            raise ValueError(f"not a label: {text!r}")
        if match.group(4):
            return cls(Verdict(match.group(4)))
        low = float(match.group(2))
        return cls(Verdict(match.group(1)), low, float(match.group(3) or low))


@dataclass(frozen=True)
class Answer:
    name: str
    location: Location
    style: str
    labels: dict[Quantity, Label]
    text: str


def load_corpus(directory: Path = CORPUS) -> list[Answer]:
    locations = {location.name: location for location in load_locations()}
    answers = []
    for path in sorted(directory.glob("*.md")):
        _, front, text = path.read_text(encoding="utf-8").split("---\n", 2)
        meta = yaml.safe_load(front)
        labels = {Quantity(key): Label.parse(value) for key, value in meta["labels"].items()}
        answers.append(Answer(path.stem, locations[meta["location"]], meta.get("style", ""),
                              labels, text))
    return answers


@dataclass
class Tally:
    graded: int = 0
    correct: int = 0
    reported: int = 0  # stated values the check reports (right or wrong)
    reported_ok: int = 0
    labelled: int = 0  # stated values the labels give (right or wrong)
    labelled_ok: int = 0
    misses: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / self.graded if self.graded else 1.0

    @property
    def precision(self) -> float:
        return self.reported_ok / self.reported if self.reported else 1.0

    @property
    def recall(self) -> float:
        return self.labelled_ok / self.labelled if self.labelled else 1.0


def _agrees(report: FigureReport, quantity: Quantity, label: Label) -> bool:
    grade = next(g for g in report.grades if g.quantity is quantity)
    if grade.verdict is not label.verdict:
        return False
    if label.low is None or label.high is None:
        return True
    shown = grade.shown
    return shown is not None and abs(shown.low - label.low) < 1e-3 and \
        abs(shown.high - label.high) < 1e-3


def evaluate(answers: list[Answer]) -> dict[Quantity | None, Tally]:
    """A tally per quantity, and over all of them (key None)."""
    tallies: dict[Quantity | None, Tally] = {q: Tally() for q in Quantity}
    tallies[None] = Tally()
    for answer in answers:
        report = check(answer.text, build_user_prompt(answer.location), answer.location)
        if report.not_graded:
            raise AssertionError(f"{answer.name}: {report.not_graded}")
        graded = {grade.quantity: grade for grade in report.grades}
        if set(graded) != set(answer.labels):
            raise AssertionError(f"{answer.name}: labels {sorted(answer.labels)} but the "
                                 f"location asks {sorted(graded)}")
        for quantity, label in answer.labels.items():
            ok = _agrees(report, quantity, label)
            stated = graded[quantity].verdict in (Verdict.RIGHT, Verdict.WRONG)
            for tally in (tallies[quantity], tallies[None]):
                tally.graded += 1
                tally.correct += ok
                tally.reported += stated
                tally.reported_ok += stated and ok
                tally.labelled += label.low is not None
                tally.labelled_ok += label.low is not None and ok
                if not ok:
                    tally.misses.append(
                        f"{answer.name} {quantity.value}: labelled {label.verdict.value} "
                        f"{label.low if label.low is not None else ''}, graded "
                        f"{graded[quantity].verdict.value} "
                        f"{[s.text for s in graded[quantity].stated]}")
    return tallies


def table(tallies: dict[Quantity | None, Tally], answers: int) -> list[str]:
    lines = ["| Quantity | Labels | Graded correctly | Precision | Recall |",
             "|---|---|---|---|---|"]
    for quantity, tally in tallies.items():
        name = "**all**" if quantity is None else quantity.label
        lines.append(f"| {name} | {tally.graded} | {tally.accuracy:.1%} | "
                     f"{tally.precision:.1%} | {tally.recall:.1%} |")
    return [f"{answers} answers, {tallies[None].graded} labelled quantities; goal: "
            f"{GOAL:.0%} graded correctly.", "", *lines]


def section(answers: list[Answer], tallies: dict[Quantity | None, Tally]) -> str:
    total = tallies[None]
    lines = [START, "## Figure check: the labelled corpus", "",
             "`python -m bench.bench_figures --write` (no server; seconds). "
             "`tests/test_figure_corpus.py` fails when this section is not what the code "
             "measures now.", "",
             *table(tallies, len(answers)), "",
             f"Not graded as labelled ({len(total.misses)}):", ""]
    lines += [f"- {miss}" for miss in total.misses] or ["- none"]
    lines += ["", END]
    return "\n".join(lines)


def write_section(text: str, report: Path = REPORT) -> None:
    doc = report.read_text(encoding="utf-8")
    if START in doc:
        doc = doc[:doc.index(START)] + text + doc[doc.index(END) + len(END):]
    else:
        doc = doc.rstrip("\n") + "\n\n" + text + "\n"
    report.write_text(doc, encoding="utf-8")


def run() -> Result:
    answers = load_corpus()
    tallies = evaluate(answers)
    total = tallies[None]
    return Result(title="Figure check: labelled corpus", figures=[
        Figure("Quantities graded as labelled", total.accuracy * 100, "%",
               f">= {GOAL:.0%}", at_least(total.accuracy, GOAL)),
        Figure("Precision (stated values)", total.precision * 100, "%"),
        Figure("Recall (stated values)", total.recall * 100, "%"),
    ], notes=table(tallies, len(answers)))


def main() -> None:
    answers = load_corpus()
    tallies = evaluate(answers)
    text = section(answers, tallies)
    print(text)
    if "--write" in sys.argv[1:]:
        write_section(text)
        print(f"wrote {REPORT}")


if __name__ == "__main__":
    main()
