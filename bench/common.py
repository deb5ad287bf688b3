"""What every benchmark returns, and how the report reads it."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass
class Figure:
    """One measured figure, usually a ratio of two things measured in the same run."""

    name: str
    value: float | None
    unit: str = ""
    target: str = ""  # e.g. "<= 0.125" or ">= 6"
    ok: bool | None = None  # None when there is no target or nothing was measured

    def shown(self) -> str:
        if self.value is None:
            return "–"
        digits = 3 if abs(self.value) < 10 else 1
        return f"{self.value:,.{digits}f}{(' ' + self.unit) if self.unit else ''}"


@dataclass
class Result:
    """A benchmark's outcome: its figures and the notes needed to read them."""

    title: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str = ""


def at_most(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def at_least(value: float | None, limit: float) -> bool | None:
    return None if value is None else value >= limit


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None
