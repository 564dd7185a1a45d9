"""CSV that a spreadsheet opens as text: every writer of CSV in Onramp goes through this module.

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is a formula to
Excel, LibreOffice and Google Sheets (``=HYPERLINK("https://evil.example", "x")`` in a userId
becomes a link, ``=cmd|…`` may run a program). As OWASP's "CSV Injection" page advises, such a
cell is written with a single quote in front, which spreadsheets show as text and do not evaluate;
the csv module then quotes the cell as usual (embedded quotes doubled). Only text is changed:
numbers written as numbers (a negative count, a median of ``-1.5``) stay numbers.

Rows end with CRLF (RFC 4180, the csv module's default) and no other line ending is offered: the
csv module quotes a cell only for the characters of the line terminator, so with ``"\n"`` a cell
holding a carriage return would be written bare and split the row in most readers.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from typing import Any

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def neutralise_cell(value: Any) -> Any:
    """``value``, with a leading ``'`` when it is text a spreadsheet would run as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


class SafeCsvWriter:
    """``csv.writer`` whose rows are neutralised cell by cell (:func:`neutralise_cell`)."""

    def __init__(self, file: Any) -> None:
        self._writer = csv.writer(file)

    def writerow(self, row: Iterable[Any]) -> Any:
        return self._writer.writerow([neutralise_cell(cell) for cell in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def csv_writer(file: Any) -> SafeCsvWriter:
    """The only way Onramp writes CSV: like ``csv.writer(file)``, formulas neutralised."""
    return SafeCsvWriter(file)


def csv_lines(header: Iterable[Any], rows: Iterable[Iterable[Iterable[Any]]]) -> Iterator[str]:
    """CSV text for a ``StreamingHttpResponse``, formulas neutralised: the header, then the text of
    each item of ``rows`` (an item is the rows one source record gives: a person, an entry)."""
    buffer = io.StringIO()
    writer = csv_writer(buffer)

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(header)
    yield flush()
    for group in rows:
        writer.writerows(group)
        yield flush()
