"""Uploaded location CSVs: delimiter and decimal commas sniffed, each row validated by a
pydantic model, a skipped row named with its reason."""

import csv
import io
import re
from dataclasses import dataclass, field, fields
from typing import Annotated

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from studio.pv.location import COLUMNS, OPTIONAL_COLUMNS, REQUIRED_COLUMNS, Location

MAX_ROWS = 500


@dataclass(frozen=True)


class RowProblem:
    """A CSV row that was skipped, with a human-readable reason (row 1 is the header)."""

    row: int
    message: str

    def __str__(self) -> str:
        return f"row {self.row}: {self.message}"


_TRUE = {"true", "yes", "y", "1"}
_FALSE = {"false", "no", "n", "0"}


def _yes_no(value: str) -> bool:
    # These spellings only: pydantic's own bool parsing would also take on/off/t/f.
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise PydanticCustomError("yes_no", "not a boolean")


_YesNo = Annotated[bool, BeforeValidator(_yes_no)]
# Columns used as divisors or scale factors must be strictly positive; none may be negative.
_Positive = Annotated[float, Field(gt=0)]
_Amount = Annotated[float, Field(ge=0)]


class LocationRow(BaseModel):
    """One data row of a locations CSV, from its text cells; the fields are Location's."""

    model_config = ConfigDict(allow_inf_nan=False)

    name: str
    region: str
    sample: _YesNo
    avg_daily_kwh: _Positive
    winter_summer_ratio: _Positive
    peak_weekly_max_kw: _Amount
    nighttime_load_ratio_pct: Annotated[float, Field(ge=0, le=100)]
    sunlight_cv: _Amount
    peak_sun_hours: _Positive
    electricity_rate_usd_kwh: _Amount
    budget_usd: Annotated[int, Field(ge=0)]
    panel_watts: Annotated[int, Field(gt=0)]
    cost_per_panel_usd: _Positive
    has_ev: _YesNo
    export_credit_usd_kwh: _Amount | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _strip(cls, cell: str | None, info: ValidationInfo) -> str | None:
        # Before any type check, so an empty cell says so rather than "not a number"; an
        # optional column's empty cell is its default.
        if cell is None or (not cell.strip() and info.field_name in OPTIONAL_COLUMNS):
            return None
        if not cell.strip():
            raise PydanticCustomError("empty", "empty")
        if info.field_name in NUMBER_COLUMNS and (info.context or {}).get(DECIMAL_COMMA):
            return _decimal_comma_number(cell.strip())
        return cell.strip()


# Decimal commas (a spreadsheet in a comma-decimal locale saves CSV with semicolons and
# "53,76"). The rule, for a semicolon-separated file in which some number has a decimal comma:
# in every number the comma is the decimal mark, and a dot or a space between groups of three
# digits is a thousands separator ("1.234,5" = "1 234,5" = 1234.5); any other dot is refused
# (is "0.25" a quarter, or a slip?). Files with other separators keep the decimal point.
DECIMAL_COMMA = "decimal_comma"
NUMBER_COLUMNS = frozenset(f.name for f in fields(Location)
                           if f.type in (int, float, float | None))
_COMMA_DECIMAL = re.compile(r"[+-]?(\d{1,3}(?:([. \u00a0\u202f])\d{3})(?:\2\d{3})*|\d+)"
                            r"(?:,(\d+))?")
_HAS_DECIMAL_COMMA = re.compile(r"\d,\d")


def _decimal_comma_number(cell: str) -> str:
    """A number written with a decimal comma, in Python's spelling ('1.234,5' -> '1234.5');
    other text as it is (the type check says what is wrong with it)."""
    match = _COMMA_DECIMAL.fullmatch(cell)
    if match is None:
        if "." in cell:
            raise PydanticCustomError("decimal_point", "a decimal point in a decimal-comma file")
        return cell
    whole = match.group(1)
    if match.group(2):
        whole = whole.replace(match.group(2), "")
    sign = "-" if cell.startswith("-") else ""
    return f"{sign}{whole}" + (f".{match.group(3)}" if match.group(3) is not None else "")


# What is wrong with a cell, by pydantic error type; {value} is the cell's text.
_CELL_PROBLEMS = {
    "empty": "column '{column}' is empty",
    "yes_no": "column '{column}': '{value}' is not a boolean (use true or false)",
    "float_parsing": "column '{column}': '{value}' is not a number",
    # why is said once for the file (LocationsImport.notes), not per cell
    "decimal_point": "column '{column}': '{value}' has a decimal point",
    "int_parsing": "column '{column}': '{value}' is not a whole number",
    "finite_number": "column '{column}': '{value}' is not a finite number",
    "greater_than": "column '{column}': {value} must be greater than {gt:g}",
    "greater_than_equal": "column '{column}': {value} must be at least {ge:g}",
    "less_than_equal": "column '{column}': {value} must be at most {le:g}",
}


def _cell_problem(error: ErrorDetails, row: dict[str, str]) -> str:
    column = str(error["loc"][0])
    template = _CELL_PROBLEMS.get(error["type"], "column '{column}': {msg}")
    return template.format(column=column, value=row[column].strip(), msg=error["msg"],
                           **error.get("ctx", {}))


@dataclass


class LocationsImport:
    """What an uploaded locations CSV gave: the rows that load, and what is wrong with the
    file as a whole (one message) or with single rows (each with its row number)."""

    locations: list[Location] = field(default_factory=list)
    file_problem: str | None = None  # the file cannot be used at all
    row_problems: list[RowProblem] = field(default_factory=list)
    dropped_rows: int = 0  # data rows past MAX_ROWS, not read
    delimiter: str = ","
    decimal_comma: bool = False  # numbers written "1.234,5" (semicolon files only)
    # (row, column) of the cells written with a decimal point in a decimal-comma file
    decimal_points: list[tuple[int, str]] = field(default_factory=list)

    @property
    def notes(self) -> list[str]:
        """What the analyst should know about a file that (partly) loaded."""
        notes = []
        if self.decimal_comma:
            notes.append(f"Read as {DELIMITER_NAMES[self.delimiter]}-separated values with "
                         "decimal commas ('53,76' is 53.76; '1.234,5' is 1234.5).")
        elif self.delimiter != ",":
            notes.append(f"Read as {DELIMITER_NAMES[self.delimiter]}-separated values.")
        if self.decimal_points:
            by_row: dict[int, list[str]] = {}
            for row, column in self.decimal_points:
                by_row.setdefault(row, []).append(column)
            notes.append("This file writes decimals with a comma (like '53,76'), but these "
                         "cells have a decimal point: write them with a comma. "
                         + "; ".join(f"Row {row}: {', '.join(columns)}"
                                     for row, columns in by_row.items()) + ".")
        if self.dropped_rows:
            notes.append(f"Too many rows: the first {MAX_ROWS} locations are loaded, "
                         f"{self.dropped_rows:,} more "
                         f"{'was' if self.dropped_rows == 1 else 'were'} left out.")
        return notes


DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


def _sniff_header(first_line: str) -> tuple[str, list[str]]:
    """The delimiter whose split of the header finds the most known columns (a spreadsheet
    in a comma-decimal locale saves with semicolons), and that header."""
    best = (",", next(csv.reader([first_line]), []))
    best_found = -1
    for delimiter in DELIMITER_NAMES:
        header = [cell.strip() for cell in next(csv.reader([first_line], delimiter=delimiter),
                                                 [])]
        found = sum(column in header for column in COLUMNS)
        if found > best_found:
            best, best_found = (delimiter, header), found
    return best


def parse_locations_csv(text: str) -> LocationsImport:
    """Parse locations CSV text; bad rows are skipped and reported, never raised.

    Columns may appear in any order, extra columns are ignored, and the delimiter may be a
    comma, semicolon, tab or pipe. Row numbers are the line numbers a spreadsheet or editor
    shows (the header is row 1).
    """
    text = text.lstrip("\ufeff")  # Excel writes a byte-order mark
    if not text.strip():
        return LocationsImport(file_problem="The file is empty: expected a header row "
                               f"({', '.join(COLUMNS[:3])}, ...) and data rows.")
    delimiter, header = _sniff_header(text.splitlines()[0])
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        return LocationsImport(delimiter=delimiter, file_problem=(
            f"The header lacks {len(missing)} of the {len(REQUIRED_COLUMNS)} required columns: "
            f"{', '.join(missing)}. The columns are those of presets/locations.csv."))
    index = {c: header.index(c) for c in COLUMNS if c in header}
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    result = LocationsImport(delimiter=delimiter,
                             decimal_comma=_writes_decimal_commas(text, delimiter, index))
    seen: set[str] = set()
    data_rows = 0
    try:
        next(reader)  # the header, read above
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue  # blank lines are harmless
            data_rows += 1
            if data_rows > MAX_ROWS:
                result.dropped_rows += 1
                continue
            location, error, points = _parse_row(cells, header, index, result.decimal_comma)
            result.decimal_points += [(reader.line_num, column) for column in points]
            if location is not None and location.name in seen:
                error = f"duplicate location name '{location.name}'"
            if error is not None or location is None:
                result.row_problems.append(RowProblem(reader.line_num, error or "invalid row"))
                continue
            seen.add(location.name)
            result.locations.append(location)
    except csv.Error as exc:
        result.file_problem = f"Not readable as CSV from row {reader.line_num} on: {exc}"
    if data_rows == 0 and result.file_problem is None:
        result.file_problem = "The file has a header but no data rows."
    return result


def _writes_decimal_commas(text: str, delimiter: str, index: dict[str, int]) -> bool:
    """Whether a semicolon-separated file writes a number with a decimal comma (the rows that
    will be read); then every number in it is read that way (``DECIMAL_COMMA``)."""
    if delimiter != ";":
        return False
    numbers = [index[column] for column in index if column in NUMBER_COLUMNS]
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        for count, cells in enumerate(reader):
            if count > MAX_ROWS:
                break
            if count and any(_HAS_DECIMAL_COMMA.search(cells[i]) for i in numbers
                             if i < len(cells)):
                return True
    except csv.Error:
        pass  # the rows up to the unreadable one decide; the parse reports it
    return False


def _parse_row(
    cells: list[str], header: list[str], index: dict[str, int], decimal_comma: bool = False
) -> tuple[Location | None, str | None, list[str]]:
    """Build one Location from a CSV record, or explain every problem in it; and the columns
    of its cells with a decimal point in a decimal-comma file."""
    short = [c for c in REQUIRED_COLUMNS if index[c] >= len(cells)]
    if short:
        return None, (f"has {len(cells)} values but the header has {len(header)} columns; "
                      "missing value(s) for: " + ", ".join(short)), []
    # An optional column the file leaves out, or a row too short to reach it: its default.
    row = {column: cells[i] for column, i in index.items() if i < len(cells)}
    try:
        valid = LocationRow.model_validate(row, context={DECIMAL_COMMA: decimal_comma})
    except ValidationError as exc:  # every bad cell of the row, in column order
        errors = exc.errors()
        return None, "; ".join(_cell_problem(error, row) for error in errors), [
            str(error["loc"][0]) for error in errors if error["type"] == "decimal_point"]
    return Location(**valid.model_dump()), None, []
