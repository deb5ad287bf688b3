"""The quantities the question asks for, defined once: their keys (the structured answer's
fields, the figure check's and the exports' columns), their words, their units, and the
reference value each takes from a location's derived figures."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum, unique

from studio.pv.sizing import DerivedFigures


@unique
class Unit(StrEnum):
    """What a quantity counts, as an answer writes it."""

    PANELS = "panels"
    KW = "kW"
    USD = "$"
    YEARS = "years"
    PERCENT = "%"


@dataclass(frozen=True)
class QuantitySpec:
    key: str  # the structured answer's field and the exports' column stem
    label: str  # how a page names it: "panels to offset 100%"
    unit: Unit
    integer: bool = False  # a count (panels): right only when exactly equal


@unique
class Quantity(StrEnum):
    """The quantities items 2 and 3 of the question ask for, in the question's order."""

    OFFSET_PANELS = "offset_panels"
    OFFSET_KW = "offset_system_kw"
    EV_PANELS = "ev_panels"
    EV_KW = "ev_system_kw"
    BUDGET_PANELS = "budget_max_panels"
    SAVINGS = "annual_savings_usd"
    BREAK_EVEN = "break_even_years"
    ROI = "roi_25y_pct"

    @property
    def spec(self) -> QuantitySpec:
        return SPECS[self]

    @property
    def label(self) -> str:
        return SPECS[self].label

    @property
    def unit(self) -> Unit:
        return SPECS[self].unit

    @property
    def integer(self) -> bool:
        return SPECS[self].integer


SPECS: dict[Quantity, QuantitySpec] = {
    Quantity.OFFSET_PANELS: QuantitySpec("offset_panels", "panels to offset 100%", Unit.PANELS,
                                         integer=True),
    Quantity.OFFSET_KW: QuantitySpec("offset_system_kw", "system kW to offset 100%", Unit.KW),
    Quantity.EV_PANELS: QuantitySpec("ev_panels", "panels with EV charging", Unit.PANELS,
                                     integer=True),
    Quantity.EV_KW: QuantitySpec("ev_system_kw", "system kW with EV charging", Unit.KW),
    Quantity.BUDGET_PANELS: QuantitySpec("budget_max_panels", "budget maximum of panels",
                                         Unit.PANELS, integer=True),
    Quantity.SAVINGS: QuantitySpec("annual_savings_usd", "annual savings", Unit.USD),
    Quantity.BREAK_EVEN: QuantitySpec("break_even_years", "break-even years", Unit.YEARS),
    Quantity.ROI: QuantitySpec("roi_25y_pct", "25-year ROI", Unit.PERCENT),
}
EV_QUANTITIES = (Quantity.EV_PANELS, Quantity.EV_KW)


def reference_values(figures: DerivedFigures) -> dict[Quantity, float]:
    """The value of each quantity asked of this household: the EV ones only where it has an
    EV, break-even and ROI only where they exist (savings, panels)."""
    values: dict[Quantity, float | None] = {
        Quantity.OFFSET_PANELS: figures.offset_panels,
        Quantity.OFFSET_KW: figures.offset_system_kw,
        Quantity.EV_PANELS: figures.ev_panels,
        Quantity.EV_KW: (figures.ev_panels * figures.panel_kw
                         if figures.ev_panels is not None else None),
        Quantity.BUDGET_PANELS: figures.budget_max_panels,
        Quantity.SAVINGS: figures.annual_savings_usd,
        Quantity.BREAK_EVEN: figures.break_even_years,
        Quantity.ROI: figures.roi_25y_pct,
    }
    return {quantity: float(value) for quantity, value in values.items() if value is not None}
