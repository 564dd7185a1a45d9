"""Many rows in one ``INSERT … SELECT``, carried by one JSON parameter (PostgreSQL and SQLite).

A tick writes its enrollments, follow-ups and decisions set-based: one statement per table and
rule, however many people fell due — on PostgreSQL one statement for the three tables
(:func:`insert_rows` with ``then``: a chain of data-modifying CTEs). ``bulk_create`` builds a
model instance and binds a value per column and row (tens of microseconds a row in Python, and
statements split into batches); here the rows travel as one JSON array that the database
unpacks — ``json_to_recordset`` on PostgreSQL, ``json_each`` on SQLite — so the per-row work in
Python is building a dict. The columns a row does not carry take the model's defaults
(``auto_now_add`` included), bound once per statement.

Values in a row are JSON: numbers, strings, booleans, ``None``, dicts and lists for JSON fields,
and ``datetime`` for date-time fields (converted here to what the backend stores).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection, models

# In a row of :class:`Then`: whether it takes the id of the row just inserted for its key.
LINK = "_link"


def _datetime_text() -> Callable[[datetime], str]:
    """How a date-time travels in the JSON: ISO 8601 for PostgreSQL's cast, the text Django
    stores for SQLite."""
    if connection.vendor == "postgresql":
        return datetime.isoformat
    return connection.ops.adapt_datetimefield_value


@dataclass(frozen=True)
class Then:
    """Rows to insert after the rows of :func:`insert_rows`, linked to them: a row whose
    :data:`LINK` is true gets, in ``field``, the id of the row inserted for the same ``key``
    (one inserted row per key value), and is left out when none was (a conflict skipped it); a
    row whose :data:`LINK` is false goes in as it is."""

    model: type[models.Model]
    rows: Sequence[dict[str, Any]]
    field: str
    key: str
    skip_conflicts: bool = False
    constants: dict[str, Any] | None = None


@dataclass(frozen=True)
class _Select:
    """``SELECT … FROM`` the rows' JSON for one model and set of columns, built once per process:
    the SQL (the constants' placeholders first, the JSON's last), the fields whose values are
    bound once per statement (defaults, ``auto_now_add``), and the date-time columns a row
    carries."""

    sql: str
    constants: tuple[models.Field, ...]
    datetimes: tuple[str, ...]


_selects: dict[tuple, _Select] = {}


def _select(
    model: type[models.Model],
    given: tuple[str, ...],
    constants: tuple[models.Field, ...],
    returning: tuple[str, ...],
    skip_conflicts: bool,
    link: tuple[str, str, str] | None = None,
) -> _Select:
    """The ``INSERT … SELECT``; with ``link`` (field, key, the CTE named for the rows linked to),
    the id of the linked row goes into the field (PostgreSQL)."""
    key = (connection.vendor, model, given, constants, returning, skip_conflicts, link)
    if (cached := _selects.get(key)) is not None:
        return cached
    quote = connection.ops.quote_name
    fields = {f.attname: f for f in model._meta.concrete_fields}
    carried = [name for name in given if name != LINK]
    datetimes = tuple(name for name in carried if isinstance(fields[name], models.DateTimeField))
    columns = [quote(fields[name].column) for name in carried]
    postgres = connection.vendor == "postgresql"
    if postgres:
        types = [f"{quote(name)} {fields[name].db_type(connection)}" for name in carried]
        values = [f"r.{quote(name)}" for name in carried]
        if link is not None:
            types.append(f"{quote(LINK)} boolean")
        source = (
            f"ROWS FROM (json_to_recordset(%s::json) AS ({', '.join(types)})) WITH ORDINALITY AS r"
        )
        order = "r.ordinality"
    else:
        values = [
            f"json_quote(json_extract(r.value, '$.{name}'))"
            if isinstance(fields[name], models.JSONField)
            else f"json_extract(r.value, '$.{name}')"
            for name in carried
        ]
        source = "json_each(%s) AS r"
        order = "r.key"
    # SQLite needs a WHERE before ON CONFLICT in an INSERT … SELECT (a parsing ambiguity).
    where = "1 = 1"
    if link is not None:
        field, by, parent = link
        columns.append(quote(fields[field].column))
        values.append(f"{parent}.id")
        source += f" LEFT JOIN {parent} ON r.{quote(LINK)} AND {parent}.{quote(by)} = r.{quote(by)}"
        where = f"NOT r.{quote(LINK)} OR {parent}.id IS NOT NULL"
    columns += [quote(field.column) for field in constants]
    values += [
        f"CAST(%s AS {field.db_type(connection)})" if postgres else "%s" for field in constants
    ]
    # Names come from the model, values are parameters.
    sql = (
        f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(columns)}) "  # noqa: S608
        f"SELECT {', '.join(values)} FROM {source} WHERE {where} ORDER BY {order}"
    )
    if skip_conflicts:
        sql += " ON CONFLICT DO NOTHING"
    if returning:
        sql += " RETURNING " + ", ".join(quote(fields[name].column) for name in returning)
    select = _selects[key] = _Select(sql, constants, datetimes)
    return select


def _prepared(
    model: type[models.Model],
    rows: Sequence[dict[str, Any]],
    returning: tuple[str, ...],
    skip_conflicts: bool,
    link: tuple[str, str, str] | None = None,
    fixed: dict[str, Any] | None = None,
) -> tuple[str, list[Any]]:
    """The statement for ``rows`` and its parameters; ``fixed``: values of every row, bound once."""
    given = tuple(rows[0])
    fields = {f.attname: f for f in model._meta.concrete_fields}
    constants: list[tuple[models.Field, Any]] = [
        (fields[name], fields[name].get_db_prep_save(value, connection))
        for name, value in (fixed or {}).items()
    ]
    # The columns a row does not carry, with their defaults (``auto_now_add`` included): a
    # missing column whose value is None is NULL already.
    blank = model()
    skip = set(given) | set(fixed or ()) | ({link[0]} if link else set())
    for field in model._meta.concrete_fields:
        if field.attname in skip or (field.primary_key and field.db_returning):
            continue
        value = field.get_db_prep_save(field.pre_save(blank, add=True), connection)
        if value is not None:
            constants.append((field, value))
    select = _select(
        model, given, tuple(field for field, _ in constants), returning, skip_conflicts, link
    )
    if select.datetimes:
        text = _datetime_text()
        rows = [
            row
            | {name: None if row[name] is None else text(row[name]) for name in select.datetimes}
            for row in rows
        ]
    # The constants' placeholders come first (in the select list), the rows' last (FROM).
    return select.sql, [value for _, value in constants] + [json.dumps(rows, separators=(",", ":"))]


def insert_rows(
    model: type[models.Model],
    rows: Sequence[dict[str, Any]],
    *,
    returning: Sequence[str] = (),
    skip_conflicts: bool = False,
    then: Sequence[Then] = (),
    constants: dict[str, Any] | None = None,
) -> list[tuple]:
    """Insert ``rows`` (dicts by field attname, all with the same keys) in one statement.

    ``constants``: values every row has (by field attname), bound once instead of carried by
    each row (a tick's rule, version and moment).

    ``skip_conflicts`` leaves out rows that a unique constraint refuses (``ON CONFLICT DO
    NOTHING``); ``returning`` names columns to read back from the rows actually inserted, in no
    particular order. ``then`` inserts more rows linked to these (:class:`Then`; ``returning``
    must name ``id`` and each one's key): in the same statement on PostgreSQL, one statement
    each on SQLite.
    """
    then = [t for t in then if t.rows]
    if not rows:
        for t in then:  # nothing to link to: only the rows that need no link
            unlinked = [_unlinked(r) for r in t.rows if not r[LINK]]
            insert_rows(t.model, unlinked, skip_conflicts=t.skip_conflicts, constants=t.constants)
        return []
    returning = tuple(returning)
    if then and connection.vendor == "postgresql":
        return _insert_chain(model, rows, returning, skip_conflicts, then, constants)
    sql, params = _prepared(model, rows, returning, skip_conflicts, fixed=constants)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        inserted = cursor.fetchall() if returning else []
    if then:
        ids = {
            row[returning.index(t.key)]: row[returning.index("id")]
            for t in then
            for row in inserted
        }
        for t in then:
            linked = [
                _unlinked(r) | ({t.field: ids[r[t.key]]} if r[LINK] else {})
                for r in t.rows
                if not r[LINK] or r[t.key] in ids
            ]
            insert_rows(
                t.model,
                _same_keys(linked, t.field),
                skip_conflicts=t.skip_conflicts,
                constants=t.constants,
            )
    return inserted


def _unlinked(row: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in row.items() if name != LINK}


def _same_keys(rows: list[dict[str, Any]], field: str) -> list[dict[str, Any]]:
    """Every row with ``field`` (None where it has no link), so that all have the same keys."""
    return [row if field in row else row | {field: None} for row in rows]


def _insert_chain(
    model: type[models.Model],
    rows: Sequence[dict[str, Any]],
    returning: tuple[str, ...],
    skip_conflicts: bool,
    then: Sequence[Then],
    constants: dict[str, Any] | None = None,
) -> list[tuple]:
    """PostgreSQL: the rows, then the linked rows, in one statement (data-modifying CTEs see the
    rows inserted before them through ``RETURNING``; deferred foreign keys are checked at
    commit)."""
    sql, params = _prepared(model, rows, returning, skip_conflicts, fixed=constants)
    parts = [f"inserted AS ({sql})"]
    for n, t in enumerate(then):
        linked_sql, linked_params = _prepared(
            t.model,
            t.rows,
            (),
            t.skip_conflicts,
            link=(t.field, t.key, "inserted"),
            fixed=t.constants,
        )
        parts.append(f"then_{n} AS ({linked_sql})")
        params += linked_params
    quote = connection.ops.quote_name
    fields = {f.attname: f for f in model._meta.concrete_fields}
    columns = ", ".join(quote(fields[name].column) for name in returning)
    with connection.cursor() as cursor:
        cursor.execute(f"WITH {', '.join(parts)} SELECT {columns} FROM inserted", params)  # noqa: S608
        return cursor.fetchall()
