"""Model fields of the onboarding store."""

from __future__ import annotations

import json
from typing import Any

from django.db import models


class OffsetsField(models.Field):
    """A list of integers: ``bigint[]`` on PostgreSQL (typed, scanned without parsing JSON),
    JSON text elsewhere (SQLite, the embedded default). Used for step offsets in microseconds."""

    description = "List of integers"

    def db_type(self, connection) -> str:
        return "bigint[]" if connection.vendor == "postgresql" else "text"

    def from_db_value(self, value: Any, expression, connection) -> list[int] | None:
        if value is None or isinstance(value, list):
            return value
        return json.loads(value)

    def to_python(self, value: Any) -> list[int] | None:
        if value is None or isinstance(value, list):
            return value
        if isinstance(value, str):
            return json.loads(value)
        return [int(v) for v in value]

    def get_db_prep_value(self, value: Any, connection, prepared: bool = False) -> Any:
        if value is None:
            return None
        values = [int(v) for v in value]
        if connection.vendor == "postgresql":
            return values
        return json.dumps(values)
