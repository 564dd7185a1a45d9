"""The one row editor of the pages' forms (flow steps, segment conditions, follow-ups, experiment
arms): add, remove, move up and down.

The buttons post ``action=add`` or ``action=remove:2`` / ``up:2`` / ``down:2``, so the editors work
without JavaScript; htmx only swaps the re-rendered list.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

Row = TypeVar("Row")

_ROW_ACTION = re.compile(r"^(remove|up|down):(\d+)$")


def is_row_action(action: str) -> bool:
    return action == "add" or _ROW_ACTION.match(action) is not None


def apply_row_action(
    rows: list[Row],
    action: str,
    new_row: Callable[[list[Row]], Row | None],
    *,
    add_at: Callable[[list[Row]], int] | None = None,
) -> list[Row]:
    """The rows after ``action``; ``new_row`` makes the row to add (None: the list is full), at
    ``add_at(rows)`` (default: the end)."""
    rows = list(rows)
    if action == "add":
        row = new_row(rows)
        if row is not None:
            rows.insert(len(rows) if add_at is None else add_at(rows), row)
        return rows
    match = _ROW_ACTION.match(action)
    if match is None:
        return rows
    verb, index = match.group(1), int(match.group(2))
    if not 0 <= index < len(rows):
        return rows
    if verb == "remove":
        del rows[index]
    elif verb == "up" and index > 0:
        rows[index - 1], rows[index] = rows[index], rows[index - 1]
    elif verb == "down" and index + 1 < len(rows):
        rows[index + 1], rows[index] = rows[index], rows[index + 1]
    return rows
