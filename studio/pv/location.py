"""A household: the columns of locations.csv, and the calendar its seasonal profile is
spread over. Seasons follow the northern-hemisphere calendar (winter = Dec-Feb); all shipped
locations are in the northern hemisphere."""

from dataclasses import MISSING, dataclass, fields

# (name, days, season) for a non-leap year; the seasonal profile is spread over these.
MONTHS: tuple[tuple[str, int, str], ...] = (
    ("January", 31, "Winter"),
    ("February", 28, "Winter"),
    ("March", 31, "Spring"),
    ("April", 30, "Spring"),
    ("May", 31, "Spring"),
    ("June", 30, "Summer"),
    ("July", 31, "Summer"),
    ("August", 31, "Summer"),
    ("September", 30, "Autumn"),
    ("October", 31, "Autumn"),
    ("November", 30, "Autumn"),
    ("December", 31, "Winter"),
)
SEASON_MONTHS = {
    "Winter": "Dec-Feb", "Spring": "Mar-May", "Summer": "Jun-Aug", "Autumn": "Sep-Nov"
}
SEASONS = tuple(SEASON_MONTHS)

@dataclass(frozen=True)


class Location:
    """One household: the columns of locations.csv, in file order."""

    name: str
    region: str
    sample: bool
    avg_daily_kwh: float
    winter_summer_ratio: float
    peak_weekly_max_kw: float
    nighttime_load_ratio_pct: float
    sunlight_cv: float
    peak_sun_hours: float
    electricity_rate_usd_kwh: float
    budget_usd: int
    panel_watts: int
    cost_per_panel_usd: float
    has_ev: bool
    # What an exported kWh earns ($/kWh). None: full net metering, exports credited at the
    # retail rate. Optional in a CSV (an empty cell or no column means None).
    export_credit_usd_kwh: float | None = None

    @property
    def export_rate_usd_kwh(self) -> float:
        """The export credit in effect: the retail rate under full net metering."""
        if self.export_credit_usd_kwh is None:
            return self.electricity_rate_usd_kwh
        return self.export_credit_usd_kwh

    @property
    def is_sample(self) -> bool:
        """True for demonstration rows that are not measured household data."""
        return self.sample


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Location))
# Columns a file may leave out (or leave empty): those with a default.
OPTIONAL_COLUMNS: frozenset[str] = frozenset(
    f.name for f in fields(Location) if f.default is not MISSING)
REQUIRED_COLUMNS: tuple[str, ...] = tuple(c for c in COLUMNS if c not in OPTIONAL_COLUMNS)
