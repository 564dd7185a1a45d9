"""Typed reads of one key of a JSON column, portable between SQLite and PostgreSQL.

Each expression yields SQL NULL unless the stored JSON value has the expected type, so a trait
``"abc"`` never raises in a numeric comparison and a trait ``100`` never equals the string
``"100"``. PostgreSQL casts are guarded by ``CASE`` (evaluated before the cast), which is how
PostgreSQL documents guarding a conversion that could fail.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

from django.db import NotSupportedError
from django.db.models import (
    BooleanField,
    DateTimeField,
    Expression,
    F,
    FloatField,
    Func,
    TextField,
    Value,
)
from django.db.models.fields.json import compile_json_path
from django.db.models.functions import Coalesce
from django.db.models.lookups import Exact

# ISO 8601 dates and datetimes that PostgreSQL's timestamptz input accepts without raising
# (year 1000–9999, month 01–12, day 01–31; 29–31 are checked separately below).
_PG_ISO = (
    r"^[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"([T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?"
    r"(Z|[+-](0[0-9]|1[0-5])(:?[0-5][0-9])?)?)?$"
)
# Days that exist: 31 only in long months, 30 not in February, 29 February only in leap years.
_PG_DAY_EXISTS = (
    "(substr({v}, 6, 5) NOT IN ('02-30', '02-31', '04-31', '06-31', '09-31', '11-31') "
    "AND (substr({v}, 6, 5) <> '02-29' OR ("
    "mod(substr({v}, 1, 4)::int, 4) = 0 AND (mod(substr({v}, 1, 4)::int, 100) <> 0 "
    "OR mod(substr({v}, 1, 4)::int, 400) = 0))))"
)

_PLACEHOLDER = re.compile(r"\{(col|key)\}")


class _JSONKey(Func):
    """Base: render ``sqlite_template`` / ``postgresql_template`` with ``{col}`` and ``{key}``."""

    sqlite_template = ""
    postgresql_template = ""

    def __init__(self, column: str | Expression, key: str) -> None:
        super().__init__(F(column) if isinstance(column, str) else column)
        self.key = key

    def as_sql(self, compiler, connection, **extra_context):
        column_sql, column_params = compiler.compile(self.source_expressions[0])
        if connection.vendor == "postgresql":
            template, key_sql, key_param = self.postgresql_template, "%s::text", self.key
        elif connection.vendor == "sqlite":
            template, key_sql, key_param = self.sqlite_template, "%s", compile_json_path([self.key])
        else:
            raise NotSupportedError(f"segments do not support {connection.vendor}")
        params: list = []

        def substitute(match: re.Match) -> str:
            if match.group(1) == "col":
                params.extend(column_params)
                return column_sql
            params.append(key_param)
            return key_sql

        return _PLACEHOLDER.sub(substitute, template), params


class JSONType(_JSONKey):
    """The JSON type of the value: string, number, boolean, null, object, array; NULL if absent."""

    output_field = TextField()
    sqlite_template = (
        "(CASE JSON_TYPE({col}, {key}) WHEN 'integer' THEN 'number' WHEN 'real' THEN 'number' "
        "WHEN 'text' THEN 'string' WHEN 'true' THEN 'boolean' WHEN 'false' THEN 'boolean' "
        "ELSE JSON_TYPE({col}, {key}) END)"
    )
    postgresql_template = "jsonb_typeof({col} -> {key})"


class JSONString(_JSONKey):
    """The value if it is a JSON string."""

    output_field = TextField()
    sqlite_template = (
        "(CASE WHEN JSON_TYPE({col}, {key}) = 'text' THEN JSON_EXTRACT({col}, {key}) END)"
    )
    postgresql_template = (
        "(CASE WHEN jsonb_typeof({col} -> {key}) = 'string' THEN ({col} ->> {key}) END)"
    )


class JSONNumber(_JSONKey):
    """The value if it is a JSON number (booleans are not numbers)."""

    output_field = FloatField()
    sqlite_template = (
        "(CASE WHEN JSON_TYPE({col}, {key}) IN ('integer', 'real') "
        "THEN JSON_EXTRACT({col}, {key}) END)"
    )
    postgresql_template = (
        "(CASE WHEN jsonb_typeof({col} -> {key}) = 'number' "
        "THEN ({col} ->> {key})::double precision END)"
    )


class JSONBoolean(_JSONKey):
    """The value if it is a JSON boolean."""

    output_field = BooleanField()
    sqlite_template = "(CASE JSON_TYPE({col}, {key}) WHEN 'true' THEN 1 WHEN 'false' THEN 0 END)"
    postgresql_template = (
        "(CASE WHEN jsonb_typeof({col} -> {key}) = 'boolean' THEN ({col} ->> {key})::boolean END)"
    )


class JSONEquals(Func):
    """True when the key holds exactly this JSON string or boolean; false otherwise, also when the
    column is NULL (two-valued: never SQL NULL, so callers need no ``COALESCE``).

    The same truth as ``Exact(JSONString(…), value)`` / ``Exact(JSONBoolean(…), value)``. On
    PostgreSQL it is one containment test, ``{col} @> '{"key": value}'``: for a scalar, containment
    is equality of type and value, and anything but an object holding the key is false. That reads
    the JSON once per row instead of three times (type check, then extraction), which is most of
    the cost of a segment over every person. The test stays bare (``COALESCE(…)`` around it is an
    expression no index serves), so the GIN ``jsonb_path_ops`` index on the people's traits
    (``person_traits_path``) finds the members instead of a scan of every person; a nullable
    column gets ``AND col IS NOT NULL``, which keeps it two-valued and indexable.
    """

    output_field = BooleanField()

    def __init__(self, column: str | Expression, key: str, value: str | bool) -> None:
        if not isinstance(value, str | bool):
            raise TypeError("JSONEquals compares strings and booleans only")
        super().__init__(F(column) if isinstance(column, str) else column)
        self.key = key
        self.value = value

    def as_sql(self, compiler, connection, **extra_context):
        column = self.source_expressions[0]
        if connection.vendor == "postgresql":
            column_sql, column_params = compiler.compile(column)
            test = f"{column_sql} @> %s::jsonb"
            params = [*column_params, json.dumps({self.key: self.value})]
            if getattr(getattr(column, "target", None), "null", True):
                return f"({test} AND {column_sql} IS NOT NULL)", [*params, *column_params]
            return f"({test})", params
        typed = JSONBoolean if isinstance(self.value, bool) else JSONString
        return compiler.compile(
            Coalesce(Exact(typed(column, self.key), self.value), Value(False)), **extra_context
        )


class JSONTimestamp(_JSONKey):
    """The value as a point in time if it is a string holding an ISO 8601 date or datetime.

    Compare it only with :class:`TimestampBound`: on SQLite both are Julian day numbers.
    """

    output_field = DateTimeField()
    sqlite_template = (
        "(CASE WHEN JSON_TYPE({col}, {key}) = 'text' AND JSON_EXTRACT({col}, {key}) GLOB "
        "'[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*' "
        # date() rolls 2026-02-30 over to 03-02; PostgreSQL refuses it: treat it as no date.
        "AND date(substr(JSON_EXTRACT({col}, {key}), 1, 10), '+0 days') "
        "= substr(JSON_EXTRACT({col}, {key}), 1, 10) "
        "THEN julianday(JSON_EXTRACT({col}, {key})) END)"
    )
    postgresql_template = (
        "(CASE WHEN jsonb_typeof({col} -> {key}) = 'string' "
        f"AND ({{col}} ->> {{key}}) ~ '{_PG_ISO}' THEN "
        f"CASE WHEN {_PG_DAY_EXISTS.format(v='({col} ->> {key})')} "
        "THEN ({col} ->> {key})::timestamptz END END)"
    )


class TimestampBound(Expression):
    """A fixed point in time, comparable with :class:`JSONTimestamp` on either database."""

    output_field = DateTimeField()

    def __init__(self, moment: datetime) -> None:
        super().__init__()
        self.moment = moment.astimezone(UTC)

    def as_sql(self, compiler, connection, **extra_context):
        if connection.vendor == "sqlite":
            return "julianday(%s)", [self.moment.strftime("%Y-%m-%d %H:%M:%S.%f")]
        return "%s", [self.moment]
