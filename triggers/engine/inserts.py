"""Many rows in one ``INSERT … SELECT``, carried by one JSON parameter (PostgreSQL and SQLite).

A tick writes its enrollments, follow-ups and decisions set-based: one statement per table and
rule, however many people fell due. ``bulk_create`` builds a model instance and binds a value per
column and row (tens of microseconds a row in Python, and statements split into batches); here the
rows travel as one JSON array that the database unpacks — ``json_to_recordset`` on PostgreSQL,
``json_each`` on SQLite — so the per-row work in Python is building a dict. The columns a row
does not carry take the model's defaults (``auto_now_add`` included), bound once per statement.

Values in a row are JSON: numbers, strings, booleans, ``None``, dicts and lists for JSON fields,
and ``datetime`` for date-time fields (converted here to what the backend stores).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from django.db import connection, models


def _datetime_text() -> Callable[[datetime], str]:
    """How a date-time travels in the JSON: ISO 8601 for PostgreSQL's cast, the text Django
    stores for SQLite."""
    if connection.vendor == "postgresql":
        return datetime.isoformat
    return connection.ops.adapt_datetimefield_value


def insert_rows(
    model: type[models.Model],
    rows: Sequence[dict[str, Any]],
    *,
    returning: Sequence[str] = (),
    skip_conflicts: bool = False,
) -> list[tuple]:
    """Insert ``rows`` (dicts by field attname, all with the same keys) in one statement.

    ``skip_conflicts`` leaves out rows that a unique constraint refuses (``ON CONFLICT DO
    NOTHING``); ``returning`` names columns to read back from the rows actually inserted, in no
    particular order.
    """
    if not rows:
        return []
    quote = connection.ops.quote_name
    given = list(rows[0])
    fields = {f.attname: f for f in model._meta.concrete_fields}
    datetimes = [name for name in given if isinstance(fields[name], models.DateTimeField)]
    if datetimes:
        text = _datetime_text()
        rows = [
            row | {name: None if row[name] is None else text(row[name]) for name in datetimes}
            for row in rows
        ]
    blank = model()
    constants: list[tuple[models.Field, Any]] = []
    for field in model._meta.concrete_fields:
        if field.attname in given or (field.primary_key and field.db_returning):
            continue
        value = field.get_db_prep_save(field.pre_save(blank, add=True), connection)
        if value is not None:  # a missing column is NULL already
            constants.append((field, value))
    columns = [quote(fields[name].column) for name in given] + [
        quote(field.column) for field, _ in constants
    ]
    postgres = connection.vendor == "postgresql"
    if postgres:
        types = ", ".join(f"{quote(name)} {fields[name].db_type(connection)}" for name in given)
        values = [f"r.{quote(name)}" for name in given]
        source = f"ROWS FROM (json_to_recordset(%s::json) AS ({types})) WITH ORDINALITY AS r"
        order = "r.ordinality"
    else:
        values = [
            f"json_quote(json_extract(r.value, '$.{name}'))"
            if isinstance(fields[name], models.JSONField)
            else f"json_extract(r.value, '$.{name}')"
            for name in given
        ]
        source = "json_each(%s) AS r"
        order = "r.key"
    values += [
        f"CAST(%s AS {field.db_type(connection)})" if postgres else "%s" for field, _ in constants
    ]
    # Names come from the model, values are parameters. SQLite needs a WHERE before ON CONFLICT
    # in an INSERT … SELECT (a parsing ambiguity).
    sql = (
        f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(columns)}) "  # noqa: S608
        f"SELECT {', '.join(values)} FROM {source} WHERE 1 = 1 ORDER BY {order}"
    )
    if skip_conflicts:
        sql += " ON CONFLICT DO NOTHING"
    if returning:
        sql += " RETURNING " + ", ".join(quote(fields[name].column) for name in returning)
    # The constants' placeholders come first (in the select list), the rows' last (FROM).
    params = [value for _, value in constants] + [json.dumps(rows, separators=(",", ":"))]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall() if returning else []
