"""CSV the app writes, safe to open in a spreadsheet.

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is read as a
formula by Excel, LibreOffice and Google Sheets (CSV injection): a location name or a model's
answer such as ``=HYPERLINK("http://evil.example","click me")`` would become a live link or a
command. OWASP's rule: prefix such text cells with a single quote, which the spreadsheet shows
as text and does not evaluate. Numbers stay numbers (a negative figure is not text).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """The value as it may go into a CSV cell: text that a spreadsheet would evaluate gets a
    leading ``'``; everything else is unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_lines(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Iterator[str]:
    """A CSV document a line (record) at a time, every cell neutralised: exports of any size
    are written without holding them whole."""
    out = io.StringIO()
    writer = csv.writer(out)
    for row in _header_then(header, rows):
        writer.writerow([safe_cell(value) for value in row])
        yield out.getvalue()
        out.seek(0)
        out.truncate()


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """The whole CSV document as one string."""
    return "".join(csv_lines(header, rows))


def _header_then(header: Sequence[str], rows: Iterable[Sequence[Any]]
                 ) -> Iterator[Sequence[Any]]:
    yield header
    yield from rows
