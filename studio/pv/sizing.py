"""Sizing and payback arithmetic: every figure a prompt quotes is computed here, in Python
(deterministically), so the model only has to explain them, not do arithmetic."""

import math
from dataclasses import dataclass

from studio.pv.location import MONTHS, SEASONS, Location

PERFORMANCE_RATIO = 0.80
EV_ANNUAL_KWH = 3000.0
ROI_YEARS = 25
# Above this nighttime share, daytime PV alone cannot cover most of the load (see knowledge base).
BATTERY_NIGHT_SHARE_PCT = 50.0

@dataclass(frozen=True)


class DerivedFigures:
    """Figures computed from a Location; the prompt quotes them so the model need not compute."""

    annual_kwh: float
    seasonal_daily_kwh: dict[str, float]  # season -> average daily kWh
    monthly_kwh: tuple[float, ...]  # 12 values, January first; they sum to annual_kwh
    panel_kw: float
    annual_kwh_per_panel: float
    offset_panels: int
    offset_system_kw: float
    ev_annual_kwh: float | None  # annual kWh including EV charging; None without an EV
    ev_panels: int | None
    budget_max_panels: int
    installed_panels: int  # budget-constrained system: min(budget max, panels needed)
    installed_cost_usd: float
    annual_output_kwh: float  # what the budget-constrained system produces in a year
    self_consumed_kwh: float  # of that, used in the house while the sun shines
    exported_kwh: float  # the rest, sent to the grid
    credited_export_kwh: float  # the exports credited (capped at what would be bought)
    annual_savings_usd: float
    break_even_years: float | None  # None when there are no savings
    roi_25y_pct: float | None  # None when nothing can be installed


def _round_up(value: float) -> int:
    # Round first so an exact fit such as 30.000000000004 panels does not become 31.
    return math.ceil(round(value, 6))


def derive_figures(location: Location) -> DerivedFigures:
    """Compute the sizing and payback figures quoted in the DATA CONTEXT."""
    loc = location
    annual = loc.avg_daily_kwh * 365
    # Winter daily = ratio x summer daily; spring and autumn sit halfway. Weighting each
    # season by its days makes the 12 months add up to exactly the annual consumption.
    r = loc.winter_summer_ratio
    days = {s: sum(d for _, d, season in MONTHS if season == s) for s in SEASONS}
    weight = {"Winter": r, "Summer": 1.0, "Spring": (1 + r) / 2, "Autumn": (1 + r) / 2}
    summer_daily = annual / sum(weight[s] * days[s] for s in SEASONS)
    seasonal = {s: weight[s] * summer_daily for s in SEASONS}
    monthly = tuple(seasonal[season] * d for _, d, season in MONTHS)

    panel_kw = loc.panel_watts / 1000
    per_panel = loc.peak_sun_hours * 365 * panel_kw * PERFORMANCE_RATIO
    offset_panels = _round_up(annual / per_panel)
    ev_annual = annual + EV_ANNUAL_KWH if loc.has_ev else None
    ev_panels = _round_up(ev_annual / per_panel) if ev_annual is not None else None

    # Installing more than the household uses earns little where exports are poorly
    # credited, so the budget scenario stops at the panels actually needed.
    needed_kwh = ev_annual if ev_annual is not None else annual
    needed_panels = ev_panels if ev_panels is not None else offset_panels
    budget_max = math.floor(round(loc.budget_usd / loc.cost_per_panel_usd, 6))
    installed = min(budget_max, needed_panels)
    cost = installed * loc.cost_per_panel_usd
    # Net billing: only what the house uses while the sun shines saves the retail rate;
    # exports earn the export credit (the retail rate under full net metering), and credits
    # stop at what the household would otherwise buy. The daytime load is the household's
    # consumption outside the nighttime share; an EV is charged at night.
    output = installed * per_panel
    self_consumed = min(output, annual * (1 - loc.nighttime_load_ratio_pct / 100))
    exported = output - self_consumed
    credited = min(exported, max(needed_kwh - self_consumed, 0.0))
    savings = (self_consumed * loc.electricity_rate_usd_kwh
               + credited * loc.export_rate_usd_kwh)
    return DerivedFigures(
        annual_kwh=annual,
        seasonal_daily_kwh=seasonal,
        monthly_kwh=monthly,
        panel_kw=panel_kw,
        annual_kwh_per_panel=per_panel,
        offset_panels=offset_panels,
        offset_system_kw=offset_panels * panel_kw,
        ev_annual_kwh=ev_annual,
        ev_panels=ev_panels,
        budget_max_panels=budget_max,
        installed_panels=installed,
        installed_cost_usd=cost,
        annual_output_kwh=output,
        self_consumed_kwh=self_consumed,
        exported_kwh=exported,
        credited_export_kwh=credited,
        annual_savings_usd=savings,
        break_even_years=cost / savings if savings > 0 else None,
        roi_25y_pct=(savings * ROI_YEARS - cost) / cost * 100 if cost > 0 else None,
    )
