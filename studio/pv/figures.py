"""Is each figure the question asks for right? The figure check.

The question asks for specific quantities (``studio.pv.quantities``); the location's row gives
their reference values (``derive_figures``). This module finds each quantity in a markdown
answer, deterministically, and grades it:

- **right**: the stated value equals the reference within the precision the answer shows
  (half a unit of its last digit; 0.5% of a reference of 100 or more; 3% when the answer
  says "about", "~" or "≈"; panel counts exactly). A range is right when it holds the
  reference and is no wider than a quarter of it.
- **wrong**: stated, but not right (with the ratio to the reference);
- **missing**: not found with confidence: never guessed;
- **ambiguous**: two different values stated for it.

Finding a quantity: the answer is split into sections (headings); the trends and risks
sections are not read, the question asks for no quantity there. Each line, table row or
sentence is cut into clauses; a number with its unit (panels, kW, $, years or months, %)
belongs to the nearest cue of a quantity in its clause ("offset 100%", "EV", "budget",
"savings", "break-even", "ROI") that takes that unit; cues of figures the question does not ask
for ("cost", "lifetime", "per month", "battery", "warranty") keep their numbers from the
others. A table cell's number takes its cue from its row and column headers, and its unit from
them when it has none.

A structured answer's quantities are read from its fields (``grade_values``).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum, unique
from typing import Any

from studio.pv.grounding import GroundingReport, data_context, not_found_marks, not_graded
from studio.pv.location import Location
from studio.pv.prompt import data_context_text
from studio.pv.quantities import Quantity, Unit, reference_values
from studio.pv.sizing import derive_figures
from studio.records.render import Mark, mark

NO_LOCATION = "no location row: figures not graded"
NO_DATA_CONTEXT = "no DATA CONTEXT in the prompt: figures not graded"
EDITED = "the DATA CONTEXT was edited: figures not graded against {name}'s data"
APPROXIMATE_SHARE = 0.03  # "about" widens the tolerance to 3% of the reference
LOOSE_SHARE = 0.005  # a reference of 100 or more may be rounded by 0.5%
RANGE_SHARE = 0.25  # a range wider than this share of the reference states nothing


@unique
class Verdict(StrEnum):
    RIGHT = "right"
    WRONG = "wrong"
    MISSING = "missing"
    AMBIGUOUS = "ambiguous"


@dataclass(frozen=True)
class Stated:
    """One value an answer states for a quantity, in the quantity's unit."""

    quantity: Quantity
    low: float
    high: float  # equal to ``low`` but for a range
    tolerance: float  # half a unit of the last digit written, in the quantity's unit
    approximate: bool  # "about", "~", "≈"
    text: str  # as written
    start: int  # where it stands in the answer
    end: int

    @property
    def value(self) -> float:
        return (self.low + self.high) / 2

    @property
    def is_range(self) -> bool:
        return self.high != self.low

    @property
    def figure(self) -> str:
        """As written, a count without its word: "128" (of "128 panels"), "30-31"."""
        if self.quantity.integer:
            return re.sub(r"\s*(?:[x×]\s*)?(?:\d{3}\s?-?\s?W\s+)?(?:new\s+)?(?:solar\s+|PV\s+|"
                          r"rooftop\s+)?(?:panels?|modules?)$", "", self.text, flags=re.IGNORECASE)
        return self.text

    def allowance(self, reference: float) -> float:
        """How far from the reference the value may be and still be right."""
        if self.quantity.integer:
            return 0.0
        allowed = self.tolerance
        if abs(reference) >= 100:
            allowed = max(allowed, LOOSE_SHARE * abs(reference))
        if self.approximate:
            allowed = max(allowed, APPROXIMATE_SHARE * abs(reference))
        return allowed + 1e-9

    def is_right(self, reference: float) -> bool:
        allowed = self.allowance(reference)
        if self.is_range and self.high - self.low > RANGE_SHARE * abs(reference):
            return False
        return self.low - allowed <= reference <= self.high + allowed

    def agrees_with(self, other: Stated) -> bool:
        """Whether two statements say the same value (each within the other's precision)."""
        slack = max(self.tolerance, other.tolerance) + 1e-9
        return self.low - slack <= other.high and other.low - slack <= self.high


@dataclass(frozen=True)
class Grade:
    """The verdict on one asked-for quantity."""

    quantity: Quantity
    verdict: Verdict
    reference: float
    stated: tuple[Stated, ...] = ()

    @property
    def reference_value(self) -> float | int:
        """The reference as the exports write it: a count whole, a figure to 4 decimals."""
        return int(self.reference) if self.quantity.integer else round(self.reference, 4)

    @property
    def shown(self) -> Stated | None:
        """The statement graded (the most precise of those that agree)."""
        return min(self.stated, key=lambda s: s.tolerance) if self.stated else None

    @property
    def ratio(self) -> float | None:
        """The stated value over the reference (a wrong figure's "4.3x")."""
        shown = self.shown
        if shown is None or self.reference == 0:
            return None
        return shown.value / self.reference

    def describe(self) -> str:
        """"panels to offset 100%: 128 stated, 30 in the data (4.3x)"."""
        label = self.quantity.label
        reference = format_value(self.quantity, self.reference)
        if self.verdict is Verdict.AMBIGUOUS:
            values = " and ".join(dict.fromkeys(s.text for s in self.stated))
            return f"{label}: {values} stated, {reference} in the data"
        shown = self.shown
        if shown is None:
            return f"{label}: missing ({reference} in the data)"
        ratio = f" ({_times(self.ratio)})" if self.ratio is not None else ""
        return f"{label}: {shown.figure} stated, {reference} in the data{ratio}"


def _times(ratio: float) -> str:
    """A ratio that shows how far off a figure is: "4.3x", "1.03x" (not "1.0x"), "0.004x"."""
    if abs(ratio) >= 10:
        return f"{ratio:.0f}x"
    if 0.9 < abs(ratio) < 1.1:
        return f"{ratio:.2f}x"
    return f"{ratio:.2g}x" if abs(ratio) < 0.1 else f"{ratio:.1f}x"


@dataclass
class FigureReport:
    """The figure check of one answer: a grade per asked-for quantity, or why it was not
    graded."""

    grades: list[Grade] = field(default_factory=list)
    not_graded: str | None = None

    def of(self, verdict: Verdict) -> list[Grade]:
        return [grade for grade in self.grades if grade.verdict is verdict]

    @property
    def right(self) -> int:
        return len(self.of(Verdict.RIGHT))

    @property
    def asked(self) -> int:
        return len(self.grades)

    @property
    def score(self) -> str:
        """"5 of 7" (empty when not graded)."""
        return "" if self.not_graded else f"{self.right} of {self.asked}"

    def summary(self) -> str:
        """"5 of 7 right · panels to offset 100%: 128 stated, 30 in the data (4.3x) · 1
        missing"."""
        if self.not_graded:
            return self.not_graded
        parts = [f"{self.score} right"]
        parts += [grade.describe() for grade in self.of(Verdict.WRONG)]
        parts += [grade.describe() for grade in self.of(Verdict.AMBIGUOUS)]
        missing = self.of(Verdict.MISSING)
        if missing:
            parts.append(f"{len(missing)} missing ("
                         + ", ".join(grade.quantity.label for grade in missing) + ")")
        return " · ".join(parts)

    def columns(self) -> dict[str, Any]:
        """Per quantity, for the exports: ``<key>`` verdict, ``<key>_stated`` and
        ``<key>_reference``; and ``figures_right`` ("5 of 7")."""
        values: dict[str, Any] = {"figures_right": self.score,
                                  "figures_not_graded": self.not_graded or ""}
        graded = {grade.quantity: grade for grade in self.grades}
        for quantity in Quantity:
            grade = graded.get(quantity)
            shown = grade.shown if grade else None
            values[f"{quantity.value}"] = grade.verdict.value if grade else ""
            values[f"{quantity.value}_stated"] = shown.text if shown else ""
            values[f"{quantity.value}_reference"] = grade.reference_value if grade else ""
        return values


def format_value(quantity: Quantity, value: float) -> str:
    """A reference value as the data context writes it."""
    unit = quantity.unit
    if quantity.integer:
        return f"{value:,.0f}"
    if unit is Unit.USD:
        return f"${value:,.2f}"
    if unit is Unit.PERCENT:
        return f"{value:,.2f}%"
    if unit is Unit.YEARS:
        return f"{value:,.2f} years"
    return f"{value:,.2f} kW"


# --- grading -----------------------------------------------------------------------------

def reference_for(prompt: str, location: Location | None) -> dict[Quantity, float] | str:
    """The reference values of the location's row, or why there are none to grade against:
    no row, no data context, or a data context edited away from the row's."""
    if location is None:
        return NO_LOCATION
    context = data_context(prompt)
    if context is prompt or "## DATA CONTEXT" not in prompt.upper():
        return NO_DATA_CONTEXT
    if _normal(context) != _normal(data_context_text(location)) or _SECTIONS.findall(
            prompt).count("DATA CONTEXT") > 1:
        return EDITED.format(name=location.name)
    return reference_values(derive_figures(location))


_SECTIONS = re.compile(r"^##\s+(DATA CONTEXT)\s*$", re.MULTILINE | re.IGNORECASE)


def _normal(text: str) -> str:
    return " ".join(text.split())


def _gradable(prompt: str, location: Location | None,
              stats: Mapping[str, Any] | None) -> dict[Quantity, float] | str:
    """The reference values to grade against, or why not: a cut prompt first."""
    return not_graded(stats or {}) or reference_for(prompt, location)


def check(answer: str, prompt: str, location: Location | None,
          stats: Mapping[str, Any] | None = None) -> FigureReport:
    """Grade every asked-for quantity of a markdown answer against the location's row."""
    reference = _gradable(prompt, location, stats)
    if isinstance(reference, str):
        return FigureReport(not_graded=reference)
    found: dict[Quantity, list[Stated]] = {}
    for stated in find(answer):
        found.setdefault(stated.quantity, []).append(stated)
    return FigureReport([_grade(q, value, found.get(q, [])) for q, value in reference.items()])


def grade_values(values: Mapping[Quantity, float | None], prompt: str,
                 location: Location | None,
                 stats: Mapping[str, Any] | None = None) -> FigureReport:
    """Grade a structured answer's fields (typed numbers) against the location's row: a
    field is as precise as the data context's figure (two decimals; counts exact)."""
    reference = _gradable(prompt, location, stats)
    if isinstance(reference, str):
        return FigureReport(not_graded=reference)
    grades = []
    for quantity, target in reference.items():
        value = values.get(quantity)
        stated = [] if value is None else [Stated(
            quantity, float(value), float(value), 0.005, False, _plain(quantity, value), 0, 0)]
        grades.append(_grade(quantity, target, stated))
    return FigureReport(grades)


def _plain(quantity: Quantity, value: float) -> str:
    text = f"{value:g}" if not quantity.integer else f"{value:.0f}"
    unit = quantity.unit
    if unit is Unit.USD:
        return f"${text}"
    if unit is Unit.PERCENT:
        return f"{text}%"
    return f"{text} {unit.value}"


def _grade(quantity: Quantity, reference: float, stated: list[Stated]) -> Grade:
    if not stated:
        return Grade(quantity, Verdict.MISSING, reference)
    first = stated[0]
    if not all(first.agrees_with(other) for other in stated[1:]):
        return Grade(quantity, Verdict.AMBIGUOUS, reference, tuple(stated))
    best = min(stated, key=lambda s: s.tolerance)
    verdict = Verdict.RIGHT if best.is_right(reference) else Verdict.WRONG
    return Grade(quantity, verdict, reference, tuple(stated))


# --- finding the quantities ------------------------------------------------------------------

# A number as written, whole: "3,024.10" is never read as "3,024" or "0.1".
_NUM = r"(?<![\d.,])(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)(?![.,]?\d)"
_DASH = r"\s?(?:-|–|—|to)\s?"
# Each pattern's groups: an optional range start ``low``, the value, and its unit words.
# "$0.32/kWh", "$480 per panel", "$1.20/W": a price, not an amount.
_NOT_A_RATE = (r"(?!\d|\s?(?:/|per\s|a\s)\s?(?:kWh|kW|W|watt|panel|module|Wp)\b"
               r"|\s?[×x*]\s)")  # nor a factor of a product ("$0.15 × 735 kWh")
# A number and its unit may stand apart by the markup blanked between them ("**30** panels").
_GAP = r"\s{0,3}"
_MONEY = re.compile(
    rf"(?P<sign>(?<![\w.])[-−]\s?)?(?:(?:US)?\$|USD\s?)\s?(?:(?P<low>{_NUM})\s?(?P<lowk>[kK])?{_DASH}(?:(?:US)?\$|USD\s?)?"
    rf"\s?)?(?P<value>{_NUM})\s?(?P<k>[kK]\b|thousand\b)?{_NOT_A_RATE}"
    rf"|(?:(?P<low2>{_NUM}){_DASH})?(?P<value2>{_NUM})\s?(?P<k2>[kK]\s)?\s?(?:USD|dollars)\b")
_POWER = re.compile(
    rf"(?:(?P<low>{_NUM}){_DASH})?(?P<value>{_NUM}){_GAP}-?\s?(?P<unit>kWp|kWdc|kW|MWp|MW|Wp|W)"
    r"(?![a-zA-Z/²])(?!\s?(?:solar\s+|PV\s+)?(?:panels?|modules?)\b)"
    r"(?!\s+(?:more|extra|additional)\b)", re.IGNORECASE)  # "2.8 kW more": an increment
_PANELS = re.compile(
    rf"(?:(?P<low>\d+){_DASH})?(?P<value>\d+){_GAP}(?:[x×]\s?)?(?:\d{{3}}\s?-?\s?W\s+)?"
    r"(?:(?:new)\s+)?(?:solar\s+|PV\s+|rooftop\s+)?(?:panels?|modules?)\b",
    re.IGNORECASE)
_YEARS = re.compile(
    rf"(?:(?P<low>{_NUM}){_DASH})?(?P<value>{_NUM}){_GAP}-?\s?(?:years?|yrs?|yr)\b"
    r"(?:,?\s*(?:and\s+)?(?P<months>\d{1,2})\s?months?)?"
    rf"|(?:(?P<low2>\d+){_DASH})?(?P<value2>\d+)\s?-?\s?months?\b", re.IGNORECASE)
_PERCENT = re.compile(rf"(?:(?P<low>{_NUM})\s?%?{_DASH})?(?P<sign>(?<!\w)[-−]\s?|\bminus\s)?"
                      rf"(?P<value>{_NUM}){_GAP}(?:%|percent\b|per\s?cent\b)")
# A table cell that is only a number (or a range), maybe approximate: "| 32 |", "| ~30-31 |".
_BARE = re.compile(rf"\s*(?:~|≈|about\s)?\s*(?:(?P<low>{_NUM}){_DASH})?(?P<value>{_NUM})\s*")
_OTHER_SCENARIO = re.compile(
    r"\bbatter(?:y|ies)\b|\bstorage\b|\bpowerwall\b|\btax\s+credit\b|\bincentives?\b"
    r"|\brebates?\b|\b25D\b|\bITC\b|\bfinanc\w+|\bloan\b|\bsubsid\w+", re.IGNORECASE)
_DIGIT = re.compile(r"\d")
_PER_MONTH = re.compile(r"\s{0,2}(?:/\s?mo(?:nth)?\b|per\s+month\b|a\s+month\b|each\s+month\b"
                        r"|monthly\b)", re.IGNORECASE)
# "NOT 2.29 years", "rather than 31 panels": a figure denied is not the one stated.
_NEGATED = re.compile(r"\b(?:not|rather\s+than|instead\s+of|as\s+opposed\s+to|versus|vs\.?)"
                      r"\s+(?:the\s+|a\s+|an\s+)?[~≈]?\s*[-−]?\s*\$?\s*$", re.IGNORECASE)
_BOUND = re.compile(r"\b(?<!just\s)(?:under|below|less\s+than|more\s+than|beyond|above|at\s+least"
                    r"|within|exceed(?:s|ing)?|up\s+to|over)\s+(?:the\s+|a\s+)?[\"“]?\s*\$?\s*$",
                    re.IGNORECASE)
# A label, a colon and a number alone: "- Panels: 30", "System size (kW): 12".
_LABELLED = re.compile(rf"\s*(?:[-*+•]\s+)?(?P<label>[^:\n]{{2,60}}?):\s*(?:~|≈|about\s)?\s*"
                       rf"(?:(?P<low>{_NUM}){_DASH})?(?P<value>{_NUM})\s*[.;]?\s*$")
_PAYBACK_AFTER = re.compile(r"\s*(?:simple\s+)?(?:pay\s?-?back|break[- ]?even)", re.IGNORECASE)
_APPROX = re.compile(r"(?:~|≈|∼|\babout|\bapprox(?:\.|imately)?|\broughly|\baround|\bnearly"
                     r"|\balmost|\bcirca|\bca\.|\bsome|\bjust (?:over|under))\s*\**\s*$",
                     re.IGNORECASE)

# Cue words, each with the units it takes. A quantity cue hands its unit's numbers to the
# quantity; a blocking cue (None) takes them so that no quantity does.
_CueTable = tuple[tuple[str, dict[Unit, Quantity | None]], ...]
_CUE_WORDS: _CueTable = (
        # Figures the question does not ask for: they keep their numbers.
        (r"\bper\s+month\b|\bmonthly\b|/\s?mo(?:nth)?\b|\ba\s+month\b|\beach\s+month\b",
         {Unit.USD: None, Unit.PERCENT: None}),
        (r"\blifetime\b|\bcumulative\b|\btotal\s+(?:net\s+)?(?:savings|return|benefit)"
         r"|\b(?:25|twenty-five)[- ](?:year|yr)s?\s+(?:net\s+)?(?:savings|benefit|gain|profit)"
         r"|\bover\s+(?:the\s+)?(?:25|twenty-five)\s+years\b|\bnet\s+(?:gain|profit|benefit)",
         {Unit.USD: None}),
        (r"\bcost\w*|\bprice[ds]?\b|\binvest(?:ment|ed|ing)?\b|\bspend\b|\bspent\b"
         r"|\bcapex\b|\bupfront\b|\bup-front\b|\boutlay\b|\bpays?\s+for\b",
         {Unit.USD: None}),
        (r"\bwarrant(?:y|ies|ed)\b|\blifespan\b|\blife\s?time\b|\blast(?:s|ing)?\b"
         r"|\bdegrad\w*|\binverter\b",
         {Unit.YEARS: None, Unit.PERCENT: None}),
        # The system installed is not the budget's maximum (where the budget is not binding).
        (r"\b(?:budget[- ]constrained|recommended|installed|proposed|chosen|final)\s+"
         r"(?:system|array|installation|design)\b|\bsystem\s+of\b",
         {Unit.PANELS: None, Unit.KW: None}),
        (r"\binterest\b|\binflation\b", {Unit.PERCENT: None}),
        (r"\bpeak\b|\bmax(?:imum)?\s+load\b|\b(?:average|base)\s+load\b|\bload\s+of\b"
         r"|\bdemand\b|\bcharger\b|\binverter\b|\bnight\w*|\bself-consum\w*|\bexport\w*",
         {Unit.KW: None, Unit.PERCENT: None}),
        (r"\bEVs?\b|\belectric\s+(?:vehicle|car)s?\b|\bvehicle\s+charging\b|\bcar\s+charging\b",
         {Unit.PANELS: Quantity.EV_PANELS, Unit.KW: Quantity.EV_KW}),
        (r"\boffset\w*|\b100\s?%|\bfull\s+(?:offset|coverage|consumption|usage|demand|load)"
         r"|\b(?:cover|meet|supply|match|eliminate|offset)\w*\s+(?:all|100|the\s+(?:full|entire|"
         r"whole|total|annual)|your\s+(?:full|entire|whole|total|annual))"
         r"|\bnet[- ]zero\b|\bentire\s+(?:consumption|usage|load|demand)"
         r"|\bcover\w*\s+(?:your|the|its|their)\s+(?:[\d,.]+\s?kWh|consumption|usage|needs)\b"
         r"|\bcover\w*\s+everything|\ball\s+(?:of\s+)?(?:its|your|the|their)\s+"
         r"(?:use|usage|consumption|electricity|needs)",
         {Unit.PANELS: Quantity.OFFSET_PANELS, Unit.KW: Quantity.OFFSET_KW}),
        (r"\bbudget\w*|\baffordable\b|\bafford\b|\bmaximum\b|\bmax\b|\bat\s+most\b"
         r"|\bcap(?:ped)?\b|\blimit\w*",
         {Unit.PANELS: Quantity.BUDGET_PANELS, Unit.USD: None, Unit.KW: None}),
        (r"\bsav(?:ings?|es?|ed)\b|\bworth\b|(?<=\d)\s?(?:a|per|each)\s+year\b|(?<=\d)\s?/\s?y(?:ea)?r\b"
         r"|(?<=\d)\s?annually\b|\bbill\s+reduction\b|\breduce[sd]?\s+(?:your\s+)?(?:bill|"
         r"electricity)|\bbenefit\b",
         {Unit.USD: Quantity.SAVINGS}),
        (r"\bbreak[- ]?even\w*|\bbreaks?\s+even\b|\bpay\s?-?\s?back\w*|\bpa(?:ys|id|ying)\s+"
         r"(?:(?:the|its|this|itself|for|\w+)\s+){0,2}back\b|\bpays?\s+(?:for\s+)?itself|\bpaid\s+back"
         r"|\brecoup\w*|\bamorti[sz]\w*",
         {Unit.YEARS: Quantity.BREAK_EVEN}),
        (r"\bROI\b|\breturn\s+on\s+investment\b|\breturn\w*|\bover\s+(?:the\s+)?(?:25|"
         r"twenty-five)\s+years\b|\b(?:25|twenty-five)[- ]year\b",
         {Unit.PERCENT: Quantity.ROI}),
)
_CUES = tuple((re.compile(pattern, re.IGNORECASE), units) for pattern, units in _CUE_WORDS)
# The cue precedence when one clause names several: an EV figure is the EV scenario's even
# next to "offset 100%"; the budget maximum is the budget's.
_OUTRANKS = {Quantity.EV_PANELS: {Quantity.OFFSET_PANELS}, Quantity.EV_KW: {Quantity.OFFSET_KW}}

# "25-year ROI", "ROI (25 yr)", "over 25 years": the horizon, not a figure.
_HORIZON = re.compile(r"\b(?:25|twenty-five)\s?-?\s?(?:years?|yrs?|yr)\b(?=\s*\)?\s*"
                      r"(?:ROI|return|savings|net|total|horizon|period|lifetime|warranty|of\s|"
                      r"\)))|(?<=\()\s*(?:25|twenty-five)\s?-?\s?(?:years?|yrs?|yr)\s*(?=\))"
                      r"|\b(?:over|across|for|during|within|after|in)\s+(?:the\s+|a\s+)?"
                      r"(?:first\s+)?(?:25|twenty-five)\s?-?\s?(?:years?|yrs?|yr)\b",
                      re.IGNORECASE)
_SKIPPED_SECTIONS = re.compile(
    r"risk|caveat|trend|seasonal|consumption\s+(?:pattern|profile|analysis|overview)"
    r"|assumption|limitation|consideration|next\s+step|battery|storage|data\s+(?:quality|"
    r"summary|context)|household\s+profile|key\s+(?:data|figures|inputs)", re.IGNORECASE)
# A section starts at a markdown heading, a line that is only bold ("**PV sizing**"), or a
# numbered item led by a title ("2. **Sizing**: ...", "4. Risks: ..."), whose line is read.
_HEADING = re.compile(
    r"^\s{0,3}(?:#{1,6}\s+(?P<h>.+?)\s*#*\s*$"
    r"|(?:\d+[.)]\s*)?(?:\*\*|__)(?P<b>[^*_\n]{2,80}?)(?:\*\*|__):?\s*$"
    r"|\d[.)]\s+(?:\*\*|__)?(?P<n>[A-Z][^.:*_\n]{2,60})(?:\*\*|__)?[.:]?(?:\*\*|__)?[.:]?\s"
    # A closing summary after the risks restates the figures: read it.
    r"|(?:\*\*|__)?(?P<n2>(?:In\s+short|Overall|In\s+summary|Summary|Verdict|Bottom\s+line"
    r"|Conclusion|In\s+conclusion|To\s+sum\s+up|All\s+in\s+all)\b))",
    re.MULTILINE)
_TABLE_ROW = re.compile(r"^\s*\|(.*)\|\s*$")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(?:\|\s*:?-{2,}:?\s*)*\|?\s*$")
# Sentences end a clause (not "i.e." or "approx."); so does a ";".
_SENTENCE_BREAK = re.compile(r";|(?<!\bi\.e\.)(?<!\be\.g\.)(?<!approx\.)(?<!\bvs\.)(?<!\bca\.)"
                             r"(?<!\bincl\.)(?<=[^\d\s][.!?])\s+(?=\S)|(?<=\d[.!?])\s+(?=[A-Z*(])")
# Within a sentence, a softer break: ", or 35 panels with the EV".
_CLAUSE_BREAK = re.compile(r",\s+(?=(?:or|and|but|while|whereas|compared|versus|vs\.?)\b)"
                           r"|\s+[—–]\s+|\s+-\s+(?=[A-Za-z])|\s+\|\s+")
_UNIT_WORDS = ((Unit.PANELS, re.compile(r"panels?|modules?|count", re.IGNORECASE)),
               (Unit.KW, re.compile(r"\bkWp?\b|\bkWdc\b|size|capacity", re.IGNORECASE)),
               (Unit.USD, re.compile(r"\$|USD|dollars|savings", re.IGNORECASE)),
               (Unit.YEARS, re.compile(r"(?<!-)\byears?\b|(?<!-)\byrs?\b|break[- ]?even|payback",
                                       re.IGNORECASE)),
               (Unit.PERCENT, re.compile(r"%|percent|ROI", re.IGNORECASE)))


def _clean(text: str) -> str:
    """The answer with markdown emphasis, escapes and code ticks blanked (offsets kept)."""
    return re.sub(r"[*_`\\]", " ", text)


def find(answer: str) -> list[Stated]:
    """Every statement of an asked-for quantity in a markdown answer, in order."""
    clean = _clean(answer)
    found: list[Stated] = []
    for start, end, heading in _read_spans(answer):
        found += _find_in_block(answer, clean, start, end, _clean(heading))
    return sorted(found, key=lambda s: s.start)


def _read_spans(answer: str) -> Iterator[tuple[int, int, str]]:
    """The spans of the answer outside the sections the question asks no quantity in, each
    with its heading ("### Offset 100% of consumption" cues the lines below it)."""
    skipping = False
    position = 0
    title = ""
    for match in _HEADING.finditer(answer):
        if not skipping:
            yield position, match.start(), title
        title = match.group("h") or match.group("b") or match.group("n") or ""
        skipping = bool(_SKIPPED_SECTIONS.search(title))
        # A numbered item's line, or a summary's, is its section's first text.
        position = match.start() if match.group("n") or match.group("n2") else match.end()
    if not skipping:
        yield position, len(answer), title


# A line that starts a new piece of text (not a wrapped line of the one before): a bullet, a
# numbered item, a bold lead, a heading or a table row.
_TOP_ITEM = re.compile(r"^(?:[-*+•]|\d+[.)])\s")
_NESTED_ITEM = re.compile(r"^\s{2,}(?:[-*+•]|\d+[.)])\s")
_NEW_UNIT = re.compile(r"^\s*(?:[-*+•]\s|\d+[.)]\s|#|\||(?:\*\*|__)[^*_\n]{1,80}?(?:[:.](?:\*\*|__)"
                       r"|(?:\*\*|__)\s*[:.]))")
# A bold line after a finished line: a new item even without a label's colon.
_FINISHED = re.compile(r"(?:[.!?:]|\*\*|__)\s*$")


def _find_in_block(answer: str, clean: str, start: int, end: int,
                   heading: str = "") -> list[Stated]:
    """A section: its tables row by row, its other text a paragraph (or a list item, or a
    bold-led line) at a time, wrapped lines joined. The section's heading, and a nested
    item's parent item, cue what a piece of text does not cue itself."""
    found: list[Stated] = []
    header: list[tuple[int, int]] | None = None
    unit_start: int | None = None
    parent = unit_parent = ""
    offset = start
    previous = ""
    for line in answer[start:end].splitlines(keepends=True):
        line_start, offset = offset, offset + len(line)
        row = _TABLE_ROW.match(line)
        new_unit = bool(_NEW_UNIT.match(line)) or (
            line.lstrip().startswith(("**", "__")) and bool(_FINISHED.search(previous)))
        previous = line
        if unit_start is not None and (row or not line.strip() or new_unit):
            found += _find_in_text(clean, unit_start, line_start, ("", "", unit_parent, heading))
            unit_start = None
        if row is None:
            header = None
            if line.strip() and unit_start is None:
                unit_start = line_start
                nested = _NESTED_ITEM.match(line)
                unit_parent = parent if nested else ""
                if _TOP_ITEM.match(line):
                    parent = clean[line_start:line_start + len(line)]
            continue
        if _TABLE_RULE.match(line):
            continue
        cells = _cells(line, line_start)
        if header is None:
            header = cells
            found += _find_in_text(clean, line_start, line_start + len(line.rstrip("\n")),
                                   ("", "", "", heading))
            continue
        found += _find_in_row(clean, cells, header, heading)
    if unit_start is not None:
        found += _find_in_text(clean, unit_start, end, ("", "", unit_parent, heading))
    return found


def _cells(line: str, line_start: int) -> list[tuple[int, int]]:
    inner_start = line.index("|") + 1
    spans, position = [], inner_start
    for piece in line[inner_start:line.rstrip().rindex("|")].split("|"):
        spans.append((line_start + position, line_start + position + len(piece)))
        position += len(piece) + 1
    return spans


def _find_in_row(clean: str, cells: list[tuple[int, int]],
                 header: list[tuple[int, int]], heading: str = "") -> list[Stated]:
    """A table row: each cell's figures, cued by the row's label (its first cell, and any cell
    without a digit) and the column's header; a cell that is only a number takes its unit from
    them."""
    label_cells = [cells[0]]
    label = clean[slice(*cells[0])]
    found: list[Stated] = []
    for index, span in enumerate(cells):
        if span in label_cells:
            continue
        column = clean[slice(*header[index])] if index < len(header) else ""
        found += _find_in_text(clean, span[0], span[1], (label, column, "", heading),
                               _unit_from_words(f"{column} {label}"))
    return found


def _unit_from_words(text: str) -> Unit | None:
    for unit, pattern in _UNIT_WORDS:
        if pattern.search(text):
            return unit
    return None


@dataclass(frozen=True)
class _Number:
    unit: Unit
    low: float
    high: float
    tolerance: float
    start: int
    end: int


@dataclass(frozen=True)
class _Cue:
    units: dict[Unit, Quantity | None]
    start: int
    end: int


def _find_in_text(clean: str, start: int, end: int,
                  context: tuple[str, str, str, str] = ("", "", "", ""),
                  default_unit: Unit | None = None) -> list[Stated]:
    """A paragraph, list item or table cell (with its row's and column's headers as
    ``context``): each sentence's figures."""
    found: list[Stated] = []
    text = clean[start:end]
    position = 0
    for match in [*_SENTENCE_BREAK.finditer(text), None]:
        stop = match.start() if match else len(text)
        found += _find_in_sentence(clean, start + position, start + stop, context, default_unit)
        position = match.end() if match else len(text)
    return found


def _find_in_sentence(clean: str, start: int, end: int, context: tuple[str, str, str, str],
                      default_unit: Unit | None) -> list[Stated]:
    sentence = clean[start:end]
    if not _DIGIT.search(sentence):
        return []
    horizon = [m.span() for m in _HORIZON.finditer(sentence)]
    numbers = [n for n in _numbers(sentence, default_unit)
               if not any(s <= n.start < e for s, e in horizon)]
    if not numbers:
        return []
    breaks = [m.start() for m in _CLAUSE_BREAK.finditer(sentence)]
    numbers = _this_scenario(sentence, numbers, breaks)
    cues = [_Cue(units, m.start(), m.end()) for pattern, units in _CUES
            for m in pattern.finditer(sentence)]
    # Cues from a table row's label, its column's header, a nested item's parent item and
    # the section's heading stand before the text, each weaker than the one before.
    for weight, words in enumerate(context, start=1):
        cues += [_Cue(units, -weight, -weight) for pattern, units in _CUES
                 if pattern.search(words)]
    found = []
    for number in numbers:
        quantity = _owner(number, cues, breaks, numbers)
        if quantity is None:
            continue
        before = clean[max(0, start + number.start - 24):start + number.start]
        if number.unit is not Unit.PANELS and _BOUND.search(before):
            continue  # "under 10 years", "more than $1,000": a bound, not the figure
        if _NEGATED.search(before):
            continue
        found.append(Stated(quantity, number.low, number.high, number.tolerance,
                            bool(_APPROX.search(before)),
                            sentence[number.start:number.end].strip(),
                            start + number.start, start + number.end))
    return found


def _this_scenario(sentence: str, numbers: list[_Number], breaks: list[int]) -> list[_Number]:
    """The numbers not about another scenario: a clause, or a parenthesis, that names a
    battery or a tax credit states none of the figures asked for."""
    asides = [m.span() for m in re.finditer(r"\([^()]*\)", sentence)]
    clauses, spans = set(), []
    for match in _OTHER_SCENARIO.finditer(sentence):
        aside = next((span for span in asides if span[0] < match.start() < span[1]), None)
        if aside:
            spans.append(aside)
        else:
            clauses.add(bisect.bisect_right(breaks, match.start()))
    return [n for n in numbers if bisect.bisect_right(breaks, n.start) not in clauses
            and not any(s <= n.start < e for s, e in spans)]


def _owner(number: _Number, cues: list[_Cue], breaks: list[int],
           numbers: list[_Number]) -> Quantity | None:
    """The quantity a number states: its nearest cue that takes its unit, in its own clause
    first (a blocking cue keeps it from every quantity)."""
    clause = bisect.bisect_right(breaks, number.start)

    def own(cue: _Cue) -> bool:
        return cue.start < 0 or bisect.bisect_right(breaks, cue.start) == clause

    taking = [cue for cue in cues if number.unit in cue.units]
    if not taking:
        return None
    named = {cue.units[number.unit] for cue in taking if own(cue)}
    for quantity, outranked in _OUTRANKS.items():
        if quantity in named:
            taking = [cue for cue in taking if cue.units[number.unit] not in outranked]

    def distance(cue: _Cue) -> float:
        if cue.start < 0:
            return 1000.0 * -cue.start  # a header's: weaker than any cue of the cell's own
        if cue.start >= number.end and any(number.end <= other.start < cue.start
                                           and other.unit is Unit.PERCENT for other in numbers):
            return float("inf")  # "20 panels, about 71% of full offset": a share's cue
        gap = (number.start - cue.end if cue.end <= number.start
               else 1.5 * (cue.start - number.end) if cue.start >= number.end else 0.0)
        if own(cue):
            return gap
        # Another clause of the sentence lends its cue only to a number that opens its
        # clause ("21 panels, or 8.61 kW").
        opening = number.start - (breaks[clause - 1] if clause else 0) <= 16
        return gap + 500.0 if opening else float("inf")

    nearest = min(taking, key=distance)
    return nearest.units[number.unit] if distance(nearest) != float("inf") else None


def _numbers(clause: str, default_unit: Unit | None) -> list[_Number]:
    """Every number with a unit in a clause (and, in a table cell with a unit in its header,
    a bare number), longest readings first; overlapping readings dropped."""
    numbers: list[_Number] = []
    taken: list[tuple[int, int]] = []

    def add(number: _Number) -> None:
        written = clause[number.start:number.end]  # without the blank a pattern took after it
        number = replace(number, end=number.start + len(written.rstrip()))
        if any(number.start < e and s < number.end for s, e in taken):
            return
        numbers.append(number)
        taken.append((number.start, number.end))

    for match in _MONEY.finditer(clause):
        value, low, kilo = ((match.group("value"), match.group("low"), match.group("k"))
                            if match.group("value") else
                            (match.group("value2"), match.group("low2"), match.group("k2")))
        scale = 1000.0 if kilo or (low and match.group("lowk")) else 1.0
        if re.search(r"[×x*]\s?$", clause[:match.start()]):
            continue  # a factor of a product ("× $0.15"): a rate
        if _PER_MONTH.match(clause, match.end()):
            continue  # "$252 per month": not an annual figure
        if match.group("sign"):
            scale = -scale
        add(_number(Unit.USD, low, value, scale, match.span()))
    for match in _PANELS.finditer(clause):
        add(_number(Unit.PANELS, match.group("low"), match.group("value"), 1.0, match.span()))
    for match in _POWER.finditer(clause):
        unit = match.group("unit").lower()
        if unit in ("w", "wp") and float(match.group("value").replace(",", "")) < 1000:
            continue  # "a 400 W panel": a panel's rating, not a system's size
        scale = 1000.0 if unit.startswith("m") else 0.001 if unit.startswith("w") else 1.0
        add(_number(Unit.KW, match.group("low"), match.group("value"), scale, match.span()))
    for match in _YEARS.finditer(clause):
        if match.group("value2"):
            add(_number(Unit.YEARS, match.group("low2"), match.group("value2"), 1 / 12,
                        match.span()))
            continue
        if "-" in match.group(0).split(match.group("value"))[-1] and not _PAYBACK_AFTER.match(
                clause, match.end()):
            continue  # "the 10-year mark", "a 25-year warranty": a span, not a figure
        number = _number(Unit.YEARS, match.group("low"), match.group("value"), 1.0,
                         match.span())
        if match.group("months"):
            months = int(match.group("months")) / 12
            number = _Number(Unit.YEARS, number.low + months, number.high + months, 1 / 24,
                             number.start, number.end)
        add(number)
    for match in _PERCENT.finditer(clause):
        add(_number(Unit.PERCENT, match.group("low"), match.group("value"),
                    -1.0 if match.group("sign") else 1.0, match.span()))
    labelled = _LABELLED.match(clause)
    bare = labelled if labelled and not numbers else _BARE.fullmatch(clause)
    if labelled and not numbers:
        # "Panels: 30", "Payback (years): 4.9": the label names the unit.
        default_unit = _unit_from_words(labelled.group("label"))
    if default_unit is not None and bare and not numbers:
        span = (bare.start("low") if bare.group("low") else bare.start("value"), bare.end("value"))
        add(_number(default_unit, bare.group("low"), bare.group("value"), 1.0, span))
    return sorted(numbers, key=lambda n: n.start)


def _number(unit: Unit, low: str | None, value: str, scale: float,
            span: tuple[int, int]) -> _Number:
    high = float(value.replace(",", "")) * scale
    decimals = len(value.partition(".")[2])
    tolerance = 0.5 * 10 ** -decimals * abs(scale)
    start = float(low.replace(",", "")) * scale if low else high
    if start > high:  # "30-3" is not a range
        start = high
    return _Number(unit, start, high, tolerance, *span)


# --- showing the check in the answer -----------------------------------------------------

# A wrong figure is struck through and followed by the data's value; each value of an ambiguous
# quantity is marked apart from a figure the grounding check did not find in the data.
WRONG_MARK = ":red[~~{text}~~] :red-background[✗ {reference} in the data]"
AMBIGUOUS_MARK = ":orange-background[{text}] :orange[(which?)]"


def figure_marks(markdown: str, report: FigureReport) -> list[Mark]:
    """Where the answer states a figure graded wrong, or one of an ambiguous quantity's
    values, found again in ``markdown`` (the display text: sanitizing shifts offsets), each
    with its mark."""
    graded = {grade.quantity: grade for grade in report.grades
              if grade.verdict in (Verdict.WRONG, Verdict.AMBIGUOUS)}
    if not graded or report.not_graded:
        return []
    marks = []
    for stated in find(markdown):
        grade = graded.get(stated.quantity)
        if grade is None:
            continue
        reference = format_value(grade.quantity, grade.reference).replace("$", "\\$")
        template = (WRONG_MARK.replace("{reference}", reference)
                    if grade.verdict is Verdict.WRONG else AMBIGUOUS_MARK)
        marks.append(Mark(stated.start, stated.end, template))
    return marks


def highlight(markdown: str, figures: FigureReport | None,
              grounding: GroundingReport | None = None) -> str:
    """Display markdown with the figure check's marks and, elsewhere, the grounding check's
    figures not found in the data."""
    marks = figure_marks(markdown, figures) if figures is not None else []
    if grounding is not None:
        marks += not_found_marks(markdown, grounding)
    return mark(markdown, marks)
